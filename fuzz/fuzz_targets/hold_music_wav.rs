//! Any file given as `[media] hold_music`: the WAV reader takes it (8 kHz mono PCM, µ-law or
//! A-law) or says why not; every frame of what it took can be played; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pasarela::media::hold_music::HoldMusic;
use pasarela::media::Law;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = HoldMusic::from_wav(data) {
        for n in 0..m.frames().min(64) {
            assert_eq!(m.frame(Law::Ulaw, n).len(), 160);
            assert_eq!(m.frame(Law::Alaw, n).len(), 160);
        }
    }
});
