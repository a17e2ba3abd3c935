//! The header and URI parsers as they were before session 15 took the allocations and the
//! slow searches out of them (issue 22), kept for the tests only: the tests parse every header
//! value of the fuzz seeds (and cuts and mutations of them) with both and require the same
//! result, error text included.
#![allow(clippy::all)]

use super::header::{
    find_byte, has_byte, has_ws, is_token, is_token_char, quoted_end, trim_ws, trim_ws_end,
    trim_ws_start, HeaderError, NameAddr, Via,
};
use super::header::{rfind_byte, split_once_byte};
use super::uri::{
    check_chars, parse_dotted_quad, parse_ipv6, Host, Params, SipUri, TelUri, Uri, UriError,
    HEADER, PARAM, PASSWORD, USER,
};
use crate::checked;

fn err<T>(msg: impl Into<String>) -> Result<T, HeaderError> {
    Err(HeaderError(msg.into()))
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub fn parse_params(s: &str) -> Result<Params, HeaderError> {
    let mut params = Params::new();
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while is_ws(checked::byte(b, i)) {
            i += 1;
        }
        if i >= b.len() {
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
            value = Some(checked::sub(s, vs, i).to_owned());
        }
        params.push_raw(name, value);
    }
}

pub fn name_addr(s: &str) -> Result<NameAddr, HeaderError> {
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
        // Unquoted display name: tokens separated by LWS (none, most often).
        if !name.is_empty()
            && !name
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .all(is_token)
        {
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
            .ok_or(HeaderError("missing > after URI".into()))?;
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
    let uri = uri(uri_str).map_err(|e| HeaderError(e.0.to_owned()))?;
    let params = parse_params(checked::tail(s, params_start))?;
    Ok(NameAddr {
        display,
        uri,
        params,
    })
}

pub fn via(s: &str) -> Result<Via, HeaderError> {
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
    let (host, port) = parse_hostport(sent_by).map_err(|e| HeaderError(format!("Via: {e}")))?;
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

pub fn uri(s: &str) -> Result<Uri, UriError> {
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
    let mut params = Params::new();
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
    let mut u = SipUri::new(None, host, port);
    u.secure = secure;
    u.user = user;
    u.params = params;
    u.set_password(password);
    u.set_headers(headers.map(str::to_owned));
    Ok(u)
}

fn split_hostport(s: &str) -> Result<(&str, &str), UriError> {
    if s.starts_with('[') {
        let close = find_byte(s, b']').ok_or(UriError("unterminated IPv6 reference in URI"))?;
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

pub fn parse_hostport(s: &str) -> Result<(Host, Option<u16>), UriError> {
    if s.is_empty() {
        return Err(UriError("empty host"));
    }
    let (host_str, port_str) = if s.starts_with('[') {
        let close = find_byte(s, b']').ok_or(UriError("unterminated IPv6 reference"))?;
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
        match rfind_byte(s, b':').map(|i| (checked::head(s, i), checked::tail(s, i + 1))) {
            Some((host, port)) => {
                if has_byte(host, b':') {
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
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UriError("invalid port"));
            }
            Some(
                p.parse::<u16>()
                    .map_err(|_| UriError("port out of range"))?,
            )
        }
    };
    Ok((parse_host(host_str)?, port))
}

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

pub fn list_parts(value: &str) -> Result<Vec<&str>, HeaderError> {
    // Fast path: no comma or quote means a single element (vector searches: a byte loop
    // over the value was ~420 instructions a line).
    let b = value.as_bytes();
    if memchr::memchr2(b',', b'"', b).is_none() {
        if memchr::memchr_iter(b'<', b).count() != memchr::memchr_iter(b'>', b).count() {
            return err("unterminated <");
        }
        return Ok(vec![value]);
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
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::super::header::{self as new, list_parts};
    use super::*;

    /// Header values and URIs of the SIP fuzz seeds, each also cut at every byte and with
    /// bytes the grammar cares about put in at a few places: the inputs the old and new
    /// parsers are compared on.
    fn inputs() -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/sip_message");
        let (mut addrs, mut vias, mut uris) = (Vec::new(), Vec::new(), Vec::new());
        let mut values = Vec::new();
        let mut seeds = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = String::from_utf8_lossy(&std::fs::read(entry.unwrap().path()).unwrap())
                .into_owned();
            seeds += 1;
            for (n, line) in text.split("\r\n").flat_map(|l| l.split('\n')).enumerate() {
                if n == 0 {
                    if let Some(u) = line.split(' ').nth(1) {
                        uris.push(u.to_owned());
                    }
                    continue;
                }
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim_matches([' ', '\t']);
                values.push(value.to_owned());
                let parts: Vec<&str> = match list_parts(value) {
                    Ok(p) => p.collect(),
                    Err(_) => vec![value],
                };
                match name.trim_end().to_ascii_lowercase().as_str() {
                    "via" | "v" => vias.extend(parts.iter().map(|p| p.to_string())),
                    "from" | "f" | "to" | "t" | "contact" | "m" | "route" | "record-route" => {
                        addrs.extend(parts.iter().map(|p| p.to_string()))
                    }
                    _ => {}
                }
            }
        }
        assert!(seeds > 50, "seeds: {seeds}");
        addrs.extend(
            [
                "sipp <sip:sipp@127.0.0.1:5061>;tag=1234SIPpTag001",
                "<sip:101@office.test>",
                "\"A\" <sip:a@b>",
                "A  B\t<sip:a@b>",
                "<sip:a@[::1]:5060;transport=udp;lr>;expires=60;q=0.5",
                "<sip:a@1.2.3.4;x=\"a;b\">",
                "<tel:+1234;ext=1>;tag=x",
                "sip:a@b;tag=\"q;r\";y",
                "<sip:a@1.2.3.04>",
                "<sip:a@256.1.1.1>",
                "<sip:a@1.2.3.4.>",
                "<sip:a@-a.b>",
                "<sip:a@a-.b>",
                "<sip:a@a..b>",
                "<sip:a@0.0.0.0:0>",
                "<sip:a@1.2.3.4:65536>",
                "<sip:a@1.2.3.4:00080>",
                "<sip:a@1.2.3.4:+80>",
                "<sip:a@1.2.3.4:>",
                "<sip:a@1.2.3.4:123456>",
                "<sip:a:pw@h?x=y>",
            ]
            .map(str::to_owned),
        );
        vias.push("SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0;rport;received=1.2.3.4".into());
        let grow = |v: &mut Vec<String>| {
            let base = v.clone();
            for s in &base {
                for i in 0..=s.len() {
                    if let Some(h) = s.get(..i) {
                        v.push(h.to_owned());
                    }
                    for c in [
                        ";", "\"", "<", ">", ":", "@", " ", "=", "[", "]", "%", "-", ".",
                    ] {
                        if let (Some(h), Some(t)) = (s.get(..i), s.get(i..)) {
                            v.push(format!("{h}{c}{t}"));
                        }
                    }
                }
            }
        };
        grow(&mut addrs);
        grow(&mut vias);
        grow(&mut uris);
        grow(&mut values);
        (addrs, vias, uris, values)
    }

    #[test]
    fn the_parsers_give_what_the_old_parsers_gave() {
        let (addrs, vias, uris, values) = inputs();
        for v in &values {
            let new: Result<Vec<&str>, _> = list_parts(v).map(Iterator::collect);
            assert_eq!(new, super::list_parts(v), "{v:?}");
        }
        let mut ok = 0;
        for s in &addrs {
            let old = name_addr(s);
            ok += usize::from(old.is_ok());
            assert_eq!(new::NameAddr::parse(s), old, "{s:?}");
            if let Some(i) = s.find(['>', ';']) {
                let params = s.get(i + 1..).unwrap_or("");
                assert_eq!(
                    new::parse_params(params),
                    parse_params(params),
                    "{params:?}"
                );
            }
        }
        for s in &vias {
            assert_eq!(new::Via::parse(s), via(s), "{s:?}");
        }
        for s in addrs.iter().chain(&uris).chain(&vias) {
            let u = s.trim_start_matches(|c| c != 's' && c != 't');
            assert_eq!(Uri::parse(u), uri(u), "{u:?}");
            assert_eq!(
                super::super::uri::parse_hostport(s),
                parse_hostport(s),
                "{s:?}"
            );
            assert_eq!(super::super::uri::parse_host(s), parse_host(s), "{s:?}");
        }
        assert!(ok > 1000, "only {ok} of {} addresses parsed", addrs.len());
    }
}
