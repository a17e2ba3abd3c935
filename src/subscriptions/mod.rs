//! The subscription service (RFC 6665), sans-IO: phones subscribe to the state of extensions
//! — the dialog package (RFC 4235) for busy lamp fields, presence (RFC 3856) and the message
//! summary (RFC 3842) — and get a NOTIFY at once and whenever the state changes; a
//! subscription lasts until it expires (a final NOTIFY says `terminated;reason=timeout`), is
//! refreshed or ended by the phone, or a NOTIFY fails.
//!
//! The SIP core authenticates the SUBSCRIBE, answers it with what [`Subscriptions::subscribe`]
//! decides, and hands in each extension's state ([`ExtensionState`], built from the B2BUA's
//! calls and the registrar) after every event; time is an argument, never read here.

pub mod bodies;
pub mod config;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::sip::dialog::Dialog;
use crate::sip::event::{self, Event, Notification, SubscriptionState};
use crate::sip::header::{NameAddr, Via};
use crate::sip::message::Request;
use crate::sip::peer::Peer;
use crate::sip::transaction::{ClientKey, TransactionLayer};
use crate::sip::uri::{Host, Params};

pub use config::SubscriptionsConfig;

/// An event package pasarela serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    Dialog,
    Presence,
    MessageSummary,
}

impl Package {
    pub fn parse(name: &str) -> Option<Package> {
        match name {
            "dialog" => Some(Package::Dialog),
            "presence" => Some(Package::Presence),
            "message-summary" => Some(Package::MessageSummary),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Package::Dialog => bodies::DIALOG_INFO,
            Package::Presence => bodies::PIDF,
            Package::MessageSummary => bodies::SIMPLE_MESSAGE_SUMMARY,
        }
    }
}

/// Who started a dialog, seen from the watched extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The extension called.
    Initiator,
    /// The extension is being called.
    Recipient,
}

/// The state of a dialog (RFC 4235 §3.7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    Trying,
    Early,
    Confirmed,
    Terminated,
}

impl DialogState {
    pub fn as_str(self) -> &'static str {
        match self {
            DialogState::Trying => "trying",
            DialogState::Early => "early",
            DialogState::Confirmed => "confirmed",
            DialogState::Terminated => "terminated",
        }
    }
}

/// One call of an extension, as the dialog package tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogView {
    /// Stable while the call lasts.
    pub id: String,
    /// The Call-ID of the extension's leg (what a pickup with Replaces names).
    pub call_id: String,
    /// The tag of the extension's side of that leg.
    pub local_tag: Option<String>,
    /// pasarela's tag on that leg.
    pub remote_tag: Option<String>,
    pub direction: Direction,
    pub state: DialogState,
    /// The other party's number.
    pub remote: String,
    pub remote_name: Option<String>,
}

/// What subscribers are told about an extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtensionState {
    /// A phone of the extension is registered.
    pub registered: bool,
    /// Its calls in progress.
    pub dialogs: Vec<DialogView>,
}

impl ExtensionState {
    /// Whether the extension has an answered call.
    pub fn in_call(&self) -> bool {
        self.dialogs
            .iter()
            .any(|d| d.state == DialogState::Confirmed)
    }

    /// The lamp of a busy lamp field, in words (`offline`, `idle`, `ringing`, `calling`,
    /// `in call`), as the live page shows it.
    pub fn lamp(&self) -> &'static str {
        if self.in_call() {
            "in call"
        } else if self
            .dialogs
            .iter()
            .any(|d| d.direction == Direction::Recipient)
        {
            "ringing"
        } else if !self.dialogs.is_empty() {
            "calling"
        } else if self.registered {
            "idle"
        } else {
            "offline"
        }
    }

    /// Whether `self` and `other` differ in what `package` tells.
    fn differs(&self, other: &ExtensionState, package: Package) -> bool {
        match package {
            Package::Dialog => self.dialogs != other.dialogs,
            Package::Presence => {
                self.registered != other.registered || self.in_call() != other.in_call()
            }
            Package::MessageSummary => false,
        }
    }
}

/// Why a SUBSCRIBE is refused: status, reason phrase, and for 423 the Min-Expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
    pub min_expires: Option<u32>,
}

impl Refusal {
    fn new(status: u16, reason: &'static str) -> Refusal {
        Refusal {
            status,
            reason,
            min_expires: None,
        }
    }
}

/// A subscription accepted: answer 200 (or 202) with this To tag and Expires, then call
/// [`Subscriptions::notify_now`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub id: u64,
    pub tag: String,
    pub expires: u32,
}

