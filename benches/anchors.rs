//! pasarela against its anchors, side by side (`cargo bench --bench anchors`): the same sipp
//! scenario (`benches/sipp/anchor_uac.xml`: digest-authenticated INVITE, 200, ACK, BYE) from
//! sipp's uac through the system under test to sipp's built-in uas, for
//! - **pasarela** (a B2BUA: two dialogs, media anchored: four RTP/RTCP sockets per call), and
//! - **Kamailio** (Debian `kamailio`, a stateful proxy with the `dialog` module: one dialog, no
//!   media), skipped with a message when `kamailio` is not installed.
//!
//! Runs are interleaved (pasarela, Kamailio, pasarela, … for each step, each system started
//! fresh), and the table gives per system and step: calls not served (refused or failed), CPU
//! per call (utime + stime of all the system's processes over the step, per served call),
//! INVITE→200 p50/p99 (sipp's rtd), and the ratio pasarela / Kamailio. A second table is about
//! overload ("no cliff"): per system and step, offered and served (answered) calls per second,
//! those refused at once (a 503 with Retry-After to either INVITE, counted from sipp's
//! `-trace_counts`), those failed otherwise (timeouts, other responses), the p99 set-up time
//! (first INVITE → 200) of the served calls and of the refusals, and served / capacity, where
//! capacity is `ANCHOR_CAPACITY` or else the highest step served whole (0 refused, 0 failed;
//! a lower bound). Then memory: proportional set size
//! (PSS, all processes) idle, with `ANCHOR_HOLD` calls held, per held call, and 20 s and 60 s
//! after they ended against idle; with `ANCHOR_FLOOD` (calls/s) a flood above capacity of
//! `ANCHOR_FLOOD_SECS` s: idle, the peak during it, and 20 s / 60 s after against idle.
//!
//! With `ANCHOR_RECORDS=N` (e.g. 1000000) it also runs pasarela with N call records in its store
//! against an empty store, interleaved, at the first rate: per-call CPU should not grow.
//!
//! Env: `ANCHOR_RATES` (calls/s per step, default `500,1000,2000`), `ANCHOR_SECS` (length of a
//! step, default 20; the issue's "sustained" figures use 60 or more), `ANCHOR_REPS` (runs per
//! step and system, default 1), `ANCHOR_HOLD` (held calls for memory, default 500; 0 skips),
//! `ANCHOR_RECORDS` (default 0: skipped), `ANCHOR_FLOOD` (calls/s, default 0: skipped),
//! `ANCHOR_FLOOD_SECS` (default 30), `ANCHOR_WARMUP` (calls served, then 40 s of rest, before
//! the memory figures' idle is read, default 10; 0: idle read 3 s after start, "cold"; the
//! tables give the cold figure in brackets), `ANCHOR_SYSTEMS` (e.g. `pasarela`: only these systems),
//! `ANCHOR_RATES=` (empty: no call-rate steps), `ANCHOR_KEEP=1` (keep the logs and sipp files),
//! `ANCHOR_CAPACITY` (calls/s: `N` for every system or `pasarela:N,kamailio:M`; default: found).
//!
//! The RTP relay comparison with rtpengine is in `--bench media_relay`, which runs the same
//! simulated phones through pasarela's relay and through rtpengine.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_udp_port, require_sipp, start_server};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process killed (with its process group) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child's process group.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum System {
    Pasarela,
    /// pasarela with `ANCHOR_RECORDS` call records in its store.
    PasarelaFull,
    Kamailio,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Pasarela => "pasarela",
            System::PasarelaFull => "pasarela+records",
            System::Kamailio => "kamailio",
        }
    }
}

/// A started system: where calls go, the processes to account, and what to drop at the end.
struct Running {
    addr: SocketAddr,
    /// The process group (Kamailio forks workers) or the single process whose CPU and memory
    /// count.
    pid: u32,
    group: bool,
    _procs: Vec<Proc>,
    _server: Option<common::Server>,
}

/// utime + stime in seconds of `pid`, or of every process in its group.
fn cpu_secs(run: &Running) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0u64;
    for pid in pids(run) {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // Fields after the command (which may hold spaces) start after the last ')'.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ut: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
                let st: u64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
                total += ut + st;
            }
        }
    }
    total as f64 / ticks
}

