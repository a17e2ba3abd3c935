//! RTP injection and hijack through the media relay, end to end: two real softphones (baresip,
//! headless; harness in tests/phone) talk through pasarela, 100 playing 1000 Hz and 101 playing
//! 440 Hz. Mid-call a third loopback address, 127.0.0.9, sprays loud 1700 Hz G.711 RTP (and
//! RTCP) at every port of the configured RTP range — what an attacker who cannot see the SDP
//! does. The relay is locked to the phones by then: nothing of the phones' media is diverted to
//! the attacker (which listens for it), the phones hear only each other (Goertzel analysis of
//! what each recorded), the live API counts the dropped packets for the call, and the call goes
//! on undisturbed.
mod common;
mod phone;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{call_config, require_program, rtp_port_range, Server};
use pasarela::media::{g711, rtp::write_header};
use phone::*;

const CALL_SETUP: Duration = Duration::from_secs(15);
const ATTACK_HZ: f64 = 1700.0;

/// One 20 ms packet of a full-scale `ATTACK_HZ` tone in µ-law.
fn attack_packet(seq: u16, ts: u32) -> Vec<u8> {
    let mut p = vec![0u8; 12 + 160];
    write_header(&mut p, false, 0, seq, ts, 0x0bad_cafe).expect("header");
    for (i, b) in p[12..].iter_mut().enumerate() {
        let t = (ts as usize + i) as f64 / 8000.0;
        let v = (2.0 * std::f64::consts::PI * ATTACK_HZ * t).sin() * 30000.0;
        *b = g711::linear_to_ulaw(v as i16);
    }
    p
}

/// Sprays RTP at the even and RTCP at the odd ports of `range` from 127.0.0.9 until `stop`;
/// returns what it sent and the RTP/RTCP datagrams it got back (a hijacked stream).
fn spray(range: (u16, u16), stop: Arc<AtomicBool>) -> thread::JoinHandle<(u64, u64)> {
    thread::spawn(move || {
        let s = UdpSocket::bind("127.0.0.9:0").expect("bind 127.0.0.9");
        s.set_nonblocking(true).expect("nonblocking");
        let rr = [0x80u8, 201, 0, 1, 0x0b, 0xad, 0xca, 0xfe];
        let (mut seq, mut ts, mut sent, mut got) = (1000u16, 0u32, 0u64, 0u64);
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let pkt = attack_packet(seq, ts);
            for port in range.0..=range.1 {
                let to = SocketAddr::from(([127, 0, 0, 1], port));
                let data: &[u8] = if port % 2 == 0 { &pkt } else { &rr };
                // Closed ports answer with ICMP; the next send may report it: ignore.
                let _ = s.send_to(data, to);
                sent += 1;
            }
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
            thread::sleep(Duration::from_millis(20));
            loop {
                match s.recv_from(&mut buf) {
                    Ok((n, _)) if n >= 8 && buf[0] >> 6 == 2 => got += 1,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    // ICMP port unreachable from the closed ports of the range.
                    Err(_) => {}
                }
            }
        }
        (sent, got)
    })
}

/// `rtp_foreign_dropped` of the (only) call in `/api/v1/live`, once it is above zero.
fn foreign_dropped(server: &Server, token: &str) -> u64 {
    let web = server.web.expect("web address");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = std::net::TcpStream::connect(web).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            stream,
            "GET /api/v1/live HTTP/1.1\r\nHost: {web}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        let n = body
            .split("\"rtp_foreign_dropped\":")
            .nth(1)
            .and_then(|rest| {
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                digits.parse::<u64>().ok()
            });
        if let Some(n) = n.filter(|n| *n > 0) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "the live API shows no dropped foreign packets:\n{body}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_third_address_spraying_rtp_mid_call_changes_nothing_the_phones_hear() {
    require_program("baresip", "baresip");
    let range = rtp_port_range();
    let mut server = Server::start(&call_config("", range));
    let token = {
        let conn = rusqlite::Connection::open(&server.db).expect("db");
        pasarela::web::api_tokens::create(&conn, "test").expect("token")
    };
    let base = server.dir().to_path_buf();
    let mut a = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "100",
            ext: "100",
            answer: "manual",
            tone_hz: 1000.0,
            tone_secs: 6.0,
        },
    );
    let mut b = Phone::start(
        &base,
        server.udp,
        PhoneCfg {
            name: "101",
            ext: "101",
            answer: "auto",
            tone_hz: 440.0,
            tone_secs: 8.0,
        },
    );
    wait_registered(&server, &mut a, "100");
    wait_registered(&server, &mut b, "101");

    a.command("dial", &format!("sip:101@{}", server.udp));
    b.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&a], &server);
    a.expect_event("CALL_ESTABLISHED", CALL_SETUP, &[&b], &server);
    // Both phones' media has flowed and is locked (each phone has taken RTP from the relay,
    // which the relay had from the other phone: both legs are latched); then the attack, for
    // about 3 s. Sprayed before a leg latched, the attack would latch it instead.
    b.expect_event("CALL_RTPESTAB", CALL_SETUP, &[&a], &server);
    a.expect_event("CALL_RTPESTAB", CALL_SETUP, &[&b], &server);
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = spray(range, Arc::clone(&stop));
    thread::sleep(Duration::from_millis(1500));
    let dropped = foreign_dropped(&server, &token);
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (sent, got_back) = attacker.join().expect("attacker");

    // 100's file ends after 6 s and it hangs up.
    a.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&b], &server);
    b.expect_event("CALL_CLOSED", Duration::from_secs(10), &[&a], &server);
    thread::sleep(Duration::from_millis(500));

    let logs = format!(
        "attacker sent {sent} datagrams and got {got_back} back, live API counted {dropped} \
         dropped\n{}{}{}",
        a.report(),
        b.report(),
        server.log_excerpt()
    );
    // Nothing of the phones' media was diverted to the attacker (no re-latching) …
    assert_eq!(got_back, 0, "{logs}");
    // … and assert_tone wants the phone's tone 20× stronger than every other probe, 1700 Hz included.
    assert!(PROBES.contains(&ATTACK_HZ));
    assert_tone(&a.received_wav(), 440.0, "100 (caller) received", &logs);
    assert_tone(&b.received_wav(), 1000.0, "101 (callee) received", &logs);
    let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    assert!(
        log.contains("RTP from a foreign source dropped") && log.contains("127.0.0.9"),
        "{logs}"
    );
    server.assert_alive();
}
