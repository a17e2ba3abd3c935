//! The Lines page `/lines` (issue 17): every SIP trunk with its live state (registered,
//! reachable with the qualify's round trip, calls now), and forms to add, edit, enable, disable
//! or delete one. Trunks of the configuration file are shown read-only ("from the configuration
//! file"); the others live in the store ([`crate::store::trunks`]). A change is applied at once
//! by the SIP side (the trunk registers or unregisters, the router uses it for the next call),
//! without dropping calls in progress.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, url_encode, PageError, WebState};
use crate::live::{LineState, TrunkLive};
use crate::store::modem_lines::{self as store_modems, ModemRow};
use crate::store::trunks::{self as store_trunks, FieldError, TrunkChangeError, TrunkSettings};

use super::fxo_lines::FxoForm;
use super::modem_lines::ModemForm;
use crate::store::fxo_lines::{self as store_fxo, FxoRow};
use crate::web::auth::Session;

/// Which trunk to load into the form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LinesQuery {
    pub edit: String,
    /// A modem line of the dashboard to load into its form.
    pub edit_modem: String,
    /// An FXO line of the dashboard to load into its form.
    pub edit_fxo: String,
}

/// The trunk form, as typed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TrunkForm {
    pub csrf: String,
    /// Set when the form edits an existing trunk.
    pub existing: String,
    pub name: String,
    pub uri: String,
    pub username: String,
    /// Empty keeps the stored password of an existing trunk.
    pub password: String,
    pub number_format: String,
    /// Addresses the provider's calls come from, separated by commas or spaces.
    pub sources: String,
    pub register: String,
    pub register_expires: String,
    pub qualify: String,
    pub outbound_proxy: String,
    pub from_user: String,
    pub from_domain: String,
    pub caller_id_header: String,
    pub contact_user: String,
    pub realm: String,
    pub enabled: String,
}

impl TrunkForm {
    fn of(name: &str, enabled: bool, s: &TrunkSettings) -> TrunkForm {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let num = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
        TrunkForm {
            existing: "1".into(),
            name: name.to_owned(),
            uri: s.uri.clone(),
            username: text(&s.username),
            number_format: s.number_format.clone().unwrap_or_else(|| "e164".into()),
            sources: s.sources.join(", "),
            register: if s.register == Some(true) {
                "1".into()
            } else {
                String::new()
            },
            register_expires: num(s.register_expires),
            qualify: num(s.qualify),
            outbound_proxy: text(&s.outbound_proxy),
            from_user: text(&s.from_user),
            from_domain: text(&s.from_domain),
            caller_id_header: s.caller_id_header.clone().unwrap_or_else(|| "pai".into()),
            contact_user: text(&s.contact_user),
            realm: text(&s.realm),
            enabled: if enabled { "1".into() } else { String::new() },
            ..TrunkForm::default()
        }
    }

    /// The settings the form asks for; a number field that is not a number names itself.
    pub fn settings(&self) -> Result<TrunkSettings, FieldError> {
        let opt = |v: &str| {
            let v = v.trim();
            (!v.is_empty()).then(|| v.to_owned())
        };
        let num = |field: &str, v: &str| -> Result<Option<u32>, FieldError> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse().map(Some).map_err(|_| FieldError {
                field: field.to_owned(),
                message: format!("`{v}` is not a whole number of seconds"),
            })
        };
        Ok(TrunkSettings {
            uri: self.uri.trim().to_owned(),
            username: opt(&self.username),
            password: opt(self.password.trim_end_matches(['\r', '\n'])),
            number_format: opt(&self.number_format).filter(|f| f != "e164"),
            sources: self
                .sources
                .split([',', ' ', '\n', '\r', '\t'])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            register: (!self.register.is_empty()).then_some(true),
            register_expires: num("register_expires", &self.register_expires)?,
            register_retry_secs: None,
            contact_user: opt(&self.contact_user),
            realm: opt(&self.realm),
            qualify: num("qualify", &self.qualify)?.filter(|q| *q > 0),
            outbound_proxy: opt(&self.outbound_proxy),
            from_user: opt(&self.from_user),
            from_domain: opt(&self.from_domain),
            caller_id_header: opt(&self.caller_id_header).filter(|h| h != "pai"),
        })
    }
}

