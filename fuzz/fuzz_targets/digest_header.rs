//! Any Authorization or WWW-Authenticate value: the digest parsers accept or refuse it; never
//! a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::sip::auth::{parse_challenge, parse_credentials};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_credentials(text);
        let _ = parse_challenge(text);
    }
});
