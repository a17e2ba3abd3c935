//! Blind transfer between real softphones (baresip 1.0.0, headless, with its `transfer`
//! command): 100 calls 101, 101 transfers the call to 102 with REFER. Afterwards 100 and 102
//! must hear each other (tones through the relay, Goertzel-checked), 101 must be released,
//! and the call's record must name 102 as who answered last. Then the same from the calling
//! side: 100 transfers 101 to 102, and 101 and 102 must hear each other. The phone harness is
//! tests/phone/mod.rs.
mod common;
mod phone;

use std::path::Path;
use std::thread;
use std::time::Duration;

use common::{call_config, require_program, rtp_port_range, Server};
use phone::*;

const CALL_SETUP: Duration = Duration::from_secs(15);

/// The power of `hz` relative to `other` in the last `secs` of what `wav` holds.
fn tail_ratio(wav: &Path, secs: f64, hz: f64, other: f64) -> f64 {
    let (rate, x) = read_wav(wav).unwrap_or_else(|e| panic!("{e}"));
    let n = ((rate as f64) * secs) as usize;
    let tail = &x[x.len().saturating_sub(n)..];
    goertzel(tail, rate, hz) / goertzel(tail, rate, other).max(1e-9)
}

fn phone(
    base: &Path,
    server: &Server,
    ext: &'static str,
    answer: &'static str,
    hz: f64,
    secs: f64,
) -> Phone {
    Phone::start(
        base,
        server.udp,
        PhoneCfg {
            name: ext,
            ext,
            answer,
            tone_hz: hz,
            tone_secs: secs,
        },
    )
}

#[test]
fn blind_transfer_by_the_callee_with_baresip() {
    require_program("baresip", "baresip");
    let mut server = Server::start(&call_config("", rtp_port_range()));
    let base = server.dir().to_path_buf();
    // 100 plays 1000 Hz, 101 700 Hz, 102 440 Hz (for 6 s: then 102 hangs up).
    let mut a = phone(&base, &server, "100", "manual", 1000.0, 30.0);
    let mut b = phone(&base, &server, "101", "auto", 700.0, 30.0);
    let mut c = phone(&base, &server, "102", "auto", 440.0, 6.0);
    wait_registered(&server, &mut a, "100");
    wait_registered(&server, &mut b, "101");
    wait_registered(&server, &mut c, "102");

    a.command("dial", &format!("sip:101@{}", server.udp));
    b.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a], &server);
    a.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&b], &server);
    // Let 100 and 101 talk a moment before the transfer: 101's recording, checked below for
    // at least 1 s of 100's tone, holds 1.5 s of it.
    b.wait_recorded(1.5, CALL_SETUP, &server);
    b.command("transfer", &format!("sip:102@{}", server.udp));
    c.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a, &b], &server);
    b.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&a, &c], &server);
    // 102's file ends after 6 s: it hangs up, and 100 gets the BYE.
    c.expect_event("CALL_CLOSED", Duration::from_secs(15), &[&a, &b], &server);
    a.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&b, &c], &server);
    assert!(!a.has_event("CALL_INCOMING"), "100 saw no new call");
    thread::sleep(Duration::from_millis(500));

    let logs = format!(
        "{}{}{}{}",
        a.report(),
        b.report(),
        c.report(),
        server.log_excerpt()
    );
    // 102 heard 100; 101 heard 100 before; 100 ends hearing 102, not 101.
    assert_tone(
        &c.received_wav(),
        1000.0,
        "102 (transfer target) received",
        &logs,
    );
    assert_tone(
        &b.received_wav(),
        1000.0,
        "101 (transferor) received",
        &logs,
    );
    let r = tail_ratio(&a.received_wav(), 2.5, 440.0, 700.0);
    assert!(
        r > 20.0,
        "100 must hear 102 (440 Hz) at the end, not 101 (700 Hz): ratio {r:.2}\n{logs}"
    );

    // The record: one call from 100, answered last by 102, with the transfer among its attempts.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _, body) = common::api_get(&server, "/api/v1/records");
        if st == 200 && body.contains("transfer by 101") {
            assert!(body.contains("\"caller\":\"100\""), "{body}");
            assert!(body.contains("\"route_target\":\"102\""), "{body}");
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!("no record showing the transfer: {st} {body}\n{logs}");
        }
        thread::sleep(Duration::from_millis(200));
    }
    server.assert_alive();
}

#[test]
fn blind_transfer_by_the_caller_with_baresip() {
    require_program("baresip", "baresip");
    let mut server = Server::start(&call_config("", rtp_port_range()));
    let base = server.dir().to_path_buf();
    // 100 (the caller, who transfers) plays 1000 Hz, 101 700 Hz, 102 440 Hz for 6 s.
    let mut a = phone(&base, &server, "100", "manual", 1000.0, 30.0);
    let mut b = phone(&base, &server, "101", "auto", 700.0, 30.0);
    let mut c = phone(&base, &server, "102", "auto", 440.0, 6.0);
    wait_registered(&server, &mut a, "100");
    wait_registered(&server, &mut b, "101");
    wait_registered(&server, &mut c, "102");

    a.command("dial", &format!("sip:101@{}", server.udp));
    b.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a], &server);
    a.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&b], &server);
    thread::sleep(Duration::from_millis(1500));
    a.command("transfer", &format!("sip:102@{}", server.udp));
    c.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a, &b], &server);
    a.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&b, &c], &server);
    // 102's file ends after 6 s: it hangs up, and 101 gets the BYE.
    c.expect_event("CALL_CLOSED", Duration::from_secs(15), &[&a, &b], &server);
    b.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&a, &c], &server);
    thread::sleep(Duration::from_millis(500));
    let logs = format!(
        "{}{}{}{}",
        a.report(),
        b.report(),
        c.report(),
        server.log_excerpt()
    );
    assert_tone(
        &c.received_wav(),
        700.0,
        "102 (transfer target) received",
        &logs,
    );
    let r = tail_ratio(&b.received_wav(), 2.5, 440.0, 1000.0);
    assert!(
        r > 20.0,
        "101 must hear 102 (440 Hz) at the end, not 100 (1000 Hz): ratio {r:.2}\n{logs}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _, body) = common::api_get(&server, "/api/v1/records");
        if st == 200 && body.contains("\"transferred_by\":\"100\"") {
            assert!(body.contains("\"route_target\":\"102\""), "{body}");
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!("no record showing the transfer by 100: {st} {body}\n{logs}");
        }
        thread::sleep(Duration::from_millis(200));
    }
    server.assert_alive();
}
