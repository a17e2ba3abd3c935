//! Transfer through the sans-IO SIP core, in virtual time: extension 100 calls 101, 101 sends
//! REFER naming 102 (blind transfer). The far party (100) must end up talking to 102 without
//! any request of its own, the transferor hear the progress as NOTIFY message/sipfrag and be
//! released; a barred target or a target that does not answer leaves the original call up,
//! with the failure told to the transferor (and a barred one recorded).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use bytes::Bytes;
use pasarela::b2bua::{CallSummary, LegId, LineCommand, LineEvent};
use pasarela::callctl::{LineInfo, Output, Refused, RouteRequest, SipCore};
use pasarela::routing::router::{Attempt, AttemptKind, Decision, Hop, Route};
use pasarela::sip::message::{Message, Request};
use pasarela::sip::parse::{parse_message, Framing, Limits};
use pasarela::sip::peer::Proto;
use pasarela::sip::uri::Uri;

mod core_vt;
use core_vt::{authorization, ext, ok_for, peer, response, responses, to_tag, SERVER};

const CALLER: &str = "127.0.0.1:5062";
const TRANSFEROR: &str = "127.0.0.1:5064";
const TARGET: &str = "127.0.0.1:5066";

type Out = Vec<(Message, SocketAddr)>;

struct Harness {
    core: SipCore,
    now: Instant,
    unix: u64,
    /// Records the core handed out (its one drain).
    finished: Vec<CallSummary>,
    refused: Vec<Refused>,
    /// Route requests the core made (numbers go to the router when routing is on).
    routes: Vec<RouteRequest>,
    /// Commands for the PSTN lines.
    lines: Vec<LineCommand>,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_routing(false)
    }

    /// With routing on: numbers go to the router; our UDP socket is [`SERVER`]; PSTN line
    /// gsm1 exists.
    fn routed() -> Harness {
        let mut h = Harness::with_routing(true);
        h.core
            .set_local_addrs(vec![(Proto::Udp, SERVER.parse().expect("addr"))]);
        h.core.set_lines(vec![LineInfo {
            name: "gsm1".into(),
            extensions: vec!["101".into()],
        }]);
        h
    }

    fn with_routing(routing: bool) -> Harness {
        let settings = core_vt::settings(Duration::from_secs(30), routing);
        let mut core = SipCore::new(
            settings,
            vec![ext("100"), ext("101"), ext("102")],
            [7; 32],
            None,
        );
        core.set_numbering(pasarela::routing::numbering::NumberingPlan::from_config(
            &pasarela::config::NumberingConfig {
                premium_prefixes: Some(vec!["900".into()]),
                ..Default::default()
            },
        ));
        let mut h = Harness {
            core,
            now: Instant::now(),
            unix: 1_800_000_000,
            finished: Vec::new(),
            refused: Vec::new(),
            routes: Vec::new(),
            lines: Vec::new(),
        };
        h.register("101", TRANSFEROR);
        h.register("102", TARGET);
        h
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
                Output::Finished(s) => self.finished.push(s),
                Output::Refused(r) => self.refused.push(r),
                Output::Route(r) => self.routes.push(r),
                Output::Line(c) => self.lines.push(c),
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

    fn register(&mut self, n: &str, at: &str) {
        let reg = |auth: &str, cseq: u32| {
            format!(
                "REGISTER sip:office.test SIP/2.0\nVia: SIP/2.0/UDP {at};branch=z9hG4bKreg{n}{cseq}\nFrom: <sip:{n}@office.test>;tag=r\nTo: <sip:{n}@office.test>\nCall-ID: reg{n}\nCSeq: {cseq} REGISTER\nContact: <sip:{n}@{at}>\n{auth}Content-Length: 0\n\n"
            )
        };
        let out = self.feed(&reg("", 1), at);
        let challenge = responses(&out)[0].clone();
        let auth = authorization(&challenge, n, "REGISTER", "sip:office.test");
        let out = self.feed(&reg(&format!("Authorization: {auth}\n"), 2), at);
        assert_eq!(responses(&out)[0].status, 200);
    }
}

fn sent<'a>(out: &'a Out, method: &str, to: &str) -> Vec<&'a Request> {
    let to: SocketAddr = to.parse().expect("addr");
    out.iter()
        .filter_map(|(m, dest)| match m {
            Message::Request(r) if r.method.as_str() == method && *dest == to => Some(r),
            _ => None,
        })
        .collect()
}

const SDP: &str = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n";

fn invite(cseq: u32, auth: &str) -> String {
    let body = SDP.replace('\n', "\r\n");
    format!(
        "INVITE sip:101@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv{cseq}\nFrom: <sip:100@office.test>;tag=a1\nTo: <sip:101@office.test>\nCall-ID: call1\nCSeq: {cseq} INVITE\nContact: <sip:100@{CALLER}>\nMax-Forwards: 70\n{auth}Content-Type: application/sdp\nContent-Length: {}\n\n{SDP}",
        body.len()
    )
}

