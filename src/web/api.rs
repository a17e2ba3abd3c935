//! The JSON API under `/api/v1`, for programs rather than people: call records (the records
//! page's filters as query parameters, with `limit` and `offset`), one record, and the live
//! state. Every request carries `Authorization: Bearer TOKEN` with a token made on the
//! dashboard's tokens page ([`super::api_tokens`]); there are no cookies, so no CSRF.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api_tokens;
use super::pages::records::RecordsQuery;
use super::pages::{PageError, WebState};
use crate::cdr::{CallRecord, Page};
use crate::live::LiveSnapshot;
use crate::store::records;

/// Records per response when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;

/// The API's routes, behind the token check.
pub fn router(state: WebState) -> Router<WebState> {
    Router::new()
        .route("/api/v1/records", get(records))
        .route("/api/v1/records/{id}", get(record))
        .route("/api/v1/live", get(live))
        .merge(super::api_messages::routes())
        .merge(super::api_trunks::routes())
        .merge(super::api_dundi::routes())
        .merge(super::api_inbound::routes())
        .merge(super::api_modems::routes())
        .merge(super::api_numbering::routes())
        .merge(super::api_fxo::routes())
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Lets requests with a valid token through; a `read` token only reads (`GET`, `HEAD`):
/// anything else is 403.
async fn require_token(State(state): State<WebState>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        });
    let Some(token) = token else {
        let mut res = error(
            StatusCode::UNAUTHORIZED,
            "an API token is needed: Authorization: Bearer TOKEN",
        );
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"pasarela\""),
        );
        return res;
    };
    // Read through the read pool; the writer only notes a use, at most once a minute.
    let found = state
        .with_read(move |db| Ok(api_tokens::find(db, &token)?))
        .await;
    if let Ok(Some(api_tokens::Found { note: Some(h), .. })) = &found {
        let h = h.clone();
        if let Err(e) = state
            .with_db(move |db| Ok(api_tokens::note_use(&db.conn, &h)?))
            .await
        {
            tracing::warn!("API token use not noted: {e}");
        }
    }
    match found.map(|f| f.map(|f| (f.name, f.scope))) {
        Ok(Some((name, scope))) => {
            let reads = matches!(
                *req.method(),
                axum::http::Method::GET | axum::http::Method::HEAD
            );
            if !reads && scope != api_tokens::Scope::Admin {
                tracing::warn!(token = %name, method = %req.method(), path = %req.uri().path(), "API change refused: the token may only read");
                return error(
                    StatusCode::FORBIDDEN,
                    "this token may only read (scope `read`); make a token with scope `admin` to change things",
                );
            }
            next.run(req).await
        }
        Ok(None) => {
            tracing::warn!("API request with an unknown or revoked token");
            error(StatusCode::UNAUTHORIZED, "unknown or revoked token")
        }
        Err(e) => e.into_response(),
    }
}

/// `/api/v1/records` parameters: the records page's filters plus `limit` and `offset`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ApiRecordsQuery {
    #[serde(flatten)]
    pub filter: RecordsQuery,
    pub limit: String,
    pub offset: String,
}

/// A record as JSON: times as ISO 8601 UTC and unix ms, amounts in minor units with their
/// currency.
pub fn record_json(r: &CallRecord) -> Value {
    let iso = crate::cdr::query::iso_utc;
    json!({
        "id": r.id,
        "call_ref": r.call_ref,
        "start": iso(r.start_ms),
        "start_ms": r.start_ms,
        "answer": r.answer_ms.map(iso),
        "end": iso(r.end_ms),
        "duration_s": r.duration_s,
        "billable_s": r.billable_s,
        "caller": r.caller,
        "caller_e164": r.caller_e164,
        "callee": r.callee,
        "callee_e164": r.callee_e164,
        "extension": r.extension,
        "direction": r.direction.as_str(),
        "category": r.category,
        "route_kind": r.route_kind.as_str(),
        "route_target": r.route_target,
        "route_source": r.route_source,
        "disposition": r.disposition.as_str(),
        "sip_status": r.sip_status,
        "q850_cause": r.q850_cause,
        "codec": r.codec,
        "media_srtp": {"caller": r.media_srtp[0], "callee": r.media_srtp[1]},
        "packets": r.packets,
        "packets_lost": r.packets_lost,
        "jitter_ms": r.jitter_ms,
        "cost_minor": r.cost_minor,
        "currency": r.currency,
        "rate_table": r.rate_table,
        "rate_prefix": r.rate_prefix,
        "reference_cost_minor": r.reference_cost_minor,
        "savings_minor": r.savings_minor,
        "explanation": r.explanation,
        "linked_id": r.linked_id,
        "transferred_by": r.transferred_by,
    })
}

