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
//!
//! mimalloc keeps a heap per thread, and a block freed by another thread (a datagram received
//! on a tokio worker and dropped by the SIP loop, a relay built on the loop and dropped on a
//! media I/O thread) is only taken back by its owner; an idle thread never does. So
//! [`give_back`] (the SIP loop's housekeeping) also asks every thread to collect its own heap:
//! tokio's workers when they park, the media I/O threads at their next wake-up
//! ([`give_back_if_asked`]). SQLite allocates with glibc's malloc (its page caches and the
//! records' statements, on the store's threads), whose per-thread arenas keep freed memory
//! until trimmed: [`give_back`] trims them too.
//!
//! mimalloc is compiled without its 4 MiB pages (`MI_ENABLE_LARGE_PAGES=0`, set in
//! `.cargo/config.toml`): with them, blocks of 84–512 KiB share 4 MiB pages, so a single such
//! block that outlives a flood (a table at its peak size, the nonces' replay state) keeps a
//! whole page of the flood's freed memory resident (4.2 MiB in one run, 60 s after a 3 000
//! calls/s flood). Without them such blocks get pages of their own, freed whole. Three
//! interleaved flood pairs (anonymous memory 60 s after minus idle): +2.7, +2.5, +2.6 MiB
//! against +2.8, +3.3, +2.8 MiB with them.
//!
//! What stayed after that was mostly small pages (64 KiB, one block size each) fully touched
//! by the flood and kept by a handful of live blocks each: 60 s after a flood mimalloc's pages
//! held 4.1 MiB for 1.9 MiB of live blocks (a page of 128 B blocks: 1 KiB live in 131 KiB).
//! So on x86_64 its arena slices, and with them the small pages, are 32 KiB
//! (`MI_ARENA_SLICE_SHIFT=15`), and each page's bookkeeping sits at the start of the page
//! (`MI_PAGE_META_IS_SEPARATED=0`) instead of in an array at the start of the arena, whose
//! entries for every page a flood used stayed resident. Interleaved floods: +2.84, +2.70 MiB
//! before, +1.62, +1.41 MiB with both (each alone: +2.2 and +2.4–2.7); instructions per call
//! unchanged (callgrind).

use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped by every [`give_back`]: each thread collects its heap once per bump.
static EPOCH: AtomicU64 = AtomicU64::new(0);

std::thread_local! {
    /// The last [`EPOCH`] this thread collected at.
    static SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Spare capacity below which a collection that still holds entries keeps it: a rehash or a
/// copy each housekeeping tick would cost more than the bytes are worth.
const SPARE_KEPT: usize = 4096;

/// Whether a collection of `len` entries of `entry` bytes in room for `capacity` should give
/// its capacity back: always once it is empty, else when it holds less than a quarter of it
/// and more than [`SPARE_KEPT`] bytes would be given back. An empty one goes whole however
/// small: any block that outlives a flood keeps the allocator page it was put on (with all
/// the flood's freed memory around it) resident, so what long-lived structures do not use
/// right now is better freed than kept.
fn worth_shrinking(len: usize, capacity: usize, entry: usize) -> bool {
    if len == 0 {
        return capacity > 0 && entry > 0;
    }
    capacity > 4 * len && (capacity - len).saturating_mul(entry) > SPARE_KEPT
}

/// Shrinks `map` after a flood (see [`worth_shrinking`]): a `HashMap` keeps the capacity of its
/// peak. Called from the periodic purges, so the cost (a rehash of what is left) is paid at
/// most once a tick and only after the map emptied.
pub fn shrink_map<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if worth_shrinking(map.len(), map.capacity(), std::mem::size_of::<(K, V)>()) {
        map.shrink_to_fit();
    }
}

/// [`shrink_map`] for a `Vec` (a queue drained between inputs).
pub fn shrink_vec<T>(v: &mut Vec<T>) {
    if worth_shrinking(v.len(), v.capacity(), std::mem::size_of::<T>()) {
        v.shrink_to_fit();
    }
}

/// [`shrink_map`] for a `VecDeque`.
pub fn shrink_deque<T>(q: &mut std::collections::VecDeque<T>) {
    if worth_shrinking(q.len(), q.capacity(), std::mem::size_of::<T>()) {
        q.shrink_to_fit();
    }
}

/// mimalloc's option numbers (`mi_option_e` in mimalloc v3's `mimalloc.h`, the version
/// `libmimalloc-sys` builds by default).
#[cfg(feature = "mimalloc")]
mod option {
    pub const ARENA_EAGER_COMMIT: i32 = 4;
    pub const ALLOW_THP: i32 = 43;
}

// Links mimalloc into every binary using the library (tests with their own global allocator
// too), so the symbols below resolve; there it collects an unused heap, which is harmless.
#[cfg(feature = "mimalloc")]
extern crate mimalloc as _;