/// A UAS's response to pasarela's `inv` (with SDP on port `rtp` when given).
fn answer(inv: &Request, status: u16, tag: &str, contact: &str, rtp: Option<u16>) -> String {
    let h = &inv.headers;
    let body = rtp.map_or(String::new(), |p| SDP.replace("40000", &p.to_string()));
    let ct = if rtp.is_some() {
        "Content-Type: application/sdp\n"
    } else {
        ""
    };
    format!(
        "SIP/2.0 {status} X\nVia: {}\nFrom: {}\nTo: {};tag={tag}\nCall-ID: {}\nCSeq: {}\nContact: <{contact}>\n{ct}Content-Length: {}\n\n{body}",
        h.via().expect("via"),
        h.from().expect("from"),
        h.to().expect("to"),
        h.call_id().expect("call-id"),
        h.cseq().expect("cseq"),
        body.replace('\n', "\r\n").len(),
    )
}

/// A request the phone at `at` sends in the dialog pasarela's INVITE `inv` made with it
/// (its tag `tag`).
fn in_dialog(inv: &Request, tag: &str, at: &str, method: &str, cseq: u32, extra: &str) -> String {
    let h = &inv.headers;
    let contact = h
        .contacts()
        .find_map(|c| c.addr().map(|a| a.uri.to_string()))
        .expect("contact");
    format!(
        "{method} {contact} SIP/2.0\nVia: SIP/2.0/UDP {at};branch=z9hG4bK{method}{cseq}{tag}\nFrom: {};tag={tag}\nTo: {}\nCall-ID: {}\nCSeq: {cseq} {method}\n{extra}Content-Length: 0\n\n",
        h.to().expect("to"),
        h.from().expect("from"),
        h.call_id().expect("cid"),
    )
}

fn sipfrag(r: &Request) -> String {
    assert_eq!(r.headers.get("Event"), Some("refer"));
    String::from_utf8_lossy(&r.body).trim().to_owned()
}

/// 100 calls 101, 101 answers: returns pasarela's INVITE to 101 and the caller's dialog tag.
fn call_answered(h: &mut Harness) -> (Request, String) {
    let out = h.feed(&invite(1, ""), CALLER);
    let challenge = response(&out, 401, "401");
    let ch_tag = to_tag(&challenge);
    h.feed(
        &format!("ACK sip:101@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv1\nFrom: <sip:100@office.test>;tag=a1\nTo: <sip:101@office.test>;tag={ch_tag}\nCall-ID: call1\nCSeq: 1 ACK\nContent-Length: 0\n\n"),
        CALLER,
    );
    let auth = authorization(&challenge, "100", "INVITE", "sip:101@office.test");
    let out = h.feed(&invite(2, &format!("Authorization: {auth}\n")), CALLER);
    let inv = sent(&out, "INVITE", TRANSFEROR)[0].clone();
    let out = h.feed(
        &answer(
            &inv,
            200,
            "t101",
            &format!("sip:101@{TRANSFEROR}"),
            Some(42000),
        ),
        TRANSFEROR,
    );
    let ok = response(&out, 200, "200 to the caller");
    let a_tag = to_tag(&ok);
    h.feed(
        &format!("ACK sip:101@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKack2\nFrom: <sip:100@office.test>;tag=a1\nTo: <sip:101@office.test>;tag={a_tag}\nCall-ID: call1\nCSeq: 2 ACK\nContent-Length: 0\n\n"),
        CALLER,
    );
    (inv, a_tag)
}

/// 101 sends REFER to `target`: the 202 and what else pasarela sent.
fn refer(h: &mut Harness, inv: &Request, cseq: u32, target: &str) -> Out {
    let out = h.feed(
        &in_dialog(
            inv,
            "t101",
            TRANSFEROR,
            "REFER",
            cseq,
            &format!("Refer-To: <{target}>\nReferred-By: <sip:101@office.test>\n"),
        ),
        TRANSFEROR,
    );
    assert_eq!(
        responses(&out).iter().map(|r| r.status).collect::<Vec<_>>(),
        [202],
        "REFER accepted"
    );
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert!(!notify.is_empty(), "NOTIFY 100 Trying first");
    assert_eq!(sipfrag(notify[0]), "SIP/2.0 100 Trying");
    assert!(notify[0]
        .headers
        .get("Subscription-State")
        .is_some_and(|s| s.starts_with("active")));
    out
}

