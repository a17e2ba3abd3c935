//! The inbound routes and ring groups part of the JSON API (issue 17), behind the token check
//! of [`super::api`]: the Inbound page's reads and changes as JSON.
//!
//! - `GET /api/v1/inbound`: every ring group and route, those of the configuration file with
//!   `from_file`.
//! - `PUT /api/v1/inbound/routes/{number}` (`{"destination": "100"}`: an extension or a ring
//!   group), `DELETE /api/v1/inbound/routes/{number}`, `PUT /api/v1/inbound/groups/{name}`
//!   (`{"members": ["100", "101"], "strategy": "all"|"order", "member_timeout": 15}`),
//!   `DELETE /api/v1/inbound/groups/{name}`: need a token with the `admin` scope and are
//!   applied at once. Entries of the configuration file cannot be changed here (409); a refused
//!   field answers 422 with `field`.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::pages::inbound::GroupForm;
use super::pages::{PageError, WebState};
use crate::config::RingStrategy;
use crate::store::inbound as store_inbound;
use crate::store::trunks::TrunkChangeError as ChangeError;
use crate::store::SOURCE_CONFIG;

/// The routes (the caller adds the token check).
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/inbound", get(list))
        .route(
            "/api/v1/inbound/routes/{number}",
            put(save_route).delete(delete_route),
        )
        .route(
            "/api/v1/inbound/groups/{name}",
            put(save_group).delete(delete_group),
        )
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
            ok.into_response()
        }
        Ok(Err(ChangeError::Field(f))) => refuse(&f.field, &f.message),
        Ok(Err(e @ (ChangeError::FromFile(_) | ChangeError::Exists(_)))) => {
            error(StatusCode::CONFLICT, &e.to_string())
        }
        Ok(Err(e @ ChangeError::Unknown(_))) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Ok(Err(ChangeError::Store(e))) => {
            tracing::error!("API inbound: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
    }
}

async fn list(State(state): State<WebState>) -> Response {
    let read = state
        .with_read(|db| {
            Ok(store_inbound::groups(db).and_then(|g| Ok((g, store_inbound::routes(db)?))))
        })
        .await;
    let (groups, routes) = match read {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!("API inbound: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "store error");
        }
        Err(e) => return e.into_response(),
    };
    let groups: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "name": g.group.name,
                "members": g.group.members,
                "strategy": match g.group.strategy { RingStrategy::All => "all", RingStrategy::Order => "order" },
                "member_timeout": g.group.member_timeout_secs,
                "from_file": g.source == SOURCE_CONFIG,
            })
        })
        .collect();
    let routes: Vec<Value> = routes
        .iter()
        .map(|r| {
            json!({
                "number": r.number,
                "destination": r.destination,
                "from_file": r.source == SOURCE_CONFIG,
            })
        })
        .collect();
    Json(json!({ "groups": groups, "routes": routes })).into_response()
}

async fn save_route(
    State(state): State<WebState>,
    Path(number): Path<String>,
    Json(v): Json<Map<String, Value>>,
) -> Response {
    let destination = match v.get("destination") {
        Some(Value::String(d)) => d.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return refuse("destination", "is required (an extension or a ring group)"),
    };
    let number = number.trim().to_owned();
    let result = state
        .with_db(move |db| Ok(store_inbound::save_route(&db.conn, &number, &destination)))
        .await;
    answer(&state, result, StatusCode::OK)
}

async fn delete_route(State(state): State<WebState>, Path(number): Path<String>) -> Response {
    let result = state
        .with_db(move |db| Ok(store_inbound::delete_route(&db.conn, number.trim())))
        .await;
    answer(&state, result, StatusCode::NO_CONTENT)
}

async fn save_group(
    State(state): State<WebState>,
    Path(name): Path<String>,
    Json(v): Json<Map<String, Value>>,
) -> Response {
    let text = |key: &str| -> Result<String, Box<Response>> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Array(list)) => Ok(list
                .iter()
                .map(|m| match m {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")),
            Some(_) => Err(Box::new(refuse(
                key,
                "must be a string, a number or a list",
            ))),
        }
    };
    let form = match (text("members"), text("strategy"), text("member_timeout")) {
        (Ok(members), Ok(strategy), Ok(member_timeout)) => GroupForm {
            name,
            members,
            strategy,
            member_timeout,
            ..GroupForm::default()
        },
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return *r,
    };
    let group = match form.group() {
        Ok(g) => g,
        Err(f) => return refuse(&f.field, &f.message),
    };
    let result = state
        .with_db(move |db| Ok(store_inbound::save_group(&mut db.conn, group)))
        .await;
    answer(&state, result, StatusCode::OK)
}

async fn delete_group(State(state): State<WebState>, Path(name): Path<String>) -> Response {
    let result = state
        .with_db(move |db| Ok(store_inbound::delete_group(&db.conn, name.trim())))
        .await;
    answer(&state, result, StatusCode::NO_CONTENT)
}
