//! The inbound routes and ring groups API (issue 17): a read-only token lists them (those of
//! the configuration file marked) but cannot change anything; an admin token adds a group and
//! a route to it, which the SIP side applies at once; the file's entries are refused (409) and
//! a bad destination names its field (422).
mod common;

use std::time::{Duration, Instant};

use common::web_client::Client;
use common::*;
use pasarela::web::api_tokens::{create_scoped, Scope};

fn office() -> String {
    r#"[sip]
listen = ["udp:{UDP}", "tcp:{TCP}"]
domain = "office.test"

[store]
path = "{DB}"

[web]
listen = "127.0.0.1:0"

[log]
level = "debug"

[[ring_group]]
name = "sales"
members = ["100", "101"]

[[extension]]
number = "100"
password = "secret100"

[[extension]]
number = "101"
password = "secret101"

[[inbound.route]]
number = "+4930123450"
destination = "sales"
"#
    .to_owned()
}

#[test]
fn read_tokens_only_read_and_admin_tokens_change_inbound_routes_live() {
    let server = Server::start(&office());
    let web = server.web.expect("web address");
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    let read = create_scoped(&conn, "monitoring", Scope::Read).unwrap();
    let admin = create_scoped(&conn, "provisioning", Scope::Admin).unwrap();
    let mut c = Client::new(web);

    let r = c.api_json("GET", "/api/v1/inbound", &read, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["groups"][0]["name"], "sales");
    assert_eq!(v["groups"][0]["from_file"], true);
    assert_eq!(v["routes"][0]["number"], "+4930123450");
    assert_eq!(v["routes"][0]["from_file"], true);

    let group = r#"{"members":["101"],"strategy":"order","member_timeout":10}"#;
    let route = r#"{"destination":"support"}"#;
    for (method, path, body) in [
        ("PUT", "/api/v1/inbound/groups/support", group),
        ("PUT", "/api/v1/inbound/routes/+4930123451", route),
        ("DELETE", "/api/v1/inbound/routes/+4930123450", ""),
        ("DELETE", "/api/v1/inbound/groups/sales", ""),
    ] {
        let r = c.api_json(method, path, &read, body);
        assert_eq!(
            r.status, 403,
            "{method} {path} with a read-only token: {}",
            r.body
        );
    }

    // Admin: refusals name the field or say the file manages it.
    let r = c.api_json(
        "PUT",
        "/api/v1/inbound/groups/support",
        &admin,
        r#"{"members":["101"],"strategy":"sometimes"}"#,
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("\"field\":\"strategy\""), "{}", r.body);
    let r = c.api_json(
        "PUT",
        "/api/v1/inbound/routes/+4930123450",
        &admin,
        r#"{"destination":"101"}"#,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let r = c.api_json("PUT", "/api/v1/inbound/routes/+4930123451", &admin, route);
    assert_eq!(
        r.status, 422,
        "a route to a group that does not exist yet: {}",
        r.body
    );

    // A group and a route to it, applied at once.
    let r = c.api_json("PUT", "/api/v1/inbound/groups/support", &admin, group);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.api_json("PUT", "/api/v1/inbound/routes/+4930123451", &admin, route);
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
        if log
            .lines()
            .any(|l| l.contains("trunks applied") && l.contains("routes=2"))
        {
            break;
        }
        if Instant::now() > deadline {
            server.fail("the API's route was not applied");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = c.api_json("GET", "/api/v1/inbound", &read, "");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["groups"][1]["name"], "support");
    assert_eq!(v["groups"][1]["strategy"], "order");
    assert_eq!(v["groups"][1]["from_file"], false);
    assert_eq!(v["routes"][1]["destination"], "support");

    // A group a route rings cannot go; after the route it can.
    let r = c.api_json("DELETE", "/api/v1/inbound/groups/support", &admin, "");
    assert_eq!(r.status, 422, "{}", r.body);
    let r = c.api_json("DELETE", "/api/v1/inbound/routes/+4930123451", &admin, "");
    assert_eq!(r.status, 204, "{}", r.body);
    let r = c.api_json("DELETE", "/api/v1/inbound/groups/support", &admin, "");
    assert_eq!(r.status, 204, "{}", r.body);
    let r = c.api_json("GET", "/api/v1/inbound", &read, "");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["routes"].as_array().map(Vec::len), Some(1), "{}", r.body);
}
