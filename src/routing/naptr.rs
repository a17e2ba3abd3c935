//! ENUM NAPTR handling: RFC 6116 (ENUM), RFC 3761 compatibility, RFC 3403 and RFC 3402 (DDDS).
//!
//! Pure logic, no DNS:
//!
//! - [`enum_domain`]: the domain of an E.164 number under an ENUM tree
//!   (`+4930123456` under `e164.arpa` is `6.5.4.3.2.1.0.3.9.4.e164.arpa`).
//! - [`select`]: from the NAPTR records found there, the outcomes in the order to try them:
//!   terminal URIs and non-terminal next domains.
//! - [`apply_regexp`]: the RFC 3402 substitution expression (`!^.*$!sip:info@example.com!`),
//!   a POSIX extended regular expression with back-references `\1`…`\9` in the replacement.
//! - [`NaptrChain`]: the loop guard for following non-terminal records.
//!
//! # Enumservices
//!
//! Accepted: `E2U+sip` (RFC 3764, the SIP enumservice of RFC 6116), the RFC 2916 form `sip+E2U`,
//! and `E2U+voice:tel` (RFC 4415), whose `tel:` result re-enters the numbering plan. Matching is
//! case-insensitive, and a record may list several enumservices (`E2U+sip+voice:tel`). Records
//! for other enumservices (`E2U+h323`, `E2U+email:mailto`, …) are ignored without a trace.
//!
//! # Order and preference
//!
//! Records are sorted by order, then preference. RFC 3403 §4.1: once a record matches, records
//! with a different (higher) order are not considered; records of the same order are all offered,
//! by preference. A record "matches" here when its enumservice is accepted and it yields a usable
//! outcome; when a whole order group yields only errors (broken regexp, bad URI, unknown flags),
//! the next order group is considered, as a client that does not understand a record treats it
//! as not matching (RFC 3403 lets a client pass over records it cannot use). ENUM registries
//! commonly require one order value for all records of a domain; for such zones the rule reduces
//! to sorting by preference, which is how most ENUM clients behave anyway.
//!
//! # Regular expressions
//!
//! The ERE is translated into the syntax of the `regex` crate: bracket expressions are rebuilt
//! (backslash is literal inside them in POSIX; `&&`, `--`, `~~` and nested `[` are set operations
//! in `regex` and are escaped), escaped punctuation becomes a literal, and `\w \W \s \S \b \B \d
//! \D` are kept with their usual meaning. Constructs outside ERE (back-references in the pattern,
//! `(?…)`, a quantifier after a quantifier, which `regex` would read as lazy, multi-character
//! collating elements) are rejected; GNU's `{,n}` is read as `{0,n}`. One difference remains: POSIX asks for the
//! leftmost-longest match, `regex` gives the leftmost-first; they differ only for alternations
//! whose branches are prefixes of one another, which ENUM expressions do not use in practice.
//!
//! The substitution is sed-like: the first match in the AUS is replaced and the rest kept, which
//! for the usual anchored `^…$` expressions is simply the replacement.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use regex::{Captures, Regex, RegexBuilder};

use super::numbering::E164;

/// One NAPTR record (RFC 3403), as decoded from DNS: no zone-file escaping left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naptr {
    /// Lower values first; see the module documentation for the order rule.
    pub order: u16,
    /// Lower values first within the same order.
    pub preference: u16,
    /// `u` (terminal: the regexp yields a URI) or empty (non-terminal).
    pub flags: String,
    /// `E2U+sip` and the like.
    pub services: String,
    /// The substitution expression, `delim ERE delim replacement delim flags`.
    pub regexp: String,
    /// The next domain for non-terminal records; `.` or empty when unused.
    pub replacement: String,
}

/// What a usable record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NaptrOutcome {
    /// A terminal (`u`) record's URI (`sip:`, `sips:` or `tel:`), validated.
    Uri(String),
    /// A non-terminal record: continue the look-up at this domain (no trailing dot).
    NonTerminal(String),
}

/// Why a record or an expression could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NaptrError {
    /// The substitution expression is malformed or uses an unsupported construct.
    #[error("bad NAPTR regexp: {0}")]
    BadRegexp(String),
    /// The expression does not match the number.
    #[error("NAPTR regexp does not match the number")]
    NoMatch,
    /// The result is not a usable URI (or a non-terminal record's next domain is not a name).
    #[error("bad NAPTR result: {0}")]
    BadUri(String),
    /// The record's flags are neither `u` nor empty.
    #[error("unsupported NAPTR flags {0:?}")]
    UnsupportedFlags(String),
    /// Following the records leads back to where it started, or too far.
    #[error("NAPTR rewriting loops")]
    Loop,
}

/// An enumservice this module acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnumService {
    /// `E2U+sip` or the RFC 2916 `sip+E2U`: a `sip:` or `sips:` URI.
    Sip,
    /// `E2U+voice:tel`: a `tel:` URI, to run through the numbering plan again.
    VoiceTel,
}

/// The domain of `n` under the ENUM tree `suffix` (RFC 6116 §2.4): its digits reversed and
/// separated by dots. The suffix may be given with or without a trailing dot; the result has none.
pub fn enum_domain(n: &E164, suffix: &str) -> String {
    let suffix = suffix.trim().trim_matches('.');
    let mut out = String::with_capacity(n.digits().len() * 2 + suffix.len());
    for (i, d) in n.digits().chars().rev().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push(d);
    }
    if !suffix.is_empty() {
        out.push('.');
        out.push_str(suffix);
    }
    out
}

