//! Call pickup in the SIP core: an extension dials `**101` (directed) or `*8` (group) and
//! takes a call that rings elsewhere. Which calls ring where comes from the B2BUA's views and
//! the registrar (the same reading as busy lamps, [`super::watch`]); who may pick up whose
//! calls from the extensions' call and pickup groups ([`crate::routing::pickup`]). The B2BUA
//! does the rest ([`crate::b2bua::PickUp`]). A pickup that finds nothing, or nothing the
//! picker may take, is answered 404 / 403 with the reason and recorded as a refused attempt.

use std::collections::HashMap;
use std::time::Instant;

use super::{Refused, SipCore};
use crate::b2bua::{Caller, LiveState, PickUp, Replaced};
use crate::routing::pickup::{PickupCode, PickupCodes, PickupGroups, PickupPolicy};
use crate::sip::message::{Request, Response};
use crate::sip::peer::Peer;
use crate::sip::replaces::Replaces;
use crate::sip::transaction::ServerKey;

/// The core's pickup settings.
#[derive(Debug, Default)]
pub(super) struct Pickup {
    pub(super) policy: PickupPolicy,
    pub(super) codes: PickupCodes,
}

/// A call that can be picked up: its id, and the extension it rings.
struct Ringing {
    call: u64,
    extension: String,
}

impl SipCore {
    /// Every extension's call and pickup groups (from the store).
    pub fn set_pickup_groups(&mut self, groups: HashMap<String, PickupGroups>) {
        self.pickup.policy = PickupPolicy::new(groups);
    }

    /// The pickup feature codes (default `**` and `*8`).
    pub fn set_pickup_codes(&mut self, codes: PickupCodes) {
        self.pickup.codes = codes;
    }

    /// The calls ringing at extensions now, oldest first: a call to the extension (its stage)
    /// or with a fork towards one of its registered phones, not answered yet.
    fn ringing_calls(&self, unix: u64) -> Vec<Ringing> {
        let mut by_uri: HashMap<String, &str> = HashMap::new();
        for ext in self.extensions.keys() {
            for b in self.registrar.lookup(ext, unix) {
                by_uri.insert(b.uri.to_string(), ext.as_str());
            }
        }
        let mut views = self.calls.views();
        views.sort_by_key(|v| v.id);
        let mut out = Vec::new();
        for v in views {
            if v.state == LiveState::Answered || !self.calls.can_be_picked_up(v.id) {
                continue;
            }
            let staged = v
                .stage_label
                .strip_prefix("extension ")
                .filter(|e| self.extensions.contains_key(*e));
            let forked = v
                .forks
                .iter()
                .filter(|f| f.live && !f.answered)
                .find_map(|f| by_uri.get(&f.uri).copied());
            if let Some(ext) = staged.or(forked) {
                if ext != v.caller || v.from_outside {
                    out.push(Ringing {
                        call: v.id,
                        extension: ext.to_owned(),
                    });
                }
            }
        }
        out
    }

