//! The session level of a session description, the parser and the serialiser.
//!
//! Parsing accepts CRLF or bare LF line ends and skips empty lines. It is strict on the grammar
//! of `v=`, `o=`, `s=`, `c=` and `m=` (the lines the B2BUA acts upon) and lenient on the rest:
//! lines it does not interpret are kept verbatim. Serialisation writes CRLF line ends in the
//! order of RFC 8866 §5; within a group the received order is kept.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::media::{Direction, MediaDescription};
use super::SdpError;
use crate::sip::uri::{write_decimal, write_ipv4};

/// A whole session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `v=`, always 0 in practice.
    pub version: u32,
    /// `o=`.
    pub origin: Origin,
    /// `s=`; may be empty or `-`.
    pub session_name: String,
    /// Session-level `c=`.
    pub connection: Option<Connection>,
    /// Session-level `b=` values (e.g. `AS:64`), verbatim.
    pub bandwidths: Vec<String>,
    /// `t=` values (e.g. `0 0`), verbatim. Written as `t=0 0` when empty.
    pub times: Vec<String>,
    /// `r=` values, each with the index in [`times`](Self::times) of the `t=` it follows.
    pub repeats: Vec<(usize, String)>,
    /// Session-level `a=` lines.
    pub attributes: Vec<Attribute>,
    /// The media sections, in order.
    pub media: Vec<MediaDescription>,
    /// Other session-level lines (`i=`, `u=`, `e=`, `p=`, `z=`, `k=`, a second `c=`, unknown
    /// letters), verbatim and in received order.
    pub extra: Vec<Line>,
}

/// The `o=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub username: String,
    /// Kept as text: some agents use more digits than fit in 64 bits.
    pub session_id: String,
    pub session_version: u64,
    pub net_type: String,
    pub addr_type: String,
    pub address: String,
}

/// A `c=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// The address as written; multicast forms carry `/ttl[/count]`.
    pub address: String,
}

/// An `a=` line: `a=name` (a flag) or `a=name:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub value: Option<String>,
}

/// A line kept verbatim: its type letter and everything after the `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub kind: char,
    pub value: String,
}

impl Attribute {
    /// `a=name:value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Attribute {
            name: name.into(),
            value: Some(value.into()),
        }
    }

    /// `a=name`, a property attribute without value.
    pub fn flag(name: impl Into<String>) -> Self {
        Attribute {
            name: name.into(),
            value: None,
        }
    }

    fn parse(text: &str) -> Self {
        match crate::sip::header::split_once_byte(text, b':') {
            Some((name, value)) => Attribute::new(name, value),
            None => Attribute::flag(text),
        }
    }
}

impl Attribute {
    /// `name[:value]`.
    pub(crate) fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        w.write_str(&self.name)?;
        if let Some(v) = &self.value {
            w.write_str(":")?;
            w.write_str(v)?;
        }
        Ok(())
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl Connection {
    /// `IN IP4 a.b.c.d` or `IN IP6 …` for an address.
    pub fn from_ip(ip: IpAddr) -> Self {
        Connection {
            net_type: "IN".into(),
            addr_type: addr_type(ip).into(),
            address: ip_text(ip),
        }
    }

    /// The address as an IP address; the multicast `/ttl` suffix is ignored. `None` for a
    /// domain name.
    pub fn ip(&self) -> Option<IpAddr> {
        let addr = self.address.split('/').next().unwrap_or("");
        addr.parse().ok()
    }

    fn parse(value: &str, line: usize, kind: char) -> Result<Self, SdpError> {
        let bad = |reason| SdpError::BadValue { line, kind, reason };
        let mut it = value.split_ascii_whitespace();
        let (Some(net_type), Some(addr_type), Some(address), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad("expected <nettype> <addrtype> <address>"));
        };
        Ok(Connection {
            net_type: net_type.into(),
            addr_type: addr_type.into(),
            address: address.into(),
        })
    }
}

impl Connection {
    pub(crate) fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        w.write_str(&self.net_type)?;
        w.write_str(" ")?;
        w.write_str(&self.addr_type)?;
        w.write_str(" ")?;
        w.write_str(&self.address)
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl Origin {
    fn parse(value: &str, line: usize) -> Result<Self, SdpError> {
        let bad = |reason| SdpError::BadValue {
            line,
            kind: 'o',
            reason,
        };
        // Six fields taken one by one: collecting them into a Vec first cost an allocation
        // and its growth, ~750 instructions a description (issue 22).
        let mut f = value.split_ascii_whitespace();
        let (
            Some(username),
            Some(session_id),
            Some(version),
            Some(net_type),
            Some(addr_type),
            Some(address),
            None,
        ) = (
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
            f.next(),
        )
        else {
            return Err(bad("expected six fields"));
        };
        if !session_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("session id is not a number"));
        }
        let session_version = parse_digits::<u64>(version).ok_or(bad("bad session version"))?;
        Ok(Origin {
            username: username.into(),
            session_id: session_id.into(),
            session_version,
            net_type: net_type.into(),
            addr_type: addr_type.into(),
            address: address.into(),
        })
    }
}