#[test]
fn blind_transfer_rebridges_the_far_party() {
    let mut h = Harness::new();
    let (inv, a_tag) = call_answered(&mut h);
    let out = refer(&mut h, &inv, 2, "sip:102@office.test");
    let to_target = sent(&out, "INVITE", TARGET);
    assert_eq!(to_target.len(), 1, "the target rings");
    let t_inv = to_target[0].clone();
    assert_eq!(
        t_inv.headers.to().expect("to").uri.to_string(),
        "sip:102@office.test"
    );
    assert!(
        t_inv
            .headers
            .from()
            .expect("from")
            .uri
            .to_string()
            .starts_with("sip:100@"),
        "the target sees the far party calling"
    );
    assert!(
        sent(&out, "INVITE", CALLER).is_empty(),
        "the far party sees nothing"
    );
    assert_eq!(
        t_inv.headers.get("Referred-By"),
        Some("<sip:101@office.test>"),
        "the target learns who transferred (RFC 3892)"
    );
    let out = h.feed(
        &answer(&t_inv, 180, "t102", &format!("sip:102@{TARGET}"), None),
        TARGET,
    );
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert_eq!(notify.len(), 1, "the transferor hears the target ring");
    assert_eq!(sipfrag(notify[0]), "SIP/2.0 180 Ringing");
    assert!(notify[0]
        .headers
        .get("Subscription-State")
        .is_some_and(|s| s.starts_with("active")));
    h.feed(&ok_for(notify[0]), TRANSFEROR);
    let out = h.feed(
        &answer(&t_inv, 180, "t102", &format!("sip:102@{TARGET}"), None),
        TARGET,
    );
    assert!(
        sent(&out, "NOTIFY", TRANSFEROR).is_empty(),
        "told once, not for every 18x"
    );
    let out = h.feed(
        &answer(
            &t_inv,
            200,
            "t102",
            &format!("sip:102@{TARGET}"),
            Some(44000),
        ),
        TARGET,
    );
    assert_eq!(sent(&out, "ACK", TARGET).len(), 1, "the target's 200 ACKed");
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert_eq!(notify.len(), 1);
    assert_eq!(sipfrag(notify[0]), "SIP/2.0 200 OK");
    assert!(notify[0]
        .headers
        .get("Subscription-State")
        .is_some_and(|s| s.starts_with("terminated")));
    let bye = sent(&out, "BYE", TRANSFEROR);
    assert_eq!(bye.len(), 1, "the transferor's leg ends");
    assert!(
        out.iter()
            .all(|(_, d)| *d != CALLER.parse::<SocketAddr>().expect("addr")),
        "the far party is not disturbed (same codec, relay ports kept)"
    );
    h.feed(&ok_for(notify[0]), TRANSFEROR);
    h.feed(&ok_for(bye[0]), TRANSFEROR);
    // The far party and the target talk; the far party hangs up: the BYE reaches 102.
    let out = h.feed(
        &format!("BYE sip:101@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKbye3\nFrom: <sip:100@office.test>;tag=a1\nTo: <sip:101@office.test>;tag={a_tag}\nCall-ID: call1\nCSeq: 3 BYE\nContent-Length: 0\n\n"),
        CALLER,
    );
    let bye = sent(&out, "BYE", TARGET);
    assert_eq!(bye.len(), 1, "the BYE goes to the transfer target");
    h.feed(&ok_for(bye[0]), TARGET);
    let finished = std::mem::take(&mut h.finished);
    assert_eq!(finished.len(), 1);
    let s = &finished[0];
    assert_eq!(s.disposition, "answered");
    assert_eq!(
        s.answered_by.as_ref().map(|(_, u)| u.as_str()),
        Some(format!("sip:102@{TARGET}").as_str()),
        "the record shows who answered last"
    );
    assert!(s
        .attempts
        .iter()
        .any(|a| a.label == "transfer 102 (by 101)" && a.status == 200));
    h.advance(Duration::from_secs(70));
    assert_eq!(h.core.calls().len(), 0);
    assert_eq!(h.core.calls().pending_transactions(), 0);
    assert_eq!(h.core.transaction_counts(), (0, 0));
}

#[test]
fn barred_transfer_target_fails_and_is_recorded() {
    let mut h = Harness::new();
    let (inv, _) = call_answered(&mut h);
    let out = refer(&mut h, &inv, 2, "sip:0900123456@office.test");
    assert!(sent(&out, "INVITE", TARGET).is_empty());
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert_eq!(notify.len(), 2, "100 Trying, then the refusal: {out:?}");
    assert!(
        sipfrag(notify[1]).starts_with("SIP/2.0 403 "),
        "{}",
        sipfrag(notify[1])
    );
    assert!(notify[1]
        .headers
        .get("Subscription-State")
        .is_some_and(|s| s.starts_with("terminated")));
    let refused = std::mem::take(&mut h.refused);
    assert_eq!(refused.len(), 1);
    assert_eq!(
        refused[0].caller, "101",
        "recorded as the transferor's attempt"
    );
    assert_eq!(refused[0].dialled, "0900123456");
    assert!(refused[0]
        .reason
        .as_deref()
        .is_some_and(|r| r.contains("Transfer")));
    // The original call is still up: 101 can go on talking and hang up normally.
    assert_eq!(h.core.calls().len(), 1);
    let out = h.feed(
        &in_dialog(&inv, "t101", TRANSFEROR, "BYE", 3, ""),
        TRANSFEROR,
    );
    assert_eq!(
        sent(&out, "BYE", CALLER).len(),
        1,
        "the BYE reaches the far party"
    );
}

