//! Keeping a source's cache repository bounded.
//!
//! Every fetch of a new revision adds a pack to the cache and nothing ever removes one, so
//! a source that changes often would grow its cache forever (78 depth-1 syncs of a 2 MB
//! change once left 78 packs, 149 MiB). The cache only has to hold the current commit (to
//! pack the artifact) and to offer it as the common base of the next fetch. So once it holds
//! more than [`MAX_PACKS`] packs, or more history than the reference asked for (libgit2's
//! local transport cannot fetch shallow, so `git2` over `file://` brings whole histories),
//! it is rebuilt beside itself with the current commit's objects alone, as one pack, and
//! swapped in: a new bare repository, a shallow boundary at the commit, the refs that point
//! at it. gix has no pack writer, so this is libgit2's pack builder whichever implementation
//! fetched; the cache is a plain bare repository either can read.
//!
//! Compaction is local work (no network), proportional to one snapshot of the repository,
//! and happens at most once every [`MAX_PACKS`] new revisions in the steady state.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Packs a cache may hold before it is compacted. Each new revision adds one.
pub const MAX_PACKS: usize = 8;

/// `<stateDir>/git/<namespace>/<name>.git`, given `<stateDir>/git`.
pub fn dir(cache_root: &Path, namespace: &str, name: &str) -> PathBuf {
    cache_root.join(namespace).join(format!("{name}.git"))
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot read the git cache {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot compact the git cache {}: {}", path.display(), source.message())]
    Git {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
}

/// Total size in bytes of the files under `dir` (0 when it does not exist).
pub fn size(dir: &Path) -> u64 {
    fn walk(dir: &Path) -> u64 {
        let Ok(entries) = fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .map(|entry| match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&entry.path()),
                Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
                _ => 0,
            })
            .sum()
    }
    walk(dir)
}

/// How many packs the cache's object database holds.
pub fn pack_count(dir: &Path) -> usize {
    fs::read_dir(dir.join("objects").join("pack")).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
            .count()
    })
}

/// Compact the cache at `dir` around `commit` if it outgrew its bound. `shallow_wanted`: the
/// reference is fetched at depth 1 (anything but a commit pinned on a branch). Returns
/// whether it compacted.
pub fn bound(dir: &Path, commit: &str, shallow_wanted: bool) -> Result<bool, CacheError> {
    let git = |source| CacheError::Git {
        path: dir.to_path_buf(),
        source,
    };
    super::cancel::libgit2_timeouts();
    let too_many_packs = pack_count(dir) > MAX_PACKS;
    let extra_history = shallow_wanted && {
        let repo = git2::Repository::open_bare(dir).map_err(git)?;
        let id = git2::Oid::from_str(commit).map_err(git)?;
        let parents = repo.find_commit(id).map_err(git)?.parent_count();
        // A commit with parents in a cache that is not shallow came with its history.
        parents > 0 && !repo.is_shallow()
    };
    if !(too_many_packs || extra_history) {
        return Ok(false);
    }
    compact(dir, commit)?;
    Ok(true)
}

/// Rebuild the cache with `commit`'s objects only (see the module documentation).
pub fn compact(dir: &Path, commit: &str) -> Result<(), CacheError> {
    let io_error = |source| CacheError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let git = |source| CacheError::Git {
        path: dir.to_path_buf(),
        source,
    };
    super::cancel::libgit2_timeouts();
    let parent = dir
        .parent()
        .ok_or_else(|| io_error(io::Error::other("the cache has no parent directory")))?;
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io_error(io::Error::other("the cache's name is not UTF-8")))?;
    remove_leftovers(parent, name);
    let unique = format!("{}-{}", std::process::id(), crate::atomic::unique());
    let fresh = parent.join(format!(".{name}.compact-{unique}"));
    let built = build(dir, &fresh, commit).map_err(|e| match e {
        Built::Io(source) => io_error(source),
        Built::Git(source) => git(source),
    });
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&fresh);
        return Err(e);
    }
    // Two renames: a crash between them leaves no cache, which the next fetch starts afresh
    // (see `open_cache`); never a half-written one.
    let old = parent.join(format!(".{name}.old-{unique}"));
    fs::rename(dir, &old).map_err(io_error)?;
    if let Err(e) = fs::rename(&fresh, dir) {
        let _ = fs::rename(&old, dir);
        let _ = fs::remove_dir_all(&fresh);
        return Err(io_error(e));
    }
    let _ = fs::remove_dir_all(&old);
    Ok(())
}

enum Built {
    Io(io::Error),
    Git(git2::Error),
}

impl From<io::Error> for Built {
    fn from(e: io::Error) -> Self {
        Built::Io(e)
    }
}

impl From<git2::Error> for Built {
    fn from(e: git2::Error) -> Self {
        Built::Git(e)
    }
}

/// The compacted copy of `dir` at `fresh`.
fn build(dir: &Path, fresh: &Path, commit: &str) -> Result<(), Built> {
    let repo = git2::Repository::open_bare(dir)?;
    let id = git2::Oid::from_str(commit)?;
    let has_parents = repo.find_commit(id)?.parent_count() > 0;
    // The refs worth keeping: those at the commit, directly or through an annotated tag.
    // They are what the next fetch offers the server as the common base.
    let mut kept: Vec<(String, git2::Oid)> = Vec::new();
    let mut tags: Vec<git2::Oid> = Vec::new();
    for reference in repo.references()? {
        let reference = reference?;
        let (Ok(name), Some(target)) = (reference.name(), reference.target()) else {
            continue;
        };
        if target == id {
            kept.push((name.to_string(), target));
        } else if reference.peel_to_commit().is_ok_and(|c| c.id() == id) {
            kept.push((name.to_string(), target));
            tags.push(target);
        }
    }
    git2::Repository::init_bare(fresh)?;
    let mut pack = repo.packbuilder()?;
    pack.insert_commit(id)?;
    for tag in tags {
        pack.insert_object(tag, None)?;
    }
    let pack_dir = fresh.join("objects").join("pack");
    pack.write(&pack_dir, 0)?;
    // libgit2 does not fsync by default: the pack must be on disk before the swap.
    for entry in fs::read_dir(&pack_dir)?.flatten() {
        fs::File::open(entry.path())?.sync_all()?;
    }
    fs::File::open(&pack_dir)?.sync_all()?;
    if has_parents {
        crate::atomic::write(&fresh.join("shallow"), format!("{commit}\n").as_bytes())?;
    }
    // Opened only now, so that its object database sees the pack.
    let compacted = git2::Repository::open_bare(fresh)?;
    for (name, target) in kept {
        compacted.reference(&name, target, true, "gitopsd: compacted cache")?;
    }
    let marker = dir.join("gitopsd-url");
    if let Ok(url) = fs::read(&marker) {
        crate::atomic::write(&fresh.join("gitopsd-url"), &url)?;
    }
    Ok(())
}

/// Directories of a compaction that a crash interrupted.
fn remove_leftovers(parent: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    let prefixes = [format!(".{name}.compact-"), format!(".{name}.old-")];
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if prefixes.iter().any(|p| file_name.starts_with(p.as_str())) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}
