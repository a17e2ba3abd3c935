//! DUNDi run from the dashboard (issue 17): the gateway generates its key pair on first use and
//! offers its public key for download; a DUNDi peer (the real 1024-bit test identity of
//! `tests/data/dundi`, EID 02:00:00:00:00:02, on 127.0.0.2) takes the downloaded key, and a new
//! admin adds the peer in headless Chromium by pasting the peer's public key. Without a restart
//! the peer is qualified (latency shown), the page's lookup box finds the peer's number over
//! encrypted DUNDi, the answer is cached and flushed, and the peer finds our DID.
mod common;
mod dundi_common;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::dundi_peer;
use common::web_client::{set_up_admin, PASSWORD};
use common::*;
use dundi_common::testdata;
use md5::Digest;
use webdriver::Browser;

const WAIT: Duration = Duration::from_secs(20);

fn office(dundi: std::net::SocketAddr) -> String {
    format!(
        r#"[sip]
listen = ["udp:{{UDP}}", "tcp:{{TCP}}"]
domain = "office.test"

[store]
path = "{{DB}}"

[web]
listen = "127.0.0.1:0"

[log]
level = "debug"

[numbering]
country_code = "49"

[dundi]
enabled = true
listen = "{dundi}"
eid = "02:00:00:00:00:01"

[[dundi.mapping]]
context = "e164"
destination = "${{NUMBER}}@127.0.0.1:5060"

[[extension]]
number = "100"
password = "secret100"
did = "+4930123456"
"#
    )
}

fn artefacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artefacts/dundi")
}

fn cell(b: &Browser, eid: &str, class: &str) -> String {
    match b.try_find(&format!("tr[data-peer='{eid}'] td.{class}")) {
        Some(e) => b.text(&e),
        None => String::new(),
    }
}

