//! `a=crypto` and `RTP/SAVP`: what phones send, odd and broken lines, and our own lines.

use super::*;
use crate::media::srtp::{MasterKey, Suite};

/// baresip 1.0.0 with `mediaenc srtp-mand` (keys replaced).
const BARESIP_OFFER: &str =
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/SAVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:Ix2GX4O/vmkHe1/MgwyL5ge68PEIiJdb5WazvJve\r\n\
a=sendrecv\r\n";

#[test]
fn phone_offer_gives_both_keys_in_order() {
    let sdp = SessionDescription::parse(BARESIP_OFFER).unwrap();
    let m = sdp.audio().unwrap();
    assert!(m.is_savp());
    let keys = m.srtp_offers();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (keys[0].tag, keys[0].suite),
        (1, Suite::AesCm128HmacSha1_80)
    );
    assert_eq!(
        (keys[1].tag, keys[1].suite),
        (2, Suite::AesCm128HmacSha1_32)
    );
    assert_eq!(
        keys[0].key.concatenated().to_vec(),
        b"YS___semctl () {\t220;}\n}\nunles".to_vec()
    );
}

#[test]
fn lifetimes_mki_and_session_params_parse_but_mki_is_not_used() {
    let c = CryptoAttribute::parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:32",
    )
    .unwrap();
    assert_eq!(c.keys[0].lifetime.as_deref(), Some("2^20"));
    assert_eq!(c.keys[0].mki.as_deref(), Some("1:32"));
    assert!(
        c.usable().is_none(),
        "an MKI would change the packet format"
    );
    let c = CryptoAttribute::parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
    )
    .unwrap();
    assert!(c.usable().is_some(), "a lifetime alone is fine");
    let c = CryptoAttribute::parse(
        "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP",
    )
    .unwrap();
    assert_eq!(c.session_params, ["UNENCRYPTED_SRTP"]);
    assert!(c.usable().is_none());
    // Several keys: parsed, not used.
    let c = CryptoAttribute::parse(
        "3 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4;inline:QUJjZGVmMTIzNDU2Nzg5QUJDREUwMTIzNDU2Nzg5|2^20|2:4",
    )
    .unwrap();
    assert_eq!(c.keys.len(), 2);
    assert!(c.usable().is_none());
}

#[test]
fn broken_lines_are_none_never_a_panic() {
    for v in [
        "",
        "1",
        "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        "1 AES_CM_128_HMAC_SHA1_80",
        "1 AES_CM_128_HMAC_SHA1_80 inline",
        "1 AES_CM_128_HMAC_SHA1_80 inline:",
        "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!",
        "1 AES_CM_128_HMAC_SHA1_80 uri:http://x",
        "1 AES_CM_128_HMAC_SHA1_80 inline:abc|1|2|3",
        "99999999999 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
        "1 AES_CM_128_HMAC_SHA1_80 inline:ü|ü:ü",
    ] {
        assert!(
            CryptoAttribute::parse(v).and_then(|c| c.usable()).is_none(),
            "{v:?}"
        );
    }
    // A short key parses but is not usable; an unknown suite neither.
    let c = CryptoAttribute::parse("1 AES_CM_128_HMAC_SHA1_80 inline:QUJD").unwrap();
    assert!(c.usable().is_none());
    let c = CryptoAttribute::parse(
        "1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
    )
    .unwrap();
    assert!(c.usable().is_none());
}

#[test]
fn best_effort_keys_count_plain_and_dtls_streams_offer_none() {
    let best_effort = BARESIP_OFFER.replace("RTP/SAVP", "RTP/AVP");
    let sdp = SessionDescription::parse(&best_effort).unwrap();
    assert!(!sdp.audio().unwrap().is_savp());
    assert_eq!(sdp.audio().unwrap().srtp_offers().len(), 2);
    let plain: String = best_effort
        .split("\r\n")
        .filter(|l| !l.starts_with("a=crypto"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let sdp = SessionDescription::parse(&plain).unwrap();
    assert!(sdp.audio().unwrap().srtp_offers().is_empty());
    let dtls = BARESIP_OFFER.replace("RTP/SAVP", "UDP/TLS/RTP/SAVP");
    let sdp = SessionDescription::parse(&dtls).unwrap();
    assert!(sdp.audio().unwrap().srtp_offers().is_empty());
}

#[test]
fn our_key_round_trips_and_set_srtp_switches_the_profile() {
    let mut sdp = SessionDescription::parse(BARESIP_OFFER).unwrap();
    let ours = SdesKey {
        tag: 1,
        suite: Suite::AesCm128HmacSha1_32,
        key: MasterKey::random(),
    };
    let m = sdp.audio_mut().unwrap();
    m.set_srtp(Some(&ours));
    let text = sdp.to_string();
    assert_eq!(text.matches("a=crypto:").count(), 1, "{text}");
    let back = SessionDescription::parse(&text).unwrap();
    assert_eq!(back.audio().unwrap().srtp_offers(), vec![ours.clone()]);
    let mut sdp = back;
    sdp.audio_mut().unwrap().set_srtp(None);
    let text = sdp.to_string();
    assert!(text.contains("m=audio 4000 RTP/AVP 0 8 101\r\n"), "{text}");
    assert!(!text.contains("crypto"));
    assert!(!format!("{ours:?}").contains(&format!("{:?}", ours.key.concatenated())));
}
