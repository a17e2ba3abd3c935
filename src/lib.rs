//! pasarela: a SIP registrar, back-to-back user agent and PSTN gateway for small offices.
//!
//! The crate is organised by job (as the project's design notes describe): sans-IO protocol cores under
//! [`sip`], thin tokio shells under [`transport`], and the services built on them.

pub mod b2bua;
pub mod callctl;
pub mod cdr;
pub mod checked;
pub mod config;
pub mod hashing;
pub mod live;
pub mod logging;
pub mod media;
pub mod memory;
pub mod office_time;
pub mod preflight;
pub mod pstn;
pub mod registrar;
pub mod routing;
pub mod sdp;
pub mod security;
pub mod server;
pub mod sip;
pub mod sms;
pub mod store;
pub mod subscriptions;
pub mod supervise;
pub mod transport;
pub mod web;
