//! DUNDi provisioned from the store and applied live (issue 17): our key pair is generated on
//! first use when `[dundi]` names none (in `dundi-keys/` beside the store), and the peers added
//! in the dashboard join the file's peers at start. Later changes from the dashboard are
//! applied by the dashboard itself through [`crate::routing::dundi::OfficeDundi::apply`] — the
//! same call as here — without a restart.

use anyhow::Context;

use crate::config::Config;
use crate::routing::dundi::{keyring, OfficeDundi};
use crate::store::Store;

/// Before DUNDi starts: our keys (generated if `[dundi]` names no private key).
pub(super) fn provision_keys(config: &mut Config) -> anyhow::Result<()> {
    let dir = keyring::keys_dir(&config.store.path);
    keyring::ensure_our_keys(&mut config.dundi.settings, &dir)
        .context("DUNDi: providing our key pair")?;
    Ok(())
}

/// After DUNDi started: the dashboard's peers join the file's. A peer that cannot be used
/// (its key unreadable) is logged and left out; the node keeps running with the others.
pub(super) async fn apply_store_peers(config: &Config, node: &OfficeDundi) {
    let path = config.store.path.clone();
    let file: Vec<_> = node.file_settings().peers.iter().map(|p| p.eid).collect();
    let read = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let rows = Store::open(&path)?.dundi_peers()?;
        Ok(crate::store::dundi::peer_settings(
            &rows,
            &file,
            &keyring::keys_dir(&path),
        ))
    })
    .await;
    match read {
        Ok(Ok(peers)) if peers.is_empty() => {}
        Ok(Ok(peers)) => {
            let n = peers.len();
            match node.apply(peers).await {
                Ok(()) => tracing::info!(peers = n, "DUNDi peers of the dashboard applied"),
                Err(e) => tracing::error!("DUNDi peers of the dashboard not applied: {e}"),
            }
        }
        Ok(Err(e)) => tracing::error!("DUNDi peers of the dashboard not read: {e:#}"),
        Err(e) => tracing::error!("DUNDi peers of the dashboard not read: {e}"),
    }
}
