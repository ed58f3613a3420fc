//! Mutual TLS for smart HTTP. gix's curl transport cannot present a client certificate, so a
//! source that has one talks HTTP/1.1 through this small client instead: OpenSSL with the
//! certificate, key and CA of the source, one connection per request (`Connection: close`).
//! It also carries plain `http://` through a proxy (absolute-form requests, see `connect`).
//! A response's header block is read first; its body then streams to gix as it arrives
//! (de-chunked, or bounded by its length), so a pack never sits whole in memory. A proxy
//! chosen by [`crate::source::proxy`] is used through a CONNECT tunnel, as curl does for https.
//!
//! Why not gix's reqwest transport, which streams and can present a client identity (through
//! its `configure_client` hook): gix builds one HTTP backend, and curl is the one every other
//! http(s) source uses, so reqwest would be a second backend (and a second TLS stack) for
//! this one mode, with its own proxy handling to align with [`crate::source::proxy`] and no
//! low-speed limit like curl's for a stalled server (see [`crate::source::git::cancel`]).
//! Streaming the body here bounds the memory of a large fetch over mutual TLS just as well.

use super::{Watch, WatchedSocket};
use crate::source::git::error::{
    CertificateRejected, HttpStatus, Kind, ProxyUnreachable, TunnelRefused, Unresolvable,
};
use crate::source::proxy::Proxy;
use gix::protocol::transport::client::blocking_io::http::{
    GetResponse, Http, Options, PostBodyDataKind, PostResponse,
};
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use std::io::{self, BufRead, Cursor, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};

/// Why the client certificate, its key or the CA could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot set up TLS: {0}")]
    Tls(#[source] openssl::error::ErrorStack),
    #[error("the client certificate (tls.crt) is not PEM")]
    CertificateNotPem,
    #[error("the client certificate (tls.crt) is empty")]
    CertificateEmpty,
    #[error("the client certificate (tls.crt) cannot be used")]
    CertificateUnusable,
    #[error("the client certificate chain cannot be used")]
    ChainUnusable,
    #[error("the client key (tls.key) is not a PEM private key")]
    KeyNotPem,
    #[error("the client key (tls.key) does not belong to the client certificate")]
    KeyMismatch,
    #[error("the CA certificate is not PEM")]
    CaNotPem,
    #[error("{0}")]
    CaUnusable(#[source] openssl::error::ErrorStack),
}

impl SetupError {
    pub fn kind(&self) -> Kind {
        match self {
            SetupError::Tls(_) | SetupError::CaNotPem | SetupError::CaUnusable(_) => Kind::Tls,
            _ => Kind::Auth,
        }
    }
}

pub struct Client<'i> {
    /// `None`: plain http (through a proxy).
    connector: Option<Arc<SslConnector>>,
    extra_headers: Vec<String>,
    proxy: Option<Proxy>,
    /// Every connection gives up when the fetch is cancelled or the server stalls.
    watch: Watch<'i>,
}

