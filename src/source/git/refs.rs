//! Ref resolution shared by the git backends: from the remote's ref advertisement and the
//! configured [`GitReference`] to the commit to fetch and its Flux revision string.
//!
//! Kept free of any git library so that both backends give the same answer, and the same
//! error wording, for the same advertisement.

use super::config::GitReference;
use super::semver::{highest_matching, Range};
use crate::vocab::Revision;

/// One advertised ref, with annotated tags already peeled to the commit they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRef {
    /// Full name, `HEAD` or `refs/...`.
    pub name: String,
    /// The commit it points at (hex).
    pub commit: String,
    /// For a symbolic ref such as `HEAD`, the ref it points at.
    pub symref_target: Option<String>,
}

/// What the backend must fetch for a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Full remote ref names to fetch (several only for a semver tie, see [`pick_newest`]).
    pub refs: Vec<String>,
    /// The commit expected at the end (for a semver tie: the first candidate's).
    pub commit: String,
    /// The revision string for `commit`.
    pub revision: Revision,
    /// Fetch only the tip commit (everything but commit+branch).
    pub shallow: bool,
    /// Semver ties: `(tag, commit)` pairs of equal precedence; the newest commit wins.
    pub tie: Vec<(String, String)>,
}

impl Wanted {
    /// Fetch refspecs, landing under `refs/gitopsd/` so that the cache never mixes with
    /// anything a user might have configured. A bare commit is asked for by id, which
    /// protocol v2 servers (and v1 servers allowing reachable SHA-1s) hand out.
    pub fn refspecs(&self) -> Vec<String> {
        if self.refs.is_empty() {
            vec![format!("{}:refs/gitopsd/commit", self.commit)]
        } else {
            self.refs
                .iter()
                .enumerate()
                .map(|(i, r)| format!("+{r}:refs/gitopsd/want/{i}"))
                .collect()
        }
    }
}

/// The ref prefixes to ask the remote for (ls-refs `ref-prefix`), or `None` when the
/// reference needs no listing at all (a bare commit).
pub fn listing_prefixes(reference: &GitReference) -> Option<Vec<String>> {
    Some(match reference {
        GitReference::RemoteHead => vec!["HEAD".into()],
        GitReference::Branch(b) => vec![format!("refs/heads/{b}")],
        GitReference::Tag(t) => vec![format!("refs/tags/{t}")],
        GitReference::Semver(_) => vec!["refs/tags/".into()],
        GitReference::Name(n) => vec![n.clone()],
        GitReference::Commit { branch: None, .. } => return None,
        GitReference::Commit {
            branch: Some(b), ..
        } => vec![format!("refs/heads/{b}")],
    })
}

/// A short human description of the reference, for error messages.
pub fn describe(reference: &GitReference) -> String {
    match reference {
        GitReference::RemoteHead => "the default branch (HEAD)".into(),
        GitReference::Branch(b) => format!("branch '{b}'"),
        GitReference::Tag(t) => format!("tag '{t}'"),
        GitReference::Semver(r) => format!("semver range '{r}'"),
        GitReference::Name(n) => format!("ref '{n}'"),
        GitReference::Commit { sha, branch: None } => format!("commit {sha}"),
        GitReference::Commit {
            sha,
            branch: Some(b),
        } => format!("commit {sha} on branch '{b}'"),
    }
}

/// Why no commit could be chosen for a reference. Each names the URL (redacted by the
/// caller) and says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("{url} has no HEAD: the repository is empty or its default branch is unborn; set a branch, tag or commit")]
    NoHead { url: String },
    #[error("{url} does not say which branch its HEAD points at; set a branch explicitly")]
    HeadNotSymbolic { url: String },
    #[error("branch '{name}' not found in {url}")]
    Branch { name: String, url: String },
    #[error("tag '{name}' not found in {url}")]
    Tag { name: String, url: String },
    #[error("ref '{name}' not found in {url}")]
    Ref { name: String, url: String },
    #[error("no tag in {url} matches semver range '{range}'")]
    NoMatchingTag { range: String, url: String },
    #[error(transparent)]
    Range(#[from] super::semver::RangeError),
}

