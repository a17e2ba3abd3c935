//! Flat cost as the store grows (issue 22): every statement the gateway runs per call against
//! the call records (the record written by the record writer, the in-progress record and legs
//! of an answered call, their heartbeat and removal, the end reason) is answered through an
//! index or the rowid, never by a scan of `call_records` or `call_legs`. Checked with SQLite's
//! own `EXPLAIN QUERY PLAN` on a store migrated by `CdrDb::open`, filled with records so the
//! planner sees a table worth an index.
//!
//! The statements are the ones of `src/cdr/db.rs` (`INSERT`) and `src/cdr/in_progress.rs`
//! (`insert_up`, `heartbeat`, `finish`, `set_reason`); a new per-call statement belongs here.
//! The limits count spend in memory (loaded once at start-up, `store::usage`), and rating reads
//! the rate tables into memory, so neither runs SQL per call.

use pasarela::cdr::CdrDb;
use rusqlite::Connection;

/// The per-call statements, with parameters.
const PER_CALL: &[&str] = &[
    // cdr::db::INSERT (every finished call, and the in-progress record).
    "INSERT INTO call_records (call_ref, start_ms, answer_ms, end_ms, duration_s, billable_s, \
     caller, caller_e164, callee, callee_e164, extension, direction, category, route_kind, \
     route_target, route_source, disposition, sip_status, q850_cause, codec, packets, \
     packets_lost, jitter_ms, cost_minor, currency, rate_table, rate_prefix, \
     reference_cost_minor, savings_minor, explanation, media_srtp, linked_id, transferred_by) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33)",
    // cdr::in_progress::insert_up and finish.
    "DELETE FROM call_records WHERE call_key = ?1",
    "UPDATE call_records SET end_reason = ?1, call_key = ?2 WHERE id = ?3",
    "INSERT OR REPLACE INTO call_legs (call_key, seen_ms, legs) VALUES (?1, ?2, ?3)",
    // cdr::in_progress::heartbeat (the first touches every call in progress, by design).
    "UPDATE call_legs SET legs = ?1 WHERE call_key = ?2",
    "DELETE FROM call_legs WHERE call_key = ?1",
    // cdr::in_progress::set_reason.
    "UPDATE call_records SET end_reason = ?1 WHERE id = ?2",
];

/// The plan's lines (the `detail` column).
fn plan(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = stmt
        .query_map(
            rusqlite::params_from_iter(std::iter::repeat_n(
                rusqlite::types::Null,
                stmt.parameter_count(),
            )),
            |r| r.get::<_, String>(3),
        )
        .expect("plan");
    rows.collect::<Result<_, _>>().expect("plan rows")
}

#[test]
fn per_call_statements_use_indexes() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pasarela.db");
    drop(CdrDb::open(&path).expect("store migrated"));
    let conn = Connection::open(&path).expect("open");
    // Enough rows that a scan would be the planner's worst choice, with statistics.
    conn.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
         INSERT INTO call_records (call_ref, start_ms, end_ms, duration_s, billable_s, caller, \
         callee, direction, category, route_kind, disposition, sip_status, q850_cause, \
         explanation, media_srtp) \
         SELECT 'c' || i, i * 1000, i * 1000 + 5000, 5, 5, '100', '0612345678', 'outgoing', \
         'mobile', 'pstn', 'answered', 200, 16, '', 0 FROM n; ANALYZE;",
    )
    .expect("records");
    for sql in PER_CALL {
        let lines = plan(&conn, sql);
        for line in &lines {
            assert!(
                !(line.starts_with("SCAN")
                    && (line.contains("call_records") || line.contains("call_legs"))),
                "{sql}\n  scans: {lines:?}"
            );
        }
        println!(
            "{}\n  {lines:?}",
            sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
        );
    }
}
