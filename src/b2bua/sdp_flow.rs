//! The SDP side of a call: what was offered and answered on each leg, what pasarela sent each
//! phone (its relay address, its own origin line), which codec and DTMF payload type each leg
//! uses, and how the relay is set up from that; which legs are SRTP and with which keys (the
//! decisions themselves are in [`super::srtp`]); RTCP multiplexing (RFC 5761/8035): every offer
//! pasarela makes offers it, every answer accepts it when that leg's offer did, and each leg's
//! relay socket set follows. Also SIP INFO DTMF bodies.

use std::net::IpAddr;

use super::srtp::{self, OfferedSrtp, OurOffer, SrtpPolicy};
use crate::media::port::CallMedia;
use crate::media::srtp::MasterKey;
use crate::media::{Law, LegMedia, LegSrtp, Side};
use crate::sdp::{self, Codec, MediaDescription, OriginState, SdesKey, SessionDescription, G711};
use crate::sip::message::Request;

/// Telephone-event payload type pasarela uses in the offers it makes itself.
const OUR_DTMF_PT: u8 = 101;

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn law(codec: &Codec) -> Option<Law> {
    match sdp::is_g711(codec)? {
        G711::Ulaw => Some(Law::Ulaw),
        G711::Alaw => Some(Law::Alaw),
    }
}

fn dtmf_pt(m: &MediaDescription) -> Option<u8> {
    m.codecs()
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case("telephone-event"))
        .map(|c| c.pt)
}

fn leg(
    sdp: &SessionDescription,
    m: &MediaDescription,
    codec: &Codec,
    dtmf: Option<u8>,
    srtp: Option<LegSrtp>,
) -> LegMedia {
    LegMedia {
        remote: m.remote_addr(sdp),
        codec_pt: codec.pt,
        law: law(codec),
        dtmf_pt: dtmf,
        srtp,
        // We offer multiplexing on every leg and accept it whenever offered, so a leg's own
        // description (its offer or its answer) says whether it multiplexes.
        rtcp_mux: m.rtcp_mux(),
    }
}

/// The relay's keys for a leg whose party gave `theirs`.
fn leg_srtp(local: &MasterKey, theirs: Option<SdesKey>) -> Option<LegSrtp> {
    theirs.map(|k| LegSrtp {
        suite: k.suite,
        remote: k.key,
        local: local.clone(),
    })
}

/// The tag of our key in a description we sent (1 when it has none).
fn sent_tag(s: Option<&SessionDescription>) -> u32 {
    s.and_then(SessionDescription::audio)
        .and_then(|m| m.srtp_offers().first().map(|k| k.tag))
        .unwrap_or(1)
}

/// How an offer we sent was secured, read back from it.
fn how_sent(s: Option<&SessionDescription>) -> OurOffer {
    let m = s.and_then(SessionDescription::audio);
    OurOffer {
        secure: m.is_some_and(|m| !m.srtp_offers().is_empty()),
        mandatory: m.is_some_and(MediaDescription::is_savp),
    }
}

/// A session description kept for the call's life (the caller's offer, the forks' offer):
/// its text in one shared allocation, parsed again when it is needed (an answer, a re-INVITE,
/// hold). Parsed, each would be some 35 small strings and vectors (about 1.1 KB) held by every
/// call; as text it is its length (about 300 bytes), and it is read only a few times a call.
///
/// The description the text was written from rides along until its first read: the caller's
/// offer is next read when a fork answers, the forks' offer when the first fork is sent, and
/// parsing them again there cost ~12 K instructions per call (issue 22). A parsed description
/// and its serialisation parse to the same model, so the first read gives what parsing the
/// text gives; later reads parse the text.
struct Kept {
    text: std::sync::Arc<str>,
    /// Taken by the first [`Kept::take`].
    first: Option<Box<SessionDescription>>,
}

impl Kept {
    fn new(s: &SessionDescription) -> Kept {
        // `encode` writes straight into the String; `to_string` goes through a Formatter.
        Kept {
            text: s.encode().into(),
            first: None,
        }
    }

    /// `s` kept, and given back whole by the first [`Kept::take`].
    fn new_owned(s: SessionDescription) -> Kept {
        Kept {
            text: s.encode().into(),
            first: Some(Box::new(s)),
        }
    }

    /// `text` kept, with `parsed` (what parsing `text` gives) for the first read.
    fn from_text(text: &str, parsed: Option<SessionDescription>) -> Kept {
        Kept {
            text: text.into(),
            first: parsed.map(Box::new),
        }
    }

    /// The description again (our own writer's output parses; `None` would be a bug there).
    fn get(&self) -> Option<SessionDescription> {
        let parsed = SessionDescription::parse(&self.text);
        if let Err(e) = &parsed {
            tracing::error!("a kept session description no longer parses: {e}");
        }
        parsed.ok()
    }

