//! Call records end to end on a real database file: a finished call's summary becomes a rated
//! record through the writer thread and is found by the dashboard's queries; and records sent
//! to the writer survive kill -9 of the process shortly after.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pasarela::b2bua::{Attempt, CallSummary};
use pasarela::cdr::rating::ImportMode;
use pasarela::cdr::{
    CallRecord, CdrDb, CdrWriter, Direction, Disposition, Filter, OfficeNumbers, Page, RouteKind,
    Sort,
};
use pasarela::config::NumberingConfig;
use pasarela::routing::router::{Attempt as RouteAttempt, AttemptKind, Decision, Hop, Route};
use pasarela::routing::{Category, Dialled, NumberingPlan};
use pasarela::sip::peer::Proto;
use pasarela::sip::uri::Uri;

const CHILD_ENV: &str = "PASARELA_CDR_KILL_CHILD_DB";
const BURST: i64 = 500;

fn record(i: i64) -> CallRecord {
    let office = OfficeNumbers::new(None);
    let mut r = CallRecord::rejected("100", "+4930123456", 404, None, 1_000_000 + i, &office);
    r.call_ref = Some(i as u64);
    r
}

/// The child: sends a burst of records and one more, says so, and waits to be killed.
fn child(path: &str) {
    let (writer, handle) = CdrWriter::spawn(std::path::Path::new(path)).expect("writer");
    for i in 0..=BURST {
        handle.send(record(i));
    }
    // libtest may have started the line with "test … ... ": look for the marker anywhere.
    println!("CDR-CHILD-SENT");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(60));
    drop(writer);
}

#[test]
fn records_survive_kill_9_within_200_ms() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kill.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "records_survive_kill_9_within_200_ms",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let started = Instant::now();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("CDR-CHILD-SENT") => break,
            Some(Ok(_)) => {}
            other => {
                let _ = child.kill();
                panic!("child ended before sending: {other:?}");
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "child too slow"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    let status = child.wait().unwrap();
    assert!(!status.success());

    let db = CdrDb::open(&path).unwrap();
    let n = db.count(&Filter::default()).unwrap();
    assert_eq!(n, (BURST + 1) as u64, "records lost by kill -9");
    let last = db
        .list(&Filter::default(), Sort::default(), Page::number(1, 1))
        .unwrap();
    assert_eq!(last[0].call_ref, Some(BURST as u64));
}

fn plan() -> NumberingPlan {
    NumberingPlan::from_config(&NumberingConfig {
        country_code: "49".into(),
        national_prefix: "0".into(),
        international_prefix: "00".into(),
        ..NumberingConfig::default()
    })
}

fn route_attempt(kind: AttemptKind, uri: &str) -> RouteAttempt {
    let Ok(Uri::Sip(uri)) = Uri::parse(uri) else {
        panic!("bad uri {uri}")
    };
    RouteAttempt {
        kind,
        uri,
        hop: Hop {
            proto: Proto::Udp,
            addr: "192.0.2.7:5060".parse().unwrap(),
        },
        auth: None,
    }
}

