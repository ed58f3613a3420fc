//! Keeping a build inside its artifact.
//!
//! Flux builds on a file system that refuses to leave the artifact root. Kustomize run as a
//! process has no such guard, so we get the same effect in two steps: the kustomization path
//! must resolve (symlinks included) inside the root, and symlinks that lead out of the root are
//! removed from our scratch copy before the build, so a kustomization cannot read through them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Why a kustomization path was refused.
#[derive(Debug)]
pub(crate) enum PathProblem {
    Escapes,
    Missing,
    NotADirectory,
    Io(io::Error),
}

/// Resolve `path` (relative to `root`) to a canonical directory inside the canonical root.
///
/// Returns the canonical root and the canonical directory.
pub(crate) fn resolve_inside(root: &Path, path: &str) -> Result<(PathBuf, PathBuf), PathProblem> {
    let root = root.canonicalize().map_err(PathProblem::Io)?;
    // An absolute `path` would make `join` discard the root; treat it as relative to the root,
    // the way Flux reads `spec.path`.
    let relative = path.trim_start_matches('/');
    let joined = if relative.is_empty() {
        root.clone()
    } else {
        root.join(relative)
    };
    let resolved = match joined.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Tell "does not exist" from "would exist outside": a missing path may still be
            // an attempt to leave the root through `..`, and the message should say so.
            return Err(if lexically_escapes(relative) {
                PathProblem::Escapes
            } else {
                PathProblem::Missing
            });
        }
        Err(e) => return Err(PathProblem::Io(e)),
    };
    if !resolved.starts_with(&root) {
        return Err(PathProblem::Escapes);
    }
    if !resolved.is_dir() {
        return Err(PathProblem::NotADirectory);
    }
    Ok((root, resolved))
}

fn lexically_escapes(relative: &str) -> bool {
    let mut depth: i64 = 0;
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// Whether the symlink at `link` resolves to somewhere outside `root` (which is canonical).
/// A dangling link is not an escape: there is nothing to read through it.
pub(crate) fn symlink_escapes(root: &Path, link: &Path) -> bool {
    match link.canonicalize() {
        Ok(target) => !target.starts_with(root),
        Err(_) => false,
    }
}

/// Remove every symlink below `root` (canonical) that resolves outside it, and return their
/// paths relative to the root.
pub(crate) fn remove_escaping_symlinks(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            let path = entry.path();
            if file_type.is_symlink() {
                if symlink_escapes(root, &path) {
                    fs::remove_file(&path)?;
                    removed.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
                }
            } else if file_type.is_dir() {
                pending.push(path);
            }
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_inside_and_refuses_escapes() {
        let outside = tempfile::tempdir().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir_all(root.join("apps/web")).unwrap();
        fs::write(root.join("file.yaml"), "").unwrap();
        symlink(outside.path(), root.join("out")).unwrap();
        symlink("apps", root.join("inner")).unwrap();

        let (croot, dir) = resolve_inside(&root, "apps/web").unwrap();
        assert_eq!(dir, croot.join("apps/web"));
        assert_eq!(resolve_inside(&root, "").unwrap().1, croot);
        assert_eq!(
            resolve_inside(&root, "/apps").unwrap().1,
            croot.join("apps")
        );
        assert_eq!(
            resolve_inside(&root, "inner/web").unwrap().1,
            croot.join("apps/web")
        );

        assert!(matches!(
            resolve_inside(&root, ".."),
            Err(PathProblem::Escapes)
        ));
        assert!(matches!(
            resolve_inside(&root, "apps/../../"),
            Err(PathProblem::Escapes)
        ));
        assert!(matches!(
            resolve_inside(&root, "../nope"),
            Err(PathProblem::Escapes)
        ));
        assert!(matches!(
            resolve_inside(&root, "out"),
            Err(PathProblem::Escapes)
        ));
        assert!(matches!(
            resolve_inside(&root, "nope"),
            Err(PathProblem::Missing)
        ));
        assert!(matches!(
            resolve_inside(&root, "file.yaml"),
            Err(PathProblem::NotADirectory)
        ));
    }

    #[test]
    fn removes_only_escaping_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "x").unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/real.yaml"), "").unwrap();
        symlink(outside.path().join("secret"), root.join("a/b/leak.yaml")).unwrap();
        symlink("../real.yaml", root.join("a/b/ok.yaml")).unwrap();
        symlink("/nonexistent/dangling", root.join("dangling")).unwrap();
        symlink("../../..", root.join("a/up")).unwrap();

        let removed = remove_escaping_symlinks(&root).unwrap();
        assert_eq!(
            removed,
            vec![PathBuf::from("a/b/leak.yaml"), PathBuf::from("a/up")]
        );
        assert!(root.join("a/b/ok.yaml").exists());
        assert!(fs::symlink_metadata(root.join("dangling")).is_ok());
        assert!(outside.path().join("secret").exists());
    }
}
