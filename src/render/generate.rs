//! The kustomization Flux writes when a path has none.
//!
//! Flux's generator (fluxcd/pkg, `kustomize/kustomize_generator.go`) walks the directory with
//! Go's `filepath.Walk` (depth first, entries of each directory in byte order) and lists:
//!
//! - every file whose extension is exactly `.yaml` or `.yml`, as `./<relative path>`;
//! - a subdirectory holding a `kustomization.yaml`, `kustomization.yml` or `Kustomization`
//!   file (not a directory of that name) as one resource `./<relative dir>`, without
//!   descending into it.
//!
//! It does not skip YAML that is not Kubernetes: every listed file must decode as Kubernetes
//! resources or the generation fails, naming the file. Hidden files and directories are not
//! skipped either (the source's ignore rules decide what is in the artifact).
//! We keep that list and its order, so a build here gives what Flux would give.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::paths::symlink_escapes;

/// The file names kustomize recognises, in its order of preference.
pub(crate) const KUSTOMIZATION_FILE_NAMES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// The name a generated kustomization is written under.
pub(crate) const GENERATED_FILE_NAME: &str = "kustomization.yaml";

/// Sets `namespace` in the kustomization file of `dir` (there is one: given or generated),
/// as Flux's `targetNamespace` does. The file is rewritten as JSON, which is YAML; it lives
/// in the build's scratch copy only. The error is `(file name, reason)`.
pub(crate) fn set_namespace(dir: &Path, namespace: &str) -> Result<(), (String, String)> {
    let Some(name) = KUSTOMIZATION_FILE_NAMES
        .iter()
        .find(|name| dir.join(name).is_file())
    else {
        return Err(("kustomization.yaml".into(), "no kustomization file".into()));
    };
    let file = dir.join(name);
    let fail = |reason: String| (name.to_string(), reason);
    let text = fs::read_to_string(&file).map_err(|e| fail(e.to_string()))?;
    let mut value = super::yaml::document(&text).map_err(|e| fail(e.to_string()))?;
    if value.is_null() {
        value = serde_json::Value::Object(Default::default());
    }
    let Some(map) = value.as_object_mut() else {
        return Err(fail("it is not a mapping".into()));
    };
    map.insert(
        "namespace".into(),
        serde_json::Value::String(namespace.into()),
    );
    crate::atomic::write(&file, value.to_string().as_bytes()).map_err(|e| fail(e.to_string()))
}

/// Why a kustomization could not be generated.
#[derive(Debug)]
pub(crate) enum GenerateProblem {
    /// `file` (relative to the kustomization dir, `./...`) is YAML but not Kubernetes.
    NotKubernetes {
        file: String,
        reason: NotKubernetes,
    },
    /// `file` is a symlink that leads outside the artifact.
    SymlinkEscapes {
        file: String,
    },
    /// A name that is not UTF-8 cannot be written into the kustomization.
    NonUtf8Name {
        file: String,
    },
    Io {
        file: String,
        source: io::Error,
    },
}

/// Whether `dir` already has a kustomization file of its own.
pub(crate) fn has_kustomization(dir: &Path) -> bool {
    KUSTOMIZATION_FILE_NAMES.iter().any(|name| {
        // `metadata` follows symlinks, as kustomize's own existence check does.
        fs::metadata(dir.join(name)).is_ok_and(|m| !m.is_dir())
    })
}

/// The resources Flux would list for `dir`, or `None` when `dir` has its own kustomization.
/// `root` is the canonical artifact root; symlinked files leading outside it are refused.
pub(crate) fn scan(root: &Path, dir: &Path) -> Result<Option<Vec<String>>, GenerateProblem> {
    if has_kustomization(dir) {
        return Ok(None);
    }
    let mut resources = Vec::new();
    walk(root, dir, ".", &mut resources)?;
    Ok(Some(resources))
}

fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    resources: &mut Vec<String>,
) -> Result<(), GenerateProblem> {
    let io_err = |source| GenerateProblem::Io {
        file: prefix.to_string(),
        source,
    };
    let mut entries = fs::read_dir(dir)
        .map_err(io_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err)?;
    entries.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));

    for entry in entries {
        let os_name = entry.file_name();
        let path = entry.path();
        let Some(name) = os_name.to_str() else {
            return Err(GenerateProblem::NonUtf8Name {
                file: format!("{prefix}/{}", os_name.to_string_lossy()),
            });
        };
        let relative = format!("{prefix}/{name}");
        let file_type = entry.file_type().map_err(|source| GenerateProblem::Io {
            file: relative.clone(),
            source,
        })?;
        if file_type.is_dir() {
            if has_kustomization(&path) {
                resources.push(relative);
            } else {
                walk(root, &path, &relative, resources)?;
            }
            continue;
        }
        if !has_yaml_extension(name) {
            continue;
        }
        if file_type.is_symlink() && symlink_escapes(root, &path) {
            return Err(GenerateProblem::SymlinkEscapes { file: relative });
        }
        let bytes = fs::read(&path).map_err(|source| GenerateProblem::Io {
            file: relative.clone(),
            source,
        })?;
        if let Err(reason) = check_kubernetes_yaml(&bytes) {
            return Err(GenerateProblem::NotKubernetes {
                file: relative,
                reason,
            });
        }
        resources.push(relative);
    }
    Ok(())
}

