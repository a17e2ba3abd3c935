//! The Host check in front of every HTTP route, against DNS rebinding: a page on an
//! attacker's domain whose name later resolves to 127.0.0.1 reaches the dashboard with its own
//! name in `Host`, so requests are answered only for the names the dashboard is known by —
//! `localhost`, the machine's name, `[web] hosts` — or for a literal IP address (which no
//! rebinding can produce). Others get 421 Misdirected Request; a request without Host gets 400.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The names (lowercase, without a trailing dot) the dashboard answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl Default for AllowedHosts {
    fn default() -> Self {
        AllowedHosts {
            names: vec!["localhost".into()],
        }
    }
}

impl AllowedHosts {
    /// `localhost`, the machine's host name (short and as configured) and `extra`.
    pub fn new(_listen: SocketAddr, extra: &[String]) -> AllowedHosts {
        let mut names = AllowedHosts::default().names;
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim().to_ascii_lowercase();
            if !h.is_empty() {
                if let Some((short, _)) = h.split_once('.') {
                    names.push(short.to_owned());
                }
                names.push(h);
            }
        }
        names.extend(extra.iter().map(|h| normalise(h)));
        names.sort();
        names.dedup();
        AllowedHosts { names }
    }

    /// Whether a request with this `Host` value is for us.
    pub fn allows(&self, host: &str) -> bool {
        let name = strip_port(host.trim());
        if name.is_empty() {
            return false;
        }
        if name.parse::<IpAddr>().is_ok() {
            return true;
        }
        let name = normalise(name);
        self.names.contains(&name)
    }
}

fn normalise(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// `host[:port]` or `[v6][:port]` → the host (IPv6 without brackets).
fn strip_port(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split_once(']').map_or("", |(h, _)| h);
    }
    match hostport.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => hostport,
    }
}

/// The middleware: 400 without Host, 421 for a host that is not ours.
pub async fn check(State(hosts): State<Arc<AllowedHosts>>, req: Request, next: Next) -> Response {
    // HTTP/2 and absolute-form requests carry the host in the URI.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    match host {
        None => (StatusCode::BAD_REQUEST, "400 Bad Request: no Host header\n").into_response(),
        Some(h) if hosts.allows(&h) => next.run(req).await,
        Some(h) => {
            tracing::warn!(host = %h, "web: request for a host name that is not ours refused");
            (
                StatusCode::MISDIRECTED_REQUEST,
                "421 Misdirected Request: this server does not answer to that host name; add it to [web] hosts\n",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        let h = AllowedHosts::new(
            "127.0.0.1:8080".parse().unwrap(),
            &["PBX.office.test.".into()],
        );
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]:8080",
            "192.0.2.7",
            "pbx.office.test",
            "pbx.office.test.:443",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[::1",
            "é",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
    }
}
