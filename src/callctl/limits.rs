//! Toll-fraud limits (`[limits]`): how many calls an extension — or a trunk or PSTN line — may
//! have at once and start per minute, and how many talk minutes and how much money its calls
//! may use per day and month. A call over a limit is refused with `403 Limit reached: …`.
//!
//! Sans-IO: the SIP core asks [`Limiter::admit`] with the current time and the calls it counts
//! in progress; minutes and cost come in through [`Limiter::add_usage`] as call records are
//! written and rated (and from the store at start-up). Days and months are the office's
//! (`[web] time_zone`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::office_time::OfficeTime;

/// Limits on the calls of one extension or trunk. `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallLimits {
    /// Calls at the same time (`concurrent_calls`).
    pub concurrent_calls: Option<u32>,
    /// Calls started within any 60 s (`calls_per_minute`).
    pub calls_per_minute: Option<u32>,
    /// Talk minutes of calls leaving the office per day (`minutes_per_day`).
    pub minutes_per_day: Option<u32>,
    /// Talk minutes of calls leaving the office per month (`minutes_per_month`).
    pub minutes_per_month: Option<u32>,
    /// Cost per day, minor units of the rate tables' currency (`cost_per_day = 5.0`: 500).
    pub cost_per_day: Option<i64>,
    /// Cost per month, minor units (`cost_per_month`).
    pub cost_per_month: Option<i64>,
}

impl From<&crate::store::line_limits::LineLimits> for CallLimits {
    /// The limits of a dashboard line (checked when stored).
    fn from(l: &crate::store::line_limits::LineLimits) -> CallLimits {
        use crate::store::line_limits::LineLimits;
        CallLimits {
            concurrent_calls: l.concurrent_calls,
            calls_per_minute: l.calls_per_minute,
            minutes_per_day: l.minutes_per_day,
            minutes_per_month: l.minutes_per_month,
            cost_per_day: LineLimits::minor(l.cost_per_day),
            cost_per_month: LineLimits::minor(l.cost_per_month),
        }
    }
}

impl CallLimits {
    /// `self`, with the limits it does not set taken from `defaults`.
    pub fn or(self, defaults: CallLimits) -> CallLimits {
        CallLimits {
            concurrent_calls: self.concurrent_calls.or(defaults.concurrent_calls),
            calls_per_minute: self.calls_per_minute.or(defaults.calls_per_minute),
            minutes_per_day: self.minutes_per_day.or(defaults.minutes_per_day),
            minutes_per_month: self.minutes_per_month.or(defaults.minutes_per_month),
            cost_per_day: self.cost_per_day.or(defaults.cost_per_day),
            cost_per_month: self.cost_per_month.or(defaults.cost_per_month),
        }
    }
}

