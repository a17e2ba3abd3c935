//! Calls through a GSM modem line end to end (issue 6): a real `pasarela serve` with one
//! `[[modem]]` whose ports are the pseudo-terminals of the Huawei simulator running in this test
//! process, and real baresip phones. Outgoing calls to numbers with no SIP route go out on the
//! modem (tones both ways, hang-up from either side, busy, no answer, the call record); calls
//! ringing on the modem ring the line's extension with the caller in E.164; a modem that stops
//! answering mid-call ends the call cleanly and serves the next one after its reset;
//! `pasarela modem status` reads the modem.
mod common;
mod modem_gateway;
mod modem_sim;
mod phone;

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::sockets::relay_sockets;
use modem_gateway::{phone, start, start_with, Setup, ICCID, IMEI, SETUP};
use modem_sim::{tone_share, DialBehaviour, Sim};
use phone::{assert_tone, json_str};

/// The `[media] rtp_ports` range the gateway was started with (from its configuration file).
fn rtp_ports(server: &common::Server) -> (u16, u16) {
    let cfg = std::fs::read_to_string(server.dir().join("pasarela.toml")).expect("config");
    cfg.lines()
        .find_map(|l| {
            let v = l.trim().strip_prefix("rtp_ports")?.trim_start();
            let (lo, hi) = v
                .strip_prefix('=')?
                .trim()
                .trim_matches('"')
                .split_once('-')?;
            Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
        })
        .expect("rtp_ports in the configuration")
}

/// id, route_kind, route_target, sip_status, q850_cause, duration_s, direction, caller_e164.
type Record = (i64, String, String, i64, i64, i64, String, String);

/// The last call record's (route_kind, route_target, sip_status, q850_cause, duration_s,
/// direction, caller_e164), waiting up to 5 s for it.
fn last_record(db: &Path, min_id: i64) -> Option<Record> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(conn) = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            let _ = conn.busy_timeout(Duration::from_secs(2));
            let row = conn.query_row(
                "SELECT id, route_kind, COALESCE(route_target, ''), sip_status, q850_cause, \
                 duration_s, direction, COALESCE(caller_e164, '') FROM call_records \
                 WHERE id > ?1 AND end_reason IS NOT 'in progress' \
                 ORDER BY id DESC LIMIT 1",
                [min_id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    ))
                },
            );
            if let Ok(r) = row {
                return Some(r);
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    None
}

/// 100 dials a national number; the modem answers; 1000 Hz from the modem reaches the phone,
/// 440 Hz from the phone reaches the modem; the phone hangs up (its file ends) and the modem
/// hangs up; the record says pstn / gsm1 with the talk time and cause 16.
#[test]
fn outgoing_call_through_the_modem_both_ways() {
    let Setup { server, sim } = start("modem-out");
    sim.with(|s| s.tone_hz = 1000.0);
    sim.set_dial(DialBehaviour::Answer(Duration::from_millis(300)));
    let mut a = phone(&server, "100", "100", "manual", 440.0, 4.0);
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    a.expect_event("CALL_ESTABLISHED", SETUP, &[], &server);
    // The relay holds three sockets: RTP and RTCP towards the phone (baresip does not
    // multiplex RTCP), RTP only towards the line, whose answer multiplexes it.
    let range = rtp_ports(&server);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut held = relay_sockets(server.pid(), range);
    while held != 3 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        held = relay_sockets(server.pid(), range);
    }
    assert_eq!(held, 3, "relay sockets in {range:?} during the call");
    a.expect_event("CALL_CLOSED", Duration::from_secs(15), &[], &server);
    thread::sleep(Duration::from_millis(500));
    assert!(
        sim.saw("ATD+493012345678;"),
        "the modem dialled {:?}",
        sim.commands()
    );
    let logs = format!("{}{}", a.report(), server.log_excerpt());
    assert_tone(&a.received_wav(), 1000.0, "the phone received", &logs);
    let recorded = sim.with(|s| s.recorded.clone());
    let share = tone_share(&recorded, 440.0);
    assert!(
        share > 0.5,
        "the modem received {} samples, 440 Hz share {share:.2}\n{logs}",
        recorded.len()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(sim.saw("ATH") || sim.saw("AT+CHUP")) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        sim.saw("ATH") || sim.saw("AT+CHUP"),
        "the modem was not hung up: {:?}",
        sim.commands()
    );
    let rec = last_record(&server.db, 0).unwrap_or_else(|| panic!("no call record\n{logs}"));
    assert_eq!(
        (rec.1.as_str(), rec.2.as_str()),
        ("pstn", "gsm1"),
        "{rec:?}"
    );
    assert_eq!((rec.3, rec.4), (200, 16), "{rec:?}");
    assert!(rec.5 >= 2, "duration {rec:?}");
    assert_eq!(rec.6, "outgoing", "{rec:?}");
}

