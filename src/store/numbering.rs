//! The numbering plan and ENUM settings in the store (table `numbering_settings`, issue 17):
//! the `[numbering]` and `[enum]` keys, one row per key, its value as the file would write it
//! (as JSON). The keys the configuration file sets are copied in at start and on SIGHUP (source
//! `config`) and are read-only in the dashboard and the API: **the file wins** over a value of
//! the same key set there (the precedence rule of trunks and extensions). A key set nowhere has
//! its default.
//!
//! The values are checked by the configuration file's own validation ([`check`]), so a setting
//! means the same wherever it was written, and an error names the key at fault.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{params, Connection};
use serde_json::Value;

use crate::config::{Config, EnumConfig, NumberingConfig};

use super::trunks::{FieldError, SOURCE_WEB};
use super::{StoreError, SOURCE_CONFIG};

/// The sections kept here, as the file names them.
pub const SECTIONS: [&str; 2] = ["numbering", "enum"];

/// The keys of each section the dashboard and the API may set.
pub const NUMBERING_KEYS: [&str; 10] = [
    "country_code",
    "area_code",
    "national_prefix",
    "international_prefix",
    "extension_length",
    "emergency",
    "short_numbers",
    "mobile_prefixes",
    "premium_prefixes",
    "default_permissions",
];

/// The `[enum]` keys the dashboard and the API may set.
pub const ENUM_KEYS: [&str; 6] = [
    "suffixes",
    "nameservers",
    "tree_nameservers",
    "budget_ms",
    "max_chain",
    "cache_entries",
];

/// Settings as sections of keys: `{"numbering": {"country_code": "49"}, "enum": {…}}`.
pub type Sections = BTreeMap<String, BTreeMap<String, Value>>;

/// One stored key.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingRow {
    pub section: String,
    pub key: String,
    pub value: Value,
    /// [`SOURCE_CONFIG`] (read-only) or [`SOURCE_WEB`].
    pub source: String,
}

impl SettingRow {
    /// Whether the configuration file sets this key.
    pub fn from_file(&self) -> bool {
        self.source == SOURCE_CONFIG
    }
}

/// Why a change from the dashboard or the API was refused.
#[derive(Debug, thiserror::Error)]
pub enum NumberingChangeError {
    /// A value does not pass the checks (or is no key of the section).
    #[error(transparent)]
    Field(#[from] FieldError),
    /// The key is set in the configuration file (given with another value).
    #[error("{0}: is set in the configuration file; change it there")]
    FromFile(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for NumberingChangeError {
    fn from(e: rusqlite::Error) -> Self {
        NumberingChangeError::Store(StoreError::from(e))
    }
}

fn keys_of(section: &str) -> &'static [&'static str] {
    match section {
        "numbering" => &NUMBERING_KEYS,
        "enum" => &ENUM_KEYS,
        _ => &[],
    }
}

/// Every stored key, sections and keys in name order.
pub fn list(conn: &Connection) -> Result<Vec<SettingRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT section, key, value, source FROM numbering_settings ORDER BY section, key",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (section, key, json, source) = row?;
        match serde_json::from_str::<Value>(&json) {
            Ok(value) => out.push(SettingRow {
                section,
                key,
                value,
                source,
            }),
            Err(e) => {
                tracing::error!(%section, %key, "stored numbering setting unreadable, skipped: {e}")
            }
        }
    }
    Ok(out)
}

/// The `[numbering]` and `[enum]` keys the configuration file at `config.source` writes (none
/// when it cannot be read: a configuration made in memory).
pub fn file_keys(config: &Config) -> Sections {
    let mut out = Sections::new();
    let Some(text) = config
        .source
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok())
    else {
        return out;
    };
    let Ok(doc) = text.parse::<toml::Table>() else {
        return out;
    };
    for section in SECTIONS {
        if let Some(toml::Value::Table(t)) = doc.get(section) {
            let keys = out.entry(section.to_owned()).or_default();
            for (k, v) in t {
                if let Ok(json) = serde_json::to_value(v) {
                    keys.insert(k.clone(), json);
                }
            }
        }
    }
    out
}

