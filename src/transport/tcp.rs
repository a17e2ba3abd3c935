//! The TCP shell: accepts connections, frames each byte stream by Content-Length, answers
//! CRLF keep-alive pings, closes idle connections, and keeps a map of open connections so that
//! responses and requests reuse them (RFC 3261 §18.2.2, RFC 5626 §3.5.1). Accepted connections
//! are capped in all and per source address, and one that has not sent a valid SIP request
//! within [`super::TcpCaps::first_request`] is closed ([`Accepted`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{reject_unparsable, Inbound, Outbound};
use crate::sip::parse::{self, Frame, Framing, StreamFramer};
use crate::sip::peer::{Peer, Proto};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The read buffer of a connection that has sent a valid request, and of one that has not.
const READ_BUFFER: usize = 16 * 1024;
const FIRST_READ_BUFFER: usize = 2 * 1024;
/// Refused connections are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
const WRITE_QUEUE: usize = 256;

pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The name under which the accept loop and the connections of `local` are supervised.
pub(super) fn component_name(local: SocketAddr) -> String {
    format!("SIP TCP {local}")
}

/// The component name of a connection over `proto` on `local`.
fn conn_component(proto: Proto, local: SocketAddr) -> String {
    match proto {
        Proto::Tls => super::tls::component_name(local),
        _ => component_name(local),
    }
}

/// The accepted connections open now, in all and per source address, and those that have
/// not sent a valid request yet (oldest first): when the total cap is reached, the oldest of
/// these is closed to make room, so that a flood of idle connections cannot lock out phones.
#[derive(Debug, Default)]
pub(super) struct Accepted {
    open: std::sync::Mutex<OpenConns>,
    /// Connections refused since the last warning (logged at most every few seconds).
    refused: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct OpenConns {
    total: usize,
    per: HashMap<IpAddr, usize>,
    next_id: u64,
    /// Connections without a valid request yet: id -> how to close it.
    untrusted: HashMap<u64, Arc<tokio::sync::Notify>>,
    /// Their ids, oldest first (ids of trusted or closed connections are skipped lazily).
    order: std::collections::VecDeque<u64>,
}

/// An accepted connection's place under the caps; given back when dropped.
pub(super) struct Admitted {
    accepted: Arc<Accepted>,
    ip: IpAddr,
    id: u64,
    /// Notified when the connection must close to make room for a new one.
    evict: Arc<tokio::sync::Notify>,
}

impl Accepted {
    /// A place for a connection from `ip`, unless its source is at its cap; at the total cap
    /// the oldest connection without a valid request is closed for it (none: refused).
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr, caps: &super::TcpCaps) -> Option<Admitted> {
        let mut guard = self.open.lock().ok()?;
        let o = &mut *guard;
        let mine = o.per.get(&ip).copied().unwrap_or(0);
        if mine >= caps.per_source {
            return None;
        }
        if o.total >= caps.total {
            let victim = loop {
                let id = o.order.pop_front()?;
                if let Some(n) = o.untrusted.remove(&id) {
                    break n;
                }
            };
            victim.notify_one();
        }
        o.total += 1;
        o.per.insert(ip, mine + 1);
        o.next_id += 1;
        let id = o.next_id;
        let evict = Arc::new(tokio::sync::Notify::new());
        o.untrusted.insert(id, Arc::clone(&evict));
        o.order.push_back(id);
        Some(Admitted {
            accepted: Arc::clone(self),
            ip,
            id,
            evict,
        })
    }
}

impl Admitted {
    /// The connection sent a valid request: it is no longer the first to go.
    fn trusted(&self) {
        if let Ok(mut o) = self.accepted.open.lock() {
            o.untrusted.remove(&self.id);
            if o.order.len() > 2 * o.untrusted.len() + 64 {
                let OpenConns {
                    untrusted, order, ..
                } = &mut *o;
                order.retain(|id| untrusted.contains_key(id));
            }
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut guard) = self.accepted.open.lock() {
            let o = &mut *guard;
            o.total = o.total.saturating_sub(1);
            o.untrusted.remove(&self.id);
            if let Some(n) = o.per.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    o.per.remove(&self.ip);
                }
            }
            if o.per.capacity() > 4 * o.per.len() + 1024 {
                o.per.shrink_to_fit();
            }
            if o.untrusted.capacity() > 4 * o.untrusted.len() + 1024 {
                o.untrusted.shrink_to_fit();
            }
            if o.order.len() > 2 * o.untrusted.len() + 64 {
                let OpenConns {
                    untrusted, order, ..
                } = o;
                order.retain(|id| untrusted.contains_key(id));
                if order.capacity() > 4 * order.len() + 1024 {
                    order.shrink_to_fit();
                }
            }
        }
    }
}

