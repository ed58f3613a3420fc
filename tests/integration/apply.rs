//! The Kubernetes target against a real cluster (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and a kwok node): server-side apply in stages, per-object results, inventory
//! and prune, force, wait, dependsOn, validation, postBuild, scope and impersonation, drift,
//! and faults. Each test works in namespaces of its own on one shared cluster.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::kube::KubeCluster;
use crate::support::{describe, free_port, gitopsd_bin, Repo};

fn cluster() -> &'static KubeCluster {
    KubeCluster::shared_with_workers()
}

/// A repository, a config with one configuration `web` in namespace `ns` applying to the
/// shared cluster, and a state dir.
struct Setup {
    dir: tempfile::TempDir,
    repo: Repo,
    ns: String,
    /// The admin API's port.
    port: u16,
    /// The cluster's admin kubeconfig.
    kubeconfig: PathBuf,
}

impl Setup {
    fn new(prefix: &str) -> Setup {
        Setup::on(cluster(), prefix)
    }

    fn on(cluster: &KubeCluster, prefix: &str) -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            repo: Repo::new(),
            ns: cluster.create_namespace(prefix),
            port: free_port(),
            kubeconfig: cluster.admin_kubeconfig(),
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("gitopsd.yaml")
    }

    /// Writes the config: `kustomizations` are YAML list items indented for their key;
    /// `extra` goes into the configuration (e.g. `scope: namespace`).
    fn configure(&self, extra: &str, kustomizations: &str) {
        let yaml = format!(
            r#"stateDir: ./state
server: {{ listen: "127.0.0.1:{port}" }}
kubernetes: {{ kubeconfig: "{kubeconfig}" }}
configurations:
  - name: web
    namespace: {ns}
{extra}    source: {{ kind: git, url: "{url}", ref: {{ branch: main }}, interval: 2s }}
    kustomizations:
{kustomizations}"#,
            port = self.port,
            kubeconfig = self.kubeconfig.display(),
            ns = self.ns,
            url = self.repo.bare().file_url(),
        );
        std::fs::write(self.config_path(), yaml).unwrap();
    }

    /// Commits `files` (path, content) on main and pushes.
    fn commit(&self, files: &[(&str, &str)]) {
        for (path, content) in files {
            self.repo.write(path, content);
        }
        self.repo.commit("change");
        self.repo.push_all();
    }

    fn gitopsd(&self) -> Command {
        let mut command = Command::new(gitopsd_bin());
        command
            .current_dir(self.dir.path())
            .env("GITOPSD_KUSTOMIZE", "kubectl")
            .env("RUST_LOG", "gitopsd=info")
            .stdin(Stdio::null());
        command
    }

    /// `run --once -o json`: the exit code, the report and the whole output.
    fn run_once(&self) -> (i32, Value, Output) {
        let output = self
            .gitopsd()
            .args(["run", "--once", "-o", "json", "--config"])
            .arg(self.config_path())
            .output()
            .expect("run gitopsd");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
        (output.status.code().unwrap_or(-1), report, output)
    }

    /// `run --once` that must succeed: its report.
    fn run_ok(&self) -> Value {
        let (code, report, output) = self.run_once();
        assert_eq!(code, 0, "{}", describe(&output));
        report
    }

    /// `run --once` that must fail: its report.
    fn run_failing(&self) -> Value {
        let (code, report, output) = self.run_once();
        assert_ne!(code, 0, "{}", describe(&output));
        report
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The state file, parsed.
    fn state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.state_dir().join("state.json")).unwrap())
            .unwrap()
    }
}

/// The report of kustomization `name`.
fn kustomization<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["kustomizations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no kustomization {name} in {report:#}"))
}

/// `Kind/name` → action, from a kustomization's report.
fn actions(k: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = k["applied"]
        .as_array()
        .unwrap_or(&vec![])
        .iter()
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["id"]["kind"].as_str().unwrap(),
                    o["id"]["name"].as_str().unwrap()
                ),
                o["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn action_of(k: &Value, kind_name: &str) -> String {
    actions(k)
        .into_iter()
        .find(|(o, _)| o == kind_name)
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("no {kind_name} in {k:#}"))
}

fn config_map(name: &str, ns: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\ndata:\n  key: \"{value}\"\n"
    )
}

