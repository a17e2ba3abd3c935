//! The audio bridge of a PSTN call, sans-IO: 20 ms frames of 8 kHz signed 16-bit PCM on the
//! modem side, G.711 RTP on the SIP side.
//!
//! - Modem → RTP: the byte stream of the audio port is cut into 320-byte frames; each frame is
//!   sent at once as one RTP packet (no buffering here, so no delay can build up on this side).
//! - RTP → modem: samples are placed by RTP timestamp into 20 ms frames (so packets of any
//!   length work), which go into a small jitter buffer ([`JitterBuffer`]) in order; one frame is taken out for every frame the modem sends (the modem's clock paces
//!   its own input, so a modem clock that drifts from the RTP sender's is absorbed here). The
//!   buffer is bounded: above its limit the oldest frames are dropped, and a level that stays
//!   above the target loses one frame, one that stays well below it plays a frame twice; an
//!   empty buffer plays comfort silence and fills up to the target again. Lost packets are concealed by repeating the last frame once, softer.
//! - Per-line gain, in dB, in each direction.
//!
//! - DTMF heard on the modem's audio (in-band: PSTN IVRs, voicemail, the far end's keypad) is
//!   detected ([`crate::pstn::dsp::dtmf`]) and sent to the phone as RFC 4733 events when
//!   telephone-event was negotiated: while a digit lasts its event packets replace the audio
//!   packets (the first 25 ms of tone, before the detector is sure, go out as audio).
//!
//! Nothing here allocates per frame or reads a clock.

use crate::media::dtmf::TelephoneEvent;
use crate::media::rtp::{self, Rtp};
use crate::media::{g711, Law};

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Bytes per frame on the modem's audio port (s16le).
pub const FRAME_BYTES: usize = FRAME_SAMPLES * 2;
/// RTP header plus one G.711 frame.
pub const RTP_PACKET_LEN: usize = rtp::FIXED_HEADER_LEN + FRAME_SAMPLES;

/// One 20 ms frame of linear PCM.
pub type Frame = [i16; FRAME_SAMPLES];

/// Silence.
pub const SILENCE: Frame = [0; FRAME_SAMPLES];

/// A fixed gain applied to samples, with saturation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gain {
    /// Factor in Q12 (4096 = 0 dB).
    q12: i32,
}

impl Gain {
    /// Unity gain.
    pub const UNITY: Gain = Gain { q12: 4096 };

    /// From decibels (clamped to −40…+20 dB).
    pub fn from_db(db: f32) -> Gain {
        let db = if db.is_finite() {
            db.clamp(-40.0, 20.0)
        } else {
            0.0
        };
        Gain {
            q12: (4096.0 * 10f32.powf(db / 20.0)).round() as i32,
        }
    }

    /// Applies the gain in place.
    pub fn apply(self, frame: &mut Frame) {
        if self.q12 == 4096 {
            return;
        }
        for s in frame.iter_mut() {
            let v = (i32::from(*s) * self.q12) >> 12;
            *s = v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
    }
}

/// Cuts the audio port's byte stream into frames.
#[derive(Debug)]
pub struct FrameAssembler {
    buf: [u8; FRAME_BYTES],
    len: usize,
}

impl Default for FrameAssembler {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        FrameAssembler {
            buf: [0; FRAME_BYTES],
            len: 0,
        }
    }

    /// Feeds bytes; calls `f` with each complete frame.
    pub fn push(&mut self, mut bytes: &[u8], mut f: impl FnMut(&Frame)) {
        while !bytes.is_empty() {
            let n = (FRAME_BYTES - self.len).min(bytes.len());
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
            if self.len == FRAME_BYTES {
                self.len = 0;
                let mut frame = SILENCE;
                for (i, s) in frame.iter_mut().enumerate() {
                    *s = i16::from_le_bytes([self.buf[2 * i], self.buf[2 * i + 1]]);
                }
                f(&frame);
            }
        }
    }
}

/// Writes a frame as s16le bytes.
pub fn frame_to_bytes(frame: &Frame, out: &mut [u8; FRAME_BYTES]) {
    for (i, s) in frame.iter().enumerate() {
        out[2 * i..2 * i + 2].copy_from_slice(&s.to_le_bytes());
    }
}

/// Makes RTP packets of G.711 frames (modem → SIP).
#[derive(Debug, Clone)]
pub struct Packetizer {
    law: Law,
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
    first: bool,
}

impl Packetizer {
    /// A packetizer for `law` on payload type `pt`, with random-looking start values given by
    /// the caller (RFC 3550 wants them unpredictable).
    pub fn new(law: Law, pt: u8, ssrc: u32, seq: u16, ts: u32) -> Self {
        Packetizer {
            law,
            pt,
            ssrc,
            seq,
            ts,
            first: true,
        }
    }

