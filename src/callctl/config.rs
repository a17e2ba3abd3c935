//! `[calls]` as call control takes it: ringing, call length, failover times and the pickup
//! codes. `config::calls` maps the file onto it with the file:line:key checks.

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
