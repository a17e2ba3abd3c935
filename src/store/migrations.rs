//! The schema migrations, in order: the one place that lists the SQL files of `/migrations`.
//!
//! Each file is embedded in the binary with `include_str!` and applied at start-up by
//! `rusqlite_migration`, which records the schema version in SQLite's `user_version`. Append new
//! files at the end; never edit or reorder one that has shipped. A migration SQL cannot express
//! (0026, a CHECK constraint rewritten in place) has a Rust hook here, run in its transaction.

use std::sync::LazyLock;

use rusqlite::Transaction;
use rusqlite_migration::{HookResult, Migrations, M};

fn migration_list() -> Vec<M<'static>> {
    vec![
        M::up(include_str!("../../migrations/0001_initial.sql")),
        M::up(include_str!(
            "../../migrations/0002_extension_permissions.sql"
        )),
        M::up(include_str!("../../migrations/0003_call_records.sql")),
        M::up(include_str!("../../migrations/0004_web_users.sql")),
        M::up(include_str!(
            "../../migrations/0005_api_tokens_saved_filters.sql"
        )),
        M::up(include_str!("../../migrations/0006_billing_indexes.sql")),
        M::up(include_str!(
            "../../migrations/0007_digest_ha1_and_login_devices.sql"
        )),
        M::up(include_str!("../../migrations/0008_calls_in_progress.sql")),
        M::up(include_str!("../../migrations/0009_call_signalling.sql")),
        M::up(include_str!("../../migrations/0010_media_srtp.sql")),
        M::up(include_str!("../../migrations/0012_web_roles_audit.sql")),
        M::up(include_str!("../../migrations/0013_messages.sql")),
        M::up(include_str!("../../migrations/0014_sms_mail_ussd.sql")),
        M::up(include_str!(
            "../../migrations/0016_trunks_token_scopes.sql"
        )),
        M::up(include_str!("../../migrations/0018_call_handling.sql")),
        M::up(include_str!("../../migrations/0019_dundi_peers.sql")),
        M::up(include_str!("../../migrations/0020_pickup_groups.sql")),
        M::up(include_str!("../../migrations/0021_call_transfers.sql")),
        M::up(include_str!("../../migrations/0022_modem_lines.sql")),
        M::up(include_str!("../../migrations/0023_fxo_lines.sql")),
        M::up(include_str!("../../migrations/0024_numbering_settings.sql")),
        M::up(include_str!("../../migrations/0025_dundi_node.sql")),
        M::up_with_hook(
            include_str!("../../migrations/0026_call_records_checks.sql"),
            rewrite_record_checks,
        ),
    ]
}

/// All migrations, oldest first.
pub(crate) static MIGRATIONS: LazyLock<Migrations<'static>> =
    LazyLock::new(|| Migrations::new(migration_list()));

/// The CHECK constraints of `call_records` that 0026 rewrites: each `IN` list as it was
/// created (0003) and the chain of equalities that accepts the same values.
const RECORD_CHECKS: [(&str, &str); 3] = [
    (
        "CHECK (direction IN ('outgoing', 'incoming', 'internal'))",
        "CHECK (direction = 'outgoing' OR direction = 'incoming' OR direction = 'internal')",
    ),
    (
        "CHECK (route_kind IN ('extension', 'sip', 'pstn', 'none'))",
        "CHECK (route_kind = 'extension' OR route_kind = 'sip' OR route_kind = 'pstn' \
         OR route_kind = 'none')",
    ),
    (
        "CHECK (disposition IN ('answered', 'busy', 'no_answer', 'failed', 'cancelled'))",
        "CHECK (disposition = 'answered' OR disposition = 'busy' OR disposition = 'no_answer' \
         OR disposition = 'failed' OR disposition = 'cancelled')",
    ),
];

/// `sql` (a CREATE TABLE text) with the `IN` lists of [`RECORD_CHECKS`] replaced.
fn rewritten_checks(sql: &str) -> String {
    RECORD_CHECKS
        .iter()
        .fold(sql.to_owned(), |sql, (old, new)| sql.replace(old, new))
}

