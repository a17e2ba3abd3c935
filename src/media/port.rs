//! The media port of call control: what the B2BUA needs of a call's media (a relay anchoring
//! both legs: its ports, the legs' parameters, DTMF to send, statistics) as traits, so that
//! call control neither binds sockets nor spawns tasks, and tests give it a fake. The real
//! port ([`RelayPort`]) takes relays from the [`MediaEngine`] whose I/O threads send each
//! relay's events, tagged with the call, to one shared sink (no task per call).

use super::hold_music::HoldMusic;
use super::{CallMediaStats, EventSink, LegMedia, MediaEngine, MediaError, Relay, Side};

/// The media of one call, as call control drives it.
pub trait CallMedia: Send {
    /// The relay's local RTP port towards `side`.
    fn local_port(&self, side: Side) -> u16;
    /// Both legs' parameters (after an offer/answer).
    fn update(&self, a: LegMedia, b: LegMedia);
    /// Sends a DTMF digit to `to` as RFC 4733 events.
    fn send_dtmf(&self, to: Side, digit: char, duration_ms: u32);
    /// The call's media statistics so far.
    fn stats(&self) -> CallMediaStats;
    /// Music on hold to the phone of `to` (`on`), or its own audio again (`!on`). Media
    /// without hold music keeps the default: nothing happens (the held party hears silence).
    fn hold_music(&self, _to: Side, _on: bool) {}
}

impl CallMedia for Relay {
    fn local_port(&self, side: Side) -> u16 {
        Relay::local_port(self, side)
    }

    fn update(&self, a: LegMedia, b: LegMedia) {
        Relay::update(self, a, b)
    }

    fn send_dtmf(&self, to: Side, digit: char, duration_ms: u32) {
        Relay::send_dtmf(self, to, digit, duration_ms)
    }

    fn stats(&self) -> CallMediaStats {
        Relay::stats(self)
    }
}

/// Where call control gets the media of a new call. Dropping the [`CallMedia`] releases it.
pub trait MediaPort: Send {
    /// Media for call `call`; its events ([`super::MediaEvent`]) go to the port's sink tagged with
    /// `call`.
    fn allocate(&mut self, call: u64) -> Result<Box<dyn CallMedia>, MediaError>;

    /// [`MediaPort::allocate`] for a call whose caller offered RTCP multiplexing (`a_mux`,
    /// RFC 5761), which the answer will accept: leg A then needs no RTCP socket. Ports that do
    /// not care about sockets take the default.
    fn allocate_muxed(&mut self, call: u64, a_mux: bool) -> Result<Box<dyn CallMedia>, MediaError> {
        let _ = a_mux;
        self.allocate(call)
    }
}

/// Relays of a [`MediaEngine`], their events sent by the relays' I/O threads to one sink.
pub struct RelayPort {
    engine: MediaEngine,
    sink: EventSink,
    /// What held parties hear (`None`: silence).
    hold_music: Option<HoldMusic>,
}

impl RelayPort {
    pub fn new(engine: MediaEngine, sink: EventSink) -> RelayPort {
        RelayPort {
            engine,
            sink,
            hold_music: None,
        }
    }

    /// Held parties hear `music` ([`CallMedia::hold_music`]).
    pub fn with_hold_music(mut self, music: Option<HoldMusic>) -> RelayPort {
        self.hold_music = music;
        self
    }
}

/// A relay with the music its held parties hear.
struct WithMusic {
    relay: Relay,
    music: HoldMusic,
}

impl CallMedia for WithMusic {
    fn local_port(&self, side: Side) -> u16 {
        self.relay.local_port(side)
    }

    fn update(&self, a: LegMedia, b: LegMedia) {
        self.relay.update(a, b)
    }

    fn send_dtmf(&self, to: Side, digit: char, duration_ms: u32) {
        self.relay.send_dtmf(to, digit, duration_ms)
    }

    fn stats(&self) -> CallMediaStats {
        self.relay.stats()
    }

    fn hold_music(&self, to: Side, on: bool) {
        self.relay.play_music(to, on.then(|| self.music.clone()));
    }
}

impl MediaPort for RelayPort {
    fn allocate(&mut self, call: u64) -> Result<Box<dyn CallMedia>, MediaError> {
        self.allocate_muxed(call, false)
    }

    fn allocate_muxed(&mut self, call: u64, a_mux: bool) -> Result<Box<dyn CallMedia>, MediaError> {
        let relay = self
            .engine
            .allocate_into_muxed(call, self.sink.clone(), a_mux)?;
        Ok(match &self.hold_music {
            Some(music) => Box::new(WithMusic {
                relay,
                music: music.clone(),
            }),
            None => Box::new(relay),
        })
    }
}
