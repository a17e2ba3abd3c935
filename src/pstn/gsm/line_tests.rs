//! Tests of the line machine against a scripted modem answering in the Huawei dialect.

use super::*;
use crate::pstn::gsm::at::Frame;
use crate::pstn::gsm::at::LineSplitter;

struct Rig {
    m: LineMachine,
    now: Instant,
    sent: Vec<String>,
    split: LineSplitter,
    /// When false the fake modem ignores every command.
    alive: bool,
    /// Extra lines for a command (besides OK).
    busy_dial: bool,
}

impl Rig {
    fn new(profile: &str) -> Rig {
        let now = Instant::now();
        let mut m = LineMachine::new(LineConfig::new("gsm1"), Profile::builtin(profile).unwrap());
        m.port_opened("/dev/a", "/dev/b", now);
        let mut r = Rig {
            m,
            now,
            sent: Vec::new(),
            split: LineSplitter::new(),
            alive: true,
            busy_dial: false,
        };
        r.pump();
        assert_eq!(r.m.status().state, LineState::Idle);
        r
    }

    /// Answers every command the machine sent, until it sends no more.
    fn pump(&mut self) {
        while let Some(bytes) = self.m.poll_transmit() {
            let mut frames = Vec::new();
            self.split.push(&bytes, &mut frames);
            for f in frames {
                let Frame::Line(cmd) = f else { continue };
                self.sent.push(cmd.clone());
                if !self.alive {
                    continue;
                }
                let reply = self.reply(&cmd);
                self.m.handle_input(reply.as_bytes(), self.now);
            }
        }
    }

    fn reply(&self, cmd: &str) -> String {
        let body: &[&str] = match cmd {
            "AT+CGSN" => &["353142034567891"],
            "AT^ICCID?" => &["^ICCID: 8949226012345678901F"],
            "AT+CPIN?" => &["+CPIN: READY"],
            "AT+CREG?" => &["+CREG: 2,1,\"00C3\",\"0000B2A1\""],
            "AT+COPS?" => &["+COPS: 0,0,\"Vodafone.de\",2"],
            "AT+CSQ" => &["+CSQ: 20,99"],
            "AT^CVOICE?" => &["^CVOICE:0,8000,16,20"],
            _ => &[],
        };
        let mut s = String::new();
        for l in body {
            s.push_str(&format!("\r\n{l}\r\n"));
        }
        if cmd.starts_with("ATD") && self.busy_dial {
            s.push_str("\r\nBUSY\r\n");
        } else {
            s.push_str("\r\nOK\r\n");
        }
        s
    }