fn resource_version(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

fn crd(group: &str) -> String {
    format!(
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  scope: Namespaced
  names: {{ plural: widgets, singular: widget, kind: Widget, listKind: WidgetList }}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {{ type: integer }}
"#
    )
}

#[test]
fn a_crd_and_its_resource_apply_in_one_pass_then_nothing_is_rewritten() {
    let s = Setup::new("stages");
    let ns = &s.ns;
    let group = format!("{ns}.example.com");
    s.commit(&[
        ("app/kustomization.yaml", "resources: [crd.yaml, widget.yaml, cm.yaml, team-ns.yaml]\n"),
        ("app/crd.yaml", &crd(&group)),
        (
            "app/widget.yaml",
            &format!("apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: {ns}\nspec:\n  size: 3\n"),
        ),
        ("app/cm.yaml", &config_map("settings", ns, "one")),
        ("app/team-ns.yaml", &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}-team\n")),
    ]);
    s.configure("", "      - { name: app, path: ./app }\n");

    let report = s.run_ok();
    let k = kustomization(&report, "app");
    assert_eq!(
        actions(k),
        [
            ("ConfigMap/settings".to_string(), "created".to_string()),
            (
                "CustomResourceDefinition/".to_string() + &format!("widgets.{group}"),
                "created".into()
            ),
            (format!("Namespace/{ns}-team"), "created".into()),
            ("Widget/w1".into(), "created".into()),
        ]
    );
    let c = cluster();
    let widget = c
        .get_json(&format!("{group}/v1"), "Widget", Some(ns), "w1")
        .unwrap();
    assert_eq!(widget["spec"]["size"], 3);
    assert_eq!(
        widget["metadata"]["labels"]["gitopsd.io/kustomization"],
        "app"
    );
    assert_eq!(
        widget["metadata"]["labels"]["gitopsd.io/configuration"],
        "web"
    );
    let cm = c.get_json("v1", "ConfigMap", Some(ns), "settings").unwrap();
    let versions: Vec<String> = [&cm, &widget].iter().map(|o| resource_version(o)).collect();

    // A second pass (a new process: nothing remembered) changes nothing on the server.
    let report = s.run_ok();
    let k = kustomization(&report, "app");
    assert!(actions(k).iter().all(|(_, a)| a == "unchanged"), "{k:#}");
    let cm = c.get_json("v1", "ConfigMap", Some(ns), "settings").unwrap();
    let widget = c
        .get_json(&format!("{group}/v1"), "Widget", Some(ns), "w1")
        .unwrap();
    assert_eq!(
        vec![resource_version(&cm), resource_version(&widget)],
        versions
    );

    // A change to one object configures that one only.
    s.commit(&[("app/cm.yaml", &config_map("settings", ns, "two"))]);
    let report = s.run_ok();
    let k = kustomization(&report, "app");
    assert_eq!(action_of(k, "ConfigMap/settings"), "configured");
    assert_eq!(action_of(k, "Widget/w1"), "unchanged");
    let cm = c.get_json("v1", "ConfigMap", Some(ns), "settings").unwrap();
    assert_eq!(cm["data"]["key"], "two");
    assert_eq!(
        cm["metadata"]["managedFields"][0]["manager"], "gitopsd",
        "{cm:#}"
    );
    // The inventory is in the cluster too.
    let inventory = c
        .get_json("v1", "ConfigMap", Some(ns), "gitopsd-inventory.web.app")
        .expect("inventory ConfigMap");
    let entries = inventory["data"]["inventory"].as_str().unwrap();
    assert!(
        entries.contains(&format!("{ns}_settings__ConfigMap v1")),
        "{entries}"
    );
    assert!(
        entries.contains(&format!("{ns}_w1_{group}_Widget v1")),
        "{entries}"
    );
}

fn config_map_annotated(name: &str, ns: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations:\n    {annotations}\ndata:\n  key: v\n"
    )
}

fn exists(ns: &str, kind_api: (&str, &str), name: &str) -> bool {
    cluster()
        .get_json(kind_api.0, kind_api.1, Some(ns), name)
        .is_some_and(|o| o["metadata"]["deletionTimestamp"].is_null())
}

const CM: (&str, &str) = ("v1", "ConfigMap");

#[test]
fn prune_deletes_what_left_but_not_opted_out_objects_nor_those_owned_elsewhere() {
    let s = Setup::new("prune");
    let ns = &s.ns;
    s.commit(&[
        ("app/a.yaml", &config_map("a", ns, "1")),
        (
            "app/b.yaml",
            &config_map_annotated("b", ns, "kustomize.toolkit.fluxcd.io/prune: disabled"),
        ),
        ("app/c.yaml", &config_map("c", ns, "1")),
        ("app/d.yaml", &config_map("d", ns, "1")),
        ("other/keep.yaml", &config_map("keep", ns, "1")),
    ]);
    s.configure(
        "",
        "      - { name: app, path: ./app, prune: true, dependsOn: [other] }\n      - { name: other, path: ./other, prune: true }\n",
    );
    s.run_ok();
    for name in ["a", "b", "c", "d", "keep"] {
        assert!(exists(ns, CM, name), "{name} was not applied");
    }

    // a and b leave the repository; c moves to `other` (which applies first).
    s.repo.remove("app/a.yaml");
    s.repo.remove("app/b.yaml");
    s.repo.remove("app/c.yaml");
    s.commit(&[("other/c.yaml", &config_map("c", ns, "1"))]);
    let report = s.run_ok();
    let app = kustomization(&report, "app");
    assert_eq!(action_of(app, "ConfigMap/a"), "pruned");
    assert!(!exists(ns, CM, "a"), "a was not pruned");
    assert!(exists(ns, CM, "b"), "b is annotated prune: disabled");
    let c = cluster()
        .get_json("v1", "ConfigMap", Some(ns), "c")
        .unwrap();
    assert_eq!(c["metadata"]["labels"]["gitopsd.io/kustomization"], "other");
    assert!(exists(ns, CM, "d") && exists(ns, CM, "keep"));
    // Only `a` was pruned.
    let pruned: Vec<_> = actions(app)
        .into_iter()
        .filter(|(_, a)| a == "pruned")
        .collect();
    assert_eq!(pruned, [("ConfigMap/a".to_string(), "pruned".to_string())]);
}

