//! The gateway's own DUNDi node, as `serve` (and `pasarela route`) run it from `[dundi]`: it
//! answers peers for the extensions' DIDs and the mappings' patterns, and is asked by the
//! router beside ENUM. The DIDs are a [`NumberSet`] replaced when the extensions change.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use super::config::DundiConfig;
use crate::store::ExtensionRow;

use super::eid::Eid;
use super::keyring;
use super::numbers::{AnyOf, LocalNumbers, NumberMatch, NumberSet, PatternNumbers};
use super::service::{DundiHandle, ServiceError};
use super::settings::{PeerSettings, Settings};

/// The DUNDi node of the office: running, or off until the dashboard (or SIGHUP) turns it on.
#[derive(Clone)]
pub struct OfficeDundi {
    /// Ask and inspect it (every clone follows a restart or stop).
    pub handle: DundiHandle,
    /// The context the router asks about (`[dundi] context`, or the dashboard's), changed live.
    context: Arc<RwLock<String>>,
    dids: Arc<NumberSet>,
    /// The patterns of the mappings (the file's and the dashboard's), replaced on a change.
    patterns: Arc<SwapNumbers>,
    /// What the engine is asked ("is this number ours?"): the DIDs and the patterns.
    local: Arc<dyn LocalNumbers>,
    /// The configuration file's `[dundi]` (with our generated keys): what the dashboard's
    /// settings, mappings and peers are added to. Replaced when SIGHUP re-reads the file.
    file: Arc<RwLock<Arc<DundiConfig>>>,
    /// The settings in use (the file's, the dashboard's, its peers), and whether it should run.
    current: Arc<RwLock<(bool, Settings)>>,
    /// One provisioning at a time (the dashboard, the API and SIGHUP may meet).
    provisioning: Arc<tokio::sync::Mutex<()>>,
}

/// Replaceable local numbers (the mappings' patterns).
#[derive(Default)]
struct SwapNumbers(RwLock<PatternNumbers>);

impl SwapNumbers {
    fn set(&self, numbers: &[(String, Vec<String>)]) {
        let mut patterns = PatternNumbers::new();
        for (ctx, list) in numbers {
            let refs: Vec<&str> = list.iter().map(String::as_str).collect();
            // Checked when configured or stored.
            if let Err(e) = patterns.add(ctx, &refs) {
                tracing::warn!("DUNDi numbers of {ctx}: {e}");
            }
        }
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = patterns;
    }
}

impl LocalNumbers for SwapNumbers {
    fn classify(&self, local_context: &str, number: &str) -> NumberMatch {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .classify(local_context, number)
    }