#[test]
fn unanswered_transfer_keeps_the_call() {
    let mut h = Harness::new();
    let (inv, _) = call_answered(&mut h);
    let out = refer(&mut h, &inv, 2, "sip:102@office.test");
    let t_inv = sent(&out, "INVITE", TARGET)[0].clone();
    h.feed(
        &answer(&t_inv, 180, "t102", &format!("sip:102@{TARGET}"), None),
        TARGET,
    );
    let out = h.advance(Duration::from_secs(31));
    assert!(
        !sent(&out, "CANCEL", TARGET).is_empty(),
        "the target is cancelled"
    );
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert!(
        notify.iter().any(|n| sipfrag(n).starts_with("SIP/2.0 480")),
        "{out:?}"
    );
    assert_eq!(h.core.calls().len(), 1, "the original call stays up");
    // A second transfer, to a busy target: 486 reported, still up.
    let out = refer(&mut h, &inv, 3, "sip:102@office.test");
    let t_inv = sent(&out, "INVITE", TARGET)[0].clone();
    let out = h.feed(
        &answer(&t_inv, 486, "t102b", &format!("sip:102@{TARGET}"), None),
        TARGET,
    );
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert_eq!(notify.len(), 1);
    assert!(sipfrag(notify[0]).starts_with("SIP/2.0 486"));
    assert_eq!(h.core.calls().len(), 1);
}

#[test]
fn transferor_hanging_up_early_leaves_the_far_party_waiting() {
    let mut h = Harness::new();
    let (inv, _) = call_answered(&mut h);
    let out = refer(&mut h, &inv, 2, "sip:102@office.test");
    let t_inv = sent(&out, "INVITE", TARGET)[0].clone();
    // 101 hangs up at once (as many phones do after the 202).
    let out = h.feed(
        &in_dialog(&inv, "t101", TRANSFEROR, "BYE", 3, ""),
        TRANSFEROR,
    );
    assert!(responses(&out).iter().any(|r| r.status == 200));
    assert!(sent(&out, "BYE", CALLER).is_empty(), "the far party stays");
    let out = h.feed(
        &answer(
            &t_inv,
            200,
            "t102",
            &format!("sip:102@{TARGET}"),
            Some(44000),
        ),
        TARGET,
    );
    assert_eq!(sent(&out, "ACK", TARGET).len(), 1);
    assert!(
        sent(&out, "BYE", TRANSFEROR).is_empty(),
        "the transferor is gone already"
    );
    assert_eq!(h.core.calls().len(), 1);
    // 102 hangs up: the far party gets the BYE.
    let out = h.feed(&in_dialog(&t_inv, "t102", TARGET, "BYE", 1, ""), TARGET);
    assert_eq!(sent(&out, "BYE", CALLER).len(), 1);
}

/// 100 (the caller) sends REFER on its own dialog: the 202 and what else pasarela sent.
fn refer_by_caller(h: &mut Harness, a_tag: &str, cseq: u32, target: &str) -> Out {
    let out = h.feed(
        &format!("REFER sip:101@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKref{cseq}\nFrom: <sip:100@office.test>;tag=a1\nTo: <sip:101@office.test>;tag={a_tag}\nCall-ID: call1\nCSeq: {cseq} REFER\nRefer-To: <{target}>\nContent-Length: 0\n\n"),
        CALLER,
    );
    assert_eq!(
        responses(&out).iter().map(|r| r.status).collect::<Vec<_>>(),
        [202],
        "REFER accepted: {out:?}"
    );
    let notify = sent(&out, "NOTIFY", CALLER);
    assert!(!notify.is_empty(), "NOTIFY 100 Trying to the caller");
    assert_eq!(sipfrag(notify[0]), "SIP/2.0 100 Trying");
    out
}

