//! `gitopsd run`: the daemon, or one pass with `--once`.

use super::check::INVALID_CONFIG;
use super::Output;
use crate::escape;
use crate::reconcile::reload::Daemon;
use crate::reconcile::{Engine, PassReport};
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

pub fn run(config: &Path, once: bool, output: Output) -> anyhow::Result<i32> {
    // The text too: a reload compares each configuration's text with the one in force.
    let (text, settings) = match crate::reconcile::reload::read_config(config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("{e}");
            return Ok(INVALID_CONFIG);
        }
    };
    run_settings(settings, &text, Some(config), once, output)
}

/// Run `settings` (read from `config`, whose text is `text`; `None`: made from flags, nothing
/// to reload).
pub fn run_settings(
    settings: crate::config::Settings,
    text: &str,
    config: Option<&Path>,
    once: bool,
    output: Output,
) -> anyhow::Result<i32> {
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
        daemon(engine, config, text).await
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

async fn daemon(engine: Arc<Engine>, config: Option<&Path>, text: &str) -> anyhow::Result<i32> {
    let options = crate::api::ApiOptions::from_settings(&engine.settings().server);
    // A token file that cannot be used is a start-up error rather than a server that refuses
    // every request; later, the file is read again at every request.
    if let Some(token) = &options.token {
        token.current().await?;
    }
    let listen = engine.settings().listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // Before READY=1: a supervisor may send SIGTERM (or SIGHUP) as soon as it reads READY,
    // and a signal that arrives before its handler exists kills the process.
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut edits = match config {
        Some(config) => super::watch::ConfigWatch::start(config, text),
        None => super::watch::ConfigWatch::disabled(),
    };
    let receivers = receivers(&engine).await?;
    let configurations = engine.settings().configurations.len();
    let daemon = Daemon::new(engine, text);
    let mut server = Server::start(&daemon, listener, options);
    // Ready once the API is bound: the state was loaded before, so the last good artifacts are
    // being served from here on, which is what /readyz also reports.
    let notifier =
        Arc::new(super::notify::Notifier::from_env().context("NOTIFY_SOCKET is unusable")?);
    notifier.ready(&format!(
        "serving on {}, {configurations} configurations",
        server.local
    ));
    tracing::info!(listen = %server.local, configurations, "gitopsd started");
    server.warn_if_open();
    let (stop_tx, stop_rx) = watch::channel(false);
    let receivers_server = receivers.map(|(receivers, listener, settings)| {
        let mut stop = stop_rx.clone();
        tokio::spawn(crate::api::receivers::serve(
            daemon.clone(),
            receivers,
            listener,
            settings,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ))
    });
    let scheduler = {
        let daemon = daemon.clone();
        let supervisor = notifier.clone();
        tokio::spawn(async move { daemon.run(stop_rx, supervisor).await })
    };
    loop {
        let cause = tokio::select! {
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hangup.recv() => "SIGHUP",
            () = edits.changed() => "a change of the config file",
        };
        let Some(config) = config else {
            tracing::info!("{cause}: there is no config file to reload (flags only)");
            continue;
        };
        notifier.reloading();
        tracing::info!(config = %config.display(), "reloading the config after {cause}");
        let path = config.to_path_buf();
        let reloader = daemon.clone();
        let outcome = tokio::task::spawn_blocking(move || reloader.reload(&path)).await;
        match outcome {
            Ok(Ok(plan)) => {
                edits.loaded().await;
                tracing::info!(
                    added = %plan.added.join(","),
                    changed = %plan.changed.join(","),
                    removed = %plan.removed.join(","),
                    unchanged = plan.unchanged,
                    "config reloaded"
                );
                if plan.server_changed {
                    server = server.replace(&daemon).await;
                }
                notifier.ready(&format!(
                    "serving on {}, {} configurations (reloaded)",
                    server.local,
                    daemon.engine().settings().configurations.len()
                ));
            }
            Ok(Err(e)) => {
                edits.loaded().await;
                // One line per problem (file:line:col), as `gitopsd check` prints them.
                for line in e.to_string().lines() {
                    tracing::error!("config reload rejected, the running config stays: {line}");
                }
                notifier.ready("config reload rejected; the running config stays (see the log)");
            }
            Err(e) => {
                tracing::error!("config reload failed: {e}");
                notifier.ready("config reload failed; the running config stays");
            }
        }
    }
    notifier.stopping();
    tracing::info!("stopping: letting in-flight steps finish");
    let _ = stop_tx.send(true);
    // Steps write atomically, so a step abandoned after the grace period leaves at most a
    // dot-named temp file beside the real one, never a half-written file. One deadline for
    // both, so that the whole stop is bounded by it.
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    if tokio::time::timeout_at(deadline, scheduler).await.is_err() {
        // In-flight applies end at their next safe point; statuses already changed are kept.
        let engine = daemon.engine();
        engine.abandon();
        let _ = tokio::time::timeout(EXIT_GRACE, engine.flush()).await;
    }
    let _ = server.stop.send(true);
    let _ = tokio::time::timeout_at(deadline, server.task).await;
    if let Some(receivers_server) = receivers_server {
        let _ = tokio::time::timeout_at(deadline, receivers_server).await;
    }
    tracing::info!("stopped");
    Ok(0)
}

/// What [`receivers`] prepares for the receivers' server.
type ReceiversToServe = (
    std::sync::Arc<crate::api::receivers::Receivers>,
    tokio::net::TcpListener,
    crate::config::ReceiverSettings,
);

/// The webhook receivers, when configured: their secrets read (a hook whose secret cannot be
/// read stops the start, as an unreadable API token does: its path would be unknown) and
/// their listener bound.
async fn receivers(engine: &std::sync::Arc<Engine>) -> anyhow::Result<Option<ReceiversToServe>> {
    let Some(settings) = engine.settings().events.receivers.clone() else {
        return Ok(None);
    };
    let receivers = crate::api::receivers::Receivers::prepare(&settings).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {} (receivers.listen)", settings.listen))?;
    let local = listener.local_addr()?;
    engine.set_hooks(receivers.statuses());
    tracing::info!(listen = %local, hooks = settings.hooks.len(), "webhook receivers listening");
    Ok(Some((std::sync::Arc::new(receivers), listener, settings)))
}

/// The API server: its address, its stop switch and its task.
struct Server {
    local: std::net::SocketAddr,
    open: bool,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn start(
        daemon: &Arc<Daemon>,
        listener: tokio::net::TcpListener,
        options: crate::api::ApiOptions,
    ) -> Server {
        // An address the listener could not report is still served; it only shows as 0.0.0.0.
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let open = options.token.is_none() && !local.ip().is_loopback();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(crate::api::serve(
            daemon.clone(),
            listener,
            options,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        Server {
            local,
            open,
            stop,
            task,
        }
    }

    fn warn_if_open(&self) {
        if self.open {
            tracing::warn!(
                listen = %self.local,
                "the API listens beyond loopback without a token: anyone who can reach it can \
                 download every artifact and trigger reconciles; set server.token or \
                 server.tokenFile"
            );
        }
    }

    /// The server section changed: serve the new address and options. A new address is bound
    /// before the old server stops, so a failure to bind keeps the old one serving; the same
    /// address can only be bound once the old server let go of it.
    async fn replace(self, daemon: &Arc<Daemon>) -> Server {
        let settings = daemon.engine().settings().clone();
        let options = crate::api::ApiOptions::from_settings(&settings.server);
        if let Some(token) = &options.token {
            if let Err(e) = token.current().await {
                tracing::error!(
                    "the new server section cannot be used ({e}); the API keeps its old settings"
                );
                return self;
            }
        }
        let listener = if settings.listen == self.local {
            self.shut_down().await;
            match tokio::net::TcpListener::bind(settings.listen).await {
                Ok(listener) => listener,
                Err(e) => {
                    // Nothing listens now: say so loudly; the next reload may fix it.
                    tracing::error!(listen = %settings.listen, "cannot listen again on {}: {e}", settings.listen);
                    return Server::stopped(settings.listen);
                }
            }
        } else {
            match tokio::net::TcpListener::bind(settings.listen).await {
                Ok(listener) => {
                    self.shut_down().await;
                    listener
                }
                Err(e) => {
                    tracing::error!(
                        "cannot listen on {}: {e}; the API stays on {}",
                        settings.listen,
                        self.local
                    );
                    return self;
                }
            }
        };
        let server = Server::start(daemon, listener, options);
        tracing::info!(listen = %server.local, "the API now listens on {}", server.local);
        server.warn_if_open();
        server
    }

    async fn shut_down(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// No server (binding failed); `stop` and `task` do nothing.
    fn stopped(local: std::net::SocketAddr) -> Server {
        Server {
            local,
            open: false,
            stop: watch::Sender::new(true),
            task: tokio::spawn(async { Ok(()) }),
        }
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
