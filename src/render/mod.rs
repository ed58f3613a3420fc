//! Render a kustomization: resolve its path inside the artifact, generate a kustomization.yaml
//! where Flux would, run `kustomize build`, and read back the objects it printed.
//!
//! The build runs as a child process (`kustomize build` or `kubectl kustomize`), one per
//! kustomization. Flux builds in-process and serialises every build behind one mutex to work
//! around kustomize's concurrent-map panics; separate processes need no such lock, so many
//! kustomizations can render at once.
//!
//! Like Flux, files are loaded with `--load-restrictor LoadRestrictionsNone` (an overlay may
//! reference `../common/patch.yaml`), and like Flux's secure file system nothing outside the
//! artifact may be read: the build runs in a kernel sandbox that can open only the artifact,
//! the kustomize binary and its libraries ([`sandbox`]); the path must resolve inside the
//! root, symlinks leading out of the root are removed from the scratch copy before the build,
//! and a generated kustomization refuses to list such a symlink.

mod generate;
mod object;
mod paths;
mod remote;
mod run;
pub mod sandbox;
pub mod substitute;
mod yaml;

pub use generate::NotKubernetes;
pub use object::{Object, ObjectId, ObjectsError};
pub use sandbox::{Confinement, RenderSettings, SandboxMode, Support as SandboxSupport};

use std::ffi::OsString;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use generate::GenerateProblem;
use paths::PathProblem;
use run::RunError;

/// The environment variable that names the kustomize binary explicitly.
pub const KUSTOMIZE_ENV: &str = "GITOPSD_KUSTOMIZE";

/// Removes the symlinks under `root` that lead outside it (what every build does first), so
/// that a tree shared by several builds is swept once, before any of them runs.
pub fn sweep_escaping_symlinks(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    paths::remove_escaping_symlinks(root)
}

/// What a build produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Multi-document YAML exactly as kustomize printed it (what a directory target writes).
    pub yaml: String,
    /// The objects in `yaml`, parsed, in output order (what a cluster target applies).
    pub objects: Vec<Object>,
}

impl Rendered {
    /// Read the objects of a multi-document YAML stream (e.g. after post-build substitution
    /// changed the text). The error says which document is not an object.
    pub fn from_yaml(yaml: String) -> Result<Rendered, ObjectsError> {
        let objects = object::parse_objects(&yaml)?;
        Ok(Rendered { yaml, objects })
    }

    /// The identities of the objects, in output order.
    pub fn ids(&self) -> impl Iterator<Item = &ObjectId> {
        self.objects.iter().map(|o| &o.id)
    }
}

/// Which command line runs the build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `kustomize build <dir>`
    Kustomize,
    /// `kubectl kustomize <dir>` (kubectl embeds kustomize)
    Kubectl,
}

impl Tool {
    /// A binary whose file name starts with `kubectl` is driven as kubectl, anything else as
    /// kustomize.
    pub fn for_binary(binary: &Path) -> Tool {
        let is_kubectl = binary
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("kubectl"));
        if is_kubectl {
            Tool::Kubectl
        } else {
            Tool::Kustomize
        }
    }
}

/// How one build runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// The build is killed when it runs longer.
    pub timeout: Duration,
    /// The sandbox it runs in (see [`SandboxSupport::resolve`]).
    pub confinement: Confinement,
    /// Whether remote bases and resources may be fetched (`render.remoteBases`).
    pub remote_bases: bool,
    /// `targetNamespace`: set as the kustomization's `namespace`, as Flux does, so kustomize
    /// itself decides which objects are namespaced and fixes references (RoleBinding
    /// subjects and the like).
    pub target_namespace: Option<String>,
}

