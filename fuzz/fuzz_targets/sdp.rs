//! Any text: the SDP parser returns a session description or an error, and its `a=crypto`
//! lines (SDES keys) parse or not; the quick `a=rtcp-mux` scan of a raw body answers; never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::sdp::SessionDescription;

fuzz_target!(|data: &[u8]| {
    let _ = pasarela::sdp::body_offers_rtcp_mux(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(sdp) = SessionDescription::parse(text) {
            for m in &sdp.media {
                let _ = m.srtp_offers();
            }
            let _ = SessionDescription::parse(&sdp.to_string());
        }
    }
});
