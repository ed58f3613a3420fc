//! A target that writes the render into a file, e.g. into k3s's auto-deploy manifests dir.

use std::path::{Path, PathBuf};

use super::{ApplyError, ApplyReport, Inventory, Target};
use crate::render::Rendered;

/// Writes `<directory>/<file_name>` with the rendered YAML.
///
/// The file always equals the latest render: it is replaced atomically (temp file, fsync,
/// rename), so a reader such as k3s's deploy controller sees the old file or the new one,
/// never a mix. A render with no objects still writes the file, empty, so objects that left
/// the source leave the file too, whatever `prune` says; `pruned` in the report lists the
/// objects of the previous inventory that are no longer in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryTarget {
    pub directory: PathBuf,
    pub file_name: String,
}

impl DirectoryTarget {
    /// The target for kustomization `name`: `<directory>/<name>.yaml`.
    pub fn new(directory: impl Into<PathBuf>, kustomization_name: &str) -> DirectoryTarget {
        DirectoryTarget {
            directory: directory.into(),
            file_name: format!("{kustomization_name}.yaml"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.directory.join(&self.file_name)
    }

    fn check(&self) -> Result<(), ApplyError> {
        let name = self.file_name.as_str();
        let single_component = Path::new(name).file_name().and_then(|n| n.to_str()) == Some(name);
        if name.is_empty() || !single_component || name.starts_with('.') {
            return Err(ApplyError::InvalidTarget(format!(
                "file name {name:?} must be a plain file name (no '/', not hidden)"
            )));
        }
        Ok(())
    }
}

impl Target for DirectoryTarget {
    fn apply(&self, rendered: &Rendered, previous: &Inventory) -> Result<ApplyReport, ApplyError> {
        self.check()?;
        let path = self.path();
        crate::atomic::write(&path, rendered.yaml.as_bytes()).map_err(|source| {
            ApplyError::Write {
                path: path.clone(),
                source,
            }
        })?;
        let inventory = Inventory::from_objects(rendered.ids());
        Ok(ApplyReport {
            applied: rendered.objects.len(),
            pruned: previous.stale(&inventory),
            inventory,
            output: Some(path),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::ObjectId;
    use std::fs;

    fn rendered(objects: &[(&str, &str)]) -> Rendered {
        let yaml = objects
            .iter()
            .map(|(kind, name)| {
                format!(
                    "apiVersion: v1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: web\n"
                )
            })
            .collect::<Vec<_>>()
            .join("---\n");
        Rendered::from_yaml(yaml).unwrap()
    }

    #[test]
    fn writes_the_render_and_reports_what_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("manifests/web");
        let target = DirectoryTarget::new(&dir, "web");

        let first = rendered(&[("ConfigMap", "a"), ("Service", "b")]);
        let report = target.apply(&first, &Inventory::default()).unwrap();
        let file = dir.join("web.yaml");
        assert_eq!(report.output.as_deref(), Some(file.as_path()));
        assert_eq!(report.applied, 2);
        assert!(report.pruned.is_empty());
        assert_eq!(fs::read_to_string(&file).unwrap(), first.yaml);

        let second = rendered(&[("Service", "b")]);
        let report2 = target.apply(&second, &report.inventory).unwrap();
        assert_eq!(report2.applied, 1);
        assert_eq!(
            report2.pruned,
            vec![ObjectId::new("v1", "ConfigMap", "web", "a")]
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), second.yaml);

        // No objects: the file is still written, empty, and everything is reported gone.
        let report3 = target
            .apply(&Rendered::default(), &report2.inventory)
            .unwrap();
        assert_eq!(report3.applied, 0);
        assert_eq!(
            report3.pruned,
            vec![ObjectId::new("v1", "Service", "web", "b")]
        );
        assert!(report3.inventory.is_empty());
        assert_eq!(fs::read(&file).unwrap(), b"");

        // Only the target file is in the directory: no temp files were left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("web.yaml")]);
    }

    #[test]
    fn replaces_the_file_rather_than_rewriting_it() {
        // A reader holding the old file keeps reading the old content: the new content
        // arrives through a rename, not by truncating the file in place.
        let tmp = tempfile::tempdir().unwrap();
        let target = DirectoryTarget::new(tmp.path(), "app");
        let old = rendered(&[("ConfigMap", "old")]);
        target.apply(&old, &Inventory::default()).unwrap();
        let held = fs::File::open(target.path()).unwrap();
        target
            .apply(&rendered(&[("ConfigMap", "new")]), &Inventory::default())
            .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &held, &mut text).unwrap();
        assert_eq!(text, old.yaml);
        assert!(fs::read_to_string(target.path())
            .unwrap()
            .contains("name: new"));
    }

    #[test]
    fn refuses_file_names_that_are_paths() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["", "../x.yaml", "a/b.yaml", ".hidden.yaml", ".."] {
            let target = DirectoryTarget {
                directory: tmp.path().to_path_buf(),
                file_name: name.to_string(),
            };
            assert!(
                matches!(
                    target.apply(&Rendered::default(), &Inventory::default()),
                    Err(ApplyError::InvalidTarget(_))
                ),
                "{name:?}"
            );
        }
    }
}
