//! The validated configuration that the rest of gitopsd consumes.
//!
//! `schema.rs` mirrors the YAML as written (strings, options); `validate.rs` turns it into these
//! types, so that nothing downstream ever parses a duration or picks a ref precedence again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Azure's default for interval, timeout and retryInterval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

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

/// How to reach the cluster: a kubeconfig file and, optionally, one of its contexts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// Absolute. Read again whenever a connection is made (see `crate::cluster`).
    pub kubeconfig: PathBuf,
    /// `None`: the kubeconfig's `current-context`.
    pub context: Option<String>,
}

/// A Kubernetes Secret that a source's `localAuthRef` names: always in the configuration's
/// namespace, read through the top-level `kubernetes` connection at every sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub kubernetes: KubernetesSettings,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for SecretRef {
    /// `namespace/name`, as kubectl names objects.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitImplementation {
    Auto,
    Gix,
    Git2,
}

/// The git ref to follow, after Flux's precedence (commit > name > tag > semver > branch)
/// has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitReference {
    /// No ref given: the branch the remote's HEAD points at.
    RemoteHead,
    Branch(String),
    Tag(String),
    /// A Masterminds range, already checked to parse.
    Semver(String),
    /// A full ref name such as `refs/pull/1/head`.
    Name(String),
    Commit {
        sha: String,
        branch: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub kind: SourceKind,
    pub url: String,
    pub reference: GitReference,
    pub interval: Duration,
    pub timeout: Duration,
    /// Upper bound of the exponential backoff after failures.
    pub retry_interval: Duration,
    pub git_implementation: GitImplementation,
    /// Extra gitignore-style patterns (Flux's `spec.ignore`).
    pub ignore: Option<String>,
    pub suspend: bool,
    pub publish: Option<Publish>,
    /// Set when `kind` is [`SourceKind::AzureBlob`].
    pub azure_blob: Option<AzureBlobSettings>,
    /// Set when `kind` is [`SourceKind::Bucket`].
    pub bucket: Option<BucketSettings>,
    /// Credentials of a `git` source (empty for other kinds): see `source::git::auth`.
    pub git_auth: crate::source::git::auth::GitAuthSettings,
}

pub use crate::artifact::publish::Publish;

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
}

#[derive(Debug, Clone)]
pub enum Target {
    /// Write the rendered multi-document YAML to `<directory>/<kustomization name>.yaml`.
    Directory(PathBuf),
    /// Render only; the output is kept under the state dir (`<stateDir>/rendered/...`).
    None,
}

/// An `azblob` source: `url` is the account endpoint (`https://<account>.blob.core.windows.net`,
/// or `http://127.0.0.1:10000/devstoreaccount1` for Azurite).
#[derive(Debug, Clone)]
pub struct AzureBlobSettings {
    pub container: String,
    /// Only objects under this key prefix are fetched (keys keep the prefix, as in Flux).
    pub prefix: Option<String>,
    pub auth: AzureAuth,
    /// Token endpoint base (`https://login.microsoftonline.com` unless set), for sovereign
    /// clouds; `localAuthRef`'s `authorityHost` key overrides it.
    pub authority_host: Option<String>,
    /// Managed-identity token endpoint; unset: `IDENTITY_ENDPOINT`/`MSI_ENDPOINT` from the
    /// environment, else the instance metadata service.
    pub msi_endpoint: Option<String>,
    /// Extra PEM CA certificates trusted for the endpoint and the token endpoints.
    pub ca_file: Option<PathBuf>,
}

/// How an `azblob` source signs in; exactly one is configured.
#[derive(Debug, Clone)]
pub enum AzureAuth {
    /// No credential: a container with public read access.
    Anonymous,
    AccountKey(SecretValue),
    SasToken(SecretValue),
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: SecretValue,
    },
    ClientCertificate {
        tenant_id: String,
        client_id: String,
        /// PEM or PKCS#12: inline base64-encoded (as the az CLI takes it), a file raw.
        certificate: SecretValue,
        password: Option<SecretValue>,
        send_chain: bool,
    },
    ManagedIdentity {
        client_id: Option<String>,
    },
    /// A directory of Flux's secret keys (`accountKey`, `sasKey`, `tenantId`, `clientId`,
    /// `clientSecret`, `clientCertificate`, ...), read again at every sync.
    LocalAuthRef(PathBuf),
    /// The same keys in a Kubernetes Secret, read through the API at every sync.
    LocalAuthSecret(SecretRef),
}

/// A secret value from the config. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A `bucket` source (S3-compatible): `url` is the endpoint, `http(s)://host[:port]`.
#[derive(Debug, Clone)]
pub struct BucketSettings {
    pub bucket_name: String,
    /// Only keys starting with this string are fetched; they keep it (as in Flux).
    pub prefix: Option<String>,
    /// `us-east-1` unless set.
    pub region: String,
    /// Plain http allowed (Flux's `insecure`).
    pub insecure: bool,
    pub credentials: BucketCredentials,
    /// Extra PEM CA certificates trusted for an https endpoint.
    pub ca_file: Option<PathBuf>,
}

/// How a `bucket` source signs its requests.
#[derive(Debug, Clone)]
pub enum BucketCredentials {
    /// Unsigned requests: a bucket with public read access.
    Anonymous,
    Keys {
        access_key: SecretValue,
        secret_key: SecretValue,
    },
    /// A directory holding Flux's `accesskey` and `secretkey` files.
    LocalAuthRef(PathBuf),
    /// The same keys in a Kubernetes Secret, read through the API at every sync.
    LocalAuthSecret(SecretRef),
}

/// A secret given inline or as a file read again at every sync.
#[derive(Debug, Clone)]
pub enum SecretValue {
    Inline(Secret),
    File(PathBuf),
}
