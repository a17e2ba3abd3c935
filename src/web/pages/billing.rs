//! The monthly billing page `/billing?month=YYYY-MM`: what each extension's outgoing calls
//! cost and saved, and what went over each PSTN trunk or line, for one month of the office's
//! time zone, with the same tables as CSV (`/billing.csv?month=…&by=extension|line`), and
//! `POST /billing/rerate` to rate the month's calls again with the current rates (after a rate
//! was added or corrected; the command line does the same: `pasarela rerate YYYY-MM`).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, url_encode, PageError, WebState};
use crate::cdr::query::{write_billing_csv, BillingLine};
use crate::cdr::rating::format_minor;
use crate::store::records;
use crate::web::auth::Session;
use crate::web::office_time::now_ms;

/// `?month=YYYY-MM` (default: this month) and, for the CSV, `by=extension|line`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BillingQuery {
    pub month: String,
    pub by: String,
}

/// A billing line as a table row.
pub struct LineView {
    pub key: String,
    pub calls: u64,
    pub answered: u64,
    pub minutes: i64,
    pub cost: String,
    pub savings: String,
    pub unrated: u64,
    /// Link to the records behind the line.
    pub records: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "billing.html")]
struct BillingPage {
    session: Option<Session>,
    month: String,
    error: Option<String>,
    prev: String,
    next: String,
    extensions: Vec<LineView>,
    lines: Vec<LineView>,
    time_zone: String,
    /// What a re-rating did.
    message: Option<String>,
}

/// The re-rate form: the month and the session's CSRF token.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RerateForm {
    pub csrf: String,
    pub month: String,
}

fn money(amount: i64, currency: Option<&str>) -> String {
    match currency {
        Some(c) => format!("{} {c}", format_minor(amount, c)),
        None => format_minor(amount, ""),
    }
}

/// The month `YYYY-MM` before or after `month` (`delta` ±1).
fn step(month: &str, delta: i32) -> String {
    let (y, m) = month.split_once('-').unwrap_or(("1970", "01"));
    let (y, m): (i32, i32) = (y.parse().unwrap_or(1970), m.parse().unwrap_or(1));
    let idx = y * 12 + (m - 1) + delta;
    format!("{:04}-{:02}", idx.div_euclid(12), idx.rem_euclid(12) + 1)
}

/// The month asked for (or this month) with its `[start, end)`; the error for a bad value.
fn month_of(state: &WebState, q: &BillingQuery) -> (String, (i64, i64), Option<String>) {
    let this = state.office.this_month(now_ms());
    let asked = q.month.trim();
    if asked.is_empty() {
        let range = state.office.parse_month(&this).unwrap_or((0, 0));
        return (this, range, None);
    }
    match state.office.parse_month(asked) {
        Some(range) => (asked.to_owned(), range, None),
        None => {
            let range = state.office.parse_month(&this).unwrap_or((0, 0));
            (
                this,
                range,
                Some("“Month” must be a month as YYYY-MM; showing this month.".into()),
            )
        }
    }
}

fn views(lines: &[BillingLine], month: &str, filter: &str) -> Vec<LineView> {
    lines
        .iter()
        .map(|l| {
            let cur = l.currency.as_deref();
            LineView {
                key: l.key.clone(),
                calls: l.totals.calls,
                answered: l.totals.answered,
                minutes: l.totals.minutes(),
                cost: money(l.totals.cost_minor, cur),
                savings: money(l.totals.savings_minor, cur),
                unrated: l.unrated,
                records: format!("/records?month={month}&{filter}={}", url_encode(&l.key)),
            }
        })
        .collect()
}

/// `GET /billing`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(q): Query<BillingQuery>,
) -> Result<Response, PageError> {
    render(&state, session, &q, None).await
}

async fn render(
    state: &WebState,
    session: Session,
    q: &BillingQuery,
    message: Option<String>,
) -> Result<Response, PageError> {
    let (month, (from, to), error) = month_of(state, q);
    let (exts, lines) = state
        .with_read(move |conn| {
            Ok((
                records::billing_by_extension(conn, from, to)?,
                records::billing_by_line(conn, from, to)?,
            ))
        })
        .await?;
    Ok(BillingPage {
        session: Some(session),
        prev: step(&month, -1),
        next: step(&month, 1),
        extensions: views(&exts, &month, "ext"),
        lines: views(&lines, &month, "line"),
        time_zone: state.office.name().to_owned(),
        month,
        error,
        message,
    }
    .into_response())
}

/// `POST /billing/rerate`: rates every call of the month again with the current rates, then
/// shows the month with how many records changed.
pub async fn rerate(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<RerateForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let q = BillingQuery {
        month: form.month,
        by: String::new(),
    };
    let (month, (from, to), error) = month_of(&state, &q);
    if error.is_some() {
        return render(&state, session, &q, None).await;
    }
    let changed = state
        .with_db(move |db| Ok(crate::cdr::rating::rerate_on(&mut db.conn, from, to)?))
        .await?;
    tracing::info!(user = %session.username, %month, changed, "dashboard: month re-rated");
    let message = match changed {
        0 => format!("Re-rated {month}: every record already had the current rates."),
        1 => format!("Re-rated {month}: 1 record changed."),
        n => format!("Re-rated {month}: {n} records changed."),
    };
    render(&state, session, &q, Some(message)).await
}

/// `GET /billing.csv?month=YYYY-MM&by=extension|line`.
pub async fn csv(
    State(state): State<WebState>,
    Query(q): Query<BillingQuery>,
) -> Result<Response, PageError> {
    let (month, (from, to), error) = month_of(&state, &q);
    if let Some(e) = error {
        return Ok((StatusCode::BAD_REQUEST, e).into_response());
    }
    let by_line = match q.by.trim() {
        "" | "extension" => false,
        "line" => true,
        _ => {
            return Ok(
                (StatusCode::BAD_REQUEST, "“by” must be extension or line\n").into_response(),
            )
        }
    };
    let body = state
        .with_read(move |conn| {
            let lines = if by_line {
                records::billing_by_line(conn, from, to)?
            } else {
                records::billing_by_extension(conn, from, to)?
            };
            let mut out = Vec::new();
            write_billing_csv(if by_line { "line" } else { "extension" }, &lines, &mut out)?;
            Ok(out)
        })
        .await?;
    let name = format!(
        "attachment; filename=\"billing-{month}-{}.csv\"",
        if by_line { "lines" } else { "extensions" }
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_step_over_years() {
        assert_eq!(step("2026-01", -1), "2025-12");
        assert_eq!(step("2026-12", 1), "2027-01");
        assert_eq!(step("2026-06", 1), "2026-07");
    }
}