    /// [`Kept::get`], without parsing on the first read after the description was kept.
    fn take(&mut self) -> Option<SessionDescription> {
        match self.first.take() {
            Some(s) => Some(*s),
            None => self.get(),
        }
    }
}

/// A kept description, parsed (`None` when none is kept).
fn parsed(k: Option<&mut Kept>) -> Option<SessionDescription> {
    k.and_then(Kept::take)
}

/// Per-call SDP state.
pub struct LegSdp {
    media_ip: IpAddr,
    origin: [OriginState; 2],
    /// The caller's latest offer (None for an offerless INVITE).
    a_offer: Option<Kept>,
    /// What the forks are offered.
    b_offer: Option<Kept>,
    /// We offered the caller in our 2xx (offerless INVITE): its answer comes in the ACK.
    awaiting_a_answer: bool,
    legs: [Option<LegMedia>; 2],
    codec: Option<String>,
    /// Each party's SRTP policy (B's is set per fork when its offer is made).
    policy: [SrtpPolicy; 2],
    /// The keys pasarela gives each party, fixed for the call.
    local: [MasterKey; 2],
    /// What the caller's offer said about SRTP.
    a_srtp: Option<OfferedSrtp>,
}

impl LegSdp {
    pub fn new(call_id: u64, media_ip: IpAddr) -> LegSdp {
        LegSdp {
            media_ip,
            origin: [
                OriginState::new(call_id.wrapping_mul(2) + 1_000_000, media_ip),
                OriginState::new(call_id.wrapping_mul(2) + 1_000_001, media_ip),
            ],
            a_offer: None,
            b_offer: None,
            awaiting_a_answer: false,
            legs: [None, None],
            codec: None,
            policy: [SrtpPolicy::default(); 2],
            local: [MasterKey::random(), MasterKey::random()],
            a_srtp: None,
        }
    }

    /// The SRTP policy of a party (the caller's before its offer is read).
    pub fn set_policy(&mut self, side: Side, policy: SrtpPolicy) {
        self.policy[idx(side)] = policy;
    }

    /// Whether each leg's media is SRTP (A, B), as last negotiated.
    pub fn srtp_legs(&self) -> [bool; 2] {
        [0, 1].map(|i| self.legs[i].as_ref().is_some_and(|l| l.srtp.is_some()))
    }

    fn our_key(&self, side: Side, theirs: Option<&SdesKey>) -> SdesKey {
        srtp::our_key(&self.local[idx(side)], theirs)
    }

    /// Our own offer: PCMU, PCMA and telephone-event on the relay port.
    fn template(&self, port: u16) -> Option<SessionDescription> {
        let family = if self.media_ip.is_ipv4() {
            "IP4"
        } else {
            "IP6"
        };
        let text = format!(
            "v=0\r\no=pasarela 0 0 IN {family} {ip}\r\ns=pasarela\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 8 {OUR_DTMF_PT}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:{OUR_DTMF_PT} telephone-event/8000\r\na=fmtp:{OUR_DTMF_PT} 0-16\r\na=ptime:20\r\na=sendrecv\r\n\
             a=rtcp-mux\r\n",
            ip = self.media_ip
        );
        SessionDescription::parse(&text).ok()
    }

    fn sent(&mut self, side: Side, mut s: SessionDescription, port: u16) -> SessionDescription {
        sdp::rewrite_for_relay(&mut s, self.media_ip, port, &mut self.origin[idx(side)]);
        s
    }

    /// The last SDP sent to `side`: the text its origin state keeps (to tell a changed
    /// description from a repeated one), parsed again; its `o=` has version 0.
    fn last_sent(&self, side: Side) -> Option<SessionDescription> {
        let text = self.origin[idx(side)].last_sent()?;
        Kept::from_text(text, None).get()
    }

    /// The last SDP sent to the forks, kept as the offer each new fork starts from; `sent` is
    /// that description as [`LegSdp::sent`] returned it (its text has version 0 in `o=`).
    fn keep_b_offer(&mut self, mut sent: SessionDescription) {
        sent.origin.session_version = 0;
        self.b_offer = self.origin[1]
            .last_sent()
            .map(|text| Kept::from_text(text, Some(sent)));
    }

    /// The caller offered `offer`: prepare the forks' offer.
    pub fn a_offers(
        &mut self,
        offer: SessionDescription,
        port_b: u16,
        _ip: IpAddr,
    ) -> Result<(), (u16, String)> {
        let Some(audio) = offer.audio() else {
            return Err((488, "No audio stream offered".into()));
        };
        if audio.port == 0 {
            return Err((488, "Audio stream declined in the offer".into()));
        }
        let a_srtp = srtp::accept_offer(audio, self.policy[0])?;
        let mut b = offer.clone();
        if let Some(m) = b.audio_mut() {
            sdp::add_transcodable(m);
            sdp::offer_rtcp_mux(m);
            // Each fork's offer gets our key (or none) in `offer_for_b`.
            m.set_srtp(None);
        }
        let sent = self.sent(Side::B, b, port_b);
        self.keep_b_offer(sent);
        self.a_offer = Some(Kept::new_owned(offer));
        self.a_srtp = Some(a_srtp);
        Ok(())
    }

