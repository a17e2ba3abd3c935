//! The DUNDi transaction engine, sans-IO: transactions (strans/dtrans, iseqno/oseqno, ACKs,
//! retransmission and give-up as in Asterisk's `pbx_dundi.c`), answering DPDISCOVER /
//! EIDQUERY / PRECACHERQ / NULL from the mappings, our own lookups and qualify pings, per-peer
//! encryption, and the answer cache. Time and datagrams go in; datagrams, events and the next
//! deadline come out.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::crypto::{self, CryptoError, KeyIntro, PrivateKey, PublicKey, RxKeys, TxKey};
use super::eid::Eid;
use super::numbers::LocalNumbers;
use super::settings::{has_permission, EntityInfo, Mapping, Model, PeerSettings, Settings};
use super::wire::{answer_flags, cause, hint_flags, proto, Command, Header, Ie, Packet};

/// Asterisk `DUNDI_DEFAULT_RETRANS_TIMER`.
pub const RETRANS_TIMER: Duration = Duration::from_millis(1000);
/// Asterisk `DUNDI_DEFAULT_RETRANS`: one send and four retransmissions, then give up.
pub const RETRANS: u8 = 5;
/// Asterisk `DUNDI_DEF_EMPTY_CACHE_TIME`: the longest an empty result is kept.
pub const EMPTY_CACHE_TIME: Duration = Duration::from_secs(60);
/// How long a transaction may sit with nothing to send and nothing received.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Asterisk `DEFAULT_MAXMS`: a qualified peer slower than this is unreachable; also how long a
/// transaction to it may go unacknowledged (autokill).
pub const DEFAULT_MAXMS: Duration = Duration::from_millis(2000);
/// The most answers taken from one peer's reply or precache push (Asterisk keeps at most
/// `MAX_RESULTS` = 64 per lookup; one office has no reason to offer more than a few).
pub const MAX_PEER_ANSWERS: usize = 16;
/// The longest a peer's answer is believed, whatever EXPIRATION it names.
pub const MAX_ANSWER_TTL: Duration = Duration::from_secs(3600);

/// Errors building an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("DUNDi: no EID configured and no network interface with a MAC address")]
    NoEid,
    #[error("DUNDi peer {peer}: {source}")]
    PeerKey { peer: Eid, source: CryptoError },
    #[error("DUNDi private key: {0}")]
    OurKey(CryptoError),
    #[error("DUNDi peer {0} has an inkey but no private key (outkey) is configured")]
    NoPrivateKey(Eid),
}

/// A peer's public key (`inkey`) and our private key for it (`outkey`).
pub type PeerKeys = (Option<Arc<PublicKey>>, Option<Arc<PrivateKey>>);

/// Key material of a node, loaded from the files the settings name.
#[derive(Clone, Default)]
pub struct Keys {
    /// Our default private key.
    pub private: Option<Arc<PrivateKey>>,
    /// Per peer: their public key and our private key for them.
    pub peers: HashMap<Eid, PeerKeys>,
}

impl Keys {
    /// Reads every key file the settings name.
    pub fn load(settings: &Settings) -> Result<Keys, EngineError> {
        let private = match &settings.private_key {
            Some(p) => Some(Arc::new(
                crypto::load_private_key(p).map_err(EngineError::OurKey)?,
            )),
            None => None,
        };
        let mut peers = HashMap::new();
        for p in &settings.peers {
            let err = |source| EngineError::PeerKey {
                peer: p.eid,
                source,
            };
            let inkey = match &p.inkey {
                Some(path) => Some(Arc::new(crypto::load_public_key(path).map_err(err)?)),
                None => None,
            };
            let outkey = match &p.outkey {
                Some(path) => Some(Arc::new(crypto::load_private_key(path).map_err(err)?)),
                None => private.clone(),
            };
            if inkey.is_some() && outkey.is_none() {
                return Err(EngineError::NoPrivateKey(p.eid));
            }
            peers.insert(p.eid, (inkey, outkey));
        }
        Ok(Keys { private, peers })
    }
}

/// One answer to a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The entity that answered for the number.
    pub eid: Eid,
    /// `proto::*`.
    pub protocol: u8,
    pub flags: u16,
    pub weight: u16,
    /// e.g. `15551234@127.0.0.1:5090`.
    pub destination: String,
    /// Seconds the answer may be kept.
    pub expiration: u16,
    /// The peer we heard it from.
    pub via: Eid,
}

impl Answer {
    /// The technology name Asterisk prints (`SIP`, `PJSIP`, `IAX2`, `H323`).
    pub fn tech(&self) -> &'static str {
        proto::name(self.protocol)
    }

    /// A `sip:` URI for SIP/PJSIP answers with a destination.
    pub fn sip_uri(&self) -> Option<String> {
        if !matches!(self.protocol, proto::SIP | proto::PJSIP) || self.destination.is_empty() {
            return None;
        }
        if self.destination.starts_with("sip:") || self.destination.starts_with("sips:") {
            return Some(self.destination.clone());
        }
        Some(format!("sip:{}", self.destination))
    }

    /// The number exists there (not only a prefix of numbers that do).
    pub fn exists(&self) -> bool {
        self.flags & answer_flags::EXISTS != 0
    }
}

/// Identifies one of our lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// The outcome of a lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupResult {
    pub number: String,
    pub context: String,
    pub answers: Vec<Answer>,
    /// Hint flags gathered (`hint_flags::*`) and the longest DONT_ASK prefix.
    pub hint_flags: u16,
    pub dont_ask_prefix: String,
    /// Causes peers gave instead of answers: (peer, code, text).
    pub causes: Vec<(Eid, u8, String)>,
    /// Answered from our cache without asking.
    pub from_cache: bool,
    /// Peers asked.
    pub asked: usize,
}

/// Something the engine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A lookup finished (every peer answered, gave up, or the deadline passed).
    LookupDone { id: LookupId, result: LookupResult },
    /// A qualify ping finished: `latency` is `None` when the peer did not answer.
    Qualified {
        peer: Eid,
        latency: Option<Duration>,
    },
    /// An EIDQUERY we sent was answered (`None`: no answer).
    EntityInfo {
        id: LookupId,
        eid: Eid,
        info: Option<EntityInfo>,
    },
    /// A precache push ([`Engine::precache`]) finished: every PRECACHERQ was answered or given
    /// up.
    PrecacheDone {
        id: LookupId,
        report: PrecacheReport,
    },
    /// We answered a peer's lookup.
    Answered {
        peer: Eid,
        number: String,
        context: String,
        answers: usize,
    },
}

/// The outcome of a precache push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrecacheReport {
    /// `(context, number)` pairs we had answers for and pushed to at least one peer.
    pub pushed: Vec<(String, String)>,
    /// PRECACHERQs sent (one per number and peer).
    pub sent: usize,
    /// PRECACHERPs without a cause: (peer, number).
    pub acknowledged: Vec<(Eid, String)>,
    /// Peers that refused with a cause: (peer, number, code, text).
    pub refused: Vec<(Eid, String, u8, String)>,
    /// PRECACHERQs never answered.
    pub timed_out: usize,
}

impl PrecacheReport {
    /// How many distinct peers acknowledged at least one number.
    pub fn peers_acknowledged(&self) -> usize {
        let mut v: Vec<Eid> = self.acknowledged.iter().map(|(e, _)| *e).collect();
        v.sort();
        v.dedup();
        v.len()
    }
}

/// Reachability of a peer, from qualify pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reachability {
    #[default]
    Unknown,
    Reachable(Duration),
    /// Answered, but slower than the limit.
    Lagged(Duration),
    Unreachable,
}

/// A peer as the engine sees it.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub eid: Eid,
    pub address: SocketAddr,
    pub model: Model,
    pub encrypted: bool,
    pub reachability: Reachability,
}

/// One cached lookup result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub number: String,
    pub context: String,
    pub answers: Vec<Answer>,
    pub hint_flags: u16,
    pub dont_ask_prefix: String,
    pub expires: Instant,
}

struct Peer {
    settings: PeerSettings,
    inkey: Option<Arc<PublicKey>>,
    outkey: Option<Arc<PrivateKey>>,
    tx: Option<TxKey>,
    reach: Reachability,
    next_qualify: Option<Instant>,
    qualify_trans: Option<u16>,
}

impl Peer {
    fn encrypted(&self) -> bool {
        self.inkey.is_some() && self.outkey.is_some()
    }
}

#[derive(Debug, Clone)]
enum Purpose {
    Incoming,
    Lookup(LookupId),
    Qualify {
        peer: Eid,
        sent: Instant,
    },
    EidQuery(LookupId),
    Precache {
        id: LookupId,
        peer: Eid,
        number: String,
    },
}

struct Outstanding {
    bytes: Vec<u8>,
    oseqno: u8,
    retries_left: u8,
    next: Instant,
}

struct Trans {
    strans: u16,
    dtrans: u16,
    addr: SocketAddr,
    them: Option<Eid>,
    iseqno: u8,
    oiseqno: u8,
    oseqno: u8,
    aseqno: u8,
    final_sent: bool,
    encrypt: bool,
    send_full_key: bool,
    key: Option<[u8; 16]>,
    packets: Vec<Outstanding>,
    last_inner: Option<Packet>,
    purpose: Purpose,
    autokill: Option<Instant>,
    retrans_timer: Duration,
    /// Forgotten when nothing happens on it until then (Asterisk would keep it forever).
    idle: Instant,
}

