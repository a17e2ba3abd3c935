//! The toll-fraud limits of a dashboard PSTN line (modem or FXO), kept with the line's
//! settings (`"limits"` in their JSON): the keys a `[limits.trunk.NAME]` table of the file has
//! for a `[[modem]]` or `[[fxo]]` line, checked as the file checks them, so a limit means the
//! same wherever it was written. 0 means "no limit", as in the file.

use serde::{Deserialize, Serialize};

use super::trunks::FieldError;

/// The limit keys of one line, as typed (money in the rate tables' currency, `5.0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LineLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent_calls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minutes_per_day: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minutes_per_month: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_day: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_month: Option<f64>,
}

/// The limit keys, in the order the page shows them.
pub const KEYS: [&str; 6] = [
    "concurrent_calls",
    "calls_per_minute",
    "minutes_per_day",
    "minutes_per_month",
    "cost_per_day",
    "cost_per_month",
];

impl LineLimits {
    /// No limit set (nothing to store).
    pub fn is_unset(&self) -> bool {
        *self == LineLimits::default()
    }

    /// Checks the amounts of money: one that is negative or not a number names its key.
    pub fn check(&self) -> Result<(), FieldError> {
        for (v, field) in [
            (self.cost_per_day, "cost_per_day"),
            (self.cost_per_month, "cost_per_month"),
        ] {
            if let Some(x) = v {
                if !(x.is_finite() && (0.0..=1e12).contains(&x)) {
                    return Err(FieldError {
                        field: field.to_owned(),
                        message: format!("`{x}` is not an amount of money, 0 or more"),
                    });
                }
            }
        }
        Ok(())
    }

    /// An amount of money in minor units (`5.5` → 550), as the limits count it.
    pub fn minor(amount: Option<f64>) -> Option<i64> {
        amount.map(|x| (x * 100.0).round() as i64)
    }

    /// The limits typed in a form, one text per key of [`KEYS`] (empty: not set); a value
    /// that is not a number names its key.
    pub fn from_texts(texts: [&str; 6]) -> Result<LineLimits, FieldError> {
        let [cc, cpm, mpd, mpm, cpd, cpmo] = texts;
        let whole = |field: &str, v: &str| -> Result<Option<u32>, FieldError> {
            match v.trim() {
                "" => Ok(None),
                v => v.parse().map(Some).map_err(|_| FieldError {
                    field: field.to_owned(),
                    message: format!("`{v}` is not a whole number, 0 or more"),
                }),
            }
        };
        let money = |field: &str, v: &str| -> Result<Option<f64>, FieldError> {
            match v.trim() {
                "" => Ok(None),
                v => v.parse::<f64>().map(Some).map_err(|_| FieldError {
                    field: field.to_owned(),
                    message: format!("`{v}` is not an amount of money"),
                }),
            }
        };
        let limits = LineLimits {
            concurrent_calls: whole("concurrent_calls", cc)?,
            calls_per_minute: whole("calls_per_minute", cpm)?,
            minutes_per_day: whole("minutes_per_day", mpd)?,
            minutes_per_month: whole("minutes_per_month", mpm)?,
            cost_per_day: money("cost_per_day", cpd)?,
            cost_per_month: money("cost_per_month", cpmo)?,
        };
        limits.check()?;
        Ok(limits)
    }

    /// The texts of a form showing these limits, in the order of [`KEYS`].
    pub fn texts(&self) -> [String; 6] {
        let n = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_default();
        let m = |v: Option<f64>| v.map(|n| n.to_string()).unwrap_or_default();
        [
            n(self.concurrent_calls),
            n(self.calls_per_minute),
            n(self.minutes_per_day),
            n(self.minutes_per_month),
            m(self.cost_per_day),
            m(self.cost_per_month),
        ]
    }
}

/// The label of a limit key on the page (`None`: not a limit key).
pub fn label(field: &str) -> Option<&'static str> {
    Some(match field {
        "concurrent_calls" => "Calls at once",
        "calls_per_minute" => "Calls per minute",
        "minutes_per_day" => "Minutes per day",
        "minutes_per_month" => "Minutes per month",
        "cost_per_day" => "Cost per day",
        "cost_per_month" => "Cost per month",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_like_the_file_and_name_their_key() {
        let l = LineLimits::from_texts(["2", "", "", "600", "5.5", ""]).unwrap();
        assert_eq!(l.concurrent_calls, Some(2));
        assert_eq!(l.minutes_per_month, Some(600));
        l.check().unwrap();
        assert_eq!(LineLimits::minor(l.cost_per_day), Some(550));
        assert_eq!(l.calls_per_minute, None);
        assert_eq!(l.texts()[4], "5.5");
        assert!(LineLimits::from_texts(["", "", "", "", "", ""])
            .unwrap()
            .is_unset());
        let e = LineLimits::from_texts(["two", "", "", "", "", ""]).unwrap_err();
        assert_eq!(e.field, "concurrent_calls");
        let e = LineLimits::from_texts(["", "", "", "", "", "-1"]).unwrap_err();
        assert_eq!(e.field, "cost_per_month");
        let json: LineLimits = serde_json::from_str(r#"{"concurrent_calls":1}"#).unwrap();
        assert_eq!(json.concurrent_calls, Some(1));
        assert!(serde_json::from_str::<LineLimits>(r#"{"channels":1}"#).is_err());
    }
}
