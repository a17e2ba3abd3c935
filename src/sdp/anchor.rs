//! What the media-anchoring B2BUA does with SDP.
//!
//! Every description forwarded to a leg goes through [`rewrite_for_relay`]: the connection
//! address and audio port become the relay's, ICE is removed, streams other than the first
//! audio stream are declined, and `o=` becomes the B2BUA's own origin for that leg with the
//! version rules of RFC 3264 §8.
//!
//! Codecs pass through. Before an offer is forwarded, [`add_transcodable`] may add the other
//! G.711 law so that the far end can choose it; once the answer is in, [`negotiate`] decides
//! which codec each leg uses (and whether the relay transcodes PCMU⇄PCMA), and
//! [`answer_for_a`] builds the answer for the offering leg.
//!
//! The functions are named after the usual flow (leg A offers in its INVITE, leg B answers),
//! but only the roles matter: in an offerless INVITE the offer comes from B in its 2xx and the
//! answer from A in the ACK; then pass B's offer as `a_offer` and A's answer as `b_answer`.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::net::IpAddr;

use super::media::{Codec, Direction, MediaDescription};
use super::session::{
    addr_type, ip_text, parse_digits, Attribute, Connection, Origin, SessionDescription,
};
use super::SdpError;

/// The B2BUA's `o=` line on one leg, and what it last sent there (RFC 3264 §8: the version is
/// incremented only when the description changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginState {
    session_id: u64,
    version: u64,
    address: IpAddr,
    /// The last description sent, serialised with version 0 in `o=`.
    last: Option<String>,
}

/// The `o=` username the B2BUA uses.
pub const ORIGIN_USERNAME: &str = "pasarela";

impl OriginState {
    /// A leg's origin: a session id fixed for the leg, and the address written into `o=`.
    /// The first description sent carries version 1.
    pub fn new(session_id: u64, address: IpAddr) -> Self {
        OriginState {
            session_id,
            version: 1,
            address,
            last: None,
        }
    }

    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The last description stamped on this leg, serialised (with version 0 in `o=`).
    pub fn last_sent(&self) -> Option<&str> {
        self.last.as_deref()
    }

    /// The version of the last description sent (1 before any was sent).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The `o=` line for a version.
    fn origin(&self, version: u64) -> Origin {
        Origin {
            username: ORIGIN_USERNAME.into(),
            session_id: decimal(self.session_id),
            session_version: version,
            net_type: "IN".into(),
            addr_type: addr_type(self.address).into(),
            address: ip_text(self.address),
        }
    }

    /// Stamps `sdp` with this leg's origin, bumping the version if the content differs from
    /// the last description stamped.
    fn stamp(&mut self, sdp: &mut SessionDescription) {
        sdp.origin = self.origin(0);
        let body = sdp.encode();
        if let Some(last) = &self.last {
            if *last != body {
                self.version = self.version.wrapping_add(1);
            }
        }
        self.last = Some(body);
        sdp.origin.session_version = self.version;
    }
}

/// `n` in decimal, without `core::fmt`.
fn decimal(n: u64) -> String {
    let mut s = String::with_capacity(20);
    let _ = crate::sip::uri::write_decimal(&mut s, n);
    s
}

/// Whether an attribute belongs to ICE (RFC 8839) and must not cross the relay.
fn is_ice_attribute(name: &str) -> bool {
    // Case-insensitive without a lowercased copy per attribute.
    name.eq_ignore_ascii_case("candidate")
        || name.eq_ignore_ascii_case("remote-candidates")
        || name.eq_ignore_ascii_case("end-of-candidates")
        || name
            .as_bytes()
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"ice-"))
}

