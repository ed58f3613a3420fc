//! The kustomizations of one configuration: each one's fields, unique names, and dependsOn
//! references and cycles (Flux never notices a loop; its kustomizations just never apply).

use std::collections::HashMap;
use std::path::Path;

use super::super::model::{Kustomization, Target};
use super::super::schema::RawKustomization;
use super::configuration::label;
use crate::syntax::positions::{Pos, Problems};
use crate::syntax::values::{boolean, directory, polling_interval, positive_duration};

pub(super) fn kustomizations(
    raws: &[RawKustomization],
    base_dir: &Path,
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
        if let Some(kustomization) = kustomization(raw, base_dir, problems) {
            result.push(kustomization);
        }
    }
    check_dependencies(raws, &index, problems);
    result
}

fn kustomization(
    raw: &RawKustomization,
    base_dir: &Path,
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
    let target = match &raw.target {
        None => Some(Target::None),
        Some(target) => target
            .directory
            .as_ref()
            .map(|text| Target::Directory(directory(text, "target.directory", base_dir, problems))),
    };
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
    })
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
