//! Calls through an analog FXO line end to end (issue 19): a real `pasarela serve` with one
//! `[[fxo]]` on the simulated DAHDI channel (`sim:` socket), a scripted exchange paced at
//! 20 ms per frame like a card, and a real baresip phone dialling a number with no SIP route.
mod common;
mod fxo_sim;
mod phone;

use std::io::{Read, Write};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{call_config, require_program, rtp_port_range, Server};
use fxo_sim::{dtmf_heard, tone, tone_share, Line};
use pasarela::pstn::dahdi::channel::ChannelEvent;
use phone::{assert_tone, wait_registered, Phone, PhoneCfg};

/// At most two of these tests at a time: each runs a server, a phone and real-time simulated
/// lines, and on a loaded 2-core machine more at once starve the 20 ms pacing of the lines.
fn slot() -> impl Drop {
    use std::sync::{Condvar, Mutex};
    static TAKEN: Mutex<usize> = Mutex::new(0);
    static FREED: Condvar = Condvar::new();
    struct Slot;
    impl Drop for Slot {
        fn drop(&mut self) {
            let mut n = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
            *n -= 1;
            FREED.notify_one();
        }
    }
    let mut n = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    while *n >= 2 {
        n = FREED.wait(n).unwrap_or_else(|e| e.into_inner());
    }
    *n += 1;
    Slot
}

