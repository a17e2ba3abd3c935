//! Text messages: SMS through the modem lines and SIP MESSAGE (RFC 3428) between phones.
//!
//! The codec is sans-IO: [`gsm7`] (the GSM default alphabet and septet packing), [`userdata`]
//! (data coding, user data header, UCS-2), [`pdu`] (SMS-DELIVER / STATUS-REPORT reading,
//! SMS-SUBMIT writing and segmentation) and [`concat`] (reassembly of long messages with a
//! timeout), [`ussd`] (answers as modems give them). [`store`] keeps every message in SQLite
//! before the modem is told to forget it; [`service`] is the task between the lines, the store
//! and the SIP core; [`email`] forwards received SMS by e-mail.

pub mod concat;
pub mod config;
pub mod email;
pub mod gsm7;
pub mod messages;
pub mod metrics;
pub mod pdu;
pub mod service;
pub use crate::store::sms as store;
pub mod userdata;
pub mod ussd;
