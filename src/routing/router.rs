//! The route decision: for a caller and what they dialled, where the call goes and why.
//!
//! [`Router::route`] runs the numbering plan (E.164, category, the caller's permissions), then
//! decides among a local extension (dialled directly, or one of the office's DIDs), SIP targets
//! found by the routing sources (ENUM, later DUNDi — asked in parallel under one time budget),
//! and the PSTN trunks. SIP targets are located (RFC 3263) into concrete hops; the result is an
//! ordered list of [`Attempt`]s that the call tries one after the other, SIP targets first and
//! the PSTN last. Every step is recorded with its time, for the billing record and for
//! `pasarela route`.
//!
//! Sources and the locator are traits so that the decision logic is tested without DNS.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::routing::trunk::{NumberFormat, TrunkConfig};
use crate::sip::peer::Proto;
use crate::sip::uri::{Params, SipUri, Uri};

use super::numbering::{Category, Dialled, NumberError, NumberingPlan, Permissions, E164};

/// A boxed future, as returned by the object-safe source traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A SIP address found for a number by a routing source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundTarget {
    /// `sip:…` (or `tel:+…`, which re-enters the numbering plan).
    pub uri: String,
    /// Where it came from, for records and the explainer (`ENUM e164.arpa`).
    pub via: String,
}

/// What one routing source answered.
#[derive(Debug, Clone, Default)]
pub struct SourceAnswer {
    /// Targets in the source's order of preference.
    pub targets: Vec<FoundTarget>,
    /// Human-readable lines about what was asked and what came back.
    pub steps: Vec<String>,
}

/// A routing source: ENUM, DUNDi. Asked in parallel with the others, bounded by `deadline`.
pub trait RouteSource: Send + Sync {
    /// Its name in records and the explainer (`ENUM`, `DUNDi`).
    fn name(&self) -> &str;
    /// Looks `number` up; must return by `deadline` (what it has by then).
    fn lookup<'a>(&'a self, number: &'a E164, deadline: Instant) -> BoxFuture<'a, SourceAnswer>;
}

/// A concrete place to send a request: transport and address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hop {
    pub proto: Proto,
    pub addr: SocketAddr,
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.proto, self.addr)
    }
}

/// What locating a SIP URI gave.
#[derive(Debug, Clone, Default)]
pub struct Located {
    /// Hops in failover order; empty when nothing was found (`steps` says why).
    pub hops: Vec<Hop>,
    pub steps: Vec<String>,
}

/// RFC 3263 server location.
pub trait ServerLocator: Send + Sync {
    fn locate<'a>(&'a self, uri: &'a SipUri, deadline: Instant) -> BoxFuture<'a, Located>;
}

/// The office's numbers: extensions and their DIDs.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    /// Extension number → (enabled, its permissions; `None` for the default).
    pub extensions: HashMap<String, (bool, Option<Permissions>)>,
    /// DID (E.164 with `+`) → extension number.
    pub dids: HashMap<String, String>,
}

impl Directory {
    /// Builds the directory from stored extension rows.
    pub fn from_rows(rows: &[crate::store::ExtensionRow]) -> Directory {
        let mut d = Directory::default();
        for r in rows {
            d.extensions
                .insert(r.number.clone(), (r.enabled, r.permissions));
            if let Some(did) = &r.did {
                if r.enabled {
                    d.dids.insert(did.clone(), r.number.clone());
                }
            }
        }
        d
    }
}

/// How an attempt reaches its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptKind {
    /// A SIP target found by a source (the PSTN is bypassed).
    Sip {
        /// `ENUM e164.arpa`, `DUNDi priv`.
        source: String,
    },
    /// A SIP trunk to a PSTN provider.
    Trunk { name: String },
}

/// One thing to try, in order.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub kind: AttemptKind,
    /// The Request-URI.
    pub uri: SipUri,
    /// Where to send it.
    pub hop: Hop,
    /// Digest credentials for a trunk that challenges.
    pub auth: Option<(String, String)>,
}

impl Attempt {
    /// A short label for records: `ENUM e164.arpa` or `trunk carrier`.
    pub fn label(&self) -> String {
        match &self.kind {
            AttemptKind::Sip { source } => source.clone(),
            AttemptKind::Trunk { name } => format!("trunk {name}"),
        }
    }
}

/// The decision.
#[derive(Debug, Clone)]
pub enum Decision {
    /// A local extension (dialled, or reached through its DID).
    Extension(String),
    /// Try these in order.
    Attempts(Vec<Attempt>),
    /// Refuse the call.
    Reject { status: u16, reason: String },
}

/// One recorded step of a decision, with the time since routing started.
#[derive(Debug, Clone)]
pub struct Step {
    pub at: Duration,
    pub text: String,
}

/// A whole routing decision and how it was reached.
#[derive(Debug, Clone)]
pub struct Route {
    pub dialled: String,
    /// What the numbering plan made of it.
    pub number: Option<Dialled>,
    pub category: Option<Category>,
    pub steps: Vec<Step>,
    pub decision: Decision,
    /// Time the whole decision took.
    pub elapsed: Duration,
}

impl Route {
    /// The answer for a call whose routing decision could not be made (its task died): refused
    /// with 503.
    pub fn failed(dialled: String) -> Route {
        Route {
            dialled,
            number: None,
            category: None,
            steps: vec![Step {
                at: Duration::ZERO,
                text: "routing failed (an internal error)".to_owned(),
            }],
            decision: Decision::Reject {
                status: 503,
                reason: "Routing failed".to_owned(),
            },
            elapsed: Duration::ZERO,
        }
    }

    /// The E.164 form, when there is one.
    pub fn e164(&self) -> Option<&E164> {
        match &self.number {
            Some(Dialled::E164(n)) => Some(n),
            _ => None,
        }
    }
}

/// Settings of the router.
pub struct RouterSettings {
    pub plan: NumberingPlan,
    pub default_permissions: Permissions,
    /// Time all sources together may take per call.
    pub budget: Duration,
    /// Time locating the SIP targets may take.
    pub locate_budget: Duration,
    pub trunks: Vec<TrunkConfig>,
}

/// Makes routing decisions. Shared (`Arc`) by the calls being routed.
pub struct Router {
    /// The numbering plan, permissions and budgets (replaced when the numbering changes).
    settings: std::sync::RwLock<Arc<RouterSettings>>,
    sources: Vec<Arc<dyn RouteSource>>,
    locator: Option<Arc<dyn ServerLocator>>,
    directory: std::sync::RwLock<Arc<Directory>>,
    /// The trunks in use (from `settings.trunks`, replaced on reload).
    trunks: std::sync::RwLock<Arc<Vec<TrunkConfig>>>,
    /// Our own listen addresses: a target there would call ourselves.
    own: std::sync::RwLock<Arc<Vec<(Proto, SocketAddr)>>>,
    /// Trunks the qualify found down (skipped).
    health: std::sync::RwLock<Option<Arc<super::trunk_health::TrunkHealth>>>,
    /// What each line's rate table charges (least-cost order); `None`: configured order.
    prices: std::sync::RwLock<Option<Arc<dyn super::least_cost::LinePrices>>>,
}

