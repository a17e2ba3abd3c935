//! The control socket of a running `serve`: a Unix stream socket beside the database
//! (`<store path>.ctl`, mode 0660, so root and the service's group only) where the command line
//! asks the running gateway about its state — `pasarela dundi peers|cache|lookup` — instead of
//! starting a second node, and lists or lifts the bans of sources that failed authentication
//! (`pasarela bans list|lift ADDR`). One request line per connection, a text answer, then close.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::routing::dundi::{report, OfficeDundi};
use crate::security::guard::SharedGuard;

/// How long a client may take to send its request.
const READ_WITHIN: Duration = Duration::from_secs(5);
/// The longest request line.
const MAX_LINE: usize = 512;

/// The control socket's path for a store at `db`.
pub fn socket_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".ctl");
    PathBuf::from(p)
}

/// A listening control socket; removed when dropped.
pub struct Control {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `path` (a stale socket left by a crash is replaced; a live one is an error).
pub async fn start(
    path: &Path,
    dundi: Option<OfficeDundi>,
    guard: Option<SharedGuard>,
) -> std::io::Result<Control> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use: is another pasarela running?", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    }
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let dundi = dundi.clone();
            let guard = guard.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_one(stream, dundi, guard).await {
                    tracing::debug!("control socket: {e}");
                }
            });
        }
    });
    Ok(Control {
        path: path.to_path_buf(),
        task,
    })
}

async fn serve_one(
    stream: UnixStream,
    dundi: Option<OfficeDundi>,
    guard: Option<SharedGuard>,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(rd.take(MAX_LINE as u64));
    tokio::time::timeout(READ_WITHIN, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let answer = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["bans", rest @ ..] => bans(rest, guard.as_ref()),
        _ => answer(line.trim(), dundi.as_ref()).await,
    };
    wr.write_all(answer.as_bytes()).await?;
    wr.shutdown().await
}

/// The answer to one request line.
async fn answer(request: &str, dundi: Option<&OfficeDundi>) -> String {
    let words: Vec<&str> = request.split_whitespace().collect();
    match words.as_slice() {
        ["dundi", rest @ ..] => {
            let Some(d) = dundi.filter(|d| d.handle.is_running()) else {
                return "error: DUNDi is not enabled ([dundi] enabled = true, or on the DUNDi page)\n"
                    .into();
            };
            match rest {
                ["peers"] => {
                    report::peers(&d.handle.peers().await)
                        + &report::refusals(&d.handle.stats().await)
                }
                ["cache"] => report::cache(&d.handle.cache().await, tokio_now()),
                ["cache", "flush"] => {
                    let n = d.handle.cache().await.len();
                    d.handle.flush_cache().await;
                    format!(
                        "flushed {n} cache entr{}\n",
                        if n == 1 { "y" } else { "ies" }
                    )
                }
                ["lookup", target, flags @ ..] => {
                    let (number, context) = target.split_once('@').unwrap_or((target, "e164"));
                    let bypass = flags.contains(&"bypass");
                    let started = Instant::now();
                    match d
                        .handle
                        .lookup_full(number, context, Duration::from_secs(5), bypass)
                        .await
                    {
                        Some(r) => report::lookup(&r, started.elapsed().as_millis()),
                        None => "error: the DUNDi service stopped\n".into(),
                    }
                }
                _ => "error: unknown DUNDi request\n".into(),
            }
        }
        _ => "error: unknown request\n".into(),
    }
}

/// `bans list` and `bans lift ADDR`.
fn bans(words: &[&str], guard: Option<&SharedGuard>) -> String {
    let Some(guard) = guard else {
        return "error: no SIP service in this process\n".into();
    };
    let now = crate::server::unix_now();
    match words {
        ["list"] => crate::security::report::bans_text(&guard.lock(), now),
        ["lift", addr] => match addr.parse::<std::net::IpAddr>() {
            Ok(ip) if guard.lock().lift(ip, now) => format!("lifted the ban of {ip}\n"),
            Ok(ip) => format!("{ip} is not banned\n"),
            Err(_) => format!("error: `{addr}` is not an IP address\n"),
        },
        ["unlock", account] => {
            if guard.lock().unlock(account, now) {
                format!("unlocked extension {account}\n")
            } else {
                format!("extension {account} is not locked\n")
            }
        }
        _ => "error: unknown bans request (list, lift ADDR, unlock EXT)\n".into(),
    }
}

fn tokio_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Sends `request` to the control socket at `path` and returns the answer; `None` when no
/// gateway listens there.
/// Whether a running `serve` holds the control socket at `path`.
pub fn is_running(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

pub fn ask(path: &Path, request: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(format!("{request}\n").as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}
