//! RFC 3263 §4 server location: from a SIP URI to the transports, addresses and ports to try, in
//! failover order.
//!
//! The rules ([`plan`]), for a `sip:` URI (the `maddr` parameter, when present, replaces the
//! host):
//!
//! 1. a numeric IP address: no DNS; the URI's port or 5060 (5061 for TLS), the `transport`
//!    parameter or UDP (TLS for `sips:`);
//! 2. a name with an explicit port: A and AAAA records of the name, `transport` or UDP;
//! 3. a name with a `transport` parameter: SRV for that transport (`_sip._udp` / `_sip._tcp` /
//!    `_sips._tcp`), or, when there is none, A/AAAA on port 5060 (5061 for TLS);
//! 4. otherwise NAPTR records of the name: `SIP+D2U` (UDP), `SIP+D2T` (TCP) and `SIPS+D2T` (TLS)
//!    records with the `s` flag, by order and preference, lead to SRV names (for a `sips:` URI
//!    only `SIPS+D2T`). Without usable NAPTR records (or when they lead nowhere): SRV
//!    `_sip._udp`, `_sip._tcp`, then `_sips._tcp` (for `sips:` only `_sips._tcp`); without SRV
//!    records either: A/AAAA on 5060 over UDP (5061 over TLS for `sips:`).
//!
//! A `sips:` URI is only ever reached over TLS (RFC 3261 §26.2.2, RFC 5630).
//!
//! SRV records are tried by priority, and within a priority in the weighted random order of
//! RFC 2782 ([`order_srv`], with an injectable random source); every address of every target is a
//! destination, A records before AAAA. A target of `.` means the service is not offered there.
//! Transports other than UDP, TCP and TLS are refused ([`LocateError`]).
//!
//! Queries go through the [`super::enum_lookup`] DNS layer: the same nameservers, the same cache,
//! the same deadline rule, and the same [`LookupStep`]s for `pasarela route`.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use crate::sip::peer::Proto;
use crate::sip::uri::{parse_host, Host, SipUri};

use super::enum_lookup::{
    join_all, DnsCore, EnumSettings, LookupStep, QueryType, RecordSet, ResolverError, StepOutcome,
};
use super::naptr::Naptr;

/// The SIP port when neither the URI nor DNS gives one.
pub const SIP_PORT: u16 = 5060;
/// The SIP-over-TLS port when neither the URI nor DNS gives one.
pub const SIPS_PORT: u16 = 5061;

/// The default port of `proto`.
pub fn default_port(proto: Proto) -> u16 {
    if proto == Proto::Tls {
        SIPS_PORT
    } else {
        SIP_PORT
    }
}

/// Where to send a request: one transport, address and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub proto: Proto,
    pub addr: SocketAddr,
    /// The host name (or address) it came from, for logs.
    pub target: String,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({})",
            self.proto.via_token(),
            self.addr,
            self.target
        )
    }
}

/// An SRV record (RFC 2782), as decoded from DNS; `target` lower case without trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// Why no destination could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    /// A `sips:` URI with a transport that is not TLS over TCP.
    #[error("sips: URIs need TLS over TCP, not {0}")]
    NoTls(String),
    /// A `transport` parameter other than UDP, TCP or TLS.
    #[error("transport {0:?} is not supported (only udp, tcp and tls)")]
    UnsupportedTransport(String),
    /// A `maddr` parameter that is not a host.
    #[error("bad maddr {0:?}")]
    BadMaddr(String),
    /// DNS answered, but no address.
    #[error("no address found for {0}")]
    NotFound(String),
    /// DNS did not answer (in time) and no address was found.
    #[error("DNS did not answer in time for {0}")]
    Timeout(String),
}

/// What RFC 3263 says to do for a URI, before any DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A numeric address: no DNS.
    Direct(Destination),
    /// A/AAAA records of `host`, on `port` over `proto`.
    Addresses {
        host: String,
        port: u16,
        proto: Proto,
    },
    /// SRV records of `host` for `proto`, else A/AAAA on 5060.
    Srv { host: String, proto: Proto },
    /// NAPTR records of `host`, else SRV for UDP, TCP and TLS, else A/AAAA on 5060 over UDP;
    /// `secure` (a `sips:` URI): only TLS, A/AAAA on 5061.
    Naptr { host: String, secure: bool },
}

