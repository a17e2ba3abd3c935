//! Receive statistics of one RTP stream: RFC 3550 A.1/A.3 sequence tracking and loss,
//! A.8 interarrival jitter, packet and byte counters.
//!
//! Plain state machines: the caller passes the arrival time (in RTP timestamp units), so the
//! maths is testable without clocks. No allocation.

/// RFC 3550 A.1: a jump larger than this is a restart, not loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: packets this far behind are late/duplicates, not a restart.
const MAX_MISORDER: u16 = 100;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// Extended sequence number tracking and cumulative loss (RFC 3550 A.1 and A.3).
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    initialised: bool,
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    bad_seq: u32,
    received: u64,
    /// Loss accumulated by earlier runs (before a restart or SSRC change).
    carried_lost: i64,
}

impl SeqTracker {
    /// Records a packet with sequence number `seq`.
    pub fn update(&mut self, seq: u16) {
        if !self.initialised {
            self.restart(seq);
            self.received = 1;
            return;
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta < MAX_DROPOUT {
            // In order, with permissible gap.
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            self.max_seq = seq;
        } else if udelta <= (RTP_SEQ_MOD - MAX_MISORDER as u32) as u16 {
            // A very large jump: a restart if two packets in a row agree.
            if seq as u32 == self.bad_seq {
                self.carried_lost = self.lost();
                self.restart(seq);
                self.received = 0;
            } else {
                self.bad_seq = (seq as u32 + 1) & (RTP_SEQ_MOD - 1);
                return;
            }
        }
        // else: duplicate or reordered packet.
        self.received += 1;
    }

    fn restart(&mut self, seq: u16) {
        self.initialised = true;
        self.base_seq = seq as u32;
        self.max_seq = seq;
        self.bad_seq = RTP_SEQ_MOD + 1;
        self.cycles = 0;
    }

    /// Starts over for a new source, keeping the loss counted so far.
    pub fn new_source(&mut self) {
        if self.initialised {
            self.carried_lost = self.lost();
        }
        self.initialised = false;
        self.received = 0;
    }

    /// Highest extended sequence number seen.
    pub fn extended_max(&self) -> u64 {
        self.cycles as u64 + self.max_seq as u64
    }

    /// Packets expected (A.3).
    pub fn expected(&self) -> u64 {
        if !self.initialised {
            return 0;
        }
        self.extended_max() + 1 - self.base_seq as u64
    }

    /// Cumulative packets lost (A.3; negative when duplicates outnumber losses).
    pub fn lost(&self) -> i64 {
        self.carried_lost + self.expected() as i64 - self.received as i64
    }
}

/// Interarrival jitter estimator (RFC 3550 A.8), in timestamp units.
#[derive(Debug, Clone, Default)]
pub struct Jitter {
    prev_transit: Option<i32>,
    jitter: f64,
}

impl Jitter {
    /// Records a packet with RTP timestamp `rtp_ts` that arrived at `arrival` (same clock).
    pub fn update(&mut self, rtp_ts: u32, arrival: u32) {
        let transit = arrival.wrapping_sub(rtp_ts) as i32;
        if let Some(prev) = self.prev_transit {
            let d = transit.wrapping_sub(prev).unsigned_abs() as f64;
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.prev_transit = Some(transit);
    }

    /// Forgets the previous transit time (new source).
    pub fn reset(&mut self) {
        self.prev_transit = None;
    }

    /// Current estimate in timestamp units.
    pub fn value(&self) -> f64 {
        self.jitter
    }

    /// Current estimate in milliseconds for a clock of `clock_rate` Hz.
    pub fn millis(&self, clock_rate: u32) -> f64 {
        if clock_rate == 0 {
            return 0.0;
        }
        self.jitter * 1000.0 / clock_rate as f64
    }
}

/// Everything the relay counts about one received stream.
#[derive(Debug, Clone, Default)]
pub struct StreamStats {
    pub packets: u64,
    pub bytes: u64,
    pub seq: SeqTracker,
    pub jitter: Jitter,
    ssrc: Option<u32>,
}

impl StreamStats {
    /// Records a packet. `jitter_sample` is `Some(arrival)` for packets whose timestamps follow
    /// the media clock (audio, not events).
    pub fn record(&mut self, ssrc: u32, seq: u16, ts: u32, bytes: usize, arrival: Option<u32>) {
        if self.ssrc != Some(ssrc) {
            self.ssrc = Some(ssrc);
            self.seq.new_source();
            self.jitter.reset();
        }
        self.packets += 1;
        self.bytes += bytes as u64;
        self.seq.update(seq);
        if let Some(arrival) = arrival {
            self.jitter.update(ts, arrival);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_loss_in_order() {
        let mut s = SeqTracker::default();
        for i in 0..100u16 {
            s.update(i.wrapping_add(65500));
        }
        assert_eq!(s.expected(), 100);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.extended_max(), 65536 + 63);
    }

    #[test]
    fn gap_counts_as_loss_and_late_packet_repairs_it() {
        let mut s = SeqTracker::default();
        for i in [1u16, 2, 3, 7, 8] {
            s.update(i);
        }
        assert_eq!(s.lost(), 3);
        s.update(5); // late
        assert_eq!(s.lost(), 2);
        s.update(5); // duplicate
        assert_eq!(s.lost(), 1);
    }

    #[test]
    fn restart_after_big_jump() {
        let mut s = SeqTracker::default();
        for i in 0..10u16 {
            s.update(i);
        }
        s.update(40000); // suspicious, ignored
        assert_eq!(s.lost(), 0);
        s.update(40001); // confirmed: new run
        s.update(40002);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.expected(), 2);
    }

    #[test]
    fn jitter_zero_for_perfect_timing() {
        let mut j = Jitter::default();
        for i in 0..50u32 {
            j.update(1000 + i * 160, 77 + i * 160);
        }
        assert_eq!(j.value(), 0.0);
    }

    #[test]
    fn jitter_a8_maths() {
        let mut j = Jitter::default();
        // transit: 0, 16, 0 -> D = 16, then 16
        j.update(0, 0);
        j.update(160, 176);
        assert!((j.value() - 1.0).abs() < 1e-9);
        j.update(320, 320);
        assert!((j.value() - (1.0 + 15.0 / 16.0)).abs() < 1e-9);
        assert!((j.millis(8000) - (1.0 + 15.0 / 16.0) / 8.0).abs() < 1e-9);
        // Converges to the constant |D|.
        let mut j = Jitter::default();
        for i in 0..2000u32 {
            let wobble = if i % 2 == 0 { 0 } else { 80 };
            j.update(i * 160, i * 160 + wobble);
        }
        assert!((j.value() - 80.0).abs() < 0.5, "{}", j.value());
    }

    #[test]
    fn ssrc_change_restarts_tracking() {
        let mut st = StreamStats::default();
        st.record(1, 10, 0, 172, Some(0));
        st.record(1, 12, 320, 172, Some(320));
        assert_eq!(st.seq.lost(), 1);
        st.record(2, 5000, 9, 172, Some(400));
        st.record(2, 5001, 169, 172, Some(560));
        assert_eq!(st.seq.lost(), 1);
        assert_eq!(st.packets, 4);
        assert_eq!(st.bytes, 688);
    }
}
