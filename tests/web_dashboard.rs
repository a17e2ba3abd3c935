//! The admin dashboard of a real `pasarela serve`, driven over HTTP/1.1 with a small cookie-aware
//! client on std's TcpStream: first-run setup, login and logout, the session gate, CSRF refusal,
//! the login limit, and the records pages (escaping, filters, CSV export, detail) over records
//! written into the server's database with [`pasarela::cdr::CdrDb`].
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::web_client::{csrf_of, redirect_to, set_up_admin, Client, PASSWORD};
use common::{config, Server, MD5_ONLY};
use pasarela::cdr::{CallRecord, CdrDb, Direction, Disposition, RouteKind};
use pasarela::routing::zone_server::{Zone, ZoneServer};

#[test]
fn setup_login_sessions_and_csrf() {
    let server = Server::start(&config(MD5_ONLY));
    let web = server.web.expect("web address");
    let mut anon = Client::new(web);

    // No session: every page goes to the login page, which goes to setup while no user exists.
    for path in [
        "/",
        "/records",
        "/records/1",
        "/records.csv",
        "/live",
        "/billing",
        "/billing.csv",
        "/tokens",
    ] {
        assert_eq!(redirect_to(&anon.get(path)), "/login", "{path}");
    }
    assert_eq!(redirect_to(&anon.get("/login")), "/setup");
    let css = anon.get("/static/style.css");
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    assert_eq!(common::http_get(web, "/healthz").0, 200);

    // The setup form without its token, or with a token other than the cookie's, is refused.
    let page = anon.get("/setup");
    let token = csrf_of(&page.body);
    let form = |t: &'static str| {
        [
            ("username", "admin"),
            ("password", PASSWORD),
            ("password2", PASSWORD),
            ("csrf", t),
        ]
    };
    assert_eq!(anon.post("/setup", &form("")).status, 403);
    assert_eq!(anon.post("/setup", &form("0000")).status, 403);
    // Clear form errors.
    let r = anon.post(
        "/setup",
        &[
            ("username", "admin"),
            ("password", "short"),
            ("password2", "short"),
            ("csrf", &token),
        ],
    );
    assert_eq!(r.status, 422);
    assert!(r.body.contains("at least 8 characters"), "{}", r.body);

    let mut admin = set_up_admin(web);
    let home = admin.get("/");
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("Overview") && home.body.contains("Log out admin"));
    assert!(home.body.contains("Nothing in the last 30 days"));
    let csp = home.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'self'"));

    // Setup is over: a second admin cannot be created.
    assert_eq!(redirect_to(&anon.get("/setup")), "/login");
    let mut late = Client::new(web);
    let login_page = late.get("/login");
    assert_eq!(login_page.status, 200);
    let t = csrf_of(&login_page.body);
    let r = late.post(
        "/setup",
        &[
            ("username", "mallory"),
            ("password", PASSWORD),
            ("password2", PASSWORD),
            ("csrf", &t),
        ],
    );
    assert_eq!(r.status, 403);

    // The session cookie's attributes.
    let mut fresh = Client::new(web);
    let t = csrf_of(&fresh.get("/login").body);
    let r = fresh.post(
        "/login",
        &[("username", "admin"), ("password", PASSWORD), ("csrf", &t)],
    );
    assert_eq!(redirect_to(&r), "/");
    let set = r
        .headers
        .iter()
        .find(|(k, v)| k == "set-cookie" && v.starts_with("pasarela_session="))
        .map(|(_, v)| v.clone())
        .expect("session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"),
        "{set}"
    );
    assert_eq!(fresh.get("/records").status, 200);

    // Logout needs the session's CSRF token; afterwards the cookie is worthless.
    let stolen = fresh.cookies.get("pasarela_session").cloned().unwrap();
    assert_eq!(fresh.post("/logout", &[]).status, 403);
    assert_eq!(fresh.post("/logout", &[("csrf", "nope")]).status, 403);
    let token = csrf_of(&fresh.get("/records").body);
    assert_eq!(
        redirect_to(&fresh.post("/logout", &[("csrf", &token)])),
        "/login"
    );
    let mut replay = Client::new(web);
    replay
        .cookies
        .insert("pasarela_session".into(), stolen.clone());
    assert_eq!(redirect_to(&replay.get("/")), "/login");
    // The other session is untouched.
    assert_eq!(admin.get("/records").status, 200);

    // Login without the token is refused; wrong passwords are limited per address.
    let mut guess = Client::new(web);
    let t = csrf_of(&guess.get("/login").body);
    assert_eq!(
        guess
            .post("/login", &[("username", "admin"), ("password", PASSWORD)])
            .status,
        403
    );
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = guess.post(
            "/login",
            &[
                ("username", "admin"),
                ("password", "wrong one"),
                ("csrf", &t),
            ],
        );
        statuses.push(r.status);
    }
    // Three free failures, then the user's back-off (bounded at 60 s) and the address's limit
    // (5 per 5 minutes) hold the guesser back.
    assert_eq!(statuses[..3], [401, 401, 401], "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 401).count() <= 5,
        "{statuses:?}"
    );
    let r = guess.post(
        "/login",
        &[("username", "admin"), ("password", PASSWORD), ("csrf", &t)],
    );
    assert_eq!(r.status, 429, "the guesser's browser stays held back");
    assert!(r.body.contains("Too many failed attempts"));
    assert!(r.header("retry-after").is_some());
    // The admin's own browser (it logged in before) is not locked out by that guessing, even
    // from the same address.
    let t = csrf_of(&admin.get("/login").body);
    let r = admin.post(
        "/login",
        &[("username", "admin"), ("password", PASSWORD), ("csrf", &t)],
    );
    assert_eq!(
        redirect_to(&r),
        "/",
        "the right password from a known browser"
    );
}

