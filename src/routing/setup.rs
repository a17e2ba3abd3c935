//! Building the router from the configuration: the numbering plan (with the extension length
//! inferred from the extensions when the file does not give one), the routing sources (ENUM)
//! and the RFC 3263 locator, sharing one DNS configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::store::ExtensionRow;

use super::numbering::NumberingPlan;
use super::router::{Directory, RouteSource, Router, RouterSettings, ServerLocator};

/// The numbering plan for `config`; when `numbering.extension_length` is not set and every
/// extension has the same length, that length is used, so that a mistyped extension gets 404
/// rather than being taken for a local number.
pub fn numbering_plan(config: &Config, extensions: &[ExtensionRow]) -> NumberingPlan {
    let mut plan = NumberingPlan::from_config(&config.numbering);
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

/// The router of a `serve` or `route` process.
pub fn build_router(config: &Config, extensions: &[ExtensionRow]) -> anyhow::Result<Router> {
    let sources: Vec<Arc<dyn RouteSource>> = Vec::new();
    let locator: Option<Arc<dyn ServerLocator>> = None;
    let budget = Duration::from_millis(config.enum_.budget_ms);
    Ok(Router::new(
        RouterSettings {
            plan: numbering_plan(config, extensions),
            default_permissions: config.numbering.default_permissions,
            budget,
            locate_budget: budget,
            trunks: config.trunks.clone(),
        },
        sources,
        locator,
        Directory::from_rows(extensions),
    ))
}
