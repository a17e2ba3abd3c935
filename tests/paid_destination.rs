//! Permission on the number that leaves on a paid line, end to end: extension 100 (default
//! permissions: national and mobile, no international or premium) dials an ordinary Berlin
//! number, and a routing source turns it into a barred one —
//!
//! - an ENUM `tel:` answer (from a real DNS server on loopback, the embedded `ZoneServer`)
//!   pointing at an international or a premium number;
//! - a DUNDi answer (a real DUNDi peer over UDP on loopback, pasarela's own service as an
//!   independent node) naming an international number on our own trunk's address.
//!
//! Each call is refused with 403 naming the category (sipp checks the reason phrase), the
//! refusal is in the call records with the check in its routing explanation, and the trunk (a
//! UDP socket the test holds) receives nothing. Then a PRECACHERQ spoofed from the peer's
//! address but another port is refused (NOAUTH, nothing cached, counted in `dundi peers`) while
//! the peer's own push is taken.
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use common::{call_config, require_program, rtp_port_range, sipp_dial_100, Server};
use pasarela::cdr::{CallRecord, CdrDb, Filter, Page, Sort};
use pasarela::routing::dundi::wire::{
    answer_flags, cause, proto, AnswerIe, Command, Header, Ie, Packet,
};
use pasarela::routing::dundi::{
    DundiHandle, DundiService, Eid, Mapping, Model, PatternNumbers, PeerSettings, Settings,
};
use pasarela::routing::zone_server::{Zone, ZoneRecord, ZoneServer};

const HARD: Duration = Duration::from_secs(60);

/// A DNS server (and, optionally, a DUNDi node) with their own runtime.
struct Peers {
    rt: tokio::runtime::Runtime,
    dns: Option<ZoneServer>,
    _dundi: Option<DundiHandle>,
}

