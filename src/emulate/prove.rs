//! An emulator of the Prove Platform v3 API (reference B3, B4, B7): `POST /token`
//! (client credentials), `/v3/unify`, `/v3/unify-status`, `/v3/unify-bind`, with Prove's
//! error body `{"code", "message"}`.
//!
//! Scriptable through [`ProveEmulatorConfig`] (at start, [`ProveEmulator::set_config`], or
//! `POST /_emulator/script`): the outcome per phone number (success, evaluation results,
//! failure codes, trust score), latency, HTTP status (429 with `Retry-After`), malformed
//! bodies, `success` as string or boolean. [`ProveEmulator::revoke_tokens`] (or
//! `POST /_emulator/revoke-tokens`) makes the next API call answer 401, to exercise token
//! refresh. Requests are recorded (`GET /_emulator/requests`), without secrets.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::human::json_response;
pub(crate) use super::human::Recorded;
use super::serve_with;
use crate::risk::prove::{TOKEN_PATH, UNIFY_BIND_PATH, UNIFY_PATH, UNIFY_STATUS_PATH};

/// Prove refuses request bodies of 4 KB or more (B7, code 8001).
const MAX_BODY: usize = 4096;
const MAX_RECORDED: usize = 10_000;
const MAX_SESSIONS: usize = 100_000;

/// How the emulated Prove answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProveEmulatorConfig {
    /// The OAuth2 client id `/token` accepts.
    pub client_id: String,
    /// The OAuth2 client secret `/token` accepts.
    pub client_secret: String,
    /// `expires_in` of issued access tokens (Prove: 60 minutes).
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// The outcome for numbers not listed in `phones`.
    pub default: PhoneOutcome,
    /// Outcome per phone number, keyed as sent (`+447400123456`); a key without `+`
    /// also matches the number with one.
    pub phones: BTreeMap<String, PhoneOutcome>,
    /// Delay before every `/v3/*` answer.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Answer every `/v3/*` call with this HTTP status and an error body.
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with a 429.
    pub retry_after: Option<u64>,
    /// Answer `/v3/*` calls 200 with a body that is not JSON.
    pub malformed: bool,
    /// Send `success` as a JSON boolean where it is `true`/`false` (as some documented
    /// examples show) instead of the SDK's string.
    pub success_as_bool: bool,
}

impl Default for ProveEmulatorConfig {
    fn default() -> Self {
        Self {
            client_id: "emulator-client".to_owned(),
            client_secret: "emulator-secret".to_owned(),
            token_ttl: Duration::from_secs(3600),
            default: PhoneOutcome::default(),
            phones: BTreeMap::new(),
            latency: Duration::ZERO,
            status: None,
            retry_after: None,
            malformed: false,
            success_as_bool: false,
        }
    }
}

/// What Prove says about one number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PhoneOutcome {
    /// `pass` or `fail` of the `authentication` category.
    pub authentication: String,
    /// `pass` or `fail` of the `risk` category.
    pub risk: String,
    /// Global Fraud Policy failure codes, reported under the first failing category
    /// (`authentication` when both pass, which it then fails).
    pub failure_codes: Vec<u32>,
    /// `success` of unify-status with `possessionType: none`: `possession_required`
    /// (number acceptable) or `false`. Derived from the evaluation when unset.
    pub success: Option<String>,
    /// Whether the client completes a Prove-run possession check (`mobile`/`desktop`):
    /// `pass`, `fail` or `pending`.
    pub possession: String,
    /// A trust score (0–1000) added to status answers. Not part of v3's documented shape;
    /// off unless set.
    pub trust_score: Option<u32>,
    /// Extra delay for this number.
    #[serde(with = "humantime_serde")]
    pub latency: Option<Duration>,
    /// Answer calls about this number with this HTTP status.
    pub status: Option<u16>,
}

impl Default for PhoneOutcome {
    fn default() -> Self {
        Self {
            authentication: "pass".to_owned(),
            risk: "pass".to_owned(),
            failure_codes: Vec::new(),
            success: None,
            possession: "pass".to_owned(),
            trust_score: None,
            latency: None,
            status: None,
        }
    }
}

