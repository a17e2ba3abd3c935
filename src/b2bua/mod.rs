//! Call control: the back-to-back user agent. Each call pairs the caller's leg (a UAS dialog,
//! "A") with one or more callee forks (UAC dialogs, "B"); the first fork to answer wins and the
//! others are cancelled. Forks are grouped in stages tried one after the other (serial
//! failover: direct SIP destinations first, a PSTN trunk last); the forks of a stage ring in
//! parallel, and forks towards a trunk answer its digest challenge once. Requests, responses
//! and SDP are mapped between the legs, media is anchored on a relay, and every call is torn
//! down completely — timers, transactions, relay ports, legs on PSTN lines — however it ends.
//! Sans-IO: it drives the transaction layer it is handed, reads time from its arguments, gets
//! media through a [`MediaPort`] (no socket is bound and no task spawned here) and reaches
//! PSTN lines through [`LineCommand`]s and [`LineEvent`]s ([`line_leg`]).

mod call;
pub mod line_leg;
mod sdp_flow;
pub mod srtp;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::hashing::{IdMap, WireMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::media::port::MediaPort;
use crate::media::MediaEvent;
use crate::sip::message::{Request, Response};
use crate::sip::peer::Peer;
use crate::sip::transaction::{ClientKey, ServerKey, TransactionLayer};
use crate::sip::uri::Uri;

pub use call::forward::{ForwardRequest, ForwardRule};
/// Methods pasarela implements, advertised in Allow (by call control's answers and the
/// B2BUA's requests).
pub const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, MESSAGE, SUBSCRIBE, PRACK, REFER";

pub use call::pickup::{PickUp, Replaced, COMPLETED_ELSEWHERE, LABEL as PICKUP_LABEL};
pub use call::redirect::{contacts_by_q, Redirect, RedirectDecision};
pub use call::transfer::{TransferAsk, TransferDecision, TransferPart, LABEL as TRANSFER_LABEL};
pub use call::{Attempt, CallSummary, CallView, ForkView, LiveCall, LiveState, UpCall};
use call::{Call, ClientRole, TimerKind};
pub use line_leg::{LegId, LineCommand, LineEvent, LineTarget};
pub use srtp::{SrtpPolicies, SrtpPolicy};

/// Settings of call control (from `[calls]`, `[sip]` and `[media]`).
#[derive(Debug, Clone)]
pub struct CallSettings {
    pub domain: String,
    pub server_name: String,
    pub no_answer: Duration,
    pub max_duration: Duration,
    /// The address put in SDP for the relay.
    pub media_ip: IpAddr,
    /// Timer T1 (2xx retransmission to the caller).
    pub t1: Duration,
    pub t2: Duration,
    /// How long a stage of a route may stay completely silent (no response at all, not even
    /// 100 Trying) before it is abandoned for the next stage. Unused for single-stage calls.
    pub failover_after: Duration,
    /// SRTP policies of extensions, trunks and peers (`srtp` keys of the configuration).
    pub srtp: SrtpPolicies,
}

impl CallSettings {
    /// The default of [`CallSettings::failover_after`].
    pub const DEFAULT_FAILOVER_AFTER: Duration = Duration::from_secs(4);
}

/// Where to send a fork of a call: one registered contact of the callee, or a SIP
/// destination outside the office (found through ENUM, or a trunk).
#[derive(Debug, Clone)]
pub struct Target {
    /// The Request-URI.
    pub uri: Uri,
    pub peer: Peer,
    /// The To URI for destinations that are not our extensions (`None`: callee@domain).
    pub to: Option<Uri>,
    /// Credentials for a destination that challenges our INVITE (401/407).
    pub auth: Option<TrunkAuth>,
    /// The user part of our From towards this destination (`None`: the caller's extension).
    /// Outside the office that is the caller's DID, so that the called party sees a number it
    /// can call back.
    pub from_user: Option<String>,
    /// The called party's SRTP policy.
    pub srtp: SrtpPolicy,
    /// How the caller is presented to a trunk (`None`: the From alone).
    pub presentation: Option<Presentation>,
    /// A PSTN line to dial instead of sending the INVITE (`uri` and `peer` then only describe
    /// the fork for records and the live page).
    pub line: Option<LineTarget>,
}

/// The caller's presentation towards a trunk: its From and its identity header (RFC 3325).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presentation {
    /// The From user instead of the caller's number (the trunk's `from_user`); the caller's
    /// number then travels in the identity header.
    pub from_user: Option<String>,
    /// The From host (`from_domain`; default the office's domain).
    pub from_host: Option<String>,
    /// `P-Asserted-Identity`, `P-Preferred-Identity`, or none.
    pub identity_header: Option<&'static str>,
}

/// The account pasarela holds with a SIP trunk, for answering its digest challenges.
#[derive(Clone)]
pub struct TrunkAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for TrunkAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// One stage of a route: targets rung in parallel; the next stage is tried when they all
/// fail (except busy/decline) or stay silent for [`CallSettings::failover_after`].
#[derive(Debug, Clone)]
pub struct Stage {
    pub targets: Vec<Target>,
    /// What the stage is, for logs, billing and the route explainer (e.g. "enum", "trunk").
    pub label: String,
    /// How long the stage may ring before the next one is tried, however alive it is (a ring
    /// group member's turn); `None`: until it fails or stays silent.
    pub ring_for: Option<Duration>,
}

