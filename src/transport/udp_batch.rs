//! Batched receive for the SIP UDP sockets with `recvmmsg(2)`.
//!
//! `recv_from` takes one datagram per system call, and the loop needs one more call that fails
//! with `EAGAIN` to know the socket is empty. `recvmmsg` takes up to [`BATCH`] queued
//! datagrams per call: under load (many datagrams queued per wake-up) that is one system call
//! per [`BATCH`] datagrams instead of one per datagram (issue 22). The buffers, each large
//! enough for any UDP datagram, are allocated once per socket.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Datagrams taken per system call.
pub(super) const BATCH: usize = 8;

/// The largest UDP payload (and then some): a datagram is never truncated.
const DATAGRAM_MAX: usize = 65_536;

/// Reused receive buffers and the sources of the datagrams in them.
pub(super) struct RecvBatch {
    /// [`BATCH`] buffers of [`DATAGRAM_MAX`] bytes, back to back.
    bufs: Vec<u8>,
    addrs: [libc::sockaddr_storage; BATCH],
    lens: [usize; BATCH],
}

impl RecvBatch {
    pub(super) fn new() -> Self {
        RecvBatch {
            bufs: vec![0u8; BATCH * DATAGRAM_MAX],
            // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
            addrs: unsafe { MaybeUninit::zeroed().assume_init() },
            lens: [0; BATCH],
        }
    }

    /// Receives up to [`BATCH`] datagrams from `fd` without waiting; a `WouldBlock` error
    /// when none was queued.
    pub(super) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: iovec and mmsghdr are plain old data; all zeroes is a valid value.
        let mut iovs: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let chunks = self.bufs.chunks_exact_mut(DATAGRAM_MAX);
        for (((iov, msg), buf), addr) in iovs
            .iter_mut()
            .zip(msgs.iter_mut())
            .zip(chunks)
            .zip(self.addrs.iter_mut())
        {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = buf.len();
            msg.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            msg.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every mmsghdr points to a live iovec, buffer and address of the sizes given,
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
        for (len, msg) in self.lens.iter_mut().zip(&msgs).take(n) {
            *len = (msg.msg_len as usize).min(DATAGRAM_MAX);
        }
        Ok(n)
    }

    /// Datagram `i` of the last [`RecvBatch::recv`] and its source; `None` past the batch or
    /// for an address family other than IPv4/IPv6.
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let src = crate::media::mmsg::sockaddr(self.addrs.get(i)?)?;
        let len = *self.lens.get(i)?;
        let start = i.checked_mul(DATAGRAM_MAX)?;
        let data = self.bufs.get(start..start.checked_add(len)?)?;
        Some((data, src))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_takes_every_queued_datagram_with_its_source() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = rx.local_addr().expect("addr");
        let mut b = RecvBatch::new();
        let empty = b.recv(rx.as_raw_fd()).expect_err("nothing queued");
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        // More than a batch, the last one of the largest size.
        for k in 0..BATCH as u8 + 2 {
            tx.send_to(&[k; 100], to).expect("send");
        }
        let big = vec![7u8; 65_507];
        tx.send_to(&big, to).expect("send");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(b.recv(rx.as_raw_fd()).expect("recv"), BATCH);
        for k in 0..BATCH {
            let (p, src) = b.get(k).expect("datagram");
            assert_eq!(p, &[k as u8; 100][..]);
            assert_eq!(src, tx.local_addr().expect("addr"));
        }
        assert!(b.get(BATCH).is_none());
        assert_eq!(b.recv(rx.as_raw_fd()).expect("recv"), 3);
        assert_eq!(b.get(1).expect("datagram").0, &[BATCH as u8 + 1; 100][..]);
        assert_eq!(b.get(2).expect("datagram").0, &big[..]);
    }
}
