//! Listeners: the public one (HTTP/1.1 and HTTP/2, optional TLS with ALPN) with its limits,
//! the admin one, and graceful drain on shutdown.
//!
//! Limits: a connection cap (excess waits in the accept backlog), a header read timeout
//! (also bounding the TLS handshake), an idle timeout, a header size cap, and the in-flight
//! cap the gateway applies per request.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod settings;

use crate::admin::{self, Health, Phase};
use arc_swap::ArcSwap;

use crate::config::{Settings, StoreBackend};
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::metrics::StoreReport;
use crate::proxy::ConnInfo;
use crate::store::fallback::FallbackStore;
use crate::store::redis::{RedisSettings, RedisStore};
use crate::store::{MemoryStore, Store};
use crate::tls::{self, CertResolver};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Build(#[from] crate::gateway::BuildError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// A bound gateway, ready to serve.
pub struct Server {
    public: TcpListener,
    admin: TcpListener,
    gateway: Arc<ArcSwap<Gateway>>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    tls: Option<(TlsAcceptor, Arc<CertResolver>)>,
    settings: Arc<Settings>,
    /// The in-process store, when it is the store (not a fallback).
    memory: Option<MemoryStore>,
    /// `POST /demo/reset` on the admin port, for `otpgate demo` only.
    reset: Option<admin::ResetHook>,
}

impl Server {
    /// Build the runtime objects from settings and bind both listeners.
    pub async fn bind(settings: Settings) -> Result<Self, StartError> {
        for w in settings.warnings() {
            tracing::warn!(key = %w.key, "{}", w.message);
        }
        let settings = Arc::new(settings);
        let metrics = Metrics::new();
        let health = Health::new();
        let (store, memory) = build_store(&settings, &health, &metrics).await?;
        let gateway = Arc::new(ArcSwap::from_pointee(Gateway::with_store(
            settings.clone(),
            metrics.clone(),
            store,
        )?));
        let tls = match &settings.tls {
            Some(t) => {
                let resolver = Arc::new(CertResolver::new(tls::load_certified_key(
                    &t.cert_file,
                    &t.key_file,
                )?));
                let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(resolver.clone())?));
                Some((acceptor, resolver))
            }
            None => None,
        };
        let public = bind(settings.server.listen).await?;
        let admin = bind(settings.admin_listen).await?;
        Ok(Self {
            public,
            admin,
            gateway,
            health,
            metrics,
            tls,
            settings,
            memory,
            reset: None,
        })
    }

    /// The in-process store, when `store.backend = "memory"`.
    pub fn memory_store(&self) -> Option<MemoryStore> {
        self.memory.clone()
    }

    /// Answer `POST /demo/reset` on the admin port by running `hook` (the demo's clean
    /// slate; nothing else sets one).
    pub(crate) fn with_reset(mut self, hook: admin::ResetHook) -> Self {
        self.reset = Some(hook);
        self
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.public.local_addr()
    }

    pub fn admin_addr(&self) -> io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The certificate resolver, for swapping certificates at run time.
    pub(crate) fn cert_resolver(&self) -> Option<Arc<CertResolver>> {
        self.tls.as_ref().map(|(_, r)| r.clone())
    }

    /// A handle that swaps in new settings while the server runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            live: self.gateway.clone(),
            cert: self.cert_resolver(),
            metrics: self.metrics.clone(),
        }
    }

    /// Serve until `shutdown` resolves, then stop accepting, let in-flight requests finish
    /// within `server.shutdown_grace`, and return.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Server {
            public,
            admin,
            gateway,
            health,
            metrics,
            tls,
            settings,
            memory: _,
            reset,
        } = self;
        let admin_addr = admin
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let admin_stop = CancellationToken::new();
        let admin_task = tokio::spawn(admin::serve(
            admin,
            health.clone(),
            metrics.clone(),
            reset,
            gateway.clone(),
            admin_stop.clone().cancelled_owned(),
        ));

        let builder = Arc::new(http_builder(&settings));
        let conn_limit = Arc::new(Semaphore::new(settings.server.max_connections));
        let stop = CancellationToken::new();
        let conns = TaskTracker::new();
        let limits = ConnLimits {
            header_read_timeout: settings.server.header_read_timeout,
            idle_timeout: settings.server.idle_timeout,
        };
        health.set(Phase::Ready);
        tracing::info!(
            listen = %public.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            admin = %admin_addr,
            tls = tls.is_some(),
            upstream = %settings.upstream.url,
            "otpgate serving"
        );

        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = conn_limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = public.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let conn = Connection {
                peer,
                gateway: gateway.clone(),
                builder: builder.clone(),
                stop: stop.clone(),
                limits,
                metrics: metrics.clone(),
            };
            let acceptor = tls.as_ref().map(|(a, _)| a.clone());
            conns.spawn(async move {
                conn.run(stream, acceptor).await;
                drop(permit);
            });
        }

        // Drain: refuse new connections at once, let accepted requests finish.
        health.set(Phase::Draining);
        drop(public);
        stop.cancel();
        conns.close();
        let grace = settings.server.shutdown_grace;
        let deadline = tokio::time::Instant::now() + grace;
        if tokio::time::timeout_at(deadline, conns.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?grace, "drain deadline passed with connections open");
        } else {
            tracing::info!("drained");
        }
        // Sends whose clients left still run; their audit lines must reach the log.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !gateway.load_full().settle(left).await {
            tracing::warn!("drain deadline passed with sends or audit lines pending");
        }
        admin_stop.cancel();
        let _ = admin_task.await;
    }
}

