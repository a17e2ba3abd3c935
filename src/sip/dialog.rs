//! Dialogs (RFC 3261 §12): the state two user agents share after an INVITE — Call-ID, tags,
//! CSeq numbers, route set and remote target — and the in-dialog requests built from it
//! (BYE, re-INVITE, INFO, UPDATE, and the ACK for a 2xx). Sans-IO.
//!
//! pasarela sends in-dialog requests back along the flow the dialog was set up on (the
//! transport, address and port the peer's messages come from, or the address the first
//! request went to), which keeps phones behind NAT reachable without extra configuration.

use super::header::{CSeq, Header, NameAddr, Via};
use super::message::{Request, Response};
use super::method::Method;
use super::peer::Peer;
use super::uri::Uri;

/// The state of one dialog, from pasarela's side.
#[derive(Debug, Clone, PartialEq)]
pub struct Dialog {
    pub call_id: String,
    /// Our From/To (with our tag).
    pub local: NameAddr,
    /// The peer's From/To (with its tag, once known).
    pub remote: NameAddr,
    pub local_cseq: u32,
    pub remote_cseq: Option<u32>,
    /// The peer's Contact: the Request-URI of in-dialog requests.
    pub remote_target: Uri,
    /// Route headers for in-dialog requests (from Record-Route).
    pub route_set: Vec<NameAddr>,
    /// Where in-dialog requests go.
    pub peer: Peer,
}

fn contact_uri(headers: &crate::sip::header::Headers) -> Option<Uri> {
    headers
        .contacts()
        .find_map(|c| c.addr().map(|a| a.uri.clone()))
}

impl Dialog {
    /// The UAS side of a dialog created by `invite` (received from `peer`), with our To tag.
    pub fn uas(invite: &Request, local_tag: &str, peer: Peer) -> Option<Dialog> {
        let mut local = invite.headers.to()?.clone();
        local.set_tag(local_tag);
        let remote = invite.headers.from()?.clone();
        Some(Dialog {
            call_id: invite.headers.call_id()?.to_owned(),
            local,
            remote,
            local_cseq: 0,
            remote_cseq: invite.headers.cseq().map(|c| c.seq),
            remote_target: contact_uri(&invite.headers).unwrap_or_else(|| {
                invite
                    .headers
                    .from()
                    .map_or(invite.uri.clone(), |f| f.uri.clone())
            }),
            route_set: invite.headers.record_routes().cloned().collect(),
            peer,
        })
    }

    /// The UAC side of a dialog: `invite` is what we sent to `peer`, `response` a 1xx (with a To
    /// tag) or 2xx from the peer.
    pub fn uac(invite: &Request, response: &Response, peer: Peer) -> Option<Dialog> {
        let remote = response.headers.to()?.clone();
        remote.tag()?;
        let mut route_set: Vec<NameAddr> = response.headers.record_routes().cloned().collect();
        route_set.reverse();
        Some(Dialog {
            call_id: invite.headers.call_id()?.to_owned(),
            local: invite.headers.from()?.clone(),
            remote,
            local_cseq: invite.headers.cseq().map_or(1, |c| c.seq),
            remote_cseq: None,
            remote_target: contact_uri(&response.headers).unwrap_or_else(|| invite.uri.clone()),
            route_set,
            peer,
        })
    }

    /// Whether an in-dialog request from the peer belongs to this dialog (Call-ID and tags).
    pub fn matches_request(&self, req: &Request) -> bool {
        req.headers.call_id() == Some(self.call_id.as_str())
            && req.headers.to().and_then(NameAddr::tag) == self.local.tag()
            && req.headers.from().and_then(NameAddr::tag) == self.remote.tag()
    }

    /// Checks and records the CSeq of an in-dialog request from the peer (RFC 3261 §12.2.2):
    /// `false` for an out-of-order request (answer 500).
    pub fn accept_remote_cseq(&mut self, req: &Request) -> bool {
        let Some(seq) = req.headers.cseq().map(|c| c.seq) else {
            return false;
        };
        if req.method == Method::Ack || req.method == Method::Cancel {
            return true;
        }
        if self.remote_cseq.is_some_and(|r| seq <= r) {
            return false;
        }
        self.remote_cseq = Some(seq);
        true
    }

