//! A Huawei voice-stick simulator for tests: two pseudo-terminals (AT port and audio port)
//! reachable through stable symlinks, answering the AT dialogue of an E173 (identity, SIM,
//! registration, signal, calls with ^ORIG/^CONF/^CONN/^CEND, RING/+CLIP, DTMF, CFUN reset),
//! playing a tone as 8 kHz s16le PCM during a connected call and recording what it receives.
//! It can be told to stop answering or to vanish (ptys closed, symlinks removed) and to come
//! back on new ptys. It runs on its own thread with the wall clock.
//!
//! Text messages (PDU mode): a SIM store that `AT+CMGL`, `AT+CMGR` and `AT+CMGD` read and
//! delete, [`Sim::deliver_sms`] stores a PDU and announces it with `+CMTI`, `AT+CMGS` takes a
//! PDU after its `> ` prompt (recorded in [`SimState::sent_pdus`]) and, when
//! [`SimState::status_reports`] is on, stores a status report announced with `+CDSI`;
//! `AT+CUSD` answers with [`SimState::ussd_answer`] as a `+CUSD` URC, and
//! [`Sim::network_ussd`] sends one nobody asked for. After `AT+CNMI=2,2,0,1,0` (direct
//! delivery) messages come as `+CMT` and status reports as `+CDS`, each waiting for `AT+CNMA`:
//! one not acknowledged within [`CNMA_WAIT`] is delivered again, as a network does.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What happens to an outgoing call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialBehaviour {
    /// Rings, then answers after this long.
    Answer(Duration),
    /// The callee is busy (cause 17).
    Busy,
    /// Rings, then the network gives up after this long (cause 19).
    NoAnswer(Duration),
}

/// Shared state of the simulator, also read by the tests.
#[derive(Debug)]
pub struct SimState {
    pub imei: String,
    pub iccid: String,
    pub dial: DialBehaviour,
    /// Every command line received, in order.
    pub commands: Vec<String>,
    /// DTMF digits received with AT^DTMF.
    pub dtmf: Vec<char>,
    /// Samples the line wrote to the audio port while a call was connected.
    pub recorded: Vec<i16>,
    /// Tone played towards the line (Hz).
    pub tone_hz: f64,
    /// When true, commands are read and recorded but never answered.
    pub silent: bool,
    /// Number of times the stick "rebooted" (AT+CFUN=1,1).
    pub reboots: u32,
    call: Option<SimCall>,
    pending: Vec<(Instant, String)>,
    echo: bool,
    audio_on: bool,
    ring_next: Option<Instant>,
    incoming_number: Option<(String, u8)>,
    phase: f64,
    next_frame: Option<Instant>,
    vanish: bool,
    rebuild: bool,
    /// The SIM's message store: index → PDU (hex, with SMSC).
    pub sim_store: std::collections::BTreeMap<u32, String>,
    /// PDUs received with AT+CMGS, in order.
    pub sent_pdus: Vec<String>,
    /// Whether a status report follows each AT+CMGS.
    pub status_reports: bool,
    /// The `+CUSD` answer: (text as sent on the wire, dcs).
    pub ussd_answer: (String, u16),
    /// USSD codes received.
    pub ussd_codes: Vec<String>,
    /// When set, AT+CMGD fails (the modem "forgets" to delete).
    pub fail_delete: bool,
    /// The TPDU length of the AT+CMGS waiting for its PDU.
    awaiting_pdu: Option<usize>,
    /// Direct delivery (`AT+CNMI=2,2,…`): messages as `+CMT`, not stored.
    pub direct: bool,
    /// Status reports as `+CDS` (`AT+CNMI=…,…,…,1,…`), not stored.
    pub direct_reports: bool,
    /// `AT+CNMA` received.
    pub acks: u32,
    /// How many `+CMT`/`+CDS` had been sent when each `AT+CNMA` came.
    pub acked_after: Vec<u32>,
    /// `+CMT`/`+CDS` sent (first deliveries and repeats).
    pub direct_sent: u32,
    /// Handed over directly and not acknowledged yet: (when it goes again, the URC).
    unacked: std::collections::VecDeque<(Instant, String)>,
    next_mr: u8,
}

#[derive(Debug, Clone, Copy)]
struct SimCall {
    connected: Option<Instant>,
    incoming: bool,
    alerting: bool,
}

