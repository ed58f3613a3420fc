//! Shared vocabulary: the plain values that several layers pass between them.
//!
//! This module is the bottom of the crate and imports nothing from it, so that any layer may
//! name a [`Revision`] or a [`SecretValue`] without depending on the layer that produces it.
//! Only data lives here, no behaviour beyond formatting: what a revision *means* is decided
//! by the source that fetched it, what a secret holds by whoever reads it.

use std::fmt;
use std::path::PathBuf;

/// What was fetched, in Flux's string form: `main@sha1:<hex>`, `v1.2.3@sha1:<hex>`,
/// `refs/pull/1/head@sha1:<hex>`, `sha1:<hex>`, or `sha256:<hex>` for buckets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Revision(pub String);

impl Revision {
    /// `<name>@sha1:<hex>`, or `sha1:<hex>` when there is no name.
    pub fn git(name: Option<&str>, commit: &str) -> Self {
        match name {
            Some(n) => Revision(format!("{n}@sha1:{commit}")),
            None => Revision(format!("sha1:{commit}")),
        }
    }

    /// The digest part after the last `:` (a commit sha for git, a hex digest for buckets).
    pub fn digest_hex(&self) -> &str {
        self.0.rsplit(':').next().unwrap_or(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kinds of source, as the artifact store, the status API and the metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Git,
    /// Azure Blob Storage (Flux's Bucket with `provider: azure`).
    AzureBlob,
    /// An S3-compatible bucket (Flux's Bucket with the `generic` provider).
    Bucket,
}

impl SourceKind {
    /// The directory name under `<stateDir>/artifacts/`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Git => "git",
            SourceKind::AzureBlob => "azblob",
            SourceKind::Bucket => "bucket",
        }
    }
}

/// A secret value from the config. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A secret given inline or as a file read again at every sync.
#[derive(Debug, Clone)]
pub enum SecretValue {
    Inline(Secret),
    File(PathBuf),
}

/// How to reach the cluster: where the credentials come from and, for a kubeconfig, which of
/// its contexts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubernetesSettings {
    pub connection: KubeConnection,
    /// `None`: the kubeconfig's `current-context`.
    pub context: Option<String>,
}

/// Where the cluster's address and credentials come from. Read again whenever a connection
/// is made (by the `cluster` module), so rotated credentials need no restart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KubeConnection {
    /// This kubeconfig file (absolute).
    Kubeconfig(PathBuf),
    /// The pod's service account: its token and CA under
    /// `/var/run/secrets/kubernetes.io/serviceaccount`, the server from
    /// `KUBERNETES_SERVICE_HOST`/`_PORT`.
    InCluster,
    /// As kubectl finds one: `KUBECONFIG`, else `~/.kube/config`, else the pod's service
    /// account.
    Detect,
}

/// A Kubernetes Secret that a source's `localAuthRef` names: always in the configuration's
/// namespace, read through the top-level `kubernetes` connection at every sync.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretRef {
    pub kubernetes: KubernetesSettings,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SecretRef {
    /// `namespace/name`, as kubectl names objects.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
