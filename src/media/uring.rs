//! The relayed packets of one I/O-thread wake-up, sent together through `io_uring(7)`.
//!
//! A `sendto(2)` per relayed packet costs a system call each, and on loopback or a busy
//! machine each one that wakes the receiver can hand it the CPU when the call returns, so a
//! wake-up that relays a dozen packets pays up to a dozen switches back and forth. Queued
//! here instead, a wake-up's packets leave in one `io_uring_enter(2)`: one system call, and
//! the receivers woken run once it returns. Each send carries `MSG_DONTWAIT`, so that it
//! completes (or fails, and the packet is dropped, as a full socket buffer drops it with
//! `sendto`) inside that call, on the I/O thread: no kernel worker thread does the work, and
//! the queue's buffers are free again when the call returns.
//!
//! A send-only queue can also carry the I/O thread's `epoll` wait ([`SendQueue::wait_epoll`],
//! `IORING_OP_EPOLL_WAIT`): the packets queued leave in the call that waits for the next
//! wake-up.
//!
//! Where `io_uring` is not available (an old kernel, a seccomp policy, or
//! [`URING_ENV`]`=0`), every packet is sent at once with `sendto`, as before.
//!
//! A queue made by [`SendQueue::shared`] lends its ring to the thread's multishot receives
//! ([`super::multishot`]): the sends then go out with the thread's one `io_uring_enter` per
//! wake-up, which also waits for and reaps the datagrams received, and their completions are
//! reaped with the receives' ([`SendQueue::completed`]). A packet relayed from the receive
//! buffer it arrived in ([`SendQueue::lend`]) is sent from there: the buffer goes back to the
//! kernel once the send's completion is seen. Only packets built elsewhere (SRTP-protected
//! ones) are copied, into slots allocated as they are needed; a slot is reused only once its
//! completion has been seen.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{opcode, types, IoUring, Probe};
use mio::net::UdpSocket;
use socket2::SockAddr;

use super::relay::{Undo, BUF_LEN};

/// Packets queued before the queue is sent on its own (a wake-up at 1 000 calls relays
/// about 16; more only after a stall).
const SLOTS: usize = 64;
/// Room for a packet: the largest relayed one plus what SRTP adds.
const SLOT_LEN: usize = BUF_LEN + 16;

/// Copied packets in flight in a shared queue (sent, completion not reaped yet), at most;
/// beyond, a packet is sent at once. Allocated one by one as needed.
const SHARED_SLOTS: usize = 256;
/// Submission queue entries of a shared ring: sends and receive (re-)arms between two
/// `io_uring_enter`s; a full queue is submitted on its own.
const SHARED_SQ: u32 = 256;
/// Completion queue entries of a shared ring: a wake-up's datagrams (at most one per receive
/// buffer) and send completions (one per buffer sent from, or copy slot). A multishot receive
/// ends when the queue overflows, and is armed again. The queue is mapped and resident from
/// the start: 16 bytes an entry.
const SHARED_CQ: u32 = 4096;
/// Tag of a send's `user_data` in a shared ring (the low bits are its slot, or its receive
/// buffer with [`LENT_BIT`]).
pub(crate) const SEND_TAG: u64 = 1 << 56;
/// Marks the `user_data` of a send from a receive buffer.
const LENT_BIT: u64 = 1 << 40;
/// The bits of `user_data` that tell what an operation is.
pub(crate) const TAG_MASK: u64 = 0xFF << 56;

/// Environment variable choosing the relay's use of `io_uring`: `0` turns the ring off (every
/// packet is then sent with its own `sendto`, and received with `recvmmsg` after `epoll`);
/// `send` uses it only to send (`epoll` and `recvmmsg` receive); anything else, or unset,
/// also receives through it (multishot receives, [`super::multishot`]). A knob for
/// measuring, like `PASARELA_MEDIA_COALESCE_US`, not a setting.
pub(crate) const URING_ENV: &str = "PASARELA_MEDIA_URING";

/// How an I/O thread uses `io_uring` ([`URING_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UringMode {
    /// Not at all: `epoll`, `recvmmsg`, `sendto`.
    Off,
    /// Sends only: `epoll` and `recvmmsg` receive.
    Send,
    /// Sends and multishot receives in one ring (falls back to [`UringMode::Send`], then
    /// [`UringMode::Off`], where the kernel refuses).
    Full,
}

