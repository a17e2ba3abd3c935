//! The DUNDi engine in memory: two engines exchange datagrams (plain and encrypted, both ways)
//! under simulated time — lookups, the DONT_ASK hint, qualify, EIDQUERY, retransmission and
//! give-up, key rotation, ENCREJ recovery — and our engine answers the captured Asterisk
//! requests the way Asterisk did.

mod dundi_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dundi_common::*;
use pasarela::routing::dundi::crypto;
use pasarela::routing::dundi::engine::{Engine, Event, Keys, LookupResult, Reachability};
use pasarela::routing::dundi::wire::{hint_flags, Command, Ie, Packet};
use pasarela::routing::dundi::{
    EntityInfo, Mapping, Model, PatternNumbers, PeerSettings, Settings,
};

const A: &str = "127.0.0.1:4520";
const B: &str = "127.0.0.2:4520";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct NodeSpec {
    name: &'static str,
    eid: &'static str,
    patterns: &'static [&'static str],
    dest: &'static str,
    org: &'static str,
}

const ANCHOR: NodeSpec = NodeSpec {
    name: "anchor",
    eid: "02:00:00:00:00:01",
    patterns: &["_1555XXXX", "_1555XXXXXXX"],
    dest: "${NUMBER}@127.0.0.1:5090",
    org: "anchors test node A",
};
const PEER: NodeSpec = NodeSpec {
    name: "peer",
    eid: "02:00:00:00:00:02",
    patterns: &["_1666XXXX", "_1666XXXXXXX"],
    dest: "${NUMBER}@127.0.0.2:5090",
    org: "peer test node B",
};

fn settings(me: &NodeSpec, other: &NodeSpec, other_addr: &str, encrypted: bool) -> Settings {
    let keys = testdata().join("keys");
    let mut peer = PeerSettings::new(other.eid.parse().unwrap(), addr(other_addr), "e164");
    if encrypted {
        peer.inkey = Some(keys.join(format!("{}.pub", other.name)));
    }
    Settings {
        eid: Some(me.eid.parse().unwrap()),
        private_key: encrypted.then(|| keys.join(format!("{}.key", me.name))),
        entity: EntityInfo {
            organization: me.org.into(),
            ..Default::default()
        },
        mappings: vec![Mapping::sip("e164", "local", me.dest)],
        peers: vec![peer],
        cache_ttl: Duration::from_secs(60),
        ttl: 32,
        ..Default::default()
    }
}

fn engine(s: &Settings, me: &NodeSpec, now: Instant) -> Engine {
    let mut n = PatternNumbers::new();
    n.add("local", me.patterns).unwrap();
    Engine::new(s, Keys::load(s).unwrap(), Arc::new(n), now).unwrap()
}

/// Two engines and the wire between them.
struct Net {
    a: Engine,
    b: Engine,
    now: Instant,
    /// Every datagram that was put on the wire: (from, bytes).
    log: Vec<(SocketAddr, Vec<u8>)>,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
}

impl Net {
    fn new(encrypted: bool) -> Net {
        let now = Instant::now();
        let a = engine(&settings(&ANCHOR, &PEER, B, encrypted), &ANCHOR, now);
        let b = engine(&settings(&PEER, &ANCHOR, A, encrypted), &PEER, now);
        Net {
            a,
            b,
            now,
            log: Vec::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
        }
    }

