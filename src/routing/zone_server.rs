//! The embedded authoritative DNS server: the office's private ENUM zone, and the real DNS server
//! that the DNS tests run on loopback.
//!
//! [`ZoneServer`] serves a set of [`Zone`]s over UDP and TCP on one port, with hickory-server's
//! authoritative logic (hickory's `Catalog` and in-memory zones): names in a zone that do not
//! exist get NXDOMAIN, names that exist without the asked type get an empty NOERROR, both with
//! the zone's SOA in the authority section so that resolvers cache the miss for the SOA minimum
//! (RFC 2308); names outside every zone get REFUSED. Every zone gets an SOA and an NS record
//! (`ns.<origin>`) of its own.
//!
//! Zones can be replaced while the server runs ([`ZoneServer::replace_zone`]): the private ENUM
//! zone changes whenever extensions or their numbers change. A replacement builds a new catalog
//! and swaps it in; queries in flight finish on the old one.
//!
//! [`enum_zone`] builds the private ENUM zone: one `E2U+sip` NAPTR per DID of the office,
//! pointing at the extension on this host.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::rr::rdata::{A, AAAA, NAPTR, NS, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;

use super::naptr::enum_domain;
use super::numbering::E164;

/// How long a TCP client may stay idle before the server closes its connection.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Outgoing responses buffered per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// Attempts at finding a port free for both UDP and TCP when asked for port 0.
const PORT_ATTEMPTS: usize = 16;

/// A zone to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// The zone's apex, e.g. `e164.example` (trailing dot optional).
    pub origin: String,
    /// The TTL of every record in the zone.
    pub ttl: u32,
    /// The SOA minimum and the SOA record's own TTL: how long resolvers may cache a miss.
    pub negative_ttl: u32,
    /// The records; SOA and NS are added automatically.
    pub records: Vec<ZoneRecord>,
}

/// A record of a [`Zone`]. Names ending in `.` are absolute, `@` is the origin, and any other name
/// is relative to the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneRecord {
    /// An RFC 3403 NAPTR record. `replacement` is `.` or empty when unused.
    Naptr {
        name: String,
        order: u16,
        preference: u16,
        flags: String,
        services: String,
        regexp: String,
        replacement: String,
    },
    /// An RFC 2782 SRV record (`name` is e.g. `_sip._udp`).
    Srv {
        name: String,
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    /// An IPv4 address.
    A { name: String, addr: Ipv4Addr },
    /// An IPv6 address.
    Aaaa { name: String, addr: Ipv6Addr },
}

/// Why a zone could not be built or the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// A name in the zone (or its origin) is not a valid domain name.
    #[error("zone {origin}: bad name {name:?}: {reason}")]
    BadName {
        origin: String,
        name: String,
        reason: String,
    },
    /// A name lies outside the zone it is declared in.
    #[error("zone {origin}: {name} is outside the zone")]
    OutOfZone { origin: String, name: String },
    /// A record was refused by the zone store (e.g. a second record where only one may exist).
    #[error("zone {origin}: record {name} could not be added")]
    Rejected { origin: String, name: String },
    /// The listening sockets could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// An authoritative DNS server for a set of zones, serving UDP and TCP on one port until
/// [`ZoneServer::shutdown`] or drop.
pub struct ZoneServer {
    server: Server<SwappableCatalog>,
    state: Arc<Shared>,
    local_addr: SocketAddr,
}

/// What the request handler and the owner share.
struct Shared {
    /// The catalog queries are answered from; replaced as a whole on every change.
    catalog: RwLock<Arc<Catalog>>,
    /// The zones as given, by lower-cased origin, to rebuild the catalog from.
    zones: Mutex<BTreeMap<String, Zone>>,
    /// The SOA serial of the next build.
    serial: AtomicU32,
}

