//! The DUNDi page `/dundi` (issue 17): our EID and public key (download as a `.pub` file that
//! Asterisk reads, with the `dundi.conf` lines the peer's administrator needs), the peers with
//! their qualify status and latency, a key exchange (paste or upload the peer's public key, see
//! its fingerprint), what we answer for (the mappings), the answer cache with a flush button,
//! and a lookup box that runs a real lookup. Peers of the configuration file are shown
//! read-only ("from the configuration file"); the others live in the store
//! ([`crate::store::dundi`]) and are applied at once, without a restart
//! ([`crate::routing::dundi::OfficeDundi::apply`]).

use std::time::{Duration, Instant};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, url_encode, CsrfForm, PageError, WebState};
use crate::routing::dundi::{keyring, Eid, Reachability};
use crate::store::dundi::{self as store_dundi, PeerInput, PeerRow};
use crate::store::dundi_node::{
    self as store_node, tech_name, MappingInput, MappingRow, NodeValues, NODE_KEYS,
};
use crate::store::trunks::TrunkChangeError as ChangeError;
use crate::web::auth::Session;

/// How long the lookup box waits for answers.
const LOOKUP_WAIT: Duration = Duration::from_secs(3);

/// The page's query: the lookup box and the peer to load into the form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DundiQuery {
    pub number: String,
    pub context: String,
    /// Ask the peers even if the cache has an answer.
    pub bypass: String,
    pub edit: String,
    /// The stored mapping to load into the mapping form.
    pub mapping: String,
}

/// The peer form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PeerForm {
    pub csrf: String,
    /// Set when the form changes an existing peer.
    pub existing: String,
    pub eid: String,
    pub address: String,
    pub model: String,
    pub order: String,
    pub include: String,
    pub permit: String,
    pub key: String,
    /// Set: forget the stored key (the peer becomes unencrypted).
    pub drop_key: String,
    pub qualify: String,
    pub enabled: String,
}

impl PeerForm {
    fn input(&self) -> PeerInput {
        PeerInput {
            eid: self.eid.clone(),
            address: self.address.clone(),
            model: self.model.clone(),
            order: self.order.clone(),
            include: self.include.clone(),
            permit: self.permit.clone(),
            key: self.key.clone(),
            qualify: self.qualify.clone(),
        }
    }
}

/// The enable/disable and delete forms.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EidForm {
    pub csrf: String,
    pub eid: String,
}

/// The label of a peer form field in messages.
pub fn field_label(field: &str) -> &'static str {
    match field {
        "eid" => "EID",
        "address" => "Address",
        "model" => "Model",
        "order" => "Order",
        "include" => "We ask it about",
        "permit" => "It may ask us about",
        "key" => "Public key",
        "qualify" => "Qualify every",
        _ => "Settings",
    }
}

fn change_message(e: &ChangeError) -> String {
    match e {
        ChangeError::Field(f) => format!("{}: {}.", field_label(&f.field), f.message),
        other => format!("{other}."),
    }
}

/// One peer as the table shows it.
pub struct PeerView {
    pub eid: String,
    pub address: String,
    pub model: String,
    pub order: u32,
    pub include: String,
    pub permit: String,
    /// `encrypted (MD5 …)` or `not encrypted`.
    pub key: String,
    pub status: String,
    pub enabled: bool,
    pub from_file: bool,
    pub edit: String,
}

/// A mapping (what we answer for) as a row.
pub struct MappingView {
    /// 0: from the configuration file.
    pub id: i64,
    pub context: String,
    pub tech: String,
    pub destination: String,
    pub weight: u16,
    pub numbers: String,
    pub enabled: bool,
    pub from_file: bool,
}

/// One node setting as the page shows it.
pub struct SettingView {
    pub key: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    /// What the dashboard stored (empty: not set here).
    pub stored: String,
    /// What is in use (the file's, the stored or the default).
    pub in_use: String,
    pub from_file: bool,
}

/// The mapping form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MappingForm {
    pub csrf: String,
    /// Empty: a new mapping.
    pub id: String,
    pub context: String,
    pub destination: String,
    pub tech: String,
    pub weight: String,
    pub options: String,
    pub numbers: String,
    pub enabled: String,
}

