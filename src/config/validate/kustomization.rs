//! The kustomizations of one configuration: each one's fields, unique names, and dependsOn
//! references and cycles (Flux never notices a loop; its kustomizations just never apply).

use std::collections::HashMap;
use std::path::Path;

use super::super::model::{Kustomization, Target};
use super::super::schema::{RawHealthCheck, RawKustomization, RawPostBuild, RawTarget};
use super::configuration::label;
use crate::apply::kubernetes::{ClusterSettings, HealthCheck, Validation};
use crate::render::substitute::{check_names, PostBuild, ValuesFrom};
use crate::source::config::Cluster;
use crate::syntax::fields::Text;
use crate::syntax::positions::{Pos, Problems};
use crate::syntax::values::{
    boolean, directory, is_dns1123_label, is_dns1123_subdomain, polling_interval, positive_duration,
};

/// What a kustomization's target depends on beyond its own fields.
#[derive(Clone, Copy)]
pub(super) struct Place<'a> {
    pub cluster: Cluster<'a>,
    /// The configuration's namespace (`None` when invalid, reported already).
    pub namespace: Option<&'a str>,
    /// `scope: namespace`.
    pub namespaced_scope: bool,
}

pub(super) fn kustomizations(
    raws: &[RawKustomization],
    base_dir: &Path,
    place: Place<'_>,
    problems: &mut Problems,
) -> Vec<Kustomization> {
    let mut result = Vec::with_capacity(raws.len());
    // name → index in `raws` of its first definition.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, raw) in raws.iter().enumerate() {
        if let Some(name) = &raw.name {
            if let Some(&first) = index.get(name.as_str()) {
                let first_line = raws[first].name.as_ref().map_or(0, |n| n.pos.line);
                problems.push(
                    name.pos,
                    format!(
                        "duplicate kustomization `{}` in this configuration (first defined at line {first_line})",
                        name.value
                    ),
                );
            } else {
                index.insert(name.as_str(), i);
            }
        }
        if let Some(kustomization) = kustomization(raw, base_dir, place, problems) {
            result.push(kustomization);
        }
    }
    check_dependencies(raws, &index, problems);
    result
}

fn kustomization(
    raw: &RawKustomization,
    base_dir: &Path,
    place: Place<'_>,
    problems: &mut Problems,
) -> Option<Kustomization> {
    let name = raw
        .name
        .as_ref()
        .and_then(|text| label(text, "kustomization name", problems));
    let path = match &raw.path {
        None => Some(String::new()),
        Some(text) => match artifact_path(&text.value) {
            Some(path) => Some(path),
            None => {
                problems.push(
                    text.pos,
                    format!(
                        "path {:?} escapes the source's root through `..`; expected a path \
                         inside the source such as ./apps",
                        text.value
                    ),
                );
                None
            }
        },
    };
    let mut depends_on: Vec<String> = Vec::with_capacity(raw.depends_on.len());
    for dependency in &raw.depends_on {
        if !depends_on.contains(&dependency.value) {
            depends_on.push(dependency.value.clone());
        }
    }
    let target = target(raw, base_dir, place, problems);
    let target_namespace = raw.target_namespace.as_ref().and_then(|text| {
        if is_dns1123_label(&text.value) {
            Some(text.value.clone())
        } else {
            problems.push(
                text.pos,
                format!(
                    "invalid targetNamespace {:?}: expected a namespace name (a DNS-1123 label)",
                    text.value
                ),
            );
            None
        }
    });
    if let (Some(text), Some(namespace)) = (&raw.target_namespace, place.namespace) {
        if place.namespaced_scope && text.value != namespace {
            problems.push(
                text.pos,
                format!(
                    "targetNamespace `{}` is outside the configuration's namespace `{namespace}`, \
                     which `scope: namespace` confines it to",
                    text.value
                ),
            );
        }
    }
    let post_build = raw
        .post_build
        .as_ref()
        .map(|p| post_build(p, problems))
        .unwrap_or_default();
    Some(Kustomization {
        name: name?,
        path: path?,
        prune: boolean(&raw.prune, "prune", problems),
        depends_on,
        interval: polling_interval(&raw.interval, "interval", problems),
        retry_interval: polling_interval(&raw.retry_interval, "retryInterval", problems),
        timeout: positive_duration(&raw.timeout, "timeout", problems),
        wait: boolean(&raw.wait, "wait", problems),
        force: boolean(&raw.force, "force", problems),
        suspend: boolean(&raw.suspend, "suspend", problems),
        target: target?,
        target_namespace,
        post_build,
    })
}

