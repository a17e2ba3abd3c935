//! The SQLite store: opening the database, applying migrations, and the queries on extensions
//! and registrar bindings.
//!
//! [`Store`] wraps one `rusqlite` connection and is used synchronously; code on the tokio
//! runtime should not call it on a hot path. Registration changes are written through
//! [`writer::BindingWriter`], a background thread that batches them into few transactions.
//! All times are unix seconds passed in by the caller (`now_unix`), so the store reads no clock
//! except for the `created_at`/`updated_at` stamps on extension rows.

pub mod api_tokens;
pub mod backup;
pub mod batch;
pub mod config;
pub mod connection;
mod counts;
pub mod dundi;
pub mod dundi_node;
pub mod forwards;
pub mod fxo_lines;
pub mod inbound;
pub mod line_limits;
pub mod line_rates;
pub(crate) mod line_rows;
mod migrations;
pub mod modem_lines;
pub mod numbering;
pub mod pickup;
pub mod rates;
pub mod records;
pub mod saved_filters;
pub mod sms;
pub mod trunks;
pub mod usage;
pub mod web_extensions;
pub mod web_users;
pub mod writer;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The connection every repository function takes (the dashboard and the tools hold one).
pub use rusqlite::Connection;
use rusqlite::{params, OptionalExtension, Row};

use self::config::ExtensionConfig;
use crate::routing::Permissions;

pub use connection::{ReadPool, Writer};
pub use counts::{counts, Counts};
pub use writer::{BindingWriter, BindingWriterHandle};

/// The value of `extensions.source` for rows provisioned from the config file.
pub const SOURCE_CONFIG: &str = "config";

/// How long a statement waits for a lock held by another connection (every connection to the
/// store's file uses it).
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory for the database file could not be created.
    #[error("{}: cannot create directory: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The database could not be opened or configured.
    #[error("{}: cannot open database: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// The schema could not be migrated to the current version.
    #[error("{}: cannot migrate database schema: {source}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite_migration::Error,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The binding writer thread is gone.
    #[error("the binding writer has stopped")]
    WriterStopped,
    /// A value could not be encoded for the store.
    #[error("cannot encode for the store: {0}")]
    Invalid(String),
    /// Some batches of binding changes could not be written (the details were logged).
    #[error("{failed} batch(es) of binding changes could not be written")]
    WriteFailed {
        /// How many batches failed since the previous flush.
        failed: usize,
    },
}

/// The extensions a command-line tool (`pasarela route`) should know: those in the store at
/// `path`, if the database file exists (it is not created), overlaid with `from_file` (their
/// digests for `realm`).
pub fn extensions_for_tools(
    path: &Path,
    realm: &str,
    from_file: &[ExtensionConfig],
) -> Result<Vec<ExtensionRow>, StoreError> {
    let mut rows: std::collections::BTreeMap<String, ExtensionRow> = Default::default();
    if path.exists() {
        let store = Store::open(path)?;
        for r in store.extensions()? {
            rows.insert(r.number.clone(), r);
        }
    }
    for e in from_file {
        let (ha1_md5, ha1_sha256) = digest_ha1(&e.number, realm, &e.password);
        rows.insert(
            e.number.clone(),
            ExtensionRow {
                number: e.number.clone(),
                ha1_md5,
                ha1_sha256,
                name: e.name.clone(),
                did: e.did.clone(),
                enabled: e.enabled,
                permissions: e.permissions,
                legacy_digest: e.legacy_digest,
                allow: e.allow.clone(),
            },
        );
    }
    Ok(rows.into_values().collect())
}

/// The digest HA1 hashes of an extension's password for `realm`: `(MD5, SHA-256)`, hex. The
/// store keeps these, never the password.
pub fn digest_ha1(number: &str, realm: &str, password: &str) -> (String, String) {
    use crate::sip::auth::{ha1, Algorithm};
    (
        ha1(Algorithm::Md5, number, realm, password),
        ha1(Algorithm::Sha256, number, realm, password),
    )
}

