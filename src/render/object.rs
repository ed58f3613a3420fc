//! The objects of kustomize's output: each one's identity and value.

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

/// One object of a render: its identity and the object itself, as the JSON value a
/// Kubernetes API server takes (a server-side apply sends it as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub id: ObjectId,
    pub value: serde_json::Value,
}

/// Why kustomize's output could not be read as objects.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("the output is not valid YAML: {0}")]
    Syntax(#[source] Box<serde_saphyr::Error>),
    #[error("document {number} is not a mapping")]
    NotAMapping { number: usize },
    #[error("document {number} has no kind or no metadata.name")]
    NoIdentity { number: usize },
}

/// Read every object of a multi-document YAML stream, in stream order.
///
/// Empty documents (a stray `---`) are skipped and not counted. Anything else that is not an
/// object with a `kind` and a `metadata.name` is an error: kustomize never prints such a
/// thing, so seeing one means the output is not what we think it is.
pub(crate) fn parse_objects(yaml: &str) -> Result<Vec<Object>, ObjectsError> {
    use super::yaml::scalar_text;
    use serde_json::Value;

    let documents = super::yaml::documents(yaml).map_err(|e| ObjectsError::Syntax(Box::new(e)))?;
    let mut objects = Vec::with_capacity(documents.len());
    for (index, value) in documents.into_iter().enumerate() {
        let number = index + 1;
        let Value::Object(map) = &value else {
            return Err(ObjectsError::NotAMapping { number });
        };
        let kind = scalar_text(map.get("kind")).filter(|k| !k.is_empty());
        let api_version = scalar_text(map.get("apiVersion")).unwrap_or_default();
        let metadata = map.get("metadata").and_then(Value::as_object);
        let name = scalar_text(metadata.and_then(|m| m.get("name"))).filter(|n| !n.is_empty());
        let namespace = scalar_text(metadata.and_then(|m| m.get("namespace"))).unwrap_or_default();
        let (Some(kind), Some(name)) = (kind, name) else {
            return Err(ObjectsError::NoIdentity { number });
        };
        objects.push(Object {
            id: ObjectId::new(&api_version, &kind, &namespace, &name),
            value,
        });
    }
    Ok(objects)
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
        let parsed = parse_objects(yaml).unwrap();
        assert_eq!(parsed[1].value["metadata"]["name"], "web");
        let objects: Vec<ObjectId> = parsed.into_iter().map(|o| o.id).collect();
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
        assert!(matches!(
            parse_objects("a: ["),
            Err(ObjectsError::Syntax(_))
        ));
        assert!(matches!(
            parse_objects("kind: A\nmetadata: {name: a}\n---\n- b\n"),
            Err(ObjectsError::NotAMapping { number: 2 })
        ));
    }

    #[test]
    fn same_object_ignores_version() {
        let old = ObjectId::new("autoscaling/v1", "HorizontalPodAutoscaler", "a", "b");
        let new = ObjectId::new("autoscaling/v2", "HorizontalPodAutoscaler", "a", "b");
        assert!(old.same_object(&new));
        assert_ne!(old, new);
    }
}
