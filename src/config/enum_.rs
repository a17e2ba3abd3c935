//! `[enum]` and `[enum_zone]`: ENUM lookups and the zone pasarela serves, mapped onto
//! [`crate::routing::enum_config`] with the file:line:key checks.

use super::*;

pub use crate::routing::enum_config::{EnumConfig, EnumZoneConfig};

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
