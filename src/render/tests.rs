use super::*;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const KUBECTL: &str = "/usr/bin/kubectl";
const TIMEOUT: Duration = Duration::from_secs(60);

fn kubectl() -> Renderer {
    Renderer::with_binary(KUBECTL, Tool::Kubectl)
}

/// Real builds run as gitopsd runs them: in the kernel's sandbox.
fn sandboxed() -> BuildOptions {
    BuildOptions {
        timeout: TIMEOUT,
        confinement: Confinement::Landlock,
        remote_bases: true,
        target_namespace: None,
    }
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: web\ndata:\n  k: v\n")
}

fn executable(path: &Path, text: &str) {
    write(path, text);
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A tree without a kustomization file at `dir`:
/// files in several places, a nested kustomization, things that are not manifests.
fn sample_tree(dir: &Path) {
    write(&dir.join("b.yaml"), &config_map("b"));
    write(&dir.join("a.yml"), &config_map("a"));
    write(&dir.join("README.md"), "# not yaml\n");
    write(&dir.join("values.json"), "{\"not\": \"listed\"}\n");
    write(&dir.join("b/z.yaml"), &config_map("z"));
    write(
        &dir.join("deep/x/svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: web\nspec:\n  ports:\n  - port: 80\n",
    );
    write(
        &dir.join("deep/x/ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: web\n",
    );
    // A nested kustomization: counted once, and `unlisted.yaml` (not in its resources) must
    // not show up in the output.
    write(
        &dir.join("nested/kustomization.yaml"),
        "resources:\n- deploy.yaml\nnamePrefix: nested-\n",
    );
    write(
        &dir.join("nested/deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: web\nspec:\n  selector:\n    matchLabels: {app: a}\n  template:\n    metadata:\n      labels: {app: a}\n    spec:\n      containers:\n      - name: a\n        image: nginx\n",
    );
    write(&dir.join("nested/unlisted.yaml"), &config_map("unlisted"));
    // `Kustomization` is a recognised name too.
    write(&dir.join("other/Kustomization"), "resources:\n- cm.yaml\n");
    write(&dir.join("other/cm.yaml"), &config_map("other"));
}

const SAMPLE_RESOURCES: [&str; 7] = [
    "./a.yml",
    "./b/z.yaml",
    "./b.yaml",
    "./deep/x/ns.yaml",
    "./deep/x/svc.yaml",
    "./nested",
    "./other",
];

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn generated_kustomization_follows_flux() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    sample_tree(&root.join("apps"));
    let canonical = root.canonicalize().unwrap();

    let resources = generate::scan(&canonical, &canonical.join("apps"))
        .unwrap()
        .unwrap();
    assert_eq!(resources, SAMPLE_RESOURCES);
    // Deterministic: a second scan gives the same list.
    assert_eq!(
        generate::scan(&canonical, &canonical.join("apps"))
            .unwrap()
            .unwrap(),
        resources
    );
    // A directory with its own kustomization is left alone.
    assert!(generate::scan(&canonical, &canonical.join("apps/nested"))
        .unwrap()
        .is_none());
}

#[test]
fn generated_build_matches_kubectl_on_a_hand_written_kustomization() {
    let tmp = tempfile::tempdir().unwrap();
    let generated = tmp.path().join("generated");
    let written = tmp.path().join("written");
    sample_tree(&generated.join("apps"));
    copy_tree(&generated, &written);
    let listed: Vec<&str> = SAMPLE_RESOURCES
        .iter()
        .map(|r| r.trim_start_matches("./"))
        .collect();
    write(
        &written.join("apps/kustomization.yaml"),
        &format!("resources:\n- {}\n", listed.join("\n- ")),
    );

    let rendered = kubectl().build(&generated, "apps", &sandboxed()).unwrap();
    let text = fs::read_to_string(generated.join("apps/kustomization.yaml")).unwrap();
    assert!(text.starts_with("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"));
    assert!(text.contains("- ./nested\n"));

    let direct = Command::new(KUBECTL)
        .arg("kustomize")
        .arg(written.join("apps"))
        .output()
        .unwrap();
    assert!(
        direct.status.success(),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    let direct = Rendered::from_yaml(String::from_utf8(direct.stdout).unwrap()).unwrap();

    let mut ours: Vec<ObjectId> = rendered.ids().cloned().collect();
    let mut theirs: Vec<ObjectId> = direct.ids().cloned().collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);
    assert_eq!(rendered.yaml, direct.yaml);
    assert_eq!(rendered.objects.len(), 7);
    let names: Vec<&str> = ours.iter().map(|o| o.name.as_str()).collect();
    assert!(names.contains(&"nested-app"));
    assert!(!names.contains(&"unlisted"));
    let namespace = ours.iter().find(|o| o.kind == "Namespace").unwrap();
    assert_eq!(namespace.namespace, "");
    let deployment = ours.iter().find(|o| o.kind == "Deployment").unwrap();
    assert_eq!(
        (deployment.group.as_str(), deployment.version.as_str()),
        ("apps", "v1")
    );
}

#[test]
fn non_kubernetes_yaml_fails_generation_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("app/cm.yaml"), &config_map("a"));
    write(
        &tmp.path().join("app/ci/.gitlab-ci.yml"),
        "stages:\n- build\n",
    );
    match kubectl().build(tmp.path(), "app", &sandboxed()) {
        Err(RenderError::NotKubernetes { path, file, .. }) => {
            assert_eq!(path, "app");
            assert_eq!(file, "./ci/.gitlab-ci.yml");
        }
        other => panic!("expected NotKubernetes, got {other:?}"),
    }
    // Nothing was generated.
    assert!(!tmp.path().join("app/kustomization.yaml").exists());
}

#[test]
fn empty_directory_renders_no_objects() {
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("empty/sub")).unwrap();
    write(&tmp.path().join("empty/notes.txt"), "x");
    let rendered = kubectl().build(tmp.path(), "empty", &sandboxed()).unwrap();
    assert_eq!(rendered, Rendered::default());
    let text = fs::read_to_string(tmp.path().join("empty/kustomization.yaml")).unwrap();
    assert!(text.contains("resources: []"));
    // And kustomize itself accepts the generated file.
    let direct = Command::new(KUBECTL)
        .arg("kustomize")
        .arg(tmp.path().join("empty"))
        .output()
        .unwrap();
    assert!(direct.status.success());
}