    /// The caller sent no offer: the forks get ours.
    pub fn offerless(&mut self, port_b: u16, _ip: IpAddr) {
        if let Some(t) = self.template(port_b) {
            let sent = self.sent(Side::B, t, port_b);
            self.keep_b_offer(sent);
        }
    }

    /// The offer for a fork towards a party with `policy`: the caller's offer anchored on the
    /// relay, with our key for leg B when that party gets SRTP.
    pub fn offer_for_b(&mut self, policy: SrtpPolicy) -> Option<SessionDescription> {
        let mut b = parsed(self.b_offer.as_mut())?;
        let how = srtp::our_offer(policy, self.a_srtp.as_ref());
        let ours = self.our_key(Side::B, None);
        let port = b.audio().map_or(9, |m| m.port);
        if let Some(m) = b.audio_mut() {
            srtp::apply_offer(m, how, &ours);
        }
        Some(self.sent(Side::B, b, port))
    }

    fn update_relay(&mut self, relay: Option<&dyn CallMedia>) {
        if let (Some(r), Some(a), Some(b)) = (relay, &self.legs[0], &self.legs[1]) {
            r.update(a.clone(), b.clone());
        }
    }

    /// A fork answered (2xx or early 183) with `answer`: the SDP to send the caller.
    pub fn b_answers(
        &mut self,
        answer: &SessionDescription,
        port_a: u16,
        relay: Option<&dyn CallMedia>,
        policy_b: SrtpPolicy,
    ) -> Result<SessionDescription, (u16, String)> {
        let b_audio = answer
            .audio()
            .ok_or((488, "No audio in the callee's answer".to_string()))?;
        self.policy[1] = policy_b;
        let how_b = srtp::our_offer(policy_b, self.a_srtp.as_ref());
        let b_key = srtp::accept_answer(b_audio, how_b, policy_b, 1)?;
        let a_offer = match &mut self.a_offer {
            Some(k) => Some(
                k.take()
                    .ok_or((500, "The caller's offer was lost".to_string()))?,
            ),
            None => None,
        };
        match a_offer {
            Some(a_offer) => {
                let a_audio = a_offer
                    .audio()
                    .ok_or((488, "No audio offered".to_string()))?;
                let n = sdp::negotiate(a_audio, b_audio)
                    .map_err(|e| (488, format!("No common codec: {e}")))?;
                let mut for_a = sdp::answer_for_a(a_audio, answer, &n);
                let a_key = self.a_srtp.as_ref().and_then(|s| s.key.clone());
                let ours = a_key.as_ref().map(|k| self.our_key(Side::A, Some(k)));
                if let Some(m) = for_a.audio_mut() {
                    srtp::apply_answer(m, &a_audio.proto, ours.as_ref());
                    sdp::answer_rtcp_mux(m, a_audio.rtcp_mux());
                }
                let a_srtp = leg_srtp(&self.local[0], a_key);
                let b_srtp = leg_srtp(&self.local[1], b_key);
                self.legs[0] = Some(leg(&a_offer, a_audio, &n.a_codec, n.a_dtmf_pt, a_srtp));
                self.legs[1] = Some(leg(answer, b_audio, &n.b_codec, n.b_dtmf_pt, b_srtp));
                self.codec = Some(n.a_codec.name.clone());
                self.update_relay(relay);
                Ok(self.sent(Side::A, for_a, port_a))
            }
            None => {
                // Offerless INVITE: B answered our offer; we now offer the caller.
                let b_codec = b_audio
                    .codecs()
                    .into_iter()
                    .find(|c| !c.name.eq_ignore_ascii_case("telephone-event"))
                    .ok_or((488, "No codec in the callee's answer".to_string()))?;
                let b_srtp = OfferedSrtp {
                    key: b_key.clone(),
                    mandatory: b_audio.is_savp(),
                };
                let b_leg_srtp = leg_srtp(&self.local[1], b_key);
                self.legs[1] = Some(leg(answer, b_audio, &b_codec, dtmf_pt(b_audio), b_leg_srtp));
                self.codec = Some(b_codec.name.clone());
                self.awaiting_a_answer = true;
                let mut t = self
                    .template(port_a)
                    .ok_or((500, "Cannot build an offer".to_string()))?;
                let how = srtp::our_offer(self.policy[0], Some(&b_srtp));
                let ours = self.our_key(Side::A, None);
                if let Some(m) = t.audio_mut() {
                    srtp::apply_offer(m, how, &ours);
                }
                Ok(self.sent(Side::A, t, port_a))
            }
        }
    }

