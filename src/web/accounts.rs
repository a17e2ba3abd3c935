//! Dashboard accounts beyond the first administrator: roles (`admin` changes things, `viewer`
//! only reads), adding and removing users, password changes and resets, the list of live
//! sessions and their revocation, and the audit log of dashboard changes (migration
//! `0012_web_roles_audit.sql`). Blocking SQLite calls; the pages run them on blocking threads
//! and `pasarela admin reset-password` runs them directly on the store file.

use crate::store::web_users::{self, Removal};
use crate::store::Connection;

use super::auth::{self, AuthError};

/// What a dashboard user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Read-only: records, billing, live, own password and sessions.
    Viewer,
}

impl Role {
    /// The role named `name` (`admin` or `viewer`).
    pub fn parse(name: &str) -> Option<Role> {
        match name.trim() {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }

    /// The role's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

pub use crate::store::web_users::{AuditRow, SessionRow, UserRow};

/// Every dashboard user, by name.
pub fn users(conn: &Connection) -> Result<Vec<UserRow>, AuthError> {
    Ok(web_users::users(conn)?)
}

/// Adds a user with `role`; the same username and password rules as the first administrator.
pub fn add_user(
    conn: &Connection,
    username: &str,
    password: &str,
    role: Role,
) -> Result<i64, AuthError> {
    auth::check_new_account(username, password)?;
    if web_users::user_id(conn, username)?.is_some() {
        return Err(AuthError::Invalid(format!(
            "A user named {username} already exists."
        )));
    }
    let hash = auth::hash_password(password)?;
    Ok(web_users::insert_user(
        conn,
        username,
        &hash,
        role.as_str(),
        auth::now_unix(),
    )?)
}

/// Removes user `id` (and with it their sessions). Refused for `acting` itself and for the last
/// administrator, so that nobody locks the office out of its dashboard.
pub fn remove_user(conn: &mut Connection, id: i64, acting: i64) -> Result<String, AuthError> {
    if id == acting {
        return Err(AuthError::Invalid(
            "You cannot remove your own account.".into(),
        ));
    }
    match web_users::remove_user(conn, id)? {
        Removal::Removed(name) => Ok(name),
        Removal::NoSuchUser => Err(AuthError::Invalid("No such user.".into())),
        Removal::LastAdmin => Err(AuthError::Invalid(
            "The last administrator cannot be removed.".into(),
        )),
    }
}

/// Sets the password of `username` (the dashboard's password policy applies) and ends every
/// session of that user except `keep` (a session id, see [`SessionRow::id`]). Returns whether
/// the user exists.
pub fn set_password(
    conn: &Connection,
    username: &str,
    password: &str,
    keep: Option<&str>,
) -> Result<bool, AuthError> {
    auth::check_new_account(username, password)?;
    let hash = auth::hash_password(password)?;
    let Some(id) = web_users::user_id(conn, username)? else {
        return Ok(false);
    };
    web_users::set_password_hash(conn, id, &hash, keep)?;
    Ok(true)
}

/// A new random password of 16 letters and digits (no look-alikes), meeting the policy.
pub fn generate_password(username: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    loop {
        let mut bytes = [0u8; 16];
        rand::fill(&mut bytes);
        let password: String = bytes
            .iter()
            .filter_map(|b| ALPHABET.get(usize::from(*b) % ALPHABET.len()))
            .map(|b| char::from(*b))
            .collect();
        if crate::security::password::check(&password, username).is_ok() {
            return password;
        }
    }
}

/// Why `pasarela admin reset-password` failed.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(#[from] crate::cdr::CdrError),
    /// No such dashboard user.
    #[error("there is no dashboard user {0:?} (the first visit to the dashboard creates the administrator)")]
    NoUser(String),
    /// The password or the database update failed.
    #[error("{0}")]
    Auth(#[from] AuthError),
}

/// `pasarela admin reset-password USER`: sets `password` (or a new random one, returned) on
/// the store at `store`, ends the user's sessions and records it in the audit log. Works
/// while the server runs (SQLite in WAL mode; the sessions end at the next request).
pub fn reset_password(
    store: &std::path::Path,
    username: &str,
    password: Option<&str>,
) -> Result<String, ResetError> {
    let db = crate::cdr::CdrDb::open(store)?;
    let password = match password {
        Some(p) => p.to_owned(),
        None => generate_password(username),
    };
    if !set_password(&db.conn, username, &password, None)? {
        return Err(ResetError::NoUser(username.to_owned()));
    }
    audit(
        &db.conn,
        "(command line)",
        "pasarela admin reset-password",
        &format!("username={username}"),
        200,
    )
    .map_err(AuthError::from)?;
    Ok(password)
}

/// Live sessions, newest first; only those of `user` when given.
pub fn sessions(conn: &Connection, user: Option<i64>) -> Result<Vec<SessionRow>, AuthError> {
    Ok(web_users::sessions(conn, user, auth::now_unix())?)
}

/// Ends session `id`; when `owner` is given, only if it belongs to that user. Returns whether a
/// session ended.
pub fn revoke_session(conn: &Connection, id: &str, owner: Option<i64>) -> Result<bool, AuthError> {
    Ok(web_users::delete_session(conn, id, owner)?)
}

/// Records a dashboard change.
pub fn audit(
    conn: &Connection,
    username: &str,
    action: &str,
    detail: &str,
    outcome: u16,
) -> Result<(), crate::store::StoreError> {
    web_users::audit(conn, auth::now_unix(), username, action, detail, outcome)
}

/// The newest `limit` audit entries, newest first.
pub fn audit_entries(
    conn: &Connection,
    limit: u32,
) -> Result<Vec<AuditRow>, crate::store::StoreError> {
    web_users::audit_entries(conn, limit)
}

/// The fields of a URL-encoded form worth recording: everything but passwords and tokens,
/// each value cut to 80 characters, as `key=value` pairs.
pub fn form_detail(body: &[u8]) -> String {
    let mut out = Vec::new();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    for (k, v) in pairs {
        let key = k.to_ascii_lowercase();
        let secret = key.contains("pass")
            || key.contains("secret")
            || key.contains("token")
            || matches!(key.as_str(), "csrf" | "current");
        if secret || v.is_empty() {
            continue;
        }
        let value: String = v.chars().take(80).collect();
        out.push(format!("{k}={value}"));
        if out.len() >= 12 {
            break;
        }
    }
    out.join(" ")
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
    fn users_roles_and_the_last_admin() {
        let (_d, mut conn) = db();
        let admin = auth::create_first_user(&mut conn, "admin", "correct horse").unwrap();
        let viewer = add_user(&conn, "ana", "battery staple", Role::Viewer).unwrap();
        assert!(matches!(
            add_user(&conn, "ana", "battery staple", Role::Viewer),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            add_user(&conn, "bo", "x", Role::Viewer),
            Err(AuthError::Invalid(_))
        ));
        let token = auth::create_session(&conn, viewer, "127.0.0.1").unwrap();
        let s = auth::session(&conn, &token).unwrap().unwrap();
        assert!(!s.admin);
        let t2 = auth::create_session(&conn, admin, "127.0.0.1").unwrap();
        assert!(auth::session(&conn, &t2).unwrap().unwrap().admin);
        // The last administrator and oneself cannot be removed.
        assert!(remove_user(&mut conn, admin, viewer).is_err());
        assert!(remove_user(&mut conn, admin, admin).is_err());
        assert_eq!(remove_user(&mut conn, viewer, admin).unwrap(), "ana");
        assert!(auth::session(&conn, &token).unwrap().is_none());
    }

    #[test]
    fn password_reset_ends_other_sessions() {
        let (_d, mut conn) = db();
        let admin = auth::create_first_user(&mut conn, "admin", "correct horse").unwrap();
        let a = auth::create_session(&conn, admin, "127.0.0.1").unwrap();
        let b = auth::create_session(&conn, admin, "127.0.0.2").unwrap();
        let keep = auth::session(&conn, &a).unwrap().unwrap().id;
        assert_eq!(sessions(&conn, Some(admin)).unwrap().len(), 2);
        assert!(set_password(&conn, "admin", "12", None).is_err());
        assert!(set_password(&conn, "admin", "new horse saddle", Some(&keep)).unwrap());
        assert!(auth::session(&conn, &a).unwrap().is_some());
        assert!(auth::session(&conn, &b).unwrap().is_none());
        assert_eq!(
            auth::verify_login(&conn, "admin", "new horse saddle").unwrap(),
            Some(admin)
        );
        assert!(!set_password(&conn, "nobody", "new horse saddle", None).unwrap());
        assert!(revoke_session(&conn, &keep, Some(admin + 1)).is_ok_and(|ended| !ended));
        assert!(revoke_session(&conn, &keep, Some(admin)).unwrap());
        assert!(auth::session(&conn, &a).unwrap().is_none());
    }

    #[test]
    fn reset_from_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        {
            let mut db = crate::cdr::CdrDb::open(&path).unwrap();
            auth::create_first_user(&mut db.conn, "admin", "correct horse").unwrap();
        }
        let p = reset_password(&path, "admin", None).unwrap();
        assert_eq!(p.chars().count(), 16);
        assert!(matches!(
            reset_password(&path, "nobody", None),
            Err(ResetError::NoUser(_))
        ));
        assert!(reset_password(&path, "admin", Some("abc")).is_err());
        let db = crate::cdr::CdrDb::open(&path).unwrap();
        assert!(auth::verify_login(&db.conn, "admin", &p).unwrap().is_some());
        let log = audit_entries(&db.conn, 10).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].detail, "username=admin");
    }

    #[test]
    fn audit_detail_leaves_secrets_out() {
        let d = form_detail(
            b"csrf=abc&number=101&password=s3cret&new_password=x&current=old&name=Ana+B",
        );
        assert_eq!(d, "number=101 name=Ana B");
    }
}
