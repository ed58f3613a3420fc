//! The Kubernetes target: server-side apply of a kustomization's objects in stages, an
//! inventory kept in the cluster, prune, and health waits, as Flux's kustomize-controller
//! does them (the differences are said where they are made).
//!
//! One apply, in order:
//!
//! 1. the objects get their namespace (`scope: namespace` confines them) and the ownership
//!    labels ([`labels`]); client or server validation runs when asked, before anything is
//!    written;
//! 2. the inventory ConfigMap in the cluster is set to the union of the previous inventory
//!    and the new objects, so a crash from here on never loses track of an object created;
//! 3. the stages ([`stages`]) are applied one after the other, the objects of a stage
//!    concurrently (bounded); after the first stage the CRDs must be Established;
//! 4. without prune the inventory becomes the new objects; with prune, [`Target::prune`]
//!    deletes what left and then records it.
//!
//! An object is only sent when it can have changed: the target remembers, per object, a
//! digest of what it applied and the `resourceVersion` the server answered, and one metadata
//! LIST per kind and namespace tells the live `resourceVersion`s. Same digest and same
//! version: nothing was edited since, so nothing is sent (Flux sends a dry-run per object to
//! find that out). Anything else is applied, which reverts a hand edit (drift). The server
//! itself writes nothing for an apply that changes nothing, so `resourceVersion` before and
//! after the apply tell created, configured and unchanged apart.

pub mod health;
mod inventory;
mod labels;
mod object;
mod prune;
mod resolve;
mod ssa;
pub mod stages;
mod validate;
mod wait;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

pub use labels::Owner;

use super::{ApplyContext, ApplyError, ApplyReport, Inventory, ObjectResult, Target};
use crate::cluster::{Clusters, Connection};
use crate::render::{ObjectId, Rendered};
use crate::vocab::KubernetesSettings;

/// The field manager of every apply, as kubectl shows it in `managedFields`.
pub const FIELD_MANAGER: &str = "gitopsd";

/// How many objects of a stage are in flight at once: enough to hide the round trips, few
/// enough that a thousand-object kustomization does not swamp a small API server.
const CONCURRENCY: usize = 16;

/// Azure's `validation` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validation {
    /// Send the objects as they are.
    #[default]
    None,
    /// Check each object locally (identity, namespace, known kind) before any is applied.
    Client,
    /// A server-side dry-run of every object before any is applied.
    Server,
}

/// An object `healthChecks` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
}

/// A kustomization's cluster target, as the config states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub cluster: KubernetesSettings,
    /// `serviceAccountName`: apply, prune and read as `system:serviceaccount:<ns>:<name>`.
    pub service_account: Option<String>,
    /// `scope: namespace`: namespaced objects only, all in the configuration's namespace.
    pub namespaced_scope: bool,
    pub validation: Validation,
    pub health_checks: Vec<HealthCheck>,
}

impl ClusterSettings {
    /// The user a kustomization of a configuration in `namespace` acts as: its
    /// `serviceAccountName` as Kubernetes names the account, else `None` (gitopsd's own).
    pub fn user(&self, namespace: &str) -> Option<String> {
        self.service_account
            .as_ref()
            .map(|sa| format!("system:serviceaccount:{namespace}:{sa}"))
    }
}

/// What the target remembers between applies, for every kustomization: the engine keeps one
/// for the daemon's lifetime and hands it to every target it builds.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub clusters: Clusters,
    resolver: resolve::Resolver,
    /// (kustomization, object) → what was applied and the version the server answered.
    applied: Mutex<HashMap<(Owner, ObjectId), Applied>>,
}

/// What one object was last applied as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    digest: u64,
    resource_version: String,
}

impl ClusterState {
    fn remembered(&self, owner: &Owner, id: &ObjectId) -> Option<Applied> {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        applied.get(&(owner.clone(), id.clone())).cloned()
    }

    fn remember(&self, owner: &Owner, id: &ObjectId, applied: Option<Applied>) {
        let mut map = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let key = (owner.clone(), id.clone());
        match applied {
            Some(a) => map.insert(key, a),
            None => map.remove(&key),
        };
    }
}

