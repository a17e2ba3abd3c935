//! The relay of one call: the handle the call owns ([`Relay`]) and the state that moves its
//! packets ([`RelayState`]), which lives on one of the engine's media I/O threads ([`super::io`]).
//!
//! The state owns the sockets (an RTP socket per leg, and an RTCP socket for a leg that does
//! not multiplex RTCP on its RTP port, RFC 5761) and all per-stream state. The I/O thread hands it each
//! datagram read from its sockets in a single reused buffer; the state rewrites the packet in
//! place and forwards it through the thread's [`SendQueue`], which sends a wake-up's packets
//! together without blocking (a full socket buffer drops the packet).
//! Counters go to the handle through relaxed atomics, control comes from the handle through the
//! thread's channel, events go back through a bounded tokio channel (`try_send`).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use tokio::sync::mpsc;

use super::dtmf::{self, TelephoneEvent};
use super::g711;
use super::io::{IoHandle, IoPool};
use super::mmsg::{RecvBatch, WakeClock, BATCH};
use super::ports::BoundPair;
use super::rtp::{self, Rtp};
use super::srtp::{SrtpContext, SrtpError};
use super::stats::StreamStats;
use super::uring::SendQueue;
use super::{
    CallMediaStats, DirectionStats, EngineInner, Law, LegMedia, LegSrtp, MediaError, MediaEvent,
    PortGuard, Side,
};

/// Largest datagram relayed; larger ones are truncated by the kernel and then dropped as invalid.
pub(crate) const BUF_LEN: usize = 2048;
/// Room an outgoing SRTP/SRTCP packet needs beyond the plain one (index and tag).
const SRTP_OVERHEAD: usize = 16;
/// Spacing of injected telephone-event packets.
const EVENT_INTERVAL: Duration = Duration::from_millis(20);
/// Timestamp units per injected packet interval (8 kHz).
const EVENT_STEP: u32 = 160;
/// Capacity of the event channel; events beyond it are dropped (and logged).
const EVENT_QUEUE: usize = 64;

/// Relay identities, unique per process: the I/O threads key control messages and timers on them.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The handle of one call's media relay. Dropping it makes the I/O thread deregister and close
/// its sockets and return the ports to the pool.
pub struct Relay {
    ports: [u16; 2],
    id: u64,
    io: IoHandle,
    events: Option<mpsc::Receiver<MediaEvent>>,
    shared: Arc<Shared>,
    /// Last parameters given to `update`; only the handle reads it.
    params: Mutex<[LegMedia; 2]>,
}

/// What a relay handle (or the engine) asks of an I/O thread.
pub(crate) enum Control {
    /// A new relay; the thread registers its sockets.
    Add(u64, Box<RelayState>),
    /// The handle was dropped: deregister and close.
    Remove(u64),
    Update(u64, [LegMedia; 2]),
    Dtmf {
        id: u64,
        to: Side,
        event: u8,
        duration_ms: u32,
    },
    /// Music on hold towards the phone of `to` (`None`: stop it).
    Music {
        id: u64,
        to: Side,
        music: Option<super::hold_music::HoldMusic>,
    },
    /// Tests only: the thread answers on the channel when it reaches this message, so every
    /// control message queued on that thread before it (an update, a DTMF, music) has been
    /// applied ([`Relay::applied`]). Touches no relay.
    #[cfg(test)]
    Sync(tokio::sync::oneshot::Sender<()>),
}

impl Control {
    /// Whether the I/O thread must be woken for this at once, even while it gathers control
    /// messages (see `io::CONTROL_WINDOW`): only a test's sync, which someone waits for.
    pub(crate) fn urgent(&self) -> bool {
        #[cfg(test)]
        if matches!(self, Control::Sync(_)) {
            return true;
        }
        false
    }

    pub(crate) fn id(&self) -> u64 {
        match self {
            Control::Add(id, _) | Control::Remove(id) | Control::Update(id, _) => *id,
            Control::Dtmf { id, .. } | Control::Music { id, .. } => *id,
            // No relay has id 0 (they start at 1).
            #[cfg(test)]
            Control::Sync(_) => 0,
        }
    }
}

/// The timers of one relay, kept by its I/O thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Dead-media check.
    Dead,
    /// Next injected telephone-event packet.
    Inject,
}

/// Takes back the `forwarded` count of a packet that was not sent after all (its send,
/// queued by [`SendQueue`], failed).
pub(crate) struct Undo {
    shared: Arc<Shared>,
    dir: usize,
}

