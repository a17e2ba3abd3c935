//! The rates page `/rates`: the rate tables and the rates of one, a form to add or edit a rate,
//! a form to create a table, and CSV import (pasted into a textarea). Every form carries the
//! session's CSRF token; a form that does not validate comes back with its values and a clear
//! error, and nothing is stored. A table downloads as CSV in the importer's columns
//! (`/rates/export?table=NAME`) and can be deleted with its rates (`POST /rates/table/delete`;
//! records keep the costs they were rated with until the period is re-rated).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, url_encode, PageError, WebState};
use crate::cdr::rating::{self, ImportMode};
use crate::cdr::{CdrError, Price, Rate};
use crate::web::auth::Session;

/// Which table (and which of its rates, for the edit form) the page shows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RatesQuery {
    pub table: String,
    /// The prefix of the rate to load into the form.
    pub edit: String,
}

/// The rate form's values, as typed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RateForm {
    pub csrf: String,
    pub table: String,
    pub prefix: String,
    pub description: String,
    pub per_minute: String,
    pub connect_fee: String,
    pub first_s: String,
    pub next_s: String,
}

/// The new-table form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TableForm {
    pub csrf: String,
    pub name: String,
    pub currency: String,
    pub reference: String,
}

/// The import form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ImportForm {
    pub csrf: String,
    pub table: String,
    pub csv: String,
    /// `replace` or `merge` (the default).
    pub mode: String,
}

pub struct TableView {
    pub name: String,
    pub currency: String,
    pub reference: bool,
    pub lines: String,
    pub selected: bool,
    pub link: String,
}

pub struct RateView {
    pub prefix: String,
    pub description: String,
    pub per_minute: String,
    pub connect_fee: String,
    pub increments: String,
    pub edit: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "rates.html")]
struct RatesPage {
    session: Option<Session>,
    csrf: String,
    tables: Vec<TableView>,
    table: Option<String>,
    currency: String,
    rates: Vec<RateView>,
    form: RateForm,
    rate_error: Option<String>,
    table_form: TableForm,
    table_error: Option<String>,
    import_csv: String,
    import_error: Option<String>,
    /// The importer's column names, for the help text (the same the exporter writes).
    columns: String,
    /// Where the shown table downloads as CSV.
    export: String,
}

/// What a re-rendered page carries back to the user.
#[derive(Default)]
struct Feedback {
    form: Option<RateForm>,
    rate_error: Option<String>,
    table_form: TableForm,
    table_error: Option<String>,
    import_csv: String,
    import_error: Option<String>,
}

fn rates_link(table: &str) -> String {
    format!("/rates?table={}", url_encode(table))
}

async fn render(
    state: &WebState,
    session: Session,
    table: String,
    edit: String,
    fb: Feedback,
    status: StatusCode,
) -> Result<Response, PageError> {
    let (infos, rates, chosen) = state
        .with_read(move |conn| {
            let infos = rating::rate_tables(conn)?;
            let chosen = infos
                .iter()
                .find(|t| t.name == table)
                .or_else(|| infos.first())
                .map(|t| (t.name.clone(), t.currency.clone()));
            let rates = match &chosen {
                Some((name, _)) => rating::rates_of(conn, name)?,
                None => Vec::new(),
            };
            Ok((infos, rates, chosen))
        })
        .await?;
    let name = chosen.as_ref().map(|(n, _)| n.clone());
    let form = fb.form.unwrap_or_else(|| {
        let mut f = RateForm {
            table: name.clone().unwrap_or_default(),
            first_s: "60".into(),
            next_s: "60".into(),
            ..RateForm::default()
        };
        if let Some(r) = rates.iter().find(|r| r.prefix == edit.trim()) {
            f.prefix = r.prefix.clone();
            f.description = r.description.clone();
            f.per_minute = r.per_minute.to_string();
            f.connect_fee = r.connect_fee.to_string();
            f.first_s = r.first_s.to_string();
            f.next_s = r.next_s.to_string();
        }
        f
    });
    let page = RatesPage {
        columns: crate::cdr::rating::RATE_COLUMNS.join(", "),
        csrf: session.csrf.clone(),
        session: Some(session),
        tables: infos
            .iter()
            .map(|t| TableView {
                name: t.name.clone(),
                currency: t.currency.clone(),
                reference: t.reference,
                lines: t.lines.join(", "),
                selected: Some(&t.name) == name.as_ref(),
                link: rates_link(&t.name),
            })
            .collect(),
        currency: chosen.map(|(_, c)| c).unwrap_or_default(),
        rates: rates
            .iter()
            .map(|r| RateView {
                prefix: r.prefix.clone(),
                description: r.description.clone(),
                per_minute: r.per_minute.to_string(),
                connect_fee: r.connect_fee.to_string(),
                increments: format!("{}/{}", r.first_s, r.next_s),
                edit: format!(
                    "{}&edit={}",
                    rates_link(name.as_deref().unwrap_or_default()),
                    url_encode(&r.prefix)
                ),
            })
            .collect(),
        export: name
            .as_deref()
            .map(|n| format!("/rates/export?table={}", url_encode(n)))
            .unwrap_or_default(),
        table: name,
        form,
        rate_error: fb.rate_error,
        table_form: fb.table_form,
        table_error: fb.table_error,
        import_csv: fb.import_csv,
        import_error: fb.import_error,
    };
    Ok((status, page).into_response())
}

