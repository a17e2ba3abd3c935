//! DUNDi provisioned from the store and applied live (issue 17): our key pair is generated on
//! first use when `[dundi]` names none (in `dundi-keys/` beside the store); the node settings,
//! mappings and peers of the dashboard join the file's `[dundi]` at start and on SIGHUP. Later
//! changes from the dashboard are applied by the dashboard itself through
//! [`crate::routing::dundi::OfficeDundi::provision`] — the same call as here — without a
//! restart.

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

/// Provisions the node from the file's `[dundi]` (`file`: re-read on SIGHUP, else as it was)
/// and the store's settings, mappings and peers: the code path the dashboard takes too
/// (`web::pages::dundi::apply`). What changed, in words.
pub(super) async fn provision(
    config: &Config,
    node: &OfficeDundi,
    file: Option<crate::config::DundiConfig>,
) -> anyhow::Result<Vec<String>> {
    let path = config.store.path.clone();
    let stored = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let store = Store::open(&path)?;
        Ok(store.dundi_stored()?)
    })
    .await
    .context("reading the DUNDi settings of the store")??;
    let changes = node
        .provision(file, &stored, &keyring::keys_dir(&config.store.path))
        .await?;
    Ok(changes)
}

/// SIGHUP: the file's `[dundi]` read again and applied with the store's settings; logs what
/// changed (or that nothing did). A change wakes `trunks_changed` (the trust model names the
/// node's peers).
pub(super) fn reload_from_file(
    config: &Config,
    node: &OfficeDundi,
    trunks_changed: std::sync::Arc<tokio::sync::Notify>,
) {
    let (config, node) = (config.clone(), node.clone());
    tokio::spawn(async move {
        let Some(path) = config.source.clone() else {
            return;
        };
        let fresh = match Config::load(Some(&path)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("[dundi] not reloaded: {e}");
                return;
            }
        };
        match provision(&config, &node, Some(fresh.dundi)).await {
            Ok(changes) if changes.is_empty() => {
                tracing::info!("[dundi] reloaded: nothing changed");
            }
            Ok(changes) => {
                tracing::info!("[dundi] reloaded: {}", changes.join("; "));
                trunks_changed.notify_one();
            }
            Err(e) => tracing::error!("[dundi] not applied: {e:#}"),
        }
    });
}
