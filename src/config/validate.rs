//! Turns the raw schema into [`Settings`]: parses every value, applies defaults and Flux's ref
//! precedence, resolves paths, and checks what spans several fields (unique names, dependsOn
//! references and cycles). Every problem is recorded at the value that causes it, and
//! checking goes on, so one run shows them all.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::duration::{self, DurationError};
use super::model::{
    Configuration, GitImplementation, GitReference, Kustomization, Publish, Settings, SourceKind,
    SourceSettings, Target, DEFAULT_INTERVAL,
};
use super::positions::{Pos, Problems};
use super::schema::{
    RawConfiguration, RawGitRef, RawKustomization, RawPublish, RawSettings, RawSource, Text,
};
use crate::source::git::semver::Range;

/// Where state lives when `stateDir` is not set.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gitopsd";
/// The status/artifact API's address when `server.listen` is not set.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 4;
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_PUBLISH_LINK: &str = "current";

const DURATION_HINT: &str = "expected a Go duration such as 90s, 10m or 1h30m";
const LABEL_RULES: &str = "expected a DNS-1123 label: at most 63 lowercase letters, digits \
                           and '-', starting and ending with a letter or digit";

/// Validates `raw`. `base_dir` must be absolute; relative paths in the file resolve against
/// it. The result is only meaningful when `problems` stayed empty.
pub fn validate(raw: &RawSettings, base_dir: &Path, problems: &mut Problems) -> Settings {
    let state_dir = match &raw.state_dir {
        Some(text) => directory(text, "stateDir", base_dir, problems),
        None => PathBuf::from(DEFAULT_STATE_DIR),
    };
    let listen = raw
        .server
        .as_ref()
        .and_then(|server| server.listen.as_ref())
        .and_then(|text| match text.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid listen address {:?} for server.listen: expected an IP address \
                         and port such as 127.0.0.1:9090 or [::1]:9090",
                        text.value
                    ),
                );
                None
            }
        })
        .unwrap_or(DEFAULT_LISTEN);
    let max_concurrent_fetches = match &raw.max_concurrent_fetches {
        Some(text) => match text.value.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid value {:?} for maxConcurrentFetches: expected a whole number \
                         of at least 1",
                        text.value
                    ),
                );
                DEFAULT_MAX_CONCURRENT_FETCHES
            }
        },
        None => DEFAULT_MAX_CONCURRENT_FETCHES,
    };

    let raw_configurations = raw.configurations.as_deref().unwrap_or_default();
    let mut configurations = Vec::with_capacity(raw_configurations.len());
    // (namespace, name) → line of the first definition.
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for raw_configuration in raw_configurations {
        if let Some(name) = &raw_configuration.name {
            let namespace = raw_configuration
                .namespace
                .as_ref()
                .map_or(DEFAULT_NAMESPACE, |n| n.as_str());
            let key = (namespace.to_string(), name.value.clone());
            if let Some(first_line) = seen.get(&key) {
                problems.push(
                    name.pos,
                    format!(
                        "duplicate configuration `{}` in namespace `{}` (first defined at line {first_line})",
                        key.1, key.0
                    ),
                );
            } else {
                seen.insert(key, name.pos.line);
            }
        }
        if let Some(configuration) = configuration(raw_configuration, base_dir, problems) {
            configurations.push(configuration);
        }
    }

    Settings {
        state_dir,
        listen,
        max_concurrent_fetches,
        configurations,
    }
}

