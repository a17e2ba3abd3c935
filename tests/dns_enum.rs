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
        out.contains(
            r#"NAPTR	100 10 "u" "E2U+sip" "!^.*$!sip:+4930123456@pbx.example.test:5070!" ."#
        ),
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
    assert!(
        out.contains("!^.*$!sip:+4930123457@pbx.example.test!"),
        "{out}"
    );

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

// ---------------------------------------------------------------------------------------------
// ENUM look-ups through the zone server.

use std::time::Duration;

use pasarela::routing::{
    CacheHit, Destination, EnumResolver, EnumSettings, LocateError, Locator, LookupStep, QueryType,
    StepOutcome,
};
use pasarela::sip::peer::Proto;
use pasarela::sip::uri::{SipUri, Uri};
use tokio::time::Instant;

const SUFFIX: &str = "e164.example";

fn naptr(name: &str, order: u16, flags: &str, regexp: &str, replacement: &str) -> ZoneRecord {
    ZoneRecord::Naptr {
        name: name.into(),
        order,
        preference: 10,
        flags: flags.into(),
        services: "E2U+sip".into(),
        regexp: regexp.into(),
        replacement: replacement.into(),
    }
}

/// The ENUM test zone: a hit with a back-reference, a chain, a loop and an over-long chain.
fn enum_test_zone() -> Zone {
    let mut records = vec![
        // +4930123456: a hit with a back-reference.
        naptr(
            "6.5.4.3.2.1.0.3.9.4",
            100,
            "u",
            r"!^\+4930(.*)$!sip:\1@example.test!",
            ".",
        ),
        // +4930123457: an unusable rule and a usable one in the same order group.
        naptr(
            "7.5.4.3.2.1.0.3.9.4",
            100,
            "u",
            "!^(.*$!sip:broken@example.test!",
            ".",
        ),
        naptr(
            "7.5.4.3.2.1.0.3.9.4",
            100,
            "u",
            "!^.*$!sip:ok@example.test!",
            ".",
        ),
        // +4930123450: a non-terminal record, then the terminal one.
        naptr("0.5.4.3.2.1.0.3.9.4", 10, "", "", "chain.e164.example."),
        naptr("chain", 100, "u", "!^.*$!sip:chained@example.test!", "."),
        // +4930123451: a loop.
        naptr("1.5.4.3.2.1.0.3.9.4", 10, "", "", "loop-a.e164.example."),
        naptr("loop-a", 10, "", "", "loop-b.e164.example."),
        naptr("loop-b", 10, "", "", "loop-a.e164.example."),
    ];
    // +4930123452: a chain of 7 hops, longer than max_chain 5.
    records.push(naptr(
        "2.5.4.3.2.1.0.3.9.4",
        10,
        "",
        "",
        "hop1.e164.example.",
    ));
    for i in 1..7 {
        records.push(naptr(
            &format!("hop{i}"),
            10,
            "",
            "",
            &format!("hop{}.e164.example.", i + 1),
        ));
    }
    records.push(naptr("hop7", 100, "u", "!^.*$!sip:far@example.test!", "."));
    Zone {
        origin: SUFFIX.into(),
        ttl: 300,
        negative_ttl: 30,
        records,
    }
}

fn settings(suffixes: &[&str], nameserver: SocketAddr) -> EnumSettings {
    EnumSettings {
        suffixes: suffixes.iter().map(|s| s.to_string()).collect(),
        nameservers: vec![nameserver],
        ..EnumSettings::default()
    }
}

/// A UDP socket on loopback that never answers.
fn silent_server() -> (std::net::UdpSocket, SocketAddr) {
    let sock = std::net::UdpSocket::bind(loopback()).expect("bind silent server");
    let addr = sock.local_addr().expect("silent server address");
    (sock, addr)
}

