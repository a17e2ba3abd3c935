//! The failed-authentication guard: counts failures per source address and per account,
//! bans a source temporarily after too many (the ban doubling with each repeat, up to a
//! ceiling), and locks an account against every address but those that recently authenticated
//! as it (so a phone keeps working while someone guesses its password elsewhere). Sans-IO:
//! time comes in as unix seconds; the SIP core, the control socket and the dashboard share one
//! [`SharedGuard`].

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    /// Failures from one source within `window_secs` that ban it.
    pub max_failures: u32,
    /// The window failures are counted in.
    pub window_secs: u64,
    /// The first ban's length; each further ban of the same source doubles it.
    pub ban_secs: u64,
    /// The longest ban.
    pub max_ban_secs: u64,
    /// Failures against one account (from any source) within the window that lock it against
    /// addresses it was not recently authenticated from.
    pub account_max_failures: u32,
    /// How long an address that authenticated as an account stays exempt from its lock.
    pub trusted_secs: u64,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            max_failures: 5,
            window_secs: 600,
            ban_secs: 300,
            max_ban_secs: 86_400,
            account_max_failures: 10,
            trusted_secs: 86_400,
        }
    }
}

/// Addresses tracked at most; beyond it the quietest are forgotten first (bans are kept).
const MAX_SOURCES: usize = 100_000;

#[derive(Debug, Default)]
struct Source {
    failures: VecDeque<u64>,
    /// Bans so far (the next one lasts `ban_secs << bans`).
    bans: u32,
    banned_until: u64,
    banned_since: u64,
    last_seen: u64,
    last_account: Option<String>,
}

#[derive(Debug, Default)]
struct Account {
    failures: VecDeque<u64>,
    locks: u32,
    locked_until: u64,
    /// Addresses that authenticated as this account, and when they last did.
    trusted: HashMap<IpAddr, u64>,
}

/// A banned source, for the dashboard and `pasarela bans list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    pub source: IpAddr,
    /// Unix seconds.
    pub since: u64,
    pub until: u64,
    /// How many times this source was banned (this ban included).
    pub count: u32,
    /// The account it tried last.
    pub account: Option<String>,
}

/// A locked account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub account: String,
    pub until: u64,
}

/// The guard's state.
#[derive(Debug, Default)]
pub struct Guard {
    settings: GuardSettings,
    sources: HashMap<IpAddr, Source>,
    accounts: HashMap<String, Account>,
}

/// The guard shared by the SIP core, the control socket and the dashboard.
#[derive(Debug, Clone, Default)]
pub struct SharedGuard(Arc<Mutex<Guard>>);

impl SharedGuard {
    pub fn new(settings: GuardSettings) -> SharedGuard {
        SharedGuard(Arc::new(Mutex::new(Guard::new(settings))))
    }

    /// The guard, locked (a poisoned lock is taken over: the state stays usable).
    pub fn lock(&self) -> MutexGuard<'_, Guard> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Guard {
    pub fn new(settings: GuardSettings) -> Guard {
        Guard {
            settings,
            ..Guard::default()
        }
    }

    pub fn settings(&self) -> GuardSettings {
        self.settings
    }

    pub fn set_settings(&mut self, settings: GuardSettings) {
        self.settings = settings;
    }

    /// Whether `source` is banned at `now`.
    pub fn banned(&self, source: IpAddr, now: u64) -> bool {
        self.sources
            .get(&source)
            .is_some_and(|s| s.banned_until > now)
    }

    /// Whether `source` may try to authenticate as `account`: false while the account is
    /// locked, unless `source` recently authenticated as it.
    pub fn account_open(&self, account: &str, source: IpAddr, now: u64) -> bool {
        let Some(a) = self.accounts.get(account) else {
            return true;
        };
        a.locked_until <= now || self.trusted(a, source, now)
    }

    fn trusted(&self, a: &Account, source: IpAddr, now: u64) -> bool {
        a.trusted
            .get(&source)
            .is_some_and(|t| now.saturating_sub(*t) < self.settings.trusted_secs)
    }

