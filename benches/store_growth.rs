//! Flat per-call store cost as the records grow (issue 22, `cargo bench --bench store_growth`):
//! runs the store work the record writer does for each answered call — the in-progress record
//! and legs at the answer (`records::in_progress::write_up`), then the final record in place of
//! them (`records::commit_finished`), each its own transaction as when the writer is not
//! behind, on a connection opened as the writer's (`Durability::Power`) — for
//! `GROWTH_CALLS` calls against an empty store and against one with `GROWTH_RECORDS` records
//! (default 1 000 000: a year of generated records, 10 extensions, PSTN/ENUM/internal/incoming
//! calls; built once with a bulk insert and kept under `target/store_growth/`).
//!
//! Prints per call, for each store, what the machine's load does not change: SQLite page-cache
//! misses, hits and pages written (`sqlite3_db_status`), bytes read and written through
//! syscalls and by the block layer and the read/write syscall counts (`/proc/self/io`), and,
//! for information only, CPU time (`getrusage`, noisy on a loaded machine). Instructions per
//! call: run one store at a time under callgrind, collecting only inside the measured loop:
//!
//! ```text
//! GROWTH_ONLY=full valgrind --tool=callgrind --collect-atstart=no \
//!   --toggle-collect='store_growth::measure*' target/release/deps/store_growth-<hash>
//! ```
//!
//! Env: `GROWTH_RECORDS`, `GROWTH_CALLS` (default 5 000), `GROWTH_ONLY` (`empty` or `full`),
//! `GROWTH_SHORT=1` (calls whose end reaches the writer with their answer: final record only),
//! `GROWTH_DIR` (default `target/store_growth`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use pasarela::cdr::{CallRecord, Direction, Disposition, Note, RouteKind};
use pasarela::store::connection::{open_writer, Durability};
use pasarela::store::records;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DAY: i64 = 86_400_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A record of the mix the dashboard bench uses: outgoing over a PSTN line or ENUM, incoming,
/// internal; most answered.
fn record(start_ms: i64, call_ref: u64, rng: &mut Rng) -> CallRecord {
    let ext = format!("{}", 100 + rng.below(10));
    let n = format!("+4930{:07}", rng.below(10_000_000));
    let answered = rng.below(100) < 65;
    let (direction, kind, target, caller, callee) = match rng.below(100) {
        0..=23 => (
            Direction::Outgoing,
            RouteKind::Sip,
            format!("sip:{}@enum.example.net", &n[1..]),
            ext.clone(),
            n.clone(),
        ),
        24..=59 => (
            Direction::Outgoing,
            RouteKind::Pstn,
            "carrier".to_owned(),
            ext.clone(),
            n.clone(),
        ),
        60..=84 => (
            Direction::Incoming,
            RouteKind::Extension,
            ext.clone(),
            n.clone(),
            ext.clone(),
        ),
        _ => (
            Direction::Internal,
            RouteKind::Extension,
            format!("{}", 100 + rng.below(10)),
            ext.clone(),
            "101".to_owned(),
        ),
    };
    let talk = if answered {
        1 + rng.below(600) as i64
    } else {
        0
    };
    CallRecord {
        id: None,
        call_ref: Some(call_ref),
        start_ms,
        answer_ms: answered.then_some(start_ms + 3_000),
        end_ms: start_ms + 3_000 + talk * 1000,
        duration_s: 3 + talk,
        billable_s: talk,
        caller,
        caller_e164: None,
        callee,
        callee_e164: Some(n),
        extension: Some(ext),
        direction,
        category: Some("national".into()),
        route_kind: kind,
        route_target: Some(target),
        route_source: Some("trunk".into()),
        disposition: if answered {
            Disposition::Answered
        } else {
            Disposition::NoAnswer
        },
        sip_status: if answered { 200 } else { 480 },
        q850_cause: if answered { 16 } else { 19 },
        codec: answered.then(|| "PCMA".to_owned()),
        media_srtp: [false; 2],
        packets: talk as u64 * 100,
        packets_lost: rng.below(20),
        jitter_ms: 1.5,
        cost_minor: answered.then_some(12),
        currency: answered.then(|| "EUR".to_owned()),
        rate_table: Some("carrier".into()),
        rate_prefix: Some("4930".into()),
        reference_cost_minor: None,
        savings_minor: None,
        explanation: "dialled: 030123456\nnumber: +4930123456\ncategory: national\n\
                      decision 1: trunk carrier via udp:192.0.2.7:5060\nattempt 1: carrier -> 200"
            .into(),
        linked_id: None,
        transferred_by: None,
    }
}