fn in_ms(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn uris(answer: &pasarela::routing::EnumAnswer) -> Vec<&str> {
    answer.targets.iter().map(|t| t.uri.as_str()).collect()
}

fn outcomes(steps: &[LookupStep]) -> Vec<&StepOutcome> {
    steps.iter().map(|s| &s.outcome).collect()
}

#[tokio::test]
async fn enum_hit_then_cache() {
    let server = ZoneServer::start(loopback(), vec![enum_test_zone()])
        .await
        .expect("zone server");
    let resolver = EnumResolver::new(settings(&[SUFFIX], server.local_addr())).expect("resolver");

    // Look-ups are Send: the router runs them in spawned tasks.
    let r = resolver.clone();
    let answer = tokio::spawn(async move { r.lookup(&number("+4930123456"), in_ms(2000)).await })
        .await
        .expect("task");
    assert_eq!(uris(&answer), vec!["sip:123456@example.test"]);
    let t = &answer.targets[0];
    assert_eq!(
        (t.suffix.as_str(), t.order, t.preference),
        (SUFFIX, 100, 10)
    );
    assert_eq!(t.service, "E2U+sip");
    assert_eq!(outcomes(&answer.steps), vec![&StepOutcome::Records(1)]);
    let line = answer.steps[0].to_string();
    assert!(
        line.starts_with("e164.example 6.5.4.3.2.1.0.3.9.4.e164.example: 1 NAPTR in "),
        "{line}"
    );

    // Warm: from the cache, no DNS.
    let answer = resolver.lookup(&number("+4930123456"), in_ms(2000)).await;
    assert_eq!(uris(&answer), vec!["sip:123456@example.test"]);
    assert!(matches!(
        answer.steps[0].outcome,
        StepOutcome::Cached {
            hit: CacheHit::Records(1),
            ..
        }
    ));
    // The warm path is fast (a generous bound: this is behaviour, not a benchmark).
    let n = 2000;
    let started = std::time::Instant::now();
    for _ in 0..n {
        let a = resolver.lookup(&number("+4930123456"), in_ms(2000)).await;
        assert_eq!(a.targets.len(), 1);
    }
    let per = started.elapsed() / n;
    eprintln!("warm ENUM look-up: {per:?}");
    assert!(per < Duration::from_millis(1), "{per:?}");

    // A number without records: NXDOMAIN, cached for the SOA minimum (30 s).
    let answer = resolver.lookup(&number("+4930999999"), in_ms(2000)).await;
    assert!(answer.targets.is_empty());
    assert_eq!(outcomes(&answer.steps), vec![&StepOutcome::NxDomain]);
    let answer = resolver.lookup(&number("+4930999999"), in_ms(2000)).await;
    assert!(matches!(
        answer.steps[0].outcome,
        StepOutcome::Cached {
            hit: CacheHit::NxDomain,
            ..
        }
    ));
    let entries = resolver.cache_entries();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let nx = entries
        .iter()
        .find(|e| e.answer == CacheHit::NxDomain)
        .expect("negative entry");
    assert_eq!(nx.domain, "9.9.9.9.9.9.0.3.9.4.e164.example");
    assert!(nx.expires_in <= Duration::from_secs(30) && nx.expires_in > Duration::from_secs(25));
    let pos = entries
        .iter()
        .find(|e| e.answer == CacheHit::Records(1))
        .expect("positive entry");
    assert!(pos.expires_in > Duration::from_secs(290), "{pos:?}");

    // After a flush the zone's current content is seen: no other cache (hickory's) in between.
    let mut zone = enum_test_zone();
    zone.records[0] = naptr(
        "6.5.4.3.2.1.0.3.9.4",
        100,
        "u",
        "!^.*$!sip:new@example.test!",
        ".",
    );
    server.replace_zone(zone).expect("replace zone");
    let answer = resolver.lookup(&number("+4930123456"), in_ms(2000)).await;
    assert_eq!(
        uris(&answer),
        vec!["sip:123456@example.test"],
        "still cached"
    );
    resolver.flush_cache();
    assert!(resolver.cache_entries().is_empty());
    let answer = resolver.lookup(&number("+4930123456"), in_ms(2000)).await;
    assert_eq!(outcomes(&answer.steps), vec![&StepOutcome::Records(1)]);
    assert_eq!(uris(&answer), vec!["sip:new@example.test"]);
}

#[tokio::test]
async fn enum_skips_broken_rules() {
    let server = ZoneServer::start(loopback(), vec![enum_test_zone()])
        .await
        .expect("zone server");
    let resolver = EnumResolver::new(settings(&[SUFFIX], server.local_addr())).expect("resolver");
    let answer = resolver.lookup(&number("+4930123457"), in_ms(2000)).await;
    assert_eq!(uris(&answer), vec!["sip:ok@example.test"]);
    assert_eq!(answer.steps.len(), 2, "{:?}", answer.steps);
    assert!(
        matches!(&answer.steps[1].outcome, StepOutcome::SkippedRule(why) if why.contains("regexp")),
        "{:?}",
        answer.steps
    );
}

#[tokio::test]
async fn enum_follows_chains_and_stops_loops() {
    let server = ZoneServer::start(loopback(), vec![enum_test_zone()])
        .await
        .expect("zone server");
    let resolver = EnumResolver::new(settings(&[SUFFIX], server.local_addr())).expect("resolver");

    let answer = resolver.lookup(&number("+4930123450"), in_ms(2000)).await;
    assert_eq!(uris(&answer), vec!["sip:chained@example.test"]);
    let domains: Vec<&str> = answer.steps.iter().map(|s| s.domain.as_str()).collect();
    assert_eq!(
        domains,
        vec!["0.5.4.3.2.1.0.3.9.4.e164.example", "chain.e164.example"]
    );

    let started = Instant::now();
    let answer = resolver.lookup(&number("+4930123451"), in_ms(2000)).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(answer.targets.is_empty());
    let last = answer.steps.last().expect("steps");
    assert_eq!(last.outcome, StepOutcome::Loop);
    assert_eq!(last.domain, "loop-a.e164.example");
    assert_eq!(answer.steps.len(), 4, "{:?}", answer.steps);

    // Seven hops with max_chain 5: stopped after the fifth.
    let answer = resolver.lookup(&number("+4930123452"), in_ms(2000)).await;
    assert!(answer.targets.is_empty());
    assert_eq!(answer.steps.len(), 7, "{:?}", answer.steps);
    assert_eq!(answer.steps[6].outcome, StepOutcome::Loop);
    assert_eq!(answer.steps[6].domain, "hop6.e164.example");
    // With a longer limit it is found.
    let mut s = settings(&[SUFFIX], server.local_addr());
    s.max_chain = 7;
    let resolver = EnumResolver::new(s).expect("resolver");
    let answer = resolver.lookup(&number("+4930123452"), in_ms(2000)).await;
    assert_eq!(uris(&answer), vec!["sip:far@example.test"]);
}

#[tokio::test]
async fn enum_one_tree_silent_other_answers_within_budget() {
    let server = ZoneServer::start(loopback(), vec![enum_test_zone()])
        .await
        .expect("zone server");
    let (_silent, silent_addr) = silent_server();
    // The broken tree comes first in the configuration; it is served only by the silent server.
    let mut s = settings(&["e164.silent", SUFFIX], server.local_addr());
    s.tree_nameservers = vec![("e164.silent.".into(), vec![silent_addr])];
    let resolver = EnumResolver::new(s).expect("resolver");
    let budget = Duration::from_millis(400);
    let started = Instant::now();
    let answer = resolver
        .lookup(&number("+4930123456"), started + budget)
        .await;
    let elapsed = started.elapsed();
    assert_eq!(uris(&answer), vec!["sip:123456@example.test"]);
    assert!(elapsed < budget + Duration::from_millis(100), "{elapsed:?}");
    let silent: Vec<&LookupStep> = answer
        .steps
        .iter()
        .filter(|s| s.suffix == "e164.silent")
        .collect();
    assert_eq!(silent.len(), 1);
    assert_eq!(silent[0].outcome, StepOutcome::Timeout);
    // Timeouts are not cached; the good answer is.
    let entries = resolver.cache_entries();
    assert_eq!(entries.len(), 1, "{entries:?}");

    // A tree the server refuses (not its zone) fails at once and does not hide the other.
    let resolver = EnumResolver::new(settings(&["e164.refused", SUFFIX], server.local_addr()))
        .expect("resolver");
    let started = Instant::now();
    let answer = resolver.lookup(&number("+4930123456"), in_ms(2000)).await;
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert_eq!(uris(&answer), vec!["sip:123456@example.test"]);
    assert!(
        matches!(&answer.steps[0].outcome, StepOutcome::Error(_)),
        "{:?}",
        answer.steps
    );
}

#[tokio::test]
async fn enum_silent_server_returns_at_the_deadline() {
    let (_silent, silent_addr) = silent_server();
    let resolver =
        EnumResolver::new(settings(&[SUFFIX, "e164.arpa"], silent_addr)).expect("resolver");
    let budget = Duration::from_millis(300);
    let started = Instant::now();
    let answer = resolver
        .lookup(&number("+4930123456"), started + budget)
        .await;
    let elapsed = started.elapsed();
    assert!(elapsed >= budget - Duration::from_millis(5), "{elapsed:?}");
    assert!(elapsed < budget + Duration::from_millis(100), "{elapsed:?}");
    assert!(answer.targets.is_empty());
    assert_eq!(
        outcomes(&answer.steps),
        vec![&StepOutcome::Timeout, &StepOutcome::Timeout]
    );
    assert!(resolver.cache_entries().is_empty());
    // A deadline already past: no wait at all.
    let started = Instant::now();
    let answer = resolver.lookup(&number("+4930123456"), started).await;
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(answer.steps[0].outcome, StepOutcome::Timeout);
}

// ---------------------------------------------------------------------------------------------
// RFC 3263 server location through the zone server.

fn sip(s: &str) -> SipUri {
    match Uri::parse(s) {
        Ok(Uri::Sip(u)) => u,
        other => panic!("{s}: {other:?}"),
    }
}

fn a(name: &str, addr: &str) -> ZoneRecord {
    ZoneRecord::A {
        name: name.into(),
        addr: addr.parse().unwrap(),
    }
}

fn srv(name: &str, priority: u16, port: u16, target: &str) -> ZoneRecord {
    ZoneRecord::Srv {
        name: name.into(),
        priority,
        weight: 0,
        port,
        target: target.into(),
    }
}

fn locate_test_zone() -> Zone {
    let sip_naptr = |order, services: &str, replacement: &str| ZoneRecord::Naptr {
        name: "naptr".into(),
        order,
        preference: 10,
        flags: "s".into(),
        services: services.into(),
        regexp: String::new(),
        replacement: replacement.into(),
    };
    Zone {
        origin: "example.test".into(),
        ttl: 60,
        negative_ttl: 10,
        records: vec![
            // example.test: SRV for UDP at two priorities; no NAPTR.
            srv("_sip._udp", 20, 5064, "sip2"),
            srv("_sip._udp", 10, 5062, "sip1"),
            a("sip1", "127.0.0.2"),
            a("sip1", "127.0.0.3"),
            a("sip2", "127.0.0.4"),
            ZoneRecord::Aaaa {
                name: "sip2".into(),
                addr: "::1".parse().unwrap(),
            },
            // naptr.example.test: NAPTR to TLS first (no SRV there) and to TCP.
            sip_naptr(10, "SIPS+D2T", "_sips._tcp.naptr.example.test."),
            sip_naptr(20, "SIP+D2T", "_sip._tcp.naptr.example.test."),
            srv("_sip._tcp.naptr", 10, 5070, "tcp.naptr"),
            a("tcp.naptr", "127.0.0.5"),
            // plain.example.test: only an address.
            a("plain", "127.0.0.6"),
        ],
    }
}

fn dest(proto: Proto, addr: &str, target: &str) -> Destination {
    Destination {
        proto,
        addr: addr.parse().unwrap(),
        target: target.into(),
    }
}

#[tokio::test]
async fn locate_srv_and_addresses_in_priority_order() {
    let server = ZoneServer::start(loopback(), vec![locate_test_zone()])
        .await
        .expect("zone server");
    let locator = Locator::new(&settings(&[], server.local_addr())).expect("locator");
    let expected = vec![
        dest(Proto::Udp, "127.0.0.2:5062", "sip1.example.test"),
        dest(Proto::Udp, "127.0.0.3:5062", "sip1.example.test"),
        dest(Proto::Udp, "127.0.0.4:5064", "sip2.example.test"),
        dest(Proto::Udp, "[::1]:5064", "sip2.example.test"),
    ];
    // transport=udp: SRV for UDP only.
    let found = locator
        .locate(&sip("sip:alice@example.test;transport=udp"), in_ms(2000))
        .await;
    assert_eq!(found, Ok(expected.clone()));
    // No transport: NAPTR (none), then SRV for UDP and TCP.
    let location = locator
        .locate_explained(&sip("sip:alice@Example.Test"), in_ms(2000))
        .await;
    assert_eq!(location.destinations, Ok(expected));
    assert_eq!(location.steps[0].qtype, QueryType::Naptr);
    assert_eq!(location.steps[0].outcome, StepOutcome::NoRecords);
    assert!(location
        .steps
        .iter()
        .any(|s| s.domain == "_sip._tcp.example.test" && s.outcome == StepOutcome::NxDomain));

    // NAPTR → SRV (TLS: none; TCP) → A.
    let location = locator
        .locate_explained(&sip("sip:bob@naptr.example.test"), in_ms(2000))
        .await;
    assert_eq!(
        location.destinations,
        Ok(vec![dest(
            Proto::Tcp,
            "127.0.0.5:5070",
            "tcp.naptr.example.test"
        )])
    );
    assert!(location
        .steps
        .iter()
        .any(|s| s.domain == "_sips._tcp.naptr.example.test" && s.qtype == QueryType::Srv));

    // No NAPTR, no SRV: A on 5060 over UDP.
    let found = locator
        .locate(&sip("sip:carol@plain.example.test"), in_ms(2000))
        .await;
    assert_eq!(
        found,
        Ok(vec![dest(
            Proto::Udp,
            "127.0.0.6:5060",
            "plain.example.test"
        )])
    );
    // An explicit port: A/AAAA only.
    let found = locator
        .locate(
            &sip("sip:carol@plain.example.test:5080;transport=tcp"),
            in_ms(2000),
        )
        .await;
    assert_eq!(
        found,
        Ok(vec![dest(
            Proto::Tcp,
            "127.0.0.6:5080",
            "plain.example.test"
        )])
    );
    // Nothing at all.
    let found = locator
        .locate(&sip("sip:dave@nowhere.example.test"), in_ms(2000))
        .await;
    assert_eq!(
        found,
        Err(LocateError::NotFound("nowhere.example.test".into()))
    );
    // sips: is looked for over TLS only (example.test offers no TLS) …
    let location = locator
        .locate_explained(&sip("sips:alice@example.test"), in_ms(2000))
        .await;
    assert_eq!(
        location.destinations,
        Err(LocateError::NotFound("example.test".into()))
    );
    assert!(location
        .steps
        .iter()
        .any(|s| s.domain == "_sips._tcp.example.test"));
    assert!(!location.steps.iter().any(|s| s.domain.starts_with("_sip.")));
    // … and refused over UDP before any DNS.
    let location = locator
        .locate_explained(&sip("sips:alice@example.test;transport=udp"), in_ms(2000))
        .await;
    assert_eq!(location.destinations, Err(LocateError::NoTls("udp".into())));
    assert!(location.steps.is_empty());
    // A numeric host: no DNS.
    let location = locator
        .locate_explained(&sip("sip:alice@127.0.0.9"), in_ms(2000))
        .await;
    assert_eq!(
        location.destinations,
        Ok(vec![dest(Proto::Udp, "127.0.0.9:5060", "127.0.0.9")])
    );
    assert!(location.steps.is_empty());

    // The ENUM resolver's locator shares its cache.
    let resolver = EnumResolver::new(settings(&[SUFFIX], server.local_addr())).expect("resolver");
    let shared = resolver.locator();
    shared
        .locate(&sip("sip:carol@plain.example.test"), in_ms(2000))
        .await
        .expect("located");
    assert!(resolver
        .cache_entries()
        .iter()
        .any(|e| e.domain == "plain.example.test" && e.qtype == QueryType::A));
}

#[tokio::test]
async fn locate_silent_server_times_out_at_the_deadline() {
    let (_silent, silent_addr) = silent_server();
    let locator = Locator::new(&settings(&[], silent_addr)).expect("locator");
    let budget = Duration::from_millis(300);
    let started = Instant::now();
    let found = locator
        .locate(&sip("sip:alice@example.test"), started + budget)
        .await;
    let elapsed = started.elapsed();
    assert_eq!(found, Err(LocateError::Timeout("example.test".into())));
    assert!(elapsed < budget + Duration::from_millis(100), "{elapsed:?}");
}
