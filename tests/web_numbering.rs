//! The numbering plan and ENUM run from the dashboard and applied live (issue 17): in headless
//! Chromium the admin points ENUM at a private tree (served by a DNS server on loopback) and the
//! next look-up of the route explainer finds the number's SIP target there, without a restart;
//! changing the country and area code changes how a dialled national or local number is
//! written; a key of the configuration file is read-only. The JSON API reads the settings with
//! a read-only token and changes them only with an admin token (same checks); the inbound API
//! adds a ring group and a route to it, and the provider's next call rings the group.
mod common;
mod phone;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::dns::{zone, Dns};
use common::web_client::{csrf_of, set_up_admin, Client, PASSWORD};
use common::*;
use pasarela::routing::zone_server::{Zone, ZoneRecord};
use pasarela::web::api_tokens::{create_scoped, Scope};
use phone::*;
use webdriver::Browser;

const WAIT: Duration = Duration::from_secs(20);
const PROVIDER_IP: &str = "127.0.0.5";

/// The private ENUM tree `e164.office.test`: +49305551234 is reached over SIP at `target`.
fn office_tree(target: SocketAddr) -> Zone {
    zone(
        "e164.office.test",
        vec![ZoneRecord::Naptr {
            name: "4.3.2.1.5.5.5.0.3.9.4".into(),
            order: 100,
            preference: 10,
            flags: "u".into(),
            services: "E2U+sip".into(),
            regexp: format!(r"!^\+49(.*)$!sip:\1@{target}!"),
            replacement: ".".into(),
        }],
    )
}

/// The office: the file names the nameserver (read-only in the dashboard), nothing else of
/// `[numbering]` or `[enum]`; `extra` is appended.
fn office(dns: SocketAddr, extra: &str) -> String {
    let (lo, hi) = rtp_port_range();
    format!(
        r#"[sip]
listen = ["udp:{{UDP}}", "tcp:{{TCP}}"]
domain = "office.test"

[media]
rtp_ports = "{lo}-{hi}"

[store]
path = "{{DB}}"

[web]
listen = "127.0.0.1:0"

[log]
level = "debug"

[enum]
nameservers = ["{dns}"]
budget_ms = 1500

[[extension]]
number = "100"
password = "secret100"

[[extension]]
number = "101"
password = "secret101"
{extra}
"#
    )
}

/// The server's whole log.
fn log(server: &Server) -> String {
    std::fs::read_to_string(server.log_path()).unwrap_or_default()
}

fn artefacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artefacts/numbering")
}

fn submit(b: &Browser, form_css: &str) {
    let button = b.find(&format!("{form_css} button[type=submit]"));
    b.click(&button);
}

