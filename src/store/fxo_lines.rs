//! Analog (FXO) lines of a telephony card added in the dashboard or the API (table
//! `fxo_lines`, issue 17). The configuration file's `[[fxo]]` tables are not copied here: they
//! are shown read-only "from the configuration file", and an `[[fxo]]` of the file takes over a
//! row of the same name (the file wins), as for trunks and modem lines
//! ([`super::modem_lines`]).
//!
//! A line's keys are kept as JSON ([`FxoLineSettings`], the `[[fxo]]` keys other than `name`)
//! and checked by the file's own validation (`RawFxo::validate`), so a line means the same
//! wherever it was written.

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::pstn::dahdi::config::{FxoConfig, RawFxo};
use crate::pstn::dahdi::fxo::{AnswerDetect, CidMode};

use super::line_limits::LineLimits;
use super::trunks::{FieldError, TrunkChangeError};
use super::StoreError;

/// The keys of one FXO line besides its name, as in `[[fxo]]` (a key left out takes the
/// file's default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FxoLineSettings {
    /// The DAHDI channel (`1`, `dahdi:1`) or `sim:/path` for the simulator.
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller_id: Option<CidMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<AnswerDetect>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub silence_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dial_tone_secs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rx_gain_db: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tx_gain_db: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_cancel: Option<i32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub incoming: Vec<String>,
    /// The line's limits (`[limits.trunk.NAME]` for a line of the file).
    #[serde(skip_serializing_if = "LineLimits::is_unset")]
    pub limits: LineLimits,
}

impl FxoLineSettings {
    /// The `[[fxo]]` table these settings are (the file's defaults for the keys left out).
    pub fn to_raw(&self, name: &str) -> Result<RawFxo, FieldError> {
        let mut v = serde_json::to_value(self).map_err(|e| FieldError {
            field: "settings".into(),
            message: e.to_string(),
        })?;
        if let Some(o) = v.as_object_mut() {
            o.insert("name".into(), name.into());
            // Not an `[[fxo]]` key: checked on its own.
            o.remove("limits");
        }
        serde_json::from_value(v).map_err(|e| FieldError {
            field: "settings".into(),
            message: e.to_string(),
        })
    }

    /// The line these settings make, checked exactly as an `[[fxo]]` of the file is; the
    /// error names the key at fault.
    pub fn check(&self, name: &str) -> Result<FxoConfig, FieldError> {
        if self.channel.trim().is_empty() {
            return Err(FieldError {
                field: "channel".into(),
                message: "the card's channel is needed (e.g. 1)".into(),
            });
        }
        self.limits.check()?;
        self.to_raw(name)?.validate().map_err(|e| FieldError {
            field: e.key.to_owned(),
            message: e.why,
        })
    }
}

/// One row of `fxo_lines`.
#[derive(Debug, Clone, PartialEq)]
pub struct FxoRow {
    pub name: String,
    pub enabled: bool,
    pub settings: FxoLineSettings,
}

impl FxoRow {
    /// The line it makes (`None`, logged, when the stored settings no longer pass the checks).
    pub fn config(&self) -> Option<FxoConfig> {
        match self.settings.check(&self.name) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(line = %self.name, "stored FXO line not used: {e}");
                None
            }
        }
    }
}

fn row(name: String, enabled: bool, json: &str) -> Result<FxoRow, StoreError> {
    let settings = serde_json::from_str(json)
        .map_err(|e| StoreError::Invalid(format!("FXO line {name}: {e}")))?;
    Ok(FxoRow {
        name,
        enabled,
        settings,
    })
}

type RawRow = (String, bool, String);

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((r.get(0)?, r.get::<_, i64>(1)? != 0, r.get(2)?))
}

/// Every FXO line of the dashboard, as added.
pub fn list(conn: &Connection) -> Result<Vec<FxoRow>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT name, enabled, settings FROM fxo_lines ORDER BY position, rowid")?;
    let rows = stmt.query_map([], raw_row)?;
    let mut out = Vec::new();
    for r in rows {
        let (name, enabled, json) = r?;
        out.push(row(name, enabled, &json)?);
    }
    Ok(out)
}

