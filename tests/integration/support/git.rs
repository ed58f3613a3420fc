//! Git repositories built with the git CLI, and the isolated environment every git command
//! of the harness runs in.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use tempfile::TempDir;

/// Seconds since the epoch of a repository's first commit (2023-11-14T22:13:20Z). Every
/// commit or annotated tag advances the clock by a minute, so histories are deterministic
/// (same steps, same shas) and still ordered by date.
const FIRST_COMMIT_TIME: u64 = 1_700_000_000;
const CLOCK_STEP: u64 = 60;

/// Environment variables that would point a git command elsewhere than the harness meant:
/// a caller's proxy (the servers are on loopback), or any `GIT_*` leaking in from the shell
/// or a hook that runs the tests (`GIT_DIR`, `GIT_CONFIG_PARAMETERS`, ...).
pub(crate) fn scrub_environment(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            command.env_remove(key);
        }
    }
    for key in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(key);
    }
    // No system or user configuration: results must not depend on the machine's ~/.gitconfig.
    command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C");
}

/// A `git` command in `dir` with an isolated environment (no system or global config, no
/// inherited `GIT_*` variables, no proxy). Add `.env(...)` after this to trace or configure.
pub fn git_command(dir: impl AsRef<Path>) -> Command {
    let mut command = Command::new("git");
    command.current_dir(dir.as_ref());
    scrub_environment(&mut command);
    command
}

/// Runs git in `dir` and returns its output, whatever the exit status.
pub fn git_output<I, S>(dir: impl AsRef<Path>, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let dir = dir.as_ref();
    let mut command = git_command(dir);
    command.args(args);
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run git in {}: {e}", dir.display()))
}

/// Runs git in `dir` and returns its stdout without the trailing newline; panics with git's
/// stderr when it fails.
pub fn git<I, S>(dir: impl AsRef<Path>, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = git_command(dir.as_ref());
    command.args(args);
    run_checked(command)
}

fn run_checked(mut command: Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string()
}

/// `file://` URL of a (bare) repository path.
pub fn file_url(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    assert!(
        path.is_absolute(),
        "file URL needs an absolute path: {}",
        path.display()
    );
    format!("file://{}", path.display())
}

/// A bare repository: what every server of the harness serves.
#[derive(Debug)]
pub struct BareRepo {
    path: PathBuf,
    name: String,
}

impl BareRepo {
    /// `<dir>/<name>.git`, freshly initialised with `main` as HEAD.
    fn init(dir: &Path, name: &str) -> Self {
        let path = dir.join(format!("{name}.git"));
        let args: [&OsStr; 6] = [
            "init".as_ref(),
            "-q".as_ref(),
            "--bare".as_ref(),
            "-b".as_ref(),
            "main".as_ref(),
            path.as_os_str(),
        ];
        git(dir, args);
        let bare = BareRepo {
            path,
            name: name.to_string(),
        };
        // As on GitHub and GitLab: a client may fetch any reachable commit by sha, and ask
        // for a partial clone.
        bare.git(["config", "uploadpack.allowReachableSHA1InWant", "true"]);
        bare.git(["config", "uploadpack.allowFilter", "true"]);
        bare
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name servers publish it under: `url(name)` gives `.../<name>.git`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn file_url(&self) -> String {
        file_url(&self.path)
    }

    /// Runs git inside the bare repository (e.g. `symbolic-ref HEAD refs/heads/dev`).
    pub fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        git(&self.path, args)
    }

    /// Full sha that `rev` resolves to in the served repository.
    pub fn rev_parse(&self, rev: &str) -> String {
        self.git(["rev-parse", "--verify", "--end-of-options", rev])
    }

    /// Writes `content` as a blob; returns its id.
    pub fn write_blob(&self, content: &[u8]) -> String {
        self.git_with_input(&["hash-object", "-w", "--stdin"], content)
    }