/// The callee hangs up on the PSTN side: the phone gets a BYE.
#[test]
fn the_pstn_side_hangs_up() {
    let Setup { server, sim } = start("modem-remote-bye");
    let mut a = phone(&server, "100", "100", "manual", 440.0, 30.0);
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    a.expect_event("CALL_ESTABLISHED", SETUP, &[], &server);
    thread::sleep(Duration::from_secs(1));
    sim.remote_hangup();
    let closed = a.expect_event("CALL_CLOSED", Duration::from_secs(10), &[], &server);
    assert!(!closed.is_empty());
    let rec = last_record(&server.db, 0).expect("record");
    assert_eq!(
        (rec.1.as_str(), rec.2.as_str(), rec.3),
        ("pstn", "gsm1", 200),
        "{rec:?}"
    );
}

/// Busy gives 486 at the phone, no answer 480; both recorded with their Q.850 causes.
#[test]
fn busy_and_no_answer() {
    let Setup { server, sim } = start("modem-busy");
    let mut a = phone(&server, "100", "100", "manual", 440.0, 30.0);
    sim.set_dial(DialBehaviour::Busy);
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    let closed = a.expect_event("CALL_CLOSED", SETUP, &[], &server);
    assert!(
        closed.contains("486"),
        "busy: {closed}\n{}",
        server.log_excerpt()
    );
    let first = last_record(&server.db, 0).expect("record");
    assert_eq!(
        (first.1.as_str(), first.2.as_str(), first.3, first.4),
        ("pstn", "gsm1", 486, 17),
        "{first:?}"
    );
    thread::sleep(Duration::from_secs(1));

    sim.set_dial(DialBehaviour::NoAnswer(Duration::from_secs(2)));
    a.drain();
    let from = a.seen.len();
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    let (_, closed) = a.wait_event("CALL_CLOSED", from, SETUP).unwrap_or_else(|| {
        panic!(
            "no answer: no CALL_CLOSED\n{}{}",
            a.report(),
            server.log_excerpt()
        )
    });
    assert!(
        closed.contains("480"),
        "no answer: {closed}\n{}",
        server.log_excerpt()
    );
    let second = last_record(&server.db, first.0).expect("record");
    // The network's own cause (19, no answer), passed on by the line leg.
    assert_eq!(
        (second.3, second.1.as_str(), second.4),
        (480, "pstn", 19),
        "{second:?}"
    );
}

/// The modem rings with a national CLIP: extension 101 rings with the caller in E.164, answers
/// (auto), and audio flows both ways; the PSTN caller hangs up and the phone gets a BYE.
#[test]
fn incoming_call_rings_the_extension() {
    let Setup { server, sim } = start("modem-in");
    sim.with(|s| s.tone_hz = 1000.0);
    let mut b = phone(&server, "101", "101", "auto", 440.0, 30.0);
    sim.ring("01701234567", 129);
    // Auto-answer: baresip reports the call as established (with the caller) at once.
    let established = b.expect_event("CALL_ESTABLISHED", SETUP, &[], &server);
    let peer = json_str(&established, "peeruri").unwrap_or_default();
    assert!(
        peer.contains("+491701234567"),
        "caller shown as {peer:?}: {established}"
    );
    thread::sleep(Duration::from_secs(3));
    sim.remote_hangup();
    b.expect_event("CALL_CLOSED", Duration::from_secs(10), &[], &server);
    thread::sleep(Duration::from_millis(500));
    let logs = format!("{}{}", b.report(), server.log_excerpt());
    assert_tone(&b.received_wav(), 1000.0, "101 received", &logs);
    let recorded = sim.with(|s| s.recorded.clone());
    let share = tone_share(&recorded, 440.0);
    assert!(
        share > 0.5,
        "the modem received 440 Hz share {share:.2}\n{logs}"
    );
    let rec = last_record(&server.db, 0).expect("record");
    assert_eq!(
        (rec.1.as_str(), rec.2.as_str()),
        ("pstn", "gsm1"),
        "{rec:?}"
    );
    assert_eq!(rec.6, "incoming", "{rec:?}");
    assert_eq!(rec.7, "+491701234567", "{rec:?}");
}

