//! The `receivers`, `providers` and `alerts` sections: Flux's notification-controller objects
//! (Receiver, Provider, Alert) as config. This file holds their whole life in the config
//! layer, keys, shapes and value rules, so that it merges apart from the configuration and
//! kustomization fields; `schema.rs` and `validate/` only call [`decode`] and [`validate`].
//!
//! Decisions:
//! - A receiver's secret is read once, when `gitopsd run` starts: its hook path is derived
//!   from it (Flux's `/hook/sha256(token+name+namespace)`), and a path that moved under a
//!   running git host's webhook would silently break it. Rotating it is a restart.
//! - A provider's `address` is a secret too (Slack's and Teams' webhook URLs embed their
//!   token), so it may come from a file and is never logged; messages name keys only.
//! - Alerts filter as Flux's Alert: `eventSeverity` (`info` takes both), `eventSources` whose
//!   `kind`, `name` and `namespace` may use `*` wildcards, then `inclusionList` and
//!   `exclusionList` regexes on the message. Regexes are compiled here, so a bad one is a
//!   `file:line:col` problem rather than a runtime surprise.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::syntax::fields::{Fields, Text};
use crate::syntax::positions::{Node, NodeKind, Problems, Spanned};
use crate::syntax::values::{
    boolean, is_dns1123_label, is_dns1123_subdomain, positive_duration, resolve,
};
use crate::vocab::{KubernetesSettings, Secret, SecretRef, SecretValue};

pub const RECEIVERS_FIELDS: &[&str] = &["listen", "readTimeout", "maxConnections", "hooks"];
pub const HOOK_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "type",
    "secret",
    "secretFile",
    "localAuthRef",
    "events",
    "configurations",
];
pub const LOCAL_AUTH_FIELDS: &[&str] = &["directory", "secret"];
pub const PROVIDER_FIELDS: &[&str] = &[
    "name",
    "type",
    "address",
    "addressFile",
    "secret",
    "secretFile",
    "channel",
    "username",
    "proxy",
    "certFile",
    "timeout",
];
pub const ALERT_FIELDS: &[&str] = &[
    "name",
    "provider",
    "eventSeverity",
    "eventSources",
    "inclusionList",
    "exclusionList",
    "suspend",
];
pub const EVENT_SOURCE_FIELDS: &[&str] = &["kind", "name", "namespace"];

/// How long a receiver's client may take to send its headers, and again its body.
pub const DEFAULT_RECEIVER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections a receiver listener serves at once unless `receivers.maxConnections` says.
pub const DEFAULT_RECEIVER_CONNECTIONS: usize = 256;
/// How long one delivery to a provider may take.
pub const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

/// The kinds of receiver, with Flux's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReceiverType {
    Generic,
    GenericHmac,
    Github,
    Gitlab,
    Bitbucket,
}

impl ReceiverType {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "generic" => ReceiverType::Generic,
            "generic-hmac" => ReceiverType::GenericHmac,
            "github" => ReceiverType::Github,
            "gitlab" => ReceiverType::Gitlab,
            "bitbucket" => ReceiverType::Bitbucket,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverType::Generic => "generic",
            ReceiverType::GenericHmac => "generic-hmac",
            ReceiverType::Github => "github",
            ReceiverType::Gitlab => "gitlab",
            ReceiverType::Bitbucket => "bitbucket",
        }
    }
}

/// The kinds of alert provider, with Flux's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderType {
    Generic,
    GenericHmac,
    Slack,
    Msteams,
    Discord,
}

impl ProviderType {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "generic" => ProviderType::Generic,
            "generic-hmac" => ProviderType::GenericHmac,
            "slack" => ProviderType::Slack,
            "msteams" => ProviderType::Msteams,
            "discord" => ProviderType::Discord,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::Generic => "generic",
            ProviderType::GenericHmac => "generic-hmac",
            ProviderType::Slack => "slack",
            ProviderType::Msteams => "msteams",
            ProviderType::Discord => "discord",
        }
    }
}

/// `info` (every event) or `error` (errors only), as Flux's `eventSeverity`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Error => "error",
        }
    }
}

