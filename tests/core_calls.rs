//! Call control driven through the sans-IO SIP core, with no sockets and no sleeping: many
//! calls (answered and hung up, cancelled, unanswered) and then time advanced past every
//! timer. Afterwards nothing may be left: no call, no transaction, no call timer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pasarela::b2bua::CallSettings;
use pasarela::callctl::{Output, SipCore};
use pasarela::sip::auth::{self, Algorithm};
use pasarela::sip::message::{Message, Request};
use pasarela::sip::parse::{parse_message, Framing, Limits};
use pasarela::sip::peer::Peer;
use pasarela::sip::transaction::Timers;

const CALLER: &str = "127.0.0.1:5062";
const CALLEE: &str = "127.0.0.1:5064";

struct Harness {
    core: SipCore,
    now: Instant,
    unix: u64,
}

impl Harness {
    fn new(no_answer: Duration) -> Harness {
        let settings = core_vt::settings(no_answer, false);
        Harness {
            core: SipCore::new(settings, vec![ext("100"), ext("101")], [7; 32], None),
            now: Instant::now(),
            unix: 1_800_000_000,
        }
    }

    /// Feeds a message; returns everything the core sent, parsed, with its destination.
    fn feed(&mut self, text: &str, from: &str) -> Vec<(Message, SocketAddr)> {
        let msg = parse_message(
            Bytes::from(text.replace('\n', "\r\n")),
            Framing::Datagram,
            &Limits::default(),
        )
        .expect("test message parses");
        self.core
            .handle_message(self.now, self.unix, msg, peer(from));
        self.drain()
    }

    fn drain(&mut self) -> Vec<(Message, SocketAddr)> {
        let mut out = Vec::new();
        // The core's one drain: only what it sends matters here.
        while let Some(o) = self.core.poll_output(self.now) {
            if let Output::Transmit(t) = o {
                let m = parse_message(t.data, Framing::Datagram, &Limits::default())
                    .expect("core output parses");
                out.push((m, t.peer.remote));
            }
        }
        out
    }

    fn advance(&mut self, d: Duration) -> Vec<(Message, SocketAddr)> {
        let end = self.now + d;
        let mut out = Vec::new();
        while let Some(t) = self.core.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now, self.unix);
            out.extend(self.drain());
        }
        self.now = end;
        out
    }
}

fn requests<'a>(out: &'a [(Message, SocketAddr)], method: &str) -> Vec<&'a Request> {
    out.iter()
        .filter_map(|(m, _)| match m {
            Message::Request(r) if r.method.as_str() == method => Some(r),
            _ => None,
        })
        .collect()
}

fn register_callee(h: &mut Harness) {
    let reg = |auth: &str, cseq: u32| {
        format!(
            "REGISTER sip:office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLEE};branch=z9hG4bKreg{cseq}\nFrom: <sip:101@office.test>;tag=r\nTo: <sip:101@office.test>\nCall-ID: reg\nCSeq: {cseq} REGISTER\nContact: <sip:101@{CALLEE}>\n{auth}Content-Length: 0\n\n"
        )
    };
    let out = h.feed(&reg("", 1), CALLEE);
    let challenge = responses(&out)[0].clone();
    let auth = authorization(&challenge, "101", "REGISTER", "sip:office.test");
    let out = h.feed(&reg(&format!("Authorization: {auth}\n"), 2), CALLEE);
    assert_eq!(responses(&out)[0].status, 200);
}

const SDP: &str = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n";

fn invite(call: u32, cseq: u32, auth: &str) -> String {
    let body = SDP.replace('\n', "\r\n");
    format!(
        "INVITE sip:101@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv{call}x{cseq}\nFrom: <sip:100@office.test>;tag=a{call}\nTo: <sip:101@office.test>\nCall-ID: call{call}\nCSeq: {cseq} INVITE\nContact: <sip:100@{CALLER}>\nMax-Forwards: 70\n{auth}Content-Type: application/sdp\nContent-Length: {}\n\n{SDP}",
        body.len()
    )
}

/// Starts call `n` from 100 to 101; returns the INVITE pasarela sent to the callee.
fn start_call(h: &mut Harness, n: u32) -> Request {
    let out = h.feed(&invite(n, 1, ""), CALLER);
    let challenge = response(&out, 401, "401");
    let ch_tag = to_tag(&challenge);
    h.feed(
        &format!("ACK sip:101@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv{n}x1\nFrom: <sip:100@office.test>;tag=a{n}\nTo: <sip:101@office.test>;tag={ch_tag}\nCall-ID: call{n}\nCSeq: 1 ACK\nContent-Length: 0\n\n"),
        CALLER,
    );
    let auth = authorization(&challenge, "100", "INVITE", "sip:101@office.test");
    let out = h.feed(&invite(n, 2, &format!("Authorization: {auth}\n")), CALLER);
    let fwd = requests(&out, "INVITE");
    assert_eq!(fwd.len(), 1, "one fork to the callee's one contact");
    fwd[0].clone()
}

/// The callee's response to pasarela's INVITE.
fn callee_response(inv: &Request, status: u16, tag: &str, sdp: bool) -> String {
    let h = &inv.headers;
    let via = h.via().expect("via").to_string();
    let from = h.from().expect("from").to_string();
    let to = h.to().expect("to").to_string();
    let body = if sdp {
        SDP.replace("40000", "42000").replace('\n', "\r\n")
    } else {
        String::new()
    };
    let ct = if sdp {
        "Content-Type: application/sdp\n"
    } else {
        ""
    };
    format!(
        "SIP/2.0 {status} X\nVia: {via}\nFrom: {from}\nTo: {to};tag={tag}\nCall-ID: {}\nCSeq: {}\nContact: <sip:101@{CALLEE}>\n{ct}Content-Length: {}\n\n{}",
        h.call_id().expect("call-id"),
        h.cseq().expect("cseq"),
        body.len(),
        body.replace("\r\n", "\n")
    )
}

