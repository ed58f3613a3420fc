//! A `git` source's settings, and the rules that check them: the URL, the ref and Flux's
//! precedence among its fields, the implementation, and the credential keys named after
//! `az k8s-configuration flux create`'s arguments.
//!
//! This module owns everything both the config loader and the runtime need about a git
//! source's settings ([`GitSettings`], [`GitAuthSettings`] and the secret values in it,
//! [`UrlKind`]), so that `config` never reaches into `auth`'s runtime code: `config` decodes
//! the common source keys and calls [`decode`] and [`validate`] for these. The URL rules are
//! in `url.rs`, the credential settings and theirs in `credentials.rs`. It depends on
//! `syntax` for positions and value rules, on `vocab` for [`SecretRef`], and on `semver` to
//! check a range parses.

mod credentials;
mod url;

use std::path::Path;

use super::semver::Range;
use crate::syntax::fields::{Fields, Text};
use crate::syntax::positions::{Pos, Problems};
use crate::vocab::SecretRef;

pub(crate) use credentials::looks_like_private_key;
pub use credentials::{GitAuthSettings, SecretBytes, SecretSource, UrlKind};
pub use url::url;

/// A `git` source's own settings; the URL and what every kind has are in the caller's.
#[derive(Debug, Clone)]
pub struct GitSettings {
    pub reference: GitReference,
    pub implementation: GitImplementation,
    pub auth: GitAuthSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitImplementation {
    Auto,
    Gix,
    Git2,
}

/// The git ref to follow, after Flux's precedence (commit > name > tag > semver > branch)
/// has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitReference {
    /// No ref given: the branch the remote's HEAD points at.
    RemoteHead,
    Branch(String),
    Tag(String),
    /// A Masterminds range, already checked to parse.
    Semver(String),
    /// A full ref name such as `refs/pull/1/head`.
    Name(String),
    Commit {
        sha: String,
        branch: Option<String>,
    },
}

/// The fields of `ref`.
pub const REF_FIELDS: &[&str] = &["branch", "tag", "semver", "commit", "name"];

/// The credential keys, named after `az k8s-configuration flux create`'s arguments;
/// `localAuthRef` is shared with the other kinds.
pub const AUTH_FIELDS: &[&str] = &[
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

/// A git source's keys as written (`ref` and `gitImplementation` are listed with the common
/// keys, as every kind's `source` mapping shows them, but only git reads them).
#[derive(Debug, Clone, Default)]
pub struct RawGit {
    pub reference: Option<RawGitRef>,
    pub implementation: Option<Text>,
    pub auth: RawGitAuth,
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

/// The credential keys as written (one entry per key of [`AUTH_FIELDS`], same order).
#[derive(Debug, Clone, Default)]
pub struct RawGitAuth {
    pub fields: Vec<(&'static str, Text)>,
}

impl RawGitAuth {
    pub fn get(&self, key: &str) -> Option<&Text> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, t)| t)
    }
}

/// Reads the git keys of a `source` mapping (whatever its kind: the caller rejects them on
/// other kinds).
pub fn decode(fields: &Fields<'_>, problems: &mut Problems) -> RawGit {
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
    RawGit {
        reference,
        implementation: fields.text("gitImplementation", problems),
        auth: RawGitAuth {
            fields: AUTH_FIELDS
                .iter()
                .filter_map(|key| Some((*key, fields.text(key, problems)?)))
                .collect(),
        },
    }
}

/// Where a git source may find its credentials besides its own keys: the shared
/// `localAuthRef`, as written, and its Secret form once checked.
pub struct LocalAuth<'a> {
    pub directory: Option<&'a Text>,
    pub secret: Option<&'a Text>,
    pub secret_ref: Option<SecretRef>,
}

/// The settings of a `git` source whose URL (already checked by [`url`]; `None` when it was
/// invalid) is `url`. `None` when something is invalid (reported in `problems`).
pub fn validate(
    raw: &RawGit,
    url: Option<&str>,
    local_auth: LocalAuth<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<GitSettings> {
    let (reference, implementation) = reference_and_implementation(raw, problems);
    let mut auth = credentials::validate(
        &raw.auth,
        local_auth.directory,
        local_auth.secret,
        url,
        base_dir,
        problems,
    );
    auth.local_auth_secret = local_auth.secret_ref;
    Some(GitSettings {
        reference: reference?,
        implementation,
        auth,
    })
}

/// For a source of another kind: the credential keys are reported as out of place; `ref` and
/// `gitImplementation` are still checked (a bucket source reports them itself too).
pub fn reject(raw: &RawGit, problems: &mut Problems) {
    reference_and_implementation(raw, problems);
    for (key, text) in &raw.auth.fields {
        problems.push(
            text.pos,
            format!("`{key}` applies only to sources of kind `git`"),
        );
    }
}

fn reference_and_implementation(
    raw: &RawGit,
    problems: &mut Problems,
) -> (Option<GitReference>, GitImplementation) {
    let reference = match &raw.reference {
        Some(reference) => git_reference(reference, problems),
        None => Some(GitReference::RemoteHead),
    };
    let implementation = match &raw.implementation {
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
    (reference, implementation)
}

/// Checks every ref field that is set, then applies Flux's precedence:
/// commit > name > tag > semver > branch.
fn git_reference(raw: &RawGitRef, problems: &mut Problems) -> Option<GitReference> {
    let mut valid = true;
    let mut check =
        |text: &Option<Text>, key: &str, check: &dyn Fn(&str) -> Result<(), RefProblem>| {
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
    let branch = check(&raw.branch, "branch", &check_ref_component);
    let tag = check(&raw.tag, "tag", &check_ref_component);
    let semver = check(&raw.semver, "semver range", &|range| {
        Range::parse(range)
            .map(drop)
            .map_err(|err| RefProblem::Semver(err.reason))
    });
    let name = check(&raw.name, "ref name", &check_full_ref_name);
    let commit = check(&raw.commit, "commit", &check_commit);
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

/// Why a ref field's value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefProblem {
    #[error(
        "not a valid git ref name (no spaces, `..`, `~^:?*[\\`, and not ending in `/`, `.` or \
         `.lock`)"
    )]
    InvalidName,
    #[error("expected a full ref name starting with refs/, such as refs/pull/1/head")]
    NotFullName,
    #[error("expected a full 40-character hexadecimal SHA-1")]
    NotCommit,
    /// The semver parser's own reason.
    #[error("{0}")]
    Semver(String),
}

/// A branch or tag as git's check-ref-format accepts it (without the `refs/heads/` part).
fn check_ref_component(name: &str) -> Result<(), RefProblem> {
    // Two-character sequences git refuses anywhere in a name.
    let refused_pair = |pair: &[u8]| matches!(pair, b".." | b"//" | b"@{" | b"/.");
    let bad = name.is_empty()
        || name.starts_with(['-', '/', '.'])
        || name.ends_with(['/', '.'])
        || name.ends_with(".lock")
        || name.as_bytes().windows(2).any(refused_pair)
        || name == "@"
        || name.chars().any(|c| {
            c.is_control()
                || c.is_whitespace()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        });
    if bad {
        Err(RefProblem::InvalidName)
    } else {
        Ok(())
    }
}

fn check_full_ref_name(name: &str) -> Result<(), RefProblem> {
    match name.strip_prefix("refs/") {
        Some(rest) if check_ref_component(rest).is_ok() => Ok(()),
        _ => Err(RefProblem::NotFullName),
    }
}

fn check_commit(sha: &str) -> Result<(), RefProblem> {
    if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(RefProblem::NotCommit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
