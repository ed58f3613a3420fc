//! A git source's URL: the schemes and forms gitopsd fetches from, a local path made a
//! `file://` URL. Every reason is typed ([`UrlProblem`]) and never quotes the URL, which may
//! hold a password.

use std::net::Ipv6Addr;
use std::path::Path;

use crate::syntax::values::resolve;

const ACCEPTED: &str = "expected file://, git://, http://, https://, ssh://, scp-like \
                        user@host:path, or a local path starting with /, ./ or ../";

/// Why a git URL is refused. Never quotes the URL, which may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("it is empty; {ACCEPTED}")]
    Empty,
    #[error("it contains a space or control character")]
    SpaceOrControl,
    #[error("a file:// URL needs an absolute path, such as file:///srv/git/repo.git")]
    FileWithoutPath,
    #[error("it names no repository path after the host")]
    NoPath,
    #[error("unsupported scheme `{0}`; {ACCEPTED}")]
    Scheme(String),
    #[error("the host part of user@host:path is not a valid host name")]
    ScpHost,
    #[error("it names no repository path after `:`")]
    ScpNoPath,
    #[error("it is not a URL; {ACCEPTED}")]
    NotAUrl,
    #[error("its IPv6 address lacks the closing `]`")]
    UnclosedIpv6,
    #[error("its bracketed host is not an IPv6 address")]
    NotIpv6,
    #[error("unexpected text after the IPv6 address")]
    AfterIpv6,
    #[error("it has no host")]
    NoHost,
    #[error("its host is not a valid host name")]
    BadHost,
    #[error("its port is not a number between 0 and 65535")]
    BadPort,
}

/// The URL to fetch: a local path written as such (`/srv/git/repo`, `./repo`, `..`) becomes a
/// `file://` URL, relative paths counting from the config file's directory; anything else must
/// be a URL [`check_url`] accepts and is kept as written.
pub fn url(url: &str, base_dir: &Path) -> Result<String, UrlProblem> {
    let is_local_path = url == "."
        || url == ".."
        || url.starts_with('/')
        || url.starts_with("./")
        || url.starts_with("../");
    if !is_local_path {
        check_url(url)?;
        return Ok(url.to_string());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlProblem::SpaceOrControl);
    }
    let path = resolve(base_dir, Path::new(url));
    Ok(format!("file://{}", path.display()))
}

/// Accepts `file://`, `git://`, `http://`, `https://`, `ssh://` URLs and scp-like
/// `user@host:path`.
fn check_url(url: &str) -> Result<(), UrlProblem> {
    if url.is_empty() {
        return Err(UrlProblem::Empty);
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlProblem::SpaceOrControl);
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        return match scheme.as_str() {
            "file" if path.len() <= 1 => Err(UrlProblem::FileWithoutPath),
            "file" => Ok(()),
            "git" | "http" | "https" | "ssh" => {
                check_authority(authority)?;
                if path.len() <= 1 {
                    Err(UrlProblem::NoPath)
                } else {
                    Ok(())
                }
            }
            _ => Err(UrlProblem::Scheme(scheme)),
        };
    }
    // scp-like: user@host:path, where no '/' comes before the ':'.
    if let Some((user_host, path)) = url.split_once(':') {
        if let Some((user, host)) = user_host.split_once('@') {
            if !user_host.contains('/') && !user.is_empty() {
                if !is_host_name(host) {
                    return Err(UrlProblem::ScpHost);
                }
                if path.is_empty() {
                    return Err(UrlProblem::ScpNoPath);
                }
                return Ok(());
            }
        }
    }
    Err(UrlProblem::NotAUrl)
}

/// `[user[:password]@]host[:port]` of a network URL.
fn check_authority(authority: &str) -> Result<(), UrlProblem> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (address, after) = bracketed.split_once(']').ok_or(UrlProblem::UnclosedIpv6)?;
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(UrlProblem::NotIpv6);
        }
        if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':').ok_or(UrlProblem::AfterIpv6)?)
        }
    } else {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        if !is_host_name(host) {
            return Err(if host.is_empty() {
                UrlProblem::NoHost
            } else {
                UrlProblem::BadHost
            });
        }
        port
    };
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(UrlProblem::BadPort);
        }
    }
    Ok(())
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_urls() {
        for ok in [
            "https://github.com/org/repo",
            "http://localhost:3000/org/repo.git",
            "ssh://git@github.com/org/fleet",
            "ssh://git@[::1]:2222/org/fleet",
            "git://host/repo",
            "file:///srv/git/edge.git",
            "git@github.com:org/repo.git",
            "https://user:token@host/org/repo",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "github.com/org/repo",
            "ftp://host/repo",
            "https://",
            "https:///org/repo",
            "https://host",
            "https://host:port/repo",
            "https://host/org repo",
            "file://",
            "file://repo",
            "git@:repo",
            "git@host:",
            "ssh://git@[::1/repo",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn local_paths_become_file_urls() {
        let base = Path::new("/etc/gitopsd");
        assert_eq!(url("..", base).as_deref(), Ok("file:///etc"));
        assert_eq!(url(".", base).as_deref(), Ok("file:///etc/gitopsd"));
        assert_eq!(
            url("./repo", base).as_deref(),
            Ok("file:///etc/gitopsd/repo")
        );
        assert_eq!(
            url("/srv/git/x.git", base).as_deref(),
            Ok("file:///srv/git/x.git")
        );
        assert_eq!(url("https://h/r", base).as_deref(), Ok("https://h/r"));
        assert!(url("repo", base).is_err());
        assert!(url("github.com/org/repo", base).is_err());
    }
}
