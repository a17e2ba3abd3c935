//! One call: the caller's leg (A), the callee forks (B), the winning fork's dialog, the relay,
//! and the mapping of every request, response and SDP body between the two sides. Call set-up
//! lives here; what happens inside the established dialogs is in [`in_dialog`].

mod in_dialog;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::sdp_flow::{self, LegSdp};
use super::{CallSettings, Caller, Target};
use crate::media::{MediaEvent, Relay, Side};
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
    /// A fork answered: register both dialogs, cancel the other forks, start call timers.
    Answered {
        winner: usize,
        a_dialog: (String, String),
        b_dialog: (String, String),
    },
    /// A 2xx retransmission timer needs (re)scheduling.
    Retransmit,
    /// Map this client transaction to the call.
    Track(ClientKey),
    /// The call is over: release it.
    Finished,
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
    #[allow(dead_code)]
    pub key: ClientKey,
    pub invite: Request,
    pub peer: Peer,
    state: ForkState,
    status: u16,
    dialog: Option<Dialog>,
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
    pub packets: u64,
    pub lost: u64,
    pub jitter_ms: f64,
}

pub struct Call {
    pub id: u64,
    pub caller: Caller,
    a: ALeg,
    pub forks: Vec<Fork>,
    pub winner: Option<usize>,
    pub relay: Option<Relay>,
    sdp: LegSdp,
    retrans: Vec<Retrans>,
    forwarded: HashMap<ClientKey, Forwarded>,
    /// A target-refresh without an offer was answered with our offer; the answer comes in the ACK.
    answer_in_ack: [bool; 2],
    started: Instant,
    answered: Option<Instant>,
    pub outcome: Option<(u16, &'static str)>,
    callee: String,
    /// Contact and Server of our answers to the caller.
    a_contact: Header,
    server: String,
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
fn local_host(peer: &Peer, settings: &CallSettings) -> Host {
    if peer.local.ip().is_unspecified() {
        Host::from_ip(settings.media_ip)
    } else {
        Host::from_ip(peer.local.ip())
    }
}

pub(super) fn our_via(peer: &Peer, branch: String, host: Host) -> Via {
    let mut params = Params::new();
    params.set("branch", Some(&branch));
    params.set("rport", None);
    Via {
        transport: peer.proto.via_token().to_owned(),
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
    if peer.proto == Proto::Tcp {
        uri.params.set("transport", Some("tcp"));
    }
    Header::Contact(Contact::Addr(NameAddr::new(Uri::Sip(uri))))
}

fn with_body(headers: &mut crate::sip::header::Headers, sdp: Option<&SessionDescription>) -> Bytes {
    match sdp {
        Some(s) => {
            headers.push(Header::ContentType("application/sdp".into()));
            Bytes::from(s.to_string())
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
    layer.respond(now, key, r.clone());
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
            sdp: LegSdp::new(id, settings.media_ip),
            retrans: Vec::new(),
            forwarded: HashMap::new(),
            answer_in_ack: [false; 2],
            started: now,
            answered: None,
            outcome: None,
            a_contact: our_contact(&peer, &callee, settings),
            server: settings.server_name.clone(),
            callee,
        }
    }

    pub fn callee(&self) -> &str {
        &self.callee
    }

    fn relay_port(&self, side: Side) -> u16 {
        self.relay.as_ref().map_or(9, |r| r.local_port(side))
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
            r.headers.push(self.a_contact.clone());
        }
        r.body = with_body(&mut r.headers, sdp);
        layer.respond(now, self.a.key, r.clone());
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
    ) -> ClientKey {
        let peer = target.peer;
        let mut req = Request::new(Method::Invite, target.uri.clone());
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
            .saturating_sub(1)
            .max(1);
        h.push(Header::MaxForwards(mf));
        let mut from_uri = SipUri::new(
            Some(&self.caller.number),
            Host::Name(settings.domain.clone()),
            None,
        );
        from_uri.params = Params::new();
        let mut from = NameAddr::new(Uri::Sip(from_uri));
        from.display = self
            .caller
            .name
            .as_ref()
            .map(|n| crate::sip::header::quote(n));
        from.set_tag(&tag);
        h.push(Header::From(from));
        let to = NameAddr::new(Uri::Sip(SipUri::new(
            Some(&self.callee),
            Host::Name(settings.domain.clone()),
            None,
        )));
        h.push(Header::To(to));
        h.push(Header::CallId(call_id));
        h.push(Header::CSeq(CSeq {
            seq: 1,
            method: Method::Invite,
        }));
        h.push(our_contact(&peer, &self.caller.number, settings));
        h.push(Header::Other(
            "Allow".into(),
            super::super::server::core::ALLOW.into(),
        ));
        h.push(Header::Other(
            "User-Agent".into(),
            settings.server_name.clone(),
        ));
        let offer = self.sdp.offer_for_b();
        req.body = with_body(&mut req.headers, offer.as_ref());
        let key = layer.send_request(now, req.clone(), peer);
        self.forks.push(Fork {
            key,
            invite: req,
            peer,
            state: ForkState::Trying,
            status: 0,
            dialog: None,
        });
        key
    }

    /// CANCELs every fork still ringing (but `except`); returns the CANCEL transactions.
    pub fn cancel_forks(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        except: Option<usize>,
    ) -> Vec<ClientKey> {
        let mut keys = Vec::new();
        for (i, f) in self.forks.iter_mut().enumerate() {
            if Some(i) == except || !matches!(f.state, ForkState::Trying | ForkState::Early) {
                continue;
            }
            f.state = ForkState::Cancelled;
            let cancel = crate::sip::transaction::build_cancel(&f.invite);
            keys.push(layer.send_request(now, cancel, f.peer));
        }
        keys
    }

    pub fn fork_response(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        resp: Response,
        settings: &CallSettings,
    ) -> ForkAction {
        let Some(fork) = self.forks.get_mut(i) else {
            return ForkAction::None;
        };
        let status = resp.status;
        if status < 200 {
            if status == 100 || self.winner.is_some() || fork.state == ForkState::Cancelled {
                return ForkAction::None;
            }
            fork.state = ForkState::Early;
            if fork.dialog.is_none() {
                fork.dialog = Dialog::uac(&fork.invite, &resp, fork.peer);
            }
            // Early media: a 183 (or 180) with SDP sets up the relay towards B at once.
            let a_sdp = match sdp_of(&resp.headers, &resp.body) {
                Some(Ok(answer)) => self
                    .sdp
                    .b_answers(&answer, self.relay_port(Side::A), self.relay.as_ref())
                    .ok(),
                _ => None,
            };
            let status = if a_sdp.is_some() { 183 } else { status };
            self.respond_a(now, layer, status, None, a_sdp.as_ref());
            return ForkAction::None;
        }
        if status >= 300 {
            return self.fork_failed(now, layer, i, status);
        }
        // 2xx.
        let peer = fork.peer;
        let Some(mut b_dialog) = Dialog::uac(&fork.invite, &resp, peer) else {
            return ForkAction::None;
        };
        let invite_seq = fork.invite.headers.cseq().map_or(1, |c| c.seq);
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
        self.winner = Some(i);
        self.answered = Some(now);
        let host = local_host(&peer, settings);
        let ack = b_dialog.ack(invite_seq, our_via(&peer, layer.new_branch(), host.clone()));
        // SDP: B answers our offer (the normal case) — or, for our offerless INVITE, offers.
        let a_sdp = match sdp_of(&resp.headers, &resp.body) {
            Some(Ok(answer)) => {
                match self
                    .sdp
                    .b_answers(&answer, self.relay_port(Side::A), self.relay.as_ref())
                {
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
        let ok = self.respond_a(now, layer, 200, None, a_sdp.as_ref());
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
        let a_seq = self.a.invite.headers.cseq().map_or(0, |c| c.seq);
        self.start_retrans(now, Side::A, a_seq, ok, self.a.peer, settings);
        let b_key = (
            b_dialog.call_id.clone(),
            b_dialog.local.tag().unwrap_or_default().to_owned(),
        );
        tracing::info!(call = self.id, "call answered");
        ForkAction::Answered {
            winner: i,
            a_dialog: a_key,
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
        if let Some(f) = self.forks.get_mut(i) {
            if f.state != ForkState::Cancelled {
                f.state = ForkState::Failed;
            }
            f.status = status;
        }
        if self.winner.is_some() {
            return ForkAction::None;
        }
        let pending = self
            .forks
            .iter()
            .any(|f| matches!(f.state, ForkState::Trying | ForkState::Early));
        if pending {
            return ForkAction::None;
        }
        // Every fork failed: the best answer for the caller (busy wins, then the lowest class).
        let statuses: Vec<u16> = self
            .forks
            .iter()
            .map(|f| f.status)
            .filter(|s| *s >= 300)
            .collect();
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
        self.retrans.iter().map(|r| r.next).min()
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
                if self.retrans.is_empty() {
                    ForkAction::None
                } else {
                    ForkAction::Retransmit
                }
            }
        }
    }

    pub fn summary(&self, now: Instant) -> CallSummary {
        let (status, disposition) = self.outcome.unwrap_or(if self.answered.is_some() {
            (200, "answered")
        } else {
            (500, "failed")
        });
        let stats = self.relay.as_ref().map(Relay::stats);
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
            packets: stats.as_ref().map_or(0, |s| s.packets()),
            lost: stats.as_ref().map_or(0, |s| s.lost()),
            jitter_ms: stats.as_ref().map_or(0.0, |s| s.jitter_ms()),
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
