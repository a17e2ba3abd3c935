//! SMS TPDUs in the PDU mode of the modems (3GPP TS 27.005 §3, TS 23.040 §9.2): reading an
//! SMS-DELIVER or SMS-STATUS-REPORT as the modem gives it (hex, with the service centre address
//! in front), and writing an SMS-SUBMIT. Outside data: every length is checked, nothing panics.

use super::gsm7;
use super::userdata::{self, Alphabet, Concat, Payload};

/// Errors in a PDU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    /// Not hexadecimal.
    #[error("PDU is not hexadecimal")]
    Hex,
    /// Shorter than its fields say.
    #[error("PDU truncated in {0}")]
    Truncated(&'static str),
    /// A message type this code does not read (e.g. SMS-SUBMIT received).
    #[error("unsupported message type {0}")]
    Type(u8),
    /// Bad user data.
    #[error(transparent)]
    UserData(#[from] userdata::UserDataError),
}

/// A received message (part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// The sender: `+<digits>` when international, digits otherwise, or an alphanumeric name.
    pub sender: String,
    /// Service centre time stamp as `YYMMDDhhmmss±zz` (quarters of an hour).
    pub scts: String,
    /// Alphabet of the text.
    pub alphabet: Alphabet,
    /// Concatenation, when this is one part of a longer message.
    pub concat: Option<Concat>,
    /// The content.
    pub payload: Payload,
}

/// A status report for a message we sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// The message reference of the SMS-SUBMIT it reports on.
    pub reference: u8,
    /// The recipient.
    pub recipient: String,
    /// TP-Status (0x00–0x1F: delivered; 0x20–0x3F: still trying; above: failed).
    pub status: u8,
}

impl StatusReport {
    /// Whether the message reached the recipient.
    pub fn delivered(&self) -> bool {
        self.status < 0x20
    }

    /// Whether the network has given up.
    pub fn failed(&self) -> bool {
        self.status >= 0x40
    }
}

/// A PDU read from the modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message (part).
    Deliver(Deliver),
    /// A status report.
    Status(StatusReport),
}

/// Decodes hex text into octets.
pub fn from_hex(hex: &str) -> Result<Vec<u8>, PduError> {
    let hex = hex.trim().as_bytes();
    if !hex.len().is_multiple_of(2) {
        return Err(PduError::Hex);
    }
    hex.chunks_exact(2)
        .map(|p| {
            let d = |c: u8| (c as char).to_digit(16).ok_or(PduError::Hex);
            Ok((d(p[0])? * 16 + d(p[1])?) as u8)
        })
        .collect()
}

/// Octets as upper-case hex.
pub fn to_hex(octets: &[u8]) -> String {
    octets.iter().map(|b| format!("{b:02X}")).collect()
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self, what: &'static str) -> Result<u8, PduError> {
        let v = *self.data.get(self.pos).ok_or(PduError::Truncated(what))?;
        self.pos += 1;
        Ok(v)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PduError> {
        let v = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or(PduError::Truncated(what))?;
        self.pos += n;
        Ok(v)
    }

    fn rest(&self) -> &'a [u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    /// An address field (TS 23.040 §9.1.2.5): length in digits, type, semi-octets.
    fn address(&mut self, what: &'static str) -> Result<String, PduError> {
        let digits = usize::from(self.u8(what)?);
        let toa = self.u8(what)?;
        let raw = self.take(digits.div_ceil(2), what)?;
        Ok(read_address(toa, digits, raw))
    }
}

fn read_address(toa: u8, digits: usize, raw: &[u8]) -> String {
    if toa & 0x70 == 0x50 {
        // Alphanumeric, GSM 7-bit packed: `digits` counts semi-octets.
        let septets = digits * 4 / 7;
        return gsm7::decode(&gsm7::unpack(raw, septets, 0));
    }
    let mut s = String::new();
    if toa & 0x70 == 0x10 {
        s.push('+');
    }
    s.push_str(&semi_octets(raw, digits));
    s
}

