//! The numbering and ENUM page `/numbering` (issue 17): the office's numbering plan (country and
//! area code, prefixes, extension length, emergency and short numbers, mobile and premium-rate
//! prefixes) and where ENUM looks numbers up (trees in order, nameservers, the time budget and
//! chain limit), with the ENUM cache and its flush. Keys the configuration file sets are shown
//! read-only ("from the configuration file"); the others are kept in the store
//! ([`crate::store::numbering`]). A change is applied at once by the SIP side: the next call is
//! routed with it, calls in progress are not touched.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde_json::Value;
use std::collections::BTreeMap;

use super::routing::{cache_rows, CacheRow};
use super::{csrf_ok, csrf_refused, PageError, WebState};
use crate::store::numbering::{self as store_numbering, NumberingChangeError, Sections};
use crate::store::trunks::FieldError;
use crate::web::auth::Session;

/// How a key is written in the form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    /// Items separated by commas, spaces or new lines.
    List,
    /// One item per line, in order.
    Lines,
    /// `tree = address, address` per line.
    Map,
}

/// One key of the page: (section, key, label, kind, default shown, help).
struct Key {
    section: &'static str,
    key: &'static str,
    label: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
}

const KEYS: &[Key] = &[
    Key { section: "numbering", key: "country_code", label: "Country code", kind: Kind::Text, default: "49",
        help: "The country calling code without + (34 for Spain, 49 for Germany, 1 for North America). Numbers dialled nationally are written +<country code>… for ENUM and the trunks." },
    Key { section: "numbering", key: "area_code", label: "Area code", kind: Kind::Text, default: "",
        help: "The local area code without the national prefix (30 for Berlin), so that local numbers can be dialled without it. Empty: local numbers need the area code." },
    Key { section: "numbering", key: "national_prefix", label: "National prefix", kind: Kind::Text, default: "0",
        help: "What phones dial before a national number (the trunk prefix, 0 in most of Europe; empty where there is none)." },
    Key { section: "numbering", key: "international_prefix", label: "International prefix", kind: Kind::Text, default: "00",
        help: "What phones dial before a country code (00; 011 in North America). + always works." },
    Key { section: "numbering", key: "extension_length", label: "Extension length", kind: Kind::Number, default: "the extensions' length when all have one",
        help: "Digits of an extension number (1 to 15). Shorter numbers are extensions; longer ones go to the numbering plan." },
    Key { section: "numbering", key: "emergency", label: "Emergency numbers", kind: Kind::List, default: "the country's (112, 110 for 49)",
        help: "Always allowed, whatever the caller's permissions, and always to a PSTN line." },
    Key { section: "numbering", key: "short_numbers", label: "Short numbers", kind: Kind::List, default: "none",
        help: "Service numbers sent as dialled (x for any digit, e.g. 118xx)." },
    Key { section: "numbering", key: "mobile_prefixes", label: "Mobile prefixes", kind: Kind::List, default: "the country's",
        help: "Prefixes of the national number that are mobile phones (15, 16, 17 in Germany): the \"mobile\" permission." },
    Key { section: "numbering", key: "premium_prefixes", label: "Premium-rate prefixes", kind: Kind::List, default: "the country's",
        help: "Prefixes of the national number that cost extra (900): barred unless an extension has the \"premium\" permission." },
    Key { section: "numbering", key: "default_permissions", label: "Default permissions", kind: Kind::List, default: "internal, national, mobile",
        help: "Call permissions of extensions that have none of their own (internal, local, national, mobile, international, premium)." },
    Key { section: "enum", key: "suffixes", label: "ENUM trees", kind: Kind::Lines, default: "e164.arpa",
        help: "The ENUM trees to ask, one per line, in order of preference (a private tree such as e164.office.example first, then e164.arpa). Numbers found there are called over SIP instead of a paid line." },
    Key { section: "enum", key: "nameservers", label: "Nameservers", kind: Kind::List, default: "the system's (/etc/resolv.conf)",
        help: "DNS servers to ask, address or address:port (a bare address means port 53)." },
    Key { section: "enum", key: "tree_nameservers", label: "Nameservers per tree", kind: Kind::Map, default: "none",
        help: "A tree served by its own DNS server, one per line: e164.office.example = 192.0.2.53, 192.0.2.54:5353." },
    Key { section: "enum", key: "budget_ms", label: "Look-up budget (ms)", kind: Kind::Number, default: "500",
        help: "How long ENUM and DUNDi together may take per call before the call goes on to the PSTN lines." },
    Key { section: "enum", key: "max_chain", label: "Maximum chain", kind: Kind::Number, default: "5",
        help: "Non-terminal NAPTR records followed per look-up (0 to 20): stops loops between trees." },
    Key { section: "enum", key: "cache_entries", label: "Cache size", kind: Kind::Number, default: "10000",
        help: "DNS answers kept in the ENUM cache." },
];

