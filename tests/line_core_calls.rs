//! PSTN calls through the real SIP core and B2BUA with a fake line, in virtual time (no
//! sockets, no sleeping), as `core_calls.rs` does for SIP calls: calls out on a line (answered,
//! busy, a line in use failing over to the next, no answer, the line lost mid-call) and calls
//! arriving on a line (answered and hung up either way, given up while ringing, refused by the
//! phone). The line is driven as the shell drives a real one: call control's
//! [`LineCommand`]s are carried out by a fake pool, whose answers go back as [`LineEvent`]s.
//! Media comes from a fake [`MediaPort`] that counts the relays held. Afterwards nothing may
//! be left: no call, no transaction, no call timer, no leg on a line, no relay.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pasarela::b2bua::{CallSummary, LegId, LineCommand, LineEvent};
use pasarela::callctl::{Output, RouteRequest, SipCore};
use pasarela::media::port::{CallMedia, MediaPort};
use pasarela::media::{CallMediaStats, LegMedia, MediaError, Side};
use pasarela::routing::router::{Attempt, AttemptKind, Decision, Hop, Route};
use pasarela::server::lines::LineInfo;
use pasarela::sip::message::{Message, Request};
use pasarela::sip::parse::{parse_message, Framing, Limits};
use pasarela::sip::peer::Proto;
use pasarela::sip::uri::Uri;

mod core_vt;
use core_vt::{authorization, ext, ok_for, peer, response, responses, to_tag, SERVER};

const CALLER: &str = "127.0.0.1:5062";
const PHONE: &str = "127.0.0.1:5064";
const NO_ANSWER: Duration = Duration::from_secs(20);

/// A relay that holds nothing but a count.
struct FakeMedia {
    held: Arc<AtomicUsize>,
    port: u16,
}

impl CallMedia for FakeMedia {
    fn local_port(&self, side: Side) -> u16 {
        match side {
            Side::A => self.port,
            Side::B => self.port + 2,
        }
    }

    fn update(&self, _a: LegMedia, _b: LegMedia) {}

    fn send_dtmf(&self, _to: Side, _digit: char, _duration_ms: u32) {}

    fn stats(&self) -> CallMediaStats {
        CallMediaStats {
            a_to_b: Default::default(),
            b_to_a: Default::default(),
            a_codec_pt: 0,
            b_codec_pt: 0,
            transcoding: false,
            srtp: [false; 2],
        }
    }
}

impl Drop for FakeMedia {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Relays for `limit` calls at a time.
struct FakePort {
    held: Arc<AtomicUsize>,
    limit: usize,
    next: u16,
}

impl MediaPort for FakePort {
    fn allocate(&mut self, _call: u64) -> Result<Box<dyn CallMedia>, MediaError> {
        if self.held.load(Ordering::SeqCst) >= self.limit {
            return Err(MediaError::PortsExhausted {
                start: 30_000,
                end: 30_000,
            });
        }
        self.held.fetch_add(1, Ordering::SeqCst);
        self.next = self.next.wrapping_add(4).max(30_000);
        Ok(Box::new(FakeMedia {
            held: Arc::clone(&self.held),
            port: self.next,
        }))
    }
}

/// A fake line pool: which legs are on which line, what each was told.
#[derive(Default)]
struct FakeLines {
    /// Open legs: the line they are on.
    legs: HashMap<LegId, String>,
    /// Every command, in order.
    log: Vec<LineCommand>,
}

impl FakeLines {
    fn on_line(&self, line: &str) -> usize {
        self.legs.values().filter(|l| *l == line).count()
    }
}

struct Harness {
    core: SipCore,
    /// Calls the core asked to route.
    routes: Vec<RouteRequest>,
    /// Calls that ended, as their records would see them.
    finished: Vec<CallSummary>,
    lines: FakeLines,
    /// Relays held by calls.
    relays: Arc<AtomicUsize>,
    now: Instant,
    unix: u64,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_relays(usize::MAX)
    }

