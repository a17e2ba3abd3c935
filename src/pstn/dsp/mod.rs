//! Telephone-line signal processing on 8 kHz linear PCM, sans-IO: every detector takes
//! samples and returns what it found, counting time in samples (no clock is read).
//!
//! - [`goertzel`]: single-frequency power, the building block of the detectors.
//! - [`dtmf`]: DTMF detection (twist, relative-peak, energy-ratio and duration checks so speech
//!   does not produce digits) and generation (the FXO line dials with it).
//! - [`tones`]: call-progress tones and their cadences per country (dial, ring-back, busy,
//!   congestion) and plain voice-energy detection.
//! - [`fsk`]: a 1200 baud FSK demodulator (Bell 202 and ITU-T V.23) with an async UART.
//! - [`callerid`]: caller ID messages (SDMF/MDMF over FSK, DTMF caller ID) into a caller.

pub mod callerid;
pub mod dtmf;
pub mod fsk;
pub mod goertzel;
pub mod tones;

/// Samples per second of every signal here.
pub const RATE: u32 = 8000;

/// Samples in `ms` milliseconds.
pub const fn ms(ms: u32) -> u32 {
    ms * (RATE / 1000)
}
