//! Media anchoring for the B2BUA: every call's RTP and RTCP flow through a [`Relay`].
//!
//! Each call has two legs, A (caller) and B (callee). [`MediaEngine::allocate`] binds, per leg,
//! an RTP socket on an even port of the configured range and an RTCP socket on port + 1 (none
//! for a leg that multiplexes RTCP on its RTP port, RFC 5761: the caller's when its offer
//! asked for it, see [`MediaEngine::allocate_into_muxed`]; a leg whose answer accepts
//! multiplexing closes its RTCP socket), and
//! hands them to one of a small fixed set of media I/O threads ([`io`]; one by default, see
//! [`MediaEngine::with_io_threads`]), which moves packets between them:
//!
//! * packets from A's phone leave through B's socket towards B's phone, and vice versa;
//! * the payload type is rewritten when the legs negotiated different numbers, and G.711 is
//!   transcoded in place (µ-law ⇄ A-law, [`g711`]) when — and only when — the laws differ;
//! * RFC 4733 telephone events ([`dtmf`]) are mapped to the other leg's event payload type, or
//!   dropped when the other leg has none; every event end is reported as [`MediaEvent::Dtmf`] so
//!   the B2BUA can convert it to SIP INFO, and [`Relay::send_dtmf`] injects events the other way;
//! * the destination is latched (symmetric RTP, RFC 4961 style) and then locked: until a valid
//!   packet arrives the SDP address ([`LegMedia::remote`]) is used; the first valid packet (after
//!   the start, or after an update that changed the SDP address, as a re-INVITE does) latches its
//!   source; from then on only that source or the SDP address itself is taken, and packets from
//!   anywhere else are dropped and counted ([`DirectionStats::foreign_dropped`]), so a third
//!   party can neither inject audio nor hijack the stream;
//! * SRTP legs ([`LegMedia::srtp`], [`srtp`]) are unprotected on the way in (packets that fail
//!   authentication or replay checks are dropped and counted before they can latch) and
//!   protected on the way out with the key pasarela gave that phone, so an SRTP leg can meet a
//!   plain RTP leg, and two SRTP legs never share a key;
//! * ports are picked at random in the range, and a freed pair rests for a while ([`ports`]);
//! * silence on both legs for [`MediaConfig::dead_after`] raises [`MediaEvent::Dead`].
//!
//! The packet path never allocates (one reused buffer per I/O thread), shares no lock with
//! signalling (control goes through a channel, statistics come back through relaxed atomics),
//! and waits only on its sockets, its control channel and its own timers. Sends are
//! non-blocking: a full socket buffer drops the packet rather than stalling the other direction.
//!
//! The protocol pieces — [`g711`], [`rtp`], [`dtmf`], [`stats`] — are pure functions and state
//! machines with no I/O.

pub mod config;
pub mod dtmf;
pub mod g711;
pub mod hold_music;
mod io;
pub(crate) mod mmsg;
mod multishot;
pub mod port;
mod ports;
mod relay;
pub mod rtp;
pub mod srtp;
pub mod stats;
mod uring;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

pub use relay::Relay;

use io::IoPool;
use ports::PortPool;

/// Environment variable giving the number of media I/O threads of [`MediaEngine::new`].
pub const IO_THREADS_ENV: &str = "PASARELA_MEDIA_IO_THREADS";

/// RTP/RTCP pairs a relay holds: one per leg, whether or not the leg binds its RTCP port.
pub const PAIRS_PER_RELAY: usize = 2;

/// One of the two legs of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The caller's leg.
    A,
    /// The callee's leg.
    B,
}

impl Side {
    /// The opposite leg.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    pub(crate) fn idx(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }

    pub(crate) fn from_idx(i: usize) -> Side {
        if i == 0 {
            Side::A
        } else {
            Side::B
        }
    }
}

/// The companding law of a G.711 codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Law {
    /// PCMU, static payload type 0.
    Ulaw,
    /// PCMA, static payload type 8.
    Alaw,
}