#[test]
fn prune_still_works_after_the_state_dir_is_deleted() {
    let s = Setup::new("wiped");
    let ns = &s.ns;
    s.commit(&[
        ("app/a.yaml", &config_map("a", ns, "1")),
        ("app/b.yaml", &config_map("b", ns, "1")),
    ]);
    s.configure("", "      - { name: app, path: ./app, prune: true }\n");
    s.run_ok();
    assert!(exists(ns, CM, "b"));

    std::fs::remove_dir_all(s.state_dir()).unwrap();
    s.repo.remove("app/b.yaml");
    s.commit(&[]);
    let report = s.run_ok();
    assert_eq!(
        action_of(kustomization(&report, "app"), "ConfigMap/b"),
        "pruned"
    );
    assert!(
        !exists(ns, CM, "b"),
        "b was not pruned: the inventory in the cluster was not read"
    );
    assert!(exists(ns, CM, "a"));
}

#[test]
fn kustomizations_removed_from_the_config_are_pruned_at_the_next_start_when_they_pruned() {
    let s = Setup::new("removed");
    let ns = &s.ns;
    s.commit(&[
        ("gone/a.yaml", &config_map("a", ns, "1")),
        ("kept/b.yaml", &config_map("b", ns, "1")),
        ("stays/c.yaml", &config_map("c", ns, "1")),
    ]);
    s.configure(
        "",
        "      - { name: gone, path: ./gone, prune: true }\n      - { name: kept, path: ./kept }\n      - { name: stays, path: ./stays, prune: true }\n",
    );
    s.run_ok();
    assert!(exists(ns, CM, "a") && exists(ns, CM, "b") && exists(ns, CM, "c"));

    s.configure("", "      - { name: stays, path: ./stays, prune: true }\n");
    s.run_ok();
    assert!(
        !exists(ns, CM, "a"),
        "the removed kustomization with prune: true kept its objects"
    );
    assert!(
        exists(ns, CM, "b"),
        "a removed kustomization without prune must leave its objects"
    );
    assert!(exists(ns, CM, "c"));
    for inventory in ["gitopsd-inventory.web.gone", "gitopsd-inventory.web.kept"] {
        assert!(!exists(ns, CM, inventory), "{inventory} is left behind");
    }
    assert!(exists(ns, CM, "gitopsd-inventory.web.stays"));
}

fn job(ns: &str, image: &str) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  namespace: {ns}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: {image}
"#
    )
}

#[test]
fn force_recreates_a_job_whose_template_changed_and_without_it_the_field_is_named() {
    let s = Setup::new("force");
    let ns = &s.ns;
    s.commit(&[("app/job.yaml", &job(ns, "registry.invalid/migrate:1"))]);
    s.configure("", "      - { name: app, path: ./app }\n");
    s.run_ok();
    let first = cluster()
        .get_json("batch/v1", "Job", Some(ns), "migrate")
        .unwrap();

    s.commit(&[("app/job.yaml", &job(ns, "registry.invalid/migrate:2"))]);
    let report = s.run_failing();
    let error = kustomization(&report, "app")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains(&format!("Job/{ns}/migrate")), "{error}");
    assert!(
        error.contains("spec.template") && error.contains("field is immutable"),
        "{error}"
    );
    assert!(error.contains("force: true"), "{error}");

    s.configure("", "      - { name: app, path: ./app, force: true }\n");
    let report = s.run_ok();
    assert_eq!(
        action_of(kustomization(&report, "app"), "Job/migrate"),
        "created"
    );
    let second = cluster()
        .get_json("batch/v1", "Job", Some(ns), "migrate")
        .unwrap();
    assert_ne!(first["metadata"]["uid"], second["metadata"]["uid"]);
    assert_eq!(
        second["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.invalid/migrate:2"
    );
}

fn deployment(name: &str, ns: &str, replicas: u32, node_selector: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector: {{ matchLabels: {{ app: {name} }} }}
  template:
    metadata: {{ labels: {{ app: {name} }} }}
    spec:
      nodeSelector: {node_selector}
      containers: [{{ name: app, image: "registry.invalid/app:1" }}]
"#
    )
}

