//! Call pickup: a phone takes a call that rings elsewhere, with its own INVITE (a feature code
//! such as `**101` or `*8`, decided by the SIP core in [`crate::callctl`]). The picker's INVITE
//! becomes the call's leg B — a dialog in which pasarela is the UAS, answered here with the
//! relay's B side — every fork still ringing gets CANCEL with
//! `Reason: SIP;cause=200;text="Call completed elsewhere"` (RFC 3326, so phones do not log a
//! missed call), and the caller gets the 200. The call's record names the picker as the
//! party that answered, on a stage labelled `pickup 102 (**101)`.

use std::time::Instant;

use super::{our_contact, sdp_of, with_body, Call, CallSettings, Fork, ForkAction, ForkState};
use crate::b2bua::{Calls, SrtpPolicy};
use crate::media::Side;
use crate::sip::dialog::Dialog;
use crate::sip::header::Header;
use crate::sip::message::{Request, Response};
use crate::sip::method::Method;
use crate::sip::peer::Peer;
use crate::sip::transaction::{ClientKey, ServerKey, TransactionLayer};

/// The Reason of the CANCELs sent to the phones that rang (RFC 3326 §2, as Asterisk and
/// desk phones use it: no missed call is logged).
pub const COMPLETED_ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";

/// The prefix of the stage label of a picked-up call (`pickup 102 (**101)`).
pub const LABEL: &str = "pickup";

/// A phone's INVITE that picks up a ringing call.
#[derive(Debug, Clone)]
pub struct PickUp {
    /// The picker's INVITE transaction, its request and flow.
    pub key: ServerKey,
    pub invite: Request,
    pub peer: Peer,
    /// The extension that picks up.
    pub picker: String,
    /// How it picked up, for the record (`**101`, `*8`, `Replaces`).
    pub how: String,
    /// The picker's SRTP policy.
    pub srtp: SrtpPolicy,
}

impl Call {
    /// Whether the call can still be picked up: not answered, not waiting for a forward or a
    /// redirect decision, and something of it still rings (or is on its way).
    pub(in crate::b2bua) fn can_be_picked_up(&self) -> bool {
        self.winner.is_none()
            && self.outcome.is_none()
            && !self.forward_pending()
            && !self.redirect_pending()
            && self
                .forks
                .iter()
                .any(|f| matches!(f.state, ForkState::Trying | ForkState::Early))
    }

    /// The picker's INVITE takes the call (see the module doc): the 200 to the picker (with
    /// the relay's B side), CANCEL to every fork that rings, the 200 to the caller. Nothing
    /// changes when it cannot be done: the status and reason to refuse the picker with.
    fn picked_up(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        pick: PickUp,
        tag: &str,
        settings: &CallSettings,
    ) -> Result<(ForkAction, Vec<ClientKey>), (u16, String)> {
        if !self.can_be_picked_up() {
            return Err((481, "The call is no longer ringing".into()));
        }
        let offer = match sdp_of(&pick.invite.headers, &pick.invite.body) {
            Some(Ok(o)) => o,
            Some(Err(_)) => return Err((488, "Unreadable SDP".into())),
            None => return Err((488, "A pickup needs an SDP offer in the INVITE".to_string())),
        };
        let ports = (self.relay_port(Side::A), self.relay_port(Side::B));
        let (for_b, for_a) =
            self.sdp
                .b_offers_at_pickup(&offer, ports, self.relay.as_deref(), pick.srtp)?;
        let Some(dialog) = Dialog::uas(&pick.invite, tag, pick.peer) else {
            return Err((400, "The INVITE cannot make a dialog".into()));
        };
        // What rang is cancelled, telling the phones someone else took the call.
        let mut keys = Vec::new();
        let mut lines = Vec::new();
        for (i, f) in self.forks.iter_mut().enumerate() {
            if !matches!(f.state, ForkState::Trying | ForkState::Early) {
                continue;
            }
            f.state = ForkState::Cancelled;
            if f.line.is_some() {
                lines.push(i);
                continue;
            }
            let mut cancel = crate::sip::transaction::build_cancel(&f.invite);
            cancel
                .headers
                .push(Header::Other("Reason".into(), COMPLETED_ELSEWHERE.into()));
            keys.push(layer.send_request(now, cancel, f.peer));
        }
        for i in lines {
            self.hang_up_line(i);
        }
        self.stages.clear();
        // The picker becomes leg B, on a stage of its own (for the record).
        let callee = self.callee.clone();
        self.labels
            .push(format!("{LABEL} {} ({})", pick.picker, pick.how));
        self.ring_limits.push(None);
        self.stage = self.labels.len() - 1;
        let uri = pick
            .invite
            .headers
            .contacts()
            .find_map(|c| c.addr())
            .map(|c| c.uri.to_string())
            .or_else(|| pick.invite.headers.from().map(|f| f.uri.to_string()))
            .unwrap_or_default();
        self.forks.push(Fork {
            key: None,
            invite: pick.invite.clone(),
            peer: pick.peer,
            state: ForkState::Answered,
            status: 200,
            reason: None,
            dialog: Some(dialog.clone()),
            stage: self.stage,
            uri,
            responded: true,
            auth: None,
            auth_sent: false,
            srtp: pick.srtp,
            line: None,
        });
        let i = self.forks.len() - 1;
        self.winner = Some(i);
        // The 200 to the picker, retransmitted until its ACK.
        let mut ok = Response::to_request(&pick.invite, 200, "OK", Some(tag));
        ok.headers
            .push(Header::Other("Server".into(), self.server.clone()));
        ok.headers.push(our_contact(&pick.peer, &callee, settings));
        ok.body = with_body(&mut ok.headers, Some(&for_b));
        layer.respond(now, pick.key, ok.clone());
        let seq = pick.invite.headers.cseq().map_or(0, |c| c.seq);
        self.start_retrans(now, Side::B, seq, ok, pick.peer, settings);
        tracing::info!(
            call = self.id,
            picker = %pick.picker,
            how = %pick.how,
            "call picked up"
        );
        let action = self.answer_a(now, layer, i, Some(&for_a), Some(&dialog), settings);
        Ok((action, keys))
    }
}