/// Serves gateway connections on `path` in real time (one frame every 20 ms), skipping the
/// ones that close before sending audio (the start-up check opens the channel and closes it),
/// until `script` returns false on a connection that carried audio.
fn paced_exchange(
    path: &Path,
    mut script: impl FnMut(&mut Line) -> bool + Send + 'static,
) -> thread::JoinHandle<Line> {
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind sim socket");
    thread::spawn(move || loop {
        let (mut s, _) = listener.accept().expect("gateway connects");
        let mut line = Line::new();
        let start = Instant::now();
        'turns: while script(&mut line) {
            let mut m = Vec::with_capacity(400);
            for e in line.events.drain(..) {
                m.push(b'E');
                m.extend(e.to_le_bytes());
            }
            m.push(b'A');
            for _ in 0..160 {
                m.extend(line.play.pop_front().unwrap_or(0).to_le_bytes());
            }
            if s.write_all(&m).is_err() {
                break;
            }
            line.frame += 1;
            loop {
                let mut t = [0u8; 1];
                if s.read_exact(&mut t).is_err() {
                    break 'turns;
                }
                match t[0] {
                    b'H' => {
                        let mut v = [0u8; 4];
                        if s.read_exact(&mut v).is_err() {
                            break 'turns;
                        }
                        line.hook(i32::from_le_bytes(v));
                    }
                    b'A' => {
                        let mut b = [0u8; 320];
                        if s.read_exact(&mut b).is_err() {
                            break 'turns;
                        }
                        line.heard
                            .extend(b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
                        break;
                    }
                    other => panic!("unexpected message 0x{other:02x}"),
                }
            }
            let due = start + Duration::from_millis(20 * line.frame);
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        if !line.heard.is_empty() {
            return line;
        }
    })
}

/// What the exchange does at a moment of line time.
#[derive(Debug, Clone)]
enum Act {
    /// A signalling event (polarity reversal, battery drop, alarm …).
    Event(ChannelEvent),
    /// Ringing voltage on or off (dropped when the gateway answers).
    Ring(bool),
    /// Caller-ID audio (dropped when the gateway answers).
    Cid(Vec<i16>),
    /// Audio to play, after what is playing.
    Play(Vec<i16>),
}

/// How the exchange treats the gateway seizing the line with no call ringing on it.
#[derive(Debug, Clone)]
struct Outgoing {
    /// Dial tone to play until the first digit; `None`: a line without dial tone.
    dial_tone: Option<Vec<i16>>,
    /// What happens after the digits (ms after the last one).
    then: Vec<(u64, Act)>,
}

impl Outgoing {
    /// DE dial tone, then `then`.
    fn de(then: Vec<(u64, Act)>) -> Outgoing {
        Outgoing {
            dial_tone: Some(tone(425, 0, [0; 4], 10_000)),
            then,
        }
    }

    /// Answered by polarity reversal 300 ms after the digits, then 1 kHz from the far end.
    fn answered() -> Outgoing {
        Outgoing::de(vec![
            (300, Act::Event(ChannelEvent::Polarity)),
            (320, Act::Play(tone(1000, 0, [0; 4], 8000))),
        ])
    }
}

/// The shared state of a running [`Exchange`].
#[derive(Default)]
struct Ctl {
    /// Line time (20 ms frames).
    frame: u64,
    off_hook: bool,
    /// Everything the gateway sent to the line.
    heard: Vec<i16>,
    /// Hook flashes seen.
    flashes: usize,
    /// Acts due at a frame.
    todo: Vec<(u64, Act)>,
    /// An incoming call is being rung.
    ringing: bool,
    outgoing: Option<Outgoing>,
    /// Seizure phase: 0 none, 1 dial tone, 2 digits, 3 after the digits.
    phase: u8,
    mark: u64,
    /// Seizures so far.
    seizures: usize,
    stop: bool,
}

/// A simulated exchange on one FXO channel, paced in real time, that the test steers while
/// calls run: rings with caller ID, answers seizures per [`Outgoing`], plays events and audio.
struct Exchange {
    ctl: std::sync::Arc<std::sync::Mutex<Ctl>>,
    thread: Option<thread::JoinHandle<Line>>,
}

impl Exchange {
    fn start(path: &Path, outgoing: Option<Outgoing>) -> Exchange {
        let ctl = std::sync::Arc::new(std::sync::Mutex::new(Ctl {
            outgoing,
            ..Ctl::default()
        }));
        let c2 = ctl.clone();
        let thread = paced_exchange(path, move |l: &mut Line| {
            let Ok(mut c) = c2.lock() else { return false };
            let c = &mut *c;
            c.frame = l.frame;
            let new = l.heard.get(c.heard.len()..).unwrap_or_default().to_vec();
            c.heard.extend(new);
            c.flashes = l.flashes.len();
            if l.off_hook != c.off_hook {
                c.off_hook = l.off_hook;
                if l.off_hook && c.ringing {
                    // Answered: the ringing and the caller ID stop.
                    c.ringing = false;
                    c.todo
                        .retain(|(_, a)| !matches!(a, Act::Ring(_) | Act::Cid(_)));
                    l.play.clear();
                } else if l.off_hook {
                    c.seizures += 1;
                    if let Some(o) = &c.outgoing {
                        c.phase = 1;
                        if let Some(t) = &o.dial_tone {
                            l.play(t);
                        }
                    }
                } else {
                    // Released: what this call was to do next does not happen.
                    if c.phase > 0 {
                        c.todo.clear();
                    }
                    c.phase = 0;
                    l.play.clear();
                }
            }
            match c.phase {
                1 if l.last_rms() > 1000.0 => {
                    l.play.clear();
                    c.phase = 2;
                    c.mark = l.frame;
                }
                2 => {
                    if l.last_rms() > 1000.0 {
                        c.mark = l.frame;
                    } else if l.frame - c.mark > 25 {
                        c.phase = 3;
                        let then = c.outgoing.as_ref().map(|o| o.then.clone());
                        for (ms, a) in then.unwrap_or_default() {
                            c.todo.push((l.frame + ms / 20, a));
                        }
                    }
                }
                _ => {}
            }
            let (due, later): (Vec<_>, Vec<_>) = c.todo.drain(..).partition(|(f, _)| *f <= l.frame);
            c.todo = later;
            for (_, a) in due {
                match a {
                    Act::Event(e) => l.events.push(e.dahdi()),
                    Act::Ring(true) => l.events.push(ChannelEvent::RingBegin.dahdi()),
                    Act::Ring(false) => l.events.push(ChannelEvent::RingEnd.dahdi()),
                    Act::Cid(v) | Act::Play(v) => l.play(&v),
                }
            }
            !c.stop && l.frame < 50 * 180
        });
        Exchange {
            ctl,
            thread: Some(thread),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Ctl) -> T) -> T {
        f(&mut self.ctl.lock().expect("exchange state"))
    }

    /// `act` in `ms` of line time.
    fn after(&self, ms: u64, act: Act) {
        self.with(|c| {
            let at = c.frame + ms / 20;
            c.todo.push((at, act));
        });
    }

    /// Rings `cycles` times with the DE cadence (1 s on, 4 s off), with caller ID `cid`
    /// between the first and the second ring, or before the first when `before` (as DTMF
    /// caller ID is sent).
    fn ring(&self, cid: Vec<i16>, before: bool, cycles: u64) {
        let cid_ms = cid.len() as u64 / 8;
        self.with(|c| {
            c.ringing = true;
            let mut t = c.frame;
            if before {
                c.todo.push((t, Act::Cid(cid.clone())));
                t += (cid_ms + 300) / 20;
            }
            for i in 0..cycles {
                c.todo.push((t, Act::Ring(true)));
                c.todo.push((t + 50, Act::Ring(false)));
                if i == 0 && !before {
                    c.todo.push((t + 50 + 25, Act::Cid(cid.clone())));
                }
                t += 250;
            }
        });
    }

    /// Waits up to `limit` for `cond`; false when it did not come.
    fn wait(&self, limit: Duration, cond: impl Fn(&Ctl) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.with(|c| cond(c)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the channel; the line as the exchange saw it.
    fn finish(mut self) -> Line {
        self.with(|c| c.stop = true);
        self.thread
            .take()
            .map(|t| t.join().expect("exchange thread"))
            .unwrap_or_default()
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Ok(mut c) = self.ctl.lock() {
            c.stop = true;
        }
    }
}

/// A call record, by column name.
#[derive(Debug, Clone)]
struct Rec {
    route_kind: String,
    route_target: String,
    sip_status: i64,
    q850: i64,
    direction: String,
    disposition: String,
    caller: String,
    explanation: String,
}

/// The finished call records after `after` (an id), waiting up to 10 s for `count` of them.
fn records_after(db: &Path, after: i64, count: usize) -> Vec<(i64, Rec)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        if let Ok(conn) = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            let _ = conn.busy_timeout(Duration::from_secs(2));
            if let Ok(mut st) = conn.prepare(
                "SELECT id, route_kind, COALESCE(route_target, ''), sip_status, q850_cause, \
                 direction, disposition, caller, explanation FROM call_records \
                 WHERE id > ?1 ORDER BY id",
            ) {
                got = st
                    .query_map([after], |r| {
                        Ok((
                            r.get(0)?,
                            Rec {
                                route_kind: r.get(1)?,
                                route_target: r.get(2)?,
                                sip_status: r.get(3)?,
                                q850: r.get(4)?,
                                direction: r.get(5)?,
                                disposition: r.get(6)?,
                                caller: r.get(7)?,
                                explanation: r.get(8)?,
                            },
                        ))
                    })
                    .map(|rows| rows.filter_map(Result::ok).collect())
                    .unwrap_or_default();
                if got.len() >= count {
                    return got;
                }
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    got
}

/// id, route_kind, route_target, sip_status, q850_cause, direction.
type Record = (i64, String, String, i64, i64, String);

fn last_record(db: &Path) -> Option<Record> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(conn) = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        ) {
            let _ = conn.busy_timeout(Duration::from_secs(2));
            let row = conn.query_row(
                "SELECT id, route_kind, COALESCE(route_target, ''), sip_status, q850_cause, \
                 direction FROM call_records WHERE end_reason IS NOT 'in progress' \
                 ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            );
            if let Ok(r) = row {
                return Some(r);
            }
        }
        thread::sleep(Duration::from_millis(200));
    }
    None
}

/// `serve` with FXO lines `lines` (name, simulated channel) answering by polarity and
/// clearing by battery drop, their calls ringing 101, and phone `ext` registered (440 Hz for
/// 30 s, answering by hand).
fn serve_lines(lines: &[(&str, &Path)], ext: &str) -> (Server, Phone) {
    let server = Server::start(&lines_config(lines));
    let mut a = Phone::start(
        server.dir(),
        server.udp,
        PhoneCfg {
            name: ext,
            ext,
            answer: "manual",
            tone_hz: 440.0,
            tone_secs: 30.0,
        },
    );
    wait_registered(&server, &mut a, ext);
    (server, a)
}

/// The configuration of [`serve_lines`].
fn lines_config(lines: &[(&str, &Path)]) -> String {
    let mut config = format!(
        r#"{base}
[numbering]
country_code = "49"
national_prefix = "0"
international_prefix = "00"

[enum]
suffixes = []
nameservers = ["127.0.0.1:9"]
budget_ms = 200
"#,
        base = call_config("no_answer_secs = 30", rtp_port_range()),
    );
    for (name, sock) in lines {
        config.push_str(&format!(
            r#"
[[fxo]]
name = "{name}"
channel = "sim:{sock}"
country = "DE"
answer = "polarity"
disconnect = ["battery"]
dial_tone_secs = 2
incoming = ["101"]
"#,
            sock = sock.display(),
        ));
    }
    config
}

/// `serve` with fxo1 on the simulated channel at `sock` (answer by polarity, disconnect by
/// battery drop), and phone 100 registered (440 Hz for 20 s).
fn serve_and_phone(sock: &Path) -> (Server, Phone) {
    let config = format!(
        r#"{base}
[numbering]
country_code = "49"
national_prefix = "0"
international_prefix = "00"

[enum]
suffixes = []
nameservers = ["127.0.0.1:9"]
budget_ms = 200

[[fxo]]
name = "fxo1"
channel = "sim:{sock}"
country = "DE"
answer = "polarity"
disconnect = ["battery"]
incoming = ["101"]
"#,
        base = call_config("no_answer_secs = 20", rtp_port_range()),
        sock = sock.display(),
    );
    let server = Server::start(&config);
    let mut a = Phone::start(
        server.dir(),
        server.udp,
        PhoneCfg {
            name: "100",
            ext: "100",
            answer: "manual",
            tone_hz: 440.0,
            tone_secs: 20.0,
        },
    );
    wait_registered(&server, &mut a, "100");
    (server, a)
}

/// 100 dials a national number with no SIP route → fxo1 seizes, hears the dial tone, dials
/// the digits (spandsp decodes them) → the exchange answers by polarity reversal and plays
/// 1 kHz → after 4 s the far end clears by battery drop → the phone gets BYE; the phone heard
/// 1 kHz, the line heard the phone's 440 Hz, the record says pstn / fxo1, 200, cause 16.
#[test]
fn a_phone_calls_out_on_the_fxo_line_and_the_far_end_clears() {
    require_program("baresip", "baresip");
    let _slot = slot();
    let dir = common::TestDir::new("fxo-out");
    let sock = dir.path().join("fxo1.sock");
    let mut phase = 0;
    let mut mark = 0u64;
    let ex = paced_exchange(&sock, move |l: &mut Line| {
        if l.frame > 50 * 60 {
            return false;
        }
        match phase {
            0 if l.off_hook => {
                l.play(&tone(425, 0, [0; 4], 10_000));
                phase = 1;
            }
            1 if l.last_rms() > 1000.0 => {
                l.play.clear();
                phase = 2;
            }
            2 => {
                if l.last_rms() > 1000.0 {
                    mark = l.frame;
                } else if l.frame - mark > 25 {
                    phase = 3;
                    mark = l.frame;
                }
            }
            3 => {
                let n = l.frame - mark;
                if n == 10 {
                    l.events.push(ChannelEvent::Polarity.dahdi());
                }
                if n == 11 {
                    l.play(&tone(1000, 0, [0; 4], 4000));
                }
                if n == 11 + 200 {
                    l.events.push(ChannelEvent::BatteryDrop.dahdi());
                    phase = 4;
                    mark = l.frame;
                }
            }
            4 if !l.off_hook || l.frame - mark > 250 => return false,
            _ => {}
        }
        true
    });
    let (server, mut a) = serve_and_phone(&sock);
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    a.expect_event("CALL_ESTABLISHED", Duration::from_secs(20), &[], &server);
    a.expect_event("CALL_CLOSED", Duration::from_secs(15), &[], &server);
    let line = ex.join().expect("exchange");
    let logs = format!("{}{}", a.report(), server.log_excerpt());
    assert_eq!(dtmf_heard(&line.heard), "03012345678", "{logs}");
    assert_eq!(line.hook_log.last().map(|h| h.1), Some(false), "{logs}");
    assert_tone(&a.received_wav(), 1000.0, "the phone received", &logs);
    let on_hook = line.hook_log.last().map_or(0, |h| h.0 as usize * 160);
    let talk = line
        .heard
        .get(on_hook.saturating_sub(24_000)..on_hook.saturating_sub(4_000));
    let share = talk.map_or(0.0, |t| tone_share(t, 440.0));
    assert!(
        share > 0.5,
        "the line heard 440 Hz share {share:.2}\n{logs}"
    );
    let rec = last_record(&server.db).unwrap_or_else(|| panic!("no call record\n{logs}"));
    assert_eq!(
        (rec.1.as_str(), rec.2.as_str()),
        ("pstn", "fxo1"),
        "{rec:?}"
    );
    assert_eq!((rec.3, rec.4), (200, 16), "{rec:?}");
    assert_eq!(rec.5, "outgoing", "{rec:?}");
}

/// The exchange answers the dialled digits with the DE busy cadence (425 Hz, 480/480 ms): the
/// phone gets 486 and the record says pstn / fxo1 / 486 with Q.850 17; the line is released.
#[test]
fn a_busy_cadence_on_the_fxo_line_gives_486() {
    require_program("baresip", "baresip");
    let _slot = slot();
    let dir = common::TestDir::new("fxo-busy");
    let sock = dir.path().join("fxo1.sock");
    let mut phase = 0;
    let mut mark = 0u64;
    let ex = paced_exchange(&sock, move |l: &mut Line| {
        if l.frame > 50 * 40 {
            return false;
        }
        match phase {
            0 if l.off_hook => {
                l.play(&tone(425, 0, [0; 4], 10_000));
                phase = 1;
            }
            1 if l.last_rms() > 1000.0 => {
                l.play.clear();
                phase = 2;
            }
            2 => {
                if l.last_rms() > 1000.0 {
                    mark = l.frame;
                } else if l.frame - mark > 25 {
                    l.play(&tone(425, 0, [480, 480, 0, 0], 8000));
                    phase = 3;
                    mark = l.frame;
                }
            }
            3 if !l.off_hook => return false,
            _ => {}
        }
        true
    });
    let (server, mut a) = serve_and_phone(&sock);
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    let closed = a.expect_event("CALL_CLOSED", Duration::from_secs(30), &[], &server);
    let line = ex.join().expect("exchange");
    let logs = format!("{}{}", a.report(), server.log_excerpt());
    assert!(closed.contains("486"), "busy: {closed}\n{logs}");
    assert_eq!(line.hook_log.last().map(|h| h.1), Some(false), "{logs}");
    let rec = last_record(&server.db).unwrap_or_else(|| panic!("no call record\n{logs}"));
    assert_eq!(
        (rec.1.as_str(), rec.2.as_str(), rec.3, rec.4),
        ("pstn", "fxo1", 486, 17),
        "{rec:?}"
    );
}

/// Waits for the next `kind` event of `phone` after event index `*from` (moving it on).
fn next_event(
    phone: &mut Phone,
    kind: &str,
    from: &mut usize,
    limit: Duration,
    server: &Server,
) -> String {
    match phone.wait_event(kind, *from, limit) {
        Some((next, ev)) => {
            *from = next;
            ev
        }
        None => panic!(
            "baresip {}: no {kind} within {limit:?}\n{}{}",
            phone.name,
            phone.report(),
            server.log_excerpt()
        ),
    }
}

/// Four calls arrive on fxo1 in a row, with caller ID as spandsp sends it: Bell 202 FSK
/// (number and name, between the first and second ring), ETSI V.23 FSK (number and name),
/// DTMF (before the first ring), and withheld (V.23 "private"). Each time phone 101 rings
/// showing the caller (number, and the name as display name). The first three are answered
/// (the line goes off hook and the ringing stops) and end by battery drop, by the phone's
/// BYE and by battery drop; the fourth caller gives up before anyone answers: the phone gets
/// CANCEL and the record says incoming on fxo1, cancelled, from anonymous.
#[test]
fn incoming_calls_show_the_caller_id_of_each_kind_and_an_abandoned_one_is_cancelled() {
    require_program("baresip", "baresip");
    let _slot = slot();
    let dir = common::TestDir::new("fxo-in");
    let sock = dir.path().join("fxo1.sock");
    let ex = Exchange::start(&sock, None);
    let (server, mut b) = serve_lines(&[("fxo1", &sock)], "101");
    let limit = Duration::from_secs(20);
    let mut from = 0;
    struct Case {
        what: &'static str,
        cid: Vec<i16>,
        before: bool,
        number: Option<&'static str>,
        name: Option<&'static str>,
    }
    let cases = [
        Case {
            what: "Bell 202",
            cid: fxo_sim::signal(&["cid", "bell202", "2125551234", "BOB SMITH"]),
            before: false,
            number: Some("2125551234"),
            name: Some("BOB SMITH"),
        },
        Case {
            what: "V.23",
            cid: fxo_sim::signal(&["cid", "v23", "0301234567", "ALICE"]),
            before: false,
            number: Some("301234567"),
            name: Some("ALICE"),
        },
        Case {
            what: "DTMF",
            cid: fxo_sim::signal(&["cid", "dtmf", "0401234567"]),
            before: true,
            number: Some("401234567"),
            name: None,
        },
    ];
    for (i, case) in cases.into_iter().enumerate() {
        ex.ring(case.cid, case.before, 6);
        let inc = next_event(&mut b, "CALL_INCOMING", &mut from, limit, &server);
        let peer = phone::json_str(&inc, "peeruri").unwrap_or_default();
        let shown = phone::json_str(&inc, "peerdisplayname").unwrap_or_default();
        let number = case.number.unwrap_or("anonymous");
        assert!(
            peer.contains(number),
            "{}: the phone shows {peer:?}, not {number}\n{inc}",
            case.what
        );
        if let Some(name) = case.name {
            assert_eq!(shown, name, "{}: display name\n{inc}", case.what);
        }
        b.command("accept", "");
        next_event(&mut b, "CALL_ESTABLISHED", &mut from, limit, &server);
        assert!(
            ex.wait(limit, |c| c.off_hook && !c.ringing),
            "{}: the line was not answered\n{}",
            case.what,
            server.log_excerpt()
        );
        if i == 1 {
            b.command("hangup", "");
        } else {
            ex.after(1000, Act::Event(ChannelEvent::BatteryDrop));
        }
        next_event(&mut b, "CALL_CLOSED", &mut from, limit, &server);
        assert!(
            ex.wait(limit, |c| !c.off_hook),
            "{}: the line was not released\n{}",
            case.what,
            server.log_excerpt()
        );
    }
    // Withheld, and the caller gives up after one ring.
    ex.ring(fxo_sim::signal(&["cid", "v23", "-P"]), false, 1);
    let inc = next_event(&mut b, "CALL_INCOMING", &mut from, limit, &server);
    let peer = phone::json_str(&inc, "peeruri").unwrap_or_default();
    assert!(peer.contains("anonymous"), "withheld shown as {peer:?}");
    let closed = next_event(&mut b, "CALL_CLOSED", &mut from, limit, &server);
    let line = ex.finish();
    assert_eq!(
        line.hook_log.iter().filter(|h| h.1).count(),
        3,
        "the line went off hook for the three answered calls only: {:?}",
        line.hook_log
    );
    let recs = records_after(&server.db, 0, 4);
    let logs = format!("{closed}\n{}{}", b.report(), server.log_excerpt());
    assert_eq!(recs.len(), 4, "{recs:?}\n{logs}");
    for (_, r) in &recs {
        assert_eq!(
            (
                r.direction.as_str(),
                r.route_kind.as_str(),
                r.route_target.as_str()
            ),
            ("incoming", "pstn", "fxo1"),
            "{r:?}"
        );
    }
    for (_, r) in &recs[..3] {
        assert_eq!(
            (r.sip_status, r.disposition.as_str()),
            (200, "answered"),
            "{r:?}"
        );
    }
    assert!(recs[0].1.caller.contains("2125551234"), "{:?}", recs[0]);
    let last = &recs[3].1;
    assert_eq!(last.disposition, "cancelled", "{last:?}\n{logs}");
    assert!(last.caller.contains("anonymous"), "{last:?}");
}

/// Two FXO lines. First call: fxo1 gives no dial tone: after `dial_tone_secs` it is released
/// with 503 (Q.850 34) and the call goes on to fxo2, which hears the dial tone, dials and is
/// answered; the record says fxo2, 200, and its explanation shows both attempts. Second
/// call: both lines answer the digits with the DE congestion cadence (425 Hz 240/240 ms):
/// the phone gets 503 and the record's explanation shows both lines' 503.
#[test]
fn no_dial_tone_moves_the_call_to_the_next_line_and_congestion_gives_503() {
    require_program("baresip", "baresip");
    let _slot = slot();
    let dir = common::TestDir::new("fxo-next");
    let (s1, s2) = (dir.path().join("fxo1.sock"), dir.path().join("fxo2.sock"));
    let dead = Outgoing {
        dial_tone: None,
        then: Vec::new(),
    };
    let ex1 = Exchange::start(&s1, Some(dead));
    let ex2 = Exchange::start(&s2, Some(Outgoing::answered()));
    let (server, mut a) = serve_lines(&[("fxo1", &s1), ("fxo2", &s2)], "100");
    let limit = Duration::from_secs(30);
    let mut from = 0;
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    next_event(&mut a, "CALL_ESTABLISHED", &mut from, limit, &server);
    assert_eq!(ex1.with(|c| c.seizures), 1, "fxo1 was not tried first");
    assert!(!ex1.with(|c| c.off_hook), "fxo1 was not released");
    a.command("hangup", "");
    next_event(&mut a, "CALL_CLOSED", &mut from, limit, &server);
    assert!(ex2.wait(limit, |c| !c.off_hook), "fxo2 not released");
    let recs = records_after(&server.db, 0, 1);
    let logs = format!("{}{}", a.report(), server.log_excerpt());
    let (id, first) = recs
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no record\n{logs}"));
    assert_eq!(
        (first.route_target.as_str(), first.sip_status),
        ("fxo2", 200),
        "{first:?}"
    );
    let ex = &first.explanation;
    assert!(
        ex.contains("fxo1") && ex.contains("-> 503") && ex.contains("fxo2"),
        "the explanation does not show fxo1's 503 and fxo2: {ex}"
    );

    // Congestion on both lines.
    let congestion = Outgoing::de(vec![(100, Act::Play(tone(425, 0, [240, 240, 0, 0], 8000)))]);
    ex1.with(|c| c.outgoing = Some(congestion.clone()));
    ex2.with(|c| c.outgoing = Some(congestion));
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    let closed = next_event(&mut a, "CALL_CLOSED", &mut from, limit, &server);
    assert!(closed.contains("503"), "congestion: {closed}\n{logs}");
    let recs = records_after(&server.db, id, 1);
    let (_, second) = recs
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no record\n{logs}"));
    assert_eq!((second.sip_status, second.q850), (503, 34), "{second:?}");
    let ex = &second.explanation;
    assert_eq!(
        ex.matches("-> 503").count(),
        2,
        "both lines' congestion should be in the explanation: {ex}"
    );
    let (l1, l2) = (ex1.finish(), ex2.finish());
    assert_eq!(l1.hook_log.last().map(|h| h.1), Some(false));
    assert_eq!(l2.hook_log.last().map(|h| h.1), Some(false));
}

/// During a call on the FXO line (answered by polarity reversal): DTMF digits spandsp plays
/// into the line audio reach the phone as RFC 4733 events (baresip's CALL_DTMF_START), and
/// digits the phone sends as RFC 4733 are played into the line as tones that spandsp's
/// receiver decodes.
#[test]
fn dtmf_crosses_the_fxo_line_both_ways() {
    require_program("baresip", "baresip");
    let _slot = slot();
    let dir = common::TestDir::new("fxo-dtmf");
    let sock = dir.path().join("fxo1.sock");
    let answered = Outgoing::de(vec![(300, Act::Event(ChannelEvent::Polarity))]);
    let ex = Exchange::start(&sock, Some(answered));
    let (server, mut a) = serve_lines(&[("fxo1", &sock)], "100");
    let limit = Duration::from_secs(20);
    let mut from = 0;
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    next_event(&mut a, "CALL_ESTABLISHED", &mut from, limit, &server);
    // The line's digits.
    ex.after(
        1500,
        Act::Play(fxo_sim::signal(&["dtmf", "159#", "100", "100"])),
    );
    let mut digits = String::new();
    let deadline = Instant::now() + limit;
    while digits.len() < 4 && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match a.wait_event("CALL_DTMF_START", from, left) {
            Some((next, ev)) => {
                from = next;
                digits.push_str(&phone::json_str(&ev, "param").unwrap_or_default());
            }
            None => break,
        }
    }
    assert_eq!(
        digits,
        "159#",
        "the phone received DTMF {digits:?}\n{}{}",
        a.report(),
        server.log_excerpt()
    );
    let heard_before = ex.with(|c| c.heard.len());
    a.command("sndcode", "27*");
    let mut heard = String::new();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let since = ex.with(|c| c.heard.get(heard_before..).unwrap_or_default().to_vec());
        heard = dtmf_heard(&since);
        if heard.len() >= 3 {
            break;
        }
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        heard,
        "27*",
        "the line heard DTMF {heard:?}\n{}{}",
        a.report(),
        server.log_excerpt()
    );
    a.command("hangup", "");
    next_event(&mut a, "CALL_CLOSED", &mut from, limit, &server);
    drop(ex);
}

