//! Music on hold: what a held party hears, as G.711 frames computed once (both laws, 20 ms
//! each) and played by the relay on its own timer ([`super::relay`]) into the stream towards
//! that party, in place of the silence of a held call.
//!
//! Sources: the default, a short melody generated here (sine notes with soft attack and
//! release, so it is ours and royalty-free, and nothing needs to be shipped beside the
//! binary); a steady tone; or a file: WAV (PCM 16-bit, or G.711 µ-law/A-law; 8 kHz mono) or
//! raw G.711 (`.ul`/`.ulaw`/`.pcmu`, `.al`/`.alaw`/`.pcma`).

use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::g711;
use super::Law;

/// Samples in one frame (20 ms at 8 kHz).
pub const FRAME: usize = 160;
/// Longest file taken (10 minutes at 8 kHz), so a mistaken path cannot fill the memory.
const MAX_SAMPLES: usize = 8000 * 600;

/// Why a hold music file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HoldMusicError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {why}", path.display())]
    Format { path: PathBuf, why: String },
}

/// Music on hold, ready to play: the same audio in µ-law and A-law, a whole number of frames.
#[derive(Clone)]
pub struct HoldMusic {
    ulaw: Arc<[u8]>,
    alaw: Arc<[u8]>,
}

impl std::fmt::Debug for HoldMusic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HoldMusic({} frames)", self.frames())
    }
}

impl PartialEq for HoldMusic {
    fn eq(&self, other: &Self) -> bool {
        self.ulaw == other.ulaw
    }
}

impl HoldMusic {
    /// From linear samples (padded with silence to whole frames).
    pub fn from_linear(samples: &[i16]) -> HoldMusic {
        let mut s = samples.to_vec();
        if s.is_empty() {
            s.push(0);
        }
        let pad = (FRAME - s.len() % FRAME) % FRAME;
        s.extend(std::iter::repeat_n(0, pad));
        HoldMusic {
            ulaw: s.iter().map(|&x| g711::linear_to_ulaw(x)).collect(),
            alaw: s.iter().map(|&x| g711::linear_to_alaw(x)).collect(),
        }
    }

    /// The default: a calm melody of about 7 seconds, looped.
    pub fn melody() -> HoldMusic {
        // (frequency Hz, length ms): a C major phrase, G4 E4 G4 C5 | A4 G4 E4 D4 | C4 ...
        const NOTES: [(f64, u32); 14] = [
            (392.00, 500),
            (329.63, 500),
            (392.00, 500),
            (523.25, 700),
            (440.00, 500),
            (392.00, 500),
            (329.63, 500),
            (293.66, 700),
            (261.63, 500),
            (293.66, 500),
            (329.63, 500),
            (392.00, 500),
            (329.63, 400),
            (261.63, 800),
        ];
        let mut s = Vec::new();
        for (f, ms) in NOTES {
            let n = (ms * 8) as usize;
            for k in 0..n {
                let t = k as f64 / 8000.0;
                // 20 ms attack, 120 ms release: no clicks between notes.
                let env = (k as f64 / 160.0).min(1.0) * ((n - k) as f64 / 960.0).min(1.0);
                // The note and a softer octave above, about -14 dBFS together.
                let v = (2.0 * PI * f * t).sin() * 0.7 + (4.0 * PI * f * t).sin() * 0.15;
                s.push((v * env * 5200.0) as i16);
            }
        }
        HoldMusic::from_linear(&s)
    }

    /// A steady tone of `hz` (one second, looped), about -15 dBFS.
    pub fn tone(hz: f64) -> HoldMusic {
        let s: Vec<i16> = (0..8000)
            .map(|k| ((2.0 * PI * hz * k as f64 / 8000.0).sin() * 5800.0) as i16)
            .collect();
        HoldMusic::from_linear(&s)
    }

