//! The SIP core above the transaction layer: it answers every request that reaches pasarela
//! as a user agent server (RFC 3261 §8.2): header and method inspection, digest
//! authentication, REGISTER through the registrar, OPTIONS keep-alives, and clear refusals
//! for everything else. It is sans-IO: callers feed messages, events and time, and drain one
//! output queue, [`SipCore::poll_output`] ([`output`]); media is reached through the
//! [`crate::media::port::MediaPort`] it is built with.

use std::collections::HashMap;
use std::time::Instant;

use crate::b2bua::{CallSettings, Caller, Calls, NewCall, Stage, Target, TrunkAuth};
use crate::media::MediaEvent;
use crate::registrar::{self, Binding, Registrar};
use crate::routing::router::{bare, Decision, Route};
use crate::routing::{Permission, Permissions};
use crate::sip::header::Header;
use crate::sip::message::{reason_phrase, Message, Request, Response};
use crate::sip::method::Method;
use crate::sip::peer::{Peer, Proto};
use crate::sip::transaction::{Event, ServerKey, Timers, TransactionLayer};
use crate::sip::uri::Uri;
use crate::store::{BindingChange, ExtensionRow};

use self::limits::Subject;

pub mod config;
pub mod digest_gate;
mod forward;
pub mod inbound;
pub mod limits;
pub mod messaging;
pub mod output;
pub mod overload;
mod pickup;
mod redirect;
mod transfer;
mod trunk_qualify;
mod trunk_reg;
pub mod trunks;
mod watch;

/// No limits: the core's own default (the configuration's come with [`SipCore::set_limits`]).
fn unlimited() -> limits::LimitsConfig {
    limits::LimitsConfig {
        extension_defaults: limits::CallLimits::default(),
        ..Default::default()
    }
}
use self::digest_gate::{Account, DigestGate, GateOutcome};

pub use crate::b2bua::ALLOW;

/// A PSTN line as call control needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineInfo {
    /// The line's name.
    pub name: String,
    /// Extensions (or one ring group) its incoming calls ring.
    pub extensions: Vec<String>,
}

/// Settings of the core, taken from the configuration.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub realm: String,
    pub server_name: String,
    pub timers: Timers,
    pub registrar: registrar::RegistrarSettings,
    pub nonce_ttl_secs: u64,
    pub digest_algorithms: Vec<crate::sip::auth::Algorithm>,
    pub calls: CallSettings,
    /// Permissions of extensions that have none of their own.
    pub default_permissions: Permissions,
    /// Whether numbers that are not extensions go to the router ([`Output::Route`]);
    /// without it they get 404.
    pub routing: bool,
}

/// A call waiting for its routing decision: the shell runs the router and hands the result
/// to [`SipCore::route_decided`].
#[derive(Debug, Clone)]
pub struct RouteRequest {
    pub id: u64,
    /// The calling extension.
    pub from: String,
    /// What it dialled (the Request-URI's user part).
    pub dialled: String,
}

pub use crate::live::LiveBinding;
pub use output::Output;

/// An authenticated call refused before anything rang, for its record.
#[derive(Debug, Clone)]
pub struct Refused {
    pub caller: String,
    pub dialled: String,
    pub status: u16,
    pub route: Option<std::sync::Arc<Route>>,
    /// Why, when it was a limit or a resource (`Limit reached: …`), for the record.
    pub reason: Option<String>,
    /// For calls from outside the office: where they came from ([`self::inbound::Origin`])
    /// and why they were refused.
    pub incoming: Option<(String, String)>,
}

/// How a new INVITE comes in without a challenge ([`SipCore::unchallenged`]).
enum Unchallenged {
    /// From a trunk's sources (its address).
    Trunk(self::inbound::Origin),
    /// To the Contact we registered with this trunk (the `line` of the Request-URI).
    TrunkContact(String, crate::routing::trunk::NumberFormat),
    /// A public call to a number we publish, from a DUNDi peer or anybody else.
    Public(self::inbound::Origin),
}

struct PendingRoute {
    key: ServerKey,
    invite: Request,
    peer: Peer,
    caller: Caller,
    dialled: String,
    since: Instant,
    /// The forwards that led here ([`forward`]): the last that forwarded pays.
    forward: Option<forward::Chain>,
}

/// The UAS core: owns the transaction layer, the registrar and the digest gate.
pub struct SipCore {
    settings: CoreSettings,
    layer: TransactionLayer,
    registrar: Registrar,
    gate: DigestGate,
    extensions: HashMap<String, ExtensionRow>,
    changes: Vec<BindingChange>,
    calls: Calls,
    tag_counter: u64,
    tag_seed: u64,
    pending_routes: crate::hashing::IdMap<u64, PendingRoute>,
    route_requests: Vec<RouteRequest>,
    refused: Vec<Refused>,
    next_route: u64,
    /// Our listen sockets, to pick the local side of outgoing flows.
    local_addrs: Vec<(Proto, std::net::SocketAddr)>,
    /// The PSTN lines: their calls are legs of call control (their shell is `server::line_legs`).
    lines: Vec<LineInfo>,
    /// While a call that arrived on a line is being started: the line's RTP address, and then
    /// the id of the call started for it.
    line_origin: Option<std::net::SocketAddr>,
    started_line_call: Option<u64>,
    /// While a call that arrived on a line is being started: its label (`trunk NAME`), which
    /// its first stage keeps (the line's calls are counted by it).
    line_label: Option<String>,
    /// Toll-fraud limits per extension and trunk (none until [`SipCore::set_limits`]).
    limiter: self::limits::Limiter,
    /// Who may call without a password: trunks, peers, the internet.
    inbound: self::inbound::InboundPolicy,
    /// Rate and concurrency per outside source (peers, the internet).
    inbound_limiter: self::inbound::Limiter,
    /// The start of every Via branch we make (loop detection).
    branch_prefix: String,
    /// The trunks' registrations and qualify ([`self::trunks`]).
    trunks: self::trunks::TrunkAgents,
    /// While a transport failure is handled: its reason, for the transactions it ends.
    transport_reason: Option<String>,
    /// Text messages to and from phones ([`self::messaging`]).
    messaging: self::messaging::Messaging,
    /// Busy lamps, presence and message-waiting subscriptions ([`crate::subscriptions`]).
    subscriptions: crate::subscriptions::Subscriptions,
    /// The numbering plan the targets of redirects are checked with ([`redirect`]).
    numbering: Option<crate::routing::numbering::NumberingPlan>,
    /// Call forwarding and sequential search of extensions ([`forward`]).
    forwarding: forward::Forwarding,
    /// Transfers to numbers waiting for the router ([`transfer`]).
    transfer_routing: transfer::Routing,
    /// Call pickup groups and codes ([`pickup`]).
    pickup: pickup::Pickup,
    /// What the shell is to do, drained by [`SipCore::poll_output`].
    outputs: output::Outputs,
    /// Which new INVITEs overload admission refuses now ([`SipCore::set_refusing`]).
    refusing: overload::Refuse,
}

impl SipCore {
    pub fn new(
        settings: CoreSettings,
        extensions: Vec<ExtensionRow>,
        secret: [u8; 32],
        media: Option<Box<dyn crate::media::port::MediaPort>>,
    ) -> SipCore {
        let tag_seed = u64::from_le_bytes(secret[..8].try_into().unwrap_or([7; 8]));
        let layer = TransactionLayer::new(settings.timers);
        SipCore {
            branch_prefix: layer.branch_prefix(),
            trunks: Default::default(),
            transport_reason: None,
            messaging: Default::default(),
            subscriptions: crate::subscriptions::Subscriptions::new(
                Default::default(),
                &settings.realm,
                tag_seed.rotate_left(17),
            ),
            numbering: None,
            forwarding: Default::default(),
            transfer_routing: Default::default(),
            pickup: Default::default(),
            outputs: Default::default(),
            refusing: Default::default(),
            inbound: Default::default(),
            inbound_limiter: Default::default(),
            layer,
            registrar: Registrar::new(settings.registrar),
            gate: DigestGate::new(
                settings.realm.clone(),
                settings.digest_algorithms.clone(),
                secret,
                settings.nonce_ttl_secs,
            ),
            extensions: extensions
                .into_iter()
                .map(|e| (e.number.clone(), e))
                .collect(),
            changes: Vec::new(),
            calls: Calls::new(settings.calls.clone(), media, tag_seed),
            tag_counter: 0,
            tag_seed,
            pending_routes: Default::default(),
            route_requests: Vec::new(),
            refused: Vec::new(),
            next_route: 1,
            local_addrs: Vec::new(),
            lines: Vec::new(),
            line_origin: None,
            started_line_call: None,
            line_label: None,
            limiter: self::limits::Limiter::new(unlimited(), crate::office_time::OfficeTime::utc()),
            settings,
        }
    }

