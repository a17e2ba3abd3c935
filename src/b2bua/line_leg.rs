//! Call legs on PSTN lines: what call control asks of a line (dial, hang up) and what a line
//! tells it (its audio address, ringing, early media, answer, a digit, the end with its Q.850
//! cause). Call control stays sans-IO: it queues [`LineCommand`]s that the shell carries out
//! on the `pstn::Line` and feeds back each [`LineEvent`] with the leg it belongs to; no SIP
//! message is exchanged with a line.
//!
//! A line speaks G.711 RTP from a socket of its own ([`LineEvent::Audio`]); towards the relay
//! that leg looks like a SIP callee that answered the relay's offer with one G.711 codec and
//! telephone-event ([`line_answer`]), so the relay, DTMF and the records work as for any leg.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::media::Law;
use crate::sdp::SessionDescription;

/// A fork placed on a PSTN line instead of a SIP destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineTarget {
    /// The line's name.
    pub line: String,
    /// The number to dial, as the line dials it (the route wrote it in the line's format).
    pub number: String,
}

/// One leg on a line: the call and the fork (for calls out) or the caller's leg (calls in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId {
    /// The call.
    pub call: u64,
    /// The fork of the call ([`LegId::INCOMING`]: the line is the caller's leg).
    pub fork: usize,
}

impl LegId {
    /// The fork number of a line that is the caller's leg.
    pub const INCOMING: usize = usize::MAX;
}

/// The codec a line leg speaks, chosen from the relay's offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegCodec {
    /// G.711 law.
    pub law: Law,
    /// Its payload type.
    pub pt: u8,
    /// telephone-event payload type.
    pub dtmf_pt: Option<u8>,
}

/// What call control asks of the lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineCommand {
    /// Place a call on `line` to `number`; its audio goes to and comes from `relay` with
    /// `codec`. The shell answers with [`LineEvent::Audio`] at once, then the progress.
    Dial {
        leg: LegId,
        line: String,
        number: String,
        codec: LegCodec,
        relay: SocketAddr,
    },
    /// Answer the call that arrived on a line (the caller's leg of call `leg.call`); its
    /// audio goes to and comes from `relay`.
    Answer {
        leg: LegId,
        codec: LegCodec,
        relay: SocketAddr,
    },
    /// Send a DTMF digit on the line.
    Digit { leg: LegId, digit: char },
    /// Hang up (or give up dialling, or reject a call that arrived).
    Hangup { leg: LegId },
}

impl LineCommand {
    /// The leg the command is for.
    pub fn leg(&self) -> LegId {
        match self {
            LineCommand::Dial { leg, .. }
            | LineCommand::Answer { leg, .. }
            | LineCommand::Digit { leg, .. }
            | LineCommand::Hangup { leg } => *leg,
        }
    }
}

/// What a line tells call control about one of its legs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// The leg's RTP comes from (and goes to) this address.
    Audio(SocketAddr),
    /// The network is setting the call up.
    Proceeding,
    /// The called phone rings.
    Ringing,
    /// Audio flows before the answer.
    EarlyMedia,
    /// Connected.
    Answered,
    /// A digit heard on the line.
    Digit(char),
    /// The line could not take the call: the SIP status for the caller (503 with Q.850 34 for
    /// a line already in use, so that the next line is tried) and why.
    Refused {
        status: u16,
        q850: Option<u16>,
        reason: String,
    },
    /// The call on the line ended: the SIP status for a caller still waiting (>= 300), the
    /// network's Q.850 cause (`None`: the line stopped without one).
    Ended { status: u16, q850: Option<u16> },
}

/// The codec for a line from an offer: its first PCMU or PCMA, and telephone-event.
pub fn choose_codec(offer: &SessionDescription) -> Option<LegCodec> {
    let audio = offer.audio()?;
    let codecs = audio.codecs();
    let dtmf_pt = codecs
        .iter()
        .find(|c| c.is_telephone_event() && c.rate == 8000)
        .map(|c| c.pt);
    codecs.iter().find_map(|c| {
        let law = if c.name.eq_ignore_ascii_case("PCMU") && c.rate == 8000 {
            Law::Ulaw
        } else if c.name.eq_ignore_ascii_case("PCMA") && c.rate == 8000 {
            Law::Alaw
        } else {
            return None;
        };
        Some(LegCodec {
            law,
            pt: c.pt,
            dtmf_pt,
        })
    })
}