/// The accepted enumservice of a Services field, if any (see the module documentation).
pub fn enum_service(services: &str) -> Option<EnumService> {
    let s = services.trim();
    let mut parts = s.split('+');
    let first = parts.next()?;
    let rest: Vec<&str> = parts.collect();
    if first.eq_ignore_ascii_case("E2U") {
        let mut found = None;
        for spec in rest {
            let mut typ = spec.split(':');
            let t = typ.next().unwrap_or_default();
            let subtypes: Vec<&str> = typ.collect();
            if t.eq_ignore_ascii_case("sip") {
                return Some(EnumService::Sip);
            }
            if t.eq_ignore_ascii_case("voice")
                && subtypes.iter().any(|st| st.eq_ignore_ascii_case("tel"))
            {
                found = Some(EnumService::VoiceTel);
            }
        }
        return found;
    }
    // RFC 2916: "sip+E2U".
    if first.eq_ignore_ascii_case("sip")
        && rest.len() == 1
        && rest.first().is_some_and(|r| r.eq_ignore_ascii_case("E2U"))
    {
        return Some(EnumService::Sip);
    }
    None
}

/// Whether a non-terminal record's Services field allows following it: empty, a bare `E2U`, or
/// an accepted enumservice.
fn nonterminal_service_ok(services: &str) -> bool {
    let s = services.trim();
    s.is_empty() || s.eq_ignore_ascii_case("E2U") || enum_service(s).is_some()
}

/// The outcomes of `records` for the number `aus` (`"+4930123456"`), in the order to try them.
///
/// Records of other enumservices are left out; records that are accepted but unusable are
/// reported as errors in their place, for the router to log and skip. A terminal URI equal to
/// `tel:` + the number itself is reported as [`NaptrError::Loop`].
pub fn select(records: &[Naptr], aus: &str) -> Vec<Result<NaptrOutcome, NaptrError>> {
    let mut sorted: Vec<&Naptr> = records.iter().collect();
    sorted.sort_by_key(|r| (r.order, r.preference));
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(first) = sorted.get(i) {
        let order = first.order;
        let mut matched = false;
        while let Some(r) = sorted.get(i).filter(|r| r.order == order) {
            i += 1;
            if let Some(result) = evaluate(r, aus) {
                matched |= result.is_ok();
                out.push(result);
            }
        }
        if matched {
            break;
        }
    }
    out
}

/// One record's outcome; `None` when its enumservice is not for us.
fn evaluate(r: &Naptr, aus: &str) -> Option<Result<NaptrOutcome, NaptrError>> {
    let flags = r.flags.trim();
    if flags.is_empty() {
        if !nonterminal_service_ok(&r.services) {
            return None;
        }
        return Some(nonterminal(r, aus));
    }
    enum_service(&r.services)?;
    if !flags.eq_ignore_ascii_case("u") {
        return Some(Err(NaptrError::UnsupportedFlags(flags.to_owned())));
    }
    Some(apply_regexp(&r.regexp, aus).and_then(|uri| {
        let is_self = uri.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("tel:"))
            && uri.get(4..).and_then(|n| n.split(';').next()) == Some(aus);
        if is_self {
            Err(NaptrError::Loop)
        } else {
            Ok(NaptrOutcome::Uri(uri))
        }
    }))
}

