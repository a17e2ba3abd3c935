//! The SIP core's side of the trunks: per trunk, its outbound registration
//! ([`super::trunk_reg`]) and its OPTIONS qualify ([`super::trunk_qualify`]), the client
//! transactions they own, calls to the Contact we registered (recognised as the trunk's), the
//! trunk's presentation options for outgoing calls, and the state the live page, the API and
//! `/metrics` show. [`plans`] resolves the trunks' addresses (in the shell, at start and on
//! reload); everything else is sans-IO.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::routing::trunk::{NumberFormat, TrunkOptions};
use crate::routing::trunk_health::TrunkHealth;
use crate::sip::header::{CSeq, Header, NameAddr, Via};
use crate::sip::message::{Request, Response};
use crate::sip::method::Method;
use crate::sip::peer::{Peer, Proto};
use crate::sip::transaction::{ClientKey, TransactionLayer};
use crate::sip::uri::{Host, Params, SipUri, Uri};

use super::trunk_qualify::{Change, Qualify, Reach};
use super::trunk_reg::{RegConfig, RegState, Registration};

/// A trunk as the core drives it: where its requests go and what it asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkPlan {
    pub name: String,
    /// The trunk's `uri` (its host is the registrar and the OPTIONS target).
    pub uri: SipUri,
    /// Where requests go (the outbound proxy, else the host of `uri`), resolved.
    pub next_hop: Option<(Proto, SocketAddr)>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub number_format: NumberFormat,
    pub options: TrunkOptions,
}

/// One trunk's agents.
struct Agent {
    plan: TrunkPlan,
    reg: Option<Registration>,
    qualify: Option<Qualify>,
    /// The `line` token of the Contact we register.
    line: Option<String>,
    /// Our flow towards the trunk and our host on it.
    flow: Option<(Peer, Host)>,
    /// The OPTIONS probe in flight (answers to older ones do not count).
    probe_key: Option<ClientKey>,
}

/// What a client transaction of the trunks is for (by trunk name: indices change on reload).
#[derive(Debug, Clone)]
enum Role {
    Register(String),
    Options(String),
    /// The `Expires: 0` REGISTER of a trunk that was removed or disabled.
    Unregister(String),
}

impl Role {
    fn trunk(&self) -> &str {
        match self {
            Role::Register(n) | Role::Options(n) | Role::Unregister(n) => n,
        }
    }
}

pub use crate::live::TrunkLive;

/// The trunks' agents of the SIP core.
#[derive(Default)]
pub struct TrunkAgents {
    agents: Vec<Agent>,
    /// Registrations of trunks that are gone, until their `Expires: 0` is answered.
    leaving: Vec<Registration>,
    keys: HashMap<ClientKey, Role>,
    health: Option<Arc<TrunkHealth>>,
    counter: u64,
}

impl TrunkAgents {
    /// Where reachability changes are published for the router.
    pub fn set_health(&mut self, health: Arc<TrunkHealth>) {
        self.health = Some(health);
    }

