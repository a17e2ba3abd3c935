//! The UDP shell: one receive task per socket; every datagram is one message (RFC 3261 §18.3).
//! The socket also asks for ICMP errors ([`super::udp_errors`]): an ICMP unreachable for a
//! datagram we sent is reported as a transport failure towards its destination.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::udp_batch::RecvBatch;
use super::{reject_unparsable, Inbound, Outbound};
use crate::sip::parse::{self, Framing};
use crate::sip::peer::{Peer, Proto};

/// Binds a UDP socket with large buffers (bursts of thousands of requests per second).
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let std_socket = std::net::UdpSocket::bind(addr)?;
    std_socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(std_socket)?;
    set_buffers(&socket);
    super::udp_errors::enable(&socket, addr.is_ipv6());
    Ok(socket)
}

fn set_buffers(socket: &UdpSocket) {
    let sock = socket2_ref(socket);
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
}

fn socket2_ref(socket: &UdpSocket) -> socket2::SockRef<'_> {
    socket2::SockRef::from(socket)
}

/// The name under which the receive loop of `local` is supervised.
pub(super) fn component_name(local: SocketAddr) -> String {
    format!("SIP UDP {local}")
}

/// How many times one datagram is sent again after the socket answered with a pending ICMP
/// error instead of sending it.
const PENDING_ERROR_RETRIES: usize = 4;

/// Whether a send failed only because the socket held the ICMP error of an *earlier* datagram.
///
/// With `IP_RECVERR` ([`super::udp_errors`]) Linux also records each ICMP error as the socket's
/// pending error, even on an unconnected socket; the next `sendmsg` returns that error and the
/// datagram is not sent (the call consumes the pending error). A fork to a dead phone (port
/// unreachable) thus dropped the INVITE to the live phone sent right after it, which only
/// Timer A's retransmission delivered, 500 ms later. A send to a given destination never
/// fails with these errors on its own account, save for a route that is missing, which a
/// bounded retry does not harm.
fn is_pending_icmp_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH)
    )
}

/// `try_send_to` that sends again (at most [`PENDING_ERROR_RETRIES`] times) when the error it
/// got belongs to an earlier datagram (see [`is_pending_icmp_error`]). The ICMP error itself
/// stays on the error queue, where the receive loop reports it against its own destination.
pub(super) fn try_send_to(
    socket: &UdpSocket,
    data: &[u8],
    remote: SocketAddr,
) -> std::io::Result<usize> {
    let mut retries = 0;
    loop {
        match socket.try_send_to(data, remote) {
            Err(e) if is_pending_icmp_error(&e) && retries < PENDING_ERROR_RETRIES => {
                retries += 1;
                super::metrics::bump(&super::metrics::UDP_SEND_RETRIES);
                tracing::debug!(%remote, "UDP send returned an earlier datagram's error ({e}); sending again");
            }
            result => return result,
        }
    }
}

/// The waiting form of [`try_send_to`], for a socket whose send buffer was full.
pub(super) async fn send_to(
    socket: &UdpSocket,
    data: &[u8],
    remote: SocketAddr,
) -> std::io::Result<usize> {
    let mut retries = 0;
    loop {
        match socket.send_to(data, remote).await {
            Err(e) if is_pending_icmp_error(&e) && retries < PENDING_ERROR_RETRIES => {
                retries += 1;
                super::metrics::bump(&super::metrics::UDP_SEND_RETRIES);
                tracing::debug!(%remote, "UDP send returned an earlier datagram's error ({e}); sending again");
            }
            result => return result,
        }
    }
}

