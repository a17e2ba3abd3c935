//! Overload admission against sipp: new calls beyond what the box can serve get `503` with
//! `Retry-After` at once, before any RTP port or socket is taken, so that the calls already
//! admitted complete and the server recovers as soon as the load ends.
//!
//! - a call budget (`[limits] max_calls`): the calls beyond it are refused while the admitted
//!   ones are held, and complete;
//! - offered load above capacity (sipp offering authenticated calls faster than the server and
//!   sipp together can serve on this machine, with `[limits] queue_delay_ms` tight so that the
//!   test does not depend on how fast the machine is): every call either completes or is refused
//!   with 503 + Retry-After by admission (queue delay, or the RTP ports admission counts), the
//!   relay's port range never runs out; none times out or fails otherwise, and calls right after
//!   the load succeed.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    call_config, caller_args, claim_ports, free_media_base, free_port, http_get, metric_sample,
    require_program, scenario, sipp_callee_101, wait_timeout, Server, SippProc,
};

/// A server for these tests: info logging (debug lines at thousands of calls a second would
/// be most of the work), `limits` in `[limits]`, and an RTP range of 2 000 ports (500 relayed
/// calls) claimed for this process alone.
fn start(limits: &str) -> Server {
    let config =
        call_config("", claim_ports(2000)).replace("level = \"debug\"", "level = \"info\"");
    Server::start(&format!(
        "{config}\n[limits]\nconcurrent_calls = 0\ncalls_per_minute = 0\n{limits}\n"
    ))
}

/// Extension 101 registered and answering every call (`-m` none).
fn answering_callee(server: &Server) -> SippProc {
    sipp_callee_101(
        server,
        "callee-101",
        "call_uas_answer.xml",
        &["-m", "1000000", "-timeout", "120s", "-buff_size", "4194304"],
    )
}

/// What one load run of `overload_uac.xml` gave.
#[derive(Debug)]
struct Load {
    /// sipp's exit status (0: every call reached the end of the scenario).
    status: Option<i32>,
    successful: u64,
    failed: u64,
    /// 503 responses received (to the first or the second INVITE).
    refused: u64,
    /// 200 responses to the authenticated INVITE (calls that were answered; the first 200 of
    /// the scenario, not the BYE's).
    answered: u64,
    elapsed: Duration,
}

/// The values of the columns of sipp's last `-trace_counts` line whose names match `pred`, in
/// scenario order.
fn columns(path: &Path, pred: impl Fn(&str) -> bool) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let Some(last) = lines.next_back() else {
        return Vec::new();
    };
    header
        .split(';')
        .zip(last.split(';'))
        .filter(|(h, _)| pred(h))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .collect()
}

fn count_columns(path: &Path, pred: impl Fn(&str) -> bool) -> u64 {
    columns(path, pred).iter().sum()
}

fn stat_column(path: &Path, name: &str) -> u64 {
    count_columns(path, |h| h == name)
}

/// Extension 100 calling 101 `total` times at `rate` calls/s, each held `hold_ms`, at most
/// `limit` at once; waits for sipp to finish.
fn offer(server: &Server, tag: &str, rate: u32, total: u32, limit: u32, hold_ms: u32) -> Load {
    require_program("sipp", "sip-tester");
    let dir: PathBuf = server.dir().join(format!("load-{tag}"));
    std::fs::create_dir_all(&dir).expect("load dir");
    let stat = dir.join("stat.csv");
    let started = Instant::now();
    let mut child = Command::new("sipp")
        .current_dir(&dir)
        .arg(server.udp.to_string())
        .arg("-sf")
        .arg(scenario("overload_uac.xml"))
        .args(caller_args("101", "secret100", server.udp))
        .args([
            "-i",
            "127.0.0.1",
            "-ci",
            "127.0.0.1",
            "-nostdin",
            "-t",
            "u1",
        ])
        .args([
            "-p",
            &free_port().to_string(),
            "-cp",
            &free_port().to_string(),
        ])
        .args(["-mi", "127.0.0.1", "-mp", &free_media_base().to_string()])
        .args(["-r", &rate.to_string(), "-m", &total.to_string()])
        .args(["-l", &limit.to_string(), "-d", &hold_ms.to_string()])
        .args(["-buff_size", "4194304", "-timeout", "90s", "-timeout_error"])
        .args(["-trace_counts", "-trace_stat", "-fd", "1", "-stf"])
        .arg(&stat)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sipp");
    let status = wait_timeout(&mut child, Duration::from_secs(100));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let elapsed = started.elapsed();
    let counts = std::fs::read_dir(&dir)
        .ok()
        .and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with("_counts.csv"))
        })
        .unwrap_or_else(|| dir.join("missing_counts.csv"));
    Load {
        status: status.and_then(|s| s.code()),
        successful: stat_column(&stat, "SuccessfulCall(C)"),
        failed: stat_column(&stat, "FailedCall(C)"),
        refused: count_columns(&counts, |h| h.contains("_503_") && h.ends_with("Recv")),
        answered: columns(&counts, |h| h.contains("_200_") && h.ends_with("Recv"))
            .first()
            .copied()
            .unwrap_or(0),
        elapsed,
    }
}