    /// The PSTN lines (`server::lines` says which): route attempts that name one are dialled on it,
    /// and calls arriving on one ring its extensions ([`SipCore::line_call`]).
    pub fn set_lines(&mut self, lines: Vec<LineInfo>) {
        self.lines = lines;
    }

    /// The limits and expiry bounds of subscriptions (`[subscriptions]`).
    pub fn set_subscriptions(&mut self, settings: crate::subscriptions::SubscriptionsConfig) {
        self.subscriptions.set_settings(settings);
    }

    /// Caps the server transactions alive at once (`[limits] server_transactions`).
    pub fn set_max_server_transactions(&mut self, max: usize) {
        self.layer.set_max_server_transactions(max);
    }

    /// Hangs up the legs of calls a previous process left up (it died): a BYE on each dialog,
    /// from the listen socket it used when that is still bound, else one of the same transport.
    pub fn hang_up_interrupted(
        &mut self,
        now: Instant,
        unix: u64,
        legs: Vec<crate::sip::dialog::Dialog>,
    ) {
        for mut d in legs {
            let proto = d.peer.proto;
            if !self.local_addrs.contains(&(proto, d.peer.local)) {
                match self.outgoing_peer(proto, d.peer.remote) {
                    Some(p) => d.peer = p,
                    None => continue,
                }
            }
            tracing::info!(call_id = %d.call_id, peer = %d.peer, "BYE to a leg of an interrupted call");
            self.calls.hang_up_dialog(now, &mut self.layer, d);
        }
        self.process_events(now, unix);
    }

    /// The toll-fraud limits (`[limits]`) and the office's days and months they count in.
    pub fn set_limits(&mut self, limiter: self::limits::Limiter) {
        self.limiter = limiter;
    }

    pub fn limiter_mut(&mut self) -> &mut self::limits::Limiter {
        &mut self.limiter
    }

    /// The failed-authentication guard (bans, account locks), for the control socket and
    /// the dashboard.
    pub fn guard(&self) -> crate::security::guard::SharedGuard {
        self.gate.guard()
    }

    /// Who may call without a password ([`self::inbound`]); replaced on reload, calls in
    /// progress stay.
    pub fn set_inbound(&mut self, policy: self::inbound::InboundPolicy) {
        self.inbound = policy;
    }

    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    pub fn registrar_mut(&mut self) -> &mut Registrar {
        &mut self.registrar
    }

    /// A message from a transport.
    pub fn handle_message(&mut self, now: Instant, unix: u64, message: Message, peer: Peer) {
        match message {
            Message::Request(r) => {
                if self.refusing == overload::Refuse::Unauthorised {
                    // Only a new INVITE can be refused; it is spared when it is authorised.
                    // That is no authentication: it still goes the way it would otherwise.
                    let caller = self.admission_class(now, unix, &r, peer);
                    self.layer
                        .set_shedding(caller != overload::Caller::Authorised);
                }
                self.layer.handle_request(now, r, peer)
            }
            Message::Response(r) => self.layer.handle_response(now, r, peer),
        }
        self.process_events(now, unix);
    }

    /// A send towards `failure.peer` failed (a refused TCP connection): its client
    /// transactions end now, and a call whose fork went there moves on to its next
    /// destination at once (the fork counts as a 503 with the failure as its reason).
    pub fn transport_failure(
        &mut self,
        now: Instant,
        unix: u64,
        failure: crate::transport::TransportFailure,
    ) {
        self.layer.transport_error(now, failure.peer);
        self.transport_reason = Some(failure.reason);
        self.process_events(now, unix);
        self.transport_reason = None;
    }

