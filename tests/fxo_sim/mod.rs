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
