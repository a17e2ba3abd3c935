//! The binding writer: a background thread that persists registrar binding changes in batches.
//!
//! The registrar keeps its bindings in memory and must never wait on the disk. It hands every
//! change to a [`BindingWriterHandle`], whose [`send`](BindingWriterHandle::send) only pushes
//! onto an unbounded channel. The writer thread owns its own [`Store`] connection; each time it
//! wakes it drains everything queued and applies it in a single transaction, so a burst of
//! thousands of changes costs a handful of commits. Write errors are logged and counted, never
//! panicked on; [`flush`](BindingWriterHandle::flush) reports them.

use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{BindingChange, Store, StoreError};

/// Upper bound on changes applied in one transaction, so a huge backlog still commits in
/// reasonably sized steps.
const MAX_BATCH: usize = 50_000;

// Nearly every message is a `Change`; boxing it would cost an allocation per change.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Change(BindingChange),
    /// Reply once everything sent before this message is written: `Ok` or the failures since
    /// the previous flush.
    Flush(mpsc::SyncSender<usize>),
    Shutdown,
}

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
    tx: Sender<Msg>,
}

/// Owns the writer thread; dropping it (or calling [`shutdown`](Self::shutdown)) writes what
/// is queued and joins the thread.
#[derive(Debug)]
pub struct BindingWriter {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<Mutex<WriterStats>>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Change(c) => f.debug_tuple("Change").field(c).finish(),
            Msg::Flush(_) => f.write_str("Flush"),
            Msg::Shutdown => f.write_str("Shutdown"),
        }
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
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(Mutex::new(WriterStats::default()));
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("binding-writer".to_owned())
            .spawn(move || run(store, rx, &thread_stats))
            .map_err(|_| StoreError::WriterStopped)?;
        let handle = BindingWriterHandle { tx: tx.clone() };
        Ok((
            BindingWriter {
                tx,
                thread: Some(thread),
                stats,
            },
            handle,
        ))
    }

    /// Another handle for sending changes.
    pub fn handle(&self) -> BindingWriterHandle {
        BindingWriterHandle {
            tx: self.tx.clone(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        match self.stats.lock() {
            Ok(s) => *s,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Writes everything queued, stops the thread and waits for it. Reports failed batches
    /// since the last flush.
    pub fn shutdown(mut self) -> Result<(), StoreError> {
        let result = self.handle().flush();
        self.stop();
        result
    }

    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // The thread drains the queue before it acts on Shutdown.
        let _ = self.tx.send(Msg::Shutdown);
        if thread.join().is_err() {
            tracing::error!("binding writer thread panicked");
        }
    }
}

impl Drop for BindingWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

impl BindingWriterHandle {
    /// Queues a change. Never blocks and never touches the disk; if the writer has stopped the
    /// change is dropped with a warning.
    pub fn send(&self, change: BindingChange) {
        if self.tx.send(Msg::Change(change)).is_err() {
            tracing::warn!("binding writer has stopped; a binding change was not persisted");
        }
    }

    /// Blocks until every change sent before this call is written. Fails if the writer has
    /// stopped or if batches failed since the previous flush.
    pub fn flush(&self) -> Result<(), StoreError> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Flush(reply_tx))
            .map_err(|_| StoreError::WriterStopped)?;
        match reply_rx.recv() {
            Ok(0) => Ok(()),
            Ok(failed) => Err(StoreError::WriteFailed { failed }),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }
}

fn run(mut store: Store, rx: Receiver<Msg>, stats: &Mutex<WriterStats>) {
    let mut batch: Vec<BindingChange> = Vec::new();
    let mut failed_since_flush = 0usize;
    let mut waiting: Vec<mpsc::SyncSender<usize>> = Vec::new();
    loop {
        // Block for the first message, then take whatever else is already queued.
        let mut stop = false;
        let mut next = rx.recv().ok();
        if next.is_none() {
            stop = true; // every sender is gone
        }
        while let Some(msg) = next.take() {
            match msg {
                Msg::Change(c) => batch.push(c),
                Msg::Flush(reply) => waiting.push(reply),
                Msg::Shutdown => {
                    stop = true;
                }
            }
            if batch.len() >= MAX_BATCH {
                failed_since_flush += write(&mut store, &mut batch, stats);
            }
            if stop {
                break;
            }
            next = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    stop = true;
                    None
                }
            };
        }
        failed_since_flush += write(&mut store, &mut batch, stats);
        if !waiting.is_empty() {
            for reply in waiting.drain(..) {
                let _ = reply.send(failed_since_flush);
            }
            failed_since_flush = 0;
        }
        if stop {
            break;
        }
    }
    tracing::debug!("binding writer stopped");
}

/// Applies and clears `batch`; returns 1 if it failed, else 0.
fn write(store: &mut Store, batch: &mut Vec<BindingChange>, stats: &Mutex<WriterStats>) -> usize {
    if batch.is_empty() {
        return 0;
    }
    let result = store.apply_binding_changes(batch);
    let mut s = match stats.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    };
    let failed = match result {
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
    };
    batch.clear();
    failed
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
