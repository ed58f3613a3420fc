//! The HTTP server: artifacts, health, metrics, status, and the reconcile trigger.
//!
//! Requests pass the token check ([`auth`]) and then the body read ([`server::read_body`])
//! before any handler; [`server`] bounds connections and how long a client may take.

pub mod auth;
mod metrics;
pub mod receivers;
pub mod server;

use crate::reconcile::reload::Daemon;
use crate::reconcile::{Engine, Trigger};
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;
use std::time::Duration;

/// How the API protects itself; see `server` in the config.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// `None`: every endpoint is open (fine on loopback only).
    pub token: Option<auth::TokenSource>,
    pub max_connections: usize,
    pub read_timeout: Duration,
}

impl ApiOptions {
    pub fn from_settings(settings: &crate::config::ServerSettings) -> Self {
        ApiOptions {
            token: settings.token.clone().map(auth::TokenSource::new),
            max_connections: settings
                .max_connections
                .unwrap_or_else(server::default_max_connections),
            read_timeout: settings.read_timeout,
        }
    }
}

/// The routes, reading the daemon's current engine at every request (a reload replaces it).
pub fn router(daemon: Arc<Daemon>, options: &ApiOptions) -> Router {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/status", get(status))
        .route("/api/v1/events", get(events))
        .route("/api/v1/reconcile/{name}", post(reconcile))
        .route("/api/v1/reconcile/{namespace}/{name}", post(reconcile_in))
        .route("/api/v1/suspend/{name}", post(suspend))
        .route("/api/v1/resume/{name}", post(resume))
        .route("/artifacts/{*path}", get(artifact))
        .with_state(daemon)
        .layer(axum::middleware::from_fn_with_state(
            options.read_timeout,
            server::read_body,
        ));
    // The last layer runs first: an unauthenticated request is refused before its body is read.
    match &options.token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            Arc::new(token.clone()),
            auth::require_token,
        )),
        None => router,
    }
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    daemon: Arc<Daemon>,
    listener: tokio::net::TcpListener,
    options: ApiOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(daemon, &options);
    server::serve(
        router,
        listener,
        options.max_connections,
        options.read_timeout,
        shutdown,
    )
    .await
}

/// The JSON the status endpoint returns, and `gitopsd status` prints.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct StatusDocument {
    pub sources: Vec<crate::state::SourceStatus>,
    pub kustomizations: Vec<crate::state::KustomizationStatus>,
    /// The webhook receivers and their paths (on `receivers.listen`).
    #[serde(default)]
    pub receivers: Vec<crate::events::receiver::HookStatus>,
    /// The last reload of the config, when there was one since the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<crate::reconcile::reload::ReloadStatus>,
}

async fn status(State(daemon): State<Arc<Daemon>>) -> Json<StatusDocument> {
    let engine = daemon.engine();
    let mut document = engine.state().read(|st| StatusDocument {
        sources: st.sources.values().cloned().collect(),
        kustomizations: st.kustomizations.values().cloned().collect(),
        receivers: engine.hooks().to_vec(),
        reload: daemon.last_reload(),
    });
    let settings = engine.settings();
    for source in &mut document.sources {
        source.repository_public_key = repository_public_key(settings, source);
        let labels =
            crate::reconcile::metrics::source_labels(&source.namespace, &source.name, &source.kind);
        source.metrics = Some(engine.metrics().source(&labels));
    }
    Json(document)
}

/// The JSON `GET /api/v1/events` returns, and `gitopsd events` reads: the recent events
/// numbered `since` or later (oldest first), and the `since` to ask with next time.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct EventsDocument {
    pub next: u64,
    pub events: Vec<crate::events::alert::Event>,
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    since: Option<u64>,
}

async fn events(
    State(daemon): State<Arc<Daemon>>,
    axum::extract::Query(query): axum::extract::Query<EventsQuery>,
) -> Json<EventsDocument> {
    let (next, events) = daemon.engine().recent_events(query.since.unwrap_or(0));
    Json(EventsDocument { next, events })
}

/// The generated deploy key of a git source that uses one (read from `<stateDir>/keys/`).
fn repository_public_key(
    settings: &crate::config::Settings,
    source: &crate::state::SourceStatus,
) -> Option<String> {
    use crate::source::git::auth;
    let c = settings
        .configurations
        .iter()
        .find(|c| c.name == source.name && c.namespace == source.namespace)?;
    if !c
        .source
        .git()
        .is_some_and(|git| auth::uses_generated_key(&git.auth, &c.source.url))
    {
        return None;
    }
    let path = auth::generated_key_path(&settings.state_dir.join("git"), &c.namespace, &c.name);
    auth::generated_public_key(&path)
}

/// Ready once every active source has an artifact to serve (possibly one kept from before
/// a restart): that is when a sidecar's consumers can start.
async fn readyz(State(daemon): State<Arc<Daemon>>) -> Response {
    let engine = daemon.engine();
    let pending: Vec<String> = engine.state().read(|st| {
        st.sources
            .values()
            .filter(|s| !s.suspended && s.artifact.is_none())
            .map(|s| format!("{}/{}", s.namespace, s.name))
            .collect()
    });
    if pending.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "waiting for the first artifact of: {}\n",
                pending.join(", ")
            ),
        )
            .into_response()
    }
}

