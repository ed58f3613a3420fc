//! Small helpers for asserting on what a child process printed and wrote.

use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::Output;

/// Bytes as text, lossily (process output in assertion messages).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit status, stdout and stderr of a finished process, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// `sha256:<hex>` of a file's bytes, the form gitopsd's digests take.
pub fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}