#[test]
fn refuses_paths_leaving_the_root() {
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("cm.yaml"), &config_map("outside"));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    write(&root.join("app/cm.yaml"), &config_map("inside"));
    symlink(outside.path(), root.join("link")).unwrap();

    for path in ["..", "../root/..", "app/../..", "link"] {
        match kubectl().build(&root, path, &sandboxed()) {
            Err(RenderError::PathEscapes { path: p }) => assert_eq!(p, path),
            other => panic!("{path}: expected PathEscapes, got {other:?}"),
        }
    }
    assert!(matches!(
        kubectl().build(&root, "missing", &sandboxed()),
        Err(RenderError::PathNotFound { .. })
    ));
    assert!(matches!(
        kubectl().build(&root, "app/cm.yaml", &sandboxed()),
        Err(RenderError::NotADirectory { .. })
    ));
    // The outside directory was not touched.
    assert!(!outside.path().join("kustomization.yaml").exists());
}

#[test]
fn symlinks_leading_outside_cannot_be_read() {
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("secret.yaml"), &config_map("secret"));
    let tmp = tempfile::tempdir().unwrap();

    // Generated: the symlink is refused by name.
    write(&tmp.path().join("gen/cm.yaml"), &config_map("a"));
    symlink(
        outside.path().join("secret.yaml"),
        tmp.path().join("gen/leak.yaml"),
    )
    .unwrap();
    match kubectl().build(tmp.path(), "gen", &sandboxed()) {
        Err(RenderError::SymlinkEscapes { file, .. }) => assert_eq!(file, "./leak.yaml"),
        other => panic!("expected SymlinkEscapes, got {other:?}"),
    }

    // Hand-written: the symlink is gone before kustomize runs, so the build fails.
    write(
        &tmp.path().join("own/kustomization.yaml"),
        "resources:\n- leak.yaml\n",
    );
    symlink(
        outside.path().join("secret.yaml"),
        tmp.path().join("own/leak.yaml"),
    )
    .unwrap();
    match kubectl().build(tmp.path(), "own", &sandboxed()) {
        Err(RenderError::BuildFailed { stderr, .. }) => {
            assert!(stderr.contains("leak.yaml"), "{stderr}")
        }
        other => panic!("expected BuildFailed, got {other:?}"),
    }
    assert!(outside.path().join("secret.yaml").exists());
}

