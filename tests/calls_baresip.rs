//! Calls between real softphones (baresip 1.0.0, headless) through the B2BUA: audio both ways
//! through the media relay (tones analysed with a Goertzel filter), RFC 4733 DTMF, and forking
//! to two registered contacts of one extension.
//!
//! Each baresip gets a config directory in the test directory: `aufile` plays a generated WAV
//! (8 kHz mono 16-bit) as the microphone, `alsa,null` is the speaker, `sndfile` writes what is
//! sent (`*-enc.wav`) and received (`*-dec.wav`) under `rec/`, and `ctrl_tcp` takes netstring
//! JSON commands and reports events (`CALL_INCOMING`, `CALL_ESTABLISHED`, `CALL_CLOSED`,
//! `CALL_DTMF_START` with the digit in `param`, …; names checked against baresip 1.0.0 calling
//! another baresip directly). The call ends when a phone's WAV file ends (baresip hangs up).
//! The phone harness lives in tests/phone/mod.rs (shared with the modem call tests).
mod common;
mod phone;

use std::time::{Duration, Instant};

use common::{call_config, require_program, rtp_port_range, Server};
use phone::*;

fn start_server() -> Server {
    require_program("baresip", "baresip");
    Server::start(&call_config("", rtp_port_range()))
}

const CALL_SETUP: Duration = Duration::from_secs(15);

/// 100 plays 1000 Hz, 101 plays 440 Hz; each must receive the other's tone through the relay.
#[test]
fn tones_cross_the_relay_both_ways() {
    let mut server = start_server();
    let base = server.dir().to_path_buf();
    let mut a = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "100",
            ext: "100",
            answer: "manual",
            tone_hz: 1000.0,
            tone_secs: 3.0,
        },
    );
    let mut b = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "101",
            ext: "101",
            answer: "auto",
            tone_hz: 440.0,
            tone_secs: 5.0,
        },
    );
    wait_registered(&server, &mut a, "100");
    wait_registered(&server, &mut b, "101");

    a.command("dial", &format!("sip:101@{}", server.udp));
    b.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a], &server);
    a.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&b], &server);
    // 100's file ends after 3 s and it hangs up; pasarela passes the BYE on to 101.
    a.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&b], &server);
    b.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&a], &server);
    // sndfile closes its files when the call's audio stream goes away: received_wav waits.

    let logs = format!("{}{}{}", a.report(), b.report(), server.log_excerpt());
    assert_tone(&a.received_wav(), 440.0, "100 (caller) received", &logs);
    assert_tone(&b.received_wav(), 1000.0, "101 (callee) received", &logs);
    server.assert_alive();
}

/// 100 sends "123#" as RFC 4733 events; 101 reports the same digits.
#[test]
fn dtmf_reaches_the_callee() {
    let mut server = start_server();
    let base = server.dir().to_path_buf();
    let mut a = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "100",
            ext: "100",
            answer: "manual",
            tone_hz: 1000.0,
            tone_secs: 10.0,
        },
    );
    let mut b = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "101",
            ext: "101",
            answer: "auto",
            tone_hz: 440.0,
            tone_secs: 10.0,
        },
    );
    wait_registered(&server, &mut a, "100");
    wait_registered(&server, &mut b, "101");

    a.command("dial", &format!("sip:101@{}", server.udp));
    b.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a], &server);
    a.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&b], &server);
    // Digits sent before 100's audio crosses the relay to 101 would be lost on the way (the
    // relay and 101's receiver have no stream yet): wait until 101 has taken its first RTP
    // packet from the relay (baresip's CALL_RTPESTAB), and 100 too, so media flows both ways.
    b.expect_event("CALL_RTPESTAB", CALL_SETUP, &[&a], &server);
    a.expect_event("CALL_RTPESTAB", CALL_SETUP, &[&b], &server);
    a.command("sndcode", "123#");

    let mut digits = String::new();
    let mut from = 0;
    let deadline = Instant::now() + Duration::from_secs(6);
    while digits.len() < 4 && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match b.wait_event("CALL_DTMF_START", from, left) {
            Some((next, ev)) => {
                from = next;
                digits.push_str(&json_str(&ev, "param").unwrap_or_default());
            }
            None => break,
        }
    }
    a.command("hangup", "");
    if digits != "123#" {
        panic!(
            "101 received DTMF {digits:?}, expected \"123#\"\n{}{}{}",
            b.report(),
            a.report(),
            server.log_excerpt()
        );
    }
    b.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&a], &server);
    server.assert_alive();
}

/// 101 is registered from two phones: both ring, the auto-answering one takes the call, the
/// other sees the call closed (CANCEL) and never has it established.
#[test]
fn forking_first_answer_wins_other_contact_cancelled() {
    let mut server = start_server();
    let base = server.dir().to_path_buf();
    let mut a = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "100",
            ext: "100",
            answer: "manual",
            tone_hz: 1000.0,
            tone_secs: 4.0,
        },
    );
    let mut manual = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "101-manual",
            ext: "101",
            answer: "manual",
            tone_hz: 700.0,
            tone_secs: 6.0,
        },
    );
    wait_registered(&server, &mut a, "100");
    wait_registered(&server, &mut manual, "101");
    // Two contacts for 101: pasarela must fork the INVITE to both.
    let mut auto = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "101-auto",
            ext: "101",
            answer: "auto",
            tone_hz: 440.0,
            tone_secs: 6.0,
        },
    );
    wait_registered(&server, &mut auto, "101");

    a.command("dial", &format!("sip:101@{}", server.udp));
    manual.expect_event("CALL_INCOMING", CALL_SETUP, &[&a, &auto], &server);
    auto.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a, &manual], &server);
    a.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&auto, &manual], &server);
    manual.expect_event(
        "CALL_CLOSED",
        Duration::from_secs(10),
        &[&a, &auto],
        &server,
    );
    // The call goes on between 100 and the auto phone until 100's file ends.
    a.expect_event(
        "CALL_CLOSED",
        Duration::from_secs(10),
        &[&auto, &manual],
        &server,
    );
    auto.expect_event(
        "CALL_CLOSED",
        Duration::from_secs(10),
        &[&a, &manual],
        &server,
    );
    if manual.has_event("CALL_ESTABLISHED") {
        panic!(
            "the manual phone got an established call although the other contact answered\n{}{}{}",
            manual.report(),
            auto.report(),
            server.log_excerpt()
        );
    }
    server.assert_alive();
}
