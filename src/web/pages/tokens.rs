//! The API tokens page `/tokens`: create a token for a program that reads the JSON API
//! (shown once), see when each was last used, revoke one.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, PageError, WebState};
use crate::web::api_tokens::{self, TokenInfo};
use crate::web::auth::{AuthError, Session};

/// A token as listed.
pub struct TokenView {
    pub id: i64,
    pub name: String,
    /// `read` or `admin`.
    pub scope: &'static str,
    pub created: String,
    pub last_used: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "tokens.html")]
struct TokensPage {
    session: Option<Session>,
    tokens: Vec<TokenView>,
    /// A token just created, shown this once.
    created: Option<(String, String)>,
    error: Option<String>,
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TokenForm {
    csrf: String,
    name: String,
    id: String,
    /// `read` (the default) or `admin`.
    scope: String,
}

async fn render(
    state: &WebState,
    session: Session,
    created: Option<(String, String)>,
    error: Option<String>,
    name: String,
) -> Result<Response, PageError> {
    let list: Vec<TokenInfo> = state.with_read(|conn| Ok(api_tokens::list(conn)?)).await?;
    let office = &state.office;
    let tokens = list
        .into_iter()
        .map(|t| TokenView {
            id: t.id,
            name: t.name,
            scope: t.scope.as_str(),
            created: office.show(t.created_at.saturating_mul(1000)),
            last_used: t.last_used_at.map_or_else(
                || "never".to_owned(),
                |u| office.show(u.saturating_mul(1000)),
            ),
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        TokensPage {
            session: Some(session),
            tokens,
            created,
            error,
            name,
        },
    )
        .into_response())
}

/// `GET /tokens`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    render(&state, session, None, None, String::new()).await
}

/// `POST /tokens/create`.
pub async fn create(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<TokenForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let name = form.name.clone();
    // Least privilege unless the admin asks for more.
    let scope = api_tokens::Scope::parse(&form.scope).unwrap_or(api_tokens::Scope::Read);
    let made = state
        .with_db(
            move |db| match api_tokens::create_scoped(&db.conn, &name, scope) {
                Ok(t) => Ok(Ok(t)),
                Err(AuthError::Invalid(m)) => Ok(Err(m)),
                Err(e) => Err(e.into()),
            },
        )
        .await?;
    match made {
        Ok(token) => {
            tracing::info!(user = %session.username, name = %form.name.trim(), "API token created");
            let created = Some((form.name.trim().to_owned(), token));
            render(&state, session, created, None, String::new()).await
        }
        Err(msg) => render(&state, session, None, Some(msg), form.name).await,
    }
}

/// `POST /tokens/revoke`.
pub async fn revoke(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<TokenForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let Ok(id) = form.id.trim().parse::<i64>() else {
        return Ok((StatusCode::BAD_REQUEST, "no such token\n").into_response());
    };
    state
        .with_db(move |db| Ok(api_tokens::revoke(&db.conn, id)?))
        .await?;
    tracing::info!(user = %session.username, id, "API token revoked");
    Ok(Redirect::to("/tokens").into_response())
}