#[test]
fn finished_calls_become_rated_records_the_dashboard_finds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calls.db");
    let mut admin = CdrDb::open(&path).unwrap();
    admin.create_rate_table("carrier", "EUR", false).unwrap();
    admin.set_rate_table_lines("carrier", &["carrier"]).unwrap();
    admin.create_rate_table("reference", "EUR", true).unwrap();
    admin
        .import_rates_csv(
            "carrier",
            "prefix,per_minute,connect_fee,first_increment,next_increment\n49,0.012,0.02,60,60\n"
                .as_bytes(),
            ImportMode::Replace,
        )
        .unwrap();
    admin
        .import_rates_csv(
            "reference",
            "prefix,per_minute\n49,0.039\n".as_bytes(),
            ImportMode::Replace,
        )
        .unwrap();

    let mut office = OfficeNumbers::new(Some(plan()));
    office.add_extension("100", Some("+4930555100"));
    office.add_extension("101", None);

    let route = |decision: Decision| Route {
        dialled: "030123456".into(),
        number: Some(Dialled::E164("+4930123456".parse().unwrap())),
        category: Some(Category::National),
        steps: Vec::new(),
        decision,
        elapsed: Duration::from_millis(4),
    };
    let t0 = Instant::now();
    let now_ms = 1_772_323_200_000; // 2026-03-01T00:00:00Z
    let base = CallSummary {
        id: 1,
        caller: "100".into(),
        callee: "030123456".into(),
        started: t0,
        answered: Some(t0 + Duration::from_secs(3)),
        ended: t0 + Duration::from_secs(3 + 125),
        status: 200,
        disposition: "answered",
        codec: Some("PCMA".into()),
        media_srtp: [false; 2],
        packets: 12_500,
        lost: 4,
        jitter_ms: 1.25,
        attempts: Vec::new(),
        answered_by: None,
        route: None,
        q850: None,
        origin: None,
        signalling: (None, None),
        transfers: Vec::new(),
    };
    // 1: over the PSTN trunk, 125 s talk.
    let mut pstn = base.clone();
    pstn.route = Some(Arc::new(route(Decision::Attempts(vec![route_attempt(
        AttemptKind::Trunk {
            name: "carrier".into(),
        },
        "sip:030123456@192.0.2.7",
    )]))));
    pstn.attempts = vec![Attempt {
        stage: 0,
        label: "trunk carrier".into(),
        uri: "sip:030123456@192.0.2.7".into(),
        status: 200,
        reason: None,
    }];
    pstn.answered_by = Some((0, "sip:030123456@192.0.2.7".into()));
    // 2: the same number reached over ENUM: free, with savings.
    let mut sip = pstn.clone();
    sip.id = 2;
    sip.route = Some(Arc::new(route(Decision::Attempts(vec![route_attempt(
        AttemptKind::Sip {
            source: "ENUM e164.arpa".into(),
        },
        "sip:bob@192.0.2.8",
    )]))));
    sip.attempts = vec![Attempt {
        stage: 0,
        label: "ENUM e164.arpa".into(),
        uri: "sip:bob@192.0.2.8".into(),
        status: 200,
        reason: None,
    }];
    sip.answered_by = Some((0, "sip:bob@192.0.2.8".into()));
    // 3: extension 101, nobody answered.
    let mut internal = base.clone();
    internal.id = 3;
    internal.callee = "101".into();
    internal.answered = None;
    internal.status = 480;
    internal.disposition = "no answer";
    internal.attempts = vec![Attempt {
        stage: 0,
        label: "extension 101".into(),
        uri: "sip:101@192.0.2.9".into(),
        status: 480,
        reason: None,
    }];

    let (writer, handle) = CdrWriter::spawn(&path).unwrap();
    let now = t0 + Duration::from_secs(200);
    for s in [&pstn, &sip, &internal] {
        handle.send(CallRecord::from_summary(s, now, now_ms, &office));
    }
    handle.send(CallRecord::rejected(
        "101",
        "0900123456",
        403,
        None,
        now_ms,
        &office,
    ));
    writer.shutdown().unwrap();

    let all = admin
        .list(&Filter::default(), Sort::default(), Page::number(1, 10))
        .unwrap();
    assert_eq!(all.len(), 4);
    let by_ref = |r: u64| all.iter().find(|c| c.call_ref == Some(r)).unwrap();

    let p = by_ref(1);
    assert_eq!(p.start_ms, now_ms - 200_000);
    assert_eq!((p.duration_s, p.billable_s), (128, 125));
    assert_eq!(p.route_kind, RouteKind::Pstn);
    assert_eq!(p.route_target.as_deref(), Some("carrier"));
    // 125 s at 60/60 = 180 s × 0.012 + 0.02 = 0.056 → 6 ct; the reference: 3 × 0.039 → 12 ct.
    assert_eq!(p.cost_minor, Some(6));
    assert_eq!(p.reference_cost_minor, Some(12));
    assert_eq!(p.savings_minor, Some(0));
    assert_eq!(p.caller_e164.as_deref(), Some("+4930555100"));

    let s = by_ref(2);
    assert_eq!(s.route_kind, RouteKind::Sip);
    assert_eq!(s.route_source.as_deref(), Some("ENUM e164.arpa"));
    assert_eq!((s.cost_minor, s.savings_minor), (Some(0), Some(12)));

    let i = by_ref(3);
    assert_eq!(i.direction, Direction::Internal);
    assert_eq!(i.disposition, Disposition::NoAnswer);
    assert_eq!(
        (i.sip_status, i.q850_cause, i.cost_minor),
        (480, 18, Some(0))
    );

    let month = Filter::period(now_ms - 86_400_000, now_ms + 86_400_000);
    let t = admin.totals(&month).unwrap();
    assert_eq!((t.calls, t.answered, t.billable_s), (4, 2, 250));
    assert_eq!((t.cost_minor, t.savings_minor), (6, 12));

    let refused = admin
        .list(
            &Filter {
                disposition: Some(Disposition::Failed),
                ..Filter::default()
            },
            Sort::default(),
            Page::number(1, 10),
        )
        .unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].q850_cause, 21);

    let mut csv = Vec::new();
    assert_eq!(
        admin
            .export_csv(&Filter::default(), Sort::default(), &mut csv)
            .unwrap(),
        4
    );
    let text = String::from_utf8(csv).unwrap();
    assert!(
        text.contains(",carrier,trunk,answered,200,16,PCMA,"),
        "{text}"
    );
    assert!(text.contains(",0.06,EUR,carrier,49,0.12,0.00,"), "{text}");
}