impl<'i> Client<'i> {
    /// `cert_pem` may hold a chain (leaf first). `ca_pem`, when given, replaces the
    /// system's trust store. `proxy`: the proxy to tunnel through, if any.
    pub fn new(
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: Option<&[u8]>,
        proxy: Option<Proxy>,
        watch: Watch<'i>,
    ) -> Result<Client<'i>, SetupError> {
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(SetupError::Tls)?;
        let chain = X509::stack_from_pem(cert_pem).map_err(|_| SetupError::CertificateNotPem)?;
        let mut chain = chain.into_iter();
        let leaf = chain.next().ok_or(SetupError::CertificateEmpty)?;
        builder
            .set_certificate(&leaf)
            .map_err(|_| SetupError::CertificateUnusable)?;
        for extra in chain {
            builder
                .add_extra_chain_cert(extra)
                .map_err(|_| SetupError::ChainUnusable)?;
        }
        let key = openssl::pkey::PKey::private_key_from_pem(key_pem)
            .map_err(|_| SetupError::KeyNotPem)?;
        builder
            .set_private_key(&key)
            // OpenSSL refuses a key here when it does not match the certificate.
            .map_err(|_| SetupError::KeyMismatch)?;
        builder
            .check_private_key()
            .map_err(|_| SetupError::KeyMismatch)?;
        if let Some(ca) = ca_pem {
            let mut store = X509StoreBuilder::new().map_err(SetupError::CaUnusable)?;
            for cert in X509::stack_from_pem(ca).map_err(|_| SetupError::CaNotPem)? {
                store.add_cert(cert).map_err(SetupError::CaUnusable)?;
            }
            builder
                .set_verify_cert_store(store.build())
                .map_err(SetupError::CaUnusable)?;
        }
        Ok(Client {
            connector: Some(Arc::new(builder.build())),
            extra_headers: Vec::new(),
            proxy,
            watch,
        })
    }

    /// Plain `http://` through `proxy`: no TLS, one connection to the proxy per request.
    pub fn plain(proxy: Option<Proxy>, watch: Watch<'i>) -> Client<'i> {
        Client {
            connector: None,
            extra_headers: Vec::new(),
            proxy,
            watch,
        }
    }

    fn pending(
        &self,
        method: &'static str,
        url: &str,
        headers: Vec<String>,
    ) -> Arc<Mutex<Pending<'i>>> {
        let mut all = headers;
        all.extend(self.extra_headers.iter().cloned());
        Arc::new(Mutex::new(Pending {
            connector: self.connector.clone(),
            proxy: self.proxy.clone(),
            method,
            url: url.to_string(),
            headers: all,
            body: Arc::new(Mutex::new(Vec::new())),
            result: None,
            watch: self.watch,
        }))
    }
}

impl<'i> Http for Client<'i> {
    type Headers = Lazy<'i>;
    type ResponseBody = Lazy<'i>;
    type PostBody = BodyWriter;

    fn get(
        &mut self,
        url: &str,
        _base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix::error::Result<GetResponse<Lazy<'i>, Lazy<'i>>> {
        let headers = headers
            .into_iter()
            .map(|h| h.as_ref().to_string())
            .collect();
        let pending = self.pending("GET", url, headers);
        // Fail here, as gix expects a GET to report the status itself.
        pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .run()
            .map_err(gix::error::Error::from_error)?;
        Ok(GetResponse {
            headers: Lazy::new(pending.clone(), Part::Headers),
            body: Lazy::new(pending, Part::Body),
        })
    }

    fn post(
        &mut self,
        url: &str,
        _base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        _body: PostBodyDataKind,
    ) -> gix::error::Result<PostResponse<Lazy<'i>, Lazy<'i>, BodyWriter>> {
        let headers = headers
            .into_iter()
            .map(|h| h.as_ref().to_string())
            .collect();
        let pending = self.pending("POST", url, headers);
        let body = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .body
            .clone();
        Ok(PostResponse {
            post_body: BodyWriter(body),
            headers: Lazy::new(pending.clone(), Part::Headers),
            body: Lazy::new(pending, Part::Body),
        })
    }

    fn configure(&mut self, config: &dyn std::any::Any) -> gix::error::Result<()> {
        if let Some(options) = config.downcast_ref::<Options>() {
            self.extra_headers = options.extra_headers.clone();
        }
        Ok(())
    }
}

/// The request body, collected until the response is first read.
pub struct BodyWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BodyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A response body as it arrives from the connection.
type BodyReader<'i> = Box<dyn BufRead + Send + 'i>;

/// A response's header block and body (each taken by the part that reads it), or the
/// failure, shared: both parts report it.
type Exchange<'i> = Result<(Vec<u8>, Option<BodyReader<'i>>), Arc<io::Error>>;

/// One failed exchange, reported again by each part that reads it; its `source()` is the
/// original error, so that its typed payload (a status, say) can still be found.
#[derive(Debug)]
struct Shared(Arc<io::Error>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

struct Pending<'i> {
    watch: Watch<'i>,
    connector: Option<Arc<SslConnector>>,
    proxy: Option<Proxy>,
    method: &'static str,
    url: String,
    headers: Vec<String>,
    body: Arc<Mutex<Vec<u8>>>,
    result: Option<Exchange<'i>>,
}

