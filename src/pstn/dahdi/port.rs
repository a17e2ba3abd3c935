//! An FXO port as a [`Line`]: the driver thread ([`super::driver`]) runs the line machine on
//! its channel; a tokio task turns the machine's reports into call progress, incoming calls
//! and status; the call audio goes through the modem's RTP [`Bridge`] (jitter buffer, gains,
//! RFC 4733 out for digits heard on the line), paced by the card's frames. Digits the phone
//! sends (RFC 4733) are played into the line by a DTMF generator.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::config::FxoConfig;
use super::driver::{AudioPort, Command};
use super::fxo::{FxoLine, FxoOutput};
use crate::pstn::audio::{
    frame_to_bytes, Bridge, BridgeConfig, Frame, JitterConfig, RtpInput, FRAME_BYTES,
};
use crate::pstn::dsp::dtmf::DtmfGenerator;
use crate::pstn::line::{AudioEndpoint, IncomingLineCall, Line, LineCall, LineFuture};
use crate::pstn::{CallId, CallProgress, IncomingCall, LineError, LineState, LineStatus};

/// The audio of the current call, shared by the driver thread and the call handles.
#[derive(Default)]
struct CallAudio {
    rtp: Option<RtpLeg>,
    /// Digits from the phone, played into the line.
    digits: Option<DtmfGenerator>,
    /// Digits waiting for the generator.
    queued: String,
}

struct RtpLeg {
    socket: std::net::UdpSocket,
    remote: Option<SocketAddr>,
    bridge: Bridge,
    /// The frame for the line the bridge gave for the last frame heard.
    to_line: Option<[u8; FRAME_BYTES]>,
}

type Shared = Arc<Mutex<CallAudio>>;

/// The call on the line: its id and where its progress goes.
type Current = Arc<Mutex<Option<(CallId, mpsc::UnboundedSender<CallProgress>)>>>;

/// The driver's view of [`CallAudio`].
struct PortAudio {
    shared: Shared,
    /// The driver's own command queue (a hook flash asked for on the RTP side).
    cmd: std::sync::mpsc::Sender<Command>,
    dtmf_on_ms: u32,
    dtmf_off_ms: u32,
}

impl AudioPort for PortAudio {
    fn heard_on_line(&mut self, frame: &Frame) {
        let Ok(mut a) = self.shared.lock() else {
            return;
        };
        let CallAudio { rtp, queued, .. } = &mut *a;
        let Some(leg) = rtp.as_mut() else {
            return;
        };
        // What the phone sent since the last frame.
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = leg.socket.recv_from(&mut buf) {
            leg.remote.get_or_insert(from);
            match leg.bridge.from_rtp(buf.get(..n).unwrap_or_default()) {
                RtpInput::Dtmf(d) => queued.push(d),
                // RFC 4733 event 16: the phone's R key.
                RtpInput::Flash => {
                    let _ = self.cmd.send(Command::Flash);
                }
                _ => {}
            }
        }
        let mut bytes = [0u8; FRAME_BYTES];
        frame_to_bytes(frame, &mut bytes);
        let (socket, remote) = (&leg.socket, leg.remote);
        let mut out = None;
        leg.bridge.from_modem(
            &bytes,
            |pkt| {
                if let Some(to) = remote {
                    let _ = socket.send_to(pkt, to);
                }
            },
            |b| out = Some(*b),
        );
        leg.to_line = out;
    }

    fn next_for_line(&mut self, frame: &mut Frame) {
        let Ok(mut a) = self.shared.lock() else {
            return;
        };
        let a = &mut *a;
        if a.digits.as_ref().is_none_or(|g| g.done()) && !a.queued.is_empty() {
            let d = std::mem::take(&mut a.queued);
            a.digits = Some(DtmfGenerator::new(&d, self.dtmf_on_ms, self.dtmf_off_ms));
        }
        if let Some(g) = a.digits.as_mut().filter(|g| !g.done()) {
            g.fill(frame);
            return;
        }
        match a.rtp.as_mut().and_then(|l| l.to_line.take()) {
            Some(b) => {
                for (s, c) in frame.iter_mut().zip(b.chunks_exact(2)) {
                    *s = i16::from_le_bytes([c[0], c[1]]);
                }
            }
            None => *frame = crate::pstn::audio::SILENCE,
        }
    }
}

/// A running FXO port.
pub struct FxoPort {
    name: String,
    cmd: std::sync::mpsc::Sender<Command>,
    status: watch::Receiver<LineStatus>,
    incoming: Mutex<Option<mpsc::Receiver<IncomingLineCall>>>,
    /// The call on the line: its id and where its progress goes.
    current: Current,
    next_id: Arc<AtomicU64>,
    audio: Shared,
    gains: (f32, f32),
}

