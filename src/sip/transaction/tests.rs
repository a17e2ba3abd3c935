//! Tests of the transaction layer: every timer path over UDP and TCP, retransmission absorption,
//! the generated ACK, CANCEL handling, RFC 2543 matching, rport/received, response destinations,
//! and odd input. Time is driven by hand; nothing sleeps.

use std::net::SocketAddr;

use super::*;
use crate::sip::header::Header;
use crate::sip::parse::{parse_message, Framing, Limits};
use crate::sip::peer::Proto;

fn parse(text: &str) -> Message {
    let text = text.trim_start().replace('\n', "\r\n");
    parse_message(Bytes::from(text), Framing::Datagram, &Limits::default())
        .expect("test message parses")
}

fn req(text: &str) -> Request {
    match parse(text) {
        Message::Request(r) => r,
        Message::Response(_) => panic!("not a request"),
    }
}

fn resp(text: &str) -> Response {
    match parse(text) {
        Message::Response(r) => r,
        Message::Request(_) => panic!("not a response"),
    }
}

fn sent(t: &Transmit) -> Message {
    parse_message(t.data.clone(), Framing::Datagram, &Limits::default())
        .expect("sent message parses")
}

fn sent_status(t: &Transmit) -> u16 {
    match sent(t) {
        Message::Response(r) => r.status,
        Message::Request(r) => panic!("expected a response, got {}", r.method),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

const LOCAL: &str = "192.0.2.1:5060";

fn peer(proto: Proto, remote: &str) -> Peer {
    Peer {
        proto,
        remote: addr(remote),
        local: addr(LOCAL),
    }
}

fn udp() -> Peer {
    peer(Proto::Udp, "192.0.2.10:5060")
}

fn tcp() -> Peer {
    peer(Proto::Tcp, "192.0.2.10:40123")
}

fn transport(p: Peer) -> &'static str {
    p.proto.via_token()
}

/// An INVITE from 192.0.2.10.
fn invite(p: Peer, branch: &str) -> String {
    format!(
        "INVITE sip:100@192.0.2.1 SIP/2.0
Via: SIP/2.0/{} 192.0.2.10:5060;branch={branch}
Max-Forwards: 70
From: <sip:200@example.test>;tag=a1
To: <sip:100@example.test>
Call-ID: call1@192.0.2.10
CSeq: 1 INVITE
Contact: <sip:200@192.0.2.10>

",
        transport(p)
    )
}

fn register(p: Peer, branch: &str) -> String {
    format!(
        "REGISTER sip:example.test SIP/2.0
Via: SIP/2.0/{} 192.0.2.10:5060;branch={branch}
Max-Forwards: 70
From: <sip:200@example.test>;tag=r1
To: <sip:200@example.test>
Call-ID: reg1@192.0.2.10
CSeq: 7 REGISTER
Contact: <sip:200@192.0.2.10>
Expires: 3600

",
        transport(p)
    )
}

/// A request with the same dialog identifiers as [`invite`] (ACK or CANCEL), with To tag `to`.
fn in_txn(method: &str, p: Peer, branch: &str, to: &str) -> String {
    format!(
        "{method} sip:100@192.0.2.1 SIP/2.0
Via: SIP/2.0/{} 192.0.2.10:5060;branch={branch}
Max-Forwards: 70
From: <sip:200@example.test>;tag=a1
To: <sip:100@example.test>{to}
Call-ID: call1@192.0.2.10
CSeq: 1 {method}

",
        transport(p)
    )
}

/// A response from the far end to a request we sent with `branch`.
fn response(status: u16, branch: &str, method: &str, to_tag: &str) -> Response {
    resp(&format!(
        "SIP/2.0 {status} Whatever
Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}
From: <sip:100@example.test>;tag=c1
To: <sip:300@example.test>{to_tag}
Call-ID: out1@192.0.2.1
CSeq: 5 {method}

"
    ))
}

/// An outgoing request with `branch`.
fn outgoing(method: &str, branch: &str) -> Request {
    req(&format!(
        "{method} sip:300@192.0.2.20 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}
Route: <sip:proxy.example.test;lr>
Max-Forwards: 70
From: <sip:100@example.test>;tag=c1
To: <sip:300@example.test>
Call-ID: out1@192.0.2.1
CSeq: 5 {method}
Contact: <sip:100@192.0.2.1>

"
    ))
}

fn far(proto: Proto) -> Peer {
    match proto {
        Proto::Udp => peer(Proto::Udp, "192.0.2.20:5060"),
        Proto::Tcp => peer(Proto::Tcp, "192.0.2.20:5060"),
        Proto::Tls => peer(Proto::Tls, "192.0.2.20:5061"),
    }
}

/// Drives a layer through time by hand.
struct H {
    l: TransactionLayer,
    t0: Instant,
    now: Instant,
}

impl H {
    fn new() -> H {
        let t0 = Instant::now();
        H {
            l: TransactionLayer::new(Timers::default()),
            t0,
            now: t0,
        }
    }

    fn ms(&self) -> u64 {
        (self.now - self.t0).as_millis() as u64
    }

    /// Advances to `ms` after the start, firing timers in order; returns what was sent, with
    /// the time (ms) it was sent at.
    fn run_to(&mut self, ms: u64) -> Vec<(u64, Transmit)> {
        let target = self.t0 + Duration::from_millis(ms);
        let mut out = Vec::new();
        while let Some(t) = self.l.poll_timeout() {
            if t > target {
                break;
            }
            self.now = t;
            self.l.handle_timeout(t);
            let at = self.ms();
            while let Some(tx) = self.l.poll_transmit() {
                out.push((at, tx));
            }
        }
        self.now = target;
        out
    }

    fn tx(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.l.poll_transmit()).collect()
    }

    fn ev(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.l.poll_event()).collect()
    }

    fn request(&mut self, text: &str, p: Peer) {
        self.l.handle_request(self.now, req(text), p);
    }

    fn response(&mut self, r: Response, p: Peer) {
        self.l.handle_response(self.now, r, p);
    }

    /// The key of the single new-request event pending.
    fn new_request(&mut self) -> (ServerKey, Request) {
        let ev = self.ev();
        match ev.as_slice() {
            [Event::Request { key, request, .. }] => (*key, request.clone()),
            other => panic!("expected one Request event, got {other:?}"),
        }
    }

    fn respond(&mut self, key: ServerKey, request: &Request, status: u16) {
        let r = Response::to_request(request, status, "X", Some("srv1"));
        self.l.respond(self.now, key, r);
    }

    /// Runs far into the future and checks nothing is left.
    fn finish(&mut self) {
        let end = self.ms() + 3_600_000;
        self.run_to(end);
        assert_eq!(self.l.counts(), (0, 0), "transactions leaked");
        assert_eq!(self.l.armed_timers(), 0, "timers leaked");
        assert_eq!(self.l.poll_timeout(), None);
    }
}

// ------------------------------------------------------------------------- INVITE server

