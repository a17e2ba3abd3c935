//! Any file given to the rates CSV import: the CSV reader parses it (with the delimiter it
//! sniffs) or reports the line; every field is read as a price; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::cdr::csv::{parse, sniff_delimiter};
use pasarela::cdr::rating::Price;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(rows) = parse(text, sniff_delimiter(text)) {
            for row in rows {
                for field in &row.fields {
                    let _ = Price::parse(field, true);
                }
            }
        }
    }
});
