//! The trust model for INVITEs that do not come from the office's phones (issue 14).
//!
//! - **Trunks** are recognised by the source address of the request (the `sources` of a
//!   `[[trunk]]`: IP addresses, CIDR prefixes, host names resolved by the shell at start and on
//!   reload; without `sources`, the host and port of the trunk's `uri`), never by From or any
//!   other header a sender chooses. Their calls to our DIDs ring the extension; anything else
//!   gets 404 and never leaves again.
//! - **Peers and the internet** (`[inbound] public = true`): INVITEs without credentials to a
//!   number we publish (an extension's DID, in any form: `+4930123457`, `4930123457` as DUNDi
//!   answers carry it, national, international) reach that extension and nothing else, with
//!   per-source limits on rate and concurrent calls ([`Limiter`]). Anything else is challenged
//!   like a phone, whatever the number: the answer does not tell which extensions exist.
//!
//! Sans-IO: addresses, requests and time come in as arguments.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::routing::numbering::{Dialled, NumberingPlan, E164};
use crate::routing::trunk::NumberFormat;
use crate::sip::message::Request;
use crate::sip::transaction::ServerKey;

/// `[inbound]`: who may call the office without a password (see [`InboundPolicy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundConfig {
    /// Whether peers and the internet may call the numbers we publish (the DIDs) without
    /// authentication (`public`, default false). Such calls reach only local destinations.
    pub public: bool,
    /// Unauthenticated calls one source address may start per minute (`peer_calls_per_minute`,
    /// default 20).
    pub peer_calls_per_minute: u32,
    /// Unauthenticated calls one source address may have in progress (`peer_max_calls`,
    /// default 4).
    pub peer_max_calls: u32,
    /// `[[inbound.route]]`: numbers we publish besides the extensions' DIDs, and where their
    /// calls ring: (E.164 number, an extension number or a `[[ring_group]]` name).
    pub routes: Vec<(String, String)>,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            public: false,
            peer_calls_per_minute: 20,
            peer_max_calls: 4,
            routes: Vec::new(),
        }
    }
}

/// A `sources` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("`{0}`: the prefix length must be at most {1}")]
    PrefixLength(String, u8),
    #[error("`{0}` is not an IP address, a CIDR prefix (192.0.2.0/28) or a host name")]
    Invalid(String),
}

/// An address block, optionally limited to one source port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
    port: Option<u16>,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

impl Net {
    /// Exactly one address (any port).
    pub fn ip(addr: IpAddr) -> Net {
        let addr = canonical(addr);
        Net {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
            port: None,
        }
    }

    /// Exactly one address and port.
    pub fn socket(addr: SocketAddr) -> Net {
        Net {
            port: Some(addr.port()),
            ..Net::ip(addr.ip())
        }
    }

    /// Whether a request from `src` comes from this block.
    pub fn contains(&self, src: SocketAddr) -> bool {
        if self.port.is_some_and(|p| p != src.port()) {
            return false;
        }
        match (self.addr, canonical(src.ip())) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let shift = 32 - u32::from(self.prefix.min(32));
                let mask = u32::MAX.checked_shl(shift).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let shift = 128 - u32::from(self.prefix.min(128));
                let mask = u128::MAX.checked_shl(shift).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One entry of a trunk's `sources` as written: an address block, or a host name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Net(Net),
    Host(String),
}

impl SourceSpec {
    pub fn parse(text: &str) -> Result<SourceSpec, SourceError> {
        let s = text.trim();
        if let Some((ip, len)) = s.split_once('/') {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| SourceError::Invalid(text.to_owned()))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = len
                .parse()
                .map_err(|_| SourceError::Invalid(text.to_owned()))?;
            if prefix > max {
                return Err(SourceError::PrefixLength(text.to_owned(), max));
            }
            return Ok(SourceSpec::Net(Net {
                addr: canonical(ip),
                prefix,
                port: None,
            }));
        }
        if let Ok(ip) = s.trim_start_matches('[').trim_end_matches(']').parse() {
            return Ok(SourceSpec::Net(Net::ip(ip)));
        }
        let host_like = !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if host_like {
            Ok(SourceSpec::Host(s.to_ascii_lowercase()))
        } else {
            Err(SourceError::Invalid(text.to_owned()))
        }
    }
}

/// A trunk as the trust model sees it: where its calls come from and how it writes numbers.
#[derive(Debug, Clone)]
pub struct TrunkSource {
    pub name: String,
    pub nets: Vec<Net>,
    pub number_format: NumberFormat,
}

