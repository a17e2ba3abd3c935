//! The 64-packet sliding replay window of RFC 3711 §3.3.2.

use super::SrtpError;

/// Packets received by index, up to 64 behind the highest.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReplayWindow {
    highest: Option<u64>,
    /// Bit `n` set: index `highest - n` was received.
    bits: u64,
}

const WINDOW: u64 = 64;

impl ReplayWindow {
    /// Whether `index` may be accepted (checked before authentication, recorded after).
    pub(crate) fn check(&self, index: u64) -> Result<(), SrtpError> {
        let Some(h) = self.highest else {
            return Ok(());
        };
        if index > h {
            return Ok(());
        }
        let back = h - index;
        if back >= WINDOW {
            return Err(SrtpError::TooOld);
        }
        if self.bits & (1u64 << back) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Records an authenticated `index`.
    pub(crate) fn accept(&mut self, index: u64) {
        match self.highest {
            None => {
                self.highest = Some(index);
                self.bits = 1;
            }
            Some(h) if index > h => {
                let shift = index - h;
                self.bits = if shift >= WINDOW {
                    0
                } else {
                    self.bits << shift
                };
                self.bits |= 1;
                self.highest = Some(index);
            }
            Some(h) => {
                let back = h - index;
                if back < WINDOW {
                    self.bits |= 1u64 << back;
                }
            }
        }
    }
}
