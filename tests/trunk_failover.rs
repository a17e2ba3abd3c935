//! A trunk whose TCP port refuses connections (issue 15, item 6): the refused connection
//! reaches the transaction layer as a transport error, the INVITE's transaction fails at once
//! (as a 503 with the reason), and the call goes out on the next trunk within a second instead
//! of after the stage's silence limit or Timer B.
mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

const HARD: Duration = Duration::from_secs(60);

/// `dead` (TCP to 127.0.0.6:`dead_port`, where nothing listens) before `alive` (sipp over UDP
/// on 127.0.0.1:`alive_port`). The stage silence limit is 20 s, so only the transport error
/// can move the call on quickly.
fn office(dead_port: u16, alive_port: u16) -> String {
    call_config(
        &format!(
            r#"failover_ms = 20000

[numbering]
country_code = "49"
area_code = "30"

[[trunk]]
name = "dead"
uri = "sip:127.0.0.6:{dead_port};transport=tcp"
number_format = "national"

[[trunk]]
name = "alive"
uri = "sip:127.0.0.1:{alive_port}"
number_format = "national"
"#
        ),
        rtp_port_range(),
    )
}

fn explanation(server: &Server) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Option<String> = rusqlite::Connection::open(&server.db).ok().and_then(|c| {
            c.query_row(
                "SELECT explanation FROM call_records ORDER BY id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .ok()
        });
        if let Some(text) = got {
            return text;
        }
        if Instant::now() > deadline {
            panic!("no call record\n{}", server.log_excerpt());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_refused_tcp_trunk_fails_over_to_the_next_within_a_second() {
    let dead_port = free_port();
    let alive_port = free_port();
    let server = Server::start(&office(dead_port, alive_port));
    let alive = sipp_spawn(
        server.dir(),
        "alive",
        "call_uas_answer.xml",
        server.udp,
        "u1",
        alive_port,
        &["-s", "far"],
    );
    thread::sleep(Duration::from_millis(300));
    let number = "030999999";
    let auth_uri = format!("{number}@{}", server.udp);
    let started = Instant::now();
    let res = sipp_spawn(
        server.dir(),
        "caller-100",
        "call_uac_basic.xml",
        server.udp,
        "u1",
        free_port(),
        &[
            "-s",
            number,
            "-key",
            "caller",
            "100",
            "-au",
            "100",
            "-ap",
            "secret100",
            "-auth_uri",
            &auth_uri,
        ],
    )
    .wait(HARD);
    let took = started.elapsed();
    let far = alive.wait(HARD);
    assert!(
        res.success() && far.success(),
        "{}\n{}\n{}",
        res.report(),
        far.report(),
        server.log_excerpt()
    );
    // The caller's scenario holds the answered call for 1 s; everything else (challenge, the
    // refused connection, the second trunk's answer) must fit in the second after it.
    assert!(
        took < Duration::from_millis(2500),
        "the call took {took:?}\n{}",
        server.log_excerpt()
    );
    eprintln!("call through the refused trunk to the next one took {took:?} (1 s of it held)");
    let why = explanation(&server);
    assert!(
        why.contains("TCP connection to 127.0.0.6"),
        "explanation: {why}"
    );
}
