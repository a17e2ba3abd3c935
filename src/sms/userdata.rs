//! The user data of a short message (3GPP TS 23.040 §9.2.3.24): the user data header with its
//! concatenation information elements, and the text in the alphabet the data coding scheme
//! names (TS 23.038 §4): GSM 7-bit, 8-bit data or UCS-2 (read as UTF-16, so that emoji sent as
//! surrogate pairs survive).

use super::gsm7;

/// The alphabet of a message, from its data coding scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    /// GSM 7-bit default alphabet, packed.
    Gsm7,
    /// 8-bit data (shown as Latin-1).
    Eight,
    /// UCS-2 / UTF-16 big-endian.
    Ucs2,
}

impl Alphabet {
    /// The alphabet of a data coding scheme (TS 23.038 §4); reserved values read as GSM 7-bit.
    pub fn of_dcs(dcs: u8) -> Alphabet {
        match dcs >> 4 {
            // General data coding (compressed text is not supported: read as 8-bit).
            0x0..=0x7 => match (dcs >> 2) & 0x03 {
                0 => Alphabet::Gsm7,
                1 => Alphabet::Eight,
                2 => Alphabet::Ucs2,
                _ => Alphabet::Gsm7,
            },
            0xC | 0xD => Alphabet::Gsm7,
            0xE => Alphabet::Ucs2,
            0xF => {
                if dcs & 0x04 == 0 {
                    Alphabet::Gsm7
                } else {
                    Alphabet::Eight
                }
            }
            _ => Alphabet::Gsm7,
        }
    }

    /// The data coding scheme for sending (class not given).
    pub fn dcs(self) -> u8 {
        match self {
            Alphabet::Gsm7 => 0x00,
            Alphabet::Eight => 0x04,
            Alphabet::Ucs2 => 0x08,
        }
    }

    /// A short name for the dashboard and records.
    pub fn name(self) -> &'static str {
        match self {
            Alphabet::Gsm7 => "GSM-7",
            Alphabet::Eight => "8-bit",
            Alphabet::Ucs2 => "UCS-2",
        }
    }
}

/// Where a part belongs in a concatenated message (IEI 0x00 or 0x08).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Concat {
    /// Reference number (8 or 16 bits).
    pub reference: u16,
    /// Number of parts.
    pub total: u8,
    /// This part's number, from 1.
    pub seq: u8,
}

/// What the user data carries: text (already decoded for GSM 7-bit and 8-bit) or UCS-2 octets,
/// kept as octets so that a surrogate pair split across two parts is joined before decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Decoded text.
    Text(String),
    /// UTF-16BE octets.
    Ucs2(Vec<u8>),
}

/// Decoded user data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserData {
    /// Concatenation information, when the message is a part.
    pub concat: Option<Concat>,
    /// The content.
    pub payload: Payload,
}

/// Errors in user data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    /// The header claims more octets than there are.
    #[error("user data header longer than the user data")]
    Header,
}

/// Decodes user data: `udl` as the PDU gives it (septets for GSM 7-bit, octets otherwise),
/// `ud` the octets after UDL, `udhi` the header indicator of the first octet.
pub fn decode(
    alphabet: Alphabet,
    udl: u8,
    ud: &[u8],
    udhi: bool,
) -> Result<UserData, UserDataError> {
    let (concat, header_octets) = if udhi {
        let udhl = usize::from(*ud.first().ok_or(UserDataError::Header)?);
        let header = ud.get(1..1 + udhl).ok_or(UserDataError::Header)?;
        (parse_concat(header), udhl + 1)
    } else {
        (None, 0)
    };
    let payload = match alphabet {
        Alphabet::Gsm7 => {
            let header_septets = (header_octets * 8).div_ceil(7);
            let all = gsm7::unpack(ud, usize::from(udl), 0);
            Payload::Text(gsm7::decode(all.get(header_septets..).unwrap_or_default()))
        }
        Alphabet::Eight => {
            let end = usize::from(udl).min(ud.len());
            let body = ud.get(header_octets..end).unwrap_or_default();
            Payload::Text(body.iter().map(|&b| char::from(b)).collect())
        }
        Alphabet::Ucs2 => {
            let end = usize::from(udl).min(ud.len());
            Payload::Ucs2(ud.get(header_octets..end).unwrap_or_default().to_vec())
        }
    };
    Ok(UserData { concat, payload })
}

