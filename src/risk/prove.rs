//! Prove adapter (reference part B): Platform v3 Unify with `checkReputation: true` for the
//! destination phone, mapped to a verdict per B9.
//!
//! One evaluation is `POST /v3/unify` (`possessionType: "none"` by default: otpgate lets
//! Entra send the OTP itself, B1) then `POST /v3/unify-status` for the evaluation. The
//! OAuth2 client-credentials token (B3) is cached, refreshed a margin before it expires,
//! and dropped and fetched again when Prove answers 401.
//!
//! Prove needs the number. An MFA challenge names only a method id and Entra shows only a
//! masked label, so the app may send the full number in a configured header
//! (`phone_header`). That header is client-controlled: a client could name a clean number
//! while Entra texts another, so the header's number is used only when it agrees with the
//! masked label Entra gave for the method (country code and every visible digit,
//! [`MaskedPhone`]). A number that disagrees is denied (`prove:phone_mismatch`); one that
//! cannot be checked because no label was learned counts as no number. Without a number the
//! verdict is `missing_phone_action` (default StepUp) with the reason `prove:phone_unknown`
//! (or `prove:phone_unverified`), and Prove is not called.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::entra::label::MaskedPhone;

use super::{
    http_client, read_answer, retry_after, transport_error, BuildError, Channel, ProviderChallenge,
    RiskAction, RiskError, RiskProvider, RiskRequest, RiskVerdict,
};

pub const TOKEN_PATH: &str = "/token";
pub const UNIFY_PATH: &str = "/v3/unify";
pub const UNIFY_STATUS_PATH: &str = "/v3/unify-status";
pub(crate) const UNIFY_BIND_PATH: &str = "/v3/unify-bind";

/// How Prove checks possession of the phone (B4 `possessionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PossessionType {
    /// Customer-supplied possession: Prove assesses the number, Entra sends the OTP, and
    /// `/v3/unify-bind` follows a passed OTP (B1).
    #[default]
    None,
    /// Prove Key on the device, SMS OTP fallback.
    Mobile,
    /// Instant Link.
    Desktop,
}

impl PossessionType {
    pub fn as_str(self) -> &'static str {
        match self {
            PossessionType::None => "none",
            PossessionType::Mobile => "mobile",
            PossessionType::Desktop => "desktop",
        }
    }
}

/// Configuration of the Prove adapter.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProveConfig {
    /// Platform base URL. Default `https://platform.proveapis.com` (prod-us); others:
    /// `https://platform.uat.proveapis.com` (sandbox), `https://platform.eu.proveapis.com`,
    /// `https://platform.uat.eu.proveapis.com`. No `/v3` suffix.
    pub base_url: String,
    /// OAuth2 client id. Required.
    pub client_id: String,
    /// OAuth2 client secret. Required.
    pub client_secret: String,
    /// HTTP timeout of one call to Prove. The gateway's budget is applied on top.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// TCP + TLS connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Refresh the access token this long before it expires (the SDKs use 60 s).
    #[serde(with = "humantime_serde")]
    pub token_refresh_margin: Duration,
    /// `possessionType` of the Unify call made per evaluation.
    pub possession_type: PossessionType,
    /// A request header in which the app sends the full E.164 number when the request
    /// itself has none (MFA challenges). Unset: only the request's own number is used.
    pub phone_header: Option<String>,
    /// The verdict when no phone number is known: `step_up` (default), `allow`, or `deny`.
    pub missing_phone_action: RiskAction,
    /// Global Fraud Policy failure codes that deny the OTP (B9).
    pub deny_codes: Vec<u32>,
    /// Failure codes that call for a step-up.
    pub step_up_codes: Vec<u32>,
    /// The verdict when an evaluation category fails with none of the codes above.
    pub unlisted_failure_action: RiskAction,
    /// A trust score (0–1000), when Prove sends one, at or above which the number is
    /// trusted. Below it: step-up.
    pub trust_score_allow: u32,
    /// A trust score at or below which the OTP is denied.
    pub trust_score_deny: u32,
    /// Send the client IP as `ipAddress`.
    pub send_ip_address: bool,
}

