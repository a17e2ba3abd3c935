//! Relay tests over real UDP sockets on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::dtmf::TelephoneEvent;
use super::ports::free_test_range;
use super::rtp::{write_header, Rtp};
use super::*;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn engine(ports: RangeInclusive<u16>, dead_after: Duration) -> MediaEngine {
    MediaEngine::new(MediaConfig {
        bind_ip: LO,
        ports,
        dead_after,
    })
}

async fn phone() -> UdpSocket {
    UdpSocket::bind((LO, 0)).await.expect("bind phone")
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("local addr")
}

fn relay_addr(relay: &Relay, side: Side) -> SocketAddr {
    SocketAddr::new(LO, relay.local_port(side))
}

fn pkt(marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 12 + payload.len()];
    write_header(&mut p, marker, pt, seq, ts, ssrc).expect("header");
    p[12..].copy_from_slice(payload);
    p
}

async fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = [0u8; 2048];
    let (n, from) = timeout(Duration::from_secs(2), s.recv_from(&mut buf))
        .await
        .expect("packet expected")
        .expect("recv");
    (buf[..n].to_vec(), from)
}

async fn nothing(s: &UdpSocket, wait_ms: u64) -> bool {
    let mut buf = [0u8; 2048];
    timeout(Duration::from_millis(wait_ms), s.recv_from(&mut buf))
        .await
        .is_err()
}

/// How long a test waits for something the relay must do before it calls it stuck: far more
/// than it takes, even on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// Waits until the relay's I/O thread has applied every control message sent so far
/// (`update`, `send_dtmf`): packets sent from then on meet the new state.
async fn applied(relay: &Relay) {
    timeout(PATIENCE, relay.applied())
        .await
        .expect("control messages not applied in time")
        .expect("media I/O thread gone");
}

