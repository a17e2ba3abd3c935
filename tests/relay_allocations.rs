//! The relay's packet path allocates nothing: a counting global allocator watches the whole
//! process while real relays (sockets on 127.0.0.1, one engine I/O thread) move thousands of
//! RTP packets between simulated phones; per-packet work that allocated (a boxed packet, a
//! formatted address, a growing queue) would show as thousands of allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pasarela::media::{LegMedia, MediaConfig, MediaEngine, Relay, Side};

mod common;

/// Counts allocations (and reallocations) over all threads.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const CALLS: usize = 8;
const ROUNDS: u16 = 250;

fn phone() -> UdpSocket {
    let s = UdpSocket::bind((LO, 0)).expect("bind phone");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    s
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().expect("local addr")
}

/// Writes a G.711 µ-law packet's header into `pkt` (payload left as it is).
fn header(pkt: &mut [u8; 172], seq: u16, ssrc: u32) {
    pkt[0] = 0x80;
    pkt[1] = 0;
    pkt[2..4].copy_from_slice(&seq.to_be_bytes());
    pkt[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

/// One round: every phone sends a packet to its relay port; every other phone receives it.
fn round(calls: &[(Relay, UdpSocket, UdpSocket)], seq: u16, pkt: &mut [u8; 172]) {
    let mut buf = [0u8; 2048];
    for (i, (relay, a, b)) in calls.iter().enumerate() {
        header(pkt, seq, 2 * i as u32);
        a.send_to(&pkt[..], SocketAddr::new(LO, relay.local_port(Side::A)))
            .expect("send A");
        header(pkt, seq, 2 * i as u32 + 1);
        b.send_to(&pkt[..], SocketAddr::new(LO, relay.local_port(Side::B)))
            .expect("send B");
    }
    for (_, a, b) in calls {
        for s in [b, a] {
            match s.recv_from(&mut buf) {
                Ok((n, _)) => assert_eq!(n, 172),
                Err(e) => panic!("packet {seq} not relayed: {e}"),
            }
        }
    }
}

#[test]
fn relaying_packets_allocates_nothing() {
    let engine = MediaEngine::with_io_threads(
        MediaConfig {
            bind_ip: LO,
            // No other test process's (a fixed range could be one's).
            ports: {
                let (lo, hi) = common::claim_ports(200);
                lo..=hi
            },
            dead_after: Duration::from_secs(60),
        },
        1,
    );
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let relay = engine.allocate_now().expect("allocate");
        let (a, b) = (phone(), phone());
        relay.update(
            LegMedia::pcmu(Some(addr(&a)), Some(101)),
            LegMedia::pcmu(Some(addr(&b)), Some(101)),
        );
        calls.push((relay, a, b));
    }
    std::thread::sleep(Duration::from_millis(50));
    let mut pkt = [0xFFu8; 172];
    // The first packets latch each leg; after them the relays are in their steady state.
    for seq in 0..10 {
        round(&calls, seq, &mut pkt);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    assert!(
        before > 0,
        "the counting allocator saw the set-up allocate nothing"
    );
    for seq in 10..10 + ROUNDS {
        round(&calls, seq, &mut pkt);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let packets = 2 * CALLS as u64 * u64::from(ROUNDS);
    eprintln!("{allocations} allocations while relaying {packets} packets");
    // Zero is expected; a little slack for whatever else the process does meanwhile.
    assert!(
        allocations < 20,
        "{allocations} allocations while relaying {packets} packets"
    );
    let forwarded: u64 = calls
        .iter()
        .map(|(r, _, _)| {
            let s = r.stats();
            s.a_to_b.forwarded + s.b_to_a.forwarded
        })
        .sum();
    assert_eq!(forwarded, packets + 2 * CALLS as u64 * 10);
}
