//! `gitopsd show-key NAME`: print the public half of the SSH key gitopsd generated for a
//! configuration, to be added to the repository as a (read-only) deploy key.

use crate::source::git::auth;
use anyhow::bail;
use std::path::Path;

pub fn show_key(config: &Path, name: &str, namespace: Option<&str>) -> anyhow::Result<i32> {
    let settings = match crate::config::load(config) {
        Ok(s) => s,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            return Ok(super::check::INVALID_CONFIG);
        }
    };
    let matching: Vec<_> = settings
        .configurations
        .iter()
        .filter(|c| c.name == name && namespace.is_none_or(|ns| c.namespace == ns))
        .collect();
    let configuration = match matching.as_slice() {
        [] => bail!("no configuration named {name} in {}", config.display()),
        [one] => *one,
        _ => bail!("several configurations are named {name}; choose one with --namespace"),
    };
    let source = &configuration.source;
    if !source
        .git()
        .is_some_and(|git| auth::uses_generated_key(&git.auth, &source.url))
    {
        bail!(
            "configuration {name} does not use a generated key: only a git source with an ssh \
             URL and no sshPrivateKey, sshPrivateKeyFile or localAuthRef identity has one"
        );
    }
    let path = auth::generated_key_path(
        &settings.state_dir.join("git"),
        &configuration.namespace,
        &configuration.name,
    );
    // Created here if the daemon has not run yet, so that the deploy key can be added first.
    auth::ensure_generated_key(&path).map_err(anyhow::Error::msg)?;
    match auth::generated_public_key(&path) {
        Some(public) => {
            println!("{public}");
            Ok(0)
        }
        None => bail!("the public key {}.pub cannot be read", path.display()),
    }
}
