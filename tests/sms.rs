//! Text messages end to end (issue 20): a real `pasarela serve` with one `[[modem]]` on the
//! Huawei simulator's ptys, real baresip phones, and SMS PDUs from an independent encoder
//! (PyPI python-gsmmodem-new, through `tests/support/sms_pdu.py`; `tests/setup.sh` installs it
//! in `target/pyenv`).
//!
//! - A long Cyrillic text with emoji arrives in parts out of order, one part late, while the
//!   line's phone is offline: stored once, deleted from the SIM, and delivered as one MESSAGE
//!   with the exact text when the phone registers.
//! - A burst of 50 messages with the modem vanishing and the process killed with -9 in the
//!   middle: afterwards every message is in the store exactly once and the SIM is empty.
//! - A phone's MESSAGE to a mobile number leaves as SMS-SUBMIT PDUs that the independent
//!   decoder reads back; the status report marks it delivered.
//! - Two extensions exchange MESSAGEs, one offline at first.
mod common;
mod modem_sim;
mod phone;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{call_config, require_program, rtp_port_range, Server};
use modem_sim::Sim;
use phone::{wait_registered, Phone, PhoneCfg};

const IMEI: &str = "353142034567891";
const ICCID: &str = "8949226012345678901";
const SENDER: &str = "+491701234567";

fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    let ok = Command::new(&p)
        .args(["-c", "import gsmmodem.pdu"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the independent PDU encoder is missing: run tests/setup.sh (installs python-gsmmodem-new in target/pyenv)"
    );
    p
}

fn helper(args: &[&str]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sms_pdu.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("run sms_pdu.py");
    assert!(
        out.status.success(),
        "sms_pdu.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// SMS-DELIVER PDUs of `text` from `sender`, by the independent encoder.
fn deliver_pdus(sender: &str, text: &str, reference: u8) -> Vec<String> {
    helper(&["deliver", sender, text, &reference.to_string()])
}

fn modem_config(sim: &Sim, extra: &str) -> String {
    format!(
        r#"{base}
[numbering]
country_code = "49"
national_prefix = "0"
international_prefix = "00"

[enum]
suffixes = []
nameservers = ["127.0.0.1:9"]
budget_ms = 200

[sms]
reassembly_secs = 60
{extra}

[[modem]]
name = "gsm1"
data_port = "{data}"
audio_port = "{audio}"
incoming = ["101"]
probe_interval_secs = 1
max_missed = 2
"#,
        base = call_config("no_answer_secs = 20", rtp_port_range()),
        data = sim.data_link.display(),
        audio = sim.audio_link.display(),
    )
}

fn start(name: &str, extra: &str) -> (Server, Sim) {
    require_program("baresip", "baresip");
    python();
    let sim_dir = common::TestDir::new(name);
    let sim = Sim::start(sim_dir.path(), "gsm1", IMEI, ICCID);
    std::mem::forget(sim_dir);
    let server = Server::start(&modem_config(&sim, extra));
    wait_line_idle(&server, &sim);
    (server, sim)
}

fn wait_line_idle(server: &Server, sim: &Sim) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if sim.saw("AT+CMGL=4") {
            thread::sleep(Duration::from_millis(300));
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "the modem line did not come up: commands {:?}\n{}",
        sim.commands(),
        server.log_excerpt()
    );
}

/// (id, kind, peer, extension, body, status, parts) of the messages, oldest first.
type Row = (i64, String, String, String, String, String, i64);

fn messages(db: &Path) -> Vec<Row> {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Vec::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(2));
    let Ok(mut st) = conn
        .prepare("SELECT id, kind, peer, extension, body, status, parts FROM messages ORDER BY id")
    else {
        return Vec::new();
    };
    st.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })
    .map(|rows| rows.filter_map(Result::ok).collect())
    .unwrap_or_default()
}

