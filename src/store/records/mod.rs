//! The call records in SQLite (table `call_records`, migration `0003_call_records.sql` and
//! later): one repository for the rows of [`CallRecord`]s. This file maps records to and from
//! rows and holds the writes (a batch of finished calls, with why they ended) and the reads by
//! id; [`query`] the dashboard's filtered lists, totals and bills; [`in_progress`] the rows of
//! calls still up (`call_legs`). The record model and its rules stay in [`crate::cdr`], which
//! calls these functions; each takes a `&Connection`, so the same read runs on a writer's
//! connection or on one of the dashboard's read-only ones.

mod columns;
pub mod in_progress;
pub mod query;

use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use super::StoreError;
use crate::cdr::record::CallRecord;
use crate::cdr::writer::Note;

pub use query::{
    billing_by_extension, billing_by_line, count, daily_totals, for_each_record, list, overview,
    totals, totals_by_route, BillingLine, DayTotals, Filter, Overview, Page, Sort, SortKey, Totals,
};

/// The columns of `call_records`, in the order [`record_from_row`] reads them.
pub(crate) const RECORD_COLUMNS: &str = "id, call_ref, start_ms, answer_ms, end_ms, duration_s, \
     billable_s, caller, caller_e164, callee, callee_e164, extension, direction, category, \
     route_kind, route_target, route_source, disposition, sip_status, q850_cause, codec, packets, \
     packets_lost, jitter_ms, cost_minor, currency, rate_table, rate_prefix, \
     reference_cost_minor, savings_minor, explanation, media_srtp, linked_id, transferred_by";

/// Inserts one record (every finished call, and the in-progress record of an answered one),
/// with why it ended (`end_reason`), its in-progress key (`call_key`) and the transports of its
/// legs (`signalling`) in the same row write: no second write of the row per call.
pub const INSERT: &str = "INSERT INTO call_records (call_ref, start_ms, answer_ms, end_ms, \
     duration_s, billable_s, caller, caller_e164, callee, callee_e164, extension, direction, \
     category, route_kind, route_target, route_source, disposition, sip_status, q850_cause, \
     codec, packets, packets_lost, jitter_ms, cost_minor, currency, rate_table, rate_prefix, \
     reference_cost_minor, savings_minor, explanation, media_srtp, linked_id, transferred_by, \
     end_reason, call_key, signalling) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35, ?36)";

/// What a row holds besides a [`CallRecord`]'s fields.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RowExtra<'a> {
    pub end_reason: Option<&'a str>,
    pub call_key: Option<&'a str>,
    pub signalling: Option<&'a str>,
}

/// Every statement the record writer runs per call (issue 22: none may scan `call_records` or
/// `call_legs`, so a call costs the same with an empty store and with millions of records;
/// `tests/record_plans.rs` plans each of them). Not in the list: the heartbeat's
/// [`in_progress::HEARTBEAT_SEEN`], every few seconds, which touches every call up (by design)
/// and no record.
pub const PER_CALL: &[&str] = &[
    INSERT,
    in_progress::DELETE_RECORD,
    in_progress::WRITE_LEGS,
    in_progress::HEARTBEAT_LEGS,
    in_progress::DELETE_LEGS,
];

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// `media_srtp` as stored: bit 0 the caller's leg, bit 1 the callee's.
fn srtp_mask(legs: [bool; 2]) -> i64 {
    i64::from(legs[0]) | (i64::from(legs[1]) << 1)
}

fn srtp_from_mask(mask: i64) -> [bool; 2] {
    [mask & 1 != 0, mask & 2 != 0]
}

