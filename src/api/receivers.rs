//! The webhook receivers' listener (`receivers.listen`): a server of its own beside the
//! admin API, so that the API can stay on loopback while git hosts reach the receivers, and
//! a flood of webhooks takes connection slots from the receivers only.
//!
//! - Each hook answers `POST /hook/<sha256(token + name + namespace)>` (Flux's path); its
//!   secret is read once here, at start, since the path depends on it.
//! - Connections get the API server's protections (`server::serve`: a cap, header timeout,
//!   write-stall timeout) with the receivers' own `readTimeout`; a body may be up to
//!   [`MAX_HOOK_BODY`] (push payloads of big pushes are large) and must arrive within the same
//!   timeout.
//! - A verified event asks each of the hook's configurations to sync (`Engine::trigger`, the
//!   path of `POST /api/v1/reconcile`) and answers 202 at once. A trigger is a wake-up of the
//!   configuration's own loop, which holds at most one pending wake-up and runs one fetch at
//!   a time: a burst of pushes coalesces into at most one fetch running plus one to follow.
//! - A rejected request gets a bare 401 (why is for the debug log and the
//!   `gitopsd_receiver_requests_total{result="unauthorized"}` counter, never for the client).

use super::server::{self, BodyLimits};
use crate::config::ReceiverSettings;
use crate::events::receiver::{self, HookStatus, ReceiverType, Verdict};
use crate::events::secret::{self, SecretError};
use crate::reconcile::reload::Daemon;
use crate::reconcile::Trigger;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The largest webhook body accepted: GitHub caps its payloads at 25 MB, but a push event
/// that triggers a fetch needs none of it read; 1 MiB holds any ordinary push.
pub const MAX_HOOK_BODY: usize = 1024 * 1024;

/// One hook, ready to verify requests.
struct Hook {
    status: HookStatus,
    kind: ReceiverType,
    token: Zeroizing<Vec<u8>>,
    events: Vec<String>,
    configurations: Vec<(String, String)>,
}

/// Every hook, by path.
pub struct Receivers {
    hooks: HashMap<String, Hook>,
}

/// A hook's secret could not be read at start.
#[derive(Debug, thiserror::Error)]
#[error("receiver hook {namespace}/{name}: {source}")]
pub struct ReceiverSetupError {
    pub namespace: String,
    pub name: String,
    #[source]
    pub source: SecretError,
}

impl Receivers {
    /// Reads every hook's secret and derives its path.
    pub async fn prepare(settings: &ReceiverSettings) -> Result<Receivers, ReceiverSetupError> {
        let mut hooks = HashMap::new();
        for h in &settings.hooks {
            let token = secret::read(&h.secret)
                .await
                .map_err(|source| ReceiverSetupError {
                    namespace: h.namespace.clone(),
                    name: h.name.clone(),
                    source,
                })?;
            let path = receiver::hook_path(&token, &h.name, &h.namespace);
            let status = HookStatus {
                name: h.name.clone(),
                namespace: h.namespace.clone(),
                kind: h.kind,
                path: path.clone(),
                configurations: h
                    .configurations
                    .iter()
                    .map(|(ns, name)| format!("{ns}/{name}"))
                    .collect(),
            };
            hooks.insert(
                path,
                Hook {
                    status,
                    kind: h.kind,
                    token,
                    events: h.events.clone(),
                    configurations: h.configurations.clone(),
                },
            );
        }
        Ok(Receivers { hooks })
    }

    /// What the status API shows, sorted by namespace and name.
    pub fn statuses(&self) -> Vec<HookStatus> {
        let mut all: Vec<HookStatus> = self.hooks.values().map(|h| h.status.clone()).collect();
        all.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        all
    }
}

#[derive(Clone)]
struct Shared {
    /// Asked for its current engine at every request: a reload replaces it.
    daemon: Arc<Daemon>,
    receivers: Arc<Receivers>,
}

pub fn router(
    daemon: Arc<Daemon>,
    receivers: Arc<Receivers>,
    settings: &ReceiverSettings,
) -> Router {
    let limits = BodyLimits {
        read_timeout: settings.read_timeout,
        max_body: MAX_HOOK_BODY,
    };
    Router::new()
        .route("/hook/{digest}", post(hook))
        .with_state(Shared { daemon, receivers })
        .layer(axum::middleware::from_fn_with_state(
            limits,
            server::read_body_within,
        ))
}

/// Serve until `shutdown` resolves.
pub async fn serve(
    daemon: Arc<Daemon>,
    receivers: Arc<Receivers>,
    listener: tokio::net::TcpListener,
    settings: ReceiverSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(daemon, receivers, &settings);
    server::serve(
        router,
        listener,
        settings.max_connections,
        settings.read_timeout,
        shutdown,
    )
    .await
}

async fn hook(
    State(shared): State<Shared>,
    UrlPath(digest): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let engine = shared.daemon.engine();
    let metrics = engine.metrics().events();
    let Some(hook) = shared.receivers.hooks.get(&format!("/hook/{digest}")) else {
        metrics.receiver_unknown_path.inc();
        return StatusCode::NOT_FOUND.into_response();
    };
    let (namespace, name) = (&hook.status.namespace, &hook.status.name);
    match receiver::verify(hook.kind, &hook.token, &hook.events, &headers, &body) {
        Err(rejection) => {
            metrics.hook(namespace, name, "unauthorized");
            tracing::debug!(hook = %format!("{namespace}/{name}"), reason = %rejection, "webhook refused");
            StatusCode::UNAUTHORIZED.into_response()
        }
        Ok(Verdict::Pong) => {
            metrics.hook(namespace, name, "ping");
            (StatusCode::OK, "pong\n").into_response()
        }
        Ok(Verdict::Ignored { event }) => {
            metrics.hook(namespace, name, "ignored");
            tracing::debug!(hook = %format!("{namespace}/{name}"), event = %crate::escape::control(&event), "webhook event ignored");
            (StatusCode::OK, "event ignored\n").into_response()
        }
        Ok(Verdict::Trigger { event }) => {
            metrics.hook(namespace, name, "accepted");
            for (ns, configuration) in &hook.configurations {
                match engine.trigger(Some(ns), configuration) {
                    Trigger::Requested(_) => {}
                    // Checked at load: every configuration a hook names exists.
                    Trigger::NotFound | Trigger::Ambiguous(_) => {
                        tracing::warn!(hook = %format!("{namespace}/{name}"), configuration = %format!("{ns}/{configuration}"), "webhook names no configuration");
                    }
                }
            }
            tracing::info!(
                hook = %format!("{namespace}/{name}"),
                event = %crate::escape::control(event.as_deref().unwrap_or("-")),
                "webhook accepted: sync requested"
            );
            (StatusCode::ACCEPTED, "accepted\n").into_response()
        }
    }
}
