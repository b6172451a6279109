//! Judging one OTP send, in phases: [`Judge::defend`] (destination policy and velocity),
//! [`Judge::assess`] (the route's risk provider under its time budget, or the check of a
//! Prove possession retry), [`Judge::prove`] (the decision, and our proof of work where it
//! stands between the request and Entra) and [`Judge::settle`] (velocity slots given back
//! or held, metrics). Built once from settings; cheap per request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Version};

use crate::config::{ProviderChoice, Route, Settings};
use crate::defense::adaptive::{self, AdaptiveAction, AdaptiveOutcome};
use crate::defense::lists::{self, Lists, Matched};
use crate::defense::velocity::Subject as VelocitySubject;
use crate::defense::{
    Adaptive, DestinationAction, DestinationPolicy, Phone, VelocityAction, VelocityOutcome,
    VelocityRules,
};
use crate::entra::learn::{Channel, FlowId};
use crate::entra::send::{OtpSend, Target};
use crate::metrics::Metrics;
use crate::policy::{
    self, Decision, Inputs, LocalAction, LocalVerdict, Outcome, ProofInput, ProviderInput, Reason,
    StepUpBy,
};
use crate::risk::{
    self, BuildError, FailMode, GuardConfig, Guarded, ProviderChallenge, RiskAction, RiskProvider,
    RiskRequest,
};
use crate::stepup::{AltchaChallenge, Binding, Pow, RISKY_LEVEL};
use crate::store::{KeyHasher, Store};

mod possession;
#[cfg(test)]
mod tests;

pub(crate) use possession::PROVE_CORRELATION_HEADER;

/// The send being judged and what is known of its request.
pub(crate) struct Subject<'a> {
    pub send: &'a OtpSend,
    pub flow: &'a FlowId,
    pub client_ip: IpAddr,
    pub client_id: Option<&'a str>,
    /// Keyed hash of the flow's username, when known.
    pub user: Option<&'a str>,
    /// The request's headers: the proofs a retry carries, and what providers read.
    pub headers: &'a HeaderMap,
    pub method: &'a Method,
    pub version: Version,
    /// The URL the client asked for, as providers want it.
    pub url: String,
    /// The `traceparent` naming the provider call's span, when the request is traced.
    pub traceparent: Option<http::HeaderValue>,
}

/// The outcome of judging: the decision and what answering and recording it needs.
pub struct Verdict {
    pub decision: Decision,
    pub route: &'static str,
    /// The provider's own challenge or block page, when it asked for one.
    pub provider_challenge: Option<ProviderChallenge>,
    /// The provider asked, when one was.
    pub provider: Option<&'static str>,
    pub provider_answer: ProviderAnswer,
    pub provider_latency: Option<Duration>,
    /// When the provider call started, when one was made.
    pub provider_started: Option<std::time::SystemTime>,
    /// The destination phone, parsed, when the request names one.
    pub phone: Option<Phone>,
    /// Our proof-of-work challenge, when the decision is our step-up.
    pub pow_challenge: Option<AltchaChallenge>,
    /// The velocity slots an allowed send holds until Entra's answer says whether it sent
    /// a code (see [`Judge::give_back`]).
    pub held: Option<HeldSlots>,
    /// The keys the send counts under for conversion once Entra sends its code
    /// ([`Judge::sent`]).
    pub conversion: adaptive::Keys,
    /// Keyed hash of the flow's username, when known (for "why").
    pub user: Option<String>,
}

/// What the route's provider said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderAnswer {
    NotAsked,
    Said(RiskAction),
    /// It failed (`timeout`, `unavailable`, …: [`risk::RiskError::kind`]).
    Failed(&'static str),
}

impl ProviderAnswer {
    /// `allow`, `step_up`, `deny`, the error label, or empty when not asked.
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::NotAsked => "",
            Self::Said(RiskAction::Allow) => "allow",
            Self::Said(RiskAction::StepUp) => "step_up",
            Self::Said(RiskAction::Deny) => "deny",
            Self::Failed(kind) => kind,
        }
    }
}

/// Velocity slots reserved for a send that was let through.
pub struct HeldSlots {
    outcome: VelocityOutcome,
    reservation_id: String,
}

