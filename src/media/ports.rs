//! The RTP port pool: even RTP ports with RTCP on port + 1, handed out round-robin.
//!
//! Only `MediaEngine::allocate` and the drop of a relay touch the pool, never the packet path.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;

use super::MediaError;

/// A bound RTP/RTCP socket pair.
pub(crate) struct BoundPair {
    pub port: u16,
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
}

pub(crate) struct PortPool {
    range: RangeInclusive<u16>,
    first: u16,
    used: Vec<bool>,
    cursor: usize,
}

impl PortPool {
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let (start, end) = (u32::from(*range.start()), u32::from(*range.end()));
        let first = start.max(2).next_multiple_of(2);
        // Pairs (p, p+1) with p even, p >= first, p + 1 <= end.
        let pairs = if end > first {
            ((end - 1 - first) / 2 + 1) as usize
        } else {
            0
        };
        PortPool {
            range,
            first: first.min(u32::from(u16::MAX)) as u16,
            used: vec![false; pairs],
            cursor: 0,
        }
    }

    pub fn pairs(&self) -> usize {
        self.used.len()
    }

    /// Binds the next free pair after the cursor; pairs whose ports another process holds are
    /// skipped (and tried again on the next round).
    pub fn bind_pair(&mut self, ip: IpAddr) -> Result<BoundPair, MediaError> {
        let pairs = self.used.len();
        for _ in 0..pairs {
            let idx = self.cursor;
            self.cursor = (self.cursor + 1) % pairs;
            if self.used[idx] {
                continue;
            }
            let port = self.first + 2 * idx as u16;
            let bound = UdpSocket::bind(SocketAddr::new(ip, port)).and_then(|rtp| {
                let rtcp = UdpSocket::bind(SocketAddr::new(ip, port + 1))?;
                rtp.set_nonblocking(true)?;
                rtcp.set_nonblocking(true)?;
                Ok((rtp, rtcp))
            });
            match bound {
                Ok((rtp, rtcp)) => {
                    self.used[idx] = true;
                    return Ok(BoundPair { port, rtp, rtcp });
                }
                Err(e) => {
                    tracing::debug!(port, error = %e, "RTP port pair unavailable, skipping");
                }
            }
        }
        Err(MediaError::PortsExhausted {
            start: *self.range.start(),
            end: *self.range.end(),
        })
    }

    pub fn release(&mut self, port: u16) {
        if port < self.first || !(port - self.first).is_multiple_of(2) {
            return;
        }
        if let Some(slot) = self.used.get_mut(usize::from((port - self.first) / 2)) {
            *slot = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_counting() {
        assert_eq!(PortPool::new(10000..=20000).pairs(), 5000);
        assert_eq!(PortPool::new(10001..=10004).pairs(), 1); // 10002/10003
        assert_eq!(PortPool::new(10000..=10000).pairs(), 0);
        assert_eq!(PortPool::new(10000..=10001).pairs(), 1);
        assert_eq!(PortPool::new(65534..=65535).pairs(), 1);
        assert_eq!(PortPool::new(0..=3).pairs(), 1); // port 0 is never handed out
    }
}
