//! The messages page `/messages`: text messages by conversation (outside number or extension)
//! with unread counts, for every line or one (`?line=`, a tab per line with its unread count),
//! one conversation's messages (opening it marks them read), a send form that shows the part
//! count and encoding as you type (`/static/sms.js`), delete, CSV export, USSD codes (balance,
//! top-up) run on a modem line, and the USSD messages the network sent on its own, with a
//! reply form while the network waits for one.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, PageError, WebState};
use crate::sms::store::{Conversation, MessageRow, SmsStore, UssdEvent};
use crate::web::auth::Session;

/// A message as shown.
pub struct MessageView {
    pub id: i64,
    pub when: String,
    /// `in`, `out` or `local`.
    pub direction: &'static str,
    pub who: String,
    pub body: String,
    pub status: String,
    pub parts: i64,
    pub encoding: String,
}

/// A line's tab.
pub struct LineTab {
    pub name: String,
    pub link: String,
    pub count: i64,
    pub unread: i64,
    pub current: bool,
}

/// A USSD message from the network as shown.
pub struct UssdView {
    pub line: String,
    pub when: String,
    pub text: String,
    pub awaits_reply: bool,
}

/// A conversation as listed.
pub struct ConversationView {
    pub peer: String,
    pub link: String,
    pub when: String,
    pub count: i64,
    pub unread: i64,
    pub last: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "messages.html")]
struct MessagesPage {
    session: Option<Session>,
    conversations: Vec<ConversationView>,
    lines: Vec<LineTab>,
    line: String,
    network_ussd: Vec<UssdView>,
    peer: String,
    thread: Vec<MessageView>,
    unread: i64,
    notice: Option<String>,
    error: Option<String>,
    ussd_answer: Option<String>,
    can_send: bool,
}

/// `/messages` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MessagesQuery {
    peer: String,
    line: String,
}

/// The send, delete and USSD forms.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MessageForm {
    csrf: String,
    from: String,
    to: String,
    text: String,
    id: String,
    code: String,
    line: String,
    /// The conversation to go back to after a delete.
    peer: String,
}

fn open(state: &WebState) -> Result<SmsStore, PageError> {
    SmsStore::open(&state.db_path).map_err(|e| {
        tracing::error!("dashboard: {e}");
        PageError::Task
    })
}

async fn blocking<T: Send + 'static>(
    state: &WebState,
    f: impl FnOnce(&mut SmsStore) -> Result<T, crate::sms::store::StoreError> + Send + 'static,
) -> Result<T, PageError> {
    let s = state.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = open(&s)?;
        f(&mut store).map_err(|e| {
            tracing::error!("dashboard: {e}");
            PageError::Task
        })
    })
    .await
    .map_err(|_| PageError::Task)?
}

fn view(state: &WebState, m: MessageRow) -> MessageView {
    let (direction, who) = match m.kind.as_str() {
        "sms_in" => ("in", format!("to {}", m.extension)),
        "sms_out" => ("out", format!("from {}", m.extension)),
        _ => ("local", format!("{} → {}", m.peer, m.extension)),
    };
    MessageView {
        id: m.id,
        when: state.office.show(m.created_at.saturating_mul(1000)),
        direction,
        who,
        body: m.body,
        status: match m.error {
            Some(e) => format!("{} ({e})", m.status),
            None => m.status,
        },
        parts: m.parts,
        encoding: m.encoding.unwrap_or_default(),
    }
}