#[test]
fn the_caller_transfers_the_callee() {
    let mut h = Harness::new();
    let (inv, a_tag) = call_answered(&mut h);
    let out = refer_by_caller(&mut h, &a_tag, 3, "sip:102@office.test");
    let t_inv = sent(&out, "INVITE", TARGET)[0].clone();
    assert!(
        t_inv
            .headers
            .from()
            .expect("from")
            .uri
            .to_string()
            .starts_with("sip:101@"),
        "the target sees the party that stays: {t_inv:?}"
    );
    assert_eq!(
        t_inv.headers.get("Referred-By"),
        Some("<sip:100@office.test>")
    );
    assert!(
        sent(&out, "INVITE", TRANSFEROR).is_empty(),
        "101 sees nothing"
    );
    let out = h.feed(
        &answer(&t_inv, 180, "t102", &format!("sip:102@{TARGET}"), None),
        TARGET,
    );
    let notify = sent(&out, "NOTIFY", CALLER);
    assert_eq!(sipfrag(notify[0]), "SIP/2.0 180 Ringing");
    let out = h.feed(
        &answer(
            &t_inv,
            200,
            "t102",
            &format!("sip:102@{TARGET}"),
            Some(44000),
        ),
        TARGET,
    );
    assert_eq!(sent(&out, "ACK", TARGET).len(), 1);
    let notify = sent(&out, "NOTIFY", CALLER);
    assert_eq!(sipfrag(notify.last().expect("notify")), "SIP/2.0 200 OK");
    let bye = sent(&out, "BYE", CALLER);
    assert_eq!(bye.len(), 1, "the caller (transferor) is released");
    assert!(
        out.iter()
            .all(|(_, d)| *d != TRANSFEROR.parse::<SocketAddr>().expect("addr")),
        "101 is not disturbed: {out:?}"
    );
    h.feed(&ok_for(bye[0]), CALLER);
    // 102 hangs up: 101 gets the BYE in its own dialog.
    let out = h.feed(&in_dialog(&t_inv, "t102", TARGET, "BYE", 1, ""), TARGET);
    assert!(responses(&out).iter().any(|r| r.status == 200));
    let bye = sent(&out, "BYE", TRANSFEROR);
    assert_eq!(bye.len(), 1, "{out:?}");
    assert_eq!(bye[0].headers.call_id(), inv.headers.call_id());
    h.feed(&ok_for(bye[0]), TRANSFEROR);
    let finished = std::mem::take(&mut h.finished);
    assert_eq!(finished.len(), 1);
    let t = &finished[0].transfers;
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].by, "100");
    assert_eq!(t[0].target, "102");
    assert_eq!(
        t[0].by_caller.as_ref().map(|(far, _)| far.as_str()),
        Some("101"),
        "101 stays: the caller of the part after"
    );
    h.advance(Duration::from_secs(70));
    assert_eq!(h.core.calls().len(), 0);
    assert_eq!(h.core.transaction_counts(), (0, 0));
}

#[test]
fn a_caller_hanging_up_after_its_refer_leaves_the_callee_waiting() {
    let mut h = Harness::new();
    let (_, a_tag) = call_answered(&mut h);
    let out = refer_by_caller(&mut h, &a_tag, 3, "sip:102@office.test");
    let t_inv = sent(&out, "INVITE", TARGET)[0].clone();
    let out = h.feed(
        &format!("BYE sip:101@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKbye4\nFrom: <sip:100@office.test>;tag=a1\nTo: <sip:101@office.test>;tag={a_tag}\nCall-ID: call1\nCSeq: 4 BYE\nContent-Length: 0\n\n"),
        CALLER,
    );
    assert!(responses(&out).iter().any(|r| r.status == 200));
    assert!(
        sent(&out, "BYE", TRANSFEROR).is_empty(),
        "101 waits for the target"
    );
    // The target is busy: nobody to go back to, 101 is hung up.
    let out = h.feed(
        &answer(&t_inv, 486, "t102", &format!("sip:102@{TARGET}"), None),
        TARGET,
    );
    assert_eq!(sent(&out, "BYE", TRANSFEROR).len(), 1, "{out:?}");
    assert_eq!(h.core.calls().len(), 0);
}

#[test]
fn a_caller_may_not_transfer_to_a_barred_number() {
    let mut h = Harness::new();
    let (_, a_tag) = call_answered(&mut h);
    let out = refer_by_caller(&mut h, &a_tag, 3, "sip:0900123456@office.test");
    let notify = sent(&out, "NOTIFY", CALLER);
    assert!(
        sipfrag(notify.last().expect("notify")).starts_with("SIP/2.0 403 "),
        "{out:?}"
    );
    assert!(sent(&out, "INVITE", TARGET).is_empty());
    let refused = std::mem::take(&mut h.refused);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].caller, "100");
    assert_eq!(h.core.calls().len(), 1, "the call stays up");
}