impl Default for ProveConfig {
    fn default() -> Self {
        Self {
            base_url: "https://platform.proveapis.com".to_owned(),
            client_id: String::new(),
            client_secret: String::new(),
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            token_refresh_margin: Duration::from_secs(60),
            possession_type: PossessionType::None,
            phone_header: None,
            missing_phone_action: RiskAction::StepUp,
            deny_codes: vec![9131, 9132, 9134, 9135, 9136, 9137],
            step_up_codes: vec![9133, 9161, 9162, 9163, 9171],
            unlisted_failure_action: RiskAction::StepUp,
            trust_score_allow: 630,
            trust_score_deny: 300,
            send_ip_address: true,
        }
    }
}

impl std::fmt::Debug for ProveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProveConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"***")
            .field("possession_type", &self.possession_type)
            .field("phone_header", &self.phone_header)
            .field("missing_phone_action", &self.missing_phone_action)
            .finish_non_exhaustive()
    }
}

impl ProveConfig {
    /// Every problem with the configuration, empty when it is usable.
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        match reqwest::Url::parse(&self.base_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                if u.path().trim_end_matches('/').ends_with("/v3") {
                    p.push("base_url: drop the /v3 suffix (Prove answers 403)".to_owned());
                }
            }
            _ => p.push("base_url: not an http(s) URL".to_owned()),
        }
        if self.client_id.trim().is_empty() {
            p.push("client_id: required".to_owned());
        }
        if self.client_secret.is_empty() {
            p.push("client_secret: required".to_owned());
        }
        if let Some(h) = &self.phone_header {
            if HeaderName::from_bytes(h.as_bytes()).is_err() {
                p.push("phone_header: invalid header name".to_owned());
            }
        }
        if self.trust_score_deny >= self.trust_score_allow || self.trust_score_allow > 1000 {
            p.push("trust_score_deny, trust_score_allow: 0 <= deny < allow <= 1000".to_owned());
        }
        if self.request_timeout.is_zero() {
            p.push("request_timeout: must be greater than zero".to_owned());
        }
        p
    }

    fn phone_header_name(&self) -> Option<HeaderName> {
        let h = self.phone_header.as_ref()?;
        HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()
    }
}

/// Unify's `success`: a string in the SDKs, a JSON boolean in some documented examples
/// (B4 conflict); both are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum UnifySuccess {
    True,
    False,
    Pending,
    PossessionRequired,
    Other(String),
}

impl From<UnifySuccess> for String {
    fn from(s: UnifySuccess) -> String {
        s.as_str().to_owned()
    }
}

impl UnifySuccess {
    pub fn as_str(&self) -> &str {
        match self {
            UnifySuccess::True => "true",
            UnifySuccess::False => "false",
            UnifySuccess::Pending => "pending",
            UnifySuccess::PossessionRequired => "possession_required",
            UnifySuccess::Other(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for UnifySuccess {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Str(String),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::Bool(true) => UnifySuccess::True,
            Raw::Bool(false) => UnifySuccess::False,
            Raw::Str(s) => match s.as_str() {
                "true" => UnifySuccess::True,
                "false" => UnifySuccess::False,
                "pending" => UnifySuccess::Pending,
                "possession_required" => UnifySuccess::PossessionRequired,
                _ => UnifySuccess::Other(s),
            },
        })
    }
}

/// One Global Fraud Policy category of an evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationResult {
    /// `pass` or `fail`.
    pub result: String,
    /// Failure code → text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failure_reasons: BTreeMap<String, String>,
}

/// A Unify, Unify-Status or Unify-Bind response (B4). Holds the phone number: never log it.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnifyResponse {
    pub success: UnifySuccess,
    #[serde(default)]
    pub auth_token: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub phone_number: Option<String>,
    #[serde(default)]
    pub prove_id: Option<String>,
    #[serde(default)]
    pub client_human_id: Option<String>,
    #[serde(default)]
    pub client_request_id: Option<String>,
    #[serde(default)]
    pub device_id: Option<String>,
    /// Category (`authentication`, `risk`, `identification`, `compliance`) → result.
    #[serde(default)]
    pub evaluation: BTreeMap<String, EvaluationResult>,
    /// A trust score (0–1000) if Prove includes one. Not documented for v3 (reference C);
    /// read when present.
    #[serde(default)]
    pub trust_score: Option<f64>,
}

