//! Dashboard accounts and sessions: argon2id password hashes in `web_users`, login sessions in
//! `web_sessions` (migration `0004_web_users.sql`), the session cookie, CSRF tokens and the
//! per-address limit on failed logins.
//!
//! A session is a random 256-bit token sent as the `pasarela_session` cookie (HttpOnly,
//! SameSite=Strict, Path=/); the database keeps only its SHA-256, with the user, an expiry and
//! the session's CSRF token. Pages without a session (login, first-run setup) use a
//! double-submit token instead: a random `pasarela_csrf` cookie (SameSite=Strict) that the form
//! must repeat. Tokens are compared in constant time.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use axum::http::HeaderMap;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "pasarela_session";
/// The pre-session CSRF cookie's name (login and setup forms).
pub const CSRF_COOKIE: &str = "pasarela_csrf";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Shortest accepted password.
pub const MIN_PASSWORD_LEN: usize = 8;

/// Why an account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The database failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: i64,
    pub username: String,
    /// The token every POST form of this session carries.
    pub csrf: String,
}

fn now_unix() -> i64 {
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

fn token_hash(token: &str) -> String {
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
    let n: i64 = conn.query_row("SELECT count(*) FROM web_users", [], |r| r.get(0))?;
    Ok(n > 0)
}

fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

fn check_new_account(username: &str, password: &str) -> Result<(), AuthError> {
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
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::Invalid(format!(
            "The password must have at least {MIN_PASSWORD_LEN} characters."
        )));
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
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let n: i64 = tx.query_row("SELECT count(*) FROM web_users", [], |r| r.get(0))?;
    if n > 0 {
        return Err(AuthError::AlreadySetUp);
    }
    tx.execute(
        "INSERT INTO web_users (username, password_hash, created_at) VALUES (?1, ?2, ?3)",
        params![username, hash, now_unix()],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    tracing::info!(username, "dashboard administrator created");
    Ok(id)
}

/// The id and stored hash of `username`, for [`check_password`] (a quick read, so the
/// connection is not held during the deliberately slow hash check).
pub fn user_hash(conn: &Connection, username: &str) -> Result<Option<(i64, String)>, AuthError> {
    Ok(conn
        .query_row(
            "SELECT id, password_hash FROM web_users WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
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

/// Starts a session for `user_id`; returns the cookie token. Expired sessions are purged.
pub fn create_session(conn: &Connection, user_id: i64) -> Result<String, AuthError> {
    let now = now_unix();
    conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?1", [now])?;
    let token = random_token();
    let ttl = i64::try_from(SESSION_TTL.as_secs()).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT INTO web_sessions (token_hash, user_id, csrf, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            token_hash(&token),
            user_id,
            random_token(),
            now.saturating_add(ttl)
        ],
    )?;
    Ok(token)
}

/// The live session of cookie token `token`.
pub fn session(conn: &Connection, token: &str) -> Result<Option<Session>, AuthError> {
    Ok(conn
        .query_row(
            "SELECT s.user_id, u.username, s.csrf FROM web_sessions s \
             JOIN web_users u ON u.id = s.user_id \
             WHERE s.token_hash = ?1 AND s.expires_at > ?2",
            params![token_hash(token), now_unix()],
            |r| {
                Ok(Session {
                    user_id: r.get(0)?,
                    username: r.get(1)?,
                    csrf: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Ends the session of cookie token `token`.
pub fn end_session(conn: &Connection, token: &str) -> Result<(), AuthError> {
    conn.execute(
        "DELETE FROM web_sessions WHERE token_hash = ?1",
        [token_hash(token)],
    )?;
    Ok(())
}

/// Failed logins per source address: at most [`LoginLimiter::MAX_FAILURES`] in a window of
/// [`LoginLimiter::WINDOW`]; beyond that the address is refused until the window ends.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimiter {
    /// Failed attempts allowed per window.
    pub const MAX_FAILURES: u32 = 5;
    /// The window.
    pub const WINDOW: Duration = Duration::from_secs(300);
    /// Addresses tracked at most (old entries are dropped first).
    const MAX_TRACKED: usize = 10_000;

    /// Whether `ip` may try to log in now.
    pub fn allowed(&self, ip: IpAddr, now: Instant) -> bool {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip) {
            Some((start, n)) => {
                now.duration_since(*start) >= Self::WINDOW || *n < Self::MAX_FAILURES
            }
            None => true,
        }
    }

    /// Counts a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX_TRACKED {
            map.retain(|_, (start, _)| now.duration_since(*start) < Self::WINDOW);
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Self::WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
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
        let stored: String = conn
            .query_row("SELECT password_hash FROM web_users", [], |r| r.get(0))
            .unwrap();
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

        let token = create_session(&conn, id).unwrap();
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
    fn limiter_blocks_after_failures_until_the_window_ends() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..LoginLimiter::MAX_FAILURES {
            assert!(l.allowed(ip, t0));
            l.failed(ip, t0);
        }
        assert!(!l.allowed(ip, t0));
        assert!(l.allowed("127.0.0.2".parse().unwrap(), t0));
        assert!(l.allowed(ip, t0 + LoginLimiter::WINDOW));
    }
}
