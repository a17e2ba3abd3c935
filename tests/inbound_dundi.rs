//! PSTN bypass both ways without a shared password (issue 14): two `pasarela serve` offices
//! peer over encrypted DUNDi, A on 127.0.0.2 and B on 127.0.0.3, both with the default mapping
//! destination `${NUMBER}@address:port` and `[inbound] public = true`. A's extension calls B's
//! DID: A finds it through DUNDi and sends the INVITE to B with the E.164 digits as DUNDi
//! carries them (no '+', no credentials); B recognises its DID and rings its phone (baresip),
//! which answers. A records an outgoing call routed by DUNDi, B an incoming call from the peer.
//! A third office C, peer of nobody, finds B's DID in the private ENUM zone B publishes and
//! calls it the same way (B records it as incoming from the internet).
mod common;
mod phone;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use common::{free_port, require_program, rtp_port_range, server_program, sipp_spawn, Server};
use pasarela::cdr::{CallRecord, CdrDb, Direction, Filter, Page, RouteKind, Sort};
use phone::{wait_registered, Phone, PhoneCfg};

const HARD: Duration = Duration::from_secs(60);

/// A free port on `ip` (UDP; TCP is taken on the same port and is very likely free too).
fn free_on(ip: &str) -> SocketAddr {
    let s = UdpSocket::bind(format!("{ip}:0")).expect("bind a loopback address");
    s.local_addr().expect("addr")
}

#[allow(clippy::too_many_arguments)]
fn office(
    sip: SocketAddr,
    dundi: SocketAddr,
    eid: &str,
    key: &str,
    peer_eid: &str,
    peer_dundi: SocketAddr,
    peer_key: &str,
    extension: (&str, &str),
) -> String {
    let (lo, hi) = rtp_port_range();
    let (number, did) = extension;
    format!(
        r#"[sip]
listen = ["udp:{sip}", "tcp:{sip}"]
domain = "office.test"
digest_algorithms = ["MD5"]

[media]
rtp_ports = "{lo}-{hi}"
address = "127.0.0.1"

[store]
path = "{{DB}}"

[web]
listen = "127.0.0.1:0"

[log]
level = "debug"

[numbering]
country_code = "49"
area_code = "30"

[enum]
suffixes = ["e164.invalid"]
nameservers = ["127.0.0.1:9"]
budget_ms = 1500

[inbound]
public = true

[dundi]
enabled = true
listen = "{dundi}"
eid = "{eid}"
private_key = "{key}"

[[dundi.mapping]]
context = "e164"
destination = "${{NUMBER}}@{sip}"

[[dundi.peer]]
eid = "{peer_eid}"
address = "{peer_dundi}"
inkey = "{peer_key}"

[[extension]]
number = "{number}"
password = "secret{number}"
did = "{did}"
"#
    )
}

