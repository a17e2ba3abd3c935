//! Music on hold through the media relay: a sipp caller holds the call (re-INVITE a=sendonly)
//! for 1.5 s and resumes it; the held callee (sipp, its SDP pointing at a socket of this test)
//! receives RTP while held — decoded, it is the configured 1000 Hz tone, not silence — and
//! nothing after the resume (the caller sends no audio of its own).
mod common;
mod phone;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    assert_sipp_ok, call_config, rtp_port_range, sipp_callee_101, sipp_caller_100, Server,
};

const HARD: Duration = Duration::from_secs(60);

#[test]
fn a_held_callee_hears_the_hold_tone_until_the_resume() {
    let config = call_config("", rtp_port_range())
        .replace("[media]\n", "[media]\nhold_music = \"tone:1000\"\n");
    let mut server = Server::start(&config);
    let capture = UdpSocket::bind("127.0.0.1:0").expect("bind the callee's RTP socket");
    capture
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let rtp_port = capture.local_addr().unwrap().port().to_string();
    let callee = sipp_callee_101(
        &server,
        "callee",
        "hold_music_uas.xml",
        &["-key", "rtp_port", &rtp_port],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let listening = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut got: Vec<(Instant, u8, Vec<u8>)> = Vec::new();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = capture.recv(&mut buf) {
                    if n > 12 {
                        got.push((Instant::now(), buf[1] & 0x7f, buf[12..n].to_vec()));
                    }
                }
            }
            got
        })
    };
    let caller = sipp_caller_100(
        &server,
        "caller",
        "hold_music_uac.xml",
        server.udp,
        "u1",
        &[],
    )
    .wait(HARD);
    let ended = Instant::now();
    assert_sipp_ok(&server, "caller (holds and resumes)", &caller);
    assert_sipp_ok(&server, "callee (held)", &callee.wait(HARD));
    stop.store(true, Ordering::Relaxed);
    let got = listening.join().expect("capture thread");
    let audio: Vec<&(Instant, u8, Vec<u8>)> = got
        .iter()
        .filter(|(_, pt, p)| matches!(pt, 0 | 8) && p.len() == 160)
        .collect();
    // 1.5 s of hold is 75 frames; a loaded machine may be late, not silent.
    assert!(
        audio.len() >= 30,
        "only {} audio packets while held ({} in all)\n{}",
        audio.len(),
        got.len(),
        server.log_excerpt()
    );
    let samples: Vec<i16> = audio
        .iter()
        .flat_map(|(_, pt, p)| {
            p.iter().map(move |&b| match pt {
                0 => pasarela::media::g711::ulaw_to_linear(b),
                _ => pasarela::media::g711::alaw_to_linear(b),
            })
        })
        .collect();
    let rms =
        (samples.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / samples.len() as f64).sqrt();
    assert!(rms > 1000.0, "the music is (nearly) silence: RMS {rms:.0}");
    let tone = phone::goertzel(&samples, 8000, 1000.0);
    for other in phone::PROBES.iter().filter(|&&f| f != 1000.0) {
        let p = phone::goertzel(&samples, 8000, *other);
        assert!(tone > 20.0 * p, "1000 Hz {tone:.0} vs {other} Hz {p:.0}");
    }
    // The caller waits 2 s after the resume before its BYE: the music stopped at the resume.
    let last = audio.last().map(|(t, _, _)| *t).expect("audio");
    assert!(
        ended.saturating_duration_since(last) >= Duration::from_millis(1200),
        "music went on until {:?} before the BYE (expected to stop at the resume, 2 s earlier)",
        ended.saturating_duration_since(last)
    );
    server.assert_alive();
}
