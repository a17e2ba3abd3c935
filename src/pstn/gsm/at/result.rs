//! Classification of the lines a modem sends: final results that end a command, unsolicited
//! result codes (URCs) with their parameters parsed, and everything else (information lines
//! that belong to the command in flight).
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::fmt;

/// A final result code: the line that ends a command's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalResult {
    /// `OK`.
    Ok,
    /// `CONNECT` (data calls; also ends a command).
    Connect,
    /// `ERROR`.
    Error,
    /// `+CME ERROR: <n>` (equipment error; numeric with `AT+CMEE=1`, text with `=2`).
    CmeError(String),
    /// `+CMS ERROR: <n>` (SMS service error).
    CmsError(String),
    /// `NO CARRIER`.
    NoCarrier,
    /// `BUSY`.
    Busy,
    /// `NO ANSWER`.
    NoAnswer,
    /// `NO DIALTONE` (also `NO DIAL TONE`).
    NoDialtone,
}

impl FinalResult {
    /// Whether the command succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, FinalResult::Ok | FinalResult::Connect)
    }

    /// Parses a final result line, or `None` if the line is not one.
    pub fn parse(line: &str) -> Option<FinalResult> {
        let l = line.trim();
        Some(match l {
            "OK" | "0" => FinalResult::Ok,
            // Huawei firmware answers unknown commands with its own words.
            "ERROR" | "4" | "COMMAND NOT SUPPORT" | "TOO MANY PARAMETERS" => FinalResult::Error,
            "NO CARRIER" | "3" => FinalResult::NoCarrier,
            "BUSY" | "7" => FinalResult::Busy,
            "NO ANSWER" | "8" => FinalResult::NoAnswer,
            "NO DIALTONE" | "NO DIAL TONE" | "6" => FinalResult::NoDialtone,
            _ if l == "CONNECT" || l.starts_with("CONNECT ") => FinalResult::Connect,
            _ => {
                if let Some(rest) = l.strip_prefix("+CME ERROR:") {
                    FinalResult::CmeError(rest.trim().to_string())
                } else if let Some(rest) = l.strip_prefix("+CMS ERROR:") {
                    FinalResult::CmsError(rest.trim().to_string())
                } else {
                    return None;
                }
            }
        })
    }
}

impl fmt::Display for FinalResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FinalResult::Ok => f.write_str("OK"),
            FinalResult::Connect => f.write_str("CONNECT"),
            FinalResult::Error => f.write_str("ERROR"),
            FinalResult::CmeError(e) => write!(f, "+CME ERROR: {e}"),
            FinalResult::CmsError(e) => write!(f, "+CMS ERROR: {e}"),
            FinalResult::NoCarrier => f.write_str("NO CARRIER"),
            FinalResult::Busy => f.write_str("BUSY"),
            FinalResult::NoAnswer => f.write_str("NO ANSWER"),
            FinalResult::NoDialtone => f.write_str("NO DIALTONE"),
        }
    }
}

/// One entry of `+CLCC` (list current calls, 3GPP TS 27.007 §7.18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClccEntry {
    /// Call index (`idx`).
    pub index: u8,
    /// `true` for a mobile-terminated (incoming) call.
    pub incoming: bool,
    /// 0 active, 1 held, 2 dialling, 3 alerting, 4 incoming, 5 waiting.
    pub state: u8,
    /// 0 voice, 1 data, 2 fax.
    pub mode: u8,
    /// Remote number as the network gave it (may be empty).
    pub number: String,
    /// Type of address (129 national/unknown, 145 international).
    pub toa: Option<u8>,
}