/// Waits up to `limit` for `f` over the messages; the last rows.
fn wait_rows(db: &Path, limit: Duration, f: impl Fn(&[Row]) -> bool) -> (bool, Vec<Row>) {
    let deadline = Instant::now() + limit;
    loop {
        let rows = messages(db);
        if f(&rows) {
            return (true, rows);
        }
        if Instant::now() > deadline {
            return (false, rows);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn phone(server: &Server, name: &str, ext: &str, contact: Option<&str>) -> Phone {
    if let Some(uri) = contact {
        // The contact module sends `message` to the current contact: the only one.
        let dir = server.dir().join(format!("baresip-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("contacts"), format!("\"peer\" <{uri}>\n")).unwrap();
        std::fs::write(dir.join("current_contact"), format!("{uri}\n")).unwrap();
    }
    let mut p = Phone::start_with(
        server.dir(),
        server.udp,
        PhoneCfg {
            name,
            ext,
            answer: "manual",
            tone_hz: 440.0,
            tone_secs: 1.0,
        },
        if contact.is_some() {
            "module_app\t\tcontact.so\n"
        } else {
            ""
        },
        "",
    );
    wait_registered(server, &mut p, ext);
    p
}

fn wait_log(p: &Phone, needle: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if p.log_text().contains(needle) {
            return true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    false
}

fn long_text() -> String {
    let mut t = String::new();
    while t.chars().count() < 400 {
        t.push_str("Здравствуйте! Ваш заказ №4711 готов 🎉, ждём вас 😀. ");
    }
    t.trim_end().to_owned()
}

/// 400+ characters of Cyrillic and emoji in 7 UCS-2 parts, delivered out of order with one
/// part 3 s late while 101 is offline: one stored message with the exact text, nothing left
/// on the SIM, and one MESSAGE at 101's phone once it registers.
#[test]
fn long_sms_waits_for_the_phone_and_arrives_whole() {
    let (server, sim) = start("sms-long", "");
    let text = long_text();
    let pdus = deliver_pdus(SENDER, &text, 42);
    assert!(pdus.len() >= 3, "{} parts", pdus.len());
    let late = 1;
    for (i, pdu) in pdus.iter().enumerate().rev() {
        if i != late {
            sim.deliver_sms(pdu, true);
            thread::sleep(Duration::from_millis(100));
        }
    }
    thread::sleep(Duration::from_secs(3));
    assert!(
        messages(&server.db).is_empty(),
        "stored before the last part came: {:?}",
        messages(&server.db)
    );
    sim.deliver_sms(&pdus[late], true);
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(10), |r| !r.is_empty());
    assert!(ok, "no message stored\n{}", server.log_excerpt());
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (_, kind, peer, ext, body, status, parts) = &rows[0];
    assert_eq!(
        (kind.as_str(), peer.as_str(), ext.as_str()),
        ("sms_in", SENDER, "101")
    );
    assert_eq!(body, &text, "the stored text");
    assert_eq!(*parts, pdus.len() as i64);
    assert_eq!(status, "pending", "nobody registered yet");
    assert!(
        modem_sim::eventually(|| sim.sim_pdus().is_empty()),
        "left on the SIM: {:?}",
        sim.sim_pdus()
    );
    let p = phone(&server, "101", "101", None);
    assert!(
        wait_log(&p, &text, Duration::from_secs(10)),
        "the phone did not get the text\n{}\n{}",
        p.report(),
        server.log_excerpt()
    );
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(5), |r| {
        r.first().is_some_and(|r| r.5 == "delivered")
    });
    assert!(ok, "not marked delivered: {rows:?}");
    // A short message while the phone is registered goes at once.
    for pdu in deliver_pdus(SENDER, "Код: 1234 €", 0) {
        sim.deliver_sms(&pdu, true);
    }
    assert!(
        wait_log(&p, "Код: 1234 €", Duration::from_secs(10)),
        "no second MESSAGE\n{}",
        p.report()
    );
    let log = p.log_text();
    assert_eq!(
        log.matches(&text).count(),
        log.matches("Код: 1234 €").count(),
        "each message arrived once"
    );
}

/// 50 messages while the modem vanishes and comes back and the process is killed with -9
/// and started again: every message stored exactly once, the SIM empty.
#[test]
fn burst_survives_modem_reset_and_kill_9() {
    let (mut server, sim) = start("sms-burst", "");
    let texts: Vec<String> = (0..50).map(|i| format!("Nachricht {i:02} ✓")).collect();
    let pdus: Vec<String> = texts
        .iter()
        .map(|t| deliver_pdus("+4915112345678", t, 0).remove(0))
        .collect();
    for (i, pdu) in pdus.iter().enumerate() {
        match i {
            15 => {
                sim.vanish();
                sim.deliver_sms(pdu, false);
            }
            16..=19 => {
                sim.deliver_sms(pdu, false);
            }
            20 => {
                sim.come_back();
                sim.deliver_sms(pdu, true);
            }
            32 => {
                server.kill9();
                sim.deliver_sms(pdu, false);
            }
            33..=37 => {
                sim.deliver_sms(pdu, false);
            }
            38 => {
                server.start_again();
                sim.deliver_sms(pdu, true);
            }
            _ => {
                sim.deliver_sms(pdu, true);
            }
        }
        thread::sleep(Duration::from_millis(40));
    }
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(30), |r| r.len() >= 50);
    thread::sleep(Duration::from_secs(2));
    let rows = if ok { messages(&server.db) } else { rows };
    let mut bodies: Vec<&str> = rows.iter().map(|r| r.4.as_str()).collect();
    bodies.sort();
    let mut want: Vec<&str> = texts.iter().map(String::as_str).collect();
    want.sort();
    assert_eq!(
        bodies,
        want,
        "every message exactly once\n{}",
        server.log_excerpt()
    );
    assert!(
        modem_sim::eventually(|| sim.sim_pdus().is_empty()),
        "left on the SIM: {:?}",
        sim.sim_pdus()
    );
}

/// 100's phone sends a MESSAGE to a mobile number: the simulator gets SMS-SUBMIT PDUs that the
/// independent decoder reads back as the number and the exact text (two parts), the status
/// reports mark it delivered, and the record has its price.
#[test]
fn phone_message_leaves_as_sms_and_is_delivered() {
    let (server, sim) = start("sms-out", "price_per_part = 0.09");
    let to = format!("sip:+491709876543@{}", server.udp);
    let mut a = phone(&server, "100", "100", Some(&to));
    let text = "Hallo Welt! Über Preis 5€ [ok]: ".to_owned() + &"abcdefghij".repeat(14);
    a.command("message", &text);
    let deadline = Instant::now() + Duration::from_secs(15);
    while sim.with(|s| s.sent_pdus.len()) < 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let sent = sim.with(|s| s.sent_pdus.clone());
    assert_eq!(
        sent.len(),
        2,
        "PDUs at the modem: {sent:?}\n{}\n{}",
        a.report(),
        server.log_excerpt()
    );
    let mut args = vec!["decode"];
    args.extend(sent.iter().map(String::as_str));
    let decoded = helper(&args);
    let mut joined = String::new();
    for d in &decoded {
        let v: serde_json::Value = serde_json::from_str(d).unwrap();
        assert_eq!(v["number"], "+491709876543", "{d}");
        assert_eq!(v["type"], "SMS-SUBMIT", "{d}");
        assert_eq!(v["parts"], 2, "{d}");
        joined.push_str(v["text"].as_str().unwrap());
    }
    assert_eq!(joined, text, "the text the independent decoder reads");
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(10), |r| {
        r.iter().any(|r| r.1 == "sms_out" && r.5 == "delivered")
    });
    assert!(ok, "not delivered: {rows:?}\n{}", server.log_excerpt());
    let row = rows.iter().find(|r| r.1 == "sms_out").unwrap();
    assert_eq!(
        (row.2.as_str(), row.3.as_str(), row.6),
        ("+491709876543", "100", 2)
    );
    drop(a);
}

