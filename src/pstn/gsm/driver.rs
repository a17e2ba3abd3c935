//! The I/O shell of a modem line: one tokio task per modem that opens its AT port (found by
//! identity or fixed path), feeds the [`LineMachine`] bytes and time, writes what it asks,
//! re-opens the ports after a reset or when the device comes back, and runs one audio task per
//! connected call that bridges the audio port to RTP ([`crate::pstn::audio::Bridge`]).
//!
//! The API the rest of the gateway uses: [`GsmLine`] (dial, incoming calls, status) and
//! [`PstnCall`] (progress events, answer, hang-up, DTMF, RTP attachment).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::discover::{self, PortPair, PortSpec};
use super::line::{LineConfig, LineEvent, LineMachine};
use super::profile::Profile;
use crate::pstn::audio::{
    Bridge, BridgeConfig, JitterConfig, RtpInput, FRAME_BYTES, RTP_PACKET_LEN,
};
use crate::pstn::line::{AudioEndpoint, IncomingLineCall, Line, LineCall, LineFuture, RtpCodec};
use crate::pstn::{CallId, CallProgress, IncomingCall, LineError, LineStatus};

/// Everything a modem line needs.
#[derive(Debug, Clone, PartialEq)]
pub struct GsmLineConfig {
    /// Names, timers, thresholds.
    pub line: LineConfig,
    /// The modem family.
    pub profile: Profile,
    /// Which ports.
    pub ports: PortSpec,
    /// Gain towards the modem (dB).
    pub gain_to_modem_db: f32,
    /// Gain from the modem towards RTP (dB).
    pub gain_to_rtp_db: f32,
    /// Jitter buffer of the RTP → modem direction.
    pub jitter: JitterConfig,
}

/// The audio endpoint of a call, under the name the modem tests know.
pub type RtpAttach = AudioEndpoint;

/// A call arriving on a modem line.
pub type IncomingPstnCall = IncomingLineCall;

enum Cmd {
    Dial(String, oneshot::Sender<Result<PstnCall, LineError>>),
    Answer(CallId, oneshot::Sender<Result<(), LineError>>),
    Hangup(CallId, Option<oneshot::Sender<Result<(), LineError>>>),
    Dtmf(CallId, char, oneshot::Sender<Result<(), LineError>>),
    Attach(CallId, Box<RtpAttach>),
    DeleteSms(u32),
    AckSms,
    SendSms {
        id: u64,
        hex: String,
        tpdu_len: usize,
        reply: oneshot::Sender<Result<(), LineError>>,
    },
    Ussd(String, oneshot::Sender<Result<(), LineError>>),
    Shutdown,
}

/// What a line reports about text messages and USSD ([`GsmLine::take_sms`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SmsEvent {
    /// A PDU read from the modem's storage at `index`: store it, then [`GsmLine::delete_sms`].
    Read { index: u32, pdu: String },
    /// A message or status report the modem handed over without storing it (`+CMT`/`+CDS`):
    /// store it, then [`GsmLine::ack_sms`].
    Direct { pdu: String },
    /// The outcome of [`GsmLine::send_sms`]: the message reference or why not.
    Sent { id: u64, result: Result<u8, String> },
    /// A USSD answer (`status` 0: done, 1: more expected, 2: ended by the network, 4: failed).
    Ussd {
        status: u8,
        text: Option<String>,
        dcs: Option<u16>,
    },
}

/// An [`SmsEvent`] of a named line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineSms {
    /// The line.
    pub line: String,
    /// What happened.
    pub event: SmsEvent,
}

/// One modem line: a handle to its task.
pub struct GsmLine {
    name: String,
    cmd: mpsc::Sender<Cmd>,
    status: watch::Receiver<LineStatus>,
    incoming: Mutex<Option<mpsc::Receiver<IncomingPstnCall>>>,
    incoming_taken: Arc<AtomicBool>,
    sms: Mutex<Option<mpsc::UnboundedReceiver<LineSms>>>,
}