impl FxoPort {
    /// Opens the channel and starts the line (inside a tokio runtime). A channel that cannot
    /// be opened gives a line in state `Failed` whose `last_error` names it and what to check.
    pub fn spawn(cfg: &FxoConfig) -> FxoPort {
        let name = cfg.settings.name.clone();
        let (cmd_tx, cmd_rx) = std::sync::mpsc::channel();
        let (status_tx, status_rx) = watch::channel(LineStatus {
            name: name.clone(),
            profile: "fxo".into(),
            state: LineState::Initialising,
            data_port: Some(cfg.channel.clone()),
            ..LineStatus::default()
        });
        let (in_tx, in_rx) = mpsc::channel(8);
        let audio: Shared = Arc::default();
        let current: Current = Arc::default();
        let next_id = Arc::new(AtomicU64::new(1));
        let (out_tx, out_rx) = std::sync::mpsc::channel::<FxoOutput>();
        let (fwd_tx, fwd_rx) = mpsc::unbounded_channel::<FxoOutput>();
        // The driver thread: the channel's reads block on the card's clock.
        let port_audio = PortAudio {
            shared: audio.clone(),
            cmd: cmd_tx.clone(),
            dtmf_on_ms: cfg.settings.dtmf_on_ms,
            dtmf_off_ms: cfg.settings.dtmf_off_ms,
        };
        let (channel, settings) = (cfg.channel.clone(), cfg.settings.clone());
        let echo_taps = cfg.echo_cancel;
        let st = status_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("fxo {name}"))
            .spawn(move || {
                let mut port_audio = port_audio;
                // Opened again after a failure (module reloaded, card back, simulator
                // restarted), every RETRY, until the line is stopped.
                const RETRY: std::time::Duration = std::time::Duration::from_secs(10);
                loop {
                    let ch = match super::channel::open(&channel) {
                        Ok(mut ch) => {
                            // The card's (or OSLEC's) canceller: a missing one costs echo on
                            // the phone's side, not the line.
                            if let Err(e) = ch.set_echo_cancel(echo_taps) {
                                tracing::warn!("FXO line: echo canceller not enabled: {e}");
                            }
                            Some(ch)
                        }
                        Err(e) => {
                            tracing::error!("FXO line: {e} (trying again every {RETRY:?})");
                            st.send_modify(|s| {
                                s.state = LineState::Failed;
                                s.last_error = Some(e.to_string());
                            });
                            None
                        }
                    };
                    if let Some(ch) = ch {
                        st.send_modify(|s| {
                            s.state = LineState::Idle;
                            s.last_error = None;
                        });
                        let mut line = FxoLine::new(settings.clone());
                        let r =
                            super::driver::run_on(ch, &mut line, &cmd_rx, &out_tx, &mut port_audio);
                        let Err(e) = r else { return };
                        tracing::error!("FXO line: {e} (trying again every {RETRY:?})");
                        st.send_modify(|s| {
                            s.state = LineState::Down;
                            s.last_error = Some(e.to_string());
                        });
                        // The call on the line, if any, is over: network out of order (after
                        // what the line reported before, through the same queue).
                        let state = line.state();
                        if !matches!(
                            state,
                            super::fxo::FxoState::OnHook | super::fxo::FxoState::Alarm
                        ) {
                            let answered = state == super::fxo::FxoState::InCall;
                            let _ = out_tx.send(FxoOutput::Progress(CallProgress::Ended(
                                crate::pstn::EndCause::from_q850(38, answered),
                            )));
                        }
                    }
                    // Wait, but stop at once when told to.
                    match cmd_rx.recv_timeout(RETRY) {
                        Ok(Command::Stop)
                        | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                        _ => {}
                    }
                }
            });
        if let Err(e) = spawned {
            status_tx.send_modify(|s| {
                s.state = LineState::Failed;
                s.last_error = Some(format!("cannot start the line thread: {e}"));
            });
        }
        // Carries the driver's reports from its thread into the runtime.
        let _ = std::thread::Builder::new()
            .name(format!("fxo {name} out"))
            .spawn(move || {
                while let Ok(o) = out_rx.recv() {
                    if fwd_tx.send(o).is_err() {
                        return;
                    }
                }
            });
        let task = PortTask {
            name: name.clone(),
            status: status_tx,
            incoming: in_tx,
            current: current.clone(),
            next_id: next_id.clone(),
            audio: audio.clone(),
            cmd: cmd_tx.clone(),
            gains: (cfg.tx_gain_db, cfg.rx_gain_db),
        };
        crate::supervise::Supervisor::global()
            .watch(format!("fxo line {name}"), tokio::spawn(task.run(fwd_rx)));
        FxoPort {
            name,
            cmd: cmd_tx,
            status: status_rx,
            incoming: Mutex::new(Some(in_rx)),
            current,
            next_id,
            audio,
            gains: (cfg.tx_gain_db, cfg.rx_gain_db),
        }
    }

    fn new_call(&self, id: CallId, events: mpsc::UnboundedReceiver<CallProgress>) -> FxoCall {
        FxoCall {
            id,
            line: self.name.clone(),
            cmd: self.cmd.clone(),
            events,
            ended: false,
            current: self.current.clone(),
            audio: self.audio.clone(),
            gains: self.gains,
        }
    }
}

