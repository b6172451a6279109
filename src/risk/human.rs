//! HUMAN Security (PerimeterX) Bot Defender adapter (reference part A): reads the risk
//! token (`_px3` cookie or mobile `X-PX-AUTHORIZATION`), decides per A6 whether the Risk
//! API must be asked, asks it, and turns a block into HUMAN's own challenge response.
//!
//! Every OTP send is treated as a HUMAN *sensitive route* by default (A6 recommendation),
//! so a valid low-score token still triggers a synchronous Risk API call. The HMAC is
//! verified before the token's score is trusted (JSCORE order), so a forged high-score
//! token cannot force blocks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{header, HeaderMap, HeaderName, HeaderValue, Version};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{
    epoch_ms, http_client, read_answer, retry_after, transport_error, BuildError, RiskAction,
    RiskError, RiskProvider, RiskRequest, RiskVerdict,
};

mod activities;
mod block;
pub mod token;

pub use activities::ActivityStats;
use activities::{ActivitySink, Collector};
pub use block::action_word;
use block::{Block, Format};
use token::TokenError;

/// Path of the synchronous Risk API on the sapi host.
pub const RISK_API_PATH: &str = "/api/v3/risk";
/// Path of the async activities endpoint on the collector host.
pub const COLLECTOR_PATH: &str = "/api/v1/collector/s2s";
/// The mobile SDK's token header.
pub const MOBILE_HEADER: &str = "x-px-authorization";
/// The mobile SDK's previous token, sent with a special value in [`MOBILE_HEADER`].
pub const ORIGINAL_TOKEN_HEADER: &str = "x-px-original-token";
/// The web risk cookie.
pub const RISK_COOKIE: &str = "_px3";

const MODULE_VERSION: &str = concat!("otpgate v", env!("CARGO_PKG_VERSION"));

/// `px_module_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleMode {
    /// Decide and report, but never block: blocks become `simulated_block` activities and
    /// the verdict is Allow.
    Monitor,
    /// Block per the score. The default here (HUMAN's own default is `monitor`) because
    /// otpgate has its own monitor mode, applied by the policy.
    #[default]
    ActiveBlocking,
}

/// Configuration of the HUMAN adapter; the NODE enforcer key of each field is named (A11).
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HumanConfig {
    /// HUMAN application id, e.g. `PXabcd1234` (NODE `px_app_id`). Required.
    pub app_id: String,
    /// Server token for the Risk API and the collector, sent as `Bearer` (NODE `px_auth_token`).
    /// Required.
    pub auth_token: String,
    /// Risk-token secrets (NODE `px_cookie_secret`): the current one first and, while rotating,
    /// the previous one second. At most two. With none, every token is sent to the Risk API
    /// with reason `no_cookie_key`.
    pub cookie_secrets: Vec<String>,
    /// Risk API base URL (NODE `px_backend_url`). Default
    /// `https://sapi-<app id lower-cased>.perimeterx.net`; point it at the emulator for tests.
    pub base_url: Option<String>,
    /// Collector base URL for async activities and the block page's `hostUrl`. Default
    /// `https://collector-<app id lower-cased>.perimeterx.net`.
    pub collector_url: Option<String>,
    /// Score (0–100) at or above which a request is blocked (NODE `px_blocking_score`).
    pub blocking_score: u8,
    /// `monitor` or `active_blocking` (NODE `px_module_mode`).
    pub module_mode: ModuleMode,
    /// In monitor mode, a request whose header of this name equals `1` is enforced anyway
    /// (NODE `px_bypass_monitor_header`). Unset: no bypass.
    pub bypass_monitor_header: Option<String>,
    /// Treat every OTP send as a sensitive route: call the Risk API even when the token is
    /// valid and its score low. Turning this off lets a valid low-score token pass alone.
    pub sensitive_route: bool,
    /// HTTP timeout of a Risk API call (NODE `px_s2s_timeout`). The gateway's own, usually
    /// shorter, budget is applied on top by the guard.
    #[serde(with = "humantime_serde")]
    pub s2s_timeout: Duration,
    /// TCP + TLS connect timeout towards HUMAN.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Lowest accepted PBKDF2 iteration count of a token (NODE `px_risk_cookie_min_iterations`).
    pub min_iterations: u32,
    /// Highest accepted PBKDF2 iteration count of a token (NODE `px_risk_cookie_max_iterations`).
    pub max_iterations: u32,
    /// Longest accepted token, in bytes (NODE `px_risk_cookie_max_length`).
    pub max_token_length: usize,
    /// A header carrying cookies in `Cookie` syntax, read besides `Cookie`
    /// (NODE `px_custom_cookie_header`).
    pub custom_cookie_header: Option<String>,
    /// Headers never sent to HUMAN (NODE `px_sensitive_headers`).
    pub sensitive_headers: Vec<String>,
    /// Request headers forwarded to the Risk API besides `User-Agent`, `Accept`,
    /// `Content-Type` and `x-px-*`; HUMAN scores on them.
    pub extra_headers: Vec<String>,
    /// Answer XHR clients (`Accept: application/json`) with the JSON block response
    /// (NODE `px_advanced_blocking_response_enabled`).
    pub advanced_blocking_response: bool,
    /// Logo URL shown on the block page (NODE `px_custom_logo`).
    pub custom_logo: Option<String>,
    /// Add `Secure` to the `_pxhd` cookie (NODE `px_pxhd_secure_enabled`).
    pub pxhd_secure: bool,
    /// `module_version` reported to HUMAN.
    pub module_version: String,
    /// Send `page_requested` / `block` activities to the collector
    /// (NODE `px_send_async_activities_enabled`).
    pub send_async_activities: bool,
    /// HTTP timeout of a collector call (NODE `px_batch_activities_timeout_ms`).
    #[serde(with = "humantime_serde")]
    pub activities_timeout: Duration,
    /// Most activities per collector call (NODE `px_max_activity_batch_size`).
    pub activity_batch_size: usize,
    /// Longest an activity waits for its batch to fill.
    #[serde(with = "humantime_serde")]
    pub activity_flush_interval: Duration,
    /// Activities queued for sending at most; more are dropped and counted.
    pub activity_queue_capacity: usize,
}