fn configuration(
    raw: &RawConfiguration,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Configuration> {
    let name = raw
        .name
        .as_ref()
        .and_then(|text| label(text, "configuration name", problems));
    let namespace = match &raw.namespace {
        Some(text) => label(text, "namespace", problems),
        None => Some(DEFAULT_NAMESPACE.to_string()),
    };
    if let Some(scope) = &raw.scope {
        // Accepted for Azure compatibility; nothing acts on it yet.
        if !matches!(scope.as_str(), "cluster" | "namespace") {
            problems.push(
                scope.pos,
                format!(
                    "invalid scope {:?}: expected `cluster` or `namespace`",
                    scope.value
                ),
            );
        }
    }
    let suspend = boolean(&raw.suspend, "suspend", problems);
    let source = raw
        .source
        .as_ref()
        .and_then(|s| source(s, base_dir, problems));
    let kustomizations = kustomizations(&raw.kustomizations, base_dir, problems);
    Some(Configuration {
        name: name?,
        namespace: namespace?,
        suspend,
        source: source?,
        kustomizations,
    })
}

fn source(raw: &RawSource, base_dir: &Path, problems: &mut Problems) -> Option<SourceSettings> {
    let kind = raw.kind.as_ref().and_then(|kind| match kind.as_str() {
        "git" => Some(SourceKind::Git),
        "bucket" | "azblob" => {
            problems.push(
                kind.pos,
                format!(
                    "source kind `{}` is not supported yet; only `git` is",
                    kind.value
                ),
            );
            None
        }
        other => {
            problems.push(
                kind.pos,
                format!(
                    "unknown source kind {other:?}: expected `git` (`bucket` and `azblob` are \
                     not supported yet)"
                ),
            );
            None
        }
    });
    let url = raw
        .url
        .as_ref()
        .and_then(|url| match git_url(&url.value, base_dir) {
            Ok(url) => Some(url),
            Err(reason) => {
                // The URL itself is not repeated: it may carry credentials.
                problems.push(url.pos, format!("invalid URL for source.url: {reason}"));
                None
            }
        });
    let reference = match &raw.reference {
        Some(reference) => git_reference(reference, problems),
        None => Some(GitReference::RemoteHead),
    };
    let git_implementation = match &raw.git_implementation {
        None => GitImplementation::Auto,
        Some(text) => match text.as_str() {
            "auto" => GitImplementation::Auto,
            "gix" => GitImplementation::Gix,
            "git2" => GitImplementation::Git2,
            other => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid gitImplementation {other:?}: expected `auto`, `gix` or `git2`"
                    ),
                );
                GitImplementation::Auto
            }
        },
    };
    let interval = positive_duration(&raw.interval, "interval", problems);
    let timeout = positive_duration(&raw.timeout, "timeout", problems);
    let retry_interval = positive_duration(&raw.retry_interval, "retryInterval", problems);
    let suspend = boolean(&raw.suspend, "suspend", problems);
    let publish = match &raw.publish {
        Some(publish) => Some(self::publish(publish, base_dir, problems)?),
        None => None,
    };
    Some(SourceSettings {
        kind: kind?,
        url: url?,
        reference: reference?,
        interval,
        timeout,
        retry_interval,
        git_implementation,
        ignore: raw.ignore.as_ref().map(|text| text.value.clone()),
        suspend,
        publish,
    })
}

/// Checks every ref field that is set, then applies Flux's precedence:
/// commit > name > tag > semver > branch.
fn git_reference(raw: &RawGitRef, problems: &mut Problems) -> Option<GitReference> {
    let mut valid = true;
    let mut check = |text: &Option<Text>, key: &str, check: fn(&str) -> Result<(), String>| {
        let text = text.as_ref()?;
        match check(&text.value) {
            Ok(()) => Some(text.value.clone()),
            Err(reason) => {
                problems.push(
                    text.pos,
                    format!("invalid {key} {:?} in source.ref: {reason}", text.value),
                );
                valid = false;
                None
            }
        }
    };
    let branch = check(&raw.branch, "branch", check_ref_component);
    let tag = check(&raw.tag, "tag", check_ref_component);
    let semver = check(&raw.semver, "semver range", |range| {
        Range::parse(range).map(|_| ()).map_err(|err| err.reason)
    });
    let name = check(&raw.name, "ref name", check_full_ref_name);
    let commit = check(&raw.commit, "commit", check_commit);
    if !valid {
        return None;
    }
    Some(if let Some(sha) = commit {
        GitReference::Commit {
            sha: sha.to_ascii_lowercase(),
            branch,
        }
    } else if let Some(name) = name {
        GitReference::Name(name)
    } else if let Some(tag) = tag {
        GitReference::Tag(tag)
    } else if let Some(range) = semver {
        GitReference::Semver(range)
    } else if let Some(branch) = branch {
        GitReference::Branch(branch)
    } else {
        GitReference::RemoteHead
    })
}

fn publish(raw: &RawPublish, base_dir: &Path, problems: &mut Problems) -> Option<Publish> {
    let directory = raw
        .directory
        .as_ref()
        .map(|text| directory(text, "publish.directory", base_dir, problems));
    let link = match &raw.link {
        None => DEFAULT_PUBLISH_LINK.to_string(),
        Some(text) => {
            let link = text.as_str();
            if link.is_empty() || link == "." || link == ".." || link.contains(['/', '\\', '\0']) {
                problems.push(
                    text.pos,
                    format!(
                        "invalid publish.link {link:?}: expected a plain file name such as \
                         `current`, without `/`"
                    ),
                );
            }
            link.to_string()
        }
    };
    Some(Publish {
        directory: directory?,
        link,
    })
}

