//! Header fields (RFC 3261 §7.3, §20, §25): names with their compact forms, the typed values
//! the core works with (Via, name-addr, CSeq, Contact …), the ordered header list of a message,
//! and the lexical helpers (tokens, quoted strings, list splitting) they are parsed with.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::fmt;

use super::method::Method;
use super::uri::{self, Host, Params, Uri};
use crate::checked;

/// Why a header value was refused; used as the reason phrase of a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HeaderError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, HeaderError> {
    Err(HeaderError(msg.into()))
}

// Built at compile time: an index out of range here fails the build, not a request.
#[allow(clippy::indexing_slicing)]
const TOKEN_TABLE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
};

/// `token` characters of RFC 3261 §25.1.
#[inline]
pub fn is_token_char(b: u8) -> bool {
    TOKEN_TABLE.get(usize::from(b)).copied().unwrap_or(false)
}

/// Position of a byte in a short string: a plain loop beats a vectorised search at header
/// lengths.
#[inline]
pub fn find_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().position(|x| x == b)
}

/// `s.split_once(b)` for an ASCII byte `b`, with the plain loop of [`find_byte`] (the
/// pattern searcher behind `split_once(char)` costs more at header lengths).
#[inline]
pub fn split_once_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = find_byte(s, b)?;
    Some((checked::head(s, i), checked::tail(s, i + 1)))
}

#[inline]
pub fn rfind_byte(s: &str, b: u8) -> Option<usize> {
    s.bytes().rposition(|x| x == b)
}

#[inline]
pub fn has_byte(s: &str, b: u8) -> bool {
    s.bytes().any(|x| x == b)
}

/// Trims SP and HTAB (not other white space) from both ends, byte-wise.
#[inline]
pub fn trim_ws(s: &str) -> &str {
    trim_ws_end(trim_ws_start(s))
}

#[inline]
pub fn trim_ws_start(s: &str) -> &str {
    let n = s.bytes().take_while(|b| is_ws(*b)).count();
    checked::tail(s, n)
}

#[inline]
pub fn trim_ws_end(s: &str) -> &str {
    let n = s.bytes().rev().take_while(|b| is_ws(*b)).count();
    checked::head(s, s.len() - n)
}

/// Whether `s` holds SP or HTAB.
#[inline]
pub fn has_ws(s: &str) -> bool {
    s.bytes().any(is_ws)
}

pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

#[inline]
fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits a header value at top-level commas (not inside quotes or `<…>`), trimming each part.
pub fn split_list(value: &str) -> Result<Vec<&str>, HeaderError> {
    list_parts(value).map(Iterator::collect)
}

/// The parts of a list header value as [`split_list`] cuts them. The usual value has one
/// element, and that one comes without a `Vec` (the parser splits every Via, Contact, Route
/// and Record-Route line: one allocation each, issue 22).
#[derive(Debug)]
pub enum ListParts<'a> {
    One(std::iter::Once<&'a str>),
    Many(std::vec::IntoIter<&'a str>),
}

impl<'a> Iterator for ListParts<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match self {
            ListParts::One(one) => one.next(),
            ListParts::Many(many) => many.next(),
        }
    }
}

