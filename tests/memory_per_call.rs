//! Memory per held call, counted: the SIP core with the real media relay (sockets on
//! 127.0.0.1, the engine's I/O thread) holds answered calls, and a counting global allocator
//! measures the heap bytes still allocated per call once the call is set up and once its
//! transactions are over (a call held for minutes). Issue 22 wants less than 20 KiB per held
//! call for the whole process; the bound here is on the heap of the core and the relay, which
//! is where a held call's memory lives (the kernel's socket buffers are not the process's).
//!
//! `MEMORY_PER_CALL_VERBOSE=1` prints the bytes per call of each step of the setup.
//! `MEMORY_PER_CALL_EXIT=1` ends the process right after the held calls are measured: run
//! under heaptrack (`heaptrack target/release/deps/memory_per_call-… held_calls`), what a held
//! call keeps shows as leaked, by where it was allocated.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pasarela::callctl::overload::{Admission, Load};
use pasarela::callctl::{Output, SipCore};
use pasarela::media::port::RelayPort;
use pasarela::media::{MediaConfig, MediaEngine, MediaEvent};
use pasarela::sip::message::{Message, Request};
use pasarela::sip::parse::{parse_message, Framing, Limits};

mod common;
mod core_vt;
use core_vt::{authorization, ext, ok_for, peer, response, responses, to_tag, SERVER};

/// Counts the bytes and blocks allocated and not yet freed, over all threads.
struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_BLOCKS: AtomicI64 = AtomicI64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
            LIVE_BLOCKS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        LIVE_BLOCKS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The counter is global: the tests of this file run one at a time, or one test's
/// allocations would count in another's figures.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Bytes and blocks allocated now.
fn live() -> (i64, i64) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_BLOCKS.load(Ordering::Relaxed),
    )
}

const CALLER: &str = "127.0.0.1:5062";
const CALLEE: &str = "127.0.0.1:5064";

const SDP: &str = "v=0\no=- 1 1 IN IP4 127.0.0.1\ns=-\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 40000 RTP/AVP 0 8 101\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16\na=ptime:20\na=sendrecv\n";

/// The relays' range: 3 000 pairs (a burst holds 1 000 calls, two pairs each), no other test
/// process's (a fixed range could be one's), claimed once: the tests run one at a time.
fn rtp_ports() -> std::ops::RangeInclusive<u16> {
    static CLAIMED: std::sync::OnceLock<(u16, u16)> = std::sync::OnceLock::new();
    let (lo, hi) = *CLAIMED.get_or_init(|| common::claim_ports(6000));
    lo..=hi
}

struct Harness {
    core: SipCore,
    now: Instant,
    unix: u64,
    /// Kept open so the relays' events have somewhere to go.
    events: tokio::sync::mpsc::UnboundedReceiver<(u64, MediaEvent)>,
}

impl Harness {
    fn new() -> Harness {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let engine = MediaEngine::with_io_threads(
            MediaConfig {
                bind_ip: "127.0.0.1".parse().expect("ip"),
                ports: rtp_ports(),
                dead_after: Duration::from_secs(3600),
            },
            1,
        );
        let settings = core_vt::settings(Duration::from_secs(60), false);
        Harness {
            core: SipCore::new(
                settings,
                vec![ext("100"), ext("101")],
                [7; 32],
                Some(Box::new(RelayPort::new(engine, tx))),
            ),
            now: Instant::now(),
            unix: 1_800_000_000,
            events: rx,
        }
    }

    fn feed(&mut self, text: &str, from: &str) -> Vec<(Message, SocketAddr)> {
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

    fn drain(&mut self) -> Vec<(Message, SocketAddr)> {
        let mut out = Vec::new();
        while let Some(o) = self.core.poll_output(self.now) {
            if let Output::Transmit(t) = o {
                let m = parse_message(t.data, Framing::Datagram, &Limits::default())
                    .expect("core output parses");
                out.push((m, t.peer.remote));
            }
        }
        out
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.core.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now, self.unix);
            self.drain();
        }
        self.now = end;
    }
}

fn requests<'a>(out: &'a [(Message, SocketAddr)], method: &str) -> Vec<&'a Request> {
    out.iter()
        .filter_map(|(m, _)| match m {
            Message::Request(r) if r.method.as_str() == method => Some(r),
            _ => None,
        })
        .collect()
}