pub(crate) async fn records(
    State(state): State<WebState>,
    Query(q): Query<ApiRecordsQuery>,
) -> Result<Response, PageError> {
    let (filter, sort, _, mut errors) = q.filter.parse(&state.office);
    let limit = match q.limit.trim() {
        "" => DEFAULT_LIMIT,
        v => match v.parse::<u32>() {
            Ok(n) if (1..=Page::MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(format!("limit must be 1 to {}", Page::MAX_LIMIT));
                DEFAULT_LIMIT
            }
        },
    };
    let offset = match q.offset.trim() {
        "" => 0,
        v => v.parse::<u64>().unwrap_or_else(|_| {
            errors.push("offset must be a whole number".into());
            0
        }),
    };
    if !errors.is_empty() {
        return Ok(error(StatusCode::BAD_REQUEST, &errors.join(" ")));
    }
    let (total, rows) = state
        .with_read(move |conn| {
            let total = records::count(conn, &filter)?;
            Ok((
                total,
                records::list(conn, &filter, sort, Page { offset, limit })?,
            ))
        })
        .await?;
    Ok(Json(json!({
        "total": total,
        "offset": offset,
        "limit": limit,
        "records": rows.iter().map(record_json).collect::<Vec<_>>(),
    }))
    .into_response())
}

pub(crate) async fn record(
    State(state): State<WebState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Ok(id) = id.parse::<i64>() else {
        return Ok(error(StatusCode::NOT_FOUND, "no such record"));
    };
    let found = state
        .with_read(move |conn| Ok(records::get(conn, id)?))
        .await?;
    Ok(match found {
        Some(r) => Json(record_json(&r)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such record"),
    })
}

/// The live state as JSON.
pub fn live_json(s: &LiveSnapshot) -> Value {
    json!({
        "taken_at": s.taken_at,
        "calls": s.calls.iter().map(|c| json!({
            "id": c.id,
            "caller": c.caller,
            "callee": c.callee,
            "state": c.state.as_str(),
            "age_s": c.age.as_secs(),
            "talking_s": c.talking.map(|t| t.as_secs()),
            "route": c.route,
            "target": c.target,
            "codec": c.codec,
            "rtp_foreign_dropped": c.rtp_foreign_dropped,
        })).collect::<Vec<_>>(),
        "registrations": s.registrations.iter().map(|r| json!({
            "extension": r.extension,
            "contact": r.contact,
            "source": r.source,
            "user_agent": r.user_agent,
            "expires_in_s": r.expires_in,
        })).collect::<Vec<_>>(),
        "lines": s.lines.iter().map(|l| json!({
            "name": l.name,
            "kind": l.kind,
            "state": l.state,
            "detail": l.detail,
        })).collect::<Vec<_>>(),
        "trunks": s.trunks.iter().map(|t| json!({
            "name": t.name,
            "registration": t.registration,
            "registered_s": t.registered_secs,
            "last_failure": t.last_failure,
            "reachable": t.reachable,
            "reachable_since_s": t.reach_secs,
            "rtt_ms": t.rtt_ms,
            "calls": t.calls,
        })).collect::<Vec<_>>(),
        "lamps": s.lamps.iter().map(|l| json!({
            "extension": l.extension,
            "name": l.name,
            "lamp": l.lamp,
            "watchers": l.watchers,
        })).collect::<Vec<_>>(),
    })
}

async fn live(State(state): State<WebState>) -> Response {
    let snap = match &state.live {
        Some(source) => source.snapshot().await,
        None => None,
    };
    let peers = super::pages::live::dundi_peers(&state).await;
    match snap {
        Some(s) => {
            let mut v = live_json(&s);
            if let Some(peers) = peers {
                let peers: Vec<serde_json::Value> = peers
                    .iter()
                    .map(|p| {
                        json!({
                            "eid": p.eid,
                            "address": p.address,
                            "encrypted": p.encrypted,
                            "status": p.status,
                        })
                    })
                    .collect();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("dundi_peers".into(), peers.into());
                }
            }
            Json(v).into_response()
        }
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the SIP service did not answer; try again",
        ),
    }
}
