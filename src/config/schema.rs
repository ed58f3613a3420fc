//! The config file as written: which keys exist where, and what shape (mapping, list, scalar)
//! each one has. Values stay text with their positions; `validate.rs` decides what a value
//! means, so that one bad value never hides another.
//!
//! Keys are camelCase, as in Azure's fluxConfigurations and Flux's CRDs.

use super::positions::{Entry, Node, NodeKind, Pos, Problems, Spanned};

/// A scalar value as written, with the position of the value.
pub type Text = Spanned<String>;

pub const SETTINGS_FIELDS: &[&str] = &[
    "stateDir",
    "server",
    "kubernetes",
    "maxConcurrentFetches",
    "render",
    "configurations",
];
/// `render`, at the top level (the default) and in a configuration (overriding it).
pub const RENDER_FIELDS: &[&str] = &["sandbox", "remoteBases"];
pub const SERVER_FIELDS: &[&str] = &["listen"];
pub const KUBERNETES_FIELDS: &[&str] = &["kubeconfig", "context"];
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
/// The `azblob` kind's source keys (see [`RawAzureBlob`]).
pub const AZURE_BLOB_SOURCE_FIELDS: &[&str] = &[
    "containerName",
    "prefix",
    "accountKey",
    "accountKeyFile",
    "sasToken",
    "sasTokenFile",
    "spClientId",
    "spTenantId",
    "spClientSecret",
    "spClientSecretFile",
    "spClientCert",
    "spClientCertFile",
    "spClientCertPassword",
    "spClientCertPasswordFile",
    "spClientCertSendChain",
    "miClientId",
    "miEndpoint",
    "authorityHost",
    "localAuthRef",
    "caFile",
];
/// `directory` (files, e.g. a mounted Secret) or `secret` (a Secret read through the API);
/// exactly one.
pub const LOCAL_AUTH_REF_FIELDS: &[&str] = &["directory", "secret"];
/// The `bucket` kind's own source keys (see [`RawBucket`]); `prefix`, `localAuthRef` and
/// `caFile` are shared with `azblob` and parsed once, into [`RawAzureBlob`].
pub const BUCKET_SOURCE_FIELDS: &[&str] = &[
    "bucketName",
    "region",
    "bucketInsecure",
    "bucketAccessKey",
    "bucketSecretKey",
    "bucketAccessKeyFile",
    "bucketSecretKeyFile",
];
/// The `git` kind's credential keys, named after `az k8s-configuration flux create`'s
/// arguments (see [`RawGitAuth`]); `localAuthRef` is shared with the other kinds.
pub const GIT_AUTH_SOURCE_FIELDS: &[&str] = &[
    "httpsUser",
    "httpsKey",
    "httpsKeyFile",
    "bearerToken",
    "bearerTokenFile",
    "httpsCACert",
    "httpsCACertFile",
    "tlsClientCertFile",
    "tlsClientKeyFile",
    "sshPrivateKey",
    "sshPrivateKeyFile",
    "sshPassphrase",
    "sshPassphraseFile",
    "knownHosts",
    "knownHostsFile",
];

/// Every key a `source` mapping may have: the common ones, then each kind's own.
pub fn source_fields() -> Vec<&'static str> {
    let mut fields: Vec<&'static str> = SOURCE_FIELDS.to_vec();
    for field in AZURE_BLOB_SOURCE_FIELDS
        .iter()
        .chain(GIT_AUTH_SOURCE_FIELDS)
        .chain(BUCKET_SOURCE_FIELDS)
    {
        if !fields.contains(field) {
            fields.push(field);
        }
    }
    fields
}
pub const REF_FIELDS: &[&str] = &["branch", "tag", "semver", "commit", "name"];
pub const PUBLISH_FIELDS: &[&str] = &["directory", "link"];
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
];
pub const TARGET_FIELDS: &[&str] = &["directory"];

/// The section name [`Fields::open`] gives the file's root mapping.
const TOP_LEVEL: &str = "";

/// The whole file.
#[derive(Debug, Clone)]
pub struct RawSettings {
    pub pos: Pos,
    pub state_dir: Option<Text>,
    pub server: Option<RawServer>,
    pub kubernetes: Option<RawKubernetes>,
    pub max_concurrent_fetches: Option<Text>,
    pub render: Option<RawRender>,
    /// `None` when missing (already reported) or not a list.
    pub configurations: Option<Vec<RawConfiguration>>,
}