/// The page's form: one text per key, named `section.key`.
pub type NumberingForm = BTreeMap<String, String>;

/// One key as shown.
pub struct FieldView {
    pub name: String,
    pub label: &'static str,
    pub help: &'static str,
    pub default: &'static str,
    pub value: String,
    pub from_file: bool,
    pub multiline: bool,
    pub section: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "numbering.html")]
struct NumberingPage {
    session: Option<Session>,
    csrf: String,
    admin: bool,
    fields: Vec<FieldView>,
    error: Option<String>,
    saved: bool,
    cache: Option<Vec<CacheRow>>,
}

/// A stored value as the form writes it.
fn show(kind: Kind, v: &Value) -> String {
    match (kind, v) {
        (_, Value::String(s)) => s.clone(),
        (_, Value::Number(n)) => n.to_string(),
        (Kind::Lines, Value::Array(a)) => a
            .iter()
            .map(|x| show(Kind::Text, x))
            .collect::<Vec<_>>()
            .join("\n"),
        (_, Value::Array(a)) => a
            .iter()
            .map(|x| show(Kind::Text, x))
            .collect::<Vec<_>>()
            .join(", "),
        (_, Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k} = {}", show(Kind::List, v)))
            .collect::<Vec<_>>()
            .join("\n"),
        (_, other) => other.to_string(),
    }
}

fn items(text: &str) -> Vec<Value> {
    text.split([',', ' ', '\n', '\r', ';', '\t'])
        .filter(|s| !s.is_empty())
        .map(|s| Value::String(s.to_owned()))
        .collect()
}

/// A form text as the stored value (`None`: empty, the default).
fn parse(k: &Key, text: &str) -> Result<Option<Value>, FieldError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = |message: String| FieldError {
        field: k.key.to_owned(),
        message,
    };
    Ok(Some(match k.kind {
        Kind::Text => Value::String(text.to_owned()),
        Kind::Number => Value::from(
            text.parse::<u64>()
                .map_err(|_| bad(format!("`{text}` is not a whole number")))?,
        ),
        Kind::List | Kind::Lines => Value::Array(items(text)),
        Kind::Map => {
            let mut m = serde_json::Map::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let Some((tree, servers)) = line.split_once('=') else {
                    return Err(bad(format!("`{line}`: write tree = address, address")));
                };
                m.insert(tree.trim().to_owned(), Value::Array(items(servers)));
            }
            Value::Object(m)
        }
    }))
}

/// The sections the form's texts make (keys from the file left out: they cannot change).
pub(crate) fn form_sections(form: &NumberingForm, file: &Sections) -> Result<Sections, FieldError> {
    let mut out = Sections::new();
    for k in KEYS {
        let from_file = file.get(k.section).is_some_and(|s| s.contains_key(k.key));
        if from_file {
            continue;
        }
        let name = format!("{}.{}", k.section, k.key);
        if let Some(v) = parse(k, form.get(&name).map_or("", String::as_str))? {
            out.entry(k.section.to_owned())
                .or_default()
                .insert(k.key.to_owned(), v);
        }
    }
    Ok(out)
}

/// The label of a key, for error messages.
pub(crate) fn label(field: &str) -> &'static str {
    KEYS.iter()
        .find(|k| k.key == field)
        .map_or("Settings", |k| k.label)
}

async fn render(
    state: &WebState,
    session: Session,
    form: Option<NumberingForm>,
    error: Option<String>,
    status: StatusCode,
    saved: bool,
) -> Result<Response, PageError> {
    let rows = state
        .with_db(|db| Ok(store_numbering::list(&db.conn)))
        .await?
        .map_err(|e| {
            tracing::error!("numbering page: {e}");
            PageError::Task
        })?;
    let fields = KEYS
        .iter()
        .map(|k| {
            let name = format!("{}.{}", k.section, k.key);
            let row = rows
                .iter()
                .find(|r| r.section == k.section && r.key == k.key);
            let from_file = row.is_some_and(|r| r.from_file());
            let stored = row.map(|r| show(k.kind, &r.value)).unwrap_or_default();
            let value = match &form {
                Some(f) if !from_file => f.get(&name).cloned().unwrap_or_default(),
                _ => stored,
            };
            FieldView {
                name,
                label: k.label,
                help: k.help,
                default: k.default,
                value,
                from_file,
                multiline: matches!(k.kind, Kind::Lines | Kind::Map),
                section: k.section,
            }
        })
        .collect();
    let page = NumberingPage {
        csrf: session.csrf.clone(),
        admin: session.admin,
        session: Some(session),
        fields,
        error,
        saved,
        cache: cache_rows(state),
    };
    Ok((status, page).into_response())
}

