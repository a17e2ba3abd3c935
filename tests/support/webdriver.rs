//! A small W3C WebDriver client for the browser tests: starts Debian's `chromedriver` on a free
//! loopback port with headless Debian `chromium`, and speaks the WebDriver JSON protocol over
//! plain HTTP/1.1 on std's TcpStream (no async runtime, no extra crates). Only what the tests
//! use: navigate, find, click, type, read text, run a script, resize, screenshot.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running chromedriver with one browser session; both end when dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    /// Where screenshots are written.
    pub artefacts: PathBuf,
    /// Where downloads land.
    pub downloads: PathBuf,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to chromedriver: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body.as_bytes()).map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open: read the head, then exactly the body.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("chromedriver closed the connection".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    let mut payload = raw[split + 4..].to_vec();
    loop {
        let done = match length {
            Some(n) => payload.len() >= n,
            None if chunked => payload.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if done {
            break;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        payload.extend_from_slice(&buf[..n]);
    }
    if chunked {
        payload = dechunk(&payload);
    }
    let v: Value = serde_json::from_slice(&payload).map_err(|e| {
        format!(
            "chromedriver answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&payload)
        )
    })?;
    if let Some(err) = v["value"]["error"].as_str() {
        return Err(format!(
            "{method} {path}: {err}: {}",
            v["value"]["message"].as_str().unwrap_or("")
        ));
    }
    Ok(v)
}

fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if size == 0 {
            break;
        }
        let start = eol + 2;
        if rest.len() < start + size {
            break;
        }
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[(start + size + 2).min(rest.len())..];
    }
    out
}

impl Browser {
    /// Clicks the submit button of the form `form_css`.
    pub fn submit(&self, form_css: &str) {
        let button = self.find(&format!("{form_css} button[type=submit]"));
        self.click(&button);
    }

    /// Starts chromedriver and a headless chromium with a fresh profile under `dir`, its
    /// window `width`×`height`. Panics with the reason when they cannot start (the test needs
    /// them: Debian packages `chromium` and `chromium-driver`).
    pub fn start(dir: &Path, artefacts: &Path, width: u32, height: u32) -> Browser {
        Browser::start_with(dir, artefacts, width, height, &[])
    }

    /// [`Browser::start`] with `extra` Chromium flags (e.g. the SPKI hash of a test
    /// certificate to trust: `--ignore-certificate-errors-spki-list=…`).
    pub fn start_with(
        dir: &Path,
        artefacts: &Path,
        width: u32,
        height: u32,
        extra: &[String],
    ) -> Browser {
        let driver_bin = super::common::require_program("chromedriver", "chromium-driver");
        let chromium = super::common::require_program("chromium", "chromium");
        let port = super::common::free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("driver log");
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = http(addr, "GET", "/status", None) {
                if v["value"]["ready"].as_bool() == Some(true) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = dir.join("chromium-profile");
        let downloads = dir.join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads dir");
        std::fs::create_dir_all(artefacts).expect("artefacts dir");
        // The flags that keep Chromium off the network (this machine has none) and quiet.
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-extensions".to_owned(),
            "--password-store=basic".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
        ];
        args.extend(extra.iter().cloned());
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": args,
                        "prefs": {
                            "download.default_directory": downloads,
                            "download.prompt_for_download": false,
                            "credentials_enable_service": false,
                            "profile.password_manager_enabled": false,
                        }
                    }
                }
            }
        });
        let v = http(addr, "POST", "/session", Some(&caps)).expect("a browser session");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        Browser {
            driver,
            addr,
            session,
            artefacts: artefacts.to_path_buf(),
            downloads,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        http(
            self.addr,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
        .map(|v| v["value"].clone())
    }

    /// The cookies the browser holds for the current page (WebDriver objects with `name`,
    /// `secure`, `httpOnly` …).
    pub fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn title(&self) -> String {
        self.cmd("GET", "/title", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The page's HTML as the browser has it now.
    pub fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn try_find(&self, css: &str) -> Option<Element> {
        let v = self
            .cmd(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .ok()?;
        v[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))
    }

    /// The first element matching `css`; panics (with the page) when there is none.
    pub fn find(&self, css: &str) -> Element {
        self.try_find(css)
            .unwrap_or_else(|| panic!("no `{css}` on {}:\n{}", self.url(), self.source()))
    }

    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned())))
        .collect()
    }

    pub fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})))
            .unwrap_or_else(|err| panic!("click: {err}"));
    }

    /// Clears a field and types `text` into it.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{}/clear", e.0), Some(json!({})))
            .unwrap_or_else(|err| panic!("clear {css}: {err}"));
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({ "text": text })),
        )
        .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    pub fn text(&self, e: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", e.0), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn script(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Resizes the window (CSS pixels).
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .unwrap_or_else(|e| panic!("resize: {e}"));
    }

    /// Saves a screenshot of the window as `artefacts/NAME.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.cmd("GET", "/screenshot", None).expect("screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("base64 screenshot");
        let path = self.artefacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Waits up to `limit` for `cond` on the page's HTML.
    pub fn wait_for(&self, limit: Duration, what: &str, cond: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if cond(&self.source()) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "waited {limit:?} for {what} on {}:\n{}",
                    self.url(),
                    self.source()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.cmd("DELETE", "", None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
