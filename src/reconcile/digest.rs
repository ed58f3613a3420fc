//! The settings digest: what shapes a source's artifact besides the revision. When it
//! changes, the current artifact no longer answers the settings and the next poll packs again
//! even if the remote did not move.
//!
//! It is sha256 over the JSON of [`DigestInput`], a struct written out field by field, rather
//! than over `{:?}` output: `Debug` is not stable across Rust versions nor across refactors of
//! the settings types, and a digest that drifts repacks every source after an upgrade.
//! Adding a field here is a deliberate decision (it repacks every source once); secrets never
//! go in (a rotated key must not repack), only which kind of credentials is used.
//!
//! Versions before this one hashed `{:?}` text, so the first poll after an upgrade finds a
//! different digest and packs each source once more; packing is reproducible, so the artifact
//! (path and digest) comes out the same.

use crate::config::{
    AzureAuth, BucketCredentials, Configuration, GitReference, SecretValue, SourceSpec,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The digest stored beside a source's artifact in the state.
pub fn settings_digest(c: &Configuration) -> String {
    let json = serde_json::to_vec(&DigestInput::of(c)).unwrap_or_default();
    hex::encode(Sha256::digest(&json))
}

/// Every field that shapes the artifact, in a fixed order.
#[derive(Serialize)]
struct DigestInput<'a> {
    kind: &'a str,
    url: &'a str,
    reference: Reference<'a>,
    ignore: Option<&'a str>,
    bucket: Option<Bucket<'a>>,
    azure_blob: Option<AzureBlob<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Reference<'a> {
    RemoteHead,
    Branch(&'a str),
    Tag(&'a str),
    Semver(&'a str),
    Name(&'a str),
    Commit {
        sha: &'a str,
        branch: Option<&'a str>,
    },
}

#[derive(Serialize)]
struct Bucket<'a> {
    bucket_name: &'a str,
    prefix: Option<&'a str>,
    region: &'a str,
    insecure: bool,
    credentials: Credentials<'a>,
    ca_file: Option<&'a Path>,
}

#[derive(Serialize)]
struct AzureBlob<'a> {
    container: &'a str,
    prefix: Option<&'a str>,
    credentials: Credentials<'a>,
    authority_host: Option<&'a str>,
    msi_endpoint: Option<&'a str>,
    ca_file: Option<&'a Path>,
}

/// Which credentials a source uses, never their values: a file or a Secret is named by
/// where it is, an inline value only by its kind.
#[derive(Serialize)]
struct Credentials<'a> {
    mode: &'static str,
    /// Non-secret identifiers: tenant and client ids, file paths, Secret names.
    ids: Vec<&'a str>,
}

impl<'a> DigestInput<'a> {
    fn of(c: &'a Configuration) -> Self {
        let s = &c.source;
        // The kinds' settings are one enum now; the digest keeps the shape it had when they
        // were optional fields side by side (a reference for every kind), so that digests
        // kept in state.json still match.
        let (git, bucket, azure_blob) = match &s.spec {
            SourceSpec::Git(git) => (Some(git), None, None),
            SourceSpec::Bucket(bucket) => (None, Some(bucket), None),
            SourceSpec::AzureBlob(azure) => (None, None, Some(azure)),
        };
        DigestInput {
            kind: s.kind().as_str(),
            url: &s.url,
            reference: match git.map(|g| &g.reference) {
                None | Some(GitReference::RemoteHead) => Reference::RemoteHead,
                Some(GitReference::Branch(b)) => Reference::Branch(b),
                Some(GitReference::Tag(t)) => Reference::Tag(t),
                Some(GitReference::Semver(r)) => Reference::Semver(r),
                Some(GitReference::Name(n)) => Reference::Name(n),
                Some(GitReference::Commit { sha, branch }) => Reference::Commit {
                    sha,
                    branch: branch.as_deref(),
                },
            },
            ignore: s.ignore.as_deref(),
            bucket: bucket.map(|b| Bucket {
                bucket_name: &b.bucket_name,
                prefix: b.prefix.as_deref(),
                region: &b.region,
                insecure: b.insecure,
                credentials: bucket_credentials(&b.credentials),
                ca_file: b.ca_file.as_deref(),
            }),
            azure_blob: azure_blob.map(|a| AzureBlob {
                container: &a.container,
                prefix: a.prefix.as_deref(),
                credentials: azure_credentials(&a.auth),
                authority_host: a.authority_host.as_deref(),
                msi_endpoint: a.msi_endpoint.as_deref(),
                ca_file: a.ca_file.as_deref(),
            }),
        }
    }
}

fn secret_id(value: &SecretValue) -> Option<&str> {
    match value {
        SecretValue::Inline(_) => None,
        SecretValue::File(path) => path.to_str(),
    }
}

fn bucket_credentials(c: &BucketCredentials) -> Credentials<'_> {
    match c {
        BucketCredentials::Anonymous => Credentials {
            mode: "anonymous",
            ids: vec![],
        },
        BucketCredentials::Keys {
            access_key,
            secret_key,
        } => Credentials {
            mode: "keys",
            ids: [secret_id(access_key), secret_id(secret_key)]
                .into_iter()
                .flatten()
                .collect(),
        },
        BucketCredentials::LocalAuthRef(dir) => Credentials {
            mode: "localAuthRef",
            ids: dir.to_str().into_iter().collect(),
        },
        BucketCredentials::LocalAuthSecret(secret) => Credentials {
            mode: "localAuthSecret",
            ids: vec![&secret.namespace, &secret.name],
        },
    }
}