/// `[limits]`: what one extension or trunk may do (toll-fraud limits), and the caps that keep
/// floods from exhausting the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Limits of every extension (`[limits]` keys `concurrent_calls` … `cost_per_month`;
    /// default 4 concurrent calls and 10 calls per minute, minutes and cost unlimited).
    pub extension_defaults: CallLimits,
    /// Per-extension overrides (`[limits.extension."100"]`); unset keys take the defaults.
    /// A value of 0 there means "no limit".
    pub extensions: Vec<(String, CallLimits)>,
    /// Per-trunk or per-line limits (`[limits.trunk.NAME]`, a `[[trunk]]` or `[[modem]]` name);
    /// trunks without an entry are unlimited.
    pub trunks: Vec<(String, CallLimits)>,
    /// Open SIP TCP connections in all (`tcp_connections`, default 1024).
    pub tcp_connections: usize,
    /// Open SIP TCP connections from one address (`tcp_connections_per_source`, default 32).
    pub tcp_connections_per_source: usize,
    /// A TCP connection that has not sent a valid SIP request after this long is closed
    /// (`tcp_first_request_secs`, default 10).
    pub tcp_first_request_secs: u64,
    /// SIP server transactions at once; beyond, new requests get 503 + Retry-After
    /// (`server_transactions`, default 200000: a call holds one for about 70 s over UDP, so
    /// 10000 capped the sustained rate near 150 calls/s).
    pub server_transactions: usize,
    /// Open dashboard connections (`web_connections`, default 256).
    pub web_connections: usize,
    /// Open dashboard connections from one address (`web_connections_per_source`, default 32).
    pub web_connections_per_source: usize,
    /// Time a dashboard client has to send a request's headers (`web_header_timeout_secs`,
    /// default 10).
    pub web_header_timeout_secs: u64,
    /// A new INVITE that waited longer than this (ms) before the SIP core could look at it is
    /// refused with 503 + Retry-After: the box is over capacity (`queue_delay_ms`, default 200).
    pub queue_delay_ms: u64,
    /// Calls in progress at once; new calls beyond get 503 + Retry-After (`max_calls`; default
    /// `None`: what the open-files limit allows, the relay's sockets counted as they are used:
    /// two to four a call, fewer with rtcp-mux).
    pub max_calls: Option<usize>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            extension_defaults: CallLimits {
                concurrent_calls: Some(4),
                calls_per_minute: Some(10),
                ..CallLimits::default()
            },
            extensions: Vec::new(),
            trunks: Vec::new(),
            tcp_connections: 1024,
            tcp_connections_per_source: 32,
            tcp_first_request_secs: 10,
            server_transactions: crate::sip::transaction::DEFAULT_MAX_SERVER_TRANSACTIONS,
            web_connections: 256,
            web_connections_per_source: 32,
            web_header_timeout_secs: 10,
            queue_delay_ms: 200,
            max_calls: None,
        }
    }
}

impl LimitsConfig {
    /// The limits of extension `number` (its override over the defaults).
    pub fn for_extension(&self, number: &str) -> CallLimits {
        let own = self
            .extensions
            .iter()
            .find(|(n, _)| n == number)
            .map(|(_, l)| *l)
            .unwrap_or_default();
        unlimited_zeros(own.or(self.extension_defaults))
    }

    /// The limits of trunk or line `name` (unlimited unless configured).
    pub fn for_trunk(&self, name: &str) -> CallLimits {
        self.trunks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| unlimited_zeros(*l))
            .unwrap_or_default()
    }
}

/// 0 written in the file means "no limit".
pub(crate) fn unlimited_zeros(l: CallLimits) -> CallLimits {
    CallLimits {
        concurrent_calls: l.concurrent_calls.filter(|v| *v > 0),
        calls_per_minute: l.calls_per_minute.filter(|v| *v > 0),
        minutes_per_day: l.minutes_per_day.filter(|v| *v > 0),
        minutes_per_month: l.minutes_per_month.filter(|v| *v > 0),
        cost_per_day: l.cost_per_day.filter(|v| *v > 0),
        cost_per_month: l.cost_per_month.filter(|v| *v > 0),
    }
}

/// The window of [`CallLimits::calls_per_minute`].
const MINUTE: Duration = Duration::from_secs(60);

/// Who a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// An office extension (the caller).
    Extension(&'a str),
    /// A `[[trunk]]` or `[[modem]]` line, by name.
    Trunk(&'a str),
}

impl Subject<'_> {
    fn key(self) -> String {
        match self {
            Subject::Extension(n) => format!("extension {n}"),
            Subject::Trunk(n) => format!("trunk {n}"),
        }
    }
}

/// Minutes and cost used in the current day and month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub day_secs: i64,
    pub day_cost: i64,
    pub month_secs: i64,
    pub month_cost: i64,
}

/// The limits and what has been used against them.
pub struct Limiter {
    config: LimitsConfig,
    office: OfficeTime,
    /// Start times of the calls of the last minute, per subject.
    recent: HashMap<String, VecDeque<Instant>>,
    usage: HashMap<String, Usage>,
    /// `[start, end)` of today and of this month (unix ms), as of the last refresh.
    today: (i64, i64),
    month: (i64, i64),
    /// `[limits.trunk]` of the file: they win over a dashboard line's of the same name.
    file_trunks: Vec<(String, CallLimits)>,
}