fn register_callee(h: &mut Harness) {
    let reg = |auth: &str, cseq: u32| {
        format!(
            "REGISTER sip:office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLEE};branch=z9hG4bKreg{cseq}\nFrom: <sip:101@office.test>;tag=r\nTo: <sip:101@office.test>\nCall-ID: reg\nCSeq: {cseq} REGISTER\nContact: <sip:101@{CALLEE}>\n{auth}Content-Length: 0\n\n"
        )
    };
    let out = h.feed(&reg("", 1), CALLEE);
    let challenge = responses(&out)[0].clone();
    let auth = authorization(&challenge, "101", "REGISTER", "sip:office.test");
    let out = h.feed(&reg(&format!("Authorization: {auth}\n"), 2), CALLEE);
    assert_eq!(responses(&out)[0].status, 200);
}

/// An INVITE as softphones send them: a few headers beyond the minimum.
fn invite(call: u32, cseq: u32, auth: &str) -> String {
    let body = SDP.replace('\n', "\r\n");
    format!(
        "INVITE sip:101@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKinv{call}x{cseq}\nFrom: \"Reception\" <sip:100@office.test>;tag=a{call}\nTo: <sip:101@office.test>\nCall-ID: call{call}-5f0c2a9e@{CALLER}\nCSeq: {cseq} INVITE\nContact: <sip:100@{CALLER};transport=udp>\nMax-Forwards: 70\nUser-Agent: Test Phone 1.0\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, INFO, MESSAGE\nSupported: replaces, timer\n{auth}Content-Type: application/sdp\nContent-Length: {}\n\n{SDP}",
        body.len()
    )
}

/// The callee's response to pasarela's INVITE.
fn callee_response(inv: &Request, status: u16, tag: &str, sdp: bool) -> String {
    let h = &inv.headers;
    let body = if sdp {
        SDP.replace("40000", "42000")
    } else {
        String::new()
    };
    let ct = if sdp {
        "Content-Type: application/sdp\n"
    } else {
        ""
    };
    format!(
        "SIP/2.0 {status} X\nVia: {}\nFrom: {}\nTo: {};tag={tag}\nCall-ID: {}\nCSeq: {}\nContact: <sip:101@{CALLEE}>\nUser-Agent: Test Phone 1.0\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, INFO, MESSAGE\n{ct}Content-Length: {}\n\n{body}",
        h.via().expect("via"),
        h.from().expect("from"),
        h.to().expect("to"),
        h.call_id().expect("call-id"),
        h.cseq().expect("cseq"),
        body.replace('\n', "\r\n").len(),
    )
}

/// Bytes per call of each step, summed over the calls set up.
#[derive(Default)]
struct Steps {
    challenged: i64,
    forked: i64,
    ringing: i64,
    answered: i64,
    acked: i64,
}

/// Sets up call `n` (digest challenge, INVITE forked to 101, 180, 200, ACK both ways); returns
/// pasarela's tag in the caller's dialog.
fn hold_call(h: &mut Harness, n: u32, steps: &mut Steps) -> String {
    let mut mark = live().0;
    let mut step = |acc: &mut i64| {
        let now = live().0;
        *acc += now - mark;
        mark = now;
    };
    let out = h.feed(&invite(n, 1, ""), CALLER);
    let challenge = response(&out, 401, "401");
    let ch_tag = to_tag(&challenge);
    h.feed(
        &format!("ACK sip:101@office.test SIP/2.0\nVia: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKinv{n}x1\nFrom: \"Reception\" <sip:100@office.test>;tag=a{n}\nTo: <sip:101@office.test>;tag={ch_tag}\nCall-ID: call{n}-5f0c2a9e@{CALLER}\nCSeq: 1 ACK\nContent-Length: 0\n\n"),
        CALLER,
    );
    let auth = authorization(&challenge, "100", "INVITE", "sip:101@office.test");
    drop(out);
    step(&mut steps.challenged);
    let out = h.feed(&invite(n, 2, &format!("Authorization: {auth}\n")), CALLER);
    let fwd = requests(&out, "INVITE");
    assert_eq!(fwd.len(), 1, "one fork to the callee's one contact");
    let inv = fwd[0].clone();
    drop(out);
    step(&mut steps.forked);
    h.feed(&callee_response(&inv, 180, &format!("b{n}"), false), CALLEE);
    step(&mut steps.ringing);
    let out = h.feed(&callee_response(&inv, 200, &format!("b{n}"), true), CALLEE);
    assert_eq!(requests(&out, "ACK").len(), 1, "pasarela ACKs the 200");
    let ok = response(&out, 200, "200 to the caller");
    let tag = to_tag(&ok);
    drop(out);
    step(&mut steps.answered);
    h.feed(
        &format!("ACK sip:101@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKack{n}\nFrom: \"Reception\" <sip:100@office.test>;tag=a{n}\nTo: <sip:101@office.test>;tag={tag}\nCall-ID: call{n}-5f0c2a9e@{CALLER}\nCSeq: 2 ACK\nContent-Length: 0\n\n"),
        CALLER,
    );
    step(&mut steps.acked);
    tag
}

