//! DUNDi (RFC 7378, the protocol of Asterisk's `pbx_dundi`), wire-compatible with Asterisk 20.
//!
//! The parts, each with one job:
//!
//! - [`eid`]: the entity identifier.
//! - [`wire`]: the datagram codec (header, commands, information elements), sans-IO.
//! - [`crypto`]: RSA key files, session keys, ENCRYPT/ENCDATA as Asterisk does them.

pub mod crypto;
pub mod eid;
pub mod wire;

pub use eid::{Eid, EidParseError};
pub use wire::{AnswerIe, Command, Header, Ie, Packet, WireError};