#[cfg(feature = "mimalloc")]
extern "C" {
    /// From the mimalloc library linked in by the `mimalloc` crate.
    fn mi_option_set(option: i32, value: std::os::raw::c_long);
    fn mi_collect(force: bool);
}

/// Gives freed memory back now (the calling thread's heap, abandoned pages, arena purges that
/// are due, and glibc's free memory), and asks every other thread to collect its heap at its
/// next [`give_back_if_asked`]; the SIP loop calls it at housekeeping, so an idle process does
/// not wait for the next allocation to purge.
pub fn give_back() {
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed) + 1;
    SEEN.with(|s| s.set(epoch));
    collect();
    #[cfg(feature = "heap-report")]
    report::log();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of glibc's arenas; it takes their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Collects the calling thread's heap if [`give_back`] was called since it last did: one
/// atomic load otherwise. Called by threads that outlive calls (tokio's workers when they
/// park, the media I/O threads each wake-up). True when it collected: the caller may shrink
/// its own structures too.
pub fn give_back_if_asked() -> bool {
    let epoch = EPOCH.load(Ordering::Relaxed);
    if SEEN.with(|s| s.replace(epoch)) != epoch {
        collect();
        true
    } else {
        false
    }
}

/// Collects the calling thread's heap now: for threads that block outside the runtime (the
/// store's writers), once they are idle after a burst.
pub fn give_back_here() {
    collect();
}

