//! The I/O shell of call legs on PSTN lines: carries out call control's [`LineCommand`]s on
//! the lines of the [`LinePool`] (dial, answer, digits, hang up) and turns what each line call
//! reports ([`CallProgress`]) into [`LineEvent`]s for the SIP core. One small task per leg
//! owns the [`LineCall`] and its RTP socket; no SIP is spoken with a line. The tasks run under
//! the [`Supervisor`] as [`COMPONENT`]: a leg whose task panics is reported ended (its
//! reporter's drop), the panic is counted, and legs that keep panicking mark the process
//! unhealthy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::b2bua::line_leg::LegCodec;
use crate::b2bua::{LegId, LineCommand, LineEvent};
use crate::pstn::line::refusal;
use crate::pstn::routes::caller_e164;
use crate::pstn::{AudioEndpoint, CallProgress, IncomingLineCall, LineCall, LinePool, RtpCodec};
use crate::routing::numbering::NumberingPlan;
use crate::supervise::Supervisor;

/// The name under which the leg tasks are supervised.
pub const COMPONENT: &str = "PSTN line legs";

/// Runs one leg's task (or a hang-up) under the process's supervisor.
fn spawn_leg(task: impl std::future::Future<Output = ()> + Send + 'static) {
    Supervisor::global().spawn_task(COMPONENT, task, || {});
}

/// What a leg's task is told after it started.
#[derive(Debug)]
enum LegCommand {
    Answer { codec: LegCodec, relay: SocketAddr },
    Digit(char),
    Hangup,
}

/// Where the events of every leg go, tagged with their leg.
pub type LineEvents = mpsc::UnboundedSender<(LegId, LineEvent)>;

/// The legs on lines in progress.
pub struct LineLegs {
    pool: Arc<LinePool>,
    events: LineEvents,
    legs: HashMap<LegId, mpsc::UnboundedSender<LegCommand>>,
    /// For writing callers in E.164.
    plan: NumberingPlan,
}

impl LineLegs {
    /// Legs on the lines of `pool`; their events go to `events`.
    pub fn new(pool: Arc<LinePool>, events: LineEvents, plan: NumberingPlan) -> LineLegs {
        LineLegs {
            pool,
            events,
            legs: HashMap::new(),
            plan,
        }
    }

    /// Writes the callers of the next calls with `plan` (the numbering plan changed).
    pub fn set_plan(&mut self, plan: NumberingPlan) {
        self.plan = plan;
    }

    /// A call arrived on a line: `start` offers it to call control (line name, caller in
    /// E.164 or `None` when withheld, the caller ID name when the line gave one, the leg's RTP
    /// address) and gives the call's id, or `None` when it is refused (the line is hung up).
    pub fn incoming(
        &mut self,
        call: IncomingLineCall,
        start: impl FnOnce(&str, Option<String>, Option<String>, SocketAddr) -> Option<u64>,
    ) {
        let IncomingLineCall { info, call } = call;
        let bound = std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| {
            s.set_nonblocking(true)?;
            let addr = s.local_addr()?;
            Ok((UdpSocket::from_std(s)?, addr))
        });
        let (socket, addr) = match bound {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(line = %info.line, "RTP socket for a call that arrived: {e}");
                spawn_leg(async move {
                    let _ = call.hangup().await;
                });
                return;
            }
        };
        let caller = info
            .number
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(|n| caller_e164(&self.plan, n, info.toa));
        // The caller ID name is outside data: only printable characters that need no quoting.
        let name: Option<String> = info
            .name
            .as_deref()
            .map(|n| {
                n.chars()
                    .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
                    .take(64)
                    .collect::<String>()
            })
            .filter(|n| !n.trim().is_empty());
        tracing::info!(line = %info.line, caller = ?caller, name = ?name, "incoming call");
        let Some(id) = start(&info.line, caller, name, addr) else {
            spawn_leg(async move {
                let _ = call.hangup().await;
            });
            return;
        };
        let leg = LegId {
            call: id,
            fork: LegId::INCOMING,
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.legs.insert(leg, tx);
        let events = self.events.clone();
        spawn_leg(async move {
            let mut report = Reporter {
                leg,
                events,
                ended: false,
            };
            drive(call, &mut report, &mut rx, Some(socket)).await;
        });
    }

    /// Legs with a task (for leak checks).
    pub fn len(&self) -> usize {
        self.legs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    /// Carries out one command of call control.
    pub fn command(&mut self, cmd: LineCommand) {
        match cmd {
            LineCommand::Dial {
                leg,
                line,
                number,
                codec,
                relay,
            } => {
                let (tx, rx) = mpsc::unbounded_channel();
                self.legs.insert(leg, tx);
                let pool = Arc::clone(&self.pool);
                let events = self.events.clone();
                spawn_leg(outgoing(pool, leg, line, number, codec, relay, events, rx));
            }
            LineCommand::Answer { leg, codec, relay } => {
                self.send(leg, LegCommand::Answer { codec, relay });
            }
            LineCommand::Digit { leg, digit } => self.send(leg, LegCommand::Digit(digit)),
            LineCommand::Hangup { leg } => {
                self.send(leg, LegCommand::Hangup);
                self.legs.remove(&leg);
            }
        }
    }

    /// A leg's event passes by on its way to the core: a leg that ended is forgotten.
    pub fn observe(&mut self, leg: LegId, event: &LineEvent) {
        if matches!(event, LineEvent::Ended { .. } | LineEvent::Refused { .. }) {
            self.legs.remove(&leg);
        }
    }

    fn send(&mut self, leg: LegId, cmd: LegCommand) {
        if let Some(tx) = self.legs.get(&leg) {
            if tx.send(cmd).is_err() {
                self.legs.remove(&leg);
            }
        }
    }
}

