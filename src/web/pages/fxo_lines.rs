//! Analog (FXO) lines of a telephony card on the Lines page (issue 17): the form to add, edit,
//! enable, disable or delete an FXO line of the dashboard ([`crate::store::fxo_lines`]). The
//! SIP side applies a change at once ([`crate::web::WebState`]'s trunk change signal): a new
//! line opens its channel, a line whose own settings changed re-opens, the other lines and
//! their calls are not touched. Lines of the configuration file are shown read-only; the file
//! wins on a name.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::line_kind::{self, Change};
use super::line_limits::LimitForm;
use super::lines::{pstn_line_names, render_fxo_refused, NameForm};
use super::{csrf_ok, csrf_refused, PageError, WebState};
use crate::store::fxo_lines::{self as store_fxo, FxoLineSettings};
use crate::store::line_rows::LineTable;
use crate::store::trunks::{FieldError, TrunkChangeError};
use crate::web::auth::Session;

/// The FXO line form, as typed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FxoForm {
    pub csrf: String,
    /// Set when the form edits an existing line.
    pub existing: String,
    pub name: String,
    pub channel: String,
    pub country: String,
    pub caller_id: String,
    pub answer: String,
    /// Disconnect signals separated by commas or spaces (battery, polarity, tone, silence).
    pub disconnect: String,
    pub silence_secs: String,
    pub dial_tone_secs: String,
    pub rx_gain_db: String,
    pub tx_gain_db: String,
    pub echo_cancel: String,
    /// Extension numbers separated by commas or spaces, or one ring group's name.
    pub incoming: String,
    pub enabled: String,
    /// The line's limits.
    #[serde(flatten)]
    pub limits: LimitForm,
}

