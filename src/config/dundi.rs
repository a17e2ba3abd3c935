//! `[dundi]`: the DUNDi engine, its mappings and peers, mapped onto
//! [`crate::routing::dundi::config::DundiConfig`] with the file:line:key checks.

use super::*;

pub use crate::routing::dundi::config::{DundiConfig, DUNDI_LOCAL_CONTEXT};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDundi {
    pub(crate) enabled: Option<bool>,
    pub(crate) listen: Option<String>,
    pub(crate) eid: Option<String>,
    pub(crate) private_key: Option<PathBuf>,
    pub(crate) public_key: Option<PathBuf>,
    pub(crate) context: Option<String>,
    pub(crate) ttl: Option<u16>,
    pub(crate) cache_secs: Option<u64>,
    pub(crate) key_ttl_secs: Option<u64>,
    pub(crate) ipaddr: Option<String>,
    pub(crate) organization: Option<String>,
    pub(crate) department: Option<String>,
    pub(crate) locality: Option<String>,
    pub(crate) state_prov: Option<String>,
    pub(crate) country: Option<String>,
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    #[serde(default, rename = "mapping")]
    pub(crate) mappings: Vec<RawDundiMapping>,
    #[serde(default, rename = "peer")]
    pub(crate) peers: Vec<RawDundiPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDundiMapping {
    pub(crate) context: String,
    pub(crate) destination: Option<String>,
    pub(crate) tech: Option<String>,
    pub(crate) weight: Option<u16>,
    pub(crate) options: Option<Vec<String>>,
    pub(crate) numbers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDundiPeer {
    pub(crate) eid: String,
    pub(crate) address: String,
    pub(crate) model: Option<String>,
    pub(crate) order: Option<u32>,
    pub(crate) include: Option<Vec<String>>,
    pub(crate) permit: Option<Vec<String>>,
    pub(crate) inkey: Option<PathBuf>,
    pub(crate) outkey: Option<PathBuf>,
    pub(crate) qualify_secs: Option<u64>,
    pub(crate) precache: Option<String>,
    pub(crate) srtp: Option<String>,
}

impl RawDundi {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<DundiConfig> {
        use crate::routing::dundi::{self as dundi, Eid, Mapping, PeerSettings};
        let file_keys = self.keys_set();
        let mut settings = dundi::Settings::default();
        if let Some(l) = &self.listen {
            settings.bind = l.parse().map_err(|_| {
                invalid(
                    &at.key("listen"),
                    format!("`{l}` is not an address:port (e.g. `0.0.0.0:4520`)"),
                )
            })?;
        }
        if let Some(e) = &self.eid {
            settings.eid = Some(e.parse::<Eid>().map_err(|_| {
                invalid(
                    &at.key("eid"),
                    format!("`{e}` is not an EID (six hex bytes, e.g. `02:00:00:00:00:01`)"),
                )
            })?);
        }
        settings.private_key = self.private_key;
        settings.public_key = self.public_key;
        if let Some(t) = self.ttl {
            settings.ttl = positive(Some(t), t, &at.key("ttl"))?;
        }
        if let Some(c) = self.cache_secs {
            settings.cache_ttl =
                std::time::Duration::from_secs(positive(Some(c), c, &at.key("cache_secs"))?);
        }
        if let Some(k) = self.key_ttl_secs {
            settings.key_ttl =
                std::time::Duration::from_secs(positive(Some(k), k, &at.key("key_ttl_secs"))?);
        }
        settings.ipaddr = self.ipaddr.unwrap_or_default();
        settings.entity = dundi::EntityInfo {
            organization: self.organization.unwrap_or_default(),
            department: self.department.unwrap_or_default(),
            locality: self.locality.unwrap_or_default(),
            state_prov: self.state_prov.unwrap_or_default(),
            country: self.country.unwrap_or_default(),
            email: self.email.unwrap_or_default(),
            phone: self.phone.unwrap_or_default(),
            ..Default::default()
        };
        let mut numbers = Vec::new();
        for (i, m) in self.mappings.into_iter().enumerate() {
            let here = at.key("mapping").index(i);
            if m.context.trim().is_empty() {
                return Err(invalid(&here.key("context"), "must not be empty"));
            }
            let mut mapping = Mapping::sip(
                m.context.trim(),
                DUNDI_LOCAL_CONTEXT,
                m.destination
                    .as_deref()
                    .unwrap_or("${NUMBER}@${IPADDR}:5060"),
            );
            if let Some(t) = &m.tech {
                mapping.tech = t
                    .parse()
                    .map_err(|e: dundi::SettingsError| invalid(&here.key("tech"), e.to_string()))?;
            }
            mapping.weight = m.weight.unwrap_or(0);
            if let Some(opts) = &m.options {
                let (flags, no_partial) = dundi::parse_mapping_options(opts)
                    .map_err(|e| invalid(&here.key("options"), e.to_string()))?;
                mapping.options = flags;
                mapping.no_partial = no_partial;
            }
            if let Some(list) = m.numbers {
                for (j, p) in list.iter().enumerate() {
                    if p.parse::<dundi::Pattern>().is_err() {
                        return Err(invalid(
                            &here.key("numbers").index(j),
                            format!("`{p}` is not a number or pattern (e.g. `4930123456`, `_4930123XXX`)"),
                        ));
                    }
                }
                numbers.push((DUNDI_LOCAL_CONTEXT.to_owned(), list));
            }
            settings.mappings.push(mapping);
        }
        let context = self.context.unwrap_or_else(|| "e164".to_owned());
        for (i, p) in self.peers.into_iter().enumerate() {
            let here = at.key("peer").index(i);
            let eid: Eid = p.eid.parse().map_err(|_| {
                invalid(
                    &here.key("eid"),
                    format!(
                        "`{}` is not an EID (six hex bytes, e.g. `02:00:00:00:00:01`)",
                        p.eid
                    ),
                )
            })?;
            let address = dundi::parse_peer_address(&p.address)
                .map_err(|e| invalid(&here.key("address"), e.to_string()))?;
            let mut peer = PeerSettings::new(eid, address, &context);
            if let Some(m) = &p.model {
                peer.model = m.parse().map_err(|e: dundi::SettingsError| {
                    invalid(&here.key("model"), e.to_string())
                })?;
            }
            peer.order = p.order.unwrap_or(0);
            if let Some(v) = p.include {
                peer.include = v;
            }
            if let Some(v) = p.permit {
                peer.permit = v;
            }
            peer.inkey = p.inkey;
            peer.outkey = p.outkey;
            peer.precache = match p.precache.as_deref().map(str::trim) {
                None | Some("none") => None,
                Some(m) => Some(m.parse().map_err(|_: dundi::SettingsError| {
                    invalid(
                        &here.key("precache"),
                        format!("`{m}`: expected none, outbound, inbound or symmetric"),
                    )
                })?),
            };
            peer.qualify = p
                .qualify_secs
                .filter(|s| *s > 0)
                .map(std::time::Duration::from_secs);
            settings.peers.push(peer);
        }
        if let Err(e) = settings.validate() {
            let key = if e.0.contains("peer") {
                "peer"
            } else {
                "mapping"
            };
            return Err(invalid(&at.key(key), e.to_string()));
        }
        Ok(DundiConfig {
            enabled: self.enabled.unwrap_or(false),
            context,
            settings,
            numbers,
            file_keys,
        })
    }

    /// The names of the scalar keys this `[dundi]` section sets.
    fn keys_set(&self) -> Vec<String> {
        let set = [
            ("enabled", self.enabled.is_some()),
            ("listen", self.listen.is_some()),
            ("eid", self.eid.is_some()),
            ("context", self.context.is_some()),
            ("ttl", self.ttl.is_some()),
            ("cache_secs", self.cache_secs.is_some()),
            ("key_ttl_secs", self.key_ttl_secs.is_some()),
            ("ipaddr", self.ipaddr.is_some()),
            ("organization", self.organization.is_some()),
            ("department", self.department.is_some()),
            ("locality", self.locality.is_some()),
            ("state_prov", self.state_prov.is_some()),
            ("country", self.country.is_some()),
            ("email", self.email.is_some()),
            ("phone", self.phone.is_some()),
        ];
        set.iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| (*k).to_owned())
            .collect()
    }
}
