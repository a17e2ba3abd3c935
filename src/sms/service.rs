//! The message service: the tokio task between the modem lines, the message store and the SIP
//! core. It
//!
//! - stores every PDU a line reads, *then* has the line delete it (nothing is lost when the
//!   process or the modem dies in between; a PDU read twice is stored once), puts long
//!   messages together ([`super::concat`]) and hands finished ones to the core for the line's
//!   extensions' phones;
//! - takes the MESSAGEs phones sent: to an extension, stored and delivered by the core; to a
//!   number outside, checked against the sender's permissions and hourly limit, stored, sent
//!   as SMS on a line, tried again with back-off, and marked delivered by its status reports;
//! - runs USSD requests for the dashboard and the API.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::concat::{Key, Part, Reassembler};
use super::config::SmsConfig;
use super::messages::{Deliver, FromPhone};
use super::pdu::{self, Incoming};
use super::store::{MessageRow, SmsStore, StoreError};
use crate::pstn::gsm::{LineSms, SmsEvent};
use crate::pstn::LinePool;
use crate::routing::numbering::{Dialled, NumberingPlan};

/// How often queued outgoing SMS are looked at.
const POLL: Duration = Duration::from_secs(2);
/// How long a USSD answer may take.
const USSD_WAIT: Duration = Duration::from_secs(20);
/// How long one send attempt may take before it counts as failed.
const SEND_WAIT_SECS: i64 = 180;

/// What the service is asked.
#[derive(Debug)]
pub enum Request {
    /// A MESSAGE a phone sent.
    FromPhone(FromPhone),
    /// A phone took stored message `id`.
    Delivered(i64),
    /// Send an SMS for extension `ext` (dashboard, API).
    Send {
        ext: String,
        to: String,
        text: String,
        reply: oneshot::Sender<Result<i64, String>>,
    },
    /// Run a USSD code on a line (the first when `None`).
    Ussd {
        line: Option<String>,
        code: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// The lines and their extensions changed (a modem line added, changed or removed in
    /// the dashboard): messages received from now on go to these.
    SetLineExtensions(Vec<(String, Vec<String>)>),
    /// The numbering plan changed (the /numbering page, the API): senders heard and numbers
    /// phones write are read with this one from now on.
    SetPlan(Box<NumberingPlan>),
}

/// A handle to the service (cheap to clone).
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::UnboundedSender<Request>,
}

impl Handle {
    /// Passes a request on (dropped when the service is gone).
    pub fn send(&self, r: Request) {
        let _ = self.tx.send(r);
    }

    /// Each line's extensions (ring groups resolved) from now on.
    pub fn set_line_extensions(&self, lines: Vec<(String, Vec<String>)>) {
        self.send(Request::SetLineExtensions(lines));
    }

    /// The office's numbering plan from now on.
    pub fn set_plan(&self, plan: NumberingPlan) {
        self.send(Request::SetPlan(Box::new(plan)));
    }

    /// Sends an SMS as `ext` to `to`; the stored message's id.
    pub async fn send_sms(&self, ext: &str, to: &str, text: &str) -> Result<i64, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Send {
            ext: ext.to_owned(),
            to: to.to_owned(),
            text: text.to_owned(),
            reply,
        });
        rx.await.map_err(|_| "message service stopped".to_owned())?
    }

    /// Runs a USSD code; the network's answer.
    pub async fn ussd(&self, line: Option<&str>, code: &str) -> Result<String, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Ussd {
            line: line.map(str::to_owned),
            code: code.to_owned(),
            reply,
        });
        rx.await.map_err(|_| "message service stopped".to_owned())?
    }
}

/// What the service needs to know of the office.
pub struct Settings {
    /// `[sms]`.
    pub config: SmsConfig,
    /// For numbers phones write.
    pub plan: NumberingPlan,
    /// Each line's extensions (ring groups resolved).
    pub line_extensions: Vec<(String, Vec<String>)>,
    /// Extension numbers (not sent as SMS).
    pub extensions: Vec<String>,
}

struct Service {
    store: SmsStore,
    pool: Arc<LinePool>,
    settings: Settings,
    to_core: mpsc::UnboundedSender<Deliver>,
    reassembler: Reassembler,
    attempts: HashMap<i64, i64>,
    ussd: HashMap<String, Vec<oneshot::Sender<Result<String, String>>>>,
    /// Wakes the e-mail forwarding task (when it is configured).
    mail: Option<super::email::Poke>,
}

