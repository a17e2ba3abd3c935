//! The SIP core's check of a transfer's target (see [`crate::b2bua::TransferAsk`]): a transfer
//! is a new call from the transferor, so it must not become a way around the transferor's
//! permissions. The transferor must be one of the office's phones (the registered contact we
//! rang for its extension); a target at this office must be an enabled extension the
//! transferor may call, and rings its registered phones; a number is classified with the
//! numbering plan and checked against the transferor's permissions, then routed by the router
//! *as a call the transferor dials* (a [`RouteRequest`] from the transferor: ENUM, DUNDi,
//! trunks, PSTN lines; then the same spending, trunk and line checks as its own calls,
//! [`SipCore::attempt_stages`]). A refused transfer is recorded like any refused call of the
//! transferor's, with the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::limits::Subject;
use super::redirect::{capitalised, number_of};
use super::{Refused, RouteRequest, SipCore};
use crate::b2bua::{TransferAsk, TransferDecision};
use crate::routing::router::{Decision, Route};
use crate::routing::Permission;
use crate::sip::uri::{Host, SipUri, Uri};

/// Transfers to numbers waiting for the router: route request id -> the transfer.
#[derive(Debug, Default)]
pub(super) struct Routing {
    waiting: HashMap<u64, TransferAsk>,
}

/// What the check of a transfer's target leads to: a decision now, or a number to route.
enum Checked {
    Now(TransferDecision),
    Route(String),
}

/// The number or name a transfer target names: a SIP URI's user, a tel URI's number.
fn target_user(uri: &Uri) -> Option<String> {
    match uri {
        Uri::Sip(u) => u.user_unescaped(),
        Uri::Tel(t) => Some(t.number.clone()),
        Uri::Other { .. } => None,
    }
}

impl SipCore {
    /// Checks every transfer the calls asked for since the last call and tells each call what
    /// to do.
    pub(super) fn follow_transfers(&mut self, now: Instant, unix: u64) {
        for t in self.calls.take_transfers() {
            let decision = match self.transfer_decision(now, unix, &t) {
                Checked::Now(d) => d,
                Checked::Route(number) => {
                    let id = self.next_route;
                    self.next_route += 1;
                    tracing::info!(call = t.call, transferor = %t.transferor, %number, "transfer to a number: routing it");
                    self.route_requests.push(RouteRequest {
                        id,
                        from: t.transferor.clone(),
                        dialled: number,
                    });
                    self.transfer_routing.waiting.insert(id, t);
                    continue;
                }
            };
            self.transfer_decided(now, &t, decision, None);
        }
    }

    /// Hands `decision` to the call, recording a refusal (with the route, if there was one).
    fn transfer_decided(
        &mut self,
        now: Instant,
        t: &TransferAsk,
        decision: TransferDecision,
        route: Option<Arc<Route>>,
    ) {
        if let TransferDecision::Refuse { status, reason } = &decision {
            tracing::warn!(call = t.call, transferor = %t.transferor, target = %t.target, status, "transfer refused: {reason}");
            self.refused.push(Refused {
                caller: t.transferor.clone(),
                dialled: target_user(&t.target).unwrap_or_else(|| t.target.to_string()),
                status: *status,
                route,
                reason: Some(format!(
                    "Transfer of call {} from {}: {reason}",
                    t.call, t.caller.number
                )),
                incoming: None,
            });
        } else {
            tracing::info!(call = t.call, transferor = %t.transferor, target = %t.target, "transfer checked: ringing the target");
        }
        self.calls
            .transfer_decided(now, &mut self.layer, t.call, decision);
    }

    /// The router's decision for a transfer to a number (route request `id`); `false` when
    /// `id` is no such transfer.
    pub(super) fn transfer_routed(
        &mut self,
        now: Instant,
        unix: u64,
        id: u64,
        route: &Arc<Route>,
    ) -> bool {
        let Some(t) = self.transfer_routing.waiting.remove(&id) else {
            return false;
        };
        let decision = match &route.decision {
            Decision::Reject { status, reason } => TransferDecision::Refuse {
                status: *status,
                reason: reason.clone(),
            },
            Decision::Extension(e) => {
                let e = e.clone();
                self.ring_extension_for(unix, &t.transferor, &e)
            }
            Decision::Attempts(list) => match self.attempt_stages(now, unix, &t.transferor, list) {
                Ok(stages) => TransferDecision::Route {
                    stages,
                    route: Arc::clone(route),
                },
                Err((status, reason)) => TransferDecision::Refuse { status, reason },
            },
        };
        self.transfer_decided(now, &t, decision, Some(Arc::clone(route)));
        self.process_events(now, unix);
        true
    }