    /// Replaces the plans (start, reload). Trunks whose plan did not change keep their
    /// registration and qualify state; changed and new ones start afresh at `now`. `local`
    /// picks our socket towards an address; `token` makes fresh random tokens.
    pub fn set_plans(
        &mut self,
        now: Instant,
        plans: Vec<TrunkPlan>,
        user_agent: &str,
        local: impl Fn(Proto, SocketAddr) -> Option<(Peer, Host)>,
        mut token: impl FnMut() -> String,
    ) {
        let mut old: Vec<Agent> = std::mem::take(&mut self.agents);
        let mut kept: Vec<String> = Vec::new();
        for plan in plans {
            if let Some(i) = old.iter().position(|a| a.plan == plan) {
                kept.push(plan.name.clone());
                self.agents.push(old.swap_remove(i));
                continue;
            }
            let flow = plan.next_hop.and_then(|(p, a)| local(p, a));
            let mut line = None;
            let reg = match (&flow, plan.options.register, &plan.username) {
                (Some((peer, host)), true, Some(user)) => {
                    let t = token();
                    let contact_user = plan.options.contact_user.clone().unwrap_or(user.clone());
                    let mut contact =
                        SipUri::new(Some(&contact_user), host.clone(), Some(peer.local.port()));
                    contact.params.set("line", Some(&t));
                    if peer.proto == Proto::Tcp {
                        contact.params.set("transport", Some("tcp"));
                    }
                    line = Some(t);
                    let registrar = SipUri::new(None, plan.uri.host.clone(), plan.uri.port);
                    let domain = plan
                        .options
                        .from_domain
                        .as_ref()
                        .map(|d| Host::Name(d.clone()))
                        .unwrap_or_else(|| plan.uri.host.clone());
                    let aor = SipUri::new(Some(user), domain, None);
                    tracing::info!(trunk = %plan.name, registrar = %registrar, %aor, via = %peer, "registering with the trunk");
                    let cfg = RegConfig {
                        trunk: plan.name.clone(),
                        registrar,
                        aor,
                        contact,
                        credentials: plan.username.clone().zip(plan.password.clone()),
                        realm: plan.options.realm.clone(),
                        expires: plan.options.register_expires,
                        retry: Duration::from_secs(u64::from(plan.options.register_retry_secs)),
                        peer: *peer,
                        via_host: host.clone(),
                        user_agent: user_agent.to_owned(),
                    };
                    // The same trunk with new settings goes on in its REGISTER dialog.
                    let before = old
                        .iter()
                        .find(|a| a.plan.name == plan.name)
                        .and_then(|a| a.reg.as_ref());
                    Some(match before {
                        Some(b) => Registration::continuing(cfg, now, b),
                        None => {
                            Registration::new(cfg, now, format!("{}@pasarela", token()), token())
                        }
                    })
                }
                (None, true, _) => {
                    tracing::warn!(trunk = %plan.name, "no socket towards the trunk: not registering");
                    None
                }
                _ => None,
            };
            let qualify = (plan.options.qualify_secs > 0 && flow.is_some()).then(|| {
                Qualify::new(
                    Duration::from_secs(u64::from(plan.options.qualify_secs)),
                    now,
                )
            });
            if let Some(h) = &self.health {
                h.set_up(&plan.name);
            }
            self.agents.push(Agent {
                plan,
                reg,
                qualify,
                line,
                flow,
                probe_key: None,
            });
        }
        // Trunks that are gone (removed or disabled) unregister.
        let names: Vec<String> = self.agents.iter().map(|a| a.plan.name.clone()).collect();
        self.leaving.retain(|r| !names.contains(&r.config().trunk));
        for a in old {
            if names.contains(&a.plan.name) {
                continue;
            }
            if let Some(mut reg) = a.reg {
                if reg.leave(now) {
                    tracing::info!(trunk = %a.plan.name, "trunk gone: unregistering");
                    self.leaving.push(reg);
                }
            }
        }
        // Transactions of kept trunks still find them; those of replaced ones are forgotten.
        self.keys
            .retain(|_, r| matches!(r, Role::Unregister(_)) || kept.iter().any(|k| k == r.trunk()));
        if let Some(h) = &self.health {
            let names: Vec<String> = self.agents.iter().map(|a| a.plan.name.clone()).collect();
            h.retain(|n| names.iter().any(|x| x == n));
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.plan.name == name)
    }

    /// The presentation options of trunk `name`.
    pub fn options(&self, name: &str) -> Option<&TrunkOptions> {
        self.agents
            .iter()
            .find(|a| a.plan.name == name)
            .map(|a| &a.plan.options)
    }

