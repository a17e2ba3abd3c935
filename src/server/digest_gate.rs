//! The digest gate: decides whether a request carries valid credentials for an extension
//! (RFC 3261 §22, RFC 8760), issues challenges for the configured algorithms, signals stale
//! nonces, refuses replays, and rate-limits sources that keep failing — a PSTN gateway is a
//! toll-fraud target.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::sip::auth::{self, Algorithm, NonceManager, NonceStatus};
use crate::sip::message::Request;

/// Failed attempts a source may make per window before it is refused outright.
const MAX_FAILURES: u32 = 20;
const FAILURE_WINDOW_SECS: u64 = 60;

/// What the gate decided.
#[derive(Debug, PartialEq, Eq)]
pub enum GateOutcome {
    /// Valid credentials for this extension.
    Authenticated(String),
    /// Answer 401 with these WWW-Authenticate values.
    Challenge(Vec<String>),
    /// Answer 403 with this reason.
    Forbidden(&'static str),
    /// Answer 400 with this reason.
    Malformed(String),
}

pub struct DigestGate {
    realm: String,
    algorithms: Vec<Algorithm>,
    nonces: NonceManager,
    failures: HashMap<IpAddr, (u64, u32)>,
    entropy: u64,
}

impl DigestGate {
    /// `algorithms`: what challenges offer, preferred first.
    pub fn new(
        realm: String,
        algorithms: Vec<Algorithm>,
        secret: [u8; 32],
        nonce_ttl_secs: u64,
    ) -> DigestGate {
        let entropy = u64::from_le_bytes(secret[8..16].try_into().unwrap_or([3; 8]));
        DigestGate {
            realm,
            algorithms,
            nonces: NonceManager::new(secret, nonce_ttl_secs),
            failures: HashMap::new(),
            entropy,
        }
    }

    fn challenge(&mut self, unix: u64, stale: bool) -> GateOutcome {
        // xorshift: unpredictable enough with the secret-derived seed, and cheap per challenge.
        self.entropy ^= self.entropy << 13;
        self.entropy ^= self.entropy >> 7;
        self.entropy ^= self.entropy << 17;
        let nonce = self.nonces.issue(unix, self.entropy);
        GateOutcome::Challenge(
            self.algorithms
                .iter()
                .map(|a| auth::challenge(&self.realm, &nonce, *a, stale))
                .collect(),
        )
    }

    fn fail(&mut self, unix: u64, ip: IpAddr) {
        let entry = self.failures.entry(ip).or_insert((unix, 0));
        if unix.saturating_sub(entry.0) >= FAILURE_WINDOW_SECS {
            *entry = (unix, 0);
        }
        entry.1 += 1;
    }

    fn blocked(&self, unix: u64, ip: IpAddr) -> bool {
        self.failures.get(&ip).is_some_and(|(start, n)| {
            *n >= MAX_FAILURES && unix.saturating_sub(*start) < FAILURE_WINDOW_SECS
        })
    }

    /// Checks the Authorization headers of `req`; `password_of` gives an enabled extension's password.
    pub fn check(
        &mut self,
        unix: u64,
        req: &Request,
        source: IpAddr,
        password_of: impl Fn(&str) -> Option<String>,
    ) -> GateOutcome {
        if self.blocked(unix, source) {
            return GateOutcome::Forbidden("Too many failed authentications");
        }
        // Use the credentials for our realm; others (or other schemes) are ignored.
        let mut creds = None;
        for value in req.headers.get_all("Authorization") {
            match auth::parse_credentials(value) {
                Ok(c) if c.realm == self.realm => {
                    creds = Some(c);
                    break;
                }
                Ok(_) => {}
                Err(auth::AuthError::UnsupportedScheme) => {}
                Err(e) => {
                    return GateOutcome::Malformed(format!("Malformed Authorization header: {e}"))
                }
            }
        }
        let Some(creds) = creds else {
            return self.challenge(unix, false);
        };
        let Some(password) = password_of(&creds.username) else {
            tracing::warn!(user = %creds.username, %source, "authentication for unknown or disabled extension");
            self.fail(unix, source);
            return GateOutcome::Forbidden("Forbidden");
        };
        // Verify first: the nonce manager records nonce counts, and an unverified request must
        // not be able to advance them (that would lock the real phone out).
        if !auth::verify(&creds, req.method.as_str(), &password) {
            tracing::warn!(user = %creds.username, %source, "wrong password");
            self.fail(unix, source);
            return GateOutcome::Forbidden("Forbidden");
        }
        match self.nonces.check(&creds.nonce, creds.nc, unix) {
            NonceStatus::Valid => GateOutcome::Authenticated(creds.username),
            NonceStatus::Stale => self.challenge(unix, true),
            status @ (NonceStatus::Invalid | NonceStatus::Replay) => {
                tracing::debug!(user = %creds.username, ?status, "nonce refused; challenging again");
                self.challenge(unix, false)
            }
        }
    }

