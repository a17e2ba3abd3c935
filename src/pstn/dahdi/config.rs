//! `[[fxo]]` tables: one analog line on a DAHDI channel.
//!
//! ```toml
//! [[fxo]]
//! name = "fxo1"
//! channel = "1"                 # DAHDI channel number, or "sim:/path" for the test simulator
//! country = "DE"                # tone plan: DE, ES, IT, UK, US
//! caller_id = "auto"            # off | v23 | bell202 | dtmf | auto
//! answer = "voice"              # polarity | dialled | voice (polarity reversal always counts)
//! disconnect = ["battery", "polarity", "tone"]   # and/or "silence"
//! silence_secs = 0              # with "silence": end a call after this long without audio
//! dial_tone_secs = 3
//! rx_gain_db = 0.0
//! tx_gain_db = 0.0
//! echo_cancel = 128             # taps of DAHDI's echo canceller (OSLEC/hardware); 0 = off
//! incoming = ["100"]            # extensions that ring for calls on this line
//! ```

use super::fxo::{AnswerDetect, CidMode, Disconnect, FxoSettings};
use crate::pstn::dsp::tones;
use serde::Deserialize;

/// A `[[fxo]]` table as written.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawFxo {
    /// Line name (defaults to "fxo" + channel).
    pub name: Option<String>,
    /// DAHDI channel ("1", "dahdi:1") or "sim:/path".
    pub channel: String,
    /// Tone plan.
    #[serde(default = "default_country")]
    pub country: String,
    /// Caller ID mode.
    #[serde(default = "default_cid")]
    pub caller_id: CidMode,
    /// Answer detection.
    #[serde(default = "default_answer")]
    pub answer: AnswerDetect,
    /// Disconnect supervision signals.
    #[serde(default = "default_disconnect")]
    pub disconnect: Vec<String>,
    /// Silence timeout when "silence" is in `disconnect`.
    #[serde(default)]
    pub silence_secs: u32,
    /// Dial-tone wait.
    #[serde(default = "default_dial_tone")]
    pub dial_tone_secs: u32,
    /// Gain from the line, dB.
    #[serde(default)]
    pub rx_gain_db: f32,
    /// Gain to the line, dB.
    #[serde(default)]
    pub tx_gain_db: f32,
    /// DAHDI echo canceller taps (0 off).
    #[serde(default = "default_echo")]
    pub echo_cancel: i32,
    /// Extensions to ring for incoming calls.
    #[serde(default)]
    pub incoming: Vec<String>,
}

fn default_country() -> String {
    "DE".into()
}
fn default_cid() -> CidMode {
    CidMode::Auto
}
fn default_answer() -> AnswerDetect {
    AnswerDetect::Voice
}
fn default_disconnect() -> Vec<String> {
    vec!["battery".into(), "polarity".into(), "tone".into()]
}
fn default_dial_tone() -> u32 {
    3
}
fn default_echo() -> i32 {
    128
}

/// A validated `[[fxo]]` line.
#[derive(Debug, Clone, PartialEq)]
pub struct FxoConfig {
    /// The machine's settings.
    pub settings: FxoSettings,
    /// The channel name.
    pub channel: String,
    /// Gains.
    pub rx_gain_db: f32,
    /// See `rx_gain_db`.
    pub tx_gain_db: f32,
    /// Echo canceller taps.
    pub echo_cancel: i32,
    /// Extensions to ring.
    pub incoming: Vec<String>,
}

/// What is wrong with an `[[fxo]]` table: the key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[[fxo]] {line}: {key}: {why}")]
pub struct FxoConfigError {
    /// The line (name or channel).
    pub line: String,
    /// The key.
    pub key: &'static str,
    /// Why.
    pub why: String,
}

impl RawFxo {
    /// Checks the table.
    pub fn validate(&self) -> Result<FxoConfig, FxoConfigError> {
        let line = self
            .name
            .clone()
            .unwrap_or_else(|| format!("fxo{}", self.channel.trim()));
        let err = |key, why: String| FxoConfigError {
            line: line.clone(),
            key,
            why,
        };
        super::channel::ChannelName::parse(&self.channel)
            .map_err(|e| err("channel", e.to_string()))?;
        let country = tones::country(&self.country).ok_or_else(|| {
            err(
                "country",
                format!(
                    "{:?} has no tone plan (known: {})",
                    self.country,
                    tones::COUNTRIES
                        .iter()
                        .map(|c| c.code)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let mut d = Disconnect {
            battery: false,
            polarity: false,
            tone: false,
            silence_ms: 0,
        };
        for s in &self.disconnect {
            match s.as_str() {
                "battery" => d.battery = true,
                "polarity" => d.polarity = true,
                "tone" => d.tone = true,
                "silence" => {
                    if self.silence_secs == 0 {
                        return Err(err(
                            "silence_secs",
                            "\"silence\" needs silence_secs > 0".into(),
                        ));
                    }
                    d.silence_ms = self.silence_secs.saturating_mul(1000);
                }
                other => {
                    return Err(err(
                        "disconnect",
                        format!("{other:?} is not battery, polarity, tone or silence"),
                    ))
                }
            }
        }
        if !(1..=30).contains(&self.dial_tone_secs) {
            return Err(err("dial_tone_secs", "must be 1–30".into()));
        }
        for (key, db) in [
            ("rx_gain_db", self.rx_gain_db),
            ("tx_gain_db", self.tx_gain_db),
        ] {
            if !(-40.0..=20.0).contains(&db) {
                return Err(err(key, "between -40 and 20 dB".into()));
            }
        }
        if !(0..=1024).contains(&self.echo_cancel) {
            return Err(err("echo_cancel", "taps must be 0–1024".into()));
        }
        let mut settings = FxoSettings::new(&line, country);
        settings.cid = self.caller_id;
        settings.answer = self.answer;
        settings.disconnect = d;
        settings.dial_tone_ms = self.dial_tone_secs * 1000;
        Ok(FxoConfig {
            settings,
            channel: self.channel.trim().to_string(),
            rx_gain_db: self.rx_gain_db,
            tx_gain_db: self.tx_gain_db,
            echo_cancel: self.echo_cancel,
            incoming: self.incoming.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> RawFxo {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn defaults_and_errors_name_the_key() {
        let c = parse("channel = \"2\"").validate().unwrap();
        assert_eq!(c.settings.name, "fxo2");
        assert_eq!(c.settings.country.code, "DE");
        assert!(c.settings.disconnect.battery && c.settings.disconnect.tone);
        let e = parse("channel = \"x\"").validate().unwrap_err();
        assert_eq!(e.key, "channel");
        let e = parse("channel = \"1\"\ncountry = \"FR\"")
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "country");
        assert!(e.to_string().contains("DE, ES, IT, UK, US"), "{e}");
        let e = parse("channel = \"1\"\ndisconnect = [\"silence\"]")
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "silence_secs");
        let e = parse("channel = \"1\"\ntx_gain_db = 30.0")
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "tx_gain_db");
        assert!(toml::from_str::<RawFxo>("channel = \"1\"\nanswer = \"magic\"").is_err());
    }
}