/// One call on a line. Dropping it hangs the call up.
#[derive(Debug)]
pub struct PstnCall {
    id: CallId,
    line: String,
    cmd: mpsc::Sender<Cmd>,
    events: mpsc::UnboundedReceiver<CallProgress>,
    ended: bool,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl PstnCall {
    /// The call's id on its line.
    pub fn id(&self) -> CallId {
        self.id
    }

    /// The line's name.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The next progress event; `None` after `Ended` (or when the line task stopped).
    pub async fn next_event(&mut self) -> Option<CallProgress> {
        if self.ended {
            return None;
        }
        let ev = self.events.recv().await;
        match &ev {
            Some(CallProgress::Ended(_)) | None => self.ended = true,
            _ => {}
        }
        ev
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, LineError>>) -> Cmd,
    ) -> Result<T, LineError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(make(tx))
            .await
            .map_err(|_| LineError::Stopped)?;
        rx.await.map_err(|_| LineError::Stopped)?
    }

    /// Answers an incoming call (progress `Answered` follows).
    pub async fn answer(&self) -> Result<(), LineError> {
        let id = self.id;
        self.ask(|tx| Cmd::Answer(id, tx)).await
    }

    /// Hangs up (progress `Ended` follows).
    pub async fn hangup(&self) -> Result<(), LineError> {
        let id = self.id;
        self.ask(|tx| Cmd::Hangup(id, Some(tx))).await
    }

    /// Sends a DTMF digit to the PSTN side.
    pub async fn send_dtmf(&self, digit: char) -> Result<(), LineError> {
        let id = self.id;
        self.ask(|tx| Cmd::Dtmf(id, digit, tx)).await
    }

    /// Bridges the call's audio to RTP on `socket` (at any time; audio flows once the call is
    /// connected). RFC 4733 digits received there are sent to the modem as DTMF.
    pub async fn attach_rtp(&self, rtp: RtpAttach) -> Result<(), LineError> {
        self.cmd
            .send(Cmd::Attach(self.id, Box::new(rtp)))
            .await
            .map_err(|_| LineError::Stopped)
    }
}

impl Drop for PstnCall {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.cmd.try_send(Cmd::Hangup(self.id, None));
        }
    }
}

impl GsmLine {
    /// Starts the line's task (must be called inside a tokio runtime).
    pub fn spawn(cfg: GsmLineConfig) -> GsmLine {
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let name = cfg.line.name.clone();
        let machine = LineMachine::new(cfg.line.clone(), cfg.profile.clone());
        let (status_tx, status_rx) = watch::channel(machine.status().clone());
        let (in_tx, in_rx) = mpsc::channel(8);
        let incoming_taken = Arc::new(AtomicBool::new(false));
        let (sms_tx, sms_rx) = mpsc::unbounded_channel();
        let task = LineTask {
            sms: sms_tx,
            cfg,
            machine,
            cmd_tx: cmd_tx.downgrade(),
            status: status_tx,
            incoming: in_tx,
            incoming_taken: incoming_taken.clone(),
            calls: HashMap::new(),
            audio: None,
            dtmf: mpsc::unbounded_channel(),
        };
        // The line's state (calls, modem state) would be lost by a restart: a panic outside
        // the input guard marks the process unhealthy, so that systemd restarts it.
        crate::supervise::Supervisor::global()
            .watch(format!("modem line {name}"), tokio::spawn(task.run(cmd_rx)));
        GsmLine {
            name,
            cmd: cmd_tx,
            status: status_rx,
            incoming: Mutex::new(Some(in_rx)),
            incoming_taken,
            sms: Mutex::new(Some(sms_rx)),
        }
    }

    /// The receiver of the line's text message and USSD events (once; later calls get
    /// `None`). Messages are deleted from the modem only when asked ([`GsmLine::delete_sms`]):
    /// nobody listening means they stay on the SIM.
    pub fn take_sms(&self) -> Option<mpsc::UnboundedReceiver<LineSms>> {
        self.sms.lock().ok()?.take()
    }

