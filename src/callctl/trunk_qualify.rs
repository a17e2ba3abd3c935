//! OPTIONS qualify of a SIP trunk: a probe every `qualify` seconds; any final response but
//! 408 means the trunk is reachable (up), no answer within the wait means it is down. A down
//! trunk is skipped by the router until a probe is answered again.
//!
//! Sans-IO: the owner sends the probes it is handed through the transaction layer and feeds
//! back responses, transaction time-outs and time.

use std::time::{Duration, Instant};

/// How long a probe may stay unanswered: half the interval, at most 4 s (UDP retransmits
/// at 0.5, 1.5 and 3.5 s fit in it).
fn answer_wait(interval: Duration) -> Duration {
    (interval / 2).clamp(Duration::from_millis(200), Duration::from_secs(4))
}

/// Whether the trunk answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// No probe answered or lost yet.
    Unknown,
    /// Answered since `since` (the first answer after being down or unknown).
    Up { since: Instant },
    /// Silent since `since` (the first probe that went unanswered).
    Down { since: Instant },
}

impl Reach {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reach::Unknown => "unknown",
            Reach::Up { .. } => "up",
            Reach::Down { .. } => "down",
        }
    }
}

/// A change of reachability, for logs and the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Up,
    Down,
}

/// One trunk's qualify state machine.
#[derive(Debug)]
pub struct Qualify {
    interval: Duration,
    reach: Reach,
    /// The probe in flight: sent then.
    probing: Option<Instant>,
    next_at: Instant,
    /// Round-trip time of the last answered probe.
    rtt: Option<Duration>,
}

impl Qualify {
    /// The first probe goes out at `now`.
    pub fn new(interval: Duration, now: Instant) -> Qualify {
        Qualify {
            interval: interval.max(Duration::from_millis(500)),
            reach: Reach::Unknown,
            probing: None,
            next_at: now,
            rtt: None,
        }
    }

    pub fn reach(&self) -> Reach {
        self.reach
    }

    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    pub fn poll_timeout(&self) -> Instant {
        match self.probing {
            Some(sent) => sent + answer_wait(self.interval),
            None => self.next_at,
        }
    }

    /// Time passed: `(send a probe now, reachability changed)`.
    pub fn handle_timeout(&mut self, now: Instant) -> (bool, Option<Change>) {
        let mut change = None;
        if let Some(sent) = self.probing {
            if now < sent + answer_wait(self.interval) {
                return (false, None);
            }
            self.probing = None;
            change = self.mark_down(sent);
        }
        if now < self.next_at {
            return (false, change);
        }
        self.probing = Some(now);
        self.next_at = now + self.interval;
        (true, change)
    }

    /// A final response to the probe in flight.
    pub fn handle_response(&mut self, now: Instant, status: u16) -> Option<Change> {
        let sent = self.probing.take()?;
        if status == 408 {
            return self.mark_down(sent);
        }
        self.rtt = Some(now.saturating_duration_since(sent));
        if matches!(self.reach, Reach::Up { .. }) {
            return None;
        }
        self.reach = Reach::Up { since: now };
        Some(Change::Up)
    }

    /// The probe's transaction ended without any response (or a transport error).
    pub fn transaction_timeout(&mut self) -> Option<Change> {
        let sent = self.probing.take()?;
        self.mark_down(sent)
    }

    fn mark_down(&mut self, sent: Instant) -> Option<Change> {
        if matches!(self.reach, Reach::Down { .. }) {
            return None;
        }
        self.reach = Reach::Down { since: sent };
        Some(Change::Down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_down_up() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut q = Qualify::new(s(10), t0);
        assert_eq!(q.handle_timeout(t0), (true, None));
        assert!(!matches!(q.reach(), Reach::Down { .. }));
        assert_eq!(
            q.handle_response(t0 + Duration::from_millis(30), 200),
            Some(Change::Up)
        );
        assert_eq!(q.rtt(), Some(Duration::from_millis(30)));
        assert_eq!(q.poll_timeout(), t0 + s(10));
        // Not due yet: nothing.
        assert_eq!(q.handle_timeout(t0 + s(5)), (false, None));
        // Second probe: no answer within 4 s.
        assert_eq!(q.handle_timeout(t0 + s(10)), (true, None));
        assert_eq!(q.poll_timeout(), t0 + s(14));
        assert_eq!(q.handle_timeout(t0 + s(14)), (false, Some(Change::Down)));
        assert!(matches!(q.reach(), Reach::Down { .. }));
        assert_eq!(q.reach(), Reach::Down { since: t0 + s(10) });
        // A late answer to the lost probe does not count.
        assert_eq!(q.handle_response(t0 + s(15), 200), None);
        assert!(matches!(q.reach(), Reach::Down { .. }));
        // Still down after the next silent probe (no second change).
        assert_eq!(q.handle_timeout(t0 + s(20)), (true, None));
        assert_eq!(q.transaction_timeout(), None);
        // Answered again: up.
        assert_eq!(q.handle_timeout(t0 + s(30)), (true, None));
        assert_eq!(q.handle_response(t0 + s(30), 404), Some(Change::Up));
        assert!(!matches!(q.reach(), Reach::Down { .. }));
    }

    #[test]
    fn timeout_response_is_down() {
        let t0 = Instant::now();
        let mut q = Qualify::new(Duration::from_secs(2), t0);
        q.handle_timeout(t0);
        assert_eq!(q.handle_response(t0, 408), Some(Change::Down));
    }
}