#[test]
fn wait_passes_once_a_deployment_rolls_out_and_a_timeout_names_each_pending_object() {
    let s = Setup::new("wait");
    let ns = &s.ns;
    s.commit(&[
        ("ok/web.yaml", &deployment("web", ns, 2, "{}")),
        (
            "stuck/api.yaml",
            &deployment("api", ns, 2, "{ disk: none-has-this }"),
        ),
    ]);
    s.configure(
        "",
        "      - { name: ok, path: ./ok, wait: true, timeout: 3m }\n      - { name: stuck, path: ./stuck, wait: true, timeout: 8s }\n",
    );
    let report = s.run_failing();
    assert!(
        kustomization(&report, "ok")["error"].is_null(),
        "{report:#}"
    );
    let web = cluster()
        .get_json("apps/v1", "Deployment", Some(ns), "web")
        .unwrap();
    assert_eq!(
        web["status"]["availableReplicas"], 2,
        "wait returned before the rollout"
    );
    let error = kustomization(&report, "stuck")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.starts_with("health check failed after 8s"), "{error}");
    assert!(error.contains(&format!("Deployment/{ns}/api: ")), "{error}");
    assert!(error.contains("of 2 replicas"), "{error}");
    let state = s.state();
    let conditions = &state["kustomizations"][format!("{ns}/web/stuck")]["conditions"];
    let healthy = conditions
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Healthy")
        .expect("a Healthy condition");
    assert_eq!(healthy["status"], "False");
    assert_eq!(healthy["reason"], "HealthCheckFailed");
}

#[test]
fn health_checks_wait_for_named_objects_without_wait() {
    let s = Setup::new("checks");
    let ns = &s.ns;
    s.commit(&[("app/cm.yaml", &config_map("settings", ns, "1"))]);
    // A Deployment the kustomization does not apply, made by hand with no node to run on.
    cluster().apply_json(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "external", "namespace": ns },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": "x" } },
          "template": { "metadata": { "labels": { "app": "x" } },
            "spec": { "nodeSelector": { "disk": "none" }, "containers": [{ "name": "x", "image": "x" }] } } }
    }));
    s.configure(
        "",
        &format!("      - name: app\n        path: ./app\n        timeout: 6s\n        healthChecks:\n          - {{ apiVersion: apps/v1, kind: Deployment, name: external, namespace: {ns} }}\n"),
    );
    let report = s.run_failing();
    let error = kustomization(&report, "app")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!("Deployment/{ns}/external")),
        "{error}"
    );
}

#[test]
fn a_dependency_chain_holds_dependents_until_the_failing_one_recovers() {
    let s = Setup::new("chain");
    let ns = &s.ns;
    s.commit(&[
        ("a/cm.yaml", &config_map("a", ns, "1")),
        // Not a valid ConfigMap name: the API server refuses it.
        ("b/cm.yaml", &config_map("B_bad", ns, "1")),
        ("c/cm.yaml", &config_map("c", ns, "1")),
    ]);
    s.configure(
        "",
        "      - { name: a, path: ./a }\n      - { name: b, path: ./b, dependsOn: [a] }\n      - { name: c, path: ./c, dependsOn: [b] }\n",
    );
    let report = s.run_failing();
    assert!(kustomization(&report, "a")["error"].is_null());
    let b = kustomization(&report, "b")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(b.contains(&format!("ConfigMap/{ns}/B_bad")), "{b}");
    let c = kustomization(&report, "c")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(c.starts_with("dependency 'b' is not ready"), "{c}");
    assert!(!exists(ns, CM, "c"));
    let state = s.state();
    let ready = &state["kustomizations"][format!("{ns}/web/c")]["conditions"][0];
    assert_eq!(ready["reason"], "DependencyNotReady", "{ready:#}");

    s.repo.remove("b/cm.yaml");
    s.commit(&[("b/cm.yaml", &config_map("b", ns, "1"))]);
    s.run_ok();
    assert!(exists(ns, CM, "b") && exists(ns, CM, "c"));
}

#[test]
fn client_and_server_validation_failures_apply_nothing() {
    let s = Setup::new("valid");
    let ns = &s.ns;
    s.commit(&[
        ("client/good.yaml", &config_map("good-client", ns, "1")),
        ("client/bad.yaml", &config_map("bad", "Not_A_Namespace", "1")),
        ("server/good.yaml", &config_map("good-server", ns, "1")),
        (
            "server/bad.yaml",
            &format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\n  namespace: {ns}\nspec:\n  replicas: -1\n  selector: {{ matchLabels: {{ app: x }} }}\n  template:\n    metadata: {{ labels: {{ app: x }} }}\n    spec: {{ containers: [{{ name: x, image: x }}] }}\n"),
        ),
    ]);
    s.configure(
        "",
        "      - { name: client, path: ./client, validation: client }\n      - { name: server, path: ./server, validation: server }\n",
    );
    let report = s.run_failing();
    let client = kustomization(&report, "client")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        client.starts_with("validation failed, nothing applied: ConfigMap/Not_A_Namespace/bad: "),
        "{client}"
    );
    let server = kustomization(&report, "server")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        server.starts_with(&format!(
            "validation failed, nothing applied: Deployment/{ns}/bad: "
        )),
        "{server}"
    );
    assert!(server.contains("spec.replicas"), "{server}");
    assert!(!exists(ns, CM, "good-client") && !exists(ns, CM, "good-server"));
}

