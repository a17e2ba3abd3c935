//! What a finished or refused call leaves behind: its call record (sent to the record writer,
//! which rates and stores it) and its count in `/metrics`.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::web::Stats;

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A call refused before ringing: its record, and the count for /metrics.
pub(super) fn call_refused(
    stats: &Stats,
    cdr: &crate::cdr::CdrWriterHandle,
    office: &crate::cdr::OfficeNumbers,
    refused: &super::core::Refused,
) {
    cdr.send(crate::cdr::CallRecord::rejected(
        &refused.caller,
        &refused.dialled,
        refused.status,
        refused.route.as_deref(),
        unix_ms(),
        office,
    ));
    stats.call_ended("none", "failed");
}

/// A finished call: its record (rated by the writer), and the count for /metrics.
pub(super) fn call_ended(
    stats: &Stats,
    cdr: &crate::cdr::CdrWriterHandle,
    office: &crate::cdr::OfficeNumbers,
    summary: &crate::b2bua::CallSummary,
) {
    cdr.send(crate::cdr::CallRecord::from_summary(
        summary,
        std::time::Instant::now(),
        unix_ms(),
        office,
    ));
    let stage = summary
        .answered_by
        .as_ref()
        .map(|(stage, _)| *stage)
        .or_else(|| summary.attempts.last().map(|a| a.stage));
    let label = stage.and_then(|st| {
        summary
            .attempts
            .iter()
            .find(|a| a.stage == st)
            .map(|a| a.label.as_str())
    });
    stats.call_ended(
        crate::web::stats::call_route_kind(label),
        summary.disposition,
    );
}