impl Default for HumanConfig {
    fn default() -> Self {
        Self {
            app_id: String::new(),
            auth_token: String::new(),
            cookie_secrets: Vec::new(),
            base_url: None,
            collector_url: None,
            blocking_score: 100,
            module_mode: ModuleMode::default(),
            bypass_monitor_header: None,
            sensitive_route: true,
            s2s_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(1000),
            min_iterations: 500,
            max_iterations: 5000,
            max_token_length: 2048,
            custom_cookie_header: Some("x-px-cookies".to_owned()),
            sensitive_headers: vec!["cookie".to_owned(), "cookies".to_owned()],
            extra_headers: [
                "accept-language",
                "accept-encoding",
                "origin",
                "referer",
                "sec-ch-ua",
                "sec-ch-ua-mobile",
                "sec-ch-ua-platform",
            ]
            .map(str::to_owned)
            .to_vec(),
            advanced_blocking_response: true,
            custom_logo: None,
            pxhd_secure: false,
            module_version: MODULE_VERSION.to_owned(),
            send_async_activities: true,
            activities_timeout: Duration::from_millis(1000),
            activity_batch_size: 30,
            activity_flush_interval: Duration::from_secs(1),
            activity_queue_capacity: 1024,
        }
    }
}

impl std::fmt::Debug for HumanConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HumanConfig")
            .field("app_id", &self.app_id)
            .field("auth_token", &"***")
            .field(
                "cookie_secrets",
                &format!("[{} redacted]", self.cookie_secrets.len()),
            )
            .field("base_url", &self.risk_api_base())
            .field("collector_url", &self.collector_base())
            .field("blocking_score", &self.blocking_score)
            .field("module_mode", &self.module_mode)
            .field("sensitive_route", &self.sensitive_route)
            .field("s2s_timeout", &self.s2s_timeout)
            .finish_non_exhaustive()
    }
}

impl HumanConfig {
    /// The Risk API base URL in effect.
    pub fn risk_api_base(&self) -> String {
        match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://sapi-{}.perimeterx.net", self.app_id.to_lowercase()),
        }
    }

    /// The collector base URL in effect.
    pub fn collector_base(&self) -> String {
        match &self.collector_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!(
                "https://collector-{}.perimeterx.net",
                self.app_id.to_lowercase()
            ),
        }
    }

    /// Every problem with the configuration, empty when it is usable.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.app_id.trim().is_empty() {
            p.push("app_id: required".to_owned());
        } else if !self.app_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            p.push("app_id: only letters and digits".to_owned());
        }
        if self.auth_token.trim().is_empty() {
            p.push("auth_token: required".to_owned());
        }
        if self.cookie_secrets.len() > token::MAX_SECRETS {
            p.push(format!(
                "cookie_secrets: at most {} (current and previous)",
                token::MAX_SECRETS
            ));
        }
        if self.cookie_secrets.iter().any(|s| s.is_empty()) {
            p.push("cookie_secrets: must not contain an empty secret".to_owned());
        }
        if self.blocking_score > 100 {
            p.push("blocking_score: 0 to 100".to_owned());
        }
        for (field, url) in [
            ("base_url", self.risk_api_base()),
            ("collector_url", self.collector_base()),
        ] {
            match reqwest::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => p.push(format!("{field}: not an http(s) URL")),
            }
        }
        if self.min_iterations == 0 || self.min_iterations > self.max_iterations {
            p.push("min_iterations: must be at least 1 and not above max_iterations".to_owned());
        }
        if self.max_token_length == 0 {
            p.push("max_token_length: must be at least 1".to_owned());
        }
        let names = self
            .sensitive_headers
            .iter()
            .chain(&self.extra_headers)
            .chain(&self.custom_cookie_header)
            .chain(&self.bypass_monitor_header);
        for name in names {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(format!("header name {name:?}: invalid"));
            }
        }
        if self.s2s_timeout.is_zero() {
            p.push("s2s_timeout: must be greater than zero".to_owned());
        }
        if self.activity_batch_size == 0 || self.activity_queue_capacity == 0 {
            p.push("activity_batch_size, activity_queue_capacity: must be at least 1".to_owned());
        }
        p
    }
}

