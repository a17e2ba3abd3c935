//! The SIP core's check of the targets a 3xx names (see [`crate::b2bua::Redirect`]): a redirect
//! must not become a way around the caller's permissions or into a loop.
//!
//! Each Contact, highest `q` first: one the call already tried is a loop and skipped; one at
//! this office (our domain, or one of our listen addresses) must be an enabled extension the
//! caller may call, and rings its registered phones; one elsewhere must name an address (no
//! DNS lookup here) and, when its user part is a number, that number is classified with the
//! numbering plan and checked against the caller's permissions — a redirect to a barred or
//! premium number is refused and the refusal kept with the call's record. Callers from outside
//! the office are only redirected to extensions.

use std::time::Instant;

use super::SipCore;
use crate::b2bua::{Redirect, RedirectDecision, Target};
use crate::routing::{Permission, Permissions};
use crate::sip::peer::Proto;
use crate::sip::uri::{Host, SipUri, Uri};

/// A number in a redirect's user part: `+` and digits (visual separators allowed).
pub(super) fn number_of(user: &str) -> Option<String> {
    let cleaned: String = user
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect();
    let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
    (!digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())).then_some(cleaned)
}

pub(super) fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl SipCore {
    /// The numbering plan the targets of redirects are classified with (the router's).
    pub fn set_numbering(&mut self, plan: crate::routing::numbering::NumberingPlan) {
        self.numbering = Some(plan);
    }

    /// Checks every redirect the calls met since the last call and tells each call what to do.
    pub(super) fn follow_redirects(&mut self, now: Instant, unix: u64) {
        for r in self.calls.take_redirects() {
            let decision = self.redirect_decision(unix, &r);
            tracing::info!(
                call = r.call,
                targets = decision.targets.len(),
                refused = ?decision.refused,
                "redirect checked"
            );
            self.calls
                .redirect_decided(now, &mut self.layer, r.call, r.fork, decision);
        }
    }

    pub(super) fn is_ours(&self, u: &SipUri) -> bool {
        match &u.host {
            Host::Name(n) => n.eq_ignore_ascii_case(&self.settings.realm),
            h => h.ip().is_some_and(|ip| {
                let port = u.port.unwrap_or(5060);
                self.local_addrs
                    .iter()
                    .any(|(_, a)| a.port() == port && (a.ip() == ip || a.ip().is_unspecified()))
            }),
        }
    }

    fn redirect_decision(&self, unix: u64, r: &Redirect) -> RedirectDecision {
        let mut d = RedirectDecision::default();
        let perms = if r.caller.origin.is_some() {
            let mut p = Permissions::NONE;
            p.insert(Permission::Internal);
            p
        } else {
            self.extensions
                .get(&r.caller.number)
                .and_then(|e| e.permissions)
                .unwrap_or(self.settings.default_permissions)
        };
        let mut seen: Vec<String> = r.tried.clone();
        for uri in &r.contacts {
            let text = uri.to_string();
            if seen.contains(&text) {
                d.refused.push(format!("redirect to {text}: loop"));
                continue;
            }
            seen.push(text.clone());
            let outside = r.caller.origin.is_some();
            match self.redirect_targets(unix, &r.caller.number, perms, outside, uri) {
                Ok(t) => d.targets.extend(t),
                Err(why) => d.refused.push(why),
            }
        }
        d
    }

    /// What one Contact of a 3xx rings, or why it is refused.
    fn redirect_targets(
        &self,
        unix: u64,
        caller: &str,
        perms: Permissions,
        outside: bool,
        uri: &Uri,
    ) -> Result<Vec<Target>, String> {
        let Uri::Sip(u) = uri else {
            return Err(format!(
                "redirect to {uri}: only SIP addresses are followed"
            ));
        };
        let user = u.user_unescaped().unwrap_or_default();
        if self.is_ours(u) {
            if !self.extensions.get(&user).is_some_and(|e| e.enabled) {
                return Err(format!("redirect to {uri}: no such extension"));
            }
            if !perms.allows(Permission::Internal) {
                return Err("Calls to internal numbers are barred".to_owned());
            }
            let targets = self.contacts_of(&user, unix);
            if targets.is_empty() {
                return Err(format!("redirect to extension {user}: not registered"));
            }
            return Ok(targets);
        }
        if let Some(number) = number_of(&user) {
            let Some(plan) = &self.numbering else {
                return Err(format!("redirect to {uri}: no numbering plan to check it"));
            };
            let dialled = plan
                .classify(&number, |n| self.extensions.contains_key(n))
                .map_err(|e| format!("redirect to {uri}: {e}"))?;
            if let Err(e) = plan.check(&dialled, &perms) {
                tracing::warn!(%caller, %uri, "redirect refused: {e}");
                return Err(capitalised(&e.to_string()));
            }
        } else if outside {
            return Err(format!(
                "redirect to {uri}: callers from outside reach extensions only"
            ));
        }
        let Some(ip) = u.host.ip() else {
            return Err(format!(
                "redirect to {uri}: not followed (a host name needs DNS)"
            ));
        };
        let proto = match u.transport().as_deref() {
            Some("tcp") => Proto::Tcp,
            Some("tls") => Proto::Tls,
            _ if u.secure => Proto::Tls,
            _ => Proto::Udp,
        };
        let port = u
            .port
            .unwrap_or(if proto == Proto::Tls { 5061 } else { 5060 });
        let Some(peer) = self.outgoing_peer(proto, std::net::SocketAddr::new(ip, port)) else {
            return Err(format!("redirect to {uri}: no {proto} socket to reach it"));
        };
        let caller_did = self.extensions.get(caller).and_then(|e| e.did.clone());
        Ok(vec![Target {
            uri: uri.clone(),
            peer,
            to: Some(uri.clone()),
            auth: None,
            from_user: caller_did,
            srtp: self.settings.calls.srtp.default,
            presentation: None,
            line: None,
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_user_parts() {
        assert_eq!(number_of("+49 900-123").as_deref(), Some("+49900123"));
        assert_eq!(number_of("0900123").as_deref(), Some("0900123"));
        assert_eq!(number_of("alice"), None);
        assert_eq!(number_of("+"), None);
        assert_eq!(
            capitalised("calls to premium numbers are barred"),
            "Calls to premium numbers are barred"
        );
    }
}
