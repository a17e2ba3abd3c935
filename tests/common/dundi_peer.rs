//! A DUNDi peer office for the dashboard's DUNDi tests: the real test identity of
//! `tests/data/dundi` (EID 02:00:00:00:00:02, key `peer.key`), answering for `_4940555XXXX`
//! with `${NUMBER}@127.0.0.2:5090`, with the gateway (EID 02:00:00:00:00:01) as its peer.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;

use pasarela::routing::dundi::{
    DundiHandle, DundiService, Eid, Mapping, PatternNumbers, PeerSettings, Settings,
};

/// A UDP address free on loopback address `ip` (bound and released).
pub fn free_udp(ip: &str) -> SocketAddr {
    UdpSocket::bind(format!("{ip}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Starts the peer on `socket` (inside a tokio runtime), knowing the gateway at `gateway`;
/// `our_key`: the gateway's public key (encrypted, as an Asterisk peer with keys), `None` for an
/// unencrypted peer.
pub fn start(socket: UdpSocket, gateway: SocketAddr, our_key: Option<PathBuf>) -> DundiHandle {
    let keys = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/dundi/keys");
    let us: Eid = "02:00:00:00:00:01".parse().unwrap();
    let mut peer = PeerSettings::new(us, gateway, "e164");
    peer.inkey = our_key;
    let settings = Settings {
        eid: Some("02:00:00:00:00:02".parse().unwrap()),
        bind: socket.local_addr().unwrap(),
        private_key: Some(keys.join("peer.key")),
        mappings: vec![Mapping::sip("e164", "dids", "${NUMBER}@127.0.0.2:5090")],
        peers: vec![peer],
        ..Default::default()
    };
    let mut numbers = PatternNumbers::new();
    numbers.add("dids", &["_4940555XXXX"]).unwrap();
    DundiService::start_on(socket, settings, Arc::new(numbers)).expect("DUNDi peer")
}
