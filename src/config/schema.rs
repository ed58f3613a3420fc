//! The config file as written: which keys exist where, and what shape (mapping, list, scalar)
//! each one has. Values stay text with their positions; `validate.rs` decides what a value
//! means, so that one bad value never hides another.
//!
//! Keys are camelCase, as in Azure's fluxConfigurations and Flux's CRDs.

use crate::source::azblob::config::{self as azblob, RawAzureBlob};
use crate::source::bucket::config::{self as bucket, RawBucket};
use crate::source::config::{self as shared, RawShared};
use crate::source::git::config::{self as git, RawGit};
use crate::syntax::fields::{Fields, TOP_LEVEL};
use crate::syntax::positions::{Node, NodeKind, Pos, Problems, Spanned};

pub use crate::syntax::fields::Text;

pub const SETTINGS_FIELDS: &[&str] = &[
    "stateDir",
    "server",
    "kubernetes",
    "maxConcurrentFetches",
    "render",
    "configurations",
    // The notification sections (`config::events`).
    "receivers",
    "providers",
    "alerts",
];
/// `render`, at the top level (the default) and in a configuration (overriding it).
pub const RENDER_FIELDS: &[&str] = &["sandbox", "remoteBases"];
pub const SERVER_FIELDS: &[&str] = &[
    "listen",
    "token",
    "tokenFile",
    "maxConnections",
    "readTimeout",
];
pub const KUBERNETES_FIELDS: &[&str] = &["kubeconfig", "context", "inCluster"];
pub const CONFIGURATION_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "scope",
    "suspend",
    "render",
    "source",
    "kustomizations",
];
pub const SOURCE_FIELDS: &[&str] = &[
    "kind",
    "url",
    "ref",
    "interval",
    "timeout",
    "retryInterval",
    "gitImplementation",
    "ignore",
    "suspend",
    "publish",
];
/// Every key a `source` mapping may have: the common ones, then each kind's own.
pub fn source_fields() -> Vec<&'static str> {
    let mut fields: Vec<&'static str> = SOURCE_FIELDS.to_vec();
    for field in azblob::FIELDS
        .iter()
        .chain(git::AUTH_FIELDS)
        .chain(bucket::FIELDS)
    {
        if !fields.contains(field) {
            fields.push(field);
        }
    }
    fields
}
pub const PUBLISH_FIELDS: &[&str] = &[
    "directory",
    "link",
    "mode",
    "execHook",
    "webhook",
    "hookTimeout",
];
pub const KUSTOMIZATION_FIELDS: &[&str] = &[
    "name",
    "path",
    "prune",
    "dependsOn",
    "interval",
    "retryInterval",
    "timeout",
    "wait",
    "force",
    "suspend",
    "target",
    "validation",
    "targetNamespace",
    "healthChecks",
    "postBuild",
    "serviceAccountName",
];
pub const TARGET_FIELDS: &[&str] = &["directory", "kubernetes"];
pub const HEALTH_CHECK_FIELDS: &[&str] = &["apiVersion", "kind", "name", "namespace"];
pub const POST_BUILD_FIELDS: &[&str] = &["substitute", "substituteFrom"];
pub const SUBSTITUTE_FROM_FIELDS: &[&str] = &["kind", "name", "optional"];

/// The whole file.
#[derive(Debug, Clone)]
pub struct RawSettings {
    pub state_dir: Option<Text>,
    pub server: Option<RawServer>,
    pub kubernetes: Option<RawKubernetes>,
    pub max_concurrent_fetches: Option<Text>,
    pub render: Option<RawRender>,
    /// `None` when missing (already reported) or not a list.
    pub configurations: Option<Vec<RawConfiguration>>,
    /// `receivers`, `providers` and `alerts`.
    pub events: super::events::RawEvents,
}

