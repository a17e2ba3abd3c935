//! The admin dashboard's pages: the routes, the session gate in front of them, the login,
//! first-run setup and logout pages, and the helpers the page modules share (database access
//! on blocking threads, CSRF checks, dates, query strings). Each page lives in its own module:
//! [`records`] (list, detail, CSV export), [`overview`], [`rates`] and [`extensions`].
//!
//! Templates are askama files under `web/templates` (compiled into the binary, HTML-escaped by
//! default); the stylesheet `web/style.css` is embedded with `include_str!`.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

pub mod accounts;
pub mod backup;
pub mod billing;
pub mod checklist;
pub mod dundi;
pub mod extensions;
pub mod forwarding;
pub mod fxo_lines;
pub mod inbound;
pub mod line_kind;
pub mod line_limits;
pub mod lines;
pub mod live;
pub mod messages;
pub mod modem_lines;
pub mod numbering;
pub mod overview;
pub mod phone_setup;
pub mod pickup;
pub mod rates;
pub mod records;
pub mod routing;
pub mod security;
pub mod tokens;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;

use super::auth::{self, AuthError, LoginLimiter, Session, CSRF_COOKIE, SESSION_COOKIE};
use crate::cdr::CdrError;
use crate::web::office_time::OfficeTime;

/// Read-only connections of the dashboard ([`WebState::with_read`]).
const READERS: usize = 3;

/// What the dashboard's handlers share: the database and the login limiter.
#[derive(Debug, Clone)]
pub struct WebState {
    /// The dashboard's one writing connection, for writes only (reads go through `read`).
    db: Arc<Mutex<crate::store::Writer>>,
    /// Read-only connections the pages read through (see [`WebState::with_read`]).
    read: crate::store::ReadPool,
    db_path: PathBuf,
    limiter: Arc<LoginLimiter>,
    /// Woken when an extension changed here, so that the SIP side reloads them.
    pub(crate) extensions_changed: Arc<tokio::sync::Notify>,
    /// Woken when a trunk changed here or in the API, so that the SIP side applies them.
    pub(crate) trunks_changed: Arc<tokio::sync::Notify>,
    /// Notified when the numbering plan or ENUM settings changed (the SIP side applies them).
    pub(crate) numbering_changed: Arc<tokio::sync::Notify>,
    /// Notified when a rate table, a rate or a line's rate table changed.
    pub(crate) rates_changed: Arc<tokio::sync::Notify>,
    /// The router of the running gateway, for the route explainer page.
    pub(crate) router: Option<Arc<crate::routing::router::Router>>,
    /// The SIP loop, for the live page and the live API.
    pub(crate) live: Option<crate::live::LiveSource>,
    /// The ENUM resolver, for its cache on the routing page.
    pub(crate) enum_: Option<crate::routing::enum_lookup::EnumResolver>,
    /// The DUNDi node, for its peers on the live page.
    pub(crate) dundi: Option<crate::routing::dundi::OfficeDundi>,
    /// The office's time zone, for dates shown, filtered and grouped.
    pub(crate) office: Arc<OfficeTime>,
    /// The configuration and key files a backup download keeps besides the store.
    pub(crate) backup_files: Arc<Vec<(String, PathBuf)>>,
    /// The digest realm (`[sip] domain`) extension passwords are hashed for.
    pub(crate) realm: Arc<str>,
    /// The failed-authentication guard of the SIP side, for the security page.
    pub(crate) guard: Option<crate::security::guard::SharedGuard>,
    /// Host names the dashboard answers to (DNS-rebinding defence); see [`super::host`].
    pub(crate) hosts: Arc<super::host::AllowedHosts>,
    /// The SIP listen sockets (transport, address), for the phone setup panel.
    pub(crate) sip_listen: Arc<Vec<(String, SocketAddr)>>,
    /// PSTN lines the configuration declares, for the first-run checklist.
    pub(crate) lines: usize,
    /// The message service, for sending SMS and USSD.
    pub(crate) messages: Option<crate::sms::service::Handle>,
    /// The feature codes phones can dial (code, what it does), for the phone setup page.
    pub(crate) feature_codes: Arc<Vec<(String, String)>>,
}

