//! The gateway of `pasarela serve`, assembled in one place. [`Gateway::build`] makes its parts
//! from the configuration, in the order they need each other:
//!
//! - [`Writers`]: the store's writer threads (registrations, call records) — stopped last;
//! - the PSTN [`Lines`] (GSM modems, FXO ports), started before routing so that the router
//!   knows them as trunks;
//! - [`Routing`]: the router with ENUM and DUNDi, the private ENUM zone;
//! - the [`Core`]: call control ([`SipCore`]) with its media port, limits and admission;
//! - the [`Transports`] (UDP, TCP, TLS listen sockets);
//! - the [`Web`] side (dashboard, API, `/healthz`, the systemd notifier, the control socket);
//! - the [`Sinks`] where the core's outputs go.
//!
//! [`Gateway::run`] announces the gateway ready and turns the SIP loop until a stop signal: one
//! `select!` ([`Running::next_input`]) waits for the next [`Input`] of the core, a small method
//! of [`Running`] per input kind handles it, and the core's outputs are drained after each turn
//! ([`Running::after_turn`]); then it ends the calls and stops the parts in order.

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::b2bua::{CallSettings, LegId, LineEvent};
use crate::callctl::{limits, messaging, overload};
use crate::callctl::{CoreSettings, SipCore};
use crate::config::{Config, Transport};
use crate::live;
use crate::media::{MediaConfig as MediaSettings, MediaEngine, MediaEvent};
use crate::registrar::RegistrarSettings;
use crate::routing::dundi::OfficeDundi;
use crate::routing::router::{Route, Router};
use crate::routing::ZoneServer;
use crate::sip::parse::Limits;
use crate::sip::peer::Proto;
use crate::sip::transaction::Timers;
use crate::store::{BindingWriter, BindingWriterHandle, Store};
use crate::supervise::Supervisor;
use crate::transport::{self, Inbound, TransportFailure, TransportSettings};
use crate::web::{RouteOutcome, Stats, WebServer};

use super::enum_zone::start_enum_zone;
use super::records::{recover_interrupted, CallLog, HEARTBEAT};
use super::signals::{forward_hangup, shutdown_signal, spawn_cache_signals};
use super::sinks::Sinks;
use super::wake_group::WakeGroup;
use super::{
    admit_and_handle, control, dundi_reload, end_calls, inbound_setup, line_health, line_legs,
    lines, media_address, notify, numbering_reload, publish, random_secret, rates_reload,
    reload_extensions, start_messages, trunks_reload, unix_now, usage,
};

const HOUSEKEEPING: Duration = Duration::from_secs(15);
/// Messages handled per wake-up before timers and housekeeping get a turn.
const BATCH: usize = 256;
/// The loop wakes at least this often, to publish its numbers and feed the watchdog.
const PULSE: Duration = Duration::from_secs(1);
/// The loop's numbers are published at most this often (it is busiest under load).
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// The name of the SIP core's message handling for the supervisor.
const CORE: &str = "SIP core";

/// A built gateway, ready to run.
pub struct Gateway {
    config: Config,
    writers: Writers,
    lines: Lines,
    routing: Routing,
    core: Core,
    transports: Transports,
    web: Web,
    sinks: Sinks,
}

/// The store's writer threads; their handles are in the [`Sinks`].
struct Writers {
    bindings: BindingWriter,
    cdr: crate::cdr::CdrWriter,
    /// What finished calls spent, for the limits (fed by the record writer).
    usage: mpsc::UnboundedReceiver<usage::Spent>,
}

/// The SIP core and what feeds it besides the transports and the lines.
struct Core {
    sip: SipCore,
    /// Overload admission of new calls.
    admission: overload::Admission,
    /// The one sink of every call's media events.
    media_events: mpsc::UnboundedReceiver<(u64, MediaEvent)>,
    /// Stored text messages for phones, from the message service.
    deliveries: mpsc::UnboundedReceiver<messaging::Deliver>,
}

/// The SIP transports: what arrives and the sends that failed (sending is in the [`Sinks`]).
struct Transports {
    inbound: mpsc::Receiver<Inbound>,
    failures: mpsc::Receiver<TransportFailure>,
    local_addrs: Vec<(Proto, std::net::SocketAddr)>,
}

/// The PSTN lines; the shell of their call legs is in the [`Sinks`].
struct Lines {
    modems: Option<lines::ModemLines>,
    /// What the lines' calls report, for call control.
    events: mpsc::UnboundedReceiver<(LegId, LineEvent)>,
    /// Calls arriving on the lines.
    incoming: mpsc::Receiver<crate::pstn::IncomingLineCall>,
    /// The trunks and lines as the live page shows them (trunk state filled in on request).
    live: Vec<live::LineState>,
}

/// Number routing and what serves numbers to others.
struct Routing {
    router: Arc<Router>,
    /// Routing decisions made off the loop.
    decided: mpsc::UnboundedReceiver<(u64, Route)>,
    dundi: Option<OfficeDundi>,
    enum_zone: Option<ZoneServer>,
    /// The ENUM resolver, given new settings when they change in the dashboard.
    enum_: crate::routing::EnumResolver,
}

/// The web side and the process's supervisors.
struct Web {
    server: WebServer,
    https: Option<std::net::SocketAddr>,
    stats: Arc<Stats>,
    /// The dashboard's requests to the loop (snapshots, hang-ups).
    live: mpsc::Receiver<live::LiveRequest>,
    notifier: Option<notify::Notifier>,
    _control: control::Control,
}

