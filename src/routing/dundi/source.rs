//! DUNDi as a routing source for the router: asks the peers about an E.164 number (digits
//! without `+`, context `e164` by default) within the router's deadline and offers the SIP
//! answers as targets, best weight first, with the steps for the explainer.

use std::sync::{Arc, RwLock};

use tokio::time::Instant;

use crate::routing::numbering::E164;
use crate::routing::router::{BoxFuture, FoundTarget, RouteSource, SourceAnswer};

use super::service::DundiHandle;
use super::wire::hint_flags;

/// DUNDi lookups for the router.
#[derive(Clone)]
pub struct DundiSource {
    handle: DundiHandle,
    /// The context asked; shared with the office's node, which changes it live.
    context: Arc<RwLock<String>>,
}

impl DundiSource {
    /// Asks through `handle` in DUNDi `context` (usually `e164`).
    pub fn new(handle: DundiHandle, context: &str) -> DundiSource {
        DundiSource::shared(handle, Arc::new(RwLock::new(context.to_owned())))
    }

    /// Asks through `handle` in the context `context` holds at the time of each lookup.
    pub(crate) fn shared(handle: DundiHandle, context: Arc<RwLock<String>>) -> DundiSource {
        DundiSource { handle, context }
    }

    fn context(&self) -> String {
        let c = self.context.read().unwrap_or_else(|e| e.into_inner());
        if c.is_empty() { "e164" } else { c.as_str() }.to_owned()
    }
}

impl RouteSource for DundiSource {
    fn name(&self) -> &str {
        "DUNDi"
    }

    fn lookup<'a>(&'a self, number: &'a E164, deadline: Instant) -> BoxFuture<'a, SourceAnswer> {
        Box::pin(async move {
            let started = Instant::now();
            let budget = deadline.saturating_duration_since(started);
            let digits = number.digits();
            let context = self.context();
            let mut steps = Vec::new();
            if !self.handle.is_running() {
                // DUNDi is turned off: as if it were not a source.
                return SourceAnswer {
                    targets: Vec::new(),
                    steps,
                };
            }
            let Some(r) = self
                .handle
                .lookup_full(digits, &context, budget, false)
                .await
            else {
                steps.push("DUNDi service not running".to_string());
                return SourceAnswer {
                    targets: Vec::new(),
                    steps,
                };
            };
            let took = started.elapsed().as_millis();
            steps.push(if r.from_cache {
                format!("DUNDi {digits}@{context}: from the cache")
            } else {
                format!(
                    "DUNDi {digits}@{context}: asked {} peer(s), {} answer(s) in {took} ms",
                    r.asked,
                    r.answers.len()
                )
            });
            let mut targets = Vec::new();
            let own = self.handle.eid();
            for a in &r.answers {
                if a.eid == own {
                    steps.push(format!(
                        "  ignored {} {:?}: it carries our own EID {own}",
                        a.tech(),
                        a.destination
                    ));
                    continue;
                }
                let via = if a.via == a.eid || a.via.is_zero() {
                    format!("DUNDi {}", a.eid)
                } else {
                    format!("DUNDi {} via {}", a.eid, a.via)
                };
                match a.sip_uri().filter(|_| a.exists()) {
                    Some(uri) => {
                        steps.push(format!(
                            "  {} {} weight {} ({via}, {} s)",
                            a.tech(),
                            a.destination,
                            a.weight,
                            a.expiration
                        ));
                        targets.push(FoundTarget { uri, via });
                    }
                    None => steps.push(format!(
                        "  ignored {} {:?} flags {:#06x} ({via}): not a SIP target",
                        a.tech(),
                        a.destination,
                        a.flags
                    )),
                }
            }
            if r.answers.is_empty() && r.hint_flags & hint_flags::DONT_ASK != 0 {
                steps.push(format!(
                    "  peers have nothing for numbers starting {}",
                    r.dont_ask_prefix
                ));
            }
            for (peer, code, text) in &r.causes {
                steps.push(format!("  {peer} refused: cause {code} {text}"));
            }
            SourceAnswer { targets, steps }
        })
    }
}
