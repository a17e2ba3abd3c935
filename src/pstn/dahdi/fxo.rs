//! The FXO line machine, sans-IO: one analog line as the gateway's side of a loop-start
//! telephone line. Its clock is the card's: every 20 ms audio frame read from the channel
//! advances time by 20 ms ([`FxoLine::audio_in`]); signalling events ([`FxoLine::event`]) and
//! commands ([`FxoLine::dial`], [`FxoLine::answer`], [`FxoLine::hangup`]) come in between.
//! What the driver must do comes out of [`FxoLine::poll`]; while dialling, the outgoing audio
//! is the machine's DTMF ([`FxoLine::audio_out`]).
//!
//! Outgoing: seize (off-hook) → wait for dial tone (detected; [`FxoSettings::dial_tone_ms`]
//! without one ends the call with Q.850 34, so the next line is tried) → dial the digits as
//! DTMF → early media (the caller hears the line's progress tones) → busy (17 → 486) or
//! congestion (34 → 503) tones end the attempt; the answer is taken from a polarity reversal
//! where the line gives one, otherwise per [`AnswerDetect`]: at dialling end (fast, but the
//! call is billed and "answered" even when nobody picks up) or on voice energy (accurate for
//! people, but late by the first word and fooled by announcements).
//!
//! Incoming: ring begin/end events; the caller ID the exchange sends between the first and
//! the second ring (or before the first, after a polarity reversal) is decoded as V.23 or
//! Bell 202 FSK or DTMF per [`CidMode`]; the call is announced as soon as the caller is
//! decoded (at the first ring when it came before it, or caller ID is off), or at the second
//! ring without caller ID. No ring for
//! [`FxoSettings::ring_gone_ms`] means the caller gave up.
//!
//! Disconnect supervision while connected, whichever the line gives: battery drop, polarity
//! reversal, busy/congestion tone, silence for [`Disconnect::silence_ms`].

use super::channel::{ChannelEvent, Hook};
use crate::pstn::audio::Frame;
use crate::pstn::dsp::callerid::{self, Caller};
use crate::pstn::dsp::dtmf::{DtmfDetector, DtmfEvent, DtmfGenerator};
use crate::pstn::dsp::fsk::{FskReceiver, FskStandard};
use crate::pstn::dsp::tones::{Country, ToneDetector, ToneEvent, ToneKind};
use crate::pstn::{CallProgress, EndCause, EndReason, LineError};
use std::collections::VecDeque;

/// Which caller ID the exchange sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CidMode {
    /// None expected: announce calls at the first ring.
    Off,
    /// ETSI FSK (V.23), most of Europe.
    V23,
    /// Bell 202 FSK (North America).
    Bell202,
    /// DTMF caller ID (Denmark, Netherlands, Sweden, Finland, Belgium …).
    Dtmf,
    /// Listen for all three.
    Auto,
}

/// How an outgoing call's answer is recognised when the line gives no polarity reversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerDetect {
    /// Only by polarity reversal (lines that provide it).
    Polarity,
    /// As soon as the digits are dialled (every call counts as answered).
    Dialled,
    /// When voice is heard on the line (polarity reversal still counts).
    Voice,
}

/// Which far-end clear signals end a connected call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnect {
    /// Loop current / battery drop.
    pub battery: bool,
    /// A polarity reversal after the answer.
    pub polarity: bool,
    /// The busy or congestion tone the exchange plays after the far end hung up.
    pub tone: bool,
    /// Silence this long (ms; 0: never).
    pub silence_ms: u32,
}

/// The line's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct FxoSettings {
    /// The line's name (for messages).
    pub name: String,
    /// Tone plan.
    pub country: &'static Country,
    /// Caller ID.
    pub cid: CidMode,
    /// Answer detection.
    pub answer: AnswerDetect,
    /// Disconnect supervision.
    pub disconnect: Disconnect,
    /// How long to wait for dial tone after seizing.
    pub dial_tone_ms: u32,
    /// How long an outgoing call may ring unanswered.
    pub no_answer_ms: u32,
    /// An incoming call whose ringing stops for this long was abandoned.
    pub ring_gone_ms: u32,
    /// DTMF tone and pause lengths when dialling.
    pub dtmf_on_ms: u32,
    /// See `dtmf_on_ms`.
    pub dtmf_off_ms: u32,
}

