//! Configuration: YAML schema, validation with file:line:col diagnostics.
//!
//! Entry points: [`load`] and [`load_str`], which return the validated [`Settings`] or every
//! [`Diagnostic`]. This module owns the file's layout and the sections that are nobody
//! else's (top level, `server`, `kubernetes`, `render`, configurations, kustomizations); a
//! source's kind-specific keys are decoded and checked by the kind (`source::<kind>::config`),
//! and the reading machinery they share is `syntax`, below both.
//!
//! Loading runs in three passes over one document, each collecting problems instead of
//! stopping at the first: `positions` reads the YAML into a tree that remembers where every
//! key and value was written (syntax errors, duplicate keys), `schema` checks which keys exist
//! and what shape each has (unknown fields, missing required ones), and `validate` parses the
//! values into [`Settings`] (durations, URLs, refs, names, paths, dependsOn). The caller gets
//! either a fully valid [`Settings`] or every [`Diagnostic`] found, sorted by position.

pub mod events;
pub mod model;
pub(crate) mod schema;
pub(crate) mod validate;

#[cfg(test)]
mod git_tests;

pub use model::*;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::syntax::positions::{self, Problem, Problems};

/// One problem in a config file. `line` and `column` are 1-based; both are 0 when the
/// problem concerns the file as a whole (it could not be read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

/// Every problem found in a config file, in file order. Displays as one
/// `file:line:col: message` line per problem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    fn from_problems(file: &Path, problems: Vec<Problem>) -> Self {
        let mut diagnostics: Vec<Diagnostic> = problems
            .into_iter()
            .map(|problem| Diagnostic {
                file: file.to_path_buf(),
                line: problem.pos.line,
                column: problem.pos.column,
                message: problem.message,
            })
            .collect();
        diagnostics.sort_by_key(|d| (d.line, d.column));
        Diagnostics(diagnostics)
    }

    fn whole_file(file: &Path, message: String) -> Self {
        Diagnostics(vec![Diagnostic {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            message,
        }])
    }
}

impl std::ops::Deref for Diagnostics {
    type Target = [Diagnostic];

