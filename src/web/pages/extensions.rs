//! The extensions page `/extensions`: every SIP account, and forms to add or edit one, set its
//! password, DID and call permissions, or disable it. Rows written here have source `web`;
//! rows with source `config` belong to the configuration file (re-synchronised at every start)
//! and are shown read-only. The running SIP side reads extensions when it starts, so changes
//! take effect at the next restart (the page says so).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, url_encode, PageError, WebState};
use crate::routing::Permissions;
use crate::store::web_extensions;
use crate::web::auth::Session;

/// Which extension to load into the form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExtQuery {
    pub edit: String,
}

/// The extension form, as typed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ExtForm {
    pub csrf: String,
    pub number: String,
    pub name: String,
    pub did: String,
    /// Comma-separated permissions; empty for the numbering plan's default.
    pub permissions: String,
    /// Empty keeps the current password of an existing extension.
    pub password: String,
    pub enabled: String,
    /// Set when the form edits an existing extension.
    pub existing: String,
    /// Set by the page's form: the permissions come from the checkboxes below, not from
    /// [`ExtForm::permissions`].
    pub perm_boxes: String,
    /// Checkbox: the numbering plan's default permissions.
    pub perm_default: String,
    pub perm_internal: String,
    pub perm_national: String,
    pub perm_mobile: String,
    pub perm_international: String,
    pub perm_premium: String,
}

impl ExtForm {
    /// Whether checkbox `name` (a permission, or `default`) is ticked in the form as shown.
    pub fn ticked(&self, name: &str) -> bool {
        let boxes = [
            ("default", &self.perm_default),
            ("internal", &self.perm_internal),
            ("national", &self.perm_national),
            ("mobile", &self.perm_mobile),
            ("international", &self.perm_international),
            ("premium", &self.perm_premium),
        ];
        if !self.perm_boxes.is_empty() {
            return boxes.iter().any(|(n, v)| *n == name && !v.is_empty());
        }
        let text = self.permissions.trim();
        if name == "default" {
            return text.is_empty();
        }
        text.split(',')
            .map(str::trim)
            .any(|p| p.eq_ignore_ascii_case(name) || p.eq_ignore_ascii_case("all"))
    }

    /// The permissions as typed (the text field) or ticked (the checkboxes): empty for the
    /// numbering plan's default.
    fn permission_text(&self) -> String {
        if self.perm_boxes.is_empty() {
            return self.permissions.trim().to_owned();
        }
        if !self.perm_default.is_empty() {
            return String::new();
        }
        let ticked: Vec<&str> = ["internal", "national", "mobile", "international", "premium"]
            .into_iter()
            .filter(|n| self.ticked(n))
            .collect();
        if ticked.is_empty() {
            "none".into()
        } else {
            ticked.join(",")
        }
    }
}

/// `POST /extensions/delete`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeleteForm {
    pub csrf: String,
    pub number: String,
}

/// The enable/disable form.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ToggleForm {
    pub csrf: String,
    pub number: String,
}

pub struct ExtView {
    pub number: String,
    pub name: String,
    pub did: String,
    pub permissions: String,
    pub enabled: bool,
    pub from_web: bool,
    pub edit: String,
    pub phone: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "extensions.html")]
struct ExtensionsPage {
    session: Option<Session>,
    csrf: String,
    rows: Vec<ExtView>,
    form: ExtForm,
    error: Option<String>,
}