/// The label of a form field in messages.
pub fn field_label(field: &str) -> &'static str {
    match field {
        "name" => "Name",
        "uri" => "Provider address (URI)",
        "username" => "User name",
        "password" => "Password",
        "number_format" => "Number format",
        "sources" => "Calls come from",
        "register" => "Register",
        "register_expires" => "Registration interval",
        "register_retry_secs" => "Registration retry",
        "qualify" => "Qualify every",
        "outbound_proxy" => "Outbound proxy",
        "from_user" => "From user",
        "from_domain" => "From domain",
        "caller_id_header" => "Caller ID header",
        "contact_user" => "Contact user",
        "realm" => "Realm",
        "rate_table" => "Rate table",
        _ => "Settings",
    }
}

/// A refused change as the page says it: the field first.
pub fn change_message(e: &TrunkChangeError) -> String {
    match e {
        TrunkChangeError::Field(f) => format!("{}: {}.", field_label(&f.field), f.message),
        other => format!("{other}."),
    }
}

/// One trunk as the table shows it.
pub struct TrunkView {
    pub name: String,
    pub uri: String,
    pub enabled: bool,
    pub from_file: bool,
    pub registration: String,
    pub reachable: String,
    pub calls: String,
    pub edit: String,
    /// The rate table that prices its calls (empty: none of its own).
    pub rate_table: String,
}

/// One PSTN line (GSM modem, analog FXO port) as the table shows it: its live state (signal,
/// operator and network registration for a modem, hook state for an FXO port) and calls now.
pub struct PstnLineView {
    pub name: String,
    pub kind: String,
    pub state: String,
    pub detail: String,
    pub calls: String,
    /// The rate table that prices its calls (empty: none of its own).
    pub rate_table: String,
    /// Whether the configuration file manages it (else the dashboard: editable).
    pub from_file: bool,
    /// Enabled (a line of the dashboard can be disabled).
    pub enabled: bool,
    pub edit: String,
    /// Where its enable/disable and delete forms go (`/lines/modem`, `/lines/fxo`).
    pub actions: String,
}

impl PstnLineView {
    fn of(l: &LineState, rate_table: Option<&String>, from_file: bool) -> PstnLineView {
        PstnLineView {
            name: l.name.clone(),
            kind: l.kind.clone(),
            state: l.state.clone(),
            detail: l.detail.clone(),
            calls: pstn_calls(&l.state).to_string(),
            rate_table: rate_table.cloned().unwrap_or_default(),
            from_file,
            enabled: true,
            edit: format!("/lines?edit_modem={}", url_encode(&l.name)),
            actions: "/lines/modem".into(),
        }
    }

    /// An FXO line of the dashboard, running (`live`) or not (disabled, not opened yet).
    fn fxo(r: &FxoRow, live: Option<&LineState>, rate_table: Option<&String>) -> PstnLineView {
        let mut v = match live {
            Some(l) => PstnLineView::of(l, rate_table, false),
            None => PstnLineView {
                name: r.name.clone(),
                kind: "analog FXO".into(),
                state: if r.enabled { "starting" } else { "disabled" }.into(),
                detail: format!("channel {}", r.settings.channel),
                calls: "0".into(),
                rate_table: rate_table.cloned().unwrap_or_default(),
                from_file: false,
                enabled: r.enabled,
                edit: String::new(),
                actions: String::new(),
            },
        };
        v.edit = format!("/lines?edit_fxo={}", url_encode(&r.name));
        v.actions = "/lines/fxo".into();
        v
    }

