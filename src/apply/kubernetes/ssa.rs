//! Server-side apply, stage by stage, and the dry-run diff.
//!
//! Each stage starts with one metadata LIST per kind and namespace: it tells which objects
//! exist and their `resourceVersion`, which decides, per object, whether anything needs to
//! be sent (see the module above) and afterwards what the apply did. The objects of a stage
//! then go out concurrently, at most [`super::CONCURRENCY`] at a time, all of them even when
//! some fail, so that the error names every failed object of the stage; a later stage does
//! not start after a failed one.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::stream::{self, StreamExt as _};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::labels::{Owner, Policy};
use super::object::{api, Desired};
use super::resolve::{self, Resolved};
use super::stages::{self, Stage};
use super::{Applied, ClusterState, CONCURRENCY, FIELD_MANAGER};
use crate::apply::{
    ApplyContext, ApplyError, ObjectAction, ObjectFailure, ObjectProblem, ObjectResult,
};
use crate::cluster::Connection;
use crate::render::ObjectId;

/// How often a deleted object is looked for while it goes away (`force`).
const GONE_POLL: Duration = Duration::from_millis(250);

/// Whether an API server's message says an immutable field was changed. The API server
/// reports it only in words (a 422 `Invalid` whose causes say `FieldValueInvalid`, as for any
/// other invalid value), so the words are matched: these are the ones its validation code
/// uses for immutable fields (`field is immutable`, and Services' `may not change once set`,
/// RoleBindings' `cannot change roleRef`).
pub(crate) fn is_immutable(message: &str) -> bool {
    [
        "field is immutable",
        "may not change once set",
        "cannot change roleRef",
    ]
    .iter()
    .any(|words| message.contains(words))
}

/// The live `resourceVersion` of each object (absent: it does not exist), by stage.
type Live = HashMap<(String, String), Option<String>>;

/// Applies `objects` stage by stage; the results are in stage order, each stage's objects in
/// kubectl's order (`stages::rank`).
pub(crate) async fn apply_stages(
    conn: &Connection,
    state: &ClusterState,
    owner: &Owner,
    objects: &[Desired],
    ctx: &ApplyContext,
) -> Result<Vec<ObjectResult>, ApplyError> {
    let mut results = Vec::with_capacity(objects.len());
    for stage in [Stage::Definitions, Stage::Classes, Stage::Objects] {
        let mut batch: Vec<Desired> = objects
            .iter()
            .filter(|o| o.stage == stage)
            .cloned()
            .collect();
        if batch.is_empty() {
            continue;
        }
        batch.sort_by_key(|o| stages::rank(&o.id.group, &o.id.kind));
        let mut failures = Vec::new();
        // Custom resources whose CRD came in the first stage.
        for o in batch.iter_mut().filter(|o| o.resolved.is_none()) {
            o.resolved = state
                .resolver
                .resolve(conn, &o.id.group, &o.id.version, &o.id.kind)
                .await?;
            if o.resolved.is_none() {
                failures.push(ObjectFailure {
                    id: o.id.clone(),
                    problem: resolve::unknown(&o.id.group, &o.id.version, &o.id.kind),
                });
            }
        }
        batch.retain(|o| o.resolved.is_some());
        let live = live_versions(conn, &batch).await;
        // Futures made in a loop, not in a stream's closure: a closure over borrowed objects
        // makes the whole future fail the `Send` check (rust-lang/rust#102211).
        let mut requests = Vec::with_capacity(batch.len());
        for o in &batch {
            let before = live.get(&(o.id.namespace.clone(), key(o))).cloned();
            requests.push(apply_one(conn, state, owner, o, before, ctx));
        }
        let outcomes: Vec<Result<ObjectResult, ObjectFailure>> =
            stream::iter(requests).buffered(CONCURRENCY).collect().await;
        for outcome in outcomes {
            match outcome {
                Ok(result) => results.push(result),
                Err(failure) => failures.push(failure),
            }
        }
        if !failures.is_empty() {
            tracing::warn!(
                kustomization = %owner,
                applied = results.len(),
                failed = failures.len(),
                "objects failed to apply"
            );
            return Err(ApplyError::Objects { failures });
        }
        if stage == Stage::Definitions {
            let crds: Vec<ObjectId> = batch
                .iter()
                .filter(|o| o.id.kind == "CustomResourceDefinition")
                .map(|o| o.id.clone())
                .collect();
            super::wait::until_current(conn, &state.resolver, &crds, ctx).await?;
        }
    }
    Ok(results)
}

/// `resource/name`: what identifies an object among the live ones of its namespace.
fn key(o: &Desired) -> String {
    let plural = o
        .resolved
        .as_ref()
        .map_or("", |r| r.resource.plural.as_str());
    format!("{}.{}/{}", plural, o.id.group, o.id.name)
}

