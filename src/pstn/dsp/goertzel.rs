//! The Goertzel filter: the power of one frequency over a block of samples.
//!
//! For a sinusoid of amplitude `A` exactly at the filter's frequency, a block of `N` samples
//! gives a power of about `(A·N/2)²`; [`Goertzel::normalised`] divides that out so a detector
//! can compare a tone's power with the block's total energy (`Σx²` ≈ `A²·N/2`).

use std::f32::consts::PI;

/// One Goertzel filter (the coefficient and the running state of one block).
#[derive(Debug, Clone, Copy)]
pub struct Goertzel {
    coeff: f32,
    s1: f32,
    s2: f32,
}

impl Goertzel {
    /// A filter for `freq` Hz at `rate` samples per second.
    pub fn new(freq: f32, rate: u32) -> Goertzel {
        Goertzel {
            coeff: 2.0 * (2.0 * PI * freq / rate as f32).cos(),
            s1: 0.0,
            s2: 0.0,
        }
    }

    /// Feeds one sample.
    #[inline]
    pub fn push(&mut self, x: f32) {
        let s = x + self.coeff * self.s1 - self.s2;
        self.s2 = self.s1;
        self.s1 = s;
    }

    /// The power of the block so far, `|X(f)|²`.
    pub fn power(&self) -> f32 {
        self.s1 * self.s1 + self.s2 * self.s2 - self.coeff * self.s1 * self.s2
    }

    /// The power as a share of the block's energy: a pure tone at this frequency over `n`
    /// samples with energy `energy` gives about 1.0.
    pub fn normalised(&self, energy: f32, n: usize) -> f32 {
        if energy <= 0.0 || n == 0 {
            return 0.0;
        }
        self.power() / (energy * n as f32 / 2.0)
    }

    /// Starts a new block.
    pub fn reset(&mut self) {
        self.s1 = 0.0;
        self.s2 = 0.0;
    }
}

/// `a` over `b` in decibels (power ratio).
pub fn db(a: f32, b: f32) -> f32 {
    if b <= 0.0 {
        return f32::INFINITY;
    }
    10.0 * (a / b).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, amp: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (2.0 * PI * freq * i as f32 / 8000.0).sin())
            .collect()
    }

    #[test]
    fn a_tone_at_the_frequency_has_its_energy_there_and_not_elsewhere() {
        let x = sine(697.0, 1000.0, 205);
        let energy: f32 = x.iter().map(|v| v * v).sum();
        let mut on = Goertzel::new(697.0, 8000);
        let mut off = Goertzel::new(941.0, 8000);
        for &v in &x {
            on.push(v);
            off.push(v);
        }
        let r = on.normalised(energy, x.len());
        assert!((0.9..1.1).contains(&r), "{r}");
        assert!(off.normalised(energy, x.len()) < 0.05);
    }
}