fn semi_octets(raw: &[u8], count: usize) -> String {
    const DIGITS: &[u8; 16] = b"0123456789*#abc?";
    raw.iter()
        .flat_map(|b| [b & 0x0F, b >> 4])
        .take(count)
        .map(|n| char::from(DIGITS[usize::from(n)]))
        .collect()
}

/// Decodes a PDU as `AT+CMGR`/`AT+CMGL`/`+CMT` give it (with the SMSC address in front).
pub fn decode(hex: &str) -> Result<Incoming, PduError> {
    let octets = from_hex(hex)?;
    let mut r = Reader {
        data: &octets,
        pos: 0,
    };
    let sca_len = usize::from(r.u8("SMSC address")?);
    r.take(sca_len, "SMSC address")?;
    decode_tpdu(&mut r)
}

fn decode_tpdu(r: &mut Reader<'_>) -> Result<Incoming, PduError> {
    let first = r.u8("first octet")?;
    match first & 0x03 {
        0x00 => {
            let sender = r.address("originating address")?;
            let _pid = r.u8("protocol identifier")?;
            let dcs = r.u8("data coding scheme")?;
            let scts = scts(r.take(7, "time stamp")?);
            let udl = r.u8("user data length")?;
            let alphabet = Alphabet::of_dcs(dcs);
            let ud = userdata::decode(alphabet, udl, r.rest(), first & 0x40 != 0)?;
            Ok(Incoming::Deliver(Deliver {
                sender,
                scts,
                alphabet,
                concat: ud.concat,
                payload: ud.payload,
            }))
        }
        0x02 => {
            let reference = r.u8("message reference")?;
            let recipient = r.address("recipient address")?;
            r.take(7, "time stamp")?;
            r.take(7, "discharge time")?;
            let status = r.u8("status")?;
            Ok(Incoming::Status(StatusReport {
                reference,
                recipient,
                status,
            }))
        }
        t => Err(PduError::Type(t)),
    }
}

fn scts(raw: &[u8]) -> String {
    let d = |b: u8| (b & 0x07) * 10 + (b >> 4);
    let mut s: String = raw
        .iter()
        .take(6)
        .map(|&b| format!("{:02}", (b & 0x0F) * 10 + (b >> 4)))
        .collect();
    if let Some(&tz) = raw.get(6) {
        let sign = if tz & 0x08 != 0 { '-' } else { '+' };
        s.push(sign);
        s.push_str(&format!("{:02}", d(tz)));
    }
    s
}

/// One SMS-SUBMIT ready for `AT+CMGS=<length>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// Hex of SMSC length octet `00` (the SIM's service centre) and the TPDU.
    pub hex: String,
    /// The TPDU length for `AT+CMGS`.
    pub tpdu_len: usize,
}

/// A text cut into the parts of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// The alphabet (GSM 7-bit when every character has one, else UCS-2).
    pub alphabet: Alphabet,
    /// Each part's content: septets (GSM 7-bit) or UTF-16BE octets.
    pub parts: Vec<Vec<u8>>,
}

/// Septets or UTF-16 units in one message without a header, and per part with an 8-bit
/// concatenation header.
const GSM7_SINGLE: usize = 160;
const GSM7_PART: usize = 153;
const UCS2_SINGLE: usize = 70;
const UCS2_PART: usize = 67;

/// Cuts `text` into parts: never an escape sequence or a surrogate pair across two parts.
pub fn segment(text: &str) -> Segments {
    if let Some(septets) = gsm7::encode(text) {
        if septets.len() <= GSM7_SINGLE {
            return Segments {
                alphabet: Alphabet::Gsm7,
                parts: vec![septets],
            };
        }
        let mut parts = Vec::new();
        let mut cur = Vec::new();
        for c in text.chars() {
            let Some((s, n)) = gsm7::septets_of(c) else {
                continue;
            };
            if cur.len() + n > GSM7_PART {
                parts.push(std::mem::take(&mut cur));
            }
            cur.extend_from_slice(s.get(..n).unwrap_or_default());
        }
        parts.push(cur);
        return Segments {
            alphabet: Alphabet::Gsm7,
            parts,
        };
    }
    let units: usize = text.chars().map(char::len_utf16).sum();
    let mut parts = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let limit = if units <= UCS2_SINGLE {
        UCS2_SINGLE
    } else {
        UCS2_PART
    };
    for c in text.chars() {
        let mut buf = [0u16; 2];
        let enc = c.encode_utf16(&mut buf);
        if cur.len() / 2 + enc.len() > limit {
            parts.push(std::mem::take(&mut cur));
        }
        for u in enc.iter() {
            cur.extend_from_slice(&u.to_be_bytes());
        }
    }
    parts.push(cur);
    Segments {
        alphabet: Alphabet::Ucs2,
        parts,
    }
}

