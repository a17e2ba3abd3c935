//! The reads the dashboard needs: records filtered, sorted and paginated; totals for a period,
//! per day and per route; monthly billing per extension and per line; and CSV exports that
//! stream row by row in flat memory.
//!
//! Every value a user typed is bound as a parameter, never spliced into SQL; sorting is chosen
//! from an enum. Periods are half-open `[from_ms, to_ms)` in UTC unix milliseconds: the caller
//! turns "today" or "March" in the office's time zone into these bounds (and into the day
//! boundaries of [`CdrDb::daily_totals`], which may be 23 or 25 hours apart around a DST change).
//! Money sums add minor units as they are: an office bills in one currency.

use std::io::Write;

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Row};

use super::csv;
use super::db::{record_from_row, RECORD_COLUMNS};
use super::rating::format_minor;
use super::record::{CallRecord, Direction, Disposition, RouteKind};
use super::{CdrDb, CdrError};

/// Which records to show. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Started at or after (UTC unix ms).
    pub from_ms: Option<i64>,
    /// Started before.
    pub to_ms: Option<i64>,
    /// The extension the call belongs to (exact).
    pub extension: Option<String>,
    /// Part of a number: matched anywhere in the caller or callee, as presented or in E.164.
    /// Spaces, dashes, slashes and parentheses are ignored.
    pub number: Option<String>,
    pub direction: Option<Direction>,
    pub route_kind: Option<RouteKind>,
    /// The route target (trunk/line name, SIP URI, extension), exact.
    pub route_target: Option<String>,
    pub disposition: Option<Disposition>,
    /// Minimum talk time (billable seconds).
    pub min_billable_s: Option<i64>,
}

impl Filter {
    /// Records that started in `[from_ms, to_ms)`.
    pub fn period(from_ms: i64, to_ms: i64) -> Filter {
        Filter {
            from_ms: Some(from_ms),
            to_ms: Some(to_ms),
            ..Filter::default()
        }
    }

    /// The number searched for, without the separators people type.
    fn number_needle(&self) -> Option<String> {
        let cleaned: String = self
            .number
            .as_deref()?
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '/' | '(' | ')' | '.'))
            .collect();
        (!cleaned.is_empty()).then_some(cleaned)
    }

    /// `call_records`, with the index to use when the choice is not obvious to SQLite: a
    /// number search without an extension or line filter scans the numbers index, testing the
    /// substring on index entries (index-only) rather than on table rows.
    fn from(&self) -> &'static str {
        if self.number_needle().is_some() && self.extension.is_none() && self.route_target.is_none()
        {
            "call_records INDEXED BY call_records_numbers"
        } else {
            "call_records"
        }
    }

    /// The SQL condition (starting with `WHERE`, or empty) and its parameters.
    fn sql(&self) -> (String, Vec<Value>) {
        let mut conds: Vec<String> = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        let bind = |values: &mut Vec<Value>, v: Value| {
            values.push(v);
            values.len()
        };
        if let Some(v) = self.from_ms {
            let n = bind(&mut values, Value::Integer(v));
            conds.push(format!("start_ms >= ?{n}"));
        }
        if let Some(v) = self.to_ms {
            let n = bind(&mut values, Value::Integer(v));
            conds.push(format!("start_ms < ?{n}"));
        }
        if let Some(v) = &self.extension {
            let n = bind(&mut values, Value::Text(v.clone()));
            conds.push(format!("extension = ?{n}"));
        }
        if let Some(cleaned) = self.number_needle() {
            let n = bind(&mut values, Value::Text(cleaned));
            conds.push(format!(
                "(instr(caller, ?{n}) > 0 OR instr(callee, ?{n}) > 0 \
                 OR instr(coalesce(caller_e164, ''), ?{n}) > 0 \
                 OR instr(coalesce(callee_e164, ''), ?{n}) > 0)"
            ));
        }
        if let Some(v) = self.direction {
            let n = bind(&mut values, Value::Text(v.as_str().to_owned()));
            conds.push(format!("direction = ?{n}"));
        }
        if let Some(v) = self.route_kind {
            let n = bind(&mut values, Value::Text(v.as_str().to_owned()));
            conds.push(format!("route_kind = ?{n}"));
        }
        if let Some(v) = &self.route_target {
            let n = bind(&mut values, Value::Text(v.clone()));
            conds.push(format!("route_target = ?{n}"));
        }
        if let Some(v) = self.disposition {
            let n = bind(&mut values, Value::Text(v.as_str().to_owned()));
            conds.push(format!("disposition = ?{n}"));
        }
        if let Some(v) = self.min_billable_s {
            let n = bind(&mut values, Value::Integer(v));
            conds.push(format!("billable_s >= ?{n}"));
        }
        if conds.is_empty() {
            (String::new(), values)
        } else {
            (format!("WHERE {}", conds.join(" AND ")), values)
        }
    }
}

