//! One direction's SRTP/SRTCP cryptographic context (RFC 3711 §3.2): session keys, and per
//! SSRC the rollover counter, the highest sequence number and the replay windows.
//!
//! Packets come from the network: every index into a packet below is within bounds checked
//! just before it (header length, tag room), so no input makes it panic.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use super::keys::{aes_cm_xor, MasterKey, SessionKeys, Suite, MASTER_SALT_LEN};
use super::replay::ReplayWindow;
use super::SrtpError;

type HmacSha1 = Hmac<Sha1>;

/// SSRCs tracked per context; a further one replaces the least recently used.
const STREAMS: usize = 4;
/// Length of the SRTCP E flag and index word.
const SRTCP_INDEX_LEN: usize = 4;
/// RTCP header and sender SSRC, sent in clear.
const RTCP_CLEAR_LEN: usize = 8;

/// The state of one SSRC.
#[derive(Clone, Debug)]
struct Stream {
    ssrc: u32,
    roc: u32,
    /// Highest sequence number seen (`s_l`).
    s_l: u16,
    rtp_window: ReplayWindow,
    rtcp_window: ReplayWindow,
    last_used: u64,
}

/// An SRTP/SRTCP context for one direction under one master key. `Debug` hides the keys.
#[derive(Clone)]
pub struct SrtpContext {
    suite: Suite,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    rtp_mac: HmacSha1,
    rtcp_mac: HmacSha1,
    streams: [Option<Stream>; STREAMS],
    /// Next SRTCP index sent (31 bits).
    srtcp_index: u32,
    uses: u64,
}

impl fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpContext")
            .field("suite", &self.suite)
            .field("keys", &"<redacted>")
            .finish()
    }
}

/// Length of the RTP header (fixed part, CSRCs, extension) if it fits in `pkt`.
fn rtp_header_len(pkt: &[u8]) -> Option<usize> {
    let first = *pkt.first()?;
    if first >> 6 != 2 || pkt.len() < 12 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(first & 0x0F);
    if first & 0x10 != 0 {
        let words = pkt.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= pkt.len()).then_some(len)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// `IV = (salt·2¹⁶) XOR (SSRC·2⁶⁴) XOR (index·2¹⁶)` (RFC 3711 §4.1.1).
fn iv(salt: &[u8; MASTER_SALT_LEN], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..MASTER_SALT_LEN].copy_from_slice(salt);
    for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *d ^= s;
    }
    for (d, s) in iv[8..14].iter_mut().zip(index.to_be_bytes()[2..].iter()) {
        *d ^= s;
    }
    iv
}

