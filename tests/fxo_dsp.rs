//! The line DSP (DTMF, call-progress tones, FSK and DTMF caller ID) against signals made by
//! spandsp, an independent implementation, and our DTMF dialling decoded by spandsp's receiver.

mod fxo_sim;

use fxo_sim::{dtmf_heard, signal, sipp_voice, tone};
use pasarela::pstn::dsp::callerid::{find_message, parse_dtmf, Absence};
use pasarela::pstn::dsp::dtmf::{DtmfDetector, DtmfEvent, DtmfGenerator};
use pasarela::pstn::dsp::fsk::{FskReceiver, FskStandard};
use pasarela::pstn::dsp::tones::{country, ToneDetector, ToneEvent, ToneKind};

fn digits(audio: &[i16]) -> String {
    DtmfDetector::new()
        .detect_all(audio)
        .into_iter()
        .filter_map(|e| match e {
            DtmfEvent::Start { digit, .. } => Some(digit),
            _ => None,
        })
        .collect()
}

#[test]
fn spandsp_dtmf_digits_are_detected_at_normal_and_minimum_durations() {
    let keys = "0123456789*#ABCD";
    assert_eq!(digits(&signal(&["dtmf", keys, "80", "80"])), keys);
    // Q.24: 40 ms tone / 40 ms pause must be accepted.
    assert_eq!(digits(&signal(&["dtmf", keys, "40", "40"])), keys);
}

#[test]
fn spandsp_hears_the_digits_we_dial() {
    let number = "00493012345678*#";
    let mut g = DtmfGenerator::new(number, 80, 80);
    let mut audio = vec![0i16; 8 * 160 * (number.len() + 2)];
    g.fill(&mut audio);
    assert!(g.done());
    assert_eq!(dtmf_heard(&audio), number);
}

fn fsk_caller(std: FskStandard, audio: &[i16]) -> pasarela::pstn::dsp::callerid::Caller {
    let mut rx = FskReceiver::new(std);
    let mut bytes = Vec::new();
    rx.push(audio, |b| bytes.push(b));
    find_message(&bytes).unwrap_or_else(|| panic!("{std:?}: no message in {bytes:x?}"))
}

#[test]
fn fsk_caller_id_from_spandsp_bell202_and_v23_with_name_and_withheld() {
    let c = fsk_caller(
        FskStandard::Bell202,
        &signal(&["cid", "bell202", "2125551234", "BOB SMITH"]),
    );
    assert_eq!(c.number.as_deref(), Some("2125551234"));
    assert_eq!(c.name.as_deref(), Some("BOB SMITH"));
    let c = fsk_caller(
        FskStandard::V23,
        &signal(&["cid", "v23", "0301234567", "ALICE"]),
    );
    assert_eq!(c.number.as_deref(), Some("0301234567"));
    assert_eq!(c.name.as_deref(), Some("ALICE"));
    let c = fsk_caller(FskStandard::V23, &signal(&["cid", "v23", "-P"]));
    assert_eq!((c.number, c.absence), (None, Some(Absence::Withheld)));
    let c = fsk_caller(FskStandard::Bell202, &signal(&["cid", "bell202", "-O"]));
    assert_eq!((c.number, c.absence), (None, Some(Absence::Unavailable)));
}

#[test]
fn dtmf_caller_id_from_spandsp() {
    let c = parse_dtmf(&digits(&signal(&["cid", "dtmf", "0301234567"]))).unwrap();
    assert_eq!(c.number.as_deref(), Some("0301234567"));
    let c = parse_dtmf(&digits(&signal(&["cid", "dtmf", "-P"]))).unwrap();
    assert_eq!((c.number, c.absence), (None, Some(Absence::Withheld)));
    let c = parse_dtmf(&digits(&signal(&["cid", "dtmf", "-O"]))).unwrap();
    assert_eq!((c.number, c.absence), (None, Some(Absence::Unavailable)));
}

fn tones_of(code: &str, audio: &[i16]) -> Vec<ToneKind> {
    let mut d = ToneDetector::new(country(code).unwrap());
    let mut v = Vec::new();
    d.push(audio, |ToneEvent::Tone(k)| v.push(k));
    v
}

