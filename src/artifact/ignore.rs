//! Which paths of a snapshot go into its artifact: Flux's `.sourceignore` semantics.
//!
//! Rules come in layers, consulted from the highest priority down; the first layer with a
//! matching pattern decides (inside one layer, as in git, the last matching line wins):
//!
//! 1. the always-excluded list (git: `.git/ .gitignore .gitmodules .gitattributes` at any
//!    depth; buckets: the root `.sourceignore` key, and `.git` at any depth, as for git: a
//!    published `.git/config` or `.git/hooks/` would be a repository's own settings, and
//!    could make git run a hook in whatever directory the artifact is extracted into).
//!    Nothing can re-include these.
//! 2. the source's `ignore` field, anchored at the root;
//! 3. each `.sourceignore` file, anchored at its own directory and applying to paths strictly
//!    below it, the deepest first;
//! 4. Flux's default exclusions (git only), but only when layers 2 and 3 hold no pattern at all.
//!
//! A directory that is excluded excludes everything below it, whatever a negation says about
//! the children: git's rule. [`IgnoreRules::is_excluded`] checks every ancestor of a path.
//!
//! Where this differs from source-controller (fluxcd/pkg `sourceignore` and the go-git
//! matcher behind it), it differs on purpose:
//! - Flux puts the always-excluded patterns at the lowest priority, so `!.gitignore` in a
//!   `.sourceignore` would re-include it; here they cannot be re-included. A `.git` *file*
//!   (a submodule's gitlink) is excluded as well, not only a `.git/` directory.
//! - Flux's matcher tests each path on its own, so `!keep.yaml` re-includes `dir/keep.yaml`
//!   even under an excluded `dir/`; here the excluded directory wins, as in git.
//! - A `.sourceignore` that is a symlink is not followed (Flux opens it; it could point
//!   anywhere on the host). It is skipped with a warning.
//!
//! Kept as in Flux: `.sourceignore` files themselves are packed unless a pattern excludes
//! them; they are collected from every directory except `.git`, including directories that
//! end up excluded; the default list is dropped as soon as one *pattern* exists (a
//! `.sourceignore` holding only comments or blank lines keeps the defaults); a pattern that
//! does not parse matches nothing (it is logged, not fatal).
//!
//! The rules live beside the packer, which applies them, but sources use them too: an object
//! store source filters keys while listing, because the excluded keys are not part of its
//! revision. [`source_ignores`] reads the `.sourceignore` files of any [`Tree`].

use super::error::PackError;
use super::tree::{Content, EntryKind, Tree};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The name of the per-directory ignore file.
pub const SOURCE_IGNORE_FILE: &str = ".sourceignore";

/// Excluded from every git artifact, at any depth (fluxcd/pkg `sourceignore.ExcludeVCS`).
pub const ALWAYS_EXCLUDED_GIT: &[&str] = &[".git/", ".gitignore", ".gitmodules", ".gitattributes"];

/// Excluded from every bucket and azblob artifact: the root `.sourceignore` key, and `.git/`
/// at any depth (plus a `.git` file, through `compile_static`'s `files_too`).
pub const ALWAYS_EXCLUDED_BUCKET: &[&str] = &["/.sourceignore", ".git/"];

/// Flux's default exclusions for git sources (fluxcd/pkg `sourceignore.ExcludeExt`,
/// `ExcludeCI`, `ExcludeExtra`), applied only when no ignore pattern is configured anywhere.
pub const DEFAULT_EXCLUDED_GIT: &[&str] = &[
    "*.jpg",
    "*.jpeg",
    "*.gif",
    "*.png",
    "*.wmv",
    "*.flv",
    "*.tar.gz",
    "*.zip",
    ".github/",
    ".circleci/",
    ".travis.yml",
    ".gitlab-ci.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
    "**/.goreleaser.yml",
    "**/.sops.yaml",
    "**/.flux.yaml",
];

#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    #[error("cannot read {path} while loading .sourceignore rules: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot compile the ignore patterns of {origin}: {message}")]
    Compile { origin: String, message: String },
}