/// The number of parts and the alphabet `text` needs (for the send form).
pub fn part_count(text: &str) -> (usize, Alphabet) {
    let s = segment(text);
    (s.parts.len(), s.alphabet)
}

/// Errors when writing an SMS-SUBMIT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The number has characters other than digits (and a leading `+`).
    #[error("{0:?} is not a number an SMS can go to")]
    Number(String),
    /// More than 255 parts.
    #[error("message too long")]
    TooLong,
}

/// The SMS-SUBMIT PDUs of `text` to `number` (`+<E.164>` or national digits). `reference` is
/// the concatenation reference (16-bit header when above 255); the modem sets each part's
/// message reference (TP-MR 0 here) and names it in its `+CMGS` answer. Status reports are requested; validity is relative, 7 days.
pub fn submit(number: &str, text: &str, reference: u16) -> Result<Vec<Submit>, SubmitError> {
    let (toa, digits) = match number.strip_prefix('+') {
        Some(d) => (0x91u8, d),
        None => (0x81u8, number),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SubmitError::Number(number.to_owned()));
    }
    let mut da = vec![digits.len() as u8, toa];
    let bytes = digits.as_bytes();
    for pair in bytes.chunks(2) {
        let lo = pair[0] - b'0';
        let hi = pair.get(1).map_or(0x0F, |c| c - b'0');
        da.push(hi << 4 | lo);
    }
    let seg = segment(text);
    let total = seg.parts.len();
    if total > 255 {
        return Err(SubmitError::TooLong);
    }
    let mut out = Vec::with_capacity(total);
    for (i, part) in seg.parts.iter().enumerate() {
        let header: Vec<u8> = if total == 1 {
            Vec::new()
        } else if reference > 0xFF {
            let r = reference.to_be_bytes();
            vec![0x06, 0x08, 0x04, r[0], r[1], total as u8, (i + 1) as u8]
        } else {
            vec![
                0x05,
                0x00,
                0x03,
                reference as u8,
                total as u8,
                (i + 1) as u8,
            ]
        };
        // SMS-SUBMIT, VPF relative, SRR, UDHI when there is a header.
        let mut first = 0x01 | 0x10 | 0x20;
        if !header.is_empty() {
            first |= 0x40;
        }
        let mut tpdu = vec![first, 0x00];
        tpdu.extend_from_slice(&da);
        tpdu.push(0x00);
        tpdu.push(seg.alphabet.dcs());
        tpdu.push(0xAD); // 7 days
        match seg.alphabet {
            Alphabet::Gsm7 => {
                let header_bits = header.len() * 8;
                let fill = ((7 - header_bits % 7) % 7) as u32;
                let udl = (header_bits + fill as usize) / 7 + part.len();
                tpdu.push(udl as u8);
                tpdu.extend_from_slice(&header);
                tpdu.extend(gsm7::pack(part, fill));
            }
            Alphabet::Ucs2 | Alphabet::Eight => {
                tpdu.push((header.len() + part.len()) as u8);
                tpdu.extend_from_slice(&header);
                tpdu.extend_from_slice(part);
            }
        }
        out.push(Submit {
            hex: format!("00{}", to_hex(&tpdu)),
            tpdu_len: tpdu.len(),
        });
    }
    Ok(out)
}