fn conversation(state: &WebState, c: Conversation, line: &str) -> ConversationView {
    let on_line = if line.is_empty() {
        String::new()
    } else {
        format!("&line={}", urlencode(line))
    };
    ConversationView {
        link: format!("/messages?peer={}{on_line}", urlencode(&c.peer)),
        when: state.office.show(c.last_at.saturating_mul(1000)),
        count: c.count,
        unread: c.unread,
        last: c.last_body.chars().take(80).collect(),
        peer: c.peer,
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Extra {
    notice: Option<String>,
    error: Option<String>,
    ussd_answer: Option<String>,
}

fn ussd_view(state: &WebState, u: UssdEvent) -> UssdView {
    UssdView {
        line: u.line,
        when: state.office.show(u.received_at.saturating_mul(1000)),
        text: u.text,
        awaits_reply: u.awaits_reply,
    }
}

/// USSD messages from the network shown on the page.
const NETWORK_USSD_SHOWN: i64 = 10;

async fn render(
    state: &WebState,
    session: Session,
    peer: String,
    line: String,
    extra: Extra,
) -> Result<Response, PageError> {
    let p = peer.clone();
    let l = line.clone();
    let (convs, thread, unread, lines, ussd) = blocking(state, move |s| {
        if !p.is_empty() {
            s.mark_read(&p)?;
        }
        let thread = if p.is_empty() {
            Vec::new()
        } else {
            s.thread(&p)?
        };
        let on = Some(l.as_str()).filter(|l| !l.is_empty());
        Ok((
            s.conversations(on)?,
            thread,
            s.unread()?,
            s.lines()?,
            s.ussd_events(Some("network"), NETWORK_USSD_SHOWN)?,
        ))
    })
    .await?;
    let lines = lines
        .into_iter()
        .map(|(name, count, unread)| LineTab {
            link: format!("/messages?line={}", urlencode(&name)),
            current: name == line,
            name,
            count,
            unread,
        })
        .collect();
    let status = if extra.error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    let can_send = state.messages.is_some();
    Ok((
        status,
        MessagesPage {
            session: Some(session),
            conversations: convs
                .into_iter()
                .map(|c| conversation(state, c, &line))
                .collect(),
            lines,
            line,
            network_ussd: ussd.into_iter().map(|u| ussd_view(state, u)).collect(),
            thread: thread.into_iter().map(|m| view(state, m)).collect(),
            peer,
            unread,
            notice: extra.notice,
            error: extra.error,
            ussd_answer: extra.ussd_answer,
            can_send,
        },
    )
        .into_response())
}

/// `GET /messages`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(q): Query<MessagesQuery>,
) -> Result<Response, PageError> {
    let none = Extra {
        notice: None,
        error: None,
        ussd_answer: None,
    };
    render(&state, session, q.peer, q.line, none).await
}

/// `POST /messages/send`.
pub async fn send(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<MessageForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let (to, from) = (form.to.trim().to_owned(), form.from.trim().to_owned());
    let result = match &state.messages {
        _ if to.is_empty() || form.text.is_empty() || from.is_empty() => {
            Err("sender, number and text are needed".to_owned())
        }
        Some(h) => h.send_sms(&from, &to, &form.text).await,
        None => Err("the message service is not running".to_owned()),
    };
    let extra = match result {
        Ok(id) => {
            tracing::info!(user = %session.username, %from, %to, id, "SMS sent from the dashboard");
            Extra {
                notice: Some(format!("Message {id} queued.")),
                error: None,
                ussd_answer: None,
            }
        }
        Err(e) => Extra {
            notice: None,
            error: Some(e),
            ussd_answer: None,
        },
    };
    let peer = if to.starts_with('0') || to.starts_with('+') {
        String::new()
    } else {
        to
    };
    render(&state, session, peer, String::new(), extra).await
}

/// `POST /messages/delete`.
pub async fn delete(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<MessageForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let Ok(id) = form.id.trim().parse::<i64>() else {
        return Ok((StatusCode::BAD_REQUEST, "bad message id\n").into_response());
    };
    blocking(&state, move |s| s.delete(id)).await?;
    let back = match form.peer.trim() {
        "" => "/messages".to_owned(),
        p => format!("/messages?peer={}", urlencode(p)),
    };
    Ok(Redirect::to(&back).into_response())
}

/// `POST /messages/ussd`.
pub async fn ussd(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<MessageForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let line = Some(form.line.trim()).filter(|l| !l.is_empty());
    let result = match &state.messages {
        Some(h) => h.ussd(line, form.code.trim()).await,
        None => Err("the message service is not running".to_owned()),
    };
    let extra = match result {
        Ok(a) => Extra {
            notice: None,
            error: None,
            ussd_answer: Some(a),
        },
        Err(e) => Extra {
            notice: None,
            error: Some(format!("USSD {}: {e}", form.code.trim())),
            ussd_answer: None,
        },
    };
    render(&state, session, String::new(), String::new(), extra).await
}

/// `GET /messages.csv`: every message.
pub async fn csv(State(state): State<WebState>) -> Result<Response, PageError> {
    let rows = blocking(&state, |s| s.list(None, i64::MAX)).await?;
    let mut out: Vec<u8> = Vec::new();
    let head = [
        "id",
        "kind",
        "line",
        "peer",
        "extension",
        "created",
        "status",
        "parts",
        "encoding",
        "cost",
        "text",
    ];
    let _ = crate::cdr::csv::write_row(&mut out, &head);
    for m in rows {
        let fields = [
            m.id.to_string(),
            m.kind,
            m.line.unwrap_or_default(),
            m.peer,
            m.extension,
            state.office.show(m.created_at.saturating_mul(1000)),
            m.status,
            m.parts.to_string(),
            m.encoding.unwrap_or_default(),
            m.cost.map(|c| format!("{c:.2}")).unwrap_or_default(),
            m.body,
        ];
        let _ = crate::cdr::csv::write_row(&mut out, &fields);
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"messages.csv\"",
            ),
        ],
        out,
    )
        .into_response())
}

/// `GET /static/sms.js`: the send form's part counter.
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../../web/sms.js"),
    )
}
