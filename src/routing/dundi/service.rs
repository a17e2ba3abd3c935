//! The thin tokio shell around the DUNDi [`Engine`]: one task owns the UDP socket and the engine,
//! feeds it datagrams and time, sends what it says, and answers the [`DundiHandle`] callers
//! (lookups under a deadline, qualify, EIDQUERY, peer status, the cache).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::eid::Eid;
use super::engine::{
    Answer, CacheEntry, Engine, EngineError, Event, Keys, LookupId, LookupResult, PeerView,
    PrecacheReport, Stats,
};
use super::numbers::LocalNumbers;
use super::settings::{EntityInfo, Settings};
use super::wire::MAX_PACKET;

/// Failures starting the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("DUNDi: cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("DUNDi settings: {0}")]
    Settings(#[from] super::settings::SettingsError),
    #[error("DUNDi service is not running")]
    Stopped,
}

enum Cmd {
    Lookup {
        number: String,
        context: String,
        deadline: Instant,
        cache_bypass: bool,
        reply: oneshot::Sender<LookupResult>,
    },
    Qualify {
        peer: Eid,
        reply: oneshot::Sender<Option<Duration>>,
    },
    QueryEid {
        peer: Eid,
        eid: Eid,
        deadline: Instant,
        reply: oneshot::Sender<Option<EntityInfo>>,
    },
    Precache {
        /// `None`: every number we know (`precache_all`).
        numbers: Option<(String, Vec<String>)>,
        reply: oneshot::Sender<PrecacheReport>,
    },
    Peers(oneshot::Sender<Vec<PeerView>>),
    Stats(oneshot::Sender<Stats>),
    Cache(oneshot::Sender<Vec<CacheEntry>>),
    Flush(oneshot::Sender<()>),
    Reload {
        settings: Box<Settings>,
        keys: Keys,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    Stop,
}

/// Handle to a DUNDi service; cheap to clone. Every clone sees the same service: a
/// [`DundiHandle::restart`] (new listen address or EID) or [`DundiHandle::stop`] applies to all.
#[derive(Clone)]
pub struct DundiHandle {
    inner: Arc<std::sync::RwLock<HandleInner>>,
}

struct HandleInner {
    /// `None`: stopped (or never started).
    tx: Option<mpsc::Sender<Cmd>>,
    local_addr: SocketAddr,
    eid: Eid,
}

/// Starts DUNDi services.
pub struct DundiService;

impl DundiService {
    /// Binds `settings.bind`, loads the keys and runs the engine in a task.
    pub async fn start(
        settings: Settings,
        local: Arc<dyn LocalNumbers>,
    ) -> Result<DundiHandle, ServiceError> {
        let socket = UdpSocket::bind(settings.bind)
            .await
            .map_err(|source| ServiceError::Bind {
                addr: settings.bind,
                source,
            })?;
        Self::run(socket, settings, local)
    }

    /// Like [`DundiService::start`] on a socket bound already (tests, socket activation).
    pub fn start_on(
        socket: std::net::UdpSocket,
        settings: Settings,
        local: Arc<dyn LocalNumbers>,
    ) -> Result<DundiHandle, ServiceError> {
        let addr = socket.local_addr().unwrap_or(settings.bind);
        let bind_err = |source| ServiceError::Bind { addr, source };
        socket.set_nonblocking(true).map_err(bind_err)?;
        let socket = UdpSocket::from_std(socket).map_err(bind_err)?;
        Self::run(socket, settings, local)
    }

