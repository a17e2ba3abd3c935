//! Call forwarding and sequential search decided by the sans-IO SIP core, in virtual time (no
//! sockets, no sleeping): forward always, busy, no answer and unreachable, to an extension or
//! (through the router, as a call of the forwarding extension) to a number; loops refused;
//! feature codes; an extension's phones rung one after the other. Calls that arrive on a PSTN
//! line for an extension follow the same forwards (the line's commands are logged by a fake
//! line pool, as in `line_core_calls.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pasarela::b2bua::{LegId, LineCommand};
use pasarela::callctl::{Output, Refused, RouteRequest, SipCore};
use pasarela::routing::forwarding::CallHandling;
use pasarela::routing::router::{Attempt, AttemptKind, Decision, Hop, Route};
use pasarela::server::lines::LineInfo;
use pasarela::sip::message::{Message, Request};
use pasarela::sip::parse::{parse_message, Framing, Limits};
use pasarela::sip::peer::Proto;

mod core_vt;
use core_vt::{authorization, ext, peer, response, responses, to_tag, SERVER};

const CALLER: &str = "127.0.0.1:5062";

/// The address of extension `n`'s `i`-th phone.
fn phone(n: &str, i: u16) -> String {
    let n: u16 = n.parse().expect("number");
    format!("127.0.0.1:{}", 6000 + n * 10 + i)
}

type Out = Vec<(Message, SocketAddr)>;

struct Harness {
    core: SipCore,
    now: Instant,
    unix: u64,
    calls: u32,
    /// What the core's one drain handed out besides messages.
    refused: Vec<Refused>,
    routes: Vec<RouteRequest>,
    changes: Vec<(String, CallHandling)>,
    notes: Vec<String>,
    finished: Vec<pasarela::b2bua::CallSummary>,
    /// What the PSTN line was told (the fake line pool's log).
    line_log: Vec<LineCommand>,
}

impl Harness {
    fn new(handling: &[(&str, CallHandling)]) -> Harness {
        let settings = core_vt::settings(Duration::from_secs(120), true);
        let exts = ["100", "101", "102", "103"].map(ext).to_vec();
        let mut core = SipCore::new(settings, exts, [9; 32], None);
        core.set_local_addrs(vec![(Proto::Udp, SERVER.parse().expect("addr"))]);
        core.set_lines(vec![LineInfo {
            name: "gsm1".into(),
            extensions: vec!["101".into()],
        }]);
        core.set_call_handling(
            handling
                .iter()
                .map(|(n, h)| (n.to_string(), h.clone()))
                .collect::<HashMap<_, _>>(),
        );
        Harness {
            core,
            now: Instant::now(),
            unix: 1_800_000_000,
            calls: 0,
            refused: Vec::new(),
            routes: Vec::new(),
            changes: Vec::new(),
            notes: Vec::new(),
            finished: Vec::new(),
            line_log: Vec::new(),
        }
    }

    /// A call from `caller` arrives on line gsm1 (which rings 101): its id and what was sent.
    fn line_call(&mut self, caller: &str) -> (u64, Out) {
        let audio: SocketAddr = "127.0.0.1:41000".parse().expect("addr");
        let id = self
            .core
            .line_call(self.now, self.unix, "gsm1", Some(caller.into()), audio)
            .expect("the line's call is offered");
        (id, self.drain())
    }

    /// Whether the line's leg of call `id` was hung up (refused or ended).
    fn line_hung_up(&self, id: u64) -> bool {
        let leg = LegId {
            call: id,
            fork: LegId::INCOMING,
        };
        self.line_log
            .iter()
            .any(|c| matches!(c, LineCommand::Hangup { leg: l } if *l == leg))
    }

