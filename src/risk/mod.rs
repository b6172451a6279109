//! Risk providers: what otpgate asks before a request that would make Entra send a one-time
//! passcode is forwarded.
//!
//! [`RiskProvider`] is the one trait; [`human`], [`prove`] and [`mock`] implement it.
//! [`Guarded`] wraps any provider with a time budget and a circuit breaker. A provider error
//! is an input to the caller's policy (resolved by its [`FailMode`]), never a 500.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

pub mod human;
pub mod mock;
pub mod prove;
pub mod routes;

pub use human::{HumanConfig, HumanProvider};
pub use mock::{MockConfig, MockProvider};
pub use prove::{ProveConfig, ProveProvider};

/// Install ring as the process-wide rustls crypto provider. reqwest is built without one, so
/// this must run before the first HTTPS client is built. Calling it again is harmless.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The channel an OTP is about to be sent on.
pub use crate::entra::learn::Channel;

/// Everything a provider may look at for one OTP-send request. Built by the gateway from
/// the classified request; providers never see the body or continuation tokens.
#[derive(Debug, Clone)]
pub struct RiskRequest {
    /// The gated endpoint's label, e.g. `"register_challenge"`.
    pub endpoint: String,
    /// Where the OTP would go.
    pub channel: Channel,
    /// The destination phone in E.164 (`+447400123456`) when the request names it
    /// (`challenge_target`), or a number learned earlier. Never logged raw.
    pub phone: Option<String>,
    /// A masked label of the destination (`+44 ******123`) when only that is known.
    pub masked_target: Option<String>,
    /// The Entra authentication method id of an MFA challenge.
    pub method_id: Option<String>,
    /// A stable id of the native-auth flow (a hash, never the continuation token).
    pub flow_id: Option<String>,
    /// The client's IP address (socket, or the trusted-proxy chain).
    pub client_ip: IpAddr,
    /// The raw `User-Agent` header value, if any.
    pub user_agent: Option<String>,
    /// The `client_id` form parameter.
    pub client_id: Option<String>,
    /// The request URL as the client sent it (scheme, host, path, query).
    pub url: String,
    /// The request method.
    pub method: Method,
    /// The request's HTTP version.
    pub http_version: Version,
    /// Provider-relevant request headers, see [`provider_headers`].
    pub headers: HeaderMap,
}

impl RiskRequest {
    /// A request with only the required parts; fill in the rest with struct update syntax or
    /// by assigning the public fields.
    pub fn new(endpoint: impl Into<String>, channel: Channel, client_ip: IpAddr) -> Self {
        Self {
            endpoint: endpoint.into(),
            channel,
            phone: None,
            masked_target: None,
            method_id: None,
            flow_id: None,
            client_ip,
            user_agent: None,
            client_id: None,
            url: String::new(),
            method: Method::POST,
            http_version: Version::HTTP_11,
            headers: HeaderMap::new(),
        }
    }

