//! Trunks, ring groups and inbound routes applied live (issue 17): the store holds them, the
//! configuration file's `[[trunk]]`, `[[ring_group]]` and `[[inbound.route]]` tables seed it
//! ([`crate::store::trunks`], [`crate::store::inbound`]). At start and on every SIGHUP the file's
//! trunks are synchronised into the store; after that, and after every change from the
//! dashboard or the API, the same [`reload`] gives the router, the trust model and the SIP core's
//! registration and qualify agents the store's trunks. Calls in progress keep their route;
//! trunks whose settings did not change keep their registration. SIGHUP logs what changed and
//! names the sections of the file that only a restart applies.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::config::{Config, TrunkConfig};
use crate::store::Store;

use super::inbound_setup;
use crate::callctl::{inbound, trunks};

/// What a reload hands the SIP loop: the new trust model, the trunks' plans, and every PSTN
/// line with the extensions its calls ring (`None`: no PSTN lines).
pub(super) type Applied = (
    inbound::InboundPolicy,
    Vec<trunks::TrunkPlan>,
    Option<Vec<crate::callctl::LineInfo>>,
    Vec<(String, crate::callctl::limits::CallLimits)>,
);

/// The limits of the dashboard's enabled modem and FXO lines (a line of the file's name is the
/// file's: its limits are `[limits.trunk]`).
fn line_limits(
    base: &Config,
    modems: &[crate::store::modem_lines::ModemRow],
    fxo: &[crate::store::fxo_lines::FxoRow],
) -> Vec<(String, crate::callctl::limits::CallLimits)> {
    let file: Vec<&str> = base
        .modems
        .iter()
        .map(|m| m.line.line.name.as_str())
        .chain(base.fxo.iter().map(|f| f.settings.name.as_str()))
        .collect();
    modems
        .iter()
        .map(|r| (&r.name, r.enabled, &r.settings.limits))
        .chain(fxo.iter().map(|r| (&r.name, r.enabled, &r.settings.limits)))
        .filter(|(name, enabled, l)| *enabled && !l.is_unset() && !file.contains(&name.as_str()))
        .map(|(name, _, l)| (name.clone(), l.into()))
        .collect()
}

/// At start, before the PSTN lines are appended: the file's trunks into the store, and
/// `config.trunks` becomes the store's (file and dashboard) trunks.
pub(super) fn provision(config: &mut Config, store: &mut Store) -> anyhow::Result<()> {
    let sync = store
        .sync_config_trunks(&config.trunks)
        .context("provisioning trunks from the configuration")?;
    log_sync(&sync);
    let lines: Vec<&str> = config
        .modems
        .iter()
        .map(|m| m.line.line.name.as_str())
        .chain(config.fxo.iter().map(|f| f.settings.name.as_str()))
        .collect();
    let (keep, clash): (Vec<TrunkConfig>, Vec<TrunkConfig>) = store
        .trunks()
        .context("reading the trunks")?
        .into_iter()
        .partition(|t| !lines.contains(&t.name.as_str()));
    for t in clash {
        tracing::error!(trunk = %t.name, "a trunk of the dashboard has the name of a PSTN line of the file: not used");
    }
    config.trunks = keep;
    let changed = store
        .sync_config_inbound(&config.ring_groups, &config.inbound.routes)
        .context("provisioning ring groups and inbound routes from the configuration")?;
    if changed > 0 {
        tracing::info!(
            changed,
            "ring groups and inbound routes provisioned from the configuration file"
        );
    }
    (config.ring_groups, config.inbound.routes) = store
        .inbound()
        .context("reading the ring groups and inbound routes")?;
    Ok(())
}

fn log_sync(sync: &crate::store::trunks::TrunkSync) {
    for name in &sync.added {
        tracing::info!(trunk = %name, "trunk added from the configuration file");
    }
    for name in &sync.changed {
        tracing::info!(trunk = %name, "trunk changed in the configuration file");
    }
    for name in &sync.removed {
        tracing::info!(trunk = %name, "trunk removed from the configuration file");
    }
}