impl std::fmt::Debug for UnifyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnifyResponse")
            .field("success", &self.success)
            .field("correlation_id", &self.correlation_id)
            .field("evaluation", &self.evaluation)
            .field("trust_score", &self.trust_score)
            .finish_non_exhaustive()
    }
}

/// What the client SDK needs to prove possession (B4 response).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PossessionStart {
    /// One-time JWT for the Prove client SDK (~15 min).
    pub auth_token: String,
    pub correlation_id: String,
    /// Our id of this session, needed again for status and bind.
    pub client_request_id: String,
}

impl std::fmt::Debug for PossessionStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PossessionStart")
            .field("correlation_id", &self.correlation_id)
            .field("client_request_id", &self.client_request_id)
            .finish_non_exhaustive()
    }
}

/// Rules that turn a Unify response into a verdict (B9).
#[derive(Debug, Clone)]
struct Policy {
    deny_codes: Vec<u32>,
    step_up_codes: Vec<u32>,
    unlisted_failure_action: RiskAction,
    trust_score_allow: f64,
    trust_score_deny: f64,
}

impl Policy {
    /// B9: `success == false`, a deny code, or a failed `risk` category deny; a step-up
    /// code or an unlisted failure steps up; trust-score bands apply when a score is sent;
    /// `true` and `possession_required` (send our OTP, then bind) allow.
    fn verdict(&self, r: &UnifyResponse) -> RiskVerdict {
        let mut reasons = vec![format!("prove:success={}", r.success.as_str())];
        let mut codes = Vec::new();
        let mut failed = Vec::new();
        for (category, e) in &r.evaluation {
            if e.result.eq_ignore_ascii_case("fail") {
                failed.push(category.as_str());
                reasons.push(format!("prove:{category}=fail"));
                for code in e.failure_reasons.keys() {
                    reasons.push(format!("prove:{code}"));
                    if let Ok(c) = code.parse::<u32>() {
                        codes.push(c);
                    }
                }
            }
        }
        let has = |list: &[u32]| codes.iter().any(|c| list.contains(c));
        let ts = r.trust_score;
        let action = if r.success == UnifySuccess::False
            || has(&self.deny_codes)
            || failed.contains(&"risk")
            || ts.is_some_and(|t| t <= self.trust_score_deny)
        {
            RiskAction::Deny
        } else if has(&self.step_up_codes) {
            RiskAction::StepUp
        } else if !failed.is_empty() {
            self.unlisted_failure_action
        } else if ts.is_some_and(|t| t < self.trust_score_allow) {
            RiskAction::StepUp
        } else {
            match r.success {
                UnifySuccess::True | UnifySuccess::PossessionRequired => RiskAction::Allow,
                _ => RiskAction::StepUp,
            }
        };
        let mut v = RiskVerdict::new(action);
        v.reasons = reasons;
        v.score = ts.map(|t| (1.0 - t / 1000.0).clamp(0.0, 1.0));
        v.reference = r.correlation_id.clone();
        v
    }
}

/// The cached access token. One refresh at a time; callers that find a fresh token never
/// wait.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    current: parking_lot::Mutex<Option<Cached>>,
    refresh: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    refresh_at: Instant,
}

impl TokenCache {
    fn fresh(&self) -> Option<String> {
        let current = self.current.lock();
        let c = current.as_ref()?;
        (Instant::now() < c.refresh_at).then(|| c.token.clone())
    }

    /// The cached token, or a new one from `fetch` (`(token, lifetime)`), replaced
    /// `margin` before the lifetime ends.
    pub(crate) async fn get<F, Fut>(&self, margin: Duration, fetch: F) -> Result<String, RiskError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), RiskError>>,
    {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let _one_at_a_time = self.refresh.lock().await;
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        let (token, lifetime) = fetch().await?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        *self.current.lock() = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    /// Drops `token` if it is still the cached one (Prove rejected it).
    pub(crate) fn invalidate(&self, token: &str) {
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|c| c.token == token) {
            *current = None;
        }
    }

    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    token_type: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
}

/// An `E.164` number: `+` and 8 to 15 digits.
fn e164(s: &str) -> Option<&str> {
    let digits = s.strip_prefix('+')?;
    (8..=15).contains(&digits.len()).then_some(())?;
    digits.bytes().all(|b| b.is_ascii_digit()).then_some(s)
}