    fn feed(&mut self, text: &str, from: &str) -> Out {
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

    fn drain(&mut self) -> Out {
        let mut out = Vec::new();
        while let Some(o) = self.core.poll_output(self.now) {
            match o {
                Output::Transmit(t) => {
                    let m = parse_message(t.data, Framing::Datagram, &Limits::default())
                        .expect("core output parses");
                    out.push((m, t.peer.remote));
                }
                Output::Refused(r) => self.refused.push(r),
                Output::Route(r) => self.routes.push(r),
                Output::CallHandling(ext, h) => self.changes.push((ext, h)),
                Output::Note(_, n) => self.notes.push(n),
                Output::Finished(s) => self.finished.push(s),
                Output::Line(c) => self.line_log.push(c),
                _ => {}
            }
        }
        out
    }

    fn advance(&mut self, d: Duration) -> Out {
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

    /// Registers phone `i` of extension `n`.
    fn register(&mut self, n: &str, i: u16) {
        let addr = phone(n, i);
        let reg = |auth: &str, cseq: u32| {
            format!(
                "REGISTER sip:office.test SIP/2.0\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKreg{n}{i}{cseq}\nFrom: <sip:{n}@office.test>;tag=r\nTo: <sip:{n}@office.test>\nCall-ID: reg{n}{i}\nCSeq: {cseq} REGISTER\nContact: <sip:{n}@{addr}>\n{auth}Content-Length: 0\n\n"
            )
        };
        let out = self.feed(&reg("", 1), &addr);
        let challenge = responses(&out)[0].clone();
        let auth = authorization(&challenge, n, "REGISTER", "sip:office.test");
        let out = self.feed(&reg(&format!("Authorization: {auth}\n"), 2), &addr);
        assert_eq!(responses(&out)[0].status, 200);
    }

    /// Extension `from` (at CALLER) dials `dialled`; what pasarela sent after the digest.
    fn dial(&mut self, from: &str, dialled: &str) -> Out {
        self.calls += 1;
        let n = self.calls;
        let invite = |auth: &str, cseq: u32| {
            let body = SDP.replace('\n', "\r\n");
            format!(
                "INVITE sip:{dialled}@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv{n}x{cseq}\nFrom: <sip:{from}@office.test>;tag=a{n}\nTo: <sip:{dialled}@office.test>\nCall-ID: call{n}\nCSeq: {cseq} INVITE\nContact: <sip:{from}@{CALLER}>\nMax-Forwards: 70\n{auth}Content-Type: application/sdp\nContent-Length: {}\n\n{SDP}",
                body.len()
            )
        };
        let out = self.feed(&invite("", 1), CALLER);
        let challenge = response(&out, 401, "401");
        let ch_tag = to_tag(&challenge);
        self.feed(
            &format!("ACK sip:{dialled}@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv{n}x1\nFrom: <sip:{from}@office.test>;tag=a{n}\nTo: <sip:{dialled}@office.test>;tag={ch_tag}\nCall-ID: call{n}\nCSeq: 1 ACK\nContent-Length: 0\n\n"),
            CALLER,
        );
        let uri = format!("sip:{dialled}@office.test");
        let auth = authorization(&challenge, from, "INVITE", &uri);
        self.feed(&invite(&format!("Authorization: {auth}\n"), 2), CALLER)
    }

    /// The callee at `from` answers pasarela's INVITE `inv` with `status`.
    fn reply(&mut self, inv: &Request, status: u16, from: &str) -> Out {
        let h = &inv.headers;
        let text = format!(
            "SIP/2.0 {status} X\nVia: {}\nFrom: {}\nTo: {};tag=t{status}\nCall-ID: {}\nCSeq: {}\nContact: <sip:x@{from}>\nContent-Length: 0\n\n",
            h.via().expect("via"),
            h.from().expect("from"),
            h.to().expect("to"),
            h.call_id().expect("call-id"),
            h.cseq().expect("cseq"),
        );
        self.feed(&text, from)
    }
}

const SDP: &str = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 0\na=rtpmap:0 PCMU/8000\n";

/// The requests of `method` sent to `dest`.
fn sent(out: &Out, method: &str, dest: &str) -> Vec<Request> {
    out.iter()
        .filter_map(|(m, to)| match m {
            Message::Request(r) if r.method.as_str() == method && to.to_string() == dest => {
                Some(r.clone())
            }
            _ => None,
        })
        .collect()
}

/// The final statuses sent back to the caller.
fn to_caller(out: &Out) -> Vec<u16> {
    out.iter()
        .filter_map(|(m, to)| match m {
            Message::Response(r) if to.to_string() == CALLER && r.status >= 200 => Some(r.status),
            _ => None,
        })
        .collect()
}

fn forwards(f: impl FnOnce(&mut CallHandling)) -> CallHandling {
    let mut h = CallHandling::default();
    f(&mut h);
    h
}

/// The record notes of the calls that ended.
fn notes(h: &mut Harness) -> Vec<String> {
    std::mem::take(&mut h.notes)
}

#[test]
fn forward_always_rings_the_other_extension_and_notes_it() {
    let mut h = Harness::new(&[("101", forwards(|h| h.always = Some("102".into())))]);
    h.register("101", 0);
    h.register("102", 0);
    let out = h.dial("100", "101");
    assert!(
        sent(&out, "INVITE", &phone("101", 0)).is_empty(),
        "101 must not ring"
    );
    let inv = sent(&out, "INVITE", &phone("102", 0));
    assert_eq!(inv.len(), 1, "102 rings instead");
    let out = h.reply(&inv[0], 486, &phone("102", 0));
    assert_eq!(to_caller(&out), [486]);
    assert_eq!(notes(&mut h), ["Forwarded by 101 (always) to 102"]);
    let ended = std::mem::take(&mut h.finished);
    assert_eq!(
        ended[0].callee, "101",
        "the record keeps the number dialled"
    );
}

#[test]
fn busy_forward() {
    let mut h = Harness::new(&[("101", forwards(|h| h.busy = Some("103".into())))]);
    h.register("101", 0);
    h.register("103", 0);
    let out = h.dial("100", "101");
    let inv = sent(&out, "INVITE", &phone("101", 0));
    assert_eq!(inv.len(), 1);
    let out = h.reply(&inv[0], 486, &phone("101", 0));
    assert!(to_caller(&out).is_empty(), "the caller is not told busy");
    assert_eq!(sent(&out, "INVITE", &phone("103", 0)).len(), 1, "103 rings");
}

#[test]
fn no_answer_forward_after_its_time() {
    let mut h = Harness::new(&[(
        "101",
        forwards(|h| {
            h.no_answer = Some("102".into());
            h.no_answer_secs = 12;
        }),
    )]);
    h.register("101", 0);
    h.register("102", 0);
    let out = h.dial("100", "101");
    let inv = sent(&out, "INVITE", &phone("101", 0));
    h.reply(&inv[0], 180, &phone("101", 0));
    let out = h.advance(Duration::from_secs(11));
    assert!(sent(&out, "INVITE", &phone("102", 0)).is_empty(), "not yet");
    let out = h.advance(Duration::from_secs(2));
    assert!(
        !sent(&out, "CANCEL", &phone("101", 0)).is_empty(),
        "101 stops ringing"
    );
    assert!(
        !sent(&out, "INVITE", &phone("102", 0)).is_empty(),
        "102 rings"
    );
    // A busy 101 is no reason to forward when only no-answer is set.
    let out = h.dial("100", "101");
    let inv = sent(&out, "INVITE", &phone("101", 0));
    let out = h.reply(&inv[0], 486, &phone("101", 0));
    assert_eq!(to_caller(&out), [486]);
}

#[test]
fn unreachable_forward_when_nothing_is_registered_or_every_phone_fails() {
    let mut h = Harness::new(&[("101", forwards(|h| h.unreachable = Some("102".into())))]);
    h.register("102", 0);
    let out = h.dial("100", "101");
    assert_eq!(sent(&out, "INVITE", &phone("102", 0)).len(), 1);
    h.register("101", 0);
    let out = h.dial("100", "101");
    let inv = sent(&out, "INVITE", &phone("101", 0));
    let out = h.reply(&inv[0], 503, &phone("101", 0));
    assert_eq!(sent(&out, "INVITE", &phone("102", 0)).len(), 1);
}

#[test]
fn forwarding_loop_is_refused_and_recorded() {
    let mut h = Harness::new(&[
        ("101", forwards(|h| h.always = Some("102".into()))),
        ("102", forwards(|h| h.always = Some("101".into()))),
    ]);
    h.register("101", 0);
    h.register("102", 0);
    let out = h.dial("100", "101");
    assert_eq!(to_caller(&out), [482]);
    assert!(sent(&out, "INVITE", &phone("101", 0)).is_empty());
    assert!(sent(&out, "INVITE", &phone("102", 0)).is_empty());
    let refused = std::mem::take(&mut h.refused);
    let reason = refused[0].reason.clone().expect("a reason");
    assert!(
        reason.contains("Forwarding loop 101 -> 102 -> 101"),
        "{reason}"
    );
}

#[test]
fn forward_to_a_number_is_routed_as_a_call_of_the_forwarding_extension() {
    let mut h = Harness::new(&[("101", forwards(|h| h.always = Some("+49900123456".into())))]);
    h.register("101", 0);
    let out = h.dial("100", "101");
    assert!(out.iter().all(|(m, _)| !matches!(m, Message::Request(_))));
    let req = std::mem::take(&mut h.routes);
    assert_eq!(req.len(), 1);
    assert_eq!(req[0].from, "101", "routed with 101's permissions");
    assert_eq!(req[0].dialled, "+49900123456");
    let route = Route {
        dialled: req[0].dialled.clone(),
        number: None,
        category: None,
        steps: Vec::new(),
        decision: Decision::Reject {
            status: 403,
            reason: "Calls to premium numbers are barred".into(),
        },
        elapsed: Duration::ZERO,
    };
    h.core
        .route_decided(h.now, h.unix, req[0].id, std::sync::Arc::new(route));
    let out = h.drain();
    assert_eq!(to_caller(&out), [403]);
    let refused = std::mem::take(&mut h.refused);
    assert_eq!(refused[0].caller, "100");
    assert_eq!(
        refused[0].dialled, "101",
        "the record keeps the number dialled"
    );
    let reason = refused[0].reason.clone().expect("a reason");
    assert_eq!(
        reason,
        "Forwarded by 101 (always) to +49900123456: refused, Calls to premium numbers are barred"
    );
}

#[test]
fn busy_forward_to_a_barred_number_refuses_the_ringing_call() {
    let mut h = Harness::new(&[("101", forwards(|h| h.busy = Some("0900123".into())))]);
    h.register("101", 0);
    let out = h.dial("100", "101");
    let inv = sent(&out, "INVITE", &phone("101", 0));
    h.reply(&inv[0], 486, &phone("101", 0));
    let req = std::mem::take(&mut h.routes);
    assert_eq!(
        (req[0].from.as_str(), req[0].dialled.as_str()),
        ("101", "0900123")
    );
    let route = Route {
        dialled: "0900123".into(),
        number: None,
        category: None,
        steps: Vec::new(),
        decision: Decision::Reject {
            status: 403,
            reason: "Calls to premium numbers are barred".into(),
        },
        elapsed: Duration::ZERO,
    };
    h.core
        .route_decided(h.now, h.unix, req[0].id, std::sync::Arc::new(route));
    let out = h.drain();
    assert_eq!(to_caller(&out), [403]);
    assert_eq!(
        notes(&mut h),
        ["Forwarded by 101 (busy) to 0900123: refused, Calls to premium numbers are barred"]
    );
}

#[test]
fn feature_codes_set_and_clear_a_forward() {
    let mut h = Harness::new(&[]);
    h.register("101", 0);
    h.register("103", 0);
    let out = h.dial("101", "*72103");
    assert_eq!(to_caller(&out), [603]);
    let changes = std::mem::take(&mut h.changes);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].0, "101");
    assert_eq!(changes[0].1.always.as_deref(), Some("103"));
    let out = h.dial("100", "101");
    assert_eq!(sent(&out, "INVITE", &phone("103", 0)).len(), 1, "forwarded");
    let out = h.dial("101", "*73");
    assert_eq!(to_caller(&out), [603]);
    assert_eq!(std::mem::take(&mut h.changes)[0].1, CallHandling::default());
    let out = h.dial("100", "101");
    assert_eq!(
        sent(&out, "INVITE", &phone("101", 0)).len(),
        1,
        "not any more"
    );
    let out = h.dial("101", "*72");
    assert_eq!(to_caller(&out), [484]);
}

