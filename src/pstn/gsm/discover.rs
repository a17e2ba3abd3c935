//! Finding a modem's ports: the USB serial interfaces the profile names, grouped by USB device
//! from sysfs, and each candidate asked for its IMEI and ICCID so that a configured modem is
//! found by its identity, whatever ttyUSB numbers it got this time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::at::{AtEngine, AtEvent, Command};
use super::line::parse_iccid;
use super::profile::Profile;

/// The two ports of one modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPair {
    /// AT commands.
    pub data: PathBuf,
    /// PCM audio.
    pub audio: PathBuf,
}

/// Which modem a line uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// These ports, whatever modem is behind them.
    Fixed(PortPair),
    /// The modem with this IMEI and/or SIM ICCID, among the candidates.
    Identity {
        /// Wanted IMEI.
        imei: Option<String>,
        /// Wanted ICCID.
        iccid: Option<String>,
        /// Where to look.
        candidates: Candidates,
    },
}

/// Where to look for a modem by identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// USB serial devices whose ids the profile lists (from `/sys/class/tty`).
    Usb,
    /// These port pairs (tests, unusual set-ups).
    List(Vec<PortPair>),
}

/// What a modem said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// `AT+CGSN`.
    pub imei: Option<String>,
    /// The profile's ICCID command.
    pub iccid: Option<String>,
}

impl Identity {
    /// Whether this identity is the wanted one (every given part must match).
    pub fn matches(&self, imei: Option<&str>, iccid: Option<&str>) -> bool {
        let ok_imei = imei.is_none_or(|w| self.imei.as_deref() == Some(w));
        let ok_iccid = iccid.is_none_or(|w| {
            self.iccid.as_deref().is_some_and(|have| {
                have.trim_end_matches(['F', 'f']) == w.trim_end_matches(['F', 'f'])
            })
        });
        (imei.is_some() || iccid.is_some()) && ok_imei && ok_iccid
    }
}

/// A modem this process identified (while looking for a line's modem by IMEI or ICCID, or
/// as a running line): its ports and what it said about itself. The Lines page offers them
/// when a modem line is added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundModem {
    /// Its AT port.
    pub data_port: String,
    /// Its audio port, when known.
    pub audio_port: Option<String>,
    /// `AT+CGSN`.
    pub imei: Option<String>,
    /// The SIM's ICCID.
    pub iccid: Option<String>,
    /// The line that runs it, if one does.
    pub line: Option<String>,
}

/// The modems identified so far, one per AT port, at most [`FOUND_MAX`].
static FOUND: std::sync::Mutex<Vec<FoundModem>> = std::sync::Mutex::new(Vec::new());

/// How many identified modems are remembered.
const FOUND_MAX: usize = 64;

/// Remembers a modem identified on its port (what was known of that port, or of the same
/// IMEI elsewhere, is replaced). One without IMEI and ICCID is not remembered.
pub fn note_found(m: FoundModem) {
    if m.imei.is_none() && m.iccid.is_none() {
        return;
    }
    let mut found = FOUND.lock().unwrap_or_else(|p| p.into_inner());
    found.retain(|f| f.data_port != m.data_port && (m.imei.is_none() || f.imei != m.imei));
    found.push(m);
    if found.len() > FOUND_MAX {
        found.remove(0);
    }
}

/// Remembers the modem of a running line from its status (IMEI, ICCID, ports).
pub fn note_status(s: &crate::pstn::LineStatus) {
    if let Some(data) = &s.data_port {
        note_found(FoundModem {
            data_port: data.clone(),
            audio_port: s.audio_port.clone(),
            imei: s.imei.clone(),
            iccid: s.iccid.clone(),
            line: Some(s.name.clone()),
        });
    }
}

/// The modems identified so far (running lines' and those probed while looking for one),
/// by AT port.
pub fn found() -> Vec<FoundModem> {
    let mut out = FOUND.lock().unwrap_or_else(|p| p.into_inner()).clone();
    out.sort_by(|a, b| a.data_port.cmp(&b.data_port));
    out
}

