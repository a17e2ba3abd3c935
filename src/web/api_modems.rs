//! The modem lines part of the JSON API (issue 17), behind the token check of [`super::api`]:
//! the Lines page's modem reads and changes as JSON.
//!
//! - `GET /api/v1/modems`: every PSTN line of the running gateway (modems and FXO ports of the
//!   configuration file with `from_file`) and the dashboard's modem lines, each with its live
//!   `state` and `detail` and its `rate_table`.
//! - `PUT /api/v1/modems/{name}` (`{"imei": "…", "incoming": ["101"], "gain_to_modem_db": 0,
//!   "enabled": true, "rate_table": "gsm-rates", …}`, the `[[modem]]` keys): adds or replaces a
//!   modem line of the dashboard; `DELETE /api/v1/modems/{name}`. Both need a token with the
//!   `admin` scope and are applied at once; lines of the configuration file answer 409, a
//!   refused field 422 with `field`.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::pages::lines::pstn_live;
use super::pages::{PageError, WebState};
use crate::store::modem_lines::{self as store_modems, ModemSettings};
use crate::store::trunks::TrunkChangeError as ChangeError;

/// The routes (the caller adds the token check).
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/modems", get(list))
        .route("/api/v1/modems/{name}", get(one).put(save).delete(delete))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn refuse(field: &str, message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "error": format!("{field}: {message}"), "field": field })),
    )
        .into_response()
}

fn answer(
    state: &WebState,
    result: Result<Result<(), ChangeError>, PageError>,
    ok: StatusCode,
) -> Response {
    match result {
        Err(e) => e.into_response(),
        Ok(Ok(())) => {
            state.trunks_changed.notify_one();
            // A line's rate table may have changed with it.
            state.rates_changed.notify_one();
            ok.into_response()
        }
        Ok(Err(ChangeError::Field(f))) => refuse(&f.field, &f.message),
        Ok(Err(e @ (ChangeError::FromFile(_) | ChangeError::Exists(_)))) => {
            error(StatusCode::CONFLICT, &e.to_string())
        }
        Ok(Err(e @ ChangeError::Unknown(_))) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Ok(Err(ChangeError::Store(e))) => {
            tracing::error!("API modems: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
    }
}

/// Every line as JSON.
async fn all(state: &WebState) -> Result<Vec<Value>, Response> {
    let live = pstn_live(state).await;
    let read = state
        .with_db(|db| {
            Ok(store_modems::list(&db.conn)
                .and_then(|rows| Ok((rows, crate::store::line_rates::tables_of_lines(&db.conn)?))))
        })
        .await;
    let (rows, tables) = match read {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!("API modems: {e}");
            return Err(error(StatusCode::INTERNAL_SERVER_ERROR, "store error"));
        }
        Err(e) => return Err(e.into_response()),
    };
    let mut out: Vec<Value> = live
        .iter()
        .map(|l| {
            let row = rows.iter().find(|r| r.name == l.name);
            let mut v = json!({
                "name": l.name,
                "kind": l.kind,
                "state": l.state,
                "detail": l.detail,
                "from_file": row.is_none(),
                "enabled": true,
                "rate_table": tables.get(&l.name),
            });
            if let (Some(r), Some(o)) = (row, v.as_object_mut()) {
                o.insert("settings".into(), json!(r.settings));
            }
            v
        })
        .collect();
    for r in rows
        .iter()
        .filter(|r| !live.iter().any(|l| l.name == r.name))
    {
        out.push(json!({
            "name": r.name,
            "kind": "GSM modem",
            "state": if r.enabled { "starting" } else { "disabled" },
            "detail": "",
            "from_file": false,
            "enabled": r.enabled,
            "rate_table": tables.get(&r.name),
            "settings": r.settings,
        }));
    }
    Ok(out)
}

async fn list(State(state): State<WebState>) -> Response {
    match all(&state).await {
        Ok(lines) => Json(json!({ "modems": lines })).into_response(),
        Err(r) => r,
    }
}

async fn one(State(state): State<WebState>, Path(name): Path<String>) -> Response {
    match all(&state).await {
        Ok(lines) => match lines.into_iter().find(|l| l["name"] == name.as_str()) {
            Some(l) => Json(l).into_response(),
            None => error(StatusCode::NOT_FOUND, &format!("`{name}` does not exist")),
        },
        Err(r) => r,
    }
}

async fn save(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Json(mut v): Json<Map<String, Value>>,
) -> Response {
    let enabled = match v.remove("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return refuse("enabled", "must be true or false"),
    };
    let rate_table = match v.remove("rate_table") {
        None => None,
        Some(Value::Null) => Some(String::new()),
        Some(Value::String(t)) => Some(t),
        Some(_) => return refuse("rate_table", "must be a rate table's name or null"),
    };
    let settings: ModemSettings = match serde_json::from_value(Value::Object(v)) {
        Ok(s) => s,
        Err(e) => return refuse("settings", &e.to_string()),
    };
    let running: Vec<String> = pstn_live(&state)
        .await
        .into_iter()
        .map(|l| l.name)
        .collect();
    let name = name.trim().to_owned();
    let result = state
        .with_db(move |db| {
            let ours = match store_modems::list(&db.conn) {
                Ok(rows) => rows.into_iter().map(|r| r.name).collect::<Vec<_>>(),
                Err(e) => return Ok(Err(ChangeError::Store(e))),
            };
            let exists = ours.contains(&name);
            // A running line that is not the dashboard's is the file's.
            let file: Vec<String> = running.into_iter().filter(|l| !ours.contains(l)).collect();
            let saved =
                store_modems::save_web(&mut db.conn, &name, enabled, settings, !exists, &file);
            Ok(saved.and_then(|()| match rate_table {
                Some(t) => crate::store::line_rates::set_table(&mut db.conn, &name, Some(&t)),
                None => Ok(()),
            }))
        })
        .await;
    answer(&state, result, StatusCode::OK)
}

async fn delete(State(state): State<WebState>, Path(name): Path<String>) -> Response {
    let result = state
        .with_db(move |db| Ok(store_modems::delete(&db.conn, name.trim())))
        .await;
    answer(&state, result, StatusCode::NO_CONTENT)
}