/// An unsolicited result code with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Urc {
    /// `RING`.
    Ring,
    /// `+CRING: <type>` (extended ring, `AT+CRC=1`).
    Cring(String),
    /// `+CLIP: "<number>",<type>[,…,<validity>]`: the caller's number.
    Clip {
        /// The number as sent by the network (not normalised).
        number: String,
        /// Type of address: 145 = international (leading `+`), 129 = unknown/national.
        toa: Option<u8>,
        /// CLI validity: 0 valid, 1 withheld, 2 not available.
        validity: Option<u8>,
    },
    /// Huawei `^ORIG: <idx>,<type>`: an outgoing call was originated.
    Orig { index: u8, call_type: u8 },
    /// Huawei `^CONF: <idx>`: the remote side is alerting (ring-back).
    Conf { index: u8 },
    /// Huawei `^CONN: <idx>,<type>`: the call is connected.
    Conn { index: u8, call_type: u8 },
    /// Huawei `^CEND: <idx>,<duration>,<end_status>[,<cc_cause>]`: the call ended.
    Cend {
        index: u8,
        duration_secs: u32,
        end_status: u16,
        /// Q.850 / 3GPP TS 24.008 cause, when the network gave one.
        cc_cause: Option<u16>,
    },
    /// `+CLCC: …` sent unsolicited (or outside a `AT+CLCC` response).
    Clcc(ClccEntry),
    /// Huawei `^RSSI: <n>` (0–31, 99 unknown).
    Rssi(u8),
    /// Huawei `^BOOT: …` (periodic keep-alive of the stick).
    Boot,
    /// Huawei `^MODE: <sys_mode>,<sub_mode>`.
    Mode(String),
    /// `+CREG: [<n>,]<stat>[,<lac>,<ci>]` sent unsolicited.
    Creg { stat: u8 },
    /// `+CMTI: "<mem>",<index>`: an SMS arrived.
    Cmti { mem: String, index: u32 },
    /// `+CMT: [<alpha>],<length>` and the PDU on the next line: an SMS handed over without
    /// being stored (direct delivery, `AT+CNMI=2,2,…`); it wants `AT+CNMA`.
    Cmt { pdu: String },
    /// `+CDS: <length>` and the PDU on the next line: a status report handed over directly
    /// (`AT+CNMI=…,1,…`); it wants `AT+CNMA`.
    Cds { pdu: String },
    /// `+CUSD: <m>[,"<text>",<dcs>]`: USSD answer.
    Cusd {
        m: u8,
        text: Option<String>,
        dcs: Option<u16>,
    },
    /// `NO CARRIER` outside a command (the call ended on modems without `^CEND`).
    NoCarrier,
    /// `BUSY` outside a command.
    Busy,
    /// `NO ANSWER` outside a command.
    NoAnswer,
    /// `NO DIALTONE` outside a command.
    NoDialtone,
    /// SIMCom/Quectel `VOICE CALL: BEGIN`.
    VoiceCallBegin,
    /// SIMCom/Quectel `VOICE CALL: END[: <duration>]`.
    VoiceCallEnd,
    /// Any other line that arrived outside a command (kept for the log).
    Other(String),
}

