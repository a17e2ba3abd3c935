//! Outbound registration with a SIP trunk (RFC 3261 §10): one REGISTER dialog per trunk,
//! answered digest challenges (MD5 or SHA-256, through [`crate::sip::auth`]), a refresh at
//! three quarters of the interval the registrar granted, an exponential back-off (capped) after
//! failures, and a full stop on 403 until the configuration is reloaded.
//!
//! Sans-IO: the owner feeds time, responses and transaction time-outs, sends the requests it
//! gets back through the transaction layer, and asks [`Registration::poll_timeout`] when to
//! call again. The Contact carries a random `line` parameter: a provider calls that exact URI,
//! which is how its calls are recognised as the trunk's (never by From).

use std::time::{Duration, Instant};

use crate::sip::header::{CSeq, Contact, Header, NameAddr, Via};
use crate::sip::message::{Request, Response};
use crate::sip::method::Method;
use crate::sip::peer::Peer;
use crate::sip::uri::{Host, Params, SipUri, Uri};

/// The longest wait between attempts after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What one trunk registration needs.
#[derive(Debug, Clone)]
pub struct RegConfig {
    pub trunk: String,
    /// The Request-URI: `sip:registrar-host[:port]`.
    pub registrar: SipUri,
    /// The address of record (From and To): `sip:username@domain`.
    pub aor: SipUri,
    /// The Contact we register (with its `line` token).
    pub contact: SipUri,
    /// Digest user name and password.
    pub credentials: Option<(String, String)>,
    /// Only challenges of this realm are answered.
    pub realm: Option<String>,
    /// Seconds asked for.
    pub expires: u32,
    /// First back-off after a failure.
    pub retry: Duration,
    /// The flow REGISTERs go on (to the registrar or the outbound proxy).
    pub peer: Peer,
    /// Our sent-by host for the Via.
    pub via_host: Host,
    pub user_agent: String,
}

/// Where a registration stands, for the live page, the API and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegState {
    /// Not tried yet, or waiting for the next attempt after a failure.
    Unregistered,
    /// A REGISTER is in flight (first or refresh).
    Registering,
    /// The registrar accepted us until `until`.
    Registered { until: Instant },
    /// The last attempt failed with `status`; the next one is at `retry_at`.
    Failed { status: u16, retry_at: Instant },
    /// The registrar answered 403: no more attempts until a reload.
    Forbidden,
}

impl RegState {
    /// `registered`, `registering`, `failed`, `forbidden`, `unregistered`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RegState::Unregistered => "unregistered",
            RegState::Registering => "registering",
            RegState::Registered { .. } => "registered",
            RegState::Failed { .. } => "failed",
            RegState::Forbidden => "forbidden",
        }
    }
}

/// One trunk's registration state machine.
#[derive(Debug)]
pub struct Registration {
    cfg: RegConfig,
    call_id: String,
    from_tag: String,
    cseq: u32,
    state: RegState,
    /// A REGISTER is waiting for its final response.
    in_flight: bool,
    /// The current attempt already answered a challenge (a second one is a failure).
    answered_challenge: bool,
    /// The current attempt already answered a `stale=true` challenge.
    stale_answered: bool,
    /// The next REGISTER is due then (`None`: nothing scheduled).
    next_at: Option<Instant>,
    failures: u32,
    /// Whether a refresh (not a first registration) is in flight: a failure then keeps the
    /// registration valid until it expires.
    registered_until: Option<Instant>,
    /// The trunk is gone (removed or disabled): the next REGISTER asks `Expires: 0`, and
    /// nothing follows it.
    leaving: bool,
}

impl Registration {
    /// A registration that sends its first REGISTER at `now`. `call_id` and `from_tag` are
    /// fresh random tokens.
    pub fn new(cfg: RegConfig, now: Instant, call_id: String, from_tag: String) -> Registration {
        Registration {
            cfg,
            call_id,
            from_tag,
            cseq: 0,
            state: RegState::Unregistered,
            in_flight: false,
            answered_challenge: false,
            stale_answered: false,
            next_at: Some(now),
            failures: 0,
            registered_until: None,
            leaving: false,
        }
    }