    /// Delivers datagrams until none are left; `drop` decides per (from, bytes) whether the
    /// datagram is lost.
    fn pump(&mut self, drop: &mut dyn FnMut(SocketAddr, &[u8]) -> bool) {
        loop {
            let mut moved = false;
            while let Some((to, bytes)) = self.a.poll_transmit() {
                assert_eq!(to, addr(B));
                self.log.push((addr(A), bytes.clone()));
                if !drop(addr(A), &bytes) {
                    self.b.handle_datagram(self.now, addr(A), &bytes);
                }
                moved = true;
            }
            while let Some((to, bytes)) = self.b.poll_transmit() {
                assert_eq!(to, addr(A));
                self.log.push((addr(B), bytes.clone()));
                if !drop(addr(B), &bytes) {
                    self.a.handle_datagram(self.now, addr(B), &bytes);
                }
                moved = true;
            }
            while let Some(e) = self.a.poll_event() {
                self.events_a.push(e);
            }
            while let Some(e) = self.b.poll_event() {
                self.events_b.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances simulated time to the next deadline of either engine (at most `max`).
    fn tick(&mut self, max: Duration, drop: &mut dyn FnMut(SocketAddr, &[u8]) -> bool) {
        let limit = self.now + max;
        let next = [self.a.poll_timeout(), self.b.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(limit)
            .min(limit);
        self.now = next.max(self.now);
        self.a.handle_timeout(self.now);
        self.b.handle_timeout(self.now);
        self.pump(drop);
    }

    fn run_for(&mut self, d: Duration, drop: &mut dyn FnMut(SocketAddr, &[u8]) -> bool) {
        let end = self.now + d;
        while self.now < end {
            self.tick(end - self.now, drop);
        }
    }

    fn lookup_from_b(&mut self, number: &str, bypass: bool) -> LookupResult {
        let id = self.b.lookup(self.now, number, "e164", None, bypass);
        self.pump(&mut |_, _| false);
        take_lookup(&mut self.events_b, id)
    }
}

fn take_lookup(events: &mut Vec<Event>, id: pasarela::routing::dundi::LookupId) -> LookupResult {
    let i = events
        .iter()
        .position(|e| matches!(e, Event::LookupDone { id: x, .. } if *x == id))
        .unwrap_or_else(|| panic!("lookup {id:?} not done; events {events:?}"));
    match events.remove(i) {
        Event::LookupDone { result, .. } => result,
        _ => unreachable!(),
    }
}

fn no_drop() -> impl FnMut(SocketAddr, &[u8]) -> bool {
    |_, _| false
}

fn cmds(log: &[(SocketAddr, Vec<u8>)]) -> Vec<(String, u8)> {
    log.iter()
        .map(|(from, b)| (from.to_string(), Packet::decode(b).unwrap().header.cmdresp))
        .collect()
}

#[test]
fn plain_lookup_like_the_capture() {
    let mut net = Net::new(false);
    let r = net.lookup_from_b("15551234", false);
    assert_eq!(r.answers.len(), 1, "{r:?}");
    let a = &r.answers[0];
    assert_eq!(a.destination, "15551234@127.0.0.1:5090");
    assert_eq!(a.sip_uri().as_deref(), Some("sip:15551234@127.0.0.1:5090"));
    assert_eq!(a.flags, 0x0187);
    assert_eq!(a.expiration, 60);
    assert_eq!(a.eid.to_string(), "02:00:00:00:00:01");
    assert!(!r.from_cache);
    // DPDISCOVER, ACK, DPRESPONSE|FINAL, ACK|FINAL — as Asterisk exchanged them.
    assert_eq!(
        cmds(&net.log),
        vec![
            (B.into(), 0x01),
            (A.into(), 0x40),
            (A.into(), 0xc2),
            (B.into(), 0xc0)
        ]
    );
    let first = Packet::decode(&net.log[0].1).unwrap();
    let hdr = first.header;
    assert_eq!((hdr.dtrans, hdr.iseqno, hdr.oseqno), (0, 0, 0));
    assert_eq!(
        first.ies,
        vec![
            Ie::Version(1),
            Ie::EidDirect("02:00:00:00:00:02".parse().unwrap()),
            Ie::CalledNumber("15551234".into()),
            Ie::CalledContext("e164".into()),
            Ie::Ttl(32)
        ]
    );
    assert_eq!(net.a.transactions(), 0);
    assert_eq!(net.b.transactions(), 0);
    assert!(net
        .events_a
        .iter()
        .any(|e| matches!(e, Event::Answered { answers: 1, .. })));
    // Second time: from the cache, no traffic; with cache bypass: asked again.
    let before = net.log.len();
    let r = net.lookup_from_b("15551234", false);
    assert!(r.from_cache && r.answers.len() == 1);
    assert_eq!(net.log.len(), before);
    let r = net.lookup_from_b("15551234", true);
    assert!(!r.from_cache && r.answers.len() == 1);
    let last_discover = Packet::decode(&net.log[before].1).unwrap();
    assert_eq!(last_discover.ies.last(), Some(&Ie::CacheBypass));
    assert_eq!(net.b.cache().len(), 1);
    // The cache entry expires with the answer's 60 s.
    net.run_for(Duration::from_secs(61), &mut no_drop());
    assert!(net.b.cache().is_empty());
}

#[test]
fn unknown_number_gets_dont_ask() {
    for encrypted in [false, true] {
        let mut net = Net::new(encrypted);
        let r = net.lookup_from_b("19998887777", true);
        assert!(r.answers.is_empty());
        assert_eq!(r.hint_flags & hint_flags::DONT_ASK, hint_flags::DONT_ASK);
        assert_eq!(r.dont_ask_prefix, "19");
        // The wire form is the captured one.
        let resp = net
            .log
            .iter()
            .filter(|(f, _)| f.to_string() == A)
            .map(|(_, b)| Packet::decode(b).unwrap())
            .find(|p| p.header.cmdresp != 0x40)
            .unwrap();
        if !encrypted {
            assert_eq!(
                resp.ies,
                vec![
                    Ie::Hint {
                        flags: hint_flags::DONT_ASK | hint_flags::UNAFFECTED,
                        data: "19".into()
                    },
                    Ie::Expiration(60)
                ]
            );
        }
    }
}

#[test]
fn encrypted_lookups_both_ways() {
    let mut net = Net::new(true);
    let r = net.lookup_from_b("15551234", false);
    assert_eq!(r.answers.len(), 1, "{r:?}");
    assert_eq!(r.answers[0].destination, "15551234@127.0.0.1:5090");
    // Everything but ACKs went as ENCRYPT, the first with the full key.
    let outer: Vec<Packet> = net
        .log
        .iter()
        .map(|(_, b)| Packet::decode(b).unwrap())
        .collect();
    assert_eq!(
        outer.iter().map(|p| p.header.cmdresp).collect::<Vec<_>>(),
        vec![0x0d, 0x40, 0x0d, 0xc0]
    );
    assert!(matches!(outer[0].ies[1], Ie::SharedKey(_)));
    assert!(matches!(outer[0].ies[2], Ie::Signature(_)));
    assert!(matches!(outer[2].ies[0], Ie::EncData { .. }));

    // The other way.
    let id = net.a.lookup(net.now, "16661234", "e164", None, false);
    net.pump(&mut no_drop());
    let r = take_lookup(&mut net.events_a, id);
    assert_eq!(r.answers.len(), 1, "{r:?}");
    assert_eq!(r.answers[0].destination, "16661234@127.0.0.2:5090");

    // B's next transaction names its key by crc only.
    let before = net.log.len();
    let r = net.lookup_from_b("15551239", false);
    assert_eq!(r.answers.len(), 1);
    let p = Packet::decode(&net.log[before].1).unwrap();
    assert!(matches!(p.ies[1], Ie::KeyCrc32(_)), "{p:?}");
    assert_eq!(p.ies.len(), 3);
}

#[test]
fn key_rotation_sends_a_new_key() {
    let now = Instant::now();
    let mut sb = settings(&PEER, &ANCHOR, A, true);
    sb.key_ttl = Duration::from_secs(10);
    let mut net = Net::new(true);
    net.b = engine(&sb, &PEER, now);
    net.now = now;
    let shared_keys = |net: &Net| -> Vec<Vec<u8>> {
        net.log
            .iter()
            .filter_map(|(_, b)| {
                Packet::decode(b).unwrap().find(|i| match i {
                    Ie::SharedKey(k) => Some(k.clone()),
                    _ => None,
                })
            })
            .collect()
    };
    assert_eq!(net.lookup_from_b("15551234", true).answers.len(), 1);
    assert_eq!(net.lookup_from_b("15551234", true).answers.len(), 1);
    assert_eq!(shared_keys(&net).len(), 1);
    net.run_for(Duration::from_secs(11), &mut no_drop());
    assert_eq!(net.lookup_from_b("15551234", true).answers.len(), 1);
    let keys = shared_keys(&net);
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1]);
}

#[test]
fn restarted_peer_rejects_crc_and_gets_the_full_key() {
    let mut net = Net::new(true);
    assert_eq!(net.lookup_from_b("15551234", true).answers.len(), 1);
    // A restarts and forgets B's key; B names it by crc, A answers ENCREJ, B starts over
    // with the full key.
    net.a = engine(&settings(&ANCHOR, &PEER, B, true), &ANCHOR, net.now);
    let before = net.log.len();
    let r = net.lookup_from_b("15551234", true);
    assert_eq!(r.answers.len(), 1, "{r:?}");
    let seen: Vec<u8> = net.log[before..]
        .iter()
        .map(|(_, b)| Packet::decode(b).unwrap().header.cmdresp)
        .collect();
    assert!(seen.contains(&0xce), "no ENCREJ|FINAL in {seen:x?}");
    assert_eq!(net.a.transactions() + net.b.transactions(), 0);
}

#[test]
fn plaintext_query_to_encrypted_peer_is_refused() {
    let now = Instant::now();
    // A wants encryption with B; B talks in clear.
    let sa = settings(&ANCHOR, &PEER, B, true);
    let mut sb = settings(&PEER, &ANCHOR, A, false);
    sb.private_key = None;
    let mut net = Net::new(false);
    net.a = engine(&sa, &ANCHOR, now);
    net.b = engine(&sb, &PEER, now);
    net.now = now;
    let r = net.lookup_from_b("15551234", true);
    assert!(r.answers.is_empty());
    assert_eq!(r.causes.len(), 1, "{r:?}");
    assert_eq!(r.causes[0].1, 3);
    assert_eq!(r.causes[0].2, "Unencrypted responses not permitted");
}

#[test]
fn qualify_and_unreachable() {
    let mut net = Net::new(false);
    let peer_a = "02:00:00:00:00:01".parse().unwrap();
    assert!(net.b.qualify(net.now, peer_a));
    net.pump(&mut no_drop());
    assert_eq!(
        cmds(&net.log),
        vec![(B.into(), 0x89), (A.into(), 0xc0)],
        "NULL|FINAL answered by ACK|FINAL"
    );
    assert!(matches!(
        net.events_b.as_slice(),
        [Event::Qualified {
            latency: Some(_),
            ..
        }]
    ));
    assert!(matches!(
        net.b.peers()[0].reachability,
        Reachability::Reachable(_)
    ));
    // A goes silent: four retransmissions a second apart, then unreachable.
    net.events_b.clear();
    let before = net.log.len();
    assert!(net.b.qualify(net.now, peer_a));
    let mut drop_all = |_: SocketAddr, _: &[u8]| true;
    net.run_for(Duration::from_secs(6), &mut drop_all);
    assert_eq!(
        net.log.len() - before,
        5,
        "one send and four retransmissions"
    );
    assert_eq!(
        net.events_b,
        vec![Event::Qualified {
            peer: peer_a,
            latency: None
        }]
    );
    assert_eq!(net.b.peers()[0].reachability, Reachability::Unreachable);
    let st = net.b.stats();
    assert_eq!((st.retransmissions, st.timeouts), (4, 1));
    assert_eq!(net.b.transactions(), 0);
    // An unreachable peer is not asked.
    let r = net.lookup_from_b("15551234", true);
    assert_eq!(r.asked, 0);
}

#[test]
fn retransmission_recovers_a_lost_request_and_gives_up_on_silence() {
    let mut net = Net::new(true);
    let mut dropped = 0;
    let mut drop_first = |from: SocketAddr, _: &[u8]| {
        if from == addr(B) && dropped == 0 {
            dropped += 1;
            return true;
        }
        false
    };
    let id = net.b.lookup(net.now, "15551234", "e164", None, true);
    net.pump(&mut drop_first);
    assert!(net.events_b.is_empty());
    net.run_for(Duration::from_millis(1500), &mut drop_first);
    let r = take_lookup(&mut net.events_b, id);
    assert_eq!(r.answers.len(), 1);

    // A lost response: A retransmits it, B ACKs the duplicate request it sees again.
    let mut lost_resp = 0;
    let mut drop_response = |from: SocketAddr, b: &[u8]| {
        if from == addr(A) && b[6] == 0x0d && lost_resp == 0 {
            lost_resp += 1;
            return true;
        }
        false
    };
    let id = net.b.lookup(net.now, "15551234", "e164", None, true);
    net.pump(&mut drop_response);
    net.run_for(Duration::from_millis(1500), &mut drop_response);
    let r = take_lookup(&mut net.events_b, id);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(net.a.transactions() + net.b.transactions(), 0);

    // Silence: the lookup ends empty once the retransmissions are spent.
    let t0 = net.now;
    let id = net.b.lookup(net.now, "15551235", "e164", None, true);
    let mut drop_all = |_: SocketAddr, _: &[u8]| true;
    net.run_for(Duration::from_secs(10), &mut drop_all);
    let r = take_lookup(&mut net.events_b, id);
    assert!(r.answers.is_empty());
    assert_eq!(r.asked, 1);
    assert!(net.now - t0 >= Duration::from_secs(5));
    assert_eq!(net.b.transactions(), 0);
    // Silence is not remembered: the next lookup asks again.
    assert!(net.b.cache().iter().all(|e| e.number != "15551235"));
}

#[test]
fn eid_query_between_engines() {
    for encrypted in [false, true] {
        let mut net = Net::new(encrypted);
        let a_eid = "02:00:00:00:00:01".parse().unwrap();
        let id = net.b.query_eid(net.now, a_eid, a_eid, "e164");
        net.pump(&mut no_drop());
        let info = net
            .events_b
            .iter()
            .find_map(|e| match e {
                Event::EntityInfo { id: x, info, .. } if *x == id => Some(info.clone()),
                _ => None,
            })
            .expect("entity info event");
        let info = info.expect("answered");
        assert_eq!(info.organization, "anchors test node A");
        assert_eq!(info.ipaddr, "127.0.0.1");
    }
}

// ------------------------------------------------------------------ replay of the captures

fn capture_packet(name: &str, number: usize) -> (SocketAddr, Vec<u8>) {
    let caps = read_pcap(&testdata().join(format!("{name}.pcap")));
    let d = &caps[number - 1];
    (d.src, d.payload.clone())
}

#[test]
fn replayed_plain_discover_is_answered_like_asterisk() {
    let now = Instant::now();
    // Our engine is B; A's captured DPDISCOVER for 16661234 (#9) arrives.
    let mut b = engine(&settings(&PEER, &ANCHOR, A, false), &PEER, now);
    let (from, bytes) = capture_packet("plaintext", 9);
    b.handle_datagram(now, from, &bytes);
    let (to1, ack) = b.poll_transmit().unwrap();
    let (to2, resp) = b.poll_transmit().unwrap();
    assert_eq!((to1, to2), (from, from));
    let ours_ack = Packet::decode(&ack).unwrap();
    let theirs_ack = Packet::decode(&capture_packet("plaintext", 10).1).unwrap();
    let (_, captured) = capture_packet("plaintext", 11);
    // Same bytes but our transaction id.
    assert_eq!(ack[2..], capture_packet("plaintext", 10).1[2..]);
    assert_eq!(ours_ack.header.dtrans, theirs_ack.header.dtrans);
    assert_eq!(
        resp[2..],
        captured[2..],
        "DPRESPONSE differs from Asterisk's"
    );
    assert_eq!(resp[..2], ack[..2]);
    // A's final ACK (#12, re-addressed to our transaction id) ends it.
    let mut fin = capture_packet("plaintext", 12).1;
    fin[2..4].copy_from_slice(&resp[..2]);
    b.handle_datagram(now, from, &fin);
    assert_eq!(b.transactions(), 0);
    assert!(b.poll_transmit().is_none());
}

#[test]
fn replayed_plain_eidquery_is_answered_like_asterisk() {
    let now = Instant::now();
    let mut s = settings(&ANCHOR, &PEER, B, false);
    s.entity.organization = "anchors test node A (plaintext variant)".into();
    let mut a = engine(&s, &ANCHOR, now);
    let (from, bytes) = capture_packet("plaintext", 17);
    a.handle_datagram(now, from, &bytes);
    let (_, ack) = a.poll_transmit().unwrap();
    let (_, resp) = a.poll_transmit().unwrap();
    assert_eq!(ack[2..], capture_packet("plaintext", 18).1[2..]);
    assert_eq!(resp[2..], capture_packet("plaintext", 19).1[2..]);
}

#[test]
fn replayed_unknown_number_is_answered_like_asterisk() {
    let now = Instant::now();
    let mut a = engine(&settings(&ANCHOR, &PEER, B, false), &ANCHOR, now);
    let (from, bytes) = capture_packet("plaintext", 13);
    a.handle_datagram(now, from, &bytes);
    let _ack = a.poll_transmit().unwrap();
    let (_, resp) = a.poll_transmit().unwrap();
    assert_eq!(resp[2..], capture_packet("plaintext", 15).1[2..]);
}

#[test]
fn replayed_encrypted_discover_is_answered_like_asterisk() {
    let now = Instant::now();
    let mut b = engine(&settings(&PEER, &ANCHOR, A, true), &PEER, now);
    let listed = read_listing(&testdata().join("encrypted-decoded.txt"));
    // #13: A's ENCRYPT (SHAREDKEY, SIGNATURE) with the DPDISCOVER for 16661234.
    let (from, bytes) = capture_packet("encrypted", 13);
    b.handle_datagram(now, from, &bytes);
    let (_, ack) = b.poll_transmit().expect("ACK");
    assert_eq!(ack[2..], capture_packet("encrypted", 14).1[2..]);
    let (_, resp) = b.poll_transmit().expect("response");
    let p = Packet::decode(&resp).unwrap();
    assert_eq!(p.command(), Command::Encrypt);
    assert_eq!(p.ies.len(), 1, "a reply carries ENCDATA only");
    // Encrypted with A's key (recovered in the listing): the inner packet is Asterisk's.
    let key: [u8; 16] = listed[12].aes_key.clone().unwrap().try_into().unwrap();
    let Some(Ie::EncData { iv, data }) = p.ies.first() else {
        panic!()
    };
    let inner = crypto::decrypt_packet(&p.header, iv, data, &key).unwrap();
    assert_eq!(
        Some(inner.encode().unwrap()[6..].to_vec()),
        listed[14].inner
    );
    // #17 (B's next query in the capture) is from the other side, skip; #25: A's second
    // transaction names the key by crc only — we know it now.
    let (from, bytes) = capture_packet("encrypted", 25);
    b.handle_datagram(now, from, &bytes);
    let _ack = b.poll_transmit().expect("ACK");
    let (_, resp) = b.poll_transmit().expect("response");
    let p = Packet::decode(&resp).unwrap();
    let Some(Ie::EncData { iv, data }) = p.ies.first() else {
        panic!()
    };
    let inner = crypto::decrypt_packet(&p.header, iv, data, &key).unwrap();
    assert_eq!(
        Some(inner.encode().unwrap()[6..].to_vec()),
        listed[26].inner
    );
}

#[test]
fn unknown_crc_gets_encrej() {
    let now = Instant::now();
    let mut b = engine(&settings(&PEER, &ANCHOR, A, true), &PEER, now);
    // #25 names a key by crc that this fresh engine never saw.
    let (from, bytes) = capture_packet("encrypted", 25);
    b.handle_datagram(now, from, &bytes);
    let sent: Vec<u8> = std::iter::from_fn(|| b.poll_transmit())
        .map(|(_, x)| x[6])
        .collect();
    // As Asterisk: ENCREJ|FINAL (it acknowledges the request, so no separate ACK).
    assert_eq!(sent, vec![0xce]);
}

/// xorshift64*, deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn engine_survives_hostile_datagrams() {
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for name in ["plaintext", "encrypted"] {
        for d in read_pcap(&testdata().join(format!("{name}.pcap"))) {
            seeds.push(d.payload);
        }
    }
    let mut now = Instant::now();
    let mut engines = [
        engine(&settings(&ANCHOR, &PEER, B, true), &ANCHOR, now),
        engine(&settings(&PEER, &ANCHOR, A, false), &PEER, now),
    ];
    let froms = [addr(A), addr(B), addr("127.0.0.9:4520")];
    let mut rng = Rng(0xd0d1_f022);
    for i in 0..20_000 {
        let mut d = seeds[rng.below(seeds.len())].clone();
        match i % 3 {
            0 => {}
            1 => {
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(d.len());
                    d[at] = rng.next() as u8;
                }
            }
            _ => d.truncate(rng.below(d.len() + 1)),
        }
        // Header fields that steer the transaction logic get special attention.
        if rng.below(4) == 0 && d.len() >= 8 {
            d[4] = rng.below(3) as u8;
            d[5] = rng.below(3) as u8;
        }
        let e = &mut engines[i % 2];
        e.handle_datagram(now, froms[rng.below(froms.len())], &d);
        if rng.below(50) == 0 {
            e.lookup(now, "15551234", "e164", None, rng.below(2) == 0);
        }
        while e.poll_transmit().is_some() {}
        while e.poll_event().is_some() {}
        if rng.below(20) == 0 {
            now += Duration::from_millis(rng.below(3000) as u64);
            for e in engines.iter_mut() {
                e.handle_timeout(now);
            }
        }
    }
    // Everything started is over once time has passed.
    now += Duration::from_secs(30);
    for e in engines.iter_mut() {
        for _ in 0..10 {
            e.handle_timeout(now);
            now += Duration::from_secs(2);
        }
        assert_eq!(e.transactions(), 0);
    }
}

