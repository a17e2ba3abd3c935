//! Trunks run from the dashboard and applied live (issue 17): a new admin adds a SIP trunk on
//! the Lines page in headless Chromium with sipp as the provider on 127.0.0.5; the provider
//! sees REGISTER and OPTIONS, the page shows the trunk registered and reachable with its
//! latency, a call between two baresip phones that was up during the change survives it, and
//! the phone's next call to a number goes out on the new trunk. SIGHUP with an edited file adds
//! a trunk and logs it; the JSON API reads and changes trunks, and a read-only token cannot.
mod common;
mod phone;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::web_client::{csrf_of, set_up_admin};
use common::*;
use phone::*;
use serde_json::json;
use webdriver::Browser;

const PROVIDER_IP: &str = "127.0.0.5";
const WAIT: Duration = Duration::from_secs(20);

/// The office: phones 100 and 101, no trunk in the file (`trunks` is appended as is).
fn office(trunks: &str) -> String {
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
default_permissions = ["internal", "national", "mobile"]

[[extension]]
number = "100"
password = "secret100"
name = "Reception"

[[extension]]
number = "101"
password = "secret101"
name = "Office"
{trunks}
"#
    )
}

/// The provider: sipp on 127.0.0.5:`port` taking REGISTER, OPTIONS and calls until killed.
fn provider(dir: &std::path::Path, port: u16) -> SippProc {
    let placeholder = "127.0.0.1:9".parse().unwrap();
    sipp_spawn_on(
        dir,
        "provider",
        "provider_uas.xml",
        placeholder,
        "u1",
        PROVIDER_IP,
        port,
        &["-m", "1000", "-timeout", "120s"],
    )
    .listening()
}

