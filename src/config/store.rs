//! `[store]`: the database and its nightly backup, mapped onto
//! [`crate::store::config::StoreConfig`] with the file:line:key checks.

use super::*;

pub use crate::store::config::{NightlyBackup, StoreConfig};

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
