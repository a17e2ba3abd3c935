//! SIP-specific event notification (RFC 6665): the Event, Subscription-State and Allow-Events
//! headers, and the NOTIFY requests a notifier sends inside the dialog a SUBSCRIBE created.
//! Sans-IO: the subscription service (`crate::subscriptions`) decides what to send and when.

use bytes::Bytes;

use super::dialog::Dialog;
use super::header::{trim_ws, Contact, Header, Headers, NameAddr, Via};
use super::message::Request;
use super::method::Method;

/// The event packages pasarela serves, as Allow-Events lists them.
pub const ALLOW_EVENTS: &str = "dialog, presence, message-summary";

/// An Event header: the package name (lower-cased: package names compare case-insensitively)
/// and its `id` parameter, which tells apart several subscriptions in one dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub package: String,
    pub id: Option<String>,
}

impl Event {
    /// The Event header of a request (`Event`, compact `o`); `None` when missing or not a
    /// token.
    pub fn of(headers: &Headers) -> Option<Event> {
        Event::parse(headers.get("Event")?)
    }

    /// Parses an Event header value (`dialog;id=7`).
    pub fn parse(value: &str) -> Option<Event> {
        let mut parts = value.split(';');
        let package = trim_ws(parts.next()?);
        if package.is_empty() || !super::header::is_token(package) {
            return None;
        }
        let id = parts.find_map(|p| {
            let (k, v) = p.split_once('=')?;
            trim_ws(k)
                .eq_ignore_ascii_case("id")
                .then(|| trim_ws(v).to_owned())
        });
        Some(Event {
            package: package.to_ascii_lowercase(),
            id,
        })
    }

    /// The header value.
    pub fn value(&self) -> String {
        match &self.id {
            Some(id) => format!("{};id={id}", self.package),
            None => self.package.clone(),
        }
    }
}

/// Subscription-State (RFC 6665 §8.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionState {
    /// Active, with the seconds left.
    Active(u32),
    /// Ended: `timeout` (expired or unsubscribed), `noresource` (the resource is gone),
    /// `deactivated`, `rejected`.
    Terminated(&'static str),
}

impl SubscriptionState {
    pub fn value(&self) -> String {
        match self {
            SubscriptionState::Active(secs) => format!("active;expires={secs}"),
            SubscriptionState::Terminated(reason) => format!("terminated;reason={reason}"),
        }
    }
}

/// What one NOTIFY carries.
#[derive(Debug, Clone)]
pub struct Notification<'a> {
    pub event: &'a Event,
    pub state: SubscriptionState,
    /// Content-Type of the body.
    pub content_type: &'a str,
    pub body: Bytes,
    /// Our Contact (NOTIFY is a target-refresh request, RFC 6665 §4.1.2.2 and §4.2.2.2).
    pub contact: &'a NameAddr,
}

/// The NOTIFY for `n` in the subscription's dialog (next CSeq).
pub fn notify(dialog: &mut Dialog, via: Via, n: &Notification<'_>) -> Request {
    let mut req = dialog.request(Method::Notify, via);
    let h = &mut req.headers;
    h.push(Header::Contact(Contact::Addr(n.contact.clone())));
    h.push(Header::Other("Event".into(), n.event.value()));
    h.push(Header::Other("Subscription-State".into(), n.state.value()));
    h.push(Header::Other("Allow-Events".into(), ALLOW_EVENTS.into()));
    if !n.body.is_empty() {
        h.push(Header::ContentType(n.content_type.to_owned()));
    }
    req.body = n.body.clone();
    req
}

/// Whether a request's Accept header (if any) takes `mime`: no Accept means the package's
/// default type, which is what we send.
pub fn accepts(headers: &Headers, mime: &str) -> bool {
    let mut any = false;
    for t in headers.tokens("Accept") {
        any = true;
        let m = trim_ws(t.split(';').next().unwrap_or_default());
        if m.eq_ignore_ascii_case(mime) || m == "*/*" {
            return true;
        }
        if let (Some((top, "*")), Some((want, _))) = (m.split_once('/'), mime.split_once('/')) {
            if top.eq_ignore_ascii_case(want) {
                return true;
            }
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::{parse_message, Framing, Limits};
    use crate::sip::peer::{Peer, Proto};
    use crate::sip::uri::Uri;

    fn parse(s: &str) -> Request {
        let Message::Request(r) = parse_message(
            bytes::Bytes::from(s.replace('\n', "\r\n")),
            Framing::Datagram,
            &Limits::default(),
        )
        .unwrap() else {
            panic!("not a request")
        };
        r
    }

    const SUBSCRIBE: &str = "SUBSCRIBE sip:101@office.test SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1
From: <sip:100@office.test>;tag=w1
To: <sip:101@office.test>
Call-ID: s1
CSeq: 1 SUBSCRIBE
Contact: <sip:100@127.0.0.1:5062>
o: Dialog ; id=7
Accept: application/dialog-info+xml, multipart/related
Expires: 600
Content-Length: 0

";

    #[test]
    fn event_header_in_compact_form_with_id() {
        let req = parse(SUBSCRIBE);
        let ev = Event::of(&req.headers).unwrap();
        assert_eq!(ev.package, "dialog");
        assert_eq!(ev.id.as_deref(), Some("7"));
        assert_eq!(ev.value(), "dialog;id=7");
        assert!(Event::parse("").is_none());
        assert!(Event::parse("dia log").is_none());
        assert!(accepts(&req.headers, "application/dialog-info+xml"));
        assert!(!accepts(&req.headers, "application/pidf+xml"));
        assert!(accepts(&Headers::new(), "application/pidf+xml"));
    }

    #[test]
    fn notify_in_the_subscription_dialog() {
        let req = parse(SUBSCRIBE);
        let peer = Peer {
            proto: Proto::Udp,
            remote: "127.0.0.1:5062".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        };
        let mut d = Dialog::uas(&req, "n1", peer).unwrap();
        let ev = Event::of(&req.headers).unwrap();
        let contact = NameAddr::new(Uri::parse("sip:101@127.0.0.1:5060").unwrap());
        let via = Via::parse("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn").unwrap();
        let n = notify(
            &mut d,
            via,
            &Notification {
                event: &ev,
                state: SubscriptionState::Active(600),
                content_type: "application/dialog-info+xml",
                body: Bytes::from_static(b"<x/>"),
                contact: &contact,
            },
        );
        let text = String::from_utf8(n.encode()).unwrap();
        assert!(text.starts_with("NOTIFY sip:100@127.0.0.1:5062 SIP/2.0\r\n"));
        assert!(
            text.contains("From: <sip:101@office.test>;tag=n1\r\n"),
            "{text}"
        );
        assert!(
            text.contains("To: <sip:100@office.test>;tag=w1\r\n"),
            "{text}"
        );
        assert!(text.contains("CSeq: 1 NOTIFY\r\n"), "{text}");
        assert!(text.contains("Event: dialog;id=7\r\n"), "{text}");
        assert!(text.contains("Subscription-State: active;expires=600\r\n"));
        assert!(text.contains("Content-Type: application/dialog-info+xml\r\n"));
        assert!(text.ends_with("\r\n\r\n<x/>"));
        assert_eq!(
            SubscriptionState::Terminated("timeout").value(),
            "terminated;reason=timeout"
        );
    }
}