/// Waits until the server's `/metrics` (published every 100 ms) show no call in progress and
/// none waiting for its route, up to `limit`, and at least `min`: the calls of a load run end a
/// moment after sipp's last BYE, later on a loaded machine. Returns the last (active, routing).
fn wait_calls_ended(server: &Server, min: Duration, limit: Duration) -> [Option<f64>; 2] {
    let web = server.web.expect("the dashboard's address");
    let start = Instant::now();
    loop {
        let metrics = http_get(web, "/metrics").2;
        let gauges = ["pasarela_calls_active", "pasarela_calls_routing"]
            .map(|name| metric_sample(&metrics, name));
        let ended = gauges == [Some(0.0), Some(0.0)];
        if (ended && start.elapsed() >= min) || start.elapsed() > limit {
            return gauges;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Lines of the server log containing `needle`.
fn log_count(server: &Server, needle: &str) -> usize {
    std::fs::read_to_string(server.log_path())
        .unwrap_or_default()
        .matches(needle)
        .count()
}

#[test]
fn calls_beyond_the_call_budget_are_refused_at_once_and_the_admitted_ones_complete() {
    let server = start("max_calls = 4");
    let _callee = answering_callee(&server);
    // 16 calls within about a second, each held 2 s: 4 are admitted, the others refused.
    let load = offer(&server, "budget", 16, 16, 16, 2000);
    eprintln!("{load:?}");
    assert_eq!(
        load.status,
        Some(0),
        "a call failed: {load:?}\n{}",
        server.log_excerpt()
    );
    assert_eq!(load.successful, 16, "{load:?}");
    assert!(
        (4..=8).contains(&load.answered),
        "4 calls at once (and any after the first ended) were to be answered: {load:?}"
    );
    assert!(
        load.refused >= 8,
        "calls beyond the budget were not refused: {load:?}"
    );
    assert_eq!(load.answered + load.refused, 16, "{load:?}");
    // Refused at once, not queued: the whole run took about the holding time of the admitted
    // calls (a refusal that waited for a free place would take 2 s more per round).
    assert!(
        load.elapsed < Duration::from_secs(12),
        "refusals were not immediate: {load:?}"
    );
    assert_eq!(log_count(&server, "no free RTP"), 0, "ports ran out");
    // Recovery: with the load gone, a call goes through at once.
    let after = offer(&server, "after-budget", 1, 1, 1, 0);
    assert_eq!((after.answered, after.refused), (1, 0), "{after:?}");
}

#[test]
fn load_above_capacity_is_refused_with_503_and_served_calls_complete() {
    // A tight queue delay bound: refusal starts as soon as new calls wait 20 ms for the core,
    // which an offered rate of a few thousand calls a second with sipp on the same two cores
    // reaches on any machine this suite runs on.
    let server = start("queue_delay_ms = 20");
    let _callee = answering_callee(&server);
    let t = Instant::now();
    let load = offer(&server, "rate", 4000, 24_000, 4000, 0);
    eprintln!("{load:?} in {:?}", t.elapsed());
    assert!(
        load.refused > 0,
        "the load did not exceed capacity: {load:?}"
    );
    assert!(
        load.answered > 0,
        "no call was served under overload: {load:?}"
    );
    // No cliff: every call either completed or was refused at once; none timed out waiting
    // for a server that had fallen behind.
    assert!(
        load.failed * 100 <= load.successful,
        "more than 1 % of the calls failed instead of completing or being refused: {load:?}\n{}",
        server.log_excerpt()
    );
    assert!(
        log_count(&server, "over capacity: new calls refused") > 0,
        "the refusals were not reported in the log: {load:?}"
    );
    // Calls admitted but slow to finish may use up the 500 calls' worth of RTP ports here;
    // admission counts the free pairs and refuses first (statelessly, before a transaction),
    // so the media allocator never runs out.
    assert_eq!(
        log_count(&server, "no free RTP/RTCP port pair"),
        0,
        "the RTP ports ran out before admission refused: {load:?}\n{}",
        server.log_excerpt()
    );
    // Recovery: once the calls admitted during the load have ended (their ports are released
    // as they end), new calls go through.
    let left = wait_calls_ended(&server, Duration::from_secs(2), Duration::from_secs(30));
    let after = offer(&server, "after-rate", 5, 5, 5, 0);
    assert_eq!(
        (after.answered, after.refused),
        (5, 0),
        "{after:?}; before it, calls (active, routing) {left:?}"
    );
}