fn kustomizations(
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
        interval: positive_duration(&raw.interval, "interval", problems),
        retry_interval: positive_duration(&raw.retry_interval, "retryInterval", problems),
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

fn label(text: &Text, what: &str, problems: &mut Problems) -> Option<String> {
    if is_dns1123_label(&text.value) {
        Some(text.value.clone())
    } else {
        problems.push(
            text.pos,
            format!("invalid {what} {:?}: {LABEL_RULES}", text.value),
        );
        None
    }
}

/// Kubernetes' DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && alnum(&bytes[0])
        && alnum(&bytes[bytes.len() - 1])
}

fn boolean(text: &Option<Text>, key: &str, problems: &mut Problems) -> bool {
    let Some(text) = text else { return false };
    match text.as_str() {
        "true" | "True" | "TRUE" => true,
        "false" | "False" | "FALSE" => false,
        other => {
            problems.push(
                text.pos,
                format!("invalid value {other:?} for {key}: expected true or false"),
            );
            false
        }
    }
}

/// An interval or timeout: a Go duration greater than zero, [`DEFAULT_INTERVAL`] when unset.
fn positive_duration(text: &Option<Text>, key: &str, problems: &mut Problems) -> Duration {
    let Some(text) = text else {
        return DEFAULT_INTERVAL;
    };
    match duration::parse_positive(&text.value) {
        Ok(duration) => duration,
        Err(err) => {
            let reason = match err {
                DurationError::Syntax => DURATION_HINT.to_string(),
                DurationError::NotPositive => format!("must be greater than zero; {DURATION_HINT}"),
                other => format!("{other}; {DURATION_HINT}"),
            };
            problems.push(
                text.pos,
                format!("invalid duration {:?} for {key}: {reason}", text.value),
            );
            DEFAULT_INTERVAL
        }
    }
}

/// A directory from the file: relative ones resolve against the config file's directory.
fn directory(text: &Text, key: &str, base_dir: &Path, problems: &mut Problems) -> PathBuf {
    if text.value.is_empty() {
        problems.push(
            text.pos,
            format!("{key} must not be empty; expected a directory path"),
        );
    }
    resolve(base_dir, Path::new(&text.value))
}

/// `base.join(path)` with `.` and `..` removed lexically (without touching the file system,
/// which may not have the directory yet).
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    let mut resolved = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match resolved.components().next_back() {
                Some(Component::Normal(_)) => {
                    resolved.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => resolved.push(component),
            },
            other => resolved.push(other),
        }
    }
    resolved
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

/// The URL to fetch: a local path written as such (`/srv/git/repo`, `./repo`, `..`) becomes a
/// `file://` URL, relative paths counting from the config file's directory; anything else must
/// be a URL [`check_git_url`] accepts and is kept as written.
fn git_url(url: &str, base_dir: &Path) -> Result<String, String> {
    let is_local_path = url == "."
        || url == ".."
        || url.starts_with('/')
        || url.starts_with("./")
        || url.starts_with("../");
    if !is_local_path {
        check_git_url(url)?;
        return Ok(url.to_string());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains a space or control character".into());
    }
    let path = resolve(base_dir, Path::new(url));
    Ok(format!("file://{}", path.display()))
}

/// Accepts `file://`, `git://`, `http://`, `https://`, `ssh://` URLs and scp-like
/// `user@host:path`. The reason never quotes the URL, which may hold a password.
fn check_git_url(url: &str) -> Result<(), String> {
    const ACCEPTED: &str = "expected file://, git://, http://, https://, ssh://, scp-like \
                            user@host:path, or a local path starting with /, ./ or ../";
    if url.is_empty() {
        return Err(format!("it is empty; {ACCEPTED}"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains a space or control character".into());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        return match scheme.as_str() {
            "file" => {
                if path.len() <= 1 {
                    Err(
                        "a file:// URL needs an absolute path, such as file:///srv/git/repo.git"
                            .into(),
                    )
                } else {
                    Ok(())
                }
            }
            "git" | "http" | "https" | "ssh" => {
                check_authority(authority)?;
                if path.len() <= 1 {
                    Err("it names no repository path after the host".into())
                } else {
                    Ok(())
                }
            }
            _ => Err(format!("unsupported scheme `{scheme}`; {ACCEPTED}")),
        };
    }
    // scp-like: user@host:path, where no '/' comes before the ':'.
    if let Some((user_host, path)) = url.split_once(':') {
        if let Some((user, host)) = user_host.split_once('@') {
            if !user_host.contains('/') && !user.is_empty() {
                if !is_host_name(host) {
                    return Err("the host part of user@host:path is not a valid host name".into());
                }
                if path.is_empty() {
                    return Err("it names no repository path after `:`".into());
                }
                return Ok(());
            }
        }
    }
    Err(format!("it is not a URL; {ACCEPTED}"))
}

/// `[user[:password]@]host[:port]` of a network URL.
fn check_authority(authority: &str) -> Result<(), String> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (address, after) = bracketed
            .split_once(']')
            .ok_or("its IPv6 address lacks the closing `]`")?;
        if address.parse::<Ipv6Addr>().is_err() {
            return Err("its bracketed host is not an IPv6 address".into());
        }
        if after.is_empty() {
            None
        } else {
            Some(
                after
                    .strip_prefix(':')
                    .ok_or("unexpected text after the IPv6 address")?,
            )
        }
    } else {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        if !is_host_name(host) {
            return Err(if host.is_empty() {
                "it has no host".into()
            } else {
                "its host is not a valid host name".into()
            });
        }
        port
    };
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err("its port is not a number between 0 and 65535".into());
        }
    }
    Ok(())
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%'))
}

