//! ENUM look-ups (RFC 6116, RFC 3761) through hickory-resolver, under a deadline, with our own
//! cache; and the DNS layer that RFC 3263 server location ([`super::locate`]) shares.
//!
//! [`EnumResolver::lookup`] asks every configured ENUM tree (`e164.arpa`, `e164.org`, a private
//! tree …) for the number's NAPTR records **in parallel**, each query bounded by the caller's
//! deadline: a tree whose nameserver does not answer costs the budget, never more, and does not
//! hide the answer of another tree. Non-terminal records (empty flags, a replacement domain) are
//! followed with [`NaptrChain`]'s loop guard (`max_chain` hops). Records are chosen with
//! [`super::naptr::select`], one record at a time so that every target keeps its record's order,
//! preference and enumservice, with the same order-group rule. Rules that cannot be used (a
//! broken regexp, a bad URI) are skipped with a warning and recorded as a [`LookupStep`], as is
//! every query, so that `pasarela route` can explain a decision.
//!
//! # Nameservers
//!
//! [`EnumSettings::nameservers`] (empty: the system's `/etc/resolv.conf`) serves every tree,
//! unless [`EnumSettings::tree_nameservers`] names servers for a tree: a private ENUM tree is
//! usually served by one known server (a partner's, or our own zone server) and not reachable
//! through public DNS. Each set of nameservers is one hickory resolver, asked over UDP with TCP
//! on truncation, at most [`EnumSettings::query_timeout`] per attempt and one retry, and never
//! beyond the caller's deadline (every query runs under `tokio::time::timeout_at`).
//!
//! # Cache
//!
//! hickory's own cache is switched off; [`DnsCache`] keeps answers by queried domain (and type):
//! positive answers for the smallest TTL of their records, negative answers (NXDOMAIN, or no
//! record of the type) for the negative TTL of the zone's SOA (RFC 2308), 60 s when the server
//! sent none. Timeouts and server failures are not cached. TTLs are capped at one day. The cache
//! holds at most `cache_entries` answers: when full, expired answers go first, then the one that
//! expires soonest. For NAPTR answers the cache also keeps the rules evaluated for the last
//! number asked, so that a warm look-up does no regular-expression work and no DNS: a hash look-up
//! per tree and the copies that make the answer.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;

use super::locate::{Locator, SrvRecord};
use super::naptr::{enum_domain, select, Naptr, NaptrChain, NaptrError, NaptrOutcome};
use super::numbering::E164;

/// How long a negative answer is kept when the server sent no SOA.
const NEGATIVE_FALLBACK: Duration = Duration::from_secs(60);
/// The longest any answer is kept.
const MAX_TTL: Duration = Duration::from_secs(86_400);

/// What [`EnumResolver`] (and [`Locator`]) need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumSettings {
    /// The ENUM trees to ask, in order of preference (`e164.arpa`, …).
    pub suffixes: Vec<String>,
    /// The nameservers to ask (recursive resolvers, or authoritative servers for private trees);
    /// empty: the system configuration (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    /// Non-terminal NAPTR records followed at most, per tree.
    pub max_chain: usize,
    /// Answers kept in the cache at most.
    pub cache_entries: usize,
    /// Nameservers for particular trees (suffix, servers), instead of `nameservers`.
    pub tree_nameservers: Vec<(String, Vec<SocketAddr>)>,
    /// hickory's timeout per attempt; every query also ends at the look-up's deadline.
    pub query_timeout: Duration,
}

impl Default for EnumSettings {
    fn default() -> Self {
        EnumSettings {
            suffixes: vec!["e164.arpa".to_owned()],
            nameservers: Vec::new(),
            max_chain: 5,
            cache_entries: 10_000,
            tree_nameservers: Vec::new(),
            query_timeout: Duration::from_secs(2),
        }
    }
}

/// Why a resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolverError {
    /// No nameservers were configured and the system configuration could not be read.
    #[error("no nameservers configured and the system resolver configuration is unusable: {0}")]
    SystemConfig(String),
    /// hickory refused the configuration.
    #[error("cannot set up the DNS resolver: {0}")]
    Build(String),
}

/// The record types asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryType {
    Naptr,
    Srv,
    A,
    Aaaa,
}

impl QueryType {
    const COUNT: usize = 4;

    fn index(self) -> usize {
        match self {
            QueryType::Naptr => 0,
            QueryType::Srv => 1,
            QueryType::A => 2,
            QueryType::Aaaa => 3,
        }
    }

    fn from_index(i: usize) -> QueryType {
        match i {
            0 => QueryType::Naptr,
            1 => QueryType::Srv,
            2 => QueryType::A,
            _ => QueryType::Aaaa,
        }
    }

    fn record_type(self) -> RecordType {
        match self {
            QueryType::Naptr => RecordType::NAPTR,
            QueryType::Srv => RecordType::SRV,
            QueryType::A => RecordType::A,
            QueryType::Aaaa => RecordType::AAAA,
        }
    }
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryType::Naptr => "NAPTR",
            QueryType::Srv => "SRV",
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
        })
    }
}

/// A SIP or tel URI found through ENUM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumTarget {
    /// `sip:…`, `sips:…` or `tel:+…`, validated by [`super::naptr::apply_regexp`].
    pub uri: String,
    /// The tree it was found in.
    pub suffix: String,
    /// The NAPTR record's order and preference.
    pub order: u16,
    pub preference: u16,
    /// The NAPTR record's Services field (`E2U+sip`, …).
    pub service: String,
}

