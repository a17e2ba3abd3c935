//! A TLS server pasarela must refuse: a socat OpenSSL listener on loopback with a self-signed
//! certificate nobody trusts (shared by the TLS and trunk failover tests).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::require_program;

/// A self-signed certificate for `name` nobody trusts (cert and key in one PEM file).
pub fn untrusted(dir: &Path, name: &str) -> PathBuf {
    let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let path = dir.join("untrusted.pem");
    std::fs::write(
        &path,
        format!("{}{}", c.cert.pem(), c.signing_key.serialize_pem()),
    )
    .unwrap();
    path
}

/// A socat OpenSSL listener on `ip`:`port` with `cert`: a TLS server pasarela must refuse.
pub struct Socat(Child);

impl Socat {
    pub fn start(port: u16, cert: &Path) -> Socat {
        Socat::start_on("127.0.0.1", port, cert)
    }

    pub fn start_on(ip: &str, port: u16, cert: &Path) -> Socat {
        require_program("socat", "socat");
        let child = Command::new("socat")
            .arg("-u")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind={ip},reuseaddr,fork,verify=0,cert={}",
                cert.display()
            ))
            .arg("OPEN:/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat");
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect((ip, port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "socat did not listen on {ip}:{port}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Socat(child)
    }
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