    /// Counts a failed authentication from `source` (as `account`, when it named a known one);
    /// returns the ban it started, if any.
    pub fn failed(&mut self, source: IpAddr, account: Option<&str>, now: u64) -> Option<Ban> {
        let st = self.settings;
        if let Some(name) = account {
            let trusted = self
                .accounts
                .get(name)
                .is_some_and(|a| self.trusted(a, source, now));
            // The phone's own address mistyping does not lock its account for everyone else.
            if !trusted {
                let a = self.accounts.entry(name.to_owned()).or_default();
                push_within(
                    &mut a.failures,
                    now,
                    st.window_secs,
                    st.account_max_failures,
                );
                if a.locked_until <= now
                    && a.failures.len() as u64 >= u64::from(st.account_max_failures)
                {
                    a.locked_until = now.saturating_add(backoff(st, a.locks));
                    a.locks = a.locks.saturating_add(1);
                    a.failures.clear();
                    tracing::warn!(
                        account = name,
                        until = a.locked_until,
                        "account locked after repeated failed authentications"
                    );
                }
            }
        }
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            self.forget_quietest(now);
        }
        let s = self.sources.entry(source).or_default();
        s.last_seen = now;
        if let Some(name) = account {
            s.last_account = Some(name.to_owned());
        }
        if s.banned_until > now {
            return None;
        }
        push_within(&mut s.failures, now, st.window_secs, st.max_failures);
        if (s.failures.len() as u64) < u64::from(st.max_failures) {
            return None;
        }
        s.banned_since = now;
        s.banned_until = now.saturating_add(backoff(st, s.bans));
        s.bans = s.bans.saturating_add(1);
        s.failures.clear();
        let ban = Ban {
            source,
            since: now,
            until: s.banned_until,
            count: s.bans,
            account: s.last_account.clone(),
        };
        tracing::warn!(%source, until = ban.until, count = ban.count, account = ?ban.account, "source banned after repeated failed authentications");
        Some(ban)
    }

    /// A successful authentication: the source's failures are forgotten and it is trusted
    /// for `account`.
    pub fn succeeded(&mut self, source: IpAddr, account: &str, now: u64) {
        if let Some(s) = self.sources.get_mut(&source) {
            s.failures.clear();
        }
        self.accounts
            .entry(account.to_owned())
            .or_default()
            .trusted
            .insert(source, now);
    }

    /// The sources banned at `now`, longest-banned last.
    pub fn bans(&self, now: u64) -> Vec<Ban> {
        let mut v: Vec<Ban> = self
            .sources
            .iter()
            .filter(|(_, s)| s.banned_until > now)
            .map(|(ip, s)| Ban {
                source: *ip,
                since: s.banned_since,
                until: s.banned_until,
                count: s.bans,
                account: s.last_account.clone(),
            })
            .collect();
        v.sort_by_key(|b| (b.until, b.source));
        v
    }

    /// The accounts locked at `now`.
    pub fn locks(&self, now: u64) -> Vec<Lock> {
        let mut v: Vec<Lock> = self
            .accounts
            .iter()
            .filter(|(_, a)| a.locked_until > now)
            .map(|(name, a)| Lock {
                account: name.clone(),
                until: a.locked_until,
            })
            .collect();
        v.sort_by(|a, b| a.account.cmp(&b.account));
        v
    }

    /// Lifts the ban of `source` (and forgets its failures and earlier bans); whether it was
    /// banned.
    pub fn lift(&mut self, source: IpAddr, now: u64) -> bool {
        match self.sources.remove(&source) {
            Some(s) => {
                tracing::info!(%source, "ban lifted");
                s.banned_until > now
            }
            None => false,
        }
    }

    /// Unlocks `account`; whether it was locked.
    pub fn unlock(&mut self, account: &str, now: u64) -> bool {
        match self.accounts.get_mut(account) {
            Some(a) => {
                let was = a.locked_until > now;
                a.locked_until = 0;
                a.locks = 0;
                a.failures.clear();
                was
            }
            None => false,
        }
    }

    /// Forgets what no longer matters: failures out of the window, and sources and accounts
    /// quiet for longer than the longest ban (so a returning attacker starts its bans afresh
    /// only after a day of silence).
    pub fn purge(&mut self, now: u64) {
        let st = self.settings;
        let keep_for = st.max_ban_secs.max(st.window_secs);
        self.sources.retain(|_, s| {
            drop_old(&mut s.failures, now, st.window_secs);
            s.banned_until > now || now.saturating_sub(s.last_seen) < keep_for
        });
        self.accounts.retain(|_, a| {
            drop_old(&mut a.failures, now, st.window_secs);
            a.trusted
                .retain(|_, t| now.saturating_sub(*t) < st.trusted_secs);
            a.locked_until > now || !a.failures.is_empty() || !a.trusted.is_empty()
        });
        crate::memory::shrink_map(&mut self.sources);
        crate::memory::shrink_map(&mut self.accounts);
    }

    fn forget_quietest(&mut self, now: u64) {
        self.purge(now);
        if self.sources.len() < MAX_SOURCES {
            return;
        }
        let victim = self
            .sources
            .iter()
            .filter(|(_, s)| s.banned_until <= now)
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(ip, _)| *ip);
        if let Some(ip) = victim {
            self.sources.remove(&ip);
        }
    }
}