/// Who is calling: the authenticated extension.
#[derive(Debug, Clone)]
pub struct Caller {
    pub number: String,
    pub name: Option<String>,
    /// Where a call from outside the office came from (`trunk carrier`, `DUNDi peer …`,
    /// `internet …`), for its record; `None` for the office's phones and lines.
    pub origin: Option<String>,
    /// The caller's SRTP policy.
    pub srtp: SrtpPolicy,
}

/// A call to start: the caller's INVITE (its server transaction and flow), who is calling,
/// and where to ring: `targets` first (stage 0), then each `fallback` stage in turn (stage
/// 1, 2, …).
pub struct NewCall {
    pub key: ServerKey,
    pub invite: Request,
    pub peer: Peer,
    pub caller: Caller,
    pub targets: Vec<Target>,
    pub fallback: Vec<Stage>,
    /// What the first stage is (`extension 101`, `ENUM e164.arpa`), for records and logs.
    pub label: String,
    /// The routing decision that produced the stages, kept for the call's record.
    pub route: Option<std::sync::Arc<crate::routing::router::Route>>,
    /// How long the first stage rings before the fallback is tried (a ring group member's
    /// turn); `None`: until it fails.
    pub ring_for: Option<Duration>,
}

/// All calls in progress.
pub struct Calls {
    settings: CallSettings,
    /// Where each call's media (its relay) comes from; `None`: calls without media anchoring.
    media: Option<Box<dyn MediaPort>>,
    /// Boxed: a `Call` is a few KiB, and a map holds up to twice its length in slots.
    calls: IdMap<u64, Box<Call>>,
    by_server: IdMap<ServerKey, u64>,
    by_client: IdMap<ClientKey, ClientRole>,
    /// (Call-ID, our tag) of each leg's dialog -> call.
    by_dialog: WireMap<(String, String), u64>,
    /// What each call in progress was entered under in the three maps above, so that ending
    /// it touches only those entries (not a scan of every map per ended call).
    owned: IdMap<u64, Vec<Owned>>,
    /// Calls in progress per caller number and per origin (O(1) limits per new call).
    by_caller: WireMap<String, usize>,
    by_origin: WireMap<String, usize>,
    timers: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
    next_id: u64,
    tag_seed: u64,
    finished: Vec<CallSummary>,
    /// Why calls in `finished` were refused by pasarela itself (no media ports, bad SDP), by
    /// call id, for their records.
    notes: Vec<(u64, String)>,
    /// Calls answered since the last [`Calls::take_answered`], for their in-progress records.
    answered: Vec<u64>,
    /// Commands for PSTN lines of calls that ended.
    line_out: Vec<LineCommand>,
    /// 3xx waiting for the owner's check ([`Calls::take_redirects`]).
    redirects: Vec<Redirect>,
    /// Transfers (REFER) waiting for the owner's check ([`Calls::take_transfers`]).
    transfers: Vec<TransferAsk>,
    /// Calls waiting for the owner's forward decision ([`Calls::take_forwards`]).
    forwards: Vec<ForwardRequest>,
}

/// An entry a call owns in one of the lookup maps of [`Calls`].
enum Owned {
    Server(ServerKey),
    Client(ClientKey),
    /// Boxed: two strings, and most entries are keys.
    Dialog(Box<(String, String)>),
}

/// Maps client transaction `key` to `role`, remembering it as the call's when the role names
/// a call in progress.
fn map_client(
    by_client: &mut IdMap<ClientKey, ClientRole>,
    owned: &mut IdMap<u64, Vec<Owned>>,
    key: ClientKey,
    role: ClientRole,
) {
    if let ClientRole::Fork(id, _) | ClientRole::InDialog(id) = role {
        if let Some(o) = owned.get_mut(&id) {
            o.push(Owned::Client(key));
        }
    }
    by_client.insert(key, role);
}

/// Maps a dialog (Call-ID, our tag) to call `id`, remembering it as the call's.
fn map_dialog(
    by_dialog: &mut WireMap<(String, String), u64>,
    owned: &mut IdMap<u64, Vec<Owned>>,
    dialog: (String, String),
    id: u64,
) {
    if let Some(o) = owned.get_mut(&id) {
        o.push(Owned::Dialog(Box::new(dialog.clone())));
    }
    by_dialog.insert(dialog, id);
}

