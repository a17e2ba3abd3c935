//! End-to-end digest-authenticated REGISTER throughput with sipp (`cargo bench --bench
//! register_load`). Starts `pasarela serve` on loopback with 1 000 extensions, drives sipp at
//! increasing rates, and prints the achieved transactions per second and failure ratio for
//! each step. Needs sipp (Debian `sip-tester`). The target on a 2-core machine is ≥ 5 000/s.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{require_sipp, run_sipp, start_server};

const USERS: usize = 1000;

fn extensions() -> String {
    (0..USERS)
        .map(|i| {
            format!(
                "[[extension]]\nnumber = \"{}\"\npassword = \"bench-pw-{}\"\n",
                2000 + i,
                2000 + i
            )
        })
        .collect()
}

/// Drives sipp at `rate` registrations/s for `secs` seconds.
fn step(
    dir: &Path,
    server: std::net::SocketAddr,
    rate: usize,
    secs: usize,
) -> (u64, u64, Duration) {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sipp/register_load.xml");
    let total = rate * secs;
    let args: Vec<String> = vec![
        server.to_string(),
        "-sf".into(),
        scenario.display().to_string(),
        "-inf".into(),
        dir.join("users.csv").display().to_string(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        "0".into(),
        "-r".into(),
        rate.to_string(),
        "-m".into(),
        total.to_string(),
        "-l".into(),
        "5000".into(),
        "-buff_size".into(),
        "4194304".into(),
        "-max_socket".into(),
        "1".into(),
        "-t".into(),
        "u1".into(),
        "-timeout".into(),
        format!("{}s", secs * 3 + 10),
    ];
    let stat = dir.join(format!("stat-{rate}.csv"));
    run_sipp(
        &args,
        &stat,
        total as u64,
        Duration::from_secs((secs * 3 + 20) as u64),
    )
}

fn main() {
    require_sipp();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut users = std::fs::File::create(dir.path().join("users.csv")).expect("users.csv");
    let _ = writeln!(users, "SEQUENTIAL");
    for i in 0..USERS {
        let n = 2000 + i;
        let _ = writeln!(
            users,
            "{n};[authentication username={n} password=bench-pw-{n}]"
        );
    }
    drop(users);
    let server = start_server(dir.path(), &extensions());
    let addr = server.udp;
    println!("register_load: digest-authenticated REGISTER (401 + 200) over UDP, {USERS} users");
    let mut best = 0.0f64;
    for rate in [5000, 10000, 15000, 20000, 25000] {
        let (ok, failed, elapsed) = step(dir.path(), addr, rate, 5);
        let achieved = ok as f64 / elapsed.as_secs_f64();
        let fail_pct = 100.0 * failed as f64 / (ok + failed).max(1) as f64;
        println!(
            "  offered {rate:>6}/s: {ok:>6} ok, {failed:>4} failed ({fail_pct:.2} %), {achieved:>7.0} REGISTER transactions/s"
        );
        if fail_pct < 1.0 {
            best = best.max(achieved);
        }
    }
    println!("register_load: best rate with < 1 % failures: {best:.0}/s");
}
