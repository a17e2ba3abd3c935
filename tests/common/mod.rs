//! Test harness: runs the real `pasarela` binary and real SIP peers (sipp, baresip) on loopback.
//!
//! Every wait is bounded. On a failing test the temporary directory (config, server logs, sipp logs)
//! is kept under `target/tmp` and its path printed.
#![allow(dead_code)]

pub mod dns;
pub mod dundi_peer;
pub mod raw_phone;
pub mod sockets;
pub mod tls_peer;
pub mod web_client;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long the server may take to print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop (SIGTERM) may take before the harness uses SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// sipp gets `-timeout 20s`; the harness kills it after this.
pub const SIPP_HARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The extensions every test configuration declares.
pub const EXTENSIONS: &str = r#"
[[extension]]
number = "100"
password = "secret100"
name = "Reception"

[[extension]]
number = "101"
password = "secret101"
name = "Office"
"#;

/// `[sip]` line that makes the registrar challenge with MD5 only (also the default).
///
/// The peers that Debian 12 ships cannot answer a SHA-256 challenge: sipp 3.6.1 reads only the
/// first WWW-Authenticate and knows only MD5 ("createAuthHeader: authentication must use MD5 or
/// AKAv1-MD5"), and baresip 1.0.0 (libre) gives up on a 401 with any non-MD5 challenge
/// ("Register: Function not implemented"), even when MD5 comes first. That is why pasarela offers
/// MD5 by default; the tests with those peers say so explicitly, and the SHA-256 + MD5 challenge
/// pair is checked by `tests/register_raw.rs` with its own digest client.
pub const MD5_ONLY: &str = r#"digest_algorithms = ["MD5"]"#;

/// A configuration template for [`Server::start`]: `[sip]` with udp+tcp listeners on port 0,
/// `sip_extra` lines appended inside `[sip]`, the store in the test directory, the dashboard on
/// port 0, and [`EXTENSIONS`].
pub fn config(sip_extra: &str) -> String {
    format!(
        r#"[sip]
listen = ["udp:{{UDP}}", "tcp:{{TCP}}"]
domain = "office.test"
min_expires = 60
max_expires = 3600
{sip_extra}

[store]
path = "{{DB}}"

[web]
listen = "127.0.0.1:0"

[log]
level = "debug"
{EXTENSIONS}"#
    )
}

/// `text` with `[enum] suffixes = []` added when it has no `[enum]` table of its own: routing a
/// number outside the office then asks no ENUM tree, so a test never sends DNS queries for
/// e164.arpa off the machine (the product's default asks the system resolver). A test that
/// wants ENUM writes its own `[enum]`, with nameservers on loopback (see [`dns`]).
pub fn loopback_enum(text: String) -> String {
    let has_enum = text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("[enum]") || l.starts_with("[enum.")
    });
    if has_enum {
        text
    } else {
        format!("{text}\n\n[enum]\nsuffixes = []\n")
    }
}

/// Fails (never skips) when a peer program is missing.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{program}` is not installed: install the Debian package `{package}` \
         (`apt-get install {package}`; `bash .ci/run` does that when run as root)"
    );
}

/// `tests/data`: third-party test material kept in the repository (RFC 4475/5118 torture
/// messages, captures and keys of a real Asterisk DUNDi peer; see the README in each folder).
pub fn test_data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    assert!(dir.is_dir(), "test data not found at {}", dir.display());
    dir
}

pub fn scenario(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name);
    assert!(p.is_file(), "sipp scenario {} missing", p.display());
    p
}

/// A temporary directory under target/tmp that is kept (and printed) if the test panics.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
}

impl TestDir {
    pub fn new(prefix: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("create test directory");
        TestDir { dir: Some(dir) }
    }
    pub fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if thread::panicking() {
            if let Some(d) = self.dir.take() {
                let kept = d.keep();
                eprintln!("test files kept in {}", kept.display());
            }
        }
    }
}

/// A running `pasarela serve`.
pub struct Server {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// The HTTP address from the `listening web ADDR` line (the real port when the config
    /// asks for port 0).
    pub web: Option<SocketAddr>,
    pub db: PathBuf,
    template: String,
    child: Option<Child>,
    starts: u32,
    log: PathBuf,
    // Last: dropped after the process is gone.
    pub dir: TestDir,
}