fn records(db: &std::path::Path) -> Vec<CallRecord> {
    let mut records = Vec::new();
    for _ in 0..50 {
        records = CdrDb::open(db)
            .expect("records")
            .list(&Filter::default(), Sort::default(), Page::number(1, 10))
            .expect("list");
        if !records.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    records
}

/// Extension `ext` of `office` (sipp as its phone, with its password) dials `number`.
fn dial(office: &Server, ext: &str, number: &str) -> common::SippResult {
    let auth_uri = format!("{number}@{}", office.udp);
    sipp_spawn(
        office.dir(),
        &format!("caller-{ext}"),
        "call_uac_basic.xml",
        office.udp,
        "u1",
        free_port(),
        &[
            "-s",
            number,
            "-key",
            "caller",
            ext,
            "-au",
            ext,
            "-ap",
            &format!("secret{ext}"),
            "-auth_uri",
            &auth_uri,
        ],
    )
    .wait(HARD)
}

#[test]
fn peer_offices_call_each_others_dids_without_a_password() {
    require_program("sipp", "sip-tester");
    require_program("baresip", "baresip");
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
    let (a_sip, b_sip) = (free_on("127.0.0.2"), free_on("127.0.0.3"));
    let (a_dundi, b_dundi) = (free_on("127.0.0.2"), free_on("127.0.0.3"));
    let (a_eid, b_eid) = ("02:00:00:00:00:0a", "02:00:00:00:00:0b");
    // B also publishes its DIDs in a private ENUM zone (for office C below).
    let zone = free_on("127.0.0.3");
    let office_b = Server::start(&format!(
        "{}\n[enum_zone]\nenabled = true\nlisten = \"{zone}\"\nsuffix = \"e164.arpa\"\nsip_host = \"{b_sip}\"\n",
        office(
            b_sip,
            b_dundi,
            b_eid,
            &key("b.key"),
            a_eid,
            a_dundi,
            &key("a.pub"),
            ("200", "+4940555123"),
        )
    ));
    let office_a = Server::start(&office(
        a_sip,
        a_dundi,
        a_eid,
        &key("a.key"),
        b_eid,
        b_dundi,
        &key("b.pub"),
        ("150", "+4930111222"),
    ));
    let mut phone = Phone::start(
        office_b.dir(),
        office_b.udp,
        PhoneCfg {
            name: "200",
            ext: "200",
            answer: "auto",
            tone_hz: 440.0,
            tone_secs: 10.0,
        },
    );
    wait_registered(&office_b, &mut phone, "200");

    // 150 at office A dials B's DID the national way; sipp is the phone at A.
    let caller = dial(&office_a, "150", "040555123");
    assert!(
        caller.success(),
        "caller:\n{}\n{}\n{}\n{}",
        caller.report(),
        phone.report(),
        office_a.log_excerpt(),
        office_b.log_excerpt()
    );
    phone.expect_event("CALL_ESTABLISHED", Duration::from_secs(2), &[], &office_b);

    let a = records(&office_a.db);
    let out = a.first().expect("A's record");
    assert_eq!(out.direction, Direction::Outgoing, "{out:?}");
    assert_eq!(out.route_kind, RouteKind::Sip, "{out:?}");
    assert!(
        out.route_source
            .as_deref()
            .is_some_and(|s| s.contains("DUNDi")),
        "{out:?}"
    );
    assert_eq!(
        out.route_target.as_deref(),
        Some(format!("sip:4940555123@{b_sip}").as_str()),
        "{out:?}"
    );
    let b = records(&office_b.db);
    let inc = b.first().expect("B's record");
    assert_eq!(inc.direction, Direction::Incoming, "{inc:?}");
    assert_eq!(
        inc.route_source.as_deref(),
        Some(format!("DUNDi peer {a_eid}").as_str()),
        "{inc:?}"
    );
    assert_eq!(inc.callee_e164.as_deref(), Some("+4940555123"), "{inc:?}");
    assert_eq!(inc.caller_e164.as_deref(), Some("+4930111222"), "{inc:?}");
    assert_eq!(inc.extension.as_deref(), Some("200"), "{inc:?}");
    assert!(inc.answer_ms.is_some(), "{inc:?}");

    // The other way: 200 at office B dials A's DID; A's phone (150) answers.
    let mut phone_a = Phone::start(
        office_a.dir(),
        office_a.udp,
        PhoneCfg {
            name: "150",
            ext: "150",
            answer: "auto",
            tone_hz: 1000.0,
            tone_secs: 10.0,
        },
    );
    wait_registered(&office_a, &mut phone_a, "150");
    let caller = dial(&office_b, "200", "030111222");
    assert!(
        caller.success(),
        "caller:\n{}\n{}\n{}\n{}",
        caller.report(),
        phone_a.report(),
        office_a.log_excerpt(),
        office_b.log_excerpt()
    );
    phone_a.expect_event("CALL_ESTABLISHED", Duration::from_secs(2), &[], &office_a);
    let wanted = |db: &std::path::Path, direction: Direction| {
        for _ in 0..50 {
            if let Some(r) = records(db).into_iter().find(|r| r.direction == direction) {
                return r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no {direction:?} record in {}", db.display());
    };
    let inc = wanted(&office_a.db, Direction::Incoming);
    assert_eq!(
        inc.route_source.as_deref(),
        Some(format!("DUNDi peer {b_eid}").as_str()),
        "{inc:?}"
    );
    assert_eq!(inc.callee_e164.as_deref(), Some("+4930111222"), "{inc:?}");
    let out = wanted(&office_b.db, Direction::Outgoing);
    assert!(
        out.route_source
            .as_deref()
            .is_some_and(|s| s.contains("DUNDi")),
        "{out:?}"
    );
    drop(phone_a);

    // A third office, C on 127.0.0.4, no DUNDi peer of anyone: it finds B's DID through the
    // ENUM zone B publishes, and calls it without a password like anyone on the internet.
    let c_sip = free_on("127.0.0.4");
    let office_c = Server::start(
        &office(
            c_sip,
            free_on("127.0.0.4"),
            "02:00:00:00:00:0c",
            &key("a.key"),
            a_eid,
            a_dundi,
            &key("a.pub"),
            ("300", "+4989777000"),
        )
        .replace("[dundi]\nenabled = true", "[dundi]\nenabled = false")
        .replace(
            "suffixes = [\"e164.invalid\"]",
            "suffixes = [\"e164.arpa\"]",
        )
        .replace(
            "nameservers = [\"127.0.0.1:9\"]",
            &format!("nameservers = [\"{zone}\"]"),
        ),
    );
    let caller = dial(&office_c, "300", "040555123");
    assert!(
        caller.success(),
        "caller:\n{}\n{}\n{}\n{}",
        caller.report(),
        phone.report(),
        office_c.log_excerpt(),
        office_b.log_excerpt()
    );
    let out = wanted(&office_c.db, Direction::Outgoing);
    assert_eq!(out.route_kind, RouteKind::Sip, "{out:?}");
    assert!(
        out.route_source
            .as_deref()
            .is_some_and(|s| s.contains("ENUM")),
        "{out:?}"
    );
    assert_eq!(
        out.route_target.as_deref(),
        Some(format!("sip:+4940555123@{b_sip}").as_str()),
        "{out:?}"
    );
    let inc = records(&office_b.db)
        .into_iter()
        .find(|r| r.caller_e164.as_deref() == Some("+4989777000"))
        .expect("B's record of C's call");
    assert_eq!(inc.direction, Direction::Incoming, "{inc:?}");
    assert_eq!(
        inc.route_source.as_deref(),
        Some("internet 127.0.0.4"),
        "{inc:?}"
    );
    assert_eq!(inc.extension.as_deref(), Some("200"), "{inc:?}");
}
