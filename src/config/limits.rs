//! `[limits]`: call and connection limits per extension, source and line (toll fraud), mapped
//! onto [`crate::callctl::limits::LimitsConfig`] with the file:line:key checks.

use super::*;

pub use crate::callctl::limits::{CallLimits, LimitsConfig};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCallLimits {
    pub(crate) concurrent_calls: Option<u32>,
    pub(crate) calls_per_minute: Option<u32>,
    pub(crate) minutes_per_day: Option<u32>,
    pub(crate) minutes_per_month: Option<u32>,
    pub(crate) cost_per_day: Option<f64>,
    pub(crate) cost_per_month: Option<f64>,
}

impl RawCallLimits {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<CallLimits> {
        let money = |v: Option<f64>, key: &str| -> Checked<Option<i64>> {
            match v {
                None => Ok(None),
                Some(x) if x.is_finite() && (0.0..=1e12).contains(&x) => {
                    Ok(Some((x * 100.0).round() as i64))
                }
                Some(_) => Err(invalid(
                    &at.key(key),
                    "must be an amount of money, 0 or more",
                )),
            }
        };
        Ok(CallLimits {
            concurrent_calls: self.concurrent_calls,
            calls_per_minute: self.calls_per_minute,
            minutes_per_day: self.minutes_per_day,
            minutes_per_month: self.minutes_per_month,
            cost_per_day: money(self.cost_per_day, "cost_per_day")?,
            cost_per_month: money(self.cost_per_month, "cost_per_month")?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub(crate) concurrent_calls: Option<u32>,
    pub(crate) calls_per_minute: Option<u32>,
    pub(crate) minutes_per_day: Option<u32>,
    pub(crate) minutes_per_month: Option<u32>,
    pub(crate) cost_per_day: Option<f64>,
    pub(crate) cost_per_month: Option<f64>,
    pub(crate) tcp_connections: Option<usize>,
    pub(crate) tcp_connections_per_source: Option<usize>,
    pub(crate) tcp_first_request_secs: Option<u64>,
    pub(crate) server_transactions: Option<usize>,
    pub(crate) web_connections: Option<usize>,
    pub(crate) web_connections_per_source: Option<usize>,
    pub(crate) web_header_timeout_secs: Option<u64>,
    pub(crate) queue_delay_ms: Option<u64>,
    pub(crate) max_calls: Option<usize>,
    #[serde(default)]
    pub(crate) extension: std::collections::BTreeMap<String, RawCallLimits>,
    #[serde(default)]
    pub(crate) trunk: std::collections::BTreeMap<String, RawCallLimits>,
}

impl RawLimits {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<LimitsConfig> {
        let d = LimitsConfig::default();
        let own = RawCallLimits {
            concurrent_calls: self.concurrent_calls,
            calls_per_minute: self.calls_per_minute,
            minutes_per_day: self.minutes_per_day,
            minutes_per_month: self.minutes_per_month,
            cost_per_day: self.cost_per_day,
            cost_per_month: self.cost_per_month,
        }
        .validate(at)?;
        let mut extensions = Vec::new();
        for (number, raw) in self.extension {
            let here = at.key("extension").key(&number);
            if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(&here, "must be an extension number (digits)"));
            }
            extensions.push((number, raw.validate(&here)?));
        }
        let mut trunks = Vec::new();
        for (name, raw) in self.trunk {
            let here = at.key("trunk").key(&name);
            trunks.push((name, raw.validate(&here)?));
        }
        Ok(LimitsConfig {
            extension_defaults: own.or(d.extension_defaults),
            extensions,
            trunks,
            tcp_connections: positive(
                self.tcp_connections,
                d.tcp_connections,
                &at.key("tcp_connections"),
            )?,
            tcp_connections_per_source: positive(
                self.tcp_connections_per_source,
                d.tcp_connections_per_source,
                &at.key("tcp_connections_per_source"),
            )?,
            tcp_first_request_secs: positive(
                self.tcp_first_request_secs,
                d.tcp_first_request_secs,
                &at.key("tcp_first_request_secs"),
            )?,
            server_transactions: positive(
                self.server_transactions,
                d.server_transactions,
                &at.key("server_transactions"),
            )?,
            web_connections: positive(
                self.web_connections,
                d.web_connections,
                &at.key("web_connections"),
            )?,
            web_connections_per_source: positive(
                self.web_connections_per_source,
                d.web_connections_per_source,
                &at.key("web_connections_per_source"),
            )?,
            web_header_timeout_secs: positive(
                self.web_header_timeout_secs,
                d.web_header_timeout_secs,
                &at.key("web_header_timeout_secs"),
            )?,
            queue_delay_ms: positive(
                self.queue_delay_ms,
                d.queue_delay_ms,
                &at.key("queue_delay_ms"),
            )?,
            max_calls: match self.max_calls {
                None => None,
                v => Some(positive(v, 0, &at.key("max_calls"))?),
            },
        })
    }
}
