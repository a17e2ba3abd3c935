//! PSTN lines on the Lines page (issue 17). A running gateway with a GSM modem line on the
//! Huawei simulator and a SIP trunk nothing was sent to: the page lists the modem line with its
//! live state (operator, signal, network registration, calls now), read-only "from the
//! configuration file"; its rate table is set there like a trunk's (a wrong table is refused
//! naming the field, an unknown line is refused). The live page does not call the silent trunk
//! "ready". Then the admin adds a second modem line (a second simulator) on the page while a
//! phone's call is up on the first (in headless Chromium, the form offering the modems found):
//! the new line opens without a restart, the next call goes
//! out on it, and the call in progress survives; disabling the line closes it.
mod common;
mod modem_gateway;
mod modem_sim;
mod phone;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::thread;
use std::time::{Duration, Instant};

use common::web_client::{csrf_of, set_up_admin};
use common::*;
use modem_sim::{DialBehaviour, Sim};
use serde_json::json;
use webdriver::Browser;

const WAIT: Duration = Duration::from_secs(20);

fn artefacts() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/browser-artefacts/modem-lines")
}

fn submit(b: &Browser, form_css: &str) {
    let button = b.find(&format!("{form_css} button[type=submit]"));
    b.click(&button);
}

/// The text of the PSTN table's cell `class` in the row of `line`.
fn cell(html: &str, line: &str, class: &str) -> Option<String> {
    let row = html.split(&format!("<tr data-line=\"{line}\">")).nth(1)?;
    let row = row.split("</tr>").next()?;
    let cell = row.split(&format!("<td class=\"{class}\">")).nth(1)?;
    Some(cell.split("</td>").next()?.to_owned())
}