impl fmt::Display for EnumTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} {} {} in {})",
            self.uri, self.service, self.order, self.preference, self.suffix
        )
    }
}

/// What a cached answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheHit {
    /// This many records.
    Records(usize),
    /// The name exists without records of the type.
    NoRecords,
    /// The name does not exist.
    NxDomain,
}

/// What one step of a look-up found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The server answered with this many records.
    Records(usize),
    /// The name exists without records of the type.
    NoRecords,
    /// The name does not exist.
    NxDomain,
    /// No answer before the deadline (or hickory's own timeout).
    Timeout,
    /// The server failed (SERVFAIL, REFUSED, a network error …).
    Error(String),
    /// Answered from the cache.
    Cached { hit: CacheHit, expires_in: Duration },
    /// A record that could not be used, and why.
    SkippedRule(String),
    /// A non-terminal record not followed: a loop, or more than `max_chain` hops.
    Loop,
}

/// One query (or one skipped rule) of a look-up, for logs and `pasarela route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupStep {
    /// The ENUM tree; empty for server location.
    pub suffix: String,
    /// The name asked for.
    pub domain: String,
    pub qtype: QueryType,
    /// Time spent on this step.
    pub elapsed: Duration,
    pub outcome: StepOutcome,
}

/// Milliseconds with one decimal.
struct Ms(Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} ms", self.0.as_secs_f64() * 1000.0)
    }
}

impl fmt::Display for LookupStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.suffix.is_empty() {
            write!(f, "{} ", self.suffix)?;
        }
        write!(f, "{}: ", self.domain)?;
        let t = self.qtype;
        let ms = Ms(self.elapsed);
        match &self.outcome {
            StepOutcome::Records(n) => write!(f, "{n} {t} in {ms}"),
            StepOutcome::NoRecords => write!(f, "no {t} in {ms}"),
            StepOutcome::NxDomain => write!(f, "{t} NXDOMAIN in {ms}"),
            StepOutcome::Timeout => write!(f, "{t} timeout after {ms}"),
            StepOutcome::Error(e) => write!(f, "{t} failed after {ms}: {e}"),
            StepOutcome::Cached { hit, expires_in } => {
                match hit {
                    CacheHit::Records(n) => write!(f, "{n} {t} from cache")?,
                    CacheHit::NoRecords => write!(f, "no {t} (cached)")?,
                    CacheHit::NxDomain => write!(f, "{t} NXDOMAIN (cached)")?,
                }
                write!(f, ", expires in {} s", expires_in.as_secs())
            }
            StepOutcome::SkippedRule(why) => write!(f, "skipped {t} record: {why}"),
            StepOutcome::Loop => write!(f, "not followed: loop or too many hops"),
        }
    }
}

/// The result of an ENUM look-up: the targets in the order to try them, and how they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnumAnswer {
    /// By tree (in the configured order), then in NAPTR order within a tree: order, then
    /// preference, with the targets of a followed non-terminal record in its place.
    pub targets: Vec<EnumTarget>,
    pub steps: Vec<LookupStep>,
}

/// A cache entry as shown to admins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntryView {
    pub domain: String,
    pub qtype: QueryType,
    pub answer: CacheHit,
    pub expires_in: Duration,
}

/// ENUM look-ups with a cache; cheap to clone (shared inside). Its settings can be replaced
/// while it is in use ([`EnumResolver::reconfigure`]): every clone then asks the new trees and
/// nameservers; a look-up under way finishes with the settings it started with.
#[derive(Clone)]
pub struct EnumResolver {
    shared: Arc<std::sync::RwLock<Arc<EnumInner>>>,
}

struct EnumInner {
    trees: Vec<Tree>,
    max_chain: usize,
    core: Arc<DnsCore>,
    settings: EnumSettings,
}

/// One ENUM tree and who answers for it.
struct Tree {
    /// Lower case, no trailing dot.
    suffix: String,
    /// Index into [`DnsCore::resolvers`].
    resolver: usize,
}

impl fmt::Debug for EnumResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnumResolver")
            .field("settings", &self.inner().settings)
            .finish()
    }
}

impl EnumResolver {
    /// Sets up the resolvers; no query is sent yet.
    pub fn new(settings: EnumSettings) -> Result<EnumResolver, ResolverError> {
        Ok(EnumResolver {
            shared: Arc::new(std::sync::RwLock::new(Arc::new(EnumInner::new(settings)?))),
        })
    }

