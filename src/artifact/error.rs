//! The artifact layer's error: reading a tree, packing it, extracting an artifact. One type
//! for all of them because a pack reads a tree and an extract checks what a pack wrote; kept
//! in a module of its own, below the tree, ignore, pack and extract modules that all return
//! it, so that none of them depends on another for its error type.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("cannot pack {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} changed while it was being packed (expected {expected} bytes); the snapshot must not be modified during packing")]
    Changed { path: PathBuf, expected: u64 },
    #[error("cannot write the artifact: {0}")]
    Write(#[source] io::Error),
    /// A tree entry whose name is not one plain path component (or one git reserves): packed,
    /// it would make a tar tool write outside the directory it extracts into.
    #[error("refusing to pack the path {path:?}: {reason}")]
    UnsafeName { path: String, reason: String },
    #[error("invalid expected digest {0:?}: want sha256:<64 lowercase hex>")]
    BadDigest(String),
    #[error("artifact {path} has digest {actual} but {expected} was expected; it is corrupt or was replaced, refusing to extract it")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("artifact {path} is not a readable tar.gz: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("artifact {path} holds {entry:?}, refused: {reason}")]
    UnsafeEntry {
        path: PathBuf,
        entry: String,
        reason: &'static str,
    },
    #[error("cannot extract into {dest}: {reason}")]
    Destination { dest: PathBuf, reason: String },
    #[error("extracting into {path} failed: {source}")]
    Extract {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
