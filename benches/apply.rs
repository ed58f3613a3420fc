//! The Kubernetes target against a real API server (etcd + kube-apiserver from the test
//! harness, tests/integration/support/kube.rs), next to `kubectl apply --server-side`.
//!
//! - `ssa`: one kustomization of 1,000 objects (ConfigMaps, Deployments, Services, a CRD with
//!   its custom resources). The first apply and the no-change apply, gitopsd's target in this
//!   process against `kubectl apply --server-side --force-conflicts -f` of the same rendered
//!   file, each into a namespace of its own; then the same end to end: `gitopsd run --once`
//!   (fetch, render, apply, in a new process each time) against `kubectl kustomize | kubectl
//!   apply --server-side -f -`.
//! - `fleet`: Flux's own benchmark shape, 1,000 kustomizations of 3 objects from one git
//!   source: `gitopsd run --once` for the first reconcile and again for a no-change pass,
//!   wall time and peak RSS.
//!
//! Services are headless (`clusterIP: None`): the test API server's service range holds a few
//! hundred addresses, and allocating them is not what is measured.
//!
//! `cargo bench --bench apply` runs both (`-- fleet` runs the scenarios whose name contains an
//! argument); `GITOPSD_BENCH_RUNS` sets the repetitions of the no-change figures (median,
//! default 5). Under `cargo test` (no `--bench`) each scenario runs once on 40 objects and 20
//! kustomizations, and every apply is checked: the first creates every object, the second
//! leaves every one unchanged.

// The integration tests' harness; a bench uses only part of it.
#[path = "../tests/integration/support/mod.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use gitopsd::apply::kubernetes::{ClusterSettings, Owner, Validation};
use gitopsd::apply::{ApplyContext, ClusterState, KubernetesTarget, ObjectAction, Target as _};
use gitopsd::cli::bench::{measure, report};
use gitopsd::config::{KubeConnection, KubernetesSettings};
use gitopsd::render::Rendered;
use support::kube::KubeCluster;
use support::{gitopsd_bin, peak_rss_kib, Repo};

struct Settings {
    objects: usize,
    kustomizations: usize,
    runs: usize,
}

const GROUP: &str = "bench.gitopsd.io";

fn crd() -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{GROUP}\nspec:\n  group: {GROUP}\n  scope: Namespaced\n  names: {{ plural: widgets, singular: widget, kind: Widget, listKind: WidgetList }}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n          type: object\n          x-kubernetes-preserve-unknown-fields: true\n"
    )
}

/// `n` objects in `ns`: the CRD, a tenth Widgets, and the rest split between ConfigMaps,
/// Deployments and Services.
fn objects(ns: &str, n: usize) -> String {
    let mut docs = vec![crd()];
    let widgets = n / 10;
    let rest = n - 1 - widgets;
    for i in 0..widgets {
        docs.push(format!(
            "apiVersion: {GROUP}/v1\nkind: Widget\nmetadata:\n  name: w{i}\n  namespace: {ns}\nspec:\n  size: {i}\n"
        ));
    }
    for i in 0..rest {
        docs.push(match i % 3 {
            0 => format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\n  namespace: {ns}\ndata:\n  key: value-{i}\n"
            ),
            1 => format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d{i}\n  namespace: {ns}\nspec:\n  replicas: 1\n  selector: {{ matchLabels: {{ app: d{i} }} }}\n  template:\n    metadata: {{ labels: {{ app: d{i} }} }}\n    spec:\n      containers: [{{ name: app, image: registry.invalid/app:1, ports: [{{ containerPort: 80 }}] }}]\n"
            ),
            _ => format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: s{i}\n  namespace: {ns}\nspec:\n  clusterIP: None\n  selector: {{ app: s{i} }}\n  ports: [{{ port: 80, targetPort: 80 }}]\n"
            ),
        });
    }
    docs.join("---\n")
}

fn kubectl(cluster: &KubeCluster) -> Command {
    let mut command = Command::new("kubectl");
    command
        .arg("--kubeconfig")
        .arg(cluster.admin_kubeconfig())
        .stdout(Stdio::null());
    command
}

