//! Turns the raw schema into [`Settings`]: parses every value, applies defaults, resolves
//! paths, and checks what spans several fields (unique names, dependsOn references and cycles,
//! two writers of one file). Every problem is recorded at the value that causes it, and
//! checking goes on, so one run shows them all.
//!
//! One file per part of the file: this one the top level (`server`, `kubernetes`, `render`,
//! the checks across configurations), `configuration.rs` a configuration and the dispatch of
//! its `source` to the kind that owns it (`source::<kind>::config`), `kustomization.rs` the
//! kustomizations and their dependencies. Rules shared with the source kinds (booleans,
//! durations, paths) are in `syntax::values`.

mod configuration;
mod kustomization;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::{
    KubeConnection, KubernetesSettings, Secret, SecretValue, ServerSettings, Settings,
};
use super::schema::{RawConfiguration, RawKubernetes, RawRender, RawServer, RawSettings};
use crate::render::{RenderSettings, SandboxMode};
use crate::source::config::Cluster;
use crate::syntax::positions::{Pos, Problems};
use crate::syntax::values::{boolean, directory, positive_duration, resolve};

/// Where state lives when `stateDir` is not set.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gitopsd";
/// The status/artifact API's address when `server.listen` is not set.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 4;
/// How long an API client may take to send its request headers, and again its body, when
/// `server.readTimeout` is not set: ample for any real client, short enough that
/// half-sent requests cannot pile up.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_PUBLISH_LINK: &str = "current";

/// Validates `raw`. `base_dir` must be absolute; relative paths in the file resolve against
/// it. The result is only meaningful when `problems` stayed empty.
pub fn validate(raw: &RawSettings, base_dir: &Path, problems: &mut Problems) -> Settings {
    let state_dir = match &raw.state_dir {
        Some(text) => directory(text, "stateDir", base_dir, problems),
        None => PathBuf::from(DEFAULT_STATE_DIR),
    };
    let listen = raw
        .server
        .as_ref()
        .and_then(|server| server.listen.as_ref())
        .and_then(|text| match text.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid listen address {:?} for server.listen: expected an IP address \
                         and port such as 127.0.0.1:9090 or [::1]:9090",
                        text.value
                    ),
                );
                None
            }
        })
        .unwrap_or(DEFAULT_LISTEN);
    let server = server(raw.server.as_ref(), base_dir, problems);
    let max_concurrent_fetches = match &raw.max_concurrent_fetches {
        Some(text) => match text.value.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid value {:?} for maxConcurrentFetches: expected a whole number \
                         of at least 1",
                        text.value
                    ),
                );
                DEFAULT_MAX_CONCURRENT_FETCHES
            }
        },
        None => DEFAULT_MAX_CONCURRENT_FETCHES,
    };

    let kubernetes = raw
        .kubernetes
        .as_ref()
        .and_then(|k| kubernetes(k, base_dir, problems));
    let cluster = Cluster {
        configured: raw.kubernetes.is_some(),
        settings: kubernetes.as_ref(),
    };

    let render = render(raw.render.as_ref(), RenderSettings::default(), problems);

    let raw_configurations = raw.configurations.as_deref().unwrap_or_default();
    let mut configurations = Vec::with_capacity(raw_configurations.len());
    // (namespace, name) → line of the first definition.
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for raw_configuration in raw_configurations {
        if let Some(name) = &raw_configuration.name {
            let namespace = raw_configuration
                .namespace
                .as_ref()
                .map_or(DEFAULT_NAMESPACE, |n| n.as_str());
            let key = (namespace.to_string(), name.value.clone());
            if let Some(first_line) = seen.get(&key) {
                problems.push(
                    name.pos,
                    format!(
                        "duplicate configuration `{}` in namespace `{}` (first defined at line {first_line})",
                        key.1, key.0
                    ),
                );
            } else {
                seen.insert(key, name.pos.line);
            }
        }
        if let Some(configuration) =
            configuration::configuration(raw_configuration, base_dir, cluster, render, problems)
        {
            configurations.push(configuration);
        }
    }

    check_collisions(raw_configurations, base_dir, problems);
    let names: Vec<(String, String)> = configurations
        .iter()
        .map(|c| (c.namespace.clone(), c.name.clone()))
        .collect();
    let events = super::events::validate(
        &raw.events,
        &super::events::Context {
            configurations: &names,
            kubernetes: kubernetes.as_ref(),
            kubernetes_configured: raw.kubernetes.is_some(),
            base_dir,
            default_namespace: DEFAULT_NAMESPACE,
        },
        problems,
    );
    // One port cannot serve both: the receivers face the network, the API need not.
    let receivers_listen = raw
        .events
        .receivers
        .as_ref()
        .and_then(|r| r.listen.as_ref());
    if let (Some(text), Some(receivers)) = (receivers_listen, &events.receivers) {
        if receivers.listen == listen {
            problems.push(
                text.pos,
                format!(
                    "receivers.listen {} is also server.listen; the receivers need an address \
                     of their own",
                    receivers.listen
                ),
            );
        }
    }

    Settings {
        state_dir,
        listen,
        server,
        max_concurrent_fetches,
        kubernetes,
        render,
        configurations,
        events,
    }
}

