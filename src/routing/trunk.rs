//! A SIP trunk as the router, the SIP core and the store use it: where calls go, how the number
//! is written, registration, qualify and caller-ID presentation. `config::trunks` maps
//! `[[trunk]]` onto it; the dashboard's trunks come from the store.

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