    /// Encodes `frame` into `out`; returns the packet length.
    pub fn packetize(&mut self, frame: &Frame, out: &mut [u8; RTP_PACKET_LEN]) -> usize {
        let h = rtp::write_header(out, self.first, self.pt, self.seq, self.ts, self.ssrc)
            .unwrap_or(rtp::FIXED_HEADER_LEN);
        for (o, s) in out[h..].iter_mut().zip(frame.iter()) {
            *o = match self.law {
                Law::Ulaw => g711::linear_to_ulaw(*s),
                Law::Alaw => g711::linear_to_alaw(*s),
            };
        }
        self.first = false;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
        h + FRAME_SAMPLES
    }

    /// Timestamp the next audio packet will carry.
    pub fn ts(&self) -> u32 {
        self.ts
    }

    /// Writes an RFC 4733 packet (payload type `pt`, timestamp `ts` of the event's start) into
    /// `out`; the sequence number advances, the audio timestamp does not.
    pub fn event(
        &mut self,
        pt: u8,
        marker: bool,
        ts: u32,
        ev: TelephoneEvent,
        out: &mut [u8; RTP_PACKET_LEN],
    ) -> usize {
        let h = rtp::write_header(out, marker, pt, self.seq, ts, self.ssrc)
            .unwrap_or(rtp::FIXED_HEADER_LEN);
        out[h..h + 4].copy_from_slice(&ev.to_bytes());
        self.first = false;
        self.seq = self.seq.wrapping_add(1);
        h + 4
    }

    /// Skips a frame's worth of timestamp (nothing to send, e.g. silence suppressed).
    pub fn skip(&mut self) {
        self.ts = self.ts.wrapping_add(FRAME_SAMPLES as u32);
    }
}

/// Jitter buffer limits, in frames of 20 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Level the buffer fills to before playing, and keeps around.
    pub target: usize,
    /// Hard limit: above it the oldest frames are dropped.
    pub max: usize,
}

impl Default for JitterConfig {
    /// 60 ms target, 100 ms limit.
    fn default() -> Self {
        JitterConfig { target: 3, max: 5 }
    }
}

/// Counters of a jitter buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames received and buffered.
    pub received: u64,
    /// Frames played.
    pub played: u64,
    /// Frames dropped: over the limit, or to pull the level back to the target.
    pub dropped: u64,
    /// Packets that came after their time had passed (or duplicates).
    pub late: u64,
    /// Frames concealed (lost packets).
    pub concealed: u64,
    /// Times the buffer ran empty (silence played).
    pub underruns: u64,
    /// Frames played twice because the level stayed low (the sender's clock is slower).
    pub stretched: u64,
}

/// The RTP → modem jitter buffer, ordered by RTP sequence number.
#[derive(Debug)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    /// Slot 0 holds the frame with sequence number `next_seq`.
    slots: [Option<Frame>; 16],
    head: usize,
    len: usize,
    next_seq: Option<u16>,
    playing: bool,
    last: Frame,
    concealed_once: bool,
    /// Level averaged over recent pulls, ×256.
    avg_level: u32,
    stats: JitterStats,
}

const SLOTS: usize = 16;
/// A sequence number this far from the expected one means a new stream.
const JUMP: usize = 64;

impl JitterBuffer {
    /// An empty buffer. `max` is capped at 15 frames.
    pub fn new(mut cfg: JitterConfig) -> Self {
        cfg.max = cfg.max.clamp(1, SLOTS - 1);
        cfg.target = cfg.target.clamp(1, cfg.max);
        JitterBuffer {
            cfg,
            slots: [None; SLOTS],
            head: 0,
            len: 0,
            next_seq: None,
            playing: false,
            last: SILENCE,
            concealed_once: false,
            avg_level: 0,
            stats: JitterStats::default(),
        }
    }

    /// Frames buffered (including gaps up to the newest frame).
    pub fn level(&self) -> usize {
        self.len
    }

