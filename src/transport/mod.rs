//! Thin tokio shells around the sans-IO SIP core: they own the UDP sockets and TCP
//! connections, cut bytes into messages, answer unparsable requests statelessly, and hand
//! parsed messages to the core over a channel. Sending goes through [`Outbound`]; a send that
//! cannot be carried out (a refused or timed-out TCP connection, a failed TLS handshake, an ICMP
//! unreachable answering a UDP datagram) is reported on a second
//! channel ([`TransportFailure`], [`Bound::failures`]) so that the transaction layer ends the
//! transactions towards that peer at once instead of waiting for Timer B. The receive loops
//! run under the [`Supervisor`]: a loop that panics or ends is started again, and one that
//! keeps dying marks the process unhealthy.

pub mod certs;
pub mod config;
pub mod metrics;
pub mod tcp;
pub mod tls;
pub mod udp;
mod udp_batch;
mod udp_errors;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::sip::message::Message;
use crate::sip::parse::{Limits, ParseError};
use crate::sip::peer::{Peer, Proto};
use crate::supervise::Supervisor;

/// What the transports hand to the SIP core.
#[derive(Debug)]
pub struct Inbound {
    pub message: Message,
    pub peer: Peer,
    /// When the transport handed it on: the SIP core measures its queue delay from this
    /// (overload admission).
    pub received: std::time::Instant,
}

/// A send that failed: the transactions towards `peer` (transport and remote address) cannot
/// go on, and why (for the reason phrase a caller sees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportFailure {
    pub peer: Peer,
    pub reason: String,
}

/// Failures queued for the core at most; more are dropped (their transactions time out).
const FAILURE_QUEUE: usize = 1024;

/// Settings shared by the transport tasks.
#[derive(Debug, Clone)]
pub struct TransportSettings {
    pub limits: Limits,
    pub tcp_idle: std::time::Duration,
    /// The Server header of stateless error responses.
    pub server_name: String,
    /// Caps on accepted TCP connections (TLS connections count among them).
    pub tcp_caps: TcpCaps,
    /// The certificate and trust of SIP over TLS; `None`: no TLS (listening or calling).
    pub tls: Option<certs::TlsContext>,
}

/// Caps on the TCP connections peers open to us (`[limits]`): a flood of idle connections must
/// not exhaust file descriptors or memory.
#[derive(Debug, Clone, Copy)]
pub struct TcpCaps {
    /// Accepted connections open at once.
    pub total: usize,
    /// Accepted connections open at once from one address.
    pub per_source: usize,
    /// A connection that has not sent a valid SIP request within this is closed.
    pub first_request: std::time::Duration,
}

impl Default for TcpCaps {
    fn default() -> Self {
        TcpCaps {
            total: 1024,
            per_source: 32,
            first_request: std::time::Duration::from_secs(10),
        }
    }
}

/// Open connections (TCP and TLS) by (transport, local, remote).
type ConnMap = Arc<Mutex<HashMap<(Proto, SocketAddr, SocketAddr), mpsc::Sender<Bytes>>>>;

/// Sends bytes to peers: over the UDP socket bound to `peer.local`, or over the TCP connection
/// to `peer.remote` (opened if there is none). Cheap to clone; never blocks.
#[derive(Clone)]
pub struct Outbound {
    /// Keyed by our own bound addresses (never by wire data): Fx, not SipHash, for the look-up
    /// on every datagram sent.
    udp: Arc<crate::hashing::IdMap<SocketAddr, Arc<UdpSocket>>>,
    tcp: ConnMap,
    /// Accepted TCP connections per source address (for [`TcpCaps`]).
    accepted: Arc<tcp::Accepted>,
    settings: Arc<TransportSettings>,
    inbound: mpsc::Sender<Inbound>,
    failures: mpsc::Sender<TransportFailure>,
    supervisor: Supervisor,
}

impl Outbound {
    /// Reports that nothing can be sent to `peer` (never blocks; dropped when the core is far
    /// behind).
    pub(crate) fn fail(&self, peer: Peer, reason: impl Into<String>) {
        let failure = TransportFailure {
            peer,
            reason: reason.into(),
        };
        if self.failures.try_send(failure).is_err() {
            tracing::debug!(%peer, "transport failure not reported: queue full");
        }
    }

    /// Hands a received datagram's message to the core without waiting; when its queue is
    /// full (overload) the message is dropped, counted, and the sender's retransmission or
    /// a later 503 takes over.
    pub(crate) fn deliver(&self, inbound: Inbound) {
        let peer = inbound.peer;
        if self.inbound.try_send(inbound).is_err() {
            let dropped =
                metrics::INBOUND_DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // One line per power of two: a flood must not flood the log as well.
            if dropped.is_power_of_two() || dropped == 0 {
                tracing::warn!(%peer, dropped = dropped + 1, "SIP core overloaded: datagram dropped");
            }
        }
    }

    pub fn send(&self, peer: Peer, data: Bytes) {
        match peer.proto {
            Proto::Udp => self.send_udp(peer, &data),
            Proto::Tcp => tcp::send(self, peer, data),
            Proto::Tls => tls::send(self, peer, data),
        }
    }