impl Server {
    /// Starts the server on `template`, a TOML text in which `{DB}` becomes the database path in
    /// the test directory, `{DIR}` the test directory, and `{UDP}` / `{TCP}` the SIP listen
    /// addresses (`127.0.0.1:0` on the first start, the ports actually bound on a restart).
    /// See [`config`] for the usual template.
    pub fn start(template: &str) -> Server {
        let dir = TestDir::new("pasarela");
        let db = dir.path().join("pasarela.db");
        let mut s = Server {
            udp: "0.0.0.0:0".parse().unwrap(),
            tcp: "0.0.0.0:0".parse().unwrap(),
            web: None,
            db,
            template: template.to_string(),
            child: None,
            starts: 0,
            log: PathBuf::new(),
            dir,
        };
        let zero: SocketAddr = "127.0.0.1:0".parse().unwrap();
        s.spawn(zero, zero);
        s
    }

    /// Path of the stderr log of the current (last) start.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn render(&self, udp: SocketAddr, tcp: SocketAddr) -> String {
        let text = self
            .template
            .replace("{DB}", &self.db.display().to_string())
            .replace("{DIR}", &self.dir.path().display().to_string())
            .replace("{UDP}", &udp.to_string())
            .replace("{TCP}", &tcp.to_string());
        loopback_enum(text)
    }

    fn spawn(&mut self, udp: SocketAddr, tcp: SocketAddr) {
        self.starts += 1;
        let cfg = self.dir.path().join("pasarela.toml");
        fs::write(&cfg, self.render(udp, tcp)).expect("write config");
        self.log = self.dir.path().join(format!("server-{}.log", self.starts));
        let stderr = File::create(&self.log).expect("create server log");
        let stdout_log = self
            .dir
            .path()
            .join(format!("server-{}.stdout", self.starts));
        let mut child = Command::new(server_program())
            .arg("serve")
            .arg("--config")
            .arg(&cfg)
            .current_dir(self.dir.path())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn pasarela");
        let stdout = child.stdout.take().unwrap();
        self.child = Some(child);

        // A thread reads stdout for the whole life of the process (the pipe never fills up),
        // copies it to a file and passes the lines on until `ready`.
        let (tx, rx) = mpsc::channel::<String>();
        thread::spawn(move || {
            let mut copy = File::create(stdout_log).ok();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + READY_TIMEOUT;
        let (mut got_udp, mut got_tcp) = (None, None);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let line = line.trim();
                    if line == "ready" {
                        break;
                    }
                    if let Some(addr) = line.strip_prefix("listening sip udp ") {
                        got_udp = Some(self.parse_addr(addr));
                    } else if let Some(addr) = line.strip_prefix("listening sip tcp ") {
                        got_tcp = Some(self.parse_addr(addr));
                    } else if let Some(addr) = line.strip_prefix("listening web ") {
                        self.web = Some(self.parse_addr(addr));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.fail(&format!("no `ready` on stdout within {READY_TIMEOUT:?}"))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    self.fail(&format!("server exited before `ready` (status {status:?})"))
                }
            }
        }
        let (Some(u), Some(t)) = (got_udp, got_tcp) else {
            self.fail(
                "`ready` came without both `listening sip udp …` and `listening sip tcp …` lines",
            )
        };
        if self.starts > 1 && (u != self.udp || t != self.tcp) {
            self.fail(&format!(
                "restarted on other ports: udp {u} tcp {t}, before udp {} tcp {}",
                self.udp, self.tcp
            ));
        }
        self.udp = u;
        self.tcp = t;
    }

    fn parse_addr(&self, s: &str) -> SocketAddr {
        match s.trim().parse() {
            Ok(a) => a,
            Err(e) => self.fail(&format!("bad address {s:?} in a listening line: {e}")),
        }
    }

    /// Panics with the server log attached.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\n{}", self.log_excerpt());
    }

    pub fn log_excerpt(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "--- server log {} (last {} lines) ---\n{}\n--- end of server log ---",
            self.log.display(),
            tail.len(),
            tail.join("\n")
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server not running").id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM, wait for a graceful exit (bounded), then start again on the same ports.
    pub fn restart(&mut self) {
        let status = self.stop();
        if !status.map(|s| s.success()).unwrap_or(false) {
            eprintln!("note: server exit status after SIGTERM: {status:?}");
        }
        let (u, t) = (self.udp, self.tcp);
        self.spawn(u, t);
    }

    /// SIGTERM and wait; SIGKILL after [`STOP_TIMEOUT`]. Returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(child.id(), "TERM");
        let status = wait_timeout(&mut child, STOP_TIMEOUT);
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "server did not stop within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                self.log_excerpt()
            );
        }
        status
    }

    /// SIGKILL and wait (the process gets no chance to clean up).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again after [`Server::kill9`] or [`Server::stop`], on the same ports.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "server still running");
        let (u, t) = (self.udp, self.tcp);
        self.spawn(u, t);
    }

    /// Asserts that the server answers an OPTIONS over UDP with 200 and is still running.
    pub fn assert_alive(&mut self) {
        if !self.is_running() {
            self.fail("server process has exited");
        }
        match options_status(self.udp) {
            Some(200) => {}
            other => self.fail(&format!(
                "OPTIONS to {} answered {other:?}, expected 200",
                self.udp
            )),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        if thread::panicking() {
            eprintln!("server log: {}", self.log.display());
        }
    }
}

