//! `[media]`: the RTP relay's ports and addresses.

use super::*;

/// `[media]`: RTP settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// Local UDP ports for RTP/RTCP (`rtp_ports = "10000-20000"`); the first one is even.
    pub rtp_ports: RangeInclusive<u16>,
    /// The address RTP is received on and advertised in SDP (`address`); by default the
    /// first specific SIP listen address, else the machine's primary address.
    pub address: Option<std::net::IpAddr>,
    /// Threads that move RTP (`io_threads`); default: the machine's cores, at most 4.
    pub io_threads: Option<usize>,
    /// What a held party hears (`hold_music`): `default` (the built-in melody), `tone`,
    /// `tone:HZ`, `none` (silence) or the path of a WAV or raw G.711 file (8 kHz mono); see
    /// [`crate::media::hold_music`].
    pub hold_music: String,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: 10000..=20000,
            address: None,
            io_threads: None,
            hold_music: "default".into(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMedia {
    pub(crate) rtp_ports: Option<String>,
    pub(crate) address: Option<String>,
    pub(crate) io_threads: Option<usize>,
    pub(crate) srtp: Option<String>,
    pub(crate) hold_music: Option<String>,
}

impl RawMedia {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<MediaConfig> {
        let address =
            match &self.address {
                None => None,
                Some(a) => Some(a.parse::<std::net::IpAddr>().map_err(|_| {
                    invalid(&at.key("address"), format!("`{a}` is not an IP address"))
                })?),
            };
        let io_threads = match self.io_threads {
            Some(0) => return Err(invalid(&at.key("io_threads"), "must be greater than 0")),
            Some(n) if n > 64 => return Err(invalid(&at.key("io_threads"), "must be at most 64")),
            other => other,
        };
        let hold_music = match self.hold_music {
            None => MediaConfig::default().hold_music,
            Some(h) if h.trim().is_empty() => {
                return Err(invalid(
                    &at.key("hold_music"),
                    "must not be empty (`none` for silence)",
                ))
            }
            Some(h) => h.trim().to_owned(),
        };
        let Some(text) = self.rtp_ports else {
            return Ok(MediaConfig {
                address,
                io_threads,
                hold_music,
                ..MediaConfig::default()
            });
        };
        let here = at.key("rtp_ports");
        let bad = || {
            invalid(
                &here,
                format!("`{text}` is not a port range `LO-HI` (e.g. `10000-20000`)"),
            )
        };
        let (lo, hi) = text.split_once('-').ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo == 0 || !lo.is_multiple_of(2) {
            return Err(invalid(
                &here,
                format!("the first port ({lo}) must be even and non-zero (RTP uses even ports)"),
            ));
        }
        if lo > hi {
            return Err(invalid(
                &here,
                format!("the first port ({lo}) must not exceed the last ({hi})"),
            ));
        }
        Ok(MediaConfig {
            rtp_ports: lo..=hi,
            address,
            io_threads,
            hold_music,
        })
    }
}
