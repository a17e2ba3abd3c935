//! ICMP errors on the SIP UDP sockets (`IP_RECVERR`, `IPV6_RECVERR`; ip(7), ipv6(7)).
//!
//! An unconnected UDP socket on Linux hears nothing of the ICMP "port unreachable" that a
//! closed port answers with, unless it asks for extended errors: then each error is queued on
//! the socket's error queue with the destination of the datagram that caused it, and the
//! socket polls as in error. The receive loop drains that queue with `recvmsg(MSG_ERRQUEUE)`
//! and reports each unreachable destination as a [`super::TransportFailure`], so a request sent
//! to a trunk whose port is closed fails at once instead of after Timer B.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Asks the kernel to queue ICMP errors on `socket` (best effort: without it, an unreachable
/// destination costs a timeout as before).
pub(super) fn enable(socket: &impl AsRawFd, ipv6: bool) {
    let one: libc::c_int = 1;
    let (level, name) = if ipv6 {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::SOL_IP, libc::IP_RECVERR)
    };
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "cannot enable ICMP errors on a SIP UDP socket: {}",
            io::Error::last_os_error()
        );
    }
}

/// One error taken from a socket's error queue.
#[derive(Debug)]
pub(super) struct Unreachable {
    /// Where the datagram that caused the error was sent.
    pub destination: SocketAddr,
    /// The error the ICMP message stands for (`ECONNREFUSED` for a closed port).
    pub error: io::Error,
}

/// Takes one error from the error queue of `socket` without waiting: `Ok(None)` for an error
/// that is not an ICMP unreachable (or has no destination), `WouldBlock` when the queue is
/// empty.
pub(super) fn take(socket: &impl AsRawFd) -> io::Result<Option<Unreachable>> {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is a valid value.
    let mut name: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    let mut control = [0u64; 64]; // 512 bytes, aligned for cmsghdr
    let mut payload = [0u8; 64]; // the start of the offending datagram, not used
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: msghdr is plain old data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg points to a live name, iovec and control buffer of the sizes it states,
    // all borrowed mutably for the duration of the call.
    let n = unsafe {
        libc::recvmsg(
            socket.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut errno = None;
    // SAFETY: the CMSG_* walk stays within the control length the kernel set in msg.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            let ours = (level == libc::SOL_IP && kind == libc::IP_RECVERR)
                || (level == libc::SOL_IPV6 && kind == libc::IPV6_RECVERR);
            if ours {
                let ee = libc::CMSG_DATA(cmsg)
                    .cast::<libc::sock_extended_err>()
                    .read_unaligned();
                if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP
                    || ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6
                {
                    errno = Some(ee.ee_errno as i32);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let Some(errno) = errno else {
        return Ok(None);
    };
    if !matches!(
        errno,
        libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH
    ) {
        return Ok(None);
    }
    Ok(socket_addr(&name).map(|destination| Unreachable {
        destination,
        error: io::Error::from_raw_os_error(errno),
    }))
}

/// The IPv4 or IPv6 address the kernel wrote into `ss`.
fn socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it can contain.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which it can contain.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
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

    #[test]
    fn a_closed_port_is_reported_with_its_address() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let gone = closed.local_addr().expect("addr");
        drop(closed);
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        enable(&socket, false);
        match take(&socket) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            Ok(got) => panic!("an empty queue gave {got:?}"),
        }
        socket.send_to(b"OPTIONS", gone).expect("send");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let got = loop {
            match take(&socket) {
                Ok(Some(u)) => break u,
                Ok(None) => panic!("not an unreachable"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no ICMP error");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(got.destination, gone);
        assert_eq!(got.error.raw_os_error(), Some(libc::ECONNREFUSED));
    }
}