    /// A line of the dashboard that is not running (disabled, or not opened yet).
    fn stored(r: &ModemRow, rate_table: Option<&String>) -> PstnLineView {
        let settings = &r.settings;
        let detail = match (&settings.imei, &settings.iccid, &settings.data_port) {
            (Some(imei), _, _) => format!("IMEI {imei}"),
            (None, Some(iccid), _) => format!("ICCID {iccid}"),
            (None, None, Some(port)) => format!("port {port}"),
            (None, None, None) => String::new(),
        };
        PstnLineView {
            name: r.name.clone(),
            kind: "GSM modem".into(),
            state: if r.enabled { "starting" } else { "disabled" }.into(),
            detail,
            calls: "0".into(),
            rate_table: rate_table.cloned().unwrap_or_default(),
            from_file: false,
            enabled: r.enabled,
            edit: format!("/lines?edit_modem={}", url_encode(&r.name)),
            actions: "/lines/modem".into(),
        }
    }
}

/// Calls on a PSTN line now, from its shown state (a line carries one call at a time).
pub fn pstn_calls(state: &str) -> usize {
    usize::from(matches!(state, "in call" | "ringing" | "dialling"))
}

/// Whether a line of the live page is a PSTN line (not a SIP trunk).
fn is_pstn(l: &LineState) -> bool {
    l.kind != "SIP trunk"
}

#[derive(Template, WebTemplate)]
#[template(path = "lines.html")]
struct LinesPage {
    session: Option<Session>,
    csrf: String,
    admin: bool,
    rows: Vec<TrunkView>,
    live: bool,
    form: TrunkForm,
    error: Option<String>,
    /// Our SIP addresses, for the provider.
    ours: Vec<String>,
    /// The rate tables that can be given to a line.
    rate_tables: Vec<String>,
    /// The PSTN lines (modems, FXO ports) of the running gateway and of the dashboard.
    pstn: Vec<PstnLineView>,
    /// The modem line form.
    modem: ModemForm,
    /// The FXO line form.
    fxo: FxoForm,
    /// The modems found (running lines' and probed ones), offered in the modem form.
    found: Vec<FoundModemView>,
}

/// A modem the gateway identified, as the modem form offers it.
pub struct FoundModemView {
    pub imei: String,
    pub iccid: String,
    pub data_port: String,
    pub audio_port: String,
    /// Which line runs it, and where it is.
    pub label: String,
}

impl FoundModemView {
    fn of(m: crate::pstn::gsm::discover::FoundModem) -> FoundModemView {
        let label = match &m.line {
            Some(line) => format!("line {line}, {}", m.data_port),
            None => format!("not in use, {}", m.data_port),
        };
        FoundModemView {
            imei: m.imei.unwrap_or_default(),
            iccid: m.iccid.unwrap_or_default(),
            data_port: m.data_port,
            audio_port: m.audio_port.unwrap_or_default(),
            label,
        }
    }
}

/// The live state of the trunks, if the SIP side answers.
pub(crate) async fn live_trunks(state: &WebState) -> Option<Vec<TrunkLive>> {
    Some(state.live.as_ref()?.snapshot().await?.trunks)
}

/// The live state of the trunks and of the PSTN lines, if the SIP side answers.
async fn live_state(state: &WebState) -> Option<(Vec<TrunkLive>, Vec<LineState>)> {
    let snap = state.live.as_ref()?.snapshot().await?;
    Some((
        snap.trunks,
        snap.lines.into_iter().filter(is_pstn).collect(),
    ))
}

/// The running gateway's PSTN lines with their live state (none when the SIP side does not
/// answer).
pub(crate) async fn pstn_live(state: &WebState) -> Vec<LineState> {
    match live_state(state).await {
        Some((_, lines)) => lines,
        None => Vec::new(),
    }
}

/// The names of the running gateway's PSTN lines (none when the SIP side does not answer).
pub(crate) async fn pstn_line_names(state: &WebState) -> Vec<String> {
    pstn_live(state).await.into_iter().map(|l| l.name).collect()
}

