//! The PSTN side of the gateway: lines to the telephone network and the calls on them.
//!
//! A line ([`Line`], [`line`](mod@line); today a GSM/3G/LTE modem, [`gsm`]) places and takes
//! calls; the B2BUA sees each call ([`LineCall`]) as a stream of [`CallProgress`] events, an audio path ([`audio`]: 20 ms PCM frames ⇄ G.711
//! RTP), and the [`EndCause`] that ended it (with the SIP status for an unanswered call).
//! Incoming calls are announced as [`IncomingCall`]. [`LineStatus`] is the snapshot the
//! dashboard and `pasarela modem status` show.
//!
//! # Use
//!
//! - Configuration: `[[modem]]` tables parse into [`gsm::config::RawModem`];
//!   `RawModem::validate` gives a [`gsm::config::ModemConfig`] or the key that is wrong.
//! - `serve` starts a [`LinePool`] from them, takes its merged incoming stream once
//!   ([`LinePool::take_incoming`]) and shuts it down on exit.
//! - An outgoing PSTN leg: [`LinePool::dial`] gives a [`LineCall`] (or a [`LineError`]
//!   with its SIP status); attach the leg's RTP socket with [`LineCall::attach_audio`], then
//!   map [`CallProgress`]: `Ringing` → 180, `EarlyMedia` → 183 with SDP, `Answered` → 200,
//!   `Ended(cause)` → `cause.sip_status` before the answer, BYE after; `hangup()` on CANCEL/BYE.
//! - An incoming call: ring the line's extensions ([`LinePool::incoming_extensions`]) with the
//!   caller's raw number and type of address; on their 200 `attach_audio` and `answer()`; when
//!   nobody answers, `hangup()`.

pub mod audio;
pub mod cause;
pub mod dahdi;
pub mod dsp;
pub mod gsm;
pub mod line;
pub mod pool;
pub mod routes;

pub use cause::{EndCause, EndReason};
pub use line::{AudioEndpoint, IncomingLineCall, Line, LineCall, RtpCodec};
pub use pool::LinePool;

/// Identifies a call on one line (unique per line for the process lifetime).
pub type CallId = u64;

/// Progress of a call, as the B2BUA needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallProgress {
    /// The network accepted the call and is setting it up (outgoing).
    Proceeding,
    /// The callee's phone rings (send 180).
    Ringing,
    /// Audio from the network flows before the answer (ring-back tone, announcements): send
    /// 183 with SDP; the RTP attached to the call carries it.
    EarlyMedia,
    /// The call is connected: audio flows (send 200 / outgoing; incoming: after `answer`).
    Answered,
    /// A DTMF digit heard on the line (for lines that detect them; send it as RFC 4733 or
    /// SIP INFO).
    Digit(char),
    /// The call is over.
    Ended(EndCause),
}

/// A call arriving from the PSTN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingCall {
    /// The line's configured name.
    pub line: String,
    /// The call's id on that line.
    pub call: CallId,
    /// The caller's number as the network sent it (not normalised); `None` when withheld or
    /// not available.
    pub number: Option<String>,
    /// Type of address of `number`: 145 international (`+` form), 129 unknown/national,
    /// 161 national; `None` when unknown.
    pub toa: Option<u8>,
    /// The caller's name, when the network sent one (analog caller ID); outside data, shown
    /// as the SIP display name.
    pub name: Option<String>,
}

/// Why a request to a line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The line is not in service (port closed, initialising, resetting, not registered).
    #[error("line {0} is not in service")]
    NotReady(String),
    /// The line already has a call.
    #[error("line {0} is busy")]
    Busy(String),
    /// The number has characters a modem cannot dial.
    #[error("number {0:?} cannot be dialled")]
    BadNumber(String),
    /// There is no such call (it ended already).
    #[error("no such call")]
    NoCall,
    /// The digit is not a DTMF digit.
    #[error("{0:?} is not a DTMF digit")]
    BadDigit(char),
    /// The line's task is gone.
    #[error("line task stopped")]
    Stopped,
    /// The line cannot do this (text messages or USSD on a line that is not a GSM modem).
    #[error("line {0} does not carry {1}")]
    Unsupported(String, &'static str),
}