/// 101 calls 102 (the consultation call), 102 answers: pasarela's INVITE to 102 and the tag
/// pasarela gave 101's dialog.
fn consultation(h: &mut Harness) -> (Request, String) {
    let inv = |cseq: u32, auth: &str| {
        let body = SDP.replace('\n', "\r\n");
        format!(
            "INVITE sip:102@office.test SIP/2.0\nVia: SIP/2.0/UDP {TRANSFEROR};branch=z9hG4bKc{cseq}\nFrom: <sip:101@office.test>;tag=b1\nTo: <sip:102@office.test>\nCall-ID: call2\nCSeq: {cseq} INVITE\nContact: <sip:101@{TRANSFEROR}>\nMax-Forwards: 70\n{auth}Content-Type: application/sdp\nContent-Length: {}\n\n{SDP}",
            body.len()
        )
    };
    let out = h.feed(&inv(1, ""), TRANSFEROR);
    let challenge = response(&out, 401, "401");
    let ch_tag = to_tag(&challenge);
    h.feed(
        &format!("ACK sip:102@office.test SIP/2.0\nVia: SIP/2.0/UDP {TRANSFEROR};branch=z9hG4bKc1\nFrom: <sip:101@office.test>;tag=b1\nTo: <sip:102@office.test>;tag={ch_tag}\nCall-ID: call2\nCSeq: 1 ACK\nContent-Length: 0\n\n"),
        TRANSFEROR,
    );
    let auth = authorization(&challenge, "101", "INVITE", "sip:102@office.test");
    let out = h.feed(&inv(2, &format!("Authorization: {auth}\n")), TRANSFEROR);
    let t_inv = sent(&out, "INVITE", TARGET)[0].clone();
    let out = h.feed(
        &answer(
            &t_inv,
            200,
            "t102",
            &format!("sip:102@{TARGET}"),
            Some(44000),
        ),
        TARGET,
    );
    let ok = response(&out, 200, "200 to 101");
    let tag = to_tag(&ok);
    h.feed(
        &format!("ACK sip:102@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {TRANSFEROR};branch=z9hG4bKcack\nFrom: <sip:101@office.test>;tag=b1\nTo: <sip:102@office.test>;tag={tag}\nCall-ID: call2\nCSeq: 2 ACK\nContent-Length: 0\n\n"),
        TRANSFEROR,
    );
    (t_inv, tag)
}

#[test]
fn attended_transfer_bridges_the_two_far_parties() {
    let mut h = Harness::new();
    let (inv, a_tag) = call_answered(&mut h);
    let (t_inv, y_tag) = consultation(&mut h);
    assert_eq!(h.core.calls().len(), 2);
    let target = format!("sip:102@office.test?Replaces=call2%3Bto-tag%3D{y_tag}%3Bfrom-tag%3Db1");
    let out = refer(&mut h, &inv, 2, &target);
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert_eq!(sipfrag(notify.last().expect("notify")), "SIP/2.0 200 OK");
    let byes = sent(&out, "BYE", TRANSFEROR);
    assert_eq!(byes.len(), 2, "both of the transferor's legs end: {out:?}");
    assert!(byes.iter().any(|b| b.headers.call_id() == Some("call2")));
    assert!(sent(&out, "BYE", TARGET).is_empty(), "102 stays");
    assert!(sent(&out, "BYE", CALLER).is_empty(), "100 stays");
    let reinvite = sent(&out, "INVITE", TARGET);
    assert_eq!(
        reinvite.len(),
        1,
        "102 is moved onto the transferred call's relay"
    );
    let re = reinvite[0].clone();
    assert_eq!(
        re.headers.call_id(),
        t_inv.headers.call_id(),
        "in 102's own dialog"
    );
    assert!(String::from_utf8_lossy(&re.body).contains("m=audio"));
    for b in byes {
        h.feed(&ok_for(b), TRANSFEROR);
    }
    for n in notify {
        h.feed(&ok_for(n), TRANSFEROR);
    }
    // 102 answers the re-INVITE: pasarela ACKs.
    let body = SDP.replace("40000", "44002").replace('\n', "\r\n");
    let out = h.feed(
        &format!(
            "SIP/2.0 200 OK\nVia: {}\nFrom: {}\nTo: {}\nCall-ID: {}\nCSeq: {}\nContact: <sip:102@{TARGET}>\nContent-Type: application/sdp\nContent-Length: {}\n\n{}",
            re.headers.via().expect("via"),
            re.headers.from().expect("from"),
            re.headers.to().expect("to"),
            re.headers.call_id().expect("cid"),
            re.headers.cseq().expect("cseq"),
            body.len(),
            body.replace("\r\n", "\n"),
        ),
        TARGET,
    );
    assert_eq!(
        sent(&out, "ACK", TARGET).len(),
        1,
        "the re-INVITE's 200 ACKed"
    );
    assert_eq!(h.core.calls().len(), 1, "the consultation call is over");
    // 100 hangs up: 102 gets the BYE, in its dialog.
    let out = h.feed(
        &format!("BYE sip:101@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKbye3\nFrom: <sip:100@office.test>;tag=a1\nTo: <sip:101@office.test>;tag={a_tag}\nCall-ID: call1\nCSeq: 3 BYE\nContent-Length: 0\n\n"),
        CALLER,
    );
    let bye = sent(&out, "BYE", TARGET);
    assert_eq!(bye.len(), 1);
    assert_eq!(bye[0].headers.call_id(), t_inv.headers.call_id());
    h.feed(&ok_for(bye[0]), TARGET);
    let finished = std::mem::take(&mut h.finished);
    assert_eq!(
        finished.len(),
        2,
        "the consultation call and the transferred call"
    );
    let x = finished
        .iter()
        .find(|s| s.caller == "100")
        .expect("100's call");
    assert!(x
        .attempts
        .iter()
        .any(|a| a.label == "transfer 102 (by 101)"));
    h.advance(Duration::from_secs(70));
    assert_eq!(h.core.calls().pending_transactions(), 0);
    assert_eq!(h.core.transaction_counts(), (0, 0));
}

