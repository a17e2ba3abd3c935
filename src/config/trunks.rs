//! `[[trunk]]`: SIP trunks, the runtime type the router and the trunk tasks use.

use super::*;

/// How a trunk wants the called number in its Request-URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberFormat {
    /// `+4930123456` (`"e164"`, the default).
    E164,
    /// `004930123456`: the international prefix and the digits (`"international"`).
    International,
    /// `030123456` for national numbers, `004…` for others (`"national"`).
    National,
}

/// One `[[trunk]]`: a SIP trunk to a PSTN provider.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkConfig {
    /// A short name for logs, records and the route explainer (`name`, required, unique).
    pub name: String,
    /// Where calls go: `sip:provider.example`, `sip:192.0.2.10:5060;transport=tcp` (`uri`,
    /// required); the dialled number becomes the user part.
    pub uri: crate::sip::uri::SipUri,
    /// Digest user name, if the provider challenges (`username`).
    pub username: Option<String>,
    /// Digest password (`password`; required with `username`).
    pub password: Option<String>,
    /// How the number is written (`number_format`: `e164`, `international` or `national`).
    pub number_format: NumberFormat,
    /// Whether the trunk is used (`enabled`, default true).
    pub enabled: bool,
    /// Where the provider's calls come from (`sources`: IP addresses, CIDR prefixes such as
    /// `192.0.2.0/28`, or host names resolved at start and on reload). Empty: the host and
    /// port of `uri`. INVITEs from these sources are the trunk's, taken without a password.
    pub sources: Vec<String>,
    /// Registration, qualify, outbound proxy and caller-ID presentation (issue 14).
    pub options: TrunkOptions,
}

/// Which header carries the caller's identity towards a trunk (`caller_id_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallerIdHeader {
    /// `P-Asserted-Identity` (`"pai"`, the default): the trunk trusts us (RFC 3325).
    #[default]
    Asserted,
    /// `P-Preferred-Identity` (`"ppi"`): the trunk checks it against our account.
    Preferred,
    /// Neither (`"none"`): the From alone.
    None,
}

/// The optional parts of a `[[trunk]]`: outbound registration, OPTIONS qualify, outbound proxy,
/// From and caller-ID presentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkOptions {
    /// Whether pasarela registers with the trunk (`register`, default false; needs `username`).
    pub register: bool,
    /// The registration interval asked for, in seconds (`register_expires`, default 600).
    pub register_expires: u32,
    /// The first wait after a failed registration, doubled on each failure up to 600 s
    /// (`register_retry_secs`, default 10).
    pub register_retry_secs: u32,
    /// The user part of the Contact we register (`contact_user`, default the `username`).
    pub contact_user: Option<String>,
    /// Only answer digest challenges of this realm (`realm`; default: any).
    pub realm: Option<String>,
    /// Seconds between OPTIONS probes (`qualify`, default 0: off). A trunk that stops answering
    /// is down and skipped by the router until it answers again.
    pub qualify_secs: u32,
    /// Where every request to the trunk is sent instead of the host of `uri`
    /// (`outbound_proxy`, a sip: URI).
    pub outbound_proxy: Option<crate::sip::uri::SipUri>,
    /// The From user towards the trunk (`from_user`; default the caller's DID), e.g. the
    /// account name some providers require; the caller then travels in the identity header.
    pub from_user: Option<String>,
    /// The From host towards the trunk (`from_domain`; default `[sip] domain`).
    pub from_domain: Option<String>,
    /// `caller_id_header`: `pai` (default), `ppi` or `none`.
    pub caller_id_header: CallerIdHeader,
}

impl Default for TrunkOptions {
    fn default() -> Self {
        TrunkOptions {
            register: false,
            register_expires: 600,
            register_retry_secs: 10,
            contact_user: None,
            realm: None,
            qualify_secs: 0,
            outbound_proxy: None,
            from_user: None,
            from_domain: None,
            caller_id_header: CallerIdHeader::default(),
        }
    }
}

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
