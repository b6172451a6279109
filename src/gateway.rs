//! The request path: a few explicit phases over one per-request context.
//!
//! admit (in-flight limit) → check target (no open proxy) → classify → for native-auth
//! endpoints: read the bounded body, parse parameters, find the flow, label the OTP send →
//! forward (or answer) → learn from the answer → log. Requests nothing gates stream through
//! both ways without buffering.

use std::future::Future;
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{HeaderName, HeaderValue};
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tokio_util::task::TaskTracker;

use crate::admin_api::why::Subject as WhySubject;
use crate::audit::{self, Audit, AuditEvent};
use crate::config::{Settings, UnknownChannel, V2Mode};
use crate::entra::answer;
use crate::entra::classify::{self, Classification, EndpointKind};
use crate::entra::learn::{self, Channel, Flow, FlowBook, FlowId, Learned};
use crate::entra::params::{self, ParamError, Params};
use crate::entra::send::{self, OtpSend};
use crate::error::GatewayError;
use crate::judge::{Judge, ProviderAnswer, Subject, Verdict};
use crate::metrics::Metrics;
use crate::policy::{Outcome, StepUpBy};
use crate::proxy::{self, Body, BoxError, ConnInfo, ForwardError, Upstream};
use crate::store::{KeyHasher, MemoryStore, Store};
use crate::traces::{Attr, Child, Kind, SpanId, Trace, Tracer};

/// Why the request path could not be built from settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Provider(#[from] crate::risk::BuildError),
}

/// Shared state of the request path. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<Settings>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    in_flight: Arc<Semaphore>,
    flows: FlowBook,
    judge: Judge,
    audit: Audit,
    store: Arc<dyn Store>,
    /// Requests running detached from their client (see [`Gateway::handle`]); shared
    /// across reloads so shutdown waits for all of them.
    detached: TaskTracker,
    /// Hashes what store keys must not show; kept with the store across reloads.
    keys: KeyHasher,
    /// `[traces]`: traces of gated requests, when on; kept across reloads.
    tracer: Option<Arc<Tracer>>,
}

/// What one request carries through the phases.
struct RequestCtx {
    /// The client's `client-request-id`, echoed in the answers otpgate makes itself.
    client_request_id: Option<HeaderValue>,
    /// The client asked for its `client-request-id` back (`return-client-request-id:
    /// true`, as MSAL for iOS/macOS sends), as a response header.
    return_client_request_id: bool,
    /// See [`RequestCtx::request_id`].
    request_id: OnceLock<String>,
    started: Instant,
    method: Method,
    /// Logged by path only: queries may carry continuation tokens, which are never logged.
    uri: Uri,
    kind: RequestKind,
    flow: Option<FlowId>,
    send: Option<OtpSend>,
    upstream_status: Option<u16>,
    /// For a forwarded send: whether Entra's answer says it sent the code.
    code_sent: Option<bool>,
    /// Entra accepted a one-time code in this request.
    code_verified: bool,
    client_ip: Option<IpAddr>,
    verdict: Option<Box<Verdict>>,
    /// Arrival time, for the audit line.
    received: SystemTime,
}

impl RequestCtx {
    /// The request id for logs and audit: the client's `client-request-id` when it is a
    /// plain token, otherwise a fresh one. Made on first use: a pass-through request with
    /// the access log off needs none, and a fresh one costs a `getrandom` system call.
    fn request_id(&self) -> &str {
        self.request_id
            .get_or_init(|| request_id(self.client_request_id.as_ref()))
    }

    /// The client's `client-request-id` as text.
    fn correlation(&self) -> Option<&str> {
        self.client_request_id
            .as_ref()
            .and_then(|v| v.to_str().ok())
    }
}

/// What a request is to the gateway: the label of its metrics, access log and audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    PassThrough,
    Preflight,
    /// A path on (or near) a native-auth prefix that is not canonical: refused.
    Ambiguous,
    /// A native-auth endpoint (also when refused for its method).
    Endpoint(EndpointKind),
}

impl RequestKind {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::PassThrough => "pass_through",
            Self::Preflight => "preflight",
            Self::Ambiguous => "ambiguous",
            Self::Endpoint(kind) => kind.as_str(),
        }
    }
}

/// Where a request goes once its target is known.
enum Passage {
    /// Streamed to Entra ungated.
    Forward,
    /// A native-auth endpoint: read, judged, then answered or forwarded.
    Gated(EndpointKind),
}

/// What `otpgate explain` finds: how the gateway would handle a recorded request, from the
/// same phases a live request goes through.
pub struct Explanation {
    pub kind: RequestKind,
    /// The send the request would cause, when it would cause one.
    pub send: Option<OtpSend>,
    pub verdict: Option<Verdict>,
    /// The answer the gateway gives itself instead of forwarding, or why it refuses.
    pub answer: Option<StatusCode>,
    pub refused: Option<GatewayError>,
}

impl Explanation {
    fn new(kind: RequestKind) -> Self {
        Self {
            kind,
            send: None,
            verdict: None,
            answer: None,
            refused: None,
        }
    }

    /// The explanation as `otpgate explain` prints it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let verdict = self.verdict.as_ref();
        let outcome = match (&self.refused, self.answer, &self.send, self.kind) {
            (Some(fault), _, _, _) => format!("refused: {fault}"),
            (None, Some(status), _, _) => {
                format!("answered {status} instead of forwarding: no code is sent")
            }
            (None, None, Some(_), _) => "forwarded: Entra sends the code".to_owned(),
            (None, None, None, RequestKind::PassThrough) => {
                "forwarded ungated (not a native-auth endpoint)".to_owned()
            }
            (None, None, None, RequestKind::Endpoint(kind)) if kind.is_v2() => {
                "forwarded ungated (entra.v2 = \"pass\")".to_owned()
            }
            (None, None, None, _) => "forwarded (gated, parsed; sends no code)".to_owned(),
        };
        serde_json::json!({
            "endpoint": self.kind.as_str(),
            "channel": self.send.as_ref().map(|s| s.channel.as_str()).unwrap_or(""),
            "channel_known": self.send.as_ref().is_some_and(|s| s.channel_known),
            "destination": verdict.and_then(|v| v.phone.as_ref()).map(|p| {
                format!("{} ({})", p.masked(), p.region.as_deref().unwrap_or("no region"))
            }),
            "provider": verdict.and_then(|v| v.provider).unwrap_or(""),
            "provider_verdict": verdict.map(|v| v.provider_answer.as_str()).unwrap_or(""),
            "decision": verdict.map(|v| v.decision.label()).unwrap_or(""),
            "reasons": verdict.map(|v| v.decision.reasons.clone()).unwrap_or_default(),
            "outcome": outcome,
        })
    }
}

