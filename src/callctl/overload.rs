//! Overload admission: when the box cannot keep up, new calls are refused at once with
//! `503 Service Unavailable` and `Retry-After` instead of being queued until their callers
//! retransmit and give up (the cliff: queued INVITEs hold memory, retransmissions add load,
//! calls pile up until ports and sockets run out and nearly every call fails).
//!
//! Five signals, all cheap (O(1)) and all taken before a call takes anything:
//! - **queue delay**: how long a message waited between the transport and the SIP core. A new
//!   INVITE that waited longer than `[limits] queue_delay_ms` is refused; the refusal costs a
//!   fraction of a call, so the queue drains and the served rate stays near capacity;
//! - **backlog**: how full the core's inbound queue is. A new INVITE is refused while the
//!   queue is [`BACKLOG_SHED`] full or more, so that the rest stays free for the messages of
//!   the calls already admitted (their ACKs, BYEs and responses): a full queue drops whatever
//!   arrives, and a dropped ACK or response costs retransmissions and, in a burst, the call.
//!   The queue's length is sized from the queue delay at an assumed service rate; a core
//!   faster than that fills the queue before the delay bound is reached, and this signal
//!   takes over;
//! - **transactions**: the server transactions held (the transaction layer's cap, beyond
//!   which it refuses every new request, a BYE too). A new INVITE is refused when what the
//!   calls in progress may still open (their BYEs, a re-INVITE) and a reserve
//!   ([`transaction_reserve`]) would not fit under the cap, so that admitted calls can always
//!   end;
//! - **call budget**: calls in progress against what the process's open-files limit allows;
//!   with a socket gauge ([`Admission::with_socket_budget`]) the sockets the media relay really
//!   holds are counted (two to four per call: one per leg that multiplexes RTCP on its RTP
//!   port, two per leg that does not), and a new call is refused when the worst case of one
//!   more call ([`SOCKETS_PER_CALL`]) would not fit;
//! - **RTP ports**: with a port gauge ([`Admission::with_port_budget`]) the RTP/RTCP pairs
//!   free in the relay's range are read, and a new call is refused when one more call's pairs
//!   ([`PAIRS_PER_CALL`]) would not fit beside those of the calls still waiting for the router
//!   and a reserve ([`port_reserve`]). Admission thus refuses before the media allocator runs
//!   out (its `503 No media ports available` comes after the call was taken in, with a
//!   transaction). Ranges of fewer than [`MIN_PORT_BUDGET_PAIRS`] are left to the allocator,
//!   whose refusals are recorded.
//!
//! Calls waiting for the router take their ports and sockets once routed, so they count
//! against both budgets as if they held them already.
//!
//! **Authorised calls first** ([`Caller`]): a call from a phone is set up with two INVITEs,
//! the first answered with a digest challenge, the second with the caller's credentials. A
//! refusal of the second wastes what both sides paid for the first (a round trip, the
//! challenge), and a call once challenged should complete. A call from a configured trunk (or
//! a DUNDi peer, when the office takes public calls) is never challenged: the configuration
//! lets its source address in, and it is a provider's or a partner's call, not a stranger's.
//! So every signal refuses a [`Caller::New`] INVITE (a first INVITE, anyone else's, anything
//! whose credentials do not verify) at a lower load than a [`Caller::Authorised`] one (valid
//! credentials for a nonce we issued, checked without side effects before admission and
//! checked again by the digest gate afterwards; or a source the configuration trusts,
//! never a header the sender chooses):
//! - the queue delay bound is doubled ([`AUTHORISED_DELAY_FACTOR`]) and the backlog bound
//!   raised to [`BACKLOG_SHED_AUTHORISED`] for authorised INVITEs (both soft bounds: latency);
//! - the hard bounds (the transactions that leave room for BYEs, the sockets, the RTP ports,
//!   the call budget) are what authorised INVITEs are refused at; new INVITEs are refused a
//!   headroom earlier ([`transaction_headroom`], [`socket_headroom`], [`port_reserve`] once
//!   more, [`call_headroom`]), the room for the calls challenged but not yet back and for the
//!   trunks' calls.
//!
//! The preference moves only where the refusals land: no bound is lifted for anyone, and an
//! INVITE admitted as authorised still goes the way it would have gone otherwise (a phone's
//! still has to authenticate like any other).
//!
//! Sans-IO: [`Admission::verdict`] takes a [`Load`] (the message's queue delay, the queue's
//! fill, the calls in progress and those waiting for the router, the server transactions) and
//! answers for both kinds of callers; the relay's gauges are read through closures the shell
//! hands in. The SIP core tells the callers apart ([`Refuse`]) and its transaction layer
//! sends the refusal statelessly (no transaction, no port, no socket). Refusals are counted and reported at most every [`REPORT_EVERY`].

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

