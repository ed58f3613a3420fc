//! The one place that turns a kustomization's `target` settings into a [`Target`].
//!
//! The reconciler calls [`build`] for every apply and never names an implementation; a
//! Kubernetes target (server-side apply with an inventory in the cluster) becomes one more
//! variant of [`AnyTarget`] and one more arm here.

use std::path::{Path, PathBuf};

use super::{ApplyContext, ApplyError, ApplyReport, DirectoryTarget, Inventory, Target};
use crate::render::{ObjectId, Rendered};

/// A kustomization's `target`, as the config file states it (`config::Target`).
#[derive(Debug, Clone)]
pub enum TargetSettings {
    /// Write the rendered multi-document YAML to `<directory>/<kustomization name>.yaml`.
    Directory(PathBuf),
    /// Render only; the output is kept under the state dir (`<stateDir>/rendered/...`).
    None,
}

/// Every kind of target, dispatched statically (the trait's futures are not boxed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyTarget {
    Directory(DirectoryTarget),
}

/// The target of kustomization `name` of configuration `configuration` in `namespace`.
/// Without a configured target, the render goes to
/// `<state_dir>/rendered/<namespace>/<configuration>/<name>.yaml`.
pub fn build(
    settings: &TargetSettings,
    state_dir: &Path,
    namespace: &str,
    configuration: &str,
    name: &str,
) -> AnyTarget {
    match settings {
        TargetSettings::Directory(directory) => {
            AnyTarget::Directory(DirectoryTarget::new(directory, name))
        }
        TargetSettings::None => AnyTarget::Directory(DirectoryTarget::new(
            state_dir
                .join("rendered")
                .join(namespace)
                .join(configuration),
            name,
        )),
    }
}

impl Target for AnyTarget {
    async fn apply(
        &self,
        rendered: &Rendered,
        previous: &Inventory,
        ctx: &ApplyContext,
    ) -> Result<ApplyReport, ApplyError> {
        match self {
            AnyTarget::Directory(t) => t.apply(rendered, previous, ctx).await,
        }
    }

    async fn prune(
        &self,
        stale: &[ObjectId],
        ctx: &ApplyContext,
    ) -> Result<Vec<super::ObjectResult>, ApplyError> {
        match self {
            AnyTarget::Directory(t) => t.prune(stale, ctx).await,
        }
    }

    async fn wait(&self, report: &ApplyReport, ctx: &ApplyContext) -> Result<(), ApplyError> {
        match self {
            AnyTarget::Directory(t) => t.wait(report, ctx).await,
        }
    }

    fn describe(&self) -> String {
        match self {
            AnyTarget::Directory(t) => t.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_kustomization_without_target_renders_into_the_state_dir() {
        let built = build(
            &TargetSettings::None,
            Path::new("/state"),
            "ns",
            "web",
            "app",
        );
        assert_eq!(
            built,
            AnyTarget::Directory(DirectoryTarget::new("/state/rendered/ns/web", "app"))
        );
        assert_eq!(built.describe(), "/state/rendered/ns/web/app.yaml");
        let dir = build(
            &TargetSettings::Directory(PathBuf::from("/srv/manifests")),
            Path::new("/state"),
            "ns",
            "web",
            "app",
        );
        assert_eq!(dir.describe(), "/srv/manifests/app.yaml");
    }
}
