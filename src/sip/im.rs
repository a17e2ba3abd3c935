//! Instant messages (RFC 3428): the MESSAGE request pasarela sends to a registered phone, and
//! the text of a MESSAGE a phone sent. Only `text/plain` is carried (RFC 3428 §9 makes it the
//! one type every endpoint understands); its charset is UTF-8.

use bytes::Bytes;

use super::header::{CSeq, Header, NameAddr, Via};
use super::message::Request;
use super::method::Method;
use super::peer::Peer;
use super::uri::{Host, Params, SipUri, Uri};

/// The Content-Type of every MESSAGE pasarela sends.
pub const TEXT_PLAIN: &str = "text/plain;charset=UTF-8";

/// What a MESSAGE carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing<'a> {
    /// Where it goes (a registered contact).
    pub target: &'a Uri,
    /// The flow it goes on (the binding's).
    pub peer: Peer,
    /// The sender's user part (`+4917…` for an SMS, an extension number).
    pub from_user: &'a str,
    /// The addressee's user part (the extension).
    pub to_user: &'a str,
    /// The domain for From and To.
    pub domain: &'a str,
    /// A branch from the transaction layer.
    pub branch: &'a str,
    /// A From tag and Call-ID seed, unique per request.
    pub tag: &'a str,
    /// The text.
    pub text: &'a str,
}

/// Builds the MESSAGE request.
pub fn build(m: &Outgoing<'_>) -> Request {
    let mut req = Request::new(Method::Message, m.target.clone());
    let h = &mut req.headers;
    let mut params = Params::new();
    params.set("branch", Some(m.branch));
    params.set("rport", None);
    h.push(Header::Via(Via {
        transport: m.peer.proto.via_token().into(),
        host: Host::from_ip(m.peer.local.ip()),
        port: Some(m.peer.local.port()),
        params,
    }));
    h.push(Header::MaxForwards(70));
    let domain = Host::Name(m.domain.to_owned());
    let mut from = NameAddr::new(Uri::Sip(SipUri::new(
        Some(m.from_user),
        domain.clone(),
        None,
    )));
    from.set_tag(m.tag);
    h.push(Header::From(from));
    h.push(Header::To(NameAddr::new(Uri::Sip(SipUri::new(
        Some(m.to_user),
        domain,
        None,
    )))));
    h.push(Header::CallId(format!("{}@pasarela", m.tag)));
    h.push(Header::CSeq(CSeq {
        seq: 1,
        method: Method::Message,
    }));
    h.push(Header::ContentType(TEXT_PLAIN.to_owned()));
    req.body = Bytes::copy_from_slice(m.text.as_bytes());
    req
}

/// Why a MESSAGE from a phone is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not text/plain (RFC 3428 §7: 415).
    #[error("only text/plain is accepted")]
    Type,
    /// Not UTF-8 text.
    #[error("the text is not UTF-8")]
    Charset,
    /// No text.
    #[error("empty message")]
    Empty,
}

/// The text of a MESSAGE (text/plain; no Content-Type counts as text/plain).
pub fn text_of(req: &Request) -> Result<String, BodyError> {
    if let Some(ct) = req.headers.content_type() {
        let media = ct.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("text/plain") {
            return Err(BodyError::Type);
        }
    }
    let text = std::str::from_utf8(&req.body).map_err(|_| BodyError::Charset)?;
    if text.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::{parse_message, Framing, Limits};
    use crate::sip::peer::Proto;

    #[test]
    fn message_round_trips_through_the_parser() {
        let target = Uri::parse("sip:101@127.0.0.1:5070").unwrap();
        let peer = Peer {
            proto: Proto::Udp,
            remote: "127.0.0.1:5070".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        };
        let req = build(&Outgoing {
            target: &target,
            peer,
            from_user: "+491701234567",
            to_user: "101",
            domain: "office.test",
            branch: "z9hG4bKx1",
            tag: "m1",
            text: "Привет 😀",
        });
        let bytes = req.encode();
        let parsed = match parse_message(Bytes::from(bytes), Framing::Datagram, &Limits::default())
        {
            Ok(crate::sip::message::Message::Request(r)) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(parsed.method, Method::Message);
        assert_eq!(text_of(&parsed).unwrap(), "Привет 😀");
        let mut only_html = Request::new(Method::Message, target);
        only_html
            .headers
            .push(Header::ContentType("text/html".into()));
        only_html.body = Bytes::from_static(b"x");
        assert_eq!(text_of(&only_html), Err(BodyError::Type));
    }
}