/// A branch or tag as git's check-ref-format accepts it (without the `refs/heads/` part).
fn check_ref_component(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with(['-', '/', '.'])
        || name.ends_with(['/', '.'])
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("//")
        || name.contains("@{")
        || name == "@"
        || name.contains("/.")
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        Err("not a valid git ref name (no spaces, `..`, `~^:?*[\\`, and not ending in `/`, `.` or `.lock`)".into())
    } else {
        Ok(())
    }
}

fn check_full_ref_name(name: &str) -> Result<(), String> {
    match name.strip_prefix("refs/") {
        Some(rest) if check_ref_component(rest).is_ok() => Ok(()),
        _ => Err("expected a full ref name starting with refs/, such as refs/pull/1/head".into()),
    }
}

fn check_commit(sha: &str) -> Result<(), String> {
    if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("expected a full 40-character hexadecimal SHA-1".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "cluster-config", "a1", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

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

    #[test]
    fn resolves_against_the_base() {
        let base = Path::new("/etc/gitopsd");
        assert_eq!(
            resolve(base, Path::new("./state")),
            Path::new("/etc/gitopsd/state")
        );
        assert_eq!(resolve(base, Path::new("../x/./y")), Path::new("/etc/x/y"));
        assert_eq!(resolve(base, Path::new("/srv/app")), Path::new("/srv/app"));
        assert_eq!(resolve(base, Path::new("/../a")), Path::new("/a"));
    }

    #[test]
    fn git_urls() {
        for ok in [
            "https://github.com/org/repo",
            "http://localhost:3000/org/repo.git",
            "ssh://git@github.com/org/fleet",
            "ssh://git@[::1]:2222/org/fleet",
            "git://host/repo",
            "file:///srv/git/edge.git",
            "git@github.com:org/repo.git",
            "https://user:token@host/org/repo",
        ] {
            assert_eq!(check_git_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "github.com/org/repo",
            "ftp://host/repo",
            "https://",
            "https:///org/repo",
            "https://host",
            "https://host:port/repo",
            "https://host/org repo",
            "file://",
            "file://repo",
            "git@:repo",
            "git@host:",
            "ssh://git@[::1/repo",
        ] {
            assert!(check_git_url(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn local_paths_become_file_urls() {
        let base = Path::new("/etc/gitopsd");
        assert_eq!(git_url("..", base).as_deref(), Ok("file:///etc"));
        assert_eq!(git_url(".", base).as_deref(), Ok("file:///etc/gitopsd"));
        assert_eq!(
            git_url("./repo", base).as_deref(),
            Ok("file:///etc/gitopsd/repo")
        );
        assert_eq!(
            git_url("/srv/git/x.git", base).as_deref(),
            Ok("file:///srv/git/x.git")
        );
        assert_eq!(git_url("https://h/r", base).as_deref(), Ok("https://h/r"));
        assert!(git_url("repo", base).is_err());
        assert!(git_url("github.com/org/repo", base).is_err());
    }

    #[test]
    fn ref_names() {
        assert!(check_ref_component("main").is_ok());
        assert!(check_ref_component("release/1.x").is_ok());
        assert!(check_ref_component("v1.2.3").is_ok());
        for bad in ["", "a b", "a..b", "a/", "x.lock", "-x", "a~1", "a:b", "@"] {
            assert!(check_ref_component(bad).is_err(), "{bad:?}");
        }
        assert!(check_full_ref_name("refs/pull/1/head").is_ok());
        assert!(check_full_ref_name("main").is_err());
        assert!(check_full_ref_name("refs/").is_err());
        assert!(check_commit(&"a".repeat(40)).is_ok());
        assert!(check_commit(&"A".repeat(40)).is_ok());
        assert!(check_commit("abc123").is_err());
        assert!(check_commit(&"g".repeat(40)).is_err());
    }
}