    fn urc(&mut self, line: &str) {
        self.m
            .handle_input(format!("\r\n{line}\r\n").as_bytes(), self.now);
        self.pump();
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            match self.m.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.m.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    fn events(&mut self) -> Vec<LineEvent> {
        std::iter::from_fn(|| self.m.poll_event()).collect()
    }
}

#[test]
fn init_fills_the_status() {
    let r = Rig::new("huawei");
    let s = r.m.status();
    assert_eq!(s.imei.as_deref(), Some("353142034567891"));
    assert_eq!(s.iccid.as_deref(), Some("8949226012345678901"));
    assert_eq!(s.operator.as_deref(), Some("Vodafone.de"));
    assert_eq!(s.signal_dbm, Some(-73));
    assert_eq!(s.registration, Registration::Home);
    assert_eq!(s.sim.as_deref(), Some("READY"));
    assert_eq!(s.voice, Some(true));
    assert!(r.sent.iter().any(|c| c == "AT+CLIP=1"));
}

#[test]
fn outgoing_answered_then_remote_hangup() {
    let mut r = Rig::new("huawei");
    let id = r.m.dial("015112345678", r.now).unwrap();
    assert_eq!(r.m.dial("1", r.now), Err(LineError::Busy("gsm1".into())));
    r.pump();
    assert!(r.sent.iter().any(|c| c == "ATD015112345678;"));
    r.urc("^ORIG:1,0");
    r.urc("^CONF:1");
    assert_eq!(r.m.status().state, LineState::Alerting);
    // Early audio: routed right after ATD, so ring-back reaches the caller.
    assert_eq!(r.sent.iter().filter(|c| *c == "AT^DDSETEX=2").count(), 1);
    r.urc("^CONN:1,0");
    assert_eq!(r.sent.iter().filter(|c| *c == "AT^DDSETEX=2").count(), 1);
    r.m.send_dtmf(id, '7', r.now).unwrap();
    r.pump();
    assert!(r.sent.iter().any(|c| c == "AT^DTMF=1,7"));
    r.urc("^CEND:1,36,104,16");
    let ev = r.events();
    assert_eq!(
        ev,
        vec![
            LineEvent::Call(id, CallProgress::Proceeding),
            LineEvent::AudioStart(id),
            LineEvent::Call(id, CallProgress::EarlyMedia),
            LineEvent::Call(id, CallProgress::Ringing),
            LineEvent::Call(id, CallProgress::Answered),
            LineEvent::AudioStop(id),
            LineEvent::Call(
                id,
                CallProgress::Ended(EndCause {
                    network_secs: Some(36),
                    ..EndCause::from_q850(16, true)
                })
            ),
        ]
    );
    assert_eq!(r.m.status().state, LineState::Idle);
    assert_eq!(
        (r.m.status().calls_served, r.m.status().calls_answered),
        (1, 1)
    );
}

#[test]
fn outgoing_busy_and_no_answer_map_to_sip() {
    let mut r = Rig::new("huawei");
    let id = r.m.dial("0301234567", r.now).unwrap();
    r.pump();
    r.urc("^ORIG:1,0");
    r.urc("^CEND:1,0,104,17");
    let end = r.events().into_iter().find_map(|e| match e {
        LineEvent::Call(i, CallProgress::Ended(c)) if i == id => Some(c),
        _ => None,
    });
    assert_eq!(
        end.map(|c| (c.reason, c.sip_status)),
        Some((EndReason::Busy, 486))
    );

    let id = r.m.dial("0301234567", r.now).unwrap();
    r.pump();
    r.urc("^ORIG:1,0");
    r.urc("^CONF:1");
    r.urc("^CEND:1,0,104,19");
    let end = r.events().into_iter().find_map(|e| match e {
        LineEvent::Call(i, CallProgress::Ended(c)) if i == id => Some(c),
        _ => None,
    });
    assert_eq!(
        end.map(|c| (c.reason, c.sip_status, c.q850)),
        Some((EndReason::NoAnswer, 480, 19))
    );

    // A modem that gives BUSY as the result of ATD.
    r.busy_dial = true;
    let id = r.m.dial("0301234567", r.now).unwrap();
    r.pump();
    let end = r.events().into_iter().find_map(|e| match e {
        LineEvent::Call(i, CallProgress::Ended(c)) if i == id => Some(c),
        _ => None,
    });
    assert_eq!(end.map(|c| c.sip_status), Some(486));
    assert_eq!(r.m.status().state, LineState::Idle);
}

#[test]
fn local_hangup() {
    let mut r = Rig::new("huawei");
    let id = r.m.dial("0301234567", r.now).unwrap();
    r.pump();
    r.urc("^CONN:1,0");
    r.events();
    r.m.hangup(id, r.now).unwrap();
    r.pump();
    assert!(r.sent.iter().any(|c| c == "AT+CHUP"));
    let ev = r.events();
    assert!(ev.contains(&LineEvent::AudioStop(id)));
    assert!(ev.iter().any(|e| matches!(e, LineEvent::Call(i, CallProgress::Ended(c)) if *i == id && c.reason == EndReason::LocalHangup && c.answered)));
    // The ^CEND that follows is ignored.
    r.urc("^CEND:1,5,104,16");
    assert!(r.events().is_empty());
}

#[test]
fn incoming_ring_clip_answer() {
    let mut r = Rig::new("huawei");
    r.urc("RING");
    r.urc("+CLIP: \"+4915112345678\",145,,,,0");
    r.urc("RING");
    let ev = r.events();
    let id = match &ev[..] {
        [LineEvent::Incoming { call, number, toa }] => {
            assert_eq!(number.as_deref(), Some("+4915112345678"));
            assert_eq!(*toa, Some(145));
            *call
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(r.m.status().state, LineState::Incoming);
    r.m.answer(id, r.now).unwrap();
    r.pump();
    assert!(r.sent.iter().any(|c| c == "ATA"));
    assert!(r.sent.iter().any(|c| c == "AT^DDSETEX=2"));
    assert_eq!(r.m.status().state, LineState::Active);
    r.urc("^CONN:1,1");
    r.urc("^CEND:1,20,104,16");
    let ev = r.events();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, LineEvent::Call(_, CallProgress::Answered)))
            .count(),
        1
    );
    assert!(ev.iter().any(
        |e| matches!(e, LineEvent::Call(_, CallProgress::Ended(c)) if c.reason == EndReason::Normal)
    ));
}