fn sh(mut command: Command) -> anyhow::Result<()> {
    let output = command.stderr(Stdio::piped()).output()?;
    ensure!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

fn ssa(work: &Path, settings: &Settings) -> anyhow::Result<()> {
    let cluster = KubeCluster::start();
    // The CRD exists before either contender runs: kubectl cannot apply a custom resource in
    // the same call that creates its CRD.
    let setup = work.join("crd.yaml");
    std::fs::write(&setup, crd())?;
    sh({
        let mut c = kubectl(&cluster);
        c.args(["apply", "--server-side", "-f"]).arg(&setup);
        c
    })?;
    sh({
        let mut c = kubectl(&cluster);
        c.args(["wait", "--for=condition=Established", "--timeout=60s"])
            .arg(format!("crd/widgets.{GROUP}"));
        c
    })?;

    // gitopsd's target, in this process.
    let ns = cluster.create_namespace("gitopsd");
    let rendered = Rendered::from_yaml(objects(&ns, settings.objects))?;
    let runtime = tokio::runtime::Runtime::new()?;
    let target = KubernetesTarget::new(
        ClusterSettings {
            cluster: KubernetesSettings {
                connection: KubeConnection::Kubeconfig(cluster.admin_kubeconfig()),
                context: None,
            },
            service_account: None,
            namespaced_scope: false,
            validation: Validation::None,
            health_checks: vec![],
        },
        Owner {
            namespace: ns.clone(),
            configuration: "bench".into(),
            kustomization: "ssa".into(),
        },
        Arc::new(ClusterState::default()),
    );
    let ctx = ApplyContext::new(Duration::from_secs(600), Default::default());
    let apply = |expect: ObjectAction| -> anyhow::Result<()> {
        let report = runtime.block_on(target.apply(&rendered, &Default::default(), &ctx))?;
        let wrong = report
            .objects
            .iter()
            .filter(|o| o.action != expect && o.id.kind != "CustomResourceDefinition")
            .count();
        ensure!(wrong == 0, "{wrong} objects were not {expect:?}");
        Ok(())
    };
    let started = Instant::now();
    apply(ObjectAction::Created)?;
    let ours_first = started.elapsed();
    let ours_again = measure(settings.runs, || apply(ObjectAction::Unchanged))?;

    // kubectl, the same objects in another namespace.
    let kns = cluster.create_namespace("kubectl");
    let file = work.join("objects.yaml");
    std::fs::write(&file, objects(&kns, settings.objects))?;
    let kubectl_apply = || {
        sh({
            let mut c = kubectl(&cluster);
            c.args(["apply", "--server-side", "--force-conflicts", "-f"])
                .arg(&file);
            c
        })
    };
    let started = Instant::now();
    kubectl_apply()?;
    let theirs_first = started.elapsed();
    let theirs_again = measure(settings.runs, kubectl_apply)?;
    let n = settings.objects;
    report(
        &format!("ssa {n} objects, first apply"),
        ours_first,
        "kubectl apply --server-side",
        theirs_first,
    );
    report(
        &format!("ssa {n} objects, no-change apply"),
        ours_again,
        "kubectl apply --server-side",
        theirs_again,
    );

    // End to end: what a user waits for, render included.
    let repo = Repo::new();
    let ens = cluster.create_namespace("e2e");
    repo.write("app/objects.yaml", objects(&ens, settings.objects));
    repo.write("app/kustomization.yaml", "resources: [objects.yaml]\n");
    repo.commit("objects");
    repo.push_all();
    let config = work.join("gitopsd.yaml");
    std::fs::write(
        &config,
        format!(
            "stateDir: {state}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nkubernetes: {{ kubeconfig: \"{kubeconfig}\" }}\nconfigurations:\n  - name: bench\n    namespace: {ens}\n    source: {{ kind: git, url: \"{url}\", ref: {{ branch: main }} }}\n    kustomizations: [{{ name: app, path: ./app }}]\n",
            state = work.join("state").display(),
            port = support::free_port(),
            kubeconfig = cluster.admin_kubeconfig().display(),
            url = repo.bare().file_url(),
        ),
    )?;
    let run_once = || {
        sh({
            let mut c = Command::new(gitopsd_bin());
            c.args(["run", "--once", "--config"])
                .arg(&config)
                .env("GITOPSD_LOG", "warn")
                .stdout(Stdio::null());
            c
        })
    };
    let started = Instant::now();
    run_once()?;
    let ours_e2e_first = started.elapsed();
    let ours_e2e_again = measure(settings.runs, run_once)?;
    let kns2 = cluster.create_namespace("kubectl-e2e");
    let dir = work.join("kubectl-e2e");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("objects.yaml"), objects(&kns2, settings.objects))?;
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources: [objects.yaml]\n",
    )?;
    let kubectl_e2e = || {
        sh({
            let mut c = Command::new("sh");
            c.arg("-c").arg(format!(
                "kubectl kustomize {dir} | kubectl --kubeconfig {k} apply --server-side --force-conflicts -f - >/dev/null",
                dir = dir.display(),
                k = cluster.admin_kubeconfig().display()
            ));
            c
        })
    };
    let started = Instant::now();
    kubectl_e2e()?;
    let theirs_e2e_first = started.elapsed();
    let theirs_e2e_again = measure(settings.runs, kubectl_e2e)?;
    report(
        &format!("end to end {n} objects, first"),
        ours_e2e_first,
        "kubectl kustomize | apply",
        theirs_e2e_first,
    );
    report(
        &format!("end to end {n} objects, no change"),
        ours_e2e_again,
        "kubectl kustomize | apply",
        theirs_e2e_again,
    );
    Ok(())
}

