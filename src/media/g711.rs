//! ITU-T G.711 companding: µ-law and A-law to and from 16-bit linear PCM, and the direct
//! µ-law ⇄ A-law code conversions of G.711 Tables 3 and 4.
//!
//! The encoders follow the ITU-T reference implementation (G.191 Software Tool Library,
//! `g711.c`: `alaw_compress` / `ulaw_compress`), which treats negative samples by their one's
//! complement, so that the A-law and µ-law decision intervals are symmetric around zero. The
//! decoders return the reconstruction values of G.711 Tables 1 and 2, scaled to 16 bits
//! (identical to Sun's widely copied `g711.c`: µ-law `0x00` → −32124, A-law `0xAA` → 32256).
//!
//! [`ulaw_to_alaw`] and [`alaw_to_ulaw`] use the conversion tables of G.711 itself (as copied in
//! Sun's `g711.c`, `_u2a` / `_a2u`), not a detour through linear PCM: the tables are what a
//! transcoding gateway must apply to be bit-exact, and they differ from "decode then encode" for
//! a handful of codes at the bottom of the range.
//!
//! Everything here is a pure function over bytes: no allocation, no panics, usable on the RTP
//! hot path ([`ulaw_buf_to_alaw`] / [`alaw_buf_to_ulaw`] transcode a payload in place).

/// Decodes one µ-law code to 16-bit linear PCM (G.711 Table 2, values ×4).
#[inline]
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW_TO_LINEAR[code as usize]
}

/// Decodes one A-law code to 16-bit linear PCM (G.711 Table 1, 13-bit values left-justified).
#[inline]
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW_TO_LINEAR[code as usize]
}

const fn ulaw_decode(code: u8) -> i16 {
    // G.191 ulaw_expand.
    let positive = code >= 0x80;
    let inv = !code;
    let exponent = ((inv >> 4) & 0x07) as i32;
    let segment = exponent + 1;
    let mantissa = (inv & 0x0F) as i32;
    let step = 4i32 << segment;
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    if positive {
        magnitude as i16
    } else {
        -magnitude as i16
    }
}

const fn alaw_decode(code: u8) -> i16 {
    // G.191 alaw_expand.
    let ix = (code ^ 0x55) & 0x7F;
    let exponent = (ix >> 4) as i32;
    let mut mantissa = (ix & 0x0F) as i32;
    if exponent > 0 {
        mantissa += 16;
    }
    mantissa = (mantissa << 4) + 0x08;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    if code > 127 {
        mantissa as i16
    } else {
        -mantissa as i16
    }
}

/// Encodes a 16-bit linear PCM sample as µ-law (G.191 `ulaw_compress`: the 14 most significant
/// bits are used; negative samples by one's complement).
#[inline]
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let x = sample as i32;
    let mut absno = if x < 0 { (!x) >> 2 } else { x >> 2 } + 33;
    if absno > 0x1FFF {
        absno = 0x1FFF;
    }
    let mut i = absno >> 6;
    let mut segno = 1;
    while i != 0 {
        segno += 1;
        i >>= 1;
    }
    let high_nibble = 0x08 - segno;
    let low_nibble = 0x0F - ((absno >> segno) & 0x0F);
    let mut out = ((high_nibble << 4) | low_nibble) as u8;
    if x >= 0 {
        out |= 0x80;
    }
    out
}

/// Encodes a 16-bit linear PCM sample as A-law (G.191 `alaw_compress`: the 12 most significant
/// bits are used; negative samples by one's complement; even bits inverted).
#[inline]
pub fn linear_to_alaw(sample: i16) -> u8 {
    let x = sample as i32;
    let mut ix = if x < 0 { (!x) >> 4 } else { x >> 4 };
    if ix > 15 {
        let mut iexp = 1;
        while ix > 16 + 15 {
            ix >>= 1;
            iexp += 1;
        }
        ix -= 16;
        ix += iexp << 4;
    }
    if x >= 0 {
        ix |= 0x80;
    }
    (ix as u8) ^ 0x55
}