/// The registration column: state, and for how long or why not.
pub fn registration_text(t: Option<&TrunkLive>, registers: bool) -> String {
    match t.and_then(|t| t.registration.map(|r| (r, t))) {
        Some(("registered", t)) => match t.registered_secs {
            Some(s) => format!("registered ({s} s left)"),
            None => "registered".into(),
        },
        Some((r, t)) => match t.last_failure {
            Some(code) => format!("{r} (last answer {code})"),
            None => r.to_owned(),
        },
        None if registers => "not registering (no route to the provider?)".into(),
        None => "does not register".into(),
    }
}

/// The reachability column: up/down with the qualify's round trip.
pub fn reach_text(t: Option<&TrunkLive>, qualifies: bool) -> String {
    match t.and_then(|t| t.reachable.map(|r| (r, t))) {
        Some(("up", t)) => match t.rtt_ms {
            Some(ms) => format!("reachable, {ms} ms"),
            None => "reachable".into(),
        },
        Some(("down", t)) => match t.reach_secs {
            Some(s) => format!("not answering OPTIONS for {s} s"),
            None => "not answering OPTIONS".into(),
        },
        Some((r, _)) => format!("{r} (no OPTIONS answer yet)"),
        None if qualifies => "not probed".into(),
        None => "not probed (qualify off)".into(),
    }
}