fn request(strans: u16, cmd: Command, fin: bool, ies: Vec<Ie>) -> Vec<u8> {
    Packet::new(strans, 0, 0, 0, cmd, fin, ies)
        .encode()
        .unwrap()
}

fn replies(e: &mut Engine) -> Vec<Packet> {
    std::iter::from_fn(|| e.poll_transmit())
        .map(|(_, b)| Packet::decode(&b).unwrap())
        .collect()
}

fn discover(from: &str, number: &str, context: &str) -> Vec<Ie> {
    vec![
        Ie::Version(1),
        Ie::EidDirect(from.parse().unwrap()),
        Ie::CalledNumber(number.into()),
        Ie::CalledContext(context.into()),
        Ie::Ttl(1),
    ]
}

#[test]
fn refusals_carry_asterisk_causes() {
    let now = Instant::now();
    let mut a = engine(&settings(&ANCHOR, &PEER, B, false), &ANCHOR, now);
    let cause_of = |p: &Packet| {
        p.find(|i| match i {
            Ie::Cause { code, text } => Some((*code, text.clone())),
            _ => None,
        })
    };
    // A stranger.
    a.handle_datagram(
        now,
        addr("127.0.0.9:4520"),
        &request(
            11,
            Command::DpDiscover,
            false,
            discover("02:00:00:00:00:09", "15551234", "e164"),
        ),
    );
    let r = replies(&mut a);
    assert_eq!(r[0].command(), Command::Ack);
    assert_eq!(r[1].command(), Command::DpResponse);
    assert_eq!(cause_of(&r[1]), Some((3, String::new())));
    // A peer asking about a context it may not.
    a.handle_datagram(
        now,
        addr(B),
        &request(
            12,
            Command::DpDiscover,
            false,
            discover(PEER.eid, "15551234", "private"),
        ),
    );
    let r = replies(&mut a);
    assert_eq!(
        cause_of(&r[1]),
        Some((3, "Permission to context denied".into()))
    );
    // No number.
    let mut ies = discover(PEER.eid, "", "e164");
    ies.retain(|i| !matches!(i, Ie::CalledNumber(_)));
    a.handle_datagram(now, addr(B), &request(13, Command::DpDiscover, false, ies));
    let r = replies(&mut a);
    assert_eq!(
        cause_of(&r[1]),
        Some((1, "Invalid or missing number/entity".into()))
    );
    // A command nobody knows cannot open a transaction: INVALID (as Asterisk).
    a.handle_datagram(
        now,
        addr(B),
        &request(14, Command::Other(0x20), false, vec![]),
    );
    let r = replies(&mut a);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].command(), Command::Invalid);
    // A stray response: INVALID with the ids swapped.
    let stray = Packet::new(77, 5, 1, 0, Command::DpResponse, true, vec![])
        .encode()
        .unwrap();
    a.handle_datagram(now, addr(B), &stray);
    let r = replies(&mut a);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].command(), Command::Invalid);
    assert_eq!((r[0].header.strans, r[0].header.dtrans), (5, 77));
    // ... but never INVALID for INVALID.
    let inv = Packet::new(78, 6, 0, 0, Command::Invalid, false, vec![])
        .encode()
        .unwrap();
    a.handle_datagram(now, addr(B), &inv);
    assert!(replies(&mut a).is_empty());
}

