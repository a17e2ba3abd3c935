//! Reassembly of concatenated messages (3GPP TS 23.040 §9.2.3.24.1/.8), sans-IO: parts are
//! pushed as they arrive, in any order and possibly twice; a message is complete when every
//! part is there, and one whose parts stop coming is given up after a timeout with what
//! arrived (the missing parts marked), so that a lost part never holds back the rest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::userdata::{join, Payload};

/// What identifies one concatenated message: line, sender, reference, number of parts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The line it came on.
    pub line: String,
    /// The sender.
    pub sender: String,
    /// The concatenation reference.
    pub reference: u16,
    /// How many parts.
    pub total: u8,
}

/// One part, with the caller's id for it (its store row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The caller's id.
    pub id: i64,
    /// Position, from 1.
    pub seq: u8,
    /// Content.
    pub payload: Payload,
}

/// A message put together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// Which message.
    pub key: Key,
    /// Its text; missing parts show as `[…]`.
    pub text: String,
    /// Ids of the parts used.
    pub part_ids: Vec<i64>,
    /// Whether parts were missing (given up after the timeout).
    pub incomplete: bool,
}

struct Pending {
    first_seen: Instant,
    parts: Vec<Part>,
}

/// The parts waiting for their siblings.
pub struct Reassembler {
    timeout: Duration,
    pending: HashMap<Key, Pending>,
}

/// Text put where a part never came.
pub const MISSING: &str = "[…]";

impl Reassembler {
    /// Gives up on a message `timeout` after its first part.
    pub fn new(timeout: Duration) -> Self {
        Reassembler {
            timeout,
            pending: HashMap::new(),
        }
    }

    /// Adds a part; returns the message when it is complete. A part seen before (same
    /// position) is ignored.
    pub fn push(&mut self, key: Key, part: Part, now: Instant) -> Option<Assembled> {
        let total = key.total;
        let p = self.pending.entry(key.clone()).or_insert(Pending {
            first_seen: now,
            parts: Vec::new(),
        });
        if part.seq == 0 || part.seq > total || p.parts.iter().any(|q| q.seq == part.seq) {
            return None;
        }
        p.parts.push(part);
        if p.parts.len() < usize::from(total) {
            return None;
        }
        let p = self.pending.remove(&key)?;
        Some(assemble(key, p.parts, false))
    }

    /// Messages whose time is up, with what arrived.
    pub fn expire(&mut self, now: Instant) -> Vec<Assembled> {
        let due: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.first_seen + self.timeout)
            .map(|(k, _)| k.clone())
            .collect();
        let mut out: Vec<Assembled> = due
            .into_iter()
            .filter_map(|k| {
                let p = self.pending.remove(&k)?;
                Some(assemble(k, p.parts, true))
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// When [`Reassembler::expire`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
            .values()
            .map(|p| p.first_seen + self.timeout)
            .min()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

fn assemble(key: Key, mut parts: Vec<Part>, incomplete: bool) -> Assembled {
    parts.sort_by_key(|p| p.seq);
    let mut text = String::new();
    let mut run: Vec<&Payload> = Vec::new();
    let mut expected = 1u8;
    for p in &parts {
        if p.seq != expected {
            text.push_str(&join(&run));
            run.clear();
            text.push_str(MISSING);
        }
        run.push(&p.payload);
        expected = p.seq.saturating_add(1);
    }
    text.push_str(&join(&run));
    if incomplete && expected <= key.total {
        text.push_str(MISSING);
    }
    Assembled {
        part_ids: parts.iter().map(|p| p.id).collect(),
        key,
        text,
        incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(total: u8) -> Key {
        Key {
            line: "gsm1".into(),
            sender: "+4917".into(),
            reference: 7,
            total,
        }
    }

    fn part(id: i64, seq: u8, t: &str) -> Part {
        Part {
            id,
            seq,
            payload: Payload::Text(t.into()),
        }
    }

    #[test]
    fn out_of_order_and_duplicates() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(Duration::from_secs(60));
        assert!(r.push(key(3), part(3, 3, "c"), t0).is_none());
        assert!(r.push(key(3), part(1, 1, "a"), t0).is_none());
        assert!(r.push(key(3), part(9, 1, "a"), t0).is_none());
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        let m = r.push(key(3), part(2, 2, "b"), t0).unwrap();
        assert_eq!(m.text, "abc");
        assert_eq!(m.part_ids, vec![1, 2, 3]);
        assert!(!m.incomplete);
        assert!(r.is_empty());
    }

    #[test]
    fn missing_part_given_up_after_timeout() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(Duration::from_secs(60));
        r.push(key(4), part(1, 1, "a"), t0);
        r.push(key(4), part(3, 3, "c"), t0);
        assert!(r.expire(t0 + Duration::from_secs(59)).is_empty());
        let out = r.expire(t0 + Duration::from_secs(60));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "a[…]c[…]");
        assert!(out[0].incomplete);
        assert!(r.push(key(4), part(5, 9, "x"), t0).is_none());
    }

    #[test]
    fn ucs2_pair_split_between_parts() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(Duration::from_secs(60));
        let a = Part {
            id: 1,
            seq: 1,
            payload: Payload::Ucs2(vec![0xD8, 0x3D]),
        };
        let b = Part {
            id: 2,
            seq: 2,
            payload: Payload::Ucs2(vec![0xDE, 0x00]),
        };
        r.push(key(2), b, t0);
        assert_eq!(r.push(key(2), a, t0).unwrap().text, "😀");
    }
}
