//! One call: the caller's leg (A), the callee forks (B), the winning fork's dialog, the relay,
//! and the mapping of every request, response and SDP body between the two sides. Call set-up
//! lives here — the stages of the route tried in turn, the forks of a stage rung in parallel,
//! a trunk's digest challenge answered once —; what happens inside the established dialogs is in [`in_dialog`].

pub mod forward;
mod in_dialog;
pub mod pickup;
pub mod redirect;
mod reliable;
pub mod transfer;
mod view;

pub use view::{CallView, ForkView};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::line_leg::{self, LegCodec, LegId, LineCommand, LineEvent, LineTarget};
use super::sdp_flow::{self, LegSdp};
use super::{CallSettings, Caller, Stage, Target, TrunkAuth};
use crate::media::port::CallMedia;
use crate::media::{MediaEvent, Side};
use crate::sdp::SessionDescription;
use crate::sip::dialog::Dialog;
use crate::sip::header::{CSeq, Contact, Header, NameAddr, Via};
use crate::sip::message::{reason_phrase, Message, Request, Response};
use crate::sip::method::Method;
use crate::sip::peer::{Peer, Proto};
use crate::sip::transaction::{ClientKey, ServerKey, TransactionLayer};
use crate::sip::uri::{Host, Params, SipUri, Uri};

/// Call timers, ordered with the call id in the timer heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    NoAnswer,
    MaxDuration,
    Retransmit,
    /// Stage `n` has had `failover_after` to give any sign of life.
    Failover(usize),
    /// Stage `n` (a ring group member's turn) has rung as long as it may.
    RingTimeout(usize),
    /// The target of a transfer has rung as long as a call may ([`transfer`]).
    TransferTimeout,
    /// The called extension's no-answer forward is due ([`forward`]).
    ForwardNoAnswer,
}

/// What a client transaction belongs to.
#[derive(Debug, Clone)]
pub enum ClientRole {
    /// The INVITE of fork `idx` of call `id`.
    Fork(u64, usize),
    /// An in-dialog request sent on behalf of call `id`.
    InDialog(u64),
    /// An INVITE fork whose call has ended: a late 2xx gets ACK + BYE.
    Orphan(Box<Request>, Peer),
    /// Nothing to do with the response (CANCEL, BYE we sent when ending).
    Ignore,
}

/// What the call asks its owner to do after an event.
#[derive(Debug)]
pub enum ForkAction {
    None,
    /// A fork answered: register both dialogs (a line has none), cancel the other forks,
    /// start call timers.
    Answered {
        winner: usize,
        a_dialog: Option<(String, String)>,
        b_dialog: Option<(String, String)>,
    },
    /// A 2xx retransmission timer needs (re)scheduling.
    Retransmit,
    /// Map this client transaction to the call.
    Track(ClientKey),
    /// Map this client transaction (a fork's INVITE resent with credentials) to fork `idx`.
    TrackFork(usize, ClientKey),
    /// Map these new forks' INVITEs (a transfer's next stage) to their forks.
    TrackForks(Vec<(usize, ClientKey)>),
    /// The current stage failed or stayed silent: cancel what still rings, try the next one.
    NextStage,
    /// The call is over: release it.
    Finished,
    /// Fork `fork` answered 3xx with these Contacts: the owner checks them and answers with
    /// [`Call::redirect_decided`].
    Redirect {
        fork: usize,
        contacts: Vec<crate::sip::uri::Uri>,
    },
    /// The phone on leg B asked for a transfer (REFER, answered 202): the owner checks the
    /// target and answers with [`Calls::transfer_decided`](crate::b2bua::Calls::transfer_decided);
    /// the NOTIFY sent to the transferor is tracked.
    Transfer {
        ask: Box<transfer::TransferAsk>,
        notify: Option<ClientKey>,
    },
    /// The called extension forwards the call ([`forward`]): the owner decides where to and
    /// answers with [`Call::forward_decided`]; what still rings is cancelled.
    Forward {
        extension: String,
        when: crate::routing::forwarding::ForwardWhen,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForkState {
    Trying,
    Early,
    Answered,
    Failed,
    Cancelled,
}

pub struct Fork {
    /// The latest INVITE's transaction (`None`: a fork on a PSTN line, which has none).
    #[allow(dead_code)]
    pub key: Option<ClientKey>,
    /// The latest INVITE (the one resent with credentials, after a challenge).
    pub invite: Request,
    pub peer: Peer,
    state: ForkState,
    /// The final status (0: none, or the fork was cancelled or abandoned).
    status: u16,
    /// The reason phrase of a failure (e.g. why a TLS connection was refused).
    reason: Option<String>,
    dialog: Option<Dialog>,
    /// The route stage the fork belongs to.
    stage: usize,
    /// The target URI, as the route gave it.
    uri: String,
    /// Any response (even 100 Trying) received: the destination is alive.
    responded: bool,
    auth: Option<TrunkAuth>,
    /// The INVITE was already resent with credentials: a new challenge is a failure.
    auth_sent: bool,
    /// The SRTP policy of the party this fork calls.
    srtp: crate::b2bua::SrtpPolicy,
    /// The fork is a call on a PSTN line, not a SIP request.
    line: Option<LineFork>,
}

/// A caller's leg on a PSTN line (a call that arrived on it, [`line_leg`]).
pub struct ALine {
    /// The line's RTP address.
    pub audio: std::net::SocketAddr,
    /// The relay's address (the port is the relay's caller side).
    pub relay_ip: std::net::IpAddr,
    /// The codec the line was told to speak when answered.
    codec: Option<LegCodec>,
    closed: bool,
}

impl ALine {
    pub fn new(audio: std::net::SocketAddr, relay_ip: std::net::IpAddr) -> ALine {
        ALine {
            audio,
            relay_ip,
            codec: None,
            closed: false,
        }
    }
}

/// A fork on a PSTN line ([`line_leg`]).
struct LineFork {
    codec: LegCodec,
    /// Where the line's RTP comes from (its first event).
    audio: Option<std::net::SocketAddr>,
    /// Hung up, refused or ended: no command for it any more.
    closed: bool,
}

/// The caller's leg.
struct ALeg {
    key: ServerKey,
    invite: Request,
    peer: Peer,
    tag: String,
    dialog: Option<Dialog>,
}

/// A 2xx we retransmit until its ACK arrives (RFC 3261 §13.3.1.4).
struct Retrans {
    side: Side,
    cseq: u32,
    response: Response,
    peer: Peer,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// A request forwarded from one side to the other, waiting for the answer.
struct Forwarded {
    from: Side,
    server_key: ServerKey,
    request: Request,
    /// The offer it carried (audio of the offerer), when it carried one.
    offer: Option<SessionDescription>,
}

/// One destination a call tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The route stage (0: the first targets, then the fallback stages in order).
    pub stage: usize,
    pub label: String,
    pub uri: String,
    /// The final status (0: cancelled, or abandoned as silent).
    pub status: u16,
    /// The reason phrase of a failure (`TLS certificate of … rejected: …`).
    pub reason: Option<String>,
}

/// What a call in progress is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveState {
    /// Sent to its target(s), no answer yet.
    Trying,
    /// A target is ringing (a provisional response with a tag).
    Ringing,
    /// Answered: the parties are talking.
    Answered,
}

impl LiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveState::Trying => "trying",
            LiveState::Ringing => "ringing",
            LiveState::Answered => "answered",
        }
    }
}

/// A call in progress, as the live page and the JSON API show it.
#[derive(Debug, Clone)]
pub struct LiveCall {
    pub id: u64,
    pub caller: String,
    pub callee: String,
    pub state: LiveState,
    /// Since the INVITE arrived.
    pub age: std::time::Duration,
    /// Since the answer.
    pub talking: Option<std::time::Duration>,
    /// The route stage ringing or answered (`extension 101`, `ENUM e164.arpa`, `trunk X`).
    pub route: String,
    /// The target URI ringing or answered.
    pub target: Option<String>,
    pub codec: Option<String>,
    /// RTP/RTCP packets from foreign sources the relay dropped (injection, hijack attempts).
    pub rtp_foreign_dropped: u64,
}

