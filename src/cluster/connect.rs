//! Making clients: from a kubeconfig (a file, or the one kubectl would find) or the pod's
//! service account, acting as another user when asked, with timeouts on every request.
//!
//! [`Clusters`] keeps the clients the applier uses: one per cluster and identity, so that a
//! reconcile of a thousand objects (or a thousand kustomizations) shares one connection pool
//! and one TLS session. A cached client is made again when its kubeconfig file changes (k3s
//! renews its client certificates by rewriting the file); the pod's service account token is
//! re-read by the client itself.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::ClusterError;
use crate::vocab::{KubeConnection, KubernetesSettings};

/// How long to wait for a TCP connection (and TLS handshake) to the API server. The API
/// server answers a GET of one object in milliseconds; a sync should not hang on a dead one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the API server's answer once connected.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A client and the API server's URL (for messages).
#[derive(Clone)]
pub struct Connection {
    pub client: kube::Client,
    pub server: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Where a connection's credentials were read from, and the file's modification time when
/// they came from a file: a different stamp means the cached client is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stamp {
    File(PathBuf, Option<SystemTime>),
    ServiceAccount,
}

/// A cached client's key: the cluster and the impersonated user.
type Key = (KubernetesSettings, Option<String>);

/// The applier's clients, one per (cluster settings, impersonated user).
#[derive(Default)]
pub struct Clusters {
    cache: tokio::sync::Mutex<HashMap<Key, (Stamp, Connection)>>,
}

impl std::fmt::Debug for Clusters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clusters").finish_non_exhaustive()
    }
}

impl Clusters {
    /// The cached client for `settings` acting as `user` (`None`: the credentials' own
    /// identity), made again when its kubeconfig changed since.
    pub async fn get(
        &self,
        settings: &KubernetesSettings,
        user: Option<&str>,
    ) -> Result<Connection, ClusterError> {
        let stamp = stamp(settings).await?;
        let key = (settings.clone(), user.map(str::to_string));
        // Held across the connect: two kustomizations starting together make one client.
        let mut cache = self.cache.lock().await;
        if let Some((cached, connection)) = cache.get(&key) {
            if *cached == stamp {
                return Ok(connection.clone());
            }
        }
        let connection = connect(settings, user).await?;
        cache.insert(key, (stamp, connection.clone()));
        Ok(connection)
    }
}

/// Which file (or the service account) `settings` reads, and its modification time.
async fn stamp(settings: &KubernetesSettings) -> Result<Stamp, ClusterError> {
    let path = match locate(settings)? {
        Located::File(path) => path,
        Located::ServiceAccount => return Ok(Stamp::ServiceAccount),
    };
    let modified = tokio::fs::metadata(&path)
        .await
        .and_then(|m| m.modified())
        .ok();
    Ok(Stamp::File(path, modified))
}

enum Located {
    File(PathBuf),
    ServiceAccount,
}

/// The file kubectl would read, or the service account, for `settings`.
fn locate(settings: &KubernetesSettings) -> Result<Located, ClusterError> {
    match &settings.connection {
        KubeConnection::Kubeconfig(path) => Ok(Located::File(path.clone())),
        KubeConnection::InCluster => Ok(Located::ServiceAccount),
        KubeConnection::Detect => {
            // kubectl's order: $KUBECONFIG (its first file), ~/.kube/config, the pod's
            // service account. A list in $KUBECONFIG is merged by kubectl; the first file
            // holds the current context in every setup we know of, so that one is read.
            if let Some(first) = std::env::var_os("KUBECONFIG")
                .and_then(|list| std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty()))
            {
                return Ok(Located::File(first));
            }
            if let Some(home) = std::env::var_os("HOME") {
                let path = PathBuf::from(home).join(".kube").join("config");
                if path.is_file() {
                    return Ok(Located::File(path));
                }
            }
            if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
                return Ok(Located::ServiceAccount);
            }
            Err(ClusterError::Kubeconfig {
                from: "the default kubeconfig".into(),
                source: "no KUBECONFIG, no ~/.kube/config, and not in a pod \
                         (KUBERNETES_SERVICE_HOST is unset); set `kubernetes.kubeconfig`"
                    .into(),
            })
        }
    }
}

/// A new client for the cluster the settings name, acting as `user` when given. The caller
/// must be inside a tokio runtime: the client's connection pool runs on it.
pub async fn connect(
    settings: &KubernetesSettings,
    user: Option<&str>,
) -> Result<Connection, ClusterError> {
    let located = locate(settings)?;
    let from = match &located {
        Located::File(path) => format!("kubeconfig {}", path.display()),
        Located::ServiceAccount => "the pod's service account".to_string(),
    };
    let fail = |source: Box<dyn StdError + Send + Sync>| ClusterError::Kubeconfig {
        from: from.clone(),
        source,
    };
    let mut config = match located {
        Located::File(file) => {
            let read = tokio::task::spawn_blocking(move || Kubeconfig::read_from(file)).await;
            let kubeconfig = match read {
                Ok(read) => read.map_err(|e| fail(e.into()))?,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            };
            let options = KubeConfigOptions {
                context: settings.context.clone(),
                ..Default::default()
            };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| fail(e.into()))?
        }
        Located::ServiceAccount => {
            match tokio::task::spawn_blocking(kube::Config::incluster).await {
                Ok(made) => made.map_err(|e| fail(e.into()))?,
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            }
        }
    };
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    if let Some(user) = user {
        // The API server adds a service account's groups itself when the user name is
        // `system:serviceaccount:...` and no groups are sent, so RBAC bound to the groups
        // applies as it would to the account's own token.
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = None;
    }
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_string();
    let client = kube::Client::try_from(config).map_err(|e| fail(e.into()))?;
    Ok(Connection { client, server })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_kubeconfig_is_used_as_it_is() {
        let settings = KubernetesSettings {
            connection: KubeConnection::Kubeconfig("/etc/k3s.yaml".into()),
            context: None,
        };
        assert!(
            matches!(locate(&settings), Ok(Located::File(p)) if p == std::path::Path::new("/etc/k3s.yaml"))
        );
        let settings = KubernetesSettings {
            connection: KubeConnection::InCluster,
            context: None,
        };
        assert!(matches!(locate(&settings), Ok(Located::ServiceAccount)));
    }
}
