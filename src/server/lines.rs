//! The PSTN lines in `serve` (GSM modems, FXO ports): starts the [`LinePool`], adds one
//! router trunk per line ([`crate::pstn::routes`]: call control dials the line the trunk
//! names), tells the SIP core which lines there are and which extensions their calls ring,
//! shows the lines on the live page, and stops them on exit. The calls themselves are legs of
//! call control, carried out by [`super::line_legs`].

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::{Config, TrunkConfig};
use crate::pstn::dahdi::config::FxoConfig;
use crate::pstn::gsm::config::ModemConfig;
use crate::pstn::routes::{line_trunks, named_line_trunks};
use crate::pstn::{IncomingLineCall, LinePool, LineState as ModemState};
use crate::routing::trunk_health::TrunkHealth;
use crate::web::stats::Stats;

use crate::live::LineState;

pub use crate::callctl::LineInfo;

/// The PSTN lines of a `serve` process.
pub struct ModemLines {
    pool: Arc<LinePool>,
    lines: Vec<LineInfo>,
    store: Arc<StoreLines>,
}

/// The modem lines of the dashboard ([`crate::store::modem_lines`]) on the running pool:
/// [`StoreLines::apply`] starts, stops and re-opens them after every change.
pub struct StoreLines {
    pool: Arc<LinePool>,
    /// The names of the file's lines (modems and FXO ports): the file wins on a name.
    file_names: Vec<String>,
    /// The file's lines and the extensions their calls ring.
    file_infos: Vec<LineInfo>,
    /// The dashboard's lines running now, with the settings they run with.
    running: tokio::sync::Mutex<Vec<ModemConfig>>,
    /// The channels of the file's FXO lines (a dashboard line on one of them is not opened).
    file_channels: Vec<String>,
    /// The dashboard's FXO lines running now, with the settings they run with.
    running_fxo: tokio::sync::Mutex<Vec<FxoConfig>>,
    /// Where a new line's state is watched (the router's line health, `/metrics`).
    watch: std::sync::OnceLock<(Arc<TrunkHealth>, Arc<Stats>)>,
    /// The file's enabled modem lines and their incoming entries, for the message service.
    file_modems: Vec<(String, Vec<String>)>,
    /// The message service, told each line's extensions after every change.
    messages: std::sync::OnceLock<crate::sms::service::Handle>,
}

impl StoreLines {
    /// Every line (the file's, then the dashboard's `running`) and the extensions their calls
    /// ring, for the SIP core.
    pub fn infos(&self, running: &[ModemConfig]) -> Vec<LineInfo> {
        self.infos_with(running, &[])
    }

    /// Every line (the file's, then the dashboard's modems `running` and FXO lines `fxo`) and
    /// the extensions their calls ring, for the SIP core.
    pub fn infos_with(&self, running: &[ModemConfig], fxo: &[FxoConfig]) -> Vec<LineInfo> {
        self.file_infos
            .iter()
            .cloned()
            .chain(running.iter().map(|m| LineInfo {
                name: m.line.line.name.clone(),
                extensions: m.incoming.clone(),
            }))
            .chain(fxo.iter().map(|f| LineInfo {
                name: f.settings.name.clone(),
                extensions: f.incoming.clone(),
            }))
            .collect()
    }