/// [`split_list`] as an iterator; see [`ListParts`].
pub fn list_parts(value: &str) -> Result<ListParts<'_>, HeaderError> {
    // Fast path: no comma or quote means a single element (vector searches: a byte loop
    // over the value was ~420 instructions a line).
    let b = value.as_bytes();
    if memchr::memchr2(b',', b'"', b).is_none() {
        if memchr::memchr_iter(b'<', b).count() != memchr::memchr_iter(b'>', b).count() {
            return err("unterminated <");
        }
        return Ok(ListParts::One(std::iter::once(value)));
    }
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut in_angle = false;
    while i < b.len() {
        match checked::byte(b, i) {
            b'"' if !in_angle => {
                i += 1;
                loop {
                    match b.get(i) {
                        None => return err("unterminated quoted string"),
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => {
                parts.push(trim_ws(checked::sub(value, start, i)));
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if in_angle {
        return err("unterminated <");
    }
    parts.push(trim_ws(checked::tail(value, start)));
    Ok(ListParts::Many(parts.into_iter()))
}

/// Parses `;name[=value]` generic parameters (RFC 3261 `generic-param`), the input starting at
/// the first `;` (leading white space allowed). Values may be tokens, hosts (IPv6 included) or
/// quoted strings (kept with their quotes).
pub fn parse_params(s: &str) -> Result<Params, HeaderError> {
    // Names and values are taken as slices of `s` first (the first four on the stack) and
    // made owned once their number is known, so that the list is allocated once at its size:
    // growing it from one slot cost a second allocation and a copy for the two or three
    // parameters of the usual Via (issue 22).
    let mut first: [(&str, Option<&str>); 4] = [("", None); 4];
    let mut more: Vec<(&str, Option<&str>)> = Vec::new();
    let mut n = 0;
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while is_ws(checked::byte(b, i)) {
            i += 1;
        }
        if i >= b.len() {
            let mut params = Params::with_capacity(n);
            for (name, value) in first.iter().take(n).chain(more.iter()) {
                params.push_raw(name, value.map(str::to_owned));
            }
            return Ok(params);
        }
        let c = checked::byte(b, i);
        if c != b';' {
            return err(format!("unexpected '{}' in parameters", c as char));
        }
        i += 1;
        while is_ws(checked::byte(b, i)) {
            i += 1;
        }
        let ns = i;
        while is_token_char(checked::byte(b, i)) {
            i += 1;
        }
        if ns == i {
            return err("empty parameter name");
        }
        let name = checked::sub(s, ns, i);
        while is_ws(checked::byte(b, i)) {
            i += 1;
        }
        let mut value = None;
        if checked::byte(b, i) == b'=' {
            i += 1;
            while is_ws(checked::byte(b, i)) {
                i += 1;
            }
            let vs = i;
            if checked::byte(b, i) == b'"' {
                i = quoted_end(b, i)?;
            } else {
                while is_token_char(checked::byte(b, i))
                    || matches!(checked::byte(b, i), b':' | b'[' | b']')
                {
                    i += 1;
                }
                if vs == i {
                    return err(format!("empty value for parameter {name}"));
                }
            }
            value = Some(checked::sub(s, vs, i));
        }
        match first.get_mut(n) {
            Some(slot) => *slot = (name, value),
            None => more.push((name, value)),
        }
        n += 1;
    }
}

/// Index just past the closing quote of the quoted string starting at `start`.
pub(super) fn quoted_end(b: &[u8], start: usize) -> Result<usize, HeaderError> {
    let mut i = start + 1;
    loop {
        match b.get(i) {
            None => return err("unterminated quoted string"),
            Some(b'\\') => {
                if i + 1 >= b.len() {
                    return err("unterminated quoted string");
                }
                i += 2;
            }
            Some(b'"') => return Ok(i + 1),
            Some(_) => i += 1,
        }
    }
}

/// Removes the quotes and backslash escapes of a quoted string; other text is returned as is.
pub fn unquote(s: &str) -> String {
    match s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => s.to_owned(),
    }
}

/// Quotes a string for use as a quoted-string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A Via header value (one hop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Transport, upper-cased (`UDP`, `TCP`, `TLS`, `SCTP`, or anything else received). The
    /// usual three are static: no allocation per Via parsed, built or cloned (issue 22).
    pub transport: std::borrow::Cow<'static, str>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(s: &str) -> Result<Via, HeaderError> {
        // sent-protocol = name SLASH version SLASH transport, LWS allowed around the slashes.
        let mut rest = s;
        let mut parts = [""; 3];
        for (n, part) in parts.iter_mut().enumerate() {
            rest = trim_ws_start(rest);
            let end = rest
                .bytes()
                .position(|b| !is_token_char(b))
                .unwrap_or(rest.len());
            *part = checked::head(rest, end);
            rest = trim_ws_start(checked::tail(rest, end));
            if n < 2 {
                rest = match rest.strip_prefix('/') {
                    Some(r) => r,
                    None => return err("malformed Via sent-protocol"),
                };
            }
        }
        let [protocol, version, transport] = parts;
        if !protocol.eq_ignore_ascii_case("SIP") {
            return err("Via protocol is not SIP");
        }
        if version != "2.0" {
            return err("Via protocol version is not 2.0");
        }
        if transport.is_empty() {
            return err("Via without transport");
        }
        let transport = match transport {
            "UDP" | "udp" => "UDP".into(),
            "TCP" | "tcp" => "TCP".into(),
            "TLS" | "tls" => "TLS".into(),
            other => other.to_ascii_uppercase().into(),
        };
        // sent-by up to ';' (or end); LWS is only allowed around the COLON of host:port.
        let end = rest.bytes().position(|b| b == b';').unwrap_or(rest.len());
        let raw_sent_by = trim_ws_end(checked::head(rest, end));
        let spaced;
        let sent_by = if has_ws(raw_sent_by) {
            if !has_byte(raw_sent_by, b':') {
                return err("malformed Via sent-by");
            }
            spaced = raw_sent_by.replace([' ', '\t'], "");
            spaced.as_str()
        } else {
            raw_sent_by
        };
        let (host, port) =
            uri::parse_hostport(sent_by).map_err(|e| HeaderError(format!("Via: {e}")))?;
        let params =
            parse_params(checked::tail(rest, end)).map_err(|e| HeaderError(format!("Via: {e}")))?;
        if let Some(b) = params.value("branch") {
            if !is_token(b) {
                return err("Via branch is not a token");
            }
        }
        Ok(Via {
            transport,
            host,
            port,
            params,
        })
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// The `received` parameter as an address, if present and valid.
    pub fn received(&self) -> Option<std::net::IpAddr> {
        let r = self.params.value("received")?;
        let r = r.trim_start_matches('[').trim_end_matches(']');
        r.parse()
            .ok()
            .or_else(|| uri::parse_ipv6(r).ok().map(std::net::IpAddr::V6))
    }

    /// `Some(None)` when `rport` is present without a value (a request asking for it),
    /// `Some(Some(p))` when filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// Whether the branch carries the RFC 3261 magic cookie.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

impl Via {
    pub fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        w.write_str("SIP/2.0/")?;
        w.write_str(&self.transport)?;
        w.write_str(" ")?;
        self.host.write_to(w)?;
        if let Some(p) = self.port {
            w.write_str(":")?;
            uri::write_decimal(w, p.into())?;
        }
        self.params.write_to(w)
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// A `name-addr` or `addr-spec` with header parameters: From, To, Contact, Route, Record-Route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NameAddr {
    /// The display name as written (quoted strings keep their quotes).
    pub display: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display: None,
            uri,
            params: Params::new(),
        }
    }

    pub fn parse(s: &str) -> Result<NameAddr, HeaderError> {
        let s = trim_ws(s);
        let b = s.as_bytes();
        let mut i = 0;
        let display;
        let uri_str;
        if b.first() == Some(&b'"') {
            let end = quoted_end(b, 0)?;
            display = Some(checked::head(s, end).to_owned());
            i = end;
            while is_ws(checked::byte(b, i)) {
                i += 1;
            }
            if b.get(i) != Some(&b'<') {
                return err("display name not followed by <URI>");
            }
        } else if let Some(lt) = find_byte(s, b'<') {
            let name = trim_ws(checked::head(s, lt));
            // Unquoted display name: tokens separated by LWS. `name` is trimmed, so it is
            // that when every byte is a token character or white space (a byte loop: splitting
            // at a char set cost ~300 instructions a name, issue 22).
            if !name.bytes().all(|b| is_token_char(b) || is_ws(b)) {
                return err("invalid character in display name");
            }
            display = if name.is_empty() {
                None
            } else {
                Some(name.to_owned())
            };
            i = lt;
        } else {
            display = None;
        }
        let params_start;
        if b.get(i) == Some(&b'<') {
            let close = find_byte(checked::tail(s, i), b'>')
                .map(|c| c + i)
                .ok_or_else(|| HeaderError("missing > after URI".into()))?;
            uri_str = checked::sub(s, i + 1, close);
            params_start = close + 1;
        } else {
            // addr-spec: ends at the first ';' (the rest are header parameters); must not hold
            // '?', ',' or white space (RFC 3261 §20.10).
            let end = find_byte(s, b';').unwrap_or(s.len());
            uri_str = trim_ws_end(checked::head(s, end));
            if uri_str
                .bytes()
                .any(|b| matches!(b, b'?' | b',' | b' ' | b'\t'))
            {
                return err("URI with headers, commas or spaces must be enclosed in <>");
            }
            params_start = end;
        }
        if has_ws(uri_str) {
            return err("white space inside URI");
        }
        let uri = Uri::parse(uri_str).map_err(|e| HeaderError(e.0.to_owned()))?;
        let params = parse_params(checked::tail(s, params_start))?;
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    pub fn set_tag(&mut self, tag: &str) {
        self.params.set("tag", Some(tag));
    }
}

impl NameAddr {
    pub fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        if let Some(d) = &self.display {
            w.write_str(d)?;
            w.write_str(" ")?;
        }
        w.write_str("<")?;
        self.uri.write_to(w)?;
        w.write_str(">")?;
        self.params.write_to(w)
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// A Contact value: `*` or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact {
    Star,
    Addr(NameAddr),
}

impl Contact {
    pub fn addr(&self) -> Option<&NameAddr> {
        match self {
            Contact::Star => None,
            Contact::Addr(a) => Some(a),
        }
    }
}

impl Contact {
    pub fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        match self {
            Contact::Star => w.write_str("*"),
            Contact::Addr(a) => a.write_to(w),
        }
    }
}

impl fmt::Display for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// The CSeq header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(s: &str) -> Result<CSeq, HeaderError> {
        // Exactly two words separated by SP/HTAB, found with byte loops (a `split` over a
        // char set cost ~390 instructions a CSeq, issue 22).
        let s = trim_ws(s);
        let end = s.bytes().position(is_ws).unwrap_or(s.len());
        let (num, method) = (checked::head(s, end), trim_ws_start(checked::tail(s, end)));
        if num.is_empty() || method.is_empty() || has_ws(method) {
            return err("malformed CSeq");
        }
        if !num.bytes().all(|b| b.is_ascii_digit()) || num.len() > 10 {
            return err("CSeq number is not a 32-bit integer");
        }
        let seq = num
            .parse::<u32>()
            .map_err(|_| HeaderError("CSeq number is not a 32-bit integer".into()))?;
        let method =
            Method::parse(method).ok_or_else(|| HeaderError("malformed CSeq method".into()))?;
        Ok(CSeq { seq, method })
    }
}

