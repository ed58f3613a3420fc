//! The one place that turns a kustomization's `target` settings into a [`Target`].
//!
//! The reconciler calls [`build`] for every apply and never names an implementation; a
//! Kubernetes target (server-side apply with an inventory in the cluster) becomes one more
//! variant of [`AnyTarget`] and one more arm here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::kubernetes::{ClusterSettings, ClusterState, KubernetesTarget, Owner};
use super::{ApplyContext, ApplyError, ApplyReport, DirectoryTarget, Inventory, Target};
use crate::render::{ObjectId, Rendered};

/// A kustomization's `target`, as the config file states it (`config::Target`).
#[derive(Debug, Clone)]
pub enum TargetSettings {
    /// Write the rendered multi-document YAML to `<directory>/<kustomization name>.yaml`.
    Directory(PathBuf),
    /// Render only; the output is kept under the state dir (`<stateDir>/rendered/...`).
    None,
    /// Server-side apply to the cluster of the top-level `kubernetes` section.
    Kubernetes(Box<ClusterSettings>),
}

/// Every kind of target, dispatched statically (the trait's futures are not boxed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyTarget {
    Directory(DirectoryTarget),
    Kubernetes(Box<KubernetesTarget>),
}

/// The target of kustomization `owner`. Without a configured target, the render goes to
/// `<state_dir>/rendered/<namespace>/<configuration>/<name>.yaml`. `clusters` is what cluster
/// targets share between applies (clients, discovery, what was applied).
pub fn build(
    settings: &TargetSettings,
    state_dir: &Path,
    owner: &Owner,
    clusters: &Arc<ClusterState>,
) -> AnyTarget {
    match settings {
        TargetSettings::Directory(directory) => {
            AnyTarget::Directory(DirectoryTarget::new(directory, &owner.kustomization))
        }
        TargetSettings::None => AnyTarget::Directory(DirectoryTarget::new(
            state_dir
                .join("rendered")
                .join(&owner.namespace)
                .join(&owner.configuration),
            &owner.kustomization,
        )),
        TargetSettings::Kubernetes(cluster) => AnyTarget::Kubernetes(Box::new(
            KubernetesTarget::new((**cluster).clone(), owner.clone(), clusters.clone()),
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
            AnyTarget::Kubernetes(t) => t.apply(rendered, previous, ctx).await,
        }
    }

    async fn prune(
        &self,
        stale: &[ObjectId],
        ctx: &ApplyContext,
    ) -> Result<Vec<super::ObjectResult>, ApplyError> {
        match self {
            AnyTarget::Directory(t) => t.prune(stale, ctx).await,
            AnyTarget::Kubernetes(t) => t.prune(stale, ctx).await,
        }
    }

    async fn wait(&self, report: &ApplyReport, ctx: &ApplyContext) -> Result<(), ApplyError> {
        match self {
            AnyTarget::Directory(t) => t.wait(report, ctx).await,
            AnyTarget::Kubernetes(t) => t.wait(report, ctx).await,
        }
    }

    fn describe(&self) -> String {
        match self {
            AnyTarget::Directory(t) => t.describe(),
            AnyTarget::Kubernetes(t) => t.describe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_kustomization_without_target_renders_into_the_state_dir() {
        let owner = Owner {
            namespace: "ns".into(),
            configuration: "web".into(),
            kustomization: "app".into(),
        };
        let clusters = Arc::default();
        let built = build(
            &TargetSettings::None,
            Path::new("/state"),
            &owner,
            &clusters,
        );
        assert_eq!(
            built,
            AnyTarget::Directory(DirectoryTarget::new("/state/rendered/ns/web", "app"))
        );
        assert_eq!(built.describe(), "/state/rendered/ns/web/app.yaml");
        let dir = build(
            &TargetSettings::Directory(PathBuf::from("/srv/manifests")),
            Path::new("/state"),
            &owner,
            &clusters,
        );
        assert_eq!(dir.describe(), "/srv/manifests/app.yaml");
    }
}