/// RTP/RTCP pairs a relayed call holds: one per leg, RTCP multiplexed or not. A call has one
/// relay, allocated when the B2BUA starts it; its forks and hold music use that relay, and
/// nothing else in a call takes pairs (a transfer's new call is a call of its own).
pub const PAIRS_PER_CALL: usize = crate::media::PAIRS_PER_RELAY;

/// The smallest relay range (in RTP/RTCP pairs, 50 calls) whose ports admission budgets
/// ([`Admission::with_port_budget`]).
pub const MIN_PORT_BUDGET_PAIRS: usize = 100;

/// Reads how many RTP/RTCP pairs of the relay's range are free now
/// ([`crate::media::MediaEngine::free_pairs`]).
pub type PortGauge = Box<dyn Fn() -> usize + Send>;

/// The pairs of a range of `pairs` kept back from admission: 1 % of the range, at least one
/// call's. They cover what the gauge cannot see: pairs another process holds (free to the
/// gauge, skipped by the allocator) and calls that start without an INVITE (PSTN lines).
pub fn port_reserve(pairs: usize) -> usize {
    (pairs / 100).max(PAIRS_PER_CALL)
}

/// The fill of the core's inbound queue (numerator, denominator) from which new INVITEs are
/// refused: half, leaving the other half for the messages of the calls already admitted.
pub const BACKLOG_SHED: (usize, usize) = (1, 2);

/// The fill of the core's inbound queue from which authorised INVITEs ([`Caller::Authorised`]) are
/// refused too: three quarters, leaving a quarter for the messages of the calls already admitted.
pub const BACKLOG_SHED_AUTHORISED: (usize, usize) = (3, 4);

/// Authorised INVITEs ([`Caller::Authorised`]) are refused when they waited this many times the queue
/// delay bound (the default 200 ms bound gives 400 ms: still under the caller's first
/// retransmission at T1, 500 ms).
pub const AUTHORISED_DELAY_FACTOR: u32 = 2;

/// Server transactions a call in progress may still open (its BYE, a re-INVITE or UPDATE).
pub const TRANSACTIONS_PER_CALL: usize = 2;

/// The server transactions of a cap of `max` kept back from new calls beside those of the
/// calls in progress: 1 % of the cap, at least 64 (REGISTERs, OPTIONS, SUBSCRIBEs go on).
pub fn transaction_reserve(max: usize) -> usize {
    (max / 100).max(64)
}

/// The server transactions of a cap of `max` kept, beyond [`transaction_reserve`], for calls
/// challenged and not yet back with their credentials: new INVITEs are refused this much
/// earlier (1 % of the cap, at least 64; at 3 000 calls/s, 2 000 transactions cover the
/// challenged calls of several hundred milliseconds).
pub fn transaction_headroom(max: usize) -> usize {
    transaction_reserve(max)
}

/// The sockets of a budget of `budget` kept for calls challenged and not yet back: 1 % (none
/// for budgets under 100 sockets, a deliberate cap of a few calls).
pub fn socket_headroom(budget: usize) -> usize {
    budget / 100
}

/// The calls of a call budget of `max` kept for calls challenged and not yet back: 1 % (none
/// under 100 calls).
pub fn call_headroom(max: usize) -> usize {
    max / 100
}

