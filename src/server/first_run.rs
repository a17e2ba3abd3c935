//! What `serve` prints when it starts, for the admin at the terminal: where the dashboard is,
//! where phones register, and — until an admin account exists — what to do first.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::config::Config;

/// The lines printed at start. `first_run`: the store did not exist yet.
pub fn banner(config: &Config, first_run: bool) -> String {
    let mut out = String::new();
    let mut urls = dashboard_urls(config.web.listen);
    if let Some(https) = config.web.https {
        // On the LAN over HTTPS first: that is the address an admin on another PC opens.
        let secure: Vec<String> = dashboard_urls(https)
            .into_iter()
            .map(|u| u.replacen("http://", "https://", 1))
            .collect();
        urls.splice(0..0, secure);
    }
    out.push_str(&format!("pasarela: dashboard at {}\n", urls.join(" and ")));
    let sip: Vec<String> = config.sip.listen.iter().map(|l| l.to_string()).collect();
    out.push_str(&format!(
        "pasarela: SIP on {} (phones register as EXTENSION@{})\n",
        sip.join(", "),
        config.sip.domain
    ));
    if first_run || !has_admin(config) {
        out.push_str(&format!(
            "pasarela: first steps: open {} — the first visit creates the admin account; then \
             add extensions (or [[extension]] in the configuration file), register a phone with \
             the settings its extension page shows, and place a test call.\n",
            urls.first().map(String::as_str).unwrap_or("the dashboard")
        ));
        if config.web.listen.ip().is_loopback() && config.web.https.is_none() {
            out.push_str(
                "pasarela: the dashboard listens on this machine only ([web] listen); from \
                 another PC use `ssh -L 8080:127.0.0.1:8080 THIS-HOST`, or set [web] listen.\n",
            );
        }
    }
    out.pop();
    out
}

fn dashboard_urls(listen: SocketAddr) -> Vec<String> {
    let port = listen.port();
    if listen.ip().is_unspecified() {
        let mut urls = vec![format!("http://127.0.0.1:{port}/")];
        if let Some(ip) = outward_address() {
            urls.push(format!("http://{ip}:{port}/"));
        }
        urls
    } else {
        match listen.ip() {
            IpAddr::V6(ip) => vec![format!("http://[{ip}]:{port}/")],
            IpAddr::V4(ip) => vec![format!("http://{ip}:{port}/")],
        }
    }
}

/// The address other machines on the office network reach us at (no packet is sent: a UDP
/// socket is only connected, which picks the route).
fn outward_address() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Whether the store holds a dashboard account (read-only; a missing store has none).
fn has_admin(config: &Config) -> bool {
    crate::store::connection::open_reader(&config.store.path)
        .and_then(|db| crate::store::web_users::has_users(&db))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn first_run_names_the_dashboard_and_the_first_steps() {
        let c = Config::from_toml_str(
            "[web]\nlisten = \"127.0.0.1:8089\"\n[store]\npath = \"/nonexistent/x.db\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let b = banner(&c, true);
        assert!(b.contains("http://127.0.0.1:8089/"), "{b}");
        assert!(b.contains("first visit creates the admin"), "{b}");
        assert!(b.contains("ssh -L"), "{b}");
    }
}
