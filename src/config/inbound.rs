//! `[inbound]` and `[[ring_group]]`: where calls from outside ring.

use super::*;

pub use crate::callctl::inbound::InboundConfig;
pub use crate::store::config::{RingGroupConfig, RingStrategy};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInbound {
    pub(crate) public: Option<bool>,
    pub(crate) peer_calls_per_minute: Option<u32>,
    pub(crate) peer_max_calls: Option<u32>,
    pub(crate) route: Option<Vec<RawInboundRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInboundRoute {
    pub(crate) number: String,
    pub(crate) destination: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRingGroup {
    pub(crate) name: String,
    pub(crate) members: Vec<String>,
    pub(crate) strategy: Option<String>,
    pub(crate) member_timeout: Option<u32>,
}

pub(crate) fn validate_ring_groups(raw: Vec<RawRingGroup>) -> Checked<Vec<RingGroupConfig>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, g) in raw.into_iter().enumerate() {
        let at = KeyPath::new("ring_group").index(i);
        if g.name.trim().is_empty() || digits(&g.name) || g.name.chars().any(|c| c.is_control()) {
            return Err(invalid(
                &at.key("name"),
                "must be a name (not only digits: those are extensions)",
            ));
        }
        if !seen.insert(g.name.clone()) {
            return Err(invalid(
                &at.key("name"),
                format!("ring group `{}` is defined twice", g.name),
            ));
        }
        if g.members.is_empty() {
            return Err(invalid(
                &at.key("members"),
                "must name at least one extension",
            ));
        }
        for (j, m) in g.members.iter().enumerate() {
            if !digits(m) {
                return Err(invalid(
                    &at.key("members").index(j),
                    format!("`{m}` is not an extension number"),
                ));
            }
        }
        let strategy = match g.strategy.as_deref() {
            None | Some("all") => RingStrategy::All,
            Some("order") => RingStrategy::Order,
            Some(other) => {
                return Err(invalid(
                    &at.key("strategy"),
                    format!("`{other}` is not one of `all`, `order`"),
                ))
            }
        };
        let member_timeout_secs = g.member_timeout.unwrap_or(15);
        if member_timeout_secs == 0 {
            return Err(invalid(
                &at.key("member_timeout"),
                "must be at least 1 second",
            ));
        }
        out.push(RingGroupConfig {
            name: g.name,
            members: g.members,
            strategy,
            member_timeout_secs,
        });
    }
    Ok(out)
}

impl RawInbound {
    pub(crate) fn validate(
        self,
        at: &KeyPath,
        groups: &[RingGroupConfig],
    ) -> Checked<InboundConfig> {
        let d = InboundConfig::default();
        let mut routes = Vec::new();
        for (i, r) in self.route.into_iter().flatten().enumerate() {
            let here = at.key("route").index(i);
            if r.number.parse::<crate::routing::E164>().is_err() {
                return Err(invalid(
                    &here.key("number"),
                    format!("`{}` is not an E.164 number (+ and digits)", r.number),
                ));
            }
            if !digits(&r.destination) && !groups.iter().any(|g| g.name == r.destination) {
                return Err(invalid(
                    &here.key("destination"),
                    format!(
                        "`{}` is neither an extension number nor a [[ring_group]]",
                        r.destination
                    ),
                ));
            }
            routes.push((r.number, r.destination));
        }
        Ok(InboundConfig {
            routes,
            public: self.public.unwrap_or(d.public),
            peer_calls_per_minute: positive(
                self.peer_calls_per_minute,
                d.peer_calls_per_minute,
                &at.key("peer_calls_per_minute"),
            )?,
            peer_max_calls: positive(
                self.peer_max_calls,
                d.peer_max_calls,
                &at.key("peer_max_calls"),
            )?,
        })
    }
}