/// Why the Risk API is called (`additional.s2s_call_reason`, reference A3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallReason {
    NoCookie,
    NoCookieWithVid,
    NoCookieKey,
    CookieExpired,
    CookieDecryptionFailed,
    CookieValidationFailed,
    SensitiveRoute,
    /// A mobile special value: 1 no token yet, 2 connection error, 3 pinning error,
    /// 4 bypass.
    MobileError(u8),
}

impl CallReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CallReason::NoCookie => "no_cookie",
            CallReason::NoCookieWithVid => "no_cookie_w_vid",
            CallReason::NoCookieKey => "no_cookie_key",
            CallReason::CookieExpired => "cookie_expired",
            CallReason::CookieDecryptionFailed => "cookie_decryption_failed",
            CallReason::CookieValidationFailed => "cookie_validation_failed",
            CallReason::SensitiveRoute => "sensitive_route",
            CallReason::MobileError(1) => "mobile_error_1",
            CallReason::MobileError(2) => "mobile_error_2",
            CallReason::MobileError(3) => "mobile_error_3",
            CallReason::MobileError(_) => "mobile_error_4",
        }
    }
}

/// Where the token came from (`additional.cookie_origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieOrigin {
    /// The `_px3` cookie of a web client.
    Cookie,
    /// The `X-PX-AUTHORIZATION` header of a mobile-SDK client.
    Header,
}

impl CookieOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            CookieOrigin::Cookie => "cookie",
            CookieOrigin::Header => "header",
        }
    }
}

/// What the token alone decides (reference A6).
#[derive(Debug, Clone, PartialEq)]
pub enum TokenOutcome {
    /// Valid, low score, not a sensitive route: pass without calling (`pass_reason: cookie`).
    Pass,
    /// Valid token with a score at or above the blocking score (`cookie_high_score`).
    Block { score: f64, action: String },
    /// Ask the Risk API.
    Call(CallReason),
}

/// The mobile `X-PX-ORIGINAL-TOKEN`, evaluated when the main header holds a special value.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginalToken {
    pub raw: String,
    pub uuid: Option<String>,
    pub decoded: Option<String>,
    /// `decryption_failed` or `validation_failed` (NODE/PHP names).
    pub error: Option<&'static str>,
}

/// Everything read from the request's HUMAN cookies and headers.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenState {
    pub outcome: TokenOutcome,
    pub origin: CookieOrigin,
    pub vid: Option<String>,
    /// `risk_cookie` or `vid_cookie`, when `vid` is known.
    pub vid_source: Option<&'static str>,
    pub uuid: Option<String>,
    pub pxhd: Option<String>,
    pub cookie_names: Vec<String>,
    /// The raw token, reported as `px_orig_cookie` when it was not decrypted: it cannot
    /// be, or its HMAC matched no secret and signed fields (see [`token`]).
    pub raw_token: Option<String>,
    /// The decrypted payload JSON and the token's HMAC, reported as `px_cookie` /
    /// `px_cookie_hmac`.
    pub decoded: Option<(String, String)>,
    pub original: Option<OriginalToken>,
}

/// Runtime settings built from [`HumanConfig`].
#[derive(Debug, Clone)]
struct Settings {
    app_id: String,
    secrets: Vec<String>,
    limits: token::Limits,
    /// Tokens decrypted with `secrets` recently; a reload builds new settings and with
    /// them a new cache.
    tokens: Arc<token::DecryptCache>,
    blocking_score: f64,
    module_mode: ModuleMode,
    bypass_monitor_header: Option<HeaderName>,
    sensitive_route: bool,
    custom_cookie_header: Option<HeaderName>,
    sensitive_headers: Vec<HeaderName>,
    wanted_headers: Vec<HeaderName>,
    advanced_blocking_response: bool,
    custom_logo: Option<String>,
    pxhd_secure: bool,
    module_version: String,
    collector_base: String,
}

fn header_names(names: &[String]) -> Vec<HeaderName> {
    names
        .iter()
        .filter_map(|n| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok())
        .collect()
}