impl ZoneServer {
    /// Starts serving `zones` on `listen` (UDP and TCP). With port 0, a port free for both is
    /// chosen; [`ZoneServer::local_addr`] tells which.
    pub async fn start(listen: SocketAddr, zones: Vec<Zone>) -> Result<ZoneServer, ZoneError> {
        let serial = initial_serial();
        let mut by_origin = BTreeMap::new();
        for zone in zones {
            by_origin.insert(origin_key(&zone.origin), zone);
        }
        let catalog = build_catalog(&by_origin, serial)?;
        let state = Arc::new(Shared {
            catalog: RwLock::new(Arc::new(catalog)),
            zones: Mutex::new(by_origin),
            serial: AtomicU32::new(serial.wrapping_add(1)),
        });
        let (udp, tcp) = bind_pair(listen).await?;
        let local_addr = udp.local_addr().map_err(|source| ZoneError::Bind {
            addr: listen,
            source,
        })?;
        let mut server = Server::new(SwappableCatalog(state.clone()));
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, TCP_RESPONSE_BUFFER);
        tracing::info!(addr = %local_addr, "DNS zone server listening (UDP and TCP)");
        Ok(ZoneServer {
            server,
            state,
            local_addr,
        })
    }

    /// The address the server listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Adds `zone`, or replaces the zone with the same origin. Queries see the new zone as soon
    /// as this returns; on error the served zones are unchanged.
    pub fn replace_zone(&self, zone: Zone) -> Result<(), ZoneError> {
        let mut zones = self
            .state
            .zones
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = origin_key(&zone.origin);
        let previous = zones.insert(key.clone(), zone);
        let serial = self.state.serial.fetch_add(1, Ordering::Relaxed);
        match build_catalog(&zones, serial) {
            Ok(catalog) => {
                *self
                    .state
                    .catalog
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(catalog);
                tracing::info!(zone = %key, serial, "DNS zone replaced");
                Ok(())
            }
            Err(e) => {
                match previous {
                    Some(p) => zones.insert(key, p),
                    None => zones.remove(&key),
                };
                Err(e)
            }
        }
    }

    /// The origins of the zones served, lower-cased, without trailing dot.
    pub fn origins(&self) -> Vec<String> {
        self.state
            .zones
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Stops serving and waits until the listening tasks have ended.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::warn!(error = %e, "DNS zone server ended with an error");
        }
    }
}

impl Drop for ZoneServer {
    fn drop(&mut self) {
        // Dropping the hickory server aborts its tasks; cancelling first lets them end cleanly.
        self.server.shutdown_token().cancel();
    }
}

impl std::fmt::Debug for ZoneServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneServer")
            .field("local_addr", &self.local_addr)
            .field("zones", &self.origins())
            .finish()
    }
}

/// The private ENUM zone of an office: under the ENUM tree `suffix`, one NAPTR per DID
/// (`order 100, preference 10, flags "u", E2U+sip, !^.*$!sip:+E164@host[:port]!`). The URI
/// names the DID, not the extension behind it: that is the number the office takes calls to
/// from outside without a password (`[inbound] public`), and extension numbers stay private.
///
/// `host` may be a name or an IP address (an IPv6 address gets its brackets). The zone's negative
/// TTL is `ttl` too: a number that is not (yet) a DID is asked again as soon as a DID would be.
pub fn enum_zone(
    suffix: &str,
    host: &str,
    port: Option<u16>,
    dids: &[(E164, String)],
    ttl: u32,
) -> Zone {
    let origin = suffix.trim().trim_matches('.').to_ascii_lowercase();
    let host = host.trim();
    let host = if host.parse::<Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    let records = dids
        .iter()
        .map(|(number, _extension)| ZoneRecord::Naptr {
            name: format!("{}.", enum_domain(number, &origin)),
            order: 100,
            preference: 10,
            flags: "u".to_owned(),
            services: "E2U+sip".to_owned(),
            regexp: format!("!^.*$!sip:{}@{host}{port}!", number.as_str()),
            replacement: ".".to_owned(),
        })
        .collect();
    Zone {
        origin,
        ttl,
        negative_ttl: ttl,
        records,
    }
}

