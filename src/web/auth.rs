//! Dashboard accounts and sessions: argon2id password hashes in `web_users`, login sessions in
//! `web_sessions` (migration `0004_web_users.sql`), the session cookie, CSRF tokens and the
//! per-address limit on failed logins.
//!
//! A session is a random 256-bit token sent as the `pasarela_session` cookie (HttpOnly,
//! SameSite=Strict, Path=/); the database keeps only its SHA-256, with the user, an expiry and
//! the session's CSRF token. Pages without a session (login, first-run setup) use a
//! double-submit token instead: a random `pasarela_csrf` cookie (SameSite=Strict) that the form
//! must repeat. Tokens are compared in constant time. Logins are limited per source address and
//! backed off per user, bounded so that the right password is never locked out for long, and a
//! browser that logged in before (its device cookie, `web_devices`) is not held back at all.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::store::web_users;
use crate::store::{Connection, StoreError};
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "pasarela_session";
/// The pre-session CSRF cookie's name (login and setup forms).
pub const CSRF_COOKIE: &str = "pasarela_csrf";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Shortest accepted password (the rest of the policy is [`crate::security::password`]).
pub const MIN_PASSWORD_LEN: usize = crate::security::password::MIN_LEN;

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The password could not be hashed.
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// An account already exists (setup is over).
    #[error("an administrator account already exists")]
    AlreadySetUp,
    /// The username or password does not meet the rules.
    #[error("{0}")]
    Invalid(String),
}

/// A logged-in user, as the pages see it.
pub use crate::store::web_users::Session;

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new random 256-bit token, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

pub(crate) fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares two tokens without an early exit on the first difference.
pub fn tokens_equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

/// A `Set-Cookie` value for `name`; `max_age` zero deletes it.
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        max_age.as_secs()
    )
}

/// Whether any dashboard account exists.
pub fn has_users(conn: &Connection) -> Result<bool, AuthError> {
    Ok(web_users::has_users(conn)?)
}

pub(crate) fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

pub(crate) fn check_new_account(username: &str, password: &str) -> Result<(), AuthError> {
    if username.is_empty() || username.len() > 64 {
        return Err(AuthError::Invalid(
            "The username must have 1 to 64 characters.".into(),
        ));
    }
    if username
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(AuthError::Invalid(
            "The username may not contain spaces or control characters.".into(),
        ));
    }
    if let Err(weak) = crate::security::password::check(password, username) {
        return Err(AuthError::Invalid(format!("The password {weak}.")));
    }
    Ok(())
}

/// Creates the first (administrator) account; refused once any account exists. The check and
/// the insert are one transaction, so two racing setup forms cannot both succeed.
pub fn create_first_user(
    conn: &mut Connection,
    username: &str,
    password: &str,
) -> Result<i64, AuthError> {
    check_new_account(username, password)?;
    let hash = hash_password(password)?;
    let id = web_users::insert_first_user(conn, username, &hash, now_unix())?
        .ok_or(AuthError::AlreadySetUp)?;
    tracing::info!(username, "dashboard administrator created");
    Ok(id)
}

/// The id and stored hash of `username`, for [`check_password`] (a quick read, so the
/// connection is not held during the deliberately slow hash check).
pub fn user_hash(conn: &Connection, username: &str) -> Result<Option<(i64, String)>, AuthError> {
    Ok(web_users::user_hash(conn, username)?)
}

