//! Replays recorded AT dialogues (files under `transcripts/`) through the engine.
//!
//! Format, one item per line: `> CMD` the engine is given CMD and must send it; `< LINE` the
//! modem sends `\r\nLINE\r\n`; `<e LINE` the modem echoes `LINE\r`; `<raw TEXT` the modem sends
//! TEXT with `\r`/`\n` escapes; `@ MS` time advances by MS milliseconds; `= EVENT` the next event
//! (`R <cmd> <outcome> [| info lines]` or `U <Urc as Debug>`); `#` comments.

use std::time::{Duration, Instant};

use super::*;

fn fmt_event(e: &AtEvent<()>) -> String {
    match e {
        AtEvent::Response(r) => {
            let outcome = match &r.outcome {
                Outcome::Final(f) => f.to_string(),
                Outcome::Timeout => "TIMEOUT".into(),
                Outcome::Cancelled => "CANCELLED".into(),
            };
            let mut s = format!("R {} {}", r.command, outcome);
            for l in &r.lines {
                s.push_str(" | ");
                s.push_str(l);
            }
            s
        }
        AtEvent::Urc(u) => format!("U {u:?}"),
    }
}

fn replay(name: &str, text: &str) {
    let mut engine: AtEngine<()> = AtEngine::new();
    let mut now = Instant::now();
    for (n, raw) in text.lines().enumerate() {
        let at = format!("{name}:{}", n + 1);
        let line = raw.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            ">" => {
                engine.enqueue(
                    Command::new(rest, ())
                        .timeout(Duration::from_secs(2))
                        .expect(expect_for(rest)),
                    now,
                );
                let sent = engine
                    .poll_transmit()
                    .map(|b| String::from_utf8_lossy(&b).into_owned());
                assert_eq!(sent.as_deref(), Some(format!("{rest}\r").as_str()), "{at}");
            }
            "<" => engine.handle_input(format!("\r\n{rest}\r\n").as_bytes(), now),
            "<e" => engine.handle_input(format!("{rest}\r").as_bytes(), now),
            "<raw" => engine.handle_input(
                rest.replace("\\r", "\r").replace("\\n", "\n").as_bytes(),
                now,
            ),
            "@" => {
                now += Duration::from_millis(rest.parse().expect("ms"));
                engine.handle_timeout(now);
            }
            "=" => {
                let got = engine.poll_event().map(|e| fmt_event(&e));
                assert_eq!(got.as_deref(), Some(rest), "{at}");
            }
            other => panic!("{at}: unknown item {other}"),
        }
    }
    assert_eq!(
        engine.poll_event().map(|e| fmt_event(&e)),
        None,
        "{name}: events left"
    );
    assert_eq!(engine.poll_transmit(), None, "{name}: bytes left unsent");
}

/// The prefixes the line driver registers for the commands it sends.
fn expect_for(cmd: &str) -> String {
    match cmd {
        "AT+CLCC" => "+CLCC:".into(),
        "AT+CREG?" => "+CREG:".into(),
        "AT+CPIN?" => "+CPIN:".into(),
        _ => "\u{0}".into(),
    }
}

macro_rules! transcript {
    ($test:ident, $file:literal) => {
        #[test]
        fn $test() {
            replay($file, include_str!(concat!("transcripts/", $file)));
        }
    };
}

transcript!(e173_init_with_echo, "e173_init.log");
transcript!(e173_outgoing_answered, "e173_outgoing_answered.log");
transcript!(e173_outgoing_busy, "e173_outgoing_busy.log");
transcript!(e173_incoming_clip_mid_response, "e173_incoming.log");
transcript!(e173_errors_and_timeout, "e173_errors.log");
transcript!(generic_final_results_as_urcs, "generic_call_results.log");
transcript!(sms_prompt, "e173_sms_prompt.log");
