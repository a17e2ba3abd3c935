//! Calls between extensions through the B2BUA, driven by sipp (Debian `sip-tester` 3.6.1).
//!
//! Each test: a server with extensions 100, 101, 102 (`common::call_config`); the callee 101
//! registers with `call_register.xml` from a chosen port P, then a callee scenario
//! (`call_uas_*.xml`) listens on the same port P in the background (sipp cannot receive a new
//! dialog in a uac scenario, hence the two steps); the caller 100 runs a `call_uac_*.xml` scenario
//! with digest credentials. Both sipp must exit 0. Scenarios live in tests/sipp/.
//!
//! What the scenarios check themselves: the 401 challenge before the call, the relay address
//! (c=IN IP4 127.0.0.1) in the SDP each side gets, the hold/resume directions, the CANCEL and
//! 487 sequence. What this file checks on top: the callee's dialog has a Call-ID other than the
//! caller's (B2BUA, not a proxy) and the SDP ports each side got lie in `[media] rtp_ports`.
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    api_get, call_config, caller_args, free_port, require_program, rtp_port_range, sipp_call_ids,
    sipp_logged_numbers, sipp_register, sipp_spawn, Server, SippProc, SippResult,
};

/// The scenarios run with `-timeout 30s` (90 s for the 20-call test); the harness kills them
/// after this.
const HARD: Duration = Duration::from_secs(100);

struct Call {
    server: Server,
    rtp: (u16, u16),
}

impl Call {
    fn start(calls_extra: &str) -> Call {
        require_program("sipp", "sip-tester");
        let rtp = rtp_port_range();
        let server = Server::start(&call_config(calls_extra, rtp));
        Call { server, rtp }
    }

    fn remote(&self) -> SocketAddr {
        self.server.udp
    }

    /// Registers `ext` (password `secret<ext>`) with Contact sip:ext@127.0.0.1:port.
    fn register(&self, ext: &str, port: u16) {
        sipp_register(&self.server, ext, port);
    }

    /// Starts the callee scenario as `ext` on `port` (after [`Call::register`]).
    fn callee(&self, scenario: &str, ext: &str, port: u16, extra: &[&str]) -> SippProc {
        let mut args = vec!["-s", ext];
        args.extend_from_slice(extra);
        // Bound before the caller starts.
        sipp_spawn(
            self.server.dir(),
            &format!("callee-{ext}-{port}"),
            scenario,
            self.remote(),
            "u1",
            port,
            &args,
        )
        .listening()
    }

    /// Runs the caller scenario as 100 towards `callee` and waits for it.
    fn caller(&self, scenario: &str, callee: &str, pass: &str, extra: &[&str]) -> SippResult {
        self.spawn_caller(scenario, callee, pass, self.remote(), "u1", extra)
            .wait(HARD)
    }

    /// Starts extension 100 calling `callee` with `scenario` over `transport` ("u1"/"t1") to
    /// `remote`, in the background.
    fn spawn_caller(
        &self,
        scenario: &str,
        callee: &str,
        pass: &str,
        remote: SocketAddr,
        transport: &str,
        extra: &[&str],
    ) -> SippProc {
        let args = caller_args(callee, pass, remote);
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        sipp_spawn(
            self.server.dir(),
            "caller-100",
            scenario,
            remote,
            transport,
            free_port(),
            &args,
        )
    }

