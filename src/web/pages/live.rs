//! The live page `/live`: calls in progress, registered phones and the PSTN lines, as the SIP
//! loop reports them at the moment of the request. The page refreshes itself every few
//! seconds (a `<meta http-equiv="refresh">`, no script).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, WebState};
use crate::live::{LineState, LiveSnapshot};
use crate::web::auth::Session;

/// Seconds between refreshes of the page.
pub const REFRESH_S: u32 = 3;

/// A call in progress as a row.
pub struct CallRow {
    pub id: u64,
    pub caller: String,
    pub callee: String,
    pub state: &'static str,
    pub age: String,
    pub talking: String,
    pub route: String,
    pub target: String,
    pub codec: String,
}

/// A registered contact as a row.
pub struct RegistrationRow {
    pub extension: String,
    pub contact: String,
    pub source: String,
    pub user_agent: String,
    pub expires_in: u64,
}

/// An extension's busy lamp as a row.
pub struct LampRow {
    pub extension: String,
    pub name: String,
    pub lamp: &'static str,
    pub watchers: usize,
}

/// A DUNDi peer as a row.
pub struct PeerRow {
    pub eid: String,
    pub address: String,
    pub encrypted: bool,
    pub status: String,
}

/// The DUNDi peers of the node, if it runs (bounded: a page never waits long for it).
pub async fn dundi_peers(state: &WebState) -> Option<Vec<PeerRow>> {
    use crate::routing::dundi::Reachability;
    let d = state.dundi.as_ref().filter(|d| d.handle.is_running())?;
    let peers = tokio::time::timeout(std::time::Duration::from_secs(1), d.handle.peers())
        .await
        .ok()?;
    Some(
        peers
            .into_iter()
            .map(|p| PeerRow {
                eid: p.eid.to_string(),
                address: p.address.to_string(),
                encrypted: p.encrypted,
                status: match p.reachability {
                    Reachability::Unknown => "not qualified".to_owned(),
                    Reachability::Reachable(d) => format!("reachable, {} ms", d.as_millis()),
                    Reachability::Lagged(d) => format!("lagged, {} ms", d.as_millis()),
                    Reachability::Unreachable => "unreachable".to_owned(),
                },
            })
            .collect(),
    )
}

#[derive(Template, WebTemplate)]
#[template(path = "live.html")]
struct LivePage {
    session: Option<Session>,
    csrf: String,
    admin: bool,
    refresh: u32,
    answered: bool,
    taken_at: String,
    calls: Vec<CallRow>,
    registrations: Vec<RegistrationRow>,
    lines: Vec<LineState>,
    lamps: Vec<LampRow>,
    /// `None`: DUNDi is off.
    peers: Option<Vec<PeerRow>>,
}

/// `m:ss` (or `h:mm:ss`) of a duration.
pub fn clock(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn rows(snap: &LiveSnapshot) -> (Vec<CallRow>, Vec<RegistrationRow>) {
    let calls = snap
        .calls
        .iter()
        .map(|c| CallRow {
            id: c.id,
            caller: c.caller.clone(),
            callee: c.callee.clone(),
            state: c.state.as_str(),
            age: clock(c.age),
            talking: c.talking.map(clock).unwrap_or_default(),
            route: c.route.clone(),
            target: c.target.clone().unwrap_or_default(),
            codec: c.codec.clone().unwrap_or_default(),
        })
        .collect();
    let regs = snap
        .registrations
        .iter()
        .map(|r| RegistrationRow {
            extension: r.extension.clone(),
            contact: r.contact.clone(),
            source: r.source.clone(),
            user_agent: r.user_agent.clone().unwrap_or_default(),
            expires_in: r.expires_in,
        })
        .collect();
    (calls, regs)
}

/// `GET /live`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
) -> Response {
    let snap = match &state.live {
        Some(source) => source.snapshot().await,
        None => None,
    };
    let peers = dundi_peers(&state).await;
    let page = match snap {
        Some(snap) => {
            let (calls, registrations) = rows(&snap);
            LivePage {
                csrf: session.csrf.clone(),
                admin: session.admin,
                session: Some(session),
                refresh: REFRESH_S,
                answered: true,
                taken_at: state.office.show(
                    i64::try_from(snap.taken_at)
                        .unwrap_or(0)
                        .saturating_mul(1000),
                ),
                calls,
                registrations,
                lines: snap.lines,
                lamps: snap
                    .lamps
                    .into_iter()
                    .map(|l| LampRow {
                        extension: l.extension,
                        name: l.name.unwrap_or_default(),
                        lamp: l.lamp,
                        watchers: l.watchers,
                    })
                    .collect(),
                peers,
            }
        }
        None => LivePage {
            csrf: session.csrf.clone(),
            admin: session.admin,
            session: Some(session),
            refresh: REFRESH_S,
            answered: false,
            taken_at: String::new(),
            calls: Vec::new(),
            registrations: Vec::new(),
            lines: Vec::new(),
            lamps: Vec::new(),
            peers,
        },
    };
    page.into_response()
}

/// The hang-up form of a call row.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HangUpForm {
    pub csrf: String,
    pub call: String,
}

/// `POST /live/hangup`: ends a call in progress (administrators; the session gate refuses
/// viewers). The SIP loop sends BYE to both legs of an answered call.
pub async fn hang_up(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<HangUpForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    let Ok(id) = form.call.trim().parse::<u64>() else {
        return (StatusCode::UNPROCESSABLE_ENTITY, "422: no such call\n").into_response();
    };
    let Some(source) = &state.live else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "503: the SIP service is not running here\n",
        )
            .into_response();
    };
    match source.hang_up(id).await {
        Some(true) => {
            tracing::info!(user = %session.username, call = id, "call hung up from the dashboard");
            Redirect::to("/live").into_response()
        }
        Some(false) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "422: that call has already ended\n",
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "503: the SIP service did not answer; try again\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clocks() {
        assert_eq!(clock(Duration::from_secs(0)), "0:00");
        assert_eq!(clock(Duration::from_secs(75)), "1:15");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    }
}