impl Origin {
    fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        w.write_str(&self.username)?;
        w.write_str(" ")?;
        w.write_str(&self.session_id)?;
        w.write_str(" ")?;
        write_decimal(w, self.session_version)?;
        w.write_str(" ")?;
        w.write_str(&self.net_type)?;
        w.write_str(" ")?;
        w.write_str(&self.addr_type)?;
        w.write_str(" ")?;
        w.write_str(&self.address)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// An address as SDP writes it (`c=`, `o=`): IPv4 without `core::fmt`, which costs several
/// times more per address on every description the B2BUA sends (issue 22).
pub(crate) fn ip_text(ip: IpAddr) -> String {
    let mut s = String::with_capacity(15);
    let _ = match ip {
        IpAddr::V4(a) => write_ipv4(&mut s, a),
        IpAddr::V6(a) => fmt::Write::write_fmt(&mut s, format_args!("{a}")),
    };
    s
}

/// `IP4` or `IP6`.
pub(crate) fn addr_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

/// Parses a non-empty run of ASCII digits (no sign, no spaces).
pub(crate) fn parse_digits<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Splits `x=value` into its type letter and value. The letter must be a lowercase ASCII letter
/// and the `=` must follow it immediately.
/// `text.split('\n')` with a byte search (the char pattern's searcher costs more per line).
fn byte_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let r = rest?;
        match crate::sip::header::split_once_byte(r, b'\n') {
            Some((line, tail)) => {
                rest = Some(tail);
                Some(line)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

fn split_line(text: &str, line: usize) -> Result<(char, &str), SdpError> {
    let bytes = text.as_bytes();
    match bytes {
        [k, b'=', ..] if k.is_ascii_lowercase() => {
            Ok((char::from(*k), crate::checked::tail(text, 2)))
        }
        _ => Err(SdpError::BadLine { line }),
    }
}

impl SessionDescription {
    /// Parses a session description.
    pub fn parse(text: &str) -> Result<Self, SdpError> {
        let mut lines = byte_lines(text)
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
            .filter(|(_, l)| !l.is_empty());

        let Some((n, first)) = lines.next() else {
            return Err(SdpError::Empty);
        };
        let version = match split_line(first, n) {
            Ok(('v', v)) => parse_digits::<u32>(v).ok_or(SdpError::BadValue {
                line: n,
                kind: 'v',
                reason: "not a number",
            })?,
            Ok(_) => return Err(SdpError::MissingVersion),
            Err(e) => return Err(e),
        };

        let mut origin = None;
        let mut session_name = None;
        let mut sdp = SessionDescription {
            version,
            origin: Origin {
                username: String::new(),
                session_id: String::new(),
                session_version: 0,
                net_type: String::new(),
                addr_type: String::new(),
                address: String::new(),
            },
            session_name: String::new(),
            connection: None,
            bandwidths: Vec::new(),
            times: Vec::new(),
            repeats: Vec::new(),
            attributes: Vec::new(),
            media: Vec::new(),
            extra: Vec::new(),
        };

        for (n, text) in lines {
            let (kind, value) = split_line(text, n)?;
            if kind == 'v' {
                return Err(SdpError::Duplicate { line: n, kind });
            }
            if kind == 'm' {
                if origin.is_none() {
                    return Err(SdpError::MissingOrigin);
                }
                if session_name.is_none() {
                    return Err(SdpError::MissingSessionName);
                }
                sdp.media.push(MediaDescription::parse_m_line(value, n)?);
                continue;
            }
            if let Some(m) = sdp.media.last_mut() {
                match kind {
                    'c' if m.connection.is_none() => {
                        m.connection = Some(Connection::parse(value, n, kind)?);
                    }
                    'c' => {
                        Connection::parse(value, n, kind)?;
                        m.extra.push(Line {
                            kind,
                            value: value.into(),
                        });
                    }
                    'b' => m.bandwidths.push(value.into()),
                    'a' => m.attributes.push(attribute(value, n)?),
                    'o' | 's' => return Err(SdpError::Duplicate { line: n, kind }),
                    _ => m.extra.push(Line {
                        kind,
                        value: value.into(),
                    }),
                }
                continue;
            }
            match kind {
                'o' if origin.is_some() => return Err(SdpError::Duplicate { line: n, kind }),
                'o' => origin = Some(Origin::parse(value, n)?),
                's' if session_name.is_some() => return Err(SdpError::Duplicate { line: n, kind }),
                's' => session_name = Some(value.to_string()),
                'c' if sdp.connection.is_none() => {
                    sdp.connection = Some(Connection::parse(value, n, kind)?);
                }
                'c' => {
                    Connection::parse(value, n, kind)?;
                    sdp.extra.push(Line {
                        kind,
                        value: value.into(),
                    });
                }
                'b' => sdp.bandwidths.push(value.into()),
                't' => sdp.times.push(value.into()),
                'r' => match sdp.times.len().checked_sub(1) {
                    Some(idx) => sdp.repeats.push((idx, value.into())),
                    None => {
                        return Err(SdpError::BadValue {
                            line: n,
                            kind,
                            reason: "r= without a preceding t=",
                        })
                    }
                },
                'a' => sdp.attributes.push(attribute(value, n)?),
                _ => sdp.extra.push(Line {
                    kind,
                    value: value.into(),
                }),
            }
        }

        // Kept lines are held in the order they are written out, so that a parsed description
        // and its serialisation parse to the same model.
        sdp.extra.sort_by_key(|l| session_extra_rank(l.kind));
        for m in &mut sdp.media {
            m.extra
                .sort_by_key(|l| MediaDescription::extra_rank(l.kind));
        }
        sdp.origin = origin.ok_or(SdpError::MissingOrigin)?;
        sdp.session_name = session_name.ok_or(SdpError::MissingSessionName)?;
        Ok(sdp)
    }

    /// The first `m=audio` section.
    pub fn audio(&self) -> Option<&MediaDescription> {
        self.media.iter().find(|m| m.media == "audio")
    }

    /// The first `m=audio` section, mutable.
    pub fn audio_mut(&mut self) -> Option<&mut MediaDescription> {
        self.media.iter_mut().find(|m| m.media == "audio")
    }

    /// The index in [`media`](Self::media) of the first `m=audio` section.
    pub fn audio_index(&self) -> Option<usize> {
        self.media.iter().position(|m| m.media == "audio")
    }

    /// The session-level direction attribute, if one is present (the last one wins).
    pub fn explicit_direction(&self) -> Option<Direction> {
        Direction::from_attributes(&self.attributes)
    }

    /// The direction in force for media section `idx`: its own attribute, else the
    /// session-level one, else `sendrecv` (RFC 8866 §6.7).
    pub fn media_direction(&self, idx: usize) -> Direction {
        self.media
            .get(idx)
            .and_then(MediaDescription::explicit_direction)
            .or_else(|| self.explicit_direction())
            .unwrap_or(Direction::SendRecv)
    }

    /// The first session-level attribute called `name` (case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// Where a kept session-level line goes in the output (RFC 8866 §5 order).
fn session_extra_rank(kind: char) -> u8 {
    match kind {
        'i' => 0,
        'u' => 1,
        'e' => 2,
        'p' => 3,
        'c' => 4,
        'z' => 5,
        'k' => 6,
        _ => 7,
    }
}

fn attribute(value: &str, line: usize) -> Result<Attribute, SdpError> {
    let a = Attribute::parse(value);
    if a.name.is_empty() {
        return Err(SdpError::BadValue {
            line,
            kind: 'a',
            reason: "empty attribute name",
        });
    }
    Ok(a)
}

impl FromStr for SessionDescription {
    type Err = SdpError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionDescription::parse(s)
    }
}

/// `kind=value\r\n` with a verbatim value.
pub(crate) fn write_line<W: fmt::Write + ?Sized>(
    w: &mut W,
    kind: char,
    value: &str,
) -> fmt::Result {
    w.write_char(kind)?;
    w.write_str("=")?;
    w.write_str(value)?;
    w.write_str("\r\n")
}

/// `a=name[:value]\r\n`.
pub(crate) fn write_attribute<W: fmt::Write + ?Sized>(w: &mut W, a: &Attribute) -> fmt::Result {
    w.write_str("a=")?;
    a.write_to(w)?;
    w.write_str("\r\n")
}

/// `c=nettype addrtype address\r\n`.
pub(crate) fn write_connection<W: fmt::Write + ?Sized>(w: &mut W, c: &Connection) -> fmt::Result {
    w.write_str("c=")?;
    c.write_to(w)?;
    w.write_str("\r\n")
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl SessionDescription {
    /// The description as text, as [`fmt::Display`] writes it but straight into a `String`:
    /// a description is written for every offer and answer the B2BUA sends and once more to
    /// compare it with the leg's last one, and `core::fmt`'s machinery cost ~3 % of the
    /// instructions per call (issue 22).
    pub fn encode(&self) -> String {
        let mut s = String::with_capacity(384);
        let _ = self.write_to(&mut s);
        s
    }

    /// Writes the description: session lines in RFC 8866 order, then each media section.
    pub fn write_to<W: fmt::Write + ?Sized>(&self, f: &mut W) -> fmt::Result {
        let extras = |from: u8, to: u8| {
            self.extra
                .iter()
                .filter(move |l| (from..=to).contains(&session_extra_rank(l.kind)))
        };
        f.write_str("v=")?;
        write_decimal(f, self.version.into())?;
        f.write_str("\r\no=")?;
        self.origin.write_to(f)?;
        f.write_str("\r\n")?;
        write_line(f, 's', &self.session_name)?;
        for rank in 0..=3 {
            for l in extras(rank, rank) {
                write_line(f, l.kind, &l.value)?;
            }
        }
        if let Some(c) = &self.connection {
            write_connection(f, c)?;
        }
        for l in extras(4, 4) {
            write_line(f, 'c', &l.value)?;
        }
        for b in &self.bandwidths {
            write_line(f, 'b', b)?;
        }
        if self.times.is_empty() {
            write_line(f, 't', "0 0")?;
        }
        for (i, t) in self.times.iter().enumerate() {
            write_line(f, 't', t)?;
            for (_, r) in self.repeats.iter().filter(|(idx, _)| *idx == i) {
                write_line(f, 'r', r)?;
            }
        }
        for rank in 5..=7 {
            for l in extras(rank, rank) {
                write_line(f, l.kind, &l.value)?;
            }
        }
        for a in &self.attributes {
            write_attribute(f, a)?;
        }
        for m in &self.media {
            m.write_to(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{byte_lines, parse_digits, Origin, SdpError};

    #[test]
    fn byte_lines_split_as_split_does() {
        for text in [
            "",
            "\n",
            "v=0",
            "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\n",
            "a\n\nb\n",
            "é\nü=ß\r\n\n",
        ] {
            let ours: Vec<&str> = byte_lines(text).collect();
            let std: Vec<&str> = text.split('\n').collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }

    /// `Origin::parse` as it was, collecting the fields into a Vec: the reference.
    fn origin_by_vec(value: &str, line: usize) -> Result<Origin, SdpError> {
        let bad = |reason| SdpError::BadValue {
            line,
            kind: 'o',
            reason,
        };
        let f: Vec<&str> = value.split_ascii_whitespace().collect();
        let &[username, session_id, version, net_type, addr_type, address] = f.as_slice() else {
            return Err(bad("expected six fields"));
        };
        if !session_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("session id is not a number"));
        }
        let session_version = parse_digits::<u64>(version).ok_or(bad("bad session version"))?;
        Ok(Origin {
            username: username.into(),
            session_id: session_id.into(),
            session_version,
            net_type: net_type.into(),
            addr_type: addr_type.into(),
            address: address.into(),
        })
    }

    #[test]
    fn origin_fields_are_taken_as_the_vec_took_them() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/sdp");
        let mut values: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(dir).expect("sdp seeds") {
            let bytes = std::fs::read(entry.expect("seed").path()).expect("seed");
            for line in String::from_utf8_lossy(&bytes).lines() {
                if let Some(v) = line.strip_prefix("o=") {
                    values.push(v.to_owned());
                }
            }
        }
        assert!(values.len() >= 20, "{} o= lines", values.len());
        let edges = [
            "",
            " ",
            "a",
            "- 1 2 IN IP4",
            "- 1 2 IN IP4 127.0.0.1",
            "- 1 2 IN IP4 127.0.0.1 extra",
            "-  1\t2 \tIN  IP4   127.0.0.1  ",
            "\t- 1 2 IN IP4 127.0.0.1\r",
            "- x1 2 IN IP4 127.0.0.1",
            "- 1 -2 IN IP4 127.0.0.1",
            "- 1 18446744073709551616 IN IP4 127.0.0.1",
            "- 123456789012345678901234567890 0 IN IP6 ::1",
            "- 1 2 IN IP4 127.0.0.1\u{a0}x",
        ];
        values.extend(edges.iter().map(|e| e.to_string()));
        for v in &values {
            // Every field count from none to eight, from each real line.
            let words: Vec<&str> = v.split(' ').collect();
            for n in 0..=words.len() {
                let cut = words.get(..n).unwrap_or_default().join(" ");
                assert_eq!(Origin::parse(&cut, 2), origin_by_vec(&cut, 2), "{cut:?}");
            }
            let doubled = format!("{v} {v}");
            assert_eq!(Origin::parse(&doubled, 2), origin_by_vec(&doubled, 2));
        }
    }
}