impl CSeq {
    pub fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        uri::write_decimal(w, self.seq.into())?;
        w.write_str(" ")?;
        w.write_str(self.method.as_str())
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

/// Header names pasarela treats specially; everything else is [`Header::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Name {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Contact,
    Route,
    RecordRoute,
    ContentLength,
    ContentType,
    Expires,
    MinExpires,
}

impl Name {
    pub fn as_str(self) -> &'static str {
        match self {
            Name::Via => "Via",
            Name::From => "From",
            Name::To => "To",
            Name::CallId => "Call-ID",
            Name::CSeq => "CSeq",
            Name::MaxForwards => "Max-Forwards",
            Name::Contact => "Contact",
            Name::Route => "Route",
            Name::RecordRoute => "Record-Route",
            Name::ContentLength => "Content-Length",
            Name::ContentType => "Content-Type",
            Name::Expires => "Expires",
            Name::MinExpires => "Min-Expires",
        }
    }

    /// Recognises a header name (case-insensitive, compact forms included). The length and
    /// the first letter leave at most one candidate, compared once: this runs for every header
    /// line received (issue 22; trying each name of the first letter cost ~125 instructions a
    /// line).
    pub fn lookup(name: &str) -> Option<Name> {
        let b = name.as_bytes();
        let first = b.first()?.to_ascii_lowercase();
        let candidate = match (b.len(), first) {
            (1, b'v') => return Some(Name::Via),
            (1, b'f') => return Some(Name::From),
            (1, b't') => return Some(Name::To),
            (1, b'i') => return Some(Name::CallId),
            (1, b'm') => return Some(Name::Contact),
            (1, b'l') => return Some(Name::ContentLength),
            (1, b'c') => return Some(Name::ContentType),
            (2, b't') => Name::To,
            (3, b'v') => Name::Via,
            (4, b'f') => Name::From,
            (4, b'c') => Name::CSeq,
            (5, b'r') => Name::Route,
            // Call-ID and Contact differ in their third letter.
            (7, b'c') => match b.get(2).map(u8::to_ascii_lowercase) {
                Some(b'l') => Name::CallId,
                Some(b'n') => Name::Contact,
                _ => return None,
            },
            (7, b'e') => Name::Expires,
            (11, b'm') => Name::MinExpires,
            (12, b'm') => Name::MaxForwards,
            (12, b'c') => Name::ContentType,
            (12, b'r') => Name::RecordRoute,
            (14, b'c') => Name::ContentLength,
            _ => return None,
        };
        candidate
            .as_str()
            .eq_ignore_ascii_case(name)
            .then_some(candidate)
    }
}

