//! Tokens of the JSON API as stored (`api_tokens`): only their SHA-256 hashes, with a name, a
//! scope (`read` or `admin`) and when they were created and last used. Token generation,
//! hashing and the scope rules stay in `web::api_tokens`.

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// A stored token (never the token itself): id, name, scope as stored, created, last used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub scope: String,
    /// Unix seconds.
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// Stores a token by its hash.
pub fn insert(
    conn: &Connection,
    name: &str,
    token_hash: &str,
    scope: &str,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO api_tokens (name, token_hash, created_at, scope) VALUES (?1, ?2, ?3, ?4)",
        params![name, token_hash, now, scope],
    )?;
    Ok(())
}

/// Every token, newest first.
pub fn list(conn: &Connection) -> Result<Vec<TokenRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, name, created_at, last_used_at, scope FROM api_tokens ORDER BY id DESC",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(TokenRow {
            id: r.get(0)?,
            name: r.get(1)?,
            scope: r.get(4)?,
            created_at: r.get(2)?,
            last_used_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes token `id`; whether it existed.
pub fn delete(conn: &Connection, id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM api_tokens WHERE id = ?1", [id])? > 0)
}

/// The name, last use and scope of the token with hash `token_hash`.
pub fn by_hash(
    conn: &Connection,
    token_hash: &str,
) -> Result<Option<(String, Option<i64>, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT name, last_used_at, scope FROM api_tokens WHERE token_hash = ?1",
            [token_hash],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
}

/// Notes a use of the token with hash `token_hash` at `now`.
pub fn mark_used(conn: &Connection, token_hash: &str, now: i64) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE api_tokens SET last_used_at = ?1 WHERE token_hash = ?2",
        params![now, token_hash],
    )?;
    Ok(())
}