/// The store with `n` records, built once (a year of records up to now, bulk inserted).
fn full_store(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join(format!("records-{n}.db"));
    if path.exists() {
        return path;
    }
    let building = dir.join(format!("records-{n}.building.db"));
    let _ = std::fs::remove_file(&building);
    drop(pasarela::cdr::CdrDb::open(&building).expect("migrate"));
    let mut conn = open_writer(&building, Durability::Process).expect("open");
    conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;")
        .expect("bulk pragmas");
    let t = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = now_ms() - 365 * DAY;
    let step = 365 * DAY / n.max(1) as i64;
    let mut i = 0u64;
    while i < n {
        let k = (n - i).min(20_000);
        let mut batch: Vec<CallRecord> = (i..i + k)
            .map(|j| record(start + j as i64 * step, j + 1, &mut rng))
            .collect();
        records::insert(&mut conn, &mut batch).expect("bulk insert");
        i += k;
    }
    conn.execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("optimize");
    drop(conn);
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", building.display()));
    }
    std::fs::rename(&building, &path).expect("rename");
    println!(
        "built {} with {n} records in {:.0} s ({} MB)",
        path.display(),
        t.elapsed().as_secs_f64(),
        std::fs::metadata(&path).map_or(0, |m| m.len() / 1_000_000)
    );
    path
}

/// `/proc/self/io` fields.
fn proc_io() -> [u64; 6] {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    [
        field("rchar:"),
        field("wchar:"),
        field("syscr:"),
        field("syscw:"),
        field("read_bytes:"),
        field("write_bytes:"),
    ]
}

fn cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Page-cache counters of `conn` since the last reset: misses, hits, pages written.
fn cache_stats(conn: &rusqlite::Connection) -> [i64; 3] {
    use rusqlite::ffi;
    let mut out = [0i64; 3];
    for (slot, op) in out.iter_mut().zip([
        ffi::SQLITE_DBSTATUS_CACHE_MISS,
        ffi::SQLITE_DBSTATUS_CACHE_HIT,
        ffi::SQLITE_DBSTATUS_CACHE_WRITE,
    ]) {
        let (mut cur, mut hi) = (0i32, 0i32);
        // SAFETY: the handle is a live connection owned by `conn`; the out-pointers are ours.
        unsafe { ffi::sqlite3_db_status(conn.handle(), op, &mut cur, &mut hi, 0) };
        *slot = i64::from(cur);
    }
    out
}

const LEGS: &str = r#"[{"call_id":"a84b4c76e66710@pc33.office.test","local":"<sip:101@office.test>;tag=b2-1","remote":"\"Ann\" <sip:100@office.test>;tag=a1","local_cseq":1,"remote_target":"sip:100@127.0.0.1:5062;transport=udp","route_set":[],"transport":"udp","remote_addr":"127.0.0.1:5062","local_addr":"127.0.0.1:5060"},{"call_id":"b2-call-1@127.0.0.1","local":"<sip:100@office.test>;tag=b2-2","remote":"<sip:101@office.test>;tag=u1","local_cseq":1,"remote_target":"sip:101@127.0.0.1:5064","route_set":[],"transport":"udp","remote_addr":"127.0.0.1:5064","local_addr":"127.0.0.1:5060"}]"#;

