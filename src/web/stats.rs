//! The live numbers that the SIP loop publishes for `/healthz` and `/metrics`: a struct of
//! atomics written by the loop (after each batch of messages and on its one-second pulse) and
//! read by the HTTP handlers. No lock is shared with the SIP hot path; a reader may see numbers
//! from two neighbouring publications, which is fine for monitoring.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::routing::router::{AttemptKind, Decision, Route};
use crate::supervise::Supervisor;

/// `/healthz` answers 503 when the SIP loop has not published for this long.
pub const HEALTH_STALE_AFTER: Duration = Duration::from_secs(10);

/// Upper bounds (seconds) of the buckets of the routing-decision histogram.
const ROUTE_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// What the SIP loop counts, published together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopCounts {
    /// Live registrations (bindings of all extensions).
    pub registrations: usize,
    /// Calls in progress.
    pub calls_active: usize,
    /// Calls parked while the router decides where they go.
    pub calls_routing: usize,
    /// SIP server transactions.
    pub server_transactions: usize,
    /// SIP client transactions.
    pub client_transactions: usize,
}

/// How a routing decision ended, a label of `pasarela_route_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteOutcome {
    /// To a local extension.
    Extension,
    /// To a SIP target found by ENUM/DUNDi (the PSTN bypassed).
    Sip,
    /// To a PSTN trunk.
    Trunk,
    /// Refused.
    Reject,
}

impl RouteOutcome {
    const ALL: [RouteOutcome; 4] = [
        RouteOutcome::Extension,
        RouteOutcome::Sip,
        RouteOutcome::Trunk,
        RouteOutcome::Reject,
    ];

    /// The outcome of a decision: where its first attempt goes.
    pub fn of(route: &Route) -> RouteOutcome {
        match &route.decision {
            Decision::Extension(_) => RouteOutcome::Extension,
            Decision::Attempts(attempts) => match attempts.first().map(|a| &a.kind) {
                Some(AttemptKind::Sip { .. }) => RouteOutcome::Sip,
                Some(AttemptKind::Trunk { .. }) => RouteOutcome::Trunk,
                None => RouteOutcome::Reject,
            },
            Decision::Reject { .. } => RouteOutcome::Reject,
        }
    }

    fn label(self) -> &'static str {
        match self {
            RouteOutcome::Extension => "extension",
            RouteOutcome::Sip => "sip",
            RouteOutcome::Trunk => "trunk",
            RouteOutcome::Reject => "reject",
        }
    }
}

/// Route kinds of ended calls, as labels.
pub const CALL_ROUTES: [&str; 4] = ["internal", "sip", "pstn", "none"];
/// Dispositions of ended calls, as labels (the b2bua's words).
pub const DISPOSITIONS: [&str; 5] = ["answered", "busy", "no answer", "cancelled", "failed"];

/// The route kind of a call from the label of the stage that answered, or else of the last
/// stage tried: `extension …` → internal, `ENUM …`/`DUNDi …` → sip, `trunk …` → pstn.
pub fn call_route_kind(label: Option<&str>) -> &'static str {
    match label {
        Some(l) if l.starts_with("trunk") => "pstn",
        Some(l) if l.starts_with("ENUM") || l.starts_with("DUNDi") => "sip",
        Some(l) if l.starts_with("extension") => "internal",
        _ => "none",
    }
}

/// Where the loop publishes and the handlers read. Share it in an `Arc`.
#[derive(Debug)]
pub struct Stats {
    origin: Instant,
    start_unix: f64,
    /// Milliseconds since `origin` of the last publication, plus one; 0 before the first.
    heartbeat: AtomicU64,
    stopping: AtomicBool,
    registrations: AtomicU64,
    calls_active: AtomicU64,
    calls_routing: AtomicU64,
    server_transactions: AtomicU64,
    client_transactions: AtomicU64,
    route_decisions: [AtomicU64; 4],
    /// Calls ended, by route kind and disposition.
    calls_ended: [[AtomicU64; DISPOSITIONS.len()]; CALL_ROUTES.len()],
    /// Cumulative-at-render bucket counts (each decision lands in one bucket here).
    route_buckets: [AtomicU64; ROUTE_BUCKETS.len() + 1],
    route_micros: AtomicU64,
    /// Whose failures make the process unhealthy.
    supervisor: Supervisor,
    /// The SIP trunks' state, as the SIP loop last published it.
    trunks: std::sync::Mutex<Vec<TrunkGauge>>,
    /// The PSTN lines' state (modems, FXO ports), as their watcher last published it.
    lines: std::sync::Mutex<Vec<LineGauge>>,
}