/// Converts a µ-law code to the A-law code G.711 (Table 3 / Sun `_u2a`) prescribes.
#[inline]
pub fn ulaw_to_alaw(code: u8) -> u8 {
    ULAW_TO_ALAW[code as usize]
}

/// Converts an A-law code to the µ-law code G.711 (Table 4 / Sun `_a2u`) prescribes.
#[inline]
pub fn alaw_to_ulaw(code: u8) -> u8 {
    ALAW_TO_ULAW[code as usize]
}

/// Transcodes a µ-law payload to A-law in place (same length: one byte per sample).
#[inline]
pub fn ulaw_buf_to_alaw(payload: &mut [u8]) {
    for b in payload {
        *b = ULAW_TO_ALAW[*b as usize];
    }
}

/// Transcodes an A-law payload to µ-law in place (same length: one byte per sample).
#[inline]
pub fn alaw_buf_to_ulaw(payload: &mut [u8]) {
    for b in payload {
        *b = ALAW_TO_ULAW[*b as usize];
    }
}

/// µ-law (magnitude code, sign removed and complemented) to A-law, from G.711 via Sun `g711.c`.
const U2A: [u8; 128] = [
    1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
    21, 22, 23, 24, 25, 27, 29, 31, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 48, 49, 50,
    51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75,
    76, 77, 78, 79, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99,
    100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118,
    119, 120, 121, 122, 123, 124, 125, 126, 127, 128,
];

/// A-law (magnitude code, even bits re-toggled) to µ-law, from G.711 via Sun `g711.c`.
const A2U: [u8; 128] = [
    1, 3, 5, 7, 9, 11, 13, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
    32, 33, 33, 34, 34, 35, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 48, 49, 49, 50,
    51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73,
    74, 75, 76, 77, 78, 79, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96,
    97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115,
    116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127,
];

const fn build_u2a() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let u = i as u8;
        // Sun ulaw2alaw().
        t[i] = if u & 0x80 != 0 {
            0xD5 ^ (U2A[(0xFF ^ u) as usize] - 1)
        } else {
            0x55 ^ (U2A[(0x7F ^ u) as usize] - 1)
        };
        i += 1;
    }
    t
}

const fn build_a2u() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let a = i as u8;
        // Sun alaw2ulaw().
        t[i] = if a & 0x80 != 0 {
            0xFF ^ A2U[(a ^ 0xD5) as usize]
        } else {
            0x7F ^ A2U[(a ^ 0x55) as usize]
        };
        i += 1;
    }
    t
}

const fn build_ulaw_linear() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = ulaw_decode(i as u8);
        i += 1;
    }
    t
}

const fn build_alaw_linear() -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = alaw_decode(i as u8);
        i += 1;
    }
    t
}

