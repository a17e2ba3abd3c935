//! `[log]`: log levels.

use super::*;

/// `[log]`: diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// A level (`off`, `error`, `warn`, `info`, `debug`, `trace`) or a `tracing` filter directive
    /// list such as `"info,pasarela::sip=debug"` (`level`, default `info`).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
        }
    }
}

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