impl PhoneOutcome {
    /// A number that fails authentication with these Global Fraud Policy codes.
    pub fn failing(codes: &[u32]) -> Self {
        Self {
            authentication: "fail".to_owned(),
            failure_codes: codes.to_vec(),
            ..Self::default()
        }
    }

    fn passes(&self) -> bool {
        self.authentication == "pass" && self.risk == "pass" && self.failure_codes.is_empty()
    }

    fn evaluation(&self) -> Value {
        let mut auth = self.authentication.clone();
        let mut risk = self.risk.clone();
        if !self.failure_codes.is_empty() && auth == "pass" && risk == "pass" {
            auth = "fail".to_owned();
        }
        let reasons: Map<String, Value> = self
            .failure_codes
            .iter()
            .map(|c| (c.to_string(), json!(gfp_text(*c))))
            .collect();
        let category = |result: &str, with_reasons: bool| {
            let mut c = json!({ "result": result });
            if with_reasons && !reasons.is_empty() {
                c["failureReasons"] = Value::Object(reasons.clone());
            }
            c
        };
        let auth_gets_codes = auth == "fail";
        if risk != "fail" {
            risk = "pass".to_owned();
        }
        json!({
            "authentication": category(&auth, auth_gets_codes),
            "risk": category(&risk, !auth_gets_codes),
        })
    }
}

/// Text of the SMS-relevant Global Fraud Policy codes (B4).
fn gfp_text(code: u32) -> &'static str {
    match code {
        9100 => "Phone possession incomplete.",
        9131 => "Non-mobile line on the Override Services Registry.",
        9132 => "Phone number is listed on a public SMS-receive website.",
        9133 => "Not trusted per SIM Key Trust Score.",
        9134 => "Phone number is a non-fixed VoIP line.",
        9135 => "SIM swap in the last 24 hours.",
        9136 => "Phone number ported in the last 24 hours.",
        9137 => "Call forwarding is enabled.",
        9161 => "Very short tenure association between phone and identity.",
        9162 => "Short tenure association between phone and identity.",
        9163 => "Recycled phone risk.",
        9171 => "Injection attack pattern detected.",
        9180 => "No ownership confirmed.",
        _ => "Failed Global Fraud Policy check.",
    }
}

#[derive(Debug, Clone)]
struct Session {
    phone: String,
    client_request_id: String,
    possession: String,
    status_checked: bool,
}

/// A cheap-to-clone handle to one emulated Prove platform.
#[derive(Clone)]
pub struct ProveEmulator {
    inner: Arc<Inner>,
}

struct Inner {
    config: Mutex<ProveEmulatorConfig>,
    tokens: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<HashMap<String, Session>>,
    recorded: Mutex<Vec<Recorded>>,
}

impl Default for ProveEmulator {
    fn default() -> Self {
        Self::new(ProveEmulatorConfig::default())
    }
}

type Reply = Response<Full<Bytes>>;

fn error(status: StatusCode, code: u32, message: &str) -> Reply {
    json_response(status, json!({"code": code, "message": message}))
}

