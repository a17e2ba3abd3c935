//! The messages part of the JSON API (`/api/v1/messages`, `/api/v1/ussd`), behind the same
//! token check as the rest of [`super::api`]: list the newest messages (`kind`, `limit`), send
//! one (`{"from": EXT, "to": NUMBER-OR-EXT, "text": …}` → `{"id": N}`), run a USSD code
//! (`{"code": "*100#", "line": NAME?}` → `{"answer": …}`; also the reply to a network USSD
//! that waits for one), list the USSD messages of the lines (`GET /api/v1/ussd`, `origin`
//! `network` for those the network sent on its own, `limit`).
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::pages::WebState;

/// The routes (the caller adds the token check).
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/messages", get(list).post(send))
        .route("/api/v1/ussd", get(ussd_list).post(ussd))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// `GET /api/v1/messages` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    kind: Option<String>,
    limit: Option<i64>,
}

async fn list(State(state): State<WebState>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let path = state.db_path().to_path_buf();
    let kind = q.kind.filter(|k| !k.is_empty());
    let rows = tokio::task::spawn_blocking(move || {
        crate::sms::service::list(&path, kind.as_deref(), limit)
    })
    .await;
    match rows {
        Ok(Ok(rows)) => Json(json!({ "messages": rows })).into_response(),
        Ok(Err(e)) => {
            tracing::error!("API: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "message store error")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "task failed"),
    }
}

/// `POST /api/v1/messages` body.
#[derive(Debug, Deserialize)]
pub struct SendBody {
    from: String,
    to: String,
    text: String,
}

async fn send(State(state): State<WebState>, Json(b): Json<SendBody>) -> Response {
    let Some(h) = state.messages.as_ref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the message service is not running",
        );
    };
    if b.from.trim().is_empty() || b.to.trim().is_empty() || b.text.is_empty() {
        return error(StatusCode::BAD_REQUEST, "from, to and text are needed");
    }
    match h.send_sms(b.from.trim(), b.to.trim(), &b.text).await {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e),
    }
}

/// `GET /api/v1/ussd` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UssdQuery {
    origin: Option<String>,
    limit: Option<i64>,
}

async fn ussd_list(State(state): State<WebState>, Query(q): Query<UssdQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let path = state.db_path().to_path_buf();
    let origin = q.origin.filter(|o| !o.is_empty());
    let rows = tokio::task::spawn_blocking(move || {
        crate::sms::store::SmsStore::open(&path)?.ussd_events(origin.as_deref(), limit)
    })
    .await;
    match rows {
        Ok(Ok(rows)) => Json(json!({ "ussd": rows })).into_response(),
        Ok(Err(e)) => {
            tracing::error!("API: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "message store error")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "task failed"),
    }
}

/// `POST /api/v1/ussd` body.
#[derive(Debug, Deserialize)]
pub struct UssdBody {
    code: String,
    line: Option<String>,
}

async fn ussd(State(state): State<WebState>, Json(b): Json<UssdBody>) -> Response {
    let Some(h) = state.messages.as_ref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the message service is not running",
        );
    };
    match h.ussd(b.line.as_deref(), b.code.trim()).await {
        Ok(answer) => Json(json!({ "code": b.code.trim(), "answer": answer })).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, &e),
    }
}