    pub fn purge(&mut self, unix: u64) {
        self.nonces.purge(unix);
        self.failures
            .retain(|_, (start, _)| unix.saturating_sub(*start) < FAILURE_WINDOW_SECS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::{parse_message, Framing, Limits};

    fn register(authorization: &str) -> Request {
        let text = format!(
            "REGISTER sip:office.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
             From: <sip:100@office.test>;tag=a\r\nTo: <sip:100@office.test>\r\nCall-ID: c\r\n\
             CSeq: 1 REGISTER\r\n{authorization}Content-Length: 0\r\n\r\n"
        );
        match parse_message(
            bytes::Bytes::from(text),
            Framing::Datagram,
            &Limits::default(),
        ) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    /// Credentials for `nonce` computed with `password`, nc = `nc`.
    fn credentials(nonce: &str, password: &str, nc: u32) -> String {
        let mut c = auth::Credentials {
            scheme: "Digest".into(),
            username: "100".into(),
            realm: "office.test".into(),
            nonce: nonce.into(),
            uri: "sip:office.test".into(),
            response: String::new(),
            algorithm: Algorithm::Md5,
            cnonce: Some("c0".into()),
            opaque: None,
            qop: Some("auth".into()),
            nc: Some(nc),
        };
        c.response = auth::expected_response(&c, "REGISTER", password);
        format!(
            "Authorization: Digest username=\"100\", realm=\"office.test\", nonce=\"{nonce}\", \
             uri=\"sip:office.test\", response=\"{}\", algorithm=MD5, cnonce=\"c0\", qop=auth, nc={nc:08x}\r\n",
            c.response
        )
    }

    fn nonce_of(outcome: &GateOutcome) -> String {
        let GateOutcome::Challenge(values) = outcome else {
            panic!("{outcome:?}")
        };
        values[0]
            .split("nonce=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("nonce")
            .to_owned()
    }

    #[test]
    fn failures_are_rate_limited_per_source() {
        let mut gate = DigestGate::new("office.test".into(), vec![Algorithm::Md5], [9; 32], 300);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let pw = |u: &str| (u == "100").then(|| "secret100".to_string());
        let nonce = nonce_of(&gate.check(1000, &register(""), ip, pw));
        // The right password is accepted.
        let ok = gate.check(
            1000,
            &register(&credentials(&nonce, "secret100", 1)),
            ip,
            pw,
        );
        assert_eq!(ok, GateOutcome::Authenticated("100".into()));
        for i in 0..MAX_FAILURES {
            let r = gate.check(
                1000,
                &register(&credentials(&nonce, "wrong", 2 + i)),
                ip,
                pw,
            );
            assert_eq!(r, GateOutcome::Forbidden("Forbidden"));
        }
        // Now even the right password from that source is refused for the window …
        let r = gate.check(
            1001,
            &register(&credentials(&nonce, "secret100", 100)),
            ip,
            pw,
        );
        assert_eq!(r, GateOutcome::Forbidden("Too many failed authentications"));
        // … while another source is unaffected …
        let r = gate.check(
            1001,
            &register(&credentials(&nonce, "secret100", 101)),
            other,
            pw,
        );
        assert_eq!(r, GateOutcome::Authenticated("100".into()));
        // … and the block lapses after the window.
        let fresh = nonce_of(&gate.check(1000 + FAILURE_WINDOW_SECS, &register(""), ip, pw));
        let r = gate.check(
            1000 + FAILURE_WINDOW_SECS,
            &register(&credentials(&fresh, "secret100", 1)),
            ip,
            pw,
        );
        assert_eq!(r, GateOutcome::Authenticated("100".into()));
    }

    #[test]
    fn stale_only_for_a_correct_digest_and_replays_rechallenged() {
        let mut gate = DigestGate::new("office.test".into(), vec![Algorithm::Md5], [9; 32], 300);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let pw = |u: &str| (u == "100").then(|| "secret100".to_string());
        let nonce = nonce_of(&gate.check(1000, &register(""), ip, pw));
        let good = register(&credentials(&nonce, "secret100", 1));
        assert_eq!(
            gate.check(1000, &good, ip, pw),
            GateOutcome::Authenticated("100".into())
        );
        // Same nc again: a replay gets a fresh challenge, not access.
        assert!(matches!(
            gate.check(1000, &good, ip, pw),
            GateOutcome::Challenge(_)
        ));
        // After the nonce's lifetime: stale=TRUE for a correct digest, 403 for a wrong one.
        let late = register(&credentials(&nonce, "secret100", 2));
        let GateOutcome::Challenge(v) = gate.check(1400, &late, ip, pw) else {
            panic!("expected challenge")
        };
        assert!(v[0].contains("stale=TRUE"), "{v:?}");
        let wrong = register(&credentials(&nonce, "nope", 3));
        assert_eq!(
            gate.check(1400, &wrong, ip, pw),
            GateOutcome::Forbidden("Forbidden")
        );
    }
}
