//! `gitopsd run`: the daemon, or one pass with `--once`.

use super::check::INVALID_CONFIG;
use super::Output;
use crate::reconcile::{Engine, PassReport};
use anyhow::Context;
use std::path::Path;
use tokio::sync::watch;

pub fn run(config: &Path, once: bool, output: Output) -> anyhow::Result<i32> {
    let settings = match crate::config::load(config) {
        Ok(s) => s,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(INVALID_CONFIG);
        }
    };
    // Two workers are plenty for a daemon whose heavy work runs on blocking threads; idle
    // blocking threads go away quickly so that an idle daemon stays small.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
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
    })
}

async fn daemon(engine: std::sync::Arc<Engine>) -> anyhow::Result<i32> {
    let listen = engine.settings().listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, configurations = engine.settings().configurations.len(), "gitopsd started");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(crate::api::serve(engine.clone(), listener, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    let scheduler = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(stop_rx).await })
    };
    wait_for_signal().await;
    tracing::info!("stopping: letting in-flight steps finish");
    let _ = stop_tx.send(true);
    // Steps write atomically, so a step abandoned after the grace period leaves at most a temp
    // file, which the next start removes.
    let grace = std::time::Duration::from_secs(30);
    let _ = tokio::time::timeout(grace, scheduler).await;
    let _ = tokio::time::timeout(grace, server).await;
    tracing::info!("stopped");
    Ok(0)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn print_report(report: &PassReport, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(report)?),
        Output::Text => {
            for s in &report.sources {
                match (&s.error, &s.artifact) {
                    (Some(e), _) => println!("source {}: FAILED: {e}", s.name),
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
                    Some(e) => println!("kustomization {}: FAILED: {e}", k.name),
                    None => println!(
                        "kustomization {}: {} objects at {} -> {}",
                        k.name,
                        k.objects,
                        k.revision.as_deref().unwrap_or("-"),
                        k.target
                            .as_ref()
                            .map(|t| t.display().to_string())
                            .unwrap_or_default()
                    ),
                }
            }
        }
    }
    Ok(())
}
