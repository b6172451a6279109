//! An emulator of HUMAN Security's Risk API (`POST /api/v3/risk`) and collector
//! (`POST /api/v1/collector/s2s`), answering with the reference's shapes (A2, A4, A12).
//!
//! Scriptable through [`HumanEmulatorConfig`] (at start, with [`HumanEmulator::set_config`],
//! or `POST /_emulator/script` with the same JSON): score and action per client IP, vid or
//! user agent, latency, HTTP status, malformed or failed bodies. What it received is
//! recorded ([`HumanEmulator::requests`], `GET /_emulator/requests`). It also mints valid
//! risk tokens ([`mint_token_v3`], `POST /_emulator/mint`) for tests and the demo.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::risk::human::token;
use crate::risk::human::{COLLECTOR_PATH, RISK_API_PATH};

pub use crate::risk::human::token::Payload as TokenPayload;

/// Bodies larger than this are refused.
const MAX_BODY: usize = 1 << 20;
/// Recordings kept; older ones are dropped first.
const MAX_RECORDED: usize = 10_000;

/// How the emulated Risk API answers. Every field of a rule that is set overrides the
/// top-level answer for requests the rule matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HumanEmulatorConfig {
    /// Bearer token required on every call; unset accepts any.
    pub auth_token: Option<String>,
    /// The answer when no rule matches.
    #[serde(flatten)]
    pub answer: Answer,
    /// Tried in order; the first whose conditions all hold supplies the answer.
    pub rules: Vec<Rule>,
}

impl Default for HumanEmulatorConfig {
    fn default() -> Self {
        Self {
            auth_token: None,
            answer: Answer {
                score: Some(0),
                action: Some("c".to_owned()),
                ..Answer::default()
            },
            rules: Vec::new(),
        }
    }
}

/// One scripted answer; unset fields fall back to the top-level answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Answer {
    /// `score` (0–100).
    pub score: Option<u8>,
    /// `action` letter: `c`, `b`, `j`, `r`, `hsc`, `cp`.
    pub action: Option<String>,
    /// `action_data.body`, the HTML of a JS challenge (action `j`).
    pub challenge_body: Option<String>,
    /// `pxhd` to hand back.
    pub pxhd: Option<String>,
    /// Delay before answering.
    #[serde(with = "humantime_serde")]
    pub latency: Option<Duration>,
    /// Answer with this HTTP status and an error body instead.
    pub status: Option<u16>,
    /// `Retry-After` seconds on a 429.
    pub retry_after: Option<u64>,
    /// Answer 200 with a body that is not JSON.
    pub malformed: Option<bool>,
    /// Answer 200 with `status: -1` (`request_failed_on_server`).
    pub failed: Option<bool>,
}

impl Answer {
    fn or(&self, base: &Answer) -> Answer {
        Answer {
            score: self.score.or(base.score),
            action: self.action.clone().or_else(|| base.action.clone()),
            challenge_body: self
                .challenge_body
                .clone()
                .or_else(|| base.challenge_body.clone()),
            pxhd: self.pxhd.clone().or_else(|| base.pxhd.clone()),
            latency: self.latency.or(base.latency),
            status: self.status.or(base.status),
            retry_after: self.retry_after.or(base.retry_after),
            malformed: self.malformed.or(base.malformed),
            failed: self.failed.or(base.failed),
        }
    }
}

/// A rule: conditions on the Risk API request (all that are set must hold) and an answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rule {
    /// `request.socket_ip` (or `request.ip`) equals this.
    pub ip: Option<String>,
    /// Top-level `vid` equals this.
    pub vid: Option<String>,
    /// The `user-agent` entry of `request.headers` contains this.
    pub user_agent: Option<String>,
    /// `additional.s2s_call_reason` equals this.
    pub s2s_call_reason: Option<String>,
    #[serde(flatten)]
    pub answer: Answer,
}