impl UringMode {
    /// The mode [`URING_ENV`] asks for.
    pub(crate) fn from_env() -> Self {
        // Multishot receive is not the default: its buffers (a ring of 256 receive buffers
        // and 512 send slots per thread, about 1.7 MB once touched) cost more than the held
        // calls themselves at a few hundred calls (27.3 against 18.8 KiB a held call at 300,
        // 1.22x idle 60 s after, against 1.10x), for ~15 % less relay CPU.
        match std::env::var(URING_ENV).ok().as_deref().map(str::trim) {
            Some("0") => UringMode::Off,
            Some("multishot") => UringMode::Full,
            _ => UringMode::Send,
        }
    }
}

/// One queued packet: its bytes, its destination, and what to undo if it is not sent.
struct Slot {
    buf: [u8; SLOT_LEN],
    dest: SockAddr,
    undo: Option<Undo>,
}

impl Slot {
    /// Copies `pkt` and `dest` into the slot and builds the send of them from `sock`, tagged
    /// `user_data`; `None` (nothing kept) when `pkt` does not fit.
    fn fill(
        &mut self,
        sock: &UdpSocket,
        pkt: &[u8],
        dest: SocketAddr,
        undo: Option<Undo>,
        user_data: u64,
    ) -> Option<io_uring::squeue::Entry> {
        self.buf.get_mut(..pkt.len())?.copy_from_slice(pkt);
        self.dest = SockAddr::from(dest);
        self.undo = undo;
        Some(
            opcode::Send::new(
                types::Fd(sock.as_raw_fd()),
                self.buf.as_ptr(),
                pkt.len() as u32,
            )
            .flags(libc::MSG_DONTWAIT)
            .dest_addr(self.dest.as_ptr().cast())
            .dest_addr_len(self.dest.len())
            .build()
            .user_data(user_data),
        )
    }
}

/// The packets a wake-up relays; sent by [`SendQueue::flush`].
pub(crate) struct SendQueue {
    /// `None`: each packet is sent at once.
    ring: Option<IoUring>,
    /// The queued packets' buffers, allocated with the first one; never moved while queued
    /// (the kernel reads them by address).
    slots: Vec<Slot>,
    queued: usize,
    /// Shared with the receives ([`SendQueue::shared`]): the slots free for a packet (the
    /// others await their completion), and how many completions are due.
    shared: Option<Shared>,
    /// The I/O thread's `epoll` wait, made through the ring (a send-only queue whose kernel
    /// has `IORING_OP_EPOLL_WAIT`; see [`SendQueue::wait_epoll`]). Declared after `ring`: the
    /// kernel writes into its events only while the ring is open.
    epoll: Option<RingEpoll>,
}

/// Events taken per `epoll` wait made through the ring.
pub(crate) const EPOLL_EVENTS: usize = 1024;
/// `user_data` of the epoll wait on a send-only ring (sends carry their slot, below
/// [`SLOTS`]).
const EPOLL_TAG: u64 = 1 << 62;
/// `user_data` of the cancellation of that wait.
const CANCEL_TAG: u64 = (1 << 62) | 1;

/// Environment variable turning off the `epoll` wait through the ring (`0`): the thread then
/// sleeps in `epoll_wait` and sends with an `io_uring_enter` of its own. A knob for
/// measuring, like `PASARELA_MEDIA_COALESCE_US`, not a setting.
pub(crate) const EPOLL_RING_ENV: &str = "PASARELA_MEDIA_EPOLL_RING";

/// An `epoll` wait made through a send-only ring.
struct RingEpoll {
    epfd: RawFd,
    /// Where the kernel writes the events; boxed, never moved while a wait is armed.
    events: Box<[libc::epoll_event; EPOLL_EVENTS]>,
    /// A wait is in the ring (submitted or queued), its completion not reaped yet.
    armed: bool,
    /// Events of the last completed wait, not yet handed out.
    ready: usize,
    /// The ring failed: the thread waits with `epoll_wait` again (the events stay allocated
    /// while a wait may be armed).
    off: bool,
}