/// `GET /rates`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(q): Query<RatesQuery>,
) -> Result<Response, PageError> {
    render(
        &state,
        session,
        q.table,
        q.edit,
        Feedback::default(),
        StatusCode::OK,
    )
    .await
}

/// The rate of a form, or what is wrong with it.
fn parse_rate(f: &RateForm) -> Result<Rate, String> {
    let prefix = f.prefix.trim().trim_start_matches('+').to_owned();
    if prefix.is_empty() {
        return Err("Prefix: enter the digits the numbers start with (e.g. 4930).".into());
    }
    let per_minute =
        Price::parse(&f.per_minute, true).map_err(|e| format!("Price per minute: {e}"))?;
    let connect_fee = if f.connect_fee.trim().is_empty() {
        Price::default()
    } else {
        Price::parse(&f.connect_fee, true).map_err(|e| format!("Connect fee: {e}"))?
    };
    let secs = |label: &str, v: &str| -> Result<u32, String> {
        if v.trim().is_empty() {
            return Ok(60);
        }
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("{label}: enter whole seconds (1 to 3600)."))
    };
    let rate = Rate {
        prefix,
        description: f.description.trim().to_owned(),
        per_minute,
        connect_fee,
        first_s: secs("First increment", &f.first_s)?,
        next_s: secs("Next increments", &f.next_s)?,
    };
    rate.validate()?;
    Ok(rate)
}

