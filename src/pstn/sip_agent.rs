//! The line agent: the modem lines presented to the B2BUA as a SIP trunk. A small SIP user
//! agent inside the process, on one loopback UDP socket, that
//!
//! - takes INVITEs from the B2BUA (`sip:<number>@<agent>;line=<name>`, one trunk hop per line,
//!   see [`line_trunks`]) and places them on that line ([`LinePool::dial`]), answering the SDP
//!   offer with a G.711 stream of its own that the line speaks ([`PstnCall::attach_rtp`]);
//!   the call's progress becomes 180/183/200, its end a final response or a BYE, both with an
//!   RFC 3326 `Reason: Q.850;cause=N`;
//! - sends an INVITE to the gateway's own SIP socket for every call arriving on a line (the SIP
//!   core accepts those from the agent's address alone and rings the line's extensions), and
//!   answers the line when a phone answers.
//!
//! Retransmissions over UDP are handled here (RFC 3261 §17 timers, simplified for loopback).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use super::gsm::{IncomingPstnCall, RtpAttach};
use super::line::{LineCall, RtpCodec};
use super::{CallProgress, EndCause, LinePool};
use crate::config::{NumberFormat, TrunkConfig};
use crate::media::Law;
use crate::routing::numbering::{Dialled, NumberingPlan};
use crate::sdp::session::SessionDescription;
use crate::sip::message::{reason_phrase, Message, Request, Response};
use crate::sip::method::Method;
use crate::sip::parse::{parse_message, Framing, Limits};
use crate::sip::uri::Uri;

/// Longest a transaction is retransmitted (64·T1 with T1 = 500 ms).
const TIMER_B: Duration = Duration::from_secs(32);
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// How long a finished call still answers retransmissions.
const LINGER: Duration = Duration::from_secs(4);

/// A line as the SIP core needs it for incoming calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInfo {
    /// The line's name.
    pub name: String,
    /// Extensions its calls ring.
    pub extensions: Vec<String>,
}

/// Where the agent sends incoming calls and how it writes callers.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// The gateway's own SIP UDP socket.
    pub server: SocketAddr,
    /// SIP domain for From/To.
    pub domain: String,
    /// For writing callers in E.164.
    pub plan: NumberingPlan,
}

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The loopback socket could not be bound.
    #[error("binding the line agent's socket: {0}")]
    Bind(#[from] std::io::Error),
}

/// The agent's socket, bound before the router is built (its address is the trunks' hop).
pub struct BoundAgent {
    socket: UdpSocket,
    local: SocketAddr,
}

impl BoundAgent {
    /// Binds 127.0.0.1 on an ephemeral port.
    pub async fn bind() -> Result<BoundAgent, AgentError> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let local = socket.local_addr()?;
        Ok(BoundAgent { socket, local })
    }

    /// The agent's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Starts serving the pool's lines.
    pub fn run(self, pool: Arc<LinePool>, settings: AgentSettings) -> LineAgent {
        let (stop_tx, stop_rx) = oneshot::channel();
        let local = self.local;
        let ctx = Arc::new(Ctx {
            socket: self.socket,
            local,
            settings,
            pool,
        });
        let task = tokio::spawn(main_loop(ctx, stop_rx));
        LineAgent {
            local,
            stop: Some(stop_tx),
            task,
        }
    }
}

/// The running agent.
pub struct LineAgent {
    local: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl LineAgent {
    /// The agent's address (the only source the SIP core takes line calls from).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops the agent (calls in progress are hung up as their handles drop).
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
    }
}

/// One trunk per enabled line, for the router's PSTN stage: calls to the number in E.164
/// (emergency and short numbers as dialled) at the agent's address.
pub fn line_trunks(
    modems: &[super::gsm::config::ModemConfig],
    agent: SocketAddr,
) -> Vec<TrunkConfig> {
    named_line_trunks(
        modems
            .iter()
            .filter(|m| m.enabled)
            .map(|m| m.line.line.name.as_str()),
        agent,
    )
}

