//! The validated configuration that the rest of gitopsd consumes.
//!
//! `schema.rs` mirrors the YAML as written (strings, options); `validate.rs` turns it into these
//! types, so that nothing downstream ever parses a duration or picks a ref precedence again.
//! A source kind's own settings are defined by the kind (`source::<kind>::config`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

// The types each section's owner defines, named here too so that consumers of the settings
// need not know who owns which section.
pub use super::events::{
    AlertSettings, EventSettings, EventSourceSelector, HookSettings, ProviderSettings,
    ProviderType, ReceiverSettings, ReceiverType, SecretSource, Severity,
};
pub use crate::source::azblob::config::{AzureAuth, AzureBlobSettings};
pub use crate::source::bucket::config::{BucketCredentials, BucketSettings};
pub use crate::source::git::config::{GitImplementation, GitReference, GitSettings};
pub use crate::source::{SourceSettings, SourceSpec};
pub use crate::syntax::values::DEFAULT_INTERVAL;
pub use crate::vocab::{
    KubeConnection, KubernetesSettings, Secret, SecretRef, SecretValue, SourceKind,
};

#[derive(Debug, Clone)]
pub struct Settings {
    /// Absolute; relative paths in the file are resolved against the config file's directory.
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// The rest of the `server` section: the API's token and limits.
    pub server: ServerSettings,
    /// How many sources may fetch at the same time.
    pub max_concurrent_fetches: usize,
    /// The cluster (top-level `kubernetes`); `None`: no cluster is configured.
    pub kubernetes: Option<KubernetesSettings>,
    /// The top-level `render` section: what configurations inherit.
    pub render: crate::render::RenderSettings,
    pub configurations: Vec<Configuration>,
    /// Webhook receivers, alert providers and alerts (`config::events`).
    pub events: EventSettings,
}

/// The HTTP API's protection (the `server` section besides `listen`).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// The bearer token every endpoint but `/healthz`, `/readyz` and `/metrics` requires;
    /// `None`: no authentication. A file is read again at every request, so a rotated token
    /// takes effect without a restart.
    pub token: Option<SecretValue>,
    /// Connections served at once; `None`: derived from the open-file limit at start.
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request's headers, and again its body.
    pub read_timeout: Duration,
}

/// Azure's unit: one source plus N kustomizations.
#[derive(Debug, Clone)]
pub struct Configuration {
    pub name: String,
    pub namespace: String,
    pub suspend: bool,
    /// How its kustomizations are built: its own `render` over the top-level one.
    pub render: crate::render::RenderSettings,
    pub source: SourceSettings,
    pub kustomizations: Vec<Kustomization>,
}

pub use crate::artifact::publish::{Publish, PublishMode};

#[derive(Debug, Clone)]
pub struct Kustomization {
    pub name: String,
    /// Relative to the artifact root, normalised, never escaping it (checked at load).
    pub path: String,
    pub prune: bool,
    pub depends_on: Vec<String>,
    pub interval: Duration,
    pub retry_interval: Duration,
    pub timeout: Duration,
    pub wait: bool,
    pub force: bool,
    pub suspend: bool,
    pub target: Target,
    /// `targetNamespace`: the namespace of every namespaced object (set through kustomize).
    pub target_namespace: Option<String>,
    /// `postBuild`: variables substituted into the render before it is applied.
    pub post_build: crate::render::substitute::PostBuild,
}

/// Where a kustomization's objects go: owned by the `apply` layer (as each source kind owns
/// its settings), named here because a kustomization holds one.
pub use crate::apply::TargetSettings as Target;
