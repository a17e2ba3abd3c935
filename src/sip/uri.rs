//! SIP, SIPS and tel URIs (RFC 3261 §19.1 and §25, RFC 3966, RFC 5118 for IPv6 references).
//!
//! Parsing is strict about the character sets of each part; the parts are kept in the form
//! they were received (escapes included) so that a URI is serialised exactly as it came.
//! Comparison helpers unescape where RFC 3261 §19.1.4 says escaped and plain forms are equal.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::header::split_once_byte;
use crate::checked;

/// Why a URI was refused. The text is used as the reason phrase of a 400 response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(pub &'static str);

/// A URI as found in a Request-URI or a name-addr.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:` (RFC 3966).
    Tel(TelUri),
    /// Any other absolute URI, kept verbatim (e.g. `mailto:`, `urn:`, `http:`).
    Other { scheme: String, rest: String },
}

/// The `host` part of a SIP URI or a Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, as written.
    Name(String),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
}

/// A list of `;name[=value]` parameters, in the order received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Params(Vec<(ParamName, Option<String>)>);

/// A parameter name: the common ones are static (no allocation per parsed or cloned
/// parameter), others owned. Kept as written (case included).
type ParamName = std::borrow::Cow<'static, str>;

/// The names [`param_name`] keeps static, the most frequent first.
const COMMON_PARAMS: &[&str] = &[
    "tag",
    "branch",
    "rport",
    "received",
    "lr",
    "transport",
    "user",
    "maddr",
    "ttl",
    "method",
    "expires",
    "q",
    "ob",
    "reg-id",
    "+sip.instance",
];

fn param_name(name: &str) -> ParamName {
    // A walk over the list in its order: the usual names come first and are found after one
    // or two length checks (a pick by length first measured slower under callgrind).
    match COMMON_PARAMS
        .iter()
        .find(|c| c.len() == name.len() && **c == name)
    {
        Some(c) => std::borrow::Cow::Borrowed(c),
        None => std::borrow::Cow::Owned(name.to_owned()),
    }
}

/// A parsed `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipUri {
    pub secure: bool,
    /// The user part as received (escapes kept).
    pub user: Option<String>,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
    /// The password and the headers part, which next to no URI has: boxed, so every URI a
    /// held call keeps (in its dialogs and stored messages) is 32 bytes smaller.
    rare: Option<Box<RareParts>>,
}

/// The parts of a SIP URI almost never present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
struct RareParts {
    password: Option<String>,
    /// The `?hname=hvalue&…` part, without the `?`, as received.
    headers: Option<String>,
}

impl RareParts {
    /// `None` when both are absent (no allocation for the usual URI).
    fn boxed(password: Option<String>, headers: Option<String>) -> Option<Box<RareParts>> {
        (password.is_some() || headers.is_some()).then(|| Box::new(RareParts { password, headers }))
    }
}

/// A parsed `tel:` URI: the number and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TelUri {
    pub number: String,
    pub params: Params,
}

impl Params {
    pub fn new() -> Self {
        Params(Vec::new())
    }

    /// The value of a parameter (case-insensitive name). `Some(None)` for a flag such as `lr`.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The value of a parameter that has one.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).flatten()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets (or replaces) a parameter.
    pub fn set(&mut self, name: &str, value: Option<&str>) {
        let value = value.map(str::to_owned);
        if let Some(slot) = self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            slot.1 = value;
        } else {
            self.reserve_first();
            self.0.push((param_name(name), value));
        }
    }

    /// [`Params::set`] with an owned value, moved in rather than copied.
    pub fn set_owned(&mut self, name: &str, value: String) {
        if let Some(slot) = self
            .0
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            slot.1 = Some(value);
        } else {
            self.reserve_first();
            self.0.push((param_name(name), Some(value)));
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v.as_deref()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An empty list with room for `n` parameters (none allocated for 0).
    pub(crate) fn with_capacity(n: usize) -> Self {
        Params(Vec::with_capacity(n))
    }

    pub(crate) fn push_raw(&mut self, name: &str, value: Option<String>) {
        self.reserve_first();
        self.0.push((param_name(name), value));
    }

    /// Gives back the spare room of the list (for parameters kept for a call's life).
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }

    /// Room for exactly one parameter in an empty list: most lists hold one (a tag, a
    /// branch), and a first push would make room for four (48 bytes each), which every
    /// header a held call keeps would carry.
    fn reserve_first(&mut self) {
        if self.0.capacity() == 0 {
            self.0.reserve_exact(1);
        }
    }
}

