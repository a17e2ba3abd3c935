//! Framing of the bytes a modem sends into lines: `\r\n`-terminated result lines (bare `\r` or
//! `\n` are accepted too, empty lines are dropped) and the SMS/USSD prompt `> `, which comes
//! without a line end.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

/// One frame read from the modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A non-empty line, without its line end.
    Line(String),
    /// The `> ` prompt that asks for a PDU or text.
    Prompt,
}

/// Longest line kept; a modem that sends more without a line end is cut (junk, not a hang).
pub const MAX_LINE: usize = 4096;

/// Splits a byte stream into [`Frame`]s. Keeps a partial line between calls.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// A splitter with no partial line.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops any partial line (after a port was re-opened).
    pub fn reset(&mut self) {
        self.buf.clear();
    }

    /// Feeds bytes; complete frames are appended to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Frame>) {
        for &b in bytes {
            match b {
                b'\r' | b'\n' => self.flush(out),
                0 => {}
                _ => {
                    if self.buf.len() < MAX_LINE {
                        self.buf.push(b);
                    }
                }
            }
        }
        // A prompt is never followed by a line end: recognise it as soon as it is complete.
        if self.buf == b"> " || self.buf == b">" {
            self.buf.clear();
            out.push(Frame::Prompt);
        }
    }

    fn flush(&mut self, out: &mut Vec<Frame>) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf).trim().to_string();
        self.buf.clear();
        if !text.is_empty() {
            out.push(Frame::Line(text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Frame> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        out
    }

    #[test]
    fn crlf_framing_across_chunks() {
        let f = split(&[b"\r\n+CS", b"Q: 20,99\r", b"\n\r\nOK\r\n"]);
        assert_eq!(
            f,
            vec![Frame::Line("+CSQ: 20,99".into()), Frame::Line("OK".into())]
        );
    }

    #[test]
    fn prompt_without_line_end() {
        let f = split(&[b"AT+CMGS=23\r\r\n> "]);
        assert_eq!(f, vec![Frame::Line("AT+CMGS=23".into()), Frame::Prompt]);
    }

    #[test]
    fn junk_is_bounded_and_lossy() {
        let mut big = vec![b'x'; MAX_LINE * 2];
        big.extend_from_slice(b"\xff\r\n");
        let f = split(&[&big]);
        match &f[0] {
            Frame::Line(l) => assert!(l.len() <= MAX_LINE + 3),
            other => panic!("{other:?}"),
        }
    }
}