#[test]
fn country_tones_made_by_spandsp_are_told_apart() {
    use ToneKind::*;
    let cases: &[(&str, Vec<i16>, ToneKind)] = &[
        ("DE", tone(425, 0, [0; 4], 3000), Dial),
        ("DE", tone(425, 0, [1000, 4000, 0, 0], 12000), Ringback),
        ("DE", tone(425, 0, [480, 480, 0, 0], 5000), Busy),
        ("DE", tone(425, 0, [240, 240, 0, 0], 4000), Congestion),
        ("US", tone(350, 440, [0; 4], 3000), Dial),
        ("US", tone(440, 480, [2000, 4000, 0, 0], 14000), Ringback),
        ("US", tone(480, 620, [500, 500, 0, 0], 5000), Busy),
        ("US", tone(480, 620, [250, 250, 0, 0], 4000), Congestion),
        ("UK", tone(400, 450, [400, 200, 400, 2000], 8000), Ringback),
        ("UK", tone(400, 0, [375, 375, 0, 0], 5000), Busy),
        ("UK", tone(400, 0, [400, 350, 225, 525], 5000), Congestion),
        ("IT", tone(425, 0, [500, 500, 0, 0], 5000), Busy),
        ("IT", tone(425, 0, [200, 200, 0, 0], 4000), Congestion),
        ("IT", tone(425, 0, [200, 200, 600, 1000], 6000), Dial),
        ("ES", tone(425, 0, [200, 200, 0, 0], 5000), Busy),
        ("ES", tone(425, 0, [1500, 3000, 0, 0], 12000), Ringback),
    ];
    for (code, audio, want) in cases {
        let got = tones_of(code, audio);
        assert_eq!(got.first(), Some(want), "{code} {want:?}: {got:?}");
        assert!(got.iter().all(|k| k == want), "{code} {want:?}: {got:?}");
    }
    // A German busy tone is not a US tone at all.
    assert!(tones_of("US", &tone(425, 0, [480, 480, 0, 0], 5000)).is_empty());
}

/// Talk-off: speech must not produce digits. Measured on sipp's voice recording and on a
/// synthetic vowel-like signal (a gliding pitch with formants), both looped for a minute.
#[test]
fn speech_gives_no_false_digits() {
    let voice = sipp_voice().expect("sipp's g711a.pcap (tests/setup.sh installs sip-tester)");
    assert!(voice.len() > 8000 * 5);
    let mut minute = Vec::with_capacity(8000 * 60);
    while minute.len() < 8000 * 60 {
        minute.extend_from_slice(&voice);
    }
    let false_digits = digits(&minute);
    assert_eq!(false_digits, "", "talk-off on recorded voice");

    let synth = vowels(&[
        (730.0, 1090.0, 2440.0),
        (270.0, 2290.0, 3010.0),
        (300.0, 870.0, 2240.0),
        (530.0, 1840.0, 2480.0),
        (570.0, 840.0, 2410.0),
        (660.0, 1720.0, 2410.0),
    ]);
    assert_eq!(digits(&synth), "", "talk-off on synthetic vowels");

    // And digits mixed into the recording at speech level are still found.
    let mut mixed = voice.clone();
    let dtmf = signal(&["dtmf", "159#", "80", "80"]);
    for (m, d) in mixed[8000 * 2..].iter_mut().zip(&dtmf) {
        *m = m.saturating_add(*d);
    }
    assert_eq!(digits(&mixed), "159#");
}

/// A minute of synthetic voiced speech: a pitch gliding between about 90 and 210 Hz through
/// formant filters that change vowel every 300 ms, with a syllable-rate envelope.
fn vowels(formants: &[(f32, f32, f32)]) -> Vec<i16> {
    use std::f32::consts::PI;
    let mut phase = 0.0f32;
    (0..8000 * 60)
        .map(|i| {
            let t = i as f32 / 8000.0;
            let (f1, f2, f3) = formants[(i / 2400) % formants.len()];
            let f0 = 150.0 + 50.0 * (2.0 * PI * 0.7 * t).sin() + 10.0 * (2.0 * PI * 3.1 * t).sin();
            phase = (phase + 2.0 * PI * f0 / 8000.0) % (2.0 * PI * 1000.0);
            let env = 0.2 + 0.8 * (2.0 * PI * 2.3 * t).sin().abs();
            let v: f32 = (1..(3800.0 / f0) as usize)
                .map(|h| {
                    let f = f0 * h as f32;
                    let g = [(f1, 1.0f32), (f2, 0.5), (f3, 0.25)]
                        .iter()
                        .map(|(fc, g)| g / (1.0 + ((f - fc) / 90.0).powi(2)))
                        .sum::<f32>();
                    g * (phase * h as f32).sin()
                })
                .sum();
            (env * 5000.0 * v).clamp(-32000.0, 32000.0) as i16
        })
        .collect()
}