/// The name of a header not modelled by [`Header`]: common names are static (no allocation
/// per received header), others are owned.
pub type HeaderName = std::borrow::Cow<'static, str>;

const COMMON_NAMES: &[&str] = &[
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authorization",
    "Call-Info",
    "Content-Disposition",
    "Content-Encoding",
    "Date",
    "Event",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "Reason",
    "Refer-To",
    "Referred-By",
    "Remote-Party-ID",
    "Replaces",
    "Require",
    "Server",
    "Session-Expires",
    "Subject",
    "Supported",
    "Timestamp",
    "Unsupported",
    "User-Agent",
    "Warning",
    "WWW-Authenticate",
    "X-Asterisk-HangupCause",
];

/// The [`HeaderName`] for a received name (compact forms expanded).
pub fn header_name(name: &str) -> HeaderName {
    let name = expand_compact(name);
    match COMMON_NAMES
        .iter()
        .find(|c| c.len() == name.len() && **c == name)
    {
        Some(c) => std::borrow::Cow::Borrowed(c),
        None => std::borrow::Cow::Owned(name.to_owned()),
    }
}

/// The long form of a compact header name of another kind (RFC 3261 §7.3.3 and extensions).
pub fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match checked::byte(name.as_bytes(), 0).to_ascii_lowercase() {
        b'e' => "Content-Encoding",
        b's' => "Subject",
        b'k' => "Supported",
        b'o' => "Event",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'u' => "Allow-Events",
        b'x' => "Session-Expires",
        b'a' => "Accept-Contact",
        b'j' => "Reject-Contact",
        b'd' => "Request-Disposition",
        b'y' => "Identity",
        b'n' => "Identity-Info",
        _ => name,
    }
}