#[test]
fn sequential_search_rings_one_phone_after_the_other() {
    let mut h = Harness::new(&[(
        "101",
        forwards(|h| {
            h.sequential = true;
            h.ring_secs = 8;
        }),
    )]);
    h.register("101", 0);
    h.register("101", 1);
    let out = h.dial("100", "101");
    let first = sent(&out, "INVITE", &phone("101", 0));
    assert_eq!(first.len(), 1, "the first phone rings");
    assert!(sent(&out, "INVITE", &phone("101", 1)).is_empty(), "alone");
    h.reply(&first[0], 180, &phone("101", 0));
    let out = h.advance(Duration::from_secs(7));
    assert!(
        sent(&out, "INVITE", &phone("101", 1)).is_empty(),
        "its turn is not over"
    );
    let out = h.advance(Duration::from_secs(2));
    assert!(!sent(&out, "CANCEL", &phone("101", 0)).is_empty());
    assert!(
        !sent(&out, "INVITE", &phone("101", 1)).is_empty(),
        "then the second"
    );
    // Parallel (the default) rings both at once.
    let mut h = Harness::new(&[]);
    h.register("101", 0);
    h.register("101", 1);
    let out = h.dial("100", "101");
    assert_eq!(sent(&out, "INVITE", &phone("101", 0)).len(), 1);
    assert_eq!(sent(&out, "INVITE", &phone("101", 1)).len(), 1);
}