/// An extension as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionRow {
    /// The extension number (primary key).
    pub number: String,
    /// `H(number:realm:password)` with MD5, hex (empty: no usable password).
    pub ha1_md5: String,
    /// The same with SHA-256.
    pub ha1_sha256: String,
    /// Display name.
    pub name: Option<String>,
    /// Direct inward dialling number (E.164 with `+`).
    pub did: Option<String>,
    /// Whether the extension may register and call.
    pub enabled: bool,
    /// What it may call; `None`: the numbering plan's default. A stored value that no longer
    /// parses bars everything but emergency and short numbers (and is logged).
    pub permissions: Option<Permissions>,
    /// Whether digest answers without qop (RFC 2069) are accepted.
    pub legacy_digest: bool,
    /// Networks it may register and call from; empty: anywhere.
    pub allow: Vec<crate::security::net::IpNet>,
}

/// A registrar binding as stored: one contact of one address of record.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingRow {
    /// The address of record.
    pub aor: String,
    /// The contact URI.
    pub contact: String,
    /// The `q` preference, 0.0 to 1.0.
    pub q: f32,
    /// When the binding expires, unix seconds.
    pub expires_at: i64,
    /// Call-ID of the REGISTER that created or refreshed it.
    pub call_id: String,
    /// CSeq number of that REGISTER.
    pub cseq: u32,
    /// Transport it came in on (`udp`, `tcp`).
    pub transport: String,
    /// `ip:port` the REGISTER was received from.
    pub source: String,
    /// Our listen address it came in on.
    pub local: String,
    /// The registering agent's `User-Agent`.
    pub user_agent: Option<String>,
    /// `+sip.instance` (RFC 5626).
    pub instance: Option<String>,
    /// `reg-id` (RFC 5626).
    pub reg_id: Option<u32>,
    /// When this row was last written, unix seconds.
    pub updated_at: i64,
}

/// One change to the stored bindings.
#[derive(Debug, Clone, PartialEq)]
pub enum BindingChange {
    /// Insert the binding, or replace the one with the same `(aor, contact)`.
    Upsert(BindingRow),
    /// Remove one binding.
    Remove {
        /// The address of record.
        aor: String,
        /// The contact URI.
        contact: String,
    },
    /// Remove every binding of an address of record.
    RemoveAll {
        /// The address of record.
        aor: String,
    },
}

/// What [`Store::sync_config_extensions`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtensionSync {
    /// Rows inserted or changed.
    pub changed: usize,
    /// Rows removed because they left the config file.
    pub removed: usize,
}

