//! gix's curl transport, as gitopsd configures it: the proxy decided by
//! [`crate::source::proxy`], stall and connect limits, and the ref advertisement filtered by
//! [`super::protocol::WithoutDeepenRelative`].

use super::protocol::WithoutDeepenRelative;
use crate::source::git::cancel::{CONNECT_LIMIT, STALL_LIMIT};
use crate::source::git::error::{GitError, Problem};
use gix::protocol::transport::client::blocking_io::http as transport_http;

/// gix's curl client with [`WithoutDeepenRelative`] on its answers to `GET .../info/refs`,
/// where a protocol v0 server lists its capabilities; everything else passes through.
pub(super) struct FilteredCurl(pub(super) transport_http::curl::Curl);

type CurlHttp = transport_http::curl::Curl;

impl transport_http::Http for FilteredCurl {
    type Headers = <CurlHttp as transport_http::Http>::Headers;
    type ResponseBody =
        std::io::BufReader<WithoutDeepenRelative<<CurlHttp as transport_http::Http>::ResponseBody>>;
    type PostBody = <CurlHttp as transport_http::Http>::PostBody;

    fn get(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix::error::Result<transport_http::GetResponse<Self::Headers, Self::ResponseBody>> {
        let response = self.0.get(url, base_url, headers)?;
        Ok(transport_http::GetResponse {
            headers: response.headers,
            body: std::io::BufReader::new(WithoutDeepenRelative::new(response.body)),
        })
    }

    fn post(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        body: transport_http::PostBodyDataKind,
    ) -> gix::error::Result<
        transport_http::PostResponse<Self::Headers, Self::ResponseBody, Self::PostBody>,
    > {
        let response = self.0.post(url, base_url, headers, body)?;
        Ok(transport_http::PostResponse {
            post_body: response.post_body,
            headers: response.headers,
            body: std::io::BufReader::new(WithoutDeepenRelative::passthrough(response.body)),
        })
    }

    fn configure(&mut self, config: &dyn std::any::Any) -> gix::error::Result<()> {
        self.0.configure(config)
    }
}

pub(super) fn is_http(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The curl transport's options for `url`: what the cache repository's configuration says
/// (the bearer header, the CA file), with the proxy decided by [`crate::source::proxy`].
///
/// Left alone, gix would take the proxy from `http.proxy` in the machine's git configuration
/// or from its own reading of the environment (where `http_proxy` also serves https URLs),
/// and curl would then apply `NO_PROXY` its own way. So the proxy is always set explicitly:
/// the chosen URL, or an empty one, which makes curl use none and skip the environment; and
/// curl's own `NO_PROXY` is an empty list, as the rule has applied it already. The proxy
/// URL's credentials reach curl inside the URL (gix's proxy authentication would ask the
/// machine's git credential helpers, which a daemon must never do), as Basic from the first
/// request: curl's default probes without them first, and a proxy that closes the connection
/// after its 407 (tinyproxy does) then fails the CONNECT.
pub(super) fn http_options(
    repo: &gix::Repository,
    url: &str,
    proxy: Option<&crate::source::proxy::Proxy>,
) -> Result<Box<dyn std::any::Any>, GitError> {
    use gix::protocol::transport::client::blocking_io::http::Options;
    let configured = repo.transport_options(url, None).map_err(|e| {
        let detail = crate::error::chain_lines(&e);
        let detail = proxy.map_or(detail.clone(), |p| p.scrub(&detail));
        GitError::new(url, Problem::HttpSettings(detail))
    })?;
    let mut options = configured
        .and_then(|o| o.downcast::<Options>().ok())
        .map(|o| *o)
        .unwrap_or_default();
    options.proxy = Some(proxy.map(|p| p.url().to_string()).unwrap_or_default());
    options.no_proxy = Some(String::new());
    options.proxy_authenticate = None;
    // A server that stops sending must not hold the fetch thread: curl drops a transfer
    // slower than a byte a second for the stall limit (see `super::cancel`).
    options.low_speed_limit_bytes_per_second = 1;
    options.low_speed_time_seconds = STALL_LIMIT.as_secs();
    options.connect_timeout = Some(CONNECT_LIMIT);
    if proxy.is_some_and(|p| p.credentials().is_some()) {
        use gix::protocol::transport::client::blocking_io::http::options::ProxyAuthMethod;
        options.proxy_auth_method = ProxyAuthMethod::Basic;
    }
    Ok(Box::new(options))
}
