//! Blind transfer (REFER, RFC 3515) by the answered callee: the phone on leg B sends REFER
//! naming a new target. The call answers 202 and keeps an implicit subscription (Event:
//! refer) on the transferor's dialog; its owner checks the target as a call from the
//! transferor (permissions, which phones ring) and hands back targets or a refusal. The
//! targets are rung as new forks of the same call while the far party (leg A) stays where it
//! is; the fork that answers becomes leg B — the relay keeps its ports, so the far party sees
//! nothing, or a re-INVITE taking it off hold — and the transferor's leg is released. The
//! transferor hears of each step in NOTIFYs carrying a message/sipfrag status line ("100
//! Trying", "180 Ringing", then "200 OK" or the failure); when the target fails, the original
//! call stays up and the transferor can take it back. The caller (an extension) may transfer
//! too, REFER on leg A: its target is offered the caller's side of the relay and takes over
//! leg A. A number outside the office is rung as its route's stages, tried in turn; each
//! transfer done is kept as a [`TransferPart`] for the records.

use super::*;

/// The label of the stage a transfer adds.
pub const LABEL: &str = "transfer";

/// A REFER for the owner to check: the call, the Refer-To target, and who sent it.
#[derive(Debug, Clone)]
pub struct TransferAsk {
    pub call: u64,
    /// The Refer-To URI (its `?headers` removed).
    pub target: Uri,
    /// The user of the To URI we sent the transferor's INVITE to (the extension we rang).
    pub transferor: String,
    /// The Request-URI of the transferor's INVITE (its registered contact, for a phone).
    pub transferor_contact: String,
    /// The far party (the caller of the call), for the refusal's record.
    pub caller: crate::b2bua::Caller,
    /// Attended transfer: the transferor's other call whose far party takes its place
    /// (Refer-To `?Replaces=`, RFC 3891).
    pub replaces: Option<crate::sip::replaces::Replaces>,
    /// The transferor is the caller (REFER on leg A): an extension that authenticated the
    /// call's INVITE, so its registered contact is not checked again.
    pub by_caller: bool,
}

/// The owner's answer to a [`TransferAsk`]: the targets to ring (with the stage label), or
/// the status and reason to tell the transferor.
#[derive(Debug)]
pub enum TransferDecision {
    Ring {
        targets: Vec<Target>,
        label: String,
    },
    Refuse {
        status: u16,
        reason: String,
    },
    /// A number outside the office, routed as a call of the transferor: its route's stages
    /// (trunks, PSTN lines, ENUM/DUNDi destinations), tried in turn like a call's, and the
    /// route (for the record of the call's part after the transfer).
    Route {
        stages: Vec<Stage>,
        route: std::sync::Arc<crate::routing::router::Route>,
    },
}

/// A transfer that took place: the call's record is cut there into two parts, linked (the
/// part before: the far party with the transferor; the part after: with the target,
/// `transferred_by` the transferor, who pays for it when it costs money).
#[derive(Debug, Clone)]
pub struct TransferPart {
    /// When the target took over: the part before ends, the part after begins.
    pub at: Instant,
    /// The extension that transferred.
    pub by: String,
    /// The target as the transferor named it (an extension or a number).
    pub target: String,
    /// The first attempt (fork) of the part after.
    pub first_attempt: usize,
    /// The fork (stage, URI) that had answered the part before.
    pub before: Option<(usize, String)>,
    /// The route of a target outside the office.
    pub route: Option<std::sync::Arc<crate::routing::router::Route>>,
    /// A transfer by the caller: the party that stays (the callee), shown as the caller of
    /// the part after, and the target's fork (stage, URI) that answered it.
    pub by_caller: Option<(String, Option<(usize, String)>)>,
}

impl TransferDecision {
    /// How many forks the decision may ring in all (each needs a Call-ID and a tag).
    pub fn targets(&self) -> usize {
        match self {
            TransferDecision::Ring { targets, .. } => targets.len(),
            TransferDecision::Refuse { .. } => 0,
            TransferDecision::Route { stages, .. } => stages.iter().map(|s| s.targets.len()).sum(),
        }
    }
}