/// The server program: `pasarela` as built by cargo, unless `PASARELA_TEST_BIN` names another
/// program taking the same arguments (for checking the tests themselves against a stand-in).
pub fn server_program() -> PathBuf {
    match std::env::var_os("PASARELA_TEST_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_pasarela")),
    }
}

/// `pasarela --config FILE ARGS…` (a subcommand such as `dundi peers`): whether it succeeded,
/// and what it printed (stdout, then stderr).
pub fn cli(config: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(server_program())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run pasarela");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} {pid} failed");
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// A port that is free on 127.0.0.1 for both UDP and TCP at the time of the call.
/// A base for sipp's media sockets (`-mp`): sipp binds four consecutive ports (audio and video,
/// RTP and RTCP). Chosen in 20000-24999, below Linux's ephemeral range, so that sockets other
/// tests open on port 0 cannot take them between the check and sipp's bind, and below the
/// servers' RTP ranges ([`claim_ports`]).
pub fn free_media_base() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for i in 0..500u64 {
        let base = 20000
            + (((seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(i * 7919))
                % 1250)
                * 4) as u16;
        let held: Vec<UdpSocket> = (0..4)
            .filter_map(|k| UdpSocket::bind(("127.0.0.1", base + k)).ok())
            .collect();
        if held.len() == 4 {
            return base;
        }
    }
    panic!("no four free consecutive UDP ports in 20000-24999");
}

/// The directory of the lock files by which test processes claim ports ([`free_ports`],
/// [`claim_ports`]).
fn port_lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("pasarela-test-rtp");
    fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {} for port locks: {e}", dir.display()));
    dir
}

/// `path` opened (created if need be) with an exclusive lock (`flock`) on it, or `None` when
/// another opening holds it. The lock lasts as long as the file stays open, and the kernel lets
/// it go however the process ends.
fn try_lock_file(path: &Path) -> Option<File> {
    use std::fs::TryLockError;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    match file.try_lock() {
        Ok(()) => Some(file),
        Err(TryLockError::WouldBlock) => None,
        Err(TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
    }
}

/// A port free for both UDP and TCP on 127.0.0.1, for a peer's own listening socket (sipp,
/// baresip, a DNS server, a control port); see [`free_ports`].
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive ports free for both UDP and TCP on 127.0.0.1, for peers' own
/// listening sockets, handed to no one else by this or any other test process.
///
/// A port found free by binding port 0 and letting it go could be taken by any socket bound to
/// port 0 or connecting out before the peer binds it (CI once saw baresip fail with "Address
/// already in use" that way). So these come from 2000-9999, below everything else a test
/// binds: servers and connections take ephemeral ports (32768-60999), sipp's media
/// 20000-24999, servers' relays [`claim_ports`]' 25000-32759, and baresip's RTP 10000-19999
/// (set by `tests/phone`). The range is cut into blocks of 50, each claimed by one test
/// process with an exclusive lock on its own file as in [`claim_ports`]; within the process,
/// ports are handed out in turn, each probed first, so one another program holds is passed over.
pub fn free_ports(n: u16) -> u16 {
    use std::sync::Mutex;
    const FIRST: u16 = 2000;
    const BLOCK: u16 = 50;
    const BLOCKS: u16 = 160;
    /// The claimed blocks' lock files, the next port to hand out and the end of its block.
    static POOL: Mutex<(Vec<File>, u16, u16)> = Mutex::new((Vec::new(), 0, 0));
    assert!(
        (1..=BLOCK).contains(&n),
        "free_ports({n}): 1 to {BLOCK} at once"
    );
    let dir = port_lock_dir();
    let free = |p: u16| {
        UdpSocket::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok()
    };
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = u64::from_str_radix(&random_token(), 16).unwrap_or(u64::from(std::process::id()));
    let mut tried = 0;
    loop {
        let (_, next, end) = *pool;
        if next + n <= end {
            pool.1 = next + 1;
            if (next..next + n).all(free) {
                pool.1 = next + n;
                return next;
            }
            continue;
        }
        // This block is used up: claim another, starting at a place of this process's own.
        let claimed = loop {
            assert!(
                tried < BLOCKS,
                "no block of free ports in {FIRST}-{} that no test process has claimed (locks in {})",
                FIRST + BLOCK * BLOCKS - 1,
                dir.display()
            );
            let lo = FIRST + ((seed + u64::from(tried)) % u64::from(BLOCKS)) as u16 * BLOCK;
            tried += 1;
            if let Some(file) = try_lock_file(&dir.join(format!("peer-{lo}.lock"))) {
                break (file, lo);
            }
        };
        pool.0.push(claimed.0);
        pool.1 = claimed.1;
        pool.2 = claimed.1 + BLOCK;
    }
}

// ---------------------------------------------------------------------------------------------
// sipp

pub struct SippResult {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub screen: PathBuf,
    pub errors: PathBuf,
    pub messages: PathBuf,
    pub log: PathBuf,
}

impl SippResult {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.map(|s| s.success()).unwrap_or(false)
    }

    pub fn report(&self) -> String {
        let mut s = format!(
            "sipp exit status {:?}{}\n",
            self.status,
            if self.timed_out {
                " (killed after the hard timeout)"
            } else {
                ""
            }
        );
        for (what, p) in [
            ("error log", &self.errors),
            ("message log", &self.messages),
            ("scenario log", &self.log),
            ("screen", &self.screen),
        ] {
            let text = fs::read_to_string(p).unwrap_or_else(|_| "(none)".into());
            let text = if text.len() > 12000 {
                format!("…{}", &text[text.len() - 12000..])
            } else {
                text
            };
            s.push_str(&format!("--- sipp {what} {} ---\n{text}\n", p.display()));
        }
        s
    }

    /// The text the scenario wrote with `<log>` actions.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn assert_success(&self, server: &Server) {
        if !self.success() {
            panic!(
                "sipp scenario failed\n{}\n{}",
                self.report(),
                server.log_excerpt()
            );
        }
    }
}

