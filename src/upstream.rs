//! The client for the one configured upstream: its own connection pool over hyper's
//! `client::conn`.
//!
//! There is one upstream, so the pool needs no key: HTTP/1.1 connections wait in a
//! last-in-first-out stack (the warmest first, the oldest evicted), and when the upstream
//! negotiates HTTP/2 by ALPN, one shared connection carries every request. An HTTP/1.1
//! connection goes back to the stack when its answer's body has been read to the end, by
//! [`UpstreamBody`], with no task per request; an answer whose reader gives up takes its
//! connection with it. A request that a pooled connection did not send (it was closing)
//! is sent again on another one; a request that may have reached the upstream never is.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use parking_lot::Mutex;
use tower::Service;

use crate::proxy::body::Body;
use crate::tls;

pub mod settings;

pub(crate) use settings::{UpstreamConfig, UpstreamSettings};

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Why forwarding failed, by source: these map to 502 and 504.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out")]
    Timeout,
}

/// How long a pooled HTTP/1.1 connection that has not yet taken up its next request is
/// waited for before another is used. It has delivered its last answer in full, so this
/// is the time its task needs to be scheduled once.
const READY_WAIT: Duration = Duration::from_secs(1);

/// Most times one request is sent again after a reused connection gave it back unsent.
/// Each retry takes another pooled connection (or dials), so this only bounds the loop.
const MAX_RETRIES: usize = 32;

/// The upstream: pooled HTTP/1.1 and HTTP/2 connections to one base URL.
#[derive(Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    host_header: HeaderValue,
    response_timeout: Duration,
    /// Set by [`Upstream::in_process`]: every request goes to this handler, not the pool.
    in_process: Option<InProcessHandler>,
}

struct Pool {
    connector: Connector,
    /// `scheme://authority/`: what the connector dials.
    target: Uri,
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
    /// Idle HTTP/1.1 connections, oldest at the front.
    idle: Mutex<VecDeque<Idle>>,
    /// The shared HTTP/2 connection, once the upstream has negotiated one.
    shared: Mutex<Option<http2::SendRequest<Body>>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Whether the task that closes connections idle past `idle_timeout` runs.
    reaper: AtomicBool,
}

struct Idle {
    tx: http1::SendRequest<Body>,
    since: Instant,
}

impl Idle {
    /// Closed by the upstream, or idle for `timeout` by `now`: not to be used again.
    fn stale(&self, now: Instant, timeout: Duration) -> bool {
        self.tx.is_closed() || now.duration_since(self.since) >= timeout
    }
}

/// A connection, and whether it has been used before.
type CheckedOut = Result<(Conn, bool), ForwardError>;

enum Conn {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Upstream {
    pub fn new(settings: &UpstreamSettings) -> Result<Self, tls::TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = tls::upstream_client_config(settings.ca_file.as_deref())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let scheme = settings
            .url
            .scheme()
            .cloned()
            .unwrap_or(http::uri::Scheme::HTTPS);
        let authority = settings
            .url
            .authority()
            .cloned()
            .unwrap_or_else(|| http::uri::Authority::from_static("localhost"));
        let host_header = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        let target = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_else(|_| Uri::from_static("https://localhost/"));
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new());
        Ok(Self {
            pool: Arc::new(Pool {
                connector,
                target,
                h1: http1::Builder::new(),
                h2,
                idle: Mutex::new(VecDeque::new()),
                shared: Mutex::new(None),
                max_idle: settings.pool_max_idle,
                idle_timeout: settings.pool_idle_timeout,
                reaper: AtomicBool::new(false),
            }),
            scheme,
            authority,
            host_header,
            response_timeout: settings.response_timeout,
            in_process: None,
        })
    }

    /// Send `req` (already cleaned by `proxy::prepare_request`) and wait for the response
    /// head within the response timeout. The body streams afterwards.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<UpstreamBody>, ForwardError> {
        if let Some(handler) = &self.in_process {
            return self.send_in_process(handler.clone(), req).await;
        }
        match tokio::time::timeout(self.response_timeout, self.send_now(req)).await {
            Err(_) => Err(ForwardError::Timeout),
            Ok(result) => result,
        }
    }

    async fn send_now(
        &self,
        mut req: Request<Body>,
    ) -> Result<Response<UpstreamBody>, ForwardError> {
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.version_mut() = Version::HTTP_11;
        let mut retries = 0;
        loop {
            let (conn, reused) = match self.pool.checkout_ready() {
                Some(conn) => (conn, true),
                None => self.pool.checkout_wait().await?,
            };
            let sent = match conn {
                Conn::H1(mut tx) => {
                    // Origin form: the path and query only, and the upstream in `Host`.
                    *req.uri_mut() = Uri::from(path_and_query.clone());
                    req.headers_mut()
                        .insert(header::HOST, self.host_header.clone());
                    match tx.try_send_request(req).await {
                        Ok(resp) => {
                            return Ok(resp.map(|body| UpstreamBody::pooled(body, tx, &self.pool)))
                        }
                        Err(e) => e,
                    }
                }
                Conn::H2(mut tx) => {
                    // HTTP/2 takes the scheme and authority from the URI, as `:scheme` and
                    // `:authority`. No `Host` beside them: nginx, for one, refuses a
                    // request with both as a duplicate host (400).
                    *req.uri_mut() = self.absolute(&path_and_query)?;
                    req.headers_mut().remove(header::HOST);
                    match tx.try_send_request(req).await {
                        Ok(resp) => return Ok(resp.map(UpstreamBody::shared)),
                        Err(e) => {
                            // Going away: later requests dial a new one.
                            self.pool.forget_shared(&tx);
                            e
                        }
                    }
                }
            };
            let mut sent = sent;
            match sent.take_message() {
                // Never written: a reused connection was closing. Try another.
                Some(unsent) if reused && retries < MAX_RETRIES => {
                    retries += 1;
                    req = unsent;
                }
                _ => {
                    return Err(ForwardError::Unreachable(error_chain(&sent.into_error())));
                }
            }
        }
    }

    fn absolute(&self, path_and_query: &http::uri::PathAndQuery) -> Result<Uri, ForwardError> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query.clone())
            .build()
            .map_err(|e| ForwardError::Unreachable(e.to_string()))
    }

    /// Idle HTTP/1.1 connections in the pool now, and whether an HTTP/2 connection is
    /// shared. For tests and diagnostics.
    pub fn pool_state(&self) -> (usize, bool) {
        let idle = self.pool.idle.lock().len();
        let shared = self
            .pool
            .shared
            .lock()
            .as_ref()
            .is_some_and(|tx| !tx.is_closed());
        (idle, shared)
    }
}