/// The key of a zone in the server: its origin lower-cased without trailing dot.
fn origin_key(origin: &str) -> String {
    origin.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A serial in the usual "seconds since the epoch" style, so that a restarted server does not go
/// backwards.
fn initial_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

/// Binds UDP and TCP on the same address; for port 0, on the same free port.
async fn bind_pair(
    listen: SocketAddr,
) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener), ZoneError> {
    let bind_err = |source| ZoneError::Bind {
        addr: listen,
        source,
    };
    let attempts = if listen.port() == 0 { PORT_ATTEMPTS } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = tokio::net::UdpSocket::bind(listen)
            .await
            .map_err(bind_err)?;
        let addr = udp.local_addr().map_err(bind_err)?;
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "TCP port taken, trying another");
                last = Some(e);
            }
        }
    }
    Err(bind_err(last.unwrap_or_else(|| {
        std::io::Error::from(std::io::ErrorKind::AddrInUse)
    })))
}

/// Builds a catalog holding every zone.
fn build_catalog(zones: &BTreeMap<String, Zone>, serial: u32) -> Result<Catalog, ZoneError> {
    let mut catalog = Catalog::new();
    for zone in zones.values() {
        let handler = build_zone(zone, serial)?;
        let origin = LowerName::new(handler.origin());
        catalog.upsert(origin, vec![Arc::new(handler) as Arc<dyn ZoneHandler>]);
    }
    Ok(catalog)
}

/// Builds one zone with its SOA and NS.
fn build_zone(
    zone: &Zone,
    serial: u32,
) -> Result<InMemoryZoneHandler<TokioRuntimeProvider>, ZoneError> {
    let origin_text = origin_key(&zone.origin);
    let origin = Name::from_ascii(format!("{origin_text}.")).map_err(|e| ZoneError::BadName {
        origin: origin_text.clone(),
        name: zone.origin.clone(),
        reason: e.to_string(),
    })?;
    let name = |n: &str| -> Result<Name, ZoneError> {
        let n = n.trim();
        let parsed = if n == "@" || n.is_empty() {
            Ok(origin.clone())
        } else if n.ends_with('.') {
            Name::from_ascii(n)
        } else {
            Name::from_ascii(n).and_then(|rel| rel.append_domain(&origin))
        }
        .map_err(|e| ZoneError::BadName {
            origin: origin_text.clone(),
            name: n.to_owned(),
            reason: e.to_string(),
        })?;
        if !origin.zone_of(&parsed) {
            return Err(ZoneError::OutOfZone {
                origin: origin_text.clone(),
                name: n.to_owned(),
            });
        }
        Ok(parsed)
    };
    // Targets (SRV targets, NAPTR replacements) may be anywhere.
    let target = |n: &str| -> Result<Name, ZoneError> {
        let n = n.trim();
        if n.is_empty() || n == "." {
            return Ok(Name::root());
        }
        let parsed = if n.ends_with('.') {
            Name::from_ascii(n)
        } else {
            Name::from_ascii(n).and_then(|rel| rel.append_domain(&origin))
        };
        parsed.map_err(|e| ZoneError::BadName {
            origin: origin_text.clone(),
            name: n.to_owned(),
            reason: e.to_string(),
        })
    };

    let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let ns_name = target("ns")?;
    let hostmaster = target("hostmaster")?;
    let soa = SOA::new(
        ns_name.clone(),
        hostmaster,
        serial,
        3600,
        600,
        86400,
        zone.negative_ttl,
    );
    let mut add = |record: Record, text: &str| -> Result<(), ZoneError> {
        if handler.upsert_mut(record, serial) {
            Ok(())
        } else {
            Err(ZoneError::Rejected {
                origin: origin_text.clone(),
                name: text.to_owned(),
            })
        }
    };
    add(
        Record::from_rdata(origin.clone(), zone.negative_ttl, RData::SOA(soa)),
        "@ SOA",
    )?;
    add(
        Record::from_rdata(origin.clone(), zone.ttl, RData::NS(NS(ns_name))),
        "@ NS",
    )?;
    for r in &zone.records {
        let (text, record) = match r {
            ZoneRecord::Naptr {
                name: n,
                order,
                preference,
                flags,
                services,
                regexp,
                replacement,
            } => (
                n,
                Record::from_rdata(
                    name(n)?,
                    zone.ttl,
                    RData::NAPTR(NAPTR::new(
                        *order,
                        *preference,
                        flags.as_bytes().into(),
                        services.as_bytes().into(),
                        regexp.as_bytes().into(),
                        target(replacement)?,
                    )),
                ),
            ),
            ZoneRecord::Srv {
                name: n,
                priority,
                weight,
                port,
                target: t,
            } => (
                n,
                Record::from_rdata(
                    name(n)?,
                    zone.ttl,
                    RData::SRV(SRV::new(*priority, *weight, *port, target(t)?)),
                ),
            ),
            ZoneRecord::A { name: n, addr } => (
                n,
                Record::from_rdata(name(n)?, zone.ttl, RData::A(A(*addr))),
            ),
            ZoneRecord::Aaaa { name: n, addr } => (
                n,
                Record::from_rdata(name(n)?, zone.ttl, RData::AAAA(AAAA(*addr))),
            ),
        };
        add(record, text)?;
    }
    Ok(handler)
}