    /// The first value of header `name` as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Default for RiskRequest {
    fn default() -> Self {
        Self::new("", Channel::Sms, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

/// Header names every provider may need, besides `x-px-*` and those a provider asks for
/// through [`RiskProvider::wanted_headers`].
const BASE_HEADERS: [HeaderName; 4] = [
    header::COOKIE,
    header::USER_AGENT,
    header::ACCEPT,
    header::CONTENT_TYPE,
];

/// The subset of `headers` providers get: `x-px-*` (HUMAN's mobile SDK), `Cookie`,
/// `User-Agent`, `Accept`, `Content-Type` (HUMAN picks its block-response format from
/// them) and the `extra` names (see [`RiskProvider::wanted_headers`]). Every value of a
/// multi-valued header is kept.
pub fn provider_headers(headers: &HeaderMap, extra: &[HeaderName]) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let keep = name.as_str().starts_with("x-px-")
            || BASE_HEADERS.contains(name)
            || extra.contains(name);
        if keep {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// What a provider recommends for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskAction {
    /// Low risk: forward, Entra sends the OTP.
    Allow,
    /// Uncertain: challenge the client first (the provider's own challenge when it has one).
    StepUp,
    /// High risk: do not send the OTP.
    Deny,
}

/// A response the gateway can send to render the provider's own challenge or block page
/// (HUMAN's captcha page, its JSON for XHR clients, or its mobile-SDK JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderChallenge {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Bytes,
    /// Further headers to send, e.g. `Set-Cookie: _pxhd=…`.
    pub headers: HeaderMap,
}

impl ProviderChallenge {
    /// The challenge as an HTTP response.
    pub fn to_response(&self) -> http::Response<Bytes> {
        let mut rsp = http::Response::new(self.body.clone());
        *rsp.status_mut() = self.status;
        let headers = rsp.headers_mut();
        headers.extend(self.headers.clone());
        if let Ok(ct) = HeaderValue::from_str(&self.content_type) {
            headers.insert(header::CONTENT_TYPE, ct);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        rsp
    }
}

/// A provider's answer, normalized across vendors.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskVerdict {
    pub action: RiskAction,
    /// Risk from 0 (clean) to 1 (certainly bad), when the provider gives a score.
    pub score: Option<f64>,
    /// Short machine-readable reasons (`block_reason:s2s_high_score`, `prove:9132`), for the
    /// audit log and metrics.
    pub reasons: Vec<String>,
    /// The provider's own challenge / block response, when it has one.
    pub challenge: Option<ProviderChallenge>,
    /// The provider's id for this assessment (HUMAN uuid, Prove correlation id), to quote
    /// to the vendor's support.
    pub reference: Option<String>,
    /// A possession check the provider started (Prove `mobile`/`desktop`): the gateway binds
    /// it to the flow and checks its status when the client retries.
    pub possession: Option<PossessionSession>,
}

/// A provider-run possession check in progress. The client request id stays on the server.
#[derive(Clone, PartialEq, Eq)]
pub struct PossessionSession {
    pub correlation_id: String,
    pub client_request_id: String,
}

impl std::fmt::Debug for PossessionSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PossessionSession")
            .field("correlation_id", &self.correlation_id)
            .finish_non_exhaustive()
    }
}

impl RiskVerdict {
    /// A verdict with only an action.
    pub fn new(action: RiskAction) -> Self {
        Self {
            action,
            score: None,
            reasons: Vec::new(),
            challenge: None,
            reference: None,
            possession: None,
        }
    }

    pub fn allow() -> Self {
        Self::new(RiskAction::Allow)
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reasons.push(reason.into());
        self
    }

    pub fn with_score(mut self, score: f64) -> Self {
        self.score = Some(score.clamp(0.0, 1.0));
        self
    }
}

/// Why a provider gave no verdict. The caller's [`FailMode`] decides what happens next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RiskError {
    #[error("provider timed out")]
    Timeout,
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("provider sent a bad response: {0}")]
    BadResponse(String),
    #[error("provider rate limited us")]
    RateLimited { retry_after: Option<Duration> },
    #[error("provider circuit open")]
    CircuitOpen,
}

impl RiskError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RiskError::Timeout => "timeout",
            RiskError::Unavailable(_) => "unavailable",
            RiskError::BadResponse(_) => "bad_response",
            RiskError::RateLimited { .. } => "rate_limited",
            RiskError::CircuitOpen => "circuit_open",
        }
    }
}

/// What the gateway does when the provider gives no verdict (timeout, error, open circuit).
/// The default is `step_up`: HUMAN's own default is fail-open, but an outage of the risk
/// provider is exactly when an SMS-pumping run would like to go unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Forward as if the provider allowed it (HUMAN's own default).
    Open,
    /// Refuse to send the OTP.
    Closed,
    /// Challenge the client with the built-in step-up.
    #[default]
    StepUp,
}

/// A fraud-risk provider.
#[async_trait]
pub trait RiskProvider: Send + Sync {
    /// A short stable name for logs and metrics (`"human"`, `"prove"`, `"mock"`).
    fn name(&self) -> &'static str;