/// Where a receiver's or provider's secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// `secret` inline, or `secretFile`.
    Value(SecretValue),
    /// `localAuthRef.directory`: the file `token` in it (a mounted Secret, Flux's key name).
    Directory(PathBuf),
    /// `localAuthRef.secret`: the key `token` of that Secret.
    Kubernetes(SecretRef),
}

/// Everything the three sections say.
#[derive(Debug, Clone, Default)]
pub struct EventSettings {
    /// `None`: no `receivers` section, no listener.
    pub receivers: Option<ReceiverSettings>,
    pub providers: Vec<ProviderSettings>,
    pub alerts: Vec<AlertSettings>,
}

#[derive(Debug, Clone)]
pub struct ReceiverSettings {
    pub listen: SocketAddr,
    pub read_timeout: Duration,
    pub max_connections: usize,
    pub hooks: Vec<HookSettings>,
}

/// One receiver (Flux's Receiver).
#[derive(Debug, Clone)]
pub struct HookSettings {
    pub name: String,
    pub namespace: String,
    pub kind: ReceiverType,
    pub secret: SecretSource,
    /// Event names it acts on (case-insensitive); empty: every event.
    pub events: Vec<String>,
    /// `(namespace, name)` of each configuration it triggers; each exists (checked at load).
    pub configurations: Vec<(String, String)>,
}

/// One alert provider (Flux's Provider).
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub name: String,
    pub kind: ProviderType,
    /// The webhook URL: a secret, since chat services embed their token in it.
    pub address: SecretValue,
    /// generic-hmac's key; a bearer token for the others, when given.
    pub secret: Option<SecretValue>,
    pub channel: Option<String>,
    pub username: Option<String>,
    pub proxy: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's.
    pub cert_file: Option<PathBuf>,
    pub timeout: Duration,
}

/// One alert (Flux's Alert).
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub name: String,
    /// Index into [`EventSettings::providers`].
    pub provider: usize,
    pub severity: Severity,
    pub sources: Vec<EventSourceSelector>,
    pub inclusion: Vec<regex::Regex>,
    pub exclusion: Vec<regex::Regex>,
    pub suspend: bool,
}

/// An `eventSources` entry; each field a pattern where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSourceSelector {
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// The three sections as written.
#[derive(Debug, Clone, Default)]
pub struct RawEvents {
    pub receivers: Option<RawReceivers>,
    pub providers: Vec<RawProvider>,
    pub alerts: Vec<RawAlert>,
}

#[derive(Debug, Clone)]
pub struct RawReceivers {
    pub listen: Option<Text>,
    pub read_timeout: Option<Text>,
    pub max_connections: Option<Text>,
    pub hooks: Vec<RawHook>,
}

#[derive(Debug, Clone)]
pub struct RawHook {
    pub pos: crate::syntax::positions::Pos,
    pub name: Option<Text>,
    pub namespace: Option<Text>,
    pub kind: Option<Text>,
    pub secret: Option<Text>,
    pub secret_file: Option<Text>,
    pub local_auth: Option<(crate::syntax::positions::Pos, Option<Text>, Option<Text>)>,
    pub events: Vec<Text>,
    pub configurations: Vec<Text>,
}

#[derive(Debug, Clone)]
pub struct RawProvider {
    pub pos: crate::syntax::positions::Pos,
    pub name: Option<Text>,
    pub kind: Option<Text>,
    pub address: Option<Text>,
    pub address_file: Option<Text>,
    pub secret: Option<Text>,
    pub secret_file: Option<Text>,
    pub channel: Option<Text>,
    pub username: Option<Text>,
    pub proxy: Option<Text>,
    pub cert_file: Option<Text>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct RawAlert {
    pub name: Option<Text>,
    pub provider: Option<Text>,
    pub severity: Option<Text>,
    pub sources: Vec<(Option<Text>, Option<Text>, Option<Text>)>,
    pub inclusion: Vec<Text>,
    pub exclusion: Vec<Text>,
    pub suspend: Option<Text>,
}

/// Reads the three top-level keys from the file's root mapping.
pub fn decode(root: &Fields<'_>, problems: &mut Problems) -> RawEvents {
    let receivers = root
        .mapping("receivers", RECEIVERS_FIELDS, problems)
        .map(|f| {
            f.require("listen", problems);
            RawReceivers {
                listen: f.text("listen", problems),
                read_timeout: f.text("readTimeout", problems),
                max_connections: f.text("maxConnections", problems),
                hooks: f
                    .list("hooks", problems)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|node| hook(node, problems))
                    .collect(),
            }
        });
    let providers = root
        .list("providers", problems)
        .unwrap_or_default()
        .iter()
        .filter_map(|node| provider(node, problems))
        .collect();
    let alerts = root
        .list("alerts", problems)
        .unwrap_or_default()
        .iter()
        .filter_map(|node| alert(node, problems))
        .collect();
    RawEvents {
        receivers,
        providers,
        alerts,
    }
}