impl ProveEmulator {
    pub fn new(config: ProveEmulatorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: Mutex::new(config),
                tokens: Mutex::new(HashMap::new()),
                sessions: Mutex::new(HashMap::new()),
                recorded: Mutex::new(Vec::new()),
            }),
        }
    }

    pub fn set_config(&self, config: ProveEmulatorConfig) {
        *self.inner.config.lock() = config;
    }

    pub fn config(&self) -> ProveEmulatorConfig {
        self.inner.config.lock().clone()
    }

    /// Sets the outcome of one number.
    pub fn set_phone(&self, phone: &str, outcome: PhoneOutcome) {
        self.inner
            .config
            .lock()
            .phones
            .insert(phone.to_owned(), outcome);
    }

    /// Invalidates every issued access token: the next API call answers 401.
    pub fn revoke_tokens(&self) {
        self.inner.tokens.lock().clear();
    }

    /// Everything received (admin calls excepted), oldest first. `/token` bodies hold only
    /// `client_id` and `grant_type`.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.recorded.lock().clone()
    }

    /// How many requests were made to `path`.
    pub fn count(&self, path: &str) -> usize {
        self.inner
            .recorded
            .lock()
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    pub(crate) fn clear_requests(&self) {
        self.inner.recorded.lock().clear();
    }

    fn record(&self, r: Recorded) {
        let mut recorded = self.inner.recorded.lock();
        if recorded.len() >= MAX_RECORDED {
            recorded.remove(0);
        }
        recorded.push(r);
    }

    fn outcome(&self, config: &ProveEmulatorConfig, phone: &str) -> PhoneOutcome {
        let bare = phone.trim_start_matches('+');
        config
            .phones
            .get(phone)
            .or_else(|| config.phones.get(bare))
            .or_else(|| config.phones.get(&format!("+{bare}")))
            .cloned()
            .unwrap_or_else(|| config.default.clone())
    }

    fn authorized(&self, headers: &http::HeaderMap) -> bool {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        self.inner
            .tokens
            .lock()
            .get(token)
            .is_some_and(|exp| Instant::now() < *exp)
    }

    /// Answers one HTTP request.
    pub async fn handle<B>(&self, req: Request<B>) -> Reply
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let admin = path.starts_with("/_emulator/");
        let limit = if admin { 1 << 20 } else { MAX_BODY };
        let body = match Limited::new(body, limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    8001,
                    "request body must be under 4 KB",
                )
            }
        };
        if admin {
            return self.admin(&parts.method, &path, &body);
        }
        if path == TOKEN_PATH && parts.method == Method::POST {
            return self.token(&body);
        }
        let authorized = self.authorized(&parts.headers);
        let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        self.record(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            authorized,
            body: json_body.clone(),
            traceparent: parts
                .headers
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        let known = [UNIFY_PATH, UNIFY_STATUS_PATH, UNIFY_BIND_PATH].contains(&path.as_str());
        if !known {
            return error(StatusCode::NOT_FOUND, 404, "not found");
        }
        if parts.method != Method::POST {
            return error(StatusCode::FORBIDDEN, 403, "method not allowed");
        }
        if !authorized {
            return error(StatusCode::UNAUTHORIZED, 8002, "unauthorized");
        }
        let config = self.config();
        if !config.latency.is_zero() {
            tokio::time::sleep(config.latency).await;
        }
        if let Some(status) = config.status.and_then(|s| StatusCode::from_u16(s).ok()) {
            return status_reply(status, config.retry_after);
        }
        if config.malformed {
            return json_bytes(StatusCode::OK, Bytes::from_static(b"{\"success\":"));
        }
        let Some(obj) = json_body.as_object() else {
            return error(
                StatusCode::BAD_REQUEST,
                8001,
                "malformed request: body must be a JSON object",
            );
        };
        match path.as_str() {
            UNIFY_PATH => self.unify(&config, obj).await,
            UNIFY_STATUS_PATH => self.status(&config, obj).await,
            _ => self.bind(&config, obj).await,
        }
    }

    fn admin(&self, method: &Method, path: &str, body: &[u8]) -> Reply {
        match (method, path) {
            (&Method::GET, "/_emulator/requests") => {
                json_response(StatusCode::OK, json!(self.requests()))
            }
            (&Method::POST, "/_emulator/script") => {
                match serde_json::from_slice::<ProveEmulatorConfig>(body) {
                    Ok(c) => {
                        self.set_config(c);
                        json_response(StatusCode::OK, json!({"ok": true}))
                    }
                    Err(e) => {
                        json_response(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}))
                    }
                }
            }
            (&Method::POST, "/_emulator/revoke-tokens") => {
                self.revoke_tokens();
                json_response(StatusCode::OK, json!({"ok": true}))
            }
            (&Method::POST, "/_emulator/reset") => {
                self.clear_requests();
                json_response(StatusCode::OK, json!({"ok": true}))
            }
            _ => json_response(StatusCode::NOT_FOUND, json!({"error": "not found"})),
        }
    }

    fn token(&self, body: &[u8]) -> Reply {
        let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        self.record(Recorded {
            method: "POST".to_owned(),
            path: TOKEN_PATH.to_owned(),
            authorized: false,
            body: json!({"client_id": get("client_id"), "grant_type": get("grant_type")}),
            traceparent: None,
        });
        let config = self.config();
        if get("grant_type") != "client_credentials" {
            return error(StatusCode::BAD_REQUEST, 8001, "unsupported grant_type");
        }
        if get("client_id") != config.client_id || get("client_secret") != config.client_secret {
            return error(StatusCode::UNAUTHORIZED, 8002, "invalid client credentials");
        }
        let access_token = fake_jwt(&json!({
            "sub": config.client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
        }));
        self.inner
            .tokens
            .lock()
            .insert(access_token.clone(), Instant::now() + config.token_ttl);
        let secs = config.token_ttl.as_secs();
        json_response(
            StatusCode::OK,
            json!({
                "access_token": access_token,
                "expires_in": secs,
                "token_type": "Bearer",
                "refresh_token": uuid::Uuid::new_v4().to_string(),
                "refresh_expires_in": secs,
            }),
        )
    }

    async fn per_phone(&self, outcome: &PhoneOutcome) -> Option<Reply> {
        if let Some(latency) = outcome.latency {
            tokio::time::sleep(latency).await;
        }
        let status = outcome.status.and_then(|s| StatusCode::from_u16(s).ok())?;
        Some(status_reply(status, self.config().retry_after))
    }

    async fn unify(&self, config: &ProveEmulatorConfig, body: &Map<String, Value>) -> Reply {
        let field = |k: &str| body.get(k).and_then(Value::as_str);
        let Some(possession) = field("possessionType") else {
            return error(
                StatusCode::BAD_REQUEST,
                1001,
                "field 'possessionType' is missing",
            );
        };
        if !["none", "mobile", "desktop"].contains(&possession) {
            return error(
                StatusCode::BAD_REQUEST,
                1000,
                "field 'possessionType' is invalid",
            );
        }
        let Some(client_request_id) = field("clientRequestId") else {
            return error(
                StatusCode::BAD_REQUEST,
                1001,
                "field 'clientRequestId' is missing",
            );
        };
        let Some(phone) = field("phoneNumber") else {
            return error(
                StatusCode::BAD_REQUEST,
                1001,
                "field 'phoneNumber' is missing",
            );
        };
        if possession == "desktop" && field("finalTargetUrl").is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                1001,
                "field 'finalTargetUrl' is missing",
            );
        }
        if let Some(ip) = field("ipAddress") {
            if !ip
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b':')
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    1000,
                    "field 'ipAddress' is invalid",
                );
            }
        }
        let outcome = self.outcome(config, phone);
        if let Some(reply) = self.per_phone(&outcome).await {
            return reply;
        }
        let correlation_id = uuid::Uuid::new_v4().to_string();
        {
            let mut sessions = self.inner.sessions.lock();
            if sessions.len() >= MAX_SESSIONS {
                sessions.clear();
            }
            sessions.insert(
                correlation_id.clone(),
                Session {
                    phone: phone.to_owned(),
                    client_request_id: client_request_id.to_owned(),
                    possession: possession.to_owned(),
                    status_checked: false,
                },
            );
        }
        let auth_token =
            fake_jwt(&json!({"correlationId": correlation_id, "possession": possession}));
        json_response(
            StatusCode::OK,
            json!({"success": "pending", "authToken": auth_token, "correlationId": correlation_id}),
        )
    }

    /// The session a call names, or the error Prove gives (status, code, message).
    fn session(
        &self,
        body: &Map<String, Value>,
    ) -> Result<(String, Session), (StatusCode, u32, &'static str)> {
        let field = |k: &str| body.get(k).and_then(Value::as_str);
        let Some(correlation_id) = field("correlationId") else {
            return Err((
                StatusCode::BAD_REQUEST,
                1001,
                "field 'correlationId' is missing",
            ));
        };
        let session = self.inner.sessions.lock().get(correlation_id).cloned();
        match session {
            Some(s) if field("clientRequestId").is_none_or(|c| c == s.client_request_id) => {
                Ok((correlation_id.to_owned(), s))
            }
            _ => Err((StatusCode::BAD_REQUEST, 8008, "invalid correlation ID")),
        }
    }

    fn success(&self, config: &ProveEmulatorConfig, s: &str) -> Value {
        match s {
            "true" if config.success_as_bool => json!(true),
            "false" if config.success_as_bool => json!(false),
            other => json!(other),
        }
    }

    async fn status(&self, config: &ProveEmulatorConfig, body: &Map<String, Value>) -> Reply {
        let (correlation_id, session) = match self.session(body) {
            Ok(s) => s,
            Err((status, code, message)) => return error(status, code, message),
        };
        let outcome = self.outcome(config, &session.phone);
        if let Some(reply) = self.per_phone(&outcome).await {
            return reply;
        }
        if let Some(s) = self.inner.sessions.lock().get_mut(&correlation_id) {
            s.status_checked = true;
        }
        let success = if session.possession == "none" {
            outcome.success.clone().unwrap_or_else(|| {
                if outcome.passes() {
                    "possession_required"
                } else {
                    "false"
                }
                .to_owned()
            })
        } else {
            match outcome.possession.as_str() {
                "pending" => "pending".to_owned(),
                "fail" => "false".to_owned(),
                _ if outcome.passes() => "true".to_owned(),
                _ => "false".to_owned(),
            }
        };
        let mut out = json!({
            "success": self.success(config, &success),
            "phoneNumber": session.phone,
            "clientRequestId": session.client_request_id,
            "correlationId": correlation_id,
            "evaluation": outcome.evaluation(),
        });
        if success == "true" {
            add_identity(&mut out, &correlation_id);
        }
        if let Some(ts) = outcome.trust_score {
            out["trustScore"] = json!(ts);
        }
        json_response(StatusCode::OK, out)
    }

    async fn bind(&self, config: &ProveEmulatorConfig, body: &Map<String, Value>) -> Reply {
        let (correlation_id, session) = match self.session(body) {
            Ok(s) => s,
            Err((status, code, message)) => return error(status, code, message),
        };
        let Some(phone) = body.get("phoneNumber").and_then(Value::as_str) else {
            return error(
                StatusCode::BAD_REQUEST,
                1001,
                "field 'phoneNumber' is missing",
            );
        };
        if !session.status_checked {
            return error(StatusCode::FORBIDDEN, 8003, "step called out of order");
        }
        let outcome = self.outcome(config, &session.phone);
        if let Some(reply) = self.per_phone(&outcome).await {
            return reply;
        }
        let same = phone.trim_start_matches('+') == session.phone.trim_start_matches('+');
        let success = if same && outcome.passes() {
            "true"
        } else {
            "false"
        };
        let mut out = json!({
            "success": self.success(config, success),
            "phoneNumber": session.phone,
            "clientRequestId": session.client_request_id,
            "correlationId": correlation_id,
            "evaluation": outcome.evaluation(),
        });
        if success == "true" {
            add_identity(&mut out, &correlation_id);
        }
        json_response(StatusCode::OK, out)
    }
}