impl<'i> Pending<'i> {
    fn run(&mut self) -> io::Result<()> {
        if self.result.is_none() {
            let body = std::mem::take(&mut *self.body.lock().unwrap_or_else(|p| p.into_inner()));
            let body = (self.method == "POST").then_some(body);
            self.result = Some(
                exchange(
                    self.connector.as_deref(),
                    self.proxy.as_ref(),
                    self.method,
                    &self.url,
                    &self.headers,
                    body,
                    self.watch,
                )
                .map(|(headers, body)| (headers, Some(body)))
                .map_err(Arc::new),
            );
        }
        match self.result.as_ref().expect("set above") {
            Ok(_) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), Shared(e.clone()))),
        }
    }
}

#[derive(Clone, Copy)]
pub enum Part {
    Headers,
    Body,
}

/// A response part, fetched on first read.
pub struct Lazy<'i> {
    pending: Arc<Mutex<Pending<'i>>>,
    part: Part,
    data: Option<Loaded<'i>>,
}

/// What a [`Lazy`] part reads from once the response arrived.
enum Loaded<'i> {
    Headers(Cursor<Vec<u8>>),
    Body(BodyReader<'i>),
}

impl<'i> Lazy<'i> {
    fn new(pending: Arc<Mutex<Pending<'i>>>, part: Part) -> Lazy<'i> {
        Lazy {
            pending,
            part,
            data: None,
        }
    }

    fn load(&mut self) -> io::Result<&mut (dyn BufRead + Send + 'i)> {
        let data = match self.data.take() {
            Some(data) => data,
            None => {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                pending.run()?;
                let Some(Ok((headers, body))) = pending.result.as_mut() else {
                    return Err(io::Error::other("the HTTP exchange did not happen"));
                };
                match self.part {
                    Part::Headers => Loaded::Headers(Cursor::new(std::mem::take(headers))),
                    // Read once: a second reader of the body gets nothing.
                    Part::Body => Loaded::Body(
                        body.take()
                            .unwrap_or_else(|| Box::new(Cursor::new(Vec::new()))),
                    ),
                }
            }
        };
        Ok(match self.data.insert(data) {
            Loaded::Headers(cursor) => cursor,
            Loaded::Body(reader) => reader.as_mut(),
        })
    }
}

impl Read for Lazy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.load()?.read(buf)
    }
}

impl BufRead for Lazy<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.load()?.fill_buf()
    }
    fn consume(&mut self, amount: usize) {
        match self.data.as_mut() {
            Some(Loaded::Headers(cursor)) => cursor.consume(amount),
            Some(Loaded::Body(reader)) => reader.consume(amount),
            None => {}
        }
    }
}

