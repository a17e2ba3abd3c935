//! GSM/UMTS/LTE modems as PSTN lines: the AT command engine ([`at`]).

pub mod at;
