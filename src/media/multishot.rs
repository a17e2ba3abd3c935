//! Media received through `io_uring(7)` multishot receives, on the ring that also sends
//! ([`super::uring::SendQueue::shared`]).
//!
//! With `epoll`, a wake-up costs one `epoll_wait` plus one `recvmmsg` per readable socket,
//! and at a few hundred calls each socket usually holds a single datagram: a system call per
//! packet. Here each socket has one `IORING_OP_RECVMSG` in multishot mode armed on the ring:
//! the kernel places every datagram it receives in a buffer it picks from a ring of provided
//! buffers and posts a completion, so the thread's one `io_uring_enter` per wake-up submits
//! the packets relayed last time, waits, and finds every datagram of every socket already
//! received. The control channel's eventfd is read through the ring too.
//!
//! Each completion names its socket by a token (`slot * 4 + socket`, as the `epoll` path) and
//! the generation of the receive that produced it: a socket closed (its relay removed, or its
//! RTCP socket closed once RTCP multiplexing was agreed) has its receive cancelled and its
//! generation forgotten, so a completion still on its way is recognised as stale and only
//! gives its buffer back. A receive that ends (no `IORING_CQE_F_MORE`: the buffers ran out
//! under a burst, the completion queue overflowed, an ICMP error) is armed again by the
//! I/O thread once the wake-up's buffers are back.
//!
//! Memory: the buffers are one anonymous mapping of [`BUFFERS`] buffers, of which only the
//! pages the kernel has written into are resident. At first [`FIRST_BUFFERS`] of them
//! circulate (the kernel takes them in ring order, so every buffer in circulation is soon
//! touched); a receive that ends for want of a buffer (`ENOBUFS`) doubles the number, up to
//! [`BUFFERS`]. A packet is relayed from the buffer it arrived in (the buffer returns to the
//! ring when its send completes), so the ring needs no copy of it. A thread left without
//! relays, and so without a receive armed, gives the buffers' pages back
//! ([`Receiver::release`], `MADV_DONTNEED`) and circulates [`FIRST_BUFFERS`] again.
//!
//! Multishot `recvmsg` needs Linux 6.0, provided buffer rings 5.19: [`Receiver::new`]
//! registers the ring and arms a multishot receive on a socket of its own, which such a kernel
//! refuses at once; the I/O thread then receives with `epoll` ([`SetupError`]).

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, IoUring};

use super::mmsg::{sockaddr, CONTROL_WORDS};
use super::relay::BUF_LEN;
use super::uring::{push, TAG_MASK};

/// Tag of a receive's `user_data`: bits 32..56 hold its generation, the low 32 its token.
pub(crate) const RECV_TAG: u64 = 2 << 56;
/// Tag of the control eventfd's read.
pub(crate) const WAKE_TAG: u64 = 3 << 56;
/// Tag of a cancellation (its own completion says nothing the thread needs).
const CANCEL_TAG: u64 = 4 << 56;
/// Tag of the receive [`Receiver::new`] arms to learn whether the kernel has multishot receive.
const PROBE_TAG: u64 = 5 << 56;
/// Generations wrap within these bits (0 is never used: "not armed").
const GEN_MASK: u32 = 0xFF_FFFF;
/// Entries of the buffer ring: the most buffers that circulate. A burst of this many
/// datagrams (over all sockets) between two wake-ups fits; beyond, receives end with
/// `ENOBUFS` (the datagrams wait in their sockets) and are armed again. A power of two, as
/// the kernel wants.
pub(crate) const BUFFERS: u16 = 1024;
/// Buffers circulating at first and again after the thread went idle: a wake-up at 500 calls
/// a thread finds a few datagrams; a stall longer than this many takes ends receives
/// (`ENOBUFS`), which doubles the number. On a starved machine (load 10 on two cores) 32 at
/// first and at most 256 made every socket's receive end again and again: the re-arms ate
/// the thread and half the packets of 500 calls were never relayed.
pub(crate) const FIRST_BUFFERS: u16 = 128;
/// The buffer group of the provided buffers.
const GROUP: u16 = 0;
/// Room for the source address in a buffer (a `sockaddr_in6`, rounded up to 8 bytes).
const NAME_LEN: usize = size_of::<libc::sockaddr_in6>().next_multiple_of(8);
/// Room for the control messages (the receive time) in a buffer.
const CONTROL_LEN: usize = CONTROL_WORDS * size_of::<u64>();
/// Size of the kernel's `struct io_uring_recvmsg_out` (four `u32`s) that opens a buffer.
const RECVMSG_OUT: usize = 16;
/// Where the datagram starts in a buffer: the kernel's `io_uring_recvmsg_out` header, then
/// the address and control fields of the sizes the `msghdr` gives.
const PAYLOAD_AT: usize = RECVMSG_OUT + NAME_LEN + CONTROL_LEN;
/// One provided buffer.
const BUF_SIZE: usize = PAYLOAD_AT + BUF_LEN;
/// Bytes of the buffers' mapping.
const BUFS_LEN: usize = BUFFERS as usize * BUF_SIZE;
/// Bytes of the buffer ring's mapping.
const RING_LEN: usize = BUFFERS as usize * size_of::<BufRingEntry>();
/// How long [`Receiver::new`] waits for its probe receive to be cancelled.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Why a thread cannot receive through its ring; it then receives with `epoll`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error("no io_uring ring: {0}")]
    Ring(io::Error),
    #[error("no provided buffer rings (Linux 5.19 and later): {0}")]
    BufRing(io::Error),
    #[error("no multishot recvmsg (Linux 6.0 and later): {0}")]
    Multishot(io::Error),
    #[error("io_uring receive setup failed: {0}")]
    Other(io::Error),
}

