//! The SDP side of a call: what was offered and answered on each leg, what pasarela sent each
//! phone (its relay address, its own origin line), which codec and DTMF payload type each leg
//! uses, and how the relay is set up from that. Also SIP INFO DTMF bodies.

use std::net::IpAddr;

use crate::media::{Law, LegMedia, Relay, Side};
use crate::sdp::{self, Codec, MediaDescription, OriginState, SessionDescription, G711};
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
) -> LegMedia {
    LegMedia {
        remote: m.remote_addr(sdp),
        codec_pt: codec.pt,
        law: law(codec),
        dtmf_pt: dtmf,
    }
}

/// Per-call SDP state.
pub struct LegSdp {
    media_ip: IpAddr,
    origin: [OriginState; 2],
    /// The caller's latest offer (None for an offerless INVITE).
    a_offer: Option<SessionDescription>,
    /// What the forks are offered.
    b_offer: Option<SessionDescription>,
    /// We offered the caller in our 2xx (offerless INVITE): its answer comes in the ACK.
    awaiting_a_answer: bool,
    /// The last SDP sent to each side.
    last_sent: [Option<SessionDescription>; 2],
    legs: [Option<LegMedia>; 2],
    codec: Option<String>,
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
            last_sent: [None, None],
            legs: [None, None],
            codec: None,
        }
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
             a=rtpmap:{OUR_DTMF_PT} telephone-event/8000\r\na=fmtp:{OUR_DTMF_PT} 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
            ip = self.media_ip
        );
        SessionDescription::parse(&text).ok()
    }

    fn sent(&mut self, side: Side, mut s: SessionDescription, port: u16) -> SessionDescription {
        sdp::rewrite_for_relay(&mut s, self.media_ip, port, &mut self.origin[idx(side)]);
        self.last_sent[idx(side)] = Some(s.clone());
        s
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
        let mut b = offer.clone();
        if let Some(m) = b.audio_mut() {
            sdp::add_transcodable(m);
        }
        let b = self.sent(Side::B, b, port_b);
        self.b_offer = Some(b);
        self.a_offer = Some(offer);
        Ok(())
    }

    /// The caller sent no offer: the forks get ours.
    pub fn offerless(&mut self, port_b: u16, _ip: IpAddr) {
        if let Some(t) = self.template(port_b) {
            let b = self.sent(Side::B, t, port_b);
            self.b_offer = Some(b);
        }
    }

    pub fn offer_for_b(&self) -> Option<SessionDescription> {
        self.b_offer.clone()
    }

    fn update_relay(&mut self, relay: Option<&Relay>) {
        if let (Some(r), Some(a), Some(b)) = (relay, &self.legs[0], &self.legs[1]) {
            r.update(a.clone(), b.clone());
        }
    }

    /// A fork answered (2xx or early 183) with `answer`: the SDP to send the caller.
    pub fn b_answers(
        &mut self,
        answer: &SessionDescription,
        port_a: u16,
        relay: Option<&Relay>,
    ) -> Result<SessionDescription, (u16, String)> {
        let b_audio = answer
            .audio()
            .ok_or((488, "No audio in the callee's answer".to_string()))?;
        match self.a_offer.clone() {
            Some(a_offer) => {
                let a_audio = a_offer
                    .audio()
                    .ok_or((488, "No audio offered".to_string()))?;
                let n = sdp::negotiate(a_audio, b_audio)
                    .map_err(|e| (488, format!("No common codec: {e}")))?;
                let for_a = sdp::answer_for_a(a_audio, answer, &n);
                self.legs[0] = Some(leg(&a_offer, a_audio, &n.a_codec, n.a_dtmf_pt));
                self.legs[1] = Some(leg(answer, b_audio, &n.b_codec, n.b_dtmf_pt));
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
                self.legs[1] = Some(leg(answer, b_audio, &b_codec, dtmf_pt(b_audio)));
                self.codec = Some(b_codec.name.clone());
                self.awaiting_a_answer = true;
                let t = self
                    .template(port_a)
                    .ok_or((500, "Cannot build an offer".to_string()))?;
                Ok(self.sent(Side::A, t, port_a))
            }
        }
    }

    pub fn awaiting_a_answer(&self) -> bool {
        self.awaiting_a_answer
    }

    /// The caller's answer (in its ACK) to the offer we made in the 2xx.
    pub fn a_answers_in_ack(&mut self, answer: &SessionDescription, relay: Option<&Relay>) {
        self.awaiting_a_answer = false;
        self.answer_in_ack(Side::A, answer, relay);
    }

    /// A side answered, in its ACK, an offer we made from our current session.
    pub fn answer_in_ack(
        &mut self,
        side: Side,
        answer: &SessionDescription,
        relay: Option<&Relay>,
    ) {
        let Some(audio) = answer.audio() else { return };
        let Some(codec) = audio
            .codecs()
            .into_iter()
            .find(|c| !c.name.eq_ignore_ascii_case("telephone-event"))
        else {
            return;
        };
        self.legs[idx(side)] = Some(leg(answer, audio, &codec, dtmf_pt(audio)));
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
        let s = self.last_sent[idx(side)].clone()?;
        Some(self.sent(side, s, port))
    }

    /// An offer from the other side, to be forwarded to `to`.
    pub fn offer_to(
        &mut self,
        to: Side,
        offer: &SessionDescription,
        port_to: u16,
    ) -> Option<SessionDescription> {
        let mut s = offer.clone();
        if let Some(m) = s.audio_mut() {
            sdp::add_transcodable(m);
        }
        Some(self.sent(to, s, port_to))
    }

    /// `offerer` offered `offer`; the other side answered `answer`: the answer for the offerer.
    pub fn answered(
        &mut self,
        offerer: Side,
        offer: &SessionDescription,
        answer: &SessionDescription,
        port_offerer: u16,
        relay: Option<&Relay>,
    ) -> Result<SessionDescription, (u16, String)> {
        let o_audio = offer.audio().ok_or((488, "No audio offered".to_string()))?;
        let a_audio = answer
            .audio()
            .ok_or((488, "No audio in the answer".to_string()))?;
        let n =
            sdp::negotiate(o_audio, a_audio).map_err(|e| (488, format!("No common codec: {e}")))?;
        let for_offerer = sdp::answer_for_a(o_audio, answer, &n);
        let answerer = match offerer {
            Side::A => Side::B,
            Side::B => Side::A,
        };
        self.legs[idx(offerer)] = Some(leg(offer, o_audio, &n.a_codec, n.a_dtmf_pt));
        self.legs[idx(answerer)] = Some(leg(answer, a_audio, &n.b_codec, n.b_dtmf_pt));
        if offerer == Side::A {
            self.a_offer = Some(offer.clone());
        }
        self.update_relay(relay);
        Ok(self.sent(offerer, for_offerer, port_offerer))
    }

    pub fn codec_name(&self) -> Option<String> {
        self.codec.clone()
    }
}

/// The digit and duration of a SIP INFO DTMF (application/dtmf-relay or application/dtmf).
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
                    "signal" => digit = v.trim().chars().next().map(|c| c.to_ascii_uppercase()),
                    "duration" => duration = v.trim().parse().unwrap_or(160),
                    _ => {}
                }
            }
            digit
                .filter(|c| valid(*c))
                .map(|d| (d, duration.clamp(40, 5000)))
        }
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
