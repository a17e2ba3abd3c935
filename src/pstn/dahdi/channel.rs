//! A card channel as an FXO line sees it: hook control, signalling events and 20 ms frames of
//! 8 kHz linear audio both ways. Reads block until the card has a frame (the card's clock
//! paces the line), so a channel is driven from its own thread.

use crate::pstn::audio::Frame;

/// Hook commands (values of `DAHDI_HOOK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// Release the line.
    On,
    /// Seize or answer the line.
    Off,
    /// A short on-hook (hook flash).
    Flash,
}

impl Hook {
    /// The `DAHDI_HOOK` argument.
    pub fn dahdi(self) -> i32 {
        match self {
            Hook::On => 0,
            Hook::Off => 1,
            Hook::Flash => 3,
        }
    }

    /// From a `DAHDI_HOOK` argument.
    pub fn from_dahdi(v: i32) -> Option<Hook> {
        match v {
            0 => Some(Hook::On),
            1 => Some(Hook::Off),
            3 => Some(Hook::Flash),
            _ => None,
        }
    }
}

/// Signalling events (the `DAHDI_EVENT_*` an FXO port reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelEvent {
    /// Ringing voltage began (DAHDI_EVENT_RINGBEGIN, or RINGOFFHOOK on an FXO port).
    RingBegin,
    /// Ringing voltage ended (DAHDI_EVENT_RINGEROFF).
    RingEnd,
    /// The line's polarity reversed (DAHDI_EVENT_POLARITY): answer or far-end clear.
    Polarity,
    /// Loop current/battery dropped (DAHDI_EVENT_ONHOOK on an FXO port): far-end clear.
    BatteryDrop,
    /// Our hook change completed (DAHDI_EVENT_HOOKCOMPLETE).
    HookComplete,
    /// The line or span is in alarm (no battery, card fault: DAHDI_EVENT_ALARM).
    Alarm,
    /// The alarm cleared (DAHDI_EVENT_NOALARM).
    NoAlarm,
    /// The channel went away (DAHDI_EVENT_REMOVED).
    Removed,
    /// Another event code, ignored.
    Other(i32),
}

impl ChannelEvent {
    /// From a `DAHDI_GETEVENT` code.
    pub fn from_dahdi(code: i32) -> ChannelEvent {
        match code {
            1 => ChannelEvent::BatteryDrop,
            2 | 18 => ChannelEvent::RingBegin,
            11 => ChannelEvent::RingEnd,
            12 => ChannelEvent::HookComplete,
            4 => ChannelEvent::Alarm,
            5 => ChannelEvent::NoAlarm,
            17 => ChannelEvent::Polarity,
            20 => ChannelEvent::Removed,
            c => ChannelEvent::Other(c),
        }
    }

    /// The `DAHDI_EVENT_*` code (the simulator sends these).
    pub fn dahdi(self) -> i32 {
        match self {
            ChannelEvent::BatteryDrop => 1,
            ChannelEvent::RingBegin => 18,
            ChannelEvent::RingEnd => 11,
            ChannelEvent::HookComplete => 12,
            ChannelEvent::Alarm => 4,
            ChannelEvent::NoAlarm => 5,
            ChannelEvent::Polarity => 17,
            ChannelEvent::Removed => 20,
            ChannelEvent::Other(c) => c,
        }
    }
}

/// What one read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A frame of audio was stored.
    Audio,
    /// A signalling event (no audio this time).
    Event(ChannelEvent),
}

/// Why a channel cannot be used; the message names the channel and what to check.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// DAHDI is not there at all.
    #[error("{channel}: {path} does not exist: DAHDI is not loaded (check that the dahdi module and the card's driver, e.g. wctdm24xxp or opvxa1200, are loaded: lsmod | grep dahdi; dahdi_hardware lists the card)")]
    NoDahdi { channel: String, path: String },
    /// The channel number is not configured.
    #[error("{channel}: DAHDI has no channel {number} ({source}): check /etc/dahdi/system.conf (e.g. fxsks={number}) and run dahdi_cfg -vv")]
    NoChannel {
        channel: String,
        number: i32,
        source: std::io::Error,
    },
    /// The channel is not signalled as an FXO port.
    #[error("{channel}: channel {number} is signalled as {sig}, not as an FXO port: in /etc/dahdi/system.conf an FXO port is fxsks={number} or fxsls={number} (DAHDI names the signalling after the far end), then run dahdi_cfg")]
    NotFxo {
        channel: String,
        number: i32,
        sig: String,
    },
    /// Permission denied on the device.
    #[error("{channel}: {path}: permission denied: the service user needs access to the DAHDI devices (group dialout or a udev rule)")]
    Permission { channel: String, path: String },
    /// The configured name is not a channel.
    #[error("{0:?} is not a DAHDI channel: use a channel number (\"1\", \"dahdi:1\") or \"sim:/path/to/socket\"")]
    BadName(String),
    /// Any other I/O failure.
    #[error("{channel}: {context}: {source}")]
    Io {
        channel: String,
        context: &'static str,
        source: std::io::Error,
    },
    /// The simulator or card hung up.
    #[error("{0}: channel closed")]
    Closed(String),
}

