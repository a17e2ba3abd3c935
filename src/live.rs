//! What is happening now, for the dashboard's live page and the JSON API: calls in progress,
//! registered phones and the state of the PSTN lines. The SIP loop builds a [`LiveSnapshot`]
//! only when someone asks (a [`LiveSource`] request travels to the loop over a channel and the
//! answer comes back on a oneshot), so a gateway nobody watches pays nothing for it.
//!
//! `server` fills these types and `web` shows them; this module imports neither, so the
//! dependency arrows point one way (server → live ← web).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::b2bua::LiveCall;

/// A registered contact, for the live page.
#[derive(Debug, Clone)]
pub struct LiveBinding {
    pub extension: String,
    pub contact: String,
    /// Where its REGISTER came from (`udp:192.0.2.7:5060`).
    pub source: String,
    pub user_agent: Option<String>,
    /// Seconds left.
    pub expires_in: u64,
}

/// An extension's busy lamp (what subscribers to its dialog state are told), for the live
/// page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLamp {
    pub extension: String,
    pub name: Option<String>,
    /// `offline`, `idle`, `ringing`, `calling`, `in call`.
    pub lamp: &'static str,
    /// Subscriptions watching it.
    pub watchers: usize,
}

/// A trunk's state for the live page, the API and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkLive {
    pub name: String,
    /// `registered`, `registering`, `failed`, `forbidden`, `unregistered`; `None` when the
    /// trunk does not register.
    pub registration: Option<&'static str>,
    /// Seconds the registration stays valid.
    pub registered_secs: Option<u64>,
    /// The last registration failure's status.
    pub last_failure: Option<u16>,
    /// `up`, `down`, `unknown`; `None` without qualify.
    pub reachable: Option<&'static str>,
    /// Seconds since the trunk went up or down.
    pub reach_secs: Option<u64>,
    pub rtt_ms: Option<u64>,
    /// Calls in progress on the trunk (both ways).
    pub calls: usize,
}

/// How long a page waits for the SIP loop's answer before it says the loop is busy.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// A PSTN line (SIP trunk, GSM modem, DAHDI port) and its state.
#[derive(Debug, Clone)]
pub struct LineState {
    pub name: String,
    /// `SIP trunk`, `GSM modem` …
    pub kind: String,
    /// `ready`, `disabled`, `in call`, `down` …
    pub state: String,
    /// Where it goes, or signal/operator for a modem.
    pub detail: String,
}

/// One moment of the gateway, as the live page shows it.
#[derive(Debug, Clone)]
pub struct LiveSnapshot {
    /// Unix seconds when it was taken.
    pub taken_at: u64,
    pub calls: Vec<LiveCall>,
    pub registrations: Vec<LiveBinding>,
    pub lines: Vec<LineState>,
    /// The SIP trunks' registration, reachability and calls.
    pub trunks: Vec<TrunkLive>,
    /// Every extension's busy lamp.
    pub lamps: Vec<LiveLamp>,
}

/// A request from the dashboard, answered by the SIP loop.
#[derive(Debug)]
pub enum LiveRequest {
    /// What is happening now.
    Snapshot(oneshot::Sender<LiveSnapshot>),
    /// End call `id` (BYE to both legs of an answered call, 487/CANCEL for a ringing one);
    /// the answer says whether such a call existed.
    HangUp(u64, oneshot::Sender<bool>),
}

/// The dashboard's handle for asking the SIP loop what it is doing.
#[derive(Debug, Clone)]
pub struct LiveSource {
    requests: mpsc::Sender<LiveRequest>,
}

impl LiveSource {
    /// A source and the receiving end the SIP loop answers from.
    pub fn channel() -> (LiveSource, mpsc::Receiver<LiveRequest>) {
        let (requests, rx) = mpsc::channel(16);
        (LiveSource { requests }, rx)
    }

    /// The loop's current snapshot; `None` when it does not answer in time (stopping, or
    /// too busy), so that a page never hangs on it.
    pub async fn snapshot(&self) -> Option<LiveSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.requests.try_send(LiveRequest::Snapshot(tx)).ok()?;
        tokio::time::timeout(ANSWER_WITHIN, rx).await.ok()?.ok()
    }

    /// Asks the loop to hang up call `id`: `Some(true)` when it did, `Some(false)` when there
    /// is no such call (any more), `None` when the loop did not answer in time.
    pub async fn hang_up(&self, id: u64) -> Option<bool> {
        let (tx, rx) = oneshot::channel();
        self.requests.try_send(LiveRequest::HangUp(id, tx)).ok()?;
        tokio::time::timeout(ANSWER_WITHIN, rx).await.ok()?.ok()
    }
}

/// The state of an enabled SIP trunk before anything says how it is: no REGISTER or OPTIONS
/// answer yet and no call in progress (its live state replaces it, [`with_trunk_state`]).
pub const TRUNK_UNKNOWN: &str = "unknown (no answer yet)";

