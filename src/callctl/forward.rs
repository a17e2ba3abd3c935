//! Call forwarding and sequential search of extensions in the SIP core
//! ([`crate::routing::forwarding`] has the settings and the feature codes).
//!
//! A call to an extension that forwards always, or that has no phone registered and forwards
//! when unreachable, goes to the destination before anything rings; busy, no-answer and
//! unreachable-after-ringing forwards are armed on the call ([`crate::b2bua::ForwardRule`]) and
//! decided here when the call asks ([`SipCore::follow_forwards`]). A forward to an extension
//! needs the forwarding extension's permission for internal calls; a forward to a number is
//! routed by the router *as a call from the forwarding extension*: its permissions and limits
//! apply and it pays, so a forward to a barred or premium number is refused (and the refusal
//! recorded with the forward). Forwards chain at most
//! [`MAX_FORWARD_HOPS`](crate::routing::forwarding::MAX_FORWARD_HOPS) times and never back
//! to an extension already in the chain (101 -> 102 -> 101 is refused with 482).
//!
//! A call that arrives on a PSTN line for one extension takes the same path: its line is the
//! caller's leg from the start, so a forward to a number decided before anything rang starts
//! the line's call ringing nothing and waits for the router as a ringing call's forward does.
//! A ring group member forwarding always to an extension rings that extension's phones.

use std::collections::HashMap;
use std::time::Instant;

use super::{PendingRoute, RouteRequest, SipCore};
use crate::b2bua::{Caller, ForwardRule, NewCall, Stage, Target};
use crate::routing::forwarding::{
    feature_code, CallHandling, FeatureCode, ForwardWhen, MAX_FORWARD_HOPS,
};
use crate::routing::Permission;
use crate::sip::message::{Request, Response};
use crate::sip::peer::Peer;
use crate::sip::transaction::ServerKey;

/// The core's forwarding state.
#[derive(Debug, Default)]
pub(super) struct Forwarding {
    /// Every extension's call handling (extensions without an entry have the default).
    handling: HashMap<String, CallHandling>,
    /// Changes made by feature codes, for the store.
    pub(super) changes: Vec<(String, CallHandling)>,
    /// Forwards of ringing calls waiting for the router: route request id -> the forward.
    routing: crate::hashing::IdMap<u64, InCall>,
    /// Why the last refusal of a call to an extension was a forward's, for its record.
    pub(super) refusal: Option<String>,
}

#[derive(Debug)]
struct InCall {
    call: u64,
    note: String,
    payer: String,
}

/// The forwards a call went through before it rang: the extensions that forwarded, in order,
/// and what the record says.
#[derive(Debug, Clone, Default)]
pub(super) struct Chain {
    pub(super) by: Vec<String>,
    pub(super) note: Option<String>,
}

impl Chain {
    fn then(&self, ext: &str, when: ForwardWhen, dest: &str) -> Chain {
        let mut by = self.by.clone();
        by.push(ext.to_owned());
        let note = match &self.note {
            Some(n) => format!("{n}, then by {ext} ({when}) to {dest}"),
            None => format!("Forwarded by {ext} ({when}) to {dest}"),
        };
        Chain {
            by,
            note: Some(note),
        }
    }

    /// The extension that pays for a forwarded call: the last that forwarded.
    pub(super) fn payer(&self) -> Option<&str> {
        self.by.last().map(String::as_str)
    }
}

/// Why a forward to `dest` would loop or go too far, given the extensions that forwarded.
fn loop_refusal(by: &[String], dest: &str) -> Option<(u16, String)> {
    if by.iter().any(|e| e == dest) {
        let mut path = by.join(" -> ");
        path.push_str(" -> ");
        path.push_str(dest);
        return Some((482, format!("Forwarding loop {path}")));
    }
    if by.len() > MAX_FORWARD_HOPS {
        return Some((482, format!("More than {MAX_FORWARD_HOPS} forwards")));
    }
    None
}

impl SipCore {
    /// Every extension's call forwarding and ring order (from the store).
    pub fn set_call_handling(&mut self, handling: HashMap<String, CallHandling>) {
        self.forwarding.handling = handling;
    }

    fn handling(&self, ext: &str) -> CallHandling {
        self.forwarding
            .handling
            .get(ext)
            .cloned()
            .unwrap_or_default()
    }