    /// Waits until the live API lists an answered call (up to 20 s; a loaded machine can take
    /// longer than any fixed pause to start sipp and set the call up).
    fn wait_answered(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, _, body) = api_get(&self.server, "/api/v1/live");
            let live: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let calls = live["calls"].as_array().cloned().unwrap_or_default();
            if calls.iter().any(|c| c["state"] == "answered") {
                return;
            }
            if std::time::Instant::now() > deadline {
                self.server.fail(&format!(
                    "no answered call in /api/v1/live within 20 s: {body}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn assert_ok(&self, what: &str, res: &SippResult, other: Option<&SippResult>) {
        if !res.success() {
            panic!(
                "{what}: sipp failed\n{}\n{}\n{}",
                res.report(),
                other
                    .map(|o| format!("=== the other side ===\n{}", o.report()))
                    .unwrap_or_default(),
                self.server.log_excerpt()
            );
        }
    }

    /// Both sides succeeded.
    fn assert_both(&self, caller: &SippResult, callee: &SippResult) {
        self.assert_ok("caller (100)", caller, Some(callee));
        self.assert_ok("callee (101)", callee, Some(caller));
    }

    /// The callee's dialog is pasarela's own: no Call-ID in common with the caller's dialog.
    fn assert_b2bua(&self, caller: &SippResult, callee: &SippResult) {
        let a = sipp_call_ids(&caller.messages);
        let b = sipp_call_ids(&callee.messages);
        assert!(
            !a.is_empty() && !b.is_empty(),
            "no Call-ID found in the sipp message logs (caller {a:?}, callee {b:?})\n{}\n{}",
            caller.report(),
            callee.report()
        );
        let common: Vec<&String> = a.iter().filter(|c| b.contains(c)).collect();
        assert!(
            common.is_empty(),
            "the callee saw the caller's Call-ID {common:?}: pasarela must be a B2BUA with its \
             own dialog towards the callee\n{}\n{}",
            caller.report(),
            callee.report()
        );
    }

    /// The ports logged by the scenarios under `key` lie in the configured RTP range.
    fn assert_relay_ports(&self, res: &SippResult, key: &str, expected_at_least: usize) {
        let ports = sipp_logged_numbers(res, key);
        assert!(
            ports.len() >= expected_at_least,
            "expected {expected_at_least} `{key}` lines in the scenario log, found {ports:?}\n{}",
            res.report()
        );
        let (lo, hi) = self.rtp;
        for p in ports {
            assert!(
                (lo as u32..=hi as u32).contains(&p),
                "`{key}`: the SDP names port {p}, outside [media] rtp_ports = \"{lo}-{hi}\" \
                 (media must be anchored on pasarela)\n{}",
                res.report()
            );
        }
    }
}

/// Registers 101 on a fresh port, starts `uas` there, runs `uac` as 100 and asserts that both
/// succeed. Returns (caller, callee) results.
fn call_flow(call: &Call, uac: &str, uas: &str) -> (SippResult, SippResult) {
    let port = free_port();
    call.register("101", port);
    let callee = call.callee(uas, "101", port, &[]);
    let caller = call.caller(uac, "101", "secret100", &[]);
    let callee = callee.wait(HARD);
    call.assert_both(&caller, &callee);
    (caller, callee)
}

#[test]
fn basic_call_callee_sees_own_dialog_and_relay() {
    let mut call = Call::start("");
    let (caller, callee) = call_flow(&call, "call_uac_basic.xml", "call_uas_answer.xml");
    call.assert_b2bua(&caller, &callee);
    call.assert_relay_ports(&caller, "relay_port_to_caller", 1);
    call.assert_relay_ports(&callee, "relay_port_to_callee", 1);
    call.server.assert_alive();
}

#[test]
fn callee_hangs_up() {
    let mut call = Call::start("");
    let (caller, callee) = call_flow(&call, "call_uac_bye_from_callee.xml", "call_uas_hangup.xml");
    call.assert_b2bua(&caller, &callee);
    call.server.assert_alive();
}

#[test]
fn caller_cancels_while_ringing() {
    let mut call = Call::start("");
    call_flow(&call, "call_uac_cancel.xml", "call_uas_ring_forever.xml");
    call.server.assert_alive();
}

#[test]
fn callee_busy() {
    let mut call = Call::start("");
    call_flow(&call, "call_uac_busy.xml", "call_uas_busy.xml");
    call.server.assert_alive();
}

#[test]
fn nobody_answers_within_no_answer_secs() {
    let mut call = Call::start("no_answer_secs = 3");
    let started = std::time::Instant::now();
    call_flow(&call, "call_uac_noanswer.xml", "call_uas_ring_forever.xml");
    // Registration + a 3 s ring; the scenario itself fails if no final answer comes within 8 s.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the call ended after {:?}, before no_answer_secs = 3",
        started.elapsed()
    );
    call.server.assert_alive();
}

#[test]
fn hold_and_resume_both_legs() {
    let mut call = Call::start("");
    let (caller, callee) = call_flow(&call, "call_uac_hold.xml", "call_uas_hold.xml");
    call.assert_b2bua(&caller, &callee);
    call.server.assert_alive();
}

#[test]
fn offerless_invite() {
    let mut call = Call::start("");
    let (caller, callee) = call_flow(&call, "call_uac_offerless.xml", "call_uas_offerless.xml");
    call.assert_b2bua(&caller, &callee);
    // pasarela's offer in the 200 to the caller points at the relay.
    call.assert_relay_ports(&caller, "relay_port_to_caller", 1);
    call.server.assert_alive();
}

#[test]
fn wrong_password_is_refused_and_no_call_reaches_the_callee() {
    let mut call = Call::start("");
    let port = free_port();
    call.register("101", port);
    // A callee that would answer: it must not receive anything.
    let callee = call.callee("call_uas_answer.xml", "101", port, &[]);
    let caller = call.caller("call_uac_noauth.xml", "101", "wrong", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let callee = callee.kill();
    call.assert_ok("caller with a wrong password", &caller, Some(&callee));
    let seen = std::fs::read_to_string(&callee.messages).unwrap_or_default();
    assert!(
        !seen.contains("INVITE sip:"),
        "the callee received an INVITE although the caller's credentials were wrong\n{}",
        callee.report()
    );
    call.server.assert_alive();
}

#[test]
fn unknown_extension_404() {
    let mut call = Call::start("");
    let caller = call.caller("call_uac_unknown.xml", "199", "secret100", &[]);
    call.assert_ok("call to unknown extension 199", &caller, None);
    call.server.assert_alive();
}

#[test]
fn unregistered_extension_480() {
    let mut call = Call::start("");
    // 102 exists in the configuration but never registered.
    let caller = call.caller("call_uac_unregistered.xml", "102", "secret100", &[]);
    call.assert_ok("call to unregistered extension 102", &caller, None);
    call.server.assert_alive();
}

/// Twenty sequential calls through one server: all succeed. The RTP range has 40 ports; a call
/// that kept its relay ports (two legs, RTP + RTCP) after its end would exhaust the range after
/// about ten calls, so this also shows that ports are released.
#[test]
fn calls_do_not_leak() {
    // Twenty calls in well under a minute: above the default fraud limit of 10 calls per
    // minute per extension, so this server gets a higher one (a `[limits]` table after the
    // `[calls]` lines of the template).
    let mut call = Call::start("\n[limits]\ncalls_per_minute = 30");
    let port = free_port();
    call.register("101", port);
    let callee = call.callee(
        "call_uas_answer.xml",
        "101",
        port,
        &["-m", "20", "-timeout", "90s"],
    );
    let caller = call.caller(
        "call_uac_basic.xml",
        "101",
        "secret100",
        &["-m", "20", "-l", "1", "-timeout", "90s"],
    );
    let callee = callee.wait(Duration::from_secs(30));
    call.assert_both(&caller, &callee);
    let ports = sipp_logged_numbers(&caller, "relay_port_to_caller");
    assert_eq!(
        ports.len(),
        20,
        "expected 20 answered calls in the caller's log\n{}",
        caller.report()
    );
    call.assert_relay_ports(&caller, "relay_port_to_caller", 20);
    call.server.assert_alive();
}

#[test]
fn silent_call_is_hung_up_after_rtp_timeout() {
    // Neither sipp sends RTP: after rtp_timeout_secs both legs get a BYE from pasarela.
    let mut call = Call::start("rtp_timeout_secs = 2");
    let started = std::time::Instant::now();
    let (caller, callee) = call_flow(&call, "call_uac_bye_from_callee.xml", "call_uas_answer.xml");
    call.assert_b2bua(&caller, &callee);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the call ended after {:?}, before rtp_timeout_secs = 2",
        started.elapsed()
    );
    call.server.assert_alive();
}

#[test]
fn call_is_ended_at_max_duration() {
    let mut call = Call::start("max_duration_secs = 2");
    let started = std::time::Instant::now();
    let (caller, callee) = call_flow(&call, "call_uac_bye_from_callee.xml", "call_uas_answer.xml");
    call.assert_b2bua(&caller, &callee);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the call ended after {:?}, before max_duration_secs = 2",
        started.elapsed()
    );
    call.server.assert_alive();
}

