//! A target that writes the render into a file, e.g. into k3s's auto-deploy manifests dir.

use std::path::{Path, PathBuf};

use super::{ApplyContext, ApplyError, ApplyReport, Inventory, ObjectAction, ObjectResult, Target};
use crate::render::Rendered;

/// Writes `<directory>/<file_name>` with the rendered YAML.
///
/// The file always equals the latest render: it is replaced atomically (temp file, fsync,
/// rename), so a reader such as k3s's deploy controller sees the old file or the new one,
/// never a mix. A render with no objects still writes the file, empty, so objects that left
/// the source leave the file too, whatever `prune` says; the report marks the objects of the
/// previous inventory that are no longer in the file as pruned. An object in the previous
/// inventory is `Configured` (`Unchanged` when the file's bytes did not change), a new one
/// `Created`.
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
            return Err(ApplyError::InvalidFileName {
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// The blocking part: compare with the current file, then replace it.
    fn write(path: &Path, yaml: &[u8]) -> Result<bool, ApplyError> {
        let unchanged = std::fs::read(path).is_ok_and(|old| old == yaml);
        crate::atomic::write(path, yaml).map_err(|source| ApplyError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(unchanged)
    }
}

impl Target for DirectoryTarget {
    async fn apply(
        &self,
        rendered: &Rendered,
        previous: &Inventory,
        ctx: &ApplyContext,
    ) -> Result<ApplyReport, ApplyError> {
        self.check()?;
        let path = self.path();
        let job = {
            let path = path.clone();
            let yaml = rendered.yaml.clone().into_bytes();
            tokio::task::spawn_blocking(move || DirectoryTarget::write(&path, &yaml))
        };
        // The write is atomic: a write left running after a timeout or a stop still leaves
        // the old file or the new one.
        let unchanged = tokio::select! {
            joined = tokio::time::timeout(ctx.timeout, job) => match joined {
                Ok(Ok(result)) => result?,
                Ok(Err(join)) => return Err(ApplyError::Crashed(join)),
                Err(_) => return Err(ApplyError::TimedOut { after: ctx.timeout }),
            },
            _ = ctx.cancel.cancelled() => return Err(ApplyError::Cancelled),
        };
        let inventory = Inventory::from_objects(rendered.ids());
        let mut objects: Vec<ObjectResult> = rendered
            .ids()
            .map(|id| ObjectResult {
                id: id.clone(),
                action: match (
                    previous.entries.iter().any(|p| p.same_object(id)),
                    unchanged,
                ) {
                    (false, _) => ObjectAction::Created,
                    (true, true) => ObjectAction::Unchanged,
                    (true, false) => ObjectAction::Configured,
                },
            })
            .collect();
        objects.extend(
            previous
                .stale(&inventory)
                .into_iter()
                .map(|id| ObjectResult {
                    id,
                    action: ObjectAction::Pruned,
                }),
        );
        Ok(ApplyReport {
            objects,
            inventory,
            output: Some(path),
        })
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::ObjectId;
    use std::fs;

    fn ctx() -> ApplyContext {
        ApplyContext::new(
            std::time::Duration::from_secs(30),
            tokio_util::sync::CancellationToken::new(),
        )
    }

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

    #[tokio::test]
    async fn writes_the_render_and_reports_what_left() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("manifests/web");
        let target = DirectoryTarget::new(&dir, "web");

        let first = rendered(&[("ConfigMap", "a"), ("Service", "b")]);
        let report = target
            .apply(&first, &Inventory::default(), &ctx())
            .await
            .unwrap();
        let file = dir.join("web.yaml");
        assert_eq!(report.output.as_deref(), Some(file.as_path()));
        assert_eq!(report.applied(), 2);
        assert!(report.pruned().is_empty());
        assert!(report
            .objects
            .iter()
            .all(|o| o.action == ObjectAction::Created));
        assert_eq!(fs::read_to_string(&file).unwrap(), first.yaml);

        let second = rendered(&[("Service", "b")]);
        let report2 = target
            .apply(&second, &report.inventory, &ctx())
            .await
            .unwrap();
        assert_eq!(report2.applied(), 1);
        assert_eq!(report2.objects[0].action, ObjectAction::Configured);
        assert_eq!(
            report2.pruned(),
            vec![ObjectId::new("v1", "ConfigMap", "web", "a")]
        );
        assert_eq!(fs::read_to_string(&file).unwrap(), second.yaml);

        // No objects: the file is still written, empty, and everything is reported gone.
        let report3 = target
            .apply(&Rendered::default(), &report2.inventory, &ctx())
            .await
            .unwrap();
        assert_eq!(report3.applied(), 0);
        assert_eq!(
            report3.pruned(),
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

    #[tokio::test]
    async fn an_identical_render_reports_its_objects_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let target = DirectoryTarget::new(tmp.path(), "app");
        let render = rendered(&[("ConfigMap", "a")]);
        let first = target
            .apply(&render, &Inventory::default(), &ctx())
            .await
            .unwrap();
        let again = target
            .apply(&render, &first.inventory, &ctx())
            .await
            .unwrap();
        assert_eq!(again.objects.len(), 1);
        assert_eq!(again.objects[0].action, ObjectAction::Unchanged);
        assert_eq!(
            target.describe(),
            tmp.path().join("app.yaml").display().to_string()
        );
    }

    #[tokio::test]
    async fn replaces_the_file_rather_than_rewriting_it() {
        // A reader holding the old file keeps reading the old content: the new content
        // arrives through a rename, not by truncating the file in place.
        let tmp = tempfile::tempdir().unwrap();
        let target = DirectoryTarget::new(tmp.path(), "app");
        let old = rendered(&[("ConfigMap", "old")]);
        target
            .apply(&old, &Inventory::default(), &ctx())
            .await
            .unwrap();
        let held = fs::File::open(target.path()).unwrap();
        target
            .apply(
                &rendered(&[("ConfigMap", "new")]),
                &Inventory::default(),
                &ctx(),
            )
            .await
            .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut &held, &mut text).unwrap();
        assert_eq!(text, old.yaml);
        assert!(fs::read_to_string(target.path())
            .unwrap()
            .contains("name: new"));
    }

    #[tokio::test]
    async fn refuses_file_names_that_are_paths() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["", "../x.yaml", "a/b.yaml", ".hidden.yaml", ".."] {
            let target = DirectoryTarget {
                directory: tmp.path().to_path_buf(),
                file_name: name.to_string(),
            };
            assert!(
                matches!(
                    target
                        .apply(&Rendered::default(), &Inventory::default(), &ctx())
                        .await,
                    Err(ApplyError::InvalidFileName { .. })
                ),
                "{name:?}"
            );
        }
    }
}
