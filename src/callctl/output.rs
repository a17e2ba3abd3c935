//! The one output boundary of the SIP core, in the manner of quinn-proto and str0m: whatever
//! the core wants done outside — bytes to send, a number to route, a command for a PSTN line,
//! a registration to store, a call's record, a text message for the message service — comes
//! out of [`SipCore::poll_output`] as an [`Output`], one at a time, until it answers `None`.
//! When the core wants to be woken is a query, [`SipCore::poll_timeout`]; its media is reached
//! through the [`crate::media::port::MediaPort`] it was built with.
//!
//! The order is the one the records need: a call's `Answered` comes before its `Note` and its
//! `Finished`, so the in-progress record is replaced by the final one.

use std::collections::VecDeque;
use std::time::Instant;

use super::messaging::FromPhone;
use super::{Refused, RouteRequest, SipCore};
use crate::b2bua::{CallSummary, LineCommand, UpCall};
use crate::sip::transaction::Transmit;
use crate::store::BindingChange;

/// One thing the core hands its I/O shell (see [`SipCore::poll_output`]).
#[derive(Debug)]
pub enum Output {
    /// Bytes for a peer, through the transports.
    Transmit(Transmit),
    /// A call to route off the loop; the answer goes to [`SipCore::route_decided`].
    Route(RouteRequest),
    /// A command for a call leg on a PSTN line; the line's progress comes back through
    /// [`SipCore::line_event`].
    Line(LineCommand),
    /// A registration binding that changed, for the store.
    Binding(BindingChange),
    /// A call just answered: its in-progress record.
    Answered(UpCall),
    /// Why call control refused call `.0` (its `Finished` follows), for the record.
    Note(u64, String),
    /// A call that ended: its record.
    Finished(CallSummary),
    /// A call refused before anything rang: its record.
    Refused(Refused),
    /// A stored text message that a phone took (its id).
    Delivered(i64),
    /// A MESSAGE from a phone (answered 202), for the message service.
    FromPhone(FromPhone),
    /// Call forwarding that a phone changed with a feature code (extension, new settings),
    /// for the store.
    CallHandling(String, crate::routing::forwarding::CallHandling),
}

/// What the core's parts queued since the last drain, in the order it is handed out.
#[derive(Default)]
pub(super) struct Outputs {
    queue: VecDeque<Output>,
}

impl Outputs {
    /// Gives back the capacity a burst left (housekeeping): the queue is drained after every
    /// input, so between inputs it is empty and only its capacity remains.
    pub(super) fn shrink(&mut self) {
        crate::memory::shrink_deque(&mut self.queue);
    }
}

impl SipCore {
    /// The next thing for the shell to do, or `None` when there is nothing left; call it after
    /// every input until it answers `None`. `now` dates the in-progress records of answered
    /// calls.
    pub fn poll_output(&mut self, now: Instant) -> Option<Output> {
        if let Some(t) = self.layer.poll_transmit() {
            return Some(Output::Transmit(t));
        }
        if self.outputs.queue.is_empty() {
            self.collect_outputs(now);
        }
        self.outputs.queue.pop_front()
    }

    /// Moves what the parts (call control, registrar, router requests, messaging) queued into
    /// the one output queue.
    fn collect_outputs(&mut self, now: Instant) {
        // Called after every input and mostly with nothing queued: each part is checked
        // before anything is moved (an empty `extend` still costs its iterator set-up).
        fn drain<T>(q: &mut VecDeque<Output>, from: Vec<T>, f: impl FnMut(T) -> Output) {
            if !from.is_empty() {
                q.extend(from.into_iter().map(f));
            }
        }
        let q = &mut self.outputs.queue;
        drain(q, self.calls.take_line_commands(), Output::Line);
        drain(q, std::mem::take(&mut self.route_requests), Output::Route);
        drain(q, std::mem::take(&mut self.changes), Output::Binding);
        drain(q, self.messaging.take_delivered(), Output::Delivered);
        drain(q, self.messaging.take_from_phones(), Output::FromPhone);
        drain(
            q,
            std::mem::take(&mut self.forwarding.changes),
            |(ext, h)| Output::CallHandling(ext, h),
        );
        drain(q, self.calls.take_answered(now), Output::Answered);
        drain(q, self.calls.take_notes(), |(id, why)| {
            Output::Note(id, why)
        });
        drain(q, self.calls.take_finished(), Output::Finished);
        drain(q, std::mem::take(&mut self.refused), Output::Refused);
    }
}
