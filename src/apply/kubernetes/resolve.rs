//! Which resource serves a kind, and whether it is namespaced: discovery, asked once per
//! group version and kind and remembered for the daemon's lifetime (per API server).
//!
//! A kind the server does not serve is not remembered, so a CRD applied in the first stage
//! makes its kind resolvable in the next one, and a CRD removed from the cluster is noticed
//! when its objects' requests start failing with 404 ([`Resolver::forget`]).

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{ApiResource, GroupVersionKind};
use kube::discovery::Scope;

use super::super::{ApplyError, ObjectProblem};
use crate::cluster::Connection;

#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub resource: ApiResource,
    pub namespaced: bool,
}

type Key = (String, String, String, String);

#[derive(Debug, Default)]
pub(crate) struct Resolver {
    known: Mutex<HashMap<Key, Resolved>>,
}

impl Resolver {
    /// The resource of `group`/`version`/`kind` on `conn`'s server; `None` when the server
    /// does not serve that kind.
    pub async fn resolve(
        &self,
        conn: &Connection,
        group: &str,
        version: &str,
        kind: &str,
    ) -> Result<Option<Resolved>, ApplyError> {
        let key = (
            conn.server.clone(),
            group.to_string(),
            version.to_string(),
            kind.to_string(),
        );
        if let Some(found) = self.lock().get(&key) {
            return Ok(Some(found.clone()));
        }
        let gvk = GroupVersionKind::gvk(group, version, kind);
        match kube::discovery::pinned_kind(&conn.client, &gvk).await {
            Ok((resource, caps)) => {
                let resolved = Resolved {
                    resource,
                    namespaced: caps.scope == Scope::Namespaced,
                };
                self.lock().insert(key, resolved.clone());
                Ok(Some(resolved))
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(other) => Err(ApplyError::Request {
                what: format!("discovery of {kind} in {}", api_version(group, version)),
                server: conn.server.clone(),
                cause: super::problem(other, "discover"),
            }),
        }
    }

    /// Forget what is known of a kind (its CRD may have gone).
    pub fn forget(&self, conn: &Connection, group: &str, version: &str, kind: &str) {
        self.lock().remove(&(
            conn.server.clone(),
            group.to_string(),
            version.to_string(),
            kind.to_string(),
        ));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Resolved>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The problem for an object whose kind the server does not serve.
pub(crate) fn unknown(group: &str, version: &str, kind: &str) -> ObjectProblem {
    ObjectProblem::UnknownKind {
        api_version: api_version(group, version),
        kind: kind.to_string(),
    }
}
