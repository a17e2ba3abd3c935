//! Builds the trust model of `serve` ([`InboundPolicy`]) from the configuration, at start and on
//! every reload: the trunks' `sources` (host names resolved here, with a bounded wait), the
//! DUNDi peers' addresses (of the node as it runs: on from the file or the dashboard, with the
//! file's and the dashboard's enabled peers), `[inbound]`, and the numbering plan.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::Config;
use crate::routing::dundi::OfficeDundi;
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

/// The DUNDi peers whose calls are named as theirs: those of the running node's settings (the
/// file's and the dashboard's enabled peers) when DUNDi is on, from the file or the dashboard;
/// without a node, the file's when the file turns DUNDi on.
pub fn trusted_peers(config: &Config, node: Option<&OfficeDundi>) -> Vec<(IpAddr, String)> {
    let (on, peers) = match node {
        Some(n) => {
            let (on, settings) = n.current();
            (on, settings.peers)
        }
        None => (config.dundi.enabled, config.dundi.settings.peers.clone()),
    };
    if !on {
        return Vec::new();
    }
    peers
        .iter()
        .map(|p| (p.address.ip(), p.eid.to_string()))
        .collect()
}

/// The policy for `config`; `extensions` give the numbering plan its extension length;
/// `peers`: [`trusted_peers`].
pub async fn build(
    config: &Config,
    extensions: &[ExtensionRow],
    peers: Vec<(IpAddr, String)>,
) -> InboundPolicy {
    let modems: Vec<&str> = config
        .modems
        .iter()
        .map(|m| m.line.line.name.as_str())
        .collect();
    let mut trunks = Vec::new();
    // Line trunks (modem and FXO lines, hop 127.0.0.1:9) are never a request's origin: a
    // request from that address is not a call from a line.
    for t in config.trunks.iter().filter(|t| {
        t.enabled && !modems.contains(&t.name.as_str()) && !crate::pstn::routes::is_line_trunk(t)
    }) {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::pstn::routes::{named_line_trunks, LINE_HOP};

    #[test]
    fn line_trunks_are_never_the_origin_of_a_request() {
        let mut config = Config::from_toml_str(
            "[[trunk]]\nname = \"carrier\"\nuri = \"sip:127.0.0.7:5060\"\n",
            Path::new("test.toml"),
        )
        .expect("config");
        // An FXO line and a dashboard modem line: their router trunks point at the placeholder hop.
        config
            .trunks
            .extend(named_line_trunks(["fxo1", "gsm2"].into_iter()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let policy = rt.block_on(build(&config, &[], Vec::new()));
        assert!(policy.trunk(LINE_HOP).is_none(), "{:?}", policy.trunks);
        assert!(policy.trunks.iter().all(|t| t.name == "carrier"));
        assert_eq!(
            policy
                .trunk("127.0.0.7:5060".parse().unwrap())
                .map(|o| o.label()),
            Some("trunk carrier".into())
        );
    }
}