/// Reads a record from a row selected with [`RECORD_COLUMNS`].
pub(crate) fn record_from_row(row: &Row<'_>) -> rusqlite::Result<CallRecord> {
    Ok(CallRecord {
        id: Some(row.get(0)?),
        call_ref: row.get::<_, Option<i64>>(1)?.map(to_u64),
        start_ms: row.get(2)?,
        answer_ms: row.get(3)?,
        end_ms: row.get(4)?,
        duration_s: row.get(5)?,
        billable_s: row.get(6)?,
        caller: row.get(7)?,
        caller_e164: row.get(8)?,
        callee: row.get(9)?,
        callee_e164: row.get(10)?,
        extension: row.get(11)?,
        direction: row.get(12)?,
        category: row.get(13)?,
        route_kind: row.get(14)?,
        route_target: row.get(15)?,
        route_source: row.get(16)?,
        disposition: row.get(17)?,
        sip_status: u16::try_from(row.get::<_, i64>(18)?).unwrap_or(0),
        q850_cause: u8::try_from(row.get::<_, i64>(19)?).unwrap_or(127),
        codec: row.get(20)?,
        packets: to_u64(row.get(21)?),
        packets_lost: to_u64(row.get(22)?),
        jitter_ms: row.get(23)?,
        cost_minor: row.get(24)?,
        currency: row.get(25)?,
        rate_table: row.get(26)?,
        rate_prefix: row.get(27)?,
        reference_cost_minor: row.get(28)?,
        savings_minor: row.get(29)?,
        explanation: row.get(30)?,
        media_srtp: srtp_from_mask(row.get::<_, Option<i64>>(31)?.unwrap_or(0)),
        linked_id: row.get(32)?,
        transferred_by: row.get(33)?,
    })
}

/// Inserts `records` in the open transaction; returns their ids.
pub(crate) fn insert_in(
    tx: &Transaction<'_>,
    records: &[CallRecord],
) -> rusqlite::Result<Vec<i64>> {
    records
        .iter()
        .map(|r| insert_row(tx, r, RowExtra::default()))
        .collect()
}

/// Inserts one record with what its row holds besides; returns its id.
pub(crate) fn insert_row(
    tx: &Transaction<'_>,
    r: &CallRecord,
    extra: RowExtra<'_>,
) -> rusqlite::Result<i64> {
    let mut stmt = tx.prepare_cached(INSERT)?;
    stmt.insert(params![
        r.call_ref.map(to_i64),
        r.start_ms,
        r.answer_ms,
        r.end_ms,
        r.duration_s,
        r.billable_s,
        r.caller,
        r.caller_e164,
        r.callee,
        r.callee_e164,
        r.extension,
        r.direction,
        r.category,
        r.route_kind,
        r.route_target,
        r.route_source,
        r.disposition,
        i64::from(r.sip_status),
        i64::from(r.q850_cause),
        r.codec,
        to_i64(r.packets),
        to_i64(r.packets_lost),
        r.jitter_ms,
        r.cost_minor,
        r.currency,
        r.rate_table,
        r.rate_prefix,
        r.reference_cost_minor,
        r.savings_minor,
        r.explanation,
        srtp_mask(r.media_srtp),
        r.linked_id,
        r.transferred_by,
        extra.end_reason,
        extra.call_key,
        extra.signalling,
    ])
}

/// Stores `records` in one transaction and sets their ids.
pub fn insert(conn: &mut Connection, records: &mut [CallRecord]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let ids = insert_in(&tx, records)?;
    tx.commit()?;
    for (r, id) in records.iter_mut().zip(ids) {
        r.id = Some(id);
    }
    Ok(())
}

/// One record by id.
pub fn get(conn: &Connection, id: i64) -> Result<Option<CallRecord>, StoreError> {
    let sql = format!("SELECT {RECORD_COLUMNS} FROM call_records WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], record_from_row).optional()?)
}

/// The transports of record `id`'s legs, `caller/callee` (`tls/udp`; migration 0009):
/// `None` for records written before, or calls refused before any leg was set up.
pub fn signalling(conn: &Connection, id: i64) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT signalling FROM call_records WHERE id = ?1",
            [id],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

/// The ids of the parts of a transferred call (the records sharing `linked_id`,
/// migration 0021), in the order they happened.
pub fn linked(conn: &Connection, linked_id: &str) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT id FROM call_records WHERE linked_id = ?1 ORDER BY start_ms, id")?;
    let ids = stmt
        .query_map([linked_id], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(ids)
}

/// Updates the statistics the query planner uses to choose indexes (SQLite's
/// `PRAGMA optimize`); cheap when nothing changed much. Worth calling now and then, e.g.
/// after a large import, and by long-lived connections.
pub fn optimize(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch("PRAGMA optimize;")?;
    Ok(())
}

/// Writes the records of finished calls in one transaction: each replaces the in-progress
/// rows its note names ([`in_progress`]), and gets why it ended (`end_reason`) and the
/// transports of its legs (`signalling`) when the note says. `notes` pairs with `records`.
pub fn commit_finished(
    conn: &mut Connection,
    records: &[CallRecord],
    notes: &[Note],
) -> Result<(), StoreError> {
    let tx = WriterTx::begin(conn)?;
    let none = Note::default();
    for (i, r) in records.iter().enumerate() {
        tx.finished(r, notes.get(i).unwrap_or(&none))?;
    }
    tx.commit()
}

/// One transaction of the record writer: the records of finished calls, the in-progress rows
/// of answered ones and the heartbeat, in the order they come, committed together, so that a
/// wake-up of the writer costs one commit however many calls it serves (issue 22). Dropped
/// without [`commit`](Self::commit), it rolls back.
pub struct WriterTx<'c> {
    tx: Transaction<'c>,
}