    /// A forwarding feature code dialled by extension `caller` (`*72103`): the setting changed
    /// and the answer (603 with what was set, the phone shows it; nothing is called). `None`
    /// when `dialled` is no feature code.
    pub(super) fn feature_code(
        &mut self,
        req: &Request,
        caller: &str,
        dialled: &str,
    ) -> Option<Response> {
        let code = match feature_code(dialled)? {
            Ok(c) => c,
            Err(why) => return Some(self.response(req, 484, Some(&why))),
        };
        let FeatureCode { when, to } = code;
        if to.as_deref() == Some(caller) {
            return Some(self.response(req, 403, Some("An extension cannot forward to itself")));
        }
        let mut h = self.handling(caller);
        h.set(when, to.clone());
        let text = match &to {
            Some(dest) => format!("Call forwarding ({when}) to {dest} on"),
            None => format!("Call forwarding ({when}) off"),
        };
        tracing::info!(extension = %caller, "feature code {dialled}: {text}");
        self.forwarding
            .handling
            .insert(caller.to_owned(), h.clone());
        self.forwarding.changes.push((caller.to_owned(), h));
        Some(self.response(req, 603, Some(&text)))
    }

    /// Rings extension `ext` (reached through `chain`'s forwards, if any): its always or
    /// unreachable forward at once, else its registered phones (all at once, or one after the
    /// other) with its busy, no-answer and unreachable forwards armed. The refusal when that
    /// cannot be done (its reason for the record in `self.forwarding.refusal`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ring_extension_via(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        caller: Caller,
        ext: &str,
        chain: Chain,
    ) -> Option<Response> {
        if !self.extensions.get(ext).is_some_and(|e| e.enabled) {
            return Some(self.response(req, 404, None));
        }
        let h = self.handling(ext);
        let may_forward = chain.by.len() < MAX_FORWARD_HOPS;
        if let (Some(dest), true) = (h.always.clone(), may_forward) {
            return self.forward_now(
                now,
                unix,
                key,
                req,
                peer,
                caller,
                chain.then(ext, ForwardWhen::Always, &dest),
                &dest,
            );
        }
        let targets = self.contacts_of(ext, unix);
        if targets.is_empty() {
            if let (Some(dest), true) = (h.unreachable.clone(), may_forward) {
                return self.forward_now(
                    now,
                    unix,
                    key,
                    req,
                    peer,
                    caller,
                    chain.then(ext, ForwardWhen::Unreachable, &dest),
                    &dest,
                );
            }
            if let Some(note) = chain.note {
                self.forwarding.refusal = Some(format!("{note}: not registered"));
            }
            return Some(self.response(req, 480, None));
        }
        // A call from a PSTN line keeps the line's label on its first stage.
        let label = self
            .line_label
            .clone()
            .unwrap_or_else(|| format!("extension {ext}"));
        let (targets, fallback, ring_for) = ring_order(&h, targets, &label);
        let rule = may_forward.then(|| ForwardRule {
            extension: ext.to_owned(),
            busy: h.busy.is_some(),
            no_answer: h.no_answer.as_ref().map(|_| h.no_answer_after()),
            unreachable: h.unreachable.is_some(),
        });
        let new = NewCall {
            key,
            invite: req.clone(),
            peer,
            caller,
            targets,
            fallback,
            label,
            route: None,
            ring_for,
        };
        self.start_call_forwarding(now, new, rule, chain.note, false);
        None
    }

    /// Forwards a call that has not rung yet to `dest` (the last of `chain.by` forwards it).
    #[allow(clippy::too_many_arguments)]
    fn forward_now(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        caller: Caller,
        chain: Chain,
        dest: &str,
    ) -> Option<Response> {
        let note = chain.note.clone().unwrap_or_default();
        let payer = chain.payer().unwrap_or_default().to_owned();
        let refuse = |core: &mut SipCore, status: u16, why: &str| {
            tracing::warn!(%payer, %dest, "forward refused: {why}");
            core.forwarding.refusal = Some(format!("{note}: refused, {why}"));
            Some(core.response(req, status, Some(why)))
        };
        if let Some((status, why)) = loop_refusal(&chain.by, dest) {
            return refuse(self, status, &why);
        }
        tracing::info!(by = %payer, %dest, "{note}");
        if self.extensions.contains_key(dest) {
            if !self.permissions_of(&payer).allows(Permission::Internal) {
                return refuse(self, 403, "Calls to internal numbers are barred");
            }
            return self.ring_extension_via(now, unix, key, req, peer, caller, dest, chain);
        }
        if !self.settings.routing {
            return refuse(self, 404, "No route to the number");
        }
        let id = self.next_route;
        self.next_route += 1;
        self.route_requests.push(RouteRequest {
            id,
            from: payer.clone(),
            dialled: dest.to_owned(),
        });
        if self.line_origin.is_some() {
            // A call from a PSTN line exists from the start (the line is its caller's leg):
            // it waits, ringing nothing, for the router's decision on the forward, which is
            // then decided as a ringing call's forward ([`SipCore::forward_routed`]).
            let new = NewCall {
                key,
                invite: req.clone(),
                peer,
                caller,
                targets: Vec::new(),
                fallback: Vec::new(),
                label: self.line_label.clone().unwrap_or_default(),
                route: None,
                ring_for: None,
            };
            let call = self.start_call_forwarding(now, new, None, chain.note, true);
            self.forwarding
                .routing
                .insert(id, InCall { call, note, payer });
            return None;
        }
        self.pending_routes.insert(
            id,
            PendingRoute {
                key,
                invite: req.clone(),
                peer,
                caller,
                dialled: dest.to_owned(),
                since: now,
                forward: Some(chain),
            },
        );
        None
    }

    /// Where ring group member `ext` rings: its registered phones, or, when it forwards
    /// always to another extension (and may call internal numbers), that extension's phones
    /// (following its own always-forwards; nothing when the forward loops or reaches no
    /// phone), as Asterisk's Local channels do. A member's forward to a number is not followed
    /// (its phones ring): a member's fork cannot wait for the router.
    pub(super) fn member_targets(&self, ext: &str, unix: u64) -> Vec<Target> {
        let h = self.handling(ext);
        match h.always.as_deref() {
            Some(dest) if self.extensions.contains_key(dest) => {
                if !self.permissions_of(ext).allows(Permission::Internal) {
                    tracing::warn!(member = %ext, %dest, "ring group member's forward refused: internal calls barred");
                    return Vec::new();
                }
                match self.extension_stages(unix, vec![ext.to_owned()], dest) {
                    Ok(stages) => {
                        tracing::info!(member = %ext, %dest, "ring group member forwarded (always)");
                        stages.into_iter().flat_map(|s| s.targets).collect()
                    }
                    Err((_, why)) => {
                        tracing::warn!(member = %ext, %dest, "ring group member's forward: {why}");
                        Vec::new()
                    }
                }
            }
            _ => self.contacts_of(ext, unix),
        }
    }

    /// The permissions of extension `ext`.
    pub(super) fn permissions_of(&self, ext: &str) -> crate::routing::Permissions {
        self.extensions
            .get(ext)
            .and_then(|e| e.permissions)
            .unwrap_or(self.settings.default_permissions)
    }

    /// Decides the forwards that ringing calls asked for since the last call: a forward to an
    /// extension rings it at once, one to a number waits for the router
    /// ([`SipCore::forward_routed`]).
    pub(super) fn follow_forwards(&mut self, now: Instant, unix: u64) {
        for f in self.calls.take_forwards() {
            let h = self.handling(&f.extension);
            let Some(dest) = h.target(f.when).map(str::to_owned) else {
                let why = format!("no {} forward", f.when);
                self.calls.forward_decided(
                    now,
                    &mut self.layer,
                    f.call,
                    Err((480, why.clone())),
                    why,
                );
                continue;
            };
            let note = format!("Forwarded by {} ({}) to {dest}", f.extension, f.when);
            tracing::info!(call = f.call, caller = %f.caller.number, "{note}");
            let decision = if self.extensions.contains_key(&dest) {
                if self
                    .permissions_of(&f.extension)
                    .allows(Permission::Internal)
                {
                    self.extension_stages(unix, vec![f.extension.clone()], &dest)
                } else {
                    Err((403, "Calls to internal numbers are barred".to_owned()))
                }
            } else if self.settings.routing {
                let id = self.next_route;
                self.next_route += 1;
                self.route_requests.push(RouteRequest {
                    id,
                    from: f.extension.clone(),
                    dialled: dest.clone(),
                });
                self.forwarding.routing.insert(
                    id,
                    InCall {
                        call: f.call,
                        note,
                        payer: f.extension,
                    },
                );
                continue;
            } else {
                Err((404, "No route to the number".to_owned()))
            };
            if let Err((_, why)) = &decision {
                tracing::warn!(call = f.call, "forward refused: {why}");
            }
            self.calls
                .forward_decided(now, &mut self.layer, f.call, decision, note);
        }
    }

    /// The stages of a forward of a ringing call to extension `dest` (following its own
    /// always-forwards to further extensions): its phones, in its ring order.
    fn extension_stages(
        &self,
        unix: u64,
        mut by: Vec<String>,
        dest: &str,
    ) -> Result<Vec<Stage>, (u16, String)> {
        let mut dest = dest.to_owned();
        loop {
            if let Some(r) = loop_refusal(&by, &dest) {
                return Err(r);
            }
            if !self.extensions.get(&dest).is_some_and(|e| e.enabled) {
                return Err((404, format!("Extension {dest} does not exist")));
            }
            let h = self.handling(&dest);
            match h.always.clone() {
                Some(next) if self.extensions.contains_key(&next) => {
                    by.push(dest);
                    dest = next;
                }
                _ => {
                    let targets = self.contacts_of(&dest, unix);
                    if targets.is_empty() {
                        return Err((480, format!("Extension {dest} is not registered")));
                    }
                    let label = format!("forward extension {dest}");
                    let (first, mut rest, ring_for) = ring_order(&h, targets, &label);
                    rest.insert(
                        0,
                        Stage {
                            targets: first,
                            label,
                            ring_for,
                        },
                    );
                    return Ok(rest);
                }
            }
        }
    }

    /// The router's decision for the forward of a ringing call (route request `id`); `false`
    /// when `id` is no such forward.
    pub(super) fn forward_routed(
        &mut self,
        now: Instant,
        unix: u64,
        id: u64,
        route: &std::sync::Arc<crate::routing::router::Route>,
    ) -> bool {
        let Some(f) = self.forwarding.routing.remove(&id) else {
            return false;
        };
        use crate::routing::router::Decision;
        let decision = match &route.decision {
            Decision::Reject { status, reason } => Err((*status, reason.clone())),
            Decision::Extension(e) => self.extension_stages(unix, vec![f.payer.clone()], e),
            Decision::Attempts(list) => self.attempt_stages(now, unix, &f.payer, list),
        };
        if let Err((_, why)) = &decision {
            tracing::warn!(call = f.call, by = %f.payer, "forward refused: {why}");
        }
        self.calls
            .forward_decided(now, &mut self.layer, f.call, decision, f.note);
        self.process_events(now, unix);
        true
    }
}