/// The text of a single (unconcatenated) payload.
pub fn text_of(p: &Payload) -> String {
    userdata::join(&[p])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_from_the_usual_example() {
        // SMS-DELIVER "hellohello" from +27381000015 (a widely used decoding example).
        let pdu = "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37";
        let Incoming::Deliver(d) = decode(pdu).unwrap() else {
            panic!()
        };
        assert_eq!(d.sender, "27838890001");
        assert_eq!(text_of(&d.payload), "hellohello");
        assert_eq!(d.scts, "990329151659+08");
        assert!(d.concat.is_none());
    }

    #[test]
    fn international_sender_and_ucs2() {
        // From +491701234567, UCS-2 "Привет 😀".
        let mut ud = Vec::new();
        for u in "Привет 😀".encode_utf16() {
            ud.extend_from_slice(&u.to_be_bytes());
        }
        let pdu = format!(
            "0004 0C91 947110325476 00 08 52211030000040 {:02X}{}",
            ud.len(),
            to_hex(&ud)
        )
        .replace(' ', "");
        let Incoming::Deliver(d) = decode(&pdu).unwrap() else {
            panic!()
        };
        assert_eq!(d.sender, "+491701234567");
        assert_eq!(d.alphabet, Alphabet::Ucs2);
        assert_eq!(text_of(&d.payload), "Привет 😀");
        assert_eq!(d.scts, "251201030000+04");
    }

    #[test]
    fn alphanumeric_sender() {
        // "Bank" packed in 7 bits: 4 septets = 28 bits → 7 semi-octets.
        let name = gsm7::pack(&gsm7::encode("Bank").unwrap(), 0);
        let pdu =
            format!("0004 07D0 {} 0000 52211030000040 02 C834", to_hex(&name)).replace(' ', "");
        let Incoming::Deliver(d) = decode(&pdu).unwrap() else {
            panic!()
        };
        assert_eq!(d.sender, "Bank");
        assert_eq!(text_of(&d.payload), "Hi");
    }

    #[test]
    fn status_report() {
        let pdu = "0006 2A 0C91 947110325476 52211030000040 52211030001040 00".replace(' ', "");
        let Incoming::Status(s) = decode(&pdu).unwrap() else {
            panic!()
        };
        assert_eq!(s.reference, 0x2A);
        assert_eq!(s.recipient, "+491701234567");
        assert!(s.delivered());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "0",
            "zz",
            "00",
            "0004",
            "00040C91",
            "0003",
            "07917283010010F504",
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_respect_limits() {
        assert_eq!(part_count("hi"), (1, Alphabet::Gsm7));
        assert_eq!(part_count(&"a".repeat(160)), (1, Alphabet::Gsm7));
        assert_eq!(part_count(&"a".repeat(161)), (2, Alphabet::Gsm7));
        assert_eq!(part_count(&"€".repeat(80)), (1, Alphabet::Gsm7));
        assert_eq!(part_count(&"€".repeat(81)), (2, Alphabet::Gsm7));
        assert_eq!(part_count(&"я".repeat(70)), (1, Alphabet::Ucs2));
        assert_eq!(part_count(&"я".repeat(71)), (2, Alphabet::Ucs2));
        // An emoji is two units and never split.
        let s = segment(&format!("{}😀{}", "я".repeat(66), "я".repeat(5)));
        assert_eq!(s.parts.len(), 2);
        assert_eq!(s.parts[0].len(), 132);
    }

    #[test]
    fn submit_round_trips_through_a_deliver_reading() {
        let text = format!("{} Привет 😀", "Ω".repeat(70));
        let pdus = submit("+491701234567", &text, 0x1F).unwrap();
        assert_eq!(pdus.len(), 2);
        assert_eq!(pdus[0].tpdu_len * 2 + 2, pdus[0].hex.len());
        let single = submit("01701234567", "hellohello", 1).unwrap();
        assert_eq!(single.len(), 1);
        // 00 | 31 00 0B 81 1007214365F7 00 00 AD 0A E8329BFD4697D9EC37
        assert_eq!(
            single[0].hex,
            "0031000B811007214365F70000AD0AE8329BFD4697D9EC37"
        );
        assert!(submit("+49abc", "x", 1).is_err());
    }
}
