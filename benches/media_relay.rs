//! Media relay load: N calls of simulated phones on loopback sending 20 ms G.711 packets both
//! ways through `pasarela::media` relays, against a baseline of the same phones sending to each
//! other directly.
//!
//! Environment: `MEDIA_CALLS` (default 2000), `MEDIA_SECS` (relay phase, default 10),
//! `MEDIA_BASELINE_SECS` (default 5), `MEDIA_SENDERS` (sender tasks, default 4),
//! `MEDIA_THREADS` (tokio workers, default 2), `MEDIA_PORT_BASE` (default 20000).
//!
//! Prints packets sent/received/relayed, loss, and one-way time (send at the near phone to
//! receive at the far phone) p50/p99/max for both phases, and the relay's added delay.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pasarela::media::{LegMedia, MediaConfig, MediaEngine, Relay, Side};
use tokio::net::UdpSocket;
use tokio::time::MissedTickBehavior;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Histogram resolution and range: 10 µs buckets up to 200 ms.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 20_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Histogram {
    buckets: Vec<AtomicU64>,
    max_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: (0..=BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
    fn record(&self, ns: u64) {
        let b = ((ns / 1000) / BUCKET_US).min(BUCKETS as u64) as usize;
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
    /// Upper bound of the bucket holding quantile `q`, in µs.
    fn quantile_us(&self, q: f64) -> u64 {
        let n = self.count.load(Ordering::Relaxed);
        let target = ((n as f64) * q).ceil() as u64;
        let mut acc = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            acc += b.load(Ordering::Relaxed);
            if acc >= target.max(1) {
                return (i as u64 + 1) * BUCKET_US;
            }
        }
        BUCKETS as u64 * BUCKET_US
    }
    fn max_us(&self) -> u64 {
        self.max_ns.load(Ordering::Relaxed) / 1000
    }
}

/// One direction of one call: a phone socket sending to `dest`.
struct Stream {
    sock: Arc<UdpSocket>,
    dest: SocketAddr,
    ssrc: u32,
    seq: u16,
    ts: u32,
}

struct PhaseResult {
    sent: u64,
    received: u64,
    hist: Arc<Histogram>,
    secs: u64,
    streams: usize,
}

/// Runs senders and receivers for `secs`; `pairs` are the (A phone, B phone, A dest, B dest).
async fn phase(
    phones: &[(Arc<UdpSocket>, Arc<UdpSocket>, SocketAddr, SocketAddr)],
    secs: u64,
    senders: usize,
    base: Instant,
) -> PhaseResult {
    let hist = Arc::new(Histogram::new());
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));

    let mut receivers = Vec::new();
    for (a, b, _, _) in phones {
        for sock in [a.clone(), b.clone()] {
            let (hist, received) = (hist.clone(), received.clone());
            receivers.push(tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                while let Ok((n, _)) = sock.recv_from(&mut buf).await {
                    if n >= 20 {
                        let mut t = [0u8; 8];
                        t.copy_from_slice(&buf[12..20]);
                        let sent_ns = u64::from_le_bytes(t);
                        let now_ns = base.elapsed().as_nanos() as u64;
                        hist.record(now_ns.saturating_sub(sent_ns));
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }

    let mut groups: Vec<Vec<Stream>> = (0..senders).map(|_| Vec::new()).collect();
    for (i, (a, b, a_dest, b_dest)) in phones.iter().enumerate() {
        let g = &mut groups[i % senders];
        g.push(Stream {
            sock: a.clone(),
            dest: *a_dest,
            ssrc: 2 * i as u32,
            seq: 0,
            ts: 0,
        });
        g.push(Stream {
            sock: b.clone(),
            dest: *b_dest,
            ssrc: 2 * i as u32 + 1,
            seq: 0,
            ts: 0,
        });
    }
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for (k, mut streams) in groups.into_iter().enumerate() {
        let sent = sent.clone();
        // Spread the sender groups over the 20 ms packet interval.
        let offset = Duration::from_micros(20_000 * k as u64 / senders as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut pkt = [0xFFu8; 12 + 160];
            pkt[0] = 0x80;
            loop {
                tick.tick().await;
                if Instant::now() >= end {
                    break;
                }
                for s in streams.iter_mut() {
                    s.seq = s.seq.wrapping_add(1);
                    s.ts = s.ts.wrapping_add(160);
                    pkt[2..4].copy_from_slice(&s.seq.to_be_bytes());
                    pkt[4..8].copy_from_slice(&s.ts.to_be_bytes());
                    pkt[8..12].copy_from_slice(&s.ssrc.to_be_bytes());
                    let now_ns = base.elapsed().as_nanos() as u64;
                    pkt[12..20].copy_from_slice(&now_ns.to_le_bytes());
                    if s.sock.send_to(&pkt, s.dest).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    // Let the last packets arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for r in receivers {
        r.abort();
    }
    PhaseResult {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        hist,
        secs,
        streams: 2 * phones.len(),
    }
}

fn print(name: &str, r: &PhaseResult) {
    let lost = r.sent.saturating_sub(r.received);
    let offered = 50 * r.streams as u64 * r.secs;
    println!(
        "{name:>8}: achieved {:.0} packets/s of {} offered ({:.1} %)",
        r.sent as f64 / r.secs.max(1) as f64,
        offered / r.secs.max(1),
        100.0 * r.sent as f64 / offered.max(1) as f64
    );
    println!(
        "{name:>8}: sent {:>9}  received {:>9}  lost {:>7} ({:.3} %)  one-way p50 {:>6} µs  p99 {:>6} µs  max {:>7} µs",
        r.sent,
        r.received,
        lost,
        100.0 * lost as f64 / r.sent.max(1) as f64,
        r.hist.quantile_us(0.50),
        r.hist.quantile_us(0.99),
        r.hist.max_us(),
    );
}

fn main() {
    let calls = env("MEDIA_CALLS", 2000) as usize;
    let secs = env("MEDIA_SECS", 10);
    let baseline_secs = env("MEDIA_BASELINE_SECS", 5);
    let senders = env("MEDIA_SENDERS", 4).max(1) as usize;
    let threads = env("MEDIA_THREADS", 2).max(1) as usize;
    let port_base = env("MEDIA_PORT_BASE", 20000) as u16;
    let port_end = (port_base as u64 + 4 * calls as u64 + 3).min(65535) as u16;

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        println!(
            "media_relay: {calls} calls, {} streams of 50 packets/s, {threads} worker threads, {senders} sender tasks",
            2 * calls
        );
        let base = Instant::now();
        let mut phones = Vec::with_capacity(calls);
        for _ in 0..calls {
            let (a, b) = match (UdpSocket::bind((LO, 0)).await, UdpSocket::bind((LO, 0)).await) {
                (Ok(a), Ok(b)) => (Arc::new(a), Arc::new(b)),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("phone socket: {e} (raise `ulimit -n`?)");
                    return;
                }
            };
            phones.push((a, b));
        }
        let addr = |s: &UdpSocket| s.local_addr().unwrap_or(SocketAddr::new(LO, 0));

        // Baseline: the phones talk to each other directly.
        let direct: Vec<_> = phones
            .iter()
            .map(|(a, b)| (a.clone(), b.clone(), addr(b), addr(a)))
            .collect();
        let baseline = phase(&direct, baseline_secs, senders, base).await;
        print("direct", &baseline);

        // Through the relays.
        let engine = MediaEngine::new(MediaConfig {
            bind_ip: LO,
            ports: port_base..=port_end,
            dead_after: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        let mut relays: Vec<Relay> = Vec::with_capacity(calls);
        for (a, b) in &phones {
            match engine.allocate().await {
                Ok(r) => {
                    r.update(
                        LegMedia::pcmu(Some(addr(a)), Some(101)),
                        LegMedia::pcmu(Some(addr(b)), Some(101)),
                    );
                    relays.push(r);
                }
                Err(e) => {
                    eprintln!("allocate: {e}");
                    return;
                }
            }
        }
        println!("allocated {} relays in {:?}", relays.len(), t0.elapsed());
        let via: Vec<_> = phones
            .iter()
            .zip(&relays)
            .map(|((a, b), r)| {
                (
                    a.clone(),
                    b.clone(),
                    SocketAddr::new(LO, r.local_port(Side::A)),
                    SocketAddr::new(LO, r.local_port(Side::B)),
                )
            })
            .collect();
        let relayed = phase(&via, secs, senders, base).await;
        print("relay", &relayed);
        let (mut forwarded, mut lost_seq) = (0u64, 0i64);
        for r in &relays {
            let s = r.stats();
            forwarded += s.a_to_b.forwarded + s.b_to_a.forwarded;
            lost_seq += s.a_to_b.lost + s.b_to_a.lost;
        }
        println!(
            "relay: packets relayed {forwarded}, lost before the relay (sequence gaps) {lost_seq}"
        );
        println!(
            "relay added one-way delay: p50 {:+} µs  p99 {:+} µs  max {:+} µs",
            relayed.hist.quantile_us(0.50) as i64 - baseline.hist.quantile_us(0.50) as i64,
            relayed.hist.quantile_us(0.99) as i64 - baseline.hist.quantile_us(0.99) as i64,
            relayed.hist.max_us() as i64 - baseline.hist.max_us() as i64,
        );
        let t1 = Instant::now();
        drop(relays);
        while engine.in_use() > 0 && t1.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!("dropped all relays in {:?}, in_use {}", t1.elapsed(), engine.in_use());
    });
}
