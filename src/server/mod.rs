//! `pasarela serve`: assembles the [`Gateway`] from the configuration ([`gateway`]: the store's
//! writers, the PSTN lines, routing with DUNDi and ENUM, the SIP core, the transports, the web
//! side) and runs it: the SIP core's event loop (messages, timers, housekeeping) until SIGINT
//! or SIGTERM; then it flushes what the store has not written yet. The core's outputs go to
//! their destinations through one drain ([`sinks`]). The loop publishes its numbers for `/healthz`
//! and `/metrics` ([`crate::web::Stats`]) and, under systemd, reports readiness and feeds the
//! watchdog ([`notify`]). Calls to numbers go through the router off the loop; finished and
//! refused calls become call records (`records`); the private ENUM zone (`enum_zone`) and the
//! signals (`signals`: stop, SIGHUP reload, SIGUSR1/2 ENUM cache) have their own modules. A stop
//! hangs up the calls in progress before the stores are flushed.

pub mod control;
mod dundi_reload;
mod enum_zone;
pub mod first_run;
mod gateway;
mod inbound_setup;
pub mod line_health;
pub mod line_legs;
pub mod lines;
pub mod nightly_backup;
pub mod notify;
mod numbering_reload;
mod rates_reload;
mod records;
mod signals;
mod sinks;
mod trunk_plans;
mod trunks_reload;
mod usage;
mod wake_group;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::callctl::SipCore;
use crate::callctl::{messaging, overload};
use crate::config::Config;
use crate::store::Store;
use crate::transport::Inbound;
use crate::web::{LoopCounts, Stats};

use self::enum_zone::private_zone;

pub use self::gateway::Gateway;
pub use crate::office_time::unix_now;

/// Starts the message service ([`crate::sms::service`]) on the modem lines (none: messages
/// between extensions only).
fn start_messages(
    config: &Config,
    store_path: &std::path::Path,
    modem_lines: Option<&lines::ModemLines>,
    plan: &crate::routing::numbering::NumberingPlan,
    extensions: &[crate::store::ExtensionRow],
) -> anyhow::Result<(
    crate::sms::service::Handle,
    mpsc::UnboundedReceiver<messaging::Deliver>,
)> {
    let pool = match modem_lines {
        Some(m) => m.pool(),
        None => Arc::new(crate::pstn::LinePool::spawn(&[])),
    };
    let members = |name: &String| -> Vec<String> {
        match config.ring_groups.iter().find(|g| &g.name == name) {
            Some(g) => g.members.clone(),
            None => vec![name.clone()],
        }
    };
    let line_extensions = config
        .modems
        .iter()
        .filter(|m| m.enabled)
        .map(|m| {
            let exts = m.incoming.iter().flat_map(members).collect();
            (m.line.line.name.clone(), exts)
        })
        .collect();
    let settings = crate::sms::service::Settings {
        config: config.sms.clone(),
        plan: plan.clone(),
        line_extensions,
        extensions: extensions.iter().map(|e| e.number.clone()).collect(),
    };
    crate::sms::service::start(store_path, pool, settings).context("starting the message service")
}

/// One message into the core, under overload admission: a new INVITE that waited too long in
/// the queue, or finds the queue half full behind it (`backlog`: messages waiting and the
/// queue's capacity), or arrives with the call budget, the server transactions, the media
/// sockets or the RTP ports spent, is refused before anything is taken; one answering our
/// challenge is refused only at higher bounds (see [`overload`]).
fn admit_and_handle(
    core: &mut SipCore,
    admission: &mut overload::Admission,
    now: std::time::Instant,
    unix: u64,
    m: Inbound,
    backlog: (usize, usize),
) {
    let load = overload::Load {
        queued: std::time::Instant::now().saturating_duration_since(m.received),
        backlog: backlog.0,
        backlog_max: backlog.1,
        calls: core.calls().len(),
        routing: core.pending_routes(),
        server_transactions: core.transaction_counts().0,
    };
    let verdict = admission.verdict(&load);
    core.set_refusing(verdict.refuse());
    core.handle_message(now, unix, m.message, m.peer);
    if let Some(why) = verdict.why() {
        let n = core.set_refusing(overload::Refuse::Nothing);
        admission.refused(n, why);
    }
}

fn random_secret() -> [u8; 32] {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    secret
}

