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
//! Where `io_uring` is not available (an old kernel, a seccomp policy, or
//! [`URING_ENV`]`=0`), every packet is sent at once with `sendto`, as before.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use io_uring::{opcode, types, IoUring};
use mio::net::UdpSocket;
use socket2::SockAddr;

use super::relay::{Undo, BUF_LEN};

/// Packets queued before the queue is sent on its own (a wake-up at 1 000 calls relays
/// about 16; more only after a stall).
const SLOTS: usize = 64;
/// Room for a packet: the largest relayed one plus what SRTP adds.
const SLOT_LEN: usize = BUF_LEN + 16;

/// Environment variable turning the ring off (`0`): every packet is then sent with its own
/// `sendto`. A knob for measuring, like `PASARELA_MEDIA_COALESCE_US`, not a setting.
pub(crate) const URING_ENV: &str = "PASARELA_MEDIA_URING";

/// One queued packet: its bytes, its destination, and what to undo if it is not sent.
struct Slot {
    buf: [u8; SLOT_LEN],
    dest: SockAddr,
    undo: Option<Undo>,
}

/// The packets a wake-up relays; sent by [`SendQueue::flush`].
pub(crate) struct SendQueue {
    /// `None`: each packet is sent at once.
    ring: Option<IoUring>,
    /// The queued packets' buffers, allocated with the first one; never moved while queued
    /// (the kernel reads them by address).
    slots: Vec<Slot>,
    queued: usize,
}

impl SendQueue {
    /// A queue with a ring unless [`URING_ENV`] is `0` or the kernel refuses one.
    pub(crate) fn new() -> Self {
        let off = std::env::var(URING_ENV).is_ok_and(|v| v.trim() == "0");
        Self::with_ring(!off)
    }

    /// A queue with a ring when `ring` and the kernel gives one, else sending each packet at
    /// once.
    fn with_ring(ring: bool) -> Self {
        SendQueue {
            ring: if ring { self::ring() } else { None },
            slots: Vec::new(),
            queued: 0,
        }
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
        let Some(buf) = slot.buf.get_mut(..pkt.len()) else {
            return;
        };
        buf.copy_from_slice(pkt);
        slot.dest = SockAddr::from(dest);
        slot.undo = undo;
        let entry = opcode::Send::new(
            types::Fd(sock.as_raw_fd()),
            slot.buf.as_ptr(),
            pkt.len() as u32,
        )
        .flags(libc::MSG_DONTWAIT)
        .dest_addr(slot.dest.as_ptr().cast())
        .dest_addr_len(slot.dest.len())
        .build()
        .user_data(k as u64);
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

    /// Sends every queued packet in one system call and waits for them to complete (they
    /// complete within it). Must run before a socket with queued packets is closed.
    pub(crate) fn flush(&mut self) {
        if self.queued == 0 {
            return;
        }
        let Some(ring) = self.ring.as_mut() else {
            self.queued = 0;
            return;
        };
        let want = self.queued;
        let mut done = 0;
        let mut failed = None;
        while done < want {
            match ring.submit_and_wait(want - done) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            for cqe in ring.completion() {
                done += 1;
                let res = cqe.result();
                if res < 0 {
                    let slot = usize::try_from(cqe.user_data())
                        .ok()
                        .and_then(|k| self.slots.get_mut(k));
                    if let Some(u) = slot.and_then(|s| s.undo.take()) {
                        u.undo();
                    }
                    tracing::trace!(error = %io::Error::from_raw_os_error(-res), "send failed; dropped");
                }
            }
        }
        if let Some(e) = failed {
            // Packets the kernel did not take are lost; later ones are sent one by one
            // (dropping the ring also drops what it still held).
            tracing::warn!(error = %e, "io_uring submission failed; media packets are sent one by one from now on");
            self.ring = None;
        }
        for s in self.slots.iter_mut().take(want) {
            s.undo = None;
        }
        self.queued = 0;
    }
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

    fn arrived(rx: &std::net::UdpSocket) -> Vec<u8> {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok(n) = rx.recv(&mut buf) {
            got.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        got
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
        assert!(arrived(&rx).is_empty(), "sent before the flush");
        q.flush();
        assert_eq!(arrived(&rx), [[0u8; 4], [1; 4], [2; 4]].concat());
        // More than a queue's worth: the queue sends itself when full.
        for k in 0..SLOTS as u32 + 3 {
            q.send(&tx, &k.to_be_bytes(), to, None);
        }
        q.flush();
        let got = arrived(&rx);
        let want: Vec<u8> = (0..SLOTS as u32 + 3).flat_map(u32::to_be_bytes).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn without_a_ring_each_packet_leaves_at_once() {
        let (rx, tx, to) = pair();
        let mut q = SendQueue::with_ring(false);
        assert!(!q.batched());
        q.send(&tx, &[7; 4], to, None);
        assert_eq!(arrived(&rx), [7; 4]);
        q.flush();
        assert!(arrived(&rx).is_empty());
    }
}
