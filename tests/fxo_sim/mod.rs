//! Test signals for the FXO line tests, made by spandsp (an independent telephony DSP
//! library) through a small C helper (`sigtool.c`) built here with `cc … -lspandsp`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The built helper (compiled once per test binary).
pub fn sigtool() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fxo_sim/sigtool.c");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sigtool-{}", std::process::id()));
        let st = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-lspandsp")
            .status()
            .expect("cc (tests/setup.sh installs gcc and libspandsp-dev)");
        assert!(
            st.success(),
            "building sigtool.c failed (is libspandsp-dev installed?)"
        );
        out
    })
    .clone()
}

/// Runs the helper and returns the audio it writes (8 kHz s16le).
pub fn signal(args: &[&str]) -> Vec<i16> {
    let out = Command::new(sigtool())
        .args(args)
        .output()
        .expect("sigtool");
    assert!(out.status.success(), "sigtool {args:?}: {:?}", out.status);
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The DTMF digits spandsp's receiver hears in `audio`.
pub fn dtmf_heard(audio: &[i16]) -> String {
    use std::io::Write;
    let mut child = Command::new(sigtool())
        .arg("dtmfrx")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sigtool dtmfrx");
    let bytes: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A tone from spandsp: one or two frequencies (`f2` 0 for one) with a cadence of up to two
/// on/off pairs (`[0; 4]` for continuous), `ms` long.
pub fn tone(f1: u32, f2: u32, cadence: [u32; 4], ms: u32) -> Vec<i16> {
    let a: Vec<String> = [f1, f2]
        .into_iter()
        .chain(cadence)
        .chain([ms])
        .map(|v| v.to_string())
        .collect();
    let mut args = vec!["tone"];
    args.extend(a.iter().map(String::as_str));
    signal(&args)
}

/// The voice recording shipped with sipp (`/usr/share/sip-tester/g711a.pcap`, 7 s of A-law
/// RTP), decoded to linear PCM; `None` when sipp is not installed.
pub fn sipp_voice() -> Option<Vec<i16>> {
    let d = std::fs::read("/usr/share/sip-tester/g711a.pcap").ok()?;
    let mut off = 24;
    let mut pcm = Vec::new();
    while off + 16 <= d.len() {
        let incl = u32::from_le_bytes(d[off + 8..off + 12].try_into().ok()?) as usize;
        off += 16;
        let pkt = d.get(off..off + incl)?;
        off += incl;
        // Ethernet, IPv4 (no options), UDP, RTP without extensions.
        if let Some(payload) = pkt.get(14 + 20 + 8 + 12..) {
            pcm.extend(
                payload
                    .iter()
                    .map(|&a| pasarela::media::g711::alaw_to_linear(a)),
            );
        }
    }
    Some(pcm)
}

/// The exchange side of a simulated FXO channel (the `sim:` socket protocol of
/// `pasarela::pstn::dahdi::sim`), run in lock-step: each turn it sends pending events and one
/// audio frame, then reads what the gateway sends until its audio frame. A script decides
/// every turn what the line does; no wall-clock time is involved, so a minute of line time
/// takes well under a second.
#[derive(Default)]
pub struct Line {
    /// Turns so far (20 ms each).
    pub frame: u64,
    /// The gateway's hook is off.
    pub off_hook: bool,
    /// Frames at which the hook changed, with the new state (true = off).
    pub hook_log: Vec<(u64, bool)>,
    /// All audio the gateway sent.
    pub heard: Vec<i16>,
    /// Samples to play to the gateway (silence when empty).
    pub play: std::collections::VecDeque<i16>,
    /// Events to send before the next frame (DAHDI_EVENT_* codes).
    pub events: Vec<i32>,
    /// Frames at which the gateway flashed the hook (`DAHDI_HOOK` 3; the hook stays off).
    pub flashes: Vec<u64>,
}

impl Line {
    /// An idle line at frame 0.
    pub fn new() -> Line {
        Line::default()
    }

    /// A hook command from the gateway (`DAHDI_HOOK` value).
    pub fn hook(&mut self, v: i32) {
        if v == 3 {
            self.flashes.push(self.frame);
            return;
        }
        self.off_hook = v == 1;
        self.hook_log.push((self.frame, self.off_hook));
    }

    /// Queues audio.
    pub fn play(&mut self, samples: &[i16]) {
        self.play.extend(samples.iter().copied());
    }

    /// RMS of the last frame the gateway sent.
    pub fn last_rms(&self) -> f64 {
        let n = self.heard.len();
        let f = &self.heard[n.saturating_sub(160)..];
        (f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / f.len().max(1) as f64).sqrt()
    }
}

/// Binds `path` and serves one gateway connection with `script` (called every turn; return
/// false to hang up the socket). Returns the final line state.
pub fn exchange(
    path: &std::path::Path,
    mut script: impl FnMut(&mut Line) -> bool + Send + 'static,
) -> std::thread::JoinHandle<Line> {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind sim socket");
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("gateway connects");
        let mut line = Line::new();
        while script(&mut line) {
            let mut m = Vec::with_capacity(400);
            for e in line.events.drain(..) {
                m.push(b'E');
                m.extend(e.to_le_bytes());
            }
            m.push(b'A');
            for _ in 0..160 {
                m.extend(line.play.pop_front().unwrap_or(0).to_le_bytes());
            }
            if s.write_all(&m).is_err() {
                break;
            }
            line.frame += 1;
            // Read until the gateway's audio frame.
            loop {
                let mut t = [0u8; 1];
                if s.read_exact(&mut t).is_err() {
                    return line;
                }
                match t[0] {
                    b'H' => {
                        let mut v = [0u8; 4];
                        s.read_exact(&mut v).unwrap();
                        line.hook(i32::from_le_bytes(v));
                    }
                    b'A' => {
                        let mut b = [0u8; 320];
                        s.read_exact(&mut b).unwrap();
                        line.heard
                            .extend(b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
                        break;
                    }
                    other => panic!("unexpected message 0x{other:02x}"),
                }
            }
        }
        line
    })
}

/// Power share of `freq` in `samples` (1.0 for a pure tone at that frequency).
pub fn tone_share(samples: &[i16], freq: f32) -> f32 {
    use pasarela::pstn::dsp::goertzel::Goertzel;
    let mut g = Goertzel::new(freq, 8000);
    let mut e = 0.0f32;
    for &s in samples {
        g.push(f32::from(s));
        e += f32::from(s).powi(2);
    }
    g.normalised(e, samples.len())
}
