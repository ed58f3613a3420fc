//! `render.remoteBases: false` (Flux's `--no-remote-bases`): refuse a build that would fetch
//! anything from the network, naming the reference.
//!
//! kustomize has no flag for it, so before the build the kustomizations the build reaches
//! (the one at the path and, through `resources`, `components` and `bases`, every local
//! directory it includes) are read, and any entry that is a URL fails the render. The
//! sandbox is the enforcement (no git, no TCP); this check is what gives the user a clear
//! sentence instead of a failed clone.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;

/// The names kustomize looks for in a directory, in its order.
const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Fields that list other kustomizations or resource files; a URL here is a remote base or
/// resource.
const INCLUDE_FIELDS: [&str; 3] = ["resources", "components", "bases"];

/// A remote reference found in a kustomization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteReference {
    /// The kustomization file, relative to the artifact root.
    pub file: String,
    pub field: String,
    /// The reference, with any credentials removed.
    pub url: String,
}

/// The first remote reference reachable from the kustomization in `dir` (inside the
/// canonical `root`), if any. A file kustomize cannot parse is left for kustomize to report.
pub(crate) fn find(root: &Path, dir: &Path) -> io::Result<Option<RemoteReference>> {
    let mut pending = vec![dir.to_path_buf()];
    let mut seen = HashSet::new();
    while let Some(dir) = pending.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let Some(file) = KUSTOMIZATION_FILES
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
        else {
            continue;
        };
        let text = fs::read_to_string(&file)?;
        let Ok(document) = super::yaml::document(&text) else {
            continue;
        };
        let relative = || {
            file.strip_prefix(root)
                .unwrap_or(&file)
                .display()
                .to_string()
        };
        for field in INCLUDE_FIELDS {
            for entry in strings(document.get(field)) {
                let local = normalize(&dir.join(entry));
                if is_remote(entry, local.exists()) {
                    return Ok(Some(RemoteReference {
                        file: relative(),
                        field: field.to_string(),
                        url: crate::source::git::refs::redact_url(entry),
                    }));
                }
                // Only directories inside the artifact can hold more kustomizations; the
                // sandbox keeps the build from reading anything else.
                if local.starts_with(root) && local.is_dir() {
                    pending.push(local);
                }
            }
        }
        // Files that kustomize would download over HTTP when given a URL.
        for (field, entry) in file_references(&document) {
            if has_scheme(entry) {
                return Ok(Some(RemoteReference {
                    file: relative(),
                    field,
                    url: crate::source::git::refs::redact_url(entry),
                }));
            }
        }
    }
    Ok(None)
}

fn strings(value: Option<&Value>) -> impl Iterator<Item = &str> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// `field` names and the file paths in them, for the fields that load a file.
fn file_references(document: &Value) -> Vec<(String, &str)> {
    let mut found = Vec::new();
    for field in [
        "patchesStrategicMerge",
        "crds",
        "configurations",
        "generators",
        "transformers",
        "validators",
    ] {
        found.extend(strings(document.get(field)).map(|s| (field.to_string(), s)));
    }
    for field in ["patches", "patchesJson6902", "replacements"] {
        for item in document
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(path) = item.get("path").and_then(Value::as_str) {
                found.push((format!("{field}.path"), path));
            }
        }
    }
    for field in ["configMapGenerator", "secretGenerator"] {
        for item in document
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for key in ["files", "envs"] {
                for source in strings(item.get(key)) {
                    // `key=path` names the key in the generated object.
                    let path = source.split_once('=').map_or(source, |(_, path)| path);
                    found.push((format!("{field}.{key}"), path));
                }
            }
            if let Some(env) = item.get("env").and_then(Value::as_str) {
                found.push((format!("{field}.env"), env));
            }
        }
    }
    if let Some(path) = document
        .get("openapi")
        .and_then(|o| o.get("path"))
        .and_then(Value::as_str)
    {
        found.push(("openapi.path".to_string(), path));
    }
    found
}

/// `scheme://...` (https, http, ssh, git, file) or `git::...`.
fn has_scheme(entry: &str) -> bool {
    let entry = entry.trim();
    entry.starts_with("git::")
        || entry.split_once("://").is_some_and(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
}

/// Whether a `resources`/`components`/`bases` entry names something kustomize would fetch:
/// a URL, scp-like `git@host:org/repo`, or `host.tld/org/repo...` (with `?ref=`, `//` or
/// `.git`), as long as no local file or directory of that name exists (which kustomize
/// would use first).
fn is_remote(entry: &str, exists_locally: bool) -> bool {
    if has_scheme(entry) {
        return true;
    }
    if exists_locally {
        return false;
    }
    let entry = entry.trim();
    if entry.starts_with("git@") || entry.starts_with("gh:") {
        return true;
    }
    let first = entry.split('/').next().unwrap_or_default();
    let host_like = first.contains('.') && first != "." && first != ".." && !first.starts_with('.');
    host_like
        && entry.contains('/')
        && (entry.contains("?ref=")
            || entry.contains("?version=")
            || entry.contains(".git")
            || entry.contains("//")
            || entry.split('/').count() >= 3)
}

/// `path` with `.` and `..` resolved lexically (kustomize resolves entries the same way).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_repository_specs_are_remote() {
        for remote in [
            "https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v3.3.1",
            "github.com/kubernetes-sigs/kustomize/examples/helloWorld?ref=v3.3.1",
            "git@github.com:org/repo.git//base",
            "ssh://git@github.com/org/repo//base",
            "git::https://example.com/org/repo",
            "https://raw.githubusercontent.com/org/repo/main/deploy.yaml",
            "file:///etc/passwd",
            "example.com/org/repo",
        ] {
            assert!(is_remote(remote, false), "{remote}");
        }
        for local in [
            "../base",
            "./deploy.yaml",
            "base",
            "sub/dir/file.yaml",
            ".hidden/x/y",
        ] {
            assert!(!is_remote(local, false), "{local}");
        }
        // A local directory that happens to look like a host name wins, as in kustomize.
        assert!(!is_remote("example.com/org/repo", true));
    }

    #[test]
    fn finds_remote_references_through_local_bases_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write("base/kustomization.yaml", "resources:\n- cm.yaml\n");
        write("base/cm.yaml", "kind: ConfigMap\n");
        write(
            "overlay/kustomization.yaml",
            "resources:\n- ../base\npatches:\n- path: patch.yaml\n",
        );
        write(
            "unrelated/kustomization.yaml",
            "resources:\n- https://example.com/x.yaml\n",
        );
        assert_eq!(find(&root, &root.join("overlay")).unwrap(), None);

        write(
            "base/kustomization.yml",
            "ignored: kustomization.yaml comes first\n",
        );
        write(
            "base/kustomization.yaml",
            "resources:\n- cm.yaml\n- https://user:token@example.com/org/repo//deploy?ref=v1\n",
        );
        assert_eq!(
            find(&root, &root.join("overlay")).unwrap(),
            Some(RemoteReference {
                file: "base/kustomization.yaml".into(),
                field: "resources".into(),
                url: "https://<redacted>@example.com/org/repo//deploy?ref=v1".into(),
            })
        );

        write(
            "gen/kustomization.yaml",
            "configMapGenerator:\n- name: c\n  files:\n  - key=https://example.com/file\n",
        );
        let found = find(&root, &root.join("gen")).unwrap().unwrap();
        assert_eq!(
            (found.field.as_str(), found.url.as_str()),
            ("configMapGenerator.files", "https://example.com/file")
        );
    }
}
