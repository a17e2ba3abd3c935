//! The connection the call records and rates are read and written through.
//!
//! [`CdrDb::open`] migrates the database with [`crate::store::Store`] (so the schema is the
//! store's, migration `0003_call_records.sql`) and then keeps a connection of its own, in WAL
//! mode, so that the record writer, re-rating and the dashboard's readers each have theirs.
//! This file also maps [`CallRecord`]s to and from rows; the reads the dashboard needs are in
//! [`crate::cdr::query`], the rates in [`crate::cdr::rating`].

use std::path::Path;

use rusqlite::{params, Connection, Row, Transaction};

use super::record::CallRecord;
use super::CdrError;
use crate::store::Store;

pub use crate::store::connection::Durability;

/// A connection to the pasarela database, for call records and rates.
#[derive(Debug)]
pub struct CdrDb {
    pub(crate) conn: Connection,
}

/// The columns of `call_records`, in the order [`record_from_row`] reads them.
pub(crate) const RECORD_COLUMNS: &str = "id, call_ref, start_ms, answer_ms, end_ms, duration_s, \
     billable_s, caller, caller_e164, callee, callee_e164, extension, direction, category, \
     route_kind, route_target, route_source, disposition, sip_status, q850_cause, codec, packets, \
     packets_lost, jitter_ms, cost_minor, currency, rate_table, rate_prefix, \
     reference_cost_minor, savings_minor, explanation, media_srtp, linked_id, transferred_by";

const INSERT: &str = "INSERT INTO call_records (call_ref, start_ms, answer_ms, end_ms, \
     duration_s, billable_s, caller, caller_e164, callee, callee_e164, extension, direction, \
     category, route_kind, route_target, route_source, disposition, sip_status, q850_cause, \
     codec, packets, packets_lost, jitter_ms, cost_minor, currency, rate_table, rate_prefix, \
     reference_cost_minor, savings_minor, explanation, media_srtp, linked_id, transferred_by) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33)";

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
    let mut stmt = tx.prepare_cached(INSERT)?;
    let mut ids = Vec::with_capacity(records.len());
    for r in records {
        ids.push(stmt.insert(params![
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
        ])?);
    }
    Ok(ids)
}

impl CdrDb {
    /// Opens (creating and migrating if needed) the database at `path`, for reading and
    /// occasional writes ([`Durability::Process`]).
    pub fn open(path: &Path) -> Result<CdrDb, CdrError> {
        CdrDb::open_with(path, Durability::Process)
    }

    /// Opens the database at `path` with the given durability of commits.
    pub fn open_with(path: &Path, durability: Durability) -> Result<CdrDb, CdrError> {
        // The store owns the schema: opening it applies any pending migration.
        drop(Store::open(path)?);
        let conn = crate::store::connection::open_writer(path, durability)?;
        Ok(CdrDb { conn })
    }

    /// Stores `records` in one transaction and sets their ids.
    pub fn insert(&mut self, records: &mut [CallRecord]) -> Result<(), CdrError> {
        let tx = self.conn.transaction()?;
        let ids = insert_in(&tx, records)?;
        tx.commit()?;
        for (r, id) in records.iter_mut().zip(ids) {
            r.id = Some(id);
        }
        Ok(())
    }

    /// One record by id.
    pub fn record(&self, id: i64) -> Result<Option<CallRecord>, CdrError> {
        use rusqlite::OptionalExtension;
        let sql = format!("SELECT {RECORD_COLUMNS} FROM call_records WHERE id = ?1");
        Ok(self
            .conn
            .query_row(&sql, [id], record_from_row)
            .optional()?)
    }

    /// The transports of record `id`'s legs, `caller/callee` (`tls/udp`; migration 0009):
    /// `None` for records written before, or calls refused before any leg was set up.
    pub fn signalling(&self, id: i64) -> Result<Option<String>, CdrError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
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
    pub fn linked(&self, linked_id: &str) -> Result<Vec<i64>, CdrError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM call_records WHERE linked_id = ?1 ORDER BY start_ms, id",
        )?;
        let ids = stmt
            .query_map([linked_id], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids)
    }

    /// Updates the statistics the query planner uses to choose indexes (SQLite's
    /// `PRAGMA optimize`); cheap when nothing changed much. Worth calling now and then, e.g.
    /// after a large import, and by long-lived connections.
    pub fn optimize(&self) -> Result<(), CdrError> {
        self.conn.execute_batch("PRAGMA optimize;")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::record::tests::sample;
    use crate::cdr::{Direction, Disposition, RouteKind};

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = CdrDb::open(&dir.path().join("c.db")).unwrap();
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
        db.insert(&mut both).unwrap();
        let ids: Vec<i64> = both.iter().map(|r| r.id.unwrap()).collect();
        assert_eq!(ids, vec![1, 2]);
        for r in &both {
            assert_eq!(db.record(r.id.unwrap()).unwrap().as_ref(), Some(r));
        }
        assert_eq!(db.record(99).unwrap(), None);
        db.optimize().unwrap();
    }

    #[test]
    fn bad_stored_values_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = CdrDb::open(&dir.path().join("c.db")).unwrap();
        let mut r = vec![sample(1)];
        db.insert(&mut r).unwrap();
        // The CHECK constraint refuses unknown words.
        assert!(db
            .conn
            .execute("UPDATE call_records SET direction = 'sideways'", [])
            .is_err());
        // A row written by something else without the constraint still reads as an error.
        db.conn
            .execute_batch(
                "PRAGMA ignore_check_constraints = ON;
                 UPDATE call_records SET direction = 'sideways';",
            )
            .unwrap();
        assert!(db.record(1).is_err());
    }
}