async fn render(
    state: &WebState,
    session: Session,
    edit: String,
    form: Option<ExtForm>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let rows = state
        .with_read(|conn| Ok(crate::store::web_extensions::list(conn)?))
        .await?;
    let form =
        form.unwrap_or_else(
            || match rows.iter().find(|r| r.0 == edit.trim() && r.5 == "web") {
                Some(r) => ExtForm {
                    number: r.0.clone(),
                    name: r.1.clone(),
                    did: r.2.clone(),
                    permissions: r.3.clone(),
                    enabled: if r.4 { "1".into() } else { String::new() },
                    existing: "1".into(),
                    ..ExtForm::default()
                },
                None => ExtForm {
                    enabled: "1".into(),
                    ..ExtForm::default()
                },
            },
        );
    let page = ExtensionsPage {
        csrf: session.csrf.clone(),
        session: Some(session),
        rows: rows
            .into_iter()
            .map(|r| ExtView {
                edit: format!("/extensions?edit={}", url_encode(&r.0)),
                phone: format!("/extensions/phone?number={}", url_encode(&r.0)),
                number: r.0,
                name: r.1,
                did: r.2,
                permissions: if r.3.is_empty() {
                    "default".into()
                } else {
                    r.3
                },
                enabled: r.4,
                from_web: r.5 == "web",
            })
            .collect(),
        form,
        error,
    };
    Ok((status, page).into_response())
}

/// `GET /extensions`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(q): Query<ExtQuery>,
) -> Result<Response, PageError> {
    render(&state, session, q.edit, None, None, StatusCode::OK).await
}

/// The checked values of a form: number, name, DID, permissions, password.
type Checked = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn check(
    f: &ExtForm,
    plan: Option<&crate::routing::numbering::NumberingPlan>,
) -> Result<Checked, String> {
    let number = f.number.trim().to_owned();
    if number.is_empty() || number.len() > 15 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err("Number: enter 1 to 15 digits.".into());
    }
    let did = normalise_did(f.did.trim(), plan)?;
    let perms_text = f.permission_text();
    let perms = perms_text.as_str();
    let permissions = if perms.is_empty() {
        None
    } else {
        let parsed = Permissions::parse(perms.split(',').map(str::trim))
            .map_err(|e| format!("Permissions: {e}"))?;
        Some(parsed.to_string())
    };
    let password = f.password.trim_end_matches(['\r', '\n']).to_owned();
    let password = if password.is_empty() {
        if f.existing.is_empty() {
            return Err("Password: a new extension needs a SIP password.".into());
        }
        None
    } else if let Err(weak) = crate::security::password::check(&password, f.number.trim()) {
        return Err(format!("Password: it {weak}."));
    } else {
        Some(password)
    };
    let opt = |s: String| (!s.is_empty()).then_some(s);
    Ok((
        number,
        opt(f.name.trim().to_owned()),
        opt(did),
        permissions,
        password,
    ))
}