static ULAW_TO_ALAW: [u8; 256] = build_u2a();
static ALAW_TO_ULAW: [u8; 256] = build_a2u();
static ULAW_TO_LINEAR: [i16; 256] = build_ulaw_linear();
static ALAW_TO_LINEAR: [i16; 256] = build_alaw_linear();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_decode_reference_values() {
        // Sun g711.c ulaw2linear / G.191 ulaw_expand.
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0xFE), 8);
        assert_eq!(ulaw_to_linear(0x7E), -8);
        assert_eq!(ulaw_to_linear(0xF0), 120);
        assert_eq!(ulaw_to_linear(0xEF), 132);
        assert_eq!(ulaw_to_linear(0x0F), -16764);
        assert_eq!(ulaw_to_linear(0x10), -15996);
        assert_eq!(ulaw_to_linear(0x8F), 16764);
    }

    #[test]
    fn alaw_decode_reference_values() {
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(alaw_to_linear(0x80), 5504);
        assert_eq!(alaw_to_linear(0x00), -5504);
        assert_eq!(alaw_to_linear(0xD4), 24);
        assert_eq!(alaw_to_linear(0xC5), 264);
    }

    /// Sun's (newer, 13/14-bit) linear2alaw / linear2ulaw, transcribed as an oracle for the
    /// positive half, where every published reference agrees.
    fn sun_linear2ulaw(pcm: i16) -> u8 {
        const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
        let mut v = (pcm as i32) >> 2;
        let mask = if v < 0 {
            v = -v;
            0x7F
        } else {
            0xFF
        };
        if v > 8159 {
            v = 8159;
        }
        v += 33;
        let seg = SEG_UEND.iter().position(|&e| v <= e).unwrap_or(8) as i32;
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        (((seg << 4) | ((v >> (seg + 1)) & 0xF)) ^ mask) as u8
    }

    fn sun_linear2alaw(pcm: i16) -> u8 {
        const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
        let mut v = (pcm as i32) >> 3;
        let mask = if v >= 0 {
            0xD5
        } else {
            v = -v - 1;
            0x55
        };
        let seg = SEG_AEND.iter().position(|&e| v <= e).unwrap_or(8) as i32;
        if seg >= 8 {
            return (0x7F ^ mask) as u8;
        }
        let mut a = seg << 4;
        if seg < 2 {
            a |= (v >> 1) & 0xF;
        } else {
            a |= (v >> seg) & 0xF;
        }
        (a ^ mask) as u8
    }

    fn sun_ulaw2linear(u: u8) -> i16 {
        let u = !u;
        let mut t = (((u & 0x0F) as i32) << 3) + 0x84;
        t <<= (u & 0x70) >> 4;
        (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
    }

    fn sun_alaw2linear(a: u8) -> i16 {
        let a = a ^ 0x55;
        let mut t = ((a & 0x0F) as i32) << 4;
        let seg = ((a & 0x70) >> 4) as i32;
        match seg {
            0 => t += 8,
            1 => t += 0x108,
            _ => {
                t += 0x108;
                t <<= seg - 1;
            }
        }
        (if a & 0x80 != 0 { t } else { -t }) as i16
    }

    #[test]
    fn decoders_match_sun_on_all_codes() {
        for c in 0..=255u8 {
            assert_eq!(ulaw_to_linear(c), sun_ulaw2linear(c), "ulaw {c:#04x}");
            assert_eq!(alaw_to_linear(c), sun_alaw2linear(c), "alaw {c:#04x}");
        }
    }

    #[test]
    fn encoders_match_references() {
        for x in i16::MIN..=i16::MAX {
            // A-law: G.191 and Sun agree everywhere.
            assert_eq!(linear_to_alaw(x), sun_linear2alaw(x), "alaw {x}");
            // µ-law: they agree for x >= 0. For negatives G.191 takes the one's complement, which
            // puts x on the magnitude Sun gives x + 4: the decision thresholds sit one 14-bit
            // step lower, symmetric to the positive side.
            if x >= 0 {
                assert_eq!(linear_to_ulaw(x), sun_linear2ulaw(x), "ulaw {x}");
            } else if x <= -5 {
                assert_eq!(linear_to_ulaw(x), sun_linear2ulaw(x + 4), "ulaw {x}");
            } else {
                assert_eq!(linear_to_ulaw(x), 0x7F, "ulaw {x}");
            }
        }
        // A few well-known codes.
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(-1), 0x55);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn decode_encode_is_identity() {
        for c in 0..=255u8 {
            assert_eq!(linear_to_alaw(alaw_to_linear(c)), c, "alaw {c:#04x}");
            // 0x7F is µ-law's negative zero; it decodes to 0, which encodes as positive zero.
            let expect = if c == 0x7F { 0xFF } else { c };
            assert_eq!(linear_to_ulaw(ulaw_to_linear(c)), expect, "ulaw {c:#04x}");
        }
    }

    #[test]
    fn transcoding_tables_reference_values() {
        assert_eq!(ulaw_to_alaw(0xFF), 0xD5);
        assert_eq!(ulaw_to_alaw(0x7F), 0x55);
        assert_eq!(ulaw_to_alaw(0x00), 0x2A);
        assert_eq!(ulaw_to_alaw(0x80), 0xAA);
        assert_eq!(alaw_to_ulaw(0xD5), 0xFE);
        assert_eq!(alaw_to_ulaw(0x55), 0x7E);
        assert_eq!(alaw_to_ulaw(0xAA), 0x80);
        assert_eq!(alaw_to_ulaw(0x2A), 0x00);
        for c in 0..=255u8 {
            // The sign is always kept.
            assert_eq!(ulaw_to_alaw(c) & 0x80, c & 0x80);
            assert_eq!(alaw_to_ulaw(c) & 0x80, c & 0x80);
        }
    }

    /// Quantisation step (16-bit scale) of a µ-law code.
    fn ulaw_step(c: u8) -> i32 {
        8 << ((0x7F - (c & 0x7F)) >> 4)
    }

    /// Quantisation step (16-bit scale) of an A-law code.
    fn alaw_step(c: u8) -> i32 {
        let seg = ((c ^ 0x55) & 0x7F) >> 4;
        if seg < 2 {
            16
        } else {
            16 << (seg - 1)
        }
    }

    #[test]
    fn transcoding_round_trips() {
        let mut not_identity_uau = Vec::new();
        let mut not_identity_aua = Vec::new();
        for c in 0..=255u8 {
            // One conversion moves a sample by at most about one quantisation step.
            let (u, a) = (
                ulaw_to_linear(c) as i32,
                alaw_to_linear(ulaw_to_alaw(c)) as i32,
            );
            assert!((u - a).abs() <= ulaw_step(c), "µ->A {c:#04x}: {u} vs {a}");
            let (a, u) = (
                alaw_to_linear(c) as i32,
                ulaw_to_linear(alaw_to_ulaw(c)) as i32,
            );
            assert!(
                (a - u).abs() <= 2 * alaw_step(c),
                "A->µ {c:#04x}: {a} vs {u}"
            );

            // Round trips are transparent except where the finer law has two codes for one
            // code of the coarser, and then off by at most one step.
            let back = alaw_to_ulaw(ulaw_to_alaw(c));
            let err = (ulaw_to_linear(c) as i32 - ulaw_to_linear(back) as i32).abs();
            assert!(err <= ulaw_step(c), "µ-A-µ {c:#04x}");
            if back != c {
                not_identity_uau.push(0x7F - (c & 0x7F));
            }
            let back = ulaw_to_alaw(alaw_to_ulaw(c));
            let err = (alaw_to_linear(c) as i32 - alaw_to_linear(back) as i32).abs();
            assert!(err <= alaw_step(c), "A-µ-A {c:#04x}");
            if back != c {
                not_identity_aua.push((c ^ 0x55) & 0x7F);
            }
        }
        // Both signs of: the 8 smallest even µ-law magnitudes (where µ-law is finer than A-law)...
        not_identity_uau.sort_unstable();
        not_identity_uau.dedup();
        assert_eq!(not_identity_uau, [0, 2, 4, 6, 8, 10, 12, 14]);
        // ...and the A-law magnitudes G.711 Table 4 maps onto a shared µ-law code.
        not_identity_aua.sort_unstable();
        not_identity_aua.dedup();
        assert_eq!(not_identity_aua, [25, 27, 29, 31, 44, 46, 62, 79]);
    }

    #[test]
    fn in_place_buffers() {
        let mut buf: Vec<u8> = (0..=255u8).collect();
        ulaw_buf_to_alaw(&mut buf);
        alaw_buf_to_ulaw(&mut buf);
        for (i, b) in buf.iter().enumerate() {
            assert_eq!(*b, alaw_to_ulaw(ulaw_to_alaw(i as u8)));
        }
    }
}
