//! Ref resolution shared by the git backends: from the remote's ref advertisement and the
//! configured [`GitReference`] to the commit to fetch and its Flux revision string.
//!
//! Kept free of any git library so that both backends give the same answer, and the same
//! error wording, for the same advertisement.

use super::semver::{highest_matching, Range};
use crate::config::GitReference;
use crate::source::Revision;

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

/// Decide what to fetch. `refs` is the advertisement filtered by [`listing_prefixes`]
/// (it may hold more; only exact names are used). Errors are one sentence naming `url`.
pub fn resolve(reference: &GitReference, url: &str, refs: &[RemoteRef]) -> Result<Wanted, String> {
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
                .ok_or_else(|| format!("{url} has no HEAD: the repository is empty or its default branch is unborn; set a branch, tag or commit"))?;
            let target = head.symref_target.as_deref().ok_or_else(|| {
                format!(
                    "{url} does not say which branch its HEAD points at; set a branch explicitly"
                )
            })?;
            let branch = target.strip_prefix("refs/heads/").unwrap_or(target);
            Ok(single(target.to_string(), branch, &head.commit))
        }
        GitReference::Branch(b) => {
            let full = format!("refs/heads/{b}");
            let r = find(&full).ok_or_else(|| format!("branch '{b}' not found in {url}"))?;
            Ok(single(full, b, &r.commit))
        }
        GitReference::Tag(t) => {
            let full = format!("refs/tags/{t}");
            let r = find(&full).ok_or_else(|| format!("tag '{t}' not found in {url}"))?;
            Ok(single(full, t, &r.commit))
        }
        GitReference::Name(n) => {
            let r = find(n).ok_or_else(|| format!("ref '{n}' not found in {url}"))?;
            Ok(single(n.clone(), n, &r.commit))
        }
        GitReference::Semver(range_text) => {
            let range = Range::parse(range_text).map_err(|e| e.to_string())?;
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
            let (tag, commit) = tie
                .first()
                .cloned()
                .ok_or_else(|| format!("no tag in {url} matches semver range '{range_text}'"))?;
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
            find(&full).ok_or_else(|| format!("branch '{b}' not found in {url}"))?;
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

/// `user:password@` removed from a URL, so that it can appear in logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme_end + 3], user, &rest[at + 1..])
        }
        None => url.to_string(),
    }
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
        assert_eq!(e, "branch 'dev' not found in git://h/r.git");
        let e = resolve(
            &GitReference::Semver(">=9.0.0".into()),
            "u",
            &[r("refs/tags/v1.0.0", "c")],
        )
        .unwrap_err();
        assert_eq!(e, "no tag in u matches semver range '>=9.0.0'");
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
    fn redaction_drops_passwords() {
        assert_eq!(redact_url("https://u:secret@h/x"), "https://u@h/x");
        assert_eq!(redact_url("https://h/x@y"), "https://h/x@y");
        assert_eq!(redact_url("git@h:x"), "git@h:x");
    }
}
