//! The RFC 3261 §17 transaction layer, amended by RFC 6026 (the Accepted states, Timers L and M)
//! and RFC 3581 (rport), as a sans-IO state machine.
//!
//! The layer never reads a clock, sleeps, spawns or touches a socket. The transport shell feeds it
//! parsed messages ([`TransactionLayer::handle_request`], [`TransactionLayer::handle_response`])
//! and the current time ([`TransactionLayer::handle_timeout`] at [`TransactionLayer::poll_timeout`]),
//! then drains [`TransactionLayer::poll_transmit`] (bytes to send) and
//! [`TransactionLayer::poll_event`] (what the transaction user must hear). The TU answers server
//! transactions with [`TransactionLayer::respond`] and starts client transactions with
//! [`TransactionLayer::send_request`].
//!
//! Over a reliable transport (TCP) nothing is retransmitted and the waiting timers D, I, J and K
//! are zero: the transaction ends at once. Messages are encoded once and the bytes kept for
//! retransmission.
//!
//! Deviations and choices, all within the RFCs' latitude:
//! - A new INVITE server transaction sends 100 Trying over every transport once the TU has had
//!   its turn, unless the TU answered it (a stateless 401 must stay the only response).
//! - A CANCEL is a non-INVITE server transaction of its own, answered by the layer: 200 when it
//!   matches an INVITE server transaction (with an [`Event::Cancel`] when that INVITE has no final
//!   response yet), 481 otherwise (no event). Only INVITEs can be cancelled this way.
//! - A CANCEL sent by the TU while its INVITE has had no provisional response is held back until
//!   one arrives (§9.1); if the INVITE gets a final response or times out first, the CANCEL is
//!   dropped and reported as [`Event::Timeout`].
//! - An INVITE client transaction in Proceeding gives up with [`Event::Timeout`] 181 s after the
//!   last provisional response (like a proxy's Timer C), or 64·T1 after its CANCEL was sent
//!   (§9.1), so a peer that disappears after a 180 cannot leak it.
//! - A transport error ([`TransactionLayer::transport_error`]) is reported as [`Event::Timeout`]
//!   (the TU treats it like 408; §17.1.4 speaks of 503).
//! - `send_request` with an ACK sends it once, statelessly; no transaction is created.

mod timers;
mod util;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::hashing::{IdMap, WireMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::debug;

use crate::sip::message::{Message, Request, Response};
use crate::sip::method::Method;
use crate::sip::peer::Peer;

use timers::{deadline, take_armed, Armed, TimerKind, TimerSet, TxnId};
pub use util::{build_ack, build_cancel, MAGIC_COOKIE};
use util::{fix_top_via, is_legacy, match_key, response_destination, to_tag, MatchKey};

/// The RFC 3261 timer base values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip time estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmission interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    /// 64·T1: Timers B, F, H, J, L and M.
    fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// Timer D over unreliable transports (RFC 3261: at least 32 s).
const TIMER_D: Duration = Duration::from_secs(32);

/// How long an INVITE client transaction waits in Proceeding after the last provisional response
/// before giving up (like a proxy's Timer C, RFC 3261 §16.6: more than 3 minutes). RFC 3261 leaves
/// this to the TU; the layer enforces it so a peer that vanishes after a 180 cannot leak the
/// transaction.
const TIMER_C: Duration = Duration::from_secs(181);

/// Identifies a server transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServerKey(u64);

impl ServerKey {
    /// A key for unit tests of code that keeps keys.
    #[cfg(test)]
    pub fn for_tests(n: u64) -> ServerKey {
        ServerKey(n)
    }
}

/// Identifies a client transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey(u64);

/// Bytes to send to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Peer,
    pub data: Bytes,
}

/// What the transaction user must hear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new request for the TU (retransmissions are absorbed by the layer).
    Request {
        key: ServerKey,
        request: Request,
        peer: Peer,
    },
    /// A CANCEL that matched a pending INVITE server transaction (RFC 3261 §9.2). The layer has
    /// already answered the CANCEL with 200; the TU should answer the INVITE (`invite`) with 487.
    Cancel {
        invite: ServerKey,
        request: Request,
        peer: Peer,
    },
    /// A request that matches no transaction and must not create one: an ACK for a 2xx (for the
    /// dialog layer), or an ACK matching an INVITE server transaction in the Accepted state.
    Stray { request: Request, peer: Peer },
    /// A response for a client transaction (provisionals, finals, and 2xx retransmissions in the
    /// INVITE client's Accepted state per RFC 6026).
    Response { key: ClientKey, response: Response },
    /// A response matching no client transaction (e.g. a 2xx retransmission after Timer M).
    StrayResponse { response: Response, peer: Peer },
    /// Timer B, C or F fired, a transport error occurred, or a held-back CANCEL was dropped: the
    /// client transaction ended without a final response (the TU treats it as 408).
    Timeout { key: ClientKey },
    /// Timer H fired: a non-2xx final response to an INVITE was never acknowledged.
    AckTimeout { key: ServerKey },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServerState {
    /// Non-INVITE, nothing sent yet.
    Trying,
    /// INVITE after the 100, or non-INVITE after a provisional.
    Proceeding,
    Completed,
    /// INVITE: ACK received.
    Confirmed,
    /// INVITE: 2xx sent (RFC 6026).
    Accepted,
}

