//! The GSM modem lines in `serve`: starts the [`LinePool`] and its SIP line agent
//! ([`crate::pstn::sip_agent`]), adds one router trunk per line, tells the SIP core which
//! source address is the agent (its INVITEs are PSTN calls for the line's extensions), shows
//! the lines on the live page, and stops them on exit.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

use crate::b2bua::Caller;
use crate::config::Config;
use crate::pstn::sip_agent::{
    line_trunks, named_line_trunks, AgentSettings, BoundAgent, LineAgent, LineInfo,
};
use crate::pstn::{LinePool, LineState as ModemState};
use crate::sip::message::Request;
use crate::sip::peer::{Peer, Proto};
use crate::sip::uri::Uri;

use crate::live::LineState;

/// What the SIP core knows of the line agent: its address and its lines.
#[derive(Debug, Clone, Default)]
pub struct LineAgents {
    addr: Option<SocketAddr>,
    lines: Vec<LineInfo>,
}

impl LineAgents {
    /// The line an INVITE is for, when it comes from the agent's exact UDP source (the line is
    /// the user part of its Contact).
    pub fn line_for(&self, peer: Peer, req: &Request) -> Option<&LineInfo> {
        if peer.proto != Proto::Udp || Some(peer.remote) != self.addr {
            return None;
        }
        let user = req
            .headers
            .contacts()
            .find_map(|c| c.addr())
            .and_then(|a| a.uri.as_sip())
            .and_then(|u| u.user_unescaped())?;
        self.lines.iter().find(|l| l.name == user)
    }
}

/// The caller of a PSTN call as the agent wrote it: From's user (E.164) and display name.
pub fn caller_of(req: &Request) -> Caller {
    let from = req.headers.from();
    let number = from
        .and_then(|f| match &f.uri {
            Uri::Sip(u) => u.user_unescaped(),
            _ => None,
        })
        .unwrap_or_else(|| "anonymous".to_owned());
    let name = from
        .and_then(|f| f.display.as_deref())
        .map(|d| d.trim_matches('"').to_owned())
        .filter(|d| !d.is_empty());
    Caller {
        number,
        name,
        origin: None,
        srtp: crate::b2bua::SrtpPolicy::default(),
    }
}

/// The modem lines of a `serve` process.
pub struct ModemLines {
    pool: Arc<LinePool>,
    bound: Option<BoundAgent>,
    agent: Option<LineAgent>,
    addr: SocketAddr,
    lines: Vec<LineInfo>,
}

impl ModemLines {
    /// The running lines.
    pub fn pool(&self) -> Arc<LinePool> {
        Arc::clone(&self.pool)
    }

    /// Starts the lines of `config` (none: `None`) and binds the agent; the lines are appended
    /// to `config.trunks` so that the router tries them after the SIP trunks.
    pub async fn prepare(config: &mut Config) -> anyhow::Result<Option<ModemLines>> {
        if !config.modems.iter().any(|m| m.enabled) && config.fxo.is_empty() {
            return Ok(None);
        }
        let bound = BoundAgent::bind()
            .await
            .context("starting the line agent")?;
        let addr = bound.local_addr();
        let mut pool = LinePool::spawn(&config.modems);
        // Analog FXO ports come after the modems, in configuration order.
        for f in &config.fxo {
            pool.add(
                Arc::new(crate::pstn::dahdi::port::FxoPort::spawn(f)),
                f.incoming.clone(),
            );
        }
        let pool = Arc::new(pool);
        config.trunks.extend(line_trunks(&config.modems, addr));
        // An analog line dials what a person would dial there: national numbers with the
        // national prefix, others with the international one.
        let fxo_trunks =
            named_line_trunks(config.fxo.iter().map(|f| f.settings.name.as_str()), addr)
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
        tracing::info!(agent = %addr, modems = config.modems.len(), fxo = config.fxo.len(), "PSTN lines started");
        Ok(Some(ModemLines {
            pool,
            bound: Some(bound),
            agent: None,
            addr,
            lines,
        }))
    }

    /// Starts the agent towards the gateway's SIP UDP socket; what the core must know of it.
    pub fn start(
        &mut self,
        config: &Config,
        plan: crate::routing::numbering::NumberingPlan,
        local_addrs: &[(Proto, SocketAddr)],
    ) -> LineAgents {
        let server = local_addrs
            .iter()
            .find(|(p, a)| *p == Proto::Udp && a.is_ipv4())
            .map(|(_, a)| {
                let mut a = *a;
                if a.ip().is_unspecified() {
                    a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                a
            });
        match (server, self.bound.take()) {
            (Some(server), Some(bound)) => {
                self.agent = Some(bound.run(
                    Arc::clone(&self.pool),
                    AgentSettings {
                        server,
                        domain: config.sip.domain.clone(),
                        plan,
                    },
                ));
            }
            (None, _) => {
                tracing::warn!("modem lines: no IPv4 UDP SIP listen address; incoming PSTN calls cannot be offered");
            }
            _ => {}
        }
        LineAgents {
            addr: Some(self.addr),
            lines: self.lines.clone(),
        }
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

    /// Stops the agent and the lines.
    pub async fn shutdown(self) {
        if let Some(a) = self.agent {
            a.shutdown().await;
        }
        self.pool.shutdown().await;
    }
}