// Serialisation writes pieces with `write_str` and formats numbers by hand: `write!` with
// arguments (and `Ipv4Addr`'s Display) cost several times more per header, and every message
// pasarela sends is serialised (issue 22). The `Display` impls call these writers.

/// Writes `n` in decimal.
pub fn write_decimal<W: fmt::Write + ?Sized>(w: &mut W, n: u64) -> fmt::Result {
    let mut buf = [b'0'; 20];
    let mut len = 0;
    let mut n = n;
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = buf.get(buf.len() - len..).unwrap_or(b"0");
    w.write_str(std::str::from_utf8(digits).unwrap_or("0"))
}

/// Writes an IPv4 address in dotted-quad form: composed on the stack and written with one
/// `write_str` (a message carries the address in several headers and its SDP; four decimal
/// writes and three separators each were ~13 K instructions per call, issue 22).
pub fn write_ipv4<W: fmt::Write + ?Sized>(w: &mut W, a: Ipv4Addr) -> fmt::Result {
    let mut buf = [0u8; 15];
    let mut len = 0;
    for (k, octet) in a.octets().into_iter().enumerate() {
        if k > 0 {
            push_byte(&mut buf, &mut len, b'.');
        }
        if octet >= 100 {
            push_byte(&mut buf, &mut len, b'0' + octet / 100);
        }
        if octet >= 10 {
            push_byte(&mut buf, &mut len, b'0' + octet / 10 % 10);
        }
        push_byte(&mut buf, &mut len, b'0' + octet % 10);
    }
    let text = buf.get(..len).unwrap_or_default();
    w.write_str(std::str::from_utf8(text).map_err(|_| fmt::Error)?)
}

/// Appends `b` to the first `len` bytes of `buf` (room for the longest address is known).
#[inline]
fn push_byte(buf: &mut [u8], len: &mut usize, b: u8) {
    if let Some(slot) = buf.get_mut(*len) {
        *slot = b;
        *len += 1;
    }
}

impl Params {
    /// Writes `;name[=value]` for each parameter.
    pub fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        for (n, v) in &self.0 {
            w.write_str(";")?;
            w.write_str(n)?;
            if let Some(v) = v {
                w.write_str("=")?;
                w.write_str(v)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl Host {
    pub fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        match self {
            Host::Name(n) => w.write_str(n),
            Host::Ipv4(a) => write_ipv4(w, *a),
            Host::Ipv6(a) => write!(w, "[{a}]"),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl Host {
    /// The address, when the host is a literal IP address.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::Ipv4(a) => Some(IpAddr::V4(*a)),
            Host::Ipv6(a) => Some(IpAddr::V6(*a)),
        }
    }

    /// Case-insensitive comparison for names, exact for addresses.
    pub fn matches(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Name(a), Host::Name(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        }
    }

    pub fn from_ip(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(a) => Host::Ipv4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Host::Ipv4(v4),
                None => Host::Ipv6(a),
            },
        }
    }
}

impl SipUri {
    pub fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        w.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(user) = &self.user {
            w.write_str(user)?;
            if let Some(pw) = self.password() {
                w.write_str(":")?;
                w.write_str(pw)?;
            }
            w.write_str("@")?;
        }
        self.host.write_to(w)?;
        if let Some(port) = self.port {
            w.write_str(":")?;
            write_decimal(w, port.into())?;
        }
        self.params.write_to(w)?;
        if let Some(h) = self.headers() {
            w.write_str("?")?;
            w.write_str(h)?;
        }
        Ok(())
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl fmt::Display for TelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tel:")?;
        f.write_str(&self.number)?;
        self.params.write_to(f)
    }
}