impl WebState {
    /// Opens (and migrates) the database at `db_path`. Blocking.
    pub fn open(db_path: &Path) -> Result<WebState, CdrError> {
        Ok(WebState {
            db: Arc::new(Mutex::new(crate::store::Writer::open(
                db_path,
                crate::store::connection::Durability::Process,
            )?)),
            read: crate::store::ReadPool::open(db_path, READERS)?,
            db_path: db_path.to_path_buf(),
            limiter: Arc::new(LoginLimiter::default()),
            extensions_changed: Arc::new(tokio::sync::Notify::new()),
            trunks_changed: Arc::new(tokio::sync::Notify::new()),
            numbering_changed: Arc::new(tokio::sync::Notify::new()),
            rates_changed: Arc::new(tokio::sync::Notify::new()),
            router: None,
            live: None,
            enum_: None,
            dundi: None,
            office: Arc::new(OfficeTime::utc()),
            backup_files: Arc::new(Vec::new()),
            realm: Arc::from(crate::config::SipConfig::default().domain.as_str()),
            guard: None,
            hosts: Arc::new(super::host::AllowedHosts::default()),
            sip_listen: Arc::new(Vec::new()),
            lines: 0,
            messages: None,
            feature_codes: Arc::new(crate::routing::pickup::feature_codes(&Default::default())),
        })
    }

    /// The database file.
    pub(crate) fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Runs `f` on one of the read-only connections, on a blocking thread: for pages and API
    /// calls that only read, so they neither wait behind the writing connection's lock nor
    /// can write.
    pub(crate) async fn with_read<T, F>(&self, f: F) -> Result<T, PageError>
    where
        T: Send + 'static,
        F: FnOnce(&crate::store::Connection) -> Result<T, PageError> + Send + 'static,
    {
        let pool = self.read.clone();
        tokio::task::spawn_blocking(move || f(&pool.get()))
            .await
            .map_err(|_| PageError::Task)?
    }

    /// Runs `f` on the shared writing connection on a blocking thread: for writes (and the
    /// reads a write depends on); pages that only read use [`WebState::with_read`].
    pub(crate) async fn with_db<T, F>(&self, f: F) -> Result<T, PageError>
    where
        T: Send + 'static,
        F: FnOnce(&mut crate::store::Writer) -> Result<T, PageError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let mut guard = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|_| PageError::Task)?
    }
}

/// Why a page could not be served (the user sees a plain 500; the log has the cause).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Cdr(#[from] CdrError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("a background task failed")]
    Task,
}

