//! The sans-IO state machine of one modem line: brings the modem up (init commands, identity,
//! SIM, registration), places and takes calls from the AT results and URCs of its profile,
//! keeps the health snapshot up to date with periodic probes, and resets a modem that stops
//! answering (watchdog). The I/O shell ([`super::driver`]) feeds it bytes and time and carries
//! out what it asks (write bytes, start/stop audio, re-open the ports).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::at::result::{params_after, parse_clcc, parse_urc};
use super::at::{AtEngine, AtEvent, ClccEntry, Command, FinalResult, Outcome, Response, Urc};
use super::profile::{EventStyle, Profile};
use crate::pstn::{
    CallId, CallProgress, EndCause, EndReason, LineError, LineState, LineStatus, Registration,
};

/// Timers and thresholds of a line.
#[derive(Debug, Clone, PartialEq)]
pub struct LineConfig {
    /// The line's name (configuration).
    pub name: String,
    /// Time between health probes.
    pub probe_interval: Duration,
    /// How long a probe (or init) command may take.
    pub command_timeout: Duration,
    /// Consecutive unanswered commands before the modem is reset.
    pub max_missed: u32,
    /// How long `ATD` may take to give its result.
    pub dial_timeout: Duration,
    /// Longest set-up of an outgoing call before it is abandoned as unanswered.
    pub setup_timeout: Duration,
    /// How long to wait for `+CLIP` after the first `RING`.
    pub clip_wait: Duration,
    /// An incoming call with no `RING` for this long was given up by the caller.
    pub ring_gap: Duration,
    /// Pause between a reset and re-opening the ports.
    pub reopen_after: Duration,
}

impl LineConfig {
    /// Defaults for a line called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        LineConfig {
            name: name.into(),
            probe_interval: Duration::from_secs(15),
            command_timeout: Duration::from_secs(5),
            max_missed: 3,
            dial_timeout: Duration::from_secs(60),
            setup_timeout: Duration::from_secs(120),
            clip_wait: Duration::from_millis(800),
            ring_gap: Duration::from_secs(12),
            reopen_after: Duration::from_secs(5),
        }
    }
}

/// What the machine asks of its shell, besides bytes to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// Progress of a call.
    Call(CallId, CallProgress),
    /// A call arrives.
    Incoming {
        /// Its id.
        call: CallId,
        /// Caller number as sent by the network.
        number: Option<String>,
        /// Its type of address.
        toa: Option<u8>,
    },
    /// Start moving audio on the audio port for this call.
    AudioStart(CallId),
    /// Stop moving audio.
    AudioStop(CallId),
    /// Write what is pending, close the ports, and open them again (finding the modem by its
    /// identity) after this long; then call [`LineMachine::port_opened`].
    Reopen { after: Duration },
    /// A message or status report read from the modem's storage (at start-up, after a reset,
    /// or announced by `+CMTI`/`+CDSI`). Store it, then [`LineMachine::delete_sms`] it.
    SmsRead { index: u32, pdu: String },
    /// A message or status report handed over without being stored (`+CMT`/`+CDS`, direct
    /// delivery). Store it, then [`LineMachine::ack_sms`] it.
    SmsDirect { pdu: String },
    /// The outcome of [`LineMachine::send_sms`]: the message reference, or why not.
    SmsSent { id: u64, result: Result<u8, String> },
    /// A USSD answer or network-initiated USSD (`+CUSD`), or `status` 4 when the request
    /// failed.
    Ussd {
        status: u8,
        text: Option<String>,
        dcs: Option<u16>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Init,
    Voice,
    Imei,
    Iccid,
    Cpin,
    Creg,
    Cops,
    Csq,
    InitDone,
    Dial(CallId),
    Answer(CallId),
    Hangup(CallId),
    Dtmf,
    Audio,
    Clcc,
    Reset,
    SmsList,
    SmsRead(u32),
    SmsDelete(u32),
    SmsAck,
    SmsSend(u64),
    Ussd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Alerting,
    Active,
}

#[derive(Debug)]
struct Call {
    id: CallId,
    outgoing: bool,
    phase: Phase,
    index: u8,
    dial_ok: bool,
    hangup_requested: bool,
    announced: bool,
    clip_deadline: Option<Instant>,
    last_ring: Instant,
    started: Instant,
    ringing_sent: bool,
    audio: bool,
}

