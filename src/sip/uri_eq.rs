//! URI equivalence as RFC 3261 §19.1.4 defines it, for checks that must not be fooled by
//! spelling: the digest `uri` against the Request-URI (a sniffed Authorization must not be
//! replayable towards another number), and any other "is this the same URI" question.
//!
//! The rules, in short: `sip` and `sips` differ; user and password compare case-sensitively
//! after unescaping; hosts compare case-insensitively; a port present on one side only makes the
//! URIs differ; the `user`, `ttl`, `method`, `maddr` and `transport` parameters must agree when
//! either side has them; other parameters must agree only when both sides have them; header
//! components must be the same set. `tel:` URIs compare by their digits (visual separators
//! ignored) and parameters.

use super::uri::{unescape, Params, SipUri, Uri};

/// Parameters that make URIs differ when only one side has them.
const STRICT_PARAMS: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];

/// Whether `a` and `b` are equivalent per RFC 3261 §19.1.4.
pub fn equivalent(a: &Uri, b: &Uri) -> bool {
    match (a, b) {
        (Uri::Sip(a), Uri::Sip(b)) => sip_equivalent(a, b),
        (Uri::Tel(a), Uri::Tel(b)) => {
            tel_digits(&a.number).eq_ignore_ascii_case(&tel_digits(&b.number))
                && params_equivalent(&a.params, &b.params, &[])
        }
        (
            Uri::Other {
                scheme: sa,
                rest: ra,
            },
            Uri::Other {
                scheme: sb,
                rest: rb,
            },
        ) => sa.eq_ignore_ascii_case(sb) && ra == rb,
        _ => false,
    }
}

/// Whether the text `text` (e.g. a digest `uri` parameter) parses as a URI equivalent to `uri`.
/// Text that does not parse is never equivalent.
pub fn text_equivalent(text: &str, uri: &Uri) -> bool {
    Uri::parse(text.trim()).is_ok_and(|parsed| equivalent(&parsed, uri))
}

fn sip_equivalent(a: &SipUri, b: &SipUri) -> bool {
    a.secure == b.secure
        && opt_unescaped(a.user.as_deref()) == opt_unescaped(b.user.as_deref())
        && opt_unescaped(a.password()) == opt_unescaped(b.password())
        && a.host.matches(&b.host)
        && a.port == b.port
        && params_equivalent(&a.params, &b.params, &STRICT_PARAMS)
        && headers_equivalent(a.headers(), b.headers())
}

fn opt_unescaped(s: Option<&str>) -> Option<String> {
    s.map(unescape)
}

/// Parameter rule of §19.1.4: names case-insensitive, values case-insensitive after unescaping;
/// `strict` names must be on both sides or neither.
fn params_equivalent(a: &Params, b: &Params, strict: &[&str]) -> bool {
    let value = |p: &Params, name: &str| p.get(name).map(|v| v.map(unescape));
    let names = a
        .iter()
        .chain(b.iter())
        .map(|(n, _)| n.to_ascii_lowercase());
    for name in names {
        match (value(a, &name), value(b, &name)) {
            (Some(x), Some(y)) => {
                let same = match (&x, &y) {
                    (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    return false;
                }
            }
            (None, None) => {}
            _ => {
                if strict.iter().any(|s| s.eq_ignore_ascii_case(&name)) {
                    return false;
                }
            }
        }
    }
    true
}

/// Header components: the same `name=value` set, names case-insensitive, values unescaped.
fn headers_equivalent(a: Option<&str>, b: Option<&str>) -> bool {
    let set = |h: Option<&str>| {
        let mut v: Vec<(String, String)> = h
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (n, v) = p.split_once('=').unwrap_or((p, ""));
                (unescape(n).to_ascii_lowercase(), unescape(v))
            })
            .collect();
        v.sort();
        v
    };
    set(a) == set(b)
}

/// The number without RFC 3966 visual separators.
fn tel_digits(n: &str) -> String {
    n.chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(a: &str, b: &str) -> bool {
        let (a, b) = (Uri::parse(a).unwrap(), Uri::parse(b).unwrap());
        let forward = equivalent(&a, &b);
        assert_eq!(forward, equivalent(&b, &a), "not symmetric: {a:?} {b:?}");
        forward
    }

    #[test]
    fn rfc3261_equivalent_examples() {
        // §19.1.4, the URIs that are equivalent.
        assert!(eq(
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp"
        ));
        assert!(eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;security=on"
        ));
        assert!(eq(
            "sip:carol@chicago.com;newparam=5",
            "sip:carol@chicago.com;security=on"
        ));
        assert!(eq(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        assert!(eq(
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x"
        ));
    }

    #[test]
    fn rfc3261_different_examples() {
        // §19.1.4, the URIs that are not equivalent.
        assert!(!eq(
            "SIP:ALICE@AtLanTa.CoM;Transport=udp",
            "sip:alice@AtLanTa.CoM;Transport=UDP"
        ));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!eq(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com;transport=udp"
        ));
        assert!(!eq(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com:6000;transport=tcp"
        ));
        assert!(!eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com?Subject=next%20meeting"
        ));
        assert!(!eq("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"));
        assert!(!eq("sip:alice@atlanta.com", "sips:alice@atlanta.com"));
    }

    #[test]
    fn digest_uri_against_request_uri() {
        let ruri = Uri::parse("sip:100@127.0.0.1:5060").unwrap();
        assert!(text_equivalent("sip:100@127.0.0.1:5060", &ruri));
        assert!(!text_equivalent("sip:0900123456@127.0.0.1:5060", &ruri));
        assert!(!text_equivalent("sip:127.0.0.1:5060", &ruri));
        assert!(!text_equivalent("not a uri \u{e9}", &ruri));
        assert!(!text_equivalent("", &ruri));
        let tel = Uri::parse("tel:+49-30-123").unwrap();
        assert!(text_equivalent("tel:+4930123", &tel));
        assert!(!text_equivalent("tel:+4930124", &tel));
    }
}