/// One metadata LIST per resource and namespace of `batch`. A LIST that fails (RBAC may
/// allow `patch` without `list`) leaves its objects out: they are then looked up one by one.
async fn live_versions(conn: &Connection, batch: &[Desired]) -> Live {
    let mut groups: HashMap<(String, String), &Resolved> = HashMap::new();
    for o in batch {
        if let Some(r) = &o.resolved {
            groups
                .entry((
                    r.resource.api_version.clone() + "/" + &r.resource.plural,
                    o.id.namespace.clone(),
                ))
                .or_insert(r);
        }
    }
    let mut live = Live::new();
    for ((_, namespace), resolved) in groups {
        let api: Api<DynamicObject> = api(conn, resolved, &namespace);
        let Ok(list) = api.list_metadata(&ListParams::default()).await else {
            continue;
        };
        let wanted: Vec<&Desired> = batch
            .iter()
            .filter(|o| {
                o.id.namespace == namespace
                    && o.resolved
                        .as_ref()
                        .is_some_and(|r| r.resource == resolved.resource)
            })
            .collect();
        for o in &wanted {
            live.insert((namespace.clone(), key(o)), None);
        }
        for item in list.items {
            let name = item.metadata.name.clone().unwrap_or_default();
            if let Some(o) = wanted.iter().find(|o| o.id.name == name) {
                live.insert(
                    (namespace.clone(), key(o)),
                    item.metadata.resource_version.clone(),
                );
            }
        }
    }
    live
}

/// Applies one object; `before` is its live `resourceVersion` (`Some(None)`: it does not
/// exist; `None`: unknown, looked up here).
async fn apply_one(
    conn: &Connection,
    state: &ClusterState,
    owner: &Owner,
    o: &Desired,
    before: Option<Option<String>>,
    ctx: &ApplyContext,
) -> Result<ObjectResult, ObjectFailure> {
    let fail = |problem| ObjectFailure {
        id: o.id.clone(),
        problem,
    };
    let done = |action| ObjectResult {
        id: o.id.clone(),
        action,
    };
    let Some(resolved) = &o.resolved else {
        return Err(fail(resolve::unknown(
            &o.id.group,
            &o.id.version,
            &o.id.kind,
        )));
    };
    let api = api(conn, resolved, &o.id.namespace);
    let before = match before {
        Some(before) => before,
        None => api
            .get_metadata_opt(&o.id.name)
            .await
            .map_err(|e| fail(super::problem(e, "get")))?
            .and_then(|m| m.metadata.resource_version),
    };
    match o.policy {
        Policy::Ignore => return Ok(done(ObjectAction::Skipped)),
        Policy::IfNotPresent if before.is_some() => return Ok(done(ObjectAction::Skipped)),
        _ => {}
    }
    let remembered = state.remembered(owner, &o.id);
    if let (Some(before), Some(applied)) = (&before, &remembered) {
        if applied.digest == o.digest && &applied.resource_version == before {
            return Ok(done(ObjectAction::Unchanged));
        }
    }
    let params = patch_params(false);
    let mut recreated = false;
    let after = match api
        .patch(&o.id.name, &params, &Patch::Apply(&o.value))
        .await
    {
        Ok(applied) => applied,
        Err(e) => match super::problem(e, "patch") {
            ObjectProblem::Immutable { .. } if ctx.force || o.force => {
                recreated = true;
                recreate(&api, o, &params).await.map_err(fail)?
            }
            ObjectProblem::Rejected { code: 404, .. } if before.is_none() => {
                // The kind may have gone with its CRD; ask discovery again next time.
                state
                    .resolver
                    .forget(conn, &o.id.group, &o.id.version, &o.id.kind);
                return Err(fail(resolve::unknown(
                    &o.id.group,
                    &o.id.version,
                    &o.id.kind,
                )));
            }
            problem => return Err(fail(problem)),
        },
    };
    let version = after.metadata.resource_version.clone().unwrap_or_default();
    let action = match &before {
        _ if recreated => ObjectAction::Created,
        None => ObjectAction::Created,
        Some(before) if *before == version => ObjectAction::Unchanged,
        Some(_) => ObjectAction::Configured,
    };
    state.remember(
        owner,
        &o.id,
        Some(Applied {
            digest: o.digest,
            resource_version: version,
        }),
    );
    Ok(done(action))
}

/// Ownership of conflicting fields is always taken, as Flux does.
fn patch_params(dry_run: bool) -> PatchParams {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    if dry_run {
        params.dry_run()
    } else {
        params
    }
}