/// Two writers of one file or directory undo each other: two kustomizations rendering into
/// the same `<directory>/<name>.yaml`, or two sources publishing into one directory (each
/// collects the other's revisions as garbage, leaving its `current` link dangling). Both
/// places are named so the user can pick which to move.
fn check_collisions(raws: &[RawConfiguration], base_dir: &Path, problems: &mut Problems) {
    let mut publishers: HashMap<PathBuf, Pos> = HashMap::new();
    let mut targets: HashMap<PathBuf, Pos> = HashMap::new();
    for configuration in raws {
        let publish = configuration
            .source
            .as_ref()
            .and_then(|s| s.publish.as_ref())
            .and_then(|p| p.directory.as_ref());
        if let Some(text) = publish.filter(|t| !t.value.is_empty()) {
            let directory = resolve(base_dir, Path::new(&text.value));
            match publishers.get(&directory) {
                Some(first) => problems.push(
                    text.pos,
                    format!(
                        "publish.directory {} is also the publish directory of the source at \
                         line {}, column {}; two sources cannot publish into one directory",
                        directory.display(),
                        first.line,
                        first.column
                    ),
                ),
                None => {
                    publishers.insert(directory, text.pos);
                }
            }
        }
        for kustomization in &configuration.kustomizations {
            let directory = kustomization
                .target
                .as_ref()
                .and_then(|t| t.directory.as_ref())
                .filter(|t| !t.value.is_empty());
            let (Some(text), Some(name)) = (directory, kustomization.name.as_ref()) else {
                continue;
            };
            let file =
                resolve(base_dir, Path::new(&text.value)).join(format!("{}.yaml", name.value));
            match targets.get(&file) {
                Some(first) => problems.push(
                    text.pos,
                    format!(
                        "kustomization `{}` would write {}, which the kustomization at line {}, \
                         column {} writes too; give one of them another target directory",
                        name.value,
                        file.display(),
                        first.line,
                        first.column
                    ),
                ),
                None => {
                    targets.insert(file, text.pos);
                }
            }
        }
    }
}

/// A `render` section over `inherited`: each key it sets replaces the inherited value.
pub(super) fn render(
    raw: Option<&RawRender>,
    inherited: RenderSettings,
    problems: &mut Problems,
) -> RenderSettings {
    let Some(raw) = raw else {
        return inherited;
    };
    let sandbox = match &raw.sandbox {
        None => inherited.sandbox,
        Some(text) => SandboxMode::parse(text.as_str()).unwrap_or_else(|| {
            problems.push(
                text.pos,
                format!(
                    "invalid render.sandbox {:?}: expected `auto`, `landlock`, `namespace` or \
                     `none`",
                    text.value
                ),
            );
            inherited.sandbox
        }),
    };
    let remote_bases = match &raw.remote_bases {
        None => inherited.remote_bases,
        some => boolean(some, "render.remoteBases", problems),
    };
    RenderSettings {
        sandbox,
        remote_bases,
    }
}