    /// The settings and resolvers in use now.
    fn inner(&self) -> Arc<EnumInner> {
        match self.shared.read() {
            Ok(i) => Arc::clone(&i),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Uses `settings` from the next look-up on (a change from the dashboard): new trees,
    /// nameservers and limits, and a fresh cache (answers of the old trees are not reused).
    /// Look-ups under way finish with the settings they started with. Unchanged settings keep
    /// the resolver and its cache as they are.
    pub fn reconfigure(&self, settings: EnumSettings) -> Result<bool, ResolverError> {
        if self.inner().settings == settings {
            return Ok(false);
        }
        let fresh = Arc::new(EnumInner::new(settings)?);
        match self.shared.write() {
            Ok(mut i) => *i = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(true)
    }

    /// The settings in use.
    pub fn settings(&self) -> EnumSettings {
        self.inner().settings.clone()
    }

    /// A server locator sharing this resolver's default nameservers and cache (those in use
    /// now: take a new one after [`EnumResolver::reconfigure`]).
    pub fn locator(&self) -> Locator {
        Locator::from_core(self.inner().core.clone())
    }

    /// The SIP (and tel) targets of `number` in every tree, found before `deadline`.
    pub async fn lookup(&self, number: &E164, deadline: tokio::time::Instant) -> EnumAnswer {
        self.inner().lookup(number, deadline).await
    }

    /// The cache's entries, for admins.
    pub fn cache_entries(&self) -> Vec<CacheEntryView> {
        self.inner().core.lock_cache().entries(Instant::now())
    }

    /// Forgets every cached answer.
    pub fn flush_cache(&self) {
        self.inner().core.lock_cache().flush();
    }
}

impl EnumInner {
    fn new(settings: EnumSettings) -> Result<EnumInner, ResolverError> {
        let mut resolvers = vec![build_resolver(
            &settings.nameservers,
            settings.query_timeout,
        )?];
        let mut trees = Vec::with_capacity(settings.suffixes.len());
        for s in &settings.suffixes {
            let suffix = normalise(s);
            let own = settings
                .tree_nameservers
                .iter()
                .find(|(t, servers)| normalise(t) == suffix && !servers.is_empty());
            let resolver = match own {
                Some((_, servers)) => {
                    resolvers.push(build_resolver(servers, settings.query_timeout)?);
                    resolvers.len() - 1
                }
                None => 0,
            };
            trees.push(Tree { suffix, resolver });
        }
        let core = Arc::new(DnsCore {
            resolvers,
            cache: Mutex::new(DnsCache::new(settings.cache_entries)),
        });
        Ok(EnumInner {
            trees,
            max_chain: settings.max_chain,
            core,
            settings,
        })
    }

    async fn lookup(&self, number: &E164, deadline: tokio::time::Instant) -> EnumAnswer {
        let aus = number.as_str();
        let walks: Vec<_> = self
            .trees
            .iter()
            .map(|tree| self.walk_tree(tree, number, aus, deadline))
            .collect();
        let mut answer = EnumAnswer::default();
        for (targets, steps) in join_all(walks).await {
            answer.targets.extend(targets);
            answer.steps.extend(steps);
        }
        answer
    }

    /// One tree, depth first through non-terminal records.
    async fn walk_tree(
        &self,
        tree: &Tree,
        number: &E164,
        aus: &str,
        deadline: tokio::time::Instant,
    ) -> (Vec<EnumTarget>, Vec<LookupStep>) {
        let mut targets = Vec::new();
        let mut steps = Vec::new();
        let mut chain = NaptrChain::new(self.max_chain.saturating_add(1));
        let first = enum_domain(number, &tree.suffix);
        // The first visit of a fresh chain cannot fail.
        let _ = chain.visit(&first);
        let mut stack: Vec<(Arc<[Rule]>, usize)> = Vec::new();
        if let Some(rules) = self.rules(tree, &first, aus, deadline, &mut steps).await {
            stack.push((rules, 0));
        }
        while let Some(top) = stack.last_mut() {
            let (rules, i) = (top.0.clone(), top.1);
            top.1 += 1;
            let Some(rule) = rules.get(i) else {
                stack.pop();
                continue;
            };
            match &rule.result {
                Ok(NaptrOutcome::Uri(uri)) => targets.push(EnumTarget {
                    uri: uri.clone(),
                    suffix: tree.suffix.clone(),
                    order: rule.order,
                    preference: rule.preference,
                    service: rule.service.to_string(),
                }),
                Ok(NaptrOutcome::NonTerminal(next)) => {
                    if chain.visit(next).is_err() {
                        tracing::warn!(
                            suffix = %tree.suffix, number = aus, domain = %next,
                            "ENUM: non-terminal NAPTR not followed (loop or too many hops)"
                        );
                        steps.push(LookupStep {
                            suffix: tree.suffix.clone(),
                            domain: next.clone(),
                            qtype: QueryType::Naptr,
                            elapsed: Duration::ZERO,
                            outcome: StepOutcome::Loop,
                        });
                        continue;
                    }
                    if let Some(rules) = self.rules(tree, next, aus, deadline, &mut steps).await {
                        stack.push((rules, 0));
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        suffix = %tree.suffix, number = aus, domain = %rule.domain, error = %e,
                        "ENUM: NAPTR record skipped"
                    );
                    steps.push(LookupStep {
                        suffix: tree.suffix.clone(),
                        domain: rule.domain.to_string(),
                        qtype: QueryType::Naptr,
                        elapsed: Duration::ZERO,
                        outcome: StepOutcome::SkippedRule(e.to_string()),
                    });
                }
            }
        }
        (targets, steps)
    }

    /// The rules of `domain` for `aus`: from the cache (evaluated once per number), else from DNS.
    async fn rules(
        &self,
        tree: &Tree,
        domain: &str,
        aus: &str,
        deadline: tokio::time::Instant,
        steps: &mut Vec<LookupStep>,
    ) -> Option<Arc<[Rule]>> {
        let started = Instant::now();
        let memo = self.core.lock_cache().naptr_memo(domain, aus, started);
        if let Some((rules, hit, expires_in)) = memo {
            steps.push(LookupStep {
                suffix: tree.suffix.clone(),
                domain: domain.to_owned(),
                qtype: QueryType::Naptr,
                elapsed: started.elapsed(),
                outcome: StepOutcome::Cached { hit, expires_in },
            });
            return rules;
        }
        let (answer, step) = self
            .core
            .query(
                tree.resolver,
                &tree.suffix,
                QueryType::Naptr,
                domain,
                deadline,
            )
            .await;
        steps.push(step);
        let Some(RecordSet::Naptr(records)) = answer else {
            return None;
        };
        let rules: Arc<[Rule]> = evaluate(&records, domain, aus).into();
        self.core
            .lock_cache()
            .set_naptr_memo(domain, aus, &records, rules.clone());
        Some(rules)
    }
}

/// A NAPTR record evaluated for one number: what [`select`] says about it, with the record's
/// fields that a target carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rule {
    order: u16,
    preference: u16,
    service: Box<str>,
    domain: Box<str>,
    result: Result<NaptrOutcome, NaptrError>,
}

/// The records' rules in the order to try them. [`select`] does not say which record gave which
/// outcome, so it is asked about one record at a time, and its order-group rule (RFC 3403 §4.1:
/// stop after the first order group with a usable record) is applied here over the results.
fn evaluate(records: &[Naptr], domain: &str, aus: &str) -> Vec<Rule> {
    let mut sorted: Vec<&Naptr> = records.iter().collect();
    sorted.sort_by_key(|r| (r.order, r.preference));
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(first) = sorted.get(i) {
        let order = first.order;
        let mut matched = false;
        while let Some(r) = sorted.get(i).filter(|r| r.order == order) {
            i += 1;
            for result in select(std::slice::from_ref(*r), aus) {
                matched |= result.is_ok();
                out.push(Rule {
                    order: r.order,
                    preference: r.preference,
                    service: r.services.as_str().into(),
                    domain: domain.into(),
                    result,
                });
            }
        }
        if matched {
            break;
        }
    }
    out
}

/// Lower case, no surrounding dots or blanks.
fn normalise(name: &str) -> String {
    name.trim().trim_matches('.').to_ascii_lowercase()
}

/// Polls every future in turn until all are done; the outputs in the order of the inputs.
/// (All run in the caller's task: DNS waits are I/O, and dropping the caller drops them all.)
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Builds a hickory resolver that neither caches nor retries more than once.
fn build_resolver(
    nameservers: &[SocketAddr],
    query_timeout: Duration,
) -> Result<TokioResolver, ResolverError> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|e| ResolverError::SystemConfig(e.to_string()))?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // Our cache, not hickory's: a capacity of 0 disables its store (moka keeps no map). Its TTL
    // bounds are left alone, since they rewrite the TTLs of the records it returns.
    opts.cache_size = 0;
    // One retry at most, each attempt bounded; the caller's deadline bounds the whole.
    opts.timeout = query_timeout;
    opts.attempts = 1;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.try_tcp_on_error = false;
    builder
        .build()
        .map_err(|e| ResolverError::Build(e.to_string()))
}

