//! Publish hooks, as git-sync's `--exechook-command` and `--webhook-url`: after each new
//! publish of a source, a program runs and/or a URL is POSTed to, each bounded by
//! `publish.hookTimeout` and retried with backoff while it fails.
//!
//! Hooks run in a task of their own, not in the source's reconcile step: a slow or failing
//! hook must not hold back the next fetch, nor count against the step's time. A newer publish
//! of the same source supersedes the hooks of the previous one (they are cancelled, a running
//! program killed), so a consumer is told about the newest revision, not a backlog. A hung
//! program is killed at the timeout and counts as a failure.
//!
//! The program gets the revision and the directory in its environment, never on a command
//! line a shell would parse; the webhook gets them as a small JSON body.

use crate::artifact::publish::Publish;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Attempts per hook and publish: the first, then retries after 1 s, 2 s, 4 s, 8 s.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// What a hook is told about the publish.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    /// `<namespace>/<name>`.
    pub source: String,
    pub revision: String,
    /// What consumers read: the link (symlink mode) or the directory itself.
    pub directory: PathBuf,
}

/// Why one run of a hook failed.
#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("{} exited with {status}", program.display())]
    Exit {
        program: PathBuf,
        status: std::process::ExitStatus,
    },
    #[error("did not finish within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("POST {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("POST {url} failed: {source}")]
    Request {
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("the webhook request was lost: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The hooks in flight, by source.
#[derive(Debug, Default)]
pub struct Hooks {
    running: Mutex<HashMap<String, CancellationToken>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Hooks {
    /// Run `publish`'s hooks for `published`, superseding any still running for the source.
    /// Callable from a blocking thread of the runtime.
    pub fn after_publish(&self, publish: &Publish, published: Published) {
        if publish.exec_hook.is_none() && publish.webhook.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(source = %published.source, "no runtime to run publish hooks on");
            return;
        };
        let token = CancellationToken::new();
        if let Some(previous) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(published.source.clone(), token.clone())
        {
            previous.cancel();
        }
        let publish = publish.clone();
        let task = runtime.spawn(async move {
            let exec = async {
                if let Some(program) = &publish.exec_hook {
                    retry("exec hook", &published, &token, || {
                        run_program(program, &published, publish.hook_timeout)
                    })
                    .await;
                }
            };
            let webhook = async {
                if let Some(url) = &publish.webhook {
                    retry("webhook", &published, &token, || {
                        post(url, &published, publish.hook_timeout)
                    })
                    .await;
                }
            };
            tokio::join!(exec, webhook);
        });
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Wait for the hooks in flight (`--once` exits only after them).
    pub async fn wait(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// `attempt` until it succeeds, [`ATTEMPTS`] times at most, or until cancelled.
async fn retry<F, Fut>(what: &str, published: &Published, token: &CancellationToken, attempt: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), HookError>>,
{
    let mut backoff = FIRST_BACKOFF;
    for n in 1..=ATTEMPTS {
        let outcome = tokio::select! {
            outcome = attempt() => outcome,
            () = token.cancelled() => return,
        };
        match outcome {
            Ok(()) => {
                tracing::info!(source = %published.source, revision = %published.revision, "{what} succeeded");
                return;
            }
            Err(e) if n == ATTEMPTS => {
                tracing::error!(source = %published.source, revision = %published.revision, "{what} failed {n} times, giving up until the next publish: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!(source = %published.source, revision = %published.revision, attempt = n, "{what} failed, retrying in {}: {e}", humantime::format_duration(backoff));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = token.cancelled() => return,
        }
        backoff *= 2;
    }
}

async fn run_program(
    program: &std::path::Path,
    published: &Published,
    timeout: Duration,
) -> Result<(), HookError> {
    let mut child = tokio::process::Command::new(program)
        .env("GITOPSD_SOURCE", &published.source)
        .env("GITOPSD_REVISION", &published.revision)
        .env("GITOPSD_DIRECTORY", &published.directory)
        .stdin(std::process::Stdio::null())
        // Cancelled (a newer publish) or timed out: the program goes with its future.
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HookError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(HookError::Exit {
            program: program.to_path_buf(),
            status,
        }),
        Ok(Err(source)) => Err(HookError::Spawn {
            program: program.to_path_buf(),
            source,
        }),
        Err(_) => Err(HookError::Timeout(timeout)),
    }
}

async fn post(url: &str, published: &Published, timeout: Duration) -> Result<(), HookError> {
    let (url, body) = (url.to_string(), published.clone());
    // ureq is blocking; its own timeout bounds the whole request.
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        let json = serde_json::to_string(&body).unwrap_or_default();
        match agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(json.as_bytes())
        {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(HookError::Status {
                url: crate::source::git::refs::redact_url(&url),
                status: response.status().as_u16(),
            }),
            Err(source) => Err(HookError::Request {
                url: crate::source::git::refs::redact_url(&url),
                source: Box::new(source),
            }),
        }
    })
    .await?
}
