//! `[sip]`: listen addresses, transports, timers, registration limits, mapped onto
//! [`crate::transport::config::SipConfig`] with the file:line:key checks.

use super::*;

pub use crate::transport::config::{ListenAddr, SipConfig, Transport, DEFAULT_USER_AGENT};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSip {
    pub(crate) listen: Option<Vec<String>>,
    pub(crate) domain: Option<String>,
    pub(crate) t1_ms: Option<u64>,
    pub(crate) t2_ms: Option<u64>,
    pub(crate) t4_ms: Option<u64>,
    pub(crate) min_expires: Option<u32>,
    pub(crate) max_expires: Option<u32>,
    pub(crate) default_expires: Option<u32>,
    pub(crate) nonce_ttl_secs: Option<u64>,
    pub(crate) tcp_idle_secs: Option<u64>,
    pub(crate) max_message_bytes: Option<usize>,
    pub(crate) user_agent: Option<String>,
    pub(crate) digest_algorithms: Option<Vec<String>>,
}

impl RawSip {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<SipConfig> {
        let d = SipConfig::default();
        let listen = match self.listen {
            None => d.listen,
            Some(list) => {
                if list.is_empty() {
                    return Err(invalid(&at.key("listen"), "needs at least one address"));
                }
                let mut seen = HashSet::new();
                let mut out = Vec::with_capacity(list.len());
                for (i, s) in list.iter().enumerate() {
                    let here = at.key("listen").index(i);
                    let addr: ListenAddr = s.parse().map_err(|m: String| invalid(&here, m))?;
                    if !seen.insert(addr) {
                        return Err(invalid(&here, format!("`{s}` is listed twice")));
                    }
                    out.push(addr);
                }
                out
            }
        };
        let domain = self.domain.unwrap_or(d.domain);
        if domain.is_empty() || domain.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                &at.key("domain"),
                "must be a non-empty host name without spaces",
            ));
        }
        let t1_ms = positive(self.t1_ms, d.t1_ms, &at.key("t1_ms"))?;
        let t2_ms = positive(self.t2_ms, d.t2_ms, &at.key("t2_ms"))?;
        let t4_ms = positive(self.t4_ms, d.t4_ms, &at.key("t4_ms"))?;
        if t1_ms > t2_ms {
            let key = if self.t1_ms.is_some() {
                "t1_ms"
            } else {
                "t2_ms"
            };
            return Err(invalid(
                &at.key(key),
                format!("t1_ms ({t1_ms}) must not exceed t2_ms ({t2_ms})"),
            ));
        }
        let min_expires = positive(self.min_expires, d.min_expires, &at.key("min_expires"))?;
        let max_expires = positive(self.max_expires, d.max_expires, &at.key("max_expires"))?;
        if min_expires > max_expires {
            let key = if self.min_expires.is_some() {
                "min_expires"
            } else {
                "max_expires"
            };
            return Err(invalid(
                &at.key(key),
                format!("min_expires ({min_expires}) must not exceed max_expires ({max_expires})"),
            ));
        }
        let default_expires = match self.default_expires {
            Some(v) => v,
            None => d.default_expires.clamp(min_expires, max_expires),
        };
        if !(min_expires..=max_expires).contains(&default_expires) {
            return Err(invalid(
                &at.key("default_expires"),
                format!(
                    "must lie between min_expires ({min_expires}) and max_expires ({max_expires})"
                ),
            ));
        }
        let nonce_ttl_secs = positive(
            self.nonce_ttl_secs,
            d.nonce_ttl_secs,
            &at.key("nonce_ttl_secs"),
        )?;
        let tcp_idle_secs = positive(
            self.tcp_idle_secs,
            d.tcp_idle_secs,
            &at.key("tcp_idle_secs"),
        )?;
        let max_message_bytes = match self.max_message_bytes {
            Some(v) if v < 1024 => {
                return Err(invalid(
                    &at.key("max_message_bytes"),
                    "must be at least 1024",
                ))
            }
            Some(v) => v,
            None => d.max_message_bytes,
        };
        let user_agent = self.user_agent.unwrap_or(d.user_agent);
        if user_agent.chars().any(|c| c.is_control()) {
            return Err(invalid(
                &at.key("user_agent"),
                "must not contain control characters",
            ));
        }
        let digest_algorithms = match self.digest_algorithms {
            None => d.digest_algorithms,
            Some(names) => {
                let mut algs = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    match name.parse::<crate::sip::auth::Algorithm>() {
                        Ok(
                            a @ (crate::sip::auth::Algorithm::Md5
                            | crate::sip::auth::Algorithm::Sha256),
                        ) => {
                            if !algs.contains(&a) {
                                algs.push(a);
                            }
                        }
                        _ => {
                            return Err(invalid(
                                &at.key("digest_algorithms").index(i),
                                format!(
                                "unknown digest algorithm `{name}` (use \"SHA-256\" or \"MD5\")"
                            ),
                            ))
                        }
                    }
                }
                if algs.is_empty() {
                    return Err(invalid(
                        &at.key("digest_algorithms"),
                        "must name at least one algorithm",
                    ));
                }
                algs
            }
        };
        Ok(SipConfig {
            listen,
            domain,
            t1_ms,
            t2_ms,
            t4_ms,
            min_expires,
            max_expires,
            default_expires,
            nonce_ttl_secs,
            tcp_idle_secs,
            max_message_bytes,
            user_agent,
            digest_algorithms,
        })
    }
}
