//! A small cookie-aware HTTP/1.1 client on std's TcpStream for driving the dashboard of a real
//! `pasarela serve` like a browser would (sessions, CSRF tokens, forms), and setting up its
//! first admin.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// A response: status, lower-cased header names with their values, and the (de-chunked) body.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A browser-like client: keeps the cookies the server sets.
pub struct Client {
    pub addr: SocketAddr,
    pub cookies: HashMap<String, String>,
}

pub fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&rest[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        let start = eol + 2;
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[start + size + 2..];
    }
    out
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            cookies: HashMap::new(),
        }
    }

    pub fn request(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Resp {
        self.request_with(method, path, form, None)
    }

    /// A GET with `Authorization: Bearer token` and no cookies (how programs use the API).
    pub fn api_get(&mut self, path: &str, token: Option<&str>) -> Resp {
        let saved = std::mem::take(&mut self.cookies);
        let r = self.request_with("GET", path, None, token);
        self.cookies = saved;
        r
    }

    /// A request with `Authorization: Bearer token`, a JSON body and no cookies (the API).
    pub fn api_json(&mut self, method: &str, path: &str, token: &str, json: &str) -> Resp {
        let mut s =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{json}",
            self.addr,
            json.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read response");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            String::from_utf8_lossy(&dechunk(rest.as_bytes())).into_owned()
        } else {
            rest.to_owned()
        };
        Resp {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn request_with(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&[(&str, &str)]>,
        bearer: Option<&str>,
    ) -> Resp {
        let mut s =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let body = form
            .map(|pairs| {
                pairs
                    .iter()
                    .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
                    .collect::<Vec<_>>()
                    .join("&")
            })
            .unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if !self.cookies.is_empty() {
            let c: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            head.push_str(&format!("Cookie: {}\r\n", c.join("; ")));
        }
        if let Some(t) = bearer {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if form.is_some() {
            head.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read response");
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of head");
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
        {
            body = dechunk(&body);
        }
        for (k, v) in &headers {
            if k == "set-cookie" {
                let pair = v.split(';').next().unwrap();
                let (name, value) = pair.split_once('=').unwrap();
                if value.is_empty() || v.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        Resp {
            status,
            headers,
            body: String::from_utf8(body).expect("utf-8 body"),
        }
    }

    pub fn get(&mut self, path: &str) -> Resp {
        self.request("GET", path, None)
    }

    pub fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Resp {
        self.request("POST", path, Some(form))
    }
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of the hidden `csrf` field of a page.
pub fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no csrf field in {html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

pub fn redirect_to(r: &Resp) -> &str {
    assert!(
        matches!(r.status, 302 | 303 | 307),
        "expected a redirect, got {} {}",
        r.status,
        r.body
    );
    r.header("location").unwrap_or("")
}

pub const PASSWORD: &str = "correct horse battery";

/// Runs first-run setup and returns the logged-in client.
pub fn set_up_admin(web: SocketAddr) -> Client {
    let mut c = Client::new(web);
    let page = c.get("/setup");
    assert_eq!(page.status, 200, "{}", page.body);
    let token = csrf_of(&page.body);
    let r = c.post(
        "/setup",
        &[
            ("username", "admin"),
            ("password", PASSWORD),
            ("password2", PASSWORD),
            ("csrf", &token),
        ],
    );
    assert_eq!(redirect_to(&r), "/");
    assert!(c.cookies.contains_key("pasarela_session"));
    c
}

/// A new API token with the `admin` scope, made straight in the store at `db`.
pub fn admin_token(db: &std::path::Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open the store");
    pasarela::web::api_tokens::create_scoped(
        &conn,
        "provisioning",
        pasarela::web::api_tokens::Scope::Admin,
    )
    .expect("an admin token")
}