/// Waits until `cond` holds (the I/O thread's work shows in a relay's counters).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_in_use_zero(engine: &MediaEngine) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.in_use() != 0 {
        assert!(
            Instant::now() < deadline,
            "in_use stuck at {}",
            engine.in_use()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn relays_both_ways_and_latches() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let relay = engine.allocate().await.expect("allocate");
    assert_ne!(relay.local_port(Side::A), relay.local_port(Side::B));
    assert_eq!(relay.local_port(Side::A) % 2, 0);
    // Where A's SDP says it listens, with its RTCP port (+ 1) ours too.
    let a_ports = free_test_range(2);
    let a_sdp = UdpSocket::bind((LO, *a_ports.start())).await.expect("bind");
    let a_sdp_rtcp = UdpSocket::bind((LO, *a_ports.start() + 1))
        .await
        .expect("bind");
    let a_real = phone().await; // where A really sends from (behind NAT)
    let b = phone().await;
    relay.update(
        LegMedia::pcmu(Some(addr(&a_sdp)), None),
        LegMedia::pcmu(Some(addr(&b)), None),
    );
    applied(&relay).await;

    // B -> A before A sent anything: goes to A's SDP address, from our A-leg port.
    b.send_to(
        &pkt(false, 0, 1, 160, 0xB, &[0xFF; 160]),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    let (p, from) = recv(&a_sdp).await;
    assert_eq!(from, relay_addr(&relay, Side::A));
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").sequence(), 1);

    // A -> B from its real address.
    a_real
        .send_to(
            &pkt(false, 0, 7, 0, 0xA, &[0x7F; 160]),
            relay_addr(&relay, Side::A),
        )
        .await
        .expect("send");
    let (p, from) = recv(&b).await;
    assert_eq!(from, relay_addr(&relay, Side::B));
    let r = Rtp::parse(&p[..]).expect("rtp");
    assert_eq!(
        (r.ssrc(), r.sequence(), r.payload()),
        (0xA, 7, &[0x7F; 160][..])
    );

    // B -> A now follows the latch.
    b.send_to(
        &pkt(false, 0, 2, 320, 0xB, &[0xFF; 160]),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    let (p, _) = recv(&a_real).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").sequence(), 2);
    assert!(nothing(&a_sdp, 100).await);

    // Not RTP: dropped, latch unchanged.
    let stranger = phone().await;
    stranger
        .send_to(b"hello", relay_addr(&relay, Side::A))
        .await
        .expect("send");
    b.send_to(
        &pkt(false, 0, 3, 480, 0xB, &[0xFF; 160]),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    recv(&a_real).await;

    // RTCP is latched and relayed between the RTCP ports.
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 0xB];
    let b_rtcp = phone().await;
    let a_rtcp = phone().await;
    b_rtcp
        .send_to(&rr, SocketAddr::new(LO, relay.local_port(Side::B) + 1))
        .await
        .expect("send");
    // A has sent no RTCP: B's first report goes to A's SDP port + 1, from our A RTCP port
    // (and B's RTCP source is latched once it has).
    let (p, from) = recv(&a_sdp_rtcp).await;
    assert_eq!(p, rr);
    assert_eq!(from.port(), relay.local_port(Side::A) + 1);
    a_rtcp
        .send_to(&rr, SocketAddr::new(LO, relay.local_port(Side::A) + 1))
        .await
        .expect("send");
    let (p, from) = recv(&b_rtcp).await;
    assert_eq!(p, rr);
    assert_eq!(from.port(), relay.local_port(Side::B) + 1);
    // Now A's RTCP source is latched too.
    b_rtcp
        .send_to(&rr, SocketAddr::new(LO, relay.local_port(Side::B) + 1))
        .await
        .expect("send");
    let (p, _) = recv(&a_rtcp).await;
    assert_eq!(p, rr);
}

#[tokio::test]
async fn hold_relays_what_arrives_but_sends_nowhere_unknown() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let relay = engine.allocate().await.expect("allocate");
    let a = phone().await;
    let b = phone().await;
    // B is on hold: no address.
    relay.update(
        LegMedia::pcmu(Some(addr(&a)), None),
        LegMedia::pcmu(None, None),
    );
    applied(&relay).await;
    a.send_to(
        &pkt(false, 0, 1, 0, 1, &[0; 160]),
        relay_addr(&relay, Side::A),
    )
    .await
    .expect("send");
    // Processed (and not sent anywhere) before B shows up.
    until("A's packet", || relay.stats().a_to_b.packets == 1).await;
    // Hold music from B still reaches A, and latches B.
    b.send_to(
        &pkt(false, 0, 1, 0, 2, &[1; 160]),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    recv(&a).await;
    a.send_to(
        &pkt(false, 0, 2, 160, 1, &[0; 160]),
        relay_addr(&relay, Side::A),
    )
    .await
    .expect("send");
    let (p, _) = recv(&b).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").sequence(), 2);
    let st = relay.stats();
    assert_eq!(st.a_to_b.packets, 2);
    assert_eq!(st.a_to_b.forwarded, 1);
}

#[tokio::test]
async fn rewrites_payload_type_without_touching_payload() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let relay = engine.allocate().await.expect("allocate");
    let (a, b) = (phone().await, phone().await);
    let leg = |s: &UdpSocket, pt| LegMedia {
        remote: Some(addr(s)),
        codec_pt: pt,
        law: None,
        dtmf_pt: None,
        srtp: None,
        rtcp_mux: false,
    };
    relay.update(leg(&a, 96), leg(&b, 111));
    applied(&relay).await;
    let payload: Vec<u8> = (0..=255u8).collect();
    a.send_to(
        &pkt(true, 96, 5, 9, 3, &payload),
        relay_addr(&relay, Side::A),
    )
    .await
    .expect("send");
    let (p, _) = recv(&b).await;
    let r = Rtp::parse(&p[..]).expect("rtp");
    assert_eq!(
        (
            r.payload_type(),
            r.marker(),
            r.sequence(),
            r.timestamp(),
            r.ssrc()
        ),
        (111, true, 5, 9, 3)
    );
    assert_eq!(r.payload(), &payload[..]);
    b.send_to(
        &pkt(false, 111, 1, 1, 4, &payload),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    let (p, _) = recv(&a).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").payload_type(), 96);
    // Other payload types (comfort noise) pass unchanged.
    a.send_to(&pkt(false, 13, 6, 9, 3, &[40]), relay_addr(&relay, Side::A))
        .await
        .expect("send");
    let (p, _) = recv(&b).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").payload_type(), 13);
    assert!(!relay.stats().transcoding);
}

#[tokio::test]
async fn transcodes_pcmu_pcma_bit_exact() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let relay = engine.allocate().await.expect("allocate");
    let (a, b) = (phone().await, phone().await);
    relay.update(
        LegMedia::pcmu(Some(addr(&a)), None),
        LegMedia::pcma(Some(addr(&b)), None),
    );
    applied(&relay).await;
    let all: Vec<u8> = (0..=255u8).collect();
    a.send_to(&pkt(false, 0, 1, 0, 1, &all), relay_addr(&relay, Side::A))
        .await
        .expect("send");
    let (p, _) = recv(&b).await;
    let r = Rtp::parse(&p[..]).expect("rtp");
    assert_eq!(r.payload_type(), 8);
    let expect: Vec<u8> = all.iter().map(|&u| g711::ulaw_to_alaw(u)).collect();
    assert_eq!(r.payload(), &expect[..]);

    b.send_to(&pkt(false, 8, 1, 0, 2, &all), relay_addr(&relay, Side::B))
        .await
        .expect("send");
    let (p, _) = recv(&a).await;
    let r = Rtp::parse(&p[..]).expect("rtp");
    assert_eq!(r.payload_type(), 0);
    let expect: Vec<u8> = all.iter().map(|&x| g711::alaw_to_ulaw(x)).collect();
    assert_eq!(r.payload(), &expect[..]);

    // Round trip through two relays (µ -> A -> µ) keeps every code but the 16 lowest-level ones.
    let relay2 = engine.allocate().await.expect("allocate");
    let c = phone().await;
    relay.update(
        LegMedia::pcmu(Some(addr(&a)), None),
        LegMedia::pcma(Some(relay_addr(&relay2, Side::A)), None),
    );
    relay2.update(
        LegMedia::pcma(None, None),
        LegMedia::pcmu(Some(addr(&c)), None),
    );
    applied(&relay).await;
    applied(&relay2).await;
    a.send_to(&pkt(false, 0, 2, 160, 1, &all), relay_addr(&relay, Side::A))
        .await
        .expect("send");
    let (p, _) = recv(&c).await;
    let r = Rtp::parse(&p[..]).expect("rtp");
    assert_eq!(r.payload_type(), 0);
    let changed = r.payload().iter().zip(&all).filter(|(x, y)| x != y).count();
    assert_eq!(changed, 16);
    assert!(relay.stats().transcoding && relay2.stats().transcoding);
}

fn event(ev: u8, end: bool, duration: u16) -> [u8; 4] {
    TelephoneEvent {
        event: ev,
        end,
        volume: 10,
        duration,
    }
    .to_bytes()
}

#[tokio::test]
async fn rfc4733_is_mapped_and_reported_once() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let mut relay = engine.allocate().await.expect("allocate");
    let (a, b) = (phone().await, phone().await);
    relay.update(
        LegMedia::pcmu(Some(addr(&a)), Some(101)),
        LegMedia::pcma(Some(addr(&b)), Some(96)),
    );
    applied(&relay).await;
    let to_relay = relay_addr(&relay, Side::A);
    let ts = 8000;
    let packets = [
        pkt(true, 101, 10, ts, 5, &event(5, false, 160)),
        pkt(false, 101, 11, ts, 5, &event(5, false, 320)),
        pkt(false, 101, 12, ts, 5, &event(5, true, 800)),
        pkt(false, 101, 13, ts, 5, &event(5, true, 800)),
        pkt(false, 101, 14, ts, 5, &event(5, true, 800)),
    ];
    for p in &packets {
        a.send_to(p, to_relay).await.expect("send");
    }
    for (i, sent) in packets.iter().enumerate() {
        let (p, _) = recv(&b).await;
        let r = Rtp::parse(&p[..]).expect("rtp");
        assert_eq!(r.payload_type(), 96, "packet {i}");
        // Event payloads are never transcoded.
        assert_eq!(r.payload(), &sent[12..]);
    }
    let ev = timeout(
        Duration::from_secs(2),
        relay.events().expect("events").recv(),
    )
    .await
    .expect("event");
    assert_eq!(
        ev,
        Some(MediaEvent::Dtmf {
            from: Side::A,
            digit: '5',
            duration_ms: 100
        })
    );
    assert!(timeout(
        Duration::from_millis(150),
        relay.events().expect("events").recv()
    )
    .await
    .is_err());

    // A second press of the same digit is a new event.
    a.send_to(
        &pkt(false, 101, 15, ts + 1600, 5, &event(5, true, 480)),
        to_relay,
    )
    .await
    .expect("send");
    recv(&b).await;
    let ev = timeout(
        Duration::from_secs(2),
        relay.events().expect("events").recv(),
    )
    .await
    .expect("event");
    assert_eq!(
        ev,
        Some(MediaEvent::Dtmf {
            from: Side::A,
            digit: '5',
            duration_ms: 60
        })
    );
}