/// The decision of RFC 3263 §4.1 and §4.2 for `uri` (see the module documentation).
pub fn plan(uri: &SipUri) -> Result<Plan, LocateError> {
    let transport = match uri.transport().as_deref() {
        None => None,
        Some(t) => match Proto::from_token(t) {
            Some(p) => Some(p),
            None => return Err(LocateError::UnsupportedTransport(t.to_owned())),
        },
    };
    // sips: is TLS over TCP whatever `transport=tcp` says (RFC 3261 §26.2.2).
    let transport = match (uri.secure, transport) {
        (false, t) => t,
        (true, None | Some(Proto::Tcp | Proto::Tls)) => Some(Proto::Tls),
        (true, Some(other)) => return Err(LocateError::NoTls(other.to_string())),
    };
    let host = match uri.params.value("maddr") {
        Some(m) => parse_host(m).map_err(|_| LocateError::BadMaddr(m.to_owned()))?,
        None => uri.host.clone(),
    };
    let name = match host {
        Host::Name(n) => n.trim_end_matches('.').to_ascii_lowercase(),
        Host::Ipv4(_) | Host::Ipv6(_) => {
            let ip = host.ip().ok_or(LocateError::BadMaddr(host.to_string()))?;
            let proto = transport.unwrap_or(Proto::Udp);
            return Ok(Plan::Direct(Destination {
                proto,
                addr: SocketAddr::new(ip, uri.port.unwrap_or(default_port(proto))),
                target: ip.to_string(),
            }));
        }
    };
    Ok(match (uri.port, transport) {
        (Some(port), t) => Plan::Addresses {
            host: name,
            port,
            proto: t.unwrap_or(Proto::Udp),
        },
        (None, Some(Proto::Tls)) if uri.secure => Plan::Naptr {
            host: name,
            secure: true,
        },
        (None, Some(proto)) => Plan::Srv { host: name, proto },
        (None, None) => Plan::Naptr {
            host: name,
            secure: false,
        },
    })
}

/// The SRV name of `host` for `proto`.
fn srv_name(proto: Proto, host: &str) -> String {
    match proto {
        Proto::Udp => format!("_sip._udp.{host}"),
        Proto::Tcp => format!("_sip._tcp.{host}"),
        Proto::Tls => format!("_sips._tcp.{host}"),
    }
}

/// The SRV names that NAPTR records lead to, by order and preference, with their transport; and
/// the records passed over, with the reason. Services other than SIP are ignored silently.
pub fn naptr_srv_names(records: &[Naptr]) -> (Vec<(Proto, String)>, Vec<String>) {
    let mut sorted: Vec<&Naptr> = records.iter().collect();
    sorted.sort_by_key(|r| (r.order, r.preference));
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for r in sorted {
        let service = r.services.trim();
        let proto = if service.eq_ignore_ascii_case("SIP+D2U") {
            Proto::Udp
        } else if service.eq_ignore_ascii_case("SIP+D2T") {
            Proto::Tcp
        } else if service.eq_ignore_ascii_case("SIPS+D2T") {
            Proto::Tls
        } else {
            continue;
        };
        let replacement = r
            .replacement
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !r.flags.trim().eq_ignore_ascii_case("s") {
            skipped.push(format!("{service}: flags {:?} instead of \"s\"", r.flags));
        } else if replacement.is_empty() {
            skipped.push(format!("{service}: no replacement"));
        } else if !usable.iter().any(|(p, n)| *p == proto && *n == replacement) {
            usable.push((proto, replacement));
        }
    }
    (usable, skipped)
}

