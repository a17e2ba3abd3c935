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
#[path = "support/webdriver.rs"]
mod webdriver;

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

fn modem_config(sim: &Sim, extra: &str, modem_extra: &str) -> String {
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
{modem_extra}
"#,
        base = call_config("no_answer_secs = 20", rtp_port_range()),
        data = sim.data_link.display(),
        audio = sim.audio_link.display(),
    )
}

fn start(name: &str, extra: &str) -> (Server, Sim) {
    start_with(name, extra, "")
}

/// [`start`] with keys for the `[[modem]]` block.
fn start_with(name: &str, extra: &str, modem_extra: &str) -> (Server, Sim) {
    require_program("baresip", "baresip");
    python();
    let sim_dir = common::TestDir::new(name);
    let sim = Sim::start(sim_dir.path(), "gsm1", IMEI, ICCID);
    std::mem::forget(sim_dir);
    let server = Server::start(&modem_config(&sim, extra, modem_extra));
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

/// The independent SMTP server (PyPI aiosmtpd, `tests/support/smtp_sink.py`) on a loopback
/// port; each mail it takes is one JSON line in `out`. Killed when dropped.
struct SmtpSink {
    child: std::process::Child,
    out: PathBuf,
}

impl SmtpSink {
    fn start(port: u16, out: &Path) -> SmtpSink {
        use std::io::BufRead;
        let py = python();
        let ok = Command::new(&py)
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "aiosmtpd is missing: run tests/setup.sh");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let mut child = Command::new(py)
            .arg(script)
            .arg(port.to_string())
            .arg(out)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start smtp_sink.py");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        assert_eq!(ready.trim(), "ready", "the SMTP sink did not start");
        SmtpSink {
            child,
            out: out.to_path_buf(),
        }
    }

    fn mails(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (id, mail_status, mail_attempts) of the messages, oldest first.
fn mail_rows(db: &Path) -> Vec<(i64, Option<String>, i64)> {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Vec::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(2));
    let Ok(mut st) =
        conn.prepare("SELECT id, mail_status, mail_attempts FROM messages ORDER BY id")
    else {
        return Vec::new();
    };
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(200));
    }
    f()
}

/// E-mail forwarding: the mail server is down when a long Cyrillic SMS with emoji arrives, so
/// the mail fails and waits (the SMS is stored, and the line goes on taking SMS); once the
/// SMTP server (aiosmtpd, an independent implementation) listens, both SMS arrive there once,
/// to the line's address, with the sender, the line, the time and the exact text.
#[test]
fn received_sms_is_mailed_once_the_mail_server_answers() {
    let port = common::free_port();
    let extra = format!(
        r#"smtp_server = "127.0.0.1"
smtp_port = {port}
smtp_tls = "none"
email_from = "Pasarela <gateway@office.example>"
email_to = ["everyone@office.example"]
email_line_to = {{ gsm1 = ["gsm1-inbox@office.example"] }}
email_retry_secs = 1"#
    );
    let (server, sim) = start("sms-mail", &extra);
    let text = long_text();
    for pdu in deliver_pdus(SENDER, &text, 7) {
        sim.deliver_sms(&pdu, true);
    }
    assert!(
        wait_until(Duration::from_secs(20), || mail_rows(&server.db)
            .first()
            .is_some_and(|r| r.1.as_deref() == Some("pending") && r.2 >= 1)),
        "the first mail did not fail and wait: {:?}\n{}",
        mail_rows(&server.db),
        server.log_excerpt()
    );
    let second = "Termin morgen 9:00 ✓";
    for pdu in deliver_pdus("+4915112345678", second, 0) {
        sim.deliver_sms(&pdu, true);
    }
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(10), |r| r.len() == 2);
    assert!(ok, "the line stopped taking SMS: {rows:?}");
    let t_sink = Instant::now();
    let sink = SmtpSink::start(port, &server.dir().join("mails.jsonl"));
    assert!(
        wait_until(Duration::from_secs(40), || sink.mails().len() >= 2),
        "mails at the sink: {:?}\n{}",
        sink.mails(),
        server.log_excerpt()
    );
    let took = t_sink.elapsed();
    let mails = sink.mails();
    let find = |needle: &str| {
        mails
            .iter()
            .find(|m| m["subject"].as_str().is_some_and(|s| s.contains(needle)))
            .unwrap_or_else(|| panic!("no mail about {needle}: {mails:?}"))
    };
    for (sender, body) in [(SENDER, text.as_str()), ("+4915112345678", second)] {
        let m = find(sender);
        assert_eq!(m["subject"], format!("SMS from {sender} on gsm1"), "{m}");
        assert_eq!(
            m["rcpt_tos"],
            serde_json::json!(["gsm1-inbox@office.example"])
        );
        assert_eq!(m["mail_from"], "gateway@office.example");
        assert_eq!(m["content_type"], "text/plain");
        assert_eq!(m["charset"], "utf-8");
        assert!(!m["date"].as_str().unwrap_or_default().is_empty(), "{m}");
        let got = m["text"].as_str().unwrap_or_default().replace("\r\n", "\n");
        assert!(got.contains(&format!("From: {sender}\n")), "{got}");
        assert!(got.contains("Line: gsm1\n"), "{got}");
        assert!(got.contains("Received: 20"), "{got}");
        assert!(
            got.contains(&format!("\n\n{body}\n")),
            "the exact text: {got:?}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || mail_rows(&server.db)
            .iter()
            .all(|r| r.1.as_deref() == Some("sent"))),
        "{:?}",
        mail_rows(&server.db)
    );
    thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.mails().len(), 2, "each SMS mailed once");
    common::note(
        &server.dir().join("figures.txt"),
        &format!("sms mail: delivered {took:?} after the SMTP server came up"),
    );
}