/// A `render` section, top-level or of one configuration.
#[derive(Debug, Clone)]
pub struct RawRender {
    pub pos: Pos,
    pub sandbox: Option<Text>,
    pub remote_bases: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawServer {
    pub pos: Pos,
    pub listen: Option<Text>,
}

/// The top-level `kubernetes` section.
#[derive(Debug, Clone)]
pub struct RawKubernetes {
    pub pos: Pos,
    pub kubeconfig: Option<Text>,
    pub context: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawConfiguration {
    pub pos: Pos,
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
    pub reference: Option<RawGitRef>,
    pub interval: Option<Text>,
    pub timeout: Option<Text>,
    pub retry_interval: Option<Text>,
    pub git_implementation: Option<Text>,
    pub ignore: Option<Text>,
    pub suspend: Option<Text>,
    pub publish: Option<RawPublish>,
    pub azure_blob: RawAzureBlob,
    pub git_auth: RawGitAuth,
    pub bucket: RawBucket,
}

/// The `bucket` keys of a source, as written; `validate.rs` decides what combines.
#[derive(Debug, Clone, Default)]
pub struct RawBucket {
    pub bucket_name: Option<Text>,
    pub region: Option<Text>,
    pub insecure: Option<Text>,
    pub access_key: Option<Text>,
    pub secret_key: Option<Text>,
    pub access_key_file: Option<Text>,
    pub secret_key_file: Option<Text>,
}

/// The `git` credential keys of a source, as written (one entry per key of
/// [`GIT_AUTH_SOURCE_FIELDS`], same order); `source::git::auth::validate` checks them.
#[derive(Debug, Clone, Default)]
pub struct RawGitAuth {
    pub fields: Vec<(&'static str, Text)>,
}

impl RawGitAuth {
    pub fn get(&self, key: &str) -> Option<&Text> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, t)| t)
    }
}