impl Gateway {
    /// Builds every part from `config`: opens the store, starts the writers, the lines, routing,
    /// binds the SIP transports and starts the web side. Nothing is announced yet.
    pub async fn build(mut config: Config) -> anyhow::Result<Gateway> {
        // The trunks come from the store, seeded by the file, before the PSTN lines join them.
        let mut trunk_store = Store::open(&config.store.path)
            .with_context(|| format!("opening store {}", config.store.path.display()))?;
        trunks_reload::provision(&mut config, &mut trunk_store)?;
        numbering_reload::provision(&mut config, &mut trunk_store)?;
        drop(trunk_store);
        if config.dundi.enabled {
            dundi_reload::provision_keys(&mut config)?;
        }
        let modem_lines = lines::ModemLines::prepare(&mut config).await?;
        let stats = Arc::new(Stats::new());
        let notifier =
            notify::Notifier::from_env().context("reading the systemd notification settings")?;
        let store_path = config.store.path.clone();
        let mut store = Store::open(&store_path)
            .with_context(|| format!("opening store {}", store_path.display()))?;
        store
            .sync_config_extensions(&config.extensions, &config.sip.domain)
            .context("provisioning extensions from the configuration")?;
        store
            .seed_call_handling(&config.call_handling)
            .context("provisioning call forwarding from the configuration")?;
        let call_handling = store.call_handling()?;
        store
            .seed_pickup_groups(&config.pickup_groups)
            .context("provisioning pickup groups from the configuration")?;
        let pickup_groups = store.pickup_groups()?;
        let unix = unix_now();
        let purged = store.purge_expired_bindings(unix as i64)?;
        let rows = store.load_bindings(unix as i64)?;
        let extensions = store.extensions()?;
        let last_call_ref = store.last_call_ref()?;
        drop(store);
        let (writers, writer_handle, cdr) = Writers::start(&store_path)?;
        // Calls a killed predecessor left up: recorded as interrupted now, hung up once the
        // transports are bound.
        let interrupted_legs = recover_interrupted(&store_path, &cdr);

        let settings = core_settings(&config);
        let pickup_codes = crate::routing::pickup::PickupCodes {
            directed: config.calls.pickup_code.clone(),
            group: config.calls.group_pickup_code.clone(),
        };
        let office = crate::cdr::OfficeNumbers::from_rows(
            &extensions,
            Some(crate::routing::setup::numbering_plan(
                &config.numbering,
                &extensions,
            )),
        );
        let line_plan = crate::routing::setup::numbering_plan(&config.numbering, &extensions);
        let (messages, deliver_rx) = start_messages(
            &config,
            &store_path,
            modem_lines.as_ref(),
            &line_plan,
            &extensions,
        )?;
        // Modem lines added or changed in the dashboard: their messages' extensions too.
        if let Some(m) = modem_lines.as_ref() {
            m.store_lines().set_messages(messages.clone());
        }
        // Always a node: off until the file or the dashboard turns it on.
        let node = OfficeDundi::idle(&config.dundi, &extensions);
        match dundi_reload::provision(&config, &node, None).await {
            Ok(changes) if !changes.is_empty() => {
                tracing::info!("DUNDi: {}", changes.join("; "));
            }
            Ok(_) => {}
            Err(e) if config.dundi.enabled => {
                return Err(e.context(format!(
                    "starting DUNDi ([dundi] listen = \"{}\")",
                    config.dundi.settings.bind
                )));
            }
            Err(e) => tracing::error!("DUNDi (turned on in the dashboard) not started: {e:#}"),
        }
        let dundi = Some(node);
        let routing = crate::routing::setup::build(config.routing(), &extensions, dundi.as_ref())
            .context("setting up number routing")?;
        spawn_cache_signals(routing.enum_.clone());
        let router = Arc::new(routing.router);
        let (route_tx, route_rx) = mpsc::unbounded_channel::<(u64, Route)>();
        let enum_zone = start_enum_zone(&config, &extensions).await?;
        let (media_tx, media_rx) = mpsc::unbounded_channel::<(u64, MediaEvent)>();
        let engine = media_engine(&config);
        let socket_gauge = engine.clone();
        let port_gauge = engine.clone();
        let pairs = engine.pairs();
        let inbound_policy = inbound_setup::build(
            &config,
            &extensions,
            inbound_setup::trusted_peers(&config, dundi.as_ref()),
        )
        .await;
        let hold_music = match config.media.hold_music.as_str() {
            "none" => None,
            setting => Some(
                crate::media::hold_music::HoldMusic::from_setting(setting)
                    .context("[media] hold_music")?,
            ),
        };
        let mut core = SipCore::new(
            settings,
            extensions,
            random_secret(),
            Some(Box::new(
                crate::media::port::RelayPort::new(engine, media_tx).with_hold_music(hold_music),
            )),
        );
        core.calls_mut().continue_ids_after(last_call_ref);
        core.set_call_handling(call_handling);
        core.set_pickup_groups(pickup_groups);
        core.set_pickup_codes(pickup_codes.clone());
        let mut limiter = limits::Limiter::new(
            config.limits.clone(),
            crate::office_time::OfficeTime::new(config.web.time_zone.as_deref()),
        );
        usage::load(&store_path, &mut limiter);
        core.set_limits(limiter);
        core.set_max_server_transactions(config.limits.server_transactions);
        core.set_subscriptions(config.subscriptions.clone());
        core.set_numbering(line_plan.clone());
        // The relay's sockets are counted as they are used (two to four a call, see
        // rtcp-mux); the call cap then only bounds what the cheapest calls could take. Its
        // free RTP/RTCP pairs are counted too, so that admission refuses (statelessly) before
        // the allocator runs out.
        let admission = overload::Admission::new(
            Duration::from_millis(config.limits.queue_delay_ms),
            config.limits.max_calls.unwrap_or_else(|| {
                overload::Admission::call_cap_counting_sockets(overload::open_files_limit())
            }),
        )
        .with_socket_budget(
            Box::new(move || socket_gauge.open_sockets()),
            overload::open_files_limit(),
        )
        .with_port_budget(Box::new(move || port_gauge.free_pairs()), pairs)
        .with_transaction_budget(config.limits.server_transactions);
        tracing::debug!(max_calls = admission.max_calls(), "overload admission");
        core.set_inbound(inbound_policy);
        let restored = core.registrar_mut().restore(rows);
        tracing::info!(restored, purged, "registrations restored from the store");

        let tls = crate::transport::certs::for_config(
            &config.sip,
            config.web.https,
            &config.tls,
            &config.store.path,
        )
        .context("loading the TLS certificate")?;
        if tls.self_signed {
            tracing::info!(cert = %tls.cert_path.display(), "TLS: self-signed certificate (replace it with [tls] cert and key)");
        }
        let (transports, outbound) = Transports::bind(&config, &tls).await?;
        let control_path = control::socket_path(&config.store.path);
        let control = control::start(&control_path, dundi.clone(), Some(core.guard()))
            .await
            .with_context(|| format!("opening the control socket {}", control_path.display()))?;
        let (live_source, live_requests) = live::LiveSource::channel();
        let live_lines = live::configured_lines(&config.trunks, &config.pstn_line_names());
        let mut web = WebServer::start_guarded(
            config.web.listen,
            Arc::clone(&stats),
            &store_path,
            crate::web::Links {
                router: Some(Arc::clone(&router)),
                live: Some(live_source),
                office: crate::office_time::OfficeTime::new(config.web.time_zone.as_deref()),
                enum_: Some(routing.enum_.clone()),
                dundi: dundi.clone(),
                realm: config.sip.domain.clone(),
                guard: Some(core.guard()),
                hosts: config.web.hosts.clone(),
                backup_files: config.backup_files(),
                sip_listen: transports
                    .local_addrs
                    .iter()
                    .map(|(p, a)| (format!("{p:?}").to_ascii_uppercase(), *a))
                    .collect(),
                lines: live_lines.len() + config.modems.len() + config.fxo.len(),
                messages: Some(messages.clone()),
                feature_codes: crate::routing::pickup::feature_codes(&pickup_codes),
            },
            crate::web::guard::WebCaps {
                connections: config.limits.web_connections,
                per_source: config.limits.web_connections_per_source,
                header_timeout: Duration::from_secs(config.limits.web_header_timeout_secs),
                ..Default::default()
            },
        )
        .await
        .with_context(|| {
            format!(
                "starting the web server ([web] listen = \"{}\")",
                config.web.listen
            )
        })?;
        // Rate tables: read now, and again at once when the dashboard or the API changes one.
        rates_reload::start(&store_path, &router, web.rates_changed());
        if let Some(plan) = config.store.nightly.clone() {
            let office = crate::office_time::OfficeTime::new(config.web.time_zone.as_deref());
            let files = config.backup_files();
            let store = store_path.clone();
            Supervisor::global().spawn("nightly backup".to_owned(), move || {
                super::nightly_backup::run(
                    plan.clone(),
                    office.clone(),
                    store.clone(),
                    files.clone(),
                )
            });
        }
        let https = match (config.web.https, tls.server_config_alpn(&[b"http/1.1"])) {
            (Some(addr), Some(server)) => {
                Some(web.serve_https(addr, server).await.with_context(|| {
                    format!("starting the dashboard over HTTPS ([web] https = \"{addr}\")")
                })?)
            }
            _ => None,
        };
        // Published before `ready`, so that /healthz says ok as soon as anyone is told to ask;
        // the modem lines' agents are up by then too.
        core.set_local_addrs(transports.local_addrs.clone());
        if !interrupted_legs.is_empty() {
            core.hang_up_interrupted(std::time::Instant::now(), unix_now(), interrupted_legs);
        }
        router.set_own_addrs(transports.local_addrs.clone());
        // Trunk registration and qualify: the router skips trunks the qualify finds down.
        let trunk_health = Arc::new(crate::routing::trunk_health::TrunkHealth::new());
        router.set_trunk_health(Arc::clone(&trunk_health));
        // FXO lines in alarm (or whose channel is not open) are skipped by the router too.
        if let Some(m) = modem_lines.as_ref() {
            line_health::spawn(m.pool(), Arc::clone(&trunk_health), Arc::clone(&stats));
            m.store_lines()
                .set_watch(Arc::clone(&trunk_health), Arc::clone(&stats));
        }
        core.set_trunk_health(trunk_health);
        core.set_trunk_plans(
            std::time::Instant::now(),
            super::trunk_plans::plans(&config).await,
        );
        if let Some(m) = modem_lines.as_ref() {
            core.set_lines(m.infos());
        }
        // Calls on PSTN lines: call control's line commands are carried out by the line legs,
        // the lines' events come back on `line_rx`.
        let (line_tx, line_rx) = mpsc::unbounded_channel();
        let line_legs = modem_lines
            .as_ref()
            .map(|m| line_legs::LineLegs::new(m.pool(), line_tx, line_plan));
        let (_no_lines, no_incoming) = mpsc::channel(1);
        let line_incoming = modem_lines
            .as_ref()
            .map_or(no_incoming, |m| m.take_incoming());
        let sinks = Sinks {
            outbound,
            line_legs,
            router: Arc::clone(&router),
            routes: route_tx,
            bindings: writer_handle,
            cdr,
            stats: Arc::clone(&stats),
            office,
            call_log: CallLog::new(),
            messages,
            store_path: store_path.clone(),
            stopping: false,
        };
        Ok(Gateway {
            writers,
            lines: Lines {
                modems: modem_lines,
                events: line_rx,
                incoming: line_incoming,
                live: live_lines,
            },
            routing: Routing {
                router,
                decided: route_rx,
                dundi,
                enum_zone,
                enum_: routing.enum_.clone(),
            },
            core: Core {
                sip: core,
                admission,
                media_events: media_rx,
                deliveries: deliver_rx,
            },
            transports,
            web: Web {
                server: web,
                https,
                stats,
                live: live_requests,
                notifier,
                _control: control,
            },
            sinks,
            config,
        })
    }