    /// Deletes the message at `index` from the modem's storage.
    pub async fn delete_sms(&self, index: u32) -> Result<(), LineError> {
        self.cmd
            .send(Cmd::DeleteSms(index))
            .await
            .map_err(|_| LineError::Stopped)
    }

    /// Acknowledges the message handed over last ([`SmsEvent::Direct`]) with `AT+CNMA`.
    pub async fn ack_sms(&self) -> Result<(), LineError> {
        self.cmd
            .send(Cmd::AckSms)
            .await
            .map_err(|_| LineError::Stopped)
    }

    /// Queues one SMS-SUBMIT PDU; [`SmsEvent::Sent`] with `id` follows.
    pub async fn send_sms(&self, id: u64, hex: String, tpdu_len: usize) -> Result<(), LineError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::SendSms {
                id,
                hex,
                tpdu_len,
                reply,
            })
            .await
            .map_err(|_| LineError::Stopped)?;
        rx.await.map_err(|_| LineError::Stopped)?
    }

    /// Sends a USSD code; the answer comes as [`SmsEvent::Ussd`].
    pub async fn ussd(&self, code: &str) -> Result<(), LineError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Ussd(code.to_owned(), reply))
            .await
            .map_err(|_| LineError::Stopped)?;
        rx.await.map_err(|_| LineError::Stopped)?
    }

    /// The line's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Places a call to `number` (digits as the network wants them, e.g. `+4930…` or national).
    pub async fn dial(&self, number: &str) -> Result<PstnCall, LineError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Dial(number.to_string(), tx))
            .await
            .map_err(|_| LineError::Stopped)?;
        rx.await.map_err(|_| LineError::Stopped)?
    }

    /// The receiver of incoming calls (once; later calls get `None`). Until it is taken,
    /// and after it is dropped, incoming calls are rejected.
    pub fn take_incoming(&self) -> Option<mpsc::Receiver<IncomingPstnCall>> {
        let r = self.incoming.lock().ok()?.take();
        if r.is_some() {
            self.incoming_taken.store(true, Ordering::Release);
        }
        r
    }

    /// The current status.
    pub fn status(&self) -> LineStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<LineStatus> {
        self.status.clone()
    }

    /// Stops the task (hangs up a call in progress, closes the ports).
    pub async fn shutdown(&self) {
        let _ = self.cmd.send(Cmd::Shutdown).await;
    }
}

impl Line for GsmLine {
    fn name(&self) -> &str {
        &self.name
    }

    fn take_sms(&self) -> Option<mpsc::UnboundedReceiver<LineSms>> {
        GsmLine::take_sms(self)
    }

    fn delete_sms(&self, index: u32) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(GsmLine::delete_sms(self, index))
    }

    fn send_sms(
        &self,
        id: u64,
        hex: String,
        tpdu_len: usize,
    ) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(GsmLine::send_sms(self, id, hex, tpdu_len))
    }

    fn ack_sms(&self) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(GsmLine::ack_sms(self))
    }

    fn ussd<'a>(&'a self, code: &'a str) -> LineFuture<'a, Result<(), LineError>> {
        Box::pin(GsmLine::ussd(self, code))
    }

    fn kind(&self) -> &'static str {
        "GSM modem"
    }

    fn status(&self) -> LineStatus {
        GsmLine::status(self)
    }

    fn watch_status(&self) -> watch::Receiver<LineStatus> {
        GsmLine::watch_status(self)
    }

    fn dial<'a>(&'a self, number: &'a str) -> LineFuture<'a, Result<Box<dyn LineCall>, LineError>> {
        Box::pin(async move {
            GsmLine::dial(self, number)
                .await
                .map(|c| Box::new(c) as Box<dyn LineCall>)
        })
    }

    fn take_incoming(&self) -> Option<mpsc::Receiver<IncomingLineCall>> {
        GsmLine::take_incoming(self)
    }

    fn shutdown(&self) -> LineFuture<'_, ()> {
        Box::pin(GsmLine::shutdown(self))
    }
}

