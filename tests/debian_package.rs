//! The Debian package, end to end (issue 8).
//!
//! 1. `cargo deb --no-build` packages the binary this test run built, twice (revisions 1 and 2).
//! 2. The .deb is inspected with dpkg-deb: control fields and computed dependencies, files and
//!    modes, conffiles, maintainer scripts; the packaged configuration lists every key that
//!    src/config.rs accepts and its `#key = value` lines are the real defaults; the unit passes
//!    `systemd-analyze verify` (skipped, with a message, where systemd-analyze is missing).
//! 3. As root on a throw-away machine (CI=true, or PASARELA_TEST_INSTALL=1; skipped otherwise,
//!    with a message), on this machine: `dpkg -i`, then the user,
//!    the files and their owners are checked, the admin edits the configuration (loopback
//!    ports, one extension), and the unit's ExecStart is run as the unit would run it (its
//!    User/Group, supplementary groups, working directory, ambient capabilities, a notification
//!    socket): READY=1 arrives, SIP OPTIONS gets 200 on a port below 1024, /healthz and
//!    /metrics answer, a phone registers (sipp). Then the upgrade to revision 2 keeps the edited
//!    conffile and the registration (restored from the database at start), `dpkg -r` keeps
//!    data and configuration, `dpkg -P` removes the user, the data and the configuration.
//!
//! systemd is not PID 1 on CI machines, so the service is never started through systemctl.
//! A guard purges the package whatever happens, so a failing run leaves the machine clean. A
//! machine-wide lock file keeps two runs (two worktrees) from installing at the same time.
mod common;

use std::borrow::BorrowMut;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{options_status, sipp, wait_timeout, TestDir};
use pasarela::config::Config;

const PACKAGE: &str = "pasarela";
const CONF: &str = "/etc/pasarela/pasarela.toml";
const DATA: &str = "/var/lib/pasarela";
const UNIT: &str = "/usr/lib/systemd/system/pasarela.service";
const SYSUSERS: &str = "/usr/lib/sysusers.d/pasarela.conf";
const ENABLE_LINK: &str = "/etc/systemd/system/multi-user.target.wants/pasarela.service";
const PASSWORD: &str = "deb-test-secret";

// ---------------------------------------------------------------------------------------------
// Running programs, bounded.

struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    fn text(&self) -> String {
        format!(
            "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Runs `cmd` with no input, its output in files under `dir`; kills it after `limit`.
fn run(dir: &Path, mut cmd: impl BorrowMut<Command>, limit: Duration) -> Out {
    let cmd = cmd.borrow_mut();
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let out_path = dir.join(format!("cmd-{n}.stdout"));
    let err_path = dir.join(format!("cmd-{n}.stderr"));
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("create stdout file"))
        .stderr(File::create(&err_path).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let Some(status) = wait_timeout(&mut child, limit) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{shown} did not finish within {limit:?}\n{}",
            fs::read_to_string(&err_path).unwrap_or_default()
        );
    };
    Out {
        status,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

fn run_ok(dir: &Path, mut cmd: impl BorrowMut<Command>, limit: Duration) -> Out {
    let cmd = cmd.borrow_mut();
    let shown = format!("{cmd:?}");
    let out = run(dir, cmd, limit);
    assert!(out.status.success(), "{shown} failed\n{}", out.text());
    out
}

fn command(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

fn program_exists(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(program).is_file())
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file())
}

// ---------------------------------------------------------------------------------------------
// Building the package.

/// `cargo deb --no-build` on the binary of this test run; returns the .deb.
fn build_deb(dir: &Path, revision: u32) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_pasarela"));
    let profile_dir = bin.parent().expect("binary has a directory");
    let target_dir = profile_dir
        .parent()
        .expect("profile directory has a parent");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(p) => p.to_owned(),
        None => "release".to_owned(),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let probe = run(
        dir,
        command(&cargo, &["deb", "--version"]).env("CARGO_TERM_COLOR", "never"),
        Duration::from_secs(60),
    );
    assert!(
        probe.status.success(),
        "cargo-deb is not installed: `cargo install cargo-deb --locked` (bash .ci/run does \
         that)\n{}",
        probe.text()
    );
    let deb = dir.join(format!("{PACKAGE}-{revision}.deb"));
    let revision = revision.to_string();
    let started = Instant::now();
    run_ok(
        dir,
        command(
            &cargo,
            &[
                "deb",
                "--no-build",
                "--strip",
                "--fast",
                "--profile",
                &profile,
                "--deb-revision",
                &revision,
                "--output",
            ],
        )
        .arg(&deb)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CARGO_TARGET_DIR", target_dir)
        .env("CARGO_TERM_COLOR", "never"),
        Duration::from_secs(300),
    );
    eprintln!(
        "built {} ({} MB) in {:.1} s",
        deb.display(),
        fs::metadata(&deb).map_or(0, |m| m.len() / 1_000_000),
        started.elapsed().as_secs_f64()
    );
    deb
}