    pub fn awaiting_a_answer(&self) -> bool {
        self.awaiting_a_answer
    }

    /// The caller's answer (in its ACK) to the offer we made in the 2xx.
    pub fn a_answers_in_ack(&mut self, answer: &SessionDescription, relay: Option<&dyn CallMedia>) {
        self.awaiting_a_answer = false;
        self.answer_in_ack(Side::A, answer, relay);
    }

    /// A side answered, in its ACK, an offer we made from our current session.
    pub fn answer_in_ack(
        &mut self,
        side: Side,
        answer: &SessionDescription,
        relay: Option<&dyn CallMedia>,
    ) {
        let Some(audio) = answer.audio() else { return };
        let Some(codec) = audio
            .codecs()
            .into_iter()
            .find(|c| !c.name.eq_ignore_ascii_case("telephone-event"))
        else {
            return;
        };
        let sent = self.last_sent(side);
        let (how, tag) = (how_sent(sent.as_ref()), sent_tag(sent.as_ref()));
        let key = match srtp::accept_answer(audio, how, self.policy[idx(side)], tag) {
            Ok(k) => k,
            Err((_, why)) => {
                // Too late to refuse (the ACK ends the exchange): the leg stays as it was.
                tracing::warn!("answer in ACK not taken: {why}");
                return;
            }
        };
        let srtp = leg_srtp(&self.local[idx(side)], key);
        self.legs[idx(side)] = Some(leg(answer, audio, &codec, dtmf_pt(audio), srtp));
        self.update_relay(relay);
    }

    /// Whether `side` receives DTMF as RFC 4733 events (otherwise it gets SIP INFO).
    pub fn has_dtmf_events(&self, side: Side) -> bool {
        self.legs[idx(side)]
            .as_ref()
            .is_some_and(|l| l.dtmf_pt.is_some())
    }

    /// What we last sent `side` (re-offered when a re-INVITE comes without SDP).
    pub fn current_for(&mut self, side: Side, port: u16) -> Option<SessionDescription> {
        let mut s = self.last_sent(side)?;
        if let Some(m) = s.audio_mut() {
            sdp::offer_rtcp_mux(m);
        }
        Some(self.sent(side, s, port))
    }

    /// The direction of the audio we last sent `side` (`None`: nothing sent yet).
    pub fn last_sent_direction(&self, side: Side) -> Option<crate::sdp::Direction> {
        let s = self.last_sent(side)?;
        Some(s.media_direction(s.audio_index()?))
    }

    /// A new offer for `side` from what it last got, taken off hold (sendrecv): after a
    /// transfer the far party talks again, maybe with a new codec.
    pub fn fresh_offer_for(&mut self, side: Side, port: u16) -> Option<SessionDescription> {
        let mut s = self.last_sent(side)?;
        if let Some(m) = s.audio_mut() {
            m.set_direction(crate::sdp::Direction::SendRecv);
            sdp::offer_rtcp_mux(m);
        }
        Some(self.sent(side, s, port))
    }

    /// An offer from the other side, to be forwarded to `to`.
    /// Refused (488) when the offerer's SRTP policy does not allow its offer.
    pub fn offer_to(
        &mut self,
        to: Side,
        offer: &SessionDescription,
        port_to: u16,
    ) -> Result<Option<SessionDescription>, (u16, String)> {
        let from = to.other();
        let offered = match offer.audio() {
            Some(m) => Some(srtp::accept_offer(m, self.policy[idx(from)])?),
            None => None,
        };
        // The receiving leg keeps SRTP once it has it; otherwise its policy decides.
        let mut how = srtp::our_offer(self.policy[idx(to)], offered.as_ref());
        if self.srtp_legs()[idx(to)] {
            let before = how_sent(self.last_sent(to).as_ref());
            how = OurOffer {
                secure: true,
                mandatory: how.mandatory || before.mandatory,
            };
        }
        let ours = self.our_key(to, None);
        let mut s = offer.clone();
        if let Some(m) = s.audio_mut() {
            sdp::add_transcodable(m);
            sdp::offer_rtcp_mux(m);
            srtp::apply_offer(m, how, &ours);
        }
        Ok(Some(self.sent(to, s, port_to)))
    }