/// `POST /rates/rate`: adds or replaces a rate.
pub async fn save_rate(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<RateForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let table = form.table.clone();
    let error = match parse_rate(&form) {
        Err(e) => Some(e),
        Ok(rate) => {
            let t = table.clone();
            let stored = state
                .with_db(move |db| match rating::put_rate(&db.conn, &t, &rate) {
                    Ok(()) => Ok(None),
                    Err(CdrError::Invalid(m)) => Ok(Some(m)),
                    Err(CdrError::UnknownTable(n)) => Ok(Some(format!("No rate table {n:?}."))),
                    Err(e) => Err(e.into()),
                })
                .await?;
            if stored.is_none() {
                tracing::info!(user = %session.username, table, prefix = %form.prefix, "rate saved");
                state.rates_changed.notify_one();
                return Ok(Redirect::to(&rates_link(&table)).into_response());
            }
            stored
        }
    };
    let fb = Feedback {
        form: Some(form),
        rate_error: error,
        ..Feedback::default()
    };
    render(
        &state,
        session,
        table,
        String::new(),
        fb,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

/// `POST /rates/table`: creates a rate table.
pub async fn create_table(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<TableForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let (name, currency) = (
        form.name.trim().to_owned(),
        form.currency.trim().to_ascii_uppercase(),
    );
    let reference = !form.reference.is_empty();
    let n = name.clone();
    let error = state
        .with_db(
            move |db| match rating::create_rate_table(&db.conn, &n, &currency, reference) {
                Ok(_) => Ok(None),
                Err(CdrError::Invalid(m)) => Ok(Some(m)),
                Err(CdrError::Store(crate::store::StoreError::Sqlite(e)))
                    if e.sqlite_error_code().is_some() =>
                {
                    Ok(Some(format!("Cannot create the table: {e}")))
                }
                Err(e) => Err(e.into()),
            },
        )
        .await?;
    match error {
        None => {
            tracing::info!(user = %session.username, table = name, "rate table created");
            state.rates_changed.notify_one();
            Ok(Redirect::to(&rates_link(&name)).into_response())
        }
        Some(e) => {
            let fb = Feedback {
                table_form: form,
                table_error: Some(e),
                ..Feedback::default()
            };
            render(
                &state,
                session,
                String::new(),
                String::new(),
                fb,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

/// `POST /rates/import`: imports pasted CSV into a table, all or nothing.
pub async fn import(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<ImportForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let mode = if form.mode == "replace" {
        ImportMode::Replace
    } else {
        ImportMode::Merge
    };
    let (table, text) = (form.table.clone(), form.csv.clone());
    let result = state
        .with_db(move |db| {
            match rating::import_rates_csv(&mut db.conn, &table, text.as_bytes(), mode) {
                Ok(n) => Ok(Ok(n)),
                Err(e @ (CdrError::Csv(_) | CdrError::Invalid(_) | CdrError::UnknownTable(_))) => {
                    Ok(Err(e.to_string()))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await?;
    match result {
        Ok(n) => {
            tracing::info!(user = %session.username, table = form.table, rates = n, "rates imported from the dashboard");
            state.rates_changed.notify_one();
            Ok(Redirect::to(&rates_link(&form.table)).into_response())
        }
        Err(e) => {
            let fb = Feedback {
                import_csv: form.csv,
                import_error: Some(e),
                ..Feedback::default()
            };
            render(
                &state,
                session,
                form.table,
                String::new(),
                fb,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

/// `GET /rates/export?table=NAME`: the table's rates as CSV, in the columns the importer reads.
pub async fn export(
    State(state): State<WebState>,
    Query(q): Query<RatesQuery>,
) -> Result<Response, PageError> {
    let table = q.table.clone();
    let body = state
        .with_read(move |conn| {
            let mut out = Vec::new();
            match rating::export_rates_csv(conn, &table, &mut out) {
                Ok(_) => Ok(Some(out)),
                Err(CdrError::UnknownTable(_)) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
    let Some(body) = body else {
        return Ok((StatusCode::NOT_FOUND, "No such rate table.\n").into_response());
    };
    let file: String = q
        .table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"rates-{file}.csv\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// The delete form: the table and the session's CSRF token.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteTableForm {
    pub csrf: String,
    pub table: String,
}

/// `POST /rates/table/delete`: deletes a table with its rates.
pub async fn delete_table(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<DeleteTableForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let table = form.table.clone();
    let deleted = state
        .with_db(
            move |db| match rating::delete_rate_table(&db.conn, &table) {
                Ok(()) => Ok(true),
                Err(CdrError::UnknownTable(_)) => Ok(false),
                Err(e) => Err(e.into()),
            },
        )
        .await?;
    if deleted {
        tracing::info!(user = %session.username, table = form.table, "rate table deleted from the dashboard");
        state.rates_changed.notify_one();
        Ok(Redirect::to("/rates").into_response())
    } else {
        Ok((StatusCode::NOT_FOUND, "No such rate table.\n").into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_forms() {
        let mut f = RateForm {
            prefix: "+4930".into(),
            per_minute: "0,019".into(),
            first_s: "30".into(),
            next_s: "6".into(),
            ..RateForm::default()
        };
        let r = parse_rate(&f).unwrap();
        assert_eq!(r.prefix, "4930");
        assert_eq!(r.per_minute.micros(), 19_000);
        assert_eq!(r.connect_fee.micros(), 0);
        assert_eq!((r.first_s, r.next_s), (30, 6));
        f.per_minute = "cheap".into();
        assert!(parse_rate(&f).unwrap_err().starts_with("Price per minute"));
        f.per_minute = "0.01".into();
        f.next_s = "0".into();
        assert!(parse_rate(&f).unwrap_err().contains("increment"));
        f.prefix = String::new();
        assert!(parse_rate(&f).unwrap_err().starts_with("Prefix"));
    }
}