/// RFC 2782 order: by priority; within a priority, repeatedly pick a record at random with a
/// probability proportional to its weight, records of weight 0 first in the running sum (so they
/// are picked only when the random number is 0, or when only they are left).
///
/// `rng(total)` must return a number in `0..=total`; larger values are clamped.
pub fn order_srv(records: &[SrvRecord], rng: &mut dyn FnMut(u32) -> u32) -> Vec<SrvRecord> {
    let mut sorted: Vec<&SrvRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut start = 0;
    while let Some(first) = sorted.get(start) {
        let priority = first.priority;
        let end = sorted
            .iter()
            .skip(start)
            .position(|r| r.priority != priority)
            .map_or(sorted.len(), |n| start + n);
        let mut group: Vec<&SrvRecord> = sorted.get(start..end).unwrap_or_default().to_vec();
        // Weight 0 first, otherwise as listed.
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rng(total).min(total);
            let mut running = 0u32;
            let index = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            out.push(group.remove(index).clone());
        }
        start = end;
    }
    out
}

/// What [`Locator::locate_explained`] found, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub destinations: Result<Vec<Destination>, LocateError>,
    /// Every query made (or answered from the cache), in order.
    pub steps: Vec<LookupStep>,
}

/// A random source for SRV weights: `rng(total)` in `0..=total`.
type Rng = Arc<Mutex<Box<dyn FnMut(u32) -> u32 + Send>>>;

/// RFC 3263 server location; cheap to clone.
#[derive(Clone)]
pub struct Locator {
    core: Arc<DnsCore>,
    rng: Rng,
}

impl fmt::Debug for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Locator").finish_non_exhaustive()
    }
}

impl Locator {
    /// A locator with its own resolver and cache, from the nameserver settings (the ENUM fields
    /// are not used). [`super::EnumResolver::locator`] gives one that shares the ENUM cache.
    pub fn new(settings: &EnumSettings) -> Result<Locator, ResolverError> {
        Ok(Locator::from_core(Arc::new(DnsCore::new(settings)?)))
    }

    pub(crate) fn from_core(core: Arc<DnsCore>) -> Locator {
        Locator {
            core,
            rng: Arc::new(Mutex::new(Box::new(|total| rand::random_range(0..=total)))),
        }
    }

    /// Replaces the random source of SRV weight ordering (for tests).
    pub fn with_rng(mut self, rng: impl FnMut(u32) -> u32 + Send + 'static) -> Locator {
        self.rng = Arc::new(Mutex::new(Box::new(rng)));
        self
    }

