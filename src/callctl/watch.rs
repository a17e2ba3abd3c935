//! The SIP core's side of subscriptions: SUBSCRIBE answered (authenticated like every request
//! from a phone), refreshed and ended, and the state of watched extensions built from the
//! B2BUA's calls and the registrar for [`crate::subscriptions`] and the live page.

use std::collections::HashMap;
use std::time::Instant;

use super::SipCore;
use crate::b2bua::{CallView, LiveState};
use crate::sip::header::{Contact, Header, NameAddr};
use crate::sip::message::{Request, Response};
use crate::sip::peer::{Peer, Proto};
use crate::sip::transaction::ServerKey;
use crate::sip::uri::{Host, SipUri, Uri};
use crate::subscriptions::{
    DialogState, DialogView, Direction, ExtensionState, NewSubscription, Refusal, Subscriptions,
};

/// An extension's busy lamp, for the live page.
use crate::live::LiveLamp;

impl SipCore {
    /// Our Contact for a dialog on `peer` and the host our Via names there.
    fn contact_on(&self, user: &str, peer: &Peer) -> (NameAddr, Host) {
        let host = if peer.local.ip().is_unspecified() {
            Host::from_ip(self.settings.calls.media_ip)
        } else {
            Host::from_ip(peer.local.ip())
        };
        let mut uri = SipUri::new(Some(user), host.clone(), Some(peer.local.port()));
        match peer.proto {
            Proto::Tcp => uri.params.set("transport", Some("tcp")),
            Proto::Tls => uri.params.set("transport", Some("tls")),
            Proto::Udp => {}
        }
        (NameAddr::new(Uri::Sip(uri)), host)
    }

    fn refusal(&mut self, req: &Request, r: Refusal) -> Response {
        let mut resp = self.response(req, r.status, Some(r.reason));
        match r.status {
            489 => resp.headers.push(Header::Other(
                "Allow-Events".into(),
                crate::sip::event::ALLOW_EVENTS.into(),
            )),
            423 => {
                if let Some(min) = r.min_expires {
                    resp.headers.push(Header::MinExpires(min));
                }
            }
            _ => {}
        }
        resp
    }

    /// A 200 to a SUBSCRIBE: our To tag, Expires and Contact.
    fn subscribed(&self, req: &Request, tag: &str, expires: u32, contact: NameAddr) -> Response {
        let mut r = Response::to_request(req, 200, "OK", Some(tag));
        r.headers.push(Header::Expires(expires));
        r.headers.push(Header::Contact(Contact::Addr(contact)));
        r.headers.push(Header::Other(
            "Server".into(),
            self.settings.server_name.clone(),
        ));
        r
    }

    /// A new SUBSCRIBE (RFC 6665 §4.2.1): the package first (489 for one we do not serve),
    /// then the phone's credentials, the watched extension (404 when there is none), the
    /// limits; accepted, it is answered 200 and the first NOTIFY follows at once.
    pub(super) fn subscribe(
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
        if let Some(r) = self.unsupported_required(req, &[], true) {
            return Some(r);
        }
        if let Err(r) = Subscriptions::package_of(req) {
            return Some(self.refusal(req, r));
        }
        let watcher = match self.authenticate(unix, req, peer) {
            Ok(ext) => ext.number,
            Err(r) => return Some(r),
        };
        let resource = req
            .uri
            .as_sip()
            .and_then(|u| u.user_unescaped())
            .unwrap_or_default();
        if !self.extensions.get(&resource).is_some_and(|e| e.enabled) {
            return Some(self.response(req, 404, None));
        }
        let (contact, via_host) = self.contact_on(&resource, &peer);
        let accepted = self.subscriptions.subscribe(
            now,
            NewSubscription {
                request: req,
                peer,
                watcher: &watcher,
                resource: &resource,
                contact: contact.clone(),
                via_host,
            },
        );
        match accepted {
            Err(r) => Some(self.refusal(req, r)),
            Ok(a) => {
                let r = self.subscribed(req, &a.tag, a.expires, contact);
                self.layer.respond(now, key, r);
                let state = self.extension_state(&self.calls.views(), unix, &resource);
                self.subscriptions
                    .notify_now(now, &mut self.layer, a.id, &state);
                None
            }
        }
    }