impl Undo {
    pub(crate) fn undo(self) {
        if let Some(c) = self.shared.dir.get(self.dir) {
            c.forwarded.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Counters published by the I/O thread, read by [`Relay::stats`].
struct Shared {
    start: Instant,
    dir: [DirCounters; 2],
}

#[derive(Default)]
struct DirCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    forwarded: AtomicU64,
    lost: AtomicI64,
    jitter_ms_bits: AtomicU64,
    /// Nanoseconds since `start` of the last packet, plus one; zero for none.
    last_ns: AtomicU64,
    /// Packets (RTP and RTCP) from sources other than the locked one, dropped.
    foreign: AtomicU64,
    /// SRTP/SRTCP packets that failed authentication or the replay check, dropped.
    srtp_rejected: AtomicU64,
}

impl Relay {
    /// The RTP port the phone of `side` must send to (RTCP is this port + 1, or this port when
    /// the leg multiplexes RTCP).
    pub fn local_port(&self, side: Side) -> u16 {
        self.ports[side.idx()]
    }

    /// New media parameters for both legs (answer, re-INVITE). A leg whose `remote` changed is
    /// re-latched: its phone is sent to at `remote` until a packet arrives from it.
    pub fn update(&self, a: LegMedia, b: LegMedia) {
        let legs = [a, b];
        {
            let mut p = self.params.lock().unwrap_or_else(|e| e.into_inner());
            *p = legs.clone();
        }
        if !self.io.send(Control::Update(self.id, legs)) {
            tracing::warn!("media I/O thread is gone; update ignored");
        }
    }

    /// Injects an RFC 4733 event for `digit` towards the phone of `to`, continuing the SSRC,
    /// sequence numbers and timestamps of the stream relayed to it. Ignored (with a warning) for
    /// a character that is not a DTMF digit or when leg `to` negotiated no telephone-event.
    pub fn send_dtmf(&self, to: Side, digit: char, duration_ms: u32) {
        let Some(event) = dtmf::digit_to_event(digit) else {
            tracing::warn!(%digit, "not a DTMF digit; not sent");
            return;
        };
        let sent = self.io.send(Control::Dtmf {
            id: self.id,
            to,
            event,
            duration_ms,
        });
        if !sent {
            tracing::warn!("media I/O thread is gone; DTMF ignored");
        }
    }

    /// Plays `music` to the phone of `to`, looped, in place of what the other phone sends
    /// (music on hold); `None` stops it and the other phone's audio is relayed again.
    pub fn play_music(&self, to: Side, music: Option<super::hold_music::HoldMusic>) {
        if !self.io.send(Control::Music {
            id: self.id,
            to,
            music,
        }) {
            tracing::warn!("media I/O thread is gone; hold music ignored");
        }
    }

    /// Tests only: resolves once this relay's I/O thread has applied every control message
    /// the handle sent before (`update`, `send_dtmf`, `play_music`): control messages are
    /// handled in order, and the thread answers this one when it reaches it. Lets a test send
    /// packets that depend on an update without guessing how long the thread takes.
    #[cfg(test)]
    pub(crate) fn applied(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        // A thread that is gone drops `tx`, and the receiver says so.
        let _ = self.io.send(Control::Sync(tx));
        rx
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CallMediaStats {
        let params = self
            .params
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let dir = |i: usize| {
            let c = &self.shared.dir[i];
            let last = c.last_ns.load(Ordering::Relaxed);
            DirectionStats {
                packets: c.packets.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
                forwarded: c.forwarded.load(Ordering::Relaxed),
                lost: c.lost.load(Ordering::Relaxed),
                jitter_ms: f64::from_bits(c.jitter_ms_bits.load(Ordering::Relaxed)),
                last_packet: (last != 0)
                    .then(|| self.shared.start + Duration::from_nanos(last - 1)),
                foreign_dropped: c.foreign.load(Ordering::Relaxed),
                srtp_rejected: c.srtp_rejected.load(Ordering::Relaxed),
            }
        };
        let transcoding = matches!(
            (params[0].law, params[1].law),
            (Some(Law::Ulaw), Some(Law::Alaw)) | (Some(Law::Alaw), Some(Law::Ulaw))
        );
        CallMediaStats {
            a_to_b: dir(0),
            b_to_a: dir(1),
            a_codec_pt: params[0].codec_pt,
            b_codec_pt: params[1].codec_pt,
            transcoding,
            srtp: [params[0].srtp.is_some(), params[1].srtp.is_some()],
        }
    }

    /// Events of this call's media ([`MediaEvent`]); `None` for a relay whose events go to a
    /// shared sink ([`super::MediaEngine::allocate_into`]).
    pub fn events(&mut self) -> Option<&mut mpsc::Receiver<MediaEvent>> {
        self.events.as_mut()
    }

    /// Takes the event receiver (to forward events elsewhere); later calls get `None`.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<MediaEvent>> {
        self.events.take()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The thread closes the sockets; the ports return to the pool once they are closed.
        let _ = self.io.send(Control::Remove(self.id));
    }
}

/// Builds the relay state around the bound sockets and hands it to an I/O thread.
pub(crate) fn spawn(
    engine: &Arc<EngineInner>,
    io: &IoPool,
    guard: PortGuard,
    a: BoundPair,
    b: BoundPair,
    sink: Option<(u64, super::EventSink)>,
) -> Result<Relay, MediaError> {
    let ports = [a.port, b.port];
    let now = Instant::now();
    let legs = [Leg::new(a, now), Leg::new(b, now)];
    let shared = Arc::new(Shared {
        start: now,
        dir: Default::default(),
    });
    let (events, ev_rx) = match sink {
        Some((call, sink)) => (EventTarget::Shared(call, sink), None),
        None => {
            let (tx, rx) = mpsc::channel(EVENT_QUEUE);
            (EventTarget::Own(tx), Some(rx))
        }
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let state = Box::new(RelayState {
        legs,
        events,
        shared: shared.clone(),
        dead_after: engine.config.dead_after,
        last_rx: now,
        dead_reported: false,
        scratch: Vec::new(),
        guard,
    });
    let io = io.pick().clone();
    if !io.send(Control::Add(id, state)) {
        return Err(MediaError::Io(std::io::Error::other(
            "media I/O thread is gone",
        )));
    }
    tracing::debug!(a = ports[0], b = ports[1], "media relay allocated");
    Ok(Relay {
        ports,
        id,
        io,
        events: ev_rx,
        shared,
        params: Mutex::new([LegMedia::default(), LegMedia::default()]),
    })
}

/// One leg: our sockets towards that leg's phone, and the state of both streams on it.
struct Leg {
    rtp: UdpSocket,
    /// Our RTCP socket (RTP port + 1): `None` for a leg bound without one (its phone offered
    /// RTCP multiplexing, which pasarela accepts) or once the leg's answer accepted
    /// multiplexing; RTCP then shares `rtp`.
    rtcp: Option<UdpSocket>,
    /// `rtcp` is registered with the I/O thread (false only between [`Leg::reopen_rtcp`]
    /// and the thread's look at [`RelayState::unregistered`]).
    rtcp_registered: bool,
    media: LegMedia,
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    /// The stream received from this leg's phone.
    rx: StreamStats,
    /// Timestamp of the last telephone event whose end was reported (end retransmissions).
    last_event_end: Option<u32>,
    /// The stream we send to this leg's phone.
    tx: TxStream,
    /// SRTP contexts when this leg's media is encrypted; boxed: inline they are most of a
    /// plain call's relay state (about 2.5 KiB a leg), which every held call would carry.
    crypto: Option<Box<LegCrypto>>,
}

/// The SRTP contexts of one leg: `rx` unprotects what its phone sends (the phone's key), `tx`
/// protects what we send it (our key).
struct LegCrypto {
    rx: SrtpContext,
    tx: SrtpContext,
}

impl LegCrypto {
    fn new(k: &LegSrtp) -> Self {
        LegCrypto {
            rx: SrtpContext::new(k.suite, &k.remote),
            tx: SrtpContext::new(k.suite, &k.local),
        }
    }
}

impl Leg {
    fn new(pair: BoundPair, now: Instant) -> Self {
        Leg {
            rtp: UdpSocket::from_std(pair.rtp),
            rtcp: pair.rtcp.map(UdpSocket::from_std),
            rtcp_registered: true,
            media: LegMedia::default(),
            latched_rtp: None,
            latched_rtcp: None,
            rx: StreamStats::default(),
            last_event_end: None,
            tx: TxStream::new(now),
            crypto: None,
        }
    }

    /// Binds the RTCP socket again (RTP port + 1) for a leg that stopped multiplexing; it
    /// waits to be registered with the I/O thread ([`RelayState::unregistered`]). `false`
    /// when the port cannot be bound (another process took it): RTCP then keeps leaving
    /// through the RTP socket, and what the phone sends to port + 1 is lost.
    fn reopen_rtcp(&mut self) -> bool {
        let addr = match self.rtp.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "RTP socket address unknown; no RTCP socket");
                return false;
            }
        };
        let Some(port) = addr.port().checked_add(1) else {
            return false;
        };
        let at = SocketAddr::new(addr.ip(), port);
        match super::ports::bind_socket(at) {
            Ok(s) => {
                tracing::debug!(%at, "RTCP socket bound again: the leg stopped multiplexing");
                self.rtcp = Some(UdpSocket::from_std(s));
                self.rtcp_registered = false;
                true
            }
            Err(e) => {
                tracing::warn!(%at, error = %e, "RTCP port not bound again; RTCP from the phone is lost");
                false
            }
        }
    }

