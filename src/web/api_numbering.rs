//! The numbering plan and ENUM settings in the JSON API (issue 17), behind the token check of
//! [`super::api`]: the Numbering page's read and change as JSON.
//!
//! - `GET /api/v1/numbering`: `{"settings": {"numbering": {…}, "enum": {…}}` (the keys set in
//!   the file or the dashboard, as the file writes them), `"from_file": ["numbering.country_code",
//!   …]` (read-only keys), `"effective": {…}` (every key as the gateway uses it, defaults
//!   included)}.
//! - `PUT /api/v1/numbering` with `{"numbering": {…}, "enum": {…}}`: replaces the keys set here
//!   (keys left out return to their default); needs a token with the `admin` scope and is
//!   applied at once, for the next call. A key of the configuration file with another value is
//!   refused (409); a refused value answers 422 with `field`.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::pages::WebState;
use crate::config::{EnumConfig, NumberingConfig};
use crate::store::numbering::{self as store_numbering, NumberingChangeError, Sections};

/// The routes (the caller adds the token check).
pub fn routes() -> Router<WebState> {
    Router::new().route("/api/v1/numbering", get(read).put(write))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Every key as the gateway uses it.
fn effective(n: &NumberingConfig, e: &EnumConfig) -> Value {
    let addrs = |l: &[std::net::SocketAddr]| l.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    json!({
        "numbering": {
            "country_code": n.country_code,
            "area_code": n.area_code,
            "national_prefix": n.national_prefix,
            "international_prefix": n.international_prefix,
            "extension_length": n.extension_length,
            "emergency": n.emergency,
            "short_numbers": n.short_numbers,
            "mobile_prefixes": n.mobile_prefixes,
            "premium_prefixes": n.premium_prefixes,
            "default_permissions": n.default_permissions.to_string(),
        },
        "enum": {
            "suffixes": e.suffixes,
            "nameservers": addrs(&e.nameservers),
            "tree_nameservers": e.tree_nameservers.iter()
                .map(|(t, l)| (t.clone(), Value::from(addrs(l))))
                .collect::<serde_json::Map<_, _>>(),
            "budget_ms": e.budget_ms,
            "max_chain": e.max_chain,
            "cache_entries": e.cache_entries,
        },
    })
}

async fn read(State(state): State<WebState>) -> Response {
    let rows = match state
        .with_db(|db| Ok(store_numbering::list(&db.conn)))
        .await
    {
        Ok(Ok(rows)) => rows,
        Ok(Err(e)) => {
            tracing::error!("API numbering: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "store error");
        }
        Err(e) => return e.into_response(),
    };
    let sections = store_numbering::sections(&rows);
    let from_file: Vec<String> = rows
        .iter()
        .filter(|r| r.from_file())
        .map(|r| format!("{}.{}", r.section, r.key))
        .collect();
    let effective = match store_numbering::check(&sections) {
        Ok((n, e)) => effective(&n, &e),
        Err(e) => json!({ "error": e.to_string() }),
    };
    Json(json!({
        "settings": sections,
        "from_file": from_file,
        "effective": effective,
    }))
    .into_response()
}

async fn write(State(state): State<WebState>, Json(body): Json<Value>) -> Response {
    let sections: Sections = match serde_json::from_value(body) {
        Ok(s) => s,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("expected {{\"numbering\": {{…}}, \"enum\": {{…}}}}: {e}"),
            )
        }
    };
    let result = state
        .with_db(move |db| Ok(store_numbering::save_web(&mut db.conn, &sections)))
        .await;
    match result {
        Err(e) => e.into_response(),
        Ok(Ok(())) => {
            state.numbering_changed.notify_one();
            tracing::info!("numbering and ENUM settings changed through the API");
            read(State(state)).await
        }
        Ok(Err(NumberingChangeError::Field(f))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": f.to_string(), "field": f.field })),
        )
            .into_response(),
        Ok(Err(e @ NumberingChangeError::FromFile(_))) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Ok(Err(NumberingChangeError::Store(e))) => {
            tracing::error!("API numbering: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
    }
}
