//! Call control driven through the sans-IO SIP core, with no sockets and no sleeping: many
//! calls (answered and hung up, cancelled, unanswered) and then time advanced past every
//! timer. Afterwards nothing may be left: no call, no transaction, no call timer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pasarela::b2bua::CallSettings;
use pasarela::registrar::RegistrarSettings;
use pasarela::server::core::{CoreSettings, SipCore};
use pasarela::sip::auth::{self, Algorithm, Credentials};
use pasarela::sip::message::{Message, Request, Response};
use pasarela::sip::parse::{parse_message, Framing, Limits};
use pasarela::sip::peer::{Peer, Proto};
use pasarela::sip::transaction::Timers;
use pasarela::store::ExtensionRow;

const SERVER: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.1:5062";
const CALLEE: &str = "127.0.0.1:5064";

fn peer(remote: &str) -> Peer {
    Peer {
        proto: Proto::Udp,
        remote: remote.parse().expect("addr"),
        local: SERVER.parse().expect("addr"),
    }
}

struct Harness {
    core: SipCore,
    now: Instant,
    unix: u64,
}

fn ext(n: &str) -> ExtensionRow {
    ExtensionRow {
        number: n.into(),
        password: format!("secret{n}"),
        name: None,
        did: None,
        enabled: true,
    }
}

impl Harness {
    fn new(no_answer: Duration) -> Harness {
        let settings = CoreSettings {
            realm: "office.test".into(),
            server_name: "pasarela-test".into(),
            timers: Timers::default(),
            registrar: RegistrarSettings {
                min_expires: 60,
                max_expires: 3600,
                default_expires: 3600,
                max_contacts: 10,
            },
            nonce_ttl_secs: 300,
            digest_algorithms: vec![Algorithm::Md5],
            calls: CallSettings {
                domain: "office.test".into(),
                server_name: "pasarela-test".into(),
                no_answer,
                max_duration: Duration::from_secs(3600),
                media_ip: "127.0.0.1".parse().expect("ip"),
                t1: Duration::from_millis(500),
                t2: Duration::from_secs(4),
                failover_after: CallSettings::DEFAULT_FAILOVER_AFTER,
            },
        };
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
        while let Some(t) = self.core.poll_transmit() {
            let m = parse_message(t.data, Framing::Datagram, &Limits::default())
                .expect("core output parses");
            out.push((m, t.peer.remote));
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

fn responses(out: &[(Message, SocketAddr)]) -> Vec<&Response> {
    out.iter()
        .filter_map(|(m, _)| match m {
            Message::Response(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn requests<'a>(out: &'a [(Message, SocketAddr)], method: &str) -> Vec<&'a Request> {
    out.iter()
        .filter_map(|(m, _)| match m {
            Message::Request(r) if r.method.as_str() == method => Some(r),
            _ => None,
        })
        .collect()
}

fn authorization(resp: &Response, user: &str, method: &str, uri: &str) -> String {
    let challenge = resp.headers.get("WWW-Authenticate").expect("challenge");
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("nonce");
    let mut c = Credentials {
        scheme: "Digest".into(),
        username: user.into(),
        realm: "office.test".into(),
        nonce: nonce.into(),
        uri: uri.into(),
        response: String::new(),
        algorithm: Algorithm::Md5,
        cnonce: Some("abc".into()),
        opaque: None,
        qop: Some("auth".into()),
        nc: Some(1),
    };
    c.response = auth::expected_response(&c, method, &format!("secret{user}"));
    format!(
        "Digest username=\"{user}\", realm=\"office.test\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\", algorithm=MD5, cnonce=\"abc\", qop=auth, nc=00000001",
        c.response
    )
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
    let challenge = responses(&out)
        .into_iter()
        .find(|r| r.status == 401)
        .expect("401")
        .clone();
    let to_tag = challenge
        .headers
        .to()
        .and_then(|t| t.tag())
        .expect("tag")
        .to_owned();
    h.feed(
        &format!("ACK sip:101@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv{n}x1\nFrom: <sip:100@office.test>;tag=a{n}\nTo: <sip:101@office.test>;tag={to_tag}\nCall-ID: call{n}\nCSeq: 1 ACK\nContent-Length: 0\n\n"),
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
                let ok = responses(&out)
                    .into_iter()
                    .find(|r| r.status == 200)
                    .expect("200 to the caller")
                    .clone();
                assert!(String::from_utf8_lossy(&ok.body).contains("c=IN IP4 127.0.0.1"));
                let tag = ok
                    .headers
                    .to()
                    .and_then(|t| t.tag())
                    .expect("tag")
                    .to_owned();
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
        h.core.transaction_counts(),
        (0, 0),
        "SIP transactions left over"
    );
    assert!(
        h.core.calls().timer_count() < 1100,
        "call timers pile up: {}",
        h.core.calls().timer_count()
    );
}
