//! The render sandbox, end to end through `gitopsd run --once`: a repository cannot read
//! files outside its artifact (`/etc/passwd`, an absolute path, a sibling configuration's
//! key) through a secretGenerator, a configMapGenerator, resources or patches, on Landlock and
//! on the namespace fallback; an overlay still reads `../common/...`; `render.sandbox: none`
//! is the explicit opt-out; `render.remoteBases: false` refuses remote bases.

use crate::support::{describe, free_port, gitopsd_bin, text, HttpGitServer, Repo};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// In the file the "absolute path" cases read, and in the sibling's key.
const ABSOLUTE_MARKER: &str = "absolute-path-secret-4f1c";
const KEY_MARKER: &str = "sibling-key-secret-9b2e";

/// The files a kustomization tries to read, as it names them: `/etc/passwd`, a file outside
/// the state dir by absolute path, and configuration `sibling`'s generated key relative to
/// the kustomization's directory. The build runs in `<stateDir>/tmp/<scratch>/src/<dir>`, so
/// four `..` reach the state dir.
fn targets(absolute: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("passwd", "/etc/passwd".to_string()),
        ("absolute", absolute.display().to_string()),
        ("key", "../../../../keys/default/sibling".to_string()),
    ]
}

const VECTORS: [&str; 4] = ["secret", "configmap", "resources", "patches"];

/// A ConfigMap named `target` whose data holds `marker`: readable as a resource, as a
/// strategic-merge patch of the `target` ConfigMap, and as generator input, so that every
/// vector leaks it when nothing stops the read.
fn leaky_manifest(marker: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: target\ndata:\n  leaked: {marker}\n"
    )
}

fn kustomization_for(vector: &str, file: &str) -> String {
    match vector {
        "secret" => format!("secretGenerator:\n- name: leak\n  files:\n  - {file}\n"),
        "configmap" => format!("configMapGenerator:\n- name: leak\n  files:\n  - {file}\n"),
        "resources" => format!("resources:\n- {file}\n"),
        "patches" => format!("resources:\n- target.yaml\npatches:\n- path: {file}\n"),
        other => unreachable!("{other}"),
    }
}

/// A state dir, the file outside it, and a repository with one kustomization per
/// (vector, target) plus `inside`, an overlay that reads `../common/patch.yaml`.
struct Fixture {
    dir: tempfile::TempDir,
    config: PathBuf,
    /// Kept alive: the repository the configuration reads.
    _repo: Repo,
}

impl Fixture {
    /// `render` is the top-level render section (YAML flow mapping), `configuration_render`
    /// the configuration's own.
    fn new(render: &str, configuration_render: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let absolute = dir.path().join("outside/secret.yaml");
        std::fs::create_dir_all(absolute.parent().unwrap()).unwrap();
        std::fs::write(&absolute, leaky_manifest(ABSOLUTE_MARKER)).unwrap();
        // Where gitopsd keeps configuration `sibling`'s generated SSH key. The content is
        // a manifest so that resources and patches could use it too; the sandbox must not
        // care what the file holds.
        let key = dir.path().join("state/keys/default/sibling");
        std::fs::create_dir_all(key.parent().unwrap()).unwrap();
        std::fs::write(&key, leaky_manifest(KEY_MARKER)).unwrap();

        let repo = Repo::new();
        let mut kustomizations = String::new();
        for vector in VECTORS {
            for (target, file) in targets(&absolute) {
                let name = format!("{vector}-{target}");
                repo.write(
                    format!("{name}/kustomization.yaml"),
                    kustomization_for(vector, &file),
                );
                repo.write(
                    format!("{name}/target.yaml"),
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: target\ndata:\n  own: value\n",
                );
                kustomizations.push_str(&format!("      - {{ name: {name}, path: ./{name} }}\n"));
            }
        }
        repo.write(
            "common/patch.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: target\ndata:\n  common: patched\n",
        );
        repo.write(
            "inside/target.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: target\ndata:\n  own: value\n",
        );
        repo.write(
            "inside/kustomization.yaml",
            "resources:\n- target.yaml\npatches:\n- path: ../common/patch.yaml\n",
        );
        kustomizations.push_str("      - { name: inside, path: ./inside }\n");
        repo.commit("leaks");
        repo.push_all();

        let config = dir.path().join("gitopsd.yaml");
        let yaml = format!(
            r#"stateDir: ./state
server: {{ listen: "127.0.0.1:{port}" }}
render: {render}
configurations:
  - name: web
    render: {configuration_render}
    source: {{ kind: git, url: "{url}", ref: {{ branch: main }} }}
    kustomizations:
{kustomizations}"#,
            port = free_port(),
            url = repo.bare().file_url(),
        );
        std::fs::write(&config, yaml).unwrap();
        Fixture {
            dir,
            config,
            _repo: repo,
        }
    }