/// Exclusion rules for one snapshot. Cheap to query, safe to share between threads.
#[derive(Debug, Clone)]
pub struct IgnoreRules {
    always: Gitignore,
    field: Option<Gitignore>,
    /// `.sourceignore` layers keyed by their directory relative to the root (`""` = root).
    layers: HashMap<PathBuf, Gitignore>,
    defaults: Option<Gitignore>,
}

impl IgnoreRules {
    /// Rules for a git snapshot rooted at `root`; `ignore` is the source's `ignore` field.
    pub fn for_git(root: &Path, ignore: Option<&str>) -> Result<IgnoreRules, IgnoreError> {
        let mut found = Vec::new();
        collect_source_ignores(root, PathBuf::new(), &mut found)?;
        IgnoreRules::for_git_layers(found, ignore)
    }

    /// Rules for a git snapshot whose `.sourceignore` files were read already: `found` holds
    /// each one's directory (relative to the root) and content.
    pub fn for_git_layers(
        found: Vec<(PathBuf, String)>,
        ignore: Option<&str>,
    ) -> Result<IgnoreRules, IgnoreError> {
        let always = compile_static("the always-excluded list", ALWAYS_EXCLUDED_GIT, &[".git"])?;
        let mut pattern_count = 0;
        let mut layers = HashMap::with_capacity(found.len());
        for (dir, content) in found {
            pattern_count += count_patterns(&content);
            let origin = dir.join(SOURCE_IGNORE_FILE).display().to_string();
            let matcher = compile(&origin, &content)?;
            if !matcher.is_empty() {
                layers.insert(dir, matcher);
            }
        }

        let field = match ignore {
            Some(text) => {
                pattern_count += count_patterns(text);
                Some(compile("the ignore field", text)?).filter(|m| !m.is_empty())
            }
            None => None,
        };

        let defaults = if pattern_count == 0 {
            Some(compile_static(
                "the default exclusions",
                DEFAULT_EXCLUDED_GIT,
                &[],
            )?)
        } else {
            None
        };

        Ok(IgnoreRules {
            always,
            field,
            layers,
            defaults,
        })
    }

    /// Rules for bucket keys: the root `.sourceignore` object's content and the `ignore` field.
    /// As in Flux there are no default exclusions for buckets; the root `.sourceignore` key
    /// itself and `.git` (a directory or a file, at any depth) are always excluded.
    pub fn for_bucket(
        sourceignore: Option<&str>,
        ignore: Option<&str>,
    ) -> Result<IgnoreRules, IgnoreError> {
        let always = compile_static(
            "the always-excluded list",
            ALWAYS_EXCLUDED_BUCKET,
            &[".git"],
        )?;
        let mut layers = HashMap::new();
        if let Some(text) = sourceignore {
            let matcher = compile(SOURCE_IGNORE_FILE, text)?;
            if !matcher.is_empty() {
                layers.insert(PathBuf::new(), matcher);
            }
        }
        let field = match ignore {
            Some(text) => Some(compile("the ignore field", text)?).filter(|m| !m.is_empty()),
            None => None,
        };
        Ok(IgnoreRules {
            always,
            field,
            layers,
            defaults: None,
        })
    }

    /// Whether `rel` (relative to the root, `/`-separated) is left out, either itself or
    /// because one of its ancestor directories is. The root itself is never excluded.
    pub fn is_excluded(&self, rel: &Path, is_dir: bool) -> bool {
        let components: Vec<&std::ffi::OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None,
            })
            .collect();
        let mut prefix = PathBuf::new();
        for (i, name) in components.iter().enumerate() {
            prefix.push(name);
            let last = i + 1 == components.len();
            if self.excludes_entry(&prefix, if last { is_dir } else { true }) {
                return true;
            }
        }
        false
    }

    /// The decision for `rel` alone, assuming its ancestors are included. A top-down walk
    /// that does not descend into excluded directories needs only this.
    pub(crate) fn excludes_entry(&self, rel: &Path, is_dir: bool) -> bool {
        if self.always.matched(rel, is_dir).is_ignore() {
            return true;
        }
        if let Some(field) = &self.field {
            if let Some(excluded) = decide(field.matched(rel, is_dir)) {
                return excluded;
            }
        }
        if !self.layers.is_empty() {
            // Deepest directory first: `a/b/.sourceignore` overrides `a/.sourceignore`.
            for dir in rel.parent().into_iter().flat_map(Path::ancestors) {
                if let Some(layer) = self.layers.get(dir) {
                    let below = rel.strip_prefix(dir).unwrap_or(rel);
                    if let Some(excluded) = decide(layer.matched(below, is_dir)) {
                        return excluded;
                    }
                }
            }
        }
        if let Some(defaults) = &self.defaults {
            return defaults.matched(rel, is_dir).is_ignore();
        }
        false
    }

    /// Whether Flux's default exclusion list is in force (no pattern configured anywhere).
    pub fn uses_defaults(&self) -> bool {
        self.defaults.is_some()
    }
}