/// The cluster target of one kustomization, built for one reconcile.
#[derive(Debug, Clone)]
pub struct KubernetesTarget {
    settings: ClusterSettings,
    owner: Owner,
    state: Arc<ClusterState>,
    /// Set by `apply` for `prune`: the new objects and the union recorded before the apply.
    last: Arc<Mutex<Option<(Inventory, Inventory)>>>,
}

impl PartialEq for KubernetesTarget {
    fn eq(&self, other: &Self) -> bool {
        self.settings == other.settings && self.owner == other.owner
    }
}

impl Eq for KubernetesTarget {}

impl KubernetesTarget {
    pub fn new(settings: ClusterSettings, owner: Owner, state: Arc<ClusterState>) -> Self {
        KubernetesTarget {
            settings,
            owner,
            state,
            last: Arc::default(),
        }
    }

    /// The user applies act as: the service account, else the credentials' own.
    fn user(&self) -> Option<String> {
        self.settings.user(&self.owner.namespace)
    }

    /// The connection objects are applied, pruned and read through.
    async fn acting(&self) -> Result<Connection, ApplyError> {
        let user = self.user();
        Ok(self
            .state
            .clusters
            .get(&self.settings.cluster, user.as_deref())
            .await?)
    }

    /// gitopsd's own connection, for the inventory: a tenant's service account is not
    /// expected to manage gitopsd's bookkeeping (Flux keeps it in the Kustomization's status,
    /// written by the controller's own account).
    async fn own(&self) -> Result<Connection, ApplyError> {
        Ok(self
            .state
            .clusters
            .get(&self.settings.cluster, None)
            .await?)
    }

    /// The inventory the cluster holds for this kustomization (empty when none).
    pub async fn cluster_inventory(&self) -> Result<Inventory, ApplyError> {
        let own = self.own().await?;
        inventory::read(&own, &self.owner).await
    }

    /// The live objects of `inventory`, each with its health (for `gitopsd objects`).
    pub async fn describe_objects(
        &self,
        inventory: &Inventory,
    ) -> Result<Vec<(ObjectId, Option<health::Health>)>, ApplyError> {
        let conn = self.acting().await?;
        let mut out = Vec::with_capacity(inventory.len());
        for id in &inventory.entries {
            let live = object::get(&conn, &self.state.resolver, id).await?;
            out.push((id.clone(), live.as_ref().map(health::health)));
        }
        Ok(out)
    }

    /// What an apply of `rendered` would change, by server-side dry-run: each object whose
    /// result differs from the live one, with both (for `gitopsd diff`).
    pub async fn diff(&self, rendered: &Rendered) -> Result<Vec<ssa::Difference>, ApplyError> {
        let conn = self.acting().await?;
        let objects = self.prepare(&conn, rendered).await?;
        ssa::diff(&conn, &objects).await
    }

    /// The rendered objects with namespace and labels set, checked against the scope.
    async fn prepare(
        &self,
        conn: &Connection,
        rendered: &Rendered,
    ) -> Result<Vec<object::Desired>, ApplyError> {
        object::prepare(
            conn,
            &self.state.resolver,
            rendered,
            &self.owner,
            self.settings.namespaced_scope,
        )
        .await
    }
}

impl Target for KubernetesTarget {
    async fn apply(
        &self,
        rendered: &Rendered,
        previous: &Inventory,
        ctx: &ApplyContext,
    ) -> Result<ApplyReport, ApplyError> {
        let work = async {
            let conn = self.acting().await?;
            let own = self.own().await?;
            let objects = self.prepare(&conn, rendered).await?;
            match self.settings.validation {
                Validation::None => {}
                Validation::Client => validate::client(&objects)?,
                Validation::Server => validate::server(&conn, &objects).await?,
            }
            let new = Inventory::from_objects(objects.iter().map(|o| &o.id));
            // What the cluster recorded can be ahead of the state dir (a crash after the
            // union was written), or the state dir can be gone: keep both.
            let recorded = inventory::read(&own, &self.owner).await?;
            let mut union: BTreeSet<ObjectId> = previous.entries.clone();
            union.extend(recorded.entries);
            union.extend(new.entries.iter().cloned());
            let union = Inventory { entries: union };
            inventory::write(&own, &self.owner, &union, ctx.prune).await?;

            let results = ssa::apply_stages(&conn, &self.state, &self.owner, &objects, ctx).await?;
            if !ctx.prune {
                inventory::write(&own, &self.owner, &new, ctx.prune).await?;
            }
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((new.clone(), union));
            Ok(ApplyReport {
                objects: results,
                inventory: new,
                output: None,
            })
        };
        bounded(ctx, work).await
    }

