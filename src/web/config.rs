//! `[web]` as the dashboard takes it: its addresses, the office's time zone and the host names
//! it answers to. `config::web` maps the file onto it with the file:line:key checks.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// `[web]`: the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub struct WebConfig {
    /// Address the dashboard listens on (`listen`, default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// The office's time zone, for dates in the dashboard, CSV files and monthly billing
    /// (`time_zone`, an IANA name such as `Europe/Berlin`; default: the machine's zone).
    pub time_zone: Option<String>,
    /// Host names the dashboard answers to besides its listen address, `localhost`, any
    /// literal IP address and the machine's name (`hosts`); requests naming another host get
    /// 421 (a DNS-rebinding defence).
    pub hosts: Vec<String>,
    /// A second listener with TLS, for the dashboard on the LAN (`https`, e.g.
    /// `0.0.0.0:8443`); `listen` stays for /healthz and /metrics.
    pub https: Option<SocketAddr>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            https: None,
            time_zone: None,
            hosts: Vec::new(),
        }
    }
}
