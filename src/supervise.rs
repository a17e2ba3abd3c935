//! Supervision of the tasks that take input from outside (SIP over UDP and TCP, DUNDi, the
//! modem lines): nothing they are sent may end them silently.
//!
//! Two layers:
//! - [`Supervisor::guard`] runs the handling of one datagram or frame and catches a panic in
//!   it: the panic is logged at error level with the component's name and counted, and the loop
//!   goes on with the next datagram.
//! - [`Supervisor::spawn`] runs a loop as a tokio task and starts it again when it panics
//!   anyway ([`Supervisor::spawn_forever`]: also when it ends, for the socket receive loops). A loop that keeps dying — more than [`MAX_RESTARTS`] restarts within
//!   [`RESTART_WINDOW`] — is given up: the component is marked failed, `/healthz` answers 503
//!   naming it, and the SIP loop stops feeding the systemd watchdog, so that systemd restarts
//!   the whole unit. [`Supervisor::watch`] does the same for a task that cannot be restarted
//!   (it owns state that a restart would lose): its panic marks it failed at once.
//!
//! The restart budget ([`RestartBudget`]) is a plain state machine that takes the time as an
//! input. The process has one [`Supervisor::global`]; tests make their own.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How many restarts within [`RESTART_WINDOW`] a loop gets before it is given up.
pub const MAX_RESTARTS: usize = 5;
/// The window in which restarts are counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// The pause before a loop that panicked is started again.
const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// Counts the restarts of one loop within a sliding window.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    /// At most `max` restarts within any `window`.
    pub fn new(max: usize, window: Duration) -> RestartBudget {
        RestartBudget {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Records a restart wanted at `now`; whether it is allowed (`false`: the loop keeps dying
    /// and is given up).
    pub fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= self.max
    }
}

impl Default for RestartBudget {
    fn default() -> RestartBudget {
        RestartBudget::new(MAX_RESTARTS, RESTART_WINDOW)
    }
}

/// What is known of one component.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentState {
    /// Panics caught while handling one datagram or frame.
    pub caught: u64,
    /// Times the loop was started again after a panic.
    pub restarts: u64,
    /// Why the component was given up, once it was.
    pub failed: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    components: Mutex<BTreeMap<String, ComponentState>>,
    /// Set once any component has failed (read on every turn of the SIP loop).
    failed: AtomicBool,
    /// The budgets of components made of many tasks ([`Supervisor::spawn_task`]).
    task_budgets: Mutex<BTreeMap<String, RestartBudget>>,
}

/// The process's record of its supervised components. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