    pub fn handle_timeout(&mut self, now: Instant, unix: u64) {
        self.layer.handle_timeout(now);
        self.calls.handle_timeout(now, &mut self.layer);
        let since = since_fn(now, unix);
        self.trunks.handle_timeout(now, &mut self.layer, &since);
        if self.subscriptions.poll_timeout().is_some_and(|t| t <= now) {
            let states = self.extension_states(unix, &self.subscriptions.watched());
            self.subscriptions
                .handle_timeout(now, &mut self.layer, &states);
        }
        self.process_events(now, unix);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.layer.poll_timeout(),
            self.calls.poll_timeout(),
            self.trunks.poll_timeout(),
            self.messaging.poll_timeout(),
            self.subscriptions.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The SIP trunks to register with and qualify (start, reload): unchanged trunks keep
    /// their state; calls in progress are not touched. Needs the listen sockets
    /// ([`SipCore::set_local_addrs`]) first.
    pub fn set_trunk_plans(&mut self, now: Instant, plans: Vec<self::trunks::TrunkPlan>) {
        let media_ip = self.settings.calls.media_ip;
        let local_addrs = self.local_addrs.clone();
        let mut counter = self.tag_counter;
        let seed = self.tag_seed;
        let local = |proto: Proto, remote: std::net::SocketAddr| {
            let peer = pick_local(&local_addrs, proto, remote)?;
            let ip = if peer.local.ip().is_unspecified() {
                media_ip
            } else {
                peer.local.ip()
            };
            Some((peer, crate::sip::uri::Host::from_ip(ip)))
        };
        let token = || {
            counter += 1;
            let mix = (counter ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            format!("{mix:x}{:x}", rand::random::<u32>())
        };
        self.trunks
            .set_plans(now, plans, &self.settings.server_name.clone(), local, token);
        self.tag_counter = counter;
    }

    /// Where reachability changes of the trunks are published for the router.
    pub fn set_trunk_health(
        &mut self,
        health: std::sync::Arc<crate::routing::trunk_health::TrunkHealth>,
    ) {
        self.trunks.set_health(health);
    }

    /// The trunks' state for the live page, the API and `/metrics`.
    pub fn trunk_live(&self, now: Instant) -> Vec<self::trunks::TrunkLive> {
        self.trunks.live(now, |name| self.trunk_calls(name))
    }

    /// Calls in progress on trunk `name`, both ways.
    fn trunk_calls(&self, name: &str) -> usize {
        let label = format!("trunk {name}");
        self.calls.count_on_stage(&label) + self.calls.count_by_origin(&label)
    }

    /// A media event of call `call`.
    pub fn media_event(&mut self, now: Instant, unix: u64, call: u64, event: MediaEvent) {
        self.calls.media_event(now, &mut self.layer, call, event);
        self.process_events(now, unix);
    }

    /// Overload admission: while on, new INVITEs get 503 + Retry-After before anything is
    /// taken for them (see [`self::overload`]); returns how many were refused so since the
    /// last call.
    pub fn set_shedding(&mut self, on: bool) -> u64 {
        self.set_refusing(if on {
            overload::Refuse::Every
        } else {
            overload::Refuse::Nothing
        })
    }

    /// Overload admission: which new INVITEs get 503 + Retry-After before anything is taken
    /// for them, [`overload::Refuse::Unauthorised`] sparing authorised ones (credentials that
    /// answer our challenge, a trunk's source address: [`overload::Caller::Authorised`], see
    /// [`self::overload`]); returns how many were refused since the last call.
    pub fn set_refusing(&mut self, refuse: overload::Refuse) -> u64 {
        self.refusing = refuse;
        self.layer.set_shedding(refuse != overload::Refuse::Nothing);
        self.layer.take_shed()
    }

    /// Who sent `req`, as overload admission tells callers apart: [`overload::Caller::Authorised`]
    /// for a new INVITE that [`SipCore::invite`] would let in without a challenge because the
    /// configuration trusts its source address (a trunk's, or a DUNDi peer's on the public
    /// path; [`SipCore::unchallenged`] decides for both), or whose credentials answer our
    /// challenge (checked without side effects, see [`DigestGate::answers_challenge`]).
    /// Anything else is [`overload::Caller::New`]: a public call from anybody else, one to a
    /// trunk's Contact (the Request-URI is the sender's to write), one merely claiming a
    /// trunk's domain in From.
    fn admission_class(
        &self,
        now: Instant,
        unix: u64,
        req: &Request,
        peer: Peer,
    ) -> overload::Caller {
        let new_invite =
            req.method == Method::Invite && req.headers.to().and_then(|t| t.tag()).is_none();
        if !new_invite {
            return overload::Caller::New;
        }
        if self.inbound.trusts(peer.remote) {
            match self.unchallenged(now, unix, req, peer) {
                Some(
                    Unchallenged::Trunk(_)
                    | Unchallenged::Public(self::inbound::Origin::Peer { .. }),
                ) => return overload::Caller::Authorised,
                Some(Unchallenged::TrunkContact(..) | Unchallenged::Public(_)) => {
                    return overload::Caller::New
                }
                None => {}
            }
        }
        let answers = req.headers.get_all("Authorization").next().is_some()
            && self
                .gate
                .answers_challenge(unix, req, peer.remote.ip(), |user| {
                    account(&self.extensions, user)
                });
        if answers {
            overload::Caller::Authorised
        } else {
            overload::Caller::New
        }
    }

    /// How [`SipCore::invite`] lets a new INVITE in without a challenge, if it does (after
    /// its checks of the request itself): from a trunk's sources, to the Contact we
    /// registered with a trunk, or (`[inbound] public`, no credentials) to a number we
    /// publish from anyone but an office phone. One decision for the call and for overload
    /// admission ([`SipCore::admission_class`]).
    fn unchallenged(
        &self,
        now: Instant,
        unix: u64,
        req: &Request,
        peer: Peer,
    ) -> Option<Unchallenged> {
        if let Some(origin) = self.inbound.trunk(peer.remote) {
            return Some(Unchallenged::Trunk(origin));
        }
        if let Some((name, number_format)) = self.trunks.by_contact(now, &req.uri) {
            return Some(Unchallenged::TrunkContact(name, number_format));
        }
        if req.headers.get_all("Authorization").next().is_none() {
            if let Some(origin) = self.inbound.public_origin(peer.remote) {
                if self.published(req).is_some() && !self.is_own_phone(unix, req, peer) {
                    return Some(Unchallenged::Public(origin));
                }
            }
        }
        None
    }

    /// Live (server, client) transactions.
    pub fn transaction_counts(&self) -> (usize, usize) {
        self.layer.counts()
    }

    /// The call state machine (for status and leak checks).
    pub fn calls(&self) -> &Calls {
        &self.calls
    }

    pub fn calls_mut(&mut self) -> &mut Calls {
        &mut self.calls
    }

    /// Ends every call and every call waiting for its route (pasarela is stopping).
    pub fn end_all_calls(&mut self, now: Instant, unix: u64) {
        let waiting: Vec<PendingRoute> = self.pending_routes.drain().map(|(_, p)| p).collect();
        for p in waiting {
            let r = self.response(&p.invite, 503, Some("Service Shutting Down"));
            self.layer.respond(now, p.key, r);
        }
        self.calls.end_all(now, &mut self.layer);
        self.process_events(now, unix);
    }

    /// Ends call `id` on the dashboard's request: an answered call gets a BYE on both legs, a
    /// ringing one a 487 to the caller and a CANCEL to its forks, one still being routed a 487.
    /// Returns whether the call existed.
    pub fn hang_up_call(&mut self, now: Instant, unix: u64, id: u64) -> bool {
        if let Some(p) = self.pending_routes.remove(&id) {
            tracing::info!(call = id, "hung up from the dashboard while routing");
            let r = self.response(&p.invite, 487, Some("Hung Up By Operator"));
            self.layer.respond(now, p.key, r);
            self.process_events(now, unix);
            return true;
        }
        let ended = self.calls.hang_up(now, &mut self.layer, id);
        self.process_events(now, unix);
        ended
    }

    /// Replaces the extensions (after a reload); registrations and calls stay.
    pub fn set_extensions(&mut self, extensions: Vec<ExtensionRow>) {
        self.extensions = extensions
            .into_iter()
            .map(|e| (e.number.clone(), e))
            .collect();
    }

    /// The listen sockets (after binding), for calls that leave the office.
    pub fn set_local_addrs(&mut self, addrs: Vec<(Proto, std::net::SocketAddr)>) {
        self.local_addrs = addrs;
    }

    /// Calls still waiting for their routing decision.
    /// What the live page shows: calls in progress (those still being routed first) and every
    /// registered contact. Built only when the dashboard asks for it.
    pub fn live(&self, now: Instant, unix: u64) -> (Vec<crate::b2bua::LiveCall>, Vec<LiveBinding>) {
        let mut calls: Vec<crate::b2bua::LiveCall> = self
            .pending_routes
            .iter()
            .map(|(id, p)| crate::b2bua::LiveCall {
                id: *id,
                caller: p.caller.number.clone(),
                callee: p.dialled.clone(),
                state: crate::b2bua::LiveState::Trying,
                age: now.saturating_duration_since(p.since),
                talking: None,
                route: "routing".into(),
                target: None,
                codec: None,
                rtp_foreign_dropped: 0,
            })
            .collect();
        calls.extend(self.calls.live(now));
        let bindings = self
            .registrar
            .all(unix)
            .map(|(ext, b)| LiveBinding {
                extension: ext.to_owned(),
                contact: b.key.clone(),
                source: b.source.to_string(),
                user_agent: b.user_agent.clone(),
                expires_in: b.expires_at.saturating_sub(unix),
            })
            .collect();
        (calls, bindings)
    }

    pub fn pending_routes(&self) -> usize {
        self.pending_routes.len()
    }

    /// The router's decision for call `id` (ignored when the caller gave up meanwhile).
    pub fn route_decided(
        &mut self,
        now: Instant,
        unix: u64,
        id: u64,
        route: std::sync::Arc<Route>,
    ) {
        if self.forward_routed(now, unix, id, &route) || self.transfer_routed(now, unix, id, &route)
        {
            return;
        }
        let Some(p) = self.pending_routes.remove(&id) else {
            return;
        };
        let caller_number = p.caller.number.clone();
        // A forwarded call is the forwarding extension's: its permissions, limits and DID.
        let payer = p
            .forward
            .as_ref()
            .and_then(|c| c.payer())
            .unwrap_or(&caller_number)
            .to_owned();
        let forward_note = p.forward.as_ref().and_then(|c| c.note.clone());
        // A forwarded call's record keeps the number the caller dialled.
        let dialled = match &p.forward {
            Some(_) => p
                .invite
                .uri
                .as_sip()
                .and_then(|u| u.user_unescaped())
                .unwrap_or_else(|| route.dialled.clone()),
            None => route.dialled.clone(),
        };
        tracing::info!(
            from = %p.caller.number,
            dialled = %route.dialled,
            ms = route.elapsed.as_secs_f64() * 1000.0,
            "routed: {}",
            match &route.decision {
                Decision::Extension(e) => format!("extension {e}"),
                Decision::Attempts(a) => a
                    .iter()
                    .map(|a| format!("{} {} via {}", a.label(), a.uri, a.hop))
                    .collect::<Vec<_>>()
                    .join(" | "),
                Decision::Reject { status, reason } => format!("rejected {status} {reason}"),
            }
        );
        let mut reason = None;
        let refusal = match &route.decision {
            Decision::Reject {
                status,
                reason: why,
            } => {
                if let Some(note) = &forward_note {
                    reason = Some(format!("{note}: refused, {why}"));
                }
                Some(self.response(&p.invite, *status, Some(why)))
            }
            Decision::Extension(ext) => {
                let ext = ext.clone();
                let chain = p.forward.clone().unwrap_or_default();
                self.forwarding.refusal = None;
                let r = self
                    .ring_extension_via(now, unix, p.key, &p.invite, p.peer, p.caller, &ext, chain);
                reason = self.forwarding.refusal.take();
                r
            }
            Decision::Attempts(list) => match self.attempt_stages(now, unix, &payer, list) {
                Err((status, why)) => {
                    reason = match &forward_note {
                        Some(note) => Some(format!("{note}: refused, {why}")),
                        None => (status == 403).then(|| why.clone()),
                    };
                    Some(self.response(&p.invite, status, Some(&why)))
                }
                Ok(mut stages) => {
                    let first = stages.remove(0);
                    let new = NewCall {
                        key: p.key,
                        invite: p.invite,
                        peer: p.peer,
                        caller: p.caller,
                        targets: first.targets,
                        fallback: stages,
                        label: first.label,
                        route: Some(std::sync::Arc::clone(&route)),
                        ring_for: None,
                    };
                    self.calls
                        .start_forwarding(now, &mut self.layer, new, None, forward_note);
                    None
                }
            },
        };
        if let Some(r) = refusal {
            self.refused.push(Refused {
                caller: caller_number,
                dialled,
                status: r.status,
                route: Some(route),
                reason,
                incoming: None,
            });
            self.layer.respond(now, p.key, r);
        }
        self.process_events(now, unix);
    }

    /// The stages of a routed call's attempts, as extension `payer` may use them (its spending
    /// limits, the trunks' limits; its DID shown outside), or the refusal.
    pub(super) fn attempt_stages(
        &mut self,
        now: Instant,
        unix: u64,
        payer: &str,
        list: &[crate::routing::router::Attempt],
    ) -> Result<Vec<Stage>, (u16, String)> {
        let caller_number = payer;
        // Outside the office the caller is shown by its DID (E.164), when it has one.
        let caller_did = self.extensions.get(payer).and_then(|e| e.did.clone());
        let unix_ms = i64::try_from(unix).unwrap_or(0).saturating_mul(1000);
        let spend = self
            .limiter
            .may_spend(Subject::Extension(caller_number), unix_ms);
        let mut trunk_refusal = None;
        let allowed: Vec<&crate::routing::router::Attempt> = match spend {
            Err(why) => {
                trunk_refusal = Some(why);
                Vec::new()
            }
            Ok(()) => list
                .iter()
                .filter(|a| match self.trunk_refusal(now, unix_ms, a) {
                    Some(why) => {
                        trunk_refusal = Some(why);
                        false
                    }
                    None => true,
                })
                .collect(),
        };
        let stages: Vec<Stage> = allowed
            .into_iter()
            .filter_map(|a| {
                let line = self.line_target(a);
                // A line is dialled, not sent to: its flow only describes the fork.
                let peer = match &line {
                    Some(_) => Peer {
                        proto: Proto::Udp,
                        remote: a.hop.addr,
                        local: a.hop.addr,
                    },
                    None => self.outgoing_peer(a.hop.proto, a.hop.addr)?,
                };
                let presentation = match &a.kind {
                    crate::routing::router::AttemptKind::Trunk { name } => {
                        self.trunks.options(name).map(presentation)
                    }
                    _ => None,
                };
                Some(Stage {
                    targets: vec![Target {
                        uri: Uri::Sip(a.uri.clone()),
                        peer,
                        to: Some(Uri::Sip(bare(&a.uri))),
                        auth: a
                            .auth
                            .clone()
                            .map(|(username, password)| TrunkAuth { username, password }),
                        from_user: caller_did.clone(),
                        srtp: match &a.kind {
                            // A line speaks plain RTP on loopback.
                            _ if line.is_some() => crate::b2bua::SrtpPolicy::Never,
                            crate::routing::router::AttemptKind::Trunk { name } => {
                                self.settings.calls.srtp.trunk(name)
                            }
                            crate::routing::router::AttemptKind::Sip { .. } => {
                                self.settings.calls.srtp.default
                            }
                        },
                        presentation,
                        line,
                    }],
                    label: a.label(),
                    ring_for: None,
                })
            })
            .collect();
        if let (true, Some(why)) = (stages.is_empty(), trunk_refusal) {
            tracing::warn!(from = %caller_number, "{why}");
            return Err((403, why));
        }
        if stages.is_empty() {
            return Err((503, "No route to the number".to_owned()));
        }
        Ok(stages)
    }

    /// The flow for a request to `remote`: one of our sockets of the same transport and
    /// address family.
    fn outgoing_peer(&self, proto: Proto, remote: std::net::SocketAddr) -> Option<Peer> {
        pick_local(&self.local_addrs, proto, remote)
    }
}

/// The flow for a request to `remote`: one of `local_addrs` of the same transport and
/// address family.
fn pick_local(
    local_addrs: &[(Proto, std::net::SocketAddr)],
    proto: Proto,
    remote: std::net::SocketAddr,
) -> Option<Peer> {
    {
        let local = local_addrs
            .iter()
            .filter(|(p, a)| *p == proto && a.is_ipv4() == remote.is_ipv4())
            .map(|(_, a)| *a)
            .min_by_key(|a| a.ip().is_unspecified() != remote.ip().is_loopback());
        let Some(local) = local else {
            tracing::warn!(%proto, %remote, "no {proto} socket of that address family to call from");
            return None;
        };
        Some(Peer {
            proto,
            remote,
            local,
        })
    }
}

/// Formats a moment `at` (monotonic) as a date, knowing that `now` is `unix`.
/// Whether `response` is a digest challenge (answered statelessly).
fn is_challenge(response: &Response) -> bool {
    matches!(response.status, 401 | 407)
}

fn since_fn(now: Instant, unix: u64) -> impl Fn(Instant) -> String {
    move |at: Instant| {
        let back = now.saturating_duration_since(at).as_secs();
        http_date(unix.saturating_sub(back))
    }
}

impl SipCore {
    /// Why a route attempt over a trunk or line may not be used now (its `[limits.trunk]`);
    /// `None` for attempts that are not trunks or are within their limits. An allowed
    /// attempt counts as a call of the trunk for its per-minute limit.
    fn trunk_refusal(
        &mut self,
        now: Instant,
        unix_ms: i64,
        a: &crate::routing::router::Attempt,
    ) -> Option<String> {
        let crate::routing::router::AttemptKind::Trunk { name } = &a.kind else {
            return None;
        };
        if !self.limiter.trunk_limited(name) {
            return None;
        }
        let who = Subject::Trunk(name);
        if let Err(why) = self.limiter.may_spend(who, unix_ms) {
            return Some(format!("{why} (trunk {name})"));
        }
        let active = self.trunk_calls(name);
        match self.limiter.admit(who, now, active) {
            Ok(()) => None,
            Err(why) => Some(format!("{why} (trunk {name})")),
        }
    }

    /// Periodic clean-up of expired bindings and nonce state.
    pub fn housekeeping(&mut self, unix: u64) {
        self.housekeeping_at(None, unix);
    }

    /// [`SipCore::housekeeping`], with the monotonic time for the per-minute limits and the
    /// memory given back after floods.
    pub fn housekeeping_at(&mut self, now: Option<Instant>, unix: u64) {
        let purged = self.registrar.purge(unix);
        if !purged.is_empty() {
            tracing::info!(purged = purged.len(), "expired registrations removed");
            self.changes.extend(purged);
        }
        self.gate.purge(unix);
        if let Some(now) = now {
            // Presence follows registrations that expired.
            self.update_subscriptions(now, unix);
            self.limiter.housekeeping(now);
            self.layer.shrink();
            self.calls.shrink();
            crate::memory::shrink_map(&mut self.pending_routes);
            self.outputs.shrink();
            let calls = &self.calls;
            self.inbound_limiter.purge(now, |k| calls.has_server(k));
        }
    }

    /// Live bindings (for status reporting and tests).
    pub fn registrations(&self) -> usize {
        self.registrar.len()
    }

    fn process_events(&mut self, now: Instant, unix: u64) {
        while let Some(event) = self.layer.poll_event() {
            match event {
                Event::Request { key, request, peer } => {
                    let in_dialog = request.headers.to().and_then(|t| t.tag()).is_some();
                    if in_dialog
                        && request.method == Method::Prack
                        && self.calls.prack(now, &mut self.layer, key, &request)
                    {
                        continue;
                    }
                    if in_dialog && self.calls.owns(&request) {
                        self.calls
                            .in_dialog(now, &mut self.layer, key, request, peer);
                        continue;
                    }
                    if in_dialog && request.method == Method::Subscribe {
                        if let Some(r) = self.resubscribe(now, unix, key, &request, peer) {
                            self.layer.respond(now, key, r);
                        }
                        continue;
                    }
                    if in_dialog && !matches!(request.method, Method::Register | Method::Options) {
                        let r = self.response(&request, 481, None);
                        self.layer.respond(now, key, r);
                        continue;
                    }
                    if let Some(response) = self.answer(now, unix, key, &request, peer) {
                        if is_challenge(&response) {
                            // A flood of unauthenticated requests must not cost memory: the
                            // challenge is derived from the request and sent without state.
                            self.layer.respond_stateless(now, key, response);
                        } else {
                            self.layer.respond(now, key, response);
                        }
                    }
                }
                Event::Cancel {
                    invite, request, ..
                } => {
                    let routing = self
                        .pending_routes
                        .iter()
                        .find(|(_, p)| p.key == invite)
                        .map(|(id, _)| *id);
                    if let Some(id) = routing {
                        self.pending_routes.remove(&id);
                    }
                    if !self.calls.cancel(now, &mut self.layer, invite) {
                        let response = self.response(&request, 487, None);
                        self.layer.respond(now, invite, response);
                    }
                }
                Event::Stray { request, .. } => {
                    if request.method == Method::Ack {
                        self.calls.ack(now, &mut self.layer, request);
                    }
                }
                Event::StrayResponse { response, peer } => {
                    self.calls.stray_response(&mut self.layer, response, peer);
                }
                Event::Response { key, response } => {
                    let since = since_fn(now, unix);
                    let mut counter = self.tag_counter;
                    let seed = self.tag_seed;
                    let mut cnonce = || {
                        counter += 1;
                        format!("{:x}", (counter ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    };
                    let ours = self.trunks.response(
                        now,
                        &mut self.layer,
                        key,
                        &response,
                        &mut cnonce,
                        &since,
                    );
                    self.tag_counter = counter;
                    let ours = ours
                        || self.messaging.response(now, key, response.status)
                        || self.subscriptions.response(key, response.status);
                    if !ours {
                        self.calls.response(now, &mut self.layer, key, response);
                    }
                }
                Event::Timeout { key } => {
                    let since = since_fn(now, unix);
                    if !self.trunks.timeout(now, key, &since)
                        && !self.messaging.timeout(now, key)
                        && !self.subscriptions.timeout(key)
                    {
                        match &self.transport_reason {
                            Some(why) => {
                                self.calls.transport_failed(now, &mut self.layer, key, why)
                            }
                            None => self.calls.timeout(now, &mut self.layer, key),
                        }
                    }
                }
                Event::AckTimeout { .. } => {}
            }
        }
        // A REGISTER may have brought the phone that messages wait for.
        self.messaging.pump(
            now,
            unix,
            &mut self.layer,
            &self.registrar,
            &self.settings.realm,
            self.tag_seed,
        );
        // 3xx met by calls: their targets checked, the calls moved on.
        self.follow_redirects(now, unix);
        // Transfers asked by phones: their targets checked, the calls told.
        self.follow_transfers(now, unix);
        // Calls whose extension forwards them (busy, no answer, unreachable): decided.
        self.follow_forwards(now, unix);
        // Calls and registrations may have changed what watched extensions show.
        self.update_subscriptions(now, unix);
    }

    /// A stored message for phones ([`self::messaging`]): sent to their registered contacts
    /// now, or when one registers.
    pub fn deliver_message(&mut self, now: Instant, unix: u64, msg: self::messaging::Deliver) {
        self.messaging.enqueue(msg);
        self.process_events(now, unix);
    }

    fn new_tag(&mut self) -> String {
        self.tag_counter += 1;
        let mix = (self.tag_counter ^ self.tag_seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!("{mix:x}")
    }

    /// A response to `req` with the standard (or given) reason phrase, a To tag and Server.
    fn response(&mut self, req: &Request, status: u16, reason: Option<&str>) -> Response {
        let tag = self.new_tag();
        self.response_tagged(req, status, reason, &tag)
    }

    /// [`Self::response`] with To tag `tag`.
    fn response_tagged(
        &self,
        req: &Request,
        status: u16,
        reason: Option<&str>,
        tag: &str,
    ) -> Response {
        let mut r = Response::to_request(
            req,
            status,
            reason.unwrap_or(reason_phrase(status)),
            Some(tag),
        );
        r.headers.push(Header::Other(
            "Server".into(),
            self.settings.server_name.clone(),
        ));
        r
    }

    /// Decides the final response to a new request, or `None` when call control took it.
    fn answer(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
    ) -> Option<Response> {
        if req.method == Method::Invite {
            return self.invite(now, unix, key, req, peer);
        }
        if req.method == Method::Subscribe {
            return self.subscribe(now, unix, key, req, peer);
        }
        Some(self.answer_other(unix, req, peer))
    }

    /// 420 Bad Extension naming the option tags of `Require` (and of `Proxy-Require` when
    /// `proxy_require`) that are not in `supported` (RFC 3261 §8.2.2.3); `None` when all are.
    fn unsupported_required(
        &mut self,
        req: &Request,
        supported: &[&str],
        proxy_require: bool,
    ) -> Option<Response> {
        let proxy = proxy_require
            .then(|| req.headers.tokens("Proxy-Require"))
            .into_iter()
            .flatten();
        let unsupported: Vec<&str> = req
            .headers
            .tokens("Require")
            .chain(proxy)
            .filter(|t| !supported.iter().any(|s| t.eq_ignore_ascii_case(s)))
            .collect();
        if unsupported.is_empty() {
            return None;
        }
        let mut r = self.response(req, 420, None);
        r.headers
            .push(Header::Other("Unsupported".into(), unsupported.join(", ")));
        Some(r)
    }

    /// Answers a request other than INVITE (RFC 3261 §8.2 order of inspection).
    fn answer_other(&mut self, unix: u64, req: &Request, peer: Peer) -> Response {
        if matches!(req.uri, Uri::Other { .. }) {
            return self.response(req, 416, None);
        }
        if req.method != Method::Ack && req.method != Method::Cancel {
            if let Some(r) = self.unsupported_required(req, &[], true) {
                return r;
            }
        }
        match &req.method {
            Method::Register => self.register(unix, req, peer),
            Method::Message => self.message(unix, req, peer),
            Method::Options => {
                let mut r = self.response(req, 200, None);
                r.headers.push(Header::Other("Allow".into(), ALLOW.into()));
                r.headers
                    .push(Header::Other("Accept".into(), "application/sdp".into()));
                r.headers
                    .push(Header::Other("Supported".into(), "100rel, replaces".into()));
                r.headers.push(Header::Other(
                    "Allow-Events".into(),
                    crate::sip::event::ALLOW_EVENTS.into(),
                ));
                r
            }
            Method::Bye | Method::Info | Method::Update | Method::Prack => {
                self.response(req, 481, Some("Call/Transaction Does Not Exist"))
            }
            Method::Ack | Method::Cancel => self.response(req, 481, None),
            m => {
                let status = if m.is_known() { 405 } else { 501 };
                let mut r = self.response(req, status, None);
                r.headers.push(Header::Other("Allow".into(), ALLOW.into()));
                r
            }
        }
    }

    /// Applies the digest gate; on refusal returns the response to send.
    fn authenticate(
        &mut self,
        unix: u64,
        req: &Request,
        peer: Peer,
    ) -> Result<ExtensionRow, Response> {
        let extensions = &self.extensions;
        let outcome = self.gate.check(unix, req, peer.remote.ip(), |user| {
            account(extensions, user)
        });
        match outcome {
            GateOutcome::Authenticated(user) => match self.extensions.get(&user) {
                Some(ext) => Ok(ext.clone()),
                None => Err(self.response(req, 403, None)),
            },
            GateOutcome::Challenge(values) => {
                // Sent statelessly (see `process_events`): the To tag, like the nonce, is
                // derived from the request, so a retransmission gets the same challenge.
                let tag = self.gate.challenge_tag(req);
                let mut r = self.response_tagged(req, 401, None, &tag);
                for v in values {
                    r.headers.push(Header::Other("WWW-Authenticate".into(), v));
                }
                Err(r)
            }
            GateOutcome::Forbidden(reason) => Err(self.response(req, 403, Some(reason))),
            GateOutcome::Malformed(reason) => Err(self.response(req, 400, Some(&reason))),
        }
    }

    /// A phone's MESSAGE (RFC 3428): authenticated like a call, then taken for the message
    /// service with 202 (it is stored and delivered later).
    fn message(&mut self, unix: u64, req: &Request, peer: Peer) -> Response {
        let ext = match self.authenticate(unix, req, peer) {
            Ok(ext) => ext,
            Err(r) => return r,
        };
        let to = req
            .uri
            .as_sip()
            .and_then(|u| u.user_unescaped())
            .unwrap_or_default();
        if to.is_empty() {
            return self.response(req, 404, None);
        }
        let text = match crate::sip::im::text_of(req) {
            Ok(t) => t,
            Err(crate::sip::im::BodyError::Type) => {
                let mut r = self.response(req, 415, None);
                r.headers
                    .push(Header::Other("Accept".into(), "text/plain".into()));
                return r;
            }
            Err(e) => return self.response(req, 400, Some(&e.to_string())),
        };
        let to_extension = self.extensions.contains_key(&to);
        tracing::info!(from = %ext.number, %to, to_extension, "MESSAGE from a phone");
        self.messaging.from_phone(self::messaging::FromPhone {
            from: ext.number.clone(),
            to,
            to_extension,
            permissions: ext.permissions.unwrap_or(self.settings.default_permissions),
            text,
        });
        self.response(req, 202, None)
    }

    fn register(&mut self, unix: u64, req: &Request, peer: Peer) -> Response {
        let aor_user = req
            .headers
            .to()
            .and_then(|to| to.uri.as_sip())
            .and_then(|u| u.user_unescaped());
        let Some(aor) = aor_user else {
            return self.response(
                req,
                400,
                Some("To is not a SIP address of record with a user part"),
            );
        };
        let ext = match self.authenticate(unix, req, peer) {
            Ok(ext) => ext,
            Err(r) => return r,
        };
        if ext.number != aor {
            tracing::warn!(user = %ext.number, %aor, %peer, "authenticated user tried to register another address");
            return self.response(
                req,
                403,
                Some("Authenticated user may not register this address"),
            );
        }
        match self.registrar.register(unix, &aor, req, peer) {
            Ok(accepted) => {
                tracing::debug!(%aor, %peer, contacts = accepted.contacts.len(), "REGISTER accepted");
                self.changes.extend(accepted.changes);
                let mut r = self.response(req, 200, None);
                r.headers
                    .0
                    .extend(registrar::contact_headers(accepted.contacts));
                r.headers
                    .push(Header::Other("Date".into(), http_date(unix)));
                r
            }
            Err(refusal) => {
                let mut r = self.response(req, refusal.status, Some(&refusal.reason));
                if let Some(min) = refusal.min_expires {
                    r.headers.push(Header::MinExpires(min));
                }
                r
            }
        }
    }

    fn invite(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
    ) -> Option<Response> {
        if matches!(req.uri, Uri::Other { .. }) {
            return Some(self.response(req, 416, None));
        }
        if let Some(r) = self.unsupported_required(req, &["timer", "100rel", "replaces"], false) {
            return Some(r);
        }
        if !req.body.is_empty() {
            let ct = req.headers.content_type().unwrap_or("application/sdp");
            let mime = ct.split(';').next().unwrap_or("").trim();
            if !mime.eq_ignore_ascii_case("application/sdp") {
                let mut r = self.response(req, 415, None);
                r.headers
                    .push(Header::Other("Accept".into(), "application/sdp".into()));
                return Some(r);
            }
        }
        let accepts: Vec<&str> = req.headers.tokens("Accept").collect();
        if !accepts.is_empty()
            && !accepts.iter().any(|a| {
                let m = a
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                m == "application/sdp" || m == "application/*" || m == "*/*"
            })
        {
            let mut r = self.response(req, 406, None);
            r.headers
                .push(Header::Other("Accept".into(), "application/sdp".into()));
            return Some(r);
        }
        if let Some((status, reason)) = self::inbound::loop_check(req, &self.branch_prefix) {
            tracing::info!(%peer, status, "INVITE refused: {reason}");
            return Some(self.response(req, status, Some(reason)));
        }
        match self.unchallenged(now, unix, req, peer) {
            Some(Unchallenged::Trunk(origin) | Unchallenged::Public(origin)) => {
                return self.incoming(now, unix, key, req, peer, origin, None);
            }
            Some(Unchallenged::TrunkContact(name, number_format)) => {
                // Sent to the Contact we registered with the trunk: the number dialled is in
                // To (the Request-URI is our Contact), unless the trunk put it in the
                // Request-URI.
                let to_user = req
                    .headers
                    .to()
                    .and_then(|t| t.uri.as_sip())
                    .and_then(|u| u.user_unescaped());
                let ruri_user = req.uri.as_sip().and_then(|u| u.user_unescaped());
                let dialled = match (&ruri_user, to_user) {
                    (Some(r), _) if self.published_number(r).is_some() => r.clone(),
                    (_, Some(t)) => t,
                    (r, None) => r.clone().unwrap_or_default(),
                };
                let origin = self::inbound::Origin::Trunk {
                    name,
                    number_format,
                };
                return self.incoming(now, unix, key, req, peer, origin, Some(dialled));
            }
            None => {}
        }
        let caller = match self.authenticate(unix, req, peer) {
            Ok(ext) => ext,
            Err(r) => return Some(r),
        };
        let dialled = req
            .uri
            .as_sip()
            .and_then(|u| u.user_unescaped())
            .unwrap_or_default();
        let perms = caller
            .permissions
            .unwrap_or(self.settings.default_permissions);
        let caller = Caller {
            srtp: self.settings.calls.srtp.extension(&caller.number),
            number: caller.number,
            name: caller.name,
            origin: None,
        };
        if let Ok(r) = self.replaces_invite(now, unix, key, req, peer, &caller) {
            return r;
        }
        if dialled.starts_with('*') {
            if let Ok(r) = self.pickup_code(now, unix, key, req, peer, &caller, &dialled) {
                return r;
            }
            if let Some(r) = self.feature_code(req, &caller.number, &dialled) {
                return Some(r);
            }
        }
        let active = self.calls.count_by_caller(&caller.number)
            + self
                .pending_routes
                .values()
                .filter(|p| p.caller.number == caller.number)
                .count();
        if let Err(why) = self
            .limiter
            .admit(Subject::Extension(&caller.number), now, active)
        {
            tracing::warn!(extension = %caller.number, %dialled, %peer, "call refused: {why}");
            let r = self.response(req, 403, Some(&why));
            self.refused.push(Refused {
                caller: caller.number,
                dialled,
                status: 403,
                route: None,
                reason: Some(why),
                incoming: None,
            });
            return Some(r);
        }
        if self.extensions.contains_key(&dialled) {
            // Extension to extension: decided here, without a trip through the router.
            let number = caller.number.clone();
            let refusal = if perms.allows(Permission::Internal) {
                self.ring_extension(now, unix, key, req, peer, caller, &dialled)
            } else {
                Some(self.response(req, 403, Some("Calls to internal numbers are barred")))
            };
            if let Some(r) = &refusal {
                self.refused.push(Refused {
                    caller: number,
                    dialled,
                    status: r.status,
                    route: None,
                    reason: self.forwarding.refusal.take(),
                    incoming: None,
                });
            }
            return refusal;
        }
        if !self.settings.routing {
            self.refused.push(Refused {
                caller: caller.number.clone(),
                dialled,
                status: 404,
                route: None,
                reason: None,
                incoming: None,
            });
            return Some(self.response(req, 404, None));
        }
        let id = self.next_route;
        self.next_route += 1;
        self.route_requests.push(RouteRequest {
            id,
            from: caller.number.clone(),
            dialled: dialled.clone(),
        });
        self.pending_routes.insert(
            id,
            PendingRoute {
                key,
                invite: req.clone(),
                peer,
                caller,
                dialled,
                since: now,
                forward: None,
            },
        );
        None
    }

    /// Rings extension `ext`: its forwards, else its registered phones in its ring order
    /// ([`forward`]); the refusal when that cannot be done.
    #[allow(clippy::too_many_arguments)]
    fn ring_extension(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        caller: Caller,
        ext: &str,
    ) -> Option<Response> {
        // A forward's refusal is read right after this call; none is left from an earlier one.
        self.forwarding.refusal = None;
        self.ring_extension_via(now, unix, key, req, peer, caller, ext, Default::default())
    }
}

impl SipCore {
    /// The line a route's attempt names: a trunk hop to one of our PSTN lines
    /// (`;line=NAME`), dialled by call control itself.
    fn line_target(&self, a: &crate::routing::router::Attempt) -> Option<crate::b2bua::LineTarget> {
        let crate::routing::router::AttemptKind::Trunk { name } = &a.kind else {
            return None;
        };
        if a.uri.params.value("line") != Some(name.as_str())
            || !self.lines.iter().any(|l| &l.name == name)
        {
            return None;
        }
        Some(crate::b2bua::LineTarget {
            line: name.clone(),
            number: a.uri.user_unescaped().unwrap_or_default(),
        })
    }

    /// What a PSTN line reports about a leg of a call on it.
    pub fn line_event(
        &mut self,
        now: Instant,
        unix: u64,
        leg: crate::b2bua::LegId,
        event: crate::b2bua::LineEvent,
    ) {
        self.calls.line_event(now, &mut self.layer, leg, event);
        self.process_events(now, unix);
    }

    /// A call arriving on PSTN line `line` from `caller` (E.164 when known, `None` when
    /// withheld), its RTP at `audio`: it rings the line's extensions (or group) as a call of
    /// call control whose caller's leg is the line. Returns the call's id, or `None` when it
    /// is refused (nobody to ring, unknown line): the line is then hung up by the shell.
    pub fn line_call(
        &mut self,
        now: Instant,
        unix: u64,
        line: &str,
        caller: Option<String>,
        audio: std::net::SocketAddr,
    ) -> Option<u64> {
        self.line_call_named(now, unix, line, caller, None, audio)
    }

    /// [`SipCore::line_call`] with the caller ID name the line gave (shown on the phones).
    pub fn line_call_named(
        &mut self,
        now: Instant,
        unix: u64,
        line: &str,
        caller: Option<String>,
        name: Option<String>,
        audio: std::net::SocketAddr,
    ) -> Option<u64> {
        let Some(info) = self.lines.iter().find(|l| l.name == line).cloned() else {
            tracing::warn!(%line, "a call on an unknown line refused");
            return None;
        };
        let Some(first) = info.extensions.first() else {
            tracing::warn!(%line, "incoming call but no `incoming` extensions: refused");
            return None;
        };
        let (key, req, peer) =
            self.calls
                .line_invite(&mut self.layer, caller.as_deref(), first, audio);
        let caller = Caller {
            name: Some(
                caller
                    .as_ref()
                    .and(name)
                    .or_else(|| caller.clone())
                    .unwrap_or_else(|| "Anonymous".to_owned()),
            ),
            number: caller.unwrap_or_else(|| "anonymous".to_owned()),
            origin: None,
            srtp: crate::b2bua::SrtpPolicy::Never,
        };
        self.line_origin = Some(audio);
        self.line_label = Some(format!("trunk {}", info.name));
        self.started_line_call = None;
        let refusal = self.ring_line(now, unix, key, &req, peer, &info, caller);
        self.line_origin = None;
        self.line_label = None;
        let started = self.started_line_call.take();
        self.process_events(now, unix);
        match refusal {
            Some(r) => {
                tracing::info!(%line, status = r.status, "call from the line not offered");
                None
            }
            None => started,
        }
    }

    /// A call arriving on a PSTN line: a line for one extension rings it as a trunk call to
    /// it would (its forwards apply, [`forward`]); otherwise every registered contact of every
    /// extension of the line rings at once; the refusal when none can.
    #[allow(clippy::too_many_arguments)]
    fn ring_line(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        line: &LineInfo,
        caller: Caller,
    ) -> Option<Response> {
        // A line's `incoming` may name a ring group: it rings as the group says.
        if let [only] = line.extensions.as_slice() {
            if let Some((_, g)) = self.inbound.groups.iter().find(|(n, _)| n == only) {
                let g = g.clone();
                tracing::info!(line = %line.name, caller = %caller.number, group = %g.label, "PSTN call arriving");
                let label = format!("trunk {}", line.name);
                let r = self.ring_group(
                    now,
                    unix,
                    key,
                    req,
                    peer,
                    caller.clone(),
                    &label,
                    &g.members,
                    g.member_timeout,
                );
                if let Some(r) = &r {
                    self.refused.push(Refused {
                        caller: caller.number,
                        dialled: g.label.clone(),
                        status: r.status,
                        route: None,
                        reason: None,
                        incoming: None,
                    });
                }
                return r;
            }
        }
        if let [only] = line.extensions.as_slice() {
            tracing::info!(line = %line.name, caller = %caller.number, extension = %only, "PSTN call arriving");
            let number = caller.number.clone();
            let r = self.ring_extension(now, unix, key, req, peer, caller, only);
            if let Some(r) = &r {
                self.refused.push(Refused {
                    caller: number,
                    dialled: only.clone(),
                    status: r.status,
                    route: None,
                    reason: self.forwarding.refusal.take(),
                    incoming: None,
                });
            }
            return r;
        }
        let targets: Vec<Target> = line
            .extensions
            .iter()
            .filter(|e| self.extensions.get(e.as_str()).is_some_and(|x| x.enabled))
            // An extension forwarding always to another rings that one's phones (as a group
            // member does), each phone once.
            .flat_map(|e| self.member_targets(e, unix))
            .filter({
                let mut seen = std::collections::HashSet::new();
                move |t: &Target| seen.insert((t.uri.to_string(), t.peer.remote))
            })
            .collect();
        tracing::info!(line = %line.name, caller = %caller.number, contacts = targets.len(), "PSTN call arriving");
        if targets.is_empty() {
            let r = self.response(req, 480, None);
            self.refused.push(Refused {
                caller: caller.number,
                dialled: line.extensions.first().cloned().unwrap_or_default(),
                status: 480,
                route: None,
                reason: None,
                incoming: None,
            });
            return Some(r);
        }
        let new = NewCall {
            key,
            invite: req.clone(),
            peer,
            caller,
            targets,
            fallback: Vec::new(),
            label: format!("trunk {}", line.name),
            route: None,
            ring_for: None,
        };
        self.start_call(now, new);
        None
    }
}

impl SipCore {
    /// What the Request-URI's user reaches when it is a number we publish, in any form
    /// (`+4930…`, `4930…`, national, international): the enabled extension whose DID it is, else
    /// the destination of its `[[inbound.route]]`. `(label, extensions)`.
    fn published(&self, req: &Request) -> Option<self::inbound::InboundRoute> {
        let dialled = req.uri.as_sip().and_then(|u| u.user_unescaped())?;
        self.published_number(&dialled)
    }

    /// [`SipCore::published`] for a number.
    fn published_number(&self, dialled: &str) -> Option<self::inbound::InboundRoute> {
        let forms = self.inbound.number_forms(dialled);
        let did = forms.iter().find_map(|n| {
            self.extensions
                .values()
                .find(|e| e.enabled && e.did.as_deref() == Some(n.as_str()))
                .map(|e| e.number.clone())
        });
        match did {
            Some(ext) => Some(self::inbound::InboundRoute {
                number: dialled.to_owned(),
                label: format!("extension {ext}"),
                members: vec![ext],
                member_timeout: None,
            }),
            None => self.inbound.route_for(&forms).cloned(),
        }
    }

    /// Rings a ring group: every registered contact of every enabled extension of `members`
    /// at once, or (`member_timeout`) one member after the other, each for that long; the
    /// refusal when none can ring.
    #[allow(clippy::too_many_arguments)]
    fn ring_group(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        caller: Caller,
        label: &str,
        members: &[String],
        member_timeout: Option<std::time::Duration>,
    ) -> Option<Response> {
        let reachable: Vec<Vec<Target>> = members
            .iter()
            .filter(|e| self.extensions.get(e.as_str()).is_some_and(|x| x.enabled))
            .map(|e| self.member_targets(e, unix))
            .filter(|t| !t.is_empty())
            .collect();
        if reachable.is_empty() {
            return Some(self.response(req, 480, None));
        }
        let (targets, fallback) = match member_timeout {
            None => {
                // A member forwarded to another member rings its phones once.
                let mut seen = std::collections::HashSet::new();
                let targets = reachable
                    .into_iter()
                    .flatten()
                    .filter(|t| seen.insert((t.uri.to_string(), t.peer.remote)))
                    .collect();
                (targets, Vec::new())
            }
            Some(turn) => {
                let mut turns = reachable.into_iter();
                let first = turns.next().unwrap_or_default();
                let rest = turns
                    .map(|targets| Stage {
                        targets,
                        label: label.to_owned(),
                        ring_for: Some(turn),
                    })
                    .collect();
                (first, rest)
            }
        };
        let new = NewCall {
            key,
            invite: req.clone(),
            peer,
            caller,
            targets,
            fallback,
            label: label.to_owned(),
            route: None,
            ring_for: member_timeout,
        };
        self.start_call(now, new);
        None
    }

    /// Starts a call: from a PSTN line while [`SipCore::line_call`] starts one, else from
    /// the SIP request of `new`.
    fn start_call(&mut self, now: Instant, new: NewCall) {
        match self.line_origin.take() {
            Some(audio) => {
                let id = self.calls.start_from_line(now, &mut self.layer, new, audio);
                self.started_line_call = Some(id);
            }
            None => self.calls.start(now, &mut self.layer, new),
        }
    }

    /// [`SipCore::start_call`] for a call to an extension with its forwards armed (`rule`)
    /// and its record's note on the forwards that led there; with `awaiting` (a call from a
    /// line only) nothing rings until the forward is decided. Returns the call's id.
    pub(super) fn start_call_forwarding(
        &mut self,
        now: Instant,
        new: NewCall,
        rule: Option<crate::b2bua::ForwardRule>,
        note: Option<String>,
        awaiting: bool,
    ) -> u64 {
        match self.line_origin.take() {
            Some(audio) => {
                let id = self.calls.start_from_line_forwarding(
                    now,
                    &mut self.layer,
                    new,
                    audio,
                    rule,
                    note,
                    awaiting,
                );
                self.started_line_call = Some(id);
                id
            }
            None => self
                .calls
                .start_forwarding(now, &mut self.layer, new, rule, note),
        }
    }

    /// Whether an unauthenticated INVITE is an office phone's first try: its From names an
    /// extension with a binding registered from the same address. Such a request gets the
    /// usual challenge (and is then an internal call), not the public path.
    fn is_own_phone(&self, unix: u64, req: &Request, peer: Peer) -> bool {
        let Some(user) = req
            .headers
            .from()
            .and_then(|f| f.uri.as_sip())
            .and_then(|u| u.user_unescaped())
        else {
            return false;
        };
        self.registrar
            .lookup(&user, unix)
            .iter()
            .any(|b| b.source.remote.ip() == peer.remote.ip())
    }

    /// A call from a trunk, a peer or the internet (no password): it may reach the extension
    /// whose DID it dialled and nothing else; the per-source limits apply to peers and the
    /// internet. Refusals are recorded with where the call came from and why.
    #[allow(clippy::too_many_arguments)]
    fn incoming(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
        origin: self::inbound::Origin,
        dialled_override: Option<String>,
    ) -> Option<Response> {
        let dialled = req
            .uri
            .as_sip()
            .and_then(|u| u.user_unescaped())
            .unwrap_or_default();
        let from = req.headers.from();
        let from_user = from
            .and_then(|f| f.uri.as_sip())
            .and_then(|u| u.user_unescaped())
            .unwrap_or_else(|| "anonymous".to_owned());
        let caller = Caller {
            number: self.inbound.caller_number(&origin, &from_user),
            name: from
                .and_then(|f| f.display.as_deref())
                .map(|d| d.trim_matches('"').to_owned())
                .filter(|d| !d.is_empty()),
            origin: Some(origin.label()),
            srtp: match &origin {
                self::inbound::Origin::Trunk { name, .. } => self.settings.calls.srtp.trunk(name),
                self::inbound::Origin::Peer { eid, .. } => self.settings.calls.srtp.peer(eid),
                self::inbound::Origin::Internet { .. } => self.settings.calls.srtp.default,
            },
        };
        // A trunk's `[limits.trunk]` concurrent calls count its calls both ways.
        if let self::inbound::Origin::Trunk { name, .. } = &origin {
            if self.limiter.trunk_limited(name) {
                let active = self.trunk_calls(name);
                if let Err(why) = self.limiter.admit(Subject::Trunk(name), now, active) {
                    let why = format!("{why} (trunk {name})");
                    tracing::warn!(trunk = %name, %dialled, "incoming call refused: {why}");
                    let r = self.response(req, 503, Some("Too Many Calls"));
                    self.refused.push(Refused {
                        caller: caller.number,
                        dialled: dialled_override.unwrap_or(dialled),
                        status: 503,
                        route: None,
                        reason: Some(why.clone()),
                        incoming: Some((origin.label(), why)),
                    });
                    return Some(r);
                }
            }
        }
        let target = match &dialled_override {
            Some(d) => self.published_number(d),
            None => self.published(req),
        };
        let dialled = dialled_override.unwrap_or(dialled);
        let refusal: Result<self::inbound::InboundRoute, (u16, &str, String)> = match target {
            None => Err((404, "Not Found", "not a number of this office".to_owned())),
            Some(ext) => match origin.limited() {
                Some(ip) => {
                    let calls = &self.calls;
                    match self
                        .inbound_limiter
                        .admit(now, ip, &self.inbound, |k| calls.has_server(k))
                    {
                        Ok(()) => Ok(ext),
                        Err(self::inbound::Limit::Rate) => Err((
                            503,
                            "Too Many Calls",
                            format!(
                                "more than {} calls a minute from {ip}",
                                self.inbound.calls_per_minute
                            ),
                        )),
                        Err(self::inbound::Limit::Concurrent) => Err((
                            503,
                            "Too Many Calls",
                            format!(
                                "{} calls from {ip} already in progress",
                                self.inbound.max_calls
                            ),
                        )),
                    }
                }
                None => Ok(ext),
            },
        };
        let label = origin.label();
        let (response, why) = match refusal {
            Ok(route) => {
                let dest = route.label.clone();
                tracing::info!(from = %label, caller = %caller.number, %dialled, to = %dest, "incoming call");
                let r = match (dest.strip_prefix("extension "), route.members.as_slice()) {
                    (Some(_), [ext]) => {
                        self.ring_extension(now, unix, key, req, peer, caller.clone(), ext)
                    }
                    _ => self.ring_group(
                        now,
                        unix,
                        key,
                        req,
                        peer,
                        caller.clone(),
                        &dest,
                        &route.members,
                        route.member_timeout,
                    ),
                };
                match r {
                    None => {
                        if let Some(ip) = origin.limited() {
                            self.inbound_limiter.started(ip, key);
                        }
                        return None;
                    }
                    Some(r) => {
                        let why = format!("{dest} answered {}", r.status);
                        (r, why)
                    }
                }
            }
            Err((status, reason, why)) => (self.response(req, status, Some(reason)), why),
        };
        tracing::info!(from = %label, caller = %caller.number, %dialled, status = response.status, "incoming call refused: {why}");
        self.refused.push(Refused {
            caller: caller.number,
            dialled,
            status: response.status,
            route: None,
            reason: None,
            incoming: Some((label, why)),
        });
        Some(response)
    }
}

impl SipCore {
    /// Where extension `ext` rings: each of its registered contacts, with its SRTP policy.
    pub(crate) fn contacts_of(&self, ext: &str, unix: u64) -> Vec<Target> {
        let srtp = self.settings.calls.srtp.extension(ext);
        self.registrar
            .lookup(ext, unix)
            .into_iter()
            .map(|b| Target {
                srtp,
                ..route_to_binding(b)
            })
            .collect()
    }
}

/// Where requests for a registered contact go: the Contact URI when it names the host the
/// REGISTER came from (a phone on the LAN, or a third-party registration on the same host);
/// otherwise the REGISTER's source address and flow (the phone is behind NAT). TCP contacts
/// always use their connection.
pub fn route_to_binding(b: &Binding) -> Target {
    let source = b.source;
    let direct = match (&b.uri, source.proto) {
        (Uri::Sip(u), crate::sip::peer::Proto::Udp) => u
            .host
            .ip()
            .filter(|ip| *ip == source.remote.ip())
            .map(|ip| std::net::SocketAddr::new(ip, u.port.unwrap_or(5060))),
        _ => None,
    };
    let peer = match direct {
        Some(remote) => Peer { remote, ..source },
        None => source,
    };
    Target {
        uri: b.uri.clone(),
        peer,
        to: None,
        auth: None,
        from_user: None,
        srtp: crate::b2bua::SrtpPolicy::default(),
        presentation: None,
        line: None,
    }
}

/// How callers are presented to a trunk with these options.
fn presentation(o: &crate::routing::trunk::TrunkOptions) -> crate::b2bua::Presentation {
    use crate::routing::trunk::CallerIdHeader;
    crate::b2bua::Presentation {
        from_user: o.from_user.clone(),
        from_host: o.from_domain.clone(),
        identity_header: match o.caller_id_header {
            CallerIdHeader::Asserted => Some("P-Asserted-Identity"),
            CallerIdHeader::Preferred => Some("P-Preferred-Identity"),
            CallerIdHeader::None => None,
        },
    }
}

/// An RFC 1123 date (the SIP Date header, RFC 3261 §20.17).
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// What the digest gate needs of enabled extension `user`.
fn account(extensions: &HashMap<String, ExtensionRow>, user: &str) -> Option<Account> {
    extensions.get(user).filter(|e| e.enabled).map(|e| Account {
        ha1_md5: e.ha1_md5.clone(),
        ha1_sha256: e.ha1_sha256.clone(),
        legacy_digest: e.legacy_digest,
        allow: e.allow.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_795_466_096), "Mon, 23 Nov 2026 20:34:56 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
    }
}
