//! `[sms]`: how text messages are handled (reassembly, sending limits, price, retries, and the
//! optional forwarding of received SMS by e-mail).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The checked `[sms]` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsConfig {
    /// A long message whose parts stop coming is stored with what arrived after this long.
    pub reassembly_secs: u64,
    /// SMS one extension may send per hour (0: none).
    pub max_per_hour: u32,
    /// What one part costs, for the record.
    pub price_per_part: Option<f64>,
    /// First pause before a failed send is tried again (doubled each time, at most an hour).
    pub retry_secs: u64,
    /// Attempts before an SMS is given up.
    pub max_attempts: u32,
    /// Forwarding of received SMS by e-mail (`smtp_server` set).
    pub email: Option<EmailConfig>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            reassembly_secs: 300,
            max_per_hour: 30,
            price_per_part: None,
            retry_secs: 30,
            max_attempts: 5,
            email: None,
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain SMTP (a relay on the same host or network).
    None,
    /// STARTTLS, required (submission, port 587).
    StartTls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
}

/// E-mail forwarding of received SMS.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailConfig {
    /// The SMTP server's host name (also the name its certificate must carry).
    pub server: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Login, when the server wants one.
    pub user: Option<String>,
    pub password: Option<String>,
    /// The From address.
    pub from: String,
    /// Recipients of every line's SMS.
    pub to: Vec<String>,
    /// Recipients by line (instead of `to` for that line).
    pub line_to: BTreeMap<String, Vec<String>>,
    /// First pause before a failed mail is tried again (doubled each time, at most an hour).
    pub retry_secs: u64,
    /// Attempts before a mail is given up (the SMS stays in the store).
    pub max_attempts: u32,
}

impl EmailConfig {
    /// Who gets the SMS that came in on `line` (none: not forwarded).
    pub fn recipients(&self, line: &str) -> &[String] {
        self.line_to.get(line).unwrap_or(&self.to)
    }
}

/// `[sms]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSms {
    reassembly_secs: Option<u64>,
    max_per_hour: Option<u32>,
    price_per_part: Option<f64>,
    retry_secs: Option<u64>,
    max_attempts: Option<u32>,
    smtp_server: Option<String>,
    smtp_port: Option<u16>,
    smtp_tls: Option<String>,
    smtp_user: Option<String>,
    smtp_password: Option<String>,
    email_from: Option<String>,
    email_to: Option<Vec<String>>,
    email_line_to: Option<BTreeMap<String, Vec<String>>>,
    email_retry_secs: Option<u64>,
    email_max_attempts: Option<u32>,
}

fn mailbox_ok(s: &str) -> bool {
    s.parse::<lettre::message::Mailbox>().is_ok()
}

impl RawSms {
    /// The settings, or the key that is wrong and why.
    pub fn validate(self) -> Result<SmsConfig, (&'static str, String)> {
        let d = SmsConfig::default();
        let email = self.email()?;
        let c = SmsConfig {
            reassembly_secs: self.reassembly_secs.unwrap_or(d.reassembly_secs),
            max_per_hour: self.max_per_hour.unwrap_or(d.max_per_hour),
            price_per_part: self.price_per_part,
            retry_secs: self.retry_secs.unwrap_or(d.retry_secs),
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            email,
        };
        if c.reassembly_secs == 0 {
            return Err(("reassembly_secs", "must be at least 1".into()));
        }
        if c.retry_secs == 0 {
            return Err(("retry_secs", "must be at least 1".into()));
        }
        if c.max_attempts == 0 {
            return Err(("max_attempts", "must be at least 1".into()));
        }
        if c.price_per_part.is_some_and(|p| !p.is_finite() || p < 0.0) {
            return Err(("price_per_part", "must be a price of 0 or more".into()));
        }
        Ok(c)
    }

