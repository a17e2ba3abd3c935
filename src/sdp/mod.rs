//! SDP (RFC 8866, formerly RFC 4566) and the offer/answer model (RFC 3264), free of I/O.
//!
//! The model in [`session`] and [`media`] parses a session description into typed lines and
//! serialises it back in RFC order with CRLF line ends. Nothing the parser does not interpret
//! is dropped: unknown attributes and the rarer line types (`i=`, `u=`, `e=`, `p=`, `z=`, `k=`,
//! `r=` and unknown letters) are kept verbatim and written out again.
//!
//! [`anchor`] holds what the B2BUA does with SDP: it anchors media on its own RTP relay
//! (connection addresses, ports and `o=` rewritten, ICE removed, non-audio streams declined),
//! may add the other G.711 law to an offer so that it can transcode PCMU⇄PCMA, and works out
//! from an offer and its answer which codec each leg uses, and offers RTCP multiplexing
//! (RFC 5761) on every leg, accepting it in answers when the leg offered it.
//!
//! [`crypto`] reads and writes SDES keys (`a=crypto`, RFC 4568) and the `RTP/SAVP` profile.

pub mod anchor;
pub mod crypto;
pub mod media;
pub mod session;

#[cfg(test)]
mod crypto_tests;
#[cfg(test)]
mod tests;

pub use anchor::{
    add_transcodable, answer_for_a, answer_rtcp_mux, body_offers_rtcp_mux, intersect, is_g711,
    negotiate, offer_rtcp_mux, rewrite_for_relay, Negotiated, OriginState, G711,
};
pub use crypto::{CryptoAttribute, SdesKey};
pub use media::{Codec, Direction, MediaDescription};
pub use session::{Attribute, Connection, Line, Origin, SessionDescription};

/// Why a session description was refused, or why offer and answer do not fit together.
///
/// The text is suitable as a log message; the offer/answer errors map to a SIP
/// `488 Not Acceptable Here`. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body has no lines at all.
    #[error("empty session description")]
    Empty,
    /// The first line is not `v=`.
    #[error("session description does not start with v=")]
    MissingVersion,
    /// No `o=` line before the first `m=`.
    #[error("session description has no o= line")]
    MissingOrigin,
    /// No `s=` line before the first `m=`.
    #[error("session description has no s= line")]
    MissingSessionName,
    /// A line that is not `<letter>=<value>`.
    #[error("line {line}: not an SDP line")]
    BadLine { line: usize },
    /// A line type that may appear only once per description (`v=`, `o=`, `s=`) appears again.
    #[error("line {line}: duplicate {kind}= line")]
    Duplicate { line: usize, kind: char },
    /// A line whose value does not follow its grammar.
    #[error("line {line}: bad {kind}= line: {reason}")]
    BadValue {
        line: usize,
        kind: char,
        reason: &'static str,
    },
    /// The answer declined the audio stream (port 0) or has none.
    #[error("no audio stream accepted")]
    NoAudio,
    /// Offer and answer share no codec and cannot be bridged by transcoding.
    #[error("no common codec")]
    NoCommonCodec,
}
