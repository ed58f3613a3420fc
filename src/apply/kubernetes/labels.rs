//! Who owns an object: the labels every applied object carries, and the annotations a
//! repository sets on its objects to change how they are applied or pruned.
//!
//! The labels live under gitopsd's own domain, `gitopsd.io/`: they name the configuration's
//! namespace, the configuration and the kustomization, so `kubectl get -l` finds what one
//! kustomization manages, and prune never deletes an object another kustomization (or
//! nobody) now owns. Label values are limited to 63 characters; the names the config allows
//! (DNS labels) fit.
//!
//! Annotations are read under gitopsd's prefix and, so that repositories written for Flux
//! keep their meaning, under Flux's `kustomize.toolkit.fluxcd.io/`; gitopsd's wins when both
//! are set.

use serde_json::Value;

pub const NAMESPACE_LABEL: &str = "gitopsd.io/namespace";
pub const CONFIGURATION_LABEL: &str = "gitopsd.io/configuration";
pub const KUSTOMIZATION_LABEL: &str = "gitopsd.io/kustomization";

const PREFIXES: [&str; 2] = ["gitopsd.io/", "kustomize.toolkit.fluxcd.io/"];

/// The kustomization an object belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// The configuration's namespace (where its inventory and `substituteFrom` objects live).
    pub namespace: String,
    pub configuration: String,
    pub kustomization: String,
}

impl Owner {
    /// The three labels, as `(key, value)`.
    pub fn labels(&self) -> [(&'static str, &str); 3] {
        [
            (NAMESPACE_LABEL, &self.namespace),
            (CONFIGURATION_LABEL, &self.configuration),
            (KUSTOMIZATION_LABEL, &self.kustomization),
        ]
    }

    /// A label selector matching the objects this kustomization owns.
    pub fn selector(&self) -> String {
        self.labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether `object`'s labels name this kustomization.
    pub fn owns(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.labels()
            .iter()
            .all(|(k, v)| labels[*k].as_str() == Some(*v))
    }

    /// Sets the labels on `object` (keeping its own).
    pub fn stamp(&self, object: &mut Value) {
        let metadata = &mut object["metadata"];
        if !metadata["labels"].is_object() {
            metadata["labels"] = Value::Object(Default::default());
        }
        for (k, v) in self.labels() {
            metadata["labels"][k] = Value::String(v.to_string());
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace, self.configuration, self.kustomization
        )
    }
}

/// The value of annotation `name` (without prefix) under gitopsd's or Flux's prefix.
pub fn annotation<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    let annotations = &object["metadata"]["annotations"];
    PREFIXES
        .iter()
        .find_map(|prefix| annotations[format!("{prefix}{name}")].as_str())
}

/// The `ssa` annotation: how an object is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Take ownership of every field the manifest sets (the default; Flux's `Override`).
    Override,
    /// The same here: fields other managers set are left to them in both cases. (Flux's
    /// `Override` also strips the entries of kubectl's client-side apply from
    /// `managedFields`; gitopsd never edits another manager's entries.)
    Merge,
    /// Create the object when it does not exist, never change it afterwards.
    IfNotPresent,
    /// Never apply the object (it stays in the inventory, so it is not pruned either).
    Ignore,
}

pub fn policy(object: &Value) -> Policy {
    match annotation(object, "ssa") {
        Some(v) if v.eq_ignore_ascii_case("merge") => Policy::Merge,
        Some(v) if v.eq_ignore_ascii_case("ifnotpresent") => Policy::IfNotPresent,
        Some(v) if v.eq_ignore_ascii_case("ignore") => Policy::Ignore,
        _ => Policy::Override,
    }
}

/// `prune: disabled`: never deleted by a prune.
pub fn prune_disabled(object: &Value) -> bool {
    annotation(object, "prune").is_some_and(|v| v.eq_ignore_ascii_case("disabled"))
}

/// `force: enabled`: recreated on an immutable-field change even without `force: true`.
pub fn force_enabled(object: &Value) -> bool {
    annotation(object, "force").is_some_and(|v| v.eq_ignore_ascii_case("enabled"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owner() -> Owner {
        Owner {
            namespace: "flux".into(),
            configuration: "web".into(),
            kustomization: "apps".into(),
        }
    }

    #[test]
    fn stamped_objects_are_owned_and_others_are_not() {
        let mut cm = json!({"metadata": {"name": "a", "labels": {"app": "x"}}});
        assert!(!owner().owns(&cm));
        owner().stamp(&mut cm);
        assert!(owner().owns(&cm));
        assert_eq!(cm["metadata"]["labels"]["app"], "x");
        let other = Owner {
            kustomization: "infra".into(),
            ..owner()
        };
        assert!(!other.owns(&cm));
        assert_eq!(
            owner().selector(),
            "gitopsd.io/namespace=flux,gitopsd.io/configuration=web,gitopsd.io/kustomization=apps"
        );
    }

    #[test]
    fn annotations_are_read_under_both_prefixes_ours_first() {
        let flux = json!({"metadata": {"annotations": {
            "kustomize.toolkit.fluxcd.io/ssa": "IfNotPresent",
            "kustomize.toolkit.fluxcd.io/prune": "disabled",
            "kustomize.toolkit.fluxcd.io/force": "Enabled"}}});
        assert_eq!(policy(&flux), Policy::IfNotPresent);
        assert!(prune_disabled(&flux));
        assert!(force_enabled(&flux));
        let both = json!({"metadata": {"annotations": {
            "gitopsd.io/ssa": "Ignore",
            "kustomize.toolkit.fluxcd.io/ssa": "Merge"}}});
        assert_eq!(policy(&both), Policy::Ignore);
        assert_eq!(policy(&json!({"metadata": {}})), Policy::Override);
        assert!(!prune_disabled(&json!({"metadata": {}})));
    }
}