    fn rtp_dest(&self) -> Option<SocketAddr> {
        self.latched_rtp.or(self.media.remote)
    }

    fn rtcp_dest(&self) -> Option<SocketAddr> {
        self.latched_rtcp.or_else(|| self.sdp_rtcp())
    }

    /// Where the SDP says this leg's phone takes RTCP: its RTP address when the leg
    /// multiplexes, else RTP port + 1.
    fn sdp_rtcp(&self) -> Option<SocketAddr> {
        if self.media.rtcp_mux {
            return self.media.remote;
        }
        self.media
            .remote
            .and_then(|r| r.port().checked_add(1).map(|p| SocketAddr::new(r.ip(), p)))
    }

    /// The socket RTCP leaves through towards this leg's phone: the RTP socket when the leg
    /// multiplexes (or its RTCP socket is gone), else the RTCP socket.
    fn rtcp_socket(&self) -> &UdpSocket {
        match &self.rtcp {
            Some(s) if !self.media.rtcp_mux => s,
            _ => &self.rtp,
        }
    }
}

/// Whether a datagram on an RTP port is RTCP (RFC 5761 §4: the second byte of an RTCP packet
/// is its type, 192..=223, which no RTP payload type with or without the marker bit takes
/// once payload types 64-95 are avoided, as they are).
fn is_rtcp(pkt: &[u8]) -> bool {
    pkt.get(1).is_some_and(|pt| (192..=223).contains(pt))
}