/// What a finished call leaves behind for the billing records.
#[derive(Debug, Clone)]
pub struct CallSummary {
    pub id: u64,
    pub caller: String,
    pub callee: String,
    pub started: Instant,
    pub answered: Option<Instant>,
    pub ended: Instant,
    pub status: u16,
    pub disposition: &'static str,
    pub codec: Option<String>,
    /// Whether the media of the caller's leg and of the callee's leg were SRTP.
    pub media_srtp: [bool; 2],
    pub packets: u64,
    pub lost: u64,
    pub jitter_ms: f64,
    /// Every fork tried, in the order they were sent.
    pub attempts: Vec<Attempt>,
    /// The stage and target URI of the fork that answered.
    pub answered_by: Option<(usize, String)>,
    /// The routing decision (calls to numbers that went through the router).
    pub route: Option<std::sync::Arc<crate::routing::router::Route>>,
    /// The Q.850 cause a peer gave (RFC 3326 `Reason: Q.850;cause=N`, e.g. a PSTN line).
    pub q850: Option<u16>,
    /// Where a call from outside came from ([`crate::b2bua::Caller::origin`]).
    pub origin: Option<String>,
    /// The transport of the caller's leg and of the called leg (the answering or last fork),
    /// for the record: TLS means the signalling was encrypted.
    pub signalling: (Option<Proto>, Option<Proto>),
    /// The transfers that took place: the record is cut into linked parts there.
    pub transfers: Vec<transfer::TransferPart>,
}

/// An answered call, as its in-progress record and a hang-up after a crash need it.
#[derive(Debug, Clone)]
pub struct UpCall {
    pub id: u64,
    /// The call as if it ended now.
    pub summary: CallSummary,
    /// The dialogs of both legs (caller's first), with the flows they use.
    pub legs: Vec<Dialog>,
}

pub struct Call {
    pub id: u64,
    pub caller: Caller,
    a: ALeg,
    pub forks: Vec<Fork>,
    pub winner: Option<usize>,
    pub relay: Option<Box<dyn CallMedia>>,
    /// The routing decision behind this call, for its record.
    pub route: Option<std::sync::Arc<crate::routing::router::Route>>,
    sdp: LegSdp,
    retrans: Vec<Retrans>,
    forwarded: crate::hashing::IdMap<ClientKey, Forwarded>,
    /// A target-refresh without an offer was answered with our offer; the answer comes in the ACK.
    answer_in_ack: [bool; 2],
    started: Instant,
    answered: Option<Instant>,
    pub outcome: Option<(u16, &'static str)>,
    /// The first Q.850 cause a peer gave (RFC 3326 Reason header on a BYE or final response).
    pub q850: Option<u16>,
    callee: String,
    /// Contact and Server of our answers to the caller. The Contact is boxed (a `Header` is
    /// 144 B inline): with it and [`Call::a_line`] inline a `Call` outgrew 2 KiB and took a
    /// 2.5 KiB allocator block (see `call_fits_its_allocator_block`).
    a_contact: Box<Header>,
    server: String,
    /// The route's stages not tried yet, with their numbers.
    stages: VecDeque<(usize, Vec<Target>)>,
    /// The label of every stage of the route.
    labels: Vec<String>,
    /// How long each stage may ring (`ring_for`), by stage.
    ring_limits: Vec<Option<Duration>>,
    /// The stage ringing now.
    stage: usize,
    /// Commands for the PSTN lines of this call's legs, for the shell.
    pub line_out: Vec<LineCommand>,
    /// The caller's leg is a call that arrived on a PSTN line (boxed: most calls have none).
    pub a_line: Option<Box<ALine>>,
    /// 3xx followed and waiting ([`redirect`]).
    redirects: redirect::Redirects,
    /// Reliable provisional responses on both legs ([`reliable`]).
    reliable: reliable::Reliable,
    /// A blind transfer under way ([`transfer`]).
    /// Boxed: most calls are never transferred, and its settings copy is large.
    transfer: Option<Box<transfer::Transfer>>,
    /// A transfer failed after its transferor hung up: the call ends.
    transfer_gone_failed: bool,
    /// The re-INVITEs pasarela sent after a transfer, and to which side (their 2xx is ACKed
    /// here).
    own_reinvite: Vec<(ClientKey, Side)>,
    /// The transfers that took place, for the records of the call's parts.
    transfers_done: Vec<transfer::TransferPart>,
    /// Forwards of the called extension ([`forward`]).
    forwarding: forward::Forwarding,
    /// Which side has put the call on hold (its last offer was sendonly, inactive or
    /// `c=0.0.0.0`): the other side hears music on hold meanwhile.
    held: [bool; 2],
}

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

/// The address pasarela advertises on a flow (the media address when bound to a wildcard).
pub(super) fn local_host(peer: &Peer, settings: &CallSettings) -> Host {
    if peer.local.ip().is_unspecified() {
        Host::from_ip(settings.media_ip)
    } else {
        Host::from_ip(peer.local.ip())
    }
}

/// Whether the caller asked for its identity to be withheld: `Privacy: id` (or `header`,
/// `user`) on its INVITE, or an anonymous From (RFC 3323).
fn withholds(invite: &Request) -> bool {
    let privacy = invite.headers.tokens("Privacy").any(|t| {
        t.split(';').any(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "id" | "header" | "user"
            )
        })
    });
    let anonymous = invite
        .headers
        .from()
        .and_then(|f| f.uri.as_sip())
        .and_then(|u| u.user.as_deref())
        .is_some_and(|u| u.eq_ignore_ascii_case("anonymous"));
    privacy || anonymous
}

pub(super) fn our_via(peer: &Peer, branch: String, host: Host) -> Via {
    let mut params = Params::new();
    params.set("branch", Some(&branch));
    params.set("rport", None);
    Via {
        transport: peer.proto.via_token().into(),
        host,
        port: Some(peer.local.port()),
        params,
    }
}

fn our_contact(peer: &Peer, user: &str, settings: &CallSettings) -> Header {
    let mut uri = SipUri::new(
        Some(user),
        local_host(peer, settings),
        Some(peer.local.port()),
    );
    match peer.proto {
        Proto::Tcp => uri.params.set("transport", Some("tcp")),
        Proto::Tls => uri.params.set("transport", Some("tls")),
        Proto::Udp => {}
    }
    Header::Contact(Contact::Addr(NameAddr::new(Uri::Sip(uri))))
}

fn with_body(headers: &mut crate::sip::header::Headers, sdp: Option<&SessionDescription>) -> Bytes {
    match sdp {
        Some(s) => {
            headers.push(Header::ContentType("application/sdp".into()));
            Bytes::from(s.encode())
        }
        None => Bytes::new(),
    }
}

/// Answers a server transaction without a body.
fn reply(
    layer: &mut TransactionLayer,
    now: Instant,
    key: ServerKey,
    req: &Request,
    status: u16,
) -> Response {
    reply_with(layer, now, key, req, status, None, None)
}

/// Answers a server transaction, with SDP and (for a 2xx) a Contact.
fn reply_with(
    layer: &mut TransactionLayer,
    now: Instant,
    key: ServerKey,
    req: &Request,
    status: u16,
    sdp: Option<&SessionDescription>,
    contact: Option<Header>,
) -> Response {
    let mut r = Response::to_request(req, status, reason_phrase(status), None);
    if let Some(c) = contact {
        if (200..300).contains(&status) {
            r.headers.push(c);
        }
    }
    r.body = with_body(&mut r.headers, sdp);
    layer.respond_ref(now, key, &r);
    r
}

/// ACK and BYE for a 2xx that reached a fork nobody wants any more.
pub(super) fn ack_and_bye(
    invite: &Request,
    resp: &Response,
    peer: Peer,
    ack_branch: String,
    bye_branch: String,
) -> Option<(Request, Request)> {
    let mut d = Dialog::uac(invite, resp, peer)?;
    let host = invite.headers.via()?.host.clone();
    let seq = invite.headers.cseq()?.seq;
    let ack = d.ack(seq, our_via(&peer, ack_branch, host.clone()));
    let bye = d.request(Method::Bye, our_via(&peer, bye_branch, host));
    Some((ack, bye))
}

