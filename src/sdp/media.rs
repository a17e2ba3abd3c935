//! Media sections (`m=` and the lines that follow it), codecs and stream direction.
//!
//! A codec is a payload type from the `m=` format list, described by its `a=rtpmap` line or,
//! for the static payload types of RFC 3551 that come without one, by the static table.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::fmt;
use std::net::SocketAddr;

use super::session::{
    parse_digits, write_attribute, write_connection, write_line, Attribute, Connection, Line,
    SessionDescription,
};
use super::SdpError;
use crate::sip::uri::write_decimal;

/// One media section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `audio`, `video`, `application`, …
    pub media: String,
    /// Transport port; 0 declines the stream.
    pub port: u16,
    /// The `/<number of ports>` suffix of the port, if written.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, …
    pub proto: String,
    /// The format list (RTP payload types as decimal text for RTP profiles).
    pub formats: Vec<String>,
    /// Media-level `c=`.
    pub connection: Option<Connection>,
    /// Media-level `b=` values, verbatim.
    pub bandwidths: Vec<String>,
    /// Media-level `a=` lines.
    pub attributes: Vec<Attribute>,
    /// Other media-level lines (`i=`, `k=`, further `c=`, unknown letters), verbatim.
    pub extra: Vec<Line>,
}

/// Stream direction attributes (RFC 3264 §5.1, RFC 8866 §6.7).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The attribute name: `sendrecv`, `sendonly`, `recvonly` or `inactive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction named by an attribute name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| name.eq_ignore_ascii_case(d.as_str()))
    }

    /// The direction an answerer takes in reply to this offered direction (RFC 3264 §6.1,
    /// answering with the widest allowed direction): sendonly ⇄ recvonly.
    pub fn reverse(self) -> Self {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    /// Whether this side sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The last direction attribute in a list (flags only), if any.
    pub(crate) fn from_attributes(attrs: &[Attribute]) -> Option<Self> {
        attrs
            .iter()
            .rev()
            .filter(|a| a.value.is_none())
            .find_map(|a| Direction::from_name(&a.name))
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An RTP payload format: payload type, encoding name, clock rate, channels, format parameters.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Codec {
    pub pt: u8,
    /// Encoding name as written; compare case-insensitively.
    pub name: String,
    pub rate: u32,
    pub channels: u8,
    /// The parameters of the `a=fmtp` line (after the payload type), if any.
    pub fmtp: Option<String>,
}

/// RFC 3551 static payload types: (pt, name, rate, channels).
const STATIC_PTS: &[(u8, &str, u32, u8)] = &[
    (0, "PCMU", 8000, 1),
    (3, "GSM", 8000, 1),
    (4, "G723", 8000, 1),
    (5, "DVI4", 8000, 1),
    (6, "DVI4", 16000, 1),
    (7, "LPC", 8000, 1),
    (8, "PCMA", 8000, 1),
    (9, "G722", 8000, 1),
    (10, "L16", 44100, 2),
    (11, "L16", 44100, 1),
    (12, "QCELP", 8000, 1),
    (13, "CN", 8000, 1),
    (14, "MPA", 90000, 1),
    (15, "G728", 8000, 1),
    (16, "DVI4", 11025, 1),
    (17, "DVI4", 22050, 1),
    (18, "G729", 8000, 1),
    (25, "CelB", 90000, 1),
    (26, "JPEG", 90000, 1),
    (28, "nv", 90000, 1),
    (31, "H261", 90000, 1),
    (32, "MPV", 90000, 1),
    (33, "MP2T", 90000, 1),
    (34, "H263", 90000, 1),
];

impl Codec {
    /// A codec without format parameters, one channel.
    pub fn new(pt: u8, name: impl Into<String>, rate: u32) -> Self {
        Codec {
            pt,
            name: name.into(),
            rate,
            channels: 1,
            fmtp: None,
        }
    }

    /// The RFC 3551 static assignment of a payload type, if it has one.
    pub fn from_static(pt: u8) -> Option<Self> {
        STATIC_PTS
            .iter()
            .find(|s| s.0 == pt)
            .map(|&(pt, name, rate, channels)| Codec {
                pt,
                name: name.into(),
                rate,
                channels,
                fmtp: None,
            })
    }

    /// `telephone-event` (RFC 4733).
    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }

    /// Comfort noise (`CN`, RFC 3389).
    pub fn is_comfort_noise(&self) -> bool {
        self.name.eq_ignore_ascii_case("CN")
    }

    /// Same encoding: name (case-insensitive), clock rate and channels; payload type and
    /// format parameters may differ.
    pub fn same_encoding(&self, other: &Codec) -> bool {
        self.name.eq_ignore_ascii_case(&other.name)
            && self.rate == other.rate
            && self.channels == other.channels
    }

    /// The value of its `a=rtpmap` line: `96 opus/48000/2`.
    pub fn rtpmap_value(&self) -> String {
        if self.channels > 1 {
            format!("{} {}/{}/{}", self.pt, self.name, self.rate, self.channels)
        } else {
            format!("{} {}/{}", self.pt, self.name, self.rate)
        }
    }

    /// Parses `name/rate[/channels]`.
    fn from_rtpmap(pt: u8, encoding: &str) -> Option<Self> {
        let mut it = encoding.trim().split('/');
        let name = it.next().filter(|n| !n.is_empty())?;
        let rate = parse_digits::<u32>(it.next()?)?;
        let channels = match it.next() {
            Some(c) => parse_digits::<u8>(c)?,
            None => 1,
        };
        if it.next().is_some() {
            return None;
        }
        Some(Codec {
            pt,
            name: name.into(),
            rate,
            channels,
            fmtp: None,
        })
    }
}

/// Attributes whose value starts with a payload type.
const PT_ATTRIBUTES: [&str; 3] = ["rtpmap", "fmtp", "rtcp-fb"];

/// Splits a `<pt> <rest>` attribute value.
fn pt_value(value: &str) -> Option<(u8, &str)> {
    let value = value.trim_start();
    let (pt, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    Some((parse_digits::<u8>(pt)?, rest.trim()))
}

impl MediaDescription {
    /// A media section with no lines besides `m=`.
    pub fn new(media: impl Into<String>, port: u16, proto: impl Into<String>) -> Self {
        MediaDescription {
            media: media.into(),
            port,
            port_count: None,
            proto: proto.into(),
            formats: Vec::new(),
            connection: None,
            bandwidths: Vec::new(),
            attributes: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Parses the value of an `m=` line.
    pub(crate) fn parse_m_line(value: &str, line: usize) -> Result<Self, SdpError> {
        let bad = |reason| SdpError::BadValue {
            line,
            kind: 'm',
            reason,
        };
        let mut it = value.split_ascii_whitespace();
        let media = it.next().ok_or(bad("missing media type"))?;
        let port = it.next().ok_or(bad("missing port"))?;
        let proto = it.next().ok_or(bad("missing protocol"))?;
        let formats: Vec<String> = it.map(String::from).collect();
        if formats.is_empty() {
            return Err(bad("missing formats"));
        }
        if !media
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("bad media type"));
        }
        let (port, port_count) = match port.split_once('/') {
            Some((p, n)) => (
                p,
                Some(parse_digits::<u16>(n).ok_or(bad("bad port count"))?),
            ),
            None => (port, None),
        };
        let port = parse_digits::<u16>(port).ok_or(bad("bad port"))?;
        let mut m = MediaDescription::new(media, port, proto);
        m.port_count = port_count;
        m.formats = formats;
        Ok(m)
    }

    /// Where a kept line goes in the output (RFC 8866 §5 order: `i=`, `c=`, `b=`, `k=`, …).
    pub(crate) fn extra_rank(kind: char) -> u8 {
        match kind {
            'i' => 0,
            'c' => 1,
            'k' => 2,
            _ => 3,
        }
    }

    /// The first attribute called `name` (case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// Whether the stream uses an RTP profile (`RTP/…`).
    pub fn is_rtp(&self) -> bool {
        self.proto.split('/').any(|p| p.eq_ignore_ascii_case("RTP"))
    }

    /// The codecs of the format list, in order of preference. Formats that are not payload
    /// types, dynamic payload types without `a=rtpmap`, and repeated formats are skipped.
    pub fn codecs(&self) -> Vec<Codec> {
        let mut out: Vec<Codec> = Vec::new();
        for f in &self.formats {
            let Some(pt) = parse_digits::<u8>(f).filter(|pt| *pt < 128) else {
                continue;
            };
            if out.iter().any(|c| c.pt == pt) {
                continue;
            }
            if let Some(mut c) = self.codec_for(pt) {
                c.fmtp = self.pt_attribute("fmtp", pt).map(String::from);
                out.push(c);
            }
        }
        out
    }

    /// The codec for one payload type of this section (from `a=rtpmap` or the static table).
    fn codec_for(&self, pt: u8) -> Option<Codec> {
        self.pt_attribute("rtpmap", pt)
            .and_then(|enc| Codec::from_rtpmap(pt, enc))
            .or_else(|| Codec::from_static(pt))
    }

    /// The rest of the first `a=<name>:<pt> <rest>` attribute for `pt`.
    fn pt_attribute(&self, name: &str, pt: u8) -> Option<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case(name))
            .filter_map(|a| pt_value(a.value.as_deref()?))
            .find(|(p, _)| *p == pt)
            .map(|(_, rest)| rest)
    }

    /// The media-level direction attribute, if present (the last one wins).
    pub fn explicit_direction(&self) -> Option<Direction> {
        Direction::from_attributes(&self.attributes)
    }

    /// The media-level direction, `sendrecv` when none is written. For the session-level
    /// fallback use [`SessionDescription::media_direction`].
    pub fn direction(&self) -> Direction {
        self.explicit_direction().unwrap_or(Direction::SendRecv)
    }

    /// Replaces any media-level direction attributes with `a=<d>`.
    pub fn set_direction(&mut self, d: Direction) {
        let pos = self
            .attributes
            .iter()
            .position(|a| a.value.is_none() && Direction::from_name(&a.name).is_some());
        self.attributes
            .retain(|a| a.value.is_some() || Direction::from_name(&a.name).is_none());
        let pos = pos
            .unwrap_or(self.attributes.len())
            .min(self.attributes.len());
        self.attributes.insert(pos, Attribute::flag(d.as_str()));
    }

    /// `a=ptime` in milliseconds (a fractional part is dropped).
    pub fn ptime(&self) -> Option<u32> {
        let v = self.attribute("ptime")?.value.as_deref()?.trim();
        let int = v.split_once('.').map_or(v, |(i, _)| i);
        parse_digits::<u32>(int)
    }

    /// Replaces `a=ptime` (or removes it with `None`).
    pub fn set_ptime(&mut self, ptime: Option<u32>) {
        let pos = self
            .attributes
            .iter()
            .position(|a| a.name.eq_ignore_ascii_case("ptime"));
        self.attributes
            .retain(|a| !a.name.eq_ignore_ascii_case("ptime"));
        if let Some(p) = ptime {
            let pos = pos
                .unwrap_or(self.attributes.len())
                .min(self.attributes.len());
            self.attributes
                .insert(pos, Attribute::new("ptime", p.to_string()));
        }
    }

    /// The connection line in force: this section's `c=`, else the session's.
    pub fn effective_connection<'a>(
        &'a self,
        session: &'a SessionDescription,
    ) -> Option<&'a Connection> {
        self.connection.as_ref().or(session.connection.as_ref())
    }

    /// Where to send media: the IP address of the connection line in force and the port.
    /// `None` for a declined stream (port 0), a hold address (`0.0.0.0`, RFC 2543) or an
    /// address that is not an IP literal.
    pub fn remote_addr(&self, session: &SessionDescription) -> Option<SocketAddr> {
        if self.port == 0 {
            return None;
        }
        let ip = self.effective_connection(session)?.ip()?;
        if ip.is_unspecified() {
            return None;
        }
        Some(SocketAddr::new(ip, self.port))
    }

    /// Whether the peer has put this stream on hold: direction `sendonly` or `inactive` (with
    /// the session-level fallback), or the RFC 2543 connection address `0.0.0.0`.
    pub fn is_on_hold(&self, session: &SessionDescription) -> bool {
        let dir = self
            .explicit_direction()
            .or_else(|| session.explicit_direction())
            .unwrap_or(Direction::SendRecv);
        let zero_addr = self
            .effective_connection(session)
            .and_then(Connection::ip)
            .is_some_and(|ip| ip.is_unspecified());
        matches!(dir, Direction::SendOnly | Direction::Inactive) || zero_addr
    }

    /// Removes the codecs for which `keep` is false: their formats and their `a=rtpmap`,
    /// `a=fmtp` and `a=rtcp-fb` lines. Formats that do not describe a codec are kept. Removing
    /// every format leaves an `m=` line that is not valid SDP; decline the stream instead.
    pub fn retain_codecs(&mut self, keep: impl Fn(&Codec) -> bool) {
        let removed: Vec<u8> = self
            .codecs()
            .into_iter()
            .filter(|c| !keep(c))
            .map(|c| c.pt)
            .collect();
        if removed.is_empty() {
            return;
        }
        self.remove_pts(&removed);
    }

    /// Removes payload types: their formats and `a=rtpmap`/`a=fmtp`/`a=rtcp-fb` lines.
    pub(crate) fn remove_pts(&mut self, pts: &[u8]) {
        self.formats
            .retain(|f| parse_digits::<u8>(f).is_none_or(|pt| !pts.contains(&pt)));
        self.attributes.retain(|a| {
            let is_pt_attr = PT_ATTRIBUTES.iter().any(|n| a.name.eq_ignore_ascii_case(n));
            !is_pt_attr
                || a.value
                    .as_deref()
                    .and_then(pt_value)
                    .is_none_or(|(pt, _)| !pts.contains(&pt))
        });
    }

    /// Appends a codec: its payload type to the format list and its `a=rtpmap` (and `a=fmtp`)
    /// lines after the existing ones. A codec already using that payload type is replaced.
    pub fn add_codec(&mut self, codec: &Codec) {
        self.insert_codec(self.formats.len(), codec);
    }

    /// Inserts a codec at position `index` of the format list (clamped to its length).
    pub fn insert_codec(&mut self, index: usize, codec: &Codec) {
        self.remove_pts(&[codec.pt]);
        let index = index.min(self.formats.len());
        self.formats.insert(index, codec.pt.to_string());
        let mut pos = self
            .attributes
            .iter()
            .rposition(|a| {
                a.name.eq_ignore_ascii_case("rtpmap") || a.name.eq_ignore_ascii_case("fmtp")
            })
            .map_or(self.attributes.len(), |p| p + 1);
        self.attributes
            .insert(pos, Attribute::new("rtpmap", codec.rtpmap_value()));
        if let Some(fmtp) = &codec.fmtp {
            pos += 1;
            self.attributes.insert(
                pos,
                Attribute::new("fmtp", format!("{} {}", codec.pt, fmtp)),
            );
        }
    }

    /// Removes every attribute called `name` (case-insensitive).
    pub fn remove_attributes(&mut self, name: &str) {
        self.attributes
            .retain(|a| !a.name.eq_ignore_ascii_case(name));
    }

    /// Whether the stream carries `a=rtcp-mux` (RFC 5761): in an offer, RTP and RTCP may share
    /// the RTP port; in an answer, they do.
    pub fn rtcp_mux(&self) -> bool {
        self.attribute("rtcp-mux").is_some()
    }

    /// Adds (once) or removes `a=rtcp-mux`. Any `a=rtcp` is left alone: an offer keeps naming
    /// the separate RTCP port for an answerer that does not multiplex (RFC 5761 §5.1.3).
    pub fn set_rtcp_mux(&mut self, on: bool) {
        match (on, self.rtcp_mux()) {
            (true, false) => self.attributes.push(Attribute::flag("rtcp-mux")),
            (false, true) => self.remove_attributes("rtcp-mux"),
            _ => {}
        }
    }
}

impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl MediaDescription {
    /// Writes the media section (`m=` and its lines), without `core::fmt`'s machinery.
    pub fn write_to<W: fmt::Write + ?Sized>(&self, f: &mut W) -> fmt::Result {
        f.write_str("m=")?;
        f.write_str(&self.media)?;
        f.write_str(" ")?;
        write_decimal(f, self.port.into())?;
        if let Some(n) = self.port_count {
            f.write_str("/")?;
            write_decimal(f, n.into())?;
        }
        f.write_str(" ")?;
        f.write_str(&self.proto)?;
        for fmt in &self.formats {
            f.write_str(" ")?;
            f.write_str(fmt)?;
        }
        f.write_str("\r\n")?;
        let extras = |kind: char| self.extra.iter().filter(move |l| l.kind == kind);
        for l in extras('i') {
            write_line(f, 'i', &l.value)?;
        }
        if let Some(c) = &self.connection {
            write_connection(f, c)?;
        }
        for l in extras('c') {
            write_line(f, 'c', &l.value)?;
        }
        for b in &self.bandwidths {
            write_line(f, 'b', b)?;
        }
        for l in extras('k') {
            write_line(f, 'k', &l.value)?;
        }
        for l in self.extra.iter().filter(|l| Self::extra_rank(l.kind) == 3) {
            write_line(f, l.kind, &l.value)?;
        }
        for a in &self.attributes {
            write_attribute(f, a)?;
        }
        Ok(())
    }
}
