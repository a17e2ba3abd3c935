//! Calls in progress in the store, so that a crash loses neither their records nor the means to
//! hang them up.
//!
//! When a call is answered its record is written at once, marked `end_reason = 'in progress'`
//! and keyed by `call_key` (the process run and call control's number), and the dialog state
//! of both legs — Call-ID, tags, CSeq, remote target, route set, the flow it uses — goes to
//! `call_legs`, with `seen_ms`, the last time the call was known to be up (refreshed by a
//! heartbeat). When the call ends the final record replaces the in-progress one. After a
//! crash, [`take_interrupted`] finds what is left: each such call becomes a record marked
//! `interrupted` that lasted until `seen_ms`, and its legs are returned so that the new process
//! can send them BYE. The rows are [`crate::store::records::in_progress`]'s (migration
//! `0008_calls_in_progress.sql`); this module says what they mean.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::record::{seconds_between, CallRecord};
use super::CdrError;
use crate::sip::dialog::Dialog;
use crate::sip::header::NameAddr;
use crate::sip::peer::{Peer, Proto};
use crate::sip::uri::Uri;
use crate::store::records::in_progress::left_up;

/// `end_reason` of a record whose call is still up.
pub const IN_PROGRESS: &str = "in progress";
/// `end_reason` of a call that was up when pasarela stopped without ending it (a crash).
pub const INTERRUPTED: &str = "interrupted";

/// One leg's dialog, as stored (JSON in `call_legs.legs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegState {
    pub call_id: String,
    /// Our From/To with our tag.
    pub local: String,
    /// The peer's From/To with its tag.
    pub remote: String,
    pub local_cseq: u32,
    pub remote_target: String,
    pub route_set: Vec<String>,
    /// `udp` or `tcp`.
    pub transport: String,
    /// Where in-dialog requests went.
    pub remote_addr: SocketAddr,
    /// The socket they went from.
    pub local_addr: SocketAddr,
}

impl LegState {
    pub fn of(d: &Dialog) -> LegState {
        LegState {
            call_id: d.call_id.clone(),
            local: d.local.to_string(),
            remote: d.remote.to_string(),
            local_cseq: d.local_cseq,
            remote_target: d.remote_target.to_string(),
            route_set: d.route_set.iter().map(ToString::to_string).collect(),
            transport: d.peer.proto.to_string(),
            remote_addr: d.peer.remote,
            local_addr: d.peer.local,
        }
    }

    /// The dialog again (`None` when a stored field no longer parses).
    pub fn dialog(&self) -> Option<Dialog> {
        let proto = match self.transport.as_str() {
            "udp" => Proto::Udp,
            "tcp" => Proto::Tcp,
            "tls" => Proto::Tls,
            _ => return None,
        };
        let route_set = self
            .route_set
            .iter()
            .map(|r| NameAddr::parse(r).ok())
            .collect::<Option<Vec<_>>>()?;
        Some(Dialog {
            call_id: self.call_id.clone(),
            local: NameAddr::parse(&self.local).ok()?,
            remote: NameAddr::parse(&self.remote).ok()?,
            local_cseq: self.local_cseq,
            remote_cseq: None,
            remote_target: Uri::parse(&self.remote_target).ok()?,
            route_set,
            peer: Peer {
                proto,
                remote: self.remote_addr,
                local: self.local_addr,
            },
        })
    }
}

/// The legs of a call as stored. Built on the record writer's thread (the SIP loop hands it
/// the dialogs), and only when the call's in-progress row is written at all: a call shorter
/// than the writer's linger never needs it.
pub fn legs_json(legs: &[Dialog]) -> String {
    let states: Vec<LegState> = legs.iter().map(LegState::of).collect();
    serde_json::to_string(&states).unwrap_or_else(|_| "[]".to_owned())
}

/// What of a call's legs [`legs_json`] stores, as one number: the SIP loop keeps this per call
/// instead of the text, and stores the legs again at a heartbeat only when it changed. Hashed
/// with `state` (a seed per process, so that no peer can pick values that collide).
pub fn legs_fingerprint(state: &impl std::hash::BuildHasher, legs: &[Dialog]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = state.build_hasher();
    legs.len().hash(&mut h);
    for d in legs {
        // The fields LegState keeps, and only those (remote_cseq is not stored).
        d.call_id.hash(&mut h);
        d.local.hash(&mut h);
        d.remote.hash(&mut h);
        d.local_cseq.hash(&mut h);
        d.remote_target.hash(&mut h);
        d.route_set.hash(&mut h);
        d.peer.hash(&mut h);
    }
    h.finish()
}

/// A call that was up when the previous process died.
#[derive(Debug, Clone)]
pub struct Interrupted {
    pub key: String,
    /// Its record, ending at the last time it was known to be up, to be rated and stored
    /// (marked [`INTERRUPTED`]) in place of the in-progress one.
    pub record: CallRecord,
    /// The dialogs of its legs, to send BYE on.
    pub legs: Vec<Dialog>,
}

