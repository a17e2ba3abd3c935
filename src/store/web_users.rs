//! The dashboard's accounts as stored: users and their roles (`web_users`), login sessions
//! (`web_sessions`), browsers that logged in before (`web_devices`) and the audit log of
//! dashboard changes (`audit_log`). Only the SQL lives here; password hashing, token
//! generation and the account rules stay in `web::auth` and `web::accounts`, which hand in
//! hashes and times (unix seconds), so this module reads no clock.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::StoreError;

/// A logged-in user, as the pages see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: i64,
    pub username: String,
    /// The token every POST form of this session carries.
    pub csrf: String,
    /// Whether the user may change things (role `admin`); viewers only read.
    pub admin: bool,
    /// The SHA-256 of the session's cookie token, as sessions are listed (see
    /// [`SessionRow::id`]).
    pub id: String,
}

/// A dashboard user as the accounts page lists it.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub role: String,
    pub created_at: i64,
}

/// A live session as the accounts page lists it.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The SHA-256 of the cookie token (never the token itself).
    pub id: String,
    pub username: String,
    pub address: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// One audit entry.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: i64,
    pub username: String,
    pub action: String,
    pub detail: String,
    pub outcome: i64,
}

/// What [`remove_user`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// The user was removed, with their sessions and devices; their name.
    Removed(String),
    /// There is no such user.
    NoSuchUser,
    /// The user is the last administrator, and was kept.
    LastAdmin,
}

/// Whether any dashboard account exists.
pub fn has_users(conn: &Connection) -> Result<bool, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM web_users", [], |r| r.get(0))?;
    Ok(n > 0)
}

/// Inserts the first (administrator) account with password hash `hash`, unless an account
/// exists already (then `None`). The check and the insert are one transaction, so two racing
/// setup forms cannot both succeed.
pub fn insert_first_user(
    conn: &mut Connection,
    username: &str,
    hash: &str,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n: i64 = tx.query_row("SELECT count(*) FROM web_users", [], |r| r.get(0))?;
    if n > 0 {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO web_users (username, password_hash, created_at) VALUES (?1, ?2, ?3)",
        params![username, hash, now],
    )?;
    let id = tx.last_insert_rowid();
    tx.commit()?;
    Ok(Some(id))
}

/// Inserts a user with `role` (`admin` or `viewer`) and password hash `hash`.
pub fn insert_user(
    conn: &Connection,
    username: &str,
    hash: &str,
    role: &str,
    now: i64,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO web_users (username, password_hash, created_at, role) VALUES (?1, ?2, ?3, ?4)",
        params![username, hash, now, role],
    )?;
    Ok(conn.last_insert_rowid())
}

/// The id of user `username`.
pub fn user_id(conn: &Connection, username: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id FROM web_users WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .optional()?)
}

/// The id and stored password hash of `username`.
pub fn user_hash(conn: &Connection, username: &str) -> Result<Option<(i64, String)>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT id, password_hash FROM web_users WHERE username = ?1",
            [username],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Every dashboard user, by name.