pub(super) async fn accept_loop(listener: Arc<TcpListener>, out: Outbound) {
    accept_loop_with(listener, out, Proto::Tcp).await
}

/// Accepts connections over `proto` (TCP, or TLS: the handshake is done in the connection's
/// task, within the time a connection has to send its first request).
pub(super) async fn accept_loop_with(listener: Arc<TcpListener>, out: Outbound, proto: Proto) {
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let Some(admitted) = out.accepted.admit(remote.ip(), &out.settings.tcp_caps) else {
                    // Over a cap: closed at once (dropping the stream), counted, and warned
                    // about at most every 10 s (each one at debug level).
                    drop(stream);
                    tracing::debug!(%remote, "TCP connection refused: over the connection cap");
                    let n = out
                        .accepted
                        .refused
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let now = tokio::time::Instant::now();
                    if last_warning.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
                        last_warning = Some(now);
                        out.accepted
                            .refused
                            .store(0, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(%remote, refused = n + 1, "TCP connection cap reached: connections refused");
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let Ok(local) = stream.local_addr() else {
                    continue;
                };
                let peer = Peer {
                    proto,
                    remote,
                    local,
                };
                if proto == Proto::Tls {
                    tokio::spawn(super::tls::serve_accepted(
                        stream,
                        peer,
                        out.clone(),
                        admitted,
                    ));
                } else {
                    tokio::spawn(run_connection(stream, peer, out.clone(), admitted));
                }
            }
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::warn!("TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Sends over the connection to `peer`, opening one if there is none.
pub(super) fn send(out: &Outbound, peer: Peer, data: Bytes) {
    let Some(data) = send_existing(out, peer, data) else {
        return;
    };
    let out = out.clone();
    tokio::spawn(async move {
        match connect(peer).await {
            Ok(stream) => {
                let Ok(local) = stream.local_addr() else {
                    return;
                };
                let peer = Peer {
                    proto: Proto::Tcp,
                    remote: peer.remote,
                    local,
                };
                run_connection_with_first(stream, peer, out, Some(data), None).await;
            }
            Err(e) => {
                tracing::info!(%peer, "TCP connect failed: {e}");
                out.fail(
                    peer,
                    format!("TCP connection to {} failed: {e}", peer.remote),
                );
            }
        }
    });
}

/// Sends over an open connection of `peer`'s transport to its remote address; gives `data`
/// back when there is none.
pub(super) fn send_existing(out: &Outbound, peer: Peer, data: Bytes) -> Option<Bytes> {
    let existing = out
        .tcp
        .lock()
        .ok()
        .and_then(|m| m.get(&(peer.proto, peer.local, peer.remote)).cloned())
        .or_else(|| {
            // A connection to the same remote from another local socket is as good.
            out.tcp.lock().ok().and_then(|m| {
                m.iter()
                    .find(|((p, _, r), _)| *p == peer.proto && *r == peer.remote)
                    .map(|(_, s)| s.clone())
            })
        });
    match existing {
        Some(tx) => {
            if tx.try_send(data).is_err() {
                tracing::warn!(%peer, "connection write queue full or closed: message dropped");
            }
            None
        }
        None => Some(data),
    }
}

/// Opens a TCP connection to `peer.remote` from `peer.local`'s address, within the connect
/// timeout.
pub(super) async fn connect(peer: Peer) -> std::io::Result<TcpStream> {
    {
        let bind_ip = peer.local.ip();
        let connect = async {
            let socket = if peer.remote.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            if bind_ip.is_ipv4() == peer.remote.is_ipv4() && !bind_ip.is_unspecified() {
                socket.bind(SocketAddr::new(bind_ip, 0))?;
            }
            socket.connect(peer.remote).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            )),
        }
    }
}

async fn run_connection<S>(stream: S, peer: Peer, out: Outbound, admitted: Admitted)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    run_connection_with_first(stream, peer, out, None, Some(admitted)).await;
}