/// The user id of `user` (from [`user_hash`]) when `password` is right. Slow by design
/// (argon2id); call it off the async runtime.
pub fn check_password(user: Option<(i64, String)>, password: &str) -> Option<i64> {
    let Some((id, stored)) = user else {
        // Spend the same time as a real check, so timing does not reveal usernames.
        let _ = hash_password(password);
        return None;
    };
    let Ok(parsed) = PasswordHash::new(&stored) else {
        tracing::error!(user_id = id, "stored password hash is unreadable");
        return None;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
        .then_some(id)
}

/// The user id when `password` is right for `username`.
pub fn verify_login(
    conn: &Connection,
    username: &str,
    password: &str,
) -> Result<Option<i64>, AuthError> {
    Ok(check_password(user_hash(conn, username)?, password))
}

/// Starts a session for `user_id` from `address`; returns the cookie token. Expired sessions
/// are purged.
pub fn create_session(conn: &Connection, user_id: i64, address: &str) -> Result<String, AuthError> {
    let now = now_unix();
    let token = random_token();
    let ttl = i64::try_from(SESSION_TTL.as_secs()).unwrap_or(i64::MAX);
    web_users::insert_session(
        conn,
        &token_hash(&token),
        user_id,
        &random_token(),
        now.saturating_add(ttl),
        now,
        address,
    )?;
    Ok(token)
}

/// The live session of cookie token `token`.
pub fn session(conn: &Connection, token: &str) -> Result<Option<Session>, AuthError> {
    Ok(web_users::session(conn, &token_hash(token), now_unix())?)
}

/// Ends the session of cookie token `token`.
pub fn end_session(conn: &Connection, token: &str) -> Result<(), AuthError> {
    web_users::delete_session(conn, &token_hash(token), None)?;
    Ok(())
}

/// The cookie that marks a browser which logged in before (see [`remember_device`]).
pub const DEVICE_COOKIE: &str = "pasarela_device";
/// How long a device stays known after its last login.
pub const DEVICE_TTL: Duration = Duration::from_secs(90 * 86_400);

/// Records the browser of a successful login of `user_id` as a known device; returns the
/// cookie token (only its SHA-256 is stored).
pub fn remember_device(conn: &Connection, user_id: i64) -> Result<String, AuthError> {
    let now = now_unix();
    let token = random_token();
    let ttl = i64::try_from(DEVICE_TTL.as_secs()).unwrap_or(i64::MAX);
    web_users::insert_device(
        conn,
        &token_hash(&token),
        user_id,
        now.saturating_add(ttl),
        now,
    )?;
    Ok(token)
}

/// The user a device cookie token belongs to, while it is valid.
pub fn device_user(conn: &Connection, token: &str) -> Result<Option<i64>, AuthError> {
    Ok(web_users::device_user(
        conn,
        &token_hash(token),
        now_unix(),
    )?)
}

/// Why a login attempt is held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holdback {
    /// Too many failures from this address; try again after this long.
    Source(Duration),
    /// Too many recent failures for this user; try again after this long (at most
    /// [`LoginLimiter::MAX_USER_DELAY`]).
    User(Duration),
}

#[derive(Debug, Default)]
struct LimiterState {
    /// Per address: window start and failures in it.
    sources: HashMap<IpAddr, (Instant, u32)>,
    /// Per user name: consecutive failures and the last one.
    users: HashMap<String, (u32, Instant)>,
}

/// The login limiter. Per source address: at most [`LoginLimiter::MAX_FAILURES`] failures in
/// [`LoginLimiter::WINDOW`], then that address waits for the window's end. Per user: after
/// [`LoginLimiter::FREE_USER_FAILURES`] failures in a row each further attempt waits a delay
/// that doubles, bounded by [`LoginLimiter::MAX_USER_DELAY`] — so guessing from many
/// addresses is slowed, and the right password always gets through within a minute. A
/// browser that logged in as the user before ([`DEVICE_COOKIE`]) is never held back.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    state: Mutex<LimiterState>,
}

impl LoginLimiter {
    /// Failed attempts allowed per address per window.
    pub const MAX_FAILURES: u32 = 5;
    /// The per-address window.
    pub const WINDOW: Duration = Duration::from_secs(300);
    /// Failures of a user before its attempts are delayed.
    pub const FREE_USER_FAILURES: u32 = 3;
    /// The longest per-user delay.
    pub const MAX_USER_DELAY: Duration = Duration::from_secs(60);
    /// Addresses and users tracked at most (old entries are dropped first).
    const MAX_TRACKED: usize = 10_000;