    async fn prune(
        &self,
        stale: &[ObjectId],
        ctx: &ApplyContext,
    ) -> Result<Vec<ObjectResult>, ApplyError> {
        let work = async {
            let conn = self.acting().await?;
            let own = self.own().await?;
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
            let Some((new, union)) = last else {
                // Only reachable if a caller prunes without applying first: nothing is known
                // to be current, so nothing may be deleted.
                return Ok(Vec::new());
            };
            // `stale` is what the reconciler had; what the cluster recorded beyond the new
            // objects (a crashed apply's union) is stale too.
            let mut stale: BTreeSet<ObjectId> = stale.iter().cloned().collect();
            stale.extend(union.stale(&new));
            let outcome =
                prune::prune(&conn, &self.state.resolver, &self.owner, stale.iter(), ctx).await;
            // Objects that could not be deleted stay recorded, so the next apply retries.
            let mut keep: BTreeSet<ObjectId> = new.entries;
            keep.extend(outcome.failed.iter().map(|f| f.id.clone()));
            inventory::write(&own, &self.owner, &Inventory { entries: keep }, true).await?;
            for id in &outcome.pruned {
                self.state.remember(&self.owner, &id.id, None);
            }
            if outcome.failed.is_empty() {
                Ok(outcome.pruned)
            } else {
                Err(ApplyError::PruneFailed {
                    failures: outcome.failed,
                })
            }
        };
        bounded(ctx, work).await
    }

    async fn wait(&self, report: &ApplyReport, ctx: &ApplyContext) -> Result<(), ApplyError> {
        let mut ids: Vec<ObjectId> = Vec::new();
        if ctx.wait {
            ids.extend(
                report
                    .objects
                    .iter()
                    // Pruned ones are gone; skipped ones (`ssa: Ignore`, `IfNotPresent`) are
                    // not gitopsd's to wait for.
                    .filter(|o| {
                        !matches!(
                            o.action,
                            super::ObjectAction::Pruned | super::ObjectAction::Skipped
                        )
                    })
                    .map(|o| o.id.clone()),
            );
        }
        for check in &self.settings.health_checks {
            ids.push(ObjectId::new(
                &check.api_version,
                &check.kind,
                &check.namespace,
                &check.name,
            ));
        }
        if ids.is_empty() {
            return Ok(());
        }
        let work = async {
            let conn = self.acting().await?;
            wait::until_current(&conn, &self.state.resolver, &ids, ctx).await
        };
        bounded(ctx, work).await
    }

    fn describe(&self) -> String {
        match &self.settings.cluster.connection {
            crate::vocab::KubeConnection::Kubeconfig(path) => {
                match &self.settings.cluster.context {
                    Some(context) => format!("cluster {} (context {context})", path.display()),
                    None => format!("cluster {}", path.display()),
                }
            }
            crate::vocab::KubeConnection::InCluster => "cluster (in-cluster)".to_string(),
            crate::vocab::KubeConnection::Detect => "cluster (default kubeconfig)".to_string(),
        }
    }
}

/// `work`, cut short at the context's timeout or cancellation.
async fn bounded<T>(
    ctx: &ApplyContext,
    work: impl std::future::Future<Output = Result<T, ApplyError>>,
) -> Result<T, ApplyError> {
    tokio::select! {
        result = tokio::time::timeout(ctx.timeout, work) => match result {
            Ok(result) => result,
            Err(_) => Err(ApplyError::TimedOut {
                after: ctx.configured_timeout,
            }),
        },
        () = ctx.cancel.cancelled() => Err(ApplyError::Cancelled),
    }
}

