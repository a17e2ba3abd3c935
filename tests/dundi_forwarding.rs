//! DUNDi forwarding, as Asterisk does it: a node without a weight-0 answer passes a peer's
//! lookup on to its other peers with TTL one less, listing the request's EID path so that no
//! entity is asked twice; answers and DONT_ASK hints flow back. Three engines in a triangle.

mod dundi_common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dundi_common::testdata;
use pasarela::routing::dundi::engine::{Engine, Event, Keys, LookupResult};
use pasarela::routing::dundi::wire::{hint_flags, Command, Ie, Packet};
use pasarela::routing::dundi::{Eid, Mapping, PatternNumbers, PeerSettings, Settings};

struct Node {
    name: &'static str,
    eid: Eid,
    addr: SocketAddr,
    patterns: &'static [&'static str],
}

fn nodes() -> Vec<Node> {
    vec![
        Node {
            name: "anchor",
            eid: "02:00:00:00:00:01".parse().unwrap(),
            addr: "127.0.0.1:4520".parse().unwrap(),
            patterns: &["_1555XXXX"],
        },
        Node {
            name: "peer",
            eid: "02:00:00:00:00:02".parse().unwrap(),
            addr: "127.0.0.2:4520".parse().unwrap(),
            patterns: &["_1666XXXX"],
        },
        Node {
            name: "ext",
            eid: "02:00:00:00:00:03".parse().unwrap(),
            addr: "127.0.0.3:4520".parse().unwrap(),
            patterns: &["_1777XXXX"],
        },
    ]
}

/// Engines keyed by address; `links` lists who peers with whom (encrypted or not).
struct Mesh {
    engines: HashMap<SocketAddr, Engine>,
    now: Instant,
    log: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    events: HashMap<SocketAddr, Vec<Event>>,
}

fn mesh(links: &[(usize, usize, bool)]) -> (Mesh, Vec<Node>) {
    let ns = nodes();
    let keys = testdata().join("keys");
    let now = Instant::now();
    let mut engines = HashMap::new();
    for (i, n) in ns.iter().enumerate() {
        let mut peers = Vec::new();
        for &(x, y, enc) in links {
            let other = if x == i {
                y
            } else if y == i {
                x
            } else {
                continue;
            };
            let o = &ns[other];
            let mut p = PeerSettings::new(o.eid, o.addr, "e164");
            if enc {
                p.inkey = Some(keys.join(format!("{}.pub", o.name)));
            }
            peers.push(p);
        }
        let s = Settings {
            eid: Some(n.eid),
            private_key: Some(keys.join(format!("{}.key", n.name))),
            mappings: vec![Mapping::sip("e164", "local", "${NUMBER}@${IPADDR}:5060")],
            peers,
            ipaddr: n.addr.ip().to_string(),
            cache_ttl: Duration::from_secs(60),
            ttl: 32,
            ..Default::default()
        };
        let mut numbers = PatternNumbers::new();
        numbers.add("local", n.patterns).unwrap();
        let e = Engine::new(&s, Keys::load(&s).unwrap(), Arc::new(numbers), now).unwrap();
        engines.insert(n.addr, e);
    }
    (
        Mesh {
            engines,
            now,
            log: Vec::new(),
            events: HashMap::new(),
        },
        ns,
    )
}

impl Mesh {
    fn pump(&mut self) {
        loop {
            let mut moved = Vec::new();
            for (from, e) in self.engines.iter_mut() {
                while let Some((to, b)) = e.poll_transmit() {
                    moved.push((*from, to, b));
                }
                while let Some(ev) = e.poll_event() {
                    self.events.entry(*from).or_default().push(ev);
                }
            }
            if moved.is_empty() {
                return;
            }
            for (from, to, b) in moved {
                self.log.push((from, to, b.clone()));
                if let Some(e) = self.engines.get_mut(&to) {
                    e.handle_datagram(self.now, from, &b);
                }
            }
        }
    }

