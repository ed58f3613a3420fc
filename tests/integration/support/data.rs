//! Generated test data and resource measurements shared by several test files.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `len` bytes of deterministic noise (xorshift from `seed`): incompressible, so that neither
/// git nor gzip can keep it small and sizes in a test mean what they say.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Runs `command` to completion and returns its peak resident memory in KiB (`VmHWM`, polled
/// from /proc while it runs) with its output. wait4's `ru_maxrss` would also count what the
/// forking test process had resident.
pub fn peak_rss_kib(mut command: Command) -> (i64, Output) {
    let log = tempfile::NamedTempFile::new().expect("temp file for stderr");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.reopen().expect("reopen stderr file"))
        .spawn()
        .expect("spawn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).map(|_| out)
    });
    let mut peak = 0i64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok());
            peak = peak.max(hwm.unwrap_or(0));
        }
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = Output {
        status,
        stdout: reader.join().expect("stdout reader").expect("read stdout"),
        stderr: std::fs::read(log.path()).expect("read stderr file"),
    };
    (peak, output)
}
