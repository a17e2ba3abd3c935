//! What a finished or refused call leaves behind: its call record (sent to the record writer,
//! which rates and stores it) and its count in `/metrics`; and, while an answered call is up,
//! its in-progress record and the dialog state of its legs ([`CallLog`], see
//! [`crate::cdr::in_progress`]), refreshed by a heartbeat so that a crash loses neither.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::web::Stats;

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A call refused before ringing: its record, and the count for /metrics.
pub(super) fn call_refused(
    stats: &Stats,
    cdr: &crate::cdr::CdrWriterHandle,
    office: &crate::cdr::OfficeNumbers,
    refused: &crate::callctl::Refused,
) {
    let mut record = crate::cdr::CallRecord::rejected(
        &refused.caller,
        &refused.dialled,
        refused.status,
        refused.route.as_deref(),
        unix_ms(),
        office,
    );
    if let Some(reason) = &refused.reason {
        record.explanation = if record.explanation.is_empty() {
            reason.clone()
        } else {
            format!("{reason}\n{}", record.explanation)
        };
    }
    let mut reason = refused.reason.clone();
    if let Some((origin, why)) = &refused.incoming {
        mark_incoming(&mut record, &refused.caller, origin);
        record.explanation = format!("incoming from {origin}: {why}\n{}", record.explanation);
        reason.get_or_insert_with(|| why.clone());
    }
    cdr.send_noted(
        record,
        crate::cdr::Note {
            key: None,
            reason,
            ..Default::default()
        },
    );
    stats.call_ended("none", "failed");
}

/// A call from outside the office (trunk, peer, internet): direction incoming, where it came
/// from as the route source, the caller in E.164 only when it is one (a caller id that looks
/// like one of our extensions is still an outside caller), the extension it reached.
fn mark_incoming(record: &mut crate::cdr::CallRecord, caller: &str, origin: &str) {
    record.direction = crate::cdr::Direction::Incoming;
    record.route_source = Some(origin.to_owned());
    record.caller_e164 = caller
        .parse::<crate::routing::E164>()
        .ok()
        .map(|n| n.as_str().to_owned());
    record.extension = match record.route_kind {
        crate::cdr::RouteKind::Extension => record.route_target.clone(),
        _ => None,
    };
}

/// The transports of a call's legs for its record: `caller/callee` (`tls/udp`; `-` for a leg
/// that never was).
fn signalling(summary: &crate::b2bua::CallSummary) -> Option<String> {
    let name = |p: Option<crate::sip::peer::Proto>| p.map_or("-".to_owned(), |p| p.to_string());
    match summary.signalling {
        (None, None) => None,
        (a, b) => Some(format!("{}/{}", name(a), name(b))),
    }
}

/// A finished call: its record (rated by the writer; it replaces the in-progress one of an
/// answered call, `note.key`), and the count for /metrics.
pub(super) fn call_ended(
    stats: &Stats,
    cdr: &crate::cdr::CdrWriterHandle,
    office: &crate::cdr::OfficeNumbers,
    summary: &crate::b2bua::CallSummary,
    note: crate::cdr::Note,
) {
    // A transferred call leaves one record per part; the last replaces the in-progress one.
    let parts = crate::cdr::CallRecord::parts_from_summary(
        summary,
        std::time::Instant::now(),
        unix_ms(),
        office,
    );
    let n = parts.len();
    for (k, mut record) in parts.into_iter().enumerate() {
        if let Some(origin) = &summary.origin {
            mark_incoming(&mut record, &summary.caller, origin);
            record.explanation = format!("incoming from {origin}\n{}", record.explanation);
        }
        // After mark_incoming: a part the transferor sent out of the office is its call.
        record.bill_transferor();
        let note = if k + 1 == n {
            note.clone()
        } else {
            crate::cdr::Note {
                signalling: note.signalling.clone(),
                ..Default::default()
            }
        };
        if let Some(reason) = &note.reason {
            record.explanation = format!("{reason}\n{}", record.explanation);
        }
        cdr.send_noted(record, note);
    }
    let stage = summary
        .answered_by
        .as_ref()
        .map(|(stage, _)| *stage)
        .or_else(|| summary.attempts.last().map(|a| a.stage));
    let label = stage.and_then(|st| {
        summary
            .attempts
            .iter()
            .find(|a| a.stage == st)
            .map(|a| a.label.as_str())
    });
    stats.call_ended(
        crate::web::stats::call_route_kind(label),
        summary.disposition,
    );
}

/// How often the calls in progress are marked as up in the store: after a crash their records
/// end at the last mark.
pub(super) const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(5);

/// The store's view of the answered calls of this process: their in-progress records, keyed by
/// this run and the call's number, and the last stored state of their legs.
pub(super) struct CallLog {
    run: String,
    /// Call id -> the fingerprint of its legs as last stored
    /// ([`crate::cdr::in_progress::legs_fingerprint`]; the text is built by the writer).
    legs: crate::hashing::IdMap<u64, u64>,
    /// The seed of those fingerprints.
    seed: foldhash::fast::RandomState,
    /// Why calls were refused by pasarela itself, by call id, until their summary comes.
    notes: std::collections::HashMap<u64, String>,
}