/// The processes of `run`.
fn pids(run: &Running) -> Vec<u32> {
    if !run.group {
        return vec![run.pid];
    }
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let pgrp = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(2))
                .and_then(|v| v.parse::<u32>().ok());
            if pgrp == Some(run.pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// Proportional set size in KiB, summed over the system's processes.
fn pss_kib(run: &Running) -> u64 {
    rollup_kib(run, "Pss:")
}

/// One field of `/proc/PID/smaps_rollup` in KiB (`Pss:`, `Pss_Anon:`, `Pss_File:`), summed
/// over the system's processes.
fn rollup_kib(run: &Running, field: &str) -> u64 {
    pids(run)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

/// With `ANCHOR_SMAPS=DIR`, copies each of the system's `/proc/PID/smaps` to
/// `DIR/<system>-<pid>-<label>.smaps`, to compare mappings at two moments (idle, after).
fn dump_smaps(run: &Running, s: System, label: &str) {
    let Some(dir) = std::env::var_os("ANCHOR_SMAPS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _ = std::fs::create_dir_all(&dir);
    for pid in pids(run) {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) {
            let _ = std::fs::write(dir.join(format!("{}-{pid}-{label}.smaps", s.name())), t);
        }
    }
}

fn sipp_uas(port: u16) -> Proc {
    let child = Command::new("sipp")
        .args(["-sn", "uas", "-i", "127.0.0.1", "-p", &port.to_string()])
        .args(["-ci", "127.0.0.1", "-nostdin", "-buff_size", "4194304"])
        .args(["-max_socket", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start sipp uas");
    std::thread::sleep(Duration::from_millis(300));
    Proc(child)
}

fn pasarela(dir: &Path, uas_port: u16) -> Running {
    std::fs::create_dir_all(dir).expect("dir");
    let server = start_server(
        dir,
        "[calls]\nno_answer_secs = 60\n[media]\nrtp_ports = \"20000-29999\"\n\
         [limits]\nconcurrent_calls = 0\ncalls_per_minute = 0\n\
         [[extension]]\nnumber = \"100\"\npassword = \"secret100\"\n\
         [[extension]]\nnumber = \"101\"\npassword = \"secret101\"\n",
    );
    let benches = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sipp");
    let mut reg = std::fs::File::create(dir.join("reg.csv")).expect("reg.csv");
    let _ = writeln!(
        reg,
        "SEQUENTIAL\n101;[authentication username=101 password=secret101]"
    );
    drop(reg);
    let status = Command::new("sipp")
        .arg(server.udp.to_string())
        .arg("-sf")
        .arg(benches.join("register_load.xml"))
        .arg("-inf")
        .arg(dir.join("reg.csv"))
        .args(["-i", "127.0.0.1", "-p", &uas_port.to_string(), "-m", "1"])
        .args([
            "-ci",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "10s",
            "-timeout_error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "registering the UAS as 101 failed"
    );
    let pid = server.child.id();
    Running {
        addr: server.udp,
        pid,
        group: false,
        _procs: vec![sipp_uas(uas_port)],
        _server: Some(server),
    }
}

fn kamailio_config(port: u16, uas_port: u16) -> String {
    format!(
        r#"#!KAMAILIO
debug=0
log_stderror=yes
children=2
disable_tcp=yes
auto_aliases=no
alias="office.test"
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "auth.so"
loadmodule "dialog.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        if (is_method("ACK")) {{
            if (t_check_trans()) {{ t_relay(); }} else if (!uri==myself) {{ t_relay(); }}
            exit;
        }}
        if (!uri==myself) {{ t_relay(); exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    if (!is_method("INVITE")) {{ sl_send_reply("405", "Method Not Allowed"); exit; }}
    t_check_trans();
    if (!pv_www_authenticate("$td", "secret100", "0")) {{ www_challenge("$td", "1"); exit; }}
    consume_credentials();
    dlg_manage();
    record_route();
    $du = "sip:127.0.0.1:{uas_port}";
    t_relay();
}}
"#
    )
}

fn kamailio_installed() -> Option<PathBuf> {
    ["/usr/sbin/kamailio", "/usr/bin/kamailio"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Waits until something answers an OPTIONS on `addr`.
fn wait_sip(addr: SocketAddr) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let local = sock.local_addr().expect("local");
    let msg = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKanchor1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=a1\r\nTo: <sip:{addr}>\r\n\
         Call-ID: anchor-probe\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let mut buf = [0u8; 2048];
    for _ in 0..50 {
        let _ = sock.send_to(msg.as_bytes(), addr);
        if sock.recv_from(&mut buf).is_ok() {
            return true;
        }
    }
    false
}

fn kamailio(bin: &Path, dir: &Path, uas_port: u16) -> Running {
    std::fs::create_dir_all(dir).expect("dir");
    let port = free_udp_port();
    let cfg = dir.join("kamailio.cfg");
    std::fs::write(&cfg, kamailio_config(port, uas_port)).expect("write kamailio.cfg");
    let log = std::fs::File::create(dir.join("kamailio.log")).expect("log");
    let child = Command::new(bin)
        .arg("-f")
        .arg(&cfg)
        .args(["-DD", "-E", "-m", "512", "-M", "16", "-Y"])
        .arg(dir)
        .args(["-P"])
        .arg(dir.join("kamailio.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .process_group(0)
        .spawn()
        .expect("start kamailio");
    let pid = child.id();
    let proc = Proc(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(
        wait_sip(addr),
        "kamailio did not answer; see {}",
        dir.join("kamailio.log").display()
    );
    Running {
        addr,
        pid,
        group: true,
        _procs: vec![proc, sipp_uas(uas_port)],
        _server: None,
    }
}

/// One step's figures.
#[derive(Debug, Default, Clone)]
struct Step {
    /// Calls offered (sipp created them) and over how many seconds.
    offered: u64,
    window_s: f64,
    /// Calls answered (served): the 200 to the INVITE with credentials.
    ok: u64,
    /// Calls refused at once: a 503 with Retry-After to either INVITE.
    refused: u64,
    /// Calls that failed otherwise (timeouts, other responses, a 503 without Retry-After).
    failed: u64,
    cpu_s: f64,
    /// INVITE with credentials -> 200.
    p50_ms: f64,
    p99_ms: f64,
    /// A served call's whole set-up (first INVITE -> 200), p99.
    setup_p99_ms: f64,
    /// First INVITE -> 503, p99.
    refusal_p99_ms: f64,
    /// 503s to the first INVITE (before the challenge) and to the second (with credentials).
    refused_first: u64,
    /// SIP datagrams pasarela dropped over the step because its core's queue was full
    /// (`/metrics`; none for Kamailio).
    dropped: Option<u64>,
}

impl Step {
    fn cpu_ms_per_call(&self) -> f64 {
        1000.0 * self.cpu_s / self.ok.max(1) as f64
    }
    /// Calls not served (refused or failed), in % of those offered.
    fn failed_pct(&self) -> f64 {
        100.0 * (self.refused + self.failed) as f64 / self.offered.max(1) as f64
    }
    fn per_s(&self, n: u64) -> f64 {
        if self.window_s > 0.0 {
            n as f64 / self.window_s
        } else {
            f64::NAN
        }
    }
    fn offered_per_s(&self) -> f64 {
        self.per_s(self.offered)
    }
    fn served_per_s(&self) -> f64 {
        self.per_s(self.ok)
    }
    /// Every offered call was served.
    fn whole(&self) -> bool {
        self.offered > 0 && self.refused == 0 && self.failed == 0
    }
}

/// The last row of a sipp CSV file (`;`-separated, first row the header) as (name, value)
/// pairs, and all its rows.
fn csv_rows(path: &Path) -> Vec<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split(';').collect();
    lines
        .map(|l| {
            names
                .iter()
                .zip(l.split(';'))
                .map(|(n, v)| (n.to_string(), v.trim().to_string()))
                .collect()
        })
        .collect()
}

fn col_u64(row: &[(String, String)], name: &str) -> Option<u64> {
    row.iter().find(|(n, _)| n == name)?.1.parse().ok()
}

/// sipp's `hh:mm:ss` or `hh:mm:ss:micros` in seconds.
fn sipp_elapsed(v: &str) -> Option<f64> {
    let f: Vec<&str> = v.split(':').collect();
    let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
    let micros = if f.len() > 3 { num(3)? } else { 0.0 };
    Some(num(0)? * 3600.0 + num(1)? * 60.0 + num(2)? + micros / 1e6)
}

/// From sipp's `-trace_stat` file (one row a second): calls created, successful and failed,
/// and the seconds it took to create them (interpolated between the rows around the last
/// creation).
fn read_step_stat(path: &Path) -> (u64, u64, u64, f64) {
    let rows = csv_rows(path);
    let Some(last) = rows.last() else {
        return (0, 0, 0, f64::NAN);
    };
    let created = col_u64(last, "OutgoingCall(C)").unwrap_or(0);
    let ok = col_u64(last, "SuccessfulCall(C)").unwrap_or(0);
    let failed = col_u64(last, "FailedCall(C)").unwrap_or(0);
    let mut prev = (0.0, 0u64);
    let mut window = f64::NAN;
    for row in &rows {
        let (Some(t), Some(c)) = (
            row.iter()
                .find(|(n, _)| n == "ElapsedTime(C)")
                .and_then(|(_, v)| sipp_elapsed(v)),
            col_u64(row, "OutgoingCall(C)"),
        ) else {
            continue;
        };
        if c >= created {
            window = if c > prev.1 {
                prev.0 + (t - prev.0) * (created - prev.1) as f64 / (c - prev.1) as f64
            } else {
                t
            };
            break;
        }
        prev = (t, c);
    }
    (created, ok, failed, window)
}

/// From sipp's `-trace_counts` file under `dir`: (503s received, those to the first INVITE,
/// 200s to the INVITE with credentials received).
fn read_counts(dir: &Path) -> (u64, u64, u64) {
    let Some(path) = std::fs::read_dir(dir).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("_counts.csv"))
    }) else {
        return (0, 0, 0);
    };
    let rows = csv_rows(&path);
    let Some(last) = rows.last() else {
        return (0, 0, 0);
    };
    let recv = |code: &str| {
        last.iter()
            .filter(|(n, _)| n.contains(&format!("_{code}_")) && n.ends_with("_Recv"))
            .map(|(_, v)| v.parse::<u64>().unwrap_or(0))
            .collect::<Vec<u64>>()
    };
    let refused = recv("503");
    // The scenario's first 200 is the answer to the INVITE, the second the BYE's.
    let answered = recv("200").first().copied().unwrap_or(0);
    (
        refused.iter().sum(),
        refused.first().copied().unwrap_or(0),
        answered,
    )
}

/// A counter of pasarela's `/metrics`.
fn metric(run: &Running, name: &str) -> Option<u64> {
    use std::io::Read;
    let web = run._server.as_ref()?.web?;
    let mut conn = std::net::TcpStream::connect_timeout(&web, Duration::from_secs(2)).ok()?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
}

/// Percentiles (each of `qs`) of the response times named `rtd` in sipp's `-trace_rtt` files
/// under `dir` (rows `date;ms;name`).
fn rtt_percentiles(dir: &Path, rtd: &str, qs: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = Vec::new();
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            let p = e.path();
            if !p.to_string_lossy().ends_with("_rtt.csv") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for line in text.lines().skip(1) {
                let mut f = line.split(';');
                let ms = f.nth(1).and_then(|x| x.trim().parse::<f64>().ok());
                let name = f.next().map(str::trim).unwrap_or("1");
                if let (Some(ms), true) = (ms, name == rtd) {
                    v.push(ms);
                }
            }
        }
    }
    if v.is_empty() {
        return qs.iter().map(|_| f64::NAN).collect();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    qs.iter()
        .map(|q| v[((v.len() - 1) as f64 * q).round() as usize])
        .collect()
}

/// Offers `rate` calls/s for `secs` s (each held `hold_ms`) to `run`; sipp's files go to `dir`.
fn offer(run: &Running, dir: &Path, rate: u64, secs: u64, hold_ms: u64, limit: u64) -> Step {
    std::fs::create_dir_all(dir).expect("dir");
    let benches = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sipp");
    let callers = dir.join("callers.csv");
    std::fs::write(
        &callers,
        "SEQUENTIAL\n100;[authentication username=100 password=secret100]\n",
    )
    .expect("callers.csv");
    let total = rate * secs;
    let stat = dir.join("stat.csv");
    let cpu0 = cpu_secs(run);
    let dropped0 = metric(run, "pasarela_sip_inbound_dropped_total");
    let mut sipp = Command::new("sipp");
    if std::env::var_os("ANCHOR_KEEP").is_some() {
        // What failed, and the unexpected messages in full.
        sipp.arg("-trace_err");
    }
    let mut status = sipp
        .current_dir(dir)
        .arg(run.addr.to_string())
        .arg("-sf")
        .arg(benches.join("anchor_uac.xml"))
        .arg("-inf")
        .arg(&callers)
        .args(["-s", "101", "-auth_uri", "101@office.test"])
        .args(["-i", "127.0.0.1", "-p", &free_udp_port().to_string()])
        .args(["-ci", "127.0.0.1", "-nostdin"])
        .args(["-r", &rate.to_string(), "-m", &total.to_string()])
        .args(["-l", &limit.to_string(), "-d", &hold_ms.to_string()])
        .args(["-buff_size", "4194304", "-max_socket", "1"])
        .args(["-timeout", &format!("{}s", secs * 3 + hold_ms / 1000 + 30)])
        .args(["-trace_stat", "-trace_counts", "-fd", "1", "-stf"])
        .arg(&stat)
        .args(["-trace_rtt", "-rtt_freq", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sipp");
    // A call that waits forever (seen once under overload) keeps sipp from ending, its
    // -timeout notwithstanding: the step ends at a deadline, and such calls count as failed.
    let deadline = Instant::now() + Duration::from_secs(secs * 2 + hold_ms / 1000 + 60);
    while status.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    if status.try_wait().ok().flatten().is_none() {
        let _ = status.kill();
        let _ = status.wait();
    }
    let cpu_s = cpu_secs(run) - cpu0;
    let dropped = metric(run, "pasarela_sip_inbound_dropped_total")
        .zip(dropped0)
        .map(|(b, a)| b.saturating_sub(a));
    let (offered, _completed, failed, window_s) = read_step_stat(&stat);
    let (refused, refused_first, ok) = read_counts(dir);
    // Calls still open when sipp ended (it was stopped at the deadline) did not complete.
    let unfinished = csv_rows(&stat)
        .last()
        .and_then(|row| col_u64(row, "CurrentCall"))
        .unwrap_or(0);
    let failed = failed + unfinished;
    let q = rtt_percentiles(dir, "1", &[0.50, 0.99]);
    let setup = rtt_percentiles(dir, "setup", &[0.99]);
    let refusal = rtt_percentiles(dir, "refusal", &[0.99]);
    Step {
        offered,
        window_s,
        ok,
        refused,
        failed,
        cpu_s,
        p50_ms: q[0],
        p99_ms: q[1],
        setup_p99_ms: setup[0],
        refusal_p99_ms: refusal[0],
        refused_first,
        dropped,
    }
}

fn start(system: System, kam: Option<&Path>, dir: &Path, full_db: Option<&Path>) -> Running {
    let uas_port = free_udp_port();
    match system {
        System::Pasarela => pasarela(dir, uas_port),
        System::PasarelaFull => {
            std::fs::create_dir_all(dir).expect("dir");
            if let Some(db) = full_db {
                std::fs::copy(db, dir.join("bench.db")).expect("copy the full store");
            }
            pasarela(dir, uas_port)
        }
        System::Kamailio => kamailio(kam.expect("kamailio"), dir, uas_port),
    }
}

/// A store with `n` call records: pasarela's own records of a short run, copied until there
/// are `n`.
fn full_store(base: &Path, n: u64) -> PathBuf {
    let dir = base.join("seed");
    {
        let run = start(System::Pasarela, None, &dir, None);
        let seeded = offer(&run, &dir.join("sipp"), 200, 2, 0, 1000);
        println!("  seeding the store: {} calls recorded", seeded.ok);
    }
    let db = dir.join("bench.db");
    let conn = rusqlite::Connection::open(&db).expect("open the store");
    let cols: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('call_records') WHERE name <> 'id'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .expect("columns");
    // Copies keep the records' contents but not their in-progress key, which is unique.
    let picks: Vec<&str> = cols
        .iter()
        .map(|c| if c == "call_key" { "NULL" } else { c.as_str() })
        .collect();
    let picks = picks.join(", ");
    let cols = cols.join(", ");
    // The seed run's registration points at its sipp uas, gone by now: a run on this store
    // would fork each call to that dead contact too. Only the records are the point here.
    conn.execute("DELETE FROM bindings", [])
        .expect("forget the seed run's registrations");
    let t = Instant::now();
    loop {
        let have: i64 = conn
            .query_row("SELECT count(*) FROM call_records", [], |r| r.get(0))
            .expect("count");
        let have = have.max(0) as u64;
        if have == 0 {
            panic!("no call records to copy");
        }
        if have >= n {
            break;
        }
        let add = (n - have).min(have);
        conn.execute(
            &format!(
                "INSERT INTO call_records ({cols}) SELECT {picks} FROM call_records LIMIT {add}"
            ),
            [],
        )
        .expect("copy records");
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
    println!(
        "  store filled to {n} call records in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    db
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// The ratio table of the call-rate steps: medians over the reps.
fn ratio_table(rates: &[u64], table: &[(u64, System, Step)]) {
    let med = |rate: u64, s: System, f: &dyn Fn(&Step) -> f64| median(table, rate, s, f);
    println!();
    println!("| calls/s | pasarela CPU ms/call | kamailio CPU ms/call | ratio | failed % (p / k) | INVITE→200 p50 ms (p / k) | p99 ms (p / k) |");
    println!("|---|---|---|---|---|---|---|");
    for &rate in rates {
        let p = System::Pasarela;
        let k = System::Kamailio;
        let pc = med(rate, p, &|s| s.cpu_ms_per_call());
        let kc = med(rate, k, &|s| s.cpu_ms_per_call());
        println!(
            "| {rate} | {pc:.3} | {kc:.3} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} |",
            ratio(pc, kc),
            med(rate, p, &|s| s.failed_pct()),
            med(rate, k, &|s| s.failed_pct()),
            med(rate, p, &|s| s.p50_ms),
            med(rate, k, &|s| s.p50_ms),
            med(rate, p, &|s| s.p99_ms),
            med(rate, k, &|s| s.p99_ms),
        );
    }
}

/// The median over the reps of `f` for `system` at `rate`.
fn median(
    table: &[(u64, System, Step)],
    rate: u64,
    system: System,
    f: &dyn Fn(&Step) -> f64,
) -> f64 {
    let mut v: Vec<f64> = table
        .iter()
        .filter(|(r, s, _)| *r == rate && *s == system)
        .map(|(_, _, st)| f(st))
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `system`'s capacity in calls/s: given (`ANCHOR_CAPACITY`: `N` for every system, or
/// `name:N,...`), or else the served rate of the highest step whose every run served every
/// call (a lower bound: capacity lies between it and the next step).
fn capacity(
    given: Option<&str>,
    system: System,
    rates: &[u64],
    table: &[(u64, System, Step)],
) -> Option<(f64, bool)> {
    if let Some(given) = given {
        for part in given.split(',') {
            let (name, n) = match part.split_once(':') {
                Some((name, n)) => (Some(name.trim()), n),
                None => (None, part),
            };
            if name.is_none_or(|n| n == system.name()) {
                if let Ok(n) = n.trim().parse::<f64>() {
                    return Some((n, true));
                }
            }
        }
    }
    rates
        .iter()
        .filter(|&&r| {
            let runs: Vec<&Step> = table
                .iter()
                .filter(|(rate, s, _)| *rate == r && *s == system)
                .map(|(_, _, st)| st)
                .collect();
            !runs.is_empty() && runs.iter().all(|st| st.whole())
        })
        .map(|&r| median(table, r, system, &|st| st.served_per_s()))
        .filter(|c| c.is_finite())
        .max_by(|a, b| a.total_cmp(b))
        .map(|c| (c, false))
}

/// Overload: per system and step (medians over the reps), what was offered, served, refused at
/// once (503 + Retry-After) and failed otherwise, per second, the set-up time of the served
/// calls, and served / capacity.
fn overload_table(rates: &[u64], systems: &[System], table: &[(u64, System, Step)]) {
    let given = std::env::var("ANCHOR_CAPACITY").ok();
    println!();
    println!("overload: served calls against capacity (medians over the runs; capacity given with ANCHOR_CAPACITY, else the highest step served whole, a lower bound)");
    println!("| system | offered calls/s | served calls/s | refused at once (503 + Retry-After) /s | failed otherwise /s | served set-up p99 ms | refusal p99 ms | served / capacity |");
    println!("|---|---|---|---|---|---|---|---|");
    for &system in systems {
        let cap = capacity(given.as_deref(), system, rates, table);
        for &rate in rates {
            let m = |f: &dyn Fn(&Step) -> f64| median(table, rate, system, f);
            let served = m(&|s| s.served_per_s());
            let ratio = match cap {
                Some((c, _)) if c > 0.0 && served.is_finite() => format!("{:.2}", served / c),
                _ => "-".into(),
            };
            println!(
                "| {} | {:.0} | {served:.0} | {:.0} | {:.1} | {:.0} | {:.0} | {ratio} |",
                system.name(),
                m(&|s| s.offered_per_s()),
                m(&|s| s.per_s(s.refused)),
                m(&|s| s.per_s(s.failed)),
                m(&|s| s.setup_p99_ms),
                m(&|s| s.refusal_p99_ms),
            );
        }
        match cap {
            Some((c, true)) => println!(
                "| {} capacity (given) | {c:.0} | | | | | | |",
                system.name()
            ),
            Some((c, false)) => println!(
                "| {} capacity (highest step served whole) | {c:.0} | | | | | | |",
                system.name()
            ),
            None => println!(
                "| {} capacity: no step served whole | | | | | | | |",
                system.name()
            ),
        }
    }
}

/// Threads of the system's processes.
fn threads(run: &Running) -> u64 {
    pids(run)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|t| {
            t.lines()
                .find(|l| l.starts_with("Threads:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum()
}

/// The idle size (PSS, KiB) to compare with: `(cold, idle)`, where cold is read 3 s after start
/// and idle after `ANCHOR_WARMUP` calls (default 10, at 5/s) and 40 s of rest (past Timer J,
/// the longest a finished transaction is kept): the size of a system that has served a call
/// and sits idle, the state it should return to. A process that never served a call has not
/// yet touched the code, lazily built tables and first-use caches that every call path needs
/// once; counting those as what a flood left behind would blame the flood for start-up.
/// `ANCHOR_WARMUP=0` reads idle cold (both figures the same).
fn idle_kib(run: &Running, dir: &Path) -> (u64, u64) {
    std::thread::sleep(Duration::from_secs(3));
    let cold = pss_kib(run);
    let warmup = env("ANCHOR_WARMUP", 10);
    if warmup == 0 {
        return (cold, cold);
    }
    // At most 5/s, and exactly `warmup` calls: `offer` makes rate × seconds of them.
    let rate = (1..=warmup.min(5))
        .rev()
        .find(|r| warmup.is_multiple_of(*r))
        .unwrap_or(1);
    let step = offer(run, &dir.join("warmup"), rate, warmup / rate, 0, warmup);
    if step.ok < warmup {
        println!("  warm-up: only {} of {warmup} calls completed", step.ok);
    }
    std::thread::sleep(Duration::from_secs(40));
    (cold, pss_kib(run))
}

/// Idle, `hold` calls just set up (their transactions still absorbing retransmissions) and
/// held past Timer J/K/M (a call held for minutes), 20 s and 60 s after they ended (one row).
fn memory_hold(run: &Running, s: System, dir: &Path, hold: u64) {
    let (cold, idle) = idle_kib(run, dir);
    let rate = 200u64;
    let up_secs = hold / rate + 3;
    let hold_ms = (up_secs + 45) * 1000;
    let sipp_dir = dir.join("sipp");
    let (setup, held, threads_held, after20, after60) = std::thread::scope(|scope| {
        let h = scope.spawn(|| offer(run, &sipp_dir, rate, hold.div_ceil(rate), hold_ms, hold));
        std::thread::sleep(Duration::from_secs(up_secs + 2));
        let setup = pss_kib(run);
        std::thread::sleep(Duration::from_secs(36));
        let held = pss_kib(run);
        let threads_held = threads(run);
        let step = h.join().expect("sipp");
        if step.ok < hold * 99 / 100 {
            println!(
                "  {}: only {} of {hold} held calls completed",
                s.name(),
                step.ok
            );
        }
        std::thread::sleep(Duration::from_secs(20));
        let after20 = pss_kib(run);
        std::thread::sleep(Duration::from_secs(40));
        (setup, held, threads_held, after20, pss_kib(run))
    });
    let per = |kib: u64| kib.saturating_sub(idle) as f64 / hold as f64;
    println!(
        "| {} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.1} | {:.1} | {:.2} | {threads_held} |",
        s.name(),
        mib(idle),
        mib(cold),
        mib(held),
        mib(setup),
        per(held),
        per(setup),
        mib(after20),
        mib(after60),
        after60 as f64 / idle.max(1) as f64
    );
}

/// Idle, the peak during `rate` calls/s offered for `secs` s (no hold: most are refused when
/// the rate is above capacity), at its end, 20 s and 60 s after (one table row).
fn memory_flood(run: &Running, s: System, dir: &Path, rate: u64, secs: u64) {
    let (cold, idle) = idle_kib(run, dir);
    let idle_anon = rollup_kib(run, "Pss_Anon:");
    dump_smaps(run, s, "idle");
    let sipp_dir = dir.join("sipp");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (step, peak) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(pss_kib(run));
                std::thread::sleep(Duration::from_millis(500));
            }
            peak
        });
        let step = offer(run, &sipp_dir, rate, secs, 0, 100_000);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (step, sampler.join().expect("sampler"))
    });
    let end = pss_kib(run);
    std::thread::sleep(Duration::from_secs(20));
    let after20 = pss_kib(run);
    std::thread::sleep(Duration::from_secs(40));
    let after60 = pss_kib(run);
    let after60_anon = rollup_kib(run, "Pss_Anon:");
    dump_smaps(run, s, "after60");
    println!(
        "| {} | {:.1} ({:.1}) | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} → {:.1} | {} | {} | {} |",
        s.name(),
        mib(idle),
        mib(cold),
        mib(peak.max(end)),
        mib(end),
        mib(after20),
        mib(after60),
        after60 as f64 / idle.max(1) as f64,
        mib(idle_anon),
        mib(after60_anon),
        step.ok,
        step.refused,
        step.failed
    );
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    require_sipp();
    let rates: Vec<u64> = std::env::var("ANCHOR_RATES")
        .unwrap_or_else(|_| "500,1000,2000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let secs = env("ANCHOR_SECS", 20);
    let reps = env("ANCHOR_REPS", 1).max(1);
    let hold = env("ANCHOR_HOLD", 500);
    let records = env("ANCHOR_RECORDS", 0);
    let flood = env("ANCHOR_FLOOD", 0);
    let flood_secs = env("ANCHOR_FLOOD_SECS", 30);
    let only = std::env::var("ANCHOR_SYSTEMS").ok();
    let kam = kamailio_installed();
    if kam.is_none() {
        println!("anchors: Kamailio not installed (apt-get install kamailio): skipped");
    }
    println!("anchors: the RTP relay against rtpengine: cargo bench --bench media_relay");
    let base = tempfile::tempdir().expect("tempdir");
    let keep = std::env::var_os("ANCHOR_KEEP").is_some();
    let base_path = base.path().to_path_buf();
    if keep {
        println!("anchors: files kept in {}", base_path.display());
        std::mem::forget(base);
    }
    let base = base_path.as_path();
    let mut systems = vec![System::Pasarela];
    if kam.is_some() {
        systems.push(System::Kamailio);
    }
    if let Some(only) = &only {
        systems.retain(|s| only.split(',').any(|o| o.trim() == s.name()));
    }
    println!(
        "anchors: sipp uac -> system -> sipp uas, digest-authenticated INVITE, {secs} s steps, {reps} run(s) each, interleaved"
    );
    let mut run_no = 0;
    let mut table: Vec<(u64, System, Step)> = Vec::new();
    for &rate in &rates {
        for rep in 0..reps {
            let mut order = systems.clone();
            if rep % 2 == 1 {
                order.reverse();
            }
            for &s in &order {
                run_no += 1;
                let dir = base.join(format!("run{run_no}-{}", s.name()));
                let run = start(s, kam.as_deref(), &dir, None);
                let step = offer(&run, &dir.join("sipp"), rate, secs, 0, 100_000);
                println!(
                    "  {:>9} {rate:>5}/s: offered {} in {:.1} s ({:.0}/s), {} served ({:.0}/s), {} refused at once ({} to the first INVITE), {} failed otherwise, {} datagrams dropped ({:.2} % not served), CPU {:.3} ms/served call, INVITE->200 p50 {:.0} ms p99 {:.0} ms, set-up p99 {:.0} ms, refusal p99 {:.0} ms (sipp: 1 ms resolution)",
                    s.name(),
                    step.offered,
                    step.window_s,
                    step.offered_per_s(),
                    step.ok,
                    step.served_per_s(),
                    step.refused,
                    step.refused_first,
                    step.failed,
                    step.dropped.map_or("-".into(), |d| d.to_string()),
                    step.failed_pct(),
                    step.cpu_ms_per_call(),
                    step.p50_ms,
                    step.p99_ms,
                    step.setup_p99_ms,
                    step.refusal_p99_ms,
                );
                table.push((rate, s, step));
            }
        }
    }
    if !rates.is_empty() {
        ratio_table(&rates, &table);
        overload_table(&rates, &systems, &table);
    }

    if hold > 0 {
        println!();
        println!(
            "memory: {hold} calls held (PSS of all the system's processes; held: 40 s after set-up, past Timer J/K/M)"
        );
        println!(
            "| system | idle MiB (cold) | held MiB (just set up) | KiB per held call (just set up) | 20 s after MiB | 60 s after MiB | 60 s after / idle | threads |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &s in &systems {
            run_no += 1;
            let dir = base.join(format!("run{run_no}-{}-hold", s.name()));
            let run = start(s, kam.as_deref(), &dir, None);
            memory_hold(&run, s, &dir, hold);
        }
    }

    if flood > 0 {
        println!();
        println!(
            "memory under a flood: {flood} calls/s offered for {flood_secs} s (PSS of all the system's processes)"
        );
        println!(
            "| system | idle MiB (cold) | peak MiB | end MiB | 20 s after MiB | 60 s after MiB | after / idle | anonymous MiB idle → 60 s after | served | refused (503) | failed otherwise |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for &s in &systems {
            run_no += 1;
            let dir = base.join(format!("run{run_no}-{}-flood", s.name()));
            let run = start(s, kam.as_deref(), &dir, None);
            memory_flood(&run, s, &dir, flood, flood_secs);
        }
    }

    if records > 0 {
        println!();
        println!("per-call cost with {records} call records in the store against an empty store (pasarela, interleaved)");
        let db = full_store(base, records);
        let rate = rates.first().copied().unwrap_or(500);
        let mut cost: Vec<(System, f64, f64)> = Vec::new();
        for rep in 0..reps.max(2) {
            let order = if rep % 2 == 0 {
                [System::Pasarela, System::PasarelaFull]
            } else {
                [System::PasarelaFull, System::Pasarela]
            };
            for s in order {
                run_no += 1;
                let dir = base.join(format!("run{run_no}-{}", s.name()));
                let run = start(s, None, &dir, Some(&db));
                let step = offer(&run, &dir.join("sipp"), rate, secs, 0, 100_000);
                println!(
                    "  {:>16} {rate}/s: {} ok {} failed, CPU {:.3} ms/call, p50 {:.2} ms",
                    s.name(),
                    step.ok,
                    step.failed,
                    step.cpu_ms_per_call(),
                    step.p50_ms
                );
                cost.push((s, step.cpu_ms_per_call(), step.p50_ms));
            }
        }
        let mean = |s: System, i: usize| {
            let v: Vec<f64> = cost
                .iter()
                .filter(|c| c.0 == s)
                .map(|c| if i == 0 { c.1 } else { c.2 })
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        println!(
            "| store | CPU ms/call | p50 ms |\n|---|---|---|\n| empty | {:.3} | {:.2} |\n| {records} records | {:.3} | {:.2} |\n| ratio | {} | {} |",
            mean(System::Pasarela, 0),
            mean(System::Pasarela, 1),
            mean(System::PasarelaFull, 0),
            mean(System::PasarelaFull, 1),
            ratio(mean(System::PasarelaFull, 0), mean(System::Pasarela, 0)),
            ratio(mean(System::PasarelaFull, 1), mean(System::Pasarela, 1)),
        );
    }
}