    /// Makes the pool run the enabled FXO lines of `rows` (the dashboard's, in order), as
    /// [`StoreLines::apply`] does for modem lines: a name or a channel of the file's is
    /// skipped (the file wins), a line whose settings did not change is left alone (its call
    /// goes on), a changed one re-opens, one gone or disabled is stopped. The FXO lines of the
    /// dashboard now running, for the router and the SIP core.
    pub async fn apply_fxo(&self, rows: &[crate::store::fxo_lines::FxoRow]) -> Vec<FxoConfig> {
        let mut wanted: Vec<FxoConfig> = Vec::new();
        for c in rows
            .iter()
            .filter(|r| r.enabled)
            .filter(|r| {
                let clash = self.file_names.contains(&r.name);
                if clash {
                    tracing::warn!(line = %r.name, "an FXO line of the dashboard has the name of a line of the configuration file: the file's is used");
                }
                !clash
            })
            .filter_map(|r| r.config())
        {
            if self.file_channels.contains(&c.channel) || wanted.iter().any(|w| w.channel == c.channel) {
                tracing::error!(line = %c.settings.name, channel = %c.channel, "FXO line of the dashboard not opened: its channel is another line's");
                continue;
            }
            wanted.push(c);
        }
        let mut running = self.running_fxo.lock().await;
        let before = std::mem::take(&mut *running);
        let mut stop = Vec::new();
        for old in &before {
            if !wanted.iter().any(|w| w == old) {
                if let Some(line) = self.pool.remove(&old.settings.name) {
                    stop.push(line);
                }
                tracing::info!(line = %old.settings.name, "FXO line stopped (removed, disabled or changed)");
            }
        }
        // The channel is free for a re-opened line only once the old port let it go.
        for line in stop {
            line.shutdown().await;
        }
        for w in &wanted {
            if before.iter().any(|b| b == w) {
                continue;
            }
            let line: Arc<dyn crate::pstn::Line> =
                Arc::new(crate::pstn::dahdi::port::FxoPort::spawn(w));
            self.pool.add(Arc::clone(&line), w.incoming.clone());
            if let Some((health, stats)) = self.watch.get() {
                super::line_health::watch(&self.pool, &line, health, stats);
            }
            tracing::info!(line = %w.settings.name, channel = %w.channel, "FXO line started from the dashboard");
        }
        *running = wanted.clone();
        wanted
    }

    /// Tells `messages` each modem line's extensions after every change from now on.
    pub fn set_messages(&self, messages: crate::sms::service::Handle) {
        let _ = self.messages.set(messages);
    }

    /// Each modem line (the file's, then the dashboard's `running`) with the extensions its
    /// text messages go to: its incoming extensions, a ring group's members in its place.
    pub fn message_lines(
        &self,
        running: &[ModemConfig],
        groups: &[crate::config::RingGroupConfig],
    ) -> Vec<(String, Vec<String>)> {
        let members = |name: &String| -> Vec<String> {
            match groups.iter().find(|g| &g.name == name) {
                Some(g) => g.members.clone(),
                None => vec![name.clone()],
            }
        };
        self.file_modems
            .iter()
            .cloned()
            .chain(
                running
                    .iter()
                    .map(|m| (m.line.line.name.clone(), m.incoming.clone())),
            )
            .map(|(line, incoming)| (line, incoming.iter().flat_map(members).collect()))
            .collect()
    }

    /// Tells the message service (when there is one) where the messages of each modem line
    /// go now ([`StoreLines::message_lines`]).
    pub fn tell_messages(
        &self,
        running: &[ModemConfig],
        groups: &[crate::config::RingGroupConfig],
    ) {
        if let Some(m) = self.messages.get() {
            m.set_line_extensions(self.message_lines(running, groups));
        }
    }

    /// Watches the lines started from now on with `health` and `stats`.
    pub fn set_watch(&self, health: Arc<TrunkHealth>, stats: Arc<Stats>) {
        let _ = self.watch.set((health, stats));
    }