/// Every `.sourceignore` of `tree` that is a regular file, keyed by its directory (relative
/// to the root), with its content: what [`IgnoreRules::for_git_layers`] takes. Reads the
/// directory listings and those few files only, so a git tree is not walked blob by blob.
pub fn source_ignores<T: Tree>(tree: &mut T) -> Result<Vec<(PathBuf, String)>, PackError> {
    let mut found = Vec::new();
    let mut pending = vec![(PathBuf::new(), tree.root())];
    while let Some((rel, dir)) = pending.pop() {
        let mut own = None;
        for entry in tree.entries(&dir, &rel)? {
            match entry.kind {
                EntryKind::Dir(sub) => pending.push((rel.join(&entry.name), sub)),
                EntryKind::File(file) if entry.name == SOURCE_IGNORE_FILE => own = Some(file),
                EntryKind::File(_) => {}
            }
        }
        if let Some(file) = own {
            let path = rel.join(SOURCE_IGNORE_FILE);
            let text = match tree.content(&file, &path)? {
                Content::Bytes { data, .. } => String::from_utf8_lossy(data).into_owned(),
                Content::Stream { mut reader, .. } => {
                    let mut data = Vec::new();
                    io::Read::read_to_end(&mut reader, &mut data)
                        .map_err(|source| PackError::Read { path, source })?;
                    String::from_utf8_lossy(&data).into_owned()
                }
            };
            found.push((rel, text));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

fn decide<T>(m: Match<T>) -> Option<bool> {
    match m {
        Match::None => None,
        Match::Ignore(_) => Some(true),
        Match::Whitelist(_) => Some(false),
    }
}

/// Flux counts a line as a pattern when it is not blank and does not start with `#`.
fn count_patterns(text: &str) -> usize {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .count()
}

fn compile(origin: &str, text: &str) -> Result<Gitignore, IgnoreError> {
    // Root "." makes the matcher take our relative paths as they are.
    let mut builder = GitignoreBuilder::new(".");
    for (number, line) in text.lines().enumerate() {
        if let Err(err) = builder.add_line(None, line) {
            tracing::warn!(
                origin,
                line = number + 1,
                pattern = line,
                error = %err,
                "ignore pattern does not parse; it matches nothing"
            );
        }
    }
    builder.build().map_err(|err| IgnoreError::Compile {
        origin: origin.to_string(),
        message: err.to_string(),
    })
}

/// Compile a built-in list, plus `files_too`: names excluded whether file or directory.
fn compile_static(
    origin: &str,
    patterns: &[&str],
    files_too: &[&str],
) -> Result<Gitignore, IgnoreError> {
    let mut text = patterns.join("\n");
    for name in files_too {
        text.push('\n');
        text.push_str(name);
    }
    compile(origin, &text)
}

/// Read every `.sourceignore` below `root`, parents before children, skipping `.git`
/// directories and never following symlinks.
fn collect_source_ignores(
    root: &Path,
    rel: PathBuf,
    found: &mut Vec<(PathBuf, String)>,
) -> Result<(), IgnoreError> {
    let dir = root.join(&rel);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IgnoreError::Io { path, source }
    };
    let mut subdirs = Vec::new();
    let mut own = None;
    for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
        let entry = entry.map_err(io_err(&dir))?;
        let file_type = entry.file_type().map_err(io_err(&entry.path()))?;
        let name = entry.file_name();
        if file_type.is_dir() {
            if name != ".git" {
                subdirs.push(name);
            }
        } else if name == SOURCE_IGNORE_FILE {
            if file_type.is_file() {
                let path = entry.path();
                let bytes = fs::read(&path).map_err(io_err(&path))?;
                own = Some(String::from_utf8_lossy(&bytes).into_owned());
            } else {
                tracing::warn!(
                    path = %entry.path().display(),
                    "a .sourceignore that is not a regular file is not read"
                );
            }
        }
    }
    if let Some(content) = own {
        found.push((rel.clone(), content));
    }
    subdirs.sort();
    for name in subdirs {
        collect_source_ignores(root, rel.join(name), found)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn excluded(rules: &IgnoreRules, rel: &str) -> bool {
        let is_dir = rel.ends_with('/');
        rules.is_excluded(Path::new(rel.trim_end_matches('/')), is_dir)
    }

    #[test]
    fn defaults_apply_without_any_pattern() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "deploy.yaml", "");
        let rules = IgnoreRules::for_git(dir.path(), None).unwrap();
        assert!(rules.uses_defaults());
        for path in [
            "logo.png",
            "docs/a.jpg",
            "release.tar.gz",
            ".github/",
            ".github/workflows/ci.yaml",
            "sub/.circleci/config.yml",
            ".travis.yml",
            "codeship-steps.yml",
            "apps/.sops.yaml",
            "a/b/.goreleaser.yml",
            ".git/",
            ".git/HEAD",
            ".gitignore",
            "sub/.gitmodules",
        ] {
            assert!(excluded(&rules, path), "{path} should be excluded");
        }
        for path in [
            "deploy.yaml",
            "apps/",
            "apps/x.yml",
            ".sourceignore",
            "github/",
        ] {
            assert!(!excluded(&rules, path), "{path} should be kept");
        }
    }

    #[test]
    fn any_pattern_drops_defaults_but_not_the_always_list() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), ".sourceignore", "# only a comment\n\n");
        let rules = IgnoreRules::for_git(dir.path(), None).unwrap();
        assert!(rules.uses_defaults(), "comments alone keep the defaults");

        let rules = IgnoreRules::for_git(dir.path(), Some("*.txt")).unwrap();
        assert!(!rules.uses_defaults());
        assert!(!excluded(&rules, "logo.png"));
        assert!(!excluded(&rules, ".github/workflows/ci.yaml"));
        assert!(excluded(&rules, "notes.txt"));
        assert!(excluded(&rules, ".git/"));
        assert!(excluded(&rules, ".gitattributes"));

        touch(dir.path(), "deep/er/.sourceignore", "*.bak\n");
        let rules = IgnoreRules::for_git(dir.path(), None).unwrap();
        assert!(
            !rules.uses_defaults(),
            "a nested .sourceignore drops the defaults"
        );
        assert!(!excluded(&rules, "logo.png"));
        assert!(excluded(&rules, "sub/.gitignore"));
    }

    #[test]
    fn always_list_cannot_be_negated() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), ".sourceignore", "!.gitignore\n!.git/\n");
        let rules = IgnoreRules::for_git(dir.path(), Some("!.gitmodules")).unwrap();
        assert!(excluded(&rules, ".gitignore"));
        assert!(excluded(&rules, ".git/"));
        assert!(excluded(&rules, ".git"), "a submodule's .git file");
        assert!(excluded(&rules, ".gitmodules"));
    }

    #[test]
    fn nested_sourceignore_is_scoped_to_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), "apps/.sourceignore", "*.secret\n/local.yaml\n");
        let rules = IgnoreRules::for_git(dir.path(), None).unwrap();
        assert!(excluded(&rules, "apps/db.secret"));
        assert!(excluded(&rules, "apps/team/db.secret"));
        assert!(excluded(&rules, "apps/local.yaml"));
        assert!(
            !excluded(&rules, "apps/team/local.yaml"),
            "anchored at apps/"
        );
        assert!(!excluded(&rules, "db.secret"), "outside apps/");
        assert!(!excluded(&rules, "infra/db.secret"));
        assert!(!excluded(&rules, "apps/"));
        assert!(
            !excluded(&rules, "apps/.sourceignore"),
            "packed, as in Flux"
        );
    }

    #[test]
    fn deeper_files_override_shallower_and_the_field_overrides_all() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), ".sourceignore", "*.yaml\n");
        touch(dir.path(), "keep/.sourceignore", "!*.yaml\n");
        let rules = IgnoreRules::for_git(dir.path(), None).unwrap();
        assert!(excluded(&rules, "a.yaml"));
        assert!(!excluded(&rules, "keep/a.yaml"));

        let rules = IgnoreRules::for_git(dir.path(), Some("keep/b.yaml")).unwrap();
        assert!(excluded(&rules, "keep/b.yaml"));
        assert!(!excluded(&rules, "keep/a.yaml"));
    }

    #[test]
    fn negation_works_as_in_git() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), ".sourceignore", "*.yaml\n!keep.yaml\n");
        let rules = IgnoreRules::for_git(dir.path(), None).unwrap();
        assert!(excluded(&rules, "drop.yaml"));
        assert!(!excluded(&rules, "keep.yaml"));
        assert!(!excluded(&rules, "sub/keep.yaml"));
        assert!(excluded(&rules, "sub/drop.yaml"));
    }

    #[test]
    fn excluded_directory_excludes_everything_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let rules =
            IgnoreRules::for_git(dir.path(), Some("/secrets/\nbuild/\n!keep.yaml\n")).unwrap();
        assert!(excluded(&rules, "secrets/"));
        assert!(
            excluded(&rules, "secrets/keep.yaml"),
            "git: no re-include below"
        );
        assert!(excluded(&rules, "secrets/a/b/c.yaml"));
        assert!(
            !excluded(&rules, "apps/secrets/x.yaml"),
            "anchored at the root"
        );
        assert!(
            !excluded(&rules, "secrets"),
            "dir-only pattern, a file of that name"
        );
        assert!(excluded(&rules, "x/build/out.bin"));
        assert!(!excluded(&rules, "keep.yaml"));
        assert!(!excluded(&rules, "a/b/keep.yaml"));
    }

    #[test]
    fn git_directories_are_not_scanned_and_symlinks_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), ".git/.sourceignore", "*.yaml\n");
        touch(dir.path(), "outside.txt", "*.yaml\n");
        std::os::unix::fs::symlink(
            dir.path().join("outside.txt"),
            dir.path().join(".sourceignore"),
        )
        .unwrap();
        let rules = IgnoreRules::for_git(dir.path(), None).unwrap();
        assert!(rules.uses_defaults());
        assert!(!excluded(&rules, "a.yaml"));
    }

    #[test]
    fn bucket_rules_have_no_defaults() {
        let rules = IgnoreRules::for_bucket(Some("*.bak\ntmp/\n"), Some("!important.bak")).unwrap();
        assert!(excluded(&rules, ".sourceignore"));
        assert!(!excluded(&rules, "sub/.sourceignore"));
        assert!(!excluded(&rules, "logo.png"));
        assert!(!excluded(&rules, ".gitignore"), "only git sources drop it");
        assert!(excluded(&rules, "a.bak"));
        assert!(!excluded(&rules, "important.bak"), "the field wins");
        assert!(excluded(&rules, "tmp/x/y.yaml"));
        let none = IgnoreRules::for_bucket(None, None).unwrap();
        assert!(!excluded(&none, "x.png"));
    }

    #[test]
    fn bucket_rules_always_drop_git_directories() {
        let rules = IgnoreRules::for_bucket(Some("!.git/\n!.git/config\n"), Some("!.git")).unwrap();
        for path in [
            ".git/",
            ".git/config",
            "apps/.git/hooks/post-checkout",
            "sub/.git",
        ] {
            assert!(excluded(&rules, path), "{path}");
        }
        assert!(!excluded(&rules, ".github/workflows/ci.yaml"));
        assert!(!excluded(&rules, "x.git"));
    }

    #[test]
    fn rules_are_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<IgnoreRules>();
    }
}
