//! Number routing end to end: ENUM answers from a real DNS server on loopback (the embedded
//! hickory-server `ZoneServer`, run in this test process), calls from sipp (extension 100) to
//! the SIP target ENUM and SRV name (a sipp uas), ENUM misses and failed targets going to the
//! PSTN trunk (a sipp uas that challenges with 407 like a provider), a silent DNS server costing
//! no more than the budget, `pasarela route`, and the private ENUM zone queried with `kdig`.
mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::dns::{zone, Dns};
use common::{
    call_config, free_port, require_program, rtp_port_range, server_program, sipp_dial_100,
    sipp_spawn, Server, SippProc, SippResult,
};
use pasarela::cdr::{
    CallRecord, CdrDb, Direction, Disposition, Filter, Page, Price, Rate, RouteKind, Sort,
};
use pasarela::routing::zone_server::{Zone, ZoneRecord};

const HARD: Duration = Duration::from_secs(60);

/// The ENUM tree `e164.test` with one NAPTR for +49305551234 whose regexp keeps the national
/// part: `sip:305551234@<host>`.
fn enum_tree(host: &str) -> Zone {
    zone(
        "e164.test",
        vec![ZoneRecord::Naptr {
            name: "4.3.2.1.5.5.5.0.3.9.4".into(),
            order: 100,
            preference: 10,
            flags: "u".into(),
            services: "E2U+sip".into(),
            regexp: format!(r"!^\+49(.*)$!sip:\1@{host}!"),
            replacement: ".".into(),
        }],
    )
}

