//! The UDP shell: one receive task per socket; every datagram is one message (RFC 3261 §18.3).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::UdpSocket;

use super::{reject_unparsable, Inbound, Outbound};
use crate::sip::parse::{self, Framing};
use crate::sip::peer::{Peer, Proto};

/// Binds a UDP socket with large buffers (bursts of thousands of requests per second).
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let std_socket = std::net::UdpSocket::bind(addr)?;
    std_socket.set_nonblocking(true)?;
    let socket = UdpSocket::from_std(std_socket)?;
    set_buffers(&socket);
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
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, remote) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP port-unreachable from an earlier send surfaces here on Linux; keep going.
                tracing::debug!(%local, "UDP receive error: {e}");
                continue;
            }
        };
        let data = &buf[..n];
        if parse::is_keepalive(data) {
            continue;
        }
        let peer = Peer {
            proto: Proto::Udp,
            remote,
            local,
        };
        // One datagram's parse may panic on a bug without ending the loop.
        let parsed = out.supervisor.guard(&component, || {
            parse::parse_message(
                Bytes::copy_from_slice(data),
                Framing::Datagram,
                &out.settings.limits,
            )
        });
        let Some(parsed) = parsed else { continue };
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
}
