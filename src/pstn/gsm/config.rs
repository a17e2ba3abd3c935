//! The `[[modem]]` entries of the configuration file: the raw TOML shape (for the file's
//! parser to embed) and its validation into a [`GsmLineConfig`] plus the extensions that
//! incoming calls ring.
//!
//! ```toml
//! [[modem]]
//! name = "gsm1"                    # required, unique; appears in records and the route explainer
//! profile = "huawei"               # huawei (default), simcom-sim7600, quectel-ec25
//! # profile_file = "/etc/pasarela/modems/my-stick.toml"   # a profile of your own instead
//! imei = "353142034567891"         # find the modem by IMEI (any USB port) …
//! # iccid = "8949226012345678901"  # … or by the SIM's ICCID …
//! # data_port = "/dev/ttyUSB2"     # … or use fixed ports (both needed)
//! # audio_port = "/dev/ttyUSB1"
//! incoming = ["100", "101"]        # extensions rung by calls arriving on this line
//! gain_to_modem_db = 0.0           # −40 … +20
//! gain_from_modem_db = 0.0
//! probe_interval_secs = 15         # health probe (AT+CSQ, +CREG?, +COPS?, +CPIN?)
//! max_missed = 3                   # unanswered commands in a row before AT+CFUN=1,1
//! jitter_target_ms = 60            # RTP → modem jitter buffer (20 … 300, multiples of 20)
//! jitter_max_ms = 100
//! enabled = true
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::discover::{Candidates, PortPair, PortSpec};
use super::driver::GsmLineConfig;
use super::line::LineConfig;
use super::profile::Profile;
use crate::pstn::audio::JitterConfig;

/// One `[[modem]]` table as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawModem {
    /// `name`: the line's name (letters, digits, `-`, `_`), unique among the modems.
    pub name: String,
    /// `profile`: a built-in profile (default `huawei`).
    pub profile: Option<String>,
    /// `profile_file`: a profile of one's own (TOML, same keys as `hardware/modems/*.toml`).
    pub profile_file: Option<PathBuf>,
    /// `imei`: find the modem by IMEI.
    pub imei: Option<String>,
    /// `iccid`: find the modem by its SIM's ICCID.
    pub iccid: Option<String>,
    /// `data_port`: fixed AT port (with `audio_port`).
    pub data_port: Option<PathBuf>,
    /// `audio_port`: fixed audio port (with `data_port`).
    pub audio_port: Option<PathBuf>,
    /// `incoming`: extensions rung by incoming calls.
    pub incoming: Option<Vec<String>>,
    /// `gain_to_modem_db`: gain of the audio sent to the PSTN.
    pub gain_to_modem_db: Option<f32>,
    /// `gain_from_modem_db`: gain of the audio received from the PSTN.
    pub gain_from_modem_db: Option<f32>,
    /// `probe_interval_secs`: health probe period.
    pub probe_interval_secs: Option<u64>,
    /// `max_missed`: unanswered commands in a row before a reset.
    pub max_missed: Option<u32>,
    /// `jitter_target_ms`: jitter buffer target.
    pub jitter_target_ms: Option<u64>,
    /// `jitter_max_ms`: jitter buffer limit.
    pub jitter_max_ms: Option<u64>,
    /// `enabled`: whether the line is started (default true).
    pub enabled: Option<bool>,
}

/// A validated `[[modem]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModemConfig {
    /// What [`super::GsmLine::spawn`] takes.
    pub line: GsmLineConfig,
    /// Extensions that incoming calls on this line ring (all at once).
    pub incoming: Vec<String>,
    /// Whether the line is started.
    pub enabled: bool,
}

/// A bad value: the key (relative to the `[[modem]]` table) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct ModemConfigError {
    /// The key, e.g. `imei`.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> ModemConfigError {
    ModemConfigError {
        key,
        message: message.into(),
    }
}

