//! The systemd service-manager protocol (`sd_notify`): tells systemd that `serve` is ready
//! (after the SIP sockets are bound), keeps its watchdog fed from the SIP loop, and says when
//! the process is stopping.
//!
//! The protocol is one datagram of `KEY=VALUE` lines sent to the unix socket named by
//! `NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`). `WATCHDOG_USEC`
//! (with `WATCHDOG_PID`, when set, naming this process) asks for a `WATCHDOG=1` at least that
//! often; we send one every half interval. Without `NOTIFY_SOCKET` (not started by systemd)
//! every call is a no-op. A failed send is logged, never fatal: the gateway keeps serving.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Why the notification socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `NOTIFY_SOCKET` is neither an absolute path nor an `@abstract` name.
    #[error("NOTIFY_SOCKET `{0}` is neither an absolute path nor an @abstract socket name")]
    BadAddress(String),
    /// `WATCHDOG_USEC` is not a positive number of microseconds.
    #[error("WATCHDOG_USEC `{0}` is not a positive number of microseconds")]
    BadWatchdog(String),
    /// The datagram socket could not be created or the address is not usable.
    #[error("notification socket {address}: {source}")]
    Socket {
        /// `NOTIFY_SOCKET` as given.
        address: String,
        /// The underlying error.
        source: io::Error,
    },
}

/// A connection to the service manager, and the watchdog schedule it asked for.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// How often `WATCHDOG=1` goes out: half of `WATCHDOG_USEC`.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment;
    /// `Ok(None)` when the process was not started with a notification socket.
    pub fn from_env() -> Result<Option<Notifier>, NotifyError> {
        let socket = std::env::var("NOTIFY_SOCKET").ok();
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::new(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// Builds a notifier from the values of `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`
    /// for process `my_pid`. The watchdog applies only when `WATCHDOG_PID` is unset or names
    /// `my_pid` (systemd sets it so that children do not feed a parent's watchdog).
    pub fn new(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        my_pid: u32,
    ) -> Result<Option<Notifier>, NotifyError> {
        let Some(text) = socket.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let address = parse_address(text)?;
        let socket = UnixDatagram::unbound().map_err(|source| NotifyError::Socket {
            address: text.to_owned(),
            source,
        })?;
        let for_us = match watchdog_pid.map(str::trim).filter(|p| !p.is_empty()) {
            None => true,
            Some(p) => p.parse::<u32>().ok() == Some(my_pid),
        };
        let ping_every = match watchdog_usec.map(str::trim).filter(|u| !u.is_empty()) {
            Some(u) if for_us => {
                let usec: u64 = u
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| NotifyError::BadWatchdog(u.to_owned()))?;
                Some(Duration::from_micros(usec) / 2)
            }
            _ => None,
        };
        Ok(Some(Notifier {
            socket,
            address,
            ping_every,
            last_ping: None,
        }))
    }

    /// How often [`Notifier::keep_alive`] sends `WATCHDOG=1`; `None` without a watchdog.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.ping_every
    }

    /// `READY=1`, with a `STATUS=` line for `systemctl status`.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1`: the process is shutting down on purpose.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// Sends `WATCHDOG=1` when half the watchdog interval has passed since the last one.
    /// Called from the SIP loop, so a loop that hangs stops feeding the watchdog.
    pub fn keep_alive(&mut self, now: Instant) {
        let Some(every) = self.ping_every else { return };
        let due = self
            .last_ping
            .is_none_or(|last| now.saturating_duration_since(last) >= every);
        if due {
            self.last_ping = Some(now);
            self.send("WATCHDOG=1");
        }
    }

    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.address) {
            tracing::warn!("cannot notify the service manager ({message:?}): {e}");
        }
    }
}

/// `STATUS=` takes one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn parse_address(text: &str) -> Result<SocketAddr, NotifyError> {
    let socket_error = |source| NotifyError::Socket {
        address: text.to_owned(),
        source,
    };
    if let Some(name) = text.strip_prefix('@') {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            return SocketAddr::from_abstract_name(name.as_bytes()).map_err(socket_error);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = name;
            return Err(NotifyError::BadAddress(text.to_owned()));
        }
    }
    if text.starts_with('/') {
        return SocketAddr::from_pathname(text).map_err(socket_error);
    }
    Err(NotifyError::BadAddress(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn without_socket_nothing_is_set_up() {
        assert!(Notifier::new(None, Some("1000"), None, 1)
            .unwrap()
            .is_none());
        assert!(Notifier::new(Some(""), None, None, 1).unwrap().is_none());
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(matches!(
            Notifier::new(Some("relative/path"), None, None, 1),
            Err(NotifyError::BadAddress(_))
        ));
        assert!(matches!(
            Notifier::new(Some("/run/x"), Some("soon"), None, 1),
            Err(NotifyError::BadWatchdog(_))
        ));
        assert!(matches!(
            Notifier::new(Some("/run/x"), Some("0"), None, 1),
            Err(NotifyError::BadWatchdog(_))
        ));
    }

    #[test]
    fn path_socket_gets_ready_watchdog_and_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier::new(path.to_str(), Some("2000000"), Some("42"), 42)
            .unwrap()
            .unwrap();
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(1)));
        n.ready("SIP on udp 127.0.0.1:5060\nmore");
        let msg = receive(&listener);
        assert_eq!(msg, "READY=1\nSTATUS=SIP on udp 127.0.0.1:5060 more");
        let t0 = Instant::now();
        n.keep_alive(t0);
        assert_eq!(receive(&listener), "WATCHDOG=1");
        // Not due yet: nothing is sent, so the next datagram is STOPPING.
        n.keep_alive(t0 + Duration::from_millis(500));
        n.keep_alive(t0 + Duration::from_millis(1000));
        assert_eq!(receive(&listener), "WATCHDOG=1");
        n.stopping();
        assert!(receive(&listener).starts_with("STOPPING=1"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("pasarela-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::new(Some(&format!("@{name}")), None, None, 1)
            .unwrap()
            .unwrap();
        n.stopping();
        assert!(receive(&listener).starts_with("STOPPING=1"));
    }

    #[test]
    fn watchdog_for_another_pid_is_ignored() {
        let mut n = Notifier::new(Some("/nonexistent/notify"), Some("1000000"), Some("7"), 8)
            .unwrap()
            .unwrap();
        assert_eq!(n.watchdog_interval(), None);
        // Sending nothing must not fail either.
        n.keep_alive(Instant::now());
    }
}
