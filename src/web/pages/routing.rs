//! The routing test page `/routing`: "what happens if extension X dials N" — the route
//! explainer of `pasarela route`, run by the gateway's own router (same ENUM cache and DNS),
//! without placing a call; and the ENUM cache (what is cached, for how long, and a button to
//! forget it all, e.g. after a peer changed its NAPTR records).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, CsrfForm, PageError, WebState};
use crate::routing::enum_lookup::{CacheHit, QueryType};
use crate::web::auth::Session;

/// The form's fields (GET: the page can be bookmarked).
#[derive(Debug, Default, Deserialize)]
pub struct RouteQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    number: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "routing.html")]
struct RoutingPage {
    session: Option<Session>,
    from: String,
    number: String,
    error: Option<String>,
    explanation: Option<String>,
    /// `None`: no resolver in this process.
    cache: Option<Vec<CacheRow>>,
}

/// An ENUM cache entry as a row.
pub struct CacheRow {
    pub domain: String,
    pub qtype: &'static str,
    pub answer: String,
    pub expires_in: u64,
}

pub(crate) fn cache_rows(state: &WebState) -> Option<Vec<CacheRow>> {
    let resolver = state.enum_.as_ref()?;
    let mut rows: Vec<CacheRow> = resolver
        .cache_entries()
        .into_iter()
        .map(|e| CacheRow {
            domain: e.domain,
            qtype: match e.qtype {
                QueryType::Naptr => "NAPTR",
                QueryType::Srv => "SRV",
                QueryType::A => "A",
                QueryType::Aaaa => "AAAA",
            },
            answer: match e.answer {
                CacheHit::Records(1) => "1 record".to_owned(),
                CacheHit::Records(n) => format!("{n} records"),
                CacheHit::NoRecords => "no records of the type".to_owned(),
                CacheHit::NxDomain => "no such name".to_owned(),
            },
            expires_in: e.expires_in.as_secs(),
        })
        .collect();
    rows.sort_by(|a, b| a.domain.cmp(&b.domain).then(a.qtype.cmp(b.qtype)));
    Some(rows)
}

/// `POST /routing/flush-cache`: forgets every cached ENUM and server-location answer.
pub async fn flush_cache(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    if let Some(r) = &state.enum_ {
        r.flush_cache();
        tracing::info!(user = %session.username, "ENUM cache flushed from the dashboard");
    }
    Redirect::to("/routing").into_response()
}

/// `GET /routing[?from=EXT&number=N]`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(q): Query<RouteQuery>,
) -> Result<Response, PageError> {
    let from = q.from.trim().to_owned();
    let number = q.number.trim().to_owned();
    let mut error = None;
    let mut explanation = None;
    if !number.is_empty() {
        if number.len() > 64 || from.len() > 15 {
            error = Some("Number: at most 64 characters; extension: at most 15 digits.".to_owned());
        } else if let Some(router) = &state.router {
            let caller = (!from.is_empty()).then_some(from.as_str());
            explanation = Some(router.route(caller, &number).await.to_string());
        } else {
            error = Some("Routing is not available in this process.".to_owned());
        }
    }
    Ok(RoutingPage {
        session: Some(session),
        from,
        number,
        error,
        explanation,
        cache: cache_rows(&state),
    }
    .into_response())
}