impl Limiter {
    pub fn new(config: LimitsConfig, office: OfficeTime) -> Limiter {
        Limiter {
            file_trunks: config.trunks.clone(),
            config,
            office,
            recent: HashMap::new(),
            usage: HashMap::new(),
            today: (0, 0),
            month: (0, 0),
        }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// The limits of the dashboard's lines from now on (a line the file's `[limits.trunk]`
    /// names keeps the file's); what they used so far still counts.
    pub fn set_line_limits(&mut self, lines: Vec<(String, CallLimits)>) {
        let mut trunks = self.file_trunks.clone();
        for (name, l) in lines {
            if !trunks.iter().any(|(n, _)| *n == name) {
                trunks.push((name, l));
            }
        }
        self.config.trunks = trunks;
    }

    fn limits(&self, who: Subject<'_>) -> CallLimits {
        match who {
            Subject::Extension(n) => self.config.for_extension(n),
            Subject::Trunk(n) => self.config.for_trunk(n),
        }
    }

    /// Whether trunk or line `name` has any limit at all (most have none).
    pub fn trunk_limited(&self, name: &str) -> bool {
        self.limits(Subject::Trunk(name)) != CallLimits::default()
    }

    /// Moves the day and month windows on when `unix_ms` has left them (their totals restart).
    fn roll(&mut self, unix_ms: i64) {
        if unix_ms >= self.today.0 && unix_ms < self.today.1 {
            return;
        }
        let Some((today, month)) = self.office.today_and_month(unix_ms) else {
            return;
        };
        let new_month = month != self.month;
        self.today = today;
        self.month = month;
        for u in self.usage.values_mut() {
            u.day_secs = 0;
            u.day_cost = 0;
            if new_month {
                u.month_secs = 0;
                u.month_cost = 0;
            }
        }
        self.usage.retain(|_, u| *u != Usage::default());
    }

    /// `[start, end)` of today and this month at `unix_ms` (for loading usage from the store).
    pub fn periods(&mut self, unix_ms: i64) -> ((i64, i64), (i64, i64)) {
        self.roll(unix_ms);
        (self.today, self.month)
    }

    /// Counts a call's talk time and cost (`cost_minor`, when rated) against `who`. Calls from
    /// before this month (or day) count for the month only (or not at all).
    pub fn add_usage(
        &mut self,
        who: Subject<'_>,
        start_ms: i64,
        billable_s: i64,
        cost_minor: Option<i64>,
        unix_ms: i64,
    ) {
        self.roll(unix_ms);
        if start_ms < self.month.0 || (billable_s <= 0 && cost_minor.unwrap_or(0) <= 0) {
            return;
        }
        let cost = cost_minor.unwrap_or(0).max(0);
        let u = self.usage.entry(who.key()).or_default();
        u.month_secs += billable_s.max(0);
        u.month_cost += cost;
        if start_ms >= self.today.0 {
            u.day_secs += billable_s.max(0);
            u.day_cost += cost;
        }
    }

    /// What `who` has used today and this month.
    pub fn usage(&mut self, who: Subject<'_>, unix_ms: i64) -> Usage {
        self.roll(unix_ms);
        self.usage.get(&who.key()).copied().unwrap_or_default()
    }

    /// Whether `who` may start one more call now, with `active` calls in progress. When it may,
    /// the call is counted for the per-minute limit. `Err`: the reason phrase of the 403.
    pub fn admit(&mut self, who: Subject<'_>, now: Instant, active: usize) -> Result<(), String> {
        let limits = self.limits(who);
        if let Some(max) = limits.concurrent_calls {
            if active >= max as usize {
                return Err(format!(
                    "Limit reached: {max} concurrent call{}",
                    plural(max)
                ));
            }
        }
        if let Some(max) = limits.calls_per_minute {
            let starts = self.recent.entry(who.key()).or_default();
            while starts
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE)
            {
                starts.pop_front();
            }
            if starts.len() >= max as usize {
                return Err(format!(
                    "Limit reached: {max} call{} per minute",
                    plural(max)
                ));
            }
            starts.push_back(now);
        }
        Ok(())
    }

