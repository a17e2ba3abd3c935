//! Overload admission: when the box cannot keep up, new calls are refused at once with
//! `503 Service Unavailable` and `Retry-After` instead of being queued until their callers
//! retransmit and give up (the cliff: queued INVITEs hold memory, retransmissions add load,
//! calls pile up until ports and sockets run out and nearly every call fails).
//!
//! Two signals, both cheap and both taken before a call takes anything:
//! - **queue delay**: how long a message waited between the transport and the SIP core. A new
//!   INVITE that waited longer than `[limits] queue_delay_ms` is refused; the refusal costs a
//!   fraction of a call, so the queue drains and the served rate stays near capacity;
//! - **call budget**: calls in progress against what the process's open-files limit allows;
//!   with a socket gauge ([`Admission::with_socket_budget`]) the sockets the media relay really
//!   holds are counted (two to four per call: one per leg that multiplexes RTCP on its RTP
//!   port, two per leg that does not), and a new call is refused when the worst case of one
//!   more call ([`SOCKETS_PER_CALL`]) would not fit.
//!
//! Sans-IO: [`Admission::shed`] takes the message's queue delay and the calls in progress; the
//! SIP core's transaction layer sends the refusal statelessly (no transaction, no port, no
//! socket). Refusals are counted and reported at most every [`REPORT_EVERY`].

use std::time::{Duration, Instant};

/// Refusals are logged at most this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Sockets a relayed call holds at most (RTP and RTCP on each leg; a leg that multiplexes RTCP
/// on its RTP port, RFC 5761, holds one).
pub const SOCKETS_PER_CALL: u64 = 4;

/// Sockets a relayed call holds at least (both legs multiplex RTCP).
pub const MIN_SOCKETS_PER_CALL: u64 = 2;

/// Reads how many sockets the media relay holds open now
/// ([`crate::media::MediaEngine::open_sockets`]).
pub type SocketGauge = Box<dyn Fn() -> usize + Send>;

/// Open files kept for everything but calls (listeners, store, dashboard, logs, DNS).
const RESERVED_FILES: u64 = 256;

/// Why new calls are being refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The message waited longer than the queue delay bound.
    QueueDelay(Duration),
    /// Calls in progress reached the call budget.
    Budget(usize),
    /// The media sockets open (this many) leave no room for another call's.
    Sockets(usize),
}

/// The admission state: bounds, and refusals since the last report.
pub struct Admission {
    max_delay: Duration,
    max_calls: usize,
    /// The media relay's open sockets, and how many it may hold.
    sockets: Option<(SocketGauge, usize)>,
    refused: u64,
    last: Option<Shed>,
    last_report: Option<Instant>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("max_delay", &self.max_delay)
            .field("max_calls", &self.max_calls)
            .field("socket_budget", &self.sockets.as_ref().map(|(_, b)| *b))
            .field("refused", &self.refused)
            .finish()
    }
}

impl Admission {
    /// New INVITEs are refused when they waited longer than `max_delay` or when `max_calls`
    /// calls are in progress.
    pub fn new(max_delay: Duration, max_calls: usize) -> Admission {
        Admission {
            max_delay,
            max_calls: max_calls.max(1),
            sockets: None,
            refused: 0,
            last: None,
            last_report: None,
        }
    }

