//! The media I/O threads: a small fixed set of std threads, each running one `mio::Poll` over
//! the sockets of the relays assigned to it.
//!
//! A relay is handed to a thread (round-robin) when it is allocated, as a boxed
//! [`RelayState`] through that thread's control channel; an eventfd ([`Wake`]) makes the
//! thread look at the channel. A thread that has just handled control messages gathers the
//! next ones for [`CONTROL_WINDOW`] instead of being woken for each. The thread registers
//! the relay's four sockets under tokens `slot * 4 + socket`, and per readable event drains the socket (mio is edge-triggered) with
//! one `recvmmsg` ([`super::mmsg`]) into reused buffers, handing each datagram to the relay's
//! per-packet logic; the packets relayed leave together once the wake-up's sockets are drained
//! ([`super::uring`]), before control messages can close a socket. Where the kernel has
//! `IORING_OP_EPOLL_WAIT` (Linux 6.15), the thread waits on its `epoll` instance through that
//! send ring instead of `epoll_wait`: a wake-up's packets then leave with the next wait, in the
//! one `io_uring_enter` that also puts the thread to sleep — a system call fewer per wake-up,
//! and a thread whose sends woke a receiver on its CPU sleeps without first being preempted
//! by it (250 calls on loopback: 1.2-1.3 system calls per packet instead of 1.55, a third
//! fewer context switches; [`super::uring::EPOLL_RING_ENV`]`=0` turns it off). Timers — dead-media
//! detection and the pacing of injected DTMF — live in one binary heap per thread and bound the
//! poll timeout. Removing a relay deregisters and closes its sockets, which returns its ports to
//! the pool.
//!
//! A busy thread can coalesce its wake-ups ([`COALESCE`], off unless [`COALESCE_ENV`] asks):
//! a thread woken again soon after its last wake-up waits out a short window and then takes
//! everything that became readable in one poll. Measured against rtpengine on an otherwise
//! idle machine the window bought no CPU (250 calls: 3.3 and 5.0 ms per 1 000 packets with
//! it, 6.3 and 4.2 without; 500 calls: 4.2 and 4.2 with, 3.6 and 3.7 without) and cost a
//! quarter of a millisecond of added delay on every packet (p50 +250-270 µs against
//! +30-60 µs), so a datagram is relayed as soon as it is seen.
//!
//! With multishot receive (`PASARELA_MEDIA_URING=multishot`, see [`super::uring::URING_ENV`];
//! not the default, for its fixed buffers), the thread does
//! without `mio` and `recvmmsg`: each socket has a multishot receive armed on the thread's
//! ring ([`super::multishot`]), and one `io_uring_enter` per wake-up submits the packets
//! relayed, waits (until a datagram, the control eventfd or the next timer) and leaves every
//! datagram received on every socket in the completion queue. A socket closed while its
//! receive is armed has it cancelled; the relay removed keeps its slot, and its sockets open,
//! until each receive has ended, so that no completion finds its slot reused by another relay
//! unrecognised (completions carry the receive's generation) and its ports are free when they
//! return to the pool.
//!
//! A thread ends when its control channel is disconnected: the engine and every relay handle
//! holding a sender are gone, so no relay can be left on it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::mmsg::{RecvBatch, WakeClock};
use super::multishot::{self, Receiver as RingReceiver, SetupError};
use super::relay::{Control, RelayState, Timer, BUF_LEN};
use super::uring::{Completion, SendQueue, UringMode};
use super::MediaError;

/// Token of the thread's waker; relay tokens are `slot * 4 + socket`, far below it.
const WAKER: Token = Token(usize::MAX);
/// How long a thread that has just handled control messages (relays added or removed, media
/// updated) goes on taking them without being woken for each: it looks at its channel again
/// when the window is over (or at its next wake-up before), and senders meanwhile only queue.
/// At 500 calls/s through two threads, each gets ~500 messages a second, which cost a wake-up
/// (two context switches) each: gathered, ~50 a second. A relay is added when its call's
/// offer is handled, long before its first packet is due, and a packet that comes first
/// waits in its socket at most this long, once; a relay removed holds its ports this much
/// longer. A thread that was not gathering is woken at once.
const CONTROL_WINDOW: Duration = Duration::from_millis(20);
/// Readiness events handled per poll.
const EVENTS: usize = 1024;
/// Longest sleep without looking at the control channel (it cannot signal disconnection).
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Longest wake-up coalescing window. A thread receiving at least two datagrams per
/// [`COALESCE`] on average (5 000 packets/s, 50 calls) is busy: after handling what a wake-up
/// found it sleeps until the window after the wake-up is over, so one wake-up serves every
/// datagram of the window and a packet waits at most this much longer (rtpengine's p99 added
/// delay at 250 calls is three to four times it). A quieter thread relays each datagram as
/// soon as it arrives.
const COALESCE: Duration = Duration::from_micros(400);
/// Datagrams a busy thread lets arrive per wake-up: its window is the time they take at the
/// packet rate it measured, at most [`COALESCE`]. Beyond about 16 a wake-up the sleep and
/// wake-up are a small share of what the datagrams cost, and a longer wait would only add
/// delay: at 500 calls (50 000 packets/s) the window is 320 µs, at 1 000 calls 160 µs.
const COALESCE_PACKETS: u32 = 16;
/// Environment variable turning the coalescing window on: a number of microseconds fixes it,
/// `adaptive` sizes it to [`COALESCE_PACKETS`] capped at [`COALESCE`]; unset (or `0`), every
/// datagram is relayed as soon as it is seen, whatever the load. Like
/// `PASARELA_MEDIA_IO_THREADS` a knob for measuring rather than a setting.
pub(crate) const COALESCE_ENV: &str = "PASARELA_MEDIA_COALESCE_US";
/// How often a thread re-estimates its packet rate.
const RATE_PERIOD: Duration = Duration::from_millis(10);
/// Timer slack of the I/O threads, so that a window ends on time (the kernel's default: 50 µs).
const TIMER_SLACK_NS: libc::c_ulong = 10_000;
/// Completions taken from the ring at a time.
const REAP: usize = 64;
/// How long a multishot thread without relays keeps its receive buffers' pages before it
/// gives them back ([`RingReceiver::release`]): calls that follow each other closely reuse
/// them.
const RELEASE_AFTER: Duration = Duration::from_secs(5);