/// One header field. List-valued headers (Via, Contact, Route, Record-Route) hold one value
/// per entry, whether they arrived comma-separated or on separate lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Header {
    Via(Via),
    From(NameAddr),
    To(NameAddr),
    CallId(String),
    CSeq(CSeq),
    MaxForwards(u32),
    Contact(Contact),
    Route(NameAddr),
    RecordRoute(NameAddr),
    ContentLength(u32),
    ContentType(String),
    Expires(u32),
    MinExpires(u32),
    /// Any other header, with its name (compact forms expanded) and raw value.
    Other(HeaderName, String),
}

impl Header {
    pub fn name(&self) -> &str {
        match self {
            Header::Via(_) => "Via",
            Header::From(_) => "From",
            Header::To(_) => "To",
            Header::CallId(_) => "Call-ID",
            Header::CSeq(_) => "CSeq",
            Header::MaxForwards(_) => "Max-Forwards",
            Header::Contact(_) => "Contact",
            Header::Route(_) => "Route",
            Header::RecordRoute(_) => "Record-Route",
            Header::ContentLength(_) => "Content-Length",
            Header::ContentType(_) => "Content-Type",
            Header::Expires(_) => "Expires",
            Header::MinExpires(_) => "Min-Expires",
            Header::Other(n, _) => n,
        }
    }

