//! Records filters a dashboard user saved under a name: the records page's query string,
//! per user, replaced when saved again under the same name.

use crate::store::saved_filters as store;
use crate::store::Connection;

use super::auth::AuthError;

pub use crate::store::saved_filters::SavedFilter;

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
    Ok(store::save(conn, user_id, name, query)?)
}

/// `user_id`'s filters, by name.
pub fn list(conn: &Connection, user_id: i64) -> Result<Vec<SavedFilter>, AuthError> {
    Ok(store::list(conn, user_id)?)
}

/// Deletes `user_id`'s filter `id`.
pub fn delete(conn: &Connection, user_id: i64, id: i64) -> Result<bool, AuthError> {
    Ok(store::delete(conn, user_id, id)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_replaced_by_name() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut db = crate::cdr::CdrDb::open(&dir.path().join("t.db"))?;
        let a = super::super::auth::create_first_user(&mut db.conn, "admin", "correct horse")?;
        let b = crate::store::web_users::insert_user(&db.conn, "b", "x", "viewer", 0)?;
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