/// One call fewer under `key`; the entry goes at zero.
fn uncount(counts: &mut WireMap<String, usize>, key: &str) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Calls {
    /// `media`: where calls get their relay (its events reach the port's sink tagged with the
    /// call id); `None`: calls without media anchoring, as in unit tests.
    pub fn new(settings: CallSettings, media: Option<Box<dyn MediaPort>>, seed: u64) -> Calls {
        Calls {
            settings,
            media,
            calls: IdMap::default(),
            by_server: IdMap::default(),
            by_client: IdMap::default(),
            by_dialog: WireMap::default(),
            owned: IdMap::default(),
            by_caller: WireMap::default(),
            by_origin: WireMap::default(),
            timers: BinaryHeap::new(),
            next_id: 1,
            tag_seed: seed | 1,
            finished: Vec::new(),
            notes: Vec::new(),
            answered: Vec::new(),
            line_out: Vec::new(),
            redirects: Vec::new(),
            transfers: Vec::new(),
            forwards: Vec::new(),
        }
    }

    /// Numbers the next calls after `last` (the highest call reference already in the
    /// store), so that references stay unique across restarts.
    pub fn continue_ids_after(&mut self, last: u64) {
        self.next_id = self.next_id.max(last.saturating_add(1));
    }

    /// Calls in progress.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Every call in progress, oldest first, for the live page.
    pub fn live(&self, now: Instant) -> Vec<LiveCall> {
        let mut v: Vec<LiveCall> = self.calls.values().map(|c| c.live(now)).collect();
        v.sort_by(|a, b| b.age.cmp(&a.age).then(a.id.cmp(&b.id)));
        v
    }

    /// A PRACK from the caller of a call not answered yet (its early dialog is not in the
    /// dialog map): answered here. `false` when it belongs to no call.
    pub fn prack(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ServerKey,
        req: &Request,
    ) -> bool {
        match self.calls.values_mut().find(|c| c.is_caller_prack(req)) {
            Some(call) => {
                call.prack_from_caller(now, layer, key, req);
                true
            }
            None => false,
        }
    }

    /// 3xx responses to check since the last call: each call waits for
    /// [`Calls::redirect_decided`] on its redirect before it moves on.
    pub fn take_redirects(&mut self) -> Vec<Redirect> {
        std::mem::take(&mut self.redirects)
    }

    /// The owner's decision on a redirect (see [`Calls::take_redirects`]).
    pub fn redirect_decided(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        fork: usize,
        decision: RedirectDecision,
    ) {
        let action = match self.calls.get_mut(&call) {
            Some(c) => c.redirect_decided(now, layer, fork, decision),
            None => return,
        };
        self.apply(now, layer, call, action);
    }

    /// Transfers asked since the last call: each call waits for [`Calls::transfer_decided`]
    /// (its transferor has had 202 and "100 Trying").
    pub fn take_transfers(&mut self) -> Vec<TransferAsk> {
        std::mem::take(&mut self.transfers)
    }

    /// The owner's decision on a transfer (see [`Calls::take_transfers`]): the targets ring
    /// as new forks of the call, or the transferor is told the refusal.
    pub fn transfer_decided(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        decision: TransferDecision,
    ) {
        let n = decision.targets();
        let dialogs: Vec<(String, String)> = (0..n)
            .map(|_| (format!("{}@pasarela", self.token()), self.token()))
            .collect();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let (forks, notify) = c.transfer_decided(now, layer, decision, dialogs, &self.settings);
        let ringing = c.transfer_ringing();
        let action = if ringing {
            notify.map_or(call::ForkAction::None, call::ForkAction::Track)
        } else {
            c.after_transfer(notify)
        };
        for (idx, key) in forks {
            map_client(
                &mut self.by_client,
                &mut self.owned,
                key,
                ClientRole::Fork(call, idx),
            );
        }
        if ringing {
            self.schedule(
                now + self.settings.no_answer,
                call,
                TimerKind::TransferTimeout,
            );
        }
        self.apply(now, layer, call, action);
    }

    /// Calls whose extension forwards them since the last call: each waits for
    /// [`Calls::forward_decided`].
    pub fn take_forwards(&mut self) -> Vec<ForwardRequest> {
        std::mem::take(&mut self.forwards)
    }

    /// The owner's decision on a forward (see [`Calls::take_forwards`]): stages to ring, or
    /// the refusal the caller gets; `note` is what the record says about the forward.
    pub fn forward_decided(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        call: u64,
        decision: Result<Vec<Stage>, (u16, String)>,
        note: String,
    ) {
        let action = match self.calls.get_mut(&call) {
            Some(c) => c.forward_decided(now, layer, decision, note),
            None => return,
        };
        self.apply(now, layer, call, action);
    }

    /// Starts a call to an extension with its forwards armed (`rule`), and what its record
    /// says when it is already a forward (`note`). Returns the call's id.
    pub fn start_forwarding(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        new: NewCall,
        rule: Option<ForwardRule>,
        note: Option<String>,
    ) -> u64 {
        self.start_with(now, layer, new, None, (rule, note, false))
    }

    /// [`Calls::start_forwarding`] for a call whose caller is a PSTN line (its RTP at `audio`,
    /// see [`Calls::start_from_line`]). With `awaiting`, nothing rings yet: the call waits for
    /// the owner's [`Calls::forward_decided`] (a forward to a number waiting for the router).
    #[allow(clippy::too_many_arguments)]
    pub fn start_from_line_forwarding(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        new: NewCall,
        audio: std::net::SocketAddr,
        rule: Option<ForwardRule>,
        note: Option<String>,
        awaiting: bool,
    ) -> u64 {
        let a_line = call::ALine::new(audio, self.settings.media_ip);
        self.start_with(now, layer, new, Some(a_line), (rule, note, awaiting))
    }

    /// Attended transfer (REFER with Replaces) on call `id`: the transferor's consultation
    /// call named by the Replaces gives its far party to call `id`, where it takes the
    /// transferor's place; both of the transferor's legs end. The consultation call must be
    /// one the transferor placed and that is answered; otherwise the transferor hears 481.
    fn attended(&mut self, now: Instant, layer: &mut TransactionLayer, id: u64, ask: TransferAsk) {
        let Some(r) = ask.replaces.as_ref() else {
            return;
        };
        let other = self
            .calls
            .iter()
            .find(|(cid, c)| {
                **cid != id && c.caller.number == ask.transferor && c.caller_dialog_is(r)
            })
            .map(|(cid, _)| *cid);
        let moved = other.and_then(|o| {
            self.calls
                .get_mut(&o)
                .and_then(|c| c.give_up_far_leg(now, layer, &self.settings))
                .map(|m| (o, m))
        });
        let Some((other, moved)) = moved else {
            tracing::info!(
                call = id,
                "attended transfer: no answered call of the transferor matches the Replaces"
            );
            let action = match self.calls.get_mut(&id) {
                Some(c) => c.transfer_refused(
                    now,
                    layer,
                    481,
                    "Call/Transaction Does Not Exist",
                    &self.settings,
                ),
                None => return,
            };
            self.apply(now, layer, id, action);
            return;
        };
        tracing::info!(call = id, consultation = other, "attended transfer");
        // The consultation call ends (its transferor leg got a BYE); its far party lives on here.
        self.finish(now, layer, other);
        let Some(c) = self.calls.get_mut(&id) else {
            return;
        };
        let (dialog, keys) = c.adopt_leg(now, layer, moved, &ask.transferor, &self.settings);
        if let Some(d) = dialog {
            map_dialog(&mut self.by_dialog, &mut self.owned, d, id);
        }
        for k in keys {
            map_client(
                &mut self.by_client,
                &mut self.owned,
                k,
                ClientRole::InDialog(id),
            );
        }
        self.answered.push(id);
    }

    /// Every call in progress as the watchers of extensions see it (busy lamps, pickup).
    pub fn views(&self) -> Vec<CallView> {
        self.calls.values().map(|c| c.view()).collect()
    }

    /// Client transactions still mapped (for leak checks).
    pub fn pending_transactions(&self) -> usize {
        self.by_client.len()
    }

    /// Entries of the other lookup maps (server transactions, dialogs, what each call owns,
    /// the per-caller and per-origin counts), for leak checks: 0 once every call has ended.
    pub fn index_entries(&self) -> usize {
        self.by_server.len()
            + self.by_dialog.len()
            + self.owned.len()
            + self.by_caller.len()
            + self.by_origin.len()
    }

    /// Summaries of calls that ended since the last call (for the billing records).
    pub fn take_finished(&mut self) -> Vec<CallSummary> {
        std::mem::take(&mut self.finished)
    }

    /// Why some of the calls of [`Calls::take_finished`] were refused by pasarela itself
    /// (`(call id, reason)`), for their records. Take them before the summaries.
    pub fn take_notes(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.notes)
    }

    /// Calls in progress from extension `caller` (for the concurrent-call limit).
    pub fn count_by_caller(&self, caller: &str) -> usize {
        self.by_caller.get(caller).copied().unwrap_or(0)
    }

    /// Calls whose current route stage is `label` (`trunk carrier`), for a trunk's limit.
    /// Calls that came in from `origin` (`trunk carrier`).
    pub fn count_by_origin(&self, origin: &str) -> usize {
        self.by_origin.get(origin).copied().unwrap_or(0)
    }

    /// Calls whose current stage is `label` (`trunk carrier`: calls out on that trunk).
    pub fn count_on_stage(&self, label: &str) -> usize {
        self.calls
            .values()
            .filter(|c| c.stage_label(c.stage()) == label)
            .count()
    }

    /// Gives memory back after a flood: maps far larger than what they hold are shrunk.
    pub fn shrink(&mut self) {
        use crate::memory::shrink_map as shrink;
        shrink(&mut self.calls);
        shrink(&mut self.by_server);
        shrink(&mut self.by_client);
        shrink(&mut self.by_dialog);
        shrink(&mut self.owned);
        // Timers of ended calls are deleted lazily ([`Calls::finish`] prunes only when they
        // dominate): here every one left goes, so none outlives its call by more than a tick.
        let calls = &self.calls;
        self.timers
            .retain(|Reverse((_, id, _))| calls.contains_key(id));
        if self.timers.capacity() > 4 * self.timers.len() + 1024 {
            self.timers.shrink_to_fit();
        }
    }

    /// The calls answered since the last call, each with what its in-progress record and a
    /// hang-up after a crash need: its summary so far and the dialogs of both legs.
    pub fn take_answered(&mut self, now: Instant) -> Vec<UpCall> {
        if self.answered.is_empty() {
            return Vec::new();
        }
        let ids = std::mem::take(&mut self.answered);
        ids.into_iter()
            .filter_map(|id| self.calls.get(&id).and_then(|c| c.up(now)))
            .collect()
    }

    /// Every answered call in progress, as [`Calls::take_answered`] gives them (for the
    /// periodic refresh of their stored state).
    pub fn up_calls(&self, now: Instant) -> Vec<UpCall> {
        self.calls.values().filter_map(|c| c.up(now)).collect()
    }

    fn token(&mut self) -> String {
        self.tag_seed ^= self.tag_seed << 13;
        self.tag_seed ^= self.tag_seed >> 7;
        self.tag_seed ^= self.tag_seed << 17;
        let mut t = String::with_capacity(16);
        crate::sip::transaction::push_hex(&mut t, self.tag_seed, 16);
        t
    }

    fn schedule(&mut self, at: Instant, id: u64, kind: TimerKind) {
        self.timers.push(Reverse((at, id, kind)));
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _, _))| *t)
    }

    /// A new INVITE from an authenticated extension to the given targets (already resolved).
    /// Stages without targets are skipped; a call with no target at all is answered 480.
    pub fn start(&mut self, now: Instant, layer: &mut TransactionLayer, new: NewCall) {
        self.start_with(now, layer, new, None, (None, None, false));
    }

    /// How a call that arrived on a PSTN line enters call control: the description of its
    /// caller's leg as an INVITE from `caller` (E.164, `None` when withheld) to `callee`
    /// offering the line's G.711 at `audio`, with a server key and flow of its own. Nothing of
    /// it is ever sent; [`NewCall`] takes it and [`Calls::start_from_line`] starts the call.
    pub fn line_invite(
        &mut self,
        layer: &mut TransactionLayer,
        caller: Option<&str>,
        callee: &str,
        audio: std::net::SocketAddr,
    ) -> (ServerKey, Request, Peer) {
        let branch = layer.new_branch();
        let token = self.token();
        let invite = call::line_invite(caller, callee, audio, branch, &token, &self.settings);
        let peer = Peer {
            proto: crate::sip::peer::Proto::Udp,
            remote: audio,
            local: audio,
        };
        (layer.detached_server_key(), invite, peer)
    }

    /// Starts a call whose caller is a PSTN line (its RTP at `audio`); `new` carries what
    /// [`Calls::line_invite`] gave. No SIP is exchanged with the line. Returns the call's id
    /// (its leg on the line is `LegId { call: id, fork: LegId::INCOMING }`).
    pub fn start_from_line(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        new: NewCall,
        audio: std::net::SocketAddr,
    ) -> u64 {
        let a_line = call::ALine::new(audio, self.settings.media_ip);
        self.start_with(now, layer, new, Some(a_line), (None, None, false))
    }

    fn start_with(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        new: NewCall,
        a_line: Option<call::ALine>,
        (rule, note, awaiting): (Option<ForwardRule>, Option<String>, bool),
    ) -> u64 {
        let NewCall {
            key,
            invite,
            peer,
            caller,
            targets,
            fallback,
            label,
            route,
            ring_for: first_ring_for,
        } = new;
        let id = self.next_id;
        self.next_id += 1;
        let a_tag = self.token();
        let a_mux = crate::sdp::body_offers_rtcp_mux(&invite.body);
        let mut call = Call::new(id, now, key, invite, peer, a_tag, caller, &self.settings);
        call.a_line = a_line.map(Box::new);
        let no_answer_forward = rule.as_ref().and_then(|r| r.no_answer);
        call.arm_forwards(rule, note);
        if awaiting {
            call.await_forward();
        }
        let relay = match self.media.as_mut() {
            // A caller offering RTCP multiplexing gets it (our answer accepts it): its leg
            // needs no RTCP socket.
            Some(port) => match port.allocate_muxed(id, a_mux) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!("no media relay for a new call: {e}");
                    let why = "No media ports available";
                    call.respond_a(now, layer, 503, Some(why), None);
                    call.route = route;
                    call.outcome = Some((503, "failed"));
                    self.notes.push((id, why.to_owned()));
                    self.finished.push(call.summary(now));
                    self.line_out.append(&mut call.line_out);
                    return id;
                }
            },
            None => None,
        };
        call.relay = relay;
        call.route = route;
        if let Err((status, reason)) = call.prepare_offer(&self.settings) {
            call.respond_a(now, layer, status, Some(&reason), None);
            call.outcome = Some((status, "failed"));
            self.notes.push((id, reason));
            self.finished.push(call.summary(now));
            self.line_out.append(&mut call.line_out);
            return id;
        }
        let mut stages = vec![Stage {
            targets,
            label,
            ring_for: first_ring_for,
        }];
        stages.extend(fallback);
        call.set_route(stages);
        tracing::info!(call = id, from = %call.caller.number, to = %call.callee(), stages = call.stages_left(), "call started");
        *self
            .by_caller
            .entry(call.caller.number.clone())
            .or_default() += 1;
        if let Some(origin) = &call.caller.origin {
            *self.by_origin.entry(origin.clone()).or_default() += 1;
        }
        self.owned.insert(id, vec![Owned::Server(key)]);
        self.by_server.insert(key, id);
        self.calls.insert(id, Box::new(call));
        self.schedule(now + self.settings.no_answer, id, TimerKind::NoAnswer);
        if let Some(after) = no_answer_forward {
            self.schedule(now + after, id, TimerKind::ForwardNoAnswer);
        }
        if !awaiting {
            self.next_stage(now, layer, id);
        }
        id
    }

    /// Rings the next stage of call `id`: its still-pending forks (a silent stage) are
    /// cancelled first; with no stage left the caller gets the best failure.
    fn next_stage(&mut self, now: Instant, layer: &mut TransactionLayer, id: u64) {
        self.cancel_forks(now, layer, id, None);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(targets) = call.next_stage() else {
            let action = match call.forward_on_failure() {
                Some(forward) => forward,
                None => call.fail(now, layer),
            };
            self.apply(now, layer, id, action);
            return;
        };
        let dialogs: Vec<(String, String)> = targets
            .iter()
            .map(|_| (format!("{}@pasarela", self.token()), self.token()))
            .collect();
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        let forks = targets.len();
        for (target, (call_id, tag)) in targets.into_iter().zip(dialogs) {
            let fork_key = call.send_fork(now, layer, target, call_id, tag, &self.settings);
            let idx = call.forks.len() - 1;
            if let Some(k) = fork_key {
                map_client(
                    &mut self.by_client,
                    &mut self.owned,
                    k,
                    ClientRole::Fork(id, idx),
                );
            }
        }
        let stage = call.stage();
        tracing::info!(call = id, stage, label = %call.stage_label(stage), forks, "ringing stage");
        if call.stages_left() > 0 {
            let ring_for = call.stage_ring_for();
            let at = now + self.settings.failover_after;
            self.schedule(at, id, TimerKind::Failover(stage));
            if let Some(ring_for) = ring_for {
                self.schedule(now + ring_for, id, TimerKind::RingTimeout(stage));
            }
        }
    }

    /// A CANCEL matched the caller's INVITE (the layer already answered the CANCEL).
    pub fn cancel(&mut self, now: Instant, layer: &mut TransactionLayer, key: ServerKey) -> bool {
        let Some(&id) = self.by_server.get(&key) else {
            return false;
        };
        if let Some(call) = self.calls.get_mut(&id) {
            if call.winner.is_none() {
                call.respond_a(now, layer, 487, None, None);
                call.outcome = Some((487, "cancelled"));
                self.cancel_forks(now, layer, id, None);
                self.finish(now, layer, id);
            }
        }
        true
    }

    fn cancel_forks(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: u64,
        except: Option<usize>,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        for key in call.cancel_forks(now, layer, except) {
            self.by_client.insert(key, ClientRole::Ignore);
        }
    }

    /// A response to one of our client transactions.
    pub fn response(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ClientKey,
        resp: Response,
    ) {
        let Some(role) = self.by_client.get(&key).cloned() else {
            return;
        };
        let is_final = resp.status >= 200;
        // A fresh client nonce in case a trunk's challenge must be answered.
        let cnonce = if matches!(resp.status, 401 | 407) {
            self.token()
        } else {
            String::new()
        };
        match role {
            ClientRole::Ignore => {}
            ClientRole::Orphan(invite, peer) => {
                // A fork answered after the call ended: acknowledge and hang it up.
                if (200..300).contains(&resp.status) {
                    let via_branch = layer.new_branch();
                    let bye_branch = layer.new_branch();
                    if let Some((ack, bye)) =
                        call::ack_and_bye(&invite, &resp, peer, via_branch, bye_branch)
                    {
                        layer.send_stateless(peer, &crate::sip::message::Message::Request(ack));
                        let k = layer.send_request(now, bye, peer);
                        self.by_client.insert(k, ClientRole::Ignore);
                    }
                }
            }
            ClientRole::Fork(id, idx) => {
                let action = match self.calls.get_mut(&id) {
                    Some(call) => {
                        call.fork_response(now, layer, idx, resp, &cnonce, &self.settings)
                    }
                    None => call::ForkAction::None,
                };
                self.apply(now, layer, id, action);
            }
            ClientRole::InDialog(id) => {
                let action = match self.calls.get_mut(&id) {
                    Some(call) => call.in_dialog_response(now, layer, key, resp, &self.settings),
                    None => call::ForkAction::None,
                };
                self.apply(now, layer, id, action);
            }
        }
        if is_final {
            // Keep orphaned INVITE forks mapped until their final response (handled above).
            self.by_client.remove(&key);
        }
    }

    /// A client transaction timed out (Timer B/F) or its transport failed.
    pub fn timeout(&mut self, now: Instant, layer: &mut TransactionLayer, key: ClientKey) {
        let Some(role) = self.by_client.remove(&key) else {
            return;
        };
        match role {
            ClientRole::Fork(id, idx) => {
                let action = match self.calls.get_mut(&id) {
                    Some(call) => call.fork_failed(now, layer, idx, 408),
                    None => call::ForkAction::None,
                };
                self.apply(now, layer, id, action);
            }
            ClientRole::InDialog(id) => {
                let action = match self.calls.get_mut(&id) {
                    Some(call) => call.in_dialog_timeout(now, layer, key),
                    None => call::ForkAction::None,
                };
                self.apply(now, layer, id, action);
            }
            ClientRole::Ignore | ClientRole::Orphan(..) => {}
        }
    }

    /// A client transaction ended because its transport failed (a refused TCP connection):
    /// like a timeout, but at once and as a 503 with `reason`.
    pub fn transport_failed(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ClientKey,
        reason: &str,
    ) {
        match self.by_client.get(&key) {
            Some(ClientRole::Fork(id, idx)) => {
                let (id, idx) = (*id, *idx);
                self.by_client.remove(&key);
                let action = match self.calls.get_mut(&id) {
                    Some(call) => call.fork_unreachable(now, layer, idx, reason),
                    None => call::ForkAction::None,
                };
                self.apply(now, layer, id, action);
            }
            _ => self.timeout(now, layer, key),
        }
    }

    fn apply(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: u64,
        action: call::ForkAction,
    ) {
        use call::ForkAction;
        match action {
            ForkAction::None => {}
            ForkAction::Answered {
                winner,
                a_dialog,
                b_dialog,
            } => {
                if let Some(a_dialog) = a_dialog {
                    map_dialog(&mut self.by_dialog, &mut self.owned, a_dialog, id);
                }
                if let Some(b_dialog) = b_dialog {
                    map_dialog(&mut self.by_dialog, &mut self.owned, b_dialog, id);
                }
                self.answered.push(id);
                self.cancel_forks(now, layer, id, Some(winner));
                if let Some(call) = self.calls.get(&id) {
                    let next = call.retrans_at();
                    let max = now + self.settings.max_duration;
                    if let Some(next) = next {
                        self.schedule(next, id, TimerKind::Retransmit);
                    }
                    self.schedule(max, id, TimerKind::MaxDuration);
                }
            }
            ForkAction::Retransmit => {
                if let Some(next) = self.calls.get(&id).and_then(|c| c.retrans_at()) {
                    self.schedule(next, id, TimerKind::Retransmit);
                }
            }
            ForkAction::Track(key) => {
                map_client(
                    &mut self.by_client,
                    &mut self.owned,
                    key,
                    ClientRole::InDialog(id),
                );
            }
            ForkAction::TrackFork(idx, key) => {
                map_client(
                    &mut self.by_client,
                    &mut self.owned,
                    key,
                    ClientRole::Fork(id, idx),
                );
            }
            ForkAction::TrackForks(forks) => {
                for (idx, key) in forks {
                    map_client(
                        &mut self.by_client,
                        &mut self.owned,
                        key,
                        ClientRole::Fork(id, idx),
                    );
                }
            }
            ForkAction::NextStage => self.next_stage(now, layer, id),
            ForkAction::Finished => self.finish(now, layer, id),
            ForkAction::Transfer { ask, notify } => {
                if let Some(k) = notify {
                    map_client(
                        &mut self.by_client,
                        &mut self.owned,
                        k,
                        ClientRole::InDialog(id),
                    );
                }
                if ask.replaces.is_some() {
                    self.attended(now, layer, id, *ask);
                } else {
                    self.transfers.push(*ask);
                }
            }
            ForkAction::Forward { extension, when } => {
                self.cancel_forks(now, layer, id, None);
                if let Some(call) = self.calls.get(&id) {
                    self.forwards.push(ForwardRequest {
                        call: id,
                        extension,
                        when,
                        caller: call.caller.clone(),
                    });
                }
            }
            ForkAction::Redirect { fork, contacts } => {
                if let Some(call) = self.calls.get(&id) {
                    self.redirects.push(Redirect {
                        call: id,
                        fork,
                        caller: call.caller.clone(),
                        contacts,
                        tried: call.tried(),
                    });
                }
            }
        }
    }

    /// An in-dialog request (To tag present). Returns `false` when it belongs to no call.
    pub fn in_dialog(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ServerKey,
        req: Request,
        peer: Peer,
    ) -> bool {
        let Some(id) = self.dialog_of(&req) else {
            return false;
        };
        let action = match self.calls.get_mut(&id) {
            Some(call) => call.in_dialog_request(now, layer, key, req, peer, &self.settings),
            None => return false,
        };
        self.apply(now, layer, id, action);
        true
    }

    /// An ACK outside any transaction: the ACK for a 2xx we sent.
    pub fn ack(&mut self, now: Instant, layer: &mut TransactionLayer, req: Request) {
        let Some(id) = self.dialog_of(&req) else {
            return;
        };
        let action = match self.calls.get_mut(&id) {
            Some(call) => call.ack(now, layer, req, &self.settings),
            None => return,
        };
        self.apply(now, layer, id, action);
    }

    /// A 2xx retransmission for an INVITE whose client transaction has ended: ACK it again.
    pub fn stray_response(&mut self, layer: &mut TransactionLayer, resp: Response, peer: Peer) {
        if !(200..300).contains(&resp.status)
            || resp
                .headers
                .cseq()
                .is_none_or(|c| c.method != crate::sip::method::Method::Invite)
        {
            return;
        }
        let Some(call_id) = resp.headers.call_id() else {
            return;
        };
        let Some(tag) = resp.headers.from().and_then(|f| f.tag()) else {
            return;
        };
        let Some(&id) = self.by_dialog.get(&(call_id.to_owned(), tag.to_owned())) else {
            return;
        };
        if let Some(call) = self.calls.get(&id) {
            call.reack(layer, &resp, peer);
        }
    }

    /// Whether the call started by the INVITE of server transaction `key` is in progress.
    pub fn has_server(&self, key: ServerKey) -> bool {
        self.by_server.contains_key(&key)
    }

    /// Whether an in-dialog request belongs to one of the calls.
    pub fn owns(&self, req: &Request) -> bool {
        self.dialog_of(req).is_some()
    }

    fn dialog_of(&self, req: &Request) -> Option<u64> {
        let call_id = req.headers.call_id()?;
        let tag = req.headers.to()?.tag()?;
        self.by_dialog
            .get(&(call_id.to_owned(), tag.to_owned()))
            .copied()
    }

    /// Media events (DTMF received, media dead) for a call.
    pub fn media_event(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: u64,
        event: MediaEvent,
    ) {
        let action = match self.calls.get_mut(&id) {
            Some(call) => call.media_event(now, layer, event, &self.settings),
            None => return,
        };
        self.apply(now, layer, id, action);
    }

    /// Ends every call because pasarela is stopping: answered calls get a BYE on both legs,
    /// ringing ones a 503 to the caller and a CANCEL to their forks. Each call's summary is
    /// kept for its record.
    pub fn end_all(&mut self, now: Instant, layer: &mut TransactionLayer) {
        let ids: Vec<u64> = self.calls.keys().copied().collect();
        for id in ids {
            let answered = match self.calls.get_mut(&id) {
                Some(call) if call.winner.is_some() => {
                    call.end_for_shutdown(now, layer, &self.settings);
                    true
                }
                Some(call) => {
                    call.respond_a(now, layer, 503, Some("Service Shutting Down"), None);
                    false
                }
                None => continue,
            };
            if !answered {
                self.cancel_forks(now, layer, id, None);
            }
            self.apply(now, layer, id, call::ForkAction::Finished);
        }
    }

    /// Ends call `id` from outside (the dashboard's hang-up): an answered call gets a BYE on
    /// both legs, a ringing one a 487 to the caller and a CANCEL to its forks. Returns whether
    /// the call existed.
    pub fn hang_up(&mut self, now: Instant, layer: &mut TransactionLayer, id: u64) -> bool {
        let answered = match self.calls.get_mut(&id) {
            Some(call) if call.winner.is_some() => {
                tracing::info!(call = id, "hung up from the dashboard");
                call.end_by_operator(now, layer, &self.settings);
                true
            }
            Some(call) => {
                tracing::info!(call = id, "hung up from the dashboard while ringing");
                call.respond_a(now, layer, 487, Some("Hung Up By Operator"), None);
                false
            }
            None => return false,
        };
        if !answered {
            self.cancel_forks(now, layer, id, None);
        }
        self.apply(now, layer, id, call::ForkAction::Finished);
        true
    }

    /// Fires due call timers.
    pub fn handle_timeout(&mut self, now: Instant, layer: &mut TransactionLayer) {
        while let Some(Reverse((at, id, kind))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let action = match self.calls.get_mut(&id) {
                Some(call) => call.timer(now, layer, kind, at, &self.settings),
                None => continue,
            };
            if kind == TimerKind::NoAnswer {
                if let call::ForkAction::Finished = action {
                    self.cancel_forks(now, layer, id, None);
                }
            }
            self.apply(now, layer, id, action);
        }
    }

    /// Removes a call and everything it owns. Forks still pending become orphans so that a
    /// late 2xx is acknowledged and hung up.
    fn finish(&mut self, _now: Instant, _layer: &mut TransactionLayer, id: u64) {
        let Some(mut call) = self.calls.remove(&id) else {
            return;
        };
        uncount(&mut self.by_caller, &call.caller.number);
        if let Some(origin) = &call.caller.origin {
            uncount(&mut self.by_origin, origin);
        }
        for owned in self.owned.remove(&id).unwrap_or_default() {
            match owned {
                Owned::Server(key) => {
                    if self.by_server.get(&key) == Some(&id) {
                        self.by_server.remove(&key);
                    }
                }
                Owned::Dialog(d) => {
                    if self.by_dialog.get(&*d) == Some(&id) {
                        self.by_dialog.remove(&*d);
                    }
                }
                Owned::Client(key) => {
                    let Some(role) = self.by_client.get_mut(&key) else {
                        continue;
                    };
                    match *role {
                        ClientRole::Fork(cid, idx) if cid == id => {
                            *role = match call.forks.get(idx) {
                                Some(f) => ClientRole::Orphan(Box::new(f.invite.clone()), f.peer),
                                None => ClientRole::Ignore,
                            };
                        }
                        ClientRole::InDialog(cid) if cid == id => *role = ClientRole::Ignore,
                        _ => {}
                    }
                }
            }
        }
        if let Some(note) = call.forward_note() {
            self.notes.push((id, note.to_owned()));
        }
        let summary = call.summary(_now);
        tracing::info!(
            call = id,
            status = summary.status,
            disposition = summary.disposition,
            "call ended"
        );
        call.relay = None;
        call.close_lines();
        self.line_out.append(&mut call.line_out);
        self.finished.push(summary);
        // Timers are deleted lazily; a finished call's long timers (max duration: hours) must
        // not pile up, so prune when stale entries dominate (amortised O(1) per call).
        if self.timers.len() > 4 * self.calls.len() + 1024 {
            let calls = &self.calls;
            self.timers
                .retain(|Reverse((_, id, _))| calls.contains_key(id));
        }
    }

    /// Sends BYE on a dialog that belongs to no call any more: a leg of a call that was up
    /// when a previous process died ([`crate::cdr::in_progress`]). The answer is ignored.
    pub fn hang_up_dialog(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        mut dialog: crate::sip::dialog::Dialog,
    ) {
        let peer = dialog.peer;
        let host = call::local_host(&peer, &self.settings);
        let via = call::our_via(&peer, layer.new_branch(), host);
        let bye = dialog.request(crate::sip::method::Method::Bye, via);
        let key = layer.send_request(now, bye, peer);
        self.by_client.insert(key, ClientRole::Ignore);
    }

    /// What a PSTN line reports about one of the calls' legs on it.
    pub fn line_event(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        leg: LegId,
        event: LineEvent,
    ) {
        let incoming = leg.fork == LegId::INCOMING;
        let action = match self.calls.get_mut(&leg.call) {
            Some(call) if incoming => call.a_line_event(now, layer, event, &self.settings),
            Some(call) => call.line_event(now, layer, leg.fork, event, &self.settings),
            None => return,
        };
        if incoming && matches!(action, call::ForkAction::Finished) {
            // The calling line gave up: what still rings is cancelled.
            self.cancel_forks(now, layer, leg.call, None);
        }
        self.apply(now, layer, leg.call, action);
    }

    /// The commands for the PSTN lines since the last call (dial, answer, digits, hang up),
    /// for the shell that drives the lines.
    pub fn take_line_commands(&mut self) -> Vec<LineCommand> {
        let mut out = std::mem::take(&mut self.line_out);
        for call in self.calls.values_mut() {
            if !call.line_out.is_empty() {
                out.append(&mut call.line_out);
            }
        }
        out
    }

    /// Legs on PSTN lines that calls in progress still hold (for leak checks).
    pub fn open_line_legs(&self) -> usize {
        self.calls.values().map(|c| c.open_line_legs()).sum()
    }

    /// Pending call timers (for leak checks).
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }
}
