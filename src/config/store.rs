//! `[store]`: the database and its nightly backup.

use super::*;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub(crate) path: Option<PathBuf>,
    pub(crate) backup_at: Option<String>,
    pub(crate) backup_dir: Option<PathBuf>,
    pub(crate) backup_keep: Option<u32>,
}

impl RawStore {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<StoreConfig> {
        let path = match self.path {
            None => StoreConfig::default().path,
            Some(p) if p.as_os_str().is_empty() => {
                return Err(invalid(&at.key("path"), "must not be empty"))
            }
            Some(path) => path,
        };
        let keep = self.backup_keep.unwrap_or(7);
        if !(1..=366).contains(&keep) {
            return Err(invalid(
                &at.key("backup_keep"),
                "must be a number of backups from 1 to 366",
            ));
        }
        let nightly = match self.backup_at.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => {
                let (hour, minute) = parse_clock(text).ok_or_else(|| {
                    invalid(
                        &at.key("backup_at"),
                        format!("must be a time of day as HH:MM, like \"03:15\", not {text:?}"),
                    )
                })?;
                let dir = match self.backup_dir {
                    Some(d) if d.as_os_str().is_empty() => {
                        return Err(invalid(&at.key("backup_dir"), "must not be empty"))
                    }
                    Some(d) => d,
                    None => path
                        .parent()
                        .map_or_else(|| PathBuf::from("backups"), |p| p.join("backups")),
                };
                Some(NightlyBackup {
                    hour,
                    minute,
                    dir,
                    keep,
                })
            }
        };
        Ok(StoreConfig { path, nightly })
    }
}

/// `HH:MM` (24 h) as hour and minute.
pub(crate) fn parse_clock(text: &str) -> Option<(u8, u8)> {
    let (h, m) = text.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let hour: u8 = h.parse().ok()?;
    let minute: u8 = m.parse().ok()?;
    (hour < 24 && minute < 60).then_some((hour, minute))
}