/// A new SUBSCRIBE, authenticated by the core.
pub struct NewSubscription<'a> {
    pub request: &'a Request,
    pub peer: Peer,
    /// The authenticated extension.
    pub watcher: &'a str,
    /// The extension watched (the Request-URI's user); the core checked that it exists.
    pub resource: &'a str,
    /// Our Contact for the dialog (the address the phone reached).
    pub contact: NameAddr,
    /// The host our Via names on this flow.
    pub via_host: Host,
}

struct Subscription {
    dialog: Dialog,
    event: Event,
    package: Package,
    watcher: String,
    resource: String,
    expires_at: Instant,
    version: u32,
    /// What the last NOTIFY told (`None`: none sent yet).
    last: Option<ExtensionState>,
    in_flight: Option<ClientKey>,
    contact: NameAddr,
    via_host: Host,
}

/// Every subscription of the office.
pub struct Subscriptions {
    settings: SubscriptionsConfig,
    domain: String,
    subs: HashMap<u64, Subscription>,
    /// (Call-ID, our tag, event id) -> subscription.
    by_dialog: HashMap<(String, String, Option<String>), u64>,
    by_key: HashMap<ClientKey, u64>,
    expiries: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
    tag_seed: u64,
}

impl Subscriptions {
    pub fn new(settings: SubscriptionsConfig, domain: &str, tag_seed: u64) -> Subscriptions {
        Subscriptions {
            settings,
            domain: domain.to_owned(),
            subs: HashMap::new(),
            by_dialog: HashMap::new(),
            by_key: HashMap::new(),
            expiries: BinaryHeap::new(),
            next_id: 1,
            tag_seed: tag_seed | 1,
        }
    }