#[derive(Debug)]
struct ServerTxn {
    invite: bool,
    method: Method,
    state: ServerState,
    /// Where the request came from.
    peer: Peer,
    /// Where responses go (§18.2.2, RFC 3581).
    dest: Peer,
    match_key: MatchKey,
    /// The last provisional response sent.
    provisional: Option<Bytes>,
    /// The final response sent (kept for retransmission).
    final_response: Option<Bytes>,
    /// The To tag of the last response sent (for RFC 2543 ACK matching and the 200 to a CANCEL).
    response_to_tag: Option<String>,
    /// Current Timer G interval.
    interval: Duration,
    armed: Armed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    /// A CANCEL held back until its INVITE gets a provisional response.
    Held,
    /// INVITE sent, no response yet.
    Calling,
    /// Non-INVITE sent, no response yet.
    Trying,
    Proceeding,
    Completed,
    /// INVITE: 2xx received (RFC 6026).
    Accepted,
}

#[derive(Debug)]
struct ClientTxn {
    invite: bool,
    state: ClientState,
    peer: Peer,
    /// The encoded request, for retransmission.
    bytes: Bytes,
    /// The INVITE itself, to build the ACK for a non-2xx final response.
    request: Option<Request>,
    /// (branch, method) under which responses find it.
    index: (String, String),
    /// Current Timer A/E interval.
    interval: Duration,
    /// The ACK sent for a non-2xx final response.
    ack: Option<Bytes>,
    /// A CANCEL held back until this INVITE gets a provisional response.
    held_cancel: Option<ClientKey>,
    /// A CANCEL for this INVITE was sent: Timer C now runs 64·T1 from then (§9.1) and is no
    /// longer pushed back by provisional responses.
    cancelled: bool,
    armed: Armed,
}

/// The transaction layer of one SIP endpoint.
#[derive(Debug)]
pub struct TransactionLayer {
    timers: Timers,
    wheel: TimerSet,
    /// Boxed, as `clients`: a map keeps up to twice its length in slots, and after a burst
    /// its room stays until the next shrink; an empty slot costs a pointer, not a transaction.
    servers: IdMap<ServerKey, Box<ServerTxn>>,
    server_index: WireMap<MatchKey, ServerKey>,
    clients: IdMap<ClientKey, Box<ClientTxn>>,
    client_index: WireMap<(String, String), ClientKey>,
    events: VecDeque<Event>,
    transmits: VecDeque<Transmit>,
    /// New INVITE server transactions whose 100 Trying is sent when the TU has had its turn
    /// and answered neither finally nor provisionally (see [`TransactionLayer::poll_transmit`]).
    trying_due: Vec<ServerKey>,
    next_key: u64,
    token_seed: u64,
    token_counter: u64,
    /// Server transactions allowed at once; new requests beyond get 503 + Retry-After.
    max_servers: usize,
    /// New INVITEs are refused with 503 + Retry-After (the TU's overload admission).
    shedding: bool,
    /// New INVITEs refused so since the last [`TransactionLayer::take_shed`].
    shed: u64,
}

/// The default of [`TransactionLayer::set_max_server_transactions`].
/// A call holds about 70 transaction-seconds (Timers L and J keep its INVITE and BYE 32 s each),
/// so 200 000 sustain about 2 800 calls/s; new calls beyond are refused by overload admission
/// first (`callctl::overload`).
pub const DEFAULT_MAX_SERVER_TRANSACTIONS: usize = 200_000;

/// Retry-After (seconds) of the 503 for requests beyond the server transaction cap.
const BUSY_RETRY_AFTER: &str = "5";

