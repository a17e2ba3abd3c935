//! Reliable provisional responses (RFC 3262) on both legs of a call.
//!
//! Towards the caller: when its INVITE says `Require: 100rel`, every 18x it gets carries
//! `Require: 100rel` and an `RSeq`, and is sent again (T1, doubling up to T2) until the caller's
//! PRACK acknowledges it (answered 200) or 64·T1 have passed. Towards a callee: a reliable 18x
//! (`Require: 100rel` with an `RSeq`) is acknowledged with a PRACK in its early dialog, once per
//! RSeq; INVITEs to callees say `Supported: 100rel`.

use std::time::{Duration, Instant};

use super::{local_host, our_via, Call};
use crate::b2bua::CallSettings;
use crate::sip::header::Header;
use crate::sip::message::{Message, Request, Response};
use crate::sip::method::Method;
use crate::sip::transaction::{ServerKey, TransactionLayer};

/// A reliable 18x sent to the caller, not acknowledged yet.
struct Unacked {
    rseq: u32,
    response: Response,
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// The call's 100rel state.
pub struct Reliable {
    /// The caller required 100rel.
    caller_requires: bool,
    t1: Duration,
    t2: Duration,
    /// The last RSeq sent to the caller.
    rseq: u32,
    unacked: Vec<Unacked>,
    /// The highest RSeq acknowledged per fork.
    pracked: Vec<(usize, u32)>,
}

/// Whether a header list names the option tag `100rel`.
pub fn names_100rel(headers: &crate::sip::header::Headers, header: &str) -> bool {
    headers
        .tokens(header)
        .any(|t| t.eq_ignore_ascii_case("100rel"))
}

/// The RSeq of a reliable provisional response (`Require: 100rel` and a valid RSeq).
pub fn rseq_of(resp: &Response) -> Option<u32> {
    if !(101..200).contains(&resp.status) || !names_100rel(&resp.headers, "Require") {
        return None;
    }
    resp.headers.get("RSeq")?.trim().parse().ok()
}

/// The (RSeq, CSeq number) a PRACK's RAck names (`RAck: 1 314 INVITE`).
pub fn rack_of(req: &Request) -> Option<(u32, u32)> {
    let v = req.headers.get("RAck")?;
    let mut parts = v.split_whitespace();
    let rseq = parts.next()?.parse().ok()?;
    let cseq = parts.next()?.parse().ok()?;
    parts.next().filter(|m| m.eq_ignore_ascii_case("INVITE"))?;
    Some((rseq, cseq))
}

impl Reliable {
    pub fn new(invite: &Request, settings: &CallSettings) -> Reliable {
        Reliable {
            caller_requires: names_100rel(&invite.headers, "Require"),
            t1: settings.t1,
            t2: settings.t2,
            rseq: 0,
            unacked: Vec::new(),
            pracked: Vec::new(),
        }
    }

    /// When an unacknowledged 18x is due again.
    pub fn next(&self) -> Option<Instant> {
        self.unacked.iter().map(|u| u.next).min()
    }

    pub fn pending(&self) -> bool {
        !self.unacked.is_empty()
    }

    /// Makes a provisional response to the caller reliable when it asked for that.
    pub fn provisional(&mut self, now: Instant, r: &mut Response) {
        if !self.caller_requires || !(101..200).contains(&r.status) {
            return;
        }
        self.rseq += 1;
        r.headers
            .push(Header::Other("Require".into(), "100rel".into()));
        r.headers
            .push(Header::Other("RSeq".into(), self.rseq.to_string()));
        self.unacked.push(Unacked {
            rseq: self.rseq,
            response: r.clone(),
            next: now + self.t1,
            interval: self.t1,
            give_up: now + self.t1 * 64,
        });
    }

    /// A final response went to the caller: its 18x need no more retransmission.
    pub fn finished(&mut self) {
        self.unacked.clear();
    }