/// `force`: delete the object, wait until it is gone, apply it again.
async fn recreate(
    api: &Api<DynamicObject>,
    o: &Desired,
    params: &PatchParams,
) -> Result<DynamicObject, ObjectProblem> {
    tracing::info!(object = %o.id, "recreating: an immutable field changed and force is set");
    match api.delete(&o.id.name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(super::problem(e, "delete")),
    }
    loop {
        match api.get_metadata_opt(&o.id.name).await {
            Ok(None) => break,
            Ok(Some(_)) => tokio::time::sleep(GONE_POLL).await,
            Err(e) => return Err(super::problem(e, "get")),
        }
    }
    api.patch(&o.id.name, params, &Patch::Apply(&o.value))
        .await
        .map_err(|e| super::problem(e, "patch"))
}

/// What an apply would change in one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub id: ObjectId,
    /// `Created` or `Configured`.
    pub action: ObjectAction,
    /// `path: old -> new` for each field that would change (`path: + new` when created).
    pub changes: Vec<String>,
}

/// Server-side dry-run of every object, compared with the live one; unchanged objects are
/// left out.
pub(crate) async fn diff(
    conn: &Connection,
    objects: &[Desired],
) -> Result<Vec<Difference>, ApplyError> {
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for o in objects {
        let Some(resolved) = &o.resolved else {
            out.push(Difference {
                id: o.id.clone(),
                action: ObjectAction::Created,
                changes: vec!["(its CustomResourceDefinition is created by this apply)".into()],
            });
            continue;
        };
        if o.policy == Policy::Ignore {
            continue;
        }
        let api = api(conn, resolved, &o.id.namespace);
        let live = match api.get_opt(&o.id.name).await {
            Ok(live) => live,
            Err(e) => {
                failures.push(ObjectFailure {
                    id: o.id.clone(),
                    problem: super::problem(e, "get"),
                });
                continue;
            }
        };
        if live.is_some() && o.policy == Policy::IfNotPresent {
            continue;
        }
        let merged = match api
            .patch(&o.id.name, &patch_params(true), &Patch::Apply(&o.value))
            .await
        {
            Ok(merged) => merged,
            Err(e) => {
                failures.push(ObjectFailure {
                    id: o.id.clone(),
                    problem: super::problem(e, "patch"),
                });
                continue;
            }
        };
        let merged = comparable(serde_json::to_value(merged).unwrap_or_default());
        match live {
            None => out.push(Difference {
                id: o.id.clone(),
                action: ObjectAction::Created,
                changes: vec![],
            }),
            Some(live) => {
                let live = comparable(serde_json::to_value(live).unwrap_or_default());
                let mut changes = Vec::new();
                changed_paths(&live, &merged, String::new(), &mut changes);
                if !changes.is_empty() {
                    out.push(Difference {
                        id: o.id.clone(),
                        action: ObjectAction::Configured,
                        changes,
                    });
                }
            }
        }
    }
    if failures.is_empty() {
        Ok(out)
    } else {
        Err(ApplyError::Objects { failures })
    }
}

/// The object without what the server changes on every write or owns itself.
fn comparable(mut object: Value) -> Value {
    if let Some(metadata) = object["metadata"].as_object_mut() {
        for field in [
            "managedFields",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "uid",
        ] {
            metadata.remove(field);
        }
    }
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    object
}

/// The leaf paths where `old` and `new` differ. Secrets' values are never shown.
fn changed_paths(old: &Value, new: &Value, path: String, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let sub = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                changed_paths(
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                    sub,
                    out,
                );
            }
        }
        _ if path.starts_with("data.") || path.starts_with("stringData.") => {
            out.push(format!("{path}: (value hidden) changed"));
        }
        _ => out.push(format!("{path}: {old} -> {new}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn immutable_field_messages_are_recognised() {
        assert!(is_immutable(
            "Job.batch \"m\" is invalid: spec.template: Invalid value: ...: field is immutable"
        ));
        assert!(is_immutable(
            "spec.clusterIPs[0]: Invalid value: ...: may not change once set"
        ));
        assert!(!is_immutable(
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
        ));
    }

    #[test]
    fn differences_name_paths_and_hide_data_values() {
        let old = json!({"metadata": {"name": "a", "resourceVersion": "1"}, "data": {"k": "v1"}, "spec": {"replicas": 1}});
        let new = json!({"metadata": {"name": "a", "resourceVersion": "2"}, "data": {"k": "v2"}, "spec": {"replicas": 2}});
        let mut out = Vec::new();
        changed_paths(&comparable(old), &comparable(new), String::new(), &mut out);
        assert_eq!(
            out,
            ["data.k: (value hidden) changed", "spec.replicas: 1 -> 2"]
        );
    }
}