/// The eventfd that tells an I/O thread to look at its control channel: watched by its
/// `epoll` or read through its ring. Blocking (an `io_uring` read of a non-blocking one would
/// fail instead of waiting); a write blocks only when the counter is about to overflow, which
/// 2^64 control messages would take.
pub(crate) struct Wake {
    fd: OwnedFd,
    /// Set by the thread while it gathers control messages ([`CONTROL_WINDOW`]): it looks at
    /// its channel within that window without being woken, so senders do not wake it.
    gathering: AtomicBool,
    /// The thread's wake-ups (its waits that returned), for tests.
    #[cfg(test)]
    wakeups: std::sync::atomic::AtomicU64,
}

impl Wake {
    fn new() -> std::io::Result<Self> {
        // SAFETY: no pointer is passed; the descriptor returned is ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor just opened and owned by nothing else.
        Ok(Wake {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            gathering: AtomicBool::new(false),
            #[cfg(test)]
            wakeups: Default::default(),
        })
    }

    fn wake(&self) -> std::io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of a live u64.
        let r = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The sending side of one I/O thread: what the engine and every relay handle hold.
#[derive(Clone)]
pub(crate) struct IoHandle {
    tx: Sender<Control>,
    waker: Arc<Wake>,
}

impl IoHandle {
    /// Queues `c` for the thread and wakes it, unless the thread is gathering control
    /// messages (it then takes `c` within [`CONTROL_WINDOW`]). `false` when the thread is gone.
    pub(crate) fn send(&self, c: Control) -> bool {
        let urgent = c.urgent();
        if self.tx.send(c).is_err() {
            return false;
        }
        // Paired with the fence in `IoThread::gather_control`: either the thread sees the
        // message in its last look at the channel, or this sees that it stopped gathering.
        fence(Ordering::SeqCst);
        if !urgent && self.waker.gathering.load(Ordering::Relaxed) {
            return true;
        }
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "media I/O thread wake-up failed");
        }
        true
    }
}

/// The engine's I/O threads.
pub(crate) struct IoPool {
    threads: Vec<IoHandle>,
    next: AtomicUsize,
}

/// What an I/O thread runs, besides shrinking its own structures, when
/// [`crate::memory::give_back`] asks: the engine's port pool gives back its resting list. The
/// threads are the only part of the engine woken on an idle box (no call binds a pair), so a
/// flood's capacity is given back without waiting for the next call.
pub(crate) type GiveBack = Arc<dyn Fn() + Send + Sync>;

impl IoPool {
    /// Starts `n` (at least one) I/O threads using `io_uring` as `mode` says; each runs
    /// `give_back` when asked to give memory back.
    pub(crate) fn start(
        n: usize,
        mode: UringMode,
        give_back: GiveBack,
    ) -> Result<Self, MediaError> {
        let mut threads = Vec::with_capacity(n.max(1));
        for k in 0..n.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Wake::new()?);
            let wake_fd = waker.fd.as_raw_fd();
            poll.registry()
                .register(&mut SourceFd(&wake_fd), WAKER, Interest::READABLE)?;
            let (tx, rx) = mpsc::channel();
            let keep = Arc::clone(&waker);
            let give_back = Arc::clone(&give_back);
            std::thread::Builder::new()
                .name(format!("media-io-{k}"))
                .spawn(move || IoThread::new(poll, rx, keep, mode, give_back).run())?;
            threads.push(IoHandle { tx, waker });
        }
        Ok(IoPool {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// The thread the next relay goes to (round-robin).
    pub(crate) fn pick(&self) -> &IoHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        &self.threads[i]
    }

    pub(crate) fn len(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        // Wake the threads after our senders are gone, so that each one that has no relay left
        // sees the disconnection now rather than after `MAX_SLEEP`.
        let wakers: Vec<Arc<Wake>> = self.threads.drain(..).map(|h| h.waker).collect();
        for w in wakers {
            let _ = w.wake();
        }
    }
}

/// How a thread sizes its coalescing window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    /// The time [`COALESCE_PACKETS`] datagrams take at the measured rate, at most this.
    Adaptive(Duration),
    /// Always this long once busy (zero: never wait).
    Fixed(Duration),
}

/// The window [`COALESCE_ENV`] asks for: none unless it gives a number of microseconds or
/// `adaptive`.
fn coalesce_window() -> Window {
    parse_window(std::env::var(COALESCE_ENV).ok().as_deref())
}