/// The live page's lines after a reload: the SIP trunks of `plans` (the enabled ones) in place
/// of the earlier SIP trunks, their state unknown until a REGISTER or OPTIONS answer or a call
/// says otherwise (not "ready": nothing may have been sent to them); other lines stay.
pub(super) fn live_lines(
    before: &[crate::live::LineState],
    plans: &[trunks::TrunkPlan],
) -> Vec<crate::live::LineState> {
    let sip = |l: &&crate::live::LineState| l.kind == "SIP trunk";
    let mut out: Vec<crate::live::LineState> = plans
        .iter()
        .map(|p| {
            before
                .iter()
                .filter(sip)
                .find(|l| l.name == p.name)
                .cloned()
                .unwrap_or_else(|| crate::live::LineState {
                    name: p.name.clone(),
                    kind: "SIP trunk".into(),
                    state: crate::live::TRUNK_UNKNOWN.into(),
                    detail: p.uri.to_string(),
                })
        })
        .map(|mut l| {
            if let Some(p) = plans.iter().find(|p| p.name == l.name) {
                l.detail = p.uri.to_string();
                // Its registration, qualify and calls replace this when there are any.
                l.state = crate::live::TRUNK_UNKNOWN.into();
            }
            l
        })
        .collect();
    out.extend(before.iter().filter(|l| !sip(l)).cloned());
    out
}

/// The sections of `fresh` that differ from the running `base` and only a restart applies.
pub(super) fn restart_needed(base: &Config, fresh: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |differs: bool, what: &'static str| {
        if differs {
            out.push(what);
        }
    };
    check(
        base.sip != fresh.sip,
        "[sip] (listen addresses, domain, timers)",
    );
    check(base.media != fresh.media, "[media]");
    check(base.calls != fresh.calls, "[calls]");
    check(base.store != fresh.store, "[store]");
    check(base.web != fresh.web, "[web]");
    // [numbering] and [enum] are applied live (server::numbering_reload).
    check(base.enum_zone != fresh.enum_zone, "[enum_zone]");
    check(base.log != fresh.log, "[log]");
    check(base.modems != fresh.modems, "[[modem]]");
    check(base.fxo != fresh.fxo, "[[fxo]]");
    check(base.limits != fresh.limits, "[limits]");
    check(base.srtp != fresh.srtp, "srtp keys");
    check(base.tls != fresh.tls, "[tls] and trunk TLS keys");
    check(base.sms != fresh.sms, "[sms]");
    out
}

/// The trunks of the PSTN lines (modems, FXO ports) of the running `base`: they are not in the
/// store and stay as they are.
fn line_trunks(base: &Config, store_names: &[String]) -> Vec<TrunkConfig> {
    let lines: Vec<&str> = base
        .modems
        .iter()
        .map(|m| m.line.line.name.as_str())
        .chain(base.fxo.iter().map(|f| f.settings.name.as_str()))
        .collect();
    base.trunks
        .iter()
        .filter(|t| lines.contains(&t.name.as_str()) && !store_names.contains(&t.name))
        .cloned()
        .collect()
}

