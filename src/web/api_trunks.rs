//! The trunks part of the JSON API (issue 17), behind the token check of [`super::api`]: the
//! Lines page's reads and changes as JSON.
//!
//! - `GET /api/v1/trunks`, `GET /api/v1/trunks/{name}`: settings (never the password, only
//!   whether one is set), where the trunk comes from, its rate table and its live state.
//! - `POST /api/v1/trunks` (`{"name": …, "enabled": true, "uri": …, …}`, the `[[trunk]]` keys),
//!   `PUT /api/v1/trunks/{name}` (the same keys; an absent password keeps the stored one),
//!   `DELETE /api/v1/trunks/{name}`: need a token with the `admin` scope. Trunks of the
//!   configuration file cannot be changed here (409). A refused setting answers 422 with the
//!   key at fault in `field`. `rate_table` (a rate table's name, or null for none) may come
//!   with the keys; a PUT with `rate_table` alone sets only the rate table, for a trunk of the
//!   configuration file too.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::pages::lines::{live_trunks, reach_text, registration_text};
use super::pages::WebState;
use crate::live::TrunkLive;
use crate::store::trunks::{self as store_trunks, TrunkChangeError, TrunkRow, TrunkSettings};

/// The routes (the caller adds the token check).
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/trunks", get(list).post(create))
        .route(
            "/api/v1/trunks/{name}",
            get(one).put(replace).delete(remove),
        )
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn trunk_json(r: &TrunkRow, live: Option<&[TrunkLive]>) -> Value {
    let s = &r.settings;
    let t = live.and_then(|l| l.iter().find(|t| t.name == r.name));
    let live_state = live.map(|_| {
        json!({
            "registration": t.and_then(|t| t.registration),
            "registered_secs": t.and_then(|t| t.registered_secs),
            "last_failure": t.and_then(|t| t.last_failure),
            "reachable": t.and_then(|t| t.reachable),
            "rtt_ms": t.and_then(|t| t.rtt_ms),
            "calls": t.map_or(0, |t| t.calls),
            "summary": format!(
                "{}; {}",
                registration_text(t, s.register == Some(true)),
                reach_text(t, s.qualify.is_some_and(|q| q > 0))
            ),
        })
    });
    json!({
        "name": r.name,
        "source": r.source,
        "from_file": r.from_file(),
        "enabled": r.enabled,
        "uri": s.uri,
        "username": s.username,
        "password_set": s.password.is_some(),
        "number_format": s.number_format.as_deref().unwrap_or("e164"),
        "sources": s.sources,
        "register": s.register.unwrap_or(false),
        "register_expires": s.register_expires,
        "register_retry_secs": s.register_retry_secs,
        "qualify": s.qualify.unwrap_or(0),
        "outbound_proxy": s.outbound_proxy,
        "from_user": s.from_user,
        "from_domain": s.from_domain,
        "caller_id_header": s.caller_id_header.as_deref().unwrap_or("pai"),
        "contact_user": s.contact_user,
        "realm": s.realm,
        "updated_at": r.updated_at,
        "live": live_state,
    })
}

async fn rows(state: &WebState) -> Result<Vec<TrunkRow>, Response> {
    let read = state
        .with_db(|db| Ok(store_trunks::list(&db.conn)))
        .await
        .map_err(IntoResponse::into_response)?;
    read.map_err(|e| {
        tracing::error!("API trunks: {e}");
        error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
    })
}

/// Line name → its rate table (empty when it cannot be read: the trunks still answer).
async fn rate_tables(state: &WebState) -> std::collections::BTreeMap<String, String> {
    state
        .with_db(|db| Ok(crate::store::line_rates::tables_of_lines(&db.conn).unwrap_or_default()))
        .await
        .unwrap_or_default()
}

async fn list(State(state): State<WebState>) -> Response {
    let rows = match rows(&state).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let live = live_trunks(&state).await;
    let tables = rate_tables(&state).await;
    let trunks: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = trunk_json(r, live.as_deref());
            if let Some(o) = v.as_object_mut() {
                o.insert("rate_table".into(), json!(tables.get(&r.name)));
            }
            v
        })
        .collect();
    Json(json!({ "trunks": trunks, "live": live.is_some() })).into_response()
}

async fn one(State(state): State<WebState>, Path(name): Path<String>) -> Response {
    let rows = match rows(&state).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let Some(r) = rows.iter().find(|r| r.name == name) else {
        return error(StatusCode::NOT_FOUND, "no such trunk");
    };
    let live = live_trunks(&state).await;
    let mut v = trunk_json(r, live.as_deref());
    let table = rate_tables(&state).await.get(&r.name).cloned();
    if let Some(o) = v.as_object_mut() {
        o.insert("rate_table".into(), json!(table));
    }
    Json(v).into_response()
}

