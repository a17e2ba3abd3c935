//! Process diagnostics: installs the global `tracing` subscriber (human-readable, to stderr;
//! without timestamps when stderr is the systemd journal, `JOURNAL_STREAM`).
//!
//! The filter comes from `RUST_LOG` when that is set and non-empty, otherwise from the
//! `log.level` config key (a level such as `info`, or directives such as
//! `info,pasarela::sip=debug`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` or `log.level` is not a valid filter.
    #[error("invalid log filter `{filter}` (from {origin}): {message}")]
    Filter {
        /// The text that failed to parse.
        filter: String,
        /// Where it came from: `RUST_LOG` or `log.level`.
        origin: &'static str,
        /// The parser's complaint.
        message: String,
    },
    /// A global subscriber is already installed.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Builds the filter: `rust_log` (the value of `RUST_LOG`) wins when set and non-empty,
/// otherwise `config.level` is used.
pub fn filter(rust_log: Option<&str>, config: &LogConfig) -> Result<EnvFilter, LoggingError> {
    let (text, origin) = match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => (s, "RUST_LOG"),
        None => (config.level.trim(), "log.level"),
    };
    EnvFilter::builder()
        .parse(text)
        .map_err(|e| LoggingError::Filter {
            filter: text.to_owned(),
            origin,
            message: e.to_string(),
        })
}

/// Installs the global subscriber, writing to stderr, filtered per [`filter`] with the
/// process's `RUST_LOG`. Colours are used only when stderr is a terminal and `NO_COLOR` is
/// unset (so journald and log files get plain text).
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(rust_log.as_deref(), config)?;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // Under systemd, stderr goes to the journal, which stamps every line itself.
    let result = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    result.map_err(|e| LoggingError::Install(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(s: &str) -> LogConfig {
        LogConfig {
            level: s.to_owned(),
        }
    }

    #[test]
    fn config_level_used_without_rust_log() {
        let f = filter(None, &level("debug")).unwrap();
        assert_eq!(f.to_string(), "debug");
        let f = filter(Some("  "), &level("WARN")).unwrap();
        assert_eq!(f.to_string(), "warn");
        let f = filter(None, &level("info,pasarela::sip=trace")).unwrap();
        assert!(f.to_string().contains("pasarela::sip=trace"), "{f}");
    }

    #[test]
    fn rust_log_wins() {
        let f = filter(Some("trace"), &level("info")).unwrap();
        assert_eq!(f.to_string(), "trace");
    }

    #[test]
    fn bad_filters_are_reported() {
        let err = filter(Some("pasarela=loud"), &level("info")).unwrap_err();
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
        let err = filter(None, &level("a=b=c")).unwrap_err();
        assert!(err.to_string().contains("log.level"), "{err}");
    }
}
