//! Modem profiles: what differs between modem families (init commands, dial/answer/hang-up and
//! DTMF commands, how call state is reported, which USB interfaces carry AT and audio), kept as
//! data in `hardware/modems/*.toml` and embedded in the binary. A profile file given at run time
//! ([`Profile::from_toml`]) overrides or adds to the built-in ones.

use serde::Deserialize;

/// The built-in profile files, by name.
const BUILTIN: &[(&str, &str)] = &[
    (
        "huawei",
        include_str!("../../../hardware/modems/huawei.toml"),
    ),
    (
        "simcom-sim7600",
        include_str!("../../../hardware/modems/simcom-sim7600.toml"),
    ),
    (
        "quectel-ec25",
        include_str!("../../../hardware/modems/quectel-ec25.toml"),
    ),
];

/// A profile that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// No built-in profile has this name.
    #[error("unknown modem profile `{0}` (built in: huawei, simcom-sim7600, quectel-ec25)")]
    Unknown(String),
    /// The TOML is invalid.
    #[error("modem profile: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("modem profile `{name}`: {what}")]
    Invalid { name: String, what: String },
}

/// How a modem family reports the progress of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStyle {
    /// Huawei `^ORIG`, `^CONF`, `^CONN`, `^CEND` (with the network's cause).
    Huawei,
    /// Standard `+CLCC` (unsolicited where the modem can, else polled) and `NO CARRIER`.
    Clcc,
}

/// Sample format on the audio port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleFormat {
    /// Signed 16-bit little-endian linear PCM.
    S16le,
}

/// The audio port's format.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioFormat {
    /// Sample rate in Hz (8000 for every supported modem).
    pub rate: u32,
    /// Sample format.
    pub format: SampleFormat,
    /// Bytes per 20 ms frame (320 for 8 kHz s16le).
    pub frame_bytes: usize,
}

/// The AT commands of a family. Templates take `{number}`, `{digit}`, `{index}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commands {
    /// Sent, in order, after the port is opened (and after every reset).
    pub init: Vec<String>,
    /// Dial template, e.g. `ATD{number};`.
    pub dial: String,
    /// Answers an incoming call.
    pub answer: String,
    /// Hangs up.
    pub hangup: String,
    /// DTMF template, e.g. `AT^DTMF={index},{digit}` or `AT+VTS={digit}`.
    pub dtmf: String,
    /// Sent when a call is connected, to route the voice to the audio port.
    pub audio_on: Vec<String>,
    /// Sent when a call ends.
    pub audio_off: Vec<String>,
    /// Send `audio_on` as soon as the dial command is accepted, so that the network's
    /// ring-back tone and announcements reach the caller as early media.
    #[serde(default)]
    pub early_audio: bool,
    /// Asks the IMEI (answer: a bare line of digits).
    pub imei: String,
    /// Asks the ICCID.
    pub iccid: String,
    /// Prefix of the ICCID answer line (e.g. `^ICCID:`); empty for a bare line.
    #[serde(default)]
    pub iccid_prefix: String,
    /// Restarts the modem (`AT+CFUN=1,1`).
    pub reset: String,
}

/// How call state is reported.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    /// The URC family.
    pub style: EventStyle,
    /// Poll `AT+CLCC` this often during a call (0: never).
    #[serde(default)]
    pub clcc_poll_ms: u64,
}

/// One modem family.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Profile name, as used in the configuration (`profile = "huawei"`).
    pub name: String,
    /// Human description.
    pub description: String,
    /// Model names covered.
    pub models: Vec<String>,
    /// USB `vendor:product` ids (hex) of the family in modem mode.
    pub usb_ids: Vec<String>,
    /// USB interface number of the AT (command) port.
    pub data_interface: u8,
    /// USB interface number of the audio port.
    pub audio_interface: u8,
    /// Audio format.
    pub audio: AudioFormat,
    /// Commands.
    pub commands: Commands,
    /// Call-state reporting.
    pub events: Events,
}

