//! The rows of calls still up (migration `0008_calls_in_progress.sql`): an answered call's
//! record marked `end_reason = 'in progress'` and keyed by `call_key`, and the dialog state of
//! its legs in `call_legs` with `seen_ms`, the last time it was known to be up. What these rows
//! mean, and what a crash makes of them, is [`crate::cdr::in_progress`]'s business.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{insert_row, record_from_row, RowExtra, RECORD_COLUMNS};
use crate::cdr::in_progress::IN_PROGRESS;
use crate::cdr::record::CallRecord;
use crate::store::StoreError;

/// Removes a call's in-progress record (a rewrite of it, or its end).
pub const DELETE_RECORD: &str = "DELETE FROM call_records WHERE call_key = ?1";
/// Stores a call's legs and when it was last up.
pub const WRITE_LEGS: &str =
    "INSERT OR REPLACE INTO call_legs (call_key, seen_ms, legs) VALUES (?1, ?2, ?3)";
/// The heartbeat: every call in progress was up at `?1` (a pass over the calls up, not the
/// records).
pub const HEARTBEAT_SEEN: &str = "UPDATE call_legs SET seen_ms = ?1";
/// The heartbeat: a call's legs changed.
pub const HEARTBEAT_LEGS: &str = "UPDATE call_legs SET legs = ?1 WHERE call_key = ?2";
/// Removes a call's legs at its end.
pub const DELETE_LEGS: &str = "DELETE FROM call_legs WHERE call_key = ?1";

/// Writes an answered call in one transaction: its record so far, marked in progress (in
/// place of an earlier one with the same key), and its legs (`legs`, JSON).
pub fn write_up(
    conn: &mut Connection,
    key: &str,
    record: &CallRecord,
    legs: &str,
    seen_ms: i64,
) -> Result<(), StoreError> {
    let tx = super::WriterTx::begin(conn)?;
    tx.up(key, record, legs, seen_ms)?;
    tx.commit()
}

/// [`write_up`] in an open transaction.
pub(crate) fn up_in(
    tx: &Transaction<'_>,
    key: &str,
    record: &CallRecord,
    legs: &str,
    seen_ms: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(DELETE_RECORD)?.execute(params![key])?;
    // Marked in progress and keyed in the row's one write.
    let extra = RowExtra {
        end_reason: Some(IN_PROGRESS),
        call_key: Some(key),
        signalling: None,
    };
    insert_row(tx, record, extra)?;
    tx.prepare_cached(WRITE_LEGS)?
        .execute(params![key, seen_ms, legs])?;
    Ok(())
}

/// The heartbeat, in one transaction: every call in progress was up at `seen_ms`; the legs of
/// `changed` (key, legs JSON) are stored anew.
pub fn heartbeat(
    conn: &mut Connection,
    seen_ms: i64,
    changed: &[(String, String)],
) -> Result<(), StoreError> {
    let tx = super::WriterTx::begin(conn)?;
    tx.heartbeat(seen_ms, changed)?;
    tx.commit()
}

/// [`heartbeat`] in an open transaction.
pub(crate) fn heartbeat_in(
    tx: &Transaction<'_>,
    seen_ms: i64,
    changed: &[(String, String)],
) -> rusqlite::Result<()> {
    tx.prepare_cached(HEARTBEAT_SEEN)?
        .execute(params![seen_ms])?;
    let mut stmt = tx.prepare_cached(HEARTBEAT_LEGS)?;
    for (key, legs) in changed {
        stmt.execute(params![legs, key])?;
    }
    Ok(())
}

/// Removes what a call left in progress (before its final record is inserted).
pub(crate) fn finish(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(DELETE_RECORD)?.execute(params![key])?;
    tx.prepare_cached(DELETE_LEGS)?.execute(params![key])?;
    Ok(())
}

/// A call left in progress, as stored.
#[derive(Debug, Clone)]
pub struct UpRow {
    /// Its `call_key`.
    pub key: String,
    /// Its record as written when it was answered.
    pub record: CallRecord,
    /// The last time it was known to be up and its legs (JSON), if its legs were stored.
    pub legs: Option<(i64, String)>,
}

/// The calls left in progress (by a previous run, when read at start-up).
pub fn left_up(conn: &Connection) -> Result<Vec<UpRow>, StoreError> {
    let sql = format!(
        "SELECT {RECORD_COLUMNS}, call_key FROM call_records WHERE end_reason = ?1 \
         AND call_key IS NOT NULL"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![IN_PROGRESS], |row| {
        // call_key follows the 34 columns of RECORD_COLUMNS.
        Ok((record_from_row(row)?, row.get::<_, String>(34)?))
    })?;
    let mut found = Vec::new();
    for row in rows {
        found.push(row?);
    }
    let mut legs = conn.prepare("SELECT seen_ms, legs FROM call_legs WHERE call_key = ?1")?;
    let mut out = Vec::with_capacity(found.len());
    for (record, key) in found {
        let l = legs
            .query_row(params![key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        out.push(UpRow {
            key,
            record,
            legs: l,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::record::tests::sample;
    use crate::cdr::writer::Note;

    #[test]
    fn up_heartbeat_finish_and_what_is_left() {
        let (_d, mut conn) = super::super::tests::open();
        write_up(&mut conn, "k1", &sample(1_000), "[]", 5_000).unwrap();
        write_up(&mut conn, "k2", &sample(2_000), "[]", 5_000).unwrap();
        // The same call written again replaces its row.
        write_up(&mut conn, "k1", &sample(1_000), "[1]", 6_000).unwrap();
        heartbeat(&mut conn, 9_000, &[("k2".into(), "[2]".into())]).unwrap();
        let mut up = left_up(&conn).unwrap();
        up.sort_by(|a, b| a.key.cmp(&b.key));
        let seen: Vec<(&str, Option<(i64, &str)>)> = up
            .iter()
            .map(|u| {
                (
                    u.key.as_str(),
                    u.legs.as_ref().map(|(s, l)| (*s, l.as_str())),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![("k1", Some((9_000, "[1]"))), ("k2", Some((9_000, "[2]")))]
        );
        assert_eq!(up[0].record.start_ms, 1_000);
        // Its final record replaces what k1 left.
        let note = Note {
            key: Some("k1".into()),
            reason: Some("test".into()),
            signalling: Some("udp/udp".into()),
        };
        super::super::commit_finished(&mut conn, &[sample(1_000)], &[note]).unwrap();
        let up = left_up(&conn).unwrap();
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].key, "k2");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM call_records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        let finished: (String, String) = conn
            .query_row(
                "SELECT end_reason, signalling FROM call_records WHERE call_key IS NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(finished, ("test".to_owned(), "udp/udp".to_owned()));
    }
}