impl MappingForm {
    fn input(&self) -> MappingInput {
        MappingInput {
            context: self.context.clone(),
            destination: self.destination.clone(),
            tech: self.tech.clone(),
            weight: self.weight.clone(),
            options: self.options.clone(),
            numbers: self.numbers.clone(),
        }
    }
}

/// The mapping delete form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IdForm {
    pub csrf: String,
    pub id: String,
}

/// The label and help of a node setting.
pub fn setting_label(key: &str) -> (&'static str, &'static str) {
    match key {
        "enabled" => (
            "DUNDi",
            "On: we answer peers and ask them for numbers that leave the office.",
        ),
        "listen" => (
            "Listen on",
            "UDP address:port (default 0.0.0.0:4520); tell peers the port if it is not 4520.",
        ),
        "eid" => (
            "Our EID",
            "Six hex bytes (default: this machine's first MAC address). Peers name us by it.",
        ),
        "context" => (
            "Context we ask",
            "The DUNDi context our lookups ask peers about (default e164); peers must map it.",
        ),
        "ttl" => ("TTL", "How many hops our lookups may travel (default 120)."),
        "cache_secs" => (
            "Cache time (s)",
            "How long peers may keep our answers, and we theirs (default 3600).",
        ),
        "key_ttl_secs" => (
            "Key lifetime (s)",
            "How long a session key is used with a peer (default 3600).",
        ),
        "ipaddr" => (
            "Our address in answers",
            "The IP put in place of ${IPADDR} (default: the listen address).",
        ),
        "organization" => ("Organization", "Contact record peers see (dundi query)."),
        "department" => ("Department", ""),
        "locality" => ("Locality", ""),
        "state_prov" => ("State or province", ""),
        "country" => ("Country", ""),
        "email" => ("E-mail", ""),
        "phone" => ("Phone", ""),
        _ => ("Setting", ""),
    }
}

/// The label of a mapping form field in messages.
pub fn mapping_label(field: &str) -> &'static str {
    match field {
        "context" => "Context",
        "destination" => "Destination",
        "tech" => "Technology",
        "weight" => "Weight",
        "options" => "Options",
        "numbers" => "Numbers",
        _ => "Mapping",
    }
}

/// The node settings with what is in use (for the API too).
pub(crate) fn setting_views_of(
    d: &crate::routing::dundi::OfficeDundi,
    stored: &NodeValues,
) -> Vec<SettingView> {
    setting_views(d, stored)
}

fn setting_views(d: &crate::routing::dundi::OfficeDundi, stored: &NodeValues) -> Vec<SettingView> {
    let file = d.file_config();
    let (on, s) = d.current();
    NODE_KEYS
        .iter()
        .map(|&key| {
            let (label, help) = setting_label(key);
            let in_use = match key {
                "enabled" => if on { "on" } else { "off" }.to_owned(),
                "listen" => s.bind.to_string(),
                "eid" => d.handle.eid().to_string(),
                "context" => d.context(),
                "ttl" => s.ttl.to_string(),
                "cache_secs" => s.cache_ttl.as_secs().to_string(),
                "key_ttl_secs" => s.key_ttl.as_secs().to_string(),
                "ipaddr" => s.ipaddr.clone(),
                "organization" => s.entity.organization.clone(),
                "department" => s.entity.department.clone(),
                "locality" => s.entity.locality.clone(),
                "state_prov" => s.entity.state_prov.clone(),
                "country" => s.entity.country.clone(),
                "email" => s.entity.email.clone(),
                "phone" => s.entity.phone.clone(),
                _ => String::new(),
            };
            SettingView {
                key,
                label,
                help,
                stored: stored.get(key).cloned().unwrap_or_default(),
                in_use,
                from_file: file.file_keys.iter().any(|k| k == key),
            }
        })
        .collect()
}

/// A cached lookup as a row.
pub struct CacheView {
    pub number: String,
    pub context: String,
    pub answers: String,
    pub expires_in: u64,
}

/// One answer of the lookup box.
pub struct AnswerView {
    pub destination: String,
    pub tech: String,
    pub weight: u16,
    pub eid: String,
    pub via: String,
    pub exists: bool,
    pub expiration: u16,
}