/// The phones of an extension in its ring order: the first stage's targets, the further stages
/// and how long the first rings. Parallel: all in one stage. Sequential: one stage per phone,
/// each ringing for the extension's turn (the registrar's order: highest `q`, newest first).
fn ring_order(
    h: &CallHandling,
    mut targets: Vec<Target>,
    label: &str,
) -> (Vec<Target>, Vec<Stage>, Option<std::time::Duration>) {
    if !h.sequential || targets.len() < 2 {
        return (targets, Vec::new(), None);
    }
    let turn = Some(h.ring_each());
    let rest = targets.split_off(1);
    let n = rest.len();
    let fallback = rest
        .into_iter()
        .enumerate()
        .map(|(i, t)| Stage {
            targets: vec![t],
            label: label.to_owned(),
            // The last phone rings until the call's own no-answer time.
            ring_for: if i + 1 < n { turn } else { None },
        })
        .collect();
    (targets, fallback, turn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_and_hops() {
        let by = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            loop_refusal(&by(&["101", "102"]), "101"),
            Some((482, "Forwarding loop 101 -> 102 -> 101".to_owned()))
        );
        assert_eq!(loop_refusal(&by(&["101", "102"]), "103"), None);
        assert!(loop_refusal(&by(&["1", "2", "3", "4"]), "5").is_some());
        let c = Chain::default()
            .then("102", ForwardWhen::Always, "103")
            .then("103", ForwardWhen::Unreachable, "+4930");
        assert_eq!(c.payer(), Some("103"));
        assert_eq!(
            c.note.as_deref(),
            Some("Forwarded by 102 (always) to 103, then by 103 (unreachable) to +4930")
        );
    }
}
