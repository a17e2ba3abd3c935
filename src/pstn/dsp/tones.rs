//! Call-progress tones: which tone a line plays (dial, ring-back, busy, congestion) from its
//! frequencies and cadence, for a configured country.
//!
//! Audio is analysed in 20 ms frames. A frame is "tone" when the country's tone frequencies
//! hold most of its energy (and it is loud enough); consecutive frames make on/off segments.
//! A continuous tone is recognised after [`CONTINUOUS_MS`]; a cadenced one when the last
//! segments match its cadence (any phase) within a tolerance, over at least four segments and
//! as many as any other tone of the same frequencies sharing one of its durations has, so that
//! e.g. Spain's busy (200/200) is not taken for its congestion (200/200/200/200/200/600).
//!
//! Frames that are loud but not tone count as voice ([`ToneDetector::voice_ms`]), which is
//! how a line without answer supervision notices the callee speaking.

use super::goertzel::Goertzel;
use super::RATE;

/// Samples per analysis frame (20 ms).
pub const FRAME: usize = 160;
/// A steady tone at least this long is a continuous tone (dial tone); longer when a cadenced
/// tone of the same frequencies has longer "on" parts (a German ring-back is on for 1 s).
pub const CONTINUOUS_MS: u32 = 1000;
/// Frames quieter than this RMS are silence (about −50 dBm0).
pub const MIN_RMS: f32 = 30.0;
/// Share of a frame's energy the tone frequencies must hold.
pub const MIN_TONE_SHARE: f32 = 0.6;

/// What a tone means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ToneKind {
    /// The exchange is ready for digits.
    Dial,
    /// The callee's phone rings.
    Ringback,
    /// The callee is busy.
    Busy,
    /// The network is congested or the number is unobtainable.
    Congestion,
}

/// One tone of a country: its frequencies and cadence (ms on, ms off, …; empty = continuous).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToneSpec {
    /// What it means.
    pub kind: ToneKind,
    /// One or two frequencies, played together.
    pub freqs: &'static [f32],
    /// Alternating on/off durations in ms, starting with on; empty for a continuous tone.
    pub cadence: &'static [u32],
}

/// The tones of a country.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Country {
    /// ISO 3166 code, upper case.
    pub code: &'static str,
    /// Its tones.
    pub tones: &'static [ToneSpec],
}

macro_rules! tone {
    ($k:ident, [$($f:expr),+], [$($c:expr),*]) => {
        ToneSpec { kind: ToneKind::$k, freqs: &[$($f),+], cadence: &[$($c),*] }
    };
}

/// The countries we know (ITU-T E.180 supplement 2 and the operators' published tone plans).
pub const COUNTRIES: &[Country] = &[
    Country {
        code: "DE",
        tones: &[
            tone!(Dial, [425.0], []),
            tone!(Ringback, [425.0], [1000, 4000]),
            tone!(Busy, [425.0], [480, 480]),
            tone!(Congestion, [425.0], [240, 240]),
        ],
    },
    Country {
        code: "ES",
        tones: &[
            tone!(Dial, [425.0], []),
            tone!(Ringback, [425.0], [1500, 3000]),
            tone!(Busy, [425.0], [200, 200]),
            tone!(Congestion, [425.0], [200, 200, 200, 200, 200, 600]),
        ],
    },
    Country {
        code: "IT",
        tones: &[
            tone!(Dial, [425.0], [200, 200, 600, 1000]),
            tone!(Ringback, [425.0], [1000, 4000]),
            tone!(Busy, [425.0], [500, 500]),
            tone!(Congestion, [425.0], [200, 200]),
        ],
    },
    Country {
        code: "UK",
        tones: &[
            tone!(Dial, [350.0, 440.0], []),
            tone!(Ringback, [400.0, 450.0], [400, 200, 400, 2000]),
            tone!(Busy, [400.0], [375, 375]),
            tone!(Congestion, [400.0], [400, 350, 225, 525]),
        ],
    },
    Country {
        code: "US",
        tones: &[
            tone!(Dial, [350.0, 440.0], []),
            tone!(Ringback, [440.0, 480.0], [2000, 4000]),
            tone!(Busy, [480.0, 620.0], [500, 500]),
            tone!(Congestion, [480.0, 620.0], [250, 250]),
        ],
    },
];

/// The tone plan of a country by its code (`GB` is accepted for `UK`).
pub fn country(code: &str) -> Option<&'static Country> {
    let code = code.trim().to_ascii_uppercase();
    let code = if code == "GB" { "UK".to_string() } else { code };
    COUNTRIES.iter().find(|c| c.code == code)
}

/// What the detector found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToneEvent {
    /// The tone of this kind is being heard (reported once, until the tone changes).
    Tone(ToneKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    Off,
    /// On, with the index of the frequency set in `sets`.
    On(usize),
}