/// A connection to the pasarela database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it to the current schema.
    /// The parent directory is created if it is missing.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        Store::init(conn, path).map_err(|e| match e {
            StoreError::Sqlite(source) => open_err(source),
            other => other,
        })
    }

    /// The highest call reference in the call records (0 when there is none).
    pub fn last_call_ref(&self) -> Result<u64, StoreError> {
        let last: Option<i64> =
            self.conn
                .query_row("SELECT MAX(call_ref) FROM call_records", [], |r| r.get(0))?;
        Ok(last.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    /// Opens a private in-memory database with the current schema (for tests and tools).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Store::init(conn, path)
    }

    fn init(mut conn: Connection, path: &Path) -> Result<Store, StoreError> {
        connection::configure_writer(&conn, connection::Durability::Process)?;
        migrations::MIGRATIONS
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Store { conn })
    }

    /// Every extension's call forwarding and ring order ([`forwards::all`]).
    pub fn call_handling(
        &self,
    ) -> Result<HashMap<String, crate::routing::forwarding::CallHandling>, StoreError> {
        Ok(forwards::all(&self.conn)?)
    }

    /// Stores one extension's call handling ([`forwards::set`]).
    pub fn set_call_handling(
        &self,
        number: &str,
        h: &crate::routing::forwarding::CallHandling,
    ) -> Result<(), StoreError> {
        Ok(forwards::set(&self.conn, number, h, unix_now())?)
    }

    /// Seeds the call handling of the file's extensions ([`forwards::seed`]).
    pub fn seed_call_handling(
        &mut self,
        from_file: &[(String, crate::routing::forwarding::CallHandling)],
    ) -> Result<usize, StoreError> {
        Ok(forwards::seed(&mut self.conn, from_file, unix_now())?)
    }

    /// Every extension's pickup groups ([`pickup::all`]).
    pub fn pickup_groups(
        &self,
    ) -> Result<HashMap<String, crate::routing::pickup::PickupGroups>, StoreError> {
        Ok(pickup::all(&self.conn)?)
    }

    /// Stores one extension's pickup groups ([`pickup::set`]).
    pub fn set_pickup_groups(
        &self,
        number: &str,
        g: &crate::routing::pickup::PickupGroups,
    ) -> Result<(), StoreError> {
        Ok(pickup::set(&self.conn, number, g, unix_now())?)
    }

    /// Seeds the pickup groups of the file's extensions ([`pickup::seed`]).
    pub fn seed_pickup_groups(
        &mut self,
        from_file: &[(String, crate::routing::pickup::PickupGroups)],
    ) -> Result<usize, StoreError> {
        Ok(pickup::seed(&mut self.conn, from_file, unix_now())?)
    }

    /// Makes the file's trunks the `config` rows of `trunks` ([`trunks::sync_config`]).
    pub fn sync_config_trunks(
        &mut self,
        trunks: &[crate::routing::trunk::TrunkConfig],
    ) -> Result<trunks::TrunkSync, StoreError> {
        trunks::sync_config(&mut self.conn, trunks)
    }

    /// Makes the file's ring groups and inbound routes the `config` rows of the store
    /// ([`inbound::sync_config`]); how many rows changed.
    pub fn sync_config_inbound(
        &mut self,
        groups: &[config::RingGroupConfig],
        routes: &[(String, String)],
    ) -> Result<usize, StoreError> {
        inbound::sync_config(&mut self.conn, groups, routes)
    }

    /// The ring groups and inbound routes the gateway uses ([`inbound::effective`]).
    pub fn inbound(&self) -> Result<inbound::InboundSets, StoreError> {
        inbound::effective(&self.conn)
    }

    /// The trunks the gateway uses, in order of preference ([`trunks::effective`]).
    pub fn trunks(&self) -> Result<Vec<crate::routing::trunk::TrunkConfig>, StoreError> {
        trunks::effective(&self.conn)
    }

    /// Makes the `source = 'config'` extensions match `extensions`: inserts or updates each
    /// (taking over a row of the same number from another source), and deletes `config` rows
    /// whose number is no longer listed. Rows from other sources are left alone. Passwords are
    /// stored as HA1 hashes for `realm` (rows still holding a clear password from before are
    /// converted first, see [`Store::hash_clear_passwords`]). One transaction.
    pub fn sync_config_extensions(
        &mut self,
        extensions: &[ExtensionConfig],
        realm: &str,
    ) -> Result<ExtensionSync, StoreError> {
        self.hash_clear_passwords(realm)?;
        let now = unix_now();
        let tx = self.conn.transaction()?;
        let mut result = ExtensionSync::default();
        {
            let mut upsert = tx.prepare(
                "INSERT INTO extensions
                     (number, password, name, did, enabled, source, created_at, updated_at,
                      permissions, ha1_md5, ha1_sha256, ha1_realm, legacy_digest, allow)
                 VALUES (?1, '', ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                 ON CONFLICT (number) DO UPDATE SET
                     password = '',
                     name = excluded.name,
                     did = excluded.did,
                     enabled = excluded.enabled,
                     source = excluded.source,
                     permissions = excluded.permissions,
                     ha1_md5 = excluded.ha1_md5,
                     ha1_sha256 = excluded.ha1_sha256,
                     ha1_realm = excluded.ha1_realm,
                     legacy_digest = excluded.legacy_digest,
                     allow = excluded.allow,
                     updated_at = excluded.updated_at
                 WHERE extensions.ha1_md5 IS NOT excluded.ha1_md5
                    OR extensions.ha1_sha256 IS NOT excluded.ha1_sha256
                    OR extensions.name IS NOT excluded.name
                    OR extensions.did IS NOT excluded.did
                    OR extensions.enabled IS NOT excluded.enabled
                    OR extensions.source IS NOT excluded.source
                    OR extensions.permissions IS NOT excluded.permissions
                    OR extensions.legacy_digest IS NOT excluded.legacy_digest
                    OR extensions.allow IS NOT excluded.allow",
            )?;
            for e in extensions {
                let (md5, sha256) = digest_ha1(&e.number, realm, &e.password);
                result.changed += upsert.execute(params![
                    e.number,
                    e.name,
                    e.did,
                    e.enabled,
                    SOURCE_CONFIG,
                    now,
                    e.permissions.map(|p| p.to_string()),
                    md5,
                    sha256,
                    realm,
                    e.legacy_digest,
                    crate::security::net::format_list(&e.allow),
                ])?;
            }
            let wanted: HashSet<&str> = extensions.iter().map(|e| e.number.as_str()).collect();
            let stale: Vec<String> = tx
                .prepare("SELECT number FROM extensions WHERE source = ?1")?
                .query_map([SOURCE_CONFIG], |row| row.get::<_, String>(0))?
                .filter(|n| n.as_ref().map_or(true, |n| !wanted.contains(n.as_str())))
                .collect::<Result<_, _>>()?;
            let mut delete =
                tx.prepare("DELETE FROM extensions WHERE number = ?1 AND source = ?2")?;
            for number in &stale {
                result.removed += delete.execute(params![number, SOURCE_CONFIG])?;
            }
        }
        tx.commit()?;
        let other_realm: i64 = self.conn.query_row(
            "SELECT count(*) FROM extensions WHERE ha1_realm IS NOT ?1",
            [realm],
            |r| r.get(0),
        )?;
        if other_realm > 0 {
            tracing::warn!(
                extensions = other_realm,
                realm,
                "extensions whose password was hashed for another realm ([sip] domain changed): \
                 they cannot authenticate until their password is set again"
            );
        }
        Ok(result)
    }

    /// Replaces every clear password left in the store (from before migration 0007) by its
    /// HA1 hashes for `realm`; returns how many. The freed bytes are overwritten
    /// (`secure_delete`) and the WAL is checkpointed, so the clear text leaves the file too.
    pub fn hash_clear_passwords(&mut self, realm: &str) -> Result<usize, StoreError> {
        let clear: Vec<(String, String)> = self
            .conn
            .prepare("SELECT number, password FROM extensions WHERE password != ''")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if clear.is_empty() {
            return Ok(0);
        }
        let tx = self.conn.transaction()?;
        for (number, password) in &clear {
            let (md5, sha256) = digest_ha1(number, realm, password);
            tx.execute(
                "UPDATE extensions SET password = '', ha1_md5 = ?2, ha1_sha256 = ?3,
                     ha1_realm = ?4 WHERE number = ?1",
                params![number, md5, sha256, realm],
            )?;
        }
        tx.commit()?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        tracing::info!(
            extensions = clear.len(),
            "clear-text extension passwords replaced by digest hashes"
        );
        Ok(clear.len())
    }

    /// All extensions, ordered by number.
    pub fn extensions(&self) -> Result<Vec<ExtensionRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT number, ha1_md5, name, did, enabled, permissions, ha1_sha256,
                    legacy_digest, allow FROM extensions
             ORDER BY number",
        )?;
        let rows = stmt.query_map([], extension_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One extension by number.
    pub fn extension(&self, number: &str) -> Result<Option<ExtensionRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT number, ha1_md5, name, did, enabled, permissions, ha1_sha256,
                        legacy_digest, allow FROM extensions
                 WHERE number = ?1",
                [number],
                extension_from_row,
            )
            .optional()?)
    }

    /// All bindings that have not expired at `now_unix`, ordered by AOR and contact.
    pub fn load_bindings(&self, now_unix: i64) -> Result<Vec<BindingRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT aor, contact, q, expires_at, call_id, cseq, transport, source, local,
                    user_agent, instance, reg_id, updated_at
             FROM bindings WHERE expires_at > ?1 ORDER BY aor, contact",
        )?;
        let rows = stmt.query_map([now_unix], binding_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes the bindings expired at `now_unix`; returns how many.
    pub fn purge_expired_bindings(&self, now_unix: i64) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .execute("DELETE FROM bindings WHERE expires_at <= ?1", [now_unix])?)
    }

    /// Applies `changes` in order, in one transaction: all of them or none.
    pub fn apply_binding_changes(&mut self, changes: &[BindingChange]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO bindings
                     (aor, contact, q, expires_at, call_id, cseq, transport, source, local,
                      user_agent, instance, reg_id, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                 ON CONFLICT (aor, contact) DO UPDATE SET
                     q = excluded.q,
                     expires_at = excluded.expires_at,
                     call_id = excluded.call_id,
                     cseq = excluded.cseq,
                     transport = excluded.transport,
                     source = excluded.source,
                     local = excluded.local,
                     user_agent = excluded.user_agent,
                     instance = excluded.instance,
                     reg_id = excluded.reg_id,
                     updated_at = excluded.updated_at",
            )?;
            let mut remove =
                tx.prepare_cached("DELETE FROM bindings WHERE aor = ?1 AND contact = ?2")?;
            let mut remove_all = tx.prepare_cached("DELETE FROM bindings WHERE aor = ?1")?;
            for change in changes {
                match change {
                    BindingChange::Upsert(b) => {
                        upsert.execute(params![
                            b.aor,
                            b.contact,
                            b.q,
                            b.expires_at,
                            b.call_id,
                            b.cseq,
                            b.transport,
                            b.source,
                            b.local,
                            b.user_agent,
                            b.instance,
                            b.reg_id,
                            b.updated_at
                        ])?;
                    }
                    BindingChange::Remove { aor, contact } => {
                        remove.execute(params![aor, contact])?;
                    }
                    BindingChange::RemoveAll { aor } => {
                        remove_all.execute([aor])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn extension_from_row(row: &Row<'_>) -> rusqlite::Result<ExtensionRow> {
    Ok(ExtensionRow {
        number: row.get(0)?,
        ha1_md5: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
        ha1_sha256: row.get::<_, Option<String>>(6)?.unwrap_or_default(),
        legacy_digest: row.get(7)?,
        allow: match row.get::<_, Option<String>>(8)? {
            None => Vec::new(),
            Some(text) => crate::security::net::parse_list(&text).unwrap_or_else(|e| {
                // Fail closed: an allow-list that no longer reads admits nobody.
                tracing::warn!("extension allow-list {text:?} in the store: {e}; refusing all");
                vec!["255.255.255.255/32".parse().expect("a literal network")]
            }),
        },
        name: row.get(2)?,
        did: row.get(3)?,
        enabled: row.get(4)?,
        permissions: row.get::<_, Option<String>>(5)?.map(|text| {
            match Permissions::parse(text.split(',')) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("extension permissions {text:?} in the store: {e}; barring");
                    Permissions::NONE
                }
            }
        }),
    })
}

fn binding_from_row(row: &Row<'_>) -> rusqlite::Result<BindingRow> {
    Ok(BindingRow {
        aor: row.get(0)?,
        contact: row.get(1)?,
        q: row.get(2)?,
        expires_at: row.get(3)?,
        call_id: row.get(4)?,
        cseq: row.get(5)?,
        transport: row.get(6)?,
        source: row.get(7)?,
        local: row.get(8)?,
        user_agent: row.get(9)?,
        instance: row.get(10)?,
        reg_id: row.get(11)?,
        updated_at: row.get(12)?,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn binding(aor: &str, contact: &str, expires_at: i64) -> BindingRow {
        BindingRow {
            aor: aor.to_owned(),
            contact: contact.to_owned(),
            q: 0.5,
            expires_at,
            call_id: format!("cid-{aor}-{contact}"),
            cseq: 7,
            transport: "udp".to_owned(),
            source: "192.0.2.10:5062".to_owned(),
            local: "udp:0.0.0.0:5060".to_owned(),
            user_agent: Some("baresip".to_owned()),
            instance: Some("<urn:uuid:00000000-0000-0000-0000-000000000001>".to_owned()),
            reg_id: Some(1),
            updated_at: 1000,
        }
    }

    fn ext(number: &str, password: &str) -> ExtensionConfig {
        ExtensionConfig {
            number: number.to_owned(),
            password: password.to_owned(),
            name: Some(format!("Ext {number}")),
            did: None,
            enabled: true,
            permissions: None,
            allow: Vec::new(),
            legacy_digest: false,
        }
    }

    const REALM: &str = "office.test";

    #[test]
    fn migrations_apply_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(Store::open(&path).unwrap());
        drop(Store::open(&path).unwrap());
        let store = Store::open(&path).unwrap();
        let mode: String = store
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1, "NORMAL");
        let fk: i64 = store
            .conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    #[test]
    fn open_creates_parent_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c.db");
        Store::open(&path).unwrap();
        assert!(path.exists());
    }

    #[test]
    fn open_reports_path_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "not a directory").unwrap();
        let err = Store::open(&file.join("x.db")).unwrap_err();
        assert!(err.to_string().contains("file"), "{err}");
        std::fs::write(dir.path().join("junk.db"), vec![b'x'; 4096]).unwrap();
        let err = Store::open(&dir.path().join("junk.db")).unwrap_err();
        assert!(err.to_string().contains("junk.db"), "{err}");
    }

    #[test]
    fn extension_sync() {
        let mut store = Store::open_in_memory().unwrap();
        // A row managed elsewhere (e.g. the dashboard).
        store
            .conn
            .execute(
                "INSERT INTO extensions (number, password, source) VALUES ('200', 'web', 'web')",
                [],
            )
            .unwrap();

        let first = [ext("100", "a"), ext("101", "b")];
        let r = store.sync_config_extensions(&first, REALM).unwrap();
        assert_eq!(
            r,
            ExtensionSync {
                changed: 2,
                removed: 0
            }
        );
        let numbers: Vec<String> = store
            .extensions()
            .unwrap()
            .into_iter()
            .map(|e| e.number)
            .collect();
        assert_eq!(numbers, ["100", "101", "200"]);

        // Same config again: nothing changes.
        let r = store.sync_config_extensions(&first, REALM).unwrap();
        assert_eq!(r, ExtensionSync::default());

        // 100 changes, 101 disappears, 102 appears; 200 is untouched.
        let mut changed = ext("100", "new");
        changed.did = Some("+4930123456".into());
        changed.enabled = false;
        changed.name = None;
        let r = store
            .sync_config_extensions(&[changed, ext("102", "c")], REALM)
            .unwrap();
        assert_eq!(
            r,
            ExtensionSync {
                changed: 2,
                removed: 1
            }
        );
        assert_eq!(
            store.extension("100").unwrap(),
            Some(ExtensionRow {
                number: "100".into(),
                ha1_md5: digest_ha1("100", REALM, "new").0,
                ha1_sha256: digest_ha1("100", REALM, "new").1,
                name: None,
                did: Some("+4930123456".into()),
                enabled: false,
                permissions: None,
                legacy_digest: false,
                allow: Vec::new(),
            })
        );
        assert_eq!(store.extension("101").unwrap(), None);
        assert!(store.extension("102").unwrap().is_some());
        // The web row's clear password was hashed on the way.
        assert_eq!(
            store.extension("200").unwrap().map(|e| e.ha1_md5),
            Some(digest_ha1("200", REALM, "web").0)
        );

        // An empty config removes all config rows, nothing else.
        let r = store.sync_config_extensions(&[], REALM).unwrap();
        assert_eq!(r.removed, 2);
        let numbers: Vec<String> = store
            .extensions()
            .unwrap()
            .into_iter()
            .map(|e| e.number)
            .collect();
        assert_eq!(numbers, ["200"]);
    }

    #[test]
    fn binding_changes() {
        let mut store = Store::open_in_memory().unwrap();
        let a1 = binding("sip:100@office.test", "sip:100@192.0.2.10:5062", 2000);
        let a2 = binding("sip:100@office.test", "sip:100@192.0.2.11:5062", 3000);
        let b1 = binding("sip:101@office.test", "sip:101@192.0.2.12:5062", 2500);
        store
            .apply_binding_changes(&[
                BindingChange::Upsert(a1.clone()),
                BindingChange::Upsert(a2.clone()),
                BindingChange::Upsert(b1.clone()),
            ])
            .unwrap();
        assert_eq!(
            store.load_bindings(1000).unwrap(),
            [a1.clone(), a2.clone(), b1.clone()]
        );

        // Refresh replaces the row.
        let mut a1b = a1.clone();
        a1b.expires_at = 4000;
        a1b.cseq = 8;
        a1b.user_agent = None;
        a1b.instance = None;
        a1b.reg_id = None;
        store
            .apply_binding_changes(&[BindingChange::Upsert(a1b.clone())])
            .unwrap();
        assert_eq!(
            store.load_bindings(1000).unwrap(),
            [a1b.clone(), a2.clone(), b1.clone()]
        );

        // Only unexpired bindings are loaded.
        assert_eq!(
            store.load_bindings(2500).unwrap(),
            [a1b.clone(), a2.clone()]
        );

        store
            .apply_binding_changes(&[BindingChange::Remove {
                aor: a2.aor.clone(),
                contact: a2.contact.clone(),
            }])
            .unwrap();
        assert_eq!(
            store.load_bindings(1000).unwrap(),
            [a1b.clone(), b1.clone()]
        );

        store
            .apply_binding_changes(&[BindingChange::RemoveAll {
                aor: a1.aor.clone(),
            }])
            .unwrap();
        assert_eq!(
            store.load_bindings(1000).unwrap(),
            std::slice::from_ref(&b1)
        );

        assert_eq!(store.purge_expired_bindings(2499).unwrap(), 0);
        assert_eq!(store.purge_expired_bindings(2500).unwrap(), 1);
        assert!(store.load_bindings(0).unwrap().is_empty());
    }

    #[test]
    fn binding_changes_are_atomic() {
        let mut store = Store::open_in_memory().unwrap();
        let ok = binding("sip:100@x", "sip:a", 2000);
        store
            .apply_binding_changes(&[BindingChange::Upsert(ok.clone())])
            .unwrap();
        // Make the second statement fail; the first must not stick.
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER no_evil BEFORE INSERT ON bindings WHEN NEW.aor = 'evil'
                 BEGIN SELECT RAISE(ABORT, 'no'); END;",
            )
            .unwrap();
        let err = store.apply_binding_changes(&[
            BindingChange::RemoveAll {
                aor: ok.aor.clone(),
            },
            BindingChange::Upsert(binding("evil", "sip:b", 2000)),
        ]);
        assert!(err.is_err());
        assert_eq!(store.load_bindings(0).unwrap(), [ok]);
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let b = binding("sip:100@x", "sip:100@192.0.2.1", 5000);
        {
            let mut store = Store::open(&path).unwrap();
            store
                .sync_config_extensions(&[ext("100", "pw")], REALM)
                .unwrap();
            store
                .apply_binding_changes(&[BindingChange::Upsert(b.clone())])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load_bindings(0).unwrap(), [b]);
        assert_eq!(
            store.extension("100").unwrap().map(|e| e.ha1_md5),
            Some(digest_ha1("100", REALM, "pw").0)
        );
    }

    #[test]
    fn clear_passwords_are_hashed_and_leave_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let secret = "a-very-recognisable-sip-password";
        {
            let mut store = Store::open(&path).unwrap();
            // A row as written before migration 0007 (or by an old dashboard).
            store
                .conn
                .execute(
                    "INSERT INTO extensions (number, password, source) VALUES ('300', ?1, 'web')",
                    [secret],
                )
                .unwrap();
            store
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
            assert!(
                file_contains(&path, secret),
                "the test must see the clear text first"
            );
            store
                .sync_config_extensions(&[ext("100", secret)], REALM)
                .unwrap();
            let clear: i64 = store
                .conn
                .query_row(
                    "SELECT count(*) FROM extensions WHERE password != ''",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(clear, 0);
            let row = store.extension("300").unwrap().unwrap();
            assert_eq!(
                (row.ha1_md5, row.ha1_sha256),
                digest_ha1("300", REALM, secret)
            );
        }
        for f in ["h.db", "h.db-wal"] {
            assert!(
                !file_contains(&dir.path().join(f), secret),
                "{f} holds the password"
            );
        }
    }

    fn file_contains(path: &Path, needle: &str) -> bool {
        std::fs::read(path)
            .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    }
}
