use clap::Parser;

fn main() {
    limit_malloc_arenas();
    let cli = gitopsd::cli::Cli::parse();
    std::process::exit(gitopsd::cli::main(cli));
}

/// glibc gives every thread that allocates its own heap arena, and memory freed in one arena
/// is not reused by another: after a few syncs on blocking threads, an idle daemon would keep
/// several MB of freed heap. Two arenas keep the idle footprint small (measured: 8 MB of anon
/// memory down to 2.5 MB with 10 sources) at no measurable cost, since the hot paths
/// (inflate, deflate, hashing) work on long-lived buffers. Must run before threads start.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
