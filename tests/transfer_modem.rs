//! A call from the PSTN (the GSM modem simulator) transferred blind by the extension that
//! answered it: the line rings 101, 101 transfers to 102 with REFER (baresip's `transfer`),
//! and the PSTN caller then talks to 102 — the line leg is re-bridged like any other — and
//! the record shows 102 as the extension of the call.
mod common;
mod modem_sim;
mod phone;

use std::thread;
use std::time::{Duration, Instant};

use common::{call_config, require_program, rtp_port_range, Server};
use modem_sim::{tone_share, Sim};
use phone::{assert_tone, wait_registered, Phone, PhoneCfg};

const IMEI: &str = "353142034567891";
const ICCID: &str = "8949226012345678901";
const SETUP: Duration = Duration::from_secs(20);

/// The call configuration with the modem on the simulator's ports, no ENUM trees (every
/// number goes to the PSTN) and a quick health probe.
fn modem_config(sim: &Sim) -> String {
    format!(
        r#"{base}
[numbering]
country_code = "49"
national_prefix = "0"
international_prefix = "00"

[enum]
suffixes = []
nameservers = ["127.0.0.1:9"]
budget_ms = 200

[[modem]]
name = "gsm1"
data_port = "{data}"
audio_port = "{audio}"
incoming = ["101"]
probe_interval_secs = 1
max_missed = 2
"#,
        base = call_config("no_answer_secs = 20", rtp_port_range()),
        data = sim.data_link.display(),
        audio = sim.audio_link.display(),
    )
}

struct Setup {
    server: Server,
    sim: Sim,
}

fn start(sim_dir_name: &str) -> Setup {
    start_with(sim_dir_name, |c| c)
}

/// [`start`] with the configuration changed by `edit`.
fn start_with(sim_dir_name: &str, edit: impl Fn(String) -> String) -> Setup {
    require_program("baresip", "baresip");
    let sim_dir = common::TestDir::new(sim_dir_name);
    let sim = Sim::start(sim_dir.path(), "gsm1", IMEI, ICCID);
    // The simulator's links live as long as the test: keep the directory.
    std::mem::forget(sim_dir);
    let server = Server::start(&edit(modem_config(&sim)));
    wait_line_idle(&server, &sim);
    Setup { server, sim }
}

/// Waits until the line is in service: its first health probe (`AT+CSQ` after the init)
/// reached the simulator.
fn wait_line_idle(server: &Server, sim: &Sim) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if sim.saw("AT+CSQ") {
            thread::sleep(Duration::from_millis(500));
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the modem line did not come up: commands {:?}\n{}",
        sim.commands(),
        server.log_excerpt()
    );
}

fn phone(server: &Server, name: &str, ext: &str, answer: &str, hz: f64, secs: f64) -> Phone {
    let mut p = Phone::start(
        server.dir(),
        server.udp,
        PhoneCfg {
            name,
            ext,
            answer,
            tone_hz: hz,
            tone_secs: secs,
        },
    );
    wait_registered(server, &mut p, ext);
    p
}

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