/// SRTP (SDES) on one leg: the phone's key, which unprotects what it sends, and ours, which
/// protects what the relay sends it. `Debug` shows neither key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegSrtp {
    /// The suite the offer/answer settled on; both directions use it.
    pub suite: srtp::Suite,
    /// The key the phone sent in its `a=crypto`.
    pub remote: srtp::MasterKey,
    /// The key pasarela sent the phone.
    pub local: srtp::MasterKey,
}

/// What the SDP of one leg says about its media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegMedia {
    /// The phone's RTP address from SDP; `None` when on hold or not yet known.
    pub remote: Option<SocketAddr>,
    /// Payload type of the negotiated audio codec on this leg.
    pub codec_pt: u8,
    /// G.711 law of that codec; `None` for other codecs (never transcoded).
    pub law: Option<Law>,
    /// Payload type of `telephone-event/8000` on this leg, if negotiated.
    pub dtmf_pt: Option<u8>,
    /// SRTP keys when this leg's media is encrypted; `None` for plain RTP.
    pub srtp: Option<LegSrtp>,
    /// RTP and RTCP share the RTP port on this leg (RFC 5761, negotiated with `a=rtcp-mux`):
    /// its RTCP is sent to `remote` from our RTP socket, and the leg needs no RTCP socket.
    pub rtcp_mux: bool,
}

impl LegMedia {
    /// PCMU (pt 0) towards `remote`, with telephone events on `dtmf_pt`.
    pub fn pcmu(remote: Option<SocketAddr>, dtmf_pt: Option<u8>) -> Self {
        LegMedia {
            remote,
            codec_pt: 0,
            law: Some(Law::Ulaw),
            dtmf_pt,
            srtp: None,
            rtcp_mux: false,
        }
    }

    /// PCMA (pt 8) towards `remote`, with telephone events on `dtmf_pt`.
    pub fn pcma(remote: Option<SocketAddr>, dtmf_pt: Option<u8>) -> Self {
        LegMedia {
            remote,
            codec_pt: 8,
            law: Some(Law::Alaw),
            dtmf_pt,
            srtp: None,
            rtcp_mux: false,
        }
    }
}

impl Default for LegMedia {
    /// PCMU, no remote, no telephone events: what a relay uses before its first `update`.
    fn default() -> Self {
        LegMedia::pcmu(None, None)
    }
}

/// Media settings.
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// Address the relay sockets bind to.
    pub bind_ip: IpAddr,
    /// RTP/RTCP port range; RTP takes the even ports, RTCP the odd port above.
    pub ports: RangeInclusive<u16>,
    /// No RTP from either side for this long raises [`MediaEvent::Dead`].
    pub dead_after: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ports: 10000..=20000,
            dead_after: Duration::from_secs(60),
        }
    }
}

/// Errors of the media engine.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Every RTP/RTCP pair of the range is in use (by us or by another process).
    #[error("no free RTP/RTCP port pair in {start}-{end}")]
    PortsExhausted { start: u16, end: u16 },
    /// A socket could not be registered with the runtime.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
}

/// The one sink of the media events of every call, each tagged with its call's id (see
/// [`MediaEngine::allocate_into`]).
pub type EventSink = tokio::sync::mpsc::UnboundedSender<(u64, MediaEvent)>;

/// Something the B2BUA must know about a call's media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// End of an RFC 4733 event received from `from` (reported once per event, whether or not it
    /// was forwarded).
    Dtmf {
        from: Side,
        digit: char,
        duration_ms: u32,
    },
    /// No RTP from either side for `dead_after`. Reported once per silence.
    Dead,
}

/// Statistics of the stream received from one side (and relayed to the other).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DirectionStats {
    /// Valid RTP packets received from this side.
    pub packets: u64,
    /// Their bytes (whole RTP packets, no UDP/IP headers).
    pub bytes: u64,
    /// Packets sent on towards the other side.
    pub forwarded: u64,
    /// Cumulative packets lost (RFC 3550 A.3), from the sequence numbers received.
    pub lost: i64,
    /// Interarrival jitter (RFC 3550 A.8) in milliseconds.
    pub jitter_ms: f64,
    /// When the last valid RTP packet arrived from this side.
    pub last_packet: Option<Instant>,
    /// RTP and RTCP packets dropped because they came from another address than the one this
    /// side's media is locked to (injection or hijack attempts, or a phone that moved without a
    /// re-INVITE).
    pub foreign_dropped: u64,
    /// SRTP and SRTCP packets from this side dropped because they failed authentication,
    /// were replayed or were too old (forgeries, or a phone using another key).
    pub srtp_rejected: u64,
}