/// One PSTN line's state for `/metrics` (`pasarela_line_state`, a state set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineGauge {
    pub name: String,
    /// `analog FXO`, `GSM modem`.
    pub kind: String,
    /// The current state (`on-hook`, `ringing`, `in call`, `alarm` …).
    pub state: &'static str,
    /// Every state this kind of line can be in (each gets a 0 or 1 sample).
    pub states: &'static [&'static str],
}

/// One SIP trunk's numbers for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkGauge {
    pub name: String,
    /// Whether it is registered (`None`: it does not register).
    pub registered: Option<bool>,
    /// Whether it answers OPTIONS (`None`: no qualify, or not probed yet).
    pub up: Option<bool>,
    /// Calls in progress on it.
    pub calls: usize,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// What `/healthz` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// A supervised component kept failing and was given up ([`crate::supervise`]).
    Failed { component: String, reason: String },
    /// The SIP loop published recently.
    Ok,
    /// The SIP loop has not published for this long.
    Stale(Duration),
    /// The SIP loop has not started yet.
    Starting,
    /// The process is shutting down.
    Stopping,
}

impl Stats {
    /// Empty statistics; the process start time is taken now.
    pub fn new() -> Stats {
        let start_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Stats {
            origin: Instant::now(),
            start_unix,
            heartbeat: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            registrations: AtomicU64::new(0),
            calls_active: AtomicU64::new(0),
            calls_routing: AtomicU64::new(0),
            server_transactions: AtomicU64::new(0),
            client_transactions: AtomicU64::new(0),
            route_decisions: Default::default(),
            calls_ended: Default::default(),
            route_buckets: Default::default(),
            route_micros: AtomicU64::new(0),
            supervisor: Supervisor::global().clone(),
            trunks: Default::default(),
            lines: Default::default(),
        }
    }

    /// Empty statistics whose health also reflects `supervisor`'s components.
    pub fn with_supervisor(supervisor: Supervisor) -> Stats {
        Stats {
            supervisor,
            ..Stats::new()
        }
    }

    /// Publishes the SIP trunks' state (registered, reachable, calls in progress).
    pub fn publish_trunks(&self, trunks: Vec<TrunkGauge>) {
        if let Ok(mut t) = self.trunks.lock() {
            *t = trunks;
        }
    }

    /// Publishes the PSTN lines' state.
    pub fn publish_lines(&self, lines: Vec<LineGauge>) {
        if let Ok(mut l) = self.lines.lock() {
            *l = lines;
        }
    }

    /// Publishes the loop's counts and marks the loop alive at `now`.
    pub fn publish(&self, now: Instant, counts: &LoopCounts) {
        let set = |a: &AtomicU64, v: usize| a.store(v as u64, Relaxed);
        set(&self.registrations, counts.registrations);
        set(&self.calls_active, counts.calls_active);
        set(&self.calls_routing, counts.calls_routing);
        set(&self.server_transactions, counts.server_transactions);
        set(&self.client_transactions, counts.client_transactions);
        let ms = now.saturating_duration_since(self.origin).as_millis() as u64;
        self.heartbeat.store(ms + 1, Relaxed);
    }

    /// The counts last published.
    pub fn counts(&self) -> LoopCounts {
        let get = |a: &AtomicU64| a.load(Relaxed) as usize;
        LoopCounts {
            registrations: get(&self.registrations),
            calls_active: get(&self.calls_active),
            calls_routing: get(&self.calls_routing),
            server_transactions: get(&self.server_transactions),
            client_transactions: get(&self.client_transactions),
        }
    }

