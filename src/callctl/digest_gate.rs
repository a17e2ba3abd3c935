//! The digest gate: decides whether a request carries valid credentials for an extension
//! (RFC 3261 §22, RFC 8760), issues challenges for the configured algorithms, signals stale
//! nonces, and refuses replays — a PSTN gateway is a toll-fraud target. Strict by default:
//! the digest `uri` must be the Request-URI (§19.1.4 equivalence, 400 otherwise), `qop=auth`
//! is required unless the extension has `legacy_digest`, nonces are bound to the address they
//! were sent to and each nonce count is accepted once. Extensions are verified against their
//! HA1 hashes (the store keeps no clear password); failures feed the
//! [`guard`](crate::security::guard) that bans sources and locks accounts, and every refusal
//! looks the same ([`REFUSED`]).

use std::net::IpAddr;

use crate::security::guard::SharedGuard;
use crate::security::net::IpNet;
use crate::sip::auth::{self, Algorithm, NonceManager, NonceStatus};
use crate::sip::message::Request;
use crate::sip::uri_eq;

/// The one answer to every failed or refused authentication, whatever the reason (unknown
/// extension, wrong password, banned source, locked account, network not allowed): nothing
/// in it tells an attacker which extensions exist.
pub const REFUSED: &str = "Forbidden";

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

/// What [`DigestGate::evaluate`] decided, before anything is recorded and before a challenge
/// is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Valid credentials for this extension.
    Authenticated(String),
    /// A (fresh) challenge, `stale` when the credentials were right but their nonce expired.
    Challenge { stale: bool },
    /// Refused ([`REFUSED`]).
    Forbidden,
    /// Answer 400 with this reason.
    Malformed(String),
}

/// Why [`DigestGate::evaluate`] decided as it did: what [`DigestGate::check`] logs and counts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Why {
    Banned,
    MalformedHeader,
    NoCredentials,
    /// The digest was computed for this URI.
    UriMismatch(String),
    UnknownExtension,
    NoQop,
    OutsideAllowed,
    Locked,
    WrongPassword,
    /// A verified digest whose nonce is not valid now.
    Nonce(NonceStatus),
    Valid,
}

/// A failed attempt counted by the guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Against the source only (the extension is unknown, or not named reliably).
    Source,
    /// Against the source and the extension named.
    Account,
}

impl Why {
    /// The failure [`DigestGate::check`] records for this.
    fn failure(&self) -> Option<Failure> {
        match self {
            Why::UriMismatch(_) | Why::UnknownExtension => Some(Failure::Source),
            Why::NoQop | Why::OutsideAllowed | Why::Locked | Why::WrongPassword => {
                Some(Failure::Account)
            }
            Why::Banned
            | Why::MalformedHeader
            | Why::NoCredentials
            | Why::Nonce(_)
            | Why::Valid => None,
        }
    }
}

/// What [`DigestGate::evaluate`] found: the decision, and what [`DigestGate::check`] records
/// for it (a failure for the guard, or the nonce count of valid credentials and a success).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    pub decision: Decision,
    why: Why,
    /// The extension the credentials name.
    user: Option<String>,
    /// The nonce count to take, for valid credentials.
    nonce: Option<auth::NonceUse>,
}

/// The decision on a verified digest whose nonce is not valid: a stale one is challenged
/// again as stale, one not ours or replayed afresh.
fn nonce_refused(status: NonceStatus) -> Decision {
    Decision::Challenge {
        stale: status == NonceStatus::Stale,
    }
}

/// What the gate needs to know of an enabled extension.
#[derive(Debug, Clone, Default)]
pub struct Account {
    /// `H(number:realm:password)` with MD5, hex.
    pub ha1_md5: String,
    /// The same with SHA-256.
    pub ha1_sha256: String,
    /// Whether RFC 2069 answers (no `qop`) are accepted.
    pub legacy_digest: bool,
    /// Networks it may authenticate from; empty: anywhere.
    pub allow: Vec<IpNet>,
}

impl Account {
    /// The stored secret for credentials computed with `algorithm` (empty: none stored).
    fn ha1(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Md5 | Algorithm::Md5Sess => &self.ha1_md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => &self.ha1_sha256,
        }
    }
}

