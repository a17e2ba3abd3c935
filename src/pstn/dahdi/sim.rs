//! A simulated DAHDI channel for tests: the gateway's channel `sim:/path/to/socket` connects
//! to a Unix stream socket where the test plays the line (the telephone exchange side).
//!
//! Messages, both ways, are one type byte and a payload:
//!
//! | type | direction       | payload                                                   |
//! |------|-----------------|-----------------------------------------------------------|
//! | `A`  | both            | 320 bytes: one 20 ms frame, 160 samples s16le at 8 kHz     |
//! | `E`  | line → gateway  | i32 LE: a `DAHDI_EVENT_*` code (ring, polarity, alarm …)   |
//! | `H`  | gateway → line  | i32 LE: a `DAHDI_HOOK` value (0 on, 1 off, 3 flash)        |
//!
//! Like a card, the line side paces the channel: it sends one audio frame every 20 ms and the
//! gateway answers each with one frame of its own.

use super::channel::{Channel, ChannelError, ChannelEvent, Hook, Input};
use crate::pstn::audio::{Frame, FRAME_BYTES};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Type byte of an audio frame.
pub const AUDIO: u8 = b'A';
/// Type byte of an event.
pub const EVENT: u8 = b'E';
/// Type byte of a hook command.
pub const HOOK: u8 = b'H';

/// The gateway side of a simulated channel.
#[derive(Debug)]
pub struct SimChannel {
    stream: UnixStream,
    name: String,
    buf: [u8; FRAME_BYTES],
}

impl SimChannel {
    /// Connects to the simulator's socket.
    pub fn connect(path: &Path) -> Result<SimChannel, ChannelError> {
        let name = format!("sim:{}", path.display());
        let stream = UnixStream::connect(path).map_err(|source| ChannelError::Io {
            channel: name.clone(),
            context: "connecting to the simulator",
            source,
        })?;
        Ok(SimChannel {
            stream,
            name,
            buf: [0; FRAME_BYTES],
        })
    }

    fn io(&self, context: &'static str) -> impl FnOnce(std::io::Error) -> ChannelError + '_ {
        move |source| {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                ChannelError::Closed(self.name.clone())
            } else {
                ChannelError::Io {
                    channel: self.name.clone(),
                    context,
                    source,
                }
            }
        }
    }
}

impl Channel for SimChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_hook(&mut self, hook: Hook) -> Result<(), ChannelError> {
        let mut m = [HOOK, 0, 0, 0, 0];
        m[1..].copy_from_slice(&hook.dahdi().to_le_bytes());
        self.stream.write_all(&m).map_err(|e| ChannelError::Io {
            channel: self.name.clone(),
            context: "sending hook",
            source: e,
        })
    }

    fn read(&mut self, frame: &mut Frame) -> Result<Input, ChannelError> {
        let mut t = [0u8; 1];
        self.stream
            .read_exact(&mut t)
            .map_err(|e| (self.io("reading"))(e))?;
        match t[0] {
            AUDIO => {
                let mut buf = [0u8; FRAME_BYTES];
                self.stream
                    .read_exact(&mut buf)
                    .map_err(|e| (self.io("reading audio"))(e))?;
                self.buf = buf;
                for (i, s) in frame.iter_mut().enumerate() {
                    *s = i16::from_le_bytes([buf[2 * i], buf[2 * i + 1]]);
                }
                Ok(Input::Audio)
            }
            EVENT => {
                let mut v = [0u8; 4];
                self.stream
                    .read_exact(&mut v)
                    .map_err(|e| (self.io("reading event"))(e))?;
                Ok(Input::Event(ChannelEvent::from_dahdi(i32::from_le_bytes(
                    v,
                ))))
            }
            other => Err(ChannelError::Io {
                channel: self.name.clone(),
                context: "reading",
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unknown message type 0x{other:02x}"),
                ),
            }),
        }
    }

    /// The simulated line has no echo: nothing to do, only said in the log.
    fn set_echo_cancel(&mut self, taps: i32) -> Result<(), ChannelError> {
        tracing::info!(channel = %self.name, taps, "echo canceller: not used on the simulator");
        Ok(())
    }

    fn write(&mut self, frame: &Frame) -> Result<(), ChannelError> {
        let mut m = [0u8; 1 + FRAME_BYTES];
        m[0] = AUDIO;
        for (i, s) in frame.iter().enumerate() {
            m[1 + 2 * i..3 + 2 * i].copy_from_slice(&s.to_le_bytes());
        }
        self.stream.write_all(&m).map_err(|e| ChannelError::Io {
            channel: self.name.clone(),
            context: "writing audio",
            source: e,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn frames_events_and_hook_cross_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("line.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let line = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut m = vec![AUDIO];
            m.extend((0..160i16).flat_map(|v| v.to_le_bytes()));
            m.push(EVENT);
            m.extend(17i32.to_le_bytes());
            s.write_all(&m).unwrap();
            let mut got = [0u8; 5 + 1 + FRAME_BYTES];
            s.read_exact(&mut got).unwrap();
            got
        });
        let mut ch = SimChannel::connect(&path).unwrap();
        let mut f = [0i16; 160];
        assert_eq!(ch.read(&mut f).unwrap(), Input::Audio);
        assert_eq!(f[159], 159);
        assert_eq!(
            ch.read(&mut f).unwrap(),
            Input::Event(ChannelEvent::Polarity)
        );
        ch.set_hook(Hook::Off).unwrap();
        ch.write(&[7; 160]).unwrap();
        let got = line.join().unwrap();
        assert_eq!(&got[..5], &[HOOK, 1, 0, 0, 0]);
        assert_eq!(got[5], AUDIO);
        assert_eq!(&got[6..8], &7i16.to_le_bytes());
        drop(ch);
    }
}