    /// The calls at once that `open_files` (the process's limit) allow, at
    /// [`SOCKETS_PER_CALL`] each after [`RESERVED_FILES`]. (RTP port exhaustion is refused by
    /// the media allocator itself, before it binds anything.)
    pub fn call_budget(open_files: u64) -> usize {
        let files = open_files.saturating_sub(RESERVED_FILES);
        usize::try_from(files / SOCKETS_PER_CALL)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// The calls at once that `open_files` allow when every call multiplexes RTCP on both
    /// legs ([`MIN_SOCKETS_PER_CALL`]): the call cap when the sockets are counted as they are
    /// used ([`Admission::with_socket_budget`]), which then refuses first.
    pub fn call_cap_counting_sockets(open_files: u64) -> usize {
        let files = open_files.saturating_sub(RESERVED_FILES);
        usize::try_from(files / MIN_SOCKETS_PER_CALL)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// Counts the media sockets really open (`gauge`) against what `open_files` (the process's
    /// limit) leaves after [`RESERVED_FILES`]: a new call is refused when one more call at
    /// its worst ([`SOCKETS_PER_CALL`]) would not fit.
    pub fn with_socket_budget(mut self, gauge: SocketGauge, open_files: u64) -> Admission {
        let budget =
            usize::try_from(open_files.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
        self.sockets = Some((gauge, budget));
        self
    }

    pub fn max_calls(&self) -> usize {
        self.max_calls
    }

    /// Whether a new call arriving now, after waiting `queued`, with `calls` in progress, is
    /// to be refused.
    pub fn shed(&self, queued: Duration, calls: usize) -> Option<Shed> {
        if queued > self.max_delay {
            return Some(Shed::QueueDelay(queued));
        }
        if let Some((gauge, budget)) = &self.sockets {
            let open = gauge();
            if open.saturating_add(SOCKETS_PER_CALL as usize) > *budget {
                return Some(Shed::Sockets(open));
            }
        }
        if calls >= self.max_calls {
            Some(Shed::Budget(calls))
        } else {
            None
        }
    }

    /// Counts `n` refusals for `why`.
    pub fn refused(&mut self, n: u64, why: Shed) {
        if n > 0 {
            self.refused += n;
            self.last = Some(why);
        }
    }

    /// The refusals since the last report and the last reason, when it is time to report them.
    pub fn report(&mut self, now: Instant) -> Option<(u64, Shed)> {
        if self.refused == 0
            || self
                .last_report
                .is_some_and(|t| now.saturating_duration_since(t) < REPORT_EVERY)
        {
            return None;
        }
        self.last_report = Some(now);
        let n = std::mem::take(&mut self.refused);
        self.last.take().map(|why| (n, why))
    }
}

/// The process's open-files limit (soft), or a conservative guess.
pub fn open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if ok && lim.rlim_cur != libc::RLIM_INFINITY {
        lim.rlim_cur
    } else {
        1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_call_that_waited_too_long_is_refused() {
        let a = Admission::new(Duration::from_millis(200), 100);
        assert_eq!(a.shed(Duration::from_millis(10), 0), None);
        assert_eq!(a.shed(Duration::from_millis(200), 0), None);
        assert_eq!(
            a.shed(Duration::from_millis(201), 0),
            Some(Shed::QueueDelay(Duration::from_millis(201)))
        );
    }

    #[test]
    fn calls_beyond_the_budget_are_refused() {
        let a = Admission::new(Duration::from_millis(200), 3);
        assert_eq!(a.shed(Duration::ZERO, 2), None);
        assert_eq!(a.shed(Duration::ZERO, 3), Some(Shed::Budget(3)));
    }

    #[test]
    fn the_budget_is_what_the_open_files_allow() {
        assert_eq!(Admission::call_budget(20_000), (20_000 - 256) / 4);
        assert_eq!(Admission::call_budget(1024), 192);
        // Never zero.
        assert_eq!(Admission::call_budget(0), 1);
    }

    #[test]
    fn the_sockets_really_open_are_counted() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let open = Arc::new(AtomicUsize::new(0));
        let gauge = open.clone();
        // 256 reserved + 20 sockets: room for five four-socket calls or ten muxed ones.
        let files = 256 + 20;
        let a = Admission::new(
            Duration::from_millis(200),
            Admission::call_cap_counting_sockets(files),
        )
        .with_socket_budget(Box::new(move || gauge.load(Ordering::Relaxed)), files);
        assert_eq!(a.max_calls(), 10);
        // Nine calls multiplexing on both legs hold 18 sockets: one more (at worst 4) does
        // not fit.
        open.store(16, Ordering::Relaxed);
        assert_eq!(a.shed(Duration::ZERO, 8), None);
        open.store(18, Ordering::Relaxed);
        assert_eq!(a.shed(Duration::ZERO, 9), Some(Shed::Sockets(18)));
        // Four calls without multiplexing hold 16: the fifth fits, a sixth does not.
        open.store(16, Ordering::Relaxed);
        assert_eq!(a.shed(Duration::ZERO, 4), None);
        open.store(20, Ordering::Relaxed);
        assert_eq!(a.shed(Duration::ZERO, 5), Some(Shed::Sockets(20)));
        // The queue delay still comes first.
        assert_eq!(
            a.shed(Duration::from_secs(1), 0),
            Some(Shed::QueueDelay(Duration::from_secs(1)))
        );
    }

    #[test]
    fn refusals_are_reported_at_most_every_ten_seconds() {
        let mut a = Admission::new(Duration::from_millis(200), 3);
        let t0 = Instant::now();
        assert_eq!(a.report(t0), None);
        a.refused(5, Shed::Budget(3));
        assert_eq!(a.report(t0), Some((5, Shed::Budget(3))));
        a.refused(2, Shed::Budget(3));
        assert_eq!(a.report(t0 + Duration::from_secs(1)), None);
        assert_eq!(a.report(t0 + REPORT_EVERY), Some((2, Shed::Budget(3))));
    }
}