/// A call-progress tone detector for one country.
#[derive(Debug, Clone)]
pub struct ToneDetector {
    country: &'static Country,
    /// Distinct frequency sets of the country's tones, with how long each must be steady to
    /// count as continuous.
    sets: Vec<&'static [f32]>,
    continuous_ms: Vec<u32>,
    /// All distinct frequencies, with a filter each.
    freqs: Vec<(f32, Goertzel)>,
    energy: f32,
    n: usize,
    current: Seg,
    current_ms: u32,
    history: Vec<(Seg, u32)>,
    /// Segments each tone needs to be recognised.
    need: Vec<usize>,
    reported: Option<ToneKind>,
    voice_ms: u32,
    silence_ms: u32,
}

impl ToneDetector {
    /// A detector for `country`'s tones.
    pub fn new(country: &'static Country) -> ToneDetector {
        let mut sets: Vec<&'static [f32]> = Vec::new();
        let mut freqs: Vec<(f32, Goertzel)> = Vec::new();
        for t in country.tones {
            if !sets.contains(&t.freqs) {
                sets.push(t.freqs);
            }
            for &f in t.freqs {
                if !freqs.iter().any(|(g, _)| *g == f) {
                    freqs.push((f, Goertzel::new(f, RATE)));
                }
            }
        }
        let continuous_ms = sets
            .iter()
            .map(|set| {
                country
                    .tones
                    .iter()
                    .filter(|t| t.freqs == *set)
                    .flat_map(|t| t.cadence.iter().step_by(2))
                    .map(|on| on + 400)
                    .max()
                    .unwrap_or(0)
                    .max(CONTINUOUS_MS)
            })
            .collect();
        // A cadenced tone must be seen over at least four segments, and over as many as any
        // other tone of the same frequencies that shares one of its durations.
        let need = country
            .tones
            .iter()
            .map(|t| {
                country
                    .tones
                    .iter()
                    .filter(|o| {
                        o.freqs == t.freqs
                            && t.cadence.iter().any(|d| {
                                o.cadence.iter().any(|e| d.abs_diff(*e) <= (d / 4).max(60))
                            })
                    })
                    .map(|o| o.cadence.len())
                    .max()
                    .unwrap_or(0)
                    .max(t.cadence.len())
                    .max(4)
            })
            .collect();
        ToneDetector {
            country,
            sets,
            continuous_ms,
            freqs,
            energy: 0.0,
            n: 0,
            current: Seg::Off,
            current_ms: 0,
            history: Vec::with_capacity(16),
            need,
            reported: None,
            voice_ms: 0,
            silence_ms: 0,
        }
    }

    /// The country.
    pub fn country(&self) -> &'static Country {
        self.country
    }

    /// The tone last recognised, while it lasts.
    pub fn tone(&self) -> Option<ToneKind> {
        self.reported
    }

    /// How long loud non-tone audio (speech) has lasted without a break of more than 200 ms.
    pub fn voice_ms(&self) -> u32 {
        self.voice_ms
    }

    /// How long the line has been silent (no tone, no voice).
    pub fn silence_ms(&self) -> u32 {
        self.silence_ms
    }

    /// Feeds samples; `out` gets what they complete.
    pub fn push(&mut self, samples: &[i16], mut out: impl FnMut(ToneEvent)) {
        for &s in samples {
            let x = f32::from(s);
            for (_, g) in self.freqs.iter_mut() {
                g.push(x);
            }
            self.energy += x * x;
            self.n += 1;
            if self.n == FRAME {
                let seg = self.classify();
                for (_, g) in self.freqs.iter_mut() {
                    g.reset();
                }
                self.energy = 0.0;
                self.n = 0;
                self.frame(seg, &mut out);
            }
        }
    }

    fn classify(&mut self) -> Option<Seg> {
        let rms = (self.energy / FRAME as f32).sqrt();
        if rms < MIN_RMS {
            return Some(Seg::Off);
        }
        let share = |f: f32| {
            self.freqs
                .iter()
                .find(|(g, _)| *g == f)
                .map(|(_, g)| g.normalised(self.energy, FRAME))
                .unwrap_or(0.0)
        };
        let mut best: Option<(usize, f32)> = None;
        for (i, set) in self.sets.iter().enumerate() {
            let s: f32 = set.iter().map(|&f| share(f)).sum();
            // A two-frequency tone must have both.
            let each = set.iter().all(|&f| share(f) > 0.15);
            if each && s >= MIN_TONE_SHARE && best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        // None: loud, but not a tone (voice).
        best.map(|(i, _)| Seg::On(i))
    }

    fn frame(&mut self, seg: Option<Seg>, out: &mut impl FnMut(ToneEvent)) {
        const MS: u32 = (FRAME as u32 * 1000) / RATE;
        match seg {
            None => {
                self.voice_ms += MS;
                self.silence_ms = 0;
            }
            Some(Seg::Off) => {
                self.silence_ms += MS;
                if self.silence_ms > 200 {
                    self.voice_ms = 0;
                }
            }
            Some(Seg::On(_)) => {
                self.silence_ms = 0;
                self.voice_ms = 0;
            }
        }
        // Voice frames break a tone's cadence like silence does.
        let seg = seg.unwrap_or(Seg::Off);
        if seg == self.current {
            self.current_ms = self.current_ms.saturating_add(MS);
        } else {
            if self.history.len() == 16 {
                self.history.remove(0);
            }
            self.history.push((self.current, self.current_ms));
            self.current = seg;
            self.current_ms = MS;
            if let Some(kind) = self.match_cadence() {
                self.report(kind, out);
            } else if self.reported.is_some_and(|k| self.is_continuous(k)) {
                self.reported = None;
            }
        }
        if let Seg::On(i) = self.current {
            if self.current_ms >= self.continuous_ms[i] {
                let kind = self
                    .country
                    .tones
                    .iter()
                    .find(|t| t.cadence.is_empty() && self.sets[i] == t.freqs)
                    .map(|t| t.kind);
                if let Some(kind) = kind {
                    self.report(kind, out);
                }
            }
        } else if self.current_ms > 6000 {
            // Long silence: whatever tone it was is over.
            self.reported = None;
        }
    }

    fn is_continuous(&self, kind: ToneKind) -> bool {
        self.country
            .tones
            .iter()
            .any(|t| t.kind == kind && t.cadence.is_empty())
    }

    fn report(&mut self, kind: ToneKind, out: &mut impl FnMut(ToneEvent)) {
        if self.reported != Some(kind) {
            self.reported = Some(kind);
            out(ToneEvent::Tone(kind));
        }
    }

    fn match_cadence(&self) -> Option<ToneKind> {
        'tones: for (t, &need) in self.country.tones.iter().zip(&self.need) {
            if t.cadence.is_empty() || self.history.len() < need {
                continue;
            }
            let tail = &self.history[self.history.len() - need..];
            let Some(set) = self.sets.iter().position(|s| *s == t.freqs) else {
                continue;
            };
            let len = t.cadence.len();
            'phase: for phase in 0..len {
                for (i, &(seg, ms)) in tail.iter().enumerate() {
                    let k = (phase + i) % len;
                    let on = k % 2 == 0;
                    let want = t.cadence[k];
                    let seg_ok = if on {
                        seg == Seg::On(set)
                    } else {
                        seg == Seg::Off
                    };
                    let tol = (want / 4).max(60);
                    if !seg_ok || ms.abs_diff(want) > tol {
                        continue 'phase;
                    }
                }
                return Some(t.kind);
            }
            continue 'tones;
        }
        None
    }
}

