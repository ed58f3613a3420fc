//! Suspending and resuming at run time (`gitopsd suspend` / `gitopsd resume`).
//!
//! An object is suspended when the config says so (`suspend: true` on the configuration, its
//! source or the kustomization) or when an operator suspended it; the config always wins, so
//! `resume` cannot lift a suspension written in the file. A change is saved to
//! `<stateDir>/suspensions.json` before it is acknowledged (see [`crate::state::suspensions`]),
//! then the configuration's loop is woken to apply it: a suspended object stops being
//! scheduled (an in-flight step of it finishes), a resumed one runs at the next wake.

use super::{kustomization_key, scheduler::Schedule, source_key, Engine};
use crate::state::{Suspendable, Suspensions, SuspensionsError};

/// What to suspend or resume.
#[derive(Debug, Clone)]
pub struct SuspendRequest {
    /// The configuration's namespace; `None`: the only configuration of that name.
    pub namespace: Option<String>,
    pub configuration: String,
    /// One kustomization of it; `None`: the whole configuration.
    pub kustomization: Option<String>,
}

/// Why a suspend or resume was not done.
#[derive(Debug, thiserror::Error)]
pub enum SuspendError {
    #[error("no configuration named {0}")]
    NotFound(String),
    #[error("configuration {configuration} has no kustomization named {name}")]
    NoKustomization { configuration: String, name: String },
    #[error(
        "several configurations are named {name} (in namespaces {}); name the namespace",
        namespaces.join(", ")
    )]
    Ambiguous {
        name: String,
        namespaces: Vec<String>,
    },
    #[error(
        "{what} is suspended in the configuration file (suspend: true), which wins over \
         `gitopsd resume`; set suspend: false there"
    )]
    SuspendedByConfig { what: String },
    #[error(transparent)]
    Persist(#[from] SuspensionsError),
}

/// What a suspend or resume did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspended {
    /// `<namespace>/<configuration>[/<kustomization>]`.
    pub object: String,
    /// `false` when it already was in the requested state.
    pub changed: bool,
}

impl Engine {
    /// Suspend (`suspended`) or resume what `request` names; persisted before it returns.
    /// Blocking: it writes a file.
    pub fn set_suspended(
        &self,
        request: &SuspendRequest,
        suspended: bool,
    ) -> Result<Suspended, SuspendError> {
        let idx = self.find_configuration(request.namespace.as_deref(), &request.configuration)?;
        let c = &self.settings.configurations[idx];
        let (what, object, by_config) = match &request.kustomization {
            None => (
                Suspendable::Configuration {
                    namespace: &c.namespace,
                    name: &c.name,
                },
                source_key(c),
                c.suspend || c.source.suspend,
            ),
            Some(name) => {
                let k = c
                    .kustomizations
                    .iter()
                    .find(|k| &k.name == name)
                    .ok_or_else(|| SuspendError::NoKustomization {
                        configuration: source_key(c),
                        name: name.clone(),
                    })?;
                (
                    Suspendable::Kustomization {
                        namespace: &c.namespace,
                        configuration: &c.name,
                        name: &k.name,
                    },
                    kustomization_key(c, k),
                    c.suspend || k.suspend,
                )
            }
        };
        if !suspended && by_config {
            return Err(SuspendError::SuspendedByConfig { what: object });
        }
        let changed = {
            // Held across the save so that two requests cannot save in the opposite order
            // of their changes.
            let mut all = self.suspensions.lock().unwrap_or_else(|e| e.into_inner());
            let mut next = all.clone();
            let changed = next.set(what, suspended);
            if changed {
                next.save(&self.settings.state_dir)?;
                *all = next;
            }
            changed
        };
        if changed {
            self.publish_suspensions(idx);
            tracing::info!(
                object = %object,
                "{}",
                if suspended { "suspended" } else { "resumed" }
            );
        }
        Ok(Suspended { object, changed })
    }

    fn find_configuration(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<usize, SuspendError> {
        let found: Vec<usize> = self
            .settings
            .configurations
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name == name && namespace.is_none_or(|ns| c.namespace == ns))
            .map(|(i, _)| i)
            .collect();
        match found.as_slice() {
            [] => Err(SuspendError::NotFound(match namespace {
                Some(ns) => format!("{name} in namespace {ns}"),
                None => name.to_string(),
            })),
            [one] => Ok(*one),
            several => Err(SuspendError::Ambiguous {
                name: name.to_string(),
                namespaces: several
                    .iter()
                    .map(|&i| self.settings.configurations[i].namespace.clone())
                    .collect(),
            }),
        }
    }

    /// The source of configuration `idx` is suspended, by the config or an operator.
    pub(super) fn source_suspended(&self, idx: usize) -> bool {
        let c = &self.settings.configurations[idx];
        c.suspend
            || c.source.suspend
            || self.read_suspensions(|s| s.configuration(&c.namespace, &c.name))
    }

    /// Kustomization `ki` of configuration `idx` is suspended, by the config or an operator
    /// (its own suspension or its configuration's).
    pub(super) fn kustomization_suspended(&self, idx: usize, ki: usize) -> bool {
        let c = &self.settings.configurations[idx];
        let Some(k) = c.kustomizations.get(ki) else {
            return true;
        };
        c.suspend
            || k.suspend
            || self.read_suspensions(|s| {
                s.configuration(&c.namespace, &c.name)
                    || s.kustomization(&c.namespace, &c.name, &k.name)
            })
    }

    fn read_suspensions<R>(&self, f: impl FnOnce(&Suspensions) -> R) -> R {
        f(&self.suspensions.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Tell the schedule of configuration `idx` what is suspended now.
    pub(super) fn apply_suspensions<R: rand::Rng>(&self, idx: usize, schedule: &mut Schedule<R>) {
        let c = &self.settings.configurations[idx];
        let kustomizations: Vec<bool> = (0..c.kustomizations.len())
            .map(|ki| self.kustomization_suspended(idx, ki))
            .collect();
        schedule.set_suspended(self.source_suspended(idx), &kustomizations);
    }

    /// Show the effective suspensions of configuration `idx` in its statuses and wake its loop.
    fn publish_suspensions(&self, idx: usize) {
        let c = &self.settings.configurations[idx];
        let source = self.source_suspended(idx);
        let kustomizations: Vec<(String, bool)> = c
            .kustomizations
            .iter()
            .enumerate()
            .map(|(ki, k)| {
                (
                    kustomization_key(c, k),
                    self.kustomization_suspended(idx, ki),
                )
            })
            .collect();
        self.state.update(|st| {
            if let Some(s) = st.sources.get_mut(&source_key(c)) {
                s.suspended = source;
            }
            for (key, suspended) in kustomizations {
                if let Some(k) = st.kustomizations.get_mut(&key) {
                    k.suspended = suspended;
                }
            }
        });
        self.suspension_changes
            .send_modify(|generation| *generation += 1);
    }
}
