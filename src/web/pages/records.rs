//! The records pages: `/records` (filters as GET parameters, sorting, pagination, an empty
//! state), `/records.csv` (the CSV export of the whole filtered set, streamed) and
//! `/records/{id}` (one record: the routing decision's explanation and the media quality).
//!
//! Filter values arrive as text and are parsed here into a [`Filter`]; a value that does not
//! parse is reported on the page and not applied. The query itself binds every value as an SQL
//! parameter ([`crate::cdr::query`]).

use std::io::Write;

use askama::Template;
use askama_web::WebTemplate;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{url_encode, PageError, WebState};
use crate::cdr::query::export_csv;
use crate::cdr::rating::format_minor;
use crate::cdr::{
    CallRecord, CdrError, Direction, Disposition, Filter, Page, RouteKind, Sort, SortKey,
};
use crate::store::records;
use crate::web::auth::{AuthError, Session};
use crate::web::office_time::OfficeTime;
use crate::web::saved_filters;

/// Records per page.
const PAGE_SIZE: u32 = 50;

/// The records filter as typed (GET parameters); empty fields do not filter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RecordsQuery {
    /// First day, `YYYY-MM-DD`.
    pub from: String,
    /// Last day (included), `YYYY-MM-DD`.
    pub to: String,
    /// A whole month, `YYYY-MM` (used when `from` and `to` are empty).
    pub month: String,
    pub ext: String,
    /// Part of a number.
    pub number: String,
    pub direction: String,
    /// Route kind.
    pub route: String,
    /// Route target (line, trunk, URI).
    pub line: String,
    pub disposition: String,
    /// Minimum talk time, seconds.
    pub min: String,
    pub sort: String,
    /// `asc` or `desc` (the default).
    pub order: String,
    pub page: String,
}

const SORTS: [(&str, SortKey, &str); 6] = [
    ("start", SortKey::Start, "Start"),
    ("duration", SortKey::Duration, "Duration"),
    ("billable", SortKey::Billable, "Talk time"),
    ("cost", SortKey::Cost, "Cost"),
    ("caller", SortKey::Caller, "Caller"),
    ("callee", SortKey::Callee, "Callee"),
];

fn nonempty(s: &str) -> Option<&str> {
    let t = s.trim();
    (!t.is_empty()).then_some(t)
}

impl RecordsQuery {
    /// The filter, sort and page number, and the errors of values that were not understood.
    pub fn parse(&self, office: &OfficeTime) -> (Filter, Sort, u64, Vec<String>) {
        let mut errors = Vec::new();
        let mut f = Filter::default();
        if let Some(v) = nonempty(&self.from) {
            match office.parse_day(v) {
                Some(ms) => f.from_ms = Some(ms),
                None => errors.push("“From” is not a date (YYYY-MM-DD).".to_owned()),
            }
        }
        if let Some(v) = nonempty(&self.to) {
            let next = v
                .parse::<jiff::civil::Date>()
                .ok()
                .and_then(|d| d.tomorrow().ok())
                .and_then(|d| office.start_of(d));
            match next {
                Some(ms) => f.to_ms = Some(ms),
                None => errors.push("“To” is not a date (YYYY-MM-DD).".to_owned()),
            }
        }
        if let Some(v) = nonempty(&self.month) {
            match office.parse_month(v) {
                Some((a, b)) => {
                    f.from_ms = f.from_ms.or(Some(a));
                    f.to_ms = f.to_ms.or(Some(b));
                }
                None => errors.push("“Month” is not a month (YYYY-MM).".to_owned()),
            }
        }
        f.extension = nonempty(&self.ext).map(str::to_owned);
        f.number = nonempty(&self.number).map(str::to_owned);
        f.route_target = nonempty(&self.line).map(str::to_owned);
        if let Some(v) = nonempty(&self.direction) {
            match v.parse::<Direction>() {
                Ok(d) => f.direction = Some(d),
                Err(_) => errors.push("Unknown direction.".to_owned()),
            }
        }
        if let Some(v) = nonempty(&self.route) {
            match v.parse::<RouteKind>() {
                Ok(d) => f.route_kind = Some(d),
                Err(_) => errors.push("Unknown route.".to_owned()),
            }
        }
        if let Some(v) = nonempty(&self.disposition) {
            match v.parse::<Disposition>() {
                Ok(d) => f.disposition = Some(d),
                Err(_) => errors.push("Unknown result.".to_owned()),
            }
        }
        if let Some(v) = nonempty(&self.min) {
            match v.parse::<i64>() {
                Ok(s) if s >= 0 => f.min_billable_s = Some(s),
                _ => errors.push("“Minimum talk time” must be a number of seconds.".to_owned()),
            }
        }
        let key = SORTS
            .iter()
            .find(|(name, _, _)| *name == self.sort.trim())
            .map_or(SortKey::Start, |(_, k, _)| *k);
        let sort = Sort {
            key,
            descending: self.order.trim() != "asc",
        };
        let page = self
            .page
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|p| *p >= 1)
            .unwrap_or(1);
        (f, sort, page, errors)
    }

    /// The query string of these filters (and sort) on page `page` (none: no page parameter).
    pub fn query_string(&self, page: Option<u64>) -> String {
        let pairs = [
            ("from", &self.from),
            ("to", &self.to),
            ("month", &self.month),
            ("ext", &self.ext),
            ("number", &self.number),
            ("direction", &self.direction),
            ("route", &self.route),
            ("line", &self.line),
            ("disposition", &self.disposition),
            ("min", &self.min),
            ("sort", &self.sort),
            ("order", &self.order),
        ];
        let mut parts: Vec<String> = pairs
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| format!("{k}={}", url_encode(v.trim())))
            .collect();
        if let Some(p) = page {
            parts.push(format!("page={p}"));
        }
        parts.join("&")
    }
}

