//! DTMF in-band: a detector for digits heard on a line and a generator for digits we dial.
//!
//! The detector works on blocks of [`BLOCK`] samples (12.75 ms). A block holds a digit when
//! one row and one column frequency stand out: each at least [`MIN_TONE_AMPLITUDE`], the two
//! within the twist limits, each 8 dB above the other frequencies of its group, and together
//! at least 70 % of the block's energy (speech spreads its energy; this last check is what keeps
//! talk-off low). A digit starts after two such blocks in a row (about 25 ms of tone: Q.24
//! asks to reject tones under 23 ms and to accept those of 40 ms) and ends after two blocks
//! without it.

use super::goertzel::{db, Goertzel};
use super::RATE;

/// Samples per analysis block.
pub const BLOCK: usize = 102;
/// Row (low group) frequencies.
pub const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// Column (high group) frequencies.
pub const COLS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
/// The keypad, by row then column.
pub const KEYS: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];
/// Smallest amplitude (of a 16-bit sample) of each of the two tones: about −45 dBm0.
pub const MIN_TONE_AMPLITUDE: f32 = 60.0;
/// Row louder than column by at most this (dB).
pub const MAX_ROW_TWIST_DB: f32 = 8.0;
/// Column louder than row by at most this (dB).
pub const MAX_COL_TWIST_DB: f32 = 6.0;
/// Each tone above the rest of its group by at least this (dB).
pub const RELATIVE_PEAK_DB: f32 = 8.0;
/// The two tones' share of the block energy.
pub const MIN_ENERGY_SHARE: f32 = 0.7;

/// What the detector reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmfEvent {
    /// A digit began; `at` is the sample count (since the detector started) where it was
    /// confirmed.
    Start { digit: char, at: u64 },
    /// The digit ended after `duration` samples.
    End { digit: char, at: u64, duration: u64 },
}

/// A DTMF detector (feed it any number of samples at a time).
#[derive(Debug, Clone)]
pub struct DtmfDetector {
    rows: [Goertzel; 4],
    cols: [Goertzel; 4],
    energy: f32,
    n: usize,
    samples: u64,
    /// The digit of the last block (None: no digit).
    last: Option<char>,
    /// Consecutive blocks with `last`.
    run: u32,
    /// The digit currently reported as present, with its start.
    current: Option<(char, u64)>,
    /// Consecutive blocks without `current`.
    missing: u32,
}

impl Default for DtmfDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl DtmfDetector {
    /// A detector at 8 kHz.
    pub fn new() -> DtmfDetector {
        DtmfDetector {
            rows: ROWS.map(|f| Goertzel::new(f, RATE)),
            cols: COLS.map(|f| Goertzel::new(f, RATE)),
            energy: 0.0,
            n: 0,
            samples: 0,
            last: None,
            run: 0,
            current: None,
            missing: 0,
        }
    }

    /// The digit being heard now, if any.
    pub fn current(&self) -> Option<char> {
        self.current.map(|(d, _)| d)
    }

    /// Feeds samples; `out` gets the events they complete.
    pub fn push(&mut self, samples: &[i16], mut out: impl FnMut(DtmfEvent)) {
        for &s in samples {
            let x = f32::from(s);
            for g in self.rows.iter_mut().chain(self.cols.iter_mut()) {
                g.push(x);
            }
            self.energy += x * x;
            self.n += 1;
            self.samples += 1;
            if self.n == BLOCK {
                let digit = self.classify();
                for g in self.rows.iter_mut().chain(self.cols.iter_mut()) {
                    g.reset();
                }
                self.energy = 0.0;
                self.n = 0;
                self.block(digit, &mut out);
            }
        }
    }

    /// Collects the events of `samples` into a vector (for tests and tools).
    pub fn detect_all(&mut self, samples: &[i16]) -> Vec<DtmfEvent> {
        let mut v = Vec::new();
        self.push(samples, |e| v.push(e));
        v
    }

    fn block(&mut self, digit: Option<char>, out: &mut impl FnMut(DtmfEvent)) {
        if digit == self.last {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = digit;
            self.run = 1;
        }
        if let Some((d, start)) = self.current {
            if digit == Some(d) {
                self.missing = 0;
            } else {
                self.missing += 1;
                if self.missing >= 2 {
                    let end = self.samples - 2 * BLOCK as u64;
                    out(DtmfEvent::End {
                        digit: d,
                        at: end,
                        duration: end.saturating_sub(start),
                    });
                    self.current = None;
                    self.missing = 0;
                }
            }
        }
        if self.current.is_none() {
            if let (Some(d), true) = (digit, self.run >= 2) {
                let start = self.samples - 2 * BLOCK as u64;
                self.current = Some((d, start));
                self.missing = 0;
                out(DtmfEvent::Start {
                    digit: d,
                    at: self.samples,
                });
            }
        }
    }