/// Our identity, when DUNDi runs.
pub struct Ours {
    pub eid: String,
    pub listen: String,
    pub ip: String,
    pub port: u16,
    pub public_pem: Option<String>,
    pub md5: String,
    pub sha256: String,
    pub key_name: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "dundi.html")]
struct DundiPage {
    session: Option<Session>,
    csrf: String,
    admin: bool,
    ours: Option<Ours>,
    peers: Vec<PeerView>,
    mappings: Vec<MappingView>,
    /// The node settings (empty: no node in this process).
    settings: Vec<SettingView>,
    /// Whether the node runs.
    running: bool,
    mapping_form: MappingForm,
    /// `None`: DUNDi does not run.
    cache: Option<Vec<CacheView>>,
    query: DundiQuery,
    answers: Option<Vec<AnswerView>>,
    lookup_note: String,
    form: PeerForm,
    /// Fingerprint of the key in the form (the stored key of the peer edited).
    form_key: String,
    error: Option<String>,
}

pub(crate) fn reach_text(r: Reachability, qualifies: bool) -> String {
    match r {
        Reachability::Unknown if qualifies => "not answered yet".to_owned(),
        Reachability::Unknown => "not qualified".to_owned(),
        Reachability::Reachable(d) => format!("reachable, {} ms", d.as_millis()),
        Reachability::Lagged(d) => format!("lagged, {} ms", d.as_millis()),
        Reachability::Unreachable => "unreachable".to_owned(),
    }
}

pub(crate) fn key_text(pem: Option<&str>) -> String {
    match pem.map(keyring::fingerprints) {
        Some(Ok((md5, _))) => format!("encrypted, key MD5 {md5}"),
        Some(Err(_)) => "encrypted (key unreadable)".to_owned(),
        None => "not encrypted".to_owned(),
    }
}

pub(crate) fn ours(state: &WebState) -> Option<Ours> {
    let d = state.dundi.as_ref().filter(|d| d.handle.is_running())?;
    let local = d.handle.local_addr();
    let (_, settings) = d.current();
    let pem = match keyring::our_public_pem(&settings) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("DUNDi: our public key: {e}");
            None
        }
    };
    let (md5, sha256) = pem
        .as_deref()
        .and_then(|p| keyring::fingerprints(p).ok())
        .unwrap_or_default();
    let ip = if settings.ipaddr.is_empty() {
        local.ip().to_string()
    } else {
        settings.ipaddr.clone()
    };
    Some(Ours {
        eid: d.handle.eid().to_string(),
        listen: local.to_string(),
        ip,
        port: local.port(),
        public_pem: pem,
        md5,
        sha256,
        key_name: key_name(d.handle.eid()),
    })
}

/// The name our public key is downloaded as (Asterisk's `inkey=` names the file without
/// `.pub`).
fn key_name(eid: Eid) -> String {
    format!("pasarela-{}", eid.to_string().replace(':', ""))
}

/// The EIDs of the configuration file's peers.
pub(crate) fn file_eids(state: &WebState) -> Vec<Eid> {
    state.dundi.as_ref().map_or_else(Vec::new, |d| {
        d.file_settings().peers.iter().map(|p| p.eid).collect()
    })
}

async fn stored(state: &WebState) -> Result<Vec<PeerRow>, PageError> {
    state
        .with_read(|db| store_dundi::list(db).map_err(PageError::from))
        .await
}