/// An `<option>` of a select.
pub struct Opt {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

fn options(all: &[&'static str], chosen: &str) -> Vec<Opt> {
    all.iter()
        .map(|v| Opt {
            value: v,
            label: v,
            selected: *v == chosen.trim(),
        })
        .collect()
}

/// A record as a table row shows it.
pub struct RowView {
    pub id: i64,
    pub start: String,
    pub caller: String,
    pub callee: String,
    pub extension: String,
    pub direction: &'static str,
    pub route: String,
    pub disposition: &'static str,
    pub duration: String,
    pub billable: String,
    pub cost: String,
}

fn hms(s: i64) -> String {
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn money(amount: Option<i64>, currency: Option<&str>) -> String {
    match (amount, currency) {
        (Some(a), Some(c)) => format!("{} {c}", format_minor(a, c)),
        (Some(a), None) => format_minor(a, ""),
        (None, _) => String::new(),
    }
}

fn route_text(r: &CallRecord) -> String {
    let route = match &r.route_target {
        Some(t) => format!("{} {t}", r.route_kind),
        None => r.route_kind.to_string(),
    };
    match &r.transferred_by {
        Some(by) => format!("{route}, transferred by {by}"),
        None => route,
    }
}

impl RowView {
    fn of(r: &CallRecord, office: &OfficeTime) -> RowView {
        RowView {
            id: r.id.unwrap_or(0),
            start: office.show(r.start_ms),
            caller: r.caller.clone(),
            callee: r.callee.clone(),
            extension: r.extension.clone().unwrap_or_default(),
            direction: r.direction.as_str(),
            route: route_text(r),
            disposition: r.disposition.as_str(),
            duration: hms(r.duration_s),
            billable: hms(r.billable_s),
            cost: money(r.cost_minor, r.currency.as_deref()),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "records.html")]
struct RecordsPage {
    session: Option<Session>,
    q: RecordsQuery,
    time_zone: String,
    errors: Vec<String>,
    rows: Vec<RowView>,
    total: u64,
    page: u64,
    pages: u64,
    prev: Option<String>,
    next: Option<String>,
    csv: String,
    directions: Vec<Opt>,
    routes: Vec<Opt>,
    dispositions: Vec<Opt>,
    sorts: Vec<Opt>,
    ascending: bool,
    saved: Vec<SavedView>,
    /// The query string a saved filter keeps (these filters, no page).
    this_query: String,
}

/// A saved filter as a link.
pub struct SavedView {
    pub id: i64,
    pub name: String,
    pub href: String,
}

/// `GET /records`.
pub async fn list(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(q): Query<RecordsQuery>,
) -> Result<Response, PageError> {
    let (filter, sort, page, errors) = q.parse(&state.office);
    let user = session.user_id;
    let (total, records, saved) = state
        .with_read(move |conn| {
            let total = records::count(conn, &filter)?;
            let rows = records::list(conn, &filter, sort, Page::number(page, PAGE_SIZE))?;
            let saved = saved_filters::list(conn, user)?;
            Ok((total, rows, saved))
        })
        .await?;
    let pages = total.div_ceil(u64::from(PAGE_SIZE)).max(1);
    let link = |p: u64| format!("/records?{}", q.query_string(Some(p)));
    let dirs: Vec<&'static str> = Direction::ALL.iter().map(|d| d.as_str()).collect();
    let routes: Vec<&'static str> = RouteKind::ALL.iter().map(|d| d.as_str()).collect();
    let disps: Vec<&'static str> = Disposition::ALL.iter().map(|d| d.as_str()).collect();
    let page_view = RecordsPage {
        session: Some(session),
        errors,
        rows: records
            .iter()
            .map(|r| RowView::of(r, &state.office))
            .collect(),
        time_zone: state.office.name().to_owned(),
        total,
        page,
        pages,
        prev: (page > 1).then(|| link(page.min(pages + 1) - 1)),
        next: (page < pages).then(|| link(page + 1)),
        csv: format!("/records.csv?{}", q.query_string(None)),
        directions: options(&dirs, &q.direction),
        routes: options(&routes, &q.route),
        dispositions: options(&disps, &q.disposition),
        sorts: SORTS
            .iter()
            .map(|(v, k, l)| Opt {
                value: v,
                label: l,
                selected: *k == sort.key,
            })
            .collect(),
        ascending: !sort.descending,
        saved: saved
            .into_iter()
            .map(|f| SavedView {
                id: f.id,
                href: format!("/records?{}", f.query),
                name: f.name,
            })
            .collect(),
        this_query: q.query_string(None),
        q,
    };
    Ok(page_view.into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SavedFilterForm {
    csrf: String,
    name: String,
    query: String,
    id: String,
}

/// `POST /records/filters/save`: keeps the current filters under a name.
pub async fn save_filter(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<SavedFilterForm>,
) -> Result<Response, PageError> {
    if !super::csrf_ok(&session, &form.csrf) {
        return Ok(super::csrf_refused());
    }
    // Only a query string the records page itself would produce is kept.
    let parsed: RecordsQuery = serde_urlencoded::from_str(&form.query).unwrap_or_default();
    let query = parsed.query_string(None);
    let user = session.user_id;
    let name = form.name.clone();
    let q2 = query.clone();
    let saved = state
        .with_db(
            move |db| match saved_filters::save(&db.conn, user, &name, &q2) {
                Ok(()) => Ok(Ok(())),
                Err(AuthError::Invalid(m)) => Ok(Err(m)),
                Err(e) => Err(e.into()),
            },
        )
        .await?;
    Ok(match saved {
        Ok(()) => Redirect::to(&format!("/records?{query}")).into_response(),
        Err(msg) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{msg}\n")).into_response(),
    })
}

/// `POST /records/filters/delete`.
pub async fn delete_filter(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<SavedFilterForm>,
) -> Result<Response, PageError> {
    if !super::csrf_ok(&session, &form.csrf) {
        return Ok(super::csrf_refused());
    }
    let id = form.id.trim().parse::<i64>().unwrap_or(0);
    let user = session.user_id;
    state
        .with_db(move |db| Ok(saved_filters::delete(&db.conn, user, id)?))
        .await?;
    Ok(Redirect::to("/records").into_response())
}

/// Sends what is written to it as body chunks; fails once the client has gone away, which
/// stops the export.
struct ChannelWriter(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /records.csv`: every record of the filter, streamed from a thread of its own (with
/// its own read-only connection, so a long export does not hold up the pages) through a
/// small channel.
pub async fn csv(
    State(state): State<WebState>,
    Query(q): Query<RecordsQuery>,
) -> Result<Response, PageError> {
    let (filter, sort, _, errors) = q.parse(&state.office);
    if !errors.is_empty() {
        return Ok((StatusCode::BAD_REQUEST, errors.join("\n")).into_response());
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let path = state.db_path.clone();
    let spawned = std::thread::Builder::new()
        .name("csv-export".into())
        .spawn(move || {
            let result = crate::store::connection::open_reader(&path)
                .map_err(CdrError::from)
                .and_then(|conn| export_csv(&conn, &filter, sort, ChannelWriter(tx.clone())));
            match result {
                Ok(n) => tracing::info!(records = n, "dashboard: CSV export done"),
                Err(e) => {
                    tracing::warn!("dashboard: CSV export stopped: {e}");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("dashboard: cannot start the CSV export thread: {e}");
        return Err(PageError::Task);
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"call-records.csv\"",
            ),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// A record's fields as the detail page shows them.
pub struct DetailView {
    pub id: i64,
    pub fields: Vec<(&'static str, String)>,
    pub media: Vec<(&'static str, String)>,
    pub explanation: String,
    /// The records of every part of a transferred call (this one included), in order.
    pub parts: Vec<i64>,
}

#[derive(Template, WebTemplate)]
#[template(path = "record.html")]
struct RecordPage {
    session: Option<Session>,
    r: DetailView,
}

fn detail_view(r: &CallRecord, office: &OfficeTime) -> DetailView {
    let show_time = |ms: i64| office.show(ms);
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".to_owned());
    let cur = r.currency.as_deref();
    let loss = if r.packets + r.packets_lost > 0 {
        format!(
            "{:.2} %",
            r.packets_lost as f64 * 100.0 / (r.packets + r.packets_lost) as f64
        )
    } else {
        "—".to_owned()
    };
    DetailView {
        id: r.id.unwrap_or(0),
        fields: vec![
            (
                "Start",
                format!("{} ({})", show_time(r.start_ms), office.name()),
            ),
            ("Answered", r.answer_ms.map_or("—".to_owned(), show_time)),
            ("End", show_time(r.end_ms)),
            ("Duration", hms(r.duration_s)),
            ("Talk time", hms(r.billable_s)),
            ("Caller", r.caller.clone()),
            ("Caller (E.164)", opt(&r.caller_e164)),
            ("Callee", r.callee.clone()),
            ("Callee (E.164)", opt(&r.callee_e164)),
            ("Extension", opt(&r.extension)),
            ("Direction", r.direction.to_string()),
            ("Category", opt(&r.category)),
            ("Route", r.route_kind.to_string()),
            ("Route target", opt(&r.route_target)),
            ("Found through", opt(&r.route_source)),
            ("Result", r.disposition.to_string()),
            ("SIP status", r.sip_status.to_string()),
            ("Q.850 cause", r.q850_cause.to_string()),
            ("Cost", money(r.cost_minor, cur)),
            (
                "Rate",
                match (&r.rate_table, &r.rate_prefix) {
                    (Some(t), Some(p)) => format!("{t}, prefix {p}"),
                    (Some(t), None) => t.clone(),
                    _ => "—".to_owned(),
                },
            ),
            ("PSTN would have cost", money(r.reference_cost_minor, cur)),
            ("Saved", money(r.savings_minor, cur)),
            (
                "Call reference",
                r.call_ref.map_or("—".to_owned(), |c| c.to_string()),
            ),
        ],
        media: vec![
            ("Codec", opt(&r.codec)),
            ("Media encryption", media_encryption(r.media_srtp)),
            ("Packets", r.packets.to_string()),
            ("Packets lost", r.packets_lost.to_string()),
            ("Loss", loss),
            ("Jitter", format!("{:.1} ms", r.jitter_ms)),
        ],
        explanation: r.explanation.clone(),
        parts: Vec::new(),
    }
}

/// Per leg, whether its media was SRTP: `caller SRTP, callee RTP`.
fn media_encryption(srtp: [bool; 2]) -> String {
    let leg = |on: bool| if on { "SRTP" } else { "RTP (not encrypted)" };
    format!("caller {}, callee {}", leg(srtp[0]), leg(srtp[1]))
}

/// `GET /records/{id}`.
pub async fn detail(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let Ok(id) = id.parse::<i64>() else {
        return Ok((StatusCode::NOT_FOUND, "no such record\n").into_response());
    };
    let found = state
        .with_read(move |conn| {
            let r = records::get(conn, id)?;
            let parts = match r.as_ref().and_then(|r| r.linked_id.as_deref()) {
                Some(link) => records::linked(conn, link)?,
                None => Vec::new(),
            };
            Ok((r, records::signalling(conn, id)?, parts))
        })
        .await?;
    Ok(match found {
        (Some(r), signalling, parts) => {
            let mut view = detail_view(&r, &state.office);
            view.fields
                .push(("Signalling", describe_signalling(signalling.as_deref())));
            if let Some(by) = &r.transferred_by {
                view.fields.push(("Transferred by", by.clone()));
            }
            view.parts = parts;
            RecordPage {
                session: Some(session),
                r: view,
            }
            .into_response()
        }
        (None, _, _) => (StatusCode::NOT_FOUND, "no such record\n").into_response(),
    })
}

/// How each leg's signalling travelled (`tls/udp` → `caller leg TLS (encrypted), callee leg
/// UDP (in clear)`).
fn describe_signalling(s: Option<&str>) -> String {
    let Some((a, b)) = s.and_then(|s| s.split_once('/')) else {
        return "—".to_owned();
    };
    let leg = |t: &str| match t {
        "tls" => "TLS (encrypted)".to_owned(),
        "-" => "none".to_owned(),
        other => format!("{} (in clear)", other.to_ascii_uppercase()),
    };
    format!("caller leg {}, callee leg {}", leg(a), leg(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signalling_is_described_per_leg() {
        assert_eq!(
            describe_signalling(Some("tls/udp")),
            "caller leg TLS (encrypted), callee leg UDP (in clear)"
        );
        assert_eq!(
            describe_signalling(Some("tcp/-")),
            "caller leg TCP (in clear), callee leg none"
        );
        assert_eq!(describe_signalling(None), "—");
    }

    #[test]
    fn query_parses_and_round_trips() {
        let q = RecordsQuery {
            from: "2026-03-01".into(),
            to: "2026-03-01".into(),
            number: "+49 30".into(),
            direction: "outgoing".into(),
            min: "10".into(),
            sort: "cost".into(),
            order: "asc".into(),
            page: "3".into(),
            ..RecordsQuery::default()
        };
        let (f, s, p, errors) = q.parse(&OfficeTime::utc());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(f.from_ms, Some(1_772_323_200_000));
        assert_eq!(f.to_ms, Some(1_772_323_200_000 + 86_400_000));
        // In the office's zone, the day starts at its own midnight.
        let (f, _, _, _) = q.parse(&OfficeTime::new(Some("Europe/Berlin")));
        assert_eq!(f.from_ms, Some(1_772_323_200_000 - 3_600_000));
        assert_eq!(f.direction, Some(Direction::Outgoing));
        assert_eq!(f.min_billable_s, Some(10));
        assert_eq!(s.key, SortKey::Cost);
        assert!(!s.descending);
        assert_eq!(p, 3);
        assert_eq!(
            q.query_string(Some(4)),
            "from=2026-03-01&to=2026-03-01&number=%2B49%2030&direction=outgoing&min=10&sort=cost&order=asc&page=4"
        );
    }

    #[test]
    fn bad_values_are_reported_not_applied() {
        let q = RecordsQuery {
            from: "yesterday".into(),
            direction: "sideways".into(),
            min: "-1".into(),
            page: "0".into(),
            sort: "'; DROP TABLE".into(),
            ..RecordsQuery::default()
        };
        let (f, s, p, errors) = q.parse(&OfficeTime::utc());
        assert_eq!(errors.len(), 3);
        assert_eq!(f, Filter::default());
        assert_eq!(s, Sort::default());
        assert_eq!(p, 1);
    }
}