    /// Announces the gateway ready (on stdout for supervisors and tests, and to systemd) and
    /// runs the SIP loop until SIGINT or SIGTERM; then ends the calls and stops every part,
    /// the writers last so that no record or registration is lost.
    pub async fn run(self) -> anyhow::Result<()> {
        let Gateway {
            config,
            writers,
            lines,
            routing,
            core,
            transports,
            mut web,
            sinks,
        } = self;
        let Writers {
            bindings: writer,
            cdr: cdr_writer,
            usage,
        } = writers;
        let stats = Arc::clone(&web.stats);
        let published = std::time::Instant::now();
        publish(&stats, published, &core.sip);
        announce(&transports, &routing, &mut web, published);
        let changes = Changes::watch(&web.server);
        let mut running = Running {
            config,
            lines,
            routing,
            core,
            transports,
            web,
            sinks,
            usage,
            stats,
            published,
            ticks: Ticks::new(),
            changes,
            quiet: WakeGroup::new(),
        };
        running.start_store_lines();
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        // The loop: wait for the next input, hand it to its method, drain the core's outputs.
        loop {
            let input = running.next_input(shutdown.as_mut()).await;
            if running.handle(input).is_break() {
                break;
            }
            running.after_turn();
        }
        let Running {
            mut lines,
            routing,
            core,
            mut transports,
            web,
            mut sinks,
            stats,
            ..
        } = running;
        let mut core = core.sip;
        stats.set_stopping();
        if let Some(n) = &web.notifier {
            n.stopping();
        }
        sinks.stopping = true;
        end_calls(&mut core, &mut transports.inbound, &mut sinks).await;
        if let Some(m) = lines.modems.take() {
            m.shutdown().await;
        }
        sinks.drain(&mut core, std::time::Instant::now());
        web.server.shutdown().await;
        if let Some(d) = &routing.dundi {
            d.handle.stop().await;
        }
        if let Some(z) = routing.enum_zone {
            z.shutdown().await;
        }
        tracing::info!("stopping: writing pending call records");
        if let Err(e) = cdr_writer.shutdown() {
            tracing::error!("call record writer: {e}");
        }
        tracing::info!("stopping: writing pending registrations");
        if let Err(e) = writer.shutdown() {
            tracing::error!("store writer: {e}");
        }
        Ok(())
    }
}