/// A snapshot of a relay's statistics.
#[derive(Clone, Debug, PartialEq)]
pub struct CallMediaStats {
    /// Stream from A's phone to B's phone.
    pub a_to_b: DirectionStats,
    /// Stream from B's phone to A's phone.
    pub b_to_a: DirectionStats,
    /// Audio payload type on leg A.
    pub a_codec_pt: u8,
    /// Audio payload type on leg B.
    pub b_codec_pt: u8,
    /// Whether payloads are transcoded (µ-law ⇄ A-law).
    pub transcoding: bool,
    /// Whether leg A's and leg B's media are SRTP.
    pub srtp: [bool; 2],
}

impl CallMediaStats {
    /// Packets received from both phones.
    pub fn packets(&self) -> u64 {
        self.a_to_b.packets + self.b_to_a.packets
    }

    /// Packets lost, both directions.
    pub fn lost(&self) -> u64 {
        (self.a_to_b.lost.max(0) + self.b_to_a.lost.max(0)) as u64
    }

    /// Packets from foreign sources dropped, both sides.
    pub fn foreign_dropped(&self) -> u64 {
        self.a_to_b.foreign_dropped + self.b_to_a.foreign_dropped
    }

    /// The worse of the two directions' jitter, in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.a_to_b.jitter_ms.max(self.b_to_a.jitter_ms)
    }

    /// The stream received from `side`.
    pub fn from_side(&self, side: Side) -> &DirectionStats {
        match side {
            Side::A => &self.a_to_b,
            Side::B => &self.b_to_a,
        }
    }
}

pub(crate) struct EngineInner {
    pub(crate) config: MediaConfig,
    pool: Mutex<PortPool>,
    /// RTP/RTCP pairs in the range (fixed at start).
    pairs: usize,
    /// Free pairs the pool found held by another process ([`PortPool::busy`]), as of the last
    /// allocation, and when that was (ns after `epoch`).
    busy: AtomicUsize,
    busy_at: AtomicU64,
    epoch: Instant,
    alive: AtomicUsize,
    /// Sockets the live relays hold open.
    sockets: AtomicUsize,
}

impl EngineInner {
    fn since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn pool(&self) -> MutexGuard<'_, PortPool> {
        // The pool is consistent after every statement; a panic elsewhere cannot break it.
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The engine's I/O threads, started with the first relay.
struct IoThreads {
    wanted: usize,
    /// How the threads use `io_uring`.
    mode: uring::UringMode,
    pool: OnceLock<IoPool>,
    init: Mutex<()>,
}

/// Ports, relays and the I/O threads that run them. Cheap to clone.
#[derive(Clone)]
pub struct MediaEngine {
    inner: Arc<EngineInner>,
    io: Arc<IoThreads>,
}

impl MediaEngine {
    /// An engine with as many I/O threads as `PASARELA_MEDIA_IO_THREADS` says (default 1).
    pub fn new(config: MediaConfig) -> Self {
        let threads = std::env::var(IO_THREADS_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1);
        Self::with_io_threads(config, threads)
    }

    /// An engine whose relays are spread (round-robin) over `threads` I/O threads (at least 1).
    /// The threads start with the first relay and end once the engine and its relays are gone.
    pub fn with_io_threads(config: MediaConfig, threads: usize) -> Self {
        Self::with_io_mode(config, threads, uring::UringMode::from_env())
    }