/// `GET /numbering`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Result<Response, PageError> {
    let saved = q.as_deref() == Some("saved");
    render(&state, session, None, None, StatusCode::OK, saved).await
}

/// `POST /numbering/save`: replaces the dashboard's numbering and ENUM settings.
pub async fn save(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<NumberingForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, form.get("csrf").map_or("", String::as_str)) {
        return Ok(csrf_refused());
    }
    let f = form.clone();
    let result = state
        .with_db(move |db| {
            let rows = match store_numbering::list(&db.conn) {
                Ok(r) => r,
                Err(e) => return Ok(Err(NumberingChangeError::Store(e))),
            };
            let file = store_numbering::sections(
                &rows
                    .into_iter()
                    .filter(|r| r.from_file())
                    .collect::<Vec<_>>(),
            );
            Ok(match form_sections(&f, &file) {
                Ok(web) => store_numbering::save_web(&mut db.conn, &web),
                Err(e) => Err(e.into()),
            })
        })
        .await?;
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, "numbering and ENUM settings saved");
            state.numbering_changed.notify_one();
            Ok(Redirect::to("/numbering?saved").into_response())
        }
        Err(NumberingChangeError::Store(e)) => {
            tracing::error!("numbering change: {e}");
            Err(PageError::Task)
        }
        Err(e) => {
            let msg = match &e {
                NumberingChangeError::Field(f) => format!("{}: {}.", label(&f.field), f.message),
                NumberingChangeError::FromFile(k) => {
                    format!(
                        "{}: is set in the configuration file; change it there.",
                        label(k)
                    )
                }
                other => format!("{other}."),
            };
            render(
                &state,
                session,
                Some(form),
                Some(msg),
                StatusCode::UNPROCESSABLE_ENTITY,
                false,
            )
            .await
        }
    }
}

/// `POST /numbering/flush-cache`: forgets every cached ENUM and server-location answer.
pub async fn flush_cache(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<super::CsrfForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    if let Some(r) = &state.enum_ {
        r.flush_cache();
        tracing::info!(user = %session.username, "ENUM cache flushed from the dashboard");
    }
    Redirect::to("/numbering").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_texts_become_settings() {
        let mut form = NumberingForm::new();
        form.insert("numbering.country_code".into(), " 34 ".into());
        form.insert("numbering.emergency".into(), "112, 091".into());
        form.insert("numbering.area_code".into(), "".into());
        form.insert(
            "enum.suffixes".into(),
            "e164.office.test\ne164.arpa\n".into(),
        );
        form.insert(
            "enum.tree_nameservers".into(),
            "e164.office.test = 127.0.0.1:5353, 127.0.0.2".into(),
        );
        form.insert("enum.budget_ms".into(), "800".into());
        let mut file = Sections::new();
        file.entry("enum".into())
            .or_default()
            .insert("max_chain".into(), Value::from(3));
        form.insert("enum.max_chain".into(), "9".into());
        let s = form_sections(&form, &file).unwrap();
        let (n, e) = store_numbering::check(&s).unwrap();
        assert_eq!(n.country_code, "34");
        assert_eq!(n.area_code, None);
        assert_eq!(
            n.emergency.as_deref(),
            Some(&["112".to_owned(), "091".to_owned()][..])
        );
        assert_eq!(e.suffixes, ["e164.office.test", "e164.arpa"]);
        assert_eq!(e.budget_ms, 800);
        assert_eq!(e.tree_nameservers[0].1.len(), 2);
        assert!(
            !s["enum"].contains_key("max_chain"),
            "the file's key is left out"
        );
        form.insert("enum.budget_ms".into(), "soon".into());
        assert_eq!(form_sections(&form, &file).unwrap_err().field, "budget_ms");
        assert_eq!(
            show(Kind::Lines, &serde_json::json!(["a.test", "b.test"])),
            "a.test\nb.test"
        );
    }
}
