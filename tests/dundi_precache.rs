//! Precaching between two DUNDi engines in memory under simulated time: A pushes the answers
//! for its DIDs to B (PRECACHERQ / PRECACHERP), plain and encrypted; B keeps them and answers a
//! later lookup from its cache without asking anybody; a peer not configured for precache gets
//! nothing; a lost PRECACHERQ is sent again; the push repeats on start and when the answers
//! expire, as Asterisk's precache queue does.

mod dundi_common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dundi_common::*;
use pasarela::routing::dundi::engine::{
    Engine, Event, Keys, LookupResult, PrecacheReport, MAX_ANSWER_TTL, MAX_PEER_ANSWERS,
};
use pasarela::routing::dundi::wire::{
    answer_flags, cause, proto, AnswerIe, Command, Header, Ie, Packet,
};
use pasarela::routing::dundi::{
    AnyOf, LocalNumbers, Mapping, Model, NumberSet, PatternNumbers, PeerSettings, Settings,
};

const A: &str = "127.0.0.1:4520";
const B: &str = "127.0.0.2:4520";
const A_EID: &str = "02:00:00:00:00:01";
const B_EID: &str = "02:00:00:00:00:02";
const DID: &str = "4930123456";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// How the two ends are configured.
#[derive(Clone, Copy)]
struct Setup {
    encrypted: bool,
    /// A's `precache` setting for B.
    a_precache: Option<Model>,
    /// B's `model` and `precache` for A.
    b_model: Model,
    b_precache: Option<Model>,
}

const PUSH: Setup = Setup {
    encrypted: false,
    a_precache: Some(Model::Outbound),
    b_model: Model::Symmetric,
    b_precache: Some(Model::Inbound),
};

fn settings(me: (&str, &str), other: (&str, &str, &str), encrypted: bool) -> Settings {
    let keys = testdata().join("keys");
    let mut peer = PeerSettings::new(other.1.parse().unwrap(), addr(other.2), "e164");
    if encrypted {
        peer.inkey = Some(keys.join(format!("{}.pub", other.0)));
    }
    Settings {
        eid: Some(me.1.parse().unwrap()),
        private_key: encrypted.then(|| keys.join(format!("{}.key", me.0))),
        mappings: vec![Mapping::sip("e164", "dids", "${NUMBER}@${IPADDR}:5060")],
        peers: vec![peer],
        cache_ttl: Duration::from_secs(60),
        ttl: 32,
        ipaddr: "192.0.2.1".into(),
        ..Default::default()
    }
}

struct Net {
    a: Engine,
    b: Engine,
    now: Instant,
    log: Vec<(SocketAddr, Vec<u8>)>,
    events_a: Vec<Event>,
    events_b: Vec<Event>,
}

impl Net {
    fn new(s: Setup) -> Net {
        let now = Instant::now();
        let mut sa = settings(("anchor", A_EID), ("peer", B_EID, B), s.encrypted);
        sa.peers[0].precache = s.a_precache;
        let mut sb = settings(("peer", B_EID), ("anchor", A_EID, A), s.encrypted);
        sb.peers[0].model = s.b_model;
        sb.peers[0].precache = s.b_precache;
        // A: one DID and a pattern (patterns are only pushed when asked for by number).
        let dids: Arc<dyn LocalNumbers> = Arc::new(NumberSet::new([format!("+{DID}")]));
        let mut pat = PatternNumbers::new();
        pat.add("dids", &["_4930999XXX"]).unwrap();
        let a_local = Arc::new(AnyOf(vec![dids, Arc::new(pat)]));
        let mut b_pat = PatternNumbers::new();
        b_pat.add("dids", &["_4940555XXXX"]).unwrap();
        let a = Engine::new(&sa, Keys::load(&sa).unwrap(), a_local, now).unwrap();
        let b = Engine::new(&sb, Keys::load(&sb).unwrap(), Arc::new(b_pat), now).unwrap();
        Net {
            a,
            b,
            now,
            log: Vec::new(),
            events_a: Vec::new(),
            events_b: Vec::new(),
        }
    }

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
            self.events_a
                .extend(std::iter::from_fn(|| self.a.poll_event()));
            self.events_b
                .extend(std::iter::from_fn(|| self.b.poll_event()));
            if !moved {
                return;
            }
        }
    }

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

    /// A pushes `numbers` on demand; the report once every peer answered or was given up.
    fn precache(
        &mut self,
        numbers: &[&str],
        drop: &mut dyn FnMut(SocketAddr, &[u8]) -> bool,
    ) -> PrecacheReport {
        let numbers: Vec<String> = numbers.iter().map(|n| n.to_string()).collect();
        let id = self.a.precache(self.now, "e164", &numbers);
        self.pump(drop);
        for _ in 0..100 {
            if let Some(i) = self
                .events_a
                .iter()
                .position(|e| matches!(e, Event::PrecacheDone { id: x, .. } if *x == id))
            {
                match self.events_a.remove(i) {
                    Event::PrecacheDone { report, .. } => return report,
                    _ => unreachable!(),
                }
            }
            self.tick(Duration::from_secs(1), drop);
        }
        panic!("precache {id:?} not done; events {:?}", self.events_a);
    }

    fn lookup_from_b(&mut self, number: &str) -> LookupResult {
        let id = self.b.lookup(self.now, number, "e164", None, false);
        self.pump(&mut |_, _| false);
        let i = self
            .events_b
            .iter()
            .position(|e| matches!(e, Event::LookupDone { id: x, .. } if *x == id))
            .expect("lookup done");
        match self.events_b.remove(i) {
            Event::LookupDone { result, .. } => result,
            _ => unreachable!(),
        }
    }

    /// Commands on the wire since `from` (decrypting nothing: encrypted ones show ENCRYPT).
    fn cmds_since(&self, from: usize) -> Vec<(SocketAddr, u8)> {
        self.log[from..]
            .iter()
            .map(|(f, b)| (*f, Packet::decode(b).unwrap().header.cmdresp))
            .collect()
    }
}