/// A running simulator.
pub struct Sim {
    pub state: Arc<Mutex<SimState>>,
    pub dir: PathBuf,
    pub data_link: PathBuf,
    pub audio_link: PathBuf,
    stop: Arc<Mutex<bool>>,
}

struct Pty {
    master: File,
    slave_path: PathBuf,
}

fn open_pty() -> std::io::Result<Pty> {
    // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes into our buffer.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let master = File::from_raw_fd(fd);
        if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .into_owned();
        let mut tio: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut tio) == 0 {
            libc::cfmakeraw(&mut tio);
            libc::tcsetattr(fd, libc::TCSANOW, &tio);
        }
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        Ok(Pty {
            master,
            slave_path: PathBuf::from(path),
        })
    }
}

fn link(target: &Path, link: &Path) {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

impl Sim {
    /// Starts a simulator with these identities, its symlinks in `dir`.
    pub fn start(dir: &Path, name: &str, imei: &str, iccid: &str) -> Sim {
        let state = Arc::new(Mutex::new(SimState {
            imei: imei.into(),
            iccid: iccid.into(),
            dial: DialBehaviour::Answer(Duration::from_millis(300)),
            commands: Vec::new(),
            dtmf: Vec::new(),
            recorded: Vec::new(),
            tone_hz: 1000.0,
            silent: false,
            reboots: 0,
            call: None,
            pending: Vec::new(),
            echo: true,
            audio_on: false,
            ring_next: None,
            incoming_number: None,
            phase: 0.0,
            next_frame: None,
            vanish: false,
            rebuild: false,
            sim_store: Default::default(),
            sent_pdus: Vec::new(),
            status_reports: true,
            ussd_answer: ("Balance: 12,34 EUR".into(), 15),
            ussd_codes: Vec::new(),
            fail_delete: false,
            awaiting_pdu: None,
            next_mr: 1,
            direct: false,
            direct_reports: false,
            acks: 0,
            acked_after: Vec::new(),
            direct_sent: 0,
            unacked: Default::default(),
        }));
        let data_link = dir.join(format!("{name}-data"));
        let audio_link = dir.join(format!("{name}-audio"));
        let stop = Arc::new(Mutex::new(false));
        let sim = Sim {
            state: state.clone(),
            dir: dir.to_path_buf(),
            data_link: data_link.clone(),
            audio_link: audio_link.clone(),
            stop: stop.clone(),
        };
        thread::spawn(move || run(state, stop, data_link, audio_link));
        // Wait for the links.
        let t0 = Instant::now();
        while !sim.data_link.exists() && t0.elapsed() < Duration::from_secs(2) {
            thread::sleep(Duration::from_millis(5));
        }
        sim
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        f(&mut self.state.lock().expect("sim state"))
    }

    pub fn set_dial(&self, d: DialBehaviour) {
        self.with(|s| s.dial = d);
    }

    /// An incoming call: RING and +CLIP now and every 2 s until answered or ended.
    pub fn ring(&self, number: &str, toa: u8) {
        self.with(|s| {
            s.incoming_number = Some((number.into(), toa));
            s.call = Some(SimCall {
                connected: None,
                incoming: true,
                alerting: false,
            });
            s.ring_next = Some(Instant::now());
        });
    }

    /// The remote party hangs up.
    pub fn remote_hangup(&self) {
        self.with(|s| {
            if let Some(c) = s.call.take() {
                let dur = c.connected.map_or(0, |t| t.elapsed().as_secs());
                s.pending
                    .push((Instant::now(), format!("^CEND:1,{dur},104,16")));
                s.audio_on = false;
                s.ring_next = None;
            }
        });
    }

    pub fn set_silent(&self, silent: bool) {
        self.with(|s| s.silent = silent);
    }

    /// Closes both ptys and removes the links (the USB device vanished).
    pub fn vanish(&self) {
        self.with(|s| s.vanish = true);
        let t0 = Instant::now();
        while self.data_link.exists() && t0.elapsed() < Duration::from_secs(2) {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// New ptys, links back (the device re-enumerated).
    pub fn come_back(&self) {
        self.with(|s| s.rebuild = true);
        let t0 = Instant::now();
        while !self.data_link.exists() && t0.elapsed() < Duration::from_secs(2) {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// A USSD message the network sends on its own (`m` 0: notice, 1: it waits for a reply).
    pub fn network_ussd(&self, m: u8, text: &str, dcs: u16) {
        self.with(|s| {
            s.pending
                .push((Instant::now(), format!("+CUSD: {m},\"{text}\",{dcs}")))
        });
    }

    /// An SMS arrives: stored on the SIM and announced with `+CMTI` (`announce` false: stored
    /// only, as while the modem was not being read); in direct mode handed over as `+CMT`
    /// (then the index is `u32::MAX`). Returns its index.
    pub fn deliver_sms(&self, pdu: &str, announce: bool) -> u32 {
        self.with(|s| {
            if s.direct {
                let urc = format!("+CMT: ,{}\r\n{pdu}", (pdu.len() / 2).saturating_sub(1));
                s.pending.push((Instant::now(), urc));
                return u32::MAX;
            }
            let index = store_pdu(s, pdu);
            if announce {
                s.pending
                    .push((Instant::now(), format!("+CMTI: \"SM\",{index}")));
            }
            index
        })
    }

    /// The PDUs on the SIM.
    pub fn sim_pdus(&self) -> Vec<String> {
        self.with(|s| s.sim_store.values().cloned().collect())
    }

    pub fn commands(&self) -> Vec<String> {
        self.with(|s| s.commands.clone())
    }

    pub fn saw(&self, cmd: &str) -> bool {
        self.with(|s| s.commands.iter().any(|c| c == cmd))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Ok(mut s) = self.stop.lock() {
            *s = true;
        }
    }
}

/// Stores a PDU at the lowest free index.
/// How long a `+CMT`/`+CDS` waits for `AT+CNMA` before it is delivered again.
pub const CNMA_WAIT: Duration = Duration::from_secs(10);

fn store_pdu(s: &mut SimState, pdu: &str) -> u32 {
    let index = (0..).find(|i| !s.sim_store.contains_key(i)).unwrap_or(0);
    s.sim_store.insert(index, pdu.to_string());
    index
}

/// A STATUS-REPORT PDU (delivered) for message reference `mr`.
fn status_report_pdu(mr: u8) -> String {
    format!("0006{mr:02X}0C9194711032547652211030000040522110300010400000")
}

fn read_nb(f: &mut File, buf: &mut [u8]) -> Option<usize> {
    match f.read(buf) {
        Ok(n) if n > 0 => Some(n),
        _ => None, // EAGAIN, or EIO while nobody has the slave open
    }
}

fn run(
    state: Arc<Mutex<SimState>>,
    stop: Arc<Mutex<bool>>,
    data_link: PathBuf,
    audio_link: PathBuf,
) {
    let mut ports: Option<(Pty, Pty)> = None;
    let mut line_buf: Vec<u8> = Vec::new();
    let mut audio_in: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let build = |ports: &mut Option<(Pty, Pty)>| {
        let d = open_pty().expect("pty");
        let a = open_pty().expect("pty");
        link(&d.slave_path, &data_link);
        link(&a.slave_path, &audio_link);
        *ports = Some((d, a));
    };
    build(&mut ports);
    loop {
        if stop.lock().map(|s| *s).unwrap_or(true) {
            let _ = std::fs::remove_file(&data_link);
            let _ = std::fs::remove_file(&audio_link);
            return;
        }
        {
            let mut s = state.lock().expect("state");
            if s.vanish {
                s.vanish = false;
                let _ = std::fs::remove_file(&data_link);
                let _ = std::fs::remove_file(&audio_link);
                ports = None;
                s.call = None;
                s.audio_on = false;
                s.pending.clear();
                s.ring_next = None;
                s.echo = true;
            }
            if s.rebuild {
                s.rebuild = false;
                drop(s);
                build(&mut ports);
                continue;
            }
        }
        let Some((data, audio)) = &mut ports else {
            thread::sleep(Duration::from_millis(5));
            continue;
        };
        let fds = [data.master.as_raw_fd(), audio.master.as_raw_fd()];
        let mut pfd: Vec<libc::pollfd> = fds
            .iter()
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: pfd is a valid array of pollfd for the duration of the call.
        unsafe { libc::poll(pfd.as_mut_ptr(), 2, 2) };
        let mut out: Vec<u8> = Vec::new();
        while let Some(n) = read_nb(&mut data.master, &mut buf) {
            line_buf.extend_from_slice(&buf[..n]);
        }
        loop {
            // After the `> ` prompt of AT+CMGS: the PDU, ended by Ctrl-Z (or ESC to cancel).
            let awaiting = state.lock().expect("state").awaiting_pdu;
            if let Some(len) = awaiting {
                let Some(pos) = line_buf.iter().position(|&b| b == 0x1A || b == 0x1B) else {
                    break;
                };
                let raw: Vec<u8> = line_buf.drain(..=pos).collect();
                let mut s = state.lock().expect("state");
                s.awaiting_pdu = None;
                if raw.last() == Some(&0x1B) {
                    out.extend_from_slice(b"\r\nOK\r\n");
                    continue;
                }
                let pdu = String::from_utf8_lossy(&raw[..raw.len() - 1])
                    .trim()
                    .to_string();
                let tpdu_ok = pdu.len() >= 2 && (pdu.len() / 2).saturating_sub(1) == len;
                s.sent_pdus.push(pdu);
                if !tpdu_ok {
                    out.extend_from_slice(b"\r\n+CMS ERROR: 304\r\n");
                    continue;
                }
                let mr = s.next_mr;
                s.next_mr = s.next_mr.wrapping_add(1);
                out.extend_from_slice(format!("\r\n+CMGS: {mr}\r\n\r\nOK\r\n").as_bytes());
                if s.status_reports && s.direct_reports {
                    let pdu = status_report_pdu(mr);
                    s.pending.push((
                        Instant::now() + Duration::from_millis(300),
                        format!("+CDS: {}\r\n{pdu}", (pdu.len() / 2).saturating_sub(1)),
                    ));
                } else if s.status_reports {
                    let index = store_pdu(&mut s, &status_report_pdu(mr));
                    s.pending.push((
                        Instant::now() + Duration::from_millis(300),
                        format!("+CDSI: \"SM\",{index}"),
                    ));
                }
                continue;
            }
            let Some(pos) = line_buf.iter().position(|&b| b == b'\r' || b == b'\n') else {
                break;
            };
            let line: Vec<u8> = line_buf.drain(..=pos).collect();
            let cmd = String::from_utf8_lossy(&line[..line.len() - 1])
                .trim()
                .to_string();
            if cmd.is_empty() {
                continue;
            }
            let mut s = state.lock().expect("state");
            s.commands.push(cmd.clone());
            if s.silent && !cmd.starts_with("AT+CFUN=1,1") {
                continue;
            }
            if s.echo {
                out.extend_from_slice(cmd.as_bytes());
                out.push(b'\r');
            }
            for l in answer(&mut s, &cmd) {
                if l == "@prompt" {
                    out.extend_from_slice(b"\r\n> ");
                    continue;
                }
                out.extend_from_slice(format!("\r\n{l}\r\n").as_bytes());
            }
        }
        let now = Instant::now();
        {
            let mut s = state.lock().expect("state");
            // Scheduled URCs.
            let mut due: Vec<(Instant, String)> = Vec::new();
            s.pending.retain(|(t, l)| {
                if *t <= now {
                    due.push((*t, l.clone()));
                    false
                } else {
                    true
                }
            });
            due.sort();
            for (_, l) in due {
                if let Some(rest) = l.strip_prefix("@connect") {
                    let _ = rest;
                    if let Some(c) = &mut s.call {
                        c.connected = Some(now);
                        out.extend_from_slice(b"\r\n^CONN:1,0\r\n");
                    }
                    continue;
                }
                if l.starts_with("^CONF") {
                    if let Some(c) = &mut s.call {
                        c.alerting = true;
                    }
                }
                if l.starts_with("^CEND") {
                    s.call = None;
                    s.audio_on = false;
                }
                if l.starts_with("+CMT:") || l.starts_with("+CDS:") {
                    s.direct_sent += 1;
                    s.unacked.push_back((now + CNMA_WAIT, l.clone()));
                }
                out.extend_from_slice(format!("\r\n{l}\r\n").as_bytes());
            }
            // Handed over and never acknowledged: the network tries again.
            while s.unacked.front().is_some_and(|(t, _)| *t <= now) {
                if let Some((_, l)) = s.unacked.pop_front() {
                    s.pending.push((now, l));
                }
            }
            if let Some(t) = s.ring_next {
                if t <= now && !s.silent {
                    if let Some((n, toa)) = s.incoming_number.clone() {
                        out.extend_from_slice(
                            format!("\r\nRING\r\n\r\n+CLIP: \"{n}\",{toa},,,,0\r\n").as_bytes(),
                        );
                    }
                    s.ring_next = Some(now + Duration::from_secs(2));
                }
            }
            // Audio: one frame every 20 ms while routed: the ring-back tone (425 Hz) while
            // alerting, the far end's tone once connected.
            let connected = s.call.is_some_and(|c| c.connected.is_some() || c.alerting);
            let hz = if s.call.is_some_and(|c| c.connected.is_some()) {
                s.tone_hz
            } else {
                425.0
            };
            if connected && s.audio_on {
                let next = *s.next_frame.get_or_insert(now);
                if now >= next {
                    let mut frame = [0u8; 320];
                    for i in 0..160 {
                        let v = (8000.0 * s.phase.sin()) as i16;
                        s.phase += 2.0 * std::f64::consts::PI * hz / 8000.0;
                        frame[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
                    }
                    s.phase %= 2.0 * std::f64::consts::PI;
                    let _ = audio.master.write(&frame);
                    s.next_frame = Some(next + Duration::from_millis(20));
                }
            } else {
                s.next_frame = None;
            }
            while let Some(n) = read_nb(&mut audio.master, &mut buf) {
                if connected && s.audio_on {
                    audio_in.extend_from_slice(&buf[..n]);
                }
            }
            while audio_in.len() >= 2 {
                let v = i16::from_le_bytes([audio_in[0], audio_in[1]]);
                audio_in.drain(..2);
                s.recorded.push(v);
            }
        }
        if !out.is_empty() {
            let _ = data.master.write_all(&out);
        }
    }
}

fn answer(s: &mut SimState, cmd: &str) -> Vec<String> {
    let ok = || vec!["OK".to_string()];
    let now = Instant::now();
    let upper = cmd.to_ascii_uppercase();
    match upper.as_str() {
        "AT" | "AT+CMEE=1" | "AT+CLIP=1" | "AT+CREG=2" | "AT+CRC=0" | "AT+CMGF=0" => ok(),
        "AT+CMGL=4" => {
            let mut r = Vec::new();
            for (i, pdu) in &s.sim_store {
                r.push(format!(
                    "+CMGL: {i},1,,{}",
                    (pdu.len() / 2).saturating_sub(1)
                ));
                r.push(pdu.clone());
            }
            r.push("OK".into());
            r
        }
        _ if upper.starts_with("AT+CNMI=") => {
            // <mode>,<mt>,<bm>,<ds>,<bfr>: mt 2 hands messages over (+CMT), ds 1 reports (+CDS).
            let p: Vec<&str> = upper["AT+CNMI=".len()..].split(',').collect();
            s.direct = p.get(1).is_some_and(|v| v.trim() == "2");
            s.direct_reports = p.get(3).is_some_and(|v| v.trim() == "1");
            ok()
        }
        "AT+CSMS=1" => vec!["+CSMS: 1,1,1".into(), "OK".into()],
        "AT+CNMA" => {
            if s.unacked.pop_front().is_some() {
                s.acks += 1;
                let sent = s.direct_sent;
                s.acked_after.push(sent);
                ok()
            } else {
                vec!["+CMS ERROR: 340".into()]
            }
        }
        _ if upper.starts_with("AT+CMGR=") => {
            let index: Option<u32> = upper["AT+CMGR=".len()..].trim().parse().ok();
            match index.and_then(|i| s.sim_store.get(&i)) {
                Some(pdu) => vec![
                    format!("+CMGR: 1,,{}", (pdu.len() / 2).saturating_sub(1)),
                    pdu.clone(),
                    "OK".into(),
                ],
                None => vec!["+CMS ERROR: 321".into()],
            }
        }
        _ if upper.starts_with("AT+CMGD=") => {
            if s.fail_delete {
                return vec!["+CMS ERROR: 500".into()];
            }
            if let Ok(i) = upper["AT+CMGD=".len()..].trim().parse::<u32>() {
                s.sim_store.remove(&i);
            }
            ok()
        }
        _ if upper.starts_with("AT+CMGS=") => match upper["AT+CMGS=".len()..].trim().parse() {
            Ok(len) => {
                s.awaiting_pdu = Some(len);
                vec!["@prompt".into()]
            }
            Err(_) => vec!["+CMS ERROR: 304".into()],
        },
        _ if upper.starts_with("AT+CUSD=1,") => {
            let code = cmd.split('"').nth(1).unwrap_or_default().to_string();
            s.ussd_codes.push(code);
            let (text, dcs) = s.ussd_answer.clone();
            s.pending.push((
                now + Duration::from_millis(200),
                format!("+CUSD: 0,\"{text}\",{dcs}"),
            ));
            ok()
        }
        "ATZ" => {
            s.echo = true;
            ok()
        }
        "ATE0" => {
            s.echo = false;
            ok()
        }
        "ATE1" => {
            s.echo = true;
            ok()
        }
        "AT^CVOICE?" => vec!["^CVOICE:0,8000,16,20".into(), "OK".into()],
        "AT+CGSN" => vec![s.imei.clone(), "OK".into()],
        "AT^ICCID?" => vec![format!("^ICCID: {}F", s.iccid), "OK".into()],
        "AT+CPIN?" => vec!["+CPIN: READY".into(), "OK".into()],
        "AT+CREG?" => vec!["+CREG: 2,1,\"00C3\",\"0000B2A1\"".into(), "OK".into()],
        "AT+COPS?" => vec!["+COPS: 0,0,\"SimNet\",2".into(), "OK".into()],
        "AT+CSQ" => vec!["+CSQ: 20,99".into(), "OK".into()],
        "AT^DDSETEX=2" => {
            s.audio_on = true;
            ok()
        }
        "AT+CFUN=1,1" => {
            s.reboots += 1;
            s.silent = false;
            s.call = None;
            s.audio_on = false;
            s.pending.clear();
            s.echo = true;
            s.pending.push((
                now + Duration::from_millis(100),
                "^BOOT:20362713,0,0,0,72".into(),
            ));
            ok()
        }
        "AT+CHUP" => {
            let mut r = Vec::new();
            if let Some(c) = s.call.take() {
                let dur = c.connected.map_or(0, |t| t.elapsed().as_secs());
                r.push(format!("^CEND:1,{dur},104,16"));
            }
            s.audio_on = false;
            s.ring_next = None;
            s.pending.clear();
            r.push("OK".into());
            r
        }
        "ATA" => match &mut s.call {
            Some(c) if c.incoming && c.connected.is_none() => {
                c.connected = Some(now);
                s.ring_next = None;
                vec!["OK".into(), "^CONN:1,1".into()]
            }
            _ => vec!["NO CARRIER".into()],
        },
        _ if upper.starts_with("AT^DTMF=") => {
            if let Some(d) = cmd.rsplit(',').next().and_then(|d| d.chars().next()) {
                s.dtmf.push(d);
            }
            ok()
        }
        _ if upper.starts_with("ATD") && upper.ends_with(';') => {
            if s.call.is_some() {
                return vec!["ERROR".into()];
            }
            s.call = Some(SimCall {
                connected: None,
                incoming: false,
                alerting: false,
            });
            let t = |ms: u64| now + Duration::from_millis(ms);
            s.pending.push((t(50), "^ORIG:1,0".into()));
            match s.dial {
                DialBehaviour::Answer(after) => {
                    s.pending.push((t(150), "^CONF:1".into()));
                    s.pending.push((
                        now + after.max(Duration::from_millis(200)),
                        "@connect".into(),
                    ));
                }
                DialBehaviour::Busy => {
                    s.pending.push((t(200), "^CEND:1,0,104,17".into()));
                }
                DialBehaviour::NoAnswer(after) => {
                    s.pending.push((t(150), "^CONF:1".into()));
                    s.pending.push((
                        now + after.max(Duration::from_millis(200)),
                        "^CEND:1,0,104,19".into(),
                    ));
                }
            }
            ok()
        }
        _ => vec!["ERROR".into()],
    }
}

/// Power of `freq` in `samples` (Goertzel), as a share of the total power (1.0: a pure tone).
pub fn tone_ratio(samples: &[i16], freq: f64) -> f64 {
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

/// The share of `freq` in `samples`: the median over the 50 ms windows that are not silent.
/// Robust to the silence and phase jumps a jitter buffer makes when it drops, conceals or pads
/// a frame under load.
pub fn tone_share(samples: &[i16], freq: f64) -> f64 {
    let mut windows: Vec<f64> = samples
        .chunks_exact(400)
        .filter(|w| {
            let energy: f64 = w.iter().map(|x| f64::from(*x).powi(2)).sum();
            (energy / w.len() as f64).sqrt() > 300.0
        })
        .map(|w| tone_ratio(w, freq))
        .collect();
    if windows.is_empty() {
        return 0.0;
    }
    windows.sort_by(f64::total_cmp);
    windows[windows.len() / 2]
}

/// Waits up to 2 s for `f` to hold.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    f()
}
