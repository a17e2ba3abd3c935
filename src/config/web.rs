//! `[web]`: the dashboard's addresses.

use super::*;

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWeb {
    pub(crate) listen: Option<String>,
    pub(crate) https: Option<String>,
    pub(crate) time_zone: Option<String>,
    pub(crate) hosts: Option<Vec<String>>,
}

impl RawWeb {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<WebConfig> {
        let listen = match self.listen {
            None => WebConfig::default().listen,
            Some(s) => s.parse().map_err(|_| {
                invalid(
                    &at.key("listen"),
                    format!("`{s}` is not an address:port (e.g. `127.0.0.1:8080`)"),
                )
            })?,
        };
        let https = match self.https {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| {
                invalid(
                    &at.key("https"),
                    format!("`{s}` is not an address:port (e.g. `0.0.0.0:8443`)"),
                )
            })?),
        };
        let time_zone = match self.time_zone {
            None => None,
            Some(name) => match jiff::tz::TimeZone::get(&name) {
                Ok(_) => Some(name),
                Err(_) => {
                    return Err(invalid(
                        &at.key("time_zone"),
                        format!("`{name}` is not a time zone name (e.g. `Europe/Berlin`, `UTC`)"),
                    ))
                }
            },
        };
        let mut hosts = Vec::new();
        for (i, h) in self.hosts.unwrap_or_default().into_iter().enumerate() {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !ok {
                return Err(invalid(
                    &at.key("hosts").index(i),
                    format!("`{h}` is not a host name"),
                ));
            }
            hosts.push(h.to_ascii_lowercase());
        }
        Ok(WebConfig {
            listen,
            https,
            time_zone,
            hosts,
        })
    }
}
