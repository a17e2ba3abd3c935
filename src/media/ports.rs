//! The RTP port pool: even RTP ports with RTCP on port + 1, handed out at random, a freed pair
//! resting for a while before it is used again.
//!
//! Ports are reserved as pairs even when the RTCP socket is not bound (a leg whose phone
//! multiplexes RTCP on the RTP port, RFC 5761): the pair's odd port is never handed to another
//! call, so the range's arithmetic (and a port seen in SDP) stays that of pairs.
//!
//! Only `MediaEngine::allocate` and the drop of a relay touch the pool, never the packet path.
//! Taking and returning a pair is O(1) whatever the range and however full it is: the free
//! pairs are kept in two lists (rested ones, picked from at random, and resting ones in the
//! order they were released), never found by scanning the range.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use super::MediaError;

/// A bound RTP/RTCP socket pair; `rtcp` is `None` when only the RTP socket was asked for.
pub(crate) struct BoundPair {
    pub port: u16,
    pub rtp: UdpSocket,
    pub rtcp: Option<UdpSocket>,
}

/// How long a freed pair rests before it is handed out again (unless nothing else is free):
/// late packets of the old call must not reach a new one, and a port seen in one call's SDP
/// must not tell an attacker where the next call's media will be.
pub(crate) const COOLDOWN: Duration = Duration::from_secs(30);

/// Binds one media socket: non-blocking, with kernel receive timestamps
/// ([`super::mmsg::enable_timestamps`]; without them jitter is measured on when the I/O
/// thread woke).
pub(crate) fn bind_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    if let Err(e) = super::mmsg::enable_timestamps(std::os::fd::AsRawFd::as_raw_fd(&s)) {
        tracing::debug!(%addr, error = %e, "no receive timestamps on a media socket");
    }
    Ok(s)
}

