//! The settings of the SIP transports and the stack above them (`[sip]`: listen addresses,
//! timers, registration limits) and of TLS (`[tls]`: the office's certificate and whom outgoing
//! TLS trusts). `config::sip` and `config::tls` map the file onto them with the file:line:key
//! checks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

/// The `User-Agent`/`Server` header value used unless `sip.user_agent` is set.
pub const DEFAULT_USER_AGENT: &str = concat!("pasarela/", env!("CARGO_PKG_VERSION"));

/// A SIP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// SIP over UDP.
    Udp,
    /// SIP over TCP.
    Tcp,
    /// SIP over TLS (`tls:ADDR:PORT`, port 5061 when left out).
    Tls,
}

/// One address the SIP stack listens on, written `transport:address:port` in the file
/// (`"udp:127.0.0.1:5060"`, `"tcp:[::1]:5060"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    /// The transport protocol.
    pub transport: Transport,
    /// The local socket address.
    pub addr: SocketAddr,
}

/// `[sip]`: signalling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SipConfig {
    /// Addresses to listen on (`listen`).
    pub listen: Vec<ListenAddr>,
    /// The SIP domain, also the digest-authentication realm (`domain`).
    pub domain: String,
    /// RFC 3261 T1, the RTT estimate, in milliseconds (`t1_ms`, default 500).
    pub t1_ms: u64,
    /// RFC 3261 T2, the maximum retransmit interval, in milliseconds (`t2_ms`, default 4000).
    pub t2_ms: u64,
    /// RFC 3261 T4, the maximum lifetime of a message in the network (`t4_ms`, default 5000).
    pub t4_ms: u64,
    /// Shortest registration accepted, in seconds (`min_expires`, default 60).
    pub min_expires: u32,
    /// Longest registration granted, in seconds (`max_expires`, default 3600).
    pub max_expires: u32,
    /// Registration length when a REGISTER asks for none (`default_expires`, default 3600).
    pub default_expires: u32,
    /// How long a digest nonce stays valid, in seconds (`nonce_ttl_secs`, default 300).
    pub nonce_ttl_secs: u64,
    /// Idle TCP connections are closed after this many seconds (`tcp_idle_secs`, default 3600).
    pub tcp_idle_secs: u64,
    /// Largest SIP message accepted, in bytes (`max_message_bytes`, default 65535).
    pub max_message_bytes: usize,
    /// `User-Agent`/`Server` header value (`user_agent`, default `pasarela/<version>`).
    pub user_agent: String,
    /// Digest algorithms offered in challenges, preferred first (`digest_algorithms`, default
    /// `["MD5"]`). Many deployed phones (baresip 1.0, sipp 3.6) give up on a challenge list that
    /// holds SHA-256, so SHA-256 (RFC 8760) is opt-in: `["SHA-256", "MD5"]`. Credentials made
    /// with either algorithm are accepted whatever was offered.
    pub digest_algorithms: Vec<crate::sip::auth::Algorithm>,
}

impl Default for SipConfig {
    fn default() -> Self {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5060);
        SipConfig {
            listen: vec![
                ListenAddr {
                    transport: Transport::Udp,
                    addr: any,
                },
                ListenAddr {
                    transport: Transport::Tcp,
                    addr: any,
                },
            ],
            domain: "pasarela.local".to_owned(),
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            nonce_ttl_secs: 300,
            tcp_idle_secs: 3600,
            max_message_bytes: 65535,
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            digest_algorithms: vec![crate::sip::auth::Algorithm::Md5],
        }
    }
}
/// `[tls]`: certificates for SIP over TLS and the HTTPS dashboard (see
/// [`crate::transport::certs`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsConfig {
    /// The office's certificate chain, PEM (`cert`); with `key`. Without both, a self-signed
    /// certificate is made on first start and kept beside the store.
    pub cert: Option<PathBuf>,
    /// Its private key, PEM (`key`).
    pub key: Option<PathBuf>,
    /// Extra CA certificates (PEM files) outgoing TLS trusts besides the system roots
    /// (`ca_files`).
    pub ca_files: Vec<PathBuf>,
    /// Trust per SIP domain: `[[tls.peer]]` tables and the `tls_ca`/`tls_pin` keys of a
    /// `[[trunk]]` (keyed by the host of its `uri`).
    pub peers: Vec<TlsPeer>,
}

/// How the certificate of one SIP domain is checked on outgoing TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The SIP domain (the host of the URI called), lower case.
    pub domain: String,
    /// A CA file (PEM) that signs its certificate, instead of the system roots (`ca`).
    pub ca: Option<PathBuf>,
    /// The SHA-256 of its certificate (DER), hex; a matching certificate is taken whatever
    /// signed it, but its name must still be the domain (`pin`).
    pub pin: Option<[u8; 32]>,
}

impl Transport {
    /// The lower-case name used in the config file and in `Via` (`udp`, `tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            _ => Err(format!(
                "unknown transport `{s}` (expected `udp`, `tcp` or `tls`)"
            )),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((transport, addr)) = s.split_once(':') else {
            return Err(format!(
                "`{s}` is not `transport:address:port` (e.g. `udp:0.0.0.0:5060`)"
            ));
        };
        let transport: Transport = transport.parse()?;
        // `tls:ADDR` listens on the SIP-over-TLS port.
        let with_port;
        let bare_ip =
            addr.parse::<IpAddr>().is_ok() || (addr.starts_with('[') && addr.ends_with(']'));
        let addr = if transport == Transport::Tls && bare_ip {
            with_port = format!("{addr}:5061");
            with_port.as_str()
        } else {
            addr
        };
        let addr = addr.parse().map_err(|_| {
            format!("`{addr}` is not an address:port (e.g. `127.0.0.1:5060` or `[::1]:5060`)")
        })?;
        Ok(ListenAddr { transport, addr })
    }
}