fn parse_window(v: Option<&str>) -> Window {
    match v.map(str::trim) {
        Some("adaptive") => Window::Adaptive(COALESCE),
        Some(v) => Window::Fixed(Duration::from_micros(v.parse().unwrap_or(0))),
        None => Window::Fixed(Duration::ZERO),
    }
}

impl Window {
    /// The wait after a wake-up for a thread that received `count` datagrams in `elapsed`
    /// (at least [`RATE_PERIOD`]); `None`: not busy, no wait.
    fn size(self, count: u64, elapsed: Duration) -> Option<Duration> {
        let cap = match self {
            Window::Adaptive(cap) | Window::Fixed(cap) => cap,
        };
        // count / elapsed >= 2 / cap, without division.
        let busy = u128::from(count) * cap.as_nanos() >= 2 * elapsed.as_nanos();
        if !busy || cap.is_zero() {
            return None;
        }
        match self {
            Window::Fixed(w) => Some(w),
            Window::Adaptive(cap) => {
                // busy implies count > 0.
                let per = elapsed.as_nanos() * u128::from(COALESCE_PACKETS) / u128::from(count);
                let w = Duration::from_nanos(u64::try_from(per).unwrap_or(u64::MAX));
                Some(w.min(cap))
            }
        }
    }
}

/// Decides when a thread waits before polling again ([`COALESCE`]); time is an input.
struct Coalescer {
    window: Window,
    /// Start of the current rate period and the datagrams received in it.
    period: Option<(Instant, u64)>,
    /// The wait after a wake-up that found datagrams, from the last period's rate.
    wait: Option<Duration>,
}

impl Coalescer {
    fn new(window: Window) -> Self {
        Coalescer {
            window,
            period: None,
            wait: None,
        }
    }

    /// The thread woke at `at` and received `packets` datagrams; returns until when it should
    /// wait before polling again.
    fn woke(&mut self, at: Instant, packets: u64) -> Option<Instant> {
        let (start, count) = self.period.get_or_insert((at, 0));
        *count += packets;
        let elapsed = at.saturating_duration_since(*start);
        if elapsed >= RATE_PERIOD {
            self.wait = self.window.size(*count, elapsed);
            self.period = Some((at, 0));
        }
        let wait = self.wait.filter(|_| packets > 0)?;
        Some(at + wait)
    }
}

struct Slot {
    id: u64,
    state: Box<RelayState>,
    /// Generation of each socket's armed multishot receive (token order; 0: none).
    arms: [u32; 4],
    /// `false` once removed: the slot waits for its receives to end.
    live: bool,
}

impl Slot {
    fn new(id: u64, state: Box<RelayState>) -> Self {
        Slot {
            id,
            state,
            arms: [0; 4],
            live: true,
        }
    }
}

struct IoThread {
    /// Sockets whose receive ended and must be armed again (slot, socket).
    rearm: Vec<(usize, usize)>,
    /// A receive ended for want of a buffer this wake-up: more buffers must circulate.
    short: bool,
    /// Since when the multishot thread has held no relay (`None`: it holds some, or its
    /// buffers are given back already).
    empty_since: Option<Instant>,
    /// Keeps the eventfd the ring reads open; says whether the thread gathers control
    /// messages.
    wake: Arc<Wake>,
    /// The end of the window in which the thread gathers control messages (`None`: not
    /// gathering; senders wake it).
    gather_until: Option<Instant>,
    /// Run when asked to give memory back ([`GiveBack`]).
    give_back: GiveBack,
    poll: Poll,
    rx: Receiver<Control>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64, Timer)>>,
    /// Sockets whose drain stopped at a full batch: drained again before sleeping.
    pending: Vec<Token>,
    /// Receive buffers, shared by every relay of the thread.
    batch: RecvBatch,
    /// The packets a wake-up relays, sent together once its sockets are drained.
    out: SendQueue,
    /// Buffer for the packets the thread builds (injected DTMF).
    buf: Box<[u8; BUF_LEN]>,
    /// The ring's multishot receives (`None`: `epoll` and `recvmmsg`). Declared after `out`,
    /// whose ring (which the kernel fills the receive buffers through) must go first.
    ring_rx: Option<RingReceiver>,
}

/// A shared ring and its receiver, or a send-only ring (then `epoll` receives) when the
/// kernel refuses either (see [`receive_path`]).
fn full_ring(wake_fd: std::os::fd::RawFd) -> (SendQueue, Option<RingReceiver>) {
    let setup = match SendQueue::shared() {
        Some(mut q) => match q.ring().map(|ring| RingReceiver::new(ring, wake_fd)) {
            Some(Ok(r)) => Ok((q, r)),
            Some(Err(e)) => Err(e),
            None => Err(SetupError::Ring(std::io::Error::other("no ring"))),
        },
        None => Err(SetupError::Ring(std::io::Error::other(
            "the kernel gave no ring",
        ))),
    };
    receive_path(setup)
}

/// The thread's send queue and receiver when the multishot setup went through; else, with a
/// log line saying why, a send-only ring (itself falling back to a `sendto` per packet
/// where the kernel has no ring) for the `epoll` path.
fn receive_path(
    setup: Result<(SendQueue, RingReceiver), SetupError>,
) -> (SendQueue, Option<RingReceiver>) {
    match setup {
        Ok((q, r)) => (q, Some(r)),
        Err(e) => {
            tracing::info!(error = %e, "io_uring multishot receive not available; media is received with epoll");
            (SendQueue::with_ring(true), None)
        }
    }
}