/// Opens a serial port (or pty) for async use, raw, 115200 8N1.
pub fn open_port(path: &Path) -> std::io::Result<tokio_serial::SerialStream> {
    use tokio_serial::SerialPortBuilderExt;
    let path = path.to_string_lossy();
    tokio_serial::new(path.as_ref(), 115_200)
        .timeout(Duration::from_millis(100))
        .open_native_async()
        .map_err(std::io::Error::other)
}

/// Asks the modem on `data` for its IMEI and ICCID, within `budget`.
pub async fn identify(
    data: &Path,
    profile: &Profile,
    budget: Duration,
) -> std::io::Result<Identity> {
    let mut port = open_port(data)?;
    let run = async {
        let mut engine: AtEngine<u8> = AtEngine::new();
        let now = Instant::now();
        let t = budget / 3;
        engine.enqueue(Command::new("ATE0", 0).timeout(t), now);
        engine.enqueue(
            Command::new(profile.commands.imei.clone(), 1).timeout(t),
            now,
        );
        engine.enqueue(
            Command::new(profile.commands.iccid.clone(), 2)
                .timeout(t)
                .expect(profile.commands.iccid_prefix.clone()),
            now,
        );
        let mut id = Identity::default();
        let mut done = 0;
        let mut buf = [0u8; 512];
        while done < 3 {
            while let Some(bytes) = engine.poll_transmit() {
                port.write_all(&bytes).await?;
            }
            let deadline = engine.poll_timeout().unwrap_or_else(|| Instant::now() + t);
            tokio::select! {
                n = port.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                    }
                    engine.handle_input(&buf[..n], Instant::now());
                }
                _ = tokio::time::sleep_until(deadline.into()) => engine.handle_timeout(Instant::now()),
            }
            while let Some(ev) = engine.poll_event() {
                if let AtEvent::Response(r) = ev {
                    done += 1;
                    match r.tag {
                        1 => {
                            id.imei = r
                                .lines
                                .iter()
                                .map(|l| l.trim_start_matches("+CGSN:").trim().trim_matches('"'))
                                .find(|l| l.len() >= 14 && l.chars().all(|c| c.is_ascii_digit()))
                                .map(str::to_string)
                        }
                        2 => id.iccid = parse_iccid(&r.lines, &profile.commands.iccid_prefix),
                        _ => {}
                    }
                }
            }
        }
        Ok(id)
    };
    match tokio::time::timeout(budget + Duration::from_millis(500), run).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    }
}

/// Resolves a [`PortSpec`] to the ports to open now.
pub async fn resolve(spec: &PortSpec, profile: &Profile) -> Result<PortPair, String> {
    match spec {
        PortSpec::Fixed(p) => {
            if p.data.exists() {
                Ok(p.clone())
            } else {
                Err(format!("{} does not exist", p.data.display()))
            }
        }
        PortSpec::Identity {
            imei,
            iccid,
            candidates,
        } => {
            let list = match candidates {
                Candidates::List(l) => l.clone(),
                Candidates::Usb => usb_candidates(Path::new("/sys/class/tty"), profile),
            };
            for pair in list {
                if !pair.data.exists() {
                    continue;
                }
                let id = identify(&pair.data, profile, Duration::from_secs(3)).await;
                if let Ok(id) = &id {
                    note_found(FoundModem {
                        data_port: pair.data.display().to_string(),
                        audio_port: Some(pair.audio.display().to_string()),
                        imei: id.imei.clone(),
                        iccid: id.iccid.clone(),
                        line: None,
                    });
                }
                match id {
                    Ok(id) if id.matches(imei.as_deref(), iccid.as_deref()) => return Ok(pair),
                    Ok(id) => tracing::debug!(port = %pair.data.display(), ?id, "another modem"),
                    Err(e) => {
                        tracing::debug!(port = %pair.data.display(), error = %e, "not a modem")
                    }
                }
            }
            Err(format!(
                "no modem with imei {} iccid {}",
                imei.as_deref().unwrap_or("-"),
                iccid.as_deref().unwrap_or("-")
            ))
        }
    }
}