#[test]
fn invite_server_sends_100_and_absorbs_retransmissions() {
    let mut h = H::new();
    h.request(&invite(udp(), "z9hG4bKinv1"), udp());
    let (key, request) = h.new_request();
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(sent_status(&tx[0]), 100);
    assert_eq!(tx[0].peer, udp());
    assert_eq!(h.l.server_peer(key), Some(udp()));
    assert_eq!(h.l.server_method(key), Some(&Method::Invite));
    assert_eq!(h.l.counts(), (1, 0));

    // Retransmission in Proceeding: the 100 again, no event.
    h.request(&invite(udp(), "z9hG4bKinv1"), udp());
    assert!(h.ev().is_empty());
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(sent_status(&tx[0]), 100);

    // After a 180, retransmissions get the 180.
    h.respond(key, &request, 180);
    assert_eq!(sent_status(&h.tx()[0]), 180);
    h.request(&invite(udp(), "z9hG4bKinv1"), udp());
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(sent_status(&tx[0]), 180);
    assert!(h.ev().is_empty());

    h.respond(key, &request, 486);
    assert_eq!(sent_status(&h.tx()[0]), 486);
    h.request(&in_txn("ACK", udp(), "z9hG4bKinv1", ";tag=srv1"), udp());
    assert!(h.ev().is_empty());
    h.finish();
}

#[test]
fn invite_server_timer_g_h_i_udp() {
    let mut h = H::new();
    h.request(&invite(udp(), "z9hG4bKg"), udp());
    let (key, request) = h.new_request();
    h.tx();
    h.respond(key, &request, 486);
    assert_eq!(h.tx().len(), 1);

    // Timer G: T1, doubling, capped at T2 (0.5, 1.5, 3.5, 7.5, 11.5 …).
    let sent = h.run_to(12_000);
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![500, 1_500, 3_500, 7_500, 11_500]);
    assert!(sent
        .iter()
        .all(|(_, t)| sent_status(t) == 486 && t.peer == udp()));

    // A retransmitted INVITE in Completed gets the final response again.
    h.request(&invite(udp(), "z9hG4bKg"), udp());
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(sent_status(&tx[0]), 486);

    // ACK: Confirmed, G stops, no event; ACK retransmissions absorbed; Timer I = T4.
    h.request(&in_txn("ACK", udp(), "z9hG4bKg", ";tag=srv1"), udp());
    assert!(h.ev().is_empty());
    h.request(&in_txn("ACK", udp(), "z9hG4bKg", ";tag=srv1"), udp());
    assert!(h.ev().is_empty());
    assert!(h.run_to(16_999).is_empty());
    assert_eq!(h.l.counts(), (1, 0));
    h.run_to(17_000);
    assert_eq!(h.l.counts(), (0, 0));
    h.finish();
}

#[test]
fn invite_server_timer_h_udp() {
    let mut h = H::new();
    h.request(&invite(udp(), "z9hG4bKh"), udp());
    let (key, request) = h.new_request();
    h.tx();
    h.respond(key, &request, 603);
    h.tx();
    let sent = h.run_to(31_999);
    // 0.5, 1.5, 3.5, 7.5, then every 4 s up to 31.5.
    assert_eq!(sent.len(), 10);
    assert!(h.ev().is_empty());
    h.run_to(32_000);
    assert_eq!(h.ev(), vec![Event::AckTimeout { key }]);
    assert_eq!(h.l.counts(), (0, 0));
    h.finish();
}

#[test]
fn invite_server_tcp_no_retransmission_and_zero_timer_i() {
    let mut h = H::new();
    h.request(&invite(tcp(), "z9hG4bKt"), tcp());
    let (key, request) = h.new_request();
    let tx = h.tx();
    assert_eq!(sent_status(&tx[0]), 100, "100 Trying over TCP too");
    assert_eq!(tx[0].peer, tcp());
    h.respond(key, &request, 486);
    assert_eq!(h.tx()[0].peer, tcp());
    assert!(h.run_to(20_000).is_empty(), "no Timer G over TCP");
    h.request(&in_txn("ACK", tcp(), "z9hG4bKt", ";tag=srv1"), tcp());
    assert!(h.ev().is_empty());
    assert_eq!(h.l.counts(), (0, 0), "Timer I is zero over TCP");
    h.finish();

    // Timer H still runs over TCP.
    let mut h = H::new();
    h.request(&invite(tcp(), "z9hG4bKt2"), tcp());
    let (key, request) = h.new_request();
    h.respond(key, &request, 486);
    h.tx();
    assert!(h.run_to(31_999).is_empty());
    h.run_to(32_000);
    assert_eq!(h.ev(), vec![Event::AckTimeout { key }]);
    h.finish();
}

#[test]
fn invite_server_accepted_timer_l() {
    for p in [udp(), tcp()] {
        let mut h = H::new();
        h.request(&invite(p, "z9hG4bKacc"), p);
        let (key, request) = h.new_request();
        h.tx();
        h.respond(key, &request, 200);
        assert_eq!(sent_status(&h.tx()[0]), 200);
        // Retransmitted INVITE absorbed (the TU retransmits the 2xx itself).
        h.request(&invite(p, "z9hG4bKacc"), p);
        assert!(h.tx().is_empty());
        assert!(h.ev().is_empty());
        // The TU's 2xx retransmission goes out; a non-2xx is refused.
        h.respond(key, &request, 200);
        assert_eq!(h.tx().len(), 1);
        h.respond(key, &request, 486);
        assert!(h.tx().is_empty());
        // An ACK matching the transaction goes to the TU (RFC 6026); so does a 2xx ACK with its own branch.
        h.request(&in_txn("ACK", p, "z9hG4bKacc", ";tag=srv1"), p);
        assert!(
            matches!(h.ev().as_slice(), [Event::Stray { request, .. }] if request.method == Method::Ack)
        );
        h.request(&in_txn("ACK", p, "z9hG4bKother", ";tag=srv1"), p);
        assert!(matches!(h.ev().as_slice(), [Event::Stray { .. }]));
        assert!(h.run_to(31_999).is_empty());
        assert_eq!(h.l.counts(), (1, 0));
        h.run_to(32_000);
        assert_eq!(h.l.counts(), (0, 0), "Timer L = 64*T1");
        assert!(h.ev().is_empty());
        h.finish();
    }
}

// ------------------------------------------------------------------------- non-INVITE server

