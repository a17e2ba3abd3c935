//! The SIP protocol core (RFC 3261), free of I/O: message model, parser and serialiser, URIs,
//! digest authentication and the transaction layer. Nothing here opens a socket or reads a clock.

pub mod auth;
pub mod dialog;
pub mod event;
pub mod header;
pub mod im;
pub mod message;
pub mod method;
pub mod parse;
#[cfg(test)]
mod parse_reference;
pub mod peer;
pub mod replaces;
pub mod transaction;
pub mod uri;
pub mod uri_eq;