#[test]
fn incoming_without_clip_and_caller_gives_up() {
    let mut r = Rig::new("huawei");
    r.urc("RING");
    assert!(r.events().is_empty());
    r.advance(Duration::from_secs(1));
    let ev = r.events();
    assert!(
        matches!(&ev[..], [LineEvent::Incoming { number: None, .. }]),
        "{ev:?}"
    );
    r.advance(Duration::from_secs(13));
    let ev = r.events();
    assert!(ev.iter().any(|e| matches!(e, LineEvent::Call(_, CallProgress::Ended(c)) if c.reason == EndReason::CallerGaveUp && c.sip_status == 487)), "{ev:?}");
    assert_eq!(r.m.status().state, LineState::Idle);
}

#[test]
fn watchdog_resets_a_silent_modem_and_the_line_comes_back() {
    let mut r = Rig::new("huawei");
    let id = r.m.dial("0301234567", r.now).unwrap();
    r.pump();
    r.urc("^CONN:1,0");
    r.events();
    r.alive = false;
    r.advance(Duration::from_secs(60));
    let ev = r.events();
    assert!(ev.iter().any(|e| matches!(e, LineEvent::Call(i, CallProgress::Ended(c)) if *i == id && c.reason == EndReason::ModemLost)), "{ev:?}");
    assert!(ev.iter().any(|e| matches!(e, LineEvent::Reopen { .. })));
    assert!(r.sent.iter().any(|c| c == "AT+CFUN=1,1"));
    assert_eq!(r.m.status().state, LineState::Resetting);
    assert_eq!(r.m.status().resets, 1);
    // The shell re-opens the ports.
    r.m.port_closed("reset", r.now);
    r.alive = true;
    r.m.port_opened("/dev/a", "/dev/b", r.now);
    r.pump();
    assert_eq!(r.m.status().state, LineState::Idle);
    assert!(r.m.dial("0301234567", r.now).is_ok());
}

#[test]
fn port_loss_mid_call_ends_it() {
    let mut r = Rig::new("huawei");
    let id = r.m.dial("0301234567", r.now).unwrap();
    r.pump();
    r.urc("^CONN:1,0");
    r.events();
    r.m.port_closed("read error", r.now);
    let ev = r.events();
    assert!(ev.iter().any(|e| matches!(e, LineEvent::Call(i, CallProgress::Ended(c)) if *i == id && c.reason == EndReason::ModemLost && c.answered)));
    assert_eq!(
        r.m.dial("1", r.now),
        Err(LineError::NotReady("gsm1".into()))
    );
}

#[test]
fn not_registered_is_failed() {
    let mut r = Rig::new("huawei");
    r.urc("+CREG: 3");
    assert_eq!(r.m.status().state, LineState::Failed);
    assert!(r.m.dial("1", r.now).is_err());
    r.urc("+CREG: 5");
    assert_eq!(r.m.status().state, LineState::Idle);
}

#[test]
fn clcc_profile_polls_call_state() {
    let mut r = Rig::new("quectel-ec25");
    let id = r.m.dial("0301234567", r.now).unwrap();
    r.pump();
    // The fake answers AT+CLCC with OK and no entries unless told: feed states by URC form.
    r.urc("+CLCC: 1,0,3,0,0,\"0301234567\",129");
    r.urc("+CLCC: 1,0,0,0,0,\"0301234567\",129");
    assert!(r.sent.iter().any(|c| c == "AT+QPCMV=1,0"));
    r.urc("NO CARRIER");
    let ev = r.events();
    assert!(ev.contains(&LineEvent::Call(id, CallProgress::Ringing)));
    assert!(ev.contains(&LineEvent::Call(id, CallProgress::Answered)));
    assert!(ev.iter().any(|e| matches!(e, LineEvent::Call(i, CallProgress::Ended(c)) if *i == id && c.reason == EndReason::Normal)));
    assert!(r.sent.iter().any(|c| c == "AT+QPCMV=0"));
}

