//! Risk providers: what otpgate asks before a request that would make Entra send a one-time
//! passcode is forwarded.
//!
//! [`RiskProvider`] is the one trait; [`human`], [`prove`] and [`mock`] implement it.
//! [`Guarded`] wraps any provider with a time budget and a circuit breaker. A provider error
//! is an input to the caller's policy (resolved by its [`FailMode`]), never a 500.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use serde::{Deserialize, Serialize};

mod guard;
pub mod human;
pub mod mock;
pub mod prove;
pub mod routes;

pub use guard::{CircuitState, GuardConfig, Guarded};

pub use human::{HumanConfig, HumanProvider};
pub use mock::{MockConfig, MockProvider};
pub use prove::{ProveConfig, ProveProvider};

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
    /// W3C `traceparent` for the provider call, when the request is traced.
    pub traceparent: Option<http::HeaderValue>,
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
            traceparent: None,
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
pub(crate) fn provider_headers(headers: &HeaderMap, extra: &[HeaderName]) -> HeaderMap {
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
    pub(crate) fn to_response(&self) -> http::Response<Bytes> {
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
    pub(crate) fn new(action: RiskAction) -> Self {
        Self {
            action,
            score: None,
            reasons: Vec::new(),
            challenge: None,
            reference: None,
            possession: None,
        }
    }

    pub(crate) fn allow() -> Self {
        Self::new(RiskAction::Allow)
    }

    pub(crate) fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reasons.push(reason.into());
        self
    }

    pub(crate) fn with_score(mut self, score: f64) -> Self {
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

impl FailMode {
    /// The config spelling: `open`, `closed`, `step_up`.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
            FailMode::StepUp => "step_up",
        }
    }
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

/// A reqwest client for calls to a provider, on otpgate's own TLS config (reqwest is built
/// without a crypto provider of its own).
pub(crate) fn http_client(
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .use_preconfigured_tls(
            crate::tls::webpki_client_config().map_err(|e| BuildError::Client(e.to_string()))?,
        )
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