impl Settings {
    fn new(cfg: &HumanConfig) -> Self {
        let one = |n: &Option<String>| {
            n.as_ref()
                .and_then(|n| header_names(std::slice::from_ref(n)).pop())
        };
        let custom_cookie_header = one(&cfg.custom_cookie_header);
        let bypass_monitor_header = one(&cfg.bypass_monitor_header);
        let mut wanted_headers = header_names(&cfg.extra_headers);
        wanted_headers.extend(custom_cookie_header.clone());
        wanted_headers.extend(bypass_monitor_header.clone());
        Self {
            app_id: cfg.app_id.clone(),
            secrets: cfg.cookie_secrets.clone(),
            tokens: Arc::new(token::DecryptCache::default()),
            limits: token::Limits {
                min_iterations: cfg.min_iterations,
                max_iterations: cfg.max_iterations,
                max_length: cfg.max_token_length,
            },
            blocking_score: f64::from(cfg.blocking_score),
            module_mode: cfg.module_mode,
            bypass_monitor_header,
            sensitive_route: cfg.sensitive_route,
            custom_cookie_header,
            sensitive_headers: header_names(&cfg.sensitive_headers),
            wanted_headers,
            advanced_blocking_response: cfg.advanced_blocking_response,
            custom_logo: cfg.custom_logo.clone(),
            pxhd_secure: cfg.pxhd_secure,
            module_version: cfg.module_version.clone(),
            collector_base: cfg.collector_base(),
        }
    }

    /// `risk_mode` for this request (NODE `isReqInMonitorMode`, without route lists: the
    /// gateway routes only OTP sends here).
    fn monitor(&self, req: &RiskRequest) -> bool {
        let bypass = self
            .bypass_monitor_header
            .as_ref()
            .and_then(|h| req.headers.get(h))
            .is_some_and(|v| v.as_bytes() == b"1");
        self.module_mode == ModuleMode::Monitor && !bypass
    }
}

fn user_agent(req: &RiskRequest) -> &str {
    req.user_agent
        .as_deref()
        .or_else(|| req.header(header::USER_AGENT.as_str()))
        .unwrap_or("")
}