// ---------------------------------------------------------------------------------------
// In-process upstream (`otpgate simulate`): a handler called directly, no socket.

/// A handler answering upstream requests in this process instead of over a connection:
/// `otpgate simulate` puts the Entra emulator behind the gateway this way, so the whole
/// request path runs on paused tokio time with nothing waiting on real I/O. It gets the
/// request as [`Upstream::send`] would write it (origin-form target, `Host` set), body read.
pub(crate) type InProcessHandler =
    Arc<dyn Fn(Request<Bytes>) -> BoxFuture<'static, Response<Bytes>> + Send + Sync>;

impl Upstream {
    /// An upstream that hands every request to `handler`: no connection, no pool. The
    /// `Host` header and the response timeout come from `settings`, as for [`Upstream::new`].
    pub(crate) fn in_process(
        settings: &UpstreamSettings,
        handler: InProcessHandler,
    ) -> Result<Self, tls::TlsError> {
        let mut upstream = Self::new(settings)?;
        upstream.in_process = Some(handler);
        Ok(upstream)
    }

    /// Boxed: only `otpgate simulate` takes this path, the future of every other request
    /// holds just the pointer.
    fn send_in_process(
        &self,
        handler: InProcessHandler,
        req: Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<UpstreamBody>, ForwardError>> + Send>> {
        let host_header = self.host_header.clone();
        let timeout = self.response_timeout;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| ForwardError::Unreachable(error_chain(&*e)))?
                .to_bytes();
            let path_and_query = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            parts.uri = Uri::from(path_and_query);
            parts.version = Version::HTTP_11;
            parts.headers.insert(header::HOST, host_header);
            let answer = handler(Request::from_parts(parts, body));
            match tokio::time::timeout(timeout, answer).await {
                Ok(resp) => Ok(resp.map(UpstreamBody::complete)),
                Err(_) => Err(ForwardError::Timeout),
            }
        })
    }
}

impl Pool {
    /// A connection to send on and whether it has been used before, when none is ready
    /// now. Boxed: the future of every request holds only this pointer for the rare path
    /// (waiting, dialling, TLS and HTTP/2 handshakes).
    fn checkout_wait(self: &Arc<Self>) -> Pin<Box<dyn Future<Output = CheckedOut> + Send>> {
        Box::pin(self.clone().checkout_slow())
    }

    /// The shared HTTP/2 connection, or the warmest idle HTTP/1.1 connection that can
    /// take a request now. One still finishing its last answer is put back for
    /// [`Self::checkout_slow`].
    fn checkout_ready(&self) -> Option<Conn> {
        if let Some(tx) = self.live_shared() {
            return Some(Conn::H2(tx));
        }
        let mut idle = self.idle.lock();
        let warmest = self.pop_fresh(&mut idle)?;
        if warmest.tx.is_ready() {
            return Some(Conn::H1(warmest.tx));
        }
        idle.push_back(warmest);
        None
    }

    async fn checkout_slow(self: Arc<Self>) -> CheckedOut {
        loop {
            let warmest = self.pop_fresh(&mut self.idle.lock());
            let Some(Idle { mut tx, .. }) = warmest else {
                break;
            };
            if tx.is_ready() {
                return Ok((Conn::H1(tx), true));
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, tx.ready()).await {
                return Ok((Conn::H1(tx), true));
            }
        }
        self.connect().await.map(|conn| (conn, false))
    }