/// One router trunk per line name, each pointing at the agent with `;line=NAME` (any kind of
/// line: modems, FXO ports).
pub fn named_line_trunks<'a>(
    names: impl Iterator<Item = &'a str>,
    agent: SocketAddr,
) -> Vec<TrunkConfig> {
    names
        .filter_map(|name| {
            let text = format!("sip:{}:{};line={name}", agent.ip(), agent.port());
            match Uri::parse(&text) {
                Ok(Uri::Sip(uri)) => Some(TrunkConfig {
                    name: name.to_string(),
                    uri,
                    username: None,
                    password: None,
                    number_format: NumberFormat::E164,
                    enabled: true,
                    sources: Vec::new(),
                    options: Default::default(),
                }),
                _ => None,
            }
        })
        .collect()
}

struct Ctx {
    socket: UdpSocket,
    local: SocketAddr,
    settings: AgentSettings,
    pool: Arc<LinePool>,
}

impl Ctx {
    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(bytes, to).await {
            tracing::warn!(%to, "line agent: send failed: {e}");
        }
    }
}

type Inbox = mpsc::UnboundedSender<(Message, SocketAddr)>;

async fn main_loop(ctx: Arc<Ctx>, mut stop: oneshot::Receiver<()>) {
    let mut incoming = ctx.pool.take_incoming();
    let mut calls: HashMap<String, Inbox> = HashMap::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    let limits = Limits::default();
    let mut buf = vec![0u8; 65_536];
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            r = ctx.socket.recv_from(&mut buf) => {
                let (n, from) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("line agent: receive: {e}");
                        continue;
                    }
                };
                let Ok(msg) = parse_message(Bytes::copy_from_slice(&buf[..n]), Framing::Datagram, &limits) else {
                    tracing::debug!(%from, "line agent: unparsable message dropped");
                    continue;
                };
                let Some(call_id) = msg.headers().call_id().map(str::to_owned) else { continue };
                if let Some(inbox) = calls.get(&call_id) {
                    if inbox.send((msg, from)).is_ok() {
                        continue;
                    }
                    calls.remove(&call_id);
                    continue;
                }
                match msg {
                    Message::Request(req) if req.method == Method::Invite
                        && req.headers.to().is_some_and(|t| t.tag().is_none()) =>
                    {
                        let (tx, rx) = mpsc::unbounded_channel();
                        calls.insert(call_id.clone(), tx);
                        let done = done_tx.clone();
                        let ctx = Arc::clone(&ctx);
                        tasks.spawn(async move {
                            outgoing_call(&ctx, req, from, rx).await;
                            let _ = done.send(call_id);
                        });
                    }
                    Message::Request(req) if req.method == Method::Ack => {}
                    Message::Request(req) => {
                        let status = if req.method == Method::Options { 200 } else { 481 };
                        let r = Response::to_request(&req, status, reason_phrase(status), Some("agent"));
                        ctx.send(&r.encode(), from).await;
                    }
                    Message::Response(_) => {}
                }
            }
            Some(call) = incoming.recv() => {
                let call_id = format!("line-{}-{}@{}", call.info.line, call.info.call, random_token());
                let (tx, rx) = mpsc::unbounded_channel();
                calls.insert(call_id.clone(), tx);
                let done = done_tx.clone();
                let ctx = Arc::clone(&ctx);
                tasks.spawn(async move {
                    incoming_call(&ctx, call, &call_id, rx).await;
                    let _ = done.send(call_id);
                });
            }
            Some(id) = done_rx.recv() => {
                calls.remove(&id);
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    tasks.shutdown().await;
}

fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The codec chosen from an offer: its first PCMU or PCMA; telephone-event if offered.
fn choose_codec(offer: &SessionDescription) -> Option<(RtpCodec, Option<SocketAddr>)> {
    let audio = offer.audio()?;
    let codecs = audio.codecs();
    let dtmf_pt = codecs
        .iter()
        .find(|c| c.is_telephone_event() && c.rate == 8000)
        .map(|c| c.pt);
    let g711 = codecs.iter().find_map(|c| {
        if c.name.eq_ignore_ascii_case("PCMU") && c.rate == 8000 {
            Some((Law::Ulaw, c.pt))
        } else if c.name.eq_ignore_ascii_case("PCMA") && c.rate == 8000 {
            Some((Law::Alaw, c.pt))
        } else {
            None
        }
    })?;
    Some((
        RtpCodec {
            law: g711.0,
            pt: g711.1,
            dtmf_pt,
        },
        audio.remote_addr(offer),
    ))
}

