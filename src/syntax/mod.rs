//! The config file's syntax, shared by every owner of a section.
//!
//! A config file is read once, but its sections are owned by different layers: the top level
//! and the configurations by `config`, each source kind's keys by that kind
//! (`source::<kind>::config`), as vector's components own their config. What they all need
//! to read their part lives here, below all of them: the YAML tree with positions
//! ([`positions`]), the key and shape checks of one mapping ([`fields`]), Go durations
//! ([`duration`]), and the value rules several sections share ([`values`]: booleans,
//! intervals, paths, DNS names). Nothing here knows what a source or a kustomization is; it
//! imports only `vocab`.

pub mod duration;
pub mod fields;
pub mod positions;
pub mod values;
