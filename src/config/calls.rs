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
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            no_answer_secs: 60,
            max_duration_secs: 14_400,
            rtp_timeout_secs: 60,
            failover_ms: 4000,
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
        })
    }
}