/// The caller hangs call `n` up (`tag`: pasarela's tag in its dialog); the callee answers the
/// BYE pasarela sends it.
fn hang_up(h: &mut Harness, n: u32, tag: &str) {
    let out = h.feed(
        &format!("BYE sip:101@{SERVER} SIP/2.0\nVia: SIP/2.0/UDP {CALLER};rport;branch=z9hG4bKbye{n}\nFrom: \"Reception\" <sip:100@office.test>;tag=a{n}\nTo: <sip:101@office.test>;tag={tag}\nCall-ID: call{n}-5f0c2a9e@{CALLER}\nCSeq: 3 BYE\nContent-Length: 0\n\n"),
        CALLER,
    );
    let bye = requests(&out, "BYE");
    assert_eq!(bye.len(), 1, "the BYE goes on to the callee");
    let ok = ok_for(bye[0]);
    let answered = responses(&out).iter().any(|r| r.status == 200);
    let out = h.feed(&ok, CALLEE);
    assert!(
        answered || responses(&out).iter().any(|r| r.status == 200),
        "the caller's BYE is answered"
    );
}

/// Lets the relays' I/O thread take in the relays handed to it (their state is its heap): at
/// least 300 ms, then until the heap has not changed for 200 ms (up to 5 s), as a loaded
/// machine may not have run that thread yet.
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = live();
    let mut still = 0;
    while still < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = live();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
}

const WARM: u32 = 20;
const HELD: u32 = 200;
/// Issue 22's target is 20 KiB of PSS per held call; the allocator's rounding and the
/// fragmentation the set-up leaves add to what is counted here, so the bounds sit just above
/// what is measured and a regression fails. Measured (2026-12-04): 9 503 B in 82 blocks per
/// held call, 11 677 B in 106 blocks just after set-up while its transactions still absorb
/// retransmissions (one build measured 824 B and one block less per call, the same code: a
/// map's growth step falling inside or outside the measured window) (18.3 KB in 214 blocks held before the stored SDPs were kept as text, the
/// answered INVITEs cut to the headers still read, and URIs and parameter lists shrunk;
/// 31.4 KB before the Call, transactions and SRTP contexts were boxed).
const BOUND_SETUP: i64 = 12_000;
const BOUND_HELD: i64 = 9_800;
/// Heap blocks per call: each is an allocation to make and a slot that fragments the heap.
const BOUND_SETUP_BLOCKS: i64 = 110;
const BOUND_HELD_BLOCKS: i64 = 86;