/// A transfer under way.
#[derive(Debug)]
pub(super) struct Transfer {
    /// The transferor's fork (the winner when the REFER came; unused when the caller
    /// transfers).
    transferor: usize,
    /// The leg of the transferor: B (the answered callee) or A (the caller).
    side: Side,
    /// Forks from this index on ring the transfer's target.
    first_fork: usize,
    /// Waiting for the owner's decision; then ringing.
    deciding: bool,
    /// The transferor hung up meanwhile: the far party waits alone.
    transferor_gone: bool,
    /// The stage of the call before the transfer (restored when it fails).
    stage_before: usize,
    /// The settings the transfer's requests are made with (for failures met where the call
    /// is not handed them).
    settings: CallSettings,
    /// A routed target's further stages (tried when the one ringing fails, except on busy),
    /// each with the Call-IDs and tags of its forks.
    more: VecDeque<(Stage, Vec<(String, String)>)>,
    /// The transferor as the target is told (RFC 3892 `Referred-By`): the authenticated
    /// extension, not what its REFER claims.
    referred_by: String,
    /// The transferor has heard that the target rings (one NOTIFY "180 Ringing").
    ringing_told: bool,
    /// The transferor's extension and the target it named, for the record.
    by: String,
    target: String,
    /// The route of a target outside the office.
    route: Option<std::sync::Arc<crate::routing::router::Route>>,
}

/// Where the REFER's target is: the Refer-To URI without its embedded headers and the
/// Replaces among them (attended transfer), or why it cannot be used.
type Target2 = (Uri, Option<crate::sip::replaces::Replaces>);

fn refer_target(req: &Request) -> Result<Target2, (u16, &'static str)> {
    let mut values = req.headers.get_all("Refer-To");
    let value = values.next().ok_or((400, "Missing Refer-To"))?;
    if values.next().is_some() {
        return Err((400, "More than one Refer-To"));
    }
    let addr = NameAddr::parse(value).map_err(|_| (400, "Malformed Refer-To"))?;
    match addr.uri {
        Uri::Sip(mut u) => {
            let replaces = match u.take_headers() {
                Some(h) => crate::sip::replaces::Replaces::from_uri_headers(&h)
                    .transpose()
                    .map_err(|_| (400, "Malformed Replaces in Refer-To"))?,
                None => None,
            };
            Ok((Uri::Sip(u), replaces))
        }
        Uri::Tel(t) => Ok((Uri::Tel(t), None)),
        Uri::Other { .. } => Err((416, "Unsupported URI Scheme")),
    }
}

/// The number or name a Refer-To URI names (its user; a tel URI's number).
fn target_name(uri: &Uri) -> String {
    match uri {
        Uri::Sip(u) => u.user_unescaped().unwrap_or_else(|| u.to_string()),
        Uri::Tel(t) => t.number.clone(),
        Uri::Other { .. } => uri.to_string(),
    }
}

/// The status line a NOTIFY reports: `SIP/2.0 200 OK`.
fn sipfrag(status: u16, reason: &str) -> Bytes {
    Bytes::from(format!("SIP/2.0 {status} {reason}\r\n"))
}

impl Call {
    /// Whether the targets of a transfer ring now.
    pub(in crate::b2bua) fn transfer_ringing(&self) -> bool {
        self.transfer.as_ref().is_some_and(|t| !t.deciding)
    }

    /// Whether a BYE on `side` comes from the far party of a transfer under way (it gave up
    /// waiting).
    pub(super) fn far_party_of_transfer(&self, side: Side) -> bool {
        self.transfer.as_ref().is_some_and(|t| t.side != side)
    }

    /// Whether the caller transfers and its target rings (the target replaces leg A).
    pub(super) fn caller_transfer_ringing(&self) -> bool {
        self.transfer
            .as_ref()
            .is_some_and(|t| !t.deciding && t.side == Side::A)
    }

    /// The `Referred-By` of the INVITEs to a transfer's target (while it is rung).
    pub(super) fn referred_by(&self) -> Option<&str> {
        self.transfer
            .as_ref()
            .filter(|t| !t.deciding)
            .map(|t| t.referred_by.as_str())
    }

    /// The transfer's target rings (fork `i` had a 18x, or its line rings): the transferor
    /// hears "180 Ringing" once.
    pub(super) fn transfer_target_rings(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        settings: &CallSettings,
    ) -> ForkAction {
        match self.transfer.as_mut() {
            Some(t) if !t.ringing_told => t.ringing_told = true,
            _ => return ForkAction::None,
        }
        self.notify_transferor(now, layer, 180, "Ringing", false, settings)
            .map_or(ForkAction::None, ForkAction::Track)
    }

