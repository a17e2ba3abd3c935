//! A call from the PSTN (the GSM modem simulator) transferred blind by the extension that
//! answered it: the line rings 101, 101 transfers to 102 with REFER (baresip's `transfer`),
//! and the PSTN caller then talks to 102 — the line leg is re-bridged like any other — and
//! the record shows 102 as the extension of the call.
mod common;
mod modem_gateway;
mod modem_sim;
mod phone;

use std::thread;
use std::time::{Duration, Instant};

use modem_gateway::{phone, start, Setup, SETUP};
use modem_sim::tone_share;
use phone::assert_tone;

#[test]
fn a_pstn_call_is_transferred_from_101_to_102() {
    let Setup { server, sim } = start("modem-transfer");
    sim.with(|s| s.tone_hz = 1000.0);
    let mut b = phone(&server, "101", "101", "auto", 700.0, 30.0);
    let mut c = phone(&server, "102", "102", "auto", 440.0, 30.0);
    sim.ring("01701234567", 129);
    b.expect_event("CALL_ESTABLISHED", SETUP, &[], &server);
    thread::sleep(Duration::from_millis(1500));
    b.command("transfer", &format!("sip:102@{}", server.udp));
    c.expect_event("CALL_ESTABLISHED", SETUP, &[&b], &server);
    b.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&c], &server);
    let before = sim.with(|s| s.recorded.len());
    thread::sleep(Duration::from_secs(3));
    sim.remote_hangup();
    c.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&b], &server);
    thread::sleep(Duration::from_millis(500));
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
        "the PSTN caller hears 102 (440 Hz) after the transfer: share {share:.2}\n{logs}"
    );
    // The record: the extension of the call is 102, who answered its second part.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let conn = rusqlite::Connection::open(&server.db).expect("db");
        let row: Option<(String, String)> = conn
            .query_row(
                "SELECT COALESCE(extension, ''), COALESCE(route_source, '') FROM call_records \
                 WHERE end_reason IS NOT 'in progress' ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .ok();
        if let Some((ext, source)) = &row {
            if source.contains("transfer") {
                assert_eq!(ext, "102", "{row:?}");
                break;
            }
        }
        if Instant::now() > deadline {
            panic!("no record of the transfer: {row:?}\n{logs}");
        }
        thread::sleep(Duration::from_millis(200));
    }
}