/// The Prove adapter. Cheap to clone.
#[derive(Clone)]
pub struct ProveProvider {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    base: String,
    client_id: String,
    client_secret: String,
    refresh_margin: Duration,
    possession_type: PossessionType,
    phone_header: Option<HeaderName>,
    missing_phone_action: RiskAction,
    send_ip: bool,
    policy: Policy,
    tokens: TokenCache,
}

impl ProveProvider {
    pub fn new(cfg: &ProveConfig) -> Result<Self, BuildError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(BuildError::Invalid(problems));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client: http_client(cfg.request_timeout, cfg.connect_timeout)?,
                base: cfg.base_url.trim_end_matches('/').to_owned(),
                client_id: cfg.client_id.clone(),
                client_secret: cfg.client_secret.clone(),
                refresh_margin: cfg.token_refresh_margin,
                possession_type: cfg.possession_type,
                phone_header: cfg.phone_header_name(),
                missing_phone_action: cfg.missing_phone_action,
                send_ip: cfg.send_ip_address,
                policy: Policy {
                    deny_codes: cfg.deny_codes.clone(),
                    step_up_codes: cfg.step_up_codes.clone(),
                    unlisted_failure_action: cfg.unlisted_failure_action,
                    trust_score_allow: f64::from(cfg.trust_score_allow),
                    trust_score_deny: f64::from(cfg.trust_score_deny),
                },
                tokens: TokenCache::default(),
            }),
        })
    }

    /// Access tokens fetched since start (for metrics and tests).
    pub fn token_fetches(&self) -> u64 {
        self.inner.tokens.fetches()
    }

    /// The verdict B9 gives a Unify / Unify-Status / Unify-Bind response.
    pub fn verdict(&self, r: &UnifyResponse) -> RiskVerdict {
        self.inner.policy.verdict(r)
    }

    /// Starts a possession check for `phone` (`POST /v3/unify`, with `checkReputation`).
    /// Returns what the client SDK needs; follow with [`Self::possession_status`].
    pub async fn start_possession(
        &self,
        phone: &str,
        possession: PossessionType,
        ip: Option<IpAddr>,
        final_target_url: Option<&str>,
    ) -> Result<PossessionStart, RiskError> {
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let r = self
            .unify(
                phone,
                possession,
                ip,
                final_target_url,
                &client_request_id,
                None,
            )
            .await?;
        match (r.auth_token, r.correlation_id) {
            (Some(auth_token), Some(correlation_id)) => Ok(PossessionStart {
                auth_token,
                correlation_id,
                client_request_id,
            }),
            _ => Err(RiskError::BadResponse(
                "unify: authToken or correlationId missing".into(),
            )),
        }
    }

    /// `POST /v3/unify-status`: where a possession check stands, with its evaluation.
    pub async fn possession_status(
        &self,
        correlation_id: &str,
        client_request_id: &str,
    ) -> Result<UnifyResponse, RiskError> {
        let body = json!({"correlationId": correlation_id, "clientRequestId": client_request_id});
        self.call(UNIFY_STATUS_PATH, &body, None).await
    }

    /// `POST /v3/unify-bind`: bind the number to the session. Call only after our own OTP
    /// passed (B4).
    pub async fn bind(
        &self,
        correlation_id: &str,
        phone: &str,
        client_request_id: &str,
    ) -> Result<UnifyResponse, RiskError> {
        let body = json!({
            "correlationId": correlation_id,
            "phoneNumber": phone,
            "clientRequestId": client_request_id,
        });
        self.call(UNIFY_BIND_PATH, &body, None).await
    }

    async fn unify(
        &self,
        phone: &str,
        possession: PossessionType,
        ip: Option<IpAddr>,
        final_target_url: Option<&str>,
        client_request_id: &str,
        traceparent: Option<&http::HeaderValue>,
    ) -> Result<UnifyResponse, RiskError> {
        let mut body = json!({
            "possessionType": possession.as_str(),
            "clientRequestId": client_request_id,
            "phoneNumber": phone,
            "checkReputation": true,
        });
        if let Some(obj) = body.as_object_mut() {
            if let Some(ip) = ip.filter(|ip| !ip.is_unspecified()) {
                obj.insert("ipAddress".into(), json!(ip.to_string()));
            }
            if let Some(url) = final_target_url {
                obj.insert("finalTargetUrl".into(), json!(url));
            }
        }
        self.call(UNIFY_PATH, &body, traceparent).await
    }

    async fn fetch_token(&self) -> Result<(String, Duration), RiskError> {
        let inner = &self.inner;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &inner.client_id)
            .append_pair("client_secret", &inner.client_secret)
            .append_pair("grant_type", "client_credentials")
            .finish();
        let rsp = inner
            .client
            .post(format!("{}{TOKEN_PATH}", inner.base))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(form)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = rsp.status();
        let headers = rsp.headers().clone();
        let bytes = read_answer(rsp).await?;
        let t: TokenResponse = interpret(status, &headers, &bytes, "token")?;
        if !t.token_type.eq_ignore_ascii_case("bearer") || t.access_token.is_empty() {
            return Err(RiskError::BadResponse("token: not a bearer token".into()));
        }
        Ok((
            t.access_token,
            Duration::from_secs(t.expires_in.unwrap_or(3600)),
        ))
    }

    async fn token(&self) -> Result<String, RiskError> {
        self.inner
            .tokens
            .get(self.inner.refresh_margin, || self.fetch_token())
            .await
    }

    /// A JSON call with the bearer token; on 401 the token is dropped and the call made
    /// once more with a fresh one.
    /// `traceparent`: the W3C trace context of a traced request, sent along.
    async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        traceparent: Option<&http::HeaderValue>,
    ) -> Result<T, RiskError> {
        let url = format!("{}{path}", self.inner.base);
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let mut post = self.inner.client.post(&url).bearer_auth(&token).json(body);
            if let Some(tp) = traceparent {
                post = post.header("traceparent", tp.clone());
            }
            let rsp = post.send().await.map_err(|e| transport_error(&e))?;
            let status = rsp.status();
            if status == StatusCode::UNAUTHORIZED && !retried {
                self.inner.tokens.invalidate(&token);
                retried = true;
                continue;
            }
            let headers = rsp.headers().clone();
            let bytes = read_answer(rsp).await?;
            return interpret(status, &headers, &bytes, path);
        }
    }

    /// The number to ask Prove about: the request's own, else the header's when the label
    /// Entra showed for the method vouches for it.
    fn phone(&self, req: &RiskRequest) -> KnownPhone {
        if let Some(p) = req.phone.as_deref().and_then(e164) {
            return KnownPhone::Checked(p.to_owned());
        }
        let claimed = self
            .inner
            .phone_header
            .as_ref()
            .and_then(|h| req.headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| e164(v.trim()));
        let Some(claimed) = claimed else {
            return KnownPhone::Unknown;
        };
        match req.masked_target.as_deref().and_then(MaskedPhone::parse) {
            Some(label) if label.agrees_with(claimed) => KnownPhone::Checked(claimed.to_owned()),
            Some(_) => KnownPhone::Mismatch,
            None => KnownPhone::Unverified,
        }
    }
}

