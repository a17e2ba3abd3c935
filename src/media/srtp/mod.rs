//! SRTP and SRTCP (RFC 3711) with the two SDES suites of RFC 4568 that phones offer:
//! `AES_CM_128_HMAC_SHA1_80` and `AES_CM_128_HMAC_SHA1_32`.
//!
//! Sans-IO and in place: [`SrtpContext`] protects or unprotects one packet in a caller's buffer
//! and keeps the per-stream state (rollover counter, replay window, SRTCP index). It reads no
//! clock and allocates nothing per packet. The relay keeps one context per direction and leg:
//! the phone's key to unprotect what it sends, ours to protect what we send it.
//!
//! Keys never reach a log: [`MasterKey`] and the contexts print as `<redacted>`.

mod context;
mod keys;
mod replay;

#[cfg(test)]
mod tests;

pub use context::SrtpContext;
pub use keys::{MasterKey, Suite, MASTER_KEY_LEN, MASTER_SALT_LEN};

/// Why a packet could not be protected or unprotected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    /// Shorter than a header plus the authentication tag (and SRTCP index).
    #[error("packet too short for SRTP/SRTCP")]
    TooShort,
    /// The buffer has no room for the authentication tag.
    #[error("no room for the authentication tag")]
    NoRoom,
    /// The authentication tag does not match: forged, corrupted or under another key.
    #[error("authentication failed")]
    AuthFailed,
    /// A packet index already received.
    #[error("replayed packet")]
    Replayed,
    /// A packet index older than the replay window.
    #[error("packet too old for the replay window")]
    TooOld,
}