/// What to do with a packet from `src` on a leg whose media is latched to `latched` and whose
/// SDP names `sdp`: take it (and latch to `src`), or drop it as foreign. The first source is
/// taken while nothing is latched; after that only the latched source, or the address the
/// SDP names (a phone may start sending from there later), is.
fn admit(latched: Option<SocketAddr>, sdp: Option<SocketAddr>, src: SocketAddr) -> bool {
    match latched {
        None => true,
        Some(l) => l == src || sdp == Some(src),
    }
}

/// Sequence/timestamp continuity of the stream sent to one phone: relayed packets get
/// `seq + seq_offset`; each injected packet takes the next number and bumps the offset, each
/// relayed packet we swallow lowers it, so the phone sees one gapless, monotonic stream.
struct TxStream {
    seq_offset: u16,
    last_seq: u16,
    last_ts: u32,
    last_at: Instant,
    ssrc: u32,
    inject: Option<Injection>,
    /// Music on hold playing on this stream.
    music: Option<Playing>,
}

/// Music on hold being played: the next frame, its timestamp and when it is due.
struct Playing {
    music: super::hold_music::HoldMusic,
    frame: usize,
    ts: u32,
    next_at: Instant,
}

struct Injection {
    pt: u8,
    event: u8,
    ts: u32,
    /// Total duration in timestamp units.
    total: u16,
    /// Update packets sent so far.
    sent: u32,
    /// End packets sent so far (three in all, RFC 4733 §2.5.1.4).
    ends: u8,
    next_at: Instant,
}

impl TxStream {
    fn new(now: Instant) -> Self {
        // Until a stream is relayed this way, injected events start a fresh random one.
        TxStream {
            seq_offset: 0,
            last_seq: rand::random(),
            last_ts: rand::random(),
            last_at: now,
            ssrc: rand::random(),
            inject: None,
            music: None,
        }
    }

    fn relayed(&mut self, seq: u16, ts: u32, ssrc: u32, now: Instant) -> u16 {
        let out = seq.wrapping_add(self.seq_offset);
        self.last_seq = out;
        self.last_ts = ts;
        self.last_at = now;
        self.ssrc = ssrc;
        out
    }

    fn swallowed(&mut self) {
        self.seq_offset = self.seq_offset.wrapping_sub(1);
    }

    fn next_injected_seq(&mut self) -> u16 {
        self.last_seq = self.last_seq.wrapping_add(1);
        self.seq_offset = self.seq_offset.wrapping_add(1);
        self.last_seq
    }
}

/// Where a relay's events go: its own bounded channel (read through [`Relay::events`]), or the
/// sink shared by every call of the gateway, tagged with the call.
pub(crate) enum EventTarget {
    Own(mpsc::Sender<MediaEvent>),
    Shared(u64, super::EventSink),
}

impl EventTarget {
    fn send(&self, ev: MediaEvent) -> Result<(), String> {
        match self {
            EventTarget::Own(tx) => tx.try_send(ev).map_err(|e| e.to_string()),
            EventTarget::Shared(call, sink) => sink.send((*call, ev)).map_err(|e| e.to_string()),
        }
    }
}

/// Everything one relay needs on its I/O thread.
pub(crate) struct RelayState {
    legs: [Leg; 2],
    events: EventTarget,
    shared: Arc<Shared>,
    dead_after: Duration,
    last_rx: Instant,
    dead_reported: bool,
    /// Where packets are protected on their way to an SRTP leg: allocated with the first such
    /// packet (a plain call does without its 2 KiB), then kept for the relay's life.
    scratch: Vec<u8>,
    /// Declared last: dropped after the sockets, so a released port is really free.
    guard: PortGuard,
}

impl RelayState {
    /// The sockets, in token order: A RTP, A RTCP, B RTP, B RTCP (`None`: that leg has no
    /// RTCP socket).
    pub(crate) fn sockets_mut(&mut self) -> [Option<&mut UdpSocket>; 4] {
        let [a, b] = &mut self.legs;
        [
            Some(&mut a.rtp),
            a.rtcp.as_mut(),
            Some(&mut b.rtp),
            b.rtcp.as_mut(),
        ]
    }

    /// Sockets bound since the thread registered the relay's (an RTCP socket bound again),
    /// in token order; marked registered as they are handed out.
    pub(crate) fn unregistered(&mut self) -> Vec<(usize, &mut UdpSocket)> {
        let mut out = Vec::new();
        for (i, leg) in self.legs.iter_mut().enumerate() {
            if let (Some(s), false) = (leg.rtcp.as_mut(), leg.rtcp_registered) {
                leg.rtcp_registered = true;
                out.push((2 * i + 1, s));
            }
        }
        out
    }

    /// When the dead-media check first runs.
    pub(crate) fn dead_at(&self) -> Instant {
        self.last_rx + self.dead_after
    }