    fn run_once(&self) -> (Value, Output) {
        run_once(&self.config)
    }

    fn rendered(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(
            self.dir
                .path()
                .join(format!("state/rendered/default/web/{name}.yaml")),
        )
        .ok()
    }
}

/// `run --once -o json` with kubectl as the kustomize: the report and the process output.
fn run_once(config: &Path) -> (Value, Output) {
    let output = Command::new(gitopsd_bin())
        .args(["run", "--once", "-o", "json", "--config"])
        .arg(config)
        .env("GITOPSD_KUSTOMIZE", "kubectl")
        .stdin(Stdio::null())
        .output()
        .expect("run gitopsd");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
    (report, output)
}

fn kustomization(report: &Value, name: &str) -> Value {
    report["kustomizations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no kustomization {name} in {report:#}"))
        .clone()
}

/// Every leak fails, none of the secrets shows in an output, an error or the log, and the
/// overlay that reads inside the artifact renders; `denied` is how the sandbox's refusal reads
/// in kustomize's errors for the files that exist outside.
fn assert_confined(fixture: &Fixture, mechanism: &str, denied: &str) {
    let (report, output) = fixture.run_once();
    let log = text(&output.stderr);
    assert!(
        log.contains(&format!("render sandbox: web: {mechanism}")),
        "the start-up log names the mechanism: {log}"
    );
    let inside = kustomization(&report, "inside");
    assert_eq!(inside["error"], Value::Null, "{report:#}");
    let rendered = fixture.rendered("inside").unwrap();
    assert!(rendered.contains("common: patched"), "{rendered}");

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let root_line = passwd.lines().next().unwrap();
    for vector in VECTORS {
        for target in ["passwd", "absolute", "key"] {
            let name = format!("{vector}-{target}");
            let k = kustomization(&report, &name);
            let error = k["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{mechanism}: {name} must fail: {report:#}"));
            assert!(
                fixture.rendered(&name).is_none(),
                "{mechanism}: {name} wrote output"
            );
            for secret in [ABSOLUTE_MARKER, KEY_MARKER, root_line] {
                assert!(!error.contains(secret), "{mechanism}: {name}: {error}");
            }
            // /etc/passwd is no manifest, so resources and patches fail on it anyway; the
            // files written as manifests fail only because the sandbox refused them.
            if target != "passwd" || vector == "secret" || vector == "configmap" {
                assert!(
                    error.contains(denied),
                    "{mechanism}: {name}: expected {denied:?} in: {error}"
                );
            }
        }
    }
    for secret in [ABSOLUTE_MARKER, KEY_MARKER, root_line] {
        assert!(!log.contains(secret), "{mechanism}: the log shows {secret}");
    }
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
}

#[test]
fn landlock_keeps_every_read_inside_the_artifact() {
    let fixture = Fixture::new("{ sandbox: landlock }", "{}");
    assert_confined(&fixture, "Landlock", "permission denied");
}

#[test]
fn namespace_fallback_keeps_every_read_inside_the_artifact() {
    // The configuration's own setting wins over the top-level one.
    let fixture = Fixture::new("{ sandbox: landlock }", "{ sandbox: namespace }");
    assert_confined(&fixture, "namespace", "no such file or directory");
}

#[test]
fn auto_picks_landlock_here() {
    let fixture = Fixture::new("{}", "{}");
    assert_confined(&fixture, "Landlock", "permission denied");
}

#[test]
fn opting_out_reads_the_host_and_is_warned_about() {
    let fixture = Fixture::new("{ sandbox: none }", "{}");
    let (report, output) = fixture.run_once();
    let log = text(&output.stderr);
    assert_eq!(
        log.matches("render sandbox disabled (render.sandbox: none)")
            .count(),
        1,
        "warned once at start: {log}"
    );
    // Without the sandbox, every manifest-shaped file outside leaks through every vector:
    // what the tests above prove the sandboxes prevent.
    for vector in VECTORS {
        for (target, marker) in [("absolute", ABSOLUTE_MARKER), ("key", KEY_MARKER)] {
            let name = format!("{vector}-{target}");
            let k = kustomization(&report, &name);
            assert_eq!(k["error"], Value::Null, "{name}: {report:#}");
            let rendered = fixture.rendered(&name).unwrap();
            let leaked = if vector == "secret" {
                // kustomize wraps long base64 values over several lines.
                let flat: String = rendered.split_whitespace().collect();
                flat.contains(&base64(&leaky_manifest(marker)))
            } else {
                rendered.contains(marker)
            };
            assert!(leaked, "{name}: {rendered}");
        }
    }
    let passwd = fixture.rendered("configmap-passwd").unwrap();
    assert!(passwd.contains("root:"), "{passwd}");
}

