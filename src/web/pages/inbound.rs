//! The inbound routes and ring groups page `/inbound` (issue 17): which number rings where
//! (a DID or published number → an extension or a ring group) and the ring groups (members,
//! strategy), with forms to add, change and delete them. Those of the configuration file are
//! shown read-only ("from the configuration file"); the others live in the store
//! ([`crate::store::inbound`]). Changes are applied at once by the SIP side, through the same
//! path as a trunk change; calls in progress are not touched.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::lines::field_label;
use super::{csrf_ok, csrf_refused, PageError, WebState};
use crate::config::{RingGroupConfig, RingStrategy};
use crate::store::inbound::{self as store_inbound, GroupRow, RouteRow};
use crate::store::trunks::{FieldError, TrunkChangeError as ChangeError};
use crate::web::auth::Session;

/// The ring group form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct GroupForm {
    pub csrf: String,
    pub name: String,
    /// Extension numbers separated by commas or spaces, in ringing order.
    pub members: String,
    pub strategy: String,
    pub member_timeout: String,
}

/// The route form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RouteForm {
    pub csrf: String,
    pub number: String,
    pub destination: String,
}

/// The delete forms (a group's name or a route's number).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct KeyForm {
    pub csrf: String,
    pub key: String,
}

pub struct GroupView {
    pub name: String,
    pub members: String,
    pub strategy: String,
    pub from_file: bool,
}

pub struct RouteView {
    pub number: String,
    pub destination: String,
    pub from_file: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "inbound.html")]
struct InboundPage {
    session: Option<Session>,
    csrf: String,
    admin: bool,
    groups: Vec<GroupView>,
    routes: Vec<RouteView>,
    group: GroupForm,
    route: RouteForm,
    error: Option<String>,
}

fn label(field: &str) -> &'static str {
    match field {
        "members" => "Members",
        "strategy" => "Strategy",
        "member_timeout" => "Ring each member for",
        "number" => "Number",
        "destination" => "Rings",
        other => field_label(other),
    }
}

fn message(e: &ChangeError) -> String {
    match e {
        ChangeError::Field(f) => format!("{}: {}.", label(&f.field), f.message),
        other => format!("{other}."),
    }
}

async fn render(
    state: &WebState,
    session: Session,
    group: Option<GroupForm>,
    route: Option<RouteForm>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let read = state
        .with_read(|db| {
            Ok(store_inbound::groups(db).and_then(|g| Ok((g, store_inbound::routes(db)?))))
        })
        .await?;
    let (groups, routes): (Vec<GroupRow>, Vec<RouteRow>) = match read {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("inbound page: {e}");
            return Err(PageError::Task);
        }
    };
    let page = InboundPage {
        csrf: session.csrf.clone(),
        admin: session.admin,
        session: Some(session),
        groups: groups
            .into_iter()
            .map(|g| GroupView {
                from_file: g.source == crate::store::SOURCE_CONFIG,
                strategy: match g.group.strategy {
                    RingStrategy::All => "all at once".into(),
                    RingStrategy::Order => {
                        format!("in order, {} s each", g.group.member_timeout_secs)
                    }
                },
                members: g.group.members.join(", "),
                name: g.group.name,
            })
            .collect(),
        routes: routes
            .into_iter()
            .map(|r| RouteView {
                from_file: r.source == crate::store::SOURCE_CONFIG,
                number: r.number,
                destination: r.destination,
            })
            .collect(),
        group: group.unwrap_or_else(|| GroupForm {
            strategy: "all".into(),
            ..GroupForm::default()
        }),
        route: route.unwrap_or_default(),
        error,
    };
    Ok((status, page).into_response())
}

/// `GET /inbound`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    render(&state, session, None, None, None, StatusCode::OK).await
}

async fn done(
    state: &WebState,
    session: Session,
    result: Result<(), ChangeError>,
    what: &str,
    group: Option<GroupForm>,
    route: Option<RouteForm>,
) -> Result<Response, PageError> {
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, "{what}");
            state.trunks_changed.notify_one();
            Ok(Redirect::to("/inbound").into_response())
        }
        Err(ChangeError::Store(e)) => {
            tracing::error!("inbound change: {e}");
            Err(PageError::Task)
        }
        Err(e) => {
            render(
                state,
                session,
                group,
                route,
                Some(message(&e)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

impl GroupForm {
    /// The ring group the fields describe; a bad field names itself.
    pub(crate) fn group(&self) -> Result<RingGroupConfig, FieldError> {
        let member_timeout_secs = match self.member_timeout.trim() {
            "" => 15,
            t => t.parse().map_err(|_| FieldError {
                field: "member_timeout".into(),
                message: format!("`{t}` is not a whole number of seconds"),
            })?,
        };
        let strategy = match self.strategy.trim() {
            "" | "all" => RingStrategy::All,
            "order" => RingStrategy::Order,
            other => {
                return Err(FieldError {
                    field: "strategy".into(),
                    message: format!("`{other}` is not one of `all`, `order`"),
                })
            }
        };
        Ok(RingGroupConfig {
            name: self.name.trim().to_owned(),
            members: self
                .members
                .split([',', ' ', ';'])
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect(),
            strategy,
            member_timeout_secs,
        })
    }
}

/// `POST /inbound/group/save`: adds or changes a ring group.
pub async fn save_group(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<GroupForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let result = match form.group() {
        Err(e) => Err(ChangeError::Field(e)),
        Ok(g) => {
            state
                .with_db(move |db| Ok(store_inbound::save_group(&mut db.conn, g)))
                .await?
        }
    };
    let what = format!("ring group {} saved", form.name.trim());
    done(&state, session, result, &what, Some(form), None).await
}

/// `POST /inbound/group/delete`.
pub async fn delete_group(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<KeyForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let key = form.key.trim().to_owned();
    let k = key.clone();
    let result = state
        .with_db(move |db| Ok(store_inbound::delete_group(&db.conn, &k)))
        .await?;
    let what = format!("ring group {key} deleted");
    done(&state, session, result, &what, None, None).await
}

/// `POST /inbound/route/save`: adds or changes the route of a number.
pub async fn save_route(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<RouteForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let (n, d) = (
        form.number.trim().to_owned(),
        form.destination.trim().to_owned(),
    );
    let result = state
        .with_db(move |db| Ok(store_inbound::save_route(&db.conn, &n, &d)))
        .await?;
    let what = format!("inbound route {} saved", form.number.trim());
    done(&state, session, result, &what, None, Some(form)).await
}

/// `POST /inbound/route/delete`.
pub async fn delete_route(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<KeyForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let key = form.key.trim().to_owned();
    let k = key.clone();
    let result = state
        .with_db(move |db| Ok(store_inbound::delete_route(&db.conn, &k)))
        .await?;
    let what = format!("inbound route {key} deleted");
    done(&state, session, result, &what, None, None).await
}
