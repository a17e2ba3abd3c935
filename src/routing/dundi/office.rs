//! The gateway's own DUNDi node, as `serve` (and `pasarela route`) run it from `[dundi]`: it
//! answers peers for the extensions' DIDs and the mappings' patterns, and is asked by the
//! router beside ENUM. The DIDs are a [`NumberSet`] replaced when the extensions change.

use std::net::SocketAddr;
use std::sync::Arc;

use super::config::DundiConfig;
use crate::store::ExtensionRow;

use super::numbers::{AnyOf, LocalNumbers, NumberSet, PatternNumbers};
use super::service::{DundiHandle, DundiService, ServiceError};
use super::settings::{PeerSettings, Settings};

/// A running DUNDi node of the office.
#[derive(Clone)]
pub struct OfficeDundi {
    /// Ask and inspect it.
    pub handle: DundiHandle,
    /// The context the router asks about.
    pub context: String,
    dids: Arc<NumberSet>,
    /// The settings of the configuration file (with our generated keys): what [`Self::apply`]
    /// adds the dashboard's peers to.
    base: Arc<Settings>,
}

/// The DIDs of enabled extensions, as DUNDi numbers (E.164 digits, no `+`).
pub fn dids(extensions: &[ExtensionRow]) -> Vec<String> {
    extensions
        .iter()
        .filter(|e| e.enabled)
        .filter_map(|e| e.did.as_deref())
        .map(|d| d.trim_start_matches('+').to_owned())
        .collect()
}

impl std::fmt::Debug for OfficeDundi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfficeDundi")
            .field("local_addr", &self.handle.local_addr())
            .field("eid", &self.handle.eid())
            .field("context", &self.context)
            .finish()
    }
}

impl OfficeDundi {
    /// Starts the node of `config` on `bind` (or `config`'s `listen`), answering for the DIDs
    /// of `extensions` and the configured patterns.
    pub async fn start(
        config: &DundiConfig,
        extensions: &[ExtensionRow],
        bind: Option<SocketAddr>,
    ) -> Result<OfficeDundi, ServiceError> {
        let dids = Arc::new(NumberSet::new(dids(extensions)));
        let mut patterns = PatternNumbers::new();
        for (ctx, list) in &config.numbers {
            let refs: Vec<&str> = list.iter().map(String::as_str).collect();
            // The configuration checked every pattern already.
            if let Err(e) = patterns.add(ctx, &refs) {
                tracing::warn!("DUNDi numbers of {ctx}: {e}");
            }
        }
        let dids_dyn: Arc<dyn LocalNumbers> = dids.clone();
        let local: Arc<dyn LocalNumbers> = Arc::new(AnyOf(vec![dids_dyn, Arc::new(patterns)]));
        let mut settings = config.settings.clone();
        if let Some(b) = bind {
            settings.bind = b;
        }
        let base = Arc::new(settings.clone());
        let handle = DundiService::start(settings, local).await?;
        Ok(OfficeDundi {
            handle,
            context: config.context.clone(),
            dids,
            base,
        })
    }

    /// The extensions changed: answer for their DIDs from now on. When the set of DIDs changed,
    /// every known number is pushed again to the peers we precache to (as Asterisk does on
    /// reload), in the background when called inside a tokio runtime.
    pub fn reprovision(&self, extensions: &[ExtensionRow]) {
        let before = self.dids.numbers();
        self.dids.replace(dids(extensions));
        if self.dids.numbers() != before {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let handle = self.handle.clone();
                rt.spawn(async move {
                    let peers = handle.precache_all().await;
                    tracing::debug!(peers, "DUNDi: DIDs changed, precache pushed");
                });
            }
        }
    }

    /// The node's settings from the configuration file (its peers are the file's).
    pub fn file_settings(&self) -> &Settings {
        &self.base
    }

    /// Applies the file's settings plus `extra` peers (those of the dashboard; one with the
    /// EID of a file peer is left out: the file wins) without a restart: peers added start
    /// being asked and qualified, removed ones are forgotten, lookups in progress go on.
    pub async fn apply(&self, extra: Vec<PeerSettings>) -> Result<(), ServiceError> {
        let mut settings = Settings::clone(&self.base);
        for p in extra {
            if !settings.peers.iter().any(|q| q.eid == p.eid) {
                settings.peers.push(p);
            }
        }
        self.handle.reload(settings).await
    }

    /// Pushes every DID and literal number to the peers we precache to now; how many peers
    /// acknowledged. (The node does this by itself on start and when answers expire.)
    pub async fn precache(&self) -> usize {
        self.handle.precache_all().await
    }
}