impl super::Store {
    /// Every FXO line of the dashboard, as added ([`list`]).
    pub fn fxo_lines(&self) -> Result<Vec<FxoRow>, StoreError> {
        list(&self.conn)
    }
}

/// One FXO line of the dashboard.
pub fn get(conn: &Connection, name: &str) -> Result<Option<FxoRow>, StoreError> {
    let found = conn
        .query_row(
            "SELECT name, enabled, settings FROM fxo_lines WHERE name = ?1",
            [name],
            raw_row,
        )
        .optional()?;
    found.map(|(n, e, j)| row(n, e, &j)).transpose()
}

/// Whether `name` is an FXO line of the dashboard (a modem line may not take it).
pub fn exists(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM fxo_lines WHERE name = ?1)",
        [name],
        |r| r.get(0),
    )?)
}

/// Checks that one `incoming` entry that is not an extension number is a ring group.
pub(super) fn check_incoming(
    conn: &Connection,
    incoming: &[String],
) -> Result<(), TrunkChangeError> {
    if let [group] = incoming {
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
    Ok(())
}

/// Adds (`new`) or replaces an FXO line after checking it. `file_lines`: the names of the
/// configuration file's lines (a new line may not take one); the name of a trunk or of a
/// modem line is refused too (a line is a trunk for the router and in the records), and so is
/// a channel another FXO line of the dashboard has. An `incoming` entry that is not an
/// extension number must be a ring group.
pub fn save_web(
    conn: &mut Connection,
    name: &str,
    enabled: bool,
    settings: FxoLineSettings,
    new: bool,
    file_lines: &[String],
) -> Result<(), TrunkChangeError> {
    super::trunks::check_name(name)?;
    let field = |field: &str, message: String| {
        TrunkChangeError::Field(FieldError {
            field: field.into(),
            message,
        })
    };
    if file_lines.iter().any(|l| l == name) {
        return Err(TrunkChangeError::FromFile(name.into()));
    }
    if super::trunks::get(conn, name)?.is_some() {
        return Err(field(
            "name",
            format!("`{name}` is already the name of a trunk"),
        ));
    }
    if super::modem_lines::get(conn, name)?.is_some() {
        return Err(field(
            "name",
            format!("`{name}` is already the name of a modem line"),
        ));
    }
    let existing = get(conn, name)?;
    match (&existing, new) {
        (Some(_), true) => return Err(TrunkChangeError::Exists(name.into())),
        (None, false) => return Err(TrunkChangeError::Unknown(name.into())),
        _ => {}
    }
    let checked = settings.check(name)?;
    for other in list(conn)?.iter().filter(|r| r.name != name) {
        if other.settings.channel.trim() == checked.channel {
            return Err(field(
                "channel",
                format!(
                    "line `{}` already uses channel {}",
                    other.name, checked.channel
                ),
            ));
        }
    }
    check_incoming(conn, &settings.incoming)?;
    let json = serde_json::to_string(&settings).map_err(|e| StoreError::Invalid(e.to_string()))?;
    super::line_rows::write(
        conn,
        super::line_rows::LineTable::Fxo,
        name,
        enabled,
        &json,
        new,
    )?;
    Ok(())
}

/// Enables or disables a FXO line of the dashboard.
pub fn set_enabled(conn: &Connection, name: &str, enabled: bool) -> Result<(), TrunkChangeError> {
    super::line_rows::set_enabled(conn, super::line_rows::LineTable::Fxo, name, enabled)
}

/// Deletes an FXO line of the dashboard.
pub fn delete(conn: &Connection, name: &str) -> Result<(), TrunkChangeError> {
    super::line_rows::delete(conn, super::line_rows::LineTable::Fxo, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chan(c: &str) -> FxoLineSettings {
        FxoLineSettings {
            channel: c.into(),
            incoming: vec!["101".into()],
            ..FxoLineSettings::default()
        }
    }

    #[test]
    fn lines_are_checked_like_the_file_and_name_the_field() {
        let mut s = crate::store::Store::open_in_memory().unwrap();
        let conn = &mut s.conn;
        save_web(conn, "fxo2", true, chan("2"), true, &[]).unwrap();
        let row = get(conn, "fxo2").unwrap().unwrap();
        assert_eq!(row.settings, chan("2"));
        // The file's defaults for the keys left out.
        let c = row.config().unwrap();
        assert_eq!(c.incoming, ["101"]);
        assert_eq!(c.settings.name, "fxo2");
        assert_eq!(c.settings.country.code, "DE");
        assert_eq!(c.echo_cancel, 128);
        assert_eq!(c.settings.dial_tone_ms, 3000);
        assert!(exists(conn, "fxo2").unwrap());

        assert!(matches!(
            save_web(conn, "fxo2", true, chan("3"), true, &[]),
            Err(TrunkChangeError::Exists(_))
        ));
        assert!(matches!(
            save_web(conn, "fxo1", true, chan("3"), true, &["fxo1".into()]),
            Err(TrunkChangeError::FromFile(_))
        ));
        let field = |r: Result<(), TrunkChangeError>| match r {
            Err(TrunkChangeError::Field(f)) => f.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(save_web(conn, "f3", true, chan(""), true, &[])),
            "channel"
        );
        assert_eq!(
            field(save_web(conn, "f3", true, chan("x"), true, &[])),
            "channel"
        );
        // Channel 2 is fxo2's.
        assert_eq!(
            field(save_web(conn, "f3", true, chan("2"), true, &[])),
            "channel"
        );
        let fr = FxoLineSettings {
            country: Some("FR".into()),
            ..chan("3")
        };
        assert_eq!(field(save_web(conn, "f3", true, fr, true, &[])), "country");
        let loud = FxoLineSettings {
            rx_gain_db: Some(30.0),
            ..chan("3")
        };
        assert_eq!(
            field(save_web(conn, "f3", true, loud, true, &[])),
            "rx_gain_db"
        );
        let group = FxoLineSettings {
            incoming: vec!["sales".into()],
            ..chan("3")
        };
        assert_eq!(
            field(save_web(conn, "f3", true, group, true, &[])),
            "incoming"
        );
        assert_eq!(
            field(save_web(conn, "bad name", true, chan("3"), true, &[])),
            "name"
        );
        // A modem line's name is taken, and an FXO line's name is refused to a modem line.
        crate::store::modem_lines::save_web(
            conn,
            "gsm1",
            true,
            crate::store::modem_lines::ModemSettings {
                data_port: Some("/dev/ttyUSB2".into()),
                audio_port: Some("/dev/ttyUSB1".into()),
                ..Default::default()
            },
            true,
            &[],
        )
        .unwrap();
        assert_eq!(
            field(save_web(conn, "gsm1", true, chan("3"), true, &[])),
            "name"
        );

        // Edit (same channel is fine for the line itself), disable, delete.
        let edited = FxoLineSettings {
            tx_gain_db: Some(-3.0),
            answer: Some(AnswerDetect::Polarity),
            ..chan("2")
        };
        save_web(conn, "fxo2", true, edited.clone(), false, &[]).unwrap();
        set_enabled(conn, "fxo2", false).unwrap();
        let row = get(conn, "fxo2").unwrap().unwrap();
        assert_eq!((row.enabled, &row.settings), (false, &edited));
        assert_eq!(row.config().unwrap().tx_gain_db, -3.0);
        assert_eq!(list(conn).unwrap().len(), 1);
        delete(conn, "fxo2").unwrap();
        assert!(matches!(
            delete(conn, "fxo2"),
            Err(TrunkChangeError::Unknown(_))
        ));
        assert!(list(conn).unwrap().is_empty());
    }
}