/// `proveId`, `deviceId`, `clientHumanId`: required when `success` is true (B4).
fn add_identity(out: &mut Value, correlation_id: &str) {
    use sha2::Digest as _;
    let id = hex::encode(sha2::Sha256::digest(correlation_id.as_bytes()));
    out["proveId"] = json!(format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    ));
    out["deviceId"] = json!(format!("device-{}", &id[32..44]));
    out["clientHumanId"] = json!(format!("human-{}", &id[44..56]));
}

fn status_reply(status: StatusCode, retry_after: Option<u64>) -> Reply {
    let (code, message) = match status.as_u16() {
        429 => (429, "rate limit of 25 requests per second exceeded"),
        s if s >= 500 => (8000, "internal error"),
        401 => (8002, "unauthorized"),
        _ => (8001, "malformed request"),
    };
    let mut rsp = error(status, code, message);
    if status == StatusCode::TOO_MANY_REQUESTS {
        rsp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.unwrap_or(1)),
        );
    }
    rsp
}

fn json_bytes(status: StatusCode, body: Bytes) -> Reply {
    let mut rsp = Response::new(Full::new(body));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp
}

/// An unsigned JWT-shaped token (`eyJ…`): opaque to clients, like Prove's.
fn fake_jwt(claims: &Value) -> String {
    let header = B64URL.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = B64URL.encode(claims.to_string());
    let sig = B64URL.encode(uuid::Uuid::new_v4().as_bytes());
    format!("{header}.{claims}.{sig}")
}

