//! DAHDI channel I/O on Linux: `/dev/dahdi/channel` bound to a channel number with
//! `DAHDI_SPECIFY`, 20 ms blocks of signed linear audio (`DAHDI_SET_BLOCKSIZE` 160,
//! `DAHDI_SETLINEAR`), hook control (`DAHDI_HOOK`) and events (a read fails with `ELAST` when
//! one is pending; `DAHDI_GETEVENT` fetches it). Numbers from dahdi-linux's
//! `include/dahdi/user.h`.

use super::channel::{Channel, ChannelError, Hook, Input};
use crate::pstn::audio::{Frame, FRAME_BYTES, FRAME_SAMPLES};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

/// The generic channel device.
pub const DEVICE: &str = "/dev/dahdi/channel";

const DAHDI_CODE: u32 = 0xDA;
const fn ioc(dir: u32, nr: u32, size: u32) -> u32 {
    (dir << 30) | (size << 16) | (DAHDI_CODE << 8) | nr
}
const IOW: u32 = 1;
const IOR: u32 = 2;
const IOWR: u32 = 3;
const INT: u32 = 4;
/// `struct dahdi_params`: 12 ints, a 40-byte name, 11 ints and a u32.
const PARAMS_SIZE: u32 = 12 * 4 + 40 + 11 * 4 + 4;

const SET_BLOCKSIZE: u32 = ioc(IOW, 1, INT);
const GET_PARAMS: u32 = ioc(IOWR, 5, PARAMS_SIZE);
const HOOK: u32 = ioc(IOW, 7, INT);
const GETEVENT: u32 = ioc(IOR, 8, INT);
const SPECIFY: u32 = ioc(IOW, 38, INT);
const SETLINEAR: u32 = ioc(IOW, 40, INT);
/// `struct dahdi_echocanparams`: `tap_length`, `param_count` (no parameters follow here).
const ECHOCANPARAMS_SIZE: u32 = 8;
const ECHOCANCEL_PARAMS: u32 = ioc(IOW, 33, ECHOCANPARAMS_SIZE);

/// `read` fails with this errno when an event is pending.
const ELAST: i32 = 500;

const SIG_FXS: i32 = 1 << 13;
const SIG_FXO: i32 = 1 << 12;

#[repr(C)]
#[derive(Clone, Copy)]
struct Params {
    ints: [i32; 12],
    name: [u8; 40],
    times: [i32; 11],
    alarms: u32,
}

/// A DAHDI channel opened for an FXO line.
#[derive(Debug)]
pub struct DahdiChannel {
    file: File,
    name: String,
    buf: [u8; FRAME_BYTES],
}

fn sig_name(sig: i32) -> String {
    match sig {
        0 => "nothing (the channel is not configured)".into(),
        s if s & SIG_FXO != 0 => "an FXS port (fxo* signalling: a phone port)".into(),
        s if s & (1 << 7) != 0 => "a clear/digital channel".into(),
        s => format!("signalling 0x{s:x}"),
    }
}