/// The SDP a line leg stands for: its RTP address, `codec` and telephone-event, and RTCP
/// multiplexed on the RTP port (RFC 5761). A line sends no RTCP and ignores what it gets (it
/// takes only its codec and telephone-event), so its relay leg needs no RTCP socket: a
/// calling line offers `a=rtcp-mux`, which the relay accepts, and a called line answers it to
/// the relay's offer, which always makes it.
pub fn line_sdp(addr: SocketAddr, codec: LegCodec) -> Option<SessionDescription> {
    let (ip4, ip) = match addr.ip() {
        IpAddr::V4(ip) => ("IP4", ip.to_string()),
        IpAddr::V6(ip) => ("IP6", ip.to_string()),
    };
    let name = match codec.law {
        Law::Ulaw => "PCMU",
        Law::Alaw => "PCMA",
    };
    let mut pts = codec.pt.to_string();
    if let Some(d) = codec.dtmf_pt {
        pts.push_str(&format!(" {d}"));
    }
    let mut s = format!(
        "v=0\r\no=pasarela-line 1 1 IN {ip4} {ip}\r\ns=-\r\nc=IN {ip4} {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP {pts}\r\na=rtpmap:{pt} {name}/8000\r\n",
        port = addr.port(),
        pt = codec.pt,
    );
    if let Some(d) = codec.dtmf_pt {
        s.push_str(&format!(
            "a=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-16\r\n"
        ));
    }
    s.push_str("a=ptime:20\r\na=sendrecv\r\na=rtcp-mux\r\n");
    SessionDescription::parse(&s).ok()
}

/// The offer a line that is the caller makes: PCMU, PCMA and telephone-event at `addr`.
pub fn line_offer(addr: SocketAddr) -> Option<SessionDescription> {
    let mut s = line_sdp(
        addr,
        LegCodec {
            law: Law::Ulaw,
            pt: 0,
            dtmf_pt: Some(101),
        },
    )?;
    let audio = s.audio_mut()?;
    audio.insert_codec(1, &crate::sdp::Codec::new(8, "PCMA", 8000));
    Some(s)
}

/// The answer of a line leg to `offer` (the relay's offer to it): `None` when the offer has
/// no G.711.
pub fn line_answer(
    offer: &SessionDescription,
    addr: SocketAddr,
) -> Option<(SessionDescription, LegCodec)> {
    let codec = choose_codec(offer)?;
    Some((line_sdp(addr, codec)?, codec))
}

/// An address that receives nothing, for a line leg whose audio is not known yet.
pub const NO_AUDIO: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_answers_the_first_g711_with_telephone_event() {
        let offer = SessionDescription::parse(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        )
        .expect("sdp");
        let addr: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let (answer, codec) = line_answer(&offer, addr).expect("answer");
        assert_eq!(
            (codec.law, codec.pt, codec.dtmf_pt),
            (Law::Alaw, 8, Some(101))
        );
        let audio = answer.audio().expect("audio");
        assert_eq!(audio.remote_addr(&answer), Some(addr));
        let names: Vec<String> = audio.codecs().iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["PCMA", "telephone-event"]);
        // RTCP shares the RTP port: the relay closes that leg's RTCP socket.
        assert!(audio.rtcp_mux());
    }

    #[test]
    fn a_calling_line_offers_rtcp_multiplexing() {
        let addr: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let offer = line_offer(addr).expect("offer");
        assert!(offer.audio().expect("audio").rtcp_mux());
        // What call control reads to bind no RTCP socket for the caller's leg.
        assert!(crate::sdp::body_offers_rtcp_mux(
            offer.to_string().as_bytes()
        ));
    }

    #[test]
    fn no_g711_no_line() {
        let offer = SessionDescription::parse(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9\r\n",
        )
        .expect("sdp");
        assert!(line_answer(&offer, NO_AUDIO).is_none());
    }
}