#[test]
fn non_invite_server_udp_timer_j() {
    let mut h = H::new();
    h.request(&register(udp(), "z9hG4bKreg"), udp());
    let (key, request) = h.new_request();
    assert!(h.tx().is_empty(), "no 100 for non-INVITE");
    // Trying: retransmission produces nothing.
    h.request(&register(udp(), "z9hG4bKreg"), udp());
    assert!(h.tx().is_empty());
    assert!(h.ev().is_empty());
    // Proceeding: the provisional again.
    h.respond(key, &request, 100);
    assert_eq!(h.tx().len(), 1);
    h.request(&register(udp(), "z9hG4bKreg"), udp());
    assert_eq!(sent_status(&h.tx()[0]), 100);
    // Completed: the final again, further TU responses ignored.
    h.respond(key, &request, 200);
    assert_eq!(sent_status(&h.tx()[0]), 200);
    h.request(&register(udp(), "z9hG4bKreg"), udp());
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(sent_status(&tx[0]), 200);
    h.respond(key, &request, 500);
    assert!(h.tx().is_empty());
    assert!(h.run_to(31_999).is_empty());
    assert_eq!(h.l.counts(), (1, 0));
    h.run_to(32_000);
    assert_eq!(h.l.counts(), (0, 0), "Timer J = 64*T1");
    h.finish();
}

#[test]
fn non_invite_server_tcp_ends_at_once() {
    let mut h = H::new();
    h.request(&register(tcp(), "z9hG4bKregt"), tcp());
    let (key, request) = h.new_request();
    h.respond(key, &request, 200);
    let tx = h.tx();
    assert_eq!(tx[0].peer, tcp());
    assert_eq!(h.l.counts(), (0, 0), "Timer J is zero over TCP");
    // The same request again is a new transaction now.
    h.request(&register(tcp(), "z9hG4bKregt"), tcp());
    let (key, request) = h.new_request();
    h.respond(key, &request, 200);
    h.finish();
}

// ------------------------------------------------------------------------- INVITE client

#[test]
fn invite_client_timer_a_b_udp() {
    let mut h = H::new();
    let key =
        h.l.send_request(h.now, outgoing("INVITE", "z9hG4bKca"), far(Proto::Udp));
    assert_eq!(h.tx().len(), 1);
    let sent = h.run_to(31_999);
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![500, 1_500, 3_500, 7_500, 15_500, 31_500]);
    assert!(h.ev().is_empty());
    h.run_to(32_000);
    assert_eq!(h.ev(), vec![Event::Timeout { key }]);
    h.finish();
}

#[test]
fn invite_client_timer_b_tcp() {
    let mut h = H::new();
    let key =
        h.l.send_request(h.now, outgoing("INVITE", "z9hG4bKcb"), far(Proto::Tcp));
    assert_eq!(h.tx().len(), 1);
    assert!(h.run_to(31_999).is_empty(), "no Timer A over TCP");
    h.run_to(32_000);
    assert_eq!(h.ev(), vec![Event::Timeout { key }]);
    h.finish();
}

/// A request sent by reference leaves as the same bytes, and the ACK of a non-2xx response is
/// built the same from what the layer keeps of the INVITE (not the whole INVITE) as from the
/// INVITE itself; a non-INVITE by reference runs its transaction as by value.
#[test]
fn by_reference_the_same_bytes_and_the_same_ack() {
    let run = |by_ref: bool, method: &str, status: u16| {
        let mut h = H::new();
        let mut request = outgoing(method, "z9hG4bKref1");
        request
            .headers
            .push(Header::Other("Supported".into(), "replaces".into()));
        request.body = bytes::Bytes::from_static(b"v=0\r\n");
        let key = if by_ref {
            h.l.send_request_ref(h.now, &request, far(Proto::Udp))
        } else {
            h.l.send_request(h.now, request.clone(), far(Proto::Udp))
        };
        let sent_request = h.tx();
        h.run_to(100);
        h.response(
            response(status, "z9hG4bKref1", method, ";tag=far9"),
            far(Proto::Udp),
        );
        let events = h.ev();
        assert!(
            matches!(events.as_slice(), [Event::Response { key: k, response }] if *k == key && response.status == status),
            "{events:?}"
        );
        let after = h.tx();
        (
            sent_request.into_iter().map(|t| t.data).collect::<Vec<_>>(),
            after.into_iter().map(|t| t.data).collect::<Vec<_>>(),
            h.l.counts(),
        )
    };
    for (method, status) in [("INVITE", 486), ("INVITE", 200), ("BYE", 200), ("BYE", 481)] {
        let by_value = run(false, method, status);
        let by_ref = run(true, method, status);
        assert_eq!(by_ref, by_value, "{method} {status}");
        assert_eq!(by_ref.0.len(), 1, "{method}: sent once");
    }
    // The ACK of the 486 is there (and was compared above).
    let (_, ack, _) = run(true, "INVITE", 486);
    let Message::Request(ack) =
        parse_message(ack[0].clone(), Framing::Datagram, &Limits::default()).unwrap()
    else {
        panic!("ACK expected")
    };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.routes().count(), 1);
    assert_eq!(ack.headers.to().and_then(|t| t.tag()), Some("far9"));
}

#[test]
fn invite_client_ack_for_486_and_timer_d() {
    let mut h = H::new();
    let invite = outgoing("INVITE", "z9hG4bKc486");
    let key = h.l.send_request(h.now, invite, far(Proto::Udp));
    h.tx();
    h.run_to(100);
    h.response(
        response(180, "z9hG4bKc486", "INVITE", ";tag=far9"),
        far(Proto::Udp),
    );
    assert!(
        matches!(h.ev().as_slice(), [Event::Response { key: k, response }] if *k == key && response.status == 180)
    );
    assert!(
        h.run_to(10_000).is_empty(),
        "Proceeding: no retransmission, no Timer B"
    );
    h.response(
        response(486, "z9hG4bKc486", "INVITE", ";tag=far9"),
        far(Proto::Udp),
    );
    assert!(
        matches!(h.ev().as_slice(), [Event::Response { response, .. }] if response.status == 486)
    );
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].peer, far(Proto::Udp));
    let Message::Request(ack) = sent(&tx[0]) else {
        panic!("ACK expected")
    };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri.to_string(), "sip:300@192.0.2.20");
    let vias: Vec<_> = ack.headers.vias().collect();
    assert_eq!(vias.len(), 1);
    assert_eq!(vias[0].branch(), Some("z9hG4bKc486"));
    assert_eq!(ack.headers.to().and_then(|t| t.tag()), Some("far9"));
    assert_eq!(ack.headers.from().and_then(|t| t.tag()), Some("c1"));
    assert_eq!(ack.headers.call_id(), Some("out1@192.0.2.1"));
    let cseq = ack.headers.cseq().expect("CSeq");
    assert_eq!((cseq.seq, &cseq.method), (5, &Method::Ack));
    assert_eq!(ack.headers.routes().count(), 1);
    assert_eq!(ack.headers.max_forwards(), Some(70));
    assert_eq!(ack.headers.contacts().count(), 0);

    // A retransmitted 486: the ACK again, not passed up.
    h.response(
        response(486, "z9hG4bKc486", "INVITE", ";tag=far9"),
        far(Proto::Udp),
    );
    assert!(h.ev().is_empty());
    let again = h.tx();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].data, tx[0].data);
    // Timer D = 32 s.
    h.run_to(10_000 + 31_999);
    assert_eq!(h.l.counts(), (0, 1));
    h.run_to(10_000 + 32_000);
    assert_eq!(h.l.counts(), (0, 0));
    h.finish();
}

