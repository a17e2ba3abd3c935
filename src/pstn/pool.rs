//! All PSTN lines of the gateway: started from their configuration, asked in order for an
//! outgoing call (the first line in service takes it), their incoming calls merged into one
//! stream, their status snapshots for the dashboard and `pasarela modem status`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::gsm::config::ModemConfig;
use super::gsm::{GsmLine, IncomingPstnCall, LineSms, PstnCall};
use super::{LineError, LineState, LineStatus};

/// The running lines.
pub struct LinePool {
    lines: Vec<Arc<GsmLine>>,
    incoming_for: Vec<(String, Vec<String>)>,
}

impl LinePool {
    /// Starts every enabled line (inside a tokio runtime).
    pub fn spawn(modems: &[ModemConfig]) -> LinePool {
        let mut lines = Vec::new();
        let mut incoming_for = Vec::new();
        for m in modems.iter().filter(|m| m.enabled) {
            lines.push(Arc::new(GsmLine::spawn(m.line.clone())));
            incoming_for.push((m.line.line.name.clone(), m.incoming.clone()));
        }
        LinePool {
            lines,
            incoming_for,
        }
    }

    /// The lines, in configuration order.
    pub fn lines(&self) -> &[Arc<GsmLine>] {
        &self.lines
    }

    /// A line by name.
    pub fn line(&self, name: &str) -> Option<&Arc<GsmLine>> {
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
    pub async fn dial(&self, number: &str, only: Option<&str>) -> Result<PstnCall, LineError> {
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
    pub fn take_incoming(&self) -> mpsc::Receiver<IncomingPstnCall> {
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

    /// One stream of the text message and USSD events of every line (once).
    pub fn take_sms(&self) -> mpsc::UnboundedReceiver<LineSms> {
        let (tx, rx) = mpsc::unbounded_channel();
        for line in &self.lines {
            if let Some(mut r) = line.take_sms() {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(e) = r.recv().await {
                        if tx.send(e).is_err() {
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
        let pool = LinePool::spawn(modems);
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
