//! GSM/UMTS/LTE modems as PSTN lines: the AT command engine ([`at`]), the modem families'
//! profiles ([`profile`], data under `hardware/modems/`), the sans-IO line machine ([`line`](mod@line)),
//! port discovery by identity ([`discover`]) and the tokio shell ([`driver`]: [`GsmLine`]).

pub mod at;
pub mod config;
pub mod discover;
pub mod driver;
pub mod line;
pub mod profile;

pub use crate::pstn::line::RtpCodec;
pub use discover::{Candidates, PortPair, PortSpec};
pub use driver::{GsmLine, GsmLineConfig, IncomingPstnCall, PstnCall, RtpAttach};
pub use line::LineConfig;
pub use profile::Profile;