pub(super) async fn receive_loop(socket: Arc<UdpSocket>, out: Outbound) {
    let Ok(local) = socket.local_addr() else {
        return;
    };
    let component = component_name(local);
    let fd = socket.as_raw_fd();
    let mut batch = RecvBatch::new();
    loop {
        let ready = match socket.ready(Interest::READABLE | Interest::ERROR).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%local, "UDP socket not pollable: {e}");
                return;
            }
        };
        if ready.is_error() {
            drain_errors(&socket, local, &out);
        }
        if !ready.is_readable() {
            continue;
        }
        // Up to a batch per system call, until the socket says it is empty (which also
        // clears tokio's readiness).
        loop {
            let n = match socket.try_io(Interest::READABLE, || batch.recv(fd)) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // A pending ICMP error surfaces here once as well; the error queue says
                    // which destination it was for.
                    tracing::debug!(%local, "UDP receive error: {e}");
                    drain_errors(&socket, local, &out);
                    continue;
                }
            };
            for i in 0..n {
                if let Some((data, remote)) = batch.get(i) {
                    handle_datagram(&socket, data, remote, local, &component, &out);
                }
            }
        }
    }
}

/// Reports every queued ICMP unreachable as a failure towards its destination.
fn drain_errors(socket: &UdpSocket, local: SocketAddr, out: &Outbound) {
    loop {
        match socket.try_io(Interest::ERROR, || super::udp_errors::take(socket)) {
            Ok(Some(u)) => {
                tracing::info!(%local, destination = %u.destination, "UDP destination unreachable: {}", u.error);
                let peer = Peer {
                    proto: Proto::Udp,
                    remote: u.destination,
                    local,
                };
                out.fail(
                    peer,
                    format!("UDP to {} unreachable: {}", u.destination, u.error),
                );
            }
            Ok(None) => {}
            Err(e) => {
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::debug!(%local, "UDP error queue: {e}");
                }
                return;
            }
        }
    }
}

fn handle_datagram(
    socket: &UdpSocket,
    data: &[u8],
    remote: SocketAddr,
    local: SocketAddr,
    component: &str,
    out: &Outbound,
) {
    if parse::is_keepalive(data) {
        return;
    }
    let peer = Peer {
        proto: Proto::Udp,
        remote,
        local,
    };
    // One datagram's parse may panic on a bug without ending the loop.
    let parsed = out.supervisor.guard(component, || {
        parse::parse_message(
            Bytes::copy_from_slice(data),
            Framing::Datagram,
            &out.settings.limits,
        )
    });
    let Some(parsed) = parsed else { return };
    match parsed {
        Ok(message) => {
            out.deliver(Inbound {
                message,
                peer,
                received: std::time::Instant::now(),
            });
        }
        Err(err) => {
            if let Some(reply) = reject_unparsable(&err, &out.settings) {
                let _ = socket.try_send_to(&reply, remote);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits until `socket` has an ICMP error pending, without taking it (`poll` reports it
    /// as `POLLERR`): a loaded machine can take longer than any fixed wait to send it back.
    fn wait_error_pending(socket: &UdpSocket) {
        use std::os::fd::AsRawFd;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut p = libc::pollfd {
            fd: socket.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: one pollfd, alive for the call.
        while unsafe { libc::poll(&mut p, 1, 100) } < 1 || p.revents & libc::POLLERR == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no ICMP error came back"
            );
        }
    }

    /// A send to a closed port leaves its ICMP error pending on the socket: the next send, to a
    /// live destination, must still leave (it used to fail with `ECONNREFUSED` and be lost).
    #[tokio::test]
    async fn a_send_after_an_unreachable_destination_still_leaves() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dead = closed.local_addr().expect("addr");
        drop(closed);
        let live = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        live.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let live_addr = live.local_addr().expect("addr");
        let socket = bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let before =
            super::super::metrics::UDP_SEND_RETRIES.load(std::sync::atomic::Ordering::Relaxed);

        for round in 0..3 {
            send_to(&socket, b"to the dead", dead)
                .await
                .expect("send to the dead port");
            // Let the port-unreachable come back before the next send.
            wait_error_pending(&socket);
            socket.writable().await.expect("writable");
            try_send_to(&socket, b"to the living", live_addr)
                .unwrap_or_else(|e| panic!("round {round}: the live send failed: {e}"));
            let mut buf = [0u8; 64];
            let (n, _) = live
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("round {round}: nothing reached the live socket: {e}"));
            assert_eq!(&buf[..n], b"to the living");
        }
        let after =
            super::super::metrics::UDP_SEND_RETRIES.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            after > before,
            "no send was retried: the error did not stay pending"
        );
    }
}
