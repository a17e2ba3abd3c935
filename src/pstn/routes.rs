//! PSTN lines in the router's view: each line is a PSTN trunk whose hop names the line
//! (`sip:NUMBER@127.0.0.1:9;line=NAME`), so that numbering formats, permissions, limits and
//! the route explainer treat lines like any trunk; call control dials the line named by the
//! `line` parameter itself ([`crate::b2bua::LineTarget`]) and never sends the request. Also
//! how a caller's number heard on a line is written (E.164 when the plan can tell).

use std::net::{Ipv4Addr, SocketAddr};

use crate::routing::numbering::{Dialled, NumberingPlan};
use crate::routing::trunk::{NumberFormat, TrunkConfig};
use crate::sip::uri::Uri;

/// The hop of every line trunk: a loopback address nothing listens on (the discard port);
/// nothing is ever sent there.
pub const LINE_HOP: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9);

/// Whether `trunk` is a line's router trunk (its hop is [`LINE_HOP`]): such a trunk is never
/// the origin of a SIP request, so it must not be trusted by source address.
pub fn is_line_trunk(trunk: &TrunkConfig) -> bool {
    trunk.uri.host.ip() == Some(LINE_HOP.ip()) && trunk.uri.port.unwrap_or(5060) == LINE_HOP.port()
}

/// One trunk per enabled modem line.
pub fn line_trunks(modems: &[super::gsm::config::ModemConfig]) -> Vec<TrunkConfig> {
    named_line_trunks(
        modems
            .iter()
            .filter(|m| m.enabled)
            .map(|m| m.line.line.name.as_str()),
    )
}

/// One router trunk per line name (any kind of line: modems, FXO ports), numbers in E.164.
pub fn named_line_trunks<'a>(names: impl Iterator<Item = &'a str>) -> Vec<TrunkConfig> {
    names
        .filter_map(|name| {
            let text = format!("sip:{}:{};line={name}", LINE_HOP.ip(), LINE_HOP.port());
            match Uri::parse(&text) {
                Ok(Uri::Sip(uri)) => Some(TrunkConfig {
                    name: name.to_string(),
                    uri,
                    username: None,
                    password: None,
                    number_format: NumberFormat::E164,
                    enabled: true,
                    sources: Vec::new(),
                    options: Default::default(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// The caller in E.164 when the numbering plan can tell, else as the network sent it.
pub fn caller_e164(plan: &NumberingPlan, number: &str, toa: Option<u8>) -> String {
    let digits: String = number
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    if toa == Some(145) && !digits.starts_with('+') && !digits.is_empty() {
        return format!("+{digits}");
    }
    match plan.classify(&digits, |_| false) {
        Ok(Dialled::E164(n)) => n.as_str().to_owned(),
        _ => digits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_become_e164() {
        let plan =
            NumberingPlan::from_config(&crate::routing::numbering::NumberingConfig::default());
        assert_eq!(caller_e164(&plan, "4917012345", Some(145)), "+4917012345");
        assert_eq!(caller_e164(&plan, "+4917012345", Some(145)), "+4917012345");
        assert_eq!(
            caller_e164(&plan, "017012345678", Some(129)),
            "+4917012345678"
        );
    }

    #[test]
    fn a_line_trunk_names_its_line() {
        let t = named_line_trunks(["gsm1"].into_iter());
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].uri.params.value("line"), Some("gsm1"));
        assert_eq!(t[0].uri.port, Some(9));
    }
}
