//! Dashboard accounts on a real `pasarela serve`, over HTTP: a viewer's POSTs are refused
//! server-side (not just hidden buttons), sessions are listed and a revoked one stops working,
//! `pasarela admin reset-password` works while the server runs and ends the user's sessions,
//! extensions are deleted (and config-file ones are not), DIDs typed nationally are stored as
//! E.164, permissions come from checkboxes, the phone setup panel shows what to enter, and
//! every change lands in the audit log without its passwords.
mod common;

use std::process::{Command, Stdio};

use common::web_client::{csrf_of, redirect_to, set_up_admin, Client, PASSWORD};
use common::{config, server_program, Server, MD5_ONLY};
use sha2::{Digest, Sha256};

const VIEWER_PASSWORD: &str = "viewer horse staple";

fn login(web: std::net::SocketAddr, user: &str, password: &str) -> Client {
    let mut c = Client::new(web);
    let page = c.get("/login");
    assert_eq!(page.status, 200, "{}", page.body);
    let t = csrf_of(&page.body);
    let r = c.post(
        "/login",
        &[("username", user), ("password", password), ("csrf", &t)],
    );
    assert_eq!(redirect_to(&r), "/", "login of {user}");
    c
}

fn session_id(c: &Client) -> String {
    hex::encode(Sha256::digest(c.cookies["pasarela_session"].as_bytes()))
}

fn csrf(c: &mut Client) -> String {
    csrf_of(&c.get("/account").body)
}

fn query(db: &std::path::Path, sql: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    rows
}

