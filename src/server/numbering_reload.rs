//! The numbering plan and ENUM settings applied live (issue 17): the store holds them, the
//! configuration file's `[numbering]` and `[enum]` keys seed it and win over the dashboard's
//! ([`crate::store::numbering`]). At start and on SIGHUP the file's keys are synchronised into
//! the store; after that, and after every change from the dashboard or the API, [`read`] gives
//! the SIP loop the store's settings, which hands them to the router, the ENUM resolver, the
//! SIP core and the trust model ([`apply`]). The next call uses them; calls in progress keep
//! their route.

use anyhow::Context;
use tokio::sync::mpsc;

use crate::config::{Config, EnumConfig, NumberingConfig};
use crate::store::{ExtensionRow, Store};

/// What a reload hands the SIP loop: the settings and the extensions (for the plan's inferred
/// extension length).
pub(super) type Applied = (NumberingConfig, EnumConfig, Vec<ExtensionRow>);

/// At start: the file's keys into the store, and `config` takes the store's settings (the
/// file's where it sets them). Settings in the store that no longer pass the checks are logged
/// and the file's are used.
pub(super) fn provision(config: &mut Config, store: &mut Store) -> anyhow::Result<()> {
    let changed = store
        .sync_config_numbering(config)
        .context("provisioning the numbering plan and ENUM settings from the configuration")?;
    if !changed.is_empty() {
        tracing::info!(
            "numbering and ENUM keys from the configuration file: {}",
            changed.join(", ")
        );
    }
    match store.numbering() {
        Ok((n, e)) => {
            config.numbering = n;
            config.enum_ = e;
        }
        Err(e) => tracing::error!("{e}; the configuration file's [numbering] and [enum] are used"),
    }
    Ok(())
}

/// Held by the running [`read`]: reads run one at a time, in turn.
static READS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads the store's settings off the loop and sends them through `tx`. `from_file`: SIGHUP,
/// which first copies the file's keys again.
pub(super) fn read(base: &Config, tx: mpsc::UnboundedSender<Applied>, from_file: bool) {
    let store_path = base.store.path.clone();
    let source = base.source.clone().filter(|_| from_file);
    tokio::spawn(async move {
        // One read at a time, so that the settings sent last are the newest (as for trunks,
        // `trunks_reload::reload`).
        let _turn = READS.lock().await;
        let read = tokio::task::spawn_blocking(move || -> anyhow::Result<Applied> {
            let mut store = Store::open(&store_path)?;
            if let Some(path) = source {
                let fresh = Config::load(Some(&path))?;
                let changed = store.sync_config_numbering(&fresh)?;
                for key in &changed {
                    tracing::info!(key = %key, "numbering or ENUM key changed in the configuration file");
                }
            }
            let (n, e) = store.numbering()?;
            Ok((n, e, store.extensions()?))
        })
        .await;
        match read {
            Ok(Ok(applied)) => {
                let _ = tx.send(applied);
            }
            Ok(Err(e)) => tracing::error!("numbering and ENUM settings not reloaded: {e:#}"),
            Err(e) => tracing::error!("numbering and ENUM settings not reloaded: {e}"),
        }
    });
}

/// Gives the router and the ENUM resolver the settings of `config` and logs what changed
/// against `before`; returns whether anything did.
pub(super) fn apply(
    before: (&NumberingConfig, &EnumConfig),
    config: &Config,
    rows: &[ExtensionRow],
    router: &crate::routing::router::Router,
    resolver: &crate::routing::EnumResolver,
) -> bool {
    let numbering = before.0 != &config.numbering;
    let enum_ = before.1 != &config.enum_;
    match crate::routing::setup::apply_numbering(config.routing(), rows, router, resolver) {
        Ok(_) => {}
        Err(e) => tracing::error!("ENUM settings not applied: {e:#}"),
    }
    if numbering {
        tracing::info!(
            country_code = %config.numbering.country_code,
            area_code = config.numbering.area_code.as_deref().unwrap_or(""),
            "numbering plan applied"
        );
    }
    if enum_ {
        tracing::info!(
            suffixes = %config.enum_.suffixes.join(", "),
            nameservers = config.enum_.nameservers.len(),
            budget_ms = config.enum_.budget_ms,
            "ENUM settings applied"
        );
    }
    numbering || enum_
}