#[test]
fn host_header_is_checked_against_dns_rebinding() {
    let server = Server::start(&config(MD5_ONLY).replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nhosts = [\"pbx.office.test\"]",
    ));
    let web = server.web.expect("web address");
    let raw = |host: Option<&str>| -> u16 {
        let mut s = TcpStream::connect_timeout(&web, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let host = host.map_or(String::new(), |h| format!("Host: {h}\r\n"));
        // HTTP/1.0 lets a request go without Host.
        write!(s, "GET /login HTTP/1.0\r\n{host}Connection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    for ok in [
        web.to_string(),
        format!("localhost:{}", web.port()),
        "pbx.office.test".into(),
    ] {
        assert_ne!(raw(Some(&ok)), 421, "{ok}");
    }
    // A rebinding page's own name is refused, on the dashboard and the operations endpoints.
    assert_eq!(raw(Some("attacker.example")), 421);
    assert_eq!(raw(Some(&format!("attacker.example:{}", web.port()))), 421);
    assert_eq!(raw(None), 400);
    let mut s = TcpStream::connect_timeout(&web, Duration::from_secs(5)).unwrap();
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: rebind.attacker.example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 421"), "{out}");
}

fn record(start_ms: i64, caller: &str, callee: &str, ext: &str, dir: Direction) -> CallRecord {
    CallRecord {
        id: None,
        call_ref: Some(7),
        start_ms,
        answer_ms: Some(start_ms + 2_000),
        end_ms: start_ms + 62_000,
        duration_s: 62,
        billable_s: 60,
        caller: caller.into(),
        caller_e164: None,
        callee: callee.into(),
        callee_e164: Some(format!("+4930{callee}")),
        extension: Some(ext.into()),
        direction: dir,
        category: Some("national".into()),
        route_kind: RouteKind::Pstn,
        route_target: Some("carrier".into()),
        route_source: None,
        disposition: Disposition::Answered,
        sip_status: 200,
        q850_cause: 16,
        codec: Some("PCMA".into()),
        media_srtp: [false; 2],
        packets: 3000,
        packets_lost: 3,
        jitter_ms: 1.5,
        cost_minor: Some(12),
        currency: Some("EUR".into()),
        rate_table: Some("carrier".into()),
        rate_prefix: Some("4930".into()),
        reference_cost_minor: Some(12),
        savings_minor: Some(0),
        explanation: "decision 1: ENUM has no answer\ndecision 2: trunk carrier".into(),
        linked_id: None,
        transferred_by: None,
    }
}

/// 2026-03-01 00:00 UTC.
const T0: i64 = 1_772_323_200_000;
const DAY: i64 = 86_400_000;

#[test]
fn records_are_escaped_filtered_and_exported() {
    let server = Server::start(&config(MD5_ONLY));
    let web = server.web.expect("web address");
    let mut c = set_up_admin(web);

    assert!(c.get("/records").body.contains("No call records match"));

    let mut records = Vec::new();
    records.push(record(
        T0 + 1_000,
        "<script>alert(1)</script>",
        "5551234",
        "100",
        Direction::Incoming,
    ));
    for i in 0..7 {
        records.push(record(
            T0 + (i + 1) * DAY,
            "101",
            &format!("55500{i}"),
            "101",
            Direction::Outgoing,
        ));
    }
    let mut short = record(
        T0 + 3 * DAY + 5,
        "100",
        "5559999",
        "100",
        Direction::Outgoing,
    );
    short.billable_s = 5;
    short.disposition = Disposition::Answered;
    records.push(short);
    CdrDb::open(&server.db)
        .expect("open the server's database")
        .insert(&mut records)
        .expect("insert records");

    // The hostile caller shows escaped, in the list and on the detail page.
    let all = c.get("/records");
    assert_eq!(all.status, 200);
    assert!(all.body.contains("9 records"), "{}", all.body);
    assert!(!all.body.contains("<script>alert"), "unescaped record");
    assert!(all.body.contains("&#60;script&#62;alert(1)"));
    let detail = c.get("/records/1");
    assert_eq!(detail.status, 200);
    assert!(!detail.body.contains("<script>alert"));
    assert!(detail.body.contains("&#60;script&#62;"));
    assert!(detail.body.contains("decision 2: trunk carrier"));
    assert!(detail.body.contains("PCMA") && detail.body.contains("0.10 %"));
    assert_eq!(c.get("/records/999").status, 404);
    assert_eq!(c.get("/records/abc").status, 404);

    // Filters narrow the list.
    let ext = c.get("/records?ext=101");
    assert!(ext.body.contains("7 records"), "{}", ext.body);
    assert!(!ext.body.contains("&#60;script&#62;"));
    let period = c.get("/records?from=2026-03-02&to=2026-03-03&direction=outgoing");
    assert!(period.body.contains("2 records"), "{}", period.body);
    let min = c.get("/records?ext=100&min=10");
    assert!(min.body.contains("1 record ·"), "{}", min.body);
    let number = c.get("/records?number=555-003");
    assert!(number.body.contains("1 record ·"), "{}", number.body);

    // Hostile filter input is echoed escaped and reported, not executed.
    let hostile =
        c.get("/records?number=%22%3E%3Cscript%3Ex%3C%2Fscript%3E&from=%3Cb%3E&sort=1%3BDROP");
    assert_eq!(hostile.status, 200);
    assert!(!hostile.body.contains("<script>x"));
    assert!(hostile.body.contains("&#34;&#62;&#60;script&#62;x"));
    assert!(hostile.body.contains("is not a date"));
    assert!(c.get("/records").body.contains("9 records"));

    // Sorting and pagination.
    let asc = c.get("/records?sort=start&order=asc&ext=101");
    let first = asc.body.find("555000").unwrap();
    let last = asc.body.find("555006").unwrap();
    assert!(first < last);
    let page2 = c.get("/records?page=2");
    assert!(page2.body.contains("Page 2 of 1"));
    assert!(page2.body.contains("rel=\"prev\""));

    // The CSV export holds exactly the filtered set.
    let csv = c.get("/records.csv?ext=101&from=2026-03-02&to=2026-03-04");
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    // Rows end with CRLF; the explanation's own line break is quoted inside its field.
    let lines: Vec<&str> = csv.body.split_terminator("\r\n").collect();
    assert!(lines[0].starts_with("id,start_utc,"), "{}", lines[0]);
    assert_eq!(lines.len(), 4, "{}", csv.body);
    for l in &lines[1..] {
        assert!(l.contains(",101,"), "{l}");
    }
    let all_csv = c.get("/records.csv");
    assert_eq!(all_csv.body.matches("\r\n").count(), 1 + 9);
    assert!(all_csv.body.contains("<script>alert(1)</script>"));
    assert_eq!(c.get("/records.csv?from=bad").status, 400);

    // The overview counts them.
    let home = c.get("/");
    assert_eq!(home.status, 200);
    assert!(home.body.contains("This month by route"));
}

#[test]
fn rates_are_listed_edited_and_imported() {
    let server = Server::start(&config(MD5_ONLY));
    let web = server.web.expect("web address");
    let mut c = set_up_admin(web);

    let page = c.get("/rates");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("No rate tables yet"));
    let token = csrf_of(&page.body);

    // Forms without the token are refused and change nothing.
    for (path, form) in [
        (
            "/rates/table",
            vec![("name", "carrier"), ("currency", "EUR")],
        ),
        ("/rates/rate", vec![("table", "carrier"), ("prefix", "49")]),
        (
            "/rates/import",
            vec![("table", "carrier"), ("csv", "prefix,per_minute\n49,1\n")],
        ),
    ] {
        assert_eq!(c.post(path, &form).status, 403, "{path}");
    }
    assert!(c.get("/rates").body.contains("No rate tables yet"));

    let r = c.post(
        "/rates/table",
        &[("name", "carrier"), ("currency", "eur"), ("csrf", &token)],
    );
    assert_eq!(redirect_to(&r), "/rates?table=carrier");

    // A bad rate comes back with its values and a clear error.
    let r = c.post(
        "/rates/rate",
        &[
            ("table", "carrier"),
            ("prefix", "+4930"),
            ("description", "Berlin <fixed>"),
            ("per_minute", "cheap"),
            ("csrf", &token),
        ],
    );
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Price per minute"), "{}", r.body);
    assert!(r.body.contains("Berlin &#60;fixed&#62;"));

    let r = c.post(
        "/rates/rate",
        &[
            ("table", "carrier"),
            ("prefix", "+4930"),
            ("description", "Berlin <fixed>"),
            ("per_minute", "0,019"),
            ("first_s", "30"),
            ("next_s", "6"),
            ("csrf", &token),
        ],
    );
    assert_eq!(redirect_to(&r), "/rates?table=carrier");
    let list = c.get("/rates?table=carrier");
    assert!(list.body.contains("4930") && list.body.contains("0.019"));
    assert!(list.body.contains("30/6"));
    // The edit link loads the rate into the form.
    let edit = c.get("/rates?table=carrier&edit=4930");
    assert!(
        edit.body.contains("name=\"per_minute\" value=\"0.019\""),
        "{}",
        edit.body
    );

    // Import: a file with an error imports nothing and says where; a good one is merged.
    let r = c.post(
        "/rates/import",
        &[
            ("table", "carrier"),
            ("csv", "prefix,per_minute\n4940,0.02\n49x,0.05\n"),
            ("csrf", &token),
        ],
    );
    assert_eq!(r.status, 422);
    assert!(
        r.body.contains("line 3") || r.body.contains(":3"),
        "{}",
        r.body
    );
    assert!(!c.get("/rates?table=carrier").body.contains("4940"));
    let r = c.post(
        "/rates/import",
        &[
            ("table", "carrier"),
            ("csv", "prefix,per_minute\n4940,0.02\n4989,0.03\n"),
            ("csrf", &token),
        ],
    );
    assert_eq!(redirect_to(&r), "/rates?table=carrier");
    let list = c.get("/rates?table=carrier").body;
    for p in ["4930", "4940", "4989"] {
        assert!(list.contains(&format!("<td>{p}</td>")), "{p} in {list}");
    }
    let rates = CdrDb::open(&server.db).unwrap().rates("carrier").unwrap();
    assert_eq!(rates.len(), 3);
}

#[test]
fn extensions_are_added_edited_and_disabled() {
    let server = Server::start(&config(MD5_ONLY));
    let web = server.web.expect("web address");
    let mut c = set_up_admin(web);

    let page = c.get("/extensions");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Reception") && page.body.contains("config file"));
    let token = csrf_of(&page.body);
    let add = |number: &'static str, password: &'static str| {
        vec![
            ("number", number),
            ("name", "Lab <b>"),
            ("did", "+4930123456"),
            ("permissions", "internal, national"),
            ("password", password),
            ("enabled", "1"),
        ]
    };

    // Without the token: refused, nothing written.
    assert_eq!(
        c.post("/extensions/save", &add("300", "sip-secret-300"))
            .status,
        403
    );
    // Clear errors: no password, bad permission, a number owned by the config file.
    let mut f = add("300", "");
    f.push(("csrf", &token));
    let r = c.post("/extensions/save", &f);
    assert_eq!(r.status, 422);
    assert!(r.body.contains("needs a SIP password"), "{}", r.body);
    let mut f = add("300", "sip-secret-300");
    f[3] = ("permissions", "everything");
    f.push(("csrf", &token));
    let r = c.post("/extensions/save", &f);
    assert_eq!(r.status, 422);
    assert!(r.body.contains("Permissions:"), "{}", r.body);
    let mut f = add("100", "sip-secret-100");
    f.push(("csrf", &token));
    let r = c.post("/extensions/save", &f);
    assert_eq!(r.status, 422);
    assert!(r.body.contains("managed by the configuration file"));

    let mut f = add("300", "sip-secret-300");
    f.push(("csrf", &token));
    assert_eq!(redirect_to(&c.post("/extensions/save", &f)), "/extensions");
    let list = c.get("/extensions").body;
    assert!(list.contains("Lab &#60;b&#62;") && list.contains("internal,national"));

    // The SIP side takes the new extension at once: 300 registers with its password.
    let mut registered = false;
    for _ in 0..10 {
        let res = common::sipp(
            server.dir(),
            "register_auth.xml",
            server.udp,
            "u1",
            &["-s", "300", "-au", "300", "-ap", "sip-secret-300"],
        );
        if res.success() {
            registered = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(registered, "300 cannot register:\n{}", server.log_excerpt());

    let store = pasarela::store::Store::open(&server.db).unwrap();
    let row = store.extension("300").unwrap().expect("web extension");
    let ha1 = pasarela::store::digest_ha1("300", "office.test", "sip-secret-300");
    assert_eq!((row.ha1_md5.clone(), row.ha1_sha256.clone()), ha1);
    assert_eq!(row.did.as_deref(), Some("+4930123456"));
    // Only the hashes are kept: the clear password is nowhere in the database files.
    for suffix in ["", "-wal"] {
        let mut path = server.db.clone().into_os_string();
        path.push(suffix);
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !bytes.windows(14).any(|w| w == b"sip-secret-300"),
            "{path:?} holds the clear SIP password"
        );
    }
    assert!(row.enabled);

    // Edit with an empty password keeps it; disable; a config row cannot be toggled.
    let edit = c.get("/extensions?edit=300").body;
    assert!(edit.contains("Edit extension 300"));
    let r = c.post(
        "/extensions/save",
        &[
            ("number", "300"),
            ("name", "Lab"),
            ("did", ""),
            ("permissions", ""),
            ("password", ""),
            ("enabled", "1"),
            ("existing", "1"),
            ("csrf", &token),
        ],
    );
    assert_eq!(redirect_to(&r), "/extensions");
    let row = store.extension("300").unwrap().unwrap();
    assert_eq!((row.ha1_md5, row.ha1_sha256), ha1);
    assert_eq!((row.name.as_deref(), row.did), (Some("Lab"), None));
    assert_eq!(row.permissions, None);
    let r = c.post("/extensions/toggle", &[("number", "300"), ("csrf", &token)]);
    assert_eq!(redirect_to(&r), "/extensions");
    assert!(!store.extension("300").unwrap().unwrap().enabled);
    let r = c.post("/extensions/toggle", &[("number", "100"), ("csrf", &token)]);
    assert_eq!(r.status, 422);
    assert!(store.extension("100").unwrap().unwrap().enabled);
    assert_eq!(
        c.post("/extensions/toggle", &[("number", "300")]).status,
        403
    );
}

#[test]
fn routing_test_page_explains_without_calling() {
    // ENUM asks an embedded DNS server with an empty e164.test zone: every look-up is a
    // cached "no such name".
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dns = rt
        .block_on(ZoneServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            vec![Zone {
                origin: "e164.test".into(),
                ttl: 60,
                negative_ttl: 30,
                records: Vec::new(),
            }],
        ))
        .expect("DNS server");
    let server = Server::start(&format!(
        "{}\n[numbering]\ncountry_code = \"49\"\narea_code = \"30\"\n\n[enum]\nsuffixes = [\"e164.test\"]\nnameservers = [\"{}\"]\n",
        config(MD5_ONLY),
        dns.local_addr()
    ));
    let web = server.web.expect("web address");
    let mut c = set_up_admin(web);
    assert!(c.get("/routing").body.contains("The cache is empty"));
    let page = c.get("/routing?from=100&number=0301234567");
    assert!(page.body.contains("+49301234567"), "{}", page.body);
    let page = c.get("/routing");
    assert!(
        page.body.contains("7.6.5.4.3.2.1.0.3.9.4.e164.test") && page.body.contains("no such name"),
        "the miss is cached and shown: {}",
        page.body
    );
    let t = csrf_of(&page.body);
    assert_eq!(c.post("/routing/flush-cache", &[]).status, 403);
    assert_eq!(
        redirect_to(&c.post("/routing/flush-cache", &[("csrf", &t)])),
        "/routing"
    );
    assert!(c.get("/routing").body.contains("The cache is empty"));
    let page = c.get("/routing?from=100&number=101");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("route: extension 101"), "{}", page.body);
    let page = c.get("/routing?from=100&number=%3Cscript%3E");
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<script>"), "{}", page.body);
    assert!(page.body.contains("rejected 484"), "{}", page.body);
    // Without a session: the login page.
    let mut anon = Client::new(web);
    assert_eq!(redirect_to(&anon.get("/routing?number=101")), "/login");
}

