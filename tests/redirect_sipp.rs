//! Redirects followed by the B2BUA (RFC 3261 §8.1.3.4) against sipp: extension 101 answers 302
//! with two Contacts; the first (q=0.9) is out of service (503), the second (q=0.5) answers and
//! the caller is connected to it. A 302 to a premium-rate number is refused with 403 (the
//! caller may not call premium numbers), nothing is sent there, and the record says why.
mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{
    assert_sipp_ok, call_config, free_port, rtp_port_range, sipp_caller_100, sipp_register,
    sipp_spawn, Server,
};
use pasarela::cdr::{CallRecord, CdrDb, Filter, Page, Sort};

const HARD: Duration = Duration::from_secs(60);

fn server() -> Server {
    Server::start(&call_config(
        "\n[numbering]\ncountry_code = \"49\"\narea_code = \"30\"\n",
        rtp_port_range(),
    ))
}

fn record(server: &Server) -> CallRecord {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        let db = CdrDb::open(&server.db).expect("open the call records");
        let list = db
            .list(&Filter::default(), Sort::default(), Page::number(1, 100))
            .expect("list the call records");
        if let Some(r) = list.into_iter().find(|r| r.callee == "101") {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no record of the call\n{}", server.log_excerpt());
}

#[test]
fn a_302_is_followed_in_q_order_to_the_contact_that_answers() {
    let server = server();
    let port = free_port();
    sipp_register(&server, "101", port);
    let (p1, p2) = (free_port(), free_port());
    let contacts = format!("<sip:second@127.0.0.1:{p2}>;q=0.5, <sip:first@127.0.0.1:{p1}>;q=0.9");
    let first = sipp_spawn(
        server.dir(),
        "first",
        "target_uas_503.xml",
        server.udp,
        "u1",
        p1,
        &[],
    )
    .listening();
    let second = sipp_spawn(
        server.dir(),
        "second",
        "call_uas_answer.xml",
        server.udp,
        "u1",
        p2,
        &["-s", "second"],
    )
    .listening();
    let redirector = sipp_spawn(
        server.dir(),
        "redirector",
        "redirect_uas_302.xml",
        server.udp,
        "u1",
        port,
        &["-s", "101", "-key", "contacts", &contacts],
    )
    .listening();
    let caller = sipp_caller_100(
        &server,
        "caller",
        "call_uac_basic.xml",
        server.udp,
        "u1",
        &[],
    )
    .wait(HARD);
    assert_sipp_ok(&server, "caller", &caller);
    assert_sipp_ok(&server, "redirecting phone", &redirector.wait(HARD));
    assert_sipp_ok(&server, "first contact (503)", &first.wait(HARD));
    assert_sipp_ok(&server, "second contact", &second.wait(HARD));
    let r = record(&server);
    assert_eq!(r.sip_status, 200, "{r:?}");
    let lines: Vec<&str> = r.explanation.lines().collect();
    assert!(
        lines.len() == 3
            && lines[0].contains("-> 302")
            && lines[1].contains(&format!("redirect): sip:first@127.0.0.1:{p1} -> 503"))
            && lines[2].contains(&format!("redirect): sip:second@127.0.0.1:{p2} -> 200")),
        "{}",
        r.explanation
    );
}

#[test]
fn a_302_to_a_premium_number_is_refused_and_recorded() {
    let server = server();
    let port = free_port();
    sipp_register(&server, "101", port);
    // Where the redirect points: must receive nothing.
    let premium = UdpSocket::bind("127.0.0.1:0").unwrap();
    premium
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let contacts = format!(
        "<sip:+499001234567@127.0.0.1:{}>",
        premium.local_addr().unwrap().port()
    );
    let redirector = sipp_spawn(
        server.dir(),
        "redirector",
        "redirect_uas_302.xml",
        server.udp,
        "u1",
        port,
        &["-s", "101", "-key", "contacts", &contacts],
    )
    .listening();
    // call_uac_refused.xml wants "403 Calls to … numbers are barred".
    let caller = sipp_caller_100(
        &server,
        "caller",
        "call_uac_refused.xml",
        server.udp,
        "u1",
        &[],
    )
    .wait(HARD);
    assert_sipp_ok(&server, "caller", &caller);
    assert_sipp_ok(&server, "redirecting phone", &redirector.wait(HARD));
    let mut buf = [0u8; 2048];
    if let Ok((n, from)) = premium.recv_from(&mut buf) {
        panic!(
            "the premium number got a request from {from}:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    let r = record(&server);
    assert_eq!(r.sip_status, 403, "{r:?}");
    assert!(
        r.explanation
            .contains("-> 302 Calls to premium numbers are barred"),
        "{}",
        r.explanation
    );
}
