//! The media I/O threads: a small fixed set of std threads, each running one `mio::Poll` over
//! the sockets of the relays assigned to it.
//!
//! A relay is handed to a thread (round-robin) when it is allocated, as a boxed
//! [`RelayState`] through that thread's control channel; a [`mio::Waker`] makes the thread look
//! at the channel. The thread registers the relay's four sockets under tokens
//! `slot * 4 + socket`, and per readable event drains the socket (mio is edge-triggered) with
//! one `recvmmsg` ([`super::mmsg`]) into reused buffers, handing each datagram to the relay's per-packet logic. Timers — dead-media
//! detection and the pacing of injected DTMF — live in one binary heap per thread and bound the
//! poll timeout. Removing a relay deregisters and closes its sockets, which returns its ports to
//! the pool.
//!
//! A thread ends when its control channel is disconnected: the engine and every relay handle
//! holding a sender are gone, so no relay can be left on it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};

use super::mmsg::RecvBatch;
use super::relay::{Control, RelayState, Timer, BUF_LEN};
use super::MediaError;

/// Token of the thread's waker; relay tokens are `slot * 4 + socket`, far below it.
const WAKER: Token = Token(usize::MAX);
/// Readiness events handled per poll.
const EVENTS: usize = 1024;
/// Longest sleep without looking at the control channel (it cannot signal disconnection).
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The sending side of one I/O thread: what the engine and every relay handle hold.
#[derive(Clone)]
pub(crate) struct IoHandle {
    tx: Sender<Control>,
    waker: Arc<Waker>,
}

impl IoHandle {
    /// Queues `c` for the thread and wakes it. `false` when the thread is gone.
    pub(crate) fn send(&self, c: Control) -> bool {
        if self.tx.send(c).is_err() {
            return false;
        }
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "media I/O thread wake-up failed");
        }
        true
    }
}

/// The engine's I/O threads.
pub(crate) struct IoPool {
    threads: Vec<IoHandle>,
    next: AtomicUsize,
}