struct Shared {
    /// Copy slots, allocated as needed (boxed: never moved while a send reads one, however
    /// the vector grows).
    #[allow(clippy::vec_box)]
    copies: Vec<Box<Slot>>,
    /// Copy slots free for a packet.
    free: Vec<usize>,
    in_flight: usize,
    /// The receive buffer of the datagram being relayed.
    lent: Option<Lent>,
    /// Destination and undo of the send from each receive buffer, by buffer; allocated with
    /// room for [`super::multishot::BUFFERS`] at first use and never grown past it, so an
    /// entry never moves while its send is in flight.
    from_buf: Vec<BufSend>,
}

/// A receive buffer lent to the queue while its datagram is relayed.
struct Lent {
    bid: u16,
    /// Addresses of the datagram's bytes (a packet sent from them lies within).
    start: usize,
    end: usize,
    /// A send from the buffer was queued: the buffer is given back on its completion.
    sent: bool,
}

/// A send from a receive buffer.
struct BufSend {
    dest: SockAddr,
    undo: Option<Undo>,
    busy: bool,
}

/// What a completion of a shared ring is to the queue ([`SendQueue::completed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// Not a send's.
    Other,
    /// A copied packet's send.
    Sent,
    /// The send from this receive buffer: it can be given back.
    Buffer(u16),
}