#[test]
fn sip_info_dtmf_becomes_rfc4733_events() {
    // The callee offers telephone-event; a SIP INFO digit from the caller must reach the
    // callee's RTP address as RFC 4733 event packets (payload type 101, event 5).
    let call = Call::start("");
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind rtp listener");
    rtp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let rtp_port = rtp.local_addr().expect("addr").port().to_string();
    let port = free_port();
    call.register("101", port);
    let callee = call.callee(
        "call_uas_dtmf.xml",
        "101",
        port,
        &["-set", "dtmf_port", &rtp_port],
    );
    let caller = call.caller("call_uac_dtmf_info.xml", "101", "secret100", &[]);
    let callee = callee.wait(HARD);
    call.assert_both(&caller, &callee);
    let mut events = Vec::new();
    let mut buf = [0u8; 1500];
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if let Ok(n) = rtp.recv(&mut buf) {
            if n >= 16 && buf[0] >> 6 == 2 && buf[1] & 0x7f == 101 {
                events.push(buf[12]);
            }
        }
    }
    assert!(
        events.contains(&5),
        "no RFC 4733 event for digit 5 reached the callee's RTP port (events seen: {events:?})"
    );
}

#[test]
fn phone_behind_nat_is_called_at_its_source_address() {
    // The callee's Contact names an address the REGISTER did not come from (its private side,
    // here 127.0.0.9:5999, where nothing listens); its INVITE must go to the REGISTER's source.
    let call = Call::start("");
    let port = free_port();
    let pass = "secret101";
    let reg = sipp_spawn(
        call.server.dir(),
        &format!("register-nat-{port}"),
        "call_register_nat.xml",
        call.remote(),
        "u1",
        port,
        &[
            "-s",
            "101",
            "-au",
            "101",
            "-ap",
            pass,
            "-timeout",
            "10s",
            "-set",
            "nat_contact",
            "127.0.0.9:5999",
        ],
    )
    .wait(Duration::from_secs(15));
    call.assert_ok("registration from behind NAT", &reg, None);
    let callee = call.callee("call_uas_answer.xml", "101", port, &[]);
    let caller = call.caller("call_uac_basic.xml", "101", "secret100", &[]);
    let callee = callee.wait(HARD);
    call.assert_both(&caller, &callee);
}

