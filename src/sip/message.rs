//! The SIP message model (RFC 3261 §7): requests, responses, and their serialisation.
//!
//! Serialisation always writes one value per header line and a Content-Length computed from
//! the body, so a message built or modified by pasarela is framed correctly on any transport.

use bytes::Bytes;

use super::header::{Header, Headers};
use super::method::Method;
use super::uri::Uri;

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: Headers,
    pub body: Bytes,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Bytes,
}

/// Either kind of message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
}

impl Message {
    pub fn headers(&self) -> &Headers {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Request(r) => r.encode(),
            Message::Response(r) => r.encode(),
        }
    }
}

/// A buffer for a message with `headers` and `body`, sized so that it rarely grows.
fn buffer_for(headers: &Headers, body: &[u8]) -> String {
    String::with_capacity(64 + headers.0.len() * 64 + body.len())
}

/// Appends the headers (Content-Length computed from the body), the empty line and the body
/// to `s`, which holds the start line.
fn encode_common(mut s: String, headers: &Headers, body: &[u8]) -> Vec<u8> {
    for h in headers.iter() {
        if matches!(h, Header::ContentLength(_)) {
            continue;
        }
        h.write_to(&mut s);
    }
    s.push_str("Content-Length: ");
    let _ = super::uri::write_decimal(&mut s, body.len() as u64);
    s.push_str("\r\n\r\n");
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

impl Request {
    pub fn new(method: Method, uri: Uri) -> Request {
        Request {
            method,
            uri,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut s = buffer_for(&self.headers, &self.body);
        s.push_str(self.method.as_str());
        s.push(' ');
        let _ = self.uri.write_to(&mut s);
        s.push_str(" SIP/2.0\r\n");
        encode_common(s, &self.headers, &self.body)
    }
}

impl Response {
    /// A response to `req` per RFC 3261 §8.2.6: Via, From, To, Call-ID and CSeq copied; a To
    /// tag is added (if missing and `to_tag` is given) for anything but 100.
    pub fn to_request(req: &Request, status: u16, reason: &str, to_tag: Option<&str>) -> Response {
        // Room for the copied headers and the few a caller adds (Server, Contact,
        // Content-Type, Retry-After), not the 24 of `Headers::new` (~3.4 KB per response).
        let vias = req.headers.vias().count();
        let mut headers = Headers(Vec::with_capacity(vias + 9));
        for h in req.headers.iter() {
            match h {
                Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                    headers.push(h.clone())
                }
                Header::To(to) => {
                    let mut to = to.clone();
                    if status > 100 && to.tag().is_none() {
                        if let Some(tag) = to_tag {
                            to.set_tag(tag);
                        }
                    }
                    headers.push(Header::To(to));
                }
                Header::Other(n, _) if status == 100 && n.eq_ignore_ascii_case("Timestamp") => {
                    headers.push(h.clone())
                }
                _ => {}
            }
        }
        Response {
            status,
            reason: reason.to_owned(),
            headers,
            body: Bytes::new(),
        }
    }

    /// The bytes of `Response::to_request(req, status, reason, None).encode()`, written
    /// straight from the request's headers: for the 100 Trying of every INVITE, which is only
    /// sent, never kept or changed (building and dropping it cost ~7 K instructions per call).
    pub fn encode_reply(req: &Request, status: u16, reason: &str) -> Vec<u8> {
        let mut s = String::with_capacity(64 + 6 * 96);
        s.push_str("SIP/2.0 ");
        let _ = super::uri::write_decimal(&mut s, status.into());
        s.push(' ');
        s.push_str(reason);
        s.push_str("\r\n");
        for h in req.headers.iter() {
            let copied = match h {
                Header::Via(_)
                | Header::From(_)
                | Header::To(_)
                | Header::CallId(_)
                | Header::CSeq(_) => true,
                Header::Other(n, _) => status == 100 && n.eq_ignore_ascii_case("Timestamp"),
                _ => false,
            };
            if copied {
                h.write_to(&mut s);
            }
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut s = buffer_for(&self.headers, &self.body);
        s.push_str("SIP/2.0 ");
        let _ = super::uri::write_decimal(&mut s, self.status.into());
        s.push(' ');
        s.push_str(&self.reason);
        s.push_str("\r\n");
        encode_common(s, &self.headers, &self.body)
    }
}

/// The standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        485 => "Ambiguous",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::parse::{parse_message, Framing, Limits};

    fn request(text: &str) -> Request {
        match parse_message(
            Bytes::copy_from_slice(text.as_bytes()),
            Framing::Datagram,
            &Limits::default(),
        ) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reply_is_encoded_as_the_built_response_would_be() {
        let invite = request(
            "INVITE sip:101@office.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1;rport\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK0\r\n\
Max-Forwards: 70\r\n\
From: \"Ann\" <sip:100@office.test>;tag=a1\r\n\
To: <sip:101@office.test>\r\n\
Call-ID: c1@host\r\n\
CSeq: 5 INVITE\r\n\
Timestamp: 54\r\n\
Contact: <sip:100@127.0.0.1:5062>\r\n\
Record-Route: <sip:p1;lr>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n",
        );
        for (status, reason) in [(100, "Trying"), (180, "Ringing"), (503, "Busy")] {
            let built = Response::to_request(&invite, status, reason, None).encode();
            assert_eq!(
                String::from_utf8(Response::encode_reply(&invite, status, reason)).unwrap(),
                String::from_utf8(built).unwrap()
            );
        }
        let text = String::from_utf8(Response::encode_reply(&invite, 100, "Trying")).unwrap();
        assert!(text.contains("Timestamp: 54\r\n"), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"), "{text}");
    }
}