/// The INVITE a call that arrived on a line stands for (never sent): from the caller's
/// number at our domain (anonymous when withheld) to `callee`, offering the line's RTP.
pub(super) fn line_invite(
    caller: Option<&str>,
    callee: &str,
    audio: std::net::SocketAddr,
    branch: String,
    token: &str,
    settings: &CallSettings,
) -> Request {
    let domain = || Host::Name(settings.domain.clone());
    let mut req = Request::new(
        Method::Invite,
        Uri::Sip(SipUri::new(Some(callee), domain(), None)),
    );
    let peer = Peer {
        proto: Proto::Udp,
        remote: audio,
        local: audio,
    };
    let h = &mut req.headers;
    h.push(Header::Via(our_via(
        &peer,
        branch,
        Host::from_ip(audio.ip()),
    )));
    h.push(Header::MaxForwards(70));
    let mut from = match caller {
        Some(n) => {
            let mut a = NameAddr::new(Uri::Sip(SipUri::new(Some(n), domain(), None)));
            a.display = Some(crate::sip::header::quote(n));
            a
        }
        None => {
            let mut a = NameAddr::new(Uri::Sip(SipUri::new(
                Some("anonymous"),
                Host::Name("anonymous.invalid".into()),
                None,
            )));
            a.display = Some("\"Anonymous\"".to_owned());
            a
        }
    };
    from.set_tag(token);
    h.push(Header::From(from));
    h.push(Header::To(NameAddr::new(Uri::Sip(SipUri::new(
        Some(callee),
        domain(),
        None,
    )))));
    h.push(Header::CallId(format!("{token}@line.pasarela")));
    h.push(Header::CSeq(CSeq {
        seq: 1,
        method: Method::Invite,
    }));
    let offer = line_leg::line_offer(audio);
    req.body = with_body(&mut req.headers, offer.as_ref());
    req
}

fn sdp_of(
    headers: &crate::sip::header::Headers,
    body: &Bytes,
) -> Option<Result<SessionDescription, ()>> {
    if body.is_empty() {
        return None;
    }
    let ct = headers.content_type().unwrap_or("application/sdp");
    if !ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/sdp")
    {
        return None;
    }
    Some(
        std::str::from_utf8(body)
            .ok()
            .and_then(|t| SessionDescription::parse(t).ok())
            .ok_or(()),
    )
}

/// The caller's INVITE as a call keeps it for its whole life: without the credentials it
/// carried (checked by the digest gate already; a held call need not keep them) and without
/// the spare room of a parsed message's header list.
fn kept_invite(mut invite: Request) -> Request {
    invite.headers.0.retain(|h| {
        !h.name().eq_ignore_ascii_case("Authorization")
            && !h.name().eq_ignore_ascii_case("Proxy-Authorization")
    });
    invite.headers.0.shrink_to_fit();
    // The body is a slice of the whole datagram it came in: keep its own bytes only.
    invite.body = Bytes::copy_from_slice(&invite.body);
    invite
}

/// An INVITE of an answered call, cut to what is still read from it for the call's life
/// (the transaction's identity for responses, CANCEL and late 2xx, the Via host, a
/// transfer's parties; for the caller's, Max-Forwards and Privacy of later forks): its body
/// went into the call's SDP state, its Contact into the dialog, and its other headers
/// (User-Agent, Allow, Supported, …) are never read again. A held call keeps two of these.
fn trim_answered(req: &mut Request, callers: bool) {
    req.headers.0.retain(|h| match h {
        Header::Via(_)
        | Header::From(_)
        | Header::To(_)
        | Header::CallId(_)
        | Header::CSeq(_)
        | Header::Route(_) => true,
        Header::MaxForwards(_) => callers,
        Header::Other(name, _) => callers && name.eq_ignore_ascii_case("Privacy"),
        _ => false,
    });
    for h in &mut req.headers.0 {
        match h {
            Header::Via(v) => v.params.shrink_to_fit(),
            Header::From(a) | Header::To(a) | Header::Route(a) => {
                a.params.shrink_to_fit();
                if let Uri::Sip(u) = &mut a.uri {
                    u.params.shrink_to_fit();
                }
            }
            _ => {}
        }
    }
    req.headers.0.shrink_to_fit();
    req.body = Bytes::new();
}

