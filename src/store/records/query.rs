//! The reads of call records the dashboard needs: records filtered, sorted and paginated;
//! totals for a period, per day and per route; monthly billing per extension and per line; and
//! a walk over every matching record in flat memory (the CSV export of
//! [`crate::cdr::query`] streams through it).
//!
//! Every value a user typed is bound as a parameter, never spliced into SQL; sorting is chosen
//! from an enum. Periods are half-open `[from_ms, to_ms)` in UTC unix milliseconds: the caller
//! turns "today" or "March" in the office's time zone into these bounds (and into the day
//! boundaries of [`daily_totals`], which may be 23 or 25 hours apart around a DST change).
//! Money sums add minor units as they are: an office bills in one currency. Each function
//! takes a `&Connection`, so the dashboard runs them on its read-only connections.

use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, Row};

use super::{record_from_row, RECORD_COLUMNS};
use crate::cdr::record::{CallRecord, Direction, Disposition, RouteKind};
use crate::store::StoreError;

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

/// The overview page's figures ([`overview`]).
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

/// A page of the records matching `filter`, in `sort` order.
pub fn list(
    conn: &Connection,
    filter: &Filter,
    sort: Sort,
    page: Page,
) -> Result<Vec<CallRecord>, StoreError> {
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
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), record_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How many records match `filter`.
pub fn count(conn: &Connection, filter: &Filter) -> Result<u64, StoreError> {
    let (cond, values) = filter.sql();
    let sql = format!("SELECT count(*) FROM {} {cond}", filter.from());
    let n: i64 = conn
        .prepare_cached(&sql)?
        .query_row(params_from_iter(values), |r| r.get(0))?;
    Ok(to_u64(n))
}

/// Calls, answered calls, talk time, cost and savings of the records matching `filter`
/// (for "today" and "this month": a [`Filter::period`]; served from an index alone).
pub fn totals(conn: &Connection, filter: &Filter) -> Result<Totals, StoreError> {
    let (cond, values) = filter.sql();
    let sql = format!("SELECT {TOTALS} FROM {} {cond}", filter.from());
    let mut t = Totals::default();
    conn.prepare_cached(&sql)?
        .query_row(params_from_iter(values), |r| t.add_row(r, 0))?;
    Ok(t)
}

/// Totals per day. `day_starts` are the boundaries of consecutive days in the office's
/// time zone, ascending (31 boundaries for the last 30 days); day `i` is
/// `[day_starts[i], day_starts[i + 1])`. Days without calls are included, with zeros.
pub fn daily_totals(conn: &Connection, day_starts: &[i64]) -> Result<Vec<DayTotals>, StoreError> {
    let mut days: Vec<DayTotals> = day_starts
        .windows(2)
        .map(|w| DayTotals {
            start_ms: w[0],
            totals: Totals::default(),
        })
        .collect();
    // One aggregate per day over the period index (index-only, summed inside SQLite):
    // cheaper than sending every row of the month back, or sorting them for a GROUP BY.
    let sql = format!("SELECT {TOTALS} FROM call_records WHERE start_ms >= ?1 AND start_ms < ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    for (d, w) in days.iter_mut().zip(day_starts.windows(2)) {
        stmt.query_row([w[0], w[1]], |r| d.totals.add_row(r, 0))?;
    }
    Ok(days)
}