fn deb_version(revision: u32) -> String {
    format!("{}-{revision}", env!("CARGO_PKG_VERSION"))
}

// ---------------------------------------------------------------------------------------------
// Inspecting the package.

fn inspect(deb: &Path, dir: &Path) -> PathBuf {
    let field = |name: &str| {
        run_ok(
            dir,
            command("dpkg-deb", &["-f"]).arg(deb).arg(name),
            Duration::from_secs(30),
        )
        .stdout
        .trim()
        .to_owned()
    };
    assert_eq!(field("Package"), PACKAGE);
    assert_eq!(field("Version"), deb_version(1));
    assert_eq!(field("Section"), "net");
    let depends = field("Depends");
    assert!(
        depends.contains("libc6 (>="),
        "Depends should be computed from the binary (libc6 with a version): {depends:?}"
    );
    assert!(!field("Description").is_empty());
    // The telephony card's tools (dahdi_cfg, dahdi_hardware) for the FXO lines, and
    // usb-modeswitch for the modems.
    let recommends = field("Recommends");
    for want in ["dahdi", "usb-modeswitch"] {
        assert!(
            recommends.split(',').any(|p| p.trim() == want),
            "Recommends should name {want}: {recommends:?}"
        );
    }

    // Files and modes.
    let listing = run_ok(
        dir,
        command("dpkg-deb", &["-c"]).arg(deb),
        Duration::from_secs(30),
    )
    .stdout;
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if let (Some(mode), Some(owner), Some(path)) = (cols.first(), cols.get(1), cols.last()) {
            let path = path
                .trim_start_matches('.')
                .trim_end_matches('/')
                .to_owned();
            files.insert(path, (mode.to_string(), owner.to_string()));
        }
    }
    for (path, mode) in [
        ("/usr/bin/pasarela", "-rwxr-xr-x"),
        (CONF, "-rw-r-----"),
        (UNIT, "-rw-r--r--"),
        (SYSUSERS, "-rw-r--r--"),
        ("/usr/share/doc/pasarela/copyright", "-rw-r--r--"),
        ("/usr/share/doc/pasarela/README.md", "-rw-r--r--"),
    ] {
        let Some((m, owner)) = files.get(path) else {
            panic!("{path} is not in the package:\n{listing}")
        };
        assert!(
            m == mode && (owner == "0/0" || owner == "root/root"),
            "{path}: {m} {owner}, expected {mode} owned by root"
        );
    }
    for path in files.keys() {
        assert!(
            ["", "/usr", "/etc"].contains(&path.as_str())
                || path.starts_with("/usr/")
                || path.starts_with("/etc/pasarela"),
            "unexpected file {path} (data directories are made by postinst and systemd)"
        );
    }
    assert!(
        !files.keys().any(|p| p.starts_with("/var")),
        "the package must not ship /var (postinst makes the data directory):\n{listing}"
    );

    // Control: conffiles and maintainer scripts.
    let control = dir.join("control");
    run_ok(
        dir,
        command("dpkg-deb", &["-e"]).arg(deb).arg(&control),
        Duration::from_secs(30),
    );
    let conffiles = fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), [CONF]);
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let meta = fs::metadata(&path).unwrap_or_else(|_| panic!("no {script} in the package"));
        assert!(
            meta.permissions().mode() & 0o111 != 0,
            "{script} is not executable"
        );
        run_ok(
            dir,
            command("sh", &["-n"]).arg(&path),
            Duration::from_secs(10),
        );
    }

    // The files themselves.
    let root = dir.join("root");
    run_ok(
        dir,
        command("dpkg-deb", &["-x"]).arg(deb).arg(&root),
        Duration::from_secs(60),
    );
    let packaged_conf = fs::read_to_string(root.join(&CONF[1..])).expect("packaged config");
    let source_conf =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/pasarela.toml"))
            .expect("packaging/pasarela.toml");
    assert_eq!(packaged_conf, source_conf);
    check_config_text(&packaged_conf);

    let bin = root.join("usr/bin/pasarela");
    let out = run_ok(
        dir,
        command(bin.to_str().unwrap(), &["--version"]),
        Duration::from_secs(10),
    );
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        out.text()
    );
    let help = run_ok(
        dir,
        command(bin.to_str().unwrap(), &["--help"]),
        Duration::from_secs(10),
    )
    .stdout;
    for word in ["serve", "check-config", "route", "--config"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let conf_path = root.join(&CONF[1..]);
    let out = run_ok(
        dir,
        command(bin.to_str().unwrap(), &["check-config", "--config"]).arg(&conf_path),
        Duration::from_secs(10),
    );
    assert!(
        out.stdout.contains("store /var/lib/pasarela/pasarela.db"),
        "{}",
        out.text()
    );

    let sysusers = fs::read_to_string(root.join(&SYSUSERS[1..])).expect("sysusers file");
    let entries: Vec<Vec<&str>> = sysusers
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        entries.iter().any(|e| e[..2] == ["u", "pasarela"]),
        "{sysusers}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e[..] == ["m", "pasarela", "dialout"]),
        "{sysusers}"
    );

    check_unit(&root, dir);
    root
}

