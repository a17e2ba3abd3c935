//! Why a PSTN call ended, and the SIP status the caller's leg gets for it: the network's Q.850
//! cause (3GPP TS 24.008 §10.5.4.11 uses the same numbers) mapped after RFC 3398 §7.2.4.1,
//! with the modem's own results (`BUSY`, `NO ANSWER`, a modem that vanished) mapped alike. The
//! cause is kept with the call for its record.

use std::fmt;

/// What ended a call, in the gateway's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The call was answered and one side hung up normally.
    Normal,
    /// The callee was busy.
    Busy,
    /// Nobody answered.
    NoAnswer,
    /// The callee (or the network for it) refused the call.
    Rejected,
    /// The number does not exist or is badly formed.
    BadNumber,
    /// No network, congestion, a modem error: the PSTN side failed.
    NetworkFailure,
    /// The modem stopped answering or its port vanished during the call.
    ModemLost,
    /// We hung up (the SIP side ended the call).
    LocalHangup,
    /// An incoming caller gave up before the call was answered.
    CallerGaveUp,
}

/// How a call ended: reason, network cause and the SIP status for an unanswered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndCause {
    /// The gateway's reason.
    pub reason: EndReason,
    /// Q.850 cause from the network (Huawei `^CEND`), or the one that stands for `reason`.
    pub q850: u16,
    /// SIP status for the caller's leg if the call was never answered (486, 480, 404, 503 …);
    /// 200 when it was answered (the leg gets a BYE, not a final response).
    pub sip_status: u16,
    /// Whether the call had been answered.
    pub answered: bool,
    /// The call's duration as the network counted it (Huawei `^CEND`), for billing checks.
    pub network_secs: Option<u32>,
}

impl EndCause {
    /// From a network Q.850 cause.
    pub fn from_q850(q850: u16, answered: bool) -> EndCause {
        let reason = match q850 {
            16 | 31 if answered => EndReason::Normal,
            17 => EndReason::Busy,
            18 | 19 | 16 | 31 => EndReason::NoAnswer,
            21 | 20 => EndReason::Rejected,
            1 | 3 | 22 | 28 => EndReason::BadNumber,
            _ => EndReason::NetworkFailure,
        };
        let sip_status = if answered { 200 } else { q850_to_sip(q850) };
        EndCause {
            reason,
            q850,
            sip_status,
            answered,
            network_secs: None,
        }
    }

    /// From the gateway's reason, with the Q.850 cause that stands for it.
    pub fn from_reason(reason: EndReason, answered: bool) -> EndCause {
        let q850 = match reason {
            EndReason::Normal | EndReason::LocalHangup => 16,
            EndReason::Busy => 17,
            EndReason::NoAnswer => 19,
            EndReason::Rejected => 21,
            EndReason::BadNumber => 28,
            EndReason::NetworkFailure => 38,
            EndReason::ModemLost => 41,
            EndReason::CallerGaveUp => 16,
        };
        let sip_status = if answered {
            200
        } else {
            match reason {
                EndReason::LocalHangup | EndReason::CallerGaveUp => 487,
                _ => q850_to_sip(q850),
            }
        };
        EndCause {
            reason,
            q850,
            sip_status,
            answered,
            network_secs: None,
        }
    }
}

impl fmt::Display for EndCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} (Q.850 {}, SIP {})",
            self.reason, self.q850, self.sip_status
        )
    }
}

/// RFC 3398 §7.2.4.1 (ISUP cause → SIP status), with 16/18/19/31 before answer as 480: on a
/// mobile network "no user responding" is what an unanswered phone gives.
pub fn q850_to_sip(q850: u16) -> u16 {
    match q850 {
        1..=3 => 404,
        17 => 486,
        16 | 18 | 19 | 31 => 480,
        20 => 480,
        21 => 403,
        22 => 410,
        23 => 410,
        26 => 404,
        27 => 502,
        28 => 484,
        29 => 501,
        34 | 38 | 41 | 42 | 44 | 47 => 503,
        55 | 57 => 403,
        58 => 503,
        65 => 488,
        69 => 501,
        70 => 488,
        79 => 501,
        87 => 403,
        88 => 503,
        102 => 504,
        111 => 500,
        127 => 500,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_mappings() {
        assert_eq!(EndCause::from_q850(17, false).sip_status, 486);
        assert_eq!(EndCause::from_q850(19, false).sip_status, 480);
        assert_eq!(EndCause::from_q850(18, false).sip_status, 480);
        assert_eq!(EndCause::from_q850(38, false).sip_status, 503);
        assert_eq!(
            EndCause::from_q850(34, false).reason,
            EndReason::NetworkFailure
        );
        assert_eq!(EndCause::from_q850(16, true).reason, EndReason::Normal);
        assert_eq!(EndCause::from_q850(16, true).sip_status, 200);
        assert_eq!(EndCause::from_q850(1, false).sip_status, 404);
        assert_eq!(
            EndCause::from_reason(EndReason::Busy, false).sip_status,
            486
        );
        assert_eq!(
            EndCause::from_reason(EndReason::NoAnswer, false).sip_status,
            480
        );
        assert_eq!(
            EndCause::from_reason(EndReason::ModemLost, false).sip_status,
            503
        );
        assert_eq!(
            EndCause::from_reason(EndReason::NetworkFailure, false).sip_status,
            503
        );
        assert_eq!(
            EndCause::from_reason(EndReason::LocalHangup, false).sip_status,
            487
        );
    }
}
