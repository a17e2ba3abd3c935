//! Any datagram: the DUNDi codec decodes it or refuses it, and re-encodes what it decoded;
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::routing::dundi::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        let _ = p.encode();
    }
});
