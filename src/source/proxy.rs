//! Which proxy, if any, a request to an http(s) URL goes through: one rule for every HTTP
//! client gitopsd uses (gix's curl transport, the mutual-TLS client of the gix backend,
//! libgit2, and object_store's reqwest client for `bucket` and `azblob` sources).
//!
//! Each of those libraries has its own idea of the proxy variables: curl ignores an upper-case
//! `HTTP_PROXY` and prefers lower-case names, libgit2 has no `ALL_PROXY` and matches
//! `NO_PROXY` entries literally (no subdomains, no CIDR, no spaces), reqwest prefers the
//! upper-case names, and gix adds `http.proxy` from the user's git configuration. A daemon
//! whose sources behave differently depending on the `gitImplementation` or source kind would
//! be hard to operate, so gitopsd decides once, here, and hands every client an explicit
//! answer (a proxy URL or "no proxy"), never letting it consult the environment itself.
//!
//! The rule is curl's, with the differences noted:
//!
//! - `https://` URLs use `https_proxy`, else `HTTPS_PROXY`; `http://` URLs use `http_proxy`,
//!   else `HTTP_PROXY` (curl skips the upper-case one, a guard for CGI programs, where a
//!   request's `Proxy:` header becomes `HTTP_PROXY`; gitopsd is no CGI program, and operators
//!   commonly set only upper-case names); then `all_proxy`, else `ALL_PROXY`. An empty
//!   variable counts as unset. A proxy given without a scheme is `http://`, one without a port
//!   gets curl's 1080 (443 for an https proxy).
//! - `no_proxy`, else `NO_PROXY`: entries separated by commas or blanks; `*` matches every
//!   host; `example.com`, `.example.com` and `*.example.com` match that domain and every
//!   subdomain (case-insensitive, trailing dots ignored); an IP address matches itself and
//!   `10.0.0.0/8` or `fd00::/8` its network (IPv6 with or without brackets); any entry may end
//!   in `:port` to match that port only (curl has no port form; libgit2 and Go do). Nothing is
//!   bypassed implicitly: `localhost` and `127.0.0.1` go through the proxy unless listed.
//! - Only `http://` and `https://` URLs have proxies here (`ssh://` and `git://` never).

use std::net::IpAddr;

/// The proxy variables for `https://` URLs, in the order they are tried.
const HTTPS_VARIABLES: [&str; 4] = ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
/// The proxy variables for `http://` URLs, in the order they are tried.
const HTTP_VARIABLES: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];
const NO_PROXY_VARIABLES: [&str; 2] = ["no_proxy", "NO_PROXY"];

/// A proxy chosen for a URL. Its URL may carry a user and password: it goes to the HTTP
/// clients only, and everything meant for people ([`Proxy::redacted`], [`Proxy::explain`],
/// `Debug`) leaves them out.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    url: String,
    variable: &'static str,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({} from {})", self.redacted(), self.variable)
    }
}

impl Proxy {
    /// The proxy URL as configured (with `http://` added when it had no scheme), credentials
    /// included: for handing to an HTTP client, never for a message.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The environment variable it came from, e.g. `HTTPS_PROXY`.
    pub fn variable(&self) -> &'static str {
        self.variable
    }

    /// The URL without user and password, for messages and logs. (A port equal to the
    /// scheme's default is left out, as the `url` crate writes URLs.)
    pub fn redacted(&self) -> String {
        let Ok(mut url) = url::Url::parse(&self.url) else {
            // Not a URL at all: nothing in it can be told apart as a password.
            return "<invalid proxy URL>".to_string();
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.as_str().trim_end_matches('/').to_string()
    }

    /// The user and password in the proxy URL, percent-decoded.
    pub fn credentials(&self) -> Option<(String, String)> {
        let url = url::Url::parse(&self.url).ok()?;
        if url.username().is_empty() && url.password().is_none() {
            return None;
        }
        Some((
            percent_decode(url.username()),
            percent_decode(url.password().unwrap_or("")),
        ))
    }

    /// `host:port` of the proxy itself (the port is always in the URL, see
    /// [`normalise_proxy_url`]), for clients that connect to it by hand.
    pub fn address(&self) -> Option<(String, u16)> {
        let target = Target::parse(&self.url)?;
        Some((target.host, target.port))
    }

    /// `text` with the proxy URL's password (raw and decoded) replaced, for errors that come
    /// from a library which may quote the URL it was given.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(&self.url, &self.redacted());
        if let Some((_, password)) = self.credentials() {
            if !password.is_empty() {
                out = out.replace(&password, "<redacted>");
            }
            let raw = url::Url::parse(&self.url)
                .ok()
                .and_then(|u| u.password().map(str::to_string))
                .unwrap_or_default();
            if !raw.is_empty() {
                out = out.replace(&raw, "<redacted>");
            }
        }
        out
    }

    /// `the proxy URL (from VARIABLE) ...`: a failure the proxy caused, for a message.
    pub fn describe(&self, failure: ProxyFailure) -> String {
        format!(
            "the proxy {} (from {}) {failure}",
            self.redacted(),
            self.variable
        )
    }

    /// [`Proxy::describe`] for a failure told in a client's error text ([`failure_in_text`]);
    /// `None` when the text does not point at the proxy.
    pub fn explain(&self, error: &str) -> Option<String> {
        failure_in_text(error).map(|failure| self.describe(failure))
    }
}