/// Applies the store's node settings, mappings and peers to the node: turns it on or off,
/// rebinds it, or reloads it in place (the code path SIGHUP takes too); nothing when this
/// process has no node.
pub(crate) async fn apply(state: &WebState) -> Result<(), String> {
    let Some(d) = &state.dundi else {
        return Ok(());
    };
    let stored = state
        .with_read(|db| crate::store::dundi_node::read(db).map_err(PageError::from))
        .await
        .map_err(|e| e.to_string())?;
    let dir = keyring::keys_dir(state.db_path());
    let changes = d
        .provision(None, &stored, &dir)
        .await
        .map_err(|e| e.to_string())?;
    if !changes.is_empty() {
        tracing::info!("DUNDi applied from the dashboard: {}", changes.join("; "));
        // The trust model names calls from the node's peers: built again with the node's
        // state (on or off, its peers).
        state.trunks_changed.notify_one();
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn render(
    state: &WebState,
    session: Session,
    query: DundiQuery,
    form: Option<PeerForm>,
    mapping_form: Option<MappingForm>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let rows = stored(state).await?;
    let (node_values, mapping_rows) = state
        .with_read(|db| {
            Ok((
                store_node::node(db).map_err(PageError::from)?,
                store_node::mappings(db).map_err(PageError::from)?,
            ))
        })
        .await?;
    let file = file_eids(state);
    let is_running = state.dundi.as_ref().is_some_and(|d| d.handle.is_running());
    let running = match &state.dundi {
        Some(d) if is_running => tokio::time::timeout(Duration::from_secs(1), d.handle.peers())
            .await
            .ok(),
        _ => None,
    };
    let status_of = |eid: Eid, qualifies: bool| -> String {
        match &running {
            None if !is_running => "DUNDi is off".to_owned(),
            None => "?".to_owned(),
            Some(list) => match list.iter().find(|p| p.eid == eid) {
                Some(p) => reach_text(p.reachability, qualifies),
                None => "not in use".to_owned(),
            },
        }
    };
    let mut peers = Vec::new();
    if let Some(d) = &state.dundi {
        for p in &d.file_settings().peers {
            let pem = p
                .inkey
                .as_ref()
                .and_then(|path| std::fs::read_to_string(path).ok());
            peers.push(PeerView {
                eid: p.eid.to_string(),
                address: p.address.to_string(),
                model: format!("{:?}", p.model).to_lowercase(),
                order: p.order,
                include: p.include.join(", "),
                permit: p.permit.join(", "),
                key: key_text(pem.as_deref()),
                status: status_of(p.eid, p.qualify.is_some()),
                enabled: true,
                from_file: true,
                edit: String::new(),
            });
        }
    }
    for r in rows.iter().filter(|r| !file.contains(&r.eid)) {
        peers.push(PeerView {
            eid: r.eid.to_string(),
            address: r.address.clone(),
            model: r.model_name().to_owned(),
            order: r.order,
            include: r.include.join(", "),
            permit: r.permit.join(", "),
            key: key_text(r.key.as_deref()),
            status: if r.enabled {
                status_of(r.eid, r.qualify_secs > 0)
            } else {
                "disabled".to_owned()
            },
            enabled: r.enabled,
            from_file: false,
            edit: format!("/dundi?edit={}", url_encode(&r.eid.to_string())),
        });
    }
    let mut mappings: Vec<MappingView> = state.dundi.as_ref().map_or_else(Vec::new, |d| {
        d.file_settings()
            .mappings
            .iter()
            .map(|m| MappingView {
                id: 0,
                context: m.context.clone(),
                tech: tech_name(m.tech).to_owned(),
                destination: m.destination.clone(),
                weight: m.weight,
                numbers: String::new(),
                enabled: true,
                from_file: true,
            })
            .collect()
    });
    mappings.extend(mapping_rows.iter().map(|m| MappingView {
        id: m.id,
        context: m.context.clone(),
        tech: tech_name(m.tech).to_owned(),
        destination: m.destination.clone(),
        weight: m.weight,
        numbers: m.numbers.join(", "),
        enabled: m.enabled,
        from_file: false,
    }));
    let settings = state
        .dundi
        .as_ref()
        .map_or_else(Vec::new, |d| setting_views(d, &node_values));
    let mapping_form = match mapping_form {
        Some(f) => f,
        None => match mapping_rows
            .iter()
            .find(|m| m.id.to_string() == query.mapping.trim())
        {
            Some(m) => {
                let i = m.input();
                MappingForm {
                    id: m.id.to_string(),
                    context: i.context,
                    destination: i.destination,
                    tech: i.tech,
                    weight: i.weight,
                    options: i.options,
                    numbers: i.numbers,
                    enabled: if m.enabled { "1".into() } else { String::new() },
                    ..MappingForm::default()
                }
            }
            None => MappingForm {
                context: "e164".into(),
                destination: store_node::DEFAULT_DESTINATION.into(),
                tech: "SIP".into(),
                weight: "0".into(),
                options: store_node::DEFAULT_OPTIONS.into(),
                enabled: "1".into(),
                ..MappingForm::default()
            },
        },
    };
    // The lookup first: its answer shows in the cache below.
    let mut lookup_note = String::new();
    let mut answers = None;
    let number = query.number.trim().to_owned();
    if !number.is_empty() {
        let context = match query.context.trim() {
            "" => state
                .dundi
                .as_ref()
                .map_or_else(|| "e164".to_owned(), |d| d.context()),
            c => c.to_owned(),
        };
        if number.len() > 64
            || !number
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'#' || b == b'*')
            || context.len() > 64
        {
            lookup_note = "Number: digits only (E.164 without +, e.g. 4930123456), at most 64; context: at most 64 characters.".to_owned();
        } else if let Some(d) = &state.dundi {
            let started = Instant::now();
            match d
                .handle
                .lookup_full(&number, &context, LOOKUP_WAIT, !query.bypass.is_empty())
                .await
            {
                Some(r) => {
                    lookup_note = format!(
                        "{} answer(s) for {number} in {context} after {} ms; {} peer(s) asked{}.",
                        r.answers.len(),
                        started.elapsed().as_millis(),
                        r.asked,
                        if r.from_cache { ", from the cache" } else { "" }
                    );
                    for (eid, code, text) in &r.causes {
                        lookup_note.push_str(&format!(" {eid} said: {text} (cause {code})."));
                    }
                    answers = Some(
                        r.answers
                            .iter()
                            .map(|a| AnswerView {
                                destination: a.destination.clone(),
                                tech: a.tech().to_owned(),
                                weight: a.weight,
                                eid: a.eid.to_string(),
                                via: a.via.to_string(),
                                exists: a.exists(),
                                expiration: a.expiration,
                            })
                            .collect(),
                    );
                }
                None if !is_running => lookup_note = "DUNDi is off: turn it on above.".to_owned(),
                None => lookup_note = "The DUNDi service did not answer.".to_owned(),
            }
        } else {
            lookup_note = "DUNDi does not run in this process.".to_owned();
        }
    }
    let cache = match &state.dundi {
        Some(d) if is_running => {
            let now = Instant::now();
            let entries = tokio::time::timeout(Duration::from_secs(1), d.handle.cache())
                .await
                .unwrap_or_default();
            Some(
                entries
                    .into_iter()
                    .map(|e| CacheView {
                        answers: if e.answers.is_empty() {
                            "no answer".to_owned()
                        } else {
                            e.answers
                                .iter()
                                .map(|a| format!("{}/{}", a.tech(), a.destination))
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                        number: e.number,
                        context: e.context,
                        expires_in: e.expires.saturating_duration_since(now).as_secs(),
                    })
                    .collect(),
            )
        }
        _ => None,
    };
    let form = match form {
        Some(f) => f,
        None => match rows
            .iter()
            .find(|r| r.eid.to_string() == query.edit.trim().to_lowercase())
        {
            Some(r) => {
                let i = r.input();
                PeerForm {
                    existing: "1".into(),
                    eid: i.eid,
                    address: i.address,
                    model: i.model,
                    order: i.order,
                    include: i.include,
                    permit: i.permit,
                    qualify: i.qualify,
                    enabled: if r.enabled { "1".into() } else { String::new() },
                    ..PeerForm::default()
                }
            }
            None => PeerForm {
                model: "symmetric".into(),
                include: "e164".into(),
                permit: "e164".into(),
                qualify: "60".into(),
                enabled: "1".into(),
                ..PeerForm::default()
            },
        },
    };
    let form_key = if form.existing.is_empty() {
        String::new()
    } else {
        let eid = form.eid.trim().to_lowercase();
        key_text(
            rows.iter()
                .find(|r| r.eid.to_string() == eid)
                .and_then(|r| r.key.as_deref()),
        )
    };
    let page = DundiPage {
        csrf: session.csrf.clone(),
        admin: session.admin,
        session: Some(session),
        ours: ours(state),
        peers,
        mappings,
        settings,
        running: is_running,
        mapping_form,
        cache,
        query,
        answers,
        lookup_note,
        form,
        form_key,
        error,
    };
    Ok((status, page).into_response())
}

/// `GET /dundi[?number=N&context=C]`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(q): Query<DundiQuery>,
) -> Result<Response, PageError> {
    render(&state, session, q, None, None, None, StatusCode::OK).await
}

/// `GET /dundi/key.pub`: our public key, as the file to copy into the peer's key directory.
pub async fn public_key(State(state): State<WebState>) -> Response {
    match ours(&state) {
        Some(Ours {
            public_pem: Some(pem),
            key_name,
            ..
        }) => (
            [
                (header::CONTENT_TYPE, "application/x-pem-file".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{key_name}.pub\""),
                ),
            ],
            pem,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "DUNDi does not run or has no key.\n").into_response(),
    }
}