impl Drop for Peers {
    fn drop(&mut self) {
        if let Some(s) = self.dns.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn naptr(name: &str, regexp: &str) -> ZoneRecord {
    ZoneRecord::Naptr {
        name: name.into(),
        order: 100,
        preference: 10,
        flags: "u".into(),
        services: "E2U+sip".into(),
        regexp: regexp.into(),
        replacement: ".".into(),
    }
}

/// The trunk: a socket on 127.0.0.1 that must stay silent.
struct Trunk(UdpSocket);

impl Trunk {
    fn bind() -> Trunk {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind the trunk");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        Trunk(s)
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("addr").port()
    }

    fn assert_silent(&self) {
        let mut buf = [0u8; 4096];
        if let Ok((n, from)) = self.0.recv_from(&mut buf) {
            panic!(
                "the trunk got a request from {from}:\n{}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
    }
}

fn office_config(dns: SocketAddr, trunk_port: u16, extra: &str) -> String {
    call_config(
        &format!(
            r#"failover_ms = 1500

[numbering]
country_code = "49"
area_code = "30"

[enum]
suffixes = ["e164.test"]
nameservers = ["{dns}"]
budget_ms = 1500

[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:{trunk_port}"
number_format = "national"
{extra}"#
        ),
        rtp_port_range(),
    )
}

/// Extension 100 dials `number`; sipp wants 403 with "Calls to … numbers are barred".
fn dial_refused(server: &Server, number: &str) {
    let res = sipp_dial_100(
        server,
        &format!("caller-{number}"),
        "call_uac_refused.xml",
        number,
        server.udp,
        "u1",
        &[],
    )
    .wait(HARD);
    res.assert_success(server);
}

/// The record of the refused call to `number` (waits up to 2 s).
fn record(server: &Server, number: &str) -> CallRecord {
    for _ in 0..20 {
        let db = CdrDb::open(&server.db).expect("open the call records");
        let list = db
            .list(&Filter::default(), Sort::default(), Page::number(1, 100))
            .expect("list the call records");
        if let Some(r) = list.into_iter().find(|r| r.callee == number) {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no record of the call to {number}\n{}",
        server.log_excerpt()
    );
}

#[test]
fn an_enum_tel_answer_to_a_barred_number_is_refused() {
    require_program("sipp", "sip-tester");
    let rt = runtime();
    let dns = rt
        .block_on(ZoneServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            vec![Zone {
                origin: "e164.test".into(),
                ttl: 60,
                negative_ttl: 30,
                records: vec![
                    // +49 30 5551234 → an international number.
                    naptr("4.3.2.1.5.5.5.0.3.9.4", "!^.*$!tel:+441234567890!"),
                    // +49 30 5559999 → a premium-rate number.
                    naptr("9.9.9.9.5.5.5.0.3.9.4", "!^.*$!tel:+499001234567!"),
                ],
            }],
        ))
        .expect("DNS server");
    let dns_addr = dns.local_addr();
    let peers = Peers {
        rt,
        dns: Some(dns),
        _dundi: None,
    };
    let trunk = Trunk::bind();
    let server = Server::start(&office_config(dns_addr, trunk.port(), ""));

    dial_refused(&server, "0305551234");
    let r = record(&server, "0305551234");
    assert_eq!(r.sip_status, 403, "{r:?}");
    assert!(
        r.explanation.contains("tel:+441234567890")
            && r.explanation.contains(
                "paid line check: +441234567890: calls to international numbers are barred"
            ),
        "{}",
        r.explanation
    );

    dial_refused(&server, "0305559999");
    let r = record(&server, "0305559999");
    assert_eq!(r.sip_status, 403, "{r:?}");
    assert!(
        r.explanation
            .contains("may not turn a local number into a premium one"),
        "{}",
        r.explanation
    );
    trunk.assert_silent();

    // The route explainer shows the same check.
    let out = std::process::Command::new(common::server_program())
        .arg("--config")
        .arg(server.dir().join("pasarela.toml"))
        .args(["route", "0305551234", "--from", "100"])
        .output()
        .expect("run pasarela route");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("paid line check: +441234567890: calls to international numbers are barred")
            && text.contains("rejected 403 Calls to international numbers are barred"),
        "{text}"
    );
    drop(peers);
}

#[test]
fn a_dundi_answer_to_a_barred_number_on_the_trunk_is_refused() {
    require_program("sipp", "sip-tester");
    let trunk = Trunk::bind();
    let rt = runtime();
    // ENUM knows nothing: only DUNDi answers.
    let dns = rt
        .block_on(ZoneServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            vec![Zone {
                origin: "e164.test".into(),
                ttl: 60,
                negative_ttl: 30,
                records: Vec::new(),
            }],
        ))
        .expect("DNS server");
    let dns_addr = dns.local_addr();
    // The office on 127.0.0.2, the (hostile or misconfigured) peer on 127.0.0.3.
    let office_dundi = UdpSocket::bind("127.0.0.2:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let peer_socket = UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    let peer_addr = peer_socket.local_addr().expect("addr");
    let office_eid = "02:00:00:00:00:0a";
    let peer_eid = "02:00:00:00:00:0c";
    let dundi = {
        let _guard = rt.enter();
        let settings = Settings {
            eid: Some(peer_eid.parse().expect("eid")),
            bind: peer_addr,
            // Whoever asks about the Berlin number is sent to an international number on
            // the office's own trunk.
            mappings: vec![Mapping::sip(
                "e164",
                "dids",
                &format!("+441234567890@127.0.0.1:{}", trunk.port()),
            )],
            peers: vec![{
                let mut p =
                    PeerSettings::new(office_eid.parse().expect("eid"), office_dundi, "e164");
                p.precache = Some(Model::Outbound);
                p
            }],
            cache_ttl: Duration::from_secs(300),
            ttl: 32,
            ..Default::default()
        };
        let mut numbers = PatternNumbers::new();
        numbers.add("dids", &["_49305551234"]).expect("pattern");
        DundiService::start_on(peer_socket, settings, Arc::new(numbers)).expect("DUNDi peer")
    };
    let handle = dundi.clone();
    let peers = Peers {
        rt,
        dns: Some(dns),
        _dundi: Some(dundi),
    };
    let server = Server::start(&office_config(
        dns_addr,
        trunk.port(),
        &format!(
            r#"
[dundi]
enabled = true
listen = "{office_dundi}"
eid = "{office_eid}"

[[dundi.peer]]
eid = "{peer_eid}"
address = "{peer_addr}"
precache = "inbound"
"#
        ),
    ));

    dial_refused(&server, "0305551234");
    let r = record(&server, "0305551234");
    assert_eq!(r.sip_status, 403, "{r:?}");
    assert!(
        r.explanation.contains("DUNDi")
            && r.explanation
                .contains("on trunk carrier: calls to international numbers are barred"),
        "{}",
        r.explanation
    );
    trunk.assert_silent();

    // A spoofed push: the peer's EID and address, another source port (all a spoofer needs
    // to know). The office answers NOAUTH, keeps nothing and counts it.
    let peer_eid_v: Eid = peer_eid.parse().expect("eid");
    let spoof = Packet {
        header: Header {
            strans: 77,
            dtrans: 0,
            iseqno: 0,
            oseqno: 0,
            cmdresp: Command::PrecacheRq.code(),
            cmdflags: 0,
        },
        ies: vec![
            Ie::Version(1),
            Ie::Eid(peer_eid_v),
            Ie::CalledNumber("4930777777".into()),
            Ie::CalledContext("e164".into()),
            Ie::Ttl(32),
            Ie::Answer(AnswerIe {
                eid: peer_eid_v,
                protocol: proto::SIP,
                flags: answer_flags::EXISTS,
                weight: 0,
                destination: "4930777777@203.0.113.66".into(),
            }),
            Ie::Expiration(3600),
        ],
    };
    let spoofer = UdpSocket::bind("127.0.0.3:0").expect("bind 127.0.0.3");
    assert_ne!(spoofer.local_addr().expect("addr"), peer_addr);
    spoofer
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    spoofer
        .send_to(&spoof.encode().expect("encode"), office_dundi)
        .expect("send");
    let mut buf = [0u8; 2048];
    let mut refused = false;
    while let Ok((n, _)) = spoofer.recv_from(&mut buf) {
        let p = Packet::decode(&buf[..n]).expect("a DUNDi answer");
        if p.ies
            .iter()
            .any(|i| matches!(i, Ie::Cause { code, .. } if *code == cause::NOAUTH))
        {
            refused = true;
            break;
        }
    }
    assert!(refused, "no NOAUTH for the spoofed push");
    let config = server.dir().join("pasarela.toml");
    let (_, cache) = cli(&config, &["dundi", "cache"]);
    assert!(!cache.contains("4930777777"), "{cache}");
    let (_, peers_out) = cli(&config, &["dundi", "peers"]);
    assert!(
        peers_out.contains("refused: 1 precache push(es)"),
        "{peers_out}"
    );
    // The configured peer's own push, from its address and port, is taken.
    let acked = peers.rt.block_on(handle.precache(&["49305551234"], "e164"));
    assert_eq!(acked, 1);
    let (_, cache) = cli(&config, &["dundi", "cache"]);
    assert!(cache.contains("49305551234@e164"), "{cache}");
    drop(peers);
}

fn cli(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::server_program())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run pasarela");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