/// The number a send goes to, as far as Prove may be told.
enum KnownPhone {
    /// The request's own number, or the header's when the masked label agrees.
    Checked(String),
    /// The header names a number the masked label rules out.
    Mismatch,
    /// The header names a number, but no label was learned to check it against.
    Unverified,
    Unknown,
}

/// Maps Prove's HTTP answer to a parsed body or an error (B7).
fn interpret<T: DeserializeOwned>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<T, RiskError> {
    if status.is_success() {
        return serde_json::from_slice(body)
            .map_err(|_| RiskError::BadResponse(format!("{what}: unexpected body")));
    }
    let code = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.code)
        .map(|c| format!(" code {c}"))
        .unwrap_or_default();
    let detail = format!("{what}: http {}{code}", status.as_u16());
    Err(match status {
        StatusCode::TOO_MANY_REQUESTS => RiskError::RateLimited {
            retry_after: retry_after(headers),
        },
        StatusCode::UNAUTHORIZED => {
            RiskError::Unavailable(format!("{detail} (credentials rejected)"))
        }
        s if s.is_server_error() => RiskError::Unavailable(detail),
        _ => RiskError::BadResponse(detail),
    })
}

#[async_trait]
impl RiskProvider for ProveProvider {
    fn name(&self) -> &'static str {
        "prove"
    }

    async fn evaluate(&self, req: &RiskRequest) -> Result<RiskVerdict, RiskError> {
        if req.channel != Channel::Sms {
            return Ok(RiskVerdict::allow().with_reason("prove:not_applicable_channel"));
        }
        let phone = match self.phone(req) {
            KnownPhone::Checked(phone) => phone,
            KnownPhone::Mismatch => {
                return Ok(RiskVerdict::new(RiskAction::Deny).with_reason("prove:phone_mismatch"))
            }
            KnownPhone::Unverified => {
                return Ok(RiskVerdict::new(self.inner.missing_phone_action)
                    .with_reason("prove:phone_unverified"))
            }
            KnownPhone::Unknown => {
                return Ok(RiskVerdict::new(self.inner.missing_phone_action)
                    .with_reason("prove:phone_unknown"))
            }
        };
        let ip = self.inner.send_ip.then_some(req.client_ip);
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let possession = self.inner.possession_type;
        let started = self
            .unify(
                &phone,
                possession,
                ip,
                None,
                &client_request_id,
                req.traceparent.as_ref(),
            )
            .await?;
        let decided = !started.evaluation.is_empty()
            || matches!(started.success, UnifySuccess::False | UnifySuccess::True);
        if decided {
            return Ok(self.verdict(&started));
        }
        let Some(correlation_id) = started.correlation_id.clone() else {
            return Err(RiskError::BadResponse(
                "unify: correlationId missing".into(),
            ));
        };
        if possession != PossessionType::None {
            // Prove itself must check possession: hand the client SDK its token.
            let mut v =
                RiskVerdict::new(RiskAction::StepUp).with_reason("prove:possession_pending");
            v.reference = Some(correlation_id.clone());
            v.possession = Some(crate::risk::PossessionSession {
                correlation_id: correlation_id.clone(),
                client_request_id: client_request_id.clone(),
            });
            let body = json!({"authToken": started.auth_token, "correlationId": correlation_id});
            v.challenge = Some(ProviderChallenge {
                status: StatusCode::FORBIDDEN,
                content_type: "application/json".to_owned(),
                body: Bytes::from(body.to_string()),
                headers: HeaderMap::new(),
            });
            return Ok(v);
        }
        let status = self
            .possession_status(&correlation_id, &client_request_id)
            .await?;
        let mut v = self.verdict(&status);
        v.reference = Some(correlation_id);
        Ok(v)
    }

    fn wanted_headers(&self) -> Vec<HeaderName> {
        self.inner.phone_header.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn policy() -> Policy {
        let cfg = ProveConfig::default();
        Policy {
            deny_codes: cfg.deny_codes,
            step_up_codes: cfg.step_up_codes,
            unlisted_failure_action: cfg.unlisted_failure_action,
            trust_score_allow: 630.0,
            trust_score_deny: 300.0,
        }
    }

    fn response(json: &str) -> UnifyResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn success_is_accepted_as_string_or_boolean() {
        assert_eq!(response(r#"{"success":true}"#).success, UnifySuccess::True);
        assert_eq!(
            response(r#"{"success":"true"}"#).success,
            UnifySuccess::True
        );
        assert_eq!(
            response(r#"{"success":false}"#).success,
            UnifySuccess::False
        );
        assert_eq!(
            response(r#"{"success":"possession_required"}"#).success,
            UnifySuccess::PossessionRequired
        );
    }

    #[test]
    fn b9_mapping_table() {
        let p = policy();
        let cases = [
            (
                r#"{"success":"true","evaluation":{"authentication":{"result":"pass"},"risk":{"result":"pass"}}}"#,
                RiskAction::Allow,
            ),
            (
                r#"{"success":"possession_required","evaluation":{"authentication":{"result":"pass"},"risk":{"result":"pass"}}}"#,
                RiskAction::Allow,
            ),
            (r#"{"success":"false"}"#, RiskAction::Deny),
            (
                r#"{"success":"possession_required","evaluation":{"authentication":{"result":"fail","failureReasons":{"9132":"public SMS site"}}}}"#,
                RiskAction::Deny,
            ),
            (
                r#"{"success":"possession_required","evaluation":{"authentication":{"result":"fail","failureReasons":{"9135":"SIM swap"}}}}"#,
                RiskAction::Deny,
            ),
            (
                r#"{"success":"possession_required","evaluation":{"risk":{"result":"fail"}}}"#,
                RiskAction::Deny,
            ),
            (
                r#"{"success":"possession_required","evaluation":{"authentication":{"result":"fail","failureReasons":{"9161":"short tenure"}}}}"#,
                RiskAction::StepUp,
            ),
            (
                r#"{"success":"possession_required","evaluation":{"identification":{"result":"fail","failureReasons":{"9001":"x"}}}}"#,
                RiskAction::StepUp,
            ),
            (r#"{"success":"pending"}"#, RiskAction::StepUp),
            (r#"{"success":"true","trustScore":925}"#, RiskAction::Allow),
            (r#"{"success":"true","trustScore":500}"#, RiskAction::StepUp),
            (r#"{"success":"true","trustScore":300}"#, RiskAction::Deny),
        ];
        for (json, want) in cases {
            assert_eq!(p.verdict(&response(json)).action, want, "{json}");
        }
        let v = p.verdict(&response(
            r#"{"success":"false","correlationId":"c-1","evaluation":{"authentication":{"result":"fail","failureReasons":{"9132":"x"}}}}"#,
        ));
        assert!(v.reasons.contains(&"prove:9132".to_owned()));
        assert!(v.reasons.contains(&"prove:authentication=fail".to_owned()));
        assert_eq!(v.reference.as_deref(), Some("c-1"));
    }

    #[test]
    fn errors_map_by_status() {
        let h = HeaderMap::new();
        let e = interpret::<Value>(
            StatusCode::BAD_REQUEST,
            &h,
            br#"{"code":8001,"message":"m"}"#,
            "unify",
        );
        assert_eq!(
            e.unwrap_err(),
            RiskError::BadResponse("unify: http 400 code 8001".into())
        );
        let mut h429 = HeaderMap::new();
        h429.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(
            interpret::<Value>(StatusCode::TOO_MANY_REQUESTS, &h429, b"", "unify").unwrap_err(),
            RiskError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(matches!(
            interpret::<Value>(StatusCode::BAD_GATEWAY, &h, b"", "unify"),
            Err(RiskError::Unavailable(_))
        ));
        assert!(matches!(
            interpret::<UnifyResponse>(StatusCode::OK, &h, b"{not json", "unify"),
            Err(RiskError::BadResponse(_))
        ));
    }

    #[test]
    fn e164_shape() {
        assert_eq!(e164("+447400123456"), Some("+447400123456"));
        for bad in [
            "447400123456",
            "+44 7400 123456",
            "+1234567",
            "+1234567890123456",
            "+44******123",
        ] {
            assert_eq!(e164(bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn token_is_cached_and_refreshed_before_expiry_and_after_invalidation() {
        let cache = TokenCache::default();
        let margin = Duration::from_secs(60);
        let n = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            let i = n.fetch_add(1, Ordering::SeqCst);
            Ok((format!("tok-{i}"), Duration::from_secs(3600)))
        };
        assert_eq!(cache.get(margin, fetch).await.unwrap(), "tok-0");
        assert_eq!(cache.get(margin, fetch).await.unwrap(), "tok-0");
        tokio::time::advance(Duration::from_secs(3539)).await;
        assert_eq!(cache.get(margin, fetch).await.unwrap(), "tok-0");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            cache.get(margin, fetch).await.unwrap(),
            "tok-1",
            "refreshed 60 s early"
        );
        cache.invalidate("tok-0"); // stale: does not drop the current token
        assert_eq!(cache.get(margin, fetch).await.unwrap(), "tok-1");
        cache.invalidate("tok-1");
        assert_eq!(cache.get(margin, fetch).await.unwrap(), "tok-2");
        assert_eq!(cache.fetches(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_refresh() {
        let cache = Arc::new(TokenCache::default());
        let n = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..5 {
            let (cache, n) = (cache.clone(), n.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get(Duration::from_secs(60), || async {
                        n.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(("t".to_owned(), Duration::from_secs(3600)))
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), "t");
        }
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn config_validation() {
        let cfg = ProveConfig {
            base_url: "https://platform.proveapis.com/v3".into(),
            ..ProveConfig::default()
        };
        let p = cfg.validate();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(!format!(
            "{:?}",
            ProveConfig {
                client_secret: "s3cr3t".into(),
                ..ProveConfig::default()
            }
        )
        .contains("s3cr3t"));
    }
}
