//! "Is this number ours?": the question a DUNDi mapping asks the rest of the gateway before it
//! answers a peer. [`LocalNumbers`] is what the engine calls; [`PatternNumbers`] is a ready
//! implementation over Asterisk-style extension patterns (`_1555XXXX`, `_49301234.`), and
//! [`NumberSet`] one over a replaceable set of whole numbers (the office's DIDs).

use std::collections::HashMap;

/// How a number matches the local numbers (Asterisk's exists / canmatch / matchmore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NumberMatch {
    /// The number as dialled is ours.
    pub exists: bool,
    /// The number is ours or a prefix of numbers that are.
    pub can_match: bool,
    /// Longer numbers starting with this one are ours.
    pub match_more: bool,
}

/// The predicate the engine asks; `local_context` is the mapping's local context.
pub trait LocalNumbers: Send + Sync {
    fn classify(&self, local_context: &str, number: &str) -> NumberMatch;

    /// The whole numbers known to be ours in `local_context`, for precaching them all
    /// (Asterisk walks the extensions of the mapped context). Patterns cannot be listed, so
    /// the default is none.
    fn known_numbers(&self, _local_context: &str) -> Vec<String> {
        Vec::new()
    }
}

impl<F> LocalNumbers for F
where
    F: Fn(&str, &str) -> NumberMatch + Send + Sync,
{
    fn classify(&self, local_context: &str, number: &str) -> NumberMatch {
        self(local_context, number)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(u8),
    Set(Vec<(u8, u8)>),
    /// `.`: one or more of anything.
    Dot,
    /// `!`: zero or more of anything.
    Bang,
}

impl Tok {
    fn matches(&self, c: u8) -> bool {
        match self {
            Tok::Lit(l) => *l == c,
            Tok::Set(ranges) => ranges.iter().any(|(a, b)| (*a..=*b).contains(&c)),
            Tok::Dot | Tok::Bang => true,
        }
    }
}

/// A bad pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad number pattern {0:?}")]
pub struct PatternError(pub String);

/// An Asterisk extension pattern: `_` then `X` (0-9), `Z` (1-9), `N` (2-9), `[1-35]`, `.`, `!`,
/// literal characters; without the leading `_` the whole string is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    toks: Vec<Tok>,
}

impl Pattern {
    /// The one number this pattern matches when it has no wildcard (a plain extension).
    pub fn literal(&self) -> Option<String> {
        self.toks
            .iter()
            .map(|t| match t {
                Tok::Lit(c) => Some(*c as char),
                _ => None,
            })
            .collect()
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PatternError(s.to_string());
        let Some(p) = s.strip_prefix('_') else {
            if s.is_empty() {
                return Err(err());
            }
            return Ok(Pattern {
                toks: s.bytes().map(Tok::Lit).collect(),
            });
        };
        let b = p.as_bytes();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            i += 1;
            toks.push(match c.to_ascii_uppercase() {
                b'X' => Tok::Set(vec![(b'0', b'9')]),
                b'Z' => Tok::Set(vec![(b'1', b'9')]),
                b'N' => Tok::Set(vec![(b'2', b'9')]),
                b'.' => Tok::Dot,
                b'!' => Tok::Bang,
                b'-' => continue,
                b'[' => {
                    let end = b[i..].iter().position(|&x| x == b']').ok_or_else(err)?;
                    let inner = &b[i..i + end];
                    i += end + 1;
                    let mut ranges = Vec::new();
                    let mut j = 0;
                    while j < inner.len() {
                        if j + 2 < inner.len() && inner[j + 1] == b'-' {
                            ranges.push((inner[j], inner[j + 2]));
                            j += 3;
                        } else {
                            ranges.push((inner[j], inner[j]));
                            j += 1;
                        }
                    }
                    if ranges.is_empty() {
                        return Err(err());
                    }
                    Tok::Set(ranges)
                }
                _ => Tok::Lit(c),
            });
        }
        if toks.is_empty() {
            return Err(err());
        }
        Ok(Pattern { toks })
    }
}

impl Pattern {
    /// How `number` matches this pattern.
    pub fn classify(&self, number: &str) -> NumberMatch {
        let mut m = NumberMatch::default();
        walk(&self.toks, number.as_bytes(), &mut m);
        m.can_match = m.exists || m.match_more;
        m
    }
}

fn walk(p: &[Tok], n: &[u8], m: &mut NumberMatch) {
    match p.first() {
        None => {
            if n.is_empty() {
                m.exists = true;
            }
        }
        Some(Tok::Bang) => {
            m.exists = true;
            m.match_more = true;
        }
        Some(Tok::Dot) => {
            if !n.is_empty() {
                m.exists = true;
            }
            m.match_more = true;
        }
        Some(t) => match n.split_first() {
            None => m.match_more = true,
            Some((c, rest)) => {
                if t.matches(*c) {
                    walk(&p[1..], rest, m);
                }
            }
        },
    }
}

/// Local numbers given as patterns per local context.
#[derive(Debug, Clone, Default)]
pub struct PatternNumbers {
    contexts: HashMap<String, Vec<Pattern>>,
}

impl PatternNumbers {
    /// Empty: no number is ours.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds patterns to a local context.
    pub fn add(&mut self, local_context: &str, patterns: &[&str]) -> Result<(), PatternError> {
        let v = self
            .contexts
            .entry(local_context.to_ascii_lowercase())
            .or_default();
        for p in patterns {
            v.push(p.parse()?);
        }
        Ok(())
    }
}