pub(crate) struct PortPool {
    range: RangeInclusive<u16>,
    first: u16,
    used: Vec<bool>,
    /// Free pairs whose ports another process held when last tried (they stay in the free
    /// lists and are tried again), and how many.
    busy: Vec<bool>,
    busy_count: usize,
    /// Free pairs that have rested (or were never used): one is picked at random.
    rested: Vec<usize>,
    /// Free pairs still resting, oldest release first, with when they were released.
    resting: VecDeque<(usize, Instant)>,
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
            busy: vec![false; pairs],
            busy_count: 0,
            rested: (0..pairs).collect(),
            resting: VecDeque::new(),
        }
    }

    pub fn pairs(&self) -> usize {
        self.used.len()
    }

    /// Free pairs found held by another process (address in use) when tried within the last
    /// [`COOLDOWN`]: the allocator skips them, so they are not free to overload admission
    /// either. A busy pair rests like a released one and is forgotten when its rest is over
    /// (so a hold that ended cannot keep admission refusing). Pairs are picked at random, so
    /// those found so far are about the same share of all such pairs as the share of the
    /// range tried so far.
    pub fn busy(&self) -> usize {
        self.busy_count
    }

    fn mark_busy(&mut self, idx: usize, busy: bool) {
        if let Some(b) = self.busy.get_mut(idx) {
            if *b != busy {
                *b = busy;
                if busy {
                    self.busy_count += 1;
                } else {
                    self.busy_count -= 1;
                }
            }
        }
    }

    /// Moves the pairs whose rest is over to the rested list (amortised O(1): each release
    /// is moved once).
    fn wake(&mut self, now: Instant) {
        while let Some(&(idx, at)) = self.resting.front() {
            if now.saturating_duration_since(at) < COOLDOWN {
                break;
            }
            self.resting.pop_front();
            // Tried afresh: another process's hold on it may be gone (a busy pair rests too).
            self.mark_busy(idx, false);
            self.rested.push(idx);
        }
        // A burst of releases (a flood's calls ending) grows the list to its peak; once they
        // have rested, that capacity would be kept for good.
        if self.resting.capacity() > 4 * self.resting.len() + 256 {
            self.resting.shrink_to_fit();
        }
    }

    /// Moves the pairs whose rest is over at `now` and gives back the resting list's spare
    /// capacity: what [`PortPool::wake`] does at the next bind, for an idle box (the media
    /// I/O threads call it when asked to give memory back).
    pub fn give_back(&mut self, now: Instant) {
        self.wake(now);
    }

    /// Binds a free pair picked at random among the rested ones (the longest resting one only
    /// when no other is free); pairs whose ports another process holds are skipped (they rest
    /// as if released now, and are tried again later). Without `rtcp` only the even (RTP) port
    /// is bound, the pair is reserved all the same.
    pub fn bind_pair(
        &mut self,
        ip: IpAddr,
        now: Instant,
        rtcp: bool,
    ) -> Result<BoundPair, MediaError> {
        self.wake(now);
        while !self.rested.is_empty() {
            let pick = rand::random_range(0..self.rested.len());
            let idx = self.rested.swap_remove(pick);
            if let Some(b) = self.try_bind(idx, ip, rtcp) {
                return Ok(b);
            }
            self.resting.push_back((idx, now));
        }
        // Crowded: the pair that has rested longest, then the next.
        for _ in 0..self.resting.len() {
            let Some((idx, at)) = self.resting.pop_front() else {
                break;
            };
            if let Some(b) = self.try_bind(idx, ip, rtcp) {
                return Ok(b);
            }
            self.resting.push_back((idx, at.max(now)));
        }
        Err(MediaError::PortsExhausted {
            start: *self.range.start(),
            end: *self.range.end(),
        })
    }

    fn try_bind(&mut self, idx: usize, ip: IpAddr, with_rtcp: bool) -> Option<BoundPair> {
        let port = self.first + 2 * idx as u16;
        let bound = bind_socket(SocketAddr::new(ip, port)).and_then(|rtp| {
            let rtcp = match with_rtcp {
                true => Some(bind_socket(SocketAddr::new(ip, port + 1))?),
                false => None,
            };
            Ok((rtp, rtcp))
        });
        match bound {
            Ok((rtp, rtcp)) => {
                self.used[idx] = true;
                self.mark_busy(idx, false);
                Some(BoundPair { port, rtp, rtcp })
            }
            Err(e) => {
                tracing::debug!(port, error = %e, "RTP port pair unavailable, skipping");
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    self.mark_busy(idx, true);
                }
                None
            }
        }
    }

    /// Returns the pair of `port` (released at `now`); a port not handed out is ignored.
    pub fn release(&mut self, port: u16, now: Instant) {
        if port < self.first || !(port - self.first).is_multiple_of(2) {
            return;
        }
        let idx = usize::from((port - self.first) / 2);
        match self.used.get_mut(idx) {
            Some(slot) if *slot => *slot = false,
            _ => return,
        }
        // Releases come in time order; one stamped earlier than the oldest resting pair
        // (only tests do that) goes first, so the list stays ordered.
        match self.resting.front() {
            Some(&(_, oldest)) if now < oldest => self.resting.push_front((idx, now)),
            _ => self.resting.push_back((idx, now)),
        }
    }
}

/// Test support: a range of `len` consecutive ports (rounded up to whole pairs, starting even)
/// for one test's pool or engine. Ranges are taken one after the other from 61000-65535, above
/// Linux's ephemeral ports (32768-60999: no socket bound to port 0 and no outgoing connection
/// gets one) and away from the ranges the benches and the integration tests give servers and
/// sipp (10000-54999), so a range is never handed to two tests of this process, and another
/// program would have to name these ports to take one. Another run of these tests (another
/// worktree's) would: the first call takes an exclusive lock on
/// `$TMPDIR/pasarela-media-test-ports.lock`, held until the process ends, and waits for it
/// while another process holds it (the tests of two runs need more ports than there are up
/// there). Every port of a range is bound once before it is handed out, and a range with a
/// port in use (another program) is skipped; each process starts at a random place for the
/// same reason.
#[cfg(test)]
pub(crate) fn free_test_range(len: u16) -> RangeInclusive<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;
    const FIRST: u32 = 61_000;
    const SIZE: u32 = 65_536 - FIRST;
    /// The most the tests of this crate take (with room for ranges skipped as in use).
    const BUDGET: u32 = 4_200;
    static START: OnceLock<u32> = OnceLock::new();
    static TAKEN: AtomicU32 = AtomicU32::new(0);
    let len = u32::from(len).next_multiple_of(2);
    let start = *START.get_or_init(|| {
        claim_test_ports();
        2 * rand::random_range(0..=(SIZE - BUDGET) / 2)
    });
    loop {
        let taken = TAKEN.fetch_add(len, Ordering::Relaxed);
        assert!(
            taken + len <= BUDGET,
            "the media tests take more than {BUDGET} ports: raise the budget"
        );
        // Below 65536: `start` + BUDGET <= SIZE.
        let lo = (FIRST + start + taken) as u16;
        let hi = lo + (len - 1) as u16;
        let free = (lo..=hi).all(|p| UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, p)).is_ok());
        if free {
            return lo..=hi;
        }
    }
}

