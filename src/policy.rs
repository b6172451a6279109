//! The decision over an OTP send: a pure function of the local defenses' verdicts, the risk
//! provider's verdict or error (resolved by the route's fail mode), any step-up proof, and
//! the monitor flags. Deny beats throttle beats step-up beats allow; every decision carries
//! its reasons.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::risk::{FailMode, RiskAction};

mod reason;

pub(crate) use reason::DestinationRule;
pub use reason::Reason;

/// `[policy]`: global decision settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Monitor mode for everything: decisions are computed, counted and audited as
    /// "would deny/step up", and every request is forwarded.
    pub monitor: bool,
}

/// What a local defense (destination policy, a velocity rule) says about a send.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalVerdict {
    pub action: LocalAction,
    /// Why, e.g. `velocity:sms-per-flow:throttle` or `destination:type:premium_rate:deny`.
    pub reason: Reason,
    /// Monitor-only: counted and audited as "would …", never enforced.
    pub monitor: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LocalAction {
    Deny,
    StepUp,
    Throttle { retry_after: Duration },
}

/// The risk provider's part.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderInput {
    /// No provider on this route, or not asked (a local deny made asking pointless).
    NotAsked,
    /// The provider answered.
    Verdict {
        action: RiskAction,
        reasons: Vec<String>,
    },
    /// The provider failed (`timeout`, `unavailable`, `bad_response`, `rate_limited`,
    /// `circuit_open`); the route's fail mode decides.
    Failed {
        error: &'static str,
        fail_mode: FailMode,
    },
}

/// A step-up proof sent with the request (the built-in proof of work).
#[derive(Debug, Clone, PartialEq)]
pub enum ProofInput {
    None,
    /// Verified, unused, bound to this flow and target.
    Valid,
    /// Present but refused (`replayed`, `expired`, `forged`, …).
    Refused(&'static str),
}

/// Everything `decide` looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    pub local: Vec<LocalVerdict>,
    pub provider: ProviderInput,
    pub proof: ProofInput,
    /// Global or route monitor mode: compute and record, then forward.
    pub monitor: bool,
}

/// The outcome of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    /// Built-in step-up (proof of work), or the provider's own challenge.
    StepUp(StepUpBy),
    Throttle {
        retry_after: Duration,
    },
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepUpBy {
    /// Our proof of work: a local rule or the `step_up` fail mode asked for it.
    Builtin,
    /// The provider's own challenge (HUMAN's block page, Prove possession).
    Provider,
}

impl Outcome {
    fn rank(&self) -> u8 {
        match self {
            Outcome::Allow => 0,
            Outcome::StepUp(StepUpBy::Builtin) => 1,
            Outcome::StepUp(StepUpBy::Provider) => 2,
            Outcome::Throttle { .. } => 3,
            Outcome::Deny => 4,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::StepUp(_) => "step_up",
            Outcome::Throttle { .. } => "throttle",
            Outcome::Deny => "deny",
        }
    }
}

/// The decision: what is enforced, what was computed, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What happens to the request.
    pub enforced: Outcome,
    /// What the rules computed, before monitor mode turned it into `Allow`.
    pub computed: Outcome,
    /// Every reason that contributed, including monitor-only ones (`would:`).
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// `allow`, `step_up`, `throttle`, `deny`, or `would_step_up` / `would_throttle` /
    /// `would_deny` when monitor mode forwarded what the rules would have stopped.
    pub(crate) fn label(&self) -> &'static str {
        match (self.enforced, self.computed) {
            (Outcome::Allow, Outcome::StepUp(_)) => "would_step_up",
            (Outcome::Allow, Outcome::Throttle { .. }) => "would_throttle",
            (Outcome::Allow, Outcome::Deny) => "would_deny",
            (enforced, _) => enforced.label(),
        }
    }
}

fn stronger(a: Outcome, b: Outcome) -> Outcome {
    match (a, b) {
        (Outcome::Throttle { retry_after: x }, Outcome::Throttle { retry_after: y }) => {
            Outcome::Throttle {
                retry_after: x.max(y),
            }
        }
        _ if b.rank() > a.rank() => b,
        _ => a,
    }
}

