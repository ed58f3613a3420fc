//! Unpacking an artifact for a render or a publish: digest first, then only plain files and
//! directories below the destination.
//!
//! The digest is checked over the very file handle that is then read, and every entry name
//! is checked again here although the packer wrote it: an artifact on disk may have been
//! replaced by anyone who can write the state directory.

use super::pack::{PackError, MODE_DIR, MODE_EXEC, MODE_FILE};
use std::fs::{self, File};
use std::io::{self, Seek};
use std::path::{Component, Path, PathBuf};

/// Extract an artifact into `dest` (absent or an empty directory).
///
/// The digest is checked first, over the same open file that is then extracted, so a
/// concurrent replacement cannot slip in between. Only regular files and directories under
/// `dest` are accepted; links, devices and any path that is absolute or contains `..` fail
/// the whole extraction. Files are written plainly (no fsync): callers extract into a fresh
/// directory and rename it into place when they need atomicity.
pub fn extract(artifact: &Path, expected_digest: &str, dest: &Path) -> Result<(), PackError> {
    let expected = parse_digest(expected_digest)?;
    let corrupt = |source| PackError::Corrupt {
        path: artifact.to_path_buf(),
        source,
    };
    let mut file = File::open(artifact).map_err(corrupt)?;
    let actual = super::store::reader_digest(&mut file).map_err(corrupt)?;
    if actual != expected {
        return Err(PackError::DigestMismatch {
            path: artifact.to_path_buf(),
            expected,
            actual,
        });
    }
    file.rewind().map_err(corrupt)?;

    prepare_destination(dest)?;
    let reader = io::BufReader::with_capacity(256 << 10, file);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |reason| PackError::UnsafeEntry {
            path: artifact.to_path_buf(),
            entry: shown.clone(),
            reason,
        };
        let rel = safe_relative(&raw).map_err(unsafe_entry)?;
        let Some(rel) = rel else { continue };
        let target = dest.join(&rel);
        let extract_err = |source| PackError::Extract {
            path: target.clone(),
            source,
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(extract_err)?;
                set_mode(&target, MODE_DIR).map_err(extract_err)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(extract_err)?;
                }
                let mode = entry.header().mode().map_err(corrupt)?;
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(extract_err)?;
                io::copy(&mut entry, &mut out).map_err(corrupt)?;
                let mode = if mode & 0o111 != 0 {
                    MODE_EXEC
                } else {
                    MODE_FILE
                };
                set_mode(&target, mode).map_err(extract_err)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(unsafe_entry("links are not allowed in artifacts"))
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(unsafe_entry(
                    "devices and fifos are not allowed in artifacts",
                ))
            }
            _ => return Err(unsafe_entry("only files and directories are allowed")),
        }
    }
    Ok(())
}

fn parse_digest(digest: &str) -> Result<String, PackError> {
    let hex_part = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    match hex_part {
        Some(h) => Ok(format!("sha256:{}", h.to_ascii_lowercase())),
        None => Err(PackError::BadDigest(digest.to_string())),
    }
}

fn prepare_destination(dest: &Path) -> Result<(), PackError> {
    let refuse = |reason: String| PackError::Destination {
        dest: dest.to_path_buf(),
        reason,
    };
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(dest).map_err(|e| refuse(e.to_string()))?;
            if entries.next().is_some() {
                return Err(refuse("the directory is not empty".into()));
            }
            Ok(())
        }
        Ok(_) => Err(refuse("it exists and is not a directory".into())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(|e| refuse(e.to_string()))
        }
        Err(err) => Err(refuse(err.to_string())),
    }
}