#[test]
fn rfc4733_events_reach_a_callee_without_them_as_sip_info() {
    // The callee offers no telephone-event: a digit the caller sends as RFC 4733 events to the
    // relay must reach the callee as SIP INFO (application/dtmf-relay).
    let call = Call::start("");
    let port = free_port();
    call.register("101", port);
    let callee = call.callee("call_uas_info.xml", "101", port, &[]);
    let caller = call.spawn_caller(
        "call_uac_events.xml",
        "101",
        "secret100",
        call.remote(),
        "u1",
        &[],
    );
    // Wait for the caller's log to name the relay port it was given.
    let log = call.server.dir().to_path_buf();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut relay_port = None;
    while relay_port.is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        for entry in std::fs::read_dir(&log).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.contains("call_uac_events")
                && name.ends_with(".log")
                && !name.contains("errors")
                && !name.contains("messages")
            {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                relay_port = text
                    .lines()
                    .find_map(|l| l.split("relay_port_to_caller ").nth(1))
                    .and_then(|p| p.trim().parse::<u16>().ok());
            }
        }
    }
    let relay_port = relay_port.expect("the caller logged the relay port of its answer");
    // One telephone-event for digit 5: three packets, the last with the end bit (RFC 4733).
    let phone = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for (i, end) in [(0u16, false), (1, false), (2, true)] {
        let mut pkt = vec![0x80, 101, 0, 0, 0, 0, 0x03, 0x20, 0x12, 0x34, 0x56, 0x78];
        pkt[1] |= if i == 0 { 0x80 } else { 0 };
        pkt[2..4].copy_from_slice(&(100 + i).to_be_bytes());
        let duration: u16 = 160 * (i + 1);
        pkt.extend_from_slice(&[
            5,
            if end { 0x80 | 10 } else { 10 },
            (duration >> 8) as u8,
            duration as u8,
        ]);
        phone
            .send_to(&pkt, ("127.0.0.1", relay_port))
            .expect("send event");
        std::thread::sleep(Duration::from_millis(20));
    }
    let caller = caller.wait(HARD);
    let callee = callee.wait(HARD);
    call.assert_both(&caller, &callee);
}