    /// Assess one OTP-send request. Adapters own their HTTP plumbing and the mapping to a
    /// verdict; the time budget is applied by [`Guarded`].
    async fn evaluate(&self, req: &RiskRequest) -> Result<RiskVerdict, RiskError>;

    /// Header names, beyond the base set of [`provider_headers`], this provider reads from
    /// [`RiskRequest::headers`].
    fn wanted_headers(&self) -> Vec<HeaderName> {
        Vec::new()
    }
}

/// Time budget and circuit-breaker settings for one provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GuardConfig {
    /// Longest a provider call may take before the gateway stops waiting and applies its
    /// fail mode.
    #[serde(with = "humantime_serde")]
    pub budget: Duration,
    /// Consecutive failures (timeouts and errors) that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit rejects calls before one probe call is let through.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Upper bound on how long a provider's `Retry-After` keeps the circuit open.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for GuardConfig {
    fn default() -> Self {
        Self {
            budget: Duration::from_millis(300),
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl GuardConfig {
    /// Every problem with the settings, empty when they are usable.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.budget.is_zero() {
            problems.push("budget: must be greater than zero".to_owned());
        }
        if self.failure_threshold == 0 {
            problems.push("failure_threshold: must be at least 1".to_owned());
        }
        problems
    }
}

/// Counters of a guarded provider's outcomes since start.
#[derive(Debug, Default)]
pub struct ProviderStats {
    ok: AtomicU64,
    timeout: AtomicU64,
    error: AtomicU64,
    rate_limited: AtomicU64,
    circuit_open: AtomicU64,
}

/// A copy of [`ProviderStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StatsSnapshot {
    /// Calls that returned a verdict.
    pub ok: u64,
    /// Calls cut off by the time budget (or timed out inside the adapter).
    pub timeout: u64,
    /// Calls that failed otherwise (unavailable, bad response, rate limited).
    pub error: u64,
    /// Of `error`, the calls the provider rate limited.
    pub rate_limited: u64,
    /// Calls not made because the circuit was open.
    pub circuit_open: u64,
}

