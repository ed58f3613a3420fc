//! Targets: where rendered objects go.
//!
//! A target is built per kustomization by [`build`] from its settings (where to write; for a
//! cluster: the client, the field manager, the inventory's home), so [`Target::apply`] needs
//! only what changes between runs: the new render, the inventory of the last apply, and an
//! [`ApplyContext`] (deadline, cancellation, prune / force / wait). The trait is shaped for a
//! server-side-apply target: apply returns what happened to each object, `prune` deletes what
//! left the source given the stale part of the inventory, `wait` blocks until the applied
//! objects are healthy; the directory target needs neither and keeps the no-op defaults.
//!
//! The trait is async (a cluster target talks HTTP); [`AnyTarget`] dispatches over the
//! implementations without boxing futures. Blocking work inside a target (the directory
//! target's fsync) goes to `spawn_blocking`.

pub mod directory;
pub mod kubernetes;
pub mod target;

pub use directory::DirectoryTarget;
pub use kubernetes::{ClusterSettings, ClusterState, KubernetesTarget};
pub use target::{build, AnyTarget, TargetSettings};

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use crate::render::{ObjectId, Rendered};

/// The set of objects a kustomization applied last time.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Inventory {
    pub entries: BTreeSet<ObjectId>,
}

impl Inventory {
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a ObjectId>) -> Inventory {
        Inventory {
            entries: objects.into_iter().cloned().collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries of `self` whose object is absent from `newer`: what a prune would delete.
    ///
    /// Objects are matched as Flux matches inventory ids (`<namespace>_<name>_<group>_<kind>`),
    /// without the version, so moving an object to a new apiVersion does not prune it.
    pub fn stale(&self, newer: &Inventory) -> Vec<ObjectId> {
        self.entries
            .iter()
            .filter(|old| !newer.entries.iter().any(|new| new.same_object(old)))
            .cloned()
            .collect()
    }
}

/// How one apply runs.
#[derive(Debug, Clone)]
pub struct ApplyContext {
    /// The whole apply (and prune, and wait) must end within this.
    pub timeout: Duration,
    /// The kustomization's `timeout` as configured, for messages (`timeout` is what is left
    /// of it after the build).
    pub configured_timeout: Duration,
    /// Cancelled when gitopsd stops: a target stops at the next safe point.
    pub cancel: CancellationToken,
    /// Delete objects that left the source (`prune`).
    pub prune: bool,
    /// Recreate objects whose immutable fields changed (`force`).
    pub force: bool,
    /// Wait for the applied objects to become ready (`wait`).
    pub wait: bool,
}

impl ApplyContext {
    pub fn new(timeout: Duration, cancel: CancellationToken) -> ApplyContext {
        ApplyContext {
            timeout,
            configured_timeout: timeout,
            cancel,
            prune: false,
            force: false,
            wait: false,
        }
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ObjectAction {
    /// It did not exist before this apply.
    Created,
    /// It existed and was applied again (a cluster target: the server changed it).
    Configured,
    /// It existed and the apply left it as it was.
    Unchanged,
    /// It left the source and is gone from the target.
    Pruned,
    /// An annotation (`ssa: Ignore`, `ssa: IfNotPresent` on a live object) kept it as it is.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectResult {
    pub id: ObjectId,
    pub action: ObjectAction,
}

/// What one apply did, object by object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Every object of the render, then every pruned one, in that order.
    pub objects: Vec<ObjectResult>,
    /// The inventory to store for the next apply.
    pub inventory: Inventory,
    /// For a target that writes files: the file written (a detail, not the report's subject).
    pub output: Option<PathBuf>,
}

impl ApplyReport {
    /// Objects of the render that were applied (created, configured or unchanged).
    pub fn applied(&self) -> usize {
        self.objects
            .iter()
            .filter(|o| o.action != ObjectAction::Pruned)
            .count()
    }

    /// Objects removed from the target.
    pub fn pruned(&self) -> Vec<ObjectId> {
        self.objects
            .iter()
            .filter(|o| o.action == ObjectAction::Pruned)
            .map(|o| o.id.clone())
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid target: file name {name:?} must be a plain file name (no '/', not hidden)")]
    InvalidFileName { name: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("apply timed out after {}", humantime::format_duration(*after))]
    TimedOut { after: Duration },
    #[error("apply cancelled: gitopsd is stopping")]
    Cancelled,
    #[error("apply stopped unexpectedly: {0}")]
    Crashed(#[source] tokio::task::JoinError),
    /// No client for the cluster (kubeconfig, service account, connection).
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The API server could not be asked something that is not about one object.
    #[error("{what} at {server}: {cause}")]
    Request {
        what: String,
        server: String,
        cause: ObjectProblem,
    },
    /// Objects that failed to apply; the others of their stage were applied.
    #[error("{}", kubernetes::failures_sentence("failed to apply", failures))]
    Objects { failures: Vec<ObjectFailure> },
    /// Validation refused objects; nothing was applied.
    #[error(
        "{}",
        kubernetes::failures_sentence("validation failed, nothing applied", failures)
    )]
    Invalid { failures: Vec<ObjectFailure> },
    /// Deletes that failed; those objects stay in the inventory.
    #[error("{}", kubernetes::failures_sentence("prune failed", failures))]
    PruneFailed { failures: Vec<ObjectFailure> },
    /// Objects not healthy within the timeout: each one and why.
    #[error("health check failed after {}: {}", humantime::format_duration(*after), kubernetes::pending_sentence(pending))]
    NotReady {
        after: Duration,
        pending: Vec<(ObjectId, String)>,
    },
}

impl ApplyError {
    /// Whether the failure is the target's configuration (retrying cannot help until the
    /// configuration changes), rather than a transient one.
    pub fn is_configuration(&self) -> bool {
        matches!(self, ApplyError::InvalidFileName { .. })
    }
}

/// One object that could not be applied, validated or pruned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectFailure {
    pub id: ObjectId,
    pub problem: ObjectProblem,
}

impl std::fmt::Display for ObjectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.id, self.problem)
    }
}