/// The entry's path below the destination, `None` for the root itself.
fn safe_relative(raw: &[u8]) -> Result<Option<PathBuf>, &'static str> {
    #[cfg(unix)]
    let path = {
        use std::os::unix::ffi::OsStrExt;
        Path::new(std::ffi::OsStr::from_bytes(raw))
    };
    #[cfg(not(unix))]
    let path = Path::new(std::str::from_utf8(raw).map_err(|_| "the name is not UTF-8")?);
    if raw.contains(&b'\\') {
        return Err("backslashes are not allowed in entry names");
    }
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("the entry would escape the destination"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute entry names"),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::ignore::IgnoreRules;
    use crate::artifact::pack::tests::{no_rules, sample_tree};
    use crate::artifact::pack::{fill, gzip_writer, pack_dir, BLOCK};
    use sha2::{Digest, Sha256};
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn extract_round_trip() {
        let dir = sample_tree();
        let rules = IgnoreRules::for_git(dir.path(), None).unwrap();
        let work = tempfile::tempdir().unwrap();
        let artifact = work.path().join("art.tar.gz");
        let packed = pack_dir(dir.path(), &rules, File::create(&artifact).unwrap()).unwrap();
        let dest = work.path().join("out");
        extract(&artifact, &packed.digest, &dest).unwrap();
        assert_eq!(fs::read(dest.join("b.yaml")).unwrap(), b"kind: B\n");
        assert_eq!(
            fs::read(dest.join("a/nested/deep.yaml")).unwrap().len(),
            70_000
        );
        assert!(dest.join("empty").is_dir());
        assert!(!dest.join("link.yaml").exists());
        assert!(!dest.join(".git").exists());
        let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("run.sh"), 0o700);
        assert_eq!(mode("b.yaml"), 0o600);
        assert_eq!(mode("a"), 0o750);

        // Re-packing the extracted tree reproduces the artifact.
        let mut again = Vec::new();
        let repacked = pack_dir(&dest, &rules, &mut again).unwrap();
        assert_eq!(repacked, packed);

        // A non-empty destination is refused.
        let err = extract(&artifact, &packed.digest, &dest).unwrap_err();
        assert!(matches!(err, PackError::Destination { .. }), "{err}");
    }

    #[test]
    fn extract_rejects_a_bad_digest() {
        let dir = sample_tree();
        let work = tempfile::tempdir().unwrap();
        let artifact = work.path().join("art.tar.gz");
        let packed = pack_dir(dir.path(), &no_rules(), File::create(&artifact).unwrap()).unwrap();
        let mut wrong = packed.digest.clone().into_bytes();
        let last = wrong.len() - 1;
        wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
        let wrong = String::from_utf8(wrong).unwrap();
        let dest = work.path().join("out");
        let err = extract(&artifact, &wrong, &dest).unwrap_err();
        assert!(matches!(err, PackError::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains(&packed.digest));
        assert!(
            !dest.exists(),
            "nothing is created before the digest is checked"
        );
        let err = extract(&artifact, "md5:abc", &dest).unwrap_err();
        assert!(matches!(err, PackError::BadDigest(_)), "{err}");
    }

    /// A hand-made archive with one raw header, bypassing the tar crate's own path checks.
    fn malicious(name: &[u8], kind: tar::EntryType, content: &[u8]) -> Vec<u8> {
        let mut raw = Vec::new();
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        fill(&mut header, kind, 0o644, content.len() as u64);
        raw.extend_from_slice(header.as_bytes());
        raw.extend_from_slice(content);
        raw.resize(raw.len().div_ceil(BLOCK) * BLOCK, 0);
        raw.extend_from_slice(&[0; 2 * BLOCK]);
        let mut gz = gzip_writer(Vec::new());
        gz.write_all(&raw).unwrap();
        gz.finish().unwrap()
    }

    fn try_extract(bytes: &[u8]) -> (Result<(), PackError>, tempfile::TempDir) {
        let work = tempfile::tempdir().unwrap();
        let artifact = work.path().join("evil.tar.gz");
        fs::write(&artifact, bytes).unwrap();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let result = extract(&artifact, &digest, &work.path().join("dest/inner"));
        (result, work)
    }

    #[test]
    fn extract_rejects_escaping_entries() {
        let (result, work) = try_extract(&malicious(
            b"../escaped.txt",
            tar::EntryType::Regular,
            b"gotcha",
        ));
        let err = result.unwrap_err();
        assert!(matches!(err, PackError::UnsafeEntry { .. }), "{err}");
        assert!(!work.path().join("dest/escaped.txt").exists());

        let (result, _work) = try_extract(&malicious(
            b"ok/../../escaped.txt",
            tar::EntryType::Regular,
            b"gotcha",
        ));
        assert!(matches!(result, Err(PackError::UnsafeEntry { .. })));

        let (result, _work) = try_extract(&malicious(b"/etc/x", tar::EntryType::Regular, b"x"));
        assert!(matches!(result, Err(PackError::UnsafeEntry { .. })));
    }

    #[test]
    fn extract_rejects_links_and_devices() {
        for kind in [
            tar::EntryType::Symlink,
            tar::EntryType::Link,
            tar::EntryType::Char,
            tar::EntryType::Fifo,
        ] {
            let (result, _work) = try_extract(&malicious(b"thing", kind, b""));
            assert!(
                matches!(result, Err(PackError::UnsafeEntry { .. })),
                "{kind:?}: {result:?}"
            );
        }
    }
}
