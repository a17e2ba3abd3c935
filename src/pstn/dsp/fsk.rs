//! A 1200 baud FSK demodulator with an asynchronous UART: the physical layer of on-hook
//! caller ID (Bell 202: mark 1200 Hz, space 2200 Hz; ITU-T V.23 / ETSI EN 300 659: mark 1300 Hz,
//! space 2100 Hz).
//!
//! Each sample updates two sliding DFTs one bit long (mark and space); the louder one is the
//! bit. The UART waits for a start bit (space after mark), samples the eight data bits in the
//! middle of their bit times (LSB first) and checks the stop bit (mark). Bytes come out as they
//! complete; the caller-ID layer ([`super::callerid`]) finds the message in them.

use super::RATE;
use std::f64::consts::PI;

/// The FSK flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FskStandard {
    /// Bell 202 (North America).
    Bell202,
    /// ITU-T V.23 (ETSI, most of Europe).
    V23,
}

impl FskStandard {
    /// (mark, space) frequencies in Hz.
    pub fn freqs(self) -> (f64, f64) {
        match self {
            FskStandard::Bell202 => (1200.0, 2200.0),
            FskStandard::V23 => (1300.0, 2100.0),
        }
    }
}

/// Bits per second.
pub const BAUD: f64 = 1200.0;
/// Window length of the sliding DFTs: one bit (6.67 samples) rounded up.
const WINDOW: usize = 7;
/// Below this summed power per window nothing is decoded (no carrier).
const MIN_POWER: f64 = 7.0 * 7.0 * 100.0 * 100.0;

#[derive(Debug, Clone)]
struct Sdft {
    step: f64,
    phase: f64,
    re: f64,
    im: f64,
    ring: [(f64, f64); WINDOW],
}

impl Sdft {
    fn new(freq: f64) -> Sdft {
        Sdft {
            step: 2.0 * PI * freq / f64::from(RATE),
            phase: 0.0,
            re: 0.0,
            im: 0.0,
            ring: [(0.0, 0.0); WINDOW],
        }
    }