fn azure_credentials(a: &AzureAuth) -> Credentials<'_> {
    let (mode, ids): (&'static str, Vec<&str>) = match a {
        AzureAuth::Anonymous => ("anonymous", vec![]),
        AzureAuth::AccountKey(key) => ("accountKey", secret_id(key).into_iter().collect()),
        AzureAuth::SasToken(token) => ("sasToken", secret_id(token).into_iter().collect()),
        AzureAuth::ClientSecret {
            tenant_id,
            client_id,
            secret,
        } => (
            "clientSecret",
            [
                Some(tenant_id.as_str()),
                Some(client_id.as_str()),
                secret_id(secret),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        AzureAuth::ClientCertificate {
            tenant_id,
            client_id,
            certificate,
            send_chain,
            ..
        } => (
            if *send_chain {
                "clientCertificateWithChain"
            } else {
                "clientCertificate"
            },
            [
                Some(tenant_id.as_str()),
                Some(client_id.as_str()),
                secret_id(certificate),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        AzureAuth::ManagedIdentity { client_id } => (
            "managedIdentity",
            client_id.as_deref().into_iter().collect(),
        ),
        AzureAuth::LocalAuthRef(dir) => ("localAuthRef", dir.to_str().into_iter().collect()),
        AzureAuth::LocalAuthSecret(secret) => {
            ("localAuthSecret", vec![&secret.namespace, &secret.name])
        }
    };
    Credentials { mode, ids }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn configuration(source: &str) -> Configuration {
        let yaml = format!("configurations:\n  - name: web\n    source: {source}\n");
        let mut settings =
            crate::config::load_str(&yaml, Path::new("gitopsd.yaml"), Path::new("/")).unwrap();
        settings.configurations.remove(0)
    }

    #[test]
    fn the_digest_is_pinned() {
        // A change of this value repacks every source of every user once: only on purpose.
        let c = configuration(
            r#"{ kind: git, url: "https://example.com/fleet", ref: { branch: main }, ignore: "/docs" }"#,
        );
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&DigestInput::of(&c)).unwrap()).unwrap(),
            r#"{"kind":"git","url":"https://example.com/fleet","reference":{"branch":"main"},"ignore":"/docs","bucket":null,"azure_blob":null}"#
        );
        assert_eq!(settings_digest(&c), settings_digest(&c.clone()));
    }

    #[test]
    fn what_shapes_the_artifact_changes_the_digest() {
        let base = r#"{ kind: git, url: "https://example.com/fleet", ref: { branch: main } }"#;
        let digest = settings_digest(&configuration(base));
        for changed in [
            r#"{ kind: git, url: "https://example.com/other", ref: { branch: main } }"#,
            r#"{ kind: git, url: "https://example.com/fleet", ref: { branch: dev } }"#,
            r#"{ kind: git, url: "https://example.com/fleet", ref: { tag: main } }"#,
            r#"{ kind: git, url: "https://example.com/fleet", ref: { branch: main }, ignore: "x" }"#,
        ] {
            assert_ne!(
                settings_digest(&configuration(changed)),
                digest,
                "{changed}"
            );
        }
        // The interval does not shape the artifact.
        let slower = r#"{ kind: git, url: "https://example.com/fleet", ref: { branch: main }, interval: 1h }"#;
        assert_eq!(settings_digest(&configuration(slower)), digest);
    }

    #[test]
    fn a_rotated_secret_keeps_the_digest() {
        let with = |key: &str| {
            configuration(&format!(
                r#"{{ kind: bucket, url: "https://s3.example.com", bucketName: fleet, bucketAccessKey: AK, bucketSecretKey: {key} }}"#
            ))
        };
        assert_eq!(settings_digest(&with("one")), settings_digest(&with("two")));
        let anonymous =
            configuration(r#"{ kind: bucket, url: "https://s3.example.com", bucketName: fleet }"#);
        assert_ne!(settings_digest(&anonymous), settings_digest(&with("one")));
    }
}
