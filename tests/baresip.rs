//! A real softphone (baresip 1.0.0, headless) registers; the binding is persisted in the SQLite
//! store and survives a graceful restart and a SIGKILL of the server, as seen both in the database
//! and in the answer to an authenticated REGISTER query (sipp scenario register_query.xml).
mod common;

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{config, free_port, require_program, sipp, Server, MD5_ONLY};

const MODULE_PATH: &str = "/usr/lib/baresip/modules";

/// Kills baresip (SIGKILL: it does not unregister) when dropped.
struct Baresip {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("baresip log: {}", self.log.display());
        }
    }
}

impl Baresip {
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn start_baresip(dir: &Path, registrar: std::net::SocketAddr, sip_port: u16) -> Baresip {
    require_program("baresip", "baresip");
    assert!(
        Path::new(MODULE_PATH).join("account.so").is_file(),
        "baresip modules not found in {MODULE_PATH}: install the Debian package `baresip`"
    );
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join("config"),
        format!(
            "poll_method\t\tpoll\n\
             sip_listen\t\t127.0.0.1:{sip_port}\n\
             net_interface\t\t127.0.0.1\n\
             module_path\t\t{MODULE_PATH}\n\
             module\t\t\tg711.so\n\
             module_app\t\taccount.so\n\
             audio_player\t\taufile,/dev/null\n\
             audio_source\t\taufile,/dev/null\n"
        ),
    )
    .unwrap();
    fs::write(
        dir.join("accounts"),
        format!(
            "<sip:100@{registrar};transport=udp>;auth_user=100;auth_pass=secret100;regint=600\n"
        ),
    )
    .unwrap();
    fs::write(dir.join("contacts"), "").unwrap();
    let log = dir.join("baresip.log");
    let out = File::create(&log).unwrap();
    let child = Command::new("baresip")
        .arg("-f")
        .arg(dir)
        .arg("-s") // SIP trace into the log
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("spawn baresip");
    Baresip { child, log }
}

/// Contacts bound to AOR 100 in the store (`bindings(aor, contact, expires_at, …)`); the AOR may
/// be stored as `100` or as a SIP URI of user 100.
fn stored_contacts(db: &Path) -> Result<Vec<String>, String> {
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    let mut st = conn
        .prepare("SELECT contact FROM bindings WHERE aor = '100' OR aor LIKE 'sip:100@%' OR aor LIKE 'sips:100@%'")
        .map_err(|e| e.to_string())?;
    let rows = st
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(rows)
}

/// Waits (bounded) for a stored binding of AOR 100 naming `needle`.
fn wait_for_binding(server: &Server, phone: &Baresip, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut last = Err("not queried".to_string());
    while Instant::now() < deadline {
        last = stored_contacts(&server.db);
        if let Ok(rows) = &last {
            if let Some(c) = rows.iter().find(|c| c.contains(needle)) {
                return c.clone();
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "no binding of AOR 100 naming {needle} in {} within {limit:?} (last query: {last:?})\n\
         --- baresip log ---\n{}\n{}",
        server.db.display(),
        phone.log_text(),
        server.log_excerpt()
    );
}

/// Asserts that an authenticated REGISTER query lists a Contact naming `needle`.
fn assert_query_lists(server: &Server, needle: &str, when: &str) {
    let res = sipp(
        server.dir(),
        "register_query.xml",
        server.udp,
        "u1",
        &["-s", "100", "-au", "100", "-ap", "secret100"],
    );
    res.assert_success(server);
    let text = res.log_text();
    let listed = text
        .lines()
        .filter(|l| {
            let l = l.trim_start().to_ascii_lowercase();
            l.starts_with("contact:") || l.starts_with("m:")
        })
        .any(|l| l.contains(needle));
    assert!(
        listed,
        "{when}: the 200 to a REGISTER query does not list a Contact naming {needle}\n{}\n{}",
        res.report(),
        server.log_excerpt()
    );
}

#[test]
fn baresip_registers_and_binding_survives_restart_and_sigkill() {
    require_program("baresip", "baresip");
    require_program("sipp", "sip-tester");
    let mut server = Server::start(&config(MD5_ONLY));
    let phone_port = free_port();
    let phone = start_baresip(&server.dir().join("baresip"), server.udp, phone_port);
    let needle = format!("127.0.0.1:{phone_port}");

    let contact = wait_for_binding(&server, &phone, &needle, Duration::from_secs(15));
    eprintln!("baresip bound as {contact}");
    assert_query_lists(&server, &needle, "while running");

    server.restart();
    wait_for_binding(&server, &phone, &needle, Duration::from_secs(2));
    assert_query_lists(&server, &needle, "after a graceful restart");

    server.kill9();
    server.start_again();
    wait_for_binding(&server, &phone, &needle, Duration::from_secs(2));
    assert_query_lists(&server, &needle, "after SIGKILL and a new start");

    server.assert_alive();
    drop(phone);
}
