//! The call record writer: a background thread that rates finished calls and commits their
//! records in batches.
//!
//! The SIP loop hands each record to a [`CdrWriterHandle`], whose
//! [`send`](CdrWriterHandle::send) only pushes onto an unbounded channel: it never blocks and
//! never touches the disk. The thread owns its own connection (WAL, `synchronous=FULL`).
//!
//! **When a record is durable.** The thread sleeps on the channel and wakes for the first
//! item; it then waits [`LINGER`] (20 ms) for more, takes everything queued by then (at most
//! [`MAX_BATCH`] records), rates the records, and commits the lot — finished calls' records,
//! answered calls' in-progress rows, the heartbeat, in the order sent — in one transaction
//! (group commit: at a steady rate every call of the window shares one commit, where without
//! the wait each call cost one commit, or two when answered; issue 22). So a record sent while
//! the writer is idle is committed within about 20 ms plus the time of one small transaction
//! and its fsync, and a record sent during a burst waits only for the batches queued before it
//! (a full batch of 1 000 records, rating included, commits in about 25 ms on a busy 2-core
//! machine: `cargo bench --bench cdr` writes 1 000 000 records at ~40 000/s). A
//! [`flush`](CdrWriterHandle::flush) does not wait for the linger. Once committed a record
//! survives kill -9 of the process and, with `synchronous=FULL`, a power loss. The promise,
//! tested by killing a child process: **committed within 200 ms of `send`** while fewer than
//! ~5 000 records are queued ahead of it (thousands of calls ending in the same instant).
//!
//! **Calls in progress.** An answered call's in-progress record and legs are written in the
//! next commit; when the call's final record is already queued behind them (a call shorter
//! than the linger, or a writer behind), they are not written at all, since the final record
//! would delete them in the same instant ([`CdrWriterStats::superseded`]).
//!
//! **Rating.** A record whose `cost_minor` is `None` is rated before it is written, with the
//! rate tables as they are at that moment: the thread reloads them whenever the database's
//! rating version changes (any edit of a table, line assignment or rate, from any
//! connection). Records that already carry a cost are written as they are.
//!
//! **Failures** are logged with the full record (so that nothing accepted is lost without a
//! trace), counted, and reported by [`flush`](CdrWriterHandle::flush); never panicked on. A
//! batch that fails is retried item by item, so one bad record does not take its batch with
//! it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::sip::dialog::Dialog;
use crate::store::batch::{BatchHandle, BatchWriter, Sink, Stopped};
use crate::store::connection::Durability;
use crate::store::{records, StoreError};

use super::in_progress::legs_json;
use super::rating::RateBook;
use super::record::CallRecord;
use super::{CdrDb, CdrError};

/// Upper bound on records committed in one transaction, so that a backlog commits in steps
/// and the records at its front are durable early.
pub const MAX_BATCH: usize = 1_000;

/// How long the writer waits after the first item of a batch for more, so that the calls of
/// that window share one commit (and a call ending within it writes no in-progress rows).
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

/// What the writer is sent, in order.
///
/// The records are boxed: the channel stores its items in blocks of 31, and with the record
/// inline (about 600 B) a block is 18.6 KB, an allocation of the allocator's medium size
/// classes (512 KiB pages). The block in use when a flood of calls ends stays until 31 more
/// items come, and kept a whole medium page of the flood's freed memory resident on an idle
/// box (460 KiB, mimalloc's heap report). Boxed, an item is under 100 B and a block fits a
/// small page; the price is one allocation per record, a few tens of nanoseconds per call.
enum Item {
    /// A record with why it ended and the in-progress record it replaces (often none).
    Record(Box<CallRecord>, Note),
    /// An answered call: its record so far (marked in progress) and the dialogs of its legs
    /// (turned into their stored text here, on the writer's thread, and only if written).
    Up {
        key: String,
        record: Box<CallRecord>,
        legs: Vec<Dialog>,
        seen_ms: i64,
    },
    /// Every call in progress was up at `seen_ms`; some legs changed.
    Heartbeat {
        seen_ms: i64,
        changed: Vec<(String, Vec<Dialog>)>,
    },
}