/// A route to `number` over SIP trunk `carrier` (at 127.0.0.9:5060), as the router makes it.
fn trunk_route(number: &str) -> Route {
    let uri = match pasarela::sip::uri::Uri::parse(&format!("sip:{number}@127.0.0.9:5060")) {
        Ok(pasarela::sip::uri::Uri::Sip(u)) => u,
        other => panic!("trunk uri: {other:?}"),
    };
    Route {
        dialled: number.into(),
        number: None,
        category: None,
        steps: Vec::new(),
        decision: Decision::Attempts(vec![Attempt {
            kind: AttemptKind::Trunk {
                name: "carrier".into(),
            },
            uri,
            hop: Hop {
                proto: Proto::Udp,
                addr: "127.0.0.9:5060".parse().expect("addr"),
            },
            auth: None,
        }]),
        elapsed: Duration::ZERO,
    }
}

#[test]
fn line_call_forwarded_always_rings_the_other_extension() {
    let mut h = Harness::new(&[("101", forwards(|h| h.always = Some("102".into())))]);
    h.register("101", 0);
    h.register("102", 0);
    let (id, out) = h.line_call("+4917012345");
    assert!(
        sent(&out, "INVITE", &phone("101", 0)).is_empty(),
        "101 must not ring"
    );
    let inv = sent(&out, "INVITE", &phone("102", 0));
    assert_eq!(inv.len(), 1, "102 rings instead: {out:?}");
    let from = inv[0].headers.from().expect("from").uri.to_string();
    assert!(
        from.contains("+4917012345"),
        "the PSTN caller is shown: {from}"
    );
    assert!(!h.line_hung_up(id));
    h.reply(&inv[0], 486, &phone("102", 0));
    assert!(h.line_hung_up(id), "102 busy: the line is hung up");
    assert_eq!(notes(&mut h), ["Forwarded by 101 (always) to 102"]);
    let ended = std::mem::take(&mut h.finished);
    assert_eq!(ended[0].callee, "101", "the record keeps the extension");
}