    fn push(&mut self, x: f64, slot: usize) -> f64 {
        let (s, c) = self.phase.sin_cos();
        self.phase = (self.phase + self.step) % (2.0 * PI);
        let v = (x * c, -x * s);
        let old = std::mem::replace(&mut self.ring[slot], v);
        self.re += v.0 - old.0;
        self.im += v.1 - old.1;
        self.re * self.re + self.im * self.im
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Uart {
    /// Waiting for a start bit.
    Idle,
    /// In a character: `bit` is the next bit index (0 = start bit, 1–8 data, 9 stop) and `at`
    /// the sample time of its middle.
    Char { bit: u32, at: f64, byte: u8 },
}

/// The demodulator and UART.
#[derive(Debug, Clone)]
pub struct FskReceiver {
    mark: Sdft,
    space: Sdft,
    slot: usize,
    t: f64,
    last_bit: bool,
    uart: Uart,
    carrier: bool,
    /// Mark bits seen in a row (before the message: the "mark signal").
    marks: u32,
}

impl FskReceiver {
    /// A receiver for `standard`.
    pub fn new(standard: FskStandard) -> FskReceiver {
        let (m, s) = standard.freqs();
        FskReceiver {
            mark: Sdft::new(m),
            space: Sdft::new(s),
            slot: 0,
            t: 0.0,
            last_bit: true,
            uart: Uart::Idle,
            carrier: false,
            marks: 0,
        }
    }

    /// Whether an FSK carrier is present now.
    pub fn carrier(&self) -> bool {
        self.carrier
    }

    /// Feeds samples; `out` gets each byte received with a valid stop bit.
    pub fn push(&mut self, samples: &[i16], mut out: impl FnMut(u8)) {
        let bit_len = f64::from(RATE) / BAUD;
        for &s in samples {
            let x = f64::from(s);
            let pm = self.mark.push(x, self.slot);
            let ps = self.space.push(x, self.slot);
            self.slot = (self.slot + 1) % WINDOW;
            self.t += 1.0;
            self.carrier = pm + ps > MIN_POWER;
            if !self.carrier {
                self.uart = Uart::Idle;
                self.last_bit = true;
                continue;
            }
            let bit = pm >= ps;
            match self.uart {
                Uart::Idle => {
                    if self.last_bit && !bit {
                        // The DFT lags by about half a window: the edge was ~3.5 samples ago,
                        // so the start bit's middle is half a bit after that.
                        let edge = self.t - WINDOW as f64 / 2.0;
                        self.uart = Uart::Char {
                            bit: 0,
                            at: edge + bit_len / 2.0 + WINDOW as f64 / 2.0,
                            byte: 0,
                        };
                    }
                }
                Uart::Char {
                    bit: n,
                    at,
                    mut byte,
                } => {
                    if self.t >= at {
                        match n {
                            0 if bit => self.uart = Uart::Idle, // a glitch, not a start bit
                            0 => {
                                self.uart = Uart::Char {
                                    bit: 1,
                                    at: at + bit_len,
                                    byte,
                                }
                            }
                            1..=8 => {
                                if bit {
                                    byte |= 1 << (n - 1);
                                }
                                self.uart = Uart::Char {
                                    bit: n + 1,
                                    at: at + bit_len,
                                    byte,
                                };
                            }
                            _ => {
                                if bit {
                                    out(byte);
                                }
                                self.uart = Uart::Idle;
                            }
                        }
                    }
                }
            }
            if bit {
                self.marks = self.marks.saturating_add(1);
            } else {
                self.marks = 0;
            }
            self.last_bit = bit;
        }
    }
}

/// Modulates bytes as FSK with a UART frame each (start, 8 data LSB first, stop), after
/// `seizure` bits of alternating 0/1 and `mark` bits of mark: a small transmitter for tests
/// of the receiver (the real test signals come from spandsp).
pub fn modulate(
    standard: FskStandard,
    bytes: &[u8],
    seizure: u32,
    mark: u32,
    amp: f64,
) -> Vec<i16> {
    let (fm, fs) = standard.freqs();
    let mut bits: Vec<bool> = Vec::new();
    bits.extend((0..seizure).map(|i| i % 2 == 1));
    bits.extend((0..mark).map(|_| true));
    for &b in bytes {
        bits.push(false);
        bits.extend((0..8).map(|i| b & (1 << i) != 0));
        bits.push(true);
    }
    bits.extend((0..10).map(|_| true));
    let bit_len = f64::from(RATE) / BAUD;
    let n = (bits.len() as f64 * bit_len) as usize;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let bit = bits[((i as f64) / bit_len) as usize];
            let f = if bit { fm } else { fs };
            phase = (phase + 2.0 * PI * f / f64::from(RATE)) % (2.0 * PI);
            (amp * phase.sin()) as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_survive_modulation_and_demodulation_in_both_standards() {
        let msg: Vec<u8> = (0u8..=255)
            .step_by(7)
            .chain([0x80, 0x00, 0xff, 0x55])
            .collect();
        for std in [FskStandard::Bell202, FskStandard::V23] {
            let audio = modulate(std, &msg, 30, 40, 3000.0);
            let mut rx = FskReceiver::new(std);
            let mut got = Vec::new();
            rx.push(&audio, |b| got.push(b));
            // The seizure may decode as a few 0x55-like bytes before the message.
            let pos = got
                .windows(msg.len())
                .position(|w| w == msg.as_slice())
                .unwrap_or_else(|| panic!("{std:?}: {got:x?}"));
            assert!(pos <= 4, "{pos}");
        }
    }

    #[test]
    fn silence_and_a_steady_tone_give_nothing() {
        let mut rx = FskReceiver::new(FskStandard::V23);
        let mut got = Vec::new();
        rx.push(&[0i16; 8000], |b| got.push(b));
        let tone: Vec<i16> = (0..8000)
            .map(|i| (3000.0 * (2.0 * PI * 1300.0 * i as f64 / 8000.0).sin()) as i16)
            .collect();
        rx.push(&tone, |b| got.push(b));
        assert!(got.is_empty(), "{got:?}");
    }
}