#[test]
fn caller_over_tcp_reaches_callee_over_udp() {
    // The caller's leg runs over TCP (its connection carries every response and the BYE),
    // the callee's over UDP.
    let call = Call::start("");
    let port = free_port();
    call.register("101", port);
    let callee = call.callee("call_uas_answer.xml", "101", port, &[]);
    let caller = call
        .spawn_caller(
            "call_uac_basic.xml",
            "101",
            "secret100",
            call.server.tcp,
            "t1",
            &[],
        )
        .wait(HARD);
    let callee = callee.wait(HARD);
    call.assert_both(&caller, &callee);
}

#[test]
fn stopping_the_server_hangs_up_its_calls() {
    let mut call = Call::start("");
    let port = free_port();
    call.register("101", port);
    let callee = call.callee("call_uas_answer.xml", "101", port, &[]);
    let caller = call.spawn_caller(
        "call_uac_bye_from_callee.xml",
        "101",
        "secret100",
        call.remote(),
        "u1",
        &[],
    );
    // Once the call is answered, the admin stops the service.
    call.wait_answered();
    let status = call.server.stop();
    let caller = caller.wait(HARD);
    let callee = callee.wait(HARD);
    call.assert_both(&caller, &callee);
    assert!(
        status.is_some_and(|s| s.success()),
        "serve exits 0 after ending its calls: {status:?}"
    );
}

#[test]
fn a_call_hung_up_from_the_dashboard_ends_both_legs() {
    use common::web_client::{csrf_of, redirect_to, set_up_admin};
    let call = Call::start("");
    let port = free_port();
    call.register("101", port);
    let callee = call.callee("call_uas_answer.xml", "101", port, &[]);
    let caller = call.spawn_caller(
        "call_uac_bye_from_callee.xml",
        "101",
        "secret100",
        call.remote(),
        "u1",
        &[],
    );
    let mut admin = set_up_admin(call.server.web.expect("web address"));
    // Wait until the live page lists the answered call with its hang-up button.
    let marker = "name=\"call\" value=\"";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (page, id) = loop {
        let page = admin.get("/live").body;
        if let Some(at) = page.find(marker) {
            let rest = &page[at + marker.len()..];
            let id = rest[..rest.find('"').unwrap()].to_owned();
            if page.contains("state-answered") {
                break (page, id);
            }
        }
        assert!(std::time::Instant::now() < deadline, "no live call: {page}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let csrf = csrf_of(&page);
    let r = admin.post(
        "/live/hangup",
        &[("call", id.as_str()), ("csrf", csrf.as_str())],
    );
    assert_eq!(redirect_to(&r), "/live");
    // Both sipp scenarios end successfully only when each got its BYE.
    let caller = caller.wait(HARD);
    let callee = callee.wait(HARD);
    call.assert_both(&caller, &callee);
    // The call is gone; hanging it up again says so.
    let again = admin.post(
        "/live/hangup",
        &[("call", id.as_str()), ("csrf", csrf.as_str())],
    );
    assert_eq!(again.status, 422, "{}", again.body);
}