impl Call {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        now: Instant,
        key: ServerKey,
        invite: Request,
        peer: Peer,
        tag: String,
        caller: Caller,
        settings: &CallSettings,
    ) -> Call {
        let callee = invite
            .uri
            .as_sip()
            .and_then(SipUri::user_unescaped)
            .unwrap_or_default();
        let a_policy = caller.srtp;
        let reliable = reliable::Reliable::new(&invite, settings);
        let invite = kept_invite(invite);
        Call {
            id,
            caller,
            a: ALeg {
                key,
                invite,
                peer,
                tag,
                dialog: None,
            },
            forks: Vec::new(),
            winner: None,
            relay: None,
            route: None,
            sdp: {
                let mut sdp = LegSdp::new(id, settings.media_ip);
                sdp.set_policy(Side::A, a_policy);
                sdp
            },
            retrans: Vec::new(),
            forwarded: Default::default(),
            answer_in_ack: [false; 2],
            started: now,
            answered: None,
            outcome: None,
            q850: None,
            a_contact: Box::new(our_contact(&peer, &callee, settings)),
            server: settings.server_name.clone(),
            callee,
            stages: VecDeque::new(),
            labels: Vec::new(),
            ring_limits: Vec::new(),
            stage: 0,
            line_out: Vec::new(),
            a_line: None,
            redirects: Default::default(),
            reliable,
            transfer: None,
            transfer_gone_failed: false,
            own_reinvite: Vec::new(),
            transfers_done: Vec::new(),
            forwarding: Default::default(),
            held: [false; 2],
        }
    }

    /// The route: stages tried in order (empty ones are skipped).
    pub fn set_route(&mut self, stages: Vec<Stage>) {
        self.labels = stages.iter().map(|s| s.label.clone()).collect();
        self.ring_limits = stages.iter().map(|s| s.ring_for).collect();
        self.stages = stages
            .into_iter()
            .enumerate()
            .filter(|(_, s)| !s.targets.is_empty())
            .map(|(i, s)| (i, s.targets))
            .collect();
    }

    /// Moves on to the next stage; its targets (`None`: the route is exhausted).
    pub fn next_stage(&mut self) -> Option<Vec<Target>> {
        let (n, targets) = self.stages.pop_front()?;
        self.stage = n;
        Some(targets)
    }

    /// How long the stage ringing now may ring (a ring group member's turn).
    pub fn stage_ring_for(&self) -> Option<Duration> {
        self.ring_limits.get(self.stage).copied().flatten()
    }

    /// The stage ringing now.
    pub fn stage(&self) -> usize {
        self.stage
    }

    pub fn stage_label(&self, stage: usize) -> &str {
        self.labels.get(stage).map_or("", String::as_str)
    }

    /// Stages still to try after the current one.
    pub fn stages_left(&self) -> usize {
        self.stages.len()
    }

    pub fn callee(&self) -> &str {
        &self.callee
    }

    /// What the call is doing now, for the dashboard's live page.
    pub fn live(&self, now: Instant) -> LiveCall {
        let answered = self.winner.and_then(|w| self.forks.get(w));
        let state = if self.answered.is_some() {
            LiveState::Answered
        } else if self.forks.iter().any(|f| f.state == ForkState::Early) {
            LiveState::Ringing
        } else {
            LiveState::Trying
        };
        let target = answered
            .or_else(|| {
                self.forks
                    .iter()
                    .rev()
                    .find(|f| matches!(f.state, ForkState::Early | ForkState::Trying))
            })
            .map(|f| f.uri.clone());
        LiveCall {
            id: self.id,
            caller: self.caller.number.clone(),
            callee: self.callee.clone(),
            state,
            age: now.saturating_duration_since(self.started),
            talking: self.answered.map(|a| now.saturating_duration_since(a)),
            route: self.stage_label(self.stage).to_owned(),
            target,
            codec: if self.answered.is_some() {
                self.sdp.codec_name()
            } else {
                None
            },
            rtp_foreign_dropped: self
                .relay
                .as_ref()
                .map_or(0, |r| r.stats().foreign_dropped()),
        }
    }

    fn relay_port(&self, side: Side) -> u16 {
        self.relay.as_deref().map_or(9, |r| r.local_port(side))
    }

    /// Reads the caller's offer (or prepares our own for an offerless INVITE) and the offer
    /// the forks will carry.
    pub fn prepare_offer(&mut self, settings: &CallSettings) -> Result<(), (u16, String)> {
        let port_b = self.relay_port(Side::B);
        match sdp_of(&self.a.invite.headers, &self.a.invite.body) {
            Some(Ok(offer)) => self.sdp.a_offers(offer, port_b, settings.media_ip),
            Some(Err(())) => Err((400, "Malformed SDP body".into())),
            None => {
                self.sdp.offerless(port_b, settings.media_ip);
                Ok(())
            }
        }
    }

    /// Answers the caller's INVITE (provisional or final).
    pub fn respond_a(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        status: u16,
        reason: Option<&str>,
        sdp: Option<&SessionDescription>,
    ) -> Response {
        let mut r = Response::to_request(
            &self.a.invite,
            status,
            reason.unwrap_or(reason_phrase(status)),
            Some(&self.a.tag),
        );
        r.headers
            .push(Header::Other("Server".into(), self.server.clone()));
        if (101..300).contains(&status) {
            r.headers.push(Header::clone(&self.a_contact));
        }
        if status == 503 {
            // Every 503 here is a temporary condition (no ports, no route now, shutting down):
            // say when to try again instead of leaving it to the caller's guess.
            r.headers
                .push(Header::Other("Retry-After".into(), "5".into()));
        }
        r.body = with_body(&mut r.headers, sdp);
        if self.a_line.is_some() {
            // The caller is a line: only the answer and the refusal mean something to it.
            if (200..300).contains(&status) {
                self.answer_a_line();
            } else if status >= 300 {
                self.hang_up_line(LegId::INCOMING);
            }
        } else {
            if status >= 200 {
                self.reliable.finished();
            } else {
                self.reliable.provisional(now, &mut r);
            }
            layer.respond_ref(now, self.a.key, &r);
        }
        if status >= 300 && self.outcome.is_none() {
            self.outcome = Some((status, disposition(status)));
        }
        r
    }

    pub fn send_fork(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        target: Target,
        call_id: String,
        tag: String,
        settings: &CallSettings,
    ) -> Option<ClientKey> {
        let Target {
            uri,
            peer,
            to,
            auth,
            from_user,
            srtp,
            presentation,
            line,
        } = target;
        let mut target_uri = String::with_capacity(48);
        let _ = uri.write_to(&mut target_uri);
        let mut req = Request::new(Method::Invite, uri);
        let host = local_host(&peer, settings);
        let h = &mut req.headers;
        h.push(Header::Via(our_via(
            &peer,
            layer.new_branch(),
            host.clone(),
        )));
        let mf = self
            .a
            .invite
            .headers
            .max_forwards()
            .unwrap_or(70)
            .saturating_sub(1);
        h.push(Header::MaxForwards(mf));
        // The target of a transfer by the caller sees the party that stays (the callee).
        let by_caller = self.caller_transfer_ringing();
        let identity_user = match (&from_user, by_caller) {
            (Some(u), _) => u.as_str(),
            (None, true) => self.callee.as_str(),
            (None, false) => self.caller.number.as_str(),
        };
        let p = presentation.clone().unwrap_or_default();
        let host = p
            .from_host
            .clone()
            .unwrap_or_else(|| settings.domain.clone());
        let withheld = presentation.is_some() && withholds(&self.a.invite);
        let mut from_uri = if withheld {
            SipUri::new(
                Some("anonymous"),
                Host::Name("anonymous.invalid".into()),
                None,
            )
        } else {
            SipUri::new(
                Some(p.from_user.as_deref().unwrap_or(identity_user)),
                Host::Name(host.clone()),
                None,
            )
        };
        from_uri.params = Params::new();
        let mut from = NameAddr::new(Uri::Sip(from_uri));
        from.display = if withheld {
            Some("\"Anonymous\"".to_owned())
        } else if by_caller {
            None
        } else {
            self.caller
                .name
                .as_ref()
                .map(|n| crate::sip::header::quote(n))
        };
        from.set_tag(&tag);
        h.push(Header::From(from));
        if let Some(name) = p.identity_header {
            let mut id = NameAddr::new(Uri::Sip(SipUri::new(
                Some(identity_user),
                Host::Name(host),
                None,
            )));
            id.display = self
                .caller
                .name
                .as_ref()
                .filter(|_| !withheld)
                .map(|n| crate::sip::header::quote(n));
            h.push(Header::Other(name.into(), id.to_string()));
        }
        if withheld {
            h.push(Header::Other("Privacy".into(), "id".into()));
        }
        let to = NameAddr::new(to.unwrap_or_else(|| {
            Uri::Sip(SipUri::new(
                Some(&self.callee),
                Host::Name(settings.domain.clone()),
                None,
            ))
        }));
        h.push(Header::To(to));
        h.push(Header::CallId(call_id));
        h.push(Header::CSeq(CSeq {
            seq: 1,
            method: Method::Invite,
        }));
        h.push(our_contact(&peer, &self.caller.number, settings));
        h.push(Header::Other("Allow".into(), crate::b2bua::ALLOW.into()));
        h.push(Header::Other(
            "User-Agent".into(),
            settings.server_name.clone(),
        ));
        h.push(Header::Other("Supported".into(), "100rel, replaces".into()));
        if let Some(by) = self.referred_by() {
            // RFC 3892: the target of a transfer learns who transferred the call.
            h.push(Header::Other("Referred-By".into(), by.to_owned()));
        }
        let offer = if by_caller {
            // It takes the caller's place: the offer is the caller's side of the relay.
            self.sdp.fresh_offer_for(Side::A, self.relay_port(Side::A))
        } else {
            self.sdp.offer_for_b(srtp)
        };
        req.body = with_body(&mut req.headers, offer.as_ref());
        // The fork keeps its INVITE for the call's life: not the room of a parsed message.
        req.headers.0.shrink_to_fit();
        // A fork on a PSTN line: the INVITE is kept as the fork's description, never sent;
        // the line is asked to dial instead.
        let line_fork = line.map(|t| self.dial_line(t, offer.as_ref(), settings));
        let key = match line_fork {
            Some(_) => None,
            None => Some(layer.send_request_ref(now, &req, peer)),
        };
        if self.forks.is_empty() {
            // Most calls have one fork: room for one, not the four a first push makes.
            self.forks.reserve_exact(1);
        }
        self.forks.push(Fork {
            key,
            invite: req,
            peer,
            state: ForkState::Trying,
            status: 0,
            reason: None,
            dialog: None,
            stage: self.stage,
            uri: target_uri,
            responded: false,
            auth,
            auth_sent: false,
            srtp,
            line: line_fork,
        });
        key
    }

    /// Asks the shell to place the next fork on a line.
    fn dial_line(
        &mut self,
        target: LineTarget,
        offer: Option<&SessionDescription>,
        settings: &CallSettings,
    ) -> LineFork {
        let codec = offer.and_then(line_leg::choose_codec).unwrap_or(LegCodec {
            law: crate::media::Law::Ulaw,
            pt: 0,
            dtmf_pt: Some(101),
        });
        let leg = LegId {
            call: self.id,
            fork: self.forks.len(),
        };
        tracing::info!(call = self.id, line = %target.line, number = %target.number, "dialling on a line");
        self.line_out.push(LineCommand::Dial {
            leg,
            line: target.line,
            number: target.number,
            codec,
            relay: std::net::SocketAddr::new(settings.media_ip, self.relay_port(Side::B)),
        });
        LineFork {
            codec,
            audio: None,
            closed: false,
        }
    }

    /// The SDP the line of fork `i` stands for.
    fn line_sdp_of(&self, i: usize) -> Option<SessionDescription> {
        if i == LegId::INCOMING {
            let l = self.a_line.as_ref()?;
            return line_leg::line_sdp(l.audio, l.codec?);
        }
        let l = self.forks.get(i)?.line.as_ref()?;
        line_leg::line_sdp(l.audio.unwrap_or(line_leg::NO_AUDIO), l.codec)
    }

    /// Whether fork `i` is on a line.
    pub fn is_line_fork(&self, i: usize) -> bool {
        self.forks.get(i).is_some_and(|f| f.line.is_some())
    }

    /// Hangs up the line of fork `i` (once; [`LegId::INCOMING`]: the caller's line).
    fn hang_up_line(&mut self, i: usize) {
        if i == LegId::INCOMING {
            if let Some(l) = self.a_line.as_mut() {
                if !l.closed {
                    l.closed = true;
                    self.line_out.push(LineCommand::Hangup {
                        leg: LegId {
                            call: self.id,
                            fork: i,
                        },
                    });
                }
            }
            return;
        }
        if let Some(l) = self.forks.get_mut(i).and_then(|f| f.line.as_mut()) {
            if !l.closed {
                l.closed = true;
                self.line_out.push(LineCommand::Hangup {
                    leg: LegId {
                        call: self.id,
                        fork: i,
                    },
                });
            }
        }
    }

    /// Whether `side` of the call is a line (the answered fork on one).
    fn line_side(&self, side: Side) -> Option<usize> {
        match side {
            Side::A => self.a_line.as_ref().map(|_| LegId::INCOMING),
            Side::B => self.winner.filter(|w| self.is_line_fork(*w)),
        }
    }

    /// Legs on lines not closed yet.
    pub fn open_line_legs(&self) -> usize {
        self.forks
            .iter()
            .filter(|f| f.line.as_ref().is_some_and(|l| !l.closed))
            .count()
            + usize::from(self.a_line.as_ref().is_some_and(|l| !l.closed))
    }

    /// The call is removed: every line it still holds is hung up.
    pub fn close_lines(&mut self) {
        for i in 0..self.forks.len() {
            self.hang_up_line(i);
        }
        self.hang_up_line(LegId::INCOMING);
    }

    /// The caller's line is answered: it is told the codec the callee took and the relay.
    fn answer_a_line(&mut self) {
        let codec = self.sdp.leg_codec(Side::A).unwrap_or(LegCodec {
            law: crate::media::Law::Ulaw,
            pt: 0,
            dtmf_pt: Some(101),
        });
        let port = self.relay_port(Side::A);
        let Some(l) = self.a_line.as_mut() else {
            return;
        };
        if l.closed || l.codec.is_some() {
            return;
        }
        l.codec = Some(codec);
        let relay = std::net::SocketAddr::new(l.relay_ip, port);
        self.line_out.push(LineCommand::Answer {
            leg: LegId {
                call: self.id,
                fork: LegId::INCOMING,
            },
            codec,
            relay,
        });
    }

    /// What the caller's line reports.
    pub fn a_line_event(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        event: LineEvent,
        settings: &CallSettings,
    ) -> ForkAction {
        let Some(l) = self.a_line.as_mut() else {
            return ForkAction::None;
        };
        match event {
            LineEvent::Digit(digit) => {
                if self.winner.is_some() && !self.sdp.has_dtmf_events(Side::B) {
                    self.send_info_dtmf(now, layer, Side::B, digit, 100, settings);
                }
                ForkAction::None
            }
            LineEvent::Refused { q850, .. } | LineEvent::Ended { q850, .. } => {
                l.closed = true;
                self.q850 = self.q850.or(q850);
                if self.winner.is_some() {
                    tracing::info!(call = self.id, ?q850, "the calling line hung up");
                    let _ = self.send_in_dialog(now, layer, Side::B, Method::Bye, None, settings);
                    self.outcome.get_or_insert((200, "answered"));
                    self.retrans.clear();
                } else {
                    tracing::info!(call = self.id, "the calling line gave up while ringing");
                    self.outcome = Some((487, "cancelled"));
                }
                ForkAction::Finished
            }
            _ => ForkAction::None,
        }
    }

    /// What the line of fork `i` reports.
    pub fn line_event(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        event: LineEvent,
        settings: &CallSettings,
    ) -> ForkAction {
        let transfer = self.is_transfer_fork(i);
        let Some(fork) = self.forks.get_mut(i) else {
            return ForkAction::None;
        };
        let policy = fork.srtp;
        let ringing = matches!(fork.state, ForkState::Trying | ForkState::Early);
        let Some(line) = fork.line.as_mut() else {
            return ForkAction::None;
        };
        if transfer && ringing {
            // A line rings the target of a transfer: the far party keeps its call meanwhile.
            match event {
                LineEvent::Ringing | LineEvent::EarlyMedia => {
                    fork.state = ForkState::Early;
                    fork.responded = true;
                    return self.transfer_target_rings(now, layer, settings);
                }
                LineEvent::Answered => {
                    fork.responded = true;
                    let answer =
                        line_leg::line_sdp(line.audio.unwrap_or(line_leg::NO_AUDIO), line.codec);
                    tracing::info!(
                        call = self.id,
                        fork = i,
                        "the line of the transfer target answered"
                    );
                    return self.transfer_answered(now, layer, i, None, answer, settings);
                }
                _ => {}
            }
        }
        let codec = line.codec;
        fork.responded = true;
        match event {
            LineEvent::Audio(addr) => {
                line.audio = Some(addr);
                ForkAction::None
            }
            LineEvent::Proceeding => ForkAction::None,
            LineEvent::Ringing | LineEvent::EarlyMedia => {
                if !ringing || self.winner.is_some() {
                    return ForkAction::None;
                }
                fork.state = ForkState::Early;
                let early = match (&event, line.audio) {
                    (LineEvent::EarlyMedia, Some(addr)) => line_leg::line_sdp(addr, codec),
                    _ => None,
                };
                let a_sdp = early.and_then(|answer| {
                    self.sdp
                        .b_answers(
                            &answer,
                            self.relay_port(Side::A),
                            self.relay.as_deref(),
                            policy,
                        )
                        .ok()
                });
                let status = if a_sdp.is_some() { 183 } else { 180 };
                self.respond_a(now, layer, status, None, a_sdp.as_ref());
                ForkAction::None
            }
            LineEvent::Answered => {
                if !ringing || self.winner.is_some() {
                    // Lost the race (or given up meanwhile): hang the line up.
                    fork.state = ForkState::Cancelled;
                    self.hang_up_line(i);
                    return ForkAction::None;
                }
                fork.state = ForkState::Answered;
                fork.status = 200;
                fork.reason = None;
                let answer = line_leg::line_sdp(line.audio.unwrap_or(line_leg::NO_AUDIO), codec);
                self.winner = Some(i);
                self.answered = Some(now);
                let a_sdp = match answer.map(|answer| {
                    self.sdp.b_answers(
                        &answer,
                        self.relay_port(Side::A),
                        self.relay.as_deref(),
                        policy,
                    )
                }) {
                    Some(Ok(s)) => Some(s),
                    Some(Err((st, why))) => {
                        tracing::warn!(call = self.id, "no usable media with the line: {why}");
                        self.hang_up_line(i);
                        self.respond_a(now, layer, st, Some(&why), None);
                        return ForkAction::Finished;
                    }
                    None => None,
                };
                tracing::info!(call = self.id, fork = i, "the line answered");
                self.answer_a(now, layer, i, a_sdp.as_ref(), None, settings)
            }
            LineEvent::Digit(digit) => {
                // Lines also send the digits they hear as RFC 4733 on their RTP; SIP INFO for
                // a caller without telephone-event.
                if self.winner == Some(i) && !self.sdp.has_dtmf_events(Side::A) {
                    self.send_info_dtmf(now, layer, Side::A, digit, 100, settings);
                }
                ForkAction::None
            }
            LineEvent::Refused {
                status,
                q850,
                reason,
            } => {
                line.closed = true;
                tracing::info!(call = self.id, fork = i, status, %reason, "the line refused the call");
                self.q850 = self.q850.or(q850);
                self.fork_failed(now, layer, i, status)
            }
            LineEvent::Ended { status, q850 } => {
                line.closed = true;
                if self.winner == Some(i) {
                    tracing::info!(call = self.id, ?q850, "the line hung up");
                    self.q850 = self.q850.or(q850);
                    let _ = self.send_in_dialog(now, layer, Side::A, Method::Bye, None, settings);
                    self.outcome.get_or_insert((200, "answered"));
                    self.retrans.clear();
                    return ForkAction::Finished;
                }
                if !ringing {
                    return ForkAction::None;
                }
                self.q850 = self.q850.or(q850);
                self.fork_failed(now, layer, i, status)
            }
        }
    }

    /// Answers a trunk's 401/407 on fork `i`: the same INVITE again (same Call-ID and From
    /// tag) with CSeq + 1, a new branch, and the credentials. `None` when the fork has no
    /// account, already answered a challenge, or no challenge can be answered.
    fn authorize_fork(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        resp: &Response,
        cnonce: &str,
    ) -> Option<ClientKey> {
        let fork = self.forks.get_mut(i)?;
        if fork.auth_sent || !matches!(fork.state, ForkState::Trying | ForkState::Early) {
            return None;
        }
        let account = fork.auth.as_ref()?;
        let (challenge_header, answer_header) = match resp.status {
            401 => ("WWW-Authenticate", "Authorization"),
            407 => ("Proxy-Authenticate", "Proxy-Authorization"),
            _ => return None,
        };
        let Some(challenge) =
            crate::sip::auth::select_challenge(resp.headers.get_all(challenge_header))
        else {
            tracing::warn!(call = self.id, uri = %fork.uri, status = resp.status, "no digest challenge we can answer");
            return None;
        };
        let mut invite = fork.invite.clone();
        let seq = invite.headers.cseq().map_or(1, |c| c.seq).saturating_add(1);
        for h in invite.headers.0.iter_mut() {
            if let Header::CSeq(c) = h {
                c.seq = seq;
            }
        }
        let branch = layer.new_branch();
        invite
            .headers
            .via_mut()?
            .params
            .set("branch", Some(&branch));
        let value = crate::sip::auth::authorize(
            &challenge,
            &account.username,
            &account.password,
            Method::Invite.as_str(),
            &invite.uri.to_string(),
            cnonce,
            1,
        );
        invite.headers.set_other(answer_header, value);
        tracing::info!(call = self.id, uri = %fork.uri, realm = %challenge.realm, "answering the destination's digest challenge");
        let key = layer.send_request_ref(now, &invite, fork.peer);
        fork.key = Some(key);
        fork.invite = invite;
        fork.auth_sent = true;
        fork.state = ForkState::Trying;
        fork.dialog = None;
        Some(key)
    }

    /// CANCELs every fork still ringing (but `except`); returns the CANCEL transactions.
    pub fn cancel_forks(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        except: Option<usize>,
    ) -> Vec<ClientKey> {
        let mut keys = Vec::new();
        let mut lines = Vec::new();
        for (i, f) in self.forks.iter_mut().enumerate() {
            if Some(i) == except || !matches!(f.state, ForkState::Trying | ForkState::Early) {
                continue;
            }
            f.state = ForkState::Cancelled;
            if f.line.is_some() {
                lines.push(i);
                continue;
            }
            let cancel = crate::sip::transaction::build_cancel(&f.invite);
            keys.push(layer.send_request(now, cancel, f.peer));
        }
        for i in lines {
            self.hang_up_line(i);
        }
        keys
    }

    /// A response on fork `i`; `cnonce` is used if a trunk's challenge must be answered.
    pub fn fork_response(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        resp: Response,
        cnonce: &str,
        settings: &CallSettings,
    ) -> ForkAction {
        let transferring = self.transfer.is_some() && self.winner.is_some();
        let Some(fork) = self.forks.get_mut(i) else {
            return ForkAction::None;
        };
        fork.responded = true;
        let status = resp.status;
        // A reason other than the standard phrase says something (why TLS failed, …).
        if status >= 300
            && !resp
                .reason
                .eq_ignore_ascii_case(crate::sip::message::reason_phrase(status))
        {
            fork.reason = Some(resp.reason.clone());
        } else if (200..300).contains(&status) {
            // Answered after all (e.g. once a challenge was met): no failure to tell.
            fork.reason = None;
        }
        if status < 200 {
            if status > 100 && fork.state == ForkState::Trying && transferring {
                // The transfer's target rings: the far party keeps its call as it is.
                if fork.dialog.is_none() {
                    fork.dialog = Dialog::uac(&fork.invite, &resp, fork.peer);
                }
                fork.state = ForkState::Early;
                return self.transfer_target_rings(now, layer, settings);
            }
            if status == 100 || self.winner.is_some() || fork.state == ForkState::Cancelled {
                return ForkAction::None;
            }
            fork.state = ForkState::Early;
            if fork.dialog.is_none() {
                fork.dialog = Dialog::uac(&fork.invite, &resp, fork.peer);
            }
            if !self.prack_fork(now, layer, i, &resp, settings) {
                // A retransmission of a reliable 18x already acknowledged.
                return ForkAction::None;
            }
            let Some(fork) = self.forks.get_mut(i) else {
                return ForkAction::None;
            };
            // Early media: a 183 (or 180) with SDP sets up the relay towards B at once.
            let policy = fork.srtp;
            let a_sdp = match sdp_of(&resp.headers, &resp.body) {
                Some(Ok(answer)) => self
                    .sdp
                    .b_answers(
                        &answer,
                        self.relay_port(Side::A),
                        self.relay.as_deref(),
                        policy,
                    )
                    .ok(),
                _ => None,
            };
            let status = if a_sdp.is_some() { 183 } else { status };
            self.respond_a(now, layer, status, None, a_sdp.as_ref());
            return if self.reliable.pending() {
                ForkAction::Retransmit
            } else {
                ForkAction::None
            };
        }
        if (300..400).contains(&status) {
            if let Some(action) = self.redirected(i, &resp) {
                return action;
            }
        }
        if status >= 300 {
            if self.winner.is_none() && matches!(status, 401 | 407) {
                if let Some(key) = self.authorize_fork(now, layer, i, &resp, cnonce) {
                    return ForkAction::TrackFork(i, key);
                }
            }
            self.q850 = self.q850.or_else(|| q850_reason(&resp.headers));
            return self.fork_failed(now, layer, i, status);
        }
        // 2xx.
        let is_transfer = self.is_transfer_fork(i);
        let Some(fork) = self.forks.get_mut(i) else {
            return ForkAction::None;
        };
        let peer = fork.peer;
        let policy = fork.srtp;
        let Some(mut b_dialog) = Dialog::uac(&fork.invite, &resp, peer) else {
            return ForkAction::None;
        };
        // Requests sent in the early dialog (PRACK) used CSeq numbers after the INVITE's.
        if let Some(early) = &fork.dialog {
            b_dialog.local_cseq = b_dialog.local_cseq.max(early.local_cseq);
        }
        let invite_seq = fork.invite.headers.cseq().map_or(1, |c| c.seq);
        let transfer_target = fork.state != ForkState::Cancelled && is_transfer;
        if transfer_target {
            let host = local_host(&peer, settings);
            let ack = b_dialog.ack(invite_seq, our_via(&peer, layer.new_branch(), host));
            layer.send_stateless(peer, &Message::Request(ack));
            let answer = match sdp_of(&resp.headers, &resp.body) {
                Some(Ok(a)) => Some(a),
                _ => None,
            };
            return self.transfer_answered(now, layer, i, Some(b_dialog), answer, settings);
        }
        if self.winner.is_some() || fork.state == ForkState::Cancelled {
            // Lost the race: acknowledge and hang up this fork.
            let host = local_host(&peer, settings);
            let ack = b_dialog.ack(invite_seq, our_via(&peer, layer.new_branch(), host.clone()));
            layer.send_stateless(peer, &Message::Request(ack));
            let bye = b_dialog.request(Method::Bye, our_via(&peer, layer.new_branch(), host));
            layer.send_request(now, bye, peer);
            fork.state = ForkState::Cancelled;
            return ForkAction::None;
        }
        fork.state = ForkState::Answered;
        fork.status = status;
        self.winner = Some(i);
        self.answered = Some(now);
        let host = local_host(&peer, settings);
        let ack = b_dialog.ack(invite_seq, our_via(&peer, layer.new_branch(), host.clone()));
        // SDP: B answers our offer (the normal case) — or, for our offerless INVITE, offers.
        let a_sdp = match sdp_of(&resp.headers, &resp.body) {
            Some(Ok(answer)) => {
                match self.sdp.b_answers(
                    &answer,
                    self.relay_port(Side::A),
                    self.relay.as_deref(),
                    policy,
                ) {
                    Ok(s) => Some(s),
                    Err((st, why)) => {
                        tracing::warn!(call = self.id, "no usable media with the callee: {why}");
                        layer.send_stateless(peer, &Message::Request(ack));
                        let bye =
                            b_dialog.request(Method::Bye, our_via(&peer, layer.new_branch(), host));
                        layer.send_request(now, bye, peer);
                        self.respond_a(now, layer, st, Some(&why), None);
                        return ForkAction::Finished;
                    }
                }
            }
            _ => None,
        };
        layer.send_stateless(peer, &Message::Request(ack));
        self.forks[i].dialog = Some(b_dialog.clone());
        trim_answered(&mut self.forks[i].invite, false);
        self.answer_a(now, layer, i, a_sdp.as_ref(), Some(&b_dialog), settings)
    }

    /// Fork `i` answered: the caller gets the 200 (retransmitted until its ACK), and both
    /// dialogs are known (`b_dialog`: none for a line).
    fn answer_a(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        a_sdp: Option<&SessionDescription>,
        b_dialog: Option<&Dialog>,
        settings: &CallSettings,
    ) -> ForkAction {
        let ok = self.respond_a(now, layer, 200, None, a_sdp);
        if self.a_line.is_some() {
            tracing::info!(call = self.id, "call from a line answered");
            let b_key = b_dialog.map(|b| {
                (
                    b.call_id.clone(),
                    b.local.tag().unwrap_or_default().to_owned(),
                )
            });
            return ForkAction::Answered {
                winner: i,
                a_dialog: None,
                b_dialog: b_key,
            };
        }
        let a_dialog = Dialog::uas(&self.a.invite, &self.a.tag, self.a.peer);
        let a_key = (
            self.a
                .invite
                .headers
                .call_id()
                .unwrap_or_default()
                .to_owned(),
            self.a.tag.clone(),
        );
        self.a.dialog = a_dialog;
        trim_answered(&mut self.a.invite, true);
        let a_seq = self.a.invite.headers.cseq().map_or(0, |c| c.seq);
        self.start_retrans(now, Side::A, a_seq, ok, self.a.peer, settings);
        let b_key = b_dialog.map(|b| {
            (
                b.call_id.clone(),
                b.local.tag().unwrap_or_default().to_owned(),
            )
        });
        tracing::info!(call = self.id, "call answered");
        ForkAction::Answered {
            winner: i,
            a_dialog: Some(a_key),
            b_dialog: b_key,
        }
    }

    pub fn fork_failed(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        status: u16,
    ) -> ForkAction {
        let Some(f) = self.forks.get_mut(i) else {
            return ForkAction::None;
        };
        if f.state == ForkState::Cancelled {
            // Cancelled or abandoned: whatever it says now changes nothing.
            return ForkAction::None;
        }
        f.state = ForkState::Failed;
        f.status = status;
        tracing::debug!(call = self.id, stage = f.stage, uri = %f.uri, status, "fork failed");
        if self.is_transfer_fork(i) {
            return self.transfer_fork_lost(now, layer);
        }
        self.after_fork_failed(now, layer)
    }

    /// Fork `i` could not be reached (its transport failed): a 503 with `reason`, as RFC 3261
    /// §8.1.3.1 has it, and the call moves on like after any failure.
    pub fn fork_unreachable(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        reason: &str,
    ) -> ForkAction {
        let Some(f) = self.forks.get_mut(i) else {
            return ForkAction::None;
        };
        if f.state == ForkState::Cancelled {
            return ForkAction::None;
        }
        f.state = ForkState::Failed;
        f.status = 503;
        f.reason = Some(reason.to_owned());
        tracing::info!(call = self.id, stage = f.stage, uri = %f.uri, reason, "fork unreachable");
        if self.is_transfer_fork(i) {
            return self.transfer_fork_lost(now, layer);
        }
        self.after_fork_failed(now, layer)
    }

    fn after_fork_failed(&mut self, now: Instant, layer: &mut TransactionLayer) -> ForkAction {
        if self.winner.is_some() || self.redirect_pending() || self.forward_pending() {
            return ForkAction::None;
        }
        let pending = self
            .forks
            .iter()
            .any(|f| matches!(f.state, ForkState::Trying | ForkState::Early));
        if pending {
            return ForkAction::None;
        }
        // The whole stage failed. Busy or declined is the callee's answer, whatever the route;
        // anything else (3xx included: redirects are not followed) moves on to the next stage.
        // In a ring group's turns (stages with a ring limit) a busy member passes the call on.
        let refused = self.stage_ring_for().is_none()
            && self
                .forks
                .iter()
                .any(|f| f.stage == self.stage && matches!(f.status, 486 | 600 | 603));
        if !refused && !self.stages.is_empty() {
            return ForkAction::NextStage;
        }
        if let Some(forward) = self.forward_on_failure() {
            return forward;
        }
        self.fail(now, layer)
    }

    /// Every stage failed: the caller gets the best answer of all forks (busy wins, then the
    /// lowest class; a destination's challenge becomes 403, a redirect is not passed on).
    pub fn fail(&mut self, now: Instant, layer: &mut TransactionLayer) -> ForkAction {
        let statuses: Vec<u16> = self
            .forks
            .iter()
            .map(|f| match f.status {
                401 | 407 => 403,
                s => s,
            })
            .filter(|s| *s >= 400)
            .collect();
        if let (true, Some(why)) = (statuses.is_empty(), self.redirect_refusal()) {
            let why = why.to_owned();
            self.respond_a(now, layer, 403, Some(&why), None);
            return ForkAction::Finished;
        }
        let chosen = if statuses.iter().any(|s| *s == 486 || *s == 600) {
            486
        } else {
            match statuses.iter().copied().min() {
                Some(408) | None => 480,
                Some(s) => s,
            }
        };
        self.respond_a(now, layer, chosen, None, None);
        ForkAction::Finished
    }

    fn dialog_mut(&mut self, side: Side) -> Option<&mut Dialog> {
        match side {
            Side::A => self.a.dialog.as_mut(),
            Side::B => self
                .winner
                .and_then(|w| self.forks.get_mut(w))
                .and_then(|f| f.dialog.as_mut()),
        }
    }

    fn side_of(&self, req: &Request) -> Option<Side> {
        if self
            .a
            .dialog
            .as_ref()
            .is_some_and(|d| d.matches_request(req))
        {
            return Some(Side::A);
        }
        let b = self
            .winner
            .and_then(|w| self.forks.get(w))
            .and_then(|f| f.dialog.as_ref());
        if b.is_some_and(|d| d.matches_request(req)) {
            return Some(Side::B);
        }
        None
    }

    fn start_retrans(
        &mut self,
        now: Instant,
        side: Side,
        cseq: u32,
        response: Response,
        peer: Peer,
        settings: &CallSettings,
    ) {
        if peer.proto.is_reliable() {
            return;
        }
        self.retrans.retain(|r| r.side != side);
        self.retrans.push(Retrans {
            side,
            cseq,
            response,
            peer,
            next: now + settings.t1,
            interval: settings.t1,
            give_up: now + settings.t1 * 64,
        });
    }

    pub fn retrans_at(&self) -> Option<Instant> {
        self.retrans
            .iter()
            .map(|r| r.next)
            .chain(self.reliable.next())
            .min()
    }

    pub fn media_event(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        event: MediaEvent,
        settings: &CallSettings,
    ) -> ForkAction {
        match event {
            MediaEvent::Dtmf {
                from,
                digit,
                duration_ms,
            } => {
                let to = other(from);
                if !self.sdp.has_dtmf_events(to) {
                    self.send_info_dtmf(now, layer, to, digit, duration_ms, settings);
                }
                ForkAction::None
            }
            MediaEvent::Dead => {
                if self.winner.is_none() {
                    return ForkAction::None;
                }
                tracing::warn!(call = self.id, "no RTP from either side: hanging up");
                self.outcome.get_or_insert((200, "answered"));
                self.hang_up(now, layer, None, settings);
                ForkAction::Finished
            }
        }
    }

    pub fn timer(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        kind: TimerKind,
        at: Instant,
        settings: &CallSettings,
    ) -> ForkAction {
        match kind {
            TimerKind::NoAnswer => {
                if self.winner.is_some() {
                    return ForkAction::None;
                }
                tracing::info!(call = self.id, "no answer: giving up");
                self.respond_a(now, layer, 480, Some("No Answer"), None);
                self.outcome = Some((480, "no answer"));
                ForkAction::Finished
            }
            TimerKind::Failover(stage) => {
                if self.winner.is_some() || stage != self.stage || self.stages.is_empty() {
                    return ForkAction::None;
                }
                let mut pending = self
                    .forks
                    .iter()
                    .filter(|f| f.stage == stage)
                    .filter(|f| matches!(f.state, ForkState::Trying | ForkState::Early))
                    .peekable();
                if pending.peek().is_none() || pending.any(|f| f.responded) {
                    return ForkAction::None;
                }
                tracing::info!(call = self.id, stage, label = %self.stage_label(stage), "stage silent: failing over");
                ForkAction::NextStage
            }
            TimerKind::RingTimeout(stage) => {
                if self.winner.is_some() || stage != self.stage || self.stages.is_empty() {
                    return ForkAction::None;
                }
                tracing::info!(call = self.id, stage, label = %self.stage_label(stage), "not answered in its turn: ringing the next");
                ForkAction::NextStage
            }
            TimerKind::TransferTimeout => self.transfer_timeout(now, layer, settings),
            TimerKind::ForwardNoAnswer => self.forward_on_timeout(),
            TimerKind::MaxDuration => {
                if self
                    .answered
                    .is_some_and(|a| now >= a + settings.max_duration)
                    || at <= now
                {
                    tracing::info!(call = self.id, "maximum call duration reached");
                    self.hang_up(now, layer, None, settings);
                    return ForkAction::Finished;
                }
                ForkAction::None
            }
            TimerKind::Retransmit => {
                self.reliable.retransmit(now, layer, self.a.peer);
                let mut give_up = false;
                for r in &mut self.retrans {
                    if r.next > now {
                        continue;
                    }
                    if now >= r.give_up {
                        give_up = true;
                        continue;
                    }
                    layer.send_stateless(r.peer, &Message::Response(r.response.clone()));
                    r.interval = (r.interval * 2).min(settings.t2);
                    r.next = now + r.interval;
                }
                if give_up {
                    tracing::warn!(call = self.id, "no ACK for a 2xx: hanging up");
                    self.retrans.clear();
                    self.hang_up(now, layer, None, settings);
                    return ForkAction::Finished;
                }
                if self.retrans.is_empty() && !self.reliable.pending() {
                    ForkAction::None
                } else {
                    ForkAction::Retransmit
                }
            }
        }
    }

    /// The call as [`UpCall`], when it is answered.
    pub fn up(&self, now: Instant) -> Option<UpCall> {
        self.answered?;
        let b = self
            .winner
            .and_then(|w| self.forks.get(w))
            .and_then(|f| f.dialog.clone());
        let legs = self.a.dialog.clone().into_iter().chain(b).collect();
        Some(UpCall {
            id: self.id,
            summary: self.summary(now),
            legs,
        })
    }

    pub fn summary(&self, now: Instant) -> CallSummary {
        let (status, disposition) = self.outcome.unwrap_or(if self.answered.is_some() {
            (200, "answered")
        } else {
            (500, "failed")
        });
        let stats = self.relay.as_deref().map(|r| r.stats());
        CallSummary {
            id: self.id,
            caller: self.caller.number.clone(),
            callee: self.callee.clone(),
            started: self.started,
            answered: self.answered,
            ended: now,
            status,
            disposition,
            codec: self.sdp.codec_name(),
            media_srtp: self.sdp.srtp_legs(),
            packets: stats.as_ref().map_or(0, |s| s.packets()),
            lost: stats.as_ref().map_or(0, |s| s.lost()),
            jitter_ms: stats.as_ref().map_or(0.0, |s| s.jitter_ms()),
            attempts: self
                .forks
                .iter()
                .map(|f| Attempt {
                    stage: f.stage,
                    label: self.stage_label(f.stage).to_owned(),
                    uri: f.uri.clone(),
                    status: f.status,
                    reason: f.reason.clone(),
                })
                .collect(),
            signalling: (
                Some(self.a.peer.proto),
                self.winner
                    .or_else(|| self.forks.len().checked_sub(1))
                    .and_then(|w| self.forks.get(w))
                    .map(|f| f.peer.proto),
            ),
            route: self.route.clone(),
            q850: self.q850,
            origin: self.caller.origin.clone(),
            answered_by: self
                .winner
                .and_then(|w| self.forks.get(w))
                .map(|f| (f.stage, f.uri.clone())),
            transfers: self.transfers_done.clone(),
        }
    }
}