/// 101 sends to 102 while 102 is offline: stored, delivered when 102 registers; 102 answers
/// and 101 gets it at once.
#[test]
fn extensions_exchange_messages_store_and_forward() {
    let (server, _sim) = start("sms-local", "");
    let to_102 = format!("sip:102@{}", server.udp);
    let mut a = phone(&server, "101", "101", Some(&to_102));
    a.command("message", "Bist du da? 👋");
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(10), |r| {
        r.iter().any(|r| r.1 == "local")
    });
    assert!(
        ok,
        "not stored: {rows:?}\n{}\n{}",
        a.report(),
        server.log_excerpt()
    );
    assert_eq!(rows[0].5, "pending");
    let to_101 = format!("sip:101@{}", server.udp);
    let mut b = phone(&server, "102", "102", Some(&to_101));
    assert!(
        wait_log(&b, "Bist du da? 👋", Duration::from_secs(10)),
        "102 did not get it\n{}\n{}",
        b.report(),
        server.log_excerpt()
    );
    b.command("message", "Ja, hier!");
    assert!(
        wait_log(&a, "Ja, hier!", Duration::from_secs(10)),
        "101 did not get the answer\n{}\n{}",
        a.report(),
        server.log_excerpt()
    );
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(5), |r| {
        r.len() == 2 && r.iter().all(|r| r.5 == "delivered")
    });
    assert!(ok, "{rows:?}");
}

