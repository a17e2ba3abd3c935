//! `[limits]`: call and connection limits per extension, source and line (toll fraud).

use super::*;

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
    /// `None`: what the open-files limit allows at four sockets a call).
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCallLimits {
    pub(crate) concurrent_calls: Option<u32>,
    pub(crate) calls_per_minute: Option<u32>,
    pub(crate) minutes_per_day: Option<u32>,
    pub(crate) minutes_per_month: Option<u32>,
    pub(crate) cost_per_day: Option<f64>,
    pub(crate) cost_per_month: Option<f64>,
}

impl RawCallLimits {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<CallLimits> {
        let money = |v: Option<f64>, key: &str| -> Checked<Option<i64>> {
            match v {
                None => Ok(None),
                Some(x) if x.is_finite() && (0.0..=1e12).contains(&x) => {
                    Ok(Some((x * 100.0).round() as i64))
                }
                Some(_) => Err(invalid(
                    &at.key(key),
                    "must be an amount of money, 0 or more",
                )),
            }
        };
        Ok(CallLimits {
            concurrent_calls: self.concurrent_calls,
            calls_per_minute: self.calls_per_minute,
            minutes_per_day: self.minutes_per_day,
            minutes_per_month: self.minutes_per_month,
            cost_per_day: money(self.cost_per_day, "cost_per_day")?,
            cost_per_month: money(self.cost_per_month, "cost_per_month")?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) concurrent_calls: Option<u32>,
    pub(crate) calls_per_minute: Option<u32>,
    pub(crate) minutes_per_day: Option<u32>,
    pub(crate) minutes_per_month: Option<u32>,
    pub(crate) cost_per_day: Option<f64>,
    pub(crate) cost_per_month: Option<f64>,
    pub(crate) tcp_connections: Option<usize>,
    pub(crate) tcp_connections_per_source: Option<usize>,
    pub(crate) tcp_first_request_secs: Option<u64>,
    pub(crate) server_transactions: Option<usize>,
    pub(crate) web_connections: Option<usize>,
    pub(crate) web_connections_per_source: Option<usize>,
    pub(crate) web_header_timeout_secs: Option<u64>,
    pub(crate) queue_delay_ms: Option<u64>,
    pub(crate) max_calls: Option<usize>,
    #[serde(default)]
    pub(crate) extension: std::collections::BTreeMap<String, RawCallLimits>,
    #[serde(default)]
    pub(crate) trunk: std::collections::BTreeMap<String, RawCallLimits>,
}

impl RawLimits {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<LimitsConfig> {
        let d = LimitsConfig::default();
        let own = RawCallLimits {
            concurrent_calls: self.concurrent_calls,
            calls_per_minute: self.calls_per_minute,
            minutes_per_day: self.minutes_per_day,
            minutes_per_month: self.minutes_per_month,
            cost_per_day: self.cost_per_day,
            cost_per_month: self.cost_per_month,
        }
        .validate(at)?;
        let mut extensions = Vec::new();
        for (number, raw) in self.extension {
            let here = at.key("extension").key(&number);
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(&here, "must be an extension number (digits)"));
            }
            extensions.push((number, raw.validate(&here)?));
        }
        let mut trunks = Vec::new();
        for (name, raw) in self.trunk {
            let here = at.key("trunk").key(&name);
            trunks.push((name, raw.validate(&here)?));
        }
        Ok(LimitsConfig {
            extension_defaults: own.or(d.extension_defaults),
            extensions,
            trunks,
            tcp_connections: positive(
                self.tcp_connections,
                d.tcp_connections,
                &at.key("tcp_connections"),
            )?,
            tcp_connections_per_source: positive(
                self.tcp_connections_per_source,
                d.tcp_connections_per_source,
                &at.key("tcp_connections_per_source"),
            )?,
            tcp_first_request_secs: positive(
                self.tcp_first_request_secs,
                d.tcp_first_request_secs,
                &at.key("tcp_first_request_secs"),
            )?,
            server_transactions: positive(
                self.server_transactions,
                d.server_transactions,
                &at.key("server_transactions"),
            )?,
            web_connections: positive(
                self.web_connections,
                d.web_connections,
                &at.key("web_connections"),
            )?,
            web_connections_per_source: positive(
                self.web_connections_per_source,
                d.web_connections_per_source,
                &at.key("web_connections_per_source"),
            )?,
            web_header_timeout_secs: positive(
                self.web_header_timeout_secs,
                d.web_header_timeout_secs,
                &at.key("web_header_timeout_secs"),
            )?,
            queue_delay_ms: positive(
                self.queue_delay_ms,
                d.queue_delay_ms,
                &at.key("queue_delay_ms"),
            )?,
            max_calls: match self.max_calls {
                None => None,
                v => Some(positive(v, 0, &at.key("max_calls"))?),
            },
        })
    }
}