/// Who sent a new INVITE, as far as admission tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A first INVITE (it is to be challenged), one let in without a password only because
    /// the office takes public calls, one claiming a trunk by what it carries (From, the
    /// Request-URI), or one whose credentials do not verify: refused first.
    New,
    /// An INVITE whose credentials answer a challenge of ours (a nonce we issued to this
    /// source, unexpired and not replayed, and a digest that verifies:
    /// `DigestGate::answers_challenge`), or one the configuration lets in without a
    /// challenge by its source address (a trunk's `sources`, a DUNDi peer's address while
    /// the office takes public calls). Refused at the hard bounds only.
    Authorised,
}

/// What the core does with new INVITEs while it handles one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Refuse {
    /// Every new INVITE is taken in.
    #[default]
    Nothing,
    /// New INVITEs are refused unless they are authorised: their credentials answer our
    /// challenge, or the configuration trusts their source ([`Caller::Authorised`]).
    Unauthorised,
    /// Every new INVITE is refused.
    Every,
}

/// Admission's answer for both kinds of callers under one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Why a [`Caller::New`] INVITE is refused.
    pub new: Option<Shed>,
    /// Why a [`Caller::Authorised`] one is (only ever when a new one is too).
    pub authorised: Option<Shed>,
}

impl Verdict {
    /// What the core refuses under this verdict.
    pub fn refuse(&self) -> Refuse {
        match (self.new, self.authorised) {
            (None, _) => Refuse::Nothing,
            (Some(_), None) => Refuse::Unauthorised,
            (Some(_), Some(_)) => Refuse::Every,
        }
    }

    /// The reason to count refusals under: the one that refuses the most.
    pub fn why(&self) -> Option<Shed> {
        self.authorised.or(self.new)
    }
}

/// What admission looks at for a new call, read by the shell when the message comes out of
/// the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// How long the message waited between the transport and the SIP core.
    pub queued: Duration,
    /// Messages still waiting in the core's inbound queue, and how many it holds at most
    /// (0: not known).
    pub backlog: usize,
    pub backlog_max: usize,
    /// Calls in progress.
    pub calls: usize,
    /// Calls waiting for the router (they take their ports and sockets once routed).
    pub routing: usize,
    /// Server transactions held.
    pub server_transactions: usize,
}

impl Load {
    /// A message that waited `queued`, with `calls` in progress and `routing` waiting for the
    /// router; the queue and the transactions empty.
    pub fn new(queued: Duration, calls: usize, routing: usize) -> Load {
        Load {
            queued,
            calls,
            routing,
            ..Load::default()
        }
    }
}

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
    /// The RTP/RTCP pairs free (this many) leave no room for another call's beside the
    /// reserve.
    Ports(usize),
    /// The core's inbound queue holds this many messages ([`BACKLOG_SHED`] of it or more).
    Backlog(usize),
    /// The server transactions held (this many) leave no room for another call beside what
    /// the calls in progress may still open.
    Transactions(usize),
}

