//! Call handling of an extension: call forwarding (always, busy, no answer, unreachable) and
//! the order its registered phones ring in (all at once, or one after the other), with the
//! phone's feature codes that set them.
//!
//! Pure data and parsing: the store keeps it ([`crate::store::forwards`]), the SIP core acts on
//! it (a forward is routed with the permissions of the extension that forwards, limited in
//! hops), the dashboard edits it.
//!
//! Feature codes (as FreePBX has them), dialled from the phone of the extension itself:
//! `*72NUMBER` forward always, `*73` off; `*90NUMBER` forward on busy, `*91` off; `*52NUMBER`
//! forward on no answer, `*53` off.

use std::fmt;
use std::time::Duration;

/// Default ringing time before a no-answer forward, in seconds.
pub const DEFAULT_NO_ANSWER_SECS: u32 = 20;
/// Default turn of each phone in a sequential search, in seconds.
pub const DEFAULT_RING_SECS: u32 = 15;
/// Forwards one call follows at most (a chain 101 -> 102 -> 103 is two).
pub const MAX_FORWARD_HOPS: usize = 3;

/// When a forward applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardWhen {
    /// Every call, before any phone rings.
    Always,
    /// Every phone answered busy (or declined).
    Busy,
    /// No phone answered within the no-answer time.
    NoAnswer,
    /// No phone registered, or every phone failed.
    Unreachable,
}

impl ForwardWhen {
    pub fn as_str(self) -> &'static str {
        match self {
            ForwardWhen::Always => "always",
            ForwardWhen::Busy => "busy",
            ForwardWhen::NoAnswer => "no answer",
            ForwardWhen::Unreachable => "unreachable",
        }
    }
}

impl fmt::Display for ForwardWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an extension's calls are handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallHandling {
    /// Forward every call to this extension or number.
    pub always: Option<String>,
    pub busy: Option<String>,
    pub no_answer: Option<String>,
    /// Ringing time before the no-answer forward.
    pub no_answer_secs: u32,
    pub unreachable: Option<String>,
    /// Ring the registered phones one after the other (highest `q`, then most recent first)
    /// instead of all at once.
    pub sequential: bool,
    /// Turn of each phone in a sequential search.
    pub ring_secs: u32,
}

impl Default for CallHandling {
    fn default() -> Self {
        CallHandling {
            always: None,
            busy: None,
            no_answer: None,
            no_answer_secs: DEFAULT_NO_ANSWER_SECS,
            unreachable: None,
            sequential: false,
            ring_secs: DEFAULT_RING_SECS,
        }
    }
}

impl CallHandling {
    /// The destination for `when`.
    pub fn target(&self, when: ForwardWhen) -> Option<&str> {
        match when {
            ForwardWhen::Always => self.always.as_deref(),
            ForwardWhen::Busy => self.busy.as_deref(),
            ForwardWhen::NoAnswer => self.no_answer.as_deref(),
            ForwardWhen::Unreachable => self.unreachable.as_deref(),
        }
    }

    fn slot(&mut self, when: ForwardWhen) -> &mut Option<String> {
        match when {
            ForwardWhen::Always => &mut self.always,
            ForwardWhen::Busy => &mut self.busy,
            ForwardWhen::NoAnswer => &mut self.no_answer,
            ForwardWhen::Unreachable => &mut self.unreachable,
        }
    }

    /// Sets or clears the forward for `when`.
    pub fn set(&mut self, when: ForwardWhen, to: Option<String>) {
        *self.slot(when) = to;
    }

    /// The no-answer time.
    pub fn no_answer_after(&self) -> Duration {
        Duration::from_secs(u64::from(self.no_answer_secs.clamp(1, 600)))
    }

    /// The turn of each phone in a sequential search.
    pub fn ring_each(&self) -> Duration {
        Duration::from_secs(u64::from(self.ring_secs.clamp(1, 600)))
    }

    /// `parallel` or `sequential`.
    pub fn ring_order(&self) -> &'static str {
        if self.sequential {
            "sequential"
        } else {
            "parallel"
        }
    }
}

/// Whether `s` can be a forward's destination: an extension or a number, `+` and 1 to 20
/// digits (the numbering plan and the permissions are checked when a call is forwarded).
pub fn valid_destination(s: &str) -> bool {
    let digits = s.strip_prefix('+').unwrap_or(s);
    !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A feature code dialled by a phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureCode {
    pub when: ForwardWhen,
    /// The new destination; `None`: the forward is cleared.
    pub to: Option<String>,
}

/// The forwarding feature code in `dialled`, if it is one. `Err` for a code with a
/// destination that cannot be one (`*72abc`).
pub fn feature_code(dialled: &str) -> Option<Result<FeatureCode, String>> {
    const CODES: [(&str, &str, ForwardWhen); 3] = [
        ("*72", "*73", ForwardWhen::Always),
        ("*90", "*91", ForwardWhen::Busy),
        ("*52", "*53", ForwardWhen::NoAnswer),
    ];
    for (on, off, when) in CODES {
        if dialled == off {
            return Some(Ok(FeatureCode { when, to: None }));
        }
        if let Some(rest) = dialled.strip_prefix(on) {
            if !valid_destination(rest) {
                return Some(Err(format!(
                    "{on} needs the destination after it ({on}NUMBER)"
                )));
            }
            return Some(Ok(FeatureCode {
                when,
                to: Some(rest.to_owned()),
            }));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_codes() {
        assert_eq!(
            feature_code("*72103"),
            Some(Ok(FeatureCode {
                when: ForwardWhen::Always,
                to: Some("103".into())
            }))
        );
        assert_eq!(
            feature_code("*73"),
            Some(Ok(FeatureCode {
                when: ForwardWhen::Always,
                to: None
            }))
        );
        assert_eq!(
            feature_code("*90+4930123"),
            Some(Ok(FeatureCode {
                when: ForwardWhen::Busy,
                to: Some("+4930123".into())
            }))
        );
        assert!(matches!(feature_code("*52"), Some(Err(_))));
        assert!(matches!(feature_code("*72x1"), Some(Err(_))));
        assert_eq!(feature_code("103"), None);
        assert_eq!(feature_code("*7"), None);
        assert_eq!(feature_code("**101"), None);
    }

    #[test]
    fn destinations() {
        assert!(valid_destination("103"));
        assert!(valid_destination("+4930123456"));
        assert!(!valid_destination("+"));
        assert!(!valid_destination(""));
        assert!(!valid_destination("10a"));
        assert!(!valid_destination(&"1".repeat(21)));
    }

    #[test]
    fn set_and_target() {
        let mut h = CallHandling::default();
        assert_eq!(h.target(ForwardWhen::Busy), None);
        h.set(ForwardWhen::Busy, Some("103".into()));
        assert_eq!(h.target(ForwardWhen::Busy), Some("103"));
        h.set(ForwardWhen::Busy, None);
        assert_eq!(h, CallHandling::default());
        h.no_answer_secs = 0;
        assert_eq!(h.no_answer_after(), Duration::from_secs(1));
    }
}
