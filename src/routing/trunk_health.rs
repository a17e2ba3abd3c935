//! Which trunks are down, as the OPTIONS qualify of `serve` last saw them: written by the SIP
//! core when a trunk's reachability changes, read by the router (a down trunk is skipped, and
//! the explainer says since when) and by the dashboard. PSTN lines that cannot take a call
//! (an FXO port in alarm, a channel that cannot be opened) are listed apart, with the reason,
//! by whoever watches the lines.

use std::collections::HashMap;
use std::sync::RwLock;

/// Trunk name → when it went down (a date for the explainer). Trunks not listed are usable.
#[derive(Debug, Default)]
pub struct TrunkHealth {
    down: RwLock<HashMap<String, String>>,
    /// Line name → why it cannot take calls now.
    lines_out: RwLock<HashMap<String, String>>,
}

impl TrunkHealth {
    pub fn new() -> TrunkHealth {
        TrunkHealth::default()
    }

    /// Trunk `name` stopped answering at `since`.
    pub fn set_down(&self, name: &str, since: String) {
        if let Ok(mut d) = self.down.write() {
            d.insert(name.to_owned(), since);
        }
    }

    /// Trunk `name` answers (again), or is no longer qualified.
    pub fn set_up(&self, name: &str) {
        if let Ok(mut d) = self.down.write() {
            d.remove(name);
        }
    }

    /// Since when `name` is down; `None` when it is usable.
    pub fn down_since(&self, name: &str) -> Option<String> {
        self.down.read().ok()?.get(name).cloned()
    }

    /// PSTN line `name` cannot take calls now, because `why` (alarm, channel not opened).
    pub fn set_line_out(&self, name: &str, why: String) {
        if let Ok(mut d) = self.lines_out.write() {
            d.insert(name.to_owned(), why);
        }
    }

    /// PSTN line `name` can take calls (again).
    pub fn set_line_in(&self, name: &str) {
        if let Ok(mut d) = self.lines_out.write() {
            d.remove(name);
        }
    }

    /// Why line `name` cannot take calls; `None` when it can (or is not a line).
    pub fn line_out(&self, name: &str) -> Option<String> {
        self.lines_out.read().ok()?.get(name).cloned()
    }

    /// Forgets trunks that are no longer configured (after a reload).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut d) = self.down.write() {
            d.retain(|k, _| keep(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_then_up() {
        let h = TrunkHealth::new();
        assert_eq!(h.down_since("a"), None);
        h.set_down("a", "then".into());
        assert_eq!(h.down_since("a").as_deref(), Some("then"));
        h.retain(|n| n == "a");
        assert!(h.down_since("a").is_some());
        h.set_up("a");
        assert_eq!(h.down_since("a"), None);
    }

    #[test]
    fn lines_out_are_kept_apart_from_the_qualify() {
        let h = TrunkHealth::new();
        h.set_line_out("fxo1", "in alarm".into());
        // The qualify's "up" (every trunk is set up when the plans are loaded) does not
        // bring a line in alarm back.
        h.set_up("fxo1");
        assert_eq!(h.line_out("fxo1").as_deref(), Some("in alarm"));
        assert_eq!(h.down_since("fxo1"), None);
        h.set_line_in("fxo1");
        assert_eq!(h.line_out("fxo1"), None);
    }
}