/// What replacing an answered leg left for the owner to track.
struct Replacement {
    /// The new leg's dialog key (Call-ID, our tag).
    dialog: (String, String),
    /// Re-INVITEs sent to the caller's side.
    reinvites: Vec<ClientKey>,
    /// The BYE sent to the replaced leg.
    bye: Option<ClientKey>,
}

impl Call {
    /// An INVITE with Replaces naming the answered called party's leg (B): the new phone
    /// takes its place (attended transfer done by the phones, a busy lamp's barge-in): it is
    /// answered with the relay's B side, the old leg gets BYE, and the caller's side a fresh
    /// offer when the codec changed.
    fn replaced_b(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        pick: PickUp,
        tag: &str,
        settings: &CallSettings,
    ) -> Result<Replacement, (u16, String)> {
        let Some(old) = self.winner else {
            return Err((481, "No such dialog to replace".into()));
        };
        if self.a_line.is_some() || self.transfer.is_some() {
            return Err((
                501,
                "Replacing this call's leg is not supported yet".to_string(),
            ));
        }
        let offer = match sdp_of(&pick.invite.headers, &pick.invite.body) {
            Some(Ok(o)) => o,
            Some(Err(_)) => return Err((488, "Unreadable SDP".into())),
            None => return Err((488, "Replaces needs an SDP offer in the INVITE".to_string())),
        };
        let codec_before = self.sdp.codec_name();
        let ports = (self.relay_port(Side::A), self.relay_port(Side::B));
        let (for_b, _) =
            self.sdp
                .b_offers_at_pickup(&offer, ports, self.relay.as_deref(), pick.srtp)?;
        let Some(dialog) = Dialog::uas(&pick.invite, tag, pick.peer) else {
            return Err((400, "The INVITE cannot make a dialog".into()));
        };
        // The replaced leg ends.
        let bye = self
            .send_in_dialog(now, layer, Side::B, Method::Bye, None, settings)
            .map(|(k, _)| k);
        let mut keys = Vec::new();
        if let Some(f) = self.forks.get_mut(old) {
            f.dialog = None;
        }
        let callee = self.callee.clone();
        self.labels
            .push(format!("{LABEL} {} ({})", pick.picker, pick.how));
        self.ring_limits.push(None);
        self.stage = self.labels.len() - 1;
        let uri = pick
            .invite
            .headers
            .contacts()
            .find_map(|c| c.addr())
            .map(|c| c.uri.to_string())
            .unwrap_or_default();
        let key = (dialog.call_id.clone(), tag.to_owned());
        self.forks.push(Fork {
            key: None,
            invite: pick.invite.clone(),
            peer: pick.peer,
            state: ForkState::Answered,
            status: 200,
            reason: None,
            dialog: Some(dialog),
            stage: self.stage,
            uri,
            responded: true,
            auth: None,
            auth_sent: false,
            srtp: pick.srtp,
            line: None,
        });
        self.winner = Some(self.forks.len() - 1);
        let mut ok = Response::to_request(&pick.invite, 200, "OK", Some(tag));
        ok.headers
            .push(Header::Other("Server".into(), self.server.clone()));
        ok.headers.push(our_contact(&pick.peer, &callee, settings));
        ok.body = with_body(&mut ok.headers, Some(&for_b));
        layer.respond(now, pick.key, ok.clone());
        let seq = pick.invite.headers.cseq().map_or(0, |c| c.seq);
        self.start_retrans(now, Side::B, seq, ok, pick.peer, settings);
        // The caller's side keeps talking; it hears of the change only when its codec must.
        if codec_before.is_some() && codec_before != self.sdp.codec_name() {
            if let Some(k) = self.reoffer(now, layer, Side::A, settings) {
                keys.push(k);
            }
        }
        tracing::info!(call = self.id, by = %pick.picker, "answered leg replaced");
        Ok(Replacement {
            dialog: key,
            reinvites: keys,
            bye,
        })
    }
}