    /// Transfers still waiting for the router (for leak checks).
    pub fn transfers_routing(&self) -> usize {
        self.transfer_routing.waiting.len()
    }

    fn transfer_decision(&mut self, now: Instant, unix: u64, t: &TransferAsk) -> Checked {
        let refuse = |status: u16, reason: &str| {
            Checked::Now(TransferDecision::Refuse {
                status,
                reason: reason.to_owned(),
            })
        };
        // The transferor: an extension of ours, on one of its registered phones (a caller
        // that transfers authenticated its call as that extension).
        let phone = self
            .extensions
            .get(&t.transferor)
            .filter(|e| e.enabled)
            .is_some()
            && (t.by_caller
                || self
                    .registrar
                    .lookup(&t.transferor, unix)
                    .iter()
                    .any(|b| b.uri.to_string() == t.transferor_contact));
        if !phone {
            return refuse(403, "Transfers are for the office's phones");
        }
        let perms = self
            .extensions
            .get(&t.transferor)
            .and_then(|e| e.permissions)
            .unwrap_or(self.settings.default_permissions);
        let Some(user) = target_user(&t.target) else {
            return refuse(416, "Unsupported URI Scheme");
        };
        let ours = match &t.target {
            Uri::Sip(u) => self.is_ours(u),
            _ => true,
        };
        if ours && self.extensions.contains_key(&user) {
            if !perms.allows(Permission::Internal) {
                return refuse(403, "Calls to internal numbers are barred");
            }
            return Checked::Now(self.ring_extension_for(unix, &t.transferor, &user));
        }
        let Some(number) = number_of(&user) else {
            return refuse(404, "Not Found");
        };
        let Some(plan) = &self.numbering else {
            return refuse(404, "Not Found");
        };
        let dialled = match plan.classify(&number, |n| self.extensions.contains_key(n)) {
            Ok(d) => d,
            Err(e) => return refuse(484, &capitalised(&e.to_string())),
        };
        if let Err(e) = plan.check(&dialled, &perms) {
            return refuse(403, &capitalised(&e.to_string()));
        }
        if !self.settings.routing {
            return refuse(404, "No route to the number");
        }
        // A new call of the transferor's: its limits on calls apply (rate, at once).
        let active = self.calls.count_by_caller(&t.transferor)
            + self
                .pending_routes
                .values()
                .filter(|p| p.caller.number == t.transferor)
                .count();
        if let Err(why) = self
            .limiter
            .admit(Subject::Extension(&t.transferor), now, active)
        {
            return refuse(403, &why);
        }
        Checked::Route(number)
    }

    /// The decision to ring extension `user` for a transfer by `transferor`: its registered
    /// phones.
    fn ring_extension_for(&self, unix: u64, transferor: &str, user: &str) -> TransferDecision {
        let refuse = |status: u16, reason: &str| TransferDecision::Refuse {
            status,
            reason: reason.to_owned(),
        };
        if !self.extensions.get(user).is_some_and(|e| e.enabled) {
            return refuse(404, "Not Found");
        }
        if user == transferor {
            return refuse(482, "Loop Detected");
        }
        let to = Uri::Sip(SipUri::new(
            Some(user),
            Host::Name(self.settings.realm.clone()),
            None,
        ));
        let targets: Vec<_> = self
            .contacts_of(user, unix)
            .into_iter()
            .map(|t| crate::b2bua::Target {
                to: Some(to.clone()),
                ..t
            })
            .collect();
        if targets.is_empty() {
            return refuse(480, "Temporarily Unavailable");
        }
        TransferDecision::Ring {
            targets,
            label: format!("{} {user} (by {transferor})", crate::b2bua::TRANSFER_LABEL),
        }
    }
}
