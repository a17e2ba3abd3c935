//! Builds the trust model of `serve` ([`InboundPolicy`]) from the configuration, at start and on
//! every reload: the trunks' `sources` (host names resolved here, with a bounded wait), the
//! DUNDi peers' addresses, `[inbound]`, and the numbering plan.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
use crate::sip::uri::Host;
use crate::store::ExtensionRow;

use crate::callctl::inbound::{InboundPolicy, InboundRoute, Net, SourceSpec, TrunkSource};

/// How long resolving one host name may take.
const RESOLVE_WAIT: Duration = Duration::from_secs(3);

async fn resolve(host: &str, port: u16) -> Vec<SocketAddr> {
    match tokio::time::timeout(RESOLVE_WAIT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            tracing::warn!(%host, "trunk source not resolved: {e}");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(%host, "trunk source not resolved within {RESOLVE_WAIT:?}");
            Vec::new()
        }
    }
}

/// The policy for `config`; `extensions` give the numbering plan its extension length.
pub async fn build(config: &Config, extensions: &[ExtensionRow]) -> InboundPolicy {
    let modems: Vec<&str> = config
        .modems
        .iter()
        .map(|m| m.line.line.name.as_str())
        .collect();
    let mut trunks = Vec::new();
    for t in config
        .trunks
        .iter()
        .filter(|t| t.enabled && !modems.contains(&t.name.as_str()))
    {
        let mut nets = Vec::new();
        if t.sources.is_empty() {
            let port = t.uri.port.unwrap_or(5060);
            match &t.uri.host {
                Host::Name(name) => {
                    nets.extend(resolve(name, port).await.into_iter().map(Net::socket))
                }
                other => {
                    if let Some(ip) = other.ip() {
                        nets.push(Net::socket(SocketAddr::new(ip, port)));
                    }
                }
            }
        } else {
            for s in &t.sources {
                match SourceSpec::parse(s) {
                    Ok(SourceSpec::Net(n)) => nets.push(n),
                    Ok(SourceSpec::Host(h)) => {
                        nets.extend(resolve(&h, 0).await.into_iter().map(|a| Net::ip(a.ip())))
                    }
                    Err(e) => tracing::warn!(trunk = %t.name, "source ignored: {e}"),
                }
            }
        }
        if nets.is_empty() {
            tracing::warn!(trunk = %t.name, "no source address: calls from this trunk cannot be recognised");
        } else {
            tracing::info!(trunk = %t.name, sources = ?nets, "trunk calls recognised by source address");
        }
        trunks.push(TrunkSource {
            name: t.name.clone(),
            nets,
            number_format: t.number_format,
        });
    }
    let peers = if config.dundi.enabled {
        config
            .dundi
            .settings
            .peers
            .iter()
            .map(|p| (p.address.ip(), p.eid.to_string()))
            .collect()
    } else {
        Vec::new()
    };
    let group = |g: &crate::config::RingGroupConfig, number: &str| InboundRoute {
        number: number.to_owned(),
        label: format!("group {}", g.name),
        members: g.members.clone(),
        member_timeout: (g.strategy == crate::config::RingStrategy::Order)
            .then(|| Duration::from_secs(u64::from(g.member_timeout_secs))),
    };
    let routes = config
        .inbound
        .routes
        .iter()
        .map(
            |(number, dest)| match config.ring_groups.iter().find(|g| &g.name == dest) {
                Some(g) => group(g, number),
                None => InboundRoute {
                    number: number.clone(),
                    label: format!("extension {dest}"),
                    members: vec![dest.clone()],
                    member_timeout: None,
                },
            },
        )
        .collect();
    let groups = config
        .ring_groups
        .iter()
        .map(|g| (g.name.clone(), group(g, "")))
        .collect();
    InboundPolicy {
        routes,
        groups,
        trunks,
        peers,
        public: config.inbound.public,
        calls_per_minute: config.inbound.peer_calls_per_minute,
        max_calls: config.inbound.peer_max_calls,
        plan: Some(crate::routing::setup::numbering_plan(
            &config.numbering,
            extensions,
        )),
    }
}
