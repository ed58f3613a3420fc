//! The order in which a cluster target applies and prunes objects, as Flux's
//! kustomize-controller does.
//!
//! Apply runs in three stages: CustomResourceDefinitions and Namespaces (then waits until the
//! CRDs are Established and the namespaces exist, so that custom resources and namespaced
//! objects of the same kustomization can be applied in the same pass), then the cluster-wide
//! "class" kinds other objects refer to by name, then everything else. Inside a stage, objects
//! are applied concurrently; the order below only makes logs and reports read the way kubectl
//! users expect (dependencies first). Prune goes the other way: namespaces and CRDs last, so
//! that deleting a namespace never races the objects inside it and a CRD outlives its
//! resources.

/// The stage an object of `group`/`kind` is applied in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// CustomResourceDefinitions and Namespaces.
    Definitions,
    /// StorageClass, IngressClass, PriorityClass, RuntimeClass and the like.
    Classes,
    /// Everything else.
    Objects,
}

pub fn stage(group: &str, kind: &str) -> Stage {
    match (group, kind) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") | ("", "Namespace") => {
            Stage::Definitions
        }
        ("storage.k8s.io", "StorageClass")
        | ("storage.k8s.io", "VolumeAttributesClass")
        | ("networking.k8s.io", "IngressClass")
        | ("scheduling.k8s.io", "PriorityClass")
        | ("node.k8s.io", "RuntimeClass")
        | ("resource.k8s.io", "DeviceClass")
        | ("gateway.networking.k8s.io", "GatewayClass") => Stage::Classes,
        _ => Stage::Objects,
    }
}

/// A rank inside a stage: objects others depend on come first (the order `kubectl apply`
/// users know from Helm and kapp: quotas and accounts, RBAC, configuration, then workloads).
pub fn rank(group: &str, kind: &str) -> u8 {
    let order: &[(&str, &str)] = &[
        ("", "Namespace"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
        ("", "ResourceQuota"),
        ("", "LimitRange"),
        ("", "ServiceAccount"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
        ("rbac.authorization.k8s.io", "RoleBinding"),
        ("", "Secret"),
        ("", "ConfigMap"),
        ("", "PersistentVolume"),
        ("", "PersistentVolumeClaim"),
        ("", "Service"),
    ];
    order
        .iter()
        .position(|&(g, k)| g == group && k == kind)
        .map_or(order.len() as u8, |i| i as u8)
}

/// The order objects are pruned in: workloads first, the objects they use next, then classes,
/// and namespaces and CRDs last.
pub fn prune_key(group: &str, kind: &str) -> (std::cmp::Reverse<Stage>, std::cmp::Reverse<u8>) {
    (
        std::cmp::Reverse(stage(group, kind)),
        std::cmp::Reverse(rank(group, kind)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_come_before_classes_before_everything_else() {
        assert_eq!(
            stage("apiextensions.k8s.io", "CustomResourceDefinition"),
            Stage::Definitions
        );
        assert_eq!(stage("", "Namespace"), Stage::Definitions);
        assert_eq!(stage("storage.k8s.io", "StorageClass"), Stage::Classes);
        assert_eq!(stage("networking.k8s.io", "IngressClass"), Stage::Classes);
        assert_eq!(stage("apps", "Deployment"), Stage::Objects);
        // A kind called Namespace in another group is an ordinary object.
        assert_eq!(stage("example.com", "Namespace"), Stage::Objects);
        assert!(Stage::Definitions < Stage::Classes && Stage::Classes < Stage::Objects);
    }

    #[test]
    fn prune_takes_workloads_first_and_namespaces_and_crds_last() {
        let mut kinds = vec![
            ("", "Namespace"),
            ("apiextensions.k8s.io", "CustomResourceDefinition"),
            ("", "ConfigMap"),
            ("apps", "Deployment"),
            ("storage.k8s.io", "StorageClass"),
            ("", "ServiceAccount"),
        ];
        kinds.sort_by_key(|&(g, k)| prune_key(g, k));
        assert_eq!(
            kinds,
            [
                ("apps", "Deployment"),
                ("", "ConfigMap"),
                ("", "ServiceAccount"),
                ("storage.k8s.io", "StorageClass"),
                ("apiextensions.k8s.io", "CustomResourceDefinition"),
                ("", "Namespace"),
            ]
        );
    }
}