impl Rule {
    fn matches(&self, body: &Value) -> bool {
        let request = &body["request"];
        let ip = request["socket_ip"]
            .as_str()
            .or_else(|| request["ip"].as_str());
        let ua = request["headers"].as_array().and_then(|hs| {
            hs.iter()
                .find(|h| {
                    h["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case("user-agent"))
                })
                .and_then(|h| h["value"].as_str())
        });
        self.ip.as_deref().is_none_or(|want| ip == Some(want))
            && self
                .vid
                .as_deref()
                .is_none_or(|want| body["vid"].as_str() == Some(want))
            && self
                .user_agent
                .as_deref()
                .is_none_or(|want| ua.is_some_and(|ua| ua.contains(want)))
            && self
                .s2s_call_reason
                .as_deref()
                .is_none_or(|want| body["additional"]["s2s_call_reason"].as_str() == Some(want))
    }
}

/// One request the emulator received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Whether the bearer token matched (the token itself is never recorded).
    pub authorized: bool,
    /// The JSON body, or `null` when it was not JSON.
    pub body: Value,
    /// The W3C `traceparent` the caller sent, if any.
    pub traceparent: Option<String>,
}

/// A cheap-to-clone handle to one emulated HUMAN backend.
#[derive(Clone)]
pub struct HumanEmulator {
    inner: Arc<Inner>,
}

struct Inner {
    config: Mutex<HumanEmulatorConfig>,
    recorded: Mutex<Vec<Recorded>>,
}

impl Default for HumanEmulator {
    fn default() -> Self {
        Self::new(HumanEmulatorConfig::default())
    }
}

impl HumanEmulator {
    pub fn new(config: HumanEmulatorConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config: Mutex::new(config),
                recorded: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Replaces the script.
    pub fn set_config(&self, config: HumanEmulatorConfig) {
        *self.inner.config.lock() = config;
    }

    pub fn config(&self) -> HumanEmulatorConfig {
        self.inner.config.lock().clone()
    }

    /// Everything received, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.recorded.lock().clone()
    }

    /// Bodies of the Risk API calls received, oldest first.
    pub fn risk_requests(&self) -> Vec<Value> {
        self.bodies(RISK_API_PATH)
    }

    /// Activities received by the collector, one entry per activity, oldest first.
    pub fn activities(&self) -> Vec<Value> {
        self.bodies(COLLECTOR_PATH)
            .into_iter()
            .flat_map(|b| match b {
                Value::Array(items) => items,
                other => vec![other],
            })
            .collect()
    }

    pub(crate) fn clear_requests(&self) {
        self.inner.recorded.lock().clear();
    }

    fn bodies(&self, path: &str) -> Vec<Value> {
        self.inner
            .recorded
            .lock()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.body.clone())
            .collect()
    }

    fn record(&self, r: Recorded) {
        let mut recorded = self.inner.recorded.lock();
        if recorded.len() >= MAX_RECORDED {
            recorded.remove(0);
        }
        recorded.push(r);
    }

    /// Answers one HTTP request.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return json_response(StatusCode::PAYLOAD_TOO_LARGE, json!({})),
        };
        let config = self.config();
        let authorized = config.auth_token.as_ref().is_none_or(|want| {
            parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|got| got == want)
        });
        let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let is_admin = path.starts_with("/_emulator/");
        if !is_admin {
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
        }
        match (&parts.method, path.as_str()) {
            (&Method::POST, RISK_API_PATH) if !authorized => unauthorized(),
            (&Method::POST, RISK_API_PATH) => risk(&config, &json_body).await,
            (&Method::POST, COLLECTOR_PATH) if !authorized => unauthorized(),
            (&Method::POST, COLLECTOR_PATH) if json_body.is_null() => json_response(
                StatusCode::BAD_REQUEST,
                json!({"status": -1, "message": "invalid body"}),
            ),
            (&Method::POST, COLLECTOR_PATH) => json_response(StatusCode::OK, json!({})),
            (&Method::GET, "/_emulator/requests") => {
                json_response(StatusCode::OK, json!(self.requests()))
            }
            (&Method::POST, "/_emulator/script") => {
                match serde_json::from_slice::<HumanEmulatorConfig>(&body) {
                    Ok(c) => {
                        self.set_config(c);
                        json_response(StatusCode::OK, json!({"ok": true}))
                    }
                    Err(e) => {
                        json_response(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}))
                    }
                }
            }
            (&Method::POST, "/_emulator/reset") => {
                self.clear_requests();
                json_response(StatusCode::OK, json!({"ok": true}))
            }
            (&Method::POST, "/_emulator/mint") => mint_endpoint(&body),
            (_, RISK_API_PATH | COLLECTOR_PATH) => {
                json_response(StatusCode::METHOD_NOT_ALLOWED, json!({}))
            }
            _ => json_response(StatusCode::NOT_FOUND, json!({"message": "not found"})),
        }
    }
}