impl Uri {
    pub fn write_to<W: fmt::Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.write_to(w),
            Uri::Tel(t) => {
                w.write_str("tel:")?;
                w.write_str(&t.number)?;
                t.params.write_to(w)
            }
            Uri::Other { scheme, rest } => {
                w.write_str(scheme)?;
                w.write_str(":")?;
                w.write_str(rest)
            }
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl SipUri {
    /// A plain `sip:user@host[:port]` URI.
    pub fn new(user: Option<&str>, host: Host, port: Option<u16>) -> SipUri {
        SipUri {
            secure: false,
            user: user.map(str::to_owned),
            host,
            port,
            params: Params::new(),
            rare: None,
        }
    }

    /// The password of the userinfo (`sip:user:password@host`), as received.
    pub fn password(&self) -> Option<&str> {
        self.rare.as_ref()?.password.as_deref()
    }

    /// The `?hname=hvalue&…` part, without the `?`, as received.
    pub fn headers(&self) -> Option<&str> {
        self.rare.as_ref()?.headers.as_deref()
    }

    pub fn set_password(&mut self, password: Option<String>) {
        let headers = self.rare.take().and_then(|r| r.headers);
        self.rare = RareParts::boxed(password, headers);
    }

    /// Takes the headers part out of the URI.
    pub fn take_headers(&mut self) -> Option<String> {
        let rare = self.rare.take()?;
        let RareParts { password, headers } = *rare;
        self.rare = RareParts::boxed(password, None);
        headers
    }

    pub fn set_headers(&mut self, headers: Option<String>) {
        let password = self.rare.take().and_then(|r| r.password);
        self.rare = RareParts::boxed(password, headers);
    }

    /// The user part with `%HH` escapes decoded (lossy for invalid UTF-8).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user.as_deref().map(unescape)
    }

    /// The `transport` parameter, lower-cased.
    pub fn transport(&self) -> Option<String> {
        self.params
            .value("transport")
            .map(|t| t.to_ascii_lowercase())
    }
}

impl Uri {
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    pub fn as_sip_mut(&mut self) -> Option<&mut SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    /// Parses a URI as it appears in a Request-URI or inside `<…>`.
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        // The usual scheme, as written by nearly everyone, passes every check below.
        if let Some(rest) = s.strip_prefix("sip:") {
            return parse_sip(rest, false).map(Uri::Sip);
        }
        let (scheme, rest) = split_once_byte(s, b':').ok_or(UriError("URI without a scheme"))?;
        if !scheme
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic)
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(UriError("malformed URI scheme"));
        }
        if scheme.eq_ignore_ascii_case("sip") {
            parse_sip(rest, false).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            parse_sip(rest, true).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            parse_tel(rest).map(Uri::Tel)
        } else {
            if rest.is_empty()
                || rest
                    .bytes()
                    .any(|b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>')
            {
                return Err(UriError("malformed absolute URI"));
            }
            Ok(Uri::Other {
                scheme: scheme.to_owned(),
                rest: rest.to_owned(),
            })
        }
    }
}

/// Character classes of RFC 3261 §25.1, one bit each, so a URI part is checked with one table
/// look-up per byte.
const UNRESERVED: u8 = 1;
pub(super) const USER: u8 = 2;
pub(super) const PASSWORD: u8 = 4;
pub(super) const PARAM: u8 = 8;
pub(super) const HEADER: u8 = 16;

// Built at compile time: an index out of range here fails the build, not a request.
#[allow(clippy::indexing_slicing)]
const CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let unreserved = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            );
        let mut c = 0;
        if unreserved {
            c = UNRESERVED | USER | PASSWORD | PARAM | HEADER;
        }
        if matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            c |= USER;
        }
        if matches!(b, b'&' | b'=' | b'+' | b'$' | b',') {
            c |= PASSWORD;
        }
        if matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            c |= PARAM;
        }
        if matches!(
            b,
            b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$' | b'=' | b'&'
        ) {
            c |= HEADER;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Checks `s` against a character class where `%HH` escapes are also allowed.
pub(super) fn check_chars(s: &str, class: u8) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
            continue;
        }
        if CLASSES.get(usize::from(c)).copied().unwrap_or(0) & class == 0 {
            return false;
        }
        i += 1;
    }
    true
}

