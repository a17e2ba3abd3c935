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
        let mut line = Line {
            frame: 0,
            off_hook: false,
            hook_log: Vec::new(),
            heard: Vec::new(),
            play: Default::default(),
            events: Vec::new(),
        };
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
                        line.off_hook = i32::from_le_bytes(v) == 1;
                        line.hook_log.push((line.frame, line.off_hook));
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
