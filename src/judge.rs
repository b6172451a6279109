//! Judging one OTP send: local defenses, the route's risk provider under its time budget,
//! any step-up proof, then [`policy::decide`]. Built once from settings; cheap per request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Version};

use crate::config::{ProviderChoice, Route, Settings};
use crate::defense::velocity::Subject as VelocitySubject;
use crate::defense::{
    DestinationAction, DestinationPolicy, Phone, VelocityAction, VelocityOutcome, VelocityRules,
};
use crate::entra::learn::{Channel, FlowId};
use crate::entra::send::{OtpSend, Target};
use crate::metrics::Metrics;
use crate::policy::StepUpBy;
use crate::policy::{
    self, Decision, Inputs, LocalAction, LocalVerdict, Outcome, ProofInput, ProviderInput,
};
use crate::risk::FailMode;
use crate::risk::{
    self, BuildError, GuardConfig, Guarded, ProviderChallenge, RiskAction, RiskError, RiskProvider,
    RiskRequest,
};
use crate::stepup::{AltchaChallenge, Binding, Pow};
use crate::store::{KeyHasher, Store};

/// What the request looked like, for the provider and the rules.
pub struct Subject<'a> {
    pub send: &'a OtpSend,
    pub flow: &'a FlowId,
    pub client_ip: IpAddr,
    pub client_id: Option<&'a str>,
    /// Keyed hash of the flow's username, when known.
    pub user: Option<&'a str>,
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
    /// Our proof-of-work challenge, when the decision is our step-up.
    pub pow_challenge: Option<AltchaChallenge>,
    /// The header the client returns the solved proof in.
    pub proof_header: http::HeaderName,
    /// The velocity slots an allowed send holds until Entra's answer says whether it sent a
    /// code (see [`Judge::give_back`]).
    pub held: Option<HeldSlots>,
}

/// Velocity slots reserved for a send that was let through.
pub struct HeldSlots {
    outcome: VelocityOutcome,
    reservation_id: String,
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
    /// The route's provider when it is Prove, for its possession step-up.
    prove: Option<Arc<risk::ProveProvider>>,
    route: Route,
}

/// The header a client retries with after completing a Prove possession check: the
/// `correlationId` from the challenge.
pub const PROVE_CORRELATION_HEADER: &str = "x-otpgate-prove-correlation";

/// How long a started possession check stays bound to its flow.
const POSSESSION_TTL: Duration = Duration::from_secs(15 * 60);

/// What the store keeps about a possession check the gateway started.
#[derive(serde::Serialize, serde::Deserialize)]
struct PossessionBinding {
    flow: String,
    client_request_id: String,
}

fn possession_key(keys: &KeyHasher, correlation_id: &str) -> String {
    format!("prove:{}", keys.hash(correlation_id))
}

/// Everything needed to judge sends, per route.
pub struct Judge {
    sms: RouteRuntime,
    email: RouteRuntime,
    global_monitor: bool,
    destination: DestinationPolicy,
    velocity: VelocityRules,
    store: Arc<dyn Store>,
    keys: KeyHasher,
    pow: Pow,
    proof_header: http::HeaderName,
    metrics: Arc<Metrics>,
}