/// A non-terminal record's next domain: the Replacement field, or else the Regexp applied to the
/// number (RFC 3403 allows either).
fn nonterminal(r: &Naptr, aus: &str) -> Result<NaptrOutcome, NaptrError> {
    let replacement = r.replacement.trim();
    let domain = if !replacement.is_empty() && replacement != "." {
        replacement.to_owned()
    } else if !r.regexp.trim().is_empty() {
        substitute(&r.regexp, aus)?
    } else {
        return Err(NaptrError::BadUri(
            "non-terminal record without a replacement".to_owned(),
        ));
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if !is_domain_name(&domain) {
        return Err(NaptrError::BadUri(format!(
            "{domain:?} is not a domain name"
        )));
    }
    Ok(NaptrOutcome::NonTerminal(domain))
}

/// Whether `s` (no trailing dot) is a plausible DNS name: labels of 1 to 63 letters, digits,
/// `-` and `_`, 253 characters at most.
fn is_domain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Applies an RFC 3402 substitution expression to the number `aus` and validates the result as
/// a `sip:`, `sips:` or `tel:` URI.
///
/// The expression is `delim ERE delim replacement delim flags`. The delimiter is the first
/// character and may be anything but a digit, `i` or a backslash; inside the expression it is
/// written `\delim`. The only flag is `i` (case-insensitive). In the replacement, `\1`…`\9` are
/// the ERE's groups, `\0` (an extension, not in RFC 3402) the whole match and `\\` a backslash.
/// The value is the decoded record: a zone file's `\\1` arrives here as `\1`.
pub fn apply_regexp(regexp: &str, aus: &str) -> Result<String, NaptrError> {
    let result = substitute(regexp, aus)?;
    validate_uri(&result)?;
    Ok(result)
}

/// The substitution itself, without validation of the result.
fn substitute(regexp: &str, aus: &str) -> Result<String, NaptrError> {
    let expr = SubstExpr::parse(regexp)?;
    let caps = expr.regex.captures(aus).ok_or(NaptrError::NoMatch)?;
    let whole = caps.get(0).ok_or(NaptrError::NoMatch)?;
    let mut out = String::with_capacity(aus.len() + expr.replacement.len());
    out.push_str(aus.get(..whole.start()).unwrap_or_default());
    expand(&expr.replacement, expr.delim, &caps, &mut out);
    out.push_str(aus.get(whole.end()..).unwrap_or_default());
    Ok(out)
}

/// A parsed substitution expression.
struct SubstExpr {
    delim: char,
    regex: Regex,
    replacement: String,
}

impl SubstExpr {
    fn parse(regexp: &str) -> Result<Self, NaptrError> {
        let mut chars = regexp.chars();
        let delim = chars
            .next()
            .ok_or_else(|| NaptrError::BadRegexp("empty expression".to_owned()))?;
        if delim.is_ascii_digit() || delim == 'i' || delim == '\\' || delim.is_whitespace() {
            return Err(NaptrError::BadRegexp(format!(
                "{delim:?} cannot be the delimiter"
            )));
        }
        let mut parts = vec![String::new()];
        while let Some(c) = chars.next() {
            if c == '\\' {
                let Some(next) = chars.next() else {
                    return Err(NaptrError::BadRegexp(
                        "ends with a lone backslash".to_owned(),
                    ));
                };
                if let Some(p) = parts.last_mut() {
                    p.push('\\');
                    p.push(next);
                }
            } else if c == delim {
                parts.push(String::new());
            } else if let Some(p) = parts.last_mut() {
                p.push(c);
            }
        }
        let [ere, replacement, flags]: [String; 3] = parts.try_into().map_err(|p: Vec<_>| {
            NaptrError::BadRegexp(format!(
                "expected 3 parts separated by {delim:?} (ERE, replacement, flags), found {}",
                p.len()
            ))
        })?;
        let case_insensitive = match flags.as_str() {
            "" => false,
            "i" => true,
            other => {
                return Err(NaptrError::BadRegexp(format!(
                    "unknown flags {other:?} (only \"i\" exists)"
                )))
            }
        };
        if ere.is_empty() {
            return Err(NaptrError::BadRegexp("empty ERE".to_owned()));
        }
        let translated = ere_to_rust(&ere, delim)?;
        let regex = RegexBuilder::new(&translated)
            .case_insensitive(case_insensitive)
            .dot_matches_new_line(true)
            .size_limit(1 << 20)
            .dfa_size_limit(1 << 20)
            .nest_limit(64)
            .build()
            .map_err(|e| NaptrError::BadRegexp(format!("{ere:?}: {e}")))?;
        let groups = regex.captures_len().saturating_sub(1);
        if let Some(k) = max_backref(&replacement, delim) {
            if k > groups {
                return Err(NaptrError::BadRegexp(format!(
                    "\\{k} in the replacement, but the ERE has {groups} group(s)"
                )));
            }
        }
        Ok(SubstExpr {
            delim,
            regex,
            replacement,
        })
    }
}

/// The highest back-reference `\1`…`\9` in a replacement.
fn max_backref(replacement: &str, delim: char) -> Option<usize> {
    let mut max = None;
    let mut chars = replacement.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(d) if d != delim => {
                    if let Some(k) = d.to_digit(10).filter(|k| *k > 0) {
                        let k = k as usize;
                        max = Some(max.map_or(k, |m: usize| m.max(k)));
                    }
                }
                _ => {}
            }
        }
    }
    max
}

/// Expands a replacement with the groups of a match.
fn expand(replacement: &str, delim: char, caps: &Captures<'_>, out: &mut String) {
    let mut chars = replacement.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(d) if d == delim => out.push(d),
            Some('\\') => out.push('\\'),
            Some(d) if d.is_ascii_digit() => {
                let k = d.to_digit(10).unwrap_or(0) as usize;
                if let Some(m) = caps.get(k) {
                    out.push_str(m.as_str());
                }
            }
            Some(d) => {
                out.push('\\');
                out.push(d);
            }
            None => out.push('\\'),
        }
    }
}

/// Characters that are special in `regex` and must be escaped to stand for themselves.
fn push_literal(out: &mut String, c: char) {
    if regex_syntax_meta(c) {
        out.push('\\');
    }
    out.push(c);
}

fn regex_syntax_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.'
            | '+'
            | '*'
            | '?'
            | '('
            | ')'
            | '|'
            | '['
            | ']'
            | '{'
            | '}'
            | '^'
            | '$'
            | '#'
            | '&'
            | '-'
            | '~'
    )
}