/// Runs one sipp scenario (`tests/sipp/NAME`) against `remote` over `transport` ("u1" or "t1"),
/// with `-m 1` unless `extra` gives `-m`. Logs go to `dir`.
pub fn sipp(
    dir: &Path,
    scenario_name: &str,
    remote: SocketAddr,
    transport: &str,
    extra: &[&str],
) -> SippResult {
    require_program("sipp", "sip-tester");
    assert!(
        transport == "u1" || transport == "t1",
        "transport must be u1 or t1"
    );
    let path = scenario(scenario_name);
    let stem = format!(
        "sipp-{}-{}-{}",
        scenario_name.trim_end_matches(".xml"),
        transport,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let res = SippResult {
        status: None,
        timed_out: false,
        screen: dir.join(format!("{stem}.screen")),
        errors: dir.join(format!("{stem}.errors.log")),
        messages: dir.join(format!("{stem}.messages.log")),
        log: dir.join(format!("{stem}.log")),
    };
    let port = free_port().to_string();
    let mut args: Vec<String> = vec![
        "-sf".into(),
        path.display().to_string(),
        remote.to_string(),
        "-ci".into(),
        "127.0.0.1".into(),
        "-nostdin".into(),
        "-i".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port,
        "-t".into(),
        transport.into(),
        "-timeout".into(),
        "20s".into(),
        "-timeout_error".into(),
    ];
    args.extend(trace_args(&res));
    if !extra.contains(&"-m") {
        args.push("-m".into());
        args.push("1".into());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let screen = File::create(&res.screen).expect("create sipp screen file");
    let mut child = Command::new("sipp")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(screen.try_clone().unwrap()))
        .stderr(Stdio::from(screen))
        .spawn()
        .expect("spawn sipp");
    let status = wait_timeout(&mut child, SIPP_HARD_TIMEOUT);
    let timed_out = status.is_none();
    if timed_out {
        let _ = child.kill();
        let _ = child.wait();
    }
    SippResult {
        status,
        timed_out,
        ..res
    }
}

// ---------------------------------------------------------------------------------------------
// Raw SIP over UDP

/// Sends `bytes` as one datagram from 127.0.0.1:0 and returns the first reply within 2 s.
pub fn sip_udp_exchange(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    sock.send_to(bytes, addr).expect("send datagram");
    recv_final(&sock, Duration::from_secs(2))
}

/// Receives datagrams until a final (non-1xx) response or a non-response arrives, up to `limit`.
/// Returns the last datagram received (a 1xx if nothing else came).
pub fn recv_final(sock: &UdpSocket, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return last;
        }
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                let msg = buf[..n].to_vec();
                let provisional = status_code(&msg).map(|c| c < 200).unwrap_or(false);
                last = Some(msg);
                if !provisional {
                    return last;
                }
            }
            Err(_) => return last,
        }
    }
}

