//! Hash maps of the per-call signalling paths, with a hasher chosen by where the key comes from.
//!
//! The standard `HashMap` hashes with SipHash-1-3, which costs ~100 instructions for a `u64`
//! key and was ~3 % of the instructions per call (issue 22). Keys the program makes itself
//! (call ids, transaction keys) cannot be chosen by an attacker, so [`IdMap`] uses the
//! multiply-rotate Fx hash. Keys taken from the wire (branches, Call-IDs, tags, numbers) can,
//! so [`WireMap`] uses foldhash seeded at random per map: fast, and still resistant to
//! HashDoS (colliding keys cannot be computed without the seed).

use std::collections::HashMap;

/// A map keyed by identifiers the program assigned (never by data from the wire).
pub type IdMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// A map keyed by data from the wire: randomly seeded foldhash.
pub type WireMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn wire_maps_are_seeded_per_map() {
        // Two maps hash the same key differently: an attacker cannot precompute collisions.
        let a = WireMap::<String, u8>::default();
        let b = WireMap::<String, u8>::default();
        let key = "z9hG4bK-branch";
        assert_ne!(a.hasher().hash_one(key), b.hasher().hash_one(key));
    }

    #[test]
    fn id_maps_behave_as_maps() {
        let mut m = IdMap::<u64, &str>::default();
        m.insert(7, "seven");
        m.insert(1 << 40, "big");
        assert_eq!(m.get(&7), Some(&"seven"));
        assert_eq!(m.remove(&(1 << 40)), Some("big"));
        assert_eq!(m.len(), 1);
    }
}
