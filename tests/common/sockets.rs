//! The UDP sockets a process holds (the relay's sockets per call), and whether an address is
//! bound (a peer started in the background is listening).

use std::collections::HashSet;
use std::fs;
use std::net::SocketAddrV4;

/// UDP sockets the process `pid` holds bound to a port in `range`.
pub fn relay_sockets(pid: u32, range: (u16, u16)) -> usize {
    let inodes: HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut n = 0;
    for table in ["udp", "udp6"] {
        let text = fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let (Some(local), Some(inode)) = (cols.get(1), cols.get(9)) else {
                continue;
            };
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if port.is_some_and(|p| p >= range.0 && p <= range.1) && inodes.contains(*inode) {
                n += 1;
            }
        }
    }
    n
}

/// Whether a socket in this network namespace is bound to `addr` (or to its port on every
/// address): a UDP socket, or with `tcp` a listening TCP one (`/proc/net/udp`, `/proc/net/tcp`).
pub fn bound(addr: SocketAddrV4, tcp: bool) -> bool {
    // The kernel prints the address as the u32 of its bytes in host order, then the port.
    let port = format!(":{:04X}", addr.port());
    let exact = format!("{:08X}{port}", u32::from_ne_bytes(addr.ip().octets()));
    let any = format!("00000000{port}");
    let table = if tcp {
        "/proc/net/tcp"
    } else {
        "/proc/net/udp"
    };
    fs::read_to_string(table)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                return false;
            };
            // TCP_LISTEN is 0x0A; an unconnected UDP socket is TCP_CLOSE (07) or, once it
            // has a default peer, TCP_ESTABLISHED (01): any state counts.
            (*local == exact || *local == any) && (!tcp || *state == "0A")
        })
}
