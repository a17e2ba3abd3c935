//! The private ENUM zone of `serve`: the DIDs of the enabled extensions as NAPTR records,
//! served by the embedded DNS server when `[enum_zone] enabled`.

use anyhow::Context;

use crate::config::Config;

/// The private ENUM zone (`[enum_zone]`) for the DIDs of the enabled extensions.
pub(super) fn private_zone(
    config: &Config,
    extensions: &[crate::store::ExtensionRow],
) -> anyhow::Result<crate::routing::Zone> {
    let z = &config.enum_zone;
    let (host, port) = match &z.sip_host {
        Some(h) => {
            let (host, port) = crate::sip::uri::parse_hostport(h)
                .map_err(|e| anyhow::anyhow!("enum_zone.sip_host {h:?}: {e}"))?;
            (host.to_string(), port)
        }
        None => (config.sip.domain.clone(), None),
    };
    let dids: Vec<(crate::routing::E164, String)> = extensions
        .iter()
        .filter(|e| e.enabled)
        .filter_map(|e| {
            let did = e.did.as_deref()?;
            match did.parse() {
                Ok(n) => Some((n, e.number.clone())),
                Err(err) => {
                    tracing::warn!(extension = %e.number, "DID {did:?} not published: {err}");
                    None
                }
            }
        })
        .collect();
    tracing::info!(suffix = %z.suffix, dids = dids.len(), "private ENUM zone");
    Ok(crate::routing::enum_zone(
        &z.suffix, &host, port, &dids, z.ttl,
    ))
}

/// Starts the private ENUM zone when `[enum_zone] enabled`.
pub(super) async fn start_enum_zone(
    config: &Config,
    extensions: &[crate::store::ExtensionRow],
) -> anyhow::Result<Option<crate::routing::ZoneServer>> {
    let z = &config.enum_zone;
    if !z.enabled {
        return Ok(None);
    }
    let zone = private_zone(config, extensions)?;
    let server = crate::routing::ZoneServer::start(z.listen, vec![zone])
        .await
        .with_context(|| format!("starting the private ENUM zone on {}", z.listen))?;
    tracing::info!(listen = %server.local_addr(), "private ENUM zone served");
    Ok(Some(server))
}