/// The `azblob` keys of a source, as written. Which of them may be combined is decided in
/// `validate.rs`.
#[derive(Debug, Clone, Default)]
pub struct RawAzureBlob {
    pub container_name: Option<Text>,
    pub prefix: Option<Text>,
    pub account_key: Option<Text>,
    pub account_key_file: Option<Text>,
    pub sas_token: Option<Text>,
    pub sas_token_file: Option<Text>,
    pub sp_client_id: Option<Text>,
    pub sp_tenant_id: Option<Text>,
    pub sp_client_secret: Option<Text>,
    pub sp_client_secret_file: Option<Text>,
    pub sp_client_cert: Option<Text>,
    pub sp_client_cert_file: Option<Text>,
    pub sp_client_cert_password: Option<Text>,
    pub sp_client_cert_password_file: Option<Text>,
    pub sp_client_cert_send_chain: Option<Text>,
    pub mi_client_id: Option<Text>,
    pub mi_endpoint: Option<Text>,
    pub authority_host: Option<Text>,
    /// `localAuthRef.directory`, positioned at the value.
    pub local_auth_ref: Option<Text>,
    /// `localAuthRef.secret` (a Secret's name), positioned at the value; never set together
    /// with `local_auth_ref` (the decoder reports both and keeps neither).
    pub local_auth_ref_secret: Option<Text>,
    pub ca_file: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawGitRef {
    pub pos: Pos,
    pub branch: Option<Text>,
    pub tag: Option<Text>,
    pub semver: Option<Text>,
    pub commit: Option<Text>,
    pub name: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawPublish {
    pub pos: Pos,
    pub directory: Option<Text>,
    pub link: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawKustomization {
    pub pos: Pos,
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
}

#[derive(Debug, Clone)]
pub struct RawTarget {
    pub pos: Pos,
    pub directory: Option<Text>,
}

/// Reads the tree into the raw schema, reporting unknown keys, wrong shapes and missing
/// required keys. Returns what could be read; every problem is in `problems`.
pub fn decode(root: &Node, problems: &mut Problems) -> RawSettings {
    let Some(fields) = Fields::open(root, TOP_LEVEL, SETTINGS_FIELDS, problems) else {
        return RawSettings {
            pos: root.pos,
            state_dir: None,
            server: None,
            kubernetes: None,
            max_concurrent_fetches: None,
            render: None,
            configurations: None,
        };
    };
    let server = fields
        .mapping("server", SERVER_FIELDS, problems)
        .map(|f| RawServer {
            pos: f.pos,
            listen: f.text("listen", problems),
        });
    let kubernetes = fields
        .mapping("kubernetes", KUBERNETES_FIELDS, problems)
        .map(|f| {
            f.require("kubeconfig", problems);
            RawKubernetes {
                pos: f.pos,
                kubeconfig: f.text("kubeconfig", problems),
                context: f.text("context", problems),
            }
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
        pos: fields.pos,
        state_dir: fields.text("stateDir", problems),
        server,
        kubernetes,
        max_concurrent_fetches: fields.text("maxConcurrentFetches", problems),
        render: render(&fields, problems),
        configurations,
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
        pos: fields.pos,
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
            pos: f.pos,
            sandbox: f.text("sandbox", problems),
            remote_bases: f.text("remoteBases", problems),
        })
}

fn source(fields: &Fields<'_>, problems: &mut Problems) -> RawSource {
    let kind = fields.text("kind", problems);
    fields.require("kind", problems);
    let url = fields.text("url", problems);
    fields.require("url", problems);
    let reference = fields
        .mapping("ref", REF_FIELDS, problems)
        .map(|f| RawGitRef {
            pos: f.pos,
            branch: f.text("branch", problems),
            tag: f.text("tag", problems),
            semver: f.text("semver", problems),
            commit: f.text("commit", problems),
            name: f.text("name", problems),
        });
    let publish = fields
        .mapping("publish", PUBLISH_FIELDS, problems)
        .map(|f| {
            let directory = f.text("directory", problems);
            f.require("directory", problems);
            RawPublish {
                pos: f.pos,
                directory,
                link: f.text("link", problems),
            }
        });
    RawSource {
        pos: fields.pos,
        kind,
        url,
        reference,
        interval: fields.text("interval", problems),
        timeout: fields.text("timeout", problems),
        retry_interval: fields.text("retryInterval", problems),
        git_implementation: fields.text("gitImplementation", problems),
        ignore: fields.text("ignore", problems),
        suspend: fields.text("suspend", problems),
        publish,
        azure_blob: azure_blob(fields, problems),
        bucket: bucket(fields, problems),
        git_auth: RawGitAuth {
            fields: GIT_AUTH_SOURCE_FIELDS
                .iter()
                .filter_map(|key| Some((*key, fields.text(key, problems)?)))
                .collect(),
        },
    }
}

fn bucket(fields: &Fields<'_>, problems: &mut Problems) -> RawBucket {
    RawBucket {
        bucket_name: fields.text("bucketName", problems),
        region: fields.text("region", problems),
        insecure: fields.text("bucketInsecure", problems),
        access_key: fields.text("bucketAccessKey", problems),
        secret_key: fields.text("bucketSecretKey", problems),
        access_key_file: fields.text("bucketAccessKeyFile", problems),
        secret_key_file: fields.text("bucketSecretKeyFile", problems),
    }
}

fn azure_blob(fields: &Fields<'_>, problems: &mut Problems) -> RawAzureBlob {
    // An empty credential key must not quietly mean "no credential" (anonymous access).
    for key in AZURE_BLOB_SOURCE_FIELDS {
        if let Some(entry) = fields.entries.iter().find(|e| e.key == *key) {
            if entry.value.kind == NodeKind::Null {
                problems.push(entry.key_pos, format!("`{key}` must have a value"));
            }
        }
    }
    let (local_auth_ref, local_auth_ref_secret) = fields
        .mapping("localAuthRef", LOCAL_AUTH_REF_FIELDS, problems)
        .map(|f| {
            let directory = f.text("directory", problems);
            let secret = f.text("secret", problems);
            match (directory, secret) {
                (Some(_), Some(secret)) => {
                    problems.push(
                        secret.pos,
                        "`localAuthRef` takes either `directory` or `secret`, not both",
                    );
                    (None, None)
                }
                (None, None) => {
                    let given = f
                        .entries
                        .iter()
                        .filter(|e| e.key == "directory" || e.key == "secret");
                    let mut any = false;
                    for entry in given {
                        any = true;
                        if entry.value.kind == NodeKind::Null {
                            problems
                                .push(entry.key_pos, format!("`{}` must have a value", entry.key));
                        }
                    }
                    if !any {
                        problems.push(
                            f.pos,
                            "`localAuthRef` needs `directory` (a directory of Flux's keys) or \
                             `secret` (the name of a Kubernetes Secret)",
                        );
                    }
                    (None, None)
                }
                pair => pair,
            }
        })
        .unwrap_or_default();
    RawAzureBlob {
        container_name: fields.text("containerName", problems),
        prefix: fields.text("prefix", problems),
        account_key: fields.text("accountKey", problems),
        account_key_file: fields.text("accountKeyFile", problems),
        sas_token: fields.text("sasToken", problems),
        sas_token_file: fields.text("sasTokenFile", problems),
        sp_client_id: fields.text("spClientId", problems),
        sp_tenant_id: fields.text("spTenantId", problems),
        sp_client_secret: fields.text("spClientSecret", problems),
        sp_client_secret_file: fields.text("spClientSecretFile", problems),
        sp_client_cert: fields.text("spClientCert", problems),
        sp_client_cert_file: fields.text("spClientCertFile", problems),
        sp_client_cert_password: fields.text("spClientCertPassword", problems),
        sp_client_cert_password_file: fields.text("spClientCertPasswordFile", problems),
        sp_client_cert_send_chain: fields.text("spClientCertSendChain", problems),
        mi_client_id: fields.text("miClientId", problems),
        mi_endpoint: fields.text("miEndpoint", problems),
        authority_host: fields.text("authorityHost", problems),
        local_auth_ref,
        local_auth_ref_secret,
        ca_file: fields.text("caFile", problems),
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
    let target = fields.mapping("target", TARGET_FIELDS, problems).map(|f| {
        let directory = f.text("directory", problems);
        f.require("directory", problems);
        RawTarget {
            pos: f.pos,
            directory,
        }
    });
    Some(RawKustomization {
        pos: fields.pos,
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
    })
}

/// The keys of one mapping, already checked against the keys its section allows.
struct Fields<'n> {
    pos: Pos,
    entries: &'n [Entry],
}

impl<'n> Fields<'n> {
    /// Opens `node` as the mapping of `section` ([`TOP_LEVEL`] for the file itself), whose
    /// keys must be among `known`. A null node is an empty mapping.
    fn open(
        node: &'n Node,
        section: &str,
        known: &[&str],
        problems: &mut Problems,
    ) -> Option<Self> {
        let entries: &[Entry] = match &node.kind {
            NodeKind::Mapping(entries) => entries,
            NodeKind::Null => &[],
            other => {
                let what = if section == TOP_LEVEL {
                    "the file".to_string()
                } else {
                    format!("`{section}`")
                };
                problems.push(
                    node.pos,
                    format!(
                        "expected {what} to be a mapping, found {}",
                        other.describe()
                    ),
                );
                return None;
            }
        };
        for entry in entries {
            if !known.contains(&entry.key.as_str()) {
                problems.push(
                    entry.key_pos,
                    unknown_field_message(&entry.key, section, known),
                );
            }
        }
        Some(Fields {
            pos: node.pos,
            entries,
        })
    }

    /// The entry for `key` unless absent or null.
    fn get(&self, key: &str) -> Option<&'n Entry> {
        self.entries
            .iter()
            .find(|e| e.key == key && e.value.kind != NodeKind::Null)
    }

    fn text(&self, key: &str, problems: &mut Problems) -> Option<Text> {
        let entry = self.get(key)?;
        match &entry.value.kind {
            NodeKind::Scalar(text) => Some(Spanned::new(text.clone(), entry.value.pos)),
            other => {
                problems.push(
                    entry.value.pos,
                    format!(
                        "expected a single value for `{key}`, found {}",
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    fn list(&self, key: &str, problems: &mut Problems) -> Option<&'n [Node]> {
        let entry = self.get(key)?;
        match &entry.value.kind {
            NodeKind::Sequence(items) => Some(items),
            other => {
                problems.push(
                    entry.value.pos,
                    format!("expected a list for `{key}`, found {}", other.describe()),
                );
                None
            }
        }
    }

    /// The mapping under `key`; its section is named after the key.
    fn mapping(&self, key: &str, known: &[&str], problems: &mut Problems) -> Option<Fields<'n>> {
        Fields::open(&self.get(key)?.value, key, known, problems)
    }

    /// Reports `key` as missing when it is absent or null; a present value of the wrong shape
    /// was reported by the getter already.
    fn require(&self, key: &str, problems: &mut Problems) {
        match self.entries.iter().find(|e| e.key == key) {
            None => problems.push(self.pos, format!("missing required field `{key}`")),
            Some(entry) if entry.value.kind == NodeKind::Null => {
                problems.push(entry.key_pos, format!("`{key}` must have a value"))
            }
            Some(_) => {}
        }
    }
}

fn unknown_field_message(key: &str, section: &str, known: &[&str]) -> String {
    let context = if section == TOP_LEVEL {
        "at the top level".to_string()
    } else {
        format!("in `{section}`")
    };
    let expected = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match closest(key, known) {
        Some(guess) => {
            format!("unknown field `{key}` {context} (did you mean `{guess}`?), expected one of {expected}")
        }
        None => format!("unknown field `{key}` {context}, expected one of {expected}"),
    }
}

/// A known key the unknown one is probably a typo of: same letters ignoring case and
/// separators, or at most two edits away.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let squashed = squash(key);
    if let Some(same) = known.iter().find(|k| squash(k) == squashed) {
        return Some(same);
    }
    let limit = if key.chars().count() <= 3 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (edit_distance(&squashed, &squash(k)), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
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
            problems[0].1.contains("did you mean `stateDir`?"),
            "{}",
            problems[0].1
        );
        assert!(
            problems[1]
                .1
                .contains("did you mean `maxConcurrentFetches`?"),
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

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