/// Key paths accepted by src/config.rs: (section, key) from its `Raw*` structs, sections named
/// as RawConfig names them.
fn config_keys() -> BTreeSet<(String, String)> {
    // RawConfig lives in src/config.rs; some sections' Raw* types live beside the module they
    // configure, so every source file is read.
    let mut src = String::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .expect("read src/")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                src.push_str(&fs::read_to_string(&path).expect("read a source file"));
                src.push('\n');
            }
        }
    }
    let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut rename: Option<String> = None;
    for line in src.lines() {
        let t = line.trim();
        let t = t
            .strip_prefix("pub(crate) ")
            .or_else(|| t.strip_prefix("pub "))
            .unwrap_or(t);
        if let Some(rest) = t.strip_prefix("struct Raw") {
            let name = rest.trim_end_matches('{').trim();
            current = Some(format!("Raw{name}"));
            structs.entry(format!("Raw{name}")).or_default();
            continue;
        }
        let Some(name) = &current else { continue };
        if t == "}" {
            current = None;
            continue;
        }
        if let Some(i) = t.find("rename = \"") {
            rename = t[i + 10..].split('"').next().map(str::to_owned);
            continue;
        }
        if let Some((field, ty)) = t.trim_end_matches(',').split_once(": ") {
            if field
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
            {
                let key = rename.take().unwrap_or_else(|| field.to_owned());
                structs.get_mut(name).unwrap().push((key, ty.to_owned()));
            }
        }
    }
    let top = structs
        .get("RawConfig")
        .expect("RawConfig in src/config.rs")
        .clone();
    assert!(top.len() >= 10, "could not read RawConfig: {top:?}");
    let mut keys = BTreeSet::new();
    for (section, ty) in top {
        let raw = ty
            .split(|c: char| !c.is_ascii_alphanumeric())
            .find(|w| w.starts_with("Raw"))
            .unwrap_or_else(|| panic!("section {section}: type {ty}"));
        let fields = structs
            .get(raw)
            .unwrap_or_else(|| panic!("no struct {raw}"));
        assert!(!fields.is_empty(), "no fields read for {raw}");
        for (key, _) in fields {
            keys.insert((section.clone(), key.clone()));
        }
    }
    keys
}

