//! An FXO line on the simulated DAHDI channel (`sim:` socket) against a scripted exchange that
//! plays spandsp-made dial tones, progress cadences, caller ID and DTMF: outgoing calls
//! (dial tone, DTMF dialling decoded by spandsp, answer by polarity reversal, audio both ways,
//! clear by battery drop), busy/congestion of two countries, no dial tone, incoming calls with
//! Bell 202 / V.23 / DTMF / withheld caller ID and abandon, DTMF from the line and talk-off.

mod fxo_sim;

use fxo_sim::{dtmf_heard, exchange, signal, sipp_voice, tone, tone_share, Line};
use pasarela::pstn::audio::Frame;
use pasarela::pstn::dahdi::channel::{self, ChannelEvent};
use pasarela::pstn::dahdi::driver::{self, AudioPort, Command};
use pasarela::pstn::dahdi::fxo::{AnswerDetect, FxoLine, FxoOutput, FxoSettings};
use pasarela::pstn::dsp::callerid::Absence;
use pasarela::pstn::dsp::dtmf::DtmfEvent;
use pasarela::pstn::dsp::tones::country;
use pasarela::pstn::CallProgress;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// The phone side: sends a 440 Hz tone, records what the line sends.
struct Phone {
    t: u64,
    heard: Arc<Mutex<Vec<i16>>>,
}

impl AudioPort for Phone {
    fn heard_on_line(&mut self, frame: &Frame) {
        self.heard.lock().unwrap().extend_from_slice(frame);
    }
    fn next_for_line(&mut self, frame: &mut Frame) {
        for s in frame.iter_mut() {
            let t = self.t as f32 / 8000.0;
            *s = (6000.0 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()) as i16;
            self.t += 1;
        }
    }
}

struct Run {
    outputs: Vec<FxoOutput>,
    line: Line,
    phone_heard: Vec<i16>,
}

/// Runs a line in `code`'s country against `script`; `commands` are queued before the start
/// (plus `Answer` as soon as a call is announced when `answer` is set).
fn run(
    code: &str,
    settings: impl FnOnce(&mut FxoSettings),
    commands: &[Command],
    answer: bool,
    script: impl FnMut(&mut Line) -> bool + Send + 'static,
) -> Run {
    let react = move |o: &FxoOutput| match o {
        FxoOutput::Incoming(_) if answer => vec![Command::Answer],
        _ => Vec::new(),
    };
    run_reacting(code, settings, commands, react, script)
}

/// [`run`] with the commands `react` gives for each output, sent at once.
fn run_reacting(
    code: &str,
    settings: impl FnOnce(&mut FxoSettings),
    commands: &[Command],
    mut react: impl FnMut(&FxoOutput) -> Vec<Command>,
    script: impl FnMut(&mut Line) -> bool + Send + 'static,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fxo.sock");
    let ex = exchange(&path, script);
    let ch = channel::open(&format!("sim:{}", path.display())).unwrap();
    let mut s = FxoSettings::new("fxo1", country(code).unwrap());
    settings(&mut s);
    let (ctx, crx) = mpsc::channel();
    for c in commands {
        ctx.send(c.clone()).unwrap();
    }
    let (otx, orx) = mpsc::channel();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let phone = Phone {
        t: 0,
        heard: heard.clone(),
    };
    let ctx2 = ctx.clone();
    let drv =
        std::thread::spawn(move || driver::run(ch, FxoLine::new(s), crx, otx, Box::new(phone)));
    let mut outputs = Vec::new();
    for o in orx.iter() {
        for c in react(&o) {
            let _ = ctx2.send(c);
        }
        outputs.push(o);
    }
    let _ = drv.join().unwrap();
    drop(ctx);
    let line = ex.join().unwrap();
    let phone_heard = heard.lock().unwrap().clone();
    Run {
        outputs,
        line,
        phone_heard,
    }
}

fn ended(outputs: &[FxoOutput]) -> Vec<(u16, u16, bool)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            FxoOutput::Progress(CallProgress::Ended(c)) => Some((c.q850, c.sip_status, c.answered)),
            _ => None,
        })
        .collect()
}