    /// Reads the datagrams queued on socket `sock` (token order), up to one batch, and relays
    /// them. `true` when the batch was full: the socket may hold more.
    /// `clock` is the I/O thread's wake-up, which dates the datagrams.
    pub(crate) fn recv_batch(
        &mut self,
        sock: usize,
        batch: &mut RecvBatch,
        clock: &WakeClock,
        out: &mut SendQueue,
    ) -> bool {
        let i = sock / 2;
        let rtp = sock.is_multiple_of(2);
        let Some(leg) = self.legs.get(i) else {
            return false;
        };
        let fd = if rtp {
            leg.rtp.as_raw_fd()
        } else {
            match &leg.rtcp {
                Some(s) => s.as_raw_fd(),
                None => return false,
            }
        };
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => return true,
            Err(e) => {
                // ICMP errors of earlier sends surface here; each is reported once.
                tracing::trace!(error = %e, "media receive error");
                return true;
            }
        };
        for k in 0..n {
            let arrival = clock.arrival(batch.received_at(k));
            if let Some((pkt, src)) = batch.get(k) {
                self.datagram(sock, pkt, src, clock.now, arrival, out);
            }
        }
        n == BATCH
    }

    /// One datagram received on socket `sock` (token order) from `src`, which the kernel
    /// received at `arrival` and the thread handles at (about) `now`: relayed as RTP or RTCP.
    pub(crate) fn datagram(
        &mut self,
        sock: usize,
        pkt: &mut [u8],
        src: SocketAddr,
        now: Instant,
        arrival: Instant,
        out: &mut SendQueue,
    ) {
        let i = sock / 2;
        if i >= self.legs.len() {
            return;
        }
        if sock.is_multiple_of(2) && !is_rtcp(pkt) {
            self.on_rtp(i, pkt, src, now, arrival, out);
        } else {
            self.on_rtcp(i, pkt, src, out);
        }
    }

    /// A timer of this relay fired (it was due at `at`); returns when it must fire next.
    pub(crate) fn timer(
        &mut self,
        kind: Timer,
        at: Instant,
        buf: &mut [u8; BUF_LEN],
    ) -> Option<Instant> {
        match kind {
            Timer::Dead => {
                let now = Instant::now().max(at);
                let due = self.last_rx + self.dead_after;
                if now >= due {
                    if !self.dead_reported {
                        self.dead_reported = true;
                        tracing::info!("no RTP from either side; media dead");
                        self.emit(MediaEvent::Dead);
                    }
                    Some(now + self.dead_after)
                } else {
                    Some(due)
                }
            }
            Timer::Inject => {
                self.inject(buf);
                self.next_inject()
            }
        }
    }

    fn next_inject(&self) -> Option<Instant> {
        self.legs
            .iter()
            .flat_map(|l| {
                [
                    l.tx.inject.as_ref().map(|i| i.next_at),
                    l.tx.music.as_ref().map(|m| m.next_at),
                ]
            })
            .flatten()
            .min()
    }

    fn emit(&self, ev: MediaEvent) {
        if let Err(e) = self.events.send(ev) {
            tracing::warn!(error = %e, "media event dropped");
        }
    }

    /// One RTP packet from the phone of leg `i`, which the kernel received at `arrival` and
    /// the thread handles at (about) `now`: account, latch, rewrite, forward.
    fn on_rtp(
        &mut self,
        i: usize,
        pkt: &mut [u8],
        src: SocketAddr,
        now: Instant,
        arrival: Instant,
        out_q: &mut SendQueue,
    ) {
        let [la, lb] = &mut self.legs;
        let (from, to) = if i == 0 { (la, lb) } else { (lb, la) };
        // An SRTP packet's padding is encrypted: only its fixed header can be checked yet.
        let looks_like_rtp = match from.crypto {
            Some(_) => {
                pkt.len() >= rtp::FIXED_HEADER_LEN && pkt.first().is_some_and(|b| b >> 6 == 2)
            }
            None => Rtp::parse(&*pkt).is_ok(),
        };
        if !looks_like_rtp {
            tracing::trace!(%src, "not RTP; dropped");
            return;
        }

        // Latch (symmetric RTP), then locked: others are dropped, and do not count as media.
        if !admit(from.latched_rtp, from.media.remote, src) {
            let n = self.shared.dir[i].foreign.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                tracing::info!(side = ?Side::from_idx(i), %src, locked = ?from.latched_rtp, dropped = n + 1, "RTP from a foreign source dropped");
            }
            return;
        }
        // SRTP: authenticated and decrypted before it may latch or be looked at.
        let len = match from.crypto.as_mut() {
            Some(c) => match c.rx.unprotect_rtp(pkt) {
                Ok(n) => n,
                Err(e) => {
                    srtp_rejected(&self.shared.dir[i], i, src, pkt.len(), e, "SRTP");
                    return;
                }
            },
            None => pkt.len(),
        };
        let Some(Ok(mut rtp)) = pkt.get_mut(..len).map(Rtp::parse) else {
            tracing::trace!(%src, "not RTP once decrypted; dropped");
            return;
        };
        let (pt, seq, ts, ssrc) = (
            rtp.payload_type(),
            rtp.sequence(),
            rtp.timestamp(),
            rtp.ssrc(),
        );
        if from.latched_rtp != Some(src) {
            tracing::debug!(side = ?Side::from_idx(i), %src, "RTP latched");
            from.latched_rtp = Some(src);
        }
        self.last_rx = now;
        self.dead_reported = false;

        // Receive statistics; jitter only on the audio clock, from the kernel's receive time.
        let since = arrival.saturating_duration_since(self.shared.start);
        let arrival = (pt == from.media.codec_pt).then(|| {
            (since.as_micros() as u64)
                .wrapping_mul(8)
                .wrapping_div(1000) as u32
        });
        from.rx.record(ssrc, seq, ts, pkt_len(&rtp), arrival);
        let c = &self.shared.dir[i];
        c.packets.store(from.rx.packets, Ordering::Relaxed);
        c.bytes.store(from.rx.bytes, Ordering::Relaxed);
        c.lost.store(from.rx.seq.lost(), Ordering::Relaxed);
        c.jitter_ms_bits
            .store(from.rx.jitter.millis(8000).to_bits(), Ordering::Relaxed);
        c.last_ns
            .store(since.as_nanos() as u64 + 1, Ordering::Relaxed);

        // Rewrite for the other leg.
        if from.media.dtmf_pt == Some(pt) {
            if let Ok(ev) = TelephoneEvent::parse(rtp.payload()) {
                if ev.end && from.last_event_end != Some(ts) {
                    from.last_event_end = Some(ts);
                    if let Some(digit) = ev.digit() {
                        let _ = self.events.send(MediaEvent::Dtmf {
                            from: Side::from_idx(i),
                            digit,
                            duration_ms: ev.duration_ms(),
                        });
                    }
                }
            }
            match to.media.dtmf_pt {
                Some(out_pt) => rtp.set_payload_type(out_pt),
                None => {
                    to.tx.swallowed();
                    return;
                }
            }
        } else if pt == from.media.codec_pt {
            if to.tx.inject.is_some() {
                // Our own event is playing on this stream: hold the audio back.
                to.tx.swallowed();
                return;
            }
            rtp.set_payload_type(to.media.codec_pt);
            match (from.media.law, to.media.law) {
                (Some(Law::Ulaw), Some(Law::Alaw)) => g711::ulaw_buf_to_alaw(rtp.payload_mut()),
                (Some(Law::Alaw), Some(Law::Ulaw)) => g711::alaw_buf_to_ulaw(rtp.payload_mut()),
                _ => {}
            }
        }
        // Anything else (comfort noise, unknown types) goes through unchanged.

        if to.tx.music.is_some() {
            // Music on hold plays on this stream: the held call's own packets wait.
            to.tx.swallowed();
            return;
        }
        let out_seq = to.tx.relayed(seq, ts, ssrc, now);
        if out_seq != seq {
            rtp.set_sequence(out_seq);
        }
        let Some(dest) = to.rtp_dest() else {
            return;
        };
        // Counted before the send, so whoever has seen the packet arrive also sees the count.
        let forwarded = &self.shared.dir[i].forwarded;
        let out: &[u8] = match to.crypto.as_mut() {
            Some(c) => {
                match protect(&mut c.tx, scratch(&mut self.scratch), rtp.as_bytes(), false) {
                    Some(out) => out,
                    None => return,
                }
            }
            None => rtp.as_bytes(),
        };
        forwarded.fetch_add(1, Ordering::Relaxed);
        let undo = Undo {
            shared: self.shared.clone(),
            dir: i,
        };
        out_q.send(&to.rtp, out, dest, Some(undo));
    }

    /// One RTCP packet from the phone of leg `i`: check its source, latch and forward unchanged.
    fn on_rtcp(&mut self, i: usize, pkt: &mut [u8], src: SocketAddr, out_q: &mut SendQueue) {
        // RTCP common header: V=2, packet type 192..=223 (SR, RR, SDES, BYE, APP, feedback, XR).
        let valid = pkt.len() >= 8
            && pkt.first().is_some_and(|b| b >> 6 == 2)
            && pkt.get(1).is_some_and(|pt| (192..=223).contains(pt));
        if !valid {
            tracing::trace!(%src, "not RTCP; dropped");
            return;
        }
        let j = 1 - i;
        let leg = &self.legs[i];
        // RTCP does not latch on its own: it must come from the host the RTP is locked to, or
        // from where the SDP says (RTP port + 1).
        let same_host = leg.latched_rtp.is_some_and(|r| r.ip() == src.ip());
        if !same_host && leg.sdp_rtcp() != Some(src) {
            self.shared.dir[i].foreign.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(%src, "RTCP from a foreign source dropped");
            return;
        }
        let len = match self.legs[i].crypto.as_mut() {
            Some(c) => match c.rx.unprotect_rtcp(pkt) {
                Ok(n) => n,
                Err(e) => {
                    srtp_rejected(&self.shared.dir[i], i, src, pkt.len(), e, "SRTCP");
                    return;
                }
            },
            None => pkt.len(),
        };
        let Some(pkt) = pkt.get(..len) else { return };
        if self.legs[i].latched_rtcp != Some(src) {
            tracing::debug!(side = ?Side::from_idx(i), %src, "RTCP latched");
            self.legs[i].latched_rtcp = Some(src);
        }
        let to = &mut self.legs[j];
        // A multiplexing phone not heard from yet may still be waiting for the answer that
        // agrees on multiplexing (the offerer learns it only from the 200): until then it
        // takes RTCP on its RTP port for foreign RTP and drops it. RTCP to it waits until it
        // sends (RTP or RTCP), which it does once it has the answer.
        if to.media.rtcp_mux && to.latched_rtp.is_none() && to.latched_rtcp.is_none() {
            tracing::trace!(side = ?Side::from_idx(j), "RTCP held back until the multiplexing phone is heard from");
            return;
        }
        if let Some(dest) = to.rtcp_dest() {
            let out: &[u8] = match to.crypto.as_mut() {
                Some(c) => match protect(&mut c.tx, scratch(&mut self.scratch), pkt, true) {
                    Some(out) => out,
                    None => return,
                },
                None => pkt,
            };
            out_q.send(to.rtcp_socket(), out, dest, None);
        }
    }

    /// A control message for this relay; returns when injected DTMF must next be sent if a
    /// digit started playing.
    pub(crate) fn control(&mut self, c: Control, buf: &mut [u8; BUF_LEN]) -> Option<Instant> {
        match c {
            Control::Add(..) | Control::Remove(_) => None,
            #[cfg(test)]
            Control::Sync(_) => None,
            Control::Update(_, media) => {
                let guard = &mut self.guard;
                for (leg, m) in self.legs.iter_mut().zip(media) {
                    if leg.media.remote != m.remote {
                        leg.latched_rtp = None;
                        leg.latched_rtcp = None;
                    } else if leg.media.rtcp_mux != m.rtcp_mux {
                        leg.latched_rtcp = None;
                    }
                    if m.rtcp_mux {
                        // The answer took multiplexing: the RTCP socket is not needed. Closing
                        // its descriptor also takes it out of the thread's epoll set; its
                        // port stays reserved with the pair until the relay ends.
                        if leg.rtcp.take().is_some() {
                            guard.socket_closed();
                        }
                    } else if leg.rtcp.is_none() {
                        // Multiplexing ended (a re-INVITE without a=rtcp-mux, as a phone that
                        // took over the call may send, RFC 8035 notwithstanding): the phone
                        // sends RTCP to our RTP port + 1 again, which the pair kept reserved.
                        if leg.reopen_rtcp() {
                            guard.socket_opened();
                        }
                    }
                    update_crypto(leg, m.srtp.as_ref());
                    leg.media = m;
                }
                tracing::debug!(a = ?self.legs[0].media, b = ?self.legs[1].media, "media updated");
                None
            }
            Control::Dtmf {
                id: _,
                to,
                event,
                duration_ms,
            } => {
                let now = Instant::now();
                let leg = &mut self.legs[to.idx()];
                let Some(pt) = leg.media.dtmf_pt else {
                    tracing::warn!(
                        ?to,
                        "leg has no telephone-event payload type; DTMF not sent"
                    );
                    return None;
                };
                if leg.tx.inject.is_some() {
                    tracing::warn!(?to, "DTMF already playing; digit dropped");
                    return None;
                }
                let running = leg.tx.music.is_some();
                // Event timestamp: where the relayed stream's clock is now.
                let elapsed = now.saturating_duration_since(leg.tx.last_at);
                let ts = leg
                    .tx
                    .last_ts
                    .wrapping_add((elapsed.as_micros() as u64 * 8 / 1000) as u32);
                let total = (duration_ms.clamp(20, 8000) * dtmf::SAMPLES_PER_MS) as u16;
                leg.tx.inject = Some(Injection {
                    pt,
                    event,
                    ts,
                    total,
                    sent: 0,
                    ends: 0,
                    next_at: now,
                });
                self.inject(buf);
                // With music playing, its timer chain already runs and sends this too.
                if running {
                    None
                } else {
                    self.next_inject()
                }
            }
            Control::Music { id: _, to, music } => {
                let running = self.next_inject().is_some();
                let now = Instant::now();
                let leg = &mut self.legs[to.idx()];
                match music {
                    None => {
                        if leg.tx.music.take().is_some() {
                            tracing::debug!(?to, "hold music stopped");
                        }
                        return None;
                    }
                    Some(_) if leg.tx.music.is_some() => return None,
                    Some(music) => {
                        let elapsed = now.saturating_duration_since(leg.tx.last_at);
                        let ts = leg
                            .tx
                            .last_ts
                            .wrapping_add((elapsed.as_micros() as u64 * 8 / 1000) as u32);
                        tracing::debug!(?to, "hold music playing");
                        leg.tx.music = Some(Playing {
                            music,
                            frame: 0,
                            ts,
                            next_at: now,
                        });
                    }
                }
                self.inject(buf);
                if running {
                    None
                } else {
                    self.next_inject()
                }
            }
        }
    }

    /// Sends the frames of hold music that are due (at most a few after a late wake-up).
    fn play(leg: &mut Leg, now: Instant, buf: &mut [u8; BUF_LEN]) {
        for _ in 0..3 {
            let Some(p) = leg.tx.music.as_mut() else {
                return;
            };
            if p.next_at > now {
                return;
            }
            let Some(law) = leg.media.law else {
                tracing::info!("hold music needs G.711 on the held leg; not played");
                leg.tx.music = None;
                return;
            };
            let marker = p.frame == 0;
            let (frame, ts) = (p.frame, p.ts);
            p.frame += 1;
            p.ts = p.ts.wrapping_add(super::hold_music::FRAME as u32);
            p.next_at += EVENT_INTERVAL;
            let music = p.music.clone();
            let payload = music.frame(law, frame);
            let seq = leg.tx.next_injected_seq();
            let Some(h) = rtp::write_header(
                &mut buf[..],
                marker,
                leg.media.codec_pt,
                seq,
                ts,
                leg.tx.ssrc,
            ) else {
                return;
            };
            let mut len = h + payload.len();
            let Some(out) = buf.get_mut(h..len) else {
                return;
            };
            out.copy_from_slice(payload);
            if let Some(c) = leg.crypto.as_mut() {
                match c.tx.protect_rtp(&mut buf[..], len) {
                    Ok(n) => len = n,
                    Err(e) => {
                        tracing::trace!(error = %e, "hold music not protected; not sent");
                        continue;
                    }
                }
            }
            if let (Some(dest), Some(pkt)) = (leg.rtp_dest(), buf.get(..len)) {
                if let Err(e) = leg.rtp.send_to(pkt, dest) {
                    tracing::trace!(%dest, error = %e, "hold music send failed");
                }
            }
        }
        // Still behind after a long stall: start again from now rather than burst.
        if let Some(p) = leg.tx.music.as_mut() {
            if p.next_at <= now {
                p.next_at = now + EVENT_INTERVAL;
            }
        }
    }

    /// Sends the injected event packets that are due.
    fn inject(&mut self, buf: &mut [u8; BUF_LEN]) {
        let now = Instant::now();
        for leg in self.legs.iter_mut() {
            if leg.tx.inject.is_none() {
                // Music on hold pauses while a DTMF event plays on the same stream.
                Self::play(leg, now, buf);
            }
            let Some(inj) = leg.tx.inject.as_mut() else {
                continue;
            };
            if inj.next_at > now {
                continue;
            }
            let duration = ((inj.sent + 1) * EVENT_STEP).min(u32::from(inj.total)) as u16;
            let end = duration >= inj.total;
            let marker = inj.sent == 0 && inj.ends == 0;
            let (pt, event, ts) = (inj.pt, inj.event, inj.ts);
            if end {
                inj.ends += 1;
            } else {
                inj.sent += 1;
            }
            inj.next_at += EVENT_INTERVAL;
            if inj.ends >= 3 {
                leg.tx.inject = None;
            }
            let seq = leg.tx.next_injected_seq();
            let payload = TelephoneEvent {
                event,
                end,
                volume: 10,
                duration,
            }
            .to_bytes();
            let Some(h) = rtp::write_header(&mut buf[..], marker, pt, seq, ts, leg.tx.ssrc) else {
                continue;
            };
            let mut len = h + payload.len();
            let Some(out) = buf.get_mut(h..len) else {
                continue;
            };
            out.copy_from_slice(&payload);
            if let Some(c) = leg.crypto.as_mut() {
                match c.tx.protect_rtp(&mut buf[..], len) {
                    Ok(n) => len = n,
                    Err(e) => {
                        tracing::trace!(error = %e, "DTMF not protected; not sent");
                        continue;
                    }
                }
            }
            if let (Some(dest), Some(pkt)) = (leg.rtp_dest(), buf.get(..len)) {
                if let Err(e) = leg.rtp.send_to(pkt, dest) {
                    tracing::trace!(%dest, error = %e, "DTMF send failed");
                }
            }
        }
    }
}

