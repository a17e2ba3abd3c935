//! `[sms]`: how text messages are handled (reassembly, sending limits, price, retries).

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
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            reassembly_secs: 300,
            max_per_hour: 30,
            price_per_part: None,
            retry_secs: 30,
            max_attempts: 5,
        }
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
}

impl RawSms {
    /// The settings, or the key that is wrong and why.
    pub fn validate(self) -> Result<SmsConfig, (&'static str, String)> {
        let d = SmsConfig::default();
        let c = SmsConfig {
            reassembly_secs: self.reassembly_secs.unwrap_or(d.reassembly_secs),
            max_per_hour: self.max_per_hour.unwrap_or(d.max_per_hour),
            price_per_part: self.price_per_part,
            retry_secs: self.retry_secs.unwrap_or(d.retry_secs),
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
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
}
