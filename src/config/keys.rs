//! Key paths, and where a key path is in the file: what every error names.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A path to a value in the document, such as `extension[3].number`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(crate) fn new(first: &str) -> Self {
        KeyPath(vec![Seg::Key(first.to_owned())])
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    pub(crate) fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment;
        KeyPath(
            path.iter()
                .filter_map(|s| match s {
                    Segment::Seq { index } => Some(Seg::Index(*index)),
                    Segment::Map { key } => Some(Seg::Key(key.clone())),
                    Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                    Segment::Unknown => None,
                })
                .collect(),
        )
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A failed semantic check: which key, and what is wrong with it.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) path: KeyPath,
    pub(crate) message: String,
}

pub(crate) fn invalid(path: &KeyPath, message: impl Into<String>) -> Invalid {
    Invalid {
        path: path.clone(),
        message: message.into(),
    }
}

pub(crate) struct Doc<'a> {
    pub(crate) text: &'a str,
    pub(crate) origin: &'a Path,
}

impl Doc<'_> {
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(crate) fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        ConfigError::Syntax {
            file: self.origin.to_path_buf(),
            line: e.span().map_or(1, |s| self.line_of(s.start)),
            message: e.message().trim_end().to_owned(),
        }
    }

    pub(crate) fn serde_error(
        &self,
        root: &Spanned<DeTable<'_>>,
        e: serde_path_to_error::Error<toml::de::Error>,
    ) -> ConfigError {
        let mut path = KeyPath::from_serde(e.path());
        let inner = e.inner();
        let raw_message = inner.message().trim_end();
        let mut message = raw_message.to_owned();
        let mut span = inner.span();
        if let Some(field) = backticked_after(raw_message, "unknown field ") {
            // serde_path_to_error stops at the enclosing table; name the key itself.
            if path.0.last() != Some(&Seg::Key(field.to_owned())) {
                path.0.push(Seg::Key(field.to_owned()));
            }
            message = format!("unknown key{}", expected_suffix(raw_message));
        } else if let Some(field) = backticked_after(raw_message, "missing field ") {
            path.0.push(Seg::Key(field.to_owned()));
            message = "required key is missing".to_owned();
            // Point at the table that lacks the key rather than at the end of the document.
            span = Some(locate(root, &path));
        }
        let offset = span.unwrap_or_else(|| locate(root, &path)).start;
        ConfigError::Key {
            file: self.origin.to_path_buf(),
            line: self.line_of(offset),
            key: path.to_string(),
            message,
        }
    }

    pub(crate) fn invalid(&self, root: &Spanned<DeTable<'_>>, e: Invalid) -> ConfigError {
        ConfigError::Key {
            file: self.origin.to_path_buf(),
            line: self.line_of(locate(root, &e.path).start),
            key: e.path.to_string(),
            message: e.message,
        }
    }
}

/// If `message` starts with `prefix` followed by a back-ticked word, returns the word.
pub(crate) fn backticked_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = message.strip_prefix(prefix)?.strip_prefix('`')?;
    let end = rest.find('`')?;
    Some(&rest[..end])
}

/// `", expected one of `a`, `b`"` from a serde unknown-field message, if present.
pub(crate) fn expected_suffix(message: &str) -> String {
    match message.find(", expected") {
        Some(i) => message[i..].to_owned(),
        None => String::new(),
    }
}

/// The byte span of the deepest part of `path` present in the document.
pub(crate) fn locate(root: &Spanned<DeTable<'_>>, path: &KeyPath) -> Range<usize> {
    let mut span = root.span();
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    for seg in &path.0 {
        let next = match seg {
            Seg::Key(k) => {
                let t = match (table, value) {
                    (Some(t), _) => Some(t),
                    (None, Some(v)) => v.as_table(),
                    (None, None) => None,
                };
                t.and_then(|t| t.get(k.as_str()))
            }
            Seg::Index(i) => value.and_then(|v| v.as_array()).and_then(|a| a.get(*i)),
        };
        let Some(next) = next else { break };
        span = next.span();
        table = None;
        value = Some(next.get_ref());
    }
    span
}

pub(crate) type Checked<T> = Result<T, Invalid>;