fn fleet(work: &Path, settings: &Settings) -> anyhow::Result<()> {
    let cluster = KubeCluster::start();
    let ns = cluster.create_namespace("fleet");
    let repo = Repo::new();
    let mut kustomizations = String::new();
    for i in 0..settings.kustomizations {
        repo.write(
            format!("k{i}/objects.yaml"),
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k{i}-a\n  namespace: {ns}\ndata:\n  i: \"{i}\"\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k{i}-b\n  namespace: {ns}\ndata:\n  i: \"{i}\"\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: k{i}\n  namespace: {ns}\nspec:\n  clusterIP: None\n  selector: {{ app: k{i} }}\n  ports: [{{ port: 80 }}]\n"
            ),
        );
        kustomizations.push_str(&format!(
            "      - {{ name: k{i}, path: ./k{i}, prune: true }}\n"
        ));
    }
    repo.commit("fleet");
    repo.push_all();
    let config = work.join("gitopsd.yaml");
    std::fs::write(
        &config,
        format!(
            "stateDir: {state}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nkubernetes: {{ kubeconfig: \"{kubeconfig}\" }}\nconfigurations:\n  - name: fleet\n    namespace: {ns}\n    source: {{ kind: git, url: \"{url}\", ref: {{ branch: main }} }}\n    kustomizations:\n{kustomizations}",
            state = work.join("state").display(),
            port = support::free_port(),
            kubeconfig = cluster.admin_kubeconfig().display(),
            url = repo.bare().file_url(),
        ),
    )?;
    let run = || -> anyhow::Result<(Duration, i64, serde_json::Value)> {
        let mut c = Command::new(gitopsd_bin());
        c.args(["run", "--once", "-o", "json", "--config"])
            .arg(&config)
            .env("GITOPSD_LOG", "warn");
        let started = Instant::now();
        let (peak, output) = peak_rss_kib(c);
        let elapsed = started.elapsed();
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).context("report")?;
        let errors: Vec<String> = report["kustomizations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["error"].as_str().map(|e| format!("{}: {e}", k["name"])))
            .take(3)
            .collect();
        ensure!(
            output.status.success(),
            "gitopsd run --once failed: {}{}",
            String::from_utf8_lossy(&output.stderr),
            errors.join("\n")
        );
        Ok((elapsed, peak, report))
    };
    let count = |report: &serde_json::Value, action: &str| -> usize {
        report["kustomizations"]
            .as_array()
            .map(|ks| {
                ks.iter()
                    .flat_map(|k| k["applied"].as_array().cloned().unwrap_or_default())
                    .filter(|o| o["action"] == action)
                    .count()
            })
            .unwrap_or(0)
    };
    let (first, first_peak, first_report) = run()?;
    let objects = settings.kustomizations * 3;
    ensure!(
        count(&first_report, "created") == objects,
        "first pass did not create every object"
    );
    let (again, again_peak, again_report) = run()?;
    ensure!(
        count(&again_report, "unchanged") == objects,
        "the no-change pass changed objects"
    );
    println!(
        "fleet {} kustomizations × 3 objects: first reconcile {:.1} s, peak RSS {} MiB; no-change pass {:.1} s, peak RSS {} MiB",
        settings.kustomizations,
        first.as_secs_f64(),
        first_peak / 1024,
        again.as_secs_f64(),
        again_peak / 1024
    );
    Ok(())
}

type Scenario = fn(&Path, &Settings) -> anyhow::Result<()>;
const SCENARIOS: [(&str, Scenario); 2] = [("ssa", ssa), ("fleet", fleet)];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let settings = if bench {
        Settings {
            objects: 1000,
            kustomizations: 1000,
            runs: std::env::var("GITOPSD_BENCH_RUNS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(5),
        }
    } else {
        Settings {
            objects: 40,
            kustomizations: 20,
            runs: 1,
        }
    };
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let work = tempfile::tempdir().unwrap();
    for (name, scenario) in SCENARIOS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        scenario(&dir, &settings).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    }
    if !bench {
        println!("apply: smoke run ok");
    }
}
