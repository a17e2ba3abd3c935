//! Call records at scale (`cargo bench --bench cdr`): generates 1 000 000 records spread over the
//! year up to today (10 extensions; outgoing over ENUM or two PSTN lines, incoming, internal; five
//! dispositions), writes them through the record writer (which rates them), then measures the
//! dashboard's reads on the resulting database file.
//!
//! Prints:
//! - the insert rate through the writer (records/s, rating included) and the file size;
//! - a filtered records page — extension + month + disposition, page 50 of 100 rows — p50/p95/max
//!   (target p95 < 100 ms), with and without the count the pager needs; and, for comparison,
//!   the newest page unfiltered and a number search within a month;
//! - the overview — today's and this month's totals, 30 daily totals, totals by route — p95
//!   (target < 100 ms);
//! - the CSV export of all rows: time (target < 10 s), size, and the process's peak RSS during
//!   the export (VmHWM, reset before it through /proc/self/clear_refs) against the RSS before it;
//! - the same through the dashboard over HTTP (a real `WebServer` on loopback, logged in through
//!   the first-run page): a filtered records page and the overview, p50/p95 (target p95 <
//!   100 ms), the monthly billing page, and `/records.csv` of all rows read as a stream (target
//!   < 10 s) with the process's peak RSS.
//!
//! Env: CDR_BENCH_RECORDS (default 1000000), CDR_BENCH_ITERS (default 200), CDR_BENCH_DIR (where
//! the temporary database goes; default the system temp dir), CDR_BENCH_KEEP=1 (keep it and
//! print its path, to study query plans with the sqlite3 shell).

use std::time::{Duration, Instant};

use pasarela::cdr::rating::{ImportMode, Price, Rate};
use pasarela::cdr::{
    CallRecord, CdrDb, CdrWriter, Direction, Disposition, Filter, Page, RouteKind, Sort,
};
use pasarela::web::OfficeTime;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DAY: i64 = 86_400_000;

/// The end of the records' year: the coming UTC midnight, so that "today" and "this month" on
/// the dashboard (which uses the real clock) hold records.
fn end() -> i64 {
    static END: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *END.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (now / DAY + 1) * DAY
    })
}
const EXTENSIONS: u64 = 10;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn number(rng: &mut Rng) -> String {
    let area = [
        "30", "40", "89", "221", "151", "160", "171", "33 1", "44 20",
    ];
    let a = area[rng.below(area.len() as u64) as usize].replace(' ', "");
    format!("+49{a}{:07}", rng.below(10_000_000))
        .replace("+4933", "+33")
        .replace("+4944", "+44")
}