/// Go's `filepath.Ext` semantics: the suffix from the last dot of the file name, so `.yaml`
/// itself counts and the comparison is case-sensitive.
fn has_yaml_extension(name: &str) -> bool {
    match name.rfind('.') {
        Some(i) => matches!(&name[i..], ".yaml" | ".yml"),
        None => false,
    }
}

/// Refuse what kustomize is certain to refuse ("missing Resource metadata", "missing kind",
/// "missing metadata.name"), so that the error names the file and says why it was included.
/// YAML that our parser cannot read is let through: kustomize's parser has the final word, and
/// its error names the file too.
fn check_kubernetes_yaml(bytes: &[u8]) -> Result<(), NotKubernetes> {
    use super::yaml::scalar_text;
    use serde_json::Value;

    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(());
    };
    let Ok(documents) = super::yaml::documents(text) else {
        return Ok(());
    };
    for (index, value) in documents.iter().enumerate() {
        let number = index + 1;
        let Value::Object(map) = value else {
            return Err(NotKubernetes::NotAMapping { number });
        };
        let Some(kind) = scalar_text(map.get("kind")).filter(|k| !k.is_empty()) else {
            return Err(NotKubernetes::NoKind { number });
        };
        // Lists (`kind: List`, `kind: ConfigMapList`, ...) are expanded by kustomize and
        // need no name of their own.
        if kind.ends_with("List") {
            continue;
        }
        let name = map
            .get("metadata")
            .and_then(Value::as_object)
            .and_then(|m| scalar_text(m.get("name")))
            .filter(|n| !n.is_empty());
        if name.is_none() {
            return Err(NotKubernetes::NoName { number, kind });
        }
    }
    Ok(())
}

/// Why a file a generated kustomization would list is not a Kubernetes manifest.
/// Documents are numbered from 1, empty ones not counted.
#[derive(Debug, thiserror::Error)]
pub enum NotKubernetes {
    #[error("document {number} is not a mapping")]
    NotAMapping { number: usize },
    #[error("document {number} has no kind")]
    NoKind { number: usize },
    #[error("document {number} ({kind}) has no metadata.name")]
    NoName { number: usize, kind: String },
}

/// The text of a generated kustomization listing `resources`.
///
/// With no resources the list is written as `resources: []`: kustomize 5.3 and later refuse a
/// kustomization with no fields at all ("kustomization.yaml is empty"), and Flux builds an
/// empty directory to zero objects.
pub(crate) fn kustomization_text(resources: &[String]) -> String {
    #[derive(serde::Serialize)]
    struct Generated<'a> {
        #[serde(rename = "apiVersion")]
        api_version: &'a str,
        kind: &'a str,
        resources: &'a [String],
    }
    let generated = Generated {
        api_version: "kustomize.config.k8s.io/v1beta1",
        kind: "Kustomization",
        resources,
    };
    // Strings and a list of strings have no form YAML cannot write; should the serialiser
    // fail anyway, JSON (a subset of YAML) says the same.
    serde_saphyr::to_string(&generated)
        .or_else(|_| serde_json::to_string(&generated))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_extension_follows_go() {
        assert!(has_yaml_extension("a.yaml"));
        assert!(has_yaml_extension("a.b.yml"));
        assert!(has_yaml_extension(".yaml"));
        assert!(!has_yaml_extension("a.YAML"));
        assert!(!has_yaml_extension("a.yaml.bak"));
        assert!(!has_yaml_extension("yaml"));
        assert!(!has_yaml_extension("a.json"));
    }

    #[test]
    fn kubernetes_check_is_conservative() {
        assert!(check_kubernetes_yaml(b"").is_ok());
        assert!(check_kubernetes_yaml(b"---\n# only a comment\n---\n").is_ok());
        assert!(check_kubernetes_yaml(b"kind: Foo\nmetadata:\n  name: x\n").is_ok());
        assert!(check_kubernetes_yaml(b"apiVersion: v1\nkind: List\nitems: []\n").is_ok());
        // Unparseable for us: left to kustomize.
        assert!(check_kubernetes_yaml(b"{a: [}").is_ok());

        assert!(check_kubernetes_yaml(b"foo: bar\n").is_err());
        assert!(check_kubernetes_yaml(b"- a\n").is_err());
        assert!(check_kubernetes_yaml(b"apiVersion: v1\nkind: ConfigMap\n").is_err());
        let two = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nstages: [x]\n";
        let err = check_kubernetes_yaml(two).unwrap_err();
        assert!(err.to_string().contains("document 2"), "{err}");
    }

    #[test]
    fn text_lists_resources_or_an_empty_list() {
        let text = kustomization_text(&["./a.yaml".into(), "./sub".into()]);
        assert_eq!(
            text,
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ./a.yaml\n- ./sub\n"
        );
        assert!(kustomization_text(&[]).contains("resources: []"));
    }
}