#[test]
fn bad_numbers_are_refused() {
    let mut r = Rig::new("huawei");
    assert_eq!(
        r.m.dial("030;+CFUN=0", r.now),
        Err(LineError::BadNumber("030;+CFUN=0".into()))
    );
}

#[test]
fn simcom_voice_call_urcs() {
    let mut r = Rig::new("simcom-sim7600");
    assert!(r.sent.iter().any(|c| c == "AT+CLCC=1"));
    let id = r.m.dial("+4930123456", r.now).unwrap();
    r.pump();
    assert!(r.sent.iter().any(|c| c == "ATD+4930123456;"));
    r.urc("+CLCC: 1,0,2,0,0,\"+4930123456\",145");
    r.urc("+CLCC: 1,0,3,0,0,\"+4930123456\",145");
    r.urc("VOICE CALL: BEGIN");
    r.urc("+CLCC: 1,0,0,0,0,\"+4930123456\",145");
    assert!(r.sent.iter().any(|c| c == "AT+CPCMREG=1"));
    r.m.send_dtmf(id, '#', r.now).unwrap();
    r.pump();
    assert!(r.sent.iter().any(|c| c == "AT+VTS=#"));
    r.urc("VOICE CALL: END: 000012");
    r.urc("+CLCC: 1,0,6,0,0,\"+4930123456\",145");
    r.urc("NO CARRIER");
    let ev = r.events();
    let answered = ev
        .iter()
        .filter(|e| matches!(e, LineEvent::Call(_, CallProgress::Answered)))
        .count();
    let ended: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            LineEvent::Call(i, CallProgress::Ended(c)) if *i == id => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(answered, 1);
    assert_eq!(ended.len(), 1, "{ev:?}");
    assert_eq!(ended[0].reason, EndReason::Normal);
    assert!(r.sent.iter().any(|c| c == "AT+CPCMREG=0,1"));
    assert_eq!(r.m.status().state, LineState::Idle);
}

#[test]
fn clcc_poll_with_no_calls_ends_an_unanswered_dial() {
    let mut r = Rig::new("quectel-ec25");
    let id = r.m.dial("0301234567", r.now).unwrap();
    r.pump();
    // The fake answers AT+CLCC with a bare OK: the call is gone before it was answered.
    r.advance(Duration::from_millis(600));
    assert!(r.sent.iter().any(|c| c == "AT+CLCC"));
    let ev = r.events();
    assert!(
        ev.iter().any(|e| matches!(e, LineEvent::Call(i, CallProgress::Ended(c)) if *i == id && c.sip_status == 480)),
        "{ev:?}"
    );
}

#[test]
fn call_waiting_urcs_do_not_disturb_the_call() {
    let mut r = Rig::new("huawei");
    let id = r.m.dial("0301234567", r.now).unwrap();
    r.pump();
    r.urc("^ORIG:1,0");
    r.urc("^CONN:1,0");
    r.events();
    // A second call knocks and goes away.
    r.urc("RING");
    r.urc("+CLIP: \"+4917000000\",145,,,,0");
    r.urc("^CEND:2,0,104,16");
    assert!(r.events().is_empty());
    assert_eq!(r.m.current_call(), Some(id));
    assert_eq!(r.m.status().state, LineState::Active);
}

#[test]
fn random_modem_output_never_panics() {
    let pieces: &[&[u8]] = &[
        b"RING\r\n",
        b"+CLIP: \"+49\",145,,,,0\r\n",
        b"+CLIP: ,,\r\n",
        b"^ORIG:1,0\r\n",
        b"^CONF:1\r\n",
        b"^CONN:1,0\r\n",
        b"^CEND:1,2,3,17\r\n",
        b"^CEND:\r\n",
        b"+CLCC: 1,0,0,0,0,\"1\",129\r\n",
        b"+CLCC: 9\r\n",
        b"NO CARRIER\r\n",
        b"BUSY\r\n",
        b"OK\r\n",
        b"ERROR\r\n",
        b"+CME ERROR: 3\r\n",
        b"> ",
        b"\xff\xfe\x00",
        b"\r\n",
        b"+CREG: 9\r\n",
        b"^RSSI:99\r\n",
        b"VOICE CALL: BEGIN\r\n",
        b"AT+CSQ\r",
    ];
    for profile in ["huawei", "quectel-ec25", "simcom-sim7600"] {
        let mut r = Rig::new(profile);
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let piece = pieces[(x % pieces.len() as u64) as usize];
            r.m.handle_input(piece, r.now);
            match (x >> 8) % 16 {
                0 => {
                    let _ = r.m.dial("0301234567", r.now);
                }
                1 => {
                    if let Some(c) = r.m.current_call() {
                        let _ = r.m.hangup(c, r.now);
                    }
                }
                2 => {
                    if let Some(c) = r.m.current_call() {
                        let _ = r.m.answer(c, r.now);
                        let _ = r.m.send_dtmf(c, '1', r.now);
                    }
                }
                3 => r.advance(Duration::from_millis((x >> 16) % 3000)),
                _ => {}
            }
            // Drain what the machine wants written (the fake answers it) and its events.
            if step % 7 == 0 {
                r.pump();
            }
            r.events();
        }
    }
}