/// The request handler: answers from whatever catalog is current.
struct SwappableCatalog(Arc<Shared>);

// `RequestHandler` is an `async_trait` trait; this is the signature that macro would generate
// (the crate is not a dependency of ours for one impl).
impl RequestHandler for SwappableCatalog {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn std::future::Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: 'async_trait + ResponseHandler,
        T: 'async_trait + Time,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        let catalog = self
            .0
            .catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move {
            catalog
                .handle_request::<R, T>(request, response_handle)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_zone_records() {
        let dids = vec![
            ("+4930123456".parse::<E164>().unwrap(), "100".to_owned()),
            ("+4930123457".parse::<E164>().unwrap(), "alice".to_owned()),
        ];
        let z = enum_zone("E164.Example.", "pbx.example.test", Some(5070), &dids, 120);
        assert_eq!(z.origin, "e164.example");
        assert_eq!(z.ttl, 120);
        assert_eq!(z.records.len(), 2);
        assert_eq!(
            z.records[0],
            ZoneRecord::Naptr {
                name: "6.5.4.3.2.1.0.3.9.4.e164.example.".into(),
                order: 100,
                preference: 10,
                flags: "u".into(),
                services: "E2U+sip".into(),
                regexp: "!^.*$!sip:+4930123456@pbx.example.test:5070!".into(),
                replacement: ".".into(),
            }
        );
        let z = enum_zone("e164.example", "2001:db8::1", None, &dids[1..], 60);
        let ZoneRecord::Naptr { regexp, .. } = &z.records[0] else {
            panic!("not a NAPTR");
        };
        assert_eq!(regexp, "!^.*$!sip:+4930123457@[2001:db8::1]!");
    }

    #[test]
    fn zone_names() {
        let zone = |records| Zone {
            origin: "example.test".into(),
            ttl: 60,
            negative_ttl: 30,
            records,
        };
        let ok = zone(vec![
            ZoneRecord::A {
                name: "@".into(),
                addr: Ipv4Addr::LOCALHOST,
            },
            ZoneRecord::A {
                name: "sip".into(),
                addr: Ipv4Addr::LOCALHOST,
            },
            ZoneRecord::Srv {
                name: "_sip._udp.example.test.".into(),
                priority: 10,
                weight: 0,
                port: 5060,
                target: "sip.elsewhere.test.".into(),
            },
        ]);
        assert!(build_zone(&ok, 1).is_ok());
        let outside = zone(vec![ZoneRecord::A {
            name: "sip.other.test.".into(),
            addr: Ipv4Addr::LOCALHOST,
        }]);
        assert!(matches!(
            build_zone(&outside, 1),
            Err(ZoneError::OutOfZone { .. })
        ));
        let bad = zone(vec![ZoneRecord::A {
            name: "a..b".into(),
            addr: Ipv4Addr::LOCALHOST,
        }]);
        assert!(matches!(
            build_zone(&bad, 1),
            Err(ZoneError::BadName { .. })
        ));
    }
}
