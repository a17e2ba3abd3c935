//! Blind transfer to a number outside the office, with real peers: baresip 100 calls baresip
//! 101, and 101 transfers the call to the national number 0305559999 (REFER). pasarela routes
//! the number as a call of 101 (its permissions, limits, the trunk): the trunk (sipp) receives
//! the INVITE with `Referred-By: 101`, answers, and hangs up 3 s later. The call's records are
//! two linked parts: 100 with 101 until the transfer, then 100 with the number over the trunk,
//! `transferred_by` 101 and billed on 101 at the trunk's rate.
mod common;
mod phone;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{call_config, free_port, require_program, rtp_port_range, sipp_spawn, Server};
use pasarela::cdr::{CallRecord, CdrDb, Direction, Filter, Page, Price, Rate, RouteKind, Sort};
use phone::*;

const CALL_SETUP: Duration = Duration::from_secs(15);
const NUMBER: &str = "0305559999";

fn phone(base: &Path, server: &Server, ext: &'static str, answer: &'static str, hz: f64) -> Phone {
    Phone::start(
        base,
        server.udp,
        PhoneCfg {
            name: ext,
            ext,
            answer,
            tone_hz: hz,
            tone_secs: 30.0,
        },
    )
}

/// The trunk `carrier` at 0.05/min plus 0.01 connect fee (60/60) for numbers under +49.
fn set_rates(server: &Server) {
    let mut db = CdrDb::open(&server.db).expect("open the database");
    let price = |p: &str| Price::parse(p, false).expect("price");
    db.create_rate_table("carrier", "EUR", false)
        .expect("carrier table");
    db.set_rate_table_lines("carrier", &["carrier"])
        .expect("carrier line");
    db.put_rate(
        "carrier",
        &Rate {
            prefix: "49".into(),
            description: "Germany".into(),
            per_minute: price("0.05"),
            connect_fee: price("0.01"),
            first_s: 60,
            next_s: 60,
        },
    )
    .expect("carrier rate");
}

/// The records of the call, oldest first, once both parts are there (waits up to 10 s).
fn parts(server: &Server, logs: &dyn Fn() -> String) -> Vec<CallRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let db = CdrDb::open(&server.db).expect("open the call records");
        let mut list = db
            .list(&Filter::default(), Sort::default(), Page::number(1, 100))
            .expect("list the call records");
        list.retain(|r| r.linked_id.is_some());
        if list.len() >= 2 {
            list.sort_by_key(|r| r.start_ms);
            return list;
        }
        if Instant::now() > deadline {
            panic!("no two linked records: {list:?}\n{}", logs());
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn blind_transfer_to_a_number_over_the_trunk_is_billed_on_the_transferor() {
    require_program("baresip", "baresip");
    require_program("sipp", "sip-tester");
    let trunk_port = free_port();
    let config = call_config(
        &format!(
            r#"
[numbering]
country_code = "49"
area_code = "30"

[enum]
suffixes = []

[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:{trunk_port}"
number_format = "national"
"#
        ),
        rtp_port_range(),
    );
    let mut server = Server::start(&config);
    set_rates(&server);
    let base = server.dir().to_path_buf();
    let trunk = sipp_spawn(
        server.dir(),
        "trunk",
        "transfer_trunk_uas.xml",
        server.udp,
        "u1",
        trunk_port,
        &["-s", "trunk", "-m", "1", "-rtp_echo"],
    )
    .listening();
    let mut a = phone(&base, &server, "100", "manual", 1000.0);
    let mut b = phone(&base, &server, "101", "auto", 700.0);
    wait_registered(&server, &mut a, "100");
    wait_registered(&server, &mut b, "101");

    a.command("dial", &format!("sip:101@{}", server.udp));
    b.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a], &server);
    a.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&b], &server);
    thread::sleep(Duration::from_millis(1500));
    b.command("transfer", &format!("sip:{NUMBER}@{}", server.udp));
    b.expect_event("CALL_CLOSED", Duration::from_secs(15), &[&a], &server);
    // The trunk hangs up after 3 s: 100 gets the BYE.
    a.expect_event("CALL_CLOSED", Duration::from_secs(20), &[&b], &server);
    let trunk = trunk.wait(Duration::from_secs(30));
    let logs = || {
        format!(
            "{}{}{}{}",
            a.report(),
            b.report(),
            trunk.report(),
            server.log_excerpt()
        )
    };
    assert!(trunk.success(), "the trunk's scenario failed\n{}", logs());
    let trunk_log = trunk.log_text();
    assert!(
        trunk_log.contains(&format!("invite {NUMBER}")),
        "the trunk gets the number: {trunk_log}"
    );
    assert!(
        trunk_log.contains("<sip:101@office.test>"),
        "the trunk learns who transferred: {trunk_log}"
    );

    let parts = parts(&server, &logs);
    assert_eq!(parts.len(), 2, "{parts:?}");
    let (first, second) = (&parts[0], &parts[1]);
    assert_eq!(first.linked_id, second.linked_id);
    // 100 with 101 until the transfer.
    assert_eq!(first.caller, "100");
    assert_eq!(first.callee, "101");
    assert_eq!(first.route_kind, RouteKind::Extension, "{first:?}");
    assert_eq!(first.transferred_by, None);
    assert!(first.end_ms <= second.start_ms + 1, "{first:?}\n{second:?}");
    // 100 with the number over the trunk, 101's outgoing call at the trunk's rate.
    assert_eq!(second.caller, "100");
    assert_eq!(second.callee, NUMBER);
    assert_eq!(second.route_kind, RouteKind::Pstn, "{second:?}");
    assert_eq!(second.route_target.as_deref(), Some("carrier"));
    assert_eq!(second.transferred_by.as_deref(), Some("101"));
    assert_eq!(
        second.extension.as_deref(),
        Some("101"),
        "billed on the transferor"
    );
    assert_eq!(second.direction, Direction::Outgoing);
    assert!((2..=6).contains(&second.billable_s), "{second:?}");
    assert_eq!(
        second.cost_minor,
        Some(6),
        "one minute and the fee: {second:?}"
    );
    // The API shows both parts and the link.
    let (st, _, body) = common::api_get(&server, "/api/v1/records");
    assert_eq!(st, 200);
    assert!(body.contains("\"transferred_by\":\"101\""), "{body}");
    let link = first.linked_id.clone().unwrap_or_default();
    assert_eq!(
        body.matches(&format!("\"linked_id\":\"{link}\"")).count(),
        2,
        "{body}"
    );
    server.assert_alive();
}
