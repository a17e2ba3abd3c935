//! The dashboard over HTTPS on a LAN-style address (127.0.0.5, not the loopback 127.0.0.1 the
//! plain listener keeps for /healthz and /metrics), in headless Chromium that trusts only the
//! self-signed certificate pasarela made on first start (its SPKI hash, computed with the
//! `openssl` command line): the first-run setup works there, every cookie the browser got is
//! `Secure`, responses carry HSTS, and the plain listener still answers /healthz without them.
mod common;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{config, free_port, http_get, require_program, Server};
use serde_json::json;
use webdriver::Browser;

const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(15);

/// base64(SHA-256(SubjectPublicKeyInfo)) of the PEM certificate at `cert`, as Chromium's
/// `--ignore-certificate-errors-spki-list` wants it, computed by openssl.
fn spki_hash(cert: &Path) -> String {
    require_program("openssl", "openssl");
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | \
         openssl dgst -sha256 -binary | openssl base64 -A",
        cert.display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run openssl");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success() && hash.len() == 44,
        "openssl gave no SPKI hash: {hash:?}"
    );
    hash
}

fn artefacts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-artefacts")
}

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

#[test]
fn chromium_reaches_the_dashboard_over_https_with_secure_cookies() {
    let port = free_port();
    let https = format!("127.0.0.5:{port}");
    let template = config("").replace(
        "[web]\nlisten = \"127.0.0.1:0\"",
        &format!("[web]\nlisten = \"127.0.0.1:0\"\nhttps = \"{https}\""),
    );
    assert!(template.contains("https ="), "the config template changed");
    let mut server = Server::start(&template);
    let cert = server.dir().join("tls").join("pasarela-cert.pem");
    assert!(
        cert.is_file(),
        "no self-signed certificate\n{}",
        server.log_excerpt()
    );
    let stdout = std::fs::read_to_string(server.dir().join("server-1.stdout")).unwrap_or_default();
    assert!(
        stdout.contains(&format!("listening https {https}")),
        "serve did not report the HTTPS listener:\n{stdout}"
    );

    let b = Browser::start_with(
        server.dir(),
        &artefacts(),
        1280,
        900,
        &[format!(
            "--ignore-certificate-errors-spki-list={}",
            spki_hash(&cert)
        )],
    );
    let base = format!("https://{https}");
    b.goto(&format!("{base}/"));
    wait_url(&b, "the setup page over HTTPS", |u| {
        u.starts_with("https://") && u.ends_with("/setup")
    });
    b.screenshot("https-01-setup");
    b.fill("input[name=username]", "admin");
    b.fill("input[name=password]", PASSWORD);
    b.fill("input[name=password2]", PASSWORD);
    let button = b.find("form[action='/setup'] button[type=submit]");
    b.click(&button);
    b.wait_for(WAIT, "the overview", |h| h.contains("<h1>Overview</h1>"));
    assert!(b.url().starts_with(&base), "left HTTPS: {}", b.url());
    b.screenshot("https-02-overview");

    // The session (and every other cookie) is Secure: never sent over plain HTTP.
    let cookies = b.cookies();
    assert!(
        cookies
            .iter()
            .any(|c| c["name"].as_str() == Some("pasarela_session")),
        "no session cookie: {cookies:?}"
    );
    for c in &cookies {
        assert_eq!(c["secure"], json!(true), "a cookie without Secure: {c}");
    }
    // HSTS on HTTPS responses, read by the page itself.
    let hsts = b.script(
        "return fetch('/healthz').then(r => r.headers.get('strict-transport-security'));",
        json!([]),
    );
    assert!(
        hsts.as_str().is_some_and(|h| h.starts_with("max-age=")),
        "no HSTS header over HTTPS: {hsts}"
    );

    // The plain listener stays on loopback for /healthz and /metrics, without HSTS.
    let web = server.web.expect("plain web address");
    assert!(web.ip().is_loopback());
    let (status, headers, body) = http_get(web, "/healthz");
    assert_eq!(status, 200, "{headers}\n{body}");
    assert!(
        !headers
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{headers}"
    );
    server.assert_alive();
}