#[test]
fn an_hour_long_call_keeps_probing_without_piling_up() {
    let mut r = Rig::new("huawei");
    let id = r.m.dial("0301234567", r.now).unwrap();
    r.pump();
    r.urc("^CONN:1,0");
    r.events();
    let before = r.sent.len();
    for _ in 0..240 {
        r.advance(Duration::from_secs(15));
        r.urc("^RSSI:17");
    }
    // One probe round (4 commands) per 15 s, all answered: nothing queued, call still up.
    let probes = r.sent.len() - before;
    assert!((900..=1000).contains(&probes), "{probes}");
    assert_eq!(r.m.at.pending(), 0);
    assert_eq!(r.m.current_call(), Some(id));
    assert_eq!(r.m.status().state, LineState::Active);
    assert_eq!(r.m.status().csq, Some(17)); // the latest ^RSSI
    assert!(r.events().is_empty());
}

/// Sends what the machine transmitted to a scripted modem answering `answer` to each command;
/// the commands.
fn exchange(m: &mut LineMachine, now: Instant, answer: impl Fn(&str) -> String) -> Vec<String> {
    let mut sent = Vec::new();
    let mut split = LineSplitter::new();
    while let Some(bytes) = m.poll_transmit() {
        let mut frames = Vec::new();
        split.push(&bytes, &mut frames);
        for f in frames {
            let Frame::Line(cmd) = f else { continue };
            m.handle_input(answer(&cmd).as_bytes(), now);
            sent.push(cmd);
        }
    }
    sent
}

#[test]
fn a_message_is_read_and_deleted_once_though_announced_twice() {
    let mut r = Rig::new("huawei");
    r.events();
    let now = r.now;
    let modem = |pdu: &'static str| {
        move |cmd: &str| {
            if cmd == "AT+CMGR=3" {
                format!("\r\n+CMGR: 1,,5\r\n{pdu}\r\nOK\r\n")
            } else {
                "\r\nOK\r\n".to_owned()
            }
        }
    };
    // Announced twice (a repeated +CMTI, or a listing and a +CMTI): read once.
    r.m.handle_input(b"\r\n+CMTI: \"SM\",3\r\n+CMTI: \"SM\",3\r\n", now);
    let sent = exchange(&mut r.m, now, modem("00AA"));
    assert_eq!(sent, vec!["AT+CMGR=3", "AT+CMGR=3"]);
    let reads: Vec<_> = std::iter::from_fn(|| r.m.poll_event())
        .filter(|e| matches!(e, LineEvent::SmsRead { .. }))
        .collect();
    assert_eq!(
        reads,
        vec![LineEvent::SmsRead {
            index: 3,
            pdu: "00AA".into()
        }]
    );
    // Deleted once, though asked twice before the first delete was done.
    r.m.delete_sms(3, now);
    r.m.delete_sms(3, now);
    assert_eq!(exchange(&mut r.m, now, modem("00AA")), vec!["AT+CMGD=3"]);
    // The index is free: a new message there is read.
    r.m.handle_input(b"\r\n+CMTI: \"SM\",3\r\n", now);
    assert_eq!(exchange(&mut r.m, now, modem("00BB")), vec!["AT+CMGR=3"]);
    assert!(std::iter::from_fn(|| r.m.poll_event()).any(|e| e
        == LineEvent::SmsRead {
            index: 3,
            pdu: "00BB".into()
        }));
}