    /// The destinations for `uri`, in failover order, found before `deadline`.
    pub async fn locate(
        &self,
        uri: &SipUri,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<Destination>, LocateError> {
        self.locate_explained(uri, deadline).await.destinations
    }

    /// [`Locator::locate`], with the steps that led there.
    pub async fn locate_explained(&self, uri: &SipUri, deadline: tokio::time::Instant) -> Location {
        let plan = match plan(uri) {
            Ok(p) => p,
            Err(e) => {
                return Location {
                    destinations: Err(e),
                    steps: Vec::new(),
                }
            }
        };
        let mut steps = Vec::new();
        let (host, found) = match plan {
            Plan::Direct(d) => {
                return Location {
                    destinations: Ok(vec![d]),
                    steps,
                }
            }
            Plan::Addresses { host, port, proto } => {
                let found = self
                    .addresses(&host, port, proto, deadline, &mut steps)
                    .await;
                (host, found)
            }
            Plan::Srv { host, proto } => {
                let found = match self
                    .srv(&srv_name(proto, &host), proto, deadline, &mut steps)
                    .await
                {
                    Some(found) => found,
                    None => {
                        self.addresses(&host, default_port(proto), proto, deadline, &mut steps)
                            .await
                    }
                };
                (host, found)
            }
            Plan::Naptr { host, secure } => {
                let found = self.by_naptr(&host, secure, deadline, &mut steps).await;
                (host, found)
            }
        };
        let mut unique: Vec<Destination> = Vec::with_capacity(found.len());
        for d in found {
            if !unique
                .iter()
                .any(|u| u.proto == d.proto && u.addr == d.addr)
            {
                unique.push(d);
            }
        }
        let destinations = if !unique.is_empty() {
            Ok(unique)
        } else if steps.iter().any(|s| s.outcome == StepOutcome::Timeout) {
            Err(LocateError::Timeout(host))
        } else {
            Err(LocateError::NotFound(host))
        };
        Location {
            destinations,
            steps,
        }
    }

    /// Rule 4: NAPTR, else SRV for UDP, TCP and TLS, else A/AAAA on 5060 over UDP (for a
    /// `sips:` URI, `secure`: TLS only, A/AAAA on 5061).
    async fn by_naptr(
        &self,
        host: &str,
        secure: bool,
        deadline: tokio::time::Instant,
        steps: &mut Vec<LookupStep>,
    ) -> Vec<Destination> {
        let (answer, step) = self
            .core
            .query(0, "", QueryType::Naptr, host, deadline)
            .await;
        steps.push(step);
        let mut found = Vec::new();
        if let Some(RecordSet::Naptr(records)) = answer {
            let (usable, skipped) = naptr_srv_names(&records);
            for why in skipped {
                tracing::info!(host, record = %why, "RFC 3263: NAPTR record skipped");
                steps.push(LookupStep {
                    suffix: String::new(),
                    domain: host.to_owned(),
                    qtype: QueryType::Naptr,
                    elapsed: std::time::Duration::ZERO,
                    outcome: StepOutcome::SkippedRule(why),
                });
            }
            for (proto, name) in usable {
                if secure && proto != Proto::Tls {
                    steps.push(LookupStep {
                        suffix: String::new(),
                        domain: host.to_owned(),
                        qtype: QueryType::Naptr,
                        elapsed: std::time::Duration::ZERO,
                        outcome: StepOutcome::SkippedRule(format!(
                            "{name}: a sips: URI needs TLS, not {proto}"
                        )),
                    });
                    continue;
                }
                if let Some(d) = self.srv(&name, proto, deadline, steps).await {
                    found.extend(d);
                }
            }
        }
        if !found.is_empty() {
            return found;
        }
        if secure {
            let name = srv_name(Proto::Tls, host);
            return match self.srv(&name, Proto::Tls, deadline, steps).await {
                Some(found) => found,
                None => {
                    self.addresses(host, SIPS_PORT, Proto::Tls, deadline, steps)
                        .await
                }
            };
        }
        let (mut udp_steps, mut tcp_steps, mut tls_steps) = (Vec::new(), Vec::new(), Vec::new());
        let (udp_name, tcp_name) = (srv_name(Proto::Udp, host), srv_name(Proto::Tcp, host));
        let tls_name = srv_name(Proto::Tls, host);
        let (udp, tcp, tls) = tokio::join!(
            self.srv(&udp_name, Proto::Udp, deadline, &mut udp_steps),
            self.srv(&tcp_name, Proto::Tcp, deadline, &mut tcp_steps),
            self.srv(&tls_name, Proto::Tls, deadline, &mut tls_steps),
        );
        steps.append(&mut udp_steps);
        steps.append(&mut tcp_steps);
        steps.append(&mut tls_steps);
        if udp.is_none() && tcp.is_none() && tls.is_none() {
            return self
                .addresses(host, SIP_PORT, Proto::Udp, deadline, steps)
                .await;
        }
        udp.into_iter().chain(tcp).chain(tls).flatten().collect()
    }

    /// The destinations of an SRV name; `None` when it has no SRV records (or the query failed).
    async fn srv(
        &self,
        name: &str,
        proto: Proto,
        deadline: tokio::time::Instant,
        steps: &mut Vec<LookupStep>,
    ) -> Option<Vec<Destination>> {
        let (answer, step) = self.core.query(0, "", QueryType::Srv, name, deadline).await;
        steps.push(step);
        let Some(RecordSet::Srv(records)) = answer else {
            return None;
        };
        // RFC 2782: a single record with target "." says the service is not offered.
        let offered: Vec<SrvRecord> = records
            .iter()
            .filter(|r| r.target != "." && !r.target.is_empty())
            .cloned()
            .collect();
        let ordered = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            order_srv(&offered, &mut *rng)
        };
        let lookups: Vec<_> = ordered
            .iter()
            .map(|r| async move {
                let mut s = Vec::new();
                let d = self
                    .addresses(&r.target, r.port, proto, deadline, &mut s)
                    .await;
                (d, s)
            })
            .collect();
        let mut found = Vec::new();
        for (d, mut s) in join_all(lookups).await {
            found.extend(d);
            steps.append(&mut s);
        }
        Some(found)
    }