    /// Whether fork `i` rings the target of a transfer.
    pub(super) fn is_transfer_fork(&self, i: usize) -> bool {
        self.transfer
            .as_ref()
            .is_some_and(|t| !t.deciding && i >= t.first_fork)
    }

    /// The transferor hung up while its transfer is under way: the far party waits for the
    /// target instead of being hung up.
    pub(super) fn transferor_leaves(&mut self, side: Side) -> bool {
        let winner = self.winner;
        match self.transfer.as_mut() {
            Some(t) if t.side == side && (side == Side::A || winner == Some(t.transferor)) => {
                t.transferor_gone = true;
                tracing::info!(
                    call = self.id,
                    "the transferor hung up: the far party waits"
                );
                true
            }
            _ => false,
        }
    }

    /// A REFER on leg `side`: answered here (202, or the refusal); the transfer for the owner
    /// to check when it is accepted.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refer(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        side: Side,
        settings: &CallSettings,
    ) -> ForkAction {
        let refused = |layer: &mut TransactionLayer, st: u16, why: &str| {
            let r = Response::to_request(req, st, why, None);
            layer.respond(now, key, r);
            ForkAction::None
        };
        if self.transfer.is_some() {
            return refused(layer, 491, "A transfer is already under way");
        }
        let Some(w) = self.winner else {
            return refused(layer, 481, reason_phrase(481));
        };
        let (target, replaces) = match refer_target(req) {
            Ok(t) => t,
            Err((st, why)) => return refused(layer, st, why),
        };
        let ask = if side == Side::A {
            // The caller transfers the callee: only an extension of the office (no line, no
            // call from outside), and blind only.
            if self.a_line.is_some() || self.caller.origin.is_some() {
                return refused(layer, 403, "Forbidden");
            }
            if replaces.is_some() {
                return refused(
                    layer,
                    501,
                    "Attended transfer by the calling party not supported yet",
                );
            }
            TransferAsk {
                call: self.id,
                target,
                transferor: self.caller.number.clone(),
                transferor_contact: String::new(),
                caller: self.caller.clone(),
                replaces,
                by_caller: true,
            }
        } else {
            if self.is_line_fork(w) {
                return refused(layer, 403, "Forbidden");
            }
            let Some(fork) = self.forks.get(w) else {
                return refused(layer, 481, reason_phrase(481));
            };
            let transferor = fork
                .invite
                .headers
                .to()
                .and_then(|t| t.uri.as_sip())
                .and_then(SipUri::user_unescaped)
                .unwrap_or_default();
            TransferAsk {
                call: self.id,
                target,
                transferor,
                transferor_contact: fork.uri.clone(),
                caller: self.caller.clone(),
                replaces,
                by_caller: false,
            }
        };
        reply_with(
            layer,
            now,
            key,
            req,
            202,
            None,
            Some(our_contact(&peer, "pasarela", settings)),
        );
        tracing::info!(call = self.id, target = %ask.target, transferor = %ask.transferor, "transfer asked");
        self.transfer = Some(Box::new(Transfer {
            transferor: w,
            side,
            first_fork: self.forks.len(),
            deciding: true,
            transferor_gone: false,
            stage_before: self.stage,
            settings: settings.clone(),
            more: VecDeque::new(),
            referred_by: format!("<sip:{}@{}>", ask.transferor, settings.domain),
            ringing_told: false,
            by: ask.transferor.clone(),
            target: target_name(&ask.target),
            route: None,
        }));
        let notify = self.notify_transferor(now, layer, 100, "Trying", false, settings);
        ForkAction::Transfer {
            ask: Box::new(ask),
            notify,
        }
    }

    /// Sends the transferor a NOTIFY with `status` (`terminated`: the last one).
    fn notify_transferor(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        status: u16,
        reason: &str,
        terminated: bool,
        settings: &CallSettings,
    ) -> Option<ClientKey> {
        let t = self.transfer.as_ref()?;
        if t.transferor_gone {
            return None;
        }
        let d = match t.side {
            Side::A => self.a.dialog.as_mut()?,
            Side::B => self.forks.get_mut(t.transferor)?.dialog.as_mut()?,
        };
        let peer = d.peer;
        let via = our_via(&peer, layer.new_branch(), local_host(&peer, settings));
        let mut req = d.request(Method::Notify, via);
        req.headers.push(our_contact(&peer, "pasarela", settings));
        req.headers
            .push(Header::Other("Event".into(), "refer".into()));
        let state = if terminated {
            "terminated;reason=noresource".to_owned()
        } else {
            "active;expires=60".to_owned()
        };
        req.headers
            .push(Header::Other("Subscription-State".into(), state));
        req.headers.push(Header::ContentType(
            "message/sipfrag;version=2.0".to_owned(),
        ));
        req.body = sipfrag(status, reason);
        Some(layer.send_request(now, req, peer))
    }

    /// The owner's decision on the transfer: the forks to ring (their keys and indexes, for
    /// the owner to map), or the refusal told to the transferor.
    pub(in crate::b2bua) fn transfer_decided(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        decision: TransferDecision,
        mut dialogs: Vec<(String, String)>,
        settings: &CallSettings,
    ) -> (Vec<(usize, ClientKey)>, Option<ClientKey>) {
        let (targets, label) = match decision {
            TransferDecision::Refuse { status, reason } => {
                tracing::info!(call = self.id, status, %reason, "transfer refused");
                let k = self.transfer_failed(now, layer, status, &reason, settings);
                return (Vec::new(), k);
            }
            TransferDecision::Ring { targets, label } => (targets, label),
            TransferDecision::Route { stages, route } => {
                if let Some(t) = self.transfer.as_mut() {
                    t.route = Some(route);
                }
                let mut more = VecDeque::new();
                for s in stages.into_iter().filter(|s| !s.targets.is_empty()) {
                    let n = s.targets.len().min(dialogs.len());
                    let rest = dialogs.split_off(n);
                    more.push_back((s, std::mem::replace(&mut dialogs, rest)));
                }
                let Some((first, ds)) = more.pop_front() else {
                    let k =
                        self.transfer_failed(now, layer, 503, "No route to the number", settings);
                    return (Vec::new(), k);
                };
                if let Some(t) = self.transfer.as_mut() {
                    t.more = more;
                }
                dialogs = ds;
                (first.targets, first.label)
            }
        };
        let Some(t) = self.transfer.as_mut() else {
            return (Vec::new(), None);
        };
        t.deciding = false;
        t.first_fork = self.forks.len();
        let keys = self.ring_transfer_stage(now, layer, targets, label, dialogs, settings);
        (keys, None)
    }

    /// Rings one stage of the transfer's target.
    fn ring_transfer_stage(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        targets: Vec<Target>,
        label: String,
        dialogs: Vec<(String, String)>,
        settings: &CallSettings,
    ) -> Vec<(usize, ClientKey)> {
        tracing::info!(call = self.id, %label, forks = targets.len(), "transfer: ringing");
        self.labels.push(label);
        self.ring_limits.push(None);
        self.stage = self.labels.len() - 1;
        let mut keys = Vec::new();
        for (target, (call_id, tag)) in targets.into_iter().zip(dialogs) {
            if let Some(k) = self.send_fork(now, layer, target, call_id, tag, settings) {
                keys.push((self.forks.len() - 1, k));
            }
        }
        keys
    }

    /// The transfer failed (`status`): the transferor hears it, the original call goes on —
    /// or, when the transferor has already hung up, ends.
    pub(super) fn transfer_failed(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        status: u16,
        reason: &str,
        settings: &CallSettings,
    ) -> Option<ClientKey> {
        let key = self.notify_transferor(now, layer, status, reason, true, settings);
        if let Some(t) = self.transfer.take() {
            self.stage = t.stage_before;
            if t.transferor_gone {
                // Nobody to go back to: the far party is hung up.
                self.transfer_gone_failed = true;
                let far = match t.side {
                    Side::A => Side::B,
                    Side::B => Side::A,
                };
                let _ = self.send_in_dialog(now, layer, far, Method::Bye, None, settings);
            }
        }
        key
    }

    /// Whether the transfer failed after its transferor hung up: the call is over.
    pub(super) fn take_orphaned_failure(&mut self) -> bool {
        std::mem::take(&mut self.transfer_gone_failed)
    }

    /// A transfer fork failed: when none is left ringing, the transfer failed.
    pub(super) fn transfer_fork_failed(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        settings: &CallSettings,
    ) -> ForkAction {
        let Some(first) = self.transfer.as_ref().map(|t| t.first_fork) else {
            return ForkAction::None;
        };
        let ringing = self
            .forks
            .iter()
            .skip(first)
            .any(|f| matches!(f.state, ForkState::Trying | ForkState::Early));
        if ringing {
            return ForkAction::None;
        }
        let best = self
            .forks
            .iter()
            .skip(first)
            .map(|f| f.status)
            .filter(|s| *s >= 300)
            .min_by_key(|s| if matches!(s, 486 | 600) { 0 } else { *s })
            .unwrap_or(480);
        // A routed target's next stage (another trunk or line), unless the number was busy.
        let next = match self.transfer.as_mut() {
            Some(t) if !matches!(best, 486 | 600 | 603) => t.more.pop_front(),
            _ => None,
        };
        if let Some((stage, dialogs)) = next {
            let keys =
                self.ring_transfer_stage(now, layer, stage.targets, stage.label, dialogs, settings);
            return ForkAction::TrackForks(keys);
        }
        let k = self.transfer_failed(now, layer, best, reason_phrase(best), settings);
        self.after_transfer(k)
    }

    /// A transfer fork failed where the call has no settings at hand.
    pub(super) fn transfer_fork_lost(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
    ) -> ForkAction {
        match self.transfer.as_ref().map(|t| t.settings.clone()) {
            Some(settings) => self.transfer_fork_failed(now, layer, &settings),
            None => ForkAction::None,
        }
    }

    /// What the owner does after a transfer step: track the NOTIFY, end a call whose far
    /// party was left alone by a failed transfer.
    pub(in crate::b2bua) fn after_transfer(&mut self, notify: Option<ClientKey>) -> ForkAction {
        if self.take_orphaned_failure() {
            tracing::info!(call = self.id, "transfer failed after the transferor left");
            self.outcome.get_or_insert((200, "answered"));
            self.retrans.clear();
            return ForkAction::Finished;
        }
        notify.map_or(ForkAction::None, ForkAction::Track)
    }

    /// The transfer's target does not answer in time.
    pub(super) fn transfer_timeout(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        settings: &CallSettings,
    ) -> ForkAction {
        let Some(first) = self
            .transfer
            .as_ref()
            .filter(|t| !t.deciding)
            .map(|t| t.first_fork)
        else {
            return ForkAction::None;
        };
        let n = self.forks.len();
        for i in first..n {
            self.cancel_one(now, layer, i);
        }
        let k = self.transfer_failed(now, layer, 480, "No Answer", settings);
        self.after_transfer(k)
    }

    /// Cancels fork `i` if it still rings.
    fn cancel_one(&mut self, now: Instant, layer: &mut TransactionLayer, i: usize) {
        let Some(f) = self.forks.get_mut(i) else {
            return;
        };
        if !matches!(f.state, ForkState::Trying | ForkState::Early) {
            return;
        }
        f.state = ForkState::Cancelled;
        if f.line.is_some() {
            self.hang_up_line(i);
            return;
        }
        let cancel = crate::sip::transaction::build_cancel(&f.invite);
        layer.send_request(now, cancel, f.peer);
    }

    /// The transfer's target answered on fork `i` (its dialog `b_dialog`, none for a line; its
    /// SDP `answer`): it becomes leg B, the transferor is told and released.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn transfer_answered(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        b_dialog: Option<Dialog>,
        answer: Option<SessionDescription>,
        settings: &CallSettings,
    ) -> ForkAction {
        let Some(t) = self.transfer.as_ref() else {
            return ForkAction::None;
        };
        if t.side == Side::A {
            return self.caller_transfer_answered(now, layer, i, b_dialog, answer, settings);
        }
        let old = t.transferor;
        let policy = self.forks.get(i).map_or(Default::default(), |f| f.srtp);
        let codec_before = self.sdp.codec_name();
        if let Some(answer) = &answer {
            if let Err((_, why)) = self.sdp.b_answers(
                answer,
                self.relay_port(Side::A),
                self.relay.as_deref(),
                policy,
            ) {
                tracing::warn!(
                    call = self.id,
                    "no usable media with the transfer target: {why}"
                );
                match b_dialog {
                    Some(mut d) => {
                        let peer = d.peer;
                        let bye = d.request(
                            Method::Bye,
                            our_via(&peer, layer.new_branch(), local_host(&peer, settings)),
                        );
                        layer.send_request(now, bye, peer);
                    }
                    None => self.hang_up_line(i),
                }
                if let Some(f) = self.forks.get_mut(i) {
                    f.state = ForkState::Failed;
                    f.status = 488;
                }
                return self.transfer_fork_failed(now, layer, settings);
            }
        }
        let b_key = b_dialog.as_ref().map(|d| {
            (
                d.call_id.clone(),
                d.local.tag().unwrap_or_default().to_owned(),
            )
        });
        if let Some(f) = self.forks.get_mut(i) {
            f.state = ForkState::Answered;
            f.status = 200;
            f.reason = None;
            f.dialog = b_dialog;
        }
        let before = self.forks.get(old).map(|f| (f.stage, f.uri.clone()));
        if let Some(t) = self.transfer.as_mut() {
            self.transfers_done.push(TransferPart {
                at: now,
                by: std::mem::take(&mut t.by),
                target: std::mem::take(&mut t.target),
                first_attempt: t.first_fork,
                before,
                route: t.route.take(),
                by_caller: None,
            });
        }
        self.winner = Some(i);
        tracing::info!(
            call = self.id,
            fork = i,
            "transfer target answered: legs re-bridged"
        );
        let notify = self.notify_transferor(now, layer, 200, "OK", true, settings);
        let gone = self.transfer.as_ref().is_some_and(|t| t.transferor_gone);
        self.transfer = None;
        // The transferor's leg ends (unless it hung up already).
        if !gone {
            if let Some(d) = self.forks.get_mut(old).and_then(|f| f.dialog.as_mut()) {
                let peer = d.peer;
                let bye = d.request(
                    Method::Bye,
                    our_via(&peer, layer.new_branch(), local_host(&peer, settings)),
                );
                layer.send_request(now, bye, peer);
            }
        }
        let _ = notify;
        // The far party may have been put on hold by the transferor, or may need the new
        // codec: it gets a fresh offer when either is the case.
        let held = self.held_by_us(Side::A);
        if (held || codec_before != self.sdp.codec_name()) && self.a_line.is_none() {
            self.reoffer(now, layer, Side::A, settings);
        }
        ForkAction::Answered {
            winner: i,
            a_dialog: None,
            b_dialog: b_key,
        }
    }

    /// The target of the caller's transfer answered on fork `i`: it becomes leg A (the
    /// relay's A side, the caller's place), the caller is told and released; the callee
    /// stays on leg B, taken off hold if the caller had held it.
    #[allow(clippy::too_many_arguments)]
    fn caller_transfer_answered(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        b_dialog: Option<Dialog>,
        answer: Option<SessionDescription>,
        settings: &CallSettings,
    ) -> ForkAction {
        let Some(dialog) = b_dialog else {
            // A line cannot take the caller's place (its leg is no SIP dialog).
            self.hang_up_line(i);
            if let Some(f) = self.forks.get_mut(i) {
                f.state = ForkState::Failed;
                f.status = 488;
            }
            return self.transfer_fork_failed(now, layer, settings);
        };
        if let Some(answer) = &answer {
            self.sdp
                .answer_in_ack(Side::A, answer, self.relay.as_deref());
        }
        let key = (
            dialog.call_id.clone(),
            dialog.local.tag().unwrap_or_default().to_owned(),
        );
        let before = self
            .winner
            .and_then(|w| self.forks.get(w))
            .map(|f| (f.stage, f.uri.clone()));
        let answered = self.forks.get(i).map(|f| (f.stage, f.uri.clone()));
        let peer = dialog.peer;
        if let Some(f) = self.forks.get_mut(i) {
            f.state = ForkState::Answered;
            f.status = 200;
            f.reason = None;
        }
        tracing::info!(
            call = self.id,
            fork = i,
            "the caller's transfer target answered: it takes the caller's place"
        );
        let _ = self.notify_transferor(now, layer, 200, "OK", true, settings);
        let Some(t) = self.transfer.take() else {
            return ForkAction::None;
        };
        if !t.transferor_gone {
            let _ = self.send_in_dialog(now, layer, Side::A, Method::Bye, None, settings);
        }
        self.transfers_done.push(TransferPart {
            at: now,
            by: t.by,
            target: t.target,
            first_attempt: t.first_fork,
            before,
            route: t.route,
            by_caller: Some((self.callee.clone(), answered)),
        });
        self.a.dialog = Some(dialog);
        self.a.peer = peer;
        // The callee, maybe held by the caller, talks again.
        let held = self.held_by_us(Side::B);
        if held && self.line_side(Side::B).is_none() {
            self.reoffer(now, layer, Side::B, settings);
        }
        ForkAction::Answered {
            winner: self.winner.unwrap_or(i),
            a_dialog: Some(key),
            b_dialog: None,
        }
    }

    /// The answer to a re-INVITE pasarela sent after a transfer (to the far party taken off
    /// hold, or to the leg an attended transfer moved here): ACK it and take its SDP. `false`
    /// when `key` is not such a re-INVITE.
    pub(super) fn own_reinvite_answered(
        &mut self,
        layer: &mut TransactionLayer,
        key: &ClientKey,
        resp: &Response,
        settings: &CallSettings,
    ) -> bool {
        let Some(pos) = self.own_reinvite.iter().position(|(k, _)| k == key) else {
            return false;
        };
        let (_, side) = self.own_reinvite.remove(pos);
        if (200..300).contains(&resp.status) {
            if let Some(d) = self.dialog_mut(side) {
                d.refresh_target(&resp.headers);
                let peer = d.peer;
                let seq = resp.headers.cseq().map_or(0, |c| c.seq);
                let via = our_via(&peer, layer.new_branch(), local_host(&peer, settings));
                let ack = d.ack(seq, via);
                layer.send_stateless(peer, &Message::Request(ack));
            }
            if let Some(Ok(answer)) = sdp_of(&resp.headers, &resp.body) {
                match side {
                    Side::A => self
                        .sdp
                        .answer_in_ack(Side::A, &answer, self.relay.as_deref()),
                    Side::B => {
                        let policy = self
                            .winner
                            .and_then(|w| self.forks.get(w))
                            .map_or(Default::default(), |f| f.srtp);
                        if let Err((_, why)) = self.sdp.b_answers(
                            &answer,
                            self.relay_port(Side::A),
                            self.relay.as_deref(),
                            policy,
                        ) {
                            tracing::warn!(
                                call = self.id,
                                "the moved leg's answer not taken: {why}"
                            );
                        }
                    }
                }
            }
        } else {
            tracing::warn!(
                call = self.id,
                status = resp.status,
                ?side,
                "re-INVITE after a transfer refused"
            );
        }
        true
    }

    /// Attended transfer, on the consultation call: its answered far party (the winning fork)
    /// leaves this call for another; the transferor's leg (A) gets a BYE. `None` when the call
    /// has no such leg (not answered, or answered on a PSTN line).
    pub(in crate::b2bua) fn give_up_far_leg(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        settings: &CallSettings,
    ) -> Option<MovedLeg> {
        let w = self.winner?;
        if self.is_line_fork(w) || self.a_line.is_some() {
            return None;
        }
        let f = self.forks.get_mut(w)?;
        let dialog = f.dialog.take()?;
        let moved = MovedLeg {
            invite: f.invite.clone(),
            peer: f.peer,
            srtp: f.srtp,
            uri: f.uri.clone(),
            callee: self.callee.clone(),
            route: self.route.clone(),
            dialog,
        };
        let _ = self.send_in_dialog(now, layer, Side::A, Method::Bye, None, settings);
        self.outcome.get_or_insert((200, "answered"));
        self.retrans.clear();
        Some(moved)
    }

    /// Whether this call's caller leg is the dialog `r` names from the caller's side (its
    /// Call-ID, our tag as the To tag, the caller's tag as the From tag), answered.
    pub(in crate::b2bua) fn caller_dialog_is(&self, r: &crate::sip::replaces::Replaces) -> bool {
        self.a.dialog.as_ref().is_some_and(|d| {
            d.call_id == r.call_id
                && d.local.tag() == Some(r.to_tag.as_str())
                && d.remote.tag() == Some(r.from_tag.as_str())
        })
    }

    /// Attended transfer, on the transferred call: the leg `moved` from the consultation
    /// call becomes leg B (re-INVITEd onto this call's relay), the transferor is told and
    /// released. Returns the new leg's dialog key and the re-INVITE to track.
    pub(in crate::b2bua) fn adopt_leg(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        moved: MovedLeg,
        transferor: &str,
        settings: &CallSettings,
    ) -> (Option<(String, String)>, Vec<ClientKey>) {
        let key = (
            moved.dialog.call_id.clone(),
            moved.dialog.local.tag().unwrap_or_default().to_owned(),
        );
        self.labels
            .push(format!("{LABEL} {} (by {transferor})", moved.callee));
        self.ring_limits.push(None);
        self.stage = self.labels.len() - 1;
        let policy = moved.srtp;
        self.forks.push(Fork {
            key: None,
            invite: moved.invite,
            peer: moved.peer,
            state: ForkState::Answered,
            status: 200,
            reason: None,
            dialog: Some(moved.dialog),
            stage: self.stage,
            uri: moved.uri,
            responded: true,
            auth: None,
            auth_sent: false,
            srtp: policy,
            line: None,
        });
        let i = self.forks.len() - 1;
        let old = self.winner;
        self.transfers_done.push(TransferPart {
            at: now,
            by: transferor.to_owned(),
            target: moved.callee.clone(),
            first_attempt: i,
            before: old
                .and_then(|o| self.forks.get(o))
                .map(|f| (f.stage, f.uri.clone())),
            route: moved.route.clone(),
            by_caller: None,
        });
        let _ = self.notify_transferor(now, layer, 200, "OK", true, settings);
        self.transfer = None;
        if let Some(d) = old
            .and_then(|o| self.forks.get_mut(o))
            .and_then(|f| f.dialog.as_mut())
        {
            let peer = d.peer;
            let bye = d.request(
                Method::Bye,
                our_via(&peer, layer.new_branch(), local_host(&peer, settings)),
            );
            layer.send_request(now, bye, peer);
        }
        self.winner = Some(i);
        let mut keys = Vec::new();
        // The moved party gets this call's relay: a re-INVITE with our offer for leg B.
        if let Some(offer) = self.sdp.offer_for_b(policy) {
            let body = Bytes::from(offer.encode());
            if let Some((k, _)) = self.send_in_dialog(
                now,
                layer,
                Side::B,
                Method::Invite,
                Some(("application/sdp", body)),
                settings,
            ) {
                self.own_reinvite.push((k, Side::B));
                keys.push(k);
            }
        }
        // The far party, maybe held by the transferor, talks again.
        let held = self.held_by_us(Side::A);
        if held && self.a_line.is_none() {
            if let Some(k) = self.reoffer(now, layer, Side::A, settings) {
                keys.push(k);
            }
        }
        tracing::info!(
            call = self.id,
            fork = i,
            "attended transfer: the consultation's far party joined"
        );
        (Some(key), keys)
    }

    /// The transfer cannot be done (attended: no such consultation call): the transferor hears
    /// `status`; what the owner does next.
    pub(in crate::b2bua) fn transfer_refused(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        status: u16,
        reason: &str,
        settings: &CallSettings,
    ) -> ForkAction {
        let k = self.transfer_failed(now, layer, status, reason, settings);
        self.after_transfer(k)
    }
}