#[test]
fn precache_push_fills_the_cache() {
    let now = Instant::now();
    let push = || {
        let mut ies = discover(PEER.eid, "16669999", "e164");
        ies.push(Ie::Answer(pasarela::routing::dundi::wire::AnswerIe {
            eid: PEER.eid.parse().unwrap(),
            protocol: 2,
            flags: 1,
            weight: 0,
            destination: "16669999@127.0.0.2:5090".into(),
        }));
        ies.push(Ie::Expiration(30));
        request(21, Command::PrecacheRq, false, ies)
    };
    // A symmetric peer without `precache = inbound` may not fill our cache.
    let mut a = engine(&settings(&ANCHOR, &PEER, B, false), &ANCHOR, now);
    a.handle_datagram(now, addr(B), &push());
    let r = replies(&mut a);
    assert_eq!(r[1].command(), Command::PrecacheRp);
    assert!(
        r[1].ies.iter().any(|i| matches!(i, Ie::Cause { .. })),
        "{:?}",
        r[1]
    );
    assert!(a.cache().is_empty());
    assert_eq!(a.stats().precache_refused, 1);

    let mut s = settings(&ANCHOR, &PEER, B, false);
    s.peers[0].precache = Some(Model::Inbound);
    let mut a = engine(&s, &ANCHOR, now);
    a.handle_datagram(now, addr(B), &push());
    let r = replies(&mut a);
    assert_eq!(r[1].command(), Command::PrecacheRp);
    let id = a.lookup(now, "16669999", "e164", None, false);
    match a.poll_event() {
        Some(Event::LookupDone { id: x, result }) => {
            assert_eq!(x, id);
            assert!(result.from_cache);
            assert_eq!(result.answers[0].destination, "16669999@127.0.0.2:5090");
        }
        other => panic!("{other:?}"),
    }
}

