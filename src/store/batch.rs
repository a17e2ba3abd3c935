//! The batching writer every background writer of the store is built on (registrar bindings,
//! call records): a thread that owns one writing connection (through its [`Sink`]) and an
//! unbounded channel that callers push items onto without ever blocking or touching the disk.
//!
//! Each time the thread wakes it takes the first item and whatever else is already queued (at
//! most `max_batch`), and hands them, in the order they were sent, to [`Sink::write`], which
//! commits them (normally in one transaction). So an item sent while the writer is idle is
//! written at once, and a burst of thousands costs a handful of commits. A writer started with
//! a *linger* ([`BatchWriter::spawn_lingering`]) waits that long after the first item for
//! more before it writes (group commit: at a steady rate of calls one commit serves all the
//! calls of the window instead of one each); a flush or shutdown ends the wait at once. While
//! it lingers the thread sleeps until the window is over: items sent meanwhile are queued
//! without waking it (only a flush or shutdown does), so a window costs the thread two
//! wake-ups however many items it collects (500 calls/s: ~100 wake-ups a second instead of
//! one per item, ~1 100). A
//! [`flush`](BatchHandle::flush) answers once everything sent before it is written, with the
//! number of items that failed since the previous flush; dropping or
//! [`shutdown`](BatchWriter::shutdown) writes what is queued before the thread ends.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where a [`BatchWriter`]'s items go: owned by the writer thread.
pub trait Sink: Send + 'static {
    /// What callers send.
    type Item: Send + 'static;

    /// Writes `batch` (in the order sent; never empty); returns how many items could not be
    /// written (those are logged by the sink). The batch is cleared afterwards.
    fn write(&mut self, batch: &mut Vec<Self::Item>) -> usize;

    /// Nothing was sent for [`IDLE_AFTER`] after a write: a chance to give back what the
    /// writes cached (the connection's page cache after a burst). Called once per idle spell.
    fn idle(&mut self) {}
}

/// How long a writer waits after its last write before it calls [`Sink::idle`] (and drops the
/// room its batch grew to).
pub const IDLE_AFTER: Duration = Duration::from_secs(5);

enum Msg<T> {
    Item(T),
    /// Reply once everything sent before this message is written, with the failures since the
    /// previous flush.
    Flush(mpsc::SyncSender<usize>),
    Shutdown,
}

/// The writer thread has stopped (shut down, or its sink panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {0} writer has stopped")]
pub struct Stopped(pub &'static str);

/// Sends items to the writer thread. Cheap to clone.
pub struct BatchHandle<T> {
    tx: Sender<Msg<T>>,
    name: &'static str,
    /// The writer thread, woken by a flush or shutdown while it lingers (items are not).
    writer: std::thread::Thread,
}

impl<T> Clone for BatchHandle<T> {
    fn clone(&self) -> Self {
        BatchHandle {
            tx: self.tx.clone(),
            name: self.name,
            writer: self.writer.clone(),
        }
    }
}

impl<T> std::fmt::Debug for BatchHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BatchHandle").field(&self.name).finish()
    }
}

impl<T> BatchHandle<T> {
    /// Queues `item`. Never blocks and never touches the disk; when the writer has stopped the
    /// item is given back.
    pub fn send(&self, item: T) -> Result<(), T> {
        self.tx.send(Msg::Item(item)).map_err(|e| match e.0 {
            Msg::Item(item) => item,
            // Only items are sent here.
            Msg::Flush(_) | Msg::Shutdown => unreachable!("send gives back what it was given"),
        })
    }

    /// Blocks until every item sent before this call is written; the number of items that
    /// failed since the previous flush.
    pub fn flush(&self) -> Result<usize, Stopped> {
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Flush(reply_tx))
            .map_err(|_| Stopped(self.name))?;
        // A lingering writer sleeps without looking at the channel.
        self.writer.unpark();
        reply_rx.recv().map_err(|_| Stopped(self.name))
    }
}

/// Owns the writer thread; dropping it (or calling [`shutdown`](Self::shutdown)) writes what is
/// queued and joins the thread.
pub struct BatchWriter<T> {
    handle: BatchHandle<T>,
    thread: Option<JoinHandle<()>>,
}