/// What the local defenses found ([`Judge::defend`]).
struct Defense {
    local: Vec<LocalVerdict>,
    phone: Option<Phone>,
    conversion: adaptive::Keys,
    velocity: VelocityOutcome,
    /// The id the velocity slots were reserved under: fresh per request, since
    /// client-chosen ids could collide on purpose and count as one.
    reservation_id: String,
    /// The safe and block list entries the send matched.
    listed: Matched,
}

impl Defense {
    /// A safe entry: the velocity and adaptive rules still count (their figures stay
    /// true) and say what they would do, but refuse nothing.
    fn spare_safe(&mut self) {
        if self.listed.safe.is_none() {
            return;
        }
        for v in &mut self.local {
            if matches!(
                v.reason,
                Reason::Velocity { .. } | Reason::VelocityStoreError | Reason::Adaptive { .. }
            ) {
                v.monitor = true;
            }
        }
    }

    /// An enforced local deny: asking the provider would be pointless.
    fn denies(&self) -> bool {
        self.local
            .iter()
            .any(|v| v.action == LocalAction::Deny && !v.monitor)
    }
}

/// What the provider, or a Prove possession retry, said ([`Judge::assess`]).
struct Assessment {
    input: ProviderInput,
    challenge: Option<ProviderChallenge>,
    provider: Option<&'static str>,
    answer: ProviderAnswer,
    latency: Option<Duration>,
    /// When the provider call started.
    started: Option<std::time::SystemTime>,
    /// Why a Prove retry's proof does not count, when it does not.
    refused_proof: Option<&'static str>,
}

impl Assessment {
    fn not_asked() -> Self {
        Self {
            input: ProviderInput::NotAsked,
            challenge: None,
            provider: None,
            answer: ProviderAnswer::NotAsked,
            latency: None,
            started: None,
            refused_proof: None,
        }
    }
}

struct RouteRuntime {
    name: &'static str,
    guard: Option<Guarded>,
    /// The route's provider when it is Prove, for its possession step-up.
    prove: Option<Arc<risk::ProveProvider>>,
    route: Route,
}

/// Everything needed to judge sends, per route.
pub(crate) struct Judge {
    sms: RouteRuntime,
    email: RouteRuntime,
    global_monitor: bool,
    destination: DestinationPolicy,
    velocity: VelocityRules,
    adaptive: Adaptive,
    lists: Lists,
    store: Arc<dyn Store>,
    keys: KeyHasher,
    pow: Pow,
    proof_header: http::HeaderName,
    metrics: Arc<Metrics>,
}