impl IoPool {
    /// Starts `n` (at least one) I/O threads.
    pub(crate) fn start(n: usize) -> Result<Self, MediaError> {
        let mut threads = Vec::with_capacity(n.max(1));
        for k in 0..n.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name(format!("media-io-{k}"))
                .spawn(move || IoThread::new(poll, rx).run())?;
            threads.push(IoHandle { tx, waker });
        }
        Ok(IoPool {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// The thread the next relay goes to (round-robin).
    pub(crate) fn pick(&self) -> &IoHandle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        &self.threads[i]
    }

    pub(crate) fn len(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for IoPool {
    fn drop(&mut self) {
        // Wake the threads after our senders are gone, so that each one that has no relay left
        // sees the disconnection now rather than after `MAX_SLEEP`.
        let wakers: Vec<Arc<Waker>> = self.threads.drain(..).map(|h| h.waker).collect();
        for w in wakers {
            let _ = w.wake();
        }
    }
}

struct Slot {
    id: u64,
    state: Box<RelayState>,
}

struct IoThread {
    poll: Poll,
    rx: Receiver<Control>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64, Timer)>>,
    /// Sockets whose drain stopped at a full batch: drained again before sleeping.
    pending: Vec<Token>,
    /// Receive buffers, shared by every relay of the thread.
    batch: RecvBatch,
    /// Buffer for the packets the thread builds (injected DTMF).
    buf: Box<[u8; BUF_LEN]>,
}

impl IoThread {
    fn new(poll: Poll, rx: Receiver<Control>) -> Self {
        IoThread {
            poll,
            rx,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            timers: BinaryHeap::new(),
            pending: Vec::with_capacity(EVENTS),
            batch: RecvBatch::new(),
            buf: Box::new([0u8; BUF_LEN]),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        let mut again: Vec<Token> = Vec::with_capacity(EVENTS);
        loop {
            if crate::memory::give_back_if_asked() {
                self.shrink();
            }
            let timeout = if self.pending.is_empty() {
                let now = Instant::now();
                match self.timers.peek() {
                    Some(Reverse((at, ..))) => at.saturating_duration_since(now).min(MAX_SLEEP),
                    None => MAX_SLEEP,
                }
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(error = %e, "media poll failed; I/O thread stops");
                    return;
                }
            }
            std::mem::swap(&mut again, &mut self.pending);
            for t in again.drain(..) {
                self.drain(t);
            }
            let mut ctrl = false;
            for ev in events.iter() {
                if ev.token() == WAKER {
                    ctrl = true;
                } else {
                    self.drain(ev.token());
                }
            }
            if (ctrl || events.is_empty()) && !self.control() {
                return;
            }
            self.timers();
        }
    }

    /// Drains one socket; remembers it when the batch ran out before the socket did.
    fn drain(&mut self, token: Token) {
        let (slot, sock) = (token.0 / 4, token.0 % 4);
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        if s.state.recv_batch(sock, &mut self.batch) {
            self.pending.push(token);
        }
    }

    /// Handles every queued control message. `false` when the channel is disconnected.
    fn control(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(Control::Add(id, state)) => self.add(id, state),
                Ok(Control::Remove(id)) => self.remove(id),
                Ok(c) => {
                    let id = c.id();
                    let Some(&slot) = self.by_id.get(&id) else {
                        continue;
                    };
                    if let Some(Some(s)) = self.slots.get_mut(slot) {
                        if let Some(at) = s.state.control(c, &mut self.buf) {
                            self.timers.push(Reverse((at, slot, id, Timer::Inject)));
                        }
                    }
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn add(&mut self, id: u64, mut state: Box<RelayState>) {
        let slot = self.free.pop().unwrap_or(self.slots.len());
        let registry = self.poll.registry();
        let mut registered = 0;
        let mut result = Ok(());
        for (k, sock) in state.sockets_mut().into_iter().enumerate() {
            result = registry.register(sock, Token(slot * 4 + k), Interest::READABLE);
            if result.is_err() {
                break;
            }
            registered += 1;
        }
        if let Err(e) = result {
            tracing::warn!(error = %e, "media sockets not registered; relay closed");
            for sock in state.sockets_mut().into_iter().take(registered) {
                let _ = registry.deregister(sock);
            }
            if slot < self.slots.len() {
                self.free.push(slot);
            }
            return;
        }
        self.timers
            .push(Reverse((state.dead_at(), slot, id, Timer::Dead)));
        if slot == self.slots.len() {
            self.slots.push(Some(Slot { id, state }));
        } else if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(Slot { id, state });
        }
        self.by_id.insert(id, slot);
    }

    /// Gives back what a burst of relays left (asked by [`crate::memory::give_back`]): once
    /// the thread holds no relay, its slots and the timers of relays gone are dropped.
    fn shrink(&mut self) {
        if !self.by_id.is_empty() {
            return;
        }
        self.slots = Vec::new();
        self.free = Vec::new();
        self.timers = BinaryHeap::new();
        self.by_id = HashMap::new();
    }

    fn remove(&mut self, id: u64) {
        let Some(slot) = self.by_id.remove(&id) else {
            return;
        };
        let Some(mut s) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let registry = self.poll.registry();
        for sock in s.state.sockets_mut() {
            let _ = registry.deregister(sock);
        }
        self.pending.retain(|t| t.0 / 4 != slot);
        self.free.push(slot);
        // Dropping the state closes the sockets, then returns the ports to the pool.
        drop(s);
    }

    fn timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, slot, id, kind))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(Some(s)) = self.slots.get_mut(slot) else {
                continue;
            };
            if s.id != id {
                continue;
            }
            if let Some(next) = s.state.timer(kind, at, &mut self.buf) {
                self.timers.push(Reverse((next, slot, id, kind)));
            }
        }
    }
}