/// An exchange for outgoing calls: dial tone on seizure until the digits start, then after
/// the digits `after_dialling(line, frames since the digits ended)`.
fn outgoing_exchange(
    dial_tone: Vec<i16>,
    mut after_dialling: impl FnMut(&mut Line, u64) -> bool + Send + 'static,
) -> impl FnMut(&mut Line) -> bool + Send + 'static {
    let mut phase = 0;
    let mut quiet_since = 0u64;
    move |l: &mut Line| {
        if l.frame > 50 * 120 {
            return false;
        }
        match phase {
            0 if l.off_hook => {
                l.play(&dial_tone);
                phase = 1;
            }
            1 if l.last_rms() > 1000.0 => {
                l.play.clear();
                phase = 2;
            }
            2 => {
                if l.last_rms() > 1000.0 {
                    quiet_since = l.frame;
                } else if l.frame - quiet_since > 25 {
                    phase = 3;
                    quiet_since = l.frame;
                }
            }
            3 => return after_dialling(l, l.frame - quiet_since),
            _ => {}
        }
        if phase > 0 && !l.off_hook {
            // The gateway hung up: let it finish the turn, then close.
            return l.hook_log.last().is_some_and(|(f, _)| l.frame < f + 5);
        }
        true
    }
}

#[test]
fn outgoing_call_dials_is_answered_by_polarity_carries_audio_and_ends_by_battery_drop() {
    let number = "03012345678";
    let r = run(
        "DE",
        |s| s.answer = AnswerDetect::Polarity,
        &[Command::Dial(number.into())],
        false,
        outgoing_exchange(tone(425, 0, [0; 4], 10_000), |l, n| {
            match n {
                10 => l.events.push(ChannelEvent::Polarity.dahdi()),
                11 => l.play(&tone(1000, 0, [0; 4], 2000)),
                120 => l.events.push(ChannelEvent::BatteryDrop.dahdi()),
                _ => {}
            }
            n < 200
        }),
    );
    // spandsp decodes the digits we dialled.
    assert_eq!(dtmf_heard(&r.line.heard), number);
    let progress: Vec<_> = r
        .outputs
        .iter()
        .filter_map(|o| match o {
            FxoOutput::Progress(p) => Some(std::mem::discriminant(p)),
            _ => None,
        })
        .collect();
    assert_eq!(progress.len(), 4, "{:?}", r.outputs);
    assert!(
        matches!(
            r.outputs.as_slice(),
            [
                FxoOutput::Progress(CallProgress::Proceeding),
                FxoOutput::Progress(CallProgress::EarlyMedia),
                FxoOutput::Progress(CallProgress::Answered),
                FxoOutput::Progress(CallProgress::Ended(_)),
            ]
        ),
        "{:?}",
        r.outputs
    );
    assert_eq!(ended(&r.outputs), [(16, 200, true)]);
    // Audio both ways, by frequency: the phone heard the line's 1 kHz, the line the phone's 440 Hz.
    assert!(r.phone_heard.len() > 8000, "{}", r.phone_heard.len());
    assert!(tone_share(&r.phone_heard[800..8800], 1000.0) > 0.8);
    let on_hook = r.line.hook_log.last().unwrap().0 as usize * 160;
    assert!(tone_share(&r.line.heard[on_hook - 8800..on_hook - 800], 440.0) > 0.8);
    // The line was released.
    assert_eq!(r.line.hook_log.last().map(|h| h.1), Some(false));
}

#[test]
fn busy_and_congestion_in_two_countries_give_486_and_503() {
    let cases = [
        (
            "DE",
            tone(425, 0, [0; 4], 10_000),
            tone(425, 0, [480, 480, 0, 0], 8000),
            486,
        ),
        (
            "DE",
            tone(425, 0, [0; 4], 10_000),
            tone(425, 0, [240, 240, 0, 0], 8000),
            503,
        ),
        (
            "US",
            tone(350, 440, [0; 4], 10_000),
            tone(480, 620, [500, 500, 0, 0], 8000),
            486,
        ),
        (
            "US",
            tone(350, 440, [0; 4], 10_000),
            tone(480, 620, [250, 250, 0, 0], 8000),
            503,
        ),
    ];
    for (code, dial, progress, sip) in cases {
        let r = run(
            code,
            |_| {},
            &[Command::Dial("5551234".into())],
            false,
            outgoing_exchange(dial, move |l, n| {
                if n == 1 {
                    l.play(&progress);
                }
                n < 500
            }),
        );
        let e = ended(&r.outputs);
        assert_eq!(e.len(), 1, "{code}: {:?}", r.outputs);
        assert_eq!(e[0].1, sip, "{code}: {:?}", r.outputs);
        assert_eq!(r.line.hook_log.last().map(|h| h.1), Some(false), "{code}");
    }
}

#[test]
fn a_line_without_dial_tone_gives_503_and_is_released() {
    let r = run(
        "UK",
        |_| {},
        &[Command::Dial("0201234".into())],
        false,
        |l: &mut Line| (l.off_hook || l.hook_log.len() < 2) && l.frame < 400,
    );
    assert_eq!(ended(&r.outputs), [(34, 503, false)]);
    // Released after the 3 s dial-tone wait, nothing dialled.
    let (off, on) = (r.line.hook_log[0], r.line.hook_log[1]);
    assert!(off.1 && !on.1);
    assert!(
        (140..=160).contains(&(on.0 - off.0)),
        "{:?}",
        r.line.hook_log
    );
    assert_eq!(dtmf_heard(&r.line.heard), "");
}