#[test]
fn roles_sessions_reset_extensions_and_audit() {
    let server = Server::start(&config(MD5_ONLY));
    let web = server.web.expect("web address");
    let mut admin = set_up_admin(web);
    let t = csrf(&mut admin);

    // The administrator adds a viewer; the password policy of the file applies.
    let add = |c: &mut Client, name: &str, pw: &str, t: &str| {
        c.post(
            "/users/add",
            &[
                ("username", name),
                ("role", "viewer"),
                ("password", pw),
                ("password2", pw),
                ("csrf", t),
            ],
        )
    };
    let weak = add(&mut admin, "ana", "12345678", &t);
    assert_eq!(weak.status, 422, "{}", weak.body);
    assert_eq!(
        redirect_to(&add(&mut admin, "ana", VIEWER_PASSWORD, &t)),
        "/account"
    );

    // The viewer reads everything but every change is refused on the server.
    let mut ana = login(web, "ana", VIEWER_PASSWORD);
    for page in [
        "/",
        "/records",
        "/billing",
        "/live",
        "/extensions",
        "/account",
    ] {
        assert_eq!(ana.get(page).status, 200, "{page}");
    }
    let vt = csrf(&mut ana);
    for (path, form) in [
        (
            "/extensions/save",
            vec![
                ("number", "301"),
                ("password", "sip-secret-301"),
                ("enabled", "1"),
            ],
        ),
        ("/extensions/delete", vec![("number", "100")]),
        ("/users/add", vec![("username", "eve"), ("role", "admin")]),
        ("/users/remove", vec![("id", "1")]),
        ("/live/hangup", vec![("call", "1")]),
        ("/tokens/create", vec![("name", "x")]),
        ("/security/lift", vec![("addr", "192.0.2.1")]),
    ] {
        let mut f = form.clone();
        f.push(("csrf", &vt));
        let r = ana.post(path, &f);
        assert_eq!(r.status, 403, "{path}: {}", r.body);
    }
    assert!(query(
        &server.db,
        "SELECT number FROM extensions WHERE number = '301'"
    )
    .is_empty());
    // … but the viewer changes its own password.
    let r = ana.post(
        "/account/password",
        &[
            ("current", VIEWER_PASSWORD),
            ("password", "viewer horse saddle"),
            ("password2", "viewer horse saddle"),
            ("csrf", &vt),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Password changed"));
    let wrong = ana.post(
        "/account/password",
        &[
            ("current", "not it at all"),
            ("password", "viewer horse saddle 2"),
            ("password2", "viewer horse saddle 2"),
            ("csrf", &vt),
        ],
    );
    assert_eq!(wrong.status, 422);

    // Sessions: a second admin browser is listed and, once revoked, stops working.
    let mut second = login(web, "admin", PASSWORD);
    assert_eq!(second.get("/").status, 200);
    let listed = admin.get("/account").body;
    let sid = session_id(&second);
    assert!(listed.contains(&sid), "{listed}");
    let r = admin.post("/account/sessions/revoke", &[("id", &sid), ("csrf", &t)]);
    assert_eq!(redirect_to(&r), "/account");
    assert_eq!(redirect_to(&second.get("/")), "/login");
    // A viewer cannot revoke somebody else's session.
    let r = ana.post(
        "/account/sessions/revoke",
        &[("id", &session_id(&admin)), ("csrf", &vt)],
    );
    assert_eq!(r.status, 422);
    assert_eq!(admin.get("/").status, 200);

    // Extensions: permissions from checkboxes, a national DID stored as E.164.
    let r = admin.post(
        "/extensions/save",
        &[
            ("number", "300"),
            ("name", "Desk"),
            ("did", "030 1234567"),
            ("password", "sip-secret-300"),
            ("enabled", "1"),
            ("perm_boxes", "1"),
            ("perm_internal", "1"),
            ("perm_mobile", "1"),
            ("csrf", &t),
        ],
    );
    assert_eq!(redirect_to(&r), "/extensions");
    assert_eq!(
        query(
            &server.db,
            "SELECT did || ' ' || permissions FROM extensions WHERE number = '300'"
        ),
        vec!["+49301234567 internal,mobile".to_owned()]
    );
    let bad = admin.post(
        "/extensions/save",
        &[
            ("number", "302"),
            ("did", "12ab"),
            ("password", "sip-secret-302"),
            ("csrf", &t),
        ],
    );
    assert_eq!(bad.status, 422);
    assert!(bad.body.contains("DID:"), "{}", bad.body);

    // The phone setup panel: server, port, transport, domain, user; never the password.
    let phone = admin.get("/extensions/phone?number=300");
    assert_eq!(phone.status, 200, "{}", phone.body);
    assert!(phone.body.contains(&server.udp.port().to_string()));
    assert!(phone.body.contains("office.test"));
    assert!(phone.body.contains("auth_user=300"));
    assert!(!phone.body.contains("sip-secret-300"));
    assert_eq!(admin.get("/extensions/phone?number=999").status, 404);

    // Delete: a dashboard extension goes, one of the configuration file stays.
    let r = admin.post("/extensions/delete", &[("number", "300"), ("csrf", &t)]);
    assert_eq!(redirect_to(&r), "/extensions");
    assert!(query(
        &server.db,
        "SELECT number FROM extensions WHERE number = '300'"
    )
    .is_empty());
    let r = admin.post("/extensions/delete", &[("number", "100"), ("csrf", &t)]);
    assert_eq!(r.status, 422);
    assert_eq!(
        query(
            &server.db,
            "SELECT number FROM extensions WHERE number = '100'"
        )
        .len(),
        1
    );

    // The command-line reset while the server runs: ana's sessions end, the new password works.
    let conf = server.dir().join("pasarela.toml");
    let out = Command::new(server_program())
        .args(["admin", "reset-password", "ana", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let new_password = stdout.trim().rsplit(' ').next().unwrap().to_owned();
    assert_eq!(new_password.chars().count(), 16, "{stdout}");
    assert_eq!(redirect_to(&ana.get("/")), "/login");
    let mut ana = login(web, "ana", &new_password);
    assert_eq!(ana.get("/records").status, 200);
    // With --stdin, a weak password is refused (same policy) and exits 2.
    let mut child = Command::new(server_program())
        .args(["admin", "reset-password", "ana", "--stdin", "--config"])
        .arg(&conf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"ana\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(server_program())
        .args(["admin", "reset-password", "nobody", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no dashboard user"));

    // The audit log: who, what, the outcome; no secret.
    let audit = admin.get("/audit");
    assert_eq!(audit.status, 200);
    for needle in [
        "/users/add",
        "username=ana",
        "refused: viewer",
        "/extensions/delete",
        "number=300",
        "/account/password",
        "pasarela admin reset-password",
        "/setup",
    ] {
        assert!(
            audit.body.contains(needle),
            "{needle} missing in {}",
            audit.body
        );
    }
    for secret in [VIEWER_PASSWORD, "sip-secret-300", PASSWORD, &new_password] {
        assert!(!audit.body.contains(secret), "{secret} in the audit log");
    }
    // Viewers read the audit log too but cannot remove the last administrator; admins
    // cannot remove themselves.
    let r = admin.post("/users/remove", &[("id", "1"), ("csrf", &t)]);
    assert_eq!(r.status, 422);
}