#[test]
fn held_calls_stay_small() {
    let _serial = one_at_a_time();
    let verbose = std::env::var_os("MEMORY_PER_CALL_VERBOSE").is_some();
    let mut h = Harness::new();
    register_callee(&mut h);
    let mut steps = Steps::default();
    // Warm-up: maps and pools reach their working size, the I/O thread starts.
    for n in 0..WARM {
        hold_call(&mut h, n, &mut steps);
    }
    h.advance(Duration::from_secs(40));
    settle();
    let (bytes0, blocks0) = live();
    let mut steps = Steps::default();
    for n in WARM..WARM + HELD {
        hold_call(&mut h, n, &mut steps);
    }
    settle();
    let (bytes1, blocks1) = live();
    // Past Timer L/M and the 2xx retransmissions (64·T1): a call held for minutes.
    h.advance(Duration::from_secs(40));
    settle();
    let (bytes2, blocks2) = live();
    if std::env::var_os("MEMORY_PER_CALL_EXIT").is_some() {
        std::process::exit(0);
    }
    assert_eq!(h.core.calls().len(), (WARM + HELD) as usize, "calls held");
    let per = |b: i64| b / i64::from(HELD);
    let setup = per(bytes1 - bytes0);
    let held = per(bytes2 - bytes0);
    let setup_blocks = per(blocks1 - blocks0);
    let held_blocks = per(blocks2 - blocks0);
    println!(
        "per call just set up: {setup} B in {setup_blocks} blocks; held (transactions over): {held} B in {held_blocks} blocks"
    );
    if verbose {
        println!(
            "steps per call: challenged {} B, forked {} B, ringing {} B, answered {} B, acked {} B",
            per(steps.challenged),
            per(steps.forked),
            per(steps.ringing),
            per(steps.answered),
            per(steps.acked)
        );
    }
    assert!(
        setup < BOUND_SETUP,
        "{setup} B per call just set up (bound {BOUND_SETUP})"
    );
    assert!(
        held < BOUND_HELD,
        "{held} B per held call (bound {BOUND_HELD})"
    );
    assert!(
        setup_blocks < BOUND_SETUP_BLOCKS,
        "{setup_blocks} blocks per call just set up (bound {BOUND_SETUP_BLOCKS})"
    );
    assert!(
        held_blocks < BOUND_HELD_BLOCKS,
        "{held_blocks} blocks per held call (bound {BOUND_HELD_BLOCKS})"
    );
}

/// The heap the core and the relay hold once every call and transaction is over and the
/// nonces the calls used expired, after the housekeeping tick (maps shrink).
fn quiet(h: &mut Harness) -> i64 {
    // Past Timer J/M/K and the 2xx retransmissions (64·T1 = 32 s), the records taken, and
    // past the nonces' lifetime (`nonce_ttl_secs`, 300 s).
    let wait = Duration::from_secs(310);
    h.advance(wait);
    h.unix += wait.as_secs();
    settle();
    // Polled until settled rather than after a fixed sleep: on a loaded machine the relays'
    // events and the I/O thread's shrink (at its next wake-up, at most a second when idle) can
    // come later than any fixed wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut samples: Vec<i64> = Vec::new();
    let mut housekeep = true;
    loop {
        // The relays' events (latching, the end of a call's media) go to the core, as the
        // server's loop does.
        while let Ok((call, event)) = h.events.try_recv() {
            h.core.media_event(h.now, h.unix, call, event);
            housekeep = true;
        }
        if housekeep {
            h.core.housekeeping_at(Some(h.now), h.unix);
            h.drain();
            // As the server's loop does after housekeeping.
            pasarela::memory::give_back();
            housekeep = false;
            samples.clear();
        }
        std::thread::sleep(Duration::from_millis(100));
        samples.push(live().0);
        // Settled: within 1 KiB over the last 1.5 s (past the I/O thread's idle wake-up).
        if samples.len() >= 15 {
            let recent = &samples[samples.len() - 15..];
            let (lo, hi) = (recent.iter().min(), recent.iter().max());
            if let (Some(lo), Some(hi)) = (lo, hi) {
                if hi - lo <= 1024 {
                    return recent[recent.len() - 1];
                }
            }
        }
        if std::time::Instant::now() > deadline {
            return live().0;
        }
    }
}

const BURST: u32 = 1000;
/// Issue 22: after calls or a flood end, the process is back within 10 % of its idle size.
const BACK_WITHIN: f64 = 0.10;
/// What a call may leave behind on the heap once it and its transactions are over and the
/// housekeeping ran: measured (2026-12-04) 56 B per call of a burst of 1 000 (166.5 KB idle,
/// 222.8 KB after; before the media I/O thread dropped its slots and timers at housekeeping,
/// 154 B; before the relays' events were taken, 254 B). A leak of any per-call structure is
/// hundreds of bytes. The whole process's PSS (idle 23 MiB) is what the 10 % is about.
const LEFT_PER_CALL: i64 = 100;

