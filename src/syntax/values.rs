//! Value rules that several sections share: booleans, intervals and timeouts, paths, and
//! Kubernetes names. Each reports its problem at the value and returns a usable stand-in, so
//! that checking goes on and one run shows every problem.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::duration::{self, DurationError};
use super::fields::Text;
use super::positions::Problems;

/// Azure's default for interval, timeout and retryInterval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

/// The shortest interval and retryInterval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

const DURATION_HINT: &str = "expected a Go duration such as 90s, 10m or 1h30m";

/// `true`/`false` in YAML 1.2's spellings; unset is `false`.
pub fn boolean(text: &Option<Text>, key: &str, problems: &mut Problems) -> bool {
    let Some(text) = text else { return false };
    match text.as_str() {
        "true" | "True" | "TRUE" => true,
        "false" | "False" | "FALSE" => false,
        other => {
            problems.push(
                text.pos,
                format!("invalid value {other:?} for {key}: expected true or false"),
            );
            false
        }
    }
}

/// An interval or timeout: a Go duration greater than zero, [`DEFAULT_INTERVAL`] when unset.
pub fn positive_duration(text: &Option<Text>, key: &str, problems: &mut Problems) -> Duration {
    let Some(text) = text else {
        return DEFAULT_INTERVAL;
    };
    match duration::parse_positive(&text.value) {
        Ok(duration) => duration,
        Err(err) => {
            let reason = match err {
                DurationError::Syntax => DURATION_HINT.to_string(),
                DurationError::NotPositive => format!("must be greater than zero; {DURATION_HINT}"),
                other => format!("{other}; {DURATION_HINT}"),
            };
            problems.push(
                text.pos,
                format!("invalid duration {:?} for {key}: {reason}", text.value),
            );
            DEFAULT_INTERVAL
        }
    }
}

/// An interval or retryInterval: a duration of at least [`MIN_INTERVAL`]. Shorter ones turn
/// polling into a busy loop (1ns polled 94 times a second) against someone else's server.
pub fn polling_interval(text: &Option<Text>, key: &str, problems: &mut Problems) -> Duration {
    let value = positive_duration(text, key, problems);
    if let Some(text) = text {
        if value < MIN_INTERVAL {
            problems.push(
                text.pos,
                format!(
                    "invalid duration {:?} for {key}: must be at least {}s",
                    text.value,
                    MIN_INTERVAL.as_secs()
                ),
            );
        }
    }
    value
}

/// A directory from the file: relative ones resolve against the config file's directory.
pub fn directory(text: &Text, key: &str, base_dir: &Path, problems: &mut Problems) -> PathBuf {
    if text.value.is_empty() {
        problems.push(
            text.pos,
            format!("{key} must not be empty; expected a directory path"),
        );
    }
    resolve(base_dir, Path::new(&text.value))
}

/// `base.join(path)` with `.` and `..` removed lexically (without touching the file system,
/// which may not have the directory yet).
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    let mut resolved = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match resolved.components().next_back() {
                Some(Component::Normal(_)) => {
                    resolved.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => resolved.push(component),
            },
            other => resolved.push(other),
        }
    }
    resolved
}

/// A Kubernetes object name: dot-separated DNS-1123 labels, 253 characters at most.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

/// Kubernetes' DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && alnum(&bytes[0])
        && alnum(&bytes[bytes.len() - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "cluster-config", "a1", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn resolves_against_the_base() {
        let base = Path::new("/etc/gitopsd");
        assert_eq!(
            resolve(base, Path::new("./state")),
            Path::new("/etc/gitopsd/state")
        );
        assert_eq!(resolve(base, Path::new("../x/./y")), Path::new("/etc/x/y"));
        assert_eq!(resolve(base, Path::new("/srv/app")), Path::new("/srv/app"));
        assert_eq!(resolve(base, Path::new("/../a")), Path::new("/a"));
    }
}
