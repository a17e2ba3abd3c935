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
            if out
                .inbound
                .try_send(Inbound {
                    message,
                    peer,
                    received: std::time::Instant::now(),
                })
                .is_err()
            {
                tracing::warn!(%peer, "SIP core overloaded: datagram dropped");
            }
        }
        Err(err) => {
            if let Some(reply) = reject_unparsable(&err, &out.settings) {
                let _ = socket.try_send_to(&reply, remote);
            }
        }
    }
}
