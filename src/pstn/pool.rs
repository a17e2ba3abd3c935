//! All PSTN lines of the gateway, of any kind ([`Line`]): started from their configuration,
//! asked in order for an outgoing call (the first line in service takes it), their incoming
//! calls merged into one stream, their status snapshots for the dashboard and `pasarela modem
//! status`.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;

use super::gsm::config::ModemConfig;
use super::gsm::{GsmLine, LineSms};
use super::line::{IncomingLineCall, Line, LineCall};
use super::{LineError, LineState, LineStatus};

/// The running lines. Lines can be added, replaced and removed while it runs (lines changed
/// in the dashboard, issue 17): the incoming calls and text messages of a line added later
/// join the streams taken before.
#[derive(Default)]
pub struct LinePool {
    lines: RwLock<Vec<Arc<dyn Line>>>,
    incoming_for: RwLock<Vec<(String, Vec<String>)>>,
    /// Where the incoming calls of lines added later go (once taken).
    incoming_tx: Mutex<Option<mpsc::Sender<IncomingLineCall>>>,
    /// Where the text message events of lines added later go (once taken).
    sms_tx: Mutex<Option<mpsc::UnboundedSender<LineSms>>>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn lock<T>(l: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

impl LinePool {
    /// Starts every enabled modem line (inside a tokio runtime).
    pub fn spawn(modems: &[ModemConfig]) -> LinePool {
        let pool = LinePool::default();
        for m in modems.iter().filter(|m| m.enabled) {
            pool.add(Arc::new(GsmLine::spawn(m.line.clone())), m.incoming.clone());
        }
        pool
    }

    /// Adds a running line of any kind, after the others; `incoming`: the extensions (or ring
    /// groups) its incoming calls ring, in order. A line of the same name is replaced (the
    /// caller shuts the old one down). Its calls and messages join the streams already taken.
    pub fn add(&self, line: Arc<dyn Line>, incoming: Vec<String>) {
        let name = line.name().to_string();
        if let Some(tx) = lock(&self.incoming_tx).clone() {
            forward_incoming(line.as_ref(), tx);
        }
        if let Some(tx) = lock(&self.sms_tx).clone() {
            forward_sms(line.as_ref(), tx);
        }
        {
            let mut lines = write(&self.lines);
            match lines.iter_mut().find(|l| l.name() == name) {
                Some(old) => *old = line,
                None => lines.push(line),
            }
        }
        let mut inc = write(&self.incoming_for);
        inc.retain(|(n, _)| *n != name);
        inc.push((name, incoming));
    }

    /// Takes the line `name` out of the pool (the caller shuts it down); `None`: no such line.
    pub fn remove(&self, name: &str) -> Option<Arc<dyn Line>> {
        write(&self.incoming_for).retain(|(n, _)| n != name);
        let mut lines = write(&self.lines);
        let at = lines.iter().position(|l| l.name() == name)?;
        Some(lines.remove(at))
    }

    /// The lines, in configuration order.
    pub fn lines(&self) -> Vec<Arc<dyn Line>> {
        read(&self.lines).clone()
    }

    /// A line by name.
    pub fn line(&self, name: &str) -> Option<Arc<dyn Line>> {
        read(&self.lines).iter().find(|l| l.name() == name).cloned()
    }

    /// Extensions that calls arriving on `line` ring.
    pub fn incoming_extensions(&self, line: &str) -> Vec<String> {
        read(&self.incoming_for)
            .iter()
            .find(|(n, _)| n == line)
            .map(|(_, e)| e.clone())
            .unwrap_or_default()
    }

    /// Every line's snapshot.
    pub fn statuses(&self) -> Vec<LineStatus> {
        self.lines().iter().map(|l| l.status()).collect()
    }

    /// Places a call on the first idle line (`only`: on that line alone). When no line can
    /// take it, the error of the best candidate: busy (486) before not in service (503).
    pub async fn dial(
        &self,
        number: &str,
        only: Option<&str>,
    ) -> Result<Box<dyn LineCall>, LineError> {
        let mut last = LineError::NotReady("no modem line configured".into());
        for line in self
            .lines()
            .iter()
            .filter(|l| only.is_none_or(|n| l.name() == n))
        {
            if line.status().state != LineState::Idle {
                let st = line.status().state;
                if matches!(
                    st,
                    LineState::Dialling
                        | LineState::Alerting
                        | LineState::Active
                        | LineState::Incoming
                ) {
                    last = LineError::Busy(line.name().to_string());
                } else if !matches!(last, LineError::Busy(_)) {
                    last = LineError::NotReady(line.name().to_string());
                }
                continue;
            }
            match line.dial(number).await {
                Ok(call) => return Ok(call),
                Err(e @ LineError::BadNumber(_)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One stream of the incoming calls of every line, those added later too (once; later
    /// calls get an empty one).
    pub fn take_incoming(&self) -> mpsc::Receiver<IncomingLineCall> {
        let (tx, rx) = mpsc::channel(16);
        for line in self.lines() {
            forward_incoming(line.as_ref(), tx.clone());
        }
        *lock(&self.incoming_tx) = Some(tx);
        rx
    }

    /// One stream of the text message and USSD events of every line, those added later too
    /// (once).
    pub fn take_sms(&self) -> mpsc::UnboundedReceiver<LineSms> {
        let (tx, rx) = mpsc::unbounded_channel();
        for line in self.lines() {
            forward_sms(line.as_ref(), tx.clone());
        }
        *lock(&self.sms_tx) = Some(tx);
        rx
    }

    /// Stops every line.
    pub async fn shutdown(&self) {
        for l in &self.lines() {
            l.shutdown().await;
        }
    }

    /// Opens every enabled line just long enough to read its status (at most `budget`), then
    /// closes it: `pasarela modem status` when `serve` is not running (a running `serve` holds
    /// the ports; ask it instead).
    pub async fn probe_status(modems: &[ModemConfig], budget: Duration) -> Vec<LineStatus> {
        LinePool::spawn(modems).probe(budget).await
    }

    /// Waits until every line is idle or failed (at most `budget`), reads their status and
    /// stops them.
    pub async fn probe(self, budget: Duration) -> Vec<LineStatus> {
        let pool = self;
        let deadline = tokio::time::Instant::now() + budget;
        let mut out = Vec::new();
        for line in &pool.lines() {
            let mut w = line.watch_status();
            let _ = tokio::time::timeout_at(deadline, async {
                loop {
                    let st = w.borrow_and_update().state;
                    if matches!(st, LineState::Idle | LineState::Failed) {
                        return;
                    }
                    if w.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            out.push(line.status());
        }
        pool.shutdown().await;
        out
    }
}

/// Hands the incoming calls of `line` (once) to `tx`.
fn forward_incoming(line: &dyn Line, tx: mpsc::Sender<IncomingLineCall>) {
    if let Some(mut r) = line.take_incoming() {
        tokio::spawn(async move {
            while let Some(c) = r.recv().await {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Hands the text message events of `line` (once) to `tx`.
fn forward_sms(line: &dyn Line, tx: mpsc::UnboundedSender<LineSms>) {
    if let Some(mut r) = line.take_sms() {
        tokio::spawn(async move {
            while let Some(e) = r.recv().await {
                if tx.send(e).is_err() {
                    break;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pstn::line::{AudioEndpoint, LineFuture};
    use crate::pstn::{CallProgress, EndCause, EndReason};
    use tokio::sync::watch;

    /// A line whose state the test sets; its calls end with the cause it is given.
    struct FakeLine {
        name: String,
        status: watch::Sender<LineStatus>,
        dialled: std::sync::Mutex<Vec<String>>,
    }

    impl FakeLine {
        fn new(name: &str, state: LineState) -> Arc<FakeLine> {
            let (status, _) = watch::channel(LineStatus {
                name: name.into(),
                state,
                ..LineStatus::default()
            });
            Arc::new(FakeLine {
                name: name.into(),
                status,
                dialled: Default::default(),
            })
        }
    }

    #[derive(Debug)]
    struct FakeCall {
        line: String,
        events: Vec<CallProgress>,
    }

    impl Line for FakeLine {
        fn name(&self) -> &str {
            &self.name
        }
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn status(&self) -> LineStatus {
            self.status.borrow().clone()
        }
        fn watch_status(&self) -> watch::Receiver<LineStatus> {
            self.status.subscribe()
        }
        fn dial<'a>(
            &'a self,
            number: &'a str,
        ) -> LineFuture<'a, Result<Box<dyn LineCall>, LineError>> {
            Box::pin(async move {
                self.dialled.lock().expect("lock").push(number.to_string());
                self.status.send_modify(|s| s.state = LineState::Dialling);
                Ok(Box::new(FakeCall {
                    line: self.name.clone(),
                    events: vec![CallProgress::Ended(EndCause::from_reason(
                        EndReason::Busy,
                        false,
                    ))],
                }) as Box<dyn LineCall>)
            })
        }
        fn take_incoming(&self) -> Option<mpsc::Receiver<IncomingLineCall>> {
            None
        }
        fn shutdown(&self) -> LineFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    impl LineCall for FakeCall {
        fn id(&self) -> crate::pstn::CallId {
            1
        }
        fn line(&self) -> &str {
            &self.line
        }
        fn next_event(&mut self) -> LineFuture<'_, Option<CallProgress>> {
            Box::pin(async move { (!self.events.is_empty()).then(|| self.events.remove(0)) })
        }
        fn answer(&self) -> LineFuture<'_, Result<(), LineError>> {
            Box::pin(async { Ok(()) })
        }
        fn hangup(&self) -> LineFuture<'_, Result<(), LineError>> {
            Box::pin(async { Ok(()) })
        }
        fn send_digit(&self, _: char) -> LineFuture<'_, Result<(), LineError>> {
            Box::pin(async { Ok(()) })
        }
        fn attach_audio(&self, _: AudioEndpoint) -> LineFuture<'_, Result<(), LineError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn pool(lines: &[&Arc<FakeLine>]) -> LinePool {
        let pool = LinePool::default();
        for l in lines {
            pool.add(Arc::clone(l) as Arc<dyn Line>, vec!["100".into()]);
        }
        pool
    }

    #[tokio::test]
    async fn a_call_takes_the_first_idle_line_of_any_kind() {
        let busy = FakeLine::new("a", LineState::Active);
        let down = FakeLine::new("b", LineState::Down);
        let idle = FakeLine::new("c", LineState::Idle);
        let pool = pool(&[&busy, &down, &idle]);
        let mut call = pool.dial("+4930123", None).await.expect("dialled");
        assert_eq!(call.line(), "c");
        assert_eq!(*idle.dialled.lock().expect("lock"), vec!["+4930123"]);
        assert!(busy.dialled.lock().expect("lock").is_empty());
        match call.next_event().await {
            Some(CallProgress::Ended(c)) => assert_eq!((c.q850, c.sip_status), (17, 486)),
            other => panic!("{other:?}"),
        }
        assert_eq!(call.next_event().await, None);
        assert_eq!(pool.incoming_extensions("c"), ["100".to_string()]);
        assert_eq!(pool.statuses().len(), 3);
        // Lines change while the pool runs: one replaced in place, one removed.
        let again = FakeLine::new("a", LineState::Idle);
        pool.add(Arc::clone(&again) as Arc<dyn Line>, vec!["101".into()]);
        assert_eq!(pool.lines().len(), 3);
        assert_eq!(pool.lines()[0].status().state, LineState::Idle);
        assert_eq!(pool.incoming_extensions("a"), ["101".to_string()]);
        assert!(pool.remove("b").is_some());
        assert!(pool.remove("b").is_none());
        let names: Vec<String> = pool.lines().iter().map(|l| l.name().to_owned()).collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[tokio::test]
    async fn no_idle_line_is_busy_before_out_of_service() {
        let busy = FakeLine::new("a", LineState::Active);
        let down = FakeLine::new("b", LineState::Down);
        let pool = pool(&[&down, &busy]);
        let e = pool.dial("+4930123", None).await.expect_err("refused");
        assert_eq!(e, LineError::Busy("a".into()));
        let e = pool.dial("+4930123", Some("b")).await.expect_err("refused");
        assert_eq!(e, LineError::NotReady("b".into()));
        let none = LinePool::default();
        assert!(matches!(
            none.dial("1", None).await,
            Err(LineError::NotReady(_))
        ));
    }
}
