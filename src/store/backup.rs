//! Backups of the store, the configuration file and the key files, in one file.
//!
//! A backup is an SQLite database: a consistent online snapshot of the store (`VACUUM INTO`,
//! which reads one transaction while the gateway keeps writing) with two tables added,
//! `backup_meta` (what made it, when) and `backup_files` (the configuration file and the DUNDi
//! and TLS key files, with the paths they came from). `restore` puts the store back (and, when
//! asked, the files); it refuses while the gateway runs, and never leaves a half-written store:
//! the snapshot is prepared beside the store and renamed over it.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

/// A file kept in a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupFile {
    /// What it is: `config`, `dundi-key`, `tls-key` …
    pub role: String,
    /// Where it came from (and where `restore --files` puts it back).
    pub path: PathBuf,
}

/// What a backup holds, as `restore` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// Unix seconds when it was made.
    pub created_at: i64,
    /// The version of pasarela that made it.
    pub version: String,
    /// Files kept besides the store.
    pub files: Vec<BackupFile>,
}

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A database operation failed.
    #[error("{}: {source}", path.display())]
    Sqlite {
        /// The database concerned.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a pasarela backup.
    #[error("{}: not a pasarela backup (no backup_meta table)", .0.display())]
    NotABackup(PathBuf),
    /// The target exists already.
    #[error("{}: exists already; choose a new file name", .0.display())]
    Exists(PathBuf),
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a backup of the store at `store` to `target` (which must not exist), with `files`
/// (role, path) read into it. Safe while the gateway runs.
pub fn backup(
    store: &Path,
    target: &Path,
    files: &[(String, PathBuf)],
    now_unix: i64,
) -> Result<BackupInfo, BackupError> {
    if target.exists() {
        return Err(BackupError::Exists(target.to_path_buf()));
    }
    let src =
        Connection::open_with_flags(store, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql(store))?;
    src.busy_timeout(super::BUSY_TIMEOUT).map_err(sql(store))?;
    let target_text = target.to_string_lossy().into_owned();
    src.execute("VACUUM INTO ?1", params![target_text])
        .map_err(sql(store))?;
    drop(src);
    let mut kept = Vec::new();
    let result = (|| {
        let mut db = Connection::open(target).map_err(sql(target))?;
        let tx = db.transaction().map_err(sql(target))?;
        tx.execute_batch(
            "CREATE TABLE backup_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE backup_files (role TEXT NOT NULL, path TEXT NOT NULL, content BLOB NOT NULL);",
        )
        .map_err(sql(target))?;
        tx.execute(
            "INSERT INTO backup_meta (key, value) VALUES ('created_at', ?1), ('version', ?2)",
            params![now_unix.to_string(), env!("CARGO_PKG_VERSION")],
        )
        .map_err(sql(target))?;
        for (role, path) in files {
            let content = std::fs::read(path).map_err(io(path))?;
            tx.execute(
                "INSERT INTO backup_files (role, path, content) VALUES (?1, ?2, ?3)",
                params![role, path.to_string_lossy(), content],
            )
            .map_err(sql(target))?;
            kept.push(BackupFile {
                role: role.clone(),
                path: path.clone(),
            });
        }
        tx.commit().map_err(sql(target))
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(target);
        return Err(e);
    }
    Ok(BackupInfo {
        created_at: now_unix,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        files: kept,
    })
}

/// Reads what a backup holds.
pub fn inspect(backup: &Path) -> Result<BackupInfo, BackupError> {
    let db = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sql(backup))?;
    let meta = |key: &str| -> Result<String, BackupError> {
        db.query_row(
            "SELECT value FROM backup_meta WHERE key = ?1",
            params![key],
            |r| r.get::<_, String>(0),
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(..) => BackupError::NotABackup(backup.to_path_buf()),
            other => sql(backup)(other),
        })
    };
    let created_at = meta("created_at")?.parse().unwrap_or(0);
    let version = meta("version")?;
    let mut stmt = db
        .prepare("SELECT role, path FROM backup_files ORDER BY rowid")
        .map_err(sql(backup))?;
    let files = stmt
        .query_map([], |r| {
            Ok(BackupFile {
                role: r.get(0)?,
                path: PathBuf::from(r.get::<_, String>(1)?),
            })
        })
        .map_err(sql(backup))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql(backup))?;
    Ok(BackupInfo {
        created_at,
        version,
        files,
    })
}