impl Judge {
    /// Build the routes' providers. Must run inside a tokio runtime (HUMAN starts its
    /// activity sender).
    pub(crate) fn build(
        settings: &Settings,
        store: Arc<dyn Store>,
        keys: KeyHasher,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BuildError> {
        // Each provider a route names is built once and shared by both routes; each route
        // guards it with its own budget and circuit.
        let routes = [&settings.routes.sms, &settings.routes.email];
        let uses = |choice: ProviderChoice| routes.iter().any(|r| r.provider == choice);
        let providers = &settings.providers;
        let human = uses(ProviderChoice::Human)
            .then(|| risk::HumanProvider::new(&providers.human))
            .transpose()?
            .map(Arc::new);
        let prove = uses(ProviderChoice::Prove)
            .then(|| risk::ProveProvider::new(&providers.prove))
            .transpose()?
            .map(Arc::new);
        let mock = uses(ProviderChoice::Mock)
            .then(|| risk::MockProvider::new(&providers.mock))
            .transpose()?
            .map(Arc::new);
        let provider = |choice: ProviderChoice| -> Option<Arc<dyn RiskProvider>> {
            match choice {
                ProviderChoice::None => None,
                ProviderChoice::Human => Some(human.clone()? as Arc<dyn RiskProvider>),
                ProviderChoice::Prove => Some(prove.clone()? as Arc<dyn RiskProvider>),
                ProviderChoice::Mock => Some(mock.clone()? as Arc<dyn RiskProvider>),
            }
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
        let sms_provider = provider(settings.routes.sms.provider);
        let email_provider = provider(settings.routes.email.provider);
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
            adaptive: settings.adaptive.clone(),
            lists: Lists::new(&settings.lists, &keys),
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
    /// through (and then until Entra's answer, see [`Judge::give_back`]).
    pub(crate) async fn judge(&self, s: &Subject<'_>) -> Verdict {
        let route = self.route(s.send.channel);
        let defense = self.defend(s, route).await;
        let blocked = defense.listed.block;
        let assessment = if defense.denies() || blocked.is_some() {
            Assessment::not_asked()
        } else {
            self.assess(s, route, defense.phone.as_ref()).await
        };
        let inputs = Inputs {
            local: defense.local,
            provider: assessment.input,
            proof: assessment
                .refused_proof
                .map_or(ProofInput::None, ProofInput::Refused),
            monitor: self.global_monitor || route.route.monitor,
        };
        let phone = defense.phone.clone();
        let (decision, pow_challenge) = match blocked {
            // Denied whatever monitor mode says (an operator's block is no rule being
            // tried out), with nothing counted and no provider asked.
            Some(kind) => (
                Decision {
                    enforced: Outcome::Deny,
                    computed: Outcome::Deny,
                    reasons: vec![listed(lists::ListName::Block, kind)],
                },
                None,
            ),
            None => {
                let (mut decision, challenge) = self.prove(s, inputs, phone.as_ref()).await;
                if let Some(kind) = defense.listed.safe {
                    decision
                        .reasons
                        .insert(0, listed(lists::ListName::Safe, kind));
                }
                (decision, challenge)
            }
        };
        let held = self
            .settle(route, &decision, defense.velocity, defense.reservation_id)
            .await;
        Verdict {
            decision,
            route: route.name,
            provider_challenge: assessment.challenge,
            provider: assessment.provider,
            provider_answer: assessment.answer,
            provider_latency: assessment.latency,
            provider_started: assessment.started,
            phone,
            pow_challenge,
            held,
            conversion: defense.conversion,
            user: s.user.map(str::to_owned),
        }
    }

    /// The local defenses: the destination policy where the request names the number
    /// (registration), then a velocity slot in every window that applies (skipped when the
    /// destination already denies). A store that cannot count is the route's fail mode.
    async fn defend(&self, s: &Subject<'_>, route: &RouteRuntime) -> Defense {
        let mut local = Vec::new();
        let mut phone = None;
        if let (Channel::Sms, Target::Phone(target)) = (s.send.channel, &s.send.target) {
            let verdict = self.destination.check(target);
            // What the policy would do differs from what it does only under monitor entries.
            let monitored = verdict.would != verdict.action;
            let action = match verdict.would {
                DestinationAction::Deny => Some(LocalAction::Deny),
                DestinationAction::StepUp => Some(LocalAction::StepUp),
                DestinationAction::Allow => None,
            };
            if let Some(action) = action {
                local.extend(verdict.reasons.into_iter().map(|reason| LocalVerdict {
                    action,
                    reason,
                    monitor: monitored,
                }));
            }
            phone = verdict.phone;
        }
        let mut defense = Defense {
            local,
            phone,
            conversion: adaptive::Keys::default(),
            velocity: VelocityOutcome::default(),
            reservation_id: uuid::Uuid::new_v4().to_string(),
            listed: Matched::default(),
        };
        // The lists are asked after the number is parsed (a number that does not parse is
        // refused, listed or not) and before anything is counted. The adaptive figures are
        // only read, so they are read in the same round trip (a remote store pipelines
        // the two); a listed block discards them. A destination that denies needs neither
        // figure.
        let denied = defense.denies();
        let phone = defense.phone.as_ref();
        let probe = lists::Probe {
            e164: phone.map(|p| p.e164.as_str()),
            user: s.user,
            client_ip: s.client_ip,
            client_id: s.client_id,
        };
        let listed = self.lists.check(self.store.as_ref(), &self.keys, &probe);
        let figures = async {
            match denied {
                true => None,
                false => Some(self.conversion(s, phone).await),
            }
        };
        let (listed, figures) = futures_util::join!(listed, figures);
        defense.listed = listed;
        let Some((keys, outcome)) = figures.filter(|_| listed.block.is_none()) else {
            return defense;
        };
        let monitor = self.global_monitor || route.route.monitor;
        self.adapt(&mut defense, keys, outcome, monitor);
        defense.spare_safe();
        if defense.denies() {
            return defense;
        }
        let counted = VelocitySubject {
            channel: s.send.channel,
            client_ip: s.client_ip,
            phone_e164: defense.phone.as_ref().map(|p| p.e164.as_str()),
            country: defense.phone.as_ref().and_then(|p| p.region.as_deref()),
            method_id: s.send.method_id.as_deref(),
            user: s.user,
            flow: s.flow.as_str(),
            client_id: s.client_id,
        };
        defense.velocity = self
            .velocity
            .check(
                self.store.as_ref(),
                &self.keys,
                &counted,
                &defense.reservation_id,
            )
            .await;
        for hit in &defense.velocity.hits {
            let action = match hit.action {
                VelocityAction::Deny => LocalAction::Deny,
                VelocityAction::StepUp => LocalAction::StepUp,
                VelocityAction::Throttle => LocalAction::Throttle {
                    retry_after: hit.retry_after,
                },
            };
            defense.local.push(LocalVerdict {
                action,
                reason: hit.reason(),
                monitor: hit.monitor,
            });
        }
        let store_failed = match route.route.fail_mode {
            _ if defense.velocity.errors == 0 => None,
            FailMode::Open => None,
            FailMode::Closed => Some(LocalAction::Deny),
            FailMode::StepUp => Some(LocalAction::StepUp),
        };
        if let Some(action) = store_failed {
            defense.local.push(LocalVerdict {
                action,
                reason: Reason::VelocityStoreError,
                monitor: false,
            });
        }
        defense.spare_safe();
        defense
    }

    /// The send's conversion keys and what the adaptive rules find in their figures: is
    /// the send's destination, range, network or app one whose codes are not entered? Only
    /// reads the store.
    async fn conversion(
        &self,
        s: &Subject<'_>,
        phone: Option<&Phone>,
    ) -> (adaptive::Keys, AdaptiveOutcome) {
        let subject = adaptive::Subject {
            channel: s.send.channel,
            client_ip: s.client_ip,
            e164: phone.map(|p| p.e164.as_str()),
            calling_code: phone.map(|p| p.calling_code),
            label: s.send.label.as_deref(),
            client_id: s.client_id,
            user: s.user,
        };
        let mut keys = self.adaptive.keys(&self.keys, &subject);
        keys.set_region(phone.and_then(|p| p.region.as_deref()));
        let outcome = self.adaptive.check(self.store.as_ref(), &mut keys).await;
        (keys, outcome)
    }

    /// Apply what the adaptive rules found ([`Judge::conversion`]) to the defense. A store
    /// that cannot answer judges nothing (the velocity rules and their fail mode still
    /// count). `monitor`: the route only reports.
    fn adapt(
        &self,
        defense: &mut Defense,
        keys: adaptive::Keys,
        outcome: AdaptiveOutcome,
        monitor: bool,
    ) {
        defense.conversion = keys;
        if outcome.errors > 0 {
            tracing::debug!(errors = outcome.errors, "adaptive rules not judged");
        }
        for hit in outcome.hits {
            // A safe send is spared (`spare_safe`): nothing acted on its key.
            let spared = defense.listed.safe.is_some();
            if let (false, false, false, Some(key)) = (hit.monitor, monitor, spared, &hit.key) {
                if self
                    .metrics
                    .adaptive_acted(&hit.rule, hit.action.as_str(), key)
                {
                    self.tell_active(&hit.rule, hit.action.as_str(), key);
                }
            }
            let (action, reported) = (hit.action, hit.monitor);
            defense.local.push(LocalVerdict {
                action: match action {
                    AdaptiveAction::Deny => LocalAction::Deny,
                    AdaptiveAction::StepUp => LocalAction::StepUp,
                },
                reason: hit.into_reason(),
                monitor: reported,
            });
        }
    }

    /// Note in the store that an enforced adaptive rule acted on `key`, for the admin
    /// API's listing of active blocks: at most every five minutes per key and replica,
    /// off the request path.
    fn tell_active(&self, rule: &str, action: &str, key: &str) {
        let line = serde_json::json!({
            "rule": rule,
            "key": key,
            "action": action,
            "at": lists::unix_now(),
        })
        .to_string()
            + "\n";
        let store = self.store.clone();
        let record = adaptive::active_key(lists::unix_now() / 3600);
        tokio::spawn(async move {
            let keep = Duration::from_secs(3 * 3600);
            let _ = store
                .append(&record, line.as_bytes(), keep, ACTIVE_RECORD_BYTES)
                .await;
        });
    }

    /// Entra sent the code of a send judged with `keys`: count it for conversion, and
    /// note the slots of `unverified_only` velocity rules it holds, to give back if the
    /// code is entered.
    pub(crate) async fn sent(
        &self,
        flow: &FlowId,
        keys: &adaptive::Keys,
        held: Option<&HeldSlots>,
    ) {
        let store = self.store.as_ref();
        let refund = async {
            let Some(held) = held.filter(|h| !h.outcome.refundable.is_empty()) else {
                return;
            };
            let record = refund_key(flow);
            let mut text = String::new();
            for key in &held.outcome.refundable {
                text.push_str(&format!("{} {key}\n", held.reservation_id));
            }
            // Appended, never read here; bounded like the flow's send record.
            let _ = store
                .append(
                    &record,
                    text.as_bytes(),
                    self.adaptive.verify_within(),
                    MAX_REFUND_RECORD,
                )
                .await;
        };
        futures_util::join!(
            self.adaptive.record_send(store, flow.as_str(), keys),
            refund
        );
    }

    /// Entra accepted a code in `flow`: count the verification of its send, and give back
    /// the slots its sends hold in `unverified_only` velocity windows. The ISO region of
    /// the number the flow registered, when it named one and was counted.
    pub(crate) async fn verified(&self, flow: &FlowId) -> Option<String> {
        let store = self.store.as_ref();
        let refund = async {
            let record = refund_key(flow);
            let Ok(Some(bytes)) = store.get(&record).await else {
                return;
            };
            // Emptied first, so a second verification gives nothing back twice.
            let _ = store.put(&record, b"", self.adaptive.verify_within()).await;
            for line in String::from_utf8_lossy(&bytes).lines() {
                if let Some((id, key)) = line.split_once(' ') {
                    let _ = store.release(key, id).await;
                }
            }
        };
        let (region, ()) =
            futures_util::join!(self.adaptive.record_verified(store, flow.as_str()), refund);
        region
    }

    /// The route's risk provider, within its budget; or, when the request retries after a
    /// Prove possession check this gateway started, that check's outcome instead.
    async fn assess(
        &self,
        s: &Subject<'_>,
        route: &RouteRuntime,
        phone: Option<&Phone>,
    ) -> Assessment {
        let mut assessment = Assessment::not_asked();
        if let (Some(prove), Some(cid)) = (&route.prove, s.headers.get(PROVE_CORRELATION_HEADER)) {
            let cid = cid.to_str().unwrap_or_default();
            match self.possession_retry(prove, cid, s.flow).await {
                Ok(input) => {
                    assessment.provider = Some("prove");
                    assessment.input = input;
                    return assessment;
                }
                Err(why) => assessment.refused_proof = Some(why),
            }
        }
        let Some(guard) = &route.guard else {
            return assessment;
        };
        assessment.started = Some(std::time::SystemTime::now());
        let eval = guard.evaluate(&risk_request(s, guard, phone)).await;
        let outcome = eval.result.as_ref().map_or_else(|e| e.kind(), |_| "ok");
        self.metrics
            .provider_call(eval.provider, outcome, eval.latency);
        assessment.provider = Some(eval.provider);
        assessment.latency = Some(eval.latency);
        match eval.result {
            Ok(verdict) => {
                if let Some(session) = &verdict.possession {
                    self.bind_possession(session, s.flow).await;
                }
                assessment.answer = ProviderAnswer::Said(verdict.action);
                assessment.challenge = verdict.challenge;
                assessment.input = ProviderInput::Verdict {
                    action: verdict.action,
                    reasons: verdict.reasons,
                };
            }
            Err(e) => {
                assessment.answer = ProviderAnswer::Failed(e.kind());
                assessment.input = ProviderInput::Failed {
                    error: e.kind(),
                    fail_mode: route.route.fail_mode,
                };
            }
        }
        assessment
    }

    /// The decision ([`policy::decide`]), with our proof of work looked at (and spent) only
    /// when our own step-up is what stands between the request and Entra; a fresh
    /// challenge when it still does.
    async fn prove(
        &self,
        s: &Subject<'_>,
        mut inputs: Inputs,
        phone: Option<&Phone>,
    ) -> (Decision, Option<AltchaChallenge>) {
        let mut decision = policy::decide(&inputs);
        let builtin = Outcome::StepUp(StepUpBy::Builtin);
        if decision.computed != builtin && decision.enforced != builtin {
            return (decision, None);
        }
        let target = match (phone, &s.send.target) {
            (Some(p), _) => p.e164.clone(),
            (None, Target::Phone(t) | Target::Email(t)) => t.clone(),
            (None, Target::Account) => s.send.method_id.clone().unwrap_or_else(|| "account".into()),
        };
        let target_hash = self.pow.target_hash(&target);
        // A step-up an adaptive rule asks for (a key whose codes are not entered) costs
        // more work: people solve it once, a bot on every send.
        let risky = inputs.local.iter().any(|v| {
            !v.monitor
                && v.action == LocalAction::StepUp
                && matches!(v.reason, Reason::Adaptive { .. })
        });
        let binding = Binding {
            flow: s.flow.as_str(),
            target_hash: &target_hash,
            level: if risky { RISKY_LEVEL } else { 1 },
        };
        let payload = s
            .headers
            .get(&self.proof_header)
            .and_then(|v| v.to_str().ok())
            .filter(|_| decision.computed == builtin);
        if let Some(payload) = payload {
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
        let challenge = (decision.enforced == builtin).then(|| self.pow.challenge(&binding));
        (decision, challenge)
    }

    /// Velocity slots: given back unless the send goes to Entra, held otherwise (Entra's
    /// answer settles them, [`Judge::give_back`]); the decision counted.
    async fn settle(
        &self,
        route: &RouteRuntime,
        decision: &Decision,
        velocity: VelocityOutcome,
        reservation_id: String,
    ) -> Option<HeldSlots> {
        self.metrics.decision(route.name, decision);
        if decision.enforced != Outcome::Allow {
            self.velocity
                .release(self.store.as_ref(), &velocity, &reservation_id)
                .await;
            return None;
        }
        (!velocity.reservations.is_empty()).then_some(HeldSlots {
            outcome: velocity,
            reservation_id,
        })
    }

    /// Give back the slots of a send Entra answered without sending a code (an error, a
    /// password prompt, a redirect): only codes that went out count against a limit.
    pub(crate) async fn give_back(&self, held: &HeldSlots) {
        self.velocity
            .release(self.store.as_ref(), &held.outcome, &held.reservation_id)
            .await;
    }
}

fn listed(list: lists::ListName, kind: lists::Kind) -> Reason {
    Reason::Listed {
        list: list.as_str(),
        kind: kind.as_str(),
    }
}

/// The bound of one hour's record of keys adaptive rules acted on: about a thousand keys.
const ACTIVE_RECORD_BYTES: usize = 128 * 1024;

/// The longest a flow's record of refundable slots grows: a line of about a hundred bytes
/// per slot, for more sends than any per-flow velocity rule lets through.
const MAX_REFUND_RECORD: usize = 16 * 1024;

/// Where a flow's refundable velocity slots are noted. A flow id is a random number the
/// gateway drew: it needs no hash.
fn refund_key(flow: &FlowId) -> String {
    format!("vel:refund:{}", flow.as_str())
}

/// What the provider is told about the send.
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
    req.traceparent = s.traceparent.clone();
    req
}
