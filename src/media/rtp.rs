//! A zero-copy view of an RTP packet (RFC 3550 §5.1) over a byte buffer.
//!
//! [`Rtp::parse`] checks the fixed header, the CSRC list, the header extension and the padding
//! against the buffer length once; afterwards every getter is a plain load and every setter a
//! plain store, with no allocation and no way to panic. The view works over `&[u8]` (read only)
//! and `&mut [u8]` (setters, in-place payload rewriting).

use std::ops::Range;

/// Length of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;

/// Why a buffer is not an RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("packet shorter than the 12-byte RTP header ({0} bytes)")]
    TooShort(usize),
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    #[error("CSRC list runs past the end of the packet")]
    CsrcOverrun,
    #[error("header extension runs past the end of the packet")]
    ExtensionOverrun,
    #[error("invalid padding length {0}")]
    BadPadding(u8),
}

/// A validated RTP packet over `B` (`&[u8]` or `&mut [u8]`).
#[derive(Debug)]
pub struct Rtp<B> {
    buf: B,
    payload: Range<usize>,
}

impl<B: AsRef<[u8]>> Rtp<B> {
    /// Validates `buf` as an RTP packet: version 2, CSRC list, extension and padding within the
    /// buffer. The whole buffer is the packet.
    pub fn parse(buf: B) -> Result<Self, RtpError> {
        let payload = payload_range(buf.as_ref())?;
        Ok(Rtp { buf, payload })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn version(&self) -> u8 {
        self.b()[0] >> 6
    }
    pub fn padding(&self) -> bool {
        self.b()[0] & 0x20 != 0
    }
    pub fn extension(&self) -> bool {
        self.b()[0] & 0x10 != 0
    }
    pub fn csrc_count(&self) -> u8 {
        self.b()[0] & 0x0F
    }
    pub fn marker(&self) -> bool {
        self.b()[1] & 0x80 != 0
    }
    pub fn payload_type(&self) -> u8 {
        self.b()[1] & 0x7F
    }
    pub fn sequence(&self) -> u16 {
        u16::from_be_bytes([self.b()[2], self.b()[3]])
    }
    pub fn timestamp(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[4], b[5], b[6], b[7]])
    }
    pub fn ssrc(&self) -> u32 {
        let b = self.b();
        u32::from_be_bytes([b[8], b[9], b[10], b[11]])
    }
    /// Byte range of the payload within the buffer (after CSRCs and extension, before padding).
    pub fn payload_range(&self) -> Range<usize> {
        self.payload.clone()
    }
    pub fn payload(&self) -> &[u8] {
        // The range was checked against this buffer in `parse`.
        self.b().get(self.payload.clone()).unwrap_or(&[])
    }
    /// The whole packet.
    pub fn as_bytes(&self) -> &[u8] {
        self.b()
    }
    pub fn into_inner(self) -> B {
        self.buf
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Rtp<B> {
    fn m(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    pub fn set_marker(&mut self, marker: bool) {
        let b = self.m();
        b[1] = (b[1] & 0x7F) | if marker { 0x80 } else { 0 };
    }
    pub fn set_payload_type(&mut self, pt: u8) {
        let b = self.m();
        b[1] = (b[1] & 0x80) | (pt & 0x7F);
    }
    pub fn set_sequence(&mut self, seq: u16) {
        self.m()[2..4].copy_from_slice(&seq.to_be_bytes());
    }
    pub fn set_timestamp(&mut self, ts: u32) {
        self.m()[4..8].copy_from_slice(&ts.to_be_bytes());
    }
    pub fn set_ssrc(&mut self, ssrc: u32) {
        self.m()[8..12].copy_from_slice(&ssrc.to_be_bytes());
    }
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload.clone();
        self.buf.as_mut().get_mut(r).unwrap_or(&mut [])
    }
}

/// Checks `b` and returns its payload range.
pub fn payload_range(b: &[u8]) -> Result<Range<usize>, RtpError> {
    if b.len() < FIXED_HEADER_LEN {
        return Err(RtpError::TooShort(b.len()));
    }
    let version = b[0] >> 6;
    if version != 2 {
        return Err(RtpError::BadVersion(version));
    }
    let mut start = FIXED_HEADER_LEN + 4 * (b[0] & 0x0F) as usize;
    if start > b.len() {
        return Err(RtpError::CsrcOverrun);
    }
    if b[0] & 0x10 != 0 {
        let ext = b.get(start..start + 4).ok_or(RtpError::ExtensionOverrun)?;
        let words = u16::from_be_bytes([ext[2], ext[3]]) as usize;
        start += 4 + 4 * words;
        if start > b.len() {
            return Err(RtpError::ExtensionOverrun);
        }
    }
    let mut end = b.len();
    if b[0] & 0x20 != 0 {
        let pad = b[b.len() - 1];
        if pad == 0 || pad as usize > end - start {
            return Err(RtpError::BadPadding(pad));
        }
        end -= pad as usize;
    }
    Ok(start..end)
}

/// Writes a fixed 12-byte RTP header (no CSRC, no extension, no padding) into `out`.
/// Returns the header length, or `None` if `out` is too short.
pub fn write_header(
    out: &mut [u8],
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
) -> Option<usize> {
    let h = out.get_mut(..FIXED_HEADER_LEN)?;
    h[0] = 0x80;
    h[1] = (pt & 0x7F) | if marker { 0x80 } else { 0 };
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&ts.to_be_bytes());
    h[8..12].copy_from_slice(&ssrc.to_be_bytes());
    Some(FIXED_HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> Vec<u8> {
        let mut p = vec![0u8; 12 + 160];
        write_header(&mut p, true, 0, 0x1234, 0xDEADBEEF, 0xCAFEBABE).unwrap();
        p
    }

    #[test]
    fn reads_and_writes_fields() {
        let mut p = packet();
        let mut r = Rtp::parse(&mut p[..]).unwrap();
        assert_eq!(r.version(), 2);
        assert!(r.marker());
        assert_eq!(r.payload_type(), 0);
        assert_eq!(r.sequence(), 0x1234);
        assert_eq!(r.timestamp(), 0xDEADBEEF);
        assert_eq!(r.ssrc(), 0xCAFEBABE);
        assert_eq!(r.payload_range(), 12..172);
        r.set_payload_type(8);
        r.set_marker(false);
        r.set_sequence(7);
        r.set_timestamp(9);
        r.set_ssrc(11);
        r.payload_mut()[0] = 0x55;
        let r = Rtp::parse(&p[..]).unwrap();
        assert_eq!(
            (
                r.marker(),
                r.payload_type(),
                r.sequence(),
                r.timestamp(),
                r.ssrc()
            ),
            (false, 8, 7, 9, 11)
        );
        assert_eq!(r.payload()[0], 0x55);
    }

    #[test]
    fn csrc_extension_padding() {
        // 2 CSRCs, extension of 1 word, 3 bytes padding, 5 bytes payload.
        let mut p = [0u8; 12 + 8 + 4 + 4 + 5 + 3];
        p[0] = 0x80 | 0x20 | 0x10 | 2;
        p[12 + 8 + 3] = 1;
        let n = p.len();
        p[n - 1] = 3;
        let r = Rtp::parse(&p[..]).unwrap();
        assert_eq!(r.csrc_count(), 2);
        assert!(r.extension() && r.padding());
        assert_eq!(r.payload_range(), 28..33);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(
            Rtp::parse(&[0x80u8; 11][..]).err(),
            Some(RtpError::TooShort(11))
        );
        let mut p = packet();
        p[0] = 0x40;
        assert_eq!(Rtp::parse(&p[..]).err(), Some(RtpError::BadVersion(1)));
        let mut p = [0u8; 12];
        p[0] = 0x81;
        assert_eq!(Rtp::parse(&p[..]).err(), Some(RtpError::CsrcOverrun));
        p[0] = 0x90;
        assert_eq!(Rtp::parse(&p[..]).err(), Some(RtpError::ExtensionOverrun));
        let mut p = [0u8; 16];
        p[0] = 0x90;
        p[15] = 1;
        assert_eq!(Rtp::parse(&p[..]).err(), Some(RtpError::ExtensionOverrun));
        let mut p = [0u8; 13];
        p[0] = 0xA0;
        assert_eq!(Rtp::parse(&p[..]).err(), Some(RtpError::BadPadding(0)));
        p[12] = 2;
        assert_eq!(Rtp::parse(&p[..]).err(), Some(RtpError::BadPadding(2)));
        p[12] = 1;
        assert_eq!(Rtp::parse(&p[..]).unwrap().payload_range(), 12..12);
    }

    #[test]
    fn never_panics_on_any_short_input() {
        // Exhaustive over the first byte and lengths, pseudo-random over the rest.
        let mut x: u32 = 0x1234_5678;
        for first in 0..=255u8 {
            for len in 0..48usize {
                let mut p = vec![0u8; len];
                for b in p.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    *b = x as u8;
                }
                if let Some(b) = p.first_mut() {
                    *b = first;
                }
                if let Ok(mut r) = Rtp::parse(&mut p[..]) {
                    let range = r.payload_range();
                    assert!(range.start <= range.end && range.end <= len);
                    let _ = (r.sequence(), r.timestamp(), r.ssrc(), r.payload().len());
                    r.payload_mut().fill(0);
                    r.set_payload_type(127);
                }
            }
        }
    }
}
