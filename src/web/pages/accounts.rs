//! The accounts page `/account` (own password, own sessions; for administrators also the
//! dashboard users and everyone's sessions) and the audit log page `/audit`. Roles are
//! enforced for every POST in the session gate ([`super::require_session`]); the handlers
//! here check again what only an administrator may do.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, PageError, WebState};
use crate::web::accounts::{self, AuditRow, Role, SessionRow, UserRow};
use crate::web::auth::{self, AuthError, Session};

#[derive(Template, WebTemplate)]
#[template(path = "account.html")]
struct AccountPage {
    session: Option<Session>,
    csrf: String,
    admin: bool,
    me: String,
    current: String,
    users: Vec<UserRow>,
    sessions: Vec<(SessionRow, String, String)>,
    error: Option<String>,
    notice: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit.html")]
struct AuditPage {
    session: Option<Session>,
    entries: Vec<(String, AuditRow)>,
}

/// The forms of this page (each uses the fields it needs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AccountForm {
    pub csrf: String,
    pub current: String,
    pub password: String,
    pub password2: String,
    pub username: String,
    pub role: String,
    pub id: String,
}

async fn render(
    state: &WebState,
    session: Session,
    error: Option<String>,
    notice: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let admin = session.admin;
    let me = session.user_id;
    let (users, sessions) = state
        .with_read(move |conn| {
            let users = if admin {
                accounts::users(conn)?
            } else {
                Vec::new()
            };
            let sessions = accounts::sessions(conn, (!admin).then_some(me))?;
            Ok((users, sessions))
        })
        .await?;
    let office = std::sync::Arc::clone(&state.office);
    let show = |unix: i64| office.show(unix.saturating_mul(1000));
    let page = AccountPage {
        csrf: session.csrf.clone(),
        admin,
        me: session.username.clone(),
        current: session.id.clone(),
        users,
        sessions: sessions
            .into_iter()
            .map(|s| {
                let (c, e) = (show(s.created_at), show(s.expires_at));
                (s, c, e)
            })
            .collect(),
        error,
        notice,
        session: Some(session),
    };
    Ok((status, page).into_response())
}

/// `GET /account`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    render(&state, session, None, None, StatusCode::OK).await
}

fn refused(msg: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("403 Forbidden: {msg}\n")).into_response()
}

/// `POST /account/password`: changes the own password (the current one is asked again);
/// the user's other sessions end.
pub async fn change_password(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<AccountForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    if form.password != form.password2 {
        let e = Some("The two new passwords differ.".into());
        return render(&state, session, e, None, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let name = session.username.clone();
    let current = form.current.clone();
    let user = state
        .with_read(move |conn| Ok(auth::user_hash(conn, &name)?))
        .await?;
    let right = tokio::task::spawn_blocking(move || auth::check_password(user, &current))
        .await
        .map_err(|_| PageError::Task)?;
    if right != Some(session.user_id) {
        let e = Some("The current password is wrong.".into());
        return render(&state, session, e, None, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let (name, password, keep) = (
        session.username.clone(),
        form.password.clone(),
        session.id.clone(),
    );
    let result = state
        .with_db(move |db| {
            Ok(accounts::set_password(
                &db.conn,
                &name,
                &password,
                Some(&keep),
            ))
        })
        .await?;
    match result {
        Ok(_) => {
            tracing::info!(user = %session.username, "dashboard password changed");
            let n = Some("Password changed; your other sessions were ended.".into());
            render(&state, session, None, n, StatusCode::OK).await
        }
        Err(AuthError::Invalid(msg)) => {
            render(
                &state,
                session,
                Some(msg),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /account/sessions/revoke`: ends a session (own ones; administrators: any).
pub async fn revoke_session(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<AccountForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let owner = (!session.admin).then_some(session.user_id);
    let id = form.id.clone();
    let ended = state
        .with_db(move |db| Ok(accounts::revoke_session(&db.conn, &id, owner)?))
        .await?;
    if !ended {
        let e = Some("No such session of yours.".into());
        return render(&state, session, e, None, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    if form.id == session.id {
        return Ok(Redirect::to("/login").into_response());
    }
    Ok(Redirect::to("/account").into_response())
}

/// `POST /users/add` (administrators).
pub async fn add_user(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<AccountForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    if !session.admin {
        return Ok(refused("only administrators add users."));
    }
    let Some(role) = Role::parse(&form.role) else {
        let e = Some("Role: choose admin or viewer.".into());
        return render(&state, session, e, None, StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    if form.password != form.password2 {
        let e = Some("The two passwords differ.".into());
        return render(&state, session, e, None, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let (name, password) = (form.username.trim().to_owned(), form.password.clone());
    let result = state
        .with_db(move |db| Ok(accounts::add_user(&db.conn, &name, &password, role)))
        .await?;
    match result {
        Ok(_) => {
            tracing::info!(user = %session.username, added = %form.username, role = role.as_str(), "dashboard user added");
            Ok(Redirect::to("/account").into_response())
        }
        Err(AuthError::Invalid(msg)) => {
            render(
                &state,
                session,
                Some(msg),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /users/remove` (administrators; not oneself, not the last administrator).
pub async fn remove_user(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<AccountForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    if !session.admin {
        return Ok(refused("only administrators remove users."));
    }
    let Ok(id) = form.id.trim().parse::<i64>() else {
        let e = Some("No such user.".into());
        return render(&state, session, e, None, StatusCode::UNPROCESSABLE_ENTITY).await;
    };
    let me = session.user_id;
    let result = state
        .with_db(move |db| Ok(accounts::remove_user(&mut db.conn, id, me)))
        .await?;
    match result {
        Ok(name) => {
            tracing::info!(user = %session.username, removed = %name, "dashboard user removed");
            Ok(Redirect::to("/account").into_response())
        }
        Err(AuthError::Invalid(msg)) => {
            render(
                &state,
                session,
                Some(msg),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /audit`: the newest 500 dashboard changes.
pub async fn audit(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    let rows = state
        .with_read(|conn| Ok(accounts::audit_entries(conn, 500)?))
        .await?;
    let office = std::sync::Arc::clone(&state.office);
    let page = AuditPage {
        session: Some(session),
        entries: rows
            .into_iter()
            .map(|r| (office.show(r.at.saturating_mul(1000)), r))
            .collect(),
    };
    Ok(page.into_response())
}
