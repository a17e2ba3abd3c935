//! A trunk that cannot be reached (issue 15, item 6) — its TCP port refuses connections, its UDP
//! port is closed (the ICMP port unreachable), or its TLS server's certificate is refused in the
//! handshake: the failure reaches the transaction layer as a transport error, the INVITE's
//! transaction fails at once (as a 503 with the reason), and the call goes out on the next trunk
//! within a second instead of after the stage's silence limit or Timer B.
mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;

const HARD: Duration = Duration::from_secs(60);

/// `dead` (`dead_uri`, where nothing answers) before `alive` (sipp over UDP on
/// 127.0.0.1:`alive_port`). The stage silence limit is 20 s, so only the transport error can
/// move the call on quickly.
fn office(dead_uri: &str, alive_port: u16) -> String {
    let config = call_config(
        &format!(
            r#"failover_ms = 20000

[numbering]
country_code = "49"
area_code = "30"

[[trunk]]
name = "dead"
uri = "{dead_uri}"
number_format = "national"

[[trunk]]
name = "alive"
uri = "sip:127.0.0.1:{alive_port}"
number_format = "national"
"#
        ),
        rtp_port_range(),
    );
    if !dead_uri.contains("transport=tls") {
        return config;
    }
    // Calling out over TLS needs a TLS socket of pasarela's own.
    let with_tls = config.replace(
        r#"listen = ["udp:{UDP}", "tcp:{TCP}"]"#,
        &format!(
            r#"listen = ["udp:{{UDP}}", "tcp:{{TCP}}", "tls:127.0.0.1:{}"]"#,
            free_port()
        ),
    );
    assert_ne!(config, with_tls, "the call config template changed");
    with_tls
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

/// Calls out through `dead_uri` then the answering `alive` trunk; checks the call is answered
/// within a second of the caller's first INVITE (sipp's own measure, `-trace_rtt`: the
/// challenge, the dead hop and the second trunk's answer) and the record explains the dead hop
/// with `why_dead`.
fn fails_over_within_a_second(dead_uri: &str, why_dead: &str) {
    let alive_port = free_port();
    let server = Server::start(&office(dead_uri, alive_port));
    let alive = sipp_spawn(
        server.dir(),
        "alive",
        "call_uas_answer.xml",
        server.udp,
        "u1",
        alive_port,
        &["-s", "far"],
    )
    .listening();
    let number = "030999999";
    let started = Instant::now();
    let res = sipp_dial_100(
        &server,
        "caller-100",
        "call_uac_basic.xml",
        number,
        server.udp,
        "u1",
        &["-trace_rtt", "-rtt_freq", "1"],
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
    // Timed by sipp from its first INVITE to the 200, not by this process around sipp's start
    // and exit (which on a loaded machine took most of the margin), nor over the 1 s the
    // scenario holds the call.
    let answer_ms = sipp_rtt_ms(server.dir(), "call_uac_basic.xml");
    assert_eq!(answer_ms.len(), 1, "one answer time: {answer_ms:?}");
    assert!(
        answer_ms[0] < 1000.0,
        "the call was answered {} ms after its INVITE\n{}",
        answer_ms[0],
        server.log_excerpt()
    );
    eprintln!(
        "call through {dead_uri} to the next trunk answered in {} ms; the caller ran {took:?} \
         (1 s of it held)",
        answer_ms[0]
    );
    let why = explanation(&server);
    assert!(why.contains(why_dead), "explanation: {why}");
}

#[test]
fn a_refused_tcp_trunk_fails_over_to_the_next_within_a_second() {
    let dead_port = free_port();
    fails_over_within_a_second(
        &format!("sip:127.0.0.6:{dead_port};transport=tcp"),
        "TCP connection to 127.0.0.6",
    );
}

#[test]
fn a_udp_trunk_whose_port_is_closed_fails_over_within_a_second() {
    // Nothing listens on the port: the kernel answers the INVITE with an ICMP port
    // unreachable, which the socket's error queue hands to the transaction layer.
    let dead_port = free_port();
    fails_over_within_a_second(
        &format!("sip:127.0.0.6:{dead_port}"),
        &format!("UDP to 127.0.0.6:{dead_port} unreachable"),
    );
}

#[test]
fn a_tls_trunk_whose_handshake_fails_fails_over_within_a_second() {
    // A TLS server whose certificate nobody trusts: the handshake fails.
    let certs = tempfile::tempdir().unwrap();
    let cert = tls_peer::untrusted(certs.path(), "127.0.0.6");
    let dead_port = free_port();
    let _dead = tls_peer::Socat::start_on("127.0.0.6", dead_port, &cert);
    fails_over_within_a_second(
        &format!("sip:127.0.0.6:{dead_port};transport=tls"),
        "TLS certificate of 127.0.0.6 rejected",
    );
}
