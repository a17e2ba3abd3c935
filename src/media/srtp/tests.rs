//! RFC 3711 Appendix B vectors, the libsrtp reference packets, and the protections.

use super::keys::{aes_cm_xor, derive, Label, SessionKeys};
use super::*;
use aes::cipher::KeyInit;
use aes::Aes128;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(s).unwrap()
}

/// RFC 3711 B.2: the AES-CM keystream.
#[test]
fn aes_cm_keystream_rfc3711_b2() {
    let key: [u8; 16] = unhex("2B7E151628AED2A6ABF7158809CF4F3C")
        .try_into()
        .unwrap();
    let cipher = Aes128::new(&key.into());
    let iv: [u8; 16] = unhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
        .try_into()
        .unwrap();
    let mut ks = vec![0u8; 48];
    aes_cm_xor(&cipher, iv, &mut ks);
    assert_eq!(
        ks,
        unhex(
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB \
             41E95B3BB0A2E8DD477901E4FCA894C0"
        )
    );
    // Counter FEFF..FF01 of the same vector.
    let mut iv2 = iv;
    iv2[14] = 0xFE;
    iv2[15] = 0xFF;
    let mut ks = vec![0u8; 48];
    aes_cm_xor(&cipher, iv2, &mut ks);
    assert_eq!(
        ks,
        unhex(
            "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE \
             6A2CC3787889374FBEB4C81B17BA6C44"
        )
    );
}

/// RFC 3711 B.3: session keys from a master key.
#[test]
fn key_derivation_rfc3711_b3() {
    let key: [u8; 16] = unhex("E1F97A0D3E018BE0D64FA32C06DE4139")
        .try_into()
        .unwrap();
    let salt: [u8; 14] = unhex("0EC675AD498AFEEBB6960B3AABE6").try_into().unwrap();
    let prf = Aes128::new(&key.into());
    let mut k = [0u8; 16];
    derive(&prf, &salt, Label::RtpEncryption, &mut k);
    assert_eq!(k.to_vec(), unhex("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut s = [0u8; 14];
    derive(&prf, &salt, Label::RtpSalt, &mut s);
    assert_eq!(s.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));
    let mut a = [0u8; 20];
    derive(&prf, &salt, Label::RtpAuth, &mut a);
    assert_eq!(
        a.to_vec(),
        unhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );
    let keys = SessionKeys::derive(&MasterKey::new(key, salt), false);
    assert_eq!(keys.salt.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));
}

fn libsrtp_key() -> MasterKey {
    let key: [u8; 16] = unhex("E1F97A0D3E018BE0D64FA32C06DE4139")
        .try_into()
        .unwrap();
    let salt: [u8; 14] = unhex("0EC675AD498AFEEBB6960B3AABE6").try_into().unwrap();
    MasterKey::new(key, salt)
}

const RTP_PLAIN: &str = "800f1234decafbadcafebabe abababababababababababababababab";

/// The reference packet of libsrtp's `srtp_driver` (AES_CM_128_HMAC_SHA1_80).
#[test]
fn protect_rtp_matches_libsrtp_reference() {
    let mut ctx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &libsrtp_key());
    let plain = unhex(RTP_PLAIN);
    let mut buf = [0u8; 64];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = ctx.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_eq!(
        buf[..n].to_vec(),
        unhex("800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb")
    );
    let mut rx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &libsrtp_key());
    let len = rx.unprotect_rtp(&mut buf[..n]).unwrap();
    assert_eq!(buf[..len].to_vec(), plain);
}

/// The SRTCP reference packet of libsrtp (index 1, E flag set).
#[test]
fn protect_rtcp_matches_libsrtp_reference() {
    let mut ctx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &libsrtp_key());
    ctx.set_srtcp_index(1);
    let plain = unhex("81c8000bcafebabe abababababababababababababababab");
    let mut buf = [0u8; 64];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = ctx.protect_rtcp(&mut buf, plain.len()).unwrap();
    assert_eq!(
        buf[..n].to_vec(),
        unhex("81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798")
    );
    let mut rx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &libsrtp_key());
    let len = rx.unprotect_rtcp(&mut buf[..n]).unwrap();
    assert_eq!(buf[..len].to_vec(), plain);
    // The same packet again is a replay.
    let mut again = buf;
    again[..n].copy_from_slice(&unhex(
        "81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798",
    ));
    assert_eq!(rx.unprotect_rtcp(&mut again[..n]), Err(SrtpError::Replayed));
}