struct Recorder {
    start: Instant,
    steps: Vec<Step>,
}

/// Who is calling, for the permission check on the number that leaves on a paid line.
struct Caller<'a> {
    /// The extension; `None` for an unrestricted caller (the explainer without `--from`).
    ext: Option<&'a str>,
    perms: Permissions,
    /// The category of the number as dialled: no source may make it a premium call.
    dialled: Category,
}

impl Caller<'_> {
    fn who(&self) -> &str {
        self.ext.unwrap_or("caller")
    }
}

impl Recorder {
    fn note(&mut self, text: impl Into<String>) {
        self.steps.push(Step {
            at: self.start.elapsed(),
            text: text.into(),
        });
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field(
                "sources",
                &self.sources.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("locator", &self.locator.is_some())
            .field("trunks", &self.trunks().len())
            .finish()
    }
}

impl Router {
    pub fn new(
        settings: RouterSettings,
        sources: Vec<Arc<dyn RouteSource>>,
        locator: Option<Arc<dyn ServerLocator>>,
        directory: Directory,
    ) -> Router {
        Router {
            trunks: std::sync::RwLock::new(Arc::new(settings.trunks.clone())),
            own: std::sync::RwLock::new(Arc::new(Vec::new())),
            health: std::sync::RwLock::new(None),
            prices: std::sync::RwLock::new(None),
            settings: std::sync::RwLock::new(Arc::new(settings)),
            sources,
            locator,
            directory: std::sync::RwLock::new(Arc::new(directory)),
        }
    }

    /// Replaces the trunks (after a reload); calls in progress keep their route.
    pub fn set_trunks(&self, trunks: Vec<TrunkConfig>) {
        if let Ok(mut t) = self.trunks.write() {
            *t = Arc::new(trunks);
        }
    }

    /// Where the router learns which trunks are down (`serve`'s OPTIONS qualify).
    pub fn set_trunk_health(&self, health: Arc<super::trunk_health::TrunkHealth>) {
        if let Ok(mut h) = self.health.write() {
            *h = Some(health);
        }
    }

    /// Where the router learns what each line's rate table charges: PSTN lines are then
    /// tried cheapest first for the number ([`super::least_cost`]).
    pub fn set_line_prices(&self, prices: Arc<dyn super::least_cost::LinePrices>) {
        if let Ok(mut p) = self.prices.write() {
            *p = Some(prices);
        }
    }

    fn line_prices(&self) -> Option<Arc<dyn super::least_cost::LinePrices>> {
        self.prices.read().ok()?.clone()
    }

    /// Since when trunk `name` is down (`None`: usable).
    fn trunk_down(&self, name: &str) -> Option<String> {
        let h = self.health.read().ok()?;
        h.as_ref()?.down_since(name)
    }

    /// Why PSTN line `name` cannot take calls now (`None`: it can, or it is no line).
    fn line_out(&self, name: &str) -> Option<String> {
        let h = self.health.read().ok()?;
        h.as_ref()?.line_out(name)
    }

