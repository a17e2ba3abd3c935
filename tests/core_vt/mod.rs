//! What the virtual-time tests of the SIP core share (core_calls, line_core_calls,
//! forward_core, transfer_core): the core's address, extensions with known passwords, digest
//! answers to its challenges, and reading what it sent. No sockets, no clock.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use pasarela::b2bua::CallSettings;
use pasarela::callctl::CoreSettings;
use pasarela::registrar::RegistrarSettings;
use pasarela::sip::transaction::Timers;

use pasarela::sip::auth::{self, Algorithm, Credentials};
use pasarela::sip::message::{Message, Request, Response};
use pasarela::sip::peer::{Peer, Proto};
use pasarela::store::ExtensionRow;

/// The address the core is reached on.
pub const SERVER: &str = "127.0.0.1:5060";

/// A UDP peer at `remote` talking to [`SERVER`].
pub fn peer(remote: &str) -> Peer {
    Peer {
        proto: Proto::Udp,
        remote: remote.parse().expect("addr"),
        local: SERVER.parse().expect("addr"),
    }
}

/// Extension `n` of realm office.test, password `secret{n}`.
pub fn ext(n: &str) -> ExtensionRow {
    let (ha1_md5, ha1_sha256) =
        pasarela::store::digest_ha1(n, "office.test", &format!("secret{n}"));
    ExtensionRow {
        number: n.into(),
        ha1_md5,
        ha1_sha256,
        name: None,
        did: None,
        enabled: true,
        permissions: None,
        legacy_digest: false,
        allow: Vec::new(),
    }
}

/// The responses among what the core sent.
pub fn responses(out: &[(Message, SocketAddr)]) -> Vec<&Response> {
    out.iter()
        .filter_map(|(m, _)| match m {
            Message::Response(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The first response with `status` among what the core sent (`what` names it if missing).
pub fn response(out: &[(Message, SocketAddr)], status: u16, what: &str) -> Response {
    responses(out)
        .into_iter()
        .find(|r| r.status == status)
        .unwrap_or_else(|| panic!("{what}: no {status} in {out:?}"))
        .clone()
}

/// The To tag of a response (the dialog's tag on pasarela's side).
pub fn to_tag(r: &Response) -> String {
    r.headers
        .to()
        .and_then(|t| t.tag())
        .expect("tag")
        .to_owned()
}

/// The Authorization value answering the challenge in `resp` for extension `user`.
pub fn authorization(resp: &Response, user: &str, method: &str, uri: &str) -> String {
    let challenge = resp.headers.get("WWW-Authenticate").expect("challenge");
    let nonce = challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("nonce");
    let mut c = Credentials {
        scheme: "Digest".into(),
        username: user.into(),
        realm: "office.test".into(),
        nonce: nonce.into(),
        uri: uri.into(),
        response: String::new(),
        algorithm: Algorithm::Md5,
        cnonce: Some("abc".into()),
        opaque: None,
        qop: Some("auth".into()),
        nc: Some(1),
    };
    c.response = auth::expected_response(&c, method, &format!("secret{user}"));
    format!(
        "Digest username=\"{user}\", realm=\"office.test\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\", algorithm=MD5, cnonce=\"abc\", qop=auth, nc=00000001",
        c.response
    )
}

/// The 200 a UA gives pasarela's in-dialog request `r`.
pub fn ok_for(r: &Request) -> String {
    format!(
        "SIP/2.0 200 OK\nVia: {}\nFrom: {}\nTo: {}\nCall-ID: {}\nCSeq: {}\nContent-Length: 0\n\n",
        r.headers.via().expect("via"),
        r.headers.from().expect("from"),
        r.headers.to().expect("to"),
        r.headers.call_id().expect("cid"),
        r.headers.cseq().expect("cseq")
    )
}

/// The core's settings for realm office.test: ringing gives up after `no_answer`; with
/// `routing`, numbers that are no extension go to the router (a route request).
pub fn settings(no_answer: Duration, routing: bool) -> CoreSettings {
    CoreSettings {
        realm: "office.test".into(),
        server_name: "pasarela-test".into(),
        timers: Timers::default(),
        registrar: RegistrarSettings {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        },
        nonce_ttl_secs: 300,
        digest_algorithms: vec![Algorithm::Md5],
        default_permissions: pasarela::routing::Permissions::default(),
        routing,
        calls: CallSettings {
            domain: "office.test".into(),
            server_name: "pasarela-test".into(),
            no_answer,
            max_duration: Duration::from_secs(3600),
            media_ip: "127.0.0.1".parse().expect("ip"),
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            failover_after: CallSettings::DEFAULT_FAILOVER_AFTER,
            srtp: Default::default(),
        },
    }
}
