//! Caller ID: the message an exchange sends between the first and second ring, decoded into
//! the caller's number and name, or why they are absent.
//!
//! - FSK (Bell 202 or V.23, [`super::fsk`]): an SDMF (type 0x04: 8 date digits then the
//!   number, or `O`/`P`) or MDMF (type 0x80: parameters — 0x02 number, 0x07 name, 0x04/0x08
//!   reason for absence `O` unavailable / `P` private) message, with a length byte and a
//!   checksum byte that makes the sum of all bytes zero. [`find_message`] scans the bytes a
//!   UART produced (the seizure signal decodes into noise bytes before the message).
//! - DTMF (ETSI EN 300 659 annex, [`parse_dtmf`]): `A<number>C` (or `#`-terminated), `D<number>C`,
//!   and absence codes `B00C`/`B10C` or `D1#`/`D2#`/`D3#`.

/// The caller, as far as the line told us.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Caller {
    /// The number (digits, maybe a leading `+`), when presented.
    pub number: Option<String>,
    /// The name, when presented.
    pub name: Option<String>,
    /// Why there is no number, when the exchange said.
    pub absence: Option<Absence>,
}

/// Why the number is not presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Absence {
    /// The caller withheld it (private, restricted).
    Withheld,
    /// Not available (out of area, international, technical reasons).
    Unavailable,
}

fn absence(code: u8) -> Absence {
    match code {
        b'P' | b'p' => Absence::Withheld,
        _ => Absence::Unavailable,
    }
}

