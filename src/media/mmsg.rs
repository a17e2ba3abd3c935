//! Batched, non-blocking UDP receive with `recvmmsg(2)`.
//!
//! A media socket is drained after a readiness event (the I/O threads' poll is edge-triggered).
//! `recvfrom` would need one call per datagram plus one more that fails with `EAGAIN`;
//! `recvmmsg` with `MSG_DONTWAIT` returns every queued datagram, up to [`BATCH`], in one call
//! and tells by a short count that the socket is empty — at 50 packets/s per stream that is
//! one system call per datagram instead of two. The buffers are allocated once per I/O thread.
//!
//! Each datagram comes with the time the kernel received it (`SO_TIMESTAMPNS`, enabled by
//! [`enable_timestamps`] on every media socket): jitter is measured on when a packet arrived,
//! not on when a coalescing I/O thread got round to it, and the thread reads the clock once
//! per wake-up instead of once per packet.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::relay::BUF_LEN;

/// Datagrams taken from one socket per call.
pub(crate) const BATCH: usize = 8;

/// Room for the control messages of one datagram: one `SCM_TIMESTAMPNS` (a `timespec`)
/// takes 32 bytes on 64-bit Linux; in `u64`s for the alignment `cmsghdr` needs.
pub(crate) const CONTROL_WORDS: usize = 8;

/// Environment variable turning receive timestamps off (`0`), so that their cost can be
/// measured: jitter is then measured on the I/O thread's wake-up. A knob for measuring, like
/// `PASARELA_MEDIA_COALESCE_US`, not a setting.
pub(crate) const TIMESTAMPS_ENV: &str = "PASARELA_MEDIA_RX_TIMESTAMPS";

