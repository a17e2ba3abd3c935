//! The rows both kinds of dashboard PSTN line share (`modem_lines`, `fxo_lines`): a name, an
//! enabled flag, a position and the settings as JSON. Writing, enabling and deleting them is the
//! same for either table; the table name is one of this crate's constants, never outside input.

use rusqlite::{params, Connection};

use super::trunks::TrunkChangeError;

/// The line tables of the dashboard.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LineTable {
    Modem,
    Fxo,
}

impl LineTable {
    fn name(self) -> &'static str {
        match self {
            LineTable::Modem => "modem_lines",
            LineTable::Fxo => "fxo_lines",
        }
    }
}

/// Inserts a new line at the end of the order (`new`) or replaces an existing one's settings.
pub(crate) fn write(
    conn: &Connection,
    table: LineTable,
    name: &str,
    enabled: bool,
    json: &str,
    new: bool,
) -> rusqlite::Result<()> {
    let t = table.name();
    let now = super::unix_now();
    if new {
        let position: i64 = conn.query_row(
            &format!("SELECT coalesce(max(position), -1) + 1 FROM {t}"),
            [],
            |r| r.get(0),
        )?;
        conn.execute(
            &format!(
                "INSERT INTO {t} (name, enabled, position, settings, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)"
            ),
            params![name, enabled, position, json, now],
        )?;
    } else {
        conn.execute(
            &format!("UPDATE {t} SET enabled = ?2, settings = ?3, updated_at = ?4 WHERE name = ?1"),
            params![name, enabled, json, now],
        )?;
    }
    Ok(())
}

/// Enables or disables a line; an unknown name is [`TrunkChangeError::Unknown`].
pub(crate) fn set_enabled(
    conn: &Connection,
    table: LineTable,
    name: &str,
    enabled: bool,
) -> Result<(), TrunkChangeError> {
    let n = conn.execute(
        &format!(
            "UPDATE {} SET enabled = ?2, updated_at = ?3 WHERE name = ?1",
            table.name()
        ),
        params![name, enabled, super::unix_now()],
    )?;
    if n == 0 {
        return Err(TrunkChangeError::Unknown(name.into()));
    }
    Ok(())
}

/// Enables a disabled line or disables an enabled one, in one statement; an unknown name is
/// [`TrunkChangeError::Unknown`].
pub(crate) fn toggle(
    conn: &Connection,
    table: LineTable,
    name: &str,
) -> Result<(), TrunkChangeError> {
    let n = conn.execute(
        &format!(
            "UPDATE {} SET enabled = NOT enabled, updated_at = ?2 WHERE name = ?1",
            table.name()
        ),
        params![name, super::unix_now()],
    )?;
    if n == 0 {
        return Err(TrunkChangeError::Unknown(name.into()));
    }
    Ok(())
}

/// Deletes a line; an unknown name is [`TrunkChangeError::Unknown`].
pub(crate) fn delete(
    conn: &Connection,
    table: LineTable,
    name: &str,
) -> Result<(), TrunkChangeError> {
    let sql = format!("DELETE FROM {} WHERE name = ?1", table.name());
    if conn.execute(&sql, [name])? == 0 {
        return Err(TrunkChangeError::Unknown(name.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toggling_flips_the_stored_flag() {
        let s = crate::store::Store::open_in_memory().unwrap();
        write(
            &s.conn,
            LineTable::Fxo,
            "fxo2",
            true,
            r#"{"channel":"2"}"#,
            true,
        )
        .unwrap();
        let enabled = |c: &Connection| -> bool {
            c.query_row(
                "SELECT enabled FROM fxo_lines WHERE name = 'fxo2'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        toggle(&s.conn, LineTable::Fxo, "fxo2").unwrap();
        assert!(!enabled(&s.conn));
        toggle(&s.conn, LineTable::Fxo, "fxo2").unwrap();
        assert!(enabled(&s.conn));
        assert!(matches!(
            toggle(&s.conn, LineTable::Modem, "fxo2"),
            Err(TrunkChangeError::Unknown(_))
        ));
    }
}
