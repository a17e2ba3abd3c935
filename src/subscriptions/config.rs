//! `[subscriptions]`: busy lamps, presence and message-waiting subscriptions (RFC 6665).

use serde::Deserialize;

/// The checked `[subscriptions]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionsConfig {
    /// Shortest subscription accepted, in seconds (shorter ones get 423).
    pub min_expires: u32,
    /// Longest subscription granted, in seconds (longer ones are shortened).
    pub max_expires: u32,
    /// Length of a subscription that asks for none, in seconds.
    pub default_expires: u32,
    /// Subscriptions one extension may hold at once (all its phones together).
    pub max_per_extension: usize,
    /// Subscriptions one phone (one source address and port) may hold at once.
    pub max_per_phone: usize,
    /// Subscriptions of the whole office at once.
    pub max_total: usize,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        SubscriptionsConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_per_extension: 200,
            max_per_phone: 100,
            max_total: 10_000,
        }
    }
}

/// `[subscriptions]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubscriptions {
    min_expires: Option<u32>,
    max_expires: Option<u32>,
    default_expires: Option<u32>,
    max_per_extension: Option<usize>,
    max_per_phone: Option<usize>,
    max_total: Option<usize>,
}

impl RawSubscriptions {
    /// The settings, or the key that is wrong and why.
    pub fn validate(self) -> Result<SubscriptionsConfig, (&'static str, String)> {
        let d = SubscriptionsConfig::default();
        let c = SubscriptionsConfig {
            min_expires: self.min_expires.unwrap_or(d.min_expires),
            max_expires: self.max_expires.unwrap_or(d.max_expires),
            default_expires: self.default_expires.unwrap_or(d.default_expires),
            max_per_extension: self.max_per_extension.unwrap_or(d.max_per_extension),
            max_per_phone: self.max_per_phone.unwrap_or(d.max_per_phone),
            max_total: self.max_total.unwrap_or(d.max_total),
        };
        if c.min_expires == 0 {
            return Err(("min_expires", "must be at least 1".into()));
        }
        if c.max_expires < c.min_expires {
            return Err(("max_expires", "must not be below min_expires".into()));
        }
        if !(c.min_expires..=c.max_expires).contains(&c.default_expires) {
            return Err((
                "default_expires",
                "must lie between min_expires and max_expires".into(),
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let raw: RawSubscriptions = toml::from_str("").unwrap();
        assert_eq!(raw.validate().unwrap(), SubscriptionsConfig::default());
        let raw: RawSubscriptions = toml::from_str("min_expires = 600\nmax_expires = 300").unwrap();
        assert_eq!(raw.validate().unwrap_err().0, "max_expires");
        assert!(toml::from_str::<RawSubscriptions>("nonsense = 1").is_err());
    }
}