#[test]
fn attended_transfer_to_an_unknown_dialog_keeps_the_call() {
    let mut h = Harness::new();
    let (inv, _) = call_answered(&mut h);
    let out = refer(
        &mut h,
        &inv,
        2,
        "sip:102@office.test?Replaces=nosuch%3Bto-tag%3D1%3Bfrom-tag%3D2",
    );
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert!(sipfrag(notify.last().expect("notify")).starts_with("SIP/2.0 481"));
    assert!(sent(&out, "BYE", TRANSFEROR).is_empty());
    assert_eq!(h.core.calls().len(), 1);
}

/// A trunk's route attempt for `number`, sent to `addr`.
fn trunk_attempt(name: &str, number: &str, addr: &str) -> Attempt {
    let uri = match Uri::parse(&format!("sip:{number}@{addr}")) {
        Ok(Uri::Sip(u)) => u,
        other => panic!("trunk uri: {other:?}"),
    };
    Attempt {
        kind: AttemptKind::Trunk { name: name.into() },
        uri,
        hop: Hop {
            proto: Proto::Udp,
            addr: addr.parse().expect("addr"),
        },
        auth: None,
    }
}

/// The router's answer to the one route request made since the last: `decision`.
fn route(h: &mut Harness, number: &str, decision: Decision) -> Out {
    let req = std::mem::take(&mut h.routes);
    assert_eq!(req.len(), 1, "one route request: {req:?}");
    assert_eq!(req[0].from, "101", "routed as a call of the transferor");
    assert_eq!(req[0].dialled, number);
    let route = Route {
        dialled: number.into(),
        number: None,
        category: None,
        steps: Vec::new(),
        decision,
        elapsed: Duration::ZERO,
    };
    h.core
        .route_decided(h.now, h.unix, req[0].id, Arc::new(route));
    h.drain()
}

const TRUNK: &str = "127.0.0.1:5080";
const TRUNK2: &str = "127.0.0.1:5082";
const NUMBER: &str = "+493012345678";