impl IoThread {
    fn new(
        poll: Poll,
        rx: Receiver<Control>,
        wake: Arc<Wake>,
        mode: UringMode,
        give_back: GiveBack,
    ) -> Self {
        // Made on the thread: the ring serves only the thread that made it.
        let (out, ring_rx) = match mode {
            UringMode::Full => full_ring(wake.fd.as_raw_fd()),
            UringMode::Send => (SendQueue::with_ring(true), None),
            UringMode::Off => (SendQueue::with_ring(false), None),
        };
        IoThread {
            ring_rx,
            rearm: Vec::new(),
            short: false,
            empty_since: None,
            wake,
            gather_until: None,
            give_back,
            poll,
            rx,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            timers: BinaryHeap::new(),
            pending: Vec::with_capacity(EVENTS),
            batch: RecvBatch::new(),
            out,
            buf: Box::new([0u8; BUF_LEN]),
        }
    }

    fn run(mut self) {
        // SAFETY: PR_SET_TIMERSLACK takes a value and changes only this thread's timer slack.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0) };
        let mut events = Events::with_capacity(EVENTS);
        let mut again: Vec<Token> = Vec::with_capacity(EVENTS);
        let mut coalesce = Coalescer::new(coalesce_window());
        tracing::debug!(
            io_uring = self.out.batched(),
            multishot = self.ring_rx.is_some(),
            "media I/O thread started"
        );
        if self.ring_rx.is_some() {
            return self.run_ring(coalesce);
        }
        let through_ring = self.out.wait_through_ring(self.poll.as_raw_fd());
        tracing::debug!(through_ring, "media I/O thread waits on epoll");
        loop {
            if crate::memory::give_back_if_asked() {
                self.shrink();
            }
            let timeout = if self.pending.is_empty() {
                let now = Instant::now();
                let timer = match self.timers.peek() {
                    Some(Reverse((at, ..))) => at.saturating_duration_since(now).min(MAX_SLEEP),
                    None => MAX_SLEEP,
                };
                match self.gather_until {
                    Some(u) => timer.min(u.saturating_duration_since(now)),
                    None => timer,
                }
            } else {
                Duration::ZERO
            };
            std::mem::swap(&mut again, &mut self.pending);
            let mut ctrl = false;
            let mut woken = false;
            if self.out.waits() {
                // The last wake-up's packets leave with this wait.
                match self.out.wait_epoll(timeout) {
                    Ok(evs) => {
                        for ev in evs {
                            woken = true;
                            match usize::try_from(ev.u64) {
                                Ok(t) if Token(t) != WAKER => again.push(Token(t)),
                                _ => ctrl = true,
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "epoll wait through io_uring failed; epoll_wait from now on");
                        // Whatever the wait may have missed is looked at again.
                        ctrl = true;
                    }
                }
            } else {
                if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                    if e.kind() != ErrorKind::Interrupted {
                        tracing::error!(error = %e, "media poll failed; I/O thread stops");
                        return;
                    }
                }
                for ev in events.iter() {
                    woken = true;
                    if ev.token() == WAKER {
                        ctrl = true;
                    } else {
                        again.push(ev.token());
                    }
                }
            }
            // The clock is read once a wake-up; the datagrams carry their own receive times.
            let clock = WakeClock::read();
            let woke = clock.now;
            for t in again.drain(..) {
                self.drain(t, &clock);
            }
            #[cfg(test)]
            self.wake.wakeups.fetch_add(1, Ordering::Relaxed);
            let gathered = self.gather_until.is_some_and(|u| woke >= u);
            let control = ctrl || !woken || gathered;
            if control || !self.out.waits() {
                // Before any socket may close (control) and before the timers' own packets.
                self.out.flush();
            }
            if control && !self.gather_control(woke) {
                self.out.flush();
                return;
            }
            self.timers(woke);
            if let Some(until) = coalesce.woke(woke, self.batch.take_received()) {
                let now = Instant::now();
                // A socket left with datagrams (a full batch) is served at once instead.
                if until > now && self.pending.is_empty() {
                    self.out.flush();
                    std::thread::sleep(until - now);
                }
            }
        }
    }