/// Reports the end of a leg once, even when its task stops early (a panic, the runtime
/// shutting down): the core then never waits for a line that is gone.
struct Reporter {
    leg: LegId,
    events: LineEvents,
    ended: bool,
}

impl Reporter {
    fn send(&mut self, event: LineEvent) {
        if matches!(event, LineEvent::Ended { .. } | LineEvent::Refused { .. }) {
            if self.ended {
                return;
            }
            self.ended = true;
        }
        let _ = self.events.send((self.leg, event));
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.events.send((
                self.leg,
                LineEvent::Ended {
                    status: 503,
                    q850: None,
                },
            ));
        }
    }
}

fn rtp_codec(c: LegCodec) -> RtpCodec {
    RtpCodec {
        law: c.law,
        pt: c.pt,
        dtmf_pt: c.dtmf_pt,
    }
}

/// A line's progress as call control's event (`None`: nothing to tell).
fn event_of(p: CallProgress) -> LineEvent {
    match p {
        CallProgress::Proceeding => LineEvent::Proceeding,
        CallProgress::Ringing => LineEvent::Ringing,
        CallProgress::EarlyMedia => LineEvent::EarlyMedia,
        CallProgress::Answered => LineEvent::Answered,
        CallProgress::Digit(d) => LineEvent::Digit(d),
        CallProgress::Ended(cause) => {
            tracing::info!(q850 = cause.q850, reason = ?cause.reason, "PSTN side ended");
            LineEvent::Ended {
                status: if cause.sip_status >= 300 {
                    cause.sip_status
                } else {
                    480
                },
                q850: Some(cause.q850),
            }
        }
    }
}

async fn bind_rtp() -> std::io::Result<(UdpSocket, SocketAddr)> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    Ok((socket, addr))
}

#[allow(clippy::too_many_arguments)]
async fn outgoing(
    pool: Arc<LinePool>,
    leg: LegId,
    line: String,
    number: String,
    codec: LegCodec,
    relay: SocketAddr,
    events: LineEvents,
    mut cmds: mpsc::UnboundedReceiver<LegCommand>,
) {
    let mut report = Reporter {
        leg,
        events,
        ended: false,
    };
    let (socket, addr) = match bind_rtp().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%line, "RTP socket for a line call: {e}");
            report.send(LineEvent::Refused {
                status: 503,
                q850: None,
                reason: format!("no RTP socket: {e}"),
            });
            return;
        }
    };
    report.send(LineEvent::Audio(addr));
    tracing::info!(%number, %line, "dialling");
    let dialled = tokio::select! {
        r = pool.dial(&number, Some(&line)) => r,
        // Given up while the line dials: stop at once.
        _ = wait_hangup(&mut cmds) => {
            report.ended = true;
            return;
        }
    };
    let call = match dialled {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(%number, %line, "cannot dial: {e}");
            // A line already in a call is not the callee being busy: 503 with Q.850 34 lets
            // the call try the next line.
            let (status, q850) = refusal(&e);
            report.send(LineEvent::Refused {
                status,
                q850,
                reason: e.to_string(),
            });
            return;
        }
    };
    if let Err(e) = call
        .attach_audio(AudioEndpoint {
            socket,
            remote: Some(relay),
            codec: rtp_codec(codec),
        })
        .await
    {
        tracing::warn!(%line, "attaching RTP: {e}");
    }
    drive(call, &mut report, &mut cmds, None).await;
}

/// Waits for a hang-up (or for call control to forget the leg).
async fn wait_hangup(cmds: &mut mpsc::UnboundedReceiver<LegCommand>) {
    loop {
        match cmds.recv().await {
            None | Some(LegCommand::Hangup) => return,
            Some(_) => {}
        }
    }
}

/// Runs a call on a line until it ends: its progress to the core, the core's commands to it.
/// `pending`: the RTP socket of a call that arrived, attached when it is answered.
async fn drive(
    mut call: Box<dyn LineCall>,
    report: &mut Reporter,
    cmds: &mut mpsc::UnboundedReceiver<LegCommand>,
    mut pending: Option<UdpSocket>,
) {
    let line = call.line().to_owned();
    loop {
        tokio::select! {
            ev = call.next_event() => match ev {
                Some(p) => {
                    let ended = matches!(p, CallProgress::Ended(_));
                    report.send(event_of(p));
                    if ended {
                        return;
                    }
                }
                None => {
                    report.send(LineEvent::Ended { status: 503, q850: None });
                    return;
                }
            },
            cmd = cmds.recv() => match cmd {
                None | Some(LegCommand::Hangup) => {
                    report.ended = true;
                    if let Err(e) = call.hangup().await {
                        tracing::debug!(%line, "hanging up: {e}");
                    }
                    return;
                }
                Some(LegCommand::Digit('!')) => {
                    if let Err(e) = call.flash().await {
                        tracing::info!(%line, "hook flash not sent: {e}");
                    }
                }
                Some(LegCommand::Digit(d)) => {
                    if let Err(e) = call.send_digit(d).await {
                        tracing::info!(%line, digit = %d, "digit not sent: {e}");
                    }
                }
                Some(LegCommand::Answer { codec, relay }) => {
                    if let Some(socket) = pending.take() {
                        if let Err(e) = call
                            .attach_audio(AudioEndpoint { socket, remote: Some(relay), codec: rtp_codec(codec) })
                            .await
                        {
                            tracing::warn!(%line, "attaching RTP: {e}");
                        }
                    }
                    if let Err(e) = call.answer().await {
                        tracing::warn!(%line, "answering the line: {e}");
                    }
                }
            }
        }
    }
}
