//! End-to-end digest-authenticated REGISTER throughput with sipp (`cargo bench --bench
//! register_load`). Starts `pasarela serve` on loopback with 1 000 extensions, drives sipp at
//! increasing rates, and prints the achieved transactions per second and failure ratio for
//! each step. Needs sipp (Debian `sip-tester`). The target on a 2-core machine is ≥ 5 000/s.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USERS: usize = 1000;

fn start_server(dir: &Path) -> (Child, SocketAddr) {
    let mut cfg = String::from(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\ndomain = \"office.test\"\n[log]\nlevel = \"warn\"\n",
    );
    cfg.push_str(&format!(
        "[store]\npath = \"{}\"\n",
        dir.join("bench.db").display()
    ));
    for i in 0..USERS {
        cfg.push_str(&format!(
            "[[extension]]\nnumber = \"{}\"\npassword = \"pw{}\"\n",
            2000 + i,
            2000 + i
        ));
    }
    let cfg_path = dir.join("bench.toml");
    std::fs::write(&cfg_path, cfg).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pasarela"))
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start pasarela");
    let stdout = child.stdout.take().expect("stdout");
    let mut addr = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        if let Some(a) = line.strip_prefix("listening sip udp ") {
            addr = a.parse().ok();
        }
        if line == "ready" {
            break;
        }
    }
    (child, addr.expect("server announced its UDP address"))
}

/// Runs sipp at `rate` registrations/s for `secs` seconds; returns (successful, failed, elapsed).
fn run_sipp(dir: &Path, server: SocketAddr, rate: usize, secs: usize) -> (u64, u64, Duration) {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sipp/register_load.xml");
    let total = rate * secs;
    let stat = dir.join(format!("stat-{rate}.csv"));
    let t = Instant::now();
    let status = Command::new("sipp")
        .arg(server.to_string())
        .args(["-sf"])
        .arg(&scenario)
        .args(["-inf"])
        .arg(dir.join("users.csv"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            "0",
            "-ci",
            "127.0.0.1",
            "-nostdin",
            "-bg",
        ])
        .args([
            "-r",
            &rate.to_string(),
            "-m",
            &total.to_string(),
            "-l",
            "5000",
        ])
        .args(["-buff_size", "4194304", "-max_socket", "1", "-t", "u1"])
        .args([
            "-timeout",
            &format!("{}s", secs * 3 + 10),
            "-trace_stat",
            "-fd",
            "1",
            "-stf",
        ])
        .arg(&stat)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = status;
    // With -bg sipp forks; wait for the stat file to report every call finished.
    let deadline = Instant::now() + Duration::from_secs((secs * 3 + 20) as u64);
    let (mut ok, mut failed) = (0, 0);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        if let Some((s, f)) = read_stat(&stat) {
            ok = s;
            failed = f;
            if s + f >= total as u64 {
                break;
            }
        }
    }
    (ok, failed, t.elapsed())
}

fn read_stat(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.last()?.split(';').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| last.get(i)?.parse::<u64>().ok())
    };
    Some((col("SuccessfulCall(C)")?, col("FailedCall(C)")?))
}

fn main() {
    if Command::new("sipp").arg("-v").output().is_err() {
        eprintln!("register_load: sipp not found (install Debian package sip-tester)");
        std::process::exit(1);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut users = std::fs::File::create(dir.path().join("users.csv")).expect("users.csv");
    let _ = writeln!(users, "SEQUENTIAL");
    for i in 0..USERS {
        let n = 2000 + i;
        let _ = writeln!(users, "{n};[authentication username={n} password=pw{n}]");
    }
    drop(users);
    let (mut server, addr) = start_server(dir.path());
    println!("register_load: digest-authenticated REGISTER (401 + 200) over UDP, {USERS} users");
    let mut best = 0.0f64;
    for rate in [5000, 10000, 15000, 20000, 25000] {
        let (ok, failed, elapsed) = run_sipp(dir.path(), addr, rate, 5);
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
    let _ = server.kill();
    let _ = server.wait();
}
