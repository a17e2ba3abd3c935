//! Start-up checks that `serve` and `check-config` share: every listening address can be bound,
//! every key file the configuration names can be read and parsed, and the store's directory is
//! writable. Each problem names the configuration key and the value, and says what to change, so
//! that `serve` can refuse to start (exit status 2, before it creates any file) with a message
//! that points to the fix, and `check-config` reports the same problems before a restart does.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;

use crate::config::{Config, Transport};
use crate::routing::dundi::crypto;

/// What the checks found.
#[derive(Debug, Default)]
pub struct Report {
    /// Problems that stop `serve`.
    pub errors: Vec<String>,
    /// Things worth knowing that do not stop it (or that only the running gateway can tell).
    pub warnings: Vec<String>,
}

impl Report {
    /// No errors.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// How to treat an address that is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InUse {
    /// `serve`: nothing else may hold our addresses.
    Error,
    /// `check-config`: the running gateway probably holds them; say so as a warning.
    Warning,
}

/// Runs every check against `config`.
pub fn check(config: &Config, in_use: InUse) -> Report {
    let mut report = Report::default();
    check_store(&config.store.path, &mut report);
    for l in &config.sip.listen {
        let key = format!("[sip] listen `{l}`");
        let result = match l.transport {
            Transport::Udp => UdpSocket::bind(l.addr).map(drop),
            Transport::Tcp | Transport::Tls => TcpListener::bind(l.addr).map(drop),
        };
        bind_outcome(&key, l.addr, result, in_use, &mut report);
    }
    bind_outcome(
        &format!("[web] listen `{}`", config.web.listen),
        config.web.listen,
        TcpListener::bind(config.web.listen).map(drop),
        in_use,
        &mut report,
    );
    if let Some(https) = config.web.https {
        bind_outcome(
            &format!("[web] https `{https}`"),
            https,
            TcpListener::bind(https).map(drop),
            in_use,
            &mut report,
        );
    }
    check_tls_files(config, &mut report);
    for (i, f) in config.fxo.iter().enumerate() {
        if let Err(e) = crate::pstn::dahdi::channel::probe(&f.channel) {
            report.errors.push(format!(
                "[[fxo]] #{} ({}) channel `{}`: {e}",
                i + 1,
                f.settings.name,
                f.channel
            ));
        }
    }
    if config.enum_zone.enabled {
        let addr = config.enum_zone.listen;
        let key = format!("[enum_zone] listen `{addr}`");
        let result = UdpSocket::bind(addr).and_then(|u| TcpListener::bind(addr).map(|t| (u, t)));
        bind_outcome(&key, addr, result.map(drop), in_use, &mut report);
    }
    if config.dundi.enabled {
        let s = &config.dundi.settings;
        bind_outcome(
            &format!("[dundi] listen `{}`", s.bind),
            s.bind,
            UdpSocket::bind(s.bind).map(drop),
            in_use,
            &mut report,
        );
        if let Some(p) = &s.private_key {
            key_file("[dundi] private_key", p, true, &mut report);
        }
        if let Some(p) = &s.public_key {
            key_file("[dundi] public_key", p, false, &mut report);
        }
        for (i, peer) in s.peers.iter().enumerate() {
            let at = format!("[[dundi.peer]] #{} ({})", i + 1, peer.eid);
            if let Some(p) = &peer.inkey {
                key_file(&format!("{at} inkey"), p, false, &mut report);
            }
            if let Some(p) = &peer.outkey {
                key_file(&format!("{at} outkey"), p, true, &mut report);
            }
            if peer.inkey.is_some() && peer.outkey.is_none() && s.private_key.is_none() {
                report.errors.push(format!(
                    "{at}: has an inkey but no private key to answer with: set `outkey` or \
                     `[dundi] private_key`"
                ));
            }
        }
    }
    report
}

