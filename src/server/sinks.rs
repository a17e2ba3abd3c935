//! Where the SIP core's outputs go: the one drain of [`SipCore::poll_output`] in `serve`. Bytes
//! to the transports, numbers to the router (off the loop, the answer comes back on a
//! channel), commands to the PSTN line legs, bindings to the store writer, call records to the
//! record writer ([`super::records`]), text messages to the message service.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::callctl::{Output, SipCore};
use crate::routing::router::{Route, Router};
use crate::web::Stats;

use super::line_legs::LineLegs;
use super::records::{call_refused, CallLog};

/// The destinations of the core's outputs.
pub(super) struct Sinks {
    pub(super) outbound: crate::transport::Outbound,
    /// The shell of calls on PSTN lines (none without lines).
    pub(super) line_legs: Option<LineLegs>,
    pub(super) router: Arc<Router>,
    /// Routing decisions, back to the loop and [`SipCore::route_decided`].
    pub(super) routes: mpsc::UnboundedSender<(u64, Route)>,
    pub(super) bindings: crate::store::BindingWriterHandle,
    pub(super) cdr: crate::cdr::CdrWriterHandle,
    pub(super) stats: Arc<Stats>,
    /// The office's numbers, for the records (replaced when the extensions are reloaded).
    pub(super) office: crate::cdr::OfficeNumbers,
    pub(super) call_log: CallLog,
    pub(super) messages: crate::sms::service::Handle,
    /// The store, for the call forwarding phones set with feature codes.
    pub(super) store_path: std::path::PathBuf,
    /// While stopping no call is routed any more.
    pub(super) stopping: bool,
}

impl Sinks {
    /// Hands out everything the core has for the shell.
    pub(super) fn drain(&mut self, core: &mut SipCore, now: Instant) {
        while let Some(output) = core.poll_output(now) {
            self.handle(output, now);
        }
    }

    fn handle(&mut self, output: Output, now: Instant) {
        match output {
            Output::Transmit(t) => self.outbound.send(t.peer, t.data),
            Output::Route(req) if self.stopping => {
                tracing::debug!(call = req.id, "stopping: call not routed");
            }
            Output::Route(req) => {
                let router = Arc::clone(&self.router);
                let tx = self.routes.clone();
                // A routing decision that panics still answers its call (refused), so no call
                // waits for a route that never comes.
                let (failed_tx, id, dialled) = (self.routes.clone(), req.id, req.dialled.clone());
                crate::supervise::Supervisor::global().spawn_task(
                    "routing",
                    async move {
                        let route = router.route(Some(&req.from), &req.dialled).await;
                        let _ = tx.send((req.id, route));
                    },
                    move || {
                        let _ = failed_tx.send((id, Route::failed(dialled)));
                    },
                );
            }
            Output::Line(command) => match self.line_legs.as_mut() {
                Some(legs) => legs.command(command),
                None => tracing::warn!(?command, "line command without lines dropped"),
            },
            Output::Binding(change) => self.bindings.send(change),
            Output::Answered(up) => self
                .call_log
                .answered(&self.cdr, &self.office, now, vec![up]),
            Output::Note(id, why) => self.call_log.notes(vec![(id, why)]),
            Output::Finished(summary) => {
                self.call_log
                    .ended(&self.stats, &self.cdr, &self.office, vec![summary])
            }
            Output::Refused(refused) => {
                call_refused(&self.stats, &self.cdr, &self.office, &refused)
            }
            Output::Delivered(id) => self
                .messages
                .send(crate::sms::service::Request::Delivered(id)),
            Output::FromPhone(m) => self
                .messages
                .send(crate::sms::service::Request::FromPhone(m)),
            Output::CallHandling(extension, handling) => {
                store_call_handling(&self.store_path, vec![(extension, handling)])
            }
        }
    }
}

/// Stores the call forwarding the phones changed with feature codes, off the loop.
fn store_call_handling(
    path: &std::path::Path,
    changes: Vec<(String, crate::routing::forwarding::CallHandling)>,
) {
    if changes.is_empty() {
        return;
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let result = crate::store::Store::open(&path).and_then(|store| {
            changes
                .iter()
                .try_for_each(|(ext, h)| store.set_call_handling(ext, h))
        });
        if let Err(e) = result {
            tracing::error!("call forwarding not stored: {e}");
        }
    });
}