struct LookupState {
    result: LookupResult,
    trans: Vec<u16>,
    deadline: Instant,
    expiration: u16,
    eid_query: Option<Eid>,
    entity: Option<EntityInfo>,
    /// Set when this lookup is a peer's request we passed on.
    forwarded: Option<Forwarded>,
    /// Some peer answered without a DONT_ASK hint.
    not_dont_ask: bool,
    /// Peers that answered (with answers or without).
    responded: usize,
}

/// The DUNDi engine.
pub struct Engine {
    eid: Eid,
    entity: EntityInfo,
    mappings: Vec<Mapping>,
    local: Arc<dyn LocalNumbers>,
    peers: Vec<Peer>,
    cache_ttl: Duration,
    key_ttl: Duration,
    ttl: u16,
    ipaddr: String,
    trans: HashMap<u16, Trans>,
    rx_keys: RxKeys,
    lookups: HashMap<LookupId, LookupState>,
    next_lookup: u64,
    cache: HashMap<(String, String), CacheEntry>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    rng: u64,
    /// Answers to forwarded requests, ready to go out: (transaction, answer).
    forward_done: Vec<(u16, LocalAnswer)>,
    stats: Stats,
    /// Precache pushes under way.
    precaches: HashMap<LookupId, PrecacheState>,
    /// Asterisk's precache queue: `(context, number)` to push again at that time.
    precache_due: HashMap<(String, String), Instant>,
}

struct PrecacheState {
    report: PrecacheReport,
    trans: Vec<u16>,
}

/// Counters since the engine started (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the engine / that did not decode.
    pub datagrams_in: u64,
    pub undecodable: u64,
    /// Datagrams the engine produced, and how many of those were retransmissions.
    pub datagrams_out: u64,
    pub retransmissions: u64,
    /// Peers' lookups answered (with or without answers) / refused with a cause.
    pub queries_answered: u64,
    pub queries_refused: u64,
    /// Our lookups finished, and those that got at least one answer; from the cache.
    pub lookups: u64,
    pub lookups_answered: u64,
    pub cache_hits: u64,
    /// Transactions given up after the last retransmission.
    pub timeouts: u64,
    /// Encrypted packets we could not open (unknown key, bad signature, bad data).
    pub decrypt_failures: u64,
    /// PRECACHERQs refused (unknown peer, peer not configured to precache to us, plain
    /// from another address or port than the configured one, context not included).
    pub precache_refused: u64,
    /// Answers dropped because a reply or push carried more than [`MAX_PEER_ANSWERS`].
    pub answers_dropped: u64,
}

/// Our answer to a DPDISCOVER, before it goes on the wire (it may wait for forwarded answers).
#[derive(Debug, Clone)]
struct LocalAnswer {
    answers: Vec<super::wire::AnswerIe>,
    hint_flags: u16,
    prefix: String,
    expiration: u16,
}

impl LocalAnswer {
    /// ANSWERs, HINT, EXPIRATION — Asterisk's order.
    fn to_ies(&self) -> Vec<Ie> {
        let mut ies: Vec<Ie> = self.answers.iter().cloned().map(Ie::Answer).collect();
        let prefix = if self.hint_flags & hint_flags::DONT_ASK != 0 {
            self.prefix.clone()
        } else {
            String::new()
        };
        ies.push(Ie::Hint {
            flags: self.hint_flags,
            data: prefix,
        });
        ies.push(Ie::Expiration(self.expiration));
        ies
    }
}

/// A peer's lookup we passed on to our other peers; answered when our lookup ends.
#[derive(Debug, Clone)]
struct Forwarded {
    trans: u16,
    local: LocalAnswer,
    peer: Eid,
}

/// Response to an incoming query, sent after the ACK (Asterisk answers from a thread, so its
/// ACK always goes out first).
struct Deferred {
    cmd: Command,
    ies: Vec<Ie>,
}