/// The route explainer's text for `number`, asked until `cond` holds (the change is applied
/// by the SIP side just after the page saved it) or the time is up.
fn explain_until(
    br: &Browser,
    base: &str,
    number: &str,
    server: &Server,
    cond: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        br.goto(&format!(
            "{base}/routing?number={}",
            number.replace(' ', "+")
        ));
        br.wait_for(WAIT, "the routing page", |h| {
            h.contains("<h1>Routing test</h1>")
        });
        let text = br
            .try_find("pre.explain")
            .map(|e| br.text(&e))
            .unwrap_or_default();
        if cond(&text) {
            return text;
        }
        if Instant::now() > deadline {
            server.fail(&format!(
                "the explainer for {number} never matched:\n{text}"
            ));
        }
        thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn the_admin_changes_the_enum_tree_and_the_numbering_plan_in_chromium_applied_live() {
    let target: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dns = Dns::start(vec![office_tree(target)]);
    let server = Server::start(&office(dns.addr(), ""));
    let base = format!("http://{}", server.web.expect("web address"));
    let br = Browser::start(server.dir(), &artefacts(), 1280, 1400);
    br.goto(&format!("{base}/setup"));
    br.fill("input[name=username]", "admin");
    br.fill("input[name=password]", PASSWORD);
    br.fill("input[name=password2]", PASSWORD);
    submit(&br, "form[action='/setup']");
    br.wait_for(WAIT, "the overview", |h| h.contains("<h1>Overview</h1>"));

    // Before: Germany, ENUM under e164.arpa only: no SIP target for the number.
    let before = explain_until(&br, &base, "030 5551234", &server, |t| {
        t.contains("number: +49305551234")
    });
    assert!(!before.contains("e164.office.test"), "{before}");
    assert!(
        !before.contains(&format!("sip:305551234@{target}")),
        "{before}"
    );

    // The Numbering page: linked in the nav, the file's nameserver read-only.
    br.goto(&format!("{base}/"));
    br.wait_for(WAIT, "the overview", |h| h.contains("href=\"/numbering\""));
    br.goto(&format!("{base}/numbering"));
    br.wait_for(WAIT, "the Numbering page", |h| {
        h.contains("<h1>Numbering and ENUM</h1>")
    });
    assert_eq!(
        br.script(
            "return document.querySelector(\"input[name='enum.nameservers']\").readOnly;",
            serde_json::json!([])
        ),
        serde_json::json!(true),
        "a key of the file is read-only"
    );
    assert!(br.source().contains("from the configuration file"));
    assert!(
        br.source().contains("ENUM cache"),
        "the cache is shown here too"
    );

    // A bad country code is refused naming the field.
    br.fill("input[name='numbering.country_code']", "+49");
    submit(&br, "#numbering-form");
    br.wait_for(WAIT, "the field error", |h| h.contains("Country code: "));
    br.screenshot("01-country-code-refused");

    // The private tree first, then e164.arpa.
    br.fill("input[name='numbering.country_code']", "");
    br.fill(
        "textarea[name='enum.suffixes']",
        "e164.office.test\ne164.arpa",
    );
    submit(&br, "#numbering-form");
    br.wait_for(WAIT, "saved", |h| h.contains("Saved and applied."));
    br.screenshot("02-enum-tree-saved");
    let after = explain_until(&br, &base, "030 5551234", &server, |t| {
        t.contains(&format!("sip:305551234@{target}"))
    });
    assert!(after.contains("e164.office.test"), "{after}");
    assert!(
        log(&server).contains("ENUM settings applied"),
        "the change is logged"
    );

    // Spain, Madrid: a national number and a local one are written with the new codes.
    br.goto(&format!("{base}/numbering"));
    br.wait_for(WAIT, "the Numbering page", |h| {
        h.contains("<h1>Numbering and ENUM</h1>")
    });
    assert_eq!(
        br.script(
            "return document.querySelector(\"textarea[name='enum.suffixes']\").value;",
            serde_json::json!([])
        ),
        serde_json::json!("e164.office.test\ne164.arpa"),
        "the trees are kept in order"
    );
    br.fill("input[name='numbering.country_code']", "34");
    br.fill("input[name='numbering.area_code']", "91");
    submit(&br, "#numbering-form");
    br.wait_for(WAIT, "saved", |h| h.contains("Saved and applied."));
    explain_until(&br, &base, "030 5551234", &server, |t| {
        t.contains("number: +34305551234")
    });
    explain_until(&br, &base, "5551234", &server, |t| {
        t.contains("number: +34915551234")
    });
    br.screenshot("03-spain");
    drop(dns);
}

#[test]
fn the_numbering_api_reads_with_any_token_and_changes_with_an_admin_token() {
    let dns = Dns::start(vec![]);
    let server = Server::start(&office(dns.addr(), ""));
    let web = server.web.expect("web address");
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    let read = create_scoped(&conn, "monitoring", Scope::Read).unwrap();
    let admin = create_scoped(&conn, "provisioning", Scope::Admin).unwrap();
    let mut c = Client::new(web);

    let r = c.api_json("GET", "/api/v1/numbering", &read, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["effective"]["numbering"]["country_code"], "49");
    assert_eq!(v["effective"]["enum"]["suffixes"][0], "e164.arpa");
    assert_eq!(v["effective"]["enum"]["budget_ms"], 1500);
    let file_keys = v["from_file"].to_string();
    assert!(file_keys.contains("enum.nameservers"), "{file_keys}");

    let spain = r#"{"numbering":{"country_code":"34","area_code":"91"}}"#;
    let r = c.api_json("PUT", "/api/v1/numbering", &read, spain);
    assert_eq!(r.status, 403, "a read-only token cannot change: {}", r.body);
    // A read-only token cannot change inbound routes or groups either.
    let r = c.api_json(
        "PUT",
        "/api/v1/inbound/groups/sales",
        &read,
        r#"{"members":["100"]}"#,
    );
    assert_eq!(r.status, 403, "{}", r.body);

    let r = c.api_json(
        "PUT",
        "/api/v1/numbering",
        &admin,
        r#"{"numbering":{"country_code":"+34"}}"#,
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("\"field\":\"country_code\""), "{}", r.body);
    let r = c.api_json(
        "PUT",
        "/api/v1/numbering",
        &admin,
        r#"{"enum":{"suffixes":["e164.office.test","bad..tree"]}}"#,
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("\"field\":\"suffixes\""), "{}", r.body);
    let r = c.api_json(
        "PUT",
        "/api/v1/numbering",
        &admin,
        r#"{"enum":{"nameservers":["127.0.0.9"]}}"#,
    );
    assert_eq!(r.status, 409, "the file's key: {}", r.body);

    let r = c.api_json("PUT", "/api/v1/numbering", &admin, spain);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["effective"]["numbering"]["country_code"], "34");
    assert_eq!(v["settings"]["numbering"]["area_code"], "91");
    // Applied by the SIP side without a restart.
    let deadline = Instant::now() + WAIT;
    while !log(&server)
        .lines()
        .any(|l| l.contains("numbering plan applied") && l.contains("34"))
    {
        if Instant::now() > deadline {
            server.fail("the numbering plan was not applied");
        }
        thread::sleep(Duration::from_millis(200));
    }
    // The dashboard shows the API's values.
    let mut admin_web = set_up_admin(web);
    let page = admin_web.get("/numbering");
    assert_eq!(page.status, 200);
    assert!(
        page.body
            .contains("name=\"numbering.area_code\" value=\"91\""),
        "{}",
        page.body
    );
    let _ = csrf_of(&page.body);
    drop(dns);
}

