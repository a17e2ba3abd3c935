//! `[sip]`: listen addresses, transports, timers, registration limits.

use super::*;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSip {
    pub(crate) listen: Option<Vec<String>>,
    pub(crate) domain: Option<String>,
    pub(crate) t1_ms: Option<u64>,
    pub(crate) t2_ms: Option<u64>,
    pub(crate) t4_ms: Option<u64>,
    pub(crate) min_expires: Option<u32>,
    pub(crate) max_expires: Option<u32>,
    pub(crate) default_expires: Option<u32>,
    pub(crate) nonce_ttl_secs: Option<u64>,
    pub(crate) tcp_idle_secs: Option<u64>,
    pub(crate) max_message_bytes: Option<usize>,
    pub(crate) user_agent: Option<String>,
    pub(crate) digest_algorithms: Option<Vec<String>>,
}

impl RawSip {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<SipConfig> {
        let d = SipConfig::default();
        let listen = match self.listen {
            None => d.listen,
            Some(list) => {
                if list.is_empty() {
                    return Err(invalid(&at.key("listen"), "needs at least one address"));
                }
                let mut seen = HashSet::new();
                let mut out = Vec::with_capacity(list.len());
                for (i, s) in list.iter().enumerate() {
                    let here = at.key("listen").index(i);
                    let addr: ListenAddr = s.parse().map_err(|m: String| invalid(&here, m))?;
                    if !seen.insert(addr) {
                        return Err(invalid(&here, format!("`{s}` is listed twice")));
                    }
                    out.push(addr);
                }
                out
            }
        };
        let domain = self.domain.unwrap_or(d.domain);
        if domain.is_empty() || domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                &at.key("domain"),
                "must be a non-empty host name without spaces",
            ));
        }
        let t1_ms = positive(self.t1_ms, d.t1_ms, &at.key("t1_ms"))?;
        let t2_ms = positive(self.t2_ms, d.t2_ms, &at.key("t2_ms"))?;
        let t4_ms = positive(self.t4_ms, d.t4_ms, &at.key("t4_ms"))?;
        if t1_ms > t2_ms {
            let key = if self.t1_ms.is_some() {
                "t1_ms"
            } else {
                "t2_ms"
            };
            return Err(invalid(
                &at.key(key),
                format!("t1_ms ({t1_ms}) must not exceed t2_ms ({t2_ms})"),
            ));
        }
        let min_expires = positive(self.min_expires, d.min_expires, &at.key("min_expires"))?;
        let max_expires = positive(self.max_expires, d.max_expires, &at.key("max_expires"))?;
        if min_expires > max_expires {
            let key = if self.min_expires.is_some() {
                "min_expires"
            } else {
                "max_expires"
            };
            return Err(invalid(
                &at.key(key),
                format!("min_expires ({min_expires}) must not exceed max_expires ({max_expires})"),
            ));
        }
        let default_expires = match self.default_expires {
            Some(v) => v,
            None => d.default_expires.clamp(min_expires, max_expires),
        };
        if !(min_expires..=max_expires).contains(&default_expires) {
            return Err(invalid(
                &at.key("default_expires"),
                format!(
                    "must lie between min_expires ({min_expires}) and max_expires ({max_expires})"
                ),
            ));
        }
        let nonce_ttl_secs = positive(
            self.nonce_ttl_secs,
            d.nonce_ttl_secs,
            &at.key("nonce_ttl_secs"),
        )?;
        let tcp_idle_secs = positive(
            self.tcp_idle_secs,
            d.tcp_idle_secs,
            &at.key("tcp_idle_secs"),
        )?;
        let max_message_bytes = match self.max_message_bytes {
            Some(v) if v < 1024 => {
                return Err(invalid(
                    &at.key("max_message_bytes"),
                    "must be at least 1024",
                ))
            }
            Some(v) => v,
            None => d.max_message_bytes,
        };
        let user_agent = self.user_agent.unwrap_or(d.user_agent);
        if user_agent.chars().any(|c| c.is_control()) {
            return Err(invalid(
                &at.key("user_agent"),
                "must not contain control characters",
            ));
        }
        let digest_algorithms = match self.digest_algorithms {
            None => d.digest_algorithms,
            Some(names) => {
                let mut algs = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    match name.parse::<crate::sip::auth::Algorithm>() {
                        Ok(
                            a @ (crate::sip::auth::Algorithm::Md5
                            | crate::sip::auth::Algorithm::Sha256),
                        ) => {
                            if !algs.contains(&a) {
                                algs.push(a);
                            }
                        }
                        _ => {
                            return Err(invalid(
                                &at.key("digest_algorithms").index(i),
                                format!(
                                "unknown digest algorithm `{name}` (use \"SHA-256\" or \"MD5\")"
                            ),
                            ))
                        }
                    }
                }
                if algs.is_empty() {
                    return Err(invalid(
                        &at.key("digest_algorithms"),
                        "must name at least one algorithm",
                    ));
                }
                algs
            }
        };
        Ok(SipConfig {
            listen,
            domain,
            t1_ms,
            t2_ms,
            t4_ms,
            min_expires,
            max_expires,
            default_expires,
            nonce_ttl_secs,
            tcp_idle_secs,
            max_message_bytes,
            user_agent,
            digest_algorithms,
        })
    }
}