/// 1 000 calls set up, held together, hung up: once their transactions are over and the
/// housekeeping ran, the heap is back to what it was before but for [`LEFT_PER_CALL`] bytes a
/// call (the maps that grew to hold them shrink, the relay thread drops its slots).
#[test]
fn back_to_idle_after_calls() {
    let _serial = one_at_a_time();
    let mut h = Harness::new();
    register_callee(&mut h);
    let mut steps = Steps::default();
    // Warm-up: the I/O thread, pools and a few calls' worth of every map.
    let tags: Vec<String> = (0..WARM)
        .map(|n| hold_call(&mut h, n, &mut steps))
        .collect();
    for (n, tag) in tags.iter().enumerate() {
        hang_up(&mut h, n as u32, tag);
    }
    let idle = quiet(&mut h);
    let tags: Vec<String> = (WARM..WARM + BURST)
        .map(|n| hold_call(&mut h, n, &mut steps))
        .collect();
    settle();
    let held = live().0;
    assert_eq!(h.core.calls().len(), BURST as usize, "calls held");
    for (i, tag) in tags.iter().enumerate() {
        hang_up(&mut h, WARM + i as u32, tag);
    }
    assert_eq!(h.core.calls().len(), 0, "every call ended");
    let after = quiet(&mut h);
    println!(
        "idle {idle} B, {BURST} calls held {held} B, after they ended {after} B ({:+.1} % of idle)",
        100.0 * (after - idle) as f64 / idle as f64
    );
    assert_eq!(h.core.transaction_counts(), (0, 0), "transactions over");
    assert!(
        after - idle < LEFT_PER_CALL * i64::from(BURST),
        "{after} B after the calls ended against {idle} B idle"
    );
}

/// A flood of new INVITEs above the call budget (overload admission as the server applies it):
/// each gets 503 at once and leaves nothing behind, so the heap does not grow with the flood
/// (bounded), and once it ends the heap is back within 10 % of idle.
#[test]
fn flood_above_capacity_stays_bounded() {
    let _serial = one_at_a_time();
    const MAX_CALLS: usize = 50;
    const FLOOD: u32 = 20_000;
    let mut h = Harness::new();
    register_callee(&mut h);
    let admission = Admission::new(Duration::from_millis(200), MAX_CALLS);
    let mut steps = Steps::default();
    // The budget is spent by calls held; these stay up through the flood.
    let tags: Vec<String> = (0..MAX_CALLS as u32)
        .map(|n| hold_call(&mut h, n, &mut steps))
        .collect();
    let idle = quiet(&mut h);
    let mut refused = 0u64;
    let mut peak = 0i64;
    for i in 0..FLOOD {
        let n = 1_000_000 + i;
        let why = admission.shed(&Load::new(
            Duration::ZERO,
            h.core.calls().len(),
            h.core.pending_routes(),
        ));
        assert!(why.is_some(), "the budget is spent");
        h.core.set_shedding(true);
        let out = h.feed(&invite(n, 1, ""), CALLER);
        refused += h.core.set_shedding(false);
        assert_eq!(response(&out, 503, "503 to a new call").status, 503);
        if i % 1000 == 999 {
            h.advance(Duration::from_millis(50));
            peak = peak.max(live().0);
        }
    }
    assert_eq!(refused, u64::from(FLOOD), "every new call refused at once");
    let grown = peak - idle;
    println!(
        "idle {idle} B with {MAX_CALLS} calls held; during {FLOOD} refused INVITEs at most {grown:+} B"
    );
    // Nothing per refused call: far below one byte per INVITE on average.
    assert!(
        grown < i64::from(FLOOD),
        "the heap grew {grown} B over a flood of {FLOOD} refused INVITEs"
    );
    let after = quiet(&mut h);
    assert!(
        (after - idle) as f64 <= BACK_WITHIN * idle as f64,
        "{after} B after the flood against {idle} B idle"
    );
    for (n, tag) in tags.iter().enumerate() {
        hang_up(&mut h, n as u32, tag);
    }
}

/// The replay state of digest nonces (the highest `nc` of each nonce used, kept for the nonce
/// lifetime, 300 s by default): every authenticated call of a flood leaves one entry until
/// then. What an entry costs is what a flood leaves for five minutes, and how it is allocated
/// decides what else stays: small blocks allocated all through the flood (an ordered map's
/// nodes, a hash map's age index) each keep an allocator page of the flood's freed memory
/// resident. The anchors bench's 3 000 calls/s flood held 36–47 MiB 60 s after it with such
/// state (a hash map with an age index, then an ordered map), 24.7 with no nonce state (a 30 s
/// nonce lifetime), against 21 idle. So: few blocks (a table per issue time), few bytes.
const NONCE_ENTRY_BYTES: i64 = 48;
/// Live blocks per 1 000 remembered nonces (an ordered map: about 140; the hash map with its
/// age index: about 170).
const NONCE_BLOCKS_PER_1000: i64 = 1;