/// `[calls]` lines plus the routing sections: Berlin numbering, ENUM under e164.test asked at
/// `dns`, and the trunk `carrier` at 127.0.0.1:`trunk_port` (national numbers, digest user
/// trunkuser).
fn routing_config(dns: SocketAddr, trunk_port: u16, budget_ms: u64) -> String {
    format!(
        r#"failover_ms = 1500

[numbering]
country_code = "49"
area_code = "30"

[enum]
suffixes = ["e164.test"]
nameservers = ["{dns}"]
budget_ms = {budget_ms}

[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:{trunk_port}"
username = "trunkuser"
password = "trunkpass"
number_format = "national"
"#
    )
}

struct Office {
    server: Server,
}

impl Office {
    fn start(routing: &str) -> Office {
        require_program("sipp", "sip-tester");
        Office {
            server: Server::start(&call_config(routing, rtp_port_range())),
        }
    }

    /// A sipp uas on `port` running `scenario` in the background.
    fn far_end(&self, name: &str, scenario: &str, port: u16) -> SippProc {
        sipp_spawn(
            self.server.dir(),
            name,
            scenario,
            self.server.udp,
            "u1",
            port,
            &["-s", "far"],
        )
        .listening()
    }

    /// Extension 100 dials `number` (basic call: answered, BYE from the caller).
    fn call(&self, number: &str) -> SippResult {
        sipp_dial_100(
            &self.server,
            "caller-100",
            "call_uac_basic.xml",
            number,
            self.server.udp,
            "u1",
            &[],
        )
        .wait(HARD)
    }

    fn assert_ok(&self, what: &str, res: &SippResult, others: &[&SippResult]) {
        if !res.success() {
            let rest: Vec<String> = others.iter().map(|o| o.report()).collect();
            panic!(
                "{what}: sipp failed\n{}\n=== others ===\n{}\n{}",
                res.report(),
                rest.join("\n"),
                self.server.log_excerpt()
            );
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.server.log_path()).unwrap_or_default()
    }

    /// The call records in the server's database, newest first (waits up to 2 s for `n`).
    /// Rate tables in the running server's database: the trunk `carrier` at 0.05/min plus a
    /// 0.01 connect fee (60/60), and the PSTN reference at 0.10/min (60/60) for savings. The
    /// record writer picks them up for the next calls.
    fn set_rates(&self) {
        let mut db = CdrDb::open(&self.server.db).expect("open the database");
        let price = |p: &str| Price::parse(p, false).expect("price");
        db.create_rate_table("carrier", "EUR", false)
            .expect("carrier table");
        db.set_rate_table_lines("carrier", &["carrier"])
            .expect("carrier line");
        db.put_rate(
            "carrier",
            &Rate {
                prefix: "49".into(),
                description: "Germany".into(),
                per_minute: price("0.05"),
                connect_fee: price("0.01"),
                first_s: 60,
                next_s: 60,
            },
        )
        .expect("carrier rate");
        db.create_rate_table("reference", "EUR", true)
            .expect("reference table");
        db.put_rate(
            "reference",
            &Rate {
                prefix: "49".into(),
                description: "Germany (PSTN list price)".into(),
                per_minute: price("0.10"),
                connect_fee: price("0"),
                first_s: 60,
                next_s: 60,
            },
        )
        .expect("reference rate");
    }

    fn records(&self, n: usize) -> Vec<CallRecord> {
        let mut list = Vec::new();
        for _ in 0..20 {
            let db = CdrDb::open(&self.server.db).expect("open the call records");
            list = db
                .list(&Filter::default(), Sort::default(), Page::number(1, 100))
                .expect("list the call records");
            if list.len() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        list
    }
}

#[test]
fn enum_hit_calls_the_sip_target_found_through_srv() {
    let target_port = free_port();
    let dns = Dns::start(vec![
        enum_tree("target.test"),
        zone(
            "target.test",
            vec![
                ZoneRecord::Srv {
                    name: "_sip._udp".into(),
                    priority: 10,
                    weight: 10,
                    port: target_port,
                    target: "uas.target.test.".into(),
                },
                ZoneRecord::A {
                    name: "uas".into(),
                    addr: Ipv4Addr::LOCALHOST,
                },
            ],
        ),
    ]);
    let office = Office::start(&routing_config(dns.addr(), free_port(), 500));
    office.set_rates();
    let target = office.far_end("target", "call_uas_answer.xml", target_port);
    let caller = office.call("030 5551234".replace(' ', "").as_str());
    let target = target.wait(HARD);
    office.assert_ok("caller", &caller, &[&target]);
    office.assert_ok("ENUM target", &target, &[&caller]);
    let log = office.log();
    assert!(
        log.contains("sip:305551234@target.test"),
        "the route names the ENUM URI:\n{}",
        office.server.log_excerpt()
    );
    let records = office.records(1);
    let r = records.first().expect("a call record");
    assert_eq!(r.route_kind, RouteKind::Sip, "{r:?}");
    assert_eq!(r.disposition, Disposition::Answered, "{r:?}");
    assert_eq!(r.direction, Direction::Outgoing, "{r:?}");
    assert_eq!(r.callee_e164.as_deref(), Some("+49305551234"), "{r:?}");
    assert_eq!(r.extension.as_deref(), Some("100"), "{r:?}");
    assert!(
        r.route_target
            .as_deref()
            .is_some_and(|t| t.contains("sip:305551234@target.test")),
        "{r:?}"
    );
    // The caller talks for 1 s; the PSTN bypass is free and saves the reference price of a
    // first 60 s increment.
    assert!((1..=3).contains(&r.billable_s), "{r:?}");
    assert!(r.duration_s >= r.billable_s, "{r:?}");
    assert_eq!(r.cost_minor, Some(0), "{r:?}");
    assert_eq!(r.reference_cost_minor, Some(10), "{r:?}");
    assert_eq!(r.savings_minor, Some(10), "{r:?}");
}

#[test]
fn enum_miss_goes_to_the_trunk_which_challenges() {
    let trunk_port = free_port();
    let dns = Dns::start(vec![enum_tree("target.test")]);
    let office = Office::start(&routing_config(dns.addr(), trunk_port, 500));
    office.set_rates();
    let trunk = office.far_end("trunk", "trunk_uas_auth.xml", trunk_port);
    let caller = office.call("0305559999");
    let trunk = trunk.wait(HARD);
    office.assert_ok("caller", &caller, &[&trunk]);
    office.assert_ok("trunk", &trunk, &[&caller]);
    assert!(
        trunk.log_text().contains("trunk_ruri_user 0305559999"),
        "the trunk gets the national form:\n{}",
        trunk.log_text()
    );
    // The miss is cached (negative, for the SOA minimum); SIGUSR1 lists the cache, SIGUSR2
    // flushes it.
    let wait_for = |needle: &str| {
        for _ in 0..50 {
            if office.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no {needle:?} in the log:\n{}", office.server.log_excerpt());
    };
    let web = office.server.web.expect("listening web");
    let (_, _, metrics) = common::http_get(web, "/metrics");
    assert_eq!(
        common::metric_sample(
            &metrics,
            "pasarela_calls_ended_total{route=\"pstn\",disposition=\"answered\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // Over the trunk: its table's price (60 s charged at 0.05 + 0.01 connect fee), no savings.
    let records = office.records(1);
    let r = records.first().expect("a call record");
    assert_eq!(r.route_kind, RouteKind::Pstn, "{r:?}");
    assert_eq!(r.route_target.as_deref(), Some("carrier"), "{r:?}");
    assert!((1..=3).contains(&r.billable_s), "{r:?}");
    assert_eq!(r.cost_minor, Some(6), "{r:?}");
    assert_eq!(r.currency.as_deref(), Some("EUR"), "{r:?}");
    assert_eq!(r.rate_table.as_deref(), Some("carrier"), "{r:?}");
    assert_eq!(r.rate_prefix.as_deref(), Some("49"), "{r:?}");
    assert_eq!(r.savings_minor, Some(0), "{r:?}");
    common::signal(office.server.pid(), "USR1");
    wait_for("ENUM cache: 9.9.9.9.5.5.5.0.3.9.4.e164.test");
    common::signal(office.server.pid(), "USR2");
    wait_for("ENUM cache flushed");
}

#[test]
fn a_failing_enum_target_fails_over_to_the_trunk() {
    let target_port = free_port();
    let trunk_port = free_port();
    let dns = Dns::start(vec![enum_tree(&format!("127.0.0.1:{target_port}"))]);
    let office = Office::start(&routing_config(dns.addr(), trunk_port, 500));
    let target = office.far_end("target", "target_uas_503.xml", target_port);
    let trunk = office.far_end("trunk", "trunk_uas_auth.xml", trunk_port);
    let caller = office.call("0305551234");
    let target = target.wait(HARD);
    let trunk = trunk.wait(HARD);
    office.assert_ok("caller", &caller, &[&target, &trunk]);
    office.assert_ok("ENUM target (503)", &target, &[&caller]);
    office.assert_ok("trunk", &trunk, &[&caller]);
    assert!(target.log_text().contains("target_ruri_user 305551234"));
    assert!(trunk.log_text().contains("trunk_ruri_user 0305551234"));
    let records = office.records(1);
    let r = records.first().expect("a call record");
    assert_eq!(
        r.route_kind,
        RouteKind::Pstn,
        "answered by the trunk after the ENUM target: {r:?}"
    );
    assert_eq!(r.route_target.as_deref(), Some("carrier"), "{r:?}");
    assert_eq!(r.disposition, Disposition::Answered, "{r:?}");

    // A premium-rate number (barred by default) is refused with 403 — sipp's scenario wants
    // 404 and fails, which does not matter here — and the refusal is recorded. The digest uri
    // must be the Request-URI.
    let refused = sipp_dial_100(
        &office.server,
        "caller-100-premium",
        "call_uac_unknown.xml",
        "09001234567",
        office.server.udp,
        "u1",
        &[],
    )
    .wait(HARD);
    let _ = refused;
    let records = office.records(2);
    assert!(
        records
            .iter()
            .any(|r| r.sip_status == 403 && r.callee == "09001234567"),
        "{records:?}"
    );
}

/// Runs `pasarela route` with a config file holding `routing` (and extension 100).
fn route_cli(dir: &Path, routing: &str, args: &[&str]) -> (bool, String) {
    let path = dir.join("route.toml");
    std::fs::write(
        &path,
        format!(
            "[calls]\n{routing}\n[store]\npath = \"{}\"\n\n[log]\nlevel = \"warn\"\n\n[[extension]]\nnumber = \"100\"\npassword = \"secret-x-100\"\n\n[[extension]]\nnumber = \"101\"\npassword = \"secret-y-101\"\npermissions = [\"internal\"]\n",
            dir.join("route.db").display()
        ),
    )
    .unwrap();
    let out = Command::new(server_program())
        .arg("--config")
        .arg(&path)
        .arg("route")
        .args(args)
        .output()
        .expect("run pasarela route");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn decided_ms(text: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix("decided in "))
        .and_then(|l| l.trim_end_matches(" ms").parse().ok())
        .unwrap_or_else(|| panic!("no timing in:\n{text}"))
}

#[test]
fn route_command_explains_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let dns = Dns::start(vec![enum_tree("sip.example.test:5080")]);
    let routing = routing_config(dns.addr(), 5090, 500);

    let (ok, text) = route_cli(dir.path(), &routing, &["030 555 1234", "--from", "100"]);
    assert!(ok, "{text}");
    assert!(text.contains("+49305551234"), "{text}");
    assert!(
        text.contains("sip:305551234@sip.example.test:5080"),
        "{text}"
    );
    assert!(text.contains("NAPTR"), "each lookup is shown: {text}");
    assert!(text.contains("sip:0305551234@127.0.0.1:5090"), "{text}");

    let (ok, text) = route_cli(
        dir.path(),
        &routing,
        &["0044 20 7946 0000", "--from", "101"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("403"), "101 may only call internally: {text}");

    let (_, text) = route_cli(dir.path(), &routing, &["101"]);
    assert!(text.contains("route: extension 101"), "{text}");
}

#[test]
fn a_silent_dns_server_costs_the_budget_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    // Bound and never read: queries vanish like packets to a dead delegation.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let routing = routing_config(silent.local_addr().unwrap(), 5090, 300);
    let (ok, text) = route_cli(dir.path(), &routing, &["0305551234", "--from", "100"]);
    assert!(ok, "{text}");
    let ms = decided_ms(&text);
    assert!(
        (290.0..400.0).contains(&ms),
        "decided in {ms} ms with a 300 ms budget:\n{text}"
    );
    assert!(text.contains("sip:0305551234@127.0.0.1:5090"), "{text}");
}

#[test]
fn the_private_enum_zone_publishes_the_dids() {
    let kdig = require_program("kdig", "knot-dnsutils");
    let port = free_port();
    let template = call_config(
        &format!(
            "\n[enum_zone]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\nsuffix = \"e164.office.test\"\nsip_host = \"pbx.office.test\"\n"
        ),
        rtp_port_range(),
    )
    .replace(
        "name = \"Reception\"",
        "name = \"Reception\"\ndid = \"+4930123456\"",
    );
    let server = Server::start(&template);
    let query = |name: &str| {
        let out = Command::new(&kdig)
            .args(["@127.0.0.1", "-p", &port.to_string(), "NAPTR", name])
            .output()
            .expect("run kdig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = query("6.5.4.3.2.1.0.3.9.4.e164.office.test");
    assert!(
        text.contains("sip:+4930123456@pbx.office.test"),
        "{text}\n{}",
        server.log_excerpt()
    );
    let text = query("7.7.7.3.2.1.0.3.9.4.e164.office.test");
    assert!(text.contains("NXDOMAIN"), "{text}");

    // The admin gives 101 a DID and reloads (SIGHUP): the zone follows without a restart.
    let path = server.dir().join("pasarela.toml");
    let edited = std::fs::read_to_string(&path).unwrap().replace(
        "name = \"Office\"",
        "name = \"Office\"\ndid = \"+4930123777\"",
    );
    std::fs::write(&path, edited).unwrap();
    common::signal(server.pid(), "HUP");
    let mut text = String::new();
    for _ in 0..50 {
        text = query("7.7.7.3.2.1.0.3.9.4.e164.office.test");
        if text.contains("sip:+4930123777@pbx.office.test") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        text.contains("sip:+4930123777@pbx.office.test"),
        "{text}\n{}",
        server.log_excerpt()
    );
}