/// A gated request's parsed parameters, for the phases after `read`.
struct Gated {
    kind: EndpointKind,
    params: Params,
}

impl Gateway {
    pub fn new(settings: Arc<Settings>, metrics: Arc<Metrics>) -> Result<Self, BuildError> {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(settings.store.max_entries));
        Self::with_store(settings, metrics, store)
    }

    pub fn with_store(
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
    ) -> Result<Self, BuildError> {
        let upstream = Upstream::new(&settings.upstream)?;
        Self::with_upstream(settings, metrics, store, upstream)
    }

    /// [`Self::with_store`] with the upstream client given, e.g. [`Upstream::in_process`]
    /// (`otpgate simulate`). [`Self::rebuild`] makes a socket upstream from the settings.
    pub(crate) fn with_upstream(
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
        upstream: Upstream,
    ) -> Result<Self, BuildError> {
        let keys = settings.store.key_hasher();
        let judge = Judge::build(&settings, store.clone(), keys.clone(), metrics.clone())?;
        let reopen = reopen_signal(&settings.audit_sink);
        let audit = Audit::start(
            settings.audit_sink.clone(),
            settings.audit_key.expose().as_bytes(),
            reopen,
            metrics.audit_dropped.clone(),
        );
        let in_flight = Arc::new(Semaphore::new(settings.server.max_in_flight));
        let flows = FlowBook::new(store.clone(), keys.clone()).with_ttl(settings.entra.flow_ttl);
        let tracer = Tracer::start(&settings.traces, metrics.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                upstream,
                metrics,
                in_flight,
                flows,
                judge,
                audit,
                store,
                detached: TaskTracker::new(),
                keys,
                tracer,
            }),
        })
    }

    /// A gateway for new settings that keeps what must survive a reload: the store and its
    /// key hasher (so counters and learned flows carry over; `[store]` changes take a
    /// restart), metrics, the in-flight limit and the audit writer. Requests already
    /// running keep the gateway they started with.
    pub(crate) fn rebuild(&self, settings: Arc<Settings>) -> Result<Self, BuildError> {
        let old = &self.inner;
        let upstream = Upstream::new(&settings.upstream)?;
        let judge = Judge::build(
            &settings,
            old.store.clone(),
            old.keys.clone(),
            old.metrics.clone(),
        )?;
        let flows =
            FlowBook::new(old.store.clone(), old.keys.clone()).with_ttl(settings.entra.flow_ttl);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                upstream,
                metrics: old.metrics.clone(),
                in_flight: old.in_flight.clone(),
                flows,
                judge,
                audit: old.audit.clone(),
                store: old.store.clone(),
                detached: old.detached.clone(),
                keys: old.keys.clone(),
                tracer: old.tracer.clone(),
            }),
        })
    }

    /// At shutdown, once no connection is left: wait for requests still running detached
    /// from their clients, then for the audit writer to write every line they queued, in
    /// `within` overall. Returns whether everything finished in time.
    pub(crate) async fn settle(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        self.inner.detached.close();
        let finished = tokio::time::timeout_at(deadline, self.inner.detached.wait())
            .await
            .is_ok();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.inner.audit.flush(left).await && finished
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.inner.settings
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub(crate) fn keys(&self) -> &KeyHasher {
        &self.inner.keys
    }

    pub(crate) fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Handle one client request. Never fails: every fault becomes an Entra-shaped answer.
    ///
    /// Generic over the body so benches and tests can drive the whole path in-process; the
    /// server passes hyper's `Incoming`.
    ///
    /// The future is put together here rather than in an `async fn`: hyper moves it before
    /// it first runs, and an `async fn` holding the request's future across an `.await`
    /// would carry it twice.
    pub fn handle<B>(
        &self,
        req: Request<B>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<Body>> + Send + 'static
    where
        B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let mut ctx = RequestCtx {
            client_request_id: req.headers().get(&CLIENT_REQUEST_ID).cloned(),
            return_client_request_id: req
                .headers()
                .get("return-client-request-id")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true")),
            request_id: OnceLock::new(),
            started: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            kind: RequestKind::PassThrough,
            flow: None,
            send: None,
            upstream_status: None,
            code_sent: None,
            code_verified: false,
            client_ip: None,
            verdict: None,
            received: SystemTime::now(),
        };

        // Excess load gets a fast 503 rather than a queue.
        let permit = match self.inner.in_flight.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.inner.metrics.overload_rejections.inc();
                let resp = GatewayError::Overloaded.to_response(ctx.correlation());
                self.finish(&ctx, &resp, Some("overloaded"));
                return Either::Left(std::future::ready(resp));
            }
        };
        if req.version() == Version::HTTP_2
            && header_list_size(&req) > self.inner.settings.server.max_header_bytes
        {
            drop(permit);
            let resp = GatewayError::HeadersTooLarge.to_response(ctx.correlation());
            self.finish(&ctx, &resp, Some("headers_too_large"));
            return Either::Left(std::future::ready(resp));
        }
        let cors = &self.inner.settings.cors;
        if let Some(preflight) = cors.preflight(req.method(), req.headers()) {
            drop(permit);
            ctx.kind = RequestKind::Preflight;
            let resp = preflight.map(|()| proxy::full(Full::new(Bytes::new())));
            self.finish(&ctx, &resp, None);
            return Either::Left(std::future::ready(resp));
        }
        let mut origin = HeaderMap::new();
        if let Some(o) = req.headers().get(header::ORIGIN) {
            origin.insert(header::ORIGIN, o.clone());
        }
        // Every code-sending request is a POST. Once one is past the door it runs to the
        // end on its own task: a client that leaves mid-way must not cancel a send Entra
        // may already be making, nor the audit line that records it, nor the release of
        // its velocity slots. The permit and in-flight guard go with it, so detached work
        // stays bounded by `max_in_flight`.
        let detach = req.method() == Method::POST;
        let req = req.map(|body| body.map_err(Into::into).boxed());
        let gateway = self.clone();
        let complete = async move {
            let in_flight = gateway.inner.metrics.in_flight_guard();
            // A panic below is answered 500 and audited like any failure, with what the
            // request had reached (the audit step runs on every path).
            let result = AssertUnwindSafe(gateway.route(req, conn, &mut ctx))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!("request handling panicked");
                    Err(GatewayError::Internal("request handling panicked".into()))
                });
            drop(in_flight);
            drop(permit);
            let (mut resp, fault) = match result {
                Ok(resp) => (resp, None),
                Err(err) => (err.to_response(ctx.correlation()), Some(err.label())),
            };
            // An answer otpgate made itself (a refusal, or a judged send it did not
            // forward) gives the client its `client-request-id` back when asked, as MSAL
            // for iOS takes the correlation id of an error from that header.
            let own = fault.is_some() || (ctx.verdict.is_some() && ctx.upstream_status.is_none());
            if own && ctx.return_client_request_id {
                if let Some(id) = ctx.client_request_id.as_ref().filter(|v| plain_id(v)) {
                    resp.headers_mut().insert(&CLIENT_REQUEST_ID, id.clone());
                }
            }
            gateway
                .inner
                .settings
                .cors
                .decorate(&origin, resp.headers_mut());
            gateway.finish(&ctx, &resp, fault);
            resp
        };
        if !detach {
            return Either::Right(Either::Left(complete));
        }
        let task = self.inner.detached.spawn(complete);
        Either::Right(Either::Right(async move {
            // The task catches its own panics, so an error here is only a cancellation.
            task.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "request task failed");
                GatewayError::Internal("request task failed".into()).to_response(None)
            })
        }))
    }

    async fn route(
        &self,
        req: Request<Body>,
        conn: ConnInfo,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GatewayError> {
        let original_host = check_target(&req, &self.inner.settings.server.hosts)?;
        let front_door = &self.inner.settings.server.front_door_ids;
        check_front_door(req.headers(), front_door)?;
        let (mut parts, body) = req.into_parts();
        if !front_door.is_empty() {
            // Ours to check, nobody's to read after us.
            parts.headers.remove(FRONT_DOOR_ID);
        }
        if self.inner.settings.cors.enabled() {
            parts.headers.remove(crate::cors::DROP_UPSTREAM);
        }
        if let Some(uri) = self.canonical_target(&parts.uri)? {
            parts.uri = uri;
            ctx.uri = parts.uri.clone();
        }
        let peer = conn.peer.ip().to_canonical();
        let trusted = &self.inner.settings.server.trusted_proxies;
        let client_ip = proxy::client_ip(peer, &parts.headers, trusted);
        proxy::prepare_request(
            &mut parts.headers,
            client_ip,
            conn.tls,
            original_host.as_deref(),
        );
        ctx.client_ip = Some(client_ip);
        let (kind, passage) = self.passage(&parts.method, parts.uri.path());
        ctx.kind = kind;
        match passage? {
            Passage::Forward => self.forward(Request::from_parts(parts, body)).await,
            // The gated phases run in a future of their own, boxed, so that the future of
            // every other request stays small: hyper moves it several times before it
            // first runs.
            Passage::Gated(endpoint) => {
                let traceparent = match self.inner.tracer {
                    Some(_) if proxy::is_trusted(&peer, trusted) => {
                        let mut named = parts.headers.get_all(&TRACEPARENT).iter();
                        match (named.next(), named.next()) {
                            (Some(one), None) => Some(one.clone()),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let arrival = Arrival {
                    client_ip,
                    tls: conn.tls,
                    original_host,
                    traceparent,
                };
                self.gated_boxed(endpoint, parts, body, arrival, ctx).await
            }
        }
    }

    /// The target the gateway judges and forwards: the SPA proxy prefix mapped onto the
    /// tenant, MSAL iOS's doubled slash after the tenant collapsed. `None` when it is the
    /// request's own.
    fn canonical_target(&self, uri: &Uri) -> Result<Option<Uri>, GatewayError> {
        let cors = &self.inner.settings.cors;
        let mut target = None;
        if cors.enabled() {
            if let Some(mapped) = uri
                .path_and_query()
                .and_then(|pq| cors.map_path(pq.as_str()))
            {
                let mapped: Uri = mapped
                    .parse()
                    .map_err(|_| GatewayError::BadRequest("Invalid request target."))?;
                target = Some(mapped);
            }
        }
        let current = target.as_ref().unwrap_or(uri);
        if let Some(path) = classify::collapse_sdk_slash(current.path()) {
            target = Some(with_path(current, &path)?);
        }
        Ok(target)
    }

    /// What the request's method and canonical path make it, and where it goes: streamed
    /// through, gated, or refused (an ambiguous path, a native-auth endpoint asked with
    /// another method, a V2 endpoint while `entra.v2 = "block"`).
    fn passage(&self, method: &Method, path: &str) -> (RequestKind, Result<Passage, GatewayError>) {
        match classify::classify(method, path) {
            Classification::NotNativeAuth => (RequestKind::PassThrough, Ok(Passage::Forward)),
            Classification::Ambiguous(reason) => {
                tracing::info!(
                    reason = reason.as_str(),
                    "ambiguous native-auth path refused"
                );
                (
                    RequestKind::Ambiguous,
                    Err(GatewayError::BadRequest(
                        "The request path is not a canonical native authentication endpoint.",
                    )),
                )
            }
            Classification::MethodNotAllowed(kind) => (
                RequestKind::Endpoint(kind),
                Err(GatewayError::BadRequest(
                    "Native authentication endpoints accept POST only.",
                )),
            ),
            Classification::Endpoint { kind, .. } if kind.is_v2() => (
                RequestKind::Endpoint(kind),
                match self.inner.settings.entra.v2 {
                    V2Mode::Pass => Ok(Passage::Forward),
                    V2Mode::Block => Err(GatewayError::BadRequest(
                        "This version of the native authentication API is not enabled.",
                    )),
                },
            ),
            Classification::Endpoint { kind, .. } => {
                (RequestKind::Endpoint(kind), Ok(Passage::Gated(kind)))
            }
        }
    }

    /// [`Self::gated`], boxed in a plain function: boxed inside `route`, the future
    /// would still take room in `route`'s own.
    fn gated_boxed<'a>(
        &'a self,
        kind: EndpointKind,
        parts: http::request::Parts,
        body: Body,
        arrival: Arrival,
        ctx: &'a mut RequestCtx,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, GatewayError>> + Send + 'a>> {
        Box::pin(self.gated(kind, parts, body, arrival, ctx))
    }

    /// A native-auth request, traced when `[traces]` samples it ([`crate::traces`]).
    async fn gated(
        &self,
        kind: EndpointKind,
        parts: http::request::Parts,
        body: Body,
        arrival: Arrival,
        ctx: &mut RequestCtx,
    ) -> Result<Response<Body>, GatewayError> {
        let tracer = self.inner.tracer.as_ref();
        let mut trace = tracer.and_then(|t| t.begin(arrival.traceparent.as_ref()));
        let method = trace.as_ref().map(|_| parts.method.clone());
        let result = self
            .phases(kind, parts, body, arrival, ctx, &mut trace)
            .await;
        if let (Some(trace), Some(method)) = (trace, method) {
            let (attrs, error) = trace_attrs(ctx, &method, &result);
            trace.finish(attrs, error);
        }
        result
    }

    /// A native-auth request, phase by phase: read, flow, label, judge, then answer here,
    /// or forward, learn from Entra's answer and settle the send's velocity slots. Each
    /// phase is a span of `trace`, when there is one.
    async fn phases(
        &self,
        kind: EndpointKind,
        mut parts: http::request::Parts,
        body: Body,
        arrival: Arrival,
        ctx: &mut RequestCtx,
        trace: &mut Option<Trace>,
    ) -> Result<Response<Body>, GatewayError> {
        let t = clock(trace);
        let bytes = self.read_body(&parts.headers, body).await?;
        let gated = self.read(kind, &parts.headers, parts.uri.query(), &bytes)?;
        phase(trace, "read", t);
        let t = clock(trace);
        let flow = self.flow_of(kind, &gated.params).await;
        ctx.flow = Some(flow.id.clone());
        ctx.send = self.label_send(&gated, &flow).await?;
        phase(trace, "flow", t);
        if let Some(send) = &ctx.send {
            let t = clock(trace);
            let url = request_url(&parts.uri, arrival.tls, arrival.original_host.as_deref());
            let mut subject = subject(send, &gated, &flow, &parts, arrival.client_ip, url);
            let provider_span = trace.as_ref().map(Trace::new_span_id);
            subject.traceparent = trace
                .as_ref()
                .zip(provider_span)
                .map(|(t, id)| t.traceparent(id));
            let verdict = self.judge(&subject).await;
            if let (Some(trace), Some(id)) = (trace.as_mut(), provider_span) {
                let judged = trace.phase("judge", t.unwrap_or_else(SystemTime::now));
                provider_span_of(trace, judged, id, &verdict);
            }
            let answer = self.answer(&verdict, ctx.request_id());
            ctx.verdict = Some(Box::new(verdict));
            if let Some(answer) = answer {
                return Ok(answer);
            }
        }
        let t = clock(trace);
        let upstream_span = trace.as_ref().map(|tr| {
            let id = tr.new_span_id();
            parts.headers.insert(&TRACEPARENT, tr.traceparent(id));
            if arrival.traceparent.is_none() {
                // Another trace's state, from a caller whose trace this is not.
                parts.headers.remove(&TRACESTATE);
            }
            id
        });
        // The body forwarded is byte-identical to the body received.
        let resp = self
            .forward(Request::from_parts(parts, proxy::full(Full::new(bytes))))
            .await;
        if let (Some(tr), Some(id)) = (trace.as_mut(), upstream_span) {
            let status = resp.as_ref().map(|r| r.status().as_u16());
            let attrs = match status {
                Ok(status) => vec![("http.response.status_code", Attr::Int(i64::from(status)))],
                Err(e) => vec![("otpgate.fault", Attr::from(e.label()))],
            };
            let error = !matches!(status, Ok(s) if s < 500);
            tr.record(Child {
                id,
                parent: Some(tr.root()),
                name: "upstream",
                kind: Kind::Client,
                start: t.unwrap_or_else(SystemTime::now),
                end: SystemTime::now(),
                attrs,
                error,
            });
        }
        let resp = resp?;
        let t = clock(trace);
        let status = resp.status().as_u16();
        ctx.upstream_status = Some(status);
        let (resp, learned) = self.read_answer(resp).await?;
        let learned = learned.map(|bytes| learn::parse_response(kind, status, &bytes));
        // What the answer taught, the send's bookkeeping and a verification's count are
        // written side by side: one round trip to a remote store, which pipelines them.
        // The flow's new continuation token is written before the answer goes out, so
        // the client's next request (to any replica) finds its flow.
        let verifies = crate::entra::send::verifies(kind, &gated.params, status);
        let verified = async {
            match verifies {
                true => Some(self.inner.judge.verified(&flow.id).await),
                false => None,
            }
        };
        let (_, _, verified) = futures_util::join!(
            self.remember(&gated, &flow, learned.as_ref()),
            self.settle_send(ctx, status, learned.as_ref()),
            verified
        );
        if let Some(region) = verified {
            ctx.code_verified = true;
            self.inner
                .metrics
                .verification(&gated.kind, region.as_deref());
        }
        phase(trace, "learn", t);
        Ok(resp)
    }

    /// Keep what a native-auth answer taught about its flow.
    async fn remember(&self, gated: &Gated, flow: &Flow, learned: Option<&Learned>) {
        let Some(learned) = learned else {
            return;
        };
        let challenge = async {
            let id = gated
                .params
                .get("id")
                .filter(|_| gated.kind == EndpointKind::SignInChallenge);
            if let Some(id) = id {
                self.inner
                    .flows
                    .learn_challenge(&flow.id, id, learned)
                    .await;
            }
        };
        futures_util::join!(self.inner.flows.learn(flow, gated.kind, learned), challenge);
    }

    /// The parameters of a gated request: query and form body as one set, under the
    /// checks of [`params::parse_request`].
    fn read(
        &self,
        kind: EndpointKind,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Gated, GatewayError> {
        if body.len() > self.inner.settings.entra.max_body_bytes {
            return Err(GatewayError::BodyTooLarge);
        }
        let params = params::parse_request(headers, query, body).map_err(param_fault)?;
        Ok(Gated { kind, params })
    }

    /// The judge's verdict on a send, counted.
    async fn judge(&self, subject: &Subject<'_>) -> Verdict {
        let send = subject.send;
        self.inner
            .metrics
            .otp_send_seen(send.endpoint.as_str(), send.channel.as_str());
        self.inner.judge.judge(subject).await
    }

    /// After Entra answered a send: give its velocity slots back when the answer says no
    /// code went out (an error, a password prompt, a redirect), and count what it did.
    async fn settle_send(&self, ctx: &mut RequestCtx, status: u16, learned: Option<&Learned>) {
        let Some(send) = &ctx.send else {
            return;
        };
        let sent = !Learned::no_code_sent(status, learned);
        let verdict = ctx.verdict.as_deref();
        if let (false, Some(held)) = (sent, verdict.and_then(|v| v.held.as_ref())) {
            self.inner.judge.give_back(held).await;
        }
        if let (true, Some(v), Some(flow)) = (sent, verdict, ctx.flow.as_ref()) {
            self.inner
                .judge
                .sent(flow, &v.conversion, v.held.as_ref())
                .await;
        }
        ctx.code_sent = Some(sent);
        let country = verdict
            .and_then(|v| v.phone.as_ref())
            .and_then(|p| p.region.as_deref());
        let result = match (sent, (200..300).contains(&status)) {
            (true, _) => "ok",
            (false, true) => "no_code",
            (false, false) => "upstream_error",
        };
        self.inner
            .metrics
            .otp_send_forwarded(send.channel.as_str(), country, result);
    }

    /// The flow a gated request belongs to (by its continuation token), with the account
    /// it names when it starts one (`initiate`, sign-up or reset `start`).
    async fn flow_of(&self, kind: EndpointKind, params: &Params) -> Flow {
        let mut flow = self
            .inner
            .flows
            .flow_for_request(params.get("continuation_token"))
            .await;
        let starts = matches!(
            kind,
            EndpointKind::SignInInitiate
                | EndpointKind::SignUpStart
                | EndpointKind::ResetPasswordStart
        );
        if starts {
            if let Some(username) = params.get("username") {
                self.inner.flows.set_user(&mut flow, username);
            }
            flow.password_only = params.get("challenge_type").is_some_and(|types| {
                !types
                    .split_ascii_whitespace()
                    .any(|t| t.eq_ignore_ascii_case("oob"))
            });
        }
        flow
    }

    /// Judge a recorded request offline (`otpgate explain`): the phases of a live request
    /// up to its answer (target, passage, read, flow, label, judge, answer), without
    /// contacting Entra.
    pub async fn explain(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        client_ip: IpAddr,
    ) -> Explanation {
        let uri = match self.canonical_target(&parts.uri) {
            Ok(uri) => uri.unwrap_or_else(|| parts.uri.clone()),
            Err(fault) => {
                let mut out = Explanation::new(RequestKind::PassThrough);
                out.refused = Some(fault);
                return out;
            }
        };
        let (kind, passage) = self.passage(&parts.method, uri.path());
        let mut out = Explanation::new(kind);
        let endpoint = match passage {
            Ok(Passage::Gated(endpoint)) => endpoint,
            Ok(Passage::Forward) => return out,
            Err(fault) => {
                out.refused = Some(fault);
                return out;
            }
        };
        let labelled = async {
            let gated = self.read(endpoint, &parts.headers, uri.query(), body)?;
            let flow = self.flow_of(endpoint, &gated.params).await;
            let send = self.label_send(&gated, &flow).await?;
            Ok::<_, GatewayError>((gated, flow, send))
        };
        let (gated, flow, send) = match labelled.await {
            Ok(labelled) => labelled,
            Err(fault) => {
                out.refused = Some(fault);
                return out;
            }
        };
        if let Some(send) = &send {
            let url = request_url(&uri, false, None);
            let subject = subject(send, &gated, &flow, parts, client_ip, url);
            let verdict = self.judge(&subject).await;
            // Nothing is sent: the slots the verdict holds go back, so explaining a request
            // changes no count.
            if let Some(held) = &verdict.held {
                self.inner.judge.give_back(held).await;
            }
            let request_id = uuid::Uuid::new_v4().to_string();
            out.answer = self.answer(&verdict, &request_id).map(|r| r.status());
            out.verdict = Some(verdict);
        }
        out.send = send;
        out
    }

    /// The answer to a verdict that stops the send, or `None` to forward it.
    fn answer(&self, verdict: &Verdict, request_id: &str) -> Option<Response<Body>> {
        let correlation = Some(request_id);
        let resp = match verdict.decision.enforced {
            Outcome::Allow => return None,
            Outcome::Deny => answer::deny(self.inner.settings.entra.deny_style, correlation),
            Outcome::Throttle { retry_after } => answer::throttle(retry_after, correlation),
            Outcome::StepUp(StepUpBy::Provider) => match &verdict.provider_challenge {
                Some(challenge) => {
                    let (parts, body) = challenge.to_response().into_parts();
                    return Some(Response::from_parts(parts, proxy::full(Full::new(body))));
                }
                None => answer::step_up(
                    serde_json::json!({ "type": "provider", "provider": verdict.provider }),
                    correlation,
                ),
            },
            Outcome::StepUp(StepUpBy::Builtin) => answer::step_up(
                serde_json::json!({
                    "type": "pow",
                    "format": "altcha",
                    "header": self.inner.settings.stepup.header.as_str(),
                    "altcha": verdict.pow_challenge,
                }),
                correlation,
            ),
        };
        Some(resp.map(proxy::full))
    }

    /// Read a gated body: at most `entra.max_body_bytes`, within the header read timeout
    /// (a body that trickles in is a slowloris, not a sign-in).
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, GatewayError> {
        let cap = self.inner.settings.entra.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap as u64) {
            return Err(GatewayError::BodyTooLarge);
        }
        let timeout = self.inner.settings.server.header_read_timeout;
        match tokio::time::timeout(timeout, collect_capped(body, cap)).await {
            Err(_) => Err(GatewayError::BadRequest(
                "The request body was not received in time.",
            )),
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(Capped::TooLarge)) => Err(GatewayError::BodyTooLarge),
            Ok(Err(Capped::Broken)) => Err(GatewayError::BadRequest(
                "The request body could not be read.",
            )),
        }
    }

    /// Label the OTP send a gated request would cause; refuse one whose send is ambiguous.
    async fn label_send(
        &self,
        gated: &Gated,
        flow: &Flow,
    ) -> Result<Option<OtpSend>, GatewayError> {
        let unknown = match self.inner.settings.entra.unknown_method_channel {
            UnknownChannel::Sms => Channel::Sms,
            UnknownChannel::Email => Channel::Email,
        };
        send::label(gated.kind, &gated.params, flow, &self.inner.flows, unknown)
            .await
            .map_err(|send::Ambiguous(why)| GatewayError::BadRequest(why))
    }

    /// Read a native-auth answer (bounded) to learn from it, and pass its bytes on
    /// unchanged. Returns the bytes read, `None` when the answer was too large to read.
    async fn read_answer(
        &self,
        resp: Response<Body>,
    ) -> Result<(Response<Body>, Option<Bytes>), GatewayError> {
        let (parts, body) = resp.into_parts();
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > learn::MAX_RESPONSE_BYTES) {
            return Ok((Response::from_parts(parts, body), None));
        }
        let timeout = self.inner.settings.upstream.response_timeout;
        let bytes =
            match tokio::time::timeout(timeout, collect_capped(body, learn::MAX_RESPONSE_BYTES))
                .await
            {
                Ok(Ok(bytes)) => bytes,
                // An answer without a length that outgrows the cap, or breaks off: the client
                // cannot get a whole answer either way.
                Ok(Err(_)) | Err(_) => {
                    return Err(GatewayError::UpstreamUnreachable(
                        "native-auth answer unreadable or too large".into(),
                    ))
                }
            };
        Ok((
            Response::from_parts(parts, proxy::full(Full::new(bytes.clone()))),
            Some(bytes),
        ))
    }

    async fn forward(&self, req: Request<Body>) -> Result<Response<Body>, GatewayError> {
        let sent = Instant::now();
        match self.inner.upstream.send(req).await {
            Ok(resp) => {
                self.inner.metrics.upstream_done(sent.elapsed());
                let (mut parts, body) = resp.into_parts();
                proxy::prepare_response(&mut parts.headers);
                Ok(Response::from_parts(parts, proxy::streamed(body)))
            }
            Err(ForwardError::Timeout) => {
                self.inner.metrics.upstream_failed("timeout");
                Err(GatewayError::UpstreamTimeout)
            }
            Err(ForwardError::Unreachable(e)) => {
                self.inner.metrics.upstream_failed("unreachable");
                Err(GatewayError::UpstreamUnreachable(e))
            }
        }
    }

    fn audit_event(
        &self,
        ctx: &RequestCtx,
        resp: &Response<Body>,
        fault: Option<&'static str>,
    ) -> AuditEvent {
        let send = ctx.send.as_ref();
        let verdict = ctx.verdict.as_deref();
        let (phone_masked, phone_hmac, country) = match verdict.and_then(|v| v.phone.as_ref()) {
            Some(phone) => (
                phone.masked(),
                self.inner.audit.phone_hmac(&phone.e164),
                phone.region.clone().unwrap_or_default(),
            ),
            None => (
                send.and_then(|s| s.label.clone()).unwrap_or_default(),
                String::new(),
                String::new(),
            ),
        };
        AuditEvent {
            kind: audit::AuditMarker,
            time: time::OffsetDateTime::from(ctx.received)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            request_id: ctx.request_id().to_owned(),
            route: verdict.map(|v| v.route).unwrap_or(""),
            endpoint: ctx.kind.as_str(),
            channel: send.map(|s| s.channel.as_str()).unwrap_or(""),
            client_ip: ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            country,
            phone_masked,
            phone_hmac,
            method_hash: send
                .and_then(|s| s.method_id.as_deref())
                .map(audit::hash_hex)
                .unwrap_or_default(),
            flow: ctx
                .flow
                .as_ref()
                .map(|f| f.as_str().to_owned())
                .unwrap_or_default(),
            provider: verdict.and_then(|v| v.provider).unwrap_or(""),
            provider_verdict: verdict.map(|v| v.provider_answer.as_str()).unwrap_or(""),
            decision: verdict.map(|v| v.decision.label()).unwrap_or(""),
            reasons: verdict
                .map(|v| v.decision.reasons.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            status: resp.status().as_u16(),
            upstream_status: ctx.upstream_status.unwrap_or(0),
            code_sent: ctx.code_sent,
            code_verified: ctx.code_verified,
            latency_ms: ctx.started.elapsed().as_secs_f64() * 1000.0,
            provider_ms: verdict
                .and_then(|v| v.provider_latency)
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0),
            fault: fault.unwrap_or(""),
        }
    }

    /// With the admin API on: the decision on a judged send kept for "why", under the
    /// registration's number, the flow's user and the flow (hashes, never raw), off the
    /// request path.
    fn keep_decision(&self, ctx: &RequestCtx, event: &AuditEvent) {
        let Some(verdict) = ctx.verdict.as_deref() else {
            return;
        };
        if !self.inner.settings.admin_api.enabled {
            return;
        }
        let mut subjects = Vec::with_capacity(3);
        if let Some(phone) = &verdict.phone {
            subjects.push(WhySubject::Phone(self.inner.keys.hash(&phone.e164)));
        }
        if let Some(user) = &verdict.user {
            subjects.push(WhySubject::User(user.clone()));
        }
        if let Some(flow) = &ctx.flow {
            subjects.push(WhySubject::Flow(flow.as_str().to_owned()));
        }
        let Ok(line) = serde_json::to_vec(event) else {
            return;
        };
        let store = self.inner.store.clone();
        self.inner.detached.spawn(async move {
            crate::admin_api::why::keep_decision(store.as_ref(), &subjects, &line).await;
        });
    }

    fn finish(&self, ctx: &RequestCtx, resp: &Response<Body>, fault: Option<&'static str>) {
        self.inner
            .metrics
            .request_done(ctx.kind.as_str(), resp.status());
        if ctx.kind != RequestKind::PassThrough {
            let event = self.audit_event(ctx, resp, fault);
            self.inner.audit.record(&event);
            self.keep_decision(ctx, &event);
        }
        let send = ctx.send.as_ref();
        tracing::info!(
            target: "otpgate::access",
            request_id = %ctx.request_id(),
            method = %ctx.method,
            path = %ctx.uri.path(),
            kind = ctx.kind.as_str(),
            client_ip = %ctx.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            status = resp.status().as_u16(),
            upstream_status = ctx.upstream_status.unwrap_or(0),
            latency_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            flow = ctx.flow.as_ref().map(|f| f.as_str()).unwrap_or(""),
            otp_channel = send.map(|s| s.channel.as_str()).unwrap_or(""),
            decision = ctx.verdict.as_ref().map(|v| v.decision.label()).unwrap_or(""),
            fault = fault.unwrap_or(""),
            "request"
        );
    }
}

enum Capped {
    TooLarge,
    Broken,
}

/// Collect a body of at most `cap` bytes.
async fn collect_capped<B>(body: B, cap: usize) -> Result<Bytes, Capped>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut body = std::pin::pin!(body);
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Capped::Broken)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > cap {
                return Err(Capped::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The size of an HTTP/2 request's header list as RFC 9113 §6.5.2 counts it (each field's
/// name and value plus 32), pseudo-header fields included: what
/// `SETTINGS_MAX_HEADER_LIST_SIZE` limits.
fn header_list_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let pseudo = [
        (":method", req.method().as_str().len()),
        (":scheme", uri.scheme_str().map_or(0, str::len)),
        (
            ":authority",
            uri.authority().map_or(0, |a| a.as_str().len()),
        ),
        (
            ":path",
            uri.path_and_query().map_or(1, |p| p.as_str().len()),
        ),
    ];
    let pseudo: usize = pseudo.iter().map(|(name, len)| name.len() + len + 32).sum();
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum::<usize>()
        + pseudo
}

/// What the judge is told about a send and its request.
fn subject<'a>(
    send: &'a OtpSend,
    gated: &'a Gated,
    flow: &'a Flow,
    parts: &'a http::request::Parts,
    client_ip: IpAddr,
    url: String,
) -> Subject<'a> {
    Subject {
        send,
        flow: &flow.id,
        client_ip,
        client_id: gated.params.get("client_id"),
        user: flow.user.as_deref(),
        headers: &parts.headers,
        method: &parts.method,
        version: parts.version,
        url,
        traceparent: None,
    }
}

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// When a phase of a traced request starts; no clock is read for a request not traced.
fn clock(trace: &Option<Trace>) -> Option<SystemTime> {
    trace.as_ref().map(|_| SystemTime::now())
}