impl Calls {
    /// An INVITE with Replaces `pick` takes the place of the answered called party of call
    /// `id` ([`Call::replaced_b`]). `Err`: the status and reason to refuse it with.
    pub fn replace_callee(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: u64,
        pick: PickUp,
    ) -> Result<(), (u16, String)> {
        let tag = self.token();
        let call = self
            .calls
            .get_mut(&id)
            .ok_or((481, "No such dialog to replace".to_string()))?;
        let Replacement {
            dialog,
            reinvites: keys,
            bye,
        } = call.replaced_b(now, layer, pick, &tag, &self.settings)?;
        let next = call.retrans_at();
        self.by_dialog.insert(dialog, id);
        if let Some(k) = bye {
            self.by_client.insert(k, super::ClientRole::Ignore);
        }
        for k in keys {
            self.by_client.insert(k, super::ClientRole::InDialog(id));
        }
        if let Some(next) = next {
            self.schedule(next, id, super::TimerKind::Retransmit);
        }
        self.answered.push(id);
        Ok(())
    }

    /// Whether call `id` can be picked up now (see [`Call::can_be_picked_up`]).
    pub fn can_be_picked_up(&self, id: u64) -> bool {
        self.calls.get(&id).is_some_and(|c| c.can_be_picked_up())
    }

    /// The picker's INVITE `pick` takes call `id`, which rings (the owner checked who may
    /// pick up what). `Err`: the status and reason to refuse the picker with; the call is
    /// untouched then.
    pub fn pick_up(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: u64,
        pick: PickUp,
    ) -> Result<(), (u16, String)> {
        let tag = self.token();
        let call = self
            .calls
            .get_mut(&id)
            .ok_or((481, "The call is no longer ringing".to_string()))?;
        let (action, cancels) = call.picked_up(now, layer, pick, &tag, &self.settings)?;
        for k in cancels {
            self.by_client.insert(k, super::ClientRole::Ignore);
        }
        self.apply(now, layer, id, action);
        Ok(())
    }
}

/// The dialog an INVITE with Replaces (RFC 3891) names, as call control knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaced {
    /// A fork of call `call` that rings (an early dialog, as a busy lamp's NOTIFY shows it):
    /// the INVITE picks the call up.
    Early { call: u64, uri: String },
    /// A leg of call `call` that is answered (`callee`: the called party's leg).
    Confirmed { call: u64, callee: bool },
}

/// Whether the tags of a Replaces are the two tags of a dialog, in either order: phones copy
/// local-tag and remote-tag of a dialog-info body into to-tag and from-tag as they see fit.
fn same_tags(r: &crate::sip::replaces::Replaces, a: Option<&str>, b: Option<&str>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return false;
    };
    (r.to_tag == a && r.from_tag == b) || (r.to_tag == b && r.from_tag == a)
}

impl Calls {
    /// The dialog that `r` names: a ringing fork, or an answered leg; `None` when call control
    /// has no such dialog (the INVITE gets 481).
    pub fn replaced_dialog(&self, r: &crate::sip::replaces::Replaces) -> Option<Replaced> {
        let mut ids: Vec<&u64> = self.calls.keys().collect();
        ids.sort();
        for id in ids {
            let Some(c) = self.calls.get(id) else {
                continue;
            };
            for (i, f) in c.forks.iter().enumerate() {
                let Some(d) = f.dialog.as_ref() else {
                    continue;
                };
                if d.call_id != r.call_id || !same_tags(r, d.local.tag(), d.remote.tag()) {
                    continue;
                }
                if f.state == ForkState::Early && c.can_be_picked_up() {
                    return Some(Replaced::Early {
                        call: *id,
                        uri: f.uri.clone(),
                    });
                }
                if c.winner == Some(i) && f.state == ForkState::Answered {
                    return Some(Replaced::Confirmed {
                        call: *id,
                        callee: true,
                    });
                }
            }
            if let Some(d) = c.a.dialog.as_ref() {
                if d.call_id == r.call_id && same_tags(r, d.local.tag(), d.remote.tag()) {
                    return Some(Replaced::Confirmed {
                        call: *id,
                        callee: false,
                    });
                }
            }
        }
        None
    }
}