/// One request over a new TLS connection; the response's header block (one header per
/// line) and its body as a reader. A status other than 2xx is an error naming the status.
fn exchange<'i>(
    connector: Option<&SslConnector>,
    proxy: Option<&Proxy>,
    method: &str,
    url: &str,
    headers: &[String],
    body: Option<Vec<u8>>,
    watch: Watch<'i>,
) -> io::Result<(Vec<u8>, BodyReader<'i>)> {
    let (rest, default_port) = match (url.strip_prefix("https://"), connector) {
        (Some(rest), Some(_)) => (rest, 443),
        _ => match (url.strip_prefix("http://"), proxy) {
            (Some(rest), Some(_)) if connector.is_none() => (rest, 80),
            _ => {
                return Err(io::Error::other(
                    "this client speaks https with a client certificate, or http through \
                     a proxy",
                ))
            }
        },
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let end = stripped.find(']').unwrap_or(stripped.len());
        let port = stripped[end..]
            .strip_prefix("]:")
            .and_then(|p| p.parse().ok());
        (&stripped[..end], port.unwrap_or(default_port))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().unwrap_or(default_port)),
            None => (authority, default_port),
        }
    };
    let (mut stream, mut request): (Box<dyn ReadWrite + Send + 'i>, String) =
        match (connector, proxy) {
            (Some(connector), proxy) => {
                let tcp = match proxy {
                    Some(proxy) => tunnel(proxy, host, port, watch)?,
                    None => connect(host, port, watch)?,
                };
                let tls = connector.connect(host, tcp).map_err(|e| {
                    // A failed verification is OpenSSL's verify result, not the handshake's
                    // text: the typed form of "certificate verify failed".
                    let rejected = match &e {
                        openssl::ssl::HandshakeError::Failure(mid) => {
                            mid.ssl().verify_result() != openssl::x509::X509VerifyResult::OK
                        }
                        _ => false,
                    };
                    if rejected {
                        io::Error::other(CertificateRejected(e.to_string()))
                    } else {
                        io::Error::other(format!("TLS handshake failed: {e}"))
                    }
                })?;
                (Box::new(tls), format!("{method} {path} HTTP/1.1\r\n"))
            }
            (None, Some(proxy)) => {
                // Plain http through the proxy: the absolute URL in the request line tells it
                // where to forward.
                let tcp = connect_proxy(proxy, watch)?;
                let mut line = format!("{method} http://{authority}{path} HTTP/1.1\r\n");
                if let Some(value) = proxy_authorization(proxy) {
                    line.push_str(&format!("Proxy-Authorization: {value}\r\n"));
                }
                (Box::new(tcp), line)
            }
            (None, None) => unreachable!("checked above"),
        };
    request.push_str(&format!("Host: {authority}\r\nConnection: close\r\n"));
    for header in headers {
        request.push_str(header.trim());
        request.push_str("\r\n");
    }
    if let Some(body) = &body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    if let Some(body) = &body {
        stream.write_all(body)?;
    }
    stream.flush()?;
    let mut reader = io::BufReader::with_capacity(64 * 1024, stream);
    let mut response = Vec::new();
    while !response.ends_with(b"\r\n\r\n") {
        if response.len() > 64 * 1024 {
            return Err(io::Error::other("the HTTP response header is too long"));
        }
        if reader.read_until(b'\n', &mut response)? == 0 {
            return Err(io::Error::other("incomplete HTTP response"));
        }
    }
    let split = response.len() - 4;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("malformed HTTP status line"))?;
    if !(200..300).contains(&status) {
        let kind = if status == 401 || status == 403 {
            io::ErrorKind::PermissionDenied
        } else {
            io::ErrorKind::Other
        };
        return Err(io::Error::new(kind, HttpStatus(status)));
    }
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let body: BodyReader<'i> =
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            Box::new(io::BufReader::new(Chunked {
                inner: reader,
                left: 0,
                done: false,
            }))
        } else if let Some(length) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
            Box::new(io::BufReader::new(Exact {
                inner: reader,
                left: length,
            }))
        } else {
            Box::new(io::BufReader::new(UntilClose {
                inner: reader,
                got_any: false,
            }))
        };
    let mut header_block = Vec::new();
    for line in lines {
        header_block.extend_from_slice(line.as_bytes());
        header_block.push(b'\n');
    }
    Ok((header_block, body))
}

/// A TCP connection to `host:port` that gives up when `watch` says so.
fn connect<'i>(host: &str, port: u16, watch: Watch<'i>) -> io::Result<WatchedSocket<'i>> {
    let unresolvable = || io::Error::other(Unresolvable(host.to_string()));
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|_| unresolvable())?
        .next()
        .ok_or_else(unresolvable)?;
    let tcp = TcpStream::connect_timeout(&address, super::CONNECT_LIMIT)?;
    WatchedSocket::new(tcp, watch)
}

/// Either kind of connection a request goes over.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the HTTP response was cut short",
    )
}

/// A body of a known length: exactly that many bytes, an error when fewer arrive.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(cut_short());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A body that ends when the server closes the connection. Servers often close without a TLS
/// close_notify, which OpenSSL reports as an error: once data has arrived, that is the end.
/// A cancelled or stalled exchange stays a failure, however much had arrived.
struct UntilClose<R> {
    inner: R,
    got_any: bool,
}

impl<R: Read> Read for UntilClose<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.got_any |= n > 0;
                Ok(n)
            }
            Err(e) if self.got_any && e.kind() != io::ErrorKind::TimedOut => Ok(0),
            Err(e) => Err(e),
        }
    }
}

