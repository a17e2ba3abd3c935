//! The routing test page `/routing`: "what happens if extension X dials N" — the route
//! explainer of `pasarela route`, run by the gateway's own router (same ENUM cache and DNS),
//! without placing a call.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use super::{PageError, WebState};
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
    }
    .into_response())
}
