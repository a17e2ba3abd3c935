//! End-to-end call rate through the B2BUA (`cargo bench --bench call_load`): sipp as caller
//! (extension 100, digest-authenticated INVITE, immediate BYE, no media) -> pasarela -> sipp's
//! built-in UAS registered as extension 101. Prints, per offered rate, the calls completed,
//! failed and how long sipp took to finish them; and the highest offered rate sustained with
//! < 1 % failed calls.
//! Target on this 2-core machine: >= 3 000 calls/s (Asterisk 20 chan_sip: about 325).

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{free_udp_port, require_sipp, run_sipp, start_server};

fn arg(s: impl ToString) -> String {
    s.to_string()
}

struct Uas(Child);

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    require_sipp();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let server = start_server(
        d,
        "[calls]\nno_answer_secs = 30\n\
         [limits.extension.\"100\"]\nconcurrent_calls = 0\ncalls_per_minute = 0\n\
         [[extension]]\nnumber = \"100\"\npassword = \"secret100\"\n\
         [[extension]]\nnumber = \"101\"\npassword = \"secret101\"\n",
    );
    let benches = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sipp");

    // Register the UAS as 101 from the port it will answer on, then start it there.
    let uas_port = free_udp_port();
    let mut reg = std::fs::File::create(d.join("reg.csv")).expect("reg.csv");
    let _ = writeln!(
        reg,
        "SEQUENTIAL\n101;[authentication username=101 password=secret101]"
    );
    drop(reg);
    let status = Command::new("sipp")
        .arg(server.udp.to_string())
        .args([
            "-sf",
            &benches.join("register_load.xml").display().to_string(),
        ])
        .args(["-inf", &d.join("reg.csv").display().to_string()])
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port.to_string(),
            "-m",
            "1",
            "-ci",
            "127.0.0.1",
            "-nostdin",
        ])
        .args(["-timeout", "10s", "-timeout_error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "registering the UAS as 101 failed"
    );
    let uas = Command::new("sipp")
        .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &uas_port.to_string()])
        .args([
            "-ci",
            "127.0.0.1",
            "-nostdin",
            "-buff_size",
            "4194304",
            "-max_socket",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp uas");
    let _uas = Uas(uas);
    std::thread::sleep(Duration::from_millis(300));

    let mut callers = std::fs::File::create(d.join("callers.csv")).expect("callers.csv");
    let _ = writeln!(
        callers,
        "SEQUENTIAL\n100;[authentication username=100 password=secret100]"
    );
    drop(callers);

    println!("call_load: sipp uac (100) -> pasarela -> sipp uas (101), authenticated INVITE, immediate BYE, UDP");
    let secs = 5;
    let mut best = 0.0f64;
    for rate in [1000, 2000, 3000, 3500, 4000] {
        let total = rate * secs;
        let args = vec![
            server.udp.to_string(),
            arg("-sf"),
            benches.join("call_load_uac.xml").display().to_string(),
            arg("-inf"),
            d.join("callers.csv").display().to_string(),
            arg("-s"),
            arg("101"),
            // The digest uri must be the Request-URI (sip:101@office.test).
            arg("-auth_uri"),
            arg("101@office.test"),
            arg("-i"),
            arg("127.0.0.1"),
            arg("-p"),
            arg(free_udp_port()),
            arg("-r"),
            arg(rate),
            arg("-m"),
            arg(total),
            arg("-l"),
            arg(20_000),
            arg("-buff_size"),
            arg(4_194_304),
            arg("-max_socket"),
            arg(1),
            arg("-timeout"),
            format!("{}s", secs * 4 + 10),
        ];
        let stat = d.join(format!("stat-{rate}.csv"));
        let (ok, failed, elapsed) = run_sipp(
            &args,
            &stat,
            total as u64,
            Duration::from_secs((secs * 4 + 20) as u64),
        );
        let fail_pct = 100.0 * failed as f64 / (ok + failed).max(1) as f64;
        println!(
            "  offered {rate:>5} calls/s for {secs} s: {ok:>6} ok, {failed:>5} failed ({fail_pct:.2} %), all done after {:.1} s",
            elapsed.as_secs_f64()
        );
        if fail_pct < 1.0 && ok + failed >= total as u64 {
            best = best.max(rate as f64);
        }
    }
    println!(
        "call_load: highest offered rate sustained with < 1 % failed calls: {best:.0} calls/s"
    );
}
