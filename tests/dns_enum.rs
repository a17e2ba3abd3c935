//! DNS against a real DNS server on loopback: the embedded zone server (checked with `kdig`, the
//! Knot DNS client), ENUM look-ups through it (hits, chains, loops, broken trees, deadlines) and
//! RFC 3263 server location (NAPTR, SRV, A/AAAA).
//!
//! Every server here listens on 127.0.0.1 with port 0; nothing leaves the machine.

use std::net::SocketAddr;
use std::process::Command;

use pasarela::routing::{enum_zone, Zone, ZoneRecord, ZoneServer, E164};

fn number(s: &str) -> E164 {
    s.parse().expect("E.164 number")
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// `kdig @addr -p port [+tcp] TYPE name`; `None` (with a message) when kdig is not installed.
fn kdig(server: SocketAddr, rtype: &str, name: &str, tcp: bool) -> Option<String> {
    let mut cmd = Command::new("kdig");
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .arg("+timeout=1")
        .arg("+retry=0");
    if tcp {
        cmd.arg("+tcp");
    }
    cmd.arg(rtype).arg(name);
    match cmd.output() {
        Ok(out) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: kdig not found (Debian package knot-dnsutils)");
            None
        }
        Err(e) => panic!("running kdig: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_server_answers_kdig() {
    let dids = vec![(number("+4930123456"), "100".to_owned())];
    let server = ZoneServer::start(
        loopback(),
        vec![enum_zone(
            "e164.example",
            "pbx.example.test",
            Some(5070),
            &dids,
            60,
        )],
    )
    .await
    .expect("zone server");
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let domain = "6.5.4.3.2.1.0.3.9.4.e164.example";
    let Some(out) = tokio::task::block_in_place(|| kdig(addr, "NAPTR", domain, false)) else {
        return;
    };
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(
        out.contains(r#"NAPTR	100 10 "u" "E2U+sip" "!^.*$!sip:100@pbx.example.test:5070!" ."#),
        "{out}"
    );
    assert!(
        out.contains("Flags: qr aa"),
        "authoritative answer expected: {out}"
    );

    // The same over TCP.
    let out = tokio::task::block_in_place(|| kdig(addr, "NAPTR", domain, true)).unwrap_or_default();
    assert!(out.contains("E2U+sip"), "{out}");

    // A number that is not a DID: NXDOMAIN with the SOA for negative caching.
    let out = tokio::task::block_in_place(|| {
        kdig(addr, "NAPTR", "7.5.4.3.2.1.0.3.9.4.e164.example", false)
    })
    .unwrap_or_default();
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert!(out.contains("AUTHORITY: 1") && out.contains("SOA"), "{out}");
    // Outside every zone: REFUSED.
    let out = tokio::task::block_in_place(|| kdig(addr, "NAPTR", "example.org", false))
        .unwrap_or_default();
    assert!(out.contains("status: REFUSED"), "{out}");

    // A new DID becomes visible after replace_zone.
    let dids = vec![
        (number("+4930123456"), "100".to_owned()),
        (number("+4930123457"), "101".to_owned()),
    ];
    server
        .replace_zone(enum_zone(
            "e164.example",
            "pbx.example.test",
            None,
            &dids,
            60,
        ))
        .expect("replace zone");
    let out = tokio::task::block_in_place(|| {
        kdig(addr, "NAPTR", "7.5.4.3.2.1.0.3.9.4.e164.example", false)
    })
    .unwrap_or_default();
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("!^.*$!sip:101@pbx.example.test!"), "{out}");

    server.shutdown().await;
    // Shut down: nobody answers any more.
    let out =
        tokio::task::block_in_place(|| kdig(addr, "NAPTR", domain, false)).unwrap_or_default();
    assert!(!out.contains("E2U+sip"), "{out}");
}

#[tokio::test]
async fn zone_server_srv_and_a_records() {
    let zone = Zone {
        origin: "example.test".into(),
        ttl: 30,
        negative_ttl: 5,
        records: vec![
            ZoneRecord::Srv {
                name: "_sip._udp".into(),
                priority: 10,
                weight: 0,
                port: 5062,
                target: "sip1".into(),
            },
            ZoneRecord::A {
                name: "sip1".into(),
                addr: "127.0.0.1".parse().unwrap(),
            },
        ],
    };
    let server = ZoneServer::start(loopback(), vec![zone])
        .await
        .expect("zone server");
    let addr = server.local_addr();
    let Some(out) =
        tokio::task::spawn_blocking(move || kdig(addr, "SRV", "_sip._udp.example.test", false))
            .await
            .unwrap()
    else {
        return;
    };
    assert!(out.contains("10 0 5062 sip1.example.test."), "{out}");
}