    /// Ends the registration (the trunk was removed or disabled): a REGISTER with
    /// `Expires: 0` for our Contact is due at `now`, and nothing is sent after its answer.
    /// `false` (nothing to do) when the registrar holds no binding of ours.
    pub fn leave(&mut self, now: Instant) -> bool {
        if !self.is_registered(now) {
            return false;
        }
        self.leaving = true;
        self.cfg.expires = 0;
        self.in_flight = false;
        self.next_at = Some(now);
        true
    }

    /// Whether a leaving registration is done (its `Expires: 0` answered or given up).
    pub fn is_done(&self) -> bool {
        self.leaving && !self.in_flight && self.next_at.is_none()
    }

    /// A registration with new settings that goes on in the dialog of `old` (same Call-ID and
    /// From tag, a higher CSeq: RFC 3261 §10.2 asks one Call-ID per registrar), due at `now`.
    pub fn continuing(cfg: RegConfig, now: Instant, old: &Registration) -> Registration {
        Registration {
            cseq: old.cseq,
            ..Registration::new(cfg, now, old.call_id.clone(), old.from_tag.clone())
        }
    }

    pub fn config(&self) -> &RegConfig {
        &self.cfg
    }

    pub fn state(&self) -> &RegState {
        &self.state
    }

    /// Whether the registrar holds a valid binding for us now.
    pub fn is_registered(&self, now: Instant) -> bool {
        self.registered_until.is_some_and(|u| now < u)
    }

