//! Suspensions set at run time (`gitopsd suspend`), kept in `<stateDir>/suspensions.json` so
//! that they survive a restart.
//!
//! They are a file of their own rather than a field of the statuses in state.json: a status is
//! rebuilt from the config at every start and describes what happened, while a suspension is
//! an operator's standing order that must outlive any status. The file is small and rarely
//! written, so every change replaces it at once (atomically, 0600), before the change is
//! acknowledged: a suspension the caller was told about is on disk.
//!
//! A suspension only ever adds to the config's own `suspend` fields: `suspend: true` in the
//! file cannot be lifted from the command line (the caller of `resume` is told so), and a
//! suspension of a configuration the config no longer names is kept, harmless, until the
//! configuration comes back or the operator resumes it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

const FILE: &str = "suspensions.json";

/// The run-time suspensions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suspensions {
    /// `<namespace>/<name>`: the source and every kustomization of the configuration.
    #[serde(default)]
    configurations: BTreeSet<String>,
    /// `<namespace>/<configuration>/<name>`.
    #[serde(default)]
    kustomizations: BTreeSet<String>,
}

/// Cannot read or write `suspensions.json`.
#[derive(Debug, thiserror::Error)]
pub enum SuspensionsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is not a valid suspensions file ({source}); fix or remove it", path.display())]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot record the suspension in {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// What a suspension names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspendable<'a> {
    Configuration {
        namespace: &'a str,
        name: &'a str,
    },
    Kustomization {
        namespace: &'a str,
        configuration: &'a str,
        name: &'a str,
    },
}

impl Suspensions {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// The suspensions kept in `state_dir`; none when the file does not exist. A file that
    /// cannot be read is an error rather than "nothing suspended": resuming everything an
    /// operator suspended because of a damaged file would apply what they meant to hold back.
    pub fn load(state_dir: &Path) -> Result<Suspensions, SuspensionsError> {
        let path = Suspensions::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| SuspensionsError::Invalid {
                    path: path.clone(),
                    source,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Suspensions::default()),
            Err(source) => Err(SuspensionsError::Read { path, source }),
        }
    }

    /// Replaces the file atomically.
    pub fn save(&self, state_dir: &Path) -> Result<(), SuspensionsError> {
        let path = Suspensions::path(state_dir);
        // Serialising a map of strings cannot fail; an empty document would still be valid.
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        crate::atomic::write_private(&path, &bytes)
            .map_err(|source| SuspensionsError::Write { path, source })
    }

    /// Suspends or resumes `what`; `true` when that changed anything.
    pub fn set(&mut self, what: Suspendable<'_>, suspended: bool) -> bool {
        let (set, key) = self.entry(what);
        if suspended {
            set.insert(key)
        } else {
            set.remove(&key)
        }
    }

    fn entry(&mut self, what: Suspendable<'_>) -> (&mut BTreeSet<String>, String) {
        match what {
            Suspendable::Configuration { namespace, name } => {
                (&mut self.configurations, format!("{namespace}/{name}"))
            }
            Suspendable::Kustomization {
                namespace,
                configuration,
                name,
            } => (
                &mut self.kustomizations,
                format!("{namespace}/{configuration}/{name}"),
            ),
        }
    }

    pub fn configuration(&self, namespace: &str, name: &str) -> bool {
        self.configurations.contains(&format!("{namespace}/{name}"))
    }

    pub fn kustomization(&self, namespace: &str, configuration: &str, name: &str) -> bool {
        self.kustomizations
            .contains(&format!("{namespace}/{configuration}/{name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspensions_survive_a_save_and_load_and_resume_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            Suspensions::load(dir.path()).unwrap(),
            Suspensions::default()
        );
        let mut s = Suspensions::default();
        let web = Suspendable::Configuration {
            namespace: "default",
            name: "web",
        };
        let apps = Suspendable::Kustomization {
            namespace: "default",
            configuration: "fleet",
            name: "apps",
        };
        assert!(s.set(web, true));
        assert!(!s.set(web, true), "suspending twice changes nothing");
        assert!(s.set(apps, true));
        s.save(dir.path()).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(Suspensions::path(dir.path()))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let mut loaded = Suspensions::load(dir.path()).unwrap();
        assert!(loaded.configuration("default", "web"));
        assert!(loaded.kustomization("default", "fleet", "apps"));
        assert!(!loaded.kustomization("default", "fleet", "infra"));
        assert!(loaded.set(web, false));
        assert!(!loaded.configuration("default", "web"));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(Suspensions::path(dir.path()), "{not json").unwrap();
        assert!(matches!(
            Suspensions::load(dir.path()),
            Err(SuspensionsError::Invalid { .. })
        ));
    }
}