fn parse_sip(rest: &str, secure: bool) -> Result<SipUri, UriError> {
    // '@' can only appear in the userinfo (params and headers have no unescaped '@').
    let (userinfo, hostpart) = match split_once_byte(rest, b'@') {
        Some((ui, host)) => (Some(ui), host),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => {
            // The password follows the first ':' in userinfo; a telephone-subscriber user has no ':'.
            let (u, p) = match split_once_byte(ui, b':') {
                Some((u, p)) => (u, Some(p)),
                None => (ui, None),
            };
            if u.is_empty() {
                return Err(UriError("empty user part in URI"));
            }
            if !check_chars(u, USER) {
                return Err(UriError("invalid character in URI user part"));
            }
            if let Some(p) = p {
                if !check_chars(p, PASSWORD) {
                    return Err(UriError("invalid character in URI password"));
                }
            }
            (Some(u.to_owned()), p.map(str::to_owned))
        }
    };
    let (hostport, after) = split_hostport(hostpart)?;
    let (host, port) = parse_hostport(hostport)?;
    let (params_str, headers) = match split_once_byte(after, b'?') {
        Some((p, h)) => (p, Some(h)),
        None => (after, None),
    };
    // One ';' per parameter (a URI parameter has no quoted value): the list is allocated once
    // at its size, not grown.
    let mut params = Params::with_capacity(count_byte(params_str, b';'));
    if !params_str.is_empty() {
        // params_str starts with ';'
        for p in checked::tail(params_str, 1).split(';') {
            let (n, v) = match split_once_byte(p, b'=') {
                Some((n, v)) => (n, Some(v)),
                None => (p, None),
            };
            if n.is_empty() || !check_chars(n, PARAM) {
                return Err(UriError("invalid URI parameter"));
            }
            if let Some(v) = v {
                if v.is_empty() || !check_chars(v, PARAM) {
                    return Err(UriError("invalid URI parameter value"));
                }
            }
            params.push_raw(n, v.map(str::to_owned));
        }
    }
    if let Some(h) = headers {
        if h.is_empty() || !check_chars(h, HEADER) {
            return Err(UriError("invalid URI headers"));
        }
    }
    Ok(SipUri {
        secure,
        user,
        host,
        port,
        params,
        rare: RareParts::boxed(password, headers.map(str::to_owned)),
    })
}

/// Splits `host[:port]` from what follows (`;params` or `?headers`).
fn split_hostport(s: &str) -> Result<(&str, &str), UriError> {
    if s.starts_with('[') {
        let close = crate::sip::header::find_byte(s, b']')
            .ok_or(UriError("unterminated IPv6 reference in URI"))?;
        let tail = checked::tail(s, close + 1);
        let end = tail
            .bytes()
            .position(|b| b == b';' || b == b'?')
            .map_or(s.len(), |i| close + 1 + i);
        checked::cut(s, end, 0).ok_or(UriError("malformed IPv6 reference in URI"))
    } else {
        let end = s
            .bytes()
            .position(|b| b == b';' || b == b'?')
            .unwrap_or(s.len());
        checked::cut(s, end, 0).ok_or(UriError("malformed URI"))
    }
}

/// How many times `b` occurs in `s` (a loop the compiler vectorises; short strings).
#[inline]
pub(crate) fn count_byte(s: &str, b: u8) -> usize {
    s.bytes().filter(|x| *x == b).count()
}

/// Parses `host[:port]` (also used for Via sent-by).
pub fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), UriError> {
    if s.is_empty() {
        return Err(UriError("empty host"));
    }
    let (host_str, port_str) = if s.starts_with('[') {
        let close = crate::sip::header::find_byte(s, b']')
            .ok_or(UriError("unterminated IPv6 reference"))?;
        let (reference, tail) =
            checked::cut(s, close + 1, 0).ok_or(UriError("malformed IPv6 reference"))?;
        let port = if tail.is_empty() {
            None
        } else if let Some(p) = tail.strip_prefix(':') {
            Some(p)
        } else {
            return Err(UriError("junk after IPv6 reference"));
        };
        (reference, port)
    } else {
        match crate::sip::header::rfind_byte(s, b':')
            .map(|i| (checked::head(s, i), checked::tail(s, i + 1)))
        {
            Some((host, port)) => {
                if crate::sip::header::has_byte(host, b':') {
                    return Err(UriError("IPv6 address must be enclosed in []"));
                }
                (host, Some(port))
            }
            None => (s, None),
        }
    };
    let port = match port_str {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 {
                return Err(UriError("invalid port"));
            }
            // Up to five digits, summed by hand (`str::parse` cost ~80 instructions a port).
            let mut n: u32 = 0;
            for b in p.bytes() {
                if !b.is_ascii_digit() {
                    return Err(UriError("invalid port"));
                }
                n = n * 10 + u32::from(b - b'0');
            }
            Some(u16::try_from(n).map_err(|_| UriError("port out of range"))?)
        }
    };
    Ok((parse_host(host_str)?, port))
}