#[test]
fn files_outside_the_kustomization_dir_but_inside_the_artifact_load() {
    // Flux builds with LoadRestrictionsNone: an overlay may name a file in a sibling dir.
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("common/cm.yaml"), &config_map("shared"));
    write(
        &tmp.path().join("overlay/kustomization.yaml"),
        "resources:\n- ../common/cm.yaml\n",
    );
    let rendered = kubectl()
        .build(tmp.path(), "overlay", &sandboxed())
        .unwrap();
    assert_eq!(
        rendered.ids().cloned().collect::<Vec<_>>(),
        vec![ObjectId::new("v1", "ConfigMap", "web", "shared")]
    );
}

#[test]
fn build_failure_keeps_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        &tmp.path().join("app/kustomization.yaml"),
        "resources:\n- does-not-exist.yaml\n",
    );
    let err = kubectl()
        .build(tmp.path(), "app", &sandboxed())
        .unwrap_err();
    match &err {
        RenderError::BuildFailed { path, stderr, .. } => {
            assert_eq!(path, "app");
            assert!(stderr.contains("does-not-exist.yaml"), "{stderr}");
            // klog's prefix is gone.
            assert!(!stderr.contains("run.go"), "{stderr}");
        }
        other => panic!("expected BuildFailed, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.starts_with("kustomize build of \"app\" failed"),
        "{message}"
    );
}

/// Run a build, retrying while the freshly written fake binary is still open for writing in a
/// process that another test thread forked (ETXTBSY).
fn build_retrying(
    renderer: &Renderer,
    root: &Path,
    timeout: Duration,
    confinement: Confinement,
) -> Result<Rendered, RenderError> {
    for _ in 0..50 {
        let options = BuildOptions {
            timeout,
            confinement,
            remote_bases: true,
            target_namespace: None,
        };
        match renderer.build(root, "", &options) {
            Err(RenderError::Spawn { source, .. }) if source.raw_os_error() == Some(26) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other,
        }
    }
    panic!("fake binary stayed busy");
}