/// A failure the proxy caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyFailure {
    #[error("requires authentication (HTTP 407): check the user and password in the proxy URL")]
    RequiresAuth,
    #[error("could not open a tunnel to the server (HTTP {0})")]
    Tunnel(u16),
    #[error("has a host name that could not be resolved")]
    Unresolvable,
    #[error("refused the connection: is it running?")]
    Refused,
}

impl ProxyFailure {
    /// A proxy's refusal of a CONNECT with `status`.
    pub fn tunnel(status: u16) -> ProxyFailure {
        match status {
            407 => ProxyFailure::RequiresAuth,
            other => ProxyFailure::Tunnel(other),
        }
    }
}

/// The failure a proxy caused, from a client's error text: the object-store sources hand
/// over only the sentence their client wrote (the git backends classify typed errors, see
/// `source::git::error`). With a proxy in between, every TCP connection goes to the proxy,
/// so a refused or unresolvable connection is the proxy's; a target the proxy cannot reach
/// shows up as the proxy's HTTP error instead.
pub fn failure_in_text(error: &str) -> Option<ProxyFailure> {
    let lower = error.to_ascii_lowercase();
    let auth = ["status 407", "status: 407", "response 407", "http 407"];
    Some(
        if auth.iter().any(|m| lower.contains(m)) || lower.contains("proxy authentication") {
            ProxyFailure::RequiresAuth
        } else if let Some(status) = tunnel_status(&lower) {
            ProxyFailure::tunnel(status)
        } else if lower.contains("resolve") && lower.contains("proxy") {
            ProxyFailure::Unresolvable
        } else if [
            "connection refused",
            "couldn't connect",
            "could not connect",
            "failed to connect",
        ]
        .iter()
        .any(|m| lower.contains(m))
        {
            ProxyFailure::Refused
        } else {
            return None;
        },
    )
}

/// The status a proxy answered a CONNECT with, from curl's ("CONNECT tunnel failed, response
/// 403") or libgit2's ("proxy returned unexpected status: 403") wording: both report it in
/// their message only. `lower`: the message in lower case.
pub fn tunnel_status(lower: &str) -> Option<u16> {
    const MARKERS: [&str; 2] = [
        "connect tunnel failed, response ",
        "proxy returned unexpected status: ",
    ];
    number_after(lower, &MARKERS)
}