/// What records are sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Start time.
    #[default]
    Start,
    /// Whole call duration.
    Duration,
    /// Talk time.
    Billable,
    Cost,
    Caller,
    Callee,
}

impl SortKey {
    fn column(self) -> &'static str {
        match self {
            SortKey::Start => "start_ms",
            SortKey::Duration => "duration_s",
            SortKey::Billable => "billable_s",
            SortKey::Cost => "cost_minor",
            SortKey::Caller => "caller",
            SortKey::Callee => "callee",
        }
    }
}

/// An order of records; ties are broken by id in the same direction, so pages are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

impl Default for Sort {
    /// Newest first.
    fn default() -> Sort {
        Sort {
            key: SortKey::Start,
            descending: true,
        }
    }
}

impl Sort {
    fn sql(self) -> String {
        let dir = if self.descending { "DESC" } else { "ASC" };
        format!("ORDER BY {} {dir}, id {dir}", self.key.column())
    }
}

/// A page of records: `limit` records after skipping `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub offset: u64,
    /// At most [`Page::MAX_LIMIT`].
    pub limit: u32,
}

impl Page {
    /// The largest page served.
    pub const MAX_LIMIT: u32 = 1_000;

    /// Page `number` (1-based) of `size` records.
    pub fn number(number: u64, size: u32) -> Page {
        Page {
            offset: number.saturating_sub(1).saturating_mul(u64::from(size)),
            limit: size,
        }
    }
}

/// Sums over a set of records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Records (attempts, answered or not).
    pub calls: u64,
    pub answered: u64,
    /// Talk time, seconds.
    pub billable_s: i64,
    /// Cost, minor units.
    pub cost_minor: i64,
    /// Savings, minor units.
    pub savings_minor: i64,
}

impl Totals {
    /// Talk time in minutes, every started minute counted (a 6 s call is 1 minute, as a
    /// provider billing 60/60 charges it); the one rule for minutes everywhere they are shown.
    pub fn minutes(&self) -> i64 {
        (self.billable_s + 59) / 60
    }

    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Totals) {
        self.calls += other.calls;
        self.answered += other.answered;
        self.billable_s += other.billable_s;
        self.cost_minor += other.cost_minor;
        self.savings_minor += other.savings_minor;
    }

    fn add_row(&mut self, row: &Row<'_>, first: usize) -> rusqlite::Result<()> {
        self.calls += to_u64(row.get(first)?);
        self.answered += to_u64(row.get(first + 1)?);
        self.billable_s += row.get::<_, i64>(first + 2)?;
        self.cost_minor += row.get::<_, i64>(first + 3)?;
        self.savings_minor += row.get::<_, i64>(first + 4)?;
        Ok(())
    }
}

/// The totals of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayTotals {
    /// The day's first millisecond (UTC unix ms), as given.
    pub start_ms: i64,
    pub totals: Totals,
}

/// The overview page's figures ([`CdrDb::overview`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    pub today: Totals,
    pub month: Totals,
    /// The month per route kind.
    pub by_route: Vec<(RouteKind, Totals)>,
    /// One entry per day (the last 30 days, as asked).
    pub days: Vec<DayTotals>,
}

/// One line of a monthly bill: an extension or a PSTN line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BillingLine {
    /// The extension number or the line name.
    pub key: String,
    pub totals: Totals,
    /// Answered calls without a cost (no rate matched).
    pub unrated: u64,
    /// The currency of its costs (the largest code when they differ).
    pub currency: Option<String>,
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The aggregate columns [`Totals::add_row`] reads.
const TOTALS: &str = "count(*), coalesce(sum(disposition = 'answered'), 0), \
     coalesce(sum(billable_s), 0), coalesce(sum(cost_minor), 0), coalesce(sum(savings_minor), 0)";

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

