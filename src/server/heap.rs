//! Giving freed heap back to the operating system after a flood. The binary allocates with
//! mimalloc (src/main.rs): each thread owns the pages it allocated, memory freed by another
//! thread is only reclaimed by the owner, and empty segments are returned to the system
//! lazily. Left alone, a process that served 20 000 connections stays at its peak size. So
//! every runtime thread collects its heap when it goes idle, at most every
//! [`COLLECT_EVERY`] ([`collect_when_idle`], the runtime's park hook), and the housekeeping
//! round collects too and trims the C library's heap, where SQLite allocates
//! ([`give_back`]). The resident size then falls back towards its baseline after a flood.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often one thread may collect its heap.
pub const COLLECT_EVERY: Duration = Duration::from_secs(5);

thread_local! {
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
}

fn collect() {
    // SAFETY: mi_collect takes no pointers; with `force` it frees the calling thread's empty
    // pages, collects abandoned segments and purges the arenas, under mimalloc's own
    // synchronisation. It may be called from any thread at any time, and is harmless when
    // mimalloc is not the global allocator (it then collects its own, unused heap).
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// For the runtime's `on_thread_park`: collects the idle thread's heap, at most once every
/// [`COLLECT_EVERY`] per thread (parking is frequent under load; this costs a clock read).
pub fn collect_when_idle() {
    let now = Instant::now();
    let due = LAST_COLLECT.with(|last| match last.get() {
        Some(t) if now.duration_since(t) < COLLECT_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        collect();
    }
}

/// Returns the free heap memory of this thread, of mimalloc's arenas and of the C library.
pub fn give_back() {
    collect();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and only walks glibc's own arenas under their
        // locks; it may be called from any thread at any time.
        unsafe { libc::malloc_trim(0) };
    }
}
