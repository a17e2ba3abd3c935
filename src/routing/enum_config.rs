//! `[enum]` and `[enum_zone]` as routing takes them: the ENUM trees and nameservers asked, and
//! the private zone the embedded DNS server publishes. `config::enum_` maps the file onto them
//! with the file:line:key checks.

use std::net::{Ipv4Addr, SocketAddr};

/// `[enum]`: ENUM lookups.
#[derive(Debug, Clone, PartialEq)]
pub struct EnumConfig {
    /// ENUM trees to query, in order (`suffixes`, default `["e164.arpa"]`).
    pub suffixes: Vec<String>,
    /// DNS servers to ask (`nameservers`); empty means the system resolver. A bare IP address
    /// in the file means port 53.
    pub nameservers: Vec<SocketAddr>,
    /// Total time ENUM and DUNDi may take per call, in milliseconds (`budget_ms`, default 500).
    pub budget_ms: u64,
    /// Non-terminal NAPTR rules followed per lookup before giving up (`max_chain`, default 5).
    pub max_chain: usize,
    /// Answers kept in the ENUM cache (`cache_entries`, default 10000).
    pub cache_entries: usize,
    /// Nameservers for particular trees, e.g. a private tree served by its own DNS server
    /// (`[enum.tree_nameservers]`, `"e164.office.test" = ["127.0.0.1:5353"]`); other trees use
    /// `nameservers`.
    pub tree_nameservers: Vec<(String, Vec<SocketAddr>)>,
}

/// `[enum_zone]`: the private ENUM zone served by the embedded DNS server (off by default).
#[derive(Debug, Clone, PartialEq)]
pub struct EnumZoneConfig {
    /// Whether the zone is served (`enabled`, default false).
    pub enabled: bool,
    /// UDP and TCP address of the DNS server (`listen`, default `127.0.0.1:5353`).
    pub listen: SocketAddr,
    /// The ENUM tree the DIDs are published under (`suffix`, default `e164.arpa`).
    pub suffix: String,
    /// Host (and optional `:port`) put into the published `sip:+DID@host` URIs (`sip_host`,
    /// default: `sip.domain`).
    pub sip_host: Option<String>,
    /// TTL of the published records, in seconds (`ttl`, default 300).
    pub ttl: u32,
}

impl Default for EnumZoneConfig {
    fn default() -> Self {
        EnumZoneConfig {
            enabled: false,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 5353)),
            suffix: "e164.arpa".to_owned(),
            sip_host: None,
            ttl: 300,
        }
    }
}

impl Default for EnumConfig {
    fn default() -> Self {
        EnumConfig {
            suffixes: vec!["e164.arpa".to_owned()],
            nameservers: Vec::new(),
            budget_ms: 500,
            max_chain: 5,
            cache_entries: 10_000,
            tree_nameservers: Vec::new(),
        }
    }
}