/// Anchors `sdp` on the relay and stamps it with this leg's origin.
///
/// - session `c=` and every media `c=` become `IN IP4|IP6 relay_ip`;
/// - the first audio stream gets port `audio_port` (a declined audio stream stays declined),
///   its `a=rtcp` becomes `audio_port + 1` (removed when that does not fit in a port);
/// - ICE attributes (`a=candidate`, `a=ice-*`, `a=remote-candidates`, `a=end-of-candidates`)
///   are removed at both levels;
/// - every other stream gets port 0 (declined): only audio is relayed;
/// - an RFC 2543 hold (`c=0.0.0.0` for the audio stream) would be lost with the address, so it
///   is turned into the RFC 3264 direction: `sendrecv` becomes `sendonly`, `recvonly`
///   becomes `inactive`;
/// - `o=` is replaced by `origin`'s, its version bumped only if the content changed since the
///   last description sent on that leg.
pub fn rewrite_for_relay(
    sdp: &mut SessionDescription,
    relay_ip: IpAddr,
    audio_port: u16,
    origin: &mut OriginState,
) {
    if let Some(i) = sdp.audio_index() {
        let held = sdp.media.get(i).is_some_and(|m| {
            m.effective_connection(sdp)
                .and_then(Connection::ip)
                .is_some_and(|ip| ip.is_unspecified())
        });
        let dir = match sdp.media_direction(i) {
            Direction::SendRecv | Direction::SendOnly => Direction::SendOnly,
            Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
        };
        if let (true, Some(m)) = (held, sdp.media.get_mut(i)) {
            m.set_direction(dir);
        }
    }
    let conn = Connection::from_ip(relay_ip);
    sdp.connection = Some(conn.clone());
    sdp.extra.retain(|l| l.kind != 'c');
    sdp.attributes.retain(|a| !is_ice_attribute(&a.name));
    let audio = sdp.audio_index();
    for (i, m) in sdp.media.iter_mut().enumerate() {
        if m.connection.is_some() {
            m.connection = Some(conn.clone());
        }
        m.extra.retain(|l| l.kind != 'c');
        m.attributes.retain(|a| !is_ice_attribute(&a.name));
        if Some(i) == audio && m.port != 0 {
            m.port = audio_port;
            m.port_count = None;
            let rtcp = audio_port.checked_add(1);
            let had_rtcp = m.attribute("rtcp").is_some();
            m.attributes
                .retain(|a| !a.name.eq_ignore_ascii_case("rtcp"));
            if let (true, Some(p)) = (had_rtcp, rtcp) {
                m.attributes.push(Attribute::new("rtcp", p.to_string()));
            }
        } else {
            m.port = 0;
            m.port_count = None;
            m.attributes
                .retain(|a| !a.name.eq_ignore_ascii_case("rtcp"));
        }
    }
    origin.stamp(sdp);
}

/// Makes `audio` (an offer the relay sends a leg) offer RTCP multiplexing (RFC 5761): pasarela
/// always can. Whatever `a=rtcp` it had is kept (rewritten to the relay's RTP port + 1 by
/// [`rewrite_for_relay`]): until the answer comes, RTCP is still taken on the separate port
/// (RFC 5761 §5.1.3), and an answerer that does not multiplex keeps using it.
pub fn offer_rtcp_mux(audio: &mut MediaDescription) {
    audio.set_rtcp_mux(true);
}

/// Makes `audio` (an answer the relay sends a leg) accept RTCP multiplexing exactly when that
/// leg's offer (`offered`) asked for it (RFC 5761 §5.1.1, RFC 8035): a muxed answer names no
/// separate RTCP port, an answer without it never says `a=rtcp-mux` (it may have been copied
/// from the other leg's description).
pub fn answer_rtcp_mux(audio: &mut MediaDescription, offered: bool) {
    audio.set_rtcp_mux(offered);
    if offered {
        audio.remove_attributes("rtcp");
    }
}

/// Whether the first audio stream of the SDP body `body` offers `a=rtcp-mux`, read without
/// parsing the whole description (the media relay uses it to bind no RTCP socket for a caller
/// whose offer will be answered with multiplexing). Anything unreadable is `false`: the RTCP
/// socket is then bound as before.
pub fn body_offers_rtcp_mux(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let mut in_audio = false;
    let mut seen_audio = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            if seen_audio {
                return false;
            }
            in_audio = m.split(' ').next() == Some("audio");
            seen_audio = in_audio;
        } else if in_audio && line.eq_ignore_ascii_case("a=rtcp-mux") {
            return true;
        }
    }
    false
}