fn sipp_log(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("sipp-provider-")
            && name.ends_with(".log")
            && !name.contains("errors")
            && !name.contains("messages")
        {
            out.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    out
}

/// Waits until the provider's log has a line starting with `prefix`; returns that line.
fn wait_provider(dir: &std::path::Path, prefix: &str, server: &Server) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = sipp_log(dir);
        if let Some(l) = log.lines().find(|l| l.starts_with(prefix)) {
            return l.to_owned();
        }
        if Instant::now() > deadline {
            server.fail(&format!("the provider saw no `{prefix}`; its log:\n{log}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn artefacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artefacts/lines")
}

fn submit(b: &Browser, form_css: &str) {
    let button = b.find(&format!("{form_css} button[type=submit]"));
    b.click(&button);
}

/// The text of the Lines table's cell `class` in the row of `trunk`.
fn cell(b: &Browser, trunk: &str, class: &str) -> String {
    match b.try_find(&format!("tr[data-trunk='{trunk}'] td.{class}")) {
        Some(e) => b.text(&e),
        None => String::new(),
    }
}

fn phone_cfg<'a>(name: &'a str, answer: &'a str, hz: f64) -> PhoneCfg<'a> {
    PhoneCfg {
        name,
        ext: name,
        answer,
        tone_hz: hz,
        tone_secs: 60.0,
    }
}

#[test]
fn an_admin_adds_a_trunk_in_chromium_and_the_next_call_uses_it() {
    require_program("sipp", "sip-tester");
    let server = Server::start(&office(""));
    let web = server.web.expect("web address");
    let base = format!("http://{web}");
    let port = free_port();
    let sipp = provider(server.dir(), port);
    let dir = server.dir().to_path_buf();

    // A call in progress between two phones before anything changes.
    let mut a = Phone::start(&dir, server.udp, phone_cfg("100", "manual", 440.0));
    let mut b_phone = Phone::start(&dir, server.udp, phone_cfg("101", "auto", 1000.0));
    wait_registered(&server, &mut a, "100");
    wait_registered(&server, &mut b_phone, "101");
    a.command("dial", &format!("sip:101@{}", server.udp));
    a.expect_event("CALL_ESTABLISHED", WAIT, &[&b_phone], &server);
    b_phone.expect_event("CALL_ESTABLISHED", WAIT, &[&a], &server);
    let call_up = Instant::now();

    // The admin adds the trunk on the Lines page.
    let br = Browser::start(server.dir(), &artefacts(), 1280, 1000);
    br.goto(&format!("{base}/setup"));
    br.fill("input[name=username]", "admin");
    br.fill("input[name=password]", web_client_password());
    br.fill("input[name=password2]", web_client_password());
    submit(&br, "form[action='/setup']");
    br.wait_for(WAIT, "the overview", |h| h.contains("<h1>Overview</h1>"));
    br.goto(&format!("{base}/lines"));
    br.wait_for(WAIT, "the Lines page", |h| h.contains("<h1>Lines</h1>"));
    assert!(
        br.source().contains("No SIP trunk yet"),
        "no trunk at first"
    );
    // The help says what to tell the provider: our SIP address.
    assert!(
        br.source().contains(&server.udp.to_string()),
        "the page names our SIP address for the provider"
    );
    // A wrong URI is refused naming the field.
    br.fill("#trunk-form input[name=name]", "carrier");
    br.fill("#trunk-form input[name=uri]", "tel:+4930123");
    submit(&br, "#trunk-form");
    br.wait_for(WAIT, "the field error", |h| {
        h.contains("Provider address (URI): ")
    });
    br.screenshot("01-uri-refused");
    br.fill(
        "#trunk-form input[name=uri]",
        &format!("sip:{PROVIDER_IP}:{port}"),
    );
    br.fill("#trunk-form input[name=username]", "office1");
    br.fill("#trunk-form input[name=password]", "trunkpass");
    br.fill("#trunk-form input[name=qualify]", "2");
    br.script(
        "document.querySelector('#trunk-form input[name=register]').checked = true; \
         document.querySelector('#trunk-form select[name=number_format]').value = 'national';",
        json!([]),
    );
    submit(&br, "#trunk-form");
    br.wait_for(WAIT, "the new trunk", |h| {
        h.contains("data-trunk=\"carrier\"")
    });

    // The provider sees REGISTER and OPTIONS; the page says registered and reachable.
    let reg = wait_provider(&dir, "register ", &server);
    assert!(reg.contains("sip:office1@127.0.0.1:"), "{reg}");
    wait_provider(&dir, "options", &server);
    let deadline = Instant::now() + WAIT;
    loop {
        br.goto(&format!("{base}/lines"));
        br.wait_for(WAIT, "the Lines page", |h| h.contains("<h1>Lines</h1>"));
        let (r, q) = (
            cell(&br, "carrier", "registration"),
            cell(&br, "carrier", "reachable"),
        );
        if r.starts_with("registered") && q.starts_with("reachable, ") && q.ends_with(" ms") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page shows registration {r:?}, reachability {q:?}\n{}",
            server.log_excerpt()
        );
        thread::sleep(Duration::from_millis(300));
    }
    br.screenshot("02-trunk-registered");

    // The call that was up during the change is still up, and carries audio to the end.
    assert!(
        !a.has_event("CALL_CLOSED") && !b_phone.has_event("CALL_CLOSED"),
        "the call in progress was dropped by the change\n{}",
        server.log_excerpt()
    );
    a.command("hangup", "");
    a.expect_event("CALL_CLOSED", WAIT, &[], &server);
    b_phone.expect_event("CALL_CLOSED", WAIT, &[], &server);
    let lasted = call_up.elapsed();

    // The phone's next call to a national number goes out on the new trunk.
    a.drain();
    let seen = a.seen.len();
    a.command("dial", &format!("sip:030123456@{}", server.udp));
    let established = a.wait_event("CALL_ESTABLISHED", seen, WAIT);
    if established.is_none() {
        server.fail(&format!(
            "the call on the new trunk was not answered\n{}\nprovider log:\n{}",
            a.report(),
            sipp_log(&dir)
        ));
    }
    let invite = wait_provider(&dir, "invite ", &server);
    assert_eq!(invite, "invite 030123456", "national format on the trunk");
    br.goto(&format!("{base}/lines"));
    br.wait_for(WAIT, "one call on the trunk", |h| {
        h.contains("<td class=\"num calls\">1</td>")
    });
    br.screenshot("03-call-on-trunk");
    a.command("hangup", "");

    // The records: the first call answered and as long as it was up; the second on `carrier`.
    // The second is written a moment after the call ends (later on a loaded machine).
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let records = || -> Vec<(String, Option<String>, String, i64)> {
        conn.prepare(
            "SELECT callee, route_target, disposition, duration_s FROM call_records ORDER BY id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    };
    let deadline = Instant::now() + WAIT;
    let mut rows = records();
    while rows.len() < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        rows = records();
    }
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].2, "answered", "{rows:?}");
    assert!(
        rows[0].3 + 2 >= lasted.as_secs() as i64,
        "the first call lasted {lasted:?}: {rows:?}"
    );
    assert_eq!(rows[1].1.as_deref(), Some("carrier"), "{rows:?}");

    // Disabled in the browser: the router stops using it at once.
    br.goto(&format!("{base}/lines"));
    submit(&br, "tr[data-trunk='carrier'] form[action='/lines/toggle']");
    br.wait_for(WAIT, "the trunk disabled", |h| {
        h.contains("<td>disabled</td>")
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, _, body) = api_get(&server, "/api/v1/trunks/carrier");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["enabled"] == json!(false) && v["live"]["registration"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "still in use: {body}");
        thread::sleep(Duration::from_millis(200));
    }
    // … and it unregisters from the provider.
    let gone = wait_provider(&dir, "register again expires ", &server);
    assert_eq!(gone, "register again expires 0");
    br.screenshot("04-trunk-disabled");
    drop(sipp);
}