/// Records of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordSet {
    Naptr(Arc<[Naptr]>),
    Srv(Arc<[SrvRecord]>),
    Addrs(Arc<[IpAddr]>),
}

impl RecordSet {
    fn len(&self) -> usize {
        match self {
            RecordSet::Naptr(r) => r.len(),
            RecordSet::Srv(r) => r.len(),
            RecordSet::Addrs(r) => r.len(),
        }
    }
}

/// The resolvers and the cache, shared by ENUM look-ups and server location.
pub(crate) struct DnsCore {
    /// 0 is the default set of nameservers; others serve particular ENUM trees.
    resolvers: Vec<TokioResolver>,
    cache: Mutex<DnsCache>,
}

/// What a query gave, before it is cached.
enum Fetched {
    Records(RecordSet, Duration),
    Negative(CacheHit, Duration),
    Failed(StepOutcome),
}

impl DnsCore {
    /// A core with its own resolver and cache (for a [`Locator`] made without an ENUM resolver).
    pub(crate) fn new(settings: &EnumSettings) -> Result<DnsCore, ResolverError> {
        Ok(DnsCore {
            resolvers: vec![build_resolver(
                &settings.nameservers,
                settings.query_timeout,
            )?],
            cache: Mutex::new(DnsCache::new(settings.cache_entries)),
        })
    }

    pub(crate) fn lock_cache(&self) -> std::sync::MutexGuard<'_, DnsCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `qtype` records of `domain` (lower case, no trailing dot): from the cache, else from the
    /// resolver `resolver` before `deadline`. `None` for negative answers and failures; the step
    /// says which.
    pub(crate) async fn query(
        &self,
        resolver: usize,
        suffix: &str,
        qtype: QueryType,
        domain: &str,
        deadline: tokio::time::Instant,
    ) -> (Option<RecordSet>, LookupStep) {
        let started = Instant::now();
        let step = |outcome| LookupStep {
            suffix: suffix.to_owned(),
            domain: domain.to_owned(),
            qtype,
            elapsed: started.elapsed(),
            outcome,
        };
        if let Some(entry) = self.lock_cache().get(domain, qtype, started) {
            let records = match &entry.answer {
                Cached::Records(r) => Some(r.clone()),
                Cached::NoRecords | Cached::NxDomain => None,
            };
            let outcome = StepOutcome::Cached {
                hit: entry.answer.hit(),
                expires_in: entry.expires.saturating_duration_since(started),
            };
            return (records, step(outcome));
        }
        let Some(resolver) = self.resolvers.get(resolver).or(self.resolvers.first()) else {
            return (None, step(StepOutcome::Error("no resolver".to_owned())));
        };
        let fetched = fetch(resolver, qtype, domain, deadline).await;
        let now = Instant::now();
        match fetched {
            Fetched::Records(records, ttl) => {
                let n = records.len();
                self.lock_cache()
                    .insert(domain, qtype, Cached::Records(records.clone()), ttl, now);
                (Some(records), step(StepOutcome::Records(n)))
            }
            Fetched::Negative(hit, ttl) => {
                let (cached, outcome) = match hit {
                    CacheHit::NxDomain => (Cached::NxDomain, StepOutcome::NxDomain),
                    _ => (Cached::NoRecords, StepOutcome::NoRecords),
                };
                self.lock_cache().insert(domain, qtype, cached, ttl, now);
                (None, step(outcome))
            }
            Fetched::Failed(outcome) => (None, step(outcome)),
        }
    }
}

