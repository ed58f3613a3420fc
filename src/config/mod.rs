//! Configuration: YAML schema, validation with file:line:col diagnostics.

pub mod model;
pub use model::*;