fn hook(node: &Node, problems: &mut Problems) -> Option<RawHook> {
    let f = Fields::open(node, "hook", HOOK_FIELDS, problems)?;
    f.require("name", problems);
    f.require("type", problems);
    f.require("configurations", problems);
    let local_auth = f
        .mapping("localAuthRef", LOCAL_AUTH_FIELDS, problems)
        .map(|l| {
            (
                l.pos,
                l.text("directory", problems),
                l.text("secret", problems),
            )
        });
    Some(RawHook {
        pos: f.pos,
        name: f.text("name", problems),
        namespace: f.text("namespace", problems),
        kind: f.text("type", problems),
        secret: f.text("secret", problems),
        secret_file: f.text("secretFile", problems),
        local_auth,
        events: texts(&f, "events", "an event name", problems),
        configurations: texts(&f, "configurations", "a configuration name", problems),
    })
}

fn provider(node: &Node, problems: &mut Problems) -> Option<RawProvider> {
    let f = Fields::open(node, "provider", PROVIDER_FIELDS, problems)?;
    f.require("name", problems);
    f.require("type", problems);
    Some(RawProvider {
        pos: f.pos,
        name: f.text("name", problems),
        kind: f.text("type", problems),
        address: f.text("address", problems),
        address_file: f.text("addressFile", problems),
        secret: f.text("secret", problems),
        secret_file: f.text("secretFile", problems),
        channel: f.text("channel", problems),
        username: f.text("username", problems),
        proxy: f.text("proxy", problems),
        cert_file: f.text("certFile", problems),
        timeout: f.text("timeout", problems),
    })
}

fn alert(node: &Node, problems: &mut Problems) -> Option<RawAlert> {
    let f = Fields::open(node, "alert", ALERT_FIELDS, problems)?;
    f.require("name", problems);
    f.require("provider", problems);
    f.require("eventSources", problems);
    let listed = f.list("eventSources", problems);
    if let (Some([]), Some(entry)) = (listed, f.get("eventSources")) {
        problems.push(
            entry.value.pos,
            "an alert needs at least one entry in eventSources (`{ kind: \"*\", name: \"*\" }` \
             takes every event)",
        );
    }
    let sources = listed
        .unwrap_or_default()
        .iter()
        .filter_map(|node| {
            let s = Fields::open(node, "eventSources", EVENT_SOURCE_FIELDS, problems)?;
            s.require("kind", problems);
            s.require("name", problems);
            Some((
                s.text("kind", problems),
                s.text("name", problems),
                s.text("namespace", problems),
            ))
        })
        .collect();
    Some(RawAlert {
        name: f.text("name", problems),
        provider: f.text("provider", problems),
        severity: f.text("eventSeverity", problems),
        sources,
        inclusion: texts(&f, "inclusionList", "a regular expression", problems),
        exclusion: texts(&f, "exclusionList", "a regular expression", problems),
        suspend: f.text("suspend", problems),
    })
}

/// A list of scalars.
fn texts(f: &Fields<'_>, key: &str, what: &str, problems: &mut Problems) -> Vec<Text> {
    f.list(key, problems)
        .unwrap_or_default()
        .iter()
        .filter_map(|item| match &item.kind {
            NodeKind::Scalar(text) => Some(Spanned::new(text.clone(), item.pos)),
            other => {
                problems.push(
                    item.pos,
                    format!("expected {what} in {key}, found {}", other.describe()),
                );
                None
            }
        })
        .collect()
}

