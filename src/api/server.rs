//! The API's connection handling: HTTP/1 served with hyper directly (rather than
//! `axum::serve`, which sets no timeouts) so that no client can hold the server's resources
//! indefinitely:
//!
//! - **connection cap**: at most `max_connections` connections are served at once. The accept
//!   loop waits for a free slot before it accepts, so excess connections wait in the kernel's
//!   listen backlog (costing the daemon no file descriptor) and are served as slots free up.
//! - **header timeout**: a connection must deliver a request's complete headers within
//!   `read_timeout` of starting it, and an idle keep-alive connection must start its next
//!   request within the same time; otherwise hyper closes it. Half-sent requests therefore
//!   give their slot back after `read_timeout`.
//! - **body timeout and limit**: [`read_body`] reads the whole body (the API takes none worth
//!   more than a few bytes) within `read_timeout`, else answers 408 and closes the connection.
//! - **write stall timeout**: a client that stops reading a response (an artifact download)
//!   for `read_timeout` is disconnected ([`StallTimeout`]), or it could keep its slot forever.

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The largest request body accepted. No endpoint reads a body; this only leaves room for
/// clients that send a small one anyway (`curl -d`).
pub const MAX_BODY: usize = 64 * 1024;

/// Connection slots when `server.maxConnections` is not set and the open-file limit is
/// unknown or unlimited.
const MAX_DEFAULT_CONNECTIONS: usize = 1024;

/// Half the process's soft open-file limit, at most [`MAX_DEFAULT_CONNECTIONS`]: the other
/// half stays for git, artifacts and kustomize, so a flood of connections can never starve
/// the syncs of descriptors (nor the listener itself, which then could not accept at all).
pub fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and has no other effect.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok || limit.rlim_cur == libc::RLIM_INFINITY {
        return MAX_DEFAULT_CONNECTIONS;
    }
    usize::try_from(limit.rlim_cur / 2)
        .unwrap_or(MAX_DEFAULT_CONNECTIONS)
        .clamp(1, MAX_DEFAULT_CONNECTIONS)
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections finish
/// their current request (the caller bounds how long it waits).
pub async fn serve(
    router: Router,
    listener: TcpListener,
    max_connections: usize,
    read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Bounded so that the final `acquire_many` (a u32) can take every slot back.
    let max_connections = max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(max_connections));
    let stop = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(read_timeout)
        // hyper's default (~400 KiB) per connection is far more than any request here needs.
        .max_buf_size(64 * 1024);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                // Only a closed semaphore fails, and this one is never closed.
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Typically EMFILE/ENFILE, or a connection reset before it was accepted;
                    // all pass. The pause keeps a full descriptor table from spinning the loop.
                    tracing::warn!(error = %err, "cannot accept an API connection");
                    drop(slot);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let io = TokioIo::new(StallTimeout::new(stream, read_timeout));
        let connection = builder.serve_connection(io, service);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut connection = pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        // Header timeouts, stalls, resets, malformed requests: the client's
                        // problem, hence only debug. hyper's message leaves out the cause.
                        let message = crate::error::chain(&err);
                        tracing::debug!(error = %message, "API connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(slot);
        });
    }
    stop.cancel();
    // Every connection holds a slot until it ends: all slots back means all connections done.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    Ok(())
}

/// A connection that fails its writes once the peer has accepted no data for `limit`: the
/// clock starts when a write or flush cannot proceed and stops at any progress, so a slow
/// but steady reader is fine.
struct StallTimeout<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallTimeout<S> {
    fn new(inner: S, limit: Duration) -> Self {
        StallTimeout {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Called when a write is pending: ready with an error once the stall lasted `limit`.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading the response",
            )),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Passes `result` on, minding the stall clock.
    fn track<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        match result {
            Poll::Pending => self.poll_stall(cx).map(Err),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallTimeout<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallTimeout<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.track(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.track(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.track(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.track(cx, result)
    }
}

/// Middleware: reads the request body within `read_timeout` and at most [`MAX_BODY`] bytes,
/// then hands the request on with the body in memory. A body that is late or too large is
/// answered at once and the connection closed (what is left of the body is never read).
pub async fn read_body(
    State(read_timeout): State<Duration>,
    request: Request,
    next: Next,
) -> Response {
    let limits = BodyLimits {
        read_timeout,
        max_body: MAX_BODY,
    };
    read_body_within(State(limits), request, next).await
}

/// How long a body may take to arrive, and how large it may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub read_timeout: Duration,
    pub max_body: usize,
}

/// [`read_body`] with a body limit of the caller's (the webhook receivers take larger ones).
pub async fn read_body_within(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let BodyLimits {
        read_timeout,
        max_body,
    } = limits;
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(read_timeout, collect(body, max_body)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(BodyError::TooLarge)) => closing(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request bodies are limited to {max_body} bytes\n"),
        ),
        Ok(Err(BodyError::Read)) => closing(
            StatusCode::BAD_REQUEST,
            "cannot read the request body\n".to_string(),
        ),
        Err(_) => closing(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}\n",
                crate::syntax::duration::format(read_timeout)
            ),
        ),
    }
}

enum BodyError {
    TooLarge,
    Read,
}

async fn collect(mut body: Body, max_body: usize) -> Result<Bytes, BodyError> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    // A declared Content-Length over the limit is refused before reading a byte.
    if usize::try_from(body.size_hint().lower()).map_or(true, |n| n > max_body) {
        return Err(BodyError::TooLarge);
    }
    let mut data = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|_| BodyError::Read)?;
        if let Ok(chunk) = frame.into_data() {
            if data.len() + chunk.len() > max_body {
                return Err(BodyError::TooLarge);
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(Bytes::from(data))
}

/// An error response after which hyper closes the connection.
fn closing(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONNECTION, HeaderValue::from_static("close"))],
        body,
    )
        .into_response()
}
