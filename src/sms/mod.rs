//! Text messages: SMS through the modem lines and SIP MESSAGE (RFC 3428) between phones.
//!
//! The codec is sans-IO: [`gsm7`] (the GSM default alphabet and septet packing), [`userdata`]
//! (data coding, user data header, UCS-2), [`pdu`] (SMS-DELIVER / STATUS-REPORT reading,
//! SMS-SUBMIT writing and segmentation) and [`concat`] (reassembly of long messages with a
//! timeout). [`store`] keeps every message in SQLite before the modem is told to forget it.

pub mod concat;
pub mod gsm7;
pub mod pdu;
pub mod userdata;