    /// A pickup code dialled by extension `caller`: the call it takes (answered here, `None`
    /// returned as the answer is sent), or the refusal. `Err(())` when `dialled` is no pickup
    /// code.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pickup_code(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        caller: &Caller,
        dialled: &str,
    ) -> Result<Option<Response>, ()> {
        let code = self.pickup.codes.parse(dialled).ok_or(())?;
        let picker = caller.number.as_str();
        let ringing = self.ringing_calls(unix);
        let chosen = match &code {
            PickupCode::Directed(target) => {
                let at_target: Vec<&Ringing> =
                    ringing.iter().filter(|r| r.extension == *target).collect();
                if at_target.is_empty() {
                    Err((404, format!("No call ringing at {target}")))
                } else {
                    at_target
                        .into_iter()
                        .find(|r| self.pickup.policy.may_pick_up(picker, &r.extension))
                        .ok_or((403, format!("Not allowed to pick up calls of {target}")))
                }
            }
            PickupCode::Group => ringing
                .iter()
                .find(|r| self.pickup.policy.may_pick_up(picker, &r.extension))
                .ok_or((404, "No call to pick up in your groups".to_string())),
        };
        let result = chosen.map(|r| (r.call, r.extension.clone()));
        Ok(self.take_call(now, key, req, peer, caller, dialled, result))
    }

    /// Picks up call `id` ringing at extension `ext` for `caller`, or refuses with the status
    /// and reason `chosen` gives (recorded as a refused attempt of `caller`). `None` when the
    /// call was picked up (the answer is sent).
    #[allow(clippy::too_many_arguments)]
    fn take_call(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        caller: &Caller,
        how: &str,
        chosen: Result<(u64, String), (u16, String)>,
    ) -> Option<Response> {
        let picker = caller.number.as_str();
        let result = chosen.and_then(|(id, ext)| {
            let pick = PickUp {
                key,
                invite: req.clone(),
                peer,
                picker: picker.to_owned(),
                how: how.to_owned(),
                srtp: caller.srtp,
            };
            self.calls
                .pick_up(now, &mut self.layer, id, pick)
                .map(|()| (id, ext))
        });
        match result {
            Ok((id, ext)) => {
                tracing::info!(extension = %picker, call = id, ringing_at = %ext, "{how}: call picked up");
                None
            }
            Err((status, why)) => {
                tracing::info!(extension = %picker, "{how}: pickup refused: {why}");
                let r = self.response(req, status, Some(&why));
                self.refused.push(Refused {
                    caller: picker.to_owned(),
                    dialled: how.to_owned(),
                    status,
                    route: None,
                    reason: Some(format!("Pickup: {why}")),
                    incoming: None,
                });
                Some(r)
            }
        }
    }

    /// An INVITE with Replaces (RFC 3891) from extension `caller`: naming a ringing fork of a
    /// call to an extension (a busy lamp key's pickup), it picks that call up under the same
    /// rules as `**`; naming the answered leg of the called extension, the new phone takes
    /// that leg's place (same rules); naming a caller's leg, 501 for now; naming nothing
    /// known, 481; `early-only` on an answered dialog, 486. `Err(())`: no Replaces header.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn replaces_invite(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        caller: &Caller,
    ) -> Result<Option<Response>, ()> {
        let value = req.headers.get("Replaces").ok_or(())?;
        let how = "Replaces";
        let r = match Replaces::parse(value) {
            Ok(r) => r,
            Err(e) => {
                let why = format!("Bad Replaces header: {e}");
                return Ok(Some(self.response(req, 400, Some(&why))));
            }
        };
        let picker = caller.number.as_str();
        let chosen = match self.calls.replaced_dialog(&r) {
            None => Err((481, "No such dialog to replace".to_string())),
            Some(Replaced::Confirmed { .. }) if r.early_only => Err((
                486,
                "The dialog to replace is answered (early-only)".to_string(),
            )),
            Some(Replaced::Confirmed { callee: false, .. }) => Err((
                501,
                "Replacing a caller's leg is not supported yet".to_string(),
            )),
            Some(Replaced::Confirmed { call, callee: true }) => {
                return Ok(self.replace_answered(now, unix, key, req, peer, caller, call));
            }
            Some(Replaced::Early { call, .. }) => {
                match self
                    .ringing_calls(unix)
                    .into_iter()
                    .find(|x| x.call == call)
                {
                    None => Err((481, "No such dialog to replace".to_string())),
                    Some(x) if !self.pickup.policy.may_pick_up(picker, &x.extension) => Err((
                        403,
                        format!("Not allowed to pick up calls of {}", x.extension),
                    )),
                    Some(x) => Ok((x.call, x.extension)),
                }
            }
        };
        Ok(self.take_call(now, key, req, peer, caller, how, chosen))
    }

    /// The answered called party of call `id` is replaced by `caller`'s phone, when `caller`
    /// may pick up that party's calls; the refusal otherwise (recorded).
    #[allow(clippy::too_many_arguments)]
    fn replace_answered(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        caller: &Caller,
        id: u64,
    ) -> Option<Response> {
        let how = "Replaces";
        let picker = caller.number.as_str();
        let at = self.answered_extension(unix, id);
        let result = match at {
            None => Err((
                403,
                "Only a call answered by an extension can be replaced".into(),
            )),
            Some(ext) if !self.pickup.policy.may_pick_up(picker, &ext) => {
                Err((403, format!("Not allowed to take calls of {ext}")))
            }
            Some(_) => {
                let pick = PickUp {
                    key,
                    invite: req.clone(),
                    peer,
                    picker: picker.to_owned(),
                    how: how.to_owned(),
                    srtp: caller.srtp,
                };
                self.calls.replace_callee(now, &mut self.layer, id, pick)
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(extension = %picker, call = id, "Replaces: answered leg taken over");
                None
            }
            Err((status, why)) => {
                tracing::info!(extension = %picker, "Replaces refused: {why}");
                let r = self.response(req, status, Some(&why));
                self.refused.push(Refused {
                    caller: picker.to_owned(),
                    dialled: how.to_owned(),
                    status,
                    route: None,
                    reason: Some(format!("Replaces: {why}")),
                    incoming: None,
                });
                Some(r)
            }
        }
    }

    /// The extension whose phone answered call `id` (its stage, or the registered phone that
    /// answered).
    fn answered_extension(&self, unix: u64, id: u64) -> Option<String> {
        let v = self.calls.views().into_iter().find(|v| v.id == id)?;
        let f = v.forks.iter().find(|f| f.answered)?;
        if let Some(ext) = v
            .stage_label
            .strip_prefix("extension ")
            .filter(|e| self.extensions.contains_key(*e))
        {
            return Some(ext.to_owned());
        }
        self.extensions
            .keys()
            .find(|ext| {
                self.registrar
                    .lookup(ext, unix)
                    .iter()
                    .any(|b| b.uri.to_string() == f.uri)
            })
            .cloned()
    }
}