/// The status code of a SIP response, if `msg` is one.
pub fn status_code(msg: &[u8]) -> Option<u16> {
    let line = msg.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if parts.next()? != "SIP/2.0" {
        return None;
    }
    parts.next()?.parse().ok()
}

/// The values of header `name` (long or `short` compact form) in a SIP message, in order.
pub fn header_values(msg: &[u8], name: &str, short: Option<&str>) -> Vec<String> {
    let text = String::from_utf8_lossy(msg);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut out = Vec::new();
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if k.eq_ignore_ascii_case(name)
                || short.map(|s| k.eq_ignore_ascii_case(s)).unwrap_or(false)
            {
                out.push(v.trim().to_string());
            }
        }
    }
    out
}

pub fn first_line(msg: &[u8]) -> String {
    let text = String::from_utf8_lossy(msg);
    text.lines().next().unwrap_or("").to_string()
}

pub fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{:016x}", h.finish())
}

/// An OPTIONS with rport from a fresh socket; the status of the final answer.
pub fn options_status(addr: SocketAddr) -> Option<u16> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    let local = sock.local_addr().unwrap();
    let tok = random_token();
    let msg = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{tok};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{local}>;tag={tok}\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: {tok}@probe\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    // Retransmit like a UAC (T1 = 500 ms) for up to 2 s.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        sock.send_to(msg.as_bytes(), addr).expect("send OPTIONS");
        if let Some(reply) = recv_final(&sock, Duration::from_millis(500)) {
            if let Some(code) = status_code(&reply) {
                if code >= 200 {
                    return Some(code);
                }
            }
        }
    }
    None
}

