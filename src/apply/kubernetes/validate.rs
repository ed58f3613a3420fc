//! `validation: client | server` (Azure's field): every object is checked before any is
//! applied, so a failure applies nothing.
//!
//! Client validation checks what can be known without writing: each object has an
//! apiVersion, a kind and a name that Kubernetes accepts, its kind is served (or defined by
//! a CRD of the same kustomization) and a namespaced kind has a namespace; the last two were
//! settled when the objects were prepared, which fails with every such object named. Server
//! validation sends each object as a server-side dry-run apply: schema, admission and
//! immutable fields are checked by the API server itself. Custom resources whose CRD is in
//! the same kustomization cannot be dry-run before the CRD exists and are checked by client
//! rules only (Flux does the same).

use futures_util::stream::{self, StreamExt as _};
use kube::api::{Patch, PatchParams};

use super::object::{api, Desired};
use super::resolve::Resolved;
use super::{CONCURRENCY, FIELD_MANAGER};
use crate::apply::{ApplyError, ObjectFailure, ObjectProblem};
use crate::cluster::Connection;

pub(crate) fn client(objects: &[Desired]) -> Result<(), ApplyError> {
    let failures: Vec<ObjectFailure> = objects
        .iter()
        .filter_map(|o| {
            client_problem(o).map(|why| ObjectFailure {
                id: o.id.clone(),
                problem: ObjectProblem::Invalid(why),
            })
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::Invalid { failures })
    }
}

fn client_problem(o: &Desired) -> Option<String> {
    if o.id.version.is_empty() {
        return Some("no apiVersion".into());
    }
    // What every kind requires of a name (it is a URL path segment); most kinds also want a
    // DNS subdomain, but some do not (RBAC's `system:` names), so that is the server's call.
    let name = &o.id.name;
    if name == "." || name == ".." || name.contains(['/', '%']) {
        return Some(format!(
            "metadata.name {name:?} cannot be used as a name (no '/', '%', '.' or '..')"
        ));
    }
    if !o.id.namespace.is_empty() && !crate::syntax::values::is_dns1123_label(&o.id.namespace) {
        return Some(format!(
            "metadata.namespace {:?} is not a valid namespace name",
            o.id.namespace
        ));
    }
    None
}

pub(crate) async fn server(conn: &Connection, objects: &[Desired]) -> Result<(), ApplyError> {
    client(objects)?;
    let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
    // Futures made in a loop rather than in a stream closure, for the `Send` check (see ssa).
    let mut requests = Vec::with_capacity(objects.len());
    for o in objects {
        if let Some(resolved) = &o.resolved {
            requests.push(dry_run(conn, resolved, o, &params));
        }
    }
    let outcomes: Vec<Option<ObjectFailure>> =
        stream::iter(requests).buffered(CONCURRENCY).collect().await;
    let failures: Vec<ObjectFailure> = outcomes.into_iter().flatten().collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::Invalid { failures })
    }
}

async fn dry_run(
    conn: &Connection,
    resolved: &Resolved,
    o: &Desired,
    params: &PatchParams,
) -> Option<ObjectFailure> {
    api(conn, resolved, &o.id.namespace)
        .patch(&o.id.name, params, &Patch::Apply(&o.value))
        .await
        .err()
        .map(|e| ObjectFailure {
            id: o.id.clone(),
            problem: super::problem(e, "patch"),
        })
}