impl<T> std::fmt::Debug for BatchWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchWriter")
            .field("name", &self.handle.name)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl<T: Send + 'static> BatchWriter<T> {
    /// Starts the thread `name-writer` writing into `sink` at most `max_batch` items at a time.
    pub fn spawn<S: Sink<Item = T>>(
        name: &'static str,
        sink: S,
        max_batch: usize,
    ) -> std::io::Result<(BatchWriter<T>, BatchHandle<T>)> {
        BatchWriter::spawn_lingering(name, sink, max_batch, Duration::ZERO)
    }

    /// [`spawn`](Self::spawn), but each write waits until `linger` has passed since the first
    /// item of its batch (or the batch is full, or a flush or shutdown comes), so that items
    /// sent within `linger` of each other share one write.
    pub fn spawn_lingering<S: Sink<Item = T>>(
        name: &'static str,
        sink: S,
        max_batch: usize,
        linger: Duration,
    ) -> std::io::Result<(BatchWriter<T>, BatchHandle<T>)> {
        Self::spawn_idling(name, sink, max_batch, linger, IDLE_AFTER)
    }

    /// [`spawn_lingering`](Self::spawn_lingering) with the wait before [`Sink::idle`].
    fn spawn_idling<S: Sink<Item = T>>(
        name: &'static str,
        sink: S,
        max_batch: usize,
        linger: Duration,
        idle_after: Duration,
    ) -> std::io::Result<(BatchWriter<T>, BatchHandle<T>)> {
        let (tx, rx) = mpsc::channel();
        let pace = Pace {
            max_batch: max_batch.max(1),
            linger,
            idle_after,
        };
        let thread = std::thread::Builder::new()
            .name(format!("{name}-writer"))
            .spawn(move || run(name, sink, rx, pace))?;
        let handle = BatchHandle {
            tx,
            name,
            writer: thread.thread().clone(),
        };
        Ok((
            BatchWriter {
                handle: handle.clone(),
                thread: Some(thread),
            },
            handle,
        ))
    }

    /// Another handle for sending items.
    pub fn handle(&self) -> BatchHandle<T> {
        self.handle.clone()
    }

    /// Writes everything queued, stops the thread and waits for it; the items that failed since
    /// the last flush.
    pub fn shutdown(mut self) -> Result<usize, Stopped> {
        let result = self.handle.flush();
        self.stop();
        result
    }
}

impl<T> BatchWriter<T> {
    fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // The thread drains the queue before it acts on Shutdown.
        let _ = self.handle.tx.send(Msg::Shutdown);
        thread.thread().unpark();
        if thread.join().is_err() {
            tracing::error!("{} writer thread panicked", self.handle.name);
        }
    }
}

impl<T> Drop for BatchWriter<T> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How a writer thread batches: at most `max_batch` items a write, `linger` after the first
/// item, [`Sink::idle`] `idle_after` after the last write.
struct Pace {
    max_batch: usize,
    linger: Duration,
    idle_after: Duration,
}

