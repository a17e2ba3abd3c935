//! Trunks, both ways (issue 14, item 2): pasarela registers with a SIP trunk provider (sipp on
//! its own loopback address, 127.0.0.5, as registrar with `verifyauth`), answers its digest
//! challenge, refreshes before the granted interval ends, and takes the provider's call to the
//! Contact it registered (recognised by that Contact, not by the source address) to a DID: the
//! phone (baresip) rings, answers, and audio flows. A 403 to REGISTER stops the retries. The
//! trunk's state is in `/metrics` and `/api/v1/live`.
mod common;
mod phone;

use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use phone::*;

const DID: &str = "+4930123457";
const PROVIDER_IP: &str = "127.0.0.5";

/// The office: 100 has the DID; the trunk `carrier` is sipp on `provider_port`, registered
/// with as office1/trunkpass. Its `sources` name another address, so that only the registered
/// Contact makes the provider's calls the trunk's.
fn office(provider_port: u16) -> String {
    let (lo, hi) = rtp_port_range();
    format!(
        r#"[sip]
listen = ["udp:{{UDP}}", "tcp:{{TCP}}"]
domain = "office.test"
{MD5_ONLY}

[media]
rtp_ports = "{lo}-{hi}"

[store]
path = "{{DB}}"

[web]
listen = "127.0.0.1:0"

[log]
level = "debug"

[numbering]
country_code = "49"
national_prefix = "0"
international_prefix = "00"

[[trunk]]
name = "carrier"
uri = "sip:{PROVIDER_IP}:{provider_port}"
number_format = "national"
sources = ["127.0.0.99"]
username = "office1"
password = "trunkpass"
register = true
register_expires = 60
register_retry_secs = 1

[[extension]]
number = "100"
password = "secret100"
name = "Reception"
did = "{DID}"
"#
    )
}

/// The provider's sipp on 127.0.0.5:`port`, started before pasarela so that it sees the first
/// REGISTER. Server scenarios send their requests to where the REGISTER came from.
fn provider(dir: &std::path::Path, scenario: &str, port: u16, extra: &[&str]) -> SippProc {
    let placeholder = "127.0.0.1:9".parse().unwrap();
    // Listening before pasarela starts and sends its first REGISTER.
    sipp_spawn_on(
        dir,
        "provider",
        scenario,
        placeholder,
        "u1",
        PROVIDER_IP,
        port,
        extra,
    )
    .listening()
}

fn metrics(server: &Server) -> String {
    let web = server.web.expect("web address");
    http_get(web, "/metrics").2
}

fn wait_metric(server: &Server, sample: &str, want: f64, within: Duration) -> Option<f64> {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        last = metric_sample(&metrics(server), sample);
        if last == Some(want) {
            return last;
        }
        thread::sleep(Duration::from_millis(200));
    }
    last
}

