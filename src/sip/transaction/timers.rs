//! Deadline bookkeeping for the transaction layer: every armed RFC 3261 timer lives in one
//! ordered map keyed by (deadline, sequence number), and each transaction keeps the list of the
//! timers it armed, so a timer is removed exactly (no lazy tombstones) when it is disarmed or its
//! transaction ends. Nothing here reads a clock: deadlines are computed from the `now` passed in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{ClientKey, ServerKey};

/// The RFC 3261 §17 / RFC 6026 timers by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// INVITE client: request retransmission (UDP).
    A,
    /// INVITE client: transaction timeout.
    B,
    /// INVITE client: give up in Proceeding (after the last provisional, or 64·T1 after a CANCEL).
    C,
    /// INVITE client: wait for response retransmissions in Completed.
    D,
    /// Non-INVITE client: request retransmission (UDP).
    E,
    /// Non-INVITE client: transaction timeout.
    F,
    /// Non-INVITE client: wait for response retransmissions in Completed.
    K,
    /// INVITE server: final response retransmission (UDP).
    G,
    /// INVITE server: wait for the ACK.
    H,
    /// INVITE server: wait for ACK retransmissions in Confirmed.
    I,
    /// Non-INVITE server: wait for request retransmissions in Completed.
    J,
    /// INVITE server: Accepted state lifetime (RFC 6026).
    L,
    /// INVITE client: Accepted state lifetime (RFC 6026).
    M,
}

/// Which transaction a timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TxnId {
    Server(ServerKey),
    Client(ClientKey),
}

/// Identifies one armed timer: its deadline and a unique sequence number.
pub(crate) type TimerId = (Instant, u64);

/// The timers one transaction has armed.
pub(crate) type Armed = Vec<(TimerKind, TimerId)>;

/// All armed timers of the layer, earliest first.
#[derive(Debug, Default)]
pub(crate) struct TimerSet {
    map: BTreeMap<TimerId, (TxnId, TimerKind)>,
    seq: u64,
}

/// `now + d`, without the overflow panic of `Instant + Duration` for absurd durations.
pub(crate) fn deadline(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

impl TimerSet {
    /// Arms (or re-arms) timer `kind` of a transaction to fire at `at`.
    pub(crate) fn arm(&mut self, armed: &mut Armed, txn: TxnId, kind: TimerKind, at: Instant) {
        self.disarm(armed, kind);
        self.seq += 1;
        let id = (at, self.seq);
        self.map.insert(id, (txn, kind));
        armed.push((kind, id));
    }

    /// Disarms timer `kind` of a transaction, if armed.
    pub(crate) fn disarm(&mut self, armed: &mut Armed, kind: TimerKind) {
        armed.retain(|(k, id)| {
            if *k == kind {
                self.map.remove(id);
                false
            } else {
                true
            }
        });
    }

    /// Disarms every timer of a transaction (it is terminating).
    pub(crate) fn disarm_all(&mut self, armed: &mut Armed) {
        for (_, id) in armed.drain(..) {
            self.map.remove(&id);
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.map.keys().next().map(|(at, _)| *at)
    }

    /// Removes and returns every timer due at `now`, earliest first. The caller must also drop
    /// each from its transaction's [`Armed`] list (see [`take_armed`]).
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<(TimerId, TxnId, TimerKind)> {
        let later = self.map.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.map, later);
        due.into_iter()
            .map(|(id, (txn, kind))| (id, txn, kind))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Removes a fired timer from its transaction's list; `false` when it was no longer armed.
pub(crate) fn take_armed(armed: &mut Armed, id: TimerId) -> bool {
    match armed.iter().position(|(_, i)| *i == id) {
        Some(pos) => {
            armed.swap_remove(pos);
            true
        }
        None => false,
    }
}