/// A card channel.
pub trait Channel: Send {
    /// Its name for messages ("dahdi:1", "sim:/run/x.sock").
    fn name(&self) -> &str;
    /// Changes the hook state.
    fn set_hook(&mut self, hook: Hook) -> Result<(), ChannelError>;
    /// Waits for the next frame of audio (stored in `frame`) or signalling event.
    fn read(&mut self, frame: &mut Frame) -> Result<Input, ChannelError>;
    /// Sends one frame of audio to the line.
    fn write(&mut self, frame: &Frame) -> Result<(), ChannelError>;
    /// Enables DAHDI's line echo canceller with `taps` (8 per ms of echo tail; 0 disables).
    fn set_echo_cancel(&mut self, taps: i32) -> Result<(), ChannelError>;
}

/// How a configured channel name is to be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelName {
    /// A DAHDI channel number.
    Dahdi(i32),
    /// The test simulator at this Unix socket.
    Sim(std::path::PathBuf),
}

impl ChannelName {
    /// Parses `"1"`, `"dahdi:1"`, `"DAHDI/1"` or `"sim:/path"`.
    pub fn parse(s: &str) -> Result<ChannelName, ChannelError> {
        let t = s.trim();
        if let Some(p) = t.strip_prefix("sim:") {
            if p.is_empty() {
                return Err(ChannelError::BadName(s.to_string()));
            }
            return Ok(ChannelName::Sim(p.into()));
        }
        let n = t
            .strip_prefix("dahdi:")
            .or_else(|| t.strip_prefix("DAHDI/"))
            .unwrap_or(t);
        match n.parse::<i32>() {
            Ok(v) if (1..=1024).contains(&v) => Ok(ChannelName::Dahdi(v)),
            _ => Err(ChannelError::BadName(s.to_string())),
        }
    }
}

impl std::fmt::Display for ChannelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChannelName::Dahdi(n) => write!(f, "dahdi:{n}"),
            ChannelName::Sim(p) => write!(f, "sim:{}", p.display()),
        }
    }
}

/// Opens a channel by its configured name.
pub fn open(name: &str) -> Result<Box<dyn Channel>, ChannelError> {
    match ChannelName::parse(name)? {
        ChannelName::Dahdi(n) => Ok(Box::new(super::sys::DahdiChannel::open(n)?)),
        ChannelName::Sim(p) => Ok(Box::new(super::sim::SimChannel::connect(&p)?)),
    }
}

/// Checks that a channel can be opened, without keeping it (for `check-config` and start-up).
pub fn probe(name: &str) -> Result<(), ChannelError> {
    match ChannelName::parse(name)? {
        ChannelName::Dahdi(n) => super::sys::DahdiChannel::open(n).map(drop),
        ChannelName::Sim(p) => {
            if p.exists() {
                Ok(())
            } else {
                Err(ChannelError::Io {
                    channel: format!("sim:{}", p.display()),
                    context: "simulator socket",
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(ChannelName::parse("3").unwrap(), ChannelName::Dahdi(3));
        assert_eq!(
            ChannelName::parse("dahdi:12").unwrap(),
            ChannelName::Dahdi(12)
        );
        assert_eq!(
            ChannelName::parse("DAHDI/2").unwrap(),
            ChannelName::Dahdi(2)
        );
        assert_eq!(
            ChannelName::parse("sim:/tmp/x").unwrap(),
            ChannelName::Sim("/tmp/x".into())
        );
        for bad in ["", "0", "x", "sim:", "dahdi:-1", "99999"] {
            assert!(ChannelName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_codes_round_trip() {
        for e in [
            ChannelEvent::RingBegin,
            ChannelEvent::RingEnd,
            ChannelEvent::Polarity,
            ChannelEvent::BatteryDrop,
            ChannelEvent::Alarm,
            ChannelEvent::NoAlarm,
            ChannelEvent::Removed,
        ] {
            assert_eq!(ChannelEvent::from_dahdi(e.dahdi()), e);
        }
    }
}