/// Splits AT parameters on commas outside double quotes; strips the quotes and spaces.
pub fn split_params(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

/// The parameters after `prefix` (e.g. `"+CSQ:"`), or `None` if the line has another prefix.
pub fn params_after(line: &str, prefix: &str) -> Option<Vec<String>> {
    let rest = line.strip_prefix(prefix)?;
    Some(split_params(rest))
}

fn num<T: std::str::FromStr>(p: &[String], i: usize) -> Option<T> {
    p.get(i).and_then(|s| s.trim().parse().ok())
}

/// Parses one `+CLCC:` line.
pub fn parse_clcc(line: &str) -> Option<ClccEntry> {
    let p = params_after(line, "+CLCC:")?;
    Some(ClccEntry {
        index: num(&p, 0)?,
        incoming: num::<u8>(&p, 1)? == 1,
        state: num(&p, 2)?,
        mode: num(&p, 3).unwrap_or(0),
        number: p.get(5).cloned().unwrap_or_default(),
        toa: num(&p, 6),
    })
}

/// Prefixes that mark a line as unsolicited when no command in flight expects them.
const URC_PREFIXES: &[&str] = &[
    "RING",
    "+CRING:",
    "+CLIP:",
    "^ORIG:",
    "^CONF:",
    "^CONN:",
    "^CEND:",
    "+CLCC:",
    "^RSSI:",
    "^BOOT:",
    "^MODE:",
    "+CREG:",
    "+CMTI:",
    "+CDSI:",
    "+CMT:",
    "+CDS:",
    "+CUSD:",
    "^SRVST:",
    "^SIMST:",
    "^DSFLOWRPT:",
    "+CSSI:",
    "+CSSU:",
    "^CSNR:",
    "^HCSQ:",
    "^STIN:",
    "VOICE CALL:",
    "MISSED_CALL:",
    "+CPIN:",
    "RDY",
    "SMS DONE",
    "PB DONE",
    "+QIND:",
    "^DSCI:",
];

/// Whether an unsolicited line is the header of a URC whose PDU is the next line (`+CMT:`,
/// `+CDS:`).
pub fn is_pdu_urc_header(line: &str) -> bool {
    line.starts_with("+CMT:") || line.starts_with("+CDS:")
}

/// The URC of a `+CMT:`/`+CDS:` header and the PDU line after it; [`Urc::Other`] when the PDU
/// line is not hex.
pub fn parse_pdu_urc(header: &str, pdu: &str) -> Urc {
    let pdu = pdu.trim();
    let hex = !pdu.is_empty()
        && pdu.len().is_multiple_of(2)
        && pdu.bytes().all(|b| b.is_ascii_hexdigit());
    match (hex, header.starts_with("+CDS:")) {
        (true, false) => Urc::Cmt {
            pdu: pdu.to_owned(),
        },
        (true, true) => Urc::Cds {
            pdu: pdu.to_owned(),
        },
        (false, _) => Urc::Other(format!("{header} / {pdu}")),
    }
}

/// Whether a line looks like a URC (by prefix).
pub fn is_urc_line(line: &str) -> bool {
    URC_PREFIXES.iter().any(|p| line.starts_with(p))
}

/// Parses a line known to be unsolicited. Unparseable parameters give [`Urc::Other`].
pub fn parse_urc(line: &str) -> Urc {
    parse_urc_inner(line).unwrap_or_else(|| Urc::Other(line.to_string()))
}

fn parse_urc_inner(line: &str) -> Option<Urc> {
    let l = line.trim();
    if l == "RING" {
        return Some(Urc::Ring);
    }
    if let Some(f) = FinalResult::parse(l) {
        return match f {
            FinalResult::NoCarrier => Some(Urc::NoCarrier),
            FinalResult::Busy => Some(Urc::Busy),
            FinalResult::NoAnswer => Some(Urc::NoAnswer),
            FinalResult::NoDialtone => Some(Urc::NoDialtone),
            _ => None,
        };
    }
    if let Some(p) = params_after(l, "+CRING:") {
        return Some(Urc::Cring(p.join(",")));
    }
    if let Some(p) = params_after(l, "+CLIP:") {
        return Some(Urc::Clip {
            number: p.first().cloned().unwrap_or_default(),
            toa: num(&p, 1),
            validity: num(&p, 5),
        });
    }
    if let Some(p) = params_after(l, "^ORIG:") {
        return Some(Urc::Orig {
            index: num(&p, 0)?,
            call_type: num(&p, 1).unwrap_or(0),
        });
    }
    if let Some(p) = params_after(l, "^CONF:") {
        return Some(Urc::Conf { index: num(&p, 0)? });
    }
    if let Some(p) = params_after(l, "^CONN:") {
        return Some(Urc::Conn {
            index: num(&p, 0)?,
            call_type: num(&p, 1).unwrap_or(0),
        });
    }
    if let Some(p) = params_after(l, "^CEND:") {
        return Some(Urc::Cend {
            index: num(&p, 0)?,
            duration_secs: num(&p, 1).unwrap_or(0),
            end_status: num(&p, 2).unwrap_or(0),
            cc_cause: num(&p, 3),
        });
    }
    if l.starts_with("+CLCC:") {
        return parse_clcc(l).map(Urc::Clcc);
    }
    if let Some(p) = params_after(l, "^RSSI:") {
        return Some(Urc::Rssi(num(&p, 0)?));
    }
    if l.starts_with("^BOOT:") {
        return Some(Urc::Boot);
    }
    if let Some(rest) = l.strip_prefix("^MODE:") {
        return Some(Urc::Mode(rest.trim().to_string()));
    }
    if let Some(p) = params_after(l, "+CREG:") {
        // Unsolicited form: `+CREG: <stat>[,<lac>,<ci>]`; the lac is quoted hex, so a second
        // numeric parameter means the solicited `<n>,<stat>` form.
        let stat = if p
            .get(1)
            .is_some_and(|s| s.chars().all(|c| c.is_ascii_digit()))
            && p.len() != 3
        {
            num(&p, 1)?
        } else {
            num(&p, 0)?
        };
        return Some(Urc::Creg { stat });
    }
    if let Some(p) = params_after(l, "+CMTI:") {
        return Some(Urc::Cmti {
            mem: p.first().cloned().unwrap_or_default(),
            index: num(&p, 1)?,
        });
    }
    // A status report stored on the SIM (`AT+CNMI=…,2,…`): read and deleted like a message.
    if let Some(p) = params_after(l, "+CDSI:") {
        return Some(Urc::Cmti {
            mem: p.first().cloned().unwrap_or_default(),
            index: num(&p, 1)?,
        });
    }
    if let Some(p) = params_after(l, "+CUSD:") {
        return Some(Urc::Cusd {
            m: num(&p, 0)?,
            text: p.get(1).cloned(),
            dcs: num(&p, 2),
        });
    }
    if let Some(rest) = l.strip_prefix("VOICE CALL:") {
        let rest = rest.trim();
        if rest.starts_with("BEGIN") {
            return Some(Urc::VoiceCallBegin);
        }
        if rest.starts_with("END") {
            return Some(Urc::VoiceCallEnd);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finals() {
        assert_eq!(FinalResult::parse("OK"), Some(FinalResult::Ok));
        assert_eq!(
            FinalResult::parse("+CME ERROR: 10"),
            Some(FinalResult::CmeError("10".into()))
        );
        assert_eq!(
            FinalResult::parse("+CMS ERROR: 500"),
            Some(FinalResult::CmsError("500".into()))
        );
        assert_eq!(
            FinalResult::parse("NO DIAL TONE"),
            Some(FinalResult::NoDialtone)
        );
        assert_eq!(FinalResult::parse("+CSQ: 1,2"), None);
        assert_eq!(
            FinalResult::parse("COMMAND NOT SUPPORT"),
            Some(FinalResult::Error)
        );
    }

    #[test]
    fn urcs() {
        assert_eq!(
            parse_urc("+CLIP: \"+4930123456\",145,,,,0"),
            Urc::Clip {
                number: "+4930123456".into(),
                toa: Some(145),
                validity: Some(0)
            }
        );
        assert_eq!(
            parse_urc("^CEND:1,0,104,17"),
            Urc::Cend {
                index: 1,
                duration_secs: 0,
                end_status: 104,
                cc_cause: Some(17)
            }
        );
        assert_eq!(
            parse_urc("^CEND:2,35,29"),
            Urc::Cend {
                index: 2,
                duration_secs: 35,
                end_status: 29,
                cc_cause: None
            }
        );
        assert_eq!(parse_urc("^RSSI:17"), Urc::Rssi(17));
        assert_eq!(parse_urc("^RSSI:x"), Urc::Other("^RSSI:x".into()));
        assert_eq!(
            parse_urc("+CREG: 1,\"00C3\",\"0000B2A1\""),
            Urc::Creg { stat: 1 }
        );
        assert_eq!(parse_urc("+CREG: 5"), Urc::Creg { stat: 5 });
        assert_eq!(parse_urc("+CREG: 2,1"), Urc::Creg { stat: 1 });
        assert_eq!(
            parse_urc("+CUSD: 0,\"Balance: 5,00 EUR\",15"),
            Urc::Cusd {
                m: 0,
                text: Some("Balance: 5,00 EUR".into()),
                dcs: Some(15)
            }
        );
        assert_eq!(
            parse_urc("+CMTI: \"SM\",3"),
            Urc::Cmti {
                mem: "SM".into(),
                index: 3
            }
        );
        assert_eq!(parse_urc("NO CARRIER"), Urc::NoCarrier);
        assert_eq!(
            parse_urc("+CLCC: 1,1,4,0,0,\"015112345678\",129"),
            Urc::Clcc(ClccEntry {
                index: 1,
                incoming: true,
                state: 4,
                mode: 0,
                number: "015112345678".into(),
                toa: Some(129)
            })
        );
    }
}