/// Reads one SIP message (headers + Content-Length body) from a stream, bounded by `limit`.
pub fn read_stream_message(stream: &mut std::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let cl = header_values(&buf[..end + 4], "Content-Length", Some("l"))
                .first()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + cl {
                buf.truncate(end + 4 + cl);
                return Some(buf);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return if buf.is_empty() { None } else { Some(buf) };
        }
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => return if buf.is_empty() { None } else { Some(buf) },
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return if buf.is_empty() { None } else { Some(buf) },
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Appends a line to a file (for test notes next to the logs).
pub fn note(path: &Path, line: &str) {
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(f, "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Calls: sipp on a chosen port, in the background (a callee), and the call configuration.

/// Extensions 100, 101 and 102 (for tests of calls; [`EXTENSIONS`] stays as it is).
pub const CALL_EXTENSIONS: &str = r#"
[[extension]]
number = "100"
password = "secret100"
name = "Reception"

[[extension]]
number = "101"
password = "secret101"
name = "Office"

[[extension]]
number = "102"
password = "secret102"
name = "Lab"
"#;

/// How many ports [`rtp_port_range`] gives a server (20 pairs).
pub const RTP_RANGE_LEN: u16 = 40;

/// A range of RTP ports for one server, `(lo, hi)` with [`RTP_RANGE_LEN`] ports, that no other
/// caller of this function or of [`claim_ports`] gets while this process runs, in this process
/// or in any other test process on the machine.
pub fn rtp_port_range() -> (u16, u16) {
    claim_ports(RTP_RANGE_LEN)
}

/// `len` consecutive ports, `(lo, hi)` (rounded up to whole blocks of [`RTP_RANGE_LEN`]), for
/// this process alone until it ends: no other call of this function, in this process or in any
/// other test process on the machine, gets any of them meanwhile.
///
/// The ports are cut into blocks of [`RTP_RANGE_LEN`], and a block is claimed with an
/// exclusive lock (`flock`) on its own file under `$TMPDIR/pasarela-test-rtp/`, held until this
/// process ends: two processes cannot both hold the lock (nor two claims of one process: each
/// opening of the file is a lock of its own), and the kernel lets it go however the process
/// ends (a lock file left behind claims nothing). The file is opened close-on-exec, so the
/// servers and phones a test starts do not keep it.
///
/// Blocks come from 25000-32759 first: above the ports sipp's media takes ([`free_media_base`],
/// 20000-24999) and below Linux's ephemeral ports (32768-60999), so a socket bound to port 0
/// or a connection's local port never lands in a server's range (a port that [`free_port`]
/// found free could otherwise be bound by a server's relay before sipp binds it); a claim
/// there in which a port is bound anyway (a server left over from a killed test run, another
/// program) is passed over. Only when those are all held (several test processes at once) do
/// blocks come from 33000-54999, inside the ephemeral range, where sockets on port 0 come and
/// go: the relay passes over a pair another socket holds.
pub fn claim_ports(len: u16) -> (u16, u16) {
    use std::sync::Mutex;
    /// The blocks this process has claimed: a lock lasts as long as its file is open.
    static CLAIMS: Mutex<Vec<File>> = Mutex::new(Vec::new());
    /// (first port, blocks, whether its ports are probed): 25000-32759, then 33000-54999.
    const POOLS: [(u16, u16, bool); 2] = [(25000, 194, true), (33000, 550, false)];
    let want = len.div_ceil(RTP_RANGE_LEN).max(1);
    let dir = port_lock_dir();
    let lock = |lo: u16| try_lock_file(&dir.join(format!("{lo}.lock")));
    // Each process starts at its own place, so that processes seldom try the same files.
    let seed = u64::from_str_radix(&random_token(), 16).unwrap_or(u64::from(std::process::id()));
    let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
    for (first, blocks, probe) in POOLS {
        let Some(starts) = blocks.checked_sub(want).map(|n| n + 1) else {
            continue;
        };
        let offset = (seed % u64::from(starts)) as u16;
        for i in 0..starts {
            let lo = first + (offset + i) % starts * RTP_RANGE_LEN;
            let hi = lo + want * RTP_RANGE_LEN - 1;
            // All the blocks, or none (dropping a file lets its lock go).
            let Some(files) = (0..want)
                .map(|k| lock(lo + k * RTP_RANGE_LEN))
                .collect::<Option<Vec<File>>>()
            else {
                continue;
            };
            if !probe || (lo..=hi).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
                claims.extend(files);
                return (lo, hi);
            }
        }
    }
    panic!(
        "no {len} free ports in 25000-54999 that no test process has claimed (locks in {})",
        dir.display()
    );
}

/// A configuration template for [`Server::start`] for calls: like [`config`] (MD5 challenges,
/// udp+tcp on port 0) with [`CALL_EXTENSIONS`], `[media] rtp_ports` set to `rtp` and `calls_extra`
/// lines inside `[calls]` (for example `no_answer_secs = 3`).
pub fn call_config(calls_extra: &str, rtp: (u16, u16)) -> String {
    let (lo, hi) = rtp;
    format!(
        r#"[sip]
listen = ["udp:{{UDP}}", "tcp:{{TCP}}"]
domain = "office.test"
min_expires = 60
max_expires = 3600
{MD5_ONLY}

[calls]
{calls_extra}

[media]
rtp_ports = "{lo}-{hi}"

[store]
path = "{{DB}}"

[web]
listen = "127.0.0.1:0"

[log]
level = "debug"
{CALL_EXTENSIONS}"#
    )
}

/// A sipp process started by [`sipp_spawn`]; killed when dropped.
pub struct SippProc {
    child: Option<Child>,
    res: Option<SippResult>,
    pub port: u16,
    pub name: String,
    /// The address its SIP socket is bound to, and whether over TCP (`-t t1`).
    ip: std::net::Ipv4Addr,
    tcp: bool,
}

/// Starts one sipp scenario in the background, bound to 127.0.0.1:`port` (the SIP port; give
/// the same port to a registration and to the callee scenario that follows it). Logs go to `dir`
/// under names starting with `tag`. `-m 1` unless `extra` gives `-m`; `-timeout` 30 s unless
/// `extra` gives one; the RTP echo port (`-mp`) is a free port.
/// sipp's error, message and log traces, written to the files of `res`.
fn trace_args(res: &SippResult) -> Vec<String> {
    let file = |p: &PathBuf| p.display().to_string();
    vec![
        "-trace_err".into(),
        "-error_file".into(),
        file(&res.errors),
        "-trace_msg".into(),
        "-message_file".into(),
        file(&res.messages),
        "-trace_logs".into(),
        "-log_file".into(),
        file(&res.log),
    ]
}

pub fn sipp_spawn(
    dir: &Path,
    tag: &str,
    scenario_name: &str,
    remote: SocketAddr,
    transport: &str,
    port: u16,
    extra: &[&str],
) -> SippProc {
    sipp_spawn_on(
        dir,
        tag,
        scenario_name,
        remote,
        transport,
        "127.0.0.1",
        port,
        extra,
    )
}

/// [`sipp_spawn`] with sipp bound to loopback address `ip` (SIP, control socket and media): a
/// peer on its own address, such as a trunk provider on 127.0.0.5.
#[allow(clippy::too_many_arguments)]
pub fn sipp_spawn_on(
    dir: &Path,
    tag: &str,
    scenario_name: &str,
    remote: SocketAddr,
    transport: &str,
    ip: &str,
    port: u16,
    extra: &[&str],
) -> SippProc {
    require_program("sipp", "sip-tester");
    let path = scenario(scenario_name);
    let stem = format!(
        "sipp-{tag}-{}-{}",
        scenario_name.trim_end_matches(".xml"),
        random_token()
    );
    let res = SippResult {
        status: None,
        timed_out: false,
        screen: dir.join(format!("{stem}.screen")),
        errors: dir.join(format!("{stem}.errors.log")),
        messages: dir.join(format!("{stem}.messages.log")),
        log: dir.join(format!("{stem}.log")),
    };
    let mut args: Vec<String> = vec![
        "-sf".into(),
        path.display().to_string(),
        remote.to_string(),
        "-ci".into(),
        ip.into(),
        "-cp".into(),
        free_port().to_string(),
        "-nostdin".into(),
        "-i".into(),
        ip.into(),
        "-mi".into(),
        ip.into(),
        "-mp".into(),
        free_media_base().to_string(),
        "-p".into(),
        port.to_string(),
        "-t".into(),
        transport.into(),
        "-timeout_error".into(),
    ];
    args.extend(trace_args(&res));
    if !extra.contains(&"-m") {
        args.extend(["-m".to_string(), "1".to_string()]);
    }
    if !extra.contains(&"-timeout") {
        args.extend(["-timeout".to_string(), "30s".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let screen = File::create(&res.screen).expect("create sipp screen file");
    let child = Command::new("sipp")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(screen.try_clone().unwrap()))
        .stderr(Stdio::from(screen))
        .spawn()
        .expect("spawn sipp");
    SippProc {
        child: Some(child),
        res: Some(res),
        port,
        name: format!("{tag} ({scenario_name})"),
        ip: ip.parse().expect("sipp's address: an IPv4 address"),
        tcp: transport == "t1",
    }
}

impl SippProc {
    /// Waits until this sipp holds its SIP socket (UDP bound, or TCP listening), then returns
    /// it: a UAS started in the background is then ready for a call (what arrives waits in the
    /// socket), where a fixed pause before the caller starts is too short on a loaded machine
    /// and the call meets a closed port. Panics with sipp's report if it exits first or takes
    /// longer than [`READY_TIMEOUT`].
    pub fn listening(mut self) -> SippProc {
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = std::net::SocketAddrV4::new(self.ip, self.port);
        loop {
            if sockets::bound(addr, self.tcp) {
                return self;
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let name = self.name.clone();
                let res = self.kill();
                panic!(
                    "sipp {name} never listened on {addr} (exit {exited:?})\n{}",
                    res.report()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits up to `limit` for the exit (then kills it) and returns the result.
    pub fn wait(mut self, limit: Duration) -> SippResult {
        let mut child = self.child.take().unwrap();
        let status = wait_timeout(&mut child, limit);
        let timed_out = status.is_none();
        if timed_out {
            let _ = child.kill();
            let _ = child.wait();
        }
        SippResult {
            status,
            timed_out,
            ..self.res.take().unwrap()
        }
    }

    /// Kills it now (it was not expected to finish) and returns its logs.
    pub fn kill(mut self) -> SippResult {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let status = child.wait().ok();
        SippResult {
            status,
            timed_out: false,
            ..self.res.take().unwrap()
        }
    }
}

impl Drop for SippProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The Call-ID values in a sipp message log (`-trace_msg`), in order of appearance, deduplicated.
pub fn sipp_call_ids(messages: &Path) -> Vec<String> {
    let text = fs::read_to_string(messages).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        let value = l
            .split_once(':')
            .filter(|(k, _)| {
                k.trim().eq_ignore_ascii_case("call-id") || k.trim().eq_ignore_ascii_case("i")
            })
            .map(|(_, v)| v.trim().to_string());
        if let Some(v) = value {
            if !v.is_empty() && !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// The numbers logged by a scenario as `<log message="KEY N"/>` lines.
pub fn sipp_logged_numbers(res: &SippResult, key: &str) -> Vec<u32> {
    res.log_text()
        .lines()
        .filter_map(|l| l.trim().strip_prefix(key))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP (the web side: /healthz, /metrics)

/// A GET of the JSON API with a fresh API token (created in the server's store).
pub fn api_get(server: &Server, path: &str) -> (u16, String, String) {
    let conn = rusqlite::Connection::open(&server.db).expect("open the store");
    let token = pasarela::web::api_tokens::create(&conn, "test").expect("API token");
    http_get_with(
        server.web.expect("web address"),
        path,
        &format!("Authorization: Bearer {token}\r\n"),
    )
}

/// One HTTP/1.1 GET with `Connection: close`: (status, headers, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http_get_with(addr, path, "")
}

/// [`http_get`] with `extra` header lines (each ending in CRLF).
pub fn http_get_with(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect web");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// The value of a sample (`name` with its labels, exactly as rendered).
pub fn metric_sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Panics with sipp's report and the server's log excerpt when a sipp run failed.
pub fn assert_sipp_ok(server: &Server, what: &str, res: &SippResult) {
    if !res.success() {
        panic!(
            "{what}: sipp failed\n{}\n{}",
            res.report(),
            server.log_excerpt()
        );
    }
}

/// Registers extension `ext` (password `secret<ext>`, as in [`call_config`]) from a sipp on
/// `port`, so that calls to `ext` reach a sipp started later on that port.
pub fn sipp_register(server: &Server, ext: &str, port: u16) {
    sipp_register_on(server, ext, "127.0.0.1", port);
}

/// [`sipp_register`] from loopback address `ip`: the binding is `ip`:`port` (a closed port once
/// sipp has exited, unless a callee takes it over).
pub fn sipp_register_on(server: &Server, ext: &str, ip: &str, port: u16) {
    let pass = format!("secret{ext}");
    let reg = sipp_spawn_on(
        server.dir(),
        &format!("register-{ext}-{ip}-{port}"),
        "call_register.xml",
        server.udp,
        "u1",
        ip,
        port,
        &["-s", ext, "-au", ext, "-ap", &pass, "-timeout", "10s"],
    )
    .wait(Duration::from_secs(15));
    assert_sipp_ok(server, "registration", &reg);
}

/// Extension 101 as a sipp UAS running `scenario_name` (with `-s 101` and `extra`), registered
/// first from the port it then listens on, and [listening](SippProc::listening) there when this
/// returns.
pub fn sipp_callee_101(
    server: &Server,
    tag: &str,
    scenario_name: &str,
    extra: &[&str],
) -> SippProc {
    let port = free_port();
    sipp_register(server, "101", port);
    let mut args = vec!["-s", "101"];
    args.extend_from_slice(extra);
    sipp_spawn(
        server.dir(),
        tag,
        scenario_name,
        server.udp,
        "u1",
        port,
        &args,
    )
    .listening()
}

/// The sipp arguments of extension 100 with password `pass` calling `callee` through the
/// server at `remote`: the service `callee`, the scenarios' `[caller]` key 100, and the digest
/// credentials for the URI `callee@remote`.
pub fn caller_args(callee: &str, pass: &str, remote: SocketAddr) -> Vec<String> {
    [
        "-s",
        callee,
        "-key",
        "caller",
        "100",
        "-au",
        "100",
        "-ap",
        pass,
        "-auth_uri",
        &format!("{callee}@{remote}"),
    ]
    .map(String::from)
    .to_vec()
}

/// Extension 100 (password `secret100`, as in [`call_config`]) as a sipp UAC running
/// `scenario_name` towards `callee` through the server at `remote` over `transport` ("u1" or
/// "t1"), from a free port, in the background: [`caller_args`], then `extra` (counts, pauses,
/// timeouts, traces).
pub fn sipp_dial_100(
    server: &Server,
    tag: &str,
    scenario_name: &str,
    callee: &str,
    remote: SocketAddr,
    transport: &str,
    extra: &[&str],
) -> SippProc {
    let args = caller_args(callee, "secret100", remote);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    sipp_spawn(
        server.dir(),
        tag,
        scenario_name,
        remote,
        transport,
        free_port(),
        &args,
    )
}

/// [`sipp_dial_100`] towards extension 101.
pub fn sipp_caller_100(
    server: &Server,
    tag: &str,
    scenario_name: &str,
    remote: SocketAddr,
    transport: &str,
    extra: &[&str],
) -> SippProc {
    sipp_dial_100(server, tag, scenario_name, "101", remote, transport, extra)
}

/// The response times (ms) a sipp run started with `-trace_rtt -rtt_freq 1` in `dir` wrote for
/// scenario `scenario_name` (its `rtd="true"` measurements, one per call, in order).
pub fn sipp_rtt_ms(dir: &Path, scenario_name: &str) -> Vec<f64> {
    let prefix = format!("{}_", scenario_name.trim_end_matches(".xml"));
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)
        .expect("read the test directory")
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(&prefix) && name.ends_with("_rtt.csv")) {
            continue;
        }
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        // Date_ms;response_time_ms;rtd_no after a header line
        out.extend(
            text.lines()
                .skip(1)
                .filter_map(|l| l.split(';').nth(1)?.trim().parse::<f64>().ok()),
        );
    }
    out
}