/// The state of line `name` in `/api/v1/live` (`state`, `detail`), once it is `want` (waits
/// up to 15 s; the last seen otherwise).
fn live_line(server: &Server, name: &str, want: &str) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, body) = common::api_get(server, "/api/v1/live");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let line = v["lines"]
            .as_array()
            .and_then(|ls| ls.iter().find(|l| l["name"] == name).cloned())
            .unwrap_or_default();
        let state = line["state"].as_str().unwrap_or_default().to_owned();
        let detail = line["detail"].as_str().unwrap_or_default().to_owned();
        if state == want || Instant::now() > deadline {
            return (state, detail);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// `pasarela_line_state{line=…,state=…}` from `/metrics`.
fn line_metric(server: &Server, name: &str, state: &str) -> Option<f64> {
    let (_, _, text) = common::http_get(server.web.expect("web"), "/metrics");
    common::metric_sample(
        &text,
        &format!("pasarela_line_state{{line=\"{name}\",kind=\"analog FXO\",state=\"{state}\"}}"),
    )
}

/// fxo1's card reports an alarm (DAHDI_EVENT_ALARM), fxo3's channel cannot be opened (its
/// socket is a plain file), fxo2 is fine. The live API shows fxo1 "alarm", fxo3 "failed"
/// naming its channel, fxo2 "on-hook"; /metrics and the live page say the same. A call skips fxo1 and fxo3
/// (the explanation gives both reasons) and completes on fxo2, where the live API shows "in
/// call". When fxo1's alarm clears (DAHDI_EVENT_NOALARM) it is "on-hook" again and the next
/// call takes it; when fxo3's channel appears, the line opens it by itself (within 10 s).
#[test]
fn an_alarmed_or_unopened_line_is_shown_and_skipped() {
    require_program("baresip", "baresip");
    let _slot = slot();
    let dir = common::TestDir::new("fxo-alarm");
    let (s1, s2, s3) = (
        dir.path().join("fxo1.sock"),
        dir.path().join("fxo2.sock"),
        dir.path().join("fxo3.sock"),
    );
    std::fs::write(&s3, b"not a socket").expect("fxo3 file");
    let ex1 = Exchange::start(&s1, Some(Outgoing::answered()));
    ex1.after(0, Act::Event(ChannelEvent::Alarm));
    let ex2 = Exchange::start(&s2, Some(Outgoing::answered()));
    let (server, mut a) = serve_lines(&[("fxo1", &s1), ("fxo3", &s3), ("fxo2", &s2)], "100");
    let mut admin = common::web_client::set_up_admin(server.web.expect("web"));
    let logs = || server.log_excerpt();
    let (state, detail) = live_line(&server, "fxo1", "alarm");
    assert_eq!(state, "alarm", "fxo1: {detail}\n{}", logs());
    assert!(detail.contains("alarm"), "{detail}");
    let (state, detail) = live_line(&server, "fxo3", "failed");
    assert_eq!(state, "failed", "fxo3: {detail}\n{}", logs());
    assert!(
        detail.contains("fxo3.sock"),
        "fxo3's detail names its channel: {detail}"
    );
    assert_eq!(live_line(&server, "fxo2", "on-hook").0, "on-hook");
    assert_eq!(line_metric(&server, "fxo1", "alarm"), Some(1.0));
    assert_eq!(line_metric(&server, "fxo1", "on-hook"), Some(0.0));
    assert_eq!(line_metric(&server, "fxo3", "failed"), Some(1.0));
    assert_eq!(line_metric(&server, "fxo2", "on-hook"), Some(1.0));
    // The live page shows the same, and the lines only once (not also as SIP trunks).
    let page = admin.get("/live").body;
    for row in [
        "<td>fxo1</td><td>analog FXO</td><td>alarm</td>",
        "<td>fxo3</td><td>analog FXO</td><td>failed</td>",
        "<td>fxo2</td><td>analog FXO</td><td>on-hook</td>",
    ] {
        assert!(page.contains(row), "the live page has no {row}:\n{page}");
    }
    assert_eq!(page.matches("<td>fxo1</td>").count(), 1, "{page}");

    let limit = Duration::from_secs(20);
    let mut from = 0;
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    next_event(&mut a, "CALL_ESTABLISHED", &mut from, limit, &server);
    assert_eq!(live_line(&server, "fxo2", "in call").0, "in call");
    assert_eq!(line_metric(&server, "fxo2", "in call"), Some(1.0));
    assert_eq!(ex1.with(|c| c.seizures), 0, "fxo1 in alarm was seized");
    a.command("hangup", "");
    next_event(&mut a, "CALL_CLOSED", &mut from, limit, &server);
    let recs = records_after(&server.db, 0, 1);
    let (id, rec) = recs
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no record\n{}", logs()));
    assert_eq!(
        (rec.route_target.as_str(), rec.sip_status),
        ("fxo2", 200),
        "{rec:?}"
    );
    assert!(
        rec.explanation.contains("line fxo1 skipped: in alarm"),
        "{}",
        rec.explanation
    );
    assert!(
        rec.explanation
            .contains("line fxo3 skipped: channel not opened"),
        "{}",
        rec.explanation
    );

    // The alarm clears: fxo1 is back and takes the next call.
    ex1.after(0, Act::Event(ChannelEvent::NoAlarm));
    assert_eq!(live_line(&server, "fxo1", "on-hook").0, "on-hook");
    assert!(ex2.wait(limit, |c| !c.off_hook));
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    next_event(&mut a, "CALL_ESTABLISHED", &mut from, limit, &server);
    a.command("hangup", "");
    next_event(&mut a, "CALL_CLOSED", &mut from, limit, &server);
    let recs = records_after(&server.db, id, 1);
    let (_, rec) = recs
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no record\n{}", logs()));
    assert_eq!(
        (rec.route_target.as_str(), rec.sip_status),
        ("fxo1", 200),
        "{rec:?}"
    );
    assert_eq!(ex1.with(|c| c.seizures), 1);

    // fxo3's channel appears (the card is back): the line opens it again by itself.
    std::fs::remove_file(&s3).expect("remove fxo3's file");
    let ex3 = Exchange::start(&s3, None);
    let (state, detail) = live_line(&server, "fxo3", "on-hook");
    assert_eq!(state, "on-hook", "fxo3 not reopened: {detail}\n{}", logs());
    drop((ex1, ex2, ex3));
}

/// The phone's R key, RFC 4733 event 16 (hook flash), during a call on the FXO line reaches
/// the line as a hook flash (DAHDI_HOOK 3; the hook stays off). The phone is sipp here
/// (baresip cannot send event 16): the event's packets go to the relay port of its answer.
#[test]
fn a_hook_flash_from_the_phone_reaches_the_line() {
    require_program("sipp", "sip-tester");
    let _slot = slot();
    let dir = common::TestDir::new("fxo-flash");
    let sock = dir.path().join("fxo1.sock");
    let answered = Outgoing::de(vec![(300, Act::Event(ChannelEvent::Polarity))]);
    let ex = Exchange::start(&sock, Some(answered));
    let server = Server::start(&lines_config(&[("fxo1", &sock)]));
    let number = "03012345678";
    let caller = common::sipp_dial_100(
        &server,
        "caller-100",
        "call_uac_events.xml",
        number,
        server.udp,
        "u1",
        &[],
    );
    // The relay port of the answer, from sipp's scenario log.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut relay_port = None;
    while relay_port.is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        for entry in std::fs::read_dir(server.dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.contains("call_uac_events")
                && name.ends_with(".log")
                && !name.contains("errors")
                && !name.contains("messages")
            {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                relay_port = text
                    .lines()
                    .find_map(|l| l.split("relay_port_to_caller ").nth(1))
                    .and_then(|p| p.trim().parse::<u16>().ok());
            }
        }
    }
    let relay_port = relay_port
        .unwrap_or_else(|| panic!("no answer with a relay port\n{}", server.log_excerpt()));
    assert!(ex.with(|c| c.off_hook), "the line is not in the call");
    // Event 16: three packets, the last with the end bit (RFC 4733 §2.5).
    let phone = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    for (i, end) in [(0u16, false), (1, false), (2, true)] {
        let mut pkt = vec![0x80, 101, 0, 0, 0, 0, 0x03, 0x20, 0x12, 0x34, 0x56, 0x78];
        pkt[1] |= if i == 0 { 0x80 } else { 0 };
        pkt[2..4].copy_from_slice(&(100 + i).to_be_bytes());
        let duration: u16 = 160 * (i + 1);
        pkt.extend_from_slice(&[16, if end { 0x80 | 10 } else { 10 }]);
        pkt.extend_from_slice(&duration.to_be_bytes());
        phone
            .send_to(&pkt, ("127.0.0.1", relay_port))
            .expect("send event");
        thread::sleep(Duration::from_millis(20));
    }
    let flashed = ex.wait(Duration::from_secs(5), |c| c.flashes > 0);
    let caller = caller.wait(Duration::from_secs(30));
    assert!(
        flashed,
        "no hook flash on the line\n{}{}",
        caller.report(),
        server.log_excerpt()
    );
    assert!(caller.success(), "{}", caller.report());
    assert!(
        ex.wait(Duration::from_secs(10), |c| !c.off_hook),
        "line not released"
    );
    let line = ex.finish();
    assert_eq!(line.flashes.len(), 1);
    assert_eq!(
        line.hook_log.iter().map(|h| h.1).collect::<Vec<_>>(),
        [true, false],
        "the hook stayed off through the flash"
    );
}

