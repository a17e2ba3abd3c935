//! A headless baresip phone for tests (the harness of `calls_baresip.rs`, shared): `aufile`
//! plays a generated tone, `sndfile` records what is received, `ctrl_tcp` takes commands and
//! reports events; plus WAV reading and Goertzel tone checks.
#![allow(dead_code)]

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, require_program, Server};

pub const MODULE_PATH: &str = "/usr/lib/baresip/modules";
pub const RATE: u32 = 8000;

// ---------------------------------------------------------------------------------------------
// WAV and tone analysis

/// Writes an 8 kHz mono 16-bit WAV with a sine of `hz` for `secs`.
pub fn write_tone(path: &Path, hz: f64, secs: f64) {
    let n = (RATE as f64 * secs) as usize;
    let mut data = Vec::with_capacity(n * 2);
    for i in 0..n {
        let v = (12000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / RATE as f64).sin()) as i16;
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut f = File::create(path).expect("create wav");
    let mut h = Vec::new();
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // PCM
    h.extend_from_slice(&1u16.to_le_bytes()); // mono
    h.extend_from_slice(&RATE.to_le_bytes());
    h.extend_from_slice(&(RATE * 2).to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&(data.len() as u32).to_le_bytes());
    f.write_all(&h).unwrap();
    f.write_all(&data).unwrap();
}

/// The samples of a 16-bit PCM WAV (first channel), with its sample rate.
pub fn read_wav(path: &Path) -> Result<(u32, Vec<i16>), String> {
    let b = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err(format!("{}: not a RIFF/WAVE file", path.display()));
    }
    let (mut rate, mut channels, mut bits) = (0u32, 1u16, 16u16);
    let mut i = 12;
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let len = u32::from_le_bytes(b[i + 4..i + 8].try_into().unwrap()) as usize;
        let body = &b[i + 8..(i + 8 + len).min(b.len())];
        if id == b"fmt " && body.len() >= 16 {
            channels = u16::from_le_bytes([body[2], body[3]]);
            rate = u32::from_le_bytes(body[4..8].try_into().unwrap());
            bits = u16::from_le_bytes([body[14], body[15]]);
        } else if id == b"data" {
            if bits != 16 {
                return Err(format!("{}: {bits}-bit samples", path.display()));
            }
            let step = 2 * channels.max(1) as usize;
            let s = body
                .chunks_exact(step)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return Ok((rate, s));
        }
        i += 8 + len + (len & 1);
    }
    Err(format!("{}: no data chunk", path.display()))
}

/// Goertzel power of `hz` in `x`, normalised by the length.
pub fn goertzel(x: &[i16], rate: u32, hz: f64) -> f64 {
    let k = 2.0 * (2.0 * std::f64::consts::PI * hz / rate as f64).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = v as f64 + k * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / (x.len().max(1) as f64).powi(2)
}

pub const PROBES: [f64; 7] = [300.0, 440.0, 700.0, 1000.0, 1300.0, 1700.0, 2200.0];

