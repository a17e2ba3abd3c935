//! What a DUNDi node is configured with: our identity and keys, what we answer (mappings), whom
//! we peer with. Plain data; the `[dundi]` TOML section maps onto it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::eid::Eid;
use super::wire::{answer_flags, proto};

/// The DUNDi port.
pub const DEFAULT_PORT: u16 = 4520;

/// A node's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Our EID; `None` takes the machine's first non-zero MAC address (as Asterisk does).
    pub eid: Option<Eid>,
    /// Where to listen (default `0.0.0.0:4520`).
    pub bind: SocketAddr,
    /// Our private key (`NAME.key`), needed for encrypted peers.
    pub private_key: Option<PathBuf>,
    /// Our public key (`NAME.pub`), for display and for handing to peers.
    pub public_key: Option<PathBuf>,
    /// What EIDQUERY answers about us.
    pub entity: EntityInfo,
    /// What we answer for.
    pub mappings: Vec<Mapping>,
    /// Whom we talk to.
    pub peers: Vec<PeerSettings>,
    /// Expiration we give our answers, and the longest we keep answers (Asterisk `cachetime`,
    /// default 3600 s).
    pub cache_ttl: Duration,
    /// Life of our session keys (Asterisk `keyttl`, default 3600 s).
    pub key_ttl: Duration,
    /// TTL (hops) of our lookups (Asterisk `ttl`, default 120).
    pub ttl: u16,
    /// Our address as `${IPADDR}` in destinations (Asterisk: the bind address or the host's).
    pub ipaddr: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            eid: None,
            bind: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            private_key: None,
            public_key: None,
            entity: EntityInfo::default(),
            mappings: Vec::new(),
            peers: Vec::new(),
            cache_ttl: Duration::from_secs(3600),
            key_ttl: super::crypto::DEFAULT_KEY_TTL,
            ttl: 120,
            ipaddr: String::new(),
        }
    }
}

/// The contact record EIDQUERY returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntityInfo {
    pub department: String,
    pub organization: String,
    pub locality: String,
    pub state_prov: String,
    pub country: String,
    pub email: String,
    pub phone: String,
    /// Only sent when not empty.
    pub ipaddr: String,
}

/// Technology of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tech {
    #[default]
    Sip,
    Pjsip,
    Iax2,
    H323,
}

impl Tech {
    /// `proto::*` code.
    pub fn code(self) -> u8 {
        match self {
            Tech::Sip => proto::SIP,
            Tech::Pjsip => proto::PJSIP,
            Tech::Iax2 => proto::IAX,
            Tech::H323 => proto::H323,
        }
    }
}

/// One mapping (Asterisk `[mappings]` line): answer lookups in DUNDi `context` for numbers that
/// [`super::numbers::LocalNumbers`] says are ours in `local_context`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// DUNDi context asked for (e.g. `e164`).
    pub context: String,
    /// Handed to the local-numbers predicate.
    pub local_context: String,
    pub weight: u16,
    pub tech: Tech,
    /// Destination template: `${NUMBER}`, `${IPADDR}` and `${EID}` are replaced,
    /// e.g. `${NUMBER}@${IPADDR}:5060`.
    pub destination: String,
    /// Extra answer flags (`answer_flags::NOUNSOLICITED` …).
    pub options: u16,
    /// Asterisk `nopartial`: never answer MATCHMORE/CANMATCH.
    pub no_partial: bool,
}

impl Mapping {
    /// A SIP mapping with Asterisk's typical options (`nounsolicited,nocomunsolicit`).
    pub fn sip(context: &str, local_context: &str, destination: &str) -> Mapping {
        Mapping {
            context: context.to_string(),
            local_context: local_context.to_string(),
            weight: 0,
            tech: Tech::Sip,
            destination: destination.to_string(),
            options: answer_flags::NOUNSOLICITED | answer_flags::NOCOMUNSOLICIT,
            no_partial: false,
        }
    }
}

/// Which way lookups may go with a peer (Asterisk `model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Model {
    /// They may ask us.
    Inbound,
    /// We may ask them.
    Outbound,
    /// Both.
    #[default]
    Symmetric,
}

