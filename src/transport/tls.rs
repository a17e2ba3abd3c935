//! SIP over TLS (RFC 3261 §26.2, RFC 5922): TCP connections with tokio-rustls on top, framed
//! and kept exactly as [`super::tcp`] does (the same caps, idle time, CRLF keep-alives and
//! connection reuse), so phones registered over TLS are reached back over their connection.
//!
//! Outgoing connections verify the server's certificate for the SIP domain the request is for
//! (the host of its first Route, else of its Request-URI), with the trust of
//! [`super::certs::TlsContext::client_config`]. When the connection or the handshake fails (a
//! bad certificate, a wrong name), the failure is reported to the transaction layer
//! ([`Outbound::fail`]): the transactions towards that peer end at once, as a `503` whose reason
//! says why (RFC 3261 §8.1.3.1 treats a transport error as a 503), so the call fails over to its
//! next hop at once and the record's explainer shows the reason.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::tcp::{self, Admitted};
use super::Outbound;
use crate::sip::message::Message;
use crate::sip::parse::{self, Framing};
use crate::sip::peer::{Peer, Proto};
use crate::sip::uri::Uri;

/// Time for the TLS handshake of a connection we open.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The name under which the accept loop and the connections of `local` are supervised.
pub(super) fn component_name(local: SocketAddr) -> String {
    format!("SIP TLS {local}")
}

/// Completes the handshake of an accepted connection (within the time a new connection has to
/// send its first request), then serves it like a TCP connection.
pub(super) async fn serve_accepted(
    stream: TcpStream,
    peer: Peer,
    out: Outbound,
    admitted: Admitted,
) {
    let Some(server) = out.settings.tls.as_ref().and_then(|t| t.server_config()) else {
        return;
    };
    let acceptor = TlsAcceptor::from(server);
    let limit = out.settings.tcp_caps.first_request;
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            tcp::run_connection_with_first(tls, peer, out, None, Some(admitted)).await;
        }
        Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
        Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
    }
}

/// Sends over the TLS connection to `peer`, opening (and verifying) one if there is none.
pub(super) fn send(out: &Outbound, peer: Peer, data: Bytes) {
    let Some(data) = tcp::send_existing(out, peer, data) else {
        return;
    };
    let Some(ctx) = out.settings.tls.clone() else {
        tracing::warn!(%peer, "no TLS certificate loaded: cannot open a TLS connection");
        out.fail(peer, "no TLS configured");
        return;
    };
    let out = out.clone();
    tokio::spawn(async move {
        let name = server_name_of(&data, &out).unwrap_or_else(|| peer.remote.ip().to_string());
        match open(&ctx, peer, &name).await {
            Ok(stream) => {
                let Ok(local) = stream.get_ref().0.local_addr() else {
                    return;
                };
                tracing::info!(%peer, %name, "TLS connection open, certificate verified");
                let peer = Peer {
                    proto: Proto::Tls,
                    remote: peer.remote,
                    local,
                };
                tcp::run_connection_with_first(stream, peer, out, Some(data), None).await;
            }
            Err(why) => {
                tracing::warn!(%peer, %name, "TLS connection failed: {why}");
                let why: String = why.chars().filter(|c| !c.is_control()).take(200).collect();
                out.fail(peer, why);
            }
        }
    });
}

/// Connects to `peer.remote` and completes a handshake that verifies `name`.
async fn open(
    ctx: &super::certs::TlsContext,
    peer: Peer,
    name: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let config = ctx.client_config(name).map_err(|e| e.to_string())?;
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|_| format!("{name:?} is not a host name"))?;
    let stream = tcp::connect(peer)
        .await
        .map_err(|e| format!("connect to {}: {e}", peer.remote))?;
    let connector = TlsConnector::from(config);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(server_name, stream)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(explain(name, &e)),
        Err(_) => Err(format!("TLS handshake with {name} timed out")),
    }
}

/// A short reason for a failed handshake, for the reason phrase and the explainer.
fn explain(name: &str, e: &std::io::Error) -> String {
    let inner = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .map(|r| r.to_string())
        .unwrap_or_else(|| e.to_string());
    let inner: String = inner
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("TLS certificate of {name} rejected: {inner}")
}

/// The SIP domain a request is for: the host of its first Route, else of its Request-URI;
/// for a response, the host of its top Via.
fn server_name_of(data: &Bytes, out: &Outbound) -> Option<String> {
    let message = parse::parse_message(data.clone(), Framing::Stream, &out.settings.limits).ok()?;
    let host = match &message {
        Message::Request(r) => {
            let uri = r
                .headers
                .routes()
                .next()
                .map(|na| &na.uri)
                .unwrap_or(&r.uri);
            match uri {
                Uri::Sip(u) => u.host.clone(),
                _ => return None,
            }
        }
        Message::Response(r) => r.headers.vias().next()?.host.clone(),
    };
    Some(match host.ip() {
        Some(ip) => ip.to_string(),
        None => host.to_string(),
    })
}
