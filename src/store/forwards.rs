//! The `call_handling` table (migration 0018): each extension's call forwarding and ring order
//! ([`CallHandling`]). The configuration file seeds a row; the dashboard and the phone's feature
//! codes change it; the file's values are applied again only when they change in the file
//! (`file_seed` remembers what was applied last).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::routing::forwarding::CallHandling;

/// What the file's settings are remembered as (to see whether they changed).
fn seed_text(h: &CallHandling) -> String {
    format!("{h:?}")
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, CallHandling)> {
    let secs = |v: Option<i64>, d: u32| v.and_then(|v| u32::try_from(v).ok()).unwrap_or(d);
    Ok((
        row.get(0)?,
        CallHandling {
            always: row.get(1)?,
            busy: row.get(2)?,
            no_answer: row.get(3)?,
            no_answer_secs: secs(
                row.get(4)?,
                crate::routing::forwarding::DEFAULT_NO_ANSWER_SECS,
            ),
            unreachable: row.get(5)?,
            sequential: row.get::<_, String>(6)? == "sequential",
            ring_secs: secs(row.get(7)?, crate::routing::forwarding::DEFAULT_RING_SECS),
        },
    ))
}

const COLUMNS: &str = "number, forward_always, forward_busy, forward_no_answer, no_answer_secs, \
                       forward_unreachable, ring_order, ring_secs";

/// Every extension's call handling (extensions without a row have the default).
pub fn all(conn: &Connection) -> rusqlite::Result<HashMap<String, CallHandling>> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM call_handling"))?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}

/// One extension's call handling (the default without a row).
pub fn get(conn: &Connection, number: &str) -> rusqlite::Result<CallHandling> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM call_handling WHERE number = ?1"),
            [number],
            from_row,
        )
        .optional()?
        .map(|(_, h)| h)
        .unwrap_or_default())
}

/// Stores `h` for `number` (from the dashboard or a feature code): the file's seed is kept.
pub fn set(conn: &Connection, number: &str, h: &CallHandling, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO call_handling (number, forward_always, forward_busy, forward_no_answer,
             no_answer_secs, forward_unreachable, ring_order, ring_secs, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (number) DO UPDATE SET
             forward_always = excluded.forward_always,
             forward_busy = excluded.forward_busy,
             forward_no_answer = excluded.forward_no_answer,
             no_answer_secs = excluded.no_answer_secs,
             forward_unreachable = excluded.forward_unreachable,
             ring_order = excluded.ring_order,
             ring_secs = excluded.ring_secs,
             updated_at = excluded.updated_at",
        params![
            number,
            h.always,
            h.busy,
            h.no_answer,
            h.no_answer_secs,
            h.unreachable,
            h.ring_order(),
            h.ring_secs,
            now
        ],
    )?;
    Ok(())
}

/// Seeds the rows of the file's extensions: a row is (re)written when it is new or when the
/// file's settings differ from those it applied last. Returns how many rows were written.
pub fn seed(
    conn: &mut Connection,
    from_file: &[(String, CallHandling)],
    now: i64,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut written = 0;
    for (number, h) in from_file {
        let seed = seed_text(h);
        let last: Option<Option<String>> = tx
            .query_row(
                "SELECT file_seed FROM call_handling WHERE number = ?1",
                [number],
                |r| r.get(0),
            )
            .optional()?;
        if last.as_ref().and_then(|s| s.as_deref()) == Some(seed.as_str()) {
            continue;
        }
        set(&tx, number, h, now)?;
        tx.execute(
            "UPDATE call_handling SET file_seed = ?2 WHERE number = ?1",
            params![number, seed],
        )?;
        written += 1;
    }
    tx.commit()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::forwarding::ForwardWhen;

    #[test]
    fn file_seeds_and_later_changes_stay() {
        let mut store = crate::store::Store::open_in_memory().unwrap();
        let file = CallHandling {
            busy: Some("103".into()),
            ..Default::default()
        };
        let rows = vec![("102".to_owned(), file.clone())];
        assert_eq!(store.seed_call_handling(&rows).unwrap(), 1);
        assert_eq!(store.call_handling().unwrap().get("102"), Some(&file));
        assert_eq!(store.call_handling().unwrap().get("104"), None);
        // A feature code changes it; the same file at the next start leaves that alone.
        let mut phone = file.clone();
        phone.set(ForwardWhen::Always, Some("+4930999".into()));
        store.set_call_handling("102", &phone).unwrap();
        assert_eq!(store.seed_call_handling(&rows).unwrap(), 0);
        assert_eq!(store.call_handling().unwrap().get("102"), Some(&phone));
        // A change in the file wins.
        let mut file2 = file.clone();
        file2.sequential = true;
        file2.ring_secs = 7;
        let rows2 = vec![("102".to_owned(), file2.clone())];
        assert_eq!(store.seed_call_handling(&rows2).unwrap(), 1);
        assert_eq!(store.call_handling().unwrap().get("102"), Some(&file2));
    }
}
