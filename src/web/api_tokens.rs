//! Tokens for the JSON API: created in the dashboard (shown once), kept as SHA-256 hashes,
//! checked on every API request (`Authorization: Bearer TOKEN`) and revocable. Each has a
//! [`Scope`]: `read` tokens may only read, `admin` tokens may change things too.

use rusqlite::{params, Connection, OptionalExtension};
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
    conn.execute(
        "INSERT INTO api_tokens (name, token_hash, created_at, scope) VALUES (?1, ?2, ?3, ?4)",
        params![name, hash(&token), now_unix(), scope.as_str()],
    )?;
    Ok(token)
}

/// Every token, newest first.
pub fn list(conn: &Connection) -> Result<Vec<TokenInfo>, AuthError> {
    let mut stmt = conn.prepare(
        "SELECT id, name, created_at, last_used_at, scope FROM api_tokens ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(TokenInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            scope: Scope::parse(&r.get::<_, String>(4)?).unwrap_or(Scope::Read),
            created_at: r.get(2)?,
            last_used_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Revokes token `id`; whether it existed.
pub fn revoke(conn: &Connection, id: i64) -> Result<bool, AuthError> {
    Ok(conn.execute("DELETE FROM api_tokens WHERE id = ?1", [id])? > 0)
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
    let found: Option<(String, Option<i64>, String)> = conn
        .query_row(
            "SELECT name, last_used_at, scope FROM api_tokens WHERE token_hash = ?1",
            [&h],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((name, last, scope)) = found else {
        return Ok(None);
    };
    let now = now_unix();
    if last.is_none_or(|t| now - t >= 60) {
        conn.execute(
            "UPDATE api_tokens SET last_used_at = ?1 WHERE token_hash = ?2",
            params![now, h],
        )?;
    }
    Ok(Some((name, Scope::parse(&scope).unwrap_or(Scope::Read))))
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
