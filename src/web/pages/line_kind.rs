//! What the modem-line and FXO-line forms of the Lines page ([`super::modem_lines`],
//! [`super::fxo_lines`]) share: enabling, disabling and deleting a line of the dashboard (one
//! statement on [`crate::store::line_rows`]), then telling the SIP side and going back to the
//! page, or showing the page with the refusal.

use axum::response::{IntoResponse, Redirect, Response};

use super::lines::NameForm;
use super::{csrf_ok, csrf_refused, PageError, WebState};
use crate::store::line_rows::{self, LineTable};
use crate::store::trunks::TrunkChangeError;
use crate::web::auth::Session;

/// A change of a line as a whole.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change {
    /// Enabled ↔ disabled.
    Toggle,
    Delete,
}

/// Applies `change` to the dashboard line named in `form`, of `table`.
pub(crate) async fn change(
    state: WebState,
    session: Session,
    form: NameForm,
    table: LineTable,
    change: Change,
) -> Result<Response, PageError> {
    if !csrf_ok(&session, &form.csrf) {
        return Ok(csrf_refused());
    }
    let name = form.name.trim().to_owned();
    let n = name.clone();
    let result = state
        .with_db(move |db| {
            Ok(match change {
                Change::Toggle => line_rows::toggle(&db.conn, table, &n),
                Change::Delete => line_rows::delete(&db.conn, table, &n),
            })
        })
        .await?;
    match result {
        Ok(()) => {
            tracing::info!(user = %session.username, line = %name, ?table, ?change, "line changed");
            state.trunks_changed.notify_one();
            Ok(Redirect::to("/lines").into_response())
        }
        Err(e) => refused(&state, session, table, &e).await,
    }
}

/// The page with the refusal (a store failure is the page's error).
async fn refused(
    state: &WebState,
    session: Session,
    table: LineTable,
    e: &TrunkChangeError,
) -> Result<Response, PageError> {
    if let TrunkChangeError::Store(s) = e {
        tracing::error!(?table, "line change: {s}");
        return Err(PageError::Task);
    }
    match table {
        LineTable::Modem => {
            let message = super::modem_lines::change_message(e);
            super::lines::render_with(state, session, None, None, Some(message)).await
        }
        LineTable::Fxo => {
            let message = super::fxo_lines::change_message(e);
            super::lines::render_fxo_refused(state, session, None, message).await
        }
    }
}
