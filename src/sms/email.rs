//! Forwarding of received SMS by e-mail (SMTP with lettre): a supervised task of its own, so a
//! slow or absent mail server never holds up a line or the message service. The message is in
//! the store before it is mailed ([`super::store::SmsStore::store_received`] marks it `pending`
//! in the same transaction); this task mails what is due, marks it `sent`, and on failure logs
//! it and tries again later with a doubling pause, after a restart too. A mail given up after
//! the last attempt is `failed`; the SMS stays in the store and the inbox either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::Notify;

use super::config::{EmailConfig, SmtpTls};
use super::store::{MailDue, SmsStore};

/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the store is looked at when nothing pokes the task.
const IDLE_POLL: Duration = Duration::from_secs(60);
/// Mails sent per round.
const BATCH: i64 = 20;

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An address in the settings or the mail could not be used.
    #[error("e-mail: {0}")]
    Address(String),
    /// The TLS settings could not be made.
    #[error("e-mail TLS: {0}")]
    Tls(String),
    /// The SMTP server refused or could not be reached.
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The SMTP transport of the settings.
fn transport(c: &EmailConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let tls = |wrap: bool| -> Result<Tls, MailError> {
        let p = TlsParameters::new(c.server.clone()).map_err(|e| MailError::Tls(e.to_string()))?;
        Ok(if wrap {
            Tls::Wrapper(p)
        } else {
            Tls::Required(p)
        })
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.server.as_str())
        .port(c.port)
        .timeout(Some(SMTP_TIMEOUT))
        .tls(match c.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => tls(false)?,
            SmtpTls::Tls => tls(true)?,
        });
    if let (Some(u), Some(p)) = (&c.user, &c.password) {
        b = b.credentials(Credentials::new(u.clone(), p.clone()));
    }
    Ok(b.build())
}

/// When a mail is received, in UTC (RFC 3339).
fn when(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| unix.to_string())
}

/// The mail for one received SMS, to `to`.
pub fn compose(c: &EmailConfig, m: &MailDue, to: &[String]) -> Result<Message, MailError> {
    let from: Mailbox = c
        .from
        .parse()
        .map_err(|e| MailError::Address(format!("{}: {e}", c.from)))?;
    let mut b = Message::builder()
        .from(from)
        .subject(format!("SMS from {} on {}", m.sender, m.line))
        .header(ContentType::TEXT_PLAIN);
    for t in to {
        let mb: Mailbox = t
            .parse()
            .map_err(|e| MailError::Address(format!("{t}: {e}")))?;
        b = b.to(mb);
    }
    let body = format!(
        "From: {}\nLine: {}\nReceived: {}\nFor extensions: {}\n\n{}\n",
        m.sender,
        m.line,
        when(m.received_at),
        if m.extensions.is_empty() {
            "-"
        } else {
            &m.extensions
        },
        m.body
    );
    b.body(body).map_err(|e| MailError::Address(e.to_string()))
}

/// A handle that wakes the mail task (after an SMS was stored to be mailed).
#[derive(Debug, Clone)]
pub struct Poke(Arc<Notify>);

impl Poke {
    /// Wakes the task.
    pub fn poke(&self) {
        self.0.notify_one();
    }
}

/// Starts the mail task on the store at `db`.
pub fn start(db: &Path, config: EmailConfig) -> Poke {
    let notify = Arc::new(Notify::new());
    let poke = Poke(notify.clone());
    let db = db.to_path_buf();
    crate::supervise::Supervisor::global().watch(
        "e-mail forwarding".to_owned(),
        tokio::spawn(run(db, config, notify)),
    );
    poke
}

async fn run(db: PathBuf, config: EmailConfig, notify: Arc<Notify>) {
    let mailer = match transport(&config) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("e-mail forwarding off: {e}");
            return;
        }
    };
    tracing::info!(server = %config.server, port = config.port, tls = ?config.tls, "e-mail forwarding of SMS on");
    loop {
        let next = match round(&db, &config, &mailer).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("e-mail forwarding: {e}");
                Some(unix_now() + 5)
            }
        };
        let pause = next
            .map(|t| Duration::from_secs(t.saturating_sub(unix_now()).max(0) as u64))
            .unwrap_or(IDLE_POLL)
            .min(IDLE_POLL);
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Mails what is due; when the next pending mail is due.
async fn round(
    db: &Path,
    config: &EmailConfig,
    mailer: &AsyncSmtpTransport<Tokio1Executor>,
) -> Result<Option<i64>, super::store::StoreError> {
    let store = SmsStore::open(db)?;
    loop {
        let due = store.mail_due(unix_now(), BATCH)?;
        if due.is_empty() {
            break;
        }
        let mut failed_any = false;
        for m in &due {
            let to = config.recipients(&m.line).to_vec();
            let result = if to.is_empty() {
                Err(MailError::Address(format!(
                    "nobody to mail for line {}",
                    m.line
                )))
            } else {
                match compose(config, m, &to) {
                    Ok(mail) => mailer.send(mail).await.map(|_| ()).map_err(MailError::from),
                    Err(e) => Err(e),
                }
            };
            let now = unix_now();
            match result {
                Ok(()) => {
                    tracing::info!(id = m.id, line = %m.line, sender = %m.sender, to = ?to, "SMS mailed");
                    super::metrics::bump(&super::metrics::MAILED);
                    store.mail_sent(m.id, now)?;
                }
                Err(e) => {
                    failed_any = true;
                    super::metrics::bump(&super::metrics::MAIL_FAILURES);
                    let attempts = m.attempts + 1;
                    let retry = (attempts < i64::from(config.max_attempts)).then(|| {
                        let pause = (config.retry_secs as i64)
                            .saturating_mul(1 << (attempts - 1).clamp(0, 16))
                            .min(3600);
                        now + pause
                    });
                    match retry {
                        Some(t) => tracing::warn!(
                            id = m.id,
                            attempts,
                            retry_in = t - now,
                            "SMS not mailed, trying again: {e}"
                        ),
                        None => tracing::error!(
                            id = m.id,
                            attempts,
                            "SMS not mailed, given up (it stays in the store): {e}"
                        ),
                    }
                    store.mail_failed(m.id, &e.to_string(), retry, now)?;
                }
            }
        }
        if failed_any || (due.len() as i64) < BATCH {
            break;
        }
    }
    store.mail_next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mail_says_who_where_when_and_the_exact_text() {
        let c = EmailConfig {
            server: "127.0.0.1".into(),
            port: 25,
            tls: SmtpTls::None,
            user: None,
            password: None,
            from: "Pasarela <gw@example.org>".into(),
            to: vec!["office@example.org".into()],
            line_to: Default::default(),
            retry_secs: 60,
            max_attempts: 3,
        };
        let m = MailDue {
            id: 1,
            line: "gsm1".into(),
            sender: "+491701234567".into(),
            extensions: "101".into(),
            body: "Привет 😀".into(),
            received_at: 1_764_763_200,
            attempts: 0,
        };
        let mail = compose(&c, &m, &c.to).unwrap();
        let raw = String::from_utf8(mail.formatted()).unwrap();
        assert!(
            raw.contains("Subject: SMS from +491701234567 on gsm1"),
            "{raw}"
        );
        assert!(raw.contains("To: office@example.org"), "{raw}");
        assert!(raw.contains("charset=utf-8"), "{raw}");
        assert_eq!(when(1_764_763_200), "2025-12-03 12:00:00 UTC");
    }
}