#[test]
fn invite_client_tcp_timer_d_zero() {
    let mut h = H::new();
    h.l.send_request(h.now, outgoing("INVITE", "z9hG4bKct"), far(Proto::Tcp));
    h.tx();
    h.response(
        response(404, "z9hG4bKct", "INVITE", ";tag=x"),
        far(Proto::Tcp),
    );
    assert_eq!(h.ev().len(), 1);
    assert_eq!(h.tx().len(), 1, "ACK");
    assert_eq!(h.l.counts(), (0, 0));
    // A late retransmission is a stray now.
    h.response(
        response(404, "z9hG4bKct", "INVITE", ";tag=x"),
        far(Proto::Tcp),
    );
    assert!(matches!(h.ev().as_slice(), [Event::StrayResponse { .. }]));
    h.finish();
}

#[test]
fn invite_client_accepted_timer_m() {
    let mut h = H::new();
    let key =
        h.l.send_request(h.now, outgoing("INVITE", "z9hG4bKcm"), far(Proto::Udp));
    h.tx();
    h.response(
        response(200, "z9hG4bKcm", "INVITE", ";tag=a"),
        far(Proto::Udp),
    );
    assert!(matches!(h.ev().as_slice(), [Event::Response { key: k, .. }] if *k == key));
    assert!(h.tx().is_empty(), "no ACK for a 2xx from the layer");
    // 2xx retransmissions and forked 2xx go to the TU; non-2xx are absorbed.
    h.response(
        response(200, "z9hG4bKcm", "INVITE", ";tag=a"),
        far(Proto::Udp),
    );
    h.response(
        response(200, "z9hG4bKcm", "INVITE", ";tag=b"),
        far(Proto::Udp),
    );
    h.response(
        response(486, "z9hG4bKcm", "INVITE", ";tag=c"),
        far(Proto::Udp),
    );
    assert_eq!(h.ev().len(), 2);
    assert!(h.run_to(31_999).is_empty(), "no retransmission in Accepted");
    assert_eq!(h.l.counts(), (0, 1));
    h.run_to(32_000);
    assert_eq!(h.l.counts(), (0, 0), "Timer M = 64*T1");
    h.response(
        response(200, "z9hG4bKcm", "INVITE", ";tag=a"),
        far(Proto::Udp),
    );
    assert!(
        matches!(h.ev().as_slice(), [Event::StrayResponse { response, peer }]
        if response.status == 200 && *peer == far(Proto::Udp))
    );
    h.finish();
}

// ------------------------------------------------------------------------- non-INVITE client

#[test]
fn non_invite_client_timer_e_f_udp() {
    let mut h = H::new();
    let key =
        h.l.send_request(h.now, outgoing("OPTIONS", "z9hG4bKe"), far(Proto::Udp));
    assert_eq!(h.tx().len(), 1);
    let sent = h.run_to(31_999);
    let times: Vec<u64> = sent.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        vec![500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500]
    );
    h.run_to(32_000);
    assert_eq!(h.ev(), vec![Event::Timeout { key }]);
    h.finish();
}

#[test]
fn non_invite_client_proceeding_and_timer_k() {
    let mut h = H::new();
    let key =
        h.l.send_request(h.now, outgoing("REGISTER", "z9hG4bKk"), far(Proto::Udp));
    h.tx();
    h.run_to(100);
    h.response(response(100, "z9hG4bKk", "REGISTER", ""), far(Proto::Udp));
    assert_eq!(h.ev().len(), 1);
    // E continues: next at 500, then every T2.
    let times: Vec<u64> = h.run_to(9_000).iter().map(|(t, _)| *t).collect();
    assert_eq!(times, vec![500, 4_500, 8_500]);
    h.response(
        response(200, "z9hG4bKk", "REGISTER", ";tag=z"),
        far(Proto::Udp),
    );
    assert!(
        matches!(h.ev().as_slice(), [Event::Response { key: k, response }] if *k == key && response.status == 200)
    );
    // Retransmissions of the final are absorbed; Timer K = T4.
    h.response(
        response(200, "z9hG4bKk", "REGISTER", ";tag=z"),
        far(Proto::Udp),
    );
    assert!(h.ev().is_empty());
    assert!(h.run_to(13_999).is_empty());
    assert_eq!(h.l.counts(), (0, 1));
    h.run_to(14_000);
    assert_eq!(h.l.counts(), (0, 0));
    h.finish();
}

#[test]
fn non_invite_client_tcp() {
    let mut h = H::new();
    let key =
        h.l.send_request(h.now, outgoing("OPTIONS", "z9hG4bKtk"), far(Proto::Tcp));
    h.tx();
    assert!(h.run_to(31_999).is_empty(), "no Timer E over TCP");
    h.run_to(32_000);
    assert_eq!(h.ev(), vec![Event::Timeout { key }], "Timer F over TCP");

    let key =
        h.l.send_request(h.now, outgoing("OPTIONS", "z9hG4bKtk2"), far(Proto::Tcp));
    h.response(
        response(200, "z9hG4bKtk2", "OPTIONS", ";tag=q"),
        far(Proto::Tcp),
    );
    assert!(matches!(h.ev().as_slice(), [Event::Response { key: k, .. }] if *k == key));
    assert_eq!(h.l.counts(), (0, 0), "Timer K is zero over TCP");
    h.finish();
}

#[test]
fn response_matching_needs_branch_and_method() {
    let mut h = H::new();
    h.l.send_request(h.now, outgoing("INVITE", "z9hG4bKmm"), far(Proto::Udp));
    // Same branch, other CSeq method: not ours.
    h.response(
        response(200, "z9hG4bKmm", "CANCEL", ";tag=a"),
        far(Proto::Udp),
    );
    assert!(matches!(h.ev().as_slice(), [Event::StrayResponse { .. }]));
    // Unknown branch.
    h.response(
        response(200, "z9hG4bKnope", "INVITE", ";tag=a"),
        far(Proto::Udp),
    );
    assert!(matches!(h.ev().as_slice(), [Event::StrayResponse { .. }]));
    h.response(
        response(486, "z9hG4bKmm", "INVITE", ";tag=a"),
        far(Proto::Udp),
    );
    assert_eq!(h.ev().len(), 1);
    h.finish();
}

// ------------------------------------------------------------------------- CANCEL

