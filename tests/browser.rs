//! The dashboard in a real browser: headless Debian Chromium driven over WebDriver (Debian
//! `chromium-driver`) by the small client in tests/support/webdriver.rs, against a real
//! `pasarela serve` with real SIP peers (sipp). An office admin's session, step by step:
//! first-run setup, log out and in, filter the records (a hostile caller name stays text),
//! export the filtered records as CSV through the browser's own download, create a rate table
//! and edit a rate, add an extension, watch a live call between two sipp phones, and read the
//! pages on a phone-sized screen.
//!
//! Screenshots of every step are kept as test artefacts in `target/browser-artefacts/`.
mod common;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    call_config, free_port, require_program, rtp_port_range, sipp_callee_101, sipp_caller_100,
    sipp_spawn, Server,
};
use pasarela::cdr::{CallRecord, CdrDb, Direction, Disposition, RouteKind};
use serde_json::json;
use webdriver::Browser;

const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(15);

fn record(start_ms: i64, caller: &str, callee: &str, ext: &str) -> CallRecord {
    CallRecord {
        id: None,
        call_ref: None,
        start_ms,
        answer_ms: Some(start_ms + 3_000),
        end_ms: start_ms + 93_000,
        duration_s: 93,
        billable_s: 90,
        caller: caller.into(),
        caller_e164: None,
        callee: callee.into(),
        callee_e164: Some(format!("+4930{callee}")),
        extension: Some(ext.into()),
        direction: Direction::Outgoing,
        category: Some("national".into()),
        route_kind: RouteKind::Pstn,
        route_target: Some("carrier".into()),
        route_source: None,
        disposition: Disposition::Answered,
        sip_status: 200,
        q850_cause: 16,
        codec: Some("PCMA".into()),
        media_srtp: [false; 2],
        packets: 4500,
        packets_lost: 2,
        jitter_ms: 1.2,
        cost_minor: Some(3),
        currency: Some("EUR".into()),
        rate_table: Some("carrier".into()),
        rate_prefix: Some("4930".into()),
        reference_cost_minor: Some(3),
        savings_minor: Some(0),
        explanation: "decision: trunk carrier".into(),
        linked_id: None,
        transferred_by: None,
    }
}

fn artefacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artefacts")
}

/// Submits the form that holds `field` (clicking its submit button, as a person would).
fn submit(b: &Browser, form_css: &str) {
    let button = b.find(&format!("{form_css} button[type=submit]"));
    b.click(&button);
}

