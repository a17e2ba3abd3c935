//! `[media]` as the gateway takes it: the RTP relay's ports and addresses and the hold music.
//! `config::media` maps the file onto it; the engine's own [`crate::media::MediaConfig`] is
//! made from it when the gateway is assembled.

use std::ops::RangeInclusive;

/// `[media]`: RTP settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// Local UDP ports for RTP/RTCP (`rtp_ports = "10000-20000"`); the first one is even.
    pub rtp_ports: RangeInclusive<u16>,
    /// The address RTP is received on and advertised in SDP (`address`); by default the
    /// first specific SIP listen address, else the machine's primary address.
    pub address: Option<std::net::IpAddr>,
    /// Threads that move RTP (`io_threads`); default: the machine's cores, at most 4.
    pub io_threads: Option<usize>,
    /// What a held party hears (`hold_music`): `default` (the built-in melody), `tone`,
    /// `tone:HZ`, `none` (silence) or the path of a WAV or raw G.711 file (8 kHz mono); see
    /// [`crate::media::hold_music`].
    pub hold_music: String,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_ports: 10000..=20000,
            address: None,
            io_threads: None,
            hold_music: "default".into(),
        }
    }
}
