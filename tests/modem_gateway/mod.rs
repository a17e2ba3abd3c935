//! A running gateway with one GSM modem line on the simulator, and baresip phones on it: the
//! set-up that the modem call tests share (modem_calls, transfer_modem).
#![allow(dead_code)]

use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, call_config, require_program, rtp_port_range, Server};
use crate::modem_sim::Sim;
use crate::phone::{wait_registered, Phone, PhoneCfg};

pub const IMEI: &str = "353142034567891";
pub const ICCID: &str = "8949226012345678901";
pub const SETUP: Duration = Duration::from_secs(20);

/// The call configuration with the modem on the simulator's ports, no ENUM trees (every
/// number goes to the PSTN) and a quick health probe.
pub fn modem_config(sim: &Sim) -> String {
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

pub struct Setup {
    pub server: Server,
    pub sim: Sim,
}

pub fn start(sim_dir_name: &str) -> Setup {
    start_with(sim_dir_name, |c| c)
}

/// [`start`] with the configuration changed by `edit`.
pub fn start_with(sim_dir_name: &str, edit: impl Fn(String) -> String) -> Setup {
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
pub fn wait_line_idle(server: &Server, sim: &Sim) {
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

pub fn phone(server: &Server, name: &str, ext: &str, answer: &str, hz: f64, secs: f64) -> Phone {
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