impl ResolveError {
    pub fn kind(&self) -> super::error::Kind {
        match self {
            // Settings that cannot work whatever the remote holds.
            ResolveError::Range(_) => super::error::Kind::Config,
            _ => super::error::Kind::RefNotFound,
        }
    }
}

/// Decide what to fetch. `refs` is the advertisement filtered by [`listing_prefixes`]
/// (it may hold more; only exact names are used). Errors are one sentence naming `url`.
pub fn resolve(
    reference: &GitReference,
    url: &str,
    refs: &[RemoteRef],
) -> Result<Wanted, ResolveError> {
    let at = || url.to_string();
    let find = |name: &str| refs.iter().find(|r| r.name == name);
    let single = |full: String, rev_name: &str, commit: &str| Wanted {
        refs: vec![full],
        commit: commit.to_string(),
        revision: Revision::git(Some(rev_name), commit),
        shallow: true,
        tie: Vec::new(),
    };
    match reference {
        GitReference::RemoteHead => {
            let head = find("HEAD")
                .filter(|h| !h.commit.is_empty())
                .ok_or_else(|| ResolveError::NoHead { url: at() })?;
            let target = head
                .symref_target
                .as_deref()
                .ok_or_else(|| ResolveError::HeadNotSymbolic { url: at() })?;
            let branch = target.strip_prefix("refs/heads/").unwrap_or(target);
            Ok(single(target.to_string(), branch, &head.commit))
        }
        GitReference::Branch(b) => {
            let full = format!("refs/heads/{b}");
            let r = find(&full).ok_or_else(|| ResolveError::Branch {
                name: b.clone(),
                url: at(),
            })?;
            Ok(single(full, b, &r.commit))
        }
        GitReference::Tag(t) => {
            let full = format!("refs/tags/{t}");
            let r = find(&full).ok_or_else(|| ResolveError::Tag {
                name: t.clone(),
                url: at(),
            })?;
            Ok(single(full, t, &r.commit))
        }
        GitReference::Name(n) => {
            let r = find(n).ok_or_else(|| ResolveError::Ref {
                name: n.clone(),
                url: at(),
            })?;
            Ok(single(n.clone(), n, &r.commit))
        }
        GitReference::Semver(range_text) => {
            let range = Range::parse(range_text)?;
            let tags: Vec<(&str, &RemoteRef)> = refs
                .iter()
                .filter_map(|r| Some((r.name.strip_prefix("refs/tags/")?, r)))
                .collect();
            let best = highest_matching(&range, tags.iter().map(|(t, _)| *t));
            let mut tie: Vec<(String, String)> = best
                .iter()
                .filter_map(|b| tags.iter().find(|(t, _)| t == b))
                .map(|(t, r)| (t.to_string(), r.commit.clone()))
                .collect();
            let (tag, commit) =
                tie.first()
                    .cloned()
                    .ok_or_else(|| ResolveError::NoMatchingTag {
                        range: range_text.clone(),
                        url: at(),
                    })?;
            let mut wanted = single(format!("refs/tags/{tag}"), &tag, &commit);
            if tie.len() > 1 {
                wanted.refs = tie.iter().map(|(t, _)| format!("refs/tags/{t}")).collect();
            } else {
                tie.clear();
            }
            wanted.tie = tie;
            Ok(wanted)
        }
        GitReference::Commit { sha, branch: None } => Ok(Wanted {
            refs: Vec::new(),
            commit: sha.clone(),
            revision: Revision::git(None, sha),
            shallow: true,
            tie: Vec::new(),
        }),
        GitReference::Commit {
            sha,
            branch: Some(b),
        } => {
            let full = format!("refs/heads/{b}");
            find(&full).ok_or_else(|| ResolveError::Branch {
                name: b.clone(),
                url: at(),
            })?;
            Ok(Wanted {
                refs: vec![full],
                commit: sha.clone(),
                revision: Revision::git(Some(b), sha),
                shallow: false,
                tie: Vec::new(),
            })
        }
    }
}