    /// A and AAAA records of `host`, A first.
    async fn addresses(
        &self,
        host: &str,
        port: u16,
        proto: Proto,
        deadline: tokio::time::Instant,
        steps: &mut Vec<LookupStep>,
    ) -> Vec<Destination> {
        let ((v4, s4), (v6, s6)) = tokio::join!(
            self.core.query(0, "", QueryType::A, host, deadline),
            self.core.query(0, "", QueryType::Aaaa, host, deadline),
        );
        steps.push(s4);
        steps.push(s6);
        let mut out = Vec::new();
        for set in [v4, v6].into_iter().flatten() {
            if let RecordSet::Addrs(addrs) = set {
                out.extend(addrs.iter().map(|ip: &IpAddr| Destination {
                    proto,
                    addr: SocketAddr::new(*ip, port),
                    target: host.to_owned(),
                }));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::uri::Uri;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn srv(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    fn targets(v: &[SrvRecord]) -> Vec<&str> {
        v.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn plans() {
        let direct = |proto, addr: &str, target: &str| {
            Ok(Plan::Direct(Destination {
                proto,
                addr: addr.parse().unwrap(),
                target: target.into(),
            }))
        };
        assert_eq!(
            plan(&sip("sip:alice@192.0.2.1")),
            direct(Proto::Udp, "192.0.2.1:5060", "192.0.2.1")
        );
        assert_eq!(
            plan(&sip("sip:alice@192.0.2.1:5080;transport=TCP")),
            direct(Proto::Tcp, "192.0.2.1:5080", "192.0.2.1")
        );
        assert_eq!(
            plan(&sip("sip:[2001:db8::1]")),
            direct(Proto::Udp, "[2001:db8::1]:5060", "2001:db8::1")
        );
        assert_eq!(
            plan(&sip("sip:alice@Example.TEST.:5070")),
            Ok(Plan::Addresses {
                host: "example.test".into(),
                port: 5070,
                proto: Proto::Udp
            })
        );
        assert_eq!(
            plan(&sip("sip:alice@example.test:5070;transport=tcp")),
            Ok(Plan::Addresses {
                host: "example.test".into(),
                port: 5070,
                proto: Proto::Tcp
            })
        );
        assert_eq!(
            plan(&sip("sip:alice@example.test;transport=udp")),
            Ok(Plan::Srv {
                host: "example.test".into(),
                proto: Proto::Udp
            })
        );
        assert_eq!(
            plan(&sip("sip:alice@example.test")),
            Ok(Plan::Naptr {
                host: "example.test".into(),
                secure: false
            })
        );
        // maddr replaces the host.
        assert_eq!(
            plan(&sip("sip:alice@example.test;maddr=192.0.2.7")),
            direct(Proto::Udp, "192.0.2.7:5060", "192.0.2.7")
        );
        assert_eq!(
            plan(&sip("sip:alice@example.test;maddr=proxy.example.test")),
            Ok(Plan::Naptr {
                host: "proxy.example.test".into(),
                secure: false
            })
        );
        assert_eq!(
            plan(&sip("sips:alice@example.test")),
            Ok(Plan::Naptr {
                host: "example.test".into(),
                secure: true
            })
        );
        assert_eq!(
            plan(&sip("sips:alice@192.0.2.1")),
            direct(Proto::Tls, "192.0.2.1:5061", "192.0.2.1")
        );
        assert_eq!(
            plan(&sip("sips:alice@example.test;transport=tcp")),
            Ok(Plan::Naptr {
                host: "example.test".into(),
                secure: true
            })
        );
        assert_eq!(
            plan(&sip("sips:alice@example.test;transport=udp")),
            Err(LocateError::NoTls("udp".into()))
        );
        assert_eq!(
            plan(&sip("sip:alice@example.test;transport=tls")),
            Ok(Plan::Srv {
                host: "example.test".into(),
                proto: Proto::Tls
            })
        );
        assert_eq!(
            plan(&sip("sip:alice@example.test;transport=sctp")),
            Err(LocateError::UnsupportedTransport("sctp".into()))
        );
    }

    #[test]
    fn naptr_services() {
        let n = |order, pref, flags: &str, services: &str, replacement: &str| Naptr {
            order,
            preference: pref,
            flags: flags.into(),
            services: services.into(),
            regexp: String::new(),
            replacement: replacement.into(),
        };
        let records = vec![
            n(20, 1, "s", "SIP+D2U", "_sip._udp.example.test"),
            n(10, 1, "s", "SIPS+D2T", "_sips._tcp.example.test"),
            n(10, 2, "S", "sip+d2t", "_SIP._tcp.example.test."),
            n(10, 3, "s", "SIP+D2S", "_sip._sctp.example.test"),
            n(30, 1, "a", "SIP+D2U", "sip.example.test"),
            n(40, 1, "s", "SIP+D2U", ""),
        ];
        let (usable, skipped) = naptr_srv_names(&records);
        assert_eq!(
            usable,
            vec![
                (Proto::Tls, "_sips._tcp.example.test".to_owned()),
                (Proto::Tcp, "_sip._tcp.example.test".to_owned()),
                (Proto::Udp, "_sip._udp.example.test".to_owned()),
            ]
        );
        assert_eq!(skipped.len(), 2, "{skipped:?}");
    }

    #[test]
    fn srv_priority_first() {
        let records = vec![
            srv(20, 0, "c"),
            srv(10, 0, "a"),
            srv(10, 0, "b"),
            srv(5, 7, "z"),
        ];
        let out = order_srv(&records, &mut |_| 0);
        assert_eq!(targets(&out), vec!["z", "a", "b", "c"]);
        assert!(order_srv(&[], &mut |_| 0).is_empty());
    }

    #[test]
    fn srv_weights_with_fixed_rng() {
        let records = vec![
            srv(10, 0, "zero"),
            srv(10, 10, "ten"),
            srv(10, 30, "thirty"),
        ];
        // Random 0: the weight-0 record (first in the running sum) is picked first.
        assert_eq!(
            targets(&order_srv(&records, &mut |_| 0)),
            vec!["zero", "ten", "thirty"]
        );
        // Always the top of the range: the last record in the running sum each time.
        assert_eq!(
            targets(&order_srv(&records, &mut |t| t)),
            vec!["thirty", "ten", "zero"]
        );
        // 11 falls into "thirty"'s share (11..=40) first, then 1 into "ten"'s.
        let mut seq = [11u32, 1, 0].into_iter();
        assert_eq!(
            targets(&order_srv(&records, &mut |_| seq.next().unwrap_or(0))),
            vec!["thirty", "ten", "zero"]
        );
        // Out-of-range answers are clamped.
        assert_eq!(
            targets(&order_srv(&records, &mut |_| u32::MAX)),
            vec!["thirty", "ten", "zero"]
        );
        // Only weight-0 records: as listed.
        let zeros = vec![srv(1, 0, "a"), srv(1, 0, "b")];
        assert_eq!(targets(&order_srv(&zeros, &mut |t| t)), vec!["a", "b"]);
    }

    #[test]
    fn srv_weights_are_proportional() {
        // A deterministic xorshift: 90/10 weights give the heavy target first about 90% of the
        // time; weight 0 is first only when the draw is 0.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rng = move |total: u32| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % (u64::from(total) + 1)) as u32
        };
        let records = vec![srv(1, 90, "heavy"), srv(1, 10, "light"), srv(1, 0, "never")];
        let mut heavy_first = 0;
        let mut zero_first = 0;
        for _ in 0..2000 {
            let out = order_srv(&records, &mut rng);
            assert_eq!(out.len(), 3);
            match out[0].target.as_str() {
                "heavy" => heavy_first += 1,
                "never" => zero_first += 1,
                _ => {}
            }
        }
        assert!((1700..=1900).contains(&heavy_first), "{heavy_first}");
        assert!(zero_first < 60, "{zero_first}");
    }
}