#[test]
fn registers_refreshes_and_takes_calls_to_its_contact() {
    let dir = TestDir::new("provider");
    let port = free_port();
    let sipp = provider(
        dir.path(),
        "trunk_registrar.xml",
        port,
        &["-s", "030123457"],
    );
    let mut server = Server::start(&office(port));
    let base = server.dir().to_path_buf();
    let mut phone = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "100",
            ext: "100",
            answer: "auto",
            tone_hz: 440.0,
            tone_secs: 10.0,
        },
    );
    wait_registered(&server, &mut phone, "100");
    assert_eq!(
        wait_metric(
            &server,
            "pasarela_trunk_registered{trunk=\"carrier\"}",
            1.0,
            Duration::from_secs(10)
        ),
        Some(1.0),
        "{}",
        server.log_excerpt()
    );
    let res = sipp.wait(Duration::from_secs(40));
    if !res.success() {
        panic!(
            "the provider's scenario failed\n{}\n{}\n{}",
            res.report(),
            phone.report(),
            server.log_excerpt()
        );
    }
    let log = res.log_text();
    assert!(
        log.contains("refresh_received"),
        "no refresh seen by the registrar: {log}"
    );
    let contact = log
        .lines()
        .find_map(|l| l.strip_prefix("registered_contact "))
        .unwrap_or_else(|| panic!("no Contact logged: {log}"))
        .to_owned();
    assert!(
        contact.starts_with("sip:office1@127.0.0.1:") && contact.contains(";line="),
        "registered Contact {contact}"
    );
    // The phone is shown the caller in E.164 with the name the network gave.
    let established = phone.expect_event("CALL_ESTABLISHED", Duration::from_secs(2), &[], &server);
    let peer = json_str(&established, "peeruri").unwrap_or_default();
    assert!(
        peer.contains("+49301234@"),
        "caller shown as {peer:?}: {established}"
    );
    assert_eq!(
        json_str(&established, "peerdisplayname").as_deref(),
        Some("Erika Mustermann"),
        "{established}"
    );
    phone.expect_event("CALL_CLOSED", Duration::from_secs(10), &[], &server);
    thread::sleep(Duration::from_millis(500));
    let wav = phone.received_wav();
    let (_, samples) = read_wav(&wav).unwrap_or_else(|e| phone.fail(&e));
    let loud = samples.iter().filter(|s| s.unsigned_abs() > 1000).count();
    assert!(
        loud > 4000,
        "the phone received no audio from the provider ({loud} loud samples in {})",
        wav.display()
    );

    // The record: incoming from the trunk, the caller in E.164 with the name the network
    // gave, the DID dialled.
    let row: (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
    ) = rusqlite::Connection::open(&server.db)
        .unwrap()
        .query_row(
            "SELECT direction, route_source, caller_e164, callee_e164, disposition \
                 FROM call_records ORDER BY id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("a record");
    assert_eq!(row.0, "incoming", "{row:?}");
    assert_eq!(row.1.as_deref(), Some("trunk carrier"), "{row:?}");
    assert_eq!(row.2.as_deref(), Some("+49301234"), "{row:?}");
    assert_eq!(row.3.as_deref(), Some(DID), "{row:?}");
    assert_eq!(row.4, "answered", "{row:?}");

    // The same call from the provider's address without our Contact is no trunk call: the
    // address is not among the trunk's sources, so it is challenged and nothing rings.
    let stranger = UdpSocket::bind((PROVIDER_IP, 0)).expect("bind 127.0.0.5");
    stranger
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let local = stranger.local_addr().unwrap();
    let tag = random_token();
    let invite = format!(
        "INVITE sip:030123457@{srv} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{tag};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:0301234@{PROVIDER_IP}>;tag={tag}\r\nTo: <sip:030123457@{srv}>\r\n\
         Call-ID: {tag}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:p@{local}>\r\nContent-Length: 0\r\n\r\n",
        srv = server.udp
    );
    stranger.send_to(invite.as_bytes(), server.udp).unwrap();
    let reply = recv_final(&stranger, Duration::from_secs(5)).expect("a final response");
    assert_eq!(status_code(&reply), Some(401), "{}", first_line(&reply));

    // The live API shows the trunk registered, with no call in progress any more.
    let (status, _, body) = api_get(&server, "/api/v1/live");
    assert_eq!(status, 200, "{body}");
    let trunk = body
        .split("\"trunks\":")
        .nth(1)
        .unwrap_or_else(|| panic!("no trunks in {body}"));
    assert!(trunk.contains("\"name\":\"carrier\""), "{body}");
    assert!(trunk.contains("\"registration\":\"registered\""), "{body}");
    assert!(trunk.contains("\"calls\":0"), "{body}");
    server.assert_alive();
}

/// A 403 to REGISTER stops the retries (nothing more within 5 s, the state says forbidden);
/// a reload with changed trunk settings (SIGHUP) registers again.
#[test]
fn forbidden_stops_the_retries_until_a_reload() {
    let dir = TestDir::new("provider");
    let port = free_port();
    let sipp = provider(dir.path(), "trunk_registrar_403.xml", port, &[]);
    let mut server = Server::start(&office(port));
    let log = dir.path().to_path_buf();
    let quiet = || {
        std::fs::read_dir(&log)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("quiet_after_403")))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !quiet() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        quiet(),
        "the registrar never saw the retries end\n{}",
        server.log_excerpt()
    );
    assert_eq!(
        metric_sample(
            &metrics(&server),
            "pasarela_trunk_registered{trunk=\"carrier\"}"
        ),
        Some(0.0)
    );
    let (_, _, body) = api_get(&server, "/api/v1/live");
    assert!(body.contains("\"registration\":\"forbidden\""), "{body}");
    assert!(body.contains("\"last_failure\":403"), "{body}");
    let text = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    assert!(
        text.contains("refused our registration (403)"),
        "{}",
        server.log_excerpt()
    );
    // The account is fixed: a reload registers again, without a restart.
    let cfg = server.dir().join("pasarela.toml");
    let conf = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        conf.replace("register_expires = 60", "register_expires = 90"),
    )
    .unwrap();
    signal(server.pid(), "HUP");
    let res = sipp.wait(Duration::from_secs(30));
    if !res.success() {
        panic!(
            "the registrar saw a REGISTER after its 403, or none after the reload\n{}\n{}",
            res.report(),
            server.log_excerpt()
        );
    }
    assert!(res.log_text().contains("retried"), "{}", res.log_text());
    assert_eq!(
        wait_metric(
            &server,
            "pasarela_trunk_registered{trunk=\"carrier\"}",
            1.0,
            Duration::from_secs(5)
        ),
        Some(1.0)
    );
    server.assert_alive();
}
