//! Any datagram: the SIP parser returns a message or an error (a 400 for the sender); a parsed
//! message serialises again; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::sip::parse::{parse_message, Framing, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(m) = parse_message(bytes::Bytes::copy_from_slice(data), Framing::Datagram, &limits) {
        let _ = m.encode();
    }
});