/// A Huawei profile that takes SMS by direct delivery: `+CMT` (and status reports as `+CDS`),
/// acknowledged with `AT+CNMA`.
fn direct_profile(dir: &Path) -> PathBuf {
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("hardware/modems/huawei.toml"),
    )
    .expect("huawei.toml");
    let text = base
        .replace("name = \"huawei\"", "name = \"huawei-direct\"")
        .replace(
            "\"AT+CNMI=2,1,0,2,0\",",
            "\"AT+CSMS=1\",\n    \"AT+CNMI=2,2,0,1,0\",",
        );
    assert_ne!(text, base);
    let path = dir.join("huawei-direct.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn stored_parts(db: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT COUNT(*) FROM sms_parts", [], |r| r.get(0)))
        .unwrap_or(-1)
}

/// Direct delivery (`AT+CNMI=2,2,0,1,0`): each part of a long SMS (out of order) and a short
/// one come as `+CMT` and are acknowledged with `AT+CNMA` only once they are in the store; the
/// message is whole, nothing is on the SIM and nothing came twice. An SMS sent through the API
/// gets its status report as `+CDS`, acknowledged too, and is marked delivered.
#[test]
fn direct_delivery_is_acknowledged_after_it_is_stored() {
    let dir = common::TestDir::new("sms-cmt-profile");
    let profile = direct_profile(dir.path());
    let (server, sim) = start_with(
        "sms-cmt",
        "",
        &format!("profile_file = \"{}\"", profile.display()),
    );
    assert!(
        sim.with(|s| s.direct && s.direct_reports),
        "{:?}",
        sim.commands()
    );
    let text = long_text();
    let mut pdus = deliver_pdus(SENDER, &text, 9);
    pdus.reverse();
    pdus.extend(deliver_pdus(SENDER, "Ваш код: 5678", 0));
    let n = pdus.len() as u32;
    for pdu in &pdus {
        assert_eq!(sim.deliver_sms(pdu, true), u32::MAX);
        thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let acks = sim.with(|s| s.acks);
        let stored = stored_parts(&server.db);
        assert!(
            stored >= i64::from(acks),
            "{acks} acknowledged but {stored} parts in the store"
        );
        if acks >= n || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sim.with(|s| s.acks),
        n,
        "acknowledged: {:?}\n{}",
        sim.commands(),
        server.log_excerpt()
    );
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(10), |r| r.len() == 2);
    assert!(ok, "{rows:?}\n{}", server.log_excerpt());
    let mut bodies: Vec<&str> = rows.iter().map(|r| r.4.as_str()).collect();
    bodies.sort();
    let mut want = vec![text.as_str(), "Ваш код: 5678"];
    want.sort();
    assert_eq!(bodies, want);
    assert!(sim.sim_pdus().is_empty(), "nothing stored on the SIM");
    assert_eq!(sim.with(|s| s.direct_sent), n, "nothing delivered twice");

    let web = server.web.expect("web address");
    let token = {
        let conn = rusqlite::Connection::open(&server.db).expect("db");
        pasarela::web::api_tokens::create(&conn, "test").expect("token")
    };
    let (status, body) = api(
        web,
        "POST",
        "/api/v1/messages",
        &token,
        r#"{"from":"100","to":"+491709876543","text":"Rückruf bitte"}"#,
    );
    assert_eq!(status, 202, "{body}");
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(15), |r| {
        r.iter().any(|r| r.1 == "sms_out" && r.5 == "delivered")
    });
    assert!(ok, "{rows:?}\n{}", server.log_excerpt());
    assert!(
        wait_until(Duration::from_secs(5), || sim.with(|s| s.acks) == n + 1),
        "the +CDS was not acknowledged"
    );
}