/// Shown every record once rated, on the writer thread.
pub type Observer = Box<dyn FnMut(&CallRecord) + Send>;

/// What comes with a record besides its columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Note {
    /// The key of the in-progress record this one replaces ([`super::in_progress`]).
    pub key: Option<String>,
    /// Why the call ended, when not normally (`end_reason`).
    pub reason: Option<String>,
    /// The transports of the caller's and the called leg, `tls/udp` (`signalling`).
    pub signalling: Option<String>,
}

/// Counters shared between the writer thread and its owner.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CdrWriterStats {
    /// Transactions committed.
    pub batches: u64,
    /// Records written.
    pub records: u64,
    /// Records written without a cost because no rate applied.
    pub unrated: u64,
    /// Records that could not be written (logged).
    pub failed: u64,
    /// Times the rate tables were (re)loaded.
    pub rate_loads: u64,
    /// In-progress records not written because the call's final record came in the same
    /// batch (a short call, or a writer behind: see `superseded`).
    pub superseded: u64,
}

/// Sends records to the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CdrWriterHandle {
    inner: BatchHandle<Item>,
}

/// Owns the writer thread; dropping it (or calling [`shutdown`](Self::shutdown)) writes what is
/// queued and joins the thread.
#[derive(Debug)]
pub struct CdrWriter {
    inner: BatchWriter<Item>,
    stats: Arc<Mutex<CdrWriterStats>>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Record(r, _) => f.debug_tuple("Record").field(&r.call_ref).finish(),
            Item::Up { key, .. } => f.debug_tuple("Up").field(key).finish(),
            Item::Heartbeat { changed, .. } => {
                f.debug_tuple("Heartbeat").field(&changed.len()).finish()
            }
        }
    }
}

fn lock(stats: &Mutex<CdrWriterStats>) -> std::sync::MutexGuard<'_, CdrWriterStats> {
    match stats.lock() {
        Ok(s) => s,
        Err(poisoned) => poisoned.into_inner(),
    }
}

fn failures(flushed: Result<usize, Stopped>) -> Result<(), CdrError> {
    match flushed {
        Ok(0) => Ok(()),
        Ok(failed) => Err(CdrError::WriteFailed { failed }),
        Err(_) => Err(CdrError::WriterStopped),
    }
}

impl CdrWriter {
    /// Opens the database at `path` (migrating it if needed) with `synchronous=FULL` and
    /// starts the writer thread.
    pub fn spawn(path: &Path) -> Result<(CdrWriter, CdrWriterHandle), CdrError> {
        CdrWriter::spawn_with(CdrDb::open_with(path, Durability::Power)?)
    }

    /// Starts the writer thread on an open database.
    pub fn spawn_with(db: CdrDb) -> Result<(CdrWriter, CdrWriterHandle), CdrError> {
        CdrWriter::spawn_inner(db, None)
    }

    /// [`CdrWriter::spawn`], with `observer` shown every record once it is rated (the
    /// toll-fraud limits count minutes and cost with it).
    pub fn spawn_observed(
        path: &Path,
        observer: Observer,
    ) -> Result<(CdrWriter, CdrWriterHandle), CdrError> {
        CdrWriter::spawn_inner(CdrDb::open_with(path, Durability::Power)?, Some(observer))
    }

    fn spawn_inner(
        db: CdrDb,
        observer: Option<Observer>,
    ) -> Result<(CdrWriter, CdrWriterHandle), CdrError> {
        let stats = Arc::new(Mutex::new(CdrWriterStats::default()));
        let worker = Worker {
            db,
            observer,
            book: RateBook::default(),
            version: None,
            stats: Arc::clone(&stats),
        };
        let (inner, handle) = BatchWriter::spawn_lingering("cdr", worker, MAX_BATCH, LINGER)?;
        Ok((
            CdrWriter { inner, stats },
            CdrWriterHandle { inner: handle },
        ))
    }

