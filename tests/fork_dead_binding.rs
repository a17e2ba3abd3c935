//! A call forked to an extension with a dead binding (a phone gone without unregistering: its
//! UDP port answers ICMP port unreachable) and a live one must reach the live phone at once.
//! The ICMP error of the INVITE to the dead binding used to stay pending on the SIP UDP
//! socket and fail the very next send, the INVITE to the live phone, which then left only with
//! Timer A's retransmission: every call after the first answered ~500 ms late.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::raw_phone::RawPhone;
use common::{
    assert_sipp_ok, call_config, free_port, require_program, rtp_port_range, sipp_caller_100,
    sipp_register_on, sipp_rtt_ms, Server,
};

const CALLS: usize = 5;
/// Answer time allowed per call: well below Timer A's 500 ms (the lost INVITE's retransmission,
/// the fault this catches, answers at 500 ms or later), far above the few ms it takes even
/// with a loaded machine holding back sipp, the server and the phone's thread in turn (100 ms
/// left a loaded 2-core machine little room for that).
const LIMIT_MS: f64 = 300.0;

fn forked_calls_answer_at_once(caller_transport: &str) {
    require_program("sipp", "sip-tester");
    let server = Server::start(&call_config("", rtp_port_range()));
    // The dead binding: sipp registers 101 from 127.0.0.2 and exits, its port closed.
    sipp_register_on(&server, "101", "127.0.0.2", free_port());
    // The live binding: a phone answering at once on the port it registered from.
    let live_port = free_port();
    sipp_register_on(&server, "101", "127.0.0.1", live_port);
    let phone = RawPhone::bind(SocketAddr::from(([127, 0, 0, 1], live_port)));

    let remote = if caller_transport == "t1" {
        server.tcp
    } else {
        server.udp
    };
    let calls = CALLS.to_string();
    let caller = sipp_caller_100(
        &server,
        "caller-100",
        "call_uac_basic.xml",
        remote,
        caller_transport,
        &["-m", &calls, "-l", "1", "-trace_rtt", "-rtt_freq", "1"],
    )
    .wait(Duration::from_secs(60));
    assert_sipp_ok(&server, "forked calls", &caller);
    let answers = sipp_rtt_ms(server.dir(), "call_uac_basic.xml");
    eprintln!(
        "INVITE to answer, ms ({caller_transport}): {answers:?}; INVITEs the live phone saw: {}",
        phone.invites()
    );
    assert_eq!(answers.len(), CALLS, "one answer time per call");
    if let Some(slow) = answers.iter().find(|ms| **ms >= LIMIT_MS) {
        server.fail(&format!(
            "a forked call took {slow} ms to answer (all: {answers:?}): the INVITE to the live \
             phone was lost after the dead binding's ICMP error"
        ));
    }
    assert_eq!(
        phone.invites(),
        CALLS,
        "the live phone got retransmitted INVITEs, so a first one was lost"
    );
}

#[test]
fn a_dead_binding_does_not_delay_the_live_fork_udp_caller() {
    forked_calls_answer_at_once("u1");
}

#[test]
fn a_dead_binding_does_not_delay_the_live_fork_tcp_caller() {
    forked_calls_answer_at_once("t1");
}