#[test]
fn post_build_substitutes_from_the_config_a_configmap_and_a_secret() {
    let s = Setup::new("subst");
    let ns = &s.ns;
    let c = cluster();
    c.apply_json(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cluster-vars", "namespace": ns}, "data": {"region": "eu-west", "env": "from-configmap"}}));
    c.put_secret(ns, "cluster-secrets", &[("token", b"s3cr3t-value")]);
    s.commit(&[
        (
            "app/cm.yaml",
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: vars\n  namespace: {ns}\ndata:\n  env: ${{env}}\n  region: ${{region}}\n  token: ${{token}}\n  fallback: ${{missing:=default-value}}\n  escaped: $${{env}}\n"
            ),
        ),
        (
            "app/raw.yaml",
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: raw\n  namespace: {ns}\n  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\ndata:\n  env: ${{env}}\n"
            ),
        ),
    ]);
    s.configure(
        "",
        "      - name: app\n        path: ./app\n        postBuild:\n          substitute: { env: prod }\n          substituteFrom:\n            - { kind: ConfigMap, name: cluster-vars }\n            - { kind: Secret, name: cluster-secrets }\n            - { kind: ConfigMap, name: absent, optional: true }\n",
    );
    let (code, _, output) = s.run_once();
    assert_eq!(code, 0, "{}", describe(&output));
    let vars = c.get_json("v1", "ConfigMap", Some(ns), "vars").unwrap();
    // `substitute` wins over substituteFrom, as in Flux.
    assert_eq!(vars["data"]["env"], "prod");
    assert_eq!(vars["data"]["region"], "eu-west");
    assert_eq!(vars["data"]["token"], "s3cr3t-value");
    assert_eq!(vars["data"]["fallback"], "default-value");
    assert_eq!(vars["data"]["escaped"], "${env}");
    let raw = c.get_json("v1", "ConfigMap", Some(ns), "raw").unwrap();
    assert_eq!(raw["data"]["env"], "${env}");
    assert!(
        !describe(&output).contains("s3cr3t"),
        "a secret value was logged"
    );

    // A changed ConfigMap is read again at the next reconcile.
    c.apply_json(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cluster-vars", "namespace": ns}, "data": {"region": "us-east"}}));
    s.run_ok();
    let vars = c.get_json("v1", "ConfigMap", Some(ns), "vars").unwrap();
    assert_eq!(vars["data"]["region"], "us-east");

    // A missing one that is not optional fails the kustomization in one sentence.
    s.configure(
        "",
        "      - name: app\n        path: ./app\n        postBuild:\n          substituteFrom: [{ kind: Secret, name: nowhere }]\n",
    );
    let report = s.run_failing();
    assert_eq!(
        kustomization(&report, "app")["error"],
        format!("postBuild.substituteFrom: Secret {ns}/nowhere not found")
    );
}

#[test]
fn scope_namespace_refuses_cluster_scoped_objects_and_applies_nothing() {
    let s = Setup::new("scoped");
    let ns = &s.ns;
    s.commit(&[
        ("app/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: local\ndata:\n  k: v\n"),
        (
            "app/role.yaml",
            &format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {ns}-reader\nrules: []\n"),
        ),
    ]);
    s.configure(
        "    scope: namespace\n",
        "      - { name: app, path: ./app }\n",
    );
    let report = s.run_failing();
    let error = kustomization(&report, "app")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!("ClusterRole/{ns}-reader: cluster-scoped ClusterRole refused: the configuration's scope is namespace `{ns}`")),
        "{error}"
    );
    assert!(!exists(ns, CM, "local"));

    // Without the cluster-scoped object, namespaced objects land in the configuration's
    // namespace even without one of their own.
    s.repo.remove("app/role.yaml");
    s.commit(&[]);
    s.run_ok();
    assert!(exists(ns, CM, "local"));
}