/// What validating these sections needs from the rest of the file. (This module names no
/// other part of `config`: the validator passes it what it needs, so the layers stay a tree.)
pub struct Context<'a> {
    /// `(namespace, name)` of every configuration: a hook's `configurations` must name them.
    pub configurations: &'a [(String, String)],
    pub kubernetes: Option<&'a KubernetesSettings>,
    /// The `kubernetes` section is written (valid or not: a broken one was reported).
    pub kubernetes_configured: bool,
    pub base_dir: &'a Path,
    /// A hook's namespace when it sets none.
    pub default_namespace: &'a str,
}

/// Validates the three sections.
pub fn validate(raw: &RawEvents, cx: &Context<'_>, problems: &mut Problems) -> EventSettings {
    let base_dir = cx.base_dir;
    let receivers = raw.receivers.as_ref().map(|r| receivers(r, cx, problems));
    let mut providers = Vec::new();
    let mut provider_index: HashMap<String, usize> = HashMap::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for raw in &raw.providers {
        if let Some(name) = &raw.name {
            unique(&mut seen, name, "provider", problems);
        }
        if let Some(p) = provider_settings(raw, base_dir, problems) {
            provider_index
                .entry(p.name.clone())
                .or_insert(providers.len());
            providers.push(p);
        }
    }
    let mut alerts = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for raw in &raw.alerts {
        if let Some(name) = &raw.name {
            unique(&mut seen, name, "alert", problems);
        }
        if let Some(a) = alert_settings(raw, &provider_index, problems) {
            alerts.push(a);
        }
    }
    EventSettings {
        receivers,
        providers,
        alerts,
    }
}

fn unique(seen: &mut HashMap<String, usize>, name: &Text, what: &str, problems: &mut Problems) {
    match seen.get(&name.value) {
        Some(line) => problems.push(
            name.pos,
            format!(
                "duplicate {what} `{}` (first defined at line {line})",
                crate::escape::control(&name.value)
            ),
        ),
        None => {
            seen.insert(name.value.clone(), name.pos.line);
        }
    }
}

fn name_label(text: &Text, what: &str, problems: &mut Problems) -> Option<String> {
    if is_dns1123_label(&text.value) {
        Some(text.value.clone())
    } else {
        problems.push(
            text.pos,
            format!(
                "invalid {what} {:?}: expected a DNS-1123 label: at most 63 lowercase letters, \
                 digits and '-', starting and ending with a letter or digit",
                text.value
            ),
        );
        None
    }
}

fn receivers(raw: &RawReceivers, cx: &Context<'_>, problems: &mut Problems) -> ReceiverSettings {
    let listen = raw
        .listen
        .as_ref()
        .and_then(|text| match text.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid listen address {:?} for receivers.listen: expected an IP \
                         address and port such as 0.0.0.0:9292 or [::]:9292",
                        text.value
                    ),
                );
                None
            }
        })
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9292)));
    let read_timeout = match &raw.read_timeout {
        Some(_) => positive_duration(&raw.read_timeout, "receivers.readTimeout", problems),
        None => DEFAULT_RECEIVER_READ_TIMEOUT,
    };
    let max_connections = match &raw.max_connections {
        Some(text) => match text.value.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid value {:?} for receivers.maxConnections: expected a whole \
                         number of at least 1",
                        text.value
                    ),
                );
                DEFAULT_RECEIVER_CONNECTIONS
            }
        },
        None => DEFAULT_RECEIVER_CONNECTIONS,
    };
    let mut hooks = Vec::new();
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for raw in &raw.hooks {
        if let Some(name) = &raw.name {
            let namespace = raw
                .namespace
                .as_ref()
                .map_or(cx.default_namespace, |n| n.as_str());
            let key = (namespace.to_string(), name.value.clone());
            match seen.get(&key) {
                Some(line) => problems.push(
                    name.pos,
                    format!(
                        "duplicate hook `{}` in namespace `{}` (first defined at line {line})",
                        crate::escape::control(&key.1),
                        crate::escape::control(&key.0)
                    ),
                ),
                None => {
                    seen.insert(key, name.pos.line);
                }
            }
        }
        if let Some(hook) = hook_settings(raw, cx, problems) {
            hooks.push(hook);
        }
    }
    ReceiverSettings {
        listen,
        read_timeout,
        max_connections,
        hooks,
    }
}