/// Waits until the window's URL satisfies `cond`.
fn wait_url(b: &Browser, what: &str, cond: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond(&b.url()) {
        assert!(
            Instant::now() < deadline,
            "waited for {what}; still at {}:\n{}",
            b.url(),
            b.source()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The page does not need sideways scrolling (tables scroll inside their own box).
fn fits_width(b: &Browser) -> bool {
    b.script(
        "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
        json!([]),
    )
    .as_bool()
        == Some(true)
}

#[test]
fn an_admin_works_the_dashboard_in_chromium() {
    require_program("sipp", "sip-tester");
    let rtp = rtp_port_range();
    let server = Server::start(&call_config("", rtp));
    let web = server.web.expect("web address");
    let base = format!("http://{web}");

    // Records of the past days: 101 made 6 calls, 100 one; one caller name is hostile.
    let day = 86_400_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut records: Vec<CallRecord> = (1..=6)
        .map(|i| record(now - i * day, "101", &format!("55501{i}"), "101"))
        .collect();
    records.push(record(
        now - 2 * day,
        "<script>window.__xss = 1</script>",
        "5559999",
        "100",
    ));
    CdrDb::open(&server.db)
        .expect("the server's database")
        .insert(&mut records)
        .expect("insert records");

    let b = Browser::start(server.dir(), &artefacts(), 1280, 900);

    // First run: the dashboard sends the admin to the setup page.
    b.goto(&format!("{base}/"));
    wait_url(&b, "the setup page", |u| u.ends_with("/setup"));
    b.screenshot("01-setup");
    b.fill("input[name=username]", "admin");
    b.fill("input[name=password]", PASSWORD);
    b.fill("input[name=password2]", PASSWORD);
    submit(&b, "form[action='/setup']");
    wait_url(&b, "the overview", |u| u.ends_with(':') || u.ends_with('/'));
    b.wait_for(WAIT, "the overview", |h| h.contains("<h1>Overview</h1>"));
    b.screenshot("02-overview");

    // Log out, and in again.
    submit(&b, "form.logout");
    wait_url(&b, "the login page", |u| u.ends_with("/login"));
    b.fill("input[name=username]", "admin");
    b.fill("input[name=password]", "not the password");
    submit(&b, "form[action='/login']");
    b.wait_for(WAIT, "the login error", |h| {
        h.contains("Wrong username or password")
    });
    b.fill("input[name=password]", PASSWORD);
    submit(&b, "form[action='/login']");
    b.wait_for(WAIT, "the overview", |h| h.contains("<h1>Overview</h1>"));

    // Records: all 7, the hostile name shown as text and never run.
    b.goto(&format!("{base}/records"));
    b.wait_for(WAIT, "the records", |h| h.contains("7 records"));
    assert_eq!(b.find_all("table.records tbody tr").len(), 7);
    let cells: Vec<String> = b
        .find_all("table.records tbody td")
        .iter()
        .map(|e| b.text(e))
        .collect();
    assert!(
        cells
            .iter()
            .any(|t| t == "<script>window.__xss = 1</script>"),
        "the hostile caller is shown as text: {cells:?}"
    );
    assert_eq!(
        b.script("return window.__xss === undefined;", json!([])),
        json!(true),
        "a record's field ran as script"
    );
    // Filter: extension 101.
    b.fill("form.filters input[name=ext]", "101");
    submit(&b, "form.filters");
    wait_url(&b, "the filtered records", |u| u.contains("ext=101"));
    b.wait_for(WAIT, "6 records", |h| h.contains("6 records"));
    assert_eq!(b.find_all("table.records tbody tr").len(), 6);
    b.screenshot("03-records-filtered");

    // Export the filtered set: the browser downloads the CSV.
    let link = b.find("a[href^='/records.csv']");
    b.click(&link);
    let csv_path = b.downloads.join("call-records.csv");
    let deadline = Instant::now() + WAIT;
    while !csv_path.exists() {
        assert!(
            Instant::now() < deadline,
            "no download in {}: {:?}",
            b.downloads.display(),
            std::fs::read_dir(&b.downloads).map(|d| d.count())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let csv = std::fs::read_to_string(&csv_path).expect("the CSV file");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 7, "header and 6 records:\n{csv}");
    assert!(rows[0].starts_with("id,"), "{}", rows[0]);
    assert!(
        rows[1..].iter().all(|r| r.contains(",101,")),
        "only extension 101:\n{csv}"
    );

    // Rates: a new table, a rate, then that rate edited.
    b.goto(&format!("{base}/rates"));
    b.fill("form[action='/rates/table'] input[name=name]", "carrier");
    b.fill("form[action='/rates/table'] input[name=currency]", "EUR");
    submit(&b, "form[action='/rates/table']");
    b.wait_for(WAIT, "the new table", |h| h.contains("Rates of carrier"));
    b.fill("form[action='/rates/rate'] input[name=prefix]", "4930");
    b.fill(
        "form[action='/rates/rate'] input[name=description]",
        "Berlin",
    );
    b.fill("form[action='/rates/rate'] input[name=per_minute]", "0.02");
    submit(&b, "form[action='/rates/rate']");
    b.wait_for(WAIT, "the rate", |h| h.contains("Berlin"));
    let edit = b.find("table.rates a");
    b.click(&edit);
    b.wait_for(WAIT, "the rate in the form", |h| {
        h.contains("value=\"4930\"")
    });
    b.fill("form[action='/rates/rate'] input[name=per_minute]", "0.035");
    submit(&b, "form[action='/rates/rate']");
    b.wait_for(WAIT, "the edited rate", |h| h.contains("0.035"));
    let rate_rows: Vec<String> = b
        .find_all("table.rates tbody tr")
        .iter()
        .map(|e| b.text(e))
        .collect();
    assert_eq!(rate_rows.len(), 1, "{rate_rows:?}");
    assert!(rate_rows[0].contains("0.035"), "{rate_rows:?}");
    b.screenshot("04-rates");

    // Extensions: add 150.
    b.goto(&format!("{base}/extensions"));
    b.fill("form[action='/extensions/save'] input[name=number]", "150");
    b.fill(
        "form[action='/extensions/save'] input[name=name]",
        "Browser desk",
    );
    b.fill(
        "form[action='/extensions/save'] input[name=password]",
        "secret150secret",
    );
    submit(&b, "form[action='/extensions/save']");
    b.wait_for(WAIT, "the new extension", |h| h.contains("Browser desk"));
    b.screenshot("05-extensions");

    // A live call: 101 registers and answers, 100 calls it and talks for 8 s.
    let callee = sipp_callee_101(
        &server,
        "callee-101",
        "call_uas_answer.xml",
        &["-timeout", "40s"],
    );
    let caller = sipp_caller_100(
        &server,
        "caller-100",
        "call_uac_long.xml",
        server.udp,
        "u1",
        &["-d", "8000", "-timeout", "40s"],
    );
    b.goto(&format!("{base}/live"));
    b.wait_for(WAIT, "the call on the live page", |h| {
        h.contains("class=\"state-answered\"")
    });
    let call_rows: Vec<String> = b
        .find_all("table.live-calls tbody tr")
        .iter()
        .map(|e| b.text(e))
        .collect();
    assert_eq!(call_rows.len(), 1, "{call_rows:?}");
    assert!(
        call_rows[0].starts_with("100 101 answered"),
        "{call_rows:?}"
    );
    let regs: Vec<String> = b
        .find_all("table.live-registrations tbody tr")
        .iter()
        .map(|e| b.text(e))
        .collect();
    assert!(regs.iter().any(|r| r.starts_with("101 ")), "{regs:?}");
    b.screenshot("06-live-call");
    let caller = caller.wait(Duration::from_secs(45));
    let callee = callee.wait(Duration::from_secs(45));
    assert!(caller.success(), "caller: {}", caller.report());
    assert!(callee.success(), "callee: {}", callee.report());
    // The page refreshes itself: the call disappears, and its record appears.
    b.wait_for(WAIT, "the call to end on the live page", |h| {
        h.contains("No calls right now")
    });
    b.goto(&format!("{base}/records?ext=100&direction=internal"));
    b.wait_for(WAIT, "the call's record", |h| h.contains("1 record ·"));
    let row = b.text(&b.find("table.records tbody tr"));
    assert!(row.contains("100 101 100 internal"), "{row}");
    assert!(row.contains("answered"), "{row}");

    // A phone-sized screen: no sideways scrolling of the page, the navigation wraps.
    b.resize(390, 844);
    for (path, shot) in [
        ("/records", "07-phone-records"),
        ("/", "08-phone-overview"),
        ("/live", "09-phone-live"),
        ("/billing", "10-phone-billing"),
        ("/rates?table=carrier", "11-phone-rates"),
        ("/extensions", "12-phone-extensions"),
    ] {
        b.goto(&format!("{base}{path}"));
        b.wait_for(WAIT, "the page", |h| h.contains("</main>"));
        b.screenshot(shot);
        assert!(fits_width(&b), "{path} needs sideways scrolling on a phone");
    }
}

/// The first-run checklist leads a new admin from an empty office to a first call: set up the
/// administrator, add two extensions, register a phone (sipp) with the values of the phone
/// setup panel, make a call; then the checklist is gone. On a phone-sized screen the records
/// table still shows each call's result and cost.
#[test]
fn the_checklist_leads_a_new_admin_to_a_first_call() {
    require_program("sipp", "sip-tester");
    let (lo, hi) = rtp_port_range();
    let trunk_port = free_port();
    // No extension in the file; one SIP trunk (nobody answers there: it only has to exist).
    let template = format!(
        r#"[sip]
listen = ["udp:{{UDP}}", "tcp:{{TCP}}"]
domain = "office.test"
min_expires = 60
max_expires = 3600
{md5}

[media]
rtp_ports = "{lo}-{hi}"

[store]
path = "{{DB}}"

[web]
listen = "127.0.0.1:0"

[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:{trunk_port};transport=udp"
"#,
        md5 = common::MD5_ONLY
    );
    let server = Server::start(&template);
    let web = server.web.expect("web address");
    let base = format!("http://{web}");
    let b = Browser::start(server.dir(), &artefacts(), 1280, 900);

    b.goto(&format!("{base}/"));
    wait_url(&b, "the setup page", |u| u.ends_with("/setup"));
    b.fill("input[name=username]", "admin");
    b.fill("input[name=password]", PASSWORD);
    b.fill("input[name=password2]", PASSWORD);
    submit(&b, "form[action='/setup']");
    b.wait_for(WAIT, "the checklist", |h| h.contains("id=\"checklist\""));
    b.screenshot("c01-checklist");
    let todo = |b: &Browser| -> Vec<String> {
        b.find_all("#checklist li.todo")
            .iter()
            .map(|e| b.text(e))
            .collect()
    };
    let open = todo(&b);
    assert_eq!(open.len(), 3, "extension, phone, first call: {open:?}");
    assert!(open[0].starts_with("Add an extension"), "{open:?}");

    // The first open step links to the extensions page: add 150 and 151 there.
    let link = b.find("#checklist li.todo a");
    b.click(&link);
    wait_url(&b, "the extensions page", |u| u.ends_with("/extensions"));
    for (n, name) in [("150", "Reception"), ("151", "Office")] {
        b.fill("form[action='/extensions/save'] input[name=number]", n);
        b.fill("form[action='/extensions/save'] input[name=name]", name);
        b.fill(
            "form[action='/extensions/save'] input[name=password]",
            &format!("secret{n}secret"),
        );
        submit(&b, "form[action='/extensions/save']");
        b.wait_for(WAIT, "the new extension", |h| h.contains(name));
    }
    b.goto(&format!("{base}/"));
    b.wait_for(WAIT, "the checklist", |h| h.contains("id=\"checklist\""));
    let open = todo(&b);
    assert!(open[0].starts_with("Register a phone"), "{open:?}");

    // The phone setup panel of 151 tells what to enter; the phone (sipp) registers with it.
    b.goto(&format!("{base}/extensions/phone?number=151"));
    b.wait_for(WAIT, "the phone setup", |h| {
        h.contains("Phone setup for extension 151")
    });
    b.screenshot("c02-phone-setup");
    let panel = b.text(&b.find("dl.phone-setup"));
    let port_text = server.udp.port().to_string();
    assert!(panel.contains(&port_text), "{panel}");
    assert!(
        panel.contains("office.test") && panel.contains("UDP"),
        "{panel}"
    );
    let port = free_port();
    let reg = sipp_spawn(
        server.dir(),
        "register-151",
        "call_register.xml",
        server.udp,
        "u1",
        port,
        &[
            "-s",
            "151",
            "-au",
            "151",
            "-ap",
            "secret151secret",
            "-timeout",
            "10s",
        ],
    )
    .wait(Duration::from_secs(15));
    assert!(reg.success(), "registration: {}", reg.report());
    b.goto(&format!("{base}/"));
    b.wait_for(WAIT, "the checklist", |h| h.contains("id=\"checklist\""));
    let open = todo(&b);
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(open[0].starts_with("Make a test call"), "{open:?}");

    // The first call: 150 calls 151, which answers.
    let callee = sipp_spawn(
        server.dir(),
        "callee-151",
        "call_uas_answer.xml",
        server.udp,
        "u1",
        port,
        &["-s", "151", "-timeout", "30s"],
    )
    .listening();
    let auth_uri = format!("151@{}", server.udp);
    let caller = sipp_spawn(
        server.dir(),
        "caller-150",
        "call_uac_basic.xml",
        server.udp,
        "u1",
        free_port(),
        &[
            "-s",
            "151",
            "-key",
            "caller",
            "150",
            "-au",
            "150",
            "-ap",
            "secret150secret",
            "-auth_uri",
            &auth_uri,
            "-timeout",
            "30s",
        ],
    )
    .wait(Duration::from_secs(40));
    let callee = callee.wait(Duration::from_secs(40));
    assert!(caller.success(), "caller: {}", caller.report());
    assert!(callee.success(), "callee: {}", callee.report());

    // Every step done: the checklist is gone.
    let deadline = Instant::now() + WAIT;
    loop {
        b.goto(&format!("{base}/"));
        b.wait_for(WAIT, "the overview", |h| h.contains("<h1>Overview</h1>"));
        if b.try_find("#checklist").is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "checklist still shown: {}",
            b.source()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    b.screenshot("c03-overview-done");

    // At 390 px the records table shows the call's result and cost; lesser columns give way.
    b.resize(390, 844);
    b.goto(&format!("{base}/records"));
    b.wait_for(WAIT, "the records", |h| h.contains("1 record"));
    b.screenshot("c04-phone-records");
    let visible = |css: &str| {
        b.script(
            "const e = document.querySelector(arguments[0]); const r = e.getBoundingClientRect(); \
             return getComputedStyle(e).display !== 'none' && r.width > 0 && r.right <= window.innerWidth + 1;",
            json!([css]),
        )
        .as_bool()
            == Some(true)
    };
    assert!(
        visible("table.records tbody td.result"),
        "result hidden at 390 px"
    );
    assert!(
        visible("table.records tbody td.cost"),
        "cost hidden at 390 px"
    );
    assert!(
        !visible("table.records tbody td.minor"),
        "lesser columns still shown"
    );
    let result = b.text(&b.find("table.records tbody td.result"));
    assert_eq!(result, "answered");
}