impl Engine {
    /// An engine for `settings`, with `keys` loaded from its files (see [`Keys::load`]) and
    /// `local` saying which numbers are ours. `now` starts the qualify schedule.
    pub fn new(
        settings: &Settings,
        keys: Keys,
        local: Arc<dyn LocalNumbers>,
        now: Instant,
    ) -> Result<Engine, EngineError> {
        let eid = settings
            .eid
            .or_else(Eid::from_machine)
            .ok_or(EngineError::NoEid)?;
        let mut peers = Vec::new();
        for (i, p) in settings.peers.iter().enumerate() {
            let (inkey, outkey) = keys
                .peers
                .get(&p.eid)
                .cloned()
                .unwrap_or((None, keys.private.clone()));
            if inkey.is_some() && outkey.is_none() {
                return Err(EngineError::NoPrivateKey(p.eid));
            }
            peers.push(Peer {
                settings: p.clone(),
                inkey,
                outkey,
                tx: None,
                reach: Reachability::Unknown,
                // Spread the first pings a little, as Asterisk does on load.
                next_qualify: p
                    .qualify
                    .map(|_| now + Duration::from_millis(100 * i as u64)),
                qualify_trans: None,
            });
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut b = [0u8; 8];
        rand::fill(&mut b);
        seed ^= u64::from_le_bytes(b);
        Ok(Engine {
            eid,
            entity: settings.entity.clone(),
            mappings: settings.mappings.clone(),
            local,
            peers,
            cache_ttl: settings.cache_ttl,
            key_ttl: settings.key_ttl,
            ttl: settings.ttl,
            ipaddr: settings.ipaddr.clone(),
            trans: HashMap::new(),
            rx_keys: RxKeys::default(),
            lookups: HashMap::new(),
            next_lookup: 1,
            cache: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            rng: seed | 1,
            forward_done: Vec::new(),
            stats: Stats::default(),
            precaches: HashMap::new(),
            precache_due: HashMap::new(),
        })
        .map(|mut e| {
            e.queue_precache_full(now);
            e
        })
    }

    /// Applies new settings (re-provisioning) without dropping transactions, lookups or the
    /// cache. Peers that kept their address and keys keep their session keys and reachability;
    /// the others start afresh. Our EID cannot change this way (a restart does that).
    pub fn reload(
        &mut self,
        settings: &Settings,
        keys: Keys,
        now: Instant,
    ) -> Result<(), EngineError> {
        if settings.eid.is_some_and(|e| e != self.eid) {
            tracing::warn!(eid = %self.eid, "DUNDi: a new EID takes effect after a restart");
        }
        let mut old: Vec<Peer> = std::mem::take(&mut self.peers);
        let mut peers = Vec::new();
        for (i, p) in settings.peers.iter().enumerate() {
            let (inkey, outkey) = keys
                .peers
                .get(&p.eid)
                .cloned()
                .unwrap_or((None, keys.private.clone()));
            if inkey.is_some() && outkey.is_none() {
                self.peers = old;
                return Err(EngineError::NoPrivateKey(p.eid));
            }
            let same = old.iter().position(|o| {
                o.settings.eid == p.eid
                    && o.settings.address == p.address
                    && o.inkey.as_deref() == inkey.as_deref()
                    && o.outkey.as_deref() == outkey.as_deref()
            });
            let peer = match same {
                Some(j) => {
                    let mut o = old.swap_remove(j);
                    o.next_qualify = match (p.qualify, o.next_qualify) {
                        (None, _) => None,
                        (Some(_), Some(t)) => Some(t),
                        (Some(_), None) => Some(now + Duration::from_millis(100 * i as u64)),
                    };
                    o.settings = p.clone();
                    o
                }
                None => {
                    self.rx_keys.forget(&p.eid);
                    Peer {
                        settings: p.clone(),
                        inkey,
                        outkey,
                        tx: None,
                        reach: Reachability::Unknown,
                        next_qualify: p
                            .qualify
                            .map(|_| now + Duration::from_millis(100 * i as u64)),
                        qualify_trans: None,
                    }
                }
            };
            peers.push(peer);
        }
        for gone in old {
            self.rx_keys.forget(&gone.settings.eid);
        }
        self.peers = peers;
        self.entity = settings.entity.clone();
        self.mappings = settings.mappings.clone();
        self.cache_ttl = settings.cache_ttl;
        self.key_ttl = settings.key_ttl;
        self.ttl = settings.ttl;
        self.ipaddr = settings.ipaddr.clone();
        self.queue_precache_full(now);
        Ok(())
    }

    /// Our EID.
    pub fn eid(&self) -> Eid {
        self.eid
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let d = self.out.pop_front()?;
        self.stats.datagrams_out += 1;
        Some(d)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Engine::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut take = |x: Instant| t = Some(t.map_or(x, |y| y.min(x)));
        for tr in self.trans.values() {
            for p in &tr.packets {
                take(p.next);
            }
            if let Some(a) = tr.autokill {
                take(a);
            }
            if tr.packets.is_empty() {
                take(tr.idle);
            }
        }
        for l in self.lookups.values() {
            take(l.deadline);
        }
        for p in &self.peers {
            if let Some(q) = p.next_qualify {
                take(q);
            }
        }
        if let Some(e) = self.cache.values().map(|e| e.expires).min() {
            take(e);
        }
        if let Some(e) = self.precache_due.values().min() {
            take(*e);
        }
        t
    }

    /// Peers and what we know of them.
    pub fn peers(&self) -> Vec<PeerView> {
        self.peers
            .iter()
            .map(|p| PeerView {
                eid: p.settings.eid,
                address: p.settings.address,
                model: p.settings.model,
                encrypted: p.encrypted(),
                reachability: p.reach,
            })
            .collect()
    }

    /// The answer cache.
    pub fn cache(&self) -> Vec<CacheEntry> {
        let mut v: Vec<_> = self.cache.values().cloned().collect();
        v.sort_by(|a, b| (&a.context, &a.number).cmp(&(&b.context, &b.number)));
        v
    }

    /// Empties the answer cache.
    pub fn flush_cache(&mut self) {
        self.cache.clear();
    }

    /// Number of open transactions (for tests and status).
    pub fn transactions(&self) -> usize {
        self.trans.len()
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: transaction ids and IVs need not be secret, only unpredictable enough.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn new_trans_id(&mut self) -> Option<u16> {
        let start = (self.random() % 32766) as u16 + 1;
        let mut id = start;
        loop {
            if !self.trans.contains_key(&id) {
                return Some(id);
            }
            id = id % 32766 + 1;
            if id == start {
                return None;
            }
        }
    }

    fn peer_index(&self, eid: &Eid) -> Option<usize> {
        self.peers.iter().position(|p| p.settings.eid == *eid)
    }

    fn create_trans(&mut self, addr: SocketAddr, purpose: Purpose, now: Instant) -> Option<u16> {
        let id = self.new_trans_id()?;
        self.trans.insert(
            id,
            Trans {
                strans: id,
                dtrans: 0,
                addr,
                them: None,
                iseqno: 0,
                oiseqno: 0,
                oseqno: 0,
                aseqno: 0,
                final_sent: false,
                encrypt: false,
                send_full_key: false,
                key: None,
                packets: Vec::new(),
                last_inner: None,
                purpose,
                autokill: None,
                retrans_timer: RETRANS_TIMER,
                idle: now + IDLE_LIMIT,
            },
        );
        Some(id)
    }

    /// Binds a transaction to a peer (Asterisk `apply_peer`).
    fn apply_peer(&mut self, id: u16, pi: usize, now: Instant) {
        let peer = &self.peers[pi];
        let encrypt = peer.encrypted();
        let eid = peer.settings.eid;
        let qualified = peer.settings.qualify.is_some();
        let timer = match peer.reach {
            Reachability::Reachable(d) | Reachability::Lagged(d) if qualified => {
                (d * 2).max(Duration::from_millis(150)).min(RETRANS_TIMER)
            }
            _ => RETRANS_TIMER,
        };
        if let Some(t) = self.trans.get_mut(&id) {
            t.them = Some(eid);
            t.encrypt = encrypt;
            t.retrans_timer = timer;
            if qualified && !matches!(t.purpose, Purpose::Incoming) {
                t.autokill = Some(now + DEFAULT_MAXMS);
            }
            if let Some(tx) = &self.peers[pi].tx {
                if !tx.sent_full {
                    t.send_full_key = true;
                }
            } else {
                t.send_full_key = true;
            }
        }
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn push_event(&mut self, e: Event) {
        match &e {
            Event::LookupDone { result, .. } => {
                self.stats.lookups += 1;
                if !result.answers.is_empty() {
                    self.stats.lookups_answered += 1;
                }
                if result.from_cache {
                    self.stats.cache_hits += 1;
                }
            }
            Event::Answered { .. } => self.stats.queries_answered += 1,
            _ => {}
        }
        self.events.push_back(e);
    }

    // ---------------------------------------------------------------- sending

    /// Asterisk `dundi_send`.
    fn send(&mut self, id: u16, cmd: Command, fin: bool, ies: Vec<Ie>, now: Instant) {
        let Some(t) = self.trans.get(&id) else {
            return;
        };
        let header = Header {
            strans: t.strans,
            dtrans: t.dtrans,
            iseqno: t.iseqno,
            oseqno: t.oseqno,
            cmdresp: cmd.code() | if fin { super::wire::FLAG_FINAL } else { 0 },
            cmdflags: 0,
        };
        let packet = Packet { header, ies };
        let encrypt = t.encrypt && cmd.is_encryptable();
        let addr = t.addr;
        let bytes = if encrypt {
            match self.encrypt(id, &packet, now) {
                Some(b) => b,
                None => {
                    tracing::warn!(peer = ?self.trans.get(&id).and_then(|t| t.them), "DUNDi: cannot encrypt, transaction dropped");
                    self.destroy(id, false, now);
                    return;
                }
            }
        } else {
            match packet.encode() {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("DUNDi: cannot encode {}: {e}", cmd.name());
                    return;
                }
            }
        };
        let Some(t) = self.trans.get_mut(&id) else {
            return;
        };
        if fin {
            t.final_sent = true;
        }
        if cmd != Command::Ack {
            t.packets.push(Outstanding {
                bytes: bytes.clone(),
                oseqno: t.oseqno,
                retries_left: RETRANS - 1,
                next: now + t.retrans_timer,
            });
            t.oseqno = t.oseqno.wrapping_add(1);
            if encrypt {
                t.last_inner = Some(packet);
            }
        }
        t.aseqno = t.iseqno;
        self.out.push_back((addr, bytes));
    }

    fn ack(&mut self, id: u16, fin: bool, now: Instant) {
        self.send(id, Command::Ack, fin, Vec::new(), now);
    }

    /// Asterisk `dundi_encrypt`: the first packet of a transaction carries our EID and the key
    /// (in full, or its crc once the peer has had it).
    fn encrypt(&mut self, id: u16, inner: &Packet, now: Instant) -> Option<Vec<u8>> {
        let mut iv = [0u8; 16];
        rand::fill(&mut iv);
        let t = self.trans.get(&id)?;
        let first = inner.header.iseqno == 0 && inner.header.oseqno == 0;
        if !first {
            let key = t.key?;
            return crypto::encrypt_packet(inner, &key, &iv, KeyIntro::None).ok();
        }
        let pi = self.peer_index(&t.them?)?;
        let full_wanted = t.send_full_key;
        let key_ttl = self.key_ttl;
        let peer = &mut self.peers[pi];
        let expired = peer.tx.as_ref().is_none_or(|k| k.expires <= now);
        if expired {
            let (theirs, ours) = (peer.inkey.clone()?, peer.outkey.clone()?);
            match TxKey::generate(&theirs, &ours, now, key_ttl) {
                Ok(k) => peer.tx = Some(k),
                Err(e) => {
                    tracing::warn!(peer = %peer.settings.eid, "DUNDi: cannot make a session key: {e}");
                    return None;
                }
            }
        }
        let tx = peer.tx.as_mut()?;
        let full = full_wanted || !tx.sent_full;
        tx.sent_full = true;
        let aes = tx.aes;
        let intro = if full {
            KeyIntro::Full {
                eid: self.eid,
                shared_key: &tx.shared_key,
                signature: &tx.signature,
            }
        } else {
            KeyIntro::Crc {
                eid: self.eid,
                crc: tx.crc32,
            }
        };
        let bytes = crypto::encrypt_packet(inner, &aes, &iv, intro).ok()?;
        if let Some(t) = self.trans.get_mut(&id) {
            t.key = Some(aes);
            if full {
                t.send_full_key = true;
            }
        }
        Some(bytes)
    }

    /// Asterisk `dundi_reject`: INVALID for a packet that fits no transaction.
    fn reject(&mut self, h: &Header, from: SocketAddr) {
        if h.command() == Command::Invalid {
            return;
        }
        let p = Packet {
            header: Header {
                strans: h.dtrans,
                dtrans: h.strans,
                iseqno: h.oseqno,
                oseqno: h.iseqno,
                cmdresp: Command::Invalid.code(),
                cmdflags: 0,
            },
            ies: Vec::new(),
        };
        if let Ok(b) = p.encode() {
            self.out.push_back((from, b));
        }
    }

    // ---------------------------------------------------------------- receiving

    fn find_trans(&mut self, h: &Header, from: SocketAddr, now: Instant) -> Option<(u16, bool)> {
        let d = h.dtrans & 0x7fff;
        let s = h.strans & 0x7fff;
        let found = self
            .trans
            .values()
            .find(|t| t.addr == from && (t.strans == d || (t.dtrans == s && h.dtrans == 0)))
            .map(|t| t.strans);
        if let Some(id) = found {
            if h.strans != 0 {
                if let Some(t) = self.trans.get_mut(&id) {
                    t.dtrans = s;
                }
            }
            return Some((id, false));
        }
        match h.command() {
            Command::DpDiscover
            | Command::EidQuery
            | Command::PrecacheRq
            | Command::RegReq
            | Command::Null
            | Command::Encrypt
                if h.strans != 0 =>
            {
                let id = self.create_trans(from, Purpose::Incoming, now)?;
                if let Some(t) = self.trans.get_mut(&id) {
                    t.dtrans = s;
                }
                Some((id, true))
            }
            _ => None,
        }
    }

    /// A datagram arrived.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.datagram(now, from, bytes);
        self.flush_forwarded(now);
    }

    fn datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.stats.datagrams_in += 1;
        let packet = match Packet::decode(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.stats.undecodable += 1;
                tracing::debug!(%from, "DUNDi: undecodable datagram: {e}");
                return;
            }
        };
        let h = packet.header;
        let Some((id, created)) = self.find_trans(&h, from, now) else {
            self.reject(&h, from);
            return;
        };
        let (iseqno, oiseqno) = match self.trans.get_mut(&id) {
            Some(t) => {
                t.idle = now + IDLE_LIMIT;
                (t.iseqno, t.oiseqno)
            }
            None => return,
        };
        if created && h.oseqno != iseqno {
            // Not the start of a transaction: nothing to keep.
            self.trans.remove(&id);
            return;
        }
        if h.oseqno == iseqno {
            if self.ack_trans(id, h.iseqno) && self.trans.get(&id).is_some_and(|t| t.final_sent) {
                self.destroy(id, false, now);
                return;
            }
            let mut fin = h.is_final();
            let mut deferred = Vec::new();
            if h.command() != Command::Ack {
                if let Some(t) = self.trans.get_mut(&id) {
                    t.oiseqno = t.iseqno;
                    t.iseqno = t.iseqno.wrapping_add(1);
                }
                fin |= self.handle_command(id, &packet, false, now, &mut deferred);
            }
            if let Some(t) = self.trans.get(&id) {
                if t.aseqno != t.iseqno {
                    self.ack(id, fin, now);
                }
            }
            for d in deferred {
                if d.ies.iter().any(|i| matches!(i, Ie::Cause { .. })) {
                    self.stats.queries_refused += 1;
                }
                self.send(id, d.cmd, true, d.ies, now);
            }
            if fin && self.trans.contains_key(&id) {
                self.destroy(id, false, now);
            }
        } else if h.oseqno == oiseqno {
            // A retransmission of what we already handled: ACK it again.
            self.ack(id, false, now);
        } else {
            tracing::debug!(%from, "DUNDi: packet out of window dropped");
        }
    }

    /// Asterisk `ack_trans`: forget the sent packet `iseqno` acknowledges.
    fn ack_trans(&mut self, id: u16, iseqno: u8) -> bool {
        let Some(t) = self.trans.get_mut(&id) else {
            return false;
        };
        let before = t.packets.len();
        t.packets
            .retain(|p| (p.oseqno as u16 + 1) % 255 != iseqno as u16);
        if t.packets.len() != before {
            t.autokill = None;
            true
        } else {
            false
        }
    }

    fn first_eid(p: &Packet) -> Option<Eid> {
        p.find(|i| match i {
            Ie::Eid(e) | Ie::EidDirect(e) => Some(*e),
            _ => None,
        })
    }

    /// Asterisk `handle_command_response`. Returns true when the packet was final after all
    /// (an ENCRYPT carrying a final inner packet).
    fn handle_command(
        &mut self,
        id: u16,
        p: &Packet,
        encrypted: bool,
        now: Instant,
        deferred: &mut Vec<Deferred>,
    ) -> bool {
        let fin = p.is_final();
        let cmd = p.command();
        match cmd {
            Command::DpDiscover | Command::EidQuery | Command::PrecacheRq => {
                let resp = match cmd {
                    Command::EidQuery => Command::EidResponse,
                    Command::PrecacheRq => Command::PrecacheRp,
                    _ => Command::DpResponse,
                };
                let refuse = |code: u8, text: &str| Deferred {
                    cmd: resp,
                    ies: vec![Ie::Cause {
                        code,
                        text: text.to_string(),
                    }],
                };
                let Some(pi) = Self::first_eid(p).and_then(|e| self.peer_index(&e)) else {
                    if cmd == Command::PrecacheRq {
                        self.stats.precache_refused += 1;
                    }
                    deferred.push(refuse(cause::NOAUTH, ""));
                    return fin;
                };
                let peer_eid = self.peers[pi].settings.eid;
                if let Some(t) = self.trans.get_mut(&id) {
                    t.them = Some(peer_eid);
                }
                // Encrypted peers prove who they are with their key. Plain peers only name
                // themselves, so (unlike Asterisk) they must at least come from their address.
                // What a peer pushes into our cache is believed for its whole lifetime, so a
                // plain PRECACHERQ must come from the peer's exact address and port (a spoofed
                // source address alone, from any port, is not enough).
                let from = self.trans.get(&id).map(|t| t.addr);
                let configured = self.peers[pi].settings.address;
                let hasauth = if self.peers[pi].inkey.is_some() {
                    encrypted
                } else if cmd == Command::PrecacheRq {
                    from == Some(configured)
                } else {
                    from.map(|a| a.ip()) == Some(configured.ip())
                };
                if !hasauth {
                    if cmd == Command::PrecacheRq {
                        self.stats.precache_refused += 1;
                        tracing::info!(
                            peer = %peer_eid,
                            from = ?from,
                            "DUNDi: PRECACHERQ refused: not encrypted and not from {configured}"
                        );
                    }
                    deferred.push(refuse(cause::NOAUTH, "Unencrypted responses not permitted"));
                    return fin;
                }
                let context = p
                    .find(|i| match i {
                        Ie::CalledContext(c) => Some(c.clone()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "e164".to_string());
                if cmd == Command::EidQuery {
                    let req = p.find(|i| match i {
                        Ie::ReqEid(e) => Some(*e),
                        _ => None,
                    });
                    deferred.push(Deferred {
                        cmd: resp,
                        ies: self.answer_entity(req),
                    });
                    return fin;
                }
                let number = p
                    .find(|i| match i {
                        Ie::CalledNumber(n) => Some(n.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                let ps = &self.peers[pi].settings;
                if number.is_empty() {
                    deferred.push(refuse(cause::GENERAL, "Invalid or missing number/entity"));
                } else if cmd == Command::DpDiscover
                    && ps.model.inbound()
                    && has_permission(&ps.permit, &context)
                {
                    match self.answer_query(&number, &context) {
                        Some(local) => {
                            if let Some(local) =
                                self.maybe_forward(id, p, peer_eid, &number, &context, local, now)
                            {
                                self.push_event(Event::Answered {
                                    peer: peer_eid,
                                    number,
                                    context,
                                    answers: local.answers.len(),
                                });
                                deferred.push(Deferred {
                                    cmd: resp,
                                    ies: local.to_ies(),
                                });
                            }
                        }
                        None => deferred.push(refuse(cause::NOAUTH, "Unsupported DUNDI Context")),
                    }
                } else if cmd == Command::PrecacheRq
                    && ps.precache_inbound()
                    && has_permission(&ps.include, &context)
                {
                    self.save_precache(p, &number, &context, peer_eid, now);
                    deferred.push(Deferred {
                        cmd: resp,
                        ies: Vec::new(),
                    });
                } else if cmd == Command::PrecacheRq && !ps.precache_inbound() {
                    self.stats.precache_refused += 1;
                    tracing::info!(peer = %peer_eid, "DUNDi: PRECACHERQ from a peer not configured with precache inbound refused");
                    deferred.push(refuse(cause::NOAUTH, "Permission to precache not granted"));
                } else {
                    if cmd == Command::PrecacheRq {
                        self.stats.precache_refused += 1;
                    }
                    deferred.push(refuse(cause::NOAUTH, "Permission to context denied"));
                }
            }
            Command::RegReq => {
                // Dynamic peers are not supported: refuse as Asterisk does for unknown ones.
                deferred.push(Deferred {
                    cmd: Command::RegResponse,
                    ies: vec![Ie::Cause {
                        code: cause::NOAUTH,
                        text: String::new(),
                    }],
                });
            }
            Command::DpResponse | Command::EidResponse => {
                let code = p
                    .find(|i| match i {
                        Ie::Cause { code, text } => Some((*code, text.clone())),
                        _ => None,
                    })
                    .filter(|(c, _)| *c >= 1);
                let t_encrypt = self.trans.get(&id).is_some_and(|t| t.encrypt);
                let authpass = if t_encrypt { encrypted } else { true };
                match code {
                    None if authpass => {
                        if cmd == Command::DpResponse {
                            self.take_answers(id, p, now);
                        } else {
                            self.take_entity(id, p);
                        }
                    }
                    None => {}
                    Some((c, text)) => self.take_cause(id, c, text),
                }
                if !fin {
                    self.send(id, Command::Cancel, true, Vec::new(), now);
                }
            }
            Command::RegResponse | Command::Invalid | Command::Null | Command::PrecacheRp => {
                if cmd == Command::PrecacheRp {
                    self.take_precache_reply(id, p, encrypted);
                }
                if !fin {
                    self.send(id, Command::Cancel, true, Vec::new(), now);
                }
            }
            Command::EncRej => return self.handle_encrej(id, p, now),
            Command::Encrypt if !encrypted => return self.handle_encrypt(id, p, now, deferred),
            _ => {
                if !fin {
                    let first = p.header.oseqno == 0;
                    self.send(
                        id,
                        Command::Unknown,
                        first,
                        vec![Ie::UnknownCommand(cmd.code())],
                        now,
                    );
                }
            }
        }
        fin
    }

    fn handle_encrypt(
        &mut self,
        id: u16,
        p: &Packet,
        now: Instant,
        deferred: &mut Vec<Deferred>,
    ) -> bool {
        let fin = p.is_final();
        let Some((iseqno, oseqno)) = self.trans.get(&id).map(|t| (t.iseqno, t.oseqno)) else {
            return fin;
        };
        if iseqno == 1 && oseqno == 0 {
            // First packet of their transaction: who is it, and which key?
            let eid = p.find(|i| match i {
                Ie::Eid(e) => Some(*e),
                _ => None,
            });
            let shared = p.find(|i| match i {
                Ie::SharedKey(k) => Some(k.as_slice()),
                _ => None,
            });
            let sig = p.find(|i| match i {
                Ie::Signature(k) => Some(k.as_slice()),
                _ => None,
            });
            let crc = p.find(|i| match i {
                Ie::KeyCrc32(c) => Some(*c),
                _ => None,
            });
            let pi = eid.and_then(|e| self.peer_index(&e));
            let key = pi.and_then(|pi| {
                let peer = &self.peers[pi];
                let (theirs, ours) = (peer.inkey.clone()?, peer.outkey.clone()?);
                match self
                    .rx_keys
                    .resolve(peer.settings.eid, shared.zip(sig), crc, &theirs, &ours)
                {
                    Ok(k) => Some(k),
                    Err(e) => {
                        tracing::info!(peer = %peer.settings.eid, "DUNDi: key refused: {e}");
                        self.stats.decrypt_failures += 1;
                        None
                    }
                }
            });
            let (Some(pi), Some(key)) = (pi, key) else {
                if !fin {
                    self.send(id, Command::EncRej, true, Vec::new(), now);
                }
                return fin;
            };
            self.apply_peer(id, pi, now);
            if let Some(t) = self.trans.get_mut(&id) {
                t.key = Some(key);
            }
        }
        let t = self.trans.get(&id);
        let (encrypt, key) = (t.is_some_and(|t| t.encrypt), t.and_then(|t| t.key));
        let encdata = p.find(|i| match i {
            Ie::EncData { iv, data } => Some((*iv, data.as_slice())),
            _ => None,
        });
        if let (true, Some(key), Some((iv, data))) = (encrypt, key, encdata) {
            match crypto::decrypt_packet(&p.header, &iv, data, &key) {
                Ok(inner) => {
                    let inner_fin = self.handle_command(id, &inner, true, now, deferred);
                    return fin || inner_fin;
                }
                Err(e) => {
                    tracing::debug!("DUNDi: decrypt failed: {e}");
                    self.stats.decrypt_failures += 1;
                }
            }
        }
        if !fin {
            if let Some(t) = self.trans.get_mut(&id) {
                t.encrypt = false;
            }
            self.send(id, Command::EncRej, true, Vec::new(), now);
        }
        fin
    }

    /// The peer could not decrypt: start over with the full key once (Asterisk does the same).
    fn handle_encrej(&mut self, id: u16, p: &Packet, now: Instant) -> bool {
        let fin = p.is_final();
        let Some(t) = self.trans.get(&id) else {
            return fin;
        };
        let retry = !t.send_full_key && t.last_inner.is_some() && t.them.is_some();
        if !retry {
            if !fin {
                self.send(id, Command::Cancel, true, Vec::new(), now);
            }
            return fin;
        }
        if !fin {
            if let Some(t) = self.trans.get_mut(&id) {
                t.send_full_key = true;
            }
            return fin;
        }
        self.ack(id, true, now);
        let Some(new_id) = self.new_trans_id() else {
            return fin;
        };
        let Some(mut t) = self.trans.remove(&id) else {
            return fin;
        };
        let Some(inner) = t.last_inner.take() else {
            return fin;
        };
        t.strans = new_id;
        t.dtrans = 0;
        t.iseqno = 0;
        t.oiseqno = 0;
        t.oseqno = 0;
        t.aseqno = 0;
        t.final_sent = false;
        t.send_full_key = true;
        t.packets.clear();
        t.idle = now + IDLE_LIMIT;
        let purpose = t.purpose.clone();
        self.trans.insert(new_id, t);
        self.retarget(id, new_id, &purpose);
        let cmd = inner.command();
        self.send(new_id, cmd, inner.is_final(), inner.ies, now);
        // The old transaction is over; its final ACK went out above.
        false
    }

    fn retarget(&mut self, old: u16, new: u16, purpose: &Purpose) {
        match purpose {
            Purpose::Lookup(l) | Purpose::EidQuery(l) => {
                if let Some(ls) = self.lookups.get_mut(l) {
                    for t in ls.trans.iter_mut() {
                        if *t == old {
                            *t = new;
                        }
                    }
                }
            }
            Purpose::Qualify { peer, .. } => {
                if let Some(pi) = self.peer_index(peer) {
                    self.peers[pi].qualify_trans = Some(new);
                }
            }
            Purpose::Precache { id, .. } => {
                if let Some(ps) = self.precaches.get_mut(id) {
                    for t in ps.trans.iter_mut() {
                        if *t == old {
                            *t = new;
                        }
                    }
                }
            }
            Purpose::Incoming => {}
        }
    }

    // ---------------------------------------------------------------- answering

    fn substitute(&self, template: &str, number: &str) -> String {
        template
            .replace("${NUMBER}", number)
            .replace("${IPADDR}", &self.ipaddr)
            .replace("${EID}", &self.eid.to_string())
    }

    /// Answers a DPDISCOVER from the mappings of `context` (Asterisk `dundi_lookup_local` and
    /// `dundi_lookup_thread`); `None` when no mapping serves the context.
    fn answer_query(&self, number: &str, context: &str) -> Option<LocalAnswer> {
        let maps: Vec<&Mapping> = self
            .mappings
            .iter()
            .filter(|m| m.context.eq_ignore_ascii_case(context))
            .collect();
        if maps.is_empty() {
            return None;
        }
        let mut hint = hint_flags::DONT_ASK | hint_flags::UNAFFECTED;
        let mut prefix = String::new();
        let mut answers = Vec::new();
        for m in maps {
            let r = self.local.classify(&m.local_context, number);
            let mut flags = 0u16;
            if r.exists {
                flags |= answer_flags::EXISTS;
            }
            if r.can_match {
                flags |= answer_flags::CANMATCH;
            }
            if r.match_more {
                flags |= answer_flags::MATCHMORE;
            }
            if flags != 0 {
                hint &= !hint_flags::DONT_ASK;
            }
            if m.no_partial {
                flags &= !(answer_flags::MATCHMORE | answer_flags::CANMATCH);
            }
            if flags != 0 {
                flags |= m.options;
                let destination = if flags & answer_flags::EXISTS != 0 {
                    self.substitute(&m.destination, number)
                } else {
                    String::new()
                };
                answers.push(super::wire::AnswerIe {
                    eid: self.eid,
                    protocol: m.tech.code(),
                    flags,
                    weight: m.weight,
                    destination,
                });
            } else {
                // The shortest prefix of the number nothing here can match.
                for (i, _) in number.char_indices().skip(1).chain([(number.len(), ' ')]) {
                    let p = &number[..i];
                    if !self.local.classify(&m.local_context, p).can_match {
                        if p.len() > prefix.len() {
                            prefix = p.to_string();
                        }
                        break;
                    }
                }
            }
        }
        Some(LocalAnswer {
            answers,
            hint_flags: hint,
            prefix,
            expiration: self.cache_ttl.as_secs().min(u16::MAX as u64) as u16,
        })
    }

    /// Asterisk `dundi_query_thread` for an EIDQUERY about us (others are not forwarded).
    fn answer_entity(&self, req: Option<Eid>) -> Vec<Ie> {
        let mut ies = Vec::new();
        if req == Some(self.eid) {
            let e = &self.entity;
            ies.push(Ie::Department(e.department.clone()));
            ies.push(Ie::Organization(e.organization.clone()));
            ies.push(Ie::Locality(e.locality.clone()));
            ies.push(Ie::StateProv(e.state_prov.clone()));
            ies.push(Ie::Country(e.country.clone()));
            ies.push(Ie::Email(e.email.clone()));
            ies.push(Ie::Phone(e.phone.clone()));
            if !e.ipaddr.is_empty() {
                ies.push(Ie::IpAddr(e.ipaddr.clone()));
            }
        }
        ies.push(Ie::Hint {
            flags: 0,
            data: String::new(),
        });
        ies
    }

    fn save_precache(&mut self, p: &Packet, number: &str, context: &str, via: Eid, now: Instant) {
        let exp = p
            .find(|i| match i {
                Ie::Expiration(e) => Some(*e),
                _ => None,
            })
            .unwrap_or(self.cache_ttl.as_secs().min(u16::MAX as u64) as u16);
        let answers = self.answers_of(p, exp, via);
        self.cache_put(number, context, answers, 0, String::new(), exp, now);
    }

    /// The ANSWERs of a peer's packet, at most [`MAX_PEER_ANSWERS`], each believed for at most
    /// [`MAX_ANSWER_TTL`], without those carrying our own EID: a peer's cache can hand us back
    /// our own answer, and following it would call ourselves.
    fn answers_of(&mut self, p: &Packet, expiration: u16, via: Eid) -> Vec<Answer> {
        let expiration = expiration.min(MAX_ANSWER_TTL.as_secs().min(u16::MAX as u64) as u16);
        let all = p.ies.iter().filter(|i| matches!(i, Ie::Answer(_))).count();
        if all > MAX_PEER_ANSWERS {
            self.stats.answers_dropped += (all - MAX_PEER_ANSWERS) as u64;
            tracing::info!(peer = %via, answers = all, "DUNDi: only the first {MAX_PEER_ANSWERS} answers taken");
        }
        p.ies
            .iter()
            .filter_map(|i| match i {
                Ie::Answer(a) if a.eid == self.eid => {
                    tracing::info!(%via, destination = %a.destination, "DUNDi: answer carrying our own EID dropped");
                    None
                }
                Ie::Answer(a) => Some(Answer {
                    eid: a.eid,
                    protocol: a.protocol,
                    flags: a.flags,
                    weight: a.weight,
                    destination: a.destination.clone(),
                    expiration,
                    via,
                }),
                _ => None,
            })
            .take(MAX_PEER_ANSWERS)
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn cache_put(
        &mut self,
        number: &str,
        context: &str,
        answers: Vec<Answer>,
        hint_flags: u16,
        dont_ask_prefix: String,
        expiration: u16,
        now: Instant,
    ) {
        let mut ttl = Duration::from_secs(expiration as u64)
            .min(self.cache_ttl)
            .min(MAX_ANSWER_TTL);
        if answers.is_empty() {
            ttl = ttl.min(EMPTY_CACHE_TIME);
        }
        if ttl.is_zero() {
            return;
        }
        self.cache.insert(
            (context.to_ascii_lowercase(), number.to_string()),
            CacheEntry {
                number: number.to_string(),
                context: context.to_string(),
                answers,
                hint_flags,
                dont_ask_prefix,
                expires: now + ttl,
            },
        );
    }

    // ---------------------------------------------------------------- our requests

    fn take_answers(&mut self, id: u16, p: &Packet, _now: Instant) {
        let Some(t) = self.trans.get(&id) else {
            return;
        };
        let Purpose::Lookup(lid) = t.purpose else {
            return;
        };
        let via = t.them.unwrap_or_default();
        let expiration = p
            .find(|i| match i {
                Ie::Expiration(e) => Some(*e),
                _ => None,
            })
            .filter(|e| *e > 0)
            .unwrap_or(self.cache_ttl.as_secs().min(u16::MAX as u64) as u16);
        let answers = self.answers_of(p, expiration, via);
        let hint = p.find(|i| match i {
            Ie::Hint { flags, data } => Some((*flags, data.clone())),
            _ => None,
        });
        let Some(ls) = self.lookups.get_mut(&lid) else {
            return;
        };
        for a in answers {
            let dup = ls
                .result
                .answers
                .iter_mut()
                .find(|x| x.protocol == a.protocol && x.destination == a.destination);
            match dup {
                Some(x) => x.weight = x.weight.min(a.weight),
                None => {
                    ls.result.answers.push(a);
                    ls.result.hint_flags &= !hint_flags::DONT_ASK;
                }
            }
        }
        ls.responded += 1;
        if hint
            .as_ref()
            .is_none_or(|(f, _)| f & hint_flags::DONT_ASK == 0)
        {
            ls.not_dont_ask = true;
        }
        if let Some((flags, data)) = hint {
            ls.result.hint_flags |= flags & hint_flags::TTL_EXPIRED;
            if flags & hint_flags::DONT_ASK != 0 && ls.result.answers.is_empty() {
                ls.result.hint_flags |= hint_flags::DONT_ASK;
                if data.len() > ls.result.dont_ask_prefix.len() {
                    ls.result.dont_ask_prefix = data;
                }
            }
        }
        ls.expiration = ls.expiration.min(expiration);
    }

    fn take_entity(&mut self, id: u16, p: &Packet) {
        let Some(t) = self.trans.get(&id) else {
            return;
        };
        let Purpose::EidQuery(lid) = t.purpose else {
            return;
        };
        let text = |f: fn(&Ie) -> Option<&String>| p.ies.iter().find_map(f).cloned();
        let Some(organization) = text(|i| match i {
            Ie::Organization(s) => Some(s),
            _ => None,
        }) else {
            return;
        };
        let info = EntityInfo {
            department: text(|i| match i {
                Ie::Department(s) => Some(s),
                _ => None,
            })
            .unwrap_or_default(),
            organization,
            locality: text(|i| match i {
                Ie::Locality(s) => Some(s),
                _ => None,
            })
            .unwrap_or_default(),
            state_prov: text(|i| match i {
                Ie::StateProv(s) => Some(s),
                _ => None,
            })
            .unwrap_or_default(),
            country: text(|i| match i {
                Ie::Country(s) => Some(s),
                _ => None,
            })
            .unwrap_or_default(),
            email: text(|i| match i {
                Ie::Email(s) => Some(s),
                _ => None,
            })
            .unwrap_or_default(),
            phone: text(|i| match i {
                Ie::Phone(s) => Some(s),
                _ => None,
            })
            .unwrap_or_default(),
            ipaddr: text(|i| match i {
                Ie::IpAddr(s) => Some(s),
                _ => None,
            })
            .unwrap_or_else(|| t.addr.ip().to_string()),
        };
        if let Some(ls) = self.lookups.get_mut(&lid) {
            ls.entity.get_or_insert(info);
        }
    }

    fn take_cause(&mut self, id: u16, code: u8, text: String) {
        let Some(t) = self.trans.get(&id) else {
            return;
        };
        let (Purpose::Lookup(lid) | Purpose::EidQuery(lid)) = t.purpose else {
            return;
        };
        let via = t.them.unwrap_or_default();
        if let Some(ls) = self.lookups.get_mut(&lid) {
            ls.result.causes.push((via, code, text));
        }
    }

    /// Starts a lookup of `number` in DUNDi `context` with all peers that we ask about that
    /// context (the lowest `order` first). `ttl` defaults to the configured TTL. The result
    /// comes as [`Event::LookupDone`]; from the cache at once unless `cache_bypass`.
    pub fn lookup(
        &mut self,
        now: Instant,
        number: &str,
        context: &str,
        ttl: Option<u16>,
        cache_bypass: bool,
    ) -> LookupId {
        self.start_lookup(now, number, context, ttl, cache_bypass, &[], None)
    }

    /// A lookup; `avoid` is the EID path of a request we pass on (those entities are not asked
    /// and are listed in our DPDISCOVER), `forwarded` the request waiting for the result.
    #[allow(clippy::too_many_arguments)]
    fn start_lookup(
        &mut self,
        now: Instant,
        number: &str,
        context: &str,
        ttl: Option<u16>,
        cache_bypass: bool,
        avoid: &[(Eid, bool)],
        forwarded: Option<Forwarded>,
    ) -> LookupId {
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        let context = if context.is_empty() { "e164" } else { context };
        let mut result = LookupResult {
            number: number.to_string(),
            context: context.to_string(),
            hint_flags: hint_flags::UNAFFECTED,
            ..Default::default()
        };
        if !cache_bypass {
            if let Some(e) = self
                .cache
                .get(&(context.to_ascii_lowercase(), number.to_string()))
                .filter(|e| e.expires > now)
            {
                result.answers = e.answers.clone();
                result.hint_flags = e.hint_flags;
                result.dont_ask_prefix = e.dont_ask_prefix.clone();
                result.from_cache = true;
                match forwarded {
                    Some(f) => {
                        let ls = LookupState {
                            result,
                            trans: Vec::new(),
                            deadline: now,
                            expiration: e
                                .expires
                                .saturating_duration_since(now)
                                .as_secs()
                                .min(u16::MAX as u64)
                                as u16,
                            eid_query: None,
                            entity: None,
                            forwarded: Some(f),
                            not_dont_ask: false,
                            responded: 0,
                        };
                        self.lookups.insert(id, ls);
                        self.finish_lookup(id, now);
                    }
                    None => self.push_event(Event::LookupDone { id, result }),
                }
                return id;
            }
        }
        let ttl = ttl.unwrap_or(self.ttl);
        let mut affected = false;
        let in_path = |e: &Eid| avoid.iter().find(|(a, _)| a == e).map(|(_, d)| *d);
        let looped = in_path(&self.eid).is_some();
        let eligible: Vec<usize> = (0..self.peers.len())
            .filter(|&i| {
                let p = &self.peers[i];
                if !(p.settings.model.outbound() && has_permission(&p.settings.include, context)) {
                    return false;
                }
                if let Some(direct) = in_path(&p.settings.eid) {
                    affected |= !direct;
                    return false;
                }
                !looped && !matches!(p.reach, Reachability::Unreachable | Reachability::Lagged(_))
            })
            .collect();
        if affected {
            result.hint_flags &= !hint_flags::UNAFFECTED;
        }
        let best = eligible.iter().map(|&i| self.peers[i].settings.order).min();
        let chosen: Vec<usize> = eligible
            .into_iter()
            .filter(|&i| Some(self.peers[i].settings.order) == best)
            .collect();
        let deadline = now + Duration::from_millis(2000 + 200 * ttl as u64);
        let mut ls = LookupState {
            result,
            trans: Vec::new(),
            deadline,
            expiration: self.cache_ttl.as_secs().min(u16::MAX as u64) as u16,
            eid_query: None,
            entity: None,
            forwarded,
            not_dont_ask: false,
            responded: 0,
        };
        ls.result.asked = chosen.len();
        self.lookups.insert(id, ls);
        if ttl == 0 {
            if let Some(ls) = self.lookups.get_mut(&id) {
                ls.result.hint_flags |= hint_flags::TTL_EXPIRED;
            }
            self.finish_lookup(id, now);
            return id;
        }
        for pi in chosen {
            let addr = self.peers[pi].settings.address;
            let Some(tid) = self.create_trans(addr, Purpose::Lookup(id), now) else {
                continue;
            };
            self.apply_peer(tid, pi, now);
            if let Some(ls) = self.lookups.get_mut(&id) {
                ls.trans.push(tid);
            }
            let mut ies = vec![Ie::Version(1), Ie::EidDirect(self.eid)];
            for (e, _) in avoid {
                // Asterisk dundi_ie_append_eid_appropriately.
                let direct = *e == self.eid
                    || self.peers.iter().any(|p| {
                        p.settings.eid == *e && has_permission(&p.settings.include, context)
                    });
                ies.push(if direct {
                    Ie::EidDirect(*e)
                } else {
                    Ie::Eid(*e)
                });
            }
            ies.extend([
                Ie::CalledNumber(number.to_string()),
                Ie::CalledContext(context.to_string()),
                Ie::Ttl(ttl),
            ]);
            if cache_bypass {
                ies.push(Ie::CacheBypass);
            }
            self.send(tid, Command::DpDiscover, false, ies, now);
        }
        if self.lookups.get(&id).is_some_and(|l| l.trans.is_empty()) {
            self.finish_lookup(id, now);
        }
        id
    }

    /// Asterisk passes a lookup on to its other peers (TTL one less, the request's EID path
    /// avoided) unless it has a weight-0 answer itself. Returns the answer to send now, or
    /// `None` when the answer waits for the forwarded lookup.
    #[allow(clippy::too_many_arguments)]
    fn maybe_forward(
        &mut self,
        id: u16,
        p: &Packet,
        peer: Eid,
        number: &str,
        context: &str,
        mut local: LocalAnswer,
        now: Instant,
    ) -> Option<LocalAnswer> {
        if local.answers.iter().any(|a| a.weight == 0) {
            return Some(local);
        }
        let ttl = p
            .find(|i| match i {
                Ie::Ttl(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(0)
            .saturating_sub(1);
        if ttl == 0 {
            local.hint_flags |= hint_flags::TTL_EXPIRED;
            return Some(local);
        }
        let mut path: Vec<(Eid, bool)> = p
            .ies
            .iter()
            .filter_map(|i| match i {
                Ie::Eid(e) => Some((*e, false)),
                Ie::EidDirect(e) => Some((*e, true)),
                _ => None,
            })
            .collect();
        // The first EID authenticates the sender; when it is also the root, keep one copy.
        if path.len() > 1 && path.first().map(|x| x.0) == path.last().map(|x| x.0) {
            path.remove(0);
        }
        let bypass = p.ies.iter().any(|i| matches!(i, Ie::CacheBypass));
        let f = Forwarded {
            trans: id,
            local: local.clone(),
            peer,
        };
        let lid = self.start_lookup(now, number, context, Some(ttl), bypass, &path, Some(f));
        if self.lookups.contains_key(&lid) {
            return None;
        }
        // Finished at once (nobody to ask, or cached): answer now, after the ACK.
        match self.forward_done.iter().position(|(t, _)| *t == id) {
            Some(i) => {
                let (_, merged) = self.forward_done.remove(i);
                // answer_forwarded reported it already.
                if let Some(Event::Answered { .. }) = self.events.back() {
                    self.events.pop_back();
                }
                Some(merged)
            }
            None => Some(local),
        }
    }

    fn answer_forwarded(
        &mut self,
        f: Forwarded,
        sub: &LookupResult,
        not_dont_ask: bool,
        sub_expiration: u16,
    ) {
        let Forwarded {
            trans,
            mut local,
            peer,
        } = f;
        if sub.asked == 0 && !sub.from_cache {
            // Nobody else to ask: our own answer, as Asterisk gives it.
            if sub.hint_flags & hint_flags::UNAFFECTED == 0 {
                local.hint_flags &= !hint_flags::UNAFFECTED;
            }
        } else {
            for a in &sub.answers {
                if let Some(x) = local
                    .answers
                    .iter_mut()
                    .find(|x| x.protocol == a.protocol && x.destination == a.destination)
                {
                    x.weight = x.weight.min(a.weight);
                    continue;
                }
                local.answers.push(super::wire::AnswerIe {
                    eid: a.eid,
                    protocol: a.protocol,
                    flags: a.flags,
                    weight: a.weight,
                    destination: a.destination.clone(),
                });
            }
            if !sub.answers.is_empty() || not_dont_ask {
                local.hint_flags &= !hint_flags::DONT_ASK;
            } else if sub.dont_ask_prefix.len() > local.prefix.len() {
                local.prefix = sub.dont_ask_prefix.clone();
            }
            local.hint_flags |= sub.hint_flags & hint_flags::TTL_EXPIRED;
            if sub.hint_flags & hint_flags::UNAFFECTED == 0 {
                local.hint_flags &= !hint_flags::UNAFFECTED;
            }
            if sub_expiration > 0 {
                local.expiration = local.expiration.min(sub_expiration);
            }
        }
        if !self.trans.contains_key(&trans) {
            return;
        }
        self.push_event(Event::Answered {
            peer,
            number: sub.number.clone(),
            context: sub.context.clone(),
            answers: local.answers.len(),
        });
        self.forward_done.push((trans, local));
    }

    /// Sends the answers of forwarded requests that completed.
    fn flush_forwarded(&mut self, now: Instant) {
        for (trans, local) in std::mem::take(&mut self.forward_done) {
            self.send(trans, Command::DpResponse, true, local.to_ies(), now);
        }
    }

    /// Asks `peer` who `eid` is (EIDQUERY); the result comes as [`Event::EntityInfo`].
    pub fn query_eid(&mut self, now: Instant, peer: Eid, eid: Eid, context: &str) -> LookupId {
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        let ls = LookupState {
            result: LookupResult::default(),
            trans: Vec::new(),
            deadline: now + Duration::from_millis(2000 + 200 * self.ttl as u64),
            expiration: 0,
            eid_query: Some(eid),
            entity: None,
            forwarded: None,
            not_dont_ask: false,
            responded: 0,
        };
        self.lookups.insert(id, ls);
        if let Some(pi) = self.peer_index(&peer) {
            let addr = self.peers[pi].settings.address;
            if let Some(tid) = self.create_trans(addr, Purpose::EidQuery(id), now) {
                self.apply_peer(tid, pi, now);
                if let Some(ls) = self.lookups.get_mut(&id) {
                    ls.trans.push(tid);
                }
                let ies = vec![
                    Ie::Version(1),
                    Ie::Eid(self.eid),
                    Ie::ReqEid(eid),
                    Ie::CalledContext(if context.is_empty() { "e164" } else { context }.into()),
                    Ie::Ttl(self.ttl),
                ];
                self.send(tid, Command::EidQuery, false, ies, now);
            }
        }
        if self.lookups.get(&id).is_some_and(|l| l.trans.is_empty()) {
            self.finish_lookup(id, now);
        }
        id
    }

    /// Sends a qualify ping (NULL) to `peer`; false if there is no such peer.
    pub fn qualify(&mut self, now: Instant, peer: Eid) -> bool {
        let Some(pi) = self.peer_index(&peer) else {
            return false;
        };
        if let Some(old) = self.peers[pi].qualify_trans.take() {
            self.trans.remove(&old);
        }
        let addr = self.peers[pi].settings.address;
        let Some(tid) = self.create_trans(addr, Purpose::Qualify { peer, sent: now }, now) else {
            return false;
        };
        self.apply_peer(tid, pi, now);
        if let Some(t) = self.trans.get_mut(&tid) {
            t.autokill = None;
        }
        self.peers[pi].qualify_trans = Some(tid);
        self.send(tid, Command::Null, true, Vec::new(), now);
        true
    }

    /// Only a lookup every asked peer answered without a cause is worth remembering: a
    /// silent or refusing peer may answer next time.
    fn cacheable(ls: &LookupState) -> bool {
        ls.result.asked > 0
            && !ls.result.from_cache
            && ls.responded >= ls.result.asked
            && ls.result.causes.is_empty()
    }

    /// Ends a lookup or EIDQUERY at once with what has arrived so far (the caller's deadline
    /// passed); its transactions are dropped.
    pub fn finish_now(&mut self, id: LookupId, now: Instant) {
        self.finish_lookup(id, now);
        self.flush_forwarded(now);
    }

    fn finish_lookup(&mut self, id: LookupId, now: Instant) {
        let Some(ls) = self.lookups.remove(&id) else {
            return;
        };
        for t in &ls.trans {
            self.trans.remove(t);
        }
        if let Some(eid) = ls.eid_query {
            self.push_event(Event::EntityInfo {
                id,
                eid,
                info: ls.entity,
            });
            return;
        }
        let cacheable = Self::cacheable(&ls);
        if let Some(f) = ls.forwarded {
            if cacheable {
                self.cache_put(
                    &ls.result.number,
                    &ls.result.context,
                    ls.result.answers.clone(),
                    ls.result.hint_flags,
                    ls.result.dont_ask_prefix.clone(),
                    ls.expiration,
                    now,
                );
            }
            self.answer_forwarded(f, &ls.result, ls.not_dont_ask, ls.expiration);
            return;
        }
        let mut result = ls.result;
        result.answers.sort_by(|a, b| {
            a.weight
                .cmp(&b.weight)
                .then(a.destination.cmp(&b.destination))
        });
        if cacheable {
            self.cache_put(
                &result.number,
                &result.context,
                result.answers.clone(),
                result.hint_flags,
                result.dont_ask_prefix.clone(),
                ls.expiration,
                now,
            );
        }
        self.push_event(Event::LookupDone { id, result });
    }

    /// Asterisk `destroy_trans`.
    fn destroy(&mut self, id: u16, from_timeout: bool, now: Instant) {
        let Some(t) = self.trans.remove(&id) else {
            return;
        };
        match t.purpose {
            Purpose::Qualify { peer, sent } => {
                let latency = (!from_timeout).then(|| now.saturating_duration_since(sent));
                if let Some(pi) = self.peer_index(&peer) {
                    let p = &mut self.peers[pi];
                    if p.qualify_trans == Some(id) {
                        p.qualify_trans = None;
                    }
                    let was = p.reach;
                    p.reach = match latency {
                        None => Reachability::Unreachable,
                        Some(d) if d >= DEFAULT_MAXMS => Reachability::Lagged(d),
                        Some(d) => Reachability::Reachable(d.max(Duration::from_millis(1))),
                    };
                    if std::mem::discriminant(&was) != std::mem::discriminant(&p.reach) {
                        tracing::info!(peer = %peer, "DUNDi peer is now {:?}", p.reach);
                    }
                }
                self.push_event(Event::Qualified { peer, latency });
            }
            Purpose::Lookup(lid) | Purpose::EidQuery(lid) => {
                let done = match self.lookups.get_mut(&lid) {
                    Some(ls) => {
                        ls.trans.retain(|x| *x != id);
                        ls.trans.is_empty()
                    }
                    None => false,
                };
                if done {
                    self.finish_lookup(lid, now);
                }
            }
            Purpose::Precache { id: pid, .. } => {
                let done = match self.precaches.get_mut(&pid) {
                    Some(ps) => {
                        ps.trans.retain(|x| *x != id);
                        if from_timeout {
                            ps.report.timed_out += 1;
                        }
                        ps.trans.is_empty()
                    }
                    None => false,
                };
                if done {
                    self.finish_precache(pid);
                }
            }
            Purpose::Incoming => {}
        }
    }

    /// Time passed: retransmit, give up, finish overdue lookups, qualify, expire the cache.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.timeout(now);
        self.flush_forwarded(now);
    }

    fn timeout(&mut self, now: Instant) {
        let mut resend = Vec::new();
        let mut dead = Vec::new();
        for t in self.trans.values_mut() {
            let mut gave_up = false;
            for p in t.packets.iter_mut() {
                if p.next <= now {
                    if p.retries_left == 0 {
                        gave_up = true;
                    } else {
                        p.retries_left -= 1;
                        p.next = now + t.retrans_timer;
                        resend.push((t.addr, p.bytes.clone()));
                        self.stats.retransmissions += 1;
                    }
                }
            }
            if gave_up {
                dead.push((t.strans, true));
                self.stats.timeouts += 1;
            } else if t.autokill.is_some_and(|a| a <= now)
                || (t.packets.is_empty() && t.idle <= now)
            {
                dead.push((t.strans, false));
            }
        }
        self.out.extend(resend);
        for (id, timeout) in dead {
            if let Some(t) = self.trans.get(&id) {
                if !matches!(t.purpose, Purpose::Qualify { .. }) {
                    tracing::info!(to = %t.addr, "DUNDi: transaction {} given up", id);
                }
            }
            self.destroy(id, timeout, now);
        }
        let overdue: Vec<LookupId> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.finish_lookup(id, now);
        }
        let due: Vec<Eid> = self
            .peers
            .iter()
            .filter(|p| p.next_qualify.is_some_and(|q| q <= now))
            .map(|p| p.settings.eid)
            .collect();
        for eid in due {
            if let Some(pi) = self.peer_index(&eid) {
                let interval = self.peers[pi]
                    .settings
                    .qualify
                    .unwrap_or(Duration::from_secs(60));
                let next = if self.peers[pi].reach == Reachability::Unreachable {
                    interval.min(Duration::from_secs(10))
                } else {
                    interval
                };
                self.peers[pi].next_qualify = Some(now + next);
            }
            self.qualify(now, eid);
        }
        self.cache.retain(|_, e| e.expires > now);
        let mut due: Vec<(String, String)> = self
            .precache_due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if !due.is_empty() {
            due.sort();
            for k in &due {
                self.precache_due.remove(k);
            }
            self.precache_pairs(now, &due);
        }
    }

    // ---------------------------------------------------------------- precache

    /// Pushes our answers for `numbers` in DUNDi `context` (empty: `e164`) to every peer we
    /// precache to (`precache` outbound) that is permitted the context: one PRECACHERQ per
    /// number and peer, carrying the answers a DPDISCOVER would get (Asterisk `dundi precache`).
    /// Numbers we have no answer for are skipped. Each number pushed is pushed again when its
    /// answers expire. The outcome comes as [`Event::PrecacheDone`].
    pub fn precache(&mut self, now: Instant, context: &str, numbers: &[String]) -> LookupId {
        let context = if context.is_empty() { "e164" } else { context };
        let pairs: Vec<(String, String)> = numbers
            .iter()
            .map(|n| (context.to_string(), n.clone()))
            .collect();
        self.precache_pairs(now, &pairs)
    }

    /// Pushes every number we know to be ours (the whole numbers
    /// [`LocalNumbers::known_numbers`] lists for each mapping's local context) in every
    /// mapping's context (Asterisk `dundi_precache_full`, which runs on load and reload).
    pub fn precache_all(&mut self, now: Instant) -> LookupId {
        let pairs = self.all_precache_pairs();
        self.precache_pairs(now, &pairs)
    }

    /// The precache queue: `(context, number, when it is pushed again)`.
    pub fn precache_queue(&self) -> Vec<(String, String, Instant)> {
        let mut v: Vec<_> = self
            .precache_due
            .iter()
            .map(|((c, n), t)| (c.clone(), n.clone(), *t))
            .collect();
        v.sort();
        v
    }

    fn all_precache_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        for m in &self.mappings {
            for n in self.local.known_numbers(&m.local_context) {
                pairs.push((m.context.to_ascii_lowercase(), n));
            }
        }
        pairs.sort();
        pairs.dedup();
        pairs
    }

    /// On start and reload, as Asterisk: when some peer takes our precache, queue every known
    /// number at once (the next [`Engine::handle_timeout`] pushes them).
    fn queue_precache_full(&mut self, now: Instant) {
        if !self.peers.iter().any(|p| p.settings.precache_outbound()) {
            return;
        }
        for k in self.all_precache_pairs() {
            self.precache_due.insert(k, now);
        }
    }

    fn precache_pairs(&mut self, now: Instant, pairs: &[(String, String)]) -> LookupId {
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        self.precaches.insert(
            id,
            PrecacheState {
                report: PrecacheReport::default(),
                trans: Vec::new(),
            },
        );
        for (context, number) in pairs {
            self.precache_one(now, id, context, number);
        }
        if self.precaches.get(&id).is_some_and(|p| p.trans.is_empty()) {
            self.finish_precache(id);
        }
        id
    }

    /// Asterisk `precache_trans` for each peer we push to: our own answers only (Asterisk
    /// also asks its other peers when it has no weight-0 answer; we do not pass that on).
    fn precache_one(&mut self, now: Instant, id: LookupId, context: &str, number: &str) {
        if number.is_empty() {
            return;
        }
        let Some(local) = self.answer_query(number, context) else {
            return;
        };
        if local.answers.is_empty() {
            return;
        }
        let targets: Vec<usize> = (0..self.peers.len())
            .filter(|&i| {
                let s = &self.peers[i].settings;
                s.precache_outbound() && has_permission(&s.permit, context)
            })
            .collect();
        let mut sent = 0;
        for pi in targets {
            let peer = self.peers[pi].settings.eid;
            let addr = self.peers[pi].settings.address;
            let purpose = Purpose::Precache {
                id,
                peer,
                number: number.to_string(),
            };
            let Some(tid) = self.create_trans(addr, purpose, now) else {
                continue;
            };
            self.apply_peer(tid, pi, now);
            if let Some(ps) = self.precaches.get_mut(&id) {
                ps.trans.push(tid);
                ps.report.sent += 1;
            }
            // VERSION, our EID, the number, context and TTL, then the answers, HINT and
            // EXPIRATION: Asterisk's order.
            let mut ies = vec![
                Ie::Version(1),
                Ie::Eid(self.eid),
                Ie::CalledNumber(number.to_string()),
                Ie::CalledContext(context.to_string()),
                Ie::Ttl(self.ttl),
            ];
            ies.extend(local.answers.iter().cloned().map(Ie::Answer));
            ies.push(Ie::Hint {
                flags: 0,
                data: local.prefix.clone(),
            });
            ies.push(Ie::Expiration(local.expiration));
            self.send(tid, Command::PrecacheRq, false, ies, now);
            if self.trans.contains_key(&tid) {
                sent += 1;
            }
        }
        if sent > 0 {
            if let Some(ps) = self.precaches.get_mut(&id) {
                ps.report
                    .pushed
                    .push((context.to_string(), number.to_string()));
            }
            // Asterisk `reschedule_precache`: again when the answers expire.
            if local.expiration > 0 {
                self.precache_due.insert(
                    (context.to_ascii_lowercase(), number.to_string()),
                    now + Duration::from_secs(local.expiration as u64),
                );
            }
        }
    }

    /// A PRECACHERP to one of our pushes: acknowledged, or refused with a cause.
    fn take_precache_reply(&mut self, id: u16, p: &Packet, encrypted: bool) {
        let Some(t) = self.trans.get(&id) else {
            return;
        };
        let Purpose::Precache {
            id: pid,
            peer,
            number,
        } = t.purpose.clone()
        else {
            return;
        };
        if t.encrypt && !encrypted {
            return;
        }
        let Some(ps) = self.precaches.get_mut(&pid) else {
            return;
        };
        match p.find(|i| match i {
            Ie::Cause { code, text } => Some((*code, text.clone())),
            _ => None,
        }) {
            Some((code, text)) if code >= 1 => {
                tracing::info!(%peer, %number, code, %text, "DUNDi: precache refused");
                ps.report.refused.push((peer, number, code, text));
            }
            _ => ps.report.acknowledged.push((peer, number)),
        }
    }

    fn finish_precache(&mut self, id: LookupId) {
        let Some(ps) = self.precaches.remove(&id) else {
            return;
        };
        for t in &ps.trans {
            self.trans.remove(t);
        }
        self.push_event(Event::PrecacheDone {
            id,
            report: ps.report,
        });
    }
}
