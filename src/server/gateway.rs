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
//! [`Gateway::run`] announces the gateway ready and turns the SIP loop — every input of the core
//! in one `select!`, the core's outputs drained after each turn — until a stop signal; then it
//! ends the calls and stops the parts in order.

use std::io::Write;
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
use super::{
    admit_and_handle, control, dundi_reload, end_calls, inbound_setup, line_health, line_legs,
    lines, media_address, notify, publish, random_secret, rates_reload, reload_extensions,
    start_messages, trunks_reload, unix_now, usage,
};

const HOUSEKEEPING: Duration = Duration::from_secs(15);
const INBOUND_QUEUE: usize = 32_768;
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
        let dundi = if config.dundi.enabled {
            let node = OfficeDundi::start(&config.dundi, &extensions, None)
                .await
                .with_context(|| {
                    format!(
                        "starting DUNDi ([dundi] listen = \"{}\")",
                        config.dundi.settings.bind
                    )
                })?;
            dundi_reload::apply_store_peers(&config, &node).await;
            Some(node)
        } else {
            None
        };
        let routing = crate::routing::setup::build(config.routing(), &extensions, dundi.as_ref())
            .context("setting up number routing")?;
        spawn_cache_signals(routing.enum_.clone());
        let router = Arc::new(routing.router);
        rates_reload::start(&store_path, &router);
        let (route_tx, route_rx) = mpsc::unbounded_channel::<(u64, Route)>();
        let enum_zone = start_enum_zone(&config, &extensions).await?;
        let (media_tx, media_rx) = mpsc::unbounded_channel::<(u64, MediaEvent)>();
        let engine = media_engine(&config);
        let inbound_policy = inbound_setup::build(&config, &extensions).await;
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
        let admission = overload::Admission::new(
            Duration::from_millis(config.limits.queue_delay_ms),
            config
                .limits
                .max_calls
                .unwrap_or_else(|| overload::Admission::call_budget(overload::open_files_limit())),
        );
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
            mut lines,
            mut routing,
            core,
            mut transports,
            mut web,
            mut sinks,
        } = self;
        let Core {
            sip: mut core,
            mut admission,
            media_events: mut media_rx,
            deliveries: mut deliver_rx,
        } = core;
        let Writers {
            bindings: writer,
            cdr: cdr_writer,
            usage: mut usage_rx,
        } = writers;
        let stats = Arc::clone(&web.stats);
        let mut published = std::time::Instant::now();
        publish(&stats, published, &core);
        let mut status = Vec::new();
        {
            // Machine-readable start-up lines for supervisors and tests.
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
            if let Some(d) = &routing.dundi {
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

        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pulse = tokio::time::interval(PULSE);
        pulse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        // Extensions are provisioned again on SIGHUP and whenever the dashboard changed one.
        let (reload_tx, mut reload) = mpsc::channel::<()>(1);
        let (inbound_tx, mut inbound_rx) = mpsc::unbounded_channel::<trunks_reload::Applied>();
        forward_hangup(reload_tx.clone());
        let changed = web.server.extensions_changed();
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
        // Trunks changed in the dashboard or the API are applied without re-reading the file.
        let (trunk_tx, mut trunk_changes) = mpsc::channel::<()>(1);
        let trunks_changed = web.server.trunks_changed();
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
        let rx = &mut transports.inbound;
        let router = &routing.router;
        // The dashboard's modem lines: started now, and applied again with every trunk reload.
        let store_lines = lines.modems.as_ref().map(|m| m.store_lines());
        if store_lines.is_some() {
            trunks_reload::reload(
                &config,
                router,
                inbound_tx.clone(),
                false,
                store_lines.clone(),
            );
        }
        loop {
            let deadline = core.poll_timeout().map(tokio::time::Instant::from_std);
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                msg = rx.recv() => {
                    let Some(first) = msg else { break };
                    let now = std::time::Instant::now();
                    let unix = unix_now();
                    // A bug in handling one message drops that message, not the loop.
                    let sup = Supervisor::global();
                    sup.guard(CORE, || admit_and_handle(&mut core, &mut admission, now, unix, first));
                    for _ in 0..BATCH {
                        match rx.try_recv() {
                            Ok(m) => {
                                sup.guard(CORE, || admit_and_handle(&mut core, &mut admission, now, unix, m));
                            }
                            Err(_) => break,
                        }
                    }
                    if let Some((n, why)) = admission.report(now) {
                        tracing::warn!(refused = n, reason = ?why, "over capacity: new calls refused with 503 + Retry-After");
                    }
                }
                () = timer => core.handle_timeout(std::time::Instant::now(), unix_now()),
                Some(failure) = transports.failures.recv() => {
                    let sup = Supervisor::global();
                    sup.guard(CORE, || core.transport_failure(std::time::Instant::now(), unix_now(), failure));
                }
                Some(()) = reload.recv() => {
                    match reload_extensions(&config, &mut core, router, routing.enum_zone.as_ref()) {
                        Ok(rows) => {
                            if let Some(d) = &routing.dundi {
                                d.reprovision(&rows);
                            }
                            sinks.office = crate::cdr::OfficeNumbers::from_rows(
                                &rows,
                                Some(crate::routing::setup::numbering_plan(&config.numbering, &rows)),
                            );
                            core.set_numbering(crate::routing::setup::numbering_plan(&config.numbering, &rows));
                            tracing::info!(extensions = rows.len(), "extensions reloaded");
                            trunks_reload::reload(&config, router, inbound_tx.clone(), true, store_lines.clone());
                        }
                        Err(e) => tracing::error!("extensions not reloaded: {e:#}"),
                    }
                }
                Some(()) = trunk_changes.recv() => {
                    trunks_reload::reload(&config, router, inbound_tx.clone(), false, store_lines.clone());
                }
                Some((policy, plans, line_infos)) = inbound_rx.recv() => {
                    tracing::info!(trunks = policy.trunks.len(), public = policy.public, "trunks and inbound policy reloaded");
                    core.set_inbound(policy);
                    if let Some(infos) = line_infos {
                        core.set_lines(infos);
                    }
                    lines.live = trunks_reload::live_lines(&lines.live, &plans);
                    core.set_trunk_plans(std::time::Instant::now(), plans);
                }
                Some((id, route)) = routing.decided.recv() => {
                    stats.route_decided(RouteOutcome::of(&route), route.elapsed);
                    core.route_decided(std::time::Instant::now(), unix_now(), id, Arc::new(route));
                }
                Some(request) = web.live.recv() => match request {
                    live::LiveRequest::Snapshot(reply) => {
                        let now = std::time::Instant::now();
                        let (calls, registrations) = core.live(now, unix_now());
                        let trunks = core.trunk_live(now);
                        let _ = reply.send(live::LiveSnapshot {
                            taken_at: unix_now(),
                            calls,
                            registrations,
                            lines: live::with_trunk_state(&lines.live, &trunks)
                                .into_iter()
                                .chain(lines.modems.iter().flat_map(|m| m.live()))
                                .collect(),
                            trunks,
                            lamps: core.lamps(unix_now()),
                        });
                    }
                    live::LiveRequest::HangUp(id, reply) => {
                        let _ = reply.send(core.hang_up_call(std::time::Instant::now(), unix_now(), id));
                    }
                },
                Some(msg) = deliver_rx.recv() => {
                    core.deliver_message(std::time::Instant::now(), unix_now(), msg);
                }
                Some((call, event)) = media_rx.recv() => {
                    core.media_event(std::time::Instant::now(), unix_now(), call, event);
                }
                Some(call) = lines.incoming.recv() => {
                    if let Some(l) = sinks.line_legs.as_mut() {
                        let sup = Supervisor::global();
                        l.incoming(call, |line, caller, name, audio| {
                            sup.guard(CORE, || core.line_call_named(std::time::Instant::now(), unix_now(), line, caller, name, audio))
                                .flatten()
                        });
                    }
                }
                Some((leg, event)) = lines.events.recv() => {
                    if let Some(l) = sinks.line_legs.as_mut() {
                        l.observe(leg, &event);
                    }
                    let sup = Supervisor::global();
                    sup.guard(CORE, || core.line_event(std::time::Instant::now(), unix_now(), leg, event));
                }
                _ = housekeeping.tick() => {
                    core.housekeeping_at(Some(std::time::Instant::now()), unix_now());
                    crate::memory::give_back();
                    tracing::debug!(
                        registrations = core.registrations(),
                        calls = core.calls().len(),
                        transactions = ?core.transaction_counts(),
                        "housekeeping"
                    );
                }
                _ = heartbeat.tick() => {
                    sinks.call_log.heartbeat(&sinks.cdr, core.calls().up_calls(std::time::Instant::now()));
                }
                Some(spent) = usage_rx.recv() => {
                    spent.count(core.limiter_mut());
                    while let Ok(more) = usage_rx.try_recv() {
                        more.count(core.limiter_mut());
                    }
                }
                _ = pulse.tick() => {}
            }
            // After every batch (and at least every PULSE): numbers for /metrics, the heartbeat
            // for /healthz, and the systemd watchdog, all fed by this loop so that they stop when
            // it hangs.
            let now = std::time::Instant::now();
            if now.saturating_duration_since(published) >= PUBLISH_EVERY {
                published = now;
                publish(&stats, now, &core);
            }
            // A component that its supervisor gave up stops the watchdog: systemd restarts us.
            if let Some(n) = web
                .notifier
                .as_mut()
                .filter(|_| !Supervisor::global().has_failed())
            {
                n.keep_alive(now);
            }
            sinks.drain(&mut core, now);
        }
        stats.set_stopping();
        if let Some(n) = &web.notifier {
            n.stopping();
        }
        sinks.stopping = true;
        end_calls(&mut core, rx, &mut sinks).await;
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
    engine
}

impl Transports {
    /// Binds every `[sip] listen` address with `tls` for the TLS ones; what arrives comes out
    /// of [`Transports::inbound`], sends go through the returned [`transport::Outbound`].
    async fn bind(
        config: &Config,
        tls: &crate::transport::certs::TlsContext,
    ) -> anyhow::Result<(Transports, transport::Outbound)> {
        let (tx, rx) = mpsc::channel::<Inbound>(INBOUND_QUEUE);
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