/// Serves one connection: `first` is what to send on a connection we opened; `admitted` the
/// place under the caps of one a peer opened (such a connection has
/// [`super::TcpCaps::first_request`] to send a valid request, then the usual idle time).
pub(super) async fn run_connection_with_first<S>(
    stream: S,
    peer: Peer,
    out: Outbound,
    first: Option<Bytes>,
    admitted: Option<Admitted>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let evict = admitted.as_ref().map(|a| Arc::clone(&a.evict));
    let evicted = async {
        match &evict {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(evicted);
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    if let Some(first) = first {
        let _ = tx.try_send(first);
    }
    if let Ok(mut map) = out.tcp.lock() {
        map.insert((peer.proto, peer.local, peer.remote), tx.clone());
    }
    tracing::debug!(%peer, "connection open");
    let (mut reader, mut writer) = tokio::io::split(stream);
    let idle = out.settings.tcp_idle;
    let component = conn_component(peer.proto, peer.local);
    // A connection a peer opened is trusted with the idle time once it sent a valid request.
    let mut trusted = admitted.is_none();
    let first_request = out.settings.tcp_caps.first_request.min(idle);
    let mut framer = StreamFramer::new(out.settings.limits.max_message_bytes);
    // A small buffer until the peer proves itself: a flood of idle connections costs little.
    let mut buf = vec![
        0u8;
        if trusted {
            READ_BUFFER
        } else {
            FIRST_READ_BUFFER
        }
    ];
    let deadline = tokio::time::sleep(if trusted { idle } else { first_request });
    tokio::pin!(deadline);
    'conn: loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(n) => n,
                };
                if trusted {
                    deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                }
                framer.push(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(None) => break,
                        Ok(Some(Frame::Ping)) => {
                            let _ = tx.try_send(Bytes::from_static(b"\r\n"));
                        }
                        Ok(Some(Frame::Message(frame))) => {
                            // One frame's parse may panic on a bug without ending the connection.
                            let parsed = out.supervisor.guard(&component, || {
                                parse::parse_message(frame, Framing::Stream, &out.settings.limits)
                            });
                            let Some(parsed) = parsed else { continue };
                            match parsed {
                                Ok(message) => {
                                    if !trusted && matches!(message, crate::sip::message::Message::Request(_)) {
                                        trusted = true;
                                        buf.resize(READ_BUFFER, 0);
                                        if let Some(a) = &admitted {
                                            a.trusted();
                                        }
                                        deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                                    }
                                    if out.inbound.send(Inbound { message, peer, received: std::time::Instant::now() }).await.is_err() {
                                        break 'conn;
                                    }
                                }
                                Err(err) => {
                                    if let Some(reply) = reject_unparsable(&err, &out.settings) {
                                        let _ = writer.write_all(&reply).await;
                                    }
                                }
                            }
                        }
                        Err(err) => {
                            // The stream cannot be resynchronised: answer if possible, then close.
                            if let Some(reply) = reject_unparsable(&err, &out.settings) {
                                let _ = writer.write_all(&reply).await;
                            }
                            break 'conn;
                        }
                    }
                }
            }
            Some(data) = rx.recv() => {
                if trusted {
                    deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                }
                if writer.write_all(&data).await.is_err() {
                    break 'conn;
                }
            }
            () = &mut deadline => {
                tracing::debug!(%peer, "closing idle TCP connection");
                break 'conn;
            }
            () = &mut evicted, if !trusted => {
                tracing::debug!(%peer, "closing a TCP connection without a request to make room");
                break 'conn;
            }
        }
    }
    if let Ok(mut map) = out.tcp.lock() {
        if map
            .get(&(peer.proto, peer.local, peer.remote))
            .is_some_and(|s| s.same_channel(&tx))
        {
            map.remove(&(peer.proto, peer.local, peer.remote));
        }
    }
    let _ = writer.shutdown().await;
    tracing::debug!(%peer, "connection closed");
}