#[test]
fn timeout_kills_the_build() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("bin/kustomize");
    executable(&fake, "#!/bin/sh\nsleep 30\necho never\n");
    let root = tmp.path().join("root");
    write(&root.join("kustomization.yaml"), "resources: []\n");

    let renderer = Renderer::with_binary(&fake, Tool::Kustomize);
    let start = Instant::now();
    // The script runs `sleep`, which no sandbox lets it execute.
    match build_retrying(
        &renderer,
        &root,
        Duration::from_millis(300),
        Confinement::Unconfined,
    ) {
        Err(RenderError::Timeout { after, .. }) => {
            assert_eq!(after, Duration::from_millis(300))
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn fake_kustomize_gets_build_and_load_restrictor() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("bin/my-kustomize");
    executable(
        &fake,
        "#!/bin/sh\n[ \"$1 $2 $3\" = 'build --load-restrictor LoadRestrictionsNone' ] || exit 7\n\
         [ \"$4\" = \"$(pwd -P)\" ] || exit 8\n\
         printf 'apiVersion: v1\\nkind: Namespace\\nmetadata:\\n  name: n\\n'\n",
    );
    let root = tmp.path().join("root");
    write(&root.join("kustomization.yaml"), "resources: []\n");
    // The same command line and working directory in every sandbox (the script uses shell
    // builtins only, and its interpreter is allowed as the binary's loader).
    for confinement in [
        Confinement::Unconfined,
        Confinement::Landlock,
        Confinement::Namespace,
    ] {
        let rendered = build_retrying(
            &Renderer::with_binary(&fake, Tool::Kustomize),
            &root,
            TIMEOUT,
            confinement,
        )
        .unwrap_or_else(|e| panic!("{confinement:?}: {e}"));
        assert_eq!(
            rendered.ids().cloned().collect::<Vec<_>>(),
            vec![ObjectId::new("v1", "Namespace", "", "n")]
        );
    }
}

#[test]
fn detection_prefers_explicit_then_kustomize_then_kubectl() {
    let tmp = tempfile::tempdir().unwrap();
    let both = tmp.path().join("both");
    let only_kubectl = tmp.path().join("only");
    let nothing = tmp.path().join("nothing");
    for dir in [&both, &only_kubectl, &nothing] {
        fs::create_dir_all(dir).unwrap();
    }
    executable(&both.join("kustomize"), "#!/bin/sh\n");
    executable(&both.join("kubectl"), "#!/bin/sh\n");
    executable(&only_kubectl.join("kubectl"), "#!/bin/sh\n");
    write(&nothing.join("kustomize"), "not executable");

    let path_of = |dirs: &[&Path]| Some(std::env::join_paths(dirs).unwrap());

    let found = detect_from(None, path_of(&[&nothing, &both])).unwrap();
    assert_eq!(
        found,
        Renderer::with_binary(both.join("kustomize"), Tool::Kustomize)
    );
    let found = detect_from(None, path_of(&[&nothing, &only_kubectl])).unwrap();
    assert_eq!(
        found,
        Renderer::with_binary(only_kubectl.join("kubectl"), Tool::Kubectl)
    );
    assert_eq!(
        found.describe(),
        format!(
            "kubectl kustomize ({})",
            only_kubectl.join("kubectl").display()
        )
    );

    let err = detect_from(None, path_of(&[&nothing])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no kustomize found: install kustomize or kubectl, or set GITOPSD_KUSTOMIZE"
    );
    assert!(matches!(
        detect_from(None, None),
        Err(RenderError::NoKustomize)
    ));

    // Explicit: a path, or a name on PATH; kubectl-named binaries run as `kubectl kustomize`.
    let explicit = detect_from(Some(KUBECTL.into()), None).unwrap();
    assert_eq!(explicit.tool(), Tool::Kubectl);
    let explicit = detect_from(Some("kustomize".into()), path_of(&[&both])).unwrap();
    assert_eq!(
        explicit,
        Renderer::with_binary(both.join("kustomize"), Tool::Kustomize)
    );
    assert!(matches!(
        detect_from(Some(nothing.join("kustomize").into()), None),
        Err(RenderError::UnusableBinary { .. })
    ));
    assert!(matches!(
        detect_from(Some("kustomize".into()), path_of(&[&nothing])),
        Err(RenderError::UnusableBinary { .. })
    ));
    // An empty value is as good as unset.
    assert_eq!(
        detect_from(Some("".into()), path_of(&[&both]))
            .unwrap()
            .tool(),
        Tool::Kustomize
    );
}

#[test]
fn stderr_summary_strips_klog_and_truncates() {
    let stderr = b"E1124 05:42:16.984418    8620 run.go:72] \"command failed\" err=\"boom\"\n\nError: plain\n";
    assert_eq!(
        summarize_stderr(stderr),
        "\"command failed\" err=\"boom\"\nError: plain"
    );
    let many: String = (0..40).map(|i| format!("line {i}\n")).collect();
    let summary = summarize_stderr(many.as_bytes());
    assert!(summary.ends_with("... (28 more lines)"), "{summary}");
    assert_eq!(summarize_stderr(b""), "no error output");
}

fn options(confinement: Confinement, remote_bases: bool) -> BuildOptions {
    BuildOptions {
        timeout: TIMEOUT,
        confinement,
        remote_bases,
        target_namespace: None,
    }
}

#[test]
fn sandboxes_keep_generators_inside_the_artifact() {
    let outside = tempfile::tempdir().unwrap();
    write(&outside.path().join("secret.txt"), "TOP-SECRET\n");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    write(&root.join("common/data.txt"), "shared-value\n");
    write(
        &root.join("inside/kustomization.yaml"),
        "configMapGenerator:\n- name: ok\n  files:\n  - ../common/data.txt\n",
    );
    write(
        &root.join("leak/kustomization.yaml"),
        &format!(
            "configMapGenerator:\n- name: leak\n  files:\n  - {}\n",
            outside.path().join("secret.txt").display()
        ),
    );

    // Unconfined, the generator reads the file: this is what the sandboxes prevent.
    let leaked = kubectl()
        .build(&root, "leak", &options(Confinement::Unconfined, true))
        .unwrap();
    assert!(leaked.yaml.contains("TOP-SECRET"));

    for confinement in [Confinement::Landlock, Confinement::Namespace] {
        // Flux's behaviour inside the artifact stays: a sibling directory is readable.
        let inside = kubectl()
            .build(&root, "inside", &options(confinement, true))
            .unwrap_or_else(|e| panic!("{confinement:?}: {e}"));
        assert!(inside.yaml.contains("shared-value"), "{}", inside.yaml);

        match kubectl().build(&root, "leak", &options(confinement, true)) {
            Err(e @ RenderError::BuildFailed { .. }) => {
                let message = e.to_string();
                assert!(
                    message.starts_with(
                        "kustomize build of \"leak\" failed (exit status: 1, in a sandbox that \
                         reads only the artifact): "
                    ),
                    "{message}"
                );
                assert!(message.contains("secret.txt"), "{confinement:?}: {message}");
                assert!(!message.contains("TOP-SECRET"), "{message}");
            }
            other => panic!("{confinement:?}: expected BuildFailed, got {other:?}"),
        }
    }
    // The sandbox's working files are gone.
    assert_eq!(
        fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>(),
        vec![std::ffi::OsString::from("root")]
    );
}

/// A one-file HTTP server on loopback that answers every request with `body`; returns its
/// URL and how many requests reached it.
fn serve_once_per_request(body: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cm.yaml", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            counted.fetch_add(1, Ordering::SeqCst);
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, hits)
}

