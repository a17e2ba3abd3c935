//! `[[trunk]]`: SIP trunks, mapped onto [`crate::routing::trunk::TrunkConfig`] (the type the
//! router, the SIP core and the store use) with the file:line:key checks.

use super::*;

pub use crate::routing::trunk::{CallerIdHeader, NumberFormat, TrunkConfig, TrunkOptions};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrunk {
    pub(crate) name: String,
    pub(crate) uri: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) number_format: Option<String>,
    pub(crate) enabled: Option<bool>,
    pub(crate) sources: Option<Vec<String>>,
    pub(crate) srtp: Option<String>,
    /// A CA file for its TLS certificate (kept in [`TlsConfig::peers`]).
    pub(crate) tls_ca: Option<PathBuf>,
    /// The SHA-256 of its TLS certificate (kept in [`TlsConfig::peers`]).
    pub(crate) tls_pin: Option<String>,
    pub(crate) register: Option<bool>,
    pub(crate) register_expires: Option<u32>,
    pub(crate) register_retry_secs: Option<u32>,
    pub(crate) contact_user: Option<String>,
    pub(crate) realm: Option<String>,
    pub(crate) qualify: Option<u32>,
    pub(crate) outbound_proxy: Option<String>,
    pub(crate) from_user: Option<String>,
    pub(crate) from_domain: Option<String>,
    pub(crate) caller_id_header: Option<String>,
}

pub(crate) fn validate_trunks(raw: Vec<RawTrunk>) -> Checked<Vec<TrunkConfig>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let at = KeyPath::new("trunk").index(i);
        if t.name.trim().is_empty() || t.name.chars().any(|c| c.is_control()) {
            return Err(invalid(&at.key("name"), "must be a non-empty name"));
        }
        if !seen.insert(t.name.clone()) {
            return Err(invalid(
                &at.key("name"),
                format!("trunk `{}` is defined twice", t.name),
            ));
        }
        let uri = match crate::sip::uri::Uri::parse(&t.uri) {
            Ok(crate::sip::uri::Uri::Sip(u)) if !u.secure => u,
            Ok(crate::sip::uri::Uri::Sip(_)) => {
                return Err(invalid(
                    &at.key("uri"),
                    format!("`{}`: sips: needs TLS, which is not supported yet", t.uri),
                ))
            }
            Ok(_) => {
                return Err(invalid(
                    &at.key("uri"),
                    format!("`{}` is not a sip: URI", t.uri),
                ))
            }
            Err(e) => {
                return Err(invalid(
                    &at.key("uri"),
                    format!("`{}` is not a SIP URI: {e}", t.uri),
                ))
            }
        };
        if let Some(tr) = uri.transport() {
            if crate::sip::peer::Proto::from_token(&tr).is_none() {
                return Err(invalid(
                    &at.key("uri"),
                    format!("transport `{tr}` is not supported (udp, tcp or tls)"),
                ));
            }
        }
        match (&t.username, &t.password) {
            (Some(_), None) => {
                return Err(invalid(&at.key("password"), "is required with `username`"))
            }
            (None, Some(_)) => {
                return Err(invalid(&at.key("username"), "is required with `password`"))
            }
            _ => {}
        }
        for (j, src) in t.sources.iter().flatten().enumerate() {
            if let Err(e) = crate::callctl::inbound::SourceSpec::parse(src) {
                return Err(invalid(&at.key("sources").index(j), e.to_string()));
            }
        }
        let number_format = match t.number_format.as_deref() {
            None | Some("e164") => NumberFormat::E164,
            Some("international") => NumberFormat::International,
            Some("national") => NumberFormat::National,
            Some(other) => {
                return Err(invalid(
                    &at.key("number_format"),
                    format!("`{other}` is not one of `e164`, `international`, `national`"),
                ))
            }
        };
        let options = trunk_options(&at, &t)?;
        out.push(TrunkConfig {
            name: t.name,
            uri,
            username: t.username,
            password: t.password,
            number_format,
            enabled: t.enabled.unwrap_or(true),
            sources: t.sources.unwrap_or_default(),
            options,
        });
    }
    Ok(out)
}

/// The optional keys of one `[[trunk]]` ([`TrunkOptions`]).
pub(crate) fn trunk_options(at: &KeyPath, t: &RawTrunk) -> Checked<TrunkOptions> {
    let d = TrunkOptions::default();
    let register = t.register.unwrap_or(false);
    if register && t.username.is_none() {
        return Err(invalid(
            &at.key("username"),
            "is required with `register = true`",
        ));
    }
    let register_expires = t.register_expires.unwrap_or(d.register_expires);
    if !(2..=86_400).contains(&register_expires) {
        return Err(invalid(
            &at.key("register_expires"),
            "must be between 2 and 86400 seconds",
        ));
    }
    let register_retry_secs = t.register_retry_secs.unwrap_or(d.register_retry_secs);
    if !(1..=600).contains(&register_retry_secs) {
        return Err(invalid(
            &at.key("register_retry_secs"),
            "must be between 1 and 600 seconds",
        ));
    }
    let user_ok = |v: &str| {
        !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%".contains(&b))
    };
    if let Some(c) = &t.contact_user {
        if !user_ok(c) {
            return Err(invalid(
                &at.key("contact_user"),
                format!("`{c}` is not a SIP user part"),
            ));
        }
    }
    if let Some(c) = &t.from_user {
        if !user_ok(c) {
            return Err(invalid(
                &at.key("from_user"),
                format!("`{c}` is not a SIP user part"),
            ));
        }
    }
    if let Some(h) = &t.from_domain {
        if crate::sip::uri::parse_hostport(h).is_err() {
            return Err(invalid(
                &at.key("from_domain"),
                format!("`{h}` is not a host name"),
            ));
        }
    }
    let outbound_proxy = match &t.outbound_proxy {
        None => None,
        Some(p) => match crate::sip::uri::Uri::parse(p) {
            Ok(crate::sip::uri::Uri::Sip(u)) if !u.secure => Some(u),
            _ => {
                return Err(invalid(
                    &at.key("outbound_proxy"),
                    format!("`{p}` is not a sip: URI"),
                ))
            }
        },
    };
    let caller_id_header = match t.caller_id_header.as_deref() {
        None | Some("pai") => CallerIdHeader::Asserted,
        Some("ppi") => CallerIdHeader::Preferred,
        Some("none") => CallerIdHeader::None,
        Some(other) => {
            return Err(invalid(
                &at.key("caller_id_header"),
                format!("`{other}` is not one of `pai`, `ppi`, `none`"),
            ))
        }
    };
    Ok(TrunkOptions {
        register,
        register_expires,
        register_retry_secs,
        contact_user: t.contact_user.clone(),
        realm: t.realm.clone(),
        qualify_secs: t.qualify.unwrap_or(0),
        outbound_proxy,
        from_user: t.from_user.clone(),
        from_domain: t.from_domain.clone(),
        caller_id_header,
    })
}