/// Parses a host: a domain name, an IPv4 address or a bracketed IPv6 reference.
pub fn parse_host(s: &str) -> Result<Host, UriError> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or(UriError("unterminated IPv6 reference"))?;
        return parse_ipv6(inner).map(Host::Ipv6);
    }
    if s.is_empty() {
        return Err(UriError("empty host"));
    }
    // Most hosts a call's messages carry are addresses: a dotted quad that parses passes the
    // name check below too (digits and single dots only), so it is tried first and the
    // per-byte name check is left to the rest (issue 22).
    if s.as_bytes().first().is_some_and(u8::is_ascii_digit) {
        if let Some(a) = parse_dotted_quad(s.as_bytes()) {
            return Ok(Host::Ipv4(a));
        }
    }
    // One pass: characters, label boundaries ('-' never at either end, no empty label).
    let mut all_digits_dots = true;
    let mut prev = b'.';
    for &b in s.as_bytes() {
        match b {
            b'.' => {
                if prev == b'.' || prev == b'-' {
                    return Err(UriError("invalid host name"));
                }
            }
            b'-' => {
                if prev == b'.' {
                    return Err(UriError("invalid host name"));
                }
                all_digits_dots = false;
            }
            b'0'..=b'9' => {}
            b if b.is_ascii_alphabetic() => all_digits_dots = false,
            _ => return Err(UriError("invalid host name")),
        }
        prev = b;
    }
    if prev == b'-' {
        return Err(UriError("invalid host name"));
    }
    if all_digits_dots {
        if let Some(a) = parse_dotted_quad(s.as_bytes()) {
            return Ok(Host::Ipv4(a));
        }
    }
    Ok(Host::Name(s.to_owned()))
}

/// An IPv4 address in dotted-quad form as `Ipv4Addr::from_str` takes it (four decimal octets
/// up to 255, one to three digits, no leading zero), in one pass over the bytes: the generic
/// parser behind `from_str` cost ~300 instructions a host, and most hosts a call's messages
/// carry are addresses (issue 22).
pub(super) fn parse_dotted_quad(b: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (k, octet) in octets.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut value: u32 = 0;
        while let Some(d) = b.get(i).filter(|d| d.is_ascii_digit()) {
            value = value * 10 + u32::from(d - b'0');
            i += 1;
            if i - start > 3 {
                return None;
            }
        }
        let digits = i - start;
        if digits == 0 || (digits > 1 && b.get(start) == Some(&b'0')) {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    (i == b.len()).then_some(Ipv4Addr::from(octets))
}

/// An IPv6 address; tolerates the three-colon form of RFC 5118 §4.10 ("::" written ":::").
pub fn parse_ipv6(s: &str) -> Result<Ipv6Addr, UriError> {
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Ok(a);
    }
    if s.contains(":::") {
        if let Ok(a) = s.replacen(":::", "::", 1).parse::<Ipv6Addr>() {
            return Ok(a);
        }
    }
    Err(UriError("invalid IPv6 address"))
}

