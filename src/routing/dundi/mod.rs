//! DUNDi (RFC 7378, the protocol of Asterisk's `pbx_dundi`), wire-compatible with Asterisk 20.
//!
//! The parts, each with one job:
//!
//! - [`eid`]: the entity identifier.
//! - [`wire`]: the datagram codec (header, commands, information elements), sans-IO.
//! - [`crypto`]: RSA key files, session keys, ENCRYPT/ENCDATA as Asterisk does them.
//! - [`numbers`]: "is this number ours?" — the predicate mappings ask, and a pattern version.
//! - [`keyring`]: our generated key pair and the key files of peers added in the dashboard.
//! - [`settings`]: the node's configuration (identity, keys, mappings, peers).
//! - [`engine`]: the sans-IO transaction engine (answers peers, runs our lookups and pings).
//! - [`service`]: the tokio shell: a UDP socket and a task around the engine, and a handle.
//! - [`source`]: DUNDi as a [`crate::routing::router::RouteSource`] for the router.
//!
//! Using it: build [`Settings`] (our EID, key, mappings, peers), say which numbers are ours
//! with a [`LocalNumbers`] (e.g. [`PatternNumbers`]), start the service and ask it:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use pasarela::routing::dundi::{DundiService, Mapping, PatternNumbers, PeerSettings, Settings};
//!
//! let mut peer = PeerSettings::new("02:00:00:00:00:02".parse()?, "192.0.2.7:4520".parse()?, "e164");
//! peer.inkey = Some("/etc/pasarela/dundi/branch.pub".into()); // encrypt with this peer
//! let settings = Settings {
//!     private_key: Some("/etc/pasarela/dundi/office.key".into()),
//!     mappings: vec![Mapping::sip("e164", "dids", "${NUMBER}@${IPADDR}:5060")],
//!     peers: vec![peer],
//!     ..Default::default()
//! };
//! let mut ours = PatternNumbers::new();
//! ours.add("dids", &["_4930123456", "_4930123XXX"])?;
//! let dundi = DundiService::start(settings, Arc::new(ours)).await?;
//! for answer in dundi.lookup("4940555123", "e164", Duration::from_millis(500)).await {
//!     println!("{} via {}: {:?}", answer.destination, answer.via, answer.sip_uri());
//! }
//! # Ok(()) }
//! ```
//!
//! Numbers in the `e164` context are E.164 digits without `+`. Keys must be 1024-bit RSA
//! (Asterisk's limit: SHAREDKEY and SIGNATURE are 128-byte elements); [`keygen`] writes them.

pub mod config;
pub mod crypto;
pub mod eid;
pub mod engine;
pub mod keyring;
pub mod numbers;
pub mod office;
pub mod report;
pub mod service;
pub mod settings;
pub mod source;
pub mod wire;

pub use crypto::keygen;
pub use eid::{Eid, EidParseError};
pub use engine::{
    Answer, CacheEntry, Engine, EngineError, Event, Keys, LookupId, LookupResult, PeerView,
    PrecacheReport, Reachability, Stats,
};
pub use numbers::{AnyOf, LocalNumbers, NumberMatch, NumberSet, Pattern, PatternNumbers};
pub use office::OfficeDundi;
pub use service::{DundiHandle, DundiService, ServiceError};
pub use settings::{
    parse_mapping_options, parse_peer_address, EntityInfo, Mapping, Model, PeerSettings, Settings,
    SettingsError, Tech,
};
pub use source::DundiSource;
pub use wire::{AnswerIe, Command, Header, Ie, Packet, WireError};