fn phone_cfg(name: &str) -> PhoneCfg<'_> {
    PhoneCfg {
        name,
        ext: name,
        answer: "manual",
        tone_hz: 440.0,
        tone_secs: 60.0,
    }
}

/// The inbound API's writes: a ring group and a route to it, created with an admin token, are
/// applied without a restart and the provider's call to the number rings both members.
#[test]
fn a_group_and_route_created_through_the_api_take_the_providers_next_call() {
    require_program("sipp", "sip-tester");
    let dns = Dns::start(vec![]);
    let file = "\n[[trunk]]\nname = \"carrier\"\nuri = \"sip:127.0.0.5:9\"\nnumber_format = \"national\"\n\
                sources = [\"127.0.0.5\"]\n";
    let server = Server::start(&office(dns.addr(), file));
    let web = server.web.expect("web address");
    let dir = server.dir().to_path_buf();
    let mut phones: Vec<Phone> = ["100", "101"]
        .iter()
        .map(|ext| Phone::start(&dir, server.udp, phone_cfg(ext)))
        .collect();
    for (p, ext) in phones.iter_mut().zip(["100", "101"]) {
        wait_registered(&server, p, ext);
    }
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    let admin = create_scoped(&conn, "provisioning", Scope::Admin).unwrap();
    let mut c = Client::new(web);
    let r = c.api_json(
        "PUT",
        "/api/v1/inbound/groups/sales",
        &admin,
        r#"{"members":["100","101"],"strategy":"all"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.api_json(
        "PUT",
        "/api/v1/inbound/routes/+4930123450",
        &admin,
        r#"{"destination":"sales"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + WAIT;
    while !log(&server)
        .lines()
        .any(|l| l.contains("trunks applied: carrier") && l.contains("routes=1"))
    {
        if Instant::now() > deadline {
            server.fail("the API's route was not applied");
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
    phones[0].command("accept", "");
    phones[0].expect_event("CALL_ESTABLISHED", WAIT, &[], &server);
    phones[1].expect_event("CALL_CLOSED", WAIT, &[], &server);
    let res = caller.wait(Duration::from_secs(40));
    res.assert_success(&server);
    drop(dns);
}
