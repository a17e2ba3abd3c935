//! The TCP shell: accepts connections, frames each byte stream by Content-Length, answers
//! CRLF keep-alive pings, closes idle connections, and keeps a map of open connections so that
//! responses and requests reuse them (RFC 3261 §18.2.2, RFC 5626 §3.5.1).

use std::net::SocketAddr;
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

pub(super) async fn accept_loop(listener: Arc<TcpListener>, out: Outbound) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
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
                run_connection_with_first(stream, peer, out, Some(data)).await;
            }
            Ok(Err(e)) => tracing::info!(%peer, "TCP connect failed: {e}"),
            Err(_) => tracing::info!(%peer, "TCP connect timed out"),
        }
    });
}

async fn run_connection(stream: TcpStream, peer: Peer, out: Outbound) {
    run_connection_with_first(stream, peer, out, None).await;
}

async fn run_connection_with_first(
    stream: TcpStream,
    peer: Peer,
    out: Outbound,
    first: Option<Bytes>,
) {
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
    let component = component_name(peer.local);
    let mut framer = StreamFramer::new(out.settings.limits.max_message_bytes);
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    'conn: loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(n) => n,
                };
                deadline.as_mut().reset(tokio::time::Instant::now() + idle);
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
                deadline.as_mut().reset(tokio::time::Instant::now() + idle);
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
