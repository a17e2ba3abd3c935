//! Flat cost as the store grows (issue 22): every statement the gateway runs per call against
//! the call records (the record written by the record writer, the in-progress record and legs
//! of an answered call, their heartbeat and removal, the end reason) is answered through an
//! index or the rowid, never by a scan of `call_records` or `call_legs`. Checked with SQLite's
//! own `EXPLAIN QUERY PLAN` on a store migrated by `CdrDb::open`, filled with records so the
//! planner sees a table worth an index.
//!
//! The statements are the code's own (`store::records::PER_CALL`, the constants the record
//! writer's functions prepare), so a changed or added per-call statement is planned here. The
//! limits count spend in memory (loaded once at start-up, `store::usage`), and rating reads the
//! rate tables into memory, so neither runs SQL per call.

use pasarela::cdr::CdrDb;
use pasarela::store::records::{in_progress, PER_CALL};
use rusqlite::Connection;

/// Column `column` of what `explain sql` returns (`explain`: `EXPLAIN` or `EXPLAIN QUERY PLAN`),
/// with every parameter bound to NULL.
fn explained(conn: &Connection, explain: &str, sql: &str, column: usize) -> Vec<String> {
    let mut stmt = conn
        .prepare(&format!("{explain} {sql}"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let rows = stmt
        .query_map(
            rusqlite::params_from_iter(std::iter::repeat_n(
                rusqlite::types::Null,
                stmt.parameter_count(),
            )),
            |r| r.get::<_, String>(column),
        )
        .unwrap_or_else(|e| panic!("{explain} {sql}: {e}"));
    rows.collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{explain} {sql}: {e}"))
}

/// The plan's lines (the `detail` column of `EXPLAIN QUERY PLAN`).
fn plan(conn: &Connection, sql: &str) -> Vec<String> {
    explained(conn, "EXPLAIN QUERY PLAN", sql, 3)
}

/// The opcodes SQLite compiles `sql` to (the `opcode` column of `EXPLAIN`).
fn opcodes(conn: &Connection, sql: &str) -> Vec<String> {
    explained(conn, "EXPLAIN", sql, 1)
}

/// A store migrated by `CdrDb::open` in a fresh directory (kept while the handle lives) and a
/// connection to it.
fn migrated_store() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("pasarela.db");
    drop(CdrDb::open(&path).expect("store migrated"));
    let conn = Connection::open(&path).expect("open");
    (dir, conn)
}

#[test]
fn per_call_statements_use_indexes() {
    let (_dir, conn) = migrated_store();
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
    assert!(PER_CALL.len() >= 5, "the per-call statements: {PER_CALL:?}");
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
    // The heartbeat passes over the calls up (call_legs), never over the records.
    let lines = plan(&conn, in_progress::HEARTBEAT_SEEN);
    assert!(
        lines.iter().all(|l| !l.contains("call_records")),
        "heartbeat: {lines:?}"
    );
}

/// No per-call statement builds a temporary b-tree: each one is a whole b-tree opened, filled
/// and freed per execution (a `CHECK (x IN ('a', 'b', 'c'))` on `call_records` cost three of
/// them per INSERT, about a tenth of the record writer's instructions per call; issue 22).
#[test]
fn per_call_statements_build_no_temporary_btree() {
    let (_dir, conn) = migrated_store();
    for sql in PER_CALL {
        let ops = opcodes(&conn, sql);
        assert!(
            !ops.iter().any(|op| op == "OpenEphemeral"),
            "{sql}\n  opens a temporary b-tree: {ops:?}"
        );
    }
}
