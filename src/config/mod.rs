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
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

// One file per section of the file: its `Raw*` type as written and the checks that map it onto
// the settings type (with `Default`) of the module that uses it, re-exported here so
// `config::X` paths keep working. `keys` has the key paths every error names.
mod calls;
pub use calls::*;
mod dundi;
pub use dundi::*;
mod enum_;
pub use enum_::*;
mod extensions;
pub use extensions::*;
mod inbound;
pub use inbound::*;
mod keys;
use keys::*;
mod limits;
pub use limits::*;
mod lines;
use lines::*;
mod logging;
pub use logging::*;
mod media;
pub use media::*;
mod numbering;
pub use numbering::*;
mod sip;
pub use sip::*;
mod store;
pub use store::*;
mod tls;
pub use tls::*;
mod trunks;
pub use trunks::*;
mod web;
pub use web::*;

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
    /// The call forwarding and ring order of each `[[extension]]` (`forward_*`, `ring_*` keys),
    /// seeding the store ([`crate::store::forwards`]).
    pub call_handling: Vec<(String, crate::routing::forwarding::CallHandling)>,
    /// The call and pickup groups of each `[[extension]]` (`call_group`, `pickup_group`),
    /// seeding the store ([`crate::store::pickup`]).
    pub pickup_groups: Vec<(String, crate::routing::pickup::PickupGroups)>,
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

impl Config {
    /// What routing takes from the file: `[numbering]`, `[enum]` and the trunks.
    pub fn routing(&self) -> crate::routing::setup::RoutingConfig<'_> {
        crate::routing::setup::RoutingConfig {
            numbering: &self.numbering,
            enum_: &self.enum_,
            trunks: &self.trunks,
        }
    }

    /// The names of the PSTN lines (`[[modem]]`, `[[fxo]]`), which are trunks for the router.
    pub fn pstn_line_names(&self) -> Vec<&str> {
        let modems = self.modems.iter().map(|m| m.line.line.name.as_str());
        modems
            .chain(self.fxo.iter().map(|f| f.settings.name.as_str()))
            .collect()
    }

    /// The files a backup keeps besides the store ([`crate::store::backup::files_of`]).
    pub fn backup_files(&self) -> Vec<(String, PathBuf)> {
        crate::store::backup::files_of(self.source.as_deref(), &self.dundi.settings)
    }

    /// The extensions a command-line tool should know
    /// ([`crate::store::extensions_for_tools`]).
    pub fn extensions_for_tools(
        &self,
    ) -> Result<Vec<crate::store::ExtensionRow>, crate::store::StoreError> {
        crate::store::extensions_for_tools(&self.store.path, &self.sip.domain, &self.extensions)
    }

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
    modems: Vec<crate::pstn::gsm::config::RawModem>,
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

// ---------------------------------------------------------------------------------------------
// Validation.

impl RawConfig {
    fn validate(self) -> Checked<Config> {
        let srtp = self.srtp_policies()?;
        let call_handling = validate_call_handling(&self.extensions)?;
        let pickup_groups = validate_pickup_groups(&self.extensions)?;
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
            call_handling,
            pickup_groups,
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

// ---------------------------------------------------------------------------------------------
// `[limits]`: fraud limits and resource caps.

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
