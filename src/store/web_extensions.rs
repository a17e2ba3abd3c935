//! The extensions table as the dashboard edits it: the rows it lists, and the extensions it
//! manages itself (`source = 'web'`; those from the configuration file are read-only there).
//! Plain functions on a connection, so the dashboard's handlers hold no SQL of their own.

use rusqlite::{params, Connection, OptionalExtension};

/// One row of the extensions page: number, name, DID, permissions, enabled, source.
pub type PageRow = (String, String, String, String, bool, String);

/// Every extension, by number.
pub fn list(conn: &Connection) -> rusqlite::Result<Vec<PageRow>> {
    let mut stmt = conn.prepare(
        "SELECT number, coalesce(name, ''), coalesce(did, ''), coalesce(permissions, ''), \
         enabled, source FROM extensions ORDER BY number",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get::<_, i64>(4)? != 0,
            r.get(5)?,
        ))
    })?;
    rows.collect()
}

/// Where an extension comes from (`web`, `config`), `None` when there is none.
pub fn source(conn: &Connection, number: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT source FROM extensions WHERE number = ?1",
        [number],
        |r| r.get(0),
    )
    .optional()
}

/// An extension as the dashboard's form gives it; only digest hashes of its password are kept.
#[derive(Debug, Clone)]
pub struct WebExtension {
    pub number: String,
    /// `None`: no name (NULL).
    pub name: Option<String>,
    pub did: Option<String>,
    pub enabled: bool,
    pub permissions: Option<String>,
    /// The new password's (MD5, SHA-256) HA1 hashes; `None`: unchanged.
    pub ha1: Option<(String, String)>,
    /// The realm the hashes are for.
    pub realm: String,
}

/// Adds an extension managed from the web.
pub fn insert(conn: &Connection, ext: &WebExtension, now: i64) -> rusqlite::Result<usize> {
    let (md5, sha256) = ext.ha1.clone().unwrap_or_default();
    conn.execute(
        "INSERT INTO extensions (number, password, name, did, enabled, \
         source, created_at, updated_at, permissions, ha1_md5, ha1_sha256, \
         ha1_realm) \
         VALUES (?1, '', ?2, ?3, ?4, 'web', ?5, ?5, ?6, ?7, ?8, ?9)",
        params![
            ext.number,
            ext.name,
            ext.did,
            ext.enabled,
            now,
            ext.permissions,
            md5,
            sha256,
            ext.realm
        ],
    )
}

/// Changes an extension managed from the web (its hashes only when a password was given).
pub fn update(conn: &Connection, ext: &WebExtension, now: i64) -> rusqlite::Result<usize> {
    let (md5, sha256) = ext.ha1.clone().unzip();
    conn.execute(
        "UPDATE extensions SET name = ?2, did = ?3, enabled = ?4, \
         permissions = ?5, password = '', \
         ha1_md5 = coalesce(?6, ha1_md5), \
         ha1_sha256 = coalesce(?7, ha1_sha256), \
         ha1_realm = CASE WHEN ?6 IS NULL THEN ha1_realm ELSE ?8 END, \
         updated_at = ?9 WHERE number = ?1 AND source = 'web'",
        params![
            ext.number,
            ext.name,
            ext.did,
            ext.enabled,
            ext.permissions,
            md5,
            sha256,
            ext.realm,
            now
        ],
    )
}

/// Enables or disables an extension managed from the web; how many rows changed (0 or 1).
pub fn toggle(conn: &Connection, number: &str, now: i64) -> rusqlite::Result<usize> {
    conn.execute(
        "UPDATE extensions SET enabled = NOT enabled, updated_at = ?2 \
         WHERE number = ?1 AND source = 'web'",
        params![number, now],
    )
}

/// Removes an extension managed from the web; how many rows went (0 or 1).
pub fn delete(conn: &Connection, number: &str) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM extensions WHERE number = ?1 AND source = 'web'",
        [number],
    )
}

/// An extension's name and whether it is enabled.
pub fn name_and_enabled(
    conn: &Connection,
    number: &str,
) -> rusqlite::Result<Option<(String, bool)>> {
    conn.query_row(
        "SELECT coalesce(name, ''), enabled FROM extensions WHERE number = ?1",
        [number],
        |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)),
    )
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(number: &str, ha1: Option<(String, String)>) -> WebExtension {
        WebExtension {
            number: number.into(),
            name: Some("Front desk".into()),
            did: Some("+4930123".into()),
            enabled: true,
            permissions: Some("internal".into()),
            ha1,
            realm: "office".into(),
        }
    }

    #[test]
    fn the_dashboard_changes_only_its_own_extensions() -> Result<(), Box<dyn std::error::Error>> {
        let store = crate::store::Store::open_in_memory()?;
        let conn = &store.conn;
        assert_eq!(source(conn, "300")?, None);
        let hashes = Some(("m".to_owned(), "s".to_owned()));
        assert_eq!(insert(conn, &ext("300", hashes), 10)?, 1);
        assert_eq!(source(conn, "300")?.as_deref(), Some("web"));
        // No new password: the hashes stay.
        let mut changed = ext("300", None);
        changed.name = Some("Reception".into());
        assert_eq!(update(conn, &changed, 20)?, 1);
        let (md5, realm): (String, String) = conn.query_row(
            "SELECT ha1_md5, ha1_realm FROM extensions WHERE number = '300'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        assert_eq!((md5.as_str(), realm.as_str()), ("m", "office"));
        assert_eq!(
            name_and_enabled(conn, "300")?,
            Some(("Reception".into(), true))
        );
        assert_eq!(toggle(conn, "300", 30)?, 1);
        assert_eq!(
            name_and_enabled(conn, "300")?,
            Some(("Reception".into(), false))
        );
        // One from the configuration file is not the dashboard's to change.
        conn.execute(
            "INSERT INTO extensions (number, password, enabled, source, created_at, updated_at) \
             VALUES ('100', '', 1, 'config', 0, 0)",
            [],
        )?;
        assert_eq!(toggle(conn, "100", 40)?, 0);
        assert_eq!(delete(conn, "100")?, 0);
        assert_eq!(update(conn, &ext("100", None), 40)?, 0);
        let rows = list(conn)?;
        assert_eq!(
            rows.iter()
                .map(|r| (r.0.as_str(), r.5.as_str()))
                .collect::<Vec<_>>(),
            [("100", "config"), ("300", "web")]
        );
        assert_eq!(delete(conn, "300")?, 1);
        assert_eq!(name_and_enabled(conn, "300")?, None);
        Ok(())
    }
}