impl RawModem {
    /// Checks the values and builds the line's configuration. Reads `profile_file` if given.
    pub fn validate(self) -> Result<ModemConfig, ModemConfigError> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err("name", "letters, digits, `-` and `_` only"));
        }
        let profile = match (&self.profile_file, &self.profile) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "profile_file",
                    "give `profile` or `profile_file`, not both",
                ))
            }
            (Some(path), None) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err("profile_file", format!("{}: {e}", path.display())))?;
                Profile::from_toml(&text).map_err(|e| err("profile_file", e.to_string()))?
            }
            (None, name) => Profile::builtin(name.as_deref().unwrap_or("huawei"))
                .map_err(|e| err("profile", e.to_string()))?,
        };
        if let Some(imei) = &self.imei {
            if !(14..=16).contains(&imei.len()) || !imei.chars().all(|c| c.is_ascii_digit()) {
                return Err(err("imei", "14 to 16 digits"));
            }
        }
        if let Some(iccid) = &self.iccid {
            let digits = iccid.trim_end_matches(['F', 'f']);
            if !(18..=22).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
                return Err(err("iccid", "18 to 22 digits"));
            }
        }
        let ports = match (&self.data_port, &self.audio_port) {
            (Some(data), Some(audio)) => {
                let pair = PortPair {
                    data: data.clone(),
                    audio: audio.clone(),
                };
                if self.imei.is_some() || self.iccid.is_some() {
                    PortSpec::Identity {
                        imei: self.imei.clone(),
                        iccid: self.iccid.clone(),
                        candidates: Candidates::List(vec![pair]),
                    }
                } else {
                    PortSpec::Fixed(pair)
                }
            }
            (Some(_), None) => return Err(err("audio_port", "needed with `data_port`")),
            (None, Some(_)) => return Err(err("data_port", "needed with `audio_port`")),
            (None, None) => {
                if self.imei.is_none() && self.iccid.is_none() {
                    return Err(err(
                        "imei",
                        "give `imei` or `iccid` (or `data_port` and `audio_port`)",
                    ));
                }
                PortSpec::Identity {
                    imei: self.imei.clone(),
                    iccid: self.iccid.clone(),
                    candidates: Candidates::Usb,
                }
            }
        };
        let gain = |key: &'static str, v: Option<f32>| match v {
            Some(db) if !(-40.0..=20.0).contains(&db) => Err(err(key, "between -40 and 20 dB")),
            v => Ok(v.unwrap_or(0.0)),
        };
        let gain_to_modem_db = gain("gain_to_modem_db", self.gain_to_modem_db)?;
        let gain_to_rtp_db = gain("gain_from_modem_db", self.gain_from_modem_db)?;
        let mut line = LineConfig::new(self.name.clone());
        if let Some(s) = self.probe_interval_secs {
            if !(1..=3600).contains(&s) {
                return Err(err("probe_interval_secs", "between 1 and 3600"));
            }
            line.probe_interval = Duration::from_secs(s);
        }
        if let Some(n) = self.max_missed {
            if !(1..=100).contains(&n) {
                return Err(err("max_missed", "between 1 and 100"));
            }
            line.max_missed = n;
        }
        let frames = |key: &'static str, ms: Option<u64>, default: usize| match ms {
            None => Ok(default),
            Some(ms) if (20..=300).contains(&ms) && ms % 20 == 0 => Ok((ms / 20) as usize),
            Some(_) => Err(err(key, "a multiple of 20 between 20 and 300")),
        };
        let target = frames("jitter_target_ms", self.jitter_target_ms, 3)?;
        let max = frames("jitter_max_ms", self.jitter_max_ms, target.max(5))?;
        if max < target {
            return Err(err("jitter_max_ms", "at least `jitter_target_ms`"));
        }
        let incoming = self.incoming.unwrap_or_default();
        // Extension numbers, or one ring group name (checked against `[[ring_group]]` by the
        // configuration loader).
        let group = matches!(incoming.as_slice(), [one] if !one.is_empty() && !one.chars().all(|c| c.is_ascii_digit()) && !one.chars().any(char::is_control));
        if let Some(bad) = incoming
            .iter()
            .find(|e| !group && (e.is_empty() || !e.chars().all(|c| c.is_ascii_digit())))
        {
            return Err(err(
                "incoming",
                format!(
                    "{bad:?} is not an extension number (or the only entry, a ring group name)"
                ),
            ));
        }
        Ok(ModemConfig {
            line: GsmLineConfig {
                line,
                profile,
                ports,
                gain_to_modem_db,
                gain_to_rtp_db,
                jitter: JitterConfig { target, max },
            },
            incoming,
            enabled: self.enabled.unwrap_or(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ModemConfig, ModemConfigError> {
        toml::from_str::<RawModem>(text).unwrap().validate()
    }

    #[test]
    fn by_imei_on_usb() {
        let m = parse("name = \"gsm1\"\nimei = \"353142034567891\"\nincoming = [\"100\"]").unwrap();
        assert_eq!(m.line.profile.name, "huawei");
        assert!(matches!(
            m.line.ports,
            PortSpec::Identity {
                candidates: Candidates::Usb,
                ..
            }
        ));
        assert_eq!(m.incoming, vec!["100".to_string()]);
        assert_eq!(m.line.jitter, JitterConfig { target: 3, max: 5 });
    }

    #[test]
    fn fixed_ports_and_options() {
        let m = parse(
            "name = \"lte\"\nprofile = \"quectel-ec25\"\ndata_port = \"/dev/ttyUSB2\"\naudio_port = \"/dev/ttyUSB1\"\ngain_to_modem_db = -3.0\njitter_target_ms = 40\njitter_max_ms = 120",
        )
        .unwrap();
        assert!(matches!(m.line.ports, PortSpec::Fixed(_)));
        assert_eq!(m.line.jitter, JitterConfig { target: 2, max: 6 });
        assert_eq!(m.line.gain_to_modem_db, -3.0);
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(parse("name = \"x\"").unwrap_err().key, "imei");
        assert_eq!(
            parse("name = \"x\"\nimei = \"12\"").unwrap_err().key,
            "imei"
        );
        assert_eq!(
            parse("name = \"x\"\nimei = \"353142034567891\"\nprofile = \"nokia\"")
                .unwrap_err()
                .key,
            "profile"
        );
        assert_eq!(
            parse("name = \"x\"\ndata_port = \"/dev/ttyUSB2\"")
                .unwrap_err()
                .key,
            "audio_port"
        );
        assert_eq!(
            parse("name = \"x\"\nimei = \"353142034567891\"\njitter_target_ms = 30")
                .unwrap_err()
                .key,
            "jitter_target_ms"
        );
        assert_eq!(
            parse("name = \"x\"\nimei = \"353142034567891\"\nincoming = [\"100\", \"1a\"]")
                .unwrap_err()
                .key,
            "incoming"
        );
        assert!(toml::from_str::<RawModem>("name = \"x\"\nbogus = 1").is_err());
    }
}