/// Constant-time comparison of two tags.
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SrtpContext {
    /// A context for `suite` under `master`.
    pub fn new(suite: Suite, master: &MasterKey) -> Self {
        let rtp = SessionKeys::derive(master, false);
        let rtcp = SessionKeys::derive(master, true);
        let rtp_mac = HmacSha1::new_from_slice(&rtp.auth).expect("HMAC takes any key length");
        let rtcp_mac = HmacSha1::new_from_slice(&rtcp.auth).expect("HMAC takes any key length");
        SrtpContext {
            suite,
            rtp,
            rtcp,
            rtp_mac,
            rtcp_mac,
            streams: Default::default(),
            srtcp_index: 0,
            uses: 0,
        }
    }

    /// Sets the next SRTCP index sent (tests against vectors that start elsewhere than 0).
    #[cfg(test)]
    pub(crate) fn set_srtcp_index(&mut self, index: u32) {
        self.srtcp_index = index & 0x7FFF_FFFF;
    }

    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The stream slot for `ssrc`, created (replacing the least recently used) if new.
    fn stream(&mut self, ssrc: u32, seq: u16) -> &mut Stream {
        self.uses += 1;
        let uses = self.uses;
        let pos = self
            .streams
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.ssrc == ssrc))
            .or_else(|| self.streams.iter().position(Option::is_none))
            .unwrap_or_else(|| {
                self.streams
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.as_ref().map_or(0, |s| s.last_used))
                    .map_or(0, |(i, _)| i)
            });
        let slot = &mut self.streams[pos % STREAMS];
        if slot.as_ref().is_some_and(|s| s.ssrc != ssrc) {
            *slot = None;
        }
        let s = slot.get_or_insert(Stream {
            ssrc,
            roc: 0,
            s_l: seq,
            rtp_window: ReplayWindow::default(),
            rtcp_window: ReplayWindow::default(),
            last_used: uses,
        });
        s.last_used = uses;
        s
    }

    /// The rollover counter guessed for `seq` (RFC 3711 Appendix A).
    fn estimate_roc(s: &Stream, seq: u16) -> u32 {
        let (s_l, roc) = (i32::from(s.s_l), s.roc);
        let seq = i32::from(seq);
        if s_l < 32768 {
            if seq - s_l > 32768 {
                roc.wrapping_sub(1)
            } else {
                roc
            }
        } else if s_l - 32768 > seq {
            roc.wrapping_add(1)
        } else {
            roc
        }
    }

    /// Moves `s_l` and the rollover counter forward to an accepted index.
    fn advance(s: &mut Stream, roc: u32, seq: u16) {
        let index = (u64::from(roc) << 16) | u64::from(seq);
        let current = (u64::from(s.roc) << 16) | u64::from(s.s_l);
        if index > current {
            s.roc = roc;
            s.s_l = seq;
        }
    }

    fn rtp_tag(&self, authenticated: &[u8], roc: u32) -> [u8; 20] {
        let mut mac = self.rtp_mac.clone();
        mac.update(authenticated);
        mac.update(&roc.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    fn rtcp_tag(&self, authenticated: &[u8]) -> [u8; 20] {
        let mut mac = self.rtcp_mac.clone();
        mac.update(authenticated);
        mac.finalize().into_bytes().into()
    }

    /// Encrypts the RTP packet in `buf[..len]` and appends its tag; returns the SRTP length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let pkt = buf.get(..len).ok_or(SrtpError::TooShort)?;
        let header = rtp_header_len(pkt).ok_or(SrtpError::TooShort)?;
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ssrc = be32(pkt, 8).ok_or(SrtpError::TooShort)?;
        if buf.len() < len + tag_len {
            return Err(SrtpError::NoRoom);
        }
        let stream = self.stream(ssrc, seq);
        let roc = Self::estimate_roc(stream, seq);
        Self::advance(stream, roc, seq);
        let index = (u64::from(roc) << 16) | u64::from(seq);
        let iv = iv(&self.rtp.salt, ssrc, index);
        aes_cm_xor(&self.rtp.cipher, iv, &mut buf[header..len]);
        let tag = self.rtp_tag(&buf[..len], roc);
        buf[len..len + tag_len].copy_from_slice(&tag[..tag_len]);
        Ok(len + tag_len)
    }

    /// Checks and decrypts the SRTP packet `pkt` in place; returns the RTP length (the tag is
    /// left behind it). Forged, replayed and too old packets are refused and change nothing.
    pub fn unprotect_rtp(&mut self, pkt: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let len = pkt.len().checked_sub(tag_len).ok_or(SrtpError::TooShort)?;
        let header = rtp_header_len(&pkt[..len]).ok_or(SrtpError::TooShort)?;
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ssrc = be32(pkt, 8).ok_or(SrtpError::TooShort)?;
        let (roc, known) = match self.streams.iter().flatten().find(|s| s.ssrc == ssrc) {
            Some(s) => (Self::estimate_roc(s, seq), true),
            None => (0, false),
        };
        let index = (u64::from(roc) << 16) | u64::from(seq);
        if known {
            if let Some(s) = self.streams.iter().flatten().find(|s| s.ssrc == ssrc) {
                s.rtp_window.check(index)?;
            }
        }
        let tag = self.rtp_tag(&pkt[..len], roc);
        if !tags_equal(&tag[..tag_len], &pkt[len..]) {
            return Err(SrtpError::AuthFailed);
        }
        let iv = iv(&self.rtp.salt, ssrc, index);
        aes_cm_xor(&self.rtp.cipher, iv, &mut pkt[header..len]);
        let stream = self.stream(ssrc, seq);
        Self::advance(stream, roc, seq);
        stream.rtp_window.accept(index);
        Ok(len)
    }

    /// Encrypts the RTCP compound packet in `buf[..len]`, appends E flag, index and tag;
    /// returns the SRTCP length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtcp_tag_len();
        if len < RTCP_CLEAR_LEN || buf.len() < len {
            return Err(SrtpError::TooShort);
        }
        if buf.len() < len + SRTCP_INDEX_LEN + tag_len {
            return Err(SrtpError::NoRoom);
        }
        let ssrc = be32(buf, 4).ok_or(SrtpError::TooShort)?;
        let index = self.srtcp_index & 0x7FFF_FFFF;
        self.srtcp_index = (index + 1) & 0x7FFF_FFFF;
        let iv = iv(&self.rtcp.salt, ssrc, u64::from(index));
        aes_cm_xor(&self.rtcp.cipher, iv, &mut buf[RTCP_CLEAR_LEN..len]);
        buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&(index | 0x8000_0000).to_be_bytes());
        let end = len + SRTCP_INDEX_LEN;
        let tag = self.rtcp_tag(&buf[..end]);
        buf[end..end + tag_len].copy_from_slice(&tag[..tag_len]);
        Ok(end + tag_len)
    }

    /// Checks and decrypts the SRTCP packet `pkt` in place; returns the RTCP length.
    pub fn unprotect_rtcp(&mut self, pkt: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtcp_tag_len();
        let end = pkt.len().checked_sub(tag_len).ok_or(SrtpError::TooShort)?;
        let len = end
            .checked_sub(SRTCP_INDEX_LEN)
            .filter(|l| *l >= RTCP_CLEAR_LEN)
            .ok_or(SrtpError::TooShort)?;
        let word = be32(pkt, len).ok_or(SrtpError::TooShort)?;
        let encrypted = word & 0x8000_0000 != 0;
        let index = u64::from(word & 0x7FFF_FFFF);
        let ssrc = be32(pkt, 4).ok_or(SrtpError::TooShort)?;
        if let Some(s) = self.streams.iter().flatten().find(|s| s.ssrc == ssrc) {
            s.rtcp_window.check(index)?;
        }
        let tag = self.rtcp_tag(&pkt[..end]);
        if !tags_equal(&tag[..tag_len], &pkt[end..]) {
            return Err(SrtpError::AuthFailed);
        }
        if encrypted {
            let iv = iv(&self.rtcp.salt, ssrc, index);
            aes_cm_xor(&self.rtcp.cipher, iv, &mut pkt[RTCP_CLEAR_LEN..len]);
        }
        let seq = self
            .streams
            .iter()
            .flatten()
            .find(|s| s.ssrc == ssrc)
            .map_or(0, |s| s.s_l);
        self.stream(ssrc, seq).rtcp_window.accept(index);
        Ok(len)
    }
}