    /// New limits and expiry bounds (a reload); subscriptions in place stay.
    pub fn set_settings(&mut self, settings: SubscriptionsConfig) {
        self.settings = settings;
    }

    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// The extensions someone watches (each once).
    pub fn watched(&self) -> Vec<String> {
        let mut v: Vec<String> = self.subs.values().map(|s| s.resource.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// The extension subscription `id` watches.
    pub fn resource_of(&self, id: u64) -> Option<&str> {
        self.subs.get(&id).map(|s| s.resource.as_str())
    }

    /// Subscribers per watched extension, for the live page.
    pub fn watchers(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for s in self.subs.values() {
            *m.entry(s.resource.clone()).or_insert(0) += 1;
        }
        m
    }

    fn token(&mut self) -> String {
        self.tag_seed ^= self.tag_seed << 13;
        self.tag_seed ^= self.tag_seed >> 7;
        self.tag_seed ^= self.tag_seed << 17;
        format!("s{:012x}", self.tag_seed & 0xffff_ffff_ffff)
    }

    fn dialog_key(req: &Request, event: &Event) -> Option<(String, String, Option<String>)> {
        Some((
            req.headers.call_id()?.to_owned(),
            req.headers.to()?.tag()?.to_owned(),
            event.id.clone(),
        ))
    }

    /// The subscription an in-dialog SUBSCRIBE refreshes, if it is one of ours.
    pub fn owns(&self, req: &Request) -> bool {
        Event::of(&req.headers)
            .and_then(|e| Self::dialog_key(req, &e))
            .is_some_and(|k| self.by_dialog.contains_key(&k))
    }

    /// The expiry a SUBSCRIBE asks for, checked: `Err` for one too brief (423).
    fn expires(&self, req: &Request) -> Result<u32, Refusal> {
        let asked = req
            .headers
            .expires()
            .unwrap_or(self.settings.default_expires);
        if asked != 0 && asked < self.settings.min_expires {
            return Err(Refusal {
                status: 423,
                reason: "Interval Too Brief",
                min_expires: Some(self.settings.min_expires),
            });
        }
        Ok(asked.min(self.settings.max_expires))
    }

    /// The package of a SUBSCRIBE, or the refusal (489 for a package we do not serve, 406 when
    /// the phone does not accept its body type).
    pub fn package_of(req: &Request) -> Result<(Event, Package), Refusal> {
        let Some(ev) = Event::of(&req.headers) else {
            return Err(Refusal::new(489, "Bad Event"));
        };
        let Some(package) = Package::parse(&ev.package) else {
            return Err(Refusal::new(489, "Bad Event"));
        };
        if !event::accepts(&req.headers, package.content_type()) {
            return Err(Refusal::new(406, "Not Acceptable"));
        }
        Ok((ev, package))
    }

    /// Decides on a new (out-of-dialog) SUBSCRIBE.
    pub fn subscribe(
        &mut self,
        now: Instant,
        new: NewSubscription<'_>,
    ) -> Result<Accepted, Refusal> {
        let (event, package) = Self::package_of(new.request)?;
        if package == Package::MessageSummary && new.resource != new.watcher {
            return Err(Refusal::new(403, "Only the own mailbox may be watched"));
        }
        let expires = self.expires(new.request)?;
        if self.subs.len() >= self.settings.max_total {
            return Err(Refusal::new(503, "Too Many Subscriptions"));
        }
        let of_watcher = self
            .subs
            .values()
            .filter(|s| s.watcher == new.watcher)
            .count();
        if of_watcher >= self.settings.max_per_extension {
            tracing::warn!(
                extension = new.watcher,
                "subscription refused: limit per extension"
            );
            return Err(Refusal::new(
                403,
                "Too Many Subscriptions For This Extension",
            ));
        }
        let of_phone = self
            .subs
            .values()
            .filter(|s| s.dialog.peer.remote == new.peer.remote)
            .count();
        if of_phone >= self.settings.max_per_phone {
            tracing::warn!(extension = new.watcher, peer = %new.peer, "subscription refused: limit per phone");
            return Err(Refusal::new(403, "Too Many Subscriptions From This Phone"));
        }
        let tag = self.token();
        let Some(dialog) = Dialog::uas(new.request, &tag, new.peer) else {
            return Err(Refusal::new(400, "Bad Request"));
        };
        let id = self.next_id;
        self.next_id += 1;
        let key = (dialog.call_id.clone(), tag.clone(), event.id.clone());
        let expires_at = now + Duration::from_secs(u64::from(expires));
        tracing::info!(watcher = new.watcher, resource = new.resource, package = %event.package, expires, peer = %new.peer, "subscription");
        self.subs.insert(
            id,
            Subscription {
                dialog,
                event,
                package,
                watcher: new.watcher.to_owned(),
                resource: new.resource.to_owned(),
                expires_at,
                version: 0,
                last: None,
                in_flight: None,
                contact: new.contact,
                via_host: new.via_host,
            },
        );
        self.by_dialog.insert(key, id);
        self.expiries.push(Reverse((expires_at, id)));
        Ok(Accepted { id, tag, expires })
    }

    /// An in-dialog SUBSCRIBE (a refresh, or with Expires 0 the end): the Expires to answer
    /// 200 with, then [`Subscriptions::notify_now`] (which ends the subscription after its
    /// NOTIFY when the expiry is 0).
    pub fn refresh(
        &mut self,
        now: Instant,
        req: &Request,
        peer: Peer,
    ) -> Result<Accepted, Refusal> {
        let Some(event) = Event::of(&req.headers) else {
            return Err(Refusal::new(489, "Bad Event"));
        };
        let key = Self::dialog_key(req, &event)
            .ok_or(Refusal::new(481, "Subscription Does Not Exist"))?;
        let Some(&id) = self.by_dialog.get(&key) else {
            return Err(Refusal::new(481, "Subscription Does Not Exist"));
        };
        let expires = self.expires(req)?;
        let Some(s) = self.subs.get_mut(&id) else {
            return Err(Refusal::new(481, "Subscription Does Not Exist"));
        };
        if s.dialog.peer.remote.ip() != peer.remote.ip() {
            return Err(Refusal::new(403, "Forbidden"));
        }
        if !s.dialog.accept_remote_cseq(req) {
            return Err(Refusal::new(500, "CSeq Out Of Order"));
        }
        s.dialog.refresh_target(&req.headers);
        s.expires_at = now + Duration::from_secs(u64::from(expires));
        self.expiries.push(Reverse((s.expires_at, id)));
        tracing::debug!(watcher = %s.watcher, resource = %s.resource, expires, "subscription refreshed");
        Ok(Accepted {
            id,
            tag: key.1,
            expires,
        })
    }

    /// Sends subscription `id` a NOTIFY with `state` now (after its SUBSCRIBE was answered);
    /// a subscription whose expiry is now ends with it.
    pub fn notify_now(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: u64,
        state: &ExtensionState,
    ) {
        let ending = self.subs.get(&id).is_some_and(|s| s.expires_at <= now);
        self.send(now, layer, id, state, ending);
        if ending {
            self.remove(id);
        }
    }

    /// Notifies every subscription whose extension's state changed; `state_of` gives an
    /// extension's state now.
    pub fn update(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        state_of: &HashMap<String, ExtensionState>,
    ) {
        let due: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.in_flight.is_none())
            .filter(|(_, s)| {
                let new = state_of.get(&s.resource);
                match (&s.last, new) {
                    (Some(last), Some(new)) => last.differs(new, s.package),
                    (None, _) => true,
                    (Some(_), None) => false,
                }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(resource) = self.subs.get(&id).map(|s| s.resource.clone()) else {
                continue;
            };
            let state = state_of.get(&resource).cloned().unwrap_or_default();
            self.send(now, layer, id, &state, false);
        }
    }

    fn send(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        id: u64,
        state: &ExtensionState,
        ending: bool,
    ) {
        let domain = self.domain.clone();
        let Some(s) = self.subs.get_mut(&id) else {
            return;
        };
        let ended: Vec<DialogView> = match &s.last {
            Some(last) => last
                .dialogs
                .iter()
                .filter(|d| !state.dialogs.iter().any(|n| n.id == d.id))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let body = match s.package {
            Package::Dialog => bodies::dialog_info(&s.resource, &domain, s.version, state, &ended),
            Package::Presence => bodies::pidf(&s.resource, &domain, state),
            Package::MessageSummary => bodies::message_summary(&s.resource, &domain, 0, 0),
        };
        s.version = s.version.wrapping_add(1);
        let left = s.expires_at.saturating_duration_since(now).as_secs();
        let sub_state = if ending {
            SubscriptionState::Terminated("timeout")
        } else {
            SubscriptionState::Active(u32::try_from(left).unwrap_or(u32::MAX).max(1))
        };
        let mut params = Params::new();
        params.set("branch", Some(&layer.new_branch()));
        params.set("rport", None);
        let peer = s.dialog.peer;
        let via = Via {
            transport: peer.proto.via_token().into(),
            host: s.via_host.clone(),
            port: Some(peer.local.port()),
            params,
        };
        let req = event::notify(
            &mut s.dialog,
            via,
            &Notification {
                event: &s.event,
                state: sub_state,
                content_type: s.package.content_type(),
                body: Bytes::from(body),
                contact: &s.contact,
            },
        );
        tracing::debug!(watcher = %s.watcher, resource = %s.resource, package = %s.event.package, lamp = state.lamp(), ending, "NOTIFY");
        s.last = Some(state.clone());
        if let Some(old) = s.in_flight.take() {
            self.by_key.remove(&old);
        }
        let key = layer.send_request(now, req, peer);
        if ending {
            // Nobody waits for the answer to the last NOTIFY.
            return;
        }
        s.in_flight = Some(key);
        self.by_key.insert(key, id);
    }

    fn remove(&mut self, id: u64) {
        if let Some(s) = self.subs.remove(&id) {
            if let Some(k) = s.in_flight {
                self.by_key.remove(&k);
            }
            let key = (
                s.dialog.call_id.clone(),
                s.dialog.local.tag().unwrap_or_default().to_owned(),
                s.event.id.clone(),
            );
            self.by_dialog.remove(&key);
        }
    }

    /// A final response to one of our NOTIFYs; `false` when the key is not ours. A failure
    /// (481: the phone forgot the subscription; anything else but 2xx) ends the subscription.
    pub fn response(&mut self, key: ClientKey, status: u16) -> bool {
        if status < 200 {
            return self.by_key.contains_key(&key);
        }
        let Some(id) = self.by_key.remove(&key) else {
            return false;
        };
        if (200..300).contains(&status) {
            if let Some(s) = self.subs.get_mut(&id) {
                s.in_flight = None;
            }
        } else {
            if let Some(s) = self.subs.get(&id) {
                tracing::info!(watcher = %s.watcher, resource = %s.resource, status, "NOTIFY refused: subscription ended");
            }
            self.remove(id);
        }
        true
    }

    /// A NOTIFY of ours got no answer: the subscription ends.
    pub fn timeout(&mut self, key: ClientKey) -> bool {
        let Some(id) = self.by_key.remove(&key) else {
            return false;
        };
        if let Some(s) = self.subs.get(&id) {
            tracing::info!(watcher = %s.watcher, resource = %s.resource, "NOTIFY not answered: subscription ended");
        }
        self.remove(id);
        true
    }

    /// When the next subscription expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.peek().map(|Reverse((t, _))| *t)
    }

    /// Ends the subscriptions that expired, each with a last NOTIFY (`terminated;reason=timeout`).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        layer: &mut TransactionLayer,
        state_of: &HashMap<String, ExtensionState>,
    ) {
        while let Some(Reverse((at, id))) = self.expiries.peek().copied() {
            if at > now {
                break;
            }
            self.expiries.pop();
            let Some(s) = self.subs.get(&id) else {
                continue;
            };
            if s.expires_at > now {
                continue; // refreshed meanwhile
            }
            tracing::info!(watcher = %s.watcher, resource = %s.resource, "subscription expired");
            let state = state_of.get(&s.resource).cloned().unwrap_or_default();
            self.send(now, layer, id, &state, true);
            self.remove(id);
        }
        if self.expiries.len() > 4 * self.subs.len() + 256 {
            let subs = &self.subs;
            self.expiries
                .retain(|Reverse((_, id))| subs.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests;
