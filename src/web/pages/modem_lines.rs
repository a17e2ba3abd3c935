//! GSM modem lines on the Lines page (issue 17): the form to add, edit, enable, disable or
//! delete a modem line of the dashboard ([`crate::store::modem_lines`]). The SIP side applies
//! a change at once ([`crate::web::WebState`]'s trunk change signal): a new line opens, a line
//! whose own settings changed re-opens, the other lines and their calls are not touched. Lines
//! of the configuration file are shown read-only; the file wins on a name.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::line_kind::{self, Change};
use super::line_limits::LimitForm;
use super::lines::{pstn_line_names, render_with, NameForm};
use super::{csrf_ok, csrf_refused, PageError, WebState};
use crate::store::line_rows::LineTable;
use crate::store::modem_lines::{self as store_modems, ModemSettings};
use crate::store::trunks::{FieldError, TrunkChangeError};
use crate::web::auth::Session;

/// The modem line form, as typed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ModemForm {
    pub csrf: String,
    /// Set when the form edits an existing line.
    pub existing: String,
    pub name: String,
    pub imei: String,
    pub iccid: String,
    pub data_port: String,
    pub audio_port: String,
    /// Extension numbers separated by commas or spaces, or one ring group's name.
    pub incoming: String,
    pub gain_to_modem_db: String,
    pub gain_from_modem_db: String,
    pub probe_interval_secs: String,
    pub enabled: String,
    /// The line's limits.
    #[serde(flatten)]
    pub limits: LimitForm,
}

impl ModemForm {
    /// The form of a stored line.
    pub fn of(row: &store_modems::ModemRow) -> ModemForm {
        let s = &row.settings;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let num = |v: Option<f32>| v.map(|n| n.to_string()).unwrap_or_default();
        ModemForm {
            existing: "1".into(),
            name: row.name.clone(),
            imei: text(&s.imei),
            iccid: text(&s.iccid),
            data_port: text(&s.data_port),
            audio_port: text(&s.audio_port),
            incoming: s.incoming.join(", "),
            gain_to_modem_db: num(s.gain_to_modem_db),
            gain_from_modem_db: num(s.gain_from_modem_db),
            probe_interval_secs: s
                .probe_interval_secs
                .map(|n| n.to_string())
                .unwrap_or_default(),
            enabled: if row.enabled {
                "1".into()
            } else {
                String::new()
            },
            limits: LimitForm::of(&s.limits),
            ..ModemForm::default()
        }
    }

    /// The settings the form asks for; a number field that is not a number names itself.
    pub fn settings(&self) -> Result<ModemSettings, FieldError> {
        let opt = |v: &str| {
            let v = v.trim();
            (!v.is_empty()).then(|| v.to_owned())
        };
        let db = |field: &str, v: &str| -> Result<Option<f32>, FieldError> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse::<f32>()
                .ok()
                .filter(|g| g.is_finite())
                .map(Some)
                .ok_or_else(|| FieldError {
                    field: field.to_owned(),
                    message: format!("`{v}` is not a number of decibels"),
                })
        };
        let probe = match self.probe_interval_secs.trim() {
            "" => None,
            v => Some(v.parse::<u64>().map_err(|_| FieldError {
                field: "probe_interval_secs".into(),
                message: format!("`{v}` is not a whole number of seconds"),
            })?),
        };
        Ok(ModemSettings {
            profile: None,
            imei: opt(&self.imei),
            iccid: opt(&self.iccid),
            data_port: opt(&self.data_port),
            audio_port: opt(&self.audio_port),
            incoming: self
                .incoming
                .split([',', ' ', '\n', '\r', '\t'])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            gain_to_modem_db: db("gain_to_modem_db", &self.gain_to_modem_db)?,
            gain_from_modem_db: db("gain_from_modem_db", &self.gain_from_modem_db)?,
            probe_interval_secs: probe,
            limits: self.limits.limits()?,
        })
    }
}

/// The label of a modem form field in messages.
pub fn field_label(field: &str) -> &'static str {
    match field {
        "name" => "Name",
        "imei" => "IMEI",
        "iccid" => "ICCID",
        "data_port" => "Data (AT) port",
        "audio_port" => "Audio port",
        "incoming" => "Incoming calls ring",
        "gain_to_modem_db" => "Gain towards the network",
        "gain_from_modem_db" => "Gain from the network",
        "probe_interval_secs" => "Health probe every",
        "profile" => "Modem profile",
        other => crate::store::line_limits::label(other).unwrap_or("Settings"),
    }
}

/// A refused change as the page says it: the field first.
pub fn change_message(e: &TrunkChangeError) -> String {
    match e {
        TrunkChangeError::Field(f) => format!("{}: {}.", field_label(&f.field), f.message),
        other => format!("{other}."),
    }
}

async fn refused(
    state: &WebState,
    session: Session,
    form: Option<ModemForm>,
    e: &TrunkChangeError,
) -> Result<Response, PageError> {
    if let TrunkChangeError::Store(s) = e {
        tracing::error!("modem line change: {s}");
        return Err(PageError::Task);
    }
    render_with(state, session, None, form, Some(change_message(e))).await
}

/// `POST /lines/modem/save`: adds a modem line or changes one added here.
pub async fn save(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<ModemForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let name = form.name.trim().to_owned();
    let enabled = !form.enabled.is_empty();
    let new = form.existing.is_empty();
    let running = pstn_line_names(&state).await;
    let result = match form.settings() {
        Err(e) => Err(TrunkChangeError::Field(e)),
        Ok(settings) => {
            let n = name.clone();
            state
                .with_db(move |db| {
                    // The file's lines: running ones that are not the dashboard's.
                    let file = super::fxo_lines::file_lines(&db.conn, running);
                    Ok(store_modems::save_web(
                        &mut db.conn,
                        &n,
                        enabled,
                        settings,
                        new,
                        &file,
                    ))
                })
                .await?
        }
    };
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, line = %name, new, "modem line saved");
            state.trunks_changed.notify_one();
            Ok(Redirect::to("/lines").into_response())
        }
        Err(e) => refused(&state, session, Some(form), &e).await,
    }
}

/// `POST /lines/modem/toggle`: enables or disables a modem line added here.
pub async fn toggle(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<NameForm>,
) -> Result<Response, PageError> {
    line_kind::change(state, session, form, LineTable::Modem, Change::Toggle).await
}

/// `POST /lines/modem/delete`: deletes a modem line added here (the line closes).
pub async fn delete(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<NameForm>,
) -> Result<Response, PageError> {
    line_kind::change(state, session, form, LineTable::Modem, Change::Delete).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_become_settings_and_bad_numbers_name_their_field() {
        let f = ModemForm {
            name: "gsm2".into(),
            imei: " 353142034567892 ".into(),
            incoming: "101, 102".into(),
            gain_from_modem_db: "-3".into(),
            ..ModemForm::default()
        };
        let s = f.settings().unwrap();
        assert_eq!(s.imei.as_deref(), Some("353142034567892"));
        assert_eq!(s.incoming, ["101", "102"]);
        assert_eq!(s.gain_from_modem_db, Some(-3.0));
        assert!(s.check("gsm2", true).is_ok());
        let bad = ModemForm {
            gain_to_modem_db: "loud".into(),
            ..f
        };
        let e = bad.settings().unwrap_err();
        assert_eq!(e.field, "gain_to_modem_db");
        assert!(
            change_message(&TrunkChangeError::Field(e)).starts_with("Gain towards the network: ")
        );
    }
}
