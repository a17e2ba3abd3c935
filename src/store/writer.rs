//! The binding writer: a background thread that persists registrar binding changes in batches.
//!
//! The registrar keeps its bindings in memory and must never wait on the disk. It hands every
//! change to a [`BindingWriterHandle`], whose [`send`](BindingWriterHandle::send) only pushes
//! onto an unbounded channel. The writer is a [`BatchWriter`] (the store's one batching
//! writer) whose thread owns its own [`Store`] connection; each time it wakes it drains
//! everything queued and applies it in a single transaction, so a burst of thousands of
//! changes costs a handful of commits. Write errors are logged and counted, never
//! panicked on; [`flush`](BindingWriterHandle::flush) reports them.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::batch::{BatchHandle, BatchWriter, Sink};
use super::{BindingChange, Store, StoreError};

/// Upper bound on changes applied in one transaction, so a huge backlog still commits in
/// reasonably sized steps.
const MAX_BATCH: usize = 50_000;

/// Counters shared between the writer thread and its owner.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub batches: u64,
    /// Changes written.
    pub changes: u64,
    /// Batches that failed and were dropped.
    pub failed_batches: u64,
}

/// Sends binding changes to the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BindingWriterHandle {
    inner: BatchHandle<BindingChange>,
}

/// Owns the writer thread; dropping it (or calling [`shutdown`](Self::shutdown)) writes what
/// is queued and joins the thread.
#[derive(Debug)]
pub struct BindingWriter {
    inner: BatchWriter<BindingChange>,
    stats: Arc<Mutex<WriterStats>>,
}

/// The writer thread's side: the store connection and the counters.
struct Bindings {
    store: Store,
    stats: Arc<Mutex<WriterStats>>,
}

fn lock(stats: &Mutex<WriterStats>) -> std::sync::MutexGuard<'_, WriterStats> {
    match stats.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl BindingWriter {
    /// Opens the database at `path` (migrating it if needed) and starts the writer thread.
    pub fn spawn(path: &Path) -> Result<(BindingWriter, BindingWriterHandle), StoreError> {
        let store = Store::open(path)?;
        BindingWriter::spawn_with(store)
    }

    /// Starts the writer thread on an already opened store.
    pub fn spawn_with(store: Store) -> Result<(BindingWriter, BindingWriterHandle), StoreError> {
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let sink = Bindings {
            store,
            stats: Arc::clone(&stats),
        };
        let (inner, handle) = BatchWriter::spawn("binding", sink, MAX_BATCH)
            .map_err(|_| StoreError::WriterStopped)?;
        Ok((
            BindingWriter { inner, stats },
            BindingWriterHandle { inner: handle },
        ))
    }

    /// Another handle for sending changes.
    pub fn handle(&self) -> BindingWriterHandle {
        BindingWriterHandle {
            inner: self.inner.handle(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        *lock(&self.stats)
    }

    /// Writes everything queued, stops the thread and waits for it. Reports failed batches
    /// since the last flush.
    pub fn shutdown(self) -> Result<(), StoreError> {
        failures(self.inner.shutdown())
    }
}

fn failures(flushed: Result<usize, super::batch::Stopped>) -> Result<(), StoreError> {
    match flushed {
        Ok(0) => Ok(()),
        Ok(failed) => Err(StoreError::WriteFailed { failed }),
        Err(_) => Err(StoreError::WriterStopped),
    }
}

impl BindingWriterHandle {
    /// Queues a change. Never blocks and never touches the disk; if the writer has stopped the
    /// change is dropped with a warning.
    pub fn send(&self, change: BindingChange) {
        if self.inner.send(change).is_err() {
            tracing::warn!("binding writer has stopped; a binding change was not persisted");
        }
    }

    /// Blocks until every change sent before this call is written. Fails if the writer has
    /// stopped or if batches failed since the previous flush.
    pub fn flush(&self) -> Result<(), StoreError> {
        failures(self.inner.flush())
    }
}

impl Sink for Bindings {
    type Item = BindingChange;

    /// Applies the batch in one transaction; 1 if it failed (the whole batch is then dropped),
    /// else 0.
    fn write(&mut self, batch: &mut Vec<BindingChange>) -> usize {
        let result = self.store.apply_binding_changes(batch);
        let mut s = lock(&self.stats);
        match result {
            Ok(()) => {
                s.batches += 1;
                s.changes += batch.len() as u64;
                0
            }
            Err(e) => {
                s.failed_batches += 1;
                tracing::error!(
                    changes = batch.len(),
                    error = %e,
                    "cannot persist registrar bindings; they stay in memory only"
                );
                1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::binding;

    #[test]
    fn batches_many_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (writer, handle) = BindingWriter::spawn(&path).unwrap();
        for i in 0..10_000 {
            handle.send(BindingChange::Upsert(binding(
                &format!("sip:{i}@x"),
                "sip:c@192.0.2.1",
                10_000 + i,
            )));
        }
        handle.flush().unwrap();
        let stats = writer.stats();
        assert_eq!(stats.changes, 10_000);
        assert!(stats.batches < 1000, "{stats:?}");
        assert_eq!(stats.failed_batches, 0);

        let store = Store::open(&path).unwrap();
        assert_eq!(store.load_bindings(0).unwrap().len(), 10_000);
        assert_eq!(store.load_bindings(15_000).unwrap().len(), 4_999);

        // Removals go through the same path, in order.
        handle.send(BindingChange::RemoveAll {
            aor: "sip:0@x".into(),
        });
        handle.send(BindingChange::Upsert(binding("sip:0@x", "sip:new", 99_999)));
        handle.send(BindingChange::Remove {
            aor: "sip:1@x".into(),
            contact: "sip:c@192.0.2.1".into(),
        });
        handle.flush().unwrap();
        let rows = store.load_bindings(0).unwrap();
        assert_eq!(rows.len(), 9_999);
        assert!(rows
            .iter()
            .any(|b| b.aor == "sip:0@x" && b.contact == "sip:new"));
        writer.shutdown().unwrap();
    }

    #[test]
    fn drop_writes_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (writer, handle) = BindingWriter::spawn(&path).unwrap();
        for i in 0..100 {
            handle.send(BindingChange::Upsert(binding(
                &format!("sip:{i}@x"),
                "sip:c",
                5000,
            )));
        }
        drop(writer);
        assert!(matches!(handle.flush(), Err(StoreError::WriterStopped)));
        handle.send(BindingChange::RemoveAll {
            aor: "sip:1@x".into(),
        }); // dropped, no panic
        let store = Store::open(&path).unwrap();
        assert_eq!(store.load_bindings(0).unwrap().len(), 100);
    }

    #[test]
    fn failures_are_reported_not_panicked() {
        let store = Store::open_in_memory().unwrap();
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER no_evil BEFORE INSERT ON bindings WHEN NEW.aor = 'evil'
                 BEGIN SELECT RAISE(ABORT, 'no'); END;",
            )
            .unwrap();
        let (writer, handle) = BindingWriter::spawn_with(store).unwrap();
        handle.send(BindingChange::Upsert(binding("evil", "sip:c", 5000)));
        assert!(matches!(
            handle.flush(),
            Err(StoreError::WriteFailed { failed: 1 })
        ));
        handle.send(BindingChange::Upsert(binding("good", "sip:c", 5000)));
        handle.flush().unwrap();
        assert_eq!(writer.stats().failed_batches, 1);
        assert_eq!(writer.stats().changes, 1);
        writer.shutdown().unwrap();
    }
}
