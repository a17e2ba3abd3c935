//! `[dundi]` as the office's DUNDi node takes it: whether it runs, the context asked, the node's
//! settings and the number patterns it answers for. `config::dundi` maps the file onto it with
//! the file:line:key checks.

/// `[dundi]`, `[[dundi.mapping]]`, `[[dundi.peer]]`: DUNDi peering.
#[derive(Debug, Clone, PartialEq)]
pub struct DundiConfig {
    /// Whether `serve` runs DUNDi (`enabled`, default false).
    pub enabled: bool,
    /// The context our lookups ask peers about (`context`, default `e164`).
    pub context: String,
    /// The node: identity, keys, mappings (what we answer for), peers. `settings.bind` is
    /// `listen` (default `0.0.0.0:4520`).
    pub settings: crate::routing::dundi::Settings,
    /// Number patterns we answer for besides the extensions' DIDs (`numbers` of each mapping,
    /// Asterisk style: `_4930123XXX`), with the mapping's local context.
    pub numbers: Vec<(String, Vec<String>)>,
    /// The `[dundi]` keys the file sets (`enabled`, `listen`, …): these win over the
    /// dashboard's settings ([`crate::store::dundi_node`]).
    pub file_keys: Vec<String>,
}

impl Default for DundiConfig {
    fn default() -> Self {
        DundiConfig {
            enabled: false,
            context: "e164".into(),
            settings: crate::routing::dundi::Settings::default(),
            numbers: Vec::new(),
            file_keys: Vec::new(),
        }
    }
}

/// The local context every mapping answers from (the DIDs and the mapping's patterns).
pub const DUNDI_LOCAL_CONTEXT: &str = "office";