#[test]
fn nonce_replay_state_is_small_and_expires() {
    let _serial = one_at_a_time();
    const NONCES: u64 = 60_000;
    const TTL: u64 = 300;
    let now = 1_800_000_000u64;
    let mut nonces = pasarela::sip::auth::NonceManager::new([7; 32], TTL);
    let (bytes0, blocks0) = live();
    for i in 0..NONCES {
        // Entropy as the stateless challenges derive it: unordered.
        let entropy = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // Nonces issued in 10 s slots over 20 s, as the digest gate's challenges are.
        let ts = now + (i * 20 / NONCES) / 10 * 10;
        let nonce = nonces.issue(ts, entropy);
        assert_eq!(
            nonces.check(&nonce, Some(1), ts),
            pasarela::sip::auth::NonceStatus::Valid
        );
    }
    assert_eq!(nonces.tracked_nonces(), NONCES as usize);
    let (bytes, blocks) = live();
    let per_entry = (bytes - bytes0) / NONCES as i64;
    let blocks_per_1000 = (blocks - blocks0) * 1000 / NONCES as i64;
    println!(
        "nonce replay state: {per_entry} B an entry, {} blocks for {NONCES}",
        blocks - blocks0
    );
    assert!(
        per_entry < NONCE_ENTRY_BYTES,
        "{per_entry} B per remembered nonce (bound {NONCE_ENTRY_BYTES})"
    );
    assert!(
        blocks_per_1000 < NONCE_BLOCKS_PER_1000,
        "{} blocks for {NONCES} remembered nonces",
        blocks - blocks0
    );
    nonces.purge(now + 20 + TTL);
    assert_eq!(nonces.tracked_nonces(), 0);
    let left = live().0 - bytes0;
    assert!(left < 1024, "{left} B left once every nonce expired");
}

/// Bytes a remembered nonce may cost: a 3 000 calls/s flood leaves 60 000 of them for the
/// nonce lifetime (300 s), against an idle process of about 21 MiB that must be back within
/// 10 % a minute after the flood. A `u64 → u32` table per issue time took 37 B a nonce
/// (2.2 MB); fingerprint sets take 5 B a slot, 5–11 B a nonce with the table's growth steps.
const NONCE_SET_ENTRY_BYTES: i64 = 16;

#[test]
fn nonce_replay_state_takes_a_few_bytes_a_nonce() {
    let _serial = one_at_a_time();
    const NONCES: u64 = 60_000;
    const TTL: u64 = 300;
    let now = 1_800_000_000u64;
    let mut nonces = pasarela::sip::auth::NonceManager::new([7; 32], TTL);
    let (bytes0, _) = live();
    for i in 0..NONCES {
        let entropy = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // Three 10 s slots of 20 000 nonces each: a table's size between growth steps.
        let ts = now + (i * 30 / NONCES) / 10 * 10;
        let nonce = nonces.issue(ts, entropy);
        assert_eq!(
            nonces.check(&nonce, Some(1), ts),
            pasarela::sip::auth::NonceStatus::Valid
        );
        // Reused with a higher count, as a phone may within the nonce lifetime.
        if i % 100 == 0 {
            assert_eq!(
                nonces.check(&nonce, Some(2), ts),
                pasarela::sip::auth::NonceStatus::Valid
            );
        }
    }
    assert_eq!(nonces.tracked_nonces(), NONCES as usize);
    let per_entry = (live().0 - bytes0) / NONCES as i64;
    println!("nonce replay state: {per_entry} B a nonce");
    assert!(
        per_entry < NONCE_SET_ENTRY_BYTES,
        "{per_entry} B per remembered nonce (bound {NONCE_SET_ENTRY_BYTES})"
    );
    nonces.purge(now + 30 + TTL);
    assert_eq!(nonces.tracked_nonces(), 0);
    assert!(live().0 - bytes0 < 1024, "the replay state is given back");
}