/// The line state machine.
pub struct LineMachine {
    cfg: LineConfig,
    profile: Profile,
    at: AtEngine<Tag>,
    status: LineStatus,
    call: Option<Call>,
    next_call: CallId,
    events: VecDeque<LineEvent>,
    next_probe: Option<Instant>,
    next_clcc: Option<Instant>,
    missed: u32,
    /// Storage indices whose message was handed out and not deleted yet. A modem stores a new
    /// message at the lowest free index, so while an index is held no other message can be
    /// there: a second `+CMTI` or listing of it is the same message, not read (and so not
    /// deleted) again. Without this a late second delete of a reused index would remove a
    /// newer message before it was read.
    held: std::collections::BTreeSet<u32>,
}

impl LineMachine {
    /// A line whose ports are not open yet.
    pub fn new(cfg: LineConfig, profile: Profile) -> Self {
        let status = LineStatus {
            name: cfg.name.clone(),
            profile: profile.name.clone(),
            ..LineStatus::default()
        };
        LineMachine {
            cfg,
            profile,
            at: AtEngine::new(),
            status,
            call: None,
            next_call: 1,
            events: VecDeque::new(),
            next_probe: None,
            next_clcc: None,
            missed: 0,
            held: Default::default(),
        }
    }

    /// The line's profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The current snapshot.
    pub fn status(&self) -> &LineStatus {
        &self.status
    }

    /// The current call, if any.
    pub fn current_call(&self) -> Option<CallId> {
        self.call.as_ref().map(|c| c.id)
    }

    /// The ports are open: (re)initialise the modem.
    pub fn port_opened(&mut self, data_port: &str, audio_port: &str, now: Instant) {
        self.at.reset();
        // Deletes in the queue are gone: what is left on the SIM is listed again.
        self.held.clear();
        self.drain_engine(now);
        self.status.data_port = Some(data_port.to_string());
        self.status.audio_port = Some(audio_port.to_string());
        self.status.state = LineState::Initialising;
        self.status.registration = Registration::Unknown;
        self.missed = 0;
        let t = self.cfg.command_timeout;
        let init: Vec<String> = self.profile.commands.init.clone();
        for cmd in init {
            let tag = if cmd.starts_with("AT^CVOICE") {
                Tag::Voice
            } else {
                Tag::Init
            };
            let timeout = if cmd == "ATZ" { t * 2 } else { t };
            self.at
                .enqueue(Command::new(cmd, tag).timeout(timeout), now);
        }
        let imei = self.profile.commands.imei.clone();
        let iccid = self.profile.commands.iccid.clone();
        self.at
            .enqueue(Command::new(imei, Tag::Imei).timeout(t), now);
        self.at.enqueue(
            Command::new(iccid, Tag::Iccid)
                .timeout(t)
                .expect(self.profile.commands.iccid_prefix.clone()),
            now,
        );
        self.enqueue_probe(now);
        self.at
            .enqueue(Command::new("AT", Tag::InitDone).timeout(t), now);
        self.next_probe = Some(now + self.cfg.probe_interval);
    }

    /// The ports closed (read error, device gone). A call in progress ends.
    pub fn port_closed(&mut self, why: &str, now: Instant) {
        self.at.reset();
        self.drain_engine(now);
        self.end_call(
            EndCause::from_reason(EndReason::ModemLost, self.answered()),
            now,
        );
        if self.status.state != LineState::Resetting {
            self.status.last_error = Some(format!("port closed: {why}"));
        }
        self.status.state = LineState::Down;
        self.next_probe = None;
        self.next_clcc = None;
    }

    /// Places a call.
    pub fn dial(&mut self, number: &str, now: Instant) -> Result<CallId, LineError> {
        if self.call.is_some() {
            return Err(LineError::Busy(self.cfg.name.clone()));
        }
        if self.status.state != LineState::Idle {
            return Err(LineError::NotReady(self.cfg.name.clone()));
        }
        let cmd = self
            .profile
            .dial_command(number)
            .ok_or_else(|| LineError::BadNumber(number.to_string()))?;
        let id = self.new_call(true, now);
        self.status.state = LineState::Dialling;
        self.at.enqueue(
            Command::new(cmd, Tag::Dial(id)).timeout(self.cfg.dial_timeout),
            now,
        );
        Ok(id)
    }