impl LineError {
    /// The SIP status a caller gets when its call cannot be placed on this line.
    pub fn sip_status(&self) -> u16 {
        match self {
            LineError::NotReady(_) | LineError::Stopped => 503,
            LineError::Busy(_) => 486,
            LineError::BadNumber(_) => 484,
            LineError::NoCall | LineError::BadDigit(_) => 500,
            LineError::Unsupported(..) => 501,
        }
    }
}

/// Network registration (`+CREG` stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// Not known yet.
    #[default]
    Unknown,
    /// Not registered, not searching (0).
    NotRegistered,
    /// Registered, home network (1).
    Home,
    /// Searching (2).
    Searching,
    /// Registration denied (3).
    Denied,
    /// Registered, roaming (5).
    Roaming,
}

impl Registration {
    /// From a `+CREG` stat value.
    pub fn from_stat(stat: u8) -> Registration {
        match stat {
            0 => Registration::NotRegistered,
            1 => Registration::Home,
            2 => Registration::Searching,
            3 => Registration::Denied,
            5 => Registration::Roaming,
            _ => Registration::Unknown,
        }
    }

    /// Whether calls can be placed.
    pub fn is_registered(self) -> bool {
        matches!(self, Registration::Home | Registration::Roaming)
    }
}

/// What a line is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineState {
    /// Ports closed; waiting to open them (or for the device to come back).
    #[default]
    Down,
    /// Ports open, init commands running.
    Initialising,
    /// In service, no call.
    Idle,
    /// An outgoing call is being set up.
    Dialling,
    /// The callee's phone rings.
    Alerting,
    /// A call is connected.
    Active,
    /// An incoming call rings; waiting for `answer`.
    Incoming,
    /// Ports open but not usable (no SIM, not registered, voice disabled).
    Failed,
    /// The modem stopped answering and is being reset.
    Resetting,
    /// The line or its card reports an alarm (an FXO port without battery, a card fault):
    /// no calls until it clears.
    Alarm,
}

/// A snapshot of a line for the dashboard and `pasarela modem status`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct LineStatus {
    /// Configured name.
    pub name: String,
    /// Profile name.
    pub profile: String,
    /// State.
    pub state: LineState,
    /// AT port in use.
    pub data_port: Option<String>,
    /// Audio port in use.
    pub audio_port: Option<String>,
    /// IMEI (`AT+CGSN`).
    pub imei: Option<String>,
    /// SIM ICCID.
    pub iccid: Option<String>,
    /// Operator name (`+COPS`).
    pub operator: Option<String>,
    /// `+CSQ` rssi (0–31; 99 unknown).
    pub csq: Option<u8>,
    /// Signal in dBm (from `csq`).
    pub signal_dbm: Option<i32>,
    /// Network registration.
    pub registration: Registration,
    /// SIM state (`+CPIN`: `READY`, `SIM PIN`, or the error).
    pub sim: Option<String>,
    /// Whether the firmware has voice enabled (`^CVOICE`), when the profile can tell.
    pub voice: Option<bool>,
    /// The last error seen (command failures, timeouts, resets).
    pub last_error: Option<String>,
    /// Calls ended on this line (both directions).
    pub calls_served: u64,
    /// Of which answered.
    pub calls_answered: u64,
    /// Resets done by the watchdog.
    pub resets: u64,
}

impl LineStatus {
    /// One human line, as `pasarela modem status` prints it.
    pub fn summary(&self) -> String {
        format!(
            "{name}\t{state:?}\t{profile}\timei={imei}\ticcid={iccid}\top={op}\tsignal={sig}\treg={reg:?}\tsim={sim}\tcalls={calls}/{ans}\tresets={resets}{err}",
            name = self.name,
            state = self.state,
            profile = self.profile,
            imei = self.imei.as_deref().unwrap_or("-"),
            iccid = self.iccid.as_deref().unwrap_or("-"),
            op = self.operator.as_deref().unwrap_or("-"),
            sig = self
                .signal_dbm
                .map(|d| format!("{d}dBm"))
                .unwrap_or_else(|| "-".into()),
            reg = self.registration,
            sim = self.sim.as_deref().unwrap_or("-"),
            calls = self.calls_served,
            ans = self.calls_answered,
            resets = self.resets,
            err = self
                .last_error
                .as_deref()
                .map(|e| format!("\terror={e}"))
                .unwrap_or_default(),
        )
    }
}