/// Runs kustomize builds. Cheap to clone; holds only which binary to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renderer {
    binary: PathBuf,
    tool: Tool,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no kustomize found: install kustomize or kubectl, or set {KUSTOMIZE_ENV}")]
    NoKustomize,
    #[error("{KUSTOMIZE_ENV}={}: {reason}", binary.display())]
    UnusableBinary { binary: PathBuf, reason: String },
    #[error("kustomization path {} leads outside the artifact", shown(path))]
    PathEscapes { path: String },
    #[error("kustomization path {} does not exist in the artifact", shown(path))]
    PathNotFound { path: String },
    #[error("kustomization path {} is not a directory", shown(path))]
    NotADirectory { path: String },
    #[error(
        "cannot generate a kustomization for {}: {file} is not a Kubernetes manifest ({reason}); \
         without a kustomization.yaml every .yaml/.yml file below the path is a resource, so add \
         a kustomization.yaml that lists the resources or exclude the file with .sourceignore",
        shown(path)
    )]
    NotKubernetes {
        path: String,
        file: String,
        reason: NotKubernetes,
    },
    #[error(
        "cannot generate a kustomization for {}: {file} is a symlink that leads outside the artifact",
        shown(path)
    )]
    SymlinkEscapes { path: String, file: String },
    #[error(
        "cannot generate a kustomization for {}: {file}: file name is not UTF-8",
        shown(path)
    )]
    NonUtf8Name { path: String, file: String },
    #[error(
        "cannot generate a kustomization for {}: {file}: {source}",
        shown(path)
    )]
    Generate {
        path: String,
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set targetNamespace in {}/{file}: {reason}", shown(path))]
    TargetNamespace {
        path: String,
        file: String,
        reason: String,
    },
    #[error("I/O error preparing the build of {}: {source}", shown(path))]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "kustomization path {}: {file} refers to the remote {field} {url}, and remote bases are \
         disabled (render.remoteBases: false); vendor it into the repository or allow remote bases",
        shown(path)
    )]
    RemoteBase {
        path: String,
        file: String,
        field: String,
        url: String,
    },
    #[error("kustomize build of {}: {source}", shown(path))]
    Sandbox {
        path: String,
        #[source]
        source: sandbox::SandboxError,
    },
    #[error("cannot run {tool}: {source}")]
    Spawn {
        tool: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "kustomize build of {} failed ({status}{}): {stderr}",
        shown(path),
        match confinement {
            Confinement::Unconfined => "",
            // kustomize reports a refused read as "permission denied" or "no such file":
            // say where that comes from.
            Confinement::Landlock | Confinement::Namespace =>
                ", in a sandbox that reads only the artifact",
        }
    )]
    BuildFailed {
        path: String,
        status: String,
        /// kustomize's stderr, trimmed to its first lines.
        stderr: String,
        confinement: Confinement,
    },
    #[error(
        "kustomize build of {} timed out after {after:?} and was killed{}",
        shown(path),
        if stderr.is_empty() { String::new() } else { format!("; its stderr so far: {stderr}") }
    )]
    Timeout {
        path: String,
        after: Duration,
        stderr: String,
    },
    #[error(
        "kustomize build of {} printed output gitopsd cannot read: not UTF-8",
        shown(path)
    )]
    OutputNotUtf8 { path: String },
    #[error(
        "kustomize build of {} printed output gitopsd cannot read: {source}",
        shown(path)
    )]
    InvalidOutput {
        path: String,
        #[source]
        source: ObjectsError,
    },
}

fn shown(path: &str) -> String {
    if path.is_empty() {
        "\".\"".to_string()
    } else {
        format!("{path:?}")
    }
}

impl Renderer {
    /// Use `$GITOPSD_KUSTOMIZE` if set (a path, or a name looked up on `PATH`), else
    /// `kustomize` on `PATH`, else `kubectl` on `PATH` driven as `kubectl kustomize`.
    pub fn detect() -> Result<Renderer, RenderError> {
        detect_from(std::env::var_os(KUSTOMIZE_ENV), std::env::var_os("PATH"))
    }

