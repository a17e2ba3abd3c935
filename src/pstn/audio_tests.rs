//! Tests of the audio bridge: framing, G.711 round trip, reordering, concealment, and an hour
//! of simulated call with clocks 0.1 % apart.

use super::*;

/// Power of `freq` in `samples` (Goertzel), normalised by the total power.
pub(crate) fn tone_ratio(samples: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut energy = 0.0f64;
    for &x in samples {
        let x = f64::from(x);
        energy += x * x;
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    if energy == 0.0 {
        0.0
    } else {
        power / (energy * samples.len() as f64 / 2.0)
    }
}

fn tone_frame(k: usize, freq: f64) -> Frame {
    let mut f = SILENCE;
    for (i, s) in f.iter_mut().enumerate() {
        let n = (k * FRAME_SAMPLES + i) as f64;
        *s = (8000.0 * (2.0 * std::f64::consts::PI * freq * n / 8000.0).sin()) as i16;
    }
    f
}

fn frame_of(v: i16) -> Frame {
    [v; FRAME_SAMPLES]
}

#[test]
fn gain_saturates() {
    let mut f = frame_of(20000);
    Gain::from_db(6.0).apply(&mut f);
    assert_eq!(f[0], i16::MAX);
    let mut f = frame_of(1000);
    Gain::from_db(-6.0).apply(&mut f);
    assert!((f[0] - 501).abs() <= 2, "{}", f[0]);
    let mut f = frame_of(-1000);
    Gain::UNITY.apply(&mut f);
    assert_eq!(f[0], -1000);
}

#[test]
fn assembler_cuts_frames_across_reads() {
    let mut a = FrameAssembler::new();
    let mut bytes = Vec::new();
    for i in 0..FRAME_SAMPLES * 2 {
        bytes.extend_from_slice(&(i as i16).to_le_bytes());
    }
    let mut got = Vec::new();
    for chunk in bytes.chunks(77) {
        a.push(chunk, |f| got.push(*f));
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[1][0], FRAME_SAMPLES as i16);
    assert_eq!(got[1][159], 319);
}

#[test]
fn reorders_and_conceals() {
    let mut j = JitterBuffer::new(JitterConfig { target: 2, max: 5 });
    j.push(11, &frame_of(11));
    assert_eq!(j.pull(), SILENCE); // filling up to the target
    j.push(10, &frame_of(10));
    j.push(13, &frame_of(13));
    assert_eq!(j.pull()[0], 10);
    assert_eq!(j.pull()[0], 11);
    // 12 is lost: the last frame, softer.
    let c = j.pull();
    assert!(c[0] > 0 && c[0] < 11, "{}", c[0]);
    assert_eq!(j.pull()[0], 13);
    // 12 arrives too late.
    j.push(12, &frame_of(12));
    assert_eq!(j.stats().late, 1);
    assert_eq!(j.pull(), SILENCE);
    assert_eq!(j.stats().underruns, 1);
}

#[test]
fn burst_is_bounded() {
    let mut j = JitterBuffer::new(JitterConfig { target: 3, max: 5 });
    for s in 0..50u16 {
        j.push(s, &frame_of(s as i16));
        assert!(j.level() <= 5);
    }
    // The newest frames are kept.
    let played: Vec<i16> = (0..5).map(|_| j.pull()[0]).filter(|v| *v != 0).collect();
    assert_eq!(played.last(), Some(&49));
    assert!(played.len() >= 3, "{played:?}");
}

#[test]
fn sequence_wrap_and_restart() {
    let mut j = JitterBuffer::new(JitterConfig { target: 1, max: 5 });
    j.push(65535, &frame_of(1));
    j.push(0, &frame_of(2));
    assert_eq!(j.pull()[0], 1);
    assert_eq!(j.pull()[0], 2);
    j.push(30000, &frame_of(3));
    assert_eq!(j.pull()[0], 3);
}

#[test]
fn bridge_carries_a_tone_both_ways() {
    let mut b = Bridge::new(BridgeConfig {
        dtmf_pt: Some(101),
        ..BridgeConfig::pcmu(7)
    });
    let mut sender = Packetizer::new(Law::Ulaw, 0, 99, 500, 0);
    let mut to_rtp = Vec::new();
    let mut to_modem = Vec::new();
    for k in 0..50 {
        let mut pkt = [0u8; RTP_PACKET_LEN];
        let n = sender.packetize(&tone_frame(k, 1000.0), &mut pkt);
        assert_eq!(b.from_rtp(&pkt[..n]), RtpInput::Audio);
        let mut modem_bytes = [0u8; FRAME_BYTES];
        frame_to_bytes(&tone_frame(k, 440.0), &mut modem_bytes);
        b.from_modem(
            &modem_bytes,
            |p| to_rtp.push(p.to_vec()),
            |m| to_modem.extend(m.chunks(2).map(|c| i16::from_le_bytes([c[0], c[1]]))),
        );
    }
    assert!(tone_ratio(&to_modem[FRAME_SAMPLES * 10..], 1000.0) > 0.8);
    let decoded: Vec<i16> = to_rtp[5..]
        .iter()
        .flat_map(|p| {
            let r = Rtp::parse(&p[..]).unwrap();
            assert_eq!(r.payload_type(), 0);
            r.payload()
                .iter()
                .map(|c| g711::ulaw_to_linear(*c))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(tone_ratio(&decoded, 440.0) > 0.8);
    let seqs: Vec<u16> = to_rtp
        .iter()
        .map(|p| Rtp::parse(&p[..]).unwrap().sequence())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    // A telephone-event starts once, whatever the number of packets.
    let mut ev = [0u8; 16];
    rtp::write_header(&mut ev, true, 101, 1, 8000, 99).unwrap();
    ev[12..16].copy_from_slice(&[5, 0x0a, 0, 160]);
    assert_eq!(b.from_rtp(&ev), RtpInput::Dtmf('5'));
    assert_eq!(b.from_rtp(&ev), RtpInput::Ignored);
    // Event 16 is a hook flash, once too.
    rtp::write_header(&mut ev, true, 101, 2, 16000, 99).unwrap();
    ev[12..16].copy_from_slice(&[16, 0x0a, 0, 160]);
    assert_eq!(b.from_rtp(&ev), RtpInput::Flash);
    assert_eq!(b.from_rtp(&ev), RtpInput::Ignored);
}

/// Runs an hour of a call: the RTP sender's clock and the modem's differ by `ppm`, packets
/// arrive with up to 30 ms of jitter. Returns the highest level seen and the counters.
fn hour(ppm: i64) -> (usize, usize, JitterStats) {
    let cfg = JitterConfig::default();
    let mut j = JitterBuffer::new(cfg);
    let frame_us: i64 = 20_000;
    let sender_us = frame_us * (1_000_000 + ppm) / 1_000_000;
    let frames = 3600 * 50;
    let mut rng: u64 = 0x2545F4914F6CDD1D;
    let mut jitter = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 30_000) as i64
    };
    // Arrival times (sender clock + network jitter), in order of arrival.
    let mut arrivals: Vec<(i64, u16)> = (0..frames)
        .map(|k| (k as i64 * sender_us + jitter(), (k % 65536) as u16))
        .collect();
    arrivals.sort();
    let mut max_level = 0;
    let mut max_level_last_10min = 0;
    let mut a = 0;
    let pulls = frames as i64 * sender_us / frame_us;
    for p in 0..pulls {
        let t = p * frame_us + 60_000;
        while a < arrivals.len() && arrivals[a].0 <= t {
            j.push(arrivals[a].1, &frame_of(1));
            a += 1;
            max_level = max_level.max(j.level());
        }
        j.pull();
        if p > pulls - 30_000 {
            max_level_last_10min = max_level_last_10min.max(j.level());
        }
    }
    (max_level, max_level_last_10min, j.stats())
}

#[test]
fn an_hour_with_the_sender_fast_keeps_delay_bounded() {
    let (max, last, stats) = hour(-1000);
    eprintln!("sender fast: max level {max}, last 10 min {last}, {stats:?}");
    assert!(max <= JitterConfig::default().max, "{max}");
    assert!(last <= JitterConfig::default().max, "{last}");
    // About 0.1 % of 180 000 frames had to go (plus some to jitter), not more.
    assert!(stats.dropped >= 150 && stats.dropped < 1500, "{stats:?}");
    assert!(stats.underruns < 200, "{stats:?}");
}

#[test]
fn an_hour_with_the_sender_slow_keeps_delay_bounded() {
    let (max, last, stats) = hour(1000);
    eprintln!("sender slow: max level {max}, last 10 min {last}, {stats:?}");
    assert!(max <= JitterConfig::default().max, "{max}");
    assert!(last <= JitterConfig::default().max, "{last}");
    // About 0.1 % of the frames played twice, none (or hardly any) gaps of silence.
    assert!(
        stats.stretched >= 150 && stats.stretched < 1500,
        "{stats:?}"
    );
    assert!(stats.underruns < 20, "{stats:?}");
    assert!(stats.dropped < 1500, "{stats:?}");
}

/// An hour through the whole [`Bridge`]: RTP packets from a sender whose clock differs from the
/// modem's by `ppm` (with up to 30 ms network jitter), the modem reading one frame for each it
/// sends. Every frame is tagged with a µ-law code, so the delay from a packet's sending to its
/// playing at the modem is measured. Returns the largest delay (ms) in the first and last ten
/// minutes.
fn hour_through_bridge(ppm: i64) -> (i64, i64, JitterStats) {
    let mut b = Bridge::new(BridgeConfig::pcmu(1));
    let frame_us: i64 = 20_000;
    let sender_us = frame_us * (1_000_000 + ppm) / 1_000_000;
    let frames = 3600 * 50i64;
    let mut rng: u64 = 0x9E3779B97F4A7C15;
    let mut jitter = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % 30_000) as i64
    };
    // (arrival, sequence, send time); tag = 0x80 + seq % 120 (distinct positive µ-law codes).
    let mut arrivals: Vec<(i64, u16, i64)> = (0..frames)
        .map(|k| {
            let sent = k * sender_us;
            (sent + jitter(), (k % 65536) as u16, sent)
        })
        .collect();
    arrivals.sort();
    let tag_of = |seq: u16| 0x81 + (seq % 120) as u8;
    let mut sent_at: std::collections::HashMap<u8, i64> = Default::default();
    let mut a = 0;
    let mut modem = [0u8; FRAME_BYTES];
    frame_to_bytes(&SILENCE, &mut modem);
    let (mut first10, mut last10) = (0i64, 0i64);
    let pulls = frames * sender_us / frame_us - 10;
    for p in 0..pulls {
        let t = p * frame_us;
        while a < arrivals.len() && arrivals[a].0 <= t {
            let (_, seq, sent) = arrivals[a];
            let mut pkt = [0u8; RTP_PACKET_LEN];
            rtp::write_header(&mut pkt, false, 0, seq, u32::from(seq) * 160, 5).unwrap();
            pkt[12..].fill(tag_of(seq));
            sent_at.insert(tag_of(seq), sent);
            b.from_rtp(&pkt);
            a += 1;
        }
        let mut out = None;
        let before = b.jitter().stats();
        b.from_modem(
            &modem,
            |_| {},
            |m| out = Some(i16::from_le_bytes([m[0], m[1]])),
        );
        let Some(v) = out else { continue };
        let after = b.jitter().stats();
        if v <= 0 || after.concealed != before.concealed || after.stretched != before.stretched {
            continue; // silence (filling up), a concealed or a repeated frame
        }
        let code = g711::linear_to_ulaw(v);
        if let Some(sent) = sent_at.get(&code) {
            let delay = (t - sent) / 1000;
            if p < 30_000 {
                first10 = first10.max(delay);
            } else if p > pulls - 30_000 {
                last10 = last10.max(delay);
            }
        }
    }
    (first10, last10, b.jitter().stats())
}

