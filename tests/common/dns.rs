//! The embedded DNS server (`ZoneServer`) as a test's authoritative server on 127.0.0.1, with
//! its own runtime, for tests that drive ENUM and RFC 3263 location through real DNS.

use std::net::SocketAddr;

use pasarela::routing::zone_server::{Zone, ZoneRecord, ZoneServer};

/// A DNS server for the test's zones, on 127.0.0.1, with its own runtime.
pub struct Dns {
    server: Option<ZoneServer>,
    rt: tokio::runtime::Runtime,
}

impl Dns {
    pub fn start(zones: Vec<Zone>) -> Dns {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt
            .block_on(ZoneServer::start("127.0.0.1:0".parse().unwrap(), zones))
            .expect("start the DNS server");
        Dns {
            server: Some(server),
            rt,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().map(|s| s.local_addr()).unwrap()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}

pub fn zone(origin: &str, records: Vec<ZoneRecord>) -> Zone {
    Zone {
        origin: origin.into(),
        ttl: 60,
        negative_ttl: 30,
        records,
    }
}