#[tokio::test]
async fn rfc4733_not_forwarded_to_a_leg_without_events() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let mut relay = engine.allocate().await.expect("allocate");
    let (a, b) = (phone().await, phone().await);
    relay.update(
        LegMedia::pcmu(Some(addr(&a)), Some(101)),
        LegMedia::pcmu(Some(addr(&b)), None),
    );
    applied(&relay).await;
    let to_relay = relay_addr(&relay, Side::A);
    a.send_to(&pkt(false, 0, 100, 0, 5, &[0xFF; 160]), to_relay)
        .await
        .expect("send");
    for seq in 101..=103u16 {
        a.send_to(
            &pkt(seq == 101, 101, seq, 160, 5, &event(11, seq > 101, 400)),
            to_relay,
        )
        .await
        .expect("send");
    }
    a.send_to(&pkt(false, 0, 104, 480, 5, &[0xFF; 160]), to_relay)
        .await
        .expect("send");
    let (p, _) = recv(&b).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").sequence(), 100);
    // The next audio packet follows without a sequence gap: the swallowed events are hidden.
    let (p, _) = recv(&b).await;
    let r = Rtp::parse(&p[..]).expect("rtp");
    assert_eq!((r.payload_type(), r.sequence()), (0, 101));
    let ev = timeout(
        Duration::from_secs(2),
        relay.events().expect("events").recv(),
    )
    .await
    .expect("event");
    assert_eq!(
        ev,
        Some(MediaEvent::Dtmf {
            from: Side::A,
            digit: '#',
            duration_ms: 50
        })
    );
}

#[tokio::test]
async fn send_dtmf_continues_the_stream() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let relay = engine.allocate().await.expect("allocate");
    let (a, b) = (phone().await, phone().await);
    relay.update(
        LegMedia::pcmu(Some(addr(&a)), None),
        LegMedia::pcmu(Some(addr(&b)), Some(101)),
    );
    applied(&relay).await;
    let to_relay = relay_addr(&relay, Side::A);
    for i in 0..3u16 {
        a.send_to(
            &pkt(false, 0, 500 + i, 1000 + 160 * i as u32, 0xAB, &[0xFF; 160]),
            to_relay,
        )
        .await
        .expect("send");
        recv(&b).await;
    }
    relay.send_dtmf(Side::B, '7', 100);
    let mut events = Vec::new();
    loop {
        let (p, _) = recv(&b).await;
        let r = Rtp::parse(&p[..]).expect("rtp");
        let ev = TelephoneEvent::parse(r.payload()).expect("event");
        events.push((
            r.marker(),
            r.payload_type(),
            r.sequence(),
            r.timestamp(),
            r.ssrc(),
            ev,
        ));
        if events.iter().filter(|e| e.5.end).count() == 3 {
            break;
        }
    }
    // 100 ms = 800 units: updates at 160, 320, 480, 640, then the end three times.
    assert_eq!(events.len(), 7);
    let ts = events[0].3;
    assert!(
        ts >= 1000 + 320,
        "event timestamp continues the stream: {ts}"
    );
    for (i, (marker, pt, seq, t, ssrc, ev)) in events.iter().enumerate() {
        assert_eq!(*marker, i == 0);
        assert_eq!((*pt, *seq, *t, *ssrc), (101, 503 + i as u16, ts, 0xAB));
        assert_eq!(ev.event, 7);
        assert_eq!(ev.end, i >= 4);
        assert_eq!(ev.duration, (160 * (i as u16 + 1)).min(800));
    }
    // Audio after the event continues the sequence.
    a.send_to(&pkt(false, 0, 503, 2000, 0xAB, &[0xFF; 160]), to_relay)
        .await
        .expect("send");
    let (p, _) = recv(&b).await;
    let r = Rtp::parse(&p[..]).expect("rtp");
    assert_eq!((r.payload_type(), r.sequence()), (0, 510));

    // No stream yet towards A, and A has no telephone-event: nothing is sent.
    relay.send_dtmf(Side::A, '1', 100);
    assert!(nothing(&a, 200).await);
}