#[test]
fn billing_saved_filters_tokens_and_the_json_api() {
    let server = Server::start(&config(MD5_ONLY));
    let web = server.web.expect("web address");
    let mut c = set_up_admin(web);
    let mut records: Vec<CallRecord> = (0..5)
        .map(|i| {
            record(
                T0 + i * DAY,
                "101",
                &format!("55500{i}"),
                "101",
                Direction::Outgoing,
            )
        })
        .collect();
    records.push(record(
        T0 + 1_000,
        "100",
        "5551234",
        "100",
        Direction::Outgoing,
    ));
    // February: not on March's bill.
    records.push(record(
        T0 - DAY,
        "100",
        "5550000",
        "100",
        Direction::Outgoing,
    ));
    CdrDb::open(&server.db)
        .expect("open the server's database")
        .insert(&mut records)
        .expect("insert records");

    // Monthly billing, per extension and per line, with CSV.
    let bill = c.get("/billing?month=2026-03");
    assert_eq!(bill.status, 200, "{}", bill.body);
    assert!(bill.body.contains("Billing for 2026-03"));
    let csv = c.get("/billing.csv?month=2026-03&by=extension");
    assert_eq!(csv.status, 200);
    let rows: Vec<&str> = csv.body.lines().collect();
    assert_eq!(
        rows[0],
        "extension,calls,answered,billable_s,minutes,cost,savings,currency,unrated"
    );
    assert_eq!(rows[1], "100,1,1,60,1,0.12,0.00,EUR,0", "{}", csv.body);
    assert_eq!(rows[2], "101,5,5,300,5,0.60,0.00,EUR,0", "{}", csv.body);
    assert_eq!(rows.len(), 3);
    let lines = c.get("/billing.csv?month=2026-03&by=line");
    assert!(
        lines.body.contains("carrier,6,6,360,6,0.72"),
        "{}",
        lines.body
    );
    assert!(c
        .get("/billing?month=2026-3x")
        .body
        .contains("must be a month"));
    assert_eq!(c.get("/billing.csv?month=2026-03&by=nope").status, 400);
    // The per-extension link lists that extension's records of the month.
    let linked = c.get("/records?month=2026-03&ext=101");
    assert!(linked.body.contains("5 records"), "{}", linked.body);

    // Saved filters: saved under a name, listed as a link, deleted.
    let page = c.get("/records?ext=101&min=30");
    let token = csrf_of(&page.body);
    assert_eq!(
        c.post(
            "/records/filters/save",
            &[
                ("name", "Long calls of 101"),
                ("query", "ext=101&min=30&page=7"),
                ("csrf", &token)
            ]
        )
        .status,
        303
    );
    assert_eq!(
        c.post(
            "/records/filters/save",
            &[("name", "x"), ("query", "ext=1")]
        )
        .status,
        403
    );
    let listed = c.get("/records");
    assert!(listed.body.contains("Long calls of 101"), "{}", listed.body);
    assert!(
        listed.body.contains("href=\"/records?ext=101&#38;min=30\""),
        "{}",
        listed.body
    );

    // API tokens: none → 401; one created in the dashboard works; revoked → 401.
    let none = c.api_get("/api/v1/records", None);
    assert_eq!(none.status, 401);
    assert!(none.header("www-authenticate").is_some());
    assert_eq!(
        c.api_get("/api/v1/records", Some(&"0".repeat(64))).status,
        401
    );
    let tokens = c.get("/tokens");
    let t = csrf_of(&tokens.body);
    assert_eq!(
        c.post("/tokens/create", &[("name", "accounting")]).status,
        403
    );
    let made = c.post("/tokens/create", &[("name", "accounting"), ("csrf", &t)]);
    assert_eq!(made.status, 200, "{}", made.body);
    let marker = "<code class=\"token\">";
    let at = made.body.find(marker).expect("token shown once") + marker.len();
    let api_token = made.body[at..at + 64].to_owned();
    let r = c.api_get(
        "/api/v1/records?ext=101&month=2026-03&limit=2",
        Some(&api_token),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&r.body).expect("JSON");
    assert_eq!(v["total"], 5);
    assert_eq!(v["records"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["records"][0]["extension"], "101");
    assert_eq!(v["records"][0]["route_kind"], "pstn");
    let id = v["records"][0]["id"].as_i64().expect("id");
    let one = c.api_get(&format!("/api/v1/records/{id}"), Some(&api_token));
    assert_eq!(one.status, 200);
    assert_eq!(
        c.api_get("/api/v1/records/999999", Some(&api_token)).status,
        404
    );
    assert_eq!(
        c.api_get("/api/v1/records?limit=0", Some(&api_token))
            .status,
        400
    );
    let live = c.api_get("/api/v1/live", Some(&api_token));
    assert_eq!(live.status, 200, "{}", live.body);
    let v: serde_json::Value = serde_json::from_str(&live.body).expect("JSON");
    assert!(v["calls"].as_array().is_some_and(Vec::is_empty));
    // The session cookie alone does not open the API.
    assert_eq!(c.get("/api/v1/records").status, 401);
    let listed = c.get("/tokens");
    assert!(listed.body.contains("accounting"));
    let t = csrf_of(&listed.body);
    let id_marker = "name=\"id\" value=\"";
    let at = listed.body.find(id_marker).expect("revoke form") + id_marker.len();
    let end = listed.body[at..].find('"').unwrap() + at;
    let token_id = listed.body[at..end].to_owned();
    c.post("/tokens/revoke", &[("id", &token_id), ("csrf", &t)]);
    assert_eq!(c.api_get("/api/v1/records", Some(&api_token)).status, 401);

    // The live page answers (nothing registered, no calls).
    let live = c.get("/live");
    assert_eq!(live.status, 200);
    assert!(live.body.contains("No calls right now"), "{}", live.body);
    assert!(live.body.contains("http-equiv=\"refresh\""));
}

/// Calls recorded before their rate existed are billed once the month is re-rated, from the
/// billing page and with `pasarela rerate`; a rate table downloads as CSV in the importer's
/// columns and is deleted with its rates.
#[test]
fn months_are_re_rated_and_rate_tables_exported_and_deleted() {
    let server = Server::start(&config(MD5_ONLY));
    let web = server.web.expect("web address");
    let mut c = set_up_admin(web);
    // Three answered 60 s calls over the trunk `carrier`, not rated yet.
    let mut records: Vec<CallRecord> = (0..3)
        .map(|i| {
            let mut r = record(T0 + i * DAY, "101", "5551234", "101", Direction::Outgoing);
            r.cost_minor = None;
            r.currency = None;
            r.rate_table = None;
            r.rate_prefix = None;
            r.reference_cost_minor = None;
            r.savings_minor = None;
            r
        })
        .collect();
    CdrDb::open(&server.db)
        .expect("open the server's database")
        .insert(&mut records)
        .expect("insert records");
    let csv = c.get("/billing.csv?month=2026-03&by=extension");
    assert!(csv.body.contains("101,3,3,180,3,"), "{}", csv.body);
    assert!(
        csv.body.trim_end().ends_with(",3"),
        "3 unrated\n{}",
        csv.body
    );

    // The rate arrives later: a table for the trunk with 0.10 a minute for Berlin.
    let token = csrf_of(&c.get("/rates").body);
    let r = c.post(
        "/rates/table",
        &[
            ("name", "carrier"),
            ("currency", "EUR"),
            ("reference", "1"),
            ("csrf", &token),
        ],
    );
    assert_eq!(redirect_to(&r), "/rates?table=carrier");
    let rate = |c: &mut Client, price: &str| {
        let r = c.post(
            "/rates/rate",
            &[
                ("table", "carrier"),
                ("prefix", "4930"),
                ("description", "Berlin"),
                ("per_minute", price),
                ("first_s", "60"),
                ("next_s", "60"),
                ("csrf", &token),
            ],
        );
        assert_eq!(redirect_to(&r), "/rates?table=carrier");
    };
    rate(&mut c, "0.10");
    // Without the form's token nothing is re-rated.
    let forged = c.post("/billing/rerate", &[("month", "2026-03"), ("csrf", "x")]);
    assert_eq!(forged.status, 403);
    let page = c.get("/billing?month=2026-03");
    assert!(page.body.contains("action=\"/billing/rerate\""));
    let done = c.post(
        "/billing/rerate",
        &[("month", "2026-03"), ("csrf", &csrf_of(&page.body))],
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(
        done.body.contains("Re-rated 2026-03: 3 records changed."),
        "{}",
        done.body
    );
    let csv = c.get("/billing.csv?month=2026-03&by=extension");
    assert!(
        csv.body.contains("101,3,3,180,3,0.30,"),
        "billed after re-rating\n{}",
        csv.body
    );

    // The price is corrected; the command line re-rates the month (the server keeps running).
    rate(&mut c, "0.20");
    let out = std::process::Command::new(common::server_program())
        .args(["rerate", "2026-03", "--config"])
        .arg(server.dir().join("pasarela.toml"))
        .output()
        .expect("run pasarela rerate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("3 record(s) changed"), "{text}");
    let csv = c.get("/billing.csv?month=2026-03&by=extension");
    assert!(csv.body.contains("101,3,3,180,3,0.60,"), "{}", csv.body);
    let bad = std::process::Command::new(common::server_program())
        .args(["rerate", "March", "--config"])
        .arg(server.dir().join("pasarela.toml"))
        .output()
        .expect("run pasarela rerate");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("YYYY-MM"));

    // Export: the importer's columns, the rate as entered; an unknown table is 404.
    let list = c.get("/rates?table=carrier");
    assert!(list.body.contains("/rates/export?table=carrier"));
    let export = c.get("/rates/export?table=carrier");
    assert_eq!(export.status, 200);
    assert_eq!(
        export.header("content-type"),
        Some("text/csv; charset=utf-8")
    );
    let columns = pasarela::cdr::rating::RATE_COLUMNS.join(",");
    assert!(export.body.starts_with(&columns), "{}", export.body);
    assert!(export.body.contains("4930,Berlin,0.2"), "{}", export.body);
    assert_eq!(c.get("/rates/export?table=nope").status, 404);

    // Delete: gone with its rates, after a CSRF check.
    let token = csrf_of(&list.body);
    let forged = c.post(
        "/rates/table/delete",
        &[("table", "carrier"), ("csrf", "x")],
    );
    assert_eq!(forged.status, 403);
    let r = c.post(
        "/rates/table/delete",
        &[("table", "carrier"), ("csrf", &token)],
    );
    assert_eq!(redirect_to(&r), "/rates");
    assert!(c.get("/rates").body.contains("No rate tables yet"));
    assert_eq!(c.get("/rates/export?table=carrier").status, 404);
}