/// The length of ban number `n` (0-based): `ban_secs · 2ⁿ`, at most `max_ban_secs`.
fn backoff(st: GuardSettings, n: u32) -> u64 {
    st.ban_secs
        .saturating_mul(1u64.checked_shl(n.min(63)).unwrap_or(u64::MAX))
        .min(st.max_ban_secs)
}

fn drop_old(q: &mut VecDeque<u64>, now: u64, window: u64) {
    while q.front().is_some_and(|t| now.saturating_sub(*t) >= window) {
        q.pop_front();
    }
}

fn push_within(q: &mut VecDeque<u64>, now: u64, window: u64, cap: u32) {
    drop_old(q, now, window);
    q.push_back(now);
    while q.len() > cap.max(1) as usize {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_is_banned_after_max_failures_and_bans_double() {
        let mut g = Guard::new(GuardSettings::default());
        let attacker = ip("203.0.113.66");
        for i in 0..4 {
            assert_eq!(g.failed(attacker, Some("100"), 1000 + i), None);
            assert!(!g.banned(attacker, 1000 + i));
        }
        let ban = g.failed(attacker, Some("100"), 1004).expect("banned");
        assert_eq!((ban.until, ban.count), (1004 + 300, 1));
        assert!(g.banned(attacker, 1100));
        assert!(!g.banned(ip("203.0.113.67"), 1100));
        assert_eq!(g.bans(1100).len(), 1);
        // Expired, then banned again: twice as long.
        assert!(!g.banned(attacker, 1304));
        for i in 0..5 {
            g.failed(attacker, None, 1400 + i);
        }
        assert_eq!(g.bans(1404).first().map(|b| b.until), Some(1404 + 600));
        // Lifted by hand.
        assert!(g.lift(attacker, 1500));
        assert!(!g.banned(attacker, 1500));
        assert!(g.bans(1500).is_empty());
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut g = Guard::new(GuardSettings::default());
        let s = ip("192.0.2.1");
        for i in 0..20 {
            assert_eq!(g.failed(s, None, 1000 + i * 200), None, "failure {i}");
        }
    }

    #[test]
    fn bans_never_exceed_the_ceiling() {
        let st = GuardSettings::default();
        assert_eq!(backoff(st, 0), 300);
        assert_eq!(backoff(st, 3), 2400);
        assert_eq!(backoff(st, 40), 86_400);
        assert_eq!(backoff(st, u32::MAX), 86_400);
    }

    #[test]
    fn a_locked_account_still_admits_its_own_phone() {
        let mut g = Guard::new(GuardSettings::default());
        let phone = ip("192.168.1.20");
        g.succeeded(phone, "100", 900);
        // Ten guessers, one failure each: no source ban, but the account locks.
        for i in 0..10u8 {
            g.failed(IpAddr::from([198, 51, 100, i]), Some("100"), 1000);
        }
        assert!(g.bans(1000).is_empty());
        assert_eq!(g.locks(1000).len(), 1);
        assert!(!g.account_open("100", ip("198.51.100.99"), 1001));
        assert!(g.account_open("100", phone, 1001));
        assert!(g.account_open("101", ip("198.51.100.99"), 1001));
        // The phone's own failures do not lock it.
        let mut g2 = Guard::new(GuardSettings::default());
        g2.succeeded(phone, "100", 900);
        for i in 0..4 {
            g2.failed(phone, Some("100"), 1000 + i);
        }
        assert!(g2.locks(1000).is_empty());
        assert!(g.unlock("100", 1001));
        assert!(g.account_open("100", ip("198.51.100.99"), 1001));
    }

    #[test]
    fn purge_forgets_quiet_sources_but_keeps_bans() {
        let mut g = Guard::new(GuardSettings::default());
        let s = ip("192.0.2.9");
        for i in 0..5 {
            g.failed(s, None, 1000 + i);
        }
        g.failed(ip("192.0.2.10"), None, 1000);
        g.purge(1100);
        assert!(g.banned(s, 1100));
        g.purge(1000 + 90_000);
        assert!(g.sources.is_empty());
    }
}
