//! Checked slicing for the parsers of outside data (SIP, SDP, DUNDi, AT, NAPTR, CSV): every
//! helper returns something for any index, so that a parser cannot panic on a byte offset that
//! is out of range or not on a character boundary. The parser modules deny
//! `clippy::string_slice` and `clippy::indexing_slicing` and use these instead.

/// `s[from..to]`, or `""` when the range is out of bounds, reversed, or not on character
/// boundaries.
#[inline]
pub fn sub(s: &str, from: usize, to: usize) -> &str {
    s.get(from..to).unwrap_or("")
}

/// `s[from..]`, or `""` when `from` is past the end or not on a character boundary.
#[inline]
pub fn tail(s: &str, from: usize) -> &str {
    s.get(from..).unwrap_or("")
}

/// `s[..to]`, or `""` when `to` is past the end or not on a character boundary.
#[inline]
pub fn head(s: &str, to: usize) -> &str {
    s.get(..to).unwrap_or("")
}

/// `(s[..at], s[at + skip..])`: `s` cut around a separator of `skip` bytes at `at`; `None`
/// when either cut is not a character boundary within `s`.
#[inline]
pub fn cut(s: &str, at: usize, skip: usize) -> Option<(&str, &str)> {
    Some((s.get(..at)?, s.get(at.checked_add(skip)?..)?))
}

/// The byte at `i`, or 0 (which no grammar here accepts) past the end.
#[inline]
pub fn byte(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// `b[from..to]`, or an empty slice when the range is out of bounds or reversed.
#[inline]
pub fn bytes(b: &[u8], from: usize, to: usize) -> &[u8] {
    b.get(from..to).unwrap_or(&[])
}

/// `b[from..]`, or an empty slice past the end.
#[inline]
pub fn bytes_from(b: &[u8], from: usize) -> &[u8] {
    b.get(from..).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_panics_on_bad_offsets() {
        let s = "SIPé/2.0";
        assert_eq!(sub(s, 0, 3), "SIP");
        assert_eq!(sub(s, 0, 4), "", "inside é");
        assert_eq!(sub(s, 5, 3), "", "reversed");
        assert_eq!(sub(s, 0, 99), "");
        assert_eq!(tail(s, 5), "/2.0");
        assert_eq!(tail(s, 4), "");
        assert_eq!(tail(s, 99), "");
        assert_eq!(head(s, 3), "SIP");
        assert_eq!(head(s, 4), "");
        assert_eq!(cut("a:b", 1, 1), Some(("a", "b")));
        assert_eq!(cut("é:b", 1, 1), None);
        assert_eq!(cut("ab", 2, 1), None);
        assert_eq!(cut("ab", usize::MAX, 1), None);
        assert_eq!(byte(b"ab", 1), b'b');
        assert_eq!(byte(b"ab", 2), 0);
        assert_eq!(bytes(b"abc", 1, 2), b"b");
        assert_eq!(bytes(b"abc", 2, 1), b"");
        assert_eq!(bytes_from(b"abc", 9), b"");
    }
}