impl From<rusqlite::Error> for PageError {
    fn from(e: rusqlite::Error) -> PageError {
        PageError::Store(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        tracing::error!("dashboard: {self}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log\n",
        )
            .into_response()
    }
}

/// The dashboard's routes. Everything but `/login`, `/setup` and `/static/*` needs a session.
pub fn router(state: WebState) -> Router {
    let protected = Router::new()
        .route("/", get(overview::page))
        .route("/records", get(records::list))
        .route("/records.csv", get(records::csv))
        .route("/records/{id}", get(records::detail))
        .route("/records/filters/save", post(records::save_filter))
        .route("/records/filters/delete", post(records::delete_filter))
        .route("/live", get(live::page))
        .route("/billing", get(billing::page))
        .route("/billing.csv", get(billing::csv))
        .route("/billing/rerate", post(billing::rerate))
        .route("/tokens", get(tokens::page))
        .route("/tokens/create", post(tokens::create))
        .route("/tokens/revoke", post(tokens::revoke))
        .route("/rates", get(rates::page))
        .route("/rates/rate", post(rates::save_rate))
        .route("/rates/table", post(rates::create_table))
        .route("/rates/table/delete", post(rates::delete_table))
        .route("/rates/export", get(rates::export))
        .route("/rates/import", post(rates::import))
        .route("/routing", get(routing::page))
        .route("/routing/flush-cache", post(routing::flush_cache))
        .route("/numbering", get(numbering::page))
        .route("/numbering/save", post(numbering::save))
        .route("/numbering/flush-cache", post(numbering::flush_cache))
        .route("/extensions", get(extensions::page))
        .route("/extensions/save", post(extensions::save))
        .route("/extensions/toggle", post(extensions::toggle))
        .route("/backup", get(backup::download))
        .route("/security", get(security::page))
        .route("/security/lift", post(security::lift))
        .route("/security/unlock", post(security::unlock))
        .route("/account", get(accounts::page))
        .route("/account/password", post(accounts::change_password))
        .route("/account/sessions/revoke", post(accounts::revoke_session))
        .route("/users/add", post(accounts::add_user))
        .route("/users/remove", post(accounts::remove_user))
        .route("/audit", get(accounts::audit))
        .route("/extensions/delete", post(extensions::delete))
        .route("/extensions/phone", get(extensions::phone))
        .route(
            "/extensions/forwarding",
            get(forwarding::page).post(forwarding::save),
        )
        .route("/extensions/pickup", get(pickup::page).post(pickup::save))
        .route("/live/hangup", post(live::hang_up))
        .route("/lines", get(lines::page))
        .route("/lines/save", post(lines::save))
        .route("/lines/toggle", post(lines::toggle))
        .route("/lines/delete", post(lines::delete))
        .route("/lines/rate-table", post(lines::set_rate_table))
        .route("/lines/modem/save", post(modem_lines::save))
        .route("/lines/modem/toggle", post(modem_lines::toggle))
        .route("/lines/modem/delete", post(modem_lines::delete))
        .route("/lines/fxo/save", post(fxo_lines::save))
        .route("/lines/fxo/toggle", post(fxo_lines::toggle))
        .route("/lines/fxo/delete", post(fxo_lines::delete))
        .route("/dundi", get(dundi::page))
        .route("/dundi/key.pub", get(dundi::public_key))
        .route("/dundi/peer/save", post(dundi::save))
        .route("/dundi/peer/toggle", post(dundi::toggle))
        .route("/dundi/peer/delete", post(dundi::delete))
        .route("/dundi/flush-cache", post(dundi::flush_cache))
        .route("/dundi/node", post(dundi::node_save))
        .route("/dundi/mapping/save", post(dundi::mapping_save))
        .route("/dundi/mapping/delete", post(dundi::mapping_delete))
        .route("/inbound", get(inbound::page))
        .route("/inbound/group/save", post(inbound::save_group))
        .route("/inbound/group/delete", post(inbound::delete_group))
        .route("/inbound/route/save", post(inbound::save_route))
        .route("/inbound/route/delete", post(inbound::delete_route))
        .route("/messages", get(messages::page))
        .route("/messages.csv", get(messages::csv))
        .route("/messages/send", post(messages::send))
        .route("/messages/delete", post(messages::delete))
        .route("/messages/ussd", post(messages::ussd))
        .route("/logout", post(logout))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .merge(protected)
        .merge(crate::web::api::router(state.clone()))
        .route("/login", get(login_form).post(login))
        .route("/setup", get(setup_form).post(setup))
        .route("/static/style.css", get(style))
        .route("/static/sms.js", get(messages::script))
        .route("/static/dundi.js", get(dundi::script))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../../web/style.css"),
    )
}

/// Lets requests with a live session through (with the [`Session`] as an extension); sends
/// the others to the login page.
async fn require_session(State(state): State<WebState>, mut req: Request, next: Next) -> Response {
    let Some(token) = auth::cookie(req.headers(), SESSION_COOKIE) else {
        return Redirect::to("/login").into_response();
    };
    let found = state
        .with_read(move |conn| Ok(auth::session(conn, &token)?))
        .await;
    match found {
        Ok(Some(session)) => {
            if req.method() != axum::http::Method::POST {
                req.extensions_mut().insert(session);
                return next.run(req).await;
            }
            let path = req.uri().path().to_owned();
            if !session.admin && !VIEWER_POSTS.contains(&path.as_str()) {
                tracing::warn!(user = %session.username, %path, "dashboard: a viewer's change refused");
                let _ = audit_post(&state, &session.username, &path, "refused: viewer", 403).await;
                return (
                    StatusCode::FORBIDDEN,
                    "403 Forbidden: your account may only view; ask an administrator.\n",
                )
                    .into_response();
            }
            // Every change is audited: who, what (the form's fields without secrets), outcome.
            let (req, detail) = form_of(req).await;
            let username = session.username.clone();
            let mut req = req;
            req.extensions_mut().insert(session);
            let res = next.run(req).await;
            let _ = audit_post(&state, &username, &path, &detail, res.status().as_u16()).await;
            res
        }
        Ok(None) => Redirect::to("/login").into_response(),
        Err(e) => e.into_response(),
    }
}