    /// `offerer` offered `offer`; the other side answered `answer`: the answer for the offerer.
    pub fn answered(
        &mut self,
        offerer: Side,
        offer: &SessionDescription,
        answer: &SessionDescription,
        port_offerer: u16,
        relay: Option<&dyn CallMedia>,
    ) -> Result<SessionDescription, (u16, String)> {
        let o_audio = offer.audio().ok_or((488, "No audio offered".to_string()))?;
        let a_audio = answer
            .audio()
            .ok_or((488, "No audio in the answer".to_string()))?;
        let n =
            sdp::negotiate(o_audio, a_audio).map_err(|e| (488, format!("No common codec: {e}")))?;
        let mut for_offerer = sdp::answer_for_a(o_audio, answer, &n);
        let answerer = offerer.other();
        let o_key = srtp::accept_offer(o_audio, self.policy[idx(offerer)])?.key;
        let sent = self.last_sent(answerer);
        let (how, tag) = (how_sent(sent.as_ref()), sent_tag(sent.as_ref()));
        let a_key = srtp::accept_answer(a_audio, how, self.policy[idx(answerer)], tag)?;
        let ours = o_key.as_ref().map(|k| self.our_key(offerer, Some(k)));
        if let Some(m) = for_offerer.audio_mut() {
            srtp::apply_answer(m, &o_audio.proto, ours.as_ref());
            sdp::answer_rtcp_mux(m, o_audio.rtcp_mux());
        }
        let o_srtp = leg_srtp(&self.local[idx(offerer)], o_key);
        let a_srtp = leg_srtp(&self.local[idx(answerer)], a_key);
        self.legs[idx(offerer)] = Some(leg(offer, o_audio, &n.a_codec, n.a_dtmf_pt, o_srtp));
        self.legs[idx(answerer)] = Some(leg(answer, a_audio, &n.b_codec, n.b_dtmf_pt, a_srtp));
        if offerer == Side::A {
            self.a_offer = Some(Kept::new(offer));
        }
        self.update_relay(relay);
        Ok(self.sent(offerer, for_offerer, port_offerer))
    }

    /// Pickup ([`super::call::pickup`]): a phone takes the ringing call with its own INVITE,
    /// whose `offer` meets the caller's offer (still unanswered). The codec is the first of the
    /// picker's that the caller offered too (or a G.711 the relay converts); returns the
    /// answer for the picker (leg B) and the answer for the caller (leg A).
    pub fn b_offers_at_pickup(
        &mut self,
        offer: &SessionDescription,
        ports: (u16, u16),
        relay: Option<&dyn CallMedia>,
        policy_b: SrtpPolicy,
    ) -> Result<(SessionDescription, SessionDescription), (u16, String)> {
        let a_offer = parsed(self.a_offer.as_mut()).ok_or((
            488,
            "The ringing call has no offer to answer: it cannot be picked up".to_string(),
        ))?;
        let a_audio = a_offer
            .audio()
            .ok_or((488, "No audio offered".to_string()))?;
        let p_audio = offer
            .audio()
            .filter(|m| m.port != 0)
            .ok_or((488, "No audio stream offered".to_string()))?;
        let p_key = srtp::accept_offer(p_audio, policy_b)?.key;
        let a_codecs = a_audio.codecs();
        let p_codecs = p_audio.codecs();
        let media = |c: &&Codec| !c.is_telephone_event() && !c.is_comfort_noise();
        let chosen = p_codecs
            .iter()
            .filter(media)
            .find(|c| a_codecs.iter().any(|a| a.same_encoding(c)))
            .or_else(|| {
                let a_g711 = a_codecs.iter().any(|a| sdp::is_g711(a).is_some());
                p_codecs
                    .iter()
                    .filter(media)
                    .find(|c| a_g711 && sdp::is_g711(c).is_some())
            })
            .cloned()
            .ok_or((488, "No codec in common with the caller".to_string()))?;
        // The picker's offer cut down to the chosen codec (and its telephone-event): what it
        // is answered with, and what the caller's answer is built from.
        let mut mine = offer.clone();
        if let Some(m) = mine.audio_mut() {
            let keep_event = dtmf_pt(m);
            let drop: Vec<u8> = m
                .codecs()
                .iter()
                .map(|c| c.pt)
                .filter(|pt| *pt != chosen.pt && Some(*pt) != keep_event)
                .collect();
            m.remove_pts(&drop);
        }
        let m_audio = mine
            .audio()
            .ok_or((488, "No audio stream offered".to_string()))?;
        let n =
            sdp::negotiate(a_audio, m_audio).map_err(|e| (488, format!("No common codec: {e}")))?;
        let mut for_a = sdp::answer_for_a(a_audio, &mine, &n);
        let a_key = self.a_srtp.as_ref().and_then(|s| s.key.clone());
        let ours_a = a_key.as_ref().map(|k| self.our_key(Side::A, Some(k)));
        if let Some(m) = for_a.audio_mut() {
            srtp::apply_answer(m, &a_audio.proto, ours_a.as_ref());
            sdp::answer_rtcp_mux(m, a_audio.rtcp_mux());
        }
        let mut for_b = mine.clone();
        let ours_b = p_key.as_ref().map(|k| self.our_key(Side::B, Some(k)));
        if let Some(m) = for_b.audio_mut() {
            srtp::apply_answer(m, &p_audio.proto, ours_b.as_ref());
            sdp::answer_rtcp_mux(m, p_audio.rtcp_mux());
            m.set_direction(sdp::Direction::SendRecv);
        }
        self.policy[1] = policy_b;
        let a_srtp = leg_srtp(&self.local[0], a_key);
        let b_srtp = leg_srtp(&self.local[1], p_key);
        self.legs[0] = Some(leg(&a_offer, a_audio, &n.a_codec, n.a_dtmf_pt, a_srtp));
        self.legs[1] = Some(leg(&mine, m_audio, &n.b_codec, n.b_dtmf_pt, b_srtp));
        self.codec = Some(n.a_codec.name.clone());
        self.update_relay(relay);
        let for_b = self.sent(Side::B, for_b, ports.1);
        let for_a = self.sent(Side::A, for_a, ports.0);
        Ok((for_b, for_a))
    }