impl Profile {
    /// A built-in profile by name.
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        let (_, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ProfileError::Unknown(name.to_string()))?;
        Profile::from_toml(text)
    }

    /// Names of the built-in profiles.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTIN.iter().map(|(n, _)| *n)
    }

    /// Parses and checks a profile file.
    pub fn from_toml(text: &str) -> Result<Profile, ProfileError> {
        let p: Profile = toml::from_str(text)?;
        let bad = |what: &str| ProfileError::Invalid {
            name: p.name.clone(),
            what: what.to_string(),
        };
        if p.audio.rate != 8000 {
            return Err(bad("audio.rate must be 8000"));
        }
        if p.audio.frame_bytes != 320 {
            return Err(bad("audio.frame_bytes must be 320 (20 ms of 8 kHz s16le)"));
        }
        if !p.commands.dial.contains("{number}") {
            return Err(bad("commands.dial must contain {number}"));
        }
        if !p.commands.dtmf.contains("{digit}") {
            return Err(bad("commands.dtmf must contain {digit}"));
        }
        Ok(p)
    }

    /// The dial command for `number`, or `None` if the number has characters a modem must not
    /// see (only digits, `+`, `*`, `#` are allowed: anything else could inject commands).
    pub fn dial_command(&self, number: &str) -> Option<String> {
        let ok = !number.is_empty()
            && number.len() <= 40
            && number
                .chars()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || c == '*' || c == '#' || (c == '+' && i == 0));
        ok.then(|| self.commands.dial.replace("{number}", number))
    }

    /// The DTMF command for `digit` on call `index`, or `None` for a digit that is not DTMF.
    pub fn dtmf_command(&self, digit: char, index: u8) -> Option<String> {
        let ok = digit.is_ascii_digit() || matches!(digit, '*' | '#' | 'A' | 'B' | 'C' | 'D');
        ok.then(|| {
            self.commands
                .dtmf
                .replace("{digit}", &digit.to_string())
                .replace("{index}", &index.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for name in Profile::builtin_names() {
            let p = Profile::builtin(name).unwrap();
            assert_eq!(p.name, name);
            assert_eq!(p.audio.frame_bytes, 320);
        }
        let h = Profile::builtin("huawei").unwrap();
        assert_eq!(h.events.style, EventStyle::Huawei);
        assert_eq!(h.commands.audio_on, vec!["AT^DDSETEX=2".to_string()]);
        assert!(h.commands.early_audio);
        assert!(h.commands.init.iter().any(|c| c == "AT^CVOICE?"));
        assert_eq!((h.data_interface, h.audio_interface), (2, 1));
        let s = Profile::builtin("simcom-sim7600").unwrap();
        assert_eq!(s.commands.audio_on, vec!["AT+CPCMREG=1".to_string()]);
        assert_eq!(s.events.style, EventStyle::Clcc);
        let q = Profile::builtin("quectel-ec25").unwrap();
        assert_eq!(q.commands.audio_on, vec!["AT+QPCMV=1,0".to_string()]);
        assert!(matches!(
            Profile::builtin("nokia"),
            Err(ProfileError::Unknown(_))
        ));
    }

    #[test]
    fn templates_refuse_injection() {
        let h = Profile::builtin("huawei").unwrap();
        assert_eq!(h.dial_command("+4930123").as_deref(), Some("ATD+4930123;"));
        assert_eq!(h.dial_command("0301;+CFUN=0"), None);
        assert_eq!(h.dial_command("1+2"), None);
        assert_eq!(h.dial_command(""), None);
        assert_eq!(h.dtmf_command('5', 1).as_deref(), Some("AT^DTMF=1,5"));
        assert_eq!(h.dtmf_command('x', 1), None);
        let q = Profile::builtin("quectel-ec25").unwrap();
        assert_eq!(q.dtmf_command('#', 1).as_deref(), Some("AT+VTS=#"));
    }

    #[test]
    fn bad_profiles_are_refused() {
        let text = include_str!("../../../hardware/modems/huawei.toml").replace("8000", "16000");
        assert!(matches!(
            Profile::from_toml(&text),
            Err(ProfileError::Invalid { .. })
        ));
        assert!(matches!(
            Profile::from_toml("name = 1"),
            Err(ProfileError::Toml(_))
        ));
    }
}
