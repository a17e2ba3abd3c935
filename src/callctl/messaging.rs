//! Text messages in the SIP core (RFC 3428 MESSAGE), sans-IO: it takes MESSAGEs from phones
//! (authenticated like calls) and hands them out as [`FromPhone`] for the message service to
//! store and route, and it delivers stored messages ([`Deliver`]: an SMS that came in, a
//! message between extensions) to every registered contact of their extensions. A message
//! whose extensions have no contact waits, and goes out when one registers; one a phone
//! refused or did not answer is tried again after [`RETRY`]. The first 2xx delivers it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::registrar::Registrar;
use crate::sip::im;
use crate::sip::transaction::{ClientKey, TransactionLayer};

/// Pause before a message no phone took is offered again.
pub const RETRY: Duration = Duration::from_secs(30);

pub use crate::sms::messages::{Deliver, FromPhone};

struct Waiting {
    msg: Deliver,
    in_flight: usize,
    retry_at: Option<Instant>,
}

/// The core's message state.
#[derive(Default)]
pub struct Messaging {
    waiting: Vec<Waiting>,
    keys: HashMap<ClientKey, i64>,
    delivered: Vec<i64>,
    from_phones: Vec<FromPhone>,
    counter: u64,
}

impl Messaging {
    /// Queues a message for delivery (again: a message already waiting is not doubled).
    pub fn enqueue(&mut self, msg: Deliver) {
        if !self.waiting.iter().any(|w| w.msg.id == msg.id) {
            self.waiting.push(Waiting {
                msg,
                in_flight: 0,
                retry_at: None,
            });
        }
    }

    /// A phone's MESSAGE, for the service.
    pub fn from_phone(&mut self, m: FromPhone) {
        self.from_phones.push(m);
    }

    /// MESSAGEs from phones since the last call.
    pub fn take_from_phones(&mut self) -> Vec<FromPhone> {
        std::mem::take(&mut self.from_phones)
    }

    /// Ids of messages a phone took since the last call.
    pub fn take_delivered(&mut self) -> Vec<i64> {
        std::mem::take(&mut self.delivered)
    }

    /// When [`Messaging::pump`] has a retry due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.waiting
            .iter()
            .filter(|w| w.in_flight == 0)
            .filter_map(|w| w.retry_at)
            .min()
    }

    /// Sends every waiting message that is due and has a registered contact.
    #[allow(clippy::too_many_arguments)]
    pub fn pump(
        &mut self,
        now: Instant,
        unix: u64,
        layer: &mut TransactionLayer,
        registrar: &Registrar,
        domain: &str,
        tag_seed: u64,
    ) {
        for w in &mut self.waiting {
            if w.in_flight > 0 || w.retry_at.is_some_and(|t| now < t) {
                continue;
            }
            for ext in &w.msg.to {
                for b in registrar.lookup(ext, unix) {
                    let target = super::route_to_binding(b);
                    self.counter += 1;
                    let tag = format!(
                        "im{:x}",
                        (self.counter ^ tag_seed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    );
                    let branch = layer.new_branch();
                    let req = im::build(&im::Outgoing {
                        target: &target.uri,
                        peer: target.peer,
                        from_user: &w.msg.from,
                        to_user: ext,
                        domain,
                        branch: &branch,
                        tag: &tag,
                        text: &w.msg.text,
                    });
                    let key = layer.send_request(now, req, target.peer);
                    self.keys.insert(key, w.msg.id);
                    w.in_flight += 1;
                    tracing::debug!(id = w.msg.id, %ext, peer = %target.peer, "MESSAGE sent");
                }
            }
        }
    }

    /// A final response to one of our MESSAGEs; `false` when the key is not ours.
    pub fn response(&mut self, now: Instant, key: ClientKey, status: u16) -> bool {
        if status < 200 {
            return self.keys.contains_key(&key);
        }
        let Some(id) = self.keys.remove(&key) else {
            return false;
        };
        let Some(i) = self.waiting.iter().position(|w| w.msg.id == id) else {
            // Already delivered through another contact.
            return true;
        };
        if (200..300).contains(&status) {
            self.waiting.remove(i);
            self.keys.retain(|_, v| *v != id);
            tracing::info!(id, status, "message delivered to a phone");
            self.delivered.push(id);
        } else if let Some(w) = self.waiting.get_mut(i) {
            w.in_flight = w.in_flight.saturating_sub(1);
            if w.in_flight == 0 {
                tracing::info!(id, status, "no phone took the message: trying again later");
                w.retry_at = Some(now + RETRY);
            }
        }
        true
    }

    /// A MESSAGE that got no answer; `false` when the key is not ours.
    pub fn timeout(&mut self, now: Instant, key: ClientKey) -> bool {
        self.response(now, key, 408)
    }

    /// Messages waiting for a phone.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}
