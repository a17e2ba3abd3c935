//! A modem line against the Huawei simulator over pseudo-terminals: outgoing calls with audio
//! both ways, busy and no answer, incoming calls with CLIP, a modem that stops answering (reset
//! and back in service) and one that vanishes mid-call (found again by IMEI).

mod modem_sim;

use std::net::SocketAddr;
use std::time::Duration;

use modem_sim::{eventually, tone_share, DialBehaviour, Sim};
use pasarela::media::g711;
use pasarela::media::rtp::{self, Rtp};
use pasarela::media::Law;
use pasarela::pstn::audio::{Packetizer, FRAME_SAMPLES, RTP_PACKET_LEN};
use pasarela::pstn::gsm::{
    Candidates, GsmLine, GsmLineConfig, LineConfig, PortPair, PortSpec, Profile, RtpAttach,
    RtpCodec,
};
use pasarela::pstn::{CallProgress, EndReason, Line, LineCall, LineState};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const IMEI: &str = "353142034567891";
const ICCID: &str = "8949226012345678901";

fn line_config(dir: &std::path::Path, sims: &[&Sim]) -> GsmLineConfig {
    let mut line = LineConfig::new("gsm1");
    // Short enough for quick fault tests, long enough for a loaded machine.
    line.probe_interval = Duration::from_millis(500);
    line.command_timeout = Duration::from_millis(1000);
    line.max_missed = 2;
    line.reopen_after = Duration::from_millis(300);
    let _ = dir;
    GsmLineConfig {
        line,
        profile: Profile::builtin("huawei").expect("profile"),
        ports: PortSpec::Identity {
            imei: Some(IMEI.into()),
            iccid: None,
            candidates: Candidates::List(
                sims.iter()
                    .map(|s| PortPair {
                        data: s.data_link.clone(),
                        audio: s.audio_link.clone(),
                    })
                    .collect(),
            ),
        },
        gain_to_modem_db: 0.0,
        gain_to_rtp_db: 0.0,
        jitter: Default::default(),
    }
}