/// The two G.711 laws.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum G711 {
    /// µ-law, PCMU, static payload type 0.
    Ulaw,
    /// A-law, PCMA, static payload type 8.
    Alaw,
}

impl G711 {
    /// The other law.
    pub fn other(self) -> Self {
        match self {
            G711::Ulaw => G711::Alaw,
            G711::Alaw => G711::Ulaw,
        }
    }

    /// The static payload type: 0 or 8.
    pub fn static_pt(self) -> u8 {
        match self {
            G711::Ulaw => 0,
            G711::Alaw => 8,
        }
    }

    /// `PCMU` or `PCMA`.
    pub fn name(self) -> &'static str {
        match self {
            G711::Ulaw => "PCMU",
            G711::Alaw => "PCMA",
        }
    }

    /// The codec with its static payload type.
    pub fn codec(self) -> Codec {
        Codec::new(self.static_pt(), self.name(), 8000)
    }
}

/// Which G.711 law a codec is: by name and rate (`PCMU/8000`, `PCMA/8000`, mono), or by static
/// payload type (0, 8) when the name is empty.
pub fn is_g711(c: &Codec) -> Option<G711> {
    if c.name.is_empty() {
        return match c.pt {
            0 => Some(G711::Ulaw),
            8 => Some(G711::Alaw),
            _ => None,
        };
    }
    if c.rate != 8000 || c.channels != 1 {
        return None;
    }
    if c.name.eq_ignore_ascii_case("PCMU") {
        Some(G711::Ulaw)
    } else if c.name.eq_ignore_ascii_case("PCMA") {
        Some(G711::Alaw)
    } else {
        None
    }
}

/// If the offer has exactly one G.711 law, adds the other right after it so that the far end
/// may pick it (the relay then transcodes). It gets its static payload type, or a free dynamic
/// one if that is taken. Everything else (telephone-event included) is left as it is.
pub fn add_transcodable(offer_audio: &mut MediaDescription) {
    let codecs = offer_audio.codecs();
    let has = |law| codecs.iter().any(|c| is_g711(c) == Some(law));
    let present = match (has(G711::Ulaw), has(G711::Alaw)) {
        (true, false) => G711::Ulaw,
        (false, true) => G711::Alaw,
        _ => return,
    };
    let used = |pt: u8| {
        offer_audio
            .formats
            .iter()
            .any(|f| parse_digits::<u8>(f) == Some(pt))
    };
    let mut codec = present.other().codec();
    if used(codec.pt) {
        match (96u8..=127).find(|pt| !used(*pt)) {
            Some(pt) => codec.pt = pt,
            None => return,
        }
    }
    let index = offer_audio
        .formats
        .iter()
        .position(|f| {
            codecs
                .iter()
                .any(|c| parse_digits::<u8>(f) == Some(c.pt) && is_g711(c) == Some(present))
        })
        .map_or(offer_audio.formats.len(), |i| i + 1);
    offer_audio.insert_codec(index, &codec);
}

/// The outcome of an offer/answer exchange across the B2BUA.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Negotiated {
    /// The codec on leg A (the offerer), as A described it.
    pub a_codec: Codec,
    /// The codec on leg B (the answerer): the first codec of its answer.
    pub b_codec: Codec,
    /// A's `telephone-event` payload type, if A offered one and it can be used: B answered
    /// with events too, or B's codec is G.711 (the relay can then play the events as tones).
    pub a_dtmf_pt: Option<u8>,
    /// B's `telephone-event` payload type, if B answered with one.
    pub b_dtmf_pt: Option<u8>,
    /// Whether the relay converts between the two G.711 laws.
    pub transcode: bool,
    /// Packetisation time to use: the answer's `a=ptime`, else the offer's.
    pub ptime: Option<u32>,
}

/// The first `telephone-event` payload type of a section, preferring one at `rate`.
fn dtmf_pt(codecs: &[Codec], rate: u32) -> Option<u8> {
    let events = || codecs.iter().filter(|c| c.is_telephone_event());
    events()
        .find(|c| c.rate == rate)
        .or_else(|| events().next())
        .map(|c| c.pt)
}