/// Machine-readable start-up lines for supervisors and tests, and "ready" for systemd.
fn announce(
    transports: &Transports,
    routing: &Routing,
    web: &mut Web,
    published: std::time::Instant,
) {
    let mut status = Vec::new();
    {
        let mut out = std::io::stdout().lock();
        for (proto, addr) in &transports.local_addrs {
            tracing::info!("SIP listening on {proto} {addr}");
            let _ = writeln!(out, "listening sip {proto} {addr}");
            status.push(format!("SIP {proto} {addr}"));
        }
        if let Some(z) = &routing.enum_zone {
            let _ = writeln!(out, "listening dns {}", z.local_addr());
        }
        let _ = writeln!(out, "listening web {}", web.server.local_addr());
        if let Some(a) = web.https {
            let _ = writeln!(out, "listening https {a}");
            status.push(format!("web https {a}"));
        }
        if let Some(d) = routing.dundi.as_ref().filter(|d| d.handle.is_running()) {
            let _ = writeln!(out, "listening dundi {}", d.handle.local_addr());
            status.push(format!("DUNDi {}", d.handle.local_addr()));
        }
        status.push(format!("web {}", web.server.local_addr()));
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
    if let Some(n) = web.notifier.as_mut() {
        n.ready(&format!("serving: {}", status.join(", ")));
        n.keep_alive(published);
    }
}

/// The loop's clocks besides the core's own timer.
struct Ticks {
    housekeeping: tokio::time::Interval,
    heartbeat: tokio::time::Interval,
    pulse: tokio::time::Interval,
}

impl Ticks {
    fn new() -> Ticks {
        let housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pulse = tokio::time::interval(PULSE);
        pulse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticks {
            housekeeping,
            heartbeat,
            pulse,
        }
    }
}

/// Changes made outside the loop that it applies: extensions (SIGHUP, the dashboard), trunks
/// (the dashboard, the API) and the trunk and inbound settings rebuilt off the loop.
struct Changes {
    reload: mpsc::Receiver<()>,
    trunks: mpsc::Receiver<()>,
    applied_tx: mpsc::UnboundedSender<trunks_reload::Applied>,
    applied: mpsc::UnboundedReceiver<trunks_reload::Applied>,
    /// The numbering plan and ENUM settings changed in the dashboard or the API.
    numbering: mpsc::Receiver<()>,
    /// The store's numbering and ENUM settings, read off the loop.
    numbering_applied_tx: mpsc::UnboundedSender<numbering_reload::Applied>,
    numbering_applied: mpsc::UnboundedReceiver<numbering_reload::Applied>,
    /// Wakes [`Changes::trunks`]: SIGHUP's DUNDi provisioning asks for the trust model again.
    trunks_notify: Arc<tokio::sync::Notify>,
}

impl Changes {
    /// Extensions are provisioned again on SIGHUP and whenever the dashboard changed one;
    /// trunks changed in the dashboard or the API are applied without re-reading the file.
    fn watch(server: &WebServer) -> Changes {
        let (reload_tx, reload) = mpsc::channel::<()>(1);
        let (applied_tx, applied) = mpsc::unbounded_channel::<trunks_reload::Applied>();
        forward_hangup(reload_tx.clone());
        let changed = server.extensions_changed();
        Supervisor::global().spawn("extension changes".to_owned(), move || {
            let (changed, reload_tx) = (changed.clone(), reload_tx.clone());
            async move {
                loop {
                    changed.notified().await;
                    if reload_tx.send(()).await.is_err() {
                        break;
                    }
                }
            }
        });
        let (trunk_tx, trunks) = mpsc::channel::<()>(1);
        let trunks_changed = server.trunks_changed();
        let trunks_notify = trunks_changed.clone();
        Supervisor::global().spawn("trunk changes".to_owned(), move || {
            let (trunks_changed, trunk_tx) = (trunks_changed.clone(), trunk_tx.clone());
            async move {
                loop {
                    trunks_changed.notified().await;
                    if trunk_tx.send(()).await.is_err() {
                        break;
                    }
                }
            }
        });
        let (numbering_applied_tx, numbering_applied) =
            mpsc::unbounded_channel::<numbering_reload::Applied>();
        let (numbering_tx, numbering) = mpsc::channel::<()>(1);
        let numbering_changed = server.numbering_changed();
        Supervisor::global().spawn("numbering changes".to_owned(), move || {
            let (changed, tx) = (numbering_changed.clone(), numbering_tx.clone());
            async move {
                loop {
                    changed.notified().await;
                    if tx.send(()).await.is_err() {
                        break;
                    }
                }
            }
        });
        Changes {
            reload,
            trunks,
            applied_tx,
            applied,
            numbering,
            numbering_applied_tx,
            numbering_applied,
            trunks_notify,
        }
    }
}

/// One input of the SIP loop, in the order the loop prefers them.
// An input lives for one turn of the loop, on its stack.
#[allow(clippy::large_enum_variant)]
enum Input {
    /// SIGINT or SIGTERM, or the transports are gone.
    Stop,
    /// A SIP message; more that are waiting are taken with it.
    Message(Inbound),
    /// The core's next timer is due.
    Timer,
    TransportFailure(TransportFailure),
    /// The extensions changed (SIGHUP, the dashboard).
    ReloadExtensions,
    /// The trunks changed in the dashboard or the API.
    TrunksChanged,
    /// New trunk and inbound settings, built off the loop.
    TrunksApplied(trunks_reload::Applied),
    /// The numbering plan or ENUM settings changed in the dashboard or the API.
    NumberingChanged,
    /// The store's numbering and ENUM settings, read off the loop.
    NumberingApplied(numbering_reload::Applied),
    RouteDecided(u64, Route),
    /// A request of the dashboard (a snapshot, a hang-up).
    Live(live::LiveRequest),
    /// A stored text message for a phone.
    Deliver(messaging::Deliver),
    MediaEvent(u64, MediaEvent),
    /// A call arriving on a PSTN line.
    LineCall(crate::pstn::IncomingLineCall),
    LineEvent(LegId, LineEvent),
    Housekeeping,
    Heartbeat,
    /// What a finished call spent, for the limits.
    Spent(usage::Spent),
    /// Nothing but the loop's own pulse.
    Pulse,
}

/// The gateway while its loop runs.
struct Running {
    config: Config,
    lines: Lines,
    routing: Routing,
    core: Core,
    transports: Transports,
    web: Web,
    sinks: Sinks,
    /// What finished calls spent, from the record writer.
    usage: mpsc::UnboundedReceiver<usage::Spent>,
    stats: Arc<Stats>,
    /// When the loop's numbers were last published.
    published: std::time::Instant,
    ticks: Ticks,
    changes: Changes,
    /// The inputs of [`Running::next_input`] other than SIP messages and the core's timer.
    quiet: WakeGroup,
}

impl Running {
    /// The dashboard's modem lines: started now, and applied again with every trunk reload.
    fn start_store_lines(&self) {
        if let Some(store_lines) = self.store_lines() {
            trunks_reload::reload(
                &self.config,
                &self.routing.router,
                self.changes.applied_tx.clone(),
                false,
                Some(store_lines),
                self.routing.dundi.clone(),
            );
        }
    }

    fn store_lines(&self) -> Option<Arc<lines::StoreLines>> {
        self.lines.modems.as_ref().map(|m| m.store_lines())
    }

    /// Waits for the next input; earlier branches win when several are ready.
    async fn next_input(
        &mut self,
        shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Input {
        let deadline = self
            .core
            .sip
            .poll_timeout()
            .map(tokio::time::Instant::from_std);
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        // Every other input, in priority order, behind one branch polled only after one of
        // them woke the loop (see [`WakeGroup`]). A closed channel is skipped, as a
        // `Some(_) = rx.recv()` branch would be.
        let group = &self.quiet;
        let failures = &mut self.transports.failures;
        let changes = &mut self.changes;
        let decided = &mut self.routing.decided;
        let live = &mut self.web.live;
        let deliveries = &mut self.core.deliveries;
        let media_events = &mut self.core.media_events;
        let line_calls = &mut self.lines.incoming;
        let line_events = &mut self.lines.events;
        let ticks = &mut self.ticks;
        let usage = &mut self.usage;
        let others = std::future::poll_fn(|cx| {
            use std::task::Poll;
            if !group.begin(cx) {
                return Poll::Pending;
            }
            let mut gcx = group.context();
            let cx = &mut gcx;
            macro_rules! recv {
                ($rx:expr, $input:expr) => {
                    if let Poll::Ready(Some(v)) = $rx.poll_recv(cx) {
                        group.again();
                        let input = $input;
                        return Poll::Ready(input(v));
                    }
                };
            }
            macro_rules! tick {
                ($interval:expr, $input:expr) => {
                    if $interval.poll_tick(cx).is_ready() {
                        group.again();
                        return Poll::Ready($input);
                    }
                };
            }
            recv!(failures, Input::TransportFailure);
            recv!(changes.reload, |()| Input::ReloadExtensions);
            recv!(changes.trunks, |()| Input::TrunksChanged);
            recv!(changes.applied, Input::TrunksApplied);
            recv!(changes.numbering, |()| Input::NumberingChanged);
            recv!(changes.numbering_applied, Input::NumberingApplied);
            recv!(decided, |(id, route)| Input::RouteDecided(id, route));
            recv!(live, Input::Live);
            recv!(deliveries, Input::Deliver);
            recv!(media_events, |(call, event)| Input::MediaEvent(call, event));
            recv!(line_calls, Input::LineCall);
            recv!(line_events, |(leg, event)| Input::LineEvent(leg, event));
            tick!(ticks.housekeeping, Input::Housekeeping);
            tick!(ticks.heartbeat, Input::Heartbeat);
            recv!(usage, Input::Spent);
            tick!(ticks.pulse, Input::Pulse);
            Poll::Pending
        });
        tokio::select! {
            biased;
            () = shutdown => Input::Stop,
            msg = self.transports.inbound.recv() => msg.map_or(Input::Stop, Input::Message),
            () = timer => Input::Timer,
            input = others => input,
        }
    }

    /// Hands one input to its method; breaks on [`Input::Stop`].
    fn handle(&mut self, input: Input) -> ControlFlow<()> {
        match input {
            Input::Stop => return ControlFlow::Break(()),
            Input::Message(first) => self.messages(first),
            Input::Timer => self
                .core
                .sip
                .handle_timeout(std::time::Instant::now(), unix_now()),
            Input::TransportFailure(failure) => self.transport_failure(failure),
            Input::ReloadExtensions => self.reload_extensions(),
            Input::TrunksChanged => self.reload_trunks(false),
            Input::TrunksApplied(applied) => self.trunks_applied(applied),
            Input::NumberingChanged => numbering_reload::read(
                &self.config,
                self.changes.numbering_applied_tx.clone(),
                false,
            ),
            Input::NumberingApplied(applied) => self.numbering_applied(applied),
            Input::RouteDecided(id, route) => self.route_decided(id, route),
            Input::Live(request) => self.live_request(request),
            Input::Deliver(msg) => {
                self.core
                    .sip
                    .deliver_message(std::time::Instant::now(), unix_now(), msg)
            }
            Input::MediaEvent(call, event) => {
                self.core
                    .sip
                    .media_event(std::time::Instant::now(), unix_now(), call, event)
            }
            Input::LineCall(call) => self.line_call(call),
            Input::LineEvent(leg, event) => self.line_event(leg, event),
            Input::Housekeeping => self.housekeeping(),
            Input::Heartbeat => self.sinks.call_log.heartbeat(
                &self.sinks.cdr,
                self.core.sip.calls().up_calls(std::time::Instant::now()),
            ),
            Input::Spent(spent) => self.spent(spent),
            Input::Pulse => {}
        }
        ControlFlow::Continue(())
    }

    /// A SIP message and up to [`BATCH`] more that are waiting, each through admission.
    fn messages(&mut self, first: Inbound) {
        let now = std::time::Instant::now();
        let unix = unix_now();
        let Core {
            sip: core,
            admission,
            ..
        } = &mut self.core;
        // A bug in handling one message drops that message, not the loop.
        let sup = Supervisor::global();
        let inbound = &mut self.transports.inbound;
        let backlog = |q: &mpsc::Receiver<Inbound>| (q.len(), q.max_capacity());
        let fill = backlog(inbound);
        sup.guard(CORE, || {
            admit_and_handle(core, admission, now, unix, first, fill)
        });
        for _ in 0..BATCH {
            match inbound.try_recv() {
                Ok(m) => {
                    let fill = backlog(inbound);
                    sup.guard(CORE, || {
                        admit_and_handle(core, admission, now, unix, m, fill)
                    });
                }
                Err(_) => break,
            }
        }
        if let Some((n, why)) = admission.report(now) {
            tracing::warn!(refused = n, reason = ?why, "over capacity: new calls refused with 503 + Retry-After");
        }
    }

    fn transport_failure(&mut self, failure: TransportFailure) {
        let core = &mut self.core.sip;
        Supervisor::global().guard(CORE, || {
            core.transport_failure(std::time::Instant::now(), unix_now(), failure)
        });
    }

    /// The extensions again from the file and the store, and what depends on them.
    fn reload_extensions(&mut self) {
        let trunks_notify = self.changes.trunks_notify.clone();
        let config = &self.config;
        let core = &mut self.core.sip;
        let routing = &self.routing;
        match reload_extensions(config, core, &routing.router, routing.enum_zone.as_ref()) {
            Ok(rows) => {
                if let Some(d) = &routing.dundi {
                    d.reprovision(&rows);
                    dundi_reload::reload_from_file(config, d, trunks_notify);
                }
                self.sinks.office = crate::cdr::OfficeNumbers::from_rows(
                    &rows,
                    Some(crate::routing::setup::numbering_plan(
                        &config.numbering,
                        &rows,
                    )),
                );
                core.set_numbering(crate::routing::setup::numbering_plan(
                    &config.numbering,
                    &rows,
                ));
                tracing::info!(extensions = rows.len(), "extensions reloaded");
                self.reload_trunks(true);
                numbering_reload::read(
                    &self.config,
                    self.changes.numbering_applied_tx.clone(),
                    true,
                );
            }
            Err(e) => tracing::error!("extensions not reloaded: {e:#}"),
        }
    }

    /// New numbering and ENUM settings from the store: the router, the resolver, records,
    /// line legs and the core use them for the next call.
    fn numbering_applied(&mut self, (numbering, enum_, rows): numbering_reload::Applied) {
        let before = (self.config.numbering.clone(), self.config.enum_.clone());
        self.config.numbering = numbering;
        self.config.enum_ = enum_;
        if numbering_reload::apply(
            (&before.0, &before.1),
            &self.config,
            &rows,
            &self.routing.router,
            &self.routing.enum_,
        ) {
            let plan = crate::routing::setup::numbering_plan(&self.config.numbering, &rows);
            self.sinks.office = crate::cdr::OfficeNumbers::from_rows(&rows, Some(plan.clone()));
            if let Some(l) = self.sinks.line_legs.as_mut() {
                l.set_plan(plan.clone());
            }
            // Senders of received SMS and numbers phones text are read with it too.
            self.sinks.messages.set_plan(plan.clone());
            self.core.sip.set_numbering(plan);
            // The trust model normalises callers with the plan too.
            self.reload_trunks(false);
        }
    }

    /// Rebuilds the trunk and inbound settings off the loop ([`Input::TrunksApplied`]).
    fn reload_trunks(&self, extensions_changed: bool) {
        trunks_reload::reload(
            &self.config,
            &self.routing.router,
            self.changes.applied_tx.clone(),
            extensions_changed,
            self.store_lines(),
            self.routing.dundi.clone(),
        );
    }

    fn trunks_applied(&mut self, (policy, plans, line_infos, limits): trunks_reload::Applied) {
        let core = &mut self.core.sip;
        tracing::info!(lines = limits.len(), "line limits applied");
        core.limiter_mut().set_line_limits(limits);
        tracing::info!(
            trunks = policy.trunks.len(),
            public = policy.public,
            dundi_peers = policy.peers.len(),
            "trunks and inbound policy reloaded"
        );
        core.set_inbound(policy);
        if let Some(infos) = line_infos {
            core.set_lines(infos);
        }
        self.lines.live = trunks_reload::live_lines(&self.lines.live, &plans);
        core.set_trunk_plans(std::time::Instant::now(), plans);
    }

    fn route_decided(&mut self, id: u64, route: Route) {
        self.stats
            .route_decided(RouteOutcome::of(&route), route.elapsed);
        self.core
            .sip
            .route_decided(std::time::Instant::now(), unix_now(), id, Arc::new(route));
    }

    fn live_request(&mut self, request: live::LiveRequest) {
        let core = &mut self.core.sip;
        match request {
            live::LiveRequest::Snapshot(reply) => {
                let now = std::time::Instant::now();
                let (calls, registrations) = core.live(now, unix_now());
                let trunks = core.trunk_live(now);
                let _ = reply.send(live::LiveSnapshot {
                    taken_at: unix_now(),
                    calls,
                    registrations,
                    lines: live::with_trunk_state(&self.lines.live, &trunks)
                        .into_iter()
                        .chain(self.lines.modems.iter().flat_map(|m| m.live()))
                        .collect(),
                    trunks,
                    lamps: core.lamps(unix_now()),
                });
            }
            live::LiveRequest::HangUp(id, reply) => {
                let _ = reply.send(core.hang_up_call(std::time::Instant::now(), unix_now(), id));
            }
        }
    }

    fn line_call(&mut self, call: crate::pstn::IncomingLineCall) {
        let core = &mut self.core.sip;
        if let Some(l) = self.sinks.line_legs.as_mut() {
            let sup = Supervisor::global();
            l.incoming(call, |line, caller, name, audio| {
                sup.guard(CORE, || {
                    core.line_call_named(
                        std::time::Instant::now(),
                        unix_now(),
                        line,
                        caller,
                        name,
                        audio,
                    )
                })
                .flatten()
            });
        }
    }

    fn line_event(&mut self, leg: LegId, event: LineEvent) {
        if let Some(l) = self.sinks.line_legs.as_mut() {
            l.observe(leg, &event);
        }
        let core = &mut self.core.sip;
        Supervisor::global().guard(CORE, || {
            core.line_event(std::time::Instant::now(), unix_now(), leg, event)
        });
    }

    fn housekeeping(&mut self) {
        let core = &mut self.core.sip;
        core.housekeeping_at(Some(std::time::Instant::now()), unix_now());
        self.sinks.call_log.shrink();
        crate::memory::give_back();
        tracing::debug!(
            registrations = core.registrations(),
            calls = core.calls().len(),
            transactions = ?core.transaction_counts(),
            "housekeeping"
        );
    }

    /// What finished calls spent, counted against the limits (all that is waiting).
    fn spent(&mut self, spent: usage::Spent) {
        let limiter = self.core.sip.limiter_mut();
        spent.count(limiter);
        while let Ok(more) = self.usage.try_recv() {
            more.count(limiter);
        }
    }

    /// After every input (and at least every [`PULSE`]): numbers for /metrics, the heartbeat
    /// for /healthz, and the systemd watchdog, all fed by this loop so that they stop when it
    /// hangs; then the core's outputs go to their sinks.
    fn after_turn(&mut self) {
        let now = std::time::Instant::now();
        if now.saturating_duration_since(self.published) >= PUBLISH_EVERY {
            self.published = now;
            publish(&self.stats, now, &self.core.sip);
        }
        // A component that its supervisor gave up stops the watchdog: systemd restarts us.
        if let Some(n) = self
            .web
            .notifier
            .as_mut()
            .filter(|_| !Supervisor::global().has_failed())
        {
            n.keep_alive(now);
        }
        self.sinks.drain(&mut self.core.sip, now);
    }
}

/// The SIP core's settings from `[sip]`, `[calls]`, `[numbering]` and `[srtp]`.
fn core_settings(config: &Config) -> CoreSettings {
    let sip = &config.sip;
    CoreSettings {
        realm: sip.domain.clone(),
        server_name: sip.user_agent.clone(),
        timers: Timers {
            t1: Duration::from_millis(sip.t1_ms),
            t2: Duration::from_millis(sip.t2_ms),
            t4: Duration::from_millis(sip.t4_ms),
        },
        registrar: RegistrarSettings {
            min_expires: sip.min_expires,
            max_expires: sip.max_expires,
            default_expires: sip.default_expires,
            max_contacts: 10,
        },
        nonce_ttl_secs: sip.nonce_ttl_secs,
        digest_algorithms: sip.digest_algorithms.clone(),
        default_permissions: config.numbering.default_permissions,
        routing: true,
        calls: CallSettings {
            domain: sip.domain.clone(),
            server_name: sip.user_agent.clone(),
            no_answer: Duration::from_secs(config.calls.no_answer_secs),
            max_duration: Duration::from_secs(config.calls.max_duration_secs),
            media_ip: media_address(config),
            t1: Duration::from_millis(sip.t1_ms),
            t2: Duration::from_millis(sip.t2_ms),
            failover_after: Duration::from_millis(config.calls.failover_ms),
            srtp: config.srtp.clone(),
        },
    }
}

/// The RTP relay engine from `[media]` and `[calls] rtp_timeout_secs`.
fn media_engine(config: &Config) -> MediaEngine {
    let media_ip = media_address(config);
    let io_threads = config.media.io_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4)
    });
    let engine = MediaEngine::with_io_threads(
        MediaSettings {
            bind_ip: media_ip,
            ports: config.media.rtp_ports.clone(),
            dead_after: Duration::from_secs(config.calls.rtp_timeout_secs),
        },
        io_threads,
    );
    tracing::info!(%media_ip, ports = ?config.media.rtp_ports, io_threads, "media relay");
    if let Err(e) = engine.start_io() {
        // The first relay tries again (and fails its call the same way).
        tracing::warn!(error = %e, "media I/O threads not started");
    }
    engine
}

