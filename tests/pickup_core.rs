//! Call pickup decided by the sans-IO SIP core, in virtual time (no sockets, no sleeping):
//! directed pickup (`**101`) connects the caller to the picker and cancels every phone that
//! rang with `Reason: SIP;cause=200;text="Call completed elsewhere"`; group pickup (`*8`) takes
//! the oldest call ringing in the picker's groups; not allowed (403) and nothing ringing (404)
//! are refused and recorded; nothing is left behind once the call ends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pasarela::b2bua::CallSummary;
use pasarela::callctl::{Output, Refused, SipCore};
use pasarela::routing::pickup::PickupGroups;
use pasarela::sip::message::{Message, Request, Response};
use pasarela::sip::parse::{parse_message, Framing, Limits};
use pasarela::sip::peer::Proto;

mod core_vt;
use core_vt::{authorization, ext, ok_for, peer, response, responses, to_tag, SERVER};

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
    refused: Vec<Refused>,
    finished: Vec<CallSummary>,
}

const SDP: &str = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n";

/// What a phone sent as its INVITE (to learn its dialog).
struct Dialled {
    out: Out,
    call_id: String,
    from_tag: String,
    from: String,
    addr: String,
}

impl Harness {
    fn new(groups: &[(&str, &[&str], &[&str])]) -> Harness {
        let settings = core_vt::settings(Duration::from_secs(120), true);
        let exts = ["100", "101", "102", "103", "104"].map(ext).to_vec();
        let mut core = SipCore::new(settings, exts, [9; 32], None);
        core.set_local_addrs(vec![(Proto::Udp, SERVER.parse().expect("addr"))]);
        core.set_pickup_groups(
            groups
                .iter()
                .map(|(n, c, p)| {
                    (
                        n.to_string(),
                        PickupGroups {
                            call: c.iter().map(|s| s.to_string()).collect(),
                            pickup: p.iter().map(|s| s.to_string()).collect(),
                        },
                    )
                })
                .collect::<HashMap<_, _>>(),
        );
        Harness {
            core,
            now: Instant::now(),
            unix: 1_800_000_000,
            calls: 0,
            refused: Vec::new(),
            finished: Vec::new(),
        }
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
                Output::Finished(s) => self.finished.push(s),
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

    /// Extension `from`, on its phone 9, dials `dialled`; what pasarela sent after the digest.
    fn dial(&mut self, from: &str, dialled: &str) -> Dialled {
        self.dial_with(from, dialled, "")
    }

    /// [`Harness::dial`] with `extra` header lines in the INVITE.
    fn dial_with(&mut self, from: &str, dialled: &str, extra: &str) -> Dialled {
        self.calls += 1;
        let n = self.calls;
        let addr = phone(from, 9);
        let call_id = format!("call{n}");
        let from_tag = format!("a{n}");
        let invite = |auth: &str, cseq: u32| {
            let body = SDP.replace('\n', "\r\n");
            format!(
                "INVITE sip:{dialled}@office.test SIP/2.0\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKinv{n}x{cseq}\nFrom: <sip:{from}@office.test>;tag={from_tag}\nTo: <sip:{dialled}@office.test>\nCall-ID: {call_id}\nCSeq: {cseq} INVITE\nContact: <sip:{from}@{addr}>\nMax-Forwards: 70\n{extra}{auth}Content-Type: application/sdp\nContent-Length: {}\n\n{SDP}",
                body.len()
            )
        };
        let out = self.feed(&invite("", 1), &addr);
        let challenge = response(&out, 401, "401");
        let ch_tag = to_tag(&challenge);
        self.feed(
            &format!("ACK sip:{dialled}@office.test SIP/2.0\nVia: SIP/2.0/UDP {addr};branch=z9hG4bKinv{n}x1\nFrom: <sip:{from}@office.test>;tag={from_tag}\nTo: <sip:{dialled}@office.test>;tag={ch_tag}\nCall-ID: {call_id}\nCSeq: 1 ACK\nContent-Length: 0\n\n"),
            &addr,
        );
        let uri = format!("sip:{dialled}@office.test");
        let auth = authorization(&challenge, from, "INVITE", &uri);
        let out = self.feed(&invite(&format!("Authorization: {auth}\n"), 2), &addr);
        Dialled {
            out,
            call_id,
            from_tag,
            from: from.to_owned(),
            addr,
        }
    }

    /// The phone at `from` answers pasarela's INVITE `inv` with `status`.
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

    /// The phone that dialled `d` sends an in-dialog request (`ACK`, `BYE`) on it; `tag` is
    /// pasarela's tag, `cseq` the request's number.
    fn in_dialog(&mut self, d: &Dialled, method: &str, tag: &str, cseq: u32) -> Out {
        let Dialled {
            call_id,
            from_tag,
            from,
            addr,
            ..
        } = d;
        self.feed(
            &format!("{method} sip:pasarela@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {addr};branch=z9hG4bK{method}{call_id}{cseq}\nFrom: <sip:{from}@office.test>;tag={from_tag}\nTo: <sip:x@office.test>;tag={tag}\nCall-ID: {call_id}\nCSeq: {cseq} {method}\nContent-Length: 0\n\n"),
            addr,
        )
    }
}

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

/// The final responses sent to `dest`.
fn finals_to(out: &Out, dest: &str) -> Vec<Response> {
    out.iter()
        .filter_map(|(m, to)| match m {
            Message::Response(r) if to.to_string() == dest && r.status >= 200 => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// 100 calls 101, whose two phones ring: the INVITEs they got.
fn ring_101(h: &mut Harness, caller: &str) -> (Dialled, Vec<Request>) {
    let d = h.dial(caller, "101");
    let mut invs = Vec::new();
    for i in 0..2 {
        let inv = sent(&d.out, "INVITE", &phone("101", i));
        assert_eq!(inv.len(), 1, "phone {i} of 101 rings");
        h.reply(&inv[0], 180, &phone("101", i));
        invs.push(inv[0].clone());
    }
    (d, invs)
}

#[test]
fn directed_pickup_connects_the_caller_to_the_picker() {
    let mut h = Harness::new(&[]);
    h.register("101", 0);
    h.register("101", 1);
    h.register("102", 0);
    let (caller, _) = ring_101(&mut h, "100");
    let picker = h.dial("102", "**101");
    let out = &picker.out;
    // The picker gets the call: 200 with the relay's answer.
    let ok = finals_to(out, &picker.addr);
    assert_eq!(ok.len(), 1, "{out:?}");
    assert_eq!(ok[0].status, 200);
    let body = String::from_utf8_lossy(&ok[0].body).to_string();
    assert!(body.contains("m=audio") && body.contains("PCMU"), "{body}");
    let picker_tag = to_tag(&ok[0]);
    // The caller is answered.
    let to_caller = finals_to(out, &caller.addr);
    assert_eq!(to_caller.len(), 1);
    assert_eq!(to_caller[0].status, 200);
    let caller_tag = to_tag(&to_caller[0]);
    // Both of 101's phones are cancelled, telling them the call was taken elsewhere.
    for i in 0..2 {
        let cancel = sent(out, "CANCEL", &phone("101", i));
        assert_eq!(cancel.len(), 1, "phone {i} of 101 cancelled");
        assert_eq!(
            cancel[0].headers.get("Reason"),
            Some("SIP;cause=200;text=\"Call completed elsewhere\"")
        );
    }
    assert!(h.refused.is_empty(), "{:?}", h.refused);
    // Both parties ACK; the caller hangs up: the picker gets the BYE.
    h.in_dialog(&picker, "ACK", &picker_tag, 2);
    h.in_dialog(&caller, "ACK", &caller_tag, 2);
    let out = h.in_dialog(&caller, "BYE", &caller_tag, 3);
    let bye = sent(&out, "BYE", &picker.addr);
    assert_eq!(bye.len(), 1, "the BYE reaches the picker: {out:?}");
    assert_eq!(bye[0].headers.call_id(), Some(picker.call_id.as_str()));
    h.feed(&ok_for(&bye[0]), &picker.addr);
    // The record: 101 was called, the picker answered on a pickup stage.
    let rec = h.finished.pop().expect("a record");
    assert_eq!(rec.callee, "101");
    assert_eq!(rec.status, 200);
    let (stage, uri) = rec.answered_by.clone().expect("answered");
    assert!(uri.contains(&picker.addr), "{uri}");
    let label = &rec
        .attempts
        .iter()
        .find(|a| a.stage == stage)
        .expect("attempt")
        .label;
    assert_eq!(label, "pickup 102 (**101)");
    // Nothing left behind once the transactions have run out.
    h.advance(Duration::from_secs(70));
    assert_eq!(h.core.calls().len(), 0);
    assert_eq!(h.core.transaction_counts(), (0, 0));
}

#[test]
fn a_pickup_without_anything_ringing_is_refused_and_recorded() {
    let mut h = Harness::new(&[]);
    h.register("101", 0);
    h.register("101", 1);
    h.register("102", 0);
    let picker = h.dial("102", "**101");
    let r = finals_to(&picker.out, &picker.addr);
    assert_eq!(r[0].status, 404);
    assert_eq!(r[0].reason, "No call ringing at 101");
    let picker = h.dial("102", "*8");
    assert_eq!(finals_to(&picker.out, &picker.addr)[0].status, 404);
    let refused = std::mem::take(&mut h.refused);
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0].caller, "102");
    assert_eq!(refused[0].dialled, "**101");
    assert_eq!(refused[0].status, 404);
    assert!(refused[0]
        .reason
        .as_deref()
        .is_some_and(|r| r.starts_with("Pickup: ")));
    // An answered call is no longer there to pick up.
    let (caller, invs) = ring_101(&mut h, "100");
    let out = h.reply(&invs[0], 200, &phone("101", 0));
    assert_eq!(finals_to(&out, &caller.addr)[0].status, 200);
    let picker = h.dial("102", "**101");
    assert_eq!(finals_to(&picker.out, &picker.addr)[0].status, 404);
}

#[test]
fn groups_decide_who_may_pick_up() {
    let mut h = Harness::new(&[
        ("101", &["sales"], &["sales"]),
        ("102", &["support"], &["support"]),
        ("103", &["support"], &["sales", "support"]),
    ]);
    h.register("101", 0);
    h.register("101", 1);
    h.register("102", 0);
    h.register("103", 0);
    let (_caller, _) = ring_101(&mut h, "100");
    let picker = h.dial("102", "**101");
    let r = finals_to(&picker.out, &picker.addr);
    assert_eq!(r[0].status, 403);
    assert_eq!(r[0].reason, "Not allowed to pick up calls of 101");
    assert!(
        sent(&picker.out, "CANCEL", &phone("101", 0)).is_empty(),
        "101 keeps ringing"
    );
    let refused = std::mem::take(&mut h.refused);
    assert_eq!(
        (refused[0].caller.as_str(), refused[0].status),
        ("102", 403)
    );
    // 102's *8 finds nothing in its group; 103's takes 101's call.
    let picker = h.dial("102", "*8");
    assert_eq!(finals_to(&picker.out, &picker.addr)[0].status, 404);
    let picker = h.dial("103", "*8");
    assert_eq!(finals_to(&picker.out, &picker.addr)[0].status, 200);
    assert_eq!(sent(&picker.out, "CANCEL", &phone("101", 1)).len(), 1);
}

#[test]
fn group_pickup_takes_the_oldest_ringing_call() {
    let mut h = Harness::new(&[]);
    h.register("101", 0);
    h.register("101", 1);
    h.register("103", 0);
    h.register("102", 0);
    let (first, _) = ring_101(&mut h, "100");
    let second = h.dial("104", "103");
    let inv = sent(&second.out, "INVITE", &phone("103", 0));
    h.reply(&inv[0], 180, &phone("103", 0));
    let picker = h.dial("102", "*8");
    assert_eq!(finals_to(&picker.out, &picker.addr)[0].status, 200);
    assert_eq!(
        finals_to(&picker.out, &first.addr)[0].status,
        200,
        "the older call (100 -> 101) is picked up"
    );
    assert!(finals_to(&picker.out, &second.addr).is_empty());
    assert!(sent(&picker.out, "CANCEL", &phone("103", 0)).is_empty());
    // The next *8 takes the other one.
    let picker = h.dial("102", "*8");
    assert_eq!(finals_to(&picker.out, &second.addr)[0].status, 200);
}

/// The Replaces value naming the early dialog pasarela has with the phone that got `inv`
/// and answered 180 (tag `t180`), tags in the order of a dialog-info body seen from 101
/// (to-tag = its local-tag, from-tag = its remote-tag).
fn replaces_of(inv: &Request) -> String {
    let our_tag = inv.headers.from().and_then(|f| f.tag()).expect("tag");
    format!(
        "Replaces: {};to-tag=t180;from-tag={our_tag}\n",
        inv.headers.call_id().expect("call-id")
    )
}

#[test]
fn invite_with_replaces_of_a_ringing_phone_picks_the_call_up() {
    let mut h = Harness::new(&[]);
    h.register("101", 0);
    h.register("101", 1);
    h.register("102", 0);
    let (caller, invs) = ring_101(&mut h, "100");
    let picker = h.dial_with("102", "101", &replaces_of(&invs[1]));
    let ok = finals_to(&picker.out, &picker.addr);
    assert_eq!(ok[0].status, 200, "{:?}", picker.out);
    assert_eq!(finals_to(&picker.out, &caller.addr)[0].status, 200);
    for i in 0..2 {
        let cancel = sent(&picker.out, "CANCEL", &phone("101", i));
        assert_eq!(cancel.len(), 1);
        assert!(cancel[0].headers.get("Reason").is_some());
    }
}

#[test]
fn invite_with_replaces_of_unknown_or_answered_dialogs_is_refused() {
    let mut h = Harness::new(&[("101", &["sales"], &[]), ("102", &[], &["support"])]);
    h.register("101", 0);
    h.register("101", 1);
    h.register("102", 0);
    h.register("103", 0);
    // Unknown dialog: 481.
    let picker = h.dial_with("102", "101", "Replaces: nosuch@x;to-tag=a;from-tag=b\n");
    assert_eq!(finals_to(&picker.out, &picker.addr)[0].status, 481);
    // A ringing phone of an extension 102 may not pick up: 403, the call rings on.
    let (caller, invs) = ring_101(&mut h, "100");
    let picker = h.dial_with("102", "101", &replaces_of(&invs[0]));
    assert_eq!(finals_to(&picker.out, &picker.addr)[0].status, 403);
    assert!(finals_to(&picker.out, &caller.addr).is_empty());
    // Answered: early-only is 486.
    h.reply(&invs[0], 200, &phone("101", 0));
    let early_only = format!("{};early-only\n", replaces_of(&invs[0]).trim_end());
    let picker = h.dial_with("102", "101", &early_only.replace("t180", "t200"));
    assert_eq!(finals_to(&picker.out, &picker.addr)[0].status, 486);
    let refused = std::mem::take(&mut h.refused);
    let statuses: Vec<u16> = refused.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [481, 403, 486]);
}

#[test]
fn invite_with_replaces_of_an_answered_leg_takes_its_place() {
    let mut h = Harness::new(&[]);
    h.register("101", 0);
    h.register("101", 1);
    h.register("102", 0);
    let (caller, invs) = ring_101(&mut h, "100");
    let out = h.reply(&invs[0], 200, &phone("101", 0));
    let caller_tag = to_tag(&finals_to(&out, &caller.addr)[0]);
    h.in_dialog(&caller, "ACK", &caller_tag, 2);
    let replaces = replaces_of(&invs[0]).replace("t180", "t200");
    let newcomer = h.dial_with("102", "101", &replaces);
    let ok = finals_to(&newcomer.out, &newcomer.addr);
    assert_eq!(ok[0].status, 200, "{:?}", newcomer.out);
    let new_tag = to_tag(&ok[0]);
    // The replaced phone is hung up; the caller keeps its dialog (same codec: no re-INVITE).
    let bye = sent(&newcomer.out, "BYE", &phone("101", 0));
    assert_eq!(bye.len(), 1);
    h.feed(&ok_for(&bye[0]), &phone("101", 0));
    assert!(sent(&newcomer.out, "INVITE", &caller.addr).is_empty());
    h.in_dialog(&newcomer, "ACK", &new_tag, 2);
    // The caller hangs up: the BYE reaches the new phone.
    let out = h.in_dialog(&caller, "BYE", &caller_tag, 3);
    let bye = sent(&out, "BYE", &newcomer.addr);
    assert_eq!(bye.len(), 1, "{out:?}");
    h.feed(&ok_for(&bye[0]), &newcomer.addr);
    let rec = h.finished.pop().expect("a record");
    let (stage, _) = rec.answered_by.clone().expect("answered");
    let label = &rec
        .attempts
        .iter()
        .find(|a| a.stage == stage)
        .expect("attempt")
        .label;
    assert_eq!(label, "pickup 102 (Replaces)");
    h.advance(Duration::from_secs(70));
    assert_eq!(h.core.calls().len(), 0);
    assert_eq!(h.core.transaction_counts(), (0, 0));
}