    fn lookup(&mut self, at: SocketAddr, number: &str, ttl: Option<u16>) -> LookupResult {
        let id = self
            .engines
            .get_mut(&at)
            .unwrap()
            .lookup(self.now, number, "e164", ttl, true);
        self.pump();
        let evs = self.events.entry(at).or_default();
        let i = evs
            .iter()
            .position(|e| matches!(e, Event::LookupDone { id: x, .. } if *x == id))
            .expect("lookup done");
        match evs.remove(i) {
            Event::LookupDone { result, .. } => result,
            _ => unreachable!(),
        }
    }

    fn discovers(&self) -> Vec<(SocketAddr, SocketAddr, Packet)> {
        self.log
            .iter()
            .filter_map(|(f, t, b)| {
                let p = Packet::decode(b).ok()?;
                (p.command() == Command::DpDiscover).then_some((*f, *t, p))
            })
            .collect()
    }
}

#[test]
fn chain_forwards_and_answers_come_back() {
    // anchor —(encrypted)— peer —(plain)— ext
    let (mut m, ns) = mesh(&[(0, 1, true), (1, 2, false)]);
    let r = m.lookup(ns[0].addr, "17771234", None);
    assert_eq!(r.answers.len(), 1, "{r:?}");
    assert_eq!(r.answers[0].destination, "17771234@127.0.0.3:5060");
    assert_eq!(r.answers[0].eid, ns[2].eid, "the original answerer");
    assert_eq!(r.answers[0].via, ns[1].eid);
    // peer asked ext with TTL one less and the path: EID_DIRECT(peer), then anchor — direct,
    // being a peer of peer's that it asks about e164 (Asterisk's rule, from the sender's view).
    let d = m.discovers();
    let (_, to, fwd) = d
        .iter()
        .find(|(f, _, _)| *f == ns[1].addr)
        .expect("forwarded");
    assert_eq!(*to, ns[2].addr);
    assert_eq!(
        fwd.ies,
        vec![
            Ie::Version(1),
            Ie::EidDirect(ns[1].eid),
            Ie::EidDirect(ns[0].eid),
            Ie::CalledNumber("17771234".into()),
            Ie::CalledContext("e164".into()),
            Ie::Ttl(31),
            Ie::CacheBypass,
        ]
    );
    // Nobody is left with a transaction.
    for e in m.engines.values() {
        assert_eq!(e.transactions(), 0);
    }
    // A number nobody has: DONT_ASK with the longest prefix anyone reported.
    let r = m.lookup(ns[0].addr, "19998887777", None);
    assert!(r.answers.is_empty());
    assert_ne!(r.hint_flags & hint_flags::DONT_ASK, 0, "{r:?}");
    assert_eq!(r.dont_ask_prefix, "19");
}

#[test]
fn ttl_runs_out() {
    let (mut m, ns) = mesh(&[(0, 1, false), (1, 2, false)]);
    let r = m.lookup(ns[0].addr, "17771234", Some(1));
    assert!(r.answers.is_empty());
    assert_ne!(r.hint_flags & hint_flags::TTL_EXPIRED, 0, "{r:?}");
    assert!(m.discovers().iter().all(|(f, _, _)| *f == ns[0].addr));
}

#[test]
fn triangle_does_not_loop() {
    let (mut m, ns) = mesh(&[(0, 1, true), (1, 2, false), (0, 2, false)]);
    // Nobody has it: every node is asked at most once per path, and it ends.
    let r = m.lookup(ns[0].addr, "18881234", None);
    assert!(r.answers.is_empty());
    let d = m.discovers();
    // anchor asks peer and ext; each of them may ask the other once (anchor is on the path).
    assert!(d.len() <= 4, "{} discovers", d.len());
    assert!(
        d.iter().all(|(_, to, _)| *to != ns[0].addr),
        "nobody asks anchor back"
    );
    for e in m.engines.values() {
        assert_eq!(e.transactions(), 0);
    }
    // With a real answer at ext, anchor gets it (directly and perhaps via peer, merged).
    let r = m.lookup(ns[0].addr, "17771234", None);
    assert_eq!(r.answers.len(), 1, "{r:?}");
}