/// A phase of a traced request, from `start` ([`clock`]) to now.
fn phase(trace: &mut Option<Trace>, name: &'static str, start: Option<SystemTime>) {
    if let (Some(trace), Some(start)) = (trace, start) {
        trace.phase(name, start);
    }
}

/// The provider call of a judged send, as a client span under `judged`, when one was made.
fn provider_span_of(trace: &mut Trace, judged: SpanId, id: SpanId, verdict: &Verdict) {
    let (Some(provider), Some(started), Some(latency)) = (
        verdict.provider,
        verdict.provider_started,
        verdict.provider_latency,
    ) else {
        return;
    };
    let answer = verdict.provider_answer.as_str();
    let attrs = vec![
        ("otpgate.provider", Attr::from(provider)),
        ("otpgate.provider.answer", Attr::from(answer)),
    ];
    trace.record(Child {
        id,
        parent: Some(judged),
        name: "provider",
        kind: Kind::Client,
        start: started,
        end: started + latency,
        attrs,
        error: matches!(verdict.provider_answer, ProviderAnswer::Failed(_)),
    });
}

/// The attributes of a gated request's span, and whether it failed. Names, labels and
/// countries only: never a number, token or code.
fn trace_attrs(
    ctx: &RequestCtx,
    method: &Method,
    result: &Result<Response<Body>, GatewayError>,
) -> (Vec<(&'static str, Attr)>, bool) {
    let mut attrs = vec![
        ("http.request.method", Attr::from(method.as_str())),
        ("otpgate.endpoint", Attr::from(ctx.kind.as_str())),
    ];
    let error = match result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            attrs.push(("http.response.status_code", Attr::Int(i64::from(status))));
            status >= 500
        }
        Err(e) => {
            attrs.push(("otpgate.fault", Attr::from(e.label())));
            true
        }
    };
    if let Some(send) = &ctx.send {
        attrs.push(("otpgate.channel", Attr::from(send.channel.as_str())));
    }
    if let Some(v) = ctx.verdict.as_deref() {
        attrs.push(("otpgate.route", Attr::from(v.route)));
        attrs.push(("otpgate.decision", Attr::from(v.decision.label())));
        let reasons: Vec<String> = v.decision.reasons.iter().map(ToString::to_string).collect();
        attrs.push(("otpgate.reasons", Attr::from(reasons.join(","))));
        if let Some(region) = v.phone.as_ref().and_then(|p| p.region.as_deref()) {
            attrs.push(("otpgate.country", Attr::from(region)));
        }
    }
    if let Some(sent) = ctx.code_sent {
        attrs.push(("otpgate.code_sent", Attr::Bool(sent)));
    }
    (attrs, error)
}

