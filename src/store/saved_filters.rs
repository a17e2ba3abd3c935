//! Records filters a dashboard user saved under a name (`saved_filters`): the records page's
//! query string, per user, replaced when saved again under the same name. The length rules
//! are the dashboard's (`web::saved_filters`).

use rusqlite::{params, Connection};

use super::StoreError;

/// A saved filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFilter {
    pub id: i64,
    pub name: String,
    /// The query string of `/records` (no page number).
    pub query: String,
}

/// Saves (or replaces) `user_id`'s filter `name`.
pub fn save(conn: &Connection, user_id: i64, name: &str, query: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO saved_filters (user_id, name, query) VALUES (?1, ?2, ?3) \
         ON CONFLICT (user_id, name) DO UPDATE SET query = excluded.query",
        params![user_id, name, query],
    )?;
    Ok(())
}

/// `user_id`'s filters, by name.
pub fn list(conn: &Connection, user_id: i64) -> Result<Vec<SavedFilter>, StoreError> {
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

/// Deletes `user_id`'s filter `id`; whether it existed.
pub fn delete(conn: &Connection, user_id: i64, id: i64) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM saved_filters WHERE id = ?1 AND user_id = ?2",
        params![id, user_id],
    )? > 0)
}