impl DahdiChannel {
    /// Opens channel `number`; the error names the channel and what to check.
    pub fn open(number: i32) -> Result<DahdiChannel, ChannelError> {
        let name = format!("dahdi:{number}");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEVICE)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => ChannelError::NoDahdi {
                    channel: name.clone(),
                    path: DEVICE.into(),
                },
                std::io::ErrorKind::PermissionDenied => ChannelError::Permission {
                    channel: name.clone(),
                    path: DEVICE.into(),
                },
                _ => ChannelError::Io {
                    channel: name.clone(),
                    context: "opening /dev/dahdi/channel",
                    source: e,
                },
            })?;
        let fd = file.as_raw_fd();
        let int_ioctl = |req: u32, v: i32| -> std::io::Result<()> {
            let mut v = v;
            // SAFETY: `fd` is open; the request takes a pointer to an int that lives across
            // the call.
            let r = unsafe { libc::ioctl(fd, req as _, &mut v as *mut i32) };
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        int_ioctl(SPECIFY, number).map_err(|source| ChannelError::NoChannel {
            channel: name.clone(),
            number,
            source,
        })?;
        let mut p = Params {
            ints: [0; 12],
            name: [0; 40],
            times: [0; 11],
            alarms: 0,
        };
        // SAFETY: `p` is a `struct dahdi_params` of the size the request encodes.
        let r = unsafe { libc::ioctl(fd, GET_PARAMS as _, &mut p as *mut Params) };
        if r < 0 {
            return Err(ChannelError::Io {
                channel: name,
                context: "DAHDI_GET_PARAMS",
                source: std::io::Error::last_os_error(),
            });
        }
        let sig = p.ints[3];
        if sig & SIG_FXS == 0 {
            return Err(ChannelError::NotFxo {
                channel: name,
                number,
                sig: sig_name(sig),
            });
        }
        let io = |context: &'static str| {
            let name = name.clone();
            move |source| ChannelError::Io {
                channel: name,
                context,
                source,
            }
        };
        int_ioctl(SET_BLOCKSIZE, FRAME_SAMPLES as i32).map_err(io("DAHDI_SET_BLOCKSIZE"))?;
        int_ioctl(SETLINEAR, 1).map_err(io("DAHDI_SETLINEAR"))?;
        Ok(DahdiChannel {
            file,
            name,
            buf: [0; FRAME_BYTES],
        })
    }

    fn int_ioctl(&mut self, req: u32, v: i32, context: &'static str) -> Result<(), ChannelError> {
        let mut v = v;
        // SAFETY: the file is open; the request takes a pointer to an int.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), req as _, &mut v as *mut i32) };
        if r < 0 {
            return Err(ChannelError::Io {
                channel: self.name.clone(),
                context,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn get_event(&mut self) -> Result<i32, ChannelError> {
        let mut v: i32 = 0;
        // SAFETY: as above.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), GETEVENT as _, &mut v as *mut i32) };
        if r < 0 {
            return Err(ChannelError::Io {
                channel: self.name.clone(),
                context: "DAHDI_GETEVENT",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(v)
    }
}

impl Channel for DahdiChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn set_hook(&mut self, hook: Hook) -> Result<(), ChannelError> {
        self.int_ioctl(HOOK, hook.dahdi(), "DAHDI_HOOK")
    }

    /// `DAHDI_ECHOCANCEL_PARAMS` with `taps` as the tap length and no parameters: the echo
    /// canceller assigned to the channel in /etc/dahdi/system.conf (`echocanceller=oslec,1-4`,
    /// or the card's hardware one) is enabled with that length; 0 disables it.
    fn set_echo_cancel(&mut self, taps: i32) -> Result<(), ChannelError> {
        // tap_length, param_count.
        let mut p: [u32; 2] = [u32::try_from(taps).unwrap_or(0), 0];
        // SAFETY: the file is open; the request takes a pointer to a `struct
        // dahdi_echocanparams` (two u32) of the size it encodes, alive across the call.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                ECHOCANCEL_PARAMS as _,
                p.as_mut_ptr(),
            )
        };
        if r < 0 {
            let source = std::io::Error::last_os_error();
            return Err(ChannelError::Io {
                channel: self.name.clone(),
                context: if taps > 0 {
                    "DAHDI_ECHOCANCEL_PARAMS (is an echo canceller assigned to the channel? e.g. echocanceller=oslec,1-4 in /etc/dahdi/system.conf)"
                } else {
                    "DAHDI_ECHOCANCEL_PARAMS"
                },
                source,
            });
        }
        Ok(())
    }

    fn read(&mut self, frame: &mut Frame) -> Result<Input, ChannelError> {
        match self.file.read(&mut self.buf) {
            Ok(0) => Err(ChannelError::Closed(self.name.clone())),
            Ok(n) => {
                for (i, s) in frame.iter_mut().enumerate() {
                    *s = if 2 * i + 1 < n {
                        i16::from_le_bytes([self.buf[2 * i], self.buf[2 * i + 1]])
                    } else {
                        0
                    };
                }
                Ok(Input::Audio)
            }
            Err(e) if e.raw_os_error() == Some(ELAST) => {
                let code = self.get_event()?;
                Ok(Input::Event(super::channel::ChannelEvent::from_dahdi(code)))
            }
            Err(source) => Err(ChannelError::Io {
                channel: self.name.clone(),
                context: "reading audio",
                source,
            }),
        }
    }

    fn write(&mut self, frame: &Frame) -> Result<(), ChannelError> {
        crate::pstn::audio::frame_to_bytes(frame, &mut self.buf);
        match self.file.write(&self.buf) {
            Ok(_) => Ok(()),
            // An event pending also fails writes; the next read fetches it.
            Err(e) if e.raw_os_error() == Some(ELAST) => Ok(()),
            Err(source) => Err(ChannelError::Io {
                channel: self.name.clone(),
                context: "writing audio",
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_user_h() {
        // _IOW(0xDA, 38, int) and friends, as the kernel header computes them.
        assert_eq!(SPECIFY, 0x4004_DA26);
        assert_eq!(HOOK, 0x4004_DA07);
        assert_eq!(GETEVENT, 0x8004_DA08);
        assert_eq!(SET_BLOCKSIZE, 0x4004_DA01);
        assert_eq!(SETLINEAR, 0x4004_DA28);
        assert_eq!(std::mem::size_of::<Params>() as u32, PARAMS_SIZE);
        assert_eq!(GET_PARAMS, 0xC088_DA05);
        // _IOW(DAHDI_CODE, 33, struct dahdi_echocanparams)
        assert_eq!(ECHOCANCEL_PARAMS, 0x4008_DA21);
    }

    #[test]
    fn a_host_without_dahdi_gets_an_error_naming_the_channel_and_the_modules() {
        if std::path::Path::new(DEVICE).exists() {
            return;
        }
        let e = DahdiChannel::open(4).unwrap_err().to_string();
        assert!(e.contains("dahdi:4"), "{e}");
        assert!(e.contains("/dev/dahdi/channel"), "{e}");
        assert!(e.contains("lsmod"), "{e}");
    }
}
