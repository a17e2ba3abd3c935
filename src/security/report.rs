//! The text report of bans and account locks, as `pasarela bans list` prints it.

use std::fmt::Write as _;

use super::guard::Guard;

/// One line per banned source and per locked account; a sentence when there are none.
pub fn bans_text(guard: &Guard, now: u64) -> String {
    let bans = guard.bans(now);
    let locks = guard.locks(now);
    let mut out = String::new();
    if bans.is_empty() {
        out.push_str("no banned sources\n");
    } else {
        let _ = writeln!(
            out,
            "{:<40} {:>10} {:>5}  last extension tried",
            "banned source", "seconds left", "bans"
        );
        for b in &bans {
            let _ = writeln!(
                out,
                "{:<40} {:>10} {:>5}  {}",
                b.source.to_string(),
                b.until.saturating_sub(now),
                b.count,
                b.account.as_deref().unwrap_or("-")
            );
        }
    }
    for l in &locks {
        let _ = writeln!(
            out,
            "extension {} locked for {} s against addresses it was not registered from",
            l.account,
            l.until.saturating_sub(now)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::guard::GuardSettings;

    #[test]
    fn lists_bans_and_locks() {
        let mut g = Guard::new(GuardSettings::default());
        assert_eq!(bans_text(&g, 0), "no banned sources\n");
        let ip: std::net::IpAddr = "127.0.0.66".parse().unwrap();
        for i in 0..5 {
            g.failed(ip, Some("100"), 1000 + i);
        }
        let text = bans_text(&g, 1004);
        assert!(
            text.contains("127.0.0.66") && text.contains("300") && text.contains("100"),
            "{text}"
        );
    }
}
