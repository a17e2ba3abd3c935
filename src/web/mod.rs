//! The HTTP side of pasarela, on `[web] listen` (default 127.0.0.1:8080): the operations
//! endpoints `GET /healthz` (200 `ok` while the SIP loop is alive, 503 when it is stale, still
//! starting or stopping, or when a supervised component has failed) and `GET /metrics` (Prometheus text format), and the admin dashboard
//! ([`pages`], behind the login of [`auth`]). Handlers read the SIP loop's numbers from
//! [`Stats`], never from the loop itself, so a slow HTTP client cannot hold up signalling; the
//! dashboard reads the database on blocking threads, never on the async runtime.

pub mod accounts;
pub mod api;
pub mod api_dundi;
pub mod api_fxo;
pub mod api_inbound;
pub mod api_lines;
pub mod api_messages;
pub mod api_modems;
pub mod api_numbering;
pub mod api_tokens;
pub mod api_trunks;
pub mod auth;
pub mod config;
pub mod guard;
pub mod host;
pub use crate::office_time;
pub mod pages;
pub mod saved_filters;
pub mod stats;
pub mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use self::stats::{Health, LoopCounts, RouteOutcome, Stats};

/// How long a stopping server waits for open HTTP connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `[web] listen`.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The database could not be opened for the dashboard.
    #[error("cannot open the database for the dashboard: {0}")]
    Database(#[from] crate::cdr::CdrError),
    /// The start-up task opening the database panicked or was cancelled.
    #[error("the dashboard's start-up task failed")]
    Task,
}

pub use self::office_time::OfficeTime;
pub use self::pages::WebState;

/// The HTTP routes: the operations endpoints on the shared statistics, and the dashboard on
/// the database of `state`.
pub fn router(stats: Arc<Stats>, state: WebState) -> Router {
    let hosts = Arc::clone(&state.hosts);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(stats)
        .merge(pages::router(state))
        .layer(axum::middleware::from_fn_with_state(hosts, host::check))
}

async fn healthz(State(stats): State<Arc<Stats>>) -> impl IntoResponse {
    let (status, body) = match stats.health(Instant::now()) {
        Health::Ok => (StatusCode::OK, "ok\n".to_owned()),
        Health::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_owned()),
        Health::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_owned()),
        Health::Failed { component, reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("failed: {component}: {reason}\n"),
        ),
        Health::Stale(age) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "stale: the SIP loop was last seen {:.1} s ago\n",
                age.as_secs_f64()
            ),
        ),
    };
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
}

async fn metrics(State(stats): State<Arc<Stats>>) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        stats.render_prometheus(Instant::now())
            + &crate::sms::metrics::render()
            + &crate::transport::metrics::render(),
    )
}

/// What the dashboard needs from the running gateway besides the database.
#[derive(Debug, Default)]
pub struct Links {
    /// The router, for the routing test page.
    pub router: Option<Arc<crate::routing::router::Router>>,
    /// The SIP loop, for the live page and the live API.
    pub live: Option<crate::live::LiveSource>,
    /// The office's time zone.
    pub office: office_time::OfficeTime,
    /// The ENUM resolver, to show and flush its cache on the routing page.
    pub enum_: Option<crate::routing::enum_lookup::EnumResolver>,
    /// The DUNDi node, for its peers on the live page.
    pub dundi: Option<crate::routing::dundi::OfficeDundi>,
    /// The configuration and key files a backup download keeps besides the store.
    pub backup_files: Vec<(String, std::path::PathBuf)>,
    /// The digest realm extension passwords are hashed for (empty: the default domain).
    pub realm: String,
    /// The SIP side's failed-authentication guard, for the security page.
    pub guard: Option<crate::security::guard::SharedGuard>,
    /// Extra host names the dashboard answers to (`[web] hosts`).
    pub hosts: Vec<String>,
    /// The SIP listen sockets (transport, address), for the phone setup panel.
    pub sip_listen: Vec<(String, SocketAddr)>,
    /// How many PSTN lines (trunks, modems) the configuration declares, for the checklist.
    pub lines: usize,
    /// The message service, for sending SMS and USSD from the dashboard and the API.
    pub messages: Option<crate::sms::service::Handle>,
    /// The feature codes phones can dial (code, what it does), for the phone setup page.
    pub feature_codes: Vec<(String, String)>,
}

/// A running HTTP server.
#[derive(Debug)]
pub struct WebServer {
    local_addr: SocketAddr,
    extensions_changed: Arc<tokio::sync::Notify>,
    trunks_changed: Arc<tokio::sync::Notify>,
    numbering_changed: Arc<tokio::sync::Notify>,
    rates_changed: Arc<tokio::sync::Notify>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    /// The routes, to serve them on an HTTPS listener too ([`WebServer::serve_https`]).
    app: Router,
    caps: guard::WebCaps,
    /// Stops the HTTPS listeners.
    https_stop: tokio::sync::watch::Sender<bool>,
    https_tasks: Vec<JoinHandle<()>>,
}

