//! The dashboard over HTTPS (`[web] https`): a listener that completes TLS handshakes off the
//! accept path (a slow or silent client holds up nobody, and has the header timeout of
//! [`super::guard::WebCaps`] for its handshake and headers together), under the same caps as
//! the HTTP listener; and the response rules of HTTPS: session and CSRF cookies get `Secure`,
//! every response carries `Strict-Transport-Security`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::guard::{GuardedListener, GuardedStream};

/// Handshakes not finished within this are dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The HSTS header of every HTTPS response: a year, as browsers expect of a site that means it.
pub const HSTS: &str = "max-age=31536000";

/// Accepts connections on a [`GuardedListener`] and hands on those whose TLS handshake
/// completed.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<GuardedStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `inner` with `config` (in a task of the current runtime; it ends
    /// when the listener is dropped).
    pub fn new(
        mut inner: GuardedListener,
        config: Arc<rustls::ServerConfig>,
    ) -> io::Result<TlsListener> {
        use axum::serve::Listener;
        let local = inner.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, remote) = tokio::select! {
                    accepted = inner.accept() => accepted,
                    () = tx.closed() => return,
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, remote)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, "dashboard TLS handshake failed: {e}")
                        }
                        Err(_) => tracing::debug!(%remote, "dashboard TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<GuardedStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The HTTPS rules for one response: `Secure` on every cookie set, and HSTS.
pub async fn secure_response(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if !cookies.is_empty() {
        headers.remove(header::SET_COOKIE);
        for c in cookies {
            let secured = match c.to_str() {
                Ok(s) if !s.to_ascii_lowercase().contains("; secure") => {
                    HeaderValue::from_str(&format!("{s}; Secure")).unwrap_or(c)
                }
                _ => c,
            };
            headers.append(header::SET_COOKIE, secured);
        }
    }
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static(HSTS),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cookies_get_secure_and_responses_hsts() {
        let mut r = Response::new(axum::body::Body::empty());
        r.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static("pasarela_session=x; Path=/; HttpOnly; SameSite=Lax"),
        );
        r.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static("pasarela_csrf=y; Path=/; Secure"),
        );
        let r = secure_response(r).await;
        let cookies: Vec<&str> = r
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cookies,
            [
                "pasarela_session=x; Path=/; HttpOnly; SameSite=Lax; Secure",
                "pasarela_csrf=y; Path=/; Secure"
            ]
        );
        assert_eq!(r.headers()[header::STRICT_TRANSPORT_SECURITY], HSTS);
    }
}