/// Runs the gateway until it is asked to stop: [`Gateway::build`], then [`Gateway::run`].
pub async fn run(config: Config) -> anyhow::Result<()> {
    Gateway::build(config).await?.run().await
}

/// Publishes the SIP loop's numbers for `/metrics` and marks the loop alive for `/healthz`.
fn publish(stats: &Stats, now: std::time::Instant, core: &SipCore) {
    let (server_transactions, client_transactions) = core.transaction_counts();
    stats.publish(
        now,
        &LoopCounts {
            registrations: core.registrations(),
            calls_active: core.calls().len(),
            calls_routing: core.pending_routes(),
            server_transactions,
            client_transactions,
        },
    );
    let trunks = core.trunk_live(now);
    if !trunks.is_empty() {
        stats.publish_trunks(
            trunks
                .into_iter()
                .map(|t| crate::web::stats::TrunkGauge {
                    registered: t.registration.map(|r| r == "registered"),
                    up: t.reachable.and_then(|r| match r {
                        "up" => Some(true),
                        "down" => Some(false),
                        _ => None,
                    }),
                    calls: t.calls,
                    name: t.name,
                })
                .collect(),
        );
    }
}

/// SIGHUP: the extensions of the configuration file are provisioned again (store, SIP core,
/// router, private ENUM zone) without dropping registrations or calls. Other settings need a
/// restart.
fn reload_extensions(
    config: &Config,
    core: &mut SipCore,
    router: &crate::routing::router::Router,
    zone: Option<&crate::routing::ZoneServer>,
) -> anyhow::Result<Vec<crate::store::ExtensionRow>> {
    let mut store = Store::open(&config.store.path)
        .with_context(|| format!("opening store {}", config.store.path.display()))?;
    if let Some(path) = &config.source {
        let fresh = Config::load(Some(path))?;
        store.sync_config_extensions(&fresh.extensions, &config.sip.domain)?;
        store.seed_call_handling(&fresh.call_handling)?;
        store.seed_pickup_groups(&fresh.pickup_groups)?;
    }
    core.set_call_handling(store.call_handling()?);
    core.set_pickup_groups(store.pickup_groups()?);
    let rows = store.extensions()?;
    router.set_directory(crate::routing::router::Directory::from_rows(&rows));
    if let Some(z) = zone {
        z.replace_zone(private_zone(config, &rows)?)?;
    }
    core.set_extensions(rows.clone());
    Ok(rows)
}

/// The address RTP uses: `[media] address`, else the first specific SIP listen address, else
/// the address of the interface that carries the default route (found by a UDP `connect`,
/// which sends nothing).
fn media_address(config: &Config) -> std::net::IpAddr {
    if let Some(a) = config.media.address {
        return a;
    }
    if let Some(l) = config
        .sip
        .listen
        .iter()
        .find(|l| !l.addr.ip().is_unspecified())
    {
        return l.addr.ip();
    }
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect("192.0.2.1:9")?;
        s.local_addr()
    });
    match probe {
        Ok(a) if !a.ip().is_unspecified() => a.ip(),
        _ => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
    }
}

/// How long a stop waits for the far ends to answer the BYEs and CANCELs it sent.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// Ends every call on the way out: BYE (or 503 + CANCEL while ringing), then keeps the SIP
/// loop turning — retransmissions, responses — until those transactions are done or
/// [`STOP_GRACE`] has passed.
async fn end_calls(core: &mut SipCore, rx: &mut mpsc::Receiver<Inbound>, sinks: &mut sinks::Sinks) {
    let calls = core.calls().len() + core.pending_routes();
    if calls == 0 {
        return;
    }
    tracing::info!(calls, "stopping: ending calls");
    core.end_all_calls(std::time::Instant::now(), unix_now());
    let grace = tokio::time::Instant::now() + STOP_GRACE;
    loop {
        sinks.drain(core, std::time::Instant::now());
        if core.transaction_counts().1 == 0 || tokio::time::Instant::now() >= grace {
            break;
        }
        let wake = core
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .map_or(grace, |d| d.min(grace));
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => core.handle_message(std::time::Instant::now(), unix_now(), m.message, m.peer),
                None => break,
            },
            () = tokio::time::sleep_until(wake) => {
                core.handle_timeout(std::time::Instant::now(), unix_now());
            }
        }
    }
}