/// `POST /api/v1/reconcile/<name>`: the only configuration with that name.
async fn reconcile(State(daemon): State<Arc<Daemon>>, UrlPath(name): UrlPath<String>) -> Response {
    let engine = daemon.engine();
    reconcile_answer(&engine, None, &name)
}

/// `POST /api/v1/reconcile/<namespace>/<name>`.
async fn reconcile_in(
    State(daemon): State<Arc<Daemon>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Response {
    let engine = daemon.engine();
    reconcile_answer(&engine, Some(&namespace), &name)
}

fn reconcile_answer(engine: &Engine, namespace: Option<&str>, name: &str) -> Response {
    // Names come percent-decoded from the URL: `%0a` must not end the line.
    let shown = |text: &str| crate::escape::control(text).into_owned();
    match engine.trigger(namespace, name) {
        Trigger::Requested(found) => {
            let text = match namespace {
                Some(ns) => format!("reconcile of {}/{} requested\n", shown(ns), shown(name)),
                None => format!(
                    "reconcile of {} requested (namespace {})\n",
                    shown(name),
                    shown(&found)
                ),
            };
            (StatusCode::ACCEPTED, text).into_response()
        }
        Trigger::NotFound => {
            let text = match namespace {
                None => format!("no configuration named {}\n", shown(name)),
                Some(ns) => format!(
                    "no configuration named {} in namespace {}\n",
                    shown(name),
                    shown(ns)
                ),
            };
            (StatusCode::NOT_FOUND, text).into_response()
        }
        Trigger::Ambiguous(namespaces) => (
            StatusCode::CONFLICT,
            format!(
                "several configurations are named {} (in namespaces {}); name one as \
                 NAMESPACE/NAME\n",
                shown(name),
                namespaces.join(", ")
            ),
        )
            .into_response(),
    }
}

/// Which configuration (or kustomization of it) `suspend` and `resume` act on: the path names
/// the configuration, the query its namespace and kustomization, as `gitopsd suspend` sends.
#[derive(Debug, serde::Deserialize)]
struct SuspendQuery {
    namespace: Option<String>,
    kustomization: Option<String>,
}

/// `POST /api/v1/suspend/<configuration>[?namespace=NS][&kustomization=K]`.
async fn suspend(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
    axum::extract::Query(query): axum::extract::Query<SuspendQuery>,
) -> Response {
    let engine = daemon.engine();
    set_suspended(engine, name, query, true).await
}

/// `POST /api/v1/resume/<configuration>[?namespace=NS][&kustomization=K]`.
async fn resume(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
    axum::extract::Query(query): axum::extract::Query<SuspendQuery>,
) -> Response {
    let engine = daemon.engine();
    set_suspended(engine, name, query, false).await
}

async fn set_suspended(
    engine: Arc<Engine>,
    configuration: String,
    query: SuspendQuery,
    suspended: bool,
) -> Response {
    use crate::reconcile::{SuspendError, SuspendRequest};
    let request = SuspendRequest {
        namespace: query.namespace,
        configuration,
        kustomization: query.kustomization,
    };
    // Saving the suspension writes and fsyncs a file.
    let outcome =
        tokio::task::spawn_blocking(move || engine.set_suspended(&request, suspended)).await;
    let verb = if suspended { "suspended" } else { "resumed" };
    // Names come percent-decoded from the URL: `%0a` must not end the line.
    let shown = |text: &str| crate::escape::control(text).into_owned();
    match outcome {
        Ok(Ok(done)) if done.changed => {
            (StatusCode::OK, format!("{} {verb}\n", shown(&done.object))).into_response()
        }
        Ok(Ok(done)) => (
            StatusCode::OK,
            format!("{} was already {verb}\n", shown(&done.object)),
        )
            .into_response(),
        Ok(Err(e)) => {
            let status = match &e {
                SuspendError::NotFound(_) | SuspendError::NoKustomization { .. } => {
                    StatusCode::NOT_FOUND
                }
                SuspendError::Ambiguous { .. } | SuspendError::SuspendedByConfig { .. } => {
                    StatusCode::CONFLICT
                }
                SuspendError::Persist(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, format!("{}\n", shown(&e.to_string()))).into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the suspension could not be recorded\n",
        )
            .into_response(),
    }
}

async fn artifact(
    State(daemon): State<Arc<Daemon>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let engine = daemon.engine();
    let Some(file) = engine.store().resolve(&path) else {
        return (StatusCode::NOT_FOUND, "no such artifact\n").into_response();
    };
    // Current artifacts have their digest in the state; an older one kept by GC is hashed.
    let known = engine.state().read(|st| {
        st.sources
            .values()
            .filter_map(|s| s.artifact.as_ref())
            .find(|a| a.path == file)
            .map(|a| a.digest.clone())
    });
    let digest = match known {
        Some(d) => d,
        None => {
            let f = file.clone();
            match tokio::task::spawn_blocking(move || crate::artifact::store::file_digest(&f)).await
            {
                Ok(Ok(d)) => d,
                _ => return (StatusCode::NOT_FOUND, "no such artifact\n").into_response(),
            }
        }
    };
    let etag = format!("\"{digest}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let f = match tokio::fs::File::open(&file).await {
        Ok(f) => f,
        Err(_) => return (StatusCode::NOT_FOUND, "no such artifact\n").into_response(),
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024));
    (
        [
            (header::CONTENT_TYPE, "application/gzip".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response()
}