/// The `server` section besides `listen`. Messages name keys, never the token.
fn server(raw: Option<&RawServer>, base_dir: &Path, problems: &mut Problems) -> ServerSettings {
    let mut settings = ServerSettings {
        token: None,
        max_connections: None,
        read_timeout: DEFAULT_READ_TIMEOUT,
    };
    let Some(raw) = raw else {
        return settings;
    };
    settings.token = match (&raw.token, &raw.token_file) {
        (Some(_), Some(file)) => {
            problems.push(
                file.pos,
                "give either server.token or server.tokenFile, not both",
            );
            None
        }
        (Some(text), None) => {
            if let Some(problem) = token_problem(&text.value) {
                problems.push(text.pos, format!("invalid server.token: {problem}"));
            }
            Some(SecretValue::Inline(Secret(text.value.clone())))
        }
        (None, Some(text)) if text.value.trim().is_empty() => {
            problems.push(
                text.pos,
                "server.tokenFile must not be empty; expected the path of a file holding the token",
            );
            None
        }
        (None, Some(text)) => Some(SecretValue::File(resolve(base_dir, Path::new(&text.value)))),
        (None, None) => None,
    };
    if let Some(text) = &raw.max_connections {
        match text.value.parse::<usize>() {
            Ok(n) if n >= 1 => settings.max_connections = Some(n),
            _ => problems.push(
                text.pos,
                format!(
                    "invalid value {:?} for server.maxConnections: expected a whole number of at \
                     least 1",
                    text.value
                ),
            ),
        }
    }
    if raw.read_timeout.is_some() {
        settings.read_timeout =
            positive_duration(&raw.read_timeout, "server.readTimeout", problems);
    }
    settings
}

/// Why `token` cannot be a bearer token (it must fit in an HTTP header as is), if it cannot.
/// Never quotes the token. Shared with the daemon, which checks a `tokenFile`'s content.
pub fn token_problem(token: &str) -> Option<&'static str> {
    if token.is_empty() {
        Some("the token is empty")
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        Some("expected printable ASCII characters without spaces")
    } else {
        None
    }
}

fn kubernetes(
    raw: &RawKubernetes,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<KubernetesSettings> {
    let kubeconfig = raw.kubeconfig.as_ref().and_then(|text| {
        if text.value.trim().is_empty() {
            problems.push(
                text.pos,
                "kubernetes.kubeconfig must not be empty; expected the path of a kubeconfig file",
            );
            return None;
        }
        Some(resolve(base_dir, Path::new(&text.value)))
    });
    let context = match &raw.context {
        Some(text) if text.value.trim().is_empty() => {
            problems.push(
                text.pos,
                "kubernetes.context must not be empty; leave it out to use the kubeconfig's \
                 current-context",
            );
            return None;
        }
        Some(text) => Some(text.value.clone()),
        None => None,
    };
    let in_cluster = boolean(&raw.in_cluster, "kubernetes.inCluster", problems);
    let connection = match (kubeconfig, in_cluster) {
        (Some(_), true) => {
            let Some(flag) = &raw.in_cluster else {
                return None;
            };
            problems.push(
                flag.pos,
                "kubernetes.inCluster and kubernetes.kubeconfig exclude each other; use the \
                 pod's service account or a kubeconfig file, not both",
            );
            return None;
        }
        (Some(path), false) => KubeConnection::Kubeconfig(path),
        (None, true) => {
            if let Some(text) = &raw.context {
                problems.push(
                    text.pos,
                    "kubernetes.context needs a kubeconfig; the pod's service account \
                     (`inCluster: true`) has no contexts",
                );
                return None;
            }
            KubeConnection::InCluster
        }
        (None, false) if raw.kubeconfig.is_some() => return None,
        (None, false) => KubeConnection::Detect,
    };
    Some(KubernetesSettings {
        connection,
        context,
    })
}
