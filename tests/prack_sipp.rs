//! Reliable provisional responses (RFC 3262) against sipp: a caller whose INVITE says
//! `Require: 100rel` (it got 420 before) gets its 180 with `Require: 100rel` and an RSeq, PRACKs
//! it and completes the call; a callee that sends its 180 reliably gets a PRACK from pasarela
//! naming that RSeq and the INVITE's CSeq, and the BYE that ends the call comes with a CSeq
//! above the PRACK's.
mod common;

use std::time::Duration;

use common::{
    assert_sipp_ok, call_config, rtp_port_range, sipp_callee_101, sipp_caller_100,
    sipp_logged_numbers, Server, SippResult,
};

const HARD: Duration = Duration::from_secs(60);

/// 101 registers on a fresh port and runs `uas` there; 100 calls it with `uac`.
fn call(uac: &str, uas: &str) -> (Server, SippResult, SippResult) {
    let server = Server::start(&call_config("", rtp_port_range()));
    let callee = sipp_callee_101(&server, "callee", uas, &[]);
    let caller = sipp_caller_100(&server, "caller", uac, server.udp, "u1", &[]).wait(HARD);
    let callee = callee.wait(HARD);
    assert_sipp_ok(&server, "caller", &caller);
    assert_sipp_ok(&server, "callee", &callee);
    (server, caller, callee)
}

#[test]
fn a_caller_that_requires_100rel_prack_s_its_180_and_talks() {
    let (server, caller, _) = call("prack_uac.xml", "call_uas_answer.xml");
    assert_eq!(
        sipp_logged_numbers(&caller, "rseq"),
        vec![1],
        "the 180 carries RSeq 1\n{}",
        caller.report()
    );
    drop(server);
}

#[test]
fn a_callee_that_sends_180_reliably_gets_a_prack() {
    let (server, _, callee) = call("call_uac_basic.xml", "prack_uas.xml");
    let prack = sipp_logged_numbers(&callee, "prack_cseq");
    let bye = sipp_logged_numbers(&callee, "bye_cseq");
    let rack = sipp_logged_numbers(&callee, "rack_cseq");
    assert_eq!(
        rack,
        vec![1],
        "RAck names the INVITE's CSeq 1\n{}",
        callee.report()
    );
    assert!(
        prack.len() == 1 && bye.len() == 1 && bye[0] > prack[0],
        "the BYE's CSeq ({bye:?}) must come after the PRACK's ({prack:?})\n{}",
        callee.report()
    );
    drop(server);
}