/// The target: a directory, the cluster (`target: { kubernetes: true }`, or no `target` when
/// the top-level `kubernetes` section exists, as Azure applies to its cluster), or the
/// state dir. The cluster-only fields are refused on the others.
fn target(
    raw: &RawKustomization,
    base_dir: &Path,
    place: Place<'_>,
    problems: &mut Problems,
) -> Option<Target> {
    let wants_cluster = match &raw.target {
        None => place.cluster.configured,
        Some(RawTarget {
            pos,
            directory: dir,
            kubernetes,
        }) => {
            let cluster = boolean(kubernetes, "target.kubernetes", problems);
            match (dir, cluster) {
                (Some(text), false) => {
                    let path = directory(text, "target.directory", base_dir, problems);
                    return cluster_only_fields(raw, problems).then_some(Target::Directory(path));
                }
                (Some(text), true) => {
                    problems.push(
                        text.pos,
                        "`target` takes either `directory` or `kubernetes: true`, not both",
                    );
                    return None;
                }
                (None, true) => true,
                (None, false) => {
                    problems.push(
                        *pos,
                        "`target` needs `directory: PATH` or `kubernetes: true`",
                    );
                    return None;
                }
            }
        }
    };
    if !wants_cluster {
        return cluster_only_fields(raw, problems).then_some(Target::None);
    }
    let Some(cluster) = place.cluster.settings else {
        if let (false, Some(t)) = (place.cluster.configured, &raw.target) {
            problems.push(
                t.pos,
                "`target: { kubernetes: true }` needs the top-level `kubernetes` section (a \
                 kubeconfig or `inCluster: true`)",
            );
        }
        return None;
    };
    let validation = match &raw.validation {
        None => Validation::None,
        Some(text) => match text.as_str() {
            "none" => Validation::None,
            "client" => Validation::Client,
            "server" => Validation::Server,
            other => {
                problems.push(
                    text.pos,
                    format!("invalid validation {other:?}: expected `none`, `client` or `server`"),
                );
                Validation::None
            }
        },
    };
    let service_account = raw.service_account_name.as_ref().and_then(|text| {
        if is_dns1123_subdomain(&text.value) {
            Some(text.value.clone())
        } else {
            problems.push(
                text.pos,
                format!(
                    "invalid serviceAccountName {:?}: expected a DNS-1123 subdomain",
                    text.value
                ),
            );
            None
        }
    });
    let health_checks = raw
        .health_checks
        .iter()
        .filter_map(|h| health_check(h, problems))
        .collect();
    Some(Target::Kubernetes(Box::new(ClusterSettings {
        cluster: cluster.clone(),
        service_account,
        namespaced_scope: place.namespaced_scope,
        validation,
        health_checks,
    })))
}

/// Reports the fields only a cluster target uses; `true` when there are none.
fn cluster_only_fields(raw: &RawKustomization, problems: &mut Problems) -> bool {
    let mut ok = true;
    let mut refuse = |pos: Pos, field: &str| {
        problems.push(
            pos,
            format!(
                "`{field}` needs a cluster target (`target: {{ kubernetes: true }}` and the \
                 top-level `kubernetes` section)"
            ),
        );
        ok = false;
    };
    if let Some(t) = &raw.validation {
        if t.value != "none" {
            refuse(t.pos, "validation");
        }
    }
    if let Some(t) = &raw.service_account_name {
        refuse(t.pos, "serviceAccountName");
    }
    if let Some(h) = raw.health_checks.first() {
        refuse(h.pos, "healthChecks");
    }
    ok
}

fn health_check(raw: &RawHealthCheck, problems: &mut Problems) -> Option<HealthCheck> {
    let name = raw.name.as_ref()?;
    let namespace = match &raw.namespace {
        Some(text) if !is_dns1123_label(&text.value) => {
            problems.push(
                text.pos,
                format!("invalid namespace {:?} in healthChecks", text.value),
            );
            return None;
        }
        Some(text) => text.value.clone(),
        None => String::new(),
    };
    Some(HealthCheck {
        api_version: raw.api_version.as_ref()?.value.clone(),
        kind: raw.kind.as_ref()?.value.clone(),
        name: name.value.clone(),
        namespace,
    })
}