impl CdrDb {
    /// A page of the records matching `filter`, in `sort` order.
    pub fn list(
        &self,
        filter: &Filter,
        sort: Sort,
        page: Page,
    ) -> Result<Vec<CallRecord>, CdrError> {
        let (cond, mut values) = filter.sql();
        let limit = page.limit.min(Page::MAX_LIMIT);
        values.push(Value::Integer(i64::from(limit)));
        let l = values.len();
        values.push(Value::Integer(
            i64::try_from(page.offset).unwrap_or(i64::MAX),
        ));
        let o = values.len();
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM {} {cond} {} LIMIT ?{l} OFFSET ?{o}",
            filter.from(),
            sort.sql()
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(values), record_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many records match `filter`.
    pub fn count(&self, filter: &Filter) -> Result<u64, CdrError> {
        let (cond, values) = filter.sql();
        let sql = format!("SELECT count(*) FROM {} {cond}", filter.from());
        let n: i64 = self
            .conn
            .prepare_cached(&sql)?
            .query_row(params_from_iter(values), |r| r.get(0))?;
        Ok(to_u64(n))
    }

    /// Calls, answered calls, talk time, cost and savings of the records matching `filter`
    /// (for "today" and "this month": a [`Filter::period`]; served from an index alone).
    pub fn totals(&self, filter: &Filter) -> Result<Totals, CdrError> {
        let (cond, values) = filter.sql();
        let sql = format!("SELECT {TOTALS} FROM {} {cond}", filter.from());
        let mut t = Totals::default();
        self.conn
            .prepare_cached(&sql)?
            .query_row(params_from_iter(values), |r| t.add_row(r, 0))?;
        Ok(t)
    }

    /// Totals per day. `day_starts` are the boundaries of consecutive days in the office's
    /// time zone, ascending (31 boundaries for the last 30 days); day `i` is
    /// `[day_starts[i], day_starts[i + 1])`. Days without calls are included, with zeros.
    pub fn daily_totals(&self, day_starts: &[i64]) -> Result<Vec<DayTotals>, CdrError> {
        let mut days: Vec<DayTotals> = day_starts
            .windows(2)
            .map(|w| DayTotals {
                start_ms: w[0],
                totals: Totals::default(),
            })
            .collect();
        // One aggregate per day over the period index (index-only, summed inside SQLite):
        // cheaper than sending every row of the month back, or sorting them for a GROUP BY.
        let sql =
            format!("SELECT {TOTALS} FROM call_records WHERE start_ms >= ?1 AND start_ms < ?2");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        for (d, w) in days.iter_mut().zip(day_starts.windows(2)) {
            stmt.query_row([w[0], w[1]], |r| d.totals.add_row(r, 0))?;
        }
        Ok(days)
    }

    /// Totals per route kind for calls that started in `[from_ms, to_ms)`, in the order of
    /// [`RouteKind::ALL`] (kinds without calls are left out). One index-only pass.
    pub fn totals_by_route(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(RouteKind, Totals)>, CdrError> {
        // Conditional sums per kind in one scan: no temporary b-tree to group the rows.
        let columns: Vec<String> = RouteKind::ALL
            .iter()
            .map(|k| {
                let when = format!("FILTER (WHERE route_kind = '{}')", k.as_str());
                format!(
                    "count(*) {when}, coalesce(sum(disposition = 'answered') {when}, 0), \
                     coalesce(sum(billable_s) {when}, 0), coalesce(sum(cost_minor) {when}, 0), \
                     coalesce(sum(savings_minor) {when}, 0)"
                )
            })
            .collect();
        let sql = format!(
            "SELECT {} FROM call_records WHERE start_ms >= ?1 AND start_ms < ?2",
            columns.join(", ")
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let per_kind = stmt.query_row([from_ms, to_ms], |r| {
            let mut out = Vec::new();
            for (i, k) in RouteKind::ALL.iter().enumerate() {
                let mut t = Totals::default();
                t.add_row(r, i * 5)?;
                out.push((*k, t));
            }
            Ok(out)
        })?;
        Ok(per_kind.into_iter().filter(|(_, t)| t.calls > 0).collect())
    }

    /// What the overview page shows, in three index-only reads: the totals of `today` and of
    /// `month` (each `(from_ms, to_ms)`), the month per route kind (whose sum is the month's
    /// totals, so the month is scanned once), and the days of `day_starts` (see
    /// [`CdrDb::daily_totals`]).
    pub fn overview(
        &self,
        today: (i64, i64),
        month: (i64, i64),
        day_starts: &[i64],
    ) -> Result<Overview, CdrError> {
        let by_route = self.totals_by_route(month.0, month.1)?;
        let mut month_totals = Totals::default();
        for (_, t) in &by_route {
            month_totals.add(t);
        }
        Ok(Overview {
            today: self.totals(&Filter::period(today.0, today.1))?,
            month: month_totals,
            by_route,
            days: self.daily_totals(day_starts)?,
        })
    }

    fn billing(
        &self,
        key: &str,
        cond: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<BillingLine>, CdrError> {
        // One index-only pass over the month's entries of the billing index (it carries the key
        // columns and the money), grouped in a small temporary b-tree.
        let sql = format!(
            "SELECT {key}, {TOTALS},
                    coalesce(sum(disposition = 'answered' AND cost_minor IS NULL), 0),
                    max(currency)
             FROM call_records INDEXED BY call_records_billing
             WHERE start_ms >= ?1 AND start_ms < ?2 AND {key} IS NOT NULL AND {cond}
             GROUP BY {key} ORDER BY {key}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([from_ms, to_ms], |r| {
            let mut totals = Totals::default();
            totals.add_row(r, 1)?;
            Ok(BillingLine {
                key: r.get(0)?,
                totals,
                unrated: to_u64(r.get(6)?),
                currency: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The bill of each extension for `[from_ms, to_ms)` (a month): its outgoing calls.
    pub fn billing_by_extension(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<BillingLine>, CdrError> {
        self.billing("extension", "direction = 'outgoing'", from_ms, to_ms)
    }

    /// The bill of each PSTN trunk or line for `[from_ms, to_ms)`: the calls routed over it.
    pub fn billing_by_line(&self, from_ms: i64, to_ms: i64) -> Result<Vec<BillingLine>, CdrError> {
        self.billing("route_target", "route_kind = 'pstn'", from_ms, to_ms)
    }

    /// Calls `each` with every record matching `filter`, in `sort` order, one at a time (flat
    /// memory however many match). Stops at the first error `each` returns.
    pub fn for_each_record(
        &self,
        filter: &Filter,
        sort: Sort,
        mut each: impl FnMut(&CallRecord) -> Result<(), CdrError>,
    ) -> Result<u64, CdrError> {
        let (cond, values) = filter.sql();
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM {} {cond} {}",
            filter.from(),
            sort.sql()
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(values))?;
        let mut n = 0u64;
        while let Some(row) = rows.next()? {
            each(&record_from_row(row)?)?;
            n += 1;
        }
        Ok(n)
    }

    /// Writes every record matching `filter` as CSV ([`RECORD_CSV_COLUMNS`]; times in UTC,
    /// money as decimals of its currency), streaming row by row. Returns the number of records.
    pub fn export_csv(
        &self,
        filter: &Filter,
        sort: Sort,
        out: impl Write,
    ) -> Result<u64, CdrError> {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
        csv::write_row(&mut out, &RECORD_CSV_COLUMNS)?;
        let mut row = String::with_capacity(512);
        let n = self.for_each_record(filter, sort, |r| {
            row.clear();
            record_csv(r, &mut row);
            row.push_str("\r\n");
            out.write_all(row.as_bytes())?;
            Ok(())
        })?;
        out.flush()?;
        Ok(n)
    }
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
    use crate::cdr::record::tests::sample;

    const DAY: i64 = 86_400_000;
    /// 2026-03-01T00:00:00Z.
    const T0: i64 = 1_772_323_200_000;

    /// Twelve records over three days: extensions 100/101, three routes, four dispositions.
    fn fixture() -> (tempfile::TempDir, CdrDb) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = CdrDb::open(&dir.path().join("q.db")).unwrap();
        let mut recs = Vec::new();
        for i in 0..12i64 {
            let mut r = sample(T0 + (i / 4) * DAY + i * 60_000);
            r.extension = Some(if i % 2 == 0 { "100" } else { "101" }.into());
            r.caller = r.extension.clone().unwrap();
            r.callee = format!("0301234{i:02}");
            r.callee_e164 = Some(format!("+49301234{i:02}"));
            r.billable_s = 10 * i;
            r.duration_s = 10 * i + 5;
            match i % 3 {
                0 => {
                    r.route_kind = RouteKind::Pstn;
                    r.route_target = Some(if i < 6 { "carrier" } else { "gsm1" }.into());
                    r.cost_minor = Some(i);
                    r.savings_minor = Some(0);
                }
                1 => {
                    r.route_kind = RouteKind::Sip;
                    r.route_target = Some("sip:x@example.net".into());
                    r.cost_minor = Some(0);
                    r.savings_minor = Some(2 * i);
                }
                _ => {
                    r.route_kind = RouteKind::Extension;
                    r.direction = Direction::Internal;
                    r.route_target = Some("102".into());
                    r.cost_minor = Some(0);
                    r.savings_minor = Some(0);
                }
            }
            r.currency = Some("EUR".into());
            if i % 4 == 3 {
                r.disposition = Disposition::Busy;
                r.answer_ms = None;
                r.billable_s = 0;
                r.cost_minor = Some(0);
                r.savings_minor = Some(0);
            }
            recs.push(r);
        }
        // An answered PSTN call without a rate.
        recs[9].cost_minor = None;
        db.insert(&mut recs).unwrap();
        (dir, db)
    }

    fn ids(list: &[CallRecord]) -> Vec<i64> {
        list.iter().map(|r| r.id.unwrap()).collect()
    }

    #[test]
    fn list_filters_sorts_and_pages() {
        let (_d, db) = fixture();
        let all = Filter::default();
        assert_eq!(db.count(&all).unwrap(), 12);
        let newest = db.list(&all, Sort::default(), Page::number(1, 5)).unwrap();
        assert_eq!(ids(&newest), vec![12, 11, 10, 9, 8]);
        let third = db.list(&all, Sort::default(), Page::number(3, 5)).unwrap();
        assert_eq!(ids(&third), vec![2, 1]);

        let f = Filter {
            extension: Some("100".into()),
            ..Filter::period(T0 + DAY, T0 + 3 * DAY)
        };
        assert_eq!(db.count(&f).unwrap(), 4);
        let by_talk = Sort {
            key: SortKey::Billable,
            descending: false,
        };
        let got = db.list(&f, by_talk, Page::number(1, 10)).unwrap();
        assert_eq!(ids(&got), vec![5, 7, 9, 11]);

        let f = Filter {
            disposition: Some(Disposition::Busy),
            ..Filter::default()
        };
        assert_eq!(
            ids(&db.list(&f, Sort::default(), Page::number(1, 10)).unwrap()),
            vec![12, 8, 4]
        );
        let f = Filter {
            route_kind: Some(RouteKind::Pstn),
            route_target: Some("gsm1".into()),
            ..Filter::default()
        };
        assert_eq!(db.count(&f).unwrap(), 2);
        let f = Filter {
            direction: Some(Direction::Internal),
            min_billable_s: Some(50),
            ..Filter::default()
        };
        assert_eq!(
            ids(&db.list(&f, Sort::default(), Page::number(1, 10)).unwrap()),
            vec![9, 6]
        );
        // Number search: partial, with spaces, in the dialled or the E.164 form.
        for (needle, expect) in [
            ("+49 30 1234 07", vec![8]),
            ("030123410", vec![11]),
            ("123411", vec![12]),
        ] {
            let f = Filter {
                number: Some(needle.into()),
                ..Filter::default()
            };
            assert_eq!(
                ids(&db.list(&f, Sort::default(), Page::number(1, 10)).unwrap()),
                expect,
                "{needle}"
            );
        }
        // Hostile input is just text that matches nothing.
        let f = Filter {
            number: Some("'; DROP TABLE call_records; --".into()),
            extension: Some("100' OR '1'='1".into()),
            ..Filter::default()
        };
        assert_eq!(db.count(&f).unwrap(), 0);
        assert_eq!(db.count(&Filter::default()).unwrap(), 12);
        // Oversized pages are capped.
        let p = Page {
            offset: 0,
            limit: u32::MAX,
        };
        assert_eq!(db.list(&all, Sort::default(), p).unwrap().len(), 12);
    }

    #[test]
    fn totals_per_period_day_and_route() {
        let (_d, db) = fixture();
        let t = db.totals(&Filter::period(T0, T0 + DAY)).unwrap();
        // Records 1–4 (i = 0..3): record 4 busy.
        assert_eq!(
            t,
            Totals {
                calls: 4,
                answered: 3,
                billable_s: 30,
                cost_minor: 0,
                savings_minor: 2,
            }
        );
        let month = db.totals(&Filter::period(T0, T0 + 31 * DAY)).unwrap();
        assert_eq!(month.calls, 12);
        assert_eq!(month.cost_minor, 6); // PSTN: i = 0 (0), 3 (busy), 6 (6), 9 (unrated)
        assert_eq!(month.minutes(), (month.billable_s + 59) / 60);

        let starts: Vec<i64> = (0..=4).map(|d| T0 - DAY + d * DAY).collect();
        let days = db.daily_totals(&starts).unwrap();
        assert_eq!(
            days.iter()
                .map(|d| (d.start_ms, d.totals.calls))
                .collect::<Vec<_>>(),
            vec![(T0 - DAY, 0), (T0, 4), (T0 + DAY, 4), (T0 + 2 * DAY, 4)]
        );
        assert_eq!(days[1].totals, t);
        assert!(db.daily_totals(&[T0]).unwrap().is_empty());

        let by_route = db.totals_by_route(T0, T0 + 31 * DAY).unwrap();
        let kinds: Vec<(RouteKind, u64)> = by_route.iter().map(|(k, t)| (*k, t.calls)).collect();
        assert_eq!(
            kinds,
            vec![
                (RouteKind::Extension, 4),
                (RouteKind::Sip, 4),
                (RouteKind::Pstn, 4)
            ]
        );
        let sip = by_route[1].1;
        let o = db
            .overview((T0, T0 + DAY), (T0, T0 + 31 * DAY), &starts)
            .unwrap();
        assert_eq!(o.today, t);
        assert_eq!(o.month, month);
        assert_eq!(o.by_route, by_route);
        assert_eq!(o.days, days);
        assert_eq!(sip.savings_minor, 2 + 8 + 20); // i = 1, 4, 10 (7 was busy)
    }

    #[test]
    fn monthly_billing_per_extension_and_line() {
        let (_d, db) = fixture();
        let ext = db.billing_by_extension(T0, T0 + 31 * DAY).unwrap();
        // Outgoing calls only: i % 3 != 2.
        assert_eq!(ext.len(), 2);
        assert_eq!(ext[0].key, "100");
        assert_eq!(ext[0].totals.calls, 4); // i = 0, 4, 6, 10
        assert_eq!(ext[0].totals.cost_minor, 6);
        assert_eq!(ext[1].key, "101");
        assert_eq!(ext[1].unrated, 1); // i = 9
        assert_eq!(ext[1].currency.as_deref(), Some("EUR"));
        let lines = db.billing_by_line(T0, T0 + 31 * DAY).unwrap();
        assert_eq!(
            lines
                .iter()
                .map(|l| (l.key.as_str(), l.totals.calls, l.totals.cost_minor))
                .collect::<Vec<_>>(),
            vec![("carrier", 2, 0), ("gsm1", 2, 6)]
        );
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
    fn csv_export_streams_the_filtered_set() {
        let (_d, db) = fixture();
        let f = Filter {
            extension: Some("101".into()),
            ..Filter::default()
        };
        let mut out = Vec::new();
        let n = db
            .export_csv(
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
        let err = db.for_each_record(&f, Sort::default(), |_| {
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
    fn iso_times() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(T0), "2026-03-01T00:00:00.000Z");
        assert_eq!(iso_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso_utc(-1), "1969-12-31T23:59:59.999Z");
    }
}