async fn refused(
    state: &WebState,
    session: Session,
    form: Option<PeerForm>,
    message: String,
) -> Result<Response, PageError> {
    refused_with(state, session, form, None, message).await
}

async fn refused_with(
    state: &WebState,
    session: Session,
    form: Option<PeerForm>,
    mapping_form: Option<MappingForm>,
    message: String,
) -> Result<Response, PageError> {
    render(
        state,
        session,
        DundiQuery::default(),
        form,
        mapping_form,
        Some(message),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await
}

/// After a stored change: apply it, then back to the page (or say why it is not in use).
async fn applied(state: &WebState, session: Session) -> Result<Response, PageError> {
    match apply(state).await {
        Ok(()) => Ok(Redirect::to("/dundi").into_response()),
        Err(e) => {
            tracing::error!("DUNDi peers not applied: {e}");
            refused(
                state,
                session,
                None,
                format!("Saved, but DUNDi could not apply it: {e}."),
            )
            .await
        }
    }
}

/// `POST /dundi/peer/save`: adds a peer or changes one added here; applied at once.
pub async fn save(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<PeerForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let new = form.existing.is_empty();
    let drop_key = !form.drop_key.is_empty();
    let result = match form.input().check(!form.enabled.is_empty()) {
        Err(e) => Err(ChangeError::Field(e)),
        Ok(row) => {
            let file = file_eids(&state);
            let ours = state.dundi.as_ref().map(|d| d.handle.eid());
            state
                .with_db(move |db| Ok(store_dundi::save(&db.conn, row, new, drop_key, &file, ours)))
                .await?
        }
    };
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, peer = %form.eid.trim(), new, "DUNDi peer saved");
            applied(&state, session).await
        }
        Err(ChangeError::Store(e)) => {
            tracing::error!("DUNDi peer change: {e}");
            Err(PageError::Task)
        }
        Err(e) => refused(&state, session, Some(form), change_message(&e)).await,
    }
}