    /// Sends again what is due; gives up on what waited 64·T1.
    pub fn retransmit(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        peer: crate::sip::peer::Peer,
    ) {
        let (t2, reliable_transport) = (self.t2, peer.proto.is_reliable());
        self.unacked.retain_mut(|u| {
            if now >= u.give_up {
                tracing::warn!(
                    rseq = u.rseq,
                    "no PRACK for a reliable provisional response"
                );
                return false;
            }
            if u.next <= now {
                if !reliable_transport {
                    layer.send_stateless(peer, &Message::Response(u.response.clone()));
                }
                u.interval = (u.interval * 2).min(t2);
                u.next = now + u.interval;
            }
            true
        });
    }

    /// Whether fork `fork`'s reliable 18x with `rseq` still needs a PRACK (and notes it).
    fn first_time(&mut self, fork: usize, rseq: u32) -> bool {
        match self.pracked.iter_mut().find(|(f, _)| *f == fork) {
            Some((_, last)) if *last >= rseq => false,
            Some((_, last)) => {
                *last = rseq;
                true
            }
            None => {
                self.pracked.push((fork, rseq));
                true
            }
        }
    }
}

impl Call {
    /// The caller's PRACK: the 18x it names is acknowledged (200), or 481 when it names none.
    pub fn prack_from_caller(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ServerKey,
        req: &Request,
    ) {
        let invite_seq = self.a.invite.headers.cseq().map_or(0, |c| c.seq);
        let status = match rack_of(req) {
            Some((rseq, cseq)) if cseq == invite_seq => {
                let before = self.reliable.unacked.len();
                self.reliable.unacked.retain(|u| u.rseq != rseq);
                if self.reliable.unacked.len() < before || rseq <= self.reliable.rseq {
                    200
                } else {
                    481
                }
            }
            _ => 481,
        };
        super::reply(layer, now, key, req, status);
    }

    /// Whether a PRACK belongs to this call's caller leg (its Call-ID and our tag).
    pub fn is_caller_prack(&self, req: &Request) -> bool {
        req.headers.call_id() == self.a.invite.headers.call_id()
            && req.headers.to().and_then(|t| t.tag()) == Some(self.a.tag.as_str())
    }

    /// Fork `i` sent a reliable provisional response: PRACK it in its early dialog (once per
    /// RSeq). `false` when it is a retransmission of one already acknowledged.
    pub(super) fn prack_fork(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        resp: &Response,
        settings: &CallSettings,
    ) -> bool {
        let Some(rseq) = rseq_of(resp) else {
            return true;
        };
        if !self.reliable.first_time(i, rseq) {
            return false;
        }
        let Some(fork) = self.forks.get_mut(i) else {
            return false;
        };
        let invite_seq = fork.invite.headers.cseq().map_or(1, |c| c.seq);
        let peer = fork.peer;
        let Some(dialog) = fork.dialog.as_mut() else {
            return true;
        };
        let via = our_via(&peer, layer.new_branch(), local_host(&peer, settings));
        let mut prack = dialog.request(Method::Prack, via);
        prack.headers.push(Header::Other(
            "RAck".into(),
            format!("{rseq} {invite_seq} INVITE"),
        ));
        tracing::debug!(
            call = self.id,
            rseq,
            "PRACK to a reliable provisional response"
        );
        layer.send_request(now, prack, peer);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::{parse_message, Framing, Limits};

    #[test]
    fn rseq_and_rack() {
        let Ok(Message::Response(r)) = parse_message(
            bytes::Bytes::from_static(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nRequire: 100rel\r\nRSeq: 7\r\nContent-Length: 0\r\n\r\n"),
            Framing::Datagram,
            &Limits::default(),
        ) else {
            panic!()
        };
        assert_eq!(rseq_of(&r), Some(7));
        let Ok(Message::Request(p)) = parse_message(
            bytes::Bytes::from_static(b"PRACK sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK2\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 PRACK\r\nRAck: 7 1 INVITE\r\nContent-Length: 0\r\n\r\n"),
            Framing::Datagram,
            &Limits::default(),
        ) else {
            panic!()
        };
        assert_eq!(rack_of(&p), Some((7, 1)));
    }
}
