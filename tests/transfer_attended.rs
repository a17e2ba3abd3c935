//! Attended transfer with real peers: baresip 100 calls 101 (sipp, holding two dialogs), 101
//! calls baresip 102 in a second dialog (the consultation), then sends REFER on the first call
//! with `Replaces` naming the consultation (RFC 3891). pasarela must join 100 and 102 (tones
//! checked both ways through the relay), release both of 101's dialogs (sipp gets NOTIFY
//! message/sipfrag and a BYE on each), and record the transfer: the first call in two linked
//! parts (100 with 101, then 100 with 102 `transferred_by` 101) and the consultation call.
mod common;
mod phone;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    call_config, free_port, require_program, rtp_port_range, sipp_register, sipp_spawn, Server,
};
use pasarela::cdr::{CallRecord, CdrDb, Filter, Page, Sort};
use phone::*;

const CALL_SETUP: Duration = Duration::from_secs(15);

fn phone(
    base: &Path,
    server: &Server,
    ext: &'static str,
    answer: &'static str,
    hz: f64,
    secs: f64,
) -> Phone {
    Phone::start(
        base,
        server.udp,
        PhoneCfg {
            name: ext,
            ext,
            answer,
            tone_hz: hz,
            tone_secs: secs,
        },
    )
}

/// The call records once `n` are there (waits up to 10 s).
fn records(server: &Server, n: usize, logs: &dyn Fn() -> String) -> Vec<CallRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let db = CdrDb::open(&server.db).expect("open the call records");
        let mut list = db
            .list(&Filter::default(), Sort::default(), Page::number(1, 100))
            .expect("list the call records");
        if list.len() >= n {
            list.sort_by_key(|r| (r.start_ms, r.id));
            return list;
        }
        if Instant::now() > deadline {
            panic!("fewer than {n} records: {list:?}\n{}", logs());
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn attended_transfer_by_a_sipp_transferor_joins_the_far_parties() {
    require_program("baresip", "baresip");
    require_program("sipp", "sip-tester");
    let mut server = Server::start(&call_config("", rtp_port_range()));
    let base = server.dir().to_path_buf();
    // 100 plays 1000 Hz; 102 plays 440 Hz for 8 s and then hangs up.
    let mut a = phone(&base, &server, "100", "manual", 1000.0, 30.0);
    let mut c = phone(&base, &server, "102", "auto", 440.0, 8.0);
    wait_registered(&server, &mut a, "100");
    wait_registered(&server, &mut c, "102");
    let port = free_port();
    sipp_register(&server, "101", port);
    let auth_uri = format!("102@{}", server.udp);
    let transferor = sipp_spawn(
        server.dir(),
        "transferor",
        "attended_transferor.xml",
        server.udp,
        "u1",
        port,
        &[
            "-s",
            "102",
            "-au",
            "101",
            "-ap",
            "secret101",
            "-auth_uri",
            &auth_uri,
        ],
    )
    .listening();

    a.command("dial", &format!("sip:101@{}", server.udp));
    a.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&c], &server);
    // 101 consults 102, then transfers: 102 answers the consultation and stays on.
    c.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a], &server);
    let transferor = transferor.wait(Duration::from_secs(30));
    let tlog = transferor.log_text();
    if !transferor.success() || !tlog.contains("notify SIP/2.0 200 OK") {
        panic!(
            "the transferor's scenario failed or heard no outcome\n{}{}{}{}",
            a.report(),
            c.report(),
            transferor.report(),
            server.log_excerpt()
        );
    }
    // 102's file ends: it hangs up, and 100 gets the BYE.
    c.expect_event("CALL_CLOSED", Duration::from_secs(15), &[&a], &server);
    a.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&c], &server);
    assert!(!a.has_event("CALL_INCOMING"), "100 saw no new call");
    thread::sleep(Duration::from_millis(500));
    let logs = format!(
        "{}{}{}{}",
        a.report(),
        c.report(),
        transferor.report(),
        server.log_excerpt()
    );
    // 102 hears 100 (it heard only silence from sipp before); 100 hears 102 at the end.
    assert_tone(
        &c.received_wav(),
        1000.0,
        "102 (the consulted party) received",
        &logs,
    );
    assert_tone(
        &a.received_wav(),
        440.0,
        "100 (the transferred party) received",
        &logs,
    );

    // The records: the consultation (101 -> 102) and the transferred call in two parts.
    let list = records(&server, 3, &|| logs.clone());
    let parts: Vec<&CallRecord> = list.iter().filter(|r| r.linked_id.is_some()).collect();
    assert_eq!(parts.len(), 2, "{list:?}");
    assert_eq!(parts[0].linked_id, parts[1].linked_id);
    assert_eq!(
        (parts[0].caller.as_str(), parts[0].callee.as_str()),
        ("100", "101")
    );
    assert_eq!(parts[0].transferred_by, None);
    assert_eq!(
        (parts[1].caller.as_str(), parts[1].callee.as_str()),
        ("100", "102")
    );
    assert_eq!(parts[1].transferred_by.as_deref(), Some("101"));
    assert_eq!(
        parts[1].route_target.as_deref(),
        Some("102"),
        "{:?}",
        parts[1]
    );
    assert!(
        list.iter()
            .any(|r| r.caller == "101" && r.callee == "102" && r.linked_id.is_none()),
        "the consultation call has its own record: {list:?}"
    );
    server.assert_alive();
}