pub struct DigestGate {
    realm: String,
    algorithms: Vec<Algorithm>,
    nonces: NonceManager,
    guard: SharedGuard,
    /// The key of the hash that derives a challenge from its request (per process).
    keyed: std::collections::hash_map::RandomState,
    /// The nonce time slot, seconds (see [`NONCE_SLOT_SECS`]).
    slot_secs: u64,
}

/// Challenges are answered statelessly, so a retransmitted request must get the same one: the
/// nonce carries the start of a time slot rather than the time of the request. The slot is at
/// most this long and at most an eighth of the nonce lifetime, so a nonce is never issued
/// already (nearly) stale.
const NONCE_SLOT_SECS: u64 = 10;

impl DigestGate {
    /// `algorithms`: what challenges offer, preferred first.
    pub fn new(
        realm: String,
        algorithms: Vec<Algorithm>,
        secret: [u8; 32],
        nonce_ttl_secs: u64,
    ) -> DigestGate {
        DigestGate {
            realm,
            algorithms,
            nonces: NonceManager::new(secret, nonce_ttl_secs),
            guard: SharedGuard::default(),
            keyed: std::collections::hash_map::RandomState::new(),
            slot_secs: (nonce_ttl_secs / 8).clamp(1, NONCE_SLOT_SECS),
        }
    }

    /// The failure counters and bans, shared with the control socket and the dashboard.
    pub fn guard(&self) -> SharedGuard {
        self.guard.clone()
    }

    /// A keyed hash of what identifies `req` and its retransmissions (Call-ID, CSeq, top Via
    /// branch, From tag), for `purpose`: unpredictable without the key, equal for a
    /// retransmission.
    fn request_hash(&self, req: &Request, purpose: &str) -> u64 {
        use std::hash::BuildHasher;
        let h = &req.headers;
        self.keyed.hash_one((
            purpose,
            h.call_id(),
            h.cseq().map(|c| (c.seq, c.method.as_str())),
            h.via().and_then(|v| v.branch()),
            h.from().and_then(|f| f.tag()),
            // A request with credentials is challenged again with another nonce than the one
            // it answered.
            h.get_all("Authorization").next(),
        ))
    }

    /// The To tag of the challenge to `req`: the same for a retransmission of it.
    pub fn challenge_tag(&self, req: &Request) -> String {
        format!("{:012x}", self.request_hash(req, "tag") & 0xffff_ffff_ffff)
    }

    /// A challenge derived from `req`: a retransmission of it gets the same nonce (within a
    /// time slot), so it can be answered without keeping any state.
    fn challenge(&mut self, unix: u64, req: &Request, source: IpAddr, stale: bool) -> GateOutcome {
        let slot = unix - unix % self.slot_secs;
        let entropy = self.request_hash(req, "nonce");
        let nonce = self.nonces.issue_bound(slot, entropy, &bound_to(source));
        GateOutcome::Challenge(
            self.algorithms
                .iter()
                .map(|a| auth::challenge(&self.realm, &nonce, *a, stale))
                .collect(),
        )
    }

