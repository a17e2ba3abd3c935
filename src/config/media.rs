//! `[media]`: the RTP relay's ports and addresses, mapped onto
//! [`crate::media::config::MediaConfig`] with the file:line:key checks.

use super::*;

pub use crate::media::config::MediaConfig;

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
