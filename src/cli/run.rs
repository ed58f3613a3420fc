//! `gitopsd run`: the daemon, or one pass with `--once`.

use super::check::INVALID_CONFIG;
use super::Output;
use crate::escape;
use crate::reconcile::{Engine, PassReport};
use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use tokio::sync::watch;

pub fn run(config: &Path, once: bool, output: Output) -> anyhow::Result<i32> {
    let settings = match crate::config::load(config) {
        Ok(s) => s,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(INVALID_CONFIG);
        }
    };
    // Before any thread exists: libgit2's timeouts are process-wide C globals.
    crate::source::git::cancel::libgit2_timeouts();
    // Two workers are plenty for a daemon whose heavy work runs on blocking threads; idle
    // blocking threads go away quickly so that an idle daemon stays small.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(Duration::from_secs(2))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = runtime.block_on(async move {
        let engine = match Engine::new(settings) {
            Ok(engine) => engine,
            Err(e) if e.is_usage() => {
                eprintln!("error: {e}");
                return Ok(INVALID_CONFIG);
            }
            Err(e) => return Err(e.into()),
        };
        if once {
            let report = engine.run_once().await;
            print_report(&report, output)?;
            return Ok(if report.succeeded() { 0 } else { 1 });
        }
        daemon(engine).await
    });
    // A fetch thread stuck on a server that does not answer ends by itself within the stall
    // limit (`source::git::cancel`), but the process must not wait for it: dropping the
    // runtime would join every blocking thread, for as long as they take.
    runtime.shutdown_timeout(EXIT_GRACE);
    code
}

/// How long the process waits at exit for blocking work that is still running.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// How long a stopping daemon lets in-flight steps (a render, an apply) finish. With
/// [`EXIT_GRACE`] it stays well below the systemd unit's `TimeoutStopSec` (45 s); fetches do
/// not count against it, they are interrupted at once.
const STOP_GRACE: Duration = Duration::from_secs(30);

async fn daemon(engine: std::sync::Arc<Engine>) -> anyhow::Result<i32> {
    let listen = engine.settings().listen;
    let options = crate::api::ApiOptions::from_settings(&engine.settings().server);
    // A token file that cannot be used is a start-up error rather than a server that refuses
    // every request; later, the file is read again at every request.
    if let Some(token) = &options.token {
        token.current().await?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    // Before READY=1: a supervisor may send SIGTERM as soon as it reads READY, and a signal
    // that arrives before its handler exists kills the process without a clean stop.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    // Ready once the API is bound: the state was loaded before, so the last good artifacts are
    // being served from here on, which is what /readyz also reports.
    let notifier = std::sync::Arc::new(
        super::notify::Notifier::from_env().context("NOTIFY_SOCKET is unusable")?,
    );
    notifier.ready(&format!(
        "serving on {local}, {} configurations",
        engine.settings().configurations.len()
    ));
    tracing::info!(listen = %local, configurations = engine.settings().configurations.len(), "gitopsd started");
    if options.token.is_none() && !local.ip().is_loopback() {
        tracing::warn!(
            listen = %local,
            "the API listens beyond loopback without a token: anyone who can reach it can \
             download every artifact and trigger reconciles; set server.token or \
             server.tokenFile"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(crate::api::serve(
        engine.clone(),
        listener,
        options,
        async move {
            let _ = server_stop.wait_for(|s| *s).await;
        },
    ));
    let scheduler = {
        let engine = engine.clone();
        let supervisor = notifier.clone();
        tokio::spawn(async move { engine.run_supervised(stop_rx, supervisor).await })
    };
    wait_for_signal(&mut terminate).await;
    notifier.stopping();
    tracing::info!("stopping: letting in-flight steps finish");
    let _ = stop_tx.send(true);
    // Steps write atomically, so a step abandoned after the grace period leaves at most a
    // dot-named temp file beside the real one, never a half-written file. One deadline for both, so that the whole stop is
    // bounded by it.
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    if tokio::time::timeout_at(deadline, scheduler).await.is_err() {
        // In-flight applies end at their next safe point; statuses already changed are kept.
        engine.abandon();
        let _ = tokio::time::timeout(EXIT_GRACE, engine.flush()).await;
    }
    let _ = tokio::time::timeout_at(deadline, server).await;
    tracing::info!("stopped");
    Ok(0)
}

async fn wait_for_signal(terminate: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn print_report(report: &PassReport, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(report)?),
        Output::Yaml => print!("{}", serde_saphyr::to_string(report)?),
        Output::Text => {
            for s in &report.sources {
                match (&s.error, &s.artifact) {
                    (Some(e), _) => println!("source {}: FAILED: {}", s.name, escape::control(e)),
                    (None, Some(a)) => println!(
                        "source {}: {} -> {} ({} bytes, {})",
                        s.name,
                        s.revision.as_deref().unwrap_or("-"),
                        a.path.display(),
                        a.size,
                        a.digest
                    ),
                    (None, None) => println!("source {}: suspended", s.name),
                }
            }
            for k in &report.kustomizations {
                match &k.error {
                    Some(e) => println!("kustomization {}: FAILED: {}", k.name, escape::control(e)),
                    None => println!(
                        "kustomization {}: {} objects at {} -> {}",
                        k.name,
                        k.objects,
                        k.revision.as_deref().unwrap_or("-"),
                        k.target.as_deref().unwrap_or_default()
                    ),
                }
            }
        }
    }
    Ok(())
}
