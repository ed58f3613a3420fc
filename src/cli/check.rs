//! `gitopsd check`: validate a configuration.

use std::path::Path;

/// Exit code for an invalid configuration, as documented.
pub const INVALID_CONFIG: i32 = 2;

pub fn check(config: &Path) -> anyhow::Result<i32> {
    match crate::config::load(config) {
        Ok(settings) => {
            let kustomizations: usize = settings
                .configurations
                .iter()
                .map(|c| c.kustomizations.len())
                .sum();
            println!(
                "{}: valid ({} configurations, {} kustomizations)",
                config.display(),
                settings.configurations.len(),
                kustomizations
            );
            Ok(0)
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            Ok(INVALID_CONFIG)
        }
    }
}