async fn risk(config: &HumanEmulatorConfig, body: &Value) -> Response<Full<Bytes>> {
    if !body.is_object() || !body["request"].is_object() {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"status": -1, "message": "invalid request"}),
        );
    }
    let answer = config
        .rules
        .iter()
        .find(|r| r.matches(body))
        .map(|r| r.answer.or(&config.answer))
        .unwrap_or_else(|| config.answer.clone());
    if let Some(latency) = answer.latency {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = answer.status.and_then(|s| StatusCode::from_u16(s).ok()) {
        let mut rsp = json_response(status, json!({"status": -1, "message": "emulated error"}));
        if let Some(secs) = answer.retry_after {
            rsp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return rsp;
    }
    if answer.malformed == Some(true) {
        let mut rsp = Response::new(Full::new(Bytes::from_static(b"{\"status\":0,\"score\":")));
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return rsp;
    }
    if answer.failed == Some(true) {
        return json_response(
            StatusCode::OK,
            json!({"status": -1, "message": "emulated server failure"}),
        );
    }
    let mut out = json!({
        "status": 0,
        "uuid": uuid::Uuid::new_v4().to_string(),
        "score": answer.score.unwrap_or(0),
        "action": answer.action.as_deref().unwrap_or("c"),
    });
    if let Some(obj) = out.as_object_mut() {
        if let Some(pxhd) = answer.pxhd {
            obj.insert("pxhd".into(), json!(pxhd));
        }
        if let Some(body) = answer.challenge_body {
            obj.insert("action_data".into(), json!({ "body": body }));
        }
    }
    json_response(StatusCode::OK, out)
}

fn unauthorized() -> Response<Full<Bytes>> {
    json_response(
        StatusCode::UNAUTHORIZED,
        json!({"status": -1, "message": "unauthorized"}),
    )
}

pub(crate) fn json_response(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body.to_string())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    rsp
}

#[derive(Deserialize)]
struct MintRequest {
    secret: String,
    #[serde(default)]
    score: u8,
    #[serde(default = "default_action")]
    action: String,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    socket_ip: Option<String>,
    #[serde(default)]
    mobile: bool,
    #[serde(default = "default_ttl")]
    ttl_secs: u64,
}

fn default_action() -> String {
    "c".to_owned()
}

fn default_ttl() -> u64 {
    300
}

fn mint_endpoint(body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(m) = serde_json::from_slice::<MintRequest>(body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "expected {secret, score, action, user_agent, socket_ip, mobile, ttl_secs}"}),
        );
    };
    let mut p = payload(m.score, &m.action, Duration::from_secs(m.ttl_secs));
    let value = if m.mobile {
        mint_mobile_token(&m.secret, &p)
    } else {
        if m.socket_ip.is_some() {
            p.x = Some("su".to_owned());
        }
        mint_cookie(
            &m.secret,
            &p,
            m.user_agent.as_deref().unwrap_or(""),
            m.socket_ip.as_deref().unwrap_or(""),
        )
    };
    json_response(
        StatusCode::OK,
        json!({"token": value, "uuid": p.u, "vid": p.v}),
    )
}

/// A fresh payload: new uuid and vid, expiring `ttl` from now.
pub fn payload(score: u8, action: &str, ttl: Duration) -> TokenPayload {
    let now = crate::risk::epoch_ms() as f64;
    TokenPayload {
        t: now + ttl.as_millis() as f64,
        s: f64::from(score),
        u: uuid::Uuid::new_v4().to_string(),
        v: uuid::Uuid::new_v4().to_string(),
        a: action.to_owned(),
        x: None,
        cpa: None,
    }
}

/// Mints a token v3 value (`<hmac>:<salt>:<iterations>:<ciphertext>`) for `secret`,
/// HMAC over the encrypted part plus `signed_fields` (empty for mobile tokens, the user
/// agent for cookies — see [`mint_cookie`]). 1000 iterations, random 16-byte salt.
pub(crate) fn mint_token_v3(secret: &str, payload: &TokenPayload, signed_fields: &str) -> String {
    let plaintext = serde_json::to_string(payload).unwrap_or_default();
    token::mint(
        secret,
        &plaintext,
        signed_fields,
        token::DEFAULT_ITERATIONS,
        None,
    )
}

