//! The overview page `/`: today's and this month's calls, minutes, cost and savings, the month
//! per route, and calls per day over the last 30 days as an inline SVG bar chart (no script). Days are UTC
//! days until the office's time zone is configurable.

use std::time::{SystemTime, UNIX_EPOCH};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::{days_from_civil, PageError, WebState};
use crate::cdr::query::iso_utc;
use crate::cdr::rating::format_minor;
use crate::cdr::Totals;
use crate::web::auth::Session;

const DAY_MS: i64 = 86_400_000;
/// Days in the chart.
const CHART_DAYS: i64 = 30;

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
    fn of(label: &str, t: &Totals) -> TotalsView {
        // Amounts are summed in minor units; shown with two decimals (an office bills in one
        // currency, and the common ones have two).
        TotalsView {
            label: label.to_owned(),
            calls: t.calls,
            answered: t.answered,
            minutes: t.minutes(),
            cost: format_minor(t.cost_minor, "EUR"),
            savings: format_minor(t.savings_minor, "EUR"),
        }
    }
}

/// One bar of the chart, in the SVG's coordinates (100 high, 10 wide per day).
pub struct Bar {
    /// `YYYY-MM-DD`.
    pub day: String,
    pub calls: u64,
    pub x: u64,
    /// The top: 100 minus the height.
    pub y: u64,
    /// Height in percent of the busiest day.
    pub pct: u64,
}

#[derive(Template, WebTemplate)]
#[template(path = "overview.html")]
struct OverviewPage {
    session: Option<Session>,
    periods: Vec<TotalsView>,
    routes: Vec<TotalsView>,
    bars: Vec<Bar>,
    any_calls: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `(today, month, day_starts)` for the instant `now_ms`, in UTC.
pub fn periods(now_ms: i64) -> ((i64, i64), (i64, i64), Vec<i64>) {
    let today = now_ms.div_euclid(DAY_MS) * DAY_MS;
    let iso = iso_utc(now_ms);
    let year: i64 = iso.get(..4).and_then(|y| y.parse().ok()).unwrap_or(1970);
    let month: i64 = iso.get(5..7).and_then(|m| m.parse().ok()).unwrap_or(1);
    let month_start = days_from_civil(year, month, 1) * DAY_MS;
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    let month_end = days_from_civil(ny, nm, 1) * DAY_MS;
    let first = today - (CHART_DAYS - 1) * DAY_MS;
    let starts = (0..=CHART_DAYS).map(|i| first + i * DAY_MS).collect();
    ((today, today + DAY_MS), (month_start, month_end), starts)
}

/// `GET /`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
) -> Result<Response, PageError> {
    let (today, month, starts) = periods(now_ms());
    let o = state
        .with_db(move |db| Ok(db.overview(today, month, &starts)?))
        .await?;
    let max = o.days.iter().map(|d| d.totals.calls).max().unwrap_or(0);
    let bars = o
        .days
        .iter()
        .zip(0u64..)
        .map(|(d, i)| {
            let pct = (d.totals.calls * 100).checked_div(max).unwrap_or(0);
            Bar {
                day: iso_utc(d.start_ms).get(..10).unwrap_or_default().to_owned(),
                calls: d.totals.calls,
                x: i * 10 + 1,
                y: 100 - pct,
                pct,
            }
        })
        .collect();
    Ok(OverviewPage {
        session: Some(session),
        periods: vec![
            TotalsView::of("Today", &o.today),
            TotalsView::of("This month", &o.month),
        ],
        routes: o
            .by_route
            .iter()
            .map(|(k, t)| TotalsView::of(k.as_str(), t))
            .collect(),
        bars,
        any_calls: max > 0,
    }
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_of_a_december_day() {
        // 2025-12-31 15:00 UTC.
        let now = days_from_civil(2025, 12, 31) * DAY_MS + 15 * 3_600_000;
        let (today, month, starts) = periods(now);
        assert_eq!(today.0, days_from_civil(2025, 12, 31) * DAY_MS);
        assert_eq!(today.1 - today.0, DAY_MS);
        assert_eq!(month.0, days_from_civil(2025, 12, 1) * DAY_MS);
        assert_eq!(month.1, days_from_civil(2026, 1, 1) * DAY_MS);
        assert_eq!(starts.len(), 31);
        assert_eq!(starts[29], today.0);
        assert_eq!(starts[30], today.1);
    }
}
