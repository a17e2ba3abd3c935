//! The DUNDi part of the JSON API (issue 17), behind the token check of [`super::api`]: the
//! DUNDi page's reads and changes as JSON.
//!
//! - `GET /api/v1/dundi`: our EID, address and public key, every peer (those of the file with
//!   `from_file`) with its key fingerprint and qualify status, the cache.
//! - `GET /api/v1/dundi/lookup?number=4930123456[&context=e164]`: a real lookup.
//! - `POST /api/v1/dundi/peers` (`{"eid": …, "address": …, "model", "order", "include",
//!   "permit", "key" (PEM), "qualify", "enabled"}`), `PUT /api/v1/dundi/peers/{eid}` (an absent
//!   key keeps the stored one; `"drop_key": true` forgets it), `DELETE
//!   /api/v1/dundi/peers/{eid}`: need a token with the `admin` scope; applied at once. Peers of
//!   the configuration file cannot be changed here (409); a refused field answers 422 with
//!   `field`.
//! - `GET /api/v1/dundi/node`: whether DUNDi runs and every node setting (`in_use`, `stored`,
//!   `from_file`); `PUT /api/v1/dundi/node` (`{"enabled": true, "listen": "0.0.0.0:4520",
//!   "eid", "context", "ttl", "cache_secs", "key_ttl_secs", "ipaddr", contact fields}`; `""` or `null`
//!   clears a setting): admin scope, applied at once (on, off, rebind); a key the file sets
//!   answers 409.
//! - `GET /api/v1/dundi/mappings` (the file's with `from_file`), `POST /api/v1/dundi/mappings`
//!   (`{"context", "destination", "tech", "weight", "options", "numbers", "enabled"}`), `PUT` and
//!   `DELETE /api/v1/dundi/mappings/{id}`: admin scope, used from the next query of a peer.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::pages::dundi::{apply, file_eids, key_text, ours, reach_text};
use super::pages::WebState;
use crate::routing::dundi::Eid;
use crate::store::dundi::{self as store_dundi, PeerInput};
use crate::store::trunks::TrunkChangeError as ChangeError;

/// The routes (the caller adds the token check).
pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/api/v1/dundi", get(overview))
        .route("/api/v1/dundi/lookup", get(lookup))
        .route("/api/v1/dundi/peers", axum::routing::post(create))
        .route("/api/v1/dundi/peers/{eid}", put(replace).delete(remove))
        .route("/api/v1/dundi/node", get(node_read).put(node_write))
        .route(
            "/api/v1/dundi/mappings",
            get(mappings_read).post(mapping_create),
        )
        .route(
            "/api/v1/dundi/mappings/{id}",
            put(mapping_replace).delete(mapping_remove),
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

async fn overview(State(state): State<WebState>) -> Response {
    let rows = match state.with_read(|db| Ok(store_dundi::list(db))).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!("API DUNDi: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "store error");
        }
        Err(e) => return e.into_response(),
    };
    let file = file_eids(&state);
    let (running, cache) = match &state.dundi {
        Some(d) => (
            tokio::time::timeout(Duration::from_secs(1), d.handle.peers())
                .await
                .ok(),
            tokio::time::timeout(Duration::from_secs(1), d.handle.cache())
                .await
                .unwrap_or_default(),
        ),
        None => (None, Vec::new()),
    };
    let status = |eid: Eid, qualifies: bool| {
        running
            .as_ref()
            .map(|list| match list.iter().find(|p| p.eid == eid) {
                Some(p) => reach_text(p.reachability, qualifies),
                None => "not in use".to_owned(),
            })
    };
    let mut peers = Vec::new();
    if let Some(d) = &state.dundi {
        for p in &d.file_settings().peers {
            let pem = p
                .inkey
                .as_ref()
                .and_then(|k| std::fs::read_to_string(k).ok());
            peers.push(json!({
                "eid": p.eid.to_string(), "address": p.address.to_string(),
                "from_file": true, "enabled": true, "key": key_text(pem.as_deref()),
                "include": p.include, "permit": p.permit, "order": p.order,
                "status": status(p.eid, p.qualify.is_some()),
            }));
        }
    }
    for r in rows.iter().filter(|r| !file.contains(&r.eid)) {
        peers.push(json!({
            "eid": r.eid.to_string(), "address": r.address, "model": r.model_name(),
            "from_file": false, "enabled": r.enabled, "key": key_text(r.key.as_deref()),
            "include": r.include, "permit": r.permit, "order": r.order,
            "qualify": r.qualify_secs,
            "status": if r.enabled { status(r.eid, r.qualify_secs > 0) } else { Some("disabled".to_owned()) },
        }));
    }
    let now = Instant::now();
    let cache: Vec<Value> = cache
        .iter()
        .map(|e| {
            json!({
                "number": e.number, "context": e.context,
                "answers": e.answers.iter().map(|a| a.destination.clone()).collect::<Vec<_>>(),
                "expires_in": e.expires.saturating_duration_since(now).as_secs(),
            })
        })
        .collect();
    let us = ours(&state).map(|o| {
        json!({
            "eid": o.eid, "listen": o.listen, "public_key": o.public_pem,
            "md5": o.md5, "sha256": o.sha256,
        })
    });
    Json(json!({ "running": state.dundi.as_ref().is_some_and(|d| d.handle.is_running()), "us": us, "peers": peers, "cache": cache }))
        .into_response()
}