/// The packaged configuration: parses to the defaults but for the store path; lists every
/// key; its `#key = value` lines, uncommented, are still the defaults.
fn check_config_text(text: &str) {
    let origin = Path::new(CONF);
    let parsed = Config::from_toml_str(text, origin).expect("packaged config parses");
    let mut expected = Config::default();
    expected.store.path = PathBuf::from("/var/lib/pasarela/pasarela.db");
    // An admin on the office's network reaches the dashboard over HTTPS after install.
    expected.web.https = Some("0.0.0.0:8443".parse().unwrap());
    // … and backs the store up every night.
    expected.store.nightly = Some(pasarela::config::NightlyBackup {
        hour: 3,
        minute: 15,
        dir: PathBuf::from("/var/lib/pasarela/backups"),
        keep: 7,
    });
    expected.source = Some(origin.to_path_buf());
    assert_eq!(
        parsed, expected,
        "the packaged config should only move the store and open HTTPS"
    );

    let mut mentioned = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let t = line.trim_start_matches('#').trim();
        if t.starts_with('[') && t.ends_with(']') && !t.contains(' ') {
            let name = t.trim_matches(|c| c == '[' || c == ']');
            let mut parts = name.splitn(2, '.');
            section = parts.next().unwrap_or_default().to_owned();
            if let Some(sub) = parts.next() {
                mentioned.insert((section.clone(), sub.to_owned()));
            }
        } else if let Some((key, _)) = t.split_once('=') {
            let key = key.trim();
            if !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                mentioned.insert((section.clone(), key.to_owned()));
            }
        }
    }
    let missing: Vec<String> = config_keys()
        .difference(&mentioned)
        .map(|(s, k)| format!("{s}.{k}"))
        .collect();
    assert!(
        missing.is_empty(),
        "packaging/pasarela.toml does not describe these keys: {missing:?}"
    );

    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut defaults = Config::from_toml_str(&uncommented, origin)
        .unwrap_or_else(|e| panic!("uncommented defaults do not parse: {e}\n{uncommented}"));
    // Which `[dundi]` keys the file writes is bookkeeping for the dashboard's precedence, not a
    // setting: uncommenting them makes them the file's, with the same values.
    assert!(defaults.dundi.file_keys.contains(&"listen".to_owned()));
    defaults.dundi.file_keys.clear();
    assert_eq!(
        defaults, expected,
        "a `#key = value` line is not the default"
    );
}

