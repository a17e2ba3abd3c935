//! Message helpers of the transaction layer: the RFC 3581 / §18.2.1 Via fix-ups on receipt, the
//! §18.2.2 response destination, the §17.2.3 matching keys, and the ACK (§17.1.1.3) and CANCEL
//! (§9.1) a client builds from its INVITE.

use std::net::{IpAddr, SocketAddr};

use crate::sip::header::{CSeq, Header, Via};
use crate::sip::message::{Request, Response};
use crate::sip::method::Method;
use crate::sip::peer::Peer;

/// The RFC 3261 magic cookie that marks a branch as globally unique.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// An address in its canonical form (IPv4-mapped IPv6 addresses as IPv4).
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// Applies §18.2.1 and RFC 3581 §4 to the top Via of a received request: adds
/// `received=<source ip>` when the sent-by host differs from the source address (and always when
/// the client asked for `rport`), and fills an empty `rport` with the source port. Returns `false`
/// when the request has no Via at all.
pub fn fix_top_via(request: &mut Request, peer: Peer) -> bool {
    let Some(via) = request.headers.via_mut() else {
        return false;
    };
    let src = canonical(peer.remote.ip());
    let rport_asked = matches!(via.rport(), Some(None));
    let same = via.host.ip().is_some_and(|ip| canonical(ip) == src);
    if !same || rport_asked {
        via.params.set_owned("received", ip_text(src));
    }
    if rport_asked {
        let mut port = String::with_capacity(5);
        let _ = crate::sip::uri::write_decimal(&mut port, peer.remote.port().into());
        via.params.set_owned("rport", port);
    }
    true
}

/// `ip` as text; IPv4 (every UDP request's `received=`) without `core::fmt`'s machinery.
fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let mut s = String::with_capacity(15);
            let _ = crate::sip::uri::write_ipv4(&mut s, a);
            s
        }
        IpAddr::V6(a) => a.to_string(),
    }
}

/// Where responses to a request that arrived from `peer` with top Via `via` go (§18.2.2 with
/// RFC 3581): over a reliable transport back on the same connection; over UDP to the source
/// address and port when `rport` was used, else to `maddr`, `received` or the sent-by address
/// (in that order) at the sent-by port (default 5060). The local socket is the one the request
/// arrived on.
pub fn response_destination(via: Option<&Via>, peer: Peer) -> Peer {
    if peer.proto.is_reliable() {
        return peer;
    }
    let Some(via) = via else { return peer };
    if via.rport().is_some() {
        return peer;
    }
    let port = via.port.unwrap_or(5060);
    let maddr = via.params.value("maddr").and_then(|m| {
        m.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok()
    });
    let ip = maddr
        .or_else(|| via.received())
        .or_else(|| via.host.ip())
        .unwrap_or_else(|| peer.remote.ip());
    Peer {
        proto: peer.proto,
        remote: SocketAddr::new(ip, port),
        local: peer.local,
    }
}

/// How a server transaction is found again (§17.2.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MatchKey {
    /// RFC 3261: branch (with magic cookie), sent-by, and method (ACK counted as INVITE).
    Branch {
        branch: String,
        host: String,
        port: Option<u16>,
        /// The method itself, not its text: no allocation per request matched (issue 22).
        method: Method,
    },
    /// RFC 2543 fallback: Request-URI, tags, Call-ID, CSeq number, top Via, and method (ACK
    /// counted as INVITE). For an ACK the To tag is checked against the response sent instead.
    Legacy {
        uri: String,
        from_tag: Option<String>,
        to_tag: Option<String>,
        call_id: String,
        cseq: u32,
        via: String,
        method: Method,
    },
}

/// Whether a request must be matched by the RFC 2543 rules (its top Via lacks the magic cookie).
pub fn is_legacy(request: &Request) -> bool {
    !request.headers.via().is_some_and(Via::has_rfc3261_branch)
}

/// The matching key of `request` for a transaction of method `method` (ACK is folded into INVITE
/// by the caller), with `to_tag` as the To tag for the legacy rules. `None` when the headers
/// needed are missing.
pub fn match_key(request: &Request, method: &Method, to_tag: Option<&str>) -> Option<MatchKey> {
    let via = request.headers.via()?;
    if via.has_rfc3261_branch() {
        // Written and lowered in place: one allocation, no `core::fmt` (every request).
        let mut host = String::with_capacity(24);
        let _ = via.host.write_to(&mut host);
        host.make_ascii_lowercase();
        return Some(MatchKey::Branch {
            branch: via.branch()?.to_owned(),
            host,
            port: via.port,
            method: method.clone(),
        });
    }
    Some(MatchKey::Legacy {
        uri: request.uri.to_string(),
        from_tag: request
            .headers
            .from()
            .and_then(|f| f.tag())
            .map(str::to_owned),
        to_tag: to_tag.map(str::to_owned),
        call_id: request.headers.call_id()?.to_owned(),
        cseq: request.headers.cseq()?.seq,
        via: via.to_string(),
        method: method.clone(),
    })
}

/// The To tag of a request or response.
pub fn to_tag(headers: &crate::sip::header::Headers) -> Option<&str> {
    headers.to().and_then(|t| t.tag())
}

/// A request that repeats `invite`'s Request-URI, top Via, Route headers, From, Call-ID and CSeq
/// number with another method and the given To: what ACK-for-non-2xx and CANCEL share.
fn like_invite(
    invite: &Request,
    method: Method,
    to: Option<&crate::sip::header::NameAddr>,
) -> Request {
    let mut req = Request::new(method.clone(), invite.uri.clone());
    let h = &mut req.headers;
    if let Some(via) = invite.headers.via() {
        h.push(Header::Via(via.clone()));
    }
    for route in invite.headers.routes() {
        h.push(Header::Route(route.clone()));
    }
    h.push(Header::MaxForwards(70));
    if let Some(from) = invite.headers.from() {
        h.push(Header::From(from.clone()));
    }
    if let Some(to) = to {
        h.push(Header::To(to.clone()));
    }
    if let Some(cid) = invite.headers.call_id() {
        h.push(Header::CallId(cid.to_owned()));
    }
    h.push(Header::CSeq(CSeq {
        seq: invite.headers.cseq().map_or(0, |c| c.seq),
        method,
    }));
    req
}

/// The ACK for a non-2xx final response to `invite` (§17.1.1.3): Request-URI, Call-ID, From and
/// CSeq number of the INVITE, its top Via only, To from the response, the INVITE's Route headers.
pub fn build_ack(invite: &Request, response: &Response) -> Request {
    like_invite(
        invite,
        Method::Ack,
        response.headers.to().or_else(|| invite.headers.to()),
    )
}

/// What [`build_ack`] reads of an INVITE (Request-URI, top Via, Route, From, To, Call-ID and
/// CSeq number), without its Contact, other headers and body: kept by a client transaction
/// instead of the whole INVITE.
pub(super) fn ack_basis(invite: &Request) -> Request {
    like_invite(invite, Method::Invite, invite.headers.to())
}

/// The CANCEL for a pending `invite` (§9.1): Request-URI, Call-ID, From, To and CSeq number of the
/// INVITE, its top Via only (same branch), its Route headers. Send it with
/// [`TransactionLayer::send_request`](super::TransactionLayer::send_request) to the INVITE's peer;
/// the layer holds it back until a provisional response has arrived.
pub fn build_cancel(invite: &Request) -> Request {
    like_invite(invite, Method::Cancel, invite.headers.to())
}