impl TransactionLayer {
    pub fn new(timers: Timers) -> Self {
        TransactionLayer {
            timers,
            wheel: TimerSet::default(),
            servers: IdMap::default(),
            server_index: WireMap::default(),
            clients: IdMap::default(),
            client_index: WireMap::default(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            trying_due: Vec::new(),
            next_key: 0,
            token_seed: rand::random::<u64>(),
            token_counter: 0,
            max_servers: DEFAULT_MAX_SERVER_TRANSACTIONS,
            shedding: false,
            shed: 0,
        }
    }

    /// Caps the server transactions alive at once (a flood must not grow memory without
    /// bound): beyond `max`, new requests are answered statelessly with 503 and Retry-After.
    pub fn set_max_server_transactions(&mut self, max: usize) {
        self.max_servers = max.max(1);
    }

    /// While on, new INVITEs (no To tag, no transaction yet) are answered statelessly with 503
    /// and Retry-After, before the TU sees them; retransmissions and in-dialog requests pass.
    pub fn set_shedding(&mut self, on: bool) {
        self.shedding = on;
    }

    /// New INVITEs refused by [`TransactionLayer::set_shedding`] since the last call.
    pub fn take_shed(&mut self) -> u64 {
        std::mem::take(&mut self.shed)
    }

    /// Gives memory back after a flood: maps much larger than what they hold are shrunk.
    pub fn shrink(&mut self) {
        use crate::memory::{shrink_deque, shrink_map, shrink_vec};
        shrink_map(&mut self.servers);
        shrink_map(&mut self.server_index);
        shrink_map(&mut self.clients);
        shrink_map(&mut self.client_index);
        shrink_deque(&mut self.events);
        shrink_deque(&mut self.transmits);
        shrink_vec(&mut self.trying_due);
    }

    fn next_key(&mut self) -> u64 {
        self.next_key += 1;
        self.next_key
    }

    fn token(&mut self) -> String {
        let mut t = String::with_capacity(MAGIC_COOKIE.len() + 32);
        self.push_token(&mut t);
        t
    }

    /// Appends a fresh token (the seed in 16 hex digits, then the counter in hex) without
    /// `core::fmt`: one is made for every branch and tag.
    fn push_token(&mut self, out: &mut String) {
        self.token_counter += 1;
        push_hex(out, self.token_seed, 16);
        push_hex(out, self.token_counter, 1);
    }

    /// What every branch this layer makes begins with: a Via carrying it is one of ours
    /// (loop detection, RFC 3261 §16.3).
    pub fn branch_prefix(&self) -> String {
        format!("{MAGIC_COOKIE}{:016x}", self.token_seed)
    }

    /// A server key that no transaction has or will have: it stands for a call leg that is not
    /// a SIP transaction (a call that arrived on a PSTN line); responses for it are ignored.
    pub fn detached_server_key(&mut self) -> ServerKey {
        ServerKey(self.next_key())
    }

    /// A fresh branch: the magic cookie followed by a token unique to this layer.
    pub fn new_branch(&mut self) -> String {
        let mut b = String::with_capacity(MAGIC_COOKIE.len() + 32);
        b.push_str(MAGIC_COOKIE);
        self.push_token(&mut b);
        b
    }

    /// A fresh tag (for the To tag of responses the layer builds itself).
    fn new_tag(&mut self) -> String {
        let t = self.token();
        t[t.len().saturating_sub(12)..].to_owned()
    }

    fn transmit(&mut self, peer: Peer, data: Bytes) {
        self.transmits.push_back(Transmit { peer, data });
    }

    // ----------------------------------------------------------------------------- server side

    /// A request from the network. Applies RFC 3581 / §18.2.1 to the top Via, then matches it to
    /// a server transaction (§17.2.3, with the RFC 2543 fallback when the branch lacks the magic
    /// cookie). A new INVITE server transaction sends 100 Trying from the next `poll_transmit`.
    pub fn handle_request(&mut self, now: Instant, mut request: Request, peer: Peer) {
        if !fix_top_via(&mut request, peer) {
            debug!(%peer, method = %request.method, "request without Via dropped");
            return;
        }
        let req_to_tag = to_tag(&request.headers).map(str::to_owned);
        match request.method {
            Method::Ack => self.handle_ack(now, request, peer, req_to_tag),
            Method::Cancel => self.handle_cancel(now, request, peer, req_to_tag),
            _ => {
                let method = request.method.clone();
                let Some(key) = match_key(&request, &method, req_to_tag.as_deref()) else {
                    debug!(%peer, %method, "request without Call-ID or CSeq dropped");
                    return;
                };
                if let Some(&skey) = self.server_index.get(&key) {
                    self.server_retransmission(skey);
                    return;
                }
                if self.servers.len() >= self.max_servers {
                    self.refuse_busy(&request, peer);
                    return;
                }
                if self.shedding && method == Method::Invite && req_to_tag.is_none() {
                    self.shed += 1;
                    self.refuse_busy(&request, peer);
                    return;
                }
                let skey = self.new_server(key, &request, peer);
                if method == Method::Invite {
                    // Kept as the provisional response at once (a retransmission gets it), but
                    // sent only if the TU does not answer the INVITE in its turn: a 100 before
                    // a stateless final answer (a digest challenge) would stop the caller's
                    // retransmissions (§17.1.1.2), so a lost 401 left the call hanging.
                    let data = Bytes::from(Response::encode_reply(&request, 100, "Trying"));
                    if let Some(txn) = self.servers.get_mut(&skey) {
                        txn.provisional = Some(data);
                        self.trying_due.push(skey);
                    }
                }
                self.events.push_back(Event::Request {
                    key: skey,
                    request,
                    peer,
                });
            }
        }
    }

    /// Too many server transactions: 503 with Retry-After, sent without creating one.
    fn refuse_busy(&mut self, request: &Request, peer: Peer) {
        debug!(%peer, method = %request.method, "refused statelessly: 503 + Retry-After");
        let tag = self.new_tag();
        let mut r = Response::to_request(request, 503, "Service Unavailable", Some(&tag));
        r.headers.push(crate::sip::header::Header::Other(
            "Retry-After".into(),
            BUSY_RETRY_AFTER.into(),
        ));
        let dest = response_destination(request.headers.via(), peer);
        self.transmit(dest, Bytes::from(r.encode()));
    }

    fn new_server(&mut self, match_key: MatchKey, request: &Request, peer: Peer) -> ServerKey {
        let skey = ServerKey(self.next_key());
        let invite = request.method == Method::Invite;
        let txn = ServerTxn {
            invite,
            method: request.method.clone(),
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            peer,
            dest: response_destination(request.headers.via(), peer),
            match_key: match_key.clone(),
            provisional: None,
            final_response: None,
            response_to_tag: None,
            interval: self.timers.t1,
            armed: Armed::new(),
        };
        debug!(key = ?skey, method = %txn.method, %peer, "server transaction created");
        self.servers.insert(skey, Box::new(txn));
        self.server_index.insert(match_key, skey);
        skey
    }

    /// A retransmitted request reached server transaction `skey`.
    fn server_retransmission(&mut self, skey: ServerKey) {
        let Some(txn) = self.servers.get(&skey) else {
            return;
        };
        let resend = match txn.state {
            ServerState::Proceeding => txn.provisional.clone(),
            ServerState::Completed => txn.final_response.clone(),
            ServerState::Trying | ServerState::Confirmed | ServerState::Accepted => None,
        };
        debug!(key = ?skey, state = ?txn.state, resend = resend.is_some(), "request retransmission absorbed");
        if let Some(data) = resend {
            let dest = txn.dest;
            self.transmit(dest, data);
        }
    }

    fn handle_ack(&mut self, now: Instant, request: Request, peer: Peer, ack_tag: Option<String>) {
        let legacy = is_legacy(&request);
        let mut candidates = vec![match_key(&request, &Method::Invite, ack_tag.as_deref())];
        if legacy && ack_tag.is_some() {
            // An ACK to an initial INVITE carries the tag of our response, the INVITE had none.
            candidates.push(match_key(&request, &Method::Invite, None));
        }
        let found = candidates.into_iter().flatten().find_map(|k| {
            let skey = *self.server_index.get(&k)?;
            let txn = self.servers.get(&skey)?;
            (txn.invite && (!legacy || txn.response_to_tag == ack_tag)).then_some(skey)
        });
        let Some(skey) = found else {
            self.events.push_back(Event::Stray { request, peer });
            return;
        };
        let Some(txn) = self.servers.get_mut(&skey) else {
            return;
        };
        match txn.state {
            ServerState::Completed => {
                debug!(key = ?skey, "ACK received: Confirmed");
                txn.state = ServerState::Confirmed;
                // Nothing is retransmitted from Confirmed: give the messages back now.
                txn.final_response = None;
                txn.provisional = None;
                self.wheel.disarm(&mut txn.armed, TimerKind::G);
                self.wheel.disarm(&mut txn.armed, TimerKind::H);
                if txn.peer.proto.is_reliable() {
                    self.terminate_server(skey);
                } else {
                    let at = deadline(now, self.timers.t4);
                    self.wheel
                        .arm(&mut txn.armed, TxnId::Server(skey), TimerKind::I, at);
                }
            }
            ServerState::Accepted => self.events.push_back(Event::Stray { request, peer }),
            state => debug!(key = ?skey, ?state, "ACK absorbed"),
        }
    }

    fn handle_cancel(
        &mut self,
        now: Instant,
        request: Request,
        peer: Peer,
        req_to_tag: Option<String>,
    ) {
        let Some(own) = match_key(&request, &Method::Cancel, req_to_tag.as_deref()) else {
            debug!(%peer, "CANCEL without Call-ID or CSeq dropped");
            return;
        };
        if let Some(&skey) = self.server_index.get(&own) {
            self.server_retransmission(skey);
            return;
        }
        let target = match_key(&request, &Method::Invite, req_to_tag.as_deref())
            .and_then(|k| self.server_index.get(&k).copied())
            .filter(|k| self.servers.get(k).is_some_and(|t| t.invite));
        let skey = self.new_server(own, &request, peer);
        let response = match target.and_then(|t| self.servers.get(&t)) {
            Some(invite) => {
                let tag = match invite.response_to_tag.clone() {
                    Some(t) => t,
                    None => self.new_tag(),
                };
                Response::to_request(&request, 200, "OK", Some(&tag))
            }
            None => {
                debug!(%peer, "CANCEL matches no transaction: 481");
                let tag = self.new_tag();
                Response::to_request(&request, 481, "Call/Transaction Does Not Exist", Some(&tag))
            }
        };
        self.respond(now, skey, response);
        if let Some(invite) = target {
            if self
                .servers
                .get(&invite)
                .is_some_and(|t| t.state == ServerState::Proceeding)
            {
                self.events.push_back(Event::Cancel {
                    invite,
                    request,
                    peer,
                });
            }
        }
    }

    /// The TU answers server transaction `key`. Unknown keys, out-of-range status codes and
    /// responses the state does not allow are ignored (logged).
    pub fn respond(&mut self, now: Instant, key: ServerKey, response: Response) {
        self.respond_ref(now, key, &response);
    }

    /// [`TransactionLayer::respond`] with a borrowed response, for a TU that keeps it (a 2xx
    /// it retransmits itself): the layer only encodes it, so no copy is needed.
    pub fn respond_ref(&mut self, now: Instant, key: ServerKey, response: &Response) {
        let Some(txn) = self.servers.get_mut(&key) else {
            debug!(
                ?key,
                status = response.status,
                "response for an unknown server transaction ignored"
            );
            return;
        };
        let status = response.status;
        if !(100..=699).contains(&status) {
            debug!(?key, status, "response with an invalid status ignored");
            return;
        }
        let reliable = txn.peer.proto.is_reliable();
        let id = TxnId::Server(key);
        let provisional = status < 200;
        let success = (200..300).contains(&status);
        let allowed = match (txn.invite, txn.state) {
            (true, ServerState::Proceeding) => true,
            (true, ServerState::Accepted) => success,
            (false, ServerState::Trying | ServerState::Proceeding) => true,
            _ => false,
        };
        if !allowed {
            debug!(?key, status, state = ?txn.state, "response not allowed in this state ignored");
            return;
        }
        let data = Bytes::from(response.encode());
        if let Some(tag) = to_tag(&response.headers) {
            txn.response_to_tag = Some(tag.to_owned());
        }
        let dest = txn.dest;
        let mut terminate = false;
        if !provisional {
            // A final response ends the provisional stage: only the final one is resent.
            txn.provisional = None;
        }
        if provisional {
            txn.provisional = Some(data.clone());
            if !txn.invite {
                txn.state = ServerState::Proceeding;
            }
        } else if txn.invite && success {
            if txn.state != ServerState::Accepted {
                debug!(?key, status, "2xx sent: Accepted");
                txn.state = ServerState::Accepted;
                let at = deadline(now, self.timers.t1x64());
                self.wheel.arm(&mut txn.armed, id, TimerKind::L, at);
            }
        } else if txn.invite {
            debug!(?key, status, "final response sent: Completed");
            txn.state = ServerState::Completed;
            txn.final_response = Some(data.clone());
            if !reliable {
                txn.interval = self.timers.t1;
                self.wheel.arm(
                    &mut txn.armed,
                    id,
                    TimerKind::G,
                    deadline(now, self.timers.t1),
                );
            }
            let at = deadline(now, self.timers.t1x64());
            self.wheel.arm(&mut txn.armed, id, TimerKind::H, at);
        } else {
            debug!(?key, status, "final response sent: Completed");
            txn.state = ServerState::Completed;
            txn.final_response = Some(data.clone());
            if reliable {
                terminate = true;
            } else {
                let at = deadline(now, self.timers.t1x64());
                self.wheel.arm(&mut txn.armed, id, TimerKind::J, at);
            }
        }
        self.transmit(dest, data);
        if terminate {
            self.terminate_server(key);
        }
    }

    /// The TU answers server transaction `key` with a final response and keeps no state for
    /// it: the transaction ends as the response leaves, nothing is retransmitted and nothing
    /// absorbs a retransmitted request, which comes to the TU again as a new one. For answers
    /// that cost nothing to repeat and must not cost memory under a flood: a digest challenge
    /// (RFC 3261 §8.2.6, stateless as a UAS may be for a 401), derived from the request so that
    /// a retransmission gets the same one. A provisional `response` is sent statefully instead.
    pub fn respond_stateless(&mut self, now: Instant, key: ServerKey, response: Response) {
        if response.status < 200 {
            self.respond(now, key, response);
            return;
        }
        let Some(txn) = self.servers.get(&key) else {
            debug!(
                ?key,
                status = response.status,
                "response for an unknown server transaction ignored"
            );
            return;
        };
        if !matches!(txn.state, ServerState::Trying | ServerState::Proceeding) {
            debug!(?key, status = response.status, state = ?txn.state, "response not allowed in this state ignored");
            return;
        }
        let dest = txn.dest;
        debug!(
            ?key,
            status = response.status,
            "final response sent statelessly"
        );
        self.transmit(dest, Bytes::from(response.encode()));
        self.terminate_server(key);
    }

    fn terminate_server(&mut self, key: ServerKey) {
        if let Some(mut txn) = self.servers.remove(&key) {
            debug!(?key, method = %txn.method, "server transaction terminated");
            self.wheel.disarm_all(&mut txn.armed);
            if self.server_index.get(&txn.match_key) == Some(&key) {
                self.server_index.remove(&txn.match_key);
            }
        }
    }

    /// The peer a server transaction's request came from.
    pub fn server_peer(&self, key: ServerKey) -> Option<Peer> {
        self.servers.get(&key).map(|t| t.peer)
    }

    /// The method of a server transaction's request.
    pub fn server_method(&self, key: ServerKey) -> Option<&Method> {
        self.servers.get(&key).map(|t| &t.method)
    }

    // ----------------------------------------------------------------------------- client side

    /// The TU starts a client transaction for `request`, sent to `peer`. The request should carry
    /// a top Via with a branch from [`TransactionLayer::new_branch`] (one is added when the Via
    /// has none). Without any Via the request is not sent and [`Event::Timeout`] is reported.
    /// An ACK is sent once without a transaction. A CANCEL whose INVITE has had no provisional
    /// response yet is held back until one arrives (§9.1).
    pub fn send_request(&mut self, now: Instant, mut request: Request, peer: Peer) -> ClientKey {
        let key = ClientKey(self.next_key());
        if request.method == Method::Ack {
            self.transmit(peer, Bytes::from(request.encode()));
            return key;
        }
        let existing = match request.headers.via() {
            None => {
                debug!(?key, method = %request.method, "request without Via not sent");
                self.events.push_back(Event::Timeout { key });
                return key;
            }
            Some(via) => via.branch().map(str::to_owned),
        };
        let branch = match existing {
            Some(b) => b,
            None => {
                let fresh = self.new_branch();
                if let Some(via) = request.headers.via_mut() {
                    via.params.set("branch", Some(&fresh));
                }
                fresh
            }
        };
        let bytes = Bytes::from(request.encode());
        let method = request.method.clone();
        let kept = (method == Method::Invite).then_some(request);
        self.start_client(now, key, branch, &method, bytes, kept, peer)
    }

    /// [`send_request`](Self::send_request) for a request the TU keeps as well (a fork's
    /// INVITE, a forwarded BYE): nothing of it is cloned but what the layer keeps, which for an
    /// INVITE is what the ACK of a non-2xx response is built from ([`build_ack`]: its
    /// Request-URI, top Via, Route, From, To, Call-ID and CSeq), not its Contact, other
    /// headers and body (issue 22: each fork's INVITE and each forwarded BYE was cloned whole).
    /// An ACK, or a request whose top Via lacks a branch, goes through `send_request`.
    pub fn send_request_ref(&mut self, now: Instant, request: &Request, peer: Peer) -> ClientKey {
        let branch = request
            .headers
            .via()
            .and_then(|v| v.branch())
            .map(str::to_owned);
        let branch = match branch {
            Some(b) if request.method != Method::Ack => b,
            _ => return self.send_request(now, request.clone(), peer),
        };
        let key = ClientKey(self.next_key());
        let bytes = Bytes::from(request.encode());
        let kept = (request.method == Method::Invite).then(|| util::ack_basis(request));
        self.start_client(now, key, branch, &request.method, bytes, kept, peer)
    }

    /// Starts the client transaction `key` for a request with top Via `branch`, encoded as
    /// `bytes`; `kept` is the INVITE (or what [`build_ack`] needs of it) for the ACK of a
    /// non-2xx response.
    #[allow(clippy::too_many_arguments)]
    fn start_client(
        &mut self,
        now: Instant,
        key: ClientKey,
        branch: String,
        method: &Method,
        bytes: Bytes,
        kept: Option<Request>,
        peer: Peer,
    ) -> ClientKey {
        let invite = *method == Method::Invite;
        let index = (branch, method.as_str().to_owned());
        if let Some(old) = self.client_index.get(&index) {
            debug!(?key, ?old, branch = %index.0, "branch reused by the TU; responses go to the new transaction");
        }
        let mut state = if invite {
            ClientState::Calling
        } else {
            ClientState::Trying
        };
        if *method == Method::Cancel {
            let inv = (index.0.clone(), Method::Invite.as_str().to_owned());
            let inv_key = self.client_index.get(&inv).copied();
            if let Some((ikey, inv_txn)) =
                inv_key.and_then(|k| Some((k, self.clients.get_mut(&k)?)))
            {
                if inv_txn.state == ClientState::Calling && inv_txn.held_cancel.is_none() {
                    debug!(?key, "CANCEL held until a provisional response arrives");
                    inv_txn.held_cancel = Some(key);
                    state = ClientState::Held;
                } else if inv_txn.state == ClientState::Proceeding && !inv_txn.cancelled {
                    inv_txn.cancelled = true;
                    let at = deadline(now, self.timers.t1x64());
                    self.wheel
                        .arm(&mut inv_txn.armed, TxnId::Client(ikey), TimerKind::C, at);
                }
            }
        }
        let mut txn = ClientTxn {
            invite,
            state,
            peer,
            bytes: bytes.clone(),
            request: kept,
            index: index.clone(),
            interval: self.timers.t1,
            ack: None,
            held_cancel: None,
            cancelled: false,
            armed: Armed::new(),
        };
        let id = TxnId::Client(key);
        let timeout = deadline(now, self.timers.t1x64());
        let retransmit = deadline(now, self.timers.t1);
        let reliable = peer.proto.is_reliable();
        if invite {
            self.wheel.arm(&mut txn.armed, id, TimerKind::B, timeout);
            if !reliable {
                self.wheel.arm(&mut txn.armed, id, TimerKind::A, retransmit);
            }
        } else {
            self.wheel.arm(&mut txn.armed, id, TimerKind::F, timeout);
            if !reliable && state != ClientState::Held {
                self.wheel.arm(&mut txn.armed, id, TimerKind::E, retransmit);
            }
        }
        if state != ClientState::Held {
            self.transmit(peer, bytes);
        }
        debug!(?key, method = %index.1, %peer, "client transaction created");
        self.clients.insert(key, Box::new(txn));
        self.client_index.insert(index, key);
        key
    }

    /// A response from the network, matched to a client transaction by top Via branch and CSeq
    /// method (§17.1.3).
    pub fn handle_response(&mut self, now: Instant, response: Response, peer: Peer) {
        let index = response
            .headers
            .via()
            .and_then(|v| v.branch())
            .zip(response.headers.cseq())
            .map(|(b, c)| (b.to_owned(), c.method.as_str().to_owned()));
        let Some(key) = index.and_then(|i| self.client_index.get(&i).copied()) else {
            debug!(%peer, status = response.status, "response matches no client transaction");
            self.events
                .push_back(Event::StrayResponse { response, peer });
            return;
        };
        let Some(txn) = self.clients.get_mut(&key) else {
            return;
        };
        let status = response.status;
        let id = TxnId::Client(key);
        let reliable = txn.peer.proto.is_reliable();
        let provisional = (100..200).contains(&status);
        let success = (200..300).contains(&status);
        let failure = (300..700).contains(&status);
        if txn.invite {
            match txn.state {
                ClientState::Calling | ClientState::Proceeding if provisional => {
                    txn.state = ClientState::Proceeding;
                    self.wheel.disarm(&mut txn.armed, TimerKind::A);
                    self.wheel.disarm(&mut txn.armed, TimerKind::B);
                    if !txn.cancelled {
                        self.wheel
                            .arm(&mut txn.armed, id, TimerKind::C, deadline(now, TIMER_C));
                    }
                    self.events.push_back(Event::Response { key, response });
                    self.release_cancel(now, key);
                }
                ClientState::Calling | ClientState::Proceeding if success => {
                    debug!(?key, status, "2xx received: Accepted");
                    txn.state = ClientState::Accepted;
                    // Only absorbing 2xx retransmissions is left: the request is not resent.
                    txn.bytes = Bytes::new();
                    txn.request = None;
                    self.wheel.disarm(&mut txn.armed, TimerKind::A);
                    self.wheel.disarm(&mut txn.armed, TimerKind::B);
                    self.wheel.disarm(&mut txn.armed, TimerKind::C);
                    let at = deadline(now, self.timers.t1x64());
                    self.wheel.arm(&mut txn.armed, id, TimerKind::M, at);
                    self.events.push_back(Event::Response { key, response });
                    self.drop_held_cancel(key);
                }
                ClientState::Calling | ClientState::Proceeding if failure => {
                    debug!(?key, status, "final response received: Completed, ACK sent");
                    txn.state = ClientState::Completed;
                    self.wheel.disarm(&mut txn.armed, TimerKind::A);
                    self.wheel.disarm(&mut txn.armed, TimerKind::B);
                    self.wheel.disarm(&mut txn.armed, TimerKind::C);
                    // What Timer D needs is the ACK: the INVITE is neither resent nor kept.
                    txn.bytes = Bytes::new();
                    let ack = match txn.request.take() {
                        Some(invite) => Bytes::from(build_ack(&invite, &response).encode()),
                        None => Bytes::new(),
                    };
                    txn.ack = Some(ack.clone());
                    let dest = txn.peer;
                    if reliable {
                        self.transmit(dest, ack);
                        self.events.push_back(Event::Response { key, response });
                        self.terminate_client(key);
                    } else {
                        self.wheel
                            .arm(&mut txn.armed, id, TimerKind::D, deadline(now, TIMER_D));
                        self.transmit(dest, ack);
                        self.events.push_back(Event::Response { key, response });
                    }
                    self.drop_held_cancel(key);
                }
                ClientState::Completed if failure => {
                    if let Some(ack) = txn.ack.clone() {
                        let dest = txn.peer;
                        self.transmit(dest, ack);
                    }
                }
                ClientState::Accepted if success => {
                    self.events.push_back(Event::Response { key, response })
                }
                state => debug!(?key, status, ?state, "response absorbed"),
            }
        } else {
            match txn.state {
                ClientState::Trying | ClientState::Proceeding if provisional => {
                    txn.state = ClientState::Proceeding;
                    self.events.push_back(Event::Response { key, response });
                }
                ClientState::Trying | ClientState::Proceeding if success || failure => {
                    debug!(?key, status, "final response received: Completed");
                    txn.state = ClientState::Completed;
                    // Timer K only absorbs response retransmissions.
                    txn.bytes = Bytes::new();
                    self.wheel.disarm(&mut txn.armed, TimerKind::E);
                    self.wheel.disarm(&mut txn.armed, TimerKind::F);
                    self.events.push_back(Event::Response { key, response });
                    if reliable {
                        self.terminate_client(key);
                    } else {
                        let at = deadline(now, self.timers.t4);
                        self.wheel.arm(&mut txn.armed, id, TimerKind::K, at);
                    }
                }
                state => debug!(?key, status, ?state, "response absorbed"),
            }
        }
    }

    /// Sends the CANCEL held for INVITE `invite`, now that a provisional response arrived.
    fn release_cancel(&mut self, now: Instant, invite: ClientKey) {
        let Some(ckey) = self
            .clients
            .get_mut(&invite)
            .and_then(|t| t.held_cancel.take())
        else {
            return;
        };
        let Some(txn) = self.clients.get_mut(&ckey) else {
            return;
        };
        if txn.state != ClientState::Held {
            return;
        }
        debug!(key = ?ckey, "held CANCEL sent");
        txn.state = ClientState::Trying;
        if !txn.peer.proto.is_reliable() {
            txn.interval = self.timers.t1;
            let at = deadline(now, self.timers.t1);
            self.wheel
                .arm(&mut txn.armed, TxnId::Client(ckey), TimerKind::E, at);
        }
        let (peer, data) = (txn.peer, txn.bytes.clone());
        self.transmit(peer, data);
        if let Some(inv) = self.clients.get_mut(&invite) {
            inv.cancelled = true;
            let at = deadline(now, self.timers.t1x64());
            self.wheel
                .arm(&mut inv.armed, TxnId::Client(invite), TimerKind::C, at);
        }
    }

    /// Drops the CANCEL held for INVITE `invite` (it got a final response or ended first).
    fn drop_held_cancel(&mut self, invite: ClientKey) {
        let Some(ckey) = self
            .clients
            .get_mut(&invite)
            .and_then(|t| t.held_cancel.take())
        else {
            return;
        };
        if self
            .clients
            .get(&ckey)
            .is_some_and(|t| t.state == ClientState::Held)
        {
            debug!(key = ?ckey, "held CANCEL dropped");
            self.events.push_back(Event::Timeout { key: ckey });
            self.terminate_client(ckey);
        }
    }

    fn terminate_client(&mut self, key: ClientKey) {
        self.drop_held_cancel(key);
        if let Some(mut txn) = self.clients.remove(&key) {
            debug!(?key, method = %txn.index.1, "client transaction terminated");
            self.wheel.disarm_all(&mut txn.armed);
            if self.client_index.get(&txn.index) == Some(&key) {
                self.client_index.remove(&txn.index);
            }
        }
    }

    /// A transport error towards `peer` (e.g. a TCP connection that cannot be made): every client
    /// transaction sending to it ends; those still waiting for a final response report
    /// [`Event::Timeout`] (RFC 3261 §17.1.4 says to treat it as 503).
    pub fn transport_error(&mut self, _now: Instant, peer: Peer) {
        let mut hit: Vec<(ClientKey, bool)> = self
            .clients
            .iter()
            .filter(|(_, t)| t.peer.proto == peer.proto && t.peer.remote == peer.remote)
            .map(|(k, t)| {
                let pending = matches!(
                    t.state,
                    ClientState::Held
                        | ClientState::Calling
                        | ClientState::Trying
                        | ClientState::Proceeding
                );
                (*k, pending)
            })
            .collect();
        hit.sort_by_key(|(k, _)| k.0);
        for (key, pending) in hit {
            if !self.clients.contains_key(&key) {
                continue; // a held CANCEL already dropped with its INVITE
            }
            debug!(?key, %peer, "transport error: client transaction ends");
            if pending {
                self.events.push_back(Event::Timeout { key });
            }
            self.terminate_client(key);
        }
    }

    // ----------------------------------------------------------------------------- common

    /// Sends a message outside any transaction (ACK for 2xx, 2xx retransmissions by the TU,
    /// stateless responses).
    pub fn send_stateless(&mut self, peer: Peer, message: &Message) {
        self.transmit(peer, Bytes::from(message.encode()));
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (id, txn, kind) in self.wheel.take_due(now) {
            match txn {
                TxnId::Server(key) => {
                    let Some(t) = self.servers.get_mut(&key) else {
                        continue;
                    };
                    if take_armed(&mut t.armed, id) {
                        self.server_timer(now, key, kind);
                    }
                }
                TxnId::Client(key) => {
                    let Some(t) = self.clients.get_mut(&key) else {
                        continue;
                    };
                    if take_armed(&mut t.armed, id) {
                        self.client_timer(now, key, kind);
                    }
                }
            }
        }
    }

    fn server_timer(&mut self, now: Instant, key: ServerKey, kind: TimerKind) {
        let Some(txn) = self.servers.get_mut(&key) else {
            return;
        };
        debug!(?key, ?kind, state = ?txn.state, "server timer fired");
        match kind {
            TimerKind::G if txn.state == ServerState::Completed => {
                txn.interval = txn.interval.saturating_mul(2).min(self.timers.t2);
                let at = deadline(now, txn.interval);
                self.wheel
                    .arm(&mut txn.armed, TxnId::Server(key), TimerKind::G, at);
                if let Some(data) = txn.final_response.clone() {
                    let dest = txn.dest;
                    self.transmit(dest, data);
                }
            }
            TimerKind::H => {
                self.events.push_back(Event::AckTimeout { key });
                self.terminate_server(key);
            }
            TimerKind::I | TimerKind::J | TimerKind::L => self.terminate_server(key),
            _ => {}
        }
    }

    fn client_timer(&mut self, now: Instant, key: ClientKey, kind: TimerKind) {
        let Some(txn) = self.clients.get_mut(&key) else {
            return;
        };
        debug!(?key, ?kind, state = ?txn.state, "client timer fired");
        match kind {
            TimerKind::A if txn.state == ClientState::Calling => {
                txn.interval = txn.interval.saturating_mul(2);
                let at = deadline(now, txn.interval);
                self.wheel
                    .arm(&mut txn.armed, TxnId::Client(key), TimerKind::A, at);
                let (peer, data) = (txn.peer, txn.bytes.clone());
                self.transmit(peer, data);
            }
            TimerKind::E if matches!(txn.state, ClientState::Trying | ClientState::Proceeding) => {
                txn.interval = if txn.state == ClientState::Proceeding {
                    self.timers.t2
                } else {
                    txn.interval.saturating_mul(2).min(self.timers.t2)
                };
                let at = deadline(now, txn.interval);
                self.wheel
                    .arm(&mut txn.armed, TxnId::Client(key), TimerKind::E, at);
                let (peer, data) = (txn.peer, txn.bytes.clone());
                self.transmit(peer, data);
            }
            TimerKind::B | TimerKind::F | TimerKind::C => {
                self.events.push_back(Event::Timeout { key });
                self.terminate_client(key);
            }
            TimerKind::D | TimerKind::K | TimerKind::M => self.terminate_client(key),
            _ => {}
        }
    }

    /// The earliest pending timer, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wheel.next()
    }