/// Where an INVITE that carries no password came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// One of our trunks.
    Trunk {
        name: String,
        number_format: NumberFormat,
    },
    /// A DUNDi peer (by its address).
    Peer { eid: String, ip: IpAddr },
    /// Anybody else.
    Internet { ip: IpAddr },
}

impl Origin {
    /// Where the call came from, for records and logs: `trunk carrier`, `DUNDi peer
    /// 02:00:00:00:00:01`, `internet 192.0.2.7`.
    pub fn label(&self) -> String {
        match self {
            Origin::Trunk { name, .. } => format!("trunk {name}"),
            Origin::Peer { eid, .. } => format!("DUNDi peer {eid}"),
            Origin::Internet { ip } => format!("internet {ip}"),
        }
    }

    /// Whether the per-source limits apply (they do not to trunks).
    pub fn limited(&self) -> Option<IpAddr> {
        match self {
            Origin::Trunk { .. } => None,
            Origin::Peer { ip, .. } | Origin::Internet { ip } => Some(*ip),
        }
    }
}

/// Who may call the office without a password, and how their numbers are read.
#[derive(Debug, Clone)]
pub struct InboundPolicy {
    pub trunks: Vec<TrunkSource>,
    /// DUNDi peers' addresses and EIDs, to name where a public call came from.
    pub peers: Vec<(IpAddr, String)>,
    /// `[inbound] public`.
    pub public: bool,
    pub calls_per_minute: u32,
    pub max_calls: u32,
    /// The office's numbering plan (national numbers from a trunk, callers in E.164).
    pub plan: Option<NumberingPlan>,
    /// `[[inbound.route]]`: published numbers besides the DIDs.
    pub routes: Vec<InboundRoute>,
    /// The `[[ring_group]]`s by name (`number` empty), for modem lines whose `incoming`
    /// names one.
    pub groups: Vec<(String, InboundRoute)>,
}

/// A number we publish and the extensions its calls ring (all at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundRoute {
    /// E.164 with `+`.
    pub number: String,
    /// `extension 101` or `group sales`, for logs and records.
    pub label: String,
    pub members: Vec<String>,
    /// `Some(t)`: the members ring one after the other, each for `t` (a ring group with
    /// `strategy = "order"`); `None`: all at once.
    pub member_timeout: Option<Duration>,
}

impl Default for InboundPolicy {
    fn default() -> Self {
        let d = InboundConfig::default();
        InboundPolicy {
            trunks: Vec::new(),
            peers: Vec::new(),
            public: d.public,
            calls_per_minute: d.peer_calls_per_minute,
            max_calls: d.peer_max_calls,
            plan: None,
            routes: Vec::new(),
            groups: Vec::new(),
        }
    }
}

impl InboundPolicy {
    /// The trunk whose sources contain `src`.
    pub fn trunk(&self, src: SocketAddr) -> Option<Origin> {
        self.trunk_source(src).map(|t| Origin::Trunk {
            name: t.name.clone(),
            number_format: t.number_format,
        })
    }

    /// Whether the configuration names `src` as a trunk's source or, while the office takes
    /// public calls, a DUNDi peer's address: the sources whose INVITEs may come in without
    /// a challenge because of who sends them (see `SipCore`'s `unchallenged`). Only the
    /// address counts, never what the request says of itself.
    pub fn trusts(&self, src: SocketAddr) -> bool {
        self.trunk_source(src).is_some() || (self.public && self.peer_eid(src).is_some())
    }

    /// The trunk whose sources contain `src`, as configured.
    fn trunk_source(&self, src: SocketAddr) -> Option<&TrunkSource> {
        self.trunks
            .iter()
            .find(|t| t.nets.iter().any(|n| n.contains(src)))
    }

    /// The EID of the DUNDi peer at `src`'s address.
    fn peer_eid(&self, src: SocketAddr) -> Option<&str> {
        let ip = canonical(src.ip());
        self.peers
            .iter()
            .find(|(p, _)| canonical(*p) == ip)
            .map(|(_, eid)| eid.as_str())
    }

    /// Where an unauthenticated INVITE from `src` comes from when the office takes public
    /// calls (`None`: it does not).
    pub fn public_origin(&self, src: SocketAddr) -> Option<Origin> {
        if !self.public {
            return None;
        }
        let ip = canonical(src.ip());
        Some(match self.peer_eid(src) {
            Some(eid) => Origin::Peer {
                eid: eid.to_owned(),
                ip,
            },
            None => Origin::Internet { ip },
        })
    }