/// A DID as typed, stored as E.164: national, international (with the international prefix)
/// and `+` forms are read with the numbering plan, as the dialler reads them. Without a plan
/// (no running gateway) digits with an optional `+` are kept as typed.
pub fn normalise_did(
    typed: &str,
    plan: Option<&crate::routing::numbering::NumberingPlan>,
) -> Result<String, String> {
    if typed.is_empty() {
        return Ok(String::new());
    }
    let Some(plan) = plan else {
        if typed
            .trim_start_matches('+')
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            return Ok(typed.to_owned());
        }
        return Err("DID: enter a phone number (digits, optionally starting with +).".into());
    };
    match plan.classify(typed, |_| false) {
        Ok(crate::routing::numbering::Dialled::E164(n)) => Ok(n.to_string()),
        Ok(other) => Err(format!(
            "DID: {typed} is {other}, not a phone number of the public network."
        )),
        Err(e) => Err(format!(
            "DID: {typed} is not a phone number ({e}); enter it as you would dial it, e.g. national or +E.164."
        )),
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// `POST /extensions/save`: adds an extension or changes one managed from the web.
pub async fn save(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<ExtForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let plan = state.router.as_ref().map(|r| r.plan());
    let error = match check(&form, plan.as_ref()) {
        Err(e) => Some(e),
        Ok((number, name, did, permissions, password)) => {
            let enabled = !form.enabled.is_empty();
            let is_new = form.existing.is_empty();
            // Only the digest hashes are kept; the clear password ends here.
            let ext = web_extensions::WebExtension {
                ha1: password.map(|p| crate::store::digest_ha1(&number, &state.realm, &p)),
                realm: state.realm.to_string(),
                number,
                name,
                did,
                enabled,
                permissions,
            };
            state
                .with_db(move |db| {
                    let number = &ext.number;
                    let source = web_extensions::source(&db.conn, number)?;
                    match (source.as_deref(), is_new) {
                        (Some("web"), false) => {}
                        (Some("web"), true) => {
                            return Ok(Some(format!("Extension {number} already exists.")))
                        }
                        (Some(_), _) => {
                            return Ok(Some(format!(
                                "Extension {number} is managed by the configuration file."
                            )))
                        }
                        (None, false) => {
                            return Ok(Some(format!("Extension {number} does not exist.")))
                        }
                        (None, true) => {}
                    }
                    if is_new {
                        web_extensions::insert(&db.conn, &ext, now_unix())?;
                    } else {
                        web_extensions::update(&db.conn, &ext, now_unix())?;
                    }
                    Ok(None)
                })
                .await?
        }
    };
    match error {
        None => {
            tracing::info!(user = %session.username, number = %form.number, "extension saved");
            state.extensions_changed.notify_one();
            Ok(Redirect::to("/extensions").into_response())
        }
        Some(e) => {
            let mut form = form;
            form.password.clear();
            render(
                &state,
                session,
                String::new(),
                Some(form),
                Some(e),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

/// `POST /extensions/toggle`: enables or disables an extension managed from the web.
pub async fn toggle(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<ToggleForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let number = form.number.clone();
    let changed = state
        .with_db(move |db| Ok(web_extensions::toggle(&db.conn, &number, now_unix())?))
        .await?;
    if changed == 0 {
        return render(
            &state,
            session,
            String::new(),
            None,
            Some(format!("Extension {} cannot be changed here.", form.number)),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    tracing::info!(user = %session.username, number = %form.number, "extension enabled/disabled");
    state.extensions_changed.notify_one();
    Ok(Redirect::to("/extensions").into_response())
}

/// `POST /extensions/delete`: removes an extension managed from the web; its registrations
/// end with it (the SIP side reloads the extensions).
pub async fn delete(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let number = form.number.trim().to_owned();
    let removed = state
        .with_db(move |db| Ok(web_extensions::delete(&db.conn, &number)?))
        .await?;
    if removed == 0 {
        return render(
            &state,
            session,
            String::new(),
            None,
            Some(format!(
                "Extension {} cannot be deleted here (unknown, or managed by the configuration file).",
                form.number.trim()
            )),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    tracing::info!(user = %session.username, number = %form.number.trim(), "extension deleted");
    state.extensions_changed.notify_one();
    Ok(Redirect::to("/extensions").into_response())
}

/// Which extension's phone setup to show.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PhoneQuery {
    pub number: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "phone.html")]
struct PhonePage {
    session: Option<Session>,
    number: String,
    name: String,
    enabled: bool,
    setup: super::phone_setup::PhoneSetup,
    /// The feature codes the phone can dial (code, what it does).
    codes: Vec<(String, String)>,
}

/// `GET /extensions/phone?number=N`: what to enter in a phone for extension N.
pub async fn phone(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    headers: axum::http::HeaderMap,
    Query(q): Query<PhoneQuery>,
) -> Result<Response, PageError> {
    let number = q.number.trim().to_owned();
    let lookup = number.clone();
    let found: Option<(String, bool)> = state
        .with_read(move |conn| Ok(web_extensions::name_and_enabled(conn, &lookup)?))
        .await?;
    let Some((name, enabled)) = found else {
        return Ok((StatusCode::NOT_FOUND, "404: no such extension\n").into_response());
    };
    // The host the admin reached the dashboard by is the best guess of the office's address
    // when SIP listens on every interface.
    let seen_host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(super::phone_setup::host_of)
        .unwrap_or_default();
    let setup =
        super::phone_setup::PhoneSetup::new(&number, &state.realm, &state.sip_listen, &seen_host);
    Ok(PhonePage {
        session: Some(session),
        number,
        name,
        enabled,
        setup,
        codes: state.feature_codes.as_ref().clone(),
    }
    .into_response())
}
