//! The PSTN side of the gateway: lines to the telephone network. [`gsm`] drives GSM/3G/LTE
//! modems over their AT and audio ports.

pub mod gsm;
