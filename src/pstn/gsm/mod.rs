//! GSM/UMTS/LTE modems as PSTN lines: the AT command engine ([`at`]) and the modem families'
//! profiles ([`profile`], data under `hardware/modems/`).

pub mod at;
pub mod line;
pub mod profile;

pub use profile::Profile;
