//! Busy lamps, presence and message waiting (SUBSCRIBE/NOTIFY, RFC 6665) against sipp: a
//! watcher (extension 100, the BLF key of a desk phone) subscribes to the dialog state of 101
//! and gets NOTIFYs while 101 is rung, answers and hangs up; the live page shows the lamp; an
//! unknown event package gets 489.
mod common;

use std::time::{Duration, Instant};

use common::{
    assert_sipp_ok, call_config, free_port, header_values, rtp_port_range, sip_udp_exchange,
    sipp_dial_100, sipp_register, sipp_spawn, status_code, Server, SippProc,
};

const HARD: Duration = Duration::from_secs(60);

/// Waits until sipp's message log holds `needle` (what it received so far).
fn wait_in_log(server: &Server, p: &SippProc, res_dir_tag: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = std::fs::read_dir(server.dir())
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(res_dir_tag) && n.ends_with(".messages.log")
            })
            .any(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .contains(needle)
            });
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}: `{needle}` not received\n{}",
            p.name,
            server.log_excerpt()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `<state>` values of the dialog-info bodies in a sipp message log, in order.
fn dialog_states(log: &str) -> Vec<String> {
    log.split("<state>")
        .skip(1)
        .filter_map(|s| s.split_once("</state>").map(|(v, _)| v.to_owned()))
        .collect()
}

#[test]
fn a_busy_lamp_follows_ringing_answered_and_ended() {
    let rtp = rtp_port_range();
    let server = Server::start(&call_config("", rtp));
    let callee_port = free_port();
    sipp_register(&server, "101", callee_port);
    let watcher = sipp_spawn(
        server.dir(),
        "watcher",
        "blf_watch.xml",
        server.udp,
        "u1",
        free_port(),
        &[
            "-s",
            "101",
            "-key",
            "watcher",
            "100",
            "-au",
            "100",
            "-ap",
            "secret100",
            "-auth_uri",
            &format!("101@{}", server.udp),
        ],
    );
    // The first NOTIFY (idle) comes right after the 200.
    wait_in_log(&server, &watcher, "sipp-watcher-", "NOTIFY sip:100@");
    let callee = sipp_spawn(
        server.dir(),
        "callee",
        "blf_uas_answer.xml",
        server.udp,
        "u1",
        callee_port,
        &["-s", "101"],
    )
    .listening();
    let caller = sipp_dial_100(
        &server,
        "caller",
        "call_uac_basic.xml",
        "101",
        server.udp,
        "u1",
        &[],
    )
    .wait(HARD);
    assert_sipp_ok(&server, "caller", &caller);
    let callee = callee.wait(HARD);
    assert_sipp_ok(&server, "callee", &callee);
    let watcher = watcher.wait(HARD);
    assert_sipp_ok(&server, "watcher", &watcher);

    let log = std::fs::read_to_string(&watcher.messages).unwrap();
    let states = dialog_states(&log);
    let pos = |s: &str| states.iter().position(|x| x == s);
    let (early, confirmed, terminated) = (pos("early"), pos("confirmed"), pos("terminated"));
    assert!(
        early.is_some() && early < confirmed && confirmed < terminated,
        "the lamp must go early -> confirmed -> terminated, got {states:?}\n{log}"
    );
    assert!(log.contains("direction=\"recipient\""), "{log}");
    assert!(
        log.contains("entity=\"sip:101@office.test\""),
        "the entity is the watched extension\n{log}"
    );
    assert!(
        log.contains("<remote>\n<identity display=\"Reception\">sip:100@office.test</identity>"),
        "the caller is shown as the remote identity\n{log}"
    );
    // Every NOTIFY's version is one more than the previous one.
    let versions: Vec<u32> = log
        .split(" version=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next()?.parse().ok())
        .collect();
    assert!(
        versions.windows(2).all(|w| w[1] == w[0] + 1) && versions.first() == Some(&0),
        "versions {versions:?}"
    );
}

#[test]
fn unknown_event_package_is_489_and_lamps_on_the_live_page() {
    use common::web_client::set_up_admin;
    let rtp = rtp_port_range();
    let server = Server::start(&call_config("", rtp));
    let req = format!(
        "SUBSCRIBE sip:101@{0} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKev1;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:100@office.test>;tag=e1\r\nTo: <sip:101@office.test>\r\n\
Call-ID: ev1@test\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:100@127.0.0.1:9>\r\nEvent: conference\r\n\
Expires: 600\r\nContent-Length: 0\r\n\r\n",
        server.udp
    );
    let reply = sip_udp_exchange(server.udp, req.as_bytes()).expect("an answer");
    assert_eq!(
        status_code(&reply),
        Some(489),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let allow = header_values(&reply, "Allow-Events", Some("u")).join(",");
    assert!(
        allow.contains("dialog") && allow.contains("presence"),
        "{allow}"
    );

    // 101 registered and idle, 102 offline.
    sipp_register(&server, "101", free_port());
    let mut admin = set_up_admin(server.web.expect("web address"));
    let full = admin.get("/live").body;
    let page = match full.find("Busy lamps") {
        Some(at) => full[at..].to_owned(),
        None => panic!("no busy lamps on the live page: {full}"),
    };
    let row = |ext: &str| {
        let at = page
            .find(&format!("<tr><td>{ext}</td>"))
            .unwrap_or_else(|| panic!("no lamp row for {ext}: {page}"));
        page[at..].split("</tr>").next().unwrap().to_owned()
    };
    assert!(row("101").contains(">idle<"), "{}", row("101"));
    assert!(row("102").contains(">offline<"), "{}", row("102"));
}