/// What went wrong with one object, in words a kubectl user knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectProblem {
    /// RBAC said no; the API server's own sentence names user, verb, resource and namespace.
    #[error("{verb} forbidden: {reason}")]
    Forbidden { verb: &'static str, reason: String },
    /// An immutable field changed and the object may not be recreated (`force: false`).
    #[error("{message} (set `force: true` to recreate it)")]
    Immutable { message: String },
    #[error("kind {kind} of {api_version} is not served by the API server (is its CustomResourceDefinition installed?)")]
    UnknownKind { api_version: String, kind: String },
    #[error("namespaced object without a namespace: set metadata.namespace or the kustomization's targetNamespace")]
    NoNamespace,
    #[error("{0}")]
    OutOfScope(String),
    /// The API server refused it (validation, admission, conflict): its status and message.
    #[error("{message} (HTTP {code})")]
    Rejected { code: u16, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("the API server did not answer: {0}")]
    Unreachable(String),
}

/// Somewhere rendered objects can be applied.
///
/// On error nothing is recorded and the previous inventory stays current. Implementations
/// honour `ctx.timeout` and `ctx.cancel` themselves (a cluster target between stages).
pub trait Target: Send + Sync {
    /// Apply `rendered`, given the inventory recorded after the last successful apply.
    fn apply(
        &self,
        rendered: &Rendered,
        previous: &Inventory,
        ctx: &ApplyContext,
    ) -> impl Future<Output = Result<ApplyReport, ApplyError>> + Send;

    /// Delete `stale` (what [`Inventory::stale`] found), when `ctx.prune` allows; returns
    /// one `Pruned` result per object removed. The default removes nothing.
    fn prune(
        &self,
        stale: &[ObjectId],
        ctx: &ApplyContext,
    ) -> impl Future<Output = Result<Vec<ObjectResult>, ApplyError>> + Send {
        let _ = (stale, ctx);
        async { Ok(Vec::new()) }
    }

    /// Wait until the applied objects are ready, when `ctx.wait` asks for it. The default
    /// returns at once.
    fn wait(
        &self,
        report: &ApplyReport,
        ctx: &ApplyContext,
    ) -> impl Future<Output = Result<(), ApplyError>> + Send {
        let _ = (report, ctx);
        async { Ok(()) }
    }

    /// Where the objects go, for the status (`target`): a path, a cluster's name.
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_is_old_minus_new_ignoring_version() {
        let a = ObjectId::new("v1", "ConfigMap", "ns", "a");
        let b = ObjectId::new("apps/v1", "Deployment", "ns", "b");
        let hpa_v1 = ObjectId::new("autoscaling/v1", "HorizontalPodAutoscaler", "ns", "h");
        let hpa_v2 = ObjectId::new("autoscaling/v2", "HorizontalPodAutoscaler", "ns", "h");
        let old = Inventory::from_objects([&a, &b, &hpa_v1]);
        let new = Inventory::from_objects([&b, &hpa_v2]);
        assert_eq!(old.stale(&new), vec![a]);
        assert!(new.stale(&new).is_empty());
        assert_eq!(Inventory::default().stale(&new), vec![]);
    }

    #[test]
    fn inventory_round_trips_through_json() {
        let inv = Inventory::from_objects([&ObjectId::new("v1", "Namespace", "", "web")]);
        let json = serde_json::to_string(&inv).unwrap();
        assert_eq!(serde_json::from_str::<Inventory>(&json).unwrap(), inv);
    }
}
