//! The call records as the dashboard and the API read them: the query types and functions
//! (filters, sorts, pages, totals, bills), which are [`crate::store::records::query`]'s and
//! re-exported here, [`CdrDb`]'s methods over them, and the CSV exports, which stream row by
//! row in flat memory: every matching record ([`export_csv`], [`RECORD_CSV_COLUMNS`]) and
//! the monthly bill ([`write_billing_csv`]). Times are written in UTC ([`iso_utc`]) and money
//! as decimals of its currency.

use std::io::Write;

use super::csv;
use super::rating::format_minor;
use super::record::CallRecord;
use super::{CdrDb, CdrError};
use crate::store::records;
use crate::store::Connection;

pub use crate::store::records::query::{
    BillingLine, DayTotals, Filter, Overview, Page, Sort, SortKey, Totals,
};

impl CdrDb {
    /// A page of the records matching `filter`, in `sort` order.
    pub fn list(
        &self,
        filter: &Filter,
        sort: Sort,
        page: Page,
    ) -> Result<Vec<CallRecord>, CdrError> {
        Ok(records::list(&self.conn, filter, sort, page)?)
    }

    /// How many records match `filter`.
    pub fn count(&self, filter: &Filter) -> Result<u64, CdrError> {
        Ok(records::count(&self.conn, filter)?)
    }

    /// Calls, answered calls, talk time, cost and savings of the records matching `filter`.
    pub fn totals(&self, filter: &Filter) -> Result<Totals, CdrError> {
        Ok(records::totals(&self.conn, filter)?)
    }

    /// Totals per day between consecutive `day_starts` ([`records::daily_totals`]).
    pub fn daily_totals(&self, day_starts: &[i64]) -> Result<Vec<DayTotals>, CdrError> {
        Ok(records::daily_totals(&self.conn, day_starts)?)
    }

    /// Totals per route kind for calls that started in `[from_ms, to_ms)`.
    pub fn totals_by_route(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(super::RouteKind, Totals)>, CdrError> {
        Ok(records::totals_by_route(&self.conn, from_ms, to_ms)?)
    }

    /// What the overview page shows ([`records::overview`]).
    pub fn overview(
        &self,
        today: (i64, i64),
        month: (i64, i64),
        day_starts: &[i64],
    ) -> Result<Overview, CdrError> {
        Ok(records::overview(&self.conn, today, month, day_starts)?)
    }

    /// The bill of each extension for `[from_ms, to_ms)` (a month): its outgoing calls.
    pub fn billing_by_extension(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<BillingLine>, CdrError> {
        Ok(records::billing_by_extension(&self.conn, from_ms, to_ms)?)
    }

    /// The bill of each PSTN trunk or line for `[from_ms, to_ms)`: the calls routed over it.
    pub fn billing_by_line(&self, from_ms: i64, to_ms: i64) -> Result<Vec<BillingLine>, CdrError> {
        Ok(records::billing_by_line(&self.conn, from_ms, to_ms)?)
    }

    /// Calls `each` with every record matching `filter`, in `sort` order, one at a time.
    pub fn for_each_record(
        &self,
        filter: &Filter,
        sort: Sort,
        each: impl FnMut(&CallRecord) -> Result<(), CdrError>,
    ) -> Result<u64, CdrError> {
        records::for_each_record(&self.conn, filter, sort, each)
    }

    /// Writes every record matching `filter` as CSV ([`export_csv`]).
    pub fn export_csv(
        &self,
        filter: &Filter,
        sort: Sort,
        out: impl Write,
    ) -> Result<u64, CdrError> {
        export_csv(&self.conn, filter, sort, out)
    }
}

/// The columns of the records CSV export.
pub const RECORD_CSV_COLUMNS: [&str; 33] = [
    "id",
    "start_utc",
    "answer_utc",
    "end_utc",
    "duration_s",
    "billable_s",
    "caller",
    "caller_e164",
    "callee",
    "callee_e164",
    "extension",
    "direction",
    "category",
    "route",
    "route_target",
    "route_source",
    "disposition",
    "sip_status",
    "q850_cause",
    "codec",
    "packets",
    "packets_lost",
    "jitter_ms",
    "cost",
    "currency",
    "rate_table",
    "rate_prefix",
    "reference_cost",
    "savings",
    "call_ref",
    "explanation",
    "linked_id",
    "transferred_by",
];

/// `ms` as ISO 8601 UTC with milliseconds (`2026-01-31T23:59:59.999Z`).
pub fn iso_utc(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    )
}

fn money(amount: Option<i64>, currency: Option<&str>) -> String {
    match amount {
        Some(a) => format_minor(a, currency.unwrap_or("")),
        None => String::new(),
    }
}

/// Appends the CSV line of a record to `row` (without the line end).
fn record_csv(r: &CallRecord, row: &mut String) {
    let cur = r.currency.as_deref();
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let fields: [String; 33] = [
        r.id.map(|i| i.to_string()).unwrap_or_default(),
        iso_utc(r.start_ms),
        r.answer_ms.map(iso_utc).unwrap_or_default(),
        iso_utc(r.end_ms),
        r.duration_s.to_string(),
        r.billable_s.to_string(),
        r.caller.clone(),
        opt(&r.caller_e164),
        r.callee.clone(),
        opt(&r.callee_e164),
        opt(&r.extension),
        r.direction.to_string(),
        opt(&r.category),
        r.route_kind.to_string(),
        opt(&r.route_target),
        opt(&r.route_source),
        r.disposition.to_string(),
        r.sip_status.to_string(),
        r.q850_cause.to_string(),
        opt(&r.codec),
        r.packets.to_string(),
        r.packets_lost.to_string(),
        format!("{:.3}", r.jitter_ms),
        money(r.cost_minor, cur),
        opt(&r.currency),
        opt(&r.rate_table),
        opt(&r.rate_prefix),
        money(r.reference_cost_minor, cur),
        money(r.savings_minor, cur),
        r.call_ref.map(|c| c.to_string()).unwrap_or_default(),
        r.explanation.clone(),
        opt(&r.linked_id),
        opt(&r.transferred_by),
    ];
    for (i, f) in fields.iter().enumerate() {
        csv::push_field(row, f, i == 0);
    }
}

/// Writes every record matching `filter` as CSV ([`RECORD_CSV_COLUMNS`]; times in UTC,
/// money as decimals of its currency), streaming row by row. Returns the number of records.
pub fn export_csv(
    conn: &Connection,
    filter: &Filter,
    sort: Sort,
    out: impl Write,
) -> Result<u64, CdrError> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    csv::write_row(&mut out, &RECORD_CSV_COLUMNS)?;
    let mut row = String::with_capacity(512);
    let n = records::for_each_record(conn, filter, sort, |r| -> Result<(), CdrError> {
        row.clear();
        record_csv(r, &mut row);
        row.push_str("\r\n");
        out.write_all(row.as_bytes())?;
        Ok(())
    })?;
    out.flush()?;
    Ok(n)
}