#[test]
fn the_modem_line_shows_its_live_state_and_takes_a_rate_table() {
    // A trunk nobody answers, without registration or qualify: nothing is ever sent to it.
    let trunk = "\n[[trunk]]\nname = \"silent\"\nuri = \"sip:127.0.0.5:9\"\n";
    let setup = modem_gateway::start_with("web_modem_lines_sim", |c| format!("{c}{trunk}"));
    let server = &setup.server;
    let web = server.web.expect("web address");
    let mut c = set_up_admin(web);

    // The modem line with its live state, from the configuration file.
    let deadline = Instant::now() + WAIT;
    let page = loop {
        let page = c.get("/lines");
        assert_eq!(page.status, 200, "{}", page.body);
        let detail = cell(&page.body, "gsm1", "detail").unwrap_or_default();
        if detail.contains("SimNet") && detail.contains("registered (home network)") {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the modem line's state is not shown: {detail:?}\n{}",
            page.body
        );
        thread::sleep(Duration::from_millis(300));
    };
    let detail = cell(&page.body, "gsm1", "detail").unwrap();
    assert!(detail.contains("signal -"), "{detail}");
    assert!(detail.contains(modem_gateway::IMEI), "{detail}");
    assert_eq!(
        cell(&page.body, "gsm1", "kind").as_deref(),
        Some("GSM modem")
    );
    assert_eq!(cell(&page.body, "gsm1", "state").as_deref(), Some("ready"));
    assert_eq!(cell(&page.body, "gsm1", "num calls").as_deref(), Some("0"));
    assert!(page.body.contains("from the configuration file"));

    // Its rate table, set on the page like a trunk's.
    {
        let mut db = pasarela::cdr::CdrDb::open(&server.db).unwrap();
        db.create_rate_table("gsm-rates", "EUR", false).unwrap();
    }
    let page = c.get("/lines");
    let token = csrf_of(&page.body);
    let r = c.post(
        "/lines/rate-table",
        &[("csrf", &token), ("name", "gsm1"), ("rate_table", "nope")],
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("Rate table: there is no rate table"),
        "{}",
        r.body
    );
    let r = c.post(
        "/lines/rate-table",
        &[
            ("csrf", &token),
            ("name", "nosuch"),
            ("rate_table", "gsm-rates"),
        ],
    );
    assert_eq!(r.status, 422, "an unknown line: {}", r.body);
    let r = c.post(
        "/lines/rate-table",
        &[
            ("csrf", &token),
            ("name", "gsm1"),
            ("rate_table", "gsm-rates"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let page = c.get("/lines");
    let rates = cell(&page.body, "gsm1", "rate-table").unwrap_or_default();
    assert!(
        rates.contains("<option value=\"gsm-rates\" selected>"),
        "{rates}"
    );
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    let tables = pasarela::store::line_rates::tables_of_lines(&conn).unwrap();
    assert_eq!(tables.get("gsm1").map(String::as_str), Some("gsm-rates"));

    // The live page: the trunk nothing was sent to is not "ready".
    let (status, _, body) = api_get(server, "/api/v1/live");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let lines = v["lines"].as_array().expect("lines");
    let silent = lines
        .iter()
        .find(|l| l["name"] == "silent")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(silent["state"], "unknown (no answer yet)", "{body}");
    let gsm = lines.iter().find(|l| l["name"] == "gsm1").unwrap();
    assert_eq!(gsm["state"], "ready", "{body}");

    // The API: a read token reads but cannot change; an admin token can, the file's line not.
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
    let r = c.api_json("GET", "/api/v1/modems", &read, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["modems"][0]["name"], "gsm1", "{}", r.body);
    assert_eq!(v["modems"][0]["from_file"], true, "{}", r.body);
    assert_eq!(v["modems"][0]["rate_table"], "gsm-rates", "{}", r.body);
    let parked = r#"{"data_port":"/nonexistent/at","audio_port":"/nonexistent/audio","enabled":false,"rate_table":"gsm-rates"}"#;
    let r = c.api_json("PUT", "/api/v1/modems/gsm3", &read, parked);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = c.api_json("PUT", "/api/v1/modems/gsm1", &admin, parked);
    assert_eq!(r.status, 409, "the file's line: {}", r.body);
    let r = c.api_json("PUT", "/api/v1/modems/gsm3", &admin, r#"{"imei":"12"}"#);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("\"field\":\"imei\""), "{}", r.body);
    let r = c.api_json("PUT", "/api/v1/modems/gsm3", &admin, parked);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.api_json("GET", "/api/v1/modems/gsm3", &read, "");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (&v["state"], &v["rate_table"], &v["from_file"]),
        (&json!("disabled"), &json!("gsm-rates"), &json!(false)),
        "{}",
        r.body
    );
    let r = c.api_json("DELETE", "/api/v1/modems/gsm3", &admin, "");
    assert_eq!(r.status, 204, "{}", r.body);
}

#[test]
fn a_modem_line_added_on_the_page_takes_the_next_call_while_a_call_goes_on() {
    let setup = modem_gateway::start("web_modem_add_sim1");
    let (server, sim1) = (&setup.server, &setup.sim);
    sim1.set_dial(DialBehaviour::Answer(Duration::from_millis(300)));
    let web = server.web.expect("web address");
    let mut c = set_up_admin(web);

    // A call on the file's line gsm1, up during the change.
    let mut a = modem_gateway::phone(server, "100", "100", "manual", 440.0, 60.0);
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    a.expect_event("CALL_ESTABLISHED", modem_gateway::SETUP, &[], server);
    assert!(sim1.saw("ATD+493012345678;"), "{:?}", sim1.commands());

    // The second modem, added on the page: a bad IMEI is refused naming the field first.
    let sim_dir = TestDir::new("web_modem_add_sim2");
    let sim2 = Sim::start(
        sim_dir.path(),
        "gsm2",
        "353142034567892",
        "8949226012345678902",
    );
    sim2.set_dial(DialBehaviour::Answer(Duration::from_millis(300)));
    let (data, audio) = (
        sim2.data_link.display().to_string(),
        sim2.audio_link.display().to_string(),
    );
    // In headless Chromium, as a new admin would: the form offers the modems found (gsm1's
    // IMEI and ICCID, from the running line) and refuses a bad IMEI naming the field.
    let base = format!("http://{web}");
    let br = Browser::start(server.dir(), &artefacts(), 1280, 1000);
    br.goto(&format!("{base}/login"));
    br.fill("input[name=username]", "admin");
    br.fill("input[name=password]", common::web_client::PASSWORD);
    submit(&br, "form[action='/login']");
    br.wait_for(WAIT, "the overview", |h| h.contains("<h1>Overview</h1>"));
    br.goto(&format!("{base}/lines"));
    br.wait_for(WAIT, "the Lines page", |h| h.contains("id=\"modem-form\""));
    let found = br.source();
    assert!(
        found.contains(&format!(
            "<option value=\"{}\">line gsm1",
            modem_gateway::IMEI
        )),
        "gsm1's IMEI is not offered\n{found}"
    );
    assert!(
        found.contains("<datalist id=\"found-iccid\"><option value=\"89"),
        "no ICCID offered\n{found}"
    );
    br.fill("#modem-form input[name=name]", "gsm2");
    br.fill("#modem-form input[name=imei]", "12ab");
    br.fill("#modem-form input[name=data_port]", &data);
    br.fill("#modem-form input[name=audio_port]", &audio);
    br.fill("#modem-form input[name=incoming]", "101");
    br.fill("#modem-form input[name=probe_interval_secs]", "1");
    submit(&br, "#modem-form");
    br.wait_for(WAIT, "the field error", |h| {
        h.contains("IMEI: 14 to 16 digits")
    });
    br.screenshot("01-imei-refused");
    br.fill("#modem-form input[name=imei]", "");
    submit(&br, "#modem-form");
    br.wait_for(WAIT, "the new line", |h| h.contains("data-line=\"gsm2\""));
    br.screenshot("02-gsm2-added");

    // The line opens without a restart and the page shows it ready, managed here.
    let deadline = Instant::now() + WAIT;
    loop {
        let page = c.get("/lines");
        let state = cell(&page.body, "gsm2", "state").unwrap_or_default();
        if state == "ready" && sim2.saw("AT+CSQ") {
            assert_eq!(cell(&page.body, "gsm2", "managed").as_deref(), Some("web"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gsm2 is {state:?}; its commands {:?}\n{}",
            sim2.commands(),
            server.log_excerpt()
        );
        thread::sleep(Duration::from_millis(300));
    }

    // The next call: gsm1 is busy, so it goes out on gsm2.
    let mut b = modem_gateway::phone(server, "102", "102", "manual", 1000.0, 60.0);
    b.command("dial", &format!("sip:04012345678@{}", server.udp));
    b.expect_event("CALL_ESTABLISHED", modem_gateway::SETUP, &[&a], server);
    assert!(
        sim2.saw("ATD+494012345678;"),
        "gsm2 dialled {:?}",
        sim2.commands()
    );
    // The first call survived the change.
    assert!(
        !a.has_event("CALL_CLOSED"),
        "the call on gsm1 was dropped\n{}",
        server.log_excerpt()
    );
    b.command("hangup", "");
    b.expect_event("CALL_CLOSED", WAIT, &[], server);
    a.command("hangup", "");
    a.expect_event("CALL_CLOSED", WAIT, &[], server);

    // Disabled on the page: the line closes.
    let page = c.get("/lines");
    let token = csrf_of(&page.body);
    let r = c.post("/lines/modem/toggle", &[("csrf", &token), ("name", "gsm2")]);
    assert_eq!(r.status, 303, "{}", r.body);
    let deadline = Instant::now() + WAIT;
    loop {
        let page = c.get("/lines");
        if cell(&page.body, "gsm2", "state").as_deref() == Some("disabled") {
            break;
        }
        assert!(Instant::now() < deadline, "gsm2 still runs\n{}", page.body);
        thread::sleep(Duration::from_millis(300));
    }
    let (status, _, body) = api_get(server, "/api/v1/live");
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("\"gsm2\""),
        "gsm2 still in the live lines: {body}"
    );
}