    fn classify(&self) -> Option<char> {
        let (r, rp) = best(&self.rows);
        let (c, cp) = best(&self.cols);
        let amp = |p: f32| 2.0 * p.sqrt() / BLOCK as f32;
        if amp(rp) < MIN_TONE_AMPLITUDE || amp(cp) < MIN_TONE_AMPLITUDE {
            return None;
        }
        if db(rp, cp) > MAX_ROW_TWIST_DB || db(cp, rp) > MAX_COL_TWIST_DB {
            return None;
        }
        let peak = |g: &[Goertzel; 4], i: usize, p: f32| {
            g.iter()
                .enumerate()
                .all(|(j, o)| j == i || db(p, o.power()) >= RELATIVE_PEAK_DB)
        };
        if !peak(&self.rows, r, rp) || !peak(&self.cols, c, cp) {
            return None;
        }
        let share = (rp + cp) / (self.energy * BLOCK as f32 / 2.0);
        if share < MIN_ENERGY_SHARE {
            return None;
        }
        Some(KEYS[r][c])
    }
}

fn best(g: &[Goertzel; 4]) -> (usize, f32) {
    let mut i = 0;
    let mut p = g[0].power();
    for (j, o) in g.iter().enumerate().skip(1) {
        if o.power() > p {
            i = j;
            p = o.power();
        }
    }
    (i, p)
}

/// The row and column frequencies of a digit (`0-9 * # A-D`, case-insensitive).
pub fn frequencies(digit: char) -> Option<(f32, f32)> {
    let d = digit.to_ascii_uppercase();
    KEYS.iter()
        .enumerate()
        .find_map(|(r, row)| row.iter().position(|&k| k == d).map(|c| (ROWS[r], COLS[c])))
}

/// Generates DTMF digits: each digit `on` samples of tone then `off` samples of silence.
#[derive(Debug, Clone)]
pub struct DtmfGenerator {
    digits: Vec<(f32, f32)>,
    index: usize,
    pos: u32,
    on: u32,
    off: u32,
    amplitude: f32,
}

impl DtmfGenerator {
    /// Digits to send (characters that are not DTMF digits are skipped), `on_ms` of tone and
    /// `off_ms` of pause each, at −10 dBm0 per tone (the usual dialling level).
    pub fn new(digits: &str, on_ms: u32, off_ms: u32) -> DtmfGenerator {
        DtmfGenerator {
            digits: digits.chars().filter_map(frequencies).collect(),
            index: 0,
            pos: 0,
            on: super::ms(on_ms),
            off: super::ms(off_ms),
            amplitude: 7000.0,
        }
    }

    /// Whether every digit has been sent.
    pub fn done(&self) -> bool {
        self.index >= self.digits.len()
    }

    /// Fills `out` with the next samples (silence once done).
    pub fn fill(&mut self, out: &mut [i16]) {
        use std::f32::consts::PI;
        for s in out.iter_mut() {
            let Some(&(f1, f2)) = self.digits.get(self.index) else {
                *s = 0;
                continue;
            };
            *s = if self.pos < self.on {
                let t = self.pos as f32 / RATE as f32;
                (self.amplitude * ((2.0 * PI * f1 * t).sin() + (2.0 * PI * f2 * t).sin())) as i16
            } else {
                0
            };
            self.pos += 1;
            if self.pos >= self.on + self.off {
                self.pos = 0;
                self.index += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generate(digits: &str, on: u32, off: u32) -> Vec<i16> {
        let mut g = DtmfGenerator::new(digits, on, off);
        let mut v = vec![0i16; (super::super::ms(on + off) as usize) * digits.len() + 800];
        g.fill(&mut v);
        v
    }

    fn digits(ev: &[DtmfEvent]) -> String {
        ev.iter()
            .filter_map(|e| match e {
                DtmfEvent::Start { digit, .. } => Some(*digit),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn every_key_is_detected_once_with_start_and_end() {
        let keys = "123A456B789C*0#D";
        let ev = DtmfDetector::new().detect_all(&generate(keys, 60, 60));
        assert_eq!(digits(&ev), keys);
        assert_eq!(ev.len(), 2 * keys.len(), "{ev:?}");
        for e in &ev {
            if let DtmfEvent::End { duration, .. } = e {
                // 60 ms = 480 samples, measured to a block or two.
                assert!((300..=700).contains(duration), "{e:?}");
            }
        }
    }

    #[test]
    fn a_tone_shorter_than_the_minimum_is_rejected() {
        let ev = DtmfDetector::new().detect_all(&generate("5", 20, 100));
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn a_single_frequency_and_white_noise_give_no_digit() {
        use std::f32::consts::PI;
        let tone: Vec<i16> = (0..8000)
            .map(|i| (8000.0 * (2.0 * PI * 770.0 * i as f32 / 8000.0).sin()) as i16)
            .collect();
        assert!(DtmfDetector::new().detect_all(&tone).is_empty());
        let mut x: u32 = 1;
        let noise: Vec<i16> = (0..16000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as i16) / 4
            })
            .collect();
        assert!(DtmfDetector::new().detect_all(&noise).is_empty());
    }

    #[test]
    fn too_much_twist_is_rejected() {
        use std::f32::consts::PI;
        let (r, c) = frequencies('1').unwrap();
        let v: Vec<i16> = (0..4000)
            .map(|i| {
                let t = i as f32 / 8000.0;
                (8000.0 * (2.0 * PI * r * t).sin() + 1000.0 * (2.0 * PI * c * t).sin()) as i16
            })
            .collect();
        assert!(DtmfDetector::new().detect_all(&v).is_empty());
    }
}