    /// The trunk whose registered Contact `uri` is (its `line` token), while registered:
    /// `(name, number format)`.
    pub fn by_contact(&self, now: Instant, uri: &Uri) -> Option<(String, NumberFormat)> {
        let line = uri.as_sip()?.params.value("line")?;
        self.agents
            .iter()
            .find(|a| {
                a.line.as_deref() == Some(line)
                    && a.reg.as_ref().is_some_and(|r| r.is_registered(now))
            })
            .map(|a| (a.plan.name.clone(), a.plan.number_format))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.agents
            .iter()
            .flat_map(|a| {
                [
                    a.reg.as_ref().and_then(|r| r.poll_timeout()),
                    a.qualify.as_ref().map(|q| q.poll_timeout()),
                ]
            })
            .chain(self.leaving.iter().map(|r| r.poll_timeout()))
            .flatten()
            .min()
    }

    /// Sends what is due. `since` formats a moment for the explainer ("down since …").
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        since: &dyn Fn(Instant) -> String,
    ) {
        for r in &mut self.leaving {
            if let Some(req) = r.handle_timeout(now, layer.new_branch()) {
                let peer = r.config().peer;
                let key = layer.send_request(now, req, peer);
                self.keys
                    .insert(key, Role::Unregister(r.config().trunk.clone()));
            }
        }
        for i in 0..self.agents.len() {
            let branch = layer.new_branch();
            let due = self.agents[i]
                .reg
                .as_mut()
                .and_then(|r| r.handle_timeout(now, branch));
            if let Some(req) = due {
                self.send_register(now, layer, i, req);
            }
            let Some(q) = self.agents[i].qualify.as_mut() else {
                continue;
            };
            let (probe, change) = q.handle_timeout(now);
            self.changed(i, change, since);
            if probe {
                self.counter += 1;
                let tag = format!("q{:x}{}", self.counter, i);
                let req = self.probe(layer, i, &tag);
                if let Some((req, peer)) = req {
                    let key = layer.send_request(now, req, peer);
                    self.keys
                        .insert(key, Role::Options(self.agents[i].plan.name.clone()));
                    self.agents[i].probe_key = Some(key);
                }
            }
        }
    }

    fn send_register(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        i: usize,
        req: Request,
    ) {
        let Some(peer) = self.agents[i].reg.as_ref().map(|r| r.config().peer) else {
            return;
        };
        let key = layer.send_request(now, req, peer);
        self.keys
            .insert(key, Role::Register(self.agents[i].plan.name.clone()));
    }

    /// A response to one of our client transactions; `false` when it is not the trunks'.
    pub fn response(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        key: ClientKey,
        response: &Response,
        cnonce: &mut dyn FnMut() -> String,
        since: &dyn Fn(Instant) -> String,
    ) -> bool {
        let Some(role) = self.keys.get(&key).cloned() else {
            return false;
        };
        if response.status >= 200 {
            self.keys.remove(&key);
        }
        if let Role::Unregister(name) = &role {
            let branch = layer.new_branch();
            let c = cnonce();
            if let Some(r) = self.leaving.iter_mut().find(|r| &r.config().trunk == name) {
                if let Some(req) = r.handle_response(now, response, branch, &c) {
                    let peer = r.config().peer;
                    let key = layer.send_request(now, req, peer);
                    self.keys.insert(key, Role::Unregister(name.clone()));
                }
            }
            self.leaving.retain(|r| !r.is_done());
            return true;
        }
        let Some(i) = self.index(role.trunk()) else {
            return true;
        };
        match role {
            Role::Register(_) => {
                let branch = layer.new_branch();
                let c = cnonce();
                let next = self
                    .agents
                    .get_mut(i)
                    .and_then(|a| a.reg.as_mut())
                    .and_then(|r| r.handle_response(now, response, branch, &c));
                if let Some(req) = next {
                    self.send_register(now, layer, i, req);
                }
            }
            Role::Options(_)
                if response.status >= 200
                    && self.agents.get(i).is_some_and(|a| a.probe_key == Some(key)) =>
            {
                let change = self
                    .agents
                    .get_mut(i)
                    .and_then(|a| a.qualify.as_mut())
                    .and_then(|q| q.handle_response(now, response.status));
                self.changed(i, change, since);
            }
            Role::Options(_) | Role::Unregister(_) => {}
        }
        true
    }

    /// A client transaction ended without a final response; `false` when not the trunks'.
    pub fn timeout(
        &mut self,
        now: Instant,
        key: ClientKey,
        since: &dyn Fn(Instant) -> String,
    ) -> bool {
        let Some(role) = self.keys.remove(&key) else {
            return false;
        };
        if let Role::Unregister(name) = &role {
            if let Some(r) = self.leaving.iter_mut().find(|r| &r.config().trunk == name) {
                r.transaction_timeout(now);
            }
            self.leaving.retain(|r| !r.is_done());
            return true;
        }
        let Some(i) = self.index(role.trunk()) else {
            return true;
        };
        match role {
            Role::Register(_) => {
                if let Some(r) = self.agents.get_mut(i).and_then(|a| a.reg.as_mut()) {
                    r.transaction_timeout(now);
                }
            }
            Role::Options(_) => {
                let change = self
                    .agents
                    .get_mut(i)
                    .filter(|a| a.probe_key == Some(key))
                    .and_then(|a| a.qualify.as_mut())
                    .and_then(|q| q.transaction_timeout());
                self.changed(i, change, since);
            }
            Role::Unregister(_) => {}
        }
        true
    }

    fn changed(&mut self, i: usize, change: Option<Change>, since: &dyn Fn(Instant) -> String) {
        let (Some(change), Some(a)) = (change, self.agents.get(i)) else {
            return;
        };
        let name = &a.plan.name;
        match (change, a.qualify.as_ref().map(|q| q.reach())) {
            (Change::Down, Some(Reach::Down { since: at })) => {
                let when = since(at);
                tracing::warn!(trunk = %name, since = %when, "trunk down: no answer to OPTIONS; the router skips it");
                if let Some(h) = &self.health {
                    h.set_down(name, when);
                }
            }
            (Change::Up, _) => {
                tracing::info!(trunk = %name, "trunk up: it answers OPTIONS");
                if let Some(h) = &self.health {
                    h.set_up(name);
                }
            }
            _ => {}
        }
    }

    /// An OPTIONS probe for trunk `i` and where it goes.
    fn probe(&self, layer: &mut TransactionLayer, i: usize, tag: &str) -> Option<(Request, Peer)> {
        let a = self.agents.get(i)?;
        let (peer, host) = a.flow.clone()?;
        let target = SipUri::new(None, a.plan.uri.host.clone(), a.plan.uri.port);
        let mut req = Request::new(Method::Options, Uri::Sip(target.clone()));
        let h = &mut req.headers;
        let mut params = Params::new();
        params.set("branch", Some(&layer.new_branch()));
        params.set("rport", None);
        h.push(Header::Via(Via {
            transport: peer.proto.via_token().into(),
            host: host.clone(),
            port: Some(peer.local.port()),
            params,
        }));
        h.push(Header::MaxForwards(70));
        let mut from = NameAddr::new(Uri::Sip(SipUri::new(Some("pasarela"), host, None)));
        from.set_tag(tag);
        h.push(Header::From(from));
        h.push(Header::To(NameAddr::new(Uri::Sip(target))));
        h.push(Header::CallId(format!("{tag}@pasarela")));
        h.push(Header::CSeq(CSeq {
            seq: 1,
            method: Method::Options,
        }));
        h.push(Header::Other("Accept".into(), "application/sdp".into()));
        Some((req, peer))
    }

    /// Every trunk's state now; `calls` counts a trunk's calls in progress by its name.
    pub fn live(&self, now: Instant, calls: impl Fn(&str) -> usize) -> Vec<TrunkLive> {
        self.agents
            .iter()
            .map(|a| {
                let reg = a.reg.as_ref();
                let (registered_secs, last_failure) = match reg.map(|r| r.state()) {
                    Some(RegState::Registered { until }) => {
                        (Some(until.saturating_duration_since(now).as_secs()), None)
                    }
                    Some(RegState::Failed { status, .. }) => (None, Some(*status)),
                    Some(RegState::Forbidden) => (None, Some(403)),
                    _ => (None, None),
                };
                let q = a.qualify.as_ref();
                let reach_secs = q.and_then(|q| match q.reach() {
                    Reach::Up { since } | Reach::Down { since } => {
                        Some(now.saturating_duration_since(since).as_secs())
                    }
                    Reach::Unknown => None,
                });
                TrunkLive {
                    name: a.plan.name.clone(),
                    registration: reg.map(|r| r.state().as_str()),
                    registered_secs,
                    last_failure,
                    reachable: q.map(|q| q.reach().as_str()),
                    reach_secs,
                    rtt_ms: q.and_then(|q| q.rtt()).map(|d| d.as_millis() as u64),
                    calls: calls(&a.plan.name),
                }
            })
            .collect()
    }

    /// No trunk (a trunk still unregistering does not count).
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::{parse_message, Framing, Limits};
    use crate::sip::transaction::Timers;

    fn plan(expires: u32, qualify: u32) -> TrunkPlan {
        let Ok(Uri::Sip(uri)) = Uri::parse("sip:127.0.0.5:5060") else {
            unreachable!()
        };
        TrunkPlan {
            name: "carrier".into(),
            uri,
            next_hop: Some((Proto::Udp, "127.0.0.5:5060".parse().unwrap())),
            username: Some("office1".into()),
            password: Some("pw".into()),
            number_format: NumberFormat::National,
            options: TrunkOptions {
                register: true,
                register_expires: expires,
                qualify_secs: qualify,
                ..TrunkOptions::default()
            },
        }
    }

    fn set(agents: &mut TrunkAgents, now: Instant, plans: Vec<TrunkPlan>) {
        let mut n = 0;
        agents.set_plans(
            now,
            plans,
            "pasarela",
            |proto, remote| {
                Some((
                    Peer {
                        proto,
                        remote,
                        local: "127.0.0.1:5060".parse().unwrap(),
                    },
                    Host::from_ip("127.0.0.1".parse().unwrap()),
                ))
            },
            || {
                n += 1;
                format!("tok{n}")
            },
        );
    }

    /// The methods sent since the last call.
    fn sent(layer: &mut TransactionLayer) -> Vec<Request> {
        let mut out = Vec::new();
        while let Some(t) = layer.poll_transmit() {
            if let Ok(Message::Request(r)) =
                parse_message(t.data, Framing::Datagram, &Limits::default())
            {
                out.push(r);
            }
        }
        out
    }

    #[test]
    fn registers_recognises_its_contact_and_survives_reloads() {
        let t0 = Instant::now();
        let since = |_: Instant| "then".to_owned();
        let mut layer = TransactionLayer::new(Timers::default());
        let health = Arc::new(TrunkHealth::new());
        let mut agents = TrunkAgents::default();
        agents.set_health(Arc::clone(&health));
        set(&mut agents, t0, vec![plan(60, 0)]);
        agents.handle_timeout(t0, &mut layer, &since);
        let reg = sent(&mut layer);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg[0].method, Method::Register);
        let contact = reg[0]
            .headers
            .contacts()
            .next()
            .and_then(|c| c.addr())
            .unwrap()
            .uri
            .clone();
        assert_eq!(contact.to_string(), "sip:office1@127.0.0.1:5060;line=tok1");
        // Not registered yet: the Contact is nobody's.
        assert_eq!(agents.by_contact(t0, &contact), None);
        let ok = Response::to_request(&reg[0], 200, "OK", Some("x"));
        layer.handle_response(t0, ok, agents_peer());
        let Some(crate::sip::transaction::Event::Response { key, response }) = layer.poll_event()
        else {
            panic!("no response event")
        };
        let mut c = || "cn".to_owned();
        assert!(agents.response(t0, &mut layer, key, &response, &mut c, &since));
        assert_eq!(
            agents.by_contact(t0, &contact),
            Some(("carrier".into(), NumberFormat::National))
        );
        // Another line token is not ours; From is never looked at.
        let Ok(other) = Uri::parse("sip:office1@127.0.0.1:5060;line=tok9") else {
            unreachable!()
        };
        assert_eq!(agents.by_contact(t0, &other), None);
        let live = agents.live(t0, |_| 2);
        assert_eq!(live[0].registration, Some("registered"));
        assert_eq!(live[0].calls, 2);
        // A reload with the same settings keeps the registration (nothing sent).
        set(&mut agents, t0, vec![plan(60, 0)]);
        agents.handle_timeout(t0, &mut layer, &since);
        assert!(sent(&mut layer).is_empty());
        assert!(agents.by_contact(t0, &contact).is_some());
        // Changed settings register afresh, with a new Contact.
        set(&mut agents, t0, vec![plan(120, 0)]);
        agents.handle_timeout(t0, &mut layer, &since);
        let again = sent(&mut layer);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].headers.expires(), Some(120));
        assert_eq!(
            again[0].headers.call_id(),
            reg[0].headers.call_id(),
            "one Call-ID per registrar"
        );
        assert_eq!(again[0].headers.cseq().map(|c| c.seq), Some(2));
        assert_eq!(agents.by_contact(t0, &contact), None);
        // Gone from the configuration (removed or disabled): it unregisters, then is gone.
        let ok = Response::to_request(&again[0], 200, "OK", Some("x"));
        layer.handle_response(t0, ok, agents_peer());
        let Some(crate::sip::transaction::Event::Response { key, response }) = layer.poll_event()
        else {
            panic!("no response event")
        };
        assert!(agents.response(t0, &mut layer, key, &response, &mut c, &since));
        set(&mut agents, t0, Vec::new());
        assert!(agents.is_empty());
        agents.handle_timeout(t0, &mut layer, &since);
        let bye = sent(&mut layer);
        assert_eq!(bye.len(), 1, "one unregistering REGISTER");
        assert_eq!(bye[0].headers.expires(), Some(0));
        assert_eq!(bye[0].headers.call_id(), reg[0].headers.call_id());
        assert!(
            agents.poll_timeout().is_none(),
            "{:?}",
            agents.poll_timeout()
        );
        let ok = Response::to_request(&bye[0], 200, "OK", Some("x"));
        layer.handle_response(t0, ok, agents_peer());
        let Some(crate::sip::transaction::Event::Response { key, response }) = layer.poll_event()
        else {
            panic!("no response event")
        };
        assert!(agents.response(t0, &mut layer, key, &response, &mut c, &since));
        assert!(agents.leaving.is_empty());
        agents.handle_timeout(t0 + Duration::from_secs(3600), &mut layer, &since);
        assert!(
            sent(&mut layer).is_empty(),
            "nothing after the unregistration"
        );
    }

    #[test]
    fn qualify_reports_down_to_the_router() {
        let t0 = Instant::now();
        let since = |_: Instant| "Thu, 03 Dec 2026 07:00:00 GMT".to_owned();
        let mut layer = TransactionLayer::new(Timers::default());
        let health = Arc::new(TrunkHealth::new());
        let mut agents = TrunkAgents::default();
        agents.set_health(Arc::clone(&health));
        let mut p = plan(60, 2);
        p.options.register = false;
        set(&mut agents, t0, vec![p]);
        agents.handle_timeout(t0, &mut layer, &since);
        let probe = sent(&mut layer);
        assert_eq!(probe.len(), 1);
        assert_eq!(probe[0].method, Method::Options);
        // No answer within the wait (1 s for a 2 s interval): down.
        let t1 = t0 + Duration::from_secs(1);
        agents.handle_timeout(t1, &mut layer, &since);
        assert_eq!(
            health.down_since("carrier").as_deref(),
            Some("Thu, 03 Dec 2026 07:00:00 GMT")
        );
        assert_eq!(agents.live(t1, |_| 0)[0].reachable, Some("down"));
    }

    fn agents_peer() -> Peer {
        Peer {
            proto: Proto::Udp,
            remote: "127.0.0.5:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        }
    }
}