/// Translates a POSIX ERE into `regex` syntax (see the module documentation).
fn ere_to_rust(ere: &str, delim: char) -> Result<String, NaptrError> {
    let chars: Vec<char> = ere.chars().collect();
    let mut out = String::with_capacity(ere.len() + 8);
    let mut i = 0;
    // Whether the last token was a quantifier, and whether an interval `{…}` is open.
    let mut after_quantifier = false;
    let mut in_interval = false;
    while let Some(&c) = chars.get(i) {
        let quantifier = matches!(c, '*' | '+' | '?') || (c == '}' && in_interval);
        if c == '?' && after_quantifier {
            // `regex` reads `*?` as a lazy repetition; ERE leaves it undefined.
            return Err(NaptrError::BadRegexp(
                "a quantifier after a quantifier is not ERE".to_owned(),
            ));
        }
        after_quantifier = quantifier;
        match c {
            '{' => {
                in_interval = true;
                out.push('{');
                // GNU reads `{,n}` as `{0,n}`.
                if chars.get(i + 1) == Some(&',') {
                    out.push('0');
                }
                i += 1;
            }
            '}' if in_interval => {
                in_interval = false;
                out.push('}');
                i += 1;
            }
            '\\' => {
                let Some(&n) = chars.get(i + 1) else {
                    return Err(NaptrError::BadRegexp(
                        "the ERE ends with a backslash".to_owned(),
                    ));
                };
                i += 2;
                if n == delim {
                    push_literal(&mut out, n);
                } else if n.is_ascii_digit() {
                    return Err(NaptrError::BadRegexp(format!(
                        "\\{n} in the pattern: back-references are not part of ERE"
                    )));
                } else if n.is_ascii_alphanumeric() {
                    if matches!(n, 'w' | 'W' | 's' | 'S' | 'b' | 'B' | 'd' | 'D') {
                        out.push('\\');
                        out.push(n);
                    } else {
                        return Err(NaptrError::BadRegexp(format!(
                            "unsupported escape \\{n} in the pattern"
                        )));
                    }
                } else {
                    push_literal(&mut out, n);
                }
            }
            '[' => {
                i = bracket(&chars, i + 1, delim, &mut out)?;
            }
            '(' => {
                if chars.get(i + 1) == Some(&'?') {
                    return Err(NaptrError::BadRegexp(
                        "\"(?\" is not part of ERE".to_owned(),
                    ));
                }
                out.push('(');
                i += 1;
            }
            '#' | '&' | '-' | '~' | ']' | '}' => {
                push_literal(&mut out, c);
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Translates the bracket expression starting after its `[` at `start`; returns the index after
/// its closing `]`.
fn bracket(
    chars: &[char],
    start: usize,
    delim: char,
    out: &mut String,
) -> Result<usize, NaptrError> {
    let unterminated = || NaptrError::BadRegexp("unterminated bracket expression".to_owned());
    let mut i = start;
    out.push('[');
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut first = true;
    loop {
        let &c = chars.get(i).ok_or_else(unterminated)?;
        if c == ']' && !first {
            out.push(']');
            return Ok(i + 1);
        }
        first = false;
        // Character classes, collating symbols and equivalence classes.
        if c == '[' {
            if let Some(&kind @ (':' | '.' | '=')) = chars.get(i + 1) {
                let body_start = i + 2;
                let mut j = body_start;
                loop {
                    let &d = chars.get(j).ok_or_else(unterminated)?;
                    if d == kind && chars.get(j + 1) == Some(&']') {
                        break;
                    }
                    j += 1;
                }
                let body: String = chars
                    .get(body_start..j)
                    .unwrap_or_default()
                    .iter()
                    .collect();
                i = j + 2;
                if kind == ':' {
                    const CLASSES: [&str; 12] = [
                        "alnum", "alpha", "blank", "cntrl", "digit", "graph", "lower", "print",
                        "punct", "space", "upper", "xdigit",
                    ];
                    if !CLASSES.contains(&body.as_str()) {
                        return Err(NaptrError::BadRegexp(format!(
                            "unknown character class [:{body}:]"
                        )));
                    }
                    out.push_str("[:");
                    out.push_str(&body);
                    out.push_str(":]");
                } else {
                    let mut it = body.chars();
                    match (it.next(), it.next()) {
                        (Some(single), None) => push_literal(out, single),
                        _ => {
                            return Err(NaptrError::BadRegexp(format!(
                                "multi-character collating element [{kind}{body}{kind}]"
                            )))
                        }
                    }
                }
                continue;
            }
        }
        // A single character, possibly the start of a range. A backslash is literal in POSIX
        // brackets, except as the RFC 3402 escape of the delimiter.
        let (lit, next) = if c == '\\' && chars.get(i + 1) == Some(&delim) {
            (delim, i + 2)
        } else {
            (c, i + 1)
        };
        i = next;
        push_literal(out, lit);
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&e| e != ']') {
            let &end = chars.get(i + 1).ok_or_else(unterminated)?;
            if end == '[' {
                return Err(NaptrError::BadRegexp(
                    "range ending in a class or collating element".to_owned(),
                ));
            }
            let (end, after) = if end == '\\' && chars.get(i + 2) == Some(&delim) {
                (delim, i + 3)
            } else {
                (end, i + 2)
            };
            if end < lit {
                return Err(NaptrError::BadRegexp(format!(
                    "range {lit}-{end} is out of order"
                )));
            }
            out.push('-');
            push_literal(out, end);
            i = after;
        }
    }
}

/// Checks that `s` is a `sip:`, `sips:` or `tel:` URI worth handing to the router.
fn validate_uri(s: &str) -> Result<(), NaptrError> {
    let bad = |why: &str| NaptrError::BadUri(format!("{s:?}: {why}"));
    if s.len() > 2048 {
        return Err(bad("too long"));
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '\\' | '<' | '>' | '"'))
    {
        return Err(bad("contains a character not allowed in a URI"));
    }
    let (scheme, rest) = s.split_once(':').ok_or_else(|| bad("no scheme"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "sip" | "sips" => {
            let before_params = rest.split([';', '?']).next().unwrap_or_default();
            let (user, hostport) = match before_params.rsplit_once('@') {
                Some((u, h)) => (Some(u), h),
                None => (None, before_params),
            };
            if user.is_some_and(str::is_empty) {
                return Err(bad("empty user part"));
            }
            let host = if let Some(v6) = hostport.strip_prefix('[') {
                let (addr, after) = v6
                    .split_once(']')
                    .ok_or_else(|| bad("unclosed IPv6 host"))?;
                if addr.is_empty()
                    || !addr
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
                {
                    return Err(bad("bad IPv6 host"));
                }
                if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
                    return Err(bad("bad port"));
                }
                return Ok(());
            } else {
                match hostport.split_once(':') {
                    Some((h, port)) if is_port(port) => h,
                    Some(_) => return Err(bad("bad port")),
                    None => hostport,
                }
            };
            let host = host.strip_suffix('.').unwrap_or(host);
            if !is_domain_name(host) {
                return Err(bad("bad host"));
            }
            Ok(())
        }
        "tel" => {
            let number = rest.split(';').next().unwrap_or_default();
            let digits = number.strip_prefix('+').unwrap_or(number);
            let ok_chars = digits
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, '*' | '#' | '-' | '.' | '(' | ')'));
            if !ok_chars || !digits.chars().any(|c| c.is_ascii_digit()) {
                return Err(bad("bad telephone number"));
            }
            Ok(())
        }
        _ => Err(bad("scheme is not sip, sips or tel")),
    }
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.parse::<u16>().is_ok_and(|n| n > 0)
}