impl FxoSettings {
    /// Defaults for a line in `country`.
    pub fn new(name: &str, country: &'static Country) -> FxoSettings {
        FxoSettings {
            name: name.to_string(),
            country,
            cid: CidMode::Auto,
            answer: AnswerDetect::Voice,
            disconnect: Disconnect {
                battery: true,
                polarity: true,
                tone: true,
                silence_ms: 0,
            },
            dial_tone_ms: 3000,
            no_answer_ms: 60_000,
            ring_gone_ms: 8000,
            dtmf_on_ms: 80,
            dtmf_off_ms: 80,
        }
    }
}

/// What the line is doing (for the dashboard, API and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FxoState {
    /// On hook, no call.
    OnHook,
    /// Off hook, waiting for dial tone.
    WaitDialTone,
    /// Sending the digits.
    Dialling,
    /// Dialled; the far end has not answered.
    Alerting,
    /// An incoming call rings.
    Ringing,
    /// Connected.
    InCall,
    /// The line is in alarm (no battery, card fault).
    Alarm,
}

/// What the driver must do or report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FxoOutput {
    /// Change the hook state on the channel.
    Hook(Hook),
    /// Progress of the current call (both directions; `Ended` closes it).
    Progress(CallProgress),
    /// A call arrives, from this caller.
    Incoming(Caller),
    /// A DTMF digit heard on the line during a call (send as RFC 4733).
    Dtmf(DtmfEvent),
    /// The line went into alarm (true: no battery, card fault, channel removed) or out of
    /// it (false).
    Alarm(bool),
}

#[derive(Debug)]
enum State {
    OnHook,
    WaitDialTone {
        since: u64,
        gen: Box<DtmfGenerator>,
    },
    Dialling {
        gen: Box<DtmfGenerator>,
    },
    Alerting {
        since: u64,
    },
    Ringing(Box<Incoming>),
    /// An incoming call that nobody answered here (the phones refused it): the exchange
    /// keeps ringing until its caller gives up; those rings are not a new call.
    Declined {
        last_ring: u64,
    },
    InCall {
        /// Answered by a polarity reversal (a second one is the far end clearing).
        #[allow(dead_code)]
        by_polarity: bool,
    },
    Alarm,
}

#[derive(Debug)]
struct Incoming {
    rings: u32,
    ring_on: bool,
    last_ring: u64,
    announced: bool,
    caller: Option<Caller>,
}

/// Caller-ID receivers, run while on hook and ringing.
#[derive(Debug)]
struct CidRx {
    v23: Option<FskReceiver>,
    bell: Option<FskReceiver>,
    dtmf: Option<DtmfDetector>,
    bytes: Vec<u8>,
    bell_bytes: Vec<u8>,
    digits: String,
    /// A caller decoded before the first ring (ETSI after a polarity reversal, DTMF CID).
    early: Option<Caller>,
}

impl CidRx {
    fn new(mode: CidMode) -> CidRx {
        let v23 = matches!(mode, CidMode::V23 | CidMode::Auto);
        let bell = matches!(mode, CidMode::Bell202 | CidMode::Auto);
        let dtmf = matches!(mode, CidMode::Dtmf | CidMode::Auto);
        CidRx {
            v23: v23.then(|| FskReceiver::new(FskStandard::V23)),
            bell: bell.then(|| FskReceiver::new(FskStandard::Bell202)),
            dtmf: dtmf.then(DtmfDetector::new),
            bytes: Vec::new(),
            bell_bytes: Vec::new(),
            digits: String::new(),
            early: None,
        }
    }

    fn push(&mut self, frame: &Frame) -> Option<Caller> {
        // Each FSK receiver has its own byte buffer: their tones are close enough that both
        // decode something from either standard, and only a valid checksum counts.
        let fsk = |rx: &mut Option<FskReceiver>, bytes: &mut Vec<u8>| -> Option<Caller> {
            let rx = rx.as_mut()?;
            let before = bytes.len();
            rx.push(frame, |b| {
                if bytes.len() < 512 {
                    bytes.push(b)
                }
            });
            if bytes.len() != before {
                return callerid::find_message(bytes);
            }
            None
        };
        if let Some(c) = fsk(&mut self.v23, &mut self.bytes) {
            return Some(c);
        }
        if let Some(c) = fsk(&mut self.bell, &mut self.bell_bytes) {
            return Some(c);
        }
        if let Some(d) = self.dtmf.as_mut() {
            let digits = &mut self.digits;
            d.push(frame, |e| {
                if let DtmfEvent::Start { digit, .. } = e {
                    if digits.len() < 40 {
                        digits.push(digit)
                    }
                }
            });
            if self.digits.ends_with(['C', '#']) {
                return callerid::parse_dtmf(&self.digits);
            }
        }
        None
    }