#[test]
fn an_hour_through_the_bridge_has_no_growing_delay() {
    for ppm in [-1000, 1000] {
        let (first, last, stats) = hour_through_bridge(ppm);
        eprintln!("sender {ppm:+} ppm: max delay first 10 min {first} ms, last 10 min {last} ms, {stats:?}");
        // 30 ms network jitter + at most 100 ms of buffer, at the start as after an hour.
        assert!(first <= 140 && last <= 140, "delay {first} → {last} ms");
        assert!(last <= first + 40, "delay grew from {first} to {last} ms");
    }
}

#[test]
fn packets_of_10_and_30_ms_are_reframed() {
    for samples_per_packet in [80usize, 240, 160] {
        let mut b = Bridge::new(BridgeConfig::pcmu(7));
        let tone: Vec<i16> = (0..50).flat_map(|k| tone_frame(k, 1000.0)).collect();
        let packets: Vec<Vec<u8>> = tone
            .chunks(samples_per_packet)
            .enumerate()
            .map(|(n, chunk)| {
                let mut pkt = vec![0u8; 12 + chunk.len()];
                let ts = 123_457u32.wrapping_add((n * samples_per_packet) as u32);
                rtp::write_header(&mut pkt, false, 0, 9 + n as u16, ts, 42).unwrap();
                for (o, s) in pkt[12..].iter_mut().zip(chunk) {
                    *o = g711::linear_to_ulaw(*s);
                }
                pkt
            })
            .collect();
        // A packet arrives once its last sample has been spoken; one frame is played per 20 ms.
        let mut out = Vec::new();
        let mut next = 0;
        for tick in 0..50usize {
            let now_samples = (tick + 1) * FRAME_SAMPLES;
            while next < packets.len() && (next + 1) * samples_per_packet <= now_samples {
                assert_eq!(b.from_rtp(&packets[next]), RtpInput::Audio);
                next += 1;
            }
            let mut f = [0u8; FRAME_BYTES];
            b.to_modem_unpaced(&mut f);
            out.extend(f.chunks(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
        }
        let played = &out[FRAME_SAMPLES * 5..FRAME_SAMPLES * 35];
        let ratio = tone_ratio(played, 1000.0);
        assert!(
            ratio > 0.9,
            "{samples_per_packet} samples per packet: {ratio}"
        );
        assert_eq!(b.jitter().stats().late, 0, "{samples_per_packet}");
    }
}

#[test]
fn random_rtp_never_panics_and_stays_bounded() {
    let mut b = Bridge::new(BridgeConfig {
        dtmf_pt: Some(101),
        ..BridgeConfig::pcmu(1)
    });
    let mut x: u64 = 0xdead_beef_cafe_f00d;
    let mut pkt = [0u8; 400];
    for _ in 0..50_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 400) as usize;
        for (i, byte) in pkt[..len].iter_mut().enumerate() {
            *byte = (x >> (i % 56)) as u8;
        }
        if len > 12 && x.is_multiple_of(3) {
            let pt = if x.is_multiple_of(2) { 0 } else { 101 };
            rtp::write_header(&mut pkt, false, pt, (x >> 20) as u16, (x >> 24) as u32, 7).unwrap();
        }
        b.from_rtp(&pkt[..len]);
        assert!(b.jitter().level() <= JitterConfig::default().max);
        if x.is_multiple_of(5) {
            let mut f = [0u8; FRAME_BYTES];
            b.to_modem_unpaced(&mut f);
        }
    }
}