/// Decides the codec of each leg from what A offered (before [`add_transcodable`]) and what
/// B answered.
///
/// B's codec is the first codec of the answer that is neither `telephone-event` nor comfort
/// noise. If A offered the same encoding (payload type may differ), A uses it as it described
/// it; otherwise, if both are G.711 of different laws, A uses its first G.711 codec and the
/// relay transcodes. Anything else is [`SdpError::NoCommonCodec`]; an answer that declines
/// audio is [`SdpError::NoAudio`]. Both map to `488 Not Acceptable Here`.
pub fn negotiate(
    a_offer: &MediaDescription,
    b_answer: &MediaDescription,
) -> Result<Negotiated, SdpError> {
    if b_answer.port == 0 {
        return Err(SdpError::NoAudio);
    }
    let a_codecs = a_offer.codecs();
    let b_codecs = b_answer.codecs();
    let b_codec = b_codecs
        .iter()
        .find(|c| !c.is_telephone_event() && !c.is_comfort_noise())
        .ok_or(SdpError::NoCommonCodec)?
        .clone();
    let (a_codec, transcode) = if let Some(a) = a_codecs.iter().find(|a| a.same_encoding(&b_codec))
    {
        (a.clone(), false)
    } else if is_g711(&b_codec).is_some() {
        let a = a_codecs
            .iter()
            .find(|a| is_g711(a).is_some())
            .ok_or(SdpError::NoCommonCodec)?;
        (a.clone(), true)
    } else {
        return Err(SdpError::NoCommonCodec);
    };
    let b_dtmf_pt = dtmf_pt(&b_codecs, b_codec.rate);
    let a_dtmf_pt = dtmf_pt(&a_codecs, a_codec.rate)
        .filter(|_| b_dtmf_pt.is_some() || is_g711(&b_codec).is_some());
    Ok(Negotiated {
        a_dtmf_pt,
        b_dtmf_pt,
        ptime: b_answer.ptime().or_else(|| a_offer.ptime()),
        a_codec,
        b_codec,
        transcode,
    })
}

/// The answer to send to A: B's answer with the first audio stream's formats replaced by
/// `n.a_codec`, plus A's `telephone-event` (`n.a_dtmf_pt`, which [`negotiate`] sets only when
/// B has events too or B's codec is G.711 so the relay can turn RFC 4733 events into tones),
/// and `a=ptime` set to `n.ptime`. Apply
/// [`rewrite_for_relay`] to the result before sending it.
pub fn answer_for_a(
    a_offer: &MediaDescription,
    b_answer: &SessionDescription,
    n: &Negotiated,
) -> SessionDescription {
    let mut answer = b_answer.clone();
    let Some(audio) = answer.audio_mut() else {
        return answer;
    };
    let pts: Vec<u8> = audio
        .formats
        .iter()
        .filter_map(|f| parse_digits::<u8>(f))
        .collect();
    audio.remove_pts(&pts);
    audio.formats.clear();
    audio.add_codec(&n.a_codec);
    let convertible = n.b_dtmf_pt.is_some() || is_g711(&n.b_codec).is_some();
    if let (Some(pt), true) = (n.a_dtmf_pt, convertible) {
        if let Some(ev) = a_offer.codecs().into_iter().find(|c| c.pt == pt) {
            audio.add_codec(&ev);
        }
    }
    if n.ptime.is_some() {
        audio.set_ptime(n.ptime);
    }
    answer
}

/// The codecs of an offer whose encoding is in `supported`, in the offer's order. Entries are
/// names (`PCMU`, `telephone-event`) or name and rate (`opus/48000`), case-insensitive.
pub fn intersect(offer: &MediaDescription, supported: &[&str]) -> Vec<Codec> {
    offer
        .codecs()
        .into_iter()
        .filter(|c| {
            supported.iter().any(|s| match s.split_once('/') {
                Some((name, rate)) => {
                    c.name.eq_ignore_ascii_case(name) && rate.parse() == Ok(c.rate)
                }
                None => c.name.eq_ignore_ascii_case(s),
            })
        })
        .collect()
}