/// Swaps in new settings at run time: routes, rules, providers, monitor flags, CORS and
/// the TLS certificate. Listener addresses, TLS on/off, connection and in-flight limits,
/// the store backend and key secret, and the audit sink need a restart.
#[derive(Clone)]
pub struct Reloader {
    live: Arc<ArcSwap<Gateway>>,
    cert: Option<Arc<CertResolver>>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// Read, validate and apply the config at `path`. On any problem the running config
    /// stays and every problem is logged. Returns whether the new config is in use.
    pub fn reload_from(&self, path: Option<&std::path::Path>) -> bool {
        let result = match crate::config::load(path) {
            Ok((_, settings)) => self.apply(settings),
            Err(problems) => Err(problems
                .0
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect()),
        };
        match result {
            Ok(restart) => {
                self.metrics.config_reload("ok");
                for key in restart {
                    tracing::warn!(
                        key,
                        "changed, but takes effect only after a restart; the running value stays"
                    );
                }
                tracing::info!("configuration reloaded");
                true
            }
            Err(problems) => {
                self.metrics.config_reload("rejected");
                for p in &problems {
                    tracing::error!(problem = %p, "configuration rejected; the running one stays");
                }
                false
            }
        }
    }

    /// Apply validated settings. Returns the restart-only keys whose new value is not in
    /// use (see [`restart_only_changes`]).
    pub(crate) fn apply(&self, settings: Settings) -> Result<Vec<&'static str>, Vec<String>> {
        let current = self.live.load_full();
        let restart = restart_only_changes(current.settings(), &settings);
        let key = match (&settings.tls, &self.cert) {
            (Some(t), Some(_)) => Some(
                tls::load_certified_key(&t.cert_file, &t.key_file)
                    .map_err(|e| vec![format!("tls: {e}")])?,
            ),
            _ => None,
        };
        let next = current
            .rebuild(Arc::new(settings))
            .map_err(|e| vec![e.to_string()])?;
        // Only now, with everything built, does anything change.
        if let (Some(key), Some(resolver)) = (key, &self.cert) {
            resolver.swap(key);
        }
        self.live.store(Arc::new(next));
        Ok(restart)
    }

    /// The certificate and key files in use, to watch for replacement on disk.
    pub(crate) fn tls_files(&self) -> Vec<std::path::PathBuf> {
        match &self.live.load().settings().tls {
            Some(t) if self.cert.is_some() => vec![t.cert_file.clone(), t.key_file.clone()],
            _ => Vec::new(),
        }
    }
}