/// The Lines page refusing a change (422) with the forms as typed.
pub(super) async fn render_with(
    state: &WebState,
    session: Session,
    form: Option<TrunkForm>,
    modem: Option<ModemForm>,
    error: Option<String>,
) -> Result<Response, PageError> {
    render(
        state,
        session,
        LinesQuery::default(),
        (form, modem, None),
        error,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

/// The Lines page refusing a change of an FXO line (422) with its form as typed.
pub(super) async fn render_fxo_refused(
    state: &WebState,
    session: Session,
    fxo: Option<FxoForm>,
    error: String,
) -> Result<Response, PageError> {
    render(
        state,
        session,
        LinesQuery::default(),
        (None, None, fxo),
        Some(error),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

/// The forms as typed (trunk, modem line, FXO line), when a change was refused.
type Forms = (Option<TrunkForm>, Option<ModemForm>, Option<FxoForm>);

async fn render(
    state: &WebState,
    session: Session,
    query: LinesQuery,
    (form, modem, fxo): Forms,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let edit = query.edit;
    let (rows, line_tables, rate_tables, (modem_rows, fxo_rows)) = state
        .with_read(move |db| {
            let rows = store_trunks::list(db).map_err(PageError::from)?;
            let lines = crate::store::line_rates::tables_of_lines(db)?;
            let tables = crate::store::line_rates::table_names(db)?;
            let modems = store_modems::list(db).map_err(PageError::from)?;
            let fxo = store_fxo::list(db).map_err(PageError::from)?;
            Ok((rows, lines, tables, (modems, fxo)))
        })
        .await?;
    let (live, pstn) = match live_state(state).await {
        Some((trunks, lines)) => (Some(trunks), lines),
        None => (None, Vec::new()),
    };
    let ours = |name: &str| modem_rows.iter().any(|r| r.name == name);
    let fxo_row = |name: &str| fxo_rows.iter().find(|r| r.name == name);
    let mut pstn: Vec<PstnLineView> = pstn
        .iter()
        .map(|l| match fxo_row(&l.name) {
            Some(r) => PstnLineView::fxo(r, Some(l), line_tables.get(&l.name)),
            None => PstnLineView::of(l, line_tables.get(&l.name), !ours(&l.name)),
        })
        .collect();
    for r in &modem_rows {
        if !pstn.iter().any(|p| p.name == r.name) {
            pstn.push(PstnLineView::stored(r, line_tables.get(&r.name)));
        }
    }
    for r in &fxo_rows {
        if !pstn.iter().any(|p| p.name == r.name) {
            pstn.push(PstnLineView::fxo(r, None, line_tables.get(&r.name)));
        }
    }
    let fxo = fxo.unwrap_or_else(|| {
        fxo_rows
            .iter()
            .find(|r| r.name == query.edit_fxo.trim())
            .map(FxoForm::of)
            .unwrap_or_else(FxoForm::blank)
    });
    let modem = modem.unwrap_or_else(|| {
        match modem_rows
            .iter()
            .find(|r| r.name == query.edit_modem.trim())
        {
            Some(r) => ModemForm::of(r),
            None => ModemForm {
                enabled: "1".into(),
                ..ModemForm::default()
            },
        }
    });
    let form = form.unwrap_or_else(|| {
        match rows
            .iter()
            .find(|r| r.name == edit.trim() && !r.from_file())
        {
            Some(r) => TrunkForm::of(&r.name, r.enabled, &r.settings),
            None => TrunkForm {
                enabled: "1".into(),
                number_format: "e164".into(),
                caller_id_header: "pai".into(),
                ..TrunkForm::default()
            },
        }
    });
    let views = rows
        .iter()
        .map(|r| {
            let t = live
                .as_ref()
                .and_then(|l| l.iter().find(|t| t.name == r.name));
            let (registration, reachable, calls) = if !r.enabled {
                ("disabled".into(), "disabled".into(), "0".into())
            } else if live.is_none() {
                ("?".into(), "?".into(), "?".into())
            } else {
                (
                    registration_text(t, r.settings.register == Some(true)),
                    reach_text(t, r.settings.qualify.is_some_and(|q| q > 0)),
                    t.map_or(0, |t| t.calls).to_string(),
                )
            };
            TrunkView {
                name: r.name.clone(),
                uri: r.settings.uri.clone(),
                enabled: r.enabled,
                from_file: r.from_file(),
                registration,
                reachable,
                calls,
                edit: format!("/lines?edit={}", url_encode(&r.name)),
                rate_table: line_tables.get(&r.name).cloned().unwrap_or_default(),
            }
        })
        .collect();
    let ours = state
        .sip_listen
        .iter()
        .map(|(proto, addr)| format!("{proto} {addr}"))
        .collect();
    let page = LinesPage {
        csrf: session.csrf.clone(),
        admin: session.admin,
        session: Some(session),
        rows: views,
        live: live.is_some(),
        form,
        error,
        ours,
        rate_tables,
        pstn,
        modem,
        fxo,
        found: crate::pstn::gsm::discover::found()
            .into_iter()
            .map(FoundModemView::of)
            .collect(),
    };
    Ok((status, page).into_response())
}

/// `GET /lines`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(q): Query<LinesQuery>,
) -> Result<Response, PageError> {
    render(&state, session, q, (None, None, None), None, StatusCode::OK).await
}

async fn refused(
    state: &WebState,
    session: Session,
    form: Option<TrunkForm>,
    e: &TrunkChangeError,
) -> Result<Response, PageError> {
    if let TrunkChangeError::Store(s) = e {
        tracing::error!("trunk change: {s}");
        return Err(PageError::Task);
    }
    render_with(state, session, form, None, Some(change_message(e))).await
}

/// `POST /lines/save`: adds a trunk or changes one added here.
pub async fn save(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<TrunkForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let name = form.name.trim().to_owned();
    let enabled = !form.enabled.is_empty();
    let new = form.existing.is_empty();
    let result = match form.settings() {
        Err(e) => Err(TrunkChangeError::Field(e)),
        Ok(settings) => {
            let n = name.clone();
            state
                .with_db(move |db| {
                    Ok(store_trunks::save_web(
                        &mut db.conn,
                        &n,
                        enabled,
                        settings,
                        new,
                    ))
                })
                .await?
        }
    };
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, trunk = %name, new, "trunk saved");
            state.trunks_changed.notify_one();
            Ok(Redirect::to("/lines").into_response())
        }
        Err(e) => {
            let mut form = form;
            form.password.clear();
            refused(&state, session, Some(form), &e).await
        }
    }
}

/// The enable/disable and delete forms.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NameForm {
    pub csrf: String,
    pub name: String,
}

