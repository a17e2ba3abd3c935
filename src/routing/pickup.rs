//! Call pickup rules: the feature codes (`**101` picks up a call ringing at 101, `*8` the
//! oldest call ringing in the picker's groups) and who may pick up whose calls, as Asterisk's
//! `callgroup`/`pickupgroup`: each extension's calls belong to its call groups, and it may
//! pick up the calls of the groups in its pickup groups. With no group set anywhere (the small
//! office default) everyone may pick up everyone. Pure rules; the SIP core applies them
//! ([`crate::callctl`]), the store keeps the groups ([`crate::store`]).

use std::collections::HashMap;

/// The groups of one extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PickupGroups {
    /// The groups its incoming calls belong to (`call_group`).
    pub call: Vec<String>,
    /// The groups whose calls it may pick up (`pickup_group`).
    pub pickup: Vec<String>,
}

impl PickupGroups {
    pub fn is_empty(&self) -> bool {
        self.call.is_empty() && self.pickup.is_empty()
    }
}

/// Whether `name` can be a group: 1 to 32 letters, digits, `-` or `_`.
pub fn valid_group(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A list of groups as the dashboard and the store write it (`sales, support`): the groups,
/// or the first name that cannot be one.
pub fn parse_groups(text: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for g in text
        .split([',', ' '])
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        if !valid_group(g) {
            return Err(g.to_owned());
        }
        if !out.iter().any(|o| o == g) {
            out.push(g.to_owned());
        }
    }
    Ok(out)
}

/// Every extension's groups.
#[derive(Debug, Clone, Default)]
pub struct PickupPolicy {
    groups: HashMap<String, PickupGroups>,
}

impl PickupPolicy {
    pub fn new(groups: HashMap<String, PickupGroups>) -> PickupPolicy {
        PickupPolicy { groups }
    }

    /// The groups of extension `ext` (none when it has no entry).
    pub fn groups_of(&self, ext: &str) -> PickupGroups {
        self.groups.get(ext).cloned().unwrap_or_default()
    }

    /// Whether no extension has any group: everyone may pick up everyone.
    pub fn open(&self) -> bool {
        self.groups.values().all(PickupGroups::is_empty)
    }

    /// Whether extension `picker` may pick up a call ringing at extension `target`.
    pub fn may_pick_up(&self, picker: &str, target: &str) -> bool {
        if picker == target {
            return false;
        }
        if self.open() {
            return true;
        }
        let (Some(p), Some(t)) = (self.groups.get(picker), self.groups.get(target)) else {
            return false;
        };
        p.pickup.iter().any(|g| t.call.contains(g))
    }
}

/// What a pickup feature code asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickupCode {
    /// The call ringing at this extension (`**101`).
    Directed(String),
    /// The oldest call ringing in the picker's groups (`*8`).
    Group,
}

/// The pickup feature codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickupCodes {
    /// The prefix of directed pickup, followed by the extension (`**`).
    pub directed: String,
    /// Group pickup (`*8`).
    pub group: String,
}

impl Default for PickupCodes {
    fn default() -> Self {
        PickupCodes {
            directed: "**".into(),
            group: "*8".into(),
        }
    }
}

impl PickupCodes {
    /// The pickup code in `dialled`, if it is one.
    pub fn parse(&self, dialled: &str) -> Option<PickupCode> {
        if !self.group.is_empty() && dialled == self.group {
            return Some(PickupCode::Group);
        }
        let ext = dialled.strip_prefix(self.directed.as_str())?;
        if self.directed.is_empty() || ext.is_empty() || !ext.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(PickupCode::Directed(ext.to_owned()))
    }
}

/// The call forwarding codes ([`crate::routing::forwarding::feature_code`]), which pickup
/// codes must not shadow.
const FORWARDING_CODES: [&str; 6] = ["*72", "*73", "*90", "*91", "*52", "*53"];

