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

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::SocketAddr;
use std::os::fd::RawFd;
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
/// Generations wrap within these bits (0 is never used: "not armed").
const GEN_MASK: u32 = 0xFF_FFFF;
/// Provided buffers: a burst of this many datagrams (over all sockets) between two wake-ups
/// fits; beyond, receives end with `ENOBUFS` (the datagrams wait in their sockets) and are
/// armed again. A power of two, as the kernel wants.
pub(crate) const BUFFERS: u16 = 256;
/// The buffer group of the provided buffers.
const GROUP: u16 = 0;
/// Room for the source address in a buffer.
const NAME_LEN: usize = size_of::<libc::sockaddr_storage>();
/// Room for the control messages (the receive time) in a buffer.
const CONTROL_LEN: usize = CONTROL_WORDS * size_of::<u64>();
/// Where the datagram starts in a buffer: the kernel's `io_uring_recvmsg_out` header, then
/// the address and control fields of the sizes the `msghdr` gives.
const PAYLOAD_AT: usize = RECVMSG_OUT + NAME_LEN + CONTROL_LEN;
/// Size of the kernel's `struct io_uring_recvmsg_out` (four `u32`s) that opens a buffer.
const RECVMSG_OUT: usize = 16;
/// One provided buffer.
const BUF_SIZE: usize = PAYLOAD_AT + BUF_LEN;

/// The receive side of one I/O thread's ring: its provided buffers, the `msghdr` template of
/// its receives and the read of its control eventfd.
pub(crate) struct Receiver {
    /// The buffer ring the kernel takes buffers from (mmap'd: it must be page aligned).
    ring: NonNull<BufRingEntry>,
    /// Our tail of `ring`: buffers given back are published up to it.
    tail: u16,
    /// The buffers themselves, [`BUF_SIZE`] each; never moved.
    bufs: Box<[u8]>,
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
    /// Registers the provided buffers with `ring` and arms the read of `wake_fd`.
    pub(crate) fn new(ring: &mut IoUring, wake_fd: RawFd) -> io::Result<Self> {
        let len = usize::from(BUFFERS) * size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping; no memory of ours is touched.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let Some(base) = NonNull::new(mem.cast::<BufRingEntry>()) else {
            return Err(io::Error::other("mmap gave a null mapping"));
        };
        // SAFETY: zeroed (anonymous) memory of BUFFERS entries, page aligned, unmapped only on
        // drop, after the ring (declared before this receiver in the I/O thread) is gone.
        if let Err(e) = unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(mem as u64, BUFFERS, GROUP, 0)
        } {
            // SAFETY: the mapping made above, not registered.
            unsafe { libc::munmap(mem, len) };
            return Err(e);
        }
        // SAFETY: msghdr is plain old data; all zeroes is a valid value.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        msg.msg_namelen = NAME_LEN as _;
        msg.msg_controllen = CONTROL_LEN as _;
        let mut r = Receiver {
            ring: base,
            tail: 0,
            bufs: vec![0u8; usize::from(BUFFERS) * BUF_SIZE].into_boxed_slice(),
            msg,
            wake_fd,
            wake_buf: Box::new(0),
            next_gen: 0,
        };
        for bid in 0..BUFFERS {
            r.give_back(bid);
        }
        if !r.arm_wake(ring) {
            return Err(io::Error::other("control eventfd read not queued"));
        }
        Ok(r)
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
        unsafe { push(ring, &entry) }.then_some(generation)
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