fn api(
    web: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    json: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(web).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {web}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
        json.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// USSD *100# returns the simulator's balance on the dashboard and through the API (plain and
/// GSM 7-bit packed); the inbox shows a received SMS with its unread count; a viewer may read
/// the page but not send.
#[test]
fn ussd_and_inbox_on_the_dashboard_and_api() {
    use common::web_client::{csrf_of, set_up_admin};
    let (server, sim) = start("sms-ussd", "");
    let web = server.web.expect("web address");
    let token = {
        let conn = rusqlite::Connection::open(&server.db).expect("db");
        pasarela::web::api_tokens::create(&conn, "test").expect("token")
    };
    let (status, body) = api(web, "POST", "/api/v1/ussd", &token, r#"{"code":"*100#"}"#);
    assert_eq!(status, 200, "{body}\n{}", server.log_excerpt());
    assert!(body.contains("Balance: 12,34 EUR"), "{body}");
    assert_eq!(
        sim.with(|s| s.ussd_codes.clone()),
        vec!["*100#".to_string()]
    );
    // A Huawei stick gives the answer as packed septets in hex.
    sim.with(|s| s.ussd_answer = ("C2303BEC1E974131196B460315AB52".into(), 15));
    let (status, body) = api(web, "POST", "/api/v1/ussd", &token, r#"{"code":"*101#"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Balance 12,34 EUR"), "{body}");

    let mut admin = set_up_admin(web);
    let page = admin.get("/messages");
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = csrf_of(&page.body);
    let r = admin.post(
        "/messages/ussd",
        &[("csrf", &csrf), ("code", "*100#"), ("line", "")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Balance 12,34 EUR"), "{}", r.body);

    for pdu in deliver_pdus(SENDER, "Ihr Paket kommt morgen 📦", 0) {
        sim.deliver_sms(&pdu, true);
    }
    let (ok, _) = wait_rows(&server.db, Duration::from_secs(10), |r| r.len() == 1);
    assert!(ok, "{}", server.log_excerpt());
    let page = admin.get("/messages");
    assert!(page.body.contains("1 unread"), "{}", page.body);
    assert!(page.body.contains(SENDER), "{}", page.body);
    let thread = admin.get("/messages?peer=%2B491701234567");
    assert!(
        thread.body.contains("Ihr Paket kommt morgen 📦"),
        "{}",
        thread.body
    );
    assert!(admin.get("/messages").body.contains("0 unread"));
    let csv = admin.get("/messages.csv");
    assert!(
        csv.body.contains("Ihr Paket kommt morgen 📦"),
        "{}",
        csv.body
    );
    let (status, body) = api(web, "GET", "/api/v1/messages", &token, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Ihr Paket kommt morgen 📦"), "{body}");

    // A viewer reads but may not send or run USSD.
    let pw = "viewer horse battery 7";
    let r = admin.post(
        "/users/add",
        &[
            ("username", "vera"),
            ("role", "viewer"),
            ("password", pw),
            ("password2", pw),
            ("csrf", &csrf),
        ],
    );
    assert!(r.status < 400, "{}", r.body);
    let mut viewer = common::web_client::Client::new(web);
    let login = viewer.get("/login");
    let t = csrf_of(&login.body);
    viewer.post(
        "/login",
        &[("username", "vera"), ("password", pw), ("csrf", &t)],
    );
    let page = viewer.get("/messages");
    assert_eq!(page.status, 200);
    let vt = csrf_of(&page.body);
    for (path, form) in [
        (
            "/messages/send",
            vec![("from", "100"), ("to", "+491701234567"), ("text", "x")],
        ),
        ("/messages/ussd", vec![("code", "*100#")]),
        ("/messages/delete", vec![("id", "1")]),
    ] {
        let mut f = form.clone();
        f.push(("csrf", &vt));
        assert_eq!(viewer.post(path, &f).status, 403, "{path}");
    }
    assert_eq!(sim.with(|s| s.ussd_codes.len()), 3);
}