/// `uri` with its path replaced (scheme, authority and query kept).
fn with_path(uri: &Uri, path: &str) -> Result<Uri, GatewayError> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| GatewayError::BadRequest("Invalid request target."))?,
    );
    Uri::from_parts(parts).map_err(|_| GatewayError::BadRequest("Invalid request target."))
}

/// The URL the client asked for, as providers want it (HUMAN reports it), without its
/// query: a query may carry a continuation token, which no provider is sent.
fn request_url(uri: &Uri, tls: bool, host: Option<&str>) -> String {
    let scheme = if tls { "https" } else { "http" };
    let path = uri.path_and_query().map(|p| p.path()).unwrap_or("/");
    format!("{scheme}://{}{path}", host.unwrap_or("localhost"))
}

/// A receiver of SIGUSR1, for reopening the audit file after external rotation.
fn reopen_signal(sink: &crate::audit::AuditSink) -> Option<tokio::sync::mpsc::Receiver<()>> {
    if !matches!(sink, crate::audit::AuditSink::File { .. }) {
        return None;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = signal(SignalKind::user_defined1()).ok()?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                if tx.send(()).await.is_err() {
                    return;
                }
            }
        });
        Some(rx)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

fn param_fault(e: ParamError) -> GatewayError {
    match e {
        ParamError::TooLarge => GatewayError::BodyTooLarge,
        ParamError::UnsupportedContentType | ParamError::ContentEncoding => {
            GatewayError::UnsupportedMediaType
        }
        ParamError::UnsupportedCharset(_) => GatewayError::UnsupportedCharset,
        ParamError::Duplicate(_) => GatewayError::BadRequest("A parameter appears more than once."),
        ParamError::IndexedName(_) => GatewayError::BadRequest(
            "A parameter name is an array, index or prefixed spelling of another.",
        ),
        ParamError::ParameterCookie(_) => {
            GatewayError::BadRequest("A cookie has the name of a request parameter.")
        }
        ParamError::BadEncoding => {
            GatewayError::BadRequest("The request parameters are not valid form encoding.")
        }
    }
}

static CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("client-request-id");

/// The request id for logs: the client's `client-request-id` when it is a plain token,
/// otherwise a fresh one.
fn request_id(client_request_id: Option<&HeaderValue>) -> String {
    client_request_id
        .filter(|v| plain_id(v))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// A `client-request-id` that is a plain token: 1 to 64 letters, digits, `-` or `_`.
fn plain_id(v: &HeaderValue) -> bool {
    let v = v.as_bytes();
    !v.is_empty()
        && v.len() <= 64
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where a gated request came from and which host it named, as `route` worked it out.
struct Arrival {
    client_ip: IpAddr,
    tls: bool,
    original_host: Option<String>,
    /// The request's `traceparent`, when a trusted proxy sent exactly one.
    traceparent: Option<HeaderValue>,
}

/// Refuse what would make us an open proxy: `CONNECT`, absolute-form targets for a host
/// other than the one addressed, and hosts outside `server.hosts` when it is set. Returns
/// the host the client addressed (for `X-Forwarded-Host`).
pub(crate) fn check_target<B>(
    req: &Request<B>,
    hosts: &[String],
) -> Result<Option<String>, GatewayError> {
    if req.method() == Method::CONNECT {
        return Err(GatewayError::MethodNotAllowed("CONNECT is not supported."));
    }
    // A request that names two hosts is ambiguous: servers disagree on which one counts
    // (RFC 9112 §3.2 requires a 400 for a repeated Host).
    let mut hosts_named = req.headers().get_all(header::HOST).iter();
    let header_host = hosts_named
        .next()
        .map(|v| {
            v.to_str()
                .map_err(|_| GatewayError::BadRequest("Invalid Host header."))
        })
        .transpose()?;
    if hosts_named.next().is_some() {
        return Err(GatewayError::BadRequest("More than one Host header."));
    }
    let uri_host = req.uri().authority().map(|a| a.as_str());
    let addressed = match req.version() {
        // HTTP/2 and HTTP/3 always carry :authority; it is the target, not a proxy request.
        // A Host header beside it must name the same host (RFC 9113 §8.3.1).
        Version::HTTP_2 | Version::HTTP_3 => match (uri_host, header_host) {
            (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => {
                return Err(GatewayError::BadRequest(
                    "The Host header and :authority name different hosts.",
                ))
            }
            _ => uri_host.or(header_host),
        },
        _ => {
            if let Some(abs) = uri_host {
                // Absolute-form: only for the host the request is addressed to anyway.
                let same = header_host.is_some_and(|h| h.eq_ignore_ascii_case(abs));
                if !same || req.uri().scheme().is_none() {
                    return Err(GatewayError::BadRequest(
                        "Absolute-form request targets for another host are not accepted.",
                    ));
                }
            }
            header_host
        }
    };
    if !hosts.is_empty() {
        let name = addressed.map(host_without_port).unwrap_or_default();
        if !hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) {
            return Err(GatewayError::UnknownHost);
        }
    }
    Ok(addressed.map(str::to_owned))
}

/// The header Azure Front Door sets to its profile's id on every request it forwards.
const FRONT_DOOR_ID: &str = "x-azure-fdid";

/// With `server.front_door_ids` set, only a request that came through one of those Front
/// Door profiles passes: exactly one `X-Azure-FDID`, naming one of them (a GUID in its
/// hyphenated form, either case). Front Door overwrites whatever a client sends in it, so
/// a request with another id, none, or two came around Front Door, past its WAF.
pub(crate) fn check_front_door(
    headers: &HeaderMap,
    ids: &[uuid::Uuid],
) -> Result<(), GatewayError> {
    use subtle::ConstantTimeEq;
    if ids.is_empty() {
        return Ok(());
    }
    let mut named = headers.get_all(FRONT_DOOR_ID).iter();
    let (Some(value), None) = (named.next(), named.next()) else {
        return Err(GatewayError::NotFromFrontDoor);
    };
    let id = value
        .to_str()
        .ok()
        .and_then(|v| crate::server::settings::parse_front_door_id(v).ok())
        .ok_or(GatewayError::NotFromFrontDoor)?;
    let known = ids.iter().fold(subtle::Choice::from(0), |known, expected| {
        known | expected.as_bytes().ct_eq(id.as_bytes())
    });
    match bool::from(known) {
        true => Ok(()),
        false => Err(GatewayError::NotFromFrontDoor),
    }
}

fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod agreement;

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, uri: &str, version: Version, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri).version(version);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn target_checks() {
        let any: Vec<String> = vec![];
        let only = vec!["login.example.com".to_owned()];
        let ok = |r: Request<()>, h: &[String]| check_target(&r, h).is_ok();
        assert!(ok(
            req(Method::GET, "/x", Version::HTTP_11, Some("a")),
            &any
        ));
        assert!(!ok(
            req(Method::CONNECT, "a:443", Version::HTTP_11, Some("a:443")),
            &any
        ));
        assert!(!ok(
            req(
                Method::GET,
                "http://evil.example/x",
                Version::HTTP_11,
                Some("a")
            ),
            &any
        ));
        assert!(ok(
            req(Method::GET, "http://a/x", Version::HTTP_11, Some("a")),
            &any
        ));
        assert!(ok(
            req(
                Method::GET,
                "/x",
                Version::HTTP_11,
                Some("LOGIN.example.com:8443")
            ),
            &only
        ));
        assert!(!ok(
            req(
                Method::GET,
                "/x",
                Version::HTTP_11,
                Some("other.example.com")
            ),
            &only
        ));
        assert!(!ok(req(Method::GET, "/x", Version::HTTP_11, None), &only));
        assert!(ok(
            req(
                Method::GET,
                "https://login.example.com/x",
                Version::HTTP_2,
                None
            ),
            &only
        ));
        assert!(!ok(
            req(Method::GET, "https://evil.example/x", Version::HTTP_2, None),
            &only
        ));
        // Two hosts named at once: refused whichever comes first.
        let mut two = req(
            Method::GET,
            "/x",
            Version::HTTP_11,
            Some("login.example.com"),
        );
        two.headers_mut()
            .append(header::HOST, "evil.example".parse().unwrap());
        assert!(!ok(two, &any));
        assert!(!ok(
            req(
                Method::GET,
                "https://login.example.com/x",
                Version::HTTP_2,
                Some("evil.example")
            ),
            &only
        ));
        assert!(ok(
            req(
                Method::GET,
                "https://login.example.com/x",
                Version::HTTP_2,
                Some("LOGIN.example.com")
            ),
            &only
        ));
    }
}