    /// Another handle for sending records.
    pub fn handle(&self) -> CdrWriterHandle {
        CdrWriterHandle {
            inner: self.inner.handle(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> CdrWriterStats {
        *lock(&self.stats)
    }

    /// Writes everything queued, stops the thread and waits for it. Reports records that
    /// failed since the last flush.
    pub fn shutdown(self) -> Result<(), CdrError> {
        failures(self.inner.shutdown())
    }
}

impl CdrWriterHandle {
    /// Queues a record. Never blocks and never touches the disk; if the writer has stopped the
    /// record is logged in full and dropped.
    pub fn send(&self, record: CallRecord) {
        self.send_noted(record, Note::default());
    }

    /// Queues a record with why it ended and the in-progress record it replaces.
    pub fn send_noted(&self, record: CallRecord, note: Note) {
        if let Err(Item::Record(r, n)) = self.inner.send(Item::Record(Box::new(record), note)) {
            tracing::error!(record = ?r, note = ?n, "call record writer has stopped; record not written");
        }
    }

    /// Queues the in-progress record of an answered call and the dialog state of its legs
    /// ([`super::in_progress`]).
    pub fn call_up(&self, key: String, record: CallRecord, legs: Vec<Dialog>, seen_ms: i64) {
        let _ = self.inner.send(Item::Up {
            key,
            record: Box::new(record),
            legs,
            seen_ms,
        });
    }

    /// Queues the heartbeat of the calls in progress, with the legs that changed.
    pub fn heartbeat(&self, seen_ms: i64, changed: Vec<(String, Vec<Dialog>)>) {
        let _ = self.inner.send(Item::Heartbeat { seen_ms, changed });
    }

    /// Blocks until every record sent before this call is committed. Fails if the writer has
    /// stopped, or if records failed since the previous flush.
    pub fn flush(&self) -> Result<(), CdrError> {
        failures(self.inner.flush())
    }
}

/// The writer thread's state.
struct Worker {
    db: CdrDb,
    observer: Option<Observer>,
    book: RateBook,
    /// The rating version `book` was loaded at (`None`: not loaded).
    version: Option<i64>,
    stats: Arc<Mutex<CdrWriterStats>>,
}

impl Worker {
    /// Reloads the rate tables if they changed since they were loaded.
    fn refresh_rates(&mut self) {
        let version = match self.db.rating_version() {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the rating version; rates not reloaded");
                return;
            }
        };
        if self.version == Some(version) {
            return;
        }
        match self.db.load_rate_book() {
            Ok(book) => {
                tracing::debug!(tables = book.tables().len(), "rate tables loaded");
                self.book = book;
                self.version = Some(version);
                lock(&self.stats).rate_loads += 1;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot load the rate tables; keeping the old ones")
            }
        }
    }

    /// Rates the records of `items` that carry no cost (with the rate tables as they are now)
    /// and shows each record to the observer.
    fn rate(&mut self, items: &mut [Item]) {
        let mut records = items.iter_mut().filter_map(|i| match i {
            Item::Record(r, _) => Some(r),
            _ => None,
        });
        let Some(first) = records.next() else {
            return;
        };
        if first.cost_minor.is_none() || records.any(|r| r.cost_minor.is_none()) {
            self.refresh_rates();
        }
        let mut unrated = 0u64;
        for item in items.iter_mut() {
            let Item::Record(r, _) = item else { continue };
            if r.cost_minor.is_none() {
                let rating = self.book.rate(&r.rating_input());
                r.apply_rating(rating);
                if r.cost_minor.is_none() {
                    unrated += 1;
                    tracing::warn!(
                        callee = r.callee_e164.as_deref().unwrap_or(&r.callee),
                        line = r.route_target.as_deref().unwrap_or(""),
                        table = r.rate_table.as_deref().unwrap_or(""),
                        "no rate for a call; its record has no cost"
                    );
                }
            }
            if let Some(observe) = self.observer.as_mut() {
                observe(r);
            }
        }
        if unrated > 0 {
            lock(&self.stats).unrated += unrated;
        }
    }

    /// Writes `items` in order in one transaction.
    fn commit(&mut self, items: &[Item]) -> Result<(), StoreError> {
        let tx = records::WriterTx::begin(&mut self.db.conn)?;
        for item in items {
            match item {
                Item::Record(r, n) => tx.finished(r, n)?,
                Item::Up {
                    key,
                    record,
                    legs,
                    seen_ms,
                } => tx.up(key, record, &legs_json(legs), *seen_ms)?,
                Item::Heartbeat { seen_ms, changed } => {
                    let changed: Vec<(String, String)> = changed
                        .iter()
                        .map(|(key, legs)| (key.clone(), legs_json(legs)))
                        .collect();
                    tx.heartbeat(*seen_ms, &changed)?
                }
            }
        }
        tx.commit()
    }

    /// Rates and commits `items` in one transaction; if that fails, item by item, so that one
    /// bad record does not take the others with it. Returns how many records could not be
    /// written (a failed in-progress record or heartbeat is logged, not counted: the final
    /// record still comes).
    fn write_items(&mut self, items: &mut [Item]) -> usize {
        self.rate(items);
        let records = items
            .iter()
            .filter(|i| matches!(i, Item::Record(..)))
            .count();
        let (mut written, mut batches, mut failed) = (records, 1u64, 0usize);
        if let Err(e) = self.commit(items) {
            tracing::warn!(error = %e, items = items.len(), "batch of call records failed; retrying one by one");
            (written, batches) = (0, 0);
            for item in items.iter() {
                match self.commit(std::slice::from_ref(item)) {
                    Ok(()) => {
                        batches += 1;
                        if let Item::Record(..) = item {
                            written += 1;
                        }
                    }
                    Err(e) => match item {
                        Item::Record(r, n) => {
                            failed += 1;
                            tracing::error!(record = ?r, note = ?n, error = %e, "call record could not be written");
                        }
                        state => {
                            tracing::error!(msg = ?state, error = %e, "state of calls in progress not written")
                        }
                    },
                }
            }
        }
        let mut s = lock(&self.stats);
        s.batches += batches;
        s.records += written as u64;
        s.failed += failed as u64;
        failed
    }
}

/// Which items of a batch are answered calls whose final record follows in the same batch:
/// their in-progress record and legs would be inserted and deleted again within one writer
/// wake-up, so they are not written at all. The in-progress record is there for a crash while
/// the call is up; once its end is queued the final record takes its place. Without this every
/// short call, and every call whose end arrives while the writer is behind, cost three row
/// writes in `call_records` (insert, delete, insert: each through every index, whose depth
/// grows with the store) instead of one (issue 22).
fn superseded(items: &[Item]) -> Vec<bool> {
    let mut ending: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut skip = vec![false; items.len()];
    for (i, item) in items.iter().enumerate().rev() {
        match item {
            Item::Record(_, note) => {
                if let Some(key) = note.key.as_deref() {
                    ending.insert(key);
                }
            }
            Item::Up { key, .. } => skip[i] = ending.contains(key.as_str()),
            Item::Heartbeat { .. } => {}
        }
    }
    skip
}

impl Sink for Worker {
    type Item = Item;

    /// Rates the records and commits the batch in one transaction, an answered call's state
    /// and the heartbeat in order with the records (an in-progress record before its final
    /// one), unless the call's final record is in the same batch ([`superseded`]).
    fn write(&mut self, items: &mut Vec<Item>) -> usize {
        let skip = superseded(items);
        let skipped = skip.iter().filter(|s| **s).count() as u64;
        if skipped > 0 {
            lock(&self.stats).superseded += skipped;
            let mut skip = skip.into_iter();
            items.retain(|_| !skip.next().unwrap_or(false));
        }
        if items.is_empty() {
            return 0;
        }
        let failed = self.write_items(items);
        items.clear();
        failed
    }

    /// After a burst of calls the connection's page cache is full (2 MB, on the heap of the
    /// thread's C allocator); idle, it is given back (the housekeeping's trim returns it to the
    /// system), so the process goes back to its idle size after a flood.
    fn idle(&mut self) {
        crate::store::connection::release_memory(&self.db.conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::rating::{Price, Rate};
    use crate::cdr::record::tests::sample;
    use std::time::{Duration, Instant};

    fn count(path: &Path) -> u64 {
        CdrDb::open(path)
            .unwrap()
            .count(&crate::cdr::Filter::default())
            .unwrap()
    }

    #[test]
    fn batches_many_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (writer, handle) = CdrWriter::spawn(&path).unwrap();
        for i in 0..5_000 {
            handle.send(sample(i));
        }
        handle.flush().unwrap();
        let stats = writer.stats();
        assert_eq!(stats.records, 5_000);
        assert!(stats.batches < 1_000, "{stats:?}");
        assert_eq!(stats.failed, 0);
        assert_eq!(count(&path), 5_000);
        writer.shutdown().unwrap();
    }

    #[test]
    fn committed_promptly_without_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (writer, handle) = CdrWriter::spawn(&path).unwrap();
        let reader = CdrDb::open(&path).unwrap();
        let sent = Instant::now();
        handle.send(sample(1));
        loop {
            let n = reader.count(&crate::cdr::Filter::default()).unwrap();
            if n == 1 {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_millis(200),
                "not committed within 200 ms"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(writer);
    }

    #[test]
    fn rates_records_and_follows_rate_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let mut admin = CdrDb::open(&path).unwrap();
        admin.create_rate_table("carrier", "EUR", false).unwrap();
        admin.set_rate_table_lines("carrier", &["carrier"]).unwrap();
        let mut rate = Rate {
            prefix: "49".into(),
            description: String::new(),
            per_minute: Price::parse("0.02", false).unwrap(),
            connect_fee: Price::default(),
            first_s: 60,
            next_s: 60,
        };
        admin.put_rate("carrier", &rate).unwrap();
        let (writer, handle) = CdrWriter::spawn(&path).unwrap();
        handle.send(sample(1));
        let mut pre_rated = sample(2);
        pre_rated.cost_minor = Some(999);
        handle.send(pre_rated);
        let mut abroad = sample(3);
        abroad.callee_e164 = Some("+331234567".into());
        handle.send(abroad);
        handle.flush().unwrap();
        // The dashboard changes the price on its own connection.
        rate.per_minute = Price::parse("0.07", false).unwrap();
        admin.put_rate("carrier", &rate).unwrap();
        handle.send(sample(4));
        handle.flush().unwrap();
        let stats = writer.stats();
        assert_eq!(stats.unrated, 1);
        assert_eq!(stats.rate_loads, 2);
        writer.shutdown().unwrap();
        let costs: Vec<Option<i64>> = (1..=4)
            .map(|id| admin.record(id).unwrap().unwrap().cost_minor)
            .collect();
        assert_eq!(costs, vec![Some(2), Some(999), None, Some(7)]);
        let r = admin.record(1).unwrap().unwrap();
        assert_eq!(r.rate_table.as_deref(), Some("carrier"));
        assert_eq!(r.rate_prefix.as_deref(), Some("49"));
        assert_eq!(r.currency.as_deref(), Some("EUR"));
    }

    #[test]
    fn a_bad_record_does_not_take_its_batch_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let db = CdrDb::open(&path).unwrap();
        db.conn
            .execute_batch(
                "CREATE TRIGGER no_evil BEFORE INSERT ON call_records WHEN NEW.caller = 'evil'
                 BEGIN SELECT RAISE(ABORT, 'no'); END;",
            )
            .unwrap();
        let (writer, handle) = CdrWriter::spawn_with(db).unwrap();
        let mut evil = sample(2);
        evil.caller = "evil".into();
        handle.send(sample(1));
        handle.send(evil);
        handle.send(sample(3));
        assert!(matches!(
            handle.flush(),
            Err(CdrError::WriteFailed { failed: 1 })
        ));
        handle.send(sample(4));
        handle.flush().unwrap();
        let stats = writer.stats();
        assert_eq!((stats.records, stats.failed), (3, 1));
        writer.shutdown().unwrap();
        assert_eq!(count(&path), 3);
    }

    fn up(key: &str) -> Item {
        Item::Up {
            key: key.into(),
            record: Box::new(sample(1)),
            legs: Vec::new(),
            seen_ms: 1,
        }
    }

    fn ended(key: Option<&str>) -> Item {
        Item::Record(
            Box::new(sample(1)),
            Note {
                key: key.map(str::to_owned),
                ..Default::default()
            },
        )
    }

    #[test]
    fn an_item_keeps_the_channel_blocks_in_the_small_size_classes() {
        // The channel allocates blocks of 31 items; above ~10 KiB they come from 512 KiB
        // pages, one of which the last block of a flood keeps resident (see `Item`).
        let block = 31 * std::mem::size_of::<Item>();
        assert!(block <= 4096, "a channel block of {block} B");
    }

    #[test]
    fn an_in_progress_record_ended_in_the_same_batch_is_not_written() {
        let items = vec![
            up("a"),
            up("b"),
            ended(None),
            Item::Heartbeat {
                seen_ms: 2,
                changed: vec![],
            },
            ended(Some("a")),
            up("c"),
            // A record naming a key before that key's answer does not hide the answer.
            ended(Some("d")),
            up("d"),
        ];
        assert_eq!(
            superseded(&items),
            vec![true, false, false, false, false, false, false, false]
        );

        // Through the writer: whether or not the two land in one batch, what is left is the
        // final record and no call in progress.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (writer, handle) = CdrWriter::spawn(&path).unwrap();
        for i in 0..200 {
            let key = format!("k{i}");
            handle.call_up(key.clone(), sample(i), Vec::new(), i);
            handle.send_noted(
                sample(i),
                Note {
                    key: Some(key),
                    ..Default::default()
                },
            );
        }
        handle.call_up("up".into(), sample(7), Vec::new(), 7);
        handle.flush().unwrap();
        let db = CdrDb::open(&path).unwrap();
        let left = crate::store::records::in_progress::left_up(&db.conn).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].key, "up");
        assert_eq!(count(&path), 201);
        let legs: i64 = db
            .conn
            .query_row("SELECT count(*) FROM call_legs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(legs, 1);
        let stats = writer.stats();
        assert_eq!(stats.records, 200);
        assert!(stats.superseded <= 200, "{stats:?}");
        writer.shutdown().unwrap();
    }

    /// Group commit: calls sent a few milliseconds apart share one transaction, and a call
    /// answered and ended within the linger writes no in-progress rows.
    #[test]
    fn calls_within_the_linger_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (writer, handle) = CdrWriter::spawn(&path).unwrap();
        handle.call_up("k".into(), sample(1), Vec::new(), 1);
        for i in 0..5 {
            std::thread::sleep(Duration::from_millis(1));
            handle.send(sample(i));
        }
        handle.send_noted(
            sample(9),
            Note {
                key: Some("k".into()),
                ..Default::default()
            },
        );
        // No flush: the writer commits by itself once the linger is over.
        let deadline = Instant::now() + Duration::from_secs(5);
        while writer.stats().records < 6 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let stats = writer.stats();
        assert_eq!(stats.records, 6, "{stats:?}");
        // One commit; two if the machine stalled the sender past the linger.
        assert!(stats.batches <= 2, "{stats:?}");
        assert!(stats.batches < 2 || stats.superseded == 0, "{stats:?}");
        if stats.batches == 1 {
            assert_eq!(stats.superseded, 1, "{stats:?}");
        }
        writer.shutdown().unwrap();
        assert_eq!(count(&path), 6);
    }

    #[test]
    fn drop_writes_what_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (writer, handle) = CdrWriter::spawn(&path).unwrap();
        for i in 0..300 {
            handle.send(sample(i));
        }
        drop(writer);
        assert!(matches!(handle.flush(), Err(CdrError::WriterStopped)));
        handle.send(sample(1)); // logged and dropped, no panic
        assert_eq!(count(&path), 300);
    }
}
