//! What calls have spent, for the toll-fraud limits ([`crate::callctl::limits`]): talk time and cost of
//! the calls that left the office, per extension and per trunk or line. Loaded from the store
//! at start-up (this month's records) and then fed by the record writer as it rates records.

use std::path::Path;

use crate::cdr::{CallRecord, Direction, Disposition, RouteKind};

use crate::callctl::limits::{Limiter, Subject};

/// One rated call that left the office.
#[derive(Debug, Clone)]
pub struct Spent {
    extension: Option<String>,
    /// The trunk or line, for PSTN calls.
    trunk: Option<String>,
    start_ms: i64,
    billable_s: i64,
    cost_minor: Option<i64>,
}

impl Spent {
    /// The spending of a record, when it is an answered outgoing call to SIP or the PSTN.
    pub fn of(r: &CallRecord) -> Option<Spent> {
        if r.direction != Direction::Outgoing
            || r.disposition != Disposition::Answered
            || !matches!(r.route_kind, RouteKind::Sip | RouteKind::Pstn)
        {
            return None;
        }
        Some(Spent {
            extension: r.extension.clone(),
            trunk: (r.route_kind == RouteKind::Pstn)
                .then(|| r.route_target.clone())
                .flatten(),
            start_ms: r.start_ms,
            billable_s: r.billable_s,
            cost_minor: r.cost_minor,
        })
    }

    /// Counts it against its extension and trunk.
    pub fn count(&self, limiter: &mut Limiter) {
        let now_ms = crate::office_time::now_ms();
        if let Some(ext) = &self.extension {
            limiter.add_usage(
                Subject::Extension(ext),
                self.start_ms,
                self.billable_s,
                self.cost_minor,
                now_ms,
            );
        }
        if let Some(trunk) = &self.trunk {
            limiter.add_usage(
                Subject::Trunk(trunk),
                self.start_ms,
                self.billable_s,
                self.cost_minor,
                now_ms,
            );
        }
    }
}

/// Counts this month's calls in the store at `path` (failures are logged: the limits then
/// start from zero).
pub fn load(path: &Path, limiter: &mut Limiter) {
    let now_ms = crate::office_time::now_ms();
    let (_, (month_start, _)) = limiter.periods(now_ms);
    let rows = (|| -> Result<Vec<Spent>, crate::cdr::CdrError> {
        let db = crate::cdr::CdrDb::open(path)?;
        let rows = crate::store::usage::answered_outgoing_since(&db.conn, month_start)?;
        Ok(rows
            .into_iter()
            .map(|row| Spent {
                extension: row.extension,
                trunk: if row.route_kind == "pstn" {
                    row.route_target
                } else {
                    None
                },
                start_ms: row.start_ms,
                billable_s: row.billable_s,
                cost_minor: row.cost_minor,
            })
            .collect())
    })();
    match rows {
        Ok(rows) => {
            for r in &rows {
                r.count(limiter);
            }
            tracing::debug!(
                calls = rows.len(),
                "this month's calls counted for the limits"
            );
        }
        Err(e) => tracing::error!("cannot count this month's calls for the limits: {e}"),
    }
}