impl SendQueue {
    /// A queue whose ring also carries the thread's receives; `None` when the kernel gives no
    /// such ring. Sends complete only when reaped ([`SendQueue::completed`]).
    pub(crate) fn shared() -> Option<Self> {
        let r = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_cqsize(SHARED_CQ)
            .build(SHARED_SQ);
        let ring = match r {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %e, "io_uring not available; media is received with epoll");
                return None;
            }
        };
        Some(SendQueue {
            ring: Some(ring),
            slots: Vec::new(),
            queued: 0,
            shared: Some(Shared {
                copies: Vec::new(),
                free: Vec::new(),
                in_flight: 0,
                lent: None,
                from_buf: Vec::new(),
            }),
            epoll: None,
        })
    }

    /// The datagram about to be relayed lies in receive buffer `bid` at `pkt`: a packet sent
    /// from within those bytes before [`SendQueue::unlend`] is sent from there, not copied.
    pub(crate) fn lend(&mut self, bid: u16, pkt: &[u8]) {
        if let Some(sh) = self.shared.as_mut() {
            let start = pkt.as_ptr() as usize;
            sh.lent = Some(Lent {
                bid,
                start,
                end: start + pkt.len(),
                sent: false,
            });
        }
    }

    /// Ends [`SendQueue::lend`]: `true` when a send from the buffer was queued (the buffer
    /// comes back with its completion, [`Completion::Buffer`]); `false`: it can be given back
    /// now.
    pub(crate) fn unlend(&mut self) -> bool {
        self.shared
            .as_mut()
            .and_then(|sh| sh.lent.take())
            .is_some_and(|l| l.sent)
    }

    /// Gives back the memory of a shared queue with nothing in flight: its copy slots and its
    /// table of sends from receive buffers (allocated again as needed). `false` when sends
    /// are still in flight.
    pub(crate) fn release(&mut self) -> bool {
        let Some(sh) = self.shared.as_mut() else {
            return false;
        };
        if sh.in_flight > 0 {
            return false;
        }
        sh.copies = Vec::new();
        sh.free = Vec::new();
        sh.from_buf = Vec::new();
        true
    }

    /// The ring, for the receives of a shared queue.
    pub(crate) fn ring(&mut self) -> Option<&mut IoUring> {
        self.ring.as_mut()
    }

    /// Completions a shared queue's sends are yet to give (queued or in flight).
    pub(crate) fn pending(&self) -> usize {
        self.shared.as_ref().map_or(0, |s| s.in_flight)
    }

    /// Takes the completion of a shared queue's send (`user_data` tagged [`SEND_TAG`]):
    /// runs its undo when it failed and frees its slot, or tells which receive buffer it
    /// was sent from.
    pub(crate) fn completed(&mut self, user_data: u64, res: i32) -> Completion {
        if user_data & TAG_MASK != SEND_TAG {
            return Completion::Other;
        }
        let Some(sh) = self.shared.as_mut() else {
            return Completion::Other;
        };
        sh.in_flight = sh.in_flight.saturating_sub(1);
        let k = (user_data & !(TAG_MASK | LENT_BIT)) as usize;
        let (undo, done) = if user_data & LENT_BIT != 0 {
            let Some(e) = sh.from_buf.get_mut(k) else {
                return Completion::Sent;
            };
            e.busy = false;
            (e.undo.take(), Completion::Buffer(k as u16))
        } else {
            let Some(slot) = sh.copies.get_mut(k) else {
                return Completion::Sent;
            };
            sh.free.push(k);
            (slot.undo.take(), Completion::Sent)
        };
        if res < 0 {
            if let Some(u) = undo {
                u.undo();
            }
            tracing::trace!(error = %io::Error::from_raw_os_error(-res), "send failed; dropped");
        }
        done
    }

    /// A queue with a ring when `ring` and the kernel gives one, else sending each packet at
    /// once.
    pub(crate) fn with_ring(ring: bool) -> Self {
        SendQueue {
            ring: if ring { self::ring() } else { None },
            slots: Vec::new(),
            queued: 0,
            shared: None,
            epoll: None,
        }
    }

    /// Lets the thread wait on `epoll` instance `epfd` through the ring
    /// ([`SendQueue::wait_epoll`]) when the queue has a send-only ring, the kernel has
    /// `IORING_OP_EPOLL_WAIT` (Linux 6.15) and [`EPOLL_RING_ENV`] does not say `0`. Whether
    /// it does.
    pub(crate) fn wait_through_ring(&mut self, epfd: RawFd) -> bool {
        if self.shared.is_some() || std::env::var(EPOLL_RING_ENV).is_ok_and(|v| v.trim() == "0") {
            return false;
        }
        let Some(ring) = self.ring.as_ref() else {
            return false;
        };
        let mut probe = Probe::new();
        let supported = ring.submitter().register_probe(&mut probe).is_ok()
            && probe.is_supported(opcode::EpollWait::CODE);
        if supported {
            self.epoll = Some(RingEpoll {
                epfd,
                // SAFETY: epoll_event is plain old data; all zeroes is a valid value.
                events: Box::new(unsafe { std::mem::zeroed() }),
                armed: false,
                ready: 0,
                off: false,
            });
        }
        supported
    }

    /// Whether the thread waits through the ring ([`SendQueue::wait_through_ring`]).
    pub(crate) fn waits(&self) -> bool {
        self.epoll.as_ref().is_some_and(|e| !e.off)
    }

    /// Stops waiting through the ring (it failed).
    fn stop_waiting(&mut self) {
        if let Some(ep) = self.epoll.as_mut() {
            ep.off = true;
        }
    }

    /// Sends every queued packet and waits, in the same system call, up to `timeout` for
    /// the `epoll` instance to have events: a wake-up's packets leave with the thread's next
    /// wait, and a thread that relayed packets goes to sleep without returning to user space
    /// first (where the phone its sends woke could preempt it). The events, none when the
    /// wait timed out (or was interrupted). An error means the wait through the ring failed:
    /// the caller goes back to `epoll_wait` (the packets queued are sent or dropped).
    pub(crate) fn wait_epoll(&mut self, timeout: Duration) -> io::Result<&[libc::epoll_event]> {
        let (Some(ring), Some(ep)) = (self.ring.as_mut(), self.epoll.as_mut().filter(|e| !e.off))
        else {
            return Err(io::Error::other("no epoll wait through the ring"));
        };
        if ep.ready == 0 && !ep.armed {
            let entry = opcode::EpollWait::new(
                types::Fd(ep.epfd),
                ep.events.as_mut_ptr().cast(),
                EPOLL_EVENTS as u32,
            )
            .build()
            .user_data(EPOLL_TAG);
            // SAFETY: the entry points into `ep.events`, boxed and kept (with the epoll fd
            // the thread's `Poll` holds) until its completion is reaped or the ring is gone.
            if !unsafe { push(ring, &entry) } {
                return Err(io::Error::other("epoll wait not queued"));
            }
            ep.armed = true;
        }
        let want = if ep.ready > 0 { 0 } else { self.queued + 1 };
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        let r = ring.submitter().submit_with_args(want, &args);
        let failed = match r {
            Ok(_) => None,
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => None,
                _ => Some(e),
            },
        };
        // The sends completed within the call (MSG_DONTWAIT); reap them with the wait's.
        self.reap_sends();
        if let Some(e) = failed {
            self.stop_waiting();
            return Err(e);
        }
        let Some(ep) = self.epoll.as_mut() else {
            return Ok(&[]);
        };
        let n = std::mem::take(&mut ep.ready);
        Ok(ep.events.get(..n).unwrap_or_default())
    }

    /// Takes the completions in a send-only ring: failed sends run their undo; the epoll
    /// wait's leaves its events ready. Sends still uncompleted (none, with `MSG_DONTWAIT`)
    /// are waited for, so that every slot is free again.
    fn reap_sends(&mut self) {
        let want = self.queued;
        let mut done = 0;
        while let Some(ring) = self.ring.as_mut() {
            for cqe in ring.completion() {
                let (ud, res) = (cqe.user_data(), cqe.result());
                if ud == EPOLL_TAG {
                    if let Some(ep) = self.epoll.as_mut() {
                        ep.armed = false;
                        ep.ready = usize::try_from(res).unwrap_or(0).min(EPOLL_EVENTS);
                    }
                    if res < 0 && res != -libc::ECANCELED {
                        tracing::warn!(error = %io::Error::from_raw_os_error(-res), "epoll wait through io_uring failed");
                    }
                    continue;
                }
                if ud == CANCEL_TAG {
                    continue;
                }
                done += 1;
                if res < 0 {
                    let slot = usize::try_from(ud).ok().and_then(|k| self.slots.get_mut(k));
                    if let Some(u) = slot.and_then(|s| s.undo.take()) {
                        u.undo();
                    }
                    tracing::trace!(error = %io::Error::from_raw_os_error(-res), "send failed; dropped");
                }
            }
            if done >= want {
                break;
            }
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "io_uring wait for sends failed; media packets are sent one by one from now on");
                    self.ring = None;
                    self.stop_waiting();
                    break;
                }
            }
        }
        for s in self.slots.iter_mut().take(want) {
            s.undo = None;
        }
        self.queued = 0;
    }

    /// Whether packets are queued for one system call (rather than each sent at once).
    pub(crate) fn batched(&self) -> bool {
        self.ring.is_some()
    }

    /// Sends `pkt` from `sock` to `dest`, now or at the next [`SendQueue::flush`] (the
    /// socket must stay open until then). A packet that cannot be sent is dropped and its
    /// `undo` run.
    pub(crate) fn send(
        &mut self,
        sock: &UdpSocket,
        pkt: &[u8],
        dest: SocketAddr,
        undo: Option<Undo>,
    ) {
        if self.shared.is_some() {
            self.send_shared(sock, pkt, dest, undo);
            return;
        }
        if self.ring.is_none() || pkt.len() > SLOT_LEN {
            if let Err(e) = sock.send_to(pkt, dest) {
                tracing::trace!(%dest, error = %e, "send failed; dropped");
                if let Some(u) = undo {
                    u.undo();
                }
            }
            return;
        }
        if self.queued == SLOTS {
            self.flush();
        }
        let k = self.queued;
        if self.slots.capacity() == 0 {
            // Never grown past this, so a queued slot never moves.
            self.slots.reserve_exact(SLOTS);
        }
        if k == self.slots.len() {
            self.slots.push(Slot {
                buf: [0; SLOT_LEN],
                dest: SockAddr::from(dest),
                undo: None,
            });
        }
        let Some(slot) = self.slots.get_mut(k) else {
            return;
        };
        let Some(entry) = slot.fill(sock, pkt, dest, undo, k as u64) else {
            return;
        };
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        // SAFETY: the entry points into `slots[k]`, which is neither moved (the vector holds
        // at most SLOTS, its capacity from the start) nor reused until `flush` has reaped
        // its completion; the socket stays open until then (the caller's promise).
        let pushed = unsafe { ring.submission().push(&entry) };
        if pushed.is_err() {
            // The submission queue holds SLOTS entries; it cannot be full here.
            if let Some(u) = slot.undo.take() {
                u.undo();
            }
            return;
        }
        self.queued += 1;
    }

    /// [`SendQueue::send`] for a shared queue: a packet within the lent receive buffer is
    /// sent from it; another takes a free copy slot (one more is allocated while there are
    /// fewer than [`SHARED_SLOTS`]). Either leaves with the next submission; without a slot
    /// (or too large for one) the packet leaves at once.
    fn send_shared(&mut self, sock: &UdpSocket, pkt: &[u8], dest: SocketAddr, undo: Option<Undo>) {
        let (Some(sh), Some(ring)) = (self.shared.as_mut(), self.ring.as_mut()) else {
            return;
        };
        if let Some(bid) = sh.lendable(pkt) {
            let Some(e) = sh.from_buf.get_mut(usize::from(bid)) else {
                return;
            };
            e.dest = SockAddr::from(dest);
            e.undo = undo;
            e.busy = true;
            let entry =
                opcode::Send::new(types::Fd(sock.as_raw_fd()), pkt.as_ptr(), pkt.len() as u32)
                    .flags(libc::MSG_DONTWAIT)
                    .dest_addr(e.dest.as_ptr().cast())
                    .dest_addr_len(e.dest.len())
                    .build()
                    .user_data(SEND_TAG | LENT_BIT | u64::from(bid));
            // SAFETY: the entry points into the lent receive buffer, which is given back to
            // the kernel (and written again) only once `completed` has seen this send's
            // completion (`unlend` says so to the receive side), and into `from_buf[bid]`,
            // which neither moves (never grown past its first capacity) nor is reused until
            // then; the socket stays open until the entry is submitted (the caller's promise).
            if unsafe { push(ring, &entry) } {
                self.queued += 1;
                sh.in_flight += 1;
                if let Some(l) = sh.lent.as_mut() {
                    l.sent = true;
                }
            } else {
                e.busy = false;
                if let Some(u) = e.undo.take() {
                    u.undo();
                }
            }
            return;
        }
        let k = match sh.free.pop() {
            Some(k) if pkt.len() <= SLOT_LEN => Some(k),
            Some(k) => {
                sh.free.push(k);
                None
            }
            None if pkt.len() <= SLOT_LEN && sh.copies.len() < SHARED_SLOTS => {
                sh.copies.push(Box::new(Slot {
                    buf: [0; SLOT_LEN],
                    dest: SockAddr::from(dest),
                    undo: None,
                }));
                Some(sh.copies.len() - 1)
            }
            None => None,
        };
        let Some(k) = k else {
            // What is queued leaves first, so that a stream stays in order.
            self.flush();
            if let Err(e) = sock.send_to(pkt, dest) {
                tracing::trace!(%dest, error = %e, "send failed; dropped");
                if let Some(u) = undo {
                    u.undo();
                }
            }
            return;
        };
        let Some(slot) = sh.copies.get_mut(k) else {
            return;
        };
        let Some(entry) = slot.fill(sock, pkt, dest, undo, SEND_TAG | k as u64) else {
            return;
        };
        // SAFETY: the entry points into `copies[k]`, boxed (it does not move when the vector
        // grows) and not reused until `completed` has seen its completion; the socket stays
        // open until the entry is submitted (the caller's promise: `flush` before a socket
        // closes; once submitted, the kernel holds the socket itself).
        if unsafe { push(ring, &entry) } {
            self.queued += 1;
            sh.in_flight += 1;
        } else {
            // The submission failed: the packet is lost.
            if let Some(u) = slot.undo.take() {
                u.undo();
            }
            sh.free.push(k);
        }
    }

    /// Sends every queued packet in one system call and waits for them to complete (they
    /// complete within it). Must run before a socket with queued packets is closed. A shared
    /// queue only submits them: their completions are reaped with the receives'.
    pub(crate) fn flush(&mut self) {
        if self.shared.is_some() {
            self.queued = 0;
            if let Some(ring) = self.ring.as_mut() {
                if ring.submission().is_empty() {
                    return;
                }
                if let Err(e) = ring.submit() {
                    tracing::warn!(error = %e, "io_uring submission failed");
                }
            }
            return;
        }
        if self.queued == 0 {
            return;
        }
        let Some(ring) = self.ring.as_mut() else {
            self.queued = 0;
            return;
        };
        let submitted = loop {
            match ring.submit() {
                Ok(_) => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = submitted {
            // Packets the kernel did not take are lost; later ones are sent one by one
            // (dropping the ring also drops what it still held).
            tracing::warn!(error = %e, "io_uring submission failed; media packets are sent one by one from now on");
            self.ring = None;
            self.stop_waiting();
            for s in self.slots.iter_mut().take(self.queued) {
                s.undo = None;
            }
            self.queued = 0;
            return;
        }
        self.reap_sends();
    }
}

impl Drop for SendQueue {
    /// Cancels an `epoll` wait still in the ring, so that the kernel writes into its events
    /// no more once they are freed.
    fn drop(&mut self) {
        let Some(ep) = self.epoll.take_if(|e| e.armed) else {
            return;
        };
        let Some(ring) = self.ring.as_mut() else {
            // The ring went away with the wait in it: its events are not ours to free.
            std::mem::forget(ep.events);
            return;
        };
        let entry = opcode::AsyncCancel::new(EPOLL_TAG)
            .build()
            .user_data(CANCEL_TAG);
        // SAFETY: a cancellation points to no memory of ours.
        let mut ended = false;
        if unsafe { push(ring, &entry) } {
            let ts = Timespec::from(Duration::from_millis(100));
            let args = SubmitArgs::new().timespec(&ts);
            let _ = ring.submitter().submit_with_args(2, &args);
            ended = ring.completion().any(|c| c.user_data() == EPOLL_TAG);
        }
        if ended {
            drop(ep);
        } else {
            // Still in the ring: its events are not ours to free.
            std::mem::forget(ep.events);
        }
    }
}

impl Shared {
    /// The lent receive buffer when `pkt` lies within its datagram and no send from it is
    /// queued yet (its entry of `from_buf` made ready); `None`: `pkt` must be copied.
    fn lendable(&mut self, pkt: &[u8]) -> Option<u16> {
        let l = self.lent.as_ref()?;
        let start = pkt.as_ptr() as usize;
        if l.sent || start < l.start || start + pkt.len() > l.end {
            return None;
        }
        let bid = usize::from(l.bid);
        if self.from_buf.capacity() == 0 {
            self.from_buf
                .reserve_exact(usize::from(super::multishot::BUFFERS));
        }
        if bid >= self.from_buf.capacity() {
            return None;
        }
        while self.from_buf.len() <= bid {
            self.from_buf.push(BufSend {
                dest: SockAddr::from(SocketAddr::from(([0, 0, 0, 0], 0))),
                undo: None,
                busy: false,
            });
        }
        match self.from_buf.get(bid) {
            Some(e) if !e.busy => Some(l.bid),
            _ => None,
        }
    }
}

/// Pushes `entry` on `ring`'s submission queue, first submitting what the queue holds when it
/// is full. `false` when the entry could not be queued.
///
/// # Safety
///
/// What the entry points to must stay valid until its completion (see
/// [`io_uring::squeue::SubmissionQueue::push`]).
pub(crate) unsafe fn push(ring: &mut IoUring, entry: &io_uring::squeue::Entry) -> bool {
    // SAFETY: the caller's promise.
    if unsafe { ring.submission().push(entry) }.is_ok() {
        return true;
    }
    if let Err(e) = ring.submit() {
        tracing::warn!(error = %e, "io_uring submission failed");
    }
    // SAFETY: the caller's promise.
    unsafe { ring.submission().push(entry) }.is_ok()
}

/// A ring for one I/O thread, or `None` when the kernel has none to give.
fn ring() -> Option<IoUring> {
    let r = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .build(SLOTS as u32);
    match r {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::info!(error = %e, "io_uring not available; media packets are sent one by one");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (std::net::UdpSocket, UdpSocket, SocketAddr) {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let tx = UdpSocket::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let to = rx.local_addr().expect("addr");
        (rx, tx, to)
    }

    /// What is queued on `rx` now, concatenated.
    fn take(rx: &std::net::UdpSocket) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = rx.recv(&mut buf) {
            got.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        got
    }

    /// What reaches `rx` until `len` bytes have (a loaded machine can deliver late), and
    /// anything more already there.
    fn arrived(rx: &std::net::UdpSocket, len: usize) -> Vec<u8> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got = take(rx);
        while got.len() < len && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
            got.extend(take(rx));
        }
        got
    }

    /// Whether nothing reaches `rx` for 20 ms.
    fn nothing_arrives(rx: &std::net::UdpSocket) -> bool {
        std::thread::sleep(std::time::Duration::from_millis(20));
        take(rx).is_empty()
    }

    #[test]
    fn queued_packets_leave_together_in_order_on_flush() {
        let (rx, tx, to) = pair();
        let mut q = SendQueue::with_ring(true);
        // This kernel has io_uring (the relay's measurements rely on it); a queue without one
        // would send each packet at once and fail the first check below.
        assert!(q.batched(), "no io_uring on this machine");
        for k in 0..3u8 {
            q.send(&tx, &[k; 4], to, None);
        }
        assert!(nothing_arrives(&rx), "sent before the flush");
        q.flush();
        assert_eq!(arrived(&rx, 12), [[0u8; 4], [1; 4], [2; 4]].concat());
        // More than a queue's worth: the queue sends itself when full.
        for k in 0..SLOTS as u32 + 3 {
            q.send(&tx, &k.to_be_bytes(), to, None);
        }
        q.flush();
        let want: Vec<u8> = (0..SLOTS as u32 + 3).flat_map(u32::to_be_bytes).collect();
        let got = arrived(&rx, want.len());
        assert_eq!(got, want);
    }

    #[test]
    fn packets_queued_leave_with_the_epoll_wait_through_the_ring() {
        let (rx, tx, to) = pair();
        let poll = mio::Poll::new().expect("poll");
        let fd = rx.as_raw_fd();
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&fd),
                mio::Token(7),
                mio::Interest::READABLE,
            )
            .expect("register");
        let mut q = SendQueue::with_ring(true);
        if !q.wait_through_ring(poll.as_raw_fd()) {
            // A kernel before 6.15: the thread keeps epoll_wait.
            eprintln!("no IORING_OP_EPOLL_WAIT here; not tested");
            return;
        }
        assert!(q.waits());
        // Nothing queued, nothing readable: the wait times out empty, and stays armed.
        let short = std::time::Duration::from_millis(10);
        assert!(q.wait_epoll(short).expect("wait").is_empty());
        assert!(nothing_arrives(&rx));
        // Queued packets are not sent before the wait, and leave with it: the socket they
        // reach is then readable, which the same wait reports.
        q.send(&tx, &[1; 4], to, None);
        q.send(&tx, &[2; 4], to, None);
        assert!(nothing_arrives(&rx), "sent before the wait");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = false;
        while !seen && std::time::Instant::now() < deadline {
            let evs = q
                .wait_epoll(std::time::Duration::from_secs(1))
                .expect("wait");
            seen = evs.iter().any(|e| e.u64 == 7);
        }
        assert!(
            seen,
            "the wait did not report the socket the packets reached"
        );
        assert_eq!(arrived(&rx, 8), [[1u8; 4], [2; 4]].concat());
        // A flush sends at once, without waiting.
        q.send(&tx, &[3; 4], to, None);
        q.flush();
        assert_eq!(arrived(&rx, 4), [3; 4]);
        // Dropped with a wait armed: it is cancelled first.
        assert!(q
            .wait_epoll(short)
            .expect("wait")
            .iter()
            .all(|e| e.u64 == 7));
        drop(q);
    }

    #[test]
    fn without_a_ring_each_packet_leaves_at_once() {
        let (rx, tx, to) = pair();
        let mut q = SendQueue::with_ring(false);
        assert!(!q.batched());
        q.send(&tx, &[7; 4], to, None);
        assert_eq!(arrived(&rx, 4), [7; 4]);
        q.flush();
        assert!(nothing_arrives(&rx));
    }
}