fn run<S: Sink>(name: &str, mut sink: S, rx: Receiver<Msg<S::Item>>, pace: Pace) {
    let Pace {
        max_batch,
        linger,
        idle_after,
    } = pace;
    let mut batch: Vec<S::Item> = Vec::new();
    let mut failed_since_flush = 0usize;
    let mut waiting: Vec<mpsc::SyncSender<usize>> = Vec::new();
    // Written since the last idle spell.
    let mut dirty = false;
    loop {
        // Block for the first message (after a write, at most until the writer counts as
        // idle), then take whatever else is queued, or comes before the linger after the
        // first item is over.
        let mut stop = false;
        let first = if dirty {
            match rx.recv_timeout(idle_after) {
                Ok(m) => Ok(m),
                Err(RecvTimeoutError::Timeout) => {
                    sink.idle();
                    // A burst's batch keeps its room: dropped with the rest, and the pages the
                    // burst freed on this thread go back.
                    batch = Vec::new();
                    crate::memory::give_back_here();
                    dirty = false;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => Err(()),
            }
        } else {
            rx.recv().map_err(|_| ())
        };
        let mut next = first.ok();
        if next.is_none() {
            stop = true; // every sender is gone
        }
        let mut deadline: Option<Instant> = None;
        let mut hurry = linger.is_zero();
        while let Some(msg) = next.take() {
            match msg {
                Msg::Item(item) => {
                    batch.push(item);
                    if deadline.is_none() {
                        deadline = Some(Instant::now() + linger);
                    }
                }
                // Someone waits: write now.
                Msg::Flush(reply) => {
                    waiting.push(reply);
                    hurry = true;
                }
                Msg::Shutdown => stop = true,
            }
            if batch.len() >= max_batch {
                dirty = true;
                failed_since_flush += write(&mut sink, &mut batch);
            }
            if stop {
                break;
            }
            let until = deadline.filter(|_| !hurry);
            next = match next_until(&rx, until) {
                Ok(m) => m,
                Err(()) => {
                    stop = true;
                    None
                }
            };
        }
        if !batch.is_empty() {
            dirty = true;
        }
        failed_since_flush += write(&mut sink, &mut batch);
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
    tracing::debug!("{name} writer stopped");
}

/// The next message, waiting for one until `until` (not at all when `None`); `Err` when every
/// sender is gone. The wait is a sleep, not a blocking receive: items sent meanwhile do not
/// wake the thread, a flush or shutdown (which unpark it) does.
fn next_until<T>(rx: &Receiver<Msg<T>>, until: Option<Instant>) -> Result<Option<Msg<T>>, ()> {
    loop {
        match rx.try_recv() {
            Ok(m) => return Ok(Some(m)),
            Err(TryRecvError::Disconnected) => return Err(()),
            Err(TryRecvError::Empty) => {}
        }
        let left = until.map_or(Duration::ZERO, |u| {
            u.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::park_timeout(left);
    }
}

/// Hands a non-empty `batch` to the sink and clears it; the items that failed.
fn write<S: Sink>(sink: &mut S, batch: &mut Vec<S::Item>) -> usize {
    if batch.is_empty() {
        return 0;
    }
    let failed = sink.write(batch);
    batch.clear();
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Rows of a table on a real SQLite connection, one transaction per batch; item `u64::MAX`
    /// is refused (its batch is written without it).
    struct Rows {
        conn: rusqlite::Connection,
        batches: Arc<Mutex<Vec<usize>>>,
        /// Idle spells, with the connection's page cache (bytes) before and after each gave
        /// it back.
        idles: Arc<Mutex<Vec<(i64, i64)>>>,
    }

    impl Sink for Rows {
        type Item = u64;
        fn write(&mut self, batch: &mut Vec<u64>) -> usize {
            let tx = self.conn.transaction().unwrap();
            let mut failed = 0;
            for n in batch.iter() {
                if *n == u64::MAX {
                    failed += 1;
                    continue;
                }
                tx.execute("INSERT INTO t (n) VALUES (?1)", [*n as i64])
                    .unwrap();
            }
            tx.commit().unwrap();
            self.batches.lock().unwrap().push(batch.len());
            failed
        }

        fn idle(&mut self) {
            let before = crate::store::connection::cache_used(&self.conn);
            crate::store::connection::release_memory(&self.conn);
            let after = crate::store::connection::cache_used(&self.conn);
            self.idles.lock().unwrap().push((before, after));
        }
    }

    fn rows(dir: &tempfile::TempDir) -> (Rows, Arc<Mutex<Vec<usize>>>, std::path::PathBuf) {
        let path = dir.path().join("b.db");
        let conn = crate::store::connection::open_writer(
            &path,
            crate::store::connection::Durability::Process,
        )
        .unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)")
            .unwrap();
        let batches = Arc::new(Mutex::new(Vec::new()));
        (
            Rows {
                conn,
                batches: Arc::clone(&batches),
                idles: Arc::default(),
            },
            batches,
            path,
        )
    }

    fn stored(path: &std::path::Path) -> Vec<u64> {
        let conn = crate::store::connection::open_reader(path).unwrap();
        let mut stmt = conn.prepare("SELECT n FROM t ORDER BY id").unwrap();
        let rows = stmt
            .query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .map(|n| n.unwrap() as u64)
            .collect();
        rows
    }

    /// After a burst the writer goes idle: once per idle spell the sink is told, and the
    /// connection's page cache, filled by the burst, is given back.
    #[test]
    fn idle_after_writes_gives_the_cache_back() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _, _) = rows(&dir);
        let idles = Arc::clone(&sink.idles);
        let idle_after = Duration::from_millis(100);
        let (writer, handle) =
            BatchWriter::spawn_idling("test", sink, 1_000, Duration::ZERO, idle_after).unwrap();
        let wait_idles = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while idles.lock().unwrap().len() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            idles.lock().unwrap().clone()
        };
        for n in 0..20_000 {
            handle.send(n).unwrap();
        }
        assert_eq!(handle.flush(), Ok(0));
        let spells = wait_idles(1);
        assert_eq!(spells.len(), 1, "{spells:?}");
        let (before, after) = spells[0];
        assert!(
            before > 100_000,
            "the burst filled the page cache: {before} B"
        );
        assert!(after * 10 < before, "given back: {before} B -> {after} B");
        // Nothing written since: no second spell.
        std::thread::sleep(idle_after * 4);
        assert_eq!(idles.lock().unwrap().len(), 1);
        handle.send(1).unwrap();
        assert_eq!(handle.flush(), Ok(0));
        assert_eq!(wait_idles(2).len(), 2, "a write starts the next spell");
        assert_eq!(writer.shutdown(), Ok(0));
    }

    #[test]
    fn batches_in_order_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, batches, path) = rows(&dir);
        let (writer, handle) = BatchWriter::spawn("test", sink, 1_000).unwrap();
        for n in 0..20_000 {
            handle.send(n).unwrap();
        }
        assert_eq!(handle.flush(), Ok(0));
        let sizes = batches.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 20_000);
        assert!(sizes.iter().all(|s| *s <= 1_000), "{sizes:?}");
        assert!(sizes.len() < 20_000 / 2, "batched: {} commits", sizes.len());
        assert_eq!(stored(&path), (0..20_000).collect::<Vec<_>>());
        assert_eq!(writer.shutdown(), Ok(0));
    }

    #[test]
    fn no_row_is_lost_from_many_senders_and_failures_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _, path) = rows(&dir);
        let (writer, handle) = BatchWriter::spawn("test", sink, 500).unwrap();
        let senders: Vec<_> = (0..4u64)
            .map(|t| {
                let h = handle.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        h.send(t * 1_000_000 + i).unwrap();
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        handle.send(u64::MAX).unwrap();
        assert_eq!(handle.flush(), Ok(1), "the refused item is reported once");
        assert_eq!(handle.flush(), Ok(0));
        let mut got = stored(&path);
        assert_eq!(got.len(), 20_000);
        got.sort_unstable();
        let mut want: Vec<u64> = (0..4u64)
            .flat_map(|t| (0..5_000).map(move |i| t * 1_000_000 + i))
            .collect();
        want.sort_unstable();
        assert_eq!(got, want);
        drop(writer);
    }

    /// With a linger, items sent a few milliseconds apart share one write; without, each
    /// is written when it comes. A flush does not wait for the linger.
    #[test]
    fn a_linger_groups_items_sent_apart_and_a_flush_cuts_it_short() {
        let sent_apart = |linger: Duration| {
            let dir = tempfile::tempdir().unwrap();
            let (sink, batches, path) = rows(&dir);
            let (writer, handle) = BatchWriter::spawn_lingering("test", sink, 100, linger).unwrap();
            for n in 0..10 {
                handle.send(n).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
            let asked = Instant::now();
            assert_eq!(handle.flush(), Ok(0));
            let flushed_in = asked.elapsed();
            assert_eq!(stored(&path), (0..10).collect::<Vec<_>>());
            drop(writer);
            let writes = batches.lock().unwrap().len();
            (writes, flushed_in)
        };
        let (writes, flushed_in) = sent_apart(Duration::from_secs(10));
        assert_eq!(writes, 1);
        assert!(flushed_in < Duration::from_secs(5), "{flushed_in:?}");
        let (writes, _) = sent_apart(Duration::ZERO);
        assert!(writes > 1, "{writes}");
    }

    /// The times the thread named `comm` (in this process) has been switched out waiting.
    fn waits_of(comm: &str) -> u64 {
        let tasks = std::fs::read_dir("/proc/self/task").unwrap();
        for t in tasks.flatten() {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if name.trim_end() != comm {
                continue;
            }
            let status = std::fs::read_to_string(t.path().join("status")).unwrap();
            let line = status
                .lines()
                .find(|l| l.starts_with("voluntary_ctxt_switches:"))
                .unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
        panic!("no thread {comm}");
    }

    /// Items sent while the writer lingers are queued without waking it: it wakes for the
    /// first item of a window and at the window's end (or for a flush), not per item.
    #[test]
    fn items_sent_while_lingering_do_not_wake_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, batches, path) = rows(&dir);
        // A name no other test's writer has: the thread is found by it.
        let (writer, handle) =
            BatchWriter::spawn_lingering("quiet", sink, 1_000, Duration::from_secs(30)).unwrap();
        handle.send(0).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let before = waits_of("quiet-writer");
        for n in 1..=50 {
            handle.send(n).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let woken = waits_of("quiet-writer") - before;
        assert!(woken <= 2, "woken {woken} times by 50 items");
        assert_eq!(handle.flush(), Ok(0));
        assert_eq!(stored(&path), (0..=50).collect::<Vec<_>>());
        assert_eq!(*batches.lock().unwrap(), [51], "one write for the window");
        drop(writer);
    }

    #[test]
    fn dropping_the_writer_writes_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let (sink, _, path) = rows(&dir);
        let (writer, handle) = BatchWriter::spawn("test", sink, 100).unwrap();
        for n in 0..3_000 {
            handle.send(n).unwrap();
        }
        drop(writer);
        assert_eq!(handle.flush(), Err(Stopped("test")));
        assert_eq!(handle.send(7), Err(7), "given back once stopped");
        assert_eq!(stored(&path).len(), 3_000);
    }
}