/// `name=value` pairs from `Cookie` headers and the custom cookie header, in order.
fn cookies(headers: &HeaderMap, custom: Option<&HeaderName>) -> Vec<(String, String)> {
    let values = headers
        .get_all(header::COOKIE)
        .iter()
        .chain(custom.into_iter().flat_map(|h| headers.get_all(h).iter()));
    let mut out = Vec::new();
    for value in values {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, v)) = pair.split_once('=') {
                out.push((name.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    out
}

/// A v1–v5 UUID in lower-case canonical form, the only `_pxvid` values accepted.
fn is_vid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && (b'1'..=b'5').contains(&b[14])
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

/// [`read_token`] under the settings `cfg` builds: the fuzz checks compare it with the
/// token functions.
pub(crate) fn read_token_with(cfg: &HumanConfig, req: &RiskRequest, now_ms: f64) -> TokenState {
    read_token(req, &Settings::new(cfg), now_ms)
}

/// Reads the request's HUMAN token and decides what it alone says (reference A6, with the
/// HMAC checked before decryption and again right after it: see [`token`]). `now_ms` is
/// the wall clock in epoch ms.
fn read_token(req: &RiskRequest, s: &Settings, now_ms: f64) -> TokenState {
    let jar = cookies(&req.headers, s.custom_cookie_header.as_ref());
    let find = |name: &str| jar.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let pxhd = find("_pxhd");
    let mut st = TokenState {
        outcome: TokenOutcome::Call(CallReason::NoCookie),
        origin: CookieOrigin::Cookie,
        vid: None,
        vid_source: None,
        uuid: None,
        pxhd: pxhd.clone(),
        cookie_names: jar.iter().map(|(n, _)| n.clone()).collect(),
        raw_token: None,
        decoded: None,
        original: None,
    };
    let socket_ip = req.client_ip.to_string();
    let ua = user_agent(req);

    let (raw, mobile) = if let Some(value) = req.headers.get(MOBILE_HEADER) {
        st.origin = CookieOrigin::Header;
        st.cookie_names.clear();
        let value = value.to_str().unwrap_or("");
        if let [digit @ b'1'..=b'4'] = value.as_bytes() {
            st.outcome = TokenOutcome::Call(CallReason::MobileError(digit - b'0'));
            if let Some(orig) = req
                .headers
                .get(ORIGINAL_TOKEN_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                let original = read_original(orig, s, now_ms);
                if original.error.is_none() {
                    if let Some((plain, _)) = &original.decoded {
                        if let Ok(p) = serde_json::from_str::<token::Payload>(plain) {
                            st.vid = Some(p.v);
                            st.vid_source = Some("risk_cookie");
                        }
                    }
                }
                st.original = Some(OriginalToken {
                    raw: original.raw,
                    uuid: original.uuid,
                    decoded: original.decoded.map(|(plain, _)| plain),
                    error: original.error,
                });
            }
            return st;
        }
        match value.strip_prefix("3:") {
            Some(t) => (t.to_owned(), true),
            None => {
                st.raw_token = Some(value.to_owned());
                st.outcome = TokenOutcome::Call(CallReason::CookieDecryptionFailed);
                return st;
            }
        }
    } else {
        if let Some(vid) = find("_pxvid")
            .or_else(|| find("pxvid"))
            .filter(|v| is_vid(v))
        {
            st.vid = Some(vid);
            st.vid_source = Some("vid_cookie");
        }
        match find(RISK_COOKIE) {
            Some(raw) => {
                let raw = percent_encoding::percent_decode_str(&raw)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .unwrap_or(raw);
                (raw, false)
            }
            None => {
                let reason = if pxhd.is_some() {
                    CallReason::NoCookieWithVid
                } else {
                    CallReason::NoCookie
                };
                st.outcome = TokenOutcome::Call(reason);
                return st;
            }
        }
    };

    if s.secrets.is_empty() {
        st.outcome = TokenOutcome::Call(CallReason::NoCookieKey);
        return st;
    }
    let verified = token::verify_cached(
        &raw, &s.secrets, &s.limits, mobile, ua, &socket_ip, &s.tokens, now_ms,
    );
    let hmac = raw.split(':').next().unwrap_or("").to_owned();
    let (decrypted, hmac_ok) = match verified {
        Err(error) => {
            st.raw_token = Some(raw);
            st.outcome = TokenOutcome::Call(match error {
                TokenError::Decryption => CallReason::CookieDecryptionFailed,
                TokenError::Validation => CallReason::CookieValidationFailed,
            });
            return st;
        }
        Ok(v) => v,
    };
    st.decoded = Some((decrypted.plaintext.clone(), hmac));
    if !hmac_ok {
        st.outcome = TokenOutcome::Call(CallReason::CookieValidationFailed);
        return st;
    }
    let payload = decrypted.payload;
    st.vid = Some(payload.v.clone());
    st.vid_source = Some("risk_cookie");
    st.uuid = Some(payload.u.clone());
    st.outcome = if payload.t < now_ms {
        TokenOutcome::Call(CallReason::CookieExpired)
    } else if payload.s >= s.blocking_score {
        TokenOutcome::Block {
            score: payload.s,
            action: payload.a,
        }
    } else if s.sensitive_route {
        TokenOutcome::Call(CallReason::SensitiveRoute)
    } else {
        TokenOutcome::Pass
    };
    st
}

struct OriginalRead {
    raw: String,
    uuid: Option<String>,
    decoded: Option<(String, String)>,
    error: Option<&'static str>,
}

fn read_original(value: &str, s: &Settings, now_ms: f64) -> OriginalRead {
    let mut out = OriginalRead {
        raw: value.to_owned(),
        uuid: None,
        decoded: None,
        error: Some("decryption_failed"),
    };
    let Some(raw) = value.strip_prefix("3:") else {
        return out;
    };
    match token::verify_cached(raw, &s.secrets, &s.limits, true, "", "", &s.tokens, now_ms) {
        Ok((d, ok)) => {
            let hmac = raw.split(':').next().unwrap_or("").to_owned();
            out.error = if ok { None } else { Some("validation_failed") };
            if ok {
                out.uuid = Some(d.payload.u.clone());
            }
            out.decoded = Some((d.plaintext, hmac));
        }
        Err(TokenError::Validation) => out.error = Some("validation_failed"),
        Err(TokenError::Decryption) => {}
    }
    out
}

fn http_version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// `[{name, value}]`, one entry per value, minus the sensitive headers; the user agent is
/// added when the request carries it only as a field.
fn header_list(req: &RiskRequest, s: &Settings) -> Vec<Value> {
    let mut out: Vec<Value> = req
        .headers
        .iter()
        .filter(|(name, _)| !s.sensitive_headers.contains(name))
        .filter_map(|(name, value)| {
            let value = value.to_str().ok()?;
            Some(json!({"name": name.as_str(), "value": value}))
        })
        .collect();
    if !req.headers.contains_key(header::USER_AGENT) {
        if let Some(ua) = &req.user_agent {
            out.push(json!({"name": "user-agent", "value": ua}));
        }
    }
    out
}

/// Per-request facts shared by the Risk API body and the activities.
struct Call<'a> {
    req: &'a RiskRequest,
    st: &'a TokenState,
    monitor: bool,
    request_id: String,
    enforcer_start: u64,
}

impl Call<'_> {
    fn risk_mode(&self) -> &'static str {
        if self.monitor {
            "monitor"
        } else {
            "active_blocking"
        }
    }
}