    fn lock(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an attempt from `ip` for `user` may be checked now; `known_device`: the
    /// browser presented a valid device cookie of that user.
    pub fn check(
        &self,
        ip: IpAddr,
        user: &str,
        known_device: bool,
        now: Instant,
    ) -> Result<(), Holdback> {
        if known_device {
            return Ok(());
        }
        let st = self.lock();
        if let Some((start, n)) = st.sources.get(&ip) {
            let age = now.saturating_duration_since(*start);
            if age < Self::WINDOW && *n >= Self::MAX_FAILURES {
                return Err(Holdback::Source(Self::WINDOW - age));
            }
        }
        if let Some((n, last)) = st.users.get(user) {
            let wait = Self::user_delay(*n);
            let since = now.saturating_duration_since(*last);
            if since < wait {
                return Err(Holdback::User(wait - since));
            }
        }
        Ok(())
    }

    /// The delay after `n` consecutive failures of a user.
    fn user_delay(n: u32) -> Duration {
        if n < Self::FREE_USER_FAILURES {
            return Duration::ZERO;
        }
        let exp = (n - Self::FREE_USER_FAILURES).min(16);
        Duration::from_secs(1u64 << exp).min(Self::MAX_USER_DELAY)
    }

    /// Counts a failed attempt from `ip` for `user`.
    pub fn failed(&self, ip: IpAddr, user: &str, now: Instant) {
        let mut st = self.lock();
        if st.sources.len() >= Self::MAX_TRACKED {
            st.sources
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < Self::WINDOW);
        }
        let entry = st.sources.entry(ip).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= Self::WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if st.users.len() >= Self::MAX_TRACKED && !st.users.contains_key(user) {
            st.users
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < Self::MAX_USER_DELAY);
            if st.users.len() >= Self::MAX_TRACKED {
                return;
            }
        }
        let u = st.users.entry(user.to_owned()).or_insert((0, now));
        *u = (u.0.saturating_add(1), now);
    }

    /// A successful login: the user's back-off starts again.
    pub fn succeeded(&self, user: &str) {
        self.lock().users.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        drop(crate::store::Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        (dir, conn)
    }

    #[test]
    fn first_user_then_login_and_sessions() {
        let (_d, mut conn) = db();
        assert!(!has_users(&conn).unwrap());
        assert!(matches!(
            create_first_user(&mut conn, "admin", "short"),
            Err(AuthError::Invalid(_))
        ));
        let id = create_first_user(&mut conn, "admin", "correct horse").unwrap();
        assert!(has_users(&conn).unwrap());
        assert!(matches!(
            create_first_user(&mut conn, "other", "correct horse"),
            Err(AuthError::AlreadySetUp)
        ));
        let (_, stored) = user_hash(&conn, "admin").unwrap().unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert_eq!(
            verify_login(&conn, "admin", "correct horse").unwrap(),
            Some(id)
        );
        assert_eq!(verify_login(&conn, "admin", "wrong horse").unwrap(), None);
        assert_eq!(
            verify_login(&conn, "nobody", "correct horse").unwrap(),
            None
        );

        let token = create_session(&conn, id, "127.0.0.1").unwrap();
        assert_eq!(token.len(), 64);
        let s = session(&conn, &token).unwrap().unwrap();
        assert_eq!(s.username, "admin");
        assert_eq!(s.csrf.len(), 64);
        assert!(session(&conn, "forged").unwrap().is_none());
        end_session(&conn, &token).unwrap();
        assert!(session(&conn, &token).unwrap().is_none());
    }

    #[test]
    fn tokens_and_cookies() {
        assert!(tokens_equal("abc", "abc"));
        assert!(!tokens_equal("abc", "abd"));
        assert!(!tokens_equal("", ""));
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=1; pasarela_session=xyz ; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn limiter_blocks_a_source_until_the_window_ends() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..LoginLimiter::MAX_FAILURES {
            // Different user names: only the per-source limit applies.
            let user = format!("u{i}");
            assert_eq!(l.check(ip, &user, false, t0), Ok(()));
            l.failed(ip, &user, t0);
        }
        assert!(matches!(
            l.check(ip, "admin", false, t0),
            Err(Holdback::Source(_))
        ));
        assert_eq!(
            l.check("127.0.0.2".parse().unwrap(), "admin", false, t0),
            Ok(())
        );
        assert_eq!(
            l.check(ip, "admin", false, t0 + LoginLimiter::WINDOW),
            Ok(())
        );
        // A browser that logged in before is not held back.
        assert_eq!(l.check(ip, "admin", true, t0), Ok(()));
    }

    #[test]
    fn per_user_backoff_is_bounded() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        // A thousand guesses from a thousand addresses.
        for i in 0..1000u32 {
            let ip = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            l.failed(ip, "admin", t0);
        }
        let me: IpAddr = "192.0.2.1".parse().unwrap();
        match l.check(me, "admin", false, t0) {
            Err(Holdback::User(d)) => assert!(d <= LoginLimiter::MAX_USER_DELAY, "{d:?}"),
            other => panic!("{other:?}"),
        }
        // Never locked out: after the bounded delay the right password may be tried.
        assert_eq!(
            l.check(me, "admin", false, t0 + LoginLimiter::MAX_USER_DELAY),
            Ok(())
        );
        assert_eq!(l.check(me, "admin", true, t0), Ok(()));
        l.succeeded("admin");
        assert_eq!(l.check(me, "admin", false, t0), Ok(()));
    }

    #[test]
    fn devices_are_remembered_per_user() {
        let (_d, mut conn) = db();
        let id = create_first_user(&mut conn, "admin", "correct horse").unwrap();
        let token = remember_device(&conn, id).unwrap();
        assert_eq!(device_user(&conn, &token).unwrap(), Some(id));
        assert_eq!(device_user(&conn, "forged").unwrap(), None);
    }
}
