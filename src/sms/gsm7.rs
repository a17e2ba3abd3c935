//! The GSM 7-bit default alphabet and its extension table (3GPP TS 23.038 §6.2.1), and the
//! packing of septets into octets (§6.1.2.1.1). Decoding never fails: a septet that has no
//! character (an escape to a code the extension table lacks) becomes the default-alphabet
//! character or a space, as the specification asks of receivers.

/// The default alphabet, indexed by septet.
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The escape septet that introduces a character of the extension table.
pub const ESC: u8 = 0x1B;

/// The extension table: (septet after ESC, character).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0c}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The septets of `c`: one for the default alphabet, two (ESC, code) for the extension
/// table, `None` when the alphabet lacks it.
pub fn septets_of(c: char) -> Option<([u8; 2], usize)> {
    if c != '\u{1b}' {
        if let Some(i) = BASIC.iter().position(|&b| b == c) {
            return Some(([i as u8, 0], 1));
        }
    }
    EXTENSION
        .iter()
        .find(|(_, e)| *e == c)
        .map(|(code, _)| ([ESC, *code], 2))
}

/// Whether every character of `text` is in the alphabet (or its extension).
pub fn encodable(text: &str) -> bool {
    text.chars().all(|c| septets_of(c).is_some())
}

/// The septets of `text`, or `None` when a character is not in the alphabet.
pub fn encode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let (s, n) = septets_of(c)?;
        out.extend_from_slice(s.get(..n)?);
    }
    Some(out)
}

/// The text of `septets`.
pub fn decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut it = septets.iter().map(|s| s & 0x7F);
    while let Some(s) = it.next() {
        if s == ESC {
            match it.next() {
                Some(code) => match EXTENSION.iter().find(|(e, _)| *e == code) {
                    Some((_, c)) => out.push(*c),
                    // §6.2.1.1: an unknown extension shows as the default-alphabet character.
                    None => out.push(basic(code)),
                },
                None => out.push(' '),
            }
        } else {
            out.push(basic(s));
        }
    }
    out
}

fn basic(s: u8) -> char {
    BASIC.get(usize::from(s & 0x7F)).copied().unwrap_or(' ')
}

/// Packs septets into octets, least significant bit first, after `fill` zero bits (the
/// padding that aligns text after a user data header to a septet boundary).
pub fn pack(septets: &[u8], fill: u32) -> Vec<u8> {
    let total_bits = fill as usize + septets.len() * 7;
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    let mut bit = fill as usize;
    for &s in septets {
        for k in 0..7 {
            if s >> k & 1 == 1 {
                if let Some(o) = out.get_mut((bit + k) / 8) {
                    *o |= 1 << ((bit + k) % 8);
                }
            }
        }
        bit += 7;
    }
    out
}

/// Unpacks `count` septets from `octets`, skipping `fill` bits first. Stops early when the
/// octets run out (a truncated PDU).
pub fn unpack(octets: &[u8], count: usize, fill: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(count);
    let mut bit = fill as usize;
    for _ in 0..count {
        if bit + 7 > octets.len() * 8 {
            break;
        }
        let mut s = 0u8;
        for k in 0..7 {
            let b = bit + k;
            if octets.get(b / 8).is_some_and(|o| o >> (b % 8) & 1 == 1) {
                s |= 1 << k;
            }
        }
        out.push(s);
        bit += 7;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_packs_as_in_the_specification() {
        // The well-known example: "hellohello" → E8329BFD4697D9EC37.
        let s = encode("hellohello").unwrap();
        assert_eq!(
            pack(&s, 0),
            [0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37]
        );
        assert_eq!(decode(&unpack(&pack(&s, 0), 10, 0)), "hellohello");
    }

    #[test]
    fn extension_table_round_trips() {
        let text = "Preis: 5€ [a|b] {x} ~^\\";
        let s = encode(text).unwrap();
        assert_eq!(s.len(), text.chars().count() + 9);
        assert_eq!(decode(&s), text);
        assert!(encode("Привет").is_none());
        assert!(!encodable("😀"));
    }

    #[test]
    fn fill_bits_and_truncation() {
        let s = encode("Hi there").unwrap();
        let packed = pack(&s, 1);
        assert_eq!(decode(&unpack(&packed, s.len(), 1)), "Hi there");
        // Truncated input gives what is there, no panic.
        assert_eq!(unpack(&packed[..2], 8, 1).len(), 2);
        assert_eq!(decode(&[ESC]), " ");
        assert_eq!(decode(&[ESC, 0x41]), "A");
    }
}
