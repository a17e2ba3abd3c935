//! SIP over TLS with real peers (issue 18): baresip phones register and call each other over
//! TLS through pasarela (every byte between them and pasarela passes a TCP relay in this test
//! that keeps a copy: no SIP text may appear in it, and the tones still cross the relay); an
//! ENUM `sips:` target is located through NAPTR `SIPS+D2T` → SRV `_sips._tcp` on a DNS server on
//! loopback and called over TLS — a first hop whose certificate is not trusted (a socat OpenSSL
//! listener) fails over to the next one (a baresip with a certificate signed by a CA the office
//! trusts for that domain), and the record's explainer says why.
mod common;
mod phone;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::dns::{zone, Dns};
use common::tls_peer::{untrusted, Socat};
use common::{call_config, free_port, require_program, rtp_port_range, Server};
use pasarela::routing::zone_server::ZoneRecord;
use phone::*;

const CALL_SETUP: Duration = Duration::from_secs(15);

/// The usual call configuration with a TLS listener on `tls_port` and `extra` appended.
fn tls_config(tls_port: u16, calls_extra: &str, extra: &str) -> String {
    let base = call_config(calls_extra, rtp_port_range());
    let with_tls = base.replace(
        r#"listen = ["udp:{UDP}", "tcp:{TCP}"]"#,
        &format!(r#"listen = ["udp:{{UDP}}", "tcp:{{TCP}}", "tls:127.0.0.1:{tls_port}"]"#),
    );
    assert_ne!(base, with_tls, "the call config template changed");
    format!("{with_tls}\n{extra}\n")
}

/// The self-signed certificate pasarela made beside its store.
fn generated_cert(server: &Server) -> PathBuf {
    let cert = server.dir().join("tls").join("pasarela-cert.pem");
    assert!(
        cert.is_file(),
        "no generated certificate at {}\n{}",
        cert.display(),
        server.log_excerpt()
    );
    cert
}

/// A TCP relay on 127.0.0.1 that forwards every connection to `target` and keeps a copy of
/// every byte, both ways: what a capture of the loopback link would see.
struct Relay {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let copy = Arc::clone(&seen);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    let copy = Arc::clone(&copy);
                    thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => {
                                    let _ = to.shutdown(std::net::Shutdown::Write);
                                    return;
                                }
                                Ok(n) => {
                                    copy.lock().unwrap().extend_from_slice(&buf[..n]);
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
            }
        });
        Relay { addr, seen }
    }

    fn bytes(&self) -> Vec<u8> {
        self.seen.lock().unwrap().clone()
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The transports of the stored bindings of `ext`.
fn binding_transports(db: &Path, ext: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    let mut st = conn
        .prepare("SELECT transport FROM bindings WHERE aor = ?1 OR aor LIKE 'sip:' || ?1 || '@%'")
        .unwrap();
    st.query_map([ext], |r| r.get::<_, String>(0))
        .unwrap()
        .filter_map(|r| r.ok())
        .collect()
}

/// The newest finished call record: (its explanation, its `signalling` column), waiting up to
/// 3 s for one.
fn newest_record(db: &Path) -> (String, Option<String>) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Ok(conn) = rusqlite::Connection::open(db) {
            let row = conn.query_row(
                "SELECT explanation, signalling FROM call_records \
                 WHERE end_reason IS NULL OR end_reason != 'in progress' ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
            );
            if let Ok(r) = row {
                return r;
            }
        }
        assert!(Instant::now() < deadline, "no call record within 3 s");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn baresip_registers_and_calls_over_tls_and_nothing_is_readable_on_the_wire() {
    require_program("baresip", "baresip");
    let tls_port = free_port();
    let mut server = Server::start(&tls_config(tls_port, "", ""));
    let cert = generated_cert(&server);
    let relay = Relay::start(SocketAddr::from((Ipv4Addr::LOCALHOST, tls_port)));
    let trust = format!("sip_cafile\t\t{}\n", cert.display());
    let base = server.dir().to_path_buf();
    let mut a = Phone::start_over(
        &base,
        relay.addr,
        PhoneCfg {
            name: "100",
            ext: "100",
            answer: "manual",
            tone_hz: 1000.0,
            tone_secs: 3.0,
        },
        "tls",
        &trust,
        None,
    );
    let mut b = Phone::start_over(
        &base,
        relay.addr,
        PhoneCfg {
            name: "101",
            ext: "101",
            answer: "auto",
            tone_hz: 440.0,
            tone_secs: 5.0,
        },
        "tls",
        &trust,
        None,
    );
    // Registered over TLS: the stored binding's flow is TLS (its contact names baresip's TLS
    // port, its SIP port + 1).
    for (ext, phone) in [("100", &a), ("101", &b)] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let t = binding_transports(&server.db, ext);
            if !t.is_empty() {
                assert!(
                    t.iter().all(|t| t == "tls"),
                    "{ext} registered over {t:?}, not TLS\n{}",
                    server.log_excerpt()
                );
                break;
            }
            if Instant::now() > deadline {
                phone.fail(&format!(
                    "{ext} did not register over TLS within 15 s\n{}",
                    server.log_excerpt()
                ));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    a.command("dial", &format!("sip:101@{};transport=tls", relay.addr));
    b.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a], &server);
    a.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&b], &server);
    a.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&b], &server);
    b.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&a], &server);
    thread::sleep(Duration::from_millis(500));

    let logs = format!("{}{}{}", a.report(), b.report(), server.log_excerpt());
    assert_tone(&a.received_wav(), 440.0, "100 (caller) received", &logs);
    assert_tone(&b.received_wav(), 1000.0, "101 (callee) received", &logs);

    // Both phones' REGISTERs, the INVITE to 101 (over 101's own connection), the answers and
    // the BYEs all passed the relay: several kilobytes, none of it readable.
    let wire = relay.bytes();
    assert!(
        wire.len() > 4000,
        "only {} bytes passed the relay: the signalling did not go through it\n{logs}",
        wire.len()
    );
    for text in [
        &b"SIP/2.0"[..],
        b"REGISTER",
        b"INVITE",
        b"sip:10",
        b"office.test",
        b"Via:",
    ] {
        assert!(
            !contains(&wire, text),
            "{:?} appears in clear on the wire\n{logs}",
            String::from_utf8_lossy(text)
        );
    }
    // The baresips themselves saw SIP over TLS.
    assert!(
        a.log_text().contains("SIP/2.0/TLS"),
        "100's trace shows no TLS Via\n{logs}"
    );

    let (why, signalling) = newest_record(&server.db);
    assert_eq!(signalling.as_deref(), Some("tls/tls"), "{why}");
    server.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// ENUM → sips: → NAPTR SIPS+D2T → SRV _sips._tcp, with a bad first hop.

