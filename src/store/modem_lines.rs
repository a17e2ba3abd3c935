//! GSM modem lines added in the dashboard or the API (table `modem_lines`, issue 17). The
//! configuration file's `[[modem]]` tables are not copied here: they are shown read-only "from
//! the configuration file", and a `[[modem]]` of the file takes over a row of the same name
//! (the file wins), as for trunks ([`super::trunks`]).
//!
//! A line's keys are kept as JSON ([`ModemSettings`], the `[[modem]]` keys other than `name`
//! and `enabled`) and checked by the file's own validation (`RawModem::validate`), so a line
//! means the same wherever it was written.

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::pstn::gsm::config::{ModemConfig, RawModem};

use super::line_limits::LineLimits;
use super::trunks::{FieldError, TrunkChangeError};
use super::StoreError;

/// The keys of one modem line besides its name and whether it is enabled, as in `[[modem]]`
/// (`profile_file` is left to the file: the dashboard does not name files to read).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModemSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_port: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio_port: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incoming: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gain_to_modem_db: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gain_from_modem_db: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_interval_secs: Option<u64>,
    /// The line's limits (`[limits.trunk.NAME]` for a line of the file).
    #[serde(skip_serializing_if = "LineLimits::is_unset")]
    pub limits: LineLimits,
}

impl ModemSettings {
    /// The `[[modem]]` table these settings are.
    pub fn to_raw(&self, name: &str, enabled: bool) -> RawModem {
        RawModem {
            name: name.to_owned(),
            profile: self.profile.clone(),
            imei: self.imei.clone(),
            iccid: self.iccid.clone(),
            data_port: self.data_port.as_ref().map(Into::into),
            audio_port: self.audio_port.as_ref().map(Into::into),
            incoming: (!self.incoming.is_empty()).then(|| self.incoming.clone()),
            gain_to_modem_db: self.gain_to_modem_db,
            gain_from_modem_db: self.gain_from_modem_db,
            probe_interval_secs: self.probe_interval_secs,
            enabled: Some(enabled),
            ..RawModem::default()
        }
    }

    /// The line these settings make, checked exactly as a `[[modem]]` of the file is; the
    /// error names the key at fault.
    pub fn check(&self, name: &str, enabled: bool) -> Result<ModemConfig, FieldError> {
        self.limits.check()?;
        self.to_raw(name, enabled)
            .validate()
            .map_err(|e| FieldError {
                field: e.key.to_owned(),
                message: e.message,
            })
    }
}

/// One row of `modem_lines`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModemRow {
    pub name: String,
    pub enabled: bool,
    pub settings: ModemSettings,
}

impl ModemRow {
    /// The line it makes (`None`, logged, when the stored settings no longer pass the checks).
    pub fn config(&self) -> Option<ModemConfig> {
        match self.settings.check(&self.name, self.enabled) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(line = %self.name, "stored modem line not used: {e}");
                None
            }
        }
    }
}

fn row(name: String, enabled: bool, json: &str) -> Result<ModemRow, StoreError> {
    let settings = serde_json::from_str(json)
        .map_err(|e| StoreError::Invalid(format!("modem line {name}: {e}")))?;
    Ok(ModemRow {
        name,
        enabled,
        settings,
    })
}

/// Every modem line of the dashboard, as added.
pub fn list(conn: &Connection) -> Result<Vec<ModemRow>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT name, enabled, settings FROM modem_lines ORDER BY position, rowid")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)? != 0,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (name, enabled, json) = r?;
        out.push(row(name, enabled, &json)?);
    }
    Ok(out)
}

impl super::Store {
    /// Every modem line of the dashboard, as added ([`list`]).
    pub fn modem_lines(&self) -> Result<Vec<ModemRow>, StoreError> {
        list(&self.conn)
    }
}

/// One modem line of the dashboard.
pub fn get(conn: &Connection, name: &str) -> Result<Option<ModemRow>, StoreError> {
    let found = conn
        .query_row(
            "SELECT name, enabled, settings FROM modem_lines WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? != 0,
                    r.get::<_, String>(2)?,
                ))
            },
        )
        .optional()?;
    found.map(|(n, e, j)| row(n, e, &j)).transpose()
}

