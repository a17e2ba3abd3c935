//! Building the router from the configuration: the numbering plan (with the extension length
//! inferred from the extensions when the file does not give one), the routing sources (ENUM)
//! and the RFC 3263 locator, sharing one DNS configuration.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::sip::uri::SipUri;
use crate::store::ExtensionRow;

use super::enum_config::EnumConfig;
use super::enum_lookup::{EnumResolver, EnumSettings};
use super::locate::Locator;
use super::numbering::{NumberingConfig, NumberingPlan, E164};
use super::router::{
    BoxFuture, Directory, FoundTarget, Hop, Located, RouteSource, Router, RouterSettings,
    ServerLocator, SourceAnswer,
};
use super::trunk::TrunkConfig;

/// ENUM as a routing source.
struct EnumSource(EnumResolver);

impl RouteSource for EnumSource {
    fn name(&self) -> &str {
        "ENUM"
    }

    fn lookup<'a>(&'a self, number: &'a E164, deadline: Instant) -> BoxFuture<'a, SourceAnswer> {
        Box::pin(async move {
            let answer = self.0.lookup(number, deadline).await;
            SourceAnswer {
                targets: answer
                    .targets
                    .into_iter()
                    .map(|t| FoundTarget {
                        via: format!("ENUM {}", t.suffix),
                        uri: t.uri,
                    })
                    .collect(),
                steps: answer.steps.iter().map(|s| s.to_string()).collect(),
            }
        })
    }
}

/// RFC 3263 location through DNS, with the ENUM resolver's nameservers in use at the time.
struct DnsLocator(EnumResolver);

impl ServerLocator for DnsLocator {
    fn locate<'a>(&'a self, uri: &'a SipUri, deadline: Instant) -> BoxFuture<'a, Located> {
        Box::pin(async move {
            let locator: Locator = self.0.locator();
            let location = locator.locate_explained(uri, deadline).await;
            let mut steps: Vec<String> = location.steps.iter().map(|s| s.to_string()).collect();
            let hops = match location.destinations {
                Ok(list) => list
                    .into_iter()
                    .map(|d| Hop {
                        proto: d.proto,
                        addr: d.addr,
                    })
                    .collect(),
                Err(e) => {
                    steps.push(e.to_string());
                    Vec::new()
                }
            };
            Located { hops, steps }
        })
    }
}

/// The router and the parts an operator may want to reach (the ENUM cache).
pub struct Routing {
    pub router: Router,
    /// The ENUM resolver, for inspecting and flushing its cache.
    pub enum_: EnumResolver,
}

/// The numbering plan of `[numbering]`; when `extension_length` is not set and every
/// extension has the same length, that length is used, so that a mistyped extension gets 404
/// rather than being taken for a local number.
pub fn numbering_plan(numbering: &NumberingConfig, extensions: &[ExtensionRow]) -> NumberingPlan {
    let mut plan = NumberingPlan::from_config(numbering);
    if plan.extension_length.is_none() {
        let mut lengths = extensions.iter().map(|e| e.number.len());
        if let Some(first) = lengths.next() {
            if lengths.all(|l| l == first) {
                plan.extension_length = Some(first);
            }
        }
    }
    plan
}

/// The ENUM settings of `[enum]`.
pub fn enum_settings(e: &EnumConfig) -> EnumSettings {
    EnumSettings {
        suffixes: e.suffixes.clone(),
        nameservers: e.nameservers.clone(),
        max_chain: e.max_chain,
        cache_entries: e.cache_entries,
        tree_nameservers: e.tree_nameservers.clone(),
        query_timeout: Duration::from_millis(e.budget_ms),
    }
}

/// Gives the running `router` and `resolver` the numbering plan and ENUM settings of `config`
/// (changed in the dashboard or the file): the next call uses them, calls in progress keep
/// their route. Returns whether the ENUM settings changed.
pub fn apply_numbering(
    config: RoutingConfig<'_>,
    extensions: &[ExtensionRow],
    router: &Router,
    resolver: &EnumResolver,
) -> anyhow::Result<bool> {
    let budget = Duration::from_millis(config.enum_.budget_ms);
    router.set_numbering(
        numbering_plan(config.numbering, extensions),
        config.numbering.default_permissions,
        budget,
        budget,
    );
    Ok(resolver.reconfigure(enum_settings(config.enum_))?)
}

/// What routing takes from the configuration file: `[numbering]`, `[enum]` and the trunks.
#[derive(Debug, Clone, Copy)]
pub struct RoutingConfig<'a> {
    /// `[numbering]`.
    pub numbering: &'a NumberingConfig,
    /// `[enum]`.
    pub enum_: &'a EnumConfig,
    /// The trunks, in order of preference.
    pub trunks: &'a [TrunkConfig],
}

/// The router of a `serve` or `route` process.
pub fn build_router(
    config: RoutingConfig<'_>,
    extensions: &[ExtensionRow],
    dundi: Option<&crate::routing::dundi::OfficeDundi>,
) -> anyhow::Result<Router> {
    Ok(build(config, extensions, dundi)?.router)
}

/// The router with its ENUM resolver; DUNDi is asked beside ENUM when its node runs.
pub fn build(
    config: RoutingConfig<'_>,
    extensions: &[ExtensionRow],
    dundi: Option<&crate::routing::dundi::OfficeDundi>,
) -> anyhow::Result<Routing> {
    let resolver = EnumResolver::new(enum_settings(config.enum_))?;
    let mut sources: Vec<Arc<dyn RouteSource>> = vec![Arc::new(EnumSource(resolver.clone()))];
    if let Some(d) = dundi {
        sources.push(Arc::new(d.source()));
    }
    let locator: Option<Arc<dyn ServerLocator>> = Some(Arc::new(DnsLocator(resolver.clone())));
    let budget = Duration::from_millis(config.enum_.budget_ms);
    let router = Router::new(
        RouterSettings {
            plan: numbering_plan(config.numbering, extensions),
            default_permissions: config.numbering.default_permissions,
            budget,
            locate_budget: budget,
            trunks: config.trunks.to_vec(),
        },
        sources,
        locator,
        Directory::from_rows(extensions),
    );
    Ok(Routing {
        router,
        enum_: resolver,
    })
}