async fn wait_state(line: &dyn Line, state: LineState, within: Duration) {
    let mut w = line.watch_status();
    let r = timeout(within, async {
        loop {
            if w.borrow_and_update().state == state {
                return;
            }
            if w.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "line not {state:?} within {within:?}: {:?}",
        line.status()
    );
}

async fn next(call: &mut dyn LineCall) -> CallProgress {
    timeout(Duration::from_secs(10), call.next_event())
        .await
        .expect("call event in time")
        .expect("call event")
}

async fn until_answered(call: &mut dyn LineCall) -> Vec<CallProgress> {
    let mut seen = Vec::new();
    loop {
        let ev = next(call).await;
        seen.push(ev.clone());
        match ev {
            CallProgress::Answered => return seen,
            CallProgress::Ended(c) => panic!("ended before answer: {c} after {seen:?}"),
            _ => {}
        }
    }
}

async fn until_ended(call: &mut dyn LineCall) -> pasarela::pstn::EndCause {
    loop {
        if let CallProgress::Ended(c) = next(call).await {
            return c;
        }
    }
}

fn setup() -> (tempfile::TempDir, Sim, Sim) {
    let dir = tempfile::tempdir().expect("tempdir");
    // A decoy stick with another IMEI, listed first: the line must pick the right one.
    let decoy = Sim::start(
        dir.path(),
        "decoy",
        "350000000000009",
        "8949000000000000009",
    );
    let sim = Sim::start(dir.path(), "stick", IMEI, ICCID);
    (dir, decoy, sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_call_with_audio_both_ways_then_hangups() {
    let (dir, decoy, sim) = setup();
    let line = GsmLine::spawn(line_config(dir.path(), &[&decoy, &sim]));
    wait_state(&line, LineState::Idle, Duration::from_secs(10)).await;
    let st = line.status();
    assert_eq!(st.imei.as_deref(), Some(IMEI));
    assert_eq!(st.iccid.as_deref(), Some(ICCID));
    assert_eq!(st.operator.as_deref(), Some("SimNet"));
    assert_eq!(st.signal_dbm, Some(-73));
    assert_eq!(
        st.data_port.as_deref(),
        Some(sim.data_link.to_str().unwrap())
    );
    assert!(decoy.commands().iter().all(|c| c != "ATD015112345678;"));

    // The SIP side: a peer socket, and the line's socket towards it.
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let line_addr: SocketAddr = local.local_addr().unwrap();
    let mut call = line.dial("015112345678").await.expect("dial");
    call.attach_rtp(RtpAttach {
        socket: local,
        remote: Some(peer.local_addr().unwrap()),
        codec: RtpCodec::PCMU,
    })
    .await
    .unwrap();
    let seen = until_answered(&mut call).await;
    assert!(seen.contains(&CallProgress::Ringing), "{seen:?}");
    assert!(sim.saw("ATD015112345678;"));

    // 1.5 s of 440 Hz towards the line, reading what it sends meanwhile.
    let mut pk = Packetizer::new(Law::Ulaw, 0, 1234, 100, 0);
    let mut received: Vec<i16> = Vec::new();
    let mut buf = [0u8; 2048];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for n_frame in 0..75usize {
        tick.tick().await;
        let mut frame = [0i16; FRAME_SAMPLES];
        for (i, s) in frame.iter_mut().enumerate() {
            let n = (n_frame * FRAME_SAMPLES + i) as f64;
            *s = (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * n / 8000.0).sin()) as i16;
        }
        let mut pkt = [0u8; RTP_PACKET_LEN];
        let len = pk.packetize(&frame, &mut pkt);
        peer.send_to(&pkt[..len], line_addr).await.unwrap();
        while let Ok((n, _)) = peer.try_recv_from(&mut buf) {
            let r = Rtp::parse(&buf[..n]).expect("rtp from the line");
            assert_eq!(r.payload_type(), 0);
            received.extend(r.payload().iter().map(|c| g711::ulaw_to_linear(*c)));
        }
    }
    // A DTMF digit as RFC 4733, and one through the API.
    let mut ev = [0u8; 16];
    rtp::write_header(&mut ev, true, 101, 500, 160_000, 1234).unwrap();
    ev[12..16].copy_from_slice(&[5, 0x0a, 0, 160]);
    peer.send_to(&ev, line_addr).await.unwrap();
    call.send_dtmf('9').await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(
        received.len() > 8000 / 2,
        "only {} samples from the line",
        received.len()
    );
    let from_modem = tone_share(&received[received.len() / 4..], 1000.0);
    assert!(
        from_modem > 0.7,
        "1 kHz share of the line's RTP: {from_modem}"
    );
    let recorded = sim.with(|s| s.recorded.clone());
    assert!(
        recorded.len() > 8000 / 2,
        "simulator recorded {} samples",
        recorded.len()
    );
    let tail = &recorded[recorded.len() / 3..];
    let to_modem = tone_share(tail, 440.0);
    eprintln!(
        "line → RTP: {} samples, 1 kHz share {from_modem:.3}; RTP → modem: {} samples, 440 Hz share {to_modem:.3}",
        received.len(),
        recorded.len()
    );
    assert!(
        to_modem > 0.5,
        "440 Hz share of what the modem got: {to_modem}"
    );
    assert!(
        eventually(|| sim.with(|s| s.dtmf.len() >= 2)),
        "{:?}",
        sim.with(|s| s.dtmf.clone())
    );
    let digits = sim.with(|s| s.dtmf.clone());
    assert!(digits.contains(&'5') && digits.contains(&'9'), "{digits:?}");

    // We hang up.
    call.hangup().await.unwrap();
    let end = until_ended(&mut call).await;
    assert_eq!(end.reason, EndReason::LocalHangup);
    assert!(end.answered);
    assert!(eventually(|| sim.saw("AT+CHUP")));
    wait_state(&line, LineState::Idle, Duration::from_secs(3)).await;

    // The other side hangs up.
    let mut call = line.dial("015112345678").await.expect("dial");
    until_answered(&mut call).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    sim.remote_hangup();
    let end = until_ended(&mut call).await;
    assert_eq!(
        (end.reason, end.q850, end.answered),
        (EndReason::Normal, 16, true)
    );
    wait_state(&line, LineState::Idle, Duration::from_secs(3)).await;
    assert_eq!(line.status().calls_served, 2);
    line.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_no_answer_map_to_sip() {
    let (dir, decoy, sim) = setup();
    let line = GsmLine::spawn(line_config(dir.path(), &[&decoy, &sim]));
    wait_state(&line, LineState::Idle, Duration::from_secs(10)).await;

    sim.set_dial(DialBehaviour::Busy);
    let mut call = line.dial("0301234567").await.unwrap();
    let end = until_ended(&mut call).await;
    drop(call);
    assert_eq!(
        (end.reason, end.sip_status, end.q850),
        (EndReason::Busy, 486, 17)
    );
    wait_state(&line, LineState::Idle, Duration::from_secs(3)).await;

    sim.set_dial(DialBehaviour::NoAnswer(Duration::from_millis(600)));
    let mut call = line.dial("0301234567").await.unwrap();
    let mut rang = false;
    let end = loop {
        match next(&mut call).await {
            CallProgress::Ringing => rang = true,
            CallProgress::Ended(c) => break c,
            _ => {}
        }
    };
    assert!(rang);
    assert_eq!(
        (end.reason, end.sip_status, end.q850),
        (EndReason::NoAnswer, 480, 19)
    );
    assert!(!end.answered);

    // Refused before reaching the modem.
    let err = line.dial("030;+CFUN=0").await.unwrap_err();
    assert_eq!(err.sip_status(), 484);

    // Nobody took the incoming calls of this line: a call is rejected at once.
    wait_state(&line, LineState::Idle, Duration::from_secs(3)).await;
    sim.ring("+4915112345678", 145);
    assert!(eventually(|| sim.saw("AT+CHUP")), "{:?}", sim.commands());
    wait_state(&line, LineState::Idle, Duration::from_secs(3)).await;

    // Dropping the line (and its calls) ends its task: the status channel closes.
    let mut w = line.watch_status();
    drop(call);
    drop(line);
    let closed = timeout(Duration::from_secs(3), async {
        while w.changed().await.is_ok() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "line task still running after its handle was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_call_with_clip_is_answered_when_told() {
    let (dir, decoy, sim) = setup();
    let line = GsmLine::spawn(line_config(dir.path(), &[&decoy, &sim]));
    let mut incoming = line.take_incoming().expect("incoming receiver");
    wait_state(&line, LineState::Idle, Duration::from_secs(10)).await;

    sim.ring("+4915112345678", 145);
    let mut inc = timeout(Duration::from_secs(5), incoming.recv())
        .await
        .expect("incoming in time")
        .expect("incoming");
    assert_eq!(inc.info.line, "gsm1");
    assert_eq!(inc.info.number.as_deref(), Some("+4915112345678"));
    assert_eq!(inc.info.toa, Some(145));
    assert_eq!(line.status().state, LineState::Incoming);
    assert!(!sim.saw("ATA"), "answered before being told");
    inc.call.answer().await.unwrap();
    until_answered(&mut inc.call).await;
    assert!(sim.saw("ATA"));
    assert!(eventually(|| sim.saw("AT^DDSETEX=2")));
    sim.remote_hangup();
    let end = until_ended(&mut inc.call).await;
    assert_eq!(end.reason, EndReason::Normal);
    wait_state(&line, LineState::Idle, Duration::from_secs(3)).await;

    // A national number, rejected by hanging up.
    sim.ring("015112345678", 129);
    let mut inc = timeout(Duration::from_secs(5), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (inc.info.number.as_deref(), inc.info.toa),
        (Some("015112345678"), Some(129))
    );
    inc.call.hangup().await.unwrap();
    let end = until_ended(&mut inc.call).await;
    assert_eq!(end.reason, EndReason::LocalHangup);
    wait_state(&line, LineState::Idle, Duration::from_secs(3)).await;

    // A withheld number, and the caller gives up before anyone answers.
    sim.ring("", 128);
    let mut inc = timeout(Duration::from_secs(5), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inc.info.number, None);
    sim.remote_hangup();
    let end = until_ended(&mut inc.call).await;
    assert_eq!((end.reason, end.sip_status), (EndReason::CallerGaveUp, 487));
    wait_state(&line, LineState::Idle, Duration::from_secs(3)).await;
    assert_eq!(line.status().calls_served, 3);
    line.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modem_that_stops_answering_is_reset_and_serves_the_next_call() {
    let (dir, decoy, sim) = setup();
    let line = GsmLine::spawn(line_config(dir.path(), &[&decoy, &sim]));
    wait_state(&line, LineState::Idle, Duration::from_secs(10)).await;
    let mut call = line.dial("0301234567").await.unwrap();
    until_answered(&mut call).await;

    sim.set_silent(true);
    let end = until_ended(&mut call).await;
    assert_eq!((end.reason, end.sip_status), (EndReason::ModemLost, 200));
    assert!(end.answered);
    // Reset seen by the stick, then back in service without a restart.
    wait_state(&line, LineState::Idle, Duration::from_secs(10)).await;
    assert!(eventually(|| sim.saw("AT+CFUN=1,1")));
    let st = line.status();
    assert_eq!(st.resets, 1);
    assert!(st.last_error.is_some());

    let mut call = line.dial("0301234567").await.unwrap();
    until_answered(&mut call).await;
    call.hangup().await.unwrap();
    until_ended(&mut call).await;
    line.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_modem_is_found_again_by_imei() {
    let (dir, decoy, sim) = setup();
    let line = GsmLine::spawn(line_config(dir.path(), &[&decoy, &sim]));
    wait_state(&line, LineState::Idle, Duration::from_secs(10)).await;
    let mut call = line.dial("0301234567").await.unwrap();
    until_answered(&mut call).await;

    sim.vanish();
    let end = until_ended(&mut call).await;
    assert_eq!(end.reason, EndReason::ModemLost);
    wait_state(&line, LineState::Down, Duration::from_secs(5)).await;
    // Refused at once (503) while the line searches for its modem.
    for _ in 0..5 {
        let r = timeout(Duration::from_millis(300), line.dial("0301234567")).await;
        assert_eq!(r.expect("answered at once").unwrap_err().sip_status(), 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(line.status().last_error.is_some());

    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.come_back();
    wait_state(&line, LineState::Idle, Duration::from_secs(10)).await;
    let mut call = line.dial("0301234567").await.unwrap();
    until_answered(&mut call).await;
    sim.remote_hangup();
    until_ended(&mut call).await;
    line.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_back_reaches_the_caller_as_early_media() {
    let (dir, decoy, sim) = setup();
    let line = GsmLine::spawn(line_config(dir.path(), &[&decoy, &sim]));
    wait_state(&line, LineState::Idle, Duration::from_secs(10)).await;
    sim.set_dial(DialBehaviour::Answer(Duration::from_millis(1500)));
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut call = line.dial("015112345678").await.expect("dial");
    call.attach_rtp(RtpAttach {
        socket: local,
        remote: Some(peer.local_addr().unwrap()),
        codec: RtpCodec::PCMA,
    })
    .await
    .unwrap();
    let mut early = Vec::new();
    let mut after = Vec::new();
    let mut answered = false;
    let mut saw_early = false;
    let mut buf = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        tokio::select! {
            ev = call.next_event() => match ev {
                Some(CallProgress::EarlyMedia) => saw_early = true,
                Some(CallProgress::Answered) => answered = true,
                Some(CallProgress::Ended(c)) => panic!("ended: {c}"),
                _ => {}
            },
            r = peer.recv_from(&mut buf) => {
                let (n, _) = r.unwrap();
                let r = Rtp::parse(&buf[..n]).unwrap();
                assert_eq!(r.payload_type(), 8);
                let pcm = r.payload().iter().map(|c| g711::alaw_to_linear(*c));
                if answered { after.extend(pcm) } else { early.extend(pcm) }
            }
        }
    }
    assert!(saw_early && answered);
    // Leave out the moments around the answer (events and packets race).
    let ring = tone_share(&early[early.len() / 3..early.len() * 2 / 3], 425.0);
    let far = tone_share(&after[after.len() / 3..], 1000.0);
    eprintln!(
        "before the answer: {} samples, 425 Hz share {ring:.3}; after: {} samples, 1 kHz share {far:.3}",
        early.len(),
        after.len()
    );
    assert!(ring > 0.7 && far > 0.7);
    call.hangup().await.unwrap();
    until_ended(&mut call).await;
    line.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_dials_on_the_first_idle_line_and_reports_status() {
    use pasarela::pstn::gsm::config::ModemConfig;
    use pasarela::pstn::LinePool;
    let dir = tempfile::tempdir().unwrap();
    let a = Sim::start(dir.path(), "a", IMEI, ICCID);
    let b = Sim::start(dir.path(), "b", "353142034567892", "8949226012345678902");
    let mut cfg_a = line_config(dir.path(), &[&a]);
    cfg_a.line.name = "gsm-a".into();
    let mut cfg_b = line_config(dir.path(), &[&b]);
    cfg_b.line.name = "gsm-b".into();
    cfg_b.ports = PortSpec::Fixed(PortPair {
        data: b.data_link.clone(),
        audio: b.audio_link.clone(),
    });
    let modems = vec![
        ModemConfig {
            line: cfg_a,
            incoming: vec!["100".into()],
            enabled: true,
        },
        ModemConfig {
            line: cfg_b,
            incoming: vec!["101".into()],
            enabled: true,
        },
    ];
    let statuses = LinePool::probe_status(&modems, Duration::from_secs(10)).await;
    assert_eq!(statuses.len(), 2);
    assert!(
        statuses.iter().all(|s| s.state == LineState::Idle),
        "{statuses:?}"
    );
    assert_eq!(statuses[1].imei.as_deref(), Some("353142034567892"));
    eprintln!("{}", statuses[0].summary());

    let pool = LinePool::spawn(&modems);
    for l in pool.lines() {
        wait_state(l.as_ref(), LineState::Idle, Duration::from_secs(10)).await;
    }
    assert_eq!(pool.incoming_extensions("gsm-b"), ["101".to_string()]);
    let mut first = pool.dial("0301234567", None).await.unwrap();
    let mut second = pool.dial("0307654321", None).await.unwrap();
    assert_eq!((first.line(), second.line()), ("gsm-a", "gsm-b"));
    until_answered(&mut first).await;
    let err = pool.dial("0301111111", None).await.unwrap_err();
    assert_eq!(err.sip_status(), 486);
    second.hangup().await.unwrap();
    until_ended(&mut second).await;
    let mut incoming = pool.take_incoming();
    b.ring("+4915112345678", 145);
    let inc = timeout(Duration::from_secs(6), incoming.recv())
        .await
        .expect("incoming in time")
        .expect("incoming");
    assert_eq!(inc.info.line, "gsm-b");
    drop(inc);
    first.hangup().await.unwrap();
    until_ended(&mut first).await;
    pool.shutdown().await;
}