/// An incoming call: ring 1 s, the caller-ID signal, ring again at 5 s and 10 s, then
/// nothing (the caller gives up).
fn incoming(cid: Vec<i16>) -> impl FnMut(&mut Line) -> bool + Send + 'static {
    move |l: &mut Line| {
        match l.frame {
            1 => l.events.push(ChannelEvent::RingBegin.dahdi()),
            50 => l.events.push(ChannelEvent::RingEnd.dahdi()),
            60 => l.play(&cid),
            250 | 500 => l.events.push(ChannelEvent::RingBegin.dahdi()),
            300 | 550 => l.events.push(ChannelEvent::RingEnd.dahdi()),
            _ => {}
        }
        l.frame < 1100
    }
}

fn announced(outputs: &[FxoOutput]) -> pasarela::pstn::dsp::callerid::Caller {
    let callers: Vec<_> = outputs
        .iter()
        .filter_map(|o| match o {
            FxoOutput::Incoming(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(callers.len(), 1, "{outputs:?}");
    callers[0].clone()
}

#[test]
fn incoming_calls_show_the_caller_from_bell202_v23_dtmf_and_withheld_and_abandon_ends_them() {
    let r = run(
        "US",
        |_| {},
        &[],
        false,
        incoming(signal(&["cid", "bell202", "2125551234", "BOB"])),
    );
    let c = announced(&r.outputs);
    assert_eq!(
        (c.number.as_deref(), c.name.as_deref()),
        (Some("2125551234"), Some("BOB"))
    );
    // Nobody answered and the rings stopped: the caller gave up (CANCEL to the phones).
    assert_eq!(ended(&r.outputs), [(16, 487, false)]);
    assert!(r.line.hook_log.is_empty(), "the line was never seized");

    let r = run(
        "DE",
        |_| {},
        &[],
        false,
        incoming(signal(&["cid", "v23", "0301234567", "ALICE"])),
    );
    let c = announced(&r.outputs);
    assert_eq!(c.number.as_deref(), Some("0301234567"));

    let r = run(
        "DE",
        |_| {},
        &[],
        false,
        incoming(signal(&["cid", "dtmf", "0401234567"])),
    );
    assert_eq!(announced(&r.outputs).number.as_deref(), Some("0401234567"));

    let r = run(
        "DE",
        |_| {},
        &[],
        false,
        incoming(signal(&["cid", "v23", "-P"])),
    );
    let c = announced(&r.outputs);
    assert_eq!((c.number, c.absence), (None, Some(Absence::Withheld)));

    // The announcement comes at the second ring (frame 250), after the caller ID.
    let r = run("DE", |_| {}, &[], false, incoming(vec![0; 800]));
    assert_eq!(announced(&r.outputs), Default::default());
}

#[test]
fn dtmf_from_the_line_reaches_the_call_and_speech_does_not_make_digits() {
    let digits = signal(&["dtmf", "147*0#", "60", "60"]);
    let voice = sipp_voice().expect("sipp's voice recording");
    let r = run(
        "DE",
        |_| {},
        &[],
        true,
        move |l: &mut Line| {
            // Rings of 1 s every 5 s until answered.
            if !l.off_hook && l.frame < 2000 {
                match l.frame % 250 {
                    1 => l.events.push(ChannelEvent::RingBegin.dahdi()),
                    50 => l.events.push(ChannelEvent::RingEnd.dahdi()),
                    _ => {}
                }
            }
            if l.off_hook && l.play.is_empty() && l.frame < 2000 {
                l.play(&voice);
                l.play(&digits);
                l.play(&voice);
                l.frame = 2000;
            }
            if l.frame >= 2000 && l.play.is_empty() {
                l.events.push(ChannelEvent::BatteryDrop.dahdi());
                return l.off_hook;
            }
            l.frame < 5000
        },
    );
    let got: String = r
        .outputs
        .iter()
        .filter_map(|o| match o {
            FxoOutput::Dtmf(DtmfEvent::Start { digit, .. }) => Some(*digit),
            _ => None,
        })
        .collect();
    assert_eq!(got, "147*0#", "{:?}", r.outputs);
    assert_eq!(ended(&r.outputs), [(16, 200, true)]);
}

/// The phones refuse a ringing call (the line is told to hang up while it rings): the
/// exchange keeps ringing that caller, and those rings are not announced as a new call; once
/// they have stopped for `ring_gone_ms`, the next ringing with its caller ID is a new call.
#[test]
fn the_rest_of_a_refused_call_s_ringing_is_not_a_new_call() {
    let first = signal(&["cid", "v23", "0301234567", "ALICE"]);
    let second = signal(&["cid", "v23", "0309876543", "BOB"]);
    let r = run_reacting(
        "DE",
        |_| {},
        &[],
        |o| match o {
            FxoOutput::Incoming(_) => vec![Command::Hangup],
            _ => Vec::new(),
        },
        move |l: &mut Line| {
            match l.frame {
                // The first caller: four rings of 1 s every 5 s, caller ID after the first.
                1 | 250 | 500 | 750 => l.events.push(ChannelEvent::RingBegin.dahdi()),
                50 | 300 | 550 | 800 => l.events.push(ChannelEvent::RingEnd.dahdi()),
                60 => l.play(&first),
                // The second, 10 s after the first gave up (announced at its second ring).
                1300 | 1550 => l.events.push(ChannelEvent::RingBegin.dahdi()),
                1350 | 1600 => l.events.push(ChannelEvent::RingEnd.dahdi()),
                1360 => l.play(&second),
                _ => {}
            }
            l.frame < 1700
        },
    );
    let callers: Vec<Option<String>> = r
        .outputs
        .iter()
        .filter_map(|o| match o {
            FxoOutput::Incoming(c) => Some(c.number.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        callers,
        [Some("0301234567".to_owned()), Some("0309876543".to_owned())],
        "{:?}",
        r.outputs
    );
    assert!(r.line.hook_log.is_empty(), "the line was seized");
}

/// A hook flash asked for during a connected call reaches the channel as DAHDI_HOOK 3 (the
/// hook stays off); asked for with no call it is refused and nothing reaches the channel.
#[test]
fn a_hook_flash_during_a_call_reaches_the_channel() {
    let r = run_reacting(
        "DE",
        |_| {},
        &[Command::Flash],
        |o| match o {
            FxoOutput::Incoming(_) => vec![Command::Answer],
            FxoOutput::Progress(CallProgress::Answered) => vec![Command::Flash],
            _ => Vec::new(),
        },
        move |l: &mut Line| {
            if !l.off_hook && l.flashes.is_empty() && l.frame < 1000 {
                match l.frame % 250 {
                    1 => l.events.push(ChannelEvent::RingBegin.dahdi()),
                    50 => l.events.push(ChannelEvent::RingEnd.dahdi()),
                    _ => {}
                }
            }
            if l.off_hook && !l.flashes.is_empty() && l.frame > l.flashes[0] + 50 {
                l.events.push(ChannelEvent::BatteryDrop.dahdi());
                return l.frame < l.flashes[0] + 60;
            }
            l.frame < 1500
        },
    );
    assert_eq!(r.line.flashes.len(), 1, "{:?}", r.outputs);
    let answered_at = r.line.hook_log.first().map(|h| h.0).unwrap_or_default();
    assert!(
        r.line.flashes[0] >= answered_at,
        "{:?} {:?}",
        r.line.flashes,
        r.line.hook_log
    );
    assert_eq!(
        r.line.hook_log.iter().map(|h| h.1).collect::<Vec<_>>(),
        [true, false],
        "the hook stayed off through the flash"
    );
    assert_eq!(ended(&r.outputs), [(16, 200, true)]);
}

/// An alarm (no battery, card fault) puts the line in alarm, reported once: it refuses to
/// dial (not in service: 503, the next line is tried); when the alarm clears it dials again.
/// An alarm during a call ends it with Q.850 38 (network out of order).
#[test]
fn a_line_in_alarm_refuses_calls_until_the_alarm_clears() {
    use pasarela::pstn::dahdi::fxo::FxoState;
    use pasarela::pstn::LineError;
    let mut line = FxoLine::new(FxoSettings::new("fxo1", country("DE").unwrap()));
    line.event(ChannelEvent::Alarm);
    line.event(ChannelEvent::Alarm);
    assert_eq!(line.state(), FxoState::Alarm);
    assert!(matches!(line.dial("030123"), Err(LineError::NotReady(_))));
    line.event(ChannelEvent::NoAlarm);
    assert_eq!(line.state(), FxoState::OnHook);
    let outs: Vec<FxoOutput> = std::iter::from_fn(|| line.poll()).collect();
    assert_eq!(outs, [FxoOutput::Alarm(true), FxoOutput::Alarm(false)]);
    line.dial("030123").unwrap();
    let _: Vec<FxoOutput> = std::iter::from_fn(|| line.poll()).collect();
    line.event(ChannelEvent::Removed);
    let outs: Vec<FxoOutput> = std::iter::from_fn(|| line.poll()).collect();
    assert_eq!(ended(&outs), [(38, 503, false)], "{outs:?}");
    assert!(outs.contains(&FxoOutput::Alarm(true)), "{outs:?}");
}
