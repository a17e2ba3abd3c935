//! Any text as a Replaces header (RFC 3891) and as the `?headers` of a Refer-To URI: parsed
//! or refused with a reason; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::sip::replaces::Replaces;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Replaces::parse(text);
        let _ = Replaces::from_uri_headers(text);
    }
});