/// An answer carrying our own EID (a peer's cache handing ours back) is dropped: following it
/// would call ourselves.
#[test]
fn answers_with_our_own_eid_are_dropped() {
    let now = Instant::now();
    // B may push answers into our cache (`precache = inbound`), so the own-EID filter is
    // what stands between its push and a call to ourselves.
    let mut s = settings(&ANCHOR, &PEER, B, false);
    s.peers[0].precache = Some(Model::Inbound);
    let mut a = engine(&s, &ANCHOR, now);
    let mut ies = discover(PEER.eid, "16668888", "e164");
    for (eid, dest) in [
        (ANCHOR.eid, "16668888@127.0.0.1:5060"),
        (PEER.eid, "16668888@127.0.0.2:5090"),
    ] {
        ies.push(Ie::Answer(pasarela::routing::dundi::wire::AnswerIe {
            eid: eid.parse().unwrap(),
            protocol: 2,
            flags: 1,
            weight: 0,
            destination: dest.into(),
        }));
    }
    ies.push(Ie::Expiration(30));
    a.handle_datagram(now, addr(B), &request(22, Command::PrecacheRq, false, ies));
    let _ = replies(&mut a);
    a.lookup(now, "16668888", "e164", None, false);
    match a.poll_event() {
        Some(Event::LookupDone { result, .. }) => {
            let dests: Vec<&str> = result
                .answers
                .iter()
                .map(|x| x.destination.as_str())
                .collect();
            assert_eq!(dests, ["16668888@127.0.0.2:5090"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn replayed_qualify_and_encrypted_lookup_towards_anchor() {
    let now = Instant::now();
    let mut a = engine(&settings(&ANCHOR, &PEER, B, true), &ANCHOR, now);
    // #3: B's NULL|FINAL; #4 is A's ACK|FINAL.
    let (from, bytes) = capture_packet("encrypted", 3);
    a.handle_datagram(now, from, &bytes);
    let (_, ack) = a.poll_transmit().expect("ACK");
    assert_eq!(ack[2..], capture_packet("encrypted", 4).1[2..]);
    assert!(a.poll_transmit().is_none());
    assert_eq!(a.transactions(), 0);
    // #5: B's ENCRYPT with its full key: DPDISCOVER 15551234. We answer like #6/#7.
    let listed = read_listing(&testdata().join("encrypted-decoded.txt"));
    let (from, bytes) = capture_packet("encrypted", 5);
    a.handle_datagram(now, from, &bytes);
    let (_, ack) = a.poll_transmit().expect("ACK");
    assert_eq!(ack[2..], capture_packet("encrypted", 6).1[2..]);
    let (_, resp) = a.poll_transmit().expect("response");
    let p = Packet::decode(&resp).unwrap();
    let key: [u8; 16] = listed[4].aes_key.clone().unwrap().try_into().unwrap();
    let Some(Ie::EncData { iv, data }) = p.ies.first() else {
        panic!("{p:?}")
    };
    let inner = crypto::decrypt_packet(&p.header, iv, data, &key).unwrap();
    assert_eq!(Some(inner.encode().unwrap()[6..].to_vec()), listed[6].inner);
    // #21: EIDQUERY by crc; the answer is #23's inner packet.
    let (from, bytes) = capture_packet("encrypted", 21);
    a.handle_datagram(now, from, &bytes);
    let _ack = a.poll_transmit().expect("ACK");
    let (_, resp) = a.poll_transmit().expect("response");
    let p = Packet::decode(&resp).unwrap();
    let Some(Ie::EncData { iv, data }) = p.ies.first() else {
        panic!("{p:?}")
    };
    let inner = crypto::decrypt_packet(&p.header, iv, data, &key).unwrap();
    assert_eq!(
        Some(inner.encode().unwrap()[6..].to_vec()),
        listed[22].inner
    );
}

#[test]
fn plain_peer_must_come_from_its_address() {
    let now = Instant::now();
    let mut a = engine(&settings(&ANCHOR, &PEER, B, false), &ANCHOR, now);
    // Someone else claiming to be B.
    a.handle_datagram(
        now,
        addr("127.0.0.66:4520"),
        &request(
            31,
            Command::DpDiscover,
            false,
            discover(PEER.eid, "15551234", "e164"),
        ),
    );
    let r = replies(&mut a);
    assert_eq!(
        r[1].find(|i| match i {
            Ie::Cause { code, .. } => Some(*code),
            _ => None,
        }),
        Some(3)
    );
    assert!(!r[1].ies.iter().any(|i| matches!(i, Ie::Answer(_))));
}

#[test]
fn reload_keeps_sessions_and_applies_changes() {
    let mut net = Net::new(true);
    assert_eq!(net.lookup_from_b("15551234", true).answers.len(), 1);
    // A's mapping changes; B reloads unchanged settings: its session key stays (crc only).
    let mut sa = settings(&ANCHOR, &PEER, B, true);
    sa.mappings[0].destination = "${NUMBER}@198.51.100.1:5060".into();
    net.a
        .reload(&sa, Keys::load(&sa).unwrap(), net.now)
        .unwrap();
    let sb = settings(&PEER, &ANCHOR, A, true);
    net.b
        .reload(&sb, Keys::load(&sb).unwrap(), net.now)
        .unwrap();
    let before = net.log.len();
    let r = net.lookup_from_b("15551234", true);
    assert_eq!(r.answers[0].destination, "15551234@198.51.100.1:5060");
    let first = Packet::decode(&net.log[before].1).unwrap();
    assert!(matches!(first.ies[1], Ie::KeyCrc32(_)), "{first:?}");
    // Without peers B asks nobody.
    let mut sb = settings(&PEER, &ANCHOR, A, true);
    sb.peers.clear();
    net.b
        .reload(&sb, Keys::load(&sb).unwrap(), net.now)
        .unwrap();
    assert_eq!(net.lookup_from_b("15551234", true).asked, 0);
}
