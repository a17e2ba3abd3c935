//! All PSTN lines of the gateway, of any kind ([`Line`]): started from their configuration,
//! asked in order for an outgoing call (the first line in service takes it), their incoming
//! calls merged into one stream, their status snapshots for the dashboard and `pasarela modem
//! status`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::gsm::config::ModemConfig;
use super::gsm::GsmLine;
use super::line::{IncomingLineCall, Line, LineCall};
use super::{LineError, LineState, LineStatus};

/// The running lines.
#[derive(Default)]
pub struct LinePool {
    lines: Vec<Arc<dyn Line>>,
    incoming_for: Vec<(String, Vec<String>)>,
}

impl LinePool {
    /// Starts every enabled modem line (inside a tokio runtime).
    pub fn spawn(modems: &[ModemConfig]) -> LinePool {
        let mut pool = LinePool::default();
        for m in modems.iter().filter(|m| m.enabled) {
            pool.add(Arc::new(GsmLine::spawn(m.line.clone())), m.incoming.clone());
        }
        pool
    }

    /// Adds a running line of any kind, after the others; `incoming`: the extensions (or ring
    /// groups) its incoming calls ring, in order.
    pub fn add(&mut self, line: Arc<dyn Line>, incoming: Vec<String>) {
        self.incoming_for.push((line.name().to_string(), incoming));
        self.lines.push(line);
    }

    /// The lines, in configuration order.
    pub fn lines(&self) -> &[Arc<dyn Line>] {
        &self.lines
    }

    /// A line by name.
    pub fn line(&self, name: &str) -> Option<&Arc<dyn Line>> {
        self.lines.iter().find(|l| l.name() == name)
    }

    /// Extensions that calls arriving on `line` ring.
    pub fn incoming_extensions(&self, line: &str) -> &[String] {
        self.incoming_for
            .iter()
            .find(|(n, _)| n == line)
            .map(|(_, e)| e.as_slice())
            .unwrap_or(&[])
    }

    /// Every line's snapshot.
    pub fn statuses(&self) -> Vec<LineStatus> {
        self.lines.iter().map(|l| l.status()).collect()
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
            .lines
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

    /// One stream of the incoming calls of every line (once; later calls get an empty one).
    pub fn take_incoming(&self) -> mpsc::Receiver<IncomingLineCall> {
        let (tx, rx) = mpsc::channel(16);
        for line in &self.lines {
            if let Some(mut r) = line.take_incoming() {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(c) = r.recv().await {
                        if tx.send(c).await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
        rx
    }

    /// Stops every line.
    pub async fn shutdown(&self) {
        for l in &self.lines {
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
        for line in &pool.lines {
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
        let mut pool = LinePool::default();
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