/// The loop guard for following non-terminal records: each domain may be visited once, and at
/// most `limit` domains in all.
#[derive(Debug, Clone)]
pub struct NaptrChain {
    visited: Vec<String>,
    limit: usize,
}

impl NaptrChain {
    /// A usual limit on the domains one look-up may visit (the first one included).
    pub const DEFAULT_LIMIT: usize = 5;

    /// A chain that may visit `limit` domains.
    pub fn new(limit: usize) -> Self {
        NaptrChain {
            visited: Vec::new(),
            limit,
        }
    }

    /// Records a visit to `domain`; [`NaptrError::Loop`] when it was visited before or the limit
    /// is reached. Names compare case-insensitively, trailing dot ignored.
    pub fn visit(&mut self, domain: &str) -> Result<(), NaptrError> {
        let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        if self.visited.contains(&d) || self.visited.len() >= self.limit {
            return Err(NaptrError::Loop);
        }
        self.visited.push(d);
        Ok(())
    }

    /// The domains visited so far, in order.
    pub fn visited(&self) -> &[String] {
        &self.visited
    }
}

impl Default for NaptrChain {
    fn default() -> Self {
        NaptrChain::new(Self::DEFAULT_LIMIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUS: &str = "+4930123456";

    fn rec(order: u16, pref: u16, flags: &str, services: &str, regexp: &str) -> Naptr {
        Naptr {
            order,
            preference: pref,
            flags: flags.to_owned(),
            services: services.to_owned(),
            regexp: regexp.to_owned(),
            replacement: ".".to_owned(),
        }
    }

    fn uri(s: &str) -> Result<NaptrOutcome, NaptrError> {
        Ok(NaptrOutcome::Uri(s.to_owned()))
    }

    #[test]
    fn domains() {
        let n: E164 = AUS.parse().unwrap();
        assert_eq!(
            enum_domain(&n, "e164.arpa"),
            "6.5.4.3.2.1.0.3.9.4.e164.arpa"
        );
        assert_eq!(
            enum_domain(&n, "e164.arpa."),
            "6.5.4.3.2.1.0.3.9.4.e164.arpa"
        );
        assert_eq!(
            enum_domain(&n, " .e164.org. "),
            "6.5.4.3.2.1.0.3.9.4.e164.org"
        );
        assert_eq!(enum_domain(&n, ""), "6.5.4.3.2.1.0.3.9.4");
        // RFC 6116 §2.4 example.
        let rfc: E164 = "+442079460148".parse().unwrap();
        assert_eq!(
            enum_domain(&rfc, "e164.arpa"),
            "8.4.1.0.6.4.9.7.0.2.4.4.e164.arpa"
        );
    }

    #[test]
    fn rfc_examples() {
        // RFC 6116 §6 / RFC 3761 §3.2.
        assert_eq!(
            apply_regexp("!^.*$!sip:info@example.com!", "+441632960083"),
            Ok("sip:info@example.com".to_owned())
        );
        assert_eq!(
            apply_regexp("!^.*$!mailto:info@example.com!", "+441632960083"),
            Err(NaptrError::BadUri(
                "\"mailto:info@example.com\": scheme is not sip, sips or tel".to_owned()
            ))
        );
        let records = vec![
            rec(100, 10, "u", "E2U+sip", "!^.*$!sip:info@example.com!"),
            rec(
                100,
                20,
                "u",
                "E2U+email:mailto",
                "!^.*$!mailto:info@example.com!",
            ),
        ];
        assert_eq!(
            select(&records, "+441632960083"),
            vec![uri("sip:info@example.com")]
        );
    }

    #[test]
    fn back_references() {
        // The zone file says "!^\\+4930(.*)$!sip:\\1@pbx.example.com!"; decoded, one backslash.
        assert_eq!(
            apply_regexp(r"!^\+4930(.*)$!sip:\1@pbx.example.com!", AUS),
            Ok("sip:123456@pbx.example.com".to_owned())
        );
        assert_eq!(
            apply_regexp(r"!^\+(49)(30)(.*)$!sip:\3-\2-\1@example.com!", AUS),
            Ok("sip:123456-30-49@example.com".to_owned())
        );
        assert_eq!(
            apply_regexp(r"!^(.*)$!tel:\1!", AUS),
            Ok("tel:+4930123456".to_owned())
        );
        assert_eq!(
            apply_regexp(r"!^\+49(.*)$!sip:0\1@gw.example.com;user=phone!", AUS),
            Ok("sip:030123456@gw.example.com;user=phone".to_owned())
        );
        // \0, the whole match (an extension).
        assert_eq!(
            apply_regexp(r"!^.*$!sip:\0@example.com!", AUS),
            Ok("sip:+4930123456@example.com".to_owned())
        );
        // A group that did not take part in the match is empty.
        assert_eq!(
            apply_regexp(r"!^\+49(x)?(.*)$!sip:\1\2@example.com!", AUS),
            Ok("sip:30123456@example.com".to_owned())
        );
        // A reference beyond the groups is an error, even without a match.
        assert!(matches!(
            apply_regexp(r"!^(.*)$!sip:\2@example.com!", AUS),
            Err(NaptrError::BadRegexp(_))
        ));
        assert!(matches!(
            apply_regexp(r"!^(.*)$!sip:\2@example.com!", "nothing"),
            Err(NaptrError::BadRegexp(_))
        ));
        // Back-references in the pattern are not ERE.
        assert!(matches!(
            apply_regexp(r"!^(.)\1$!sip:x@example.com!", AUS),
            Err(NaptrError::BadRegexp(_))
        ));
        // Digit classes and POSIX classes.
        assert_eq!(
            apply_regexp(r"!^\+[0-9]{2}([[:digit:]]+)$!sip:\1@example.com!", AUS),
            Ok("sip:30123456@example.com".to_owned())
        );
        assert_eq!(
            apply_regexp(r"!^\+\d{4}(\d*)$!sip:\1@example.com!", AUS),
            Ok("sip:123456@example.com".to_owned())
        );
    }

    #[test]
    fn sed_like_substitution() {
        // Only the matched part is replaced.
        assert_eq!(
            apply_regexp(r"!^\+49!sip:!", "+49301@example.com"),
            Ok("sip:301@example.com".to_owned())
        );
        assert_eq!(
            apply_regexp(r"!4930!sip:x@example.com!", AUS),
            Err(NaptrError::BadUri(
                "\"+sip:x@example.com123456\": scheme is not sip, sips or tel".to_owned()
            ))
        );
    }

    #[test]
    fn delimiters() {
        // Delimiters that do not occur in the URI need no escaping.
        for d in ['/', '#', '|', '%', ',', '~', '!', '_', 'é'] {
            let expr = format!("{d}^.*${d}sip:info@example.com{d}");
            assert_eq!(
                apply_regexp(&expr, AUS),
                Ok("sip:info@example.com".to_owned()),
                "delimiter {d:?}"
            );
        }
        // An escaped delimiter in the URI.
        assert_eq!(
            apply_regexp(r"@^.*$@sip:info\@example.com@", AUS),
            Ok("sip:info@example.com".to_owned())
        );
        // An escaped delimiter in the pattern is a literal.
        assert_eq!(
            apply_regexp(r"|^\+49(30\|40)(.*)$|sip:\2@example.com|", AUS),
            Err(NaptrError::NoMatch)
        );
        assert_eq!(
            apply_regexp(r"/^\+49(30|40)(.*)$/sip:\2@example.com/", AUS),
            Ok("sip:123456@example.com".to_owned())
        );
        assert_eq!(
            apply_regexp(r"!^\+49[\!3]0(.*)$!sip:\1@example.com!", AUS),
            Ok("sip:123456@example.com".to_owned())
        );
        assert_eq!(
            apply_regexp(r"x^.*$xsip:\x@host.netx", AUS),
            Ok("sip:x@host.net".to_owned())
        );
        for bad in [
            "1^.*$1sip:a@b1",
            "i^.*$isip:a@b.ci",
            "\\^.*$\\sip:a@b\\",
            " ^.*$ sip:a@b ",
        ] {
            assert!(
                matches!(apply_regexp(bad, AUS), Err(NaptrError::BadRegexp(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn case_flag() {
        assert_eq!(
            apply_regexp("!^\\+4930(.*)$!sip:\\1@Example.COM!i", AUS),
            Ok("sip:123456@Example.COM".to_owned())
        );
        assert_eq!(
            apply_regexp("!^ABC(.*)$!sip:\\1@example.com!i", "abc123"),
            Ok("sip:123@example.com".to_owned())
        );
        assert_eq!(
            apply_regexp("!^ABC(.*)$!sip:\\1@example.com!", "abc123"),
            Err(NaptrError::NoMatch)
        );
        assert!(matches!(
            apply_regexp("!^.*$!sip:a@example.com!g", AUS),
            Err(NaptrError::BadRegexp(_))
        ));
        assert!(matches!(
            apply_regexp("!^.*$!sip:a@example.com!ii", AUS),
            Err(NaptrError::BadRegexp(_))
        ));
    }

    #[test]
    fn ere_translation() {
        assert_eq!(ere_to_rust("^a.b$", '!').unwrap(), "^a.b$");
        assert_eq!(ere_to_rust(r"[\d]", '!').unwrap(), r"[\\d]");
        assert_eq!(ere_to_rust("[]a]", '!').unwrap(), r"[\]a]");
        assert_eq!(ere_to_rust("[^]a-z]", '!').unwrap(), r"[^\]a-z]");
        assert_eq!(ere_to_rust("[a&&b]", '!').unwrap(), r"[a\&\&b]");
        assert_eq!(ere_to_rust("[a-]", '!').unwrap(), r"[a\-]");
        assert_eq!(
            ere_to_rust("[[:alpha:][.-.]]", '!').unwrap(),
            r"[[:alpha:]\-]"
        );
        assert_eq!(ere_to_rust("a#b&c~d-e", '!').unwrap(), r"a\#b\&c\~d\-e");
        assert_eq!(ere_to_rust(r"\+\.\@", '!').unwrap(), r"\+\.@");
        assert!(ere_to_rust("[[:nope:]]", '!').is_err());
        assert!(ere_to_rust("[[.ch.]]", '!').is_err());
        assert!(ere_to_rust("[z-a]", '!').is_err());
        assert!(ere_to_rust("[abc", '!').is_err());
        assert!(ere_to_rust("(?i)a", '!').is_err());
        assert!(ere_to_rust(r"\q", '!').is_err());
        assert!(ere_to_rust("a\\", '!').is_err());
        assert_eq!(ere_to_rust("a{,3}b{2}c}", '!').unwrap(), r"a{0,3}b{2}c\}");
        for lazy in ["a*?", "a+?", "a??", "a{1,2}?"] {
            assert!(ere_to_rust(lazy, '!').is_err(), "{lazy}");
        }
        assert_eq!(ere_to_rust(r"a\*?", '!').unwrap(), r"a\*?");
        // Literal `[` inside brackets is not a nested class.
        assert_eq!(
            apply_regexp(r"!^[[]x$!sip:a@example.com!", "[x"),
            Ok("sip:a@example.com".to_owned())
        );
        assert_eq!(
            apply_regexp(r"!^[\]+$!sip:a@example.com!", "\\\\"),
            Ok("sip:a@example.com".to_owned())
        );
    }

    #[test]
    fn broken_expressions() {
        for bad in [
            "",
            "!",
            "!^.*$",
            "!^.*$!sip:a@example.com",
            "!^.*$!sip:a@example.com!i!",
            "!(!sip:a@example.com!",
            "!)!sip:a@example.com!",
            "![!sip:a@example.com!",
            "!*!sip:a@example.com!",
            "!a{2,1}!sip:a@example.com!",
            "!!sip:a@example.com!",
            "!^.*$!sip:a@example.com\\",
            "!(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((a)))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))!x!",
            "!a{1000}{1000}{1000}!sip:a@example.com!",
        ] {
            assert!(
                matches!(apply_regexp(bad, AUS), Err(NaptrError::BadRegexp(_))),
                "{bad:?} gave {:?}",
                apply_regexp(bad, AUS)
            );
        }
        assert_eq!(
            apply_regexp("!^\\+1!sip:a@example.com!", AUS),
            Err(NaptrError::NoMatch)
        );
    }

    #[test]
    fn uri_validation() {
        for good in [
            "sip:info@example.com",
            "SIP:info@example.com",
            "sips:info@example.com:5061;transport=tcp",
            "sip:example.com",
            "sip:+4930123456@gw.example.com;user=phone",
            "sip:100@192.0.2.1:5060",
            "sip:100@[2001:db8::1]:5060",
            "sip:100@[2001:db8::1]",
            "sip:a@example.com.",
            "sip:a@example.com?subject=x",
            "tel:+4930123456",
            "tel:+49-30-123456;npdi",
            "tel:7042;phone-context=example.com",
        ] {
            assert_eq!(validate_uri(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "sip:",
            "sip:@example.com",
            "sip:a@",
            "sip:a@exa mple.com",
            "sip:a@example..com",
            "sip:a@example.com:0",
            "sip:a@example.com:99999",
            "sip:a@example.com:x",
            "sip:a@[zz::1]",
            "sip:a@[::1",
            "sip:a@[::1]x",
            "sip:a@example.com\r\nVia: x",
            "sip:<a@example.com>",
            "http://example.com",
            "mailto:info@example.com",
            "tel:",
            "tel:+",
            "tel:abc",
            "tel:+49 30",
            "info@example.com",
        ] {
            assert!(
                matches!(validate_uri(bad), Err(NaptrError::BadUri(_))),
                "{bad:?}"
            );
        }
        assert!(validate_uri(&format!("sip:a@{}.com", "a".repeat(3000))).is_err());
    }

    #[test]
    fn services() {
        assert_eq!(enum_service("E2U+sip"), Some(EnumService::Sip));
        assert_eq!(enum_service("E2U+SIP"), Some(EnumService::Sip));
        assert_eq!(enum_service("e2u+sip"), Some(EnumService::Sip));
        assert_eq!(enum_service("sip+E2U"), Some(EnumService::Sip));
        assert_eq!(enum_service("SIP+e2u"), Some(EnumService::Sip));
        assert_eq!(enum_service(" E2U+sip "), Some(EnumService::Sip));
        assert_eq!(enum_service("E2U+voice:tel+sip"), Some(EnumService::Sip));
        assert_eq!(enum_service("E2U+voice:tel"), Some(EnumService::VoiceTel));
        assert_eq!(enum_service("E2U+VOICE:TEL"), Some(EnumService::VoiceTel));
        for other in [
            "E2U+h323",
            "E2U+email:mailto",
            "E2U+voice",
            "E2U+pres",
            "E2U",
            "",
            "sip",
            "E2U+",
            "E2Usip",
            "h323+E2U",
            "sip+E2U+x",
            "SIP+D2U",
            "E2U+sipx",
        ] {
            assert_eq!(enum_service(other), None, "{other:?}");
        }
    }

    #[test]
    fn ordering_and_preference() {
        let records = vec![
            rec(100, 20, "u", "E2U+sip", "!^.*$!sip:second@example.com!"),
            rec(100, 10, "u", "E2U+sip", "!^.*$!sip:first@example.com!"),
            rec(200, 1, "u", "E2U+sip", "!^.*$!sip:never@example.com!"),
            rec(50, 1, "u", "E2U+h323", "!^.*$!h323:ignored@example.com!"),
            rec(100, 15, "u", "E2U+h323", "!^.*$!h323:ignored@example.com!"),
            rec(100, 30, "u", "sip+E2U", "!^.*$!sip:legacy@example.com!"),
        ];
        assert_eq!(
            select(&records, AUS),
            vec![
                uri("sip:first@example.com"),
                uri("sip:second@example.com"),
                uri("sip:legacy@example.com"),
            ]
        );
        // No usable record in the first order group: the next group is considered, and the
        // errors are reported in their place.
        let records = vec![
            rec(10, 1, "u", "E2U+sip", "!^(.*$!sip:broken@example.com!"),
            rec(10, 2, "u", "E2U+sip", "!^.*$!sip:@example.com!"),
            rec(10, 3, "s", "E2U+sip", "!^.*$!sip:a@example.com!"),
            rec(20, 1, "u", "E2U+sip", "!^.*$!sip:fallback@example.com!"),
            rec(30, 1, "u", "E2U+sip", "!^.*$!sip:never@example.com!"),
        ];
        let out = select(&records, AUS);
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(matches!(out[0], Err(NaptrError::BadRegexp(_))));
        assert!(matches!(out[1], Err(NaptrError::BadUri(_))));
        assert_eq!(out[2], Err(NaptrError::UnsupportedFlags("s".into())));
        assert_eq!(out[3], uri("sip:fallback@example.com"));
        // Flags are case-insensitive; the tel: result of voice:tel is returned as a URI.
        let records = vec![
            rec(10, 2, "U", "E2U+voice:tel", r"!^\+49(.*)$!tel:+4989\1!"),
            rec(10, 1, "U", "E2U+SIP", "!^.*$!sips:a@example.com!"),
        ];
        assert_eq!(
            select(&records, AUS),
            vec![uri("sips:a@example.com"), uri("tel:+498930123456")]
        );
        assert_eq!(select(&[], AUS), vec![]);
        let only_other = vec![rec(10, 1, "u", "E2U+h323", "!^.*$!h323:x@example.com!")];
        assert_eq!(select(&only_other, AUS), vec![]);
    }

    #[test]
    fn non_terminal_records() {
        let mut nt = rec(10, 1, "", "E2U+sip", "");
        nt.replacement = "Next.Example.COM.".to_owned();
        let later = rec(20, 1, "u", "E2U+sip", "!^.*$!sip:never@example.com!");
        assert_eq!(
            select(&[nt.clone(), later], AUS),
            vec![Ok(NaptrOutcome::NonTerminal("next.example.com".into()))]
        );
        // Empty services and a bare E2U may be followed; other services not.
        nt.services = String::new();
        assert_eq!(select(std::slice::from_ref(&nt), AUS).len(), 1);
        nt.services = "E2U".to_owned();
        assert_eq!(select(std::slice::from_ref(&nt), AUS).len(), 1);
        nt.services = "E2U+h323".to_owned();
        assert!(select(std::slice::from_ref(&nt), AUS).is_empty());
        // A regexp may give the next domain instead.
        let mut by_regexp = rec(10, 1, "", "E2U+sip", r"!^\+49(.*)$!\1.de.example.net!");
        by_regexp.replacement = ".".to_owned();
        assert_eq!(
            select(&[by_regexp], AUS),
            vec![Ok(NaptrOutcome::NonTerminal(
                "30123456.de.example.net".into()
            ))]
        );
        // Neither, or a bad name.
        let empty = rec(10, 1, "", "E2U+sip", "");
        assert!(matches!(
            select(&[empty], AUS)[0],
            Err(NaptrError::BadUri(_))
        ));
        let mut bad = rec(10, 1, "", "E2U+sip", "");
        bad.replacement = "sip:x@example.com".to_owned();
        assert!(matches!(select(&[bad], AUS)[0], Err(NaptrError::BadUri(_))));
    }

    #[test]
    fn tel_results_reenter_the_numbering_plan() {
        use crate::routing::numbering::{Dialled, NumberingPlan};
        let plan =
            NumberingPlan::from_config(&crate::routing::numbering::NumberingConfig::default());
        let records = vec![rec(
            10,
            1,
            "u",
            "E2U+voice:tel",
            r"!^\+49(.*)$!tel:+4989\1!",
        )];
        let Some(Ok(NaptrOutcome::Uri(u))) = select(&records, AUS).into_iter().next() else {
            panic!("no URI");
        };
        assert_eq!(
            plan.classify(&u, |_| false),
            Ok(Dialled::E164("+498930123456".parse().unwrap()))
        );
    }

    #[test]
    fn loops() {
        let records = vec![rec(10, 1, "u", "E2U+voice:tel", "!^(.*)$!tel:\\1!")];
        assert_eq!(select(&records, AUS), vec![Err(NaptrError::Loop)]);
        let mut chain = NaptrChain::new(3);
        assert_eq!(chain.visit("6.5.4.3.2.1.0.3.9.4.e164.arpa"), Ok(()));
        assert_eq!(chain.visit("next.example.com."), Ok(()));
        assert_eq!(chain.visit("NEXT.example.com"), Err(NaptrError::Loop));
        assert_eq!(chain.visit("third.example.com"), Ok(()));
        assert_eq!(chain.visit("fourth.example.com"), Err(NaptrError::Loop));
        assert_eq!(chain.visited().len(), 3);
        assert_eq!(NaptrChain::default().limit, NaptrChain::DEFAULT_LIMIT);
    }

    #[test]
    fn fuzz_never_panics() {
        let alphabet: Vec<char> = r"!/|\()[]{}^$.*+?-:@0123456789aisptelx=,~&#é "
            .chars()
            .collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut ok = 0;
        for round in 0..5_000 {
            let len = (next() % 40) as usize;
            let mut s = String::new();
            // Often start from a valid expression and mutate it.
            if round % 2 == 0 {
                s.push_str(r"!^\+49(.*)$!sip:\1@example.com!");
            }
            for _ in 0..len {
                let c = alphabet[(next() % alphabet.len() as u64) as usize];
                let pos = (next() as usize) % (s.chars().count() + 1);
                let byte = s.char_indices().nth(pos).map_or(s.len(), |(b, _)| b);
                s.insert(byte, c);
            }
            if let Ok(u) = apply_regexp(&s, AUS) {
                assert!(validate_uri(&u).is_ok());
                ok += 1;
            }
            let r = Naptr {
                order: (next() % 3) as u16,
                preference: (next() % 3) as u16,
                flags: ["u", "", "s", "U"][(next() % 4) as usize].to_owned(),
                services: ["E2U+sip", "", "E2U+h323"][(next() % 3) as usize].to_owned(),
                regexp: s.clone(),
                replacement: s,
            };
            let _ = select(&[r.clone(), r], AUS);
        }
        assert!(ok > 0);
    }
}