/// A test CA and a certificate it signs for `name`, written as PEM files into `dir`:
/// (`ca.pem`, `NAME.pem` holding the certificate and its key, as baresip wants it).
fn ca_and_leaf(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "test office CA");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let leaf_path = dir.join(format!("{name}.pem"));
    std::fs::write(
        &leaf_path,
        format!("{}{}", leaf.pem(), leaf_key.serialize_pem()),
    )
    .unwrap();
    (ca_path, leaf_path)
}

#[test]
fn an_enum_sips_target_is_called_over_tls_and_a_bad_certificate_fails_over() {
    require_program("baresip", "baresip");
    require_program("sipp", "sip-tester");
    let certs = tempfile::tempdir().unwrap();
    let (ca, good) = ca_and_leaf(certs.path(), "target.test");
    let bad = untrusted(certs.path(), "target.test");
    let bad_port = free_port();
    let _bad = Socat::start(bad_port, &bad);

    // The far office: a baresip answering alice@target.test over TLS with a certificate the
    // office's CA signed. Its TLS port is its SIP port + 1.
    let dir = tempfile::tempdir().unwrap();
    let mut far = Phone::start_account(
        dir.path(),
        PhoneCfg {
            name: "alice",
            ext: "alice",
            answer: "auto",
            tone_hz: 440.0,
            tone_secs: 4.0,
        },
        "<sip:alice@target.test>;regint=0;answermode=auto;\
         audio_codecs=PCMU/8000/1,PCMA/8000/1;ptime=20",
        &format!("sip_certificate\t\t{}\n", good.display()),
    );
    let good_port = far.sip_port + 1;

    let dns = Dns::start(vec![
        zone(
            "e164.test",
            vec![ZoneRecord::Naptr {
                name: "4.3.2.1.5.5.5.0.3.9.4".into(),
                order: 100,
                preference: 10,
                flags: "u".into(),
                services: "E2U+sip".into(),
                regexp: r"!^\+49(.*)$!sips:alice@target.test!".into(),
                replacement: ".".into(),
            }],
        ),
        zone(
            "target.test",
            vec![
                ZoneRecord::Naptr {
                    name: "@".into(),
                    order: 10,
                    preference: 10,
                    flags: "s".into(),
                    services: "SIPS+D2T".into(),
                    regexp: String::new(),
                    replacement: "_sips._tcp.target.test.".into(),
                },
                ZoneRecord::Srv {
                    name: "_sips._tcp".into(),
                    priority: 10,
                    weight: 0,
                    port: bad_port,
                    target: "bad.target.test.".into(),
                },
                ZoneRecord::Srv {
                    name: "_sips._tcp".into(),
                    priority: 20,
                    weight: 0,
                    port: good_port,
                    target: "good.target.test.".into(),
                },
                ZoneRecord::A {
                    name: "bad".into(),
                    addr: Ipv4Addr::LOCALHOST,
                },
                ZoneRecord::A {
                    name: "good".into(),
                    addr: Ipv4Addr::LOCALHOST,
                },
            ],
        ),
    ]);
    let routing = format!(
        r#"failover_ms = 4000

[numbering]
country_code = "49"
area_code = "30"

[enum]
suffixes = ["e164.test"]
nameservers = ["{}"]
budget_ms = 800
"#,
        dns.addr()
    );
    let tls = format!(
        "[[tls.peer]]\ndomain = \"target.test\"\nca = \"{}\"\n",
        ca.display()
    );
    let tls_port = free_port();
    let mut server = Server::start(&tls_config(tls_port, &routing, &tls));

    // Extension 100 (sipp over UDP) dials the number; the call must reach alice over TLS.
    let caller = common::sipp_dial_100(
        &server,
        "caller-100",
        "call_uac_basic.xml",
        "0305551234",
        server.udp,
        "u1",
        &[],
    )
    .wait(Duration::from_secs(60));
    let logs = format!(
        "{}\n{}\n{}",
        caller.report(),
        far.report(),
        server.log_excerpt()
    );
    assert!(caller.success(), "the call failed\n{logs}");
    far.expect_event("CALL_ESTABLISHED", Duration::from_secs(5), &[], &server);
    assert!(
        far.log_text().contains("SIP/2.0/TLS"),
        "alice got no INVITE over TLS\n{logs}"
    );

    let (why, signalling) = newest_record(&server.db);
    eprintln!("explainer:\n{why}");
    assert!(
        why.contains("SIPS+D2T") || why.contains("_sips._tcp"),
        "the explainer shows no TLS location step:\n{why}"
    );
    assert!(
        why.contains("transport sips:alice@target.test: TLS"),
        "the explainer does not say why TLS was chosen:\n{why}"
    );
    assert!(
        why.contains(&format!("tls:127.0.0.1:{bad_port}"))
            && why.contains(&format!("tls:127.0.0.1:{good_port}")),
        "both hops are routes:\n{why}"
    );
    assert!(
        why.contains("503 TLS certificate of target.test rejected"),
        "the bad hop's failure is not explained:\n{why}"
    );
    assert_eq!(signalling.as_deref(), Some("udp/tls"), "{why}");
    far.command("hangup", "");
    server.assert_alive();
}