/// The `[tls]` certificate, key and CA files named in the configuration must be readable.
fn check_tls_files(config: &Config, report: &mut Report) {
    let t = &config.tls;
    let named = [("cert", t.cert.as_ref()), ("key", t.key.as_ref())]
        .into_iter()
        .filter_map(|(k, p)| p.map(|p| (k.to_owned(), p)))
        .chain(t.ca_files.iter().map(|p| ("ca_files".to_owned(), p)))
        .chain(
            t.peers
                .iter()
                .filter_map(|p| p.ca.as_ref().map(|c| (format!("peer {} ca", p.domain), c))),
        );
    for (key, path) in named {
        if let Err(e) = std::fs::File::open(path) {
            report.errors.push(format!(
                "[tls] {key} `{}`: cannot be read ({e})",
                path.display()
            ));
        }
    }
}

fn check_store(path: &Path, report: &mut Report) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            if m.permissions().readonly() {
                report.errors.push(format!(
                    "[store] path `{}`: the directory {} is read-only",
                    path.display(),
                    dir.display()
                ));
            }
        }
        Ok(_) => report.errors.push(format!(
            "[store] path `{}`: {} is not a directory",
            path.display(),
            dir.display()
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => report.warnings.push(format!(
            "[store] path `{}`: the directory {} does not exist yet; serve creates it",
            path.display(),
            dir.display()
        )),
        Err(e) => report.errors.push(format!(
            "[store] path `{}`: the directory {} cannot be used ({e}); choose another path",
            path.display(),
            dir.display()
        )),
    }
}

fn bind_outcome(
    key: &str,
    addr: SocketAddr,
    result: std::io::Result<()>,
    in_use: InUse,
    report: &mut Report,
) {
    let Err(e) = result else { return };
    match e.kind() {
        ErrorKind::AddrInUse if in_use == InUse::Warning => report.warnings.push(format!(
            "{key}: {addr} is in use now (by a running pasarela, or by another server)"
        )),
        ErrorKind::AddrInUse => report.errors.push(format!(
            "{key}: cannot listen on {addr}: the address is in use (another SIP server or \
             pasarela running?); stop it or choose another port"
        )),
        ErrorKind::PermissionDenied => report.errors.push(format!(
            "{key}: cannot listen on {addr}: permission denied (ports below 1024 need root or \
             CAP_NET_BIND_SERVICE, which the packaged systemd unit grants)"
        )),
        ErrorKind::AddrNotAvailable => report.errors.push(format!(
            "{key}: cannot listen on {addr}: no interface of this machine has that address"
        )),
        _ => report
            .errors
            .push(format!("{key}: cannot listen on {addr}: {e}")),
    }
}

fn key_file(key: &str, path: &Path, private: bool, report: &mut Report) {
    let loaded = if private {
        crypto::load_private_key(path).map(drop)
    } else {
        crypto::load_public_key(path).map(drop)
    };
    if let Err(e) = loaded {
        report.errors.push(format!(
            "{key} `{}`: {e} (create keys with `pasarela dundi keygen`)",
            path.display()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml_str(text, Path::new("test.toml")).expect("config")
    }

    #[test]
    fn an_address_in_use_names_the_key_and_address() {
        let held = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let c = config(&format!(
            "[sip]\nlisten = [\"udp:{addr}\"]\n[web]\nlisten = \"127.0.0.1:0\"\n"
        ));
        let r = check(&c, InUse::Error);
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert!(
            r.errors[0].contains(&format!("[sip] listen `udp:{addr}`")),
            "{r:?}"
        );
        assert!(r.errors[0].contains("in use"), "{r:?}");
        let r = check(&c, InUse::Warning);
        assert!(r.ok() && r.warnings.len() == 1, "{r:?}");
    }

    #[test]
    fn missing_key_files_are_errors() {
        let c = config(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n[web]\nlisten = \"127.0.0.1:0\"\n\
             [dundi]\nenabled = true\nlisten = \"127.0.0.1:0\"\neid = \"02:00:00:00:00:01\"\n\
             private_key = \"/nonexistent/office.key\"\n",
        );
        let r = check(&c, InUse::Error);
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("[dundi] private_key `/nonexistent/office.key`")),
            "{r:?}"
        );
    }
}