/// `POST /lines/toggle`: enables or disables a trunk added here.
pub async fn toggle(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<NameForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let name = form.name.trim().to_owned();
    let n = name.clone();
    let result = state
        .with_db(move |db| {
            let now = store_trunks::get(&db.conn, &n)
                .map_err(TrunkChangeError::from)
                .and_then(|r| r.ok_or_else(|| TrunkChangeError::Unknown(n.clone())));
            Ok(now.and_then(|r| store_trunks::set_enabled(&db.conn, &n, !r.enabled)))
        })
        .await?;
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, trunk = %name, "trunk enabled/disabled");
            state.trunks_changed.notify_one();
            Ok(Redirect::to("/lines").into_response())
        }
        Err(e) => refused(&state, session, None, &e).await,
    }
}

/// The rate table form of a line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RateTableForm {
    pub csrf: String,
    pub name: String,
    /// Empty: none of its own (the reference table rates it).
    pub rate_table: String,
}

/// `POST /lines/rate-table`: the rate table that prices a line's calls (and orders the lines,
/// cheapest first, for a number); for every line, those of the file too. The router takes it
/// within seconds.
pub async fn set_rate_table(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<RateTableForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let name = form.name.trim().to_owned();
    let table = form.rate_table.trim().to_owned();
    let (n, t) = (name.clone(), table.clone());
    // A PSTN line (modem, FXO port) of the running gateway, or a trunk of the store.
    let pstn = pstn_line_names(&state).await.contains(&name);
    let result = state
        .with_db(move |db| {
            let known = store_trunks::get(&db.conn, &n)
                .map_err(TrunkChangeError::from)
                .and_then(|r| match r {
                    Some(_) => Ok(()),
                    None if pstn => Ok(()),
                    None => match store_modems::get(&db.conn, &n)?.is_some()
                        || store_fxo::exists(&db.conn, &n)?
                    {
                        true => Ok(()),
                        false => Err(TrunkChangeError::Unknown(n.clone())),
                    },
                });
            Ok(known.and_then(|_| {
                crate::store::line_rates::set_table(&mut db.conn, &n, Some(t.as_str()))
            }))
        })
        .await?;
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, line = %name, table = %table, "line rate table set");
            state.rates_changed.notify_one();
            Ok(Redirect::to("/lines").into_response())
        }
        Err(e) => refused(&state, session, None, &e).await,
    }
}

/// `POST /lines/delete`: deletes a trunk added here (the SIP side unregisters it).
pub async fn delete(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<NameForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let name = form.name.trim().to_owned();
    let n = name.clone();
    let result = state
        .with_db(move |db| Ok(store_trunks::delete_web(&db.conn, &n)))
        .await?;
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, trunk = %name, "trunk deleted");
            state.trunks_changed.notify_one();
            Ok(Redirect::to("/lines").into_response())
        }
        Err(e) => refused(&state, session, None, &e).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_become_settings_and_bad_numbers_name_their_field() {
        let f = TrunkForm {
            name: "carrier".into(),
            uri: " sip:127.0.0.5:5060 ".into(),
            username: "office1".into(),
            password: "pw".into(),
            number_format: "national".into(),
            sources: "127.0.0.5, 192.0.2.0/28".into(),
            register: "1".into(),
            qualify: "5".into(),
            caller_id_header: "pai".into(),
            ..TrunkForm::default()
        };
        let s = f.settings().unwrap();
        assert_eq!(s.uri, "sip:127.0.0.5:5060");
        assert_eq!(s.sources, ["127.0.0.5", "192.0.2.0/28"]);
        assert_eq!(s.qualify, Some(5));
        assert_eq!(s.caller_id_header, None);
        assert!(s.check("carrier", true).is_ok());
        let bad = TrunkForm {
            qualify: "often".into(),
            ..f
        };
        assert_eq!(bad.settings().unwrap_err().field, "qualify");
        let e = TrunkChangeError::Field(FieldError {
            field: "uri".into(),
            message: "`x` is not a SIP URI".into(),
        });
        assert!(change_message(&e).starts_with("Provider address (URI): "));
    }
}