/// USB serial port pairs of devices the profile knows, from a sysfs `class/tty` directory:
/// `ttyUSBn/device` is the port, its parent the interface (`bInterfaceNumber`), whose parent
/// is the USB device (`idVendor`, `idProduct`).
pub fn usb_candidates(class_tty: &Path, profile: &Profile) -> Vec<PortPair> {
    use std::collections::BTreeMap;
    let Ok(entries) = std::fs::read_dir(class_tty) else {
        return Vec::new();
    };
    let read = |p: PathBuf| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    // USB device dir → (interface number → /dev path)
    let mut devices: BTreeMap<PathBuf, BTreeMap<u8, PathBuf>> = BTreeMap::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("ttyUSB") && !name.starts_with("ttyACM") {
            continue;
        }
        let Ok(port_dev) = std::fs::canonicalize(e.path().join("device")) else {
            continue;
        };
        // ttyUSB: device → usb-serial port, parent = interface; ttyACM: device = interface.
        let iface = if port_dev.join("bInterfaceNumber").exists() {
            port_dev
        } else if let Some(p) = port_dev.parent() {
            p.to_path_buf()
        } else {
            continue;
        };
        let Some(usb) = iface.parent() else { continue };
        let id = format!(
            "{}:{}",
            read(usb.join("idVendor")),
            read(usb.join("idProduct"))
        );
        if !profile.usb_ids.iter().any(|u| u.eq_ignore_ascii_case(&id)) {
            continue;
        }
        let Ok(num) = u8::from_str_radix(&read(iface.join("bInterfaceNumber")), 16) else {
            continue;
        };
        devices
            .entry(usb.to_path_buf())
            .or_default()
            .insert(num, Path::new("/dev").join(&name));
    }
    devices
        .into_values()
        .filter_map(|ifs| {
            Some(PortPair {
                data: ifs.get(&profile.data_interface)?.clone(),
                audio: ifs.get(&profile.audio_interface)?.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_modems_are_remembered_by_port_and_imei() {
        let m = |port: &str, imei: &str| FoundModem {
            data_port: port.into(),
            imei: Some(imei.into()),
            ..FoundModem::default()
        };
        note_found(m("/test/found/b", "111111111111111"));
        note_found(m("/test/found/a", "222222222222222"));
        // The same modem on another port, and nothing known.
        note_found(m("/test/found/c", "111111111111111"));
        note_found(FoundModem {
            data_port: "/test/found/d".into(),
            ..FoundModem::default()
        });
        let ours: Vec<_> = found()
            .into_iter()
            .filter(|f| f.data_port.starts_with("/test/found/"))
            .map(|f| f.data_port)
            .collect();
        assert_eq!(ours, ["/test/found/a", "/test/found/c"]);
    }

    #[test]
    fn identity_matching() {
        let id = Identity {
            imei: Some("353142034567891".into()),
            iccid: Some("8949226012345678901".into()),
        };
        assert!(id.matches(Some("353142034567891"), None));
        assert!(id.matches(None, Some("8949226012345678901F")));
        assert!(!id.matches(Some("353142034567890"), None));
        assert!(!id.matches(None, None));
    }

    #[test]
    fn sysfs_grouping() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let usb = root.join("devices/usb1/1-2");
        std::fs::create_dir_all(&usb).unwrap();
        std::fs::write(usb.join("idVendor"), "12d1\n").unwrap();
        std::fs::write(usb.join("idProduct"), "1001\n").unwrap();
        let class = root.join("class/tty");
        std::fs::create_dir_all(&class).unwrap();
        for (n, iface) in [(4, 0), (5, 1), (6, 2)] {
            let ifdir = usb.join(format!("1-2:1.{iface}"));
            let port = ifdir.join(format!("ttyUSB{n}"));
            std::fs::create_dir_all(&port).unwrap();
            std::fs::write(ifdir.join("bInterfaceNumber"), format!("0{iface}\n")).unwrap();
            let t = class.join(format!("ttyUSB{n}"));
            std::fs::create_dir_all(&t).unwrap();
            std::os::unix::fs::symlink(&port, t.join("device")).unwrap();
        }
        let p = Profile::builtin("huawei").unwrap();
        assert_eq!(
            usb_candidates(&class, &p),
            vec![PortPair {
                data: "/dev/ttyUSB6".into(),
                audio: "/dev/ttyUSB5".into()
            }]
        );
        let q = Profile::builtin("quectel-ec25").unwrap();
        assert!(usb_candidates(&class, &q).is_empty());
    }
}
