//! HUMAN Security (PerimeterX) Bot Defender adapter (reference part A): reads the risk
//! token (`_px3` cookie or mobile `X-PX-AUTHORIZATION`), decides per A6 whether the Risk
//! API must be asked, asks it, and turns a block into HUMAN's own challenge response.
//!
//! Every OTP send is treated as a HUMAN *sensitive route* by default (A6 recommendation),
//! so a valid low-score token still triggers a synchronous Risk API call. The HMAC is
//! verified before the token's score is trusted (JSCORE order), so a forged high-score
//! token cannot force blocks.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};

use super::{
    epoch_ms, http_client, read_answer, transport_error, BuildError, RiskAction, RiskError,
    RiskProvider, RiskRequest, RiskVerdict,
};

mod activities;
mod block;
mod config;
mod enforcer;
pub mod token;

use config::Settings;
pub use config::{HumanConfig, ModuleMode};
pub(crate) use enforcer::read_token_with;
use enforcer::*;
pub(crate) use enforcer::{CallReason, CookieOrigin, TokenOutcome, TokenState};

pub(crate) use activities::ActivityStats;
use activities::{ActivitySink, Collector};
use block::{Block, Format};

/// Path of the synchronous Risk API on the sapi host.
pub const RISK_API_PATH: &str = "/api/v3/risk";
/// Path of the async activities endpoint on the collector host.
pub(crate) const COLLECTOR_PATH: &str = "/api/v1/collector/s2s";
/// The mobile SDK's token header.
pub(crate) const MOBILE_HEADER: &str = "x-px-authorization";
/// The mobile SDK's previous token, sent with a special value in [`MOBILE_HEADER`].
pub(crate) const ORIGINAL_TOKEN_HEADER: &str = "x-px-original-token";
/// The web risk cookie.
pub(crate) const RISK_COOKIE: &str = "_px3";

const MODULE_VERSION: &str = concat!("otpgate v", env!("CARGO_PKG_VERSION"));

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

    /// `traceparent`: the W3C trace context of a traced request, sent along.
    async fn post_risk(
        &self,
        body: &Value,
        traceparent: Option<&http::HeaderValue>,
    ) -> Result<RiskAnswer, RiskError> {
        let mut post = self
            .inner
            .client
            .post(&self.inner.risk_url)
            .bearer_auth(&self.inner.auth_token)
            .json(body);
        if let Some(tp) = traceparent {
            post = post.header("traceparent", tp.clone());
        }
        let rsp = post.send().await.map_err(|e| transport_error(&e))?;
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
        let result = self.post_risk(&body, c.req.traceparent.as_ref()).await;
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
