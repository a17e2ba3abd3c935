//! Giving freed heap back to the operating system. glibc's allocator keeps the memory a flood
//! made it take (in every thread's arena) and hands it out again later; the process would stay
//! at its peak size for good. After each housekeeping round the free tops and whole free pages
//! of every arena are returned (`malloc_trim`), so the resident size falls back near its
//! baseline once the flood is over. Other C libraries return memory by themselves.

/// Returns free heap memory to the system; a no-op where the allocator is not glibc's.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and only walks the allocator's own arenas
        // under their locks; it may be called from any thread at any time.
        let released = unsafe { libc::malloc_trim(0) };
        if released != 0 {
            tracing::trace!("heap memory given back to the system");
        }
    }
}