/// Asserts that `hz` dominates the received audio in `wav` (at least 1 s of it, and 20× the
/// power of each other probe frequency).
pub fn assert_tone(wav: &Path, hz: f64, who: &str, logs: &str) {
    let (rate, x) = read_wav(wav).unwrap_or_else(|e| panic!("{who}: {e}\n{logs}"));
    assert!(
        x.len() >= rate as usize,
        "{who}: only {} samples received in {} (expected at least 1 s)\n{logs}",
        x.len(),
        wav.display()
    );
    let powers: Vec<(f64, f64)> = PROBES.iter().map(|&f| (f, goertzel(&x, rate, f))).collect();
    let target = goertzel(&x, rate, hz);
    let desc = powers
        .iter()
        .map(|(f, p)| format!("{f} Hz: {p:.3e}"))
        .collect::<Vec<_>>()
        .join(", ");
    assert!(
        target > 0.0,
        "{who}: no {hz} Hz energy in {} ({desc})\n{logs}",
        wav.display()
    );
    for (f, p) in &powers {
        if (*f - hz).abs() > 1.0 {
            assert!(
                target > 20.0 * p,
                "{who}: expected a {hz} Hz tone in what was received ({}), but {f} Hz is as \
                 strong: powers {desc}\n{logs}",
                wav.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// baresip with ctrl_tcp

pub struct Phone {
    pub name: String,
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
    pub sip_port: u16,
    ctrl: Option<TcpStream>,
    events: mpsc::Receiver<String>,
    pub seen: Vec<String>,
    token: u32,
}

impl Drop for Phone {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() {
            eprintln!("baresip {} log: {}", self.name, self.log.display());
        }
    }
}

pub struct PhoneCfg<'a> {
    pub name: &'a str,
    pub ext: &'a str,
    pub answer: &'a str, // auto | manual
    pub tone_hz: f64,
    pub tone_secs: f64,
}

impl Phone {
    pub fn start(base: &Path, server: SocketAddr, cfg: PhoneCfg) -> Phone {
        Phone::start_full(base, server, cfg, "udp", "", None, "")
    }

    /// [`Phone::start`] with extra lines for baresip's `config` (modules, settings) and extra
    /// account parameters (`;mediaenc=srtp-mand`).
    pub fn start_with(
        base: &Path,
        server: SocketAddr,
        cfg: PhoneCfg,
        config_extra: &str,
        account_extra: &str,
    ) -> Phone {
        Phone::start_full(base, server, cfg, "udp", config_extra, None, account_extra)
    }

    /// [`Phone::start_over`] with `account` as the whole accounts line (for a phone that
    /// does not register, e.g. `<sip:alice@target.test>;regint=0;answermode=auto`).
    pub fn start_account(base: &Path, cfg: PhoneCfg, account: &str, extra: &str) -> Phone {
        let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
        Phone::start_full(base, unused, cfg, "udp", extra, Some(account), "")
    }

    /// [`Phone::start`] registering over `transport` (`udp`, `tcp`, `tls`), with `extra` lines
    /// appended to baresip's config (e.g. `sip_cafile FILE`).
    pub fn start_over(
        base: &Path,
        server: SocketAddr,
        cfg: PhoneCfg,
        transport: &str,
        extra: &str,
        account: Option<&str>,
    ) -> Phone {
        Phone::start_full(base, server, cfg, transport, extra, account, "")
    }

    /// The phone: registering over `transport` unless `account` is its whole accounts line,
    /// with `extra` config lines and `account_extra` account parameters.
    fn start_full(
        base: &Path,
        server: SocketAddr,
        cfg: PhoneCfg,
        transport: &str,
        extra: &str,
        account: Option<&str>,
        account_extra: &str,
    ) -> Phone {
        require_program("baresip", "baresip");
        for m in [
            "g711.so",
            "aufile.so",
            "alsa.so",
            "sndfile.so",
            "ctrl_tcp.so",
        ] {
            assert!(
                Path::new(MODULE_PATH).join(m).is_file(),
                "baresip module {m} not found in {MODULE_PATH}: install the Debian package `baresip`"
            );
        }
        let dir = base.join(format!("baresip-{}", cfg.name));
        let rec = dir.join("rec");
        fs::create_dir_all(&rec).unwrap();
        let wav = dir.join("source.wav");
        write_tone(&wav, cfg.tone_hz, cfg.tone_secs);
        // baresip binds TLS on sip_listen + 1.
        let sip_port = common::free_ports(2);
        let ctrl_port = common::free_port();
        fs::write(
            dir.join("config"),
            format!(
                "poll_method\t\tpoll\n\
                 sip_listen\t\t127.0.0.1:{sip_port}\n\
                 net_interface\t\t127.0.0.1\n\
                 rtp_ports\t\t10000-19999\n\
                 module_path\t\t{MODULE_PATH}\n\
                 module\t\t\tg711.so\n\
                 module\t\t\talsa.so\n\
                 module\t\t\taufile.so\n\
                 module\t\t\tsndfile.so\n\
                 module_app\t\taccount.so\n\
                 module_app\t\tmenu.so\n\
                 module_app\t\tctrl_tcp.so\n\
                 ctrl_tcp_listen\t\t127.0.0.1:{ctrl_port}\n\
                 audio_player\t\talsa,null\n\
                 audio_source\t\taufile,{}\n\
                 snd_path\t\t{}\n{extra}",
                wav.display(),
                rec.display()
            ),
        )
        .unwrap();
        let ext = cfg.ext;
        fs::write(
            dir.join("accounts"),
            account.map(|a| format!("{a}\n")).unwrap_or_else(|| {
                format!(
                "<sip:{ext}@{server};transport={transport}>;auth_user={ext};auth_pass=secret{ext};\
                 answermode={};regint=300;audio_codecs=PCMU/8000/1,PCMA/8000/1;ptime=20{account_extra}\n",
                cfg.answer
            )
            }),
        )
        .unwrap();
        // A contacts file written before the start (the contact module's `message` target) stays.
        if !dir.join("contacts").exists() {
            fs::write(dir.join("contacts"), "").unwrap();
        }
        let log = dir.join("baresip.log");
        let out = File::create(&log).unwrap();
        let child = Command::new("baresip")
            .arg("-f")
            .arg(&dir)
            .arg("-s") // SIP trace into the log
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn baresip");
        let (tx, rx) = mpsc::channel();
        let mut phone = Phone {
            name: cfg.name.to_string(),
            child: Some(child),
            dir,
            log,
            sip_port,
            ctrl: None,
            events: rx,
            seen: Vec::new(),
            token: 0,
        };
        // Connect to ctrl_tcp (bounded) and read netstrings in a thread.
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match TcpStream::connect(("127.0.0.1", ctrl_port)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => phone.fail(&format!(
                    "cannot connect to ctrl_tcp 127.0.0.1:{ctrl_port}: {e}"
                )),
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        let mut reader = stream.try_clone().unwrap();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                // netstrings: LEN ":" PAYLOAD ","
                while let Some(colon) = buf.iter().position(|&b| b == b':') {
                    let Some(len) = std::str::from_utf8(&buf[..colon])
                        .ok()
                        .and_then(|s| s.trim().parse::<usize>().ok())
                    else {
                        buf.clear();
                        break;
                    };
                    if buf.len() < colon + 1 + len + 1 {
                        break;
                    }
                    let msg =
                        String::from_utf8_lossy(&buf[colon + 1..colon + 1 + len]).into_owned();
                    buf.drain(..colon + 1 + len + 1);
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
            }
        });
        phone.ctrl = Some(stream);
        phone
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn report(&self) -> String {
        let log = self.log_text();
        let log = if log.len() > 8000 {
            format!("…{}", &log[log.len() - 8000..])
        } else {
            log
        };
        format!(
            "--- baresip {} ({}) events ---\n{}\n--- baresip {} log ---\n{}\n",
            self.name,
            self.dir.display(),
            self.seen.join("\n"),
            self.name,
            log
        )
    }

    pub fn fail(&self, msg: &str) -> ! {
        panic!("baresip {}: {msg}\n{}", self.name, self.report());
    }

    /// Sends a ctrl_tcp command (netstring JSON).
    pub fn command(&mut self, command: &str, params: &str) {
        self.token += 1;
        let json = format!(
            "{{\"command\":\"{command}\",\"params\":\"{params}\",\"token\":\"{}\"}}",
            self.token
        );
        let frame = format!("{}:{json},", json.len());
        let ctrl = self.ctrl.as_mut().unwrap();
        ctrl.write_all(frame.as_bytes())
            .unwrap_or_else(|e| panic!("ctrl_tcp write to {}: {e}", self.name));
    }

    /// Takes the events that have arrived so far.
    pub fn drain(&mut self) {
        while let Ok(e) = self.events.try_recv() {
            self.seen.push(e);
        }
    }

    /// Waits for an event of `kind` (after the last one already consumed through this call);
    /// returns its JSON text, or None after `limit`.
    pub fn wait_event(
        &mut self,
        kind: &str,
        from: usize,
        limit: Duration,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + limit;
        let mut i = from;
        loop {
            while i < self.seen.len() {
                if event_type(&self.seen[i]).as_deref() == Some(kind) {
                    return Some((i + 1, self.seen[i].clone()));
                }
                i += 1;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(e) => self.seen.push(e),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    pub fn expect_event(
        &mut self,
        kind: &str,
        limit: Duration,
        others: &[&Phone],
        server: &Server,
    ) -> String {
        match self.wait_event(kind, 0, limit) {
            Some((_, e)) => e,
            None => {
                let more: String = others.iter().map(|p| p.report()).collect();
                panic!(
                    "baresip {}: no {kind} event within {limit:?}\n{}{more}{}",
                    self.name,
                    self.report(),
                    server.log_excerpt()
                )
            }
        }
    }

    pub fn has_event(&mut self, kind: &str) -> bool {
        self.drain();
        self.seen
            .iter()
            .any(|e| event_type(e).as_deref() == Some(kind))
    }

    /// The WAV sndfile wrote for the received (decoded) audio of the (single) call, once
    /// sndfile has closed it (up to 10 s after the call; as it is after that). baresip closes
    /// it when the call's audio stream goes away, a moment after CALL_CLOSED that a loaded
    /// machine can stretch past any fixed pause: read before, it has no samples yet.
    pub fn received_wav(&self) -> PathBuf {
        let rec = self.dir.join("rec");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut found: Vec<PathBuf> = fs::read_dir(&rec)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            found.retain(|p| p.to_string_lossy().ends_with("-dec.wav"));
            found.sort();
            let late = Instant::now() > deadline;
            match found.last() {
                Some(p) if late || wav_finished(p) => return p.clone(),
                None if late => {
                    self.fail(&format!("sndfile wrote no *-dec.wav in {}", rec.display()))
                }
                _ => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Phone {
    /// Waits until sndfile has recorded `secs` of received audio in this call's WAV (the file
    /// grows as frames are decoded; its header says nothing until it is closed), for a test
    /// that needs that much audio before it goes on: a fixed pause can pass before the media
    /// flows on a loaded machine. Panics with the reports after `limit`.
    pub fn wait_recorded(&self, secs: f64, limit: Duration, server: &Server) {
        // 16-bit mono at RATE, behind a header of at most 100 bytes.
        let want = 100 + (secs * f64::from(RATE)) as u64 * 2;
        let rec = self.dir.join("rec");
        let deadline = Instant::now() + limit;
        loop {
            let longest = fs::read_dir(&rec)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().ends_with("-dec.wav"))
                        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                        .max()
                })
                .ok()
                .flatten()
                .unwrap_or(0);
            if longest >= want {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "baresip {}: not {secs} s of received audio within {limit:?} ({longest} \
                     bytes recorded)\n{}{}",
                    self.name,
                    self.report(),
                    server.log_excerpt()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether the WAV at `path` has been closed by its writer: libsndfile writes the RIFF and
/// data sizes when it closes the file, so a finished file's RIFF size covers it exactly and
/// its data chunk holds samples (while it is written they say 0 and the file grows).
fn wav_finished(path: &Path) -> bool {
    let Ok(b) = fs::read(path) else {
        return false;
    };
    let riff = b
        .get(4..8)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes);
    b.starts_with(b"RIFF")
        && riff.is_some_and(|n| n as usize + 8 == b.len())
        && read_wav(path).is_ok_and(|(_, samples)| !samples.is_empty())
}

/// The value of a string member `"key":"…"` in a flat JSON object.
pub fn json_str(json: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = json.find(&pat)? + pat.len();
    let mut out = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

pub fn event_type(json: &str) -> Option<String> {
    if !json.contains("\"event\":true") {
        return None;
    }
    json_str(json, "type")
}

/// Contacts bound to extension `ext` in the store (`bindings(aor, contact, …)`).
pub fn stored_contacts(db: &Path, ext: &str) -> Vec<String> {
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Vec::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(2));
    let Ok(mut st) = conn
        .prepare("SELECT contact FROM bindings WHERE aor = ?1 OR aor LIKE 'sip:' || ?1 || '@%'")
    else {
        return Vec::new();
    };
    st.query_map([ext], |r| r.get::<_, String>(0))
        .map(|rows| rows.filter_map(|r| r.ok()).collect())
        .unwrap_or_default()
}

/// Waits until `phone` is registered as `ext` (a binding naming its SIP port, or a
/// REGISTER_OK event).
pub fn wait_registered(server: &Server, phone: &mut Phone, ext: &str) {
    let needle = format!("127.0.0.1:{}", phone.sip_port);
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if stored_contacts(&server.db, ext)
            .iter()
            .any(|c| c.contains(&needle))
            || phone.has_event("REGISTER_OK")
        {
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "baresip {} did not register as {ext} within 15 s (no binding naming {needle}, no \
         REGISTER_OK)\n{}\n{}",
        phone.name,
        phone.report(),
        server.log_excerpt()
    );
}