fn no_drop() -> impl FnMut(SocketAddr, &[u8]) -> bool {
    |_, _| false
}

fn push_and_answer_from_cache(encrypted: bool) {
    let mut net = Net::new(Setup { encrypted, ..PUSH });
    let report = net.precache(&[DID], &mut no_drop());
    assert_eq!(report.sent, 1, "{report:?}");
    assert_eq!(report.peers_acknowledged(), 1, "{report:?}");
    assert_eq!(report.pushed, vec![("e164".to_string(), DID.to_string())]);
    assert!(report.refused.is_empty() && report.timed_out == 0);
    assert_eq!(net.a.transactions(), 0);
    assert_eq!(net.b.transactions(), 0);

    // B keeps the answers as A gives them to a DPDISCOVER.
    let cache = net.b.cache();
    assert_eq!(cache.len(), 1, "{cache:?}");
    assert_eq!(cache[0].number, DID);
    let ans = &cache[0].answers;
    assert_eq!(ans.len(), 1);
    assert_eq!(ans[0].destination, format!("{DID}@192.0.2.1:5060"));
    assert_eq!(ans[0].eid.to_string(), A_EID);
    assert_eq!(ans[0].via.to_string(), A_EID);
    assert_eq!(ans[0].expiration, 60);
    assert_ne!(ans[0].flags & answer_flags::EXISTS, 0);

    // A later lookup on B is answered from the cache: nothing goes on the wire.
    let before = net.log.len();
    let r = net.lookup_from_b(DID);
    assert!(r.from_cache, "{r:?}");
    assert_eq!(r.asked, 0);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(
        r.answers[0].sip_uri().unwrap(),
        format!("sip:{DID}@192.0.2.1:5060")
    );
    assert_eq!(
        net.log.len(),
        before,
        "B asked A: {:?}",
        net.cmds_since(before)
    );
    assert_eq!(net.b.stats().cache_hits, 1);
}

#[test]
fn plain_precache_is_answered_from_the_cache() {
    let mut net = Net::new(PUSH);
    let report = net.precache(&[DID], &mut no_drop());
    assert_eq!(report.peers_acknowledged(), 1);
    // PRECACHERQ, ACK, PRECACHERP|FINAL, ACK|FINAL.
    assert_eq!(
        net.cmds_since(0),
        vec![
            (addr(A), 0x05),
            (addr(B), 0x40),
            (addr(B), 0xc6),
            (addr(A), 0xc0)
        ]
    );
    // The request carries what Asterisk's precache_trans puts in, in its order.
    let rq = Packet::decode(&net.log[0].1).unwrap();
    let kinds: Vec<&str> = rq
        .ies
        .iter()
        .map(|i| match i {
            Ie::Version(1) => "VERSION",
            Ie::Eid(_) => "EID",
            Ie::CalledNumber(_) => "NUMBER",
            Ie::CalledContext(_) => "CONTEXT",
            Ie::Ttl(32) => "TTL",
            Ie::Answer(_) => "ANSWER",
            Ie::Hint { flags: 0, .. } => "HINT",
            Ie::Expiration(60) => "EXPIRATION",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "VERSION",
            "EID",
            "NUMBER",
            "CONTEXT",
            "TTL",
            "ANSWER",
            "HINT",
            "EXPIRATION"
        ]
    );
    assert!(rq
        .ies
        .iter()
        .any(|i| matches!(i, Ie::Eid(e) if e.to_string() == A_EID)));
    push_and_answer_from_cache(false);
}

