//! Start-up errors point to the fix (issue 16): a SIP or dashboard address in use, an unreadable
//! DUNDi key. `serve` names the key and the address,
//! exits 2 (the packaged unit does not restart on 2) and creates no database; `check-config`
//! finds the same problems.
mod common;

use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::time::Duration;

use common::{server_program, TestDir};

fn run(dir: &std::path::Path, conf: &str, args: &[&str]) -> Output {
    let path = dir.join("p.toml");
    std::fs::write(&path, conf).unwrap();
    let mut child = Command::new(server_program())
        .args(args)
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start pasarela");
    if common::wait_timeout(&mut child, Duration::from_secs(20)).is_none() {
        let _ = child.kill();
        panic!("pasarela {args:?} did not exit on a start error");
    }
    child.wait_with_output().unwrap()
}

fn conf(dir: &std::path::Path, sip: &str, web: &str, extra: &str) -> String {
    format!(
        "[sip]\nlisten = [\"{sip}\"]\n[web]\nlisten = \"{web}\"\n[store]\npath = \"{}\"\n{extra}",
        dir.join("p.db").display()
    )
}

#[test]
fn sip_address_in_use_names_address_and_key_exits_2_and_creates_nothing() {
    let dir = TestDir::new("start-err");
    let held = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let c = conf(dir.path(), &format!("udp:{addr}"), "127.0.0.1:0", "");
    let out = run(dir.path(), &c, &["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("[sip] listen `udp:{addr}`")), "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(!dir.path().join("p.db").exists(), "a database was created");
    // check-config cannot know whether the running gateway holds it: a warning, exit 0.
    let out = run(dir.path(), &c, &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning") && err.contains(&addr.to_string()),
        "{err}"
    );
}

#[test]
fn web_address_in_use_names_address_and_key() {
    let dir = TestDir::new("start-err");
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap();
    let c = conf(dir.path(), "udp:127.0.0.1:0", &addr.to_string(), "");
    let out = run(dir.path(), &c, &["serve"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("[web] listen `{addr}`")), "{err}");
    assert!(!dir.path().join("p.db").exists());
}

#[test]
fn missing_dundi_key_fails_serve_and_check_config_alike() {
    let dir = TestDir::new("start-err");
    let extra = "[dundi]\nenabled = true\nlisten = \"127.0.0.1:0\"\neid = \"02:00:00:00:00:09\"\n\
                 private_key = \"/nonexistent/office.key\"\n";
    let c = conf(dir.path(), "udp:127.0.0.1:0", "127.0.0.1:0", extra);
    for args in [&["check-config"][..], &["serve"][..]] {
        let out = run(dir.path(), &c, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("[dundi] private_key `/nonexistent/office.key`"),
            "{err}"
        );
        assert!(err.contains("dundi keygen"), "{err}");
    }
    assert!(!dir.path().join("p.db").exists());
}

/// A host without DAHDI: `check-config` and `serve` name the FXO channel and what is missing
/// (issue 19), and exit 2.
#[test]
fn an_fxo_channel_without_dahdi_is_named_with_what_to_check() {
    if std::path::Path::new("/dev/dahdi/channel").exists() {
        return; // a host with a card: nothing is missing
    }
    let dir = TestDir::new("start-err-fxo");
    let c = conf(
        dir.path(),
        "udp:127.0.0.1:0",
        "127.0.0.1:0",
        "[[fxo]]\nname = \"telco\"\nchannel = \"3\"\n",
    );
    for cmd in ["check-config", "serve"] {
        let out = run(dir.path(), &c, &[cmd]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("[[fxo]] #1 (telco) channel `3`"),
            "{cmd}: {err}"
        );
        assert!(err.contains("dahdi:3"), "{cmd}: {err}");
        assert!(
            err.contains("/dev/dahdi/channel does not exist"),
            "{cmd}: {err}"
        );
        assert!(err.contains("lsmod"), "{cmd}: {err}");
    }
    assert!(!dir.path().join("p.db").exists(), "a database was created");
    // A bad table names its key.
    let c = conf(
        dir.path(),
        "udp:127.0.0.1:0",
        "127.0.0.1:0",
        "[[fxo]]\nchannel = \"3\"\ncountry = \"XX\"\n",
    );
    let out = run(dir.path(), &c, &["check-config"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fxo") && err.contains("country"), "{err}");
}
