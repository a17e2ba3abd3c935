//! The call forwarding page of an extension, `/extensions/forwarding?number=N`: its forwards
//! (always, busy, no answer, unreachable) and the order its phones ring in
//! ([`crate::routing::forwarding::CallHandling`], stored by [`crate::store::forwards`]).
//! Extensions from the configuration file can be changed here too (the file only seeds these
//! settings). A save makes the SIP side reload them at once.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, url_encode, PageError, WebState};
use crate::routing::forwarding::{valid_destination, CallHandling};
use crate::web::auth::Session;

/// `?number=N[&saved=1]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ForwardQuery {
    pub number: String,
    pub saved: String,
}

/// The form, as typed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ForwardForm {
    pub csrf: String,
    pub number: String,
    pub always: String,
    pub busy: String,
    pub no_answer: String,
    pub no_answer_secs: String,
    pub unreachable: String,
    pub ring_order: String,
    pub ring_secs: String,
}

impl ForwardForm {
    fn of(number: &str, h: &CallHandling) -> ForwardForm {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        ForwardForm {
            csrf: String::new(),
            number: number.to_owned(),
            always: text(&h.always),
            busy: text(&h.busy),
            no_answer: text(&h.no_answer),
            no_answer_secs: h.no_answer_secs.to_string(),
            unreachable: text(&h.unreachable),
            ring_order: h.ring_order().to_owned(),
            ring_secs: h.ring_secs.to_string(),
        }
    }

    /// The settings, or what is wrong with them.
    fn check(&self) -> Result<CallHandling, String> {
        let number = self.number.trim();
        let dest = |what: &str, v: &str| -> Result<Option<String>, String> {
            let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            if v.is_empty() {
                return Ok(None);
            }
            if !valid_destination(&v) {
                return Err(format!(
                    "{what}: `{v}` is not an extension or a number (+ and digits)."
                ));
            }
            if v == number {
                return Err(format!("{what}: an extension cannot forward to itself."));
            }
            Ok(Some(v))
        };
        let secs = |what: &str, v: &str| -> Result<u32, String> {
            match v.trim().parse::<u32>() {
                Ok(s) if (1..=600).contains(&s) => Ok(s),
                _ => Err(format!("{what}: 1 to 600 seconds.")),
            }
        };
        Ok(CallHandling {
            always: dest("Forward every call", &self.always)?,
            busy: dest("When busy", &self.busy)?,
            no_answer: dest("On no answer", &self.no_answer)?,
            no_answer_secs: secs("No answer after", &self.no_answer_secs)?,
            unreachable: dest("When unreachable", &self.unreachable)?,
            sequential: self.ring_order == "sequential",
            ring_secs: secs("Each phone's turn", &self.ring_secs)?,
        })
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "forwarding.html")]
struct ForwardingPage {
    session: Option<Session>,
    csrf: String,
    number: String,
    name: String,
    form: ForwardForm,
    error: Option<String>,
    saved: bool,
}

/// The extension's name and its call handling; `None` when there is no such extension.
async fn load(state: &WebState, number: &str) -> Result<Option<(String, CallHandling)>, PageError> {
    let number = number.to_owned();
    state
        .with_read(move |conn| {
            let found = crate::store::web_extensions::name_and_enabled(conn, &number)?;
            Ok(match found {
                Some((name, _)) => Some((name, crate::store::forwards::get(conn, &number)?)),
                None => None,
            })
        })
        .await
}

/// `GET /extensions/forwarding?number=N`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(q): Query<ForwardQuery>,
) -> Result<Response, PageError> {
    let number = q.number.trim().to_owned();
    let Some((name, h)) = load(&state, &number).await? else {
        return Ok((StatusCode::NOT_FOUND, "404: no such extension\n").into_response());
    };
    Ok(ForwardingPage {
        csrf: session.csrf.clone(),
        session: Some(session),
        form: ForwardForm::of(&number, &h),
        number,
        name,
        error: None,
        saved: !q.saved.is_empty(),
    }
    .into_response())
}

/// `POST /extensions/forwarding`.
pub async fn save(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<ForwardForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let number = form.number.trim().to_owned();
    let Some((name, _)) = load(&state, &number).await? else {
        return Ok((StatusCode::NOT_FOUND, "404: no such extension\n").into_response());
    };
    let h = match form.check() {
        Ok(h) => h,
        Err(e) => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                ForwardingPage {
                    csrf: session.csrf.clone(),
                    session: Some(session),
                    form,
                    number,
                    name,
                    error: Some(e),
                    saved: false,
                },
            )
                .into_response())
        }
    };
    let key = number.clone();
    state
        .with_db(move |db| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
                .unwrap_or(0);
            Ok(crate::store::forwards::set(&db.conn, &key, &h, now)?)
        })
        .await?;
    tracing::info!(user = %session.username, %number, "call forwarding saved");
    state.extensions_changed.notify_one();
    Ok(Redirect::to(&format!(
        "/extensions/forwarding?number={}&saved=1",
        url_encode(&number)
    ))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_checks() {
        let mut f = ForwardForm::of("101", &CallHandling::default());
        assert_eq!(f.check(), Ok(CallHandling::default()));
        f.busy = " 103 ".into();
        f.ring_order = "sequential".into();
        let h = f.check().unwrap();
        assert_eq!(h.busy.as_deref(), Some("103"));
        assert!(h.sequential);
        f.always = "101".into();
        assert!(f.check().unwrap_err().contains("itself"));
        f.always = "abc".into();
        assert!(f.check().is_err());
        f.always.clear();
        f.no_answer_secs = "0".into();
        assert!(f.check().is_err());
    }
}