    /// The counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    fn slot(&mut self, i: usize) -> &mut Option<Frame> {
        &mut self.slots[(self.head + i) % SLOTS]
    }

    fn pop_front(&mut self) -> Option<Frame> {
        if self.len == 0 {
            return None;
        }
        let f = self.slot(0).take();
        self.head = (self.head + 1) % SLOTS;
        self.len -= 1;
        self.next_seq = self.next_seq.map(|s| s.wrapping_add(1));
        f
    }

    /// Stores a decoded frame with its RTP sequence number.
    pub fn push(&mut self, seq: u16, frame: &Frame) {
        let next = *self.next_seq.get_or_insert(seq);
        let offset = seq.wrapping_sub(next) as i16;
        if offset < -(JUMP as i16) || offset >= JUMP as i16 {
            // A jump far away: the sender restarted its stream; start again from this frame.
            self.restart(seq);
            self.store(0, frame);
            return;
        }
        if offset < 0 {
            let back = offset.unsigned_abs() as usize;
            if self.playing || self.len + back > self.cfg.max {
                self.stats.late += 1;
                return;
            }
            // Not playing yet: an earlier frame that overtook nothing can still go in front.
            self.head = (self.head + SLOTS - back) % SLOTS;
            for i in 0..back {
                *self.slot(i) = None;
            }
            self.len += back;
            self.next_seq = Some(seq);
            self.store(0, frame);
            return;
        }
        let mut offset = offset as usize;
        // The newest frame must stay within the limit: the oldest frames make way.
        while offset >= self.cfg.max {
            if self.len > 0 {
                if self.pop_front().is_some() {
                    self.stats.dropped += 1;
                }
            } else {
                self.next_seq = self.next_seq.map(|s| s.wrapping_add(1));
            }
            offset -= 1;
        }
        self.store(offset, frame);
    }

    fn store(&mut self, offset: usize, frame: &Frame) {
        while self.len <= offset {
            let i = self.len;
            *self.slot(i) = None;
            self.len += 1;
        }
        let slot = self.slot(offset);
        if slot.is_some() {
            self.stats.late += 1;
            return;
        }
        *slot = Some(*frame);
        self.stats.received += 1;
    }

    fn restart(&mut self, seq: u16) {
        while self.len > 0 {
            self.pop_front();
        }
        self.next_seq = Some(seq);
        self.playing = false;
    }

    /// The next frame for the modem: buffered audio, a concealment of a lost frame, or silence.
    pub fn pull(&mut self) -> Frame {
        if !self.playing {
            if self.len >= self.cfg.target {
                self.playing = true;
                self.avg_level = (self.cfg.target as u32) << 8;
            } else {
                return SILENCE;
            }
        }
        if self.len == 0 {
            self.playing = false;
            self.stats.underruns += 1;
            return SILENCE;
        }
        // Keep the level near the target: when it has stayed a frame above for a while (the
        // sender's clock is faster than the modem's), skip one frame.
        self.avg_level = (self.avg_level * 63 + ((self.len as u32) << 8)) / 64;
        if self.avg_level > ((self.cfg.target as u32 + 1) << 8) && self.len > self.cfg.target {
            self.pop_front();
            self.stats.dropped += 1;
            self.avg_level = (self.cfg.target as u32) << 8;
        }
        // And when it has stayed well below (the sender's clock is slower), play the last
        // frame again instead of running dry later and filling up behind a gap of silence.
        if self.cfg.target >= 2
            && self.avg_level < ((self.cfg.target as u32 - 1) << 8)
            && !self.concealed_once
        {
            self.stats.stretched += 1;
            self.avg_level = (self.cfg.target as u32) << 8;
            let mut f = self.last;
            Gain::from_db(-3.0).apply(&mut f);
            return f;
        }
        self.stats.played += 1;
        match self.pop_front() {
            Some(f) => {
                self.last = f;
                self.concealed_once = false;
                f
            }
            None => {
                self.stats.concealed += 1;
                if self.concealed_once {
                    SILENCE
                } else {
                    self.concealed_once = true;
                    let mut f = self.last;
                    Gain::from_db(-6.0).apply(&mut f);
                    f
                }
            }
        }
    }
}

/// RFC 4733 §3.2 event code of a hook flash.
pub const FLASH_EVENT: u8 = 16;

/// What an RTP packet from the SIP side carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpInput {
    /// Audio, buffered.
    Audio,
    /// The start of a telephone-event (RFC 4733): send this digit to the modem.
    Dtmf(char),
    /// The start of RFC 4733 event 16, hook flash (the phone's R key).
    Flash,
    /// Nothing useful (comfort noise, other codecs, event continuations, bad packets).
    Ignored,
}