    fn known(&self) -> Option<Name> {
        Some(match self {
            Header::Via(_) => Name::Via,
            Header::From(_) => Name::From,
            Header::To(_) => Name::To,
            Header::CallId(_) => Name::CallId,
            Header::CSeq(_) => Name::CSeq,
            Header::MaxForwards(_) => Name::MaxForwards,
            Header::Contact(_) => Name::Contact,
            Header::Route(_) => Name::Route,
            Header::RecordRoute(_) => Name::RecordRoute,
            Header::ContentLength(_) => Name::ContentLength,
            Header::ContentType(_) => Name::ContentType,
            Header::Expires(_) => Name::Expires,
            Header::MinExpires(_) => Name::MinExpires,
            Header::Other(..) => return None,
        })
    }

    /// Writes `Name: value\r\n`.
    /// Writes `Name: value\r\n` (pieces and hand-formatted numbers, no `write!`: this runs for
    /// every header of every message sent).
    pub fn write_to(&self, out: &mut String) {
        out.push_str(self.name());
        out.push_str(": ");
        // Writing to a String cannot fail.
        let _ = match self {
            Header::Via(v) => v.write_to(out),
            Header::From(a) | Header::To(a) | Header::Route(a) | Header::RecordRoute(a) => {
                a.write_to(out)
            }
            Header::CallId(c) | Header::ContentType(c) | Header::Other(_, c) => {
                out.push_str(c);
                Ok(())
            }
            Header::CSeq(c) => c.write_to(out),
            Header::Contact(c) => c.write_to(out),
            Header::MaxForwards(n)
            | Header::ContentLength(n)
            | Header::Expires(n)
            | Header::MinExpires(n) => uri::write_decimal(out, (*n).into()),
        };
        out.push_str("\r\n");
    }
}

/// The ordered header fields of a message, with typed accessors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