/// What the probe's receive completion (`res`, `flags`) says of the kernel's multishot
/// `recvmsg`: armed and then cancelled (or, should a datagram have come, received with more
/// to come) means it works; refused (`EINVAL`: the flag is unknown before 6.0) means not.
pub(crate) fn probe_verdict(res: i32, flags: u32) -> Result<(), SetupError> {
    if res == -libc::ECANCELED || (res >= 0 && cqueue::more(flags)) {
        return Ok(());
    }
    let e = if res < 0 {
        io::Error::from_raw_os_error(-res)
    } else {
        io::Error::other("the probe receive ended at once")
    };
    Err(SetupError::Multishot(e))
}

/// What a failed buffer ring registration says: `EINVAL` (an unknown register opcode, before
/// 5.19) or `ENOSYS`/`EOPNOTSUPP` mean the kernel has no provided buffer rings; anything else
/// (no memory, a locked memory limit) is another failure. Either way media is received with
/// `epoll`.
pub(crate) fn buf_ring_refused(e: io::Error) -> SetupError {
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => SetupError::BufRing(e),
        _ => SetupError::Other(e),
    }
}

/// Where a provided buffer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// Neither in the ring nor handed out (not circulating).
    Spare,
    /// In the ring: the kernel may take it.
    Ring,
    /// Taken by the kernel for a datagram, not given back yet (being relayed, or sent from).
    Out,
}

/// Memory mapped anonymously, unmapped on drop.
struct Mapping {
    at: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping; no memory of ours is touched.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        match NonNull::new(mem.cast::<u8>()) {
            Some(at) => Ok(Mapping { at, len }),
            None => Err(io::Error::other("mmap gave a null mapping")),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of that length; its owner makes sure nothing
        // (the kernel through a ring) still uses it.
        unsafe { libc::munmap(self.at.as_ptr().cast(), self.len) };
    }
}

/// The receive side of one I/O thread's ring: its provided buffers, the `msghdr` template of
/// its receives and the read of its control eventfd.
pub(crate) struct Receiver {
    /// The buffer ring the kernel takes buffers from (page aligned, as it must be).
    ring: Mapping,
    /// Our tail of `ring`: buffers given back are published up to it.
    tail: u16,
    /// The buffers themselves, [`BUF_SIZE`] each.
    bufs: Mapping,
    /// Where each buffer is.
    place: Box<[Place; BUFFERS as usize]>,
    /// Buffers `0..circulating` go back to the ring when given back; the others are kept out.
    circulating: u16,
    /// Buffers handed out and not given back.
    out: usize,
    /// Whether the kernel may have written into the buffers since the last release.
    touched: bool,
    /// What every receive is told of the address and control room (the kernel reads it).
    msg: Box<libc::msghdr>,
    wake_fd: RawFd,
    /// Where the eventfd's counter is read to.
    wake_buf: Box<u64>,
    next_gen: u32,
}