/// Directives the unit must have, and `systemd-analyze verify` on it.
fn check_unit(root: &Path, dir: &Path) {
    let text = fs::read_to_string(root.join(&UNIT[1..])).expect("packaged unit");
    let unit = Unit::parse(&text);
    for (key, value) in [
        ("Type", "notify"),
        (
            "ExecStart",
            "/usr/bin/pasarela serve --config /etc/pasarela/pasarela.toml",
        ),
        ("User", "pasarela"),
        ("Group", "pasarela"),
        ("SupplementaryGroups", "dialout"),
        ("StateDirectory", "pasarela"),
        ("WorkingDirectory", DATA),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("Restart", "on-failure"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("DevicePolicy", "closed"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        ),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(unit.get(key), Some(value), "{key}= in the unit");
    }
    assert!(
        unit.get("WatchdogSec").is_some(),
        "WatchdogSec= in the unit"
    );
    let devices = unit.all("DeviceAllow");
    for dev in ["char-ttyUSB rw", "char-ttyACM rw", "char-dahdi rw"] {
        assert!(
            devices.contains(&dev),
            "DeviceAllow={dev} missing: {devices:?}"
        );
    }

    if !program_exists("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze verify (systemd-analyze is not installed)");
        return;
    }
    // verify wants ExecStart's program to exist: point it at the extracted binary.
    let copy_dir = dir.join("unit-check");
    fs::create_dir_all(&copy_dir).unwrap();
    let copy = copy_dir.join("pasarela.service");
    let bin = root.join("usr/bin/pasarela");
    fs::write(
        &copy,
        text.replace(
            "ExecStart=/usr/bin/pasarela",
            &format!("ExecStart={}", bin.display()),
        ),
    )
    .unwrap();
    let out = run(
        dir,
        command("systemd-analyze", &["verify", "--man=no"]).arg(&copy),
        Duration::from_secs(60),
    );
    let complaints: Vec<&str> = out
        .stdout
        .lines()
        .chain(out.stderr.lines())
        .filter(|l| l.contains("pasarela"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify complains:\n{}",
        out.text()
    );
    eprintln!("systemd-analyze verify: ok");
    let out = run(
        dir,
        command("systemd-analyze", &["security", "--offline=yes"]).arg(&copy),
        Duration::from_secs(60),
    );
    match out.stdout.lines().find_map(|l| {
        l.split("Overall exposure level for pasarela.service: ")
            .nth(1)
    }) {
        Some(level) => {
            eprintln!("systemd-analyze security: {level}");
            let score: f64 = level
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .expect("an exposure score");
            assert!(score <= 3.0, "the unit's exposure grew to {level}");
        }
        None => eprintln!(
            "note: systemd-analyze security --offline gave no score:\n{}",
            out.text()
        ),
    }
}

/// A unit file as key → values (all sections; enough for the keys checked here).
struct Unit {
    entries: Vec<(String, String)>,
}

impl Unit {
    fn parse(text: &str) -> Unit {
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Unit { entries }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.all(key).last().copied()
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The installed package.

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `dpkg-query` status of the package, `None` when dpkg does not know it.
fn package_status(dir: &Path) -> Option<String> {
    let out = run(
        dir,
        command("dpkg-query", &["-W", "-f", "${Status} ${Version}", PACKAGE]),
        Duration::from_secs(30),
    );
    let s = out.stdout.trim().to_owned();
    (out.status.success() && !s.is_empty() && !s.starts_with("unknown")).then_some(s)
}

fn getent(dir: &Path, db: &str, key: &str) -> Option<String> {
    let out = run(dir, command("getent", &[db, key]), Duration::from_secs(10));
    out.status.success().then(|| out.stdout.trim().to_owned())
}

/// Purges the package (and whatever a failed purge left) when dropped.
struct Cleanup {
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out = Command::new("dpkg")
            .args(["--purge", PACKAGE])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output();
        let failed = match &out {
            Ok(o) => !o.status.success(),
            Err(_) => true,
        };
        if failed {
            eprintln!("cleanup: dpkg --purge {PACKAGE} failed: {out:?}");
        }
        // Leftovers of a purge that could not finish.
        let _ = fs::remove_dir_all(DATA);
        let _ = fs::remove_dir_all("/etc/pasarela");
        if getent(&self.dir, "passwd", "pasarela").is_some() {
            let _ = Command::new("userdel").arg("pasarela").status();
        }
        if getent(&self.dir, "group", "pasarela").is_some() {
            let _ = Command::new("groupdel").arg("pasarela").status();
        }
    }
}

/// A machine-wide lock: one installing run at a time.
fn host_lock() -> File {
    let path = std::env::temp_dir().join("pasarela-debian-package-test.lock");
    let f = File::create(&path).expect("create lock file");
    f.lock().expect("lock the package test");
    f
}

fn install(dir: &Path, deb: &Path) -> Out {
    let started = Instant::now();
    let out = run_ok(
        dir,
        command("dpkg", &["-i"])
            .arg(deb)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        Duration::from_secs(300),
    );
    eprintln!(
        "dpkg -i {} in {:.1} s",
        deb.display(),
        started.elapsed().as_secs_f64()
    );
    out
}

fn check_installed(dir: &Path, revision: u32) {
    let status = package_status(dir).expect("package known to dpkg");
    assert_eq!(
        status,
        format!("install ok installed {}", deb_version(revision))
    );
    let passwd = getent(dir, "passwd", "pasarela").expect("user pasarela exists");
    let fields: Vec<&str> = passwd.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid < 1000, "pasarela should be a system user: {passwd}");
    assert_eq!(fields[5], DATA, "{passwd}");
    assert!(fields[6].ends_with("nologin"), "{passwd}");
    let groups = run_ok(
        dir,
        command("id", &["-nG", "pasarela"]),
        Duration::from_secs(10),
    )
    .stdout;
    assert!(
        groups.split_whitespace().any(|g| g == "dialout"),
        "pasarela is not in dialout: {groups}"
    );
    let gid = fields[3].parse::<u32>().unwrap();
    for path in ["/usr/bin/pasarela", UNIT, SYSUSERS] {
        assert!(Path::new(path).is_file(), "{path} missing");
    }
    let data = fs::metadata(DATA).expect("data directory");
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o7777),
        (uid, gid, 0o750),
        "{DATA} should be pasarela:pasarela 0750"
    );
    let conf = fs::metadata(CONF).expect("config");
    assert_eq!(
        (conf.uid(), conf.gid(), conf.mode() & 0o7777),
        (0, gid, 0o640),
        "{CONF} should be root:pasarela 0640 (it holds passwords)"
    );
    assert!(
        fs::symlink_metadata(ENABLE_LINK).is_ok(),
        "the unit should be enabled ({ENABLE_LINK})"
    );
}

