//! The PSTN lines in `serve` (GSM modems, FXO ports): starts the [`LinePool`], adds one
//! router trunk per line ([`crate::pstn::routes`]: call control dials the line the trunk
//! names), tells the SIP core which lines there are and which extensions their calls ring,
//! shows the lines on the live page, and stops them on exit. The calls themselves are legs of
//! call control, carried out by [`super::line_legs`].

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::pstn::routes::{line_trunks, named_line_trunks};
use crate::pstn::{IncomingLineCall, LinePool, LineState as ModemState};

use crate::live::LineState;

pub use crate::callctl::LineInfo;

/// The PSTN lines of a `serve` process.
pub struct ModemLines {
    pool: Arc<LinePool>,
    lines: Vec<LineInfo>,
}

impl ModemLines {
    /// The running lines.
    pub fn pool(&self) -> Arc<LinePool> {
        Arc::clone(&self.pool)
    }

    /// The lines and the extensions their calls ring, for the SIP core.
    pub fn infos(&self) -> Vec<LineInfo> {
        self.lines.clone()
    }

    /// The calls arriving on every line (once).
    pub fn take_incoming(&self) -> mpsc::Receiver<IncomingLineCall> {
        self.pool.take_incoming()
    }

    /// Starts the lines of `config` (none: `None`); the lines are appended to
    /// `config.trunks` so that the router tries them after the SIP trunks.
    pub async fn prepare(config: &mut Config) -> anyhow::Result<Option<ModemLines>> {
        if !config.modems.iter().any(|m| m.enabled) && config.fxo.is_empty() {
            return Ok(None);
        }
        let mut pool = LinePool::spawn(&config.modems);
        // Analog FXO ports come after the modems, in configuration order.
        for f in &config.fxo {
            pool.add(
                Arc::new(crate::pstn::dahdi::port::FxoPort::spawn(f)),
                f.incoming.clone(),
            );
        }
        let pool = Arc::new(pool);
        config.trunks.extend(line_trunks(&config.modems));
        // An analog line dials what a person would dial there: national numbers with the
        // national prefix, others with the international one.
        let fxo_trunks = named_line_trunks(config.fxo.iter().map(|f| f.settings.name.as_str()))
            .into_iter()
            .map(|mut t| {
                t.number_format = crate::config::NumberFormat::National;
                t
            });
        config.trunks.extend(fxo_trunks);
        let lines = config
            .modems
            .iter()
            .filter(|m| m.enabled)
            .map(|m| LineInfo {
                name: m.line.line.name.clone(),
                extensions: m.incoming.clone(),
            })
            .chain(config.fxo.iter().map(|f| LineInfo {
                name: f.settings.name.clone(),
                extensions: f.incoming.clone(),
            }))
            .collect();
        tracing::info!(
            modems = config.modems.len(),
            fxo = config.fxo.len(),
            "PSTN lines started"
        );
        Ok(Some(ModemLines { pool, lines }))
    }

    /// The lines as the live page shows them.
    pub fn live(&self) -> Vec<LineState> {
        self.pool
            .lines()
            .iter()
            .map(|line| {
                let s = line.status();
                if line.kind() == super::line_health::FXO_KIND {
                    return LineState {
                        kind: line.kind().into(),
                        state: super::line_health::fxo_state(&s).into(),
                        detail: super::line_health::fxo_detail(&s),
                        name: s.name,
                    };
                }
                let state = match s.state {
                    ModemState::Idle => "ready",
                    ModemState::Dialling | ModemState::Alerting | ModemState::Incoming => "ringing",
                    ModemState::Active => "in call",
                    ModemState::Down => "down",
                    ModemState::Initialising => "starting",
                    ModemState::Failed => "failed",
                    ModemState::Resetting => "resetting",
                    ModemState::Alarm => "alarm",
                };
                let detail = format!(
                    "{op}, signal {sig}, IMEI {imei}{err}",
                    op = s.operator.as_deref().unwrap_or("no operator"),
                    sig = s
                        .signal_dbm
                        .map(|d| format!("{d} dBm"))
                        .unwrap_or_else(|| "unknown".into()),
                    imei = s.imei.as_deref().unwrap_or("-"),
                    err = s
                        .last_error
                        .as_deref()
                        .map(|e| format!(", last error: {e}"))
                        .unwrap_or_default(),
                );
                LineState {
                    name: s.name,
                    kind: line.kind().into(),
                    state: state.into(),
                    detail,
                }
            })
            .collect()
    }

    /// Stops the lines.
    pub async fn shutdown(self) {
        self.pool.shutdown().await;
    }
}