struct PortTask {
    name: String,
    status: watch::Sender<LineStatus>,
    incoming: mpsc::Sender<IncomingLineCall>,
    current: Current,
    next_id: Arc<AtomicU64>,
    audio: Shared,
    cmd: std::sync::mpsc::Sender<Command>,
    gains: (f32, f32),
}

impl PortTask {
    async fn run(self, mut outputs: mpsc::UnboundedReceiver<FxoOutput>) {
        while let Some(o) = outputs.recv().await {
            match o {
                FxoOutput::Progress(p) => self.progress(p),
                FxoOutput::Incoming(caller) => self.incoming(caller),
                FxoOutput::Alarm(on) => self.status.send_modify(|s| {
                    if on {
                        tracing::warn!(line = %self.name, "FXO line in alarm (no battery on the line, or a card fault)");
                        s.state = LineState::Alarm;
                        s.last_error = Some(format!(
                            "DAHDI alarm on {}: no battery on the line or a card fault (check the cable to the exchange; dahdi_scan shows the alarm)",
                            s.data_port.as_deref().unwrap_or("the channel")
                        ));
                    } else {
                        tracing::info!(line = %self.name, "FXO line out of alarm");
                        s.state = LineState::Idle;
                    }
                }),
                // The bridge detects digits on the call audio and sends them as RFC 4733.
                FxoOutput::Dtmf(_) | FxoOutput::Hook(_) => {}
            }
        }
    }

    fn progress(&self, p: CallProgress) {
        let state = match &p {
            CallProgress::Proceeding => Some(LineState::Dialling),
            CallProgress::Ringing | CallProgress::EarlyMedia => Some(LineState::Alerting),
            CallProgress::Answered => Some(LineState::Active),
            CallProgress::Ended(_) => Some(LineState::Idle),
            CallProgress::Digit(_) => None,
        };
        if let Some(state) = state {
            self.status.send_modify(|s| {
                // A call that ends because of an alarm, or because the channel was lost,
                // leaves the line in that state (the driver says when it is back).
                if !matches!(
                    s.state,
                    LineState::Alarm | LineState::Down | LineState::Failed
                ) {
                    s.state = state;
                }
                if let CallProgress::Ended(c) = &p {
                    s.calls_served += 1;
                    if c.answered {
                        s.calls_answered += 1;
                    }
                }
            });
        }
        let Ok(mut cur) = self.current.lock() else {
            return;
        };
        if let Some((_, tx)) = cur.as_ref() {
            let _ = tx.send(p.clone());
        }
        if matches!(p, CallProgress::Ended(_)) {
            *cur = None;
            if let Ok(mut a) = self.audio.lock() {
                *a = CallAudio::default();
            }
        }
    }

    fn incoming(&self, caller: crate::pstn::dsp::callerid::Caller) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut cur) = self.current.lock() {
            *cur = Some((id, tx));
        }
        self.status.send_modify(|s| s.state = LineState::Incoming);
        let call = FxoCall {
            id,
            line: self.name.clone(),
            cmd: self.cmd.clone(),
            events: rx,
            ended: false,
            current: self.current.clone(),
            audio: self.audio.clone(),
            gains: self.gains,
        };
        let toa = caller
            .number
            .as_deref()
            .map(|n| if n.starts_with('+') { 145 } else { 129 });
        let info = IncomingCall {
            line: self.name.clone(),
            call: id,
            number: caller.number,
            toa,
            name: caller.name,
        };
        if self
            .incoming
            .try_send(IncomingLineCall {
                info,
                call: Box::new(call),
            })
            .is_err()
        {
            tracing::warn!(line = %self.name, "incoming call not taken (no one listens)");
        }
    }
}