    /// At the first ring: a caller already decoded, or DTMF digits sent before it.
    fn finish_if_complete(&mut self) -> Option<Caller> {
        self.early.take().or_else(|| self.finish())
    }

    /// The caller from DTMF digits that ended without a terminator.
    fn finish(&self) -> Option<Caller> {
        if self.digits.is_empty() {
            return None;
        }
        callerid::parse_dtmf(&self.digits)
    }
}

/// One FXO line.
#[derive(Debug)]
pub struct FxoLine {
    cfg: FxoSettings,
    state: State,
    now: u64,
    tones: ToneDetector,
    dtmf: DtmfDetector,
    cid: CidRx,
    out: VecDeque<FxoOutput>,
}

impl FxoLine {
    /// A line on hook.
    pub fn new(cfg: FxoSettings) -> FxoLine {
        FxoLine {
            tones: ToneDetector::new(cfg.country),
            dtmf: DtmfDetector::new(),
            cid: CidRx::new(cfg.cid),
            state: State::OnHook,
            now: 0,
            out: VecDeque::new(),
            cfg,
        }
    }

    /// The settings.
    pub fn settings(&self) -> &FxoSettings {
        &self.cfg
    }

    /// Milliseconds of card clock since the line started.
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// What the line is doing.
    pub fn state(&self) -> FxoState {
        match self.state {
            State::OnHook => FxoState::OnHook,
            State::WaitDialTone { .. } => FxoState::WaitDialTone,
            State::Dialling { .. } => FxoState::Dialling,
            State::Alerting { .. } => FxoState::Alerting,
            State::Ringing(_) | State::Declined { .. } => FxoState::Ringing,
            State::InCall { .. } => FxoState::InCall,
            State::Alarm => FxoState::Alarm,
        }
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<FxoOutput> {
        self.out.pop_front()
    }

    /// Places a call to `number` (digits, `*`, `#`, `A`–`D`).
    pub fn dial(&mut self, number: &str) -> Result<(), LineError> {
        match self.state {
            State::OnHook => {}
            State::Alarm => return Err(LineError::NotReady(self.cfg.name.clone())),
            _ => return Err(LineError::Busy(self.cfg.name.clone())),
        }
        let n = number.trim_start_matches('+');
        if n.is_empty()
            || !n
                .chars()
                .all(|c| crate::pstn::dsp::dtmf::frequencies(c).is_some())
        {
            return Err(LineError::BadNumber(number.to_string()));
        }
        self.tones = ToneDetector::new(self.cfg.country);
        let gen = Box::new(DtmfGenerator::new(
            n,
            self.cfg.dtmf_on_ms,
            self.cfg.dtmf_off_ms,
        ));
        self.state = State::WaitDialTone {
            since: self.now,
            gen,
        };
        self.out.push_back(FxoOutput::Hook(Hook::Off));
        self.out
            .push_back(FxoOutput::Progress(CallProgress::Proceeding));
        Ok(())
    }

    /// Answers the ringing incoming call.
    pub fn answer(&mut self) -> Result<(), LineError> {
        match self.state {
            State::Ringing(_) => {
                self.state = State::InCall { by_polarity: false };
                self.connected();
                self.out.push_back(FxoOutput::Hook(Hook::Off));
                self.out
                    .push_back(FxoOutput::Progress(CallProgress::Answered));
                Ok(())
            }
            _ => Err(LineError::NoCall),
        }
    }

    /// Ends the current call from our side (CANCEL, BYE, or nobody answered).
    pub fn hangup(&mut self) -> Result<(), LineError> {
        let answered = matches!(self.state, State::InCall { .. });
        match &self.state {
            State::OnHook | State::Alarm | State::Declined { .. } => Err(LineError::NoCall),
            State::Ringing(inc) => {
                // Nobody answered: the line keeps ringing at the exchange; stop announcing it
                // and let its remaining rings pass (`ring_gone_ms` after the last one, the
                // line is free for a new call).
                let last_ring = inc.last_ring;
                self.end(EndCause::from_reason(EndReason::LocalHangup, false), false);
                self.state = State::Declined { last_ring };
                Ok(())
            }
            _ => {
                self.end(
                    EndCause::from_reason(EndReason::LocalHangup, answered),
                    true,
                );
                Ok(())
            }
        }
    }

    /// A hook flash during a connected call (the exchange's "recall"/R key: consultation
    /// hold, call transfer, call waiting on lines that offer them).
    pub fn flash(&mut self) -> Result<(), LineError> {
        match self.state {
            State::InCall { .. } => {
                self.out.push_back(FxoOutput::Hook(Hook::Flash));
                Ok(())
            }
            _ => Err(LineError::NoCall),
        }
    }

    /// Audio to send to the line now: while dialling, the DTMF digits (returns true: `frame`
    /// holds them); otherwise false and the driver sends the call's audio (or silence).
    pub fn audio_out(&mut self, frame: &mut Frame) -> bool {
        let State::Dialling { gen } = &mut self.state else {
            return false;
        };
        gen.fill(frame);
        if gen.done() {
            self.state = State::Alerting { since: self.now };
            self.out
                .push_back(FxoOutput::Progress(CallProgress::EarlyMedia));
            if self.cfg.answer == AnswerDetect::Dialled {
                self.answered(false);
            }
        }
        true
    }

    /// A signalling event from the channel.
    pub fn event(&mut self, ev: ChannelEvent) {
        match ev {
            ChannelEvent::Alarm | ChannelEvent::Removed => {
                if matches!(self.state, State::Alarm) {
                    return;
                }
                if !matches!(self.state, State::OnHook | State::Declined { .. }) {
                    // "Network out of order": the call cannot go on.
                    let answered = matches!(self.state, State::InCall { .. });
                    self.end(EndCause::from_q850(38, answered), true);
                }
                self.state = State::Alarm;
                self.out.push_back(FxoOutput::Alarm(true));
            }
            ChannelEvent::NoAlarm => {
                if matches!(self.state, State::Alarm) {
                    self.state = State::OnHook;
                    self.cid = CidRx::new(self.cfg.cid);
                    self.out.push_back(FxoOutput::Alarm(false));
                }
            }
            ChannelEvent::RingBegin => self.ring(true),
            ChannelEvent::RingEnd => self.ring(false),
            ChannelEvent::Polarity => match self.state {
                State::Alerting { .. } | State::Dialling { .. } => self.answered(true),
                State::InCall { .. } if self.cfg.disconnect.polarity => self.far_end_clear(),
                _ => {}
            },
            ChannelEvent::BatteryDrop => match self.state {
                State::InCall { .. } if self.cfg.disconnect.battery => self.far_end_clear(),
                State::Alerting { .. } | State::WaitDialTone { .. } | State::Dialling { .. } => {
                    self.end(EndCause::from_q850(41, false), true)
                }
                _ => {}
            },
            ChannelEvent::HookComplete | ChannelEvent::Other(_) => {}
        }
    }

    /// One 20 ms frame of audio from the line: advances the clock and runs the detectors.
    pub fn audio_in(&mut self, frame: &Frame) {
        self.now += 20;
        let mut tone = None;
        match self.state {
            State::OnHook | State::Ringing(_) => {
                if let Some(c) = self.cid.push(frame) {
                    self.caller_found(c);
                }
            }
            State::Alarm | State::Declined { .. } => {}
            _ => {
                self.tones.push(frame, |ToneEvent::Tone(k)| tone = Some(k));
            }
        }
        if let State::InCall { .. } = self.state {
            let out = &mut self.out;
            self.dtmf.push(frame, |e| out.push_back(FxoOutput::Dtmf(e)));
        }
        self.tick(tone);
    }

    fn tick(&mut self, tone: Option<ToneKind>) {
        let now = self.now;
        match &mut self.state {
            State::WaitDialTone { since, .. } => {
                if tone == Some(ToneKind::Dial) {
                    if let State::WaitDialTone { gen, .. } =
                        std::mem::replace(&mut self.state, State::OnHook)
                    {
                        self.state = State::Dialling { gen };
                    }
                } else if now - *since >= u64::from(self.cfg.dial_tone_ms) {
                    // No dial tone: "no circuit available", the next line may be tried.
                    self.end(EndCause::from_q850(34, false), true);
                }
            }
            State::Alerting { since } => {
                let since = *since;
                match tone {
                    Some(ToneKind::Busy) => self.end(EndCause::from_q850(17, false), true),
                    Some(ToneKind::Congestion) => self.end(EndCause::from_q850(34, false), true),
                    Some(ToneKind::Ringback) => self
                        .out
                        .push_back(FxoOutput::Progress(CallProgress::Ringing)),
                    _ => {
                        if self.cfg.answer == AnswerDetect::Voice && self.tones.voice_ms() >= 600 {
                            self.answered(false);
                        } else if now - since >= u64::from(self.cfg.no_answer_ms) {
                            self.end(EndCause::from_q850(19, false), true);
                        }
                    }
                }
            }
            State::InCall { .. } => {
                let d = self.cfg.disconnect;
                let clear_tone =
                    d.tone && matches!(tone, Some(ToneKind::Busy | ToneKind::Congestion));
                let silent = d.silence_ms > 0 && self.tones.silence_ms() >= d.silence_ms;
                if clear_tone || silent {
                    self.far_end_clear();
                }
            }
            State::Ringing(inc) => {
                if !inc.ring_on && now - inc.last_ring >= u64::from(self.cfg.ring_gone_ms) {
                    let announced = inc.announced;
                    self.state = State::OnHook;
                    self.cid = CidRx::new(self.cfg.cid);
                    if announced {
                        self.out.push_back(FxoOutput::Progress(CallProgress::Ended(
                            EndCause::from_reason(EndReason::CallerGaveUp, false),
                        )));
                    }
                }
            }
            State::Declined { last_ring } => {
                if now - *last_ring >= u64::from(self.cfg.ring_gone_ms) {
                    self.state = State::OnHook;
                    self.cid = CidRx::new(self.cfg.cid);
                }
            }
            State::OnHook | State::Dialling { .. } | State::Alarm => {}
        }
    }

    fn ring(&mut self, on: bool) {
        let now = self.now;
        match &mut self.state {
            State::OnHook if on => {
                let caller = self.cid.finish_if_complete();
                self.state = State::Ringing(Box::new(Incoming {
                    rings: 1,
                    ring_on: true,
                    last_ring: now,
                    announced: false,
                    caller,
                }));
                self.maybe_announce();
            }
            State::Ringing(inc) => {
                inc.last_ring = now;
                if on && !inc.ring_on {
                    inc.rings += 1;
                }
                inc.ring_on = on;
                if on {
                    if inc.caller.is_none() {
                        inc.caller = self.cid.finish();
                    }
                    self.maybe_announce();
                }
            }
            State::Declined { last_ring } => *last_ring = now,
            _ => {}
        }
    }

    fn caller_found(&mut self, c: Caller) {
        match &mut self.state {
            State::Ringing(inc) if inc.caller.is_none() => {
                // Announced now: the phones need not wait for the second ring.
                inc.caller = Some(c);
                self.maybe_announce();
            }
            State::OnHook => self.cid.early = Some(c),
            _ => {}
        }
    }

    fn maybe_announce(&mut self) {
        let cid_off = self.cfg.cid == CidMode::Off;
        if let State::Ringing(inc) = &mut self.state {
            if !inc.announced && (inc.rings >= 2 || inc.caller.is_some() || cid_off) {
                inc.announced = true;
                let caller = inc.caller.clone().unwrap_or_default();
                self.out.push_back(FxoOutput::Incoming(caller));
            }
        }
    }

    fn answered(&mut self, by_polarity: bool) {
        self.state = State::InCall { by_polarity };
        self.connected();
        self.out
            .push_back(FxoOutput::Progress(CallProgress::Answered));
    }

    fn connected(&mut self) {
        self.tones = ToneDetector::new(self.cfg.country);
        self.dtmf = DtmfDetector::new();
    }

    fn far_end_clear(&mut self) {
        self.end(EndCause::from_q850(16, true), true);
    }

    fn end(&mut self, cause: EndCause, hook_on: bool) {
        self.state = State::OnHook;
        self.cid = CidRx::new(self.cfg.cid);
        if hook_on {
            self.out.push_back(FxoOutput::Hook(Hook::On));
        }
        self.out
            .push_back(FxoOutput::Progress(CallProgress::Ended(cause)));
    }
}