/// Generates a tone of `spec` (for tests and for playing tones to a line): `ms` milliseconds
/// at amplitude `amp` per frequency.
pub fn generate(spec: &ToneSpec, amp: f32, ms: u32) -> Vec<i16> {
    use std::f32::consts::PI;
    let n = super::ms(ms) as usize;
    let period: u32 = spec.cadence.iter().sum();
    (0..n)
        .map(|i| {
            let t_ms = (i as u32) / (RATE / 1000);
            let on = if period == 0 {
                true
            } else {
                let mut p = t_ms % period;
                let mut on = true;
                for &d in spec.cadence {
                    if p < d {
                        break;
                    }
                    p -= d;
                    on = !on;
                }
                on
            };
            if !on {
                return 0;
            }
            let t = i as f32 / RATE as f32;
            spec.freqs
                .iter()
                .map(|f| amp * (2.0 * PI * f * t).sin())
                .sum::<f32>() as i16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(country: &'static Country, audio: &[i16]) -> Vec<ToneKind> {
        let mut d = ToneDetector::new(country);
        let mut v = Vec::new();
        d.push(audio, |ToneEvent::Tone(k)| v.push(k));
        v
    }

    #[test]
    fn every_tone_of_every_country_is_recognised_as_itself() {
        for c in COUNTRIES {
            for t in c.tones {
                let audio = generate(t, 3000.0, 14000);
                let found = detect(c, &audio);
                assert_eq!(
                    found.first(),
                    Some(&t.kind),
                    "{} {:?}: {found:?}",
                    c.code,
                    t.kind
                );
                assert!(
                    found.iter().all(|k| *k == t.kind),
                    "{} {:?}: {found:?}",
                    c.code,
                    t.kind
                );
            }
        }
    }

    #[test]
    fn a_tone_of_another_frequency_is_not_a_call_progress_tone() {
        let de = country("de").unwrap();
        let us_busy = country("US").unwrap().tones[2];
        assert!(detect(de, &generate(&us_busy, 3000.0, 5000)).is_empty());
    }

    #[test]
    fn speech_like_audio_counts_as_voice_not_tone() {
        use std::f32::consts::PI;
        // A harmonic-rich buzz with a moving pitch.
        let audio: Vec<i16> = (0..8000)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let f0 = 120.0 + 40.0 * (2.0 * PI * 3.0 * t).sin();
                (1..12)
                    .map(|h| 600.0 / h as f32 * (2.0 * PI * f0 * h as f32 * t).sin())
                    .sum::<f32>() as i16
            })
            .collect();
        let mut d = ToneDetector::new(country("DE").unwrap());
        let mut v = Vec::new();
        d.push(&audio, |e| v.push(e));
        assert!(v.is_empty(), "{v:?}");
        assert!(d.voice_ms() >= 900, "{}", d.voice_ms());
    }
}
