//! What the modem-line and FXO-line parts of the JSON API ([`super::api_modems`],
//! [`super::api_fxo`]) share: the answer to a change (204/200, 409 for a file line or a taken
//! name, 404, 422 naming the field), reading a `PUT` body (`enabled`, `rate_table` and the
//! line kind's settings, a wrong key named by its path, e.g. `limits.concurrent_calls`), saving
//! it with its rate table, and deleting a line.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use super::pages::{PageError, WebState};
use crate::store::trunks::TrunkChangeError as ChangeError;

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

pub(crate) fn refuse(field: &str, message: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "error": format!("{field}: {message}"), "field": field })),
    )
        .into_response()
}

/// The answer to a change of a line of kind `what` (`"modems"`, `"FXO lines"`, for the log);
/// a change that took tells the SIP side.
pub(crate) fn answer(
    state: &WebState,
    what: &str,
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
            tracing::error!("API {what}: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
    }
}

/// A `PUT` body: whether the line is enabled (default true), its rate table (`Some("")`: none),
/// and its settings; a key that is not what it should be names itself.
pub(crate) fn body<T: DeserializeOwned>(
    mut v: Map<String, Value>,
) -> Result<(bool, Option<String>, T), Box<Response>> {
    let enabled = match v.remove("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(Box::new(refuse("enabled", "must be true or false"))),
    };
    let rate_table = match v.remove("rate_table") {
        None => None,
        Some(Value::Null) => Some(String::new()),
        Some(Value::String(t)) => Some(t),
        Some(_) => {
            return Err(Box::new(refuse(
                "rate_table",
                "must be a rate table's name or null",
            )))
        }
    };
    match serde_path_to_error::deserialize(Value::Object(v)) {
        Ok(s) => Ok((enabled, rate_table, s)),
        Err(e) => {
            let path = e.path().to_string();
            let field = if path.is_empty() || path == "." {
                "settings".to_owned()
            } else {
                path
            };
            Err(Box::new(refuse(&field, &e.into_inner().to_string())))
        }
    }
}

/// Saves a line with `save` (given the store and the names of the file's lines) and then its
/// rate table, answering as [`answer`] does.
pub(crate) async fn save(
    state: &WebState,
    what: &'static str,
    name: String,
    rate_table: Option<String>,
    save: impl FnOnce(&mut rusqlite::Connection, &str, &[String]) -> Result<(), ChangeError>
        + Send
        + 'static,
) -> Response {
    let running: Vec<String> = super::pages::lines::pstn_live(state)
        .await
        .into_iter()
        .map(|l| l.name)
        .collect();
    let name = name.trim().to_owned();
    let result = state
        .with_db(move |db| {
            // A running line that is not the dashboard's is the file's.
            let file = super::pages::fxo_lines::file_lines(&db.conn, running);
            let saved = save(&mut db.conn, &name, &file);
            Ok(saved.and_then(|()| match rate_table {
                Some(t) => crate::store::line_rates::set_table(&mut db.conn, &name, Some(&t)),
                None => Ok(()),
            }))
        })
        .await;
    answer(state, what, result, StatusCode::OK)
}

/// Deletes the dashboard line `name` of `table`.
pub(crate) async fn delete(
    state: &WebState,
    what: &str,
    table: crate::store::line_rows::LineTable,
    name: String,
) -> Response {
    let result = state
        .with_db(move |db| {
            Ok(crate::store::line_rows::delete(
                &db.conn,
                table,
                name.trim(),
            ))
        })
        .await;
    answer(state, what, result, StatusCode::NO_CONTENT)
}
