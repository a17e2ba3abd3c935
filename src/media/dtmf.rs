//! RFC 4733 telephone-event payloads (DTMF named events 0–15).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     event     |E|R| volume    |          duration             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

/// Length of one telephone-event block.
pub const EVENT_LEN: usize = 4;

/// RTP clock rate of `telephone-event/8000`, in samples per millisecond.
pub const SAMPLES_PER_MS: u32 = 8;

/// Why a payload is not a telephone event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtmfError {
    #[error("telephone-event payload shorter than 4 bytes ({0})")]
    TooShort(usize),
}

/// One RFC 4733 event block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code (0–9, 10 = `*`, 11 = `#`, 12–15 = `A`–`D` for DTMF).
    pub event: u8,
    /// E bit: this is (a retransmission of) the final packet of the event.
    pub end: bool,
    /// Power level in −dBm0 (0–63).
    pub volume: u8,
    /// Duration so far, in timestamp units (1/8 ms at 8 kHz).
    pub duration: u16,
}

impl TelephoneEvent {
    /// Parses the first event block of `payload` (extra bytes, e.g. redundancy, are ignored).
    pub fn parse(payload: &[u8]) -> Result<Self, DtmfError> {
        match payload {
            [event, flags, d0, d1, ..] => Ok(TelephoneEvent {
                event: *event,
                end: flags & 0x80 != 0,
                volume: flags & 0x3F,
                duration: u16::from_be_bytes([*d0, *d1]),
            }),
            _ => Err(DtmfError::TooShort(payload.len())),
        }
    }

    /// The 4-byte wire form (R bit zero).
    pub fn to_bytes(&self) -> [u8; EVENT_LEN] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (self.volume & 0x3F) | if self.end { 0x80 } else { 0 },
            d[0],
            d[1],
        ]
    }

    /// The DTMF digit of this event, if it is one.
    pub fn digit(&self) -> Option<char> {
        event_to_digit(self.event)
    }

    /// Duration in milliseconds at 8 kHz.
    pub fn duration_ms(&self) -> u32 {
        self.duration as u32 / SAMPLES_PER_MS
    }
}

/// Maps a DTMF digit (`0`–`9`, `*`, `#`, `A`–`D`, case-insensitive) to its event code.
pub fn digit_to_event(digit: char) -> Option<u8> {
    match digit {
        '0'..='9' => Some(digit as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        'A'..='D' => Some(digit as u8 - b'A' + 12),
        'a'..='d' => Some(digit as u8 - b'a' + 12),
        // RFC 4733 event 16: the hook flash.
        '!' => Some(16),
        _ => None,
    }
}

/// Maps an event code 0–15 to its DTMF digit.
pub fn event_to_digit(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_build() {
        let e = TelephoneEvent::parse(&[11, 0x8A, 0x03, 0x20]).unwrap();
        assert_eq!(
            e,
            TelephoneEvent {
                event: 11,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(e.digit(), Some('#'));
        assert_eq!(e.duration_ms(), 100);
        assert_eq!(e.to_bytes(), [11, 0x8A, 0x03, 0x20]);
        // R bit is ignored on input and cleared on output.
        let e = TelephoneEvent::parse(&[5, 0x40 | 7, 0, 160, 99]).unwrap();
        assert_eq!((e.end, e.volume, e.duration), (false, 7, 160));
        assert_eq!(e.to_bytes(), [5, 7, 0, 160]);
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(DtmfError::TooShort(3))
        );
    }

    #[test]
    fn digit_mapping() {
        let digits = "0123456789*#ABCD";
        for (i, d) in digits.chars().enumerate() {
            assert_eq!(digit_to_event(d), Some(i as u8));
            assert_eq!(event_to_digit(i as u8), Some(d));
        }
        assert_eq!(digit_to_event('b'), Some(13));
        assert_eq!(digit_to_event('E'), None);
        assert_eq!(digit_to_event('x'), None);
        assert_eq!(digit_to_event('!'), Some(16));
        assert_eq!(event_to_digit(16), None);
        assert_eq!(event_to_digit(255), None);
    }
}
