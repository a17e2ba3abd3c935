//! The subscription service in virtual time: NOTIFY at once, on changes, on expiry; refresh,
//! unsubscribe, limits, and a failed NOTIFY ending the subscription.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;
use crate::sip::message::{Message, Response};
use crate::sip::parse::{parse_message, Framing, Limits};
use crate::sip::peer::Proto;
use crate::sip::transaction::{Event as TxEvent, Timers};
use crate::sip::uri::Uri;

fn peer(port: u16) -> Peer {
    Peer {
        proto: Proto::Udp,
        remote: format!("127.0.0.1:{port}").parse().unwrap(),
        local: "127.0.0.1:5060".parse().unwrap(),
    }
}

fn subscribe_text(
    call_id: &str,
    event: &str,
    expires: u32,
    to_tag: Option<&str>,
    cseq: u32,
) -> Request {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let text = format!(
        "SUBSCRIBE sip:101@office.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{call_id}{cseq}
From: <sip:100@office.test>;tag=w1
To: <sip:101@office.test>{to_tag}
Call-ID: {call_id}
CSeq: {cseq} SUBSCRIBE
Contact: <sip:100@127.0.0.1:5062>
Event: {event}
Expires: {expires}
Content-Length: 0

"
    );
    let Message::Request(r) = parse_message(
        bytes::Bytes::from(text.replace('\n', "\r\n")),
        Framing::Datagram,
        &Limits::default(),
    )
    .unwrap() else {
        panic!()
    };
    r
}

fn settings() -> SubscriptionsConfig {
    SubscriptionsConfig {
        max_per_phone: 2,
        ..Default::default()
    }
}

struct Harness {
    subs: Subscriptions,
    layer: TransactionLayer,
    now: Instant,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            subs: Subscriptions::new(settings(), "office.test", 42),
            layer: TransactionLayer::new(Timers::default()),
            now: Instant::now(),
        }
    }

    fn subscribe(&mut self, req: &Request, port: u16) -> Result<Accepted, Refusal> {
        self.subs.subscribe(
            self.now,
            NewSubscription {
                request: req,
                peer: peer(port),
                watcher: "100",
                resource: "101",
                contact: NameAddr::new(Uri::parse("sip:101@127.0.0.1:5060").unwrap()),
                via_host: Host::from_ip("127.0.0.1".parse().unwrap()),
            },
        )
    }

    /// The NOTIFYs sent since the last call, as text.
    fn sent(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(t) = self.layer.poll_transmit() {
            out.push(String::from_utf8(t.data.to_vec()).unwrap());
        }
        out
    }

    /// Answers the NOTIFY `text` with `status` and feeds the service what the layer reports.
    fn answer(&mut self, text: &str, status: u16) {
        let Message::Request(n) = parse_message(
            bytes::Bytes::from(text.to_owned()),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap() else {
            panic!()
        };
        let r = Response::to_request(&n, status, "X", None);
        self.layer.handle_response(self.now, r, peer(5062));
        while let Some(ev) = self.layer.poll_event() {
            if let TxEvent::Response { key, response } = ev {
                assert!(self.subs.response(key, response.status));
            }
        }
    }
}

fn ringing() -> ExtensionState {
    ExtensionState {
        registered: true,
        dialogs: vec![DialogView {
            id: "call1-in".into(),
            call_id: "c1@pasarela".into(),
            local_tag: Some("p".into()),
            remote_tag: Some("b".into()),
            direction: Direction::Recipient,
            state: DialogState::Early,
            remote: "102".into(),
            remote_name: None,
        }],
    }
}

fn states(s: ExtensionState) -> HashMap<String, ExtensionState> {
    HashMap::from([("101".to_owned(), s)])
}

#[test]
fn notify_at_once_on_change_and_on_expiry() {
    let mut h = Harness::new();
    let req = subscribe_text("s1", "dialog", 120, None, 1);
    let a = h.subscribe(&req, 5062).unwrap();
    assert_eq!(a.expires, 120);
    let idle = ExtensionState {
        registered: true,
        dialogs: vec![],
    };
    h.subs.notify_now(h.now, &mut h.layer, a.id, &idle);
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with("NOTIFY sip:100@127.0.0.1:5062 SIP/2.0"));
    assert!(sent[0].contains("Subscription-State: active;expires=120\r\n"));
    assert!(sent[0].contains("version=\"0\""), "{}", sent[0]);
    assert!(sent[0].contains(&format!(";tag={}", a.tag)));
    // No change: nothing; a change while the first NOTIFY is unanswered waits for its answer.
    h.subs.update(h.now, &mut h.layer, &states(idle.clone()));
    h.subs.update(h.now, &mut h.layer, &states(ringing()));
    assert!(h.sent().is_empty());
    let first = sent[0].clone();
    h.answer(&first, 200);
    h.subs.update(h.now, &mut h.layer, &states(ringing()));
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains("<state>early</state>"), "{}", sent[0]);
    assert!(sent[0].contains("version=\"1\""));
    assert!(sent[0].contains("CSeq: 2 NOTIFY"));
    h.answer(&sent[0].clone(), 200);
    // The call ends: it is shown once as terminated.
    h.subs.update(h.now, &mut h.layer, &states(idle.clone()));
    let sent = h.sent();
    assert!(sent[0].contains("<state>terminated</state>"), "{}", sent[0]);
    h.answer(&sent[0].clone(), 200);
    // Expiry: a last NOTIFY, and the subscription is gone.
    assert_eq!(
        h.subs.poll_timeout(),
        Some(h.now + Duration::from_secs(120))
    );
    h.now += Duration::from_secs(121);
    h.subs
        .handle_timeout(h.now, &mut h.layer, &states(idle.clone()));
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].contains("Subscription-State: terminated;reason=timeout\r\n"));
    assert!(
        sent[0].contains("<dialog-info"),
        "the last NOTIFY still has the state"
    );
    assert!(h.subs.is_empty());
}

