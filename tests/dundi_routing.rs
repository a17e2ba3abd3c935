//! DUNDi in the running gateway: two `pasarela serve` offices peer over encrypted DUNDi on
//! 127.0.0.2 and 127.0.0.3 with keys made by `pasarela dundi keygen`. Office B answers for its
//! extension's DID; a call from office A's extension 100 to that number is routed by DUNDi
//! (ENUM has nothing) to the SIP destination B gave — a sipp uas — and answered, bypassing the
//! PSTN. The `pasarela dundi peers|cache|lookup` commands and `pasarela route` show the same,
//! through A's control socket or a node of their own.
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    config, free_port, require_program, server_program, sipp_dial_100, sipp_spawn, Server, MD5_ONLY,
};
use pasarela::cdr::{CdrDb, Filter, Page, RouteKind, Sort};
use pasarela::routing::zone_server::{Zone, ZoneServer};

const HARD: Duration = Duration::from_secs(60);

/// A free UDP port on `ip`.
fn free_udp(ip: &str) -> SocketAddr {
    let s = UdpSocket::bind(format!("{ip}:0")).expect("bind a loopback address");
    s.local_addr().expect("addr")
}

fn cli(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(server_program())
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

#[test]
fn a_number_found_through_dundi_is_called_over_sip() {
    require_program("sipp", "sip-tester");
    let keys = tempfile::tempdir().expect("key dir");
    for name in ["a", "b"] {
        let out = Command::new(server_program())
            .args(["dundi", "keygen", name, "--dir"])
            .arg(keys.path())
            .output()
            .expect("keygen");
        assert!(out.status.success(), "{out:?}");
    }
    let key = |f: &str| keys.path().join(f).display().to_string();
    // ENUM asks an empty zone: only DUNDi can find the number.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
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
    let (a_addr, b_addr) = (free_udp("127.0.0.2"), free_udp("127.0.0.3"));
    let uas_port = free_port();
    let routing = format!(
        "\n[numbering]\ncountry_code = \"49\"\narea_code = \"30\"\n\n[enum]\nsuffixes = [\"e164.test\"]\nnameservers = [\"{}\"]\nbudget_ms = 2000\n",
        dns.local_addr()
    );
    let office_b = Server::start(&format!(
        "{}{routing}
[[extension]]
number = \"200\"
password = \"secret200secret\"
did = \"+4940555123\"

[dundi]
enabled = true
listen = \"{b_addr}\"
eid = \"02:00:00:00:00:0b\"
private_key = \"{}\"
organization = \"Office B\"

[[dundi.mapping]]
context = \"e164\"
destination = \"${{NUMBER}}@127.0.0.1:{uas_port}\"
options = [\"nounsolicited\", \"nocomunsolicit\"]

[[dundi.peer]]
eid = \"02:00:00:00:00:0a\"
address = \"{a_addr}\"
inkey = \"{}\"
",
        config(MD5_ONLY),
        key("b.key"),
        key("a.pub")
    ));
    let office_a = Server::start(&format!(
        "{}{routing}
[[extension]]
number = \"150\"
password = \"secret150secret\"
did = \"+4930111222\"

[dundi]
enabled = true
listen = \"{a_addr}\"
eid = \"02:00:00:00:00:0a\"
private_key = \"{}\"

[[dundi.mapping]]
context = \"e164\"
destination = \"${{NUMBER}}@${{IPADDR}}:5060\"

[[dundi.peer]]
eid = \"02:00:00:00:00:0b\"
address = \"{b_addr}\"
inkey = \"{}\"
qualify_secs = 1
",
        config(MD5_ONLY),
        key("a.key"),
        key("b.pub")
    ));
    let a_cfg = office_a.dir().join("pasarela.toml");
    // The lookup, asked through A's control socket.
    let (ok, out) = cli(&a_cfg, &["dundi", "lookup", "4940555123@e164"]);
    assert!(ok, "{out}");
    let dest = format!("4940555123@127.0.0.1:{uas_port}");
    assert!(out.contains(&dest), "B answers with its mapping:\n{out}");
    assert!(out.contains("02:00:00:00:00:0b"), "{out}");
    let (ok, out) = cli(&a_cfg, &["dundi", "cache"]);
    assert!(ok && out.contains("4940555123@e164"), "cached:\n{out}");
    // An unknown number: no answer, and a hint not to ask about its prefix.
    let (ok, out) = cli(&a_cfg, &["dundi", "lookup", "4940999888@e164"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("0 answer(s)") && out.contains("don't ask"),
        "{out}"
    );
    // The peer is qualified.
    let mut peers = String::new();
    for _ in 0..50 {
        peers = cli(&a_cfg, &["dundi", "peers"]).1;
        if peers.contains("OK (") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        peers.contains("02:00:00:00:00:0b")
            && peers.contains("encrypted")
            && peers.contains("OK ("),
        "{peers}"
    );

    // The other way: B asks A about A's DID (destination with A's ${IPADDR}).
    let b_cfg = office_b.dir().join("pasarela.toml");
    let (ok, out) = cli(&b_cfg, &["dundi", "lookup", "4930111222@e164"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("4930111222@127.0.0.2:5060"),
        "A answers B:\n{out}"
    );

    // The route explainer (a node of its own on a free port) names the DUNDi answer.
    let (ok, out) = cli(&a_cfg, &["route", "040555123", "--from", "100"]);
    assert!(ok, "{out}");
    assert!(out.contains("DUNDi"), "{out}");
    assert!(out.contains(&format!("sip:{dest}")), "{out}");

    // A real call: 100 at office A dials B's DID; the sipp uas at B's destination answers.
    let uas = sipp_spawn(
        office_a.dir(),
        "far-end",
        "call_uas_answer.xml",
        office_a.udp,
        "u1",
        uas_port,
        &["-s", "far"],
    )
    .listening();
    let caller = sipp_dial_100(
        &office_a,
        "caller-100",
        "call_uac_basic.xml",
        "040555123",
        office_a.udp,
        "u1",
        &[],
    )
    .wait(HARD);
    let uas = uas.wait(HARD);
    assert!(
        caller.success() && uas.success(),
        "caller:\n{}\nfar end:\n{}\n{}",
        caller.report(),
        uas.report(),
        office_a.log_excerpt()
    );
    let mut records = Vec::new();
    for _ in 0..30 {
        records = CdrDb::open(&office_a.db)
            .expect("records")
            .list(&Filter::default(), Sort::default(), Page::number(1, 10))
            .expect("list");
        if !records.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = records.first().expect("a call record");
    assert_eq!(r.route_kind, RouteKind::Sip, "{r:?}");
    assert_eq!(
        r.route_target.as_deref(),
        Some(format!("sip:{dest}").as_str()),
        "{r:?}"
    );
    assert!(
        r.route_source
            .as_deref()
            .is_some_and(|s| s.contains("DUNDi")),
        "{r:?}"
    );

    // The cache can be flushed.
    let (ok, out) = cli(&a_cfg, &["dundi", "cache", "--flush"]);
    assert!(ok && out.contains("flushed"), "{out}");
    let (_, out) = cli(&a_cfg, &["dundi", "cache"]);
    assert!(out.contains("empty"), "{out}");
    drop(office_b);
    rt.block_on(dns.shutdown());
}