/// A `render` section, top-level or of one configuration.
#[derive(Debug, Clone)]
pub struct RawRender {
    pub sandbox: Option<Text>,
    pub remote_bases: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawServer {
    pub listen: Option<Text>,
    pub token: Option<Text>,
    pub token_file: Option<Text>,
    pub max_connections: Option<Text>,
    pub read_timeout: Option<Text>,
}

/// The top-level `kubernetes` section.
#[derive(Debug, Clone)]
pub struct RawKubernetes {
    pub kubeconfig: Option<Text>,
    pub context: Option<Text>,
    pub in_cluster: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawConfiguration {
    pub name: Option<Text>,
    pub namespace: Option<Text>,
    pub scope: Option<Text>,
    pub suspend: Option<Text>,
    pub render: Option<RawRender>,
    pub source: Option<RawSource>,
    pub kustomizations: Vec<RawKustomization>,
}

#[derive(Debug, Clone)]
pub struct RawSource {
    pub pos: Pos,
    pub kind: Option<Text>,
    pub url: Option<Text>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub retry_interval: Option<Text>,
    pub ignore: Option<Text>,
    pub suspend: Option<Text>,
    pub publish: Option<RawPublish>,
    /// The keys of each kind, decoded by the kind (every kind's, whatever `kind` says, so
    /// that a key of another kind can be reported as such).
    pub git: RawGit,
    pub azure_blob: RawAzureBlob,
    pub bucket: RawBucket,
    pub shared: RawShared,
}

#[derive(Debug, Clone)]
pub struct RawPublish {
    pub directory: Option<Text>,
    pub link: Option<Text>,
    pub mode: Option<Text>,
    pub exec_hook: Option<Text>,
    pub webhook: Option<Text>,
    pub hook_timeout: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawKustomization {
    pub name: Option<Text>,
    pub path: Option<Text>,
    pub prune: Option<Text>,
    pub depends_on: Vec<Text>,
    pub interval: Option<Text>,
    pub retry_interval: Option<Text>,
    pub timeout: Option<Text>,
    pub wait: Option<Text>,
    pub force: Option<Text>,
    pub suspend: Option<Text>,
    pub target: Option<RawTarget>,
    pub validation: Option<Text>,
    pub target_namespace: Option<Text>,
    pub health_checks: Vec<RawHealthCheck>,
    pub post_build: Option<RawPostBuild>,
    pub service_account_name: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawTarget {
    pub pos: Pos,
    pub directory: Option<Text>,
    pub kubernetes: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawHealthCheck {
    pub pos: Pos,
    pub api_version: Option<Text>,
    pub kind: Option<Text>,
    pub name: Option<Text>,
    pub namespace: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawPostBuild {
    /// Variable name (with its position) → value.
    pub substitute: Vec<(Text, Text)>,
    pub substitute_from: Vec<RawSubstituteFrom>,
}

#[derive(Debug, Clone)]
pub struct RawSubstituteFrom {
    pub pos: Pos,
    pub kind: Option<Text>,
    pub name: Option<Text>,
    pub optional: Option<Text>,
}

/// Reads the tree into the raw schema, reporting unknown keys, wrong shapes and missing
/// required keys. Returns what could be read; every problem is in `problems`.
pub fn decode(root: &Node, problems: &mut Problems) -> RawSettings {
    let Some(fields) = Fields::open(root, TOP_LEVEL, SETTINGS_FIELDS, problems) else {
        return RawSettings {
            state_dir: None,
            server: None,
            kubernetes: None,
            max_concurrent_fetches: None,
            render: None,
            configurations: None,
            events: Default::default(),
        };
    };
    let server = fields
        .mapping("server", SERVER_FIELDS, problems)
        .map(|f| RawServer {
            listen: f.text("listen", problems),
            token: f.text("token", problems),
            token_file: f.text("tokenFile", problems),
            max_connections: f.text("maxConnections", problems),
            read_timeout: f.text("readTimeout", problems),
        });
    let kubernetes = fields
        .mapping("kubernetes", KUBERNETES_FIELDS, problems)
        .map(|f| RawKubernetes {
            kubeconfig: f.text("kubeconfig", problems),
            context: f.text("context", problems),
            in_cluster: f.text("inCluster", problems),
        });
    let configurations = match fields.list("configurations", problems) {
        Some(items) => Some(
            items
                .iter()
                .filter_map(|item| configuration(item, problems))
                .collect(),
        ),
        None => {
            fields.require("configurations", problems);
            None
        }
    };
    RawSettings {
        state_dir: fields.text("stateDir", problems),
        server,
        kubernetes,
        max_concurrent_fetches: fields.text("maxConcurrentFetches", problems),
        render: render(&fields, problems),
        configurations,
        events: super::events::decode(&fields, problems),
    }
}

fn configuration(node: &Node, problems: &mut Problems) -> Option<RawConfiguration> {
    let fields = Fields::open(node, "configuration", CONFIGURATION_FIELDS, problems)?;
    let name = fields.text("name", problems);
    fields.require("name", problems);
    let source = fields
        .mapping("source", &source_fields(), problems)
        .map(|f| source(&f, problems));
    fields.require("source", problems);
    let kustomizations = fields
        .list("kustomizations", problems)
        .unwrap_or_default()
        .iter()
        .filter_map(|item| kustomization(item, problems))
        .collect();
    Some(RawConfiguration {
        name,
        namespace: fields.text("namespace", problems),
        scope: fields.text("scope", problems),
        suspend: fields.text("suspend", problems),
        render: render(&fields, problems),
        source,
        kustomizations,
    })
}

fn render(fields: &Fields<'_>, problems: &mut Problems) -> Option<RawRender> {
    fields
        .mapping("render", RENDER_FIELDS, problems)
        .map(|f| RawRender {
            sandbox: f.text("sandbox", problems),
            remote_bases: f.text("remoteBases", problems),
        })
}

fn source(fields: &Fields<'_>, problems: &mut Problems) -> RawSource {
    let kind = fields.text("kind", problems);
    fields.require("kind", problems);
    let url = fields.text("url", problems);
    fields.require("url", problems);
    let publish = fields
        .mapping("publish", PUBLISH_FIELDS, problems)
        .map(|f| {
            let directory = f.text("directory", problems);
            f.require("directory", problems);
            RawPublish {
                directory,
                link: f.text("link", problems),
                mode: f.text("mode", problems),
                exec_hook: f.text("execHook", problems),
                webhook: f.text("webhook", problems),
                hook_timeout: f.text("hookTimeout", problems),
            }
        });
    RawSource {
        pos: fields.pos,
        kind,
        url,
        interval: fields.text("interval", problems),
        timeout: fields.text("timeout", problems),
        retry_interval: fields.text("retryInterval", problems),
        ignore: fields.text("ignore", problems),
        suspend: fields.text("suspend", problems),
        publish,
        git: git::decode(fields, problems),
        azure_blob: azblob::decode(fields, problems),
        bucket: bucket::decode(fields, problems),
        shared: shared::decode(fields, problems),
    }
}

fn kustomization(node: &Node, problems: &mut Problems) -> Option<RawKustomization> {
    let fields = Fields::open(node, "kustomization", KUSTOMIZATION_FIELDS, problems)?;
    let name = fields.text("name", problems);
    fields.require("name", problems);
    let depends_on = fields
        .list("dependsOn", problems)
        .unwrap_or_default()
        .iter()
        .filter_map(|item| match &item.kind {
            NodeKind::Scalar(text) => Some(Spanned::new(text.clone(), item.pos)),
            other => {
                problems.push(
                    item.pos,
                    format!(
                        "expected a kustomization name in dependsOn, found {}",
                        other.describe()
                    ),
                );
                None
            }
        })
        .collect();
    let target = fields
        .mapping("target", TARGET_FIELDS, problems)
        .map(|f| RawTarget {
            pos: f.pos,
            directory: f.text("directory", problems),
            kubernetes: f.text("kubernetes", problems),
        });
    let health_checks = fields
        .list("healthChecks", problems)
        .unwrap_or_default()
        .iter()
        .filter_map(|item| {
            let f = Fields::open(item, "healthChecks", HEALTH_CHECK_FIELDS, problems)?;
            for key in ["apiVersion", "kind", "name"] {
                f.require(key, problems);
            }
            Some(RawHealthCheck {
                pos: item.pos,
                api_version: f.text("apiVersion", problems),
                kind: f.text("kind", problems),
                name: f.text("name", problems),
                namespace: f.text("namespace", problems),
            })
        })
        .collect();
    let post_build = fields
        .mapping("postBuild", POST_BUILD_FIELDS, problems)
        .map(|f| post_build(&f, problems));
    Some(RawKustomization {
        name,
        path: fields.text("path", problems),
        prune: fields.text("prune", problems),
        depends_on,
        interval: fields.text("interval", problems),
        retry_interval: fields.text("retryInterval", problems),
        timeout: fields.text("timeout", problems),
        wait: fields.text("wait", problems),
        force: fields.text("force", problems),
        suspend: fields.text("suspend", problems),
        target,
        validation: fields.text("validation", problems),
        target_namespace: fields.text("targetNamespace", problems),
        health_checks,
        post_build,
        service_account_name: fields.text("serviceAccountName", problems),
    })
}

/// `postBuild`: `substitute` is a mapping of any names (checked by the validator), so its
/// entries are read as they are rather than through a list of known keys.
fn post_build(f: &Fields<'_>, problems: &mut Problems) -> RawPostBuild {
    let mut substitute = Vec::new();
    if let Some(entry) = f.get("substitute") {
        match &entry.value.kind {
            NodeKind::Mapping(entries) => {
                for e in entries {
                    match &e.value.kind {
                        NodeKind::Scalar(value) => substitute.push((
                            Spanned::new(e.key.clone(), e.key_pos),
                            Spanned::new(value.clone(), e.value.pos),
                        )),
                        NodeKind::Null => substitute.push((
                            Spanned::new(e.key.clone(), e.key_pos),
                            Spanned::new(String::new(), e.value.pos),
                        )),
                        other => problems.push(
                            e.value.pos,
                            format!(
                                "expected a single value for variable `{}`, found {}",
                                e.key,
                                other.describe()
                            ),
                        ),
                    }
                }
            }
            other => problems.push(
                entry.value.pos,
                format!(
                    "expected a mapping of variable names to values for `substitute`, found {}",
                    other.describe()
                ),
            ),
        }
    }
    let substitute_from = f
        .list("substituteFrom", problems)
        .unwrap_or_default()
        .iter()
        .filter_map(|item| {
            let g = Fields::open(item, "substituteFrom", SUBSTITUTE_FROM_FIELDS, problems)?;
            g.require("kind", problems);
            g.require("name", problems);
            Some(RawSubstituteFrom {
                pos: item.pos,
                kind: g.text("kind", problems),
                name: g.text("name", problems),
                optional: g.text("optional", problems),
            })
        })
        .collect();
    RawPostBuild {
        substitute,
        substitute_from,
    }
}

#[cfg(test)]
mod tests {
    use super::super::positions::parse;
    use super::*;

    fn decode_text(text: &str) -> (RawSettings, Vec<(Pos, String)>) {
        let mut problems = Problems::new();
        let root = parse(text, &mut problems).unwrap();
        let raw = decode(&root, &mut problems);
        let problems = problems
            .into_vec()
            .into_iter()
            .map(|p| (p.pos, p.message))
            .collect();
        (raw, problems)
    }

    #[test]
    fn unknown_top_level_key_is_reported_at_the_key() {
        let (_, problems) = decode_text("configurations: []\n  \ncluster: {}\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, Pos::new(3, 1));
        assert!(
            problems[0].1.starts_with(
                "unknown field `cluster` at the top level, expected one of `stateDir`"
            ),
            "{}",
            problems[0].1
        );
    }

    #[test]
    fn typos_get_a_suggestion() {
        let (_, problems) =
            decode_text("configurations: []\nstatedir: /x\nmaxConcurentFetches: 2\n");
        assert!(
            problems[0].1.starts_with(
                "unknown field `statedir` at the top level (did you mean `stateDir`?)"
            ),
            "{}",
            problems[0].1
        );
        assert!(
            problems[1].1.starts_with(
                "unknown field `maxConcurentFetches` at the top level (did you mean \
                 `maxConcurrentFetches`?)"
            ),
            "{}",
            problems[1].1
        );
    }

    #[test]
    fn missing_and_misshapen_fields() {
        let text = "\
configurations:
  - name: a
    source: [git]
  - namespace: b
    source:
      kind: git
      url:
  - plain
";
        let (raw, problems) = decode_text(text);
        let found: Vec<(Pos, &str)> = problems.iter().map(|(p, m)| (*p, m.as_str())).collect();
        assert_eq!(
            found,
            vec![
                (
                    Pos::new(3, 13),
                    "expected `source` to be a mapping, found a list"
                ),
                (Pos::new(4, 5), "missing required field `name`"),
                (Pos::new(7, 7), "`url` must have a value"),
                (
                    Pos::new(8, 5),
                    "expected `configuration` to be a mapping, found a scalar"
                ),
            ]
        );
        assert_eq!(raw.configurations.unwrap().len(), 2);
    }

    #[test]
    fn empty_file_lacks_configurations() {
        let (_, problems) = decode_text("");
        assert_eq!(
            problems,
            vec![(
                Pos::new(1, 1),
                "missing required field `configurations`".to_string()
            )]
        );
    }
}
