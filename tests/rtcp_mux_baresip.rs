//! RTCP multiplexing (RFC 5761) through the B2BUA with real softphones (baresip, headless, as
//! in tests/calls_baresip.rs): a phone configured with `rtcp_mux yes` offers `a=rtcp-mux`;
//! pasarela accepts it in its answer and offers it to the callee. RTCP must reach each phone
//! through the relay (baresip reports every RTCP packet it takes as a `CALL_RTCP` event), and
//! the relay must hold exactly one socket per multiplexing leg: counted from the gateway's
//! open descriptors (`/proc/PID/fd`) matched against the UDP sockets bound in its RTP range
//! (`/proc/PID/net/udp`).
mod common;
mod phone;

use std::time::{Duration, Instant};

use common::sockets::relay_sockets;
use common::{call_config, require_program, rtp_port_range, Server};
use phone::*;

const CALL_SETUP: Duration = Duration::from_secs(15);
/// baresip sends its first RTCP report a few seconds into the call (RFC 3550 interval).
const RTCP_WITHIN: Duration = Duration::from_secs(25);

const MUX: &str = "rtcp_mux\t\tyes\n";

/// Waits until the gateway holds `want` relay sockets (the relay closes a socket on its own
/// I/O thread once the answer is in).
fn wait_sockets(server: &Server, range: (u16, u16), want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = relay_sockets(server.pid(), range);
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn phone(
    base: &std::path::Path,
    server: &Server,
    name: &str,
    answer: &str,
    mux: bool,
    srtp: bool,
) -> Phone {
    let config = format!(
        "{}{}",
        if mux { MUX } else { "" },
        if srtp { "module\t\t\tsrtp.so\n" } else { "" }
    );
    Phone::start_with(
        base,
        server.udp,
        PhoneCfg {
            name,
            ext: name,
            answer,
            tone_hz: if answer == "auto" { 440.0 } else { 1000.0 },
            tone_secs: 30.0,
        },
        &config,
        if srtp { ";mediaenc=srtp-mand" } else { "" },
    )
}

/// One call from 100 (`a_mux`) to 101 (`b_mux`), SRTP on both legs with `srtp`: RTCP
/// (SRTCP) reaches both phones, and the relay holds `sockets` sockets during the call (none
/// before, none after).
fn call(a_mux: bool, b_mux: bool, srtp: bool, sockets: usize) {
    require_program("baresip", "baresip");
    let range = rtp_port_range();
    let mut server = Server::start(&call_config("", range));
    let base = server.dir().to_path_buf();
    let mut a = phone(&base, &server, "100", "manual", a_mux, srtp);
    let mut b = phone(&base, &server, "101", "auto", b_mux, srtp);
    wait_registered(&server, &mut a, "100");
    wait_registered(&server, &mut b, "101");
    assert_eq!(
        relay_sockets(server.pid(), range),
        0,
        "no call, no relay socket"
    );

    a.command("dial", &format!("sip:101@{}", server.udp));
    b.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a], &server);
    a.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&b], &server);
    let held = wait_sockets(&server, range, sockets);
    // RTCP crosses the relay both ways, on the RTP port of a multiplexing leg.
    b.expect_event("CALL_RTCP", RTCP_WITHIN, &[&a], &server);
    a.expect_event("CALL_RTCP", RTCP_WITHIN, &[&b], &server);
    let logs = format!("{}{}{}", a.report(), b.report(), server.log_excerpt());
    assert_eq!(
        held, sockets,
        "relay sockets during a call with rtcp-mux A={a_mux} B={b_mux}\n{logs}"
    );
    for (p, mux) in [(&a, a_mux), (&b, b_mux)] {
        let log = p.log_text();
        // baresip says so when the answer it got (or gave) agreed on multiplexing.
        assert_eq!(
            log.contains("RTP/RTCP multiplexing enabled"),
            mux,
            "baresip {} multiplexing\n{logs}",
            p.name
        );
        assert!(
            !log.contains("drop incoming RTCP packet on RTP port"),
            "RTCP reached {} on the wrong port\n{logs}",
            p.name
        );
    }
    a.command("hangup", "");
    b.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&a], &server);
    assert_eq!(
        wait_sockets(&server, range, 0),
        0,
        "sockets closed after the call"
    );
    server.assert_alive();
}

#[test]
fn both_phones_multiplex_one_socket_each() {
    call(true, true, false, 2);
}

#[test]
fn srtcp_shares_the_srtp_port() {
    call(true, true, true, 2);
}

#[test]
fn callee_without_mux_keeps_its_rtcp_port() {
    call(true, false, false, 3);
}

#[test]
fn caller_without_mux_keeps_its_rtcp_port() {
    call(false, true, false, 3);
}
