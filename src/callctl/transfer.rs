//! The SIP core's check of a transfer's target (see [`crate::b2bua::TransferAsk`]): a transfer
//! is a new call from the transferor, so it must not become a way around the transferor's
//! permissions. The transferor must be one of the office's phones (the registered contact we
//! rang for its extension); a target at this office must be an enabled extension the
//! transferor may call, and rings its registered phones; a number is classified with the
//! numbering plan and checked against the transferor's permissions. A refused transfer is
//! recorded like any refused call of the transferor's, with the reason.

use std::time::Instant;

use super::redirect::{capitalised, number_of};
use super::{Refused, SipCore};
use crate::b2bua::{TransferAsk, TransferDecision};
use crate::routing::Permission;
use crate::sip::uri::{Host, SipUri, Uri};

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
            let decision = self.transfer_decision(unix, &t);
            if let TransferDecision::Refuse { status, reason } = &decision {
                tracing::warn!(call = t.call, transferor = %t.transferor, target = %t.target, status, "transfer refused: {reason}");
                self.refused.push(Refused {
                    caller: t.transferor.clone(),
                    dialled: target_user(&t.target).unwrap_or_else(|| t.target.to_string()),
                    status: *status,
                    route: None,
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
    }

    fn transfer_decision(&self, unix: u64, t: &TransferAsk) -> TransferDecision {
        let refuse = |status: u16, reason: &str| TransferDecision::Refuse {
            status,
            reason: reason.to_owned(),
        };
        // The transferor: an extension of ours, on one of its registered phones.
        let phone = self
            .extensions
            .get(&t.transferor)
            .filter(|e| e.enabled)
            .is_some()
            && self
                .registrar
                .lookup(&t.transferor, unix)
                .iter()
                .any(|b| b.uri.to_string() == t.transferor_contact);
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
            if !self.extensions.get(&user).is_some_and(|e| e.enabled) {
                return refuse(404, "Not Found");
            }
            if !perms.allows(Permission::Internal) {
                return refuse(403, "Calls to internal numbers are barred");
            }
            if user == t.transferor {
                return refuse(482, "Loop Detected");
            }
            let to = Uri::Sip(SipUri::new(
                Some(&user),
                Host::Name(self.settings.realm.clone()),
                None,
            ));
            let targets: Vec<_> = self
                .contacts_of(&user, unix)
                .into_iter()
                .map(|t| crate::b2bua::Target {
                    to: Some(to.clone()),
                    ..t
                })
                .collect();
            if targets.is_empty() {
                return refuse(480, "Temporarily Unavailable");
            }
            return TransferDecision::Ring {
                targets,
                label: format!(
                    "{} {user} (by {})",
                    crate::b2bua::TRANSFER_LABEL,
                    t.transferor
                ),
            };
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
        refuse(
            488,
            "Transfer to numbers outside the office is not supported yet",
        )
    }
}
