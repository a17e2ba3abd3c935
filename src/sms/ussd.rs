//! The text of a USSD answer (`+CUSD: <m>,"<str>",<dcs>`, 3GPP TS 27.007 §7.15): modems give
//! it as plain text, as hex of GSM 7-bit packed septets (Huawei sticks), or as hex of UCS-2
//! (data coding 0x48 and the other UCS-2 schemes). Which one is told by the data coding
//! scheme and by whether the string is hex.

use super::gsm7;
use super::pdu::from_hex;
use super::userdata::{ucs2_text, Alphabet};

/// The readable text of a USSD string with data coding scheme `dcs`.
pub fn decode(text: &str, dcs: Option<u16>) -> String {
    let dcs = dcs.and_then(|d| u8::try_from(d).ok()).unwrap_or(0x0F);
    let hex = text.len() >= 2
        && text.len().is_multiple_of(2)
        && text.bytes().all(|b| b.is_ascii_hexdigit());
    match (Alphabet::of_dcs(dcs), hex) {
        (Alphabet::Ucs2, true) => {
            from_hex(text).map_or_else(|_| text.to_owned(), |o| ucs2_text(&o))
        }
        (Alphabet::Gsm7, true) if looks_packed(text) => match from_hex(text) {
            Ok(o) => {
                let mut s = gsm7::unpack(&o, o.len() * 8 / 7, 0);
                // A last septet of padding: CR (TS 23.038 §6.1.2.3.1) or a zero.
                if o.len() % 7 == 0 && matches!(s.last(), Some(0x0D) | Some(0)) {
                    s.pop();
                }
                gsm7::decode(&s)
            }
            Err(_) => text.to_owned(),
        },
        _ => text.to_owned(),
    }
}

/// Hex digits only and not a plausible number answer (a balance "1234" is text).
fn looks_packed(text: &str) -> bool {
    text.len() >= 8 || text.bytes().any(|b| b.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms::pdu::to_hex;

    #[test]
    fn plain_packed_and_ucs2() {
        assert_eq!(decode("Balance: 5,00 EUR", Some(15)), "Balance: 5,00 EUR");
        let packed = to_hex(&gsm7::pack(
            &gsm7::encode("Guthaben: 12,34 EUR").unwrap(),
            0,
        ));
        assert_eq!(decode(&packed, Some(15)), "Guthaben: 12,34 EUR");
        let ucs2: Vec<u8> = "Баланс 5 ₽"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        assert_eq!(decode(&to_hex(&ucs2), Some(72)), "Баланс 5 ₽");
        assert_eq!(decode("1234", Some(15)), "1234");
        assert_eq!(decode("", None), "");
    }
}