/// Totals per route kind for calls that started in `[from_ms, to_ms)`, in the order of
/// [`RouteKind::ALL`] (kinds without calls are left out). One index-only pass.
pub fn totals_by_route(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(RouteKind, Totals)>, StoreError> {
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
    let mut stmt = conn.prepare_cached(&sql)?;
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
/// [`daily_totals`]).
pub fn overview(
    conn: &Connection,
    today: (i64, i64),
    month: (i64, i64),
    day_starts: &[i64],
) -> Result<Overview, StoreError> {
    let by_route = totals_by_route(conn, month.0, month.1)?;
    let mut month_totals = Totals::default();
    for (_, t) in &by_route {
        month_totals.add(t);
    }
    Ok(Overview {
        today: totals(conn, &Filter::period(today.0, today.1))?,
        month: month_totals,
        by_route,
        days: daily_totals(conn, day_starts)?,
    })
}

fn billing(
    conn: &Connection,
    key: &str,
    cond: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<BillingLine>, StoreError> {
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
    let mut stmt = conn.prepare_cached(&sql)?;
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
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<BillingLine>, StoreError> {
    billing(conn, "extension", "direction = 'outgoing'", from_ms, to_ms)
}

/// The bill of each PSTN trunk or line for `[from_ms, to_ms)`: the calls routed over it.
pub fn billing_by_line(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<BillingLine>, StoreError> {
    billing(conn, "route_target", "route_kind = 'pstn'", from_ms, to_ms)
}

/// Calls `each` with every record matching `filter`, in `sort` order, one at a time (flat
/// memory however many match). Stops at the first error `each` returns.
pub fn for_each_record<E>(
    conn: &Connection,
    filter: &Filter,
    sort: Sort,
    mut each: impl FnMut(&CallRecord) -> Result<(), E>,
) -> Result<u64, E>
where
    E: From<StoreError>,
{
    let (cond, values) = filter.sql();
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM {} {cond} {}",
        filter.from(),
        sort.sql()
    );
    let sqlite = |e: rusqlite::Error| E::from(StoreError::Sqlite(e));
    let mut stmt = conn.prepare(&sql).map_err(sqlite)?;
    let mut rows = stmt.query(params_from_iter(values)).map_err(sqlite)?;
    let mut n = 0u64;
    while let Some(row) = rows.next().map_err(sqlite)? {
        each(&record_from_row(row).map_err(sqlite)?)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cdr::record::tests::sample;

    pub(crate) const DAY: i64 = 86_400_000;
    /// 2026-03-01T00:00:00Z.
    pub(crate) const T0: i64 = 1_772_323_200_000;

    /// Twelve records over three days: extensions 100/101, three routes, four dispositions.
    pub(crate) fn fixture() -> (tempfile::TempDir, Connection) {
        let (dir, mut db) = crate::store::records::tests::open();
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
        crate::store::records::insert(&mut db, &mut recs).unwrap();
        (dir, db)
    }

    fn ids(list: &[CallRecord]) -> Vec<i64> {
        list.iter().map(|r| r.id.unwrap()).collect()
    }

    #[test]
    fn list_filters_sorts_and_pages() {
        let (_d, db) = fixture();
        let all = Filter::default();
        assert_eq!(count(&db, &all).unwrap(), 12);
        let newest = list(&db, &all, Sort::default(), Page::number(1, 5)).unwrap();
        assert_eq!(ids(&newest), vec![12, 11, 10, 9, 8]);
        let third = list(&db, &all, Sort::default(), Page::number(3, 5)).unwrap();
        assert_eq!(ids(&third), vec![2, 1]);

        let f = Filter {
            extension: Some("100".into()),
            ..Filter::period(T0 + DAY, T0 + 3 * DAY)
        };
        assert_eq!(count(&db, &f).unwrap(), 4);
        let by_talk = Sort {
            key: SortKey::Billable,
            descending: false,
        };
        let got = list(&db, &f, by_talk, Page::number(1, 10)).unwrap();
        assert_eq!(ids(&got), vec![5, 7, 9, 11]);

        let f = Filter {
            disposition: Some(Disposition::Busy),
            ..Filter::default()
        };
        assert_eq!(
            ids(&list(&db, &f, Sort::default(), Page::number(1, 10)).unwrap()),
            vec![12, 8, 4]
        );
        let f = Filter {
            route_kind: Some(RouteKind::Pstn),
            route_target: Some("gsm1".into()),
            ..Filter::default()
        };
        assert_eq!(count(&db, &f).unwrap(), 2);
        let f = Filter {
            direction: Some(Direction::Internal),
            min_billable_s: Some(50),
            ..Filter::default()
        };
        assert_eq!(
            ids(&list(&db, &f, Sort::default(), Page::number(1, 10)).unwrap()),
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
                ids(&list(&db, &f, Sort::default(), Page::number(1, 10)).unwrap()),
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
        assert_eq!(count(&db, &f).unwrap(), 0);
        assert_eq!(count(&db, &Filter::default()).unwrap(), 12);
        // Oversized pages are capped.
        let p = Page {
            offset: 0,
            limit: u32::MAX,
        };
        assert_eq!(list(&db, &all, Sort::default(), p).unwrap().len(), 12);
    }

    #[test]
    fn totals_per_period_day_and_route() {
        let (_d, db) = fixture();
        let t = totals(&db, &Filter::period(T0, T0 + DAY)).unwrap();
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
        let month = totals(&db, &Filter::period(T0, T0 + 31 * DAY)).unwrap();
        assert_eq!(month.calls, 12);
        assert_eq!(month.cost_minor, 6); // PSTN: i = 0 (0), 3 (busy), 6 (6), 9 (unrated)
        assert_eq!(month.minutes(), (month.billable_s + 59) / 60);

        let starts: Vec<i64> = (0..=4).map(|d| T0 - DAY + d * DAY).collect();
        let days = daily_totals(&db, &starts).unwrap();
        assert_eq!(
            days.iter()
                .map(|d| (d.start_ms, d.totals.calls))
                .collect::<Vec<_>>(),
            vec![(T0 - DAY, 0), (T0, 4), (T0 + DAY, 4), (T0 + 2 * DAY, 4)]
        );
        assert_eq!(days[1].totals, t);
        assert!(daily_totals(&db, &[T0]).unwrap().is_empty());

        let by_route = totals_by_route(&db, T0, T0 + 31 * DAY).unwrap();
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
        let o = overview(&db, (T0, T0 + DAY), (T0, T0 + 31 * DAY), &starts).unwrap();
        assert_eq!(o.today, t);
        assert_eq!(o.month, month);
        assert_eq!(o.by_route, by_route);
        assert_eq!(o.days, days);
        assert_eq!(sip.savings_minor, 2 + 8 + 20); // i = 1, 4, 10 (7 was busy)
    }

    #[test]
    fn monthly_billing_per_extension_and_line() {
        let (_d, db) = fixture();
        let ext = billing_by_extension(&db, T0, T0 + 31 * DAY).unwrap();
        // Outgoing calls only: i % 3 != 2.
        assert_eq!(ext.len(), 2);
        assert_eq!(ext[0].key, "100");
        assert_eq!(ext[0].totals.calls, 4); // i = 0, 4, 6, 10
        assert_eq!(ext[0].totals.cost_minor, 6);
        assert_eq!(ext[1].key, "101");
        assert_eq!(ext[1].unrated, 1); // i = 9
        assert_eq!(ext[1].currency.as_deref(), Some("EUR"));
        let lines = billing_by_line(&db, T0, T0 + 31 * DAY).unwrap();
        assert_eq!(
            lines
                .iter()
                .map(|l| (l.key.as_str(), l.totals.calls, l.totals.cost_minor))
                .collect::<Vec<_>>(),
            vec![("carrier", 2, 0), ("gsm1", 2, 6)]
        );
    }
}
