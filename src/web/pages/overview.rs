//! The overview page `/`: today's and this month's calls, minutes, cost and savings, the month
//! per route, and calls and cost per day over the last 30 days as inline SVG bar charts (no script).
//! Days and months are those of the office's time zone.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::{PageError, WebState};
use crate::cdr::rating::format_minor;
use crate::cdr::Totals;
use crate::store::{records, Connection, StoreError};
use crate::web::auth::Session;
use crate::web::office_time::{now_ms, OfficeTime};

/// Days in the charts.
const CHART_DAYS: u16 = 30;

/// A period's figures as shown.
pub struct TotalsView {
    pub label: String,
    pub calls: u64,
    pub answered: u64,
    pub minutes: i64,
    pub cost: String,
    pub savings: String,
}

impl TotalsView {
    fn of(label: &str, t: &Totals, currency: &str) -> TotalsView {
        // Amounts are summed in minor units of the office's currency.
        TotalsView {
            label: label.to_owned(),
            calls: t.calls,
            answered: t.answered,
            minutes: t.minutes(),
            cost: format!("{} {currency}", format_minor(t.cost_minor, currency)),
            savings: format!("{} {currency}", format_minor(t.savings_minor, currency)),
        }
    }
}

/// One bar of a chart, in the SVG's coordinates (100 high, 10 wide per day).
pub struct Bar {
    /// `YYYY-MM-DD` (office time zone).
    pub day: String,
    /// The value as shown in the bar's tooltip.
    pub value: String,
    pub x: u64,
    /// The top: 100 minus the height.
    pub y: u64,
    /// Height in percent of the largest bar.
    pub pct: u64,
}

/// A bar chart of one figure per day.
pub struct Chart {
    pub title: String,
    pub bars: Vec<Bar>,
    pub any: bool,
    /// What the chart says when no day has a value above zero.
    pub empty: String,
}

fn chart(title: String, days: &[(String, i64, String)], empty: &str) -> Chart {
    let max = days.iter().map(|d| d.1).max().unwrap_or(0).max(0);
    let bars = days
        .iter()
        .zip(0u64..)
        .map(|((day, v, shown), i)| {
            let pct = u64::try_from((v.max(&0) * 100).checked_div(max).unwrap_or(0)).unwrap_or(0);
            Bar {
                day: day.clone(),
                value: shown.clone(),
                x: i * 10 + 1,
                y: 100 - pct,
                pct,
            }
        })
        .collect();
    Chart {
        title,
        bars,
        any: max > 0,
        empty: empty.to_owned(),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "overview.html")]
struct OverviewPage {
    session: Option<Session>,
    /// The first-run checklist, until every step is done.
    checklist: Option<Vec<super::checklist::Step>>,
    periods: Vec<TotalsView>,
    routes: Vec<TotalsView>,
    charts: Vec<Chart>,
    time_zone: String,
    currency: String,
}

/// The office's billing currency: that of the reference rate table, else of the first
/// table, else EUR.
pub fn office_currency(conn: &Connection) -> Result<String, StoreError> {
    let tables = crate::store::rates::tables(conn)?;
    Ok(tables
        .iter()
        .find(|t| t.reference)
        .or(tables.first())
        .map_or_else(|| "EUR".to_owned(), |t| t.currency.clone()))
}

/// `(today, month, day_starts)` for the instant `now_ms`, in the office's zone.
pub fn periods(office: &OfficeTime, now_ms: i64) -> ((i64, i64), (i64, i64), Vec<i64>) {
    let ((t0, t1), (m0, m1)) = office
        .today_and_month(now_ms)
        .unwrap_or(((now_ms, now_ms), (now_ms, now_ms)));
    ((t0, t1), (m0, m1), office.day_starts(now_ms, CHART_DAYS))
}

/// `GET /`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    let (today, month, starts) = periods(&state.office, now_ms());
    let (o, currency) = state
        .with_read(move |conn| {
            Ok((
                records::overview(conn, today, month, &starts)?,
                office_currency(conn)?,
            ))
        })
        .await?;
    let office = &state.office;
    let calls: Vec<(String, i64, String)> = o
        .days
        .iter()
        .map(|d| {
            let n = i64::try_from(d.totals.calls).unwrap_or(i64::MAX);
            (office.day(d.start_ms), n, format!("{n} calls"))
        })
        .collect();
    let cost: Vec<(String, i64, String)> = o
        .days
        .iter()
        .map(|d| {
            (
                office.day(d.start_ms),
                d.totals.cost_minor,
                format!(
                    "{} {currency}",
                    format_minor(d.totals.cost_minor, &currency)
                ),
            )
        })
        .collect();
    let checklist = super::checklist::load(&state).await?;
    Ok(OverviewPage {
        checklist,
        session: Some(session),
        periods: vec![
            TotalsView::of("Today", &o.today, &currency),
            TotalsView::of("This month", &o.month, &currency),
        ],
        routes: o
            .by_route
            .iter()
            .map(|(k, t)| TotalsView::of(k.as_str(), t, &currency))
            .collect(),
        charts: vec![
            chart(
                "Calls per day, last 30 days".into(),
                &calls,
                "Nothing in the last 30 days yet. Records appear when calls end.",
            ),
            chart(
                format!("Cost per day, last 30 days ({currency})"),
                &cost,
                if calls.iter().any(|d| d.1 > 0) {
                    "No cost in the last 30 days: every call was free (or is not rated yet)."
                } else {
                    "Nothing in the last 30 days yet. Records appear when calls end."
                },
            ),
        ],
        time_zone: office.name().to_owned(),
        currency,
    }
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_of_a_december_day() {
        let utc = OfficeTime::utc();
        // 2025-12-31 15:00 UTC.
        let day0 = utc.parse_day("2025-12-31").unwrap_or_default();
        let now = day0 + 15 * 3_600_000;
        let (today, month, starts) = periods(&utc, now);
        assert_eq!(today.0, day0);
        assert_eq!(today.1 - today.0, 86_400_000);
        assert_eq!(Some(month.0), utc.parse_day("2025-12-01"));
        assert_eq!(Some(month.1), utc.parse_day("2026-01-01"));
        assert_eq!(starts.len(), 31);
        assert_eq!(starts[29], today.0);
        assert_eq!(starts[30], today.1);
    }

    #[test]
    fn chart_scales_to_the_largest_day() {
        let c = chart(
            "t".into(),
            &[
                ("a".into(), 0, "0".into()),
                ("b".into(), 4, "4".into()),
                ("c".into(), 2, "2".into()),
            ],
            "",
        );
        assert!(c.any);
        let pcts: Vec<u64> = c.bars.iter().map(|b| b.pct).collect();
        assert_eq!(pcts, vec![0, 100, 50]);
        assert!(!chart("t".into(), &[("a".into(), 0, "0".into())], "").any);
    }
}