/// Decide. Pure: the same inputs always give the same decision.
pub fn decide(inputs: &Inputs) -> Decision {
    let mut computed = Outcome::Allow;
    let mut reasons = Vec::new();
    let mut monitored_only = Outcome::Allow;

    for v in &inputs.local {
        let outcome = match v.action {
            LocalAction::Deny => Outcome::Deny,
            LocalAction::StepUp => Outcome::StepUp(StepUpBy::Builtin),
            LocalAction::Throttle { retry_after } => Outcome::Throttle { retry_after },
        };
        if v.monitor {
            monitored_only = stronger(monitored_only, outcome);
            reasons.push(Reason::Would(Box::new(v.reason.clone())));
        } else {
            computed = stronger(computed, outcome);
            reasons.push(v.reason.clone());
        }
    }

    match &inputs.provider {
        ProviderInput::NotAsked => {}
        ProviderInput::Verdict { action, reasons: r } => {
            let outcome = match action {
                RiskAction::Allow => Outcome::Allow,
                RiskAction::StepUp => Outcome::StepUp(StepUpBy::Provider),
                RiskAction::Deny => Outcome::Deny,
            };
            computed = stronger(computed, outcome);
            reasons.push(Reason::ProviderAction(outcome));
            reasons.extend(r.iter().cloned().map(Reason::ProviderSaid));
        }
        ProviderInput::Failed { error, fail_mode } => {
            let outcome = match fail_mode {
                FailMode::Open => Outcome::Allow,
                FailMode::Closed => Outcome::Deny,
                FailMode::StepUp => Outcome::StepUp(StepUpBy::Builtin),
            };
            computed = stronger(computed, outcome);
            reasons.push(Reason::ProviderFailed {
                error,
                fail_mode: *fail_mode,
            });
        }
    }

    // A valid proof answers our own step-up only; a provider's challenge is answered by the
    // provider's re-evaluation, and nothing turns a deny or a throttle into an allow.
    match inputs.proof {
        ProofInput::Valid if computed == Outcome::StepUp(StepUpBy::Builtin) => {
            computed = Outcome::Allow;
            reasons.push(Reason::ProofAccepted);
        }
        ProofInput::Valid => reasons.push(Reason::ProofNotNeeded),
        ProofInput::Refused(why) => reasons.push(Reason::ProofRefused(why)),
        ProofInput::None => {}
    }

    if inputs.monitor && computed != Outcome::Allow {
        reasons.push(Reason::WouldBe(computed));
        return Decision {
            enforced: Outcome::Allow,
            computed,
            reasons,
        };
    }
    if computed == Outcome::Allow && monitored_only != Outcome::Allow {
        return Decision {
            enforced: Outcome::Allow,
            computed: monitored_only,
            reasons,
        };
    }
    Decision {
        enforced: computed,
        computed,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(action: LocalAction, rule: &str, monitor: bool) -> LocalVerdict {
        LocalVerdict {
            action,
            reason: Reason::Velocity {
                rule: rule.into(),
                action: "deny",
            },
            monitor,
        }
    }

    fn provider(action: RiskAction) -> ProviderInput {
        ProviderInput::Verdict {
            action,
            reasons: vec!["score:0.1".into()],
        }
    }

    fn failed(mode: FailMode) -> ProviderInput {
        ProviderInput::Failed {
            error: "timeout",
            fail_mode: mode,
        }
    }

    const T5: Duration = Duration::from_secs(5);
    const T9: Duration = Duration::from_secs(9);

    #[test]
    fn decide_table() {
        use LocalAction as L;
        use Outcome::*;
        let builtin = StepUp(StepUpBy::Builtin);
        let by_provider = StepUp(StepUpBy::Provider);
        let cases: Vec<(&str, Inputs, Outcome, &str)> = vec![
            (
                "nothing",
                Inputs {
                    local: vec![],
                    provider: ProviderInput::NotAsked,
                    proof: ProofInput::None,
                    monitor: false,
                },
                Allow,
                "allow",
            ),
            (
                "provider allow",
                Inputs {
                    local: vec![],
                    provider: provider(RiskAction::Allow),
                    proof: ProofInput::None,
                    monitor: false,
                },
                Allow,
                "allow",
            ),
            (
                "provider deny",
                Inputs {
                    local: vec![],
                    provider: provider(RiskAction::Deny),
                    proof: ProofInput::None,
                    monitor: false,
                },
                Deny,
                "deny",
            ),
            (
                "provider step-up",
                Inputs {
                    local: vec![],
                    provider: provider(RiskAction::StepUp),
                    proof: ProofInput::None,
                    monitor: false,
                },
                by_provider,
                "step_up",
            ),
            (
                "local deny beats provider allow",
                Inputs {
                    local: vec![local(L::Deny, "destination:type:premium_rate", false)],
                    provider: provider(RiskAction::Allow),
                    proof: ProofInput::None,
                    monitor: false,
                },
                Deny,
                "deny",
            ),
            (
                "deny beats step-up",
                Inputs {
                    local: vec![
                        local(L::StepUp, "velocity:ip", false),
                        local(L::Deny, "velocity:flow", false),
                    ],
                    provider: ProviderInput::NotAsked,
                    proof: ProofInput::None,
                    monitor: false,
                },
                Deny,
                "deny",
            ),
            (
                "throttle beats step-up",
                Inputs {
                    local: vec![
                        local(L::StepUp, "a", false),
                        local(L::Throttle { retry_after: T5 }, "b", false),
                    ],
                    provider: ProviderInput::NotAsked,
                    proof: ProofInput::None,
                    monitor: false,
                },
                Throttle { retry_after: T5 },
                "throttle",
            ),
            (
                "longest throttle wins",
                Inputs {
                    local: vec![
                        local(L::Throttle { retry_after: T5 }, "a", false),
                        local(L::Throttle { retry_after: T9 }, "b", false),
                    ],
                    provider: ProviderInput::NotAsked,
                    proof: ProofInput::None,
                    monitor: false,
                },
                Throttle { retry_after: T9 },
                "throttle",
            ),
            (
                "deny beats throttle",
                Inputs {
                    local: vec![local(L::Throttle { retry_after: T5 }, "a", false)],
                    provider: provider(RiskAction::Deny),
                    proof: ProofInput::None,
                    monitor: false,
                },
                Deny,
                "deny",
            ),
            (
                "fail open",
                Inputs {
                    local: vec![],
                    provider: failed(FailMode::Open),
                    proof: ProofInput::None,
                    monitor: false,
                },
                Allow,
                "allow",
            ),
            (
                "fail closed",
                Inputs {
                    local: vec![],
                    provider: failed(FailMode::Closed),
                    proof: ProofInput::None,
                    monitor: false,
                },
                Deny,
                "deny",
            ),
            (
                "fail step-up",
                Inputs {
                    local: vec![],
                    provider: failed(FailMode::StepUp),
                    proof: ProofInput::None,
                    monitor: false,
                },
                builtin,
                "step_up",
            ),
            (
                "fail step-up with a proof",
                Inputs {
                    local: vec![],
                    provider: failed(FailMode::StepUp),
                    proof: ProofInput::Valid,
                    monitor: false,
                },
                Allow,
                "allow",
            ),
            (
                "local step-up with a proof",
                Inputs {
                    local: vec![local(L::StepUp, "velocity:ip", false)],
                    provider: provider(RiskAction::Allow),
                    proof: ProofInput::Valid,
                    monitor: false,
                },
                Allow,
                "allow",
            ),
            (
                "a refused proof changes nothing",
                Inputs {
                    local: vec![local(L::StepUp, "velocity:ip", false)],
                    provider: ProviderInput::NotAsked,
                    proof: ProofInput::Refused("replayed"),
                    monitor: false,
                },
                builtin,
                "step_up",
            ),
            (
                "a proof does not lift a deny",
                Inputs {
                    local: vec![local(L::Deny, "d", false)],
                    provider: ProviderInput::NotAsked,
                    proof: ProofInput::Valid,
                    monitor: false,
                },
                Deny,
                "deny",
            ),
            (
                "a proof does not answer the provider's challenge",
                Inputs {
                    local: vec![local(L::StepUp, "s", false)],
                    provider: provider(RiskAction::StepUp),
                    proof: ProofInput::Valid,
                    monitor: false,
                },
                by_provider,
                "step_up",
            ),
            (
                "monitor mode forwards a deny",
                Inputs {
                    local: vec![local(L::Deny, "d", false)],
                    provider: ProviderInput::NotAsked,
                    proof: ProofInput::None,
                    monitor: true,
                },
                Allow,
                "would_deny",
            ),
            (
                "monitor mode forwards a step-up",
                Inputs {
                    local: vec![],
                    provider: provider(RiskAction::StepUp),
                    proof: ProofInput::None,
                    monitor: true,
                },
                Allow,
                "would_step_up",
            ),
            (
                "a monitor-only rule forwards",
                Inputs {
                    local: vec![local(L::Deny, "velocity:x", true)],
                    provider: ProviderInput::NotAsked,
                    proof: ProofInput::None,
                    monitor: false,
                },
                Allow,
                "would_deny",
            ),
            (
                "a monitor-only rule does not hide an enforced one",
                Inputs {
                    local: vec![
                        local(L::Deny, "velocity:x", true),
                        local(L::StepUp, "velocity:y", false),
                    ],
                    provider: ProviderInput::NotAsked,
                    proof: ProofInput::None,
                    monitor: false,
                },
                builtin,
                "step_up",
            ),
        ];
        for (name, inputs, enforced, label) in cases {
            let d = decide(&inputs);
            assert_eq!(d.enforced, enforced, "{name}: {d:?}");
            assert_eq!(d.label(), label, "{name}: {d:?}");
        }
    }

    #[test]
    fn reasons_are_carried() {
        let d = decide(&Inputs {
            local: vec![
                LocalVerdict {
                    action: LocalAction::Deny,
                    reason: Reason::Destination {
                        as_typed: false,
                        rule: DestinationRule::Type {
                            kind: "premium_rate",
                            action: "deny",
                        },
                    },
                    monitor: false,
                },
                local(LocalAction::StepUp, "sms-per-ip", true),
            ],
            provider: failed(FailMode::Closed),
            proof: ProofInput::Refused("replayed"),
            monitor: false,
        });
        let labels: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
        assert_eq!(
            labels,
            vec![
                "destination:type:premium_rate:deny",
                "would:velocity:sms-per-ip:deny",
                "provider_error:timeout:fail_closed",
                "stepup:proof_refused:replayed",
            ]
        );
        assert!(matches!(d.reasons[1], Reason::Would(_)));
    }
}
