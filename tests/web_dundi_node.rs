//! DUNDi node settings and mappings from the dashboard, applied live (issue 17): a gateway whose
//! file does not turn DUNDi on is turned on in headless Chromium (listen address and EID set on
//! the page) and answers a DUNDi peer (the real test identity of `tests/data/dundi`, EID
//! 02:00:00:00:00:02, on 127.0.0.2) without a restart; a mapping added on the page changes
//! the peer's answer; a read-only API token cannot change node settings or mappings, an admin
//! token can (turning DUNDi off stops the answers). SIGHUP re-reads `[dundi]` (a new listen
//! address: rebound) and says plainly which other sections need a restart.
mod common;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::dundi_peer::{self, free_udp};
use common::web_client::{set_up_admin, PASSWORD};
use common::*;
use pasarela::routing::dundi::DundiHandle;
use webdriver::Browser;

const WAIT: Duration = Duration::from_secs(20);

/// The office: DUNDi not mentioned beyond the section itself (off by default).
const OFFICE: &str = r#"[sip]
listen = ["udp:{UDP}", "tcp:{TCP}"]
domain = "office.test"

[store]
path = "{DB}"

[web]
listen = "127.0.0.1:0"

[log]
level = "debug"

[numbering]
country_code = "49"

[[extension]]
number = "100"
password = "secret100"
did = "+4930123456"
"#;

fn artefacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artefacts/dundi-node")
}

/// What the peer hears from the gateway for `number` (the cache bypassed).
fn peer_asks(rt: &tokio::runtime::Runtime, peer: &DundiHandle, number: &str) -> Vec<String> {
    rt.block_on(peer.lookup_full(number, "e164", Duration::from_secs(3), true))
        .map(|r| r.answers.into_iter().map(|a| a.destination).collect())
        .unwrap_or_default()
}