/// A loopback port below 1024, free for UDP and TCP (for CAP_NET_BIND_SERVICE).
fn free_privileged_port() -> Option<u16> {
    (600..1024).find(|&p| {
        UdpSocket::bind(("127.0.0.1", p)).is_ok() && TcpListener::bind(("127.0.0.1", p)).is_ok()
    })
}

/// The unit's ExecStart run as systemd would: user, groups, working directory, ambient
/// capabilities, a minimal environment and a notification socket.
struct Service {
    child: Child,
    notify: UnixDatagram,
    udp: SocketAddr,
    web: SocketAddr,
    log: PathBuf,
}

impl Service {
    fn start(dir: &Path, name: &str) -> Service {
        let unit = Unit::parse(&fs::read_to_string(UNIT).expect("installed unit"));
        let exec: Vec<&str> = unit
            .get("ExecStart")
            .expect("ExecStart")
            .split_whitespace()
            .collect();
        let user = unit.get("User").expect("User");
        let group = unit.get("Group").expect("Group");
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", user, "--regid", group, "--init-groups"]);
        for cap in unit
            .get("AmbientCapabilities")
            .unwrap_or("")
            .split_whitespace()
        {
            let cap = cap.to_ascii_lowercase();
            let cap = cap.trim_start_matches("cap_");
            cmd.arg(format!("--inh-caps=+{cap}"));
            cmd.arg(format!("--ambient-caps=+{cap}"));
        }
        cmd.arg("--").args(&exec);

        let abstract_name = format!("pasarela-deb-test-{}-{name}", std::process::id());
        let notify = {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
                .expect("abstract address");
            UnixDatagram::bind_addr(&addr).expect("bind the notification socket")
        };
        notify
            .set_read_timeout(Some(common::READY_TIMEOUT))
            .unwrap();
        let log = dir.join(format!("service-{name}.log"));
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("NOTIFY_SOCKET", format!("@{abstract_name}"))
            .env("WATCHDOG_USEC", "2000000")
            .current_dir(unit.get("WorkingDirectory").unwrap_or("/"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("service log"));
        let mut child = cmd.spawn().expect("run ExecStart through setpriv");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel::<String>();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.trim().to_owned());
            }
        });
        let fail = |msg: &str| -> ! {
            panic!(
                "{msg}\n--- {} ---\n{}",
                log.display(),
                fs::read_to_string(&log).unwrap_or_default()
            )
        };
        let mut buf = [0u8; 1024];
        let ready = match notify.recv(&mut buf) {
            Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) => fail(&format!("no READY=1 on the notification socket: {e}")),
        };
        if !ready.starts_with("READY=1") {
            fail(&format!("first notification is {ready:?}"));
        }
        let (mut udp, mut web) = (None, None);
        loop {
            match lines.recv_timeout(common::READY_TIMEOUT) {
                Ok(l) if l == "ready" => break,
                Ok(l) => {
                    if let Some(a) = l.strip_prefix("listening sip udp ") {
                        udp = a.parse().ok();
                    } else if let Some(a) = l.strip_prefix("listening web ") {
                        web = a.parse().ok();
                    }
                }
                Err(e) => fail(&format!("no `ready` on stdout: {e}")),
            }
        }
        let (Some(udp), Some(web)) = (udp, web) else {
            fail("no listening lines")
        };
        let s = Service {
            child,
            notify,
            udp,
            web,
            log,
        };
        s.check_identity();
        s
    }

    /// The process runs as the unit's user, with dialout among its groups.
    fn check_identity(&self) {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let passwd = Command::new("getent")
            .args(["passwd", "pasarela"])
            .output()
            .unwrap();
        let uid = String::from_utf8_lossy(&passwd.stdout)
            .split(':')
            .nth(2)
            .unwrap_or("")
            .to_owned();
        assert_eq!(field("Uid:")[..1], [uid], "{status}");
        let dialout = Command::new("getent")
            .args(["group", "dialout"])
            .output()
            .unwrap();
        let gid = String::from_utf8_lossy(&dialout.stdout)
            .split(':')
            .nth(2)
            .unwrap_or("")
            .to_owned();
        assert!(
            field("Groups:").contains(&gid),
            "dialout ({gid}) not among the groups: {status}"
        );
    }

    fn stop(mut self) {
        common::signal(self.child.id(), "TERM");
        let status = wait_timeout(&mut self.child, common::STOP_TIMEOUT);
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "the service did not stop cleanly on SIGTERM ({status:?})\n{log}"
        );
        let mut buf = [0u8; 1024];
        let mut stopping = false;
        while let Ok(n) = self.notify.recv(&mut buf) {
            if buf[..n].starts_with(b"STOPPING=1") {
                stopping = true;
                break;
            }
        }
        assert!(stopping, "no STOPPING=1 before the exit");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect web");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    (status, body)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// `/healthz` is ok and `/metrics` shows `registrations` (waiting up to 5 s for it).