    /// [`IoThread::run`] with multishot receives: one `io_uring_enter` per wake-up.
    fn run_ring(mut self, mut coalesce: Coalescer) {
        let mut cqes = Vec::with_capacity(REAP);
        loop {
            if crate::memory::give_back_if_asked() {
                self.shrink();
            }
            let timeout = match self.timers.peek() {
                Some(Reverse((at, ..))) => {
                    at.saturating_duration_since(Instant::now()).min(MAX_SLEEP)
                }
                None => MAX_SLEEP,
            };
            // The sends queued complete within the call; then at least one more completion.
            let want = self.out.pending() + 1;
            let Some(ring) = self.out.ring() else {
                return;
            };
            if let Err(e) = RingReceiver::wait(ring, want, timeout) {
                tracing::error!(error = %e, "media io_uring wait failed; I/O thread stops");
                return;
            }
            let clock = WakeClock::read();
            let woke = clock.now;
            let mut ctrl = false;
            let mut seen = 0usize;
            let mut received = 0u64;
            loop {
                cqes.clear();
                if let Some(ring) = self.out.ring() {
                    RingReceiver::reap(ring, &mut cqes, REAP);
                }
                if cqes.is_empty() {
                    break;
                }
                seen += cqes.len();
                for cqe in &cqes {
                    let (ud, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
                    match self.out.completed(ud, res) {
                        Completion::Other => {}
                        Completion::Sent => continue,
                        Completion::Buffer(bid) => {
                            if let Some(rx) = self.ring_rx.as_mut() {
                                rx.give_back(bid);
                            }
                            continue;
                        }
                    }
                    if let Some(r) = RingReceiver::decode(ud, res, flags) {
                        received += self.on_recv(r, &clock);
                    } else if ud == multishot::WAKE_TAG {
                        ctrl = true;
                        if let (Some(rx), Some(ring)) = (self.ring_rx.as_mut(), self.out.ring()) {
                            if !rx.arm_wake(ring) {
                                tracing::error!(
                                    "control eventfd read not queued; I/O thread stops"
                                );
                                return;
                            }
                        }
                    }
                }
            }
            if std::mem::take(&mut self.short) {
                if let Some(rx) = self.ring_rx.as_mut() {
                    rx.grow();
                }
            }
            self.arm_again();
            // The packets relayed and the receives armed leave with the next wait's
            // submission, unless a socket may close first (control).
            if ctrl || seen == 0 {
                self.out.flush();
                if self.control().is_none() {
                    return;
                }
            }
            self.timers(woke);
            self.release_if_idle(woke);
            if let Some(until) = coalesce.woke(woke, received) {
                let now = Instant::now();
                if until > now {
                    std::thread::sleep(until - now);
                }
            }
        }
    }

    /// A receive completion: relays its datagram when it is from a socket still open and
    /// gives its buffer back; a receive that ended is armed again (socket open) or, for a
    /// removed relay, counted out. The datagrams relayed.
    fn on_recv(&mut self, r: multishot::Recv, clock: &WakeClock) -> u64 {
        let Some(rx) = self.ring_rx.as_mut() else {
            return 0;
        };
        let (slot, sock) = (r.token / 4, r.token % 4);
        let current = match self.slots.get_mut(slot) {
            Some(Some(s)) if s.arms.get(sock) == Some(&r.generation) => Some(s),
            _ => None,
        };
        let mut relayed = 0;
        let mut current = current;
        if let Some(bid) = r.buffer.filter(|&b| rx.took(b)) {
            let mut sent_from = false;
            if let (Some(s), Ok(len)) = (current.as_deref_mut(), usize::try_from(r.res)) {
                if s.live {
                    if let Some((pkt, src, stamp)) = rx.datagram(bid, len) {
                        let arrival = clock.arrival(stamp);
                        // The packet relayed is sent from the buffer, which then comes back
                        // with the send's completion.
                        self.out.lend(bid, pkt);
                        s.state
                            .datagram(sock, pkt, src, clock.now, arrival, &mut self.out);
                        sent_from = self.out.unlend();
                        relayed = 1;
                    }
                }
            }
            if !sent_from {
                rx.give_back(bid);
            }
        }
        if r.more {
            return relayed;
        }
        let Some(s) = current else {
            return relayed;
        };
        if let Some(a) = s.arms.get_mut(sock) {
            *a = 0;
        }
        if s.live {
            match -r.res {
                libc::ECANCELED => {}
                libc::EINVAL | libc::EOPNOTSUPP => {
                    tracing::warn!(error = %std::io::Error::from_raw_os_error(-r.res), "multishot receive refused; socket not received from");
                }
                libc::ENOBUFS => {
                    self.short = true;
                    self.rearm.push((slot, sock));
                }
                _ => self.rearm.push((slot, sock)),
            }
        } else if s.arms.iter().all(|&a| a == 0) {
            // The last receive of a removed relay ended: its sockets close, its ports return.
            if let Some(gone) = self.slots.get_mut(slot).and_then(Option::take) {
                drop(gone);
                self.free.push(slot);
            }
        }
        relayed
    }

    /// Gives the receive buffers' pages back once the thread has held no relay for
    /// [`RELEASE_AFTER`] (none armed: the kernel writes into no buffer) and no send from a
    /// buffer is in flight.
    fn release_if_idle(&mut self, now: Instant) {
        let Some(rx) = self.ring_rx.as_mut() else {
            return;
        };
        if self.slots.iter().any(Option::is_some) {
            self.empty_since = None;
            return;
        }
        let since = *self.empty_since.get_or_insert(now);
        if now.saturating_duration_since(since) < RELEASE_AFTER || self.out.pending() > 0 {
            return;
        }
        if rx.out() == 0 && rx.release() {
            self.out.release();
            tracing::debug!("media I/O thread idle: receive buffers given back");
        }
    }

    /// Arms again the receives that ended this wake-up (the buffers they lacked are back).
    fn arm_again(&mut self) {
        let (Some(rx), Some(ring)) = (self.ring_rx.as_mut(), self.out.ring()) else {
            return;
        };
        for (slot, sock) in self.rearm.drain(..) {
            let Some(Some(s)) = self.slots.get_mut(slot) else {
                continue;
            };
            if !s.live || s.arms.get(sock).is_none_or(|&a| a != 0) {
                continue;
            }
            let Some(Some(fd)) = s
                .state
                .sockets_mut()
                .get(sock)
                .map(|o| o.as_ref().map(|u| u.as_raw_fd()))
            else {
                continue;
            };
            match rx.arm(ring, fd, slot * 4 + sock) {
                Some(g) => s.arms[sock] = g,
                None => tracing::warn!("receive not armed again; the socket is not read"),
            }
        }
    }

    /// Arms the receive of each socket of `slot` that has none; cancels the receive of each
    /// socket the relay closed (RTCP socket of a leg that took multiplexing).
    /// `fresh`: sockets bound again since (a receive armed for one is of its predecessor).
    fn sync_arms(&mut self, slot: usize, fresh: &[usize]) {
        let (Some(rx), Some(ring)) = (self.ring_rx.as_mut(), self.out.ring()) else {
            return;
        };
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        let fds = s.state.sockets_mut().map(|o| o.map(|u| u.as_raw_fd()));
        for (k, fd) in fds.into_iter().enumerate() {
            let token = slot * 4 + k;
            if fresh.contains(&k) && s.arms[k] != 0 {
                rx.cancel(ring, token, s.arms[k]);
                s.arms[k] = 0;
            }
            match (fd, s.arms[k]) {
                (Some(fd), 0) => match rx.arm(ring, fd, token) {
                    Some(g) => s.arms[k] = g,
                    None => tracing::warn!("receive not armed; the socket is not read"),
                },
                (None, g) if g != 0 => {
                    rx.cancel(ring, token, g);
                    s.arms[k] = 0;
                }
                _ => {}
            }
        }
    }

    /// Drains one socket; remembers it when the batch ran out before the socket did.
    fn drain(&mut self, token: Token, clock: &WakeClock) {
        let (slot, sock) = (token.0 / 4, token.0 % 4);
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        if s.state
            .recv_batch(sock, &mut self.batch, clock, &mut self.out)
        {
            self.pending.push(token);
        }
    }

    /// Handles every queued control message and gathers those that follow for
    /// [`CONTROL_WINDOW`]; a window in which none came ends (senders wake the thread again).
    /// `false` when the channel is disconnected.
    fn gather_control(&mut self, now: Instant) -> bool {
        let Some(mut handled) = self.control() else {
            return false;
        };
        if handled == 0 && self.gather_until.is_some_and(|u| now >= u) {
            self.gather_until = None;
            self.wake.gathering.store(false, Ordering::Relaxed);
            // Paired with the fence in `IoHandle::send`: a message sent while the flag was
            // still seen set is found by this last look.
            fence(Ordering::SeqCst);
            let Some(late) = self.control() else {
                return false;
            };
            handled = late;
        }
        if handled > 0 {
            self.gather(now);
        }
        true
    }

    /// Starts (or extends) a window of gathering control messages.
    fn gather(&mut self, now: Instant) {
        self.gather_until = Some(now + CONTROL_WINDOW);
        self.wake.gathering.store(true, Ordering::Relaxed);
    }

    /// Handles every queued control message: how many, `None` when the channel is
    /// disconnected.
    fn control(&mut self) -> Option<usize> {
        let mut handled = 0;
        loop {
            let next = self.rx.try_recv();
            if next.is_ok() {
                handled += 1;
            }
            match next {
                Ok(Control::Add(id, state)) => self.add(id, state),
                Ok(Control::Remove(id)) => self.remove(id),
                #[cfg(test)]
                Ok(Control::Sync(done)) => {
                    let _ = done.send(());
                }
                Ok(c) => {
                    let id = c.id();
                    let Some(&slot) = self.by_id.get(&id) else {
                        continue;
                    };
                    if let Some(Some(s)) = self.slots.get_mut(slot) {
                        if let Some(at) = s.state.control(c, &mut self.buf) {
                            self.timers.push(Reverse((at, slot, id, Timer::Inject)));
                        }
                        if self.ring_rx.is_some() {
                            let fresh: Vec<usize> =
                                s.state.unregistered().into_iter().map(|(k, _)| k).collect();
                            self.sync_arms(slot, &fresh);
                            continue;
                        }
                        // An update that ended RTCP multiplexing bound an RTCP socket again.
                        for (k, sock) in s.state.unregistered() {
                            let token = Token(slot * 4 + k);
                            let r = self
                                .poll
                                .registry()
                                .register(sock, token, Interest::READABLE);
                            if let Err(e) = r {
                                tracing::warn!(error = %e, "RTCP socket not registered; its RTCP is lost");
                            }
                        }
                    }
                }
                Err(TryRecvError::Empty) => return Some(handled),
                Err(TryRecvError::Disconnected) => return None,
            }
        }
    }

    fn add(&mut self, id: u64, mut state: Box<RelayState>) {
        let slot = self.free.pop().unwrap_or(self.slots.len());
        if self.ring_rx.is_some() {
            // Registered for `epoll`'s sake only (an RTCP socket bound again is looked for).
            let _ = state.unregistered();
            self.place(slot, id, state);
            self.sync_arms(slot, &[]);
            return;
        }
        let registry = self.poll.registry();
        let mut registered = 0;
        let mut result = Ok(());
        for (k, sock) in state.sockets_mut().into_iter().enumerate() {
            if let Some(sock) = sock {
                result = registry.register(sock, Token(slot * 4 + k), Interest::READABLE);
                if result.is_err() {
                    break;
                }
            }
            registered += 1;
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "media sockets not registered; relay closed");
            for sock in state.sockets_mut().into_iter().take(registered).flatten() {
                let _ = registry.deregister(sock);
            }
            if slot < self.slots.len() {
                self.free.push(slot);
            }
            return;
        }
        self.place(slot, id, state);
    }

