//! The rate tables applied live to the router's least-cost order (issue 17): at start and
//! whenever a rate table, a rate or a line's table changes, the rate book is read again and
//! handed to the router ([`crate::routing::router::Router::set_line_prices`]). The dashboard
//! and the API say when they changed one (the web server's rates change signal); the store's
//! `rating_version` is still looked at every [`EVERY`] for changes made by other programs
//! (`pasarela rates import` on the command line). Calls in progress keep their route.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cdr::CdrDb;
use crate::routing::router::Router;

/// How often the rating version is looked at when nobody said it changed.
pub(super) const EVERY: Duration = Duration::from_secs(60);

/// Reads the book now when `version` is not `seen`; the new version.
fn refresh(db: &CdrDb, router: &Router, seen: Option<i64>) -> Option<i64> {
    let version = match db.rating_version() {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("rate tables not reloaded: {e}");
            return seen;
        }
    };
    if Some(version) == seen {
        return seen;
    }
    match db.load_rate_book() {
        Ok(book) => {
            tracing::info!(
                tables = book.tables().len(),
                "rate tables applied to the least-cost order"
            );
            router.set_line_prices(Arc::new(book));
            Some(version)
        }
        Err(e) => {
            tracing::warn!("rate tables not reloaded: {e}");
            seen
        }
    }
}

/// Gives `router` the rate book of the store at `path` now, and again after every change
/// (at once when `changed` is notified).
pub(super) fn start(path: &Path, router: &Arc<Router>, changed: Arc<tokio::sync::Notify>) {
    let db = match CdrDb::open(path) {
        Ok(db) => db,
        Err(e) => {
            tracing::warn!("least-cost order off: cannot read the rate tables: {e}");
            return;
        }
    };
    let mut seen = refresh(&db, router, None);
    let router = Arc::clone(router);
    let path: PathBuf = path.to_path_buf();
    let db = Arc::new(std::sync::Mutex::new(db));
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = changed.notified() => {}
                () = tokio::time::sleep(EVERY) => {}
            }
            let (db, r) = (Arc::clone(&db), Arc::clone(&router));
            let got = tokio::task::spawn_blocking(move || {
                let db = db.lock().unwrap_or_else(|p| p.into_inner());
                refresh(&db, &r, seen)
            })
            .await;
            match got {
                Ok(v) => seen = v,
                Err(e) => tracing::warn!(path = %path.display(), "rate tables not reloaded: {e}"),
            }
        }
    });
    crate::supervise::Supervisor::global().watch("rate tables".to_owned(), task);
}