#[test]
fn calls_leave_nothing_behind() {
    let mut h = Harness::new(Duration::from_secs(10));
    register_callee(&mut h);
    for n in 0..300u32 {
        let inv = start_call(&mut h, n);
        // The per-caller count (the concurrent-call limit) follows calls in and out.
        assert_eq!(h.core.calls().count_by_caller("100"), 1, "call {n} counted");
        match n % 3 {
            // Answered, then the caller hangs up.
            0 => {
                h.feed(&callee_response(&inv, 180, &format!("b{n}"), false), CALLEE);
                let out = h.feed(&callee_response(&inv, 200, &format!("b{n}"), true), CALLEE);
                assert_eq!(
                    requests(&out, "ACK").len(),
                    1,
                    "pasarela ACKs the callee's 200"
                );
                let ok = response(&out, 200, "200 to the caller");
                assert!(String::from_utf8_lossy(&ok.body).contains("c=IN IP4 127.0.0.1"));
                let tag = to_tag(&ok);
                let dialog = |method: &str, cseq: u32| {
                    format!("{method} sip:101@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK{method}{n}\nFrom: <sip:100@office.test>;tag=a{n}\nTo: <sip:101@office.test>;tag={tag}\nCall-ID: call{n}\nCSeq: {cseq} {method}\nContent-Length: 0\n\n")
                };
                h.feed(&dialog("ACK", 2), CALLER);
                let out = h.feed(&dialog("BYE", 3), CALLER);
                let bye = requests(&out, "BYE");
                assert_eq!(bye.len(), 1, "BYE mapped to the callee");
                assert_eq!(
                    responses(&out).iter().filter(|r| r.status == 200).count(),
                    1,
                    "200 for the caller's BYE"
                );
                let b = bye[0];
                let bye_ok = format!(
                    "SIP/2.0 200 OK\nVia: {}\nFrom: {}\nTo: {}\nCall-ID: {}\nCSeq: {}\nContent-Length: 0\n\n",
                    b.headers.via().expect("via"),
                    b.headers.from().expect("from"),
                    b.headers.to().expect("to"),
                    b.headers.call_id().expect("cid"),
                    b.headers.cseq().expect("cseq")
                );
                h.feed(&bye_ok, CALLEE);
            }
            // Busy.
            1 => {
                let out = h.feed(&callee_response(&inv, 486, &format!("b{n}"), false), CALLEE);
                assert!(
                    responses(&out).iter().any(|r| r.status == 486),
                    "486 passed to the caller"
                );
            }
            // Rings until the no-answer timer: 480 to the caller, CANCEL to the callee.
            _ => {
                h.feed(&callee_response(&inv, 180, &format!("b{n}"), false), CALLEE);
                let out = h.advance(Duration::from_secs(11));
                assert!(
                    responses(&out).iter().any(|r| r.status == 480),
                    "480 after no_answer"
                );
                let mut cancel = requests(&out, "CANCEL");
                // Retransmissions (Timer E) of the same CANCEL carry the same branch.
                cancel
                    .dedup_by_key(|c| c.headers.via().and_then(|v| v.branch()).map(str::to_owned));
                assert_eq!(cancel.len(), 1, "the ringing callee is cancelled");
                let c = cancel[0];
                let ok = format!(
                    "SIP/2.0 200 OK\nVia: {}\nFrom: {}\nTo: {}\nCall-ID: {}\nCSeq: {}\nContent-Length: 0\n\n",
                    c.headers.via().expect("via"),
                    c.headers.from().expect("from"),
                    c.headers.to().expect("to"),
                    c.headers.call_id().expect("cid"),
                    c.headers.cseq().expect("cseq")
                );
                h.feed(&ok, CALLEE);
                h.feed(&callee_response(&inv, 487, &format!("b{n}"), false), CALLEE);
            }
        }
    }
    // Every timer (Timer B/D/H/J/K/M, 2xx retransmission, no-answer) has run out after 64·T1.
    h.advance(Duration::from_secs(70));
    assert_eq!(h.core.calls().len(), 0, "calls left over");
    assert_eq!(
        h.core.calls().pending_transactions(),
        0,
        "call transactions left over"
    );
    assert_eq!(
        h.core.calls().index_entries(),
        0,
        "call lookup entries left over"
    );
    assert_eq!(
        h.core.transaction_counts(),
        (0, 0),
        "SIP transactions left over"
    );
    assert!(
        h.core.calls().timer_count() < 1100,
        "call timers pile up: {}",
        h.core.calls().timer_count()
    );
    // Timers of ended calls are deleted lazily, but the housekeeping drops every one left
    // (after a flood they kept their heap's room and entries until the next call's prune).
    assert!(h.core.calls().timer_count() > 0, "stale timers to drop");
    h.core.housekeeping_at(Some(h.now), h.unix);
    assert_eq!(
        h.core.calls().timer_count(),
        0,
        "call timers left after the housekeeping"
    );
}

// ------------------------------------------------------------------------------------------
// Routes with serial failover, driven on `Calls` and the transaction layer directly (the
// core only rings registered extensions).

use pasarela::b2bua::{Attempt, CallSummary, Caller, Calls, NewCall, Stage, Target, TrunkAuth};
use pasarela::sip::transaction::{Event, ServerKey, TransactionLayer};
use pasarela::sip::uri::Uri;

mod core_vt;
use core_vt::{authorization, ext, ok_for, peer, response, responses, to_tag, SERVER};

const DEST_A: &str = "127.0.0.2:5060";
const DEST_B: &str = "127.0.0.3:5060";
const TRUNK: &str = "127.0.0.9:5060";

/// `Calls` with the event loop of the core, without the registrar and the digest gate.
struct Direct {
    layer: TransactionLayer,
    calls: Calls,
    now: Instant,
    /// New INVITEs from the caller, waiting for [`Direct::start`].
    incoming: Vec<(ServerKey, Request, Peer)>,
}

