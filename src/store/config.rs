//! What the store takes from the configuration file: `[store]` (the database file and its
//! nightly backup) and the `[[extension]]` and `[[ring_group]]` entries it is seeded with.
//! `config::store`, `config::extensions` and `config::inbound` map the file onto them with the
//! file:line:key checks.

use std::path::PathBuf;

/// `[store]`: the SQLite database.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreConfig {
    /// Path of the database file (`path`, default `pasarela.db`).
    pub path: PathBuf,
    /// The nightly backup (`backup_at`; none by default).
    pub nightly: Option<NightlyBackup>,
}

/// The nightly backup of `[store]`: at `backup_at` (office time, `HH:MM`) a backup like
/// `pasarela backup` writes `pasarela-YYYY-MM-DD.backup` into `backup_dir` (default `backups`
/// beside the database) and keeps the newest `backup_keep` (default 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NightlyBackup {
    pub hour: u8,
    pub minute: u8,
    pub dir: PathBuf,
    pub keep: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("pasarela.db"),
            nightly: None,
        }
    }
}
/// One `[[extension]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionConfig {
    /// The extension number, 1 to 15 digits (`number`, required).
    pub number: String,
    /// The digest-authentication password (`password`, required, non-empty).
    pub password: String,
    /// Display name (`name`).
    pub name: Option<String>,
    /// Direct inward dialling number in E.164, `+` and digits (`did`).
    pub did: Option<String>,
    /// Whether the extension may register and call (`enabled`, default true).
    pub enabled: bool,
    /// What the extension may call (`permissions`, e.g. `["internal", "national"]`, `["all"]`);
    /// `None`: `numbering.default_permissions`.
    pub permissions: Option<crate::routing::Permissions>,
    /// Networks it may register and call from (`allow`, e.g. `["192.168.1.0/24"]`; default
    /// anywhere).
    pub allow: Vec<crate::security::net::IpNet>,
    /// Whether digest answers without `qop` (RFC 2069) are accepted (`legacy_digest`,
    /// default false).
    pub legacy_digest: bool,
}

/// One `[[ring_group]]`: extensions that ring for a number of `[[inbound.route]]` or a modem
/// line's `incoming`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingGroupConfig {
    /// Its name, used as a route's `destination` (`name`, required, not all digits).
    pub name: String,
    /// The extensions; the first to answer takes the call (`members`).
    pub members: Vec<String>,
    /// `strategy`: `all` (default) rings every member at once; `order` rings them one after
    /// the other, each for `member_timeout` seconds.
    pub strategy: RingStrategy,
    /// Seconds each member rings with `strategy = "order"` (`member_timeout`, default 15).
    pub member_timeout_secs: u32,
}

/// How a ring group rings its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingStrategy {
    #[default]
    All,
    Order,
}