fn post_build(raw: &RawPostBuild, problems: &mut Problems) -> PostBuild {
    let mut substitute = std::collections::BTreeMap::new();
    for (name, value) in &raw.substitute {
        if check_names([name.as_str()]).is_err() {
            problems.push(
                name.pos,
                format!(
                    "invalid variable name {:?} in postBuild.substitute: expected \
                     [_a-zA-Z][_a-zA-Z0-9]*",
                    name.value
                ),
            );
        } else {
            substitute.insert(name.value.clone(), value.value.clone());
        }
    }
    let mut substitute_from = Vec::new();
    for from in &raw.substitute_from {
        let secret = match from.kind.as_ref().map(|t| t.as_str()) {
            Some("ConfigMap") => false,
            Some("Secret") => true,
            Some(other) => {
                let pos = from.kind.as_ref().map_or(from.pos, |t: &Text| t.pos);
                problems.push(
                    pos,
                    format!("invalid kind {other:?} in substituteFrom: expected `ConfigMap` or `Secret`"),
                );
                continue;
            }
            None => continue,
        };
        let Some(name) = &from.name else { continue };
        if !is_dns1123_subdomain(&name.value) {
            problems.push(
                name.pos,
                format!("invalid name {:?} in substituteFrom", name.value),
            );
            continue;
        }
        substitute_from.push(ValuesFrom {
            secret,
            name: name.value.clone(),
            optional: boolean(&from.optional, "substituteFrom.optional", problems),
        });
    }
    PostBuild {
        substitute,
        substitute_from,
    }
}

/// Every dependsOn entry must name a kustomization of the same configuration, and the
/// dependencies must not loop (Flux never notices a loop; its kustomizations just never apply).
fn check_dependencies(
    raws: &[RawKustomization],
    index: &HashMap<&str, usize>,
    problems: &mut Problems,
) {
    // Edges from each first definition to the first definitions it depends on, with the
    // position of the dependsOn entry.
    let mut edges: Vec<Vec<(usize, Pos)>> = vec![Vec::new(); raws.len()];
    for (i, raw) in raws.iter().enumerate() {
        let Some(name) = &raw.name else { continue };
        if index.get(name.as_str()) != Some(&i) {
            continue; // a duplicate, reported already
        }
        for dependency in &raw.depends_on {
            match index.get(dependency.as_str()) {
                Some(&target) => {
                    if !edges[i].iter().any(|(t, _)| *t == target) {
                        edges[i].push((target, dependency.pos));
                    }
                }
                None => problems.push(
                    dependency.pos,
                    format!(
                        "kustomization `{}` depends on `{}`, which is not a kustomization of \
                         this configuration",
                        name.value, dependency.value
                    ),
                ),
            }
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    struct Search<'a> {
        raws: &'a [RawKustomization],
        edges: &'a [Vec<(usize, Pos)>],
        marks: Vec<Mark>,
        path: Vec<usize>,
        problems: &'a mut Problems,
    }
    impl Search<'_> {
        fn name(&self, i: usize) -> &str {
            self.raws[i].name.as_ref().map_or("", |n| n.as_str())
        }

        fn visit(&mut self, from: usize) {
            self.marks[from] = Mark::OnPath;
            self.path.push(from);
            for &(to, pos) in &self.edges[from] {
                match self.marks[to] {
                    Mark::New => self.visit(to),
                    Mark::OnPath => {
                        let start = self.path.iter().position(|&p| p == to).unwrap_or(0);
                        let mut names: Vec<&str> =
                            self.path[start..].iter().map(|&i| self.name(i)).collect();
                        names.push(self.name(to));
                        let message = format!("dependsOn cycle: {}", names.join(" -> "));
                        self.problems.push(pos, message);
                    }
                    Mark::Done => {}
                }
            }
            self.path.pop();
            self.marks[from] = Mark::Done;
        }
    }
    let mut search = Search {
        raws,
        edges: &edges,
        marks: vec![Mark::New; raws.len()],
        path: Vec::new(),
        problems,
    };
    for i in 0..raws.len() {
        if search.marks[i] == Mark::New {
            search.visit(i);
        }
    }
}

/// Normalises a kustomization path inside the artifact: `./apps/../infra/` → `infra`, `./` →
/// `` (the root). An absolute path counts from the artifact root, as in Flux. `None` when
/// `..` climbs above the root.
pub fn artifact_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_normalise_and_never_escape() {
        assert_eq!(artifact_path("./").as_deref(), Some(""));
        assert_eq!(artifact_path("").as_deref(), Some(""));
        assert_eq!(artifact_path(".").as_deref(), Some(""));
        assert_eq!(
            artifact_path("./infrastructure").as_deref(),
            Some("infrastructure")
        );
        assert_eq!(artifact_path("/apps/edge/").as_deref(), Some("apps/edge"));
        assert_eq!(
            artifact_path("apps/../infra//x").as_deref(),
            Some("infra/x")
        );
        assert_eq!(artifact_path("../x"), None);
        assert_eq!(artifact_path("a/../../x"), None);
        assert_eq!(artifact_path("/.."), None);
    }
}