    /// Counts one routing decision and the time it took.
    pub fn route_decided(&self, outcome: RouteOutcome, elapsed: Duration) {
        let i = RouteOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        self.route_decisions[i].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = ROUTE_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(ROUTE_BUCKETS.len());
        self.route_buckets[bucket].fetch_add(1, Relaxed);
        self.route_micros
            .fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// Marks the process as shutting down (`/healthz` answers 503 from now on).
    /// A call ended (`route`: one of [`CALL_ROUTES`]; `disposition`: one of [`DISPOSITIONS`],
    /// anything else counts as failed).
    pub fn call_ended(&self, route: &str, disposition: &str) {
        let r = CALL_ROUTES.iter().position(|x| *x == route).unwrap_or(3);
        let d = DISPOSITIONS
            .iter()
            .position(|x| *x == disposition)
            .unwrap_or(DISPOSITIONS.len() - 1);
        self.calls_ended[r][d].fetch_add(1, Relaxed);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Relaxed);
    }

    /// The health of the SIP loop as seen at `now`.
    pub fn health(&self, now: Instant) -> Health {
        if self.stopping.load(Relaxed) {
            return Health::Stopping;
        }
        if let Some((component, reason)) = self.supervisor.failure() {
            return Health::Failed { component, reason };
        }
        let beat = self.heartbeat.load(Relaxed);
        if beat == 0 {
            return Health::Starting;
        }
        let last = self.origin + Duration::from_millis(beat - 1);
        let age = now.saturating_duration_since(last);
        if age > HEALTH_STALE_AFTER {
            Health::Stale(age)
        } else {
            Health::Ok
        }
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4), as of `now`.
    pub fn render_prometheus(&self, now: Instant) -> String {
        let mut out = String::with_capacity(2048);
        let c = self.counts();
        let mut gauge = |name: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        };
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds.",
            format!("{:.3}", self.start_unix),
        );
        gauge(
            "pasarela_registrations",
            "Live registrations (contact bindings of all extensions).",
            c.registrations.to_string(),
        );
        gauge(
            "pasarela_calls_active",
            "Calls in progress.",
            c.calls_active.to_string(),
        );
        gauge(
            "pasarela_calls_routing",
            "Calls waiting for their routing decision.",
            c.calls_routing.to_string(),
        );
        let beat = self.heartbeat.load(Relaxed);
        let age = if beat == 0 {
            "NaN".to_owned()
        } else {
            let last = self.origin + Duration::from_millis(beat - 1);
            format!("{:.3}", now.saturating_duration_since(last).as_secs_f64())
        };
        gauge(
            "pasarela_sip_loop_heartbeat_age_seconds",
            "Time since the SIP loop last published its numbers.",
            age,
        );

        let _ = writeln!(
            out,
            "# HELP pasarela_build_info Build information; the value is always 1."
        );
        let _ = writeln!(out, "# TYPE pasarela_build_info gauge");
        let _ = writeln!(
            out,
            "pasarela_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        let _ = writeln!(
            out,
            "# HELP pasarela_sip_transactions SIP transactions in progress, by role."
        );
        let _ = writeln!(out, "# TYPE pasarela_sip_transactions gauge");
        let _ = writeln!(
            out,
            "pasarela_sip_transactions{{role=\"server\"}} {}",
            c.server_transactions
        );
        let _ = writeln!(
            out,
            "pasarela_sip_transactions{{role=\"client\"}} {}",
            c.client_transactions
        );

        let trunks = self.trunks.lock().map(|t| t.clone()).unwrap_or_default();
        if !trunks.is_empty() {
            let label = |n: &str| n.replace('\\', "\\\\").replace('"', "\\\"");
            type Value<'a> = &'a dyn Fn(&TrunkGauge) -> Option<String>;
            let families: [(&str, &str, Value); 3] = [
                (
                    "pasarela_trunk_registered",
                    "Whether the SIP trunk's registration is valid (trunks that register).",
                    &|t| t.registered.map(|r| u8::from(r).to_string()),
                ),
                (
                    "pasarela_trunk_up",
                    "Whether the SIP trunk answers OPTIONS (trunks with qualify, once probed).",
                    &|t| t.up.map(|r| u8::from(r).to_string()),
                ),
                (
                    "pasarela_trunk_calls",
                    "Calls in progress on the SIP trunk.",
                    &|t| Some(t.calls.to_string()),
                ),
            ];
            for (name, help, value) in families {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                for t in &trunks {
                    if let Some(v) = value(t) {
                        let _ = writeln!(out, "{name}{{trunk=\"{}\"}} {v}", label(&t.name));
                    }
                }
            }
        }

        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        if !lines.is_empty() {
            let label = |n: &str| n.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                out,
                "# HELP pasarela_line_state The PSTN line's state (1 for the current one): on-hook, dialling, ringing, in call, alarm … for FXO ports; ready, ringing, in call … for modems."
            );
            let _ = writeln!(out, "# TYPE pasarela_line_state gauge");
            for l in &lines {
                for st in l.states {
                    let _ = writeln!(
                        out,
                        "pasarela_line_state{{line=\"{}\",kind=\"{}\",state=\"{st}\"}} {}",
                        label(&l.name),
                        label(&l.kind),
                        u8::from(*st == l.state)
                    );
                }
            }
        }

        let _ = writeln!(
            out,
            "# HELP pasarela_route_decisions_total Routing decisions for calls to numbers that are not extensions, by outcome."
        );
        let _ = writeln!(out, "# TYPE pasarela_route_decisions_total counter");
        for (outcome, count) in RouteOutcome::ALL.iter().zip(&self.route_decisions) {
            let _ = writeln!(
                out,
                "pasarela_route_decisions_total{{outcome=\"{}\"}} {}",
                outcome.label(),
                count.load(Relaxed)
            );
        }

        let _ = writeln!(
            out,
            "# HELP pasarela_calls_ended_total Calls ended, by route and disposition."
        );
        let _ = writeln!(out, "# TYPE pasarela_calls_ended_total counter");
        for (route, row) in CALL_ROUTES.iter().zip(&self.calls_ended) {
            for (disposition, count) in DISPOSITIONS.iter().zip(row) {
                let _ = writeln!(
                    out,
                    "pasarela_calls_ended_total{{route=\"{route}\",disposition=\"{disposition}\"}} {}",
                    count.load(Relaxed)
                );
            }
        }

        let _ = writeln!(
            out,
            "# HELP pasarela_route_decision_seconds Time a routing decision took (numbering, ENUM/DUNDi, server location)."
        );
        let _ = writeln!(out, "# TYPE pasarela_route_decision_seconds histogram");
        let mut cumulative = 0u64;
        for (i, le) in ROUTE_BUCKETS.iter().enumerate() {
            cumulative += self.route_buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "pasarela_route_decision_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.route_buckets[ROUTE_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "pasarela_route_decision_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.route_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "pasarela_route_decision_seconds_sum {sum:.6}");
        let _ = writeln!(out, "pasarela_route_decision_seconds_count {cumulative}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name` (with its labels) in a rendered text.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn line_states_are_a_state_set() {
        let s = Stats::new();
        s.publish_lines(vec![LineGauge {
            name: "fxo1".into(),
            kind: "analog FXO".into(),
            state: "alarm",
            states: &["on-hook", "in call", "alarm"],
        }]);
        let text = s.render_prometheus(Instant::now());
        let q = |st: &str| {
            sample(
                &text,
                &format!("pasarela_line_state{{line=\"fxo1\",kind=\"analog FXO\",state=\"{st}\"}}"),
            )
        };
        assert_eq!(q("alarm"), Some(1.0), "{text}");
        assert_eq!(q("on-hook"), Some(0.0), "{text}");
        assert_eq!(q("in call"), Some(0.0), "{text}");
        assert!(text.contains("# TYPE pasarela_line_state gauge"));
    }

    #[test]
    fn calls_ended_by_route_and_disposition() {
        let s = Stats::new();
        s.call_ended(call_route_kind(Some("trunk carrier")), "answered");
        s.call_ended(call_route_kind(Some("ENUM e164.arpa")), "busy");
        s.call_ended(call_route_kind(None), "odd");
        let text = s.render_prometheus(Instant::now());
        let get = |l: &str| sample(&text, &format!("pasarela_calls_ended_total{l}"));
        assert_eq!(get("{route=\"pstn\",disposition=\"answered\"}"), Some(1.0));
        assert_eq!(get("{route=\"sip\",disposition=\"busy\"}"), Some(1.0));
        assert_eq!(get("{route=\"none\",disposition=\"failed\"}"), Some(1.0));
        assert_eq!(
            get("{route=\"internal\",disposition=\"answered\"}"),
            Some(0.0)
        );
    }

    #[test]
    fn health_follows_the_heartbeat() {
        let s = Stats::new();
        let t0 = Instant::now();
        assert_eq!(s.health(t0), Health::Starting);
        s.publish(t0, &LoopCounts::default());
        assert_eq!(s.health(t0 + Duration::from_secs(1)), Health::Ok);
        match s.health(t0 + HEALTH_STALE_AFTER + Duration::from_secs(2)) {
            Health::Stale(age) => assert!(age > HEALTH_STALE_AFTER, "{age:?}"),
            other => panic!("expected stale, got {other:?}"),
        }
        s.publish(t0 + Duration::from_secs(30), &LoopCounts::default());
        assert_eq!(s.health(t0 + Duration::from_secs(31)), Health::Ok);
        s.set_stopping();
        assert_eq!(s.health(t0 + Duration::from_secs(31)), Health::Stopping);
    }

    #[test]
    fn health_names_a_failed_component() {
        let sup = Supervisor::new();
        let s = Stats::with_supervisor(sup.clone());
        let t0 = Instant::now();
        s.publish(t0, &LoopCounts::default());
        assert_eq!(s.health(t0), Health::Ok);
        sup.mark_failed("SIP UDP 127.0.0.1:5060", "panicked 6 times");
        assert_eq!(
            s.health(t0),
            Health::Failed {
                component: "SIP UDP 127.0.0.1:5060".into(),
                reason: "panicked 6 times".into()
            }
        );
    }

    #[test]
    fn metrics_text() {
        let s = Stats::new();
        let now = Instant::now();
        s.publish(
            now,
            &LoopCounts {
                registrations: 3,
                calls_active: 2,
                calls_routing: 1,
                server_transactions: 5,
                client_transactions: 4,
            },
        );
        s.route_decided(RouteOutcome::Sip, Duration::from_millis(3));
        s.route_decided(RouteOutcome::Trunk, Duration::from_millis(700));
        s.route_decided(RouteOutcome::Reject, Duration::from_secs(9));
        let text = s.render_prometheus(now);
        assert_eq!(sample(&text, "pasarela_registrations"), Some(3.0));
        assert_eq!(sample(&text, "pasarela_calls_active"), Some(2.0));
        assert_eq!(sample(&text, "pasarela_calls_routing"), Some(1.0));
        assert_eq!(
            sample(&text, "pasarela_sip_transactions{role=\"server\"}"),
            Some(5.0)
        );
        assert_eq!(
            sample(&text, "pasarela_sip_transactions{role=\"client\"}"),
            Some(4.0)
        );
        assert_eq!(
            sample(&text, "pasarela_route_decisions_total{outcome=\"sip\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "pasarela_route_decisions_total{outcome=\"extension\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                "pasarela_route_decision_seconds_bucket{le=\"0.005\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "pasarela_route_decision_seconds_bucket{le=\"1\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "pasarela_route_decision_seconds_bucket{le=\"+Inf\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "pasarela_route_decision_seconds_count"),
            Some(3.0)
        );
        let sum = sample(&text, "pasarela_route_decision_seconds_sum").unwrap();
        assert!((sum - 9.703).abs() < 1e-6, "{sum}");
        let start = sample(&text, "process_start_time_seconds").unwrap();
        assert!(start > 1.6e9, "{start}");
        assert!(text.contains(&format!(
            "pasarela_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        // Every sample belongs to a family announced by # TYPE.
        let typed: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| typed.contains(f))
                .unwrap_or(name);
            assert!(typed.contains(&family), "untyped sample {line}");
        }
    }
}