/// The settings a running server cannot change: listeners and their limits, logging, the
/// store and the audit writer are built once at start. Each key named here that differs
/// between `old` and `new` keeps its old value until a restart.
pub(crate) fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let (o, n) = (&old.server, &new.server);
    let (os, ns) = (&old.store, &new.store);
    let checks = [
        ("server.listen", o.listen != n.listen),
        (
            "server.max_connections",
            o.max_connections != n.max_connections,
        ),
        ("server.max_in_flight", o.max_in_flight != n.max_in_flight),
        (
            "server.max_header_bytes",
            o.max_header_bytes != n.max_header_bytes,
        ),
        (
            "server.header_read_timeout",
            o.header_read_timeout != n.header_read_timeout,
        ),
        ("server.idle_timeout", o.idle_timeout != n.idle_timeout),
        (
            "server.shutdown_grace",
            o.shutdown_grace != n.shutdown_grace,
        ),
        (
            "server.worker_threads",
            o.worker_threads != n.worker_threads,
        ),
        ("admin.listen", old.admin_listen != new.admin_listen),
        ("traces", old.traces != new.traces),
        ("tls (on/off)", old.tls.is_some() != new.tls.is_some()),
        ("log.format", old.log.format != new.log.format),
        ("log.level", old.log.level != new.log.level),
        ("store.backend", os.backend != ns.backend),
        ("store.max_entries", os.max_entries != ns.max_entries),
        ("store.key_secret", os.key_secret != ns.key_secret),
        ("store.redis.url", os.redis_url != ns.redis_url),
        (
            "store.redis.username",
            os.redis_username != ns.redis_username,
        ),
        (
            "store.redis.password",
            os.redis_password != ns.redis_password,
        ),
        (
            "store.redis.key_prefix",
            os.redis_key_prefix != ns.redis_key_prefix,
        ),
        ("store.redis.timeout", os.redis_timeout != ns.redis_timeout),
        (
            "store.redis.reserve_timeout",
            os.redis_reserve_timeout != ns.redis_reserve_timeout,
        ),
        (
            "store.redis.sentinel",
            os.redis_sentinel != ns.redis_sentinel,
        ),
        ("store.redis.cluster", os.redis_cluster != ns.redis_cluster),
        ("store.redis.ca_file", os.redis_ca_file != ns.redis_ca_file),
        (
            "audit (output, path, max_bytes, keep)",
            old.audit_sink != new.audit_sink,
        ),
        ("audit.hmac_key", old.audit_key != new.audit_key),
    ];
    checks
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect()
}

