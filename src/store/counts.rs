//! How much the store holds, for the dashboard's first-steps checklist: extensions, bindings
//! still valid, call records.

use rusqlite::Connection;

use super::StoreError;

/// Row counts of the tables the checklist looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub extensions: u64,
    /// Bindings that have not expired at the time asked about.
    pub live_bindings: u64,
    pub records: u64,
}

/// The counts, with bindings valid after `now` (unix seconds).
pub fn counts(conn: &Connection, now: i64) -> Result<Counts, StoreError> {
    let count = |sql: &str, now: Option<i64>| -> Result<u64, StoreError> {
        let n: i64 = match now {
            Some(now) => conn.query_row(sql, [now], |r| r.get(0))?,
            None => conn.query_row(sql, [], |r| r.get(0))?,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    };
    Ok(Counts {
        extensions: count("SELECT count(*) FROM extensions", None)?,
        live_bindings: count(
            "SELECT count(*) FROM bindings WHERE expires_at > ?1",
            Some(now),
        )?,
        records: count("SELECT count(*) FROM call_records", None)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_store_counts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        drop(crate::store::Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        assert_eq!(counts(&conn, 0).unwrap(), Counts::default());
    }
}