#[tokio::test]
async fn stats_count_loss_and_jitter() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let relay = engine.allocate().await.expect("allocate");
    let (a, b) = (phone().await, phone().await);
    relay.update(
        LegMedia::pcmu(Some(addr(&a)), None),
        LegMedia::pcmu(Some(addr(&b)), None),
    );
    applied(&relay).await;
    let to_relay = relay_addr(&relay, Side::A);
    for seq in 1..=12u16 {
        if seq == 5 || seq == 6 {
            continue;
        }
        a.send_to(
            &pkt(false, 0, seq, seq as u32 * 160, 9, &[0xFF; 160]),
            to_relay,
        )
        .await
        .expect("send");
        // 20 ms packets, sent alternately 8 ms early and 8 ms late.
        let wait = if seq % 2 == 0 { 12 } else { 28 };
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    // Counted before forwarded: once the last is forwarded, all are counted.
    until("ten packets relayed", || {
        relay.stats().a_to_b.forwarded == 10
    })
    .await;
    let st = relay.stats();
    assert_eq!(st.a_to_b.packets, 10);
    assert_eq!(st.a_to_b.bytes, 1720);
    assert_eq!(st.a_to_b.forwarded, 10);
    assert_eq!(st.a_to_b.lost, 2);
    assert!(st.a_to_b.jitter_ms > 1.0, "jitter {}", st.a_to_b.jitter_ms);
    assert!(st.a_to_b.last_packet.is_some());
    assert_eq!(st.b_to_a, DirectionStats::default());
    assert_eq!(
        (st.a_codec_pt, st.b_codec_pt, st.transcoding),
        (0, 0, false)
    );
}

#[tokio::test]
async fn dead_after_silence() {
    // Times 3 of what the check needs (200 ms of silence; was so): a packet every 20 ms must
    // not look like silence even when a loaded machine holds this task back for a while.
    let engine = engine(free_test_range(40), Duration::from_millis(600));
    let mut relay = engine.allocate().await.expect("allocate");
    let (a, b) = (phone().await, phone().await);
    relay.update(
        LegMedia::pcmu(Some(addr(&a)), None),
        LegMedia::pcmu(Some(addr(&b)), None),
    );
    let started = Instant::now();
    // Media flows for 900 ms: no Dead.
    let mut last_sent = started;
    while started.elapsed() < Duration::from_millis(900) {
        a.send_to(
            &pkt(false, 0, 1, 0, 1, &[0; 160]),
            relay_addr(&relay, Side::A),
        )
        .await
        .expect("send");
        last_sent = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(relay.events().expect("events").try_recv().is_err());
    let ev = timeout(
        Duration::from_secs(2),
        relay.events().expect("events").recv(),
    )
    .await
    .expect("Dead");
    assert_eq!(ev, Some(MediaEvent::Dead));
    // Silent since the last packet (not since the loop ended, which a loaded machine can
    // hold back): the relay took it after it was sent, and waited `dead_after` from then.
    let silent = last_sent.elapsed();
    assert!(
        silent >= Duration::from_millis(600),
        "Dead after {silent:?}"
    );
    // Reported once per silence.
    assert!(timeout(
        Duration::from_millis(1500),
        relay.events().expect("events").recv()
    )
    .await
    .is_err());
}

#[tokio::test]
async fn drop_releases_ports() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let relay = engine.allocate().await.expect("allocate");
    let ports = [relay.local_port(Side::A), relay.local_port(Side::B)];
    assert_eq!(engine.in_use(), 1);
    drop(relay);
    wait_in_use_zero(&engine).await;
    for p in ports {
        std::net::UdpSocket::bind((LO, p)).expect("RTP port free again");
        std::net::UdpSocket::bind((LO, p + 1)).expect("RTCP port free again");
    }
}

#[tokio::test]
async fn exhaustion_is_an_error_and_recovers() {
    // Four pairs: two relays.
    let range = free_test_range(8);
    let engine = engine(range.clone(), Duration::from_secs(60));
    assert_eq!(engine.capacity(), 2);
    assert_eq!(engine.free_pairs(), 4);
    let r1 = engine.allocate().await.expect("first");
    assert_eq!(engine.free_pairs(), 2, "a relay holds a pair per leg");
    let _r2 = engine.allocate().await.expect("second");
    assert_eq!(engine.free_pairs(), 0);
    match engine.allocate().await {
        Err(MediaError::PortsExhausted { start, end })
            if (start, end) == (*range.start(), *range.end()) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("range should be exhausted"),
    }
    assert_eq!(engine.in_use(), 2);
    drop(r1);
    wait_in_use_zero_but(&engine, 1).await;
    assert_eq!(
        engine.free_pairs(),
        2,
        "a dropped relay's pairs are free again"
    );
    engine.allocate().await.expect("ports returned to the pool");
}