/// One call's audio bridge: the SIP side's codec, gains, the packetizer and the jitter buffer.
#[derive(Debug)]
pub struct Bridge {
    law: Law,
    pt: u8,
    dtmf_pt: Option<u8>,
    to_modem_gain: Gain,
    to_rtp_gain: Gain,
    assembler: FrameAssembler,
    packetizer: Packetizer,
    jitter: JitterBuffer,
    last_event_ts: Option<u32>,
    /// DTMF detector on the modem's audio (when telephone-event was negotiated).
    dtmf_rx: Option<Box<crate::pstn::dsp::dtmf::DtmfDetector>>,
    /// The digit being sent as RFC 4733: event code, start timestamp, duration so far.
    dtmf_tx: Option<(u8, u32, u16)>,
    rx_ssrc: Option<u32>,
    ts_origin: u32,
    stage: Frame,
    stage_idx: Option<u32>,
    stage_filled: usize,
}

/// Parameters of a [`Bridge`].
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Codec on the SIP side.
    pub law: Law,
    /// Its payload type (0 PCMU, 8 PCMA).
    pub pt: u8,
    /// Payload type of telephone-event, if negotiated.
    pub dtmf_pt: Option<u8>,
    /// Gain applied to audio going to the modem (dB).
    pub to_modem_db: f32,
    /// Gain applied to audio coming from the modem (dB).
    pub to_rtp_db: f32,
    /// Jitter buffer limits.
    pub jitter: JitterConfig,
    /// RTP SSRC of the packets sent.
    pub ssrc: u32,
    /// First sequence number.
    pub seq: u16,
    /// First timestamp.
    pub ts: u32,
}

impl BridgeConfig {
    /// PCMU, no DTMF, unity gains, default jitter buffer.
    pub fn pcmu(ssrc: u32) -> Self {
        BridgeConfig {
            law: Law::Ulaw,
            pt: 0,
            dtmf_pt: None,
            to_modem_db: 0.0,
            to_rtp_db: 0.0,
            jitter: JitterConfig::default(),
            ssrc,
            seq: 0,
            ts: 0,
        }
    }
}

impl Bridge {
    /// A bridge.
    pub fn new(cfg: BridgeConfig) -> Self {
        Bridge {
            law: cfg.law,
            pt: cfg.pt,
            dtmf_pt: cfg.dtmf_pt,
            to_modem_gain: Gain::from_db(cfg.to_modem_db),
            to_rtp_gain: Gain::from_db(cfg.to_rtp_db),
            assembler: FrameAssembler::new(),
            packetizer: Packetizer::new(cfg.law, cfg.pt, cfg.ssrc, cfg.seq, cfg.ts),
            jitter: JitterBuffer::new(cfg.jitter),
            last_event_ts: None,
            dtmf_rx: cfg
                .dtmf_pt
                .map(|_| Box::new(crate::pstn::dsp::dtmf::DtmfDetector::new())),
            dtmf_tx: None,
            rx_ssrc: None,
            ts_origin: 0,
            stage: SILENCE,
            stage_idx: None,
            stage_filled: 0,
        }
    }

    /// The jitter buffer (level and counters).
    pub fn jitter(&self) -> &JitterBuffer {
        &self.jitter
    }

    /// An RTP packet from the SIP side.
    pub fn from_rtp(&mut self, packet: &[u8]) -> RtpInput {
        let Ok(p) = Rtp::parse(packet) else {
            return RtpInput::Ignored;
        };
        let pt = p.payload_type();
        if Some(pt) == self.dtmf_pt {
            let Ok(ev) = TelephoneEvent::parse(p.payload()) else {
                return RtpInput::Ignored;
            };
            if self.last_event_ts == Some(p.timestamp()) {
                return RtpInput::Ignored;
            }
            self.last_event_ts = Some(p.timestamp());
            if ev.event == FLASH_EVENT {
                return RtpInput::Flash;
            }
            return ev.digit().map_or(RtpInput::Ignored, RtpInput::Dtmf);
        }
        if pt != self.pt {
            return RtpInput::Ignored;
        }
        // Samples are placed by RTP timestamp into 20 ms frames counted from the stream's
        // first timestamp, so 10, 20, 30 … ms packets all work (and 20 ms ones map 1:1).
        let ts = p.timestamp();
        if self.rx_ssrc != Some(p.ssrc()) {
            self.flush_stage();
            self.rx_ssrc = Some(p.ssrc());
            self.ts_origin = ts;
        }
        let rel = ts.wrapping_sub(self.ts_origin);
        for (i, b) in p.payload().iter().enumerate() {
            let r = rel.wrapping_add(i as u32);
            let idx = r / FRAME_SAMPLES as u32;
            let pos = (r % FRAME_SAMPLES as u32) as usize;
            if self.stage_idx != Some(idx) {
                self.flush_stage();
                self.stage = SILENCE;
                self.stage_idx = Some(idx);
                self.stage_filled = 0;
            }
            self.stage[pos] = match self.law {
                Law::Ulaw => g711::ulaw_to_linear(*b),
                Law::Alaw => g711::alaw_to_linear(*b),
            };
            self.stage_filled += 1;
            if pos == FRAME_SAMPLES - 1 {
                self.flush_stage();
            }
        }
        RtpInput::Audio
    }