#[test]
fn encrypted_precache_is_answered_from_the_cache() {
    push_and_answer_from_cache(true);
    let mut net = Net::new(Setup {
        encrypted: true,
        ..PUSH
    });
    net.precache(&[DID], &mut no_drop());
    // The request went inside ENCRYPT, nothing of it in the clear.
    let (from, first) = &net.log[0];
    assert_eq!(*from, addr(A));
    assert_eq!(Packet::decode(first).unwrap().command(), Command::Encrypt);
    assert!(!first.windows(DID.len()).any(|w| w == DID.as_bytes()));
}

#[test]
fn peers_not_configured_for_precache_get_none() {
    let mut net = Net::new(Setup {
        a_precache: None,
        ..PUSH
    });
    let report = net.precache(&[DID], &mut no_drop());
    assert_eq!(report, PrecacheReport::default());
    assert!(net.log.is_empty());
    // Nor does an automatic push happen over time.
    net.run_for(Duration::from_secs(200), &mut no_drop());
    assert!(net.log.is_empty(), "{:?}", net.cmds_since(0));
    assert!(net.a.precache_queue().is_empty());
    assert!(net.b.cache().is_empty());

    // `inbound` precache is taking, not giving: nothing goes out either.
    let mut net = Net::new(Setup {
        a_precache: Some(Model::Inbound),
        ..PUSH
    });
    assert_eq!(net.precache(&[DID], &mut no_drop()).sent, 0);
    assert!(net.log.is_empty());
}

#[test]
fn a_peer_that_does_not_take_precache_refuses() {
    // B only asks A (model outbound, no precache inbound): it refuses, keeps nothing.
    let mut net = Net::new(Setup {
        b_model: Model::Outbound,
        b_precache: None,
        ..PUSH
    });
    let report = net.precache(&[DID], &mut no_drop());
    assert_eq!(report.sent, 1);
    assert_eq!(report.peers_acknowledged(), 0);
    assert_eq!(report.refused.len(), 1, "{report:?}");
    assert_eq!(report.refused[0].2, cause::NOAUTH);
    assert!(net.b.cache().is_empty());
    assert_eq!(net.b.stats().precache_refused, 1);

    // A symmetric `model` is about asking and answering, not about writing into our cache:
    // with `precache = none` (the default) the push is refused too, plain or encrypted.
    for encrypted in [false, true] {
        let mut net = Net::new(Setup {
            encrypted,
            b_model: Model::Symmetric,
            b_precache: None,
            ..PUSH
        });
        let report = net.precache(&[DID], &mut no_drop());
        assert_eq!(report.peers_acknowledged(), 0, "{report:?}");
        assert_eq!(report.refused.len(), 1, "{report:?}");
        assert_eq!(report.refused[0].2, cause::NOAUTH);
        assert!(net.b.cache().is_empty());
        assert_eq!(net.b.stats().precache_refused, 1);
    }

    // With `precache = inbound` it takes them (Asterisk's pcmodel).
    let mut net = Net::new(Setup {
        b_model: Model::Outbound,
        b_precache: Some(Model::Inbound),
        ..PUSH
    });
    assert_eq!(net.precache(&[DID], &mut no_drop()).peers_acknowledged(), 1);
    assert_eq!(net.b.cache().len(), 1);
}

#[test]
fn numbers_without_answers_are_not_pushed() {
    let mut net = Net::new(PUSH);
    let report = net.precache(&["4977777777", ""], &mut no_drop());
    assert_eq!(report.sent, 0);
    assert!(net.log.is_empty());
    // A pattern number is pushed when named.
    let report = net.precache(&["4930999123"], &mut no_drop());
    assert_eq!(report.peers_acknowledged(), 1);
    assert_eq!(net.b.cache()[0].number, "4930999123");
}