#[test]
fn line_call_forwarded_on_no_answer_to_a_number_leaves_on_a_trunk() {
    let mut h = Harness::new(&[(
        "101",
        forwards(|h| {
            h.no_answer = Some("+4930999888".into());
            h.no_answer_secs = 10;
        }),
    )]);
    h.register("101", 0);
    let (id, out) = h.line_call("+4917012345");
    let inv = sent(&out, "INVITE", &phone("101", 0));
    assert_eq!(inv.len(), 1, "101 rings first");
    h.reply(&inv[0], 180, &phone("101", 0));
    let out = h.advance(Duration::from_secs(9));
    assert!(h.routes.is_empty() && sent(&out, "CANCEL", &phone("101", 0)).is_empty());
    let out = h.advance(Duration::from_secs(2));
    assert!(
        !sent(&out, "CANCEL", &phone("101", 0)).is_empty(),
        "101 stops"
    );
    let req = std::mem::take(&mut h.routes);
    assert_eq!(req.len(), 1);
    assert_eq!(
        (req[0].from.as_str(), req[0].dialled.as_str()),
        ("101", "+4930999888"),
        "routed as a call of 101"
    );
    h.core.route_decided(
        h.now,
        h.unix,
        req[0].id,
        std::sync::Arc::new(trunk_route("+4930999888")),
    );
    let out = h.drain();
    let inv = sent(&out, "INVITE", "127.0.0.9:5060");
    assert_eq!(inv.len(), 1, "the forward leaves on the trunk: {out:?}");
    assert!(inv[0].uri.to_string().contains("+4930999888"));
    assert!(!h.line_hung_up(id), "the PSTN caller still waits");
}