/// The text of the Lines page's PSTN table cell `class` in the row of `line`.
fn lines_cell(html: &str, line: &str, class: &str) -> Option<String> {
    let row = html.split(&format!("<tr data-line=\"{line}\">")).nth(1)?;
    let row = row.split("</tr>").next()?;
    let cell = row.split(&format!("<td class=\"{class}\">")).nth(1)?;
    Some(cell.split("</td>").next()?.to_owned())
}

/// Issue 17: while a call is up on the file's fxo1, the admin adds fxo2 (a second simulated
/// channel) on the Lines page: a country without a tone plan is refused naming the field,
/// then the line opens without a restart, the page shows it on-hook and managed "web", and
/// the next call (fxo1 is busy) goes out on fxo2; the first call survives. The API: a read
/// token lists both lines (fxo1 from the file) but cannot change one (403); an admin token
/// cannot change the file's line (409), is told which field is wrong (422), and deletes fxo2,
/// which closes it.
#[test]
fn an_fxo_line_added_on_the_page_takes_the_next_call_while_a_call_goes_on() {
    use common::web_client::{csrf_of, set_up_admin};
    require_program("baresip", "baresip");
    let _slot = slot();
    let dir = common::TestDir::new("fxo-web");
    let (s1, s2) = (dir.path().join("fxo1.sock"), dir.path().join("fxo2.sock"));
    let ex1 = Exchange::start(&s1, Some(Outgoing::answered()));
    let ex2 = Exchange::start(&s2, Some(Outgoing::answered()));
    let (server, mut a) = serve_lines(&[("fxo1", &s1)], "100");
    let limit = Duration::from_secs(30);
    let mut c = set_up_admin(server.web.expect("web address"));

    // A call on the file's fxo1, up during the change.
    let mut from_a = 0;
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    next_event(&mut a, "CALL_ESTABLISHED", &mut from_a, limit, &server);
    assert_eq!(ex1.with(|c| c.seizures), 1, "fxo1 did not take the call");

    // fxo2 on the page: a wrong field is named first.
    let page = c.get("/lines");
    assert!(page.body.contains("id=\"fxo-form\""), "{}", page.body);
    let token = csrf_of(&page.body);
    let channel = format!("sim:{}", s2.display());
    let mut form = vec![
        ("csrf", token.as_str()),
        ("name", "fxo2"),
        ("channel", channel.as_str()),
        ("country", "FR"),
        ("caller_id", "auto"),
        ("answer", "polarity"),
        ("disconnect", "battery"),
        ("dial_tone_secs", "2"),
        ("incoming", "101"),
        ("enabled", "1"),
    ];
    let r = c.post("/lines/fxo/save", &form);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("Country (tone plan): "), "{}", r.body);
    form[3].1 = "DE";
    let r = c.post("/lines/fxo/save", &form);
    assert_eq!(r.status, 303, "{}", r.body);

    // It opens without a restart.
    let deadline = Instant::now() + limit;
    loop {
        let page = c.get("/lines");
        let state = lines_cell(&page.body, "fxo2", "state").unwrap_or_default();
        if state == "on-hook" {
            assert_eq!(
                lines_cell(&page.body, "fxo2", "managed").as_deref(),
                Some("web")
            );
            assert_eq!(
                lines_cell(&page.body, "fxo1", "managed").as_deref(),
                Some("from the configuration file")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fxo2 is {state:?}\n{}",
            server.log_excerpt()
        );
        thread::sleep(Duration::from_millis(300));
    }

    // The next call: fxo1 is busy, so it goes out on fxo2; the first call goes on.
    let mut b = Phone::start(
        server.dir(),
        server.udp,
        PhoneCfg {
            name: "102",
            ext: "102",
            answer: "manual",
            tone_hz: 440.0,
            tone_secs: 30.0,
        },
    );
    wait_registered(&server, &mut b, "102");
    let mut from_b = 0;
    b.command("dial", &format!("sip:04012345678@{}", server.udp));
    next_event(&mut b, "CALL_ESTABLISHED", &mut from_b, limit, &server);
    assert_eq!(ex2.with(|c| c.seizures), 1, "fxo2 did not take the call");
    assert_eq!(
        ex1.with(|c| c.seizures),
        1,
        "fxo1 was seized again or re-opened"
    );
    assert!(
        a.wait_event("CALL_CLOSED", from_a, Duration::ZERO)
            .is_none(),
        "the call on fxo1 was dropped\n{}",
        server.log_excerpt()
    );
    b.command("hangup", "");
    next_event(&mut b, "CALL_CLOSED", &mut from_b, limit, &server);
    a.command("hangup", "");
    next_event(&mut a, "CALL_CLOSED", &mut from_a, limit, &server);
    let recs = records_after(&server.db, 0, 2);
    let mut targets: Vec<&str> = recs.iter().map(|r| r.1.route_target.as_str()).collect();
    targets.sort_unstable();
    assert_eq!(targets, ["fxo1", "fxo2"], "{recs:?}");

    // The API.
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    use pasarela::web::api_tokens::{create_scoped, Scope};
    let read = create_scoped(&conn, "monitoring", Scope::Read).unwrap();
    let admin = create_scoped(&conn, "provisioning", Scope::Admin).unwrap();
    let r = c.api_json("GET", "/api/v1/lines/fxo", &read, "");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let lines = v["lines"].as_array().expect("lines");
    let of = |n: &str| lines.iter().find(|l| l["name"] == n).cloned();
    let (l1, l2) = (of("fxo1").expect("fxo1"), of("fxo2").expect("fxo2"));
    assert_eq!(l1["from_file"], serde_json::Value::Bool(true), "{}", r.body);
    assert_eq!(
        l2["from_file"],
        serde_json::Value::Bool(false),
        "{}",
        r.body
    );
    assert_eq!(l2["settings"]["answer"], "polarity", "{}", r.body);
    let body = r#"{"channel":"7","enabled":false}"#;
    let r = c.api_json("PUT", "/api/v1/lines/fxo/fxo3", &read, body);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = c.api_json("PUT", "/api/v1/lines/fxo/fxo1", &admin, body);
    assert_eq!(r.status, 409, "the file's line: {}", r.body);
    let r = c.api_json(
        "PUT",
        "/api/v1/lines/fxo/fxo3",
        &admin,
        r#"{"channel":"x"}"#,
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("\"field\":\"channel\""), "{}", r.body);
    let r = c.api_json("DELETE", "/api/v1/lines/fxo/fxo2", &read, "");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = c.api_json("DELETE", "/api/v1/lines/fxo/fxo2", &admin, "");
    assert_eq!(r.status, 204, "{}", r.body);
    let deadline = Instant::now() + limit;
    while live_has(&server, "fxo2") {
        assert!(
            Instant::now() < deadline,
            "fxo2 still runs after its deletion\n{}",
            server.log_excerpt()
        );
        thread::sleep(Duration::from_millis(300));
    }
    drop(b);
}

