//! Configuration: the TOML file format, its embedded defaults, and its validation.
//!
//! This module owns everything between the bytes of a config file and a typed, validated
//! [`Config`]. Every error it reports names the file, the 1-based line and the full key path
//! (`FILE:LINE: key `sip.listen[1]`: what is wrong`), whether the problem is a syntax error, an
//! unknown key, a wrong type or a semantic check (ranges, formats, duplicates).
//!
//! Parsing happens in three steps:
//! 1. the document is parsed into a spanned tree ([`toml::de::DeTable`]), which keeps the byte
//!    range of every value;
//! 2. that tree is deserialized into private `Raw*` structs (every key optional, unknown keys
//!    denied) through `serde_path_to_error`, which gives the key path of any type error;
//! 3. the raw values are validated and converted into the public types; a failing check names
//!    its key path, and the span of that path is looked up in the tree from step 1.
//!
//! Relative paths (such as `store.path`) are kept as written, i.e. relative to the working
//! directory of the process.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

// One file per section of the file: its settings type (with `Default`), its `Raw*` type as
// written, and the checks between them. `keys` has the key paths every error names.
// @sections
mod enum_;
pub use enum_::*;
mod numbering;
pub use numbering::*;
mod tls;
pub use tls::*;
mod web;
pub use web::*;
mod store;
pub use store::*;
mod calls;
pub use calls::*;
mod media;
pub use media::*;
mod sip;
pub use sip::*;
mod keys;
use keys::*;

/// The `User-Agent`/`Server` header value used unless `sip.user_agent` is set.
pub const DEFAULT_USER_AGENT: &str = concat!("pasarela/", env!("CARGO_PKG_VERSION"));

/// The whole configuration of one pasarela process; [`Default`] gives the embedded defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// `[sip]`: signalling.
    pub sip: SipConfig,
    /// `[media]`: RTP.
    pub media: MediaConfig,
    /// `[calls]`: call limits.
    pub calls: CallsConfig,
    /// `[store]`: the SQLite database.
    pub store: StoreConfig,
    /// `[web]`: the dashboard.
    pub web: WebConfig,
    /// `[numbering]`: the local numbering plan, for normalising dialled numbers to E.164.
    pub numbering: NumberingConfig,
    /// `[enum]`: ENUM (RFC 6116) lookups.
    pub enum_: EnumConfig,
    /// `[enum_zone]`: the private ENUM zone that publishes the office's DIDs.
    pub enum_zone: EnumZoneConfig,
    /// `[[trunk]]`: SIP trunks to PSTN providers, tried in order when a number has no SIP route.
    pub trunks: Vec<TrunkConfig>,
    /// `[dundi]`: DUNDi peering (RFC 7378, Asterisk's pbx_dundi).
    pub dundi: DundiConfig,
    /// `[inbound]`: calls into the office from peers and the internet.
    pub inbound: InboundConfig,
    /// `[[ring_group]]`: extensions that ring together.
    pub ring_groups: Vec<RingGroupConfig>,
    /// `[log]`: diagnostics.
    pub log: LogConfig,
    /// `[[extension]]`: extensions provisioned from the file.
    pub extensions: Vec<ExtensionConfig>,
    /// `[[modem]]`: GSM modem lines to the PSTN (see [`crate::pstn::gsm::config`]).
    pub modems: Vec<crate::pstn::gsm::config::ModemConfig>,
    /// `[[fxo]]`: analog lines on a DAHDI card (see [`crate::pstn::dahdi::config`]).
    pub fxo: Vec<crate::pstn::dahdi::config::FxoConfig>,
    /// `[limits]`: fraud limits per extension and trunk, and resource caps.
    pub limits: LimitsConfig,
    /// SRTP policies: `[media] srtp` (default `optional`) and the `srtp` keys of
    /// `[[extension]]`, `[[trunk]]` and `[[dundi.peer]]` (`never`, `optional`, `required`).
    pub srtp: crate::b2bua::SrtpPolicies,
    /// `[tls]`: the certificate of SIP over TLS and the HTTPS dashboard, and whom outgoing TLS
    /// trusts.
    pub tls: TlsConfig,
    /// `[sms]`: text messages through the modem lines and between phones.
    pub sms: crate::sms::config::SmsConfig,
    /// `[subscriptions]`: busy lamps, presence and message-waiting subscriptions.
    pub subscriptions: crate::subscriptions::config::SubscriptionsConfig,
    /// The file this configuration came from; `None` for the embedded defaults.
    pub source: Option<PathBuf>,
}

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

/// `[dundi]`, `[[dundi.mapping]]`, `[[dundi.peer]]`: DUNDi peering.
#[derive(Debug, Clone, PartialEq)]
pub struct DundiConfig {
    /// Whether `serve` runs DUNDi (`enabled`, default false).
    pub enabled: bool,
    /// The context our lookups ask peers about (`context`, default `e164`).
    pub context: String,
    /// The node: identity, keys, mappings (what we answer for), peers. `settings.bind` is
    /// `listen` (default `0.0.0.0:4520`).
    pub settings: crate::routing::dundi::Settings,
    /// Number patterns we answer for besides the extensions' DIDs (`numbers` of each mapping,
    /// Asterisk style: `_4930123XXX`), with the mapping's local context.
    pub numbers: Vec<(String, Vec<String>)>,
}

impl Default for DundiConfig {
    fn default() -> Self {
        DundiConfig {
            enabled: false,
            context: "e164".into(),
            settings: crate::routing::dundi::Settings::default(),
            numbers: Vec::new(),
        }
    }
}

/// The local context every mapping answers from (the DIDs and the mapping's patterns).
pub const DUNDI_LOCAL_CONTEXT: &str = "office";

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

/// `[inbound]`: who may call the office without a password (see [`crate::server::inbound`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundConfig {
    /// Whether peers and the internet may call the numbers we publish (the DIDs) without
    /// authentication (`public`, default false). Such calls reach only local destinations.
    pub public: bool,
    /// Unauthenticated calls one source address may start per minute (`peer_calls_per_minute`,
    /// default 20).
    pub peer_calls_per_minute: u32,
    /// Unauthenticated calls one source address may have in progress (`peer_max_calls`,
    /// default 4).
    pub peer_max_calls: u32,
    /// `[[inbound.route]]`: numbers we publish besides the extensions' DIDs, and where their
    /// calls ring: (E.164 number, an extension number or a `[[ring_group]]` name).
    pub routes: Vec<(String, String)>,
}

/// One `[[ring_group]]`: extensions that ring for a number of `[[inbound.route]]` or a modem
/// line's `incoming`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingGroupConfig {
    /// Its name, used as a route's `destination` (`name`, required, not all digits).
    pub name: String,
    /// The extensions; the first to answer takes the call (`members`).
    pub members: Vec<String>,
    /// `strategy`: `all` (default) rings every member at once; `order` rings them one after
    /// the other, each for `member_timeout` seconds.
    pub strategy: RingStrategy,
    /// Seconds each member rings with `strategy = "order"` (`member_timeout`, default 15).
    pub member_timeout_secs: u32,
}

/// How a ring group rings its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RingStrategy {
    #[default]
    All,
    Order,
}

impl Default for InboundConfig {
    fn default() -> Self {
        InboundConfig {
            public: false,
            peer_calls_per_minute: 20,
            peer_max_calls: 4,
            routes: Vec::new(),
        }
    }
}

/// `[log]`: diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// A level (`off`, `error`, `warn`, `info`, `debug`, `trace`) or a `tracing` filter directive
    /// list such as `"info,pasarela::sip=debug"` (`level`, default `info`).
    pub level: String,
}

