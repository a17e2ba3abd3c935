//! Shared by the load benchmarks: start `pasarela serve` on loopback, run sipp, read its
//! statistics file.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server and its UDP address.
pub struct Server {
    pub child: Child,
    pub udp: SocketAddr,
    /// The web listener (`/metrics`).
    pub web: Option<SocketAddr>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pasarela serve` with `[sip]` on UDP loopback, `extra` appended to the config.
pub fn start_server(dir: &Path, extra: &str) -> Server {
    let cfg = format!(
        "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\ndomain = \"office.test\"\n{}[log]\nlevel = \"warn\"\n\
         [store]\npath = \"{}\"\n[web]\nlisten = \"127.0.0.1:0\"\n{extra}",
        // More `[sip]` settings, to see what one does to a bench's figures (e.g.
        // `BENCH_SIP_CONFIG='nonce_ttl_secs = 30'`).
        std::env::var("BENCH_SIP_CONFIG")
            .map(|c| c + "\n")
            .unwrap_or_default(),
        dir.join("bench.db").display()
    );
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
    let mut udp = None;
    let mut web = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        if let Some(a) = line.strip_prefix("listening sip udp ") {
            udp = a.parse().ok();
        }
        if let Some(a) = line.strip_prefix("listening web ") {
            web = a.parse().ok();
        }
        if line == "ready" {
            break;
        }
    }
    Server {
        child,
        udp: udp.expect("server announced its UDP address"),
        web,
    }
}

pub fn require_sipp() {
    if Command::new("sipp").arg("-v").output().is_err() {
        eprintln!("sipp not found (install the Debian package sip-tester)");
        std::process::exit(1);
    }
}

/// Runs sipp (in the background, `-bg`) and waits until its statistics file says `total`
/// calls finished or the deadline passes; returns (successful, failed, elapsed).
pub fn run_sipp(
    args: &[String],
    stat: &Path,
    total: u64,
    deadline: Duration,
) -> (u64, u64, Duration) {
    let t = Instant::now();
    let _ = Command::new("sipp")
        .args(args)
        .args([
            "-ci",
            "127.0.0.1",
            "-nostdin",
            "-bg",
            "-trace_stat",
            "-fd",
            "1",
            "-stf",
        ])
        .arg(stat)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let (mut ok, mut failed) = (0, 0);
    while t.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        if let Some((s, f)) = read_stat(stat) {
            ok = s;
            failed = f;
            if s + f >= total {
                break;
            }
        }
    }
    (ok, failed, t.elapsed())
}

pub fn read_stat(path: &Path) -> Option<(u64, u64)> {
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

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