/// The store replicas share: memory only, or Redis with a local fallback that keeps
/// serving (and says so in `/readyz` and the metrics) while Redis is unreachable.
async fn build_store(
    settings: &Settings,
    health: &Arc<Health>,
    metrics: &Arc<Metrics>,
) -> Result<(Arc<dyn Store>, Option<MemoryStore>), StartError> {
    let s = &settings.store;
    let local = MemoryStore::new(s.max_entries);
    match s.backend {
        StoreBackend::Memory => {
            let report_from = local.clone();
            metrics.set_store_source(move || StoreReport {
                evictions: report_from.evictions(),
                ..StoreReport::default()
            });
            Ok((Arc::new(local.clone()), Some(local)))
        }
        StoreBackend::Redis => {
            let redis = RedisStore::connect_lazy(&RedisSettings {
                url: s.redis_url.clone(),
                username: (!s.redis_username.is_empty()).then(|| s.redis_username.clone()),
                password: (!s.redis_password.is_empty())
                    .then(|| s.redis_password.expose().to_owned()),
                key_prefix: s.redis_key_prefix.clone(),
                timeout: s.redis_timeout,
                reserve_timeout: s.redis_reserve_timeout,
                sentinel: s.redis_sentinel.clone(),
                cluster: s.redis_cluster,
                ca_file: s.redis_ca_file.clone(),
                ..RedisSettings::default()
            })?;
            let store = FallbackStore::new(Arc::new(redis), local.clone(), Duration::from_secs(1));
            let report_from = store.clone();
            metrics.set_store_source(move || StoreReport {
                counts: report_from.stats().snapshot(),
                degraded: report_from.is_degraded(),
                evictions: local.evictions(),
            });
            let mut degraded = store.subscribe();
            let health = health.clone();
            tokio::spawn(async move {
                loop {
                    let now = *degraded.borrow_and_update();
                    health.set_degraded("store: redis unreachable, counting per replica", now);
                    if now {
                        tracing::warn!("redis unreachable: counting on this replica only");
                    } else {
                        tracing::info!("redis in use");
                    }
                    if degraded.changed().await.is_err() {
                        return;
                    }
                }
            });
            // One operation at start, so an unreachable Redis shows in /readyz at once.
            let _ = store.get("otpgate:startup").await;
            Ok((Arc::new(store), None))
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

fn http_builder(settings: &Settings) -> auto::Builder<TokioExecutor> {
    let s = &settings.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(s.header_read_timeout)
        // hyper refuses buffers under 8 KiB; the head must fit in the buffer.
        .max_buf_size(s.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Twice the limit: the gateway refuses a list over the limit itself, with an
        // Entra-shaped 431 (h2's own is a bodiless one); past twice, h2 refuses it unread.
        .max_header_list_size(
            u32::try_from(s.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
        )
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

#[derive(Clone, Copy)]
struct ConnLimits {
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

struct Connection {
    peer: SocketAddr,
    gateway: Arc<ArcSwap<Gateway>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: CancellationToken,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
}

impl Connection {
    async fn run(self, stream: TcpStream, tls: Option<TlsAcceptor>) {
        self.metrics.open_connections.inc();
        let _ = stream.set_nodelay(true);
        match tls {
            None => self.serve(stream, false).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls_stream)) => self.serve(tls_stream, true).await,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "tls handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = %self.peer, "tls handshake timed out"),
                }
            }
        }
        self.metrics.open_connections.dec();
    }

    async fn serve<I>(&self, io: I, tls: bool)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Activity::new();
        let io = TokioIo::new(IdleIo {
            inner: io,
            activity: activity.clone(),
            replacement: None,
        });
        let info = ConnInfo {
            peer: self.peer,
            tls,
        };
        let live = self.gateway.clone();
        let svc = service_fn({
            let activity = activity.clone();
            move |req| {
                // Open until the answer's body is done (or dropped).
                let open = activity.request_opened();
                // Each request runs on the configuration current when it arrived; its
                // future owns what it needs of the gateway.
                let handled = live.load().handle(req, info);
                futures_util::FutureExt::map(handled, tracked(open))
            }
        });
        let conn = self.builder.serve_connection(io, svc);
        tokio::pin!(conn);
        // hyper's header read timeout starts only once the protocol is known; until then
        // (a client that says nothing, or a few bytes of a preface) nothing bounds the wait.
        let first_request_by = Instant::now() + self.limits.header_read_timeout;
        // When the connection was asked to close (drain, or idle), if it was.
        let mut closing: Option<Instant> = None;
        loop {
            let quiet_since =
                closing.map_or(activity.quiet_since(), |at| at.max(activity.quiet_since()));
            let idle_deadline = quiet_since + self.limits.idle_timeout;
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = tokio::time::sleep_until(first_request_by), if !activity.requested() => {
                    // The condition above was read when this wait began.
                    if activity.requested() {
                        continue;
                    }
                    tracing::debug!(peer = %self.peer, "no request within the header read timeout");
                    break;
                }
                _ = self.stop.cancelled(), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
                _ = tokio::time::sleep_until(idle_deadline) => {
                    let quiet_since = closing.map_or(activity.quiet_since(), |at| {
                        at.max(activity.quiet_since())
                    });
                    if quiet_since + self.limits.idle_timeout > Instant::now() {
                        continue;
                    }
                    if closing.is_some() {
                        // Asked to close, and still no byte moved for a whole idle period:
                        // a response stuck on a client that does not read, or on an
                        // upstream that stopped sending, would hold it forever.
                        tracing::debug!(peer = %self.peer, "stalled connection dropped");
                        break;
                    }
                    // Graceful: a request still in progress finishes first.
                    conn.as_mut().graceful_shutdown();
                    closing = Some(Instant::now());
                }
            }
        }
    }
}

/// What a connection is doing, for the idle timeout: requests open on it (until their
/// answers are fully sent) and when bytes and requests last moved.
///
/// With a request open, the connection is busy while bytes move: a stalled answer counts as
/// idle. With none open, only requests count: HTTP/2 PINGs move bytes on a connection nobody
/// uses, and would keep it open for ever.
#[derive(Clone)]
struct Activity {
    origin: Instant,
    /// Milliseconds since `origin` of the last byte read or written.
    last_byte: Arc<AtomicU64>,
    /// Milliseconds since `origin` of the last request opened or closed.
    last_request: Arc<AtomicU64>,
    open_requests: Arc<AtomicUsize>,
    requested: Arc<AtomicBool>,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_byte: Arc::default(),
            last_request: Arc::default(),
            open_requests: Arc::default(),
            requested: Arc::default(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: &AtomicU64) -> Instant {
        self.origin + Duration::from_millis(ms.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        self.last_byte.store(self.now_ms(), Ordering::Relaxed);
    }

    fn request_opened(&self) -> OpenRequest {
        self.requested.store(true, Ordering::Relaxed);
        self.open_requests.fetch_add(1, Ordering::Relaxed);
        self.last_request.store(self.now_ms(), Ordering::Relaxed);
        OpenRequest(self.clone())
    }

    /// Whether an answer is still being written on this connection.
    fn has_open_requests(&self) -> bool {
        self.open_requests.load(Ordering::Relaxed) > 0
    }

    /// Whether any request arrived on this connection.
    fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// Since when the connection has done nothing that keeps it open.
    fn quiet_since(&self) -> Instant {
        if self.open_requests.load(Ordering::Relaxed) > 0 {
            self.at(&self.last_byte)
        } else {
            self.at(&self.last_request)
        }
    }
}

/// A request open on a connection; closed when dropped.
struct OpenRequest(Activity);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .last_request
            .store(activity.now_ms(), Ordering::Relaxed);
        activity.open_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What turns the gateway's answer into the connection's: its body keeps the request open.
fn tracked(
    open: OpenRequest,
) -> impl FnOnce(http::Response<crate::proxy::Body>) -> Result<http::Response<Tracked>, Infallible>
{
    move |resp| Ok(resp.map(|body| Tracked { body, _open: open }))
}

pin_project_lite::pin_project! {
    /// An answer's body, keeping its request open on the connection until it is done.
    struct Tracked {
        #[pin]
        body: crate::proxy::Body,
        _open: OpenRequest,
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::proxy::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The connection as hyper sees it: records when it last moved bytes, for the idle
    /// timeout, and writes an Entra-shaped answer in place of the bodiless refusal hyper
    /// writes itself for a request head it cannot parse ([`crate::refusal`]).
    struct IdleIo<I> {
        #[pin]
        inner: I,
        activity: Activity,
        // An answer written in place of hyper's refusal, and how much of it is out.
        replacement: Option<(Vec<u8>, usize)>,
    }
}

impl<I: AsyncRead> AsyncRead for IdleIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let poll = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        poll
    }
}

/// Write what is left of `replacement`; ready once all of it is out.
fn write_replacement<I: AsyncWrite>(
    mut inner: Pin<&mut I>,
    replacement: &mut Option<(Vec<u8>, usize)>,
    activity: &Activity,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while let Some((bytes, done)) = replacement.as_mut() {
        if *done == bytes.len() {
            *replacement = None;
            break;
        }
        let n = std::task::ready!(inner.as_mut().poll_write(cx, &bytes[*done..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        activity.touch();
        *done += n;
    }
    Poll::Ready(Ok(()))
}

impl<I: AsyncWrite> IdleIo<I> {
    /// If `buf` is hyper's own refusal of a head it could not parse (it writes one only
    /// between requests, and closes after it), take it and queue the Entra-shaped answer.
    fn replace_refusal(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Option<usize> {
        let this = self.project();
        if !buf.starts_with(b"HTTP/1.1 4") || this.activity.has_open_requests() {
            return None;
        }
        let (status, date) = crate::refusal::hyper_refusal(buf)?;
        *this.replacement = Some((crate::refusal::entra_refusal(status, date), 0));
        // Whatever is not written now goes out on the flush hyper does next.
        let _ = write_replacement(this.inner, this.replacement, this.activity, cx);
        Some(buf.len())
    }
}

impl<I: AsyncWrite> AsyncWrite for IdleIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        {
            let this = self.as_mut().project();
            std::task::ready!(write_replacement(
                this.inner,
                this.replacement,
                this.activity,
                cx
            ))?;
        }
        if let Some(n) = self.as_mut().replace_refusal(cx, buf) {
            return Poll::Ready(Ok(n));
        }
        let this = self.project();
        let poll = this.inner.poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        {
            let this = self.as_mut().project();
            std::task::ready!(write_replacement(
                this.inner,
                this.replacement,
                this.activity,
                cx
            ))?;
        }
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            if let Some(n) = self.as_mut().replace_refusal(cx, only) {
                return Poll::Ready(Ok(n));
            }
        }
        let this = self.project();
        let poll = this.inner.poll_write_vectored(cx, bufs);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        std::task::ready!(write_replacement(
            this.inner.as_mut(),
            this.replacement,
            this.activity,
            cx
        ))?;
        this.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        std::task::ready!(write_replacement(
            this.inner.as_mut(),
            this.replacement,
            this.activity,
            cx
        ))?;
        this.inner.poll_shutdown(cx)
    }
}
