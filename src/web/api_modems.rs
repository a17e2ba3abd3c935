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

use super::api_lines::{self, error};
use super::pages::lines::pstn_live;
use super::pages::WebState;
use crate::store::line_rows::LineTable;
use crate::store::modem_lines::{self as store_modems, ModemSettings};
use crate::store::trunks::TrunkChangeError as ChangeError;

/// For the log.
const WHAT: &str = "modems";

/// The routes (the caller adds the token check).
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/modems", get(list))
        .route("/api/v1/modems/{name}", get(one).put(save).delete(delete))
}

/// Every line as JSON.
async fn all(state: &WebState) -> Result<Vec<Value>, Response> {
    let live = pstn_live(state).await;
    let read = state
        .with_read(|db| {
            Ok(store_modems::list(db)
                .and_then(|rows| Ok((rows, crate::store::line_rates::tables_of_lines(db)?))))
        })
        .await;
    let (rows, tables) = match read {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!("API {WHAT}: {e}");
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
    Json(v): Json<Map<String, Value>>,
) -> Response {
    let (enabled, rate_table, settings): (bool, _, ModemSettings) = match api_lines::body(v) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    api_lines::save(&state, WHAT, name, rate_table, move |conn, name, file| {
        let exists = store_modems::get(conn, name)
            .map_err(ChangeError::Store)?
            .is_some();
        store_modems::save_web(conn, name, enabled, settings, !exists, file)
    })
    .await
}

async fn delete(State(state): State<WebState>, Path(name): Path<String>) -> Response {
    api_lines::delete(&state, WHAT, LineTable::Modem, name).await
}
