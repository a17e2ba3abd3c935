//! Any bytes from a modem: the line splitter frames them and every line is classified (final
//! result, URC, +CLCC, a `+CMT:`/`+CDS:` header with the line after it as its PDU); never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::pstn::gsm::at::result::{
    is_pdu_urc_header, is_urc_line, parse_clcc, parse_pdu_urc, parse_urc,
};
use pasarela::pstn::gsm::at::{FinalResult, Frame, LineSplitter};

fuzz_target!(|data: &[u8]| {
    let mut splitter = LineSplitter::new();
    let mut frames = Vec::new();
    // Fed in two chunks, as a serial port delivers them.
    let (a, b) = data.split_at(data.len() / 2);
    splitter.push(a, &mut frames);
    splitter.push(b, &mut frames);
    let mut header: Option<String> = None;
    for frame in frames {
        if let Frame::Line(line) = frame {
            if let Some(h) = header.take() {
                let _ = parse_pdu_urc(&h, &line);
            }
            let _ = FinalResult::parse(&line);
            let _ = parse_clcc(&line);
            if is_urc_line(&line) {
                let _ = parse_urc(&line);
            }
            if is_pdu_urc_header(&line) {
                header = Some(line);
            }
        }
    }
});
