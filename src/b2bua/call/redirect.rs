//! Redirects (RFC 3261 §8.1.3.4): a fork's 3xx names new targets in its Contacts. The call
//! hands them, highest `q` first, to its owner (the SIP core checks each one: loops, the
//! caller's permissions on the number, which office phone an address is) and waits; the
//! targets it gets back ring one after the other, each as a stage of its own, before the
//! route's remaining stages. A call follows at most [`MAX_REDIRECTS`] redirects.

use std::time::Instant;

use super::{Call, ForkAction, ForkState};
use crate::b2bua::Target;
use crate::sip::message::Response;
use crate::sip::transaction::TransactionLayer;
use crate::sip::uri::Uri;

/// Redirects one call follows at most (loop protection, with the check of each target).
pub const MAX_REDIRECTS: usize = 3;
/// Contacts of one 3xx that are considered at most.
pub const MAX_CONTACTS: usize = 5;
/// The label of the stages a redirect adds.
pub const LABEL: &str = "redirect";

/// A call's redirect bookkeeping.
#[derive(Debug, Default)]
pub struct Redirects {
    /// 3xx waiting for the owner's decision.
    pending: usize,
    /// 3xx followed so far.
    followed: usize,
    /// Why targets were refused, for the caller's final answer when nothing else is left.
    refusal: Option<String>,
}

/// A 3xx for the owner to check: the call, the redirecting fork, and its Contacts by
/// decreasing `q` (at most [`MAX_CONTACTS`]), with what the call has tried already.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub call: u64,
    pub fork: usize,
    pub caller: crate::b2bua::Caller,
    pub contacts: Vec<Uri>,
    /// The URIs the call has already sent an INVITE to (a contact among them is a loop).
    pub tried: Vec<String>,
}

/// The owner's answer to a [`Redirect`]: the targets to ring in order, and why the other
/// contacts were not followed.
#[derive(Debug, Default)]
pub struct RedirectDecision {
    pub targets: Vec<Target>,
    pub refused: Vec<String>,
}

/// The Contacts of a 3xx by decreasing `q` (default 1; RFC 3261 §20.10), in order of appearance
/// among equals.
pub fn contacts_by_q(resp: &Response) -> Vec<Uri> {
    let mut v: Vec<(u32, usize, Uri)> = resp
        .headers
        .contacts()
        .filter_map(|c| c.addr())
        .enumerate()
        .map(|(i, a)| {
            let q = a
                .params
                .value("q")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(1.0);
            ((q * 1000.0).round() as u32, i, a.uri.clone())
        })
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    v.into_iter()
        .take(MAX_CONTACTS)
        .map(|(_, _, u)| u)
        .collect()
}

impl Call {
    /// Fork `i` answered 3xx: the redirect to hand to the owner, or `None` when it is not
    /// followed (no Contact, too many redirects already, the call is answered).
    pub(super) fn redirected(&mut self, i: usize, resp: &Response) -> Option<ForkAction> {
        if self.winner.is_some() {
            return None;
        }
        let contacts = contacts_by_q(resp);
        if contacts.is_empty() {
            return None;
        }
        if self.redirects.followed >= MAX_REDIRECTS {
            tracing::info!(
                call = self.id,
                "redirect not followed: {MAX_REDIRECTS} already"
            );
            return None;
        }
        let f = self.forks.get_mut(i)?;
        if f.state == ForkState::Cancelled {
            return None;
        }
        f.state = ForkState::Failed;
        f.status = resp.status;
        self.redirects.followed += 1;
        self.redirects.pending += 1;
        tracing::info!(call = self.id, uri = %f.uri, status = resp.status, contacts = contacts.len(), "redirected");
        Some(ForkAction::Redirect { fork: i, contacts })
    }

    /// Whether a redirect waits for the owner's decision (the call must not fail meanwhile).
    pub(super) fn redirect_pending(&self) -> bool {
        self.redirects.pending > 0
    }

    /// The URIs this call has sent INVITEs to.
    pub(in crate::b2bua) fn tried(&self) -> Vec<String> {
        self.forks.iter().map(|f| f.uri.clone()).collect()
    }

    /// The owner's decision on the redirect of fork `fork`: its targets become stages rung
    /// next, one after the other; refusals are kept on the fork for the record.
    pub fn redirect_decided(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        fork: usize,
        decision: RedirectDecision,
    ) -> ForkAction {
        self.redirects.pending = self.redirects.pending.saturating_sub(1);
        if !decision.refused.is_empty() {
            let why = decision.refused.join("; ");
            if let Some(f) = self.forks.get_mut(fork) {
                f.reason = Some(why.clone());
            }
            if decision.targets.is_empty() {
                self.redirects.refusal.get_or_insert(why);
            }
        }
        for t in decision.targets.into_iter().rev() {
            self.labels.push(LABEL.to_owned());
            self.ring_limits.push(None);
            self.stages.push_front((self.labels.len() - 1, vec![t]));
        }
        if self.winner.is_some() {
            return ForkAction::None;
        }
        self.after_fork_failed(now, layer)
    }

    /// Why a redirect was refused, when that is all the call has to tell the caller.
    pub(super) fn redirect_refusal(&self) -> Option<&str> {
        self.redirects.refusal.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::{parse_message, Framing, Limits};

    #[test]
    fn contacts_in_q_order() {
        let Message::Response(r) = parse_message(
            bytes::Bytes::from(
                "SIP/2.0 302 Moved Temporarily\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:low@127.0.0.1:5071>;q=0.1, <sip:first@127.0.0.1:5072>\r\n\
Contact: <sip:mid@127.0.0.1:5073>;q=0.5, <sip:bad@127.0.0.1:5074>;q=7\r\nContent-Length: 0\r\n\r\n",
            ),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap() else {
            panic!()
        };
        let order: Vec<String> = contacts_by_q(&r).iter().map(|u| u.to_string()).collect();
        assert_eq!(
            order,
            [
                "sip:first@127.0.0.1:5072",
                "sip:bad@127.0.0.1:5074",
                "sip:mid@127.0.0.1:5073",
                "sip:low@127.0.0.1:5071"
            ]
        );
    }
}