/// The body's name, enabled flag and settings; `Err` is the 422 to answer.
fn body(
    mut v: Map<String, Value>,
    default_enabled: bool,
) -> Result<(Option<String>, bool, TrunkSettings), Box<Response>> {
    let refuse = |field: &str, message: String| {
        Box::new(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "error": format!("{field}: {message}"), "field": field })),
            )
                .into_response(),
        )
    };
    let name = match v.remove("name") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(refuse("name", "must be a string".into())),
    };
    let enabled = match v.remove("enabled") {
        None => default_enabled,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(refuse("enabled", "must be true or false".into())),
    };
    let settings: TrunkSettings =
        serde_path_to_error::deserialize(Value::Object(v)).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." {
                "settings".to_owned()
            } else {
                field
            };
            refuse(&field, e.into_inner().to_string())
        })?;
    Ok((name, enabled, settings))
}

fn change_response(result: Result<(), TrunkChangeError>, ok: StatusCode) -> Response {
    match result {
        Ok(()) => ok.into_response(),
        Err(TrunkChangeError::Field(f)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": f.to_string(), "field": f.field })),
        )
            .into_response(),
        Err(e @ (TrunkChangeError::FromFile(_) | TrunkChangeError::Exists(_))) => {
            error(StatusCode::CONFLICT, &e.to_string())
        }
        Err(e @ TrunkChangeError::Unknown(_)) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(TrunkChangeError::Store(e)) => {
            tracing::error!("API trunks: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
    }
}

/// The body's `rate_table` (taken out): `None` absent, `Some("")` null (none of its own);
/// `Err` is the 422 to answer.
fn take_rate_table(v: &mut Map<String, Value>) -> Result<Option<String>, Box<Response>> {
    match v.remove("rate_table") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(String::new())),
        Some(Value::String(t)) => Ok(Some(t)),
        Some(_) => Err(Box::new(
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": "rate_table: must be a rate table's name or null",
                    "field": "rate_table"
                })),
            )
                .into_response(),
        )),
    }
}

async fn apply(
    state: &WebState,
    name: String,
    enabled: bool,
    (settings, rate_table): (TrunkSettings, Option<String>),
    new: bool,
) -> Response {
    let n = name.clone();
    let result = state
        .with_db(move |db| {
            let saved = store_trunks::save_web(&mut db.conn, &n, enabled, settings, new);
            Ok(saved.and_then(|()| match rate_table {
                Some(t) => crate::store::line_rates::set_table(&mut db.conn, &n, Some(&t)),
                None => Ok(()),
            }))
        })
        .await;
    let result = match result {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if result.is_ok() {
        tracing::info!(trunk = %name, new, "trunk saved through the API");
        state.trunks_changed.notify_one();
        state.rates_changed.notify_one();
    }
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    change_response(result, status)
}

async fn create(State(state): State<WebState>, Json(mut v): Json<Map<String, Value>>) -> Response {
    let rate_table = match take_rate_table(&mut v) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let (name, enabled, settings) = match body(v, true) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let Some(name) = name else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "name: is required", "field": "name" })),
        )
            .into_response();
    };
    apply(&state, name, enabled, (settings, rate_table), true).await
}

async fn replace(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Json(mut v): Json<Map<String, Value>>,
) -> Response {
    let rate_table = match take_rate_table(&mut v) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    if let (Some(table), true) = (&rate_table, v.is_empty()) {
        return set_rate_table_only(&state, name, table.clone()).await;
    }
    let (body_name, enabled, settings) = match body(v, true) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if body_name.is_some_and(|n| n != name) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": "name: a trunk cannot be renamed", "field": "name" })),
        )
            .into_response();
    }
    apply(&state, name, enabled, (settings, rate_table), false).await
}

/// `PUT` with `rate_table` alone: the trunk's rate table (a trunk of the file too).
async fn set_rate_table_only(state: &WebState, name: String, table: String) -> Response {
    let n = name.clone();
    let result = state
        .with_db(move |db| {
            let known = store_trunks::get(&db.conn, &n)
                .map_err(TrunkChangeError::from)
                .and_then(|r| r.ok_or_else(|| TrunkChangeError::Unknown(n.clone())));
            Ok(known
                .and_then(|_| crate::store::line_rates::set_table(&mut db.conn, &n, Some(&table))))
        })
        .await;
    match result {
        Ok(r) => {
            if r.is_ok() {
                tracing::info!(trunk = %name, "trunk rate table set through the API");
                state.rates_changed.notify_one();
            }
            change_response(r, StatusCode::OK)
        }
        Err(e) => e.into_response(),
    }
}

async fn remove(State(state): State<WebState>, Path(name): Path<String>) -> Response {
    let n = name.clone();
    let result = match state
        .with_db(move |db| Ok(store_trunks::delete_web(&db.conn, &n)))
        .await
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if result.is_ok() {
        tracing::info!(trunk = %name, "trunk deleted through the API");
        state.trunks_changed.notify_one();
    }
    change_response(result, StatusCode::NO_CONTENT)
}