#[test]
fn a_service_account_applies_only_what_its_rbac_allows() {
    let s = Setup::new("tenant");
    let ns = &s.ns;
    let c = cluster();
    c.apply_json(
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "deployer", "namespace": ns}}),
    );
    c.apply_json(serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "deployer", "namespace": ns},
        "rules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "patch", "create", "delete"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}
        ]}));
    c.apply_json(
        serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "deployer", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployer"},
        "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": ns}]}),
    );
    s.commit(&[
        ("app/cm.yaml", &config_map("allowed", ns, "1")),
        (
            "app/secret.yaml",
            &format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: denied\n  namespace: {ns}\nstringData:\n  k: v\n"),
        ),
    ]);
    s.configure(
        "",
        "      - { name: app, path: ./app, serviceAccountName: deployer }\n",
    );
    let report = s.run_failing();
    let error = kustomization(&report, "app")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "failed to apply: Secret/{ns}/denied: patch forbidden: "
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!(
            "User \"system:serviceaccount:{ns}:deployer\" cannot patch resource \"secrets\""
        )),
        "{error}"
    );
    // The other object of the stage was applied, as the service account.
    let allowed = c
        .get_json("v1", "ConfigMap", Some(ns), "allowed")
        .expect("applied");
    assert_eq!(
        allowed["metadata"]["managedFields"][0]["manager"],
        "gitopsd"
    );
}

/// A running `gitopsd run`, killed on drop; its log shown when the test fails.
struct Daemon {
    child: std::process::Child,
    log: PathBuf,
}

impl Daemon {
    fn start(s: &Setup) -> Daemon {
        let log = s.dir.path().join("gitopsd.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = s
            .gitopsd()
            .args(["run", "--config"])
            .arg(s.config_path())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `check` every 200 ms for up to `limit`.
    fn wait_until(&self, what: &str, limit: std::time::Duration, mut check: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + limit;
        while !check() {
            assert!(
                std::time::Instant::now() < deadline,
                "gave up waiting for {what}\n--- gitopsd log ---\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- gitopsd log ---\n{}", self.log());
        }
    }
}

#[test]
fn a_hand_edit_of_a_managed_field_is_reverted_at_the_next_interval() {
    let s = Setup::new("drift");
    let ns = s.ns.clone();
    s.commit(&[
        ("app/cm.yaml", &config_map("managed", &ns, "from-git")),
        ("app/other.yaml", &config_map("untouched", &ns, "1")),
    ]);
    s.configure("", "      - { name: app, path: ./app, interval: 2s }\n");
    let daemon = Daemon::start(&s);
    let c = cluster();
    let value = |name: &str| {
        c.get_json("v1", "ConfigMap", Some(&ns), name)
            .map(|o| o["data"]["key"].clone())
    };
    daemon.wait_until(
        "the first apply",
        std::time::Duration::from_secs(60),
        || value("managed") == Some("from-git".into()) && value("untouched").is_some(),
    );
    let untouched = resource_version(
        &c.get_json("v1", "ConfigMap", Some(&ns), "untouched")
            .unwrap(),
    );
    c.edit_json(
        "v1",
        "ConfigMap",
        Some(&ns),
        "managed",
        serde_json::json!({"data": {"key": "edited"}}),
    );
    assert_eq!(value("managed"), Some("edited".into()));
    daemon.wait_until(
        "the edit to be reverted",
        std::time::Duration::from_secs(30),
        || value("managed") == Some("from-git".into()),
    );
    // Several intervals later the object nobody edited was never written again.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let after = resource_version(
        &c.get_json("v1", "ConfigMap", Some(&ns), "untouched")
            .unwrap(),
    );
    assert_eq!(
        untouched,
        after,
        "an unchanged object was rewritten\n{}",
        daemon.log()
    );
}

#[test]
fn objects_lists_the_inventory_with_live_status_and_diff_shows_pending_changes() {
    let s = Setup::new("cli");
    let ns = &s.ns;
    s.commit(&[
        ("app/cm.yaml", &config_map("settings", ns, "one")),
        ("app/web.yaml", &deployment("web", ns, 1, "{}")),
    ]);
    s.configure(
        "",
        "      - { name: app, path: ./app, wait: true, timeout: 2m }\n",
    );
    s.run_ok();

    let objects = s
        .gitopsd()
        .args(["objects", "web/app", "--config"])
        .arg(s.config_path())
        .output()
        .unwrap();
    assert_eq!(objects.status.code(), Some(0), "{}", describe(&objects));
    let table = String::from_utf8_lossy(&objects.stdout).to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("KIND"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["ConfigMap", ns.as_str(), "settings", "Current"]),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["Deployment", ns.as_str(), "web", "Current"]),
        "{table}"
    );

    let diff = |s: &Setup| {
        s.gitopsd()
            .args(["diff", "app", "--config"])
            .arg(s.config_path())
            .output()
            .unwrap()
    };
    let unchanged = diff(&s);
    assert_eq!(unchanged.status.code(), Some(0), "{}", describe(&unchanged));
    assert!(unchanged.stdout.is_empty(), "{}", describe(&unchanged));

    // Fetch the change without applying it (the kustomization suspended), then diff.
    s.commit(&[
        ("app/cm.yaml", &config_map("settings", ns, "two")),
        ("app/new.yaml", &config_map("added", ns, "1")),
    ]);
    s.configure("", "      - { name: app, path: ./app, suspend: true }\n");
    s.run_ok();
    let changed = diff(&s);
    assert_eq!(changed.status.code(), Some(1), "{}", describe(&changed));
    let text = String::from_utf8_lossy(&changed.stdout).to_string();
    assert!(
        text.contains(&format!(
            "~ ConfigMap/{ns}/settings (configured)\n    data.key: (value hidden) changed"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("+ ConfigMap/{ns}/added (created)")),
        "{text}"
    );
    assert!(!text.contains("Deployment"), "{text}");
    // The dry-run changed nothing.
    assert_eq!(
        cluster()
            .get_json("v1", "ConfigMap", Some(ns), "settings")
            .unwrap()["data"]["key"],
        "one"
    );
    assert!(!exists(ns, CM, "added"));
}