fn generate(i: u64, rng: &mut Rng) -> CallRecord {
    let start_ms =
        end() - 365 * DAY + (i as i64 * 365 * DAY / env("CDR_BENCH_RECORDS", 1_000_000) as i64);
    let ext = format!("{}", 100 + rng.below(EXTENSIONS));
    let ring_ms = 2_000 + rng.below(18_000) as i64;
    let disposition = match rng.below(100) {
        0..=64 => Disposition::Answered,
        65..=79 => Disposition::NoAnswer,
        80..=89 => Disposition::Busy,
        90..=96 => Disposition::Failed,
        _ => Disposition::Cancelled,
    };
    let status: u16 = match disposition {
        Disposition::Answered => 200,
        Disposition::NoAnswer => 480,
        Disposition::Busy => 486,
        Disposition::Failed => 503,
        Disposition::Cancelled => 487,
    };
    let talk_ms = if disposition == Disposition::Answered {
        1_000 + rng.below(600_000) as i64
    } else {
        0
    };
    let answer_ms = (disposition == Disposition::Answered).then_some(start_ms + ring_ms);
    let end_ms = start_ms + ring_ms + talk_ms;
    let (direction, caller, callee, callee_e164, kind, target, source, extension) =
        match rng.below(100) {
            0..=59 => {
                let n = number(rng);
                let national = format!("0{}", &n[3..]);
                let (kind, target, source) = match rng.below(10) {
                    0..=3 => (
                        RouteKind::Sip,
                        format!("sip:{}@enum.example.net", &n[1..]),
                        "ENUM e164.arpa",
                    ),
                    4..=8 => (RouteKind::Pstn, "carrier".to_owned(), "trunk"),
                    _ => (RouteKind::Pstn, "gsm1".to_owned(), "trunk"),
                };
                (
                    Direction::Outgoing,
                    ext.clone(),
                    national,
                    Some(n),
                    kind,
                    target,
                    Some(source),
                    Some(ext),
                )
            }
            60..=84 => (
                Direction::Incoming,
                number(rng),
                format!("+4930555{ext}"),
                Some(format!("+4930555{ext}")),
                RouteKind::Extension,
                ext.clone(),
                None,
                Some(ext),
            ),
            _ => {
                let other = format!("{}", 100 + rng.below(EXTENSIONS));
                (
                    Direction::Internal,
                    ext.clone(),
                    other.clone(),
                    None,
                    RouteKind::Extension,
                    other,
                    None,
                    Some(ext),
                )
            }
        };
    let explanation = format!(
        "dialled: {callee}\nnumber: {}\ncategory: national\n     0.012 ms  numbering: {callee:?} is {}\n     \
         1.204 ms  ENUM: 1 target(s) in 1.2 ms\n     1.900 ms  decision 1: {source:?} {target} via udp:192.0.2.7:5060\n\
         decided in 2.001 ms\nattempt 1 (stage 1, {source:?}): {target} -> {status}",
        callee_e164.as_deref().unwrap_or("-"),
        callee_e164.as_deref().unwrap_or("-"),
    );
    CallRecord {
        id: None,
        call_ref: Some(i),
        start_ms,
        answer_ms,
        end_ms,
        duration_s: (end_ms - start_ms + 999) / 1000,
        billable_s: (talk_ms + 999) / 1000,
        caller,
        caller_e164: None,
        callee,
        callee_e164,
        extension,
        direction,
        category: Some(
            if kind == RouteKind::Extension {
                "internal"
            } else {
                "national"
            }
            .into(),
        ),
        route_kind: kind,
        route_target: Some(target),
        route_source: source.map(str::to_owned),
        disposition,
        sip_status: status,
        q850_cause: pasarela::cdr::record::q850_cause(status),
        codec: answer_ms.map(|_| "PCMA".to_owned()),
        media_srtp: [false; 2],
        packets: (talk_ms / 20) as u64 * 2,
        packets_lost: rng.below(20),
        jitter_ms: rng.below(5000) as f64 / 1000.0,
        cost_minor: None,
        currency: None,
        rate_table: None,
        rate_prefix: None,
        reference_cost_minor: None,
        savings_minor: None,
        explanation,
        linked_id: None,
        transferred_by: None,
    }
}

fn rate(prefix: &str, per_minute: &str, first: u32, next: u32) -> Rate {
    Rate {
        prefix: prefix.into(),
        description: String::new(),
        per_minute: Price::parse(per_minute, false).expect("price"),
        connect_fee: Price::default(),
        first_s: first,
        next_s: next,
    }
}

fn setup_rates(db: &mut CdrDb) {
    db.create_rate_table("carrier", "EUR", false)
        .expect("table");
    db.create_rate_table("gsm", "EUR", false).expect("table");
    db.create_rate_table("reference", "EUR", true)
        .expect("table");
    db.set_rate_table_lines("carrier", &["carrier"])
        .expect("lines");
    db.set_rate_table_lines("gsm", &["gsm1"]).expect("lines");
    let mut csv = String::from("prefix,per_minute,first_increment,next_increment\n");
    // A realistic table size: a rate per country code and a few national ranges.
    for cc in (1..1000).filter(|&cc| cc != 49) {
        csv.push_str(&format!("{cc},0.{:04},60,60\n", 100 + cc % 900));
    }
    csv.push_str("49,0.0120,60,60\n4930,0.0100,60,60\n4915,0.0900,30,6\n4916,0.0900,30,6\n4917,0.0900,30,6\n");
    db.import_rates_csv("carrier", csv.as_bytes(), ImportMode::Replace)
        .expect("carrier rates");
    db.import_rates_csv("reference", csv.as_bytes(), ImportMode::Replace)
        .expect("reference rates");
    for r in [rate("49", "0.02", 1, 1), rate("", "0.50", 60, 60)] {
        db.put_rate("gsm", &r).expect("gsm rate");
    }
    db.put_rate("reference", &rate("49", "0.039", 60, 60))
        .expect("ref");
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| {
        v[((v.len() as f64 * q).ceil() as usize)
            .saturating_sub(1)
            .min(v.len() - 1)]
    };
    (ms(at(0.5)), ms(at(0.95)), ms(*v.last().expect("samples")))
}