#[test]
fn cancel_matching_invite() {
    let mut h = H::new();
    h.request(&invite(udp(), "z9hG4bKcan"), udp());
    let (key, request) = h.new_request();
    h.tx();
    h.respond(key, &request, 180);
    h.tx();
    h.request(&in_txn("CANCEL", udp(), "z9hG4bKcan", ""), udp());
    let ev = h.ev();
    assert!(
        matches!(ev.as_slice(), [Event::Cancel { invite, request, peer }]
        if *invite == key && request.method == Method::Cancel && *peer == udp())
    );
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    let Message::Response(ok) = sent(&tx[0]) else {
        panic!()
    };
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.headers.cseq().map(|c| c.method.clone()),
        Some(Method::Cancel)
    );
    assert_eq!(
        ok.headers.to().and_then(|t| t.tag()),
        Some("srv1"),
        "same To tag as the INVITE's responses"
    );
    // A retransmitted CANCEL gets the 200 again, no second event.
    h.request(&in_txn("CANCEL", udp(), "z9hG4bKcan", ""), udp());
    assert!(h.ev().is_empty());
    assert_eq!(sent_status(&h.tx()[0]), 200);
    assert_eq!(h.l.counts(), (2, 0));
    h.respond(key, &request, 487);
    assert_eq!(sent_status(&h.tx()[0]), 487);
    h.request(&in_txn("ACK", udp(), "z9hG4bKcan", ";tag=srv1"), udp());
    assert!(h.ev().is_empty());
    h.finish();
}

#[test]
fn cancel_unmatched_gets_481_and_late_cancel_gets_200_only() {
    let mut h = H::new();
    h.request(&in_txn("CANCEL", udp(), "z9hG4bKnothing", ""), udp());
    assert!(h.ev().is_empty());
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    assert_eq!(sent_status(&tx[0]), 481);
    h.request(&in_txn("CANCEL", udp(), "z9hG4bKnothing", ""), udp());
    assert_eq!(sent_status(&h.tx()[0]), 481);

    // A CANCEL after the final response: 200, no Cancel event.
    h.request(&invite(udp(), "z9hG4bKlate"), udp());
    let (key, request) = h.new_request();
    h.respond(key, &request, 200);
    h.tx();
    h.request(&in_txn("CANCEL", udp(), "z9hG4bKlate", ""), udp());
    assert!(h.ev().is_empty());
    assert_eq!(sent_status(&h.tx()[0]), 200);

    // Over TCP the CANCEL transaction ends at once.
    h.request(&in_txn("CANCEL", tcp(), "z9hG4bKnothing2", ""), tcp());
    assert_eq!(sent_status(&h.tx()[0]), 481);
    h.finish();
}

#[test]
fn client_cancel_held_until_provisional() {
    let mut h = H::new();
    let inv = outgoing("INVITE", "z9hG4bKhold");
    let cancel = build_cancel(&inv);
    let ikey = h.l.send_request(h.now, inv, far(Proto::Udp));
    h.tx();
    let ckey = h.l.send_request(h.now, cancel, far(Proto::Udp));
    assert!(h.tx().is_empty(), "CANCEL held before any provisional");
    assert_eq!(h.l.counts(), (0, 2));
    h.run_to(100);
    h.response(
        response(180, "z9hG4bKhold", "INVITE", ";tag=f"),
        far(Proto::Udp),
    );
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    let Message::Request(c) = sent(&tx[0]) else {
        panic!()
    };
    assert_eq!(c.method, Method::Cancel);
    assert_eq!(
        c.headers.via().and_then(|v| v.branch()),
        Some("z9hG4bKhold")
    );
    assert_eq!(
        c.headers.cseq().map(|c| (c.seq, c.method.clone())),
        Some((5, Method::Cancel))
    );
    h.response(
        response(200, "z9hG4bKhold", "CANCEL", ";tag=f"),
        far(Proto::Udp),
    );
    h.response(
        response(487, "z9hG4bKhold", "INVITE", ";tag=f"),
        far(Proto::Udp),
    );
    let ev = h.ev();
    assert_eq!(ev.len(), 3);
    assert!(
        matches!(&ev[1], Event::Response { key, response } if *key == ckey && response.status == 200)
    );
    assert!(
        matches!(&ev[2], Event::Response { key, response } if *key == ikey && response.status == 487)
    );
    h.finish();

    // A held CANCEL whose INVITE ends first is dropped as a Timeout.
    let mut h = H::new();
    let inv = outgoing("INVITE", "z9hG4bKhold2");
    let cancel = build_cancel(&inv);
    h.l.send_request(h.now, inv, far(Proto::Udp));
    let ckey = h.l.send_request(h.now, cancel, far(Proto::Udp));
    h.tx();
    h.response(
        response(486, "z9hG4bKhold2", "INVITE", ";tag=f"),
        far(Proto::Udp),
    );
    let ev = h.ev();
    assert!(ev.contains(&Event::Timeout { key: ckey }));
    let tx = h.tx();
    assert_eq!(tx.len(), 1, "only the ACK");
    h.finish();
}

// ------------------------------------------------------------------------- RFC 2543 matching

#[test]
fn rfc2543_fallback_matching() {
    let mut h = H::new();
    let old_invite = invite(udp(), "oldbranch1");
    h.request(&old_invite, udp());
    let (key, request) = h.new_request();
    h.tx();
    // Retransmission: same Request-URI, tags, Call-ID, CSeq and Via.
    h.request(&old_invite, udp());
    assert!(h.ev().is_empty());
    assert_eq!(sent_status(&h.tx()[0]), 100);
    // Another CSeq is another transaction.
    h.request(
        &old_invite.replace("CSeq: 1 INVITE", "CSeq: 2 INVITE"),
        udp(),
    );
    let (key2, request2) = h.new_request();
    assert_ne!(key, key2);
    h.tx();
    // CANCEL matches by the same fields.
    h.request(&in_txn("CANCEL", udp(), "oldbranch1", ""), udp());
    assert!(matches!(h.ev().as_slice(), [Event::Cancel { invite, .. }] if *invite == key));
    assert_eq!(sent_status(&h.tx()[0]), 200);
    h.respond(key, &request, 487);
    h.tx();
    // ACK: To tag must be the one of our response.
    h.request(&in_txn("ACK", udp(), "oldbranch1", ";tag=wrong"), udp());
    assert!(matches!(h.ev().as_slice(), [Event::Stray { .. }]));
    h.request(&in_txn("ACK", udp(), "oldbranch1", ";tag=srv1"), udp());
    assert!(h.ev().is_empty(), "ACK matched the INVITE transaction");
    assert!(h.run_to(5_000).is_empty(), "no Timer G after the ACK");
    // No branch at all works the same way.
    let no_branch = old_invite
        .replace(";branch=oldbranch1", "")
        .replace("call1@", "call2@");
    h.request(&no_branch, udp());
    let (key3, request3) = h.new_request();
    h.request(&no_branch, udp());
    assert!(h.ev().is_empty());
    h.respond(key3, &request3, 200);
    h.respond(key2, &request2, 486);
    h.tx();
    h.finish();
}

// ------------------------------------------------------------------------- rport, received, destinations

fn top_via(r: &Request) -> &crate::sip::header::Via {
    r.headers.via().expect("Via")
}