/// The sender of a received SMS as the office writes numbers: E.164 (`+…`) when it is
/// international or carries the plan's international or national prefix; short codes and
/// alphanumeric names as the network sent them.
fn sender_e164(plan: &NumberingPlan, sender: &str) -> String {
    let numeric = sender
        .strip_prefix('+')
        .unwrap_or(sender)
        .bytes()
        .all(|b| b.is_ascii_digit());
    let prefixed = |p: &str| !p.is_empty() && sender.starts_with(p);
    if sender.is_empty()
        || !numeric
        || !(sender.starts_with('+')
            || prefixed(&plan.international_prefix)
            || prefixed(&plan.national_prefix))
    {
        return sender.to_owned();
    }
    match plan.classify(sender, |_| false) {
        Ok(Dialled::E164(n)) => n.as_str().to_owned(),
        _ => sender.to_owned(),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Starts the service on the store at `db` (migrated already); what it delivers to phones
/// comes out of the receiver, for [`crate::callctl::SipCore::deliver_message`].
pub fn start(
    db: &Path,
    pool: Arc<LinePool>,
    settings: Settings,
) -> Result<(Handle, mpsc::UnboundedReceiver<Deliver>), StoreError> {
    let store = SmsStore::open(db)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (to_core, from_service) = mpsc::unbounded_channel();
    let sms = pool.take_sms();
    let mail = settings
        .config
        .email
        .clone()
        .map(|e| super::email::start(db, e));
    let svc = Service {
        mail,
        store,
        pool,
        reassembler: Reassembler::new(Duration::from_secs(settings.config.reassembly_secs)),
        settings,
        to_core,
        attempts: HashMap::new(),
        ussd: HashMap::new(),
    };
    crate::supervise::Supervisor::global()
        .watch("message service".to_owned(), tokio::spawn(svc.run(rx, sms)));
    Ok((Handle { tx }, from_service))
}

impl Service {
    async fn run(
        mut self,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut sms: mpsc::UnboundedReceiver<LineSms>,
    ) {
        if let Err(e) = self.recover() {
            tracing::error!("message store: {e}");
        }
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let wake = self
                .reassembler
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                ev = sms.recv() => match ev {
                    Some(ev) => self.on_line(ev).await,
                    None => sms = mpsc::unbounded_channel().1,
                },
                req = requests.recv() => match req {
                    Some(r) => self.on_request(r).await,
                    None => return,
                },
                () = async {
                    match wake {
                        Some(w) => tokio::time::sleep_until(w).await,
                        None => std::future::pending().await,
                    }
                } => self.expire(),
                _ = poll.tick() => self.send_due().await,
            }
        }
    }

    /// At start: parts whose siblings were awaited go back into the reassembler; messages
    /// no phone took yet go to the core again.
    fn recover(&mut self) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut loose = 0;
        for (id, line, hex) in self.store.loose_parts()? {
            loose += 1;
            if let Ok(Incoming::Deliver(d)) = pdu::decode(&hex) {
                self.take_part(&line, id, d, now)?;
            }
        }
        let waiting = self.store.undelivered()?;
        tracing::info!(
            loose_parts = loose,
            undelivered = waiting.len(),
            "message store read"
        );
        for u in waiting {
            let _ = self.to_core.send(Deliver {
                id: u.id,
                to: u.to,
                from: u.from,
                text: u.body,
            });
        }
        Ok(())
    }

    async fn on_line(&mut self, ev: LineSms) {
        match ev.event {
            SmsEvent::Read { index, pdu } => {
                match self.received(&ev.line, &pdu) {
                    Ok(()) => {
                        // Stored (or stored before): the modem may forget it now.
                        if let Some(l) = self.pool.line(&ev.line) {
                            let _ = l.delete_sms(index).await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(line = %ev.line, index, "SMS not stored, left on the modem: {e}")
                    }
                }
            }
            SmsEvent::Sent { id, result } => {
                let (msg, seq) = ((id >> 8) as i64, (id & 0xFF) as i64);
                let now = unix_now();
                let r = match result {
                    Ok(mr) => {
                        tracing::info!(id = msg, part = seq, mr, "SMS part sent");
                        super::metrics::bump(&super::metrics::PARTS_SENT);
                        self.store.part_sent(msg, seq, mr, now)
                    }
                    Err(e) => {
                        tracing::warn!(id = msg, part = seq, error = %e, "SMS part not sent");
                        super::metrics::bump(&super::metrics::SEND_FAILURES);
                        let retry = self.retry_at(msg, now);
                        self.store.attempt_failed(msg, &e, retry, now)
                    }
                };
                if let Err(e) = r {
                    tracing::error!("message store: {e}");
                }
            }
            SmsEvent::Direct { pdu } => {
                // `+CMT`/`+CDS`: the network waits for `+CNMA`, which may only go once the
                // message is on disk; without it the network delivers the message again.
                match self.received(&ev.line, &pdu) {
                    Ok(()) => {
                        if let Some(l) = self.pool.line(&ev.line) {
                            let _ = l.ack_sms().await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(line = %ev.line, "SMS not stored, not acknowledged (the network sends it again): {e}")
                    }
                }
            }
            SmsEvent::Ussd { status, text, dcs } => {
                let answer = match (status, text) {
                    (4, t) => Err(t.unwrap_or_else(|| "the network refused the code".into())),
                    (_, Some(t)) => Ok(super::ussd::decode(&t, dcs)),
                    (_, None) => Ok(String::new()),
                };
                tracing::info!(line = %ev.line, status, ?answer, "USSD");
                let waiter = self
                    .ussd
                    .get_mut(&ev.line)
                    .and_then(|w| (!w.is_empty()).then(|| w.remove(0)));
                let origin = if waiter.is_some() {
                    "answer"
                } else {
                    "network"
                };
                if waiter.is_none() {
                    super::metrics::bump(&super::metrics::USSD_NETWORK);
                    tracing::info!(line = %ev.line, status, "network-initiated USSD: {answer:?}");
                }
                let shown = match &answer {
                    Ok(t) => t.clone(),
                    Err(e) => e.clone(),
                };
                if let Err(e) = self
                    .store
                    .ussd_event(&ev.line, origin, status, &shown, unix_now())
                {
                    tracing::error!("message store: {e}");
                }
                if let Some(reply) = waiter {
                    let _ = reply.send(answer);
                }
            }
        }
    }

    /// Stores a PDU read on `line` (and what it completes).
    fn received(&mut self, line: &str, hex: &str) -> Result<(), StoreError> {
        let now = unix_now();
        match pdu::decode(hex) {
            Ok(Incoming::Status(s)) => {
                let id = self
                    .store
                    .status_report(line, s.reference, s.delivered(), now)?;
                tracing::info!(%line, mr = s.reference, status = s.status, ?id, "SMS status report");
                if s.delivered() {
                    super::metrics::bump(&super::metrics::DELIVERY_REPORTS);
                }
                if !s.delivered() && !s.failed() {
                    tracing::debug!("status report: still trying");
                }
                Ok(())
            }
            Ok(Incoming::Deliver(d)) => {
                let Some(id) = self.store.insert_part(line, hex, now)? else {
                    tracing::info!(%line, sender = %d.sender, "SMS read again: stored already");
                    return Ok(());
                };
                self.take_part(line, id, d, Instant::now())
            }
            Err(e) => {
                // Kept in the store for inspection; gone from the modem.
                tracing::warn!(%line, error = %e, pdu = %hex, "undecodable SMS");
                self.store.insert_part(line, hex, now)?;
                Ok(())
            }
        }
    }

    fn take_part(
        &mut self,
        line: &str,
        id: i64,
        d: pdu::Deliver,
        now: Instant,
    ) -> Result<(), StoreError> {
        let encoding = d.alphabet.name();
        match d.concat {
            None => {
                let text = pdu::text_of(&d.payload);
                self.store_message(line, &d.sender, &text, encoding, &[id])
            }
            Some(c) => {
                let key = Key {
                    line: line.to_owned(),
                    sender: d.sender.clone(),
                    reference: c.reference,
                    total: c.total,
                };
                let part = Part {
                    id,
                    seq: c.seq,
                    payload: d.payload,
                };
                match self.reassembler.push(key, part, now) {
                    Some(m) => self.store_message(line, &d.sender, &m.text, encoding, &m.part_ids),
                    None => Ok(()),
                }
            }
        }
    }

    fn expire(&mut self) {
        for m in self.reassembler.expire(Instant::now()) {
            tracing::warn!(line = %m.key.line, sender = %m.key.sender, parts = m.part_ids.len(), total = m.key.total, "long SMS incomplete: stored with what arrived");
            if let Err(e) = self.store_message(&m.key.line, &m.key.sender, &m.text, "", &m.part_ids)
            {
                tracing::error!("message store: {e}");
            }
        }
    }

    fn store_message(
        &mut self,
        line: &str,
        sender: &str,
        text: &str,
        encoding: &str,
        part_ids: &[i64],
    ) -> Result<(), StoreError> {
        let to = self
            .settings
            .line_extensions
            .iter()
            .find(|(l, _)| l == line)
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        let mail = self
            .settings
            .config
            .email
            .as_ref()
            .is_some_and(|e| !e.recipients(line).is_empty());
        let sender = sender_e164(&self.settings.plan, sender);
        let sender = sender.as_str();
        let id = self.store.store_received(
            line,
            sender,
            &to,
            text,
            encoding,
            part_ids,
            mail,
            unix_now(),
        )?;
        tracing::info!(id, %line, %sender, parts = part_ids.len(), chars = text.chars().count(), mail, "SMS received");
        if mail {
            if let Some(p) = &self.mail {
                p.poke();
            }
        }
        super::metrics::bump(&super::metrics::RECEIVED);
        let _ = self.to_core.send(Deliver {
            id,
            to,
            from: sender.to_owned(),
            text: text.to_owned(),
        });
        Ok(())
    }

    async fn on_request(&mut self, r: Request) {
        match r {
            Request::Delivered(id) => {
                super::metrics::bump(&super::metrics::DELIVERED_TO_PHONES);
                if let Err(e) = self.store.mark_delivered(id, unix_now()) {
                    tracing::error!("message store: {e}");
                }
            }
            Request::FromPhone(m) => {
                super::metrics::bump(&super::metrics::FROM_PHONES);
                let r = if m.to_extension {
                    self.local(&m)
                } else {
                    self.outgoing(&m.from, &m.to, &m.text, Some(m.permissions))
                };
                if let Err(e) = r {
                    tracing::warn!(from = %m.from, to = %m.to, "message not taken: {e}");
                }
                self.send_due().await;
            }
            Request::Send {
                ext,
                to,
                text,
                reply,
            } => {
                let r = if self.settings.extensions.contains(&to) {
                    self.local(&FromPhone {
                        from: ext,
                        to,
                        to_extension: true,
                        permissions: crate::routing::Permissions::all(),
                        text,
                    })
                } else {
                    self.outgoing(&ext, &to, &text, None)
                };
                let _ = reply.send(r);
                self.send_due().await;
            }
            Request::SetLineExtensions(lines) => {
                tracing::debug!(
                    lines = lines.len(),
                    "message service: lines' extensions updated"
                );
                self.settings.line_extensions = lines;
            }
            Request::SetPlan(plan) => {
                tracing::info!(
                    country_code = %plan.country_code,
                    "message service: numbering plan updated"
                );
                self.settings.plan = *plan;
            }
            Request::Ussd { line, code, reply } => {
                super::metrics::bump(&super::metrics::USSD);
                let l = match &line {
                    Some(n) => self.pool.line(n),
                    None => self.pool.lines().first().cloned(),
                };
                let Some(l) = l else {
                    let _ = reply.send(Err("no such line".into()));
                    return;
                };
                if let Err(e) = l.ussd(&code).await {
                    let _ = reply.send(Err(e.to_string()));
                    return;
                }
                let (tx, rx) = oneshot::channel();
                self.ussd.entry(l.name().to_owned()).or_default().push(tx);
                tokio::spawn(async move {
                    let answer = match tokio::time::timeout(USSD_WAIT, rx).await {
                        Ok(Ok(a)) => a,
                        _ => Err("no USSD answer from the network".into()),
                    };
                    let _ = reply.send(answer);
                });
            }
        }
    }

    fn local(&mut self, m: &FromPhone) -> Result<i64, String> {
        let id = self
            .store
            .store_local(&m.from, &m.to, &m.text, unix_now())
            .map_err(|e| e.to_string())?;
        let _ = self.to_core.send(Deliver {
            id,
            to: vec![m.to.clone()],
            from: m.from.clone(),
            text: m.text.clone(),
        });
        Ok(id)
    }

    /// Stores an SMS to send (queued, or failed with the reason it is refused).
    fn outgoing(
        &mut self,
        ext: &str,
        to: &str,
        text: &str,
        permissions: Option<crate::routing::Permissions>,
    ) -> Result<i64, String> {
        let now = unix_now();
        let exts = &self.settings.extensions;
        let refused = |why: String| -> Result<String, String> { Err(why) };
        let number = match self
            .settings
            .plan
            .classify(to, |d| exts.iter().any(|e| e == d))
        {
            Ok(d @ Dialled::E164(_)) => match permissions.map(|p| self.settings.plan.check(&d, &p))
            {
                Some(Err(e)) => refused(format!("not permitted: {e}")),
                _ => match d {
                    Dialled::E164(n) => Ok(n.to_string()),
                    _ => refused("not a number".into()),
                },
            },
            Ok(other) => refused(format!("{other} cannot get an SMS")),
            Err(e) => refused(e.to_string()),
        };
        let sent = self
            .store
            .sent_since(ext, now - 3600)
            .map_err(|e| e.to_string())?;
        let number = number.and_then(|n| {
            if sent >= i64::from(self.settings.config.max_per_hour) {
                Err(format!(
                    "limit of {} SMS an hour reached",
                    self.settings.config.max_per_hour
                ))
            } else {
                Ok(n)
            }
        });
        let (parts, alphabet) = pdu::part_count(text);
        let cost = self
            .settings
            .config
            .price_per_part
            .map(|p| p * parts as f64);
        let reference: u16 = rand::random::<u8>().into();
        let (shown, error) = match &number {
            Ok(n) => (n.as_str(), None),
            Err(e) => (to, Some(e.as_str())),
        };
        let id = self
            .store
            .store_outgoing(
                ext,
                shown,
                text,
                parts,
                alphabet.name(),
                reference,
                cost,
                error,
                now,
            )
            .map_err(|e| e.to_string())?;
        match number {
            Ok(n) => {
                tracing::info!(id, %ext, to = %n, parts, "SMS queued");
                Ok(id)
            }
            Err(e) => {
                tracing::warn!(id, %ext, %to, "SMS refused: {e}");
                Err(e)
            }
        }
    }

    /// Starts every queued SMS that is due.
    async fn send_due(&mut self) {
        let now = unix_now();
        let due = match self.store.due_outgoing(now) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!("message store: {e}");
                return;
            }
        };
        for m in due {
            let line = m
                .line
                .as_deref()
                .and_then(|n| self.pool.line(n))
                .or_else(|| {
                    self.pool
                        .lines()
                        .iter()
                        .find(|l| l.status().state == crate::pstn::LineState::Idle)
                        .cloned()
                })
                .or_else(|| self.pool.lines().first().cloned());
            self.attempts.insert(m.id, m.attempts + 1);
            let Some(line) = line else {
                let retry = self.retry_at(m.id, now);
                let _ = self.store.attempt_failed(m.id, "no modem line", retry, now);
                continue;
            };
            let pdus = match pdu::submit(&m.number, &m.body, m.reference as u16) {
                Ok(p) => p,
                Err(e) => {
                    let _ = self.store.attempt_failed(m.id, &e.to_string(), None, now);
                    continue;
                }
            };
            if let Err(e) = self
                .store
                .sending(m.id, line.name(), now + SEND_WAIT_SECS, now)
            {
                tracing::error!("message store: {e}");
                continue;
            }
            for (i, p) in pdus.into_iter().enumerate() {
                let seq = i as i64 + 1;
                if m.sent_parts.contains(&seq) {
                    continue;
                }
                let tag = (m.id as u64) << 8 | seq as u64;
                if let Err(e) = line.send_sms(tag, p.hex, p.tpdu_len).await {
                    let retry = self.retry_at(m.id, now);
                    let _ = self.store.attempt_failed(m.id, &e.to_string(), retry, now);
                    break;
                }
            }
        }
    }

    /// When a failed SMS is tried again (`None`: given up).
    fn retry_at(&self, id: i64, now: i64) -> Option<i64> {
        let attempts = self.attempts.get(&id).copied().unwrap_or(1).max(1);
        if attempts >= i64::from(self.settings.config.max_attempts) {
            return None;
        }
        let base = self.settings.config.retry_secs as i64;
        let pause = base.saturating_mul(1 << (attempts - 1).min(16)).min(3600);
        Some(now + pause)
    }
}

/// The newest messages (for the API and the dashboard), read from the store at `db`.
pub fn list(db: &Path, kind: Option<&str>, limit: i64) -> Result<Vec<MessageRow>, StoreError> {
    SmsStore::open(db)?.list(kind, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::numbering::NumberingConfig;

    #[test]
    fn senders_are_written_by_the_plan_in_use() {
        let de = NumberingPlan::from_config(&NumberingConfig::default());
        assert_eq!(de.country_code, "49");
        assert_eq!(sender_e164(&de, "017012345678"), "+4917012345678");
        assert_eq!(sender_e164(&de, "+4917012345678"), "+4917012345678");
        assert_eq!(sender_e164(&de, "0033612345678"), "+33612345678");
        // Short codes and names stay as the network sent them.
        assert_eq!(sender_e164(&de, "22222"), "22222");
        assert_eq!(sender_e164(&de, "Bank"), "Bank");
        assert_eq!(sender_e164(&de, "0"), "0");
        assert_eq!(sender_e164(&de, ""), "");
        let fr = NumberingPlan::from_config(&NumberingConfig {
            country_code: "33".into(),
            ..NumberingConfig::default()
        });
        assert_eq!(sender_e164(&fr, "0612345678"), "+33612345678");
    }
}