/// One query through hickory, bounded by `deadline`.
async fn fetch(
    resolver: &TokioResolver,
    qtype: QueryType,
    domain: &str,
    deadline: tokio::time::Instant,
) -> Fetched {
    if tokio::time::Instant::now() >= deadline {
        return Fetched::Failed(StepOutcome::Timeout);
    }
    let name = match Name::from_ascii(format!("{domain}.")) {
        Ok(n) => n,
        Err(e) => return Fetched::Failed(StepOutcome::Error(format!("bad name: {e}"))),
    };
    let lookup =
        match tokio::time::timeout_at(deadline, resolver.lookup(name, qtype.record_type())).await {
            Err(_) | Ok(Err(NetError::Timeout)) => return Fetched::Failed(StepOutcome::Timeout),
            Ok(Err(NetError::Dns(DnsError::NoRecordsFound(no)))) => {
                let ttl = no
                    .negative_ttl
                    .map_or(NEGATIVE_FALLBACK, |s| Duration::from_secs(u64::from(s)))
                    .min(MAX_TTL);
                let hit = if no.response_code == ResponseCode::NXDomain {
                    CacheHit::NxDomain
                } else {
                    CacheHit::NoRecords
                };
                return Fetched::Negative(hit, ttl);
            }
            Ok(Err(e)) => return Fetched::Failed(StepOutcome::Error(e.to_string())),
            Ok(Ok(lookup)) => lookup,
        };
    let mut ttl = u32::MAX;
    let mut naptrs = Vec::new();
    let mut srvs = Vec::new();
    let mut addrs = Vec::new();
    for record in lookup.answers() {
        let before = naptrs.len() + srvs.len() + addrs.len();
        match (&record.data, qtype) {
            (RData::NAPTR(n), QueryType::Naptr) => naptrs.push(Naptr {
                order: n.order,
                preference: n.preference,
                flags: String::from_utf8_lossy(&n.flags).into_owned(),
                services: String::from_utf8_lossy(&n.services).into_owned(),
                regexp: String::from_utf8_lossy(&n.regexp).into_owned(),
                replacement: name_text(&n.replacement),
            }),
            (RData::SRV(s), QueryType::Srv) => srvs.push(SrvRecord {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: name_text(&s.target),
            }),
            (RData::A(a), QueryType::A) => addrs.push(IpAddr::V4(a.0)),
            (RData::AAAA(a), QueryType::Aaaa) => addrs.push(IpAddr::V6(a.0)),
            _ => {}
        }
        if naptrs.len() + srvs.len() + addrs.len() > before {
            ttl = ttl.min(record.ttl);
        }
    }
    let set = match qtype {
        QueryType::Naptr => RecordSet::Naptr(naptrs.into()),
        QueryType::Srv => RecordSet::Srv(srvs.into()),
        QueryType::A | QueryType::Aaaa => RecordSet::Addrs(addrs.into()),
    };
    if set.len() == 0 {
        // Only other types (a CNAME without its target, say): as good as none.
        return Fetched::Negative(CacheHit::NoRecords, NEGATIVE_FALLBACK);
    }
    Fetched::Records(set, Duration::from_secs(u64::from(ttl)).min(MAX_TTL))
}

/// A name as text: lower case, no trailing dot; `.` for the root.
fn name_text(name: &Name) -> String {
    if name.is_root() {
        return ".".to_owned();
    }
    let mut s = name.to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s.make_ascii_lowercase();
    s
}

pub(crate) use cache::{Cached, DnsCache};

/// The answer cache; time is an argument so that tests need no clock.
mod cache {
    use super::*;