/// A `_px3` cookie value signed over the fields `payload.x` names (user agent by default).
pub fn mint_cookie(
    secret: &str,
    payload: &TokenPayload,
    user_agent: &str,
    socket_ip: &str,
) -> String {
    let fields = token::signed_fields(payload, false, user_agent, socket_ip);
    mint_token_v3(secret, payload, &fields)
}

/// An `X-PX-AUTHORIZATION` header value (`3:<token>`).
pub fn mint_mobile_token(secret: &str, payload: &TokenPayload) -> String {
    format!("3:{}", mint_token_v3(secret, payload, ""))
}

/// Serves the emulator on `listener` until `shutdown` resolves, then drains connections
/// for up to five seconds.
pub async fn serve(
    listener: tokio::net::TcpListener,
    emu: HumanEmulator,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    super::serve_with(
        listener,
        move |req| {
            let emu = emu.clone();
            async move { emu.handle(req).await }
        },
        shutdown,
        "human",
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn post(path: &str, body: Value, token: Option<&str>) -> Request<Full<Bytes>> {
        let mut b = Request::post(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
    }

    async fn body(rsp: Response<Full<Bytes>>) -> Value {
        serde_json::from_slice(&rsp.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn rules_pick_the_answer_and_both_ip_field_names_are_accepted() {
        let emu = HumanEmulator::new(HumanEmulatorConfig {
            auth_token: Some("tok".into()),
            rules: vec![Rule {
                ip: Some("6.6.6.6".into()),
                answer: Answer {
                    score: Some(100),
                    action: Some("b".into()),
                    ..Answer::default()
                },
                ..Rule::default()
            }],
            ..HumanEmulatorConfig::default()
        });
        let bad = json!({"request": {"ip": "6.6.6.6", "headers": []}});
        let good = json!({"request": {"socket_ip": "1.1.1.1", "headers": []}});
        let r = body(
            emu.handle(post(RISK_API_PATH, bad.clone(), Some("tok")))
                .await,
        )
        .await;
        assert_eq!(
            (r["score"].as_u64(), r["action"].as_str()),
            (Some(100), Some("b"))
        );
        let r = body(emu.handle(post(RISK_API_PATH, good, Some("tok"))).await).await;
        assert_eq!(
            (r["score"].as_u64(), r["status"].as_i64()),
            (Some(0), Some(0))
        );
        let r = emu.handle(post(RISK_API_PATH, bad, Some("wrong"))).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let rec = emu.requests();
        assert_eq!(rec.len(), 3);
        assert!(rec[0].authorized && !rec[2].authorized);
    }

    #[tokio::test]
    async fn minted_tokens_verify_with_the_adapter_crypto() {
        let p = payload(10, "c", Duration::from_secs(60));
        let cookie = mint_cookie("s3cret", &p, "UA/1", "9.9.9.9");
        let (d, ok) = token::verify(
            &cookie,
            &["s3cret".into()],
            &token::Limits::default(),
            false,
            "UA/1",
            "9.9.9.9",
        )
        .unwrap();
        assert!(ok);
        assert_eq!(d.payload.u, p.u);
        let mobile = mint_mobile_token("s3cret", &p);
        let raw = mobile.strip_prefix("3:").unwrap();
        let (_, ok) = token::verify(
            raw,
            &["s3cret".into()],
            &token::Limits::default(),
            true,
            "",
            "",
        )
        .unwrap();
        assert!(ok);
    }

    #[tokio::test]
    async fn admin_script_and_mint_endpoints() {
        let emu = HumanEmulator::default();
        let r = emu
            .handle(post(
                "/_emulator/script",
                json!({"score": 90, "action": "r"}),
                None,
            ))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(emu.config().answer.score, Some(90));
        let r = body(
            emu.handle(post(
                "/_emulator/mint",
                json!({"secret": "k", "score": 5, "user_agent": "UA"}),
                None,
            ))
            .await,
        )
        .await;
        let t = r["token"].as_str().unwrap();
        let (_, ok) =
            token::verify(t, &["k".into()], &token::Limits::default(), false, "UA", "").unwrap();
        assert!(ok);
        assert!(emu.requests().is_empty(), "admin calls are not recorded");
    }
}
