//! Records filters a dashboard user saved under a name: the records page's query string,
//! per user, replaced when saved again under the same name.

use rusqlite::{params, Connection};

use super::auth::AuthError;

/// A saved filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFilter {
    pub id: i64,
    pub name: String,
    /// The query string of `/records` (no page number).
    pub query: String,
}

/// Saves (or replaces) `user_id`'s filter `name`.
pub fn save(conn: &Connection, user_id: i64, name: &str, query: &str) -> Result<(), AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 60 {
        return Err(AuthError::Invalid(
            "Give the filter a name of 1 to 60 characters.".into(),
        ));
    }
    if query.len() > 2000 {
        return Err(AuthError::Invalid(
            "That filter is too long to save.".into(),
        ));
    }
    conn.execute(
        "INSERT INTO saved_filters (user_id, name, query) VALUES (?1, ?2, ?3) \
         ON CONFLICT (user_id, name) DO UPDATE SET query = excluded.query",
        params![user_id, name, query],
    )?;
    Ok(())
}

/// `user_id`'s filters, by name.
pub fn list(conn: &Connection, user_id: i64) -> Result<Vec<SavedFilter>, AuthError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, query FROM saved_filters WHERE user_id = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map([user_id], |r| {
        Ok(SavedFilter {
            id: r.get(0)?,
            name: r.get(1)?,
            query: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes `user_id`'s filter `id`.
pub fn delete(conn: &Connection, user_id: i64, id: i64) -> Result<bool, AuthError> {
    Ok(conn.execute(
        "DELETE FROM saved_filters WHERE id = ?1 AND user_id = ?2",
        params![id, user_id],
    )? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_replaced_by_name() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut db = crate::cdr::CdrDb::open(&dir.path().join("t.db"))?;
        let a = super::super::auth::create_first_user(&mut db.conn, "admin", "correct horse")?;
        db.conn.execute(
            "INSERT INTO web_users (username, password_hash, created_at) VALUES ('b', 'x', 0)",
            [],
        )?;
        let b = db.conn.last_insert_rowid();
        save(&db.conn, a, "Long calls", "min=600")?;
        save(&db.conn, a, "Long calls", "min=900")?;
        save(&db.conn, b, "Mine", "ext=101")?;
        let mine = list(&db.conn, a)?;
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].query, "min=900");
        assert!(!delete(&db.conn, b, mine[0].id)?, "not someone else's");
        assert!(delete(&db.conn, a, mine[0].id)?);
        assert!(save(&db.conn, a, "", "x").is_err());
        Ok(())
    }
}