/// Held by the running reload ([`reload`]): reloads run one at a time, in turn.
static RELOADS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads the trunks again and hands them to the router now and to the SIP loop through `tx`
/// (host names are resolved off the loop). `from_file`: SIGHUP, which first re-reads the
/// configuration file (its trunks into the store, its `[inbound]` and ring groups); otherwise a
/// change from the dashboard or the API, where the running configuration's other sections stay.
///
/// `modems`: the dashboard's modem lines, started, stopped or re-opened as the store says
/// ([`super::lines::StoreLines::apply`]); they join the router's trunks after the file's lines.
pub(super) fn reload(
    base: &Config,
    router: &Arc<crate::routing::router::Router>,
    tx: mpsc::UnboundedSender<Applied>,
    from_file: bool,
    modems: Option<Arc<super::lines::StoreLines>>,
    dundi: Option<crate::routing::dundi::OfficeDundi>,
) {
    let base = base.clone();
    let router = Arc::clone(router);
    tokio::spawn(async move {
        // One reload at a time: two changes in quick succession (a ring group, then a route
        // to it) each start a reload, and the first one's read of the store, finishing last,
        // put back the trunks as they were before the second change. Run one after the other,
        // the last to run has read the store after every change that asked for a reload
        // before it, so the state applied last is the newest.
        let _turn = RELOADS.lock().await;
        let mut fresh = match (&base.source, from_file) {
            (Some(path), true) => match Config::load(Some(path)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("trunks not reloaded: {e}");
                    return;
                }
            },
            _ => base.clone(),
        };
        if from_file && base.source.is_some() {
            for section in restart_needed(&base, &fresh) {
                tracing::warn!("{section} changed: needs a restart");
            }
        }
        let store_path = base.store.path.clone();
        let from_the_file = from_file.then(|| {
            (
                fresh.trunks.clone(),
                fresh.ring_groups.clone(),
                fresh.inbound.routes.clone(),
            )
        });
        let read = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mut store = Store::open(&store_path)?;
            if let Some((t, groups, routes)) = &from_the_file {
                log_sync(&store.sync_config_trunks(t)?);
                let changed = store.sync_config_inbound(groups, routes)?;
                if changed > 0 {
                    tracing::info!(
                        changed,
                        "ring groups and inbound routes changed in the configuration file"
                    );
                }
            }
            let modem_rows = store.modem_lines()?;
            let fxo_rows = store.fxo_lines()?;
            Ok((
                store.trunks()?,
                store.extensions()?,
                store.inbound()?,
                (modem_rows, fxo_rows),
            ))
        })
        .await;
        let (stored, rows, (groups, routes), (modem_rows, fxo_rows)) = match read {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                tracing::error!("trunks not reloaded: {e:#}");
                return;
            }
            Err(e) => {
                tracing::error!("trunks not reloaded: {e}");
                return;
            }
        };
        let names: Vec<String> = stored.iter().map(|t| t.name.clone()).collect();
        let limits = line_limits(&base, &modem_rows, &fxo_rows);
        fresh.trunks = stored;
        fresh.ring_groups = groups;
        fresh.inbound.routes = routes;
        fresh.trunks.extend(line_trunks(&base, &names));
        fresh.modems = base.modems.clone();
        fresh.fxo = base.fxo.clone();
        let line_infos = match &modems {
            Some(m) => {
                let running = m.apply(&modem_rows).await;
                let extra: Vec<_> = running
                    .iter()
                    .filter(|l| !names.contains(&l.line.line.name))
                    .cloned()
                    .collect();
                fresh
                    .trunks
                    .extend(crate::pstn::routes::line_trunks(&extra));
                // Lines, not SIP trunks: no registration, qualify or trust for them.
                fresh.modems.extend(extra);
                // The dashboard's FXO lines, after its modems.
                let fxo: Vec<_> = m
                    .apply_fxo(&fxo_rows)
                    .await
                    .into_iter()
                    .filter(|l| !names.contains(&l.settings.name))
                    .collect();
                fresh.trunks.extend(super::lines::fxo_trunks(&fxo));
                fresh.fxo.extend(fxo.iter().cloned());
                // Text messages of the dashboard's modem lines reach their extensions too.
                m.tell_messages(&running, &fresh.ring_groups);
                Some(m.infos_with(&running, &fxo))
            }
            None => None,
        };
        // The store's numbering plan (the file's keys and the dashboard's), applied separately.
        fresh.numbering = base.numbering.clone();
        fresh.enum_ = base.enum_.clone();
        router.set_trunks(fresh.trunks.clone());
        // DUNDi peers as the node runs now (the file's and the dashboard's).
        let peers = inbound_setup::trusted_peers(&fresh, dundi.as_ref());
        let policy = inbound_setup::build(&fresh, &rows, peers).await;
        let plans = super::trunk_plans::plans(&fresh).await;
        tracing::info!(
            trunks = names.len(),
            enabled = fresh.trunks.iter().filter(|t| t.enabled).count(),
            ring_groups = fresh.ring_groups.len(),
            routes = fresh.inbound.routes.len(),
            "trunks applied: {}",
            names.join(", ")
        );
        let _ = tx.send((policy, plans, line_infos, limits));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_needs_a_restart() {
        let base = Config::default();
        let mut fresh = base.clone();
        assert!(restart_needed(&base, &fresh).is_empty());
        fresh.sip.domain = "other.test".into();
        fresh.web.listen = "127.0.0.1:9999".parse().unwrap();
        let later = restart_needed(&base, &fresh);
        assert_eq!(later.len(), 2, "{later:?}");
        assert!(later[0].starts_with("[sip]"));
    }
}