fn parse_eid(text: &str) -> Result<Eid, ChangeError> {
    text.trim()
        .parse()
        .map_err(|_| ChangeError::Unknown(text.trim().to_owned()))
}

/// `POST /dundi/peer/toggle`: enables or disables a peer added here.
pub async fn toggle(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<EidForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let result = match parse_eid(&form.eid) {
        Err(e) => Err(e),
        Ok(eid) => {
            state
                .with_db(move |db| {
                    Ok(match store_dundi::get(&db.conn, eid) {
                        Ok(Some(r)) => store_dundi::set_enabled(&db.conn, eid, !r.enabled),
                        Ok(None) => Err(ChangeError::Unknown(eid.to_string())),
                        Err(e) => Err(e.into()),
                    })
                })
                .await?
        }
    };
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, peer = %form.eid.trim(), "DUNDi peer enabled/disabled");
            applied(&state, session).await
        }
        Err(e) => refused(&state, session, None, change_message(&e)).await,
    }
}

/// `POST /dundi/peer/delete`: deletes a peer added here.
pub async fn delete(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<EidForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let result = match parse_eid(&form.eid) {
        Err(e) => Err(e),
        Ok(eid) => {
            state
                .with_db(move |db| Ok(store_dundi::delete(&db.conn, eid)))
                .await?
        }
    };
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, peer = %form.eid.trim(), "DUNDi peer deleted");
            applied(&state, session).await
        }
        Err(e) => refused(&state, session, None, change_message(&e)).await,
    }
}