/// USSD the network sends on its own: a menu that waits for a reply appears in the API and on
/// the dashboard with a reply form; the reply goes to the modem and its answer comes back; a
/// UCS-2 notice is decoded.
#[test]
fn network_ussd_is_shown_and_can_be_answered() {
    use common::web_client::{csrf_of, set_up_admin};
    let (server, sim) = start("sms-net-ussd", "");
    let web = server.web.expect("web address");
    let token = {
        let conn = rusqlite::Connection::open(&server.db).expect("db");
        pasarela::web::api_tokens::create(&conn, "test").expect("token")
    };
    let menu = "Ihr Guthaben ist niedrig. 1 Aufladen 2 Ende";
    sim.network_ussd(1, menu, 15);
    let mut body = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (status, b) = api(web, "GET", "/api/v1/ussd?origin=network", &token, "");
            body = b;
            status == 200 && body.contains(menu)
        }),
        "{body}\n{}",
        server.log_excerpt()
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let e = &v["ussd"][0];
    assert_eq!(
        (&e["line"], &e["origin"], &e["status"], &e["awaits_reply"]),
        (
            &serde_json::json!("gsm1"),
            &serde_json::json!("network"),
            &serde_json::json!(1),
            &serde_json::json!(true)
        ),
        "{v}"
    );
    let mut admin = set_up_admin(web);
    let page = admin.get("/messages");
    assert!(page.body.contains("USSD from the network"), "{}", page.body);
    assert!(page.body.contains(menu), "{}", page.body);
    assert!(page.body.contains("ussd-reply"), "a reply form");
    let csrf = csrf_of(&page.body);
    let r = admin.post(
        "/messages/ussd",
        &[("csrf", &csrf), ("code", "1"), ("line", "gsm1")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Balance: 12,34 EUR"), "{}", r.body);
    assert_eq!(sim.with(|s| s.ussd_codes.clone()), vec!["1".to_string()]);

    let ucs2: String = "Баланс: 5 ₽"
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .map(|b| format!("{b:02X}"))
        .collect();
    sim.network_ussd(0, &ucs2, 72);
    assert!(
        wait_until(Duration::from_secs(10), || api(
            web,
            "GET",
            "/api/v1/ussd?origin=network",
            &token,
            ""
        )
        .1
        .contains("Баланс: 5 ₽")),
        "{}",
        server.log_excerpt()
    );
    let (_, all) = api(web, "GET", "/api/v1/ussd", &token, "");
    assert!(all.contains("\"origin\":\"answer\""), "{all}");
}

/// The inbox in headless Chromium: a tab per line with its unread count, conversations by
/// number with unread counts that drop when one is opened, the send form's part count and
/// encoding as one types (GSM-7, the extension table, UCS-2, emoji), delete, and the CSV export.
#[test]
fn inbox_in_the_browser() {
    use common::web_client::{set_up_admin, PASSWORD};
    let (server, sim) = start("sms-inbox", "");
    let other = "+4915112345678";
    for (from, text) in [
        (SENDER, "Erste Nachricht"),
        (other, "Guten Tag 👋"),
        (SENDER, "Zweite Nachricht"),
    ] {
        for pdu in deliver_pdus(from, text, 0) {
            sim.deliver_sms(&pdu, true);
        }
        thread::sleep(Duration::from_millis(300));
    }
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(15), |r| r.len() == 3);
    assert!(ok, "{rows:?}\n{}", server.log_excerpt());
    let web = server.web.expect("web address");
    drop(set_up_admin(web));
    let artefacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artefacts");
    std::fs::create_dir_all(&artefacts).unwrap();
    let b = webdriver::Browser::start(server.dir(), &artefacts, 1280, 900);
    let wait = Duration::from_secs(15);
    b.goto(&format!("http://{web}/login"));
    b.fill("input[name=username]", "admin");
    b.fill("input[name=password]", PASSWORD);
    b.click(&b.find("form[action='/login'] button[type=submit]"));
    b.wait_for(wait, "the overview", |h| h.contains("<h1>Overview</h1>"));
    b.goto(&format!("http://{web}/messages"));
    b.wait_for(wait, "the inbox", |h| h.contains("<h2>Conversations"));
    let tab = |b: &webdriver::Browser| b.text(&b.find("span.line-unread[data-line=gsm1]"));
    assert_eq!(tab(&b), "(3, 3 unread)");
    let unread_of = |b: &webdriver::Browser, peer: &str| -> String {
        b.script(
            "for (const r of document.querySelectorAll('tr.conversation')) \
               if (r.querySelector('a').textContent === arguments[0]) \
                 return r.querySelector('.unread-count').textContent; return null;",
            serde_json::json!([peer]),
        )
        .as_str()
        .unwrap_or_default()
        .to_owned()
    };
    assert_eq!(unread_of(&b, SENDER), "2");
    assert_eq!(unread_of(&b, other), "1");
    assert!(
        !b.source().contains("src=\"http"),
        "scripts come from pasarela"
    );
    b.screenshot("sms-01-inbox");

    // The line's tab shows its conversations only.
    b.click(&b.find("a.line-tab"));
    b.wait_for(wait, "the line's inbox", |h| {
        h.contains("Conversations on gsm1")
    });
    // Opening a conversation marks it read.
    let link = b
        .find_all("tr.conversation a")
        .into_iter()
        .find(|a| b.text(a) == SENDER)
        .expect("the conversation's link");
    b.click(&link);
    b.wait_for(wait, "the conversation", |h| {
        h.contains("Conversation with +491701234567")
            && h.contains("Erste Nachricht")
            && h.contains("Zweite Nachricht")
    });
    b.goto(&format!("http://{web}/messages"));
    b.wait_for(wait, "the inbox", |h| h.contains("<h2>Conversations"));
    assert_eq!(unread_of(&b, SENDER), "0");
    assert_eq!(unread_of(&b, other), "1");
    assert_eq!(tab(&b), "(3, 1 unread)");

    // The send form counts parts and names the encoding as one types.
    let count = |b: &webdriver::Browser, text: &str| -> String {
        if text.chars().all(|c| (c as u32) < 0x1_0000) {
            b.fill("#sms-text", text);
        } else {
            // ChromeDriver types only characters of the Basic Multilingual Plane: emoji are
            // put in as a paste would, with the same input event.
            b.script(
                "const t = document.getElementById('sms-text'); t.value = arguments[0]; \
                 t.dispatchEvent(new Event('input', { bubbles: true }));",
                serde_json::json!([text]),
            );
        }
        b.text(&b.find("#sms-count"))
    };
    assert_eq!(count(&b, "Hallo"), "1 part, GSM-7");
    assert_eq!(count(&b, &"a".repeat(160)), "1 part, GSM-7");
    assert_eq!(count(&b, &"a".repeat(161)), "2 parts, GSM-7");
    assert_eq!(count(&b, &"€".repeat(80)), "1 part, GSM-7");
    assert_eq!(count(&b, &"€".repeat(81)), "2 parts, GSM-7");
    assert_eq!(count(&b, "Привет"), "1 part, UCS-2");
    assert_eq!(count(&b, &"ж".repeat(71)), "2 parts, UCS-2");
    assert_eq!(count(&b, &"😀".repeat(35)), "1 part, UCS-2");
    assert_eq!(count(&b, &"😀".repeat(36)), "2 parts, UCS-2");
    assert_eq!(count(&b, &"a".repeat(460)), "4 parts, GSM-7");
    b.screenshot("sms-02-send-form");

    // Delete one message of the conversation: back on it, the other is still there.
    b.goto(&format!("http://{web}/messages?peer=%2B491701234567"));
    b.wait_for(wait, "the conversation", |h| h.contains("Erste Nachricht"));
    b.click(&b.find("table.thread form[action='/messages/delete'] button"));
    b.wait_for(wait, "the conversation after the delete", |h| {
        h.contains("Conversation with +491701234567")
            && !h.contains("Erste Nachricht")
            && h.contains("Zweite Nachricht")
    });
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(5), |r| r.len() == 2);
    assert!(ok, "{rows:?}");

    // The CSV export, fetched by the page as a person's browser would.
    let csv = b.script(
        "var x = new XMLHttpRequest(); x.open('GET', '/messages.csv', false); x.send(); \
         return [x.status, x.getResponseHeader('Content-Type'), x.responseText];",
        serde_json::json!([]),
    );
    assert_eq!(csv[0], 200, "{csv}");
    assert!(
        csv[1].as_str().unwrap_or_default().starts_with("text/csv"),
        "{csv}"
    );
    let text = csv[2].as_str().unwrap_or_default();
    assert!(
        text.contains("Zweite Nachricht") && text.contains("Guten Tag 👋"),
        "{text}"
    );
    assert!(!text.contains("Erste Nachricht"), "{text}");
}

