//! `[enum]` and `[enum_zone]`: ENUM lookups and the zone pasarela serves.

use super::*;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnum {
    pub(crate) suffixes: Option<Vec<String>>,
    pub(crate) nameservers: Option<Vec<String>>,
    pub(crate) budget_ms: Option<u64>,
    pub(crate) max_chain: Option<usize>,
    pub(crate) cache_entries: Option<usize>,
    pub(crate) tree_nameservers: Option<std::collections::BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEnumZone {
    pub(crate) enabled: Option<bool>,
    pub(crate) listen: Option<String>,
    pub(crate) suffix: Option<String>,
    pub(crate) sip_host: Option<String>,
    pub(crate) ttl: Option<u32>,
}

impl RawEnum {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<EnumConfig> {
        let d = EnumConfig::default();
        let suffixes = self.suffixes.unwrap_or(d.suffixes);
        for (i, s) in suffixes.iter().enumerate() {
            check_domain(s, &at.key("suffixes").index(i))?;
        }
        let nameservers = nameserver_list(
            &self.nameservers.unwrap_or_default(),
            &at.key("nameservers"),
        )?;
        let mut tree_nameservers = Vec::new();
        for (tree, list) in self.tree_nameservers.unwrap_or_default() {
            let here = at.key("tree_nameservers").key(&tree);
            check_domain(&tree, &here)?;
            if list.is_empty() {
                return Err(invalid(&here, "needs at least one nameserver"));
            }
            tree_nameservers.push((tree, nameserver_list(&list, &here)?));
        }
        let budget_ms = positive(self.budget_ms, d.budget_ms, &at.key("budget_ms"))?;
        let max_chain = self.max_chain.unwrap_or(d.max_chain);
        if max_chain > 20 {
            return Err(invalid(&at.key("max_chain"), "must be at most 20"));
        }
        Ok(EnumConfig {
            suffixes,
            nameservers,
            budget_ms,
            max_chain,
            tree_nameservers,
            cache_entries: positive(
                self.cache_entries,
                d.cache_entries,
                &at.key("cache_entries"),
            )?,
        })
    }
}

/// Parses nameserver addresses; a bare IP address means port 53.
pub(crate) fn nameserver_list(list: &[String], at: &KeyPath) -> Checked<Vec<SocketAddr>> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    invalid(
                        &at.index(i),
                        format!("`{s}` is not an address or address:port (e.g. `127.0.0.1:53`)"),
                    )
                })
        })
        .collect()
}

/// Checks a domain name as written in the config (`e164.arpa`, `e164.arpa.`).
pub(crate) fn check_domain(s: &str, at: &KeyPath) -> Checked<()> {
    let name = s.trim_end_matches('.');
    if name.is_empty()
        || name
            .split('.')
            .any(|label| label.is_empty() || label.len() > 63)
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(at, format!("`{s}` is not a domain name")));
    }
    Ok(())
}

impl RawEnumZone {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<EnumZoneConfig> {
        let d = EnumZoneConfig::default();
        let listen = match self.listen {
            None => d.listen,
            Some(s) => s.parse().map_err(|_| {
                invalid(
                    &at.key("listen"),
                    format!("`{s}` is not an address:port (e.g. `127.0.0.1:5353`)"),
                )
            })?,
        };
        let suffix = self.suffix.unwrap_or(d.suffix);
        check_domain(&suffix, &at.key("suffix"))?;
        if let Some(h) = &self.sip_host {
            crate::sip::uri::parse_hostport(h).map_err(|e| {
                invalid(
                    &at.key("sip_host"),
                    format!("`{h}` is not host[:port]: {e}"),
                )
            })?;
        }
        Ok(EnumZoneConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            listen,
            suffix,
            sip_host: self.sip_host,
            ttl: positive(self.ttl, d.ttl, &at.key("ttl"))?,
        })
    }
}
