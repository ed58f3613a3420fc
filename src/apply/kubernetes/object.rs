//! The objects as they are sent: the render's objects with their namespace settled (the
//! configuration's scope checked) and the ownership labels set, each with its resource.

use std::hash::{Hash as _, Hasher as _};

use kube::api::{Api, DynamicObject};
use serde_json::Value;

use super::labels::{self, Owner, Policy};
use super::resolve::{self, Resolved, Resolver};
use super::stages::{self, Stage};
use crate::apply::{ApplyError, ObjectFailure, ObjectProblem};
use crate::cluster::Connection;
use crate::render::{ObjectId, Rendered};

/// One object ready to apply.
#[derive(Debug, Clone)]
pub(crate) struct Desired {
    pub id: ObjectId,
    pub value: Value,
    /// `None` for a custom resource whose CRD is applied in the first stage of this apply.
    pub resolved: Option<Resolved>,
    pub policy: Policy,
    pub force: bool,
    pub stage: Stage,
    /// Of `value`, to tell whether it changed since the last apply.
    pub digest: u64,
}

/// The render's objects ready to apply; every object that cannot be is named in one error.
pub(crate) async fn prepare(
    conn: &Connection,
    resolver: &Resolver,
    rendered: &Rendered,
    owner: &Owner,
    namespaced_scope: bool,
) -> Result<Vec<Desired>, ApplyError> {
    let mut out = Vec::with_capacity(rendered.objects.len());
    let mut failures = Vec::new();
    for object in &rendered.objects {
        let id = &object.id;
        let fail = |problem| ObjectFailure {
            id: id.clone(),
            problem,
        };
        let resolved = resolver
            .resolve(conn, &id.group, &id.version, &id.kind)
            .await?;
        let namespaced = match &resolved {
            Some(r) => r.namespaced,
            None => match defined_here(rendered, &id.group, &id.kind) {
                Some(namespaced) => namespaced,
                None => {
                    failures.push(fail(resolve::unknown(&id.group, &id.version, &id.kind)));
                    continue;
                }
            },
        };
        let mut value = object.value.clone();
        let mut namespace = id.namespace.clone();
        if namespaced {
            if namespace.is_empty() && namespaced_scope {
                namespace = owner.namespace.clone();
            }
            if namespace.is_empty() {
                failures.push(fail(ObjectProblem::NoNamespace));
                continue;
            }
            if namespaced_scope && namespace != owner.namespace {
                failures.push(fail(ObjectProblem::OutOfScope(format!(
                    "namespace `{namespace}` is outside the configuration's namespace `{}` \
                     (scope: namespace)",
                    owner.namespace
                ))));
                continue;
            }
            value["metadata"]["namespace"] = Value::String(namespace.clone());
        } else {
            if namespaced_scope {
                failures.push(fail(ObjectProblem::OutOfScope(format!(
                    "cluster-scoped {} refused: the configuration's scope is namespace `{}`",
                    id.kind, owner.namespace
                ))));
                continue;
            }
            // kubectl drops a namespace on a cluster-scoped object too.
            namespace.clear();
            if let Some(metadata) = value["metadata"].as_object_mut() {
                metadata.remove("namespace");
            }
        }
        owner.stamp(&mut value);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        value.to_string().hash(&mut hasher);
        out.push(Desired {
            id: ObjectId {
                namespace,
                ..id.clone()
            },
            policy: labels::policy(&value),
            force: labels::force_enabled(&value),
            stage: stages::stage(&id.group, &id.kind),
            digest: hasher.finish(),
            resolved,
            value,
        });
    }
    if failures.is_empty() {
        Ok(out)
    } else {
        Err(ApplyError::Objects { failures })
    }
}

/// Whether a CRD of this render defines `group`/`kind`: `Some(namespaced)` if so.
fn defined_here(rendered: &Rendered, group: &str, kind: &str) -> Option<bool> {
    rendered.objects.iter().find_map(|o| {
        let spec = &o.value["spec"];
        (o.id.group == "apiextensions.k8s.io"
            && o.id.kind == "CustomResourceDefinition"
            && spec["group"] == group
            && spec["names"]["kind"] == kind)
            .then(|| spec["scope"] != "Cluster")
    })
}

/// The API of `resolved` objects in `namespace` (all namespaces for cluster-scoped kinds).
pub(crate) fn api(conn: &Connection, resolved: &Resolved, namespace: &str) -> Api<DynamicObject> {
    if resolved.namespaced && !namespace.is_empty() {
        Api::namespaced_with(conn.client.clone(), namespace, &resolved.resource)
    } else {
        Api::all_with(conn.client.clone(), &resolved.resource)
    }
}

/// The live object `id` names, `None` when it (or its kind) does not exist.
pub(crate) async fn get(
    conn: &Connection,
    resolver: &Resolver,
    id: &ObjectId,
) -> Result<Option<Value>, ApplyError> {
    let Some(resolved) = resolver
        .resolve(conn, &id.group, &id.version, &id.kind)
        .await?
    else {
        return Ok(None);
    };
    match api(conn, &resolved, &id.namespace).get_opt(&id.name).await {
        Ok(found) => Ok(found.and_then(|o| serde_json::to_value(o).ok())),
        Err(e) => Err(ApplyError::Objects {
            failures: vec![ObjectFailure {
                id: id.clone(),
                problem: super::problem(e, "get"),
            }],
        }),
    }
}