    /// The warmest idle connection that is not stale; stale ones met on the way are
    /// dropped.
    fn pop_fresh(&self, idle: &mut VecDeque<Idle>) -> Option<Idle> {
        let now = Instant::now();
        std::iter::from_fn(|| idle.pop_back()).find(|i| !i.stale(now, self.idle_timeout))
    }

    fn live_shared(&self) -> Option<http2::SendRequest<Body>> {
        let mut shared = self.shared.lock();
        match shared.as_ref() {
            Some(tx) if !tx.is_closed() => Some(tx.clone()),
            Some(_) => {
                *shared = None;
                None
            }
            None => None,
        }
    }

    /// After a failed send on an HTTP/2 connection that is going away (closed, or no
    /// longer taking requests), stop sharing one: the next request dials a new one.
    fn forget_shared(&self, tx: &http2::SendRequest<Body>) {
        if tx.is_closed() || !tx.is_ready() {
            *self.shared.lock() = None;
        }
    }

    async fn connect(self: &Arc<Self>) -> Result<Conn, ForwardError> {
        self.start_reaper();
        let mut connector = self.connector.clone();
        let io = connector
            .call(self.target.clone())
            .await
            .map_err(|e| ForwardError::Unreachable(error_chain(&*e)))?;
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = self
                .h2
                .handshake(io)
                .await
                .map_err(|e| ForwardError::Unreachable(error_chain(&e)))?;
            drive(conn, "HTTP/2");
            *self.shared.lock() = Some(tx.clone());
            Ok(Conn::H2(tx))
        } else {
            let (tx, conn) = self
                .h1
                .handshake(io)
                .await
                .map_err(|e| ForwardError::Unreachable(error_chain(&e)))?;
            drive(conn, "HTTP/1.1");
            Ok(Conn::H1(tx))
        }
    }

    /// Put a connection whose answer was read to the end back on the stack.
    fn checkin(&self, tx: http1::SendRequest<Body>) {
        if tx.is_closed() || self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock();
        while idle
            .front()
            .is_some_and(|oldest| oldest.stale(now, self.idle_timeout))
        {
            idle.pop_front();
        }
        if idle.len() >= self.max_idle {
            idle.pop_front();
        }
        idle.push_back(Idle { tx, since: now });
    }

    /// Close connections idle past the timeout even when no request comes to notice them:
    /// one task per pool, started with its first connection, ended with the pool.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaper.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool: Weak<Self> = Arc::downgrade(self);
        let period = (self.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                let now = Instant::now();
                let expired: Vec<Idle> = {
                    let mut idle = pool.idle.lock();
                    let keep = idle
                        .iter()
                        .position(|i| !i.stale(now, pool.idle_timeout))
                        .unwrap_or(idle.len());
                    idle.drain(..keep).collect()
                };
                // Dropped outside the lock: each drop closes its connection.
                drop(expired);
            }
        });
    }
}

/// Run a connection's task until it ends; how it ended is only worth a debug line.
fn drive<F>(conn: F, protocol: &'static str)
where
    F: Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, protocol, "upstream connection ended");
        }
    });
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// An upstream answer's body. Over HTTP/1.1 it holds the connection until the body has
/// been read to its end, and then puts it back in the pool; dropped earlier, it closes it.
pub struct UpstreamBody {
    inner: Source,
    back: Option<(http1::SendRequest<Body>, Arc<Pool>)>,
}

enum Source {
    Incoming(Incoming),
    /// An in-process answer ([`Upstream::in_process`]): the whole body until it is read,
    /// `None` once read (or when empty).
    Complete(Option<Bytes>),
}

impl Source {
    fn is_end_stream(&self) -> bool {
        match self {
            Source::Incoming(inner) => inner.is_end_stream(),
            Source::Complete(data) => data.is_none(),
        }
    }
}

impl UpstreamBody {
    fn pooled(inner: Incoming, tx: http1::SendRequest<Body>, pool: &Arc<Pool>) -> Self {
        Self {
            inner: Source::Incoming(inner),
            back: Some((tx, pool.clone())),
        }
    }

    fn shared(inner: Incoming) -> Self {
        Self {
            inner: Source::Incoming(inner),
            back: None,
        }
    }

    fn complete(data: Bytes) -> Self {
        Self {
            inner: Source::Complete((!data.is_empty()).then_some(data)),
            back: None,
        }
    }

    fn release(&mut self) {
        if let Some((tx, pool)) = self.back.take() {
            pool.checkin(tx);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let inner = match &mut this.inner {
            Source::Incoming(inner) => inner,
            Source::Complete(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        let ended = inner.is_end_stream();
        match &polled {
            Poll::Ready(None) => this.release(),
            // A reader may stop at the last frame without asking again.
            Poll::Ready(Some(Ok(_))) if ended => this.release(),
            // The connection broke mid-answer: it is not reused.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Incoming(inner) => inner.size_hint(),
            Source::Complete(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // An empty answer (204, 304, `Content-Length: 0`) is never polled.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("pooled", &self.back.is_some())
            .finish()
    }
}