/// The admission state: bounds, and refusals since the last report.
pub struct Admission {
    max_delay: Duration,
    max_calls: usize,
    /// The media relay's open sockets, and how many it may hold.
    sockets: Option<(SocketGauge, usize)>,
    /// The relay's free RTP/RTCP pairs, and how many of them admission leaves alone.
    ports: Option<(PortGauge, usize)>,
    /// The transaction layer's cap on server transactions.
    max_transactions: Option<usize>,
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
            .field("port_reserve", &self.ports.as_ref().map(|(_, r)| *r))
            .field("max_transactions", &self.max_transactions)
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
            ports: None,
            max_transactions: None,
            refused: 0,
            last: None,
            last_report: None,
        }
    }

    /// The calls at once that `open_files` (the process's limit) allow, at
    /// [`SOCKETS_PER_CALL`] each after [`RESERVED_FILES`]. (RTP ports are counted by
    /// [`Admission::with_port_budget`].)
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

    /// Reads the RTP/RTCP pairs free in the relay's range (`gauge`) of `pairs` in all: a new
    /// call is refused when its [`PAIRS_PER_CALL`], and those of the calls waiting for the
    /// router, would eat into [`port_reserve`]; so admission refuses, statelessly, before the
    /// media allocator finds no pair.
    ///
    /// A range of fewer than [`MIN_PORT_BUDGET_PAIRS`] is a deliberate cap of a few calls, not
    /// something a flood over-commits: there the allocator refuses the call after it was
    /// authenticated, also with 503 + Retry-After, and its record says "No media ports
    /// available" for the admin (a refused attempt is recorded; admission's are only counted).
    pub fn with_port_budget(mut self, gauge: PortGauge, pairs: usize) -> Admission {
        self.ports = (pairs >= MIN_PORT_BUDGET_PAIRS).then(|| (gauge, port_reserve(pairs)));
        self
    }

    /// Counts the server transactions against the transaction layer's cap `max`
    /// ([`crate::sip::transaction::TransactionLayer::set_max_server_transactions`]): a new call
    /// is refused when [`TRANSACTIONS_PER_CALL`] for each call in progress and waiting for the
    /// router, this one included, and [`transaction_reserve`] would not fit. Beyond the cap the
    /// layer refuses every new request, a BYE of an admitted call too.
    pub fn with_transaction_budget(mut self, max: usize) -> Admission {
        self.max_transactions = Some(max);
        self
    }

    pub fn max_calls(&self) -> usize {
        self.max_calls
    }

    /// Whether a new call from a [`Caller::New`] arriving under `load` is to be refused (the
    /// stricter of the two).
    pub fn shed(&self, load: &Load) -> Option<Shed> {
        self.shed_for(load, Caller::New)
    }

    /// Why new INVITEs of either kind arriving under `load` are to be refused. The
    /// authorised caller's bounds are only looked at when a new one is refused, so that an
    /// authorised INVITE is never refused while a new one is taken in.
    pub fn verdict(&self, load: &Load) -> Verdict {
        let new = self.shed_for(load, Caller::New);
        let authorised = new.and_then(|_| self.shed_for(load, Caller::Authorised));
        Verdict { new, authorised }
    }

    /// Whether a new call from `caller` arriving under `load` is to be refused.
    pub fn shed_for(&self, load: &Load, caller: Caller) -> Option<Shed> {
        let new = caller == Caller::New;
        let max_delay = if new {
            self.max_delay
        } else {
            self.max_delay.saturating_mul(AUTHORISED_DELAY_FACTOR)
        };
        if load.queued > max_delay {
            return Some(Shed::QueueDelay(load.queued));
        }
        let (num, den) = if new {
            BACKLOG_SHED
        } else {
            BACKLOG_SHED_AUTHORISED
        };
        if load.backlog_max > 0
            && load.backlog.saturating_mul(den) >= load.backlog_max.saturating_mul(num)
        {
            return Some(Shed::Backlog(load.backlog));
        }
        // This call and those still to take theirs.
        let coming = load.routing.saturating_add(1);
        if let Some(max) = self.max_transactions {
            let open = load
                .calls
                .saturating_add(coming)
                .saturating_mul(TRANSACTIONS_PER_CALL);
            let kept = transaction_reserve(max).saturating_add(if new {
                transaction_headroom(max)
            } else {
                0
            });
            let needed = load
                .server_transactions
                .saturating_add(open)
                .saturating_add(kept);
            if needed > max {
                return Some(Shed::Transactions(load.server_transactions));
            }
        }
        if let Some((gauge, budget)) = &self.sockets {
            let open = gauge();
            let worst = coming.saturating_mul(SOCKETS_PER_CALL as usize);
            let kept = if new { socket_headroom(*budget) } else { 0 };
            if open.saturating_add(worst).saturating_add(kept) > *budget {
                return Some(Shed::Sockets(open));
            }
        }
        if let Some((gauge, reserve)) = &self.ports {
            let free = gauge();
            let needed = coming.saturating_mul(PAIRS_PER_CALL);
            // New calls leave the reserve twice: once for what the gauge cannot see, once for
            // the calls challenged and not yet back.
            let kept = if new {
                reserve.saturating_mul(2)
            } else {
                *reserve
            };
            if free < needed.saturating_add(kept) {
                return Some(Shed::Ports(free));
            }
        }
        let budget = if new {
            self.max_calls.saturating_sub(call_headroom(self.max_calls))
        } else {
            self.max_calls
        };
        if load.calls >= budget {
            Some(Shed::Budget(load.calls))
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
        assert_eq!(a.shed(&Load::new(Duration::from_millis(10), 0, 0)), None);
        assert_eq!(a.shed(&Load::new(Duration::from_millis(200), 0, 0)), None);
        assert_eq!(
            a.shed(&Load::new(Duration::from_millis(201), 0, 0)),
            Some(Shed::QueueDelay(Duration::from_millis(201)))
        );
    }

    #[test]
    fn calls_beyond_the_budget_are_refused() {
        let a = Admission::new(Duration::from_millis(200), 3);
        assert_eq!(a.shed(&Load::new(Duration::ZERO, 2, 0)), None);
        assert_eq!(
            a.shed(&Load::new(Duration::ZERO, 3, 0)),
            Some(Shed::Budget(3))
        );
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
        assert_eq!(a.shed(&Load::new(Duration::ZERO, 8, 0)), None);
        open.store(18, Ordering::Relaxed);
        assert_eq!(
            a.shed(&Load::new(Duration::ZERO, 9, 0)),
            Some(Shed::Sockets(18))
        );
        // Four calls without multiplexing hold 16: the fifth fits, a sixth does not.
        open.store(16, Ordering::Relaxed);
        assert_eq!(a.shed(&Load::new(Duration::ZERO, 4, 0)), None);
        open.store(20, Ordering::Relaxed);
        assert_eq!(
            a.shed(&Load::new(Duration::ZERO, 5, 0)),
            Some(Shed::Sockets(20))
        );
        // The queue delay still comes first.
        assert_eq!(
            a.shed(&Load::new(Duration::from_secs(1), 0, 0)),
            Some(Shed::QueueDelay(Duration::from_secs(1)))
        );
    }

    #[test]
    fn a_range_of_a_few_calls_is_left_to_the_allocator_which_records_its_refusals() {
        let a = Admission::new(Duration::from_millis(200), 10_000)
            .with_port_budget(Box::new(|| 0), MIN_PORT_BUDGET_PAIRS - 1);
        assert_eq!(a.shed(&Load::new(Duration::ZERO, 49, 0)), None);
        let a = Admission::new(Duration::from_millis(200), 10_000)
            .with_port_budget(Box::new(|| 0), MIN_PORT_BUDGET_PAIRS);
        assert_eq!(
            a.shed(&Load::new(Duration::ZERO, 50, 0)),
            Some(Shed::Ports(0))
        );
    }

    #[test]
    fn the_port_reserve_is_one_percent_of_the_range_and_at_least_one_call() {
        assert_eq!(port_reserve(5000), 50);
        assert_eq!(port_reserve(1000), 10);
        assert_eq!(port_reserve(100), PAIRS_PER_CALL);
        assert_eq!(port_reserve(0), PAIRS_PER_CALL);
    }

    #[test]
    fn a_call_whose_rtp_ports_would_not_fit_is_refused_before_the_range_runs_out() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let free = Arc::new(AtomicUsize::new(1000));
        let gauge = free.clone();
        // 1000 pairs (500 calls): 10 kept back.
        let a = Admission::new(Duration::from_millis(200), 10_000)
            .with_port_budget(Box::new(move || gauge.load(Ordering::Relaxed)), 1000);
        assert_eq!(
            a.shed_for(&Load::new(Duration::ZERO, 0, 0), Caller::Authorised),
            None
        );
        // One more call's two pairs still fit beside the reserve …
        free.store(12, Ordering::Relaxed);
        assert_eq!(
            a.shed_for(&Load::new(Duration::ZERO, 494, 0), Caller::Authorised),
            None
        );
        // … not when they would eat into it, although the allocator would still find them.
        free.store(11, Ordering::Relaxed);
        assert_eq!(
            a.shed_for(&Load::new(Duration::ZERO, 494, 0), Caller::Authorised),
            Some(Shed::Ports(11))
        );
        free.store(0, Ordering::Relaxed);
        assert_eq!(
            a.shed_for(&Load::new(Duration::ZERO, 500, 0), Caller::Authorised),
            Some(Shed::Ports(0))
        );
        // Calls waiting for the router take their pairs once routed: they count now.
        free.store(20, Ordering::Relaxed);
        assert_eq!(
            a.shed_for(&Load::new(Duration::ZERO, 490, 4), Caller::Authorised),
            None
        );
        assert_eq!(
            a.shed_for(&Load::new(Duration::ZERO, 490, 5), Caller::Authorised),
            Some(Shed::Ports(20))
        );
        // As soon as pairs come back, calls are admitted again.
        free.store(1000, Ordering::Relaxed);
        assert_eq!(
            a.shed_for(&Load::new(Duration::ZERO, 0, 0), Caller::Authorised),
            None
        );
        // The queue delay still comes first.
        free.store(0, Ordering::Relaxed);
        assert_eq!(
            a.shed_for(&Load::new(Duration::from_secs(1), 0, 0), Caller::Authorised),
            Some(Shed::QueueDelay(Duration::from_secs(1)))
        );
    }

    #[test]
    fn calls_waiting_for_the_router_count_against_the_socket_budget() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let open = Arc::new(AtomicUsize::new(0));
        let gauge = open.clone();
        // 256 reserved + 40 sockets: ten calls at their worst.
        let a = Admission::new(Duration::from_millis(200), 1000)
            .with_socket_budget(Box::new(move || gauge.load(Ordering::Relaxed)), 256 + 40);
        open.store(20, Ordering::Relaxed);
        assert_eq!(a.shed(&Load::new(Duration::ZERO, 5, 4)), None);
        assert_eq!(
            a.shed(&Load::new(Duration::ZERO, 5, 5)),
            Some(Shed::Sockets(20))
        );
    }

    #[test]
    fn a_new_call_is_refused_while_the_queue_is_half_full_whatever_the_delay() {
        let a = Admission::new(Duration::from_millis(200), 1000);
        let at = |backlog, backlog_max| Load {
            backlog,
            backlog_max,
            ..Load::new(Duration::from_millis(1), 0, 0)
        };
        // A fast core: 4 000 messages waiting, but each waited only 1 ms.
        assert_eq!(a.shed(&at(1999, 4000)), None);
        assert_eq!(a.shed(&at(2000, 4000)), Some(Shed::Backlog(2000)));
        assert_eq!(a.shed(&at(4000, 4000)), Some(Shed::Backlog(4000)));
        // As the queue drains, calls are admitted again.
        assert_eq!(a.shed(&at(100, 4000)), None);
        // A queue of unknown size is not counted.
        assert_eq!(a.shed(&at(5000, 0)), None);
        // The queue delay still comes first.
        assert_eq!(
            a.shed(&Load {
                queued: Duration::from_secs(1),
                ..at(4000, 4000)
            }),
            Some(Shed::QueueDelay(Duration::from_secs(1)))
        );
    }

    #[test]
    fn a_new_call_is_refused_before_the_transaction_cap_leaves_no_room_for_byes() {
        // A cap of 10 000 server transactions: 100 kept back, two for each call in progress.
        let a = Admission::new(Duration::from_millis(200), 100_000).with_transaction_budget(10_000);
        assert_eq!(transaction_reserve(10_000), 100);
        let at = |server_transactions, calls, routing| Load {
            server_transactions,
            ..Load::new(Duration::ZERO, calls, routing)
        };
        // 1 000 calls in progress (and this one) may still open 2 002.
        assert_eq!(a.shed_for(&at(7898, 1000, 0), Caller::Authorised), None);
        assert_eq!(
            a.shed_for(&at(7899, 1000, 0), Caller::Authorised),
            Some(Shed::Transactions(7899))
        );
        // Calls waiting for the router count as in progress.
        assert_eq!(a.shed_for(&at(7896, 1000, 1), Caller::Authorised), None);
        assert_eq!(
            a.shed_for(&at(7897, 1000, 1), Caller::Authorised),
            Some(Shed::Transactions(7897))
        );
        // As transactions end, calls are admitted again.
        assert_eq!(a.shed_for(&at(5000, 1000, 0), Caller::Authorised), None);
        // Without a budget the transactions are not counted.
        let free = Admission::new(Duration::from_millis(200), 100_000);
        assert_eq!(free.shed(&at(1_000_000, 1000, 0)), None);
        // The small reserve of a small cap.
        assert_eq!(transaction_reserve(1000), 64);
    }

    #[test]
    fn a_challenged_call_waits_twice_as_long_in_the_queue_before_it_is_refused() {
        let a = Admission::new(Duration::from_millis(200), 1000);
        let waited = |ms| Load::new(Duration::from_millis(ms), 0, 0);
        assert_eq!(a.verdict(&waited(200)), Verdict::default());
        assert_eq!(a.verdict(&waited(200)).refuse(), Refuse::Nothing);
        let v = a.verdict(&waited(201));
        assert_eq!(v.new, Some(Shed::QueueDelay(Duration::from_millis(201))));
        assert_eq!(v.authorised, None);
        assert_eq!(v.refuse(), Refuse::Unauthorised);
        assert_eq!(a.shed_for(&waited(400), Caller::Authorised), None);
        let v = a.verdict(&waited(401));
        assert_eq!(
            v.authorised,
            Some(Shed::QueueDelay(Duration::from_millis(401)))
        );
        assert_eq!(v.refuse(), Refuse::Every);
        assert_eq!(v.why(), v.authorised);
    }

    #[test]
    fn a_challenged_call_is_refused_only_from_three_quarters_of_the_queue() {
        let a = Admission::new(Duration::from_millis(200), 1000);
        let at = |backlog| Load {
            backlog,
            backlog_max: 4000,
            ..Load::new(Duration::from_millis(1), 0, 0)
        };
        assert_eq!(a.verdict(&at(2000)).refuse(), Refuse::Unauthorised);
        assert_eq!(a.shed_for(&at(2999), Caller::Authorised), None);
        assert_eq!(
            a.shed_for(&at(3000), Caller::Authorised),
            Some(Shed::Backlog(3000))
        );
        assert_eq!(a.verdict(&at(3000)).refuse(), Refuse::Every);
    }

    #[test]
    fn new_calls_leave_transaction_room_for_the_challenged_ones() {
        // Cap 10 000: 100 kept back for everyone, 100 more for the challenged calls.
        let a = Admission::new(Duration::from_millis(200), 100_000).with_transaction_budget(10_000);
        assert_eq!(transaction_headroom(10_000), 100);
        let at = |server_transactions| Load {
            server_transactions,
            ..Load::new(Duration::ZERO, 1000, 0)
        };
        assert_eq!(a.verdict(&at(7798)), Verdict::default());
        let v = a.verdict(&at(7799));
        assert_eq!(v.new, Some(Shed::Transactions(7799)));
        assert_eq!(v.refuse(), Refuse::Unauthorised);
        // The BYEs' room is a hard bound: challenged calls are refused before it too.
        assert_eq!(a.verdict(&at(7898)).refuse(), Refuse::Unauthorised);
        let v = a.verdict(&at(7899));
        assert_eq!(v.authorised, Some(Shed::Transactions(7899)));
        assert_eq!(v.refuse(), Refuse::Every);
    }

    #[test]
    fn new_calls_leave_ports_sockets_and_calls_for_the_challenged_ones() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        // 1000 pairs, 10 kept back: a challenged call needs 2 + 10 free, a new one 2 + 20.
        let free = Arc::new(AtomicUsize::new(22));
        let gauge = free.clone();
        let a = Admission::new(Duration::from_millis(200), 10_000)
            .with_port_budget(Box::new(move || gauge.load(Ordering::Relaxed)), 1000);
        let load = Load::new(Duration::ZERO, 400, 0);
        assert_eq!(a.verdict(&load).refuse(), Refuse::Nothing);
        free.store(21, Ordering::Relaxed);
        assert_eq!(a.verdict(&load).new, Some(Shed::Ports(21)));
        assert_eq!(a.verdict(&load).refuse(), Refuse::Unauthorised);
        free.store(12, Ordering::Relaxed);
        assert_eq!(a.verdict(&load).refuse(), Refuse::Unauthorised);
        free.store(11, Ordering::Relaxed);
        assert_eq!(a.verdict(&load).refuse(), Refuse::Every);

        // 1000 sockets for calls, 10 kept for the challenged ones.
        let open = Arc::new(AtomicUsize::new(986));
        let gauge = open.clone();
        let a = Admission::new(Duration::from_millis(200), 10_000)
            .with_socket_budget(Box::new(move || gauge.load(Ordering::Relaxed)), 256 + 1000);
        assert_eq!(socket_headroom(1000), 10);
        assert_eq!(a.verdict(&load).refuse(), Refuse::Nothing);
        open.store(987, Ordering::Relaxed);
        assert_eq!(a.verdict(&load).new, Some(Shed::Sockets(987)));
        assert_eq!(a.verdict(&load).refuse(), Refuse::Unauthorised);
        open.store(996, Ordering::Relaxed);
        assert_eq!(a.verdict(&load).refuse(), Refuse::Unauthorised);
        open.store(997, Ordering::Relaxed);
        assert_eq!(a.verdict(&load).refuse(), Refuse::Every);

        // A call budget of 1000: new calls stop at 990.
        let a = Admission::new(Duration::from_millis(200), 1000);
        let calls = |n| Load::new(Duration::ZERO, n, 0);
        assert_eq!(a.verdict(&calls(989)).refuse(), Refuse::Nothing);
        assert_eq!(a.verdict(&calls(990)).new, Some(Shed::Budget(990)));
        assert_eq!(a.verdict(&calls(999)).refuse(), Refuse::Unauthorised);
        assert_eq!(a.verdict(&calls(1000)).refuse(), Refuse::Every);
        // Small budgets keep no headroom.
        assert_eq!(call_headroom(99), 0);
        assert_eq!(socket_headroom(99), 0);
    }

    #[test]
    fn a_challenged_call_is_never_refused_where_a_new_one_is_taken_in() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let free = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (f, o) = (free.clone(), open.clone());
        let a = Admission::new(Duration::from_millis(200), 500)
            .with_port_budget(Box::new(move || f.load(Ordering::Relaxed)), 1000)
            .with_socket_budget(Box::new(move || o.load(Ordering::Relaxed)), 256 + 2000)
            .with_transaction_budget(10_000);
        // A deterministic walk over loads around every bound.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            usize::try_from(x % n).unwrap_or(0)
        };
        let (mut both, mut new_only) = (0, 0);
        for _ in 0..20_000 {
            free.store(next(60), Ordering::Relaxed);
            open.store(1940 + next(80), Ordering::Relaxed);
            let load = Load {
                queued: Duration::from_millis(next(500) as u64),
                backlog: next(4000),
                backlog_max: 4000,
                calls: 480 + next(30),
                routing: next(3),
                server_transactions: 8700 + next(400),
            };
            let v = a.verdict(&load);
            assert_eq!(v.new, a.shed_for(&load, Caller::New));
            if v.new.is_some() {
                assert_eq!(v.authorised, a.shed_for(&load, Caller::Authorised));
            } else {
                assert_eq!(a.shed_for(&load, Caller::Authorised), None, "{load:?}");
            }
            match v.refuse() {
                Refuse::Every => both += 1,
                Refuse::Unauthorised => new_only += 1,
                Refuse::Nothing => {}
            }
        }
        // The walk reached both kinds of refusal.
        assert!(both > 0 && new_only > 0, "{both} {new_only}");
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
