//! Command-line interface: one file per subcommand.

pub mod bench;
mod check;
mod client;
mod log;
pub mod notify;
mod objects;
mod run;
mod show_key;
mod status;
mod sync;
mod watch;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// gitopsd keeps a node in sync with git: it fetches each configured source on its interval,
/// packs every new revision into a reproducible tar.gz artifact, serves it over HTTP,
/// renders each kustomization with kustomize and writes the result to its target.
#[derive(Parser, Debug)]
#[command(name = "gitopsd", version, about, long_about = None)]
#[command(
    after_help = "Start with: gitopsd check --config config/example.yaml\n\
                        then:       gitopsd run --config config/example.yaml --once"
)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon (or one pass with --once).
    Run {
        /// The YAML configuration file.
        #[arg(short, long, env = "GITOPSD_CONFIG")]
        config: PathBuf,
        /// Fetch, pack and render everything once, then exit: 0 when everything succeeded.
        #[arg(long)]
        once: bool,
        /// With --once: print the result as text or JSON.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Validate a configuration: exit 0 when valid, 2 with every problem (file:line:col).
    Check {
        #[arg(short, long, env = "GITOPSD_CONFIG")]
        config: PathBuf,
    },
    /// Show what the running daemon is doing: a table, or the status document as JSON/YAML.
    Status {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Print it again every 2 seconds, until interrupted.
        #[arg(short, long)]
        watch: bool,
    },
    /// Measure sync throughput against the git CLI and tar | gzip on generated data.
    Bench(bench::BenchArgs),
    /// Print the public SSH key gitopsd generated for a configuration (add it as a deploy key).
    ShowKey {
        /// The configuration's name.
        name: String,
        #[arg(short, long, env = "GITOPSD_CONFIG")]
        config: PathBuf,
        /// The configuration's namespace, when several share the name.
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// List a kustomization's objects in the cluster with their live status.
    Objects {
        /// KUSTOMIZATION, or CONFIGURATION/KUSTOMIZATION.
        name: String,
        #[arg(short, long, env = "GITOPSD_CONFIG")]
        config: PathBuf,
        /// The configuration's namespace, when several share the name.
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show what applying a kustomization's current artifact would change (server-side
    /// dry-run): exit 0 when nothing, 1 when something would change, 3 on error.
    Diff {
        /// KUSTOMIZATION, or CONFIGURATION/KUSTOMIZATION.
        name: String,
        #[arg(short, long, env = "GITOPSD_CONFIG")]
        config: PathBuf,
        /// The configuration's namespace, when several share the name.
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Print the daemon's recent events (what alerts are made of); `--watch` keeps printing
    /// new ones.
    Events {
        /// Keep printing new events as they come.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        server: ServerArgs,
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Ask the running daemon to sync a configuration now.
    Reconcile {
        /// The configuration: NAME when no other namespace has one of that name, else
        /// NAMESPACE/NAME.
        name: String,
        /// The configuration's namespace, when several share the name.
        #[arg(short, long)]
        namespace: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Sync one repository into a directory from flags alone (the sidecar's job, as
    /// git-sync does); every flag is also a GITOPSD_* variable.
    Sync(Box<sync::SyncArgs>),
    /// Stop syncing a configuration (or one kustomization of it) until `gitopsd resume`;
    /// kept across restarts.
    Suspend(SuspendArgs),
    /// Sync again what `gitopsd suspend` stopped (a `suspend: true` in the config still wins).
    Resume(SuspendArgs),
}

#[derive(clap::Args, Debug)]
pub struct SuspendArgs {
    /// CONFIGURATION, or CONFIGURATION/KUSTOMIZATION for one kustomization.
    pub name: String,
    /// The configuration's namespace, when several share the name.
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// How to reach the daemon: its config file (to read `server.listen`) or an address.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Read the daemon's listen address from this configuration.
    #[arg(short, long, env = "GITOPSD_CONFIG")]
    pub config: Option<PathBuf>,
    /// The daemon's address, e.g. 127.0.0.1:9090 (default when no config is given).
    #[arg(long)]
    pub server: Option<String>,
    /// The API token (`server.token`), when the daemon requires one. Default: the token
    /// in --config (`server.token` or `server.tokenFile`).
    #[arg(
        long,
        env = "GITOPSD_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file holding the API token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Run the CLI; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run {
            config,
            once,
            output,
        } => run::run(&config, once, output),
        Command::Check { config } => check::check(&config),
        Command::Status {
            server,
            output,
            watch,
        } => client::status(&server, output, watch),
        Command::Events {
            watch,
            server,
            output,
        } => client::events(&server, watch, output),
        Command::Reconcile {
            name,
            namespace,
            server,
        } => client::reconcile(&server, &name, namespace.as_deref()),
        Command::Sync(args) => sync::sync(&args),
        Command::Suspend(args) => client::suspend(&args, true),
        Command::Resume(args) => client::suspend(&args, false),
        Command::Bench(args) => bench::bench(&args),
        Command::ShowKey {
            name,
            config,
            namespace,
        } => show_key::show_key(&config, &name, namespace.as_deref()),
        Command::Objects {
            name,
            config,
            namespace,
            output,
        } => objects::objects(&config, &name, namespace.as_deref(), output),
        Command::Diff {
            name,
            config,
            namespace,
        } => objects::diff(&config, &name, namespace.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let message = format!("{e:#}");
            eprintln!("error: {}", crate::escape::control(&message));
            1
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // kube's client logs every failed request at error level, before gitopsd says the same
    // in one line naming the kustomization: its own line is left out.
    let filter = EnvFilter::try_from_env("GITOPSD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client::client::builder=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        // The journal adds its own timestamps and reads the priority from a prefix.
        LogFormat::Text if log::stderr_is_journal() => builder
            .with_ansi(false)
            .fmt_fields(log::EscapedFields)
            .event_format(log::JournalFormat)
            .try_init(),
        LogFormat::Text => builder.fmt_fields(log::EscapedFields).try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