/// Break a semver tie: the candidate whose commit is newest wins; on equal times, the
/// first in advertisement order (stable).
pub fn pick_newest(wanted: &mut Wanted, commit_time: impl Fn(&str) -> Option<i64>) {
    if wanted.tie.len() < 2 {
        return;
    }
    let mut best: Option<(&(String, String), i64)> = None;
    for cand in &wanted.tie {
        let t = commit_time(&cand.1).unwrap_or(i64::MIN);
        if best.is_none_or(|(_, bt)| t > bt) {
            best = Some((cand, t));
        }
    }
    if let Some(((tag, commit), _)) = best {
        wanted.commit = commit.clone();
        wanted.revision = Revision::git(Some(tag), commit);
    }
}

/// What replaces credentials in a URL or a message.
pub const REDACTED: &str = "<redacted>";

/// A URL as it may be shown: in logs, errors, the status, state.json, files.
///
/// For `ssh://` URLs the user is a login name (`git@`), not a secret, and stays; a password
/// goes. For every other scheme the whole userinfo goes, user included: a token given as the
/// user (`https://TOKEN@host/org/repo`, GitHub's personal-access-token form) is as secret as a
/// password. scp-like `git@host:path` has no credentials to hide.
pub fn redact_url(url: &str) -> String {
    match split_userinfo(url) {
        Some((head, userinfo, tail)) if is_ssh_scheme(head) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{head}{user}@{tail}")
        }
        Some((head, _, tail)) => format!("{head}{REDACTED}@{tail}"),
        None => url.to_string(),
    }
}

/// `text` (an error or a transport's message about `url`) with the URL's credentials replaced
/// by [`REDACTED`]: the URL itself wherever it appears, and its secret parts on their own,
/// since transports quote them in other forms (percent-decoded, `user@host`, a basic-auth
/// pair). A secret shorter than [`MIN_BARE_SECRET`] is replaced only where it stands before
/// an `@`, so that a short user name does not mangle every word containing it.
pub fn redact_text(text: &str, url: &str) -> String {
    let Some((head, userinfo, _)) = split_userinfo(url) else {
        return text.to_string();
    };
    let mut out = text.replace(url, &redact_url(url));
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let mut secrets: Vec<&str> = Vec::new();
    if !is_ssh_scheme(head) {
        secrets.push(userinfo);
        // A user is secret when it is all there is (a token), or outside ssh anyway.
        secrets.push(user);
    }
    secrets.extend(password);
    let mut forms: Vec<String> = Vec::new();
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        forms.push(secret.to_string());
        let decoded = percent_decode(secret);
        if decoded != secret {
            forms.push(decoded);
        }
    }
    // Longest first, so that `user:password` goes whole before `user` alone.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    for form in forms {
        out = out.replace(&format!("{form}@"), &format!("{REDACTED}@"));
        if form.len() >= MIN_BARE_SECRET {
            out = out.replace(&form, REDACTED);
        }
    }
    out
}

/// See [`redact_text`].
pub const MIN_BARE_SECRET: usize = 4;

/// `(scheme://, userinfo, rest after @)` when `url` has a scheme and userinfo.
fn split_userinfo(url: &str) -> Option<(&str, &str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some((&url[..scheme_end], &rest[..at], &rest[at + 1..]))
}