#[test]
fn an_admin_adds_a_dundi_peer_with_a_pasted_key_and_its_lookups_work_without_a_restart() {
    let dundi_addr = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut server = Server::start(&office(dundi_addr));
    let pid = server.pid();
    let web = server.web.expect("web address");
    let base = format!("http://{web}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Our key pair was generated on first use; the dashboard hands out the public half.
    let mut client = set_up_admin(web);
    let generated = server.dir().join("dundi-keys/pasarela.pub");
    assert!(generated.exists(), "key pair generated beside the store");
    let key = client.get("/dundi/key.pub");
    assert_eq!(key.status, 200, "{}", key.body);
    assert!(
        key.header("content-disposition")
            .is_some_and(|d| d.contains("pasarela-020000000001.pub")),
        "{:?}",
        key.headers
    );
    assert!(key.body.starts_with("-----BEGIN PUBLIC KEY-----"));
    let downloaded = server.dir().join("downloaded-gateway.pub");
    std::fs::write(&downloaded, &key.body).unwrap();

    // The peer's side takes the downloaded key (its administrator's part of the exchange).
    let peer_socket = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    let peer_addr = peer_socket.local_addr().unwrap();
    let peer = {
        let _guard = rt.enter();
        dundi_peer::start(peer_socket, dundi_addr, Some(downloaded))
    };

    // The admin in Chromium.
    let br = Browser::start(server.dir(), &artefacts(), 1280, 1200);
    br.goto(&format!("{base}/login"));
    br.fill("input[name=username]", "admin");
    br.fill("input[name=password]", PASSWORD);
    br.submit("form[action='/login']");
    br.wait_for(WAIT, "the overview", |h| h.contains("<h1>Overview</h1>"));
    br.goto(&format!("{base}/dundi"));
    br.wait_for(WAIT, "the DUNDi page", |h| h.contains("<h1>DUNDi</h1>"));
    let html = br.source();
    assert!(html.contains("No peer yet"), "no peer at first");
    assert!(html.contains("02:00:00:00:00:01"), "our EID is shown");
    assert!(
        html.contains(&format!("port = {}", dundi_addr.port())),
        "the dundi.conf lines for the peer name our port"
    );

    // Before the peer exists, the lookup box finds nothing.
    br.fill("#lookup-form input[name=number]", "49405551234");
    br.submit("#lookup-form");
    br.wait_for(WAIT, "the lookup's note", |h| {
        h.contains("0 answer(s) for 49405551234")
    });

    // A key that is not a key is refused, naming the field.
    br.goto(&format!("{base}/dundi"));
    br.wait_for(WAIT, "the DUNDi page", |h| h.contains("id=\"peer-form\""));
    br.fill("#peer-form input[name=eid]", "02:00:00:00:00:02");
    br.fill("#peer-form input[name=address]", &peer_addr.to_string());
    br.fill("#peer-form input[name=qualify]", "1");
    br.fill(
        "#peer-form textarea[name=key]",
        "-----BEGIN PUBLIC KEY-----\nnot a key\n",
    );
    br.submit("#peer-form");
    br.wait_for(WAIT, "the field error", |h| h.contains("Public key: "));
    br.screenshot("01-bad-key-refused");

    // The real key, pasted.
    let peer_pub = std::fs::read_to_string(testdata().join("keys/peer.pub")).unwrap();
    br.fill("#peer-form textarea[name=key]", &peer_pub);
    br.submit("#peer-form");
    br.wait_for(WAIT, "the new peer", |h| {
        h.contains("data-peer=\"02:00:00:00:00:02\"")
    });
    // The fingerprint is the one Asterisk's `keys show` prints for the file: MD5 of its text.
    let md5 = hex::encode(md5::Md5::digest(peer_pub.as_bytes()));
    let key_cell = cell(&br, "02:00:00:00:00:02", "key");
    assert!(key_cell.contains(&md5), "{key_cell} should show MD5 {md5}");

    // Qualified without a restart: the page shows the latency.
    let deadline = Instant::now() + WAIT;
    loop {
        br.goto(&format!("{base}/dundi"));
        let status = cell(&br, "02:00:00:00:00:02", "status");
        if status.starts_with("reachable, ") && status.ends_with(" ms") {
            break;
        }
        if Instant::now() > deadline {
            br.screenshot("02-not-reachable");
            server.fail(&format!("the peer is not shown reachable: {status:?}"));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    br.screenshot("02-peer-reachable");

    // The lookup box now finds the peer's number over encrypted DUNDi.
    br.fill("#lookup-form input[name=number]", "49405551234");
    br.submit("#lookup-form");
    br.wait_for(WAIT, "the peer's answer", |h| {
        h.contains("49405551234@127.0.0.2:5090")
    });
    br.screenshot("03-lookup");
    let cache = br.find("table.dundi-cache");
    assert!(
        br.text(&cache).contains("49405551234"),
        "the answer is cached"
    );
    br.submit("form.flush-cache");
    br.wait_for(WAIT, "the empty cache", |h| h.contains("dundi-cache-empty"));

    // The other way: the peer finds our DID with our downloaded key.
    let answers = rt.block_on(peer.lookup("4930123456", "e164", Duration::from_secs(5)));
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].destination, "4930123456@127.0.0.1:5060");

    // Disabled from the page: the peer is no longer asked.
    let toggle =
        br.find("tr[data-peer='02:00:00:00:00:02'] form[action='/dundi/peer/toggle'] button");
    br.click(&toggle);
    br.wait_for(WAIT, "the disabled peer", |h| h.contains(">disabled<"));
    br.fill("#lookup-form input[name=number]", "49405551299");
    br.submit("#lookup-form");
    br.wait_for(WAIT, "no answer", |h| {
        h.contains("0 answer(s) for 49405551299")
    });

    // All of it without a restart; the peer is kept in the store for the next start.
    assert_eq!(server.pid(), pid);
    server.assert_alive();
    let r = client.get("/dundi");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("data-peer=\"02:00:00:00:00:02\""));

    // The same through the API: a read-only token reads but cannot change; an admin token can.
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
    let r = client.api_json("GET", "/api/v1/dundi", &read, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["us"]["eid"], "02:00:00:00:00:01");
    assert_eq!(v["peers"][0]["eid"], "02:00:00:00:00:02");
    assert_eq!(v["peers"][0]["enabled"], false);
    let enable =
        r#"{"address":"ADDR","qualify":1,"enabled":true}"#.replace("ADDR", &peer_addr.to_string());
    let r = client.api_json(
        "PUT",
        "/api/v1/dundi/peers/02:00:00:00:00:02",
        &read,
        &enable,
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = client.api_json(
        "POST",
        "/api/v1/dundi/peers",
        &admin,
        r#"{"eid":"02:00:00:00:00:03","address":"not an address"}"#,
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("\"field\":\"address\""), "{}", r.body);
    let r = client.api_json(
        "PUT",
        "/api/v1/dundi/peers/02:00:00:00:00:02",
        &admin,
        &enable,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Enabled again with its stored key: the API's lookup finds the peer's number.
    let r = client.api_json("GET", "/api/v1/dundi/lookup?number=49405551277", &read, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("49405551277@127.0.0.2:5090"), "{}", r.body);
    rt.block_on(peer.stop());
}
