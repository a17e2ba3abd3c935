//! OPTIONS qualify of SIP trunks (issue 14, item 2): a trunk whose provider (sipp on 127.0.0.5)
//! stops answering OPTIONS goes down, the router skips it — the call goes out on the next trunk
//! and its record's explanation says why — and it comes back up once the provider answers again.
mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

const HARD: Duration = Duration::from_secs(60);

/// Two trunks: `first` (127.0.0.5:`first_port`, qualified every second) before `second`
/// (127.0.0.1:`second_port`, not qualified).
fn office(first_port: u16, second_port: u16) -> String {
    call_config(
        &format!(
            r#"failover_ms = 1500

[numbering]
country_code = "49"
area_code = "30"

[[trunk]]
name = "first"
uri = "sip:127.0.0.5:{first_port}"
number_format = "national"
qualify = 1

[[trunk]]
name = "second"
uri = "sip:127.0.0.1:{second_port}"
number_format = "national"
"#
        ),
        rtp_port_range(),
    )
}

fn wait_metric(server: &Server, sample: &str, want: f64, within: Duration) -> Option<f64> {
    let web = server.web.expect("web");
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = metric_sample(&http_get(web, "/metrics").2, sample);
        if last == Some(want) {
            return last;
        }
        thread::sleep(Duration::from_millis(100));
    }
    last
}

/// The explanation of the `n`th call record (1: the first), waiting for it.
fn explanation(server: &Server, n: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: Option<String> = rusqlite::Connection::open(&server.db).ok().and_then(|c| {
            c.query_row(
                "SELECT explanation FROM call_records ORDER BY id LIMIT 1 OFFSET ?1",
                [n - 1],
                |r| r.get(0),
            )
            .ok()
        });
        if let Some(text) = got {
            return text;
        }
        if Instant::now() > deadline {
            panic!("no call record {n}\n{}", server.log_excerpt());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn call(server: &Server, number: &str) -> SippResult {
    sipp_dial_100(
        server,
        "caller-100",
        "call_uac_basic.xml",
        number,
        server.udp,
        "u1",
        &[],
    )
    .wait(HARD)
}

#[test]
fn a_silent_trunk_is_skipped_until_it_answers_again() {
    let first_port = free_port();
    let second_port = free_port();
    let up = "pasarela_trunk_up{trunk=\"first\"}";
    // The provider answers two probes, then falls silent (sipp exits).
    let dir = TestDir::new("provider");
    let responder = sipp_spawn_on(
        dir.path(),
        "first",
        "options_uas.xml",
        "127.0.0.1:9".parse().unwrap(),
        "u1",
        "127.0.0.5",
        first_port,
        &["-m", "2"],
    )
    .listening();
    let mut server = Server::start(&office(first_port, second_port));
    assert_eq!(
        wait_metric(&server, up, 1.0, Duration::from_secs(5)),
        Some(1.0),
        "{}",
        server.log_excerpt()
    );
    let res = responder.wait(Duration::from_secs(10));
    assert!(res.success(), "{}", res.report());
    assert_eq!(
        wait_metric(&server, up, 0.0, Duration::from_secs(5)),
        Some(0.0),
        "{}",
        server.log_excerpt()
    );

    // Down: the call goes out on `second`, and the explanation says why `first` was not tried.
    let second = sipp_spawn(
        server.dir(),
        "second",
        "call_uas_answer.xml",
        server.udp,
        "u1",
        second_port,
        &["-s", "far"],
    )
    .listening();
    let res = call(&server, "030999999");
    let far = second.wait(HARD);
    assert!(
        res.success() && far.success(),
        "{}\n{}\n{}",
        res.report(),
        far.report(),
        server.log_excerpt()
    );
    let why = explanation(&server, 1);
    assert!(
        why.contains("trunk first skipped: down since"),
        "explanation: {why}"
    );
    assert!(
        !why.contains("decision 1: trunk first"),
        "explanation: {why}"
    );

    // The provider answers again: up, and the router offers `first` again.
    let back = sipp_spawn_on(
        dir.path(),
        "first-again",
        "options_uas.xml",
        "127.0.0.1:9".parse().unwrap(),
        "u1",
        "127.0.0.5",
        first_port,
        &["-m", "1000"],
    )
    .listening();
    assert_eq!(
        wait_metric(&server, up, 1.0, Duration::from_secs(5)),
        Some(1.0),
        "{}",
        server.log_excerpt()
    );
    // Whatever becomes of the call (the responder only knows OPTIONS), `first` is tried.
    let _ = call(&server, "030999998");
    let why = explanation(&server, 2);
    assert!(!why.contains("skipped"), "explanation: {why}");
    assert!(
        why.contains("decision 1: trunk first"),
        "explanation: {why}"
    );
    drop(back);
    server.assert_alive();
}