/// Issue 17: a modem line added in the dashboard (here through the API, a second simulator)
/// gets its text messages to its own incoming extension, as a line of the file does: the
/// message service learns the line's extensions when the line is added.
#[test]
fn sms_on_a_modem_line_added_at_run_time_reaches_its_extension() {
    let (server, _sim1) = start("sms-web-line", "");
    let sim_dir = common::TestDir::new("sms-web-line-sim2");
    let sim2 = Sim::start(
        sim_dir.path(),
        "gsm2",
        "353142034567892",
        "8949226012345678902",
    );
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    let admin = pasarela::web::api_tokens::create_scoped(
        &conn,
        "provisioning",
        pasarela::web::api_tokens::Scope::Admin,
    )
    .unwrap();
    let body = format!(
        r#"{{"data_port":"{}","audio_port":"{}","incoming":["102"],"probe_interval_secs":1}}"#,
        sim2.data_link.display(),
        sim2.audio_link.display()
    );
    let mut c = common::web_client::Client::new(server.web.expect("web address"));
    let r = c.api_json("PUT", "/api/v1/modems/gsm2", &admin, &body);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_line_idle(&server, &sim2);
    let p = phone(&server, "102", "102", None);
    for pdu in deliver_pdus(SENDER, "Hallo gsm2", 7) {
        sim2.deliver_sms(&pdu, true);
    }
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(15), |r| {
        r.iter().any(|r| r.4 == "Hallo gsm2")
    });
    assert!(ok, "not stored: {rows:?}\n{}", server.log_excerpt());
    let row = rows.iter().find(|r| r.4 == "Hallo gsm2").unwrap();
    assert_eq!(
        (row.1.as_str(), row.2.as_str(), row.3.as_str()),
        ("sms_in", SENDER, "102"),
        "{rows:?}"
    );
    assert!(
        wait_log(&p, "Hallo gsm2", Duration::from_secs(10)),
        "the phone of gsm2's extension did not get the text\n{}\n{}",
        p.report(),
        server.log_excerpt()
    );
}