    fn email(&self) -> Result<Option<EmailConfig>, (&'static str, String)> {
        let Some(server) = self.smtp_server.as_deref().map(str::trim) else {
            let set = self.email_from.is_some()
                || self.email_to.is_some()
                || self.email_line_to.is_some()
                || self.smtp_user.is_some();
            return if set {
                Err((
                    "smtp_server",
                    "e-mail forwarding needs the SMTP server".into(),
                ))
            } else {
                Ok(None)
            };
        };
        if server.is_empty() || server.contains(char::is_whitespace) {
            return Err(("smtp_server", "must be a host name or address".into()));
        }
        let tls = match self.smtp_tls.as_deref().unwrap_or("starttls") {
            "none" => SmtpTls::None,
            "starttls" => SmtpTls::StartTls,
            "tls" => SmtpTls::Tls,
            other => return Err(("smtp_tls", format!("`{other}`: one of none, starttls, tls"))),
        };
        let port = self.smtp_port.unwrap_or(587);
        if port == 0 {
            return Err(("smtp_port", "must be a port number".into()));
        }
        let from = self.email_from.clone().unwrap_or_default();
        if !mailbox_ok(&from) {
            return Err(("email_from", format!("`{from}` is not an e-mail address")));
        }
        let to = self.email_to.clone().unwrap_or_default();
        let line_to = self.email_line_to.clone().unwrap_or_default();
        for a in to.iter().chain(line_to.values().flatten()) {
            if !mailbox_ok(a) {
                return Err(("email_to", format!("`{a}` is not an e-mail address")));
            }
        }
        if to.is_empty() && line_to.values().all(Vec::is_empty) {
            return Err(("email_to", "name who gets the SMS".into()));
        }
        if self.smtp_user.is_some() != self.smtp_password.is_some() {
            return Err((
                "smtp_password",
                "give smtp_user and smtp_password together".into(),
            ));
        }
        let retry_secs = self.email_retry_secs.unwrap_or(60);
        if retry_secs == 0 {
            return Err(("email_retry_secs", "must be at least 1".into()));
        }
        let max_attempts = self.email_max_attempts.unwrap_or(30);
        if max_attempts == 0 {
            return Err(("email_max_attempts", "must be at least 1".into()));
        }
        Ok(Some(EmailConfig {
            server: server.to_owned(),
            port,
            tls,
            user: self.smtp_user.clone(),
            password: self.smtp_password.clone(),
            from,
            to,
            line_to,
            retry_secs,
            max_attempts,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SmsConfig, (&'static str, String)> {
        toml::from_str::<RawSms>(text).unwrap().validate()
    }

    #[test]
    fn email_forwarding_settings() {
        assert_eq!(parse("").unwrap().email, None);
        let c = parse(
            "smtp_server = \"mail.example.org\"\nemail_from = \"Pasarela <gw@example.org>\"\n\
             email_to = [\"office@example.org\"]\nemail_line_to = { gsm2 = [\"sales@example.org\"] }",
        )
        .unwrap()
        .email
        .unwrap();
        assert_eq!((c.port, c.tls), (587, SmtpTls::StartTls));
        assert_eq!(c.recipients("gsm1"), ["office@example.org".to_string()]);
        assert_eq!(c.recipients("gsm2"), ["sales@example.org".to_string()]);
        assert_eq!(
            parse("email_to = [\"a@b.c\"]").unwrap_err().0,
            "smtp_server"
        );
        assert_eq!(
            parse("smtp_server = \"m\"\nemail_from = \"nobody\"\nemail_to = [\"a@b.c\"]")
                .unwrap_err()
                .0,
            "email_from"
        );
        assert_eq!(
            parse("smtp_server = \"m\"\nemail_from = \"x@y.z\"")
                .unwrap_err()
                .0,
            "email_to"
        );
        assert_eq!(
            parse("smtp_server = \"m\"\nsmtp_tls = \"ssl\"\nemail_from = \"x@y.z\"\nemail_to = [\"a@b.c\"]")
                .unwrap_err()
                .0,
            "smtp_tls"
        );
    }
}