impl Judge {
    /// Build the routes' providers. Must run inside a tokio runtime (HUMAN starts its
    /// activity sender).
    pub fn build(
        settings: &Settings,
        store: Arc<dyn Store>,
        keys: KeyHasher,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BuildError> {
        let uses_prove = [&settings.routes.sms, &settings.routes.email]
            .iter()
            .any(|r| r.provider == ProviderChoice::Prove);
        let prove = if uses_prove {
            Some(Arc::new(risk::ProveProvider::new(
                &settings.providers.prove,
            )?))
        } else {
            None
        };
        let mut built: Vec<(ProviderChoice, Arc<dyn RiskProvider>)> = Vec::new();
        if let Some(p) = &prove {
            built.push((ProviderChoice::Prove, p.clone()));
        }
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
                        open_for: settings.providers.circuit.open_for,
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
                prove: (settings.routes.sms.provider == ProviderChoice::Prove)
                    .then(|| prove.clone())
                    .flatten(),
                route: settings.routes.sms.clone(),
            },
            email: RouteRuntime {
                name: "email",
                guard: guard(email_provider, &settings.routes.email),
                prove: (settings.routes.email.provider == ProviderChoice::Prove)
                    .then(|| prove.clone())
                    .flatten(),
                route: settings.routes.email.clone(),
            },
            global_monitor: settings.policy.monitor,
            destination: settings.destination.clone(),
            velocity: settings.velocity.clone(),
            store,
            keys,
            pow: settings.stepup.pow.clone(),
            proof_header: settings.stepup.header.clone(),
            metrics,
        })
    }

    fn route(&self, channel: Channel) -> &RouteRuntime {
        match channel {
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
        }
    }

    /// Judge one send. Velocity slots taken for it are kept only when the decision lets it
    /// through: counters move only for what is actually forwarded.
    pub async fn judge(&self, subject: &Subject<'_>) -> Judgement {
        let send = subject.send;
        let route = self.route(send.channel);
        let mut local = Vec::new();

        // Destination: only where the request names the number (registration).
        let mut phone = None;
        if let (Channel::Sms, Target::Phone(target)) = (send.channel, &send.target) {
            let verdict = self.destination.check(target);
            // What the policy would do differs from what it does only under monitor entries.
            let monitored = verdict.would != verdict.action;
            for reason in &verdict.reasons {
                let action = match verdict.would {
                    DestinationAction::Deny => LocalAction::Deny,
                    DestinationAction::StepUp => LocalAction::StepUp,
                    DestinationAction::Allow => continue,
                };
                local.push(LocalVerdict {
                    action,
                    reason: reason.clone(),
                    monitor: monitored,
                });
            }
            phone = verdict.phone;
        }
        let destination_denies = local
            .iter()
            .any(|v| v.action == LocalAction::Deny && !v.monitor);

        // Velocity: reservations under a fresh id (client-chosen ids could collide on
        // purpose and count as one).
        let reservation_id = uuid::Uuid::new_v4().to_string();
        let velocity = if destination_denies {
            VelocityOutcome::default()
        } else {
            let vs = VelocitySubject {
                channel: send.channel,
                client_ip: subject.client_ip,
                phone_e164: phone.as_ref().map(|p| p.e164.as_str()),
                country: phone.as_ref().and_then(|p| p.region.as_deref()),
                method_id: send.method_id.as_deref(),
                user: subject.user,
                flow: subject.flow.as_str(),
                client_id: subject.client_id,
            };
            self.velocity
                .check(self.store.as_ref(), &self.keys, &vs, &reservation_id)
                .await
        };
        for hit in &velocity.hits {
            let action = match hit.action {
                VelocityAction::Deny => LocalAction::Deny,
                VelocityAction::StepUp => LocalAction::StepUp,
                VelocityAction::Throttle => LocalAction::Throttle {
                    retry_after: hit.retry_after,
                },
            };
            local.push(LocalVerdict {
                action,
                reason: hit.reason(),
                monitor: hit.monitor,
            });
        }
        if velocity.errors > 0 {
            // Counting failed even on the fallback: the route's fail mode decides.
            let action = match route.route.fail_mode {
                FailMode::Open => None,
                FailMode::Closed => Some(LocalAction::Deny),
                FailMode::StepUp => Some(LocalAction::StepUp),
            };
            if let Some(action) = action {
                local.push(LocalVerdict {
                    action,
                    reason: "velocity:store_error".into(),
                    monitor: false,
                });
            }
        }
        let locally_denied = local
            .iter()
            .any(|v| v.action == LocalAction::Deny && !v.monitor);

        // The provider is not asked about a send the local rules already deny.
        let mut provider_challenge = None;
        let mut provider_name = None;
        let mut provider_latency = None;
        let mut provider_verdict = String::new();
        let mut proof_note = None;
        let retried = match (&route.prove, subject.headers.get(PROVE_CORRELATION_HEADER)) {
            (Some(prove), Some(cid)) if !locally_denied => {
                let cid = cid.to_str().unwrap_or_default();
                match self.possession_retry(prove, cid, subject.flow).await {
                    Ok(input) => {
                        provider_name = Some("prove");
                        Some(input)
                    }
                    Err(why) => {
                        proof_note = Some(why);
                        None
                    }
                }
            }
            _ => None,
        };
        let provider = match (&route.guard, retried) {
            (_, Some(input)) => input,
            (Some(guard), None) if !locally_denied => {
                let eval = guard
                    .evaluate(&risk_request(subject, guard, phone.as_ref()))
                    .await;
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
                        if let Some(session) = &verdict.possession {
                            self.bind_possession(session, subject.flow).await;
                        }
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
            (_, None) => ProviderInput::NotAsked,
        };

        let target = match (&phone, &send.target) {
            (Some(p), _) => p.e164.clone(),
            (None, Target::Phone(t) | Target::Email(t)) => t.clone(),
            (None, Target::Account) => send.method_id.clone().unwrap_or_else(|| "account".into()),
        };
        let target_hash = self.pow.target_hash(&target);
        let binding = Binding {
            flow: subject.flow.as_str(),
            target_hash: &target_hash,
        };
        let mut inputs = Inputs {
            local,
            provider,
            proof: proof_note.map_or(ProofInput::None, ProofInput::Refused),
            monitor: self.global_monitor || route.route.monitor,
        };
        let mut decision = policy::decide(&inputs);
        // A proof is looked at (and spent) only when our own step-up is what stands
        // between the request and Entra.
        if decision.computed == Outcome::StepUp(StepUpBy::Builtin) {
            if let Some(payload) = subject
                .headers
                .get(&self.proof_header)
                .and_then(|v| v.to_str().ok())
            {
                inputs.proof = match self
                    .pow
                    .verify(payload, &binding, self.store.as_ref())
                    .await
                {
                    Ok(()) => ProofInput::Valid,
                    Err(e) => ProofInput::Refused(e.as_str()),
                };
                decision = policy::decide(&inputs);
            }
        }
        let pow_challenge = (decision.enforced == Outcome::StepUp(StepUpBy::Builtin))
            .then(|| self.pow.challenge(&binding));
        let held = if decision.enforced != Outcome::Allow {
            self.velocity
                .release(self.store.as_ref(), &velocity, &reservation_id)
                .await;
            None
        } else {
            (!velocity.reservations.is_empty()).then_some(HeldSlots {
                outcome: velocity,
                reservation_id,
            })
        };
        self.metrics.decision(route.name, &decision);
        Judgement {
            decision,
            route: route.name,
            provider_challenge,
            provider: provider_name,
            provider_verdict,
            provider_latency,
            pow_challenge,
            proof_header: self.proof_header.clone(),
            held,
            phone: phone.map(|p| AuditPhone {
                masked: p.masked(),
                e164: p.e164,
                region: p.region,
            }),
        }
    }
}