/// The Risk API request body (reference A2). Sends `request.socket_ip` (newest cores) and
/// the NODE field names elsewhere; the vid source goes in both places the cores use.
fn risk_body(c: &Call<'_>, s: &Settings, reason: CallReason, risk_start: u64) -> Value {
    let req = c.req;
    let st = c.st;
    let mut additional = Map::new();
    let mut put = |k: &str, v: Value| {
        additional.insert(k.to_owned(), v);
    };
    put("s2s_call_reason", json!(reason.as_str()));
    put("http_version", json!(http_version(req.http_version)));
    put("http_method", json!(req.method.as_str()));
    put("risk_mode", json!(c.risk_mode()));
    put("module_version", json!(s.module_version));
    put("cookie_origin", json!(st.origin.as_str()));
    put("request_cookie_names", json!(st.cookie_names));
    put("request_id", json!(c.request_id));
    put(
        "enforcer_vid_source",
        json!(st.vid_source.unwrap_or("none")),
    );
    put("enforcer_start_time", json!(c.enforcer_start));
    put("risk_start_time", json!(risk_start));
    match reason {
        CallReason::CookieDecryptionFailed => {
            if let Some(raw) = &st.raw_token {
                put("px_orig_cookie", json!(raw));
            }
        }
        CallReason::CookieExpired
        | CallReason::CookieValidationFailed
        | CallReason::SensitiveRoute => {
            if let Some((plain, hmac)) = &st.decoded {
                put("px_cookie", json!(plain));
                put("px_cookie_hmac", json!(hmac));
            } else if let Some(raw) = &st.raw_token {
                // Refused before decryption (its HMAC matched nothing): sent as received.
                put("px_orig_cookie", json!(raw));
            }
        }
        _ => {}
    }
    if let Some(orig) = &st.original {
        put("original_token", json!(orig.raw));
        if let Some(u) = &orig.uuid {
            put("original_uuid", json!(u));
        }
        if let Some(d) = &orig.decoded {
            put("px_decoded_original_token", json!(d));
        }
        if let Some(e) = orig.error {
            put("original_token_error", json!(e));
        }
    }
    let mut body = json!({
        "request": {
            "socket_ip": req.client_ip.to_string(),
            "headers": header_list(req, s),
            "url": req.url,
        },
        "additional": additional,
    });
    if let Some(obj) = body.as_object_mut() {
        if let Some(vid) = &st.vid {
            obj.insert("vid".into(), json!(vid));
        }
        if let Some(src) = st.vid_source {
            obj.insert("vid_source".into(), json!(src));
        }
        if let Some(uuid) = &st.uuid {
            obj.insert("client_uuid".into(), json!(uuid));
        }
        if let Some(pxhd) = &st.pxhd {
            obj.insert("pxhd".into(), json!(pxhd));
        }
    }
    body
}

