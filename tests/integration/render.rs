//! End-to-end tests of rendering: what `gitopsd run --once` writes for a kustomization equals
//! what `kubectl kustomize` prints for the same directory; a failed render keeps the previous
//! output; a dependency that failed holds back its dependents.

use crate::support::{describe, free_port, gitopsd_bin, text, GitDaemon, Repo};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A state dir and a config for one source `web` reading `url`, with the given
/// kustomizations (YAML list items, indented for the `kustomizations:` key).
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(url: &str, kustomizations: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gitopsd.yaml");
        let yaml = format!(
            r#"stateDir: ./state
server: {{ listen: "127.0.0.1:{port}" }}
configurations:
  - name: web
    source: {{ kind: git, url: "{url}", ref: {{ branch: main }} }}
    kustomizations:
{kustomizations}"#,
            port = free_port()
        );
        std::fs::write(&config, yaml).unwrap();
        Setup { dir, config }
    }

    fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// `run --once -o json`: the exit code and the parsed report.
    fn run_once(&self) -> (i32, Value, Output) {
        let output = Command::new(gitopsd_bin())
            .args(["run", "--once", "-o", "json", "--config"])
            .arg(&self.config)
            // The same kustomize the expectations are computed with.
            .env("GITOPSD_KUSTOMIZE", "kubectl")
            .stdin(Stdio::null())
            .output()
            .expect("run gitopsd");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
        (output.status.code().unwrap_or(-1), report, output)
    }

    /// The report of kustomization `name`.
    fn kustomization(report: &Value, name: &str) -> Value {
        report["kustomizations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["name"] == name)
            .unwrap_or_else(|| panic!("no kustomization {name} in {report:#}"))
            .clone()
    }
}

/// `kubectl kustomize <dir>`'s stdout; panics when it fails.
fn kubectl_kustomize(dir: &Path) -> String {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize {}\n{}",
        dir.display(),
        describe(&output)
    );
    text(&output.stdout)
}

/// Extracts the files of `commit` into a new temp dir (what a checkout holds).
fn checkout(repo: &Repo, commit: &str) -> tempfile::TempDir {
    let dest = tempfile::tempdir().unwrap();
    let mut archive = crate::support::git_command(repo.path());
    archive.args(["archive", "--format=tar", commit]);
    let archive = archive.output().unwrap();
    assert!(archive.status.success(), "{}", describe(&archive));
    let mut child = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest.path())
        .stdin(Stdio::piped())
        .spawn()
        .expect("run tar -x");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&archive.stdout)
        .unwrap();
    assert!(child.wait().unwrap().success());
    dest
}