/// Counts and (sparingly) logs a packet that failed SRTP/SRTCP checks.
fn srtp_rejected(
    c: &DirCounters,
    i: usize,
    src: SocketAddr,
    bytes: usize,
    e: SrtpError,
    what: &str,
) {
    let n = c.srtp_rejected.fetch_add(1, Ordering::Relaxed);
    if n.is_power_of_two() || n == 0 {
        tracing::info!(side = ?Side::from_idx(i), %src, bytes, error = %e, dropped = n + 1, "{what} packet rejected");
    }
}

/// The relay's SRTP scratch buffer, allocated on first use.
fn scratch(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.is_empty() {
        buf.resize(BUF_LEN + SRTP_OVERHEAD, 0);
    }
    buf
}

/// Copies `plain` into `scratch` and protects it there (SRTCP when `rtcp`); the packet to send.
fn protect<'s>(
    ctx: &mut SrtpContext,
    scratch: &'s mut [u8],
    plain: &[u8],
    rtcp: bool,
) -> Option<&'s [u8]> {
    let n = plain.len();
    scratch.get_mut(..n)?.copy_from_slice(plain);
    let out = if rtcp {
        ctx.protect_rtcp(scratch, n)
    } else {
        ctx.protect_rtp(scratch, n)
    };
    match out {
        Ok(m) => scratch.get(..m),
        Err(e) => {
            tracing::trace!(error = %e, "packet not protected; dropped");
            None
        }
    }
}

/// New SRTP keys for a leg: a context is rebuilt only for a key that changed, so the
/// rollover counter and replay window of an unchanged direction carry on.
fn update_crypto(leg: &mut Leg, keys: Option<&LegSrtp>) {
    let old = leg.media.srtp.as_ref();
    match (keys, leg.crypto.as_mut(), old) {
        (None, _, _) => leg.crypto = None,
        (Some(k), Some(c), Some(o)) if k.suite == o.suite => {
            if k.remote != o.remote {
                c.rx = SrtpContext::new(k.suite, &k.remote);
            }
            if k.local != o.local {
                c.tx = SrtpContext::new(k.suite, &k.local);
            }
        }
        (Some(k), _, _) => leg.crypto = Some(Box::new(LegCrypto::new(k))),
    }
}

fn pkt_len<B: AsRef<[u8]>>(rtp: &Rtp<B>) -> usize {
    rtp.as_bytes().len()
}