#[test]
fn rport_and_received_are_filled() {
    let mut h = H::new();
    let src = peer(Proto::Udp, "203.0.113.7:40000");
    let text = register(udp(), "z9hG4bKnat")
        .replace("192.0.2.10:5060;branch", "10.0.0.5:5062;rport;branch");
    h.request(&text, src);
    let (key, request) = h.new_request();
    let via = top_via(&request);
    assert_eq!(via.received(), Some("203.0.113.7".parse().unwrap()));
    assert_eq!(via.rport(), Some(Some(40000)));
    h.respond(key, &request, 200);
    let tx = h.tx();
    assert_eq!(
        tx[0].peer.remote,
        addr("203.0.113.7:40000"),
        "rport: back to the source"
    );
    assert_eq!(tx[0].peer.local, addr(LOCAL));
    let Message::Response(r) = sent(&tx[0]) else {
        panic!()
    };
    assert_eq!(
        top_via(&request).to_string(),
        r.headers.via().unwrap().to_string()
    );

    // rport even when the address is the same: received is still added (RFC 3581 §4).
    let text = register(udp(), "z9hG4bKnat2").replace(";branch", ";rport;branch");
    h.request(&text, peer(Proto::Udp, "192.0.2.10:5060"));
    let (key, request) = h.new_request();
    assert_eq!(
        top_via(&request).received(),
        Some("192.0.2.10".parse().unwrap())
    );
    assert_eq!(top_via(&request).rport(), Some(Some(5060)));
    h.respond(key, &request, 200);
    h.finish();
}

#[test]
fn response_destination_rules() {
    // Host name in sent-by, no rport: received added; response to received at the sent-by port.
    let mut h = H::new();
    let text = register(udp(), "z9hG4bKd1")
        .replace("192.0.2.10:5060;branch", "phone.example.test:5070;branch");
    h.request(&text, peer(Proto::Udp, "198.51.100.3:33333"));
    let (key, request) = h.new_request();
    assert_eq!(
        top_via(&request).received(),
        Some("198.51.100.3".parse().unwrap())
    );
    assert_eq!(top_via(&request).rport(), None);
    h.respond(key, &request, 200);
    assert_eq!(h.tx()[0].peer.remote, addr("198.51.100.3:5070"));

    // Same IP as the source, no port: no received; default port 5060.
    let text = register(udp(), "z9hG4bKd2").replace("192.0.2.10:5060;branch", "192.0.2.10;branch");
    h.request(&text, peer(Proto::Udp, "192.0.2.10:41000"));
    let (key, request) = h.new_request();
    assert_eq!(top_via(&request).received(), None);
    h.respond(key, &request, 200);
    assert_eq!(h.tx()[0].peer.remote, addr("192.0.2.10:5060"));

    // Sent-by IP differs from the source: received, sent-by port.
    let text =
        register(udp(), "z9hG4bKd3").replace("192.0.2.10:5060;branch", "10.1.1.1:5080;branch");
    h.request(&text, peer(Proto::Udp, "192.0.2.99:6000"));
    let (key, request) = h.new_request();
    h.respond(key, &request, 200);
    assert_eq!(h.tx()[0].peer.remote, addr("192.0.2.99:5080"));

    // maddr wins over received.
    let text = register(udp(), "z9hG4bKd4").replace(";branch", ";maddr=239.255.255.1;branch");
    h.request(&text, peer(Proto::Udp, "192.0.2.99:6000"));
    let (key, request) = h.new_request();
    h.respond(key, &request, 200);
    assert_eq!(h.tx()[0].peer.remote, addr("239.255.255.1:5060"));

    // Reliable: the same connection, whatever the Via says.
    let text = register(tcp(), "z9hG4bKd5")
        .replace("192.0.2.10:5060;branch", "elsewhere.test:9999;rport;branch");
    let conn = peer(Proto::Tcp, "192.0.2.50:50000");
    h.request(&text, conn);
    let (key, request) = h.new_request();
    h.respond(key, &request, 200);
    assert_eq!(h.tx()[0].peer, conn);

    // IPv6 source.
    let v6 = Peer {
        proto: Proto::Udp,
        remote: addr("[2001:db8::7]:5090"),
        local: addr("[2001:db8::1]:5060"),
    };
    let text = register(udp(), "z9hG4bKd6")
        .replace("192.0.2.10:5060;branch", "[2001:db8::8];rport;branch");
    h.request(&text, v6);
    let (key, request) = h.new_request();
    assert_eq!(
        top_via(&request).received(),
        Some("2001:db8::7".parse().unwrap())
    );
    h.respond(key, &request, 200);
    let tx = h.tx();
    assert_eq!(tx[0].peer, v6);
    assert!(
        sent(&tx[0]).headers().via().is_some(),
        "the IPv6 received parameter serialises"
    );
    h.finish();
}

// ------------------------------------------------------------------------- odd input

#[test]
fn odd_input_never_panics() {
    let mut h = H::new();
    // A request built by hand without any header.
    let bare = Request::new(
        Method::Options,
        crate::sip::uri::Uri::parse("sip:x@y").unwrap(),
    );
    h.l.handle_request(h.now, bare.clone(), udp());
    // A request with a Via but nothing else.
    let mut via_only = bare.clone();
    via_only.headers.push(Header::Via(
        crate::sip::header::Via::parse("SIP/2.0/UDP 192.0.2.10;branch=oldstyle").unwrap(),
    ));
    h.l.handle_request(h.now, via_only.clone(), udp());
    let mut ack = via_only.clone();
    ack.method = Method::Ack;
    h.l.handle_request(h.now, ack, udp());
    let mut cancel = via_only.clone();
    cancel.method = Method::Cancel;
    h.l.handle_request(h.now, cancel, udp());
    assert_eq!(h.l.counts(), (0, 0));
    let ev = h.ev();
    // The ACK without Call-ID matches nothing: stray; the others are dropped.
    assert!(ev.iter().all(|e| matches!(e, Event::Stray { .. })));

    // Weird Vias: unknown transport, host names, an rport with a junk value.
    let weird = register(udp(), "z9hG4bKw").replace(
        "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKw",
        "SIP/2.0/SCTP weird-host.invalid;rport=junk;received=nonsense;branch=z9hG4bKw",
    );
    h.request(&weird, udp());
    let (key, request) = h.new_request();
    assert_eq!(top_via(&request).rport(), Some(Some(5060)));
    h.respond(key, &request, 200);
    assert_eq!(h.tx().len(), 1);

    // A response with no branch, one from nowhere, and responses without Via or CSeq.
    let r = resp(
        "SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.1
From: <sip:a@b>;tag=1
To: <sip:c@d>
Call-ID: x
CSeq: 1 OPTIONS

",
    );
    h.response(r.clone(), udp());
    let mut headerless = r.clone();
    headerless.headers = crate::sip::header::Headers::new();
    h.response(headerless.clone(), udp());
    assert_eq!(h.ev().len(), 2);
    assert!(h.ev().is_empty());

    // The TU misbehaving: unknown keys, bad status codes, requests without Via, ACKs.
    let ghost = ServerKey(9_999);
    h.l.respond(h.now, ghost, r.clone());
    assert_eq!(h.l.server_peer(ghost), None);
    h.request(&register(udp(), "z9hG4bKtu"), udp());
    let (key, _) = h.new_request();
    let mut bad = r.clone();
    bad.status = 42;
    h.l.respond(h.now, key, bad.clone());
    bad.status = 700;
    h.l.respond(h.now, key, bad);
    h.l.respond(h.now, key, headerless.clone());
    assert_eq!(h.tx().len(), 1, "only the headerless 200 went out");
    let k = h.l.send_request(h.now, bare.clone(), far(Proto::Udp));
    assert_eq!(h.ev(), vec![Event::Timeout { key: k }]);
    let mut no_branch = bare.clone();
    no_branch.headers.push(Header::Via(
        crate::sip::header::Via::parse("SIP/2.0/UDP 192.0.2.1:5060").unwrap(),
    ));
    h.l.send_request(h.now, no_branch, far(Proto::Udp));
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    let text = String::from_utf8_lossy(&tx[0].data).into_owned();
    assert!(
        text.contains(";branch=z9hG4bK"),
        "a branch was added: {text}"
    );
    let mut ack = bare;
    ack.method = Method::Ack;
    h.l.send_request(h.now, ack, far(Proto::Udp));
    assert_eq!(h.tx().len(), 1, "ACK sent once");
    h.l.send_stateless(far(Proto::Udp), &Message::Response(r));
    assert_eq!(h.tx().len(), 1);
    h.finish();
}