/// The SIP trunks the configuration declares, in the form the live page shows them; the
/// trunks named in `pstn_lines` are PSTN lines (modems, FXO ports), which are trunks for the
/// router but have their own state (`crate::server::lines`, which adds them).
pub fn configured_lines(
    trunks: &[crate::routing::trunk::TrunkConfig],
    pstn_lines: &[&str],
) -> Vec<LineState> {
    trunks
        .iter()
        .filter(|t| !pstn_lines.contains(&t.name.as_str()))
        .map(|t| LineState {
            name: t.name.clone(),
            kind: "SIP trunk".into(),
            state: if t.enabled { TRUNK_UNKNOWN } else { "disabled" }.into(),
            detail: t.uri.to_string(),
        })
        .collect()
}

/// The configured lines with the SIP trunks' live state (registration, reachability, calls in
/// progress) in place of their static one.
pub fn with_trunk_state(lines: &[LineState], trunks: &[TrunkLive]) -> Vec<LineState> {
    lines
        .iter()
        .map(|l| {
            let Some(t) = trunks
                .iter()
                .find(|t| t.name == l.name && l.kind == "SIP trunk")
            else {
                return l.clone();
            };
            let mut parts = Vec::new();
            match (t.registration, t.registered_secs, t.last_failure) {
                (Some("registered"), Some(secs), _) => {
                    parts.push(format!("registered ({secs} s left)"))
                }
                (Some(r), _, Some(status)) => parts.push(format!("{r} ({status})")),
                (Some(r), _, None) => parts.push(r.to_owned()),
                (None, _, _) => {}
            }
            if let Some(r) = t.reachable {
                parts.push(match (r, t.reach_secs) {
                    ("down", Some(s)) => format!("down for {s} s"),
                    ("up", _) => match t.rtt_ms {
                        Some(ms) => format!("up ({ms} ms)"),
                        None => "up".to_owned(),
                    },
                    (r, _) => r.to_owned(),
                });
            }
            if t.calls > 0 {
                parts.push(format!(
                    "{} call{} in progress",
                    t.calls,
                    if t.calls == 1 { "" } else { "s" }
                ));
            }
            LineState {
                state: if parts.is_empty() {
                    l.state.clone()
                } else {
                    parts.join(", ")
                },
                ..l.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunks_show_their_live_state() {
        let line = |name: &str, kind: &str| LineState {
            name: name.into(),
            kind: kind.into(),
            state: "ready".into(),
            detail: "sip:x".into(),
        };
        let lines = vec![
            line("carrier", "SIP trunk"),
            line("gsm1", "GSM modem"),
            line("quiet", "SIP trunk"),
        ];
        let live = |name: &str| TrunkLive {
            name: name.into(),
            registration: None,
            registered_secs: None,
            last_failure: None,
            reachable: None,
            reach_secs: None,
            rtt_ms: None,
            calls: 0,
        };
        let trunks = vec![
            TrunkLive {
                registration: Some("registered"),
                registered_secs: Some(42),
                reachable: Some("up"),
                rtt_ms: Some(3),
                calls: 2,
                ..live("carrier")
            },
            live("quiet"),
        ];
        let shown = with_trunk_state(&lines, &trunks);
        assert_eq!(
            shown[0].state,
            "registered (42 s left), up (3 ms), 2 calls in progress"
        );
        assert_eq!(shown[1].state, "ready", "modem lines keep their own state");
        assert_eq!(
            shown[2].state, "ready",
            "nothing known: the configured state"
        );
        let Ok(crate::sip::uri::Uri::Sip(uri)) = crate::sip::uri::Uri::parse("sip:127.0.0.5")
        else {
            unreachable!()
        };
        let trunks = vec![crate::routing::trunk::TrunkConfig {
            name: "carrier".into(),
            uri,
            username: None,
            password: None,
            number_format: crate::routing::trunk::NumberFormat::E164,
            enabled: true,
            sources: Vec::new(),
            options: Default::default(),
        }];
        assert_eq!(
            configured_lines(&trunks, &[])[0].state,
            TRUNK_UNKNOWN,
            "a trunk nothing was sent to is not called ready"
        );
        let down = vec![TrunkLive {
            registration: Some("forbidden"),
            last_failure: Some(403),
            reachable: Some("down"),
            reach_secs: Some(9),
            ..live("carrier")
        }];
        assert_eq!(
            with_trunk_state(&lines, &down)[0].state,
            "forbidden (403), down for 9 s"
        );
    }

    #[tokio::test]
    async fn answered_by_the_loop_or_none() {
        let (source, mut rx) = LiveSource::channel();
        let loop_side = tokio::spawn(async move {
            if let Some(LiveRequest::Snapshot(reply)) = rx.recv().await {
                let _ = reply.send(LiveSnapshot {
                    taken_at: 7,
                    calls: Vec::new(),
                    registrations: Vec::new(),
                    lines: Vec::new(),
                    trunks: Vec::new(),
                    lamps: Vec::new(),
                });
            }
            // The loop stops: later requests get no answer.
        });
        assert_eq!(source.snapshot().await.map(|s| s.taken_at), Some(7));
        // A hang-up travels the same way.
        let h = source.hang_up(9);
        let (asked, _) = tokio::join!(h, async {});
        assert_eq!(asked, None, "the loop answered only one request");
        let _ = loop_side.await;
        assert!(source.snapshot().await.is_none());
    }
}