/// The calls left in progress by a previous run (none after a clean stop).
pub fn interrupted(conn: &crate::store::Connection) -> Result<Vec<Interrupted>, CdrError> {
    let found = left_up(conn)?;
    let mut out = Vec::with_capacity(found.len());
    for row in found {
        let (key, mut record) = (row.key, row.record);
        let (seen_ms, legs) = row.legs.unwrap_or((record.end_ms, "[]".to_owned()));
        let answer = record.answer_ms.unwrap_or(record.start_ms);
        let end = seen_ms.max(answer).max(record.end_ms);
        record.id = None;
        record.end_ms = end;
        record.duration_s = seconds_between(record.start_ms, end);
        record.billable_s = record.answer_ms.map_or(0, |a| seconds_between(a, end));
        record.cost_minor = None;
        if !record.explanation.is_empty() {
            record.explanation.push('\n');
        }
        record.explanation.push_str(
            "interrupted: pasarela stopped while the call was up; \
             its duration is the last time it was known to be up",
        );
        let legs: Vec<Dialog> = serde_json::from_str::<Vec<LegState>>(&legs)
            .unwrap_or_default()
            .iter()
            .filter_map(LegState::dialog)
            .collect();
        out.push(Interrupted { key, record, legs });
    }
    Ok(out)
}

/// Opens the database at `path` and lists the calls a previous run left in progress.
pub fn take_interrupted(path: &Path) -> Result<Vec<Interrupted>, CdrError> {
    let db = super::CdrDb::open(path)?;
    interrupted(&db.conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::{parse_message, Framing, Limits};

    /// The UAS dialog of INVITE `text` as received over UDP, with its peer.
    fn uas_dialog(text: &'static str) -> (Dialog, Peer) {
        let Ok(Message::Request(inv)) = parse_message(
            bytes::Bytes::from(text),
            Framing::Datagram,
            &Limits::default(),
        ) else {
            panic!("parse")
        };
        let peer = Peer {
            proto: Proto::Udp,
            remote: "127.0.0.1:5062".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        };
        (Dialog::uas(&inv, "b2", peer).unwrap(), peer)
    }

    #[test]
    fn leg_state_round_trip() {
        let text = "INVITE sip:101@office.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
From: \"Ann\" <sip:100@office.test>;tag=a1\r\n\
To: <sip:101@office.test>\r\n\
Call-ID: c1@host\r\n\
CSeq: 5 INVITE\r\n\
Contact: <sip:100@127.0.0.1:5062;transport=udp>\r\n\
Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n\
Content-Length: 0\r\n\r\n";
        let (mut d, peer) = uas_dialog(text);
        d.local_cseq = 3;
        let json = legs_json(std::slice::from_ref(&d));
        let back: Vec<LegState> = serde_json::from_str(&json).unwrap();
        let again = back[0].dialog().unwrap();
        assert_eq!(again.call_id, d.call_id);
        assert_eq!(again.local.tag(), Some("b2"));
        assert_eq!(again.remote.tag(), Some("a1"));
        assert_eq!(again.local_cseq, 3);
        assert_eq!(again.route_set, d.route_set);
        assert_eq!(again.remote_target, d.remote_target);
        assert_eq!(again.peer, peer);
    }

    #[test]
    fn fingerprint_changes_with_what_is_stored_only() {
        let text = "INVITE sip:101@office.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
From: <sip:100@office.test>;tag=a1\r\n\
To: <sip:101@office.test>\r\n\
Call-ID: c1@host\r\n\
CSeq: 5 INVITE\r\n\
Contact: <sip:100@127.0.0.1:5062>\r\n\
Content-Length: 0\r\n\r\n";
        let (d, _) = uas_dialog(text);
        let state = foldhash::fast::RandomState::default();
        let print = |d: &Dialog| legs_fingerprint(&state, std::slice::from_ref(d));
        let base = print(&d);
        assert_eq!(base, print(&d.clone()));
        let mut cseq = d.clone();
        cseq.local_cseq += 1;
        assert_ne!(base, print(&cseq));
        let mut target = d.clone();
        target.remote_target = Uri::parse("sip:100@127.0.0.1:5064").unwrap();
        assert_ne!(base, print(&target));
        let mut routed = d.clone();
        routed.route_set = vec![NameAddr::parse("<sip:p1;lr>").unwrap()];
        assert_ne!(base, print(&routed));
        let mut moved = d.clone();
        moved.peer.remote = "127.0.0.1:5070".parse().unwrap();
        assert_ne!(base, print(&moved));
        // Not stored, so no reason to store the legs again.
        let mut remote_cseq = d.clone();
        remote_cseq.remote_cseq = Some(9);
        assert_eq!(base, print(&remote_cseq));
        assert_ne!(base, legs_fingerprint(&state, &[d.clone(), d]));
    }
}
