//! Giving memory back to the OS after a fetch or a render.
//!
//! glibc keeps freed heap in per-thread arenas, and a fetch touches tens of MB (packs, trees)
//! on whichever blocking thread ran it: without a trim an idle daemon would keep the
//! high-water mark of its largest sync resident forever. The reconcilers call [`release`]
//! once a step is over; elsewhere (musl, other systems) it does nothing.

/// Return free heap memory to the OS.
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