    fn known_numbers(&self, local_context: &str) -> Vec<String> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .known_numbers(local_context)
    }
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
            .field("context", &self.context())
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
        let mut config = config.clone();
        if let Some(b) = bind {
            config.settings.bind = b;
        }
        let node = OfficeDundi::idle(&config, extensions);
        node.patterns.set(&config.numbers);
        node.handle
            .restart(config.settings.clone(), node.local.clone())
            .await?;
        *node.current.write().unwrap_or_else(|e| e.into_inner()) = (true, config.settings);
        Ok(node)
    }

    /// The node of `config`, not running (DUNDi off): [`OfficeDundi::provision`] starts it.
    pub fn idle(config: &DundiConfig, extensions: &[ExtensionRow]) -> OfficeDundi {
        let dids = Arc::new(NumberSet::new(dids(extensions)));
        let patterns = Arc::new(SwapNumbers::default());
        let dids_dyn: Arc<dyn LocalNumbers> = dids.clone();
        let patterns_dyn: Arc<dyn LocalNumbers> = patterns.clone();
        let local: Arc<dyn LocalNumbers> = Arc::new(AnyOf(vec![dids_dyn, patterns_dyn]));
        let eid = config
            .settings
            .eid
            .or_else(Eid::from_machine)
            .unwrap_or_default();
        OfficeDundi {
            handle: DundiHandle::stopped(eid, config.settings.bind),
            context: Arc::new(RwLock::new(config.context.clone())),
            dids,
            patterns,
            local,
            file: Arc::new(RwLock::new(Arc::new(config.clone()))),
            current: Arc::new(RwLock::new((false, config.settings.clone()))),
            provisioning: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Provisions the node with the file's `[dundi]` (`file`: a new one, re-read on SIGHUP),
    /// the dashboard's settings, mappings and peers (`stored`), our keys in `keys_dir`: turns it
    /// on or off, restarts it on a new listen address or EID, otherwise reloads it in place
    /// (mappings and peers used from the next query; lookups and calls in progress go on).
    /// What changed, in words for the log (empty: nothing).
    pub async fn provision(
        &self,
        file: Option<DundiConfig>,
        stored: &crate::store::dundi_node::StoredDundi,
        keys_dir: &std::path::Path,
    ) -> Result<Vec<String>, ServiceError> {
        let _one = self.provisioning.lock().await;
        if let Some(f) = file {
            *self.file.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(f);
        }
        let file = self.file_config();
        let mut config = crate::store::dundi_node::effective_with_mappings(
            &file,
            &stored.node,
            &stored.mappings,
        );
        let file_eids: Vec<Eid> = file.settings.peers.iter().map(|p| p.eid).collect();
        let dir = keys_dir.to_path_buf();
        let rows = stored.peers.clone();
        let enabled = config.enabled;
        let mut settings = config.settings.clone();
        let (settings, extra) = tokio::task::spawn_blocking(move || {
            if enabled {
                keyring::ensure_our_keys(&mut settings, &dir)?;
            }
            let extra = crate::store::dundi::peer_settings(&rows, &file_eids, &dir);
            Ok::<_, keyring::KeyringError>((settings, extra))
        })
        .await
        .map_err(|e| ServiceError::Settings(super::settings::SettingsError(e.to_string())))?
        .map_err(|e| ServiceError::Settings(super::settings::SettingsError(e.to_string())))?;
        config.settings = settings;
        for p in extra {
            if !config.settings.peers.iter().any(|q| q.eid == p.eid) {
                config.settings.peers.push(p);
            }
        }
        let (was_on, before) = self.current();
        let running = self.handle.is_running();
        let mut changes = describe(was_on && running, &before, enabled, &config.settings);
        let context = std::mem::replace(
            &mut *self.context.write().unwrap_or_else(|e| e.into_inner()),
            config.context.clone(),
        );
        if context != config.context {
            changes.push(format!("context {context} → {}", config.context));
        }
        self.patterns.set(&config.numbers);
        if !enabled {
            if running {
                self.handle.stop().await;
            }
        } else if !running
            || before.bind != config.settings.bind
            || before.eid != config.settings.eid
        {
            // The listen address or EID changed, or it was off: a new socket and engine.
            *self.current.write().unwrap_or_else(|e| e.into_inner()) =
                (false, config.settings.clone());
            self.handle
                .restart(config.settings.clone(), self.local.clone())
                .await?;
        } else {
            self.handle.reload(config.settings.clone()).await?;
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (enabled, config.settings);
        Ok(changes)
    }

    /// The context the router's lookups ask about now.
    pub fn context(&self) -> String {
        self.context
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The router's source of answers from this node: it follows context changes.
    pub fn source(&self) -> super::DundiSource {
        super::DundiSource::shared(self.handle.clone(), self.context.clone())
    }

    /// Whether the node should run, and the settings it was last given.
    pub fn current(&self) -> (bool, Settings) {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The configuration file's `[dundi]` as last read.
    pub fn file_config(&self) -> Arc<DundiConfig> {
        self.file.read().unwrap_or_else(|e| e.into_inner()).clone()
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
    pub fn file_settings(&self) -> Settings {
        self.file_config().settings.clone()
    }

    /// Applies the file's settings plus `extra` peers (those of the dashboard; one with the
    /// EID of a file peer is left out: the file wins) without a restart: peers added start
    /// being asked and qualified, removed ones are forgotten, lookups in progress go on.
    pub async fn apply(&self, extra: Vec<PeerSettings>) -> Result<(), ServiceError> {
        let (_, mut settings) = self.current();
        let file = self.file_settings();
        settings.peers = file.peers;
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

/// The differences between two provisionings, in words for the log.
fn describe(was_on: bool, before: &Settings, on: bool, after: &Settings) -> Vec<String> {
    let mut out = Vec::new();
    match (was_on, on) {
        (false, true) => out.push(format!("turned on (listen {})", after.bind)),
        (true, false) => out.push("turned off".to_owned()),
        (false, false) => return out,
        (true, true) => {}
    }
    if before.bind != after.bind && was_on && on {
        out.push(format!("listen {} → {}", before.bind, after.bind));
    }
    if before.eid != after.eid {
        let show = |e: Option<Eid>| e.map_or_else(|| "(host)".to_owned(), |e| e.to_string());
        out.push(format!("EID {} → {}", show(before.eid), show(after.eid)));
    }
    if before.ttl != after.ttl {
        out.push(format!("ttl {} → {}", before.ttl, after.ttl));
    }
    if before.cache_ttl != after.cache_ttl {
        out.push(format!(
            "cache {} s → {} s",
            before.cache_ttl.as_secs(),
            after.cache_ttl.as_secs()
        ));
    }
    if before.key_ttl != after.key_ttl {
        out.push(format!(
            "key ttl {} s → {} s",
            before.key_ttl.as_secs(),
            after.key_ttl.as_secs()
        ));
    }
    if before.ipaddr != after.ipaddr {
        out.push(format!("ipaddr {:?} → {:?}", before.ipaddr, after.ipaddr));
    }
    if before.entity != after.entity {
        out.push("contact record changed".to_owned());
    }
    if before.mappings != after.mappings {
        out.push(format!(
            "mappings changed ({} → {})",
            before.mappings.len(),
            after.mappings.len()
        ));
    }
    let eids = |s: &Settings| s.peers.iter().map(|p| p.eid).collect::<Vec<_>>();
    if before.peers != after.peers {
        out.push(format!(
            "peers changed ({} → {})",
            eids(before).len(),
            eids(after).len()
        ));
    }
    out
}
