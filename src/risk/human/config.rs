//! `[providers.human]`: the HUMAN adapter's configuration (each field names its NODE
//! enforcer key, A11), and the runtime settings built from it.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use super::{token, MODULE_VERSION};
use crate::risk::RiskRequest;

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
    pub(crate) fn risk_api_base(&self) -> String {
        match &self.base_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://sapi-{}.perimeterx.net", self.app_id.to_lowercase()),
        }
    }

    /// The collector base URL in effect.
    pub(crate) fn collector_base(&self) -> String {
        match &self.collector_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!(
                "https://collector-{}.perimeterx.net",
                self.app_id.to_lowercase()
            ),
        }
    }

    /// Every problem with the configuration, empty when it is usable.
    pub(crate) fn validate(&self) -> Vec<String> {
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

/// Runtime settings built from [`HumanConfig`].
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) app_id: String,
    pub(super) secrets: Vec<String>,
    pub(super) limits: token::Limits,
    /// Tokens decrypted with `secrets` recently; a reload builds new settings and with
    /// them a new cache.
    pub(super) tokens: Arc<token::DecryptCache>,
    pub(super) blocking_score: f64,
    pub(super) module_mode: ModuleMode,
    pub(super) bypass_monitor_header: Option<HeaderName>,
    pub(super) sensitive_route: bool,
    pub(super) custom_cookie_header: Option<HeaderName>,
    pub(super) sensitive_headers: Vec<HeaderName>,
    pub(super) wanted_headers: Vec<HeaderName>,
    pub(super) advanced_blocking_response: bool,
    pub(super) custom_logo: Option<String>,
    pub(super) pxhd_secure: bool,
    pub(super) module_version: String,
    pub(super) collector_base: String,
}

pub(super) fn header_names(names: &[String]) -> Vec<HeaderName> {
    names
        .iter()
        .filter_map(|n| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok())
        .collect()
}

impl Settings {
    pub(super) fn new(cfg: &HumanConfig) -> Self {
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
    pub(super) fn monitor(&self, req: &RiskRequest) -> bool {
        let bypass = self
            .bypass_monitor_header
            .as_ref()
            .and_then(|h| req.headers.get(h))
            .is_some_and(|v| v.as_bytes() == b"1");
        self.module_mode == ModuleMode::Monitor && !bypass
    }
}