    /// Makes the pool run the enabled lines of `rows` (the dashboard's, in order; a name of
    /// the file's is skipped: the file wins). A line whose settings did not change is left
    /// alone (its calls go on); a changed one is re-opened; one gone or disabled is stopped.
    /// The lines now running, for the router and the SIP core.
    pub async fn apply(&self, rows: &[crate::store::modem_lines::ModemRow]) -> Vec<ModemConfig> {
        let wanted: Vec<ModemConfig> = rows
            .iter()
            .filter(|r| r.enabled)
            .filter(|r| {
                let clash = self.file_names.contains(&r.name);
                if clash {
                    tracing::warn!(line = %r.name, "a modem line of the dashboard has the name of a line of the configuration file: the file's is used");
                }
                !clash
            })
            .filter_map(|r| r.config())
            .collect();
        // One change at a time: two reloads in a row apply in order.
        let mut running = self.running.lock().await;
        let before = std::mem::take(&mut *running);
        let mut stop = Vec::new();
        for old in &before {
            if !wanted.iter().any(|w| w == old) {
                if let Some(line) = self.pool.remove(&old.line.line.name) {
                    stop.push(line);
                }
                tracing::info!(line = %old.line.line.name, "modem line stopped (removed, disabled or changed)");
            }
        }
        for line in stop {
            line.shutdown().await;
        }
        for w in &wanted {
            if before.iter().any(|b| b == w) {
                continue;
            }
            let line: Arc<dyn crate::pstn::Line> =
                Arc::new(crate::pstn::gsm::GsmLine::spawn(w.line.clone()));
            self.pool.add(Arc::clone(&line), w.incoming.clone());
            if let Some((health, stats)) = self.watch.get() {
                super::line_health::watch(&self.pool, &line, health, stats);
            }
            tracing::info!(line = %w.line.line.name, "modem line started from the dashboard");
        }
        *running = wanted.clone();
        wanted
    }
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

    /// The dashboard's modem lines on this pool.
    pub fn store_lines(&self) -> Arc<StoreLines> {
        Arc::clone(&self.store)
    }

    /// The calls arriving on every line (once).
    pub fn take_incoming(&self) -> mpsc::Receiver<IncomingLineCall> {
        self.pool.take_incoming()
    }

    /// Starts the lines of `config` (the pool is there without any, for lines added in the
    /// dashboard later); the lines are appended to `config.trunks` so that the router tries
    /// them after the SIP trunks.
    pub async fn prepare(config: &mut Config) -> anyhow::Result<Option<ModemLines>> {
        let pool = LinePool::spawn(&config.modems);
        // Analog FXO ports come after the modems, in configuration order.
        for f in &config.fxo {
            pool.add(
                Arc::new(crate::pstn::dahdi::port::FxoPort::spawn(f)),
                f.incoming.clone(),
            );
        }
        let pool = Arc::new(pool);
        config.trunks.extend(line_trunks(&config.modems));
        config.trunks.extend(fxo_trunks(&config.fxo));
        let lines: Vec<LineInfo> = config
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
        let store = Arc::new(StoreLines {
            pool: Arc::clone(&pool),
            file_names: config
                .modems
                .iter()
                .map(|m| m.line.line.name.clone())
                .chain(config.fxo.iter().map(|f| f.settings.name.clone()))
                .collect(),
            file_infos: lines.clone(),
            running: Default::default(),
            file_channels: config.fxo.iter().map(|f| f.channel.clone()).collect(),
            running_fxo: Default::default(),
            file_modems: config
                .modems
                .iter()
                .filter(|m| m.enabled)
                .map(|m| (m.line.line.name.clone(), m.incoming.clone()))
                .collect(),
            messages: Default::default(),
            watch: Default::default(),
        });
        Ok(Some(ModemLines { pool, lines, store }))
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
                    "{op}, signal {sig}, {reg}, IMEI {imei}{err}",
                    op = s.operator.as_deref().unwrap_or("no operator"),
                    reg = registration_text(s.registration),
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

/// The router's trunks of FXO lines. An analog line dials what a person would dial there:
/// national numbers with the national prefix, others with the international one.
pub fn fxo_trunks(fxo: &[FxoConfig]) -> Vec<TrunkConfig> {
    named_line_trunks(fxo.iter().map(|f| f.settings.name.as_str()))
        .into_iter()
        .map(|mut t| {
            t.number_format = crate::config::NumberFormat::National;
            t
        })
        .collect()
}

/// A modem's network registration as the live page and the Lines page say it.
fn registration_text(r: crate::pstn::Registration) -> &'static str {
    use crate::pstn::Registration as R;
    match r {
        R::Unknown => "registration unknown",
        R::NotRegistered => "not registered",
        R::Home => "registered (home network)",
        R::Searching => "searching for a network",
        R::Denied => "registration denied",
        R::Roaming => "registered (roaming)",
    }
}
