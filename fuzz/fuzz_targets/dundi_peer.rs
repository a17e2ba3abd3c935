//! A DUNDi peer as typed in the dashboard or sent to the API: the pasted public key is checked,
//! normalised and fingerprinted, the EID and address parsed; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::routing::dundi::keyring::{fingerprints, normalise_public_pem};
use pasarela::store::dundi::PeerInput;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pem) = normalise_public_pem(text) {
            let _ = fingerprints(&pem);
        }
        let mut lines = text.splitn(3, '\n');
        let input = PeerInput {
            eid: lines.next().unwrap_or_default().to_owned(),
            address: lines.next().unwrap_or_default().to_owned(),
            key: lines.next().unwrap_or_default().to_owned(),
            qualify: text.chars().take(4).collect(),
            ..PeerInput::default()
        };
        let _ = input.check(true);
    }
});