macro_rules! first_of {
    ($fn:ident, $variant:ident, $ty:ty) => {
        pub fn $fn(&self) -> Option<&$ty> {
            self.0.iter().find_map(|h| match h {
                Header::$variant(v) => Some(v),
                _ => None,
            })
        }
    };
}

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::with_capacity(24))
    }

    pub fn push(&mut self, h: Header) {
        self.0.push(h);
    }

    first_of!(via, Via, Via);
    first_of!(from, From, NameAddr);
    first_of!(to, To, NameAddr);
    first_of!(cseq, CSeq, CSeq);

    pub fn call_id(&self) -> Option<&str> {
        self.0.iter().find_map(|h| match h {
            Header::CallId(c) => Some(c.as_str()),
            _ => None,
        })
    }

    pub fn to_mut(&mut self) -> Option<&mut NameAddr> {
        self.0.iter_mut().find_map(|h| match h {
            Header::To(v) => Some(v),
            _ => None,
        })
    }

    pub fn via_mut(&mut self) -> Option<&mut Via> {
        self.0.iter_mut().find_map(|h| match h {
            Header::Via(v) => Some(v),
            _ => None,
        })
    }

    pub fn vias(&self) -> impl Iterator<Item = &Via> {
        self.0.iter().filter_map(|h| match h {
            Header::Via(v) => Some(v),
            _ => None,
        })
    }

    pub fn contacts(&self) -> impl Iterator<Item = &Contact> {
        self.0.iter().filter_map(|h| match h {
            Header::Contact(v) => Some(v),
            _ => None,
        })
    }

    pub fn routes(&self) -> impl Iterator<Item = &NameAddr> {
        self.0.iter().filter_map(|h| match h {
            Header::Route(v) => Some(v),
            _ => None,
        })
    }

    pub fn record_routes(&self) -> impl Iterator<Item = &NameAddr> {
        self.0.iter().filter_map(|h| match h {
            Header::RecordRoute(v) => Some(v),
            _ => None,
        })
    }

    pub fn max_forwards(&self) -> Option<u32> {
        self.0.iter().find_map(|h| match h {
            Header::MaxForwards(v) => Some(*v),
            _ => None,
        })
    }

    pub fn expires(&self) -> Option<u32> {
        self.0.iter().find_map(|h| match h {
            Header::Expires(v) => Some(*v),
            _ => None,
        })
    }

    pub fn content_type(&self) -> Option<&str> {
        self.0.iter().find_map(|h| match h {
            Header::ContentType(v) => Some(v.as_str()),
            _ => None,
        })
    }

    /// The first value of a header not modelled by [`Header`] (case-insensitive name).
    pub fn get<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.get_all(name).next()
    }

    /// Every value of a header not modelled by [`Header`], one per header line.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter_map(move |h| match h {
            Header::Other(n, v) if n.eq_ignore_ascii_case(name) => Some(v.as_str()),
            _ => None,
        })
    }

    /// The comma-separated tokens of a list header such as Require or Supported, over all lines.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .map(trim_ws)
            .filter(|t| !t.is_empty())
    }

    /// Removes every header of the given name (known or other).
    pub fn remove(&mut self, name: &str) {
        let known = Name::lookup(name);
        self.0.retain(|h| match (known, h.known()) {
            (Some(k), Some(hk)) => k != hk,
            _ => !h.name().eq_ignore_ascii_case(name),
        });
    }

    /// Replaces every `Other` header of that name with one value.
    pub fn set_other(&mut self, name: &'static str, value: impl Into<String>) {
        self.remove(name);
        self.0.push(Header::Other(name.into(), value.into()));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Header> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_and_params() {
        let v = Via::parse("SIP  /   2.0 / UDP 192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v =
            Via::parse("SIP/2.0/TCP [2001:db8::9:1];branch=z9hG4bKas3;received=[2001:db8::9:255]")
                .unwrap();
        assert_eq!(v.received(), Some("2001:db8::9:255".parse().unwrap()));
        let v = Via::parse("SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1").unwrap();
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.port, Some(5060));
        assert!(v.has_rfc3261_branch());
        assert!(Via::parse("SIP/2.0 UDP host").is_err());
        assert!(Via::parse("SIP/3.0/UDP host").is_err());
        let v =
            Via::parse("SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3")
                .unwrap();
        assert!(v.received().is_some());
    }

    #[test]
    fn name_addr_forms() {
        let a =
            NameAddr::parse("\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>;tag=98asjd8")
                .unwrap();
        assert_eq!(a.tag(), Some("98asjd8"));
        assert_eq!(a.display.as_deref(), Some("\"J Rosenberg \\\\\\\"\""));
        let a = NameAddr::parse("\"caller\"<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.tag(), Some("323"));
        let a = NameAddr::parse("sip:100@office.test;tag=abc").unwrap();
        assert_eq!(a.tag(), Some("abc"));
        assert!(a.uri.as_sip().unwrap().params.is_empty());
        let a = NameAddr::parse("Alice Smith <sip:a@b>").unwrap();
        assert_eq!(a.display.as_deref(), Some("Alice Smith"));
        assert!(NameAddr::parse("Bell, Alexander <sip:a.g.bell@bell-tel.com>").is_err());
        assert!(NameAddr::parse("\"Mr. J. User <sip:j.user@example.com>").is_err());
        assert!(NameAddr::parse("sip:user@example.com?Route=%3Csip:example.com%3E").is_err());
        assert!(NameAddr::parse("sip:user@exa mple.com").is_err());
    }

    #[test]
    fn lists_and_cseq() {
        assert_eq!(
            split_list("<sip:a@b;x=1,2>, \"x,y\" <sip:c@d>")
                .unwrap()
                .len(),
            2
        );
        assert!(split_list("\"abc").is_err());
        assert_eq!(CSeq::parse("4711 INVITE").unwrap().seq, 4711);
        assert!(CSeq::parse("36893488147419103232 INVITE").is_err());
        assert!(CSeq::parse("1").is_err());
        assert!(CSeq::parse("1 INVITE x").is_err());
        // White space as the old split on SP/HTAB took it: around and between the two words.
        let c = CSeq::parse(" \t4711 \t INVITE\t ").unwrap();
        assert_eq!((c.seq, c.method), (4711, Method::Invite));
        for bad in ["", " ", "\t\t", "1\tINVITE\tx", "INVITE", " 1 "] {
            assert!(CSeq::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// The lookup as it was before it went by length: every name of the first letter tried.
    fn lookup_by_trying_each(name: &str) -> Option<Name> {
        const ALL: [Name; 13] = [
            Name::Via,
            Name::From,
            Name::To,
            Name::CallId,
            Name::CSeq,
            Name::MaxForwards,
            Name::Contact,
            Name::Route,
            Name::RecordRoute,
            Name::ContentLength,
            Name::ContentType,
            Name::Expires,
            Name::MinExpires,
        ];
        if name.len() == 1 {
            return match name.as_bytes()[0].to_ascii_lowercase() {
                b'v' => Some(Name::Via),
                b'f' => Some(Name::From),
                b't' => Some(Name::To),
                b'i' => Some(Name::CallId),
                b'm' => Some(Name::Contact),
                b'l' => Some(Name::ContentLength),
                b'c' => Some(Name::ContentType),
                _ => None,
            };
        }
        ALL.into_iter()
            .find(|n| n.as_str().eq_ignore_ascii_case(name))
    }

    #[test]
    fn lookup_finds_what_trying_each_name_finds() {
        let mut names: Vec<String> = Vec::new();
        for n in [
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Max-Forwards",
            "Contact",
            "Route",
            "Record-Route",
            "Content-Length",
            "Content-Type",
            "Expires",
            "Min-Expires",
        ] {
            names.push(n.to_owned());
            names.push(n.to_ascii_lowercase());
            names.push(n.to_ascii_uppercase());
            // One letter changed, one added, one dropped: near misses of every length.
            for i in 0..n.len() {
                let mut b = n.as_bytes().to_vec();
                b[i] = if b[i] == b'x' { b'y' } else { b'x' };
                names.push(String::from_utf8(b).unwrap());
                let mut b = n.as_bytes().to_vec();
                b.remove(i);
                names.push(String::from_utf8(b).unwrap());
                let mut b = n.as_bytes().to_vec();
                b.insert(i, b'a');
                names.push(String::from_utf8(b).unwrap());
            }
        }
        for c in 0u8..=255 {
            if c.is_ascii() {
                names.push((c as char).to_string());
            }
        }
        names.extend(
            [
                "", "Cal-ID", "CallID", "Contacts", "Coll-ID", "Conlact", "X-Foo", "é", "Tó",
            ]
            .map(str::to_owned),
        );
        // Every header name in the SIP fuzz seeds (RFC 4475 torture messages and others).
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/sip_message");
        let mut seeds = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap())
                .into_owned();
            seeds += 1;
            for line in text.lines() {
                if let Some((name, _)) = line.split_once(':') {
                    names.push(name.trim_end().to_owned());
                }
            }
        }
        assert!(seeds > 10, "seeds read: {seeds}");
        for n in &names {
            assert_eq!(Name::lookup(n), lookup_by_trying_each(n), "{n:?}");
        }
        assert!(names.iter().filter(|n| Name::lookup(n).is_some()).count() > 100);
    }

    #[test]
    fn list_parts_cut_at_top_level_commas() {
        let cases: [(&str, &[&str]); 6] = [
            ("<sip:a@b>", &["<sip:a@b>"]),
            (
                "<sip:a@b;x=1,2>, \"x,y\" <sip:c@d>",
                &["<sip:a@b;x=1,2>", "\"x,y\" <sip:c@d>"],
            ),
            ("a , b,c", &["a", "b", "c"]),
            ("\"a\\\"b\" <sip:x>", &["\"a\\\"b\" <sip:x>"]),
            (
                "SIP/2.0/UDP h;branch=z9hG4bK1",
                &["SIP/2.0/UDP h;branch=z9hG4bK1"],
            ),
            ("", &[""]),
        ];
        for (v, want) in cases {
            let parts: Vec<&str> = list_parts(v).unwrap().collect();
            assert_eq!(parts, want, "{v}");
            assert_eq!(split_list(v).unwrap(), want, "{v}");
        }
        assert!(matches!(list_parts("<sip:a@b>"), Ok(ListParts::One(_))));
        assert!(list_parts("<sip:a@b").is_err());
        assert!(list_parts("\"abc, d").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(Name::lookup("i"), Some(Name::CallId));
        assert_eq!(Name::lookup("call-id"), Some(Name::CallId));
        assert_eq!(Name::lookup("X-Foo"), None);
        assert_eq!(expand_compact("k"), "Supported");
    }
}