/// The documents of a multi-document YAML stream, trimmed and sorted, so that two streams
/// with the same objects in another order compare equal.
fn documents(yaml: &str) -> Vec<String> {
    let mut docs: Vec<String> = yaml
        .split("\n---\n")
        .map(|d| d.trim_start_matches("---\n").trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    docs.sort();
    docs
}

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {name}\n")
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: { app: web }
spec:
  replicas: 1
  selector:
    matchLabels: { app: web }
  template:
    metadata:
      labels: { app: web }
    spec:
      containers:
      - name: web
        image: nginx:1.25
        envFrom:
        - configMapRef:
            name: settings
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: { app: web }
  ports:
  - port: 80
";

/// A kustomization with a name prefix, a generated ConfigMap (whose hashed name is
/// substituted into the Deployment) and a patch.
fn write_overlay(repo: &Repo, dir: &str) {
    repo.write(format!("{dir}/deployment.yaml"), DEPLOYMENT);
    repo.write(format!("{dir}/service.yaml"), SERVICE);
    repo.write(format!("{dir}/app.properties"), "color=blue\nsize=large\n");
    repo.write(
        format!("{dir}/replicas-patch.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n",
    );
    repo.write(
        format!("{dir}/kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namePrefix: edge-
commonLabels:
  team: platform
resources:
- deployment.yaml
- service.yaml
configMapGenerator:
- name: settings
  literals:
  - MODE=edge
  files:
  - app.properties
patches:
- path: replicas-patch.yaml
- target: { kind: Service, name: web }
  patch: |-
    - op: add
      path: /metadata/annotations
      value: { patched: \"yes\" }
",
    );
}

#[test]
fn render_equals_kubectl_kustomize_of_the_same_directory() {
    let repo = Repo::new();
    write_overlay(&repo, "deploy/overlay");
    repo.write("README.md", "fixture\n");
    repo.commit("overlay");
    repo.push_all();
    let (_daemon, url) = GitDaemon::serving(repo.bare());

    let setup = Setup::new(&url, "      - { name: overlay, path: ./deploy/overlay }\n");
    let (code, report, output) = setup.run_once();
    assert_eq!(code, 0, "{}", describe(&output));
    let k = Setup::kustomization(&report, "overlay");
    assert_eq!(k["objects"], 3, "{report:#}");
    let target = PathBuf::from(k["target"].as_str().unwrap());
    let rendered = std::fs::read_to_string(&target).unwrap();

    let expected = kubectl_kustomize(&repo.path().join("deploy/overlay"));
    assert!(
        expected.contains("name: edge-settings-")
            && expected.contains("replicas: 3")
            && expected.contains("patched: \"yes\""),
        "the fixture exercises the prefix, the generator and both patches:\n{expected}"
    );
    assert_eq!(rendered, expected, "byte for byte");
}

#[test]
fn generated_kustomization_renders_like_a_hand_written_one() {
    let repo = Repo::new();
    repo.write("plain/a-config.yaml", configmap("a"));
    repo.write("plain/b-service.yml", SERVICE);
    repo.write(
        "plain/more/two.yaml",
        format!("{}---\n{}", configmap("two-1"), configmap("two-2")),
    );
    repo.write("plain/notes.txt", "not a manifest, not listed\n");
    write_overlay(&repo, "plain/nested");
    let commit = repo.commit("plain");
    repo.push_all();

    let setup = Setup::new(
        &repo.bare().file_url(),
        "      - { name: plain, path: ./plain }\n",
    );
    let (code, report, output) = setup.run_once();
    assert_eq!(code, 0, "{}", describe(&output));
    let k = Setup::kustomization(&report, "plain");
    let target = PathBuf::from(k["target"].as_str().unwrap());
    let rendered = std::fs::read_to_string(&target).unwrap();

    // The same tree with a kustomization.yaml written by hand: every YAML file, and the
    // nested directory (which has its own kustomization) as one resource.
    let tree = checkout(&repo, &commit);
    let plain = tree.path().join("plain");
    assert!(!plain.join("kustomization.yaml").exists());
    std::fs::write(
        plain.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- a-config.yaml
- b-service.yml
- more/two.yaml
- nested
",
    )
    .unwrap();
    let expected = kubectl_kustomize(&plain);
    assert_eq!(documents(&expected).len(), 7, "{expected}");
    assert_eq!(k["objects"], 7, "{report:#}");
    assert_eq!(documents(&rendered), documents(&expected));
}

#[test]
fn failed_render_keeps_the_previous_output_and_names_the_path() {
    let repo = Repo::new();
    repo.write("apps/web/configmap.yaml", configmap("web"));
    repo.write(
        "apps/web/kustomization.yaml",
        "resources:\n- configmap.yaml\n",
    );
    let good = repo.commit("good");
    repo.push_all();

    let setup = Setup::new(
        &repo.bare().file_url(),
        "      - { name: web, path: ./apps/web }\n",
    );
    let (code, report, output) = setup.run_once();
    assert_eq!(code, 0, "{}", describe(&output));
    let k = Setup::kustomization(&report, "web");
    let target = PathBuf::from(k["target"].as_str().unwrap());
    let before = std::fs::read(&target).unwrap();
    assert!(text(&before).contains("name: web"));

    // The next commit breaks the kustomization: it lists a file that does not exist.
    repo.write(
        "apps/web/kustomization.yaml",
        "resources:\n- configmap.yaml\n- missing.yaml\n",
    );
    let broken = repo.commit("broken");
    repo.push_all();
    let (code, report, output) = setup.run_once();
    assert_eq!(code, 1, "{}", describe(&output));
    assert_eq!(
        report["sources"][0]["revision"],
        format!("main@sha1:{broken}").as_str(),
        "the source moved on"
    );
    let k = Setup::kustomization(&report, "web");
    let error = k["error"].as_str().expect("an error");
    assert!(
        error.contains("apps/web"),
        "the error names the path: {error}"
    );
    assert_eq!(
        k["revision"],
        format!("main@sha1:{good}").as_str(),
        "the last applied revision stays the good one"
    );
    assert_eq!(
        std::fs::read(&target).unwrap(),
        before,
        "the previous output is kept"
    );
}

#[test]
fn dependent_is_held_back_when_its_dependency_fails() {
    let repo = Repo::new();
    repo.write("infra/kustomization.yaml", "resources: [ missing.yaml\n");
    repo.write("apps/configmap.yaml", configmap("app"));
    repo.commit("broken infra");
    repo.push_all();

    // b is declared first: the order of the file must not matter.
    let kustomizations = "      - name: b
        path: ./apps
        dependsOn: [a]
        target: { directory: ./out }
      - name: a
        path: ./infra
        target: { directory: ./out }
";
    let setup = Setup::new(&repo.bare().file_url(), kustomizations);
    let (code, report, output) = setup.run_once();
    assert_eq!(code, 1, "{}", describe(&output));

    let a = Setup::kustomization(&report, "a");
    let a_error = a["error"].as_str().expect("a fails");
    assert!(
        a_error.contains("infra"),
        "a's error names its path: {a_error}"
    );

    let b = Setup::kustomization(&report, "b");
    let b_error = b["error"].as_str().expect("b is not applied");
    assert!(
        b_error.contains("dependency") && b_error.contains("'a'") && b_error.contains("not ready"),
        "b's error says its dependency is not ready: {b_error}"
    );
    assert_eq!(b["revision"], Value::Null);
    assert!(
        !setup.out_dir().join("b.yaml").exists(),
        "b wrote no output"
    );
}