fn check_web(service: &Service, registrations: f64) {
    assert_eq!(http_get(service.web, "/healthz"), (200, "ok\n".to_owned()));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = http_get(service.web, "/metrics");
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("pasarela_build_info{"), "{text}");
        if metric(&text, "pasarela_registrations") == Some(registrations) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {registrations} registrations:\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The admin's edits: loopback SIP on `port`, the web on a free port, a domain, one extension.
fn edit_config(port: u16) {
    let text = fs::read_to_string(CONF).unwrap();
    let mut edited = text.clone();
    for (default, new) in [
        (
            "#listen = [\"udp:0.0.0.0:5060\", \"tcp:0.0.0.0:5060\"]",
            format!("listen = [\"udp:127.0.0.1:{port}\", \"tcp:127.0.0.1:{port}\"]"),
        ),
        (
            "#listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:0\"".to_owned(),
        ),
        (
            "#domain = \"pasarela.local\"",
            "domain = \"office.test\"".to_owned(),
        ),
        (
            "https = \"0.0.0.0:8443\"",
            "https = \"127.0.0.1:0\"".to_owned(),
        ),
    ] {
        assert_eq!(
            text.matches(default).count(),
            1,
            "{default:?} once in {CONF}"
        );
        edited = edited.replace(default, &new);
    }
    edited.push_str(&format!(
        "\n# Edited by the package test.\n[[extension]]\nnumber = \"100\"\npassword = \"{PASSWORD}\"\nname = \"Admin\"\n"
    ));
    fs::write(CONF, edited).unwrap();
}

/// Rows in the database, read without locking (the service has stopped; its last connection
/// checkpointed the WAL into the main file).
fn bindings_in_store() -> i64 {
    let db = format!("file:{DATA}/pasarela.db?immutable=1");
    let conn = rusqlite::Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .expect("open the database read-only");
    conn.query_row(
        "SELECT COUNT(*) FROM bindings WHERE aor LIKE '%100%'",
        [],
        |r| r.get(0),
    )
    .expect("count bindings")
}

// ---------------------------------------------------------------------------------------------