impl Supervisor {
    /// A supervisor of its own (tests); the process uses [`Supervisor::global`].
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// The process-wide supervisor, read by `/healthz` and the watchdog.
    pub fn global() -> &'static Supervisor {
        static GLOBAL: OnceLock<Supervisor> = OnceLock::new();
        GLOBAL.get_or_init(Supervisor::new)
    }

    fn update<T>(&self, component: &str, f: impl FnOnce(&mut ComponentState) -> T) -> T {
        let mut map = self
            .inner
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(map.entry(component.to_owned()).or_default())
    }

    /// Runs `handle` (the handling of one datagram or frame of `component`); a panic in it is
    /// caught, logged and counted, and gives `None`.
    pub fn guard<T>(&self, component: &str, handle: impl FnOnce() -> T) -> Option<T> {
        match catch_unwind(AssertUnwindSafe(handle)) {
            Ok(v) => Some(v),
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                let caught = self.update(component, |s| {
                    s.caught += 1;
                    s.caught
                });
                tracing::error!(
                    component,
                    caught,
                    "a panic while handling input was caught; the input is dropped: {message}"
                );
                None
            }
        }
    }

    /// Marks `component` failed for `reason`: `/healthz` answers 503 and the watchdog is no
    /// longer fed.
    pub fn mark_failed(&self, component: &str, reason: &str) {
        tracing::error!(
            component,
            "{component} has failed and is not restarted again: {reason}; the process reports itself unhealthy"
        );
        self.update(component, |s| s.failed = Some(reason.to_owned()));
        self.inner.failed.store(true, Ordering::Relaxed);
    }

    /// Whether any component has failed.
    pub fn has_failed(&self) -> bool {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// The first failed component and why, if any.
    pub fn failure(&self) -> Option<(String, String)> {
        let map = self
            .inner
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.iter()
            .find_map(|(name, s)| s.failed.clone().map(|why| (name.clone(), why)))
    }

    /// What is known of `component`.
    pub fn state(&self, component: &str) -> ComponentState {
        self.inner
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(component)
            .cloned()
            .unwrap_or_default()
    }

    /// Runs the loop that `start` makes as a tokio task, and starts it again (a fresh one from
    /// `start`) whenever it panics, until the [`RestartBudget`] is spent; then the component
    /// is marked failed. A loop that returns is not started again.
    pub fn spawn<F, Fut>(&self, component: String, start: F) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn_with(component, start, false)
    }

    /// Like [`Supervisor::spawn`], for a loop that must never end (a socket's receive loop): a
    /// loop that returns is started again like one that panicked, within the same budget.
    pub fn spawn_forever<F, Fut>(&self, component: String, start: F) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn_with(component, start, true)
    }

    fn spawn_with<F, Fut>(
        &self,
        component: String,
        mut start: F,
        forever: bool,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let sup = self.clone();
        tokio::spawn(async move {
            let mut budget = RestartBudget::default();
            loop {
                let run = tokio::spawn(start()).await;
                let message = match run {
                    Ok(()) if forever => "the loop ended".to_string(),
                    Ok(()) => return,
                    Err(e) if e.is_panic() => panic_message(e.into_panic().as_ref()),
                    // Cancelled: the runtime is shutting down.
                    Err(_) => return,
                };
                if !budget.allow(Instant::now()) {
                    sup.mark_failed(
                        &component,
                        &format!(
                            "died more than {MAX_RESTARTS} times within {} s, last: {message}",
                            RESTART_WINDOW.as_secs()
                        ),
                    );
                    return;
                }
                let restarts = sup.update(&component, |s| {
                    s.restarts += 1;
                    s.restarts
                });
                tracing::error!(
                    component = component.as_str(),
                    restarts,
                    "the task died and is started again: {message}"
                );
                tokio::time::sleep(RESTART_PAUSE).await;
            }
        })
    }

    /// Runs `task`, one of the many short tasks of `component` (a call leg, a routing
    /// decision), which is not started again: its panic is logged and counted as a restart of
    /// `component`, and more than [`MAX_RESTARTS`] within [`RESTART_WINDOW`] mark the component
    /// failed. `on_panic` runs after a panic (to answer for the task, e.g. end its call).
    pub fn spawn_task<Fut>(
        &self,
        component: &'static str,
        task: Fut,
        on_panic: impl FnOnce() + Send + 'static,
    ) -> tokio::task::JoinHandle<()>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let sup = self.clone();
        let run = tokio::spawn(task);
        tokio::spawn(async move {
            let Err(e) = run.await else { return };
            if !e.is_panic() {
                return; // cancelled: the runtime is shutting down
            }
            let message = panic_message(e.into_panic().as_ref());
            on_panic();
            sup.task_died(component, &message, Instant::now());
        })
    }

    /// Counts a task of `component` that died at `now`; gives it up when they keep dying.
    fn task_died(&self, component: &str, message: &str, now: Instant) {
        let allowed = self
            .inner
            .task_budgets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(component.to_owned())
            .or_default()
            .allow(now);
        let restarts = self.update(component, |s| {
            s.restarts += 1;
            s.restarts
        });
        tracing::error!(component, restarts, "a task panicked: {message}");
        if !allowed {
            self.mark_failed(
                component,
                &format!(
                    "tasks died more than {MAX_RESTARTS} times within {} s, last: {message}",
                    RESTART_WINDOW.as_secs()
                ),
            );
        }
    }

    /// Watches a task that cannot be started again: when it panics, `component` is marked
    /// failed.
    pub fn watch(&self, component: String, task: tokio::task::JoinHandle<()>) {
        let sup = self.clone();
        tokio::spawn(async move {
            if let Err(e) = task.await {
                if e.is_panic() {
                    let message = panic_message(e.into_panic().as_ref());
                    sup.mark_failed(&component, &format!("panicked: {message}"));
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn budget_allows_five_restarts_a_minute() {
        let t0 = Instant::now();
        let mut b = RestartBudget::default();
        for i in 0..5 {
            assert!(b.allow(t0 + Duration::from_secs(i)), "restart {i}");
        }
        assert!(
            !b.allow(t0 + Duration::from_secs(10)),
            "the sixth within 60 s"
        );
        // A minute after the first ones, restarts are allowed again.
        let mut b = RestartBudget::default();
        for i in 0..5 {
            assert!(b.allow(t0 + Duration::from_secs(i * 20)));
        }
        assert!(b.allow(t0 + Duration::from_secs(100)));
    }

    #[test]
    fn guard_catches_a_panic_and_counts_it() {
        let sup = Supervisor::new();
        assert_eq!(sup.guard("sip udp", || 7), Some(7));
        let r: Option<()> = sup.guard("sip udp", || panic!("byte index 4 is not a char boundary"));
        assert_eq!(r, None);
        assert_eq!(sup.state("sip udp").caught, 1);
        // A caught panic does not make the process unhealthy.
        assert_eq!(sup.failure(), None);
        assert!(!sup.has_failed());
    }

    #[tokio::test]
    async fn a_loop_that_panics_is_restarted_then_given_up() {
        let sup = Supervisor::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let handle = sup.spawn("dundi 127.0.0.1:4520".into(), move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                panic!("boom");
            }
        });
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("given up in time")
            .expect("supervisor task ended");
        assert_eq!(runs.load(Ordering::SeqCst), MAX_RESTARTS + 1);
        assert_eq!(
            sup.state("dundi 127.0.0.1:4520").restarts,
            MAX_RESTARTS as u64
        );
        assert!(sup.has_failed());
        let (name, why) = sup.failure().expect("marked failed");
        assert_eq!(name, "dundi 127.0.0.1:4520");
        assert!(why.contains("boom"), "{why}");
    }

    #[tokio::test]
    async fn a_receive_loop_that_ends_is_restarted_then_given_up() {
        let sup = Supervisor::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let handle = sup.spawn_forever("SIP UDP 127.0.0.1:5060".into(), move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::timeout(Duration::from_secs(10), handle)
            .await
            .expect("given up in time")
            .expect("supervisor task ended");
        assert_eq!(runs.load(Ordering::SeqCst), MAX_RESTARTS + 1);
        let (name, why) = sup.failure().expect("marked failed");
        assert_eq!(name, "SIP UDP 127.0.0.1:5060");
        assert!(why.contains("ended"), "{why}");
    }

    #[tokio::test]
    async fn a_loop_that_recovers_stays_healthy() {
        let sup = Supervisor::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let handle = sup.spawn("sip udp".into(), move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("transient");
                }
            }
        });
        handle.await.expect("supervisor task ended");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(sup.failure(), None);
    }

    #[tokio::test]
    async fn a_watched_task_that_panics_marks_failure() {
        let sup = Supervisor::new();
        let task = tokio::spawn(async { panic!("engine state lost") });
        sup.watch("modem line gsm1".into(), task);
        // Until marked, however long a loaded machine takes to run the task.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sup.failure().is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (name, why) = sup.failure().expect("marked failed");
        assert_eq!(name, "modem line gsm1");
        assert!(why.contains("engine state lost"));
    }

    #[tokio::test]
    async fn a_task_that_panics_is_counted_and_many_give_the_component_up() {
        let sup = Supervisor::new();
        let cleaned = Arc::new(AtomicUsize::new(0));
        // A task that ends normally is not counted.
        sup.spawn_task("legs", async {}, || {}).await.unwrap();
        assert_eq!(sup.state("legs"), ComponentState::default());
        for i in 0..=MAX_RESTARTS {
            let c = Arc::clone(&cleaned);
            sup.spawn_task("legs", async { panic!("leg bug") }, move || {
                c.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .unwrap();
            assert_eq!(sup.state("legs").restarts, i as u64 + 1);
            assert_eq!(
                sup.has_failed(),
                i == MAX_RESTARTS,
                "after {} panics",
                i + 1
            );
        }
        assert_eq!(cleaned.load(Ordering::SeqCst), MAX_RESTARTS + 1);
        let (name, why) = sup.failure().expect("failed");
        assert_eq!(name, "legs");
        assert!(why.contains("leg bug"), "{why}");
    }
}