/// The per-call store work for `calls` answered calls (toggled on by callgrind): with `up`, a
/// call up long enough for its in-progress record to be written before its end; without, a
/// call whose end reaches the writer in the same batch as its answer (the writer then writes
/// its final record only).
#[inline(never)]
fn measure_calls(conn: &mut rusqlite::Connection, calls: u64, rng: &mut Rng, up: bool) {
    let run = format!("{:016x}", rng.below(u64::MAX));
    for i in 0..calls {
        let start = now_ms();
        let key = format!("{run}-{i}");
        let rec = record(start, 10_000_000 + i, rng);
        if up {
            records::in_progress::write_up(conn, &key, &rec, LEGS, start).expect("write_up");
        }
        let note = Note {
            key: Some(key),
            reason: None,
            signalling: Some("udp/udp".into()),
        };
        records::commit_finished(
            conn,
            std::slice::from_ref(&rec),
            std::slice::from_ref(&note),
        )
        .expect("commit_finished");
    }
}

struct Figures {
    miss: f64,
    hit: f64,
    write: f64,
    io: [f64; 6],
    cpu_us: f64,
}

fn run(path: &Path, calls: u64, up: bool) -> Figures {
    let mut conn = open_writer(path, Durability::Power).expect("writer");
    let mut rng = Rng(now_ms() as u64 | 1);
    // Warm up the connection (its page cache, its statements) as a running writer is.
    measure_calls(&mut conn, 200, &mut rng, up);
    let c0 = cache_stats(&conn);
    let io0 = proc_io();
    let cpu0 = cpu_s();
    measure_calls(&mut conn, calls, &mut rng, up);
    let cpu = cpu_s() - cpu0;
    let io1 = proc_io();
    let c1 = cache_stats(&conn);
    let per = |a: i64, b: i64| (b - a) as f64 / calls as f64;
    let mut io = [0f64; 6];
    for k in 0..6 {
        io[k] = io1[k].saturating_sub(io0[k]) as f64 / calls as f64;
    }
    Figures {
        miss: per(c0[0], c1[0]),
        hit: per(c0[1], c1[1]),
        write: per(c0[2], c1[2]),
        io,
        cpu_us: cpu * 1e6 / calls as f64,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = env("GROWTH_RECORDS", 1_000_000);
    let calls = env("GROWTH_CALLS", 5_000);
    let only = std::env::var("GROWTH_ONLY").unwrap_or_default();
    // `GROWTH_SHORT=1`: calls whose in-progress record is superseded in the writer's batch.
    let up = env("GROWTH_SHORT", 0) == 0;
    let dir = std::env::var("GROWTH_DIR").map_or_else(
        |_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/store_growth"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).expect("dir");
    let mut rows = Vec::new();
    if only.is_empty() || only == "empty" {
        let tmp = tempfile::tempdir_in(&dir).expect("tmp");
        let path = tmp.path().join("empty.db");
        drop(pasarela::cdr::CdrDb::open(&path).expect("migrate"));
        rows.push(("empty".to_owned(), run(&path, calls, up)));
    }
    if only.is_empty() || only == "full" {
        let path = full_store(&dir, n);
        rows.push((format!("{n} records"), run(&path, calls, up)));
    }
    if up {
        println!(
            "per answered call ({calls} calls; in-progress record + final record, 2 commits):"
        );
    } else {
        println!("per short answered call ({calls} calls; final record only, 1 commit):");
    }
    println!(
        "| store | cache misses | cache hits | pages written | read B (syscalls) | written B (syscalls) | reads | writes | disk read B | disk written B | CPU µs (noisy) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, f) in &rows {
        println!(
            "| {name} | {:.2} | {:.1} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
            f.miss, f.hit, f.write, f.io[0], f.io[1], f.io[2], f.io[3], f.io[4], f.io[5], f.cpu_us
        );
    }
}
