//! Memory given back: the allocator settings that let the process return to its idle size
//! after a burst of calls or a flood.
//!
//! Measured with the flood of `tests/limits_recovery.rs` (20 000 TCP connections, at most
//! 1 280 open at once): the heap itself peaks at about 14 MB and is back under 2 MB once the
//! connections are closed (heaptrack, system allocator), yet the resident size stayed 24 MB
//! higher. The holder was mimalloc's handling of its arenas, not live data: an arena is committed
//! eagerly and advised as transparent huge pages, so freed memory is purged only in whole 2 MiB
//! units (which a few live blocks keep from ever being free) and idle starts 5 MB higher. Without
//! eager commit and without THP, freed pages are purged (`MADV_DONTNEED`) shortly after they
//! become free.

/// mimalloc's option numbers (`mi_option_e` in mimalloc v3's `mimalloc.h`, the version
/// `libmimalloc-sys` builds by default).
#[cfg(feature = "mimalloc")]
mod option {
    pub const ARENA_EAGER_COMMIT: i32 = 4;
    pub const ALLOW_THP: i32 = 43;
}

#[cfg(feature = "mimalloc")]
extern "C" {
    /// From the mimalloc library linked in by the `mimalloc` crate.
    fn mi_option_set(option: i32, value: std::os::raw::c_long);
    fn mi_collect(force: bool);
}

/// Gives freed memory back now (the calling thread's heap, abandoned pages, and arena purges
/// that are due); the SIP loop calls it at housekeeping, so an idle process does not wait for
/// the next allocation to purge.
pub fn give_back() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_collect may be called from any thread at any time.
    unsafe {
        mi_collect(true);
    }
}

/// Sets the allocator up to give freed memory back (see the module notes). Call before anything
/// is allocated (the binary does it from a constructor, before `main`); `MIMALLOC_*` variables
/// in the environment for these two options are overridden.
pub fn tune_allocator() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_option_set only stores the value of a known option; it is thread-safe and may
    // be called at any time.
    unsafe {
        mi_option_set(option::ARENA_EAGER_COMMIT, 0);
        mi_option_set(option::ALLOW_THP, 0);
    }
}
