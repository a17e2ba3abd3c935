//! The analog (FXO) lines' state for the rest of `serve`: the words the live page, the API
//! and `/metrics` use for it (on-hook, dialling, ringing, in call, alarm …), and a watcher
//! that tells the router which lines cannot take a call now (in alarm, channel not opened or
//! lost), with the reason its explainer gives, and publishes every line's state for
//! `/metrics` whenever one changes.

use std::sync::Arc;

use crate::pstn::{LinePool, LineState, LineStatus};
use crate::routing::trunk_health::TrunkHealth;
use crate::web::stats::{LineGauge, Stats};

/// The `kind` of an FXO port ([`crate::pstn::Line::kind`]).
pub const FXO_KIND: &str = "analog FXO";

/// Every state an FXO line is shown in (the state set of `pasarela_line_state`).
pub const FXO_STATES: &[&str] = &[
    "on-hook", "dialling", "ringing", "in call", "alarm", "starting", "down", "failed",
];

/// Every state a GSM modem line is shown in.
pub const MODEM_STATES: &[&str] = &[
    "ready",
    "ringing",
    "in call",
    "starting",
    "down",
    "failed",
    "resetting",
    "alarm",
];

/// How an FXO line's state is shown.
pub fn fxo_state(s: &LineStatus) -> &'static str {
    match s.state {
        LineState::Idle => "on-hook",
        LineState::Dialling => "dialling",
        LineState::Alerting | LineState::Incoming => "ringing",
        LineState::Active => "in call",
        LineState::Alarm => "alarm",
        LineState::Initialising => "starting",
        LineState::Down | LineState::Resetting => "down",
        LineState::Failed => "failed",
    }
}

/// How a GSM modem line's state is shown.
pub fn modem_state(s: &LineStatus) -> &'static str {
    match s.state {
        LineState::Idle => "ready",
        LineState::Dialling | LineState::Alerting | LineState::Incoming => "ringing",
        LineState::Active => "in call",
        LineState::Down => "down",
        LineState::Initialising => "starting",
        LineState::Failed => "failed",
        LineState::Resetting => "resetting",
        LineState::Alarm => "alarm",
    }
}

/// The live page's detail of an FXO line: its channel, calls, and the last error.
pub fn fxo_detail(s: &LineStatus) -> String {
    format!(
        "channel {chan}, {calls} calls ({ans} answered){err}",
        chan = s.data_port.as_deref().unwrap_or("-"),
        calls = s.calls_served,
        ans = s.calls_answered,
        err = s
            .last_error
            .as_deref()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default(),
    )
}

/// Why an FXO line cannot take a call now, for the router's explainer; `None` when it can
/// (or is busy with a call: that is the line's own answer).
pub fn fxo_out_of_service(s: &LineStatus) -> Option<String> {
    let err = s.last_error.as_deref().unwrap_or("no detail");
    match s.state {
        LineState::Alarm => Some(format!("in alarm ({err})")),
        LineState::Failed => Some(format!("channel not opened ({err})")),
        LineState::Down => Some(format!("channel lost ({err})")),
        _ => None,
    }
}

fn gauges(pool: &LinePool) -> Vec<LineGauge> {
    pool.lines()
        .iter()
        .map(|l| {
            let s = l.status();
            let fxo = l.kind() == FXO_KIND;
            LineGauge {
                name: s.name.clone(),
                kind: l.kind().to_owned(),
                state: if fxo { fxo_state(&s) } else { modem_state(&s) },
                states: if fxo { FXO_STATES } else { MODEM_STATES },
            }
        })
        .collect()
}

/// Watches every line of `pool` (inside a tokio runtime): FXO lines out of service are
/// reported to `health` (the router skips them), and every change is published to `stats`.
pub fn spawn(pool: Arc<LinePool>, health: Arc<TrunkHealth>, stats: Arc<Stats>) {
    stats.publish_lines(gauges(&pool));
    for line in pool.lines() {
        watch(&pool, &line, &health, &stats);
    }
}

/// Watches one line of `pool`, as [`spawn`] does (a line added while the gateway runs); the
/// watch ends with the line.
pub fn watch(
    pool: &Arc<LinePool>,
    line: &Arc<dyn crate::pstn::Line>,
    health: &Arc<TrunkHealth>,
    stats: &Arc<Stats>,
) {
    let mut rx = line.watch_status();
    let fxo = line.kind() == FXO_KIND;
    let (pool, health, stats) = (Arc::clone(pool), Arc::clone(health), Arc::clone(stats));
    let name = format!("line state {}", line.name());
    let task = tokio::spawn(async move {
        loop {
            let status = rx.borrow_and_update().clone();
            if fxo {
                match fxo_out_of_service(&status) {
                    Some(why) => health.set_line_out(&status.name, why),
                    None => health.set_line_in(&status.name),
                }
            } else {
                // The Lines page offers the modems found when a modem line is added.
                crate::pstn::gsm::discover::note_status(&status);
            }
            stats.publish_lines(gauges(&pool));
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    crate::supervise::Supervisor::global().watch(name, task);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fxo_states_and_reasons() {
        let mut s = LineStatus {
            name: "fxo1".into(),
            data_port: Some("dahdi:1".into()),
            ..LineStatus::default()
        };
        s.state = LineState::Idle;
        assert_eq!(fxo_state(&s), "on-hook");
        assert_eq!(fxo_out_of_service(&s), None);
        s.state = LineState::Active;
        assert_eq!(fxo_state(&s), "in call");
        assert_eq!(fxo_out_of_service(&s), None);
        s.state = LineState::Alarm;
        s.last_error = Some("DAHDI alarm on dahdi:1".into());
        assert_eq!(fxo_state(&s), "alarm");
        assert_eq!(
            fxo_out_of_service(&s).as_deref(),
            Some("in alarm (DAHDI alarm on dahdi:1)")
        );
        assert!(fxo_detail(&s).contains("channel dahdi:1"));
        for st in [
            LineState::Down,
            LineState::Initialising,
            LineState::Idle,
            LineState::Dialling,
            LineState::Alerting,
            LineState::Active,
            LineState::Incoming,
            LineState::Failed,
            LineState::Resetting,
            LineState::Alarm,
        ] {
            s.state = st;
            assert!(FXO_STATES.contains(&fxo_state(&s)), "{st:?}");
            assert!(MODEM_STATES.contains(&modem_state(&s)), "{st:?}");
        }
    }
}
