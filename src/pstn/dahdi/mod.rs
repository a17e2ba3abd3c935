//! Analog PSTN lines on a telephony card driven by DAHDI (FXO ports: Digium/Sangoma TDM400,
//! A200, OpenVox A400 and clones).
//!
//! - [`channel`]: what a line needs from a card channel (hook, signalling events, 20 ms audio
//!   frames), with [`channel::open`] choosing the implementation from the configured name.
//! - [`sys`]: the Linux implementation on `/dev/dahdi/channel` (DAHDI_SPECIFY, block size,
//!   linear audio, DAHDI_HOOK, DAHDI_GETEVENT).
//! - [`sim`]: the same interface over a Unix socket (`sim:/path`), driven by tests.
//! - [`fxo`]: the sans-IO line machine (seize, dial tone, DTMF dialling, call progress, answer
//!   and disconnect supervision, ring and caller ID), clocked by the card's audio frames.
//! - [`driver`]: the thread that runs a line on a channel.
//! - [`port`]: an FXO port as a [`crate::pstn::Line`] (calls, status, RTP audio).
//! - [`config`]: the `[[fxo]]` configuration tables.

pub mod channel;
pub mod config;
pub mod driver;
pub mod fxo;
pub mod port;
pub mod sim;
pub mod sys;