#[test]
fn remote_bases_can_be_refused() {
    let repo = Repo::new();
    repo.write("app/cm.yaml", leaky_manifest("local"));
    repo.write(
        "app/kustomization.yaml",
        "resources:\n- cm.yaml\n- ../base\n",
    );
    // Never fetched: the build is refused before kustomize runs.
    repo.write(
        "base/kustomization.yaml",
        "resources:\n- https://git.example.com/org/fleet//deploy?ref=v1.0.0\n",
    );
    repo.commit("remote base");
    repo.push_all();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gitopsd.yaml");
    std::fs::write(
        &config,
        format!(
            r#"stateDir: ./state
server: {{ listen: "127.0.0.1:{port}" }}
render: {{ remoteBases: false }}
configurations:
  - name: web
    source: {{ kind: git, url: "{url}", ref: {{ branch: main }} }}
    kustomizations:
      - {{ name: app, path: ./app }}
"#,
            port = free_port(),
            url = repo.bare().file_url(),
        ),
    )
    .unwrap();
    let (report, output) = run_once(&config);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let error = kustomization(&report, "app")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        error,
        "kustomize build of './app' failed: kustomization path \"app\": base/kustomization.yaml \
         refers to the remote resources https://git.example.com/org/fleet//deploy?ref=v1.0.0, \
         and remote bases are disabled (render.remoteBases: false); vendor it into the \
         repository or allow remote bases"
    );
}

#[test]
fn remote_git_bases_are_cloned_inside_either_sandbox_unless_refused() {
    // The base lives in another repository, served over smart HTTP on loopback; kustomize
    // clones it with the git program, which the sandbox must let run and reach the server.
    let base = Repo::named("base");
    base.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-remote\n",
    );
    base.write("deploy/kustomization.yaml", "resources:\n- cm.yaml\n");
    base.commit("base");
    base.push_all();
    let (_server, base_url) = HttpGitServer::serving(base.bare());

    let app = Repo::new();
    app.write(
        "app/kustomization.yaml",
        format!("resources:\n- {base_url}//deploy?ref=main\n"),
    );
    // The same base through a file:// URL: git would read a repository on the host (such as
    // another configuration's cache), which the sandbox does not allow.
    app.write(
        "local/kustomization.yaml",
        format!(
            "resources:\n- {}//deploy?ref=main\n",
            base.bare().file_url()
        ),
    );
    app.commit("app");
    app.push_all();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gitopsd.yaml");
    let url = app.bare().file_url();
    let configuration = |name: &str, render: &str| {
        format!(
            "  - name: {name}\n    render: {render}\n    source: {{ kind: git, url: \"{url}\" }}\n    kustomizations:\n      - {{ name: app, path: ./app }}\n      - {{ name: local, path: ./local }}\n"
        )
    };
    std::fs::write(
        &config,
        format!(
            "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{}\" }}\nconfigurations:\n{}{}{}",
            free_port(),
            configuration("landlock", "{ sandbox: landlock }"),
            configuration("namespace", "{ sandbox: namespace }"),
            configuration("refused", "{ remoteBases: false }"),
        ),
    )
    .unwrap();
    let (report, output) = run_once(&config);
    let errors: Vec<&Value> = report["kustomizations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "app")
        .map(|k| &k["error"])
        .collect();
    assert_eq!(errors.len(), 3, "{report:#}");
    let local: Vec<&Value> = report["kustomizations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "local")
        .map(|k| &k["error"])
        .collect();
    assert!(
        local[..2].iter().all(|e| e.is_string()),
        "file:// bases cannot be read in either sandbox: {report:#}"
    );
    for (configuration, error) in ["landlock", "namespace"].iter().zip(&errors) {
        assert_eq!(
            **error,
            Value::Null,
            "{configuration}: {}",
            describe(&output)
        );
        let rendered = std::fs::read_to_string(
            dir.path()
                .join(format!("state/rendered/default/{configuration}/app.yaml")),
        )
        .unwrap();
        assert!(rendered.contains("name: from-remote"), "{rendered}");
    }
    let refused = errors[2].as_str().unwrap();
    assert!(
        refused.contains(&format!(
            "app/kustomization.yaml refers to the remote resources {base_url}//deploy?ref=main, \
             and remote bases are disabled"
        )),
        "{refused}"
    );
}

/// Standard base64 with padding, as kustomize encodes Secret data.
fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