impl Model {
    pub fn inbound(self) -> bool {
        matches!(self, Model::Inbound | Model::Symmetric)
    }
    pub fn outbound(self) -> bool {
        matches!(self, Model::Outbound | Model::Symmetric)
    }
}

/// One peer (Asterisk `[EID]` section).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerSettings {
    pub eid: Eid,
    /// Where it listens (port 4520 unless said otherwise).
    pub address: SocketAddr,
    pub model: Model,
    /// Lower is asked first (Asterisk `order`: primary 0, secondary 1 …).
    pub order: u32,
    /// Contexts we ask this peer about (`include`); `"all"` for every context.
    pub include: Vec<String>,
    /// Contexts this peer may ask us about (`permit`); `"all"` for every context.
    pub permit: Vec<String>,
    /// The peer's public key (Asterisk `inkey`): with it, traffic with this peer is encrypted
    /// and its unencrypted queries are refused.
    pub inkey: Option<PathBuf>,
    /// Our private key for this peer (Asterisk `outkey`); defaults to [`Settings::private_key`].
    pub outkey: Option<PathBuf>,
    /// Qualify the peer with NULL pings at this interval (Asterisk `qualify=yes`: 60 s, 10 s
    /// while unreachable); `None` to not qualify.
    pub qualify: Option<Duration>,
    /// Precache model (Asterisk `precache`): `Outbound`/`Symmetric` — we push the answers for
    /// our numbers to this peer (PRECACHERQ) in contexts it is `permit`ted, at start, on
    /// [`super::service::DundiHandle::precache`] and again when the answers expire;
    /// `Inbound`/`Symmetric` — we take its PRECACHERQ for contexts in `include`, encrypted
    /// when the peer has an `inkey`, else only from its exact `address` and port. `None`
    /// (Asterisk `none`, the default): no pushing either way.
    pub precache: Option<Model>,
}

impl PeerSettings {
    /// A symmetric peer asked and answering for `context`, unencrypted, not qualified.
    pub fn new(eid: Eid, address: SocketAddr, context: &str) -> PeerSettings {
        PeerSettings {
            eid,
            address,
            model: Model::Symmetric,
            order: 0,
            include: vec![context.to_string()],
            permit: vec![context.to_string()],
            inkey: None,
            outkey: None,
            qualify: None,
            precache: None,
        }
    }

    /// We push precache to this peer (Asterisk `precache=outbound` or `symmetric`).
    pub fn precache_outbound(&self) -> bool {
        self.precache.is_some_and(Model::outbound)
    }

    /// This peer may push precache to us (Asterisk `precache=inbound` or `symmetric`). The
    /// `model` has no say: a symmetric peer that may ask us and be asked does not thereby get
    /// to write into our cache.
    pub fn precache_inbound(&self) -> bool {
        self.precache.is_some_and(Model::inbound)
    }
}

/// Whether `list` allows `context` (`all` allows everything).
pub fn has_permission(list: &[String], context: &str) -> bool {
    list.iter()
        .any(|c| c.eq_ignore_ascii_case("all") || c.eq_ignore_ascii_case(context))
}

/// A configuration value that does not parse; the message names what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl std::str::FromStr for Model {
    type Err = SettingsError;

    /// `inbound`, `outbound` or `symmetric` (Asterisk's `model=` values).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "inbound" => Ok(Model::Inbound),
            "outbound" => Ok(Model::Outbound),
            "symmetric" => Ok(Model::Symmetric),
            _ => Err(SettingsError(format!(
                "model {s:?}: expected inbound, outbound or symmetric"
            ))),
        }
    }
}

impl std::str::FromStr for Tech {
    type Err = SettingsError;

    /// `SIP`, `PJSIP`, `IAX2` (or `IAX`), `H323`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "SIP" => Ok(Tech::Sip),
            "PJSIP" => Ok(Tech::Pjsip),
            "IAX2" | "IAX" => Ok(Tech::Iax2),
            "H323" => Ok(Tech::H323),
            _ => Err(SettingsError(format!(
                "technology {s:?}: expected SIP, PJSIP, IAX2 or H323"
            ))),
        }
    }
}

