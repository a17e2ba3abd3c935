//! The DUNDi entity identifier (EID): six bytes, usually a MAC address of the node, written
//! `02:00:00:00:00:01` the way Asterisk prints it.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::fmt;
use std::str::FromStr;

/// A DUNDi entity identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Eid(pub [u8; 6]);

/// A string that is not an EID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a DUNDi EID (expected six hex bytes like 02:00:00:00:00:01): {0:?}")]
pub struct EidParseError(pub String);

impl Eid {
    /// The all-zero EID (Asterisk uses it for "none").
    pub const ZERO: Eid = Eid([0; 6]);

    /// The EID as bytes.
    pub fn bytes(&self) -> [u8; 6] {
        self.0
    }

    /// True for the all-zero EID.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// Builds an EID from a slice of exactly six bytes.
    pub fn from_slice(b: &[u8]) -> Option<Eid> {
        let arr: [u8; 6] = b.try_into().ok()?;
        Some(Eid(arr))
    }

    /// The EID Asterisk would pick for this machine: the first network interface with a
    /// non-zero MAC address (read from /sys/class/net, in name order, loopback skipped).
    pub fn from_machine() -> Option<Eid> {
        let mut names: Vec<_> = std::fs::read_dir("/sys/class/net")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        names.into_iter().find_map(|n| {
            let text = std::fs::read_to_string(format!("/sys/class/net/{n}/address")).ok()?;
            let eid: Eid = text.trim().parse().ok()?;
            (!eid.is_zero()).then_some(eid)
        })
    }
}

impl fmt::Display for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Eid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Eid({self})")
    }
}

impl FromStr for Eid {
    type Err = EidParseError;

    /// Accepts `02:00:00:00:00:01`, `02-00-00-00-00-01` and the short form `020000000001`
    /// (any case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || EidParseError(s.to_string());
        let t = s.trim();
        let parts: Vec<&str> = if t.contains(':') {
            t.split(':').collect()
        } else if t.contains('-') {
            t.split('-').collect()
        } else if t.len() == 12 && t.is_ascii() {
            (0..6)
                .map(|i| crate::checked::sub(t, i * 2, i * 2 + 2))
                .collect()
        } else {
            return Err(err());
        };
        if parts.len() != 6 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        Ok(Eid(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e: Eid = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(e.0, [2, 0, 0, 0, 0, 1]);
        assert_eq!(e.to_string(), "02:00:00:00:00:01");
        assert_eq!(
            "0200000000AB".parse::<Eid>().unwrap().to_string(),
            "02:00:00:00:00:ab"
        );
        assert!("02:00:00:00:00".parse::<Eid>().is_err());
        assert!("zz:00:00:00:00:00".parse::<Eid>().is_err());
        assert!("".parse::<Eid>().is_err());
    }
}