    /// [`MediaEngine::with_io_threads`] with the threads' use of `io_uring` given rather than
    /// taken from `PASARELA_MEDIA_URING` (tests run both receive paths).
    pub(crate) fn with_io_mode(
        config: MediaConfig,
        threads: usize,
        mode: uring::UringMode,
    ) -> Self {
        let pool = PortPool::new(config.ports.clone());
        let pairs = pool.pairs();
        MediaEngine {
            inner: Arc::new(EngineInner {
                config,
                pool: Mutex::new(pool),
                pairs,
                busy: AtomicUsize::new(0),
                busy_at: AtomicU64::new(0),
                epoch: Instant::now(),
                alive: AtomicUsize::new(0),
                sockets: AtomicUsize::new(0),
            }),
            io: Arc::new(IoThreads {
                wanted: threads.max(1),
                mode,
                pool: OnceLock::new(),
                init: Mutex::new(()),
            }),
        }
    }

    fn io(&self) -> Result<&IoPool, MediaError> {
        if let Some(p) = self.io.pool.get() {
            return Ok(p);
        }
        let _init = self.io.init.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = self.io.pool.get() {
            return Ok(p);
        }
        // Weak: the threads must not keep the engine (and its pool) alive.
        let engine = Arc::downgrade(&self.inner);
        let give_back: io::GiveBack = Arc::new(move || {
            if let Some(e) = engine.upgrade() {
                e.pool().give_back(Instant::now());
            }
        });
        let started = IoPool::start(self.io.wanted, self.io.mode, give_back)?;
        tracing::debug!(threads = started.len(), "media I/O threads started");
        Ok(self.io.pool.get_or_init(|| started))
    }

    /// Starts the I/O threads now rather than with the first relay. A server does it at
    /// start: what the threads keep for good (their channels, handles and buffers) is then
    /// allocated before any call, instead of among a flood's short-lived blocks, where each
    /// would keep an allocator page of the flood's freed memory resident.
    pub fn start_io(&self) -> Result<(), MediaError> {
        self.io().map(|_| ())
    }

    /// Binds RTP and RTCP sockets for both legs and hands them to an I/O thread.
    pub async fn allocate(&self) -> Result<Relay, MediaError> {
        self.allocate_now()
    }

    /// [`MediaEngine::allocate`] for callers that are not async (the sans-IO call control). It
    /// never waits: binding sockets does not block, and the relay reaches its I/O thread through
    /// a channel.
    pub fn allocate_now(&self) -> Result<Relay, MediaError> {
        self.allocate_with(None, false)
    }

    /// [`MediaEngine::allocate_now`] for a relay whose events go straight from its I/O thread
    /// to `sink`, tagged with `call` (the gateway's one media event sink): no channel and no
    /// task per call.
    pub fn allocate_into(&self, call: u64, sink: EventSink) -> Result<Relay, MediaError> {
        self.allocate_with(Some((call, sink)), false)
    }

    /// [`MediaEngine::allocate_into`] for a call whose caller offered RTCP multiplexing
    /// (`a_mux`), which its answer will accept: leg A gets no RTCP socket at all.
    pub fn allocate_into_muxed(
        &self,
        call: u64,
        sink: EventSink,
        a_mux: bool,
    ) -> Result<Relay, MediaError> {
        self.allocate_with(Some((call, sink)), a_mux)
    }

    fn allocate_with(
        &self,
        sink: Option<(u64, EventSink)>,
        a_mux: bool,
    ) -> Result<Relay, MediaError> {
        let io = self.io()?;
        let ip = self.inner.config.bind_ip;
        let now = Instant::now();
        let (a, b) = {
            let mut pool = self.inner.pool();
            let bound = pool.bind_pair(ip, now, !a_mux).and_then(|a| {
                // Leg B's RTCP socket is bound: our offer names the port until B's answer says
                // whether it multiplexes (RFC 5761 §5.1.3).
                match pool.bind_pair(ip, now, true) {
                    Ok(b) => Ok((a, b)),
                    Err(e) => {
                        let port = a.port;
                        drop(a);
                        pool.release(port, now);
                        Err(e)
                    }
                }
            });
            self.inner.busy.store(pool.busy(), Ordering::Relaxed);
            self.inner
                .busy_at
                .store(self.inner.since_epoch(now), Ordering::Relaxed);
            bound?
        };
        // From here on the guard owns the ports: every exit releases them.
        let sockets = 2 + usize::from(a.rtcp.is_some()) + usize::from(b.rtcp.is_some());
        let guard = PortGuard::new(self.inner.clone(), [a.port, b.port], sockets);
        relay::spawn(&self.inner, io, guard, a, b, sink)
    }

