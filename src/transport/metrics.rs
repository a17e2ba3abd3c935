//! Counters of the SIP transports for `/metrics` (Prometheus text format): process-wide atomics,
//! bumped by the transport shells, rendered by the dashboard's metrics handler.

use std::sync::atomic::{AtomicU64, Ordering};

/// UDP sends made again because the socket reported an ICMP error of an earlier datagram
/// instead of sending this one (see [`super::udp::send_to`]).
pub static UDP_SEND_RETRIES: AtomicU64 = AtomicU64::new(0);
/// Received messages dropped because the SIP core's inbound queue was full (overload).
pub static INBOUND_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Adds one to a counter.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The counters in Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    for (name, help, c) in [
        (
            "pasarela_udp_send_retries_total",
            "UDP sends repeated after a pending ICMP error of an earlier datagram",
            &UDP_SEND_RETRIES,
        ),
        (
            "pasarela_sip_inbound_dropped_total",
            "received SIP messages dropped because the core's queue was full",
            &INBOUND_DROPPED,
        ),
    ] {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
            c.load(Ordering::Relaxed)
        ));
    }
    out
}