/// SDP for our RTP socket with the given payload types.
fn sdp_body(rtp: SocketAddr, codecs: &[(u8, &str)], dtmf: Option<u8>) -> String {
    let mut pts: Vec<String> = codecs.iter().map(|(pt, _)| pt.to_string()).collect();
    if let Some(d) = dtmf {
        pts.push(d.to_string());
    }
    let mut s = format!(
        "v=0\r\no=pasarela-line {id} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pts}\r\n",
        id = rand::random::<u32>(),
        ip = rtp.ip(),
        port = rtp.port(),
        pts = pts.join(" ")
    );
    for (pt, name) in codecs {
        s.push_str(&format!("a=rtpmap:{pt} {name}/8000\r\n"));
    }
    if let Some(d) = dtmf {
        s.push_str(&format!(
            "a=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-16\r\n"
        ));
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\n");
    s
}

fn law_name(law: Law) -> &'static str {
    match law {
        Law::Ulaw => "PCMU",
        Law::Alaw => "PCMA",
    }
}

fn reason_header(cause: &EndCause) -> String {
    format!("Q.850;cause={};text=\"{:?}\"", cause.q850, cause.reason)
}

fn body_of(msg: &Request) -> Option<SessionDescription> {
    let text = std::str::from_utf8(&msg.body).ok()?;
    SessionDescription::parse(text).ok()
}

/// A retransmitted message: what, where, next time, interval, give-up time.
struct Retrans {
    bytes: Vec<u8>,
    to: SocketAddr,
    next: Instant,
    interval: Duration,
    until: Instant,
}

impl Retrans {
    fn new(bytes: Vec<u8>, to: SocketAddr) -> Retrans {
        let now = Instant::now();
        Retrans {
            bytes,
            to,
            next: now + T1,
            interval: T1,
            until: now + TIMER_B,
        }
    }

    fn backoff(&mut self) {
        self.interval = (self.interval * 2).min(T2);
        self.next = Instant::now() + self.interval;
    }
}

async fn wait_retrans(r: &Option<Retrans>) {
    match r {
        Some(r) => sleep_until(r.next).await,
        None => std::future::pending().await,
    }
}

async fn wait_event(call: &mut Option<Box<dyn LineCall>>) -> Option<CallProgress> {
    match call {
        Some(c) => c.next_event().await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------------
// Outgoing: the B2BUA's INVITE placed on a line.

struct Uas<'a> {
    ctx: &'a Ctx,
    invite: Request,
    peer: SocketAddr,
    tag: String,
    last: Option<Vec<u8>>,
}

impl Uas<'_> {
    fn response(&self, status: u16, sdp: Option<&str>, reason: Option<&str>) -> Response {
        let mut r =
            Response::to_request(&self.invite, status, reason_phrase(status), Some(&self.tag));
        if status > 100 {
            r.headers
                .set_other("Contact", format!("<sip:line@{}>", self.ctx.local));
        }
        if let Some(reason) = reason {
            r.headers.set_other("Reason", reason.to_owned());
        }
        if let Some(sdp) = sdp {
            r.headers.set_other("Content-Type", "application/sdp");
            r.body = Bytes::from(sdp.to_owned());
        }
        r
    }

    async fn respond(&mut self, status: u16, sdp: Option<&str>, reason: Option<&str>) -> Vec<u8> {
        let bytes = self.response(status, sdp, reason).encode();
        self.ctx.send(&bytes, self.peer).await;
        self.last = Some(bytes.clone());
        bytes
    }

    async fn answer_request(&self, req: &Request, status: u16, from: SocketAddr) {
        let r = Response::to_request(req, status, reason_phrase(status), Some(&self.tag));
        self.ctx.send(&r.encode(), from).await;
    }

    /// A BYE within the dialog, towards the B2BUA's Contact.
    fn bye(&self, reason: Option<&str>) -> Vec<u8> {
        let h = &self.invite.headers;
        let target = h
            .contacts()
            .find_map(|c| c.addr())
            .map(|a| a.uri.to_string())
            .unwrap_or_else(|| format!("sip:{}", self.peer));
        let mut to = h.to().cloned();
        if let Some(t) = to.as_mut() {
            if t.tag().is_none() {
                t.set_tag(&self.tag);
            }
        }
        let mut text = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{b};rport\r\nMax-Forwards: 70\r\n",
            local = self.ctx.local,
            b = random_token()
        );
        if let Some(to) = to {
            text.push_str(&format!("From: {to}\r\n"));
        }
        if let Some(from) = h.from() {
            text.push_str(&format!("To: {from}\r\n"));
        }
        text.push_str(&format!(
            "Call-ID: {}\r\nCSeq: 1 BYE\r\n",
            h.call_id().unwrap_or("")
        ));
        if let Some(r) = reason {
            text.push_str(&format!("Reason: {r}\r\n"));
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        text.into_bytes()
    }
}