impl CallLog {
    pub(super) fn new() -> CallLog {
        CallLog {
            run: format!("{:016x}", rand::random::<u64>()),
            legs: crate::hashing::IdMap::default(),
            seed: foldhash::fast::RandomState::default(),
            notes: std::collections::HashMap::new(),
        }
    }

    fn key(&self, id: u64) -> String {
        // Twice per answered call: pieces, not `format!`.
        let mut key = String::with_capacity(self.run.len() + 21);
        key.push_str(&self.run);
        key.push('-');
        let _ = crate::sip::uri::write_decimal(&mut key, id);
        key
    }

    /// Calls just answered: their in-progress records and legs.
    pub(super) fn answered(
        &mut self,
        cdr: &crate::cdr::CdrWriterHandle,
        office: &crate::cdr::OfficeNumbers,
        now: std::time::Instant,
        up: Vec<crate::b2bua::UpCall>,
    ) {
        if up.is_empty() {
            return;
        }
        let ms = unix_ms();
        for call in up {
            let mut record = crate::cdr::CallRecord::from_summary(&call.summary, now, ms, office);
            // An incoming call's record says where it came from while it is up too.
            if let Some(origin) = &call.summary.origin {
                mark_incoming(&mut record, &call.summary.caller, origin);
            }
            let print = crate::cdr::in_progress::legs_fingerprint(&self.seed, &call.legs);
            self.legs.insert(call.id, print);
            cdr.call_up(self.key(call.id), record, call.legs, ms);
        }
    }

    /// Gives back what a burst of calls grew (housekeeping): the tables hold one entry per call
    /// up, so after a flood they keep its peak capacity; a table left at that size is one of
    /// the few blocks that keeps a flood's allocator pages from being given back.
    pub(super) fn shrink(&mut self) {
        crate::memory::shrink_map(&mut self.legs);
        crate::memory::shrink_map(&mut self.notes);
    }

    /// Reasons for calls refused by call control (they come before the summaries).
    pub(super) fn notes(&mut self, notes: Vec<(u64, String)>) {
        self.notes.extend(notes);
    }

    /// Calls that ended: their records, in place of the in-progress ones.
    pub(super) fn ended(
        &mut self,
        stats: &Stats,
        cdr: &crate::cdr::CdrWriterHandle,
        office: &crate::cdr::OfficeNumbers,
        summaries: Vec<crate::b2bua::CallSummary>,
    ) {
        for summary in summaries {
            let key = self.legs.remove(&summary.id).map(|_| self.key(summary.id));
            let note = crate::cdr::Note {
                key,
                reason: self.notes.remove(&summary.id),
                signalling: signalling(&summary),
            };
            call_ended(stats, cdr, office, &summary, note);
        }
    }

    /// The heartbeat: every call in progress is up now; legs that changed (a re-INVITE moved a
    /// target, a CSeq went up) are stored again.
    pub(super) fn heartbeat(
        &mut self,
        cdr: &crate::cdr::CdrWriterHandle,
        up: Vec<crate::b2bua::UpCall>,
    ) {
        if self.legs.is_empty() {
            return;
        }
        let mut changed = Vec::new();
        for call in up {
            let print = crate::cdr::in_progress::legs_fingerprint(&self.seed, &call.legs);
            if let Some(old) = self.legs.get_mut(&call.id) {
                if *old != print {
                    *old = print;
                    changed.push((self.key(call.id), call.legs));
                }
            }
        }
        cdr.heartbeat(unix_ms(), changed);
    }
}

/// The calls a previous process left up (it was killed): each becomes a record marked
/// interrupted, lasting until its last heartbeat; their legs are returned, to be sent BYE once
/// the transports are up.
pub(super) fn recover_interrupted(
    path: &std::path::Path,
    cdr: &crate::cdr::CdrWriterHandle,
) -> Vec<crate::sip::dialog::Dialog> {
    let found = match crate::cdr::in_progress::take_interrupted(path) {
        Ok(found) => found,
        Err(e) => {
            tracing::error!("cannot read the calls left in progress: {e}");
            return Vec::new();
        }
    };
    if !found.is_empty() {
        tracing::warn!(
            calls = found.len(),
            "calls were up when pasarela last stopped: recorded as interrupted, hanging up their legs"
        );
    }
    let mut legs = Vec::new();
    for call in found {
        legs.extend(call.legs);
        cdr.send_noted(
            call.record,
            crate::cdr::Note {
                key: Some(call.key),
                reason: Some(crate::cdr::in_progress::INTERRUPTED.to_owned()),
                ..Default::default()
            },
        );
    }
    legs
}