/// Asks the kernel to stamp every datagram `fd` receives with its arrival time
/// (`SO_TIMESTAMPNS`, `CLOCK_REALTIME`), read back by [`RecvBatch::received_at`]; nothing
/// when [`TIMESTAMPS_ENV`] is `0`.
pub(crate) fn enable_timestamps(fd: RawFd) -> io::Result<()> {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = OFF.get_or_init(|| std::env::var(TIMESTAMPS_ENV).is_ok_and(|v| v.trim() == "0"));
    if *off {
        return Ok(());
    }
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `CLOCK_REALTIME` in nanoseconds since the epoch: the clock of kernel receive timestamps.
pub(crate) fn realtime_ns() -> u64 {
    // SAFETY: timespec is plain old data; clock_gettime writes it.
    let mut ts: libc::timespec = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: a valid clock id and a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    timespec_ns(&ts)
}

fn timespec_ns(ts: &libc::timespec) -> u64 {
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// The clocks an I/O thread reads once per wake-up, which date the datagrams it then drains
/// from their kernel receive times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WakeClock {
    /// The monotonic clock at the wake-up.
    pub(crate) now: Instant,
    /// [`realtime_ns`] at the same moment.
    real_ns: u64,
}

/// The oldest a receive time is taken to be: a datagram that waited longer (a stalled thread,
/// or the real-time clock stepped forward) is dated this far back.
const OLDEST: Duration = Duration::from_secs(1);

impl WakeClock {
    /// Reads both clocks.
    pub(crate) fn read() -> Self {
        WakeClock {
            now: Instant::now(),
            real_ns: realtime_ns(),
        }
    }

    /// When a datagram received at `stamp` ([`RecvBatch::received_at`]) arrived: `now`, less
    /// how long before the wake-up the kernel stamped it. `now` without a stamp, or for a
    /// stamp after the wake-up (the real-time clock stepped back).
    pub(crate) fn arrival(&self, stamp: Option<u64>) -> Instant {
        match stamp {
            Some(t) if t <= self.real_ns => {
                let age = Duration::from_nanos(self.real_ns - t).min(OLDEST);
                self.now.checked_sub(age).unwrap_or(self.now)
            }
            _ => self.now,
        }
    }
}

/// Reused receive buffers and their source addresses.
pub(crate) struct RecvBatch {
    bufs: Box<[[u8; BUF_LEN]; BATCH]>,
    addrs: [libc::sockaddr_storage; BATCH],
    lens: [usize; BATCH],
    control: [[u64; CONTROL_WORDS]; BATCH],
    /// Kernel receive times ([`realtime_ns`] clock) of the last batch; 0: none given.
    stamps: [u64; BATCH],
    /// Datagrams received since the last [`RecvBatch::take_received`].
    received: u64,
}

impl RecvBatch {
    pub(crate) fn new() -> Self {
        RecvBatch {
            bufs: Box::new([[0u8; BUF_LEN]; BATCH]),
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addrs: unsafe { MaybeUninit::zeroed().assume_init() },
            lens: [0; BATCH],
            control: [[0; CONTROL_WORDS]; BATCH],
            stamps: [0; BATCH],
            received: 0,
        }
    }

    /// Receives up to [`BATCH`] datagrams from `fd` without waiting. `Ok(0)` or a
    /// `WouldBlock` error means nothing was queued.
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: iovec and mmsghdr are plain old data; all zeroes is a valid value.
        let mut iovs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        for (i, (iov, msg)) in iovs.iter_mut().zip(msgs.iter_mut()).enumerate() {
            iov.iov_base = self.bufs[i].as_mut_ptr().cast();
            iov.iov_len = BUF_LEN;
            msg.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
            msg.msg_hdr.msg_control = self.control[i].as_mut_ptr().cast();
            msg.msg_hdr.msg_controllen = std::mem::size_of::<[u64; CONTROL_WORDS]>() as _;
        }
        // SAFETY: every mmsghdr points to a live iovec, buffer and address of the right sizes,
        // all borrowed mutably for the duration of the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(BATCH);
        self.received += n as u64;
        for ((len, stamp), msg) in self
            .lens
            .iter_mut()
            .zip(&mut self.stamps)
            .zip(&msgs)
            .take(n)
        {
            *len = (msg.msg_len as usize).min(BUF_LEN);
            *stamp = timestamp(&msg.msg_hdr);
        }
        Ok(n)
    }

    /// The number of datagrams received since the last call (the I/O thread's packet rate).
    pub(crate) fn take_received(&mut self) -> u64 {
        std::mem::take(&mut self.received)
    }

    /// When the kernel received datagram `i` of the last [`RecvBatch::recv`], in
    /// [`realtime_ns`]'s clock; `None` when the socket does not stamp (see
    /// [`enable_timestamps`]).
    pub(crate) fn received_at(&self, i: usize) -> Option<u64> {
        self.stamps.get(i).copied().filter(|&t| t != 0)
    }

    /// Datagram `i` of the last [`RecvBatch::recv`] and its source; `None` for an address
    /// family other than IPv4/IPv6.
    pub(crate) fn get(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        let src = sockaddr(self.addrs.get(i)?)?;
        let len = *self.lens.get(i)?;
        let pkt = self.bufs.get_mut(i)?.get_mut(..len)?;
        Some((pkt, src))
    }
}

/// The `SCM_TIMESTAMPNS` in the control messages `data` (as a receive wrote them) in
/// nanoseconds, 0 when there is none.
pub(crate) fn control_timestamp(data: &[u8]) -> u64 {
    let mut words = [0u64; CONTROL_WORDS];
    let n = data.len().min(std::mem::size_of_val(&words));
    // SAFETY: at most the size of `words`, into `words`.
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), words.as_mut_ptr().cast::<u8>(), n);
    }
    // SAFETY: msghdr is plain old data; all zeroes is a valid value.
    let mut hdr: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    hdr.msg_control = words.as_mut_ptr().cast();
    hdr.msg_controllen = n as _;
    timestamp(&hdr)
}