/// A peer address: `IP` or `IP:port` (IPv6 as `[addr]:port`); the port defaults to 4520.
pub fn parse_peer_address(s: &str) -> Result<SocketAddr, SettingsError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let host = s.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_PORT))
        .map_err(|_| SettingsError(format!("address {s:?}: expected IP or IP:port")))
}

/// Mapping options as Asterisk writes them (`nounsolicited`, `nocomunsolicit`, `residential`,
/// `commercial`, `mobile`, `nopartial`): the answer flags and whether `nopartial` was given.
pub fn parse_mapping_options<S: AsRef<str>>(opts: &[S]) -> Result<(u16, bool), SettingsError> {
    let mut flags = 0;
    let mut no_partial = false;
    for o in opts {
        match o.as_ref().to_ascii_lowercase().as_str() {
            "nounsolicited" => flags |= answer_flags::NOUNSOLICITED,
            "nocomunsolicit" => flags |= answer_flags::NOCOMUNSOLICIT,
            "residential" => flags |= answer_flags::RESIDENTIAL,
            "commercial" => flags |= answer_flags::COMMERCIAL,
            "mobile" => flags |= answer_flags::MOBILE,
            "nopartial" => no_partial = true,
            other => {
                return Err(SettingsError(format!(
                    "mapping option {other:?}: expected nounsolicited, nocomunsolicit, \
                     residential, commercial, mobile or nopartial"
                )))
            }
        }
    }
    Ok((flags, no_partial))
}

impl Settings {
    /// Checks what can be checked without reading files: unique peers, usable mappings.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (i, p) in self.peers.iter().enumerate() {
            if self.peers[..i].iter().any(|q| q.eid == p.eid) {
                return Err(SettingsError(format!("peer {} is listed twice", p.eid)));
            }
            if Some(p.eid) == self.eid {
                return Err(SettingsError(format!("peer {} is our own EID", p.eid)));
            }
            if p.inkey.is_some() && p.outkey.is_none() && self.private_key.is_none() {
                return Err(SettingsError(format!(
                    "peer {} has an inkey (encryption) but there is no private key",
                    p.eid
                )));
            }
        }
        for m in &self.mappings {
            if m.context.is_empty() {
                return Err(SettingsError("mapping without a context".into()));
            }
            if m.destination.is_empty() {
                return Err(SettingsError(format!(
                    "mapping for {} has no destination",
                    m.context
                )));
            }
        }
        if self.key_ttl.is_zero() {
            return Err(SettingsError("key_ttl must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_config_values() {
        assert_eq!("Symmetric".parse::<Model>().unwrap(), Model::Symmetric);
        assert!("both".parse::<Model>().is_err());
        assert_eq!("pjsip".parse::<Tech>().unwrap(), Tech::Pjsip);
        assert_eq!(
            parse_peer_address("127.0.0.2").unwrap(),
            "127.0.0.2:4520".parse().unwrap()
        );
        assert_eq!(
            parse_peer_address("[::1]").unwrap(),
            "[::1]:4520".parse().unwrap()
        );
        assert_eq!(parse_peer_address("10.0.0.1:4521").unwrap().port(), 4521);
        assert!(parse_peer_address("example.org").is_err());
        assert_eq!(
            parse_mapping_options(&["nounsolicited", "nocomunsolicit"]).unwrap(),
            (0x180, false)
        );
        assert!(parse_mapping_options(&["nopartial"]).unwrap().1);
        assert!(parse_mapping_options(&["bogus"]).is_err());
        let mut s = Settings::default();
        let e: Eid = "02:00:00:00:00:02".parse().unwrap();
        s.peers.push(PeerSettings::new(
            e,
            "127.0.0.2:4520".parse().unwrap(),
            "e164",
        ));
        assert!(s.validate().is_ok());
        s.peers.push(s.peers[0].clone());
        assert!(s.validate().is_err());
    }
}