impl Transports {
    /// Binds every `[sip] listen` address with `tls` for the TLS ones; what arrives comes out
    /// of [`Transports::inbound`], sends go through the returned [`transport::Outbound`].
    async fn bind(
        config: &Config,
        tls: &crate::transport::certs::TlsContext,
    ) -> anyhow::Result<(Transports, transport::Outbound)> {
        // Sized from the overload admission's queue delay: what waits longer is refused
        // anyway, so a longer queue would only hold memory under a flood.
        let queue =
            transport::inbound_queue_len(Duration::from_millis(config.limits.queue_delay_ms));
        let (tx, rx) = mpsc::channel::<Inbound>(queue);
        let sip = &config.sip;
        let listen: Vec<(Proto, std::net::SocketAddr)> = sip
            .listen
            .iter()
            .map(|l| {
                let proto = match l.transport {
                    Transport::Udp => Proto::Udp,
                    Transport::Tcp => Proto::Tcp,
                    Transport::Tls => Proto::Tls,
                };
                (proto, l.addr)
            })
            .collect();
        let transport_settings = TransportSettings {
            tls: Some(tls.clone()),
            limits: Limits {
                max_message_bytes: sip.max_message_bytes,
                ..Limits::default()
            },
            tcp_idle: Duration::from_secs(sip.tcp_idle_secs),
            server_name: sip.user_agent.clone(),
            tcp_caps: transport::TcpCaps {
                total: config.limits.tcp_connections,
                per_source: config.limits.tcp_connections_per_source,
                first_request: Duration::from_secs(config.limits.tcp_first_request_secs),
            },
        };
        let bound = transport::bind(&listen, transport_settings, tx)
            .await
            .context("binding the SIP listen addresses")?;
        Ok((
            Transports {
                inbound: rx,
                failures: bound.failures,
                local_addrs: bound.local_addrs,
            },
            bound.outbound,
        ))
    }
}

impl Writers {
    /// Starts the writer threads of the store at `path`: registrations, and call records (what
    /// each finished call spent comes back for the limits). Returns their handles too.
    fn start(
        path: &std::path::Path,
    ) -> anyhow::Result<(Writers, BindingWriterHandle, crate::cdr::CdrWriterHandle)> {
        let (writer, writer_handle) = BindingWriter::spawn(path)?;
        let (usage_tx, usage_rx) = mpsc::unbounded_channel::<usage::Spent>();
        let (cdr_writer, cdr) = crate::cdr::CdrWriter::spawn_observed(
            path,
            Box::new(move |r| {
                if let Some(spent) = usage::Spent::of(r) {
                    let _ = usage_tx.send(spent);
                }
            }),
        )
        .with_context(|| format!("opening call records in {}", path.display()))?;
        Ok((
            Writers {
                bindings: writer,
                cdr: cdr_writer,
                usage: usage_rx,
            },
            writer_handle,
            cdr,
        ))
    }
}