impl LocalNumbers for PatternNumbers {
    fn classify(&self, local_context: &str, number: &str) -> NumberMatch {
        let mut out = NumberMatch::default();
        for p in self
            .contexts
            .get(&local_context.to_ascii_lowercase())
            .into_iter()
            .flatten()
        {
            let m = p.classify(number);
            out.exists |= m.exists;
            out.can_match |= m.can_match;
            out.match_more |= m.match_more;
        }
        out
    }

    /// The patterns without wildcards.
    fn known_numbers(&self, local_context: &str) -> Vec<String> {
        self.contexts
            .get(&local_context.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .filter_map(Pattern::literal)
            .collect()
    }
}

/// A set of whole numbers (the office's DIDs as E.164 digits, `+` dropped), replaceable while
/// the engine runs (re-provisioning on SIGHUP or a dashboard change). Every local context sees
/// the same set.
#[derive(Debug, Default)]
pub struct NumberSet {
    numbers: std::sync::RwLock<std::collections::BTreeSet<String>>,
}

impl NumberSet {
    /// A set of these numbers (a leading `+` is dropped).
    pub fn new<I, S>(numbers: I) -> NumberSet
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let s = NumberSet::default();
        s.replace(numbers);
        s
    }

    /// Replaces the numbers.
    pub fn replace<I, S>(&self, numbers: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let set = numbers
            .into_iter()
            .map(|n| n.as_ref().trim_start_matches('+').to_string())
            .filter(|n| !n.is_empty())
            .collect();
        match self.numbers.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }
}

impl NumberSet {
    /// The numbers, sorted.
    pub fn numbers(&self) -> Vec<String> {
        let g = match self.numbers.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        g.iter().cloned().collect()
    }
}

impl LocalNumbers for NumberSet {
    fn classify(&self, _local_context: &str, number: &str) -> NumberMatch {
        let g = match self.numbers.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let exists = g.contains(number);
        let match_more = g
            .range(number.to_string()..)
            .take_while(|n| n.starts_with(number))
            .any(|n| n.len() > number.len());
        NumberMatch {
            exists,
            can_match: exists || match_more,
            match_more,
        }
    }

    fn known_numbers(&self, _local_context: &str) -> Vec<String> {
        self.numbers()
    }
}

/// Ours when any of several predicates says so (e.g. the DIDs and some configured patterns).
#[derive(Clone, Default)]
pub struct AnyOf(pub Vec<std::sync::Arc<dyn LocalNumbers>>);

impl LocalNumbers for AnyOf {
    fn classify(&self, local_context: &str, number: &str) -> NumberMatch {
        let mut out = NumberMatch::default();
        for l in &self.0 {
            let m = l.classify(local_context, number);
            out.exists |= m.exists;
            out.can_match |= m.can_match;
            out.match_more |= m.match_more;
        }
        out
    }

    fn known_numbers(&self, local_context: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .iter()
            .flat_map(|l| l.known_numbers(local_context))
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_numbers_for_precache() {
        let mut n = PatternNumbers::new();
        n.add("local", &["_1555XXXX", "4930123", "_4930124"])
            .unwrap();
        assert_eq!(n.known_numbers("local"), ["4930123", "4930124"]);
        assert!(n.known_numbers("other").is_empty());
        let dids: std::sync::Arc<dyn LocalNumbers> =
            std::sync::Arc::new(NumberSet::new(["+4930124", "4930125"]));
        let any = AnyOf(vec![dids, std::sync::Arc::new(n)]);
        assert_eq!(
            any.known_numbers("local"),
            ["4930123", "4930124", "4930125"]
        );
        let f = |_: &str, _: &str| NumberMatch::default();
        assert!(f.known_numbers("local").is_empty());
    }

    #[test]
    fn patterns_like_asterisk() {
        let mut n = PatternNumbers::new();
        n.add("local", &["_1555XXXX", "_1555XXXXXXX"]).unwrap();
        let m = n.classify("local", "15551234");
        assert!(m.exists && m.can_match && m.match_more);
        let m = n.classify("local", "19998887777");
        assert!(!m.exists && !m.can_match && !m.match_more);
        assert!(n.classify("local", "1").can_match);
        assert!(!n.classify("local", "19").can_match);
        assert!(!n.classify("other", "15551234").can_match);
        let p: Pattern = "_49[23]0.".parse().unwrap();
        assert!(p.classify("493012").exists);
        assert!(!p.classify("4930").exists);
        assert!(p.classify("4930").match_more);
        assert!(!p.classify("4940").can_match);
        let lit: Pattern = "100".parse().unwrap();
        assert_eq!(
            lit.classify("100"),
            NumberMatch {
                exists: true,
                can_match: true,
                match_more: false
            }
        );
        assert!("_".parse::<Pattern>().is_err());
        let dids = NumberSet::new(["+4930123456", "493012345"]);
        let m = dids.classify("any", "493012345");
        assert!(m.exists && m.match_more && m.can_match);
        assert!(dids.classify("any", "4930").can_match);
        assert!(!dids.classify("any", "4931").can_match);
        let mut pats = PatternNumbers::new();
        pats.add("local", &["_4989XXXX"]).unwrap();
        let any = AnyOf(vec![
            std::sync::Arc::new(NumberSet::new(["4940"])),
            std::sync::Arc::new(pats),
        ]);
        assert!(any.classify("local", "49891234").exists);
        assert!(any.classify("local", "4940").exists);
        assert!(!any.classify("local", "4941").can_match);
        dids.replace(["4940"]);
        assert!(!dids.classify("any", "4930123456").exists);
        assert!(dids.classify("any", "4940").exists);
        assert!("_[12".parse::<Pattern>().is_err());
    }
}