    /// A SUBSCRIBE inside a subscription's dialog: a refresh, or (Expires 0) the end.
    pub(super) fn resubscribe(
        &mut self,
        now: Instant,
        unix: u64,
        key: ServerKey,
        req: &Request,
        peer: Peer,
    ) -> Option<Response> {
        let resource = req
            .uri
            .as_sip()
            .and_then(|u| u.user_unescaped())
            .unwrap_or_default();
        match self.subscriptions.refresh(now, req, peer) {
            Err(r) => Some(self.refusal(req, r)),
            Ok(a) => {
                let resource = self
                    .subscriptions
                    .resource_of(a.id)
                    .map(str::to_owned)
                    .unwrap_or(resource);
                let (contact, _) = self.contact_on(&resource, &peer);
                let r = self.subscribed(req, &a.tag, a.expires, contact);
                self.layer.respond(now, key, r);
                let state = self.extension_state(&self.calls.views(), unix, &resource);
                self.subscriptions
                    .notify_now(now, &mut self.layer, a.id, &state);
                None
            }
        }
    }

    /// Notifies the subscribers of extensions whose state changed.
    pub(super) fn update_subscriptions(&mut self, now: Instant, unix: u64) {
        if self.subscriptions.is_empty() {
            return;
        }
        let states = self.extension_states(unix, &self.subscriptions.watched());
        self.subscriptions.update(now, &mut self.layer, &states);
    }

    /// The state of each of `extensions`.
    pub(super) fn extension_states(
        &self,
        unix: u64,
        extensions: &[String],
    ) -> HashMap<String, ExtensionState> {
        if extensions.is_empty() {
            return HashMap::new();
        }
        let views = self.calls.views();
        extensions
            .iter()
            .map(|e| (e.clone(), self.extension_state(&views, unix, e)))
            .collect()
    }

    /// What extension `ext` is doing: registered or not, and its calls — those it made
    /// (initiator) and those ringing or answered on one of its phones (recipient).
    pub(super) fn extension_state(
        &self,
        views: &[CallView],
        unix: u64,
        ext: &str,
    ) -> ExtensionState {
        let bindings: Vec<String> = self
            .registrar
            .lookup(ext, unix)
            .iter()
            .map(|b| b.uri.to_string())
            .collect();
        let label = format!("extension {ext}");
        let mut dialogs = Vec::new();
        for v in views {
            if !v.from_outside && v.caller == ext {
                dialogs.push(DialogView {
                    id: format!("call{}-out", v.id),
                    call_id: v.a_call_id.clone(),
                    local_tag: v.a_their_tag.clone(),
                    remote_tag: (v.state != LiveState::Trying).then(|| v.a_our_tag.clone()),
                    direction: Direction::Initiator,
                    state: match v.state {
                        LiveState::Trying => DialogState::Trying,
                        LiveState::Ringing => DialogState::Early,
                        LiveState::Answered => DialogState::Confirmed,
                    },
                    remote: v.callee.clone(),
                    remote_name: None,
                });
            }
            let to_ext = v.stage_label == label;
            let fork = v
                .forks
                .iter()
                // A phone shows a call once it rings (as Asterisk's lamps do): not while the
                // INVITE is still on its way.
                .filter(|f| f.ringing || f.answered)
                .filter(|f| to_ext || bindings.contains(&f.uri))
                .max_by_key(|f| (f.answered, f.ringing));
            if let Some(f) = fork {
                dialogs.push(DialogView {
                    id: format!("call{}-in", v.id),
                    call_id: f.call_id.clone(),
                    local_tag: f.their_tag.clone(),
                    remote_tag: Some(f.our_tag.clone()),
                    direction: Direction::Recipient,
                    state: if f.answered {
                        DialogState::Confirmed
                    } else {
                        DialogState::Early
                    },
                    remote: v.caller.clone(),
                    remote_name: v.caller_name.clone(),
                });
            }
        }
        ExtensionState {
            registered: !bindings.is_empty(),
            dialogs,
        }
    }

    /// The busy lamp of every enabled extension, for the live page: the state subscribers
    /// are told, and how many subscriptions watch it.
    pub fn lamps(&self, unix: u64) -> Vec<LiveLamp> {
        let views = self.calls.views();
        let watchers = self.subscriptions.watchers();
        let mut lamps: Vec<LiveLamp> = self
            .extensions
            .values()
            .filter(|e| e.enabled)
            .map(|e| {
                let st = self.extension_state(&views, unix, &e.number);
                LiveLamp {
                    extension: e.number.clone(),
                    name: e.name.clone(),
                    lamp: st.lamp(),
                    watchers: watchers.get(&e.number).copied().unwrap_or(0),
                }
            })
            .collect();
        lamps.sort_by(|a, b| a.extension.cmp(&b.extension));
        lamps
    }

    /// Subscriptions in place (for status and tests).
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }
}
