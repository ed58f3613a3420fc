//! `gitopsd objects NAME` and `gitopsd diff NAME`: a kustomization's objects in the cluster
//! with their live status (Azure's `deployed-object list`), and what applying its current
//! artifact would change (`flux diff kustomization`, `kubectl diff`).
//!
//! Both work from the config file and the state dir without the daemon (they read the state
//! file and render in a temporary directory), so they also answer when it is down. NAME is
//! `KUSTOMIZATION` or `CONFIGURATION/KUSTOMIZATION`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};

use crate::apply::kubernetes::health::Health;
use crate::apply::{AnyTarget, ClusterState, ObjectAction};
use crate::config::{Configuration, Kustomization, Settings};

/// `diff`'s exit code when something failed (kubectl's convention: 0 no change, 1 changes,
/// more than 1 an error).
const DIFF_FAILED: i32 = 3;

fn find<'a>(
    settings: &'a Settings,
    name: &str,
    namespace: Option<&str>,
) -> anyhow::Result<(&'a Configuration, &'a Kustomization)> {
    let (configuration, kustomization) = match name.split_once('/') {
        Some((c, k)) => (Some(c), k),
        None => (None, name),
    };
    let found: Vec<_> = settings
        .configurations
        .iter()
        .filter(|c| configuration.is_none_or(|n| c.name == n))
        .filter(|c| namespace.is_none_or(|ns| c.namespace == ns))
        .flat_map(|c| c.kustomizations.iter().map(move |k| (c, k)))
        .filter(|(_, k)| k.name == kustomization)
        .collect();
    match found.as_slice() {
        [] => bail!("no kustomization named {name} in the configuration file"),
        [one] => Ok(*one),
        _ => bail!(
            "several kustomizations are named {name}; name one as CONFIGURATION/KUSTOMIZATION or \
             give --namespace"
        ),
    }
}

fn load(config: &Path) -> Result<Settings, i32> {
    crate::config::load(config).map_err(|diagnostics| {
        eprintln!("{diagnostics}");
        super::check::INVALID_CONFIG
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn cluster_target(
    settings: &Settings,
    clusters: &Arc<ClusterState>,
    c: &Configuration,
    k: &Kustomization,
) -> anyhow::Result<crate::apply::KubernetesTarget> {
    let owner = crate::reconcile::owner(c, k);
    match crate::apply::build(&k.target, &settings.state_dir, &owner, clusters) {
        AnyTarget::Kubernetes(t) => Ok(*t),
        AnyTarget::Directory(d) => Err(anyhow!(
            "kustomization {} renders into {}, not to a cluster",
            k.name,
            crate::apply::Target::describe(&d)
        )),
    }
}

/// The state file as the daemon last wrote it (an empty state when there is none).
fn read_state(settings: &Settings) -> anyhow::Result<crate::state::State> {
    let path = settings.state_dir.join("state.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("cannot read {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

pub fn objects(
    config: &Path,
    name: &str,
    namespace: Option<&str>,
    output: super::Output,
) -> anyhow::Result<i32> {
    let settings = match load(config) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let (c, k) = find(&settings, name, namespace)?;
    let clusters = Arc::default();
    let target = cluster_target(&settings, &clusters, c, k)?;
    let listed = runtime()?.block_on(async {
        let inventory = target.cluster_inventory().await?;
        target.describe_objects(&inventory).await
    })?;
    let rows: Vec<(String, String, String, String, String)> = listed
        .iter()
        .map(|(id, health)| {
            let (status, message) = match health {
                None => ("NotFound".to_string(), String::new()),
                Some(Health::Current) => ("Current".to_string(), String::new()),
                Some(Health::InProgress(why)) => ("InProgress".to_string(), why.clone()),
                Some(Health::Failed(why)) => ("Failed".to_string(), why.clone()),
                Some(Health::Terminating) => ("Terminating".to_string(), String::new()),
            };
            (
                id.kind.clone(),
                id.namespace.clone(),
                id.name.clone(),
                status,
                message,
            )
        })
        .collect();
    match output {
        super::Output::Json | super::Output::Yaml => {
            let json: Vec<serde_json::Value> = listed
                .iter()
                .zip(&rows)
                .map(|((id, _), (_, _, _, status, message))| {
                    serde_json::json!({
                        "apiVersion": id.api_version(),
                        "kind": id.kind,
                        "namespace": id.namespace,
                        "name": id.name,
                        "status": status,
                        "message": message,
                    })
                })
                .collect();
            if output == super::Output::Yaml {
                print!("{}", serde_saphyr::to_string(&json)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&json)?);
            }
        }
        super::Output::Text => {
            let header = ("KIND", "NAMESPACE", "NAME", "STATUS", "MESSAGE");
            let width = |f: fn(&(String, String, String, String, String)) -> usize, h: &str| {
                rows.iter().map(f).max().unwrap_or(0).max(h.len())
            };
            let (w0, w1, w2, w3) = (
                width(|r| r.0.len(), header.0),
                width(|r| r.1.len(), header.1),
                width(|r| r.2.len(), header.2),
                width(|r| r.3.len(), header.3),
            );
            println!(
                "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
                header.0, header.1, header.2, header.3, header.4
            );
            for r in &rows {
                println!(
                    "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
                    r.0, r.1, r.2, r.3, r.4
                );
            }
        }
    }
    Ok(0)
}

pub fn diff(config: &Path, name: &str, namespace: Option<&str>) -> anyhow::Result<i32> {
    let settings = match load(config) {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };
    let outcome = (|| {
        let (c, k) = find(&settings, name, namespace)?;
        let state = read_state(&settings)?;
        let clusters: Arc<ClusterState> = Arc::default();
        let target = cluster_target(&settings, &clusters, c, k)?;
        runtime()?.block_on(async {
            let rendered = crate::reconcile::preview(&settings, &state, &clusters, c, k).await?;
            anyhow::Ok(target.diff(&rendered).await?)
        })
    })();
    let differences = match outcome {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {}", crate::escape::control(&format!("{e:#}")));
            return Ok(DIFF_FAILED);
        }
    };
    for d in &differences {
        match d.action {
            ObjectAction::Created => println!("+ {} (created)", d.id),
            _ => println!("~ {} (configured)", d.id),
        }
        for change in &d.changes {
            println!("    {change}");
        }
    }
    Ok(if differences.is_empty() { 0 } else { 1 })
}
