//! The value rules of the three sections: names, types, secrets given once, the hook's
//! configurations resolved, URLs, durations, regexes. Every problem at its value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::decode::{RawAlert, RawEvents, RawHook, RawProvider, RawReceivers};
use super::model::*;
use crate::syntax::fields::Text;
use crate::syntax::positions::Problems;
use crate::syntax::values::{
    boolean, is_dns1123_label, is_dns1123_subdomain, positive_duration, resolve,
};
use crate::vocab::{KubernetesSettings, Secret, SecretRef, SecretValue};

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