    /// The E.164 numbers `dialled` may stand for, most likely first: as the numbering plan
    /// reads it (`+4930…`, `030…`, `004930…`), and as E.164 digits without `+` (`4930…`, the
    /// form DUNDi answers carry and trunks with `number_format = "e164"` may send).
    pub fn number_forms(&self, dialled: &str) -> Vec<E164> {
        let user = dialled.split(';').next().unwrap_or_default().trim();
        let mut out = Vec::new();
        if let Some(plan) = &self.plan {
            if let Ok(Dialled::E164(n)) = plan.classify(user, |_| false) {
                out.push(n);
            }
        } else if let Ok(n) = user.parse::<E164>() {
            out.push(n);
        }
        if !user.is_empty() && user.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = E164::from_digits(user) {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        out
    }

    /// The inbound route of the first of `forms` that has one.
    pub fn route_for(&self, forms: &[E164]) -> Option<&InboundRoute> {
        forms
            .iter()
            .find_map(|n| self.routes.iter().find(|r| r.number == n.as_str()))
    }

    /// The caller as shown to the office: its number in E.164 when the From user can be read
    /// as one (as it is, or for a trunk in the trunk's format), else as sent.
    pub fn caller_number(&self, origin: &Origin, from_user: &str) -> String {
        let forms = self.number_forms(from_user);
        let e164_digits = matches!(
            origin,
            Origin::Trunk {
                number_format: NumberFormat::E164,
                ..
            }
        );
        // A trunk that sends E.164 without '+' means the digits; elsewhere the plan's reading
        // comes first.
        let pick = if e164_digits && !from_user.starts_with('+') {
            forms.last()
        } else {
            forms.first()
        };
        pick.map_or_else(|| from_user.to_owned(), |n| n.as_str().to_owned())
    }
}

/// Why a public call was refused by the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Rate,
    Concurrent,
}

/// Per-source limits on unauthenticated calls: starts per minute and calls in progress.
#[derive(Debug, Default)]
pub struct Limiter {
    starts: HashMap<IpAddr, VecDeque<Instant>>,
    active: HashMap<IpAddr, Vec<ServerKey>>,
}

const WINDOW: Duration = Duration::from_secs(60);

impl Limiter {
    /// Whether `ip` may start another call now; `live` says whether a call (by its INVITE's
    /// server transaction) is still in progress.
    pub fn admit(
        &mut self,
        now: Instant,
        ip: IpAddr,
        policy: &InboundPolicy,
        live: impl Fn(ServerKey) -> bool,
    ) -> Result<(), Limit> {
        if let Some(keys) = self.active.get_mut(&ip) {
            keys.retain(|k| live(*k));
            if keys.len() >= policy.max_calls as usize {
                return Err(Limit::Concurrent);
            }
        }
        let starts = self.starts.entry(ip).or_default();
        while starts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            starts.pop_front();
        }
        if starts.len() >= policy.calls_per_minute as usize {
            return Err(Limit::Rate);
        }
        starts.push_back(now);
        Ok(())
    }

    /// A call from `ip` started on server transaction `key`.
    pub fn started(&mut self, ip: IpAddr, key: ServerKey) {
        self.active.entry(ip).or_default().push(key);
    }

    /// Forgets sources with nothing in the window and no call in progress.
    pub fn purge(&mut self, now: Instant, live: impl Fn(ServerKey) -> bool) {
        self.starts.retain(|_, s| {
            s.back()
                .is_some_and(|t| now.saturating_duration_since(*t) < WINDOW)
        });
        self.active.retain(|_, keys| {
            keys.retain(|k| live(*k));
            !keys.is_empty()
        });
        crate::memory::shrink_map(&mut self.starts);
        crate::memory::shrink_map(&mut self.active);
    }
}

