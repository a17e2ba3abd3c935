//! Batched, non-blocking UDP receive with `recvmmsg(2)`.
//!
//! A media socket is drained after a readiness event (the I/O threads' poll is edge-triggered).
//! `recvfrom` would need one call per datagram plus one more that fails with `EAGAIN`;
//! `recvmmsg` with `MSG_DONTWAIT` returns every queued datagram, up to [`BATCH`], in one call
//! and tells by a short count that the socket is empty — at 50 packets/s per stream that is
//! one system call per datagram instead of two. The buffers are allocated once per I/O thread.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

use super::relay::BUF_LEN;

/// Datagrams taken from one socket per call.
pub(crate) const BATCH: usize = 8;

/// Reused receive buffers and their source addresses.
pub(crate) struct RecvBatch {
    bufs: Box<[[u8; BUF_LEN]; BATCH]>,
    addrs: [libc::sockaddr_storage; BATCH],
    lens: [usize; BATCH],
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
        for (len, msg) in self.lens.iter_mut().zip(&msgs).take(n) {
            *len = (msg.msg_len as usize).min(BUF_LEN);
        }
        Ok(n)
    }

    /// The number of datagrams received since the last call (the I/O thread's packet rate).
    pub(crate) fn take_received(&mut self) -> u64 {
        std::mem::take(&mut self.received)
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
        }
    }
}