impl<'c> WriterTx<'c> {
    /// Begins the transaction.
    pub fn begin(conn: &'c mut Connection) -> Result<WriterTx<'c>, StoreError> {
        Ok(WriterTx {
            tx: conn.transaction()?,
        })
    }

    /// A finished call's record, in place of the in-progress rows its note names, with why
    /// it ended and the transports of its legs when the note says.
    pub fn finished(&self, record: &CallRecord, note: &Note) -> Result<(), StoreError> {
        if let Some(key) = note.key.as_deref() {
            in_progress::finish(&self.tx, key)?;
        }
        let extra = RowExtra {
            end_reason: note.reason.as_deref(),
            call_key: None,
            signalling: note.signalling.as_deref(),
        };
        insert_row(&self.tx, record, extra)?;
        Ok(())
    }

    /// An answered call: its record so far, marked in progress (in place of an earlier one
    /// with the same key), and its legs (`legs`, JSON).
    pub fn up(
        &self,
        key: &str,
        record: &CallRecord,
        legs: &str,
        seen_ms: i64,
    ) -> Result<(), StoreError> {
        Ok(in_progress::up_in(&self.tx, key, record, legs, seen_ms)?)
    }

    /// The heartbeat: every call in progress was up at `seen_ms`; the legs of `changed`
    /// (key, legs JSON) are stored anew.
    pub fn heartbeat(&self, seen_ms: i64, changed: &[(String, String)]) -> Result<(), StoreError> {
        Ok(in_progress::heartbeat_in(&self.tx, seen_ms, changed)?)
    }

    /// Commits what was written.
    pub fn commit(self) -> Result<(), StoreError> {
        Ok(self.tx.commit()?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A migrated store in a temporary directory and a writing connection to it.
    pub(crate) fn open() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.db");
        drop(crate::store::Store::open(&path).unwrap());
        let conn = crate::store::connection::open_writer(
            &path,
            crate::store::connection::Durability::Process,
        )
        .unwrap();
        (dir, conn)
    }
    use crate::cdr::record::tests::sample;
    use crate::cdr::{Direction, Disposition, RouteKind};

    #[test]
    fn records_round_trip() {
        let (_dir, mut db) = open();
        let mut a = sample(1_000_000);
        a.call_ref = Some(42);
        a.cost_minor = Some(12);
        a.currency = Some("EUR".into());
        a.rate_table = Some("carrier".into());
        a.rate_prefix = Some("4930".into());
        a.reference_cost_minor = Some(15);
        a.savings_minor = Some(0);
        a.explanation = "line one\nline \"two\" <script>".into();
        let mut b = sample(2_000_000);
        b.direction = Direction::Internal;
        b.route_kind = RouteKind::NoRoute;
        b.disposition = Disposition::NoAnswer;
        b.answer_ms = None;
        b.caller_e164 = None;
        let mut both = vec![a, b];
        insert(&mut db, &mut both).unwrap();
        let ids: Vec<i64> = both.iter().map(|r| r.id.unwrap()).collect();
        assert_eq!(ids, vec![1, 2]);
        for r in &both {
            assert_eq!(get(&db, r.id.unwrap()).unwrap().as_ref(), Some(r));
        }
        assert_eq!(get(&db, 99).unwrap(), None);
        optimize(&db).unwrap();
    }

    #[test]
    fn bad_stored_values_are_errors_not_panics() {
        let (_dir, mut db) = open();
        let mut r = vec![sample(1)];
        insert(&mut db, &mut r).unwrap();
        // The CHECK constraint refuses unknown words.
        assert!(db
            .execute("UPDATE call_records SET direction = 'sideways'", [])
            .is_err());
        // A row written by something else without the constraint still reads as an error.
        db.execute_batch(
            "PRAGMA ignore_check_constraints = ON;
                 UPDATE call_records SET direction = 'sideways';",
        )
        .unwrap();
        assert!(get(&db, 1).is_err());
    }
}