/// Whether the live API lists the line `name`.
fn live_has(server: &Server, name: &str) -> bool {
    let (_, _, body) = common::api_get(server, "/api/v1/live");
    body.contains(&format!("\"name\":\"{name}\""))
}

/// Issue 17's leftover: per-line limits on the Lines page. fxo1 (the file's) is in alarm, so
/// calls go out on fxo2, added on the page; a limit that is not a number is refused naming its
/// field, then "1 call per minute" is set on fxo2 and applied without a restart: the first call
/// goes out on fxo2, the next one within the minute is refused with 403 naming the limit and
/// recorded as refused. The form shows the stored limit; the API reads it back.
#[test]
fn a_limit_set_on_the_page_refuses_the_next_call_over_it() {
    use common::web_client::{csrf_of, set_up_admin};
    require_program("baresip", "baresip");
    let _slot = slot();
    let dir = common::TestDir::new("fxo-limit");
    let (s1, s2) = (dir.path().join("fxo1.sock"), dir.path().join("fxo2.sock"));
    let ex1 = Exchange::start(&s1, Some(Outgoing::answered()));
    ex1.after(0, Act::Event(ChannelEvent::Alarm));
    let ex2 = Exchange::start(&s2, Some(Outgoing::answered()));
    let (server, mut a) = serve_lines(&[("fxo1", &s1)], "100");
    let limit = Duration::from_secs(30);
    let mut c = set_up_admin(server.web.expect("web address"));
    assert_eq!(live_line(&server, "fxo1", "alarm").0, "alarm");

    let page = c.get("/lines");
    let token = csrf_of(&page.body);
    let channel = format!("sim:{}", s2.display());
    let mut form = vec![
        ("csrf", token.as_str()),
        ("name", "fxo2"),
        ("channel", channel.as_str()),
        ("country", "DE"),
        ("caller_id", "auto"),
        ("answer", "polarity"),
        ("incoming", "100"),
        ("enabled", "1"),
        ("calls_per_minute", "many"),
    ];
    let r = c.post("/lines/fxo/save", &form);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("Calls per minute: "), "{}", r.body);
    form[8].1 = "1";
    let r = c.post("/lines/fxo/save", &form);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(live_line(&server, "fxo2", "on-hook").0, "on-hook");
    let deadline = Instant::now() + limit;
    while !std::fs::read_to_string(server.log_path())
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("line limits applied") && l.contains("lines=1"))
    {
        assert!(
            Instant::now() < deadline,
            "the limit was not applied\n{}",
            server.log_excerpt()
        );
        thread::sleep(Duration::from_millis(200));
    }
    // The edit form shows the stored limit.
    let page = c.get("/lines?edit_fxo=fxo2");
    assert!(
        page.body.contains("name=\"calls_per_minute\" value=\"1\""),
        "{}",
        page.body
    );

    // The first call of the minute goes out on fxo2.
    let mut from = 0;
    a.command("dial", &format!("sip:03012345678@{}", server.udp));
    next_event(&mut a, "CALL_ESTABLISHED", &mut from, limit, &server);
    a.command("hangup", "");
    next_event(&mut a, "CALL_CLOSED", &mut from, limit, &server);
    let recs = records_after(&server.db, 0, 1);
    let (id, rec) = recs.last().cloned().expect("the first call's record");
    assert_eq!(
        (rec.route_target.as_str(), rec.sip_status),
        ("fxo2", 200),
        "{rec:?}"
    );
    assert!(ex2.wait(limit, |l| !l.off_hook));

    // The next one is over fxo2's limit: refused, and recorded so.
    a.command("dial", &format!("sip:03012345679@{}", server.udp));
    let closed = next_event(&mut a, "CALL_CLOSED", &mut from, limit, &server);
    assert!(closed.contains("403"), "{closed}");
    let recs = records_after(&server.db, id, 1);
    let (_, rec) = recs.last().cloned().expect("the refused call's record");
    assert_eq!(rec.sip_status, 403, "{rec:?}");
    assert_eq!(rec.disposition, "failed", "{rec:?}");
    assert!(
        rec.explanation
            .contains("Limit reached: 1 call per minute (trunk fxo2)"),
        "{rec:?}"
    );
    assert_eq!(
        ex2.with(|c| c.seizures),
        1,
        "fxo2 was seized over its limit"
    );

    // The API reads the limit back.
    let conn = rusqlite::Connection::open(&server.db).unwrap();
    use pasarela::web::api_tokens::{create_scoped, Scope};
    let read = create_scoped(&conn, "monitoring", Scope::Read).unwrap();
    let r = c.api_json("GET", "/api/v1/lines/fxo/fxo2", &read, "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("\"limits\":{\"calls_per_minute\":1}"),
        "{}",
        r.body
    );
    drop((ex1, ex2));
}