impl Judge {
    /// Give back the slots of a send Entra answered without sending a code (an error, a
    /// password prompt, a redirect): only codes that went out count against a limit.
    pub async fn give_back(&self, held: &HeldSlots) {
        self.velocity
            .release(self.store.as_ref(), &held.outcome, &held.reservation_id)
            .await;
    }

    /// Remember which flow a Prove possession check belongs to, so only that flow's retry
    /// can use it.
    async fn bind_possession(&self, session: &risk::PossessionSession, flow: &FlowId) {
        let binding = PossessionBinding {
            flow: flow.as_str().to_owned(),
            client_request_id: session.client_request_id.clone(),
        };
        if let Ok(value) = serde_json::to_vec(&binding) {
            let key = possession_key(&self.keys, &session.correlation_id);
            if let Err(e) = self.store.put(&key, &value, POSSESSION_TTL).await {
                tracing::warn!(error = %e, "possession check not recorded");
            }
        }
    }

    /// A retry after a Prove possession check: bound to this flow, used once, and passed
    /// only if Prove says so now. `Err` names why the retry's proof does not count.
    async fn possession_retry(
        &self,
        prove: &risk::ProveProvider,
        correlation_id: &str,
        flow: &FlowId,
    ) -> Result<ProviderInput, &'static str> {
        let key = possession_key(&self.keys, correlation_id);
        let stored = self
            .store
            .get(&key)
            .await
            .map_err(|_| "store_unavailable")?
            .ok_or("prove_unknown")?;
        let binding: PossessionBinding =
            serde_json::from_slice(&stored).map_err(|_| "prove_unknown")?;
        if binding.flow != flow.as_str() {
            return Err("prove_wrong_flow");
        }
        if !self
            .store
            .take_once(&format!("{key}:used"), POSSESSION_TTL)
            .await
            .map_err(|_| "store_unavailable")?
        {
            return Err("replayed");
        }
        let started = std::time::Instant::now();
        let status = prove
            .possession_status(correlation_id, &binding.client_request_id)
            .await;
        let outcome = match &status {
            Ok(_) => "ok",
            Err(e) => error_label(e),
        };
        self.metrics
            .provider_call("prove", outcome, started.elapsed());
        Ok(match status {
            Ok(status) => {
                let verdict = prove.verdict(&status);
                let mut reasons = verdict.reasons;
                reasons.push("prove:possession_checked".into());
                ProviderInput::Verdict {
                    action: verdict.action,
                    reasons,
                }
            }
            Err(e) => ProviderInput::Failed {
                error: error_label(&e),
                fail_mode: FailMode::Closed,
            },
        })
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

fn risk_request(s: &Subject<'_>, guard: &Guarded, phone: Option<&Phone>) -> RiskRequest {
    let send = s.send;
    let mut req = RiskRequest::new(send.endpoint.as_str(), send.channel, s.client_ip);
    // The normalised number when it parsed, else what the client wrote.
    req.phone = match (phone, &send.target) {
        (Some(p), _) => Some(p.e164.clone()),
        (None, Target::Phone(p)) => Some(p.clone()),
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