    /// Puts relay `id` in `slot` (a free one, or the next past the end) with its dead-media
    /// timer.
    fn place(&mut self, slot: usize, id: u64, state: Box<RelayState>) {
        self.timers
            .push(Reverse((state.dead_at(), slot, id, Timer::Dead)));
        if slot == self.slots.len() {
            self.slots.push(Some(Slot::new(id, state)));
        } else if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(Slot::new(id, state));
        }
        self.by_id.insert(id, slot);
    }

    /// Gives back what a burst of relays left (asked by [`crate::memory::give_back`]): the
    /// engine's part ([`GiveBack`]) always, and once the thread holds no relay, its slots and
    /// the timers of relays gone.
    fn shrink(&mut self) {
        (self.give_back)();
        // A removed relay whose receives have not ended yet still holds its slot.
        if !self.by_id.is_empty() || self.slots.iter().any(Option::is_some) {
            return;
        }
        self.slots = Vec::new();
        self.free = Vec::new();
        self.timers = BinaryHeap::new();
        self.by_id = HashMap::new();
    }

    fn remove(&mut self, id: u64) {
        let Some(slot) = self.by_id.remove(&id) else {
            return;
        };
        if let (Some(rx), Some(ring)) = (self.ring_rx.as_mut(), self.out.ring()) {
            let Some(Some(s)) = self.slots.get_mut(slot) else {
                return;
            };
            if s.arms.iter().any(|&g| g != 0) {
                // The slot and the sockets stay until each receive has ended (`on_recv`).
                s.live = false;
                for (k, &g) in s.arms.iter().enumerate() {
                    if g != 0 {
                        rx.cancel(ring, slot * 4 + k, g);
                    }
                }
                return;
            }
        }
        let Some(mut s) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let registry = self.poll.registry();
        for sock in s.state.sockets_mut().into_iter().flatten() {
            let _ = registry.deregister(sock);
        }
        self.pending.retain(|t| t.0 / 4 != slot);
        self.free.push(slot);
        // Dropping the state closes the sockets, then returns the ports to the pool.
        drop(s);
    }

    /// Fires the timers due at `now` (the wake-up).
    fn timers(&mut self, now: Instant) {
        while let Some(Reverse((at, slot, id, kind))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(Some(s)) = self.slots.get_mut(slot) else {
                continue;
            };
            if s.id != id || !s.live {
                continue;
            }
            if let Some(next) = s.state.timer(kind, at, &mut self.buf) {
                self.timers.push(Reverse((next, slot, id, kind)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_thread_runs_the_engines_give_back_when_asked() {
        let runs = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&runs);
        let pool = IoPool::start(
            1,
            UringMode::Off,
            Arc::new(move || {
                seen.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .expect("I/O thread");
        // Other tests may ask too; what matters is that this thread, holding no relay and
        // receiving nothing, answers within its longest sleep.
        crate::memory::give_back();
        let deadline = Instant::now() + Duration::from_secs(30);
        while runs.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the idle thread never gave back");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(pool);
    }

    /// Control messages coming a millisecond apart are gathered: the thread wakes about once
    /// per [`CONTROL_WINDOW`] for them, not once each; a message to a thread that is not
    /// gathering wakes it at once.
    #[test]
    fn control_messages_in_a_stream_are_gathered_and_a_lone_one_wakes_the_thread() {
        for mode in [UringMode::Off, UringMode::Send] {
            let pool = IoPool::start(1, mode, Arc::new(|| {})).expect("I/O thread");
            let handle = pool.pick().clone();
            let wakeups = || handle.waker.wakeups.load(Ordering::Relaxed);
            let sync = || {
                let (tx, rx) = tokio::sync::oneshot::channel();
                assert!(handle.send(Control::Sync(tx)));
                rx.blocking_recv().expect("the thread answers");
            };
            sync();
            let before = wakeups();
            let sent_at = Instant::now();
            for k in 0..100 {
                // No relay has these ids: handled as no-ops.
                assert!(handle.send(Control::Remove(u64::MAX - k)));
                std::thread::sleep(Duration::from_millis(1));
            }
            sync();
            let woken = wakeups() - before;
            // About one wake-up per window over the time the messages took (more windows if
            // this thread overslept its 1 ms sleeps), and fewer than one per message however
            // slow the machine (without gathering: one each, 101 seen).
            let windows = sent_at.elapsed().as_millis() / CONTROL_WINDOW.as_millis() + 1;
            assert!(
                woken as u128 <= 2 * windows + 2 && woken < 100,
                "{mode:?}: {woken} wake-ups for 100 messages over {windows} windows"
            );
            // Once a window passes with nothing, the thread sleeps until woken: a lone
            // message wakes it (an idle thread otherwise sleeps a second).
            let deadline = Instant::now() + Duration::from_secs(5);
            while handle.waker.gathering.load(Ordering::Relaxed) {
                assert!(Instant::now() < deadline, "{mode:?}: still gathering");
                std::thread::sleep(Duration::from_millis(5));
            }
            let before = wakeups();
            assert!(handle.send(Control::Remove(1)));
            let deadline = Instant::now() + Duration::from_millis(500);
            while wakeups() == before {
                assert!(
                    Instant::now() < deadline,
                    "{mode:?}: a lone message did not wake the thread"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            drop(handle);
            drop(pool);
        }
    }

    const FIXED: Window = Window::Fixed(COALESCE);
    const ADAPTIVE: Window = Window::Adaptive(COALESCE);

    #[test]
    fn a_quiet_thread_never_waits() {
        for window in [FIXED, ADAPTIVE] {
            a_quiet_thread_never_waits_with(window);
        }
    }

    fn a_quiet_thread_never_waits_with(window: Window) {
        let mut c = Coalescer::new(window);
        let t0 = Instant::now();
        // 40 calls: 4 000 datagrams/s, one every 250 µs, under two per window.
        for k in 0..400u32 {
            let at = t0 + Duration::from_micros(250) * k;
            assert_eq!(c.woke(at, 1), None, "datagram {k}");
        }
        // Wake-ups without datagrams (control, timers) never wait.
        assert_eq!(c.woke(t0 + Duration::from_millis(200), 0), None);
    }

    #[test]
    fn a_busy_thread_waits_out_the_window_until_the_load_drops() {
        for window in [FIXED, ADAPTIVE] {
            a_busy_thread_waits_until_the_load_drops_with(window);
        }
    }

    /// At 250 calls the adaptive window (16 datagrams take 640 µs) is the fixed one.
    fn a_busy_thread_waits_until_the_load_drops_with(window: Window) {
        let mut c = Coalescer::new(window);
        let t0 = Instant::now();
        // 250 calls: 25 000 datagrams/s, one every 40 µs, each its own wake-up at first.
        let mut at = t0;
        let mut waited = None;
        while at < t0 + RATE_PERIOD + Duration::from_micros(40) {
            waited = c.woke(at, 1);
            at += Duration::from_micros(40);
        }
        // A period at that rate makes the thread busy: it waits a window after each wake-up.
        let last = at - Duration::from_micros(40);
        assert_eq!(waited, Some(last + COALESCE));
        // It then finds ten datagrams per wake-up, a window (plus slack) apart, and stays busy.
        for _ in 0..40 {
            at += COALESCE + Duration::from_micros(20);
            assert_eq!(c.woke(at, 10), Some(at + COALESCE));
        }
        // A timer wake-up without datagrams does not wait.
        assert_eq!(c.woke(at + Duration::from_micros(100), 0), None);
        // The load drops to a trickle (a datagram every 2 ms): once a whole rate period at
        // that rate has been seen, datagrams go through at once.
        for _ in 0..15 {
            at += Duration::from_millis(2);
            c.woke(at, 1);
        }
        for k in 0..10 {
            at += Duration::from_millis(2);
            assert_eq!(c.woke(at, 1), None, "datagram {k} of the trickle");
        }
    }

    #[test]
    fn a_zero_window_turns_coalescing_off() {
        let mut c = Coalescer::new(Window::Fixed(Duration::ZERO));
        let t0 = Instant::now();
        for k in 0..1000u32 {
            assert_eq!(c.woke(t0 + Duration::from_micros(20) * k, 5), None);
        }
    }

    /// Feeds `c` one datagram every `gap` for two rate periods and a bit (the last period
    /// then saw only this rate); the last wait.
    fn steady(c: &mut Coalescer, at: &mut Instant, gap: Duration) -> Option<Duration> {
        let end = *at + 2 * RATE_PERIOD + gap;
        let mut waited = None;
        while *at < end {
            waited = c.woke(*at, 1).map(|until| until - *at);
            *at += gap;
        }
        waited
    }

    #[test]
    fn the_adaptive_window_is_the_time_sixteen_datagrams_take() {
        let mut c = Coalescer::new(ADAPTIVE);
        let mut at = Instant::now();
        // 50 calls (5 000 datagrams/s): busy, 16 datagrams take 3.2 ms, the cap holds.
        assert_eq!(
            steady(&mut c, &mut at, Duration::from_micros(200)),
            Some(COALESCE)
        );
        // 500 calls (50 000/s): 16 datagrams take 320 µs.
        let w = steady(&mut c, &mut at, Duration::from_micros(20)).expect("busy");
        assert!(
            (Duration::from_micros(315)..=Duration::from_micros(325)).contains(&w),
            "{w:?}"
        );
        // 1 000 calls: 160 µs.
        let w = steady(&mut c, &mut at, Duration::from_micros(10)).expect("busy");
        assert!(
            (Duration::from_micros(155)..=Duration::from_micros(165)).contains(&w),
            "{w:?}"
        );
        // Back to 40 calls: no wait at all.
        assert_eq!(steady(&mut c, &mut at, Duration::from_micros(250)), None);
        // The fixed window stays 400 µs at 500 calls.
        let mut f = Coalescer::new(FIXED);
        assert_eq!(
            steady(&mut f, &mut at, Duration::from_micros(20)),
            Some(COALESCE)
        );
    }

    #[test]
    fn there_is_no_window_unless_the_environment_asks_for_one() {
        assert_eq!(parse_window(None), Window::Fixed(Duration::ZERO));
        assert_eq!(
            parse_window(Some("nonsense")),
            Window::Fixed(Duration::ZERO)
        );
        assert_eq!(parse_window(Some("adaptive")), ADAPTIVE);
        assert_eq!(
            parse_window(Some(" 250 ")),
            Window::Fixed(Duration::from_micros(250))
        );
        assert_eq!(parse_window(Some("0")), Window::Fixed(Duration::ZERO));
    }
}