#[test]
fn transport_error_fails_pending_clients() {
    let mut h = H::new();
    let a =
        h.l.send_request(h.now, outgoing("INVITE", "z9hG4bKte1"), far(Proto::Tcp));
    let b =
        h.l.send_request(h.now, outgoing("OPTIONS", "z9hG4bKte2"), far(Proto::Tcp));
    let other =
        h.l.send_request(h.now, outgoing("OPTIONS", "z9hG4bKte3"), far(Proto::Udp));
    h.tx();
    h.l.transport_error(h.now, far(Proto::Tcp));
    assert_eq!(
        h.ev(),
        vec![Event::Timeout { key: a }, Event::Timeout { key: b }]
    );
    assert_eq!(h.l.counts(), (0, 1));
    h.response(
        response(200, "z9hG4bKte3", "OPTIONS", ";tag=1"),
        far(Proto::Udp),
    );
    assert!(matches!(h.ev().as_slice(), [Event::Response { key, .. }] if *key == other));
    h.finish();
}

#[test]
fn branches_are_unique_and_marked() {
    let mut l = TransactionLayer::new(Timers::default());
    let a = l.new_branch();
    let b = l.new_branch();
    assert!(a.starts_with(MAGIC_COOKIE) && b.starts_with(MAGIC_COOKIE));
    assert_ne!(a, b);
    assert!(crate::sip::header::is_token(&a));
}

#[test]
fn many_interleaved_transactions_leave_nothing_behind() {
    let mut h = H::new();
    for i in 0..50u64 {
        let p = if i % 2 == 0 { udp() } else { tcp() };
        h.request(&invite(p, &format!("z9hG4bKmany{i}")), p);
        let (key, request) = h.new_request();
        h.respond(key, &request, if i % 3 == 0 { 200 } else { 486 });
        if i % 5 != 0 {
            h.request(
                &in_txn("ACK", p, &format!("z9hG4bKmany{i}"), ";tag=srv1"),
                p,
            );
        }
        let branch = format!("z9hG4bKout{i}");
        h.l.send_request(
            h.now,
            outgoing(if i % 2 == 0 { "INVITE" } else { "MESSAGE" }, &branch),
            far(Proto::Udp),
        );
        if i % 4 == 0 {
            let method = if i % 2 == 0 { "INVITE" } else { "MESSAGE" };
            h.response(response(500, &branch, method, ";tag=m"), far(Proto::Udp));
        }
        let t = h.ms() + 700;
        h.run_to(t);
        h.ev();
    }
    h.tx();
    h.ev();
    h.finish();
}

#[test]
fn random_interleavings_never_panic_or_leak() {
    // A deterministic xorshift drives a random mix of network input, TU actions and time.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let methods = ["INVITE", "OPTIONS", "CANCEL", "ACK", "BYE"];
    let mut h = H::new();
    let mut open: Vec<(ServerKey, Request)> = Vec::new();
    for _ in 0..3_000 {
        let p = if rnd(2) == 0 { udp() } else { tcp() };
        let branch = if rnd(4) == 0 {
            format!("old{}", rnd(8))
        } else {
            format!("z9hG4bK{}", rnd(8))
        };
        let method = methods[rnd(methods.len() as u64) as usize];
        match rnd(6) {
            0 => h.request(&invite(p, &branch), p),
            1 => h.request(
                &in_txn(
                    method,
                    p,
                    &branch,
                    if rnd(2) == 0 { "" } else { ";tag=srv1" },
                ),
                p,
            ),
            2 => {
                let status = [100, 180, 200, 302, 486, 503][rnd(6) as usize];
                h.response(response(status, &branch, method, ";tag=x"), far(p.proto));
            }
            3 => {
                if method != "ACK" && method != "CANCEL" {
                    h.l.send_request(h.now, outgoing(method, &branch), far(p.proto));
                }
            }
            4 if !open.is_empty() => {
                let i = rnd(open.len() as u64) as usize;
                let (key, request) = open[i].clone();
                h.respond(key, &request, [180, 200, 404, 487][rnd(4) as usize]);
            }
            _ => {
                let t = h.ms() + rnd(3_000);
                h.run_to(t);
            }
        }
        for e in h.ev() {
            if let Event::Request { key, request, .. } = e {
                open.push((key, request));
            }
        }
        h.tx();
    }
    // The TU answers whatever is still open; then everything must wind down.
    for (key, request) in open {
        h.respond(key, &request, 500);
    }
    h.finish();
}

