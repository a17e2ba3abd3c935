//! Sockets per held call with and without RTCP multiplexing (RFC 5761), counted from the
//! gateway's open descriptors: sipp calls (`call_uac_long.xml` to `call_uas_answer.xml`, or
//! their `_mux` copies offering and answering `a=rtcp-mux`) held through pasarela; the relay sockets are the
//! gateway's UDP sockets bound in its RTP range (`/proc/PID/fd` matched with
//! `/proc/PID/net/udp`), and the whole descriptor count is printed as well.
mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::sockets::relay_sockets;
use common::{
    assert_sipp_ok, call_config, require_program, sipp_callee_101, sipp_caller_100, Server,
};

/// Calls held at once.
const CALLS: usize = 20;

fn rtp_range(slot: u16) -> (u16, u16) {
    let base = 52000 + (std::process::id() % 40) as u16 * 200 + slot * 100;
    (base, base + 99)
}

fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn wait_sockets(server: &Server, range: (u16, u16), want: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let n = relay_sockets(server.pid(), range);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `CALLS` calls held from 100 to 101 (`mux`: both sipp phones offer/answer rtcp-mux); the
/// relay must hold `per_call` sockets a call. Returns (relay sockets, all descriptors) idle
/// and held.
fn held_calls(slot: u16, mux: bool, per_call: usize) {
    require_program("sipp", "sip-tester");
    let range = rtp_range(slot);
    // Extension 100 places all the calls: lift its toll-fraud limits.
    let limits = "\n[limits]\nconcurrent_calls = 100\ncalls_per_minute = 1000\n";
    let server = Server::start(&call_config(limits, range));
    let (uac, uas) = match mux {
        true => ("call_uac_long_mux.xml", "call_uas_answer_mux.xml"),
        false => ("call_uac_long.xml", "call_uas_answer.xml"),
    };
    let n = CALLS.to_string();
    let callee = sipp_callee_101(&server, "callee-101", uas, &["-m", &n]);
    let idle_fds = fds(server.pid());
    assert_eq!(relay_sockets(server.pid(), range), 0);
    let caller = sipp_caller_100(
        &server,
        "caller-100",
        uac,
        server.udp,
        "u1",
        &["-m", &n, "-l", &n, "-r", "20", "-d", "8000"],
    );
    let want = CALLS * per_call;
    let held = wait_sockets(&server, range, want, Duration::from_secs(20));
    let held_fds = fds(server.pid());
    eprintln!(
        "rtcp-mux {mux}: {CALLS} held calls: {held} relay sockets ({:.1} a call); \
         /proc/PID/fd {idle_fds} idle, {held_fds} held ({:.1} a call)",
        held as f64 / CALLS as f64,
        (held_fds as f64 - idle_fds as f64) / CALLS as f64
    );
    if held != want {
        server.fail(&format!(
            "{held} relay sockets for {CALLS} held calls, expected {want} ({per_call} a call)"
        ));
    }
    assert_sipp_ok(&server, "caller", &caller.wait(Duration::from_secs(60)));
    assert_sipp_ok(&server, "callee", &callee.wait(Duration::from_secs(20)));
    let after = wait_sockets(&server, range, 0, Duration::from_secs(10));
    assert_eq!(after, 0, "relay sockets left after the calls ended");
}

#[test]
fn muxed_calls_hold_two_sockets_each() {
    held_calls(0, true, 2);
}

#[test]
fn plain_calls_hold_four_sockets_each() {
    held_calls(1, false, 4);
}