async fn outgoing_call(
    ctx: &Ctx,
    invite: Request,
    peer: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<(Message, SocketAddr)>,
) {
    let mut uas = Uas {
        ctx,
        invite,
        peer,
        tag: random_token(),
        last: None,
    };
    uas.respond(100, None, None).await;
    let sip = uas.invite.uri.as_sip().cloned();
    let number = sip.as_ref().and_then(|u| u.user_unescaped());
    let line = sip
        .as_ref()
        .and_then(|u| u.params.value("line").map(str::to_owned));
    let (Some(number), Some(line)) = (number, line) else {
        finish_refused(&mut uas, &mut rx, 404, None).await;
        return;
    };
    let Some((codec, remote)) = body_of(&uas.invite).as_ref().and_then(choose_codec) else {
        finish_refused(&mut uas, &mut rx, 488, None).await;
        return;
    };
    tracing::info!(%number, %line, "line agent: dialling");
    let dialled = tokio::select! {
        r = ctx.pool.dial(&number, Some(&line)) => r,
        // A CANCEL while the modem dials: give up at once.
        cancelled = wait_cancel(&mut rx) => {
            if let Some((req, from)) = cancelled {
                uas.answer_request(&req, 200, from).await;
            }
            finish_refused(&mut uas, &mut rx, 487, None).await;
            return;
        }
    };
    let call = match dialled {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(%number, %line, "line agent: cannot dial: {e}");
            // A line already in a call is not the callee being busy: 503 lets the B2BUA try
            // the next line (486 would end the call), with Q.850 34 (no circuit available).
            let (status, q850) = super::line::refusal(&e);
            let reason = q850.map(|q| format!("Q.850;cause={q};text=\"line in use\""));
            finish_refused(&mut uas, &mut rx, status, reason.as_deref()).await;
            return;
        }
    };
    let rtp = match UdpSocket::bind("127.0.0.1:0").await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("line agent: RTP socket: {e}");
            finish_refused(&mut uas, &mut rx, 503, None).await;
            return;
        }
    };
    let rtp_addr = rtp.local_addr().unwrap_or(ctx.local);
    let sdp = sdp_body(rtp_addr, &[(codec.pt, law_name(codec.law))], codec.dtmf_pt);
    if let Err(e) = call
        .attach_audio(RtpAttach {
            socket: rtp,
            remote,
            codec,
        })
        .await
    {
        tracing::warn!("line agent: attaching RTP: {e}");
    }
    let mut call = Some(call);
    let mut answered = false;
    let mut final_sent = false;
    let mut retrans: Option<Retrans> = None;
    let mut bye_sent: Option<Instant> = None;
    loop {
        tokio::select! {
            ev = wait_event(&mut call) => {
                match ev {
                    Some(CallProgress::Ringing) if !final_sent => {
                        uas.respond(180, None, None).await;
                    }
                    Some(CallProgress::EarlyMedia) if !final_sent => {
                        uas.respond(183, Some(&sdp), None).await;
                    }
                    Some(CallProgress::Answered) if !final_sent => {
                        answered = true;
                        final_sent = true;
                        let bytes = uas.respond(200, Some(&sdp), None).await;
                        retrans = Some(Retrans::new(bytes, peer));
                    }
                    Some(CallProgress::Ended(cause)) => {
                        call = None;
                        tracing::info!(line = %line, q850 = cause.q850, reason = ?cause.reason, answered, "line agent: PSTN side ended");
                        let reason = reason_header(&cause);
                        if answered {
                            let bye = uas.bye(Some(&reason));
                            ctx.send(&bye, peer).await;
                            retrans = Some(Retrans::new(bye, peer));
                            bye_sent = Some(Instant::now());
                        } else if !final_sent {
                            let status = if cause.sip_status >= 300 { cause.sip_status } else { 480 };
                            uas.respond(status, None, Some(&reason)).await;
                            linger(&mut uas, &mut rx).await;
                            return;
                        }
                    }
                    None => {
                        call = None;
                        if !final_sent {
                            uas.respond(503, None, None).await;
                            linger(&mut uas, &mut rx).await;
                            return;
                        }
                        if bye_sent.is_none() {
                            let bye = uas.bye(None);
                            ctx.send(&bye, peer).await;
                            retrans = Some(Retrans::new(bye, peer));
                            bye_sent = Some(Instant::now());
                        }
                    }
                    Some(_) => {}
                }
            }
            msg = rx.recv() => {
                let Some((msg, from)) = msg else { return };
                match msg {
                    Message::Request(req) => match req.method {
                        Method::Invite if req.headers.to().is_some_and(|t| t.tag().is_none()) => {
                            if let Some(last) = &uas.last {
                                ctx.send(last, peer).await;
                            }
                        }
                        Method::Invite => {
                            // A re-INVITE (hold, refresh): our stream stays as it is.
                            let mut r = Response::to_request(&req, 200, "OK", Some(&uas.tag));
                            r.headers.set_other("Contact", format!("<sip:line@{}>", ctx.local));
                            r.headers.set_other("Content-Type", "application/sdp");
                            r.body = Bytes::from(sdp.clone());
                            ctx.send(&r.encode(), from).await;
                        }
                        Method::Ack => {
                            if bye_sent.is_none() {
                                retrans = None;
                            }
                        }
                        Method::Cancel => {
                            uas.answer_request(&req, 200, from).await;
                            if !final_sent {
                                if let Some(c) = call.take() {
                                    let _ = c.hangup().await;
                                }
                                uas.respond(487, None, None).await;
                                linger(&mut uas, &mut rx).await;
                                return;
                            }
                        }
                        Method::Bye => {
                            uas.answer_request(&req, 200, from).await;
                            if let Some(c) = call.take() {
                                let _ = c.hangup().await;
                            }
                            tracing::info!(line = %line, "line agent: caller hung up");
                            return;
                        }
                        _ => uas.answer_request(&req, 200, from).await,
                    },
                    Message::Response(r) => {
                        if bye_sent.is_some() && r.headers.cseq().is_some_and(|c| c.method == Method::Bye) && r.status >= 200 {
                            return;
                        }
                    }
                }
            }
            () = wait_retrans(&retrans) => {
                if let Some(r) = retrans.as_mut() {
                    if Instant::now() >= r.until {
                        if bye_sent.is_some() {
                            return;
                        }
                        // No ACK for our 200: the dialog is dead (RFC 3261 §13.3.1.4).
                        let bye = uas.bye(None);
                        ctx.send(&bye, peer).await;
                        if let Some(c) = call.take() {
                            let _ = c.hangup().await;
                        }
                        return;
                    }
                    ctx.send(&r.bytes, r.to).await;
                    r.backoff();
                }
            }
        }
    }
}