#[test]
fn remote_resources_load_in_the_sandbox_only_when_allowed() {
    let (url, hits) = serve_once_per_request(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: remote\ndata:\n  k: v\n",
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    write(
        &root.join("app/kustomization.yaml"),
        &format!("resources:\n- {url}\n"),
    );

    for confinement in [Confinement::Landlock, Confinement::Namespace] {
        // Allowed (Flux's default): the sandbox lets kustomize reach the network.
        let rendered = kubectl()
            .build(&root, "app", &options(confinement, true))
            .unwrap_or_else(|e| panic!("{confinement:?}: {e}"));
        assert_eq!(
            rendered.ids().cloned().collect::<Vec<_>>(),
            vec![ObjectId::new("v1", "ConfigMap", "", "remote")]
        );

        // Disabled: refused before the build, naming the URL.
        let before = hits.load(Ordering::SeqCst);
        match kubectl().build(&root, "app", &options(confinement, false)) {
            Err(e @ RenderError::RemoteBase { .. }) => assert_eq!(
                e.to_string(),
                format!(
                    "kustomization path \"app\": app/kustomization.yaml refers to the remote \
                     resources {url}, and remote bases are disabled (render.remoteBases: \
                     false); vendor it into the repository or allow remote bases"
                )
            ),
            other => panic!("{confinement:?}: expected RemoteBase, got {other:?}"),
        }

        // And should the check miss a reference, the sandbox itself has no network: the
        // build is run here without the check.
        let dir = root.canonicalize().unwrap().join("app");
        let jail = sandbox::Jail::prepare(
            confinement,
            &root.canonicalize().unwrap(),
            &dir,
            Path::new(KUBECTL),
            false,
        )
        .unwrap();
        let mut command = kubectl().command(jail.program(), &dir);
        jail.apply(&mut command);
        let Ok(finished) = run::run_with_timeout(command, TIMEOUT) else {
            panic!("{confinement:?}: kubectl did not run");
        };
        assert!(!finished.status.success(), "{confinement:?}");
        assert_eq!(hits.load(Ordering::SeqCst), before, "{confinement:?}");
    }
}