#[test]
fn a_lost_precache_request_is_sent_again() {
    let mut net = Net::new(PUSH);
    let mut first = true;
    let mut drop_first_rq = |from: SocketAddr, b: &[u8]| {
        let rq = from == addr(A) && Packet::decode(b).unwrap().command() == Command::PrecacheRq;
        let lost = rq && first;
        if rq {
            first = false;
        }
        lost
    };
    let t0 = net.now;
    let report = net.precache(&[DID], &mut drop_first_rq);
    assert_eq!(report.peers_acknowledged(), 1, "{report:?}");
    assert_eq!(net.a.stats().retransmissions, 1);
    assert!(net.now >= t0 + Duration::from_secs(1));
    let rqs = net
        .cmds_since(0)
        .iter()
        .filter(|(f, c)| *f == addr(A) && *c == 0x05)
        .count();
    assert_eq!(rqs, 2);
    assert_eq!(net.b.cache().len(), 1);
    assert!(net.lookup_from_b(DID).from_cache);
}

#[test]
fn a_silent_peer_is_given_up() {
    let mut net = Net::new(PUSH);
    let report = net.precache(&[DID], &mut |_, _| true);
    assert_eq!(report.sent, 1);
    assert_eq!(report.timed_out, 1);
    assert_eq!(report.peers_acknowledged(), 0);
    assert_eq!(net.a.transactions(), 0);
}

#[test]
fn precache_on_start_and_again_on_expiry() {
    let mut net = Net::new(PUSH);
    // Asterisk's dundi_precache_full on load: every known whole number is queued at once (the
    // DID; the pattern cannot be listed).
    let q = net.a.precache_queue();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!((q[0].0.as_str(), q[0].1.as_str()), ("e164", DID));
    net.tick(Duration::from_millis(10), &mut no_drop());
    assert_eq!(net.b.cache().len(), 1);
    let pushed_at = net.now;
    // Re-queued for when the answers expire (cache_ttl, 60 s here).
    let q = net.a.precache_queue();
    assert_eq!(q[0].2, pushed_at + Duration::from_secs(60));
    let rqs = |net: &Net| {
        net.cmds_since(0)
            .iter()
            .filter(|(f, c)| *f == addr(A) && *c == 0x05)
            .count()
    };
    assert_eq!(rqs(&net), 1);
    net.run_for(Duration::from_secs(59), &mut no_drop());
    assert_eq!(rqs(&net), 1);
    net.run_for(Duration::from_secs(2), &mut no_drop());
    assert_eq!(rqs(&net), 2);
    // B's entry was refreshed, so its lookups keep coming from the cache.
    let before = net.log.len();
    assert!(net.lookup_from_b(DID).from_cache);
    assert_eq!(net.log.len(), before);
}

#[test]
fn precache_all_pushes_every_known_number() {
    let mut net = Net::new(PUSH);
    let id = net.a.precache_all(net.now);
    net.pump(&mut no_drop());
    let report = net
        .events_a
        .iter()
        .find_map(|e| match e {
            Event::PrecacheDone { id: x, report } if *x == id => Some(report.clone()),
            _ => None,
        })
        .expect("done");
    assert_eq!(report.pushed, vec![("e164".to_string(), DID.to_string())]);
    assert_eq!(report.peers_acknowledged(), 1);
}

/// A's first PRECACHERQ for `DID`, as it goes on the wire (plain).
fn captured_precache_rq() -> Vec<u8> {
    let mut net = Net::new(PUSH);
    net.precache(&[DID], &mut no_drop());
    let (from, rq) = net.log[0].clone();
    assert_eq!(from, addr(A));
    assert_eq!(Packet::decode(&rq).unwrap().command(), Command::PrecacheRq);
    rq
}

/// B's engine alone (peer A plain, `precache = inbound`), with `cache_ttl`.
fn lone_b(cache_ttl: Duration, now: Instant) -> Engine {
    let mut sb = settings(("peer", B_EID), ("anchor", A_EID, A), false);
    sb.peers[0].precache = Some(Model::Inbound);
    sb.cache_ttl = cache_ttl;
    let mut b_pat = PatternNumbers::new();
    b_pat.add("dids", &["_4940555XXXX"]).unwrap();
    Engine::new(&sb, Keys::load(&sb).unwrap(), Arc::new(b_pat), now).unwrap()
}