    /// From a file: WAV (8 kHz mono; PCM 16-bit, µ-law or A-law) or raw G.711 by extension.
    pub fn from_file(path: &Path) -> Result<HoldMusic, HoldMusicError> {
        let bytes = std::fs::read(path).map_err(|source| HoldMusicError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let format = |why: String| HoldMusicError::Format {
            path: path.to_path_buf(),
            why,
        };
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let samples = match ext.as_str() {
            "ul" | "ulaw" | "pcmu" | "mulaw" => decode(&bytes, Some(Law::Ulaw)),
            "al" | "alaw" | "pcma" => decode(&bytes, Some(Law::Alaw)),
            _ => wav(&bytes).map_err(format)?,
        };
        if samples.is_empty() {
            return Err(format("no audio in it".into()));
        }
        Ok(HoldMusic::from_linear(
            samples.get(..MAX_SAMPLES).unwrap_or(&samples),
        ))
    }

    /// From the bytes of a WAV file (8 kHz mono; PCM 16-bit, µ-law or A-law); the reason when
    /// they are not one.
    pub fn from_wav(bytes: &[u8]) -> Result<HoldMusic, String> {
        let samples = wav(bytes)?;
        if samples.is_empty() {
            return Err("no audio in it".into());
        }
        Ok(HoldMusic::from_linear(
            samples.get(..MAX_SAMPLES).unwrap_or(&samples),
        ))
    }

    /// Parses a `[media] hold_music` setting: `default`, `tone` (425 Hz), `tone:HZ`, or a path.
    pub fn from_setting(setting: &str) -> Result<HoldMusic, HoldMusicError> {
        match setting.trim() {
            "" | "default" => Ok(HoldMusic::melody()),
            "tone" => Ok(HoldMusic::tone(425.0)),
            s => match s.strip_prefix("tone:").map(|hz| hz.trim().parse::<f64>()) {
                Some(Ok(hz)) if (50.0..=3800.0).contains(&hz) => Ok(HoldMusic::tone(hz)),
                Some(_) => Err(HoldMusicError::Format {
                    path: PathBuf::from(s),
                    why: "a tone is tone:HZ with 50 to 3800 Hz".into(),
                }),
                None => HoldMusic::from_file(Path::new(s)),
            },
        }
    }

    /// Frames in the loop.
    pub fn frames(&self) -> usize {
        self.ulaw.len() / FRAME
    }

    /// Frame `n` (modulo the loop) in `law`.
    pub fn frame(&self, law: Law, n: usize) -> &[u8] {
        let data = match law {
            Law::Ulaw => &self.ulaw,
            Law::Alaw => &self.alaw,
        };
        let start = (n % self.frames().max(1)) * FRAME;
        data.get(start..start + FRAME).unwrap_or(&[])
    }
}

/// G.711 bytes to linear samples (`None`: little-endian 16-bit PCM).
fn decode(bytes: &[u8], law: Option<Law>) -> Vec<i16> {
    match law {
        Some(Law::Ulaw) => bytes.iter().map(|&b| g711::ulaw_to_linear(b)).collect(),
        Some(Law::Alaw) => bytes.iter().map(|&b| g711::alaw_to_linear(b)).collect(),
        None => bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The samples of a WAV file: 8 kHz, mono, PCM 16-bit (format 1), A-law (6) or µ-law (7).
fn wav(b: &[u8]) -> Result<Vec<i16>, String> {
    if b.get(..4) != Some(b"RIFF") || b.get(8..12) != Some(b"WAVE") {
        return Err("not a WAV file (use .ul or .al for raw G.711)".into());
    }
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while let (Some(id), Some(len)) = (b.get(at..at + 4), u32_at(b, at + 4)) {
        let body = at + 8;
        let len = len as usize;
        match id {
            b"fmt " => {
                let f = (|| {
                    Some((
                        u16_at(b, body)?,
                        u16_at(b, body + 2)?,
                        u32_at(b, body + 4)?,
                        u16_at(b, body + 14)?,
                    ))
                })()
                .ok_or("a short fmt chunk")?;
                format = Some(f);
            }
            b"data" => {
                let (tag, channels, rate, bits) = format.ok_or("data before fmt")?;
                if channels != 1 || rate != 8000 {
                    return Err(format!(
                        "{channels} channel(s) at {rate} Hz: hold music must be mono 8000 Hz"
                    ));
                }
                let data = b.get(body..(body + len).min(b.len())).unwrap_or(&[]);
                return match (tag, bits) {
                    (1, 16) => Ok(decode(data, None)),
                    (7, 8) => Ok(decode(data, Some(Law::Ulaw))),
                    (6, 8) => Ok(decode(data, Some(Law::Alaw))),
                    _ => Err(format!(
                        "WAV format {tag} with {bits} bits: use PCM 16-bit, µ-law or A-law"
                    )),
                };
            }
            _ => {}
        }
        at = body.saturating_add(len).saturating_add(len & 1);
    }
    Err("no data chunk".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(frame: &[u8]) -> f64 {
        let sum: f64 = frame
            .iter()
            .map(|&b| f64::from(g711::ulaw_to_linear(b)).powi(2))
            .sum();
        (sum / frame.len() as f64).sqrt()
    }

    #[test]
    fn melody_is_audible_and_whole_frames() {
        let m = HoldMusic::melody();
        assert!(m.frames() > 300, "{}", m.frames());
        let loud = (0..m.frames())
            .filter(|&n| rms(m.frame(Law::Ulaw, n)) > 1000.0)
            .count();
        assert!(loud > m.frames() / 2, "{loud} of {}", m.frames());
        assert_eq!(m.frame(Law::Alaw, m.frames() + 3), m.frame(Law::Alaw, 3));
        assert_eq!(m.frame(Law::Ulaw, 0).len(), FRAME);
    }

    #[test]
    fn settings_and_files() {
        assert_eq!(
            HoldMusic::from_setting("default").unwrap(),
            HoldMusic::melody()
        );
        assert_eq!(
            HoldMusic::from_setting("tone:440").unwrap(),
            HoldMusic::tone(440.0)
        );
        assert!(HoldMusic::from_setting("tone:9000").is_err());
        let dir = std::env::temp_dir().join(format!("pasarela-moh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A WAV file of 400 samples of PCM: 3 frames (padded).
        let pcm: Vec<u8> = (0..400i16)
            .flat_map(|k| ((k % 50) * 300).to_le_bytes())
            .collect();
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes());
        wav.extend_from_slice(&8000u32.to_le_bytes());
        wav.extend_from_slice(&16000u32.to_le_bytes());
        wav.extend_from_slice(&2u16.to_le_bytes());
        wav.extend_from_slice(&16u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
        wav.extend_from_slice(&pcm);
        let p = dir.join("music.wav");
        std::fs::write(&p, &wav).unwrap();
        assert_eq!(HoldMusic::from_file(&p).unwrap().frames(), 3);
        // 44.1 kHz is refused with a clear reason.
        wav[24..28].copy_from_slice(&44100u32.to_le_bytes());
        std::fs::write(&p, &wav).unwrap();
        let e = HoldMusic::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("mono 8000 Hz"), "{e}");
        // Raw µ-law by its extension.
        let p = dir.join("music.ul");
        std::fs::write(&p, [0xffu8; 320]).unwrap();
        assert_eq!(HoldMusic::from_file(&p).unwrap().frames(), 2);
        // Garbage is an error, not a panic.
        let p = dir.join("x.wav");
        std::fs::write(&p, b"RIFF\x10\x00\x00\x00WAVEfmt \xff\xff\xff\xff").unwrap();
        assert!(HoldMusic::from_file(&p).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
