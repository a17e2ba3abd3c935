//! Call forwarding and sequential search against sipp phones: extension 102 sets forward-always
//! to 103 with the feature code *72103 and a call to 102 is answered by 103; 101's busy and
//! no-answer forwards (from the configuration file) reach 103; a forward to a premium number is
//! refused (403, the forwarding extension may not call it) and recorded with the forward; a
//! sequential search rings 101's second phone after the first one's turn.
mod common;

use std::time::Duration;

use common::{
    assert_sipp_ok, call_config, free_port, rtp_port_range, sipp_register, sipp_spawn, Server,
    SippProc,
};
use pasarela::cdr::{CallRecord, CdrDb, Filter, Page, Sort};

const HARD: Duration = Duration::from_secs(60);

/// A server whose extension 101 has `keys_101` and with an extension 103.
fn server(keys_101: &str) -> Server {
    let mut config = call_config(
        "\n[numbering]\ncountry_code = \"49\"\narea_code = \"30\"\n",
        rtp_port_range(),
    );
    assert!(config.contains("name = \"Office\"\n"));
    config = config.replace(
        "name = \"Office\"\n",
        &format!("name = \"Office\"\n{keys_101}\n"),
    );
    config.push_str("\n[[extension]]\nnumber = \"103\"\npassword = \"secret103\"\n");
    Server::start(&config)
}

/// Extension `from` calls `dialled` with `scenario`.
fn call(server: &Server, from: &str, dialled: &str, scenario: &str, tag: &str) {
    let pass = format!("secret{from}");
    let auth_uri = format!("{dialled}@{}", server.udp);
    let res = sipp_spawn(
        server.dir(),
        tag,
        scenario,
        server.udp,
        "u1",
        free_port(),
        &[
            "-s",
            dialled,
            "-key",
            "caller",
            from,
            "-au",
            from,
            "-ap",
            &pass,
            "-auth_uri",
            &auth_uri,
        ],
    )
    .wait(HARD);
    assert_sipp_ok(server, tag, &res);
}

/// A registered phone of `ext` running `scenario` (`-m calls`).
fn phone(server: &Server, ext: &str, scenario: &str, tag: &str) -> SippProc {
    let port = free_port();
    sipp_register(server, ext, port);
    sipp_spawn(
        server.dir(),
        tag,
        scenario,
        server.udp,
        "u1",
        port,
        &["-s", ext],
    )
    .listening()
}

/// The phone of `ext` registered on `port` before runs `scenario` again.
fn again(server: &Server, ext: &str, port: u16, scenario: &str, tag: &str) -> SippProc {
    sipp_spawn(
        server.dir(),
        tag,
        scenario,
        server.udp,
        "u1",
        port,
        &["-s", ext],
    )
    .listening()
}

/// The records of calls to `callee`, oldest first, once there are `n`.
fn records(server: &Server, callee: &str, n: usize) -> Vec<CallRecord> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let db = CdrDb::open(&server.db).expect("open the call records");
        let mut list: Vec<CallRecord> = db
            .list(&Filter::default(), Sort::default(), Page::number(1, 100))
            .expect("list the call records")
            .into_iter()
            .filter(|r| r.callee == callee)
            .collect();
        // An answered call's record is written "in progress" first; its final form (with the
        // notes of call control) replaces it when the call ends.
        let in_progress: i64 = rusqlite::Connection::open(&server.db)
            .and_then(|c| {
                c.query_row(
                    "SELECT COUNT(*) FROM call_records WHERE end_reason = 'in progress'",
                    [],
                    |row| row.get(0),
                )
            })
            .unwrap_or(1);
        if list.len() >= n && in_progress == 0 {
            list.sort_by_key(|r| r.start_ms);
            return list;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no {n} records of calls to {callee}\n{}",
        server.log_excerpt()
    );
}