    /// The datagram of a receive that filled `len` bytes of buffer `bid`: its bytes, its
    /// source and its kernel receive time ([`super::mmsg::realtime_ns`] clock). `None` for a
    /// malformed buffer or an address family other than IPv4/IPv6.
    pub(crate) fn datagram(
        &mut self,
        bid: u16,
        len: usize,
    ) -> Option<(&mut [u8], SocketAddr, Option<u64>)> {
        let start = usize::from(bid).checked_mul(BUF_SIZE)?;
        let buf = self.bufs.get_mut(start..start.checked_add(BUF_SIZE)?)?;
        let used = buf.get(..len.min(BUF_SIZE))?;
        let out = RecvMsgOut::parse(used, &self.msg).ok()?;
        // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
        let mut ss: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        let name = out.name_data();
        let n = name.len().min(NAME_LEN);
        // SAFETY: at most NAME_LEN bytes into a sockaddr_storage of that size.
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

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn give_back(&mut self, bid: u16) {
        let Some(addr) = usize::from(bid)
            .checked_mul(BUF_SIZE)
            .and_then(|at| self.bufs.get(at..))
            .map(|b| b.as_ptr() as u64)
        else {
            return;
        };
        let i = usize::from(self.tail & (BUFFERS - 1));
        // SAFETY: `i` < BUFFERS, the entries of the mapping; the kernel reads an entry only
        // between the head and the tail we publish, and this one lies beyond the tail.
        let entry = unsafe { &mut *self.ring.as_ptr().add(i) };
        entry.set_addr(addr);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field of the first entry, a u16 the kernel reads concurrently:
        // written atomically, after the entry (release).
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // The ring is gone by now (the I/O thread drops it first): nothing reads the mapping.
        let len = usize::from(BUFFERS) * size_of::<BufRingEntry>();
        // SAFETY: the mapping made in `new`, of that length.
        unsafe { libc::munmap(self.ring.as_ptr().cast(), len) };
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

    /// Completions until `done` says so or nothing comes for 200 ms; receive completions only,
    /// datagrams read as big-endian u32s per socket token, buffers held when `hold`.
    fn collect(
        ring: &mut IoUring,
        rx: &mut Receiver,
        got: &mut [Vec<u32>],
        held: &mut Vec<u16>,
        ended: &mut Vec<(usize, i32)>,
        hold: bool,
        done: impl Fn(&[Vec<u32>]) -> bool,
    ) {
        let mut cqes = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done(got) && std::time::Instant::now() < deadline {
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
                    let (p, _, _) = rx.datagram(bid, len).expect("datagram");
                    let v = u32::from_be_bytes(p.try_into().expect("4 bytes"));
                    got[r.token].push(v);
                    if hold {
                        held.push(bid);
                    } else {
                        rx.give_back(bid);
                    }
                }
                if !r.more {
                    ended.push((r.token, r.res));
                }
            }
        }
    }

    /// A burst larger than the provided buffers: the kernel fills every buffer, ends the
    /// receives it has no buffer for (`ENOBUFS`, the datagrams stay queued), and once the
    /// buffers are back, receives armed again get the rest, in order and complete.
    #[test]
    fn a_burst_beyond_the_buffers_ends_receives_and_arming_again_gets_the_rest() {
        const SOCKETS: usize = 4;
        const EACH: u32 = 80; // 320 in all, over BUFFERS (256)
        let mut q = SendQueue::shared().expect("io_uring on this machine");
        let ring = q.ring().expect("ring");
        // SAFETY: no pointer; the descriptor is closed at the end of the test.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(efd >= 0);
        let mut rx = Receiver::new(ring, efd).expect("receiver");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let socks: Vec<std::net::UdpSocket> = (0..SOCKETS)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        for k in 0..EACH {
            for s in &socks {
                tx.send_to(&k.to_be_bytes(), s.local_addr().expect("addr"))
                    .expect("send");
            }
        }
        for (t, s) in socks.iter().enumerate() {
            rx.arm(ring, s.as_raw_fd(), t).expect("armed");
        }
        let mut got = vec![Vec::new(); SOCKETS];
        let (mut held, mut ended) = (Vec::new(), Vec::new());
        let total = |g: &[Vec<u32>]| g.iter().map(Vec::len).sum::<usize>();
        // Buffers held: the kernel runs out; wait until nothing more comes.
        collect(ring, &mut rx, &mut got, &mut held, &mut ended, true, |_| {
            false
        });
        assert_eq!(total(&got), usize::from(BUFFERS), "every buffer used once");
        assert!(!ended.is_empty(), "no receive ended");
        assert!(
            ended.iter().all(|&(_, res)| res == -libc::ENOBUFS),
            "{ended:?}"
        );
        for bid in held.drain(..) {
            rx.give_back(bid);
        }
        for (t, _) in ended.drain(..) {
            rx.arm(ring, socks[t].as_raw_fd(), t).expect("armed again");
        }
        collect(ring, &mut rx, &mut got, &mut held, &mut ended, false, |g| {
            total(g) == SOCKETS * EACH as usize
        });
        for (t, g) in got.iter().enumerate() {
            assert_eq!(*g, (0..EACH).collect::<Vec<_>>(), "socket {t}");
        }
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
        assert_eq!(
            Receiver::decode(super::super::uring::SEND_TAG | 3, 0, 0),
            None
        );
    }
}