    /// The next datagram to send. The 100 Trying of INVITEs that arrived since the last call
    /// goes out here, after the TU has handled them (RFC 3261 §17.2.1: a UAS that answers
    /// within 200 ms need not send it), unless the TU answered meanwhile.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if !self.trying_due.is_empty() {
            self.send_due_trying();
        }
        self.transmits.pop_front()
    }

    fn send_due_trying(&mut self) {
        let mut due = std::mem::take(&mut self.trying_due);
        for key in due.drain(..) {
            let Some(txn) = self.servers.get(&key) else {
                continue;
            };
            // Still proceeding with the 100 as its only response: nothing was sent yet.
            let trying = match &txn.provisional {
                Some(p) if txn.state == ServerState::Proceeding => {
                    p.starts_with(b"SIP/2.0 100 ").then(|| p.clone())
                }
                _ => None,
            };
            if let Some(data) = trying {
                let dest = txn.dest;
                self.transmit(dest, data);
            }
        }
        self.trying_due = due;
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Live transactions (server, client).
    pub fn counts(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// Armed timers (for leak checks in tests).
    #[cfg(test)]
    fn armed_timers(&self) -> usize {
        self.wheel.len()
    }
}

/// Appends `n` in lowercase hexadecimal, zero-padded to at least `width` digits (as
/// `{:0width$x}`).
pub(crate) fn push_hex(out: &mut String, n: u64, width: usize) {
    let digits = if n == 0 {
        1
    } else {
        (64 - n.leading_zeros() as usize).div_ceil(4)
    };
    for _ in digits..width {
        out.push('0');
    }
    for i in (0..digits).rev() {
        let nibble = ((n >> (i * 4)) & 0xf) as u32;
        out.push(char::from_digit(nibble, 16).unwrap_or('0'));
    }
}
