//! The `Line` abstraction: what the gateway needs of any line to the telephone network (a GSM
//! modem today, an analog FXO port of a telephony card next), independent of how the line
//! talks to its hardware.
//!
//! A [`Line`] places calls ([`Line::dial`]), announces the calls that arrive on it
//! ([`Line::take_incoming`]) and reports its state ([`Line::status`]). Each call on it is a
//! [`LineCall`]: a stream of [`CallProgress`] events (ringing, early media, answer, a DTMF digit
//! heard on the line, and the end with its Q.850 cause in [`EndCause`]), and the commands the
//! call side may give: answer, hang up, send a digit, and attach the call's audio to an
//! [`AudioEndpoint`] (G.711 RTP on a UDP socket; the line converts to and from its own audio).
//!
//! Contract for implementations:
//! - methods never block: they return futures that end when the line has taken the command
//!   (not when the network has acted on it; that is reported as progress);
//! - every call gets exactly one `CallProgress::Ended` and then `next_event` gives `None`;
//! - dropping a [`LineCall`] that has not ended hangs it up;
//! - a line that already has a call refuses a new one with [`LineError::Busy`] (the caller's
//!   leg then tries the next line: Q.850 34, "no circuit available", SIP 503), which is not
//!   the callee being busy (`Ended` with Q.850 17, SIP 486).

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::gsm::LineSms;
use super::{CallId, CallProgress, IncomingCall, LineError, LineStatus};
use crate::media::Law;

/// A future returned by a line or call command.
pub type LineFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The SIP side's codec for a call's RTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpCodec {
    /// G.711 law.
    pub law: Law,
    /// Its payload type.
    pub pt: u8,
    /// telephone-event payload type, if negotiated.
    pub dtmf_pt: Option<u8>,
}

impl RtpCodec {
    /// PCMU/8000 on 0, telephone-event on 101.
    pub const PCMU: RtpCodec = RtpCodec {
        law: Law::Ulaw,
        pt: 0,
        dtmf_pt: Some(101),
    };
    /// PCMA/8000 on 8, telephone-event on 101.
    pub const PCMA: RtpCodec = RtpCodec {
        law: Law::Alaw,
        pt: 8,
        dtmf_pt: Some(101),
    };
}

/// Where a call's audio goes: the socket the line sends RTP from and receives it on, the peer
/// (`None`: the first packet received sets it — symmetric RTP), and the codec. RFC 4733
/// events received there are sent to the network as DTMF.
#[derive(Debug)]
pub struct AudioEndpoint {
    /// Bound UDP socket (the call leg's media port).
    pub socket: UdpSocket,
    /// Where to send.
    pub remote: Option<SocketAddr>,
    /// Codec.
    pub codec: RtpCodec,
}

/// A call arriving on a line, with its handle.
#[derive(Debug)]
pub struct IncomingLineCall {
    /// Who calls, on which line.
    pub info: IncomingCall,
    /// The call (ringing until [`LineCall::answer`]).
    pub call: Box<dyn LineCall>,
}

/// A line to the telephone network.
pub trait Line: Send + Sync {
    /// The line's configured name (unique among the lines; what routes name).
    fn name(&self) -> &str;

    /// What kind of line it is, for people (`GSM modem`, `analog FXO`).
    fn kind(&self) -> &'static str;

    /// The current status snapshot.
    fn status(&self) -> LineStatus;

    /// A receiver that sees every status change.
    fn watch_status(&self) -> watch::Receiver<LineStatus>;

    /// Places a call to `number` (E.164 with `+`, or a short/emergency number as dialled).
    /// Refused at once when the line is not in service, already has a call, or cannot dial the
    /// number.
    fn dial<'a>(&'a self, number: &'a str) -> LineFuture<'a, Result<Box<dyn LineCall>, LineError>>;

    /// The receiver of the line's incoming calls (once; later calls get `None`). Until it is
    /// taken, and after it is dropped, the line rejects incoming calls.
    fn take_incoming(&self) -> Option<mpsc::Receiver<IncomingLineCall>>;

    /// Stops the line (hangs up a call in progress, releases the hardware).
    fn shutdown(&self) -> LineFuture<'_, ()>;

    /// The receiver of the line's text message and USSD events (once), for lines that carry
    /// them (GSM modems); other lines have none.
    fn take_sms(&self) -> Option<mpsc::UnboundedReceiver<LineSms>> {
        None
    }