/// The POSTs a `viewer` may make: its own password and sessions, saved filters, logging out.
const VIEWER_POSTS: &[&str] = &[
    "/logout",
    "/account/password",
    "/account/sessions/revoke",
    "/records/filters/save",
    "/records/filters/delete",
];

/// The largest form whose fields the audit log reads (bigger ones, file uploads, are
/// recorded without their fields).
const AUDIT_FORM_MAX: usize = 64 * 1024;

/// The request again (its body read, when it is a small URL-encoded form) and the form's
/// fields for the audit log.
async fn form_of(req: Request) -> (Request, String) {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let small = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= AUDIT_FORM_MAX);
    if !is_form || !small {
        return (req, "(upload)".into());
    }
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, AUDIT_FORM_MAX).await {
        Ok(bytes) => {
            let detail = crate::web::accounts::form_detail(&bytes);
            (
                Request::from_parts(parts, axum::body::Body::from(bytes)),
                detail,
            )
        }
        Err(_) => (
            Request::from_parts(parts, axum::body::Body::empty()),
            "(unreadable form)".into(),
        ),
    }
}

async fn audit_post(
    state: &WebState,
    username: &str,
    path: &str,
    detail: &str,
    status: u16,
) -> Result<(), PageError> {
    let (u, p, d) = (username.to_owned(), path.to_owned(), detail.to_owned());
    state
        .with_db(move |db| Ok(crate::web::accounts::audit(&db.conn, &u, &p, &d, status)?))
        .await
}

/// The 403 of a form without its CSRF token.
pub(crate) fn csrf_refused() -> Response {
    tracing::warn!("dashboard: form refused, missing or wrong CSRF token");
    (
        StatusCode::FORBIDDEN,
        "403 Forbidden: the form's security token is missing or stale; reload the page.\n",
    )
        .into_response()
}

/// Whether a form of `session` carries its CSRF token.
pub(crate) fn csrf_ok(session: &Session, form_token: &str) -> bool {
    auth::tokens_equal(&session.csrf, form_token)
}

/// The pre-session CSRF token of the request (from its cookie) or a new one, with the
/// `Set-Cookie` value to send when it is new.
fn presession_token(headers: &HeaderMap) -> (String, Option<String>) {
    match auth::cookie(headers, CSRF_COOKIE).filter(|t| t.len() == 64) {
        Some(t) => (t, None),
        None => {
            let t = auth::random_token();
            let cookie = auth::set_cookie(CSRF_COOKIE, &t, Duration::from_secs(3600));
            (t, Some(cookie))
        }
    }
}

fn presession_ok(headers: &HeaderMap, form_token: &str) -> bool {
    auth::cookie(headers, CSRF_COOKIE).is_some_and(|c| auth::tokens_equal(&c, form_token))
}