impl WebServer {
    /// Binds `addr` and serves [`router`] on it in a task of the current runtime, with the
    /// dashboard on the database at `db_path`.
    pub async fn start(
        addr: SocketAddr,
        stats: Arc<Stats>,
        db_path: &Path,
        links: Links,
    ) -> Result<WebServer, WebError> {
        WebServer::start_guarded(addr, stats, db_path, links, guard::WebCaps::default()).await
    }

    /// [`WebServer::start`] with the connection caps and timeouts of `caps`.
    pub async fn start_guarded(
        addr: SocketAddr,
        stats: Arc<Stats>,
        db_path: &Path,
        links: Links,
        caps: guard::WebCaps,
    ) -> Result<WebServer, WebError> {
        let path = db_path.to_path_buf();
        let mut state = tokio::task::spawn_blocking(move || WebState::open(&path))
            .await
            .map_err(|_| WebError::Task)??;
        state.router = links.router;
        state.live = links.live;
        state.office = Arc::new(links.office);
        state.enum_ = links.enum_;
        state.dundi = links.dundi;
        state.backup_files = Arc::new(links.backup_files);
        if !links.realm.is_empty() {
            state.realm = Arc::from(links.realm.as_str());
        }
        state.guard = links.guard;
        state.sip_listen = Arc::new(links.sip_listen);
        state.lines = links.lines;
        state.messages = links.messages;
        if !links.feature_codes.is_empty() {
            state.feature_codes = Arc::new(links.feature_codes);
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| WebError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| WebError::Bind { addr, source })?;
        state.hosts = Arc::new(host::AllowedHosts::new(local_addr, &links.hosts));
        let (stop, stopped) = oneshot::channel::<()>();
        let extensions_changed = Arc::clone(&state.extensions_changed);
        let trunks_changed = Arc::clone(&state.trunks_changed);
        let numbering_changed = Arc::clone(&state.numbering_changed);
        let rates_changed = Arc::clone(&state.rates_changed);
        let routes = router(stats, state);
        let app = routes
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            use axum::serve::ListenerExt;
            let listener = guard::GuardedListener::new(listener, caps).tap_io(|_| {});
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!("web server: {e}");
            }
        });
        tracing::info!(%local_addr, "web listening");
        Ok(WebServer {
            local_addr,
            extensions_changed,
            trunks_changed,
            numbering_changed,
            rates_changed,
            stop,
            task,
            app: routes,
            caps,
            https_stop: tokio::sync::watch::channel(false).0,
            https_tasks: Vec::new(),
        })
    }

    /// Serves the same dashboard over HTTPS on `addr` with `config` (its ALPN should offer
    /// `http/1.1`), under the same caps; cookies get `Secure` and responses HSTS there
    /// ([`tls::secure_response`]). Returns the address bound.
    pub async fn serve_https(
        &mut self,
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<SocketAddr, WebError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| WebError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| WebError::Bind { addr, source })?;
        let guarded = guard::GuardedListener::new(listener, self.caps);
        let tls = tls::TlsListener::new(guarded, config)
            .map_err(|source| WebError::Bind { addr, source })?;
        let app = self
            .app
            .clone()
            .layer(axum::middleware::map_response(tls::secure_response))
            .into_make_service_with_connect_info::<SocketAddr>();
        let mut stopped = self.https_stop.subscribe();
        self.https_tasks.push(tokio::spawn(async move {
            use axum::serve::ListenerExt;
            let serve = axum::serve(tls.tap_io(|_| {}), app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::error!("HTTPS web server: {e}");
            }
        }));
        tracing::info!(%local, "web listening over HTTPS");
        Ok(local)
    }

    /// Notified whenever the dashboard or the API changed a trunk (the SIP side then applies
    /// the store's trunks).
    pub fn trunks_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.trunks_changed)
    }

    /// Notified whenever the dashboard or the API changed the numbering plan or the ENUM
    /// settings (the SIP side then applies the store's).
    pub fn numbering_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.numbering_changed)
    }

    /// Notified whenever the dashboard or the API changed a rate table, a rate or a line's
    /// rate table (the router's least-cost order is then read again).
    pub fn rates_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.rates_changed)
    }

    /// Notified whenever the dashboard changed an extension (the SIP side then reloads them).
    pub fn extensions_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.extensions_changed)
    }

    /// The address actually bound (the real port when `[web] listen` asks for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open requests finish for a moment, then drops what is left.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.https_stop.send(true);
        for t in self.https_tasks {
            if tokio::time::timeout(SHUTDOWN_GRACE, t).await.is_err() {
                tracing::debug!("HTTPS server did not stop in time");
            }
        }
        let mut task = self.task;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}