impl LineCall for PstnCall {
    fn id(&self) -> CallId {
        self.id
    }

    fn line(&self) -> &str {
        &self.line
    }

    fn next_event(&mut self) -> LineFuture<'_, Option<CallProgress>> {
        Box::pin(PstnCall::next_event(self))
    }

    fn answer(&self) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(PstnCall::answer(self))
    }

    fn hangup(&self) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(PstnCall::hangup(self))
    }

    fn send_digit(&self, digit: char) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(PstnCall::send_dtmf(self, digit))
    }

    fn attach_audio(&self, audio: AudioEndpoint) -> LineFuture<'_, Result<(), LineError>> {
        Box::pin(PstnCall::attach_rtp(self, audio))
    }
}

struct CallEntry {
    events: mpsc::UnboundedSender<CallProgress>,
    rtp: Option<Box<RtpAttach>>,
}

struct AudioRun {
    call: CallId,
    ctl: mpsc::UnboundedSender<AudioCtl>,
}

enum AudioCtl {
    Attach(Box<RtpAttach>),
}

/// The search for a line's ports.
type Resolving = dyn std::future::Future<Output = Result<PortPair, String>> + Send;

/// Digits received as RFC 4733 events by an audio task, for the line to send to the modem.
type DtmfTx = mpsc::UnboundedSender<(CallId, char)>;

struct LineTask {
    cfg: GsmLineConfig,
    machine: LineMachine,
    /// Weak, so that the task ends when the [`GsmLine`] and every [`PstnCall`] are gone.
    cmd_tx: mpsc::WeakSender<Cmd>,
    status: watch::Sender<LineStatus>,
    incoming: mpsc::Sender<IncomingPstnCall>,
    incoming_taken: Arc<AtomicBool>,
    sms: mpsc::UnboundedSender<LineSms>,
    calls: HashMap<CallId, CallEntry>,
    audio: Option<AudioRun>,
    dtmf: (DtmfTx, mpsc::UnboundedReceiver<(CallId, char)>),
}