/// The lookup's query.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct LookupQuery {
    number: String,
    context: String,
}

async fn lookup(State(state): State<WebState>, Query(q): Query<LookupQuery>) -> Response {
    let number = q.number.trim();
    if number.is_empty() || number.len() > 64 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return refuse("number", "digits only (E.164 without +), at most 64");
    }
    let Some(d) = &state.dundi else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "DUNDi does not run");
    };
    let context = match q.context.trim() {
        "" => d.context(),
        c if c.len() <= 64 => c.to_owned(),
        _ => return refuse("context", "at most 64 characters"),
    };
    match d
        .handle
        .lookup_full(number, &context, Duration::from_secs(3), false)
        .await
    {
        Some(r) => Json(json!({
            "number": r.number, "context": r.context, "from_cache": r.from_cache,
            "asked": r.asked,
            "answers": r.answers.iter().map(|a| json!({
                "destination": a.destination, "tech": a.tech(), "weight": a.weight,
                "eid": a.eid.to_string(), "via": a.via.to_string(), "exists": a.exists(),
                "expiration": a.expiration,
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        None => error(StatusCode::SERVICE_UNAVAILABLE, "DUNDi did not answer"),
    }
}

/// The body as the form's fields (numbers and lists taken as text); enabled and drop_key.
fn body(v: Map<String, Value>) -> Result<(PeerInput, bool, bool), Box<Response>> {
    let mut text = Map::new();
    let (mut enabled, mut drop_key) = (true, false);
    for (k, v) in v {
        match (k.as_str(), v) {
            ("enabled", Value::Bool(b)) => enabled = b,
            ("drop_key", Value::Bool(b)) => drop_key = b,
            ("enabled" | "drop_key", _) => {
                return Err(Box::new(refuse(&k, "must be true or false")))
            }
            (_, Value::String(s)) => {
                text.insert(k, Value::String(s));
            }
            (_, Value::Number(n)) => {
                text.insert(k, Value::String(n.to_string()));
            }
            (_, Value::Array(list)) => {
                let parts: Vec<String> = list
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect();
                text.insert(k, Value::String(parts.join(",")));
            }
            (_, Value::Null) => {}
            _ => return Err(Box::new(refuse(&k, "must be a string"))),
        }
    }
    let input: PeerInput = serde_path_to_error::deserialize(Value::Object(text))
        .map_err(|e| Box::new(refuse(&e.path().to_string(), &e.into_inner().to_string())))?;
    Ok((input, enabled, drop_key))
}

async fn save(
    state: &WebState,
    input: PeerInput,
    enabled: bool,
    drop_key: bool,
    new: bool,
) -> Response {
    let row = match input.check(enabled) {
        Ok(r) => r,
        Err(f) => return refuse(&f.field, &f.message),
    };
    let eid = row.eid;
    let file = file_eids(state);
    let us = state.dundi.as_ref().map(|d| d.handle.eid());
    let result = state
        .with_db(move |db| Ok(store_dundi::save(&db.conn, row, new, drop_key, &file, us)))
        .await;
    let ok = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    finish(state, result, ok, &eid.to_string()).await
}

async fn finish(
    state: &WebState,
    result: Result<Result<(), ChangeError>, super::pages::PageError>,
    ok: StatusCode,
    eid: &str,
) -> Response {
    match result {
        Err(e) => e.into_response(),
        Ok(Err(ChangeError::Field(f))) => refuse(&f.field, &f.message),
        Ok(Err(e @ (ChangeError::FromFile(_) | ChangeError::Exists(_)))) => {
            error(StatusCode::CONFLICT, &e.to_string())
        }
        Ok(Err(e @ ChangeError::Unknown(_))) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Ok(Err(ChangeError::Store(e))) => {
            tracing::error!("API DUNDi: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
        Ok(Ok(())) => {
            tracing::info!(peer = %eid, "DUNDi peer changed through the API");
            match apply(state).await {
                Ok(()) => ok.into_response(),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("saved, but DUNDi did not take the peers: {e}"),
                ),
            }
        }
    }
}

async fn create(State(state): State<WebState>, Json(v): Json<Map<String, Value>>) -> Response {
    match body(v) {
        Ok((input, enabled, drop_key)) => save(&state, input, enabled, drop_key, true).await,
        Err(r) => *r,
    }
}

async fn replace(
    State(state): State<WebState>,
    Path(eid): Path<String>,
    Json(v): Json<Map<String, Value>>,
) -> Response {
    let (mut input, enabled, drop_key) = match body(v) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    if !input.eid.trim().is_empty() && input.eid.trim().parse::<Eid>().ok() != eid.parse().ok() {
        return refuse("eid", "a peer's EID cannot be changed");
    }
    input.eid = eid;
    save(&state, input, enabled, drop_key, false).await
}

async fn remove(State(state): State<WebState>, Path(eid): Path<String>) -> Response {
    let Ok(e) = eid.trim().parse::<Eid>() else {
        return error(StatusCode::NOT_FOUND, "no such peer");
    };
    let file = file_eids(&state);
    if file.contains(&e) {
        return error(
            StatusCode::CONFLICT,
            &ChangeError::FromFile(e.to_string()).to_string(),
        );
    }
    let result = state
        .with_db(move |db| Ok(store_dundi::delete(&db.conn, e)))
        .await;
    finish(&state, result, StatusCode::NO_CONTENT, &eid).await
}

/// A JSON value as the text a form field would hold (`None`: not a scalar).
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        Value::Array(list) => Some(
            list.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(_) => None,
    }
}

async fn node_read(State(state): State<WebState>) -> Response {
    let Some(d) = &state.dundi else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no DUNDi node in this process",
        );
    };
    let stored = match state
        .with_read(|db| Ok(crate::store::dundi_node::node(db)))
        .await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!("API DUNDi: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "store error");
        }
        Err(e) => return e.into_response(),
    };
    let settings: Map<String, Value> = super::pages::dundi::setting_views_of(d, &stored)
        .into_iter()
        .map(|s| {
            (
                s.key.to_owned(),
                json!({ "in_use": s.in_use, "stored": s.stored, "from_file": s.from_file }),
            )
        })
        .collect();
    Json(json!({ "running": d.handle.is_running(), "settings": settings })).into_response()
}

async fn node_write(State(state): State<WebState>, Json(v): Json<Map<String, Value>>) -> Response {
    let mut input = crate::store::dundi_node::NodeValues::new();
    for (k, v) in &v {
        match as_text(v) {
            Some(t) => {
                input.insert(k.clone(), t);
            }
            None => return refuse(k, "must be a string, number or boolean"),
        }
    }
    let file_keys = state
        .dundi
        .as_ref()
        .map(|d| d.file_config().file_keys.clone())
        .unwrap_or_default();
    if let Some(k) = input.keys().find(|k| file_keys.contains(k)) {
        return error(
            StatusCode::CONFLICT,
            &format!("`{k}` is set in the configuration file's [dundi] section; change it there"),
        );
    }
    let checked = match crate::store::dundi_node::check_node(&input, &file_keys) {
        Ok(c) => c,
        Err(f) => return refuse(&f.field, &f.message),
    };
    let saved = state
        .with_db(move |db| Ok(crate::store::dundi_node::save_node(&db.conn, &checked)))
        .await;
    match saved {
        Err(e) => e.into_response(),
        Ok(Err(e)) => {
            tracing::error!("API DUNDi: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
        Ok(Ok(())) => {
            tracing::info!("DUNDi node settings changed through the API");
            applied_response(&state, StatusCode::OK).await
        }
    }
}

async fn applied_response(state: &WebState, ok: StatusCode) -> Response {
    match apply(state).await {
        Ok(()) => ok.into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("saved, but DUNDi could not apply it: {e}"),
        ),
    }
}

async fn mappings_read(State(state): State<WebState>) -> Response {
    let rows = match state
        .with_read(|db| Ok(crate::store::dundi_node::mappings(db)))
        .await
    {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::error!("API DUNDi: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "store error");
        }
        Err(e) => return e.into_response(),
    };
    let mut out: Vec<Value> = state.dundi.as_ref().map_or_else(Vec::new, |d| {
        d.file_settings()
            .mappings
            .iter()
            .map(|m| {
                json!({
                    "context": m.context, "destination": m.destination,
                    "tech": crate::store::dundi_node::tech_name(m.tech), "weight": m.weight,
                    "enabled": true, "from_file": true,
                })
            })
            .collect()
    });
    out.extend(rows.iter().map(|m| {
        json!({
            "id": m.id, "context": m.context, "destination": m.destination,
            "tech": crate::store::dundi_node::tech_name(m.tech), "weight": m.weight,
            "options": m.options, "numbers": m.numbers, "enabled": m.enabled, "from_file": false,
        })
    }));
    Json(json!({ "mappings": out })).into_response()
}

async fn mapping_save(state: &WebState, v: Map<String, Value>, id: i64) -> Response {
    let mut text = Map::new();
    let mut enabled = true;
    for (k, v) in v {
        match (k.as_str(), &v) {
            ("enabled", Value::Bool(b)) => enabled = *b,
            ("enabled", _) => return refuse("enabled", "must be true or false"),
            ("id", _) => {}
            _ => match as_text(&v) {
                Some(t) => {
                    text.insert(k, Value::String(t));
                }
                None => return refuse(&k, "must be a string"),
            },
        }
    }
    let input: crate::store::dundi_node::MappingInput =
        match serde_path_to_error::deserialize(Value::Object(text)) {
            Ok(i) => i,
            Err(e) => return refuse(&e.path().to_string(), &e.into_inner().to_string()),
        };
    let mut row = match input.check(enabled) {
        Ok(r) => r,
        Err(f) => return refuse(&f.field, &f.message),
    };
    row.id = id;
    let result = state
        .with_db(move |db| Ok(crate::store::dundi_node::save_mapping(&db.conn, &row)))
        .await;
    match result {
        Err(e) => e.into_response(),
        Ok(Err(ChangeError::Field(f))) => refuse(&f.field, &f.message),
        Ok(Err(e @ ChangeError::Unknown(_))) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Ok(Err(e)) => {
            tracing::error!("API DUNDi: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
        Ok(Ok(id)) => {
            tracing::info!(mapping = id, "DUNDi mapping changed through the API");
            match apply(state).await {
                Ok(()) => (StatusCode::OK, Json(json!({ "id": id }))).into_response(),
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("saved, but DUNDi could not apply it: {e}"),
                ),
            }
        }
    }
}

async fn mapping_create(
    State(state): State<WebState>,
    Json(v): Json<Map<String, Value>>,
) -> Response {
    let r = mapping_save(&state, v, 0).await;
    if r.status() == StatusCode::OK {
        let (mut parts, body) = r.into_parts();
        parts.status = StatusCode::CREATED;
        return Response::from_parts(parts, body);
    }
    r
}

async fn mapping_replace(
    State(state): State<WebState>,
    Path(id): Path<String>,
    Json(v): Json<Map<String, Value>>,
) -> Response {
    match id.trim().parse::<i64>() {
        Ok(n) if n > 0 => mapping_save(&state, v, n).await,
        _ => error(StatusCode::NOT_FOUND, "no such mapping"),
    }
}

async fn mapping_remove(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    let Ok(n) = id.trim().parse::<i64>() else {
        return error(StatusCode::NOT_FOUND, "no such mapping");
    };
    let result = state
        .with_db(move |db| Ok(crate::store::dundi_node::delete_mapping(&db.conn, n)))
        .await;
    match result {
        Err(e) => e.into_response(),
        Ok(Err(e @ ChangeError::Unknown(_))) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Ok(Err(e)) => {
            tracing::error!("API DUNDi: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "store error")
        }
        Ok(Ok(())) => applied_response(&state, StatusCode::NO_CONTENT).await,
    }
}