/// Migration 0026: rewrites `call_records`' CHECK constraints in place, in constant time
/// whatever the number of records (see the migration's file for why this is sound): the
/// table's text in `sqlite_schema` is replaced under `writable_schema`, the schema version is
/// bumped so that every connection parses the new text, and the table is read once so that a
/// text SQLite cannot parse fails the migration (and rolls it back) here.
fn rewrite_record_checks(tx: &Transaction<'_>) -> HookResult {
    let sql: String = tx.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'call_records'",
        [],
        |r| r.get(0),
    )?;
    let new = rewritten_checks(&sql);
    if new == sql {
        return Ok(());
    }
    let version: i64 = tx.pragma_query_value(None, "schema_version", |r| r.get(0))?;
    tx.pragma_update(None, "writable_schema", true)?;
    let updated = tx.execute(
        "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = 'call_records'",
        [&new],
    );
    // Off again whatever happened; a failed update is reported after.
    tx.pragma_update(None, "schema_version", version + 1)?;
    tx.pragma_update(None, "writable_schema", false)?;
    updated?;
    tx.prepare("SELECT direction, route_kind, disposition FROM call_records LIMIT 0")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(MIGRATIONS.validate().is_ok());
    }

    fn record_table_sql(conn: &rusqlite::Connection) -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'call_records'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn insert_direction(conn: &rusqlite::Connection, direction: &str) -> rusqlite::Result<usize> {
        conn.execute(
            "INSERT INTO call_records (start_ms, end_ms, duration_s, billable_s, caller, callee, \
             direction, route_kind, disposition, sip_status, q850_cause) \
             VALUES (1, 2, 1, 1, '100', '101', ?1, 'extension', 'answered', 200, 16)",
            [direction],
        )
    }

    /// 0026 on a store that has records: the rows stay, the constraints are the equality
    /// chains and still refuse what the lists refused, and a connection opened before the
    /// migration sees the new schema.
    #[test]
    fn record_checks_are_rewritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        // Up to 0025 (the 22nd migration): the lists of 0003.
        MIGRATIONS.to_version(&mut conn, 22).unwrap();
        assert!(record_table_sql(&conn).contains("direction IN ("));
        for _ in 0..100 {
            insert_direction(&conn, "outgoing").unwrap();
        }
        let other = rusqlite::Connection::open(&path).unwrap();
        assert!(insert_direction(&other, "sideways").is_err());

        MIGRATIONS.to_latest(&mut conn).unwrap();
        let sql = record_table_sql(&conn);
        for (old, new) in RECORD_CHECKS {
            assert!(!sql.contains(old) && sql.contains(new), "{sql}");
        }
        let n: i64 = conn
            .query_row("SELECT count(*) FROM call_records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 100);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        for conn in [&conn, &other] {
            assert!(insert_direction(conn, "sideways").is_err());
            assert!(conn
                .execute("UPDATE call_records SET route_kind = 'teleport'", [])
                .is_err());
            assert!(conn
                .execute("UPDATE call_records SET disposition = 'maybe'", [])
                .is_err());
            insert_direction(conn, "internal").unwrap();
        }
        // The connection opened before reads the new text, not its cached parse.
        let uses_list: bool = other
            .prepare(
                "EXPLAIN INSERT INTO call_records (start_ms, end_ms, duration_s, \
                 billable_s, caller, callee, direction, route_kind, disposition, sip_status, \
                 q850_cause) VALUES (1, 2, 1, 1, 'a', 'b', 'internal', 'sip', 'busy', 486, 17)",
            )
            .unwrap()
            .query_map([], |r| r.get::<_, String>(1))
            .unwrap()
            .any(|op| op.unwrap() == "OpenEphemeral");
        assert!(!uses_list);
    }

    /// A measurement (issue 22): 0026 on a store of `MIGRATION_RECORDS` records (default
    /// 1 000 000, a year of a busy office) made at the schema before it, timed from a fresh
    /// connection, must stay well under a second whatever the number of records (rebuilding
    /// the table would take minutes). Run with
    /// `cargo test --release --lib store::migrations -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: builds a store of a million records (about a minute)"]
    fn record_checks_rewrite_in_constant_time_on_a_million_records() {
        let records: u64 = std::env::var("MIGRATION_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        MIGRATIONS.to_version(&mut conn, 22).unwrap();
        let started = std::time::Instant::now();
        // Varied enough that the five indexes are as deep as a real store's.
        conn.execute_batch(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {records}) \
             INSERT INTO call_records (call_ref, start_ms, answer_ms, end_ms, duration_s, \
             billable_s, caller, callee, extension, direction, category, route_kind, \
             route_target, disposition, sip_status, q850_cause, explanation) \
             SELECT i, 1700000000000 + i * 31000, 1700000000000 + i * 31000 + 4000, \
             1700000000000 + i * 31000 + 64000, 64, 60, '10' || (i % 10), \
             '06' || (12345678 + i * 7919 % 9000000), '10' || (i % 10), \
             CASE i % 3 WHEN 0 THEN 'outgoing' WHEN 1 THEN 'incoming' ELSE 'internal' END, \
             'mobile', CASE i % 4 WHEN 0 THEN 'extension' WHEN 1 THEN 'sip' \
             WHEN 2 THEN 'pstn' ELSE 'none' END, 'line' || (i % 3), \
             CASE i % 5 WHEN 0 THEN 'busy' ELSE 'answered' END, 200, 16, 'route: pstn' FROM n"
        ))
        .unwrap();
        let filled = started.elapsed();
        drop(conn);
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let started = std::time::Instant::now();
        MIGRATIONS.to_latest(&mut conn).unwrap();
        let took = started.elapsed();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM call_records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(u64::try_from(n).ok(), Some(records));
        assert!(record_table_sql(&conn).contains(RECORD_CHECKS[0].1));
        println!(
            "0026 on {records} records ({:.0} MB, filled in {:.1} s): {:.2} ms",
            bytes as f64 / 1e6,
            filled.as_secs_f64(),
            took.as_secs_f64() * 1e3
        );
        assert!(
            took < std::time::Duration::from_secs(1),
            "0026 took {took:?} on {records} records"
        );
    }
}