impl ProviderStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            ok: self.ok.load(Ordering::Relaxed),
            timeout: self.timeout.load(Ordering::Relaxed),
            error: self.error.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            circuit_open: self.circuit_open.load(Ordering::Relaxed),
        }
    }

    fn count(&self, result: &Result<RiskVerdict, RiskError>) {
        let counter = match result {
            Ok(_) => &self.ok,
            Err(RiskError::Timeout) => &self.timeout,
            Err(RiskError::CircuitOpen) => &self.circuit_open,
            Err(RiskError::RateLimited { .. }) => {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                &self.error
            }
            Err(RiskError::Unavailable(_) | RiskError::BadResponse(_)) => &self.error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The state of a circuit breaker, for `/readyz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls are rejected with [`RiskError::CircuitOpen`].
    Open,
    /// One probe call is in flight; the others are rejected until it returns.
    HalfOpen,
}

#[derive(Debug)]
enum Breaker {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// The result of one guarded call and how long the caller waited for it.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub provider: &'static str,
    pub result: Result<RiskVerdict, RiskError>,
    pub latency: Duration,
}

/// A provider behind a time budget and a circuit breaker. Cheap to clone; clones share the
/// breaker and the counters.
#[derive(Clone)]
pub struct Guarded {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    provider: Arc<dyn RiskProvider>,
    config: GuardConfig,
    breaker: Mutex<Breaker>,
    stats: ProviderStats,
}

impl Guarded {
    pub fn new(provider: Arc<dyn RiskProvider>, config: GuardConfig) -> Self {
        Self {
            inner: Arc::new(GuardInner {
                provider,
                config,
                breaker: Mutex::new(Breaker::Closed { failures: 0 }),
                stats: ProviderStats::default(),
            }),
        }
    }

    pub fn name(&self) -> &'static str {
        self.inner.provider.name()
    }

    /// The wrapped provider, e.g. to reach adapter-specific methods.
    pub fn provider(&self) -> &Arc<dyn RiskProvider> {
        &self.inner.provider
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    pub fn circuit_state(&self) -> CircuitState {
        match *self.inner.breaker.lock() {
            Breaker::Closed { .. } => CircuitState::Closed,
            Breaker::Open { until } if Instant::now() >= until => CircuitState::HalfOpen,
            Breaker::Open { .. } => CircuitState::Open,
            Breaker::HalfOpen => CircuitState::HalfOpen,
        }
    }

    /// Ask the provider, waiting at most the budget. Never waits longer than the budget, and
    /// does not call the provider at all while the circuit is open.
    pub async fn evaluate(&self, req: &RiskRequest) -> Evaluation {
        let start = Instant::now();
        let result = match self.admit(start) {
            None => Err(RiskError::CircuitOpen),
            Some(mut permit) => {
                let call = self.inner.provider.evaluate(req);
                let result = match tokio::time::timeout(self.inner.config.budget, call).await {
                    Ok(result) => result,
                    Err(_) => Err(RiskError::Timeout),
                };
                permit.finish(&result);
                result
            }
        };
        self.inner.stats.count(&result);
        Evaluation {
            provider: self.inner.provider.name(),
            result,
            latency: start.elapsed(),
        }
    }

    fn admit(&self, now: Instant) -> Option<Permit<'_>> {
        let mut breaker = self.inner.breaker.lock();
        let probe = match *breaker {
            Breaker::Closed { .. } => false,
            Breaker::Open { until } if now >= until => {
                *breaker = Breaker::HalfOpen;
                true
            }
            Breaker::Open { .. } | Breaker::HalfOpen => return None,
        };
        Some(Permit {
            guard: self,
            probe,
            done: false,
        })
    }

    fn record(&self, probe: bool, outcome: Outcome) {
        let config = &self.inner.config;
        let now = Instant::now();
        let mut breaker = self.inner.breaker.lock();
        match outcome {
            Outcome::Success => *breaker = Breaker::Closed { failures: 0 },
            Outcome::Failure { retry_after } => {
                let backoff = retry_after.map(|d| d.min(config.max_retry_after));
                let open_until = |base: Duration| now + backoff.map_or(base, |b| b.max(base));
                match &mut *breaker {
                    // Only the probe decides a half-open circuit; late answers from calls
                    // admitted before it opened do not.
                    Breaker::HalfOpen if probe => {
                        *breaker = Breaker::Open {
                            until: open_until(config.open_for),
                        }
                    }
                    Breaker::Closed { failures } => {
                        *failures += 1;
                        if *failures >= config.failure_threshold {
                            *breaker = Breaker::Open {
                                until: open_until(config.open_for),
                            };
                        } else if let Some(backoff) = backoff {
                            // A provider that says when to come back is believed at once.
                            *breaker = Breaker::Open {
                                until: now + backoff,
                            };
                        }
                    }
                    Breaker::HalfOpen | Breaker::Open { .. } => {}
                }
            }
        }
    }
}

enum Outcome {
    Success,
    Failure { retry_after: Option<Duration> },
}

/// Admission to call the provider. A probe dropped before it finished (the caller gave up)
/// counts as a failed probe, so the circuit cannot stay half-open forever.
struct Permit<'a> {
    guard: &'a Guarded,
    probe: bool,
    done: bool,
}

impl Permit<'_> {
    fn finish(&mut self, result: &Result<RiskVerdict, RiskError>) {
        self.done = true;
        let outcome = match result {
            Ok(_) => Outcome::Success,
            Err(RiskError::RateLimited { retry_after }) => Outcome::Failure {
                retry_after: *retry_after,
            },
            Err(_) => Outcome::Failure { retry_after: None },
        };
        self.guard.record(self.probe, outcome);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.guard
                .record(true, Outcome::Failure { retry_after: None });
        }
    }
}

/// Problems building a provider from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid provider configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("cannot build the provider's HTTP client: {0}")]
    Client(String),
    #[error("the provider must be built inside a tokio runtime")]
    NoRuntime,
}

/// A reqwest client for calls to a provider, with the crypto provider installed.
pub(crate) fn http_client(
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client, BuildError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        .user_agent(concat!("otpgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuildError::Client(e.to_string()))
}

/// Maps a reqwest failure to a provider error without echoing URLs (they may carry ids).
pub(crate) fn transport_error(err: &reqwest::Error) -> RiskError {
    if err.is_timeout() {
        RiskError::Timeout
    } else if err.is_connect() {
        RiskError::Unavailable("connection failed".to_owned())
    } else if err.is_decode() || err.is_body() {
        RiskError::BadResponse("unreadable body".to_owned())
    } else {
        RiskError::Unavailable("request failed".to_owned())
    }
}

/// Most bytes of a provider's answer that are read. Risk answers are a few hundred bytes,
/// HUMAN's challenge page a few KiB.
pub(crate) const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// A provider's answer body, at most [`MAX_ANSWER_BYTES`]. Read whole, a provider that
/// floods its answer would grow memory for as long as the budget lets it.
pub(crate) async fn read_answer(mut rsp: reqwest::Response) -> Result<Bytes, RiskError> {
    let too_large = || RiskError::BadResponse("answer too large".to_owned());
    if rsp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = rsp.chunk().await.map_err(|e| transport_error(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses a `Retry-After` header given in seconds (the form Prove and HUMAN use).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub(crate) fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Fails while `failing` is set; counts its calls.
    struct Flaky {
        failing: std::sync::atomic::AtomicBool,
        calls: AtomicUsize,
        delay: Duration,
    }

    #[async_trait]
    impl RiskProvider for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn evaluate(&self, _req: &RiskRequest) -> Result<RiskVerdict, RiskError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.failing.load(Ordering::SeqCst) {
                Err(RiskError::Unavailable("down".into()))
            } else {
                Ok(RiskVerdict::allow())
            }
        }
    }

    fn flaky(failing: bool, delay: Duration) -> Arc<Flaky> {
        Arc::new(Flaky {
            failing: failing.into(),
            calls: AtomicUsize::new(0),
            delay,
        })
    }

    fn config() -> GuardConfig {
        GuardConfig {
            budget: Duration::from_millis(300),
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_threshold_and_a_successful_probe_closes_it() {
        let provider = flaky(true, Duration::ZERO);
        let guard = Guarded::new(provider.clone(), config());
        let req = RiskRequest::default();
        for _ in 0..3 {
            let e = guard.evaluate(&req).await;
            assert!(matches!(e.result, Err(RiskError::Unavailable(_))));
        }
        assert_eq!(guard.circuit_state(), CircuitState::Open);
        let e = guard.evaluate(&req).await;
        assert_eq!(e.result, Err(RiskError::CircuitOpen));
        assert_eq!(
            provider.calls.load(Ordering::SeqCst),
            3,
            "open circuit must not call"
        );

        tokio::time::advance(Duration::from_secs(10)).await;
        // The probe fails: open again for another cool-down.
        let e = guard.evaluate(&req).await;
        assert!(matches!(e.result, Err(RiskError::Unavailable(_))));
        assert_eq!(guard.circuit_state(), CircuitState::Open);

        tokio::time::advance(Duration::from_secs(10)).await;
        provider.failing.store(false, Ordering::SeqCst);
        assert!(guard.evaluate(&req).await.result.is_ok());
        assert_eq!(guard.circuit_state(), CircuitState::Closed);
        let stats = guard.stats();
        assert_eq!((stats.ok, stats.error, stats.circuit_open), (1, 4, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn only_one_probe_goes_through_a_half_open_circuit() {
        let provider = flaky(true, Duration::from_millis(100));
        let guard = Guarded::new(provider.clone(), config());
        let req = RiskRequest::default();
        for _ in 0..3 {
            guard.evaluate(&req).await;
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        provider.failing.store(false, Ordering::SeqCst);
        let (probe, other) = tokio::join!(guard.evaluate(&req), async {
            tokio::task::yield_now().await;
            guard.evaluate(&req).await
        });
        assert!(probe.result.is_ok());
        assert_eq!(other.result, Err(RiskError::CircuitOpen));
        assert_eq!(provider.calls.load(Ordering::SeqCst), 4);
        assert_eq!(guard.circuit_state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_reopens_the_circuit() {
        let provider = flaky(true, Duration::ZERO);
        let guard = Guarded::new(provider.clone(), config());
        let req = RiskRequest::default();
        for _ in 0..3 {
            guard.evaluate(&req).await;
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        provider.failing.store(false, Ordering::SeqCst);
        let slow = Guarded {
            inner: guard.inner.clone(),
        };
        // The caller gives up on the probe before it returns.
        let probe = tokio::time::timeout(Duration::from_millis(1), async {
            let p = slow.admit(Instant::now());
            assert!(p.as_ref().is_some_and(|p| p.probe));
            std::future::pending::<()>().await;
            drop(p);
        });
        assert!(probe.await.is_err());
        assert_eq!(guard.circuit_state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_cuts_a_slow_provider_and_counts_a_timeout() {
        let guard = Guarded::new(flaky(false, Duration::from_secs(2)), config());
        let e = guard.evaluate(&RiskRequest::default()).await;
        assert_eq!(e.result, Err(RiskError::Timeout));
        assert_eq!(e.latency, Duration::from_millis(300));
        assert_eq!(guard.stats().timeout, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_opens_the_circuit_until_then() {
        struct Limited;
        #[async_trait]
        impl RiskProvider for Limited {
            fn name(&self) -> &'static str {
                "limited"
            }
            async fn evaluate(&self, _: &RiskRequest) -> Result<RiskVerdict, RiskError> {
                Err(RiskError::RateLimited {
                    retry_after: Some(Duration::from_secs(20)),
                })
            }
        }
        let guard = Guarded::new(Arc::new(Limited), config());
        let req = RiskRequest::default();
        assert!(matches!(
            guard.evaluate(&req).await.result,
            Err(RiskError::RateLimited { .. })
        ));
        assert_eq!(
            guard.evaluate(&req).await.result,
            Err(RiskError::CircuitOpen)
        );
        tokio::time::advance(Duration::from_secs(19)).await;
        assert_eq!(guard.circuit_state(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(guard.circuit_state(), CircuitState::HalfOpen);
        assert_eq!(guard.stats().rate_limited, 1);
    }

    #[test]
    fn provider_headers_keep_only_what_providers_read() {
        let mut h = HeaderMap::new();
        h.insert("x-px-authorization", HeaderValue::from_static("3:abc"));
        h.insert("cookie", HeaderValue::from_static("_px3=x"));
        h.insert("authorization", HeaderValue::from_static("Bearer secret"));
        h.insert("x-phone", HeaderValue::from_static("+15551234567"));
        h.insert("accept-language", HeaderValue::from_static("en"));
        let out = provider_headers(&h, &[HeaderName::from_static("x-phone")]);
        assert!(out.contains_key("x-px-authorization"));
        assert!(out.contains_key("cookie"));
        assert!(out.contains_key("x-phone"));
        assert!(!out.contains_key("authorization"));
        assert!(!out.contains_key("accept-language"));
    }

    #[test]
    fn fail_mode_names() {
        #[derive(Deserialize)]
        struct C {
            m: Vec<FailMode>,
        }
        let c: C = serde_json::from_str(r#"{"m":["open","closed","step_up"]}"#).unwrap();
        assert_eq!(
            c.m,
            vec![FailMode::Open, FailMode::Closed, FailMode::StepUp]
        );
    }
}