    /// Answers the incoming call.
    pub fn answer(&mut self, call: CallId, now: Instant) -> Result<(), LineError> {
        match &self.call {
            Some(c) if c.id == call && !c.outgoing && c.phase != Phase::Active => {}
            _ => return Err(LineError::NoCall),
        }
        let cmd = self.profile.commands.answer.clone();
        self.at.enqueue(
            Command::new(cmd, Tag::Answer(call)).timeout(self.cfg.command_timeout * 2),
            now,
        );
        Ok(())
    }

    /// Hangs up (or rejects an incoming call).
    pub fn hangup(&mut self, call: CallId, now: Instant) -> Result<(), LineError> {
        match &mut self.call {
            Some(c) if c.id == call => c.hangup_requested = true,
            _ => return Err(LineError::NoCall),
        }
        let cmd = self.profile.commands.hangup.clone();
        self.at.enqueue(
            Command::new(cmd, Tag::Hangup(call)).timeout(self.cfg.command_timeout),
            now,
        );
        Ok(())
    }

    /// Sends a DTMF digit into the call.
    pub fn send_dtmf(&mut self, call: CallId, digit: char, now: Instant) -> Result<(), LineError> {
        let index = match &self.call {
            Some(c) if c.id == call && c.phase == Phase::Active => c.index,
            _ => return Err(LineError::NoCall),
        };
        let cmd = self
            .profile
            .dtmf_command(digit, index)
            .ok_or(LineError::BadDigit(digit))?;
        self.at.enqueue(
            Command::new(cmd, Tag::Dtmf).timeout(self.cfg.command_timeout),
            now,
        );
        Ok(())
    }

    /// Deletes a message from the modem's storage (after it was stored).
    pub fn delete_sms(&mut self, index: u32, now: Instant) {
        let cmd = format!("AT+CMGD={index}");
        if self.at.has_pending(&cmd) {
            return;
        }
        self.at.enqueue(
            Command::new(cmd, Tag::SmsDelete(index)).timeout(self.cfg.command_timeout),
            now,
        );
    }

    /// Acknowledges a message handed over directly (`+CMT`/`+CDS`) once it is stored.
    pub fn ack_sms(&mut self, now: Instant) {
        self.at.enqueue(
            Command::new("AT+CNMA", Tag::SmsAck).timeout(self.cfg.command_timeout),
            now,
        );
    }

    /// Sends one SMS-SUBMIT (`hex` with the SMSC octet in front, `tpdu_len` for `AT+CMGS`);
    /// [`LineEvent::SmsSent`] with `id` tells the outcome.
    pub fn send_sms(
        &mut self,
        id: u64,
        hex: &str,
        tpdu_len: usize,
        now: Instant,
    ) -> Result<(), LineError> {
        if matches!(
            self.status.state,
            LineState::Down | LineState::Resetting | LineState::Initialising
        ) {
            return Err(LineError::NotReady(self.cfg.name.clone()));
        }
        let mut cmd = Command::new(format!("AT+CMGS={tpdu_len}"), Tag::SmsSend(id))
            .timeout(self.cfg.command_timeout * 12)
            .expect("+CMGS:");
        cmd.payload = Some(hex.to_owned());
        self.at.enqueue(cmd, now);
        Ok(())
    }

    /// Sends a USSD code (`*100#`); the answer comes as [`LineEvent::Ussd`].
    pub fn ussd(&mut self, code: &str, now: Instant) -> Result<(), LineError> {
        if matches!(
            self.status.state,
            LineState::Down | LineState::Resetting | LineState::Initialising
        ) {
            return Err(LineError::NotReady(self.cfg.name.clone()));
        }
        let cmd =
            super::sms::ussd_command(code).ok_or_else(|| LineError::BadNumber(code.to_owned()))?;
        self.at.enqueue(
            Command::new(cmd, Tag::Ussd).timeout(self.cfg.command_timeout * 4),
            now,
        );
        Ok(())
    }

