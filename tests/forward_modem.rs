//! Call forwarding of a call from the PSTN (the GSM modem simulator): the line rings 101, whose
//! forward-always (from the configuration file) sends the call to 102. baresip 102 rings and
//! answers instead of 101; the PSTN caller and 102 hear each other, and the record notes the
//! forward.
mod common;
mod modem_gateway;
mod modem_sim;
mod phone;

use std::thread;
use std::time::{Duration, Instant};

use modem_gateway::{phone, start_with, Setup, SETUP};
use modem_sim::tone_share;
use phone::assert_tone;

#[test]
fn a_pstn_call_to_101_forwarded_always_rings_102() {
    let Setup { server, sim } = start_with("modem-forward", |c| {
        assert!(c.contains("name = \"Office\"\n"));
        c.replacen(
            "name = \"Office\"\n",
            "name = \"Office\"\nforward_always = \"102\"\n",
            1,
        )
    });
    sim.with(|s| s.tone_hz = 1000.0);
    let mut b = phone(&server, "101", "101", "auto", 700.0, 30.0);
    let mut c = phone(&server, "102", "102", "auto", 440.0, 30.0);
    sim.ring("01701234567", 129);
    c.expect_event("CALL_ESTABLISHED", SETUP, &[&b], &server);
    let before = sim.with(|s| s.recorded.len());
    thread::sleep(Duration::from_secs(3));
    sim.remote_hangup();
    c.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&b], &server);
    thread::sleep(Duration::from_millis(500));
    assert!(!b.has_event("CALL_INCOMING"), "101 must not ring");
    let logs = format!("{}{}{}", b.report(), c.report(), server.log_excerpt());
    assert_tone(
        &c.received_wav(),
        1000.0,
        "102 received the PSTN caller",
        &logs,
    );
    let recorded = sim.with(|s| s.recorded.clone());
    let after = &recorded[before.min(recorded.len())..];
    let share = tone_share(after, 440.0);
    assert!(
        share > 0.5,
        "the PSTN caller hears 102 (440 Hz): share {share:.2}\n{logs}"
    );
    // The record keeps the extension the line rang and notes the forward.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let conn = rusqlite::Connection::open(&server.db).expect("db");
        let row: Option<String> = conn
            .query_row(
                "SELECT COALESCE(explanation, '') FROM call_records \
                 WHERE end_reason IS NOT 'in progress' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .ok();
        if let Some(text) = &row {
            if text.contains("Forwarded by 101 (always) to 102") {
                break;
            }
        }
        if Instant::now() > deadline {
            panic!("no record of the forward: {row:?}\n{logs}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}