/// Puts the store in `backup` at `store` (replacing what is there), and with `with_files` the
/// kept files at their paths. The gateway must not be running.
pub fn restore(backup: &Path, store: &Path, with_files: bool) -> Result<BackupInfo, BackupError> {
    let info = inspect(backup)?;
    if let Some(dir) = store.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let staging = staging_path(store);
    let _ = std::fs::remove_file(&staging);
    {
        let src = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sql(backup))?;
        src.execute(
            "VACUUM INTO ?1",
            params![staging.to_string_lossy().into_owned()],
        )
        .map_err(sql(backup))?;
    }
    let cleaned = (|| {
        let db = Connection::open(&staging).map_err(sql(&staging))?;
        db.execute_batch("DROP TABLE backup_meta; DROP TABLE backup_files;")
            .map_err(sql(&staging))
    })();
    if let Err(e) = cleaned {
        let _ = std::fs::remove_file(&staging);
        return Err(e);
    }
    for suffix in ["-wal", "-shm"] {
        let mut p = store.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    std::fs::rename(&staging, store).map_err(io(store))?;
    if with_files {
        let db = Connection::open_with_flags(backup, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(sql(backup))?;
        let mut stmt = db
            .prepare("SELECT path, content FROM backup_files ORDER BY rowid")
            .map_err(sql(backup))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(sql(backup))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql(backup))?;
        for (path, content) in rows {
            let path = PathBuf::from(path);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
            }
            std::fs::write(&path, content).map_err(io(&path))?;
        }
    }
    Ok(info)
}

/// The files a backup keeps besides the store: the configuration file (`source`) and every
/// DUNDi key file it names (each once).
pub fn files_of(
    source: Option<&Path>,
    dundi: &crate::routing::dundi::Settings,
) -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let mut add = |role: &str, path: &Path| {
        if path.exists() && !files.iter().any(|(_, p)| p == path) {
            files.push((role.to_owned(), path.to_path_buf()));
        }
    };
    if let Some(p) = source {
        add("config", p);
    }
    let d = dundi;
    for p in [&d.private_key, &d.public_key].into_iter().flatten() {
        add("dundi-key", p);
    }
    for peer in &d.peers {
        for p in [&peer.inkey, &peer.outkey].into_iter().flatten() {
            add("dundi-key", p);
        }
    }
    files
}

fn staging_path(store: &Path) -> PathBuf {
    let mut p = store.as_os_str().to_owned();
    p.push(".restoring");
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_and_restore_round_trip() {
        let dir = std::env::temp_dir().join(format!("pasarela-backup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("p.db");
        let s = crate::store::Store::open(&store).unwrap();
        drop(s);
        let conf = dir.join("p.toml");
        std::fs::write(&conf, "[sip]\n").unwrap();
        {
            let db = Connection::open(&store).unwrap();
            db.execute(
                "INSERT INTO web_users (username, password_hash, created_at) VALUES ('a','h',1)",
                [],
            )
            .unwrap();
        }
        let target = dir.join("b.db");
        let info = backup(&store, &target, &[("config".into(), conf.clone())], 42).unwrap();
        assert_eq!(info.files.len(), 1);
        assert!(matches!(
            backup(&store, &target, &[], 43),
            Err(BackupError::Exists(_))
        ));
        std::fs::remove_file(&store).unwrap();
        std::fs::remove_file(&conf).unwrap();
        let info = restore(&target, &store, true).unwrap();
        assert_eq!(info.created_at, 42);
        assert_eq!(std::fs::read_to_string(&conf).unwrap(), "[sip]\n");
        let db = Connection::open(&store).unwrap();
        let n: i64 = db
            .query_row("SELECT COUNT(*) FROM web_users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        let meta: Result<i64, _> =
            db.query_row("SELECT COUNT(*) FROM backup_meta", [], |r| r.get(0));
        assert!(meta.is_err(), "backup tables are not left in the store");
        // Not a backup: the store itself.
        assert!(matches!(inspect(&store), Err(BackupError::NotABackup(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