    /// Bytes read from the modem's audio port. For each complete frame, `rtp` gets the packet
    /// to send and `modem` the 320 bytes to write back (one out for one in: the modem's clock
    /// paces both directions).
    pub fn from_modem(
        &mut self,
        bytes: &[u8],
        mut rtp: impl FnMut(&[u8]),
        mut modem: impl FnMut(&[u8; FRAME_BYTES]),
    ) {
        let Bridge {
            assembler,
            packetizer,
            jitter,
            to_rtp_gain,
            dtmf_rx,
            dtmf_tx,
            dtmf_pt,
            ..
        } = self;
        assembler.push(bytes, |frame| {
            let mut pkt = [0u8; RTP_PACKET_LEN];
            if let (Some(det), Some(pt)) = (dtmf_rx.as_mut(), *dtmf_pt) {
                let mut events = [None; 4];
                let mut k = 0;
                det.push(frame, |e| {
                    if k < events.len() {
                        events[k] = Some(e);
                        k += 1;
                    }
                });
                for e in events.into_iter().flatten() {
                    dtmf_event(e, pt, packetizer, dtmf_tx, &mut pkt, &mut rtp);
                }
            }
            if let (Some((code, ts, dur)), Some(pt)) = (dtmf_tx.as_mut(), *dtmf_pt) {
                let first = *dur == 0;
                *dur = dur.saturating_add(FRAME_SAMPLES as u16);
                let ev = TelephoneEvent {
                    event: *code,
                    end: false,
                    volume: 10,
                    duration: *dur,
                };
                let n = packetizer.event(pt, first, *ts, ev, &mut pkt);
                packetizer.skip();
                rtp(&pkt[..n]);
            } else {
                let mut f = *frame;
                to_rtp_gain.apply(&mut f);
                let n = packetizer.packetize(&f, &mut pkt);
                rtp(&pkt[..n]);
            }
            let out = jitter.pull();
            let mut bytes = [0u8; FRAME_BYTES];
            frame_to_bytes(&out, &mut bytes);
            modem(&bytes);
        });
    }

    /// Hands the frame being assembled to the jitter buffer (complete, or the part received).
    fn flush_stage(&mut self) {
        if let Some(idx) = self.stage_idx.take() {
            if self.stage_filled > 0 {
                self.to_modem_gain.apply(&mut self.stage);
                self.jitter.push(idx as u16, &self.stage);
            }
            self.stage_filled = 0;
        }
    }

    /// A frame for the modem when it is not sending (its own pace is unknown): the shell calls
    /// this every 20 ms by its own clock until the modem's frames arrive.
    pub fn to_modem_unpaced(&mut self, out: &mut [u8; FRAME_BYTES]) {
        let f = self.jitter.pull();
        frame_to_bytes(&f, out);
    }

    /// A comfort-silence RTP packet, for when the modem sends nothing (keeps the SIP side's
    /// stream and its RTP timeout alive).
    pub fn silence_packet(&mut self, out: &mut [u8; RTP_PACKET_LEN]) -> usize {
        self.packetizer.packetize(&SILENCE, out)
    }
}

/// Starts or ends the RFC 4733 event of a digit the detector reported; an end is sent three
/// times (RFC 4733 §2.5.1.4).
fn dtmf_event(
    e: crate::pstn::dsp::dtmf::DtmfEvent,
    pt: u8,
    packetizer: &mut Packetizer,
    tx: &mut Option<(u8, u32, u16)>,
    pkt: &mut [u8; RTP_PACKET_LEN],
    rtp: &mut impl FnMut(&[u8]),
) {
    use crate::pstn::dsp::dtmf::DtmfEvent;
    match e {
        DtmfEvent::Start { digit, .. } => {
            if let Some(code) = crate::media::dtmf::digit_to_event(digit) {
                *tx = Some((code, packetizer.ts(), 0));
            }
        }
        DtmfEvent::End { .. } => {
            if let Some((code, ts, dur)) = tx.take() {
                let ev = TelephoneEvent {
                    event: code,
                    end: true,
                    volume: 10,
                    duration: dur.max(FRAME_SAMPLES as u16),
                };
                for _ in 0..3 {
                    let n = packetizer.event(pt, false, ts, ev, pkt);
                    rtp(&pkt[..n]);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "audio_tests.rs"]
mod tests;
