//! Operations endpoints and the systemd protocol of a normally started `pasarela serve`:
//! `/healthz` and `/metrics` on `[web] listen` (read with a plain HTTP/1.1 client), the
//! registration count following a real sipp REGISTER, `READY=1` / `WATCHDOG=1` / `STOPPING=1`
//! on a notification socket as systemd would provide it, and a clear failure when the web
//! address is taken.
mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    config, http_get, metric_sample as sample, options_status, sipp, Server, TestDir, MD5_ONLY,
};

#[test]
fn healthz_and_metrics_follow_the_sip_loop() {
    let server = Server::start(&config(MD5_ONLY));
    let web = server
        .web
        .unwrap_or_else(|| server.fail("no `listening web ADDR` line before `ready`"));
    assert!(web.ip().is_loopback() && web.port() != 0, "{web}");

    let (status, head, body) = http_get(web, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"), "{head}");

    let (status, head, text) = http_get(web, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    for name in [
        "pasarela_registrations",
        "pasarela_calls_active",
        "pasarela_calls_routing",
        "pasarela_sip_transactions{role=\"server\"}",
        "pasarela_sip_transactions{role=\"client\"}",
    ] {
        assert_eq!(sample(&text, name), Some(0.0), "{name} in\n{text}");
    }
    let start = sample(&text, "process_start_time_seconds").expect("start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now && now - start < 120.0,
        "start {start}, now {now}"
    );
    assert!(
        text.contains(&format!(
            "pasarela_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(text.contains("# TYPE pasarela_route_decision_seconds histogram"));

    let (status, _, _) = http_get(web, "/no-such-page");
    assert_eq!(status, 404);

    // A real registration shows up in the count within the publication interval.
    let res = sipp(
        server.dir(),
        "register_auth.xml",
        server.udp,
        "u1",
        &["-s", "100", "-au", "100", "-ap", "secret100"],
    );
    res.assert_success(&server);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, _, text) = http_get(web, "/metrics");
        if sample(&text, "pasarela_registrations") == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pasarela_registrations did not become 1:\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(web, "/healthz").0, 200);
}

/// Reads the server's stdout until `ready`: the SIP UDP and web addresses.
fn read_ready(lines: &mpsc::Receiver<String>) -> (SocketAddr, SocketAddr) {
    let (mut udp, mut web) = (None, None);
    loop {
        let line = lines
            .recv_timeout(common::READY_TIMEOUT)
            .expect("server printed `ready`");
        if line == "ready" {
            break;
        }
        if let Some(a) = line.strip_prefix("listening sip udp ") {
            udp = a.parse().ok();
        } else if let Some(a) = line.strip_prefix("listening web ") {
            web = a.parse().ok();
        }
    }
    (udp.expect("udp address"), web.expect("web address"))
}

#[test]
fn systemd_readiness_watchdog_and_stop() {
    let dir = TestDir::new("notify");
    let socket_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).expect("bind notification socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let template = config(MD5_ONLY)
        .replace("{UDP}", "127.0.0.1:0")
        .replace("{TCP}", "127.0.0.1:0")
        .replace("{DB}", &dir.path().join("p.db").display().to_string());
    let cfg = dir.path().join("pasarela.toml");
    std::fs::write(&cfg, template).unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut child = Command::new(common::server_program())
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "300000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn pasarela");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.trim().to_owned());
        }
    });
    let recv = || {
        let mut buf = [0u8; 1024];
        let n = notify.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    let ready = recv();
    let (udp, web) = read_ready(&lines);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(
        ready.contains(&format!("SIP udp {udp}")) && ready.contains(&format!("web {web}")),
        "{ready:?}"
    );
    // Ready means ready: the SIP socket answers right away.
    assert_eq!(options_status(udp), Some(200));

    // WATCHDOG_USEC = 300 ms: a ping at least every 150 ms, give or take the one-second pulse
    // being the upper bound when idle.
    let t = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        assert_eq!(recv(), "WATCHDOG=1");
        pings += 1;
    }
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    common::signal(child.id(), "TERM");
    loop {
        let msg = recv();
        if msg == "WATCHDOG=1" {
            continue;
        }
        assert!(msg.starts_with("STOPPING=1"), "{msg:?}");
        break;
    }
    let status = common::wait_timeout(&mut child, common::STOP_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("no exit within {:?} of SIGTERM", common::STOP_TIMEOUT)
    });
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
}

#[test]
fn web_address_in_use_is_a_clear_error() {
    let dir = TestDir::new("webbusy");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let text = config(MD5_ONLY)
        .replace("{UDP}", "127.0.0.1:0")
        .replace("{TCP}", "127.0.0.1:0")
        .replace("{DB}", &dir.path().join("p.db").display().to_string())
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{addr}\""));
    let cfg = dir.path().join("pasarela.toml");
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(common::server_program())
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = common::wait_timeout(&mut child, Duration::from_secs(20))
        .expect("pasarela exits when the web address is taken");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    // Exit status 2: a start-up error systemd should not retry (issue 16).
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("[web] listen") && err.contains(&addr.to_string()),
        "{err}"
    );
    drop(taken);
}