/// A line whose `incoming` names a ring group with `strategy = "order"`: 100 rings first, and
/// when it has not answered within `member_timeout` 101 rings and answers, shown the caller in
/// E.164.
#[test]
fn an_incoming_call_rings_a_group_in_order() {
    let Setup { server, sim } = start_with("modem-group", |c| {
        c.replace("incoming = [\"101\"]", "incoming = [\"hunt\"]")
            + "\n[[ring_group]]\nname = \"hunt\"\nmembers = [\"100\", \"101\"]\n\
               strategy = \"order\"\nmember_timeout = 2\n"
    });
    let mut first = phone(&server, "100", "100", "manual", 440.0, 30.0);
    let mut second = phone(&server, "101", "101", "auto", 440.0, 30.0);
    sim.ring("01701234567", 129);
    first.expect_event("CALL_INCOMING", SETUP, &[], &server);
    assert!(
        !second.has_event("CALL_INCOMING"),
        "101 rang during 100's turn"
    );
    let established = second.expect_event(
        "CALL_ESTABLISHED",
        Duration::from_secs(6),
        &[&first],
        &server,
    );
    let peer = json_str(&established, "peeruri").unwrap_or_default();
    assert!(peer.contains("+491701234567"), "caller shown as {peer:?}");
    first.expect_event("CALL_CLOSED", Duration::from_secs(3), &[], &server);
    sim.remote_hangup();
    second.expect_event("CALL_CLOSED", Duration::from_secs(10), &[], &server);
    let rec = last_record(&server.db, 0).expect("record");
    assert_eq!(rec.6, "incoming", "{rec:?}");
    assert_eq!(rec.7, "+491701234567", "{rec:?}");
}

/// `/api/v1/live` lists the modem line with its state, operator and signal.
#[test]
fn the_live_api_shows_the_line() {
    use std::io::{Read, Write};
    let Setup { server, sim: _sim } = start("modem-live");
    let token = {
        let conn = rusqlite::Connection::open(&server.db).expect("db");
        pasarela::web::api_tokens::create(&conn, "test").expect("token")
    };
    let web = server.web.expect("web address");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = std::net::TcpStream::connect(web).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            stream,
            "GET /api/v1/live HTTP/1.1\r\nHost: {web}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        if body.contains("\"GSM modem\"") && body.contains("\"ready\"") {
            assert!(body.contains("\"gsm1\""), "{body}");
            assert!(body.contains("dBm"), "{body}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the live API does not show the modem line ready:\n{body}"
        );
        thread::sleep(Duration::from_millis(300));
    }
}

/// The PSTN caller gives up while the extension rings: the phone stops ringing (CANCEL) and
/// the record says incoming, not answered.
#[test]
fn incoming_caller_gives_up_while_ringing() {
    let Setup { server, sim } = start("modem-in-cancel");
    let mut b = phone(&server, "101", "101", "manual", 440.0, 30.0);
    sim.ring("+491701234567", 145);
    let incoming = b.expect_event("CALL_INCOMING", SETUP, &[], &server);
    assert!(incoming.contains("+491701234567"), "{incoming}");
    thread::sleep(Duration::from_millis(500));
    sim.remote_hangup();
    b.expect_event("CALL_CLOSED", Duration::from_secs(10), &[], &server);
    let rec = last_record(&server.db, 0).expect("record");
    assert_eq!(
        (rec.1.as_str(), rec.2.as_str()),
        ("pstn", "gsm1"),
        "{rec:?}"
    );
    assert_eq!(rec.6, "incoming", "{rec:?}");
    assert_ne!(rec.3, 200, "{rec:?}");
}

/// The modem stops answering mid-call: the phone gets a BYE, the line is reset and the next
/// call goes through without a restart.
#[test]
fn a_silent_modem_ends_the_call_and_recovers() {
    let Setup { mut server, sim } = start("modem-fault");
    let mut a = phone(&server, "100", "100", "manual", 440.0, 60.0);
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    a.expect_event("CALL_ESTABLISHED", SETUP, &[], &server);
    thread::sleep(Duration::from_secs(1));
    sim.set_silent(true);
    a.expect_event("CALL_CLOSED", Duration::from_secs(20), &[], &server);
    sim.set_silent(false);
    let first = last_record(&server.db, 0).expect("record");
    // 41 (temporary failure): the modem was lost, as the line reported.
    assert_eq!(
        (first.1.as_str(), first.2.as_str(), first.4),
        ("pstn", "gsm1", 41),
        "{first:?}"
    );
    let logs = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    assert!(logs.contains("PSTN side ended"), "cause not logged");
    // The reset (AT+CFUN=1,1) and the init again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sim.with(|s| s.reboots) == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    // In service again once a health probe follows the new init.
    let since = sim.commands().len();
    while !sim.commands()[since..].iter().any(|c| c == "AT+CSQ") && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(Duration::from_millis(500));
    a.drain();
    let from = a.seen.len();
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    a.wait_event("CALL_ESTABLISHED", from, Duration::from_secs(30))
        .unwrap_or_else(|| {
            panic!(
                "the second call failed\n{}{}",
                a.report(),
                server.log_excerpt()
            )
        });
    server.assert_alive();
}

