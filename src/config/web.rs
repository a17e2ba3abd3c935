//! `[web]`: the dashboard's addresses, mapped onto [`crate::web::config::WebConfig`] with
//! the file:line:key checks.

use super::*;

pub use crate::web::config::WebConfig;

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