    /// The credentials of `req` for our realm (the first such Authorization header; other
    /// realms and schemes are ignored), or the error of a malformed one met before them.
    fn our_credentials(&self, req: &Request) -> Result<Option<auth::Credentials>, auth::AuthError> {
        for value in req.headers.get_all("Authorization") {
            match auth::parse_credentials(value) {
                Ok(c) if c.realm == self.realm => return Ok(Some(c)),
                Ok(_) | Err(auth::AuthError::UnsupportedScheme) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Checks the Authorization headers of `req` from `source`; `account_of` gives an enabled
    /// extension's secrets. [`DigestGate::evaluate`] decides, [`DigestGate::record`] counts
    /// and logs what it found and builds the answer.
    pub fn check(
        &mut self,
        unix: u64,
        req: &Request,
        source: IpAddr,
        account_of: impl Fn(&str) -> Option<Account>,
    ) -> GateOutcome {
        let evaluation = self.evaluate(unix, req, source, account_of);
        self.record(unix, req, source, evaluation)
    }

    /// What [`DigestGate::check`] decides about `req` from `source` now, and what it would
    /// record, without recording anything (no failure counted, no nonce count taken, nothing
    /// logged). The decisions, in order: a banned source is refused; a malformed
    /// Authorization header is answered 400; a request without credentials for our realm is
    /// challenged; credentials for another URI than the Request-URI are a replay (400); an
    /// unknown extension, an answer without `qop` from an extension without
    /// `legacy_digest`, a source outside the extension's networks, a locked account and a
    /// digest that does not verify are refused; the digest is verified before the nonce is
    /// looked at, so that an unverified request never advances a nonce count; an expired
    /// nonce is challenged again as stale, one not ours or replayed is challenged again.
    pub fn evaluate(
        &self,
        unix: u64,
        req: &Request,
        source: IpAddr,
        account_of: impl Fn(&str) -> Option<Account>,
    ) -> Evaluation {
        let refused = |why, user: Option<&auth::Credentials>| Evaluation {
            decision: Decision::Forbidden,
            why,
            user: user.map(|c| c.username.clone()),
            nonce: None,
        };
        if self.guard.lock().banned(source, unix) {
            return refused(Why::Banned, None);
        }
        let creds = match self.our_credentials(req) {
            Ok(c) => c,
            Err(e) => {
                return Evaluation {
                    decision: Decision::Malformed(format!("Malformed Authorization header: {e}")),
                    why: Why::MalformedHeader,
                    user: None,
                    nonce: None,
                }
            }
        };
        let Some(creds) = creds else {
            return Evaluation {
                decision: Decision::Challenge { stale: false },
                why: Why::NoCredentials,
                user: None,
                nonce: None,
            };
        };
        // RFC 3261 §22.4 / RFC 2617 §3.2.2.5: the digest covers the Request-URI; one computed
        // for another URI is a replay (a sniffed INVITE turned towards another number).
        if !uri_eq::text_equivalent(&creds.uri, &req.uri) {
            return Evaluation {
                decision: Decision::Malformed(
                    "Authorization uri does not match the Request-URI".into(),
                ),
                why: Why::UriMismatch(creds.uri.clone()),
                user: Some(creds.username),
                nonce: None,
            };
        }
        let Some(account) = account_of(&creds.username) else {
            return refused(Why::UnknownExtension, Some(&creds));
        };
        let user = creds.username.as_str();
        if creds.qop.is_none() && !account.legacy_digest {
            return refused(Why::NoQop, Some(&creds));
        }
        if !account.allow.is_empty() && !account.allow.iter().any(|n| n.contains(source)) {
            return refused(Why::OutsideAllowed, Some(&creds));
        }
        if !self.guard.lock().account_open(user, source, unix) {
            return refused(Why::Locked, Some(&creds));
        }
        let ha1 = account.ha1(creds.algorithm);
        if ha1.is_empty() || !auth::verify_ha1(&creds, req.method.as_str(), ha1) {
            return refused(Why::WrongPassword, Some(&creds));
        }
        // Without qop there is no nonce count: such a nonce is good for one request only.
        let nc = creds.nc.or(Some(0));
        match self
            .nonces
            .peek_use(&creds.nonce, nc, unix, &bound_to(source))
        {
            Ok(found) => Evaluation {
                decision: Decision::Authenticated(creds.username.clone()),
                why: Why::Valid,
                user: Some(creds.username),
                nonce: Some(found),
            },
            Err(status) => Evaluation {
                decision: nonce_refused(status),
                why: Why::Nonce(status),
                user: Some(creds.username),
                nonce: None,
            },
        }
    }

    /// Records what [`DigestGate::evaluate`] found for `req` from `source` (a failure for the
    /// guard, or the nonce count taken and a success) and answers. Taking the nonce count can
    /// still turn valid credentials into a stale challenge, when the table of nonce counts is
    /// full and their nonce's issue time is evicted to make room.
    fn record(
        &mut self,
        unix: u64,
        req: &Request,
        source: IpAddr,
        evaluation: Evaluation,
    ) -> GateOutcome {
        let Evaluation {
            mut decision,
            mut why,
            user,
            nonce,
        } = evaluation;
        let name = user.as_deref().unwrap_or_default();
        if let Some(found) = nonce {
            let status = self.nonces.take(found, unix);
            if status != NonceStatus::Valid {
                decision = nonce_refused(status);
                why = Why::Nonce(status);
            }
        }
        match &why {
            Why::Banned => tracing::debug!(%source, "request from a banned source refused"),
            Why::MalformedHeader | Why::NoCredentials | Why::Valid => {}
            Why::UriMismatch(uri) => {
                tracing::warn!(user = %name, %source, %uri, "Authorization uri differs from the Request-URI")
            }
            Why::UnknownExtension => {
                tracing::warn!(user = %name, %source, "authentication for unknown or disabled extension")
            }
            Why::NoQop => {
                tracing::warn!(user = %name, %source, "digest without qop (RFC 2069) refused; set legacy_digest = true for this extension if it needs it")
            }
            Why::OutsideAllowed => {
                tracing::warn!(user = %name, %source, "authentication from outside the extension's allowed networks")
            }
            Why::Locked => {
                tracing::warn!(user = %name, %source, "account locked: attempt from an untrusted address refused")
            }
            Why::WrongPassword => tracing::warn!(user = %name, %source, "wrong password"),
            Why::Nonce(status) => {
                if *status != NonceStatus::Stale {
                    tracing::debug!(user = %name, %source, ?status, "nonce refused; challenging again");
                }
            }
        }
        match why.failure() {
            Some(Failure::Source) => {
                self.guard.lock().failed(source, None, unix);
            }
            Some(Failure::Account) => {
                self.guard.lock().failed(source, user.as_deref(), unix);
            }
            None => {}
        }
        if why == Why::Valid {
            self.guard.lock().succeeded(source, name, unix);
        }
        match decision {
            Decision::Authenticated(user) => GateOutcome::Authenticated(user),
            Decision::Challenge { stale } => self.challenge(unix, req, source, stale),
            Decision::Forbidden => GateOutcome::Forbidden(REFUSED),
            Decision::Malformed(reason) => GateOutcome::Malformed(reason),
        }
    }

    /// Whether `req` from `source` carries credentials that [`DigestGate::check`] would accept
    /// now ([`DigestGate::evaluate`]: our realm, the Request-URI, an enabled extension allowed
    /// from `source` and not locked, a digest that verifies, and a nonce we issued to `source`
    /// that is neither expired nor replayed). Nothing is recorded (no failure counted, no
    /// nonce count taken): overload admission asks this before the request is authenticated,
    /// to refuse INVITEs that did not answer a challenge first. It is never taken as
    /// authentication: the request still goes through [`DigestGate::check`].
    pub fn answers_challenge(
        &self,
        unix: u64,
        req: &Request,
        source: IpAddr,
        account_of: impl Fn(&str) -> Option<Account>,
    ) -> bool {
        matches!(
            self.evaluate(unix, req, source, account_of).decision,
            Decision::Authenticated(_)
        )
    }

    pub fn purge(&mut self, unix: u64) {
        self.nonces.purge(unix);
        self.guard.lock().purge(unix);
    }
}

/// The bytes a nonce is bound to: the source address it was issued to.
fn bound_to(source: IpAddr) -> Vec<u8> {
    match source {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => a.octets().to_vec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::{parse_message, Framing, Limits};

    const RURI: &str = "sip:office.test";

    fn request(method: &str, ruri: &str, authorization: &str) -> Request {
        let text = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK1\r\n\
             From: <sip:100@office.test>;tag=a\r\nTo: <sip:100@office.test>\r\nCall-ID: c\r\n\
             CSeq: 1 {method}\r\n{authorization}Content-Length: 0\r\n\r\n"
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

    fn register(authorization: &str) -> Request {
        request("REGISTER", RURI, authorization)
    }

    /// An Authorization header for `nonce`, computed with `password`; `nc` None: RFC 2069.
    fn authorization(
        method: &str,
        uri: &str,
        nonce: &str,
        password: &str,
        nc: Option<u32>,
    ) -> String {
        let mut c = auth::Credentials {
            scheme: "Digest".into(),
            username: "100".into(),
            realm: "office.test".into(),
            nonce: nonce.into(),
            uri: uri.into(),
            response: String::new(),
            algorithm: Algorithm::Md5,
            cnonce: nc.map(|_| "c0".into()),
            opaque: None,
            qop: nc.map(|_| "auth".into()),
            nc,
        };
        c.response = auth::expected_response(&c, method, password);
        let qop = nc.map_or(String::new(), |nc| {
            format!(", cnonce=\"c0\", qop=auth, nc={nc:08x}")
        });
        format!(
            "Authorization: Digest username=\"100\", realm=\"office.test\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{}\", algorithm=MD5{qop}\r\n",
            c.response
        )
    }

    fn credentials(nonce: &str, password: &str, nc: u32) -> String {
        authorization("REGISTER", RURI, nonce, password, Some(nc))
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

    fn account(legacy: bool, allow: &[&str]) -> Account {
        Account {
            ha1_md5: auth::ha1(Algorithm::Md5, "100", "office.test", "secret100"),
            ha1_sha256: auth::ha1(Algorithm::Sha256, "100", "office.test", "secret100"),
            legacy_digest: legacy,
            allow: allow.iter().map(|n| n.parse().unwrap()).collect(),
        }
    }

    fn gate() -> DigestGate {
        DigestGate::new("office.test".into(), vec![Algorithm::Md5], [9; 32], 300)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Overload admission prefers requests answering our challenge: only credentials the gate
    /// would accept qualify, and asking changes nothing (no nonce count taken, no failure
    /// counted), so the real check still decides.
    #[test]
    fn only_credentials_the_gate_would_accept_answer_a_challenge_and_asking_records_nothing() {
        let mut gate = gate();
        let phone = ip("192.0.2.8");
        let acct = |u: &str| (u == "100").then(|| account(false, &[]));
        let invite = |auth: &str| request("INVITE", RURI, auth);
        let good = |nonce: &str, nc| authorization("INVITE", RURI, nonce, "secret100", Some(nc));
        assert!(!gate.answers_challenge(1000, &invite(""), phone, acct));
        let nonce = nonce_of(&gate.check(1000, &invite(""), phone, acct));
        // Wrong password, another source, a nonce of another secret, an unknown extension,
        // another Request-URI, no qop for an extension that needs it, an expired nonce.
        let wrong = authorization("INVITE", RURI, &nonce, "wrong", Some(1));
        assert!(!gate.answers_challenge(1000, &invite(&wrong), phone, acct));
        assert!(!gate.answers_challenge(1000, &invite(&good(&nonce, 1)), ip("192.0.2.9"), acct));
        let foreign = nonce_of(
            &DigestGate::new("office.test".into(), vec![Algorithm::Md5], [1; 32], 300).check(
                1000,
                &invite(""),
                phone,
                acct,
            ),
        );
        assert!(!gate.answers_challenge(1000, &invite(&good(&foreign, 1)), phone, acct));
        assert!(!gate.answers_challenge(1000, &invite(&good(&nonce, 1)), phone, |_| None));
        let elsewhere = request("INVITE", "sip:900@office.test", &good(&nonce, 1));
        assert!(!gate.answers_challenge(1000, &elsewhere, phone, acct));
        let legacy = authorization("INVITE", RURI, &nonce, "secret100", None);
        assert!(!gate.answers_challenge(1000, &invite(&legacy), phone, acct));
        assert!(!gate.answers_challenge(1400, &invite(&good(&nonce, 1)), phone, acct));
        // The right answer qualifies, as often as asked, and nothing was counted.
        assert!(gate.answers_challenge(1000, &invite(&good(&nonce, 1)), phone, acct));
        assert!(gate.answers_challenge(1000, &invite(&good(&nonce, 1)), phone, acct));
        assert!(gate.guard().lock().bans(1000).is_empty());
        assert_eq!(
            gate.check(1000, &invite(&good(&nonce, 1)), phone, acct),
            GateOutcome::Authenticated("100".into())
        );
        // Once used, the same credentials are a replay: they no longer qualify.
        assert!(!gate.answers_challenge(1000, &invite(&good(&nonce, 1)), phone, acct));
        // A banned source never qualifies, even with the right answer.
        for i in 0..5 {
            let r = gate.check(
                1001,
                &invite(&authorization("INVITE", RURI, &nonce, "bad", Some(10 + i))),
                phone,
                acct,
            );
            assert_eq!(r, GateOutcome::Forbidden(REFUSED));
        }
        assert!(!gate.guard().lock().bans(1001).is_empty());
        assert!(!gate.answers_challenge(1001, &invite(&good(&nonce, 20)), phone, acct));
    }

    /// `check` is `evaluate` and then `record`: over a run of requests of every kind, each
    /// answer is the one evaluated just before, and evaluating twice changes nothing.
    #[test]
    fn check_answers_as_evaluated() {
        let mut gate = gate();
        let phone = ip("192.0.2.8");
        let acct = |u: &str| (u == "100").then(|| account(false, &["192.0.2.0/24"]));
        let invite = |auth: &str| request("INVITE", RURI, auth);
        let nonce = nonce_of(&gate.check(1000, &invite(""), phone, acct));
        let good = |nc| authorization("INVITE", RURI, &nonce, "secret100", Some(nc));
        let cases: Vec<(u64, Request, IpAddr)> = vec![
            (1000, invite(""), phone),
            (1000, invite("Authorization: Digest username=\r\n"), phone),
            (1000, invite(&good(1)), phone),
            (1000, invite(&good(1)), phone),
            (
                1000,
                request("INVITE", "sip:900@office.test", &good(2)),
                phone,
            ),
            (1000, invite(&good(3).replace("\"100\"", "\"999\"")), phone),
            (
                1000,
                invite(&authorization("INVITE", RURI, &nonce, "secret100", None)),
                phone,
            ),
            (1000, invite(&good(4)), ip("198.51.100.1")),
            (1000, invite(&good(5)), ip("192.0.2.9")),
            (1400, invite(&good(6)), phone),
            (
                1000,
                invite(&authorization("INVITE", RURI, &nonce, "bad", Some(7))),
                phone,
            ),
        ];
        let (mut kinds, mut stale) = (std::collections::HashSet::new(), false);
        for (i, (unix, req, src)) in cases.iter().enumerate() {
            let first = gate.evaluate(*unix, req, *src, acct);
            assert_eq!(gate.evaluate(*unix, req, *src, acct), first, "case {i}");
            let outcome = gate.check(*unix, req, *src, acct);
            let as_decided = match (&first.decision, &outcome) {
                (Decision::Authenticated(a), GateOutcome::Authenticated(b)) => a == b,
                (Decision::Challenge { stale }, GateOutcome::Challenge(v)) => {
                    *stale == v[0].contains("stale=TRUE")
                }
                (Decision::Forbidden, GateOutcome::Forbidden(r)) => *r == REFUSED,
                (Decision::Malformed(a), GateOutcome::Malformed(b)) => a == b,
                _ => false,
            };
            assert!(
                as_decided,
                "case {i}: {:?} then {outcome:?}",
                first.decision
            );
            kinds.insert(std::mem::discriminant(&first.decision));
            stale |= first.decision == Decision::Challenge { stale: true };
        }
        // Every kind of decision was met, a stale challenge too.
        assert_eq!(kinds.len(), 4);
        assert!(stale);
    }

    #[test]
    fn a_guessing_source_is_banned_and_answers_look_alike() {
        let mut gate = gate();
        let attacker = ip("192.0.2.66");
        let phone = ip("192.0.2.8");
        let acct = |u: &str| (u == "100").then(|| account(false, &[]));
        let nonce = nonce_of(&gate.check(1000, &register(""), attacker, acct));
        for i in 0..5 {
            let r = gate.check(
                1000,
                &register(&credentials(&nonce, "wrong", 1 + i)),
                attacker,
                acct,
            );
            assert_eq!(r, GateOutcome::Forbidden(REFUSED), "attempt {i}");
        }
        // Banned: even the right password gets the same answer, without a challenge.
        assert_eq!(
            gate.check(1001, &register(""), attacker, acct),
            GateOutcome::Forbidden(REFUSED)
        );
        let r = gate.check(
            1001,
            &register(&credentials(&nonce, "secret100", 50)),
            attacker,
            acct,
        );
        assert_eq!(r, GateOutcome::Forbidden(REFUSED));
        assert_eq!(gate.guard().lock().bans(1001).len(), 1);
        // The phone elsewhere is unaffected.
        let n = nonce_of(&gate.check(1001, &register(""), phone, acct));
        let r = gate.check(
            1001,
            &register(&credentials(&n, "secret100", 1)),
            phone,
            acct,
        );
        assert_eq!(r, GateOutcome::Authenticated("100".into()));
        // After the ban the source may try again.
        let n = nonce_of(&gate.check(1400, &register(""), attacker, acct));
        let r = gate.check(
            1400,
            &register(&credentials(&n, "secret100", 1)),
            attacker,
            acct,
        );
        assert_eq!(r, GateOutcome::Authenticated("100".into()));
    }

    #[test]
    fn unknown_and_known_extensions_are_refused_alike() {
        let mut gate = gate();
        let src = ip("192.0.2.66");
        let acct = |u: &str| (u == "100").then(|| account(false, &[]));
        let nonce = nonce_of(&gate.check(1000, &register(""), src, acct));
        let known = gate.check(1000, &register(&credentials(&nonce, "wrong", 1)), src, acct);
        let unknown = gate.check(
            1000,
            &register(&credentials(&nonce, "wrong", 2).replace("\"100\"", "\"999\"")),
            src,
            acct,
        );
        assert_eq!(known, unknown);
    }

    #[test]
    fn replays_to_another_uri_or_address_are_refused() {
        let mut gate = gate();
        let phone = ip("192.0.2.8");
        let acct = |u: &str| (u == "100").then(|| account(false, &[]));
        let ruri = "sip:030123456@office.test";
        let nonce = nonce_of(&gate.check(1000, &request("INVITE", ruri, ""), phone, acct));
        let header = authorization("INVITE", ruri, &nonce, "secret100", Some(1));
        let ok = gate.check(1000, &request("INVITE", ruri, &header), phone, acct);
        assert_eq!(ok, GateOutcome::Authenticated("100".into()));
        // The same Authorization on an INVITE to a premium number: 400.
        let replay = gate.check(
            1000,
            &request("INVITE", "sip:09001234567@office.test", &header),
            phone,
            acct,
        );
        assert!(matches!(replay, GateOutcome::Malformed(_)), "{replay:?}");
        // The same nc again: a fresh challenge, not access.
        let again = gate.check(1000, &request("INVITE", ruri, &header), phone, acct);
        assert!(matches!(again, GateOutcome::Challenge(_)), "{again:?}");
        // A fresh nc on that nonce, sent from another address: the nonce is not theirs.
        let header = authorization("INVITE", ruri, &nonce, "secret100", Some(2));
        let elsewhere = gate.check(
            1000,
            &request("INVITE", ruri, &header),
            ip("192.0.2.99"),
            acct,
        );
        assert!(
            matches!(elsewhere, GateOutcome::Challenge(_)),
            "{elsewhere:?}"
        );
        // Equivalent spellings of the Request-URI are fine.
        let header = authorization(
            "INVITE",
            "sip:030123456@OFFICE.test",
            &nonce,
            "secret100",
            Some(3),
        );
        let ok = gate.check(1000, &request("INVITE", ruri, &header), phone, acct);
        assert_eq!(ok, GateOutcome::Authenticated("100".into()));
    }

    #[test]
    fn rfc2069_only_for_legacy_extensions_and_once_per_nonce() {
        let mut gate = gate();
        let phone = ip("192.0.2.8");
        let strict = |u: &str| (u == "100").then(|| account(false, &[]));
        let legacy = |u: &str| (u == "100").then(|| account(true, &[]));
        let nonce = nonce_of(&gate.check(1000, &register(""), phone, strict));
        let no_qop = authorization("REGISTER", RURI, &nonce, "secret100", None);
        assert_eq!(
            gate.check(1000, &register(&no_qop), phone, strict),
            GateOutcome::Forbidden(REFUSED)
        );
        assert_eq!(
            gate.check(1000, &register(&no_qop), phone, legacy),
            GateOutcome::Authenticated("100".into())
        );
        assert!(matches!(
            gate.check(1000, &register(&no_qop), phone, legacy),
            GateOutcome::Challenge(_)
        ));
    }

    #[test]
    fn the_allow_list_refuses_other_networks() {
        let mut gate = gate();
        let acct = |u: &str| (u == "100").then(|| account(false, &["192.168.1.0/24"]));
        for (src, expect_ok) in [("192.168.1.20", true), ("192.0.2.8", false)] {
            let src = ip(src);
            let nonce = nonce_of(&gate.check(1000, &register(""), src, acct));
            let r = gate.check(
                1000,
                &register(&credentials(&nonce, "secret100", 1)),
                src,
                acct,
            );
            assert_eq!(
                r == GateOutcome::Authenticated("100".into()),
                expect_ok,
                "{src}: {r:?}"
            );
        }
    }

    #[test]
    fn stale_only_for_a_correct_digest() {
        let mut gate = gate();
        let phone = ip("192.0.2.7");
        let acct = |u: &str| (u == "100").then(|| account(false, &[]));
        let nonce = nonce_of(&gate.check(1000, &register(""), phone, acct));
        let late = register(&credentials(&nonce, "secret100", 2));
        let GateOutcome::Challenge(v) = gate.check(1400, &late, phone, acct) else {
            panic!("expected challenge")
        };
        assert!(v[0].contains("stale=TRUE"), "{v:?}");
        let wrong = register(&credentials(&nonce, "nope", 3));
        assert_eq!(
            gate.check(1400, &wrong, phone, acct),
            GateOutcome::Forbidden(REFUSED)
        );
    }
}