impl Direct {
    fn new() -> Direct {
        let settings = CallSettings {
            domain: "office.test".into(),
            server_name: "pasarela-test".into(),
            no_answer: Duration::from_secs(60),
            max_duration: Duration::from_secs(600),
            media_ip: "127.0.0.1".parse().expect("ip"),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            failover_after: CallSettings::DEFAULT_FAILOVER_AFTER,
            srtp: Default::default(),
        };
        Direct {
            layer: TransactionLayer::new(Timers::default()),
            calls: Calls::new(settings, None, 99),
            now: Instant::now(),
            incoming: Vec::new(),
        }
    }

    fn feed(&mut self, text: &str, from: &str) -> Vec<(Message, SocketAddr)> {
        let msg = parse_message(
            Bytes::from(text.replace('\n', "\r\n")),
            Framing::Datagram,
            &Limits::default(),
        )
        .expect("test message parses");
        match msg {
            Message::Request(r) => self.layer.handle_request(self.now, r, peer(from)),
            Message::Response(r) => self.layer.handle_response(self.now, r, peer(from)),
        }
        self.process();
        self.drain()
    }

    fn process(&mut self) {
        let now = self.now;
        while let Some(event) = self.layer.poll_event() {
            let layer = &mut self.layer;
            match event {
                Event::Request { key, request, peer } => {
                    if self.calls.owns(&request) {
                        self.calls.in_dialog(now, layer, key, request, peer);
                    } else {
                        self.incoming.push((key, request, peer));
                    }
                }
                Event::Cancel { invite, .. } => {
                    assert!(self.calls.cancel(now, layer, invite), "CANCEL of a call");
                }
                Event::Stray { request, .. } => self.calls.ack(now, layer, request),
                Event::StrayResponse { response, peer } => {
                    self.calls.stray_response(layer, response, peer)
                }
                Event::Response { key, response } => self.calls.response(now, layer, key, response),
                Event::Timeout { key } => self.calls.timeout(now, layer, key),
                Event::AckTimeout { .. } => {}
            }
        }
    }

    fn drain(&mut self) -> Vec<(Message, SocketAddr)> {
        let mut out = Vec::new();
        while let Some(t) = self.layer.poll_transmit() {
            let m = parse_message(t.data, Framing::Datagram, &Limits::default())
                .expect("output parses");
            out.push((m, t.peer.remote));
        }
        out
    }