#[test]
fn line_call_forwarded_always_to_a_barred_number_is_refused_and_recorded() {
    let mut h = Harness::new(&[("101", forwards(|h| h.always = Some("0900123".into())))]);
    h.register("101", 0);
    let (id, out) = h.line_call("+4917012345");
    assert!(
        out.iter().all(|(m, _)| !matches!(m, Message::Request(_))),
        "nothing rings: {out:?}"
    );
    assert!(!h.line_hung_up(id), "the call waits for the router");
    let req = std::mem::take(&mut h.routes);
    assert_eq!(
        (req[0].from.as_str(), req[0].dialled.as_str()),
        ("101", "0900123"),
        "routed with 101's permissions"
    );
    let route = Route {
        dialled: "0900123".into(),
        number: None,
        category: None,
        steps: Vec::new(),
        decision: Decision::Reject {
            status: 403,
            reason: "Calls to premium numbers are barred".into(),
        },
        elapsed: Duration::ZERO,
    };
    h.core
        .route_decided(h.now, h.unix, req[0].id, std::sync::Arc::new(route));
    h.drain();
    assert!(h.line_hung_up(id), "the line is hung up");
    assert_eq!(
        notes(&mut h),
        ["Forwarded by 101 (always) to 0900123: refused, Calls to premium numbers are barred"]
    );
    let ended = std::mem::take(&mut h.finished);
    assert_eq!(ended.len(), 1, "the refused call is recorded");
    assert_eq!(ended[0].caller, "+4917012345");
    h.advance(Duration::from_secs(200));
    assert_eq!(h.core.calls().len(), 0, "nothing is left");
}

#[test]
fn ring_group_member_forwarded_always_rings_the_destination_instead() {
    let mut h = Harness::new(&[
        ("101", forwards(|h| h.always = Some("103".into()))),
        ("102", forwards(|h| h.always = Some("101".into()))),
    ]);
    let group = pasarela::callctl::inbound::InboundRoute {
        number: String::new(),
        label: "group sales".into(),
        members: vec!["101".into(), "102".into()],
        member_timeout: None,
    };
    h.core
        .set_inbound(pasarela::callctl::inbound::InboundPolicy {
            groups: vec![("sales".into(), group)],
            ..Default::default()
        });
    h.core.set_lines(vec![LineInfo {
        name: "gsm1".into(),
        extensions: vec!["sales".into()],
    }]);
    for (n, i) in [("101", 0), ("102", 0), ("103", 0)] {
        h.register(n, i);
    }
    let (_, out) = h.line_call("+4917012345");
    assert!(
        sent(&out, "INVITE", &phone("101", 0)).is_empty(),
        "101 forwards"
    );
    assert!(
        sent(&out, "INVITE", &phone("102", 0)).is_empty(),
        "102 forwards"
    );
    assert_eq!(
        sent(&out, "INVITE", &phone("103", 0)).len(),
        1,
        "103 rings once for both members: {out:?}"
    );
}

#[test]
fn line_for_several_extensions_follows_their_forwards_to_extensions() {
    let mut h = Harness::new(&[("101", forwards(|h| h.always = Some("103".into())))]);
    h.core.set_lines(vec![LineInfo {
        name: "gsm1".into(),
        extensions: vec!["101".into(), "102".into(), "103".into()],
    }]);
    for (n, i) in [("101", 0), ("102", 0), ("103", 0)] {
        h.register(n, i);
    }
    let (_, out) = h.line_call("+4917012345");
    assert!(
        sent(&out, "INVITE", &phone("101", 0)).is_empty(),
        "101 forwards"
    );
    assert_eq!(sent(&out, "INVITE", &phone("102", 0)).len(), 1, "102 rings");
    assert_eq!(
        sent(&out, "INVITE", &phone("103", 0)).len(),
        1,
        "103 rings once: {out:?}"
    );
}