/// Test support: takes the lock that gives this process 61000-65535 for [`free_test_range`]
/// until it ends (the kernel lets go of a `flock` however the process ends), waiting while
/// another process holds it.
#[cfg(test)]
fn claim_test_ports() {
    use std::fs::{File, OpenOptions, TryLockError};
    use std::sync::OnceLock;
    static HELD: OnceLock<File> = OnceLock::new();
    let path = std::env::temp_dir().join("pasarela-media-test-ports.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            eprintln!(
                "waiting for another run of the media tests to end (it holds {})",
                path.display()
            );
            file.lock()
                .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
        }
        Err(TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
    }
    // Called once (from `free_test_range`'s `START`), so this is the only set.
    let _ = HELD.set(file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_pool_asked_to_give_back_frees_its_resting_list() {
        let now = Instant::now();
        let mut pool = PortPool::new(40000..=44999);
        pool.rested.clear();
        for idx in 0..2000 {
            pool.used[idx] = true;
            pool.release(pool.first + 2 * idx as u16, now);
        }
        assert!(pool.resting.capacity() >= 2000);
        // No bind follows the burst: only the give-back moves the rested pairs.
        pool.give_back(now + COOLDOWN);
        assert_eq!(pool.rested.len(), 2000, "every pair rested");
        assert!(
            pool.resting.capacity() <= 256,
            "capacity kept: {}",
            pool.resting.capacity()
        );
    }

    #[test]
    fn the_resting_list_gives_back_a_bursts_capacity_once_it_has_rested() {
        let now = Instant::now();
        // No socket is bound: releases of pairs marked used are all this needs.
        let mut pool = PortPool::new(40000..=44999);
        pool.rested.retain(|&idx| idx >= 2000);
        for idx in 0..2000 {
            pool.used[idx] = true;
            pool.release(pool.first + 2 * idx as u16, now);
        }
        assert!(pool.resting.capacity() >= 2000);
        pool.wake(now + COOLDOWN / 2);
        assert!(pool.resting.capacity() >= 2000, "still resting: kept");
        pool.wake(now + COOLDOWN);
        assert!(pool.resting.is_empty());
        assert!(
            pool.resting.capacity() <= 256,
            "capacity {} kept after the burst",
            pool.resting.capacity()
        );
        assert_eq!(pool.rested.len(), pool.pairs());
    }

    #[test]
    fn pair_counting() {
        assert_eq!(PortPool::new(10000..=20000).pairs(), 5000);
        assert_eq!(PortPool::new(10001..=10004).pairs(), 1); // 10002/10003
        assert_eq!(PortPool::new(10000..=10000).pairs(), 0);
        assert_eq!(PortPool::new(10000..=10001).pairs(), 1);
        assert_eq!(PortPool::new(65534..=65535).pairs(), 1);
        assert_eq!(PortPool::new(0..=3).pairs(), 1); // port 0 is never handed out
    }

    #[test]
    fn pairs_are_random() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let now = Instant::now();
        let mut pool = PortPool::new(free_test_range(200));
        let held: Vec<BoundPair> = (0..10)
            .map(|_| pool.bind_pair(ip, now, true).unwrap())
            .collect();
        let mut ports: Vec<u16> = held.iter().map(|b| b.port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 10);
        // A predictable pool hands out a run of consecutive pairs.
        assert!(!ports.windows(2).all(|w| w[1] == w[0] + 2), "{ports:?}");
    }

    #[test]
    fn every_pair_is_handed_out_once() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let now = Instant::now();
        let mut pool = PortPool::new(free_test_range(40)); // twenty pairs
        let held: Vec<BoundPair> = (0..20)
            .map(|_| pool.bind_pair(ip, now, true).unwrap())
            .collect();
        let mut ports: Vec<u16> = held.iter().map(|b| b.port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 20, "no pair twice");
        assert!(pool.bind_pair(ip, now, true).is_err(), "the range is full");
        // A double release is ignored: the pair is not handed out twice afterwards.
        let first = held[0].port;
        drop(held);
        for p in &ports {
            pool.release(*p, now);
        }
        pool.release(first, now);
        let again: Vec<BoundPair> = (0..20)
            .map(|_| pool.bind_pair(ip, now, true).unwrap())
            .collect();
        assert_eq!(again.len(), 20);
        assert!(pool.bind_pair(ip, now, true).is_err());
    }

    #[test]
    fn a_pair_bound_without_rtcp_stays_reserved_as_a_pair() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let now = Instant::now();
        let mut pool = PortPool::new(free_test_range(4)); // two pairs
        let a = pool.bind_pair(ip, now, false).unwrap();
        assert!(a.rtcp.is_none());
        // Its RTCP port is not bound by us …
        drop(UdpSocket::bind(SocketAddr::new(ip, a.port + 1)).expect("RTCP port not bound"));
        // … yet the pair is not handed out again: the other pair comes, then nothing.
        let b = pool.bind_pair(ip, now, true).unwrap();
        assert_ne!(b.port, a.port);
        assert!(b.rtcp.is_some());
        assert!(
            pool.bind_pair(ip, now, false).is_err(),
            "both pairs are taken"
        );
        let p = a.port;
        drop(a);
        pool.release(p, now);
        assert_eq!(pool.bind_pair(ip, now, true).unwrap().port, p);
    }

    #[test]
    fn pairs_another_process_holds_are_counted_as_busy_until_they_bind() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let now = Instant::now();
        let range = free_test_range(8); // four pairs
        let second = *range.start() + 2;
        let mut pool = PortPool::new(range);
        // Another process holds the RTCP port of one pair.
        let squatter = UdpSocket::bind(SocketAddr::new(ip, second + 1)).expect("bind");
        assert_eq!(pool.busy(), 0);
        let held: Vec<BoundPair> = (0..3)
            .map(|_| pool.bind_pair(ip, now, true).unwrap())
            .collect();
        assert!(held.iter().all(|b| b.port != second));
        assert!(
            pool.bind_pair(ip, now, true).is_err(),
            "only the busy pair is left"
        );
        assert_eq!(pool.busy(), 1);
        // Forgotten once it has rested (tried afresh), so a stale mark cannot last.
        pool.wake(now + COOLDOWN);
        assert_eq!(pool.busy(), 0);
        assert!(pool.bind_pair(ip, now, true).is_err(), "still held");
        assert_eq!(pool.busy(), 1);
        pool.wake(now + COOLDOWN);
        // Once the other process lets go, the pair binds and is no longer busy.
        drop(squatter);
        let b = pool.bind_pair(ip, now, true).expect("the pair is free now");
        assert_eq!(b.port, second);
        assert_eq!(pool.busy(), 0);
    }

    #[test]
    fn a_released_pair_rests() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let range = free_test_range(8); // four pairs
        let mut pool = PortPool::new(range.clone());
        let a = pool.bind_pair(ip, now, true).unwrap();
        let resting = a.port;
        drop(a);
        pool.release(resting, now);
        // Never handed out again during its cooldown while others are free …
        for _ in 0..50 {
            let b = pool.bind_pair(ip, later, true).unwrap();
            assert_ne!(b.port, resting, "a resting pair was reused");
            let p = b.port;
            drop(b);
            pool.release(p, now - COOLDOWN);
        }
        // … unless nothing else is free.
        let others: Vec<BoundPair> = (0..3)
            .map(|_| pool.bind_pair(ip, later, true).unwrap())
            .collect();
        assert!(others.iter().all(|b| b.port != resting));
        let last = pool
            .bind_pair(ip, later, true)
            .expect("the resting pair, as the last one");
        assert_eq!(last.port, resting);
        assert!(pool.bind_pair(ip, later, true).is_err());
        drop(last);
        pool.release(resting, now);
        drop(others);
        for p in range.step_by(2).filter(|p| *p != resting) {
            pool.release(p, now - COOLDOWN);
        }
        // After the cooldown it is free like any other.
        let seen = (0..200).any(|_| {
            let b = pool.bind_pair(ip, now + COOLDOWN, true).unwrap();
            let p = b.port;
            drop(b);
            pool.release(p, now - COOLDOWN);
            p == resting
        });
        assert!(seen);
    }
}
