//! Reading a receiver's or provider's secret: inline, a file, a directory holding `token`
//! (a mounted Secret, Flux's key name) or a Kubernetes Secret's `token` key. Files are
//! trimmed of surrounding whitespace (they usually end in a newline). Errors name where the
//! secret was looked for, never its value.

use crate::config::{SecretSource, SecretValue};
use std::path::PathBuf;
use zeroize::Zeroizing;

/// The key a Secret or a `localAuthRef` directory holds the token under, as Flux's Receiver.
pub const TOKEN_KEY: &str = "token";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is empty", path.display())]
    EmptyFile { path: PathBuf },
    #[error("cannot read Secret {reference}: {source}")]
    Cluster {
        reference: String,
        #[source]
        source: crate::cluster::ClusterError,
    },
    #[error("Secret {reference} has no key `{TOKEN_KEY}` (or it is empty)")]
    MissingKey { reference: String },
}

pub async fn read(source: &SecretSource) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    match source {
        SecretSource::Value(value) => read_value(value).await,
        SecretSource::Directory(dir) => read_file(dir.join(TOKEN_KEY)).await,
        SecretSource::Kubernetes(reference) => {
            let data = crate::cluster::read_secret(reference)
                .await
                .map_err(|source| SecretError::Cluster {
                    reference: reference.to_string(),
                    source,
                })?;
            match data.get(TOKEN_KEY) {
                Some(value) if !value.is_empty() => Ok(Zeroizing::new(value.clone())),
                _ => Err(SecretError::MissingKey {
                    reference: reference.to_string(),
                }),
            }
        }
    }
}

pub async fn read_value(value: &SecretValue) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    match value {
        SecretValue::Inline(secret) => Ok(Zeroizing::new(secret.0.as_bytes().to_vec())),
        SecretValue::File(path) => read_file(path.clone()).await,
    }
}

async fn read_file(path: PathBuf) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let bytes =
        Zeroizing::new(
            tokio::fs::read(&path)
                .await
                .map_err(|source| SecretError::Read {
                    path: path.clone(),
                    source,
                })?,
        );
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() {
        return Err(SecretError::EmptyFile { path });
    }
    Ok(Zeroizing::new(trimmed.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_and_directories_are_read_trimmed_and_empty_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cr3t\n").unwrap();
        let from_dir = read(&SecretSource::Directory(dir.path().to_path_buf()))
            .await
            .unwrap();
        assert_eq!(from_dir.as_slice(), b"s3cr3t");
        let file = SecretSource::Value(SecretValue::File(dir.path().join("token")));
        assert_eq!(read(&file).await.unwrap().as_slice(), b"s3cr3t");
        std::fs::write(dir.path().join("empty"), " \n").unwrap();
        let empty = SecretValue::File(dir.path().join("empty"));
        assert!(matches!(
            read_value(&empty).await,
            Err(SecretError::EmptyFile { .. })
        ));
        let missing = SecretSource::Directory(dir.path().join("absent"));
        let err = read(&missing).await.unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }
}