fn parse_tel(rest: &str) -> Result<TelUri, UriError> {
    let mut parts = rest.split(';');
    let number = parts.next().unwrap_or("");
    let valid_number = !number.is_empty()
        && number.bytes().all(|b| {
            b.is_ascii_hexdigit() || matches!(b, b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#')
        });
    if !valid_number {
        return Err(UriError("invalid tel URI number"));
    }
    let mut params = Params::new();
    for p in parts {
        let (n, v) = match split_once_byte(p, b'=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        };
        if n.is_empty() || !check_chars(n, PARAM) {
            return Err(UriError("invalid tel URI parameter"));
        }
        if let Some(v) = v {
            if !check_chars(v, PARAM) {
                return Err(UriError("invalid tel URI parameter value"));
            }
        }
        params.push_raw(n, v.map(str::to_owned));
    }
    Ok(TelUri {
        number: number.to_owned(),
        params,
    })
}

/// Decodes `%HH` escapes; bytes that are not valid UTF-8 are replaced.
pub fn unescape(s: &str) -> String {
    if !crate::sip::header::has_byte(s, b'%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if let [b'%', hi, lo, ..] = checked::bytes_from(b, i) {
            let hi = (*hi as char).to_digit(16);
            let lo = (*lo as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand parser takes exactly what `Ipv4Addr::from_str` takes: every string of up to
    /// seven characters over digits and dots, and random longer ones.
    #[test]
    fn dotted_quads_parse_as_from_str_parses_them() {
        fn same(s: &str) {
            assert_eq!(
                parse_dotted_quad(s.as_bytes()),
                s.parse::<Ipv4Addr>().ok(),
                "{s:?}"
            );
        }
        let alphabet = b"0125689.";
        let mut buf = Vec::new();
        for len in 0..=7u32 {
            for mut n in 0..(alphabet.len() as u64).pow(len) {
                buf.clear();
                for _ in 0..len {
                    buf.push(alphabet[(n % alphabet.len() as u64) as usize]);
                    n /= alphabet.len() as u64;
                }
                same(std::str::from_utf8(&buf).unwrap());
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 7 + (seed % 12) as usize;
            buf.clear();
            let mut r = seed;
            for _ in 0..len {
                // Mostly digits, a dot about every fourth character.
                buf.push(if r.is_multiple_of(4) {
                    b'.'
                } else {
                    b'0' + (r >> 2) as u8 % 10
                });
                r = r.rotate_right(5) ^ 0x5555;
            }
            same(std::str::from_utf8(&buf).unwrap());
        }
        for s in [
            "127.0.0.1",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "0.0.0.0",
            "1.2.3.4.",
            "1.2.3.04",
            "1.2.3.1000",
            "192.168.100.200",
        ] {
            same(s);
        }
        assert_eq!(parse_host("127.0.0.1"), Ok(Host::Ipv4(Ipv4Addr::LOCALHOST)));
        assert_eq!(parse_host("1.2.3.04"), Ok(Host::Name("1.2.3.04".into())));
    }

    #[test]
    fn ipv4_is_written_as_display_writes_it() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "255.255.255.255",
            "10.9.99.100",
            "192.168.1.20",
            "1.10.100.200",
        ] {
            let ip: Ipv4Addr = a.parse().unwrap();
            let mut s = String::new();
            write_ipv4(&mut s, ip).unwrap();
            assert_eq!(s, ip.to_string());
        }
        for n in [
            0u32,
            1,
            0x0a0b0c0d,
            0xfefefefe,
            u32::MAX,
            0x64646464,
            0x09090909,
        ] {
            let ip = Ipv4Addr::from(n);
            let mut s = String::from("x");
            write_ipv4(&mut s, ip).unwrap();
            assert_eq!(s, format!("x{ip}"));
        }
    }

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn basic_sip_uri() {
        let u = sip("sip:100@office.test:5060;transport=tcp;lr");
        assert_eq!(u.user.as_deref(), Some("100"));
        assert_eq!(u.host, Host::Name("office.test".into()));
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.transport().as_deref(), Some("tcp"));
        assert_eq!(u.params.get("lr"), Some(None));
        assert_eq!(u.to_string(), "sip:100@office.test:5060;transport=tcp;lr");
    }

    #[test]
    fn user_with_semicolon_and_escapes() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user.as_deref(), Some("user;par=u%40example.net"));
        assert_eq!(
            u.user_unescaped().as_deref(),
            Some("user;par=u@example.net")
        );
        assert!(u.params.is_empty());
    }

    #[test]
    fn ipv6_references() {
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.port, None);
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.to_string(), "sip:[2001:db8::10]:5070");
        assert!(Uri::parse("sip:user@2001:db8::10").is_err());
        let u = sip("sip:user@[2001:db8:::192.0.2.1]");
        assert!(matches!(u.host, Host::Ipv6(_)));
    }

    #[test]
    fn headers_and_password() {
        let u = sip("sips:alice:pw@atlanta.com?subject=project%20x&priority=urgent");
        assert!(u.secure);
        assert_eq!(u.password(), Some("pw"));
        assert_eq!(u.headers(), Some("subject=project%20x&priority=urgent"));
    }

    #[test]
    fn tel_and_other() {
        match Uri::parse("tel:+49-30-123456;phone-context=example.com").unwrap() {
            Uri::Tel(t) => assert_eq!(t.number, "+49-30-123456"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Uri::parse("mailto:a@b").unwrap(),
            Uri::Other { .. }
        ));
        assert!(Uri::parse("sip:us er@host").is_err());
        assert!(Uri::parse("nocolon").is_err());
        assert!(Uri::parse("sip:").is_err());
        assert!(Uri::parse("sip:host:99999").is_err());
        assert!(Uri::parse("sip:a@b%zz").is_err());
    }

    #[test]
    fn odd_input_never_panics() {
        for s in [
            "sip:%",
            "sip:a%4",
            "sip:[",
            "sip:[]",
            "sip:@",
            "sip::",
            "sip:a@[::1",
            "sip:a;",
            "sip:a?",
            "tel:",
            "sip:a@b;=x",
        ] {
            let _ = Uri::parse(s);
        }
        assert_eq!(unescape("a%4"), "a%4");
        assert_eq!(unescape("%41%"), "A%");
    }
}