/// RFC 3261 §16.3 checks for an element that forwards: `Some((status, reason))` when the
/// request must not go on: Max-Forwards exhausted (483), or one of its Vias carries a branch
/// we made (482: our own request came back).
pub fn loop_check(req: &Request, our_branches: &str) -> Option<(u16, &'static str)> {
    if req.headers.max_forwards() == Some(0) {
        return Some((483, "Too Many Hops"));
    }
    let looped = req.headers.vias().any(|v| {
        v.params
            .get("branch")
            .flatten()
            .is_some_and(|b| !our_branches.is_empty() && b.starts_with(our_branches))
    });
    looped.then_some((482, "Loop Detected"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::numbering::NumberingConfig;

    fn sock(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn policy() -> InboundPolicy {
        let net = |s: &str| match SourceSpec::parse(s).unwrap() {
            SourceSpec::Net(n) => n,
            SourceSpec::Host(h) => panic!("{h}"),
        };
        InboundPolicy {
            trunks: vec![
                TrunkSource {
                    name: "carrier".into(),
                    nets: vec![net("192.0.2.0/28"), Net::socket(sock("198.51.100.7:5060"))],
                    number_format: NumberFormat::National,
                },
                TrunkSource {
                    name: "e164".into(),
                    nets: vec![net("2001:db8::1")],
                    number_format: NumberFormat::E164,
                },
            ],
            peers: vec![("203.0.113.9".parse().unwrap(), "02:00:00:00:00:01".into())],
            public: true,
            calls_per_minute: 3,
            max_calls: 2,
            plan: Some(NumberingPlan::from_config(&NumberingConfig::default())),
            routes: vec![InboundRoute {
                number: "+4930123450".into(),
                label: "group sales".into(),
                members: vec!["100".into(), "101".into()],
                member_timeout: None,
            }],
            groups: Vec::new(),
        }
    }

    #[test]
    fn sources_parse() {
        assert!(matches!(
            SourceSpec::parse("192.0.2.1"),
            Ok(SourceSpec::Net(_))
        ));
        assert!(matches!(
            SourceSpec::parse("2001:db8::/32"),
            Ok(SourceSpec::Net(_))
        ));
        assert_eq!(
            SourceSpec::parse("sip.carrier.example"),
            Ok(SourceSpec::Host("sip.carrier.example".into()))
        );
        assert!(matches!(
            SourceSpec::parse("192.0.2.0/33"),
            Err(SourceError::PrefixLength(_, 32))
        ));
        for bad in [
            "",
            "192.0.2.1/x",
            "a b",
            "x/8",
            "host..example",
            "ä.example",
        ] {
            assert!(SourceSpec::parse(bad).is_err(), "{bad}");
        }
    }

    /// Overload admission prefers the INVITEs of the sources the configuration trusts: a
    /// trunk's sources, and a DUNDi peer's address only while public calls are taken (they
    /// are otherwise challenged like anybody's). `trusts` agrees with `trunk` and
    /// `public_origin`, which decide how such a call comes in.
    #[test]
    fn trusted_sources_are_the_trunks_and_the_peers_of_a_public_office() {
        let mut p = policy();
        let trunk = [
            "192.0.2.14:5999",
            "198.51.100.7:5060",
            "[2001:db8::1]:5060",
            "[::ffff:192.0.2.1]:5060",
        ];
        for src in trunk {
            assert!(p.trusts(sock(src)), "{src}");
            assert!(p.trunk(sock(src)).is_some(), "{src}");
        }
        let peer = sock("203.0.113.9:5060");
        assert!(p.trusts(peer));
        assert!(matches!(p.public_origin(peer), Some(Origin::Peer { .. })));
        // Anybody else, or a trunk's address on another port than its source's.
        for src in ["192.0.2.16:5060", "198.51.100.7:5062", "203.0.113.10:5060"] {
            assert!(!p.trusts(sock(src)), "{src}");
        }
        p.public = false;
        assert!(!p.trusts(peer));
        assert!(p.trusts(sock("192.0.2.14:5999")));
    }

    #[test]
    fn trunks_by_source_address_only() {
        let p = policy();
        let name = |o: Option<Origin>| o.map(|o| o.label());
        assert_eq!(
            name(p.trunk(sock("192.0.2.14:5999"))),
            Some("trunk carrier".into())
        );
        assert_eq!(name(p.trunk(sock("192.0.2.16:5060"))), None);
        // A URI-derived source is host and port.
        assert_eq!(
            name(p.trunk(sock("198.51.100.7:5060"))),
            Some("trunk carrier".into())
        );
        assert_eq!(name(p.trunk(sock("198.51.100.7:5061"))), None);
        assert_eq!(
            name(p.trunk(sock("[2001:db8::1]:5060"))),
            Some("trunk e164".into())
        );
        // IPv4-mapped IPv6 sources are the IPv4 address.
        assert_eq!(
            name(p.trunk(sock("[::ffff:192.0.2.3]:5060"))),
            Some("trunk carrier".into())
        );
    }

    #[test]
    fn public_origins() {
        let mut p = policy();
        assert_eq!(
            p.public_origin(sock("203.0.113.9:5060")).map(|o| o.label()),
            Some("DUNDi peer 02:00:00:00:00:01".into())
        );
        assert_eq!(
            p.public_origin(sock("203.0.113.10:5060"))
                .map(|o| o.label()),
            Some("internet 203.0.113.10".into())
        );
        p.public = false;
        assert_eq!(p.public_origin(sock("203.0.113.9:5060")), None);
    }

    #[test]
    fn numbers_in_every_form() {
        let p = policy();
        let did = "+4930123457";
        for form in [
            "+4930123457",
            "4930123457",
            "030123457",
            "004930123457",
            "+49 30 123457",
            "4930123457;npdi",
        ] {
            let forms = p.number_forms(form);
            assert!(forms.iter().any(|n| n.as_str() == did), "{form}: {forms:?}");
        }
        assert!(p.number_forms("100").iter().all(|n| n.as_str() != did));
        let route = p
            .route_for(&p.number_forms("030123450"))
            .map(|r| r.label.as_str());
        assert_eq!(route, Some("group sales"));
        assert_eq!(p.route_for(&p.number_forms("030123457")), None);
        assert!(p.number_forms("").is_empty());
        assert!(p.number_forms("abc").is_empty());
    }

    #[test]
    fn callers_in_e164() {
        let p = policy();
        let national = p.trunk(sock("192.0.2.1:5060")).unwrap();
        assert_eq!(p.caller_number(&national, "0301234"), "+49301234");
        assert_eq!(p.caller_number(&national, "+441234567"), "+441234567");
        let e164 = p.trunk(sock("[2001:db8::1]:5060")).unwrap();
        assert_eq!(p.caller_number(&e164, "441234567"), "+441234567");
        assert_eq!(p.caller_number(&e164, "anonymous"), "anonymous");
    }

    #[test]
    fn limits_per_source() {
        let p = policy();
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "203.0.113.10".parse().unwrap();
        let b: IpAddr = "203.0.113.11".parse().unwrap();
        let key = |n: u64| crate::sip::transaction::ServerKey::for_tests(n);
        let live = std::cell::RefCell::new(vec![key(1), key(2)]);
        let is_live = |k: ServerKey| live.borrow().contains(&k);
        assert_eq!(l.admit(t0, a, &p, is_live), Ok(()));
        l.started(a, key(1));
        assert_eq!(l.admit(t0, a, &p, is_live), Ok(()));
        l.started(a, key(2));
        // Two calls in progress: the third waits …
        assert_eq!(l.admit(t0, a, &p, is_live), Err(Limit::Concurrent));
        // … another source does not …
        assert_eq!(l.admit(t0, b, &p, is_live), Ok(()));
        // … and when one ends, the rate limit (3 a minute) is what stops it.
        live.borrow_mut().retain(|k| *k != key(1));
        assert_eq!(l.admit(t0, a, &p, is_live), Ok(()));
        assert_eq!(
            l.admit(t0 + Duration::from_secs(59), a, &p, is_live),
            Err(Limit::Rate)
        );
        live.borrow_mut().clear();
        assert_eq!(
            l.admit(t0 + Duration::from_secs(60), a, &p, is_live),
            Ok(())
        );
        l.purge(t0 + Duration::from_secs(200), is_live);
        assert!(l.starts.is_empty() && l.active.is_empty());
    }

    #[test]
    fn loops() {
        use crate::sip::message::Message;
        use crate::sip::parse::{parse_message, Framing, Limits};
        let req = |mf: u32, branch: &str| {
            let text = format!(
                "INVITE sip:4930123457@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKpeer\r\n\
                 Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\nMax-Forwards: {mf}\r\n\
                 From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            match parse_message(
                bytes::Bytes::from(text),
                Framing::Datagram,
                &Limits::default(),
            ) {
                Ok(Message::Request(r)) => r,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(loop_check(&req(70, "z9hG4bKother"), "z9hG4bKours"), None);
        assert_eq!(
            loop_check(&req(70, "z9hG4bKours1"), "z9hG4bKours"),
            Some((482, "Loop Detected"))
        );
        assert_eq!(
            loop_check(&req(0, "z9hG4bKother"), "z9hG4bKours"),
            Some((483, "Too Many Hops"))
        );
    }
}