/// Why `code` cannot be a pickup code: `*`, `#` and digits, starting with `*` or `#`, 1 to 8
/// long, and no prefix of a call forwarding code (nor one of them).
pub fn check_code(code: &str) -> Result<(), String> {
    let ok_chars = code
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#');
    if code.is_empty() || code.len() > 8 || !ok_chars || !code.starts_with(['*', '#']) {
        return Err(format!(
            "`{code}` is not a feature code (`*` or `#` first, then `*`, `#` or digits; up to 8)"
        ));
    }
    if let Some(f) = FORWARDING_CODES
        .iter()
        .find(|f| f.starts_with(code) || code.starts_with(*f))
    {
        return Err(format!(
            "`{code}` clashes with the call forwarding code {f}"
        ));
    }
    Ok(())
}

/// Every feature code a phone can dial, with what it does, for the phone setup page.
pub fn feature_codes(codes: &PickupCodes) -> Vec<(String, String)> {
    let mut out = vec![
        (
            format!("{}NUMBER", codes.directed),
            "pick up the call ringing at extension NUMBER".to_owned(),
        ),
        (
            codes.group.clone(),
            "pick up the oldest call ringing in your pickup groups".to_owned(),
        ),
    ];
    for (code, what) in [
        ("*72NUMBER", "forward every call to NUMBER"),
        ("*73", "stop forwarding every call"),
        ("*90NUMBER", "forward calls when busy to NUMBER"),
        ("*91", "stop forwarding when busy"),
        ("*52NUMBER", "forward unanswered calls to NUMBER"),
        ("*53", "stop forwarding unanswered calls"),
    ] {
        out.push((code.to_owned(), what.to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[(&str, &[&str], &[&str])]) -> PickupPolicy {
        PickupPolicy::new(
            entries
                .iter()
                .map(|(e, c, p)| {
                    (
                        e.to_string(),
                        PickupGroups {
                            call: c.iter().map(|s| s.to_string()).collect(),
                            pickup: p.iter().map(|s| s.to_string()).collect(),
                        },
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn codes() {
        let c = PickupCodes::default();
        assert_eq!(c.parse("**101"), Some(PickupCode::Directed("101".into())));
        assert_eq!(c.parse("*8"), Some(PickupCode::Group));
        assert_eq!(c.parse("**"), None);
        assert_eq!(c.parse("**1a"), None);
        assert_eq!(c.parse("*81"), None);
        assert_eq!(c.parse("*72101"), None);
        assert_eq!(c.parse("101"), None);
    }

    #[test]
    fn groups_decide_like_asterisk() {
        // Nothing set anywhere: everyone picks up everyone (but not itself).
        let open = policy(&[("101", &[], &[])]);
        assert!(open.may_pick_up("102", "101"));
        assert!(!open.may_pick_up("101", "101"));
        let p = policy(&[
            ("101", &["sales"], &["sales"]),
            ("102", &["sales"], &["sales", "support"]),
            ("103", &["support"], &[]),
        ]);
        assert!(p.may_pick_up("102", "101"));
        assert!(p.may_pick_up("101", "102"));
        assert!(p.may_pick_up("102", "103"));
        assert!(!p.may_pick_up("101", "103"));
        assert!(!p.may_pick_up("103", "101"));
        // An extension without groups, once groups are in use, is neither picker nor target.
        assert!(!p.may_pick_up("104", "101"));
        assert!(!p.may_pick_up("102", "104"));
    }

    #[test]
    fn configured_codes() {
        assert!(check_code("**").is_ok());
        assert!(check_code("*8").is_ok());
        assert!(check_code("#8").is_ok());
        assert!(check_code("*7").is_err(), "would shadow *72");
        assert!(check_code("*721").is_err());
        assert!(check_code("8").is_err());
        assert!(check_code("*8a").is_err());
        assert!(check_code("").is_err());
        let c = PickupCodes {
            directed: "#9".into(),
            group: "*1".into(),
        };
        assert_eq!(c.parse("#9101"), Some(PickupCode::Directed("101".into())));
        assert_eq!(c.parse("*1"), Some(PickupCode::Group));
        assert_eq!(feature_codes(&c)[0].0, "#9NUMBER");
    }

    #[test]
    fn group_lists() {
        assert_eq!(
            parse_groups("sales, support,sales"),
            Ok(vec!["sales".to_string(), "support".to_string()])
        );
        assert_eq!(parse_groups(""), Ok(vec![]));
        assert_eq!(parse_groups("a;b"), Err("a;b".into()));
    }
}