    /// Feeds bytes read from the AT port.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        self.at.handle_input(bytes, now);
        self.drain_engine(now);
    }

    /// Bytes to write to the AT port.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.at.poll_transmit()
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<LineEvent> {
        self.events.pop_front()
    }

    /// When [`LineMachine::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.at.poll_timeout();
        let mut consider = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        consider(self.next_probe);
        consider(self.next_clcc);
        if let Some(c) = &self.call {
            consider(c.clip_deadline);
            if !c.outgoing && c.phase != Phase::Active {
                consider(Some(c.last_ring + self.cfg.ring_gap));
            }
            if c.outgoing && c.phase != Phase::Active && !c.hangup_requested {
                consider(Some(c.started + self.cfg.setup_timeout));
            }
        }
        t
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.at.handle_timeout(now);
        self.drain_engine(now);
        if self.next_probe.is_some_and(|p| now >= p) {
            self.next_probe = Some(now + self.cfg.probe_interval);
            if !self.at.has_pending("AT+CSQ") {
                self.enqueue_probe(now);
            }
        }
        if self.next_clcc.is_some_and(|p| now >= p) {
            self.next_clcc = None;
            if self.call.is_some() {
                self.poll_clcc(now);
            }
        }
        let mut announce = None;
        let mut gave_up = false;
        let mut setup_expired = None;
        if let Some(c) = &mut self.call {
            if c.clip_deadline.is_some_and(|d| now >= d) {
                c.clip_deadline = None;
                if !c.announced {
                    c.announced = true;
                    announce = Some(c.id);
                }
            }
            if !c.outgoing && c.phase != Phase::Active && now >= c.last_ring + self.cfg.ring_gap {
                gave_up = true;
            }
            if c.outgoing
                && c.phase != Phase::Active
                && !c.hangup_requested
                && now >= c.started + self.cfg.setup_timeout
            {
                c.hangup_requested = true;
                setup_expired = Some(c.id);
            }
        }
        if let Some(call) = announce {
            self.events.push_back(LineEvent::Incoming {
                call,
                number: None,
                toa: None,
            });
        }
        if gave_up {
            self.end_call(EndCause::from_reason(EndReason::CallerGaveUp, false), now);
        }
        if let Some(id) = setup_expired {
            let cmd = self.profile.commands.hangup.clone();
            self.at.enqueue(
                Command::new(cmd, Tag::Hangup(id)).timeout(self.cfg.command_timeout),
                now,
            );
            self.end_call(EndCause::from_reason(EndReason::NoAnswer, false), now);
        }
    }

    fn enqueue_probe(&mut self, now: Instant) {
        let t = self.cfg.command_timeout;
        self.at.enqueue(
            Command::new("AT+CPIN?", Tag::Cpin)
                .timeout(t)
                .expect("+CPIN:"),
            now,
        );
        self.at.enqueue(
            Command::new("AT+CREG?", Tag::Creg)
                .timeout(t)
                .expect("+CREG:"),
            now,
        );
        self.at
            .enqueue(Command::new("AT+COPS?", Tag::Cops).timeout(t), now);
        self.at
            .enqueue(Command::new("AT+CSQ", Tag::Csq).timeout(t), now);
    }

    fn poll_clcc(&mut self, now: Instant) {
        if !self.at.has_pending("AT+CLCC") {
            self.at.enqueue(
                Command::new("AT+CLCC", Tag::Clcc)
                    .timeout(self.cfg.command_timeout)
                    .expect("+CLCC:"),
                now,
            );
        }
    }

    fn schedule_clcc(&mut self, now: Instant) {
        let ms = self.profile.events.clcc_poll_ms;
        if ms > 0 && self.call.is_some() && self.next_clcc.is_none() {
            self.next_clcc = Some(now + Duration::from_millis(ms));
        }
    }

    fn new_call(&mut self, outgoing: bool, now: Instant) -> CallId {
        let id = self.next_call;
        self.next_call += 1;
        self.call = Some(Call {
            id,
            outgoing,
            phase: Phase::Setup,
            index: 1,
            dial_ok: false,
            hangup_requested: false,
            announced: false,
            clip_deadline: None,
            last_ring: now,
            started: now,
            ringing_sent: false,
            audio: false,
        });
        id
    }

    fn answered(&self) -> bool {
        self.call.as_ref().is_some_and(|c| c.phase == Phase::Active)
    }

    fn drain_engine(&mut self, now: Instant) {
        while let Some(ev) = self.at.poll_event() {
            match ev {
                AtEvent::Response(r) => self.on_response(r, now),
                AtEvent::Urc(u) => self.on_urc(u, now),
            }
        }
    }

    fn on_response(&mut self, r: Response<Tag>, now: Instant) {
        // A message that did not go out is reported before a reset may end this function.
        if let (Tag::SmsSend(id), Outcome::Cancelled | Outcome::Timeout) = (r.tag, &r.outcome) {
            let why = if r.outcome == Outcome::Timeout {
                "no answer from the modem"
            } else {
                "modem reset"
            };
            self.events.push_back(LineEvent::SmsSent {
                id,
                result: Err(why.to_owned()),
            });
        }
        match &r.outcome {
            Outcome::Cancelled => return,
            Outcome::Timeout => {
                self.missed += 1;
                self.status.last_error = Some(format!("{}: no answer from the modem", r.command));
                tracing::warn!(line = %self.cfg.name, command = %r.command, missed = self.missed, "modem did not answer");
                if self.missed >= self.cfg.max_missed && r.tag != Tag::Reset {
                    self.reset_modem(now);
                    return;
                }
            }
            Outcome::Final(f) => {
                self.missed = 0;
                if !f.is_ok() && !matches!(r.tag, Tag::Dial(_) | Tag::Cpin | Tag::Voice) {
                    self.status.last_error = Some(format!("{}: {f}", r.command));
                }
            }
        }
        let ok = r.outcome.is_ok();
        match r.tag {
            Tag::Init | Tag::Dtmf | Tag::Audio | Tag::Reset => {}
            Tag::SmsDelete(index) => {
                // Deleted, or not: either way the index may hold another message next.
                self.held.remove(&index);
            }
            Tag::SmsAck => {
                if !ok {
                    tracing::warn!(line = %self.cfg.name, outcome = ?r.outcome, "AT+CNMA refused: the network may send the message again");
                }
            }
            Tag::SmsList => {
                for (index, pdu) in super::sms::parse_list(&r.lines) {
                    if self.held.insert(index) {
                        self.events.push_back(LineEvent::SmsRead { index, pdu });
                    }
                }
            }
            Tag::SmsRead(index) => {
                if let Some(pdu) = super::sms::parse_read(&r.lines) {
                    if self.held.insert(index) {
                        self.events.push_back(LineEvent::SmsRead { index, pdu });
                    }
                }
            }
            Tag::SmsSend(id) => {
                if let Outcome::Final(f) = &r.outcome {
                    let result = if f.is_ok() {
                        Ok(super::sms::parse_sent(&r.lines).unwrap_or(0))
                    } else {
                        Err(f.to_string())
                    };
                    self.events.push_back(LineEvent::SmsSent { id, result });
                }
            }
            Tag::Ussd => {
                if !ok {
                    self.events.push_back(LineEvent::Ussd {
                        status: 4,
                        text: Some(format!("{:?}", r.outcome)),
                        dcs: None,
                    });
                }
            }
            Tag::Voice => {
                self.status.voice = Some(
                    ok && r
                        .value("^CVOICE:")
                        .is_some_and(|v| v.split(',').next().map(str::trim) == Some("0")),
                );
            }
            Tag::Imei => {
                if let Some(l) = r
                    .lines
                    .iter()
                    .map(|l| l.trim_start_matches("+CGSN:").trim().trim_matches('"'))
                    .find(|l| l.len() >= 14 && l.chars().all(|c| c.is_ascii_digit()))
                {
                    self.status.imei = Some(l.to_string());
                }
            }
            Tag::Iccid => {
                if ok {
                    self.status.iccid = parse_iccid(&r.lines, &self.profile.commands.iccid_prefix);
                }
            }
            Tag::Cpin => {
                self.status.sim = match &r.outcome {
                    Outcome::Final(FinalResult::Ok) => r.value("+CPIN:").map(str::to_string),
                    Outcome::Final(f) => Some(f.to_string()),
                    _ => self.status.sim.clone(),
                };
                self.reevaluate();
            }
            Tag::Creg => {
                if let Some(line) = r.lines.iter().find(|l| l.starts_with("+CREG:")) {
                    if let Urc::Creg { stat } = parse_urc(line) {
                        self.status.registration = Registration::from_stat(stat);
                        self.reevaluate();
                    }
                }
            }
            Tag::Cops => {
                if let Some(p) = r.lines.iter().find_map(|l| params_after(l, "+COPS:")) {
                    self.status.operator = p.get(2).filter(|s| !s.is_empty()).cloned();
                }
            }
            Tag::Csq => {
                if let Some(p) = r.lines.iter().find_map(|l| params_after(l, "+CSQ:")) {
                    if let Some(n) = p.first().and_then(|s| s.parse::<u8>().ok()) {
                        self.set_csq(n);
                    }
                }
            }
            Tag::InitDone => {
                if self.status.state == LineState::Initialising {
                    self.status.state = LineState::Idle;
                    self.reevaluate();
                    // Messages that arrived while nobody read them (stopped process, reset).
                    self.at.enqueue(
                        Command::new("AT+CMGL=4", Tag::SmsList)
                            .timeout(self.cfg.command_timeout * 4)
                            .expect("+CMGL:"),
                        now,
                    );
                    tracing::info!(line = %self.cfg.name, state = ?self.status.state, imei = ?self.status.imei, "modem initialised");
                }
            }
            Tag::Dial(id) => self.on_dial_result(id, &r.outcome, now),
            Tag::Answer(id) => {
                if self.call.as_ref().is_some_and(|c| c.id == id) {
                    if ok {
                        self.connect(now);
                    } else {
                        let cmd = self.profile.commands.hangup.clone();
                        self.at.enqueue(
                            Command::new(cmd, Tag::Hangup(id)).timeout(self.cfg.command_timeout),
                            now,
                        );
                        self.end_call(EndCause::from_reason(EndReason::NetworkFailure, false), now);
                    }
                }
            }
            Tag::Hangup(id) => {
                if self.call.as_ref().is_some_and(|c| c.id == id) {
                    let answered = self.answered();
                    self.end_call(EndCause::from_reason(EndReason::LocalHangup, answered), now);
                }
            }
            Tag::Clcc => {
                let entries: Vec<ClccEntry> =
                    r.lines.iter().filter_map(|l| parse_clcc(l)).collect();
                if ok {
                    self.on_clcc(&entries, true, now);
                }
                self.schedule_clcc(now);
            }
        }
    }

    fn on_dial_result(&mut self, id: CallId, outcome: &Outcome, now: Instant) {
        if self.call.as_ref().is_none_or(|c| c.id != id) {
            return;
        }
        let reason = match outcome {
            Outcome::Final(FinalResult::Ok) => {
                if let Some(c) = &mut self.call {
                    c.dial_ok = true;
                }
                self.events
                    .push_back(LineEvent::Call(id, CallProgress::Proceeding));
                if self.profile.commands.early_audio {
                    self.start_audio(now);
                    self.events
                        .push_back(LineEvent::Call(id, CallProgress::EarlyMedia));
                }
                if self.profile.events.style == EventStyle::Clcc {
                    self.schedule_clcc(now);
                }
                return;
            }
            Outcome::Final(FinalResult::Connect) => {
                self.connect(now);
                return;
            }
            Outcome::Final(FinalResult::Busy) => EndReason::Busy,
            Outcome::Final(FinalResult::NoAnswer) => EndReason::NoAnswer,
            Outcome::Final(FinalResult::NoCarrier) => EndReason::NoAnswer,
            _ => EndReason::NetworkFailure,
        };
        self.end_call(EndCause::from_reason(reason, false), now);
    }

    fn on_clcc(&mut self, entries: &[ClccEntry], complete: bool, now: Instant) {
        let Some(c) = &self.call else { return };
        let entry = entries.iter().find(|e| e.mode == 0);
        match entry {
            Some(e) => {
                if let Some(c) = &mut self.call {
                    c.index = e.index;
                }
                match e.state {
                    0 => self.connect(now),
                    3 => self.alerting(),
                    // 6: released (some modems report it unsolicited).
                    6 => self.end_unspecified(now),
                    _ => {}
                }
            }
            None if complete && (c.dial_ok || !c.outgoing) => self.end_unspecified(now),
            None => {}
        }
    }

    fn end_unspecified(&mut self, now: Instant) {
        let Some(c) = &self.call else { return };
        let reason = if c.phase == Phase::Active {
            EndReason::Normal
        } else if c.hangup_requested {
            EndReason::LocalHangup
        } else if c.outgoing {
            EndReason::NoAnswer
        } else {
            EndReason::CallerGaveUp
        };
        let answered = c.phase == Phase::Active;
        self.end_call(EndCause::from_reason(reason, answered), now);
    }

    fn on_urc(&mut self, urc: Urc, now: Instant) {
        match urc {
            Urc::Ring | Urc::Cring(_) => {
                if let Some(c) = &mut self.call {
                    if !c.outgoing {
                        c.last_ring = now;
                    }
                } else if self.accepts_calls() {
                    let id = self.new_call(false, now);
                    if let Some(c) = &mut self.call {
                        c.clip_deadline = Some(now + self.cfg.clip_wait);
                    }
                    self.status.state = LineState::Incoming;
                    let _ = id;
                }
            }
            Urc::Clip {
                number,
                toa,
                validity,
            } => {
                if self.call.is_none() && self.accepts_calls() {
                    self.new_call(false, now);
                    self.status.state = LineState::Incoming;
                }
                if let Some(c) = &mut self.call {
                    if !c.outgoing && !c.announced {
                        c.announced = true;
                        c.clip_deadline = None;
                        let withheld = number.is_empty() || matches!(validity, Some(1) | Some(2));
                        let id = c.id;
                        self.events.push_back(LineEvent::Incoming {
                            call: id,
                            number: (!withheld).then_some(number),
                            toa: if withheld { None } else { toa },
                        });
                    }
                }
            }
            Urc::Orig { index, .. } => {
                if let Some(c) = &mut self.call {
                    if c.outgoing {
                        c.index = index;
                    }
                }
            }
            Urc::Conf { .. } => self.alerting(),
            Urc::Conn { index, .. } => {
                if let Some(c) = &mut self.call {
                    c.index = index;
                }
                if self.call.is_some() {
                    self.connect(now);
                }
            }
            Urc::Cend {
                cc_cause,
                index,
                duration_secs,
                ..
            } => {
                let Some(c) = &self.call else { return };
                if c.phase != Phase::Setup && c.index != index {
                    return;
                }
                let answered = c.phase == Phase::Active;
                let cause = if c.hangup_requested {
                    let mut e = EndCause::from_reason(EndReason::LocalHangup, answered);
                    if let Some(q) = cc_cause {
                        e.q850 = q;
                    }
                    e
                } else {
                    match cc_cause {
                        Some(q) => {
                            let mut e = EndCause::from_q850(q, answered);
                            if !c.outgoing && !answered {
                                e.reason = EndReason::CallerGaveUp;
                                e.sip_status = 487;
                            }
                            e
                        }
                        None if answered => EndCause::from_reason(EndReason::Normal, true),
                        None if c.outgoing => {
                            EndCause::from_reason(EndReason::NetworkFailure, false)
                        }
                        None => EndCause::from_reason(EndReason::CallerGaveUp, false),
                    }
                };
                let cause = EndCause {
                    network_secs: Some(duration_secs),
                    ..cause
                };
                self.end_call(cause, now);
            }
            Urc::Clcc(e) => self.on_clcc(&[e], false, now),
            Urc::Rssi(n) => self.set_csq(n),
            Urc::Creg { stat } => {
                self.status.registration = Registration::from_stat(stat);
                self.reevaluate();
            }
            Urc::NoCarrier | Urc::VoiceCallEnd => self.end_unspecified(now),
            Urc::Busy => {
                if self.call.as_ref().is_some_and(|c| c.phase != Phase::Active) {
                    self.end_call(EndCause::from_reason(EndReason::Busy, false), now);
                }
            }
            Urc::NoAnswer => {
                if self.call.as_ref().is_some_and(|c| c.phase != Phase::Active) {
                    self.end_call(EndCause::from_reason(EndReason::NoAnswer, false), now);
                }
            }
            Urc::NoDialtone => {
                if self.call.as_ref().is_some_and(|c| c.phase != Phase::Active) {
                    self.end_call(EndCause::from_reason(EndReason::NetworkFailure, false), now);
                }
            }
            Urc::VoiceCallBegin => {
                if self.call.is_some() {
                    self.connect(now);
                }
            }
            Urc::Cmti { index, .. } if self.held.contains(&index) => {
                tracing::debug!(line = %self.cfg.name, index, "+CMTI for a message read already");
            }
            Urc::Cmti { index, .. } => {
                self.at.enqueue(
                    Command::new(format!("AT+CMGR={index}"), Tag::SmsRead(index))
                        .timeout(self.cfg.command_timeout)
                        .expect("+CMGR:"),
                    now,
                );
            }
            Urc::Cmt { pdu } | Urc::Cds { pdu } => {
                self.events.push_back(LineEvent::SmsDirect { pdu });
            }
            Urc::Cusd { m, text, dcs } => {
                self.events.push_back(LineEvent::Ussd {
                    status: m,
                    text,
                    dcs,
                });
            }
            Urc::Boot | Urc::Mode(_) => {}
            Urc::Other(line) => {
                tracing::debug!(line = %self.cfg.name, %line, "unhandled modem line");
            }
        }
    }

    fn accepts_calls(&self) -> bool {
        matches!(self.status.state, LineState::Idle | LineState::Failed)
    }

    fn set_csq(&mut self, n: u8) {
        self.status.csq = Some(n);
        self.status.signal_dbm = (n <= 31).then(|| -113 + 2 * i32::from(n));
    }

    /// Idle ⇄ Failed from SIM and registration, when no call is up.
    fn reevaluate(&mut self) {
        if !matches!(self.status.state, LineState::Idle | LineState::Failed) {
            return;
        }
        let sim_ok = self.status.sim.as_deref().is_none_or(|s| s == "READY");
        let reg_ok = self.status.registration.is_registered()
            || self.status.registration == Registration::Unknown;
        self.status.state = if sim_ok && reg_ok {
            LineState::Idle
        } else {
            LineState::Failed
        };
    }

    fn alerting(&mut self) {
        if let Some(c) = &mut self.call {
            if c.outgoing && c.phase == Phase::Setup {
                c.phase = Phase::Alerting;
                self.status.state = LineState::Alerting;
                if !c.ringing_sent {
                    c.ringing_sent = true;
                    let id = c.id;
                    self.events
                        .push_back(LineEvent::Call(id, CallProgress::Ringing));
                }
            }
        }
    }

    fn connect(&mut self, now: Instant) {
        let Some(c) = &mut self.call else { return };
        if c.phase == Phase::Active {
            return;
        }
        c.phase = Phase::Active;
        let id = c.id;
        self.status.state = LineState::Active;
        self.events
            .push_back(LineEvent::Call(id, CallProgress::Answered));
        self.start_audio(now);
        self.schedule_clcc(now);
    }

    /// Routes the call's voice to the audio port (once per call).
    fn start_audio(&mut self, now: Instant) {
        let Some(c) = &mut self.call else { return };
        if c.audio {
            return;
        }
        c.audio = true;
        let id = c.id;
        let cmds = self.profile.commands.audio_on.clone();
        for cmd in cmds {
            self.at.enqueue(
                Command::new(cmd, Tag::Audio).timeout(self.cfg.command_timeout),
                now,
            );
        }
        self.events.push_back(LineEvent::AudioStart(id));
    }

    fn end_call(&mut self, cause: EndCause, now: Instant) {
        let Some(c) = self.call.take() else { return };
        if c.audio {
            self.events.push_back(LineEvent::AudioStop(c.id));
            if !matches!(self.status.state, LineState::Down | LineState::Resetting) {
                let cmds = self.profile.commands.audio_off.clone();
                for cmd in cmds {
                    self.at.enqueue(
                        Command::new(cmd, Tag::Audio).timeout(self.cfg.command_timeout),
                        now,
                    );
                }
            }
        }
        tracing::info!(line = %self.cfg.name, call = c.id, %cause, "call ended");
        self.events
            .push_back(LineEvent::Call(c.id, CallProgress::Ended(cause)));
        self.status.calls_served += 1;
        if cause.answered {
            self.status.calls_answered += 1;
        }
        self.next_clcc = None;
        if matches!(
            self.status.state,
            LineState::Dialling | LineState::Alerting | LineState::Active | LineState::Incoming
        ) {
            self.status.state = LineState::Idle;
            self.reevaluate();
        }
    }

    fn reset_modem(&mut self, now: Instant) {
        tracing::warn!(line = %self.cfg.name, "modem stopped answering: resetting it");
        self.at.reset();
        self.drain_engine(now);
        self.end_call(
            EndCause::from_reason(EndReason::ModemLost, self.answered()),
            now,
        );
        self.status.state = LineState::Resetting;
        self.status.resets += 1;
        self.status.last_error = Some("modem stopped answering; reset".into());
        self.missed = 0;
        self.next_probe = None;
        self.next_clcc = None;
        let cmd = self.profile.commands.reset.clone();
        self.at.enqueue(
            Command::new(cmd, Tag::Reset).timeout(self.cfg.command_timeout),
            now,
        );
        self.events.push_back(LineEvent::Reopen {
            after: self.cfg.reopen_after,
        });
    }
}

/// The ICCID from an answer (`^ICCID: 8949…F`, `+CCID: …` or a bare line); trailing `F`
/// padding removed.
pub fn parse_iccid(lines: &[String], prefix: &str) -> Option<String> {
    lines.iter().find_map(|l| {
        let v = if prefix.is_empty() {
            l.as_str()
        } else {
            l.strip_prefix(prefix)?
        };
        let v = v.trim().trim_matches('"').trim_end_matches(['F', 'f']);
        (v.len() >= 18 && v.chars().all(|c| c.is_ascii_digit())).then(|| v.to_string())
    })
}

#[cfg(test)]
#[path = "line_tests.rs"]
mod tests;