    /// Whether `who` may still spend: talk minutes and cost of today and this month.
    /// `Err`: the reason phrase of the 403.
    pub fn may_spend(&mut self, who: Subject<'_>, unix_ms: i64) -> Result<(), String> {
        let limits = self.limits(who);
        let used = self.usage(who, unix_ms);
        if let Some(max) = limits.minutes_per_day {
            if used.day_secs >= i64::from(max) * 60 {
                return Err(format!("Limit reached: {max} minutes per day"));
            }
        }
        if let Some(max) = limits.minutes_per_month {
            if used.month_secs >= i64::from(max) * 60 {
                return Err(format!("Limit reached: {max} minutes per month"));
            }
        }
        if let Some(max) = limits.cost_per_day {
            if used.day_cost >= max {
                return Err(format!("Limit reached: cost {} per day", money(max)));
            }
        }
        if let Some(max) = limits.cost_per_month {
            if used.month_cost >= max {
                return Err(format!("Limit reached: cost {} per month", money(max)));
            }
        }
        Ok(())
    }

    /// Forgets per-minute history older than a minute and gives memory back after a flood.
    pub fn housekeeping(&mut self, now: Instant) {
        self.recent.retain(|_, starts| {
            let recent = starts
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) < MINUTE);
            if recent {
                crate::memory::shrink_deque(starts);
            }
            recent
        });
        crate::memory::shrink_map(&mut self.recent);
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Minor units as an amount with two decimals.
fn money(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, (minor % 100).abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(extra: impl FnOnce(&mut LimitsConfig)) -> Limiter {
        let mut c = LimitsConfig::default();
        extra(&mut c);
        Limiter::new(c, OfficeTime::utc())
    }

    #[test]
    fn concurrent_and_per_minute_defaults() {
        let mut l = limiter(|_| {});
        let t0 = Instant::now();
        let ext = Subject::Extension("100");
        assert!(l.admit(ext, t0, 3).is_ok());
        assert_eq!(
            l.admit(ext, t0, 4).unwrap_err(),
            "Limit reached: 4 concurrent calls"
        );
        for _ in 0..9 {
            assert!(l.admit(ext, t0, 0).is_ok());
        }
        let e = l.admit(ext, t0 + Duration::from_secs(30), 0).unwrap_err();
        assert_eq!(e, "Limit reached: 10 calls per minute");
        // Another extension has its own count.
        assert!(l.admit(Subject::Extension("101"), t0, 0).is_ok());
        // A minute after the first calls, they no longer count.
        assert!(l.admit(ext, t0 + Duration::from_secs(60), 0).is_ok());
        l.housekeeping(t0 + Duration::from_secs(200));
        assert!(l.recent.is_empty());
    }

    #[test]
    fn dashboard_line_limits_apply_live_and_the_file_wins() {
        let one = CallLimits {
            concurrent_calls: Some(1),
            ..CallLimits::default()
        };
        let mut l = limiter(|c| c.trunks = vec![("gsm1".into(), one)]);
        let t0 = Instant::now();
        assert!(!l.trunk_limited("fxo2"));
        let two = CallLimits {
            concurrent_calls: Some(2),
            ..CallLimits::default()
        };
        l.set_line_limits(vec![("fxo2".into(), one), ("gsm1".into(), two)]);
        assert!(l.admit(Subject::Trunk("fxo2"), t0, 0).is_ok());
        assert!(l.admit(Subject::Trunk("fxo2"), t0, 1).is_err());
        // The file's [limits.trunk.gsm1] wins over the dashboard's.
        assert!(l.admit(Subject::Trunk("gsm1"), t0, 1).is_err());
        l.set_line_limits(Vec::new());
        assert!(!l.trunk_limited("fxo2"));
        assert!(l.trunk_limited("gsm1"));
    }

    #[test]
    fn overrides_and_unlimited_trunks() {
        let mut l = limiter(|c| {
            c.extensions.push((
                "100".into(),
                CallLimits {
                    concurrent_calls: Some(0),
                    calls_per_minute: Some(2),
                    ..CallLimits::default()
                },
            ));
            c.trunks.push((
                "carrier".into(),
                CallLimits {
                    concurrent_calls: Some(1),
                    ..CallLimits::default()
                },
            ));
        });
        let t0 = Instant::now();
        let ext = Subject::Extension("100");
        assert!(l.admit(ext, t0, 500).is_ok(), "0 means no limit");
        assert!(l.admit(ext, t0, 0).is_ok());
        assert!(l.admit(ext, t0, 0).is_err());
        assert!(l.trunk_limited("carrier"));
        assert!(!l.trunk_limited("other"));
        assert!(l.admit(Subject::Trunk("other"), t0, 1000).is_ok());
        assert_eq!(
            l.admit(Subject::Trunk("carrier"), t0, 1).unwrap_err(),
            "Limit reached: 1 concurrent call"
        );
    }

    #[test]
    fn limits_from_the_file() {
        let text = r#"
[limits]
calls_per_minute = 20
cost_per_day = 5.5
tcp_connections = 100
[limits.extension."100"]
concurrent_calls = 0
[limits.trunk]
carrier = { minutes_per_month = 600 }
"#;
        let c = crate::config::Config::from_toml_str(text, std::path::Path::new("t.toml"))
            .expect("parses");
        let l = &c.limits;
        assert_eq!(l.tcp_connections, 100);
        let ext = l.for_extension("100");
        assert_eq!(ext.concurrent_calls, None, "0: no limit");
        assert_eq!(ext.calls_per_minute, Some(20));
        assert_eq!(ext.cost_per_day, Some(550));
        assert_eq!(l.for_extension("101").concurrent_calls, Some(4));
        assert_eq!(l.for_trunk("carrier").minutes_per_month, Some(600));
        assert_eq!(l.for_trunk("other"), CallLimits::default());
        let bad = "[limits.extension.abc]\nconcurrent_calls = 1\n";
        let e =
            crate::config::Config::from_toml_str(bad, std::path::Path::new("t.toml")).unwrap_err();
        assert_eq!(e.key(), Some("limits.extension.abc"), "{e}");
        let bad = "[limits]\ncost_per_day = -1.0\n";
        let e =
            crate::config::Config::from_toml_str(bad, std::path::Path::new("t.toml")).unwrap_err();
        assert_eq!(e.key(), Some("limits.cost_per_day"), "{e}");
    }

    #[test]
    fn minutes_and_cost_per_day_and_month() {
        let mut l = limiter(|c| {
            c.extension_defaults.minutes_per_day = Some(10);
            c.extension_defaults.cost_per_month = Some(500);
        });
        // 2026-12-03 12:00 UTC.
        let noon = 1_796_299_200_000;
        let ext = Subject::Extension("100");
        assert!(l.may_spend(ext, noon).is_ok());
        l.add_usage(ext, noon - 3_600_000, 9 * 60, Some(100), noon);
        assert!(l.may_spend(ext, noon).is_ok());
        l.add_usage(ext, noon - 60_000, 60, Some(100), noon);
        assert_eq!(
            l.may_spend(ext, noon).unwrap_err(),
            "Limit reached: 10 minutes per day"
        );
        // The next day the minutes start again; the month's cost goes on.
        let tomorrow = noon + 86_400_000;
        assert!(l.may_spend(ext, tomorrow).is_ok());
        l.add_usage(ext, tomorrow, 0, Some(300), tomorrow);
        assert_eq!(
            l.may_spend(ext, tomorrow).unwrap_err(),
            "Limit reached: cost 5.00 per month"
        );
        // A record from last month does not count.
        let mut l2 = limiter(|c| c.extension_defaults.cost_per_month = Some(500));
        l2.add_usage(ext, noon - 40 * 86_400_000, 60, Some(10_000), noon);
        assert!(l2.may_spend(ext, noon).is_ok());
    }
}
