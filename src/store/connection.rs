//! One connection policy for the whole store: how a writing connection is set up (WAL journal,
//! busy timeout, foreign keys, zeroed deletes, the durability its owner asks for) and how a
//! reading one is (read-only and `query_only`, the same busy timeout). Every connection to the
//! store's file is opened here, so the pragmas are written once.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{StoreError, BUSY_TIMEOUT};

/// How a writing connection syncs its commits to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL`: a commit survives a crash of the process (kill -9), not
    /// necessarily a power loss. For readers and tools.
    Process,
    /// `synchronous=FULL`: every commit is on the disk before it returns, so it also survives a
    /// power loss. The batching writers' choice (they commit in batches, so this costs little).
    Power,
}

/// Sets the writer pragmas on `conn`. `journal_mode` answers with the mode in effect
/// ("memory" for in-memory databases), which is accepted.
pub fn configure_writer(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    let sync = match durability {
        Durability::Process => "NORMAL",
        Durability::Power => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Deleted and overwritten content (a replaced password hash) is zeroed in the file.
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(())
}

/// Gives back the memory `conn` caches (its page cache, what its statements hold between
/// runs): a writer after a burst, once it is idle. The next statements read the pages again
/// (from the OS's file cache). Failures only mean nothing was released.
pub fn release_memory(conn: &Connection) {
    if let Err(e) = conn.execute_batch("PRAGMA shrink_memory;") {
        tracing::debug!(error = %e, "the store connection kept its cache");
    }
}

/// Bytes of `conn`'s page cache in use (`SQLITE_DBSTATUS_CACHE_USED`), for tests and status.
pub fn cache_used(conn: &Connection) -> i64 {
    let (mut current, mut highest) = (0, 0);
    // SAFETY: `conn.handle()` is the live connection `conn` owns for this call's duration; the
    // two out-pointers are valid locals.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_status(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED,
            &mut current,
            &mut highest,
            0,
        )
    };
    if rc == rusqlite::ffi::SQLITE_OK {
        i64::from(current)
    } else {
        0
    }
}

fn open_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    }
}

/// A writing connection to the store's file at `path` (which must have been migrated by
/// [`super::Store::open`]).
pub fn open_writer(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(open_error(path))?;
    configure_writer(&conn, durability).map_err(open_error(path))?;
    Ok(conn)
}

/// A read-only connection to the store's file at `path`; fails when the file does not exist
/// (it is never created). A statement that would write fails.
pub fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_error(path))?;
    let configure = || -> rusqlite::Result<()> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "query_only", "ON")?;
        Ok(())
    };
    configure().map_err(open_error(path))?;
    Ok(conn)
}

/// A writing connection to the store's file, opened with this policy after the schema is
/// migrated: the dashboard's one connection for its writes (its reads go through a
/// [`ReadPool`]). Repository functions take its `conn`.
#[derive(Debug)]
pub struct Writer {
    pub(crate) conn: Connection,
}

impl Writer {
    /// Opens (creating and migrating if needed) the store at `path` and a writing connection
    /// to it.
    pub fn open(path: &Path, durability: Durability) -> Result<Writer, StoreError> {
        drop(super::Store::open(path)?);
        Ok(Writer {
            conn: open_writer(path, durability)?,
        })
    }
}

/// A few read-only connections to the store's file that the dashboard's pages and API read
/// through, so that reads neither wait for each other behind one lock nor can write. Cheap to
/// clone (the connections are shared).
#[derive(Clone)]
pub struct ReadPool {
    inner: std::sync::Arc<PoolInner>,
}

struct PoolInner {
    idle: std::sync::Mutex<Vec<Connection>>,
    returned: std::sync::Condvar,
    size: usize,
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool")
            .field("size", &self.inner.size)
            .finish()
    }
}

/// A connection taken from a [`ReadPool`]; it goes back when dropped.
pub struct Reader<'a> {
    conn: Option<Connection>,
    pool: &'a PoolInner,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // Present from `get` until `drop`.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("a reader holds its connection"))
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.push(conn);
            drop(idle);
            self.pool.returned.notify_one();
        }
    }
}

impl ReadPool {
    /// Opens `size` (at least 1) read-only connections to the migrated store at `path`.
    pub fn open(path: &Path, size: usize) -> Result<ReadPool, StoreError> {
        let size = size.max(1);
        let idle = (0..size)
            .map(|_| open_reader(path))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReadPool {
            inner: std::sync::Arc::new(PoolInner {
                idle: std::sync::Mutex::new(idle),
                returned: std::sync::Condvar::new(),
                size,
            }),
        })
    }

    /// How many connections the pool holds.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// A connection, waiting while all of them are in use. Blocking: call it on a blocking
    /// thread.
    pub fn get(&self) -> Reader<'_> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = idle.pop() {
                return Reader {
                    conn: Some(conn),
                    pool: &self.inner,
                };
            }
            idle = self
                .inner
                .returned
                .wait(idle)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        drop(super::super::Store::open(&path).unwrap());
        (dir, path)
    }

    #[test]
    fn readers_see_committed_writes_and_cannot_write() {
        let (_d, path) = store();
        let pool = ReadPool::open(&path, 3).unwrap();
        let writer = open_writer(&path, Durability::Power).unwrap();
        let count = |r: &Connection| -> i64 {
            r.query_row("SELECT count(*) FROM saved_filters", [], |row| row.get(0))
                .unwrap()
        };
        assert_eq!(count(&pool.get()), 0);
        writer
            .execute(
                "INSERT INTO web_users (username, password_hash, created_at) VALUES ('a', 'x', 0)",
                [],
            )
            .unwrap();
        writer
            .execute(
                "INSERT INTO saved_filters (user_id, name, query) VALUES (1, 'n', 'q')",
                [],
            )
            .unwrap();
        // Every connection of the pool sees the commit.
        let all: Vec<Reader<'_>> = (0..pool.size()).map(|_| pool.get()).collect();
        assert!(all.iter().all(|r| count(r) == 1));
        // An uncommitted write is not seen.
        writer
            .execute_batch("BEGIN; DELETE FROM saved_filters;")
            .unwrap();
        assert!(all.iter().all(|r| count(r) == 1));
        writer.execute_batch("COMMIT").unwrap();
        assert!(all.iter().all(|r| count(r) == 0));
        // A reader cannot write.
        for r in &all {
            let err = r
                .execute("DELETE FROM web_users", [])
                .expect_err("a reader must not write");
            assert!(
                err.to_string().contains("readonly") || err.to_string().contains("read-only"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_busy_pool_waits_for_a_connection_to_come_back() {
        let (_d, path) = store();
        let pool = ReadPool::open(&path, 2).unwrap();
        let a = pool.get();
        let b = pool.get();
        let p2 = pool.clone();
        let waiter = std::thread::spawn(move || {
            let r = p2.get();
            r.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
                .unwrap()
        });
        drop(a);
        assert_eq!(waiter.join().unwrap(), 1);
        drop(b);
        assert!(
            open_reader(&path.with_extension("missing")).is_err(),
            "never created"
        );
    }
}
