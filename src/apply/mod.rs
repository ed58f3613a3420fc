//! Targets: where rendered objects go.
//!
//! A target is built per kustomization and carries that kustomization's settings (where to
//! write, the name to label objects with, prune/force/wait for a cluster), so `apply` needs
//! only what changes between runs: the new render and the inventory of the last apply. A
//! cluster target built from a shared client fits the same trait.

pub mod directory;
pub mod kubernetes;

pub use directory::DirectoryTarget;

use std::collections::BTreeSet;
use std::path::PathBuf;

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

/// What one apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Objects written or applied.
    pub applied: usize,
    /// Objects of the previous inventory that are gone now (deleted, or no longer written).
    pub pruned: Vec<ObjectId>,
    /// The inventory to store for the next apply.
    pub inventory: Inventory,
    /// The file written, for targets that write one.
    pub output: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Somewhere rendered objects can be applied. Implementations block; the reconciler runs them
/// on `spawn_blocking`.
pub trait Target: Send + Sync {
    /// Apply `rendered`, given the inventory recorded after the last successful apply, and
    /// return the new inventory. On error nothing is recorded and `previous` stays current.
    fn apply(&self, rendered: &Rendered, previous: &Inventory) -> Result<ApplyReport, ApplyError>;
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
