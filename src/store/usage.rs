//! What answered outgoing calls cost, read from the call records for the toll-fraud limits
//! at start-up (`server::usage` counts them against extensions and lines).

use rusqlite::Connection;

use super::StoreError;

/// One answered outgoing call to SIP or the PSTN, as the limits count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendRow {
    pub extension: Option<String>,
    /// `sip` or `pstn`.
    pub route_kind: String,
    /// The trunk or line.
    pub route_target: Option<String>,
    pub start_ms: i64,
    pub billable_s: i64,
    pub cost_minor: Option<i64>,
}

/// The answered outgoing calls to SIP or the PSTN that started at or after `since_ms`.
pub fn answered_outgoing_since(
    conn: &Connection,
    since_ms: i64,
) -> Result<Vec<SpendRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT extension, route_kind, route_target, start_ms, billable_s, cost_minor \
         FROM call_records WHERE start_ms >= ?1 AND direction = 'outgoing' \
         AND disposition = 'answered' AND route_kind IN ('sip', 'pstn')",
    )?;
    let rows = stmt.query_map([since_ms], |row| {
        Ok(SpendRow {
            extension: row.get(0)?,
            route_kind: row.get(1)?,
            route_target: row.get(2)?,
            start_ms: row.get(3)?,
            billable_s: row.get(4)?,
            cost_minor: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
