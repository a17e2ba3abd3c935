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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{reject_unparsable, Inbound, Outbound};
use crate::sip::parse::{self, Frame, Framing, StreamFramer};
use crate::sip::peer::{Peer, Proto};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
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

/// The accepted connections open now, in all and per source address.
#[derive(Debug, Default)]
pub(super) struct Accepted {
    open: std::sync::Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// Connections refused since the last warning (logged at most every few seconds).
    refused: std::sync::atomic::AtomicU64,
}

/// An accepted connection's place under the caps; given back when dropped.
pub(super) struct Admitted {
    accepted: Arc<Accepted>,
    ip: IpAddr,
}

impl Accepted {
    /// A place for a connection from `ip`, unless the total or its source is at its cap.
    fn admit(self: &Arc<Self>, ip: IpAddr, caps: &super::TcpCaps) -> Option<Admitted> {
        let mut open = self.open.lock().ok()?;
        let (total, per) = &mut *open;
        let mine = per.get(&ip).copied().unwrap_or(0);
        if *total >= caps.total || mine >= caps.per_source {
            return None;
        }
        *total += 1;
        per.insert(ip, mine + 1);
        Some(Admitted {
            accepted: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Ok(mut open) = self.accepted.open.lock() {
            let (total, per) = &mut *open;
            *total = total.saturating_sub(1);
            if let Some(n) = per.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per.remove(&self.ip);
                }
            }
            if per.capacity() > 4 * per.len() + 1024 {
                per.shrink_to_fit();
            }
        }
    }
}

pub(super) async fn accept_loop(listener: TcpListener, out: Outbound) {
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let Some(admitted) = out.accepted.admit(remote.ip(), &out.settings.tcp_caps) else {
                    // Over a cap: closed at once (dropping the stream), counted, and warned
                    // about at most every 10 s.
                    drop(stream);
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
                tokio::spawn(run_connection(
                    stream,
                    Peer {
                        proto: Proto::Tcp,
                        remote,
                        local,
                    },
                    out.clone(),
                    admitted,
                ));
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
    let existing = out
        .tcp
        .lock()
        .ok()
        .and_then(|m| m.get(&(peer.local, peer.remote)).cloned())
        .or_else(|| {
            // A connection to the same remote from another local socket is as good.
            out.tcp.lock().ok().and_then(|m| {
                m.iter()
                    .find(|((_, r), _)| *r == peer.remote)
                    .map(|(_, s)| s.clone())
            })
        });
    if let Some(tx) = existing {
        if tx.try_send(data).is_err() {
            tracing::warn!(%peer, "TCP write queue full or closed: message dropped");
        }
        return;
    }
    let out = out.clone();
    tokio::spawn(async move {
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
            Ok(Err(e)) => tracing::info!(%peer, "TCP connect failed: {e}"),
            Err(_) => tracing::info!(%peer, "TCP connect timed out"),
        }
    });
}

async fn run_connection(stream: TcpStream, peer: Peer, out: Outbound, admitted: Admitted) {
    run_connection_with_first(stream, peer, out, None, Some(admitted)).await;
}

/// Serves one connection: `first` is what to send on a connection we opened; `admitted` the
/// place under the caps of one a peer opened (such a connection has
/// [`super::TcpCaps::first_request`] to send a valid request, then the usual idle time).
async fn run_connection_with_first(
    stream: TcpStream,
    peer: Peer,
    out: Outbound,
    first: Option<Bytes>,
    admitted: Option<Admitted>,
) {
    let _admitted = admitted;
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    if let Some(first) = first {
        let _ = tx.try_send(first);
    }
    if let Ok(mut map) = out.tcp.lock() {
        map.insert((peer.local, peer.remote), tx.clone());
    }
    tracing::debug!(%peer, "TCP connection open");
    let (mut reader, mut writer) = stream.into_split();
    let idle = out.settings.tcp_idle;
    // A connection a peer opened is trusted with the idle time once it sent a valid request.
    let mut trusted = _admitted.is_none();
    let first_request = out.settings.tcp_caps.first_request.min(idle);
    let mut framer = StreamFramer::new(out.settings.limits.max_message_bytes);
    let mut buf = vec![0u8; 16 * 1024];
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
                            match parse::parse_message(frame, Framing::Stream, &out.settings.limits) {
                                Ok(message) => {
                                    if !trusted && matches!(message, crate::sip::message::Message::Request(_)) {
                                        trusted = true;
                                        deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                                    }
                                    if out.inbound.send(Inbound { message, peer }).await.is_err() {
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
        }
    }
    if let Ok(mut map) = out.tcp.lock() {
        if map
            .get(&(peer.local, peer.remote))
            .is_some_and(|s| s.same_channel(&tx))
        {
            map.remove(&(peer.local, peer.remote));
        }
    }
    let _ = writer.shutdown().await;
    tracing::debug!(%peer, "TCP connection closed");
}
