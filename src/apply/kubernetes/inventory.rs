//! The inventory in the cluster: one ConfigMap per kustomization, in its configuration's
//! namespace, named `gitopsd-inventory.<configuration>.<kustomization>` (the dots cannot occur
//! in either name, so two kustomizations never share one).
//!
//! It lists every object the kustomization applied, as Flux's inventory does
//! (`<namespace>_<name>_<group>_<kind>` and the version), so prune works after the state dir
//! is wiped or the node replaced, and records whether the kustomization prunes, so that one
//! removed from the config is cleaned up only when it asked for that. The ConfigMap carries
//! the kustomization's labels and `gitopsd.io/inventory: "true"`, so all of them can be
//! listed at start.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::labels::{Owner, CONFIGURATION_LABEL, KUSTOMIZATION_LABEL, NAMESPACE_LABEL};
use super::FIELD_MANAGER;
use crate::apply::{ApplyError, Inventory};
use crate::cluster::Connection;
use crate::render::ObjectId;

const INVENTORY_LABEL: &str = "gitopsd.io/inventory";
const PRUNE_ANNOTATION: &str = "gitopsd.io/prune";
const KEY: &str = "inventory";

pub(crate) fn name(owner: &Owner) -> String {
    format!(
        "gitopsd-inventory.{}.{}",
        owner.configuration, owner.kustomization
    )
}

fn request_error(owner: &Owner, conn: &Connection, verb: &str, e: kube::Error) -> ApplyError {
    ApplyError::Request {
        what: format!(
            "{verb} of inventory ConfigMap {}/{}",
            owner.namespace,
            name(owner)
        ),
        server: conn.server.clone(),
        cause: super::problem(e, "inventory"),
    }
}

/// The recorded inventory, empty when there is none.
pub(crate) async fn read(conn: &Connection, owner: &Owner) -> Result<Inventory, ApplyError> {
    let api: Api<ConfigMap> = Api::namespaced(conn.client.clone(), &owner.namespace);
    match api.get_opt(&name(owner)).await {
        Ok(Some(cm)) => Ok(decode(
            cm.data
                .as_ref()
                .and_then(|d| d.get(KEY))
                .map_or("", String::as_str),
        )),
        Ok(None) => Ok(Inventory::default()),
        Err(e) => Err(request_error(owner, conn, "read", e)),
    }
}

/// Records `inventory` (and whether the kustomization prunes), creating the configuration's
/// namespace when it does not exist yet.
pub(crate) async fn write(
    conn: &Connection,
    owner: &Owner,
    inventory: &Inventory,
    prune: bool,
) -> Result<(), ApplyError> {
    let mut labels = serde_json::Map::new();
    for (k, v) in owner.labels() {
        labels.insert(k.to_string(), json!(v));
    }
    labels.insert(INVENTORY_LABEL.to_string(), json!("true"));
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name(owner),
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": { PRUNE_ANNOTATION: prune.to_string() },
        },
        "data": { KEY: encode(inventory) },
    });
    let api: Api<ConfigMap> = Api::namespaced(conn.client.clone(), &owner.namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch(&name(owner), &params, &Patch::Apply(&cm)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            ensure_namespace(conn, owner).await?;
            api.patch(&name(owner), &params, &Patch::Apply(&cm))
                .await
                .map(drop)
                .map_err(|e| request_error(owner, conn, "write", e))
        }
        Err(e) => Err(request_error(owner, conn, "write", e)),
    }
}

async fn ensure_namespace(conn: &Connection, owner: &Owner) -> Result<(), ApplyError> {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(conn.client.clone());
    let ns =
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": owner.namespace}});
    api.patch(
        &owner.namespace,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Apply(&ns),
    )
    .await
    .map(drop)
    .map_err(|e| ApplyError::Request {
        what: format!("creation of namespace {}", owner.namespace),
        server: conn.server.clone(),
        cause: super::problem(e, "create"),
    })
}

/// Removes the inventory of a kustomization that is gone.
pub(crate) async fn delete(conn: &Connection, owner: &Owner) -> Result<(), ApplyError> {
    let api: Api<ConfigMap> = Api::namespaced(conn.client.clone(), &owner.namespace);
    match api.delete(&name(owner), &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(request_error(owner, conn, "delete", e)),
    }
}

/// Every inventory in the cluster: its kustomization, its objects, whether it prunes.
pub(crate) async fn list(conn: &Connection) -> Result<Vec<(Owner, Inventory, bool)>, ApplyError> {
    let api: Api<ConfigMap> = Api::all(conn.client.clone());
    let found = api
        .list(&ListParams::default().labels(&format!("{INVENTORY_LABEL}=true")))
        .await
        .map_err(|e| ApplyError::Request {
            what: "listing of the inventory ConfigMaps".into(),
            server: conn.server.clone(),
            cause: super::problem(e, "list"),
        })?;
    Ok(found
        .items
        .into_iter()
        .filter_map(|cm| {
            let labels = cm.metadata.labels.clone().unwrap_or_default();
            let owner = Owner {
                namespace: labels.get(NAMESPACE_LABEL)?.clone(),
                configuration: labels.get(CONFIGURATION_LABEL)?.clone(),
                kustomization: labels.get(KUSTOMIZATION_LABEL)?.clone(),
            };
            let prune = cm
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PRUNE_ANNOTATION))
                .is_some_and(|v| v == "true");
            let inventory = decode(
                cm.data
                    .as_ref()
                    .and_then(|d| d.get(KEY))
                    .map_or("", String::as_str),
            );
            Some((owner, inventory, prune))
        })
        .collect())
}

/// One entry per line: Flux's id and the version, `<ns>_<name>_<group>_<kind> <version>`.
fn encode(inventory: &Inventory) -> String {
    let mut out = String::new();
    for id in &inventory.entries {
        out.push_str(&id.inventory_id());
        out.push(' ');
        out.push_str(&id.version);
        out.push('\n');
    }
    out
}

/// Lines that do not parse are skipped: none of the four parts may hold `_` (Kubernetes
/// names, groups and kinds cannot), so a well-formed id always splits in four.
fn decode(text: &str) -> Inventory {
    let mut entries = BTreeSet::new();
    for line in text.lines() {
        let Some((id, version)) = line.split_once(' ') else {
            continue;
        };
        let parts: Vec<&str> = id.split('_').collect();
        if let [namespace, name, group, kind] = parts[..] {
            entries.insert(ObjectId {
                namespace: namespace.into(),
                name: name.into(),
                group: group.into(),
                kind: kind.into(),
                version: version.into(),
            });
        }
    }
    Inventory { entries }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_configmap_text() {
        let inventory = Inventory::from_objects(&[
            ObjectId::new("apps/v1", "Deployment", "web", "api"),
            ObjectId::new("v1", "Namespace", "", "web"),
            ObjectId::new(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "",
                "a.b.io",
            ),
        ]);
        let text = encode(&inventory);
        assert!(text.contains("web_api_apps_Deployment v1\n"), "{text}");
        assert!(text.contains("_web__Namespace v1\n"), "{text}");
        assert_eq!(decode(&text), inventory);
        assert_eq!(decode("garbage\nx_y v1\n"), Inventory::default());
    }
}
