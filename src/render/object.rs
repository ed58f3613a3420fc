//! Object identities read from kustomize's output.

use std::fmt;

/// One Kubernetes object as Flux's inventory names it: `<namespace>_<name>_<group>_<kind>`,
/// plus the version of the apiVersion it was rendered with.
///
/// `group` is empty for the core API (`apiVersion: v1`), `namespace` is empty for objects that
/// carry none (cluster-scoped kinds, or namespaced ones left to the target's default).
/// The derived order sorts by namespace, name, group, kind, version, which keeps inventories
/// and diffs stable.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ObjectId {
    pub namespace: String,
    pub name: String,
    pub group: String,
    pub kind: String,
    pub version: String,
}

impl ObjectId {
    /// Split `api_version` the way Kubernetes does: `apps/v1` is group `apps` version `v1`,
    /// `v1` is the core group `""` version `v1`.
    pub fn new(api_version: &str, kind: &str, namespace: &str, name: &str) -> Self {
        let (group, version) = split_api_version(api_version);
        ObjectId {
            namespace: namespace.to_string(),
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
            version: version.to_string(),
        }
    }

    /// Flux's inventory id, `<namespace>_<name>_<group>_<kind>`; the version is not part of
    /// it, so an object whose apiVersion moves from `v1beta1` to `v1` keeps its identity.
    pub fn inventory_id(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.namespace, self.name, self.group, self.kind
        )
    }

    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether two ids name the same object, ignoring the version.
    pub fn same_object(&self, other: &ObjectId) -> bool {
        self.namespace == other.namespace
            && self.name == other.name
            && self.group == other.group
            && self.kind == other.kind
    }
}

/// `Kind/namespace/name` (or `Kind/name` without a namespace), the form Flux uses in
/// messages and events.
impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
        }
    }
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// Read the identity of every object in a multi-document YAML stream, in stream order.
///
/// Empty documents (a stray `---`) are skipped. Anything else that is not an object with a
/// `kind` and a `metadata.name` is an error: kustomize never prints such a thing, so seeing
/// one means the output is not what we think it is.
pub(crate) fn parse_objects(yaml: &str) -> Result<Vec<ObjectId>, String> {
    use serde::Deserialize;
    use serde_yaml::Value;

    let mut objects = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = Value::deserialize(document)
            .map_err(|e| format!("document {} is not valid YAML: {e}", index + 1))?;
        let map = match value {
            Value::Null => continue,
            Value::Mapping(map) => map,
            _ => return Err(format!("document {} is not a mapping", index + 1)),
        };
        let field = |m: &serde_yaml::Mapping, key: &str| m.get(key).and_then(scalar_string);
        let kind = field(&map, "kind").filter(|k| !k.is_empty());
        let api_version = field(&map, "apiVersion").unwrap_or_default();
        let metadata = map.get("metadata").and_then(Value::as_mapping);
        let name = metadata
            .and_then(|m| field(m, "name"))
            .filter(|n| !n.is_empty());
        let namespace = metadata
            .and_then(|m| field(m, "namespace"))
            .unwrap_or_default();
        match (kind, name) {
            (Some(kind), Some(name)) => {
                objects.push(ObjectId::new(&api_version, &kind, &namespace, &name))
            }
            _ => {
                return Err(format!(
                    "document {} has no kind or no metadata.name",
                    index + 1
                ))
            }
        }
    }
    Ok(objects)
}

/// Kustomize passes scalars through untouched, so `kind: 5` is possible; read any scalar as
/// its text rather than insisting on a YAML string.
fn scalar_string(value: &serde_yaml::Value) -> Option<String> {
    use serde_yaml::Value;
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_api_versions_and_reads_namespaces() {
        let yaml = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: web
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: web
---
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: reader
";
        let objects = parse_objects(yaml).unwrap();
        assert_eq!(
            objects,
            vec![
                ObjectId::new("v1", "ConfigMap", "web", "settings"),
                ObjectId::new("apps/v1", "Deployment", "web", "web"),
                ObjectId::new("rbac.authorization.k8s.io/v1", "ClusterRole", "", "reader"),
            ]
        );
        assert_eq!(objects[0].group, "");
        assert_eq!(objects[0].version, "v1");
        assert_eq!(objects[1].group, "apps");
        assert_eq!(objects[1].version, "v1");
        assert_eq!(objects[2].namespace, "");
        assert_eq!(objects[0].inventory_id(), "web_settings__ConfigMap");
        assert_eq!(objects[1].inventory_id(), "web_web_apps_Deployment");
        assert_eq!(
            objects[2].inventory_id(),
            "_reader_rbac.authorization.k8s.io_ClusterRole"
        );
        assert_eq!(objects[1].api_version(), "apps/v1");
        assert_eq!(objects[0].api_version(), "v1");
        assert_eq!(objects[1].to_string(), "Deployment/web/web");
        assert_eq!(objects[2].to_string(), "ClusterRole/reader");
    }

    #[test]
    fn empty_output_has_no_objects() {
        assert!(parse_objects("").unwrap().is_empty());
        assert!(parse_objects("---\n").unwrap().is_empty());
    }

    #[test]
    fn rejects_documents_that_are_not_objects() {
        assert!(parse_objects("- a\n- b\n").is_err());
        assert!(parse_objects("kind: ConfigMap\n").is_err());
        assert!(parse_objects("a: [").is_err());
    }

    #[test]
    fn same_object_ignores_version() {
        let old = ObjectId::new("autoscaling/v1", "HorizontalPodAutoscaler", "a", "b");
        let new = ObjectId::new("autoscaling/v2", "HorizontalPodAutoscaler", "a", "b");
        assert!(old.same_object(&new));
        assert_ne!(old, new);
    }
}