async fn wait_in_use_zero_but(engine: &MediaEngine, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.in_use() != n {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn busy_ports_are_skipped() {
    let range = free_test_range(8);
    let first = *range.start();
    let engine = engine(range, Duration::from_secs(60));
    // Another process holds the RTCP port of the first pair.
    let _squatter = std::net::UdpSocket::bind((LO, first + 1)).expect("bind");
    for _ in 0..10 {
        let relay = engine.allocate().await.expect("allocate");
        let ports = [relay.local_port(Side::A), relay.local_port(Side::B)];
        assert!(!ports.contains(&first), "{ports:?}");
        drop(relay);
        wait_in_use_zero(&engine).await;
    }
    // Ten allocations over four pairs have tried the busy one: it is not free to admission.
    assert_eq!(engine.free_pairs(), 3);
}

#[tokio::test]
async fn a_freed_pair_is_not_reused_at_once() {
    let engine = engine(free_test_range(100), Duration::from_secs(60));
    let r = engine.allocate().await.expect("allocate");
    let first = [r.local_port(Side::A), r.local_port(Side::B)];
    drop(r);
    wait_in_use_zero(&engine).await;
    for _ in 0..20 {
        let r = engine.allocate().await.expect("allocate");
        assert!(!first.contains(&r.local_port(Side::A)));
        assert!(!first.contains(&r.local_port(Side::B)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_relays_allocated_and_dropped() {
    let engine = engine(free_test_range(2400), Duration::from_secs(60));
    let mut relays = Vec::new();
    for _ in 0..500 {
        relays.push(engine.allocate().await.expect("allocate"));
    }
    assert_eq!(engine.in_use(), 500);
    let mut ports: Vec<u16> = relays
        .iter()
        .flat_map(|r| [r.local_port(Side::A), r.local_port(Side::B)])
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 1000);
    drop(relays);
    wait_in_use_zero(&engine).await;
}

#[tokio::test]
async fn media_is_locked_to_its_source_and_foreign_packets_are_dropped() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let relay = engine.allocate().await.expect("allocate");
    let a_sdp = phone().await;
    let a_real = phone().await; // A behind NAT: sends from elsewhere than its SDP says
    let b = phone().await;
    relay.update(
        LegMedia::pcmu(Some(addr(&a_sdp)), None),
        LegMedia::pcmu(Some(addr(&b)), None),
    );
    applied(&relay).await;
    // A's first packet latches its real address.
    a_real
        .send_to(
            &pkt(false, 0, 1, 0, 0xA, &[1; 160]),
            relay_addr(&relay, Side::A),
        )
        .await
        .expect("send");
    let (p, _) = recv(&b).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").ssrc(), 0xA);
    b.send_to(
        &pkt(false, 0, 1, 0, 0xB, &[2; 160]),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    recv(&a_real).await;
    // Mid-call, a third party injects towards all four of our ports: nothing of it reaches
    // the phones.
    let attacker = UdpSocket::bind("127.0.0.9:0")
        .await
        .expect("bind 127.0.0.9");
    for seq in 0..20u16 {
        for side in [Side::A, Side::B] {
            attacker
                .send_to(
                    &pkt(false, 0, 100 + seq, 0, 0xE, &[9; 160]),
                    relay_addr(&relay, side),
                )
                .await
                .expect("send");
            attacker
                .send_to(
                    &[0x80u8, 201, 0, 1, 0, 0, 0, 0xE],
                    SocketAddr::new(LO, relay.local_port(side) + 1),
                )
                .await
                .expect("send");
        }
    }
    // B's next packet still goes to A's real address (no hijack).
    b.send_to(
        &pkt(false, 0, 2, 160, 0xB, &[2; 160]),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    let (p, _) = recv(&a_real).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").ssrc(), 0xB);
    assert!(nothing(&b, 100).await, "B got injected packets");
    assert!(nothing(&a_sdp, 50).await);
    let st = relay.stats();
    assert_eq!(st.a_to_b.foreign_dropped, 40, "{st:?}");
    assert_eq!(st.b_to_a.foreign_dropped, 40, "{st:?}");
    assert_eq!(st.foreign_dropped(), 80);
    assert_eq!(st.a_to_b.packets, 1);
    assert_eq!(st.b_to_a.packets, 2);

    // The address the SDP names is always taken (the phone starts sending from there).
    a_sdp
        .send_to(
            &pkt(false, 0, 2, 160, 0xA, &[3; 160]),
            relay_addr(&relay, Side::A),
        )
        .await
        .expect("send");
    let (p, _) = recv(&b).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").ssrc(), 0xA);

    // A re-INVITE that moves A elsewhere opens the latch again for its first packet.
    let a_new = phone().await;
    relay.update(
        LegMedia::pcmu(Some(addr(&a_new)), None),
        LegMedia::pcmu(Some(addr(&b)), None),
    );
    applied(&relay).await;
    a_new
        .send_to(
            &pkt(false, 0, 3, 320, 0xA, &[4; 160]),
            relay_addr(&relay, Side::A),
        )
        .await
        .expect("send");
    let (p, _) = recv(&b).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").sequence(), 3);
    let before = relay.stats().a_to_b.foreign_dropped;
    a_real
        .send_to(
            &pkt(false, 0, 4, 480, 0xA, &[5; 160]),
            relay_addr(&relay, Side::A),
        )
        .await
        .expect("send");
    until("the old address's packet dropped", || {
        relay.stats().a_to_b.foreign_dropped == before + 1
    })
    .await;
    assert!(
        nothing(&b, 100).await,
        "the old address is locked out after the move"
    );
    assert_eq!(relay.stats().a_to_b.foreign_dropped, before + 1);
}

/// An SRTP leg (A) meets a plain leg (B): A's packets arrive at B decrypted; B's leave towards
/// A protected with the key the relay gave A; forged and replayed SRTP is dropped and counted,
/// and a forged packet from another address cannot take the latch.
#[tokio::test]
async fn srtp_leg_meets_plain_leg() {
    use super::srtp::{MasterKey, SrtpContext, Suite};
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let relay = engine.allocate().await.expect("allocate");
    let (a, b, intruder) = (phone().await, phone().await, phone().await);
    let (phone_key, relay_key) = (MasterKey::random(), MasterKey::random());
    let suite = Suite::AesCm128HmacSha1_80;
    let mut a_leg = LegMedia::pcmu(Some(addr(&a)), None);
    a_leg.srtp = Some(LegSrtp {
        suite,
        remote: phone_key.clone(),
        local: relay_key.clone(),
    });
    relay.update(a_leg, LegMedia::pcmu(Some(addr(&b)), None));
    applied(&relay).await;
    let mut a_tx = SrtpContext::new(suite, &phone_key);
    let mut a_rx = SrtpContext::new(suite, &relay_key);
    let payload = [0x5Au8; 160];
    let protect = |ctx: &mut SrtpContext, seq: u16| {
        let plain = pkt(false, 0, seq, u32::from(seq) * 160, 77, &payload);
        let mut buf = vec![0u8; plain.len() + 16];
        buf[..plain.len()].copy_from_slice(&plain);
        let n = ctx.protect_rtp(&mut buf, plain.len()).expect("protect");
        buf.truncate(n);
        buf
    };

    // A forged packet from elsewhere, before A spoke: refused, and no latch taken.
    let mut forger = SrtpContext::new(suite, &MasterKey::random());
    intruder
        .send_to(&protect(&mut forger, 1), relay_addr(&relay, Side::A))
        .await
        .expect("send");
    assert!(nothing(&b, 100).await, "a forged SRTP packet was relayed");

    let first = protect(&mut a_tx, 1);
    a.send_to(&first, relay_addr(&relay, Side::A))
        .await
        .expect("send");
    let (p, _) = recv(&b).await;
    let r = Rtp::parse(&p[..]).expect("plain RTP at B");
    assert_eq!((r.sequence(), r.payload()), (1, &payload[..]));
    // Replayed: dropped.
    a.send_to(&first, relay_addr(&relay, Side::A))
        .await
        .expect("send");
    assert!(nothing(&b, 100).await, "a replayed SRTP packet was relayed");

    // B → A: protected with the relay's key for A.
    b.send_to(
        &pkt(false, 0, 9, 1440, 5, &payload),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    let (mut p, _) = recv(&a).await;
    assert_eq!(p.len(), 12 + 160 + suite.rtp_tag_len());
    assert!(
        !p.windows(16).any(|w| w == [0x5A; 16]),
        "payload sent in clear"
    );
    let n = a_rx.unprotect_rtp(&mut p).expect("A can decrypt");
    assert_eq!(&p[12..n], &payload[..]);

    let st = relay.stats();
    assert_eq!(st.srtp, [true, false]);
    assert_eq!(st.a_to_b.srtp_rejected, 2, "{st:?}");
    assert_eq!(st.a_to_b.forwarded, 1);
}

fn rr(ssrc: u8) -> [u8; 8] {
    [0x80u8, 201, 0, 1, 0, 0, 0, ssrc]
}

/// Waits until the engine counts `n` open sockets (the I/O thread closes them).
async fn wait_sockets(engine: &MediaEngine, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while engine.open_sockets() != n {
        assert!(
            Instant::now() < deadline,
            "open sockets stuck at {}, expected {n}",
            engine.open_sockets()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn rtcp_mux_on_both_legs_shares_the_rtp_ports() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    // The caller offered multiplexing: its leg binds no RTCP socket; B's is bound for the offer.
    let relay = engine.allocate_into_muxed(1, tx, true).expect("allocate");
    assert_eq!(engine.open_sockets(), 3);
    // Leg A's RTCP port is not bound by the relay, yet stays reserved with its pair.
    let a_rtcp_port = relay.local_port(Side::A) + 1;
    assert!(std::net::UdpSocket::bind((LO, a_rtcp_port)).is_ok());
    let (a, b) = (phone().await, phone().await);
    let mux = |s: &UdpSocket| LegMedia {
        rtcp_mux: true,
        ..LegMedia::pcmu(Some(addr(s)), None)
    };
    // B's answer accepted multiplexing: its RTCP socket closes.
    relay.update(mux(&a), mux(&b));
    wait_sockets(&engine, 2).await;

    // RTP still flows both ways on the RTP ports.
    a.send_to(
        &pkt(false, 0, 1, 0, 0xA, &[1; 160]),
        relay_addr(&relay, Side::A),
    )
    .await
    .expect("send");
    let (p, from) = recv(&b).await;
    assert_eq!(from, relay_addr(&relay, Side::B));
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").ssrc(), 0xA);
    // B has sent nothing yet, so it may not have the answer that agreed on multiplexing: RTCP
    // to it is held back rather than sent to an RTP port that would drop it.
    a.send_to(&rr(0xA), relay_addr(&relay, Side::A))
        .await
        .expect("send");
    assert!(nothing(&b, 200).await, "RTCP held until B is heard from");
    b.send_to(
        &pkt(false, 0, 1, 0, 0xB, &[1; 160]),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    let _ = recv(&a).await;
    // RTCP on the RTP port is told apart by its packet type and relayed as RTCP, to the other
    // phone's RTP port, from ours.
    a.send_to(&rr(0xA), relay_addr(&relay, Side::A))
        .await
        .expect("send");
    let (p, from) = recv(&b).await;
    assert_eq!((p, from), (rr(0xA).to_vec(), relay_addr(&relay, Side::B)));
    b.send_to(&rr(0xB), relay_addr(&relay, Side::B))
        .await
        .expect("send");
    let (p, from) = recv(&a).await;
    assert_eq!((p, from), (rr(0xB).to_vec(), relay_addr(&relay, Side::A)));
    // RTCP is not counted as RTP.
    let st = relay.stats();
    assert_eq!((st.a_to_b.packets, st.b_to_a.packets), (1, 1));
    // B's old RTCP port is closed.
    assert!(std::net::UdpSocket::bind((LO, relay.local_port(Side::B) + 1)).is_ok());

    drop(relay);
    wait_in_use_zero(&engine).await;
    assert_eq!(engine.open_sockets(), 0);
}

#[tokio::test]
async fn a_peer_that_drops_mux_gets_rtcp_on_the_separate_port() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let relay = engine.allocate_into_muxed(1, tx, true).expect("allocate");
    let (a, b, b_rtcp) = (phone().await, phone().await, phone().await);
    // B's answer has no a=rtcp-mux: B takes RTCP on its SDP port + 1, here b_rtcp's port
    // (B really sends its RTP from `b`, and is latched there).
    let b_rtp_sdp = SocketAddr::new(LO, addr(&b_rtcp).port() - 1);
    relay.update(
        LegMedia {
            rtcp_mux: true,
            ..LegMedia::pcmu(Some(addr(&a)), None)
        },
        LegMedia::pcmu(Some(b_rtp_sdp), None),
    );
    applied(&relay).await;
    assert_eq!(engine.open_sockets(), 3, "B keeps its RTCP socket");

    // A's RTCP (on A's RTP port) goes to B's RTCP port, from our B RTCP port.
    a.send_to(&rr(0xA), relay_addr(&relay, Side::A))
        .await
        .expect("send");
    let (p, from) = recv(&b_rtcp).await;
    assert_eq!(p, rr(0xA).to_vec());
    assert_eq!(from.port(), relay.local_port(Side::B) + 1);
    // B's RTCP (on our RTCP port) goes to A's RTP port, from our A RTP port.
    b_rtcp
        .send_to(&rr(0xB), SocketAddr::new(LO, relay.local_port(Side::B) + 1))
        .await
        .expect("send");
    let (p, from) = recv(&a).await;
    assert_eq!((p, from), (rr(0xB).to_vec(), relay_addr(&relay, Side::A)));
    // B's RTP still goes to A.
    b.send_to(
        &pkt(false, 0, 1, 0, 0xB, &[1; 160]),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    let (p, _) = recv(&a).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").ssrc(), 0xB);
    drop(relay);
    wait_in_use_zero(&engine).await;
    assert_eq!(engine.open_sockets(), 0);
}

#[tokio::test]
async fn a_phone_that_stops_multiplexing_mid_call_gets_its_rtcp_socket_back() {
    let engine = engine(free_test_range(40), Duration::from_secs(60));
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let relay = engine.allocate_into_muxed(1, tx, true).expect("allocate");
    let (a, a_rtcp, b) = (phone().await, phone().await, phone().await);
    let mux = |s: &UdpSocket, on: bool| LegMedia {
        rtcp_mux: on,
        ..LegMedia::pcmu(Some(addr(s)), None)
    };
    relay.update(mux(&a, true), mux(&b, true));
    wait_sockets(&engine, 2).await;
    let a_rtcp_port = SocketAddr::new(LO, relay.local_port(Side::A) + 1);
    // A re-INVITE from A without a=rtcp-mux: our A RTCP port is bound again …
    relay.update(mux(&a, false), mux(&b, true));
    wait_sockets(&engine, 3).await;
    assert!(
        std::net::UdpSocket::bind(a_rtcp_port).is_err(),
        "A's RTCP port is ours again"
    );
    // … and read: A's RTCP sent there reaches B's RTP port, from ours.
    a.send_to(
        &pkt(false, 0, 1, 0, 0xA, &[1; 160]),
        relay_addr(&relay, Side::A),
    )
    .await
    .expect("send");
    let _ = recv(&b).await;
    // B is heard from (RTCP to a multiplexing phone waits for that).
    b.send_to(
        &pkt(false, 0, 1, 0, 0xB, &[1; 160]),
        relay_addr(&relay, Side::B),
    )
    .await
    .expect("send");
    let _ = recv(&a).await;
    a_rtcp.send_to(&rr(0xA), a_rtcp_port).await.expect("send");
    let (p, from) = recv(&b).await;
    assert_eq!((p, from), (rr(0xA).to_vec(), relay_addr(&relay, Side::B)));
    // B's RTCP goes to where A sends its RTCP from, out of our A RTCP port.
    b.send_to(&rr(0xB), relay_addr(&relay, Side::B))
        .await
        .expect("send");
    let (p, from) = recv(&a_rtcp).await;
    assert_eq!((p, from), (rr(0xB).to_vec(), a_rtcp_port));
    // Multiplexing again closes it again.
    relay.update(mux(&a, true), mux(&b, true));
    wait_sockets(&engine, 2).await;
    drop(relay);
    wait_in_use_zero(&engine).await;
    assert_eq!(engine.open_sockets(), 0);
}

/// Many streams on one I/O thread with packets microseconds apart (busy enough to coalesce
/// its wake-ups when `PASARELA_MEDIA_COALESCE_US` asks): every packet reaches the right phone,
/// in order, rewritten as usual; a lone packet after the burst goes through too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_relay_thread_relays_every_packet_in_order() {
    const CALLS: usize = 16;
    const ROUNDS: u16 = 40;
    let engine = MediaEngine::with_io_threads(
        MediaConfig {
            bind_ip: LO,
            ports: free_test_range(100),
            dead_after: Duration::from_secs(60),
        },
        1,
    );
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let relay = engine.allocate().await.expect("allocate");
        let (a, b) = (phone().await, phone().await);
        relay.update(
            LegMedia::pcmu(Some(addr(&a)), Some(101)),
            LegMedia::pcma(Some(addr(&b)), Some(101)),
        );
        calls.push((relay, a, b));
    }
    for (relay, _, _) in &calls {
        applied(relay).await;
    }
    for round in 0..ROUNDS {
        for (i, (relay, a, b)) in calls.iter().enumerate() {
            let seq = 1000 + round;
            let ts = u32::from(round) * 160;
            a.send_to(
                &pkt(false, 0, seq, ts, i as u32, &[0xFF; 160]),
                relay_addr(relay, Side::A),
            )
            .await
            .expect("send");
            b.send_to(
                &pkt(false, 8, seq, ts, 0x100 + i as u32, &[0xD5; 160]),
                relay_addr(relay, Side::B),
            )
            .await
            .expect("send");
        }
        if round % 8 == 7 {
            // Bursts and gaps: the thread goes from busy to idle and back.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for (i, (relay, a, b)) in calls.iter().enumerate() {
        for round in 0..ROUNDS {
            let (p, _) = recv(b).await;
            let r = Rtp::parse(&p[..]).expect("rtp");
            assert_eq!(
                (r.ssrc(), r.sequence(), r.payload_type()),
                (i as u32, 1000 + round, 8),
                "call {i} towards B"
            );
            // µ-law silence (0xFF) arrives as A-law silence (0xD5).
            assert_eq!(r.payload(), &[0xD5; 160][..]);
            let (p, _) = recv(a).await;
            let r = Rtp::parse(&p[..]).expect("rtp");
            assert_eq!(
                (r.ssrc(), r.sequence(), r.payload_type()),
                (0x100 + i as u32, 1000 + round, 0),
                "call {i} towards A"
            );
        }
        let st = relay.stats();
        assert_eq!(st.a_to_b.forwarded, u64::from(ROUNDS), "{st:?}");
        assert_eq!(st.b_to_a.forwarded, u64::from(ROUNDS), "{st:?}");
        assert_eq!((st.a_to_b.lost, st.b_to_a.lost), (0, 0), "{st:?}");
    }
    // Quiet again: one packet on its own is relayed without waiting for company.
    let (relay, a, b) = &calls[0];
    a.send_to(
        &pkt(false, 0, 2000, 99_999, 0, &[0xFF; 160]),
        relay_addr(relay, Side::A),
    )
    .await
    .expect("send");
    let (p, _) = recv(b).await;
    assert_eq!(Rtp::parse(&p[..]).expect("rtp").sequence(), 2000);
}

/// The relay's receive paths — multishot `io_uring` receives, `epoll` with `recvmmsg` and a
/// send-only ring, no ring at all — relay the same bytes; relays dropped while their receives
/// are armed close their sockets (the ports bind again) and leave nothing behind for the
/// relays that take their slots next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_receive_path_relays_the_same_and_frees_what_it_closes() {
    use super::uring::UringMode;
    let mut seen = Vec::new();
    for mode in [UringMode::Full, UringMode::Send, UringMode::Off] {
        let engine = MediaEngine::with_io_mode(
            MediaConfig {
                bind_ip: LO,
                ports: free_test_range(20),
                dead_after: Duration::from_secs(60),
            },
            1,
            mode,
        );
        let mut got = Vec::new();
        for round in 0..3u16 {
            let relay = engine.allocate().await.expect("allocate");
            let (a, b) = (phone().await, phone().await);
            relay.update(
                LegMedia::pcmu(Some(addr(&a)), Some(101)),
                LegMedia::pcma(Some(addr(&b)), Some(101)),
            );
            applied(&relay).await;
            for k in 0..10u16 {
                let seq = 100 * round + k;
                let ts = u32::from(seq) * 160;
                a.send_to(
                    &pkt(k == 0, 0, seq, ts, 0xA, &[0xFF; 160]),
                    relay_addr(&relay, Side::A),
                )
                .await
                .expect("send");
                b.send_to(
                    &pkt(false, 8, seq, ts, 0xB, &[0xD5; 80]),
                    relay_addr(&relay, Side::B),
                )
                .await
                .expect("send");
            }
            for _ in 0..10 {
                got.push(recv(&b).await.0);
                got.push(recv(&a).await.0);
            }
            let ports = [relay.local_port(Side::A), relay.local_port(Side::B)];
            drop(relay);
            wait_in_use_zero(&engine).await;
            for p in ports {
                for port in [p, p + 1] {
                    std::net::UdpSocket::bind((LO, port))
                        .unwrap_or_else(|e| panic!("{mode:?}: port {port} still held: {e}"));
                }
            }
        }
        seen.push((mode, got));
    }
    let (_, first) = &seen[0];
    assert_eq!(first.len(), 60);
    for (mode, got) in &seen[1..] {
        assert!(got == first, "{mode:?} relayed differently");
    }
}

/// A server starts the I/O threads before any call (so what they keep is not allocated among
/// a flood's blocks): after `start_io` they are running without a relay, and the first relay
/// uses them rather than starting others.
#[test]
fn the_io_threads_start_before_any_relay_when_asked() {
    let engine = MediaEngine::with_io_threads(
        MediaConfig {
            bind_ip: LO,
            ports: free_test_range(4),
            dead_after: Duration::from_secs(60),
        },
        2,
    );
    assert!(engine.io.pool.get().is_none(), "started before being asked");
    engine.start_io().expect("start");
    let pool = engine.io.pool.get().expect("not started");
    assert_eq!(pool.len(), 2);
    let started: *const io::IoPool = pool;
    engine.start_io().expect("again");
    let relay = engine.allocate_now().expect("allocate");
    let again = engine.io.pool.get().expect("still started");
    assert!(
        std::ptr::eq(started, again),
        "the relay started other threads"
    );
    drop(relay);
}
