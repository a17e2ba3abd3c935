//! Call pickup against sipp phones: 100 calls 101 (a sipp phone that rings and never answers);
//! 102 dials `**101` and gets the call — 101 is cancelled with `Reason: SIP;cause=200;
//! text="Call completed elsewhere"` and the record via `/api/v1/records` shows 102 answering by
//! pickup; then 102's busy lamp key, subscribed to 101's dialog state, takes the Call-ID and
//! tags of the early dialog from the NOTIFY and picks the call up with INVITE + Replaces.
mod common;

use std::time::{Duration, Instant};

use common::{
    assert_sipp_ok, call_config, free_port, rtp_port_range, sipp_callee_101, sipp_caller_100,
    sipp_spawn, Server, SippProc,
};

const HARD: Duration = Duration::from_secs(60);

/// The message log of the sipp process started with `tag`, once it holds `needle`.
fn log_with(server: &Server, p: &SippProc, tag: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = std::fs::read_dir(server.dir())
            .expect("test dir")
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&format!("sipp-{tag}-")) && n.ends_with(".messages.log")
            })
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .find(|text| text.contains(needle));
        if let Some(text) = found {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{}: `{needle}` not seen\n{}",
            p.name,
            server.log_excerpt()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 101 rings (registered sipp phone that never answers) for a call from 100: both running.
fn ringing_call(server: &Server) -> (SippProc, SippProc) {
    let ringing = sipp_callee_101(server, "ringing-101", "pickup_uas_ringing.xml", &[]);
    let caller = sipp_caller_100(
        server,
        "caller",
        "call_uac_basic.xml",
        server.udp,
        "u1",
        &[],
    );
    // 101 rings once its phone has sent 180.
    log_with(server, &ringing, "ringing-101", "SIP/2.0 180 Ringing");
    (ringing, caller)
}

/// 102 picks up by dialling `dialled` with the header line `extra`.
fn pick_up(server: &Server, dialled: &str, extra: &str) -> SippProc {
    let auth_uri = format!("{dialled}@{}", server.udp);
    sipp_spawn(
        server.dir(),
        "picker",
        "pickup_uac.xml",
        server.udp,
        "u1",
        free_port(),
        &[
            "-s",
            dialled,
            "-key",
            "picker",
            "102",
            "-key",
            "extra",
            extra,
            "-au",
            "102",
            "-ap",
            "secret102",
            "-auth_uri",
            &auth_uri,
        ],
    )
}

/// The `/api/v1/records` body once it holds a record answered by pickup `how`.
fn pickup_record(server: &Server, how: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (st, _, body) = common::api_get(server, "/api/v1/records");
        if st == 200 && body.contains(&format!("\"route_source\":\"pickup {how}\"")) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no record of a pickup by {how}: {st} {body}\n{}",
            server.log_excerpt()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pickup_code_takes_a_ringing_call() {
    let mut server = Server::start(&call_config("", rtp_port_range()));
    let (ringing, caller) = ringing_call(&server);
    let picker = pick_up(&server, "**101", "X-Test: directed pickup").wait(HARD);
    assert_sipp_ok(&server, "picker", &picker);
    assert_sipp_ok(&server, "caller", &caller.wait(HARD));
    let ringing = ringing.wait(HARD);
    assert_sipp_ok(&server, "101 (cancelled, Reason checked)", &ringing);
    let body = pickup_record(&server, "**101");
    assert!(body.contains("\"caller\":\"100\""), "{body}");
    assert!(body.contains("\"callee\":\"101\""), "{body}");
    assert!(body.contains("\"route_target\":\"102\""), "{body}");
    server.assert_alive();
}

#[test]
fn busy_lamp_key_picks_up_with_replaces() {
    let mut server = Server::start(&call_config("", rtp_port_range()));
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
            "102",
            "-au",
            "102",
            "-ap",
            "secret102",
            "-auth_uri",
            &format!("101@{}", server.udp),
        ],
    );
    log_with(&server, &watcher, "watcher", "NOTIFY sip:102@");
    let (ringing, caller) = ringing_call(&server);
    // What a desk phone reads from the early dialog in the NOTIFY (RFC 4235).
    let log = log_with(&server, &watcher, "watcher", "<state>early</state>");
    let early = log
        .split("<dialog ")
        .find(|d| d.contains("<state>early</state>"))
        .expect("an early dialog");
    let attr = |name: &str| {
        early
            .split(&format!(" {name}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_else(|| panic!("no {name} in {early}"))
            .to_owned()
    };
    let (call_id, local, remote) = (attr("call-id"), attr("local-tag"), attr("remote-tag"));
    assert!(early.contains("direction=\"recipient\""), "{early}");
    assert!(early.contains("sip:100@office.test"), "{early}");
    let replaces = format!("Replaces: {call_id};to-tag={local};from-tag={remote}");
    let picker = pick_up(&server, "101", &replaces).wait(HARD);
    assert_sipp_ok(&server, "picker (Replaces)", &picker);
    assert_sipp_ok(&server, "caller", &caller.wait(HARD));
    assert_sipp_ok(&server, "101 (cancelled)", &ringing.wait(HARD));
    assert_sipp_ok(&server, "watcher", &watcher.wait(HARD));
    let body = pickup_record(&server, "Replaces");
    assert!(body.contains("\"route_target\":\"102\""), "{body}");
    server.assert_alive();
}