/// `GET /api/v1/status` of a running daemon, if it answers.
fn status(port: u16) -> Option<Value> {
    let reply = ureq::get(&format!("http://127.0.0.1:{port}/api/v1/status"))
        .call()
        .ok()?;
    serde_json::from_reader(reply.into_body().into_reader()).ok()
}

#[test]
fn the_api_server_going_away_fails_one_kustomization_in_a_sentence_and_it_converges_after() {
    // A cluster of its own: this test stops its API server.
    let mut c = KubeCluster::start();
    let s = Setup::on(&c, "down");
    let ns = s.ns.clone();
    s.commit(&[("app/a.yaml", &config_map("a", &ns, "1"))]);
    s.configure(
        "",
        "      - { name: app, path: ./app, interval: 2s, retryInterval: 2s, prune: true }\n      - { name: files, path: ./app, interval: 2s, target: { directory: ./out } }\n",
    );
    let daemon = Daemon::start(&s);
    let limit = std::time::Duration::from_secs(60);
    daemon.wait_until("the first apply", limit, || {
        c.get_json("v1", "ConfigMap", Some(&ns), "a").is_some()
    });

    c.stop_apiserver();
    s.commit(&[("app/b.yaml", &config_map("b", &ns, "1"))]);
    let app = |st: &Value| -> Value {
        st["kustomizations"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["name"] == "app"))
            .cloned()
            .unwrap_or_default()
    };
    let mut error = String::new();
    daemon.wait_until("the cluster kustomization to fail", limit, || {
        let Some(st) = status(s.port) else {
            return false;
        };
        match app(&st)["lastError"].as_str() {
            Some(e) => {
                error = e.to_string();
                true
            }
            None => false,
        }
    });
    assert!(error.contains(&format!("at {}", c.url())), "{error}");
    assert!(
        error.contains("connection refused") || error.contains("connection closed"),
        "{error}"
    );
    assert!(!error.contains('\n'), "{error}");
    // The other kustomization of the source kept going: its file has the new object.
    daemon.wait_until(
        "the directory target to render the new revision",
        limit,
        || {
            std::fs::read_to_string(s.dir.path().join("out/files.yaml"))
                .is_ok_and(|t| t.contains("name: b"))
        },
    );
    // The last inventory is kept.
    let st = status(s.port).unwrap();
    let inventory = app(&st)["inventory"]["entries"].to_string();
    assert!(inventory.contains("\"name\":\"a\""), "{inventory}");

    c.restart_apiserver();
    daemon.wait_until(
        "the apply to converge once the API server is back",
        limit,
        || {
            c.get_json("v1", "ConfigMap", Some(&ns), "b").is_some()
                && status(s.port).is_some_and(|st| app(&st)["lastError"].is_null())
        },
    );
}

