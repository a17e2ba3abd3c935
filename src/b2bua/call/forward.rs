//! Call forwarding on busy, no answer and unreachable: a call to an extension carries the
//! extension's [`ForwardRule`]. When its phones all answer busy, or all fail, or none answers
//! within the no-answer time, the call does not fail: it hands a [`ForwardRequest`] to its
//! owner (the SIP core decides where the forward goes, with the forwarding extension's
//! permissions) and waits for [`Call::forward_decided`]: new stages to ring, or the refusal the
//! caller gets. A call is forwarded this way once; the record keeps a note of the forward.

use std::time::{Duration, Instant};

use super::{Call, ForkAction};
use crate::b2bua::Stage;
use crate::routing::forwarding::ForwardWhen;
use crate::sip::transaction::TransactionLayer;

/// Which forwards an extension has armed for a call to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardRule {
    /// The extension whose forwards these are.
    pub extension: String,
    pub busy: bool,
    /// Ringing time before the no-answer forward.
    pub no_answer: Option<Duration>,
    pub unreachable: bool,
}

impl ForwardRule {
    /// Whether any forward is armed.
    pub fn armed(&self) -> bool {
        self.busy || self.no_answer.is_some() || self.unreachable
    }
}

/// A call whose extension forwards it: the owner answers with [`crate::b2bua::Calls::forward_decided`].
#[derive(Debug, Clone)]
pub struct ForwardRequest {
    pub call: u64,
    /// The forwarding extension.
    pub extension: String,
    pub when: ForwardWhen,
    pub caller: crate::b2bua::Caller,
}

/// A call's forwarding bookkeeping.
#[derive(Debug, Default)]
pub(in crate::b2bua) struct Forwarding {
    rule: Option<ForwardRule>,
    pending: bool,
    /// What the record says about the forward (`forwarded by 102 (busy) to 103`).
    pub(in crate::b2bua) note: Option<String>,
}

impl Call {
    /// Arms the forwards of the called extension (before its phones ring).
    pub(in crate::b2bua) fn arm_forwards(
        &mut self,
        rule: Option<ForwardRule>,
        note: Option<String>,
    ) {
        self.forwarding.rule = rule.filter(ForwardRule::armed);
        self.forwarding.note = note;
    }

    /// The call starts waiting for the owner's forward decision (a forward decided before
    /// anything rang, whose destination the router is still looking up).
    pub(in crate::b2bua) fn await_forward(&mut self) {
        self.forwarding.pending = true;
    }

    /// Whether the call waits for the owner's forward decision (it must not fail meanwhile).
    pub(super) fn forward_pending(&self) -> bool {
        self.forwarding.pending
    }

    /// The record's note on the forward, if the call was forwarded.
    pub(in crate::b2bua) fn forward_note(&self) -> Option<&str> {
        self.forwarding.note.as_deref()
    }

    /// Every stage failed: the forward that applies, if one is armed (the call then waits).
    pub(in crate::b2bua) fn forward_on_failure(&mut self) -> Option<ForkAction> {
        let rule = self.forwarding.rule.as_ref()?;
        let busy = self
            .forks
            .iter()
            .any(|f| matches!(f.status, 486 | 600 | 603));
        let when = if busy {
            rule.busy.then_some(ForwardWhen::Busy)?
        } else if rule.unreachable {
            ForwardWhen::Unreachable
        } else if rule.no_answer.is_some() && self.forks.iter().any(|f| f.responded) {
            // Phones that rang and gave up (480, 408) did not answer.
            ForwardWhen::NoAnswer
        } else {
            return None;
        };
        Some(self.start_forward(when))
    }

    /// The no-answer time is up: the forward, when the call still rings.
    pub(super) fn forward_on_timeout(&mut self) -> ForkAction {
        let armed = self
            .forwarding
            .rule
            .as_ref()
            .is_some_and(|r| r.no_answer.is_some());
        if self.winner.is_some() || self.forwarding.pending || !armed {
            return ForkAction::None;
        }
        tracing::info!(call = self.id, "no answer in time: forwarding");
        // What still rings is cancelled by the owner; the rest of a sequential search is dropped.
        self.stages.clear();
        self.start_forward(ForwardWhen::NoAnswer)
    }

    fn start_forward(&mut self, when: ForwardWhen) -> ForkAction {
        let extension = self
            .forwarding
            .rule
            .take()
            .map(|r| r.extension)
            .unwrap_or_default();
        self.forwarding.pending = true;
        ForkAction::Forward { extension, when }
    }

    /// The owner's decision on the call's forward: its stages ring next, or the caller gets the
    /// refusal. `note` is what the record says about the forward.
    pub fn forward_decided(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        decision: Result<Vec<Stage>, (u16, String)>,
        note: String,
    ) -> ForkAction {
        self.forwarding.pending = false;
        if self.winner.is_some() {
            return ForkAction::None;
        }
        match decision {
            Ok(stages) if stages.iter().any(|s| !s.targets.is_empty()) => {
                self.forwarding.note = Some(note);
                for s in stages {
                    self.labels.push(s.label);
                    self.ring_limits.push(s.ring_for);
                    self.stages.push_back((self.labels.len() - 1, s.targets));
                }
                ForkAction::NextStage
            }
            Ok(_) => {
                self.forwarding.note = Some(format!("{note}: nothing to ring"));
                self.respond_a(now, layer, 480, None, None);
                self.outcome = Some((480, "no answer"));
                ForkAction::Finished
            }
            Err((status, why)) => {
                self.forwarding.note = Some(format!("{note}: refused, {why}"));
                self.respond_a(now, layer, status, Some(&why), None);
                self.outcome = Some((status, "failed"));
                ForkAction::Finished
            }
        }
    }
}
