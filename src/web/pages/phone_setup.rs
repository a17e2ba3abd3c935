//! What to enter in a phone for an extension: the server address(es), port, transport, SIP
//! domain, user and auth user, and ready-to-paste provisioning snippets (a baresip `accounts`
//! line, Yealink and Grandstream configuration keys). The password is never shown: only its
//! digest hashes are stored, so the snippets say where "the password you set" goes.
// Outside data (the Host header) is parsed here: no unchecked indexing or string slicing.
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::net::SocketAddr;

/// One address a phone can register to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The host to enter (an IP address, or the dashboard's host name when SIP listens on
    /// every interface).
    pub host: String,
    pub port: u16,
    /// `UDP` or `TCP`.
    pub transport: String,
}

/// The phone setup panel of one extension.
#[derive(Debug, Clone)]
pub struct PhoneSetup {
    pub user: String,
    pub auth_user: String,
    pub domain: String,
    pub servers: Vec<Server>,
    /// `accounts` line for baresip.
    pub baresip: String,
    /// Yealink `.cfg` keys (account 1).
    pub yealink: String,
    /// Grandstream `.xml`-free text config keys (account 1: P-values).
    pub grandstream: String,
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`).
pub fn host_of(header: &str) -> String {
    let h = header.trim();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match h.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host.to_owned()
        }
        _ => h.to_owned(),
    }
}

impl PhoneSetup {
    /// The panel for extension `number` with SIP domain `domain`, listening on `listen`
    /// (transport, address); `seen_host` replaces an unspecified listen address (0.0.0.0, ::).
    pub fn new(
        number: &str,
        domain: &str,
        listen: &[(String, SocketAddr)],
        seen_host: &str,
    ) -> PhoneSetup {
        let mut servers: Vec<Server> = listen
            .iter()
            .map(|(t, a)| {
                let host = if a.ip().is_unspecified() && !seen_host.is_empty() {
                    seen_host.to_owned()
                } else {
                    a.ip().to_string()
                };
                Server {
                    host,
                    port: a.port(),
                    transport: t.to_ascii_uppercase(),
                }
            })
            .collect();
        servers.dedup();
        let main = servers.first().cloned().unwrap_or(Server {
            host: if seen_host.is_empty() {
                domain.to_owned()
            } else {
                seen_host.to_owned()
            },
            port: 5060,
            transport: "UDP".into(),
        });
        let hostport = if main.host.contains(':') {
            format!("[{}]:{}", main.host, main.port)
        } else {
            format!("{}:{}", main.host, main.port)
        };
        let t = main.transport.to_ascii_lowercase();
        let baresip = format!(
            "<sip:{number}@{domain}>;auth_user={number};auth_pass=THE_PASSWORD_YOU_SET;outbound=\"sip:{hostport};transport={t}\";regint=300"
        );
        let yealink_t = if t == "tcp" { 1 } else { 0 };
        let yealink = format!(
            "account.1.enable = 1\naccount.1.label = {number}\naccount.1.user_name = {number}\naccount.1.auth_name = {number}\naccount.1.password = THE_PASSWORD_YOU_SET\naccount.1.sip_server.1.address = {domain}\naccount.1.outbound_proxy_enable = 1\naccount.1.outbound_host = {host}\naccount.1.outbound_port = {port}\naccount.1.sip_server.1.transport_type = {yealink_t}",
            host = main.host,
            port = main.port,
        );
        let gs_t = if t == "tcp" { 1 } else { 0 };
        let grandstream = format!(
            "P271 = 1\nP270 = {number}\nP47 = {domain}\nP48 = {host}:{port}\nP35 = {number}\nP36 = {number}\nP34 = THE_PASSWORD_YOU_SET\nP130 = {gs_t}",
            host = main.host,
            port = main.port,
        );
        PhoneSetup {
            user: number.to_owned(),
            auth_user: number.to_owned(),
            domain: domain.to_owned(),
            servers,
            baresip,
            yealink,
            grandstream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_from_headers() {
        assert_eq!(host_of("pbx.example:8080"), "pbx.example");
        assert_eq!(host_of("192.0.2.7"), "192.0.2.7");
        assert_eq!(host_of("[2001:db8::1]:8080"), "2001:db8::1");
        assert_eq!(host_of("[broken"), "broken");
        assert_eq!(host_of(""), "");
    }

    #[test]
    fn wildcard_listen_uses_the_dashboard_host() {
        let listen = vec![
            ("udp".to_owned(), "0.0.0.0:5070".parse().unwrap()),
            ("tcp".to_owned(), "127.0.0.1:5071".parse().unwrap()),
        ];
        let p = PhoneSetup::new("101", "office.example", &listen, "pbx.lan");
        assert_eq!(p.servers.len(), 2);
        assert_eq!(p.servers[0].host, "pbx.lan");
        assert_eq!(p.servers[0].transport, "UDP");
        assert_eq!(p.servers[1].host, "127.0.0.1");
        assert!(p
            .baresip
            .starts_with("<sip:101@office.example>;auth_user=101"));
        assert!(p
            .baresip
            .contains("outbound=\"sip:pbx.lan:5070;transport=udp\""));
        assert!(p.yealink.contains("account.1.outbound_port = 5070"));
        assert!(p.grandstream.contains("P48 = pbx.lan:5070"));
        assert!(!p.baresip.contains("password ="));
    }
}
