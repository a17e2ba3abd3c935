//! SIP trunks in the store (table `trunks`, issue 17): the configuration file's `[[trunk]]`
//! tables are synchronised into it (source `config`, read-only elsewhere), the dashboard and the
//! API add, change, enable, disable and delete their own (source `web`). One name is one trunk:
//! a `[[trunk]]` in the file takes over a web row of the same name (the file wins).
//!
//! A trunk's keys are kept as JSON ([`TrunkSettings`], the `[[trunk]]` keys other than `name`
//! and `enabled`) and checked by the configuration file's own validation ([`TrunkSettings::check`]),
//! so a trunk means the same wherever it was written.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::routing::trunk::{CallerIdHeader, NumberFormat, TrunkConfig};

use super::{StoreError, SOURCE_CONFIG};

/// The value of `trunks.source` for rows added in the dashboard or the API.
pub const SOURCE_WEB: &str = "web";

/// The keys of one trunk besides its name and whether it is enabled, as in `[[trunk]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrunkSettings {
    pub uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number_format: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_expires: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_retry_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qualify: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outbound_proxy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_id_header: Option<String>,
}

/// A trunk setting that does not pass the checks: which key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The `[[trunk]]` key (`uri`, `password`, …), or `name`.
    pub field: String,
    pub message: String,
}

impl TrunkSettings {
    /// The settings of a trunk read from the configuration file.
    pub fn from_config(t: &TrunkConfig) -> TrunkSettings {
        let o = &t.options;
        let d = crate::routing::trunk::TrunkOptions::default();
        TrunkSettings {
            uri: t.uri.to_string(),
            username: t.username.clone(),
            password: t.password.clone(),
            number_format: match t.number_format {
                NumberFormat::E164 => None,
                NumberFormat::International => Some("international".into()),
                NumberFormat::National => Some("national".into()),
            },
            sources: t.sources.clone(),
            register: o.register.then_some(true),
            register_expires: (o.register_expires != d.register_expires)
                .then_some(o.register_expires),
            register_retry_secs: (o.register_retry_secs != d.register_retry_secs)
                .then_some(o.register_retry_secs),
            contact_user: o.contact_user.clone(),
            realm: o.realm.clone(),
            qualify: (o.qualify_secs != 0).then_some(o.qualify_secs),
            outbound_proxy: o.outbound_proxy.as_ref().map(|u| u.to_string()),
            from_user: o.from_user.clone(),
            from_domain: o.from_domain.clone(),
            caller_id_header: match o.caller_id_header {
                CallerIdHeader::Asserted => None,
                CallerIdHeader::Preferred => Some("ppi".into()),
                CallerIdHeader::None => Some("none".into()),
            },
        }
    }

    /// The trunk these settings make, checked exactly as a `[[trunk]]` of the file is; the
    /// error names the key at fault.
    pub fn check(&self, name: &str, enabled: bool) -> Result<TrunkConfig, FieldError> {
        let bad = |field: &str, message: String| FieldError {
            field: field.to_owned(),
            message,
        };
        let table = toml::Table::try_from(self)
            .map_err(|e| bad("settings", format!("cannot be written as TOML: {e}")))?;
        let mut trunk = toml::Table::new();
        trunk.insert("name".into(), toml::Value::String(name.to_owned()));
        trunk.insert("enabled".into(), toml::Value::Boolean(enabled));
        trunk.extend(table);
        let mut doc = toml::Table::new();
        doc.insert(
            "trunk".into(),
            toml::Value::Array(vec![toml::Value::Table(trunk)]),
        );
        let text = toml::to_string(&doc)
            .map_err(|e| bad("settings", format!("cannot be written as TOML: {e}")))?;
        match Config::from_toml_str(&text, Path::new("trunk")) {
            Ok(mut c) => c
                .trunks
                .pop()
                .ok_or_else(|| bad("settings", "no trunk".into())),
            Err(e) => {
                let field = e
                    .key()
                    .map(|k| {
                        k.strip_prefix("trunk[0].")
                            .unwrap_or(k)
                            .split(['.', '['])
                            .next()
                            .unwrap_or(k)
                            .to_owned()
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
}

/// One row of `trunks`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkRow {
    pub name: String,
    /// [`SOURCE_CONFIG`] or [`SOURCE_WEB`].
    pub source: String,
    pub enabled: bool,
    pub position: i64,
    pub settings: TrunkSettings,
    pub updated_at: i64,
}

impl TrunkRow {
    /// Whether the configuration file manages this trunk (read-only in the dashboard and API).
    pub fn from_file(&self) -> bool {
        self.source == SOURCE_CONFIG
    }
}

/// What a synchronisation with the file changed, by trunk name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrunkSync {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl TrunkSync {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

fn now_unix() -> i64 {
    super::unix_now()
}

/// Every trunk, in order of preference: the file's in file order, then the web's as added.
pub fn list(conn: &Connection) -> Result<Vec<TrunkRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT name, source, enabled, position, settings, updated_at FROM trunks \
         ORDER BY source <> 'config', position, rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)? != 0,
            r.get::<_, i64>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, source, enabled, position, json, updated_at) = row?;
        let settings = match serde_json::from_str::<TrunkSettings>(&json) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(trunk = %name, "stored trunk settings unreadable, skipped: {e}");
                continue;
            }
        };
        out.push(TrunkRow {
            name,
            source,
            enabled,
            position,
            settings,
            updated_at,
        });
    }
    Ok(out)
}

