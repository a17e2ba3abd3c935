//! SDES keys in SDP: the `a=crypto` attribute (RFC 4568) and the `RTP/SAVP` profile.
//!
//! [`CryptoAttribute::parse`] reads any `a=crypto` value without panicking, lifetimes and MKIs
//! included; [`MediaDescription::srtp_offers`] keeps the lines pasarela can use (a suite of
//! [`Suite::ALL`], one inline key of 30 bytes, no MKI, no session parameters) and
//! [`MediaDescription::set_srtp`] writes our own key into a description we send.
//!
//! Keys are secrets: [`CryptoAttribute`]'s `Debug` does not show them.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::fmt;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::media::MediaDescription;
use super::session::{parse_digits, Attribute};
use crate::media::srtp::{MasterKey, Suite};

/// Base64 as phones write inline keys: with or without the trailing `=`.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One `inline:` key parameter.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyParam {
    /// The decoded key and salt (any length as received).
    pub key_salt: Vec<u8>,
    /// The lifetime as written (`2^20`, `1048576`), if any.
    pub lifetime: Option<String>,
    /// The `MKI:length` as written, if any.
    pub mki: Option<String>,
}

impl fmt::Debug for KeyParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyParam")
            .field("key_salt", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("mki", &self.mki)
            .finish()
    }
}

/// An `a=crypto:<tag> <suite> <key-params> [<session-params>]` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CryptoAttribute {
    pub tag: u32,
    /// The suite name as written.
    pub suite: String,
    pub keys: Vec<KeyParam>,
    /// Session parameters (`UNENCRYPTED_SRTP`, `KDR=…`, …), verbatim.
    pub session_params: Vec<String>,
}

/// A usable SDES offer or answer line: tag, suite and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdesKey {
    pub tag: u32,
    pub suite: Suite,
    pub key: MasterKey,
}

impl CryptoAttribute {
    /// Parses an attribute value; `None` when it does not follow RFC 4568's grammar.
    pub fn parse(value: &str) -> Option<Self> {
        let mut it = value.split_ascii_whitespace();
        let tag = parse_digits::<u32>(it.next()?).filter(|t| *t <= 999_999_999)?;
        let suite = it.next()?.to_string();
        let keys = it
            .next()?
            .split(';')
            .map(KeyParam::parse)
            .collect::<Option<Vec<_>>>()?;
        Some(CryptoAttribute {
            tag,
            suite,
            keys,
            session_params: it.map(String::from).collect(),
        })
    }

    /// The line for our own key: `<tag> <suite> inline:<base64 key‖salt>`.
    pub fn ours(k: &SdesKey) -> Self {
        CryptoAttribute {
            tag: k.tag,
            suite: k.suite.name().into(),
            keys: vec![KeyParam {
                key_salt: k.key.concatenated().to_vec(),
                lifetime: None,
                mki: None,
            }],
            session_params: Vec::new(),
        }
    }

    /// The key, if pasarela can use this line: a known suite, one 30-byte key, no MKI, no
    /// session parameters (RFC 4568 §6.3: unknown ones make the line unusable).
    pub fn usable(&self) -> Option<SdesKey> {
        let suite = Suite::from_name(&self.suite)?;
        let [key] = self.keys.as_slice() else {
            return None;
        };
        if key.mki.is_some() || !self.session_params.is_empty() {
            return None;
        }
        Some(SdesKey {
            tag: self.tag,
            suite,
            key: MasterKey::from_concatenated(&key.key_salt)?,
        })
    }
}

impl KeyParam {
    fn parse(text: &str) -> Option<Self> {
        let (method, info) = text.split_once(':')?;
        if !method.eq_ignore_ascii_case("inline") {
            return None;
        }
        let mut parts = info.split('|');
        let key_salt = LENIENT.decode(parts.next()?).ok()?;
        let mut lifetime = None;
        let mut mki = None;
        for p in parts {
            if p.contains(':') {
                if mki.replace(p.to_string()).is_some() {
                    return None;
                }
            } else if lifetime.replace(p.to_string()).is_some() {
                return None;
            }
        }
        Some(KeyParam {
            key_salt,
            lifetime,
            mki,
        })
    }
}

impl fmt::Display for CryptoAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ", self.tag, self.suite)?;
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "inline:{}", STANDARD.encode(&k.key_salt))?;
            if let Some(l) = &k.lifetime {
                write!(f, "|{l}")?;
            }
            if let Some(m) = &k.mki {
                write!(f, "|{m}")?;
            }
        }
        for p in &self.session_params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

impl MediaDescription {
    /// Whether the stream uses a secure RTP profile (`RTP/SAVP`, `RTP/SAVPF`). DTLS-SRTP
    /// (`UDP/TLS/RTP/SAVP…`) counts too, but has no `a=crypto` to use.
    pub fn is_savp(&self) -> bool {
        self.proto
            .split('/')
            .any(|p| p.eq_ignore_ascii_case("SAVP") || p.eq_ignore_ascii_case("SAVPF"))
    }

    /// Every `a=crypto` line that parses, in order.
    pub fn crypto_attributes(&self) -> Vec<CryptoAttribute> {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("crypto"))
            .filter_map(|a| CryptoAttribute::parse(a.value.as_deref()?))
            .collect()
    }

    /// The usable SDES keys of an RTP stream, in the order offered: on `RTP/SAVP`, or on
    /// `RTP/AVP` as best-effort SDES (what baresip's `mediaenc=srtp` sends). Empty for a
    /// stream without `a=crypto`, and for DTLS-SRTP (`UDP/TLS/…`).
    pub fn srtp_offers(&self) -> Vec<SdesKey> {
        if !self.is_rtp() || self.proto.to_ascii_uppercase().contains("TLS") {
            return Vec::new();
        }
        self.crypto_attributes()
            .iter()
            .filter_map(CryptoAttribute::usable)
            .collect()
    }

    /// Makes this stream plain `RTP/AVP` (`None`) or `RTP/SAVP` with our key (`Some`): the
    /// profile of the `m=` line is set and every `a=crypto` replaced. A feedback profile
    /// (`…AVPF`) stays one.
    pub fn set_srtp(&mut self, ours: Option<&SdesKey>) {
        let feedback = self.proto.to_ascii_uppercase().ends_with('F');
        self.proto = match (ours.is_some(), feedback) {
            (true, false) => "RTP/SAVP",
            (true, true) => "RTP/SAVPF",
            (false, false) => "RTP/AVP",
            (false, true) => "RTP/AVPF",
        }
        .into();
        self.remove_attributes("crypto");
        if let Some(k) = ours {
            self.attributes.push(Attribute::new(
                "crypto",
                CryptoAttribute::ours(k).to_string(),
            ));
        }
    }
}
