//! Least-cost order of the PSTN lines (issue 17): two trunks with different rate tables; the
//! cheaper is tried first for a number although the file lists it second, and the route
//! explainer shows both prices. `pasarela route` reads the store's trunks (a trunk added in the
//! dashboard) and rate tables; the running gateway takes a rate table set on the Lines page
//! without a restart, and its explainer (the dashboard's routing page) shows the new order.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::web_client::{csrf_of, set_up_admin};
use common::*;
use pasarela::cdr::rating::{Price, Rate};
use pasarela::cdr::CdrDb;

fn office() -> String {
    r#"[sip]
listen = ["udp:{UDP}", "tcp:{TCP}"]
domain = "office.test"

[store]
path = "{DB}"

[web]
listen = "127.0.0.1:0"

[numbering]
country_code = "49"
national_prefix = "0"
international_prefix = "00"

[[extension]]
number = "100"
password = "secret100"

[[trunk]]
name = "dear"
uri = "sip:127.0.0.5:5090"

[[trunk]]
name = "cheap"
uri = "sip:127.0.0.6:5090"
"#
    .to_owned()
}

fn rate(prefix: &str, micros: i64) -> Rate {
    Rate {
        prefix: prefix.into(),
        description: String::new(),
        per_minute: Price::from_micros(micros).unwrap(),
        connect_fee: Price::default(),
        first_s: 60,
        next_s: 60,
    }
}

fn explain(server: &Server, number: &str) -> String {
    let out = Command::new(server_program())
        .arg("--config")
        .arg(server.dir().join("pasarela.toml"))
        .args(["route", number])
        .output()
        .expect("run pasarela route");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The trunk names of the explainer's decisions, in order.
fn decisions(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once("decision ").map(|(_, d)| d))
        .filter_map(|d| d.split_once(": trunk ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_cheaper_line_is_tried_first_and_the_explainer_shows_the_prices() {
    let server = Server::start(&office());
    let web = server.web.expect("web address");

    // Without rate tables: the file's order.
    let text = explain(&server, "030123456");
    assert_eq!(decisions(&text), ["dear", "cheap"], "{text}");
    assert!(!text.contains("least cost"), "{text}");

    // Rate tables: "dear" 0.03/min, "cheap" 0.01/min for German numbers.
    {
        let mut db = CdrDb::open(&server.db).unwrap();
        db.create_rate_table("dear-rates", "EUR", false).unwrap();
        db.put_rate("dear-rates", &rate("49", 30_000)).unwrap();
        db.set_rate_table_lines("dear-rates", &["dear"]).unwrap();
        db.create_rate_table("cheap-rates", "EUR", false).unwrap();
        db.put_rate("cheap-rates", &rate("49", 10_000)).unwrap();
        db.put_rate("cheap-rates", &rate("4930", 50_000)).unwrap();
        db.set_rate_table_lines("cheap-rates", &["cheap"]).unwrap();
    }
    let text = explain(&server, "040123456");
    assert!(
        text.contains("least cost: line dear costs 0.03 EUR/min (table dear-rates, prefix 49)"),
        "{text}"
    );
    assert!(
        text.contains("least cost: line cheap costs 0.01 EUR/min (table cheap-rates, prefix 49)"),
        "{text}"
    );
    assert_eq!(decisions(&text), ["cheap", "dear"], "{text}");
    // For Berlin the longer prefix makes "cheap" the dearer one.
    let text = explain(&server, "030123456");
    assert!(text.contains("line cheap costs 0.05 EUR/min"), "{text}");
    assert_eq!(decisions(&text), ["dear", "cheap"], "{text}");

    // The running gateway: the dashboard gives the trunk "dear" the cheap table; the routing
    // page (the gateway's own router) shows the new order within seconds, without a restart.
    let mut c = set_up_admin(web);
    let page = c.get("/lines");
    assert!(page.body.contains("cheap-rates"), "the tables are offered");
    let token = csrf_of(&page.body);
    let r = c.post(
        "/lines/rate-table",
        &[("csrf", &token), ("name", "dear"), ("rate_table", "nope")],
    );
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("Rate table: there is no rate table"),
        "{}",
        r.body
    );
    // Both lines on the same table: a tie keeps the file's order.
    let r = c.post(
        "/lines/rate-table",
        &[
            ("csrf", &token),
            ("name", "dear"),
            ("rate_table", "cheap-rates"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = c.get("/routing?number=040123456");
        let both = page
            .body
            .matches("costs 0.01 EUR/min (table cheap-rates")
            .count();
        if both == 2 && page.body.contains("least cost order: dear, cheap") {
            break;
        }
        if Instant::now() > deadline {
            server.fail(&format!(
                "the new rate table was not applied:\n{}",
                page.body
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(c
        .get("/lines")
        .body
        .contains("<option value=\"cheap-rates\" selected>"));
    // The API reads the same.
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    let read = pasarela::web::api_tokens::create_scoped(
        &conn,
        "monitoring",
        pasarela::web::api_tokens::Scope::Read,
    )
    .unwrap();
    let r = c.api_json("GET", "/api/v1/trunks/dear", &read, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["rate_table"], "cheap-rates", "{}", r.body);

    // The API sets a trunk's rate table (the file's trunk too, with `rate_table` alone): a
    // read token may not, an unknown table names the field, and the router takes the change
    // from the dashboard's change signal (well before the slow look at the store's version).
    let admin = pasarela::web::api_tokens::create_scoped(
        &conn,
        "provisioning",
        pasarela::web::api_tokens::Scope::Admin,
    )
    .unwrap();
    let back = r#"{"rate_table":"dear-rates"}"#;
    let r = c.api_json("PUT", "/api/v1/trunks/dear", &read, back);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = c.api_json(
        "PUT",
        "/api/v1/trunks/dear",
        &admin,
        r#"{"rate_table":"nope"}"#,
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("\"field\":\"rate_table\""), "{}", r.body);
    let r = c.api_json("PUT", "/api/v1/trunks/dear", &admin, back);
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = c.get("/routing?number=040123456");
        if page.body.contains("least cost order: cheap, dear")
            && page.body.contains("costs 0.03 EUR/min (table dear-rates")
        {
            break;
        }
        if Instant::now() > deadline {
            server.fail(&format!(
                "the rate table set through the API was not applied:\n{}",
                page.body
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = c.api_json("GET", "/api/v1/trunks/dear", &read, "");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["rate_table"], "dear-rates", "{}", r.body);
}