    /// A cached answer.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Cached {
        Records(RecordSet),
        NoRecords,
        NxDomain,
    }

    impl Cached {
        pub(crate) fn hit(&self) -> CacheHit {
            match self {
                Cached::Records(r) => CacheHit::Records(r.len()),
                Cached::NoRecords => CacheHit::NoRecords,
                Cached::NxDomain => CacheHit::NxDomain,
            }
        }
    }

    /// An answer and until when it may be used.
    #[derive(Debug, Clone)]
    pub(crate) struct Entry {
        pub(crate) answer: Cached,
        pub(crate) expires: Instant,
        /// NAPTR only: the rules evaluated for the last number asked.
        memo: Option<(Box<str>, Arc<[Rule]>)>,
    }

    /// Answers by domain and type, at most `capacity` of them.
    #[derive(Debug)]
    pub(crate) struct DnsCache {
        map: HashMap<Box<str>, [Option<Entry>; QueryType::COUNT]>,
        len: usize,
        capacity: usize,
    }

    impl DnsCache {
        pub(crate) fn new(capacity: usize) -> DnsCache {
            DnsCache {
                map: HashMap::new(),
                len: 0,
                capacity,
            }
        }

        /// Answers held, expired ones included until they are evicted.
        #[cfg(test)]
        pub(crate) fn len(&self) -> usize {
            self.len
        }

        /// The current answer for `domain` and `qtype`, if any.
        pub(crate) fn get(&self, domain: &str, qtype: QueryType, now: Instant) -> Option<&Entry> {
            self.map
                .get(domain)?
                .get(qtype.index())?
                .as_ref()
                .filter(|e| e.expires > now)
        }

        /// Keeps `answer` for `ttl` from `now`; a zero TTL is not kept (RFC 1035: use once).
        pub(crate) fn insert(
            &mut self,
            domain: &str,
            qtype: QueryType,
            answer: Cached,
            ttl: Duration,
            now: Instant,
        ) {
            if ttl.is_zero() || self.capacity == 0 {
                self.remove(domain, qtype);
                return;
            }
            let exists = self
                .map
                .get(domain)
                .and_then(|slots| slots.get(qtype.index()))
                .is_some_and(Option::is_some);
            if !exists && self.len >= self.capacity {
                self.make_room(now);
            }
            let slots = self
                .map
                .entry(domain.into())
                .or_insert_with(|| std::array::from_fn(|_| None));
            if let Some(slot) = slots.get_mut(qtype.index()) {
                if slot.is_none() {
                    self.len += 1;
                }
                *slot = Some(Entry {
                    answer,
                    expires: now + ttl,
                    memo: None,
                });
            }
        }

        /// The memoised NAPTR rules of `domain` for `aus`, or its cached negative answer:
        /// `(rules, what the cache holds, time left)`. `None` when the rules must be computed.
        #[allow(clippy::type_complexity)]
        pub(crate) fn naptr_memo(
            &self,
            domain: &str,
            aus: &str,
            now: Instant,
        ) -> Option<(Option<Arc<[Rule]>>, CacheHit, Duration)> {
            let entry = self.get(domain, QueryType::Naptr, now)?;
            let left = entry.expires.saturating_duration_since(now);
            match &entry.answer {
                Cached::Records(_) => {
                    let (memo_aus, rules) = entry.memo.as_ref()?;
                    (&**memo_aus == aus).then(|| (Some(rules.clone()), entry.answer.hit(), left))
                }
                other => Some((None, other.hit(), left)),
            }
        }

        /// Remembers the rules of `domain`'s cached NAPTR answer for `aus`, if that answer is
        /// still `records` (another task may have replaced it meanwhile).
        pub(crate) fn set_naptr_memo(
            &mut self,
            domain: &str,
            aus: &str,
            records: &Arc<[Naptr]>,
            rules: Arc<[Rule]>,
        ) {
            let slot = self
                .map
                .get_mut(domain)
                .and_then(|slots| slots.get_mut(QueryType::Naptr.index()))
                .and_then(Option::as_mut);
            let Some(entry) = slot else {
                return;
            };
            if let Cached::Records(RecordSet::Naptr(current)) = &entry.answer {
                if Arc::ptr_eq(current, records) {
                    entry.memo = Some((aus.into(), rules));
                }
            }
        }

        /// Forgets everything.
        pub(crate) fn flush(&mut self) {
            self.map.clear();
            self.len = 0;
        }

        /// The current answers, soonest to expire first.
        pub(crate) fn entries(&self, now: Instant) -> Vec<CacheEntryView> {
            let mut out: Vec<CacheEntryView> = self
                .map
                .iter()
                .flat_map(|(domain, slots)| {
                    slots.iter().enumerate().filter_map(move |(i, e)| {
                        let e = e.as_ref().filter(|e| e.expires > now)?;
                        Some(CacheEntryView {
                            domain: domain.to_string(),
                            qtype: QueryType::from_index(i),
                            answer: e.answer.hit(),
                            expires_in: e.expires.saturating_duration_since(now),
                        })
                    })
                })
                .collect();
            out.sort_by(|a, b| {
                (a.expires_in, &a.domain, a.qtype.index()).cmp(&(
                    b.expires_in,
                    &b.domain,
                    b.qtype.index(),
                ))
            });
            out
        }

        fn remove(&mut self, domain: &str, qtype: QueryType) {
            let Some(slots) = self.map.get_mut(domain) else {
                return;
            };
            if let Some(slot) = slots.get_mut(qtype.index()) {
                if slot.take().is_some() {
                    self.len -= 1;
                }
            }
            if slots.iter().all(Option::is_none) {
                self.map.remove(domain);
            }
        }

        /// Drops expired answers; if none was, the one that expires soonest. Linear in the
        /// size, and only run when the cache is full and a new answer arrives from DNS.
        fn make_room(&mut self, now: Instant) {
            let before = self.len;
            let mut removed = 0;
            self.map.retain(|_, slots| {
                for slot in slots.iter_mut() {
                    if slot.as_ref().is_some_and(|e| e.expires <= now) {
                        *slot = None;
                        removed += 1;
                    }
                }
                slots.iter().any(Option::is_some)
            });
            self.len = before - removed;
            if self.len < self.capacity {
                return;
            }
            let soonest = self
                .map
                .iter()
                .flat_map(|(d, slots)| {
                    slots.iter().enumerate().filter_map(move |(i, e)| {
                        e.as_ref()
                            .map(|e| (e.expires, d.clone(), QueryType::from_index(i)))
                    })
                })
                .min_by_key(|(expires, _, _)| *expires);
            if let Some((_, domain, qtype)) = soonest {
                self.remove(&domain, qtype);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUS: &str = "+4930123456";

    fn naptr(order: u16, pref: u16, flags: &str, regexp: &str, replacement: &str) -> Naptr {
        Naptr {
            order,
            preference: pref,
            flags: flags.into(),
            services: "E2U+sip".into(),
            regexp: regexp.into(),
            replacement: replacement.into(),
        }
    }

    fn records(n: usize) -> Cached {
        let r: Vec<Naptr> = (0..n)
            .map(|i| naptr(100, i as u16, "u", "!^.*$!sip:a@example.test!", "."))
            .collect();
        Cached::Records(RecordSet::Naptr(r.into()))
    }

    #[test]
    fn cache_expiry() {
        let t0 = Instant::now();
        let mut c = DnsCache::new(10);
        c.insert(
            "a.test",
            QueryType::Naptr,
            records(2),
            Duration::from_secs(60),
            t0,
        );
        let hit = c.get("a.test", QueryType::Naptr, t0 + Duration::from_secs(59));
        assert_eq!(hit.map(|e| e.answer.hit()), Some(CacheHit::Records(2)));
        assert!(c.get("a.test", QueryType::Srv, t0).is_none());
        assert!(c.get("b.test", QueryType::Naptr, t0).is_none());
        assert!(c
            .get("a.test", QueryType::Naptr, t0 + Duration::from_secs(60))
            .is_none());
        let view = c.entries(t0 + Duration::from_secs(20));
        assert_eq!(
            view,
            vec![CacheEntryView {
                domain: "a.test".into(),
                qtype: QueryType::Naptr,
                answer: CacheHit::Records(2),
                expires_in: Duration::from_secs(40),
            }]
        );
        assert!(c.entries(t0 + Duration::from_secs(61)).is_empty());
        // A zero TTL is not kept, and removes an older answer.
        c.insert("a.test", QueryType::Naptr, records(1), Duration::ZERO, t0);
        assert!(c.get("a.test", QueryType::Naptr, t0).is_none());
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn cache_negative_answers() {
        let t0 = Instant::now();
        let mut c = DnsCache::new(10);
        c.insert(
            "nx.test",
            QueryType::Naptr,
            Cached::NxDomain,
            Duration::from_secs(30),
            t0,
        );
        c.insert(
            "nodata.test",
            QueryType::Srv,
            Cached::NoRecords,
            Duration::from_secs(5),
            t0,
        );
        assert_eq!(
            c.naptr_memo("nx.test", AUS, t0)
                .map(|m| (m.0.is_none(), m.1)),
            Some((true, CacheHit::NxDomain))
        );
        let later = t0 + Duration::from_secs(10);
        assert!(c.get("nodata.test", QueryType::Srv, later).is_none());
        assert_eq!(
            c.entries(later),
            vec![CacheEntryView {
                domain: "nx.test".into(),
                qtype: QueryType::Naptr,
                answer: CacheHit::NxDomain,
                expires_in: Duration::from_secs(20),
            }]
        );
    }

    #[test]
    fn cache_memo_is_per_number() {
        let t0 = Instant::now();
        let mut c = DnsCache::new(10);
        c.insert(
            "a.test",
            QueryType::Naptr,
            records(1),
            Duration::from_secs(60),
            t0,
        );
        // Records cached but not evaluated yet.
        assert!(c.naptr_memo("a.test", AUS, t0).is_none());
        let rules: Arc<[Rule]> = evaluate(
            &[naptr(100, 10, "u", "!^.*$!sip:a@example.test!", ".")],
            "a.test",
            AUS,
        )
        .into();
        let Some(Cached::Records(RecordSet::Naptr(cached))) = c
            .get("a.test", QueryType::Naptr, t0)
            .map(|e| e.answer.clone())
        else {
            panic!("not cached");
        };
        // Rules of other records are not attached.
        let other: Arc<[Naptr]> = vec![naptr(1, 1, "u", "!^.*$!sip:b@example.test!", ".")].into();
        c.set_naptr_memo("a.test", AUS, &other, rules.clone());
        assert!(c.naptr_memo("a.test", AUS, t0).is_none());
        c.set_naptr_memo("a.test", AUS, &cached, rules.clone());
        let (got, hit, _) = c.naptr_memo("a.test", AUS, t0).expect("memo");
        assert_eq!(got.as_deref(), Some(&*rules));
        assert_eq!(hit, CacheHit::Records(1));
        assert!(c.naptr_memo("a.test", "+4930999999", t0).is_none());
        // A new answer drops the memo.
        c.insert(
            "a.test",
            QueryType::Naptr,
            records(2),
            Duration::from_secs(60),
            t0,
        );
        assert!(c.naptr_memo("a.test", AUS, t0).is_none());
    }

    #[test]
    fn cache_bound_evicts_expired_then_soonest() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = DnsCache::new(3);
        c.insert("a.test", QueryType::Naptr, records(1), s(10), t0);
        c.insert("b.test", QueryType::Naptr, records(1), s(100), t0);
        c.insert("b.test", QueryType::A, records(1), s(50), t0);
        assert_eq!(c.len(), 3);
        // Replacing an answer does not evict.
        c.insert("b.test", QueryType::A, records(1), s(40), t0);
        assert_eq!(c.len(), 3);
        // Full: "a.test" has expired at t0+20 and goes.
        c.insert("c.test", QueryType::Naptr, records(1), s(100), t0 + s(20));
        assert_eq!(c.len(), 3);
        assert!(c.get("a.test", QueryType::Naptr, t0).is_none());
        // Full, nothing expired: the soonest to expire (b.test A, t0+40) goes.
        c.insert("d.test", QueryType::Naptr, records(1), s(100), t0 + s(30));
        assert_eq!(c.len(), 3);
        assert!(c.get("b.test", QueryType::A, t0 + s(30)).is_none());
        assert!(c.get("b.test", QueryType::Naptr, t0 + s(30)).is_some());
        assert!(c.get("c.test", QueryType::Naptr, t0 + s(30)).is_some());
        assert!(c.get("d.test", QueryType::Naptr, t0 + s(30)).is_some());
        assert_eq!(c.entries(t0 + s(30)).len(), 3);
        // A cache of size 0 keeps nothing.
        let mut none = DnsCache::new(0);
        none.insert("a.test", QueryType::Naptr, records(1), s(10), t0);
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn cache_flush() {
        let t0 = Instant::now();
        let mut c = DnsCache::new(10);
        c.insert(
            "a.test",
            QueryType::Naptr,
            records(1),
            Duration::from_secs(10),
            t0,
        );
        c.insert(
            "a.test",
            QueryType::Aaaa,
            Cached::NoRecords,
            Duration::from_secs(10),
            t0,
        );
        assert_eq!(c.len(), 2);
        c.flush();
        assert_eq!(c.len(), 0);
        assert!(c.entries(t0).is_empty());
    }

    #[test]
    fn evaluation_keeps_record_fields_and_order_groups() {
        let records = vec![
            naptr(20, 1, "u", "!^.*$!sip:never@example.test!", "."),
            naptr(10, 2, "u", r"!^\+4930(.*)$!sip:\1@b.example.test!", "."),
            naptr(10, 1, "u", "!^(.*$!sip:broken@example.test!", "."),
            naptr(10, 3, "", "", "next.example.test"),
        ];
        let rules = evaluate(&records, "d.test", AUS);
        assert_eq!(rules.len(), 3, "{rules:?}");
        assert!(matches!(rules[0].result, Err(NaptrError::BadRegexp(_))));
        assert_eq!(
            rules[1].result,
            Ok(NaptrOutcome::Uri("sip:123456@b.example.test".into()))
        );
        assert_eq!((rules[1].order, rules[1].preference), (10, 2));
        assert_eq!(&*rules[1].service, "E2U+sip");
        assert_eq!(
            rules[2].result,
            Ok(NaptrOutcome::NonTerminal("next.example.test".into()))
        );
        // Only broken records in the first group: the next group is used.
        let records = vec![
            naptr(10, 1, "u", "!^(.*$!sip:broken@example.test!", "."),
            naptr(20, 1, "u", "!^.*$!sip:fallback@example.test!", "."),
        ];
        let rules = evaluate(&records, "d.test", AUS);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].order, 20);
    }

    #[test]
    fn step_display() {
        let step = LookupStep {
            suffix: "e164.arpa".into(),
            domain: "8.7.6.5.4.3.2.1.0.3.9.4.e164.arpa".into(),
            qtype: QueryType::Naptr,
            elapsed: Duration::from_micros(3100),
            outcome: StepOutcome::Records(2),
        };
        assert_eq!(
            step.to_string(),
            "e164.arpa 8.7.6.5.4.3.2.1.0.3.9.4.e164.arpa: 2 NAPTR in 3.1 ms"
        );
        let mut s = step.clone();
        s.outcome = StepOutcome::Cached {
            hit: CacheHit::NxDomain,
            expires_in: Duration::from_millis(59_500),
        };
        assert_eq!(
            s.to_string(),
            "e164.arpa 8.7.6.5.4.3.2.1.0.3.9.4.e164.arpa: NAPTR NXDOMAIN (cached), expires in 59 s"
        );
        s.outcome = StepOutcome::Timeout;
        s.elapsed = Duration::from_millis(500);
        assert!(s.to_string().ends_with("NAPTR timeout after 500.0 ms"));
        let locate = LookupStep {
            suffix: String::new(),
            domain: "_sip._udp.example.test".into(),
            qtype: QueryType::Srv,
            elapsed: Duration::from_micros(800),
            outcome: StepOutcome::NoRecords,
        };
        assert_eq!(
            locate.to_string(),
            "_sip._udp.example.test: no SRV in 0.8 ms"
        );
    }

    #[test]
    fn name_text_forms() {
        assert_eq!(name_text(&Name::root()), ".");
        assert_eq!(
            name_text(&Name::from_ascii("Next.Example.TEST.").unwrap()),
            "next.example.test"
        );
    }

    #[tokio::test]
    async fn join_all_keeps_order() {
        // Futures that finish after different numbers of polls finish out of order.
        let futs: Vec<_> = [3u32, 1, 2]
            .into_iter()
            .map(|n| async move {
                for _ in 0..n {
                    tokio::task::yield_now().await;
                }
                n
            })
            .collect();
        assert_eq!(join_all(futs).await, vec![3, 1, 2]);
        assert!(join_all(Vec::<std::future::Ready<u8>>::new())
            .await
            .is_empty());
    }
}