    /// Deletes the message stored at `index` in the line's message storage.
    fn delete_sms(&self, _index: u32) -> LineFuture<'_, Result<(), LineError>> {
        let name = self.name().to_owned();
        Box::pin(async move { Err(LineError::Unsupported(name, "text messages")) })
    }

    /// Sends one SMS-SUBMIT PDU (`hex`, with the TPDU's length); the outcome arrives as an
    /// event tagged `id`.
    fn send_sms(
        &self,
        _id: u64,
        _hex: String,
        _tpdu_len: usize,
    ) -> LineFuture<'_, Result<(), LineError>> {
        let name = self.name().to_owned();
        Box::pin(async move { Err(LineError::Unsupported(name, "text messages")) })
    }

    /// Acknowledges (`AT+CNMA`) the message or status report the line handed over directly
    /// (`+CMT`/`+CDS`), once it is stored.
    fn ack_sms(&self) -> LineFuture<'_, Result<(), LineError>> {
        let name = self.name().to_owned();
        Box::pin(async move { Err(LineError::Unsupported(name, "text messages")) })
    }

    /// Sends a USSD code (`*100#`); the answer arrives as an event.
    fn ussd<'a>(&'a self, _code: &'a str) -> LineFuture<'a, Result<(), LineError>> {
        let name = self.name().to_owned();
        Box::pin(async move { Err(LineError::Unsupported(name, "USSD")) })
    }
}

/// One call on a [`Line`]. Dropping it before it ended hangs it up.
pub trait LineCall: Send + Sync + Debug {
    /// The call's id on its line.
    fn id(&self) -> CallId;

    /// The line's name.
    fn line(&self) -> &str;

    /// The next progress event; `None` after `Ended` (or when the line stopped).
    fn next_event(&mut self) -> LineFuture<'_, Option<CallProgress>>;

    /// Answers an incoming call (`Answered` follows).
    fn answer(&self) -> LineFuture<'_, Result<(), LineError>>;

    /// Hangs up, or rejects an incoming call (`Ended` follows).
    fn hangup(&self) -> LineFuture<'_, Result<(), LineError>>;

    /// Sends a DTMF digit (`0-9 * # A-D`) to the network side.
    fn send_digit(&self, digit: char) -> LineFuture<'_, Result<(), LineError>>;

    /// Connects the call's audio to `audio` (at any time; audio flows once the line has it).
    fn attach_audio(&self, audio: AudioEndpoint) -> LineFuture<'_, Result<(), LineError>>;

    /// A hook flash on a connected call (the R key: the exchange's consultation hold,
    /// transfer, call waiting), on lines that have a hook (analog FXO ports).
    fn flash(&self) -> LineFuture<'_, Result<(), LineError>> {
        let name = self.line().to_owned();
        Box::pin(async move { Err(LineError::Unsupported(name, "hook flash")) })
    }
}

impl<T: LineCall + ?Sized> LineCall for Box<T> {
    fn id(&self) -> CallId {
        (**self).id()
    }

    fn line(&self) -> &str {
        (**self).line()
    }

    fn next_event(&mut self) -> LineFuture<'_, Option<CallProgress>> {
        (**self).next_event()
    }

    fn answer(&self) -> LineFuture<'_, Result<(), LineError>> {
        (**self).answer()
    }

    fn hangup(&self) -> LineFuture<'_, Result<(), LineError>> {
        (**self).hangup()
    }

    fn send_digit(&self, digit: char) -> LineFuture<'_, Result<(), LineError>> {
        (**self).send_digit(digit)
    }

    fn attach_audio(&self, audio: AudioEndpoint) -> LineFuture<'_, Result<(), LineError>> {
        (**self).attach_audio(audio)
    }

    fn flash(&self) -> LineFuture<'_, Result<(), LineError>> {
        (**self).flash()
    }
}

/// A line that refuses a call because it already has one is not the callee being busy: the
/// caller's leg gets 503 with Q.850 34 ("no circuit/channel available") so that the next
/// line is tried. Other refusals keep their own status ([`LineError::sip_status`]).
pub fn refusal(e: &LineError) -> (u16, Option<u16>) {
    match e {
        LineError::Busy(_) => (503, Some(34)),
        e => (e.sip_status(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_in_use_is_a_missing_circuit_not_a_busy_callee() {
        assert_eq!(refusal(&LineError::Busy("gsm1".into())), (503, Some(34)));
        assert_eq!(refusal(&LineError::NotReady("gsm1".into())), (503, None));
        assert_eq!(refusal(&LineError::BadNumber("x".into())), (484, None));
    }
}