/// A Risk API response (reference A4).
#[derive(Debug, Clone, Deserialize)]
struct RiskResponse {
    status: Option<i64>,
    uuid: Option<String>,
    score: Option<f64>,
    action: Option<String>,
    pxhd: Option<String>,
    action_data: Option<ActionData>,
    message: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct ActionData {
    body: Option<String>,
}

/// A response that passed validation: success status, numeric score, an action.
#[derive(Debug, Clone)]
struct RiskAnswer {
    uuid: Option<String>,
    score: f64,
    action: String,
    pxhd: Option<String>,
    challenge_body: Option<String>,
}

/// Maps the HTTP answer of the Risk API to a validated response or an error (A4).
fn interpret(
    status: http::StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<RiskAnswer, RiskError> {
    if status == http::StatusCode::TOO_MANY_REQUESTS {
        return Err(RiskError::RateLimited {
            retry_after: retry_after(headers),
        });
    }
    if status.is_server_error() {
        return Err(RiskError::Unavailable(format!(
            "server_error: http {}",
            status.as_u16()
        )));
    }
    if status.is_client_error() {
        return Err(RiskError::BadResponse(format!(
            "bad_request: http {}",
            status.as_u16()
        )));
    }
    if !status.is_success() {
        return Err(RiskError::Unavailable(format!(
            "unknown_error: http {}",
            status.as_u16()
        )));
    }
    let r: RiskResponse = serde_json::from_slice(body)
        .map_err(|_| RiskError::BadResponse("invalid_response: not a risk response".into()))?;
    if r.status != Some(0) {
        let message = r.message.unwrap_or_default();
        let message: String = message.chars().take(200).collect();
        return Err(RiskError::BadResponse(format!(
            "request_failed_on_server: {message}"
        )));
    }
    match (r.score, r.action) {
        (Some(score), Some(action)) if !action.is_empty() && (0.0..=100.0).contains(&score) => {
            Ok(RiskAnswer {
                uuid: r.uuid,
                score,
                action,
                pxhd: r.pxhd,
                challenge_body: r.action_data.and_then(|d| d.body),
            })
        }
        _ => Err(RiskError::BadResponse(
            "invalid_response: score or action missing".into(),
        )),
    }
}

/// The HUMAN Bot Defender adapter. Cheap to clone.
#[derive(Clone)]
pub struct HumanProvider {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    client: reqwest::Client,
    risk_url: String,
    auth_token: String,
    activities: ActivitySink,
}

impl HumanProvider {
    /// Builds the adapter and, when activities are enabled, starts their sender task on the
    /// current tokio runtime.
    pub fn new(cfg: &HumanConfig) -> Result<Self, BuildError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(BuildError::Invalid(problems));
        }
        let client = http_client(cfg.s2s_timeout, cfg.connect_timeout)?;
        let activities = if cfg.send_async_activities {
            let runtime =
                tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
            let collector = Collector {
                client: http_client(cfg.activities_timeout, cfg.connect_timeout)?,
                url: format!("{}{}", cfg.collector_base(), COLLECTOR_PATH),
                auth_token: cfg.auth_token.clone(),
                batch_size: cfg.activity_batch_size,
                flush_interval: cfg.activity_flush_interval,
            };
            ActivitySink::spawn(collector, cfg.activity_queue_capacity, &runtime)
        } else {
            ActivitySink::disabled()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                settings: Settings::new(cfg),
                client,
                risk_url: format!("{}{}", cfg.risk_api_base(), RISK_API_PATH),
                auth_token: cfg.auth_token.clone(),
                activities,
            }),
        })
    }

    /// Counters of the async-activity pipeline.
    pub fn activity_stats(&self) -> ActivityStats {
        self.inner.activities.stats()
    }

    async fn post_risk(&self, body: &Value) -> Result<RiskAnswer, RiskError> {
        let rsp = self
            .inner
            .client
            .post(&self.inner.risk_url)
            .bearer_auth(&self.inner.auth_token)
            .json(body)
            .send()
            .await
            .map_err(|e| transport_error(&e))?;
        let status = rsp.status();
        let headers = rsp.headers().clone();
        let bytes = read_answer(rsp).await?;
        interpret(status, &headers, &bytes)
    }

    fn activity(&self, c: &Call<'_>, kind: &str, details: Map<String, Value>) -> Value {
        let s = &self.inner.settings;
        let mut d = Map::new();
        d.insert(
            "http_version".into(),
            json!(http_version(c.req.http_version)),
        );
        d.insert("http_method".into(), json!(c.req.method.as_str()));
        d.insert("module_version".into(), json!(s.module_version));
        d.insert("cookie_origin".into(), json!(c.st.origin.as_str()));
        d.insert("request_cookie_names".into(), json!(c.st.cookie_names));
        d.insert("enforcer_start_time".into(), json!(c.enforcer_start));
        d.insert("request_id".into(), json!(c.request_id));
        d.insert("risk_mode".into(), json!(c.risk_mode()));
        d.insert("is_sensitive_route".into(), json!(s.sensitive_route));
        if let Some(uuid) = &c.st.uuid {
            d.insert("client_uuid".into(), json!(uuid));
        }
        if let Some((plain, _)) = &c.st.decoded {
            if let Ok(v) = serde_json::from_str::<Value>(plain) {
                d.insert("px_cookie".into(), v);
            }
        }
        d.extend(details);
        let mut a = json!({
            "type": kind,
            "timestamp": epoch_ms(),
            "socket_ip": c.req.client_ip.to_string(),
            "px_app_id": s.app_id,
            "url": c.req.url,
            "headers": header_list(c.req, s),
            "details": d,
        });
        if let Some(obj) = a.as_object_mut() {
            if let Some(vid) = &c.st.vid {
                obj.insert("vid".into(), json!(vid));
            }
            if let Some(pxhd) = &c.st.pxhd {
                obj.insert("pxhd".into(), json!(pxhd));
            }
        }
        a
    }

    fn passed(&self, c: &Call<'_>, pass_reason: &str, extra: Map<String, Value>) {
        let mut d = extra;
        d.insert("pass_reason".into(), json!(pass_reason));
        let a = self.activity(c, "page_requested", d);
        self.inner.activities.push(a);
    }

    /// The verdict for a score at or above the blocking score (A6, A10, A14).
    #[allow(clippy::too_many_arguments)]
    fn blocked(
        &self,
        c: &Call<'_>,
        score: f64,
        action: &str,
        block_reason: &str,
        uuid: Option<&str>,
        challenge_body: Option<&str>,
        pxhd: Option<&str>,
        call_reason: Option<CallReason>,
    ) -> RiskVerdict {
        let s = &self.inner.settings;
        let mut d = Map::new();
        d.insert("block_reason".into(), json!(block_reason));
        d.insert("block_score".into(), json!(score));
        d.insert("block_action".into(), json!(action));
        d.insert("simulated_block".into(), json!(c.monitor));
        if let Some(uuid) = uuid {
            d.insert("block_uuid".into(), json!(uuid));
        }
        if let Some(r) = call_reason {
            d.insert("s2s_call_reason".into(), json!(r.as_str()));
        }
        let a = self.activity(c, "block", d);
        self.inner.activities.push(a);

        let mut verdict = RiskVerdict::new(RiskAction::Allow).with_score(score / 100.0);
        verdict.reference = uuid.map(str::to_owned);
        if let Some(r) = call_reason {
            verdict
                .reasons
                .push(format!("s2s_call_reason:{}", r.as_str()));
        }
        verdict.reasons.push(format!("block_reason:{block_reason}"));
        verdict.reasons.push(format!("action:{action}"));
        if c.monitor {
            verdict.reasons.push("simulated_block".into());
            return verdict;
        }
        verdict.action = match action {
            "b" | "r" => RiskAction::Deny,
            _ => RiskAction::StepUp,
        };
        let format = if c.st.origin == CookieOrigin::Header {
            Format::Mobile
        } else if s.advanced_blocking_response && wants_json(c.req) {
            Format::Json
        } else {
            Format::Html
        };
        let block = Block {
            app_id: &s.app_id,
            action,
            uuid: uuid.unwrap_or(""),
            vid: c.st.vid.as_deref().unwrap_or(""),
            collector_url: &s.collector_base,
            custom_logo: s.custom_logo.as_deref(),
            challenge_body,
            set_pxhd: pxhd.and_then(|p| pxhd_cookie(p, s.pxhd_secure)),
        };
        verdict.challenge = Some(block.render(format));
        verdict
    }

    async fn call(&self, c: &Call<'_>, reason: CallReason) -> Result<RiskVerdict, RiskError> {
        let s = &self.inner.settings;
        let risk_start = epoch_ms();
        let body = risk_body(c, s, reason, risk_start);
        let mut timeout_details = Map::new();
        timeout_details.insert("s2s_call_reason".into(), json!(reason.as_str()));
        timeout_details.insert("pass_reason".into(), json!("s2s_timeout"));
        // Reported if the gateway's budget cancels this call before it returns.
        let mut pending = PendingActivity {
            sink: &self.inner.activities,
            activity: Some(self.activity(c, "page_requested", timeout_details)),
        };
        let started = tokio::time::Instant::now();
        let result = self.post_risk(&body).await;
        let rtt = started.elapsed().as_millis() as u64;
        pending.activity = None;

        let mut details = Map::new();
        details.insert("s2s_call_reason".into(), json!(reason.as_str()));
        details.insert("risk_start_time".into(), json!(risk_start));
        details.insert("risk_rtt".into(), json!(rtt));
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                let pass_reason = if e == RiskError::Timeout {
                    "s2s_timeout"
                } else {
                    details.insert("s2s_error_reason".into(), json!(e.kind()));
                    details.insert("s2s_error_message".into(), json!(e.to_string()));
                    "s2s_error"
                };
                self.passed(c, pass_reason, details);
                return Err(e);
            }
        };
        if answer.score >= s.blocking_score {
            let block_reason = match answer.action.as_str() {
                "j" if answer.challenge_body.is_some() => "challenge",
                "r" => "exceeded_rate_limit",
                _ => "s2s_high_score",
            };
            return Ok(self.blocked(
                c,
                answer.score,
                &answer.action,
                block_reason,
                answer.uuid.as_deref(),
                answer.challenge_body.as_deref(),
                answer.pxhd.as_deref(),
                Some(reason),
            ));
        }
        self.passed(c, "s2s", details);
        let mut verdict = RiskVerdict::allow()
            .with_score(answer.score / 100.0)
            .with_reason(format!("s2s_call_reason:{}", reason.as_str()))
            .with_reason("pass_reason:s2s");
        verdict.reference = answer.uuid;
        Ok(verdict)
    }
}