/// `POST /dundi/node`: the node settings (DUNDi on or off, listen address, EID, times, contact
/// record); a key the configuration file sets cannot be changed here. Applied at once: turning
/// it on starts the node, off stops it, a new listen address or EID rebinds it.
pub async fn node_save(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(mut form): Form<std::collections::BTreeMap<String, String>>,
) -> Result<Response, PageError> {
    let csrf = form.remove("csrf").unwrap_or_default();
    if !csrf_ok(&session, &csrf) {
        return Ok(csrf_refused());
    }
    let file_keys = state
        .dundi
        .as_ref()
        .map(|d| d.file_config().file_keys.clone())
        .unwrap_or_default();
    let checked = match store_node::check_node(&form, &file_keys) {
        Ok(c) => c,
        Err(e) => {
            let (label, _) = setting_label(&e.field);
            return refused(&state, session, None, format!("{label}: {}.", e.message)).await;
        }
    };
    state
        .with_db(move |db| store_node::save_node(&db.conn, &checked).map_err(PageError::from))
        .await?;
    tracing::info!(user = %session.username, "DUNDi node settings saved");
    applied(&state, session).await
}

/// `POST /dundi/mapping/save`: adds a mapping or changes one added here; used from the next
/// query of a peer.
pub async fn mapping_save(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<MappingForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let id = match form.id.trim() {
        "" => 0,
        i => match i.parse::<i64>() {
            Ok(n) if n > 0 => n,
            _ => {
                return refused_with(&state, session, None, Some(form), "Unknown mapping.".into())
                    .await
            }
        },
    };
    let mut row: MappingRow = match form.input().check(!form.enabled.is_empty()) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("{}: {}.", mapping_label(&e.field), e.message);
            return refused_with(&state, session, None, Some(form), message).await;
        }
    };
    row.id = id;
    let result = state
        .with_db(move |db| Ok(store_node::save_mapping(&db.conn, &row)))
        .await?;
    match result {
        Ok(id) => {
            tracing::info!(user = %session.username, mapping = id, "DUNDi mapping saved");
            applied(&state, session).await
        }
        Err(ChangeError::Store(e)) => {
            tracing::error!("DUNDi mapping change: {e}");
            Err(PageError::Task)
        }
        Err(e) => refused_with(&state, session, None, Some(form), change_message(&e)).await,
    }
}

/// `POST /dundi/mapping/delete`: deletes a mapping added here.
pub async fn mapping_delete(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<IdForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let Ok(id) = form.id.trim().parse::<i64>() else {
        return refused(&state, session, None, "Unknown mapping.".into()).await;
    };
    let result = state
        .with_db(move |db| Ok(store_node::delete_mapping(&db.conn, id)))
        .await?;
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, mapping = id, "DUNDi mapping deleted");
            applied(&state, session).await
        }
        Err(e) => refused(&state, session, None, change_message(&e)).await,
    }
}

/// `POST /dundi/flush-cache`: forgets every cached DUNDi answer.
pub async fn flush_cache(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&session, &form.csrf) {
        return csrf_refused();
    }
    if let Some(d) = &state.dundi {
        d.handle.flush_cache().await;
        tracing::info!(user = %session.username, "DUNDi cache flushed from the dashboard");
    }
    Redirect::to("/dundi").into_response()
}

/// `GET /static/dundi.js`: reads an uploaded key file into the key box.
pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../../web/dundi.js"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_field() {
        let f = PeerForm {
            eid: "nope".into(),
            address: "127.0.0.2".into(),
            ..PeerForm::default()
        };
        let e = ChangeError::Field(f.input().check(true).unwrap_err());
        assert!(
            change_message(&e).starts_with("EID: "),
            "{}",
            change_message(&e)
        );
        assert_eq!(
            key_name("02:00:00:00:00:01".parse().unwrap()),
            "pasarela-020000000001"
        );
        assert_eq!(key_text(None), "not encrypted");
    }
}