pub fn users(conn: &Connection) -> Result<Vec<UserRow>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT id, username, role, created_at FROM web_users ORDER BY username")?;
    let rows = stmt.query_map([], |r| {
        Ok(UserRow {
            id: r.get(0)?,
            username: r.get(1)?,
            role: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Removes user `id` with their sessions and devices, in one transaction that also keeps the
/// last administrator.
pub fn remove_user(conn: &mut Connection, id: i64) -> Result<Removal, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: Option<(String, String)> = tx
        .query_row(
            "SELECT username, role FROM web_users WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((name, role)) = found else {
        return Ok(Removal::NoSuchUser);
    };
    if role == "admin" {
        let admins: i64 = tx.query_row(
            "SELECT count(*) FROM web_users WHERE role = 'admin'",
            [],
            |r| r.get(0),
        )?;
        if admins <= 1 {
            return Ok(Removal::LastAdmin);
        }
    }
    tx.execute("DELETE FROM web_sessions WHERE user_id = ?1", [id])?;
    tx.execute("DELETE FROM web_devices WHERE user_id = ?1", [id])?;
    tx.execute("DELETE FROM web_users WHERE id = ?1", [id])?;
    tx.commit()?;
    Ok(Removal::Removed(name))
}

/// Sets user `id`'s password hash and ends their sessions except `keep` (a session id).
pub fn set_password_hash(
    conn: &Connection,
    id: i64,
    hash: &str,
    keep: Option<&str>,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE web_users SET password_hash = ?2 WHERE id = ?1",
        params![id, hash],
    )?;
    conn.execute(
        "DELETE FROM web_sessions WHERE user_id = ?1 AND token_hash IS NOT ?2",
        params![id, keep],
    )?;
    Ok(())
}

/// Stores a session (the SHA-256 of its cookie token) of `user_id` from `address`, after
/// purging the expired ones.
pub fn insert_session(
    conn: &Connection,
    token_hash: &str,
    user_id: i64,
    csrf: &str,
    expires_at: i64,
    now: i64,
    address: &str,
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?1", [now])?;
    conn.execute(
        "INSERT INTO web_sessions (token_hash, user_id, csrf, expires_at, created_at, address) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![token_hash, user_id, csrf, expires_at, now, address],
    )?;
    Ok(())
}

/// The session whose cookie token hashes to `token_hash`, while it lasts.
pub fn session(
    conn: &Connection,
    token_hash: &str,
    now: i64,
) -> Result<Option<Session>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT s.user_id, u.username, s.csrf, u.role, s.token_hash FROM web_sessions s \
             JOIN web_users u ON u.id = s.user_id \
             WHERE s.token_hash = ?1 AND s.expires_at > ?2",
            params![token_hash, now],
            |r| {
                Ok(Session {
                    user_id: r.get(0)?,
                    username: r.get(1)?,
                    csrf: r.get(2)?,
                    admin: r.get::<_, String>(3)? == "admin",
                    id: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// Live sessions, newest first; only those of `user` when given.
pub fn sessions(
    conn: &Connection,
    user: Option<i64>,
    now: i64,
) -> Result<Vec<SessionRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT s.token_hash, u.username, s.address, s.created_at, s.expires_at \
         FROM web_sessions s JOIN web_users u ON u.id = s.user_id \
         WHERE s.expires_at > ?1 AND (?2 IS NULL OR s.user_id = ?2) \
         ORDER BY s.created_at DESC",
    )?;
    let rows = stmt.query_map(params![now, user], |r| {
        Ok(SessionRow {
            id: r.get(0)?,
            username: r.get(1)?,
            address: r.get(2)?,
            created_at: r.get(3)?,
            expires_at: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Ends session `id` (the hash of its token); when `owner` is given, only if it belongs to
/// that user. Returns whether a session ended.
pub fn delete_session(conn: &Connection, id: &str, owner: Option<i64>) -> Result<bool, StoreError> {
    let n = conn.execute(
        "DELETE FROM web_sessions WHERE token_hash = ?1 AND (?2 IS NULL OR user_id = ?2)",
        params![id, owner],
    )?;
    Ok(n > 0)
}

/// Stores a known device (the SHA-256 of its cookie token) of `user_id`, after purging the
/// expired ones.
pub fn insert_device(
    conn: &Connection,
    token_hash: &str,
    user_id: i64,
    expires_at: i64,
    now: i64,
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM web_devices WHERE expires_at <= ?1", [now])?;
    conn.execute(
        "INSERT INTO web_devices (token_hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
        params![token_hash, user_id, expires_at],
    )?;
    Ok(())
}

/// The user of the device whose cookie token hashes to `token_hash`, while it is valid.
pub fn device_user(
    conn: &Connection,
    token_hash: &str,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT user_id FROM web_devices WHERE token_hash = ?1 AND expires_at > ?2",
            params![token_hash, now],
            |r| r.get(0),
        )
        .optional()?)
}

/// Records a dashboard change.
pub fn audit(
    conn: &Connection,
    at: i64,
    username: &str,
    action: &str,
    detail: &str,
    outcome: u16,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO audit_log (at, username, action, detail, outcome) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, username, action, detail, outcome],
    )?;
    Ok(())
}

/// The newest `limit` audit entries, newest first.
pub fn audit_entries(conn: &Connection, limit: u32) -> Result<Vec<AuditRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT at, username, action, detail, outcome FROM audit_log ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(AuditRow {
            at: r.get(0)?,
            username: r.get(1)?,
            action: r.get(2)?,
            detail: r.get(3)?,
            outcome: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
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
    fn users_sessions_and_devices_as_stored() {
        let (_d, mut conn) = db();
        assert!(!has_users(&conn).unwrap());
        let admin = insert_first_user(&mut conn, "admin", "h1", 10)
            .unwrap()
            .unwrap();
        assert_eq!(
            insert_first_user(&mut conn, "other", "h2", 10).unwrap(),
            None
        );
        let viewer = insert_user(&conn, "v", "h3", "viewer", 11).unwrap();
        assert_eq!(user_id(&conn, "v").unwrap(), Some(viewer));
        assert_eq!(
            user_hash(&conn, "admin").unwrap(),
            Some((admin, "h1".into()))
        );

        insert_session(&conn, "s1", admin, "c1", 100, 20, "127.0.0.1").unwrap();
        insert_session(&conn, "s2", viewer, "c2", 100, 21, "127.0.0.2").unwrap();
        let s = session(&conn, "s1", 50).unwrap().unwrap();
        assert!(s.admin && s.username == "admin" && s.csrf == "c1");
        assert!(!session(&conn, "s2", 50).unwrap().unwrap().admin);
        assert!(session(&conn, "s1", 100).unwrap().is_none(), "expired");
        assert_eq!(sessions(&conn, None, 50).unwrap().len(), 2);
        assert_eq!(sessions(&conn, Some(viewer), 50).unwrap().len(), 1);
        assert!(
            !delete_session(&conn, "s1", Some(viewer)).unwrap(),
            "not theirs"
        );

        insert_device(&conn, "d1", viewer, 100, 20).unwrap();
        assert_eq!(device_user(&conn, "d1", 50).unwrap(), Some(viewer));
        assert_eq!(device_user(&conn, "d1", 100).unwrap(), None);

        assert_eq!(remove_user(&mut conn, admin).unwrap(), Removal::LastAdmin);
        assert_eq!(
            remove_user(&mut conn, viewer).unwrap(),
            Removal::Removed("v".into())
        );
        assert_eq!(remove_user(&mut conn, viewer).unwrap(), Removal::NoSuchUser);
        assert_eq!(
            sessions(&conn, None, 50).unwrap().len(),
            1,
            "the viewer's session ended"
        );

        set_password_hash(&conn, admin, "h9", Some("nope")).unwrap();
        assert_eq!(
            user_hash(&conn, "admin").unwrap(),
            Some((admin, "h9".into()))
        );
        assert!(
            session(&conn, "s1", 50).unwrap().is_none(),
            "other sessions end"
        );

        audit(&conn, 30, "admin", "POST /x", "a=1", 200).unwrap();
        audit(&conn, 31, "admin", "POST /y", "", 403).unwrap();
        let log = audit_entries(&conn, 10).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].action, "POST /y");
    }
}