/// Makes the `config` rows match the file's keys (taking over a web value of the same key),
/// deleting `config` rows no longer in the file. Returns the keys that changed
/// (`section.key`). One transaction.
pub fn sync_config(conn: &mut Connection, file: &Sections) -> Result<Vec<String>, StoreError> {
    let before = list(conn)?;
    let now = super::unix_now();
    let tx = conn.transaction()?;
    let mut changed = Vec::new();
    for (section, keys) in file {
        for (key, value) in keys {
            let same = before.iter().any(|r| {
                r.from_file() && &r.section == section && &r.key == key && &r.value == value
            });
            if same {
                continue;
            }
            if before
                .iter()
                .any(|r| !r.from_file() && &r.section == section && &r.key == key)
            {
                tracing::warn!(%section, %key, "the configuration file sets a numbering or ENUM key that was set in the dashboard: the file's value is used");
            }
            tx.execute(
                "INSERT INTO numbering_settings (section, key, value, source, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (section, key) DO UPDATE SET \
                 value = excluded.value, source = excluded.source, updated_at = excluded.updated_at",
                params![section, key, value.to_string(), SOURCE_CONFIG, now],
            )?;
            changed.push(format!("{section}.{key}"));
        }
    }
    for r in before.iter().filter(|r| r.from_file()) {
        let kept = file.get(&r.section).is_some_and(|k| k.contains_key(&r.key));
        if !kept {
            tx.execute(
                "DELETE FROM numbering_settings WHERE section = ?1 AND key = ?2 AND source = ?3",
                params![r.section, r.key, SOURCE_CONFIG],
            )?;
            changed.push(format!("{}.{}", r.section, r.key));
        }
    }
    tx.commit()?;
    Ok(changed)
}

/// The sections of `rows`.
pub fn sections(rows: &[SettingRow]) -> Sections {
    let mut out = Sections::new();
    for r in rows {
        out.entry(r.section.clone())
            .or_default()
            .insert(r.key.clone(), r.value.clone());
    }
    out
}

/// The numbering plan and ENUM settings `sections` make, checked exactly as the file's
/// `[numbering]` and `[enum]` are; the error names the key at fault. `null` values are unset.
pub fn check(sections: &Sections) -> Result<(NumberingConfig, EnumConfig), FieldError> {
    let bad = |field: &str, message: String| FieldError {
        field: field.to_owned(),
        message,
    };
    let mut doc = toml::Table::new();
    for (section, keys) in sections {
        let known = keys_of(section);
        if known.is_empty() {
            return Err(bad(section, "no such section (numbering or enum)".into()));
        }
        let mut table = toml::Table::new();
        for (key, value) in keys {
            if !known.contains(&key.as_str()) {
                return Err(bad(key, format!("no such key of [{section}]")));
            }
            if value.is_null() {
                continue;
            }
            let v = toml::Value::try_from(value)
                .map_err(|e| bad(key, format!("not a value the file could hold: {e}")))?;
            table.insert(key.clone(), v);
        }
        doc.insert(section.clone(), toml::Value::Table(table));
    }
    let text =
        toml::to_string(&doc).map_err(|e| bad("settings", format!("cannot be written: {e}")))?;
    match Config::from_toml_str(&text, Path::new("numbering")) {
        Ok(c) => Ok((c.numbering, c.enum_)),
        Err(e) => {
            let field = e
                .key()
                .map(|k| {
                    let k = k
                        .strip_prefix("numbering.")
                        .or_else(|| k.strip_prefix("enum."))
                        .unwrap_or(k);
                    k.split(['.', '[']).next().unwrap_or(k).to_owned()
                })
                .unwrap_or_else(|| "settings".into());
            let message = match &e {
                crate::config::ConfigError::Key { message, .. }
                | crate::config::ConfigError::Syntax { message, .. } => message.clone(),
                other => other.to_string(),
            };
            Err(bad(&field, message))
        }
    }
}

/// The numbering plan and ENUM settings the gateway uses: the file's keys, then the
/// dashboard's, defaults for the rest.
pub fn effective(conn: &Connection) -> Result<(NumberingConfig, EnumConfig), StoreError> {
    let rows = list(conn)?;
    check(&sections(&rows)).map_err(|e| {
        StoreError::Invalid(format!(
            "stored numbering and ENUM settings do not pass the checks: {e}"
        ))
    })
}

