//! Precache over real UDP: two encrypted DUNDi services on loopback (127.0.0.2 and 127.0.0.3)
//! configured as Asterisk wants a push pair (A: `model=outbound`, `precache=outbound` for B;
//! B: `model=inbound`, `precache=inbound` for A). A pushes its DIDs on start and on demand; B
//! answers lookups of them from its cache without asking.

mod dundi_common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dundi_common::testdata;
use pasarela::routing::dundi::{
    DundiHandle, DundiService, Eid, Mapping, Model, NumberSet, PeerSettings, Settings,
};

struct Side {
    name: &'static str,
    eid: Eid,
    socket: UdpSocket,
}

fn side(name: &'static str, eid: &str, ip: &str) -> Side {
    Side {
        name,
        eid: eid.parse().unwrap(),
        socket: UdpSocket::bind((ip, 0)).expect("bind loopback"),
    }
}

fn start(
    me: Side,
    other: (&str, Eid),
    other_addr: SocketAddr,
    models: (Model, Model),
    dids: &[&str],
) -> DundiHandle {
    let keys = testdata().join("keys");
    let mut peer = PeerSettings::new(other.1, other_addr, "e164");
    peer.inkey = Some(keys.join(format!("{}.pub", other.0)));
    peer.model = models.0;
    peer.precache = Some(models.1);
    let settings = Settings {
        eid: Some(me.eid),
        bind: me.socket.local_addr().unwrap(),
        private_key: Some(keys.join(format!("{}.key", me.name))),
        mappings: vec![Mapping::sip("e164", "dids", "${NUMBER}@${IPADDR}:5060")],
        peers: vec![peer],
        cache_ttl: Duration::from_secs(300),
        ttl: 32,
        ..Default::default()
    };
    let numbers = NumberSet::new(dids.iter().copied());
    DundiService::start_on(me.socket, settings, Arc::new(numbers)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_dids_are_answered_from_the_cache_over_udp() {
    let a = side("anchor", "02:00:00:00:00:01", "127.0.0.2");
    let b = side("peer", "02:00:00:00:00:02", "127.0.0.3");
    let (a_addr, b_addr) = (
        a.socket.local_addr().unwrap(),
        b.socket.local_addr().unwrap(),
    );
    let (a_id, b_id) = ((a.name, a.eid), (b.name, b.eid));
    // B first, so A's push on start finds it listening.
    let hb = start(b, a_id, a_addr, (Model::Inbound, Model::Inbound), &[]);
    let ha = start(
        a,
        b_id,
        b_addr,
        (Model::Outbound, Model::Outbound),
        &["+4930123456", "4930123457"],
    );

    // The push on start: both DIDs arrive without anybody asking.
    let t0 = Instant::now();
    loop {
        let cache = hb.cache().await;
        if cache.len() == 2 {
            assert_eq!(cache[0].number, "4930123456");
            assert_eq!(cache[1].number, "4930123457");
            assert_eq!(cache[0].answers[0].destination, "4930123456@127.0.0.2:5060");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no precache on start: {cache:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // On demand, after B forgot: one peer acknowledged.
    hb.flush_cache().await;
    assert_eq!(ha.precache(&["4930123456"], "e164").await, 1);
    let r = hb
        .lookup_full("4930123456", "e164", Duration::from_millis(500), false)
        .await
        .unwrap();
    assert!(r.from_cache, "{r:?}");
    assert_eq!(r.asked, 0);
    assert_eq!(
        r.answers[0].sip_uri().as_deref(),
        Some("sip:4930123456@127.0.0.2:5060")
    );
    // A number A does not have is not pushed; B's lookup for it finds nothing to ask.
    assert_eq!(ha.precache(&["4930999999"], "e164").await, 0);
    let report = ha
        .precache_report(Some(("e164".into(), vec!["4930123457".into()])))
        .await
        .unwrap();
    assert_eq!(report.sent, 1);
    assert_eq!(report.acknowledged.len(), 1);
    assert_eq!(ha.precache_all().await, 1);
    let stats = hb.stats().await;
    assert!(stats.cache_hits >= 1);
    assert_eq!(stats.decrypt_failures, 0);
    ha.stop().await;
    hb.stop().await;
}