fn hook_settings(raw: &RawHook, cx: &Context<'_>, problems: &mut Problems) -> Option<HookSettings> {
    let name = raw
        .name
        .as_ref()
        .and_then(|t| name_label(t, "hook name", problems));
    let namespace = match &raw.namespace {
        Some(text) => name_label(text, "namespace", problems),
        None => Some(cx.default_namespace.to_string()),
    };
    let kind = raw.kind.as_ref().and_then(|text| {
        let kind = ReceiverType::parse(&text.value);
        if kind.is_none() {
            problems.push(
                text.pos,
                format!(
                    "invalid hook type {:?}: expected `generic`, `generic-hmac`, `github`, \
                     `gitlab` or `bitbucket`",
                    text.value
                ),
            );
        }
        kind
    });
    let secret = hook_secret(raw, namespace.as_deref(), cx, problems);
    let mut events = Vec::new();
    for text in &raw.events {
        if text.value.trim().is_empty() {
            problems.push(text.pos, "an event name in events must not be empty");
        } else {
            events.push(text.value.clone());
        }
    }
    if raw.configurations.is_empty() {
        // An empty list (a missing one was reported by the schema).
        if let Some(name) = &raw.name {
            problems.push(
                name.pos,
                "a hook must trigger at least one configuration: list them in `configurations`",
            );
        }
    }
    let mut targets = Vec::new();
    for text in &raw.configurations {
        match resolve_configuration(&text.value, cx.configurations) {
            Ok(found) => targets.push(found),
            Err(reason) => problems.push(text.pos, reason),
        }
    }
    Some(HookSettings {
        name: name?,
        namespace: namespace?,
        kind: kind?,
        secret: secret?,
        events,
        configurations: targets,
    })
}

