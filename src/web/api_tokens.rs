//! Tokens for the JSON API: created in the dashboard (shown once), kept as SHA-256 hashes,
//! checked on every API request (`Authorization: Bearer TOKEN`) and revocable. Each has a
//! [`Scope`]: `read` tokens may only read, `admin` tokens may change things too.

use crate::store::api_tokens as store;
use crate::store::Connection;
use sha2::{Digest, Sha256};

use super::auth::{random_token, AuthError};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Reads only (`GET`): records, live state, trunks, messages.
    Read,
    /// Reads and changes (trunks, sending messages, USSD).
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// `read` or `admin`; anything else is `None`.
    pub fn parse(text: &str) -> Option<Scope> {
        match text.trim() {
            "read" => Some(Scope::Read),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// A token as the tokens page lists it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    /// Unix seconds.
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Creates an `admin` token called `name`; returns it (the only time it is seen in clear).
pub fn create(conn: &Connection, name: &str) -> Result<String, AuthError> {
    create_scoped(conn, name, Scope::Admin)
}

/// Creates a token called `name` with `scope`; returns it (the only time it is seen in clear).
pub fn create_scoped(conn: &Connection, name: &str, scope: Scope) -> Result<String, AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(AuthError::Invalid(
            "Give the token a name of 1 to 64 characters (what will use it).".into(),
        ));
    }
    let token = random_token();
    store::insert(conn, name, &hash(&token), scope.as_str(), now_unix())?;
    Ok(token)
}

/// Every token, newest first.
pub fn list(conn: &Connection) -> Result<Vec<TokenInfo>, AuthError> {
    let rows = store::list(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| TokenInfo {
            id: r.id,
            name: r.name,
            scope: Scope::parse(&r.scope).unwrap_or(Scope::Read),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        })
        .collect())
}

/// Revokes token `id`; whether it existed.
pub fn revoke(conn: &Connection, id: i64) -> Result<bool, AuthError> {
    Ok(store::delete(conn, id)?)
}

/// The name of the token `token` when it is valid (and notes its use, at most once a minute).
pub fn check(conn: &Connection, token: &str) -> Result<Option<String>, AuthError> {
    Ok(check_scoped(conn, token)?.map(|(name, _)| name))
}

/// The name and scope of the token `token` when it is valid (and notes its use, at most once
/// a minute). An unreadable scope reads as [`Scope::Read`].
pub fn check_scoped(conn: &Connection, token: &str) -> Result<Option<(String, Scope)>, AuthError> {
    if token.len() != 64 {
        return Ok(None);
    }
    let h = hash(token);
    let Some((name, last, scope)) = store::by_hash(conn, &h)? else {
        return Ok(None);
    };
    let now = now_unix();
    if last.is_none_or(|t| now - t >= 60) {
        store::mark_used(conn, &h, now)?;
    }
    Ok(Some((name, Scope::parse(&scope).unwrap_or(Scope::Read))))
}

/// A valid token as read (through a read-only connection): its name, scope, and whether its
/// use is due to be noted ([`note_use`], at most once a minute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub scope: Scope,
    /// The token's hash when its last use is older than a minute.
    pub note: Option<String>,
}

/// [`check_scoped`] without writing: what the token is, and whether its use must be noted.
pub fn find(conn: &Connection, token: &str) -> Result<Option<Found>, AuthError> {
    if token.len() != 64 {
        return Ok(None);
    }
    let h = hash(token);
    let Some((name, last, scope)) = store::by_hash(conn, &h)? else {
        return Ok(None);
    };
    let due = last.is_none_or(|t| now_unix() - t >= 60);
    Ok(Some(Found {
        name,
        scope: Scope::parse(&scope).unwrap_or(Scope::Read),
        note: due.then_some(h),
    }))
}

/// Notes that the token with hash `hash` was used now.
pub fn note_use(conn: &Connection, hash: &str) -> Result<(), AuthError> {
    store::mark_used(conn, hash, now_unix())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_check_revoke() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = crate::cdr::CdrDb::open(&dir.path().join("t.db"))?;
        let token = create(&db.conn, "accounting")?;
        assert_eq!(token.len(), 64);
        assert_eq!(check(&db.conn, &token)?, Some("accounting".into()));
        assert_eq!(check(&db.conn, &"0".repeat(64))?, None);
        assert_eq!(check(&db.conn, "short")?, None);
        let listed = list(&db.conn)?;
        assert_eq!(listed.len(), 1);
        assert!(listed[0].last_used_at.is_some());
        assert!(revoke(&db.conn, listed[0].id)?);
        assert_eq!(check(&db.conn, &token)?, None);
        assert!(create(&db.conn, "  ").is_err());
        let reader = create_scoped(&db.conn, "monitoring", Scope::Read)?;
        assert_eq!(
            check_scoped(&db.conn, &reader)?,
            Some(("monitoring".into(), Scope::Read))
        );
        assert_eq!(list(&db.conn)?[0].scope, Scope::Read);
        Ok(())
    }
}