    fn run(
        socket: UdpSocket,
        mut settings: Settings,
        local: Arc<dyn LocalNumbers>,
    ) -> Result<DundiHandle, ServiceError> {
        let local_addr = socket.local_addr().map_err(|source| ServiceError::Bind {
            addr: settings.bind,
            source,
        })?;
        if settings.ipaddr.is_empty() && !local_addr.ip().is_unspecified() {
            settings.ipaddr = local_addr.ip().to_string();
        }
        settings.validate()?;
        let keys = Keys::load(&settings)?;
        let engine = Engine::new(&settings, keys, local, Instant::now())?;
        let eid = engine.eid();
        let (tx, rx) = mpsc::channel(64);
        // The engine's state (peers, cache, transactions) would be lost by a restart: a panic
        // outside the per-datagram guard marks the process unhealthy instead.
        crate::supervise::Supervisor::global().watch(
            component_name(Some(local_addr)),
            tokio::spawn(run_loop(socket, engine, rx)),
        );
        tracing::info!(%local_addr, %eid, "DUNDi listening");
        Ok(DundiHandle {
            inner: Arc::new(std::sync::RwLock::new(HandleInner {
                tx: Some(tx),
                local_addr,
                eid,
            })),
        })
    }
}

impl DundiHandle {
    /// A handle on no service (DUNDi turned off): lookups answer nothing until
    /// [`DundiHandle::restart`] starts one. `bind` and `eid` are what it reports meanwhile.
    pub fn stopped(eid: Eid, bind: SocketAddr) -> DundiHandle {
        DundiHandle {
            inner: Arc::new(std::sync::RwLock::new(HandleInner {
                tx: None,
                local_addr: bind,
                eid,
            })),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HandleInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn sender(&self) -> Option<mpsc::Sender<Cmd>> {
        self.read().tx.clone()
    }

    /// The address the socket is bound to (when stopped: the last one, or the configured one).
    pub fn local_addr(&self) -> SocketAddr {
        self.read().local_addr
    }

    /// Our EID.
    pub fn eid(&self) -> Eid {
        self.read().eid
    }

    /// Whether the service runs (it was started and not stopped).
    pub fn is_running(&self) -> bool {
        self.sender().is_some_and(|tx| !tx.is_closed())
    }

    /// Stops the service if it runs and starts a new one with `settings` (a new listen address
    /// or EID; the cache and peer states start afresh); every clone of this handle then speaks
    /// to the new one. On failure (e.g. the address is taken) the service stays stopped.
    pub async fn restart(
        &self,
        settings: Settings,
        local: Arc<dyn LocalNumbers>,
    ) -> Result<(), ServiceError> {
        self.stop().await;
        let fresh = DundiService::start(settings, local).await?;
        let new = {
            let mut g = fresh.inner.write().unwrap_or_else(|e| e.into_inner());
            HandleInner {
                tx: g.tx.take(),
                local_addr: g.local_addr,
                eid: g.eid,
            }
        };
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    /// Looks `number` up in DUNDi `context` (empty: `e164`) within `deadline`; the answers,
    /// best (lowest weight) first. Empty when nobody answered in time.
    pub async fn lookup(&self, number: &str, context: &str, deadline: Duration) -> Vec<Answer> {
        self.lookup_full(number, context, deadline, false)
            .await
            .map(|r| r.answers)
            .unwrap_or_default()
    }

    /// The whole lookup result (answers, hints, causes); `None` if the service stopped.
    pub async fn lookup_full(
        &self,
        number: &str,
        context: &str,
        deadline: Duration,
        cache_bypass: bool,
    ) -> Option<LookupResult> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Cmd::Lookup {
                number: number.to_string(),
                context: context.to_string(),
                deadline: Instant::now() + deadline,
                cache_bypass,
                reply,
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Pings `peer` (NULL); its round-trip time, or `None` when it did not answer (about 5 s)
    /// or is not a peer.
    pub async fn qualify(&self, peer: Eid) -> Option<Duration> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Cmd::Qualify { peer, reply })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Asks `peer` for the contact record of `eid` (EIDQUERY).
    pub async fn query_eid(&self, peer: Eid, eid: Eid, deadline: Duration) -> Option<EntityInfo> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Cmd::QueryEid {
                peer,
                eid,
                deadline: Instant::now() + deadline,
                reply,
            })
            .await
            .ok()?;
        rx.await.ok().flatten()
    }

    /// Pushes our answers for `numbers` in DUNDi `context` (empty: `e164`) to the peers we
    /// precache to (PRECACHERQ, Asterisk `dundi precache`); how many peers acknowledged. Waits
    /// until every peer answered or was given up (about 5 s for a silent one).
    pub async fn precache<S: AsRef<str>>(&self, numbers: &[S], context: &str) -> usize {
        let numbers = numbers.iter().map(|n| n.as_ref().to_string()).collect();
        self.precache_report(Some((context.to_string(), numbers)))
            .await
            .map_or(0, |r| r.peers_acknowledged())
    }

    /// Pushes every number we know to be ours (the DIDs, patterns without wildcards) in every
    /// mapping's context to the peers we precache to; how many peers acknowledged.
    pub async fn precache_all(&self) -> usize {
        self.precache_report(None)
            .await
            .map_or(0, |r| r.peers_acknowledged())
    }

    /// The whole outcome of a precache push (`None`: every known number); `None` if the
    /// service stopped.
    pub async fn precache_report(
        &self,
        numbers: Option<(String, Vec<String>)>,
    ) -> Option<PrecacheReport> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(Cmd::Precache { numbers, reply })
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Peers with their reachability.
    pub async fn peers(&self) -> Vec<PeerView> {
        let (reply, rx) = oneshot::channel();
        let Some(tx) = self.sender() else {
            return Default::default();
        };
        if tx.send(Cmd::Peers(reply)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Counters since start (for metrics).
    pub async fn stats(&self) -> Stats {
        let (reply, rx) = oneshot::channel();
        let Some(tx) = self.sender() else {
            return Default::default();
        };
        if tx.send(Cmd::Stats(reply)).await.is_err() {
            return Stats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// The answer cache.
    pub async fn cache(&self) -> Vec<CacheEntry> {
        let (reply, rx) = oneshot::channel();
        let Some(tx) = self.sender() else {
            return Default::default();
        };
        if tx.send(Cmd::Cache(reply)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Empties the answer cache.
    pub async fn flush_cache(&self) {
        let (reply, rx) = oneshot::channel();
        let Some(tx) = self.sender() else { return };
        if tx.send(Cmd::Flush(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Applies new settings (peers, mappings, contact record, timers) without a restart; the
    /// key files are read here. The bind address and our EID stay as they are.
    pub async fn reload(&self, mut settings: Settings) -> Result<(), ServiceError> {
        settings.validate()?;
        let local_addr = self.local_addr();
        if settings.ipaddr.is_empty() && !local_addr.ip().is_unspecified() {
            settings.ipaddr = local_addr.ip().to_string();
        }
        let keys = Keys::load(&settings)?;
        let (reply, rx) = oneshot::channel();
        self.sender()
            .ok_or(ServiceError::Stopped)?
            .send(Cmd::Reload {
                settings: Box::new(settings),
                keys,
                reply,
            })
            .await
            .map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)??;
        Ok(())
    }

    /// Stops the service (in-flight requests get empty answers); returns once its socket is
    /// closed (or after 2 s). Every clone of the handle sees it stopped.
    pub async fn stop(&self) {
        let tx = self
            .inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .tx
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(Cmd::Stop).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), tx.closed()).await;
        }
    }
}

#[derive(Default)]
struct Waiters {
    lookups: HashMap<LookupId, (Instant, oneshot::Sender<LookupResult>)>,
    entities: HashMap<LookupId, (Instant, oneshot::Sender<Option<EntityInfo>>)>,
    qualifies: HashMap<Eid, Vec<oneshot::Sender<Option<Duration>>>>,
    precaches: HashMap<LookupId, oneshot::Sender<PrecacheReport>>,
}

/// The name under which the service on `local` is supervised.
fn component_name(local: Option<SocketAddr>) -> String {
    match local {
        Some(a) => format!("DUNDi {a}"),
        None => "DUNDi".to_owned(),
    }
}

async fn run_loop(socket: UdpSocket, mut engine: Engine, mut rx: mpsc::Receiver<Cmd>) {
    let mut buf = vec![0u8; MAX_PACKET + 1];
    let mut w = Waiters::default();
    let component = component_name(socket.local_addr().ok());
    loop {
        flush(&socket, &mut engine, &mut w).await;
        let caller_deadline = w
            .lookups
            .values()
            .map(|(d, _)| *d)
            .chain(w.entities.values().map(|(d, _)| *d))
            .min();
        let wake = [engine.poll_timeout(), caller_deadline]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    if let Some(datagram) = buf.get(..n).filter(|_| n <= MAX_PACKET) {
                        // A bug in handling one datagram drops that datagram, not the service.
                        let sup = crate::supervise::Supervisor::global();
                        sup.guard(&component, || {
                            engine.handle_datagram(Instant::now(), from, datagram)
                        });
                    }
                }
                Err(e) => tracing::debug!("DUNDi: receive error: {e}"),
            },
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                let now = Instant::now();
                match cmd {
                    Cmd::Lookup { number, context, deadline, cache_bypass, reply } => {
                        let id = engine.lookup(now, &number, &context, None, cache_bypass);
                        w.lookups.insert(id, (deadline, reply));
                    }
                    Cmd::Qualify { peer, reply } => {
                        if engine.qualify(now, peer) {
                            w.qualifies.entry(peer).or_default().push(reply);
                        } else {
                            let _ = reply.send(None);
                        }
                    }
                    Cmd::QueryEid { peer, eid, deadline, reply } => {
                        let id = engine.query_eid(now, peer, eid, "e164");
                        w.entities.insert(id, (deadline, reply));
                    }
                    Cmd::Precache { numbers, reply } => {
                        let id = match numbers {
                            Some((context, numbers)) => engine.precache(now, &context, &numbers),
                            None => engine.precache_all(now),
                        };
                        w.precaches.insert(id, reply);
                    }
                    Cmd::Peers(reply) => { let _ = reply.send(engine.peers()); }
                    Cmd::Stats(reply) => { let _ = reply.send(engine.stats()); }
                    Cmd::Cache(reply) => { let _ = reply.send(engine.cache()); }
                    Cmd::Flush(reply) => { engine.flush_cache(); let _ = reply.send(()); }
                    Cmd::Reload { settings, keys, reply } => {
                        let _ = reply.send(engine.reload(&settings, keys, now));
                    }
                    Cmd::Stop => return,
                }
            },
            _ = sleep => {
                let now = Instant::now();
                engine.handle_timeout(now);
                let late: Vec<LookupId> = w.lookups.iter()
                    .filter(|(_, (d, _))| *d <= now).map(|(id, _)| *id)
                    .chain(w.entities.iter().filter(|(_, (d, _))| *d <= now).map(|(id, _)| *id))
                    .collect();
                for id in late {
                    engine.finish_now(id, now);
                }
            }
        }
    }
}

async fn flush(socket: &UdpSocket, engine: &mut Engine, w: &mut Waiters) {
    while let Some((to, bytes)) = engine.poll_transmit() {
        if let Err(e) = socket.send_to(&bytes, to).await {
            tracing::debug!(%to, "DUNDi: send failed: {e}");
        }
    }
    while let Some(ev) = engine.poll_event() {
        match ev {
            Event::LookupDone { id, result } => {
                if let Some((_, reply)) = w.lookups.remove(&id) {
                    let _ = reply.send(result);
                }
            }
            Event::EntityInfo { id, info, .. } => {
                if let Some((_, reply)) = w.entities.remove(&id) {
                    let _ = reply.send(info);
                }
            }
            Event::Qualified { peer, latency } => {
                for reply in w.qualifies.remove(&peer).unwrap_or_default() {
                    let _ = reply.send(latency);
                }
            }
            Event::PrecacheDone { id, report } => match w.precaches.remove(&id) {
                Some(reply) => {
                    let _ = reply.send(report);
                }
                None if report.sent > 0 => tracing::debug!(
                    pushed = report.pushed.len(),
                    acknowledged = report.acknowledged.len(),
                    refused = report.refused.len(),
                    timed_out = report.timed_out,
                    "DUNDi: precache pushed"
                ),
                None => {}
            },
            Event::Answered {
                peer,
                number,
                context,
                answers,
            } => {
                tracing::debug!(%peer, %number, %context, answers, "DUNDi: answered a peer");
            }
        }
    }
}