#[test]
fn build_inspect_install_upgrade_remove_purge() {
    let started = Instant::now();
    let dir = TestDir::new("deb");
    let d = dir.path();
    let v1 = build_deb(d, 1);
    let v2 = build_deb(d, 2);
    inspect(&v1, d);
    eprintln!(
        "built and inspected in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Installing touches the machine itself (a system user, /etc, /var/lib): only on a throw-away
    // CI machine (CI=true, as root), or when asked explicitly with PASARELA_TEST_INSTALL=1.
    let asked = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("PASARELA_TEST_INSTALL").is_ok_and(|v| v == "1");
    if !asked {
        eprintln!(
            "SKIPPED: installing the package on this machine (set CI=true or PASARELA_TEST_INSTALL=1)"
        );
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED: installing the package needs root (run the tests as root, as CI does)");
        return;
    }
    for tool in ["dpkg", "setpriv", "getent"] {
        assert!(
            program_exists(tool),
            "{tool} is needed to install and run the package"
        );
    }
    let _lock = host_lock();
    if let Some(status) = package_status(d) {
        eprintln!("SKIPPED: {PACKAGE} is already known to dpkg here ({status}); not touching it");
        return;
    }
    if getent(d, "passwd", "pasarela").is_some() {
        eprintln!("SKIPPED: a user pasarela exists already on this machine; not touching it");
        return;
    }
    let _cleanup = Cleanup {
        dir: d.to_path_buf(),
    };

    // Install.
    let out = install(d, &v1);
    assert!(
        out.stdout.contains("[[extension]]") && out.stdout.contains(CONF),
        "the first installation should say how to begin:\n{}",
        out.text()
    );
    check_installed(d, 1);

    // The admin sets it up; the service runs as the unit says.
    let port = free_privileged_port().unwrap_or_else(common::free_port);
    edit_config(port);
    let service = Service::start(d, "v1");
    assert_eq!(service.udp.port(), port);
    assert_eq!(
        options_status(service.udp),
        Some(200),
        "OPTIONS to the installed service"
    );
    check_web(&service, 0.0);
    let res = sipp(
        d,
        "register_auth.xml",
        service.udp,
        "u1",
        &["-s", "100", "-au", "100", "-ap", PASSWORD],
    );
    assert!(
        res.success(),
        "REGISTER to the installed service\n{}",
        res.report()
    );
    check_web(&service, 1.0);
    service.stop();
    assert_eq!(
        bindings_in_store(),
        1,
        "the registration was written on SIGTERM"
    );
    let edited = fs::read_to_string(CONF).unwrap();

    // Upgrade: the edited conffile and the data stay.
    let out = install(d, &v2);
    assert!(
        !out.stdout.contains("[[extension]]"),
        "no first-install note on upgrade"
    );
    check_installed(d, 2);
    assert_eq!(
        fs::read_to_string(CONF).unwrap(),
        edited,
        "the edited config survives"
    );
    for leftover in [".dpkg-dist", ".dpkg-new", ".dpkg-old"] {
        assert!(
            !Path::new(&format!("{CONF}{leftover}")).exists(),
            "{CONF}{leftover}"
        );
    }
    assert_eq!(bindings_in_store(), 1, "the database survives the upgrade");
    let service = Service::start(d, "v2");
    assert_eq!(options_status(service.udp), Some(200));
    check_web(&service, 1.0); // restored from the database at start
    service.stop();

    // Remove: data, configuration and user stay.
    run_ok(
        d,
        command("dpkg", &["--remove", PACKAGE]).env("DEBIAN_FRONTEND", "noninteractive"),
        Duration::from_secs(120),
    );
    assert_eq!(
        package_status(d).as_deref(),
        Some(format!("deinstall ok config-files {}", deb_version(2)).as_str())
    );
    assert!(!Path::new("/usr/bin/pasarela").exists() && !Path::new(UNIT).exists());
    assert_eq!(
        fs::read_to_string(CONF).unwrap(),
        edited,
        "remove keeps the config"
    );
    assert!(
        Path::new(DATA).join("pasarela.db").is_file(),
        "remove keeps the data"
    );
    assert_eq!(bindings_in_store(), 1);
    assert!(
        getent(d, "passwd", "pasarela").is_some(),
        "remove keeps the user"
    );

    // Purge: all gone.
    run_ok(
        d,
        command("dpkg", &["--purge", PACKAGE]).env("DEBIAN_FRONTEND", "noninteractive"),
        Duration::from_secs(120),
    );
    assert_eq!(package_status(d), None);
    assert!(
        getent(d, "passwd", "pasarela").is_none(),
        "purge deletes the user"
    );
    assert!(
        getent(d, "group", "pasarela").is_none(),
        "purge deletes the group"
    );
    for path in [DATA, "/etc/pasarela", ENABLE_LINK] {
        assert!(fs::symlink_metadata(path).is_err(), "purge leaves {path}");
    }
    eprintln!(
        "package test done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