    /// When [`Registration::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight {
            None
        } else {
            self.next_at
        }
    }

    /// The REGISTER to send now, if one is due. `branch` is a fresh Via branch.
    pub fn handle_timeout(&mut self, now: Instant, branch: String) -> Option<Request> {
        if self.in_flight || self.next_at.is_none_or(|t| t > now) {
            return None;
        }
        if self.registered_until.is_some_and(|u| now >= u) {
            self.registered_until = None;
        }
        self.next_at = None;
        self.in_flight = true;
        self.answered_challenge = false;
        self.stale_answered = false;
        self.state = RegState::Registering;
        Some(self.request(branch, None))
    }

    /// The final (or provisional) response to our REGISTER. A challenge yields the REGISTER
    /// again with credentials; `cnonce` is a fresh client nonce for it.
    pub fn handle_response(
        &mut self,
        now: Instant,
        response: &Response,
        branch: String,
        cnonce: &str,
    ) -> Option<Request> {
        if !self.in_flight || response.status < 200 {
            return None;
        }
        match response.status {
            200..=299 if self.leaving => {
                self.in_flight = false;
                self.next_at = None;
                self.registered_until = None;
                self.state = RegState::Unregistered;
                tracing::info!(trunk = %self.cfg.trunk, "unregistered from the trunk");
                None
            }
            200..=299 => {
                let granted = self.granted(response).max(1);
                let until = now + Duration::from_secs(u64::from(granted));
                // Refresh at three quarters of the interval: early enough for a lost
                // REGISTER to be retransmitted and answered before the binding lapses.
                let refresh =
                    Duration::from_millis(u64::from(granted) * 750).max(Duration::from_millis(500));
                self.in_flight = false;
                self.failures = 0;
                self.registered_until = Some(until);
                self.state = RegState::Registered { until };
                self.next_at = Some(now + refresh);
                tracing::info!(trunk = %self.cfg.trunk, granted, "registered with the trunk");
                None
            }
            401 | 407 => {
                if let Some(r) = self.answer_challenge(response, branch, cnonce) {
                    return Some(r);
                }
                self.failed(now, response.status);
                None
            }
            423 => {
                let min = response.headers.0.iter().find_map(|h| match h {
                    Header::MinExpires(m) => Some(*m),
                    _ => None,
                });
                match min {
                    Some(m) if m > self.cfg.expires && !self.answered_challenge => {
                        tracing::info!(trunk = %self.cfg.trunk, min = m, "registrar asks for a longer interval");
                        self.cfg.expires = m;
                        self.answered_challenge = false;
                        Some(self.request(branch, None))
                    }
                    _ => {
                        self.failed(now, 423);
                        None
                    }
                }
            }
            403 => {
                self.in_flight = false;
                self.next_at = None;
                self.registered_until = None;
                self.state = RegState::Forbidden;
                tracing::error!(
                    trunk = %self.cfg.trunk,
                    reason = %response.reason,
                    "the trunk refused our registration (403): not retrying until the configuration is reloaded"
                );
                None
            }
            status => {
                self.failed(now, status);
                None
            }
        }
    }

    /// The REGISTER transaction ended without a final response.
    pub fn transaction_timeout(&mut self, now: Instant) {
        if self.in_flight {
            self.failed(now, 408);
        }
    }

    fn failed(&mut self, now: Instant, status: u16) {
        self.in_flight = false;
        if self.leaving {
            self.next_at = None;
            self.state = RegState::Unregistered;
            tracing::warn!(trunk = %self.cfg.trunk, status, "unregistering from the trunk failed: its binding lapses on its own");
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let factor = 1u32 << self.failures.saturating_sub(1).min(16);
        let wait = self.cfg.retry.saturating_mul(factor).min(MAX_BACKOFF);
        let retry_at = now + wait;
        self.next_at = Some(retry_at);
        self.state = RegState::Failed { status, retry_at };
        tracing::warn!(
            trunk = %self.cfg.trunk,
            status,
            failures = self.failures,
            retry_in_secs = wait.as_secs_f64(),
            "trunk registration failed"
        );
    }

    /// The interval granted: our Contact's `expires` parameter, else the Expires header, else
    /// what we asked for.
    fn granted(&self, response: &Response) -> u32 {
        let line = self.cfg.contact.params.value("line");
        let ours = response.headers.contacts().find_map(|c| {
            let a = c.addr()?;
            let u = a.uri.as_sip()?;
            let same = match line {
                Some(l) => u.params.value("line") == Some(l),
                None => u.user == self.cfg.contact.user,
            };
            if !same {
                return None;
            }
            a.params.value("expires")?.trim().parse::<u32>().ok()
        });
        ours.or_else(|| response.headers.expires())
            .unwrap_or(self.cfg.expires)
    }

    fn answer_challenge(
        &mut self,
        response: &Response,
        branch: String,
        cnonce: &str,
    ) -> Option<Request> {
        let (user, password) = self.cfg.credentials.clone()?;
        let (header, name) = if response.status == 407 {
            ("Proxy-Authenticate", "Proxy-Authorization")
        } else {
            ("WWW-Authenticate", "Authorization")
        };
        let challenge = crate::sip::auth::select_challenge(response.headers.get_all(header))?;
        // A second challenge is a refusal of our credentials, unless it only says that the
        // nonce went stale (RFC 2617 §3.2.1): that is answered once more.
        if self.answered_challenge && (!challenge.stale || self.stale_answered) {
            return None;
        }
        if self.answered_challenge {
            self.stale_answered = true;
        }
        if self
            .cfg
            .realm
            .as_ref()
            .is_some_and(|r| *r != challenge.realm)
        {
            tracing::warn!(trunk = %self.cfg.trunk, realm = %challenge.realm, "challenge of another realm not answered");
            return None;
        }
        let uri = Uri::Sip(self.cfg.registrar.clone()).to_string();
        let value = crate::sip::auth::authorize(
            &challenge,
            &user,
            &password,
            Method::Register.as_str(),
            &uri,
            cnonce,
            1,
        );
        self.answered_challenge = true;
        Some(self.request(branch, Some((name, value))))
    }

    fn request(&mut self, branch: String, auth: Option<(&'static str, String)>) -> Request {
        self.cseq += 1;
        let mut req = Request::new(Method::Register, Uri::Sip(self.cfg.registrar.clone()));
        let h = &mut req.headers;
        let mut params = Params::new();
        params.set("branch", Some(&branch));
        params.set("rport", None);
        h.push(Header::Via(Via {
            transport: self.cfg.peer.proto.via_token().into(),
            host: self.cfg.via_host.clone(),
            port: Some(self.cfg.peer.local.port()),
            params,
        }));
        h.push(Header::MaxForwards(70));
        let mut from = NameAddr::new(Uri::Sip(self.cfg.aor.clone()));
        from.set_tag(&self.from_tag);
        h.push(Header::From(from));
        h.push(Header::To(NameAddr::new(Uri::Sip(self.cfg.aor.clone()))));
        h.push(Header::CallId(self.call_id.clone()));
        h.push(Header::CSeq(CSeq {
            seq: self.cseq,
            method: Method::Register,
        }));
        h.push(Header::Contact(Contact::Addr(NameAddr::new(Uri::Sip(
            self.cfg.contact.clone(),
        )))));
        h.push(Header::Expires(self.cfg.expires));
        if let Some((name, value)) = auth {
            h.push(Header::Other(name.into(), value));
        }
        h.push(Header::Other(
            "User-Agent".into(),
            self.cfg.user_agent.clone(),
        ));
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::peer::Proto;

    fn cfg() -> RegConfig {
        let sip = |s: &str| match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            _ => panic!("{s}"),
        };
        RegConfig {
            trunk: "carrier".into(),
            registrar: sip("sip:127.0.0.5:5060"),
            aor: sip("sip:office1@127.0.0.5"),
            contact: sip("sip:office1@127.0.0.1:5060;line=abc123"),
            credentials: Some(("office1".into(), "s3cret".into())),
            realm: None,
            expires: 60,
            retry: Duration::from_secs(2),
            peer: Peer {
                proto: Proto::Udp,
                remote: "127.0.0.5:5060".parse().unwrap(),
                local: "127.0.0.1:5060".parse().unwrap(),
            },
            via_host: Host::from_ip("127.0.0.1".parse().unwrap()),
            user_agent: "pasarela".into(),
        }
    }

    fn reply(req: &Request, status: u16, extra: Vec<Header>) -> Response {
        let mut r = Response::to_request(req, status, "x", Some("t"));
        r.headers.0.extend(extra);
        r
    }

    fn challenge(alg: &str) -> Header {
        Header::Other(
            "WWW-Authenticate".into(),
            format!("Digest realm=\"prov\", nonce=\"n1\", qop=\"auth\", algorithm={alg}"),
        )
    }

    #[test]
    fn challenge_then_refresh_at_three_quarters() {
        let t0 = Instant::now();
        let mut r = Registration::new(cfg(), t0, "cid".into(), "ft".into());
        assert_eq!(r.poll_timeout(), Some(t0));
        let first = r.handle_timeout(t0, "z9hG4bK1".into()).expect("REGISTER");
        assert_eq!(first.method, Method::Register);
        assert!(first.headers.get("Authorization").is_none());
        assert_eq!(r.poll_timeout(), None);
        let second = r
            .handle_response(
                t0,
                &reply(&first, 401, vec![challenge("SHA-256")]),
                "z9hG4bK2".into(),
                "cn",
            )
            .expect("answer to the challenge");
        let auth = second.headers.get("Authorization").expect("credentials");
        let creds = crate::sip::auth::parse_credentials(auth).unwrap();
        assert_eq!(creds.algorithm, crate::sip::auth::Algorithm::Sha256);
        assert!(crate::sip::auth::verify(&creds, "REGISTER", "s3cret"));
        assert_eq!(second.headers.cseq().unwrap().seq, 2);
        assert_eq!(second.headers.call_id(), Some("cid"));
        // A second challenge for the same attempt is a failure, not a loop.
        let again = r.handle_response(
            t0,
            &reply(&second, 401, vec![challenge("MD5")]),
            "b".into(),
            "c",
        );
        assert!(again.is_none());
        assert!(matches!(r.state(), RegState::Failed { status: 401, .. }));
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(2)));
        // Next attempt succeeds with the granted interval from the Contact.
        let t1 = t0 + Duration::from_secs(2);
        let third = r.handle_timeout(t1, "z9hG4bK3".into()).unwrap();
        let mut ok_contact = NameAddr::new(Uri::Sip(cfg().contact));
        ok_contact.params.set("expires", Some("40"));
        r.handle_response(
            t1,
            &reply(
                &third,
                200,
                vec![Header::Contact(Contact::Addr(ok_contact))],
            ),
            "x".into(),
            "c",
        );
        assert!(r.is_registered(t1));
        assert_eq!(r.poll_timeout(), Some(t1 + Duration::from_secs(30)));
        assert!(!r.is_registered(t1 + Duration::from_secs(40)));
        // The refresh goes out at 30 s, in the same Call-ID with a higher CSeq.
        let refresh = r
            .handle_timeout(t1 + Duration::from_secs(30), "b4".into())
            .unwrap();
        assert_eq!(refresh.headers.cseq().unwrap().seq, 4);
        assert!(
            r.is_registered(t1 + Duration::from_secs(30)),
            "still registered while refreshing"
        );
    }

    #[test]
    fn a_stale_nonce_is_answered_once_more() {
        let t0 = Instant::now();
        let mut r = Registration::new(cfg(), t0, "c".into(), "f".into());
        let req = r.handle_timeout(t0, "b1".into()).unwrap();
        let with = r
            .handle_response(
                t0,
                &reply(&req, 401, vec![challenge("MD5")]),
                "b2".into(),
                "c",
            )
            .expect("credentials");
        let stale = Header::Other(
            "WWW-Authenticate".into(),
            "Digest realm=\"prov\", nonce=\"n2\", stale=true, algorithm=MD5".into(),
        );
        let again = r
            .handle_response(
                t0,
                &reply(&with, 401, vec![stale.clone()]),
                "b3".into(),
                "c",
            )
            .expect("the stale nonce is answered");
        assert!(again
            .headers
            .get("Authorization")
            .unwrap()
            .contains("\"n2\""));
        assert!(r
            .handle_response(t0, &reply(&again, 401, vec![stale]), "b4".into(), "c")
            .is_none());
        assert!(matches!(r.state(), RegState::Failed { status: 401, .. }));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let t0 = Instant::now();
        let mut r = Registration::new(cfg(), t0, "c".into(), "f".into());
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..12 {
            let req = r.handle_timeout(now, "b".into()).expect("due");
            r.handle_response(now, &reply(&req, 503, vec![]), "b".into(), "c");
            let next = r.poll_timeout().unwrap();
            waits.push(next.duration_since(now).as_secs());
            now = next;
        }
        assert_eq!(&waits[..5], &[2, 4, 8, 16, 32]);
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF.as_secs());
        // Timeouts count as failures too.
        let req = r.handle_timeout(now, "b".into());
        assert!(req.is_some());
        r.transaction_timeout(now);
        assert!(matches!(r.state(), RegState::Failed { status: 408, .. }));
    }

    #[test]
    fn forbidden_stops() {
        let t0 = Instant::now();
        let mut r = Registration::new(cfg(), t0, "c".into(), "f".into());
        let req = r.handle_timeout(t0, "b".into()).unwrap();
        r.handle_response(t0, &reply(&req, 403, vec![]), "b".into(), "c");
        assert_eq!(r.state(), &RegState::Forbidden);
        assert_eq!(r.poll_timeout(), None);
        assert!(r
            .handle_timeout(t0 + MAX_BACKOFF * 10, "b".into())
            .is_none());
    }

    #[test]
    fn other_realm_not_answered() {
        let mut c = cfg();
        c.realm = Some("mine".into());
        let t0 = Instant::now();
        let mut r = Registration::new(c, t0, "c".into(), "f".into());
        let req = r.handle_timeout(t0, "b".into()).unwrap();
        assert!(r
            .handle_response(
                t0,
                &reply(&req, 401, vec![challenge("MD5")]),
                "b".into(),
                "c"
            )
            .is_none());
    }
}
