//! Media relay load: N calls of simulated phones on loopback sending 20 ms G.711 packets both
//! ways through `pasarela::media` relays, against a baseline of the same phones sending to each
//! other directly.
//!
//! The phones are cheap so that the relay's cost shows: `MEDIA_SENDERS` std threads send with
//! non-blocking sockets, each stream's packets spread evenly over the 20 ms interval, and one
//! receiver thread drains every phone socket from a `mio::Poll`.
//!
//! Environment: `MEDIA_CALLS` (default 2000), `MEDIA_SECS` (relay phase, default 10),
//! `MEDIA_BASELINE_SECS` (default 5), `MEDIA_SENDERS` (sender threads, default 1),
//! `MEDIA_IO_THREADS` (relay I/O threads, default 1), `MEDIA_PORT_BASE` (default 20000).
//!
//! Prints packets sent/received/relayed, loss, and one-way time (send at the near phone to
//! receive at the far phone) p50/p99/max for both phases, the relay's added delay, and the CPU
//! time of the relay's I/O threads and of the phones (from `/proc/self/task/*/stat`).
//! `MEDIA_PIN=1` puts the relay's I/O threads on the last CPU and the phones on the others.
//! The relay's own measuring knobs apply: `PASARELA_MEDIA_COALESCE_US=400` turns on a fixed
//! wake-up coalescing window (`adaptive`: the time 16 packets take, at most 400 µs; default:
//! none) and
//! `PASARELA_MEDIA_RX_TIMESTAMPS=0` turns its kernel receive timestamps off, so that runs
//! alternating them compare before and after on the same machine load.
//!
//! **Anchor**: when Debian's `rtpengine` (package `rtpengine-daemon`) is installed, the same
//! phones then talk through rtpengine in userspace (`--table=-1`, no kernel forwarding, as many
//! worker threads as the relay has I/O threads), each call set up over its NG control protocol
//! (offer/answer with the phones' SDP), and the bench prints both systems' CPU per 1 000 relayed
//! packets, added delay and loss side by side with the ratio pasarela / rtpengine.
//! `MEDIA_REPS` (default 1) repeats the relay and rtpengine phases interleaved, and with two
//! or more adds the medians and in how many runs each target held (CPU ratio ≤ 0.6, added
//! p99 below rtpengine's);
//! `MEDIA_RTPENGINE=0` skips the anchor.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use pasarela::media::{LegMedia, MediaConfig, MediaEngine, Relay, Side};

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
    cpu: BTreeMap<String, f64>,
}

type Phones = [(Arc<UdpSocket>, Arc<UdpSocket>, SocketAddr, SocketAddr)];

/// With `MEDIA_PIN=1`: the relay's I/O threads get the last CPU to themselves and every other
/// thread of the bench (the simulated phones, started later, inherit it) the others — so the
/// relay's own delay is measured, not the phones' competition for the same core.
fn pin_relay_apart() -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return false;
    }
    let set = |tid: libc::pid_t, range: std::ops::Range<usize>| {
        // SAFETY: cpu_set_t is plain data; CPU_SET writes within it; the call reads it.
        unsafe {
            let mut mask: libc::cpu_set_t = std::mem::zeroed();
            for c in range {
                libc::CPU_SET(c, &mut mask);
            }
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mask) == 0
        }
    };
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    let mut ok = true;
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<libc::pid_t>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        ok &= if comm.starts_with("media-io") {
            set(tid, cpus - 1..cpus)
        } else {
            set(tid, 0..cpus - 1)
        };
    }
    ok
}

/// CPU seconds (user + system) per thread name, digits stripped (`media-io-0` → `media-io`).
fn cpu_by_thread() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(l), Some(r)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[l + 1..r]
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .trim_end_matches('-')
            .to_string();
        // After the comm: state is field 3; utime and stime are fields 14 and 15.
        let f: Vec<&str> = stat[r + 1..].split_whitespace().collect();
        let ticks = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        *out.entry(name).or_insert(0.0) += (ticks(14) + ticks(15)) as f64 / 100.0;
    }
    out
}