    fn deref(&self) -> &[Diagnostic] {
        &self.0
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Reads and validates the config file at `path`. Relative paths inside it resolve against
/// the file's directory.
pub fn load(path: &Path) -> Result<Settings, Diagnostics> {
    let text =
        read_config(path).map_err(|message| Diagnostics::whole_file(path, message.to_string()))?;
    let base_dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    load_str(&text, path, base_dir)
}

/// A config file larger than this is refused before it is parsed: a few thousand
/// configurations take well under a megabyte, and parsing cost grows with the text.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("cannot read the config file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the config file is larger than {} MiB; gitopsd refuses to parse it", MAX_CONFIG_BYTES / 1024 / 1024)]
    TooLarge,
    #[error("cannot read the config file: it is not UTF-8 text")]
    NotUtf8,
}

fn read_config(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    // Read one byte past the limit rather than trusting the size in the metadata, which a
    // pipe or /proc file does not have.
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// Validates config `text`. `file_name` only labels diagnostics; relative paths in the text
/// resolve against `base_dir` (made absolute against the working directory if needed).
pub fn load_str(text: &str, file_name: &Path, base_dir: &Path) -> Result<Settings, Diagnostics> {
    let base_dir = std::path::absolute(base_dir).map_err(|err| {
        Diagnostics::whole_file(
            file_name,
            format!(
                "cannot resolve the config directory {}: {err}",
                base_dir.display()
            ),
        )
    })?;
    let mut problems = Problems::new();
    let root = match positions::parse(text, &mut problems) {
        Ok(root) => root,
        Err(syntax_error) => {
            let mut all = problems.into_vec();
            all.push(syntax_error);
            return Err(Diagnostics::from_problems(file_name, all));
        }
    };
    let raw = schema::decode(&root, &mut problems);
    let settings = validate::validate(&raw, &base_dir, &mut problems);
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(Diagnostics::from_problems(file_name, problems.into_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn load_test(text: &str) -> Result<Settings, Diagnostics> {
        load_str(text, Path::new("gitopsd.yaml"), Path::new("/etc/gitopsd"))
    }

    /// (line, column, message) of each diagnostic.
    fn problems(text: &str) -> Vec<(usize, usize, String)> {
        load_test(text)
            .expect_err("config should be rejected")
            .into_iter()
            .map(|d| (d.line, d.column, d.message))
            .collect()
    }

    const FULL: &str = r#"
stateDir: ./state
server: { listen: "0.0.0.0:9191" }
maxConcurrentFetches: 8
configurations:
  - name: cluster-config
    namespace: cluster-config
    scope: cluster
    suspend: true
    source:
      kind: git
      url: ssh://git@github.com/org/fleet
      ref: { branch: main, commit: 0123456789ABCDEF0123456789abcdef01234567 }
      interval: 1m30s
      timeout: 90s
      retryInterval: 2h
      gitImplementation: gix
      ignore: |
        /docs
        *.md
      suspend: false
      publish: { directory: ../srv/app, link: live }
    kustomizations:
      - name: infra
        path: ./infrastructure
        prune: true
      - name: apps
        path: /apps/edge/
        dependsOn: [infra]
        interval: 5m
        retryInterval: 1m
        timeout: 3m
        wait: true
        force: true
        suspend: false
        target: { directory: ./out/apps }
  - name: edge-local
    source: { kind: git, url: "file:///srv/git/edge.git", ref: { semver: ">=1.0.0 <2.0.0" } }
    kustomizations:
      - { name: web, path: ./web, target: { directory: /var/lib/rancher/k3s/server/manifests/web } }
"#;

    #[test]
    fn full_config_loads_with_values_and_defaults() {
        let settings = load_test(FULL).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.state_dir, Path::new("/etc/gitopsd/state"));
        assert_eq!(settings.listen, "0.0.0.0:9191".parse().unwrap());
        assert_eq!(settings.max_concurrent_fetches, 8);
        assert_eq!(settings.configurations.len(), 2);

        let cluster = &settings.configurations[0];
        assert_eq!(cluster.name, "cluster-config");
        assert_eq!(cluster.namespace, "cluster-config");
        assert!(cluster.suspend);
        let source = &cluster.source;
        assert_eq!(source.kind(), SourceKind::Git);
        assert_eq!(source.url, "ssh://git@github.com/org/fleet");
        assert_eq!(
            source.git().unwrap().reference,
            GitReference::Commit {
                sha: "0123456789abcdef0123456789abcdef01234567".into(),
                branch: Some("main".into()),
            }
        );
        assert_eq!(source.interval, Duration::from_secs(90));
        assert_eq!(source.timeout, Duration::from_secs(90));
        assert_eq!(source.retry_interval, Duration::from_secs(7200));
        assert_eq!(source.git().unwrap().implementation, GitImplementation::Gix);
        assert_eq!(source.ignore.as_deref(), Some("/docs\n*.md\n"));
        assert!(!source.suspend);
        let publish = source.publish.as_ref().unwrap();
        assert_eq!(publish.directory, Path::new("/etc/srv/app"));
        assert_eq!(publish.link, "live");

        let [infra, apps] = &cluster.kustomizations[..] else {
            panic!("two kustomizations expected")
        };
        assert_eq!(infra.name, "infra");
        assert_eq!(infra.path, "infrastructure");
        assert!(infra.prune);
        assert!(infra.depends_on.is_empty());
        assert_eq!(infra.interval, DEFAULT_INTERVAL);
        assert_eq!(infra.retry_interval, DEFAULT_INTERVAL);
        assert_eq!(infra.timeout, DEFAULT_INTERVAL);
        assert!(!infra.wait && !infra.force && !infra.suspend);
        assert!(matches!(infra.target, Target::None));
        assert_eq!(apps.path, "apps/edge");
        assert_eq!(apps.depends_on, vec!["infra".to_string()]);
        assert_eq!(apps.interval, Duration::from_secs(300));
        assert_eq!(apps.retry_interval, Duration::from_secs(60));
        assert_eq!(apps.timeout, Duration::from_secs(180));
        assert!(apps.wait && apps.force && !apps.suspend && !apps.prune);
        assert!(
            matches!(&apps.target, Target::Directory(d) if d == Path::new("/etc/gitopsd/out/apps"))
        );

        let edge = &settings.configurations[1];
        assert_eq!(edge.namespace, "default");
        assert!(!edge.suspend);
        assert_eq!(
            edge.source.git().unwrap().reference,
            GitReference::Semver(">=1.0.0 <2.0.0".into())
        );
        assert_eq!(edge.source.interval, DEFAULT_INTERVAL);
        assert_eq!(
            edge.source.git().unwrap().implementation,
            GitImplementation::Auto
        );
        assert!(edge.source.publish.is_none());
        assert!(edge.source.ignore.is_none());
        assert_eq!(edge.kustomizations[0].path, "web");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let settings = load_test(
            "configurations:\n  - name: a\n    source: {kind: git, url: 'git@host:org/repo'}\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.state_dir, Path::new(validate::DEFAULT_STATE_DIR));
        assert_eq!(settings.listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(settings.max_concurrent_fetches, 4);
        let source = &settings.configurations[0].source;
        assert_eq!(source.git().unwrap().reference, GitReference::RemoteHead);
        assert_eq!(source.timeout, DEFAULT_INTERVAL);
        assert_eq!(source.retry_interval, DEFAULT_INTERVAL);
        assert!(settings.configurations[0].kustomizations.is_empty());
        assert!(load_test("configurations: []\n")
            .unwrap()
            .configurations
            .is_empty());
    }

    #[test]
    fn ref_precedence() {
        let reference = |r: &str| {
            let text = format!(
                "configurations:\n  - name: a\n    source: {{kind: git, url: 'https://h/r', ref: {r}}}\n"
            );
            load_test(&text)
                .unwrap_or_else(|e| panic!("{e}"))
                .configurations[0]
                .source
                .git()
                .unwrap()
                .reference
                .clone()
        };
        let sha = "a".repeat(40);
        assert_eq!(
            reference(&format!("{{commit: {sha}, name: refs/x, tag: v1}}")),
            GitReference::Commit {
                sha: sha.clone(),
                branch: None
            }
        );
        assert_eq!(
            reference("{name: refs/pull/1/head, tag: v1, semver: '1.x', branch: b}"),
            GitReference::Name("refs/pull/1/head".into())
        );
        assert_eq!(
            reference("{tag: v1, semver: '1.x', branch: b}"),
            GitReference::Tag("v1".into())
        );
        assert_eq!(
            reference("{semver: '1.x', branch: b}"),
            GitReference::Semver("1.x".into())
        );
        assert_eq!(reference("{branch: b}"), GitReference::Branch("b".into()));
        assert_eq!(reference("{}"), GitReference::RemoteHead);
    }

    #[test]
    fn every_problem_is_reported_at_its_position() {
        let text = r#"stateDir: ./state
configurations:
  - name: edge
    source:
      kind: git
      url: "https://exa mple.com/repo"
      ref: { semver: "banana" }
      interval: 10 minutes
    kustomizations:
      - name: a
        dependsOn: [b]
        wiat: true
      - name: b
        path: ../outside
        dependsOn: [a]
  - name: edge
    source: { kind: git, url: "file:///srv/git/edge.git" }
"#;
        let found = problems(text);
        let positions: Vec<(usize, usize)> = found.iter().map(|(l, c, _)| (*l, *c)).collect();
        assert_eq!(
            positions,
            vec![
                (6, 12),
                (7, 22),
                (8, 17),
                (12, 9),
                (14, 15),
                (15, 21),
                (16, 11)
            ],
            "{found:#?}"
        );
        let messages: Vec<&str> = found.iter().map(|(_, _, m)| m.as_str()).collect();
        assert_eq!(
            messages[0],
            "invalid URL for source.url: it contains a space or control character"
        );
        assert!(
            messages[1].starts_with("invalid semver range \"banana\" in source.ref: "),
            "{}",
            messages[1]
        );
        assert_eq!(
            messages[2],
            "invalid duration \"10 minutes\" for interval: expected a Go duration such as 90s, 10m or 1h30m"
        );
        assert!(
            messages[3].starts_with(
                "unknown field `wiat` in `kustomization` (did you mean `wait`?), expected one of `name`, `path`"
            ),
            "{}",
            messages[3]
        );
        assert!(
            messages[4].starts_with("path \"../outside\" escapes"),
            "{}",
            messages[4]
        );
        assert_eq!(messages[5], "dependsOn cycle: a -> b -> a");
        assert_eq!(
            messages[6],
            "duplicate configuration `edge` in namespace `default` (first defined at line 3)"
        );
    }

    #[test]
    fn value_problems() {
        let text = r#"maxConcurrentFetches: 0
server:
  listen: localhost:9090
configurations:
  - name: Bad_Name
    namespace: ns
    scope: everywhere
    suspend: yes
    source:
      kind: svn
      url: ftp://host/repo
      ref: { commit: abc, name: main, branch: "a b" }
      timeout: 0s
      retryInterval: -1m
      gitImplementation: libgit2
      publish: { directory: /srv, link: a/b }
    kustomizations:
      - name: x
        dependsOn: [missing, x]
        timeout: 5min
      - name: x
        target: { directory: "" }
"#;
        let found = problems(text);
        let summary: Vec<(usize, usize, &str)> = found
            .iter()
            .map(|(l, c, m)| (*l, *c, m.split([':', '(']).next().unwrap()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, 23, "invalid value \"0\" for maxConcurrentFetches"),
                (3, 11, "invalid listen address \"localhost"),
                (5, 11, "invalid configuration name \"Bad_Name\""),
                (7, 12, "invalid scope \"everywhere\""),
                (8, 14, "invalid value \"yes\" for suspend"),
                (10, 13, "unknown source kind \"svn\""),
                (11, 12, "invalid URL for source.url"),
                (12, 22, "invalid commit \"abc\" in source.ref"),
                (12, 33, "invalid ref name \"main\" in source.ref"),
                (12, 47, "invalid branch \"a b\" in source.ref"),
                (13, 16, "invalid duration \"0s\" for timeout"),
                (14, 22, "invalid duration \"-1m\" for retryInterval"),
                (15, 26, "invalid gitImplementation \"libgit2\""),
                (16, 41, "invalid publish.link \"a/b\""),
                (19, 21, "kustomization `x` depends on `missing`, which is not a kustomization of this configuration"),
                (19, 30, "dependsOn cycle"),
                (20, 18, "invalid duration \"5min\" for timeout"),
                (21, 15, "duplicate kustomization `x` in this configuration "),
                (22, 30, "target.directory must not be empty; expected a directory path"),
            ],
            "{found:#?}"
        );
    }

    #[test]
    fn longer_cycles_are_named_in_order_and_names_are_per_namespace() {
        let text = r#"configurations:
  - name: one
    source: { kind: git, url: "https://h/r" }
    kustomizations:
      - { name: a, dependsOn: [b] }
      - { name: b, dependsOn: [c] }
      - { name: c, dependsOn: [a] }
      - { name: d, dependsOn: [a] }
  - name: one
    namespace: other
    source: { kind: git, url: "https://h/r" }
"#;
        assert_eq!(
            problems(text),
            vec![(7, 32, "dependsOn cycle: a -> b -> c -> a".to_string())]
        );
    }

    #[test]
    fn syntax_error_is_reported_at_the_scanner_position() {
        let err = load_test("stateDir: ./s\nconfigurations: [1, 2\nserver: {}\n").unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!((err[0].line, err[0].column), (3, 7));
        assert!(
            err[0].message.starts_with("YAML syntax error: "),
            "{}",
            err[0].message
        );
    }

    #[test]
    fn unknown_top_level_key_and_display() {
        let err = load_test("configurations: []\ncluster:\n  kubeconfig: /x\n").unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!((err[0].line, err[0].column), (2, 1));
        assert_eq!(
            err.to_string(),
            "gitopsd.yaml:2:1: unknown field `cluster` at the top level, expected one of \
             `stateDir`, `server`, `kubernetes`, `maxConcurrentFetches`, `render`, `configurations`, \
             `receivers`, `providers`, `alerts`"
        );
    }

    #[test]
    fn kubernetes_section_and_local_auth_ref_secret() {
        let text = r#"kubernetes: { kubeconfig: ./kube/config, context: edge }
configurations:
  - name: fleet
    namespace: team
    source:
      kind: git
      url: https://example.com/fleet
      localAuthRef: { secret: git-auth }
"#;
        let settings = load_test(text).unwrap_or_else(|e| panic!("{e}"));
        let kubernetes = settings.kubernetes.clone().unwrap();
        assert_eq!(
            kubernetes,
            KubernetesSettings {
                connection: crate::vocab::KubeConnection::Kubeconfig(PathBuf::from(
                    "/etc/gitopsd/kube/config",
                )),
                context: Some("edge".into()),
            }
        );
        let auth = &settings.configurations[0].source.git().unwrap().auth;
        assert!(auth.local_auth_ref.is_none());
        assert_eq!(
            auth.local_auth_secret,
            Some(SecretRef {
                kubernetes,
                namespace: "team".into(),
                name: "git-auth".into(),
            })
        );
        // Without `namespace`, the Secret is read in "default", like everything else.
        let settings = load_test(
            "kubernetes: { kubeconfig: /k }\nconfigurations:\n  - name: a\n    source: { kind: git, url: 'ssh://git@h/r', localAuthRef: { secret: s } }\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let secret = settings.configurations[0]
            .source
            .git()
            .unwrap()
            .auth
            .local_auth_secret
            .clone();
        assert_eq!(secret.unwrap().to_string(), "default/s");
        assert!(load_test("configurations: []\n")
            .unwrap()
            .kubernetes
            .is_none());
        // A bucket's `accesskey` and `secretkey` come from a Secret the same way.
        let settings = load_test(
            "kubernetes: { kubeconfig: /k }\nconfigurations:\n  - name: a\n    source: { kind: bucket, url: 'https://s3', bucketName: fleet, localAuthRef: { secret: s3-keys } }\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let SourceSpec::Bucket(bucket) = &settings.configurations[0].source.spec else {
            panic!("a bucket source expected")
        };
        assert!(
            matches!(&bucket.credentials, BucketCredentials::LocalAuthSecret(s) if s.name == "s3-keys"),
            "{:?}",
            bucket.credentials
        );
        assert!(settings.configurations[0].source.git().is_none());
        // And an azblob source's keys (`accountKey`, `sasKey`, the service principal's ...).
        let settings = load_test(
            "kubernetes: { kubeconfig: /k }\nconfigurations:\n  - name: a\n    source: { kind: azblob, url: 'https://acct.blob.core.windows.net', containerName: fleet, localAuthRef: { secret: azure } }\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let SourceSpec::AzureBlob(azure) = &settings.configurations[0].source.spec else {
            panic!("an azblob source expected")
        };
        assert!(
            matches!(&azure.auth, AzureAuth::LocalAuthSecret(s) if s.name == "azure"),
            "{:?}",
            azure.auth
        );
    }

    #[test]
    fn local_auth_ref_secret_problems() {
        // A Secret needs a cluster.
        let text = "configurations:\n  - name: a\n    source: { kind: git, url: 'https://h/r', localAuthRef: { secret: git } }\n";
        assert_eq!(
            problems(text),
            vec![(
                3,
                70,
                "`localAuthRef.secret` names a Kubernetes Secret, which needs a cluster: add the \
                 top-level `kubernetes: { kubeconfig: PATH }`, or use `localAuthRef.directory`"
                    .to_string()
            )]
        );
        let text = r#"kubernetes: {}
configurations:
  - name: a
    source:
      kind: git
      url: https://h/r
      httpsUser: u
      httpsKey: k
      localAuthRef: { secret: Not_A_Name }
  - name: b
    source:
      kind: git
      url: https://h/r
      localAuthRef: { directory: /d, secret: s }
  - name: c
    source: { kind: git, url: 'https://h/r', localAuthRef: {} }
  - name: d
    source: { kind: bucket, url: 'https://s3', bucketName: fleet, bucketAccessKey: a, bucketSecretKey: b, localAuthRef: { secret: s } }
"#;
        let found = problems(text);
        let expected: Vec<(usize, usize, &str)> = vec![
            (
                7,
                18,
                "`httpsUser` cannot be combined with `localAuthRef` (line 9)",
            ),
            (
                8,
                17,
                "`httpsKey` cannot be combined with `localAuthRef` (line 9)",
            ),
            (
                9,
                31,
                "invalid Secret name \"Not_A_Name\" in localAuthRef.secret: ",
            ),
            (
                14,
                46,
                "`localAuthRef` takes either `directory` or `secret`, not both",
            ),
            (
                16,
                60,
                "`localAuthRef` needs `directory` (a directory of Flux's keys)",
            ),
            (
                18,
                131,
                "a bucket source takes either keys (bucketAccessKey/bucketSecretKey or their",
            ),
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for ((line, column, message), (l, c, prefix)) in found.iter().zip(expected) {
            assert_eq!((*line, *column), (l, c), "{message}");
            assert!(message.starts_with(prefix), "{message}");
        }
        // The kubeconfig may not be empty; a context may be left out but not left empty.
        let found = problems("kubernetes: { kubeconfig: '', context: '' }\nconfigurations: []\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0]
            .2
            .starts_with("kubernetes.kubeconfig must not be empty"));
        assert!(found[1]
            .2
            .starts_with("kubernetes.context must not be empty"));
    }

    #[test]
    fn render_settings_are_inherited_and_checked() {
        use crate::render::{RenderSettings, SandboxMode};
        let text = r#"render: { sandbox: namespace, remoteBases: false }
configurations:
  - name: a
    source: { kind: git, url: "https://h/r" }
  - name: b
    render: { sandbox: none }
    source: { kind: git, url: "https://h/r" }
  - name: c
    render: { remoteBases: true, sandbox: landlock }
    source: { kind: git, url: "https://h/r" }
"#;
        let settings = load_test(text).unwrap_or_else(|e| panic!("{e}"));
        let render: Vec<RenderSettings> =
            settings.configurations.iter().map(|c| c.render).collect();
        let expect = |sandbox, remote_bases| RenderSettings {
            sandbox,
            remote_bases,
        };
        assert_eq!(settings.render, expect(SandboxMode::Namespace, false));
        assert_eq!(
            render,
            vec![
                expect(SandboxMode::Namespace, false),
                expect(SandboxMode::None, false),
                expect(SandboxMode::Landlock, true),
            ]
        );
        // Unset everywhere: auto, and remote bases allowed (Flux's default).
        let settings = load_test(
            "configurations:\n  - name: a\n    source: {kind: git, url: 'https://h/r'}\n",
        )
        .unwrap();
        assert_eq!(settings.configurations[0].render, RenderSettings::default());
        assert_eq!(RenderSettings::default(), expect(SandboxMode::Auto, true));

        let text = r#"render: { sandbox: chroot }
configurations:
  - name: a
    render: { remoteBases: maybe, sandox: none }
    source: { kind: git, url: "https://h/r" }
"#;
        let found = problems(text);
        let summary: Vec<(usize, usize, &str)> =
            found.iter().map(|(l, c, m)| (*l, *c, m.as_str())).collect();
        assert_eq!(
            summary,
            vec![
                (
                    1,
                    20,
                    "invalid render.sandbox \"chroot\": expected `auto`, `landlock`, `namespace` \
                     or `none`"
                ),
                (
                    4,
                    28,
                    "invalid value \"maybe\" for render.remoteBases: expected true or false"
                ),
                (
                    4,
                    35,
                    "unknown field `sandox` in `render` (did you mean `sandbox`?), expected one \
                     of `sandbox`, `remoteBases`"
                ),
            ]
        );
    }

    #[test]
    fn display_has_one_line_per_problem() {
        let err = load_test("configurations: {}\nstateDir: [a]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "gitopsd.yaml:1:17: expected a list for `configurations`, found a mapping\n\
             gitopsd.yaml:2:11: expected a single value for `stateDir`, found a list"
        );
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let found = problems("configurations: []\nstateDir: /a\nstateDir: /b\n");
        assert_eq!(
            found,
            vec![(
                3,
                1,
                "duplicate key `stateDir` (first defined at line 2)".to_string()
            )]
        );
    }

    #[test]
    fn load_resolves_against_the_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gitopsd.yaml");
        std::fs::write(&path, "stateDir: state\nconfigurations: []\n").unwrap();
        let settings = load(&path).unwrap();
        assert_eq!(settings.state_dir, dir.path().join("state"));

        let missing = dir.path().join("absent.yaml");
        let err = load(&missing).unwrap_err();
        assert_eq!((err[0].line, err[0].column), (0, 0));
        assert!(err.to_string().starts_with(&format!(
            "{}: cannot read the config file",
            missing.display()
        )));
    }

    /// "Billion laughs": ten levels of ten aliases each would be 10^10 nodes.
    const ALIAS_BOMB: &str = "a: &a [x, x, x, x, x, x, x, x, x, x]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
j: &j [*i, *i, *i, *i, *i, *i, *i, *i, *i, *i]
";

    #[test]
    fn alias_bomb_is_refused_at_the_alias_that_overflows() {
        let found = problems(ALIAS_BOMB);
        assert_eq!(found.len(), 1, "{found:?}");
        let (line, _, message) = &found[0];
        // 10^5 nodes fit under the bound, 10^6 do not: the sixth line overflows.
        assert_eq!(*line, 6, "{message}");
        assert_eq!(
            message,
            &format!(
                "YAML aliases expand this document to more than {} values; a config file never \
                 needs that many (is this an alias bomb?)",
                crate::syntax::positions::MAX_NODES
            )
        );
    }

    #[test]
    fn ordinary_aliases_still_expand() {
        let text = "stateDir: &dir /srv/state
configurations:
  - name: web
    source: &src { kind: git, url: \"file:///srv/git/web.git\", interval: 1m }
  - name: api
    source: *src
";
        let settings = load_test(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.configurations.len(), 2);
        assert_eq!(
            settings.configurations[1].source.url,
            "file:///srv/git/web.git"
        );
    }

    #[test]
    fn oversized_config_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gitopsd.yaml");
        let padding = "#".repeat(MAX_CONFIG_BYTES as usize);
        std::fs::write(&path, format!("configurations: []\n{padding}\n")).unwrap();
        let err = load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: the config file is larger than 4 MiB; gitopsd refuses to parse it",
                path.display()
            )
        );
    }

    #[test]
    fn intervals_below_one_second_are_refused() {
        let found = problems(
            "configurations:
  - name: web
    source: { kind: git, url: \"file:///srv/git/web.git\", interval: 1ns, retryInterval: 500ms }
    kustomizations:
      - { name: app, interval: 999ms }
",
        );
        let messages: Vec<&str> = found.iter().map(|(_, _, m)| m.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "invalid duration \"1ns\" for interval: must be at least 1s",
                "invalid duration \"500ms\" for retryInterval: must be at least 1s",
                "invalid duration \"999ms\" for interval: must be at least 1s",
            ]
        );
        assert_eq!((found[0].0, found[2].0), (3, 5));
    }

    #[test]
    fn two_kustomizations_writing_one_file_are_refused_with_both_positions() {
        let found = problems(
            "configurations:
  - name: web
    source: { kind: git, url: \"file:///srv/git/web.git\" }
    kustomizations:
      - { name: app, target: { directory: /srv/out } }
  - name: api
    namespace: other
    source: { kind: git, url: \"file:///srv/git/api.git\" }
    kustomizations:
      - { name: app, target: { directory: /srv/out/ } }
      - { name: db, target: { directory: /srv/out } }
",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].0, found[0].1), (10, 43));
        assert!(
            found[0].2.starts_with(
                "kustomization `app` would write /srv/out/app.yaml, which the kustomization at \
                 line 5, column 43 writes too"
            ),
            "{}",
            found[0].2
        );
    }

    #[test]
    fn two_sources_publishing_into_one_directory_are_refused_with_both_positions() {
        let found = problems(
            "configurations:
  - name: web
    source: { kind: git, url: \"file:///srv/git/web.git\", publish: { directory: /srv/pub } }
  - name: api
    source: { kind: git, url: \"file:///srv/git/api.git\", publish: { directory: /srv/x/../pub, link: api } }
",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, 5);
        assert!(
            found[0].2.starts_with(
                "publish.directory /srv/pub is also the publish directory of the source at line \
                 3, column "
            ),
            "{}",
            found[0].2
        );
    }

    #[test]
    fn server_section() {
        let settings = load_test("configurations: []\n").unwrap();
        assert!(settings.server.token.is_none());
        assert_eq!(settings.server.max_connections, None);
        assert_eq!(settings.server.read_timeout, validate::DEFAULT_READ_TIMEOUT);

        let settings = load_test(
            "server: { tokenFile: keys/api, maxConnections: 7, readTimeout: 3s }\n\
             configurations: []\n",
        )
        .unwrap();
        assert!(matches!(
            &settings.server.token,
            Some(SecretValue::File(path)) if path == Path::new("/etc/gitopsd/keys/api")
        ));
        assert_eq!(settings.server.max_connections, Some(7));
        assert_eq!(settings.server.read_timeout, Duration::from_secs(3));

        let text = "server:\n  token: \"a b\"\n  maxConnections: -1\n  readTimeout: 0s\n\
                    configurations: []\n";
        let found = problems(text);
        let summary: Vec<(usize, usize, &str)> =
            found.iter().map(|(l, c, m)| (*l, *c, m.as_str())).collect();
        assert_eq!(
            summary,
            vec![
                (
                    2,
                    10,
                    "invalid server.token: expected printable ASCII characters without spaces"
                ),
                (
                    3,
                    19,
                    "invalid value \"-1\" for server.maxConnections: expected a whole number of \
                     at least 1"
                ),
                (
                    4,
                    16,
                    "invalid duration \"0s\" for server.readTimeout: must be greater than zero; \
                     expected a Go duration such as 90s, 10m or 1h30m"
                ),
            ]
        );
        let found = problems("server: { token: x, tokenFile: y }\nconfigurations: []\n");
        assert_eq!(
            found,
            vec![(
                1,
                32,
                "give either server.token or server.tokenFile, not both".to_string()
            )]
        );
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.yaml");
        let settings = load(&path).unwrap_or_else(|e| panic!("{e}"));
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let source = &settings.configurations[0].source;
        assert_eq!(source.url, format!("file://{}", root.display()));
    }
}

#[cfg(test)]
mod cluster_target_tests {
    use super::*;
    use crate::apply::kubernetes::Validation;
    use std::path::Path;

    fn load_text(text: &str) -> Result<Settings, Vec<(usize, usize, String)>> {
        load_str(text, Path::new("gitopsd.yaml"), Path::new("/etc/gitopsd")).map_err(|d| {
            d.into_iter()
                .map(|d| (d.line, d.column, d.message))
                .collect()
        })
    }

    #[test]
    fn with_a_cluster_a_kustomization_without_target_applies_to_it() {
        let settings = load_text(
            r#"kubernetes: { kubeconfig: ./kube }
configurations:
  - name: web
    namespace: team
    scope: namespace
    source: { kind: git, url: "https://h/r" }
    kustomizations:
      - name: app
        targetNamespace: team
        validation: server
        serviceAccountName: deployer
        healthChecks: [{ apiVersion: apps/v1, kind: Deployment, name: web, namespace: team }]
        postBuild:
          substitute: { env: prod }
          substituteFrom: [{ kind: ConfigMap, name: vars }, { kind: Secret, name: s, optional: true }]
      - { name: files, target: { directory: /out } }
"#,
        )
        .unwrap();
        let k = &settings.configurations[0].kustomizations[0];
        let Target::Kubernetes(t) = &k.target else {
            panic!("{:?}", k.target)
        };
        assert_eq!(
            t.cluster.connection,
            KubeConnection::Kubeconfig("/etc/gitopsd/kube".into())
        );
        assert!(t.namespaced_scope);
        assert_eq!(t.validation, Validation::Server);
        assert_eq!(t.service_account.as_deref(), Some("deployer"));
        assert_eq!(t.health_checks[0].name, "web");
        assert_eq!(k.target_namespace.as_deref(), Some("team"));
        assert_eq!(k.post_build.substitute["env"], "prod");
        assert_eq!(k.post_build.substitute_from.len(), 2);
        assert!(k.post_build.substitute_from[1].secret && k.post_build.substitute_from[1].optional);
        assert!(matches!(
            settings.configurations[0].kustomizations[1].target,
            Target::Directory(_)
        ));

        // Without a cluster, today's default stays.
        let settings = load_text(
            "configurations:\n  - name: web\n    source: { kind: git, url: 'https://h/r' }\n    kustomizations: [{ name: app }]\n",
        )
        .unwrap();
        assert!(matches!(
            settings.configurations[0].kustomizations[0].target,
            Target::None
        ));
    }

    #[test]
    fn in_cluster_and_detected_connections() {
        let settings = load_text("kubernetes: { inCluster: true }\nconfigurations: []\n").unwrap();
        assert_eq!(
            settings.kubernetes.unwrap().connection,
            KubeConnection::InCluster
        );
        let settings = load_text("kubernetes: {}\nconfigurations: []\n").unwrap();
        assert_eq!(
            settings.kubernetes.unwrap().connection,
            KubeConnection::Detect
        );
        let found =
            load_text("kubernetes: { inCluster: true, kubeconfig: /k }\nconfigurations: []\n")
                .unwrap_err();
        assert_eq!(found[0].0, 1);
        assert_eq!(found[0].1, 26);
        assert!(found[0]
            .2
            .starts_with("kubernetes.inCluster and kubernetes.kubeconfig exclude"));
    }

    #[test]
    fn every_new_field_is_checked_with_its_position() {
        let found = load_text(
            r#"kubernetes: { kubeconfig: /k }
configurations:
  - name: web
    scope: namespace
    source: { kind: git, url: "https://h/r" }
    kustomizations:
      - name: a
        validation: strict
        targetNamespace: Not_A_Namespace
        serviceAccountName: "bad name"
        healthChecks: [{ kind: Deployment, name: web }]
        postBuild:
          substitute: { 1bad: x }
          substituteFrom: [{ kind: Deployment, name: x }]
      - { name: b, target: { directory: /out, kubernetes: true } }
      - { name: c, target: { directory: /out }, serviceAccountName: sa }
      - { name: d, target: {} }
"#,
        )
        .unwrap_err();
        let expected: Vec<(usize, usize, &str)> = vec![
            (8, 21, "invalid validation \"strict\""),
            (9, 26, "invalid targetNamespace \"Not_A_Namespace\""),
            (
                9,
                26,
                "targetNamespace `Not_A_Namespace` is outside the configuration's namespace",
            ),
            (10, 29, "invalid serviceAccountName \"bad name\""),
            (11, 24, "missing required field `apiVersion`"),
            (13, 25, "invalid variable name \"1bad\""),
            (14, 36, "invalid kind \"Deployment\" in substituteFrom"),
            (
                15,
                41,
                "`target` takes either `directory` or `kubernetes: true`",
            ),
            (16, 69, "`serviceAccountName` needs a cluster target"),
            (
                17,
                28,
                "`target` needs `directory: PATH` or `kubernetes: true`",
            ),
        ];
        let mut found = found;
        found.sort();
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for ((line, column, message), (l, c, prefix)) in found.iter().zip(expected) {
            assert_eq!((*line, *column), (l, c), "{message}");
            assert!(
                message.starts_with(prefix),
                "{message:?} should start with {prefix:?}"
            );
        }
    }
}
