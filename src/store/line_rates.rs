//! Which rate table rates each PSTN line (table `rate_table_lines`, issue 17): set from the
//! Lines page and the API, read by billing and by the router's least-cost order
//! ([`crate::cdr::line_prices`]). A line has at most one table.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use super::trunks::{FieldError, TrunkChangeError};

/// Line name → rate table name.
pub fn tables_of_lines(conn: &Connection) -> rusqlite::Result<BTreeMap<String, String>> {
    let mut stmt = conn.prepare(
        "SELECT l.line, t.name FROM rate_table_lines l JOIN rate_tables t ON t.id = l.table_id",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// The names of the rate tables, sorted.
pub fn table_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM rate_tables ORDER BY name")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Gives `line` the rate table `table` (`None` or empty: none of its own, the reference table
/// rates it). An unknown table names the field `rate_table`.
pub fn set_table(
    conn: &mut Connection,
    line: &str,
    table: Option<&str>,
) -> Result<(), TrunkChangeError> {
    let table = table.map(str::trim).filter(|t| !t.is_empty());
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM rate_table_lines WHERE line = ?1", [line])?;
    if let Some(name) = table {
        let n = tx.execute(
            "INSERT INTO rate_table_lines (line, table_id) SELECT ?1, id FROM rate_tables WHERE name = ?2",
            params![line, name],
        )?;
        if n == 0 {
            return Err(TrunkChangeError::Field(FieldError {
                field: "rate_table".into(),
                message: format!("there is no rate table `{name}` (make it on the Rates page)"),
            }));
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_gets_one_table() {
        let mut s = crate::store::Store::open_in_memory().unwrap();
        let conn = &mut s.conn;
        conn.execute_batch(
            "INSERT INTO rate_tables (name, currency, reference) VALUES ('cheap', 'EUR', 0), ('dear', 'EUR', 0);",
        )
        .unwrap();
        assert_eq!(table_names(conn).unwrap(), ["cheap", "dear"]);
        set_table(conn, "gsm", Some("cheap")).unwrap();
        set_table(conn, "gsm", Some("dear")).unwrap();
        assert_eq!(tables_of_lines(conn).unwrap()["gsm"], "dear");
        let e = set_table(conn, "gsm", Some("nope")).unwrap_err();
        assert!(matches!(e, TrunkChangeError::Field(f) if f.field == "rate_table"));
        assert_eq!(
            tables_of_lines(conn).unwrap()["gsm"],
            "dear",
            "unchanged after a refusal"
        );
        set_table(conn, "gsm", None).unwrap();
        assert!(tables_of_lines(conn).unwrap().is_empty());
    }
}
