//! The SIP trunks of the configuration as the SIP core drives them ([`TrunkPlan`]): their
//! next hop's host name resolved here, in the shell, with a bounded wait, at start and on
//! every reload.

use std::net::SocketAddr;
use std::time::Duration;

use crate::callctl::trunks::TrunkPlan;
use crate::config::Config;
use crate::sip::peer::Proto;
use crate::sip::uri::Host;

/// How long resolving a trunk's host may take.
const RESOLVE_WAIT: Duration = Duration::from_secs(3);

/// The plans of the enabled SIP trunks of `config` (not the modem lines), host names resolved.
pub(super) async fn plans(config: &Config) -> Vec<TrunkPlan> {
    // PSTN lines (modems, FXO ports) are trunks for the router only: no plan for them.
    let modems: Vec<&str> = config
        .modems
        .iter()
        .map(|m| m.line.line.name.as_str())
        .chain(config.fxo.iter().map(|f| f.settings.name.as_str()))
        .collect();
    let mut out = Vec::new();
    for t in config
        .trunks
        .iter()
        .filter(|t| t.enabled && !modems.contains(&t.name.as_str()))
    {
        let hop_uri = t.options.outbound_proxy.as_ref().unwrap_or(&t.uri);
        let proto = match hop_uri.transport() {
            Some(tr) if tr.eq_ignore_ascii_case("tcp") => Proto::Tcp,
            _ => Proto::Udp,
        };
        let port = hop_uri.port.unwrap_or(5060);
        let addr = match &hop_uri.host {
            Host::Name(name) => {
                match tokio::time::timeout(
                    RESOLVE_WAIT,
                    tokio::net::lookup_host((name.as_str(), port)),
                )
                .await
                {
                    Ok(Ok(mut a)) => a.next(),
                    _ => {
                        tracing::warn!(trunk = %t.name, host = %name, "trunk host not resolved: no registration or qualify");
                        None
                    }
                }
            }
            other => other.ip().map(|ip| SocketAddr::new(ip, port)),
        };
        out.push(TrunkPlan {
            name: t.name.clone(),
            uri: t.uri.clone(),
            next_hop: addr.map(|a| (proto, a)),
            username: t.username.clone(),
            password: t.password.clone(),
            number_format: t.number_format,
            options: t.options.clone(),
        });
    }
    out
}
