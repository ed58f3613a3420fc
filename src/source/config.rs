//! What the source kinds' settings share: the keys more than one kind reads (`prefix`,
//! `caFile`, `localAuthRef`), and the check of a `localAuthRef.secret`, which every kind takes
//! as the same keys a `localAuthRef.directory` holds.
//!
//! Each kind owns the rest of its settings in its own `config` module (`git::config`,
//! `bucket::config`, `azblob::config`); `config` dispatches to them by `kind`.

use crate::syntax::fields::{Fields, Text};
use crate::syntax::positions::{NodeKind, Problems};
use crate::syntax::values::is_dns1123_subdomain;
use crate::vocab::{KubernetesSettings, SecretRef};

/// `directory` (files, e.g. a mounted Secret) or `secret` (a Secret read through the API);
/// exactly one.
pub const LOCAL_AUTH_REF_FIELDS: &[&str] = &["directory", "secret"];

/// The keys several kinds read, as written; the kinds' `FIELDS` lists name them too.
#[derive(Debug, Clone, Default)]
pub struct RawShared {
    /// `prefix` (bucket, azblob).
    pub prefix: Option<Text>,
    /// `caFile` (bucket, azblob).
    pub ca_file: Option<Text>,
    /// `localAuthRef.directory`, positioned at the value.
    pub local_auth_ref: Option<Text>,
    /// `localAuthRef.secret` (a Secret's name), positioned at the value; never set together
    /// with `local_auth_ref` (the decoder reports both and keeps neither).
    pub local_auth_ref_secret: Option<Text>,
}

/// Reads the shared keys of a `source` mapping.
pub fn decode(fields: &Fields<'_>, problems: &mut Problems) -> RawShared {
    let (local_auth_ref, local_auth_ref_secret) = fields
        .mapping("localAuthRef", LOCAL_AUTH_REF_FIELDS, problems)
        .map(|f| {
            let directory = f.text("directory", problems);
            let secret = f.text("secret", problems);
            match (directory, secret) {
                (Some(_), Some(secret)) => {
                    problems.push(
                        secret.pos,
                        "`localAuthRef` takes either `directory` or `secret`, not both",
                    );
                    (None, None)
                }
                (None, None) => {
                    let given = f
                        .entries
                        .iter()
                        .filter(|e| e.key == "directory" || e.key == "secret");
                    let mut any = false;
                    for entry in given {
                        any = true;
                        if entry.value.kind == NodeKind::Null {
                            problems
                                .push(entry.key_pos, format!("`{}` must have a value", entry.key));
                        }
                    }
                    if !any {
                        problems.push(
                            f.pos,
                            "`localAuthRef` needs `directory` (a directory of Flux's keys) or \
                             `secret` (the name of a Kubernetes Secret)",
                        );
                    }
                    (None, None)
                }
                pair => pair,
            }
        })
        .unwrap_or_default();
    RawShared {
        prefix: fields.text("prefix", problems),
        ca_file: fields.text("caFile", problems),
        local_auth_ref,
        local_auth_ref_secret,
    }
}

/// What the sources need to know about the top-level `kubernetes` section.
#[derive(Clone, Copy)]
pub struct Cluster<'a> {
    /// The section is written (valid or not: a broken one was reported already).
    pub configured: bool,
    /// The section, when valid.
    pub settings: Option<&'a KubernetesSettings>,
}

/// A `localAuthRef.secret`: a valid Secret name and a cluster to read it from, in the
/// configuration's `namespace` (`None` when that was invalid).
pub fn secret_ref(
    raw: &RawShared,
    namespace: Option<&str>,
    cluster: Cluster<'_>,
    problems: &mut Problems,
) -> Option<SecretRef> {
    let text = raw.local_auth_ref_secret.as_ref()?;
    let mut valid = true;
    if !is_dns1123_subdomain(&text.value) {
        problems.push(
            text.pos,
            format!(
                "invalid Secret name {:?} in localAuthRef.secret: expected a DNS-1123 \
                 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and \
                 ending with a letter or digit",
                text.value
            ),
        );
        valid = false;
    }
    if !cluster.configured {
        problems.push(
            text.pos,
            "`localAuthRef.secret` names a Kubernetes Secret, which needs a cluster: add the \
             top-level `kubernetes: { kubeconfig: PATH }`, or use `localAuthRef.directory`",
        );
        valid = false;
    }
    if !valid {
        return None;
    }
    Some(SecretRef {
        kubernetes: cluster.settings?.clone(),
        namespace: namespace?.to_string(),
        name: text.value.clone(),
    })
}