fn with_cookie(res: impl IntoResponse, cookie: Option<String>) -> Response {
    let mut res = res.into_response();
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

fn session_response(token: &str) -> Response {
    let mut res = Redirect::to("/").into_response();
    let cookies = [
        auth::set_cookie(SESSION_COOKIE, token, auth::SESSION_TTL),
        auth::set_cookie(CSRF_COOKIE, "", Duration::ZERO),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
struct LoginPage {
    session: Option<Session>,
    csrf: String,
    username: String,
    error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "setup.html")]
struct SetupPage {
    session: Option<Session>,
    csrf: String,
    username: String,
    error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AccountForm {
    username: String,
    password: String,
    password2: String,
    csrf: String,
}

async fn login_form(State(state): State<WebState>, headers: HeaderMap) -> Response {
    match state.with_read(|conn| Ok(auth::has_users(conn)?)).await {
        Ok(false) => return Redirect::to("/setup").into_response(),
        Ok(true) => {}
        Err(e) => return e.into_response(),
    }
    let (csrf, cookie) = presession_token(&headers);
    with_cookie(
        LoginPage {
            session: None,
            csrf,
            username: String::new(),
            error: None,
        },
        cookie,
    )
}

async fn login(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<AccountForm>,
) -> Response {
    if !presession_ok(&headers, &form.csrf) {
        return csrf_refused();
    }
    let ip = peer.ip();
    let page = |status: StatusCode, error: &str, username: String| {
        (
            status,
            LoginPage {
                session: None,
                csrf: form.csrf.clone(),
                username,
                error: Some(error.to_owned()),
            },
        )
            .into_response()
    };
    // A browser that logged in as this user before — its device cookie, or a session cookie
    // still alive — is not held back by other people's failed guesses.
    let device = auth::cookie(&headers, auth::DEVICE_COOKIE);
    let earlier_session = auth::cookie(&headers, SESSION_COOKIE);
    let lookup_name = form.username.clone();
    let found = state
        .with_db(move |db| {
            let user = auth::user_hash(&db.conn, &lookup_name)?;
            let mut known = Vec::new();
            if let Some(t) = &device {
                known.extend(auth::device_user(&db.conn, t)?);
            }
            if let Some(t) = &earlier_session {
                known.extend(auth::session(&db.conn, t)?.map(|s| s.user_id));
            }
            Ok((user, known))
        })
        .await;
    let (user, known) = match found {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let known_device = user.as_ref().is_some_and(|(id, _)| known.contains(id));
    if let Err(hold) = state
        .limiter
        .check(ip, &form.username, known_device, Instant::now())
    {
        let (why, wait) = match hold {
            auth::Holdback::Source(d) => ("from your address", d),
            auth::Holdback::User(d) => ("for this user", d),
        };
        tracing::warn!(%ip, user = %form.username, ?hold, "dashboard: login held back after failed attempts");
        let mut r = page(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many failed attempts {why}; try again in {} seconds.",
                wait.as_secs().max(1)
            ),
            form.username.clone(),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    let password = form.password.clone();
    let result: Result<Option<(String, String)>, PageError> = async {
        // The slow hash check runs without holding the shared connection.
        let checked = tokio::task::spawn_blocking(move || auth::check_password(user, &password))
            .await
            .map_err(|_| PageError::Task)?;
        match checked {
            Some(id) => Ok(Some(
                state
                    .with_db(move |db| {
                        Ok((
                            auth::create_session(&db.conn, id, &ip.to_string())?,
                            auth::remember_device(&db.conn, id)?,
                        ))
                    })
                    .await?,
            )),
            None => Ok(None),
        }
    }
    .await;
    match result {
        Ok(Some((token, device))) => {
            tracing::info!(user = %form.username, %ip, "dashboard login");
            state.limiter.succeeded(&form.username);
            let mut res = session_response(&token);
            let cookie = auth::set_cookie(auth::DEVICE_COOKIE, &device, auth::DEVICE_TTL);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            res
        }
        Ok(None) => {
            state.limiter.failed(ip, &form.username, Instant::now());
            tracing::warn!(user = %form.username, %ip, "dashboard: failed login");
            page(
                StatusCode::UNAUTHORIZED,
                "Wrong username or password.",
                form.username.clone(),
            )
        }
        Err(e) => e.into_response(),
    }
}

async fn setup_form(State(state): State<WebState>, headers: HeaderMap) -> Response {
    match state.with_read(|conn| Ok(auth::has_users(conn)?)).await {
        Ok(true) => return Redirect::to("/login").into_response(),
        Ok(false) => {}
        Err(e) => return e.into_response(),
    }
    let (csrf, cookie) = presession_token(&headers);
    with_cookie(
        SetupPage {
            session: None,
            csrf,
            username: "admin".into(),
            error: None,
        },
        cookie,
    )
}

async fn setup(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<AccountForm>,
) -> Response {
    if !presession_ok(&headers, &form.csrf) {
        return csrf_refused();
    }
    let page = |error: String| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            SetupPage {
                session: None,
                csrf: form.csrf.clone(),
                username: form.username.clone(),
                error: Some(error),
            },
        )
            .into_response()
    };
    if form.password != form.password2 {
        return page("The two passwords differ.".into());
    }
    let (username, password) = (form.username.clone(), form.password.clone());
    let result = state
        .with_db(move |db| {
            let id = match auth::create_first_user(&mut db.conn, &username, &password) {
                Ok(id) => id,
                Err(e) => return Ok(Err(e)),
            };
            crate::web::accounts::audit(
                &db.conn,
                &username,
                "/setup",
                "administrator created",
                303,
            )?;
            Ok(Ok((
                auth::create_session(&db.conn, id, &peer.ip().to_string())?,
                auth::remember_device(&db.conn, id)?,
            )))
        })
        .await;
    match result {
        Ok(Ok((token, device))) => {
            let mut res = session_response(&token);
            let cookie = auth::set_cookie(auth::DEVICE_COOKIE, &device, auth::DEVICE_TTL);
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().append(header::SET_COOKIE, v);
            }
            res
        }
        Ok(Err(AuthError::Invalid(msg))) => page(msg),
        Ok(Err(AuthError::AlreadySetUp)) => (
            StatusCode::FORBIDDEN,
            "403 Forbidden: the administrator account already exists.\n",
        )
            .into_response(),
        Ok(Err(e)) => PageError::from(e).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    if let Some(token) = auth::cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = state
            .with_db(move |db| Ok(auth::end_session(&db.conn, &token)?))
            .await
        {
            return e.into_response();
        }
    }
    tracing::info!(user = %session.username, "dashboard logout");
    with_cookie(
        Redirect::to("/login"),
        Some(auth::set_cookie(SESSION_COOKIE, "", Duration::ZERO)),
    )
}

/// Percent-encodes a query-string value.
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(url_encode("a b&c=<d>"), "a%20b%26c%3D%3Cd%3E");
        assert_eq!(url_encode("ü"), "%C3%BC");
    }

    /// The pages and API calls that only read — the records list and a record, billing and
    /// its CSV, the rates and their export, the overview, `/api/v1/records*` — go through the
    /// read-only pool: they are served while another thread holds the writing connection, and
    /// a write through that pool fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_go_through_the_read_only_pool() {
        use axum::extract::{Path as UrlPath, Query};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.db");
        let state = WebState::open(&path).unwrap();
        {
            let mut db = crate::cdr::CdrDb::open(&path).unwrap();
            db.create_rate_table("carrier", "EUR", true).unwrap();
            let mut r = [crate::cdr::record::tests::sample(1_770_000_000_000)];
            db.insert(&mut r).unwrap();
        }
        let write = state
            .with_read(|conn| Ok(conn.execute_batch("DELETE FROM call_records")?))
            .await;
        let err = write.expect_err("a read-only connection wrote").to_string();
        assert!(
            err.contains("readonly") || err.contains("read-only"),
            "{err}"
        );

        // Another thread holds the writing connection until the reads are done.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (taken, is_taken) = std::sync::mpsc::channel::<()>();
        let db = Arc::clone(&state.db);
        let holder = std::thread::spawn(move || {
            let _writer = db.lock().unwrap_or_else(|p| p.into_inner());
            let _ = taken.send(());
            let _ = released.recv();
        });
        is_taken.recv().unwrap();
        let session = Session {
            user_id: 1,
            username: "admin".into(),
            csrf: "c".into(),
            admin: true,
            id: "s".into(),
        };
        let (st, se) = (|| State(state.clone()), || Extension(session.clone()));
        let served = tokio::time::timeout(Duration::from_secs(60), async {
            vec![
                records::list(st(), se(), Query(Default::default())).await,
                records::detail(st(), se(), UrlPath("1".into())).await,
                billing::page(st(), se(), Query(Default::default())).await,
                billing::csv(st(), Query(Default::default())).await,
                rates::page(st(), se(), Query(Default::default())).await,
                rates::export(
                    st(),
                    Query(rates::RatesQuery {
                        table: "carrier".into(),
                        ..Default::default()
                    }),
                )
                .await,
                overview::page(st(), se()).await,
                crate::web::api::records(st(), Query(Default::default())).await,
                crate::web::api::record(st(), UrlPath("1".into())).await,
            ]
        })
        .await;
        let _ = release.send(());
        holder.join().unwrap();
        let served = served.expect("a read waited for the writing connection");
        for (i, r) in served.into_iter().enumerate() {
            let status = r
                .map(|r| r.status())
                .unwrap_or_else(|e| panic!("read {i}: {e}"));
            assert_eq!(status, StatusCode::OK, "read {i}");
        }
    }
}