/// Asks until the answers satisfy `ok` (the gateway applies in the background of the page's
/// redirect only for precache; lookups see the change at once, but be generous on a loaded
/// machine).
fn peer_until(
    rt: &tokio::runtime::Runtime,
    peer: &DundiHandle,
    number: &str,
    server: &Server,
    what: &str,
    ok: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = peer_asks(rt, peer, number);
        if ok(&got) {
            return got;
        }
        if Instant::now() > deadline {
            server.fail(&format!("{what}: the peer got {got:?} for {number}"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn dundi_turned_on_from_the_page_answers_a_peer_and_a_new_mapping_changes_the_answer() {
    let dundi_addr = free_udp("127.0.0.1");
    let mut server = Server::start(OFFICE);
    let pid = server.pid();
    let web = server.web.expect("web address");
    let base = format!("http://{web}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut client = set_up_admin(web);
    let peer_socket = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let peer_addr = peer_socket.local_addr().unwrap();
    let peer = {
        let _guard = rt.enter();
        dundi_peer::start(peer_socket, dundi_addr, None)
    };
    // Off: nobody answers on the address yet.
    assert!(peer_asks(&rt, &peer, "4930123456").is_empty());

    let br = Browser::start(server.dir(), &artefacts(), 1280, 1400);
    br.goto(&format!("{base}/login"));
    br.fill("input[name=username]", "admin");
    br.fill("input[name=password]", PASSWORD);
    br.submit("form[action='/login']");
    br.wait_for(WAIT, "the overview", |h| h.contains("<h1>Overview</h1>"));
    br.goto(&format!("{base}/dundi"));
    br.wait_for(WAIT, "the DUNDi page", |h| h.contains("id=\"node-form\""));
    assert!(br.source().contains("DUNDi is off"));

    // A bad listen address is refused, naming the field.
    br.fill("#node-form input[name=listen]", "not an address");
    br.submit("#node-form");
    br.wait_for(WAIT, "the field error", |h| h.contains("Listen on: "));

    // Turned on with our listen address and EID.
    br.goto(&format!("{base}/dundi"));
    br.wait_for(WAIT, "the DUNDi page", |h| h.contains("id=\"node-form\""));
    br.script(
        "document.querySelector('#node-form select[name=enabled]').value = 'true';",
        serde_json::json!([]),
    );
    br.fill("#node-form input[name=listen]", &dundi_addr.to_string());
    br.fill("#node-form input[name=eid]", "02:00:00:00:00:01");
    br.submit("#node-form");
    br.wait_for(WAIT, "DUNDi running", |h| {
        h.contains("class=\"our-eid\"") && h.contains(&format!("port = {}", dundi_addr.port()))
    });
    br.screenshot("01-turned-on");

    // The peer, added on the page without a key (unencrypted, as its side is).
    br.fill("#peer-form input[name=eid]", "02:00:00:00:00:02");
    br.fill("#peer-form input[name=address]", &peer_addr.to_string());
    br.fill("#peer-form input[name=qualify]", "1");
    br.submit("#peer-form");
    br.wait_for(WAIT, "the new peer", |h| {
        h.contains("data-peer=\"02:00:00:00:00:02\"")
    });

    // No mapping yet: we know the peer but answer nothing; the lookup box finds the peer's
    // number.
    assert!(peer_asks(&rt, &peer, "4930123456").is_empty());
    br.fill("#lookup-form input[name=number]", "49405551234");
    br.submit("#lookup-form");
    br.wait_for(WAIT, "the peer's answer", |h| {
        h.contains("49405551234@127.0.0.2:5090")
    });

    // A mapping with a bad pattern is refused, naming the field; then a good one.
    br.goto(&format!("{base}/dundi"));
    br.wait_for(WAIT, "the DUNDi page", |h| {
        h.contains("id=\"mapping-form\"")
    });
    br.fill(
        "#mapping-form input[name=destination]",
        "${NUMBER}@127.0.0.1:5060",
    );
    br.fill("#mapping-form input[name=numbers]", "_4930[12");
    br.submit("#mapping-form");
    br.wait_for(WAIT, "the field error", |h| h.contains("Numbers: "));
    br.fill("#mapping-form input[name=numbers]", "_4930999XXX");
    br.submit("#mapping-form");
    br.wait_for(WAIT, "the new mapping", |h| h.contains("data-mapping="));
    br.screenshot("02-mapping");

    // The peer's next query uses it: our DID and the mapping's numbers, no restart.
    let got = peer_until(&rt, &peer, "4930123456", &server, "the DID", |a| {
        !a.is_empty()
    });
    assert_eq!(got, ["4930123456@127.0.0.1:5060"]);
    let got = peer_until(&rt, &peer, "4930999123", &server, "the pattern", |a| {
        !a.is_empty()
    });
    assert_eq!(got, ["4930999123@127.0.0.1:5060"]);
    assert!(peer_asks(&rt, &peer, "4930888123").is_empty());

    // The API: a read-only token reads, cannot change; an admin token can.
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    let read = pasarela::web::api_tokens::create_scoped(
        &conn,
        "monitoring",
        pasarela::web::api_tokens::Scope::Read,
    )
    .unwrap();
    let admin = pasarela::web::api_tokens::create_scoped(
        &conn,
        "provisioning",
        pasarela::web::api_tokens::Scope::Admin,
    )
    .unwrap();
    let r = client.api_json("GET", "/api/v1/dundi/node", &read, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["running"], true, "{v}");
    assert_eq!(
        v["settings"]["listen"]["in_use"],
        dundi_addr.to_string(),
        "{v}"
    );
    assert_eq!(v["settings"]["eid"]["from_file"], false, "{v}");
    let r = client.api_json("GET", "/api/v1/dundi/mappings", &read, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let id = v["mappings"][0]["id"].as_i64().expect("the stored mapping");
    assert_eq!(v["mappings"][0]["numbers"][0], "_4930999XXX");
    let off = r#"{"enabled": false}"#;
    for (method, path, body) in [
        ("PUT", "/api/v1/dundi/node".to_owned(), off),
        (
            "POST",
            "/api/v1/dundi/mappings".to_owned(),
            r#"{"context":"e164"}"#,
        ),
        (
            "PUT",
            format!("/api/v1/dundi/mappings/{id}"),
            r#"{"context":"e164","weight":5}"#,
        ),
        ("DELETE", format!("/api/v1/dundi/mappings/{id}"), ""),
    ] {
        let r = client.api_json(method, &path, &read, body);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.body);
    }
    let r = client.api_json("PUT", "/api/v1/dundi/node", &admin, r#"{"ttl": 0}"#);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("\"field\":\"ttl\""), "{}", r.body);
    let r = client.api_json(
        "PUT",
        &format!("/api/v1/dundi/mappings/{id}"),
        &admin,
        r#"{"context":"e164","destination":"${NUMBER}@127.0.0.9:5060","numbers":["_4930999XXX"]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = peer_until(
        &rt,
        &peer,
        "4930999124",
        &server,
        "the changed mapping",
        |a| a.iter().any(|d| d.contains("127.0.0.9")),
    );
    assert_eq!(got, ["4930999124@127.0.0.9:5060"]);

    // Off through the API: the peer gets no answer any more, still without a restart.
    let r = client.api_json("PUT", "/api/v1/dundi/node", &admin, off);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = client.api_json("GET", "/api/v1/dundi", &read, "");
    assert!(r.body.contains("\"running\":false"), "{}", r.body);
    assert!(peer_asks(&rt, &peer, "4930123456").is_empty());
    assert_eq!(server.pid(), pid);
    server.assert_alive();
    rt.block_on(peer.stop());
}

/// The office with DUNDi in the file, on `listen`.
fn office_in_file(listen: SocketAddr) -> String {
    format!(
        "{OFFICE}\n[dundi]\nenabled = true\nlisten = \"{listen}\"\neid = \"02:00:00:00:00:01\"\n\n\
         [[dundi.mapping]]\ncontext = \"e164\"\ndestination = \"${{NUMBER}}@127.0.0.1:5060\"\n\n\
         [[dundi.peer]]\neid = \"02:00:00:00:00:02\"\naddress = \"PEER\"\n"
    )
}

fn wait_log(server: &Server, what: &str, needles: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_owned();
        }
        if Instant::now() > deadline {
            server.fail(&format!("no log line with {needles:?} ({what})"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn sighup_rebinds_dundi_and_names_what_needs_a_restart() {
    let first = free_udp("127.0.0.1");
    let second = free_udp("127.0.0.1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let peer_socket = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let peer_addr = peer_socket.local_addr().unwrap();
    let template = office_in_file(first).replace("PEER", &peer_addr.to_string());
    let mut server = Server::start(&template);
    let pid = server.pid();
    // The peer knows the gateway at its new address already: it answers there only after the
    // reload.
    let peer = {
        let _guard = rt.enter();
        dundi_peer::start(peer_socket, second, None)
    };
    assert!(peer_asks(&rt, &peer, "4930123456").is_empty());

    let cfg = server.dir().join("pasarela.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let edited = text
        .replace(&first.to_string(), &second.to_string())
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    assert_ne!(text, edited);
    std::fs::write(&cfg, edited).unwrap();
    signal(pid, "HUP");
    let line = wait_log(&server, "the DUNDi reload", &["[dundi] reloaded:"]);
    assert!(
        line.contains(&format!("listen {first} → {second}")),
        "{line}"
    );
    wait_log(
        &server,
        "the restart note",
        &["[web] changed: needs a restart"],
    );
    let got = peer_until(&rt, &peer, "4930123456", &server, "after SIGHUP", |a| {
        !a.is_empty()
    });
    assert_eq!(got, ["4930123456@127.0.0.1:5060"]);
    assert_eq!(server.pid(), pid);
    server.assert_alive();
    rt.block_on(peer.stop());
}

/// The call records, newest first, once there are `want` of them.
fn records_until(server: &Server, want: usize) -> Vec<pasarela::cdr::CallRecord> {
    use pasarela::cdr::{CdrDb, Filter, Page, Sort};
    let deadline = Instant::now() + WAIT;
    loop {
        let records = CdrDb::open(&server.db)
            .and_then(|db| db.list(&Filter::default(), Sort::default(), Page::number(1, 10)))
            .unwrap_or_default();
        if records.len() >= want {
            return records;
        }
        if Instant::now() > deadline {
            server.fail(&format!("{} call records, wanted {want}", records.len()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last "inbound policy reloaded" line names `want` DUNDi peers.
fn wait_trusted_peers(server: &Server, want: usize) {
    let deadline = Instant::now() + WAIT;
    let needle = format!("dundi_peers={want}");
    loop {
        let text = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        let last = text
            .lines()
            .rfind(|l| l.contains("inbound policy reloaded"))
            .unwrap_or_default();
        if last.contains(&needle) {
            return;
        }
        if Instant::now() > deadline {
            server.fail(&format!("the trust model never named {want} DUNDi peers"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// sipp from the peer's address (127.0.0.2) calls our DID without a password; extension 100
/// (a registered sipp) answers.
fn call_from_the_peer(server: &Server, phone_port: u16) {
    let phone = sipp_spawn(
        server.dir(),
        "phone-100",
        "call_uas_answer.xml",
        server.udp,
        "u1",
        phone_port,
        &[],
    )
    .listening();
    let caller = sipp_spawn_on(
        server.dir(),
        "peer",
        "trunk_uac_did.xml",
        server.udp,
        "u1",
        "127.0.0.2",
        free_port(),
        &["-s", "030123456", "-key", "caller", "4940555123"],
    );
    caller.wait(Duration::from_secs(40)).assert_success(server);
    phone.wait(Duration::from_secs(40)).assert_success(server);
}

/// Issue 17's leftover: DUNDi peers configured on the dashboard are trusted for inbound calls
/// (named as the peer's in the records) when DUNDi is turned on from the dashboard, while the
/// peer is enabled; a disabled peer's next call is an internet call.
#[test]
fn a_dashboard_peer_is_trusted_for_inbound_calls_while_enabled() {
    let dundi_addr = free_udp("127.0.0.1");
    let (lo, hi) = rtp_port_range();
    let template =
        format!("{OFFICE}\n[inbound]\npublic = true\n\n[enum]\nsuffixes = []\n\n[media]\nrtp_ports = \"{lo}-{hi}\"\n");
    let mut server = Server::start(&template);
    let web = server.web.expect("web address");
    let mut client = common::web_client::Client::new(web);
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    let admin = pasarela::web::api_tokens::create_scoped(
        &conn,
        "provisioning",
        pasarela::web::api_tokens::Scope::Admin,
    )
    .unwrap();
    let on =
        format!(r#"{{"enabled": true, "listen": "{dundi_addr}", "eid": "02:00:00:00:00:01"}}"#);
    let r = client.api_json("PUT", "/api/v1/dundi/node", &admin, &on);
    assert_eq!(r.status, 200, "{}", r.body);
    let peer_addr = free_udp("127.0.0.2");
    let peer = format!(r#"{{"eid": "02:00:00:00:00:02", "address": "{peer_addr}"}}"#);
    let r = client.api_json("POST", "/api/v1/dundi/peers", &admin, &peer);
    assert!(
        r.status == 200 || r.status == 201,
        "{}: {}",
        r.status,
        r.body
    );
    wait_trusted_peers(&server, 1);

    let phone_port = free_port();
    sipp_register(&server, "100", phone_port);
    call_from_the_peer(&server, phone_port);
    let records = records_until(&server, 1);
    assert_eq!(
        records[0].route_source.as_deref(),
        Some("DUNDi peer 02:00:00:00:00:02"),
        "{:?}",
        records[0]
    );

    // Disabled on the dashboard: no longer trusted as the peer.
    let disabled =
        format!(r#"{{"eid": "02:00:00:00:00:02", "address": "{peer_addr}", "enabled": false}}"#);
    let r = client.api_json(
        "PUT",
        "/api/v1/dundi/peers/02:00:00:00:00:02",
        &admin,
        &disabled,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_trusted_peers(&server, 0);
    call_from_the_peer(&server, phone_port);
    let records = records_until(&server, 2);
    assert_eq!(
        records[0].route_source.as_deref(),
        Some("internet 127.0.0.2"),
        "{:?}",
        records[0]
    );
    server.assert_alive();
}

/// `pasarela --config FILE ARGS…`: whether it succeeded, and what it printed.
fn cli(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(server_program())
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

/// Issue 17's leftovers: `[dundi] context` is a node setting of the dashboard, applied live
/// (the router's next lookup asks in the new context; a bad one is refused naming the field),
/// and `pasarela dundi` works when DUNDi is turned on from the dashboard only.
#[test]
fn the_context_is_set_on_the_dashboard_and_the_cli_follows_dundi_turned_on_there() {
    let dundi_addr = free_udp("127.0.0.1");
    // No ENUM: the explainer below asks nothing off the machine.
    let mut server = Server::start(&format!("{OFFICE}\n[enum]\nsuffixes = []\n"));
    let web = server.web.expect("web address");
    let mut client = set_up_admin(web);
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    let admin = pasarela::web::api_tokens::create_scoped(
        &conn,
        "provisioning",
        pasarela::web::api_tokens::Scope::Admin,
    )
    .unwrap();
    let cfg = server.dir().join("pasarela.toml");
    let (ok, out) = cli(&cfg, &["dundi", "peers"]);
    assert!(!ok && out.contains("DUNDi is off"), "{out}");

    let on = |context: &str| {
        format!(
            r#"{{"enabled": true, "listen": "{dundi_addr}", "eid": "02:00:00:00:00:01", "context": "{context}"}}"#
        )
    };
    let r = client.api_json("PUT", "/api/v1/dundi/node", &admin, &on("no context!"));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("\"field\":\"context\""), "{}", r.body);
    let r = client.api_json("PUT", "/api/v1/dundi/node", &admin, &on("private"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = client.api_json("GET", "/api/v1/dundi/node", &admin, "");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["settings"]["context"]["in_use"], "private", "{v}");
    let peer_addr = free_udp("127.0.0.2");
    let peer = format!(r#"{{"eid": "02:00:00:00:00:02", "address": "{peer_addr}"}}"#);
    let r = client.api_json("POST", "/api/v1/dundi/peers", &admin, &peer);
    assert!(
        r.status == 200 || r.status == 201,
        "{}: {}",
        r.status,
        r.body
    );

    // Lookups ask in the new context, without a restart: the API's and the router's.
    let r = client.api_json("GET", "/api/v1/dundi/lookup?number=4940555123", &admin, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\"context\":\"private\""), "{}", r.body);
    let page = client.get("/routing?from=100&number=040555123");
    assert!(
        page.body.contains("DUNDi 4940555123@private"),
        "{}",
        page.body
    );
    // The node page shows the setting.
    let page = client.get("/dundi");
    assert!(page.body.contains("Context we ask"), "{}", page.body);

    // The command line asks the running gateway's node (on from the dashboard only).
    let (ok, out) = cli(&cfg, &["dundi", "peers"]);
    assert!(ok, "{out}");
    assert!(out.contains("02:00:00:00:00:02"), "{out}");
    server.assert_alive();
}