#[test]
fn a_kill_9_mid_apply_leaves_nothing_orphaned_and_the_next_start_converges() {
    let s = Setup::new("kill");
    let ns = &s.ns;
    let files: Vec<(String, String)> = (0..300)
        .map(|i| {
            (
                format!("app/cm-{i}.yaml"),
                config_map(&format!("cm-{i}"), ns, "1"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    s.commit(&refs);
    s.configure("", "      - { name: app, path: ./app, prune: true }\n");
    let mut child = s
        .gitopsd()
        .args(["run", "--once", "--config"])
        .arg(s.config_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let c = cluster();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // Killed as soon as the apply has begun: some objects exist, most do not yet.
    loop {
        let created = c
            .list_json("v1", "ConfigMap", Some(ns))
            .iter()
            .filter(|o| {
                o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("cm-"))
            })
            .count();
        if created > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the apply never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "gitopsd ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let created_before: Vec<String> = c
        .list_json("v1", "ConfigMap", Some(ns))
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("cm-"))
        .collect();
    assert!(
        created_before.len() < 300,
        "the apply finished before the kill; nothing was tested"
    );

    // The repository drops every object the killed run may have created, and keeps the rest.
    for name in &created_before {
        s.repo.remove(format!("app/{name}.yaml"));
    }
    s.commit(&[("app/last.yaml", &config_map("last", ns, "1"))]);
    s.run_ok();
    for name in &created_before {
        assert!(
            !exists(ns, CM, name),
            "{name} was created by the killed run and orphaned"
        );
    }
    let left = c
        .list_json("v1", "ConfigMap", Some(ns))
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .filter(|n| n.starts_with("cm-") || n == "last")
        .count();
    assert_eq!(left, 300 - created_before.len() + 1);
}

/// As a pod sees it: `/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}`
/// (on a tmpfs in a mount namespace of its own, so the host is not touched) and
/// `KUBERNETES_SERVICE_HOST`/`_PORT`; `kubernetes:` either says `inCluster: true` or nothing,
/// and then no kubeconfig exists (HOME is empty, no KUBECONFIG), so the account is detected.
#[test]
fn in_a_pod_the_service_account_is_used_explicitly_or_when_no_kubeconfig_exists() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a private mount namespace");
        return;
    }
    let c = cluster();
    for (prefix, section) in [("incluster", "{ inCluster: true }"), ("detected", "{}")] {
        let s = Setup::new(prefix);
        let ns = &s.ns;
        s.commit(&[("app/cm.yaml", &config_map("from-a-pod", ns, "1"))]);
        s.configure("", "      - { name: app, path: ./app }\n");
        let config = std::fs::read_to_string(s.config_path()).unwrap().replace(
            &format!(
                "kubernetes: {{ kubeconfig: \"{}\" }}",
                s.kubeconfig.display()
            ),
            &format!("kubernetes: {section}"),
        );
        std::fs::write(s.config_path(), config).unwrap();
        let account = s.dir.path().join("serviceaccount");
        std::fs::create_dir_all(&account).unwrap();
        std::fs::write(account.join("token"), crate::support::kube::ADMIN_TOKEN).unwrap();
        std::fs::copy(c.ca_cert(), account.join("ca.crt")).unwrap();
        std::fs::write(account.join("namespace"), ns).unwrap();
        let home = s.dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let script = format!(
            "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/secrets/kubernetes.io; \
             cp -r {account} /run/secrets/kubernetes.io/serviceaccount; \
             exec {bin} run --once -o json --config {config}",
            account = account.display(),
            bin = gitopsd_bin().display(),
            config = s.config_path().display(),
        );
        let output = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .current_dir(s.dir.path())
            .env_remove("KUBECONFIG")
            .env("HOME", &home)
            .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
            .env("KUBERNETES_SERVICE_PORT", c.port().to_string())
            .env("GITOPSD_KUSTOMIZE", "kubectl")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{section}: {}",
            describe(&output)
        );
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        let k = kustomization(&report, "app");
        assert_eq!(
            k["target"],
            if section == "{}" {
                "cluster (default kubeconfig)"
            } else {
                "cluster (in-cluster)"
            }
        );
        assert!(exists(ns, CM, "from-a-pod"), "{section}: not applied");
    }
}

#[test]
fn ssa_annotations_and_target_namespace_behave_as_in_flux() {
    let s = Setup::new("ssa");
    let ns = &s.ns;
    let target = cluster().create_namespace("ssa-target");
    let annotated = |name: &str, value: &str, policy: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  annotations:\n    kustomize.toolkit.fluxcd.io/ssa: {policy}\ndata:\n  key: \"{value}\"\n"
        )
    };
    s.commit(&[
        ("app/once.yaml", &annotated("once", "first", "IfNotPresent")),
        ("app/never.yaml", &annotated("never", "x", "Ignore")),
        (
            "app/plain.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  key: \"1\"\n",
        ),
    ]);
    s.configure(
        "",
        &format!("      - {{ name: app, path: ./app, targetNamespace: {target}, prune: true }}\n"),
    );
    let report = s.run_ok();
    let k = kustomization(&report, "app");
    assert_eq!(action_of(k, "ConfigMap/once"), "created");
    assert_eq!(action_of(k, "ConfigMap/never"), "skipped");
    // targetNamespace put every object there, none in the configuration's namespace.
    assert!(exists(&target, CM, "once") && exists(&target, CM, "plain"));
    assert!(!exists(ns, CM, "plain"));
    assert!(!exists(&target, CM, "never"), "ssa: Ignore was applied");

    // IfNotPresent: a change in git does not reach the live object.
    s.commit(&[(
        "app/once.yaml",
        &annotated("once", "second", "IfNotPresent"),
    )]);
    let report = s.run_ok();
    assert_eq!(
        action_of(kustomization(&report, "app"), "ConfigMap/once"),
        "skipped"
    );
    let once = cluster()
        .get_json("v1", "ConfigMap", Some(&target), "once")
        .unwrap();
    assert_eq!(once["data"]["key"], "first");

    // An Ignore'd object made by hand is never pruned while it is in the source.
    cluster().apply_json(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "never", "namespace": target}, "data": {"key": "by hand"}}));
    s.run_ok();
    assert!(exists(&target, CM, "never"));
}