    /// Writes a tree object exactly as given, with `git hash-object --literally`: none of
    /// the checks `git mktree` makes (a `/` in a name, `..`, `.git`), as an attacker would.
    /// Entries are `(mode, name, object id)`: `40000` a directory, `100644` a file.
    pub fn write_tree_literally(&self, entries: &[(&str, &[u8], &str)]) -> String {
        let mut raw = Vec::new();
        for (mode, name, id) in entries {
            raw.extend_from_slice(mode.as_bytes());
            raw.push(b' ');
            raw.extend_from_slice(name);
            raw.push(0);
            let id = (0..id.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&id[i..i + 2], 16).expect("a hex object id"));
            raw.extend(id);
        }
        self.git_with_input(
            &["hash-object", "--literally", "-t", "tree", "-w", "--stdin"],
            &raw,
        )
    }

    /// Commits `tree` on top of `branch` and moves the branch to it; returns the commit.
    pub fn commit_tree(&self, branch: &str, tree: &str) -> String {
        let parent = self.rev_parse(branch);
        let commit = self.git_with_input(
            &["commit-tree", tree, "-p", &parent, "-F", "-"],
            b"written by the harness\n",
        );
        self.git(["update-ref", &format!("refs/heads/{branch}"), &commit]);
        commit
    }

    fn git_with_input(&self, args: &[&str], input: &[u8]) -> String {
        use std::io::Write;
        use std::process::Stdio;
        let mut command = git_command(&self.path);
        command
            .args(args)
            .env("GIT_AUTHOR_NAME", "gitopsd harness")
            .env("GIT_AUTHOR_EMAIL", "harness@gitopsd.test")
            .env("GIT_COMMITTER_NAME", "gitopsd harness")
            .env("GIT_COMMITTER_EMAIL", "harness@gitopsd.test")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input)
            .expect("write to git");
        let output = child.wait_with_output().expect("wait for git");
        if !output.status.success() {
            panic!(
                "{command:?} failed ({}):\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_string()
    }
}

impl AsRef<Path> for BareRepo {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// A work repository with a bare mirror beside it, in one temp dir that is removed on drop.
///
/// Commits happen in the work tree; [`Repo::push_all`] makes the bare mirror (what servers
/// serve, see [`Repo::bare`]) equal to it: same branches and tags, deletions included.
#[derive(Debug)]
pub struct Repo {
    work: PathBuf,
    bare: BareRepo,
    clock: AtomicU64,
    _dir: TempDir,
}

impl Default for Repo {
    fn default() -> Self {
        Self::new()
    }
}

impl Repo {
    /// An empty repository on branch `main`, served as `repo.git`.
    pub fn new() -> Self {
        Self::named("repo")
    }

    /// An empty repository on branch `main`, served as `<name>.git`.
    pub fn named(name: &str) -> Self {
        assert!(
            !name.is_empty() && !name.contains('/') && !name.ends_with(".git"),
            "repository name must be a plain name without .git: {name:?}"
        );
        let dir = tempfile::Builder::new()
            .prefix("gitopsd-repo-")
            .tempdir()
            .expect("create temp dir for a test repository");
        let work = dir.path().join("work");
        fs::create_dir(&work).expect("create work tree");
        git(&work, ["init", "-q", "-b", "main"]);
        for (key, value) in [
            ("user.name", "gitopsd test"),
            ("user.email", "test@gitopsd.invalid"),
            ("commit.gpgsign", "false"),
            ("tag.gpgsign", "false"),
            ("core.autocrlf", "false"),
            ("gc.auto", "0"),
        ] {
            git(&work, ["config", key, value]);
        }
        let bare = BareRepo::init(dir.path(), name);
        Repo {
            work,
            bare,
            clock: AtomicU64::new(FIRST_COMMIT_TIME),
            _dir: dir,
        }
    }

    /// The work tree.
    pub fn path(&self) -> &Path {
        &self.work
    }

    /// The bare mirror that servers serve; updated by [`Repo::push_all`].
    pub fn bare(&self) -> &BareRepo {
        &self.bare
    }

    /// Runs any git command in the work tree; panics with stderr on failure.
    pub fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        git(&self.work, args)
    }