    fn send_udp(&self, peer: Peer, data: &[u8]) {
        let socket = self.udp.get(&peer.local).or_else(|| {
            self.udp.values().find(|s| {
                s.local_addr()
                    .is_ok_and(|a| a.is_ipv4() == peer.remote.is_ipv4())
            })
        });
        let Some(socket) = socket else {
            tracing::warn!(%peer, "no UDP socket to send from");
            return;
        };
        match udp::try_send_to(socket, data, peer.remote) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let socket = socket.clone();
                let data = data.to_vec();
                tokio::spawn(async move {
                    if let Err(e) = udp::send_to(&socket, &data, peer.remote).await {
                        tracing::debug!(%peer, "UDP send failed: {e}");
                    }
                });
            }
            Err(e) => tracing::debug!(%peer, "UDP send failed: {e}"),
        }
    }
}

/// The inbound queue's length for an overload admission that refuses what waited longer than
/// `queue_delay`: about what the core handles in that time (some 20 messages per ms on this
/// class of machine), so the queue never holds more than admission would still take; clamped
/// to 1 024..32 768. Beyond it datagrams are dropped ([`metrics::INBOUND_DROPPED`]) instead of
/// buffered, which keeps memory bounded under any offered load.
pub fn inbound_queue_len(queue_delay: std::time::Duration) -> usize {
    let per_ms = 20u128;
    (queue_delay.as_millis().saturating_mul(per_ms)).clamp(1024, 32_768) as usize
}

/// Answers a request that could not be parsed (when it can be answered at all).
fn reject_unparsable(err: &ParseError, settings: &TransportSettings) -> Option<Vec<u8>> {
    if err.is_response {
        tracing::debug!("dropping malformed response: {}", err.reason);
        return None;
    }
    tracing::info!("refusing malformed request: {} {}", err.status, err.reason);
    err.response_bytes(&settings.server_name)
}

/// The bound sockets, what `serve` reports, and the handle to send with.
pub struct Bound {
    pub outbound: Outbound,
    pub local_addrs: Vec<(Proto, SocketAddr)>,
    /// Sends that failed, for [`crate::sip::transaction::TransactionLayer::transport_error`].
    pub failures: mpsc::Receiver<TransportFailure>,
}

/// Binds every listen address and starts the receive tasks, supervised by the process's
/// [`Supervisor::global`].
pub async fn bind(
    listen: &[(Proto, SocketAddr)],
    settings: TransportSettings,
    inbound: mpsc::Sender<Inbound>,
) -> std::io::Result<Bound> {
    bind_supervised(listen, settings, inbound, Supervisor::global().clone()).await
}

/// Like [`bind`], with the receive tasks supervised by `supervisor`.
pub async fn bind_supervised(
    listen: &[(Proto, SocketAddr)],
    settings: TransportSettings,
    inbound: mpsc::Sender<Inbound>,
    supervisor: Supervisor,
) -> std::io::Result<Bound> {
    let settings = Arc::new(settings);
    let mut udp = crate::hashing::IdMap::default();
    let mut listeners = Vec::new();
    let mut tls_listeners = Vec::new();
    let mut local_addrs = Vec::new();
    for (proto, addr) in listen {
        match proto {
            Proto::Udp => {
                let socket = udp::bind(*addr)?;
                let local = socket.local_addr()?;
                local_addrs.push((Proto::Udp, local));
                udp.insert(local, Arc::new(socket));
            }
            Proto::Tcp => {
                let listener = tcp::bind(*addr)?;
                local_addrs.push((Proto::Tcp, listener.local_addr()?));
                listeners.push(listener);
            }
            Proto::Tls => {
                if settings
                    .tls
                    .as_ref()
                    .and_then(|t| t.server_config())
                    .is_none()
                {
                    return Err(std::io::Error::other(format!(
                        "tls:{addr}: no TLS certificate loaded"
                    )));
                }
                let listener = tcp::bind(*addr)?;
                local_addrs.push((Proto::Tls, listener.local_addr()?));
                tls_listeners.push(listener);
            }
        }
    }
    let (failures_tx, failures) = mpsc::channel(FAILURE_QUEUE);
    let outbound = Outbound {
        udp: Arc::new(udp),
        tcp: Arc::new(Mutex::new(HashMap::new())),
        accepted: Arc::new(tcp::Accepted::default()),
        settings,
        inbound,
        failures: failures_tx,
        supervisor: supervisor.clone(),
    };
    // Each loop is supervised: started again when it panics or ends, given up (and the
    // process reported unhealthy) when it keeps dying.
    for (local, socket) in outbound.udp.iter() {
        let (socket, out) = (socket.clone(), outbound.clone());
        supervisor.spawn_forever(udp::component_name(*local), move || {
            udp::receive_loop(socket.clone(), out.clone())
        });
    }
    for listener in listeners {
        let Ok(local) = listener.local_addr() else {
            continue;
        };
        let (listener, out) = (Arc::new(listener), outbound.clone());
        supervisor.spawn_forever(tcp::component_name(local), move || {
            tcp::accept_loop(listener.clone(), out.clone())
        });
    }
    for listener in tls_listeners {
        let Ok(local) = listener.local_addr() else {
            continue;
        };
        let (listener, out) = (Arc::new(listener), outbound.clone());
        supervisor.spawn_forever(tls::component_name(local), move || {
            tcp::accept_loop_with(listener.clone(), out.clone(), Proto::Tls)
        });
    }
    Ok(Bound {
        outbound,
        local_addrs,
        failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_inbound_queue_follows_the_queue_delay_within_bounds() {
        assert_eq!(inbound_queue_len(Duration::from_millis(200)), 4000);
        assert_eq!(inbound_queue_len(Duration::from_millis(1)), 1024);
        assert_eq!(inbound_queue_len(Duration::from_secs(3600)), 32_768);
    }
}