#[test]
fn transfer_to_a_number_is_routed_as_the_transferors_call() {
    let mut h = Harness::routed();
    let (inv, a_tag) = call_answered(&mut h);
    let out = refer(&mut h, &inv, 2, &format!("sip:{NUMBER}@office.test"));
    assert!(
        sent(&out, "INVITE", TRUNK).is_empty(),
        "nothing rings before the router decided"
    );
    // The first trunk fails: the transfer moves on to the second, like a call of 101's.
    let out = route(
        &mut h,
        NUMBER,
        Decision::Attempts(vec![
            trunk_attempt("carrier", NUMBER, TRUNK),
            trunk_attempt("backup", NUMBER, TRUNK2),
        ]),
    );
    let t_inv = sent(&out, "INVITE", TRUNK)[0].clone();
    assert!(t_inv.uri.to_string().starts_with(&format!("sip:{NUMBER}@")));
    assert!(sent(&out, "INVITE", CALLER).is_empty());
    let out = h.feed(
        &answer(&t_inv, 503, "tr1", "sip:x@127.0.0.1:5080", None),
        TRUNK,
    );
    assert!(
        sent(&out, "NOTIFY", TRANSFEROR).is_empty(),
        "no failure told while a stage is left: {out:?}"
    );
    let t_inv = sent(&out, "INVITE", TRUNK2)[0].clone();
    h.feed(
        &answer(&t_inv, 180, "tr2", "sip:x@127.0.0.1:5082", None),
        TRUNK2,
    );
    let out = h.feed(
        &answer(&t_inv, 200, "tr2", "sip:x@127.0.0.1:5082", Some(46000)),
        TRUNK2,
    );
    assert_eq!(sent(&out, "ACK", TRUNK2).len(), 1);
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert_eq!(sipfrag(notify.last().expect("notify")), "SIP/2.0 200 OK");
    let bye = sent(&out, "BYE", TRANSFEROR);
    assert_eq!(bye.len(), 1, "the transferor's leg ends");
    h.feed(&ok_for(bye[0]), TRANSFEROR);
    for n in notify {
        h.feed(&ok_for(n), TRANSFEROR);
    }
    // The far party hangs up: the BYE goes to the trunk.
    let out = h.feed(
        &format!("BYE sip:101@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKbye3\nFrom: <sip:100@office.test>;tag=a1\nTo: <sip:101@office.test>;tag={a_tag}\nCall-ID: call1\nCSeq: 3 BYE\nContent-Length: 0\n\n"),
        CALLER,
    );
    let bye = sent(&out, "BYE", TRUNK2);
    assert_eq!(bye.len(), 1);
    h.feed(&ok_for(bye[0]), TRUNK2);
    let finished = std::mem::take(&mut h.finished);
    assert_eq!(finished.len(), 1);
    assert!(finished[0]
        .attempts
        .iter()
        .any(|a| a.label == "trunk backup" && a.status == 200));
    h.advance(Duration::from_secs(70));
    assert_eq!(h.core.calls().len(), 0);
    assert_eq!(h.core.transfers_routing(), 0);
    assert_eq!(h.core.transaction_counts(), (0, 0));
}

#[test]
fn transfer_refused_by_the_router_is_told_and_recorded() {
    let mut h = Harness::routed();
    let (inv, _) = call_answered(&mut h);
    refer(&mut h, &inv, 2, &format!("sip:{NUMBER}@office.test"));
    let out = route(
        &mut h,
        NUMBER,
        Decision::Reject {
            status: 403,
            reason: "Calls to international numbers are barred".into(),
        },
    );
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert_eq!(
        sipfrag(notify.last().expect("notify")),
        "SIP/2.0 403 Calls to international numbers are barred"
    );
    let refused = std::mem::take(&mut h.refused);
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].caller, "101");
    assert_eq!(refused[0].dialled, NUMBER);
    assert!(refused[0].route.is_some(), "the record explains the route");
    assert_eq!(h.core.calls().len(), 1, "the call stays up");
}

#[test]
fn transfer_to_a_number_on_a_pstn_line() {
    let mut h = Harness::routed();
    let (inv, _) = call_answered(&mut h);
    refer(&mut h, &inv, 2, &format!("sip:{NUMBER}@office.test"));
    let uri = match Uri::parse(&format!("sip:{NUMBER}@127.0.0.1:9;line=gsm1")) {
        Ok(Uri::Sip(u)) => u,
        other => panic!("{other:?}"),
    };
    let out = route(
        &mut h,
        NUMBER,
        Decision::Attempts(vec![Attempt {
            kind: AttemptKind::Trunk {
                name: "gsm1".into(),
            },
            uri,
            hop: Hop {
                proto: Proto::Udp,
                addr: pasarela::pstn::routes::LINE_HOP,
            },
            auth: None,
        }]),
    );
    assert!(sent(&out, "NOTIFY", TRANSFEROR).is_empty());
    let leg = match h.lines.as_slice() {
        [LineCommand::Dial {
            leg, line, number, ..
        }] => {
            assert_eq!((line.as_str(), number.as_str()), ("gsm1", NUMBER));
            *leg
        }
        other => panic!("one dial on gsm1: {other:?}"),
    };
    h.core.line_event(
        h.now,
        h.unix,
        leg,
        LineEvent::Audio("127.0.0.1:47000".parse().expect("addr")),
    );
    h.core.line_event(h.now, h.unix, leg, LineEvent::Ringing);
    let out = h.drain();
    assert!(out.iter().all(|(m, _)| !matches!(m, Message::Response(_))));
    h.core.line_event(h.now, h.unix, leg, LineEvent::Answered);
    let out = h.drain();
    let notify = sent(&out, "NOTIFY", TRANSFEROR);
    assert_eq!(sipfrag(notify.last().expect("notify")), "SIP/2.0 200 OK");
    assert_eq!(sent(&out, "BYE", TRANSFEROR).len(), 1);
    // The line hangs up: the far party gets the BYE.
    h.core.line_event(
        h.now,
        h.unix,
        leg,
        LineEvent::Ended {
            status: 200,
            q850: Some(16),
        },
    );
    let out = h.drain();
    assert_eq!(sent(&out, "BYE", CALLER).len(), 1);
    let _: LegId = leg;
}