    /// The trunks in use.
    pub fn trunks(&self) -> Arc<Vec<TrunkConfig>> {
        match self.trunks.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Our own listen addresses (after binding): targets there are skipped (a loop).
    pub fn set_own_addrs(&self, addrs: Vec<(Proto, SocketAddr)>) {
        if let Ok(mut o) = self.own.write() {
            *o = Arc::new(addrs);
        }
    }

    /// Whether `hop` is this gateway: one of its listen addresses, or the port of a wildcard
    /// listen address on a loopback or unspecified address.
    fn is_self(&self, hop: &Hop) -> bool {
        let own = match self.own.read() {
            Ok(o) => Arc::clone(&o),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        own.iter().any(|(_, a)| {
            a.port() == hop.addr.port()
                && (a.ip() == hop.addr.ip()
                    || (a.ip().is_unspecified()
                        && (hop.addr.ip().is_loopback() || hop.addr.ip().is_unspecified())))
        })
    }

    /// `hops` without this gateway's own addresses, each skip noted for the explainer.
    fn not_self(&self, uri: &SipUri, hops: Vec<Hop>, rec: &mut Recorder) -> Vec<Hop> {
        hops.into_iter()
            .filter(|h| {
                let me = self.is_self(h);
                if me {
                    rec.note(format!(
                        "locate {uri}: {h} skipped: that is this gateway (the call would loop)"
                    ));
                }
                !me
            })
            .collect()
    }

    /// Replaces the office's numbers (after extensions changed).
    pub fn set_directory(&self, directory: Directory) {
        if let Ok(mut d) = self.directory.write() {
            *d = Arc::new(directory);
        }
    }

    fn directory(&self) -> Arc<Directory> {
        match self.directory.read() {
            Ok(d) => Arc::clone(&d),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The numbering plan in use.
    pub fn plan(&self) -> NumberingPlan {
        self.settings().plan.clone()
    }

    fn settings(&self) -> Arc<RouterSettings> {
        match self.settings.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Replaces the numbering plan, the default permissions and the time budgets (the
    /// numbering and ENUM settings changed in the dashboard): the next call uses them, calls
    /// being routed finish with the earlier ones.
    pub fn set_numbering(
        &self,
        plan: NumberingPlan,
        default_permissions: Permissions,
        budget: Duration,
        locate_budget: Duration,
    ) {
        let fresh = Arc::new(RouterSettings {
            plan,
            default_permissions,
            budget,
            locate_budget,
            trunks: Vec::new(),
        });
        match self.settings.write() {
            Ok(mut s) => *s = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }

    /// Decides where a call from extension `from` (`None`: an unrestricted caller, as in
    /// `pasarela route` without `--from`) to `dialled` goes.
    pub async fn route(&self, from: Option<&str>, dialled: &str) -> Route {
        let start = Instant::now();
        let mut rec = Recorder {
            start,
            steps: Vec::new(),
        };
        let dir = self.directory();
        let (number, category, decision) = self.decide(&dir, from, dialled, &mut rec).await;
        Route {
            dialled: dialled.to_owned(),
            number,
            category,
            steps: rec.steps,
            decision,
            elapsed: start.elapsed(),
        }
    }

    async fn decide(
        &self,
        dir: &Directory,
        from: Option<&str>,
        dialled: &str,
        rec: &mut Recorder,
    ) -> (Option<Dialled>, Option<Category>, Decision) {
        let plan = &self.settings().plan;
        let perms = match from {
            None => Permissions::all(),
            Some(ext) => match dir.extensions.get(ext) {
                Some((true, p)) => p.unwrap_or(self.settings().default_permissions),
                Some((false, _)) => {
                    rec.note(format!("caller {ext} is disabled"));
                    return (None, None, reject(403, "Caller disabled"));
                }
                None => {
                    rec.note(format!("caller {ext} is not an extension"));
                    return (None, None, reject(403, "Unknown caller"));
                }
            },
        };
        // E.164 digits without '+' (as DUNDi answers carry numbers: `4930123457`) that are one
        // of our DIDs reach it, whatever the plan would make of them.
        let own_did = (!dir.extensions.contains_key(dialled)
            && dialled.bytes().all(|b| b.is_ascii_digit()))
        .then(|| E164::from_digits(dialled).ok())
        .flatten()
        .filter(|n| dir.dids.contains_key(n.as_str()));
        let classified = match own_did {
            Some(n) => {
                rec.note(format!(
                    "numbering: {dialled:?} are the E.164 digits of our DID {n}"
                ));
                Ok(Dialled::E164(n))
            }
            None => plan.classify(dialled, |d| dir.extensions.contains_key(d)),
        };
        let number = match classified {
            Ok(n) => n,
            Err(e) => {
                rec.note(format!("numbering: {dialled:?}: {e}"));
                return (None, None, reject_number(&e));
            }
        };
        rec.note(format!("numbering: {dialled:?} is {number}"));
        let category = match plan.check(&number, &perms) {
            Ok(c) => c,
            Err(e) => {
                rec.note(format!(
                    "permissions: {} may call {perms}: {e}",
                    from.unwrap_or("caller")
                ));
                let barred = match &e {
                    NumberError::Barred(c) => Some(*c),
                    _ => None,
                };
                return (Some(number), barred, reject_number(&e));
            }
        };
        if let Some(ext) = from {
            rec.note(format!(
                "permissions: {category} allowed for {ext} ({perms})"
            ));
        }
        let caller = Caller {
            ext: from,
            perms,
            dialled: category,
        };
        let decision = match &number {
            Dialled::Extension(ext) => self.to_extension(dir, ext, rec),
            Dialled::Emergency(_) | Dialled::Short(_) => {
                rec.note(format!("{category} numbers always go to the PSTN"));
                self.to_pstn(Vec::new(), &number, &caller, rec).await
            }
            Dialled::E164(n) => {
                if let Some(ext) = dir.dids.get(n.as_str()) {
                    rec.note(format!("{n} is the DID of extension {ext}"));
                    self.to_extension(dir, ext, rec)
                } else {
                    self.to_number(dir, n, &caller, rec).await
                }
            }
        };
        (Some(number), Some(category), decision)
    }

    fn to_extension(&self, dir: &Directory, ext: &str, rec: &mut Recorder) -> Decision {
        match dir.extensions.get(ext) {
            Some((true, _)) => {
                rec.note(format!("decision: extension {ext}"));
                Decision::Extension(ext.to_owned())
            }
            Some((false, _)) => {
                rec.note(format!("extension {ext} is disabled"));
                reject(404, "Not Found")
            }
            None => {
                rec.note(format!("no extension {ext}"));
                reject(404, "Not Found")
            }
        }
    }

    /// An E.164 number of somebody else: the sources, then the PSTN.
    async fn to_number(
        &self,
        dir: &Directory,
        n: &E164,
        caller: &Caller<'_>,
        rec: &mut Recorder,
    ) -> Decision {
        let found = self.ask_sources(n, rec).await;
        let mut attempts = Vec::new();
        let mut pstn_number: Option<E164> = None;
        // A source that pointed the call at a paid number the caller may not call: then no
        // paid line is used for this call at all (not even for the number as dialled).
        let mut barred: Option<NumberError> = None;
        let dialled_category = self.settings().plan.category(n);
        let locate_deadline = Instant::now() + self.settings().locate_budget;
        for t in found {
            match Uri::parse(&t.uri) {
                Ok(Uri::Sip(uri)) => {
                    if let Some(trunk) = self.trunk_of(&uri) {
                        // A number on our own provider's domain is a paid call, whoever found it.
                        match self.paid_sip_target_allowed(&uri, &trunk, &t.via, caller, rec) {
                            Ok(true) => {}
                            Ok(false) => continue,
                            Err(e) => {
                                barred.get_or_insert(e);
                                continue;
                            }
                        }
                    }
                    let mut hops = self.locate(&uri, locate_deadline, rec).await;
                    if self.trunk_of(&uri).is_none() {
                        // A name that resolves to a trunk's address is that trunk too.
                        let paid = hops.iter().find_map(|h| self.trunk_of_hop(h));
                        if let Some(trunk) = paid {
                            // The name is the trunk's domain: all of it is a paid line.
                            match self.paid_sip_target_allowed(&uri, &trunk, &t.via, caller, rec) {
                                Ok(true) => {}
                                Ok(false) => hops.clear(),
                                Err(e) => {
                                    barred.get_or_insert(e);
                                    hops.clear();
                                }
                            }
                        }
                    }
                    let hops = self.not_self(&uri, hops, rec);
                    for hop in hops {
                        attempts.push(Attempt {
                            kind: AttemptKind::Sip {
                                source: t.via.clone(),
                            },
                            uri: uri.clone(),
                            hop,
                            auth: None,
                        });
                    }
                }
                Ok(Uri::Tel(tel)) => match tel.number.parse::<E164>() {
                    Ok(other) => {
                        if let Some(ext) = dir.dids.get(other.as_str()) {
                            rec.note(format!(
                                "{}: {} is the DID of extension {ext}",
                                t.via, t.uri
                            ));
                            if attempts.is_empty() {
                                return self.to_extension(dir, ext, rec);
                            }
                        } else if self.settings().plan.category(&other) == Category::Premium
                            && dialled_category != Category::Premium
                        {
                            // Peers and ENUM may route a number, not make it a premium call.
                            rec.note(format!(
                                "{}: {} skipped: a source may not turn a {dialled_category} \
                                 number into a premium one",
                                t.via, t.uri
                            ));
                            barred.get_or_insert(NumberError::Barred(Category::Premium));
                        } else if pstn_number.is_none() && other != *n {
                            rec.note(format!(
                                "{}: {} re-enters the numbering plan: PSTN number {other}",
                                t.via, t.uri
                            ));
                            pstn_number = Some(other);
                        }
                    }
                    Err(e) => rec.note(format!("{}: {} skipped: {e}", t.via, t.uri)),
                },
                Ok(_) => rec.note(format!(
                    "{}: {} skipped: not a SIP or tel URI",
                    t.via, t.uri
                )),
                Err(e) => rec.note(format!("{}: {} skipped: {e}", t.via, t.uri)),
            }
        }
        if let Some(e) = barred {
            rec.note(format!(
                "paid line check: a source answered a destination that is barred ({e}): no \
                 trunk or line for this call"
            ));
            if attempts.is_empty() {
                rec.note("decision: refused");
                return reject_number(&e);
            }
            return self.attempts_decision(attempts, rec);
        }
        let pstn = pstn_number.unwrap_or_else(|| n.clone());
        self.to_pstn(attempts, &Dialled::E164(pstn), caller, rec)
            .await
    }

    /// The trunk (or PSTN line) whose address `uri` names: the same host name, or the same
    /// IP address and port.
    fn trunk_of(&self, uri: &SipUri) -> Option<String> {
        // The trunks in use now (a reload or the dashboard may have added one since start).
        self.trunks()
            .iter()
            .filter(|t| t.enabled)
            .find(|t| match (t.uri.host.ip(), uri.host.ip()) {
                (Some(a), Some(b)) => {
                    a == b && t.uri.port.unwrap_or(5060) == uri.port.unwrap_or(5060)
                }
                _ => t.uri.host.matches(&uri.host),
            })
            .map(|t| t.name.clone())
    }

    /// The trunk with a literal address equal to `hop`.
    fn trunk_of_hop(&self, hop: &Hop) -> Option<String> {
        self.trunks()
            .iter()
            .filter(|t| t.enabled)
            .find(|t| literal_hop(&t.uri).is_some_and(|h| h.addr == hop.addr))
            .map(|t| t.name.clone())
    }

    /// The permission check of a SIP target that is a number on a trunk's domain (paid):
    /// `Ok(true)` allowed, `Ok(false)` not a number (skipped), `Err` barred for the caller.
    fn paid_sip_target_allowed(
        &self,
        uri: &SipUri,
        trunk: &str,
        via: &str,
        caller: &Caller<'_>,
        rec: &mut Recorder,
    ) -> Result<bool, NumberError> {
        let plan = &self.settings().plan;
        let user = uri.user_unescaped().unwrap_or_default();
        let number = match plan.classify(&user, |_| false) {
            Ok(n) => n,
            Err(e) => {
                rec.note(format!(
                    "{via}: {uri} skipped: a target on trunk {trunk} is a paid line, and \
                     {user:?} is not a number it may take ({e})"
                ));
                return Ok(false);
            }
        };
        let category = plan.category_of(&number);
        if category == Category::Premium && caller.dialled != Category::Premium {
            rec.note(format!(
                "paid line check: {uri} ({via}) is {number} on trunk {trunk}: a source may not \
                 turn a {} number into a premium one: skipped",
                caller.dialled
            ));
            return Err(NumberError::Barred(Category::Premium));
        }
        match plan.check(&number, &caller.perms) {
            Ok(c) => {
                rec.note(format!(
                    "paid line check: {uri} ({via}) is {number} on trunk {trunk}, {c}: \
                     allowed for {} ({})",
                    caller.who(),
                    caller.perms
                ));
                Ok(true)
            }
            Err(e) => {
                rec.note(format!(
                    "paid line check: {uri} ({via}) is {number} on trunk {trunk}: {e} for {} \
                     ({}): skipped",
                    caller.who(),
                    caller.perms
                ));
                Err(e)
            }
        }
    }

    async fn ask_sources(&self, n: &E164, rec: &mut Recorder) -> Vec<FoundTarget> {
        if self.sources.is_empty() {
            rec.note("no routing sources configured");
            return Vec::new();
        }
        let deadline = Instant::now() + self.settings().budget;
        // The sources run concurrently inside this task (no spawning: a warm-cache decision
        // should not pay for waking other threads).
        let mut pending: Vec<Option<BoxFuture<'_, (Duration, SourceAnswer)>>> = self
            .sources
            .iter()
            .map(|s| {
                let fut: BoxFuture<'_, (Duration, SourceAnswer)> = Box::pin(async move {
                    let started = Instant::now();
                    let answer = s.lookup(n, deadline).await;
                    (started.elapsed(), answer)
                });
                Some(fut)
            })
            .collect();
        let mut answers: Vec<Option<(Duration, SourceAnswer)>> = vec![None; self.sources.len()];
        let all = std::future::poll_fn(|cx| {
            let mut waiting = false;
            for (slot, answer) in pending.iter_mut().zip(answers.iter_mut()) {
                if let Some(fut) = slot {
                    match fut.as_mut().poll(cx) {
                        std::task::Poll::Ready(v) => {
                            *answer = Some(v);
                            *slot = None;
                        }
                        std::task::Poll::Pending => waiting = true,
                    }
                }
            }
            if waiting {
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        });
        // Sources honour the deadline themselves; the timeout guards against one that does not.
        let guard = deadline + Duration::from_millis(10);
        if tokio::time::timeout_at(guard, all).await.is_err() {
            rec.note(format!(
                "routing budget of {} ms ran out",
                self.settings().budget.as_millis()
            ));
        }
        drop(pending);
        let mut found = Vec::new();
        for (i, a) in answers.into_iter().enumerate() {
            let name = self.sources.get(i).map_or("source", |s| s.name());
            match a {
                Some((took, answer)) => {
                    for s in &answer.steps {
                        rec.note(format!("{name}: {s}"));
                    }
                    rec.note(format!(
                        "{name}: {} target(s) in {:.1} ms",
                        answer.targets.len(),
                        took.as_secs_f64() * 1000.0
                    ));
                    for t in &answer.targets {
                        rec.note(format!("{name}: {} ({})", t.uri, t.via));
                    }
                    found.extend(answer.targets);
                }
                None => rec.note(format!("{name}: no answer within the budget")),
            }
        }
        found
    }

    async fn locate(&self, uri: &SipUri, deadline: Instant, rec: &mut Recorder) -> Vec<Hop> {
        if let Some(hop) = literal_hop(uri) {
            rec.note(format!("locate {uri}: {hop}"));
            rec.note(format!("transport {uri}: {}", transport_reason(uri, &hop)));
            return vec![hop];
        }
        let Some(locator) = &self.locator else {
            rec.note(format!("locate {uri}: no resolver configured"));
            return Vec::new();
        };
        let located = locator.locate(uri, deadline).await;
        for s in &located.steps {
            rec.note(format!("locate {uri}: {s}"));
        }
        if located.hops.is_empty() {
            rec.note(format!("locate {uri}: no server found"));
        } else {
            let list: Vec<String> = located.hops.iter().map(|h| h.to_string()).collect();
            rec.note(format!("locate {uri}: {}", list.join(", ")));
            if let Some(first) = located.hops.first() {
                rec.note(format!("transport {uri}: {}", transport_reason(uri, first)));
            }
        }
        located.hops
    }

    /// Appends the PSTN trunks to `attempts` and makes the decision. `target` is the number that
    /// would leave on the paid lines (after whatever the sources answered): it is checked
    /// against the caller's permissions here, and the trunks are left out when it is barred.
    async fn to_pstn(
        &self,
        mut attempts: Vec<Attempt>,
        target: &Dialled,
        caller: &Caller<'_>,
        rec: &mut Recorder,
    ) -> Decision {
        let plan = &self.settings().plan;
        let (national, e164) = match target {
            Dialled::E164(n) => (plan.to_national(n), Some(n.clone())),
            Dialled::Emergency(d) | Dialled::Short(d) | Dialled::Extension(d) => (d.clone(), None),
        };
        match plan.check(target, &caller.perms) {
            Ok(c) => rec.note(format!(
                "paid line check: {target} is {c}: allowed for {} ({})",
                caller.who(),
                caller.perms
            )),
            Err(e) => {
                rec.note(format!(
                    "paid line check: {target}: {e} for {} ({}): no trunk or line",
                    caller.who(),
                    caller.perms
                ));
                if attempts.is_empty() {
                    rec.note("decision: refused");
                    return reject_number(&e);
                }
                return self.attempts_decision(attempts, rec);
            }
        }
        let national = national.as_str();
        let deadline = Instant::now() + self.settings().locate_budget;
        let mut found = 0;
        let trunks = self.trunks();
        let mut in_order: Vec<&TrunkConfig> = trunks.iter().filter(|t| t.enabled).collect();
        if let (Some(prices), Some(n)) = (self.line_prices(), &e164) {
            let (sorted, notes) = super::least_cost::order(in_order, n.digits(), prices.as_ref());
            in_order = sorted;
            for note in notes {
                rec.note(note);
            }
        }
        for t in in_order {
            if let Some(since) = self.trunk_down(&t.name) {
                rec.note(format!(
                    "trunk {} skipped: down since {since} (no answer to OPTIONS)",
                    t.name
                ));
                continue;
            }
            if let Some(why) = self.line_out(&t.name) {
                rec.note(format!("line {} skipped: {why}", t.name));
                continue;
            }
            let user = match (&e164, t.number_format) {
                (None, _) => national.to_owned(),
                (Some(n), NumberFormat::E164) => n.as_str().to_owned(),
                (Some(n), NumberFormat::International) => {
                    format!(
                        "{}{}",
                        self.settings().plan.international_prefix,
                        n.digits()
                    )
                }
                (Some(_), NumberFormat::National) => national.to_owned(),
            };
            let mut uri = t.uri.clone();
            uri.user = Some(user);
            uri.set_password(None);
            // Requests to the trunk go to its outbound proxy when it has one.
            let next_hop = t.options.outbound_proxy.as_ref().unwrap_or(&t.uri);
            let hops = self.locate(next_hop, deadline, rec).await;
            let hops = self.not_self(next_hop, hops, rec);
            for hop in hops {
                found += 1;
                attempts.push(Attempt {
                    kind: AttemptKind::Trunk {
                        name: t.name.clone(),
                    },
                    uri: uri.clone(),
                    hop,
                    auth: t.username.clone().zip(t.password.clone()),
                });
            }
        }
        if found == 0 {
            rec.note("PSTN: no trunk or line available");
        }
        if attempts.is_empty() {
            rec.note("decision: no route");
            return reject(503, "No route to the number");
        }
        self.attempts_decision(attempts, rec)
    }

    /// The decision for `attempts` as they are (notes each one).
    fn attempts_decision(&self, attempts: Vec<Attempt>, rec: &mut Recorder) -> Decision {
        for (i, a) in attempts.iter().enumerate() {
            rec.note(format!(
                "decision {}: {} {} via {}",
                i + 1,
                a.label(),
                a.uri,
                a.hop
            ));
        }
        Decision::Attempts(attempts)
    }
}

/// A URI whose host is an IP address needs no DNS (RFC 3263 §4.2).
pub fn literal_hop(uri: &SipUri) -> Option<Hop> {
    let ip = uri.host.ip()?;
    let named = uri.transport().as_deref().and_then(Proto::from_token);
    let proto = match (uri.secure, named) {
        // sips: is TLS over TCP (RFC 3261 §26.2.2); over UDP it cannot be reached.
        (true, None | Some(Proto::Tcp | Proto::Tls)) => Proto::Tls,
        (true, Some(Proto::Udp)) => return None,
        (false, Some(p)) => p,
        (false, None) => Proto::Udp,
    };
    Some(Hop {
        proto,
        addr: SocketAddr::new(ip, uri.port.unwrap_or(super::locate::default_port(proto))),
    })
}

/// Why a URI is reached over the transport of `hop`, for the explainer.
pub fn transport_reason(uri: &SipUri, hop: &Hop) -> &'static str {
    match (hop.proto, uri.secure, uri.transport().is_some()) {
        (Proto::Tls, true, _) => "TLS: the sips: URI must be reached over TLS",
        (Proto::Tls, false, true) => "TLS: the URI says transport=tls",
        (Proto::Tls, false, false) => "TLS: DNS (NAPTR SIPS+D2T / SRV _sips._tcp) offers it",
        (_, _, true) => "in clear: the URI names the transport",
        (_, _, false) => "in clear: the URI and DNS offer no TLS",
    }
}

fn reject(status: u16, reason: &str) -> Decision {
    Decision::Reject {
        status,
        reason: reason.to_owned(),
    }
}

fn reject_number(e: &NumberError) -> Decision {
    let reason = match e {
        NumberError::Incomplete => "Address Incomplete".to_owned(),
        NumberError::Invalid(_) => "Invalid Number".to_owned(),
        NumberError::UnknownExtension(_) => "Not Found".to_owned(),
        NumberError::Barred(c) => format!("Calls to {c} numbers are barred"),
    };
    reject(e.sip_status(), &reason)
}

/// A SIP URI without user parameters, for To headers built from a Request-URI.
pub fn bare(uri: &SipUri) -> SipUri {
    let mut u = uri.clone();
    u.params = Params::new();
    u.set_headers(None);
    u
}

impl fmt::Display for Route {
    /// The explainer's text: the number, each step with its time, and the decision.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "dialled: {}", self.dialled)?;
        match &self.number {
            Some(Dialled::E164(n)) => writeln!(f, "number: {n}")?,
            Some(other) => writeln!(f, "number: {other}")?,
            None => {}
        }
        if let Some(c) = self.category {
            writeln!(f, "category: {c}")?;
        }
        for s in &self.steps {
            writeln!(f, "  {:>8.3} ms  {}", s.at.as_secs_f64() * 1000.0, s.text)?;
        }
        match &self.decision {
            Decision::Extension(e) => writeln!(f, "route: extension {e}")?,
            Decision::Attempts(list) => {
                for (i, a) in list.iter().enumerate() {
                    let kind = match &a.kind {
                        AttemptKind::Sip { .. } => "sip",
                        AttemptKind::Trunk { .. } => "pstn",
                    };
                    writeln!(
                        f,
                        "route {}: {kind} {} via {} ({})",
                        i + 1,
                        a.uri,
                        a.hop,
                        a.label()
                    )?;
                }
            }
            Decision::Reject { status, reason } => {
                writeln!(f, "route: rejected {status} {reason}")?
            }
        }
        write!(
            f,
            "decided in {:.3} ms",
            self.elapsed.as_secs_f64() * 1000.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::numbering::NumberingConfig;
    use crate::routing::Permission;

    struct Fixed {
        name: &'static str,
        delay: Duration,
        targets: Vec<&'static str>,
    }

    impl RouteSource for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn lookup<'a>(&'a self, _n: &'a E164, deadline: Instant) -> BoxFuture<'a, SourceAnswer> {
            Box::pin(async move {
                let ready = Instant::now() + self.delay;
                tokio::time::sleep_until(ready.min(deadline)).await;
                if ready > deadline {
                    // A source that needs longer than the budget has nothing.
                    return SourceAnswer {
                        targets: Vec::new(),
                        steps: vec!["timed out".into()],
                    };
                }
                SourceAnswer {
                    targets: self
                        .targets
                        .iter()
                        .map(|u| FoundTarget {
                            uri: (*u).to_owned(),
                            via: format!("{} test", self.name),
                        })
                        .collect(),
                    steps: vec!["asked".into()],
                }
            })
        }
    }

    /// A source that ignores the deadline (the router must not wait for it).
    struct Stuck;

    impl RouteSource for Stuck {
        fn name(&self) -> &str {
            "stuck"
        }
        fn lookup<'a>(&'a self, _n: &'a E164, _d: Instant) -> BoxFuture<'a, SourceAnswer> {
            Box::pin(std::future::pending())
        }
    }

    struct Dns;

    impl ServerLocator for Dns {
        fn locate<'a>(&'a self, uri: &'a SipUri, _d: Instant) -> BoxFuture<'a, Located> {
            Box::pin(async move {
                let hops = match &uri.host {
                    crate::sip::uri::Host::Name(n) if n == "sip.example.test" => vec![
                        Hop {
                            proto: Proto::Udp,
                            addr: "127.0.0.1:5071".parse().unwrap(),
                        },
                        Hop {
                            proto: Proto::Tcp,
                            addr: "127.0.0.1:5072".parse().unwrap(),
                        },
                    ],
                    _ => Vec::new(),
                };
                Located {
                    hops,
                    steps: vec!["SRV".into()],
                }
            })
        }
    }

    fn trunk() -> TrunkConfig {
        let Ok(Uri::Sip(uri)) = Uri::parse("sip:127.0.0.1:5090") else {
            unreachable!()
        };
        TrunkConfig {
            name: "carrier".into(),
            uri,
            username: Some("u".into()),
            password: Some("p".into()),
            number_format: NumberFormat::National,
            enabled: true,
            sources: Vec::new(),
            options: Default::default(),
        }
    }

    fn router(sources: Vec<Arc<dyn RouteSource>>, trunks: Vec<TrunkConfig>) -> Router {
        let plan = NumberingPlan::from_config(&NumberingConfig {
            area_code: Some("30".into()),
            extension_length: Some(3),
            ..NumberingConfig::default()
        });
        let mut dir = Directory::default();
        dir.extensions.insert("100".into(), (true, None));
        dir.extensions.insert(
            "101".into(),
            (true, Some(Permissions::parse(["internal"]).unwrap())),
        );
        dir.extensions.insert("102".into(), (false, None));
        dir.dids.insert("+4930123456".into(), "100".into());
        Router::new(
            RouterSettings {
                plan,
                default_permissions: Permissions::default(),
                budget: Duration::from_millis(500),
                locate_budget: Duration::from_millis(500),
                trunks,
            },
            sources,
            Some(Arc::new(Dns)),
            dir,
        )
    }

    fn attempts(r: &Route) -> Vec<(String, String, String)> {
        match &r.decision {
            Decision::Attempts(list) => list
                .iter()
                .map(|a| (a.label(), a.uri.to_string(), a.hop.to_string()))
                .collect(),
            other => panic!("expected attempts, got {other:?}\n{r}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_trunk_is_skipped_and_explained() {
        let mut backup = trunk();
        backup.name = "backup".into();
        let Ok(Uri::Sip(uri)) = Uri::parse("sip:127.0.0.8:5060") else {
            unreachable!()
        };
        backup.uri = uri;
        let r = router(Vec::new(), vec![trunk(), backup]);
        let health = Arc::new(crate::routing::trunk_health::TrunkHealth::new());
        r.set_trunk_health(Arc::clone(&health));
        let labels =
            |route: &Route| -> Vec<String> { attempts(route).into_iter().map(|a| a.0).collect() };
        let route = r.route(Some("100"), "0301234567").await;
        assert_eq!(labels(&route), ["trunk carrier", "trunk backup"]);
        health.set_down("carrier", "Thu, 03 Dec 2026 07:00:00 GMT".into());
        let route = r.route(Some("100"), "0301234567").await;
        assert_eq!(labels(&route), ["trunk backup"]);
        let text = route.to_string();
        assert!(
            text.contains("trunk carrier skipped: down since Thu, 03 Dec 2026 07:00:00 GMT"),
            "{text}"
        );
        health.set_up("carrier");
        let route = r.route(Some("100"), "0301234567").await;
        assert_eq!(labels(&route), ["trunk carrier", "trunk backup"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_in_alarm_is_skipped_with_the_reason() {
        let mut fxo2 = trunk();
        fxo2.name = "fxo2".into();
        let mut fxo1 = trunk();
        fxo1.name = "fxo1".into();
        let r = router(Vec::new(), vec![fxo1, fxo2]);
        let health = Arc::new(crate::routing::trunk_health::TrunkHealth::new());
        r.set_trunk_health(Arc::clone(&health));
        health.set_line_out("fxo1", "in alarm (DAHDI alarm on dahdi:1)".into());
        let route = r.route(Some("100"), "0301234567").await;
        let labels: Vec<String> = attempts(&route).into_iter().map(|a| a.0).collect();
        assert_eq!(labels, ["trunk fxo2"]);
        let text = route.to_string();
        assert!(
            text.contains("line fxo1 skipped: in alarm (DAHDI alarm on dahdi:1)"),
            "{text}"
        );
        health.set_line_in("fxo1");
        let route = r.route(Some("100"), "0301234567").await;
        assert_eq!(attempts(&route).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn extension_did_and_unknown() {
        let r = router(Vec::new(), vec![trunk()]);
        assert!(
            matches!(r.route(Some("100"), "101").await.decision, Decision::Extension(e) if e == "101")
        );
        // Our own DID, dialled the national way, stays inside.
        let route = r.route(Some("101"), "030 123456").await;
        assert!(
            matches!(&route.decision, Decision::Reject { status: 403, .. }),
            "101 may only call internally: {route}"
        );
        let route = r.route(Some("100"), "030 123456").await;
        assert!(
            matches!(&route.decision, Decision::Extension(e) if e == "100"),
            "{route}"
        );
        let route = r.route(Some("100"), "103").await;
        assert!(
            matches!(&route.decision, Decision::Reject { status: 404, .. }),
            "{route}"
        );
        let route = r.route(Some("100"), "12").await;
        assert!(
            matches!(&route.decision, Decision::Reject { status: 484, .. }),
            "{route}"
        );
        let route = r.route(Some("102"), "100").await;
        assert!(
            matches!(&route.decision, Decision::Reject { status: 403, .. }),
            "{route}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn enum_hit_is_tried_before_the_pstn() {
        let enum_ = Arc::new(Fixed {
            name: "ENUM",
            delay: Duration::from_millis(20),
            targets: vec![
                "sip:bob@sip.example.test",
                "sip:alice@127.0.0.9:5080;transport=tcp",
            ],
        });
        let r = router(vec![enum_], vec![trunk()]);
        let route = r.route(Some("100"), "0301234567").await;
        assert_eq!(route.e164().map(|n| n.as_str()), Some("+49301234567"));
        assert_eq!(
            attempts(&route),
            [
                (
                    "ENUM test".into(),
                    "sip:bob@sip.example.test".into(),
                    "udp:127.0.0.1:5071".into()
                ),
                (
                    "ENUM test".into(),
                    "sip:bob@sip.example.test".into(),
                    "tcp:127.0.0.1:5072".into()
                ),
                (
                    "ENUM test".into(),
                    "sip:alice@127.0.0.9:5080;transport=tcp".into(),
                    "tcp:127.0.0.9:5080".into()
                ),
                (
                    "trunk carrier".into(),
                    "sip:0301234567@127.0.0.1:5090".into(),
                    "udp:127.0.0.1:5090".into()
                ),
            ]
        );
        let text = route.to_string();
        assert!(text.contains("sip:bob@sip.example.test"), "{text}");
        assert!(text.contains("trunk carrier"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn targets_at_our_own_address_are_skipped() {
        let enum_ = Arc::new(Fixed {
            name: "ENUM",
            delay: Duration::from_millis(1),
            targets: vec!["sip:bob@127.0.0.9:5060", "sip:carol@127.0.0.10:5060"],
        });
        // The trunk points at ourselves too (sip:127.0.0.1:5090, our wildcard listen port).
        let r = router(vec![enum_], vec![trunk()]);
        r.set_own_addrs(vec![
            (Proto::Udp, "127.0.0.9:5060".parse().unwrap()),
            (Proto::Udp, "0.0.0.0:5090".parse().unwrap()),
        ]);
        let route = r.route(Some("100"), "0301234567").await;
        assert_eq!(
            attempts(&route),
            [(
                "ENUM test".into(),
                "sip:carol@127.0.0.10:5060".into(),
                "udp:127.0.0.10:5060".into()
            )]
        );
        let text = route.to_string();
        assert!(
            text.contains("udp:127.0.0.9:5060 skipped: that is this gateway"),
            "{text}"
        );
        assert!(
            text.contains("udp:127.0.0.1:5090 skipped: that is this gateway"),
            "{text}"
        );
        // Trunks replaced on reload are used at once.
        r.set_own_addrs(Vec::new());
        r.set_trunks(Vec::new());
        let route = r.route(Some("100"), "0301234567").await;
        assert!(!route.to_string().contains("trunk carrier"), "{route}");
    }

    #[tokio::test(start_paused = true)]
    async fn e164_digits_of_our_did_reach_it() {
        let r = router(Vec::new(), vec![trunk()]);
        // As DUNDi answers carry it: no '+', which the plan alone would read as a local number.
        let route = r.route(Some("100"), "4930123456").await;
        assert!(
            matches!(&route.decision, Decision::Extension(e) if e == "100"),
            "{route}"
        );
        // Digits that are not our DID keep their usual meaning.
        let route = r.route(Some("100"), "4930999999").await;
        assert!(
            !matches!(&route.decision, Decision::Extension(_)),
            "{route}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_source_costs_the_budget_and_no_more() {
        let good = Arc::new(Fixed {
            name: "ENUM",
            delay: Duration::from_millis(30),
            targets: vec!["sip:bob@127.0.0.7"],
        });
        let r = router(vec![Arc::new(Stuck), good], vec![trunk()]);
        let t0 = Instant::now();
        let route = r.route(Some("100"), "+4930999").await;
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took <= Duration::from_millis(511),
            "{took:?}"
        );
        let a = attempts(&route);
        assert_eq!(a[0].1, "sip:bob@127.0.0.7");
        assert_eq!(a.len(), 2);
        assert!(route.to_string().contains("budget"), "{route}");
    }

    #[tokio::test(start_paused = true)]
    async fn enum_miss_goes_to_the_pstn_in_the_trunks_format() {
        let miss = Arc::new(Fixed {
            name: "ENUM",
            delay: Duration::from_millis(5),
            targets: vec![],
        });
        let mut e164_trunk = trunk();
        e164_trunk.name = "e164".into();
        e164_trunk.number_format = NumberFormat::E164;
        e164_trunk.username = None;
        e164_trunk.password = None;
        let r = router(vec![miss], vec![trunk(), e164_trunk]);
        let route = r.route(Some("100"), "00441234567890").await;
        assert_eq!(route.category, Some(Category::International));
        // 100 has the default permissions: international is barred.
        assert!(matches!(
            route.decision,
            Decision::Reject { status: 403, .. }
        ));
        let route = r.route(None, "00441234567890").await;
        let a = attempts(&route);
        assert_eq!(a[0].1, "sip:00441234567890@127.0.0.1:5090");
        assert_eq!(a[1].1, "sip:+441234567890@127.0.0.1:5090");
        match &route.decision {
            Decision::Attempts(list) => {
                assert_eq!(list[0].auth, Some(("u".into(), "p".into())));
                assert_eq!(list[1].auth, None);
            }
            _ => unreachable!(),
        }
        // Emergency: straight to the PSTN as dialled, ENUM not asked, even for a barred caller.
        let route = r.route(Some("101"), "112").await;
        assert_eq!(attempts(&route)[0].1, "sip:112@127.0.0.1:5090");
        assert!(!route.to_string().contains("ENUM"), "{route}");
    }

    #[tokio::test(start_paused = true)]
    async fn tel_results_re_enter_the_numbering_plan() {
        let tel = Arc::new(Fixed {
            name: "ENUM",
            delay: Duration::ZERO,
            targets: vec!["tel:+4930123456", "mailto:x@y.test", "sip:bad uri"],
        });
        let r = router(vec![tel], vec![trunk()]);
        let route = r.route(Some("100"), "0309876").await;
        assert!(
            matches!(&route.decision, Decision::Extension(e) if e == "100"),
            "{route}"
        );
        let text = route.to_string();
        assert!(text.contains("DID of extension 100"), "{text}");

        let ported = Arc::new(Fixed {
            name: "ENUM",
            delay: Duration::ZERO,
            targets: vec!["tel:+4940555"],
        });
        let r = router(vec![ported], vec![trunk()]);
        let route = r.route(Some("100"), "0309876").await;
        assert_eq!(attempts(&route)[0].1, "sip:040555@127.0.0.1:5090");
    }

    #[tokio::test(start_paused = true)]
    async fn no_route_at_all_is_503() {
        let r = router(Vec::new(), Vec::new());
        let route = r.route(Some("100"), "0309876").await;
        assert!(
            matches!(route.decision, Decision::Reject { status: 503, .. }),
            "{route}"
        );
        assert!(Permissions::default().allows(Permission::Mobile));
    }

    fn fixed(targets: Vec<&'static str>) -> Arc<dyn RouteSource> {
        Arc::new(Fixed {
            name: "ENUM",
            delay: Duration::ZERO,
            targets,
        })
    }

    fn refused(route: &Route) -> (u16, String) {
        match &route.decision {
            Decision::Reject { status, reason } => (*status, reason.clone()),
            other => panic!("expected a refusal, got {other:?}\n{route}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_tel_answer_is_checked_on_the_number_that_leaves() {
        // 100 (default permissions) may call the national number it dialled, but ENUM turns it
        // into an international one: refused, whatever the source.
        let r = router(vec![fixed(vec!["tel:+882123456789"])], vec![trunk()]);
        let route = r.route(Some("100"), "0309876").await;
        assert_eq!(route.category, Some(Category::Local));
        let (status, reason) = refused(&route);
        assert_eq!(status, 403);
        assert!(reason.contains("international"), "{reason}");
        let text = route.to_string();
        assert!(
            text.contains(
                "paid line check: +882123456789: calls to international numbers are barred"
            ),
            "{text}"
        );
        // Premium, the same.
        let r = router(vec![fixed(vec!["tel:+499001234567"])], vec![trunk()]);
        let (status, reason) = refused(&r.route(Some("100"), "0309876").await);
        assert_eq!(
            (status, reason.contains("premium")),
            (403, true),
            "{reason}"
        );
        // No source may turn an ordinary number into a premium one, even for a caller with
        // every permission …
        let route = r.route(None, "0309876").await;
        let (status, _) = refused(&route);
        assert_eq!(status, 403);
        assert!(
            route
                .to_string()
                .contains("may not turn a local number into a premium one"),
            "{route}"
        );
        // … but a premium number may be ported to another premium number; the explainer shows
        // the check line.
        let route = r.route(None, "0900 7654321").await;
        assert_eq!(attempts(&route)[0].1, "sip:09001234567@127.0.0.1:5090");
        assert!(
            route
                .to_string()
                .contains("paid line check: +499001234567 is premium: allowed"),
            "{route}"
        );
        // An international caller is checked on the international number the answer gave.
        let r = router(vec![fixed(vec!["tel:+441234567890"])], vec![trunk()]);
        let route = r.route(None, "0309876").await;
        assert_eq!(attempts(&route)[0].1, "sip:00441234567890@127.0.0.1:5090");
        // A permitted answer passes with its check line.
        let r = router(vec![fixed(vec!["tel:+4940555"])], vec![trunk()]);
        let route = r.route(Some("100"), "0309876").await;
        assert_eq!(attempts(&route)[0].1, "sip:040555@127.0.0.1:5090");
        assert!(
            route
                .to_string()
                .contains("paid line check: +4940555 is national: allowed for 100"),
            "{route}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn free_sip_targets_stay_but_the_barred_paid_line_goes() {
        let r = router(
            vec![fixed(vec![
                "sip:+499001234567@127.0.0.9:5080",
                "tel:+441234567890",
            ])],
            vec![trunk()],
        );
        let route = r.route(Some("100"), "0309876").await;
        let a = attempts(&route);
        // The other office's SIP URI (a free call, whatever its user part) stays; the trunk
        // with the international number does not.
        assert_eq!(a.len(), 1, "{route}");
        assert_eq!(a[0].1, "sip:+499001234567@127.0.0.9:5080");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sip_target_on_the_trunk_is_a_paid_number() {
        // A SIP URI on the trunk's address with a barred number: the call is refused (the
        // source pointed it at a number the caller may not call; no paid line is used).
        for target in [
            "sip:+441234567890@127.0.0.1:5090",
            "sip:00441234567890@127.0.0.1:5090;user=phone",
        ] {
            let r = router(vec![fixed(vec![target])], vec![trunk()]);
            let route = r.route(Some("100"), "0309876").await;
            let (status, reason) = refused(&route);
            assert_eq!(status, 403, "{route}");
            assert!(reason.contains("international"), "{reason}");
            let text = route.to_string();
            assert!(
                text.contains("on trunk carrier: calls to international numbers are barred"),
                "{text}"
            );
        }
        // A user part that is no number at all is not sent to the trunk either; the dialled
        // (permitted) number still is.
        let r = router(vec![fixed(vec!["sip:evil@127.0.0.1:5090"])], vec![trunk()]);
        let route = r.route(Some("100"), "0309876").await;
        let a = attempts(&route);
        assert_eq!(a.len(), 1, "{route}");
        assert_eq!(a[0].1, "sip:0309876@127.0.0.1:5090");
        // The caller allowed international calls keeps the SIP target on the trunk.
        let r = router(
            vec![fixed(vec!["sip:+441234567890@127.0.0.1:5090"])],
            vec![trunk()],
        );
        let route = r.route(None, "0309876").await;
        assert_eq!(attempts(&route)[0].0, "ENUM test");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sip_target_on_a_trunk_added_after_start_is_a_paid_number() {
        // The router starts with no trunk; the dashboard (or a SIGHUP) adds one. A source's SIP
        // URI on that trunk's address is a paid number from then on, not a free SIP call.
        let r = router(
            vec![fixed(vec!["sip:+441234567890@127.0.0.1:5090"])],
            Vec::new(),
        );
        r.set_trunks(vec![trunk()]);
        let route = r.route(Some("100"), "0309876").await;
        let (status, reason) = refused(&route);
        assert_eq!(status, 403, "{route}");
        assert!(reason.contains("international"), "{reason}");
    }

    #[tokio::test(start_paused = true)]
    async fn directory_enquiries_need_the_premium_permission() {
        let r = router(Vec::new(), vec![trunk()]);
        let (status, reason) = refused(&r.route(Some("100"), "11833").await);
        assert_eq!(status, 403);
        assert!(reason.contains("premium"), "{reason}");
        let route = r.route(Some("100"), "116117").await;
        assert_eq!(attempts(&route)[0].1, "sip:116117@127.0.0.1:5090");
        let route = r.route(Some("101"), "112").await;
        assert_eq!(attempts(&route)[0].1, "sip:112@127.0.0.1:5090");
    }

    #[tokio::test(start_paused = true)]
    async fn a_name_that_resolves_to_the_trunk_is_the_trunk() {
        // sip.example.test resolves (test locator) to 127.0.0.1:5071 and :5072; the trunk is
        // at 127.0.0.1:5071.
        let mut t = trunk();
        let Ok(Uri::Sip(uri)) = Uri::parse("sip:127.0.0.1:5071") else {
            unreachable!()
        };
        t.uri = uri;
        let r = router(
            vec![fixed(vec!["sip:+441234567890@sip.example.test"])],
            vec![t.clone()],
        );
        let route = r.route(Some("100"), "0309876").await;
        let (status, reason) = refused(&route);
        assert_eq!(status, 403, "{route}");
        assert!(reason.contains("international"), "{reason}");
        // With the permission the target stays, both hops.
        let route = r.route(None, "0309876").await;
        let a = attempts(&route);
        assert_eq!(a[0].1, "sip:+441234567890@sip.example.test", "{route}");
        // No source turns an ordinary number into a premium one on the trunk either.
        let r = router(vec![fixed(vec!["sip:09001234567@127.0.0.1:5071"])], vec![t]);
        let route = r.route(None, "0309876").await;
        let (status, reason) = refused(&route);
        assert_eq!((status, reason.contains("premium")), (403, true), "{route}");
    }
}