/// Waits for a CANCEL (other messages are absorbed); `None` when the inbox closed.
async fn wait_cancel(
    rx: &mut mpsc::UnboundedReceiver<(Message, SocketAddr)>,
) -> Option<(Request, SocketAddr)> {
    loop {
        match rx.recv().await? {
            (Message::Request(r), from) if r.method == Method::Cancel => return Some((r, from)),
            _ => {}
        }
    }
}

async fn finish_refused(
    uas: &mut Uas<'_>,
    rx: &mut mpsc::UnboundedReceiver<(Message, SocketAddr)>,
    status: u16,
    reason: Option<&str>,
) {
    uas.respond(status, None, reason).await;
    linger(uas, rx).await;
}

/// After a final non-2xx response: resend it for INVITE retransmissions until the ACK (or
/// [`LINGER`]).
async fn linger(uas: &mut Uas<'_>, rx: &mut mpsc::UnboundedReceiver<(Message, SocketAddr)>) {
    let end = Instant::now() + LINGER;
    loop {
        tokio::select! {
            () = sleep_until(end) => return,
            m = rx.recv() => match m {
                None => return,
                Some((Message::Request(r), from)) => match r.method {
                    Method::Ack => return,
                    Method::Invite => {
                        if let Some(last) = &uas.last {
                            uas.ctx.send(last, uas.peer).await;
                        }
                    }
                    _ => uas.answer_request(&r, 481, from).await,
                },
                Some(_) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Incoming: a call from the PSTN offered to the gateway.

/// The caller in E.164 when the numbering plan can tell, else as the network sent it.
pub fn caller_e164(plan: &NumberingPlan, number: &str, toa: Option<u8>) -> String {
    let digits: String = number
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    if toa == Some(145) && !digits.starts_with('+') && !digits.is_empty() {
        return format!("+{digits}");
    }
    match plan.classify(&digits, |_| false) {
        Ok(Dialled::E164(n)) => n.as_str().to_owned(),
        _ => digits,
    }
}

struct Uac<'a> {
    ctx: &'a Ctx,
    call_id: String,
    from: String,
    to: String,
    branch: String,
    invite: Vec<u8>,
    to_tag: Option<String>,
    remote_target: String,
    cseq: u32,
}

impl Uac<'_> {
    fn request(&self, method: &str, uri: &str, cseq: u32, branch: &str, extra: &str) -> Vec<u8> {
        let to = match &self.to_tag {
            Some(t) => format!("{};tag={t}", self.to),
            None => self.to.clone(),
        };
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n",
            local = self.ctx.local,
            from = self.from,
            cid = self.call_id,
        )
        .into_bytes()
    }
}

async fn incoming_call(
    ctx: &Ctx,
    incoming: IncomingPstnCall,
    call_id: &str,
    mut rx: mpsc::UnboundedReceiver<(Message, SocketAddr)>,
) {
    let IncomingPstnCall { info, call } = incoming;
    let mut call = Some(call);
    let server = ctx.settings.server;
    let extensions = ctx.pool.incoming_extensions(&info.line).to_vec();
    let Some(ext) = extensions.first() else {
        tracing::warn!(line = %info.line, "line agent: incoming call but no `incoming` extensions; refused");
        if let Some(c) = call.take() {
            let _ = c.hangup().await;
        }
        return;
    };
    let caller = info
        .number
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(|n| caller_e164(&ctx.settings.plan, n, info.toa));
    let domain = &ctx.settings.domain;
    // The caller ID name is outside data: only printable characters that need no quoting.
    let name: Option<String> = info
        .name
        .as_deref()
        .map(|n| {
            n.chars()
                .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
                .take(64)
                .collect::<String>()
        })
        .filter(|n| !n.trim().is_empty());
    let from = match &caller {
        Some(c) => format!(
            "\"{}\" <sip:{c}@{domain}>;tag={}",
            name.as_deref().unwrap_or(c),
            random_token()
        ),
        None => format!(
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={}",
            random_token()
        ),
    };
    tracing::info!(line = %info.line, caller = ?caller, extension = %ext, "line agent: incoming call");
    let rtp = match UdpSocket::bind("127.0.0.1:0").await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("line agent: RTP socket: {e}");
            return;
        }
    };
    let rtp_addr = rtp.local_addr().unwrap_or(ctx.local);
    let mut rtp = Some(rtp);
    let offer = sdp_body(rtp_addr, &[(0, "PCMU"), (8, "PCMA")], Some(101));
    let uri = format!("sip:{ext}@{server}");
    let mut uac = Uac {
        ctx,
        call_id: call_id.to_owned(),
        from,
        to: format!("<sip:{ext}@{domain}>"),
        branch: format!("z9hG4bK{}", random_token()),
        invite: Vec::new(),
        to_tag: None,
        remote_target: uri.clone(),
        cseq: 1,
    };
    let pai = caller
        .as_ref()
        .map(|c| format!("P-Asserted-Identity: <sip:{c}@{domain}>\r\n"))
        .unwrap_or_default();
    let invite = format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:{line}@{local}>\r\n{pai}Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{offer}",
        local = ctx.local,
        branch = uac.branch,
        from = uac.from,
        to = uac.to,
        cid = call_id,
        line = info.line,
        len = offer.len(),
    );
    uac.invite = invite.into_bytes();
    ctx.send(&uac.invite, server).await;
    let mut retrans = Some(Retrans::new(uac.invite.clone(), server));
    let mut provisional = false;
    let mut confirmed = false;
    let mut cancelled = false;
    let mut bye_sent = false;
    let mut gave_up: Option<Instant> = None;
    loop {
        let give_up = async {
            match gave_up {
                Some(t) => sleep_until(t + TIMER_B).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = give_up => return,
            ev = wait_event(&mut call) => {
                let ended = match ev {
                    Some(CallProgress::Ended(cause)) => {
                        tracing::info!(line = %info.line, q850 = cause.q850, reason = ?cause.reason, "line agent: PSTN side ended");
                        Some(reason_header(&cause))
                    }
                    None => Some(String::new()),
                    Some(_) => None,
                };
                if let Some(reason) = ended {
                    call = None;
                    let extra = if reason.is_empty() { String::new() } else { format!("Reason: {reason}\r\n") };
                    if confirmed {
                        uac.cseq += 1;
                        let bye = uac.request("BYE", &uac.remote_target, uac.cseq, &format!("z9hG4bK{}", random_token()), &extra);
                        ctx.send(&bye, server).await;
                        retrans = Some(Retrans::new(bye, server));
                        bye_sent = true;
                    } else {
                        cancelled = true;
                        gave_up = Some(Instant::now());
                        if provisional {
                            let cancel = uac.request("CANCEL", &uri, 1, &uac.branch, &extra);
                            ctx.send(&cancel, server).await;
                            retrans = Some(Retrans::new(cancel, server));
                        } else {
                            // RFC 3261 §9.1: CANCEL only after a provisional response.
                            retrans = None;
                        }
                    }
                }
            }
            msg = rx.recv() => {
                let Some((msg, from)) = msg else { return };
                match msg {
                    Message::Response(r) => {
                        let Some(cseq) = r.headers.cseq().cloned() else { continue };
                        match cseq.method {
                            Method::Invite if r.status < 200 && !provisional => {
                                provisional = true;
                                if cancelled {
                                    let cancel = uac.request("CANCEL", &uri, 1, &uac.branch, "");
                                    ctx.send(&cancel, server).await;
                                    retrans = Some(Retrans::new(cancel, server));
                                } else {
                                    retrans = None;
                                }
                            }
                            Method::Invite if r.status < 200 => {}
                            Method::Invite if r.status < 300 => {
                                if uac.to_tag.is_none() {
                                    uac.to_tag = r.headers.to().and_then(|t| t.tag()).map(str::to_owned);
                                    if let Some(c) = r.headers.contacts().find_map(|c| c.addr()) {
                                        uac.remote_target = c.uri.to_string();
                                    }
                                }
                                let ack = uac.request("ACK", &uac.remote_target, 1, &format!("z9hG4bK{}", random_token()), "");
                                ctx.send(&ack, from).await;
                                if confirmed || cancelled || bye_sent {
                                    if cancelled && !confirmed {
                                        // Answered as we cancelled: end it.
                                        confirmed = true;
                                        uac.cseq += 1;
                                        let bye = uac.request("BYE", &uac.remote_target, uac.cseq, &format!("z9hG4bK{}", random_token()), "");
                                        ctx.send(&bye, server).await;
                                        retrans = Some(Retrans::new(bye, server));
                                        bye_sent = true;
                                    }
                                    continue;
                                }
                                confirmed = true;
                                retrans = None;
                                let answer = std::str::from_utf8(&r.body).ok().and_then(|t| SessionDescription::parse(t).ok());
                                let chosen = answer.as_ref().and_then(choose_codec);
                                let (codec, remote) = chosen.unwrap_or((RtpCodec::PCMU, None));
                                if let (Some(c), Some(sock)) = (call.as_ref(), rtp.take()) {
                                    if let Err(e) = c.attach_audio(RtpAttach { socket: sock, remote, codec }).await {
                                        tracing::warn!("line agent: attaching RTP: {e}");
                                    }
                                    if let Err(e) = c.answer().await {
                                        tracing::warn!(line = %info.line, "line agent: answering the line: {e}");
                                    }
                                }
                                tracing::info!(line = %info.line, "line agent: incoming call answered");
                            }
                            Method::Invite => {
                                // Refused (busy, nobody answered, cancelled): ACK on the same branch.
                                let to = r.headers.to().map(|t| t.to_string()).unwrap_or_else(|| uac.to.clone());
                                let ack = format!(
                                    "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {f}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                                    local = ctx.local,
                                    branch = uac.branch,
                                    f = uac.from,
                                    cid = uac.call_id,
                                );
                                ctx.send(ack.as_bytes(), from).await;
                                if let Some(c) = call.take() {
                                    let _ = c.hangup().await;
                                }
                                tracing::info!(line = %info.line, status = r.status, "line agent: incoming call not answered");
                                return;
                            }
                            Method::Bye if r.status >= 200 => return,
                            Method::Cancel => {
                                retrans = None;
                            }
                            _ => {}
                        }
                    }
                    Message::Request(req) => match req.method {
                        Method::Bye => {
                            let resp = Response::to_request(&req, 200, "OK", None);
                            ctx.send(&resp.encode(), from).await;
                            if let Some(c) = call.take() {
                                let _ = c.hangup().await;
                            }
                            tracing::info!(line = %info.line, "line agent: extension hung up");
                            return;
                        }
                        Method::Ack => {}
                        Method::Invite => {
                            let mut resp = Response::to_request(&req, 200, "OK", None);
                            resp.headers.set_other("Contact", format!("<sip:{}@{}>", info.line, ctx.local));
                            resp.headers.set_other("Content-Type", "application/sdp");
                            resp.body = Bytes::from(offer.clone());
                            ctx.send(&resp.encode(), from).await;
                        }
                        _ => {
                            let resp = Response::to_request(&req, 200, "OK", None);
                            ctx.send(&resp.encode(), from).await;
                        }
                    },
                }
            }
            () = wait_retrans(&retrans) => {
                if let Some(r) = retrans.as_mut() {
                    if Instant::now() >= r.until {
                        if bye_sent || cancelled {
                            return;
                        }
                        tracing::warn!(line = %info.line, "line agent: the SIP core did not answer the incoming call");
                        if let Some(c) = call.take() {
                            let _ = c.hangup().await;
                        }
                        return;
                    }
                    ctx.send(&r.bytes, r.to).await;
                    r.backoff();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_become_e164() {
        let plan = NumberingPlan::from_config(&crate::config::NumberingConfig::default());
        assert_eq!(caller_e164(&plan, "4917012345", Some(145)), "+4917012345");
        assert_eq!(caller_e164(&plan, "+4917012345", Some(145)), "+4917012345");
        assert_eq!(
            caller_e164(&plan, "017012345678", Some(129)),
            "+4917012345678"
        );
    }

    #[test]
    fn an_offer_gives_a_codec_and_address() {
        let sdp = SessionDescription::parse(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        )
        .expect("sdp");
        let (codec, remote) = choose_codec(&sdp).expect("codec");
        assert_eq!(
            (codec.law, codec.pt, codec.dtmf_pt),
            (Law::Alaw, 8, Some(101))
        );
        assert_eq!(remote, Some("127.0.0.1:4000".parse().expect("addr")));
    }
}
