//! `[tls]`: the certificate and the trust of SIP over TLS, mapped onto
//! [`crate::transport::config::TlsConfig`] with the file:line:key checks.

use super::*;

pub use crate::transport::config::{TlsConfig, TlsPeer};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) ca_files: Option<Vec<PathBuf>>,
    #[serde(default, rename = "peer")]
    pub(crate) peers: Vec<RawTlsPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTlsPeer {
    pub(crate) domain: String,
    pub(crate) ca: Option<PathBuf>,
    pub(crate) pin: Option<String>,
}

/// A certificate pin: 64 hex digits (colons allowed, as `openssl x509 -fingerprint` prints).
pub(crate) fn parse_pin(s: &str, at: &KeyPath) -> Checked<[u8; 32]> {
    let digits: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(&digits)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    bytes.ok_or_else(|| {
        invalid(
            at,
            format!("`{s}` is not a SHA-256 fingerprint (64 hex digits)"),
        )
    })
}

impl RawTls {
    pub(crate) fn validate(
        self,
        at: &KeyPath,
        trunks: &[(String, Option<PathBuf>, Option<String>)],
    ) -> Checked<TlsConfig> {
        match (&self.cert, &self.key) {
            (Some(_), None) => return Err(invalid(&at.key("key"), "is required with `cert`")),
            (None, Some(_)) => return Err(invalid(&at.key("cert"), "is required with `key`")),
            _ => {}
        }
        let mut peers = Vec::new();
        for (i, p) in self.peers.into_iter().enumerate() {
            let here = at.key("peer").index(i);
            let domain = p.domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if domain.is_empty() || domain.chars().any(|c| c.is_whitespace()) {
                return Err(invalid(&here.key("domain"), "must be a host name"));
            }
            let pin = match &p.pin {
                Some(pin) => Some(parse_pin(pin, &here.key("pin"))?),
                None => None,
            };
            peers.push(TlsPeer {
                domain,
                ca: p.ca,
                pin,
            });
        }
        for (i, (domain, ca, pin)) in trunks.iter().enumerate() {
            if ca.is_none() && pin.is_none() {
                continue;
            }
            let here = KeyPath::new("trunk").index(i);
            let pin = match pin {
                Some(pin) => Some(parse_pin(pin, &here.key("tls_pin"))?),
                None => None,
            };
            peers.push(TlsPeer {
                domain: domain.clone(),
                ca: ca.clone(),
                pin,
            });
        }
        Ok(TlsConfig {
            cert: self.cert,
            key: self.key,
            ca_files: self.ca_files.unwrap_or_default(),
            peers,
        })
    }
}