    fn advance(&mut self, d: Duration) -> Vec<(Message, SocketAddr)> {
        let end = self.now + d;
        let mut out = Vec::new();
        loop {
            let next = match (self.layer.poll_timeout(), self.calls.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            self.layer.handle_timeout(self.now);
            self.calls.handle_timeout(self.now, &mut self.layer);
            self.process();
            out.extend(self.drain());
        }
        self.now = end;
        out
    }

    /// The caller (100) dials 101 and the call starts on this route; returns what was sent.
    fn start(&mut self, targets: Vec<Target>, fallback: Vec<Stage>) -> Vec<(Message, SocketAddr)> {
        self.start_with("", targets, fallback)
    }

    /// [`Direct::start`] with `extra` header lines in the caller's INVITE.
    fn start_with(
        &mut self,
        extra: &str,
        targets: Vec<Target>,
        fallback: Vec<Stage>,
    ) -> Vec<(Message, SocketAddr)> {
        self.feed(&invite(1, 1, extra), CALLER);
        let (key, invite, peer) = self.incoming.pop().expect("the caller's INVITE");
        let new = NewCall {
            key,
            invite,
            peer,
            caller: Caller {
                number: "100".into(),
                name: None,
                origin: None,
                srtp: Default::default(),
            },
            targets,
            fallback,
            label: "direct".into(),
            route: None,
            ring_for: None,
        };
        self.calls.start(self.now, &mut self.layer, new);
        self.drain()
    }

    /// The caller's in-dialog request after a 200 (`tag`: our To tag).
    fn caller_request(&mut self, method: &str, cseq: u32, tag: &str) -> Vec<(Message, SocketAddr)> {
        self.feed(
            &format!("{method} sip:101@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK{method}1\nFrom: <sip:100@office.test>;tag=a1\nTo: <sip:101@office.test>;tag={tag}\nCall-ID: call1\nCSeq: {cseq} {method}\nContent-Length: 0\n\n"),
            CALLER,
        )
    }

    /// The caller CANCELs its INVITE.
    fn caller_cancel(&mut self) -> Vec<(Message, SocketAddr)> {
        self.feed(
            &format!("CANCEL sip:101@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv1x1\nFrom: <sip:100@office.test>;tag=a1\nTo: <sip:101@office.test>\nCall-ID: call1\nCSeq: 1 CANCEL\nContent-Length: 0\n\n"),
            CALLER,
        )
    }

    /// After the call: every timer run out, nothing may be left. Returns the call's summary.
    fn finish(&mut self) -> CallSummary {
        self.advance(Duration::from_secs(700));
        assert_eq!(self.calls.len(), 0, "calls left over");
        assert_eq!(
            self.calls.pending_transactions(),
            0,
            "call transactions left over"
        );
        assert_eq!(
            self.calls.index_entries(),
            0,
            "call lookup entries left over"
        );
        assert_eq!(self.layer.counts(), (0, 0), "SIP transactions left over");
        assert_eq!(self.calls.timer_count(), 0, "call timers left over");
        let mut done = self.calls.take_finished();
        assert_eq!(done.len(), 1, "one call summary");
        done.remove(0)
    }
}

fn target(uri: &str, remote: &str) -> Target {
    Target {
        uri: Uri::parse(uri).expect("uri"),
        peer: peer(remote),
        to: None,
        auth: None,
        from_user: None,
        srtp: Default::default(),
        presentation: None,
        line: None,
    }
}

fn stage(label: &str, targets: Vec<Target>) -> Stage {
    Stage {
        targets,
        label: label.into(),
        ring_for: None,
    }
}

/// The INVITEs sent to `dest`.
fn invites_to(out: &[(Message, SocketAddr)], dest: &str) -> Vec<Request> {
    let dest: SocketAddr = dest.parse().expect("addr");
    out.iter()
        .filter_map(|(m, to)| match m {
            Message::Request(r) if r.method.as_str() == "INVITE" && *to == dest => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn sent_to<'a>(out: &'a [(Message, SocketAddr)], method: &str, dest: &str) -> Vec<&'a Request> {
    let dest: SocketAddr = dest.parse().expect("addr");
    out.iter()
        .filter_map(|(m, to)| match m {
            Message::Request(r) if r.method.as_str() == method && *to == dest => Some(r),
            _ => None,
        })
        .collect()
}

/// Final (and provisional) statuses sent to the caller.
fn caller_statuses(out: &[(Message, SocketAddr)]) -> Vec<u16> {
    let caller: SocketAddr = CALLER.parse().expect("addr");
    out.iter()
        .filter_map(|(m, to)| match m {
            Message::Response(r) if *to == caller => Some(r.status),
            _ => None,
        })
        .collect()
}

/// A destination's response to `inv` with extra header lines.
fn reply(inv: &Request, status: u16, tag: &str, sdp: bool, extra: &str) -> String {
    let text = callee_response(inv, status, tag, sdp);
    text.replacen("Contact:", &format!("{extra}Contact:"), 1)
}

/// The caller is answered 200 by the fork answering `inv`; the caller ACKs and hangs up.
fn answer_and_hang_up(d: &mut Direct, inv: &Request, from: &str) {
    let out = d.feed(&reply(inv, 200, "b1", true, ""), from);
    assert_eq!(sent_to(&out, "ACK", from).len(), 1, "the 200 is ACKed");
    let ok = response(&out, 200, "200 to the caller");
    let tag = to_tag(&ok);
    d.caller_request("ACK", 1, &tag);
    let out = d.caller_request("BYE", 2, &tag);
    let bye = sent_to(&out, "BYE", from);
    assert_eq!(bye.len(), 1, "the BYE reaches the answering fork");
    let bye_ok = ok_for(bye[0]);
    d.feed(&bye_ok, from);
}

/// An attempt as recorded: a failure keeps the far end's reason phrase when it is not the
/// standard one (these tests' far ends all say "X").
fn attempt(stage: usize, label: &str, uri: &str, status: u16) -> Attempt {
    Attempt {
        stage,
        label: label.into(),
        uri: uri.into(),
        status,
        reason: (status >= 300).then(|| "X".to_owned()),
    }
}

#[test]
fn failover_after_503_to_the_next_stage() {
    let mut d = Direct::new();
    let out = d.start(
        vec![target("sip:+4930111@a.example", DEST_A)],
        vec![stage(
            "trunk",
            vec![target("sip:+4930111@b.example", DEST_B)],
        )],
    );
    let a = invites_to(&out, DEST_A);
    assert_eq!(a.len(), 1, "stage 0 rings first");
    assert!(invites_to(&out, DEST_B).is_empty(), "stage 1 waits");
    d.feed(&reply(&a[0], 100, "x", false, ""), DEST_A);
    let out = d.feed(&reply(&a[0], 503, "x", false, ""), DEST_A);
    assert_eq!(sent_to(&out, "ACK", DEST_A).len(), 1, "the 503 is ACKed");
    assert!(
        caller_statuses(&out).is_empty(),
        "the caller hears nothing of the 503"
    );
    let b = invites_to(&out, DEST_B);
    assert_eq!(b.len(), 1, "stage 1 rings after stage 0 failed");
    assert_ne!(
        b[0].headers.call_id(),
        a[0].headers.call_id(),
        "a new B dialog"
    );
    let out = d.feed(&reply(&b[0], 180, "b1", false, ""), DEST_B);
    assert_eq!(caller_statuses(&out), vec![180]);
    answer_and_hang_up(&mut d, &b[0], DEST_B);
    let s = d.finish();
    assert_eq!(s.status, 200);
    assert_eq!(
        s.attempts,
        vec![
            attempt(0, "direct", "sip:+4930111@a.example", 503),
            attempt(1, "trunk", "sip:+4930111@b.example", 200),
        ]
    );
    assert_eq!(s.answered_by, Some((1, "sip:+4930111@b.example".into())));
}

#[test]
fn silent_stage_is_abandoned_and_its_late_answer_hung_up() {
    let mut d = Direct::new();
    let out = d.start(
        vec![target("sip:+4930111@a.example", DEST_A)],
        vec![stage(
            "trunk",
            vec![target("sip:+4930111@b.example", DEST_B)],
        )],
    );
    let a = invites_to(&out, DEST_A);
    assert_eq!(a.len(), 1);
    // Retransmissions to A, nothing else, until failover_after.
    let out = d.advance(Duration::from_millis(3900));
    assert!(
        invites_to(&out, DEST_B).is_empty(),
        "too early to fail over"
    );
    let out = d.advance(Duration::from_millis(200));
    let b = invites_to(&out, DEST_B);
    assert_eq!(b.len(), 1, "stage 1 rings after failover_after of silence");
    assert!(caller_statuses(&out).is_empty());
    d.feed(&reply(&b[0], 180, "b1", false, ""), DEST_B);
    // A wakes up and answers: acknowledged and hung up, never passed to the caller.
    let out = d.feed(&reply(&a[0], 200, "late", true, ""), DEST_A);
    assert_eq!(sent_to(&out, "ACK", DEST_A).len(), 1, "late 200 ACKed");
    let bye = sent_to(&out, "BYE", DEST_A);
    assert_eq!(bye.len(), 1, "late 200 hung up");
    assert!(caller_statuses(&out).is_empty(), "the caller still rings");
    let bye_ok = ok_for(bye[0]);
    d.feed(&bye_ok, DEST_A);
    answer_and_hang_up(&mut d, &b[0], DEST_B);
    let s = d.finish();
    assert_eq!(
        s.attempts,
        vec![
            attempt(0, "direct", "sip:+4930111@a.example", 0),
            attempt(1, "trunk", "sip:+4930111@b.example", 200),
        ]
    );
    assert_eq!(s.answered_by, Some((1, "sip:+4930111@b.example".into())));
}

#[test]
fn single_stage_silence_keeps_timer_b() {
    let mut d = Direct::new();
    d.start(vec![target("sip:+4930111@a.example", DEST_A)], vec![]);
    let out = d.advance(Duration::from_secs(10));
    assert!(
        caller_statuses(&out).is_empty(),
        "no failover timer: still trying"
    );
    let out = d.advance(Duration::from_secs(30));
    let statuses = caller_statuses(&out);
    assert!(
        !statuses.is_empty() && statuses.iter().all(|s| *s == 480),
        "Timer B: 408 → 480 (retransmitted without ACK): {statuses:?}"
    );
    let s = d.finish();
    assert_eq!(
        s.attempts,
        vec![Attempt {
            reason: None,
            ..attempt(0, "direct", "sip:+4930111@a.example", 408)
        }],
        "a local timeout has no far-end reason"
    );
}

#[test]
fn busy_does_not_fail_over() {
    let mut d = Direct::new();
    let out = d.start(
        vec![
            target("sip:+4930111@a.example", DEST_A),
            target("sip:+4930111@b.example", DEST_B),
        ],
        vec![stage(
            "trunk",
            vec![target("sip:+4930111@t.example", TRUNK)],
        )],
    );
    let (a, b) = (invites_to(&out, DEST_A), invites_to(&out, DEST_B));
    assert_eq!((a.len(), b.len()), (1, 1), "stage 0 forks in parallel");
    let out = d.feed(&reply(&b[0], 503, "x", false, ""), DEST_B);
    assert!(caller_statuses(&out).is_empty() && invites_to(&out, TRUNK).is_empty());
    let out = d.feed(&reply(&a[0], 486, "x", false, ""), DEST_A);
    assert_eq!(caller_statuses(&out), vec![486], "busy goes to the caller");
    assert!(invites_to(&out, TRUNK).is_empty(), "no failover after busy");
    let out = d.advance(Duration::from_secs(10));
    assert!(invites_to(&out, TRUNK).is_empty(), "not later either");
    let s = d.finish();
    assert_eq!(s.status, 486);
    assert_eq!(s.answered_by, None);
    assert_eq!(s.attempts.len(), 2);
}

#[test]
fn caller_cancel_during_the_second_stage() {
    let mut d = Direct::new();
    let out = d.start(
        vec![target("sip:+4930111@a.example", DEST_A)],
        vec![stage(
            "trunk",
            vec![
                target("sip:+4930111@b.example", DEST_B),
                target("sip:+4930111@t.example", TRUNK),
            ],
        )],
    );
    let a = invites_to(&out, DEST_A);
    let out = d.feed(&reply(&a[0], 404, "x", false, ""), DEST_A);
    let (b, t) = (invites_to(&out, DEST_B), invites_to(&out, TRUNK));
    assert_eq!((b.len(), t.len()), (1, 1), "stage 1 forks in parallel");
    d.feed(&reply(&b[0], 180, "b1", false, ""), DEST_B);
    d.feed(&reply(&t[0], 183, "t1", false, ""), TRUNK);
    let out = d.caller_cancel();
    assert!(caller_statuses(&out).contains(&487), "487 to the caller");
    for (inv, dest) in [(&b[0], DEST_B), (&t[0], TRUNK)] {
        let cancel = sent_to(&out, "CANCEL", dest);
        assert_eq!(cancel.len(), 1, "stage 1 fork at {dest} cancelled");
        assert_eq!(
            cancel[0].headers.via().and_then(|v| v.branch()),
            inv.headers.via().and_then(|v| v.branch())
        );
        let ok = ok_for(cancel[0]);
        d.feed(&ok, dest);
        d.feed(&reply(inv, 487, "z", false, ""), dest);
    }
    assert!(
        sent_to(&out, "CANCEL", DEST_A).is_empty(),
        "stage 0 is over"
    );
    let s = d.finish();
    assert_eq!(s.status, 487);
    assert_eq!(
        s.attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![404, 0, 0]
    );
}

/// A trunk's challenge: (header line for the response, the nonce manager that checks it).
fn trunk_challenge(header: &str, alg: Algorithm) -> (String, pasarela::sip::auth::NonceManager) {
    let mut nonces = pasarela::sip::auth::NonceManager::new([3; 32], 300);
    let nonce = nonces.issue(1_800_000_000, 42);
    let value = auth::challenge("trunk.example", &nonce, alg, false);
    (format!("{header}: {value}\n"), nonces)
}

fn trunk() -> Target {
    Target {
        uri: Uri::parse("sip:+4930999@trunk.example").expect("uri"),
        peer: peer(TRUNK),
        to: Some(Uri::parse("sip:+4930999@trunk.example;user=phone").expect("uri")),
        auth: Some(TrunkAuth {
            username: "office1".into(),
            password: "trunk-secret".into(),
        }),
        from_user: Some("+4930123456".into()),
        srtp: Default::default(),
        presentation: None,
        line: None,
    }
}

#[test]
fn trunk_407_is_answered_with_proxy_authorization() {
    let mut d = Direct::new();
    let out = d.start(
        vec![target("sip:+4930999@a.example", DEST_A)],
        vec![stage("trunk", vec![trunk()])],
    );
    let a = invites_to(&out, DEST_A);
    let out = d.feed(&reply(&a[0], 503, "x", false, ""), DEST_A);
    let t = invites_to(&out, TRUNK);
    assert_eq!(t.len(), 1);
    assert_eq!(
        t[0].headers.to().map(|to| to.uri.to_string()),
        Some("sip:+4930999@trunk.example;user=phone".into()),
        "the route's To URI"
    );
    assert_eq!(
        t[0].headers
            .from()
            .and_then(|f| f.uri.as_sip().and_then(|u| u.user.clone())),
        Some("+4930123456".into()),
        "the trunk sees the caller's DID"
    );
    let (challenge, mut nonces) = trunk_challenge("Proxy-Authenticate", Algorithm::Sha256);
    let out = d.feed(&reply(&t[0], 407, "p", false, &challenge), TRUNK);
    assert_eq!(sent_to(&out, "ACK", TRUNK).len(), 1, "the 407 is ACKed");
    assert!(caller_statuses(&out).is_empty());
    let again = invites_to(&out, TRUNK);
    assert_eq!(again.len(), 1, "the INVITE is resent once");
    let (first, second) = (&t[0].headers, &again[0].headers);
    assert_eq!(second.call_id(), first.call_id(), "same Call-ID");
    assert_eq!(
        second.from().and_then(|f| f.tag()),
        first.from().and_then(|f| f.tag()),
        "same From tag"
    );
    assert_eq!(
        second.cseq().map(|c| c.seq),
        first.cseq().map(|c| c.seq + 1)
    );
    assert_ne!(
        second.via().and_then(|v| v.branch()),
        first.via().and_then(|v| v.branch()),
        "a new transaction"
    );
    let creds = auth::parse_credentials(
        second
            .get("Proxy-Authorization")
            .expect("Proxy-Authorization"),
    )
    .expect("credentials parse");
    assert_eq!(creds.username, "office1");
    assert_eq!(creds.uri, "sip:+4930999@trunk.example");
    assert!(
        auth::verify(&creds, "INVITE", "trunk-secret"),
        "the digest verifies"
    );
    assert_eq!(
        nonces.check(&creds.nonce, creds.nc, 1_800_000_001),
        auth::NonceStatus::Valid
    );
    answer_and_hang_up(&mut d, &again[0], TRUNK);
    let s = d.finish();
    assert_eq!(s.status, 200);
    assert_eq!(
        s.attempts,
        vec![
            attempt(0, "direct", "sip:+4930999@a.example", 503),
            attempt(1, "trunk", "sip:+4930999@trunk.example", 200),
        ]
    );
    assert_eq!(
        s.answered_by,
        Some((1, "sip:+4930999@trunk.example".into()))
    );
}

#[test]
fn second_challenge_is_a_failure() {
    let mut d = Direct::new();
    let out = d.start(vec![trunk()], vec![]);
    let t = invites_to(&out, TRUNK);
    let (challenge, _) = trunk_challenge("Proxy-Authenticate", Algorithm::Md5);
    let out = d.feed(&reply(&t[0], 407, "p", false, &challenge), TRUNK);
    let again = invites_to(&out, TRUNK);
    assert_eq!(again.len(), 1);
    let (challenge, _) = trunk_challenge("Proxy-Authenticate", Algorithm::Md5);
    let out = d.feed(&reply(&again[0], 407, "p", false, &challenge), TRUNK);
    assert!(invites_to(&out, TRUNK).is_empty(), "no third INVITE");
    assert_eq!(
        caller_statuses(&out),
        vec![403],
        "the trunk refused us: not a challenge for the caller"
    );
    let s = d.finish();
    assert_eq!(
        s.attempts,
        vec![attempt(0, "direct", "sip:+4930999@trunk.example", 407)]
    );
}

#[test]
fn cancel_reaches_the_authenticated_invite() {
    let mut d = Direct::new();
    let out = d.start(vec![trunk()], vec![]);
    let t = invites_to(&out, TRUNK);
    let (challenge, _) = trunk_challenge("WWW-Authenticate", Algorithm::Md5);
    let out = d.feed(&reply(&t[0], 401, "p", false, &challenge), TRUNK);
    let again = invites_to(&out, TRUNK);
    assert_eq!(again.len(), 1);
    let creds = auth::parse_credentials(
        again[0]
            .headers
            .get("Authorization")
            .expect("401 → Authorization"),
    )
    .expect("parses");
    assert!(auth::verify(&creds, "INVITE", "trunk-secret"));
    d.feed(&reply(&again[0], 180, "t1", false, ""), TRUNK);
    let out = d.caller_cancel();
    let cancel = sent_to(&out, "CANCEL", TRUNK);
    assert_eq!(cancel.len(), 1);
    assert_eq!(
        cancel[0].headers.via().and_then(|v| v.branch()),
        again[0].headers.via().and_then(|v| v.branch()),
        "the CANCEL matches the resent INVITE"
    );
    assert_eq!(
        cancel[0].headers.cseq().map(|c| c.seq),
        again[0].headers.cseq().map(|c| c.seq)
    );
    let ok = ok_for(cancel[0]);
    d.feed(&ok, TRUNK);
    d.feed(&reply(&again[0], 487, "t1", false, ""), TRUNK);
    let s = d.finish();
    assert_eq!(s.status, 487);
}

/// Towards a trunk with presentation options: From carries the trunk's `from_user` and
/// `from_domain`, the caller's DID travels in P-Asserted-Identity; a caller that withholds its
/// number (Privacy: id) reaches the trunk as Anonymous with Privacy: id, its DID still asserted.
#[test]
fn trunk_presentation_and_withheld_callers() {
    use pasarela::b2bua::Presentation;
    let with = |identity: &'static str| Target {
        presentation: Some(Presentation {
            from_user: Some("account7".into()),
            from_host: Some("sip.carrier.example".into()),
            identity_header: Some(identity),
        }),
        ..trunk()
    };
    let mut d = Direct::new();
    let out = d.start(vec![with("P-Asserted-Identity")], Vec::new());
    let t = invites_to(&out, TRUNK);
    assert_eq!(t.len(), 1);
    let from = t[0].headers.from().expect("From").uri.to_string();
    assert_eq!(from, "sip:account7@sip.carrier.example");
    assert_eq!(
        t[0].headers.get("P-Asserted-Identity"),
        Some("<sip:+4930123456@sip.carrier.example>")
    );
    assert!(t[0].headers.get("Privacy").is_none());

    let mut d = Direct::new();
    let out = d.start_with(
        "Privacy: id\n",
        vec![with("P-Preferred-Identity")],
        Vec::new(),
    );
    let t = invites_to(&out, TRUNK);
    let from = t[0].headers.from().expect("From");
    assert_eq!(from.uri.to_string(), "sip:anonymous@anonymous.invalid");
    assert_eq!(from.display.as_deref(), Some("\"Anonymous\""));
    assert_eq!(
        t[0].headers.get("P-Preferred-Identity"),
        Some("<sip:+4930123456@sip.carrier.example>")
    );
    assert!(t[0].headers.get("P-Asserted-Identity").is_none());
    assert_eq!(t[0].headers.get("Privacy"), Some("id"));

    // Without presentation options (extensions, ENUM targets) nothing is added.
    let mut d = Direct::new();
    let out = d.start_with("Privacy: id\n", vec![trunk()], Vec::new());
    let t = invites_to(&out, TRUNK);
    assert!(t[0].headers.get("Privacy").is_none());
    assert!(t[0].headers.get("P-Asserted-Identity").is_none());
}

/// A callee that redirects to itself, again and again: its own Contact is a loop (not rung
/// again), and redirects to its extension at this office are followed at most three times; the
/// caller then gets a final refusal and nothing is left behind.
#[test]
fn redirect_loops_end() {
    let mut h = Harness::new(Duration::from_secs(60));
    register_callee(&mut h);
    let mut inv = start_call(&mut h, 1);
    let mut invites = 1;
    let mut last = Vec::new();
    for round in 0..6 {
        let text = callee_response(&inv, 302, &format!("r{round}"), false).replace(
            &format!("Contact: <sip:101@{CALLEE}>"),
            &format!("Contact: <sip:101@{CALLEE}>, <sip:101@office.test>;q=0.5"),
        );
        let out = h.feed(&text, CALLEE);
        last = out.clone();
        match requests(&out, "INVITE").first() {
            Some(next) => {
                invites += 1;
                inv = (*next).clone();
            }
            None => break,
        }
    }
    assert_eq!(invites, 4, "the first INVITE and three redirects followed");
    let finals: Vec<u16> = responses(&last)
        .iter()
        .map(|r| r.status)
        .filter(|s| *s >= 300)
        .collect();
    assert_eq!(
        finals.len(),
        1,
        "the caller gets one final answer: {finals:?}"
    );
    assert!(finals[0] >= 400, "{finals:?}");
    h.advance(Duration::from_secs(120));
    assert_eq!(h.core.calls().len(), 0);
}

/// Asserts that `out` is an overload refusal: 503 with Retry-After, and nothing forwarded.
fn refused_at_once(out: &[(Message, SocketAddr)], what: &str) {
    let r = response(out, 503, what);
    assert!(
        r.headers.get("Retry-After").is_some(),
        "{what}: Retry-After"
    );
    assert!(
        requests(out, "INVITE").is_empty(),
        "{what}: nothing forwarded"
    );
}

/// Overload admission sparing calls already challenged (`Refuse::Unauthorised`): a first
/// INVITE gets 503 + Retry-After at once, and so do INVITEs whose credentials do not verify or
/// were used already (a replay); an INVITE answering the challenge is taken in, and still
/// authenticated. Under `Refuse::Every` it is refused too.
#[test]
fn under_overload_a_challenged_call_is_taken_in_and_new_ones_are_refused() {
    use pasarela::callctl::overload::Refuse;
    let mut h = Harness::new(Duration::from_secs(60));
    register_callee(&mut h);
    let challenge_of = |h: &mut Harness, n: u32| {
        let out = h.feed(&invite(n, 1, ""), CALLER);
        let challenge = response(&out, 401, "401");
        let auth = authorization(&challenge, "100", "INVITE", "sip:101@office.test");
        format!("Authorization: {auth}\n")
    };
    let good = challenge_of(&mut h, 1);
    let other = challenge_of(&mut h, 2);

    h.core.set_refusing(Refuse::Unauthorised);
    refused_at_once(&h.feed(&invite(3, 1, ""), CALLER), "a new call");
    let tampered = good.replace("response=\"", "response=\"0");
    refused_at_once(&h.feed(&invite(1, 2, &tampered), CALLER), "a wrong digest");
    let out = h.feed(&invite(1, 2, &good), CALLER);
    assert!(responses(&out).iter().all(|r| r.status != 503), "{out:?}");
    assert_eq!(
        requests(&out, "INVITE").len(),
        1,
        "the challenged call goes on"
    );
    // The same credentials again, on another call: a replay, refused like a new call.
    let replay = invite(4, 2, &good).replace("z9hG4bKinv4x2", "z9hG4bKreplay");
    refused_at_once(&h.feed(&replay, CALLER), "replayed credentials");
    assert_eq!(h.core.set_refusing(Refuse::Every), 3, "three refused");

    refused_at_once(
        &h.feed(&invite(2, 2, &other), CALLER),
        "every INVITE refused",
    );
    assert_eq!(h.core.set_refusing(Refuse::Nothing), 1);
    // Once the load is gone, the refused call is taken in.
    let out = h.feed(&invite(2, 2, &other).replace("inv2x2", "inv2x2b"), CALLER);
    assert_eq!(requests(&out, "INVITE").len(), 1, "{out:?}");
    assert_eq!(h.core.calls().len(), 2);
}

/// The trunk and the DUNDi peer of the inbound overload tests.
const OVERLOAD_TRUNK: &str = "127.0.0.1:5070";
const OVERLOAD_PEER: &str = "127.0.0.2:5060";

/// An inbound policy with one trunk at [`OVERLOAD_TRUNK`], one DUNDi peer at
/// [`OVERLOAD_PEER`], our DID +4930123456 reaching extension 101, and public calls as given.
fn overload_inbound(public: bool) -> pasarela::callctl::inbound::InboundPolicy {
    use pasarela::callctl::inbound::{InboundPolicy, InboundRoute, Net, TrunkSource};
    use pasarela::routing::trunk::NumberFormat;
    InboundPolicy {
        trunks: vec![TrunkSource {
            name: "carrier".into(),
            nets: vec![Net::socket(OVERLOAD_TRUNK.parse().expect("address"))],
            number_format: NumberFormat::E164,
        }],
        peers: vec![(
            "127.0.0.2".parse().expect("address"),
            "02:00:00:00:00:01".into(),
        )],
        public,
        routes: vec![InboundRoute {
            number: "+4930123456".into(),
            label: "extension 101".into(),
            members: vec!["101".into()],
            member_timeout: None,
        }],
        ..Default::default()
    }
}

/// An INVITE without credentials to our DID that says it comes from the trunk, whoever sends it.
fn did_invite_from_trunk(n: u32) -> String {
    let trunk = OVERLOAD_TRUNK;
    let body = SDP.replace('\n', "\r\n");
    format!(
        "INVITE sip:+4930123456@office.test SIP/2.0\nVia: SIP/2.0/UDP {trunk};branch=z9hG4bKtrunk{n}\nFrom: <sip:+4917012345@{trunk}>;tag=t{n}\nTo: <sip:+4930123456@office.test>\nCall-ID: trunk{n}\nCSeq: 1 INVITE\nContact: <sip:+4917012345@{trunk}>\nMax-Forwards: 70\nContent-Type: application/sdp\nContent-Length: {}\n\n{SDP}",
        body.len()
    )
}

/// The call was let in: no 503, and extension 101 rings.
fn taken_in(out: &[(Message, SocketAddr)], what: &str) {
    assert!(
        responses(out).iter().all(|r| r.status != 503),
        "{what}: {out:?}"
    );
    assert_eq!(requests(out, "INVITE").len(), 1, "{what}: 101 rings");
}

/// Overload admission spares a trunk's calls as it spares challenged ones (`Caller::Authorised`):
/// the configuration lets the trunk's source address in without a challenge, and so a DUNDi
/// peer's while the office takes public calls. An INVITE from elsewhere that names the trunk
/// in what it carries (From, Via, Contact) is a new call and refused first, as is a public call
/// from anybody else. Under `Refuse::Every` the trunk's call is refused too.
#[test]
fn under_overload_a_trunks_call_is_taken_in_and_one_claiming_the_trunk_is_refused() {
    use pasarela::callctl::overload::Refuse;
    const STRANGER: &str = "127.0.0.3:5060";
    let mut h = Harness::new(Duration::from_secs(60));
    register_callee(&mut h);
    h.core.set_inbound(overload_inbound(true));
    let from_trunk = did_invite_from_trunk;

    h.core.set_refusing(Refuse::Unauthorised);
    taken_in(&h.feed(&from_trunk(1), OVERLOAD_TRUNK), "the trunk's call");
    refused_at_once(&h.feed(&from_trunk(2), CALLER), "a call claiming the trunk");
    refused_at_once(
        &h.feed(&from_trunk(3), STRANGER),
        "a public call from a stranger",
    );
    taken_in(
        &h.feed(&from_trunk(4), OVERLOAD_PEER),
        "a DUNDi peer's public call",
    );
    assert_eq!(h.core.set_refusing(Refuse::Every), 2, "two refused");
    refused_at_once(
        &h.feed(&from_trunk(5), OVERLOAD_TRUNK),
        "every INVITE refused",
    );
    assert_eq!(h.core.set_refusing(Refuse::Nothing), 1);
    // Once the load is gone, the stranger's public call is taken in like any.
    taken_in(
        &h.feed(&from_trunk(6), STRANGER),
        "a public call after the load",
    );
    assert_eq!(h.core.calls().len(), 3);
}

/// A DUNDi peer is trusted only as far as `[inbound] public` says: with public calls off, its
/// INVITE without credentials is challenged like anybody's and rings nobody, and under
/// overload it is a new call, refused at once; the trunk's call is still taken in.
#[test]
fn with_public_calls_off_a_dundi_peer_is_challenged_and_refused_under_overload() {
    use pasarela::callctl::overload::Refuse;
    let mut h = Harness::new(Duration::from_secs(60));
    register_callee(&mut h);
    h.core.set_inbound(overload_inbound(false));

    let out = h.feed(&did_invite_from_trunk(1), OVERLOAD_PEER);
    assert!(
        responses(&out)
            .iter()
            .any(|r| r.status == 401 || r.status == 407),
        "challenged: {out:?}"
    );
    assert!(
        requests(&out, "INVITE").is_empty(),
        "nothing rings: {out:?}"
    );
    assert_eq!(h.core.calls().len(), 0);

    h.core.set_refusing(Refuse::Unauthorised);
    refused_at_once(
        &h.feed(&did_invite_from_trunk(2), OVERLOAD_PEER),
        "the peer's call under overload",
    );
    taken_in(
        &h.feed(&did_invite_from_trunk(3), OVERLOAD_TRUNK),
        "the trunk's call under overload",
    );
    assert_eq!(h.core.calls().len(), 1);
}