#[test]
fn dtmf_heard_from_the_modem_goes_to_the_phone_as_rfc4733_events() {
    let mut cfg = BridgeConfig::pcmu(7);
    cfg.dtmf_pt = Some(101);
    let mut b = Bridge::new(cfg);
    let mut audio = vec![0i16; 8000];
    crate::pstn::dsp::dtmf::DtmfGenerator::new("5#", 100, 100).fill(&mut audio);
    let bytes: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut packets: Vec<Vec<u8>> = Vec::new();
    b.from_modem(&bytes, |p| packets.push(p.to_vec()), |_| {});
    let events: Vec<(bool, TelephoneEvent, u32)> = packets
        .iter()
        .filter(|p| p[1] & 0x7f == 101)
        .map(|p| {
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            (
                p[1] & 0x80 != 0,
                TelephoneEvent::parse(&p[12..]).unwrap(),
                ts,
            )
        })
        .collect();
    let starts: Vec<char> = events
        .iter()
        .filter(|(m, ..)| *m)
        .filter_map(|(_, e, _)| e.digit())
        .collect();
    assert_eq!(starts, ['5', '#']);
    let ends: Vec<&(bool, TelephoneEvent, u32)> = events.iter().filter(|(_, e, _)| e.end).collect();
    assert_eq!(ends.len(), 6, "three end packets per digit");
    // About 100 ms of tone each, within a couple of frames.
    assert!((480..=960).contains(&ends[0].1.duration), "{:?}", ends[0]);
    // Sequence numbers run on across audio and event packets; no audio packet is lost.
    let seqs: Vec<u16> = packets
        .iter()
        .map(|p| u16::from_be_bytes([p[2], p[3]]))
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    assert_eq!(packets.len(), 50 + 6);
}

#[test]
fn without_telephone_event_digits_stay_in_band() {
    let mut b = Bridge::new(BridgeConfig::pcmu(7));
    let mut audio = vec![0i16; 4000];
    crate::pstn::dsp::dtmf::DtmfGenerator::new("1", 100, 100).fill(&mut audio);
    let bytes: Vec<u8> = audio.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut n = 0;
    b.from_modem(
        &bytes,
        |p| {
            assert_eq!(p[1] & 0x7f, 0);
            n += 1
        },
        |_| {},
    );
    assert_eq!(n, 25);
}