fn words(v: &str) -> Vec<String> {
    v.split([',', ' ', '\n', '\r', '\t'])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A serde-named choice (`"auto"`, `"polarity"`) as its text.
fn choice_text<T: serde::Serialize>(v: &Option<T>) -> String {
    v.as_ref()
        .and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A choice typed as its serde name (`"v23"`), `None` when empty.
fn choice<T: serde::de::DeserializeOwned>(
    field: &str,
    v: &str,
    known: &str,
) -> Result<Option<T>, FieldError> {
    match v.trim() {
        "" => Ok(None),
        v => serde_json::from_value(serde_json::Value::String(v.to_owned()))
            .map(Some)
            .map_err(|_| FieldError {
                field: field.to_owned(),
                message: format!("`{v}` is not one of {known}"),
            }),
    }
}

impl FxoForm {
    /// A new line's form: enabled, the file's defaults shown.
    pub fn blank() -> FxoForm {
        FxoForm {
            enabled: "1".into(),
            country: "DE".into(),
            caller_id: "auto".into(),
            answer: "voice".into(),
            ..FxoForm::default()
        }
    }

    /// The form of a stored line.
    pub fn of(row: &store_fxo::FxoRow) -> FxoForm {
        let s = &row.settings;
        let num = |v: Option<f32>| v.map(|n| n.to_string()).unwrap_or_default();
        let int = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
        FxoForm {
            existing: "1".into(),
            name: row.name.clone(),
            channel: s.channel.clone(),
            country: s.country.clone().unwrap_or_else(|| "DE".into()),
            caller_id: match choice_text(&s.caller_id) {
                c if c.is_empty() => "auto".into(),
                c => c,
            },
            answer: match choice_text(&s.answer) {
                a if a.is_empty() => "voice".into(),
                a => a,
            },
            disconnect: s.disconnect.clone().unwrap_or_default().join(", "),
            silence_secs: int(s.silence_secs),
            dial_tone_secs: int(s.dial_tone_secs),
            rx_gain_db: num(s.rx_gain_db),
            tx_gain_db: num(s.tx_gain_db),
            echo_cancel: s.echo_cancel.map(|n| n.to_string()).unwrap_or_default(),
            incoming: s.incoming.join(", "),
            enabled: if row.enabled {
                "1".into()
            } else {
                String::new()
            },
            limits: LimitForm::of(&s.limits),
            ..FxoForm::default()
        }
    }

    /// The settings the form asks for; a field that is not what it should be names itself.
    pub fn settings(&self) -> Result<FxoLineSettings, FieldError> {
        let opt = |v: &str| {
            let v = v.trim();
            (!v.is_empty()).then(|| v.to_owned())
        };
        let db = |field: &str, v: &str| -> Result<Option<f32>, FieldError> {
            match v.trim() {
                "" => Ok(None),
                v => v
                    .parse::<f32>()
                    .ok()
                    .filter(|g| g.is_finite())
                    .map(Some)
                    .ok_or_else(|| FieldError {
                        field: field.to_owned(),
                        message: format!("`{v}` is not a number of decibels"),
                    }),
            }
        };
        let whole = |field: &str, v: &str, what: &str| -> Result<Option<u32>, FieldError> {
            match v.trim() {
                "" => Ok(None),
                v => v.parse().map(Some).map_err(|_| FieldError {
                    field: field.to_owned(),
                    message: format!("`{v}` is not a whole number{what}"),
                }),
            }
        };
        let disconnect = words(&self.disconnect);
        Ok(FxoLineSettings {
            channel: self.channel.trim().to_owned(),
            country: opt(&self.country).map(|c| c.to_ascii_uppercase()),
            caller_id: choice(
                "caller_id",
                &self.caller_id,
                "off, v23, bell202, dtmf, auto",
            )?,
            answer: choice("answer", &self.answer, "polarity, dialled, voice")?,
            disconnect: (!disconnect.is_empty()).then_some(disconnect),
            silence_secs: whole("silence_secs", &self.silence_secs, " of seconds")?,
            dial_tone_secs: whole("dial_tone_secs", &self.dial_tone_secs, " of seconds")?,
            rx_gain_db: db("rx_gain_db", &self.rx_gain_db)?,
            tx_gain_db: db("tx_gain_db", &self.tx_gain_db)?,
            echo_cancel: whole("echo_cancel", &self.echo_cancel, " of taps")?
                .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            incoming: words(&self.incoming),
            limits: self.limits.limits()?,
        })
    }
}

/// The label of an FXO form field in messages.
pub fn field_label(field: &str) -> &'static str {
    match field {
        "name" => "Name",
        "channel" => "Channel",
        "country" => "Country (tone plan)",
        "caller_id" => "Caller ID",
        "answer" => "Answer detection",
        "disconnect" => "Far end hung up when",
        "silence_secs" => "Silence timeout",
        "dial_tone_secs" => "Wait for dial tone",
        "rx_gain_db" => "Gain from the line",
        "tx_gain_db" => "Gain towards the line",
        "echo_cancel" => "Echo canceller",
        "incoming" => "Incoming calls ring",
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
    form: Option<FxoForm>,
    e: &TrunkChangeError,
) -> Result<Response, PageError> {
    if let TrunkChangeError::Store(s) = e {
        tracing::error!("FXO line change: {s}");
        return Err(PageError::Task);
    }
    render_fxo_refused(state, session, form, change_message(e)).await
}

/// The names of the running lines that are the file's (not this dashboard's modem or FXO
/// lines): a line added here may not take one.
pub(crate) fn file_lines(db: &rusqlite::Connection, running: Vec<String>) -> Vec<String> {
    let mut ours: Vec<String> = store_fxo::list(db)
        .map(|rows| rows.into_iter().map(|r| r.name).collect())
        .unwrap_or_default();
    ours.extend(
        crate::store::modem_lines::list(db)
            .map(|rows| rows.into_iter().map(|r| r.name).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    running.into_iter().filter(|l| !ours.contains(l)).collect()
}

/// `POST /lines/fxo/save`: adds an FXO line or changes one added here.
pub async fn save(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<FxoForm>,
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
                    let file = file_lines(&db.conn, running);
                    Ok(store_fxo::save_web(
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
            tracing::info!(user = %session.username, line = %name, new, "FXO line saved");
            state.trunks_changed.notify_one();
            Ok(Redirect::to("/lines").into_response())
        }
        Err(e) => refused(&state, session, Some(form), &e).await,
    }
}

/// `POST /lines/fxo/toggle`: enables or disables a FXO line added here.
pub async fn toggle(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<NameForm>,
) -> Result<Response, PageError> {
    line_kind::change(state, session, form, LineTable::Fxo, Change::Toggle).await
}

/// `POST /lines/fxo/delete`: deletes a FXO line added here (the line closes).
pub async fn delete(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<NameForm>,
) -> Result<Response, PageError> {
    line_kind::change(state, session, form, LineTable::Fxo, Change::Delete).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pstn::dahdi::fxo::{AnswerDetect, CidMode};

    #[test]
    fn form_fields_become_settings_and_bad_values_name_their_field() {
        let f = FxoForm {
            name: "fxo2".into(),
            channel: " 2 ".into(),
            country: "uk".into(),
            caller_id: "v23".into(),
            answer: "polarity".into(),
            disconnect: "battery, tone".into(),
            rx_gain_db: "-3".into(),
            incoming: "101, 102".into(),
            ..FxoForm::blank()
        };
        let s = f.settings().unwrap();
        assert_eq!(s.channel, "2");
        assert_eq!(s.country.as_deref(), Some("UK"));
        assert_eq!(s.caller_id, Some(CidMode::V23));
        assert_eq!(s.answer, Some(AnswerDetect::Polarity));
        assert_eq!(s.disconnect, Some(vec!["battery".into(), "tone".into()]));
        assert_eq!(s.rx_gain_db, Some(-3.0));
        assert_eq!(s.incoming, ["101", "102"]);
        let c = s.check("fxo2").unwrap();
        assert_eq!(c.settings.cid, CidMode::V23);
        // The form of the stored line shows the same.
        let back = FxoForm::of(&store_fxo::FxoRow {
            name: "fxo2".into(),
            enabled: true,
            settings: s,
        });
        assert_eq!(
            (back.caller_id.as_str(), back.answer.as_str()),
            ("v23", "polarity")
        );
        let bad = FxoForm {
            answer: "magic".into(),
            ..f.clone()
        };
        let e = bad.settings().unwrap_err();
        assert_eq!(e.field, "answer");
        let bad = FxoForm {
            tx_gain_db: "loud".into(),
            ..f
        };
        let e = bad.settings().unwrap_err();
        assert!(change_message(&TrunkChangeError::Field(e)).starts_with("Gain towards the line: "));
    }
}
