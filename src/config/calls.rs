//! `[calls]`: ringing, call length and failover times, mapped onto
//! [`crate::callctl::config::CallsConfig`] with the file:line:key checks.

use super::*;

pub use crate::callctl::config::CallsConfig;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCalls {
    pub(crate) no_answer_secs: Option<u64>,
    pub(crate) max_duration_secs: Option<u64>,
    pub(crate) rtp_timeout_secs: Option<u64>,
    pub(crate) failover_ms: Option<u64>,
    pub(crate) pickup_code: Option<String>,
    pub(crate) group_pickup_code: Option<String>,
}

impl RawCalls {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<CallsConfig> {
        let d = CallsConfig::default();
        Ok(CallsConfig {
            no_answer_secs: positive(
                self.no_answer_secs,
                d.no_answer_secs,
                &at.key("no_answer_secs"),
            )?,
            max_duration_secs: positive(
                self.max_duration_secs,
                d.max_duration_secs,
                &at.key("max_duration_secs"),
            )?,
            rtp_timeout_secs: positive(
                self.rtp_timeout_secs,
                d.rtp_timeout_secs,
                &at.key("rtp_timeout_secs"),
            )?,
            failover_ms: positive(self.failover_ms, d.failover_ms, &at.key("failover_ms"))?,
            pickup_code: pickup_code(self.pickup_code, d.pickup_code, &at.key("pickup_code"))?,
            group_pickup_code: pickup_code(
                self.group_pickup_code,
                d.group_pickup_code,
                &at.key("group_pickup_code"),
            )?,
        })
    }
}

/// A pickup feature code: `*`, `#` and digits, starting with `*` or `#`, at most 8 long, and
/// not clashing with the call forwarding codes.
fn pickup_code(value: Option<String>, default: String, at: &KeyPath) -> Checked<String> {
    let Some(v) = value else {
        return Ok(default);
    };
    crate::routing::pickup::check_code(&v).map_err(|why| invalid(at, why))?;
    Ok(v)
}