impl LineTask {
    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let mut port: Option<(tokio_serial::SerialStream, PortPair)> = None;
        let mut reopen_at = Some(tokio::time::Instant::now());
        let mut buf = [0u8; 1024];
        // Finding the modem can take seconds (each candidate is asked for its identity): it
        // runs beside the loop, which keeps answering commands meanwhile.
        let mut resolving: Option<std::pin::Pin<Box<Resolving>>> = None;
        loop {
            if port.is_none()
                && resolving.is_none()
                && reopen_at.is_some_and(|t| t <= tokio::time::Instant::now())
            {
                let (spec, profile) = (self.cfg.ports.clone(), self.cfg.profile.clone());
                resolving = Some(Box::pin(
                    async move { discover::resolve(&spec, &profile).await },
                ));
                reopen_at = None;
            }
            let wake = self
                .machine
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .into_iter()
                .chain(reopen_at.filter(|_| port.is_none()))
                .min()
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                cmd = cmds.recv() => {
                    match cmd {
                        None | Some(Cmd::Shutdown) => {
                            if let Some(id) = self.machine.current_call() {
                                let _ = self.machine.hangup(id, Instant::now());
                                self.flush(&mut port).await;
                            }
                            return;
                        }
                        Some(cmd) => self.on_cmd(cmd),
                    }
                }
                r = async {
                    match &mut port {
                        Some((p, _)) => p.read(&mut buf).await,
                        None => std::future::pending().await,
                    }
                } => {
                    match r {
                        Ok(n) if n > 0 => {
                            // A bug in handling the modem's bytes drops them, not the line.
                            let input = buf.get(..n).unwrap_or_default();
                            let component = format!("modem line {}", self.cfg.line.name);
                            crate::supervise::Supervisor::global().guard(&component, || {
                                self.machine.handle_input(input, Instant::now())
                            });
                        }
                        Ok(_) => self.lost(&mut port, &mut reopen_at, "end of file"),
                        Err(e) => self.lost(&mut port, &mut reopen_at, &e.to_string()),
                    }
                }
                found = async {
                    match &mut resolving {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                } => {
                    resolving = None;
                    self.on_resolved(found, &mut port, &mut reopen_at);
                }
                Some((call, digit)) = self.dtmf.1.recv() => {
                    let _ = self.machine.send_dtmf(call, digit, Instant::now());
                }
                _ = tokio::time::sleep_until(wake) => {
                    self.machine.handle_timeout(Instant::now());
                }
            }
            self.after(&mut port, &mut reopen_at).await;
        }
    }

    fn on_resolved(
        &mut self,
        found: Result<PortPair, String>,
        port: &mut Option<(tokio_serial::SerialStream, PortPair)>,
        reopen_at: &mut Option<tokio::time::Instant>,
    ) {
        let opened = found.and_then(|pair| {
            discover::open_port(&pair.data)
                .map(|p| (p, pair))
                .map_err(|e| e.to_string())
        });
        match opened {
            Ok((p, pair)) => {
                tracing::info!(line = %self.cfg.line.name, data = %pair.data.display(), audio = %pair.audio.display(), "modem ports open");
                self.machine.port_opened(
                    &pair.data.to_string_lossy(),
                    &pair.audio.to_string_lossy(),
                    Instant::now(),
                );
                *port = Some((p, pair));
                *reopen_at = None;
            }
            Err(e) => {
                tracing::debug!(line = %self.cfg.line.name, error = %e, "modem not found");
                self.machine.port_closed(&e, Instant::now());
                *reopen_at = Some(tokio::time::Instant::now() + self.cfg.line.reopen_after);
            }
        }
    }

    fn lost(
        &mut self,
        port: &mut Option<(tokio_serial::SerialStream, PortPair)>,
        reopen_at: &mut Option<tokio::time::Instant>,
        why: &str,
    ) {
        tracing::warn!(line = %self.cfg.line.name, why, "modem port lost");
        *port = None;
        self.machine.port_closed(why, Instant::now());
        *reopen_at = Some(tokio::time::Instant::now() + self.cfg.line.reopen_after);
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        let now = Instant::now();
        match cmd {
            Cmd::Dial(number, reply) => {
                let r = self
                    .machine
                    .dial(&number, now)
                    .and_then(|id| self.new_handle(id).ok_or(LineError::Stopped));
                let _ = reply.send(r);
            }
            Cmd::Answer(id, reply) => {
                let _ = reply.send(self.machine.answer(id, now));
            }
            Cmd::Hangup(id, reply) => {
                let r = self.machine.hangup(id, now);
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Cmd::Dtmf(id, digit, reply) => {
                let _ = reply.send(self.machine.send_dtmf(id, digit, now));
            }
            Cmd::Attach(id, rtp) => {
                if let Some(a) = self.audio.as_ref().filter(|a| a.call == id) {
                    let _ = a.ctl.send(AudioCtl::Attach(rtp));
                } else if let Some(c) = self.calls.get_mut(&id) {
                    c.rtp = Some(rtp);
                }
            }
            Cmd::DeleteSms(index) => self.machine.delete_sms(index, now),
            Cmd::AckSms => self.machine.ack_sms(now),
            Cmd::SendSms {
                id,
                hex,
                tpdu_len,
                reply,
            } => {
                let _ = reply.send(self.machine.send_sms(id, &hex, tpdu_len, now));
            }
            Cmd::Ussd(code, reply) => {
                let _ = reply.send(self.machine.ussd(&code, now));
            }
            Cmd::Shutdown => {}
        }
    }

    fn new_handle(&mut self, id: CallId) -> Option<PstnCall> {
        let cmd = self.cmd_tx.upgrade()?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.calls.insert(
            id,
            CallEntry {
                events: tx,
                rtp: None,
            },
        );
        Some(PstnCall {
            id,
            line: self.cfg.line.name.clone(),
            cmd,
            events: rx,
            ended: false,
        })
    }

    async fn flush(&mut self, port: &mut Option<(tokio_serial::SerialStream, PortPair)>) {
        while let Some(bytes) = self.machine.poll_transmit() {
            if let Some((p, _)) = port {
                if let Err(e) = p.write_all(&bytes).await {
                    tracing::warn!(line = %self.cfg.line.name, error = %e, "write to modem failed");
                }
            }
        }
    }

    /// Writes pending bytes, handles the machine's events, publishes the status.
    async fn after(
        &mut self,
        port: &mut Option<(tokio_serial::SerialStream, PortPair)>,
        reopen_at: &mut Option<tokio::time::Instant>,
    ) {
        // Handling an event may queue commands (a rejected call's hang-up): write and handle
        // until the machine is quiet.
        loop {
            self.flush(port).await;
            // Published before the events go out, so that whoever gets one sees the state it
            // happened in.
            self.publish();
            let Some(ev) = self.machine.poll_event() else {
                break;
            };
            match ev {
                LineEvent::Call(id, progress) => {
                    let ended = matches!(progress, CallProgress::Ended(_));
                    if let Some(c) = self.calls.get(&id) {
                        let _ = c.events.send(progress);
                    }
                    if ended {
                        self.calls.remove(&id);
                    }
                }
                LineEvent::Incoming { call, number, toa } => {
                    if !self.incoming_taken.load(Ordering::Acquire) || self.incoming.is_closed() {
                        tracing::warn!(line = %self.cfg.line.name, ?number, "nobody takes incoming calls: rejecting");
                        let _ = self.machine.hangup(call, Instant::now());
                        continue;
                    }
                    let Some(handle) = self.new_handle(call) else {
                        let _ = self.machine.hangup(call, Instant::now());
                        continue;
                    };
                    let info = IncomingCall {
                        line: self.cfg.line.name.clone(),
                        call,
                        number,
                        toa,
                        name: None,
                    };
                    if self
                        .incoming
                        .try_send(IncomingLineCall {
                            info,
                            call: Box::new(handle),
                        })
                        .is_err()
                    {
                        tracing::warn!(line = %self.cfg.line.name, "incoming calls queue full: rejecting");
                    }
                }
                LineEvent::AudioStart(id) => {
                    let audio_path = port.as_ref().map(|(_, pair)| pair.audio.clone());
                    if let Some(path) = audio_path {
                        let rtp = self.calls.get_mut(&id).and_then(|c| c.rtp.take());
                        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
                        let bridge = BridgeCfg {
                            to_modem_db: self.cfg.gain_to_modem_db,
                            to_rtp_db: self.cfg.gain_to_rtp_db,
                            jitter: self.cfg.jitter,
                        };
                        tokio::spawn(audio_task(
                            path,
                            id,
                            rtp,
                            ctl_rx,
                            self.dtmf.0.clone(),
                            bridge,
                            self.cfg.line.name.clone(),
                        ));
                        self.audio = Some(AudioRun {
                            call: id,
                            ctl: ctl_tx,
                        });
                    }
                }
                LineEvent::AudioStop(id) => {
                    if self.audio.as_ref().is_some_and(|a| a.call == id) {
                        // Dropping the control channel ends the audio task.
                        self.audio = None;
                    }
                }
                LineEvent::SmsRead { index, pdu } => self.sms_event(SmsEvent::Read { index, pdu }),
                LineEvent::SmsDirect { pdu } => self.sms_event(SmsEvent::Direct { pdu }),
                LineEvent::SmsSent { id, result } => self.sms_event(SmsEvent::Sent { id, result }),
                LineEvent::Ussd { status, text, dcs } => {
                    self.sms_event(SmsEvent::Ussd { status, text, dcs })
                }
                LineEvent::Reopen { after } => {
                    self.flush(port).await;
                    *port = None;
                    self.machine.port_closed("reset", Instant::now());
                    *reopen_at = Some(tokio::time::Instant::now() + after);
                }
            }
        }
        self.publish();
    }

    fn sms_event(&self, event: SmsEvent) {
        let line = self.cfg.line.name.clone();
        if self.sms.send(LineSms { line, event }).is_err() {
            tracing::debug!(line = %self.cfg.line.name, "nobody takes text messages: left on the modem");
        }
    }

    fn publish(&self) {
        let s = self.machine.status();
        if *self.status.borrow() != *s {
            self.status.send_replace(s.clone());
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct BridgeCfg {
    to_modem_db: f32,
    to_rtp_db: f32,
    jitter: JitterConfig,
}

impl BridgeCfg {
    fn bridge(&self, codec: RtpCodec) -> Bridge {
        Bridge::new(BridgeConfig {
            law: codec.law,
            pt: codec.pt,
            dtmf_pt: codec.dtmf_pt,
            to_modem_db: self.to_modem_db,
            to_rtp_db: self.to_rtp_db,
            jitter: self.jitter,
            ssrc: rand::random(),
            seq: rand::random(),
            ts: rand::random(),
        })
    }
}

/// Moves one call's audio: modem frames → RTP at once, RTP → jitter buffer → one frame to the
/// modem per frame from it (or every 20 ms by our clock while the modem sends nothing, with
/// comfort silence towards RTP). Ends when its control channel closes or the port fails.
async fn audio_task(
    path: std::path::PathBuf,
    call: CallId,
    mut rtp: Option<Box<RtpAttach>>,
    mut ctl: mpsc::UnboundedReceiver<AudioCtl>,
    dtmf: DtmfTx,
    cfg: BridgeCfg,
    line: String,
) {
    let mut port = match discover::open_port(&path) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(%line, port = %path.display(), error = %e, "cannot open the audio port");
            return;
        }
    };
    let mut bridge = cfg.bridge(rtp.as_ref().map_or(RtpCodec::PCMU, |r| r.codec));
    let mut buf = [0u8; 2048];
    let mut rbuf = [0u8; 2048];
    let mut out = Vec::with_capacity(4 * FRAME_BYTES);
    let mut last_modem = tokio::time::Instant::now() - Duration::from_secs(1);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            c = ctl.recv() => match c {
                Some(AudioCtl::Attach(r)) => {
                    bridge = cfg.bridge(r.codec);
                    rtp = Some(r);
                }
                None => break,
            },
            r = port.read(&mut buf) => {
                let n = match r {
                    Ok(n) if n > 0 => n,
                    _ => break,
                };
                last_modem = tokio::time::Instant::now();
                out.clear();
                let send = |p: &[u8]| {
                    if let Some(r) = &rtp {
                        if let Some(to) = r.remote {
                            let _ = r.socket.try_send_to(p, to);
                        }
                    }
                };
                bridge.from_modem(&buf[..n], send, |m| out.extend_from_slice(m));
                if !out.is_empty() && port.write_all(&out).await.is_err() {
                    break;
                }
            }
            r = async {
                match &rtp {
                    Some(r) => r.socket.recv_from(&mut rbuf).await,
                    None => std::future::pending().await,
                }
            } => {
                if let Ok((n, from)) = r {
                    if let Some(r) = &mut rtp {
                        if r.remote.is_none() {
                            r.remote = Some(from);
                        }
                    }
                    if let RtpInput::Dtmf(d) = bridge.from_rtp(&rbuf[..n]) {
                        let _ = dtmf.send((call, d));
                    }
                }
            }
            _ = tick.tick() => {
                if last_modem.elapsed() > Duration::from_millis(60) {
                    let mut frame = [0u8; FRAME_BYTES];
                    bridge.to_modem_unpaced(&mut frame);
                    if port.write_all(&frame).await.is_err() {
                        break;
                    }
                    if let Some(r) = &rtp {
                        if let Some(to) = r.remote {
                            let mut pkt = [0u8; RTP_PACKET_LEN];
                            let n = bridge.silence_packet(&mut pkt);
                            let _ = r.socket.try_send_to(&pkt[..n], to);
                        }
                    }
                }
            }
        }
    }
    tracing::debug!(%line, call, stats = ?bridge.jitter().stats(), "audio stopped");
}
