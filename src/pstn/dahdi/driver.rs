//! The thread that drives one FXO line: reads the channel (which blocks until the card has a
//! frame, so the card's clock paces everything), feeds the [`FxoLine`] machine, carries out its
//! hook changes and hands its reports and the call audio to the gateway.

use super::channel::{Channel, ChannelError, Input};
use super::fxo::{FxoLine, FxoOutput};
use crate::pstn::audio::{Frame, SILENCE};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};

/// A request to the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Place a call.
    Dial(String),
    /// Answer the ringing call.
    Answer,
    /// End the call.
    Hangup,
    /// A hook flash during the call.
    Flash,
    /// Stop the driver.
    Stop,
}

/// Where the call audio goes and comes from.
pub trait AudioPort: Send {
    /// A frame heard on the line (to the phone).
    fn heard_on_line(&mut self, frame: &Frame);
    /// The next frame to send to the line (from the phone); silence when there is none.
    fn next_for_line(&mut self, frame: &mut Frame);
}

/// Runs the line until the channel closes or [`Command::Stop`]; refused commands are reported
/// as `Err` on `replies`.
pub fn run(
    ch: Box<dyn Channel>,
    mut line: FxoLine,
    commands: Receiver<Command>,
    outputs: Sender<FxoOutput>,
    mut audio: Box<dyn AudioPort>,
) -> Result<(), ChannelError> {
    run_on(ch, &mut line, &commands, &outputs, audio.as_mut())
}

/// [`run`] borrowing the line, the queues and the audio, so that a caller can open the
/// channel again after it failed and go on with them.
pub fn run_on(
    mut ch: Box<dyn Channel>,
    line: &mut FxoLine,
    commands: &Receiver<Command>,
    outputs: &Sender<FxoOutput>,
    audio: &mut dyn AudioPort,
) -> Result<(), ChannelError> {
    let mut frame: Frame = SILENCE;
    let mut out: Frame = SILENCE;
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Dial(n)) => {
                    if let Err(e) = line.dial(&n) {
                        tracing::info!(line = %line.settings().name, "dial refused: {e}");
                        // A line that cannot take the call (busy with another, still
                        // ringing with a refused one, in alarm) is a missing circuit (34:
                        // the next line is tried), not a busy callee.
                        let q850 = match e {
                            crate::pstn::LineError::BadNumber(_) => 28,
                            _ => 34,
                        };
                        let cause = crate::pstn::EndCause::from_q850(q850, false);
                        let _ = outputs
                            .send(FxoOutput::Progress(crate::pstn::CallProgress::Ended(cause)));
                    }
                }
                Ok(Command::Answer) => {
                    let _ = line.answer();
                }
                Ok(Command::Hangup) => {
                    let _ = line.hangup();
                }
                Ok(Command::Flash) => {
                    if let Err(e) = line.flash() {
                        tracing::info!(line = %line.settings().name, "hook flash refused: {e}");
                    }
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return Ok(()),
                Err(TryRecvError::Empty) => break,
            }
        }
        drain(line, ch.as_mut(), outputs)?;
        match ch.read(&mut frame)? {
            Input::Audio => {
                line.audio_in(&frame);
                if line.state() == super::fxo::FxoState::InCall {
                    audio.heard_on_line(&frame);
                }
                if !line.audio_out(&mut out) {
                    if line.state() == super::fxo::FxoState::InCall {
                        audio.next_for_line(&mut out);
                    } else {
                        out = SILENCE;
                    }
                }
                drain(line, ch.as_mut(), outputs)?;
                ch.write(&out)?;
            }
            Input::Event(ev) => {
                tracing::debug!(channel = ch.name(), ?ev, "line event");
                line.event(ev);
            }
        }
    }
}

fn drain(
    line: &mut FxoLine,
    ch: &mut dyn Channel,
    outputs: &Sender<FxoOutput>,
) -> Result<(), ChannelError> {
    while let Some(o) = line.poll() {
        match o {
            FxoOutput::Hook(h) => ch.set_hook(h)?,
            other => {
                let _ = outputs.send(other);
            }
        }
    }
    Ok(())
}
