//! Prune: delete what left the source, workloads first and namespaces and CRDs last, never an
//! object annotated `prune: disabled` and never one whose labels now name another owner.
//!
//! Deletes are sent one after the other in that order, with background propagation (the
//! garbage collector removes dependents, as `kubectl delete` does by default). A delete that
//! fails is reported and its object stays in the inventory, so the next apply tries again;
//! one that is refused never stops the others.

use kube::api::DeleteParams;

use super::labels::{self, Owner};
use super::object::{api, get};
use super::resolve::Resolver;
use super::stages;
use crate::apply::{ApplyContext, ObjectAction, ObjectFailure, ObjectResult};
use crate::cluster::Connection;
use crate::render::ObjectId;

#[derive(Debug, Default)]
pub(crate) struct Pruned {
    pub pruned: Vec<ObjectResult>,
    pub failed: Vec<ObjectFailure>,
}

pub(crate) async fn prune<'a>(
    conn: &Connection,
    resolver: &Resolver,
    owner: &Owner,
    stale: impl Iterator<Item = &'a ObjectId>,
    ctx: &ApplyContext,
) -> Pruned {
    let mut stale: Vec<&ObjectId> = stale.collect();
    stale.sort_by_key(|id| stages::prune_key(&id.group, &id.kind));
    let mut out = Pruned::default();
    for id in stale {
        if ctx.cancel.is_cancelled() {
            break;
        }
        let fail = |problem| ObjectFailure {
            id: id.clone(),
            problem,
        };
        let live = match get(conn, resolver, id).await {
            Ok(Some(live)) => live,
            Ok(None) => continue, // already gone
            Err(crate::apply::ApplyError::Objects { mut failures }) if failures.len() == 1 => {
                out.failed.push(failures.remove(0));
                continue;
            }
            Err(other) => {
                out.failed
                    .push(fail(crate::apply::ObjectProblem::Unreachable(
                        other.to_string(),
                    )));
                continue;
            }
        };
        if labels::prune_disabled(&live) {
            tracing::info!(object = %id, kustomization = %owner, "not pruned: annotated prune: disabled");
            continue;
        }
        if !owner.owns(&live) {
            tracing::info!(object = %id, kustomization = %owner, "not pruned: its labels name another owner");
            continue;
        }
        let Ok(Some(resolved)) = resolver
            .resolve(conn, &id.group, &id.version, &id.kind)
            .await
        else {
            continue;
        };
        match api(conn, &resolved, &id.namespace)
            .delete(&id.name, &DeleteParams::background())
            .await
        {
            Ok(_) => out.pruned.push(ObjectResult {
                id: id.clone(),
                action: ObjectAction::Pruned,
            }),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => out.failed.push(fail(super::problem(e, "delete"))),
        }
    }
    out
}