/// The concatenation element of a user data header, if any.
fn parse_concat(mut h: &[u8]) -> Option<Concat> {
    let mut found = None;
    while let [iei, len, rest @ ..] = h {
        let len = usize::from(*len);
        let Some(data) = rest.get(..len) else { break };
        match (iei, data) {
            (0x00, [r, total, seq]) if *total > 0 && *seq > 0 => {
                found = Some(Concat {
                    reference: u16::from(*r),
                    total: *total,
                    seq: *seq,
                });
            }
            (0x08, [hi, lo, total, seq]) if *total > 0 && *seq > 0 => {
                found = Some(Concat {
                    reference: u16::from_be_bytes([*hi, *lo]),
                    total: *total,
                    seq: *seq,
                });
            }
            _ => {}
        }
        h = rest.get(len..).unwrap_or_default();
    }
    found
}

/// UTF-16BE octets as text; an unpaired surrogate (or an odd last octet) becomes U+FFFD.
pub fn ucs2_text(octets: &[u8]) -> String {
    let units = octets
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]));
    let mut s: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if octets.len() % 2 == 1 {
        s.push(char::REPLACEMENT_CHARACTER);
    }
    s
}

/// Joins the payloads of a message's parts, in order, into its text.
pub fn join(parts: &[&Payload]) -> String {
    let mut out = String::new();
    let mut ucs2: Vec<u8> = Vec::new();
    for p in parts {
        match p {
            Payload::Ucs2(o) => ucs2.extend_from_slice(o),
            Payload::Text(t) => {
                if !ucs2.is_empty() {
                    out.push_str(&ucs2_text(&ucs2));
                    ucs2.clear();
                }
                out.push_str(t);
            }
        }
    }
    out.push_str(&ucs2_text(&ucs2));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcs_groups() {
        assert_eq!(Alphabet::of_dcs(0x00), Alphabet::Gsm7);
        assert_eq!(Alphabet::of_dcs(0x08), Alphabet::Ucs2);
        assert_eq!(Alphabet::of_dcs(0x18), Alphabet::Ucs2);
        assert_eq!(Alphabet::of_dcs(0x04), Alphabet::Eight);
        assert_eq!(Alphabet::of_dcs(0xF0), Alphabet::Gsm7);
        assert_eq!(Alphabet::of_dcs(0xF4), Alphabet::Eight);
        assert_eq!(Alphabet::of_dcs(0xE0), Alphabet::Ucs2);
    }

    #[test]
    fn surrogate_pair_split_across_parts_is_joined() {
        let a = Payload::Ucs2(vec![0x00, 0x41, 0xD8, 0x3D]);
        let b = Payload::Ucs2(vec![0xDE, 0x00, 0x00, 0x42]);
        assert_eq!(join(&[&a, &b]), "A😀B");
        assert_eq!(ucs2_text(&[0xD8, 0x3D, 0x00]), "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn concat_header_8_and_16_bit() {
        // UDHL 5, IEI 00 len 3 ref 0x2A total 3 seq 2, then "Hi" in 7-bit with 1 fill bit.
        let mut ud = vec![0x05, 0x00, 0x03, 0x2A, 0x03, 0x02];
        let s = gsm7::encode("Hi").unwrap();
        ud.extend(gsm7::pack(&s, 1));
        let d = decode(Alphabet::Gsm7, 7 + 2, &ud, true).unwrap();
        assert_eq!(
            d.concat,
            Some(Concat {
                reference: 0x2A,
                total: 3,
                seq: 2
            })
        );
        assert_eq!(d.payload, Payload::Text("Hi".into()));
        let ud = [0x06, 0x08, 0x04, 0x12, 0x34, 0x02, 0x01, 0x00, 0x41];
        let d = decode(Alphabet::Ucs2, 9, &ud, true).unwrap();
        assert_eq!(d.concat.unwrap().reference, 0x1234);
        assert_eq!(d.payload, Payload::Ucs2(vec![0x00, 0x41]));
        assert!(decode(Alphabet::Ucs2, 9, &[0x09, 0x00], true).is_err());
    }
}