/// Pushes its activity when dropped unless cleared: the call was cancelled.
struct PendingActivity<'a> {
    sink: &'a ActivitySink,
    activity: Option<Value>,
}

impl Drop for PendingActivity<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.activity.take() {
            self.sink.push(a);
        }
    }
}

fn wants_json(req: &RiskRequest) -> bool {
    [header::ACCEPT, header::CONTENT_TYPE].iter().any(|h| {
        req.headers
            .get_all(h)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("application/json")))
    })
}

/// `_pxhd=<value>; SameSite=Lax; Expires=<now + 1 year>[; Secure]` (NODE).
fn pxhd_cookie(value: &str, secure: bool) -> Option<HeaderValue> {
    let expires = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let expires = expires.format(&format).ok()?;
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "_pxhd={value}; Path=/; SameSite=Lax; Expires={expires}{secure}"
    ))
    .ok()
}

#[async_trait]
impl RiskProvider for HumanProvider {
    fn name(&self) -> &'static str {
        "human"
    }

    async fn evaluate(&self, req: &RiskRequest) -> Result<RiskVerdict, RiskError> {
        let s = &self.inner.settings;
        let enforcer_start = epoch_ms();
        let st = read_token(req, s, enforcer_start as f64);
        let c = Call {
            req,
            st: &st,
            monitor: s.monitor(req),
            request_id: uuid::Uuid::new_v4().to_string(),
            enforcer_start,
        };
        match &st.outcome {
            TokenOutcome::Pass => {
                self.passed(&c, "cookie", Map::new());
                let score = token_score(&st);
                let mut v = RiskVerdict::allow().with_reason("pass_reason:cookie");
                v.score = score;
                v.reference = st.uuid.clone();
                Ok(v)
            }
            TokenOutcome::Block { score, action } => Ok(self.blocked(
                &c,
                *score,
                action,
                "cookie_high_score",
                st.uuid.as_deref(),
                None,
                None,
                None,
            )),
            TokenOutcome::Call(reason) => self.call(&c, *reason).await,
        }
    }

    fn wanted_headers(&self) -> Vec<HeaderName> {
        self.inner.settings.wanted_headers.clone()
    }
}

fn token_score(st: &TokenState) -> Option<f64> {
    let (plain, _) = st.decoded.as_ref()?;
    let p: token::Payload = serde_json::from_str(plain).ok()?;
    Some((p.s / 100.0).clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests;