impl Line for FxoPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "analog FXO"
    }

    fn status(&self) -> LineStatus {
        self.status.borrow().clone()
    }

    fn watch_status(&self) -> watch::Receiver<LineStatus> {
        self.status.clone()
    }

    fn dial<'a>(&'a self, number: &'a str) -> LineFuture<'a, Result<Box<dyn LineCall>, LineError>> {
        Box::pin(async move {
            match self.status().state {
                LineState::Idle => {}
                LineState::Dialling
                | LineState::Alerting
                | LineState::Active
                | LineState::Incoming => return Err(LineError::Busy(self.name.clone())),
                _ => return Err(LineError::NotReady(self.name.clone())),
            }
            let n = number.trim_start_matches('+');
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| crate::pstn::dsp::dtmf::frequencies(c).is_some())
            {
                return Err(LineError::BadNumber(number.to_string()));
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = mpsc::unbounded_channel();
            {
                let mut cur = self.current.lock().map_err(|_| LineError::Stopped)?;
                if cur.is_some() {
                    return Err(LineError::Busy(self.name.clone()));
                }
                *cur = Some((id, tx));
            }
            self.cmd
                .send(Command::Dial(number.to_string()))
                .map_err(|_| LineError::Stopped)?;
            Ok(Box::new(self.new_call(id, rx)) as Box<dyn LineCall>)
        })
    }

    fn take_incoming(&self) -> Option<mpsc::Receiver<IncomingLineCall>> {
        self.incoming.lock().ok()?.take()
    }

    fn shutdown(&self) -> LineFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.cmd.send(Command::Hangup);
            let _ = self.cmd.send(Command::Stop);
        })
    }
}

/// One call on an [`FxoPort`].
pub struct FxoCall {
    id: CallId,
    line: String,
    cmd: std::sync::mpsc::Sender<Command>,
    events: mpsc::UnboundedReceiver<CallProgress>,
    ended: bool,
    current: Current,
    audio: Shared,
    /// Gains (dB) towards the line and from it.
    gains: (f32, f32),
}

impl std::fmt::Debug for FxoCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FxoCall")
            .field("id", &self.id)
            .field("line", &self.line)
            .finish()
    }
}

impl FxoCall {
    /// Whether this call is still the line's call (commands without an id must not reach a
    /// later one).
    fn is_current(&self) -> bool {
        self.current
            .lock()
            .map(|c| c.as_ref().is_some_and(|(id, _)| *id == self.id))
            .unwrap_or(false)
    }

    fn command(&self, c: Command) -> Result<(), LineError> {
        if !self.is_current() {
            return Err(LineError::NoCall);
        }
        self.cmd.send(c).map_err(|_| LineError::Stopped)
    }
}

impl Drop for FxoCall {
    fn drop(&mut self) {
        if !self.ended && self.is_current() {
            let _ = self.cmd.send(Command::Hangup);
        }
    }
}

impl LineCall for FxoCall {
    fn id(&self) -> CallId {
        self.id
    }

    fn line(&self) -> &str {
        &self.line
    }

    fn next_event(&mut self) -> LineFuture<'_, Option<CallProgress>> {
        Box::pin(async move {
            if self.ended {
                return None;
            }
            let e = self.events.recv().await;
            if matches!(e, Some(CallProgress::Ended(_)) | None) {
                self.ended = true;
            }
            e
        })
    }

    fn answer(&self) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(async move { self.command(Command::Answer) })
    }

    fn hangup(&self) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(async move { self.command(Command::Hangup) })
    }

    fn flash(&self) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(async move { self.command(Command::Flash) })
    }

    fn send_digit(&self, digit: char) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(async move {
            if crate::pstn::dsp::dtmf::frequencies(digit).is_none() {
                return Err(LineError::BadDigit(digit));
            }
            if !self.is_current() {
                return Err(LineError::NoCall);
            }
            let mut a = self.audio.lock().map_err(|_| LineError::Stopped)?;
            a.queued.push(digit);
            Ok(())
        })
    }

    fn attach_audio(&self, audio: AudioEndpoint) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(async move {
            if !self.is_current() {
                return Err(LineError::NoCall);
            }
            let socket = audio.socket.into_std().map_err(|_| LineError::Stopped)?;
            let bridge = Bridge::new(BridgeConfig {
                law: audio.codec.law,
                pt: audio.codec.pt,
                dtmf_pt: audio.codec.dtmf_pt,
                to_modem_db: self.gains.0,
                to_rtp_db: self.gains.1,
                jitter: JitterConfig::default(),
                ssrc: rand::random(),
                seq: rand::random(),
                ts: rand::random(),
            });
            let mut a = self.audio.lock().map_err(|_| LineError::Stopped)?;
            a.rtp = Some(RtpLeg {
                socket,
                remote: audio.remote,
                bridge,
                to_line: None,
            });
            Ok(())
        })
    }
}
