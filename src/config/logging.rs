//! `[log]`: log levels, mapped onto [`crate::logging::LogConfig`].

use super::*;

pub use crate::logging::LogConfig;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub(crate) level: Option<String>,
}

pub(crate) const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

impl RawLog {
    pub(crate) fn validate(self, at: &KeyPath) -> Checked<LogConfig> {
        let Some(level) = self.level else {
            return Ok(LogConfig::default());
        };
        let here = at.key("level");
        let plain = LEVELS.contains(&level.to_ascii_lowercase().as_str());
        let directives = (level.contains('=') || level.contains(','))
            && tracing_subscriber::EnvFilter::builder()
                .parse(&level)
                .is_ok();
        if plain || directives {
            Ok(LogConfig { level })
        } else {
            Err(invalid(
                &here,
                format!(
                    "`{level}` is not a log level (one of {}) nor a filter such as `info,pasarela::sip=debug`",
                    LEVELS.join(", ")
                ),
            ))
        }
    }
}