/// Serves the emulator on `listener` until `shutdown` resolves, then drains connections
/// for up to five seconds.
pub async fn serve(
    listener: tokio::net::TcpListener,
    emu: ProveEmulator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(
        listener,
        move |req| {
            let emu = emu.clone();
            async move { emu.handle(req).await }
        },
        shutdown,
        "prove",
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    async fn call(
        emu: &ProveEmulator,
        path: &str,
        token: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let req = Request::post(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let rsp = emu.handle(req).await;
        let status = rsp.status();
        let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn token(emu: &ProveEmulator) -> String {
        let req = Request::post(TOKEN_PATH)
            .body(Full::new(Bytes::from(
                "client_id=emulator-client&client_secret=emulator-secret&grant_type=client_credentials",
            )))
            .unwrap();
        let rsp = emu.handle(req).await;
        let v: Value =
            serde_json::from_slice(&rsp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(v["token_type"], "Bearer");
        v["access_token"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn customer_supplied_possession_flow() {
        let emu = ProveEmulator::default();
        emu.set_phone("+447700900666", PhoneOutcome::failing(&[9132]));
        let t = token(&emu).await;
        let (s, u) = call(&emu, UNIFY_PATH, &t, json!({"possessionType": "none", "clientRequestId": "c1", "phoneNumber": "+447400123456", "checkReputation": true})).await;
        assert_eq!(
            (s, u["success"].as_str()),
            (StatusCode::OK, Some("pending"))
        );
        let cid = u["correlationId"].as_str().unwrap();
        let (s, b) = call(
            &emu,
            UNIFY_BIND_PATH,
            &t,
            json!({"correlationId": cid, "phoneNumber": "+447400123456", "clientRequestId": "c1"}),
        )
        .await;
        assert_eq!(
            (s, b["code"].as_u64()),
            (StatusCode::FORBIDDEN, Some(8003)),
            "bind before status"
        );
        let (_, st) = call(
            &emu,
            UNIFY_STATUS_PATH,
            &t,
            json!({"correlationId": cid, "clientRequestId": "c1"}),
        )
        .await;
        assert_eq!(st["success"], "possession_required");
        assert_eq!(st["evaluation"]["risk"]["result"], "pass");
        let (_, b) = call(
            &emu,
            UNIFY_BIND_PATH,
            &t,
            json!({"correlationId": cid, "phoneNumber": "+447400123456", "clientRequestId": "c1"}),
        )
        .await;
        assert_eq!(b["success"], "true");
        assert!(b["proveId"].is_string());

        let (_, u) = call(&emu, UNIFY_PATH, &t, json!({"possessionType": "none", "clientRequestId": "c2", "phoneNumber": "+447700900666"})).await;
        let cid = u["correlationId"].as_str().unwrap();
        let (_, st) = call(
            &emu,
            UNIFY_STATUS_PATH,
            &t,
            json!({"correlationId": cid, "clientRequestId": "c2"}),
        )
        .await;
        assert_eq!(st["success"], "false");
        assert_eq!(st["evaluation"]["authentication"]["result"], "fail");
        assert!(st["evaluation"]["authentication"]["failureReasons"]["9132"].is_string());
    }

    #[tokio::test]
    async fn errors_have_prove_codes() {
        let emu = ProveEmulator::default();
        let (s, b) = call(&emu, UNIFY_PATH, "nope", json!({})).await;
        assert_eq!(
            (s, b["code"].as_u64()),
            (StatusCode::UNAUTHORIZED, Some(8002))
        );
        let t = token(&emu).await;
        let (s, b) = call(&emu, UNIFY_PATH, &t, json!({"clientRequestId": "c"})).await;
        assert_eq!(
            (s, b["code"].as_u64()),
            (StatusCode::BAD_REQUEST, Some(1001))
        );
        let (s, b) = call(&emu, UNIFY_STATUS_PATH, &t, json!({"correlationId": "x"})).await;
        assert_eq!(
            (s, b["code"].as_u64()),
            (StatusCode::BAD_REQUEST, Some(8008))
        );
        let big = json!({"pad": "x".repeat(5000)});
        let (s, b) = call(&emu, UNIFY_PATH, &t, big).await;
        assert_eq!(
            (s, b["code"].as_u64()),
            (StatusCode::BAD_REQUEST, Some(8001))
        );
        emu.revoke_tokens();
        let (s, _) = call(&emu, UNIFY_PATH, &t, json!({})).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(emu
            .requests()
            .iter()
            .all(|r| !r.body.to_string().contains("emulator-secret")));
    }
}
