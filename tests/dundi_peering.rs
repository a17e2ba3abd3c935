//! Two DUNDi services on loopback (127.0.0.2 and 127.0.0.3) peering over real UDP with
//! encryption: lookups both ways, qualify, the DONT_ASK hint for unknown numbers, EIDQUERY,
//! the cache, and a dead peer costing no more than the deadline.

mod dundi_common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dundi_common::testdata;
use pasarela::routing::dundi::wire::hint_flags;
use pasarela::routing::dundi::{
    DundiHandle, DundiService, Eid, EntityInfo, Mapping, PatternNumbers, PeerSettings,
    Reachability, Settings,
};

struct Side {
    name: &'static str,
    eid: Eid,
    socket: UdpSocket,
    patterns: &'static [&'static str],
}

fn side(name: &'static str, eid: &str, ip: &str, patterns: &'static [&'static str]) -> Side {
    Side {
        name,
        eid: eid.parse().unwrap(),
        socket: UdpSocket::bind((ip, 0)).expect("bind loopback"),
        patterns,
    }
}

fn start(me: Side, other: (&str, Eid), other_addr: SocketAddr) -> DundiHandle {
    let keys = testdata().join("keys");
    let mut peer = PeerSettings::new(other.1, other_addr, "e164");
    peer.inkey = Some(keys.join(format!("{}.pub", other.0)));
    peer.qualify = Some(Duration::from_secs(60));
    let settings = Settings {
        eid: Some(me.eid),
        bind: me.socket.local_addr().unwrap(),
        private_key: Some(keys.join(format!("{}.key", me.name))),
        entity: EntityInfo {
            organization: format!("{} office", me.name),
            ..Default::default()
        },
        mappings: vec![Mapping::sip("e164", "dids", "${NUMBER}@${IPADDR}:5060")],
        peers: vec![peer],
        cache_ttl: Duration::from_secs(300),
        ttl: 32,
        ..Default::default()
    };
    let mut numbers = PatternNumbers::new();
    numbers.add("dids", me.patterns).unwrap();
    DundiService::start_on(me.socket, settings, Arc::new(numbers)).unwrap()
}

fn pair() -> (DundiHandle, DundiHandle) {
    let a = side("anchor", "02:00:00:00:00:01", "127.0.0.2", &["_4930123XXX"]);
    let b = side("peer", "02:00:00:00:00:02", "127.0.0.3", &["_4940555XXXX"]);
    let (a_addr, b_addr) = (
        a.socket.local_addr().unwrap(),
        b.socket.local_addr().unwrap(),
    );
    let (a_id, b_id) = ((a.name, a.eid), (b.name, b.eid));
    let ha = start(a, b_id, b_addr);
    let hb = start(b, a_id, a_addr);
    (ha, hb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_lookups_both_ways_over_udp() {
    let (a, b) = pair();
    let r = b
        .lookup_full("4930123456", "e164", Duration::from_secs(3), false)
        .await
        .unwrap();
    let answers = r.answers.clone();
    assert_eq!(answers.len(), 1, "{r:?}");
    assert_eq!(answers[0].destination, "4930123456@127.0.0.2:5060");
    assert_eq!(
        answers[0].sip_uri().as_deref(),
        Some("sip:4930123456@127.0.0.2:5060")
    );
    assert_eq!(answers[0].eid, a.eid());
    assert!(answers[0].exists());

    let answers = a
        .lookup("49405551234", "e164", Duration::from_secs(3))
        .await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].destination, "49405551234@127.0.0.3:5060");

    // From the cache the second time, then flushed.
    let r = a
        .lookup_full("49405551234", "e164", Duration::from_secs(3), false)
        .await
        .unwrap();
    assert!(r.from_cache);
    assert_eq!(a.cache().await.len(), 1);
    a.flush_cache().await;
    assert!(a.cache().await.is_empty());
    let sa = a.stats().await;
    assert_eq!((sa.lookups, sa.lookups_answered, sa.cache_hits), (2, 2, 1));
    assert_eq!(sa.queries_answered, 1);
    assert_eq!(sa.decrypt_failures, 0);
    assert!(sa.datagrams_in >= 3 && sa.datagrams_out >= 3, "{sa:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_number_gets_dont_ask_hint() {
    let (_a, b) = pair();
    let r = b
        .lookup_full("4989777", "e164", Duration::from_secs(3), true)
        .await
        .unwrap();
    assert!(r.answers.is_empty());
    assert_ne!(r.hint_flags & hint_flags::DONT_ASK, 0, "{r:?}");
    assert_eq!(r.dont_ask_prefix, "498");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualify_and_eid_query() {
    let (a, b) = pair();
    let rtt = b.qualify(a.eid()).await.expect("anchor answers pings");
    assert!(rtt < Duration::from_secs(1));
    let peers = b.peers().await;
    assert!(matches!(peers[0].reachability, Reachability::Reachable(_)));
    assert!(peers[0].encrypted);
    let info = b
        .query_eid(a.eid(), a.eid(), Duration::from_secs(3))
        .await
        .expect("contact record");
    assert_eq!(info.organization, "anchor office");
    assert_eq!(info.ipaddr, "127.0.0.2");
    // Not a peer.
    assert_eq!(b.qualify("02:00:00:00:00:09".parse().unwrap()).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_peer_costs_the_deadline_only() {
    let keys = testdata().join("keys");
    // A peer address where nothing answers.
    let silent = UdpSocket::bind("127.0.0.3:0").unwrap();
    let mut peer = PeerSettings::new(
        "02:00:00:00:00:02".parse().unwrap(),
        silent.local_addr().unwrap(),
        "e164",
    );
    peer.inkey = Some(keys.join("peer.pub"));
    let settings = Settings {
        eid: Some("02:00:00:00:00:01".parse().unwrap()),
        private_key: Some(keys.join("anchor.key")),
        peers: vec![peer],
        ..Default::default()
    };
    let sock = UdpSocket::bind("127.0.0.2:0").unwrap();
    let h = DundiService::start_on(sock, settings, Arc::new(PatternNumbers::new())).unwrap();
    let t0 = Instant::now();
    let answers = h
        .lookup("4930123456", "e164", Duration::from_millis(400))
        .await;
    let took = t0.elapsed();
    assert!(answers.is_empty());
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dundi_is_a_route_source() {
    use pasarela::routing::dundi::DundiSource;
    use pasarela::routing::router::RouteSource;
    use pasarela::routing::E164;
    let (_a, b) = pair();
    let source = DundiSource::new(b.clone(), "e164");
    assert_eq!(source.name(), "DUNDi");
    let n = E164::from_digits("4930123456").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let ans = source.lookup(&n, deadline).await;
    assert_eq!(ans.targets.len(), 1, "{:?}", ans.steps);
    assert_eq!(ans.targets[0].uri, "sip:4930123456@127.0.0.2:5060");
    assert_eq!(ans.targets[0].via, "DUNDi 02:00:00:00:00:01");
    assert!(
        ans.steps[0].contains("asked 1 peer(s), 1 answer(s)"),
        "{:?}",
        ans.steps
    );
    let miss = E164::from_digits("4989123456").unwrap();
    let ans = source.lookup(&miss, deadline).await;
    assert!(ans.targets.is_empty());
    assert!(
        ans.steps
            .iter()
            .any(|s| s.contains("nothing for numbers starting 498")),
        "{:?}",
        ans.steps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_new_mappings() {
    let (a, b) = pair();
    assert_eq!(
        b.lookup("4930123456", "e164", Duration::from_secs(3))
            .await
            .len(),
        1
    );
    // a now answers with another destination; a bad reload is refused and changes nothing.
    let keys = testdata().join("keys");
    let mut peer = PeerSettings::new(b.eid(), b.local_addr(), "e164");
    peer.inkey = Some(keys.join("peer.pub"));
    let good = Settings {
        eid: Some(a.eid()),
        private_key: Some(keys.join("anchor.key")),
        mappings: vec![Mapping::sip("e164", "dids", "${NUMBER}@pbx.example:5060")],
        peers: vec![peer.clone()],
        ..Default::default()
    };
    let mut bad = good.clone();
    bad.peers.push(peer);
    assert!(a.reload(bad).await.is_err());
    a.reload(good).await.unwrap();
    let answers = b
        .lookup_full("4930123456", "e164", Duration::from_secs(3), true)
        .await
        .unwrap()
        .answers;
    assert_eq!(answers[0].destination, "4930123456@pbx.example:5060");
}