fn text(bytes: &[u8]) -> Option<String> {
    let s: String = bytes
        .iter()
        .filter(|b| b.is_ascii_graphic() || **b == b' ')
        .map(|&b| b as char)
        .collect();
    let s = s.trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// Finds and decodes the first caller-ID message with a valid checksum in `bytes`.
pub fn find_message(bytes: &[u8]) -> Option<Caller> {
    (0..bytes.len()).find_map(|i| parse_at(bytes.get(i..)?))
}

fn parse_at(b: &[u8]) -> Option<Caller> {
    let (&kind, rest) = b.split_first()?;
    if kind != 0x04 && kind != 0x80 {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let len = usize::from(len);
    let body = rest.get(..len)?;
    let sum = rest.get(len)?;
    let total = body
        .iter()
        .fold(kind.wrapping_add(len as u8), |a, &x| a.wrapping_add(x))
        .wrapping_add(*sum);
    if total != 0 || len == 0 {
        return None;
    }
    let mut c = Caller::default();
    if kind == 0x04 {
        let number = body.get(8..).unwrap_or_default();
        match number {
            [x] if x.is_ascii_alphabetic() => c.absence = Some(absence(*x)),
            _ => c.number = text(number),
        }
        return Some(c);
    }
    let mut p = body;
    while let [t, l, tail @ ..] = p {
        let l = usize::from(*l);
        let v = tail.get(..l)?;
        match t {
            0x02 => c.number = text(v),
            0x07 => c.name = text(v),
            0x04 => c.absence = v.first().map(|&x| absence(x)),
            0x08 if c.name.is_none() && c.absence.is_none() && c.number.is_none() => {
                c.absence = v.first().map(|&x| absence(x))
            }
            _ => {}
        }
        p = tail.get(l..)?;
    }
    Some(c)
}

/// Decodes a DTMF caller-ID digit string; `None` when it is not one.
pub fn parse_dtmf(digits: &str) -> Option<Caller> {
    let d = digits.trim().to_ascii_uppercase();
    let mut c = Caller::default();
    let body = d
        .strip_suffix('C')
        .or_else(|| d.strip_suffix('#'))
        .unwrap_or(&d);
    let first = body.chars().next()?;
    if first.is_ascii_digit() {
        // "<number>#", the variant without a start marker.
        c.number = Some(body.chars().take_while(|c| c.is_ascii_digit()).collect());
        return d.ends_with('#').then_some(c);
    }
    // Split into fields: a letter and the digits after it.
    let mut fields: Vec<(char, String)> = Vec::new();
    for ch in body.chars() {
        if ch.is_ascii_digit() || ch == '*' {
            match fields.last_mut() {
                Some((_, v)) => v.push(ch),
                None => return None,
            }
        } else if matches!(ch, 'A' | 'B' | 'D') {
            fields.push((ch, String::new()));
        } else {
            return None;
        }
    }
    let hash_variant = d.ends_with('#');
    for (tag, v) in fields {
        match (tag, hash_variant) {
            ('A', _) if !v.is_empty() => c.number = Some(v),
            ('D', true) => {
                c.absence = Some(if v == "1" {
                    Absence::Withheld
                } else {
                    Absence::Unavailable
                })
            }
            ('D', false) if c.number.is_none() && !v.is_empty() && first == 'D' => {
                c.number = Some(v)
            }
            ('B', _) => {
                c.absence = Some(if v == "10" {
                    Absence::Withheld
                } else {
                    Absence::Unavailable
                })
            }
            _ => {}
        }
    }
    Some(c)
}

/// Builds an MDMF caller-ID message (for tests and the simulator's own checks).
pub fn mdmf(number: Option<&str>, name: Option<&str>, absence: Option<u8>) -> Vec<u8> {
    let mut body = vec![0x01, 8];
    body.extend_from_slice(b"12031000");
    if let Some(n) = number {
        body.push(0x02);
        body.push(n.len() as u8);
        body.extend_from_slice(n.as_bytes());
    }
    if let Some(a) = absence {
        body.extend_from_slice(&[0x04, 1, a]);
    }
    if let Some(n) = name {
        body.push(0x07);
        body.push(n.len() as u8);
        body.extend_from_slice(n.as_bytes());
    }
    let mut m = vec![0x80, body.len() as u8];
    m.extend_from_slice(&body);
    let sum = m.iter().fold(0u8, |a, &x| a.wrapping_add(x));
    m.push(0u8.wrapping_sub(sum));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mdmf_message_after_noise_bytes_gives_number_and_name() {
        let mut bytes = vec![0x55, 0x55, 0xaa, 0x04, 0x80];
        bytes.extend(mdmf(Some("0301234567"), Some("ALICE"), None));
        let c = find_message(&bytes).unwrap();
        assert_eq!(c.number.as_deref(), Some("0301234567"));
        assert_eq!(c.name.as_deref(), Some("ALICE"));
        assert_eq!(c.absence, None);
    }

    #[test]
    fn a_bad_checksum_is_no_message_and_withheld_is_told_apart() {
        let mut m = mdmf(Some("123"), None, None);
        let last = m.len() - 1;
        m[last] ^= 1;
        assert_eq!(find_message(&m), None);
        let c = find_message(&mdmf(None, None, Some(b'P'))).unwrap();
        assert_eq!(c.absence, Some(Absence::Withheld));
        let c = find_message(&mdmf(None, None, Some(b'O'))).unwrap();
        assert_eq!(c.absence, Some(Absence::Unavailable));
    }

    #[test]
    fn sdmf_with_number_and_private() {
        let mk = |num: &[u8]| {
            let mut m = vec![0x04, (8 + num.len()) as u8];
            m.extend_from_slice(b"12031000");
            m.extend_from_slice(num);
            let s = m.iter().fold(0u8, |a, &x| a.wrapping_add(x));
            m.push(0u8.wrapping_sub(s));
            m
        };
        assert_eq!(
            find_message(&mk(b"2125551234")).unwrap().number.as_deref(),
            Some("2125551234")
        );
        assert_eq!(
            find_message(&mk(b"P")).unwrap().absence,
            Some(Absence::Withheld)
        );
    }

    #[test]
    fn dtmf_variants() {
        assert_eq!(
            parse_dtmf("A0301234567C").unwrap().number.as_deref(),
            Some("0301234567")
        );
        assert_eq!(
            parse_dtmf("D0301234567C").unwrap().number.as_deref(),
            Some("0301234567")
        );
        assert_eq!(parse_dtmf("A123#").unwrap().number.as_deref(), Some("123"));
        assert_eq!(parse_dtmf("123#").unwrap().number.as_deref(), Some("123"));
        assert_eq!(parse_dtmf("B10C").unwrap().absence, Some(Absence::Withheld));
        assert_eq!(
            parse_dtmf("B00C").unwrap().absence,
            Some(Absence::Unavailable)
        );
        assert_eq!(parse_dtmf("D1#").unwrap().absence, Some(Absence::Withheld));
        assert_eq!(
            parse_dtmf("D3#").unwrap().absence,
            Some(Absence::Unavailable)
        );
        assert_eq!(parse_dtmf(""), None);
        assert_eq!(parse_dtmf("X12"), None);
    }
}