/// One `[[extension]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionConfig {
    /// The extension number, 1 to 15 digits (`number`, required).
    pub number: String,
    /// The digest-authentication password (`password`, required, non-empty).
    pub password: String,
    /// Display name (`name`).
    pub name: Option<String>,
    /// Direct inward dialling number in E.164, `+` and digits (`did`).
    pub did: Option<String>,
    /// Whether the extension may register and call (`enabled`, default true).
    pub enabled: bool,
    /// What the extension may call (`permissions`, e.g. `["internal", "national"]`, `["all"]`);
    /// `None`: `numbering.default_permissions`.
    pub permissions: Option<crate::routing::Permissions>,
    /// Networks it may register and call from (`allow`, e.g. `["192.168.1.0/24"]`; default
    /// anywhere).
    pub allow: Vec<crate::security::net::IpNet>,
    /// Whether digest answers without `qop` (RFC 2069) are accepted (`legacy_digest`,
    /// default false).
    pub legacy_digest: bool,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}: {message}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A key is unknown, has the wrong type, or has a value that fails validation.
    #[error("{}:{line}: key `{key}`: {message}", file.display())]
    Key {
        /// The file.
        file: PathBuf,
        /// 1-based line of the key or value.
        line: usize,
        /// The full key path, such as `sip.listen[1]` or `extension[3].number`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The 1-based line the error points at, if it points into a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { line, .. } | ConfigError::Key { line, .. } => Some(*line),
        }
    }

    /// The key path the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Key { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
        }
    }
}

