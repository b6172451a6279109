//! Judging one OTP send: local defenses, the route's risk provider under its time budget,
//! any step-up proof, then [`policy::decide`]. Built once from settings; cheap per request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Version};

use crate::config::{ProviderChoice, Route, Settings};
use crate::entra::learn::{Channel, FlowId};
use crate::entra::send::Target;
use crate::gateway::OtpSend;
use crate::metrics::Metrics;
use crate::policy::{self, Decision, Inputs, ProofInput, ProviderInput};
use crate::risk::{
    self, BuildError, GuardConfig, Guarded, ProviderChallenge, RiskAction, RiskError, RiskProvider,
    RiskRequest,
};

/// What the request looked like, for the provider and the rules.
pub struct Subject<'a> {
    pub send: &'a OtpSend,
    pub flow: &'a FlowId,
    pub client_ip: IpAddr,
    pub client_id: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub method: &'a Method,
    pub version: Version,
    pub url: String,
    pub request_id: &'a str,
}

/// The result of judging: the decision, and what answering it needs.
pub struct Judgement {
    pub decision: Decision,
    pub route: &'static str,
    /// The provider's own challenge or block page, when it asked for one.
    pub provider_challenge: Option<ProviderChallenge>,
    pub provider: Option<&'static str>,
    /// The provider's answer (`allow`, `step_up`, `deny`) or error label; empty if not asked.
    pub provider_verdict: String,
    pub provider_latency: Option<Duration>,
    /// The destination phone, parsed, when the request names one.
    pub phone: Option<AuditPhone>,
}

/// The destination phone as the audit log shows it.
#[derive(Clone)]
pub struct AuditPhone {
    pub e164: String,
    pub region: Option<String>,
    masked: String,
}

impl AuditPhone {
    pub fn masked(&self) -> String {
        self.masked.clone()
    }
}

struct RouteRuntime {
    name: &'static str,
    guard: Option<Guarded>,
    route: Route,
}

/// Everything needed to judge sends, per route.
pub struct Judge {
    sms: RouteRuntime,
    email: RouteRuntime,
    global_monitor: bool,
    metrics: Arc<Metrics>,
}

impl Judge {
    /// Build the routes' providers. Must run inside a tokio runtime (HUMAN starts its
    /// activity sender).
    pub fn build(settings: &Settings, metrics: Arc<Metrics>) -> Result<Self, BuildError> {
        let mut built: Vec<(ProviderChoice, Arc<dyn RiskProvider>)> = Vec::new();
        let mut provider =
            |choice: ProviderChoice| -> Result<Option<Arc<dyn RiskProvider>>, BuildError> {
                if choice == ProviderChoice::None {
                    return Ok(None);
                }
                if let Some((_, p)) = built.iter().find(|(c, _)| *c == choice) {
                    return Ok(Some(p.clone()));
                }
                let p: Arc<dyn RiskProvider> = match choice {
                    ProviderChoice::Human => {
                        Arc::new(risk::HumanProvider::new(&settings.providers.human)?)
                    }
                    ProviderChoice::Prove => {
                        Arc::new(risk::ProveProvider::new(&settings.providers.prove)?)
                    }
                    ProviderChoice::Mock => {
                        Arc::new(risk::MockProvider::new(&settings.providers.mock)?)
                    }
                    ProviderChoice::None => return Ok(None),
                };
                built.push((choice, p.clone()));
                Ok(Some(p))
            };
        let guard = |p: Option<Arc<dyn RiskProvider>>, route: &Route| {
            p.map(|p| {
                Guarded::new(
                    p,
                    GuardConfig {
                        budget: route.budget,
                        failure_threshold: settings.providers.circuit.failure_threshold,
                        open_for: settings.circuit_open_for,
                        ..GuardConfig::default()
                    },
                )
            })
        };
        let sms_provider = provider(settings.routes.sms.provider)?;
        let email_provider = provider(settings.routes.email.provider)?;
        Ok(Self {
            sms: RouteRuntime {
                name: "sms",
                guard: guard(sms_provider, &settings.routes.sms),
                route: settings.routes.sms.clone(),
            },
            email: RouteRuntime {
                name: "email",
                guard: guard(email_provider, &settings.routes.email),
                route: settings.routes.email.clone(),
            },
            global_monitor: settings.policy.monitor,
            metrics,
        })
    }

    fn route(&self, channel: Channel) -> &RouteRuntime {
        match channel {
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
        }
    }

    /// Judge one send.
    pub async fn judge(&self, subject: &Subject<'_>) -> Judgement {
        let route = self.route(subject.send.channel);
        let local = Vec::new();

        let mut provider_challenge = None;
        let mut provider_name = None;
        let mut provider_latency = None;
        let mut provider_verdict = String::new();
        let provider = match &route.guard {
            None => ProviderInput::NotAsked,
            Some(guard) => {
                let eval = guard.evaluate(&risk_request(subject, guard)).await;
                provider_name = Some(eval.provider);
                provider_latency = Some(eval.latency);
                let outcome = match &eval.result {
                    Ok(_) => "ok",
                    Err(e) => error_label(e),
                };
                self.metrics
                    .provider_call(eval.provider, outcome, eval.latency);
                provider_verdict = match &eval.result {
                    Ok(v) => match v.action {
                        RiskAction::Allow => "allow",
                        RiskAction::StepUp => "step_up",
                        RiskAction::Deny => "deny",
                    }
                    .to_owned(),
                    Err(e) => error_label(e).to_owned(),
                };
                match eval.result {
                    Ok(verdict) => {
                        provider_challenge = verdict.challenge;
                        ProviderInput::Verdict {
                            action: verdict.action,
                            reasons: verdict.reasons,
                        }
                    }
                    Err(e) => ProviderInput::Failed {
                        error: error_label(&e),
                        fail_mode: route.route.fail_mode,
                    },
                }
            }
        };

        let decision = policy::decide(&Inputs {
            local,
            provider,
            proof: ProofInput::None,
            monitor: self.global_monitor || route.route.monitor,
        });
        self.metrics.decision(route.name, &decision);
        Judgement {
            decision,
            route: route.name,
            provider_challenge,
            provider: provider_name,
            provider_verdict,
            provider_latency,
            phone: None,
        }
    }
}

fn error_label(e: &RiskError) -> &'static str {
    match e {
        RiskError::Timeout => "timeout",
        RiskError::Unavailable(_) => "unavailable",
        RiskError::BadResponse(_) => "bad_response",
        RiskError::RateLimited { .. } => "rate_limited",
        RiskError::CircuitOpen => "circuit_open",
    }
}

fn risk_request(s: &Subject<'_>, guard: &Guarded) -> RiskRequest {
    let send = s.send;
    let mut req = RiskRequest::new(send.endpoint.as_str(), send.channel, s.client_ip);
    req.phone = match &send.target {
        Target::Phone(p) => Some(p.clone()),
        _ => None,
    };
    req.masked_target = send.label.clone();
    req.method_id = send.method_id.clone();
    req.flow_id = Some(s.flow.as_str().to_owned());
    req.user_agent = s
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    req.client_id = s.client_id.map(str::to_owned);
    req.url = s.url.clone();
    req.method = s.method.clone();
    req.http_version = s.version;
    req.headers = risk::provider_headers(s.headers, &guard.provider().wanted_headers());
    req
}