    /// Relays alive: allocated and not yet torn down (their sockets are still open).
    pub fn in_use(&self) -> usize {
        self.inner.alive.load(Ordering::Relaxed)
    }

    /// Sockets the live relays hold open: two to four per relay (an RTP socket per leg, an
    /// RTCP socket per leg that does not multiplex RTCP).
    pub fn open_sockets(&self) -> usize {
        self.inner.sockets.load(Ordering::Relaxed)
    }

    /// How many relays the port range can hold (each takes [`PAIRS_PER_RELAY`] RTP/RTCP
    /// pairs).
    pub fn capacity(&self) -> usize {
        self.inner.pairs / PAIRS_PER_RELAY
    }

    /// RTP/RTCP pairs of the range.
    pub fn pairs(&self) -> usize {
        self.inner.pairs
    }

    /// RTP/RTCP pairs of the range neither held by a live relay nor found held by another
    /// process when last tried; resting ones count (they are handed out when nothing else is
    /// free). O(1) and lock-free, for overload admission
    /// ([`crate::callctl::overload::Admission::with_port_budget`]): a relay's pairs count as
    /// held from its allocation until its I/O thread has dropped it and returned them. Pairs
    /// another process holds that the allocator has not tried yet count as free; as pairs are
    /// tried at random, they are about the same share of the free pairs as of the range.
    pub fn free_pairs(&self) -> usize {
        let held = self.in_use().saturating_mul(PAIRS_PER_RELAY);
        // Busy pairs are forgotten once they have rested (the pool does so on its next
        // allocation): with no allocation since, the count is stale.
        let at = self.inner.busy_at.load(Ordering::Relaxed);
        let age = self.inner.since_epoch(Instant::now()).saturating_sub(at);
        let busy = match Duration::from_nanos(age) < ports::COOLDOWN {
            true => self.inner.busy.load(Ordering::Relaxed),
            false => 0,
        };
        self.inner.pairs.saturating_sub(held).saturating_sub(busy)
    }

    /// The configuration this engine was built with.
    pub fn config(&self) -> &MediaConfig {
        &self.inner.config
    }
}

/// Returns a relay's ports to the pool when its I/O thread drops it (after its sockets closed).
pub(crate) struct PortGuard {
    engine: Arc<EngineInner>,
    ports: [u16; PAIRS_PER_RELAY],
    /// Sockets of the relay still open (counted in [`MediaEngine::open_sockets`]).
    sockets: usize,
}

impl PortGuard {
    fn new(engine: Arc<EngineInner>, ports: [u16; PAIRS_PER_RELAY], sockets: usize) -> Self {
        engine.alive.fetch_add(1, Ordering::Relaxed);
        engine.sockets.fetch_add(sockets, Ordering::Relaxed);
        PortGuard {
            engine,
            ports,
            sockets,
        }
    }

    /// The relay bound one of its sockets again (RTCP after multiplexing ended).
    pub(crate) fn socket_opened(&mut self) {
        self.sockets += 1;
        self.engine.sockets.fetch_add(1, Ordering::Relaxed);
    }

    /// The relay closed one of its sockets (an RTCP socket no longer needed).
    pub(crate) fn socket_closed(&mut self) {
        if self.sockets > 0 {
            self.sockets -= 1;
            self.engine.sockets.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        let mut pool = self.engine.pool();
        let now = Instant::now();
        for p in self.ports {
            pool.release(p, now);
        }
        drop(pool);
        self.engine.alive.fetch_sub(1, Ordering::Relaxed);
        self.engine
            .sockets
            .fetch_sub(self.sockets, Ordering::Relaxed);
        tracing::debug!(ports = ?self.ports, "media relay released");
    }
}