/// One receive completion, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Recv {
    /// `slot * 4 + socket`.
    pub(crate) token: usize,
    pub(crate) generation: u32,
    /// The buffer the datagram is in (to be given back with [`Receiver::give_back`]).
    pub(crate) buffer: Option<u16>,
    /// Bytes of the buffer used, or the error (negative errno).
    pub(crate) res: i32,
    /// `false`: the receive ended; it must be armed again to receive more.
    pub(crate) more: bool,
}

impl Receiver {
    /// Registers the provided buffers with `ring`, checks that the kernel takes a multishot
    /// receive, and arms the read of `wake_fd`.
    pub(crate) fn new(ring: &mut IoUring, wake_fd: RawFd) -> Result<Self, SetupError> {
        let entries = Mapping::new(RING_LEN).map_err(SetupError::Other)?;
        let bufs = Mapping::new(BUFS_LEN).map_err(SetupError::Other)?;
        // SAFETY: zeroed (anonymous) memory of BUFFERS entries, page aligned, unmapped only on
        // drop, after the ring (declared before this receiver in the I/O thread) is gone.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries.at.as_ptr() as u64,
                BUFFERS,
                GROUP,
                0,
            )
        }
        .map_err(buf_ring_refused)?;
        // SAFETY: msghdr is plain old data; all zeroes is a valid value.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        msg.msg_namelen = NAME_LEN as _;
        msg.msg_controllen = CONTROL_LEN as _;
        let mut r = Receiver {
            ring: entries,
            tail: 0,
            bufs,
            place: Box::new([Place::Spare; BUFFERS as usize]),
            circulating: FIRST_BUFFERS,
            out: 0,
            touched: false,
            msg,
            wake_fd,
            wake_buf: Box::new(0),
            next_gen: 0,
        };
        for bid in 0..FIRST_BUFFERS {
            r.publish(bid);
        }
        let ready = r.probe(ring).and_then(|()| {
            r.arm_wake(ring).then_some(()).ok_or_else(|| {
                SetupError::Other(io::Error::other("control eventfd read not queued"))
            })
        });
        if let Err(e) = ready {
            // The kernel lets go of the buffers before their mappings go.
            let _ = ring.submitter().unregister_buf_ring(GROUP);
            return Err(e);
        }
        Ok(r)
    }

    /// Arms a multishot receive on a socket of its own (unbound: nothing arrives) and cancels
    /// it: a kernel without multishot `recvmsg` refuses it at once.
    fn probe(&mut self, ring: &mut IoUring) -> Result<(), SetupError> {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")
            .or_else(|_| std::net::UdpSocket::bind("[::]:0"))
            .map_err(SetupError::Other)?;
        let recv = opcode::RecvMsgMulti::new(Fd(sock.as_raw_fd()), &*self.msg, GROUP)
            .build()
            .user_data(PROBE_TAG);
        let cancel = opcode::AsyncCancel::new(PROBE_TAG)
            .build()
            .user_data(CANCEL_TAG);
        // SAFETY: the receive points to `self.msg`, boxed and kept as long as the ring; the
        // socket stays open until its receive has ended (waited for below) or the ring is gone.
        if !unsafe { push(ring, &recv) } {
            return Err(SetupError::Other(io::Error::other("probe not queued")));
        }
        ring.submit().map_err(SetupError::Other)?;
        // SAFETY: the entry points to nothing.
        if !unsafe { push(ring, &cancel) } {
            return Err(SetupError::Other(io::Error::other("probe not queued")));
        }
        let deadline = std::time::Instant::now() + PROBE_WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(SetupError::Multishot(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the probe receive did not end",
                )));
            }
            Self::wait(ring, 1, left).map_err(SetupError::Other)?;
            let mut verdict = None;
            for c in ring.completion() {
                if c.user_data() == PROBE_TAG && !cqueue::more(c.flags()) {
                    verdict = Some(probe_verdict(c.result(), c.flags()));
                }
            }
            if let Some(v) = verdict {
                // The cancellation's own completion, if still to come, is ignored.
                return v;
            }
        }
    }

    /// Queues a multishot receive on `fd` for `token`; its generation, or `None` when it
    /// could not be queued.
    pub(crate) fn arm(&mut self, ring: &mut IoUring, fd: RawFd, token: usize) -> Option<u32> {
        let token = u32::try_from(token).ok()?;
        self.next_gen = (self.next_gen + 1) & GEN_MASK;
        if self.next_gen == 0 {
            self.next_gen = 1;
        }
        let generation = self.next_gen;
        let entry = opcode::RecvMsgMulti::new(Fd(fd), &*self.msg, GROUP)
            .build()
            .user_data(user_data(token, generation));
        // SAFETY: the entry points to `self.msg`, boxed and kept as long as the ring.
        let armed = unsafe { push(ring, &entry) };
        self.touched |= armed;
        armed.then_some(generation)
    }

    /// Queues the cancellation of the receive `generation` of `token`.
    pub(crate) fn cancel(&mut self, ring: &mut IoUring, token: usize, generation: u32) {
        let Ok(token) = u32::try_from(token) else {
            return;
        };
        let entry = opcode::AsyncCancel::new(user_data(token, generation))
            .build()
            .user_data(CANCEL_TAG);
        // SAFETY: the entry points to nothing.
        if !unsafe { push(ring, &entry) } {
            tracing::warn!("receive cancellation not queued; the socket lingers until it errs");
        }
    }

    /// Queues the read of the control eventfd.
    pub(crate) fn arm_wake(&mut self, ring: &mut IoUring) -> bool {
        let entry = opcode::Read::new(
            Fd(self.wake_fd),
            (&mut *self.wake_buf as *mut u64).cast(),
            size_of::<u64>() as u32,
        )
        .build()
        .user_data(WAKE_TAG);
        // SAFETY: `wake_buf` is boxed and kept as long as the ring; the eventfd is the I/O
        // thread's, open as long as it runs.
        unsafe { push(ring, &entry) }
    }

    /// Submits what is queued and waits until `want` completions are there, or `timeout`.
    pub(crate) fn wait(ring: &mut IoUring, want: usize, timeout: Duration) -> io::Result<()> {
        let ts = Timespec::from(timeout);
        let args = SubmitArgs::new().timespec(&ts);
        match ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e) => match e.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN) => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Moves up to `max` completions from `ring` to `into`.
    pub(crate) fn reap(ring: &mut IoUring, into: &mut Vec<cqueue::Entry>, max: usize) {
        into.extend(ring.completion().take(max));
    }

    /// The receive a completion's `user_data` and `flags` tell of; `None`: not a receive's.
    pub(crate) fn decode(user_data: u64, res: i32, flags: u32) -> Option<Recv> {
        if user_data & TAG_MASK != RECV_TAG {
            return None;
        }
        Some(Recv {
            token: (user_data & 0xFFFF_FFFF) as usize,
            generation: ((user_data >> 32) as u32) & GEN_MASK,
            buffer: cqueue::buffer_select(flags),
            res,
            more: cqueue::more(flags),
        })
    }

    /// Notes that the kernel handed out buffer `bid` (a completion names it): it stays out of
    /// the ring until [`Receiver::give_back`]. `false` for a buffer that is not ours or not
    /// in the ring (nothing to read in it, nothing to give back).
    pub(crate) fn took(&mut self, bid: u16) -> bool {
        match self.place.get_mut(usize::from(bid)) {
            Some(p @ Place::Ring) => {
                *p = Place::Out;
                self.out += 1;
                true
            }
            _ => false,
        }
    }

    /// The datagram of a receive that filled `len` bytes of buffer `bid` (taken, see
    /// [`Receiver::took`]): its bytes, its source and its kernel receive time
    /// ([`super::mmsg::realtime_ns`] clock). `None` for a buffer not out, a malformed buffer
    /// or an address family other than IPv4/IPv6.
    pub(crate) fn datagram(
        &mut self,
        bid: u16,
        len: usize,
    ) -> Option<(&mut [u8], SocketAddr, Option<u64>)> {
        if self.place.get(usize::from(bid)) != Some(&Place::Out) {
            return None;
        }
        let start = usize::from(bid).checked_mul(BUF_SIZE)?;
        // SAFETY: buffer `bid` lies within the mapping (bid < BUFFERS) and is out: the kernel
        // wrote it before posting the completion and will not touch it until it is given back;
        // the slice borrows `self` mutably, so no other slice of it lives.
        let buf: &mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(self.bufs.at.as_ptr().add(start), BUF_SIZE) };
        let used = buf.get(..len.min(BUF_SIZE))?;
        let out = RecvMsgOut::parse(used, &self.msg).ok()?;
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        let name = out.name_data();
        let n = name.len().min(NAME_LEN);
        // SAFETY: at most NAME_LEN bytes into a sockaddr_storage, which is larger.
        unsafe {
            std::ptr::copy_nonoverlapping(
                name.as_ptr(),
                (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(),
                n,
            )
        };
        let src = sockaddr(&ss)?;
        let stamp = super::mmsg::control_timestamp(out.control_data());
        let payload = out.payload_data().len();
        let pkt = buf.get_mut(PAYLOAD_AT..PAYLOAD_AT.checked_add(payload)?)?;
        Some((pkt, src, (stamp != 0).then_some(stamp)))
    }

    /// Gives buffer `bid` (taken) back: to the kernel while it circulates, else kept aside.
    pub(crate) fn give_back(&mut self, bid: u16) {
        if self.place.get(usize::from(bid)) != Some(&Place::Out) {
            return;
        }
        self.out = self.out.saturating_sub(1);
        if bid < self.circulating {
            self.publish(bid);
        } else if let Some(p) = self.place.get_mut(usize::from(bid)) {
            *p = Place::Spare;
        }
    }

    /// Buffers handed out and not given back.
    pub(crate) fn out(&self) -> usize {
        self.out
    }

    /// Buffers circulating.
    #[cfg(test)]
    pub(crate) fn circulating(&self) -> u16 {
        self.circulating
    }

    /// A receive ended for want of a buffer: twice as many circulate from now on (at most
    /// [`BUFFERS`]).
    pub(crate) fn grow(&mut self) {
        let more = self.circulating.saturating_mul(2).min(BUFFERS);
        for bid in self.circulating..more {
            if self.place.get(usize::from(bid)) == Some(&Place::Spare) {
                self.publish(bid);
            }
        }
        if more > self.circulating {
            tracing::debug!(buffers = more, "media receive buffers grown");
        }
        self.circulating = more;
    }

    /// Gives the buffers' pages back to the system and circulates [`FIRST_BUFFERS`] again.
    /// Only when no receive is armed (the kernel writes into no buffer) and none is out: the
    /// caller's promise for the first, checked for the second. `true` when pages were given
    /// back.
    pub(crate) fn release(&mut self) -> bool {
        if self.out > 0 || !self.touched {
            return false;
        }
        // SAFETY: the buffers' own mapping; no receive is armed (the caller's promise) and no
        // buffer is out, so neither the kernel nor a slice reads or writes it. Its pages read
        // as zeroes afterwards.
        let r = unsafe {
            libc::madvise(
                self.bufs.at.as_ptr().cast(),
                self.bufs.len,
                libc::MADV_DONTNEED,
            )
        };
        if r != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "media receive buffers not given back");
            return false;
        }
        // Buffers beyond the first ones still in the ring are kept aside as the kernel hands
        // them out.
        self.circulating = FIRST_BUFFERS;
        self.touched = false;
        true
    }

    /// Puts buffer `bid` in the ring for the kernel to take.
    fn publish(&mut self, bid: u16) {
        let Some(p) = self.place.get_mut(usize::from(bid)) else {
            return;
        };
        *p = Place::Ring;
        let addr = self.bufs.at.as_ptr() as u64 + (usize::from(bid) * BUF_SIZE) as u64;
        let ring = self.ring.at.as_ptr().cast::<BufRingEntry>();
        let i = usize::from(self.tail & (BUFFERS - 1));
        // SAFETY: `i` < BUFFERS, the entries of the mapping; the kernel reads an entry only
        // between the head and the tail we publish, and this one lies beyond the tail (every
        // buffer is in the ring at most once, so the ring never holds more than BUFFERS).
        let entry = unsafe { &mut *ring.add(i) };
        entry.set_addr(addr);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field of the first entry, a u16 the kernel reads concurrently:
        // written atomically, after the entry (release).
        unsafe {
            let tail = BufRingEntry::tail(ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

fn user_data(token: u32, generation: u32) -> u64 {
    RECV_TAG | (u64::from(generation & GEN_MASK) << 32) | u64::from(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::uring::SendQueue;
    use std::os::fd::AsRawFd;

    /// What [`collect`] saw.
    #[derive(Default)]
    struct Seen {
        /// Datagrams per socket token, read as big-endian u32s.
        got: Vec<Vec<u32>>,
        /// Buffers kept out (when holding).
        held: Vec<u16>,
        /// Receives that ended: token and result.
        ended: Vec<(usize, i32)>,
    }

    impl Seen {
        fn new(sockets: usize) -> Self {
            Seen {
                got: vec![Vec::new(); sockets],
                ..Seen::default()
            }
        }

        fn total(&self) -> usize {
            self.got.iter().map(Vec::len).sum()
        }
    }

    /// Completions until `done` says so or nothing comes for 200 ms; receive completions only,
    /// buffers held when `hold`.
    fn collect(
        ring: &mut IoUring,
        rx: &mut Receiver,
        seen: &mut Seen,
        hold: bool,
        done: impl Fn(&Seen) -> bool,
    ) {
        let mut cqes = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done(seen) && std::time::Instant::now() < deadline {
            Receiver::wait(ring, 1, Duration::from_millis(200)).expect("wait");
            cqes.clear();
            Receiver::reap(ring, &mut cqes, 1024);
            if cqes.is_empty() {
                break;
            }
            for c in &cqes {
                let Some(r) = Receiver::decode(c.user_data(), c.result(), c.flags()) else {
                    continue;
                };
                if let (Some(bid), Ok(len)) = (r.buffer, usize::try_from(r.res)) {
                    assert!(rx.took(bid), "buffer {bid} handed out twice");
                    let (p, _, _) = rx.datagram(bid, len).expect("datagram");
                    let v = u32::from_be_bytes(p.try_into().expect("4 bytes"));
                    seen.got[r.token].push(v);
                    if hold {
                        seen.held.push(bid);
                    } else {
                        rx.give_back(bid);
                    }
                }
                if !r.more {
                    seen.ended.push((r.token, r.res));
                }
            }
        }
    }

    /// A shared ring, a receiver on it and an eventfd for it (closed by the caller).
    fn setup() -> (SendQueue, Receiver, RawFd) {
        let mut q = SendQueue::shared().expect("io_uring on this machine");
        // SAFETY: no pointer; the descriptor is closed at the end of the test.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(efd >= 0);
        let ring = q.ring().expect("ring");
        let rx = Receiver::new(ring, efd).expect("multishot receive on this machine");
        (q, rx, efd)
    }

    /// Sends `rounds` rounds of ten numbered datagrams to each of `socks` (numbers from 0),
    /// collecting after each round until every datagram so far has come; the count sent to
    /// each socket.
    fn send_rounds(
        ring: &mut IoUring,
        rx: &mut Receiver,
        seen: &mut Seen,
        tx: &std::net::UdpSocket,
        socks: &[std::net::UdpSocket],
        rounds: usize,
    ) -> u32 {
        let mut sent = 0u32;
        for _ in 0..rounds {
            for _ in 0..10 {
                for s in socks {
                    tx.send_to(&sent.to_be_bytes(), s.local_addr().expect("addr"))
                        .expect("send");
                }
                sent += 1;
            }
            let want = socks.len() * sent as usize;
            collect(ring, rx, seen, false, |s| s.total() == want);
        }
        sent
    }

    fn sockets(n: usize) -> Vec<std::net::UdpSocket> {
        (0..n)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect()
    }

    /// A burst larger than the buffers circulating: the kernel fills every one, ends the
    /// receives it has no buffer for (`ENOBUFS`, the datagrams stay queued); once the
    /// circulating buffers have grown and are back, receives armed again get the rest, in
    /// order and complete.
    #[test]
    fn a_burst_beyond_the_buffers_ends_receives_and_arming_again_gets_the_rest() {
        const SOCKETS: usize = 4;
        const EACH: u32 = 60; // 240 in all: more than FIRST_BUFFERS, fewer than BUFFERS
        let (mut q, mut rx, efd) = setup();
        let ring = q.ring().expect("ring");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let socks = sockets(SOCKETS);
        for k in 0..EACH {
            for s in &socks {
                tx.send_to(&k.to_be_bytes(), s.local_addr().expect("addr"))
                    .expect("send");
            }
        }
        for (t, s) in socks.iter().enumerate() {
            rx.arm(ring, s.as_raw_fd(), t).expect("armed");
        }
        let mut seen = Seen::new(SOCKETS);
        // Buffers held: the kernel runs out; wait until nothing more comes.
        collect(ring, &mut rx, &mut seen, true, |_| false);
        assert_eq!(seen.total(), usize::from(FIRST_BUFFERS), "each buffer once");
        assert_eq!(rx.out(), usize::from(FIRST_BUFFERS));
        assert!(!seen.ended.is_empty(), "no receive ended");
        assert!(
            seen.ended.iter().all(|&(_, res)| res == -libc::ENOBUFS),
            "{:?}",
            seen.ended
        );
        while rx.circulating() < BUFFERS {
            rx.grow();
        }
        rx.grow();
        assert_eq!(rx.circulating(), BUFFERS, "grows no further");
        for bid in std::mem::take(&mut seen.held) {
            rx.give_back(bid);
        }
        assert_eq!(rx.out(), 0);
        for (t, _) in std::mem::take(&mut seen.ended) {
            rx.arm(ring, socks[t].as_raw_fd(), t).expect("armed again");
        }
        collect(ring, &mut rx, &mut seen, false, |s| {
            s.total() == SOCKETS * EACH as usize
        });
        for (t, g) in seen.got.iter().enumerate() {
            assert_eq!(*g, (0..EACH).collect::<Vec<_>>(), "socket {t}");
        }
        assert!(seen.ended.is_empty(), "{:?}", seen.ended);
        drop(q);
        // SAFETY: the eventfd opened above; the ring that read it is gone.
        unsafe { libc::close(efd) };
    }

    /// Pages of `m` resident in memory.
    fn resident(m: &Mapping) -> usize {
        // SAFETY: sysconf takes a value.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page");
        let mut v = vec![0u8; m.len.div_ceil(page)];
        // SAFETY: the vector holds a byte per page of the mapping, as mincore writes.
        let r = unsafe { libc::mincore(m.at.as_ptr().cast(), m.len, v.as_mut_ptr()) };
        assert_eq!(r, 0, "mincore: {}", io::Error::last_os_error());
        v.iter().filter(|&&b| b & 1 != 0).count()
    }

    /// A receiver whose receives have all ended gives the pages of its buffers back; receives
    /// armed again are served as before, by the first buffers only once the others have come
    /// out of the ring.
    #[test]
    fn an_idle_receiver_gives_its_buffer_pages_back() {
        let (mut q, mut rx, efd) = setup();
        let ring = q.ring().expect("ring");
        assert_eq!(resident(&rx.bufs), 0, "buffers touched before any datagram");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let socks = sockets(2);
        while rx.circulating() < BUFFERS {
            rx.grow();
        }
        let mut generations = Vec::new();
        for (t, s) in socks.iter().enumerate() {
            generations.push(rx.arm(ring, s.as_raw_fd(), t).expect("armed"));
        }
        let mut seen = Seen::new(2);
        // In rounds of 20, so that the buffers (given back each round) suffice.
        let sent = send_rounds(ring, &mut rx, &mut seen, &tx, &socks, 20);
        assert_eq!(seen.total(), 2 * sent as usize);
        assert!(seen.ended.is_empty(), "{:?}", seen.ended);
        assert!(resident(&rx.bufs) > 0, "no page touched");
        for (t, g) in generations.iter().enumerate() {
            rx.cancel(ring, t, *g);
        }
        collect(ring, &mut rx, &mut seen, false, |s| s.ended.len() == 2);
        assert!(
            seen.ended.iter().all(|&(_, res)| res == -libc::ECANCELED),
            "{:?}",
            seen.ended
        );
        assert!(rx.release(), "pages not given back");
        assert_eq!(resident(&rx.bufs), 0, "pages still resident");
        assert_eq!(rx.circulating(), FIRST_BUFFERS);
        assert!(!rx.release(), "nothing touched since");
        // Armed again: every datagram still comes, and once each buffer beyond the first
        // has been handed out once, only the first circulate.
        seen = Seen::new(2);
        for (t, s) in socks.iter().enumerate() {
            rx.arm(ring, s.as_raw_fd(), t).expect("armed");
        }
        // More datagrams than the ring has entries: each one left in it comes out once.
        let sent = send_rounds(ring, &mut rx, &mut seen, &tx, &socks, 60);
        for g in &seen.got {
            assert_eq!(*g, (0..sent).collect::<Vec<_>>());
        }
        let beyond = &rx.place[usize::from(FIRST_BUFFERS)..];
        assert!(
            beyond.iter().all(|&p| p == Place::Spare),
            "buffers beyond the first still circulate"
        );
        drop(q);
        // SAFETY: the eventfd opened above; the ring that read it is gone.
        unsafe { libc::close(efd) };
    }

    #[test]
    fn a_receive_completion_is_told_apart_and_decoded() {
        let ud = user_data(4 * 7 + 3, 0x12_3456);
        // IORING_CQE_F_BUFFER | IORING_CQE_F_MORE, buffer 9 (IORING_CQE_BUFFER_SHIFT 16).
        let flags = 1 | 2 | (9 << 16);
        assert_eq!(
            Receiver::decode(ud, 100, flags),
            Some(Recv {
                token: 31,
                generation: 0x12_3456,
                buffer: Some(9),
                res: 100,
                more: true,
            })
        );
        assert_eq!(Receiver::decode(WAKE_TAG, 8, 0), None);
        assert_eq!(Receiver::decode(CANCEL_TAG, 0, 0), None);
        assert_eq!(Receiver::decode(PROBE_TAG, 0, 0), None);
        assert_eq!(
            Receiver::decode(super::super::uring::SEND_TAG | 3, 0, 0),
            None
        );
    }

    /// Kernels before 6.0 refuse the multishot flag (`EINVAL`), before 5.19 the buffer ring
    /// registration: either sends the thread to `epoll`. A probe receive cancelled (or one
    /// that received and goes on) shows multishot receive works.
    #[test]
    fn the_probe_tells_a_kernel_without_multishot_receive() {
        const MORE: u32 = 2; // IORING_CQE_F_MORE
        assert!(probe_verdict(-libc::ECANCELED, 0).is_ok());
        assert!(probe_verdict(12, MORE).is_ok());
        for (res, flags) in [
            (-libc::EINVAL, 0),
            (-libc::EOPNOTSUPP, 0),
            (-libc::ENOBUFS, 0),
            (12, 0),
        ] {
            assert!(
                matches!(probe_verdict(res, flags), Err(SetupError::Multishot(_))),
                "{res} {flags}"
            );
        }
        for errno in [libc::EINVAL, libc::ENOSYS, libc::EOPNOTSUPP] {
            assert!(matches!(
                buf_ring_refused(io::Error::from_raw_os_error(errno)),
                SetupError::BufRing(_)
            ));
        }
        assert!(matches!(
            buf_ring_refused(io::Error::from_raw_os_error(libc::ENOMEM)),
            SetupError::Other(_)
        ));
        // This machine's kernel has both (the relay's measurements rely on it).
        let (q, _rx, efd) = setup();
        drop(q);
        // SAFETY: the eventfd opened in `setup`; the ring that read it is gone.
        unsafe { libc::close(efd) };
    }
}
