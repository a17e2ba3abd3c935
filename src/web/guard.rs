//! Keeps floods from taking the dashboard down: the listener caps open connections (in all and
//! per source address; beyond the per-source cap a new connection is closed at once, at the
//! total cap the oldest connection that never sent a whole request is closed to make room, so
//! that idle connections cannot lock the admin out), and every connection must
//! send a request's headers within a short time (slowloris) and is closed when it stays idle
//! between requests. The timing lives in the stream wrapper, which tells requests apart by the
//! blank line that ends their headers and by the response written in between.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// The caps (`[limits] web_connections`, `web_connections_per_source`,
/// `web_header_timeout_secs`).
#[derive(Debug, Clone, Copy)]
pub struct WebCaps {
    pub connections: usize,
    pub per_source: usize,
    /// From the connection (or the first byte of a later request) to the end of the headers.
    pub header_timeout: Duration,
    /// Between the end of a response and the next request.
    pub idle_timeout: Duration,
}

impl Default for WebCaps {
    fn default() -> Self {
        WebCaps {
            connections: 256,
            per_source: 32,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per: HashMap<IpAddr, usize>,
    /// Connections that have not sent a whole request yet, oldest first.
    fresh: std::collections::VecDeque<Arc<Evict>>,
}

/// How the listener closes a connection to make room for a new one.
#[derive(Debug, Default)]
struct Evict {
    /// Set by the listener: the connection must close.
    now: std::sync::atomic::AtomicBool,
    /// Cleared once the connection has sent a whole request (it is no longer a candidate).
    fresh: std::sync::atomic::AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
}

/// A connection's place under the caps, given back when the connection is dropped.
#[derive(Debug)]
struct Place {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Ok(mut o) = self.open.lock() {
            o.total = o.total.saturating_sub(1);
            if let Some(n) = o.per.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    o.per.remove(&self.ip);
                }
            }
            if o.per.capacity() > 4 * o.per.len() + 256 {
                o.per.shrink_to_fit();
            }
        }
    }
}

/// A TCP listener that enforces [`WebCaps`].
pub struct GuardedListener {
    inner: TcpListener,
    caps: WebCaps,
    open: Arc<Mutex<Open>>,
    last_warning: Option<Instant>,
}

impl GuardedListener {
    pub fn new(inner: TcpListener, caps: WebCaps) -> GuardedListener {
        GuardedListener {
            inner,
            caps,
            open: Arc::default(),
            last_warning: None,
        }
    }

    fn admit(&self, ip: IpAddr) -> Option<(Place, Arc<Evict>)> {
        use std::sync::atomic::Ordering;
        let mut o = self.open.lock().ok()?;
        let mine = o.per.get(&ip).copied().unwrap_or(0);
        if mine >= self.caps.per_source {
            return None;
        }
        if o.total >= self.caps.connections {
            let victim = loop {
                let e = o.fresh.pop_front()?;
                if e.fresh.load(Ordering::Acquire) && !e.now.load(Ordering::Acquire) {
                    break e;
                }
            };
            victim.now.store(true, Ordering::Release);
            if let Some(w) = victim.waker.lock().ok().and_then(|mut w| w.take()) {
                w.wake();
            }
        }
        o.total += 1;
        o.per.insert(ip, mine + 1);
        let evict = Arc::new(Evict::default());
        evict.fresh.store(true, Ordering::Release);
        if o.fresh.len() > 2 * self.caps.connections + 64 {
            o.fresh.retain(|e| e.fresh.load(Ordering::Acquire));
        }
        o.fresh.push_back(Arc::clone(&evict));
        Some((
            Place {
                open: Arc::clone(&self.open),
                ip,
            },
            evict,
        ))
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, remote)) => match self.admit(remote.ip()) {
                    Some((place, evict)) => {
                        return (GuardedStream::new(stream, place, evict, self.caps), remote);
                    }
                    None => {
                        drop(stream);
                        let now = Instant::now();
                        if self
                            .last_warning
                            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                        {
                            self.last_warning = Some(now);
                            tracing::warn!(%remote, "dashboard connection cap reached: connection refused");
                        }
                    }
                },
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!("dashboard accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// Where a connection is in its request/response cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request's headers; `matched` bytes of "\r\n\r\n" seen at the end so far.
    Headers { matched: u8 },
    /// Headers read: the body and the response follow, with no deadline.
    Request,
    /// A response has been written; waiting for the next request.
    Idle,
}