#[test]
fn refresh_unsubscribe_and_refusals() {
    let mut h = Harness::new();
    let req = subscribe_text("s2", "presence", 600, None, 1);
    let a = h.subscribe(&req, 5062).unwrap();
    h.subs
        .notify_now(h.now, &mut h.layer, a.id, &ExtensionState::default());
    let sent = h.sent();
    assert!(sent[0].contains("<basic>closed</basic>"), "{}", sent[0]);
    assert!(sent[0].contains("Content-Type: application/pidf+xml"));
    h.answer(&sent[0].clone(), 200);
    // A refresh in the dialog.
    let again = subscribe_text("s2", "presence", 300, Some(&a.tag), 2);
    assert!(h.subs.owns(&again));
    h.now += Duration::from_secs(100);
    let r = h.subs.refresh(h.now, &again, peer(5062)).unwrap();
    assert_eq!((r.id, r.expires), (a.id, 300));
    // The same CSeq again is out of order.
    assert_eq!(
        h.subs
            .refresh(h.now, &again, peer(5062))
            .unwrap_err()
            .status,
        500
    );
    // From elsewhere: refused.
    let other = subscribe_text("s2", "presence", 300, Some(&a.tag), 3);
    let mut elsewhere = peer(5062);
    elsewhere.remote = "127.0.0.9:5062".parse().unwrap();
    assert_eq!(
        h.subs.refresh(h.now, &other, elsewhere).unwrap_err().status,
        403
    );
    // Unsubscribe: Expires 0, a last NOTIFY with terminated.
    let bye = subscribe_text("s2", "presence", 0, Some(&a.tag), 4);
    let r = h.subs.refresh(h.now, &bye, peer(5062)).unwrap();
    assert_eq!(r.expires, 0);
    h.subs
        .notify_now(h.now, &mut h.layer, r.id, &ExtensionState::default());
    let sent = h.sent();
    assert!(sent[0].contains("terminated;reason=timeout"), "{}", sent[0]);
    assert!(h.subs.is_empty());
    assert_eq!(
        h.subs.refresh(h.now, &bye, peer(5062)).unwrap_err().status,
        481
    );

    // Unknown package, too brief, message-summary of another extension, per-phone limit.
    let bad = subscribe_text("s3", "conference", 600, None, 1);
    assert_eq!(h.subscribe(&bad, 5062).unwrap_err().status, 489);
    let brief = subscribe_text("s3", "dialog", 5, None, 1);
    let e = h.subscribe(&brief, 5062).unwrap_err();
    assert_eq!((e.status, e.min_expires), (423, Some(60)));
    let mwi = subscribe_text("s3", "message-summary", 600, None, 1);
    assert_eq!(h.subscribe(&mwi, 5062).unwrap_err().status, 403);
    h.subscribe(&subscribe_text("s4", "dialog", 600, None, 1), 5062)
        .unwrap();
    h.subscribe(&subscribe_text("s5", "dialog", 600, None, 1), 5062)
        .unwrap();
    assert_eq!(
        h.subscribe(&subscribe_text("s6", "dialog", 600, None, 1), 5062)
            .unwrap_err()
            .status,
        403
    );
    // Another phone of the same extension still may.
    h.subscribe(&subscribe_text("s7", "dialog", 600, None, 1), 5064)
        .unwrap();
}

#[test]
fn a_refused_notify_ends_the_subscription() {
    let mut h = Harness::new();
    let a = h
        .subscribe(&subscribe_text("s8", "dialog", 600, None, 1), 5062)
        .unwrap();
    h.subs
        .notify_now(h.now, &mut h.layer, a.id, &ExtensionState::default());
    let sent = h.sent();
    h.answer(&sent[0].clone(), 481);
    assert!(h.subs.is_empty());
    assert_eq!(
        ExtensionState::default().lamp(),
        "offline",
        "no phone registered"
    );
    assert_eq!(ringing().lamp(), "ringing");
}