fn disposition(status: u16) -> &'static str {
    match status {
        200..=299 => "answered",
        486 | 600 => "busy",
        480 | 408 => "no answer",
        487 => "cancelled",
        _ => "failed",
    }
}

/// The Q.850 cause of an RFC 3326 `Reason: Q.850;cause=N` header, if there is one.
pub fn q850_reason(headers: &crate::sip::header::Headers) -> Option<u16> {
    headers.get_all("Reason").find_map(|v| {
        let (proto, params) = v.split_once(';')?;
        if !proto.trim().eq_ignore_ascii_case("Q.850") {
            return None;
        }
        params.split(';').find_map(|p| {
            let (k, v) = p.split_once('=')?;
            if k.trim().eq_ignore_ascii_case("cause") {
                v.trim().parse().ok()
            } else {
                None
            }
        })
    })
}

#[cfg(test)]
mod reason_tests {
    use super::q850_reason;
    use crate::sip::header::{Header, Headers};

    fn with(values: &[&str]) -> Headers {
        let mut h = Headers::new();
        for v in values {
            h.push(Header::Other("Reason".into(), (*v).to_owned()));
        }
        h
    }

    #[test]
    fn q850_cause_of_a_reason_header() {
        assert_eq!(
            q850_reason(&with(&["Q.850;cause=17;text=\"Busy\""])),
            Some(17)
        );
        assert_eq!(
            q850_reason(&with(&["SIP;cause=200", "q.850 ; cause = 41"])),
            Some(41)
        );
        assert_eq!(q850_reason(&with(&["SIP;cause=487"])), None);
        assert_eq!(q850_reason(&with(&["Q.850;text=x"])), None);
        assert_eq!(q850_reason(&Headers::new()), None);
    }
}

/// What a held call keeps inline, against the allocator's size classes: above 1 KiB they step
/// by a quarter of a power of two (…, 896, 1 024, …, 2 048, 2 560, …), so a `Call` of 2 184 B
/// (its Contact and line leg inline) took a 2 560 B block; at most 2 048 B it takes a 2 048 B
/// one (issue 22: memory per held call).
#[cfg(test)]
mod sizes {
    #[test]
    fn call_fits_its_allocator_block() {
        let size = std::mem::size_of::<super::Call>();
        assert!(
            size <= 2048,
            "a Call is {size} B: box a part most calls never use"
        );
    }

    /// A fork is kept for the call's life (`Call::forks`, one per target rung).
    #[test]
    fn fork_fits_its_allocator_block() {
        let size = std::mem::size_of::<super::Fork>();
        assert!(size <= 896, "a Fork is {size} B");
    }
}