/// A leg moved from one call to another by an attended transfer.
pub struct MovedLeg {
    invite: Request,
    peer: Peer,
    srtp: crate::b2bua::SrtpPolicy,
    uri: String,
    /// What the consultation call dialled (the moved party's number, for the record).
    callee: String,
    /// The consultation call's route (a number outside the office), for the record.
    route: Option<std::sync::Arc<crate::routing::router::Route>>,
    dialog: Dialog,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::{parse_message, Framing, Limits};

    fn refer(refer_to: &str) -> Request {
        let text = format!(
            "REFER sip:pasarela@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:101@h>;tag=1\r\nTo: <sip:100@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REFER\r\n\
{refer_to}Content-Length: 0\r\n\r\n"
        );
        match parse_message(Bytes::from(text), Framing::Datagram, &Limits::default()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refer_to_targets() {
        let (t, r) = refer_target(&refer("Refer-To: <sip:102@example.org>\r\n")).unwrap();
        assert_eq!(t.to_string(), "sip:102@example.org");
        assert!(r.is_none());
        let (t, _) = refer_target(&refer("r: sip:102@example.org\r\n")).unwrap();
        assert_eq!(t.to_string(), "sip:102@example.org");
        assert_eq!(refer_target(&refer("")).unwrap_err().0, 400);
        let (t, r) = refer_target(&refer(
            "Refer-To: <sip:102@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>\r\n",
        ))
        .unwrap();
        assert_eq!(t.to_string(), "sip:102@h");
        let r = r.unwrap();
        assert_eq!(
            (r.call_id.as_str(), r.to_tag.as_str(), r.from_tag.as_str()),
            ("abc@h", "1", "2")
        );
        assert_eq!(
            refer_target(&refer("Refer-To: <sip:102@h?Replaces=abc>\r\n"))
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(
            refer_target(&refer("Refer-To: <mailto:x@y>\r\n"))
                .unwrap_err()
                .0,
            416
        );
    }
}