fn collect() {
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

/// mimalloc's pages as its heap visitor reports them: for the [`report`] diagnostic and for
/// the test that the build settings of `.cargo/config.toml` reached the allocator.
#[cfg(all(feature = "mimalloc", any(test, feature = "heap-report")))]
mod pages {
    use std::ffi::c_void;

    /// `mi_heap_area_t` of mimalloc v3's `mimalloc.h`.
    #[repr(C)]
    struct Area {
        blocks: *mut c_void,
        reserved: usize,
        committed: usize,
        used: usize,
        block_size: usize,
        full_block_size: usize,
        reserved1: *mut c_void,
    }

    type Visit = extern "C" fn(*const c_void, *const Area, *mut c_void, usize, *mut c_void) -> bool;

    extern "C" {
        fn mi_heap_main() -> *mut c_void;
        fn mi_heap_visit_blocks(
            heap: *mut c_void,
            blocks: bool,
            visit: Visit,
            arg: *mut c_void,
        ) -> bool;
    }

    /// One page: its block size, bytes reserved and committed, blocks in use.
    #[derive(Debug, Clone, Copy)]
    #[allow(dead_code)] // the report reads some fields, the tests others
    pub(super) struct Page {
        pub block_size: usize,
        pub reserved: usize,
        pub committed: usize,
        pub used: usize,
    }

    extern "C" fn visit(
        _heap: *const c_void,
        area: *const Area,
        block: *mut c_void,
        _size: usize,
        arg: *mut c_void,
    ) -> bool {
        // SAFETY: mimalloc passes its area and our `Vec` back; called once per area (no
        // blocks are visited).
        if let (true, Some(area), Some(pages)) =
            (block.is_null(), unsafe { area.as_ref() }, unsafe {
                arg.cast::<Vec<Page>>().as_mut()
            })
        {
            pages.push(Page {
                block_size: area.block_size,
                reserved: area.reserved,
                committed: area.committed,
                used: area.used,
            });
        }
        true
    }

    /// Every page of the main heap. It walks the allocator's page lists while other threads
    /// may allocate, which mimalloc does not promise to be safe: for diagnostics and tests only.
    pub(super) fn all() -> Vec<Page> {
        let mut pages = Vec::with_capacity(1024);
        // SAFETY: see above; the visitor only reads the areas it is given.
        unsafe {
            mi_heap_visit_blocks(mi_heap_main(), false, visit, (&raw mut pages).cast());
        }
        pages
    }
}

/// A diagnostic for finding what keeps memory after a flood (cargo feature `heap-report`, off
/// in every normal build): at each [`give_back`] it logs (warn) mimalloc's pages by block size,
/// largest committed first, as `SIZE B: pages/committed K/used K`. Pages committed far beyond
/// what their live blocks use are the fragmentation a flood leaves; the block size names the
/// kind of allocation to look for. It walks the allocator's page lists while other threads
/// allocate, which mimalloc does not promise to be safe: never ship it.
#[cfg(feature = "heap-report")]
mod report {
    use std::collections::BTreeMap;

    pub(super) fn log() {
        // Per block size: pages, committed bytes, bytes in live blocks.
        let mut sizes: BTreeMap<usize, (usize, usize, usize)> = BTreeMap::new();
        for p in super::pages::all() {
            let e = sizes.entry(p.block_size).or_default();
            e.0 += 1;
            e.1 += p.committed;
            e.2 += p.used * p.block_size;
        }
        let (pages, committed, used) = sizes
            .values()
            .fold((0, 0, 0), |a, v| (a.0 + v.0, a.1 + v.1, a.2 + v.2));
        let mut rows: Vec<_> = sizes.iter().collect();
        rows.sort_by_key(|(_, v)| std::cmp::Reverse(v.1));
        let top: Vec<String> = rows
            .iter()
            .take(16)
            .map(|(size, v)| format!("{size}B:{}/{}K/{}K", v.0, v.1 / 1024, v.2 / 1024))
            .collect();
        tracing::warn!(
            pages,
            committed_kib = committed / 1024,
            used_kib = used / 1024,
            by_size = %top.join(" "),
            "heap report"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, VecDeque};

    #[test]
    fn an_emptied_collection_gives_back_all_its_capacity_however_small() {
        let mut m: HashMap<u64, u64> = (0..10).map(|k| (k, k)).collect();
        m.clear();
        assert!(m.capacity() > 0);
        shrink_map(&mut m);
        assert_eq!(m.capacity(), 0, "an empty map kept its table");
        let mut v: Vec<[u8; 64]> = Vec::with_capacity(8);
        shrink_vec(&mut v);
        assert_eq!(v.capacity(), 0, "an empty vec kept its buffer");
        let mut q: VecDeque<[u8; 64]> = VecDeque::with_capacity(8);
        shrink_deque(&mut q);
        assert_eq!(q.capacity(), 0, "an empty deque kept its buffer");
    }

    #[test]
    fn a_collection_a_flood_grew_shrinks_to_what_it_holds() {
        // 100 entries of 80 B left in room for 600: within the old rule's 256-slot slack (kept
        // then, 40 KB for nothing), now given back.
        let mut q: VecDeque<[u8; 80]> = VecDeque::with_capacity(600);
        q.extend(std::iter::repeat_n([0u8; 80], 100));
        shrink_deque(&mut q);
        assert!(q.capacity() < 200, "kept {}", q.capacity());
        let mut m: HashMap<u32, [u8; 60]> = HashMap::with_capacity(400);
        m.extend((0..100).map(|k| (k, [0u8; 60])));
        assert!(m.capacity() >= 400);
        shrink_map(&mut m);
        assert!(m.capacity() < 200, "kept {}", m.capacity());
    }

    /// The settings of `.cargo/config.toml` reach mimalloc's C build only through the
    /// environment of cargo; a builder's own `CFLAGS_<target>` replaces them silently. Small
    /// blocks must sit on 32 KiB pages (x86_64), and a 128 KiB block on a page of its own, not
    /// on a shared "large" one. (Where the pages' bookkeeping sits is not visible from here.)
    #[cfg(all(feature = "mimalloc", target_arch = "x86_64"))]
    #[test]
    fn the_allocator_was_built_with_small_pages_and_no_large_ones() {
        use std::alloc::{GlobalAlloc, Layout};
        // The library's tests allocate with the system allocator: ask mimalloc directly.
        let layout = Layout::new::<[u8; 96]>();
        // 128 KiB: a block for mimalloc's large pages when they are on (4 MiB; 2 MiB with
        // 32 KiB slices).
        let big = Layout::from_size_align(128 << 10, 8).expect("layout");
        // SAFETY: non-zero-sized layouts; every block is freed below with its layout.
        let held: Vec<(*mut u8, Layout)> = (0..2000)
            .map(|_| layout)
            .chain([big])
            .map(|l| (unsafe { mimalloc::MiMalloc.alloc(l) }, l))
            .collect();
        assert!(held.iter().all(|(p, _)| !p.is_null()));
        let pages = pages::all();
        for (p, l) in held {
            // SAFETY: allocated above by the same allocator with the same layout.
            unsafe { mimalloc::MiMalloc.dealloc(p, l) };
        }
        let small: Vec<_> = pages.iter().filter(|p| p.block_size <= 1024).collect();
        assert!(!small.is_empty(), "no small pages seen: {pages:?}");
        for p in &small {
            assert!(
                p.reserved <= 32 * 1024,
                "a small page of {} KiB: {p:?}",
                p.reserved / 1024
            );
        }
        // With large pages on, the block shares a page of 2 or 4 MiB; without, it has its own.
        let own = pages.iter().find(|p| p.block_size >= 128 << 10);
        assert!(
            own.is_some_and(|p| p.reserved < 256 << 10),
            "the 128 KiB block is on a large page: {own:?}"
        );
    }

    #[test]
    fn a_collection_using_its_capacity_keeps_it() {
        let mut v: Vec<u64> = Vec::with_capacity(1024);
        v.extend(0..300);
        shrink_vec(&mut v);
        assert_eq!(v.capacity(), 1024, "a quarter used: kept");
        // A few spare slots of a small collection are not worth a copy each tick.
        let mut w: Vec<u64> = Vec::with_capacity(64);
        w.push(1);
        shrink_vec(&mut w);
        assert_eq!(w.capacity(), 64);
    }
}