#[test]
fn feature_code_sets_forward_always_and_103_answers_calls_to_102() {
    let server = server("");
    let p103 = phone(&server, "103", "call_uas_answer.xml", "phone-103");
    call(
        &server,
        "102",
        "*72103",
        "feature_code_uac.xml",
        "feature-code",
    );
    call(&server, "100", "102", "call_uac_basic.xml", "caller");
    assert_sipp_ok(&server, "phone 103", &p103.wait(HARD));
    let r = &records(&server, "102", 1)[0];
    assert_eq!(r.sip_status, 200, "{r:?}");
    assert!(
        r.explanation.contains("Forwarded by 102 (always) to 103"),
        "{}",
        r.explanation
    );
    // The phone's setting is in the store, for the dashboard and the next start.
    let store = pasarela::store::Store::open(&server.db).expect("store");
    let h = store.call_handling().expect("call handling");
    assert_eq!(h["102"].always.as_deref(), Some("103"));
}

#[test]
fn busy_and_no_answer_forwards_reach_103() {
    let server =
        server("forward_busy = \"103\"\nforward_no_answer = \"103\"\nforward_no_answer_secs = 2");
    // Busy: 101 answers 486, 103 answers.
    let busy = phone(&server, "101", "call_uas_busy.xml", "phone-101-busy");
    let p103 = phone(&server, "103", "call_uas_answer.xml", "phone-103-a");
    call(&server, "100", "101", "call_uac_basic.xml", "caller-busy");
    let (port101, port103) = (busy.port, p103.port);
    assert_sipp_ok(&server, "busy 101", &busy.wait(HARD));
    assert_sipp_ok(&server, "phone 103", &p103.wait(HARD));
    // No answer: 101 rings for 2 s and is cancelled, 103 answers.
    let ringing = again(
        &server,
        "101",
        port101,
        "call_uas_ring_forever.xml",
        "phone-101-ring",
    );
    let p103 = again(
        &server,
        "103",
        port103,
        "call_uas_answer.xml",
        "phone-103-b",
    );
    call(
        &server,
        "100",
        "101",
        "call_uac_basic.xml",
        "caller-no-answer",
    );
    assert_sipp_ok(&server, "ringing 101", &ringing.wait(HARD));
    assert_sipp_ok(&server, "phone 103", &p103.wait(HARD));
    let r = records(&server, "101", 2);
    assert_eq!((r[0].sip_status, r[1].sip_status), (200, 200), "{r:?}");
    assert!(
        r[0].explanation.contains("Forwarded by 101 (busy) to 103"),
        "{}",
        r[0].explanation
    );
    assert!(
        r[1].explanation
            .contains("Forwarded by 101 (no answer) to 103"),
        "{}",
        r[1].explanation
    );
}

#[test]
fn forward_to_a_premium_number_is_refused_and_recorded() {
    let server = server("forward_always = \"+499001234567\"");
    // call_uac_refused.xml wants "403 Calls to … numbers are barred".
    call(&server, "100", "101", "call_uac_refused.xml", "caller");
    let r = &records(&server, "101", 1)[0];
    assert_eq!(r.sip_status, 403, "{r:?}");
    assert!(
        r.explanation.contains(
            "Forwarded by 101 (always) to +499001234567: refused, Calls to premium numbers are barred"
        ),
        "{}",
        r.explanation
    );
}

#[test]
fn sequential_search_rings_the_second_phone_after_the_first_ones_turn() {
    let server = server("ring_order = \"sequential\"\nring_secs = 2");
    let first = phone(
        &server,
        "101",
        "call_uas_ring_forever.xml",
        "phone-101-first",
    );
    let second = phone(&server, "101", "call_uas_answer.xml", "phone-101-second");
    let started = std::time::Instant::now();
    call(&server, "100", "101", "call_uac_basic.xml", "caller");
    assert_sipp_ok(&server, "first phone (rings, cancelled)", &first.wait(HARD));
    assert_sipp_ok(&server, "second phone", &second.wait(HARD));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the second phone answered before the first one's turn was over"
    );
    let r = &records(&server, "101", 1)[0];
    assert_eq!(r.sip_status, 200, "{r:?}");
}