    /// Runs git with author and committer dates from the repository's clock, then advances it.
    fn git_dated<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let time = self.clock.fetch_add(CLOCK_STEP, Ordering::SeqCst);
        let date = format!("{time} +0000");
        let mut command = git_command(&self.work);
        command
            .args(args)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        run_checked(command)
    }

    fn work_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        assert!(
            path.is_relative(),
            "paths in a Repo are relative to its work tree: {}",
            path.display()
        );
        self.work.join(path)
    }

    /// Writes a file (creating parent directories).
    pub fn write(&self, path: impl AsRef<Path>, content: impl AsRef<[u8]>) {
        let full = self.work_path(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).expect("create parent directories");
        }
        fs::write(&full, content).unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
    }

    /// Writes an executable file (mode 0755).
    pub fn write_exec(&self, path: impl AsRef<Path>, content: impl AsRef<[u8]>) {
        self.write(path.as_ref(), content);
        let full = self.work_path(path);
        fs::set_permissions(&full, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", full.display()));
    }

    /// Creates a symbolic link at `path` pointing to `target` (taken literally).
    pub fn symlink(&self, path: impl AsRef<Path>, target: impl AsRef<Path>) {
        let full = self.work_path(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent).expect("create parent directories");
        }
        std::os::unix::fs::symlink(target.as_ref(), &full)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", full.display()));
    }

    /// Removes a file, a symlink or a whole directory from the work tree.
    pub fn remove(&self, path: impl AsRef<Path>) {
        let full = self.work_path(path);
        let meta = fs::symlink_metadata(&full)
            .unwrap_or_else(|e| panic!("remove {}: {e}", full.display()));
        let result = if meta.is_dir() {
            fs::remove_dir_all(&full)
        } else {
            fs::remove_file(&full)
        };
        result.unwrap_or_else(|e| panic!("remove {}: {e}", full.display()));
    }

    /// Creates a directory (and its parents). Git tracks no empty directories: put a file in it.
    pub fn mkdir(&self, path: impl AsRef<Path>) {
        let full = self.work_path(path);
        fs::create_dir_all(&full).unwrap_or_else(|e| panic!("mkdir {}: {e}", full.display()));
    }

    /// Stages everything (additions, changes, removals) and commits; returns the full sha.
    /// An empty commit is allowed, so a test can make a new revision without changes.
    pub fn commit(&self, message: &str) -> String {
        self.git(["add", "-A"]);
        self.git_dated([
            "commit",
            "-q",
            "--allow-empty",
            "--no-verify",
            "-m",
            message,
        ]);
        self.head()
    }

    /// Lightweight tag on HEAD.
    pub fn tag(&self, name: &str) {
        self.git(["tag", name]);
    }

    /// Annotated tag on HEAD; returns the sha of the tag object.
    pub fn tag_annotated(&self, name: &str, message: &str) -> String {
        self.git_dated(["tag", "-a", name, "-m", message]);
        self.rev_parse(&format!("refs/tags/{name}"))
    }

    /// Creates a branch at HEAD without switching to it.
    pub fn branch(&self, name: &str) {
        self.git(["branch", name]);
    }

    /// Switches to a branch, tag or commit.
    pub fn checkout(&self, name: &str) {
        self.git(["checkout", "-q", name]);
    }

    /// Full sha of HEAD.
    pub fn head(&self) -> String {
        self.rev_parse("HEAD")
    }

    /// Full sha that `rev` resolves to (annotated tags resolve to the tag object; use
    /// `"<tag>^{commit}"` for its commit).
    pub fn rev_parse(&self, rev: &str) -> String {
        self.git(["rev-parse", "--verify", "--end-of-options", rev])
    }

    /// Publishes the work repository to its bare mirror: every branch and tag, forced, and
    /// refs deleted here are deleted there.
    pub fn push_all(&self) {
        self.git([
            OsStr::new("push"),
            "-q".as_ref(),
            "--mirror".as_ref(),
            self.bare.path.as_os_str(),
        ]);
    }
}