    /// At most `limit` calls get a relay at once.
    fn with_relays(limit: usize) -> Harness {
        let settings = core_vt::settings(NO_ANSWER, true);
        let relays = Arc::new(AtomicUsize::new(0));
        let port = FakePort {
            held: Arc::clone(&relays),
            limit,
            next: 30_000,
        };
        let mut core = SipCore::new(
            settings,
            vec![ext("100"), ext("101")],
            [7; 32],
            Some(Box::new(port)),
        );
        core.set_local_addrs(vec![(Proto::Udp, SERVER.parse().expect("addr"))]);
        core.set_lines(vec![
            LineInfo {
                name: "gsm1".into(),
                extensions: vec!["101".into()],
            },
            LineInfo {
                name: "gsm2".into(),
                extensions: vec!["101".into()],
            },
        ]);
        Harness {
            core,
            routes: Vec::new(),
            finished: Vec::new(),
            lines: FakeLines::default(),
            relays,
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

    /// What the core sent; the line commands are carried out by the fake pool.
    fn drain(&mut self) -> Vec<(Message, SocketAddr)> {
        let mut out = Vec::new();
        while let Some(o) = self.core.poll_output(self.now) {
            let cmd = match o {
                Output::Transmit(t) => {
                    let m = parse_message(t.data, Framing::Datagram, &Limits::default())
                        .expect("core output parses");
                    out.push((m, t.peer.remote));
                    continue;
                }
                Output::Route(r) => {
                    self.routes.push(r);
                    continue;
                }
                Output::Finished(f) => {
                    self.finished.push(f);
                    continue;
                }
                Output::Line(cmd) => cmd,
                _ => continue,
            };
            match &cmd {
                LineCommand::Dial { leg, line, .. } => {
                    assert!(
                        self.lines.legs.insert(*leg, line.clone()).is_none(),
                        "a leg dialled twice: {cmd:?}"
                    );
                }
                LineCommand::Hangup { leg } => {
                    self.lines.legs.remove(leg);
                }
                LineCommand::Answer { .. } | LineCommand::Digit { .. } => {}
            }
            self.lines.log.push(cmd);
        }
        out
    }

    /// The line reports `event` on `leg`.
    fn line(&mut self, leg: LegId, event: LineEvent) -> Vec<(Message, SocketAddr)> {
        if matches!(event, LineEvent::Ended { .. } | LineEvent::Refused { .. }) {
            self.lines.legs.remove(&leg);
        }
        self.core.line_event(self.now, self.unix, leg, event);
        self.drain()
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

    /// The dials since command `from`.
    fn dials(&self, from: usize) -> Vec<(LegId, String, String)> {
        self.lines.log[from..]
            .iter()
            .filter_map(|c| match c {
                LineCommand::Dial {
                    leg, line, number, ..
                } => Some((*leg, line.clone(), number.clone())),
                _ => None,
            })
            .collect()
    }

    fn hung_up(&self, from: usize, leg: LegId) -> bool {
        self.lines.log[from..]
            .iter()
            .any(|c| matches!(c, LineCommand::Hangup { leg: l } if *l == leg))
    }

    fn answered(&self, from: usize, leg: LegId) -> bool {
        self.lines.log[from..]
            .iter()
            .any(|c| matches!(c, LineCommand::Answer { leg: l, .. } if *l == leg))
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

fn statuses(out: &[(Message, SocketAddr)]) -> Vec<u16> {
    responses(out).iter().map(|r| r.status).collect()
}

fn register_phone(h: &mut Harness) {
    let reg = |auth: &str, cseq: u32| {
        format!(
            "REGISTER sip:office.test SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKreg{cseq}\nFrom: <sip:101@office.test>;tag=r\nTo: <sip:101@office.test>\nCall-ID: reg\nCSeq: {cseq} REGISTER\nContact: <sip:101@{PHONE}>\n{auth}Content-Length: 0\n\n"
        )
    };
    let out = h.feed(&reg("", 1), PHONE);
    let challenge = responses(&out)[0].clone();
    let auth = authorization(&challenge, "101", "REGISTER", "sip:office.test");
    let out = h.feed(&reg(&format!("Authorization: {auth}\n"), 2), PHONE);
    assert_eq!(responses(&out)[0].status, 200);
}

const SDP: &str = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n";
const NUMBER: &str = "+493012345678";

fn invite(call: u32, cseq: u32, auth: &str) -> String {
    let body = SDP.replace('\n', "\r\n");
    format!(
        "INVITE sip:{NUMBER}@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv{call}x{cseq}\nFrom: <sip:100@office.test>;tag=a{call}\nTo: <sip:{NUMBER}@office.test>\nCall-ID: call{call}\nCSeq: {cseq} INVITE\nContact: <sip:100@{CALLER}>\nMax-Forwards: 70\n{auth}Content-Type: application/sdp\nContent-Length: {}\n\n{SDP}",
        body.len()
    )
}

/// A request of the caller within call `n`'s dialog (`tag`: pasarela's To tag).
fn caller_request(n: u32, method: &str, cseq: u32, tag: &str) -> String {
    format!(
        "{method} sip:{NUMBER}@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK{method}{n}x{cseq}\nFrom: <sip:100@office.test>;tag=a{n}\nTo: <sip:{NUMBER}@office.test>;tag={tag}\nCall-ID: call{n}\nCSeq: {cseq} {method}\nContent-Length: 0\n\n"
    )
}

/// A line trunk attempt as the router makes it for `line`.
fn line_attempt(line: &str) -> Attempt {
    let uri = match Uri::parse(&format!("sip:{NUMBER}@127.0.0.1:9;line={line}")) {
        Ok(Uri::Sip(u)) => u,
        other => panic!("line uri: {other:?}"),
    };
    Attempt {
        kind: AttemptKind::Trunk { name: line.into() },
        uri,
        hop: Hop {
            proto: Proto::Udp,
            addr: pasarela::pstn::routes::LINE_HOP,
        },
        auth: None,
    }
}

/// Call `n` from 100 to [`NUMBER`], routed to the lines gsm1 then gsm2; returns what the core
/// sent after the route was decided.
fn call_out(h: &mut Harness, n: u32) -> Vec<(Message, SocketAddr)> {
    let out = h.feed(&invite(n, 1, ""), CALLER);
    let challenge = response(&out, 401, "401");
    let ch_tag = to_tag(&challenge);
    h.feed(
        &format!("ACK sip:{NUMBER}@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv{n}x1\nFrom: <sip:100@office.test>;tag=a{n}\nTo: <sip:{NUMBER}@office.test>;tag={ch_tag}\nCall-ID: call{n}\nCSeq: 1 ACK\nContent-Length: 0\n\n"),
        CALLER,
    );
    let auth = authorization(
        &challenge,
        "100",
        "INVITE",
        &format!("sip:{NUMBER}@office.test"),
    );
    h.feed(&invite(n, 2, &format!("Authorization: {auth}\n")), CALLER);
    let req = std::mem::take(&mut h.routes);
    assert_eq!(req.len(), 1, "the call waits for its route");
    let route = Route {
        dialled: NUMBER.into(),
        number: None,
        category: None,
        steps: Vec::new(),
        decision: Decision::Attempts(vec![line_attempt("gsm1"), line_attempt("gsm2")]),
        elapsed: Duration::ZERO,
    };
    h.core
        .route_decided(h.now, h.unix, req[0].id, Arc::new(route));
    h.drain()
}

/// The caller's ACK for the final failure in `out` (same branch as its INVITE).
fn ack_failure(h: &mut Harness, n: u32, out: &[(Message, SocketAddr)]) {
    let tag = responses(out)
        .into_iter()
        .find(|r| r.status >= 300)
        .and_then(|r| r.headers.to().and_then(|t| t.tag()).map(str::to_owned))
        .expect("a final failure with a tag");
    h.feed(
        &format!("ACK sip:{NUMBER}@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv{n}x2\nFrom: <sip:100@office.test>;tag=a{n}\nTo: <sip:{NUMBER}@office.test>;tag={tag}\nCall-ID: call{n}\nCSeq: 2 ACK\nContent-Length: 0\n\n"),
        CALLER,
    );
}

/// The To tag of pasarela's 200 to the caller.
fn ok_tag(out: &[(Message, SocketAddr)]) -> String {
    responses(out)
        .into_iter()
        .find(|r| r.status == 200)
        .and_then(|r| r.headers.to().and_then(|t| t.tag()).map(str::to_owned))
        .expect("200 with a tag to the caller")
}

fn audio(n: u32) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + (n % 20_000) as u16))
}

/// Answers the last response-worthy request the phone got, as the phone.
fn phone_response(inv: &Request, status: u16, tag: &str, sdp: bool) -> String {
    let h = &inv.headers;
    let body = if sdp {
        SDP.replace("40000", "42000")
    } else {
        String::new()
    };
    let ct = if sdp {
        "Content-Type: application/sdp\n"
    } else {
        ""
    };
    format!(
        "SIP/2.0 {status} X\nVia: {}\nFrom: {}\nTo: {};tag={tag}\nCall-ID: {}\nCSeq: {}\nContact: <sip:101@{PHONE}>\n{ct}Content-Length: {}\n\n{body}",
        h.via().expect("via"),
        h.from().expect("from"),
        h.to().expect("to"),
        h.call_id().expect("call-id"),
        h.cseq().expect("cseq"),
        body.replace('\n', "\r\n").len(),
    )
}

/// A BYE from the phone within the dialog its 200 to `inv` made.
fn phone_bye(inv: &Request, tag: &str) -> String {
    let h = &inv.headers;
    format!(
        "BYE sip:100@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKpb{tag}\nFrom: {};tag={tag}\nTo: {}\nCall-ID: {}\nCSeq: 1 BYE\nContent-Length: 0\n\n",
        h.to().expect("to"),
        h.from().expect("from"),
        h.call_id().expect("call-id"),
    )
}

/// A call out on gsm1: `outcome` decides what the line does.
fn outgoing(h: &mut Harness, n: u32) {
    let mark = h.lines.log.len();
    let out = call_out(h, n);
    assert!(
        requests(&out, "INVITE").is_empty(),
        "no SIP request towards a line"
    );
    let dials = h.dials(mark);
    assert_eq!(dials.len(), 1, "call {n}: gsm1 is dialled: {dials:?}");
    let (leg, line, number) = dials[0].clone();
    assert_eq!((line.as_str(), number.as_str()), ("gsm1", NUMBER));
    h.line(leg, LineEvent::Audio(audio(n)));
    match n % 6 {
        // Rings, answers; the caller hangs up: the line is hung up.
        0 => {
            let out = h.line(leg, LineEvent::Ringing);
            assert_eq!(statuses(&out), vec![180], "call {n}");
            let out = h.line(leg, LineEvent::EarlyMedia);
            assert_eq!(statuses(&out), vec![183], "call {n}: early media");
            let out = h.line(leg, LineEvent::Answered);
            let tag = ok_tag(&out);
            h.feed(&caller_request(n, "ACK", 2, &tag), CALLER);
            // A digit from the caller (SIP INFO) is played on the line.
            let info = caller_request(n, "INFO", 3, &tag).replace(
                "Content-Length: 0\n\n",
                "Content-Type: application/dtmf-relay\nContent-Length: 24\n\nSignal=5\nDuration=160\n",
            );
            let out = h.feed(&info, CALLER);
            assert_eq!(statuses(&out), vec![200], "call {n}: INFO");
            assert!(
                h.lines.log[mark..]
                    .iter()
                    .any(|c| matches!(c, LineCommand::Digit { leg: l, digit: '5' } if *l == leg)),
                "call {n}: the digit reaches the line"
            );
            // A hook flash (SIP INFO Signal=hf) reaches the line as the flash digit.
            let flash = caller_request(n, "INFO", 4, &tag).replace(
                "Content-Length: 0\n\n",
                "Content-Type: application/dtmf-relay\nContent-Length: 11\n\nSignal=hf\n",
            );
            let out = h.feed(&flash, CALLER);
            assert_eq!(statuses(&out), vec![200], "call {n}: flash INFO");
            assert!(
                h.lines.log[mark..]
                    .iter()
                    .any(|c| matches!(c, LineCommand::Digit { leg: l, digit: '!' } if *l == leg)),
                "call {n}: the flash reaches the line"
            );
            let out = h.feed(&caller_request(n, "BYE", 5, &tag), CALLER);
            assert_eq!(statuses(&out), vec![200], "call {n}: BYE answered");
            assert!(h.hung_up(mark, leg), "call {n}: the line is hung up");
        }
        // The line is in use (503, Q.850 34): gsm2 is dialled at once; it is busy: 486.
        1 => {
            let out = h.line(
                leg,
                LineEvent::Refused {
                    status: 503,
                    q850: Some(34),
                    reason: "line gsm1 is busy".into(),
                },
            );
            assert!(statuses(&out).is_empty(), "call {n}: the caller waits");
            let next = h.dials(mark);
            assert_eq!(next.len(), 2, "call {n}: gsm2 is dialled");
            let (leg2, line2, _) = next[1].clone();
            assert_eq!(line2, "gsm2");
            h.line(leg2, LineEvent::Audio(audio(n + 1)));
            let out = h.line(
                leg2,
                LineEvent::Ended {
                    status: 486,
                    q850: Some(17),
                },
            );
            assert_eq!(statuses(&out), vec![486], "call {n}: busy");
            ack_failure(h, n, &out);
        }
        // Nobody answers: the caller gets 480 after no_answer and the line is hung up.
        2 => {
            h.line(leg, LineEvent::Proceeding);
            h.line(leg, LineEvent::Ringing);
            let out = h.advance(NO_ANSWER + Duration::from_millis(10));
            assert!(statuses(&out).contains(&480), "call {n}: {out:?}");
            assert!(h.hung_up(mark, leg), "call {n}: the line is hung up");
            ack_failure(h, n, &out);
        }
        // Answered; the caller puts the call on hold (answered here: the line's stream does
        // not change); the line is lost mid-call: the caller gets a BYE.
        3 => {
            let out = h.line(leg, LineEvent::Answered);
            let tag = ok_tag(&out);
            h.feed(&caller_request(n, "ACK", 2, &tag), CALLER);
            let hold = SDP.replace("a=rtpmap:0", "a=sendonly\na=rtpmap:0");
            let reinvite = caller_request(n, "INVITE", 3, &tag).replace(
                "Content-Length: 0\n\n",
                &format!(
                    "Content-Type: application/sdp\nContent-Length: {}\n\n{hold}",
                    hold.replace('\n', "\r\n").len()
                ),
            );
            let out = h.feed(&reinvite, CALLER);
            assert!(requests(&out, "INVITE").is_empty(), "nothing is sent on");
            let ok = responses(&out)
                .into_iter()
                .find(|r| r.status == 200)
                .unwrap_or_else(|| panic!("call {n}: hold answered: {out:?}"));
            let body = String::from_utf8_lossy(&ok.body).to_string();
            assert!(body.contains("m=audio"), "call {n}: {body}");
            assert!(
                body.contains("recvonly"),
                "call {n}: hold answered recvonly: {body}"
            );
            h.feed(&caller_request(n, "ACK", 3, &tag), CALLER);
            h.advance(Duration::from_secs(5));
            let out = h.line(
                leg,
                LineEvent::Ended {
                    status: 503,
                    q850: Some(41),
                },
            );
            let bye = requests(&out, "BYE");
            assert_eq!(bye.len(), 1, "call {n}: the caller gets a BYE");
            let ok = ok_for(bye[0]);
            h.feed(&ok, CALLER);
            assert!(!h.hung_up(mark, leg), "an ended line is not hung up again");
        }
        // The callee is busy: 486, and nothing else is tried.
        4 => {
            let out = h.line(
                leg,
                LineEvent::Ended {
                    status: 486,
                    q850: Some(17),
                },
            );
            assert_eq!(statuses(&out), vec![486], "call {n}");
            assert_eq!(h.dials(mark).len(), 1, "busy is the callee's answer");
            ack_failure(h, n, &out);
        }
        // The caller gives up while the line rings: 487 and the line is hung up.
        _ => {
            h.line(leg, LineEvent::Ringing);
            let cancel = invite(n, 2, "")
                .replacen("INVITE sip:", "CANCEL sip:", 1)
                .replace("CSeq: 2 INVITE", "CSeq: 2 CANCEL");
            let cancel = match cancel.split_once("Content-Type:") {
                Some((head, _)) => format!("{head}Content-Length: 0\n\n"),
                None => cancel,
            };
            let out = h.feed(&cancel, CALLER);
            assert!(statuses(&out).contains(&487), "call {n}: {out:?}");
            assert!(h.hung_up(mark, leg), "call {n}: the line is hung up");
            ack_failure(h, n, &out);
        }
    }
}

/// A call arriving on gsm1 for extension 101.
fn incoming(h: &mut Harness, n: u32) {
    let mark = h.lines.log.len();
    let caller = (!n.is_multiple_of(5)).then(|| format!("+4917{n:07}"));
    let id = h
        .core
        .line_call(h.now, h.unix, "gsm1", caller.clone(), audio(n))
        .expect("the call is offered");
    let out = h.drain();
    let leg = LegId {
        call: id,
        fork: LegId::INCOMING,
    };
    let invites = requests(&out, "INVITE");
    assert_eq!(invites.len(), 1, "call {n}: the phone rings");
    let inv = invites[0].clone();
    let from = inv.headers.from().expect("from").uri.to_string();
    match &caller {
        Some(c) => assert!(
            from.contains(c.as_str()),
            "call {n}: caller shown as {from}"
        ),
        None => assert!(from.contains("anonymous"), "call {n}: {from}"),
    }
    let tag = format!("p{n}");
    h.feed(&phone_response(&inv, 180, &tag, false), PHONE);
    match n % 4 {
        // Answered; the PSTN caller hangs up: the phone gets a BYE.
        0 => {
            let out = h.feed(&phone_response(&inv, 200, &tag, true), PHONE);
            assert_eq!(requests(&out, "ACK").len(), 1, "call {n}: 200 ACKed");
            assert!(h.answered(mark, leg), "call {n}: the line is answered");
            let out = h.line(leg, LineEvent::Digit('7'));
            assert!(out.is_empty(), "the phone takes RFC 4733: no INFO");
            let out = h.line(
                leg,
                LineEvent::Ended {
                    status: 480,
                    q850: Some(16),
                },
            );
            let bye = requests(&out, "BYE");
            assert_eq!(bye.len(), 1, "call {n}: the phone gets a BYE");
            let ok = ok_for(bye[0]);
            h.feed(&ok, PHONE);
        }
        // Answered by a phone without telephone-event; a digit heard on the line reaches it
        // as SIP INFO; the phone hangs up: the line is hung up.
        1 => {
            let plain = phone_response(&inv, 200, &tag, true)
                .replace("RTP/AVP 0 101", "RTP/AVP 0")
                .replace("a=rtpmap:101 telephone-event/8000\n", "");
            let len = SDP
                .replace("RTP/AVP 0 101", "RTP/AVP 0")
                .replace("a=rtpmap:101 telephone-event/8000\n", "")
                .replace('\n', "\r\n")
                .len();
            let plain = match plain.split_once("Content-Length: ") {
                Some((head, rest)) => {
                    let body = rest.split_once("\n\n").map_or("", |(_, b)| b);
                    format!("{head}Content-Length: {len}\n\n{body}")
                }
                None => plain,
            };
            h.feed(&plain, PHONE);
            assert!(h.answered(mark, leg), "call {n}: the line is answered");
            let out = h.line(leg, LineEvent::Digit('3'));
            let info = requests(&out, "INFO");
            assert_eq!(info.len(), 1, "call {n}: the digit as INFO: {out:?}");
            assert!(String::from_utf8_lossy(&info[0].body).contains("Signal=3"));
            let ok = ok_for(info[0]);
            h.feed(&ok, PHONE);
            let out = h.feed(&phone_bye(&inv, &tag), PHONE);
            assert_eq!(statuses(&out), vec![200], "call {n}");
            assert!(h.hung_up(mark, leg), "call {n}: the line is hung up");
        }
        // The PSTN caller gives up while the phone rings: CANCEL.
        2 => {
            let out = h.line(
                leg,
                LineEvent::Ended {
                    status: 487,
                    q850: Some(16),
                },
            );
            let cancel = requests(&out, "CANCEL");
            assert_eq!(
                cancel.len(),
                1,
                "call {n}: the phone's ringing is cancelled"
            );
            let ok = ok_for(cancel[0]);
            h.feed(&ok, PHONE);
            let out = h.feed(&phone_response(&inv, 487, &tag, false), PHONE);
            assert_eq!(requests(&out, "ACK").len(), 1, "call {n}: 487 ACKed");
        }
        // The phone is busy: the line is hung up (rejected).
        _ => {
            let out = h.feed(&phone_response(&inv, 486, &tag, false), PHONE);
            assert_eq!(requests(&out, "ACK").len(), 1, "call {n}: 486 ACKed");
            assert!(h.hung_up(mark, leg), "call {n}: the line is rejected");
            assert!(!h.answered(mark, leg));
        }
    }
}

#[test]
fn pstn_calls_leave_nothing_behind() {
    let mut h = Harness::new();
    register_phone(&mut h);
    for n in 0..300u32 {
        if n % 2 == 0 {
            outgoing(&mut h, n / 2);
        } else {
            incoming(&mut h, n / 2);
        }
        h.advance(Duration::from_millis(200));
    }
    // Every timer runs out (Timer B/F/H/J, linger, no answer, max duration).
    h.advance(Duration::from_secs(4000));
    assert_eq!(h.core.calls().len(), 0, "calls left");
    assert_eq!(h.core.transaction_counts(), (0, 0), "transactions left");
    assert_eq!(h.core.calls().pending_transactions(), 0);
    assert_eq!(h.core.calls().open_line_legs(), 0, "legs on lines left");
    assert_eq!(
        h.lines.legs.len(),
        0,
        "legs the lines still hold: {:?}",
        h.lines.legs
    );
    assert_eq!(h.lines.on_line("gsm1") + h.lines.on_line("gsm2"), 0);
    assert_eq!(h.core.calls().timer_count(), 0, "call timers left");
    assert_eq!(h.relays.load(Ordering::SeqCst), 0, "relays still held");
    h.drain();
    let finished = std::mem::take(&mut h.finished);
    assert_eq!(finished.len(), 300, "every call has its summary");
    // The records' raw material: statuses and Q.850 causes as the lines said.
    let by = |s: u16| finished.iter().filter(|c| c.status == s).count();
    assert!(by(200) >= 100, "answered: {}", by(200));
    assert!(by(486) >= 25 && by(480) >= 25 && by(487) >= 25);
    let busy_out = finished
        .iter()
        .filter(|c| c.status == 486 && c.caller == "100")
        .collect::<Vec<_>>();
    assert!(
        busy_out.iter().all(|c| c.q850.is_some()),
        "busy calls carry a Q.850 cause"
    );
    let lost = finished.iter().filter(|c| c.q850 == Some(41)).count();
    assert_eq!(lost, 25, "calls whose line was lost mid-call");
}

/// A line that answers after the caller gave up is hung up; events for calls that ended are
/// ignored; a line unknown to the core is refused.
#[test]
fn late_and_stray_line_events() {
    let mut h = Harness::new();
    register_phone(&mut h);
    let mark = h.lines.log.len();
    call_out(&mut h, 1);
    let (leg, _, _) = h.dials(mark)[0].clone();
    h.line(leg, LineEvent::Ringing);
    h.advance(NO_ANSWER + Duration::from_millis(10));
    assert!(h.hung_up(mark, leg));
    let out = h.line(leg, LineEvent::Answered);
    assert!(out.is_empty(), "a late answer changes nothing: {out:?}");
    let out = h.line(
        LegId {
            call: 999_999,
            fork: 0,
        },
        LineEvent::Answered,
    );
    assert!(out.is_empty());
    assert!(h
        .core
        .line_call(h.now, h.unix, "nosuch", None, audio(1))
        .is_none());
    h.advance(Duration::from_secs(100));
    assert_eq!(h.core.calls().len(), 0);
    assert_eq!(h.core.transaction_counts(), (0, 0));
}

/// No relay for a call: a call out gets 503 and no line is dialled; a call arriving on a line
/// is hung up at once.
#[test]
fn no_media_no_line() {
    let mut h = Harness::with_relays(0);
    register_phone(&mut h);
    let mark = h.lines.log.len();
    let out = call_out(&mut h, 1);
    assert_eq!(statuses(&out), vec![503], "{out:?}");
    assert!(h.dials(mark).is_empty(), "no line is dialled");
    ack_failure(&mut h, 1, &out);
    let id = h
        .core
        .line_call(h.now, h.unix, "gsm1", Some("+4930555".into()), audio(2))
        .expect("offered");
    let out = h.drain();
    assert!(requests(&out, "INVITE").is_empty(), "no phone rings");
    let leg = LegId {
        call: id,
        fork: LegId::INCOMING,
    };
    assert!(h.hung_up(mark, leg), "the line's call is hung up");
    h.advance(Duration::from_secs(100));
    assert_eq!(h.core.calls().len(), 0);
    assert_eq!(h.core.transaction_counts(), (0, 0));
    assert_eq!(h.relays.load(Ordering::SeqCst), 0);
}