/// One trunk by name.
pub fn get(conn: &Connection, name: &str) -> Result<Option<TrunkRow>, StoreError> {
    Ok(list(conn)?.into_iter().find(|r| r.name == name))
}

/// The trunks the gateway uses, in order of preference (disabled ones included, marked so).
/// A stored trunk that no longer passes the checks is left out with an error in the log.
pub fn effective(conn: &Connection) -> Result<Vec<TrunkConfig>, StoreError> {
    let mut out = Vec::new();
    for row in list(conn)? {
        match row.settings.check(&row.name, row.enabled) {
            Ok(t) => out.push(t),
            Err(e) => tracing::error!(trunk = %row.name, "stored trunk not used: {e}"),
        }
    }
    Ok(out)
}

/// The trunks a command-line tool (`pasarela route`) should know: the file's, then those added
/// in the dashboard or the API (when the database file exists; it is not created), as `serve`
/// uses them. The file wins on a name.
pub fn for_tools(from_file: &[TrunkConfig], path: &Path) -> Result<Vec<TrunkConfig>, StoreError> {
    let mut out = from_file.to_vec();
    if path.exists() {
        let store = super::Store::open(path)?;
        for row in list(&store.conn)? {
            if row.from_file() || out.iter().any(|t| t.name == row.name) {
                continue;
            }
            match row.settings.check(&row.name, row.enabled) {
                Ok(t) => out.push(t),
                Err(e) => tracing::error!(trunk = %row.name, "stored trunk not used: {e}"),
            }
        }
    }
    Ok(out)
}

/// Makes the `config` rows match the file's `trunks` (taking over a web row of the same name),
/// deleting `config` rows no longer in the file. One transaction.
pub fn sync_config(conn: &mut Connection, trunks: &[TrunkConfig]) -> Result<TrunkSync, StoreError> {
    let now = now_unix();
    let before: Vec<TrunkRow> = list(conn)?;
    let tx = conn.transaction()?;
    let mut out = TrunkSync::default();
    for (i, t) in trunks.iter().enumerate() {
        let settings = TrunkSettings::from_config(t);
        let json =
            serde_json::to_string(&settings).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let position = i64::try_from(i).unwrap_or(i64::MAX);
        match before.iter().find(|r| r.name == t.name) {
            Some(r) if r.from_file() && r.settings == settings && r.enabled == t.enabled => {
                if r.position != position {
                    tx.execute(
                        "UPDATE trunks SET position = ?2 WHERE name = ?1",
                        params![t.name, position],
                    )?;
                }
                continue;
            }
            Some(r) => {
                if !r.from_file() {
                    tracing::warn!(trunk = %t.name, "a [[trunk]] of the configuration file replaces the trunk of the same name added in the dashboard");
                }
                out.changed.push(t.name.clone());
            }
            None => out.added.push(t.name.clone()),
        }
        tx.execute(
            "INSERT INTO trunks (name, source, enabled, position, settings, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) \
             ON CONFLICT (name) DO UPDATE SET source = excluded.source, enabled = excluded.enabled, \
             position = excluded.position, settings = excluded.settings, updated_at = excluded.updated_at",
            params![t.name, SOURCE_CONFIG, t.enabled, position, json, now],
        )?;
    }
    let wanted: HashSet<&str> = trunks.iter().map(|t| t.name.as_str()).collect();
    for r in before.iter().filter(|r| r.from_file()) {
        if !wanted.contains(r.name.as_str()) {
            tx.execute(
                "DELETE FROM trunks WHERE name = ?1 AND source = ?2",
                params![r.name, SOURCE_CONFIG],
            )?;
            out.removed.push(r.name.clone());
        }
    }
    tx.commit()?;
    Ok(out)
}