/// Replaces the dashboard's keys with `web` (keys left out or `null` return to their default),
/// after checking them together with the file's keys. A key the file sets cannot be changed:
/// given with another value it is refused; given with the file's value it is ignored.
pub fn save_web(conn: &mut Connection, web: &Sections) -> Result<(), NumberingChangeError> {
    let rows = list(conn)?;
    let mut merged = Sections::new();
    for r in rows.iter().filter(|r| r.from_file()) {
        merged
            .entry(r.section.clone())
            .or_default()
            .insert(r.key.clone(), r.value.clone());
    }
    let mut mine: Vec<(String, String, Value)> = Vec::new();
    for (section, keys) in web {
        for (key, value) in keys {
            if value.is_null() {
                continue;
            }
            if let Some(file) = rows
                .iter()
                .find(|r| r.from_file() && &r.section == section && &r.key == key)
            {
                if &file.value != value {
                    return Err(NumberingChangeError::FromFile(key.clone()));
                }
                continue;
            }
            merged
                .entry(section.clone())
                .or_default()
                .insert(key.clone(), value.clone());
            mine.push((section.clone(), key.clone(), value.clone()));
        }
    }
    check(&merged)?;
    let now = super::unix_now();
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM numbering_settings WHERE source = ?1",
        [SOURCE_WEB],
    )?;
    for (section, key, value) in mine {
        tx.execute(
            "INSERT INTO numbering_settings (section, key, value, source, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![section, key, value.to_string(), SOURCE_WEB, now],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The numbering plan and ENUM settings a command-line tool (`pasarela route`) should use, as
/// `serve` does: the file's keys, then those set in the dashboard (when the database file
/// exists; it is not created), defaults for the rest.
pub fn for_tools(config: &Config) -> Result<(NumberingConfig, EnumConfig), StoreError> {
    if !config.store.path.exists() {
        return Ok((config.numbering.clone(), config.enum_.clone()));
    }
    let store = super::Store::open(&config.store.path)?;
    let mut merged = sections(
        &list(&store.conn)?
            .into_iter()
            .filter(|r| !r.from_file())
            .collect::<Vec<_>>(),
    );
    for (section, keys) in file_keys(config) {
        merged.entry(section).or_default().extend(keys);
    }
    check(&merged).map_err(|e| StoreError::Invalid(e.to_string()))
}

impl super::Store {
    /// Copies the file's `[numbering]` and `[enum]` keys into the store
    /// ([`sync_config`]); returns the keys that changed.
    pub fn sync_config_numbering(&mut self, config: &Config) -> Result<Vec<String>, StoreError> {
        sync_config(&mut self.conn, &file_keys(config))
    }

    /// The numbering plan and ENUM settings in use ([`effective`]).
    pub fn numbering(&self) -> Result<(NumberingConfig, EnumConfig), StoreError> {
        effective(&self.conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> super::super::Store {
        super::super::Store::open_in_memory().unwrap()
    }

    fn secs(v: Value) -> Sections {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_file_wins_and_the_dashboard_sets_the_rest() {
        let mut s = store();
        let file = secs(json!({"numbering": {"country_code": "34"}}));
        assert_eq!(
            sync_config(&mut s.conn, &file).unwrap(),
            ["numbering.country_code"]
        );
        assert!(sync_config(&mut s.conn, &file).unwrap().is_empty());
        save_web(
            &mut s.conn,
            &secs(
                json!({"numbering": {"country_code": "34", "area_code": "91"},
                          "enum": {"suffixes": ["e164.office.test", "e164.arpa"]}}),
            ),
        )
        .unwrap();
        let (n, e) = effective(&s.conn).unwrap();
        assert_eq!(n.country_code, "34");
        assert_eq!(n.area_code.as_deref(), Some("91"));
        assert_eq!(e.suffixes, ["e164.office.test", "e164.arpa"]);
        let refused = save_web(
            &mut s.conn,
            &secs(json!({"numbering": {"country_code": "49"}})),
        )
        .unwrap_err();
        assert!(
            matches!(&refused, NumberingChangeError::FromFile(f) if f == "country_code"),
            "{refused}"
        );
        // The file taking a key over; removing it from the file returns it to the default.
        sync_config(
            &mut s.conn,
            &secs(json!({"numbering": {"area_code": "93"}})),
        )
        .unwrap();
        let (n, _) = effective(&s.conn).unwrap();
        assert_eq!(n.country_code, "49");
        assert_eq!(n.area_code.as_deref(), Some("93"));
    }

    #[test]
    fn errors_name_the_key() {
        let mut s = store();
        for (bad, field) in [
            (
                json!({"numbering": {"country_code": "+49"}}),
                "country_code",
            ),
            (
                json!({"numbering": {"extension_length": 40}}),
                "extension_length",
            ),
            (
                json!({"enum": {"suffixes": ["ok.test", "bad..test"]}}),
                "suffixes",
            ),
            (json!({"enum": {"nameservers": ["nowhere"]}}), "nameservers"),
            (json!({"enum": {"budget_ms": 0}}), "budget_ms"),
            (json!({"enum": {"max_chain": 99}}), "max_chain"),
            (json!({"enum": {"colour": "red"}}), "colour"),
        ] {
            match save_web(&mut s.conn, &secs(bad.clone())) {
                Err(NumberingChangeError::Field(f)) => assert_eq!(f.field, field, "{bad}: {f}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(list(&s.conn).unwrap().is_empty());
    }
}
