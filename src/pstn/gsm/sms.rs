//! The SMS and USSD answers of the AT command set in PDU mode (3GPP TS 27.005 §3.4.2,
//! §3.4.3, §3.5.1; TS 27.007 §7.15), read from a response's lines: which PDUs a `AT+CMGL`
//! or `AT+CMGR` gave, the message reference of `+CMGS`, and the `AT+CUSD` command.

use super::at::result::params_after;

/// The (index, PDU) pairs of an `AT+CMGL=4` answer: `+CMGL: <index>,<stat>,[<alpha>],<len>`
/// each followed by the PDU line.
pub fn parse_list(lines: &[String]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut index: Option<u32> = None;
    for l in lines {
        if let Some(p) = params_after(l, "+CMGL:") {
            index = p.first().and_then(|s| s.trim().parse().ok());
        } else if let Some(i) = index.take() {
            if is_hex(l) {
                out.push((i, l.trim().to_owned()));
            }
        }
    }
    out
}

/// The PDU of an `AT+CMGR=<index>` answer (`+CMGR: <stat>,[<alpha>],<len>` then the PDU);
/// `None` for an empty slot.
pub fn parse_read(lines: &[String]) -> Option<String> {
    let mut seen = false;
    for l in lines {
        if l.starts_with("+CMGR:") {
            seen = true;
        } else if seen && is_hex(l) {
            return Some(l.trim().to_owned());
        }
    }
    None
}

/// The message reference of a `+CMGS: <mr>` answer.
pub fn parse_sent(lines: &[String]) -> Option<u8> {
    lines
        .iter()
        .find_map(|l| params_after(l, "+CMGS:"))
        .and_then(|p| p.first().and_then(|s| s.trim().parse().ok()))
}

/// `AT+CUSD=1,"<code>",15`, or `None` when the code has characters USSD does not use.
pub fn ussd_command(code: &str) -> Option<String> {
    let ok = !code.is_empty()
        && code.len() <= 160
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
    ok.then(|| format!("AT+CUSD=1,\"{code}\",15"))
}

fn is_hex(l: &str) -> bool {
    let t = l.trim();
    !t.is_empty() && t.len().is_multiple_of(2) && t.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn list_read_sent() {
        let l = v(&[
            "+CMGL: 1,0,,23",
            "0791AB",
            "+CMGL: 4,1,,5",
            "0011",
            "+CMGL: x,1,,5",
            "00",
        ]);
        assert_eq!(
            parse_list(&l),
            vec![(1, "0791AB".into()), (4, "0011".into())]
        );
        assert_eq!(
            parse_read(&v(&["+CMGR: 0,,23", "0791AB"])),
            Some("0791AB".into())
        );
        assert_eq!(parse_read(&v(&["+CMGR: 0,,0"])), None);
        assert_eq!(parse_sent(&v(&["+CMGS: 42"])), Some(42));
        assert_eq!(parse_sent(&v(&["+CMGS: 420"])), None);
        assert_eq!(
            ussd_command("*100#").as_deref(),
            Some("AT+CUSD=1,\"*100#\",15")
        );
        assert_eq!(ussd_command("*100#\",1"), None);
    }
}