/// Issue 17's leftover: the message service reads senders with the numbering plan in use. A
/// national sender is written in E.164 by the plan; after the country code is changed through
/// the API (the /numbering page's store), the next SMS's national sender is read with the new
/// plan, without a restart.
#[test]
fn received_sms_senders_follow_the_numbering_plan_changed_at_run_time() {
    require_program("baresip", "baresip");
    python();
    let sim_dir = common::TestDir::new("sms-numbering");
    let sim = Sim::start(sim_dir.path(), "gsm1", IMEI, ICCID);
    // The file leaves the country code to the dashboard (49 by default).
    let config = modem_config(&sim, "", "").replace("country_code = \"49\"\n", "");
    let server = Server::start(&config);
    wait_line_idle(&server, &sim);
    let p = phone(&server, "101", "101", None);
    for pdu in deliver_pdus("017012345678", "Erste", 0) {
        sim.deliver_sms(&pdu, true);
    }
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(15), |r| {
        r.iter().any(|r| r.4 == "Erste")
    });
    assert!(ok, "not stored: {rows:?}\n{}", server.log_excerpt());
    let row = rows.iter().find(|r| r.4 == "Erste").unwrap();
    assert_eq!(row.2, "+4917012345678", "{rows:?}");

    let admin = common::web_client::admin_token(&server.db);
    let mut c = common::web_client::Client::new(server.web.expect("web address"));
    let r = c.api_json(
        "PUT",
        "/api/v1/numbering",
        &admin,
        r#"{"numbering":{"country_code":"33"}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(server.log_path())
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("numbering plan updated") && l.contains("country_code=33"))
    {
        if Instant::now() > deadline {
            server.fail("the message service never got the new plan");
        }
        thread::sleep(Duration::from_millis(200));
    }
    for pdu in deliver_pdus("0612345678", "Bonjour", 0) {
        sim.deliver_sms(&pdu, true);
    }
    let (ok, rows) = wait_rows(&server.db, Duration::from_secs(15), |r| {
        r.iter().any(|r| r.4 == "Bonjour")
    });
    assert!(ok, "not stored: {rows:?}\n{}", server.log_excerpt());
    let row = rows.iter().find(|r| r.4 == "Bonjour").unwrap();
    assert_eq!(
        (row.1.as_str(), row.2.as_str(), row.3.as_str()),
        ("sms_in", "+33612345678", "101"),
        "{rows:?}"
    );
    assert!(
        wait_log(&p, "Bonjour", Duration::from_secs(10)),
        "the phone did not get the text\n{}\n{}",
        p.report(),
        server.log_excerpt()
    );
}