/// `pasarela modem status` opens the modem and prints its identity, operator and signal.
#[test]
fn modem_status_reads_the_modem() {
    let dir = common::TestDir::new("modem-status");
    let sim = Sim::start(dir.path(), "gsm1", IMEI, ICCID);
    let cfg = dir.path().join("pasarela.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\npath = \"{}\"\n\n[[modem]]\nname = \"gsm1\"\ndata_port = \"{}\"\naudio_port = \"{}\"\n",
            dir.path().join("p.db").display(),
            sim.data_link.display(),
            sim.audio_link.display()
        ),
    )
    .expect("config");
    let out = Command::new(common::server_program())
        .args(["--config"])
        .arg(&cfg)
        .args(["modem", "status"])
        .output()
        .expect("run pasarela modem status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("gsm1"), "{text}");
    assert!(text.contains(&format!("imei={IMEI}")), "{text}");
    assert!(text.contains("dBm"), "{text}");
}

/// `[[modem]]` errors name the file, line and key (`modem[N].key`); names are unique among
/// modems and trunks.
#[test]
fn modem_config_errors_name_the_key() {
    use pasarela::config::{Config, ConfigError};
    let origin = Path::new("test.toml");
    let fail = |text: &str| match Config::from_toml_str(text, origin) {
        Err(ConfigError::Key {
            line, key, message, ..
        }) => (line, key, message),
        other => panic!("expected a key error for {text:?}, got {other:?}"),
    };
    let ok = Config::from_toml_str(
        "[[modem]]\nname = \"gsm1\"\nimei = \"353142034567891\"\nincoming = [\"100\"]\n",
        origin,
    )
    .expect("valid modem");
    assert_eq!(ok.modems.len(), 1);
    assert_eq!(ok.modems[0].incoming, vec!["100".to_string()]);
    let (line, key, _) = fail("[[modem]]\nname = \"gsm1\"\nimei = \"12\"\n");
    assert_eq!((line, key.as_str()), (3, "modem[0].imei"));
    let (_, key, _) = fail("[[modem]]\nname = \"gsm1\"\ndata_port = \"/dev/ttyUSB2\"\n");
    assert_eq!(key, "modem[0].audio_port");
    let (_, key, _) = fail("[[modem]]\nname = \"gsm1\"\nimei = \"353142034567891\"\nbogus = 1\n");
    assert_eq!(key, "modem[0].bogus");
    let (_, key, msg) = fail(
        "[[modem]]\nname = \"a\"\nimei = \"353142034567891\"\n[[modem]]\nname = \"a\"\nimei = \"353142034567892\"\n",
    );
    assert_eq!(key, "modem[1].name", "{msg}");
    let (_, key, msg) = fail(
        "[[trunk]]\nname = \"a\"\nuri = \"sip:gw.test\"\n[[modem]]\nname = \"a\"\nimei = \"353142034567891\"\n",
    );
    assert_eq!(key, "modem[0].name", "{msg}");
    // `incoming` may name one ring group, and only one that exists.
    let group = "[[ring_group]]\nname = \"hunt\"\nmembers = [\"100\"]\n";
    let ok = Config::from_toml_str(
        &format!("{group}[[modem]]\nname = \"gsm1\"\nimei = \"353142034567891\"\nincoming = [\"hunt\"]\n"),
        origin,
    )
    .expect("a ring group as incoming");
    assert_eq!(ok.modems[0].incoming, vec!["hunt".to_string()]);
    let (_, key, msg) = fail(&format!(
        "{group}[[modem]]\nname = \"gsm1\"\nimei = \"353142034567891\"\nincoming = [\"nobody\"]\n"
    ));
    assert_eq!(key, "modem[0].incoming[0]", "{msg}");
    let (_, key, msg) = fail(&format!(
        "{group}[[modem]]\nname = \"gsm1\"\nimei = \"353142034567891\"\nincoming = [\"hunt\", \"100\"]\n"
    ));
    assert_eq!(key, "modem[0].incoming", "{msg}");
}