impl Config {
    /// Loads the configuration from `path`, or returns the embedded defaults for `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates a configuration document; `origin` names it in errors and becomes
    /// [`Config::source`].
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let doc = Doc { text, origin };
        let root = DeTable::parse(text).map_err(|e| doc.syntax_error(&e))?;
        let raw: RawConfig = {
            let de = toml::Deserializer::from(root.clone());
            serde_path_to_error::deserialize(de).map_err(|e| doc.serde_error(&root, e))?
        };
        let mut config = raw.validate().map_err(|e| doc.invalid(&root, e))?;
        config.source = Some(origin.to_path_buf());
        Ok(config)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (file-shaped) structs.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    sip: RawSip,
    #[serde(default)]
    media: RawMedia,
    #[serde(default)]
    calls: RawCalls,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    web: RawWeb,
    #[serde(default)]
    numbering: RawNumbering,
    #[serde(default, rename = "enum")]
    enum_: RawEnum,
    #[serde(default)]
    enum_zone: RawEnumZone,
    #[serde(default, rename = "trunk")]
    trunks: Vec<RawTrunk>,
    #[serde(default)]
    dundi: RawDundi,
    #[serde(default)]
    inbound: RawInbound,
    #[serde(default, rename = "ring_group")]
    ring_groups: Vec<RawRingGroup>,
    #[serde(default)]
    log: RawLog,
    #[serde(default, rename = "extension")]
    extensions: Vec<RawExtension>,
    #[serde(default, rename = "modem")]
    modems: Vec<RawModem>,
    #[serde(default, rename = "fxo")]
    fxo: Vec<crate::pstn::dahdi::config::RawFxo>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    sms: crate::sms::config::RawSms,
    #[serde(default)]
    subscriptions: crate::subscriptions::config::RawSubscriptions,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrunk {
    name: String,
    uri: String,
    username: Option<String>,
    password: Option<String>,
    number_format: Option<String>,
    enabled: Option<bool>,
    sources: Option<Vec<String>>,
    srtp: Option<String>,
    /// A CA file for its TLS certificate (kept in [`TlsConfig::peers`]).
    tls_ca: Option<PathBuf>,
    /// The SHA-256 of its TLS certificate (kept in [`TlsConfig::peers`]).
    tls_pin: Option<String>,
    register: Option<bool>,
    register_expires: Option<u32>,
    register_retry_secs: Option<u32>,
    contact_user: Option<String>,
    realm: Option<String>,
    qualify: Option<u32>,
    outbound_proxy: Option<String>,
    from_user: Option<String>,
    from_domain: Option<String>,
    caller_id_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    public: Option<bool>,
    peer_calls_per_minute: Option<u32>,
    peer_max_calls: Option<u32>,
    route: Option<Vec<RawInboundRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInboundRoute {
    number: String,
    destination: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRingGroup {
    name: String,
    members: Vec<String>,
    strategy: Option<String>,
    member_timeout: Option<u32>,
}

fn validate_ring_groups(raw: Vec<RawRingGroup>) -> Checked<Vec<RingGroupConfig>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, g) in raw.into_iter().enumerate() {
        let at = KeyPath::new("ring_group").index(i);
        if g.name.trim().is_empty() || digits(&g.name) || g.name.chars().any(|c| c.is_control()) {
            return Err(invalid(
                &at.key("name"),
                "must be a name (not only digits: those are extensions)",
            ));
        }
        if !seen.insert(g.name.clone()) {
            return Err(invalid(
                &at.key("name"),
                format!("ring group `{}` is defined twice", g.name),
            ));
        }
        if g.members.is_empty() {
            return Err(invalid(
                &at.key("members"),
                "must name at least one extension",
            ));
        }
        for (j, m) in g.members.iter().enumerate() {
            if !digits(m) {
                return Err(invalid(
                    &at.key("members").index(j),
                    format!("`{m}` is not an extension number"),
                ));
            }
        }
        let strategy = match g.strategy.as_deref() {
            None | Some("all") => RingStrategy::All,
            Some("order") => RingStrategy::Order,
            Some(other) => {
                return Err(invalid(
                    &at.key("strategy"),
                    format!("`{other}` is not one of `all`, `order`"),
                ))
            }
        };
        let member_timeout_secs = g.member_timeout.unwrap_or(15);
        if member_timeout_secs == 0 {
            return Err(invalid(
                &at.key("member_timeout"),
                "must be at least 1 second",
            ));
        }
        out.push(RingGroupConfig {
            name: g.name,
            members: g.members,
            strategy,
            member_timeout_secs,
        });
    }
    Ok(out)
}

impl RawInbound {
    fn validate(self, at: &KeyPath, groups: &[RingGroupConfig]) -> Checked<InboundConfig> {
        let d = InboundConfig::default();
        let mut routes = Vec::new();
        for (i, r) in self.route.into_iter().flatten().enumerate() {
            let here = at.key("route").index(i);
            if r.number.parse::<crate::routing::E164>().is_err() {
                return Err(invalid(
                    &here.key("number"),
                    format!("`{}` is not an E.164 number (+ and digits)", r.number),
                ));
            }
            if !digits(&r.destination) && !groups.iter().any(|g| g.name == r.destination) {
                return Err(invalid(
                    &here.key("destination"),
                    format!(
                        "`{}` is neither an extension number nor a [[ring_group]]",
                        r.destination
                    ),
                ));
            }
            routes.push((r.number, r.destination));
        }
        Ok(InboundConfig {
            routes,
            public: self.public.unwrap_or(d.public),
            peer_calls_per_minute: positive(
                self.peer_calls_per_minute,
                d.peer_calls_per_minute,
                &at.key("peer_calls_per_minute"),
            )?,
            peer_max_calls: positive(
                self.peer_max_calls,
                d.peer_max_calls,
                &at.key("peer_max_calls"),
            )?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDundi {
    enabled: Option<bool>,
    listen: Option<String>,
    eid: Option<String>,
    private_key: Option<PathBuf>,
    public_key: Option<PathBuf>,
    context: Option<String>,
    ttl: Option<u16>,
    cache_secs: Option<u64>,
    key_ttl_secs: Option<u64>,
    ipaddr: Option<String>,
    organization: Option<String>,
    department: Option<String>,
    locality: Option<String>,
    state_prov: Option<String>,
    country: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    #[serde(default, rename = "mapping")]
    mappings: Vec<RawDundiMapping>,
    #[serde(default, rename = "peer")]
    peers: Vec<RawDundiPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDundiMapping {
    context: String,
    destination: Option<String>,
    tech: Option<String>,
    weight: Option<u16>,
    options: Option<Vec<String>>,
    numbers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDundiPeer {
    eid: String,
    address: String,
    model: Option<String>,
    order: Option<u32>,
    include: Option<Vec<String>>,
    permit: Option<Vec<String>>,
    inkey: Option<PathBuf>,
    outkey: Option<PathBuf>,
    qualify_secs: Option<u64>,
    precache: Option<String>,
    srtp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtension {
    number: String,
    password: String,
    name: Option<String>,
    did: Option<String>,
    enabled: Option<bool>,
    permissions: Option<Vec<String>>,
    allow: Option<Vec<String>>,
    legacy_digest: Option<bool>,
    srtp: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Key paths.

// ---------------------------------------------------------------------------------------------
// Turning errors into file:line:key messages.

/// One `[[modem]]` as written; the same keys as [`crate::pstn::gsm::config::RawModem`], which
/// checks them (listed here so that the packaged configuration can be checked against them).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModem {
    name: String,
    profile: Option<String>,
    profile_file: Option<PathBuf>,
    imei: Option<String>,
    iccid: Option<String>,
    data_port: Option<PathBuf>,
    audio_port: Option<PathBuf>,
    incoming: Option<Vec<String>>,
    gain_to_modem_db: Option<f32>,
    gain_from_modem_db: Option<f32>,
    probe_interval_secs: Option<u64>,
    max_missed: Option<u32>,
    jitter_target_ms: Option<u64>,
    jitter_max_ms: Option<u64>,
    enabled: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Validation.

impl RawConfig {
    fn validate(self) -> Checked<Config> {
        let srtp = self.srtp_policies()?;
        let extensions = validate_extensions(self.extensions)?;
        let trunk_tls: Vec<(String, Option<PathBuf>, Option<String>)> = self
            .trunks
            .iter()
            .map(|t| {
                let host = match crate::sip::uri::Uri::parse(&t.uri) {
                    Ok(crate::sip::uri::Uri::Sip(u)) => u.host.to_string().to_ascii_lowercase(),
                    _ => String::new(),
                };
                (host, t.tls_ca.clone(), t.tls_pin.clone())
            })
            .collect();
        let tls = self.tls.validate(&KeyPath::new("tls"), &trunk_tls)?;
        let trunks = validate_trunks(self.trunks)?;
        let ring_groups = validate_ring_groups(self.ring_groups)?;
        Ok(Config {
            sip: self.sip.validate(&KeyPath::new("sip"))?,
            media: self.media.validate(&KeyPath::new("media"))?,
            calls: self.calls.validate(&KeyPath::new("calls"))?,
            store: self.store.validate(&KeyPath::new("store"))?,
            web: self.web.validate(&KeyPath::new("web"))?,
            numbering: self.numbering.validate(&KeyPath::new("numbering"))?,
            enum_: self.enum_.validate(&KeyPath::new("enum"))?,
            enum_zone: self.enum_zone.validate(&KeyPath::new("enum_zone"))?,
            modems: validate_modems(self.modems, &trunks, &ring_groups)?,
            fxo: validate_fxo(self.fxo)?,
            trunks,
            dundi: self.dundi.validate(&KeyPath::new("dundi"))?,
            inbound: self
                .inbound
                .validate(&KeyPath::new("inbound"), &ring_groups)?,
            ring_groups,
            log: self.log.validate(&KeyPath::new("log"))?,
            extensions,
            limits: self.limits.validate(&KeyPath::new("limits"))?,
            srtp,
            tls,
            sms: self
                .sms
                .validate()
                .map_err(|(k, m)| invalid(&KeyPath::new("sms").key(k), m))?,
            subscriptions: self
                .subscriptions
                .validate()
                .map_err(|(k, m)| invalid(&KeyPath::new("subscriptions").key(k), m))?,
            source: None,
        })
    }

    /// The `srtp` keys (see [`Config::srtp`]).
    fn srtp_policies(&self) -> Checked<crate::b2bua::SrtpPolicies> {
        use crate::b2bua::SrtpPolicy;
        let parse = |v: &Option<String>, at: KeyPath| -> Checked<Option<SrtpPolicy>> {
            v.as_deref()
                .map(|v| {
                    SrtpPolicy::parse(v).ok_or_else(|| {
                        invalid(
                            &at,
                            format!("`{v}` is not an SRTP policy (never, optional, required)"),
                        )
                    })
                })
                .transpose()
        };
        let mut out = crate::b2bua::SrtpPolicies {
            default: parse(&self.media.srtp, KeyPath::new("media").key("srtp"))?
                .unwrap_or_default(),
            ..Default::default()
        };
        for (i, e) in self.extensions.iter().enumerate() {
            let at = KeyPath::new("extension").index(i).key("srtp");
            if let Some(p) = parse(&e.srtp, at)? {
                out.extensions.insert(e.number.clone(), p);
            }
        }
        for (i, t) in self.trunks.iter().enumerate() {
            let at = KeyPath::new("trunk").index(i).key("srtp");
            if let Some(p) = parse(&t.srtp, at)? {
                out.trunks.insert(t.name.clone(), p);
            }
        }
        for (i, peer) in self.dundi.peers.iter().enumerate() {
            let at = KeyPath::new("dundi").key("peer").index(i).key("srtp");
            if let Some(p) = parse(&peer.srtp, at)? {
                out.peers.insert(peer.eid.clone(), p);
            }
        }
        Ok(out)
    }
}

fn positive<T: PartialEq + Default>(value: Option<T>, default: T, at: &KeyPath) -> Checked<T> {
    match value {
        Some(v) if v == T::default() => Err(invalid(at, "must be greater than 0")),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

fn digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

impl RawDundi {
    fn validate(self, at: &KeyPath) -> Checked<DundiConfig> {
        use crate::routing::dundi::{self as dundi, Eid, Mapping, PeerSettings};
        let mut settings = dundi::Settings::default();
        if let Some(l) = &self.listen {
            settings.bind = l.parse().map_err(|_| {
                invalid(
                    &at.key("listen"),
                    format!("`{l}` is not an address:port (e.g. `0.0.0.0:4520`)"),
                )
            })?;
        }
        if let Some(e) = &self.eid {
            settings.eid = Some(e.parse::<Eid>().map_err(|_| {
                invalid(
                    &at.key("eid"),
                    format!("`{e}` is not an EID (six hex bytes, e.g. `02:00:00:00:00:01`)"),
                )
            })?);
        }
        settings.private_key = self.private_key;
        settings.public_key = self.public_key;
        if let Some(t) = self.ttl {
            settings.ttl = positive(Some(t), t, &at.key("ttl"))?;
        }
        if let Some(c) = self.cache_secs {
            settings.cache_ttl =
                std::time::Duration::from_secs(positive(Some(c), c, &at.key("cache_secs"))?);
        }
        if let Some(k) = self.key_ttl_secs {
            settings.key_ttl =
                std::time::Duration::from_secs(positive(Some(k), k, &at.key("key_ttl_secs"))?);
        }
        settings.ipaddr = self.ipaddr.unwrap_or_default();
        settings.entity = dundi::EntityInfo {
            organization: self.organization.unwrap_or_default(),
            department: self.department.unwrap_or_default(),
            locality: self.locality.unwrap_or_default(),
            state_prov: self.state_prov.unwrap_or_default(),
            country: self.country.unwrap_or_default(),
            email: self.email.unwrap_or_default(),
            phone: self.phone.unwrap_or_default(),
            ..Default::default()
        };
        let mut numbers = Vec::new();
        for (i, m) in self.mappings.into_iter().enumerate() {
            let here = at.key("mapping").index(i);
            if m.context.trim().is_empty() {
                return Err(invalid(&here.key("context"), "must not be empty"));
            }
            let mut mapping = Mapping::sip(
                m.context.trim(),
                DUNDI_LOCAL_CONTEXT,
                m.destination
                    .as_deref()
                    .unwrap_or("${NUMBER}@${IPADDR}:5060"),
            );
            if let Some(t) = &m.tech {
                mapping.tech = t
                    .parse()
                    .map_err(|e: dundi::SettingsError| invalid(&here.key("tech"), e.to_string()))?;
            }
            mapping.weight = m.weight.unwrap_or(0);
            if let Some(opts) = &m.options {
                let (flags, no_partial) = dundi::parse_mapping_options(opts)
                    .map_err(|e| invalid(&here.key("options"), e.to_string()))?;
                mapping.options = flags;
                mapping.no_partial = no_partial;
            }
            if let Some(list) = m.numbers {
                for (j, p) in list.iter().enumerate() {
                    if p.parse::<dundi::Pattern>().is_err() {
                        return Err(invalid(
                            &here.key("numbers").index(j),
                            format!("`{p}` is not a number or pattern (e.g. `4930123456`, `_4930123XXX`)"),
                        ));
                    }
                }
                numbers.push((DUNDI_LOCAL_CONTEXT.to_owned(), list));
            }
            settings.mappings.push(mapping);
        }
        let context = self.context.unwrap_or_else(|| "e164".to_owned());
        for (i, p) in self.peers.into_iter().enumerate() {
            let here = at.key("peer").index(i);
            let eid: Eid = p.eid.parse().map_err(|_| {
                invalid(
                    &here.key("eid"),
                    format!(
                        "`{}` is not an EID (six hex bytes, e.g. `02:00:00:00:00:01`)",
                        p.eid
                    ),
                )
            })?;
            let address = dundi::parse_peer_address(&p.address)
                .map_err(|e| invalid(&here.key("address"), e.to_string()))?;
            let mut peer = PeerSettings::new(eid, address, &context);
            if let Some(m) = &p.model {
                peer.model = m.parse().map_err(|e: dundi::SettingsError| {
                    invalid(&here.key("model"), e.to_string())
                })?;
            }
            peer.order = p.order.unwrap_or(0);
            if let Some(v) = p.include {
                peer.include = v;
            }
            if let Some(v) = p.permit {
                peer.permit = v;
            }
            peer.inkey = p.inkey;
            peer.outkey = p.outkey;
            peer.precache = match p.precache.as_deref().map(str::trim) {
                None | Some("none") => None,
                Some(m) => Some(m.parse().map_err(|_: dundi::SettingsError| {
                    invalid(
                        &here.key("precache"),
                        format!("`{m}`: expected none, outbound, inbound or symmetric"),
                    )
                })?),
            };
            peer.qualify = p
                .qualify_secs
                .filter(|s| *s > 0)
                .map(std::time::Duration::from_secs);
            settings.peers.push(peer);
        }
        if let Err(e) = settings.validate() {
            let key = if e.0.contains("peer") {
                "peer"
            } else {
                "mapping"
            };
            return Err(invalid(&at.key(key), e.to_string()));
        }
        Ok(DundiConfig {
            enabled: self.enabled.unwrap_or(false),
            context,
            settings,
            numbers,
        })
    }
}

fn validate_trunks(raw: Vec<RawTrunk>) -> Checked<Vec<TrunkConfig>> {
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
            if let Err(e) = crate::server::inbound::SourceSpec::parse(src) {
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
fn trunk_options(at: &KeyPath, t: &RawTrunk) -> Checked<TrunkOptions> {
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

/// The `[[fxo]]` tables (analog lines on a DAHDI card).
fn validate_fxo(
    raw: Vec<crate::pstn::dahdi::config::RawFxo>,
) -> Checked<Vec<crate::pstn::dahdi::config::FxoConfig>> {
    raw.iter()
        .enumerate()
        .map(|(i, f)| {
            f.validate()
                .map_err(|e| invalid(&KeyPath::new("fxo").index(i).key(e.key), e.why))
        })
        .collect()
}

/// The `[[modem]]` tables; their names are unique among modems and trunks (a line is a trunk
/// for the router and in the records).
fn validate_modems(
    raw: Vec<RawModem>,
    trunks: &[TrunkConfig],
    groups: &[RingGroupConfig],
) -> Checked<Vec<crate::pstn::gsm::config::ModemConfig>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let at = KeyPath::new("modem").index(i);
        if !seen.insert(m.name.clone()) {
            return Err(invalid(
                &at.key("name"),
                format!("modem `{}` is defined twice", m.name),
            ));
        }
        if trunks.iter().any(|t| t.name == m.name) {
            return Err(invalid(
                &at.key("name"),
                format!("`{}` is already the name of a trunk", m.name),
            ));
        }
        let checked = crate::pstn::gsm::config::RawModem {
            name: m.name,
            profile: m.profile,
            profile_file: m.profile_file,
            imei: m.imei,
            iccid: m.iccid,
            data_port: m.data_port,
            audio_port: m.audio_port,
            incoming: m.incoming,
            gain_to_modem_db: m.gain_to_modem_db,
            gain_from_modem_db: m.gain_from_modem_db,
            probe_interval_secs: m.probe_interval_secs,
            max_missed: m.max_missed,
            jitter_target_ms: m.jitter_target_ms,
            jitter_max_ms: m.jitter_max_ms,
            enabled: m.enabled,
        }
        .validate()
        .map_err(|e| invalid(&at.key(e.key), e.message))?;
        if let [name] = checked.incoming.as_slice() {
            if !digits(name) && !groups.iter().any(|g| &g.name == name) {
                return Err(invalid(
                    &at.key("incoming").index(0),
                    format!("`{name}` is neither an extension number nor a [[ring_group]]"),
                ));
            }
        }
        out.push(checked);
    }
    Ok(out)
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

impl RawLog {
    fn validate(self, at: &KeyPath) -> Checked<LogConfig> {
        let Some(level) = self.level else {
            return Ok(LogConfig::default());
        };
        let here = at.key("level");
        let plain = LEVELS.contains(&level.to_ascii_lowercase().as_str());
        let directives = (level.contains('=') || level.contains(','))
            && tracing_subscriber::EnvFilter::builder()
                .parse(&level)
                .is_ok();
        if plain || directives {
            Ok(LogConfig { level })
        } else {
            Err(invalid(
                &here,
                format!(
                    "`{level}` is not a log level (one of {}) nor a filter such as `info,pasarela::sip=debug`",
                    LEVELS.join(", ")
                ),
            ))
        }
    }
}

fn validate_extensions(raw: Vec<RawExtension>) -> Checked<Vec<ExtensionConfig>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, e) in raw.into_iter().enumerate() {
        let at = KeyPath::new("extension").index(i);
        if e.number.is_empty() || e.number.len() > 15 || !digits(&e.number) {
            return Err(invalid(
                &at.key("number"),
                format!("`{}` is not an extension number (1 to 15 digits)", e.number),
            ));
        }
        if !seen.insert(e.number.clone()) {
            return Err(invalid(
                &at.key("number"),
                format!("extension `{}` is defined twice", e.number),
            ));
        }
        if e.password.is_empty() {
            return Err(invalid(&at.key("password"), "must not be empty"));
        }
        if let Err(weak) = crate::security::password::check(&e.password, &e.number) {
            return Err(invalid(
                &at.key("password"),
                format!(
                    "the password of extension {} is too weak: it {weak}",
                    e.number
                ),
            ));
        }
        let mut allow = Vec::new();
        for (j, net) in e.allow.unwrap_or_default().iter().enumerate() {
            allow.push(
                net.parse()
                    .map_err(|err| invalid(&at.key("allow").index(j), format!("{err}")))?,
            );
        }
        if let Some(did) = &e.did {
            let ok = did
                .strip_prefix('+')
                .is_some_and(|d| !d.is_empty() && d.len() <= 15 && digits(d));
            if !ok {
                return Err(invalid(
                    &at.key("did"),
                    format!("`{did}` is not an E.164 number (`+` and 1 to 15 digits)"),
                ));
            }
        }
        out.push(ExtensionConfig {
            number: e.number,
            password: e.password,
            name: e.name,
            did: e.did,
            enabled: e.enabled.unwrap_or(true),
            permissions: permission_list(e.permissions, &at.key("permissions"))?,
            allow,
            legacy_digest: e.legacy_digest.unwrap_or(false),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// `[limits]`: fraud limits and resource caps.

/// Limits on the calls of one extension or trunk. `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallLimits {
    /// Calls at the same time (`concurrent_calls`).
    pub concurrent_calls: Option<u32>,
    /// Calls started within any 60 s (`calls_per_minute`).
    pub calls_per_minute: Option<u32>,
    /// Talk minutes of calls leaving the office per day (`minutes_per_day`).
    pub minutes_per_day: Option<u32>,
    /// Talk minutes of calls leaving the office per month (`minutes_per_month`).
    pub minutes_per_month: Option<u32>,
    /// Cost per day, minor units of the rate tables' currency (`cost_per_day = 5.0`: 500).
    pub cost_per_day: Option<i64>,
    /// Cost per month, minor units (`cost_per_month`).
    pub cost_per_month: Option<i64>,
}

impl CallLimits {
    /// `self`, with the limits it does not set taken from `defaults`.
    pub fn or(self, defaults: CallLimits) -> CallLimits {
        CallLimits {
            concurrent_calls: self.concurrent_calls.or(defaults.concurrent_calls),
            calls_per_minute: self.calls_per_minute.or(defaults.calls_per_minute),
            minutes_per_day: self.minutes_per_day.or(defaults.minutes_per_day),
            minutes_per_month: self.minutes_per_month.or(defaults.minutes_per_month),
            cost_per_day: self.cost_per_day.or(defaults.cost_per_day),
            cost_per_month: self.cost_per_month.or(defaults.cost_per_month),
        }
    }
}

/// `[limits]`: what one extension or trunk may do (toll-fraud limits), and the caps that keep
/// floods from exhausting the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Limits of every extension (`[limits]` keys `concurrent_calls` … `cost_per_month`;
    /// default 4 concurrent calls and 10 calls per minute, minutes and cost unlimited).
    pub extension_defaults: CallLimits,
    /// Per-extension overrides (`[limits.extension."100"]`); unset keys take the defaults.
    /// A value of 0 there means "no limit".
    pub extensions: Vec<(String, CallLimits)>,
    /// Per-trunk or per-line limits (`[limits.trunk.NAME]`, a `[[trunk]]` or `[[modem]]` name);
    /// trunks without an entry are unlimited.
    pub trunks: Vec<(String, CallLimits)>,
    /// Open SIP TCP connections in all (`tcp_connections`, default 1024).
    pub tcp_connections: usize,
    /// Open SIP TCP connections from one address (`tcp_connections_per_source`, default 32).
    pub tcp_connections_per_source: usize,
    /// A TCP connection that has not sent a valid SIP request after this long is closed
    /// (`tcp_first_request_secs`, default 10).
    pub tcp_first_request_secs: u64,
    /// SIP server transactions at once; beyond, new requests get 503 + Retry-After
    /// (`server_transactions`, default 200000: a call holds one for about 70 s over UDP, so
    /// 10000 capped the sustained rate near 150 calls/s).
    pub server_transactions: usize,
    /// Open dashboard connections (`web_connections`, default 256).
    pub web_connections: usize,
    /// Open dashboard connections from one address (`web_connections_per_source`, default 32).
    pub web_connections_per_source: usize,
    /// Time a dashboard client has to send a request's headers (`web_header_timeout_secs`,
    /// default 10).
    pub web_header_timeout_secs: u64,
    /// A new INVITE that waited longer than this (ms) before the SIP core could look at it is
    /// refused with 503 + Retry-After: the box is over capacity (`queue_delay_ms`, default 200).
    pub queue_delay_ms: u64,
    /// Calls in progress at once; new calls beyond get 503 + Retry-After (`max_calls`; default
    /// `None`: what the open-files limit allows at four sockets a call).
    pub max_calls: Option<usize>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            extension_defaults: CallLimits {
                concurrent_calls: Some(4),
                calls_per_minute: Some(10),
                ..CallLimits::default()
            },
            extensions: Vec::new(),
            trunks: Vec::new(),
            tcp_connections: 1024,
            tcp_connections_per_source: 32,
            tcp_first_request_secs: 10,
            server_transactions: crate::sip::transaction::DEFAULT_MAX_SERVER_TRANSACTIONS,
            web_connections: 256,
            web_connections_per_source: 32,
            web_header_timeout_secs: 10,
            queue_delay_ms: 200,
            max_calls: None,
        }
    }
}

impl LimitsConfig {
    /// The limits of extension `number` (its override over the defaults).
    pub fn for_extension(&self, number: &str) -> CallLimits {
        let own = self
            .extensions
            .iter()
            .find(|(n, _)| n == number)
            .map(|(_, l)| *l)
            .unwrap_or_default();
        unlimited_zeros(own.or(self.extension_defaults))
    }

    /// The limits of trunk or line `name` (unlimited unless configured).
    pub fn for_trunk(&self, name: &str) -> CallLimits {
        self.trunks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| unlimited_zeros(*l))
            .unwrap_or_default()
    }
}

/// 0 written in the file means "no limit".
fn unlimited_zeros(l: CallLimits) -> CallLimits {
    CallLimits {
        concurrent_calls: l.concurrent_calls.filter(|v| *v > 0),
        calls_per_minute: l.calls_per_minute.filter(|v| *v > 0),
        minutes_per_day: l.minutes_per_day.filter(|v| *v > 0),
        minutes_per_month: l.minutes_per_month.filter(|v| *v > 0),
        cost_per_day: l.cost_per_day.filter(|v| *v > 0),
        cost_per_month: l.cost_per_month.filter(|v| *v > 0),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallLimits {
    concurrent_calls: Option<u32>,
    calls_per_minute: Option<u32>,
    minutes_per_day: Option<u32>,
    minutes_per_month: Option<u32>,
    cost_per_day: Option<f64>,
    cost_per_month: Option<f64>,
}

impl RawCallLimits {
    fn validate(self, at: &KeyPath) -> Checked<CallLimits> {
        let money = |v: Option<f64>, key: &str| -> Checked<Option<i64>> {
            match v {
                None => Ok(None),
                Some(x) if x.is_finite() && (0.0..=1e12).contains(&x) => {
                    Ok(Some((x * 100.0).round() as i64))
                }
                Some(_) => Err(invalid(
                    &at.key(key),
                    "must be an amount of money, 0 or more",
                )),
            }
        };
        Ok(CallLimits {
            concurrent_calls: self.concurrent_calls,
            calls_per_minute: self.calls_per_minute,
            minutes_per_day: self.minutes_per_day,
            minutes_per_month: self.minutes_per_month,
            cost_per_day: money(self.cost_per_day, "cost_per_day")?,
            cost_per_month: money(self.cost_per_month, "cost_per_month")?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    concurrent_calls: Option<u32>,
    calls_per_minute: Option<u32>,
    minutes_per_day: Option<u32>,
    minutes_per_month: Option<u32>,
    cost_per_day: Option<f64>,
    cost_per_month: Option<f64>,
    tcp_connections: Option<usize>,
    tcp_connections_per_source: Option<usize>,
    tcp_first_request_secs: Option<u64>,
    server_transactions: Option<usize>,
    web_connections: Option<usize>,
    web_connections_per_source: Option<usize>,
    web_header_timeout_secs: Option<u64>,
    queue_delay_ms: Option<u64>,
    max_calls: Option<usize>,
    #[serde(default)]
    extension: std::collections::BTreeMap<String, RawCallLimits>,
    #[serde(default)]
    trunk: std::collections::BTreeMap<String, RawCallLimits>,
}

impl RawLimits {
    fn validate(self, at: &KeyPath) -> Checked<LimitsConfig> {
        let d = LimitsConfig::default();
        let own = RawCallLimits {
            concurrent_calls: self.concurrent_calls,
            calls_per_minute: self.calls_per_minute,
            minutes_per_day: self.minutes_per_day,
            minutes_per_month: self.minutes_per_month,
            cost_per_day: self.cost_per_day,
            cost_per_month: self.cost_per_month,
        }
        .validate(at)?;
        let mut extensions = Vec::new();
        for (number, raw) in self.extension {
            let here = at.key("extension").key(&number);
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(&here, "must be an extension number (digits)"));
            }
            extensions.push((number, raw.validate(&here)?));
        }
        let mut trunks = Vec::new();
        for (name, raw) in self.trunk {
            let here = at.key("trunk").key(&name);
            trunks.push((name, raw.validate(&here)?));
        }
        Ok(LimitsConfig {
            extension_defaults: own.or(d.extension_defaults),
            extensions,
            trunks,
            tcp_connections: positive(
                self.tcp_connections,
                d.tcp_connections,
                &at.key("tcp_connections"),
            )?,
            tcp_connections_per_source: positive(
                self.tcp_connections_per_source,
                d.tcp_connections_per_source,
                &at.key("tcp_connections_per_source"),
            )?,
            tcp_first_request_secs: positive(
                self.tcp_first_request_secs,
                d.tcp_first_request_secs,
                &at.key("tcp_first_request_secs"),
            )?,
            server_transactions: positive(
                self.server_transactions,
                d.server_transactions,
                &at.key("server_transactions"),
            )?,
            web_connections: positive(
                self.web_connections,
                d.web_connections,
                &at.key("web_connections"),
            )?,
            web_connections_per_source: positive(
                self.web_connections_per_source,
                d.web_connections_per_source,
                &at.key("web_connections_per_source"),
            )?,
            web_header_timeout_secs: positive(
                self.web_header_timeout_secs,
                d.web_header_timeout_secs,
                &at.key("web_header_timeout_secs"),
            )?,
            queue_delay_ms: positive(
                self.queue_delay_ms,
                d.queue_delay_ms,
                &at.key("queue_delay_ms"),
            )?,
            max_calls: match self.max_calls {
                None => None,
                v => Some(positive(v, 0, &at.key("max_calls"))?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("test.toml"))
    }

    /// Parses `text`, expecting an error; returns (line, key, rendered message).
    fn fail(text: &str) -> (usize, String, String) {
        match parse(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => (
                e.line().unwrap_or(0),
                e.key().unwrap_or("").to_owned(),
                e.to_string(),
            ),
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(
            c.sip
                .listen
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>(),
            ["udp:0.0.0.0:5060", "tcp:0.0.0.0:5060"]
        );
        assert_eq!(c.sip.domain, "pasarela.local");
        assert_eq!((c.sip.t1_ms, c.sip.t2_ms, c.sip.t4_ms), (500, 4000, 5000));
        assert_eq!(
            (c.sip.min_expires, c.sip.max_expires, c.sip.default_expires),
            (60, 3600, 3600)
        );
        assert_eq!(c.sip.nonce_ttl_secs, 300);
        assert_eq!(c.sip.tcp_idle_secs, 3600);
        assert_eq!(c.sip.max_message_bytes, 65535);
        assert_eq!(
            c.sip.user_agent,
            format!("pasarela/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(c.media.rtp_ports, 10000..=20000);
        assert_eq!(c.store.path, PathBuf::from("pasarela.db"));
        assert_eq!(c.web.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.numbering.country_code, "49");
        assert_eq!(c.numbering.national_prefix, "0");
        assert_eq!(c.numbering.international_prefix, "00");
        assert_eq!(c.enum_.suffixes, ["e164.arpa"]);
        assert!(c.enum_.nameservers.is_empty());
        assert_eq!(c.enum_.budget_ms, 500);
        assert_eq!(c.log.level, "info");
        assert!(c.extensions.is_empty());
        assert_eq!(c.source, None);
        assert_eq!(Config::load(None).ok(), Some(Config::default()));
    }

    #[test]
    fn empty_file_is_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.source.as_deref(), Some(Path::new("test.toml")));
        assert_eq!(Config { source: None, ..c }, Config::default());
        let c = parse("[sip]\n[media]\n[store]\n[web]\n[numbering]\n[enum]\n[log]\n").unwrap();
        assert_eq!(Config { source: None, ..c }, Config::default());
    }

    const FULL: &str = r#"
[sip]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]   # transport:address:port
domain = "office.test"                                    # realm for digest auth
t1_ms = 250
t2_ms = 2000
t4_ms = 3000
min_expires = 30
max_expires = 7200
default_expires = 600
nonce_ttl_secs = 120
tcp_idle_secs = 600
max_message_bytes = 8192
user_agent = "office-pbx"

[media]
rtp_ports = "10000-20000"

[store]
path = "pasarela.db"                                      # SQLite file

[web]
listen = "127.0.0.1:8080"

[numbering]
country_code = "49"
national_prefix = "0"
international_prefix = "00"

[enum]
suffixes = ["e164.arpa"]
nameservers = ["127.0.0.1:53"]                            # omit to use the system resolver
budget_ms = 500                                           # total time ENUM/DUNDi may take per call

[log]
level = "debug"

[[extension]]
number = "100"
password = "secret100"
name = "Reception"
did = "+4930123456"                                       # optional

[[extension]]
number = "101"
password = "secret101"
enabled = false
"#;

    #[test]
    fn full_file_parses() {
        let c = parse(FULL).unwrap();
        assert_eq!(
            c.sip.listen,
            [
                ListenAddr {
                    transport: Transport::Udp,
                    addr: "127.0.0.1:5060".parse().unwrap()
                },
                ListenAddr {
                    transport: Transport::Tcp,
                    addr: "127.0.0.1:5060".parse().unwrap()
                },
            ]
        );
        assert_eq!(c.sip.domain, "office.test");
        assert_eq!((c.sip.t1_ms, c.sip.t2_ms, c.sip.t4_ms), (250, 2000, 3000));
        assert_eq!(
            (c.sip.min_expires, c.sip.max_expires, c.sip.default_expires),
            (30, 7200, 600)
        );
        assert_eq!((c.sip.nonce_ttl_secs, c.sip.tcp_idle_secs), (120, 600));
        assert_eq!(c.sip.max_message_bytes, 8192);
        assert_eq!(c.sip.user_agent, "office-pbx");
        assert_eq!(c.media.rtp_ports, 10000..=20000);
        assert_eq!(c.store.path, PathBuf::from("pasarela.db"));
        assert_eq!(c.web.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.enum_.suffixes, ["e164.arpa"]);
        assert_eq!(c.enum_.nameservers, ["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(c.enum_.budget_ms, 500);
        assert_eq!(c.log.level, "debug");
        assert_eq!(
            c.extensions,
            [
                ExtensionConfig {
                    number: "100".into(),
                    password: "secret100".into(),
                    name: Some("Reception".into()),
                    did: Some("+4930123456".into()),
                    enabled: true,
                    permissions: None,
                    allow: Vec::new(),
                    legacy_digest: false,
                },
                ExtensionConfig {
                    number: "101".into(),
                    password: "secret101".into(),
                    name: None,
                    did: None,
                    enabled: false,
                    permissions: None,
                    allow: Vec::new(),
                    legacy_digest: false,
                },
            ]
        );
    }

    #[test]
    fn listen_addr_forms() {
        let l: ListenAddr = "tcp:[::1]:5060".parse().unwrap();
        assert_eq!(l.transport, Transport::Tcp);
        assert_eq!(l.addr, "[::1]:5060".parse().unwrap());
        assert_eq!(l.to_string(), "tcp:[::1]:5060");
        assert_eq!(
            "UDP:10.0.0.1:5062".parse::<ListenAddr>().unwrap().transport,
            Transport::Udp
        );
        assert!("sctp:1.2.3.4:5060".parse::<ListenAddr>().is_err());
        assert!("udp:1.2.3.4".parse::<ListenAddr>().is_err());
        assert!("1.2.3.4:5060".parse::<ListenAddr>().is_err());
        assert_eq!(Transport::Udp.to_string(), "udp");
    }

    #[test]
    fn nameserver_without_port_means_53() {
        let c = parse("[enum]\nnameservers = [\"::1\", \"127.0.0.1:5353\"]\n").unwrap();
        assert_eq!(
            c.enum_.nameservers,
            [
                "[::1]:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:5353".parse().unwrap()
            ]
        );
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = parse("[sip]\ndomain = \"x\"\nlisten = [\n").unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
        assert!(err.to_string().starts_with("test.toml:"), "{err}");
        let err = parse("[sip]\ndomain = = 3\n").unwrap_err();
        assert_eq!(err.line(), Some(2), "{err}");
    }

    #[test]
    fn unknown_key_in_table() {
        let (line, key, msg) = fail("[sip]\ndomain = \"a\"\nlisen = []\n");
        assert_eq!((line, key.as_str()), (3, "sip.lisen"), "{msg}");
        assert!(
            msg.starts_with("test.toml:3: key `sip.lisen`: unknown key"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_top_level_table() {
        let (line, key, msg) = fail("[sip]\ndomain = \"a\"\n\n[sipp]\nx = 1\n");
        assert_eq!((line, key.as_str()), (4, "sipp"), "{msg}");
    }

    #[test]
    fn unknown_key_in_array_of_tables() {
        let text = "[[extension]]\nnumber = \"100\"\npassword = \"pw-a-secret\"\n\n[[extension]]\nnumber = \"101\"\npasword = \"b\"\n";
        let (line, key, msg) = fail(text);
        assert_eq!((line, key.as_str()), (7, "extension[1].pasword"), "{msg}");
    }

    #[test]
    fn type_errors() {
        let (line, key, msg) = fail("[sip]\ndomain = \"a\"\nt1_ms = \"fast\"\n");
        assert_eq!((line, key.as_str()), (3, "sip.t1_ms"), "{msg}");
        let (line, key, msg) = fail("[sip]\nmin_expires = -5\n");
        assert_eq!((line, key.as_str()), (2, "sip.min_expires"), "{msg}");
        let (line, key, msg) = fail("[sip]\nlisten = [\n  \"udp:127.0.0.1:5060\",\n  5060,\n]\n");
        assert_eq!((line, key.as_str()), (4, "sip.listen[1]"), "{msg}");
        let (line, key, msg) = fail(
            "[[extension]]\nnumber = \"100\"\npassword = \"pw-x-secret\"\nenabled = \"yes\"\n",
        );
        assert_eq!((line, key.as_str()), (4, "extension[0].enabled"), "{msg}");
        let (line, key, msg) = fail("sip = 3\n");
        assert_eq!((line, key.as_str()), (1, "sip"), "{msg}");
    }

    #[test]
    fn missing_required_key_points_at_its_table() {
        let text = "[sip]\ndomain = \"a\"\n\n[[extension]]\nnumber = \"100\"\npassword = \"pw-a-secret\"\n\n[[extension]]\nnumber = \"101\"\n";
        let (line, key, msg) = fail(text);
        // Line 8 is the `[[extension]]` header of the second entry.
        assert_eq!((line, key.as_str()), (8, "extension[1].password"), "{msg}");
    }

    #[test]
    fn bad_listen_strings() {
        let text = "[sip]\nlisten = [\n  \"udp:127.0.0.1:5060\",\n  \"sctp:127.0.0.1:5060\",\n]\n";
        let (line, key, msg) = fail(text);
        assert_eq!((line, key.as_str()), (4, "sip.listen[1]"), "{msg}");
        assert!(msg.contains("unknown transport `sctp`"), "{msg}");
        let (line, key, msg) =
            fail("[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"tcp:localhost:5060\"]\n");
        assert_eq!((line, key.as_str()), (2, "sip.listen[1]"), "{msg}");
        assert!(
            msg.starts_with("test.toml:2: key `sip.listen[1]`: `localhost:5060` is not"),
            "{msg}"
        );
        let (_, key, _) = fail("[sip]\nlisten = []\n");
        assert_eq!(key, "sip.listen");
        let (_, key, _) = fail("[sip]\nlisten = [\"udp:[::]:5060\", \"udp:[::]:5060\"]\n");
        assert_eq!(key, "sip.listen[1]");
    }

    #[test]
    fn bad_rtp_ports() {
        for bad in [
            "10000",
            "20000-10000",
            "10001-20000",
            "a-b",
            "0-100",
            "10000-70000",
        ] {
            let text = format!("\n[media]\nrtp_ports = \"{bad}\"\n");
            let (line, key, msg) = fail(&text);
            assert_eq!((line, key.as_str()), (3, "media.rtp_ports"), "{bad}: {msg}");
        }
        let c = parse("[media]\nrtp_ports = \"4000-4000\"\n").unwrap();
        assert_eq!(c.media.rtp_ports, 4000..=4000);
    }

    #[test]
    fn timer_and_expiry_relations() {
        let (line, key, msg) = fail("[sip]\nt2_ms = 1000\nt1_ms = 2000\n");
        assert_eq!((line, key.as_str()), (3, "sip.t1_ms"), "{msg}");
        // Only t2 given: blame t2.
        let (line, key, msg) = fail("[sip]\ndomain = \"x\"\nt2_ms = 100\n");
        assert_eq!((line, key.as_str()), (3, "sip.t2_ms"), "{msg}");
        let (line, key, msg) = fail("[sip]\nmin_expires = 600\nmax_expires = 300\n");
        assert_eq!((line, key.as_str()), (2, "sip.min_expires"), "{msg}");
        let (line, key, msg) = fail("[sip]\ndefault_expires = 10\n");
        assert_eq!((line, key.as_str()), (2, "sip.default_expires"), "{msg}");
        let (_, key, _) = fail("[sip]\nt1_ms = 0\n");
        assert_eq!(key, "sip.t1_ms");
        // A default that falls outside a configured range is clamped, not an error.
        let c = parse("[sip]\nmax_expires = 1800\n").unwrap();
        assert_eq!(c.sip.default_expires, 1800);
    }

    #[test]
    fn extension_errors() {
        let ext = |number: &str, extra: &str| {
            format!("[[extension]]\nnumber = \"{number}\"\npassword = \"pw-pw-secret\"\n{extra}\n")
        };
        for bad in ["", "12a", "1234567890123456", "+100"] {
            let (line, key, msg) = fail(&ext(bad, ""));
            assert_eq!((line, key.as_str()), (2, "extension[0].number"), "{msg}");
        }
        let (line, key, msg) = fail("[[extension]]\nnumber = \"1\"\npassword = \"\"\n");
        assert_eq!((line, key.as_str()), (3, "extension[0].password"), "{msg}");
        for bad in ["4930123", "+", "+49 30", "+4930x"] {
            let (line, key, msg) = fail(&ext("100", &format!("did = \"{bad}\"")));
            assert_eq!((line, key.as_str()), (4, "extension[0].did"), "{msg}");
        }
        // Weak passwords are refused as the dashboard refuses them, naming extension and key.
        for weak in ["1234", "12345678", "password", "abcdefgh"] {
            let (line, key, msg) = fail(&format!(
                "[[extension]]\nnumber = \"104\"\npassword = \"{weak}\"\n"
            ));
            assert_eq!((line, key.as_str()), (3, "extension[0].password"), "{msg}");
            assert!(
                msg.contains("extension 104") && msg.contains("too weak"),
                "{msg}"
            );
        }
        let (line, key, msg) = fail(&ext("100", "allow = [\"10.0.0.0/8\", \"lan\"]"));
        assert_eq!((line, key.as_str()), (4, "extension[0].allow[1]"), "{msg}");
        let c = parse(&ext(
            "100",
            "allow = [\"192.168.1.0/24\"]\nlegacy_digest = true",
        ))
        .unwrap();
        assert!(c.extensions[0].allow[0].contains("192.168.1.9".parse().unwrap()));
        assert!(c.extensions[0].legacy_digest);
    }

    #[test]
    fn duplicate_extension_points_at_the_second() {
        let mut text = String::from("[sip]\ndomain = \"office.test\"\n");
        for n in ["100", "101", "102", "101"] {
            text.push_str(&format!(
                "\n[[extension]]\nname = \"x\"\nnumber = \"{n}\"\npassword = \"pw-pw-secret\"\n"
            ));
        }
        let (line, key, msg) = fail(&text);
        // Fourth entry: blank line 18, header 19, name 20, number 21.
        assert_eq!((line, key.as_str()), (21, "extension[3].number"), "{msg}");
        assert!(msg.contains("defined twice"), "{msg}");
    }

    #[test]
    fn log_levels() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "warn,pasarela::sip=trace",
            "pasarela=debug",
        ] {
            assert_eq!(
                parse(&format!("[log]\nlevel = \"{ok}\"\n"))
                    .unwrap()
                    .log
                    .level,
                ok
            );
        }
        for bad in ["verbose", "", "info,pasarela=loud"] {
            let (line, key, msg) = fail(&format!("\n[log]\nlevel = \"{bad}\"\n"));
            assert_eq!((line, key.as_str()), (3, "log.level"), "{bad}: {msg}");
        }
    }

    #[test]
    fn other_value_errors() {
        let (line, key, _) = fail("[web]\nlisten = \"localhost\"\n");
        assert_eq!((line, key.as_str()), (2, "web.listen"));
        let (line, key, _) = fail("[enum]\nnameservers = [\"127.0.0.1:53\", \"dns.example\"]\n");
        assert_eq!((line, key.as_str()), (2, "enum.nameservers[1]"));
        let (_, key, _) = fail("[enum]\nsuffixes = [\"\"]\n");
        assert_eq!(key, "enum.suffixes[0]");
        let (_, key, _) = fail("[enum]\nbudget_ms = 0\n");
        assert_eq!(key, "enum.budget_ms");
        let (_, key, _) = fail("[numbering]\ncountry_code = \"+49\"\n");
        assert_eq!(key, "numbering.country_code");
        let (_, key, _) = fail("[sip]\ndomain = \"\"\n");
        assert_eq!(key, "sip.domain");
    }

    #[test]
    fn inline_tables_and_dotted_keys_are_located() {
        let (line, key, msg) = fail("sip.domain = \"x\"\nsip.t1_ms = 9000\n");
        assert_eq!((line, key.as_str()), (2, "sip.t1_ms"), "{msg}");
        let text = "extension = [\n  { number = \"1\", password = \"pw-a-secret\" },\n  { number = \"1\", password = \"pw-b-secret\" },\n]\n";
        let (line, key, msg) = fail(text);
        assert_eq!((line, key.as_str()), (3, "extension[1].number"), "{msg}");
    }

    #[test]
    fn load_reads_files_and_reports_io_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, FULL).unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.source.as_deref(), Some(path.as_path()));
        assert_eq!(c.sip.domain, "office.test");

        let missing = dir.path().join("missing.toml");
        let err = Config::load(Some(&missing)).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("{}: cannot read: ", missing.display())),
            "{shown}"
        );

        std::fs::write(&path, "[sip]\n\nlisen = 1\n").unwrap();
        let shown = Config::load(Some(&path)).unwrap_err().to_string();
        assert_eq!(
            shown.split(": unknown key").next(),
            Some(format!("{}:3: key `sip.lisen`", path.display()).as_str())
        );
    }

    #[test]
    fn routing_keys() {
        use crate::routing::{Permission, Permissions};
        let c = parse(
            r#"
[numbering]
default_permissions = ["internal", "national"]

[enum]
max_chain = 3
cache_entries = 50

[enum_zone]
enabled = true
listen = "127.0.0.1:5400"
suffix = "e164.office.test"
sip_host = "pbx.office.test:5070"

[[trunk]]
name = "carrier"
uri = "sip:gw.carrier.test;transport=tcp"
username = "u1"
password = "pw-p1-secret"
number_format = "national"

[[extension]]
number = "100"
password = "pw-x-secret"
permissions = ["all"]

[[extension]]
number = "101"
password = "pw-y-secret"
"#,
        )
        .unwrap();
        let d = &c.numbering.default_permissions;
        assert!(d.allows(Permission::National) && !d.allows(Permission::Mobile));
        assert_eq!(c.enum_.max_chain, 3);
        assert_eq!(c.enum_.cache_entries, 50);
        assert!(c.enum_zone.enabled);
        assert_eq!(c.enum_zone.listen, "127.0.0.1:5400".parse().unwrap());
        assert_eq!(
            c.enum_zone.sip_host.as_deref(),
            Some("pbx.office.test:5070")
        );
        assert_eq!(c.trunks.len(), 1);
        assert_eq!(c.trunks[0].number_format, NumberFormat::National);
        assert_eq!(c.trunks[0].uri.transport().as_deref(), Some("tcp"));
        assert_eq!(c.extensions[0].permissions, Some(Permissions::all()));
        assert_eq!(c.extensions[1].permissions, None);
        assert_eq!(c.calls.failover_ms, 4000);

        let d = Config::default();
        assert!(!d.enum_zone.enabled);
        assert!(d.trunks.is_empty());
        assert!(!d
            .numbering
            .default_permissions
            .allows(Permission::International));
    }

    #[test]
    fn inbound_keys() {
        let c = parse(
            "[[trunk]]\nname = \"a\"\nuri = \"sip:gw.test\"\nsources = [\"192.0.2.0/28\", \"gw.test\"]\n\
             [inbound]\npublic = true\npeer_max_calls = 2\n\
             [[inbound.route]]\nnumber = \"+4930123450\"\ndestination = \"sales\"\n\
             [[inbound.route]]\nnumber = \"+4930123451\"\ndestination = \"101\"\n\
             [[ring_group]]\nname = \"sales\"\nmembers = [\"100\", \"101\"]\n",
        )
        .unwrap();
        assert_eq!(c.trunks[0].sources, ["192.0.2.0/28", "gw.test"]);
        assert!(c.inbound.public);
        assert_eq!(c.inbound.peer_max_calls, 2);
        assert_eq!(c.inbound.peer_calls_per_minute, 20);
        assert_eq!(c.inbound.routes.len(), 2);
        assert_eq!(c.ring_groups[0].members, ["100", "101"]);
        let (_, key, _) =
            fail("[[trunk]]\nname = \"a\"\nuri = \"sip:gw.test\"\nsources = [\"ok.test\", \"10.0.0.0/40\"]\n");
        assert_eq!(key, "trunk[0].sources[1]");
        let (_, key, _) = fail("[inbound]\npeer_max_calls = 0\n");
        assert_eq!(key, "inbound.peer_max_calls");
        let (_, key, _) = fail("[[inbound.route]]\nnumber = \"030123\"\ndestination = \"100\"\n");
        assert_eq!(key, "inbound.route[0].number");
        let (_, key, _) =
            fail("[[inbound.route]]\nnumber = \"+4930123450\"\ndestination = \"nobody\"\n");
        assert_eq!(key, "inbound.route[0].destination");
        let (_, key, _) = fail("[[ring_group]]\nname = \"123\"\nmembers = [\"100\"]\n");
        assert_eq!(key, "ring_group[0].name");
        let (_, key, _) = fail("[[ring_group]]\nname = \"g\"\nmembers = [\"x\"]\n");
        assert_eq!(key, "ring_group[0].members[0]");
    }

    #[test]
    fn routing_key_errors() {
        let (line, key, _) =
            fail("[[extension]]\nnumber = \"1\"\npassword = \"pw-x-secret\"\npermissions = [\"national\", \"moon\"]\n");
        assert_eq!((line, key.as_str()), (4, "extension[0].permissions[1]"));
        let (line, key, _) = fail("[numbering]\ndefault_permissions = [\"everything\"]\n");
        assert_eq!(
            (line, key.as_str()),
            (2, "numbering.default_permissions[0]")
        );
        let (line, key, _) = fail("[[trunk]]\nname = \"a\"\nuri = \"tel:+4930\"\n");
        assert_eq!((line, key.as_str()), (3, "trunk[0].uri"));
        let (_, key, _) =
            fail("[[trunk]]\nname = \"a\"\nuri = \"sip:gw.test\"\nusername = \"u\"\n");
        assert_eq!(key, "trunk[0].password");
        let (_, key, _) =
            fail("[[trunk]]\nname = \"a\"\nuri = \"sip:gw.test\"\n[[trunk]]\nname = \"a\"\nuri = \"sip:gw2.test\"\n");
        assert_eq!(key, "trunk[1].name");
        let (_, key, _) = fail("[[trunk]]\nname = \"a\"\nuri = \"sip:gw.test;transport=sctp\"\n");
        assert_eq!(key, "trunk[0].uri");
        let (_, key, _) =
            fail("[[trunk]]\nname = \"a\"\nuri = \"sip:gw.test\"\nnumber_format = \"weird\"\n");
        assert_eq!(key, "trunk[0].number_format");
        let (_, key, _) = fail("[enum_zone]\nlisten = \"localhost\"\n");
        assert_eq!(key, "enum_zone.listen");
        let (_, key, _) = fail("[enum_zone]\nsuffix = \"a..b\"\n");
        assert_eq!(key, "enum_zone.suffix");
        let (_, key, _) = fail("[enum]\nmax_chain = 99\n");
        assert_eq!(key, "enum.max_chain");
        let (line, key, _) =
            fail("[enum.tree_nameservers]\n\"priv.test\" = [\"127.0.0.1:5353\", \"x\"]\n");
        assert_eq!(
            (line, key.as_str()),
            (2, "enum.tree_nameservers.\"priv.test\"[1]")
        );
        let c = parse("[enum.tree_nameservers]\n\"priv.test\" = [\"127.0.0.1\"]\n").unwrap();
        assert_eq!(
            c.enum_.tree_nameservers,
            [(
                "priv.test".to_owned(),
                vec!["127.0.0.1:53".parse().unwrap()]
            )]
        );
        let (_, key, _) = fail("[calls]\nfailover_ms = 0\n");
        assert_eq!(key, "calls.failover_ms");
    }
}