fn rtp(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 160]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn protect(ctx: &mut SrtpContext, pkt: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 256];
    buf[..pkt.len()].copy_from_slice(pkt);
    let n = ctx.protect_rtp(&mut buf, pkt.len()).unwrap();
    buf[..n].to_vec()
}

#[test]
fn both_suites_round_trip_and_hide_the_payload() {
    for suite in Suite::ALL {
        let key = MasterKey::random();
        let mut tx = SrtpContext::new(suite, &key);
        let mut rx = SrtpContext::new(suite, &key);
        let plain = rtp(7, 0x1234, &[0x55; 160]);
        let mut wire = protect(&mut tx, &plain);
        assert_eq!(wire.len(), plain.len() + suite.rtp_tag_len());
        assert!(
            !wire.windows(16).any(|w| w == [0x55; 16]),
            "{suite}: payload in clear"
        );
        let n = rx.unprotect_rtp(&mut wire).unwrap();
        assert_eq!(&wire[..n], &plain[..]);
    }
}

#[test]
fn forged_replayed_and_old_packets_are_refused() {
    let key = MasterKey::random();
    let mut tx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &key);
    let mut rx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &key);
    let first = protect(&mut tx, &rtp(100, 9, &[1; 20]));
    let mut tampered = first.clone();
    tampered[14] ^= 1;
    assert_eq!(rx.unprotect_rtp(&mut tampered), Err(SrtpError::AuthFailed));
    // Another key: refused as well.
    let mut other = SrtpContext::new(Suite::AesCm128HmacSha1_80, &MasterKey::random());
    let mut foreign = protect(&mut other, &rtp(101, 9, &[1; 20]));
    assert_eq!(rx.unprotect_rtp(&mut foreign), Err(SrtpError::AuthFailed));

    let mut p = first.clone();
    rx.unprotect_rtp(&mut p).unwrap();
    let mut p = first.clone();
    assert_eq!(rx.unprotect_rtp(&mut p), Err(SrtpError::Replayed));
    // Far ahead, then one 64 behind it is too old; one within the window and new is fine.
    for seq in 101..=200 {
        let mut p = protect(&mut tx, &rtp(seq, 9, &[2; 20]));
        if seq == 200 {
            rx.unprotect_rtp(&mut p).unwrap();
        }
    }
    let mut tx2 = SrtpContext::new(Suite::AesCm128HmacSha1_80, &key);
    let mut old = protect(&mut tx2, &rtp(120, 9, &[3; 20]));
    assert_eq!(rx.unprotect_rtp(&mut old), Err(SrtpError::TooOld));
    let mut late = protect(&mut tx2, &rtp(190, 9, &[3; 20]));
    assert!(rx.unprotect_rtp(&mut late).is_ok());
    // Short and garbage inputs are errors, not panics.
    for junk in [&[][..], &[0x80][..], &[0x80; 13][..], &[0x9f; 40][..]] {
        let mut j = junk.to_vec();
        assert!(rx.unprotect_rtp(&mut j).is_err());
        let mut j = junk.to_vec();
        assert!(rx.unprotect_rtcp(&mut j).is_err());
    }
}

#[test]
fn rollover_counter_follows_a_sequence_wrap() {
    let key = MasterKey::random();
    let mut tx = SrtpContext::new(Suite::AesCm128HmacSha1_32, &key);
    let mut rx = SrtpContext::new(Suite::AesCm128HmacSha1_32, &key);
    let mut seq: u16 = 65530;
    for _ in 0..12 {
        let plain = rtp(seq, 77, &[9; 40]);
        let mut wire = protect(&mut tx, &plain);
        let n = rx.unprotect_rtp(&mut wire).unwrap();
        assert_eq!(&wire[..n], &plain[..], "seq {seq}");
        seq = seq.wrapping_add(1);
    }
}

#[test]
fn keys_are_not_printed() {
    let key = MasterKey::new([0xAB; 16], [0xCD; 14]);
    let ctx = SrtpContext::new(Suite::AesCm128HmacSha1_80, &key);
    let text = format!("{key:?} {ctx:?}");
    assert!(
        !text.contains("171") && !text.to_lowercase().contains("ab, "),
        "{text}"
    );
    assert!(text.contains("redacted"));
}
