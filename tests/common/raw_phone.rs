//! A phone on a raw UDP socket that answers at once: 200 with an audio answer to every INVITE,
//! 200 to every other request but ACK. For timing tests, where a sipp callee's own pauses
//! would blur what is measured. Stops when dropped.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct RawPhone {
    pub addr: SocketAddr,
    invites: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawPhone {
    /// Answers on `addr` (for example the port a registration was sent from).
    pub fn bind(addr: SocketAddr) -> RawPhone {
        let sock = UdpSocket::bind(addr).expect("bind the raw phone");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("raw phone address");
        let invites = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (invites.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(text) = std::str::from_utf8(&buf[..n]) else {
                    continue;
                };
                if let Some(reply) = answer(text, addr) {
                    if text.starts_with("INVITE ") {
                        seen.lock().unwrap().push(Instant::now());
                    }
                    let _ = sock.send_to(reply.as_bytes(), from);
                }
            }
        });
        RawPhone {
            addr,
            invites,
            stop,
            thread: Some(thread),
        }
    }

    /// How many INVITEs (retransmissions included) it has answered.
    pub fn invites(&self) -> usize {
        self.invites.lock().unwrap().len()
    }
}

impl Drop for RawPhone {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The response to request `text`, or `None` for an ACK, a response or garbage.
fn answer(text: &str, local: SocketAddr) -> Option<String> {
    let (head, _) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let method = lines.next()?.split(' ').next()?.to_string();
    if method == "ACK" || method == "SIP/2.0" {
        return None;
    }
    let mut copied = String::new();
    for line in lines {
        let name = line
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" | "record-route" => {
                copied.push_str(line);
                copied.push_str("\r\n");
            }
            "to" | "t" => {
                copied.push_str(line);
                if !line.to_ascii_lowercase().contains("tag=") {
                    copied.push_str(";tag=rawphone");
                }
                copied.push_str("\r\n");
            }
            _ => {}
        }
    }
    let ip = local.ip();
    let body = if method == "INVITE" {
        format!(
            "v=0\r\no=phone 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        )
    } else {
        String::new()
    };
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    Some(format!(
        "SIP/2.0 200 OK\r\n{copied}Contact: <sip:phone@{local}>\r\n{content_type}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    ))
}