/// `"<what>: 2 objects: A: why; B: why"`, or `"<what>: A: why"` for one.
pub(crate) fn failures_sentence(what: &str, failures: &[super::ObjectFailure]) -> String {
    let listed: Vec<String> = failures.iter().map(ToString::to_string).collect();
    match failures.len() {
        1 => format!("{what}: {}", listed[0]),
        n => format!("{what}: {n} objects: {}", listed.join("; ")),
    }
}

/// `Deployment/web/api: 0 of 2 replicas available; Job/web/migrate: ...`.
pub(crate) fn pending_sentence(pending: &[(ObjectId, String)]) -> String {
    pending
        .iter()
        .map(|(id, why)| format!("{id}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a failed request says about its object, from the API's status (typed) or the
/// transport's causes.
pub(crate) fn problem(error: kube::Error, verb: &'static str) -> super::ObjectProblem {
    use super::ObjectProblem;
    match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            match status.code {
                403 => ObjectProblem::Forbidden {
                    verb,
                    reason: message,
                },
                code if code == 422 && ssa::is_immutable(&message) => {
                    ObjectProblem::Immutable { message }
                }
                code => ObjectProblem::Rejected { code, message },
            }
        }
        other => ObjectProblem::Unreachable(crate::cluster::Transport::of(&other).to_string()),
    }
}

/// The data of the ConfigMap or Secret `name` in `namespace` (a Secret's values decoded),
/// read as `service_account` when given: `postBuild.substituteFrom`. `None` when it does not
/// exist. Values never appear in errors.
pub async fn read_values(
    state: &ClusterState,
    cluster: &KubernetesSettings,
    user: Option<&str>,
    namespace: &str,
    name: &str,
    secret: bool,
) -> Result<Option<std::collections::BTreeMap<String, String>>, ApplyError> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let conn = state.clusters.get(cluster, user).await?;
    let kind = if secret { "Secret" } else { "ConfigMap" };
    let fail = |e| ApplyError::Request {
        what: format!("reading {kind} {namespace}/{name} for postBuild.substituteFrom"),
        server: conn.server.clone(),
        cause: problem(e, "get"),
    };
    if secret {
        let api: kube::Api<Secret> = kube::Api::namespaced(conn.client.clone(), namespace);
        let Some(found) = api.get_opt(name).await.map_err(fail)? else {
            return Ok(None);
        };
        Ok(Some(
            found
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect(),
        ))
    } else {
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(conn.client.clone(), namespace);
        let Some(found) = api.get_opt(name).await.map_err(fail)? else {
            return Ok(None);
        };
        Ok(Some(found.data.unwrap_or_default().into_iter().collect()))
    }
}

/// Cleans up after kustomizations that left the config: for each inventory in the cluster
/// of a configuration in `ours` (`(namespace, name)`) whose kustomization is not in
/// `configured`, its objects are pruned when it had `prune: true` (Azure deletes the objects
/// of a removed configuration or kustomization), then the inventory goes. Returns what was
/// pruned, by former owner; an owner whose deletes failed keeps its inventory for the next
/// start.
pub async fn collect_garbage(
    state: &ClusterState,
    cluster: &KubernetesSettings,
    ours: &[(String, String)],
    configured: &[Owner],
    ctx: &ApplyContext,
) -> Result<Vec<(Owner, Vec<ObjectResult>)>, ApplyError> {
    let own = state.clusters.get(cluster, None).await?;
    let mut out = Vec::new();
    for (owner, recorded, prune) in inventory::list(&own).await? {
        let mine = ours
            .iter()
            .any(|(ns, name)| *ns == owner.namespace && *name == owner.configuration);
        if !mine || configured.contains(&owner) {
            continue;
        }
        if prune {
            let outcome =
                prune::prune(&own, &state.resolver, &owner, recorded.entries.iter(), ctx).await;
            if !outcome.failed.is_empty() {
                tracing::warn!(kustomization = %owner, error = %failures_sentence("prune of a removed kustomization failed", &outcome.failed), "kept its inventory to retry");
                continue;
            }
            out.push((owner.clone(), outcome.pruned));
        } else {
            tracing::info!(kustomization = %owner, objects = recorded.len(), "removed from the config without prune: its objects stay");
        }
        inventory::delete(&own, &owner).await?;
    }
    Ok(out)
}