/// Writes billing lines as CSV: `key,calls,answered,billable_s,minutes,cost,savings,currency,
/// unrated`, with `key_name` as the first header (`extension`, `line`).
pub fn write_billing_csv(
    key_name: &str,
    lines: &[BillingLine],
    mut out: impl Write,
) -> Result<(), CdrError> {
    csv::write_row(
        &mut out,
        &[
            key_name,
            "calls",
            "answered",
            "billable_s",
            "minutes",
            "cost",
            "savings",
            "currency",
            "unrated",
        ],
    )?;
    for l in lines {
        let cur = l.currency.as_deref();
        csv::write_row(
            &mut out,
            &[
                l.key.clone(),
                l.totals.calls.to_string(),
                l.totals.answered.to_string(),
                l.totals.billable_s.to_string(),
                l.totals.minutes().to_string(),
                money(Some(l.totals.cost_minor), cur),
                money(Some(l.totals.savings_minor), cur),
                l.currency.clone().unwrap_or_default(),
                l.unrated.to_string(),
            ],
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::query::tests::{fixture, DAY, T0};

    #[test]
    fn csv_export_streams_the_filtered_set() {
        let (_d, db) = fixture();
        let f = Filter {
            extension: Some("101".into()),
            ..Filter::default()
        };
        let mut out = Vec::new();
        let n = export_csv(
            &db,
            &f,
            Sort {
                key: SortKey::Start,
                descending: false,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(n, 6);
        let text = String::from_utf8(out).unwrap();
        let rows = csv::parse(&text, b',').unwrap();
        assert_eq!(rows.len(), 7);
        assert_eq!(rows[0].fields, RECORD_CSV_COLUMNS.to_vec());
        let first = &rows[1].fields;
        assert_eq!(first[0], "2");
        assert_eq!(first[1], "2026-03-01T00:01:00.000Z");
        assert_eq!(first[13], "sip");
        assert_eq!(first[23], "0.00");
        assert_eq!(first[28], "0.02");
        // The multi-line explanation survives quoting.
        assert_eq!(first[30], "decision 1: trunk carrier");
        // for_each stops at the callback's first error.
        let mut seen = 0;
        let err = records::for_each_record(&db, &f, Sort::default(), |_| {
            seen += 1;
            if seen == 2 {
                Err(CdrError::WriterStopped)
            } else {
                Ok(())
            }
        });
        assert!(err.is_err());
        assert_eq!(seen, 2);
    }

    #[test]
    fn billing_csv() {
        let (_d, db) = fixture();
        let lines = records::billing_by_line(&db, T0, T0 + 31 * DAY).unwrap();
        let mut out = Vec::new();
        write_billing_csv("line", &lines, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "line,calls,answered,billable_s,minutes,cost,savings,currency,unrated\r\n\
             carrier,2,1,0,0,0.00,0.00,EUR,0\r\n\
             gsm1,2,2,150,3,0.06,0.00,EUR,1\r\n"
        );
    }

    #[test]
    fn iso_times() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(T0), "2026-03-01T00:00:00.000Z");
        assert_eq!(iso_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.999Z");
    }
}