/// Adds (`new`) or replaces a modem line after checking it. `file_lines`: the names of the
/// configuration file's lines (a new line may not take one); a trunk's name is refused too
/// (a line is a trunk for the router and in the records). An `incoming` entry that is not an
/// extension number must be a ring group.
pub fn save_web(
    conn: &mut Connection,
    name: &str,
    enabled: bool,
    settings: ModemSettings,
    new: bool,
    file_lines: &[String],
) -> Result<(), TrunkChangeError> {
    super::trunks::check_name(name)?;
    let name_taken = |message: String| {
        TrunkChangeError::Field(FieldError {
            field: "name".into(),
            message,
        })
    };
    if file_lines.iter().any(|l| l == name) {
        return Err(TrunkChangeError::FromFile(name.into()));
    }
    if super::trunks::get(conn, name)?.is_some() {
        return Err(name_taken(format!(
            "`{name}` is already the name of a trunk"
        )));
    }
    if super::fxo_lines::exists(conn, name)? {
        return Err(name_taken(format!(
            "`{name}` is already the name of an analog (FXO) line"
        )));
    }
    let existing = get(conn, name)?;
    match (&existing, new) {
        (Some(_), true) => return Err(TrunkChangeError::Exists(name.into())),
        (None, false) => return Err(TrunkChangeError::Unknown(name.into())),
        _ => {}
    }
    settings.check(name, enabled)?;
    if let [group] = settings.incoming.as_slice() {
        if !group.bytes().all(|b| b.is_ascii_digit()) {
            let known: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM ring_groups WHERE name = ?1)",
                [group],
                |r| r.get(0),
            )?;
            if !known {
                return Err(TrunkChangeError::Field(FieldError {
                    field: "incoming".into(),
                    message: format!("`{group}` is neither an extension number nor a ring group"),
                }));
            }
        }
    }
    let json = serde_json::to_string(&settings).map_err(|e| StoreError::Invalid(e.to_string()))?;
    super::line_rows::write(
        conn,
        super::line_rows::LineTable::Modem,
        name,
        enabled,
        &json,
        new,
    )?;
    Ok(())
}

/// Enables or disables a modem line of the dashboard.
pub fn set_enabled(conn: &Connection, name: &str, enabled: bool) -> Result<(), TrunkChangeError> {
    super::line_rows::set_enabled(conn, super::line_rows::LineTable::Modem, name, enabled)
}

/// Deletes a modem line of the dashboard.
pub fn delete(conn: &Connection, name: &str) -> Result<(), TrunkChangeError> {
    super::line_rows::delete(conn, super::line_rows::LineTable::Modem, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> ModemSettings {
        ModemSettings {
            data_port: Some("/dev/ttyUSB2".into()),
            audio_port: Some("/dev/ttyUSB1".into()),
            incoming: vec!["101".into()],
            ..ModemSettings::default()
        }
    }

    #[test]
    fn lines_are_checked_like_the_file_and_name_the_field() {
        let mut s = crate::store::Store::open_in_memory().unwrap();
        let conn = &mut s.conn;
        save_web(conn, "gsm2", true, ports(), true, &[]).unwrap();
        let row = get(conn, "gsm2").unwrap().unwrap();
        assert_eq!(row.settings, ports());
        let c = row.config().unwrap();
        assert_eq!(c.incoming, ["101"]);
        assert!(c.enabled);
        // Twice, a file line's name, a bad IMEI, a gain out of range, an unknown group.
        assert!(matches!(
            save_web(conn, "gsm2", true, ports(), true, &[]),
            Err(TrunkChangeError::Exists(_))
        ));
        assert!(matches!(
            save_web(conn, "gsm1", true, ports(), true, &["gsm1".into()]),
            Err(TrunkChangeError::FromFile(_))
        ));
        let field = |r: Result<(), TrunkChangeError>| match r {
            Err(TrunkChangeError::Field(f)) => f.field,
            other => panic!("{other:?}"),
        };
        let bad_imei = ModemSettings {
            imei: Some("12ab".into()),
            ..ports()
        };
        assert_eq!(
            field(save_web(conn, "g3", true, bad_imei, true, &[])),
            "imei"
        );
        let loud = ModemSettings {
            gain_to_modem_db: Some(40.0),
            ..ports()
        };
        assert_eq!(
            field(save_web(conn, "g3", true, loud, true, &[])),
            "gain_to_modem_db"
        );
        let group = ModemSettings {
            incoming: vec!["sales".into()],
            ..ports()
        };
        assert_eq!(
            field(save_web(conn, "g3", true, group, true, &[])),
            "incoming"
        );
        assert_eq!(
            field(save_web(conn, "bad name", true, ports(), true, &[])),
            "name"
        );
        // Edit, disable, delete.
        let edited = ModemSettings {
            gain_from_modem_db: Some(-3.0),
            ..ports()
        };
        save_web(conn, "gsm2", true, edited.clone(), false, &[]).unwrap();
        set_enabled(conn, "gsm2", false).unwrap();
        let row = get(conn, "gsm2").unwrap().unwrap();
        assert_eq!((row.enabled, row.settings), (false, edited));
        assert_eq!(list(conn).unwrap().len(), 1);
        delete(conn, "gsm2").unwrap();
        assert!(matches!(
            delete(conn, "gsm2"),
            Err(TrunkChangeError::Unknown(_))
        ));
        assert!(list(conn).unwrap().is_empty());
    }
}