fn is_ssh_scheme(head: &str) -> bool {
    let scheme = head.trim_end_matches("://").to_ascii_lowercase();
    matches!(scheme.as_str(), "ssh" | "git+ssh" | "ssh+git")
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, commit: &str) -> RemoteRef {
        RemoteRef {
            name: name.into(),
            commit: commit.into(),
            symref_target: None,
        }
    }

    #[test]
    fn remote_head_follows_the_symref() {
        let refs = vec![RemoteRef {
            name: "HEAD".into(),
            commit: "a".repeat(40),
            symref_target: Some("refs/heads/trunk".into()),
        }];
        let w = resolve(&GitReference::RemoteHead, "u", &refs).unwrap();
        assert_eq!(
            w.revision.as_str(),
            format!("trunk@sha1:{}", "a".repeat(40))
        );
        assert_eq!(w.refs, vec!["refs/heads/trunk"]);
    }

    #[test]
    fn missing_refs_name_url_and_ref() {
        let e = resolve(&GitReference::Branch("dev".into()), "git://h/r.git", &[]).unwrap_err();
        assert_eq!(e.to_string(), "branch 'dev' not found in git://h/r.git");
        let e = resolve(
            &GitReference::Semver(">=9.0.0".into()),
            "u",
            &[r("refs/tags/v1.0.0", "c")],
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "no tag in u matches semver range '>=9.0.0'");
    }

    #[test]
    fn tag_revision_keeps_the_tag_as_written() {
        let refs = vec![r("refs/tags/v1.2.3", "c1"), r("refs/tags/1.3.0", "c2")];
        let w = resolve(&GitReference::Semver("^1.0".into()), "u", &refs).unwrap();
        assert_eq!(w.revision.as_str(), "1.3.0@sha1:c2");
        let w = resolve(&GitReference::Tag("v1.2.3".into()), "u", &refs).unwrap();
        assert_eq!(w.revision.as_str(), "v1.2.3@sha1:c1");
    }

    #[test]
    fn semver_tie_goes_to_the_newest_commit() {
        let refs = vec![
            r("refs/tags/v1.0.0+a", "old"),
            r("refs/tags/v1.0.0+b", "new"),
        ];
        let mut w = resolve(&GitReference::Semver("1.x".into()), "u", &refs).unwrap();
        assert_eq!(w.refs.len(), 2);
        pick_newest(&mut w, |c| Some(if c == "new" { 2 } else { 1 }));
        assert_eq!(w.revision.as_str(), "v1.0.0+b@sha1:new");
    }

    #[test]
    fn commit_alone_needs_no_listing() {
        let sha = "b".repeat(40);
        let reference = GitReference::Commit {
            sha: sha.clone(),
            branch: None,
        };
        assert_eq!(listing_prefixes(&reference), None);
        let w = resolve(&reference, "u", &[]).unwrap();
        assert_eq!(w.revision.as_str(), format!("sha1:{sha}"));
    }

    #[test]
    fn redaction_drops_all_userinfo_except_an_ssh_login() {
        assert_eq!(redact_url("https://u:secret@h/x"), "https://<redacted>@h/x");
        assert_eq!(
            redact_url("https://ghp_TOKEN@github.com/org/repo"),
            "https://<redacted>@github.com/org/repo"
        );
        assert_eq!(redact_url("http://tok@h:8080"), "http://<redacted>@h:8080");
        assert_eq!(redact_url("https://h/x@y"), "https://h/x@y");
        assert_eq!(redact_url("https://h?a=b@c"), "https://h?a=b@c");
        assert_eq!(redact_url("git@h:x"), "git@h:x");
        assert_eq!(redact_url("ssh://git:pw@h:22/x"), "ssh://git@h:22/x");
        assert_eq!(redact_url("ssh://git@h/x"), "ssh://git@h/x");
    }

    #[test]
    fn text_loses_the_url_and_its_secrets_in_any_form() {
        let url = "https://ghp_abc%2Fdef@127.0.0.1:1/org/repo";
        let text =
            format!("cannot fetch {url}: 401 for ghp_abc/def@127.0.0.1 (token ghp_abc%2Fdef)");
        let out = redact_text(&text, url);
        assert!(!out.contains("ghp_abc"), "{out}");
        assert!(
            out.contains("https://<redacted>@127.0.0.1:1/org/repo"),
            "{out}"
        );

        let url = "https://u:pw@h/x";
        let out = redact_text("u:pw@h refused; user u", url);
        assert_eq!(out, "<redacted>@h refused; user u");

        // An ssh login is no secret; its password is.
        let url = "ssh://git:hunter22@h/x";
        let out = redact_text("ssh://git:hunter22@h/x: git said hunter22", url);
        assert_eq!(out, "ssh://git@h/x: git said <redacted>");
        assert_eq!(redact_text("plain", "https://h/x"), "plain");
    }
}
