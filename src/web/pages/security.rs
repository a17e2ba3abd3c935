//! The security page `/security`: the sources banned after failed SIP authentications and the
//! locked extensions (from the SIP side's [`guard`](crate::security::guard)), with a button to
//! lift each ban or lock.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, WebState};
use crate::web::auth::Session;

/// A ban as shown.
pub struct BanView {
    pub source: String,
    pub until: String,
    pub count: u32,
    pub account: String,
}

/// A lock as shown.
pub struct LockView {
    pub account: String,
    pub until: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "security.html")]
struct SecurityPage {
    session: Option<Session>,
    available: bool,
    bans: Vec<BanView>,
    locks: Vec<LockView>,
    message: Option<String>,
    max_failures: u32,
    window_min: u64,
    ban_min: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LiftForm {
    csrf: String,
    source: String,
    account: String,
}

fn render(state: &WebState, session: Session, message: Option<String>) -> Response {
    let now = crate::web::office_time::unix_now();
    let office = &state.office;
    let show = |t: u64| office.show(i64::try_from(t).unwrap_or(i64::MAX).saturating_mul(1000));
    let (available, bans, locks, settings) = match &state.guard {
        Some(g) => {
            let g = g.lock();
            let bans = g
                .bans(now)
                .into_iter()
                .map(|b| BanView {
                    source: b.source.to_string(),
                    until: show(b.until),
                    count: b.count,
                    account: b.account.unwrap_or_else(|| "-".into()),
                })
                .collect();
            let locks = g
                .locks(now)
                .into_iter()
                .map(|l| LockView {
                    account: l.account,
                    until: show(l.until),
                })
                .collect();
            (true, bans, locks, g.settings())
        }
        None => (false, Vec::new(), Vec::new(), Default::default()),
    };
    SecurityPage {
        session: Some(session),
        available,
        bans,
        locks,
        message,
        max_failures: settings.max_failures,
        window_min: settings.window_secs / 60,
        ban_min: settings.ban_secs / 60,
    }
    .into_response()
}

/// `GET /security`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
) -> Response {
    render(&state, session, None)
}

/// `POST /security/lift`: lifts the ban of `source`.
pub async fn lift(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<LiftForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    let now = crate::web::office_time::unix_now();
    let message = match (form.source.trim().parse::<std::net::IpAddr>(), &state.guard) {
        (Ok(ip), Some(g)) if g.lock().lift(ip, now) => {
            tracing::info!(user = %session.username, %ip, "dashboard: ban lifted");
            format!("The ban of {ip} is lifted.")
        }
        (Ok(ip), _) => format!("{ip} is not banned."),
        (Err(_), _) => "That is not an IP address.".to_owned(),
    };
    render(&state, session, Some(message))
}

/// `POST /security/unlock`: unlocks extension `account`.
pub async fn unlock(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<LiftForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    let now = crate::web::office_time::unix_now();
    let account = form.account.trim();
    let message = match &state.guard {
        Some(g) if g.lock().unlock(account, now) => {
            tracing::info!(user = %session.username, account, "dashboard: extension unlocked");
            format!("Extension {account} is unlocked.")
        }
        _ => format!("Extension {account} is not locked."),
    };
    render(&state, session, Some(message))
}