/// The `SCM_TIMESTAMPNS` of a received message in nanoseconds, 0 when there is none.
fn timestamp(hdr: &libc::msghdr) -> u64 {
    // SAFETY: after recvmmsg, msg_control/msg_controllen describe the control messages the
    // kernel wrote into our buffer; the CMSG macros stay within msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::SOL_SOCKET
                && h.cmsg_type == libc::SCM_TIMESTAMPNS
                && h.cmsg_len as usize
                    >= libc::CMSG_LEN(std::mem::size_of::<libc::timespec>() as _) as usize
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return timespec_ns(&ts);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    0
}

/// The socket address in `ss` (from a receive call); `None` for a family other than IPv4/IPv6.
/// Shared with the SIP UDP receive loop (`transport::udp_batch`).
pub(crate) fn sockaddr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it can contain.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it can contain.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batch_receives_all_queued_and_reports_sources() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut b = RecvBatch::new();
        match b.recv(rx.as_raw_fd()) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            Ok(n) => assert_eq!(n, 0),
        }
        for k in 0..3u8 {
            tx.send_to(&[k; 10], to).expect("send");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(b.recv(rx.as_raw_fd()).expect("recv"), 3);
        for k in 0..3u8 {
            let (p, src) = b.get(usize::from(k)).expect("datagram");
            assert_eq!(p, &[k; 10]);
            assert_eq!(src, tx.local_addr().expect("addr"));
            // Not asked for: no receive time.
            assert_eq!(b.received_at(usize::from(k)), None);
        }
    }

    #[test]
    fn a_receive_time_dates_the_datagram_back_from_the_wake_up() {
        let now = Instant::now();
        let c = WakeClock {
            now,
            real_ns: 5_000_000_000,
        };
        let ms = Duration::from_millis;
        assert_eq!(c.arrival(Some(4_997_000_000)), now - ms(3));
        assert_eq!(c.arrival(Some(5_000_000_000)), now);
        // No stamp, or one from after the wake-up: the wake-up.
        assert_eq!(c.arrival(None), now);
        assert_eq!(c.arrival(Some(5_000_000_001)), now);
        // Ages are capped.
        assert_eq!(c.arrival(Some(1)), now - OLDEST);
    }

    #[test]
    fn a_stamping_socket_tells_when_each_datagram_arrived() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        enable_timestamps(rx.as_raw_fd()).expect("SO_TIMESTAMPNS");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut b = RecvBatch::new();
        // The kernel turns stamping on for the whole machine a moment after the first socket
        // asks (when no other socket already did); a datagram that came before is stamped
        // when read. Wait for a stamp taken before the read.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            tx.send_to(&[0; 10], to).expect("send");
            std::thread::sleep(std::time::Duration::from_millis(10));
            let sent_by = realtime_ns();
            std::thread::sleep(std::time::Duration::from_millis(10));
            assert_eq!(b.recv(rx.as_raw_fd()).expect("recv"), 1);
            if b.received_at(0).is_some_and(|t| t <= sent_by) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never stamped on arrival"
            );
        }
        let before = realtime_ns();
        tx.send_to(&[1; 10], to).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(30));
        tx.send_to(&[2; 10], to).expect("send");
        // How far apart the sends really were: a loaded machine can oversleep the 30 ms.
        let sent_apart = realtime_ns().saturating_sub(before);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let read = realtime_ns();
        assert_eq!(b.recv(rx.as_raw_fd()).expect("recv"), 2);
        let (t1, t2) = (
            b.received_at(0).expect("stamp"),
            b.received_at(1).expect("stamp"),
        );
        // Stamped on arrival, not when read: 30 ms apart, both well before the read.
        assert!(
            before <= t1 && t1 < t2 && t2 < read,
            "{before} {t1} {t2} {read}"
        );
        let apart = t2 - t1;
        assert!(
            (25_000_000..sent_apart + 170_000_000).contains(&apart),
            "{apart} ns apart, sent {sent_apart} ns apart"
        );
        assert!(read - t2 >= 15_000_000, "{} ns before the read", read - t2);
    }
}