/// Voluntary context switches (sleeps that ended in a wake-up) summed over the threads of
/// `/proc/<pid>/task` whose name starts with `prefix`: the relay's wake-ups, a figure the load
/// of the machine does not change.
fn wakeups(pid: &str, prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut n = 0;
    for e in dir.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        n += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    n
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    let Some(r) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = stat[r + 1..].split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// Runs senders and the receiver for `secs`.
fn phase(phones: &Phones, secs: u64, senders: usize, base: Instant) -> PhaseResult {
    let hist = Arc::new(Histogram::new());
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let socks: Vec<Arc<UdpSocket>> = phones
        .iter()
        .flat_map(|(a, b, _, _)| [a.clone(), b.clone()])
        .collect();
    let receiver = {
        let (hist, received, stop) = (hist.clone(), received.clone(), stop.clone());
        std::thread::Builder::new()
            .name("phone-rx".into())
            .spawn(move || {
                let Ok(mut poll) = Poll::new() else {
                    eprintln!("poll failed");
                    return;
                };
                for (i, s) in socks.iter().enumerate() {
                    let fd = s.as_raw_fd();
                    if let Err(e) =
                        poll.registry()
                            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
                    {
                        eprintln!("register: {e}");
                        return;
                    }
                }
                let mut events = Events::with_capacity(1024);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if poll
                        .poll(&mut events, Some(Duration::from_millis(50)))
                        .is_err()
                    {
                        continue;
                    }
                    for ev in events.iter() {
                        let Some(s) = socks.get(ev.token().0) else {
                            continue;
                        };
                        loop {
                            match s.recv_from(&mut buf) {
                                Ok((n, _)) if n >= 20 => {
                                    let mut t = [0u8; 8];
                                    t.copy_from_slice(&buf[12..20]);
                                    let sent_ns = u64::from_le_bytes(t);
                                    let now_ns = base.elapsed().as_nanos() as u64;
                                    hist.record(now_ns.saturating_sub(sent_ns));
                                    received.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(_) => {}
                                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                                Err(_) => {}
                            }
                        }
                    }
                }
                for s in &socks {
                    let fd = s.as_raw_fd();
                    let _ = poll.registry().deregister(&mut SourceFd(&fd));
                }
            })
    };
    let receiver = match receiver {
        Ok(r) => r,
        Err(e) => panic!("receiver thread: {e}"),
    };

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
    let cpu0 = cpu_by_thread();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut threads = Vec::new();
    for (k, mut streams) in groups.into_iter().enumerate() {
        let sent = sent.clone();
        // Spread the sender threads, and each one's streams, over the 20 ms packet interval.
        let first = start + Duration::from_micros(20_000 * k as u64 / senders as u64);
        let spawned = std::thread::Builder::new()
            .name(format!("phone-tx-{k}"))
            .spawn(move || {
                let cpu0 = thread_cpu();
                let mut pkt = [0xFFu8; 12 + 160];
                pkt[0] = 0x80;
                let n = streams.len().max(1) as u64;
                let period = Duration::from_millis(20);
                let mut tick = first;
                while tick < end {
                    for (j, s) in streams.iter_mut().enumerate() {
                        let at = tick + Duration::from_nanos(20_000_000 * j as u64 / n);
                        let now = Instant::now();
                        if at > now + Duration::from_micros(100) {
                            std::thread::sleep(at - now);
                        }
                        s.seq = s.seq.wrapping_add(1);
                        s.ts = s.ts.wrapping_add(160);
                        pkt[2..4].copy_from_slice(&s.seq.to_be_bytes());
                        pkt[4..8].copy_from_slice(&s.ts.to_be_bytes());
                        pkt[8..12].copy_from_slice(&s.ssrc.to_be_bytes());
                        let now_ns = base.elapsed().as_nanos() as u64;
                        pkt[12..20].copy_from_slice(&now_ns.to_le_bytes());
                        if s.sock.send_to(&pkt, s.dest).is_ok() {
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tick += period;
                }
                thread_cpu() - cpu0
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => panic!("sender thread: {e}"),
        }
    }
    let mut tx_cpu = 0.0;
    for t in threads {
        tx_cpu += t.join().unwrap_or(0.0);
    }
    let mut cpu1 = cpu_by_thread();
    *cpu1.entry("phone-tx".to_string()).or_insert(0.0) += tx_cpu;
    // Let the last packets arrive.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    let elapsed = start.elapsed().as_secs_f64().max(0.001);
    let cpu = cpu1
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                100.0 * (v - cpu0.get(k).copied().unwrap_or(0.0)) / elapsed,
            )
        })
        .collect();
    PhaseResult {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        hist,
        secs,
        streams: 2 * phones.len(),
        cpu,
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
    let cpu: Vec<String> = r
        .cpu
        .iter()
        .filter(|(_, v)| **v >= 0.5)
        .map(|(k, v)| format!("{k} {v:.0} %"))
        .collect();
    println!("{name:>8}: CPU (of one core) {}", cpu.join(", "));
}

/// A child process killed when dropped.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system, all threads) of process `pid`.
fn process_cpu(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(r) = stat.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = stat[r + 1..].split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// Bencodes a flat dictionary of string values (the NG protocol's requests), keys sorted.
fn bencode(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut sorted = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = b"d".to_vec();
    for (k, v) in sorted {
        out.extend_from_slice(format!("{}:{k}{}:", k.len(), v.len()).as_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out.push(b'e');
    out
}

/// The byte string stored under `key` in a bencoded reply (top-level string values only).
fn bencoded_string(reply: &[u8], key: &str) -> Option<String> {
    let needle = format!("{}:{key}", key.len());
    let at = reply
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?
        + needle.len();
    let rest = reply.get(at..)?;
    let colon = rest.iter().position(|b| *b == b':')?;
    let len: usize = std::str::from_utf8(rest.get(..colon)?).ok()?.parse().ok()?;
    let value = rest.get(colon + 1..colon + 1 + len)?;
    Some(String::from_utf8_lossy(value).into_owned())
}

/// rtpengine in userspace with an NG control socket.
struct Rtpengine {
    proc: Proc,
    ng: UdpSocket,
    ng_addr: SocketAddr,
    cookie: u64,
}

impl Rtpengine {
    fn installed() -> Option<std::path::PathBuf> {
        ["/usr/bin/rtpengine", "/usr/sbin/rtpengine"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
    }

    fn start(bin: &std::path::Path, ports: (u16, u16), threads: usize) -> Result<Self, String> {
        let probe = UdpSocket::bind((LO, 0)).map_err(|e| e.to_string())?;
        let ng_addr = probe.local_addr().map_err(|e| e.to_string())?;
        drop(probe);
        let log =
            std::env::temp_dir().join(format!("media_relay_rtpengine_{}.log", ng_addr.port()));
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(bin)
            .args([
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                "--table=-1",
                "--interface=127.0.0.1",
                &format!("--listen-ng={ng_addr}"),
                &format!("--port-min={}", ports.0),
                &format!("--port-max={}", ports.1),
                &format!("--num-threads={threads}"),
                "--delete-delay=0",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("start rtpengine: {e}"))?;
        let ng = UdpSocket::bind((LO, 0)).map_err(|e| e.to_string())?;
        ng.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let mut me = Rtpengine {
            proc: Proc(child),
            ng,
            ng_addr,
            cookie: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if me.request(&[("command", "ping")]).is_ok() {
                return Ok(me);
            }
        }
        Err(format!(
            "rtpengine did not answer a ping; see {}",
            log.display()
        ))
    }

    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    fn request(&mut self, pairs: &[(&str, &str)]) -> Result<Vec<u8>, String> {
        self.cookie += 1;
        let cookie = format!("b{}", self.cookie);
        let mut msg = format!("{cookie} ").into_bytes();
        msg.extend_from_slice(&bencode(pairs));
        self.ng
            .send_to(&msg, self.ng_addr)
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self.ng.recv(&mut buf).map_err(|e| e.to_string())?;
            let reply = &buf[..n];
            if reply.starts_with(cookie.as_bytes()) {
                let body = reply[cookie.len()..].to_vec();
                return match bencoded_string(&body, "result").as_deref() {
                    Some("ok") | Some("pong") => Ok(body),
                    other => Err(format!(
                        "rtpengine: {other:?} {:?}",
                        bencoded_string(&body, "error-reason")
                    )),
                };
            }
        }
    }

    /// Sets up one call between two phones; returns the addresses A and B must send to.
    fn call(
        &mut self,
        id: usize,
        a: SocketAddr,
        b: SocketAddr,
    ) -> Result<(SocketAddr, SocketAddr), String> {
        let sdp = |port: u16| {
            format!(
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=sendrecv\r\n"
            )
        };
        let call_id = format!("bench-{id}");
        let offer = self.request(&[
            ("command", "offer"),
            ("call-id", &call_id),
            ("from-tag", "a"),
            ("sdp", &sdp(a.port())),
        ])?;
        let towards_b = sdp_port(&bencoded_string(&offer, "sdp").unwrap_or_default())
            .ok_or("offer: no port in rtpengine's SDP")?;
        let answer = self.request(&[
            ("command", "answer"),
            ("call-id", &call_id),
            ("from-tag", "a"),
            ("to-tag", "b"),
            ("sdp", &sdp(b.port())),
        ])?;
        let towards_a = sdp_port(&bencoded_string(&answer, "sdp").unwrap_or_default())
            .ok_or("answer: no port in rtpengine's SDP")?;
        // A sends to the port offered to A (in the answer), B to the one offered to B.
        Ok((
            SocketAddr::new(LO, towards_a),
            SocketAddr::new(LO, towards_b),
        ))
    }
}

/// The audio port of an SDP body.
fn sdp_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
}

/// Wake-ups of the relaying threads per 1 000 packets relayed.
fn print_wakeups(name: &str, woke: u64, received: u64) {
    println!(
        "{name:>8}: {woke} wake-ups, {:.0} per 1000 packets relayed",
        1000.0 * woke as f64 / received.max(1) as f64
    );
}

/// CPU milliseconds per 1 000 packets the system relayed.
fn ms_per_kpkt(cpu_s: f64, received: u64) -> f64 {
    1e6 * cpu_s / received.max(1) as f64
}

fn main() {
    let calls = env("MEDIA_CALLS", 2000) as usize;
    let secs = env("MEDIA_SECS", 10);
    let baseline_secs = env("MEDIA_BASELINE_SECS", 5);
    let senders = env("MEDIA_SENDERS", 1).max(1) as usize;
    let io_threads = env("MEDIA_IO_THREADS", 1).max(1) as usize;
    let port_base = env("MEDIA_PORT_BASE", 20000) as u16;
    let port_end = (port_base as u64 + 4 * calls as u64 + 3).min(65535) as u16;

    println!(
        "media_relay: {calls} calls, {} streams of 50 packets/s, {io_threads} relay I/O threads, {senders} sender threads",
        2 * calls
    );
    let base = Instant::now();
    let mut phones = Vec::with_capacity(calls);
    let bind = || {
        let s = UdpSocket::bind((LO, 0))?;
        s.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(Arc::new(s))
    };
    for _ in 0..calls {
        match (bind(), bind()) {
            (Ok(a), Ok(b)) => phones.push((a, b)),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("phone socket: {e} (raise `ulimit -n`?)");
                return;
            }
        }
    }
    let addr = |s: &UdpSocket| s.local_addr().unwrap_or(SocketAddr::new(LO, 0));

    // Baseline: the phones talk to each other directly.
    let direct: Vec<_> = phones
        .iter()
        .map(|(a, b)| (a.clone(), b.clone(), addr(b), addr(a)))
        .collect();
    let baseline = phase(&direct, baseline_secs, senders, base);
    print("direct", &baseline);

    let reps = env("MEDIA_REPS", 1).max(1);
    let anchor = if env("MEDIA_RTPENGINE", 1) == 1 {
        let found = Rtpengine::installed();
        if found.is_none() {
            println!("rtpengine not installed (apt-get install rtpengine-daemon): anchor skipped");
        }
        found
    } else {
        None
    };
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for rep in 0..reps {
        let Some(r) = through_pasarela(
            &phones,
            &addr,
            (port_base, port_end),
            io_threads,
            secs,
            senders,
            base,
            &baseline,
        ) else {
            return;
        };
        ours.push(r);
        if let Some(bin) = &anchor {
            // rtpengine takes the ports after ours (pairs of RTP+RTCP per side).
            let lo = port_end.saturating_add(2) & !1;
            let hi = (lo as u64 + 4 * calls as u64 + 64).min(65534) as u16;
            match through_rtpengine(
                bin,
                &phones,
                &addr,
                (lo, hi),
                io_threads,
                secs,
                senders,
                base,
                &baseline,
            ) {
                Ok(r) => theirs.push(r),
                Err(e) => println!("rtpengine phase {rep}: {e}"),
            }
        }
    }
    if theirs.is_empty() {
        return;
    }
    println!();
    println!("| run | pasarela ms CPU / 1000 pkts | rtpengine ms CPU / 1000 pkts | ratio | loss % (p / r) | added p50 µs (p / r) | added p99 µs (p / r) |");
    println!("|---|---|---|---|---|---|---|");
    for (i, (p, r)) in ours.iter().zip(&theirs).enumerate() {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.3} / {:.3} | {:+} / {:+} | {:+} / {:+} |",
            i + 1,
            p.ms_per_kpkt,
            r.ms_per_kpkt,
            p.ms_per_kpkt / r.ms_per_kpkt.max(1e-9),
            p.loss_pct,
            r.loss_pct,
            p.added_p50,
            r.added_p50,
            p.added_p99,
            r.added_p99,
        );
    }
    // With several runs: the medians, and in how many runs each target held (the tail on a
    // shared machine moves between runs by more than the systems differ).
    let n = ours.len().min(theirs.len());
    if n >= 2 {
        let (ours, theirs) = (&ours[..n], &theirs[..n]);
        let med = |f: &dyn Fn(&Relayed) -> f64, of: &[Relayed]| median(of.iter().map(f).collect());
        let ratios: Vec<f64> = ours
            .iter()
            .zip(theirs)
            .map(|(p, r)| p.ms_per_kpkt / r.ms_per_kpkt.max(1e-9))
            .collect();
        println!(
            "| median | {:.1} | {:.1} | {:.2} | {:.3} / {:.3} | {:+} / {:+} | {:+} / {:+} |",
            med(&|x| x.ms_per_kpkt, ours),
            med(&|x| x.ms_per_kpkt, theirs),
            median(ratios.clone()),
            med(&|x| x.loss_pct, ours),
            med(&|x| x.loss_pct, theirs),
            med(&|x| x.added_p50 as f64, ours),
            med(&|x| x.added_p50 as f64, theirs),
            med(&|x| x.added_p99 as f64, ours),
            med(&|x| x.added_p99 as f64, theirs),
        );
        let cheaper = ratios.iter().filter(|&&q| q <= 0.6).count();
        let lower = ours
            .iter()
            .zip(theirs)
            .filter(|(p, r)| p.added_p99 < r.added_p99)
            .count();
        println!(
            "targets: CPU ratio <= 0.6 in {cheaper} of {n} runs; added p99 lower than rtpengine's in {lower} of {n} runs"
        );
    }
}

/// The median of `v` (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One relaying system's figures for a phase.
struct Relayed {
    ms_per_kpkt: f64,
    loss_pct: f64,
    added_p50: i64,
    added_p99: i64,
}

impl Relayed {
    fn of(name: &str, r: &PhaseResult, baseline: &PhaseResult, cpu_s: f64) -> Relayed {
        print(name, r);
        let out = Relayed {
            ms_per_kpkt: ms_per_kpkt(cpu_s, r.received),
            loss_pct: 100.0 * r.sent.saturating_sub(r.received) as f64 / r.sent.max(1) as f64,
            added_p50: r.hist.quantile_us(0.50) as i64 - baseline.hist.quantile_us(0.50) as i64,
            added_p99: r.hist.quantile_us(0.99) as i64 - baseline.hist.quantile_us(0.99) as i64,
        };
        println!(
            "{name:>8}: {:.1} ms CPU per 1000 packets relayed; added one-way delay p50 {:+} µs  p99 {:+} µs  max {:+} µs",
            out.ms_per_kpkt,
            out.added_p50,
            out.added_p99,
            r.hist.max_us() as i64 - baseline.hist.max_us() as i64,
        );
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn through_pasarela(
    phones: &[(Arc<UdpSocket>, Arc<UdpSocket>)],
    addr: &dyn Fn(&UdpSocket) -> SocketAddr,
    ports: (u16, u16),
    io_threads: usize,
    secs: u64,
    senders: usize,
    base: Instant,
    baseline: &PhaseResult,
) -> Option<Relayed> {
    let engine = MediaEngine::with_io_threads(
        MediaConfig {
            bind_ip: LO,
            ports: ports.0..=ports.1,
            dead_after: Duration::from_secs(60),
        },
        io_threads,
    );
    let t0 = Instant::now();
    let mut relays: Vec<Relay> = Vec::with_capacity(phones.len());
    for (a, b) in phones {
        match engine.allocate_now() {
            Ok(r) => {
                r.update(
                    LegMedia::pcmu(Some(addr(a)), Some(101)),
                    LegMedia::pcmu(Some(addr(b)), Some(101)),
                );
                relays.push(r);
            }
            Err(e) => {
                eprintln!("allocate: {e}");
                return None;
            }
        }
    }
    println!("allocated {} relays in {:?}", relays.len(), t0.elapsed());
    if env("MEDIA_PIN", 0) == 1 {
        println!(
            "pinned: relay I/O threads on the last CPU, phones on the others: {}",
            pin_relay_apart()
        );
    }
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
    let io_cpu = || cpu_by_thread().get("media-io").copied().unwrap_or(0.0);
    let cpu0 = io_cpu();
    let wake0 = wakeups("self", "media-io");
    let relayed = phase(&via, secs, senders, base);
    let cpu_s = io_cpu() - cpu0;
    let woke = wakeups("self", "media-io") - wake0;
    let out = Relayed::of("relay", &relayed, baseline, cpu_s);
    print_wakeups("relay", woke, relayed.received);
    let (mut forwarded, mut lost_seq) = (0u64, 0i64);
    for r in &relays {
        let s = r.stats();
        forwarded += s.a_to_b.forwarded + s.b_to_a.forwarded;
        lost_seq += s.a_to_b.lost + s.b_to_a.lost;
    }
    println!(
        "   relay: packets relayed {forwarded}, lost before the relay (sequence gaps) {lost_seq}"
    );
    let t1 = Instant::now();
    drop(relays);
    while engine.in_use() > 0 && t1.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    println!(
        "   relay: dropped all relays in {:?}, in_use {}",
        t1.elapsed(),
        engine.in_use()
    );
    Some(out)
}

#[allow(clippy::too_many_arguments)]
fn through_rtpengine(
    bin: &std::path::Path,
    phones: &[(Arc<UdpSocket>, Arc<UdpSocket>)],
    addr: &dyn Fn(&UdpSocket) -> SocketAddr,
    ports: (u16, u16),
    io_threads: usize,
    secs: u64,
    senders: usize,
    base: Instant,
    baseline: &PhaseResult,
) -> Result<Relayed, String> {
    let mut rtpe = Rtpengine::start(bin, ports, io_threads)?;
    let t0 = Instant::now();
    let mut via = Vec::with_capacity(phones.len());
    for (i, (a, b)) in phones.iter().enumerate() {
        let (to_a_side, to_b_side) = rtpe.call(i, addr(a), addr(b))?;
        // A sends to the port rtpengine gave A; the packets leave towards B, and back.
        via.push((a.clone(), b.clone(), to_a_side, to_b_side));
    }
    println!(
        "rtpengine: set up {} calls in {:?}",
        via.len(),
        t0.elapsed()
    );
    let pid = rtpe.pid().to_string();
    let cpu0 = process_cpu(rtpe.pid());
    let wake0 = wakeups(&pid, "");
    let relayed = phase(&via, secs, senders, base);
    let cpu_s = process_cpu(rtpe.pid()) - cpu0;
    let woke = wakeups(&pid, "") - wake0;
    let out = Relayed::of("rtpengine", &relayed, baseline, cpu_s);
    print_wakeups("rtpengine", woke, relayed.received);
    Ok(out)
}
