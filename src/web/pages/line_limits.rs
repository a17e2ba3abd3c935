//! The limits fields of the modem and FXO line forms on the Lines page: a line's toll-fraud
//! limits ([`crate::store::line_limits`]) as typed, the same six keys as a
//! `[limits.trunk.NAME]` table of the file.

use serde::Deserialize;

use crate::store::line_limits::LineLimits;
use crate::store::trunks::FieldError;

/// The limit fields of a line form (empty: no limit; part of the form it is flattened into).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LimitForm {
    pub concurrent_calls: String,
    pub calls_per_minute: String,
    pub minutes_per_day: String,
    pub minutes_per_month: String,
    pub cost_per_day: String,
    pub cost_per_month: String,
}

impl LimitForm {
    /// The fields showing stored limits.
    pub fn of(l: &LineLimits) -> LimitForm {
        let [concurrent_calls, calls_per_minute, minutes_per_day, minutes_per_month, cost_per_day, cost_per_month] =
            l.texts();
        LimitForm {
            concurrent_calls,
            calls_per_minute,
            minutes_per_day,
            minutes_per_month,
            cost_per_day,
            cost_per_month,
        }
    }

    /// The limits typed; a field that is not a number names itself.
    pub fn limits(&self) -> Result<LineLimits, FieldError> {
        LineLimits::from_texts([
            &self.concurrent_calls,
            &self.calls_per_minute,
            &self.minutes_per_day,
            &self.minutes_per_month,
            &self.cost_per_day,
            &self.cost_per_month,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::super::modem_lines::ModemForm;

    #[test]
    fn the_limit_fields_of_a_posted_line_form_are_read() {
        let f: ModemForm = serde_urlencoded::from_str(
            "csrf=x&name=gsm2&data_port=%2Fdev%2FttyUSB2&audio_port=%2Fdev%2FttyUSB1\
             &concurrent_calls=1&cost_per_day=2.5&enabled=1",
        )
        .unwrap();
        assert_eq!(f.name, "gsm2");
        let s = f.settings().unwrap();
        assert_eq!(s.limits.concurrent_calls, Some(1));
        assert_eq!(s.limits.cost_per_day, Some(2.5));
        let f: ModemForm = serde_urlencoded::from_str("name=gsm2&minutes_per_day=lots").unwrap();
        assert_eq!(f.settings().unwrap_err().field, "minutes_per_day");
    }
}
