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
}

impl Setup {
    fn new(prefix: &str) -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
            repo: Repo::new(),
            ns: cluster().create_namespace(prefix),
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
{extra}    source: {{ kind: git, url: "{url}", ref: {{ branch: main }} }}
    kustomizations:
{kustomizations}"#,
            port = free_port(),
            kubeconfig = cluster().admin_kubeconfig().display(),
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

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
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
                format!("{}/{}", o["id"]["kind"].as_str().unwrap(), o["id"]["name"].as_str().unwrap()),
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
    object["metadata"]["resourceVersion"].as_str().unwrap().to_string()
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

    let (code, report, output) = s.run_once();
    assert_eq!(code, 0, "{}", describe(&output));
    let k = kustomization(&report, "app");
    assert_eq!(
        actions(k),
        [
            ("ConfigMap/settings".to_string(), "created".to_string()),
            ("CustomResourceDefinition/".to_string() + &format!("widgets.{group}"), "created".into()),
            (format!("Namespace/{ns}-team"), "created".into()),
            ("Widget/w1".into(), "created".into()),
        ]
    );
    let c = cluster();
    let widget = c.get_json(&format!("{group}/v1"), "Widget", Some(ns), "w1").unwrap();
    assert_eq!(widget["spec"]["size"], 3);
    assert_eq!(widget["metadata"]["labels"]["gitopsd.io/kustomization"], "app");
    assert_eq!(widget["metadata"]["labels"]["gitopsd.io/configuration"], "web");
    let cm = c.get_json("v1", "ConfigMap", Some(ns), "settings").unwrap();
    let versions: Vec<String> = [&cm, &widget].iter().map(|o| resource_version(o)).collect();

    // A second pass (a new process: nothing remembered) changes nothing on the server.
    let (code, report, output) = s.run_once();
    assert_eq!(code, 0, "{}", describe(&output));
    let k = kustomization(&report, "app");
    assert!(actions(k).iter().all(|(_, a)| a == "unchanged"), "{k:#}");
    let cm = c.get_json("v1", "ConfigMap", Some(ns), "settings").unwrap();
    let widget = c.get_json(&format!("{group}/v1"), "Widget", Some(ns), "w1").unwrap();
    assert_eq!(vec![resource_version(&cm), resource_version(&widget)], versions);

    // A change to one object configures that one only.
    s.commit(&[("app/cm.yaml", &config_map("settings", ns, "two"))]);
    let (code, report, output) = s.run_once();
    assert_eq!(code, 0, "{}", describe(&output));
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
    assert!(entries.contains(&format!("{ns}_settings__ConfigMap v1")), "{entries}");
    assert!(entries.contains(&format!("{ns}_w1_{group}_Widget v1")), "{entries}");
}
