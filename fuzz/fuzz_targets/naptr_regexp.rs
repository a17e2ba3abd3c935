//! Any NAPTR regexp field and application-unique string (the first line of the input is the
//! regexp, the rest the number): the substitution succeeds or is refused; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::routing::naptr::apply_regexp;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (regexp, aus) = text.split_once('\n').unwrap_or((text, "+4930123456"));
        let _ = apply_regexp(regexp, aus);
    }
});