    /// Takes a refreshed remote target from a target-refresh request or its 2xx (re-INVITE, UPDATE).
    pub fn refresh_target(&mut self, headers: &crate::sip::header::Headers) {
        if let Some(uri) = contact_uri(headers) {
            self.remote_target = uri;
        }
    }

    fn base(&self, method: Method, seq: u32, via: Via) -> Request {
        let mut req = Request::new(method.clone(), self.remote_target.clone());
        let h = &mut req.headers;
        h.push(Header::Via(via));
        h.push(Header::MaxForwards(70));
        h.push(Header::From(self.local.clone()));
        h.push(Header::To(self.remote.clone()));
        h.push(Header::CallId(self.call_id.clone()));
        h.push(Header::CSeq(CSeq { seq, method }));
        for r in &self.route_set {
            h.push(Header::Route(r.clone()));
        }
        req
    }

    /// A new in-dialog request (BYE, re-INVITE, INFO, UPDATE …) with the next CSeq.
    pub fn request(&mut self, method: Method, via: Via) -> Request {
        self.local_cseq += 1;
        self.base(method, self.local_cseq, via)
    }

    /// The ACK for a 2xx to the INVITE whose CSeq number is `invite_seq` (RFC 3261 §13.2.2.4).
    pub fn ack(&self, invite_seq: u32, via: Via) -> Request {
        self.base(Method::Ack, invite_seq, via)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::{parse_message, Framing, Limits};
    use crate::sip::peer::Proto;

    fn parse(s: &str) -> Message {
        parse_message(
            bytes::Bytes::from(s.replace('\n', "\r\n")),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap()
    }

    fn peer() -> Peer {
        Peer {
            proto: Proto::Udp,
            remote: "127.0.0.1:5062".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        }
    }

    const INVITE: &str = "INVITE sip:101@office.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1
From: <sip:100@office.test>;tag=a1
To: <sip:101@office.test>
Call-ID: c1
CSeq: 5 INVITE
Contact: <sip:100@127.0.0.1:5062>
Record-Route: <sip:p1;lr>, <sip:p2;lr>
Content-Length: 0

";

    #[test]
    fn uas_dialog_and_requests() {
        let Message::Request(inv) = parse(INVITE) else {
            panic!()
        };
        let mut d = Dialog::uas(&inv, "b2", peer()).unwrap();
        assert_eq!(d.remote_target.to_string(), "sip:100@127.0.0.1:5062");
        assert_eq!(d.route_set.len(), 2);
        let via = Via::parse("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx").unwrap();
        let bye = d.request(Method::Bye, via);
        assert_eq!(bye.headers.from().unwrap().tag(), Some("b2"));
        assert_eq!(bye.headers.to().unwrap().tag(), Some("a1"));
        assert_eq!(bye.headers.cseq().unwrap().seq, 1);
        let text = String::from_utf8(bye.encode()).unwrap();
        assert!(
            text.contains("Route: <sip:p1;lr>\r\nRoute: <sip:p2;lr>"),
            "{text}"
        );
        // Out-of-order CSeq from the peer.
        let Message::Request(mut again) = parse(INVITE) else {
            panic!()
        };
        again.headers.to_mut().unwrap().set_tag("b2");
        assert!(d.matches_request(&again));
        assert!(!d.accept_remote_cseq(&again));
    }

    #[test]
    fn uac_dialog_from_response() {
        let Message::Request(inv) = parse(INVITE) else {
            panic!()
        };
        let Message::Response(ok) = parse(
            "SIP/2.0 200 OK
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1
From: <sip:100@office.test>;tag=a1
To: <sip:101@office.test>;tag=zz
Call-ID: c1
CSeq: 5 INVITE
Contact: <sip:101@10.0.0.9:5070>
Record-Route: <sip:p1;lr>, <sip:p2;lr>
Content-Length: 0

",
        ) else {
            panic!()
        };
        let d = Dialog::uac(&inv, &ok, peer()).unwrap();
        assert_eq!(d.remote.tag(), Some("zz"));
        assert_eq!(d.route_set[0].to_string(), "<sip:p2;lr>");
        let ack = d.ack(
            5,
            Via::parse("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKy").unwrap(),
        );
        assert_eq!(ack.headers.cseq().unwrap().to_string(), "5 ACK");
        assert_eq!(ack.uri.to_string(), "sip:101@10.0.0.9:5070");
    }
}