/// The number that follows the first of `markers` found in `lower` (an HTTP status a client
/// wrote into its message).
pub(crate) fn number_after(lower: &str, markers: &[&str]) -> Option<u16> {
    markers.iter().find_map(|marker| {
        let at = lower.find(marker)? + marker.len();
        lower[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// The proxy for a request to `url`, from the process environment (see the module docs).
pub fn for_url(url: &str) -> Option<Proxy> {
    for_url_with(url, &|name| std::env::var(name).ok())
}

/// [`for_url`] with the environment given as a lookup function (for tests).
pub fn for_url_with(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<Proxy> {
    let target = Target::parse(url)?;
    let variables = match target.scheme.as_str() {
        "https" => HTTPS_VARIABLES,
        "http" => HTTP_VARIABLES,
        _ => return None,
    };
    if let Some(no_proxy) = first_set(&NO_PROXY_VARIABLES, env) {
        if bypasses(&no_proxy.1, &target.host, target.port) {
            return None;
        }
    }
    let (variable, value) = first_set(&variables, env)?;
    Some(Proxy {
        url: normalise_proxy_url(value),
        variable,
    })
}

/// A proxy URL every client reads the same way: `http://` when it has no scheme, and the port
/// curl assumes when it has none (1080, or 443 for an https proxy), since libgit2 and reqwest
/// would take the scheme's default (80) instead.
///
/// Edited as text, not through the `url` crate: it leaves a scheme's default port out when it
/// writes a URL (`https://p:443` becomes `https://p/`), and the point here is to write it.
fn normalise_proxy_url(value: String) -> String {
    let url = if value.contains("://") {
        value
    } else {
        format!("http://{value}")
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let has_port = match host.rsplit_once(']') {
        Some((_, after)) => after.starts_with(':'),
        None => host.contains(':'),
    };
    if has_port || host.is_empty() {
        return url;
    }
    let port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        1080
    };
    format!("{scheme}://{authority}:{port}{tail}")
}

/// The first of `names` that is set to something other than blanks.
fn first_set(
    names: &[&'static str],
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(&'static str, String)> {
    names.iter().find_map(|name| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(|v| (*name, v))
    })
}

/// Whether a `NO_PROXY` list exempts `host` (as in a URL, IPv6 with or without brackets)
/// on `port`.
pub fn bypasses(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host_ip = host.parse::<IpAddr>().ok();
    let host_name = host.trim_end_matches('.').to_ascii_lowercase();
    no_proxy
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
        .any(|entry| entry_matches(entry, host_ip, &host_name, port))
}

fn entry_matches(entry: &str, host_ip: Option<IpAddr>, host_name: &str, port: u16) -> bool {
    if entry == "*" {
        return true;
    }
    let (pattern, entry_port) = split_entry_port(entry);
    if entry_port.is_some_and(|p| p != port) {
        return false;
    }
    match host_ip {
        Some(ip) => ip_matches(pattern, ip),
        None => {
            let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
            let domain = pattern
                .strip_prefix("*.")
                .or_else(|| pattern.strip_prefix('.'))
                .unwrap_or(&pattern);
            !domain.is_empty()
                && (host_name == domain
                    || host_name
                        .strip_suffix(domain)
                        .is_some_and(|head| head.ends_with('.')))
        }
    }
}

/// An entry's pattern and its `:port`, if it has one. A bare IPv6 address (several colons,
/// no brackets) has no port.
fn split_entry_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(inner) = entry.strip_prefix('[') {
        return match inner.split_once(']') {
            Some((address, rest)) => (address, rest.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.split_once(':') {
        Some((pattern, port)) if !port.contains(':') => match port.parse() {
            Ok(port) => (pattern, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

/// An IP address or `address/bits` network against an IP host. A network with more bits
/// than its address has never matches, as curl treats `/33` on IPv4.
fn ip_matches(pattern: &str, ip: IpAddr) -> bool {
    if pattern.contains('/') {
        return pattern
            .parse::<ipnet::IpNet>()
            .is_ok_and(|network| network.contains(&ip));
    }
    pattern.parse::<IpAddr>().is_ok_and(|address| address == ip)
}

/// Scheme, host and port of a URL (default ports for http and https).
struct Target {
    scheme: String,
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let parsed = url::Url::parse(url).ok()?;
        // Without brackets, as `NO_PROXY` entries and socket addresses write IPv6.
        let host = match parsed.host()? {
            url::Host::Domain(name) => name.to_string(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        (!host.is_empty()).then(|| Target {
            scheme: parsed.scheme().to_string(),
            host,
            port,
        })
    }
}

/// `text` with `%XX` escapes decoded (invalid UTF-8 replaced).
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// `options` with the proxy settings for an object store whose requests go to `urls` (the
/// endpoint first, then e.g. a token endpoint).
///
/// object_store takes one proxy for all requests plus a list of excluded hosts, matched by
/// reqwest; left without a proxy, reqwest would read the environment itself, upper-case names
/// first. So the proxy is the one [`for_url`] picks for the first of `urls` that has one, and
/// the exclusions name every host of `urls` that [`for_url`] sends directly (so those hosts
/// get exactly this module's answer) and the `NO_PROXY` entries in the forms reqwest
/// understands the same way (for hosts not known in advance, such as a redirect's).
pub fn object_store_options(
    options: object_store::ClientOptions,
    urls: &[&str],
) -> object_store::ClientOptions {
    match object_store_settings(urls, &|name| std::env::var(name).ok()) {
        None => options,
        Some((proxy, excludes)) if excludes.is_empty() => options.with_proxy_url(proxy),
        Some((proxy, excludes)) => options.with_proxy_url(proxy).with_proxy_excludes(excludes),
    }
}

/// The proxy URL and the comma-separated exclusions behind [`object_store_options`]; `None`
/// when the environment names no proxy at all.
fn object_store_settings(
    urls: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(String, String)> {
    let decisions: Vec<(Option<Target>, Option<Proxy>)> = urls
        .iter()
        .map(|url| (Target::parse(url), for_url_with(url, env)))
        .collect();
    // Without any proxy variable reqwest finds nothing either; with one, a proxy must be set
    // even if every known host is exempt, or reqwest would apply its own reading.
    let fallback = || {
        first_set(&HTTPS_VARIABLES, env)
            .or_else(|| first_set(&HTTP_VARIABLES, env))
            .map(|(_, value)| normalise_proxy_url(value))
    };
    let proxy = decisions
        .iter()
        .find_map(|(_, proxy)| proxy.as_ref().map(|p| p.url.clone()))
        .or_else(fallback)?;
    let mut excludes: Vec<String> = decisions
        .iter()
        .filter(|(_, proxy)| proxy.is_none())
        .filter_map(|(target, _)| target.as_ref())
        .map(|target| {
            target
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
        .collect();
    if let Some((_, no_proxy)) = first_set(&NO_PROXY_VARIABLES, env) {
        for entry in no_proxy.split(|c: char| c == ',' || c.is_whitespace()) {
            let (pattern, port) = split_entry_port(entry);
            if entry.is_empty() || port.is_some() {
                continue; // reqwest has no port form: such entries apply to known hosts only
            }
            let pattern = pattern.trim_end_matches('.');
            let pattern = pattern
                .strip_prefix("*.")
                .map_or(pattern.to_string(), |d| format!(".{d}"));
            if !pattern.is_empty() {
                excludes.push(pattern);
            }
        }
    }
    excludes.dedup();
    Some((proxy, excludes.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn chosen(url: &str, pairs: &[(&str, &str)]) -> Option<(String, &'static str)> {
        for_url_with(url, &env(pairs)).map(|p| (p.url().to_string(), p.variable()))
    }

    #[test]
    fn lower_case_wins_and_upper_case_http_proxy_counts() {
        let both = [
            ("https_proxy", "http://low:1"),
            ("HTTPS_PROXY", "http://up:2"),
        ];
        assert_eq!(
            chosen("https://h/r", &both),
            Some(("http://low:1".into(), "https_proxy"))
        );
        assert_eq!(
            chosen("http://h/r", &[("HTTP_PROXY", "up:3")]),
            Some(("http://up:3".into(), "HTTP_PROXY"))
        );
        // http and https do not borrow each other's variable; ALL_PROXY serves both.
        assert_eq!(chosen("https://h/r", &[("HTTP_PROXY", "http://p:1")]), None);
        assert_eq!(chosen("http://h/r", &[("HTTPS_PROXY", "http://p:1")]), None);
        assert_eq!(
            chosen("https://h/r", &[("ALL_PROXY", "http://all:1")]),
            Some(("http://all:1".into(), "ALL_PROXY"))
        );
        assert_eq!(
            chosen(
                "https://h/r",
                &[("https_proxy", " "), ("HTTPS_PROXY", "http://up:2")]
            ),
            Some(("http://up:2".into(), "HTTPS_PROXY"))
        );
        // Without a port, curl's 1080 (443 for an https proxy) is written into the URL.
        assert_eq!(
            chosen("https://h/r", &[("HTTPS_PROXY", "proxy.corp")]),
            Some(("http://proxy.corp:1080".into(), "HTTPS_PROXY"))
        );
        assert_eq!(
            chosen("https://h/r", &[("HTTPS_PROXY", "https://u:p@[fd00::1]/")]),
            Some(("https://u:p@[fd00::1]:443/".into(), "HTTPS_PROXY"))
        );
        assert_eq!(
            chosen("ssh://git@h/r", &[("ALL_PROXY", "http://p:1")]),
            None
        );
        assert_eq!(chosen("git://h/r", &[("ALL_PROXY", "http://p:1")]), None);
    }

    #[test]
    fn no_proxy_forms() {
        let cases: &[(&str, &str, u16, bool)] = &[
            ("*", "anything.example", 443, true),
            ("example.com", "example.com", 443, true),
            ("example.com", "git.example.com", 443, true),
            ("example.com", "notexample.com", 443, false),
            (".example.com", "example.com", 443, true),
            ("*.example.com", "a.b.example.com", 443, true),
            ("EXAMPLE.com.", "git.Example.COM", 443, true),
            ("a.com, example.com", "example.com", 443, true),
            ("a.com example.com", "example.com", 443, true),
            ("127.0.0.1", "127.0.0.1", 80, true),
            ("127.0.0.1", "127.0.0.2", 80, false),
            ("10.0.0.0/8", "10.1.2.3", 80, true),
            ("10.0.0.0/8", "11.1.2.3", 80, false),
            ("localhost", "127.0.0.1", 80, false),
            ("127.0.0.1", "localhost", 80, false),
            ("::1", "[::1]", 80, true),
            ("[::1]", "::1", 80, true),
            ("fd00::/8", "[fd12::1]", 80, true),
            ("127.0.0.1:8080", "127.0.0.1", 8080, true),
            ("127.0.0.1:8080", "127.0.0.1", 8081, false),
            ("[::1]:8080", "::1", 8080, true),
            ("example.com:443", "git.example.com", 443, true),
            ("example.com:443", "git.example.com", 80, false),
            ("", "example.com", 80, false),
        ];
        for (list, host, port, expected) in cases {
            assert_eq!(
                bypasses(list, host, *port),
                *expected,
                "NO_PROXY={list:?} host {host} port {port}"
            );
        }
    }

    #[test]
    fn no_proxy_applies_before_the_proxy_variable() {
        let vars = [
            ("HTTPS_PROXY", "http://p:1"),
            ("no_proxy", "git.local"),
            ("NO_PROXY", "other"),
        ];
        assert_eq!(chosen("https://git.local/r", &vars), None);
        // Lower-case no_proxy hides the upper-case one, as in curl.
        assert!(chosen("https://other/r", &vars).is_some());
        // The URL's default port counts for entries with a port.
        let vars = [("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "h:443")];
        assert_eq!(chosen("https://h/r", &vars), None);
        assert!(chosen("https://h:8443/r", &vars).is_some());
    }

    #[test]
    fn credentials_stay_out_of_messages() {
        let proxy = for_url_with(
            "https://h/r",
            &env(&[("HTTPS_PROXY", "http://us%40er:p%3Ass@proxy:3128/")]),
        )
        .unwrap();
        assert_eq!(proxy.redacted(), "http://proxy:3128");
        assert_eq!(
            proxy.credentials(),
            Some(("us@er".to_string(), "p:ss".to_string()))
        );
        assert_eq!(proxy.address(), Some(("proxy".to_string(), 3128)));
        let scrubbed = proxy.scrub("invalid URL: 'http://us%40er:p%3Ass@proxy:3128/' p:ss");
        assert!(
            !scrubbed.contains("p%3Ass") && !scrubbed.contains("p:ss"),
            "{scrubbed}"
        );
        assert!(!format!("{proxy:?}").contains("p%3Ass"));
        let why = proxy
            .explain("Failed to connect to proxy port 3128: Connection refused")
            .unwrap();
        assert_eq!(
            why,
            "the proxy http://proxy:3128 (from HTTPS_PROXY) refused the connection: is it running?"
        );
        assert!(proxy
            .explain("CONNECT tunnel failed, response 403")
            .unwrap()
            .contains("HTTP 403"));
        assert_eq!(proxy.explain("HTTP status 404"), None);
    }

    #[test]
    fn object_store_exclusions() {
        let vars = [
            ("HTTP_PROXY", "http://p:1"),
            ("NO_PROXY", "127.0.0.1:10000, *.corp, [::1]"),
        ];
        let (proxy, excludes) = object_store_settings(
            &["http://127.0.0.1:10000/acct", "https://login.example/"],
            &env(&vars),
        )
        .unwrap();
        assert_eq!(proxy, "http://p:1");
        // The endpoint is exempt by its port entry; the https token endpoint has no proxy
        // variable, so it is excluded too.
        assert_eq!(excludes, "127.0.0.1,login.example,.corp,::1");
        let (_, excludes) =
            object_store_settings(&["http://127.0.0.1:9000"], &env(&vars[..1])).unwrap();
        assert_eq!(excludes, "");
        assert_eq!(object_store_settings(&["http://h"], &env(&[])), None);
    }
}
