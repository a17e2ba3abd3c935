//! The call pickup page of an extension, `/extensions/pickup?number=N`: its call groups (the
//! groups its incoming calls belong to) and pickup groups (the groups whose ringing calls it
//! may take with `**NUMBER`, `*8` or a busy lamp key), as Asterisk's callgroup/pickupgroup
//! ([`crate::routing::pickup`], stored by [`crate::store::pickup`]). Extensions from the
//! configuration file can be changed here too (the file only seeds the groups). A save makes
//! the SIP side reload them at once.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::{csrf_ok, csrf_refused, url_encode, PageError, WebState};
use crate::routing::pickup::{parse_groups, PickupGroups};
use crate::web::auth::Session;

/// `?number=N[&saved=1]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PickupQuery {
    pub number: String,
    pub saved: String,
}

/// The form, as typed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PickupForm {
    pub csrf: String,
    pub number: String,
    pub call_group: String,
    pub pickup_group: String,
}

impl PickupForm {
    fn of(number: &str, g: &PickupGroups) -> PickupForm {
        PickupForm {
            csrf: String::new(),
            number: number.to_owned(),
            call_group: g.call.join(", "),
            pickup_group: g.pickup.join(", "),
        }
    }

    /// The groups, or what is wrong with them.
    fn check(&self) -> Result<PickupGroups, String> {
        let list = |what: &str, v: &str| {
            parse_groups(v).map_err(|bad| {
                format!("{what}: `{bad}` is not a group name (letters, digits, - or _; up to 32).")
            })
        };
        Ok(PickupGroups {
            call: list("Call groups", &self.call_group)?,
            pickup: list("Pickup groups", &self.pickup_group)?,
        })
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pickup.html")]
struct PickupPage {
    session: Option<Session>,
    csrf: String,
    number: String,
    name: String,
    form: PickupForm,
    error: Option<String>,
    saved: bool,
}

/// The extension's name and its groups; `None` when there is no such extension.
async fn load(state: &WebState, number: &str) -> Result<Option<(String, PickupGroups)>, PageError> {
    let number = number.to_owned();
    state
        .with_read(move |conn| {
            let found = crate::store::web_extensions::name_and_enabled(conn, &number)?;
            Ok(match found {
                Some((name, _)) => Some((name, crate::store::pickup::get(conn, &number)?)),
                None => None,
            })
        })
        .await
}

/// `GET /extensions/pickup?number=N`.
pub async fn page(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Query(q): Query<PickupQuery>,
) -> Result<Response, PageError> {
    let number = q.number.trim().to_owned();
    let Some((name, g)) = load(&state, &number).await? else {
        return Ok((StatusCode::NOT_FOUND, "404: no such extension\n").into_response());
    };
    Ok(PickupPage {
        csrf: session.csrf.clone(),
        session: Some(session),
        form: PickupForm::of(&number, &g),
        number,
        name,
        error: None,
        saved: !q.saved.is_empty(),
    }
    .into_response())
}

/// `POST /extensions/pickup`.
pub async fn save(
    State(state): State<WebState>,
    Extension(session): Extension<Session>,
    Form(form): Form<PickupForm>,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let number = form.number.trim().to_owned();
    let Some((name, _)) = load(&state, &number).await? else {
        return Ok((StatusCode::NOT_FOUND, "404: no such extension\n").into_response());
    };
    let g = match form.check() {
        Ok(g) => g,
        Err(e) => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                PickupPage {
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
            Ok(crate::store::pickup::set(&db.conn, &key, &g, now)?)
        })
        .await?;
    tracing::info!(user = %session.username, %number, "pickup groups saved");
    state.extensions_changed.notify_one();
    Ok(Redirect::to(&format!(
        "/extensions/pickup?number={}&saved=1",
        url_encode(&number)
    ))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_checks() {
        let mut f = PickupForm::of("101", &PickupGroups::default());
        assert_eq!(f.check(), Ok(PickupGroups::default()));
        f.call_group = " sales ".into();
        f.pickup_group = "sales, support".into();
        let g = f.check().unwrap();
        assert_eq!(g.call, ["sales"]);
        assert_eq!(g.pickup, ["sales", "support"]);
        f.pickup_group = "sales;x".into();
        assert!(f.check().unwrap_err().contains("Pickup groups"));
    }
}