/// Why a change from the dashboard or the API was refused (trunks, and the ring groups and
/// routes of [`super::inbound`]).
#[derive(Debug, thiserror::Error)]
pub enum TrunkChangeError {
    /// A setting does not pass the checks.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// The trunk belongs to the configuration file.
    #[error("`{0}` is managed by the configuration file; change it there")]
    FromFile(String),
    /// A new trunk with the name of an existing one.
    #[error("`{0}` already exists")]
    Exists(String),
    /// No such trunk.
    #[error("`{0}` does not exist")]
    Unknown(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for TrunkChangeError {
    fn from(e: rusqlite::Error) -> Self {
        TrunkChangeError::Store(StoreError::from(e))
    }
}

/// A trunk name the dashboard and the API accept: letters, digits, `-`, `_`, `.`; at most 32.
pub fn check_name(name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(FieldError {
            field: "name".into(),
            message: "use 1 to 32 letters, digits, `-`, `_` or `.`".into(),
        })
    }
}

/// Adds (`new`) or replaces a web trunk after checking it. An empty password of an existing
/// trunk keeps the stored one.
pub fn save_web(
    conn: &mut Connection,
    name: &str,
    enabled: bool,
    mut settings: TrunkSettings,
    new: bool,
) -> Result<(), TrunkChangeError> {
    check_name(name)?;
    let existing = get(conn, name)?;
    match (&existing, new) {
        (Some(r), _) if r.from_file() => return Err(TrunkChangeError::FromFile(name.into())),
        (Some(_), true) => return Err(TrunkChangeError::Exists(name.into())),
        (None, false) => return Err(TrunkChangeError::Unknown(name.into())),
        _ => {}
    }
    if settings.password.as_deref().is_none_or(str::is_empty) {
        settings.password = existing.as_ref().and_then(|r| r.settings.password.clone());
        if settings.username.is_none() {
            settings.password = None;
        }
    }
    settings.check(name, enabled)?;
    let json = serde_json::to_string(&settings).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let now = now_unix();
    if new {
        let position: i64 = conn.query_row(
            "SELECT coalesce(max(position), -1) + 1 FROM trunks WHERE source = ?1",
            [SOURCE_WEB],
            |r| r.get(0),
        )?;
        conn.execute(
            "INSERT INTO trunks (name, source, enabled, position, settings, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![name, SOURCE_WEB, enabled, position, json, now],
        )?;
    } else {
        conn.execute(
            "UPDATE trunks SET enabled = ?2, settings = ?3, updated_at = ?4 \
             WHERE name = ?1 AND source = ?5",
            params![name, enabled, json, now, SOURCE_WEB],
        )?;
    }
    Ok(())
}

fn web_row(conn: &Connection, name: &str) -> Result<TrunkRow, TrunkChangeError> {
    match get(conn, name)? {
        None => Err(TrunkChangeError::Unknown(name.into())),
        Some(r) if r.from_file() => Err(TrunkChangeError::FromFile(name.into())),
        Some(r) => Ok(r),
    }
}

/// Enables or disables a web trunk.
pub fn set_enabled(conn: &Connection, name: &str, enabled: bool) -> Result<(), TrunkChangeError> {
    web_row(conn, name)?;
    conn.execute(
        "UPDATE trunks SET enabled = ?2, updated_at = ?3 WHERE name = ?1 AND source = ?4",
        params![name, enabled, now_unix(), SOURCE_WEB],
    )?;
    Ok(())
}

/// Deletes a web trunk.
pub fn delete_web(conn: &Connection, name: &str) -> Result<(), TrunkChangeError> {
    web_row(conn, name)?;
    conn.execute(
        "DELETE FROM trunks WHERE name = ?1 AND source = ?2",
        params![name, SOURCE_WEB],
    )?;
    Ok(())
}

/// Whether a trunk of this name exists.
pub fn exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM trunks WHERE name = ?1", [name], |_| Ok(()))
        .optional()?
        .is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrations::MIGRATIONS
            .to_latest(&mut c)
            .unwrap();
        c
    }

    fn file_trunk(name: &str, uri: &str) -> TrunkConfig {
        TrunkSettings {
            uri: uri.into(),
            username: Some("u".into()),
            password: Some("p".into()),
            register: Some(true),
            qualify: Some(30),
            number_format: Some("national".into()),
            ..TrunkSettings::default()
        }
        .check(name, true)
        .unwrap()
    }

    #[test]
    fn settings_round_trip_through_the_file_checks() {
        let t = file_trunk("carrier", "sip:127.0.0.5:5060");
        let s = TrunkSettings::from_config(&t);
        assert_eq!(s.check("carrier", true).unwrap(), t);
    }

    #[test]
    fn errors_name_the_field() {
        let s = TrunkSettings {
            uri: "tel:+4930".into(),
            ..TrunkSettings::default()
        };
        assert_eq!(s.check("x", true).unwrap_err().field, "uri");
        let s = TrunkSettings {
            uri: "sip:gw.test".into(),
            username: Some("u".into()),
            ..TrunkSettings::default()
        };
        assert_eq!(s.check("x", true).unwrap_err().field, "password");
        let s = TrunkSettings {
            uri: "sip:gw.test".into(),
            sources: vec!["10.0.0.0/40".into()],
            ..TrunkSettings::default()
        };
        assert_eq!(s.check("x", true).unwrap_err().field, "sources");
        assert_eq!(check_name("a b").unwrap_err().field, "name");
    }

    #[test]
    fn the_file_seeds_and_wins_the_web_edits_its_own() {
        let mut c = conn();
        let sync = sync_config(&mut c, &[file_trunk("carrier", "sip:127.0.0.5")]).unwrap();
        assert_eq!(sync.added, ["carrier"]);
        assert!(
            sync_config(&mut c, &[file_trunk("carrier", "sip:127.0.0.5")])
                .unwrap()
                .is_empty()
        );
        let web = TrunkSettings {
            uri: "sip:127.0.0.6".into(),
            ..TrunkSettings::default()
        };
        assert!(matches!(
            save_web(&mut c, "carrier", true, web.clone(), true),
            Err(TrunkChangeError::FromFile(_))
        ));
        assert!(matches!(
            set_enabled(&c, "carrier", false),
            Err(TrunkChangeError::FromFile(_))
        ));
        save_web(&mut c, "backup", true, web.clone(), true).unwrap();
        assert!(matches!(
            save_web(&mut c, "backup", true, web.clone(), true),
            Err(TrunkChangeError::Exists(_))
        ));
        let names: Vec<String> = effective(&c).unwrap().into_iter().map(|t| t.name).collect();
        assert_eq!(names, ["carrier", "backup"]);
        // An empty password keeps the stored one.
        let with_pw = TrunkSettings {
            username: Some("u".into()),
            password: Some("secret".into()),
            ..web.clone()
        };
        save_web(&mut c, "backup", true, with_pw.clone(), false).unwrap();
        let no_pw = TrunkSettings {
            password: None,
            ..with_pw
        };
        save_web(&mut c, "backup", false, no_pw, false).unwrap();
        let row = get(&c, "backup").unwrap().unwrap();
        assert_eq!(row.settings.password.as_deref(), Some("secret"));
        assert!(!row.enabled);
        // The file adds a trunk of the web's name: the file's wins; gone from the file: gone.
        let sync = sync_config(
            &mut c,
            &[
                file_trunk("carrier", "sip:127.0.0.5"),
                file_trunk("backup", "sip:127.0.0.7"),
            ],
        )
        .unwrap();
        assert_eq!(sync.changed, ["backup"]);
        assert!(get(&c, "backup").unwrap().unwrap().from_file());
        let sync = sync_config(&mut c, &[]).unwrap();
        assert_eq!(sync.removed.len(), 2);
        assert!(list(&c).unwrap().is_empty());
        save_web(&mut c, "w", true, web, true).unwrap();
        delete_web(&c, "w").unwrap();
        assert!(!exists(&c, "w").unwrap());
    }
}