/// A `Transfer-Encoding: chunked` body, decoded as it is read.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: u64,
    /// The last (empty) chunk was read.
    done: bool,
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut line = Vec::new();
            if self.inner.read_until(b'\n', &mut line)? == 0 || !line.ends_with(b"\n") {
                return Err(cut_short());
            }
            let text = String::from_utf8_lossy(&line);
            let size_text = text.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::other("malformed chunked HTTP response"))?;
            if size == 0 {
                // Trailers, if any, are not needed: the connection closes after them.
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(cut_short());
        }
        self.left -= n as u64;
        if self.left == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf).map_err(|_| cut_short())?;
        }
        Ok(n)
    }
}

/// A TCP connection to the proxy itself. Only http:// proxies are spoken to (TLS to the
/// proxy, or SOCKS, would need more than this small client has).
fn connect_proxy<'i>(proxy: &Proxy, watch: Watch<'i>) -> io::Result<WatchedSocket<'i>> {
    if !proxy.url().to_ascii_lowercase().starts_with("http://") {
        return Err(io::Error::other(format!(
            "the proxy {} (from {}) is not an http:// proxy, the only kind gitopsd's own \
             HTTP client (mutual TLS, or plain http through a proxy) can use",
            proxy.redacted(),
            proxy.variable()
        )));
    }
    let (host, port) = proxy
        .address()
        .ok_or_else(|| io::Error::other(format!("invalid proxy URL {}", proxy.redacted())))?;
    connect(&host, port, watch).map_err(|source| {
        io::Error::new(
            source.kind(),
            ProxyUnreachable {
                proxy: proxy.redacted(),
                source,
            },
        )
    })
}

/// `Basic <base64>` from the user and password in the proxy URL, sent with the first
/// request (a 407 challenge would cost a round trip and a new connection).
fn proxy_authorization(proxy: &Proxy) -> Option<String> {
    let (user, password) = proxy.credentials()?;
    let pair = openssl::base64::encode_block(format!("{user}:{password}").as_bytes());
    Some(format!("Basic {pair}"))
}

/// A connection to `host:port` through the proxy's CONNECT tunnel. TLS (with the client
/// certificate) then runs end to end inside it: the proxy sees the host and port only.
fn tunnel<'i>(
    proxy: &Proxy,
    host: &str,
    port: u16,
    watch: Watch<'i>,
) -> io::Result<WatchedSocket<'i>> {
    let mut tcp = connect_proxy(proxy, watch)?;
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(value) = proxy_authorization(proxy) {
        request.push_str(&format!("Proxy-Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    tcp.write_all(request.as_bytes())?;
    // Byte by byte up to the blank line: anything after it belongs to the TLS session.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(io::Error::other(
                "the proxy's answer to CONNECT is too long",
            ));
        }
        if tcp.read(&mut byte)? == 0 {
            return Err(io::Error::other(
                "the proxy closed the connection before answering the CONNECT",
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("the proxy's answer to CONNECT is not HTTP"))?;
    if !(200..300).contains(&status) {
        return Err(io::Error::other(TunnelRefused(status)));
    }
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut reader: impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 3];
        loop {
            match reader.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn bodies_are_decoded_as_they_stream() {
        let chunked = |data: &'static [u8]| Chunked {
            inner: io::BufReader::new(data),
            left: 0,
            done: false,
        };
        assert_eq!(
            all(chunked(b"4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\n\r\nignored")).unwrap(),
            b"Wikipedia"
        );
        assert!(all(chunked(b"4\r\nWi")).is_err(), "cut short");
        assert!(all(chunked(b"zz\r\n")).is_err(), "malformed size");
        let exact = |data: &'static [u8], left| Exact { inner: data, left };
        assert_eq!(all(exact(b"hello, and more", 5)).unwrap(), b"hello");
        assert!(all(exact(b"hel", 5)).is_err(), "cut short");
        // A connection closed without close_notify ends the body once data has arrived.
        struct Abrupt(Option<&'static [u8]>);
        impl Read for Abrupt {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.take() {
                    Some(data) => {
                        buf[..data.len()].copy_from_slice(data);
                        Ok(data.len())
                    }
                    None => Err(io::Error::other("unexpected EOF")),
                }
            }
        }
        let until = |inner| UntilClose {
            inner,
            got_any: false,
        };
        assert_eq!(all(until(Abrupt(Some(b"ab")))).unwrap(), b"ab");
        assert!(all(until(Abrupt(None))).is_err(), "nothing arrived");
    }
}
