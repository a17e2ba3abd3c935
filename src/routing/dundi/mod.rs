//! DUNDi (RFC 7378, the protocol of Asterisk's `pbx_dundi`), wire-compatible with Asterisk 20.
//!
//! The parts, each with one job:
//!
//! - [`eid`]: the entity identifier.
//! - [`wire`]: the datagram codec (header, commands, information elements), sans-IO.
//! - [`crypto`]: RSA key files, session keys, ENCRYPT/ENCDATA as Asterisk does them.
//! - [`numbers`]: "is this number ours?" — the predicate mappings ask, and a pattern version.
//! - [`settings`]: the node's configuration (identity, keys, mappings, peers).
//! - [`engine`]: the sans-IO transaction engine (answers peers, runs our lookups and pings).
//! - [`service`]: the tokio shell: a UDP socket and a task around the engine, and a handle.

pub mod crypto;
pub mod eid;
pub mod engine;
pub mod numbers;
pub mod service;
pub mod settings;
pub mod wire;

pub use crypto::keygen;
pub use eid::{Eid, EidParseError};
pub use engine::{Answer, Engine, EngineError, Event, Keys, LookupId, LookupResult, Reachability};
pub use numbers::{LocalNumbers, NumberMatch, Pattern, PatternNumbers};
pub use service::{DundiHandle, DundiService, ServiceError};
pub use settings::{
    parse_mapping_options, parse_peer_address, EntityInfo, Mapping, Model, PeerSettings, Settings,
    SettingsError, Tech,
};
pub use wire::{AnswerIe, Command, Header, Ie, Packet, WireError};