fn web_client_password() -> &'static str {
    common::web_client::PASSWORD
}

#[test]
fn sighup_adds_a_file_trunk_and_the_api_needs_an_admin_token_to_change() {
    let server = Server::start(&office(""));
    let web = server.web.expect("web address");
    // An edited file: a trunk added (on a port nobody answers, without registration).
    let trunk = "\n[[trunk]]\nname = \"fromfile\"\nuri = \"sip:127.0.0.5:9\"\n";
    let text = office(trunk)
        .replace("{DB}", &server.db.display().to_string())
        .replace("{UDP}", &server.udp.to_string())
        .replace("{TCP}", &server.tcp.to_string());
    std::fs::write(server.dir().join("pasarela.toml"), text).unwrap();
    signal(server.pid(), "HUP");
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        if log.contains("trunk added from the configuration file")
            && log.contains("trunks applied: fromfile")
        {
            break;
        }
        if Instant::now() > deadline {
            server.fail("SIGHUP did not add and apply the file's trunk");
        }
        thread::sleep(Duration::from_millis(200));
    }

    // Tokens: a read-only one reads but cannot change; an admin one can.
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
    let (status, body) = api(web, "GET", "/api/v1/trunks", &read, "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["trunks"][0]["name"], "fromfile");
    assert_eq!(v["trunks"][0]["from_file"], true);
    let new = r#"{"name":"web1","uri":"sip:127.0.0.6:5060","qualify":0}"#;
    for (method, path, body) in [
        ("POST", "/api/v1/trunks", new),
        (
            "PUT",
            "/api/v1/trunks/fromfile",
            r#"{"uri":"sip:127.0.0.7"}"#,
        ),
        ("DELETE", "/api/v1/trunks/fromfile", ""),
        ("POST", "/api/v1/ussd", r#"{"code":"*100#"}"#),
    ] {
        let (status, answer) = api(web, method, path, &read, body);
        assert_eq!(
            status, 403,
            "{method} {path} with a read-only token: {answer}"
        );
    }
    // The admin token: field errors name the key; the file's trunk is read-only; a new one
    // is applied at once.
    let (status, answer) = api(
        web,
        "POST",
        "/api/v1/trunks",
        &admin,
        r#"{"name":"bad","uri":"tel:+4930"}"#,
    );
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("\"field\":\"uri\""), "{answer}");
    let (status, answer) = api(
        web,
        "PUT",
        "/api/v1/trunks/fromfile",
        &admin,
        r#"{"uri":"sip:127.0.0.7"}"#,
    );
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = api(web, "POST", "/api/v1/trunks", &admin, new);
    assert_eq!(status, 201, "{answer}");
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        if log.contains("trunks applied: fromfile, web1") {
            break;
        }
        if Instant::now() > deadline {
            server.fail("the API's trunk was not applied");
        }
        thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = api(web, "DELETE", "/api/v1/trunks/web1", &admin, "");
    assert_eq!(status, 204);
    // Nothing of the read-only attempts got through.
    let (_, body) = api(web, "GET", "/api/v1/trunks", &read, "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["trunks"].as_array().map(Vec::len), Some(1), "{body}");

    // The dashboard shows the file's trunk read-only.
    let mut c = set_up_admin(web);
    let page = c.get("/lines");
    assert!(
        page.body.contains("from the configuration file"),
        "{}",
        page.body
    );
    let t = csrf_of(&page.body);
    let refused = c.post("/lines/delete", &[("name", "fromfile"), ("csrf", &t)]);
    assert_eq!(refused.status, 422);
    assert!(refused.body.contains("managed by the configuration file"));
}

/// One API request with a bearer token and a JSON body: (status, body).
fn api(
    web: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(web).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {web}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match text.split_once("\r\n\r\n") {
        Some((head, rest))
            if head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked") =>
        {
            String::from_utf8_lossy(&common::web_client::dechunk(rest.as_bytes())).into_owned()
        }
        Some((_, rest)) => rest.to_owned(),
        None => String::new(),
    };
    (status, body)
}

/// Inbound routes and ring groups from the dashboard (issue 17, slice 3): the file's group is
/// shown read-only; a group and a route added on `/inbound` are applied without a restart, and
/// the provider's call to the route's number rings both members; a bad destination is refused
/// naming the field.
#[test]
fn a_route_to_a_ring_group_added_in_the_dashboard_rings_the_group() {
    require_program("sipp", "sip-tester");
    let file = "\n[[trunk]]\nname = \"carrier\"\nuri = \"sip:127.0.0.5:9\"\nnumber_format = \"national\"\n\
                sources = [\"127.0.0.5\"]\n\n[[ring_group]]\nname = \"support\"\nmembers = [\"100\"]\n";
    let server = Server::start(&office(file));
    let web = server.web.expect("web address");
    let dir = server.dir().to_path_buf();
    let mut phones: Vec<Phone> = ["100", "101"]
        .iter()
        .map(|ext| Phone::start(&dir, server.udp, phone_cfg(ext, "manual", 440.0)))
        .collect();
    for (p, ext) in phones.iter_mut().zip(["100", "101"]) {
        wait_registered(&server, p, ext);
    }
    let mut c = set_up_admin(web);
    let page = c.get("/inbound");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("data-group=\"support\"")
            && page.body.contains("from the configuration file"),
        "{}",
        page.body
    );
    let t = csrf_of(&page.body);
    let bad = c.post(
        "/inbound/route/save",
        &[
            ("number", "+4930123450"),
            ("destination", "sales"),
            ("csrf", &t),
        ],
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("Rings: "), "{}", bad.body);
    let saved = c.post(
        "/inbound/group/save",
        &[
            ("name", "sales"),
            ("members", "100, 101"),
            ("strategy", "all"),
            ("csrf", &t),
        ],
    );
    assert_eq!(saved.status, 303, "{}", saved.body);
    let saved = c.post(
        "/inbound/route/save",
        &[
            ("number", "+4930123450"),
            ("destination", "sales"),
            ("csrf", &t),
        ],
    );
    assert_eq!(saved.status, 303, "{}", saved.body);
    // Applied: the provider's next call to the number rings both members.
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        if log
            .lines()
            .any(|l| l.contains("trunks applied: carrier") && l.contains("routes=1"))
        {
            break;
        }
        if Instant::now() > deadline {
            server.fail("the route was not applied");
        }
        thread::sleep(Duration::from_millis(200));
    }
    let caller = sipp_spawn_on(
        &dir,
        "caller",
        "trunk_uac_did.xml",
        server.udp,
        "u1",
        PROVIDER_IP,
        free_port(),
        &["-s", "030123450", "-key", "caller", "0301234"],
    );
    for p in phones.iter_mut() {
        p.expect_event("CALL_INCOMING", WAIT, &[], &server);
    }
    // 101 takes it; 100 stops ringing.
    phones[1].command("accept", "");
    phones[1].expect_event("CALL_ESTABLISHED", WAIT, &[], &server);
    phones[0].expect_event("CALL_CLOSED", WAIT, &[], &server);
    let res = caller.wait(Duration::from_secs(40));
    res.assert_success(&server);
    let deadline = Instant::now() + WAIT;
    let rows = loop {
        let rows: Vec<(String, Option<String>)> = rusqlite::Connection::open(&server.db)
            .unwrap()
            .prepare("SELECT direction, callee_e164 FROM call_records")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if !rows.is_empty() || Instant::now() > deadline {
            break rows;
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        rows,
        [("incoming".to_owned(), Some("+4930123450".to_owned()))]
    );
}