#[test]
fn invite_client_timer_c_in_proceeding() {
    // A peer that vanishes after a 180 does not leak the transaction.
    let mut h = H::new();
    let key =
        h.l.send_request(h.now, outgoing("INVITE", "z9hG4bKtc"), far(Proto::Udp));
    h.response(
        response(180, "z9hG4bKtc", "INVITE", ";tag=f"),
        far(Proto::Udp),
    );
    h.run_to(100_000);
    h.response(
        response(183, "z9hG4bKtc", "INVITE", ";tag=f"),
        far(Proto::Udp),
    );
    assert_eq!(h.ev().len(), 2);
    h.run_to(100_000 + 180_999);
    assert!(h.ev().is_empty(), "each provisional pushes Timer C back");
    h.run_to(100_000 + 181_000);
    assert_eq!(h.ev(), vec![Event::Timeout { key }]);
    h.finish();

    // After a CANCEL, the INVITE waits 64*T1 for its final response (§9.1).
    let mut h = H::new();
    let inv = outgoing("INVITE", "z9hG4bKtc2");
    let cancel = build_cancel(&inv);
    let key = h.l.send_request(h.now, inv, far(Proto::Udp));
    h.response(
        response(180, "z9hG4bKtc2", "INVITE", ";tag=f"),
        far(Proto::Udp),
    );
    h.run_to(5_000);
    let ckey = h.l.send_request(h.now, cancel, far(Proto::Udp));
    h.response(
        response(200, "z9hG4bKtc2", "CANCEL", ";tag=f"),
        far(Proto::Udp),
    );
    h.response(
        response(180, "z9hG4bKtc2", "INVITE", ";tag=f"),
        far(Proto::Udp),
    );
    let ev = h.ev();
    assert!(matches!(&ev[1], Event::Response { key, .. } if *key == ckey));
    h.run_to(5_000 + 31_999);
    assert!(h.ev().is_empty());
    h.run_to(5_000 + 32_000);
    assert_eq!(h.ev(), vec![Event::Timeout { key }]);
    h.finish();
}

#[test]
fn server_transactions_are_capped_with_503_and_retry_after() {
    let mut h = H::new();
    h.l.set_max_server_transactions(2);
    h.request(&register(udp(), "z9hG4bKcap1"), udp());
    let (k1, r1) = h.new_request();
    h.request(&register(udp(), "z9hG4bKcap2"), udp());
    let (k2, r2) = h.new_request();
    assert_eq!(h.l.counts(), (2, 0));
    // The third gets 503 + Retry-After, statelessly: no transaction, no event.
    h.request(&register(udp(), "z9hG4bKcap3"), udp());
    assert!(h.ev().is_empty());
    assert_eq!(h.l.counts(), (2, 0));
    let tx = h.tx();
    assert_eq!(tx.len(), 1);
    let Message::Response(r) = sent(&tx[0]) else {
        panic!("a response")
    };
    assert_eq!(r.status, 503);
    assert_eq!(r.headers.get("Retry-After"), Some("5"));
    // A retransmission of an existing transaction is still absorbed, not refused.
    h.request(&register(udp(), "z9hG4bKcap1"), udp());
    assert!(h.tx().is_empty());
    // Once they end, new requests are taken again and the maps give memory back.
    h.respond(k1, &r1, 200);
    h.respond(k2, &r2, 200);
    h.tx();
    h.run_to(32_000);
    assert_eq!(h.l.counts(), (0, 0));
    h.l.shrink();
    h.request(&register(udp(), "z9hG4bKcap4"), udp());
    assert_eq!(h.ev().len(), 1);
}

// ------------------------------------------------------------------------- stateless answers

#[test]
fn a_stateless_answer_keeps_no_transaction_and_a_retransmission_is_new() {
    let mut h = H::new();
    for (text, trying) in [
        (register(udp(), "z9hG4bKreg1"), 0),
        (invite(udp(), "z9hG4bKinv1"), 1),
    ] {
        h.request(&text, udp());
        let (key, request) = h.new_request();
        assert_eq!(h.tx().len(), trying, "100 Trying for the INVITE only");
        let r = Response::to_request(&request, 401, "Unauthorized", Some("chal"));
        h.l.respond_stateless(h.now, key, r);
        let tx = h.tx();
        assert_eq!(tx.len(), 1);
        assert_eq!(sent_status(&tx[0]), 401);
        assert_eq!(h.l.counts(), (0, 0), "the challenged transaction was kept");
        assert_eq!(h.l.armed_timers(), 0, "a timer was left armed");
        // The retransmission reaches the TU again (which answers it the same way).
        h.request(&text, udp());
        let (again, _) = h.new_request();
        assert_ne!(again, key);
        h.tx();
        let r = Response::to_request(&request, 401, "Unauthorized", Some("chal"));
        h.l.respond_stateless(h.now, again, r);
        assert_eq!(sent_status(&h.tx()[0]), 401);
    }
    // The ACK of the INVITE's 401 finds no transaction: a stray for the TU to ignore.
    h.request(&in_txn("ACK", udp(), "z9hG4bKinv1", ";tag=chal"), udp());
    assert!(matches!(h.ev().as_slice(), [Event::Stray { .. }]));
    h.finish();
}

/// The 100 Trying waits for the TU's turn: an INVITE challenged (statelessly) before the
/// layer's datagrams are taken gets the 401 alone, so that the caller keeps retransmitting
/// until a challenge arrives; one answered with a provisional gets that alone; one left for
/// later (routing) gets the 100, and a retransmission gets it again.
#[test]
fn the_100_trying_goes_only_to_an_invite_the_tu_did_not_answer_in_its_turn() {
    let mut h = H::new();
    h.request(&invite(udp(), "z9hG4bKchal"), udp());
    let (key, request) = h.new_request();
    let r = Response::to_request(&request, 401, "Unauthorized", Some("chal"));
    h.l.respond_stateless(h.now, key, r);
    let tx = h.tx();
    assert_eq!(tx.iter().map(sent_status).collect::<Vec<_>>(), [401]);

    h.request(&invite(udp(), "z9hG4bKring"), udp());
    let (key, request) = h.new_request();
    h.l.respond(
        h.now,
        key,
        Response::to_request(&request, 180, "Ringing", Some("r")),
    );
    assert_eq!(h.tx().iter().map(sent_status).collect::<Vec<_>>(), [180]);

    let text = invite(udp(), "z9hG4bKlater");
    h.request(&text, udp());
    let (key, request) = h.new_request();
    assert_eq!(h.tx().iter().map(sent_status).collect::<Vec<_>>(), [100]);
    h.request(&text, udp());
    assert_eq!(h.tx().iter().map(sent_status).collect::<Vec<_>>(), [100]);
    h.l.respond(
        h.now,
        key,
        Response::to_request(&request, 486, "Busy Here", Some("b")),
    );
    assert_eq!(h.tx().iter().map(sent_status).collect::<Vec<_>>(), [486]);
}

#[test]
fn hex_tokens_are_written_as_format_would() {
    for (n, width) in [
        (0u64, 1),
        (0, 16),
        (1, 1),
        (0xf, 1),
        (0x10, 1),
        (0xdead_beef, 16),
        (u64::MAX, 16),
        (u64::MAX, 1),
        (0x0123_4567_89ab_cdef, 20),
    ] {
        let mut s = String::from("x");
        push_hex(&mut s, n, width);
        assert_eq!(s, format!("x{n:0width$x}"), "{n:#x} width {width}");
    }
}

#[test]
fn branches_are_unique_and_carry_the_prefix() {
    let mut l = TransactionLayer::new(Timers::default());
    let prefix = l.branch_prefix();
    let a = l.new_branch();
    let b = l.new_branch();
    assert!(a.starts_with(&prefix) && b.starts_with(&prefix), "{a} {b}");
    assert_ne!(a, b);
}