fn report(name: &str, samples: Vec<Duration>, target_ms: Option<f64>) {
    let (p50, p95, max) = percentiles(samples);
    let verdict = match target_ms {
        Some(t) if p95 < t => format!("  (target p95 < {t} ms: met)"),
        Some(t) => format!("  (target p95 < {t} ms: MISSED)"),
        None => String::new(),
    };
    println!("{name:<52} p50 {p50:7.2} ms  p95 {p95:7.2} ms  max {max:7.2} ms{verdict}");
}

/// UTC month boundaries of the 11 whole months before the month of `end()` (all inside the
/// records' year).
fn months() -> Vec<(i64, i64)> {
    let utc = OfficeTime::utc();
    let this = utc.month(end() - 1);
    let mut out = Vec::new();
    let mut m = this;
    for _ in 0..11 {
        let (y, mo) = m.split_once('-').unwrap_or(("2026", "01"));
        let idx = y.parse::<i32>().unwrap_or(2026) * 12 + mo.parse::<i32>().unwrap_or(1) - 2;
        m = format!("{:04}-{:02}", idx / 12, idx % 12 + 1);
        out.push(utc.parse_month(&m).expect("month"));
    }
    out.reverse();
    out
}

fn main() {
    let n = env("CDR_BENCH_RECORDS", 1_000_000);
    let iters = env("CDR_BENCH_ITERS", 200) as usize;
    let dir = match std::env::var("CDR_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d),
        Err(_) => tempfile::tempdir(),
    }
    .expect("temp dir");
    let path = dir.path().join("cdr-bench.db");
    let mut db = CdrDb::open(&path).expect("open");
    setup_rates(&mut db);

    // Insert through the writer, as the SIP loop would; flush now and then so the queue (and
    // memory) stays bounded.
    let (writer, handle) = CdrWriter::spawn(&path).expect("writer");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let started = Instant::now();
    for i in 0..n {
        handle.send(generate(i, &mut rng));
        if i % 20_000 == 19_999 {
            handle.flush().expect("flush");
        }
    }
    handle.flush().expect("flush");
    let took = started.elapsed();
    let stats = writer.stats();
    writer.shutdown().expect("shutdown");
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "insert through the writer: {n} records in {:.2} s = {:.0} records/s ({} batches, {} unrated), file {:.0} MiB",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        stats.batches,
        stats.unrated,
        size as f64 / 1048576.0
    );
    let t = Instant::now();
    db.optimize().expect("optimize");
    println!(
        "PRAGMA optimize after the load: {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );

    let months = months();
    let mut rng = Rng(42);
    let page = Page::number(50, 100);
    let mut page_only = Vec::new();
    let mut page_and_count = Vec::new();
    let mut empty_pages = 0;
    for _ in 0..iters {
        let (from, to) = months[rng.below(months.len() as u64) as usize];
        let f = Filter {
            extension: Some(format!("{}", 100 + rng.below(EXTENSIONS))),
            disposition: Some(Disposition::Answered),
            ..Filter::period(from, to)
        };
        let t = Instant::now();
        let rows = db.list(&f, Sort::default(), page).expect("list");
        page_only.push(t.elapsed());
        let count = db.count(&f).expect("count");
        page_and_count.push(t.elapsed());
        if rows.is_empty() || count < 5_000 {
            empty_pages += 1;
        }
    }
    println!("filter: extension + month + answered; page 50 of 100 rows ({empty_pages} of {iters} had < 5000 matches)");
    report("records page (list)", page_only, Some(100.0));
    report(
        "records page (list + count for the pager)",
        page_and_count,
        Some(100.0),
    );

    let mut newest = Vec::new();
    let mut search = Vec::new();
    for _ in 0..iters.min(50) {
        let t = Instant::now();
        db.list(&Filter::default(), Sort::default(), Page::number(1, 100))
            .expect("list");
        db.count(&Filter::default()).expect("count");
        newest.push(t.elapsed());
        let (from, to) = months[rng.below(months.len() as u64) as usize];
        let f = Filter {
            number: Some(format!("{}", 1000 + rng.below(9000))),
            ..Filter::period(from, to)
        };
        let t = Instant::now();
        db.list(&f, Sort::default(), Page::number(1, 100))
            .expect("list");
        db.count(&f).expect("count");
        search.push(t.elapsed());
    }
    report("newest page, no filter (list + count)", newest, None);
    report("number search in a month (list + count)", search, None);

    // The overview: today, this month, 30 days, by route.
    let mut overview = Vec::new();
    let mut month_totals = Vec::new();
    for k in 0..iters {
        let today = end() - (1 + (k as i64 % 300)) * DAY;
        let (mfrom, mto) = months[(k % months.len()).min(months.len() - 1)];
        let t_month = Instant::now();
        db.totals(&Filter::period(mfrom, mto)).expect("month");
        month_totals.push(t_month.elapsed());
        let starts: Vec<i64> = (0..=30).map(|d| today - 29 * DAY + d * DAY).collect();
        let t = Instant::now();
        db.overview((today, today + DAY), (mfrom, mto), &starts)
            .expect("overview");
        overview.push(t.elapsed());
    }
    report("totals of one month", month_totals, None);
    report(
        "overview (today + month + 30 days + by route)",
        overview,
        Some(100.0),
    );

    let t = Instant::now();
    let ext = db
        .billing_by_extension(months[6].0, months[6].1)
        .expect("billing");
    let lines = db
        .billing_by_line(months[6].0, months[6].1)
        .expect("billing");
    println!(
        "monthly billing per extension ({}) and per line ({}): {:.1} ms",
        ext.len(),
        lines.len(),
        t.elapsed().as_secs_f64() * 1000.0
    );

    // CSV export of everything to a file, with the peak RSS during it.
    let rss_before = status_kb("VmRSS:");
    let _ = std::fs::write("/proc/self/clear_refs", "5"); // resets VmHWM to the current RSS
    let out_path = dir.path().join("export.csv");
    let out = std::fs::File::create(&out_path).expect("csv file");
    let t = Instant::now();
    let rows = db
        .export_csv(&Filter::default(), Sort::default(), out)
        .expect("export");
    let took = t.elapsed();
    let hwm = status_kb("VmHWM:");
    let csv_size = std::fs::metadata(&out_path).map(|m| m.len()).unwrap_or(0);
    println!(
        "CSV export of all rows: {rows} rows, {:.0} MiB in {:.2} s ({:.0} rows/s){}",
        csv_size as f64 / 1048576.0,
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64(),
        if took < Duration::from_secs(10) {
            "  (target < 10 s: met)"
        } else {
            "  (target < 10 s: MISSED)"
        }
    );
    println!(
        "  RSS before the export {:.1} MiB, peak during it (VmHWM) {:.1} MiB: +{:.1} MiB",
        rss_before as f64 / 1024.0,
        hwm as f64 / 1024.0,
        hwm.saturating_sub(rss_before) as f64 / 1024.0
    );
    http_section(&path, iters, &months);
    if std::env::var("CDR_BENCH_KEEP").is_ok_and(|v| v == "1") {
        println!(
            "database kept: {}",
            dir.keep().join("cdr-bench.db").display()
        );
    }
}