    /// The G.711 codec and telephone-event negotiated on `side` (for a line on that side).
    pub fn leg_codec(&self, side: Side) -> Option<super::line_leg::LegCodec> {
        let l = self.legs[idx(side)].as_ref()?;
        Some(super::line_leg::LegCodec {
            law: l.law?,
            pt: l.codec_pt,
            dtmf_pt: l.dtmf_pt,
        })
    }

    pub fn codec_name(&self) -> Option<String> {
        self.codec.clone()
    }
}

/// The digit and duration of a SIP INFO DTMF (application/dtmf-relay or application/dtmf).
/// A hook flash (`Signal=!` or `Signal=hf` in dtmf-relay, or an application/hook-flash body)
/// is the digit `!`, which RFC 4733 carries as event 16 and a PSTN line as a flash.
pub fn dtmf_from_info(req: &Request) -> Option<(char, u32)> {
    let ct = req
        .headers
        .content_type()?
        .split(';')
        .next()?
        .trim()
        .to_ascii_lowercase();
    let body = std::str::from_utf8(&req.body).ok()?;
    let valid = |c: char| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D');
    match ct.as_str() {
        "application/dtmf-relay" => {
            let mut digit = None;
            let mut duration = 160;
            for line in body.lines() {
                let (k, v) = line.split_once('=')?;
                match k.trim().to_ascii_lowercase().as_str() {
                    "signal" if v.trim().eq_ignore_ascii_case("hf") => digit = Some('!'),
                    "signal" => digit = v.trim().chars().next().map(|c| c.to_ascii_uppercase()),
                    "duration" => duration = v.trim().parse().unwrap_or(160),
                    _ => {}
                }
            }
            digit
                .filter(|c| valid(*c) || *c == '!')
                .map(|d| (d, duration.clamp(40, 5000)))
        }
        "application/hook-flash" => body
            .lines()
            .filter_map(|l| l.split_once('='))
            .any(|(k, v)| {
                k.trim().eq_ignore_ascii_case("signal") && v.trim().eq_ignore_ascii_case("hf")
            })
            .then_some(('!', 160)),
        "application/dtmf" => body
            .trim()
            .chars()
            .next()
            .map(|c| c.to_ascii_uppercase())
            .filter(|c| valid(*c))
            .map(|d| (d, 160)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::{parse_message, Framing, Limits};

    fn info(content_type: &str, body: &str) -> Request {
        let text = format!(
            "INFO sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 3 INFO\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        match parse_message(
            bytes::Bytes::from(text),
            Framing::Datagram,
            &Limits::default(),
        ) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    /// Media that records the legs it is given.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Option<(LegMedia, LegMedia)>>);

    impl CallMedia for Recorder {
        fn local_port(&self, side: Side) -> u16 {
            match side {
                Side::A => 20000,
                Side::B => 20002,
            }
        }
        fn update(&self, a: LegMedia, b: LegMedia) {
            *self.0.lock().unwrap() = Some((a, b));
        }
        fn send_dtmf(&self, _: Side, _: char, _: u32) {}
        /// Nothing is relayed: no packets, PCMU on both legs.
        fn stats(&self) -> crate::media::CallMediaStats {
            crate::media::CallMediaStats {
                a_to_b: Default::default(),
                b_to_a: Default::default(),
                a_codec_pt: 0,
                b_codec_pt: 0,
                transcoding: false,
                srtp: [false; 2],
            }
        }
    }

    impl Recorder {
        fn mux(&self) -> (bool, bool) {
            let legs = self.0.lock().unwrap();
            let (a, b) = legs.as_ref().expect("relay updated");
            (a.rtcp_mux, b.rtcp_mux)
        }
    }

    fn phone_sdp(port: u16, mux: bool) -> SessionDescription {
        let mut text = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.5\r\ns=-\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=rtcp:{}\r\na=sendrecv\r\n",
            port + 1
        );
        if mux {
            text.push_str("a=rtcp-mux\r\n");
        }
        SessionDescription::parse(&text).expect("fixture")
    }

    fn audio_mux(s: &SessionDescription) -> bool {
        s.audio().expect("audio").rtcp_mux()
    }

    /// A call set up from A's offer (`a_mux`) and B's answer (`b_mux`): what A is answered,
    /// what B was offered, and the legs the relay got.
    fn set_up(
        a_mux: bool,
        b_mux: bool,
    ) -> (LegSdp, Recorder, SessionDescription, SessionDescription) {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let relay = Recorder::default();
        let mut sdp = LegSdp::new(1, ip);
        sdp.a_offers(phone_sdp(4000, a_mux), 20002, ip)
            .expect("offer");
        let to_b = sdp.offer_for_b(SrtpPolicy::default()).expect("offer for B");
        let for_a = sdp
            .b_answers(
                &phone_sdp(6000, b_mux),
                20000,
                Some(&relay),
                SrtpPolicy::default(),
            )
            .expect("answer");
        (sdp, relay, to_b, for_a)
    }

    /// Real descriptions: the SDP fuzz seeds (RFC 4475 and RFC 5118 torture bodies, SRTP,
    /// IPv6) and phones' offers with and without rtcp-mux.
    fn real_offers() -> Vec<(String, SessionDescription)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/sdp");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("sdp seeds") {
            let path = entry.expect("seed").path();
            let bytes = std::fs::read(&path).expect("seed");
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if let Ok(s) = SessionDescription::parse(text) {
                out.push((path.display().to_string(), s));
            }
        }
        for mux in [false, true] {
            out.push((format!("phone mux={mux}"), phone_sdp(4000, mux)));
        }
        out
    }

    /// What a kept description gives on its first read without parsing is what parsing its
    /// text gives (the old behaviour of every read), for the caller's offer and the forks'.
    #[test]
    fn kept_first_read_is_what_parsing_the_text_gives() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let mut compared = 0;
        for (name, offer) in real_offers() {
            for policy in [
                SrtpPolicy::Never,
                SrtpPolicy::Optional,
                SrtpPolicy::Required,
            ] {
                let mut sdp = LegSdp::new(3, ip);
                sdp.set_policy(Side::A, policy);
                if sdp.a_offers(offer.clone(), 20002, ip).is_err() {
                    continue;
                }
                for kept in [sdp.a_offer.as_mut(), sdp.b_offer.as_mut()] {
                    let kept = kept.expect("kept");
                    let parsed = kept.get().expect("kept text parses");
                    let first = kept.take().expect("first read");
                    assert_eq!(first, parsed, "{name} ({policy:?}): first read");
                    assert!(kept.first.is_none(), "{name}: taken once");
                    assert_eq!(kept.take(), Some(parsed), "{name}: later reads parse");
                    compared += 1;
                }
            }
        }
        // The offerless INVITE: the forks get our template.
        let mut sdp = LegSdp::new(3, ip);
        sdp.offerless(20002, ip);
        let kept = sdp.b_offer.as_mut().expect("kept");
        let parsed = kept.get().expect("kept text parses");
        assert_eq!(kept.take(), Some(parsed));
        assert!(compared >= 20, "only {compared} descriptions compared");
    }

    /// A call read through the first-read path offers B and answers A exactly what reading
    /// the kept texts gives (the old path): the same bodies, the same relay legs.
    #[test]
    fn a_call_without_the_first_read_is_the_same_call() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let mut calls = 0;
        // The same keys in both runs (a new LegSdp draws its own).
        let keys = LegSdp::new(5, ip).local;
        for (name, offer) in real_offers() {
            let run = |drop_first: bool| {
                let relay = Recorder::default();
                let mut sdp = LegSdp::new(5, ip);
                sdp.local = keys.clone();
                sdp.a_offers(offer.clone(), 20002, ip).ok()?;
                if drop_first {
                    for k in [sdp.a_offer.as_mut(), sdp.b_offer.as_mut()]
                        .into_iter()
                        .flatten()
                    {
                        k.first = None;
                    }
                }
                let to_b = sdp.offer_for_b(SrtpPolicy::default())?;
                let for_a = sdp.b_answers(
                    &phone_sdp(6000, true),
                    20000,
                    Some(&relay),
                    SrtpPolicy::default(),
                );
                let legs = relay.0.lock().unwrap().clone();
                Some((to_b.encode(), for_a.map(|s| s.encode()), legs))
            };
            let new = run(false);
            assert_eq!(new, run(true), "{name}");
            calls += usize::from(new.is_some());
        }
        assert!(calls >= 10, "only {calls} calls compared");
    }

    #[test]
    fn rtcp_mux_offered_to_b_and_accepted_for_a() {
        // Both multiplex: B is offered it (with its RTCP port still named), A's answer takes
        // it and names no separate RTCP port, both relay legs multiplex.
        let (_, relay, to_b, for_a) = set_up(true, true);
        assert!(audio_mux(&to_b));
        assert_eq!(
            to_b.audio()
                .and_then(|m| m.attribute("rtcp"))
                .and_then(|a| a.value.clone()),
            Some("20003".into())
        );
        assert!(audio_mux(&for_a));
        assert!(for_a.audio().and_then(|m| m.attribute("rtcp")).is_none());
        assert_eq!(relay.mux(), (true, true));

        // A phone that does not offer it is still offered nothing it did not ask for in its
        // answer, while pasarela offers it to B on its own.
        let (_, relay, to_b, for_a) = set_up(false, true);
        assert!(audio_mux(&to_b));
        assert!(
            !audio_mux(&for_a),
            "B's a=rtcp-mux must not reach A's answer"
        );
        assert_eq!(relay.mux(), (false, true));

        // B drops it in its answer: B gets RTCP on its separate port, A still multiplexes.
        let (_, relay, _, for_a) = set_up(true, false);
        assert!(audio_mux(&for_a));
        assert_eq!(relay.mux(), (true, false));
    }

    #[test]
    fn rtcp_mux_offerless_invite() {
        // No offer from A: pasarela's own offers (to B, then to A in the 2xx) offer it.
        let ip = IpAddr::from([127, 0, 0, 1]);
        let relay = Recorder::default();
        let mut sdp = LegSdp::new(1, ip);
        sdp.offerless(20002, ip);
        let to_b = sdp.offer_for_b(SrtpPolicy::default()).expect("offer for B");
        assert!(audio_mux(&to_b));
        let to_a = sdp
            .b_answers(
                &phone_sdp(6000, true),
                20000,
                Some(&relay),
                SrtpPolicy::default(),
            )
            .expect("offer for A");
        assert!(audio_mux(&to_a));
        sdp.a_answers_in_ack(&phone_sdp(4000, false), Some(&relay));
        assert_eq!(relay.mux(), (false, true));
    }

    #[test]
    fn rtcp_mux_kept_in_re_invites() {
        let (mut sdp, relay, _, _) = set_up(true, true);
        // A re-INVITEs (still with mux): B is offered mux again, A's answer keeps it.
        let re = phone_sdp(4100, true);
        let to_b = sdp
            .offer_to(Side::B, &re, 20002)
            .expect("re-offer")
            .expect("sdp");
        assert!(audio_mux(&to_b));
        let for_a = sdp
            .answered(Side::A, &re, &phone_sdp(6000, true), 20000, Some(&relay))
            .expect("answer");
        assert!(audio_mux(&for_a));
        assert_eq!(relay.mux(), (true, true));
        // Offers pasarela makes on its own in the call (re-INVITE without SDP, after a
        // transfer) offer it too.
        let again = sdp.current_for(Side::A, 20000).expect("current");
        assert!(audio_mux(&again));
        let fresh = sdp.fresh_offer_for(Side::B, 20002).expect("fresh");
        assert!(audio_mux(&fresh));
        // B answers a later offer without it: the leg stops multiplexing (its RTCP goes to
        // the separate port), A is unaffected.
        let to_b = sdp
            .offer_to(Side::B, &re, 20002)
            .expect("re-offer")
            .expect("sdp");
        assert!(audio_mux(&to_b));
        sdp.answered(Side::A, &re, &phone_sdp(6000, false), 20000, Some(&relay))
            .expect("answer");
        assert_eq!(relay.mux(), (true, false));
    }

    #[test]
    fn info_digits_and_hook_flashes() {
        let digit = info("application/dtmf-relay", "Signal=5\r\nDuration=200\r\n");
        assert_eq!(dtmf_from_info(&digit), Some(('5', 200)));
        for flash in [
            info("application/dtmf-relay", "Signal=!\r\nDuration=500\r\n"),
            info("application/dtmf-relay", "Signal=hf\r\n"),
        ] {
            assert_eq!(dtmf_from_info(&flash).map(|(d, _)| d), Some('!'));
        }
        assert_eq!(
            dtmf_from_info(&info("application/hook-flash", "signal=hf\r\n")),
            Some(('!', 160))
        );
        assert_eq!(
            dtmf_from_info(&info("application/hook-flash", "nothing\r\n")),
            None
        );
        assert_eq!(
            dtmf_from_info(&info("application/dtmf-relay", "Signal=x\r\n")),
            None
        );
    }
}