/// A dashboard connection with the header and idle deadlines of [`WebCaps`].
pub struct GuardedStream {
    inner: TcpStream,
    _place: Place,
    evict: Arc<Evict>,
    caps: WebCaps,
    phase: Phase,
    /// Armed in [`Phase::Headers`] and [`Phase::Idle`].
    deadline: Pin<Box<Sleep>>,
}

impl GuardedStream {
    fn new(inner: TcpStream, place: Place, evict: Arc<Evict>, caps: WebCaps) -> GuardedStream {
        GuardedStream {
            inner,
            _place: place,
            evict,
            caps,
            phase: Phase::Headers { matched: 0 },
            deadline: Box::pin(tokio::time::sleep(caps.header_timeout)),
        }
    }

    /// Follows the bytes just read through the phases.
    fn saw(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Headers { matched: 0 };
            self.deadline
                .as_mut()
                .reset(Instant::now() + self.caps.header_timeout);
        }
        let Phase::Headers { mut matched } = self.phase else {
            return;
        };
        const END: &[u8; 4] = b"\r\n\r\n";
        for &b in data {
            matched = match (matched, b) {
                (m, b) if END.get(usize::from(m)) == Some(&b) => m + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            if matched == 4 {
                self.phase = Phase::Request;
                self.evict
                    .fresh
                    .store(false, std::sync::atomic::Ordering::Release);
                return;
            }
        }
        self.phase = Phase::Headers { matched };
    }

    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        self.phase != Phase::Request && self.deadline.as_mut().poll(cx).is_ready()
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.evict.now.load(std::sync::atomic::Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "closed to make room for a new connection",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                let new = filled.get(before..).unwrap_or_default().to_vec();
                this.saw(&new);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Ok(mut w) = this.evict.waker.lock() {
                    *w = Some(cx.waker().clone());
                }
                if this.evict.now.load(std::sync::atomic::Ordering::Acquire) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "closed to make room for a new connection",
                    )));
                }
                if this.timed_out(cx) {
                    let what = if this.phase == Phase::Idle {
                        "idle connection"
                    } else {
                        "request headers not sent in time"
                    };
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            // A response (or part of one): the next request starts the header clock again,
            // and until then the connection may idle for the idle timeout.
            this.phase = Phase::Idle;
            this.deadline
                .as_mut()
                .reset(Instant::now() + this.caps.idle_timeout);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair(caps: WebCaps) -> (GuardedListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (GuardedListener::new(l, caps), addr)
    }

    #[tokio::test]
    async fn caps_per_source_and_header_timeout() {
        use axum::serve::Listener;
        let caps = WebCaps {
            connections: 10,
            per_source: 2,
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(300),
        };
        let (mut l, addr) = pair(caps).await;
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let mut c3 = TcpStream::connect(addr).await.unwrap();
        let (mut s1, _) = l.accept().await;
        let (_s2, _) = l.accept().await;
        // The third from the same address is closed at once: it reads EOF (or a reset).
        let accept3 = tokio::time::timeout(Duration::from_millis(300), l.accept()).await;
        assert!(
            accept3.is_err(),
            "a third connection from one address was accepted"
        );
        let mut b = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(2), c3.read(&mut b))
            .await
            .expect("the refused connection was not closed");
        assert!(matches!(n, Ok(0) | Err(_)));
        // A connection that sends half a request's headers is cut after the header timeout.
        let mut c1 = _c1;
        c1.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let err = s1.read(&mut buf).await;
        assert!(err.is_ok(), "the bytes sent are read");
        let err = s1.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn phases_follow_requests() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (l, addr) = pair(WebCaps::default()).await;
            let _c = TcpStream::connect(addr).await.unwrap();
            let (s, _) = l.inner.accept().await.unwrap();
            let (place, evict) = l.admit(addr.ip()).unwrap();
            let mut g = GuardedStream::new(s, place, evict, WebCaps::default());
            g.saw(b"GET / HTTP/1.1\r\nHost: a\r");
            assert_eq!(g.phase, Phase::Headers { matched: 1 });
            g.saw(b"\n\r");
            assert_eq!(g.phase, Phase::Headers { matched: 3 });
            g.saw(b"\nbody");
            assert_eq!(g.phase, Phase::Request);
            g.phase = Phase::Idle;
            g.saw(b"P");
            assert_eq!(g.phase, Phase::Headers { matched: 0 });
        });
    }
}