/// `[NAMESPACE/]NAME` to the configuration it names; a bare name must be unique, as for
/// `gitopsd reconcile`.
fn resolve_configuration(
    text: &str,
    configurations: &[(String, String)],
) -> Result<(String, String), String> {
    let shown = crate::escape::control(text);
    let (namespace, name) = match text.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, text),
    };
    let found: Vec<&(String, String)> = configurations
        .iter()
        .filter(|(ns, n)| n == name && namespace.is_none_or(|wanted| ns == wanted))
        .collect();
    match found.as_slice() {
        [c] => Ok((*c).clone()),
        [] => Err(format!(
            "hook configurations: no configuration named {shown}; expected [NAMESPACE/]NAME of \
             a configuration in this file"
        )),
        several => Err(format!(
            "hook configurations: several configurations are named {shown} (in namespaces {}); \
             name one as NAMESPACE/NAME",
            several
                .iter()
                .map(|(ns, _)| ns.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn hook_secret(
    raw: &RawHook,
    namespace: Option<&str>,
    cx: &Context<'_>,
    problems: &mut Problems,
) -> Option<SecretSource> {
    let base_dir = cx.base_dir;
    let given = [
        raw.secret.as_ref().map(|t| t.pos),
        raw.secret_file.as_ref().map(|t| t.pos),
        raw.local_auth.as_ref().map(|l| l.0),
    ];
    let count = given.iter().flatten().count();
    if count == 0 {
        problems.push(
            raw.pos,
            "a hook needs its secret: `secret`, `secretFile` or `localAuthRef`",
        );
        return None;
    }
    if count > 1 {
        if let Some(pos) = given.iter().flatten().nth(1) {
            problems.push(
                *pos,
                "give a hook's secret once: `secret`, `secretFile` or `localAuthRef`",
            );
        }
        return None;
    }
    if let Some(text) = &raw.secret {
        if text.value.is_empty() {
            problems.push(text.pos, "a hook's secret must not be empty");
            return None;
        }
        return Some(SecretSource::Value(SecretValue::Inline(Secret(
            text.value.clone(),
        ))));
    }
    if let Some(text) = &raw.secret_file {
        return non_empty_path(text, "secretFile", problems)
            .map(|p| SecretSource::Value(SecretValue::File(resolve(base_dir, &p))));
    }
    let (pos, directory, secret) = raw.local_auth.as_ref()?;
    match (directory, secret) {
        (Some(_), Some(s)) => {
            problems.push(
                s.pos,
                "`localAuthRef` takes either `directory` or `secret`, not both",
            );
            None
        }
        (None, None) => {
            problems.push(
                *pos,
                "`localAuthRef` needs `directory` (a directory holding the file `token`) or \
                 `secret` (a Kubernetes Secret with the key `token`)",
            );
            None
        }
        (Some(dir), None) => non_empty_path(dir, "localAuthRef.directory", problems)
            .map(|p| SecretSource::Directory(resolve(base_dir, &p))),
        (None, Some(s)) => {
            if !is_dns1123_subdomain(&s.value) {
                problems.push(
                    s.pos,
                    format!(
                        "invalid Secret name {:?} in localAuthRef.secret: expected a DNS-1123 \
                         subdomain",
                        s.value
                    ),
                );
                return None;
            }
            match cx.kubernetes {
                Some(k) => Some(SecretSource::Kubernetes(SecretRef {
                    kubernetes: k.clone(),
                    namespace: namespace?.to_string(),
                    name: s.value.clone(),
                })),
                None => {
                    if !cx.kubernetes_configured {
                        problems.push(
                            s.pos,
                            "`localAuthRef.secret` names a Kubernetes Secret, which needs a \
                             cluster: add the top-level `kubernetes: { kubeconfig: PATH }`, or \
                             use `localAuthRef.directory`",
                        );
                    }
                    None
                }
            }
        }
    }
}

fn non_empty_path(text: &Text, key: &str, problems: &mut Problems) -> Option<PathBuf> {
    if text.value.trim().is_empty() {
        problems.push(
            text.pos,
            format!("{key} must not be empty; expected a path"),
        );
        None
    } else {
        Some(PathBuf::from(&text.value))
    }
}

fn provider_settings(
    raw: &RawProvider,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<ProviderSettings> {
    let name = raw
        .name
        .as_ref()
        .and_then(|t| name_label(t, "provider name", problems));
    let kind = raw.kind.as_ref().and_then(|text| {
        let kind = ProviderType::parse(&text.value);
        if kind.is_none() {
            problems.push(
                text.pos,
                format!(
                    "invalid provider type {:?}: expected `generic`, `generic-hmac`, `slack`, \
                     `msteams` or `discord`",
                    text.value
                ),
            );
        }
        kind
    });
    let address = match (&raw.address, &raw.address_file) {
        (Some(_), Some(file)) => {
            problems.push(file.pos, "give either address or addressFile, not both");
            None
        }
        (Some(text), None) => match check_url(&text.value) {
            // The value is not quoted: it may embed a token.
            Err(reason) => {
                problems.push(text.pos, format!("invalid provider address: {reason}"));
                None
            }
            Ok(()) => Some(SecretValue::Inline(Secret(text.value.clone()))),
        },
        (None, Some(text)) => non_empty_path(text, "addressFile", problems)
            .map(|p| SecretValue::File(resolve(base_dir, &p))),
        (None, None) => {
            problems.push(
                raw.pos,
                "a provider needs its webhook URL: `address` or `addressFile`",
            );
            None
        }
    };
    let secret = match (&raw.secret, &raw.secret_file) {
        (Some(_), Some(file)) => {
            problems.push(file.pos, "give either secret or secretFile, not both");
            None
        }
        (Some(text), None) if text.value.is_empty() => {
            problems.push(text.pos, "a provider's secret must not be empty");
            None
        }
        (Some(text), None) => Some(SecretValue::Inline(Secret(text.value.clone()))),
        (None, Some(text)) => non_empty_path(text, "secretFile", problems)
            .map(|p| SecretValue::File(resolve(base_dir, &p))),
        (None, None) => None,
    };
    if kind == Some(ProviderType::GenericHmac)
        && secret.is_none()
        && raw.secret.is_none()
        && raw.secret_file.is_none()
    {
        problems.push(
            raw.pos,
            "a generic-hmac provider needs the key it signs with: `secret` or `secretFile`",
        );
    }
    let proxy = raw
        .proxy
        .as_ref()
        .and_then(|text| match check_url(&text.value) {
            Ok(()) => Some(text.value.clone()),
            Err(reason) => {
                problems.push(text.pos, format!("invalid provider proxy: {reason}"));
                None
            }
        });
    let cert_file = raw
        .cert_file
        .as_ref()
        .and_then(|t| non_empty_path(t, "certFile", problems))
        .map(|p| resolve(base_dir, &p));
    let timeout = match &raw.timeout {
        Some(_) => positive_duration(&raw.timeout, "timeout", problems),
        None => DEFAULT_PROVIDER_TIMEOUT,
    };
    Some(ProviderSettings {
        name: name?,
        kind: kind?,
        address: address?,
        secret,
        channel: raw.channel.as_ref().map(|t| t.value.clone()),
        username: raw.username.as_ref().map(|t| t.value.clone()),
        proxy,
        cert_file,
        timeout,
    })
}

/// An http(s) URL. The reason never quotes the URL.
fn check_url(text: &str) -> Result<(), &'static str> {
    match url::Url::parse(text) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err("expected an http:// or https:// URL"),
        Err(_) => Err("not a URL; expected an http:// or https:// URL"),
    }
}

fn alert_settings(
    raw: &RawAlert,
    providers: &HashMap<String, usize>,
    problems: &mut Problems,
) -> Option<AlertSettings> {
    let name = raw
        .name
        .as_ref()
        .and_then(|t| name_label(t, "alert name", problems));
    let provider = raw.provider.as_ref().and_then(|text| {
        let found = providers.get(&text.value).copied();
        if found.is_none() {
            problems.push(
                text.pos,
                format!(
                    "alert provider: no provider named {} in `providers`",
                    crate::escape::control(&text.value)
                ),
            );
        }
        found
    });
    let severity = match &raw.severity {
        None => Some(Severity::Info),
        Some(text) => match text.as_str() {
            "info" => Some(Severity::Info),
            "error" => Some(Severity::Error),
            other => {
                problems.push(
                    text.pos,
                    format!("invalid eventSeverity {other:?}: expected `info` or `error`"),
                );
                None
            }
        },
    };
    let mut sources = Vec::new();
    for (kind, name, namespace) in &raw.sources {
        let kind = kind.as_ref().and_then(|text| {
            let ok = text.value == "*"
                || matches!(text.as_str(), "GitRepository" | "Bucket" | "Kustomization");
            if !ok {
                problems.push(
                    text.pos,
                    format!(
                        "invalid eventSources kind {:?}: expected `GitRepository`, `Bucket`, \
                         `Kustomization` or `*`",
                        text.value
                    ),
                );
            }
            ok.then(|| text.value.clone())
        });
        if let (Some(kind), Some(name)) = (kind, name) {
            sources.push(EventSourceSelector {
                kind,
                name: name.value.clone(),
                namespace: namespace
                    .as_ref()
                    .map_or_else(|| "*".to_string(), |n| n.value.clone()),
            });
        }
    }
    let regexes = |list: &[Text], key: &str, problems: &mut Problems| -> Vec<regex::Regex> {
        list.iter()
            .filter_map(|text| match regex::Regex::new(&text.value) {
                Ok(r) => Some(r),
                Err(e) => {
                    let reason = match e {
                        regex::Error::Syntax(s) => s.lines().last().unwrap_or_default().to_string(),
                        other => other.to_string(),
                    };
                    problems.push(
                        text.pos,
                        format!("invalid regular expression in {key}: {reason}"),
                    );
                    None
                }
            })
            .collect()
    };
    let inclusion = regexes(&raw.inclusion, "inclusionList", problems);
    let exclusion = regexes(&raw.exclusion, "exclusionList", problems);
    let suspend = boolean(&raw.suspend, "suspend", problems);
    Some(AlertSettings {
        name: name?,
        provider: provider?,
        severity: severity?,
        sources,
        inclusion,
        exclusion,
        suspend,
    })
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