    /// Use `binary` as `tool`, without looking at the environment.
    pub fn with_binary(binary: impl Into<PathBuf>, tool: Tool) -> Renderer {
        Renderer {
            binary: binary.into(),
            tool,
        }
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn tool(&self) -> Tool {
        self.tool
    }

    /// e.g. `kubectl kustomize (/usr/bin/kubectl)`.
    pub fn describe(&self) -> String {
        let command = match self.tool {
            Tool::Kustomize => "kustomize build",
            Tool::Kubectl => "kubectl kustomize",
        };
        format!("{command} ({})", self.binary.display())
    }

    /// Build the kustomization at `path` (relative to `root`, normalised, `""` for the root).
    ///
    /// `root` is a private scratch copy of the artifact: a generated `kustomization.yaml` is
    /// written into it, symlinks leading outside it are removed, and the sandbox keeps its
    /// working files next to it (`<root>.sandbox`, removed afterwards). The build is killed if
    /// it runs longer than `options.timeout`.
    pub fn build(
        &self,
        root: &Path,
        path: &str,
        options: &BuildOptions,
    ) -> Result<Rendered, RenderError> {
        let timeout = options.timeout;
        let owned = || path.to_string();
        let (root, dir) = paths::resolve_inside(root, path).map_err(|problem| match problem {
            PathProblem::Escapes => RenderError::PathEscapes { path: owned() },
            PathProblem::Missing => RenderError::PathNotFound { path: owned() },
            PathProblem::NotADirectory => RenderError::NotADirectory { path: owned() },
            PathProblem::Io(source) => RenderError::Io {
                path: owned(),
                source,
            },
        })?;

        if let Some(resources) = generate::scan(&root, &dir).map_err(|p| generate_error(path, p))? {
            let file = dir.join(generate::GENERATED_FILE_NAME);
            crate::atomic::write(&file, generate::kustomization_text(&resources).as_bytes())
                .map_err(|source| RenderError::Io {
                    path: owned(),
                    source,
                })?;
            tracing::debug!(
                path,
                resources = resources.len(),
                "generated kustomization.yaml"
            );
            if resources.is_empty() {
                // Flux builds an empty directory to zero objects; no need to run kustomize.
                return Ok(Rendered::default());
            }
        }

        let removed = paths::remove_escaping_symlinks(&root).map_err(|source| RenderError::Io {
            path: owned(),
            source,
        })?;
        for link in removed {
            tracing::warn!(
                path,
                symlink = %link.display(),
                "removed a symlink that leads outside the artifact before the build"
            );
        }

        // After the escaping symlinks are gone: the file is read here, outside the sandbox.
        if let Some(namespace) = &options.target_namespace {
            generate::set_namespace(&dir, namespace).map_err(|(file, reason)| {
                RenderError::TargetNamespace {
                    path: owned(),
                    file,
                    reason,
                }
            })?;
        }

        if !options.remote_bases {
            let found = remote::find(&root, &dir).map_err(|source| RenderError::Io {
                path: owned(),
                source,
            })?;
            if let Some(found) = found {
                return Err(RenderError::RemoteBase {
                    path: owned(),
                    file: found.file,
                    field: found.field,
                    url: found.url,
                });
            }
        }

        let jail = sandbox::Jail::prepare(
            options.confinement,
            &root,
            &dir,
            &self.binary,
            options.remote_bases,
        )
        .map_err(|source| RenderError::Sandbox {
            path: owned(),
            source,
        })?;
        let mut command = self.command(jail.program(), &dir);
        jail.apply(&mut command);
        let finished = run::run_with_timeout(command, timeout).map_err(|e| match e {
            RunError::Spawn(source) | RunError::Wait(source) => RenderError::Spawn {
                tool: match options.confinement {
                    Confinement::Unconfined => self.describe(),
                    sandboxed => {
                        format!("{} in the {} sandbox", self.describe(), sandboxed.as_str())
                    }
                },
                source,
            },
            RunError::TimedOut { stderr } => RenderError::Timeout {
                path: owned(),
                after: timeout,
                stderr: if stderr.is_empty() {
                    String::new()
                } else {
                    summarize_stderr(&stderr)
                },
            },
        })?;
        if !finished.status.success() {
            return Err(RenderError::BuildFailed {
                path: owned(),
                status: finished.status.to_string(),
                stderr: summarize_stderr(&finished.stderr),
                confinement: options.confinement,
            });
        }
        if !finished.stderr.is_empty() {
            tracing::info!(path, stderr = %summarize_stderr(&finished.stderr), "kustomize warnings");
        }
        let yaml = String::from_utf8(finished.stdout)
            .map_err(|_| RenderError::OutputNotUtf8 { path: owned() })?;
        Rendered::from_yaml(yaml).map_err(|source| RenderError::InvalidOutput {
            path: owned(),
            source,
        })
    }

    /// The build's command line; `program` is the binary as the sandbox reaches it, and
    /// `argv[0]` stays the configured name (kubectl picks its behaviour by that name).
    fn command(&self, program: &Path, dir: &Path) -> Command {
        let mut command = Command::new(program);
        command.arg0(&self.binary);
        match self.tool {
            Tool::Kustomize => command.arg("build"),
            Tool::Kubectl => command.arg("kustomize"),
        };
        command
            .args(["--load-restrictor", "LoadRestrictionsNone"])
            .arg(dir)
            .current_dir(dir);
        command
    }
}

fn generate_error(path: &str, problem: GenerateProblem) -> RenderError {
    let path = path.to_string();
    match problem {
        GenerateProblem::NotKubernetes { file, reason } => {
            RenderError::NotKubernetes { path, file, reason }
        }
        GenerateProblem::SymlinkEscapes { file } => RenderError::SymlinkEscapes { path, file },
        GenerateProblem::NonUtf8Name { file } => RenderError::NonUtf8Name { path, file },
        GenerateProblem::Io { file, source } => RenderError::Generate { path, file, source },
    }
}

fn detect_from(
    explicit: Option<OsString>,
    search_path: Option<OsString>,
) -> Result<Renderer, RenderError> {
    if let Some(explicit) = explicit.filter(|v| !v.is_empty()) {
        let named = PathBuf::from(&explicit);
        let binary = if named.components().count() > 1 || named.is_absolute() {
            if !is_executable(&named) {
                return Err(RenderError::UnusableBinary {
                    binary: named,
                    reason: "not an executable file".to_string(),
                });
            }
            named
        } else {
            find_on_path(&explicit, search_path.as_ref()).ok_or_else(|| {
                RenderError::UnusableBinary {
                    binary: named.clone(),
                    reason: "not found on PATH".to_string(),
                }
            })?
        };
        let tool = Tool::for_binary(&binary);
        return Ok(Renderer::with_binary(binary, tool));
    }
    if let Some(binary) = find_on_path("kustomize".as_ref(), search_path.as_ref()) {
        return Ok(Renderer::with_binary(binary, Tool::Kustomize));
    }
    if let Some(binary) = find_on_path("kubectl".as_ref(), search_path.as_ref()) {
        return Ok(Renderer::with_binary(binary, Tool::Kubectl));
    }
    Err(RenderError::NoKustomize)
}

pub(crate) fn find_on_path(
    name: &std::ffi::OsStr,
    search_path: Option<&OsString>,
) -> Option<PathBuf> {
    std::env::split_paths(search_path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first lines of a failed build's stderr, without klog's line prefix
/// (`E1124 05:42:16.984418  8620 run.go:72] `) that kubectl puts in front of its message.
fn summarize_stderr(stderr: &[u8]) -> String {
    const MAX_LINES: usize = 12;
    const MAX_CHARS: usize = 2000;
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(|line| strip_klog_prefix(line).trim_end())
        .filter(|line| !line.is_empty())
        .collect();
    let mut summary = lines
        .iter()
        .take(MAX_LINES)
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    if lines.len() > MAX_LINES {
        summary.push_str(&format!("\n... ({} more lines)", lines.len() - MAX_LINES));
    }
    if summary.chars().count() > MAX_CHARS {
        summary = summary.chars().take(MAX_CHARS).collect::<String>() + "...";
    }
    if summary.is_empty() {
        summary = "no error output".to_string();
    }
    summary
}

fn strip_klog_prefix(line: &str) -> &str {
    let bytes = line.as_bytes();
    let looks_like_klog = bytes.len() > 5
        && matches!(bytes[0], b'I' | b'W' | b'E' | b'F')
        && bytes[1..5].iter().all(u8::is_ascii_digit);
    if !looks_like_klog {
        return line;
    }
    match line.find("] ") {
        Some(end) => &line[end + 2..],
        None => line,
    }
}

impl fmt::Display for Renderer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests;
