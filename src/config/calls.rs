//! `[calls]`: ringing, call length and failover times.

use super::*;

/// `[calls]`: limits on calls.
#[derive(Debug, Clone, PartialEq)]
pub struct CallsConfig {
    /// Ringing time before a call is given up, in seconds (`no_answer_secs`, default 60).
    pub no_answer_secs: u64,
    /// Longest call, in seconds (`max_duration_secs`, default 14400).
    pub max_duration_secs: u64,
    /// A call with no RTP from either side for this long is hung up (`rtp_timeout_secs`, default 60).
    pub rtp_timeout_secs: u64,
    /// A route step (an ENUM target, a trunk) that has not answered at all after this many
    /// milliseconds is given up for the next one (`failover_ms`, default 4000).
    pub failover_ms: u64,
    /// The prefix of directed call pickup (`pickup_code`, default `**`: `**101`).
    pub pickup_code: String,
    /// Group call pickup (`group_pickup_code`, default `*8`).
    pub group_pickup_code: String,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            no_answer_secs: 60,
            max_duration_secs: 14_400,
            rtp_timeout_secs: 60,
            failover_ms: 4000,
            pickup_code: "**".into(),
            group_pickup_code: "*8".into(),
        }
    }
}

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