/// One HTTP/1.1 exchange on a fresh connection: the status, the Set-Cookie values, and the body
/// length (the body itself is read and dropped as it comes, like a browser saving a download).
fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    form: Option<&str>,
) -> (u16, Vec<String>, String, u64) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let body = form.unwrap_or("");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !cookie.is_empty() {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if form.is_some() {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("send");
    s.write_all(body.as_bytes()).expect("send");
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = Vec::new();
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n as u64;
        if first.len() < 64 * 1024 {
            first.extend_from_slice(&buf[..n]);
        }
    }
    let text = String::from_utf8_lossy(&first).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let head_end = text.find("\r\n\r\n").unwrap_or(text.len());
    let cookies = text[..head_end]
        .lines()
        .filter_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
        .collect();
    (status, cookies, text, total)
}

/// The same reads through the dashboard over HTTP (a real `WebServer` on loopback, logged in
/// as a browser would): what an admin waits for, including templates and the session check.
fn http_section(path: &std::path::Path, iters: usize, months: &[(i64, i64)]) {
    use std::sync::Arc;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let web = rt
        .block_on(pasarela::web::WebServer::start(
            "127.0.0.1:0".parse().expect("addr"),
            Arc::new(pasarela::web::Stats::new()),
            path,
            pasarela::web::Links {
                office: OfficeTime::utc(),
                ..Default::default()
            },
        ))
        .expect("web server");
    let addr = web.local_addr();
    // First-run setup, as the admin's browser does it.
    let (_, cookies, page, _) = http(addr, "GET", "/setup", "", None);
    let csrf_cookie = cookies.first().cloned().unwrap_or_default();
    let marker = "name=\"csrf\" value=\"";
    let at = page.find(marker).map(|i| i + marker.len()).unwrap_or(0);
    let token = page[at..].split('"').next().unwrap_or("").to_owned();
    let form =
        format!("username=admin&password=benchmark-pass&password2=benchmark-pass&csrf={token}");
    let (status, cookies, _, _) = http(addr, "POST", "/setup", &csrf_cookie, Some(&form));
    assert_eq!(status, 303, "setup");
    let session = cookies
        .iter()
        .find(|c| c.starts_with("pasarela_session="))
        .cloned()
        .expect("session cookie");

    let utc = OfficeTime::utc();
    let mut rng = Rng(7);
    let mut pages = Vec::new();
    for _ in 0..iters {
        let (from, _) = months[rng.below(months.len() as u64) as usize];
        let url = format!(
            "/records?ext={}&month={}&disposition=answered&page=50",
            100 + rng.below(EXTENSIONS),
            utc.month(from)
        );
        let t = Instant::now();
        let (status, _, _, _) = http(addr, "GET", &url, &session, None);
        pages.push(t.elapsed());
        assert_eq!(status, 200, "{url}");
    }
    println!("over HTTP (WebServer on loopback, logged in, page size 50):");
    report(
        "GET /records (extension + month + answered, page 50)",
        pages,
        Some(100.0),
    );
    let mut overview = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        let (status, _, _, _) = http(addr, "GET", "/", &session, None);
        overview.push(t.elapsed());
        assert_eq!(status, 200);
    }
    report(
        "GET / (overview: today, month, 30 days, routes)",
        overview,
        Some(100.0),
    );
    let mut billing = Vec::new();
    for k in 0..iters.min(50) {
        let url = format!("/billing?month={}", utc.month(months[k % months.len()].0));
        let t = Instant::now();
        let (status, _, _, _) = http(addr, "GET", &url, &session, None);
        billing.push(t.elapsed());
        assert_eq!(status, 200);
    }
    report(
        "GET /billing (one month, per extension and line)",
        billing,
        None,
    );
    let rss_before = status_kb("VmRSS:");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let t = Instant::now();
    let (status, _, _, bytes) = http(addr, "GET", "/records.csv", &session, None);
    let took = t.elapsed();
    assert_eq!(status, 200);
    let hwm = status_kb("VmHWM:");
    println!(
        "GET /records.csv (all rows, streamed): {:.0} MiB in {:.2} s{}; RSS {:.1} MiB before, peak {:.1} MiB (+{:.1} MiB)",
        bytes as f64 / 1048576.0,
        took.as_secs_f64(),
        if took < Duration::from_secs(10) {
            "  (target < 10 s: met)"
        } else {
            "  (target < 10 s: MISSED)"
        },
        rss_before as f64 / 1024.0,
        hwm as f64 / 1024.0,
        hwm.saturating_sub(rss_before) as f64 / 1024.0
    );
    rt.block_on(web.shutdown());
}
