//! Where a message came from or goes to: the transport, the remote address and which of our
//! sockets carries it. Shared by the transaction layer and the transport shells.

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
    /// TCP with TLS (RFC 3261 §26.2; `sips:` URIs, `transport=tls`).
    Tls,
}

impl Proto {
    /// Reliable transports skip retransmissions and the waiting timers (RFC 3261 §17).
    pub fn is_reliable(self) -> bool {
        matches!(self, Proto::Tcp | Proto::Tls)
    }

    /// The transport token used in Via headers.
    pub fn via_token(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::Tls => "TLS",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
            Proto::Tls => "tls",
        })
    }
}

impl Proto {
    /// Whether the transport encrypts the signalling (TLS).
    pub fn is_secure(self) -> bool {
        matches!(self, Proto::Tls)
    }

    /// The transport named by a lower- or upper-case token (`udp`, `TCP`, `tls`).
    pub fn from_token(token: &str) -> Option<Proto> {
        if token.eq_ignore_ascii_case("udp") {
            Some(Proto::Udp)
        } else if token.eq_ignore_ascii_case("tcp") {
            Some(Proto::Tcp)
        } else if token.eq_ignore_ascii_case("tls") {
            Some(Proto::Tls)
        } else {
            None
        }
    }
}

/// The other end of a message, and the local socket it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub proto: Proto,
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.proto, self.remote)
    }
}