/// The causes in what `b` sent back.
fn causes(b: &mut Engine) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((_, bytes)) = b.poll_transmit() {
        let p = Packet::decode(&bytes).unwrap();
        for i in &p.ies {
            if let Ie::Cause { code, .. } = i {
                out.push(*code);
            }
        }
    }
    out
}

#[test]
fn a_spoofed_plain_precache_is_ignored_and_counted() {
    let rq = captured_precache_rq();
    let now = Instant::now();
    let mut b = lone_b(Duration::from_secs(3600), now);
    // The peer's address with another source port (what a spoofer who knows the peer's
    // address sends), and another address altogether.
    for from in ["127.0.0.1:4521", "127.0.0.1:40000", "127.0.0.9:4520"] {
        b.handle_datagram(now, addr(from), &rq);
        assert!(b.cache().is_empty(), "cached from {from}: {:?}", b.cache());
        assert_eq!(causes(&mut b), vec![cause::NOAUTH], "from {from}");
    }
    assert_eq!(b.stats().precache_refused, 3);
    // The same bytes from the configured address and port are taken.
    b.handle_datagram(now, addr(A), &rq);
    assert_eq!(b.cache().len(), 1);
    assert!(causes(&mut b).is_empty());
    assert_eq!(b.stats().precache_refused, 3);
}

#[test]
fn an_unknown_peer_cannot_precache() {
    let now = Instant::now();
    let mut b = lone_b(Duration::from_secs(3600), now);
    let stranger: pasarela::routing::dundi::Eid = "02:00:00:00:00:66".parse().unwrap();
    let rq = Packet {
        header: Header {
            strans: 7,
            dtrans: 0,
            iseqno: 0,
            oseqno: 0,
            cmdresp: Command::PrecacheRq.code(),
            cmdflags: 0,
        },
        ies: vec![
            Ie::Version(1),
            Ie::Eid(stranger),
            Ie::CalledNumber(DID.into()),
            Ie::CalledContext("e164".into()),
            Ie::Ttl(32),
            Ie::Answer(AnswerIe {
                eid: stranger,
                protocol: proto::SIP,
                flags: answer_flags::EXISTS,
                weight: 0,
                destination: format!("{DID}@203.0.113.66"),
            }),
            Ie::Expiration(3600),
        ],
    };
    b.handle_datagram(now, addr(A), &rq.encode().unwrap());
    assert!(b.cache().is_empty());
    assert_eq!(causes(&mut b), vec![cause::NOAUTH]);
    assert_eq!(b.stats().precache_refused, 1);
}

#[test]
fn a_peers_answers_are_bounded_in_number_and_lifetime() {
    let now = Instant::now();
    // Even with a cache lifetime of a day, a peer's answer is believed for an hour at most.
    let mut b = lone_b(Duration::from_secs(86_400), now);
    let a_eid: pasarela::routing::dundi::Eid = A_EID.parse().unwrap();
    let mut ies = vec![
        Ie::Version(1),
        Ie::Eid(a_eid),
        Ie::CalledNumber(DID.into()),
        Ie::CalledContext("e164".into()),
        Ie::Ttl(32),
    ];
    for i in 0..40 {
        ies.push(Ie::Answer(AnswerIe {
            eid: a_eid,
            protocol: proto::SIP,
            flags: answer_flags::EXISTS,
            weight: i,
            destination: format!("{DID}@192.0.2.{i}"),
        }));
    }
    ies.push(Ie::Expiration(u16::MAX));
    let rq = Packet {
        header: Header {
            strans: 9,
            dtrans: 0,
            iseqno: 0,
            oseqno: 0,
            cmdresp: Command::PrecacheRq.code(),
            cmdflags: 0,
        },
        ies,
    };
    b.handle_datagram(now, addr(A), &rq.encode().unwrap());
    let cache = b.cache();
    assert_eq!(cache.len(), 1, "{cache:?}");
    assert_eq!(cache[0].answers.len(), MAX_PEER_ANSWERS);
    assert_eq!(cache[0].answers[0].destination, format!("{DID}@192.0.2.0"));
    assert!(cache[0].answers.iter().all(|a| a.expiration <= 3600));
    assert!(
        cache[0].expires <= now + MAX_ANSWER_TTL,
        "{:?}",
        cache[0].expires - now
    );
    assert_eq!(b.stats().answers_dropped, 40 - MAX_PEER_ANSWERS as u64);
    // After the hour it is gone.
    b.handle_timeout(now + MAX_ANSWER_TTL + Duration::from_secs(1));
    assert!(b.cache().is_empty(), "{:?}", b.cache());
}
