//! Why a decision came out as it did: one typed reason per rule or input that contributed.
//! Written out (audit lines, `explain`, logs) as the stable labels operators key on, such as
//! `destination:country:GB:deny` or `velocity:sms-per-phone:throttle`; metrics count them
//! by [`Reason::class`], a bounded label.

use std::borrow::Cow;
use std::fmt;

use super::Outcome;
use crate::risk::FailMode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `destination:unparseable`: the target cannot be read as a phone number.
    Unparseable,
    /// `destination:{rule}`, or `destination:as_typed:{rule}` when the rule matched the
    /// digits as the client typed them (a national prefix after the calling code).
    Destination {
        as_typed: bool,
        rule: DestinationRule,
    },
    /// `velocity:{rule}:{action}`: a velocity rule over its limit.
    Velocity { rule: String, action: &'static str },
    /// `velocity:store_error`: the store could not count, and the fail mode refused.
    VelocityStoreError,
    /// `adaptive:{rule}:{action}`: an adaptive rule found the send's key pumped (its codes
    /// are not entered).
    Adaptive { rule: String, action: &'static str },
    /// A safe or block list entry of this kind matched (`list:block:user`).
    Listed {
        list: &'static str,
        kind: &'static str,
    },
    /// `provider:{allow|step_up|deny}`: the risk provider's action.
    ProviderAction(Outcome),
    /// `provider:{text}`: a reason the provider gave, in its own words.
    ProviderSaid(String),
    /// `provider_error:{error}:fail_{mode}`: the provider failed; the fail mode decided.
    ProviderFailed {
        error: &'static str,
        fail_mode: FailMode,
    },
    /// `stepup:proof_accepted`: our proof of work answered our step-up.
    ProofAccepted,
    /// `stepup:proof_not_needed`: a valid proof came with a request that needed none.
    ProofNotNeeded,
    /// `stepup:proof_refused:{why}`: a proof was sent and refused.
    ProofRefused(&'static str),
    /// `would:{reason}`: a monitor-only rule's reason, counted and never enforced.
    Would(Box<Reason>),
    /// `would:{outcome}`: monitor mode forwarded what the rules computed.
    WouldBe(Outcome),
}

/// What a destination rule matched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationRule {
    /// `prefix:{prefix}`: a denied E.164 prefix.
    Prefix(String),
    /// `country:{key}:{action}`: the region (`GB`) or calling code (`+800`) entry, or the
    /// default for the number's country.
    Country { key: String, action: &'static str },
    /// `type:{kind}:{action}`: the number type's entry (`premium_rate`, `voip`, …).
    Type {
        kind: &'static str,
        action: &'static str,
    },
}

impl Reason {
    /// The reason's class for metric labels: the label's first two parts
    /// (`destination:country`, `velocity:{rule}`, `provider:deny`, `would:velocity`). Rule
    /// names come from config; a provider's own words contribute their first word only.
    pub fn class(&self) -> Cow<'static, str> {
        match self {
            Reason::Unparseable => "destination:unparseable".into(),
            Reason::Destination { as_typed: true, .. } => "destination:as_typed".into(),
            Reason::Destination { rule, .. } => match rule {
                DestinationRule::Prefix(_) => "destination:prefix".into(),
                DestinationRule::Country { .. } => "destination:country".into(),
                DestinationRule::Type { .. } => "destination:type".into(),
            },
            Reason::Velocity { rule, .. } => format!("velocity:{rule}").into(),
            Reason::VelocityStoreError => "velocity:store_error".into(),
            Reason::Adaptive { rule, .. } => format!("adaptive:{rule}").into(),
            Reason::Listed { list, .. } => format!("list:{list}").into(),
            Reason::ProviderAction(outcome) => format!("provider:{}", outcome.label()).into(),
            Reason::ProviderSaid(text) => {
                format!("provider:{}", text.split(':').next().unwrap_or_default()).into()
            }
            Reason::ProviderFailed { error, .. } => format!("provider_error:{error}").into(),
            Reason::ProofAccepted => "stepup:proof_accepted".into(),
            Reason::ProofNotNeeded => "stepup:proof_not_needed".into(),
            Reason::ProofRefused(_) => "stepup:proof_refused".into(),
            Reason::Would(inner) => {
                let class = inner.class();
                let first = class.split(':').next().unwrap_or_default();
                format!("would:{first}").into()
            }
            Reason::WouldBe(outcome) => format!("would:{}", outcome.label()).into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unparseable => f.write_str("destination:unparseable"),
            Reason::Destination { as_typed, rule } => {
                let reading = if *as_typed {
                    "destination:as_typed"
                } else {
                    "destination"
                };
                write!(f, "{reading}:{rule}")
            }
            Reason::Velocity { rule, action } => write!(f, "velocity:{rule}:{action}"),
            Reason::VelocityStoreError => f.write_str("velocity:store_error"),
            Reason::Adaptive { rule, action } => write!(f, "adaptive:{rule}:{action}"),
            Reason::Listed { list, kind } => write!(f, "list:{list}:{kind}"),
            Reason::ProviderAction(outcome) => write!(f, "provider:{}", outcome.label()),
            Reason::ProviderSaid(text) => write!(f, "provider:{text}"),
            Reason::ProviderFailed { error, fail_mode } => {
                write!(f, "provider_error:{error}:fail_{}", fail_mode.as_str())
            }
            Reason::ProofAccepted => f.write_str("stepup:proof_accepted"),
            Reason::ProofNotNeeded => f.write_str("stepup:proof_not_needed"),
            Reason::ProofRefused(why) => write!(f, "stepup:proof_refused:{why}"),
            Reason::Would(inner) => write!(f, "would:{inner}"),
            Reason::WouldBe(outcome) => write!(f, "would:{}", outcome.label()),
        }
    }
}

impl fmt::Display for DestinationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestinationRule::Prefix(prefix) => write!(f, "prefix:{prefix}"),
            DestinationRule::Country { key, action } => write!(f, "country:{key}:{action}"),
            DestinationRule::Type { kind, action } => write!(f, "type:{kind}:{action}"),
        }
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::StepUpBy;

    fn every_kind() -> Vec<Reason> {
        let country = DestinationRule::Country {
            key: "GB".into(),
            action: "deny",
        };
        vec![
            Reason::Unparseable,
            Reason::Destination {
                as_typed: false,
                rule: DestinationRule::Prefix("+881".into()),
            },
            Reason::Destination {
                as_typed: false,
                rule: country.clone(),
            },
            Reason::Destination {
                as_typed: true,
                rule: country,
            },
            Reason::Destination {
                as_typed: false,
                rule: DestinationRule::Type {
                    kind: "premium_rate",
                    action: "step_up",
                },
            },
            Reason::Velocity {
                rule: "sms-per-phone".into(),
                action: "throttle",
            },
            Reason::VelocityStoreError,
            Reason::Adaptive {
                rule: "sms-country".into(),
                action: "deny",
            },
            Reason::Listed {
                list: "block",
                kind: "user",
            },
            Reason::ProviderAction(Outcome::StepUp(StepUpBy::Provider)),
            Reason::ProviderSaid("block_reason:bot_behavior".into()),
            Reason::ProviderSaid("simulated_block".into()),
            Reason::ProviderFailed {
                error: "timeout",
                fail_mode: FailMode::StepUp,
            },
            Reason::ProofAccepted,
            Reason::ProofNotNeeded,
            Reason::ProofRefused("replayed"),
            Reason::Would(Box::new(Reason::Velocity {
                rule: "sms-per-ip".into(),
                action: "deny",
            })),
            Reason::WouldBe(Outcome::Deny),
        ]
    }

    #[test]
    fn labels_are_the_documented_strings() {
        let labels: Vec<String> = every_kind().iter().map(ToString::to_string).collect();
        assert_eq!(
            labels,
            [
                "destination:unparseable",
                "destination:prefix:+881",
                "destination:country:GB:deny",
                "destination:as_typed:country:GB:deny",
                "destination:type:premium_rate:step_up",
                "velocity:sms-per-phone:throttle",
                "velocity:store_error",
                "adaptive:sms-country:deny",
                "list:block:user",
                "provider:step_up",
                "provider:block_reason:bot_behavior",
                "provider:simulated_block",
                "provider_error:timeout:fail_step_up",
                "stepup:proof_accepted",
                "stepup:proof_not_needed",
                "stepup:proof_refused:replayed",
                "would:velocity:sms-per-ip:deny",
                "would:deny",
            ]
        );
    }

    /// The metric class is the label's first two parts, for every kind of reason.
    #[test]
    fn the_class_is_the_first_two_parts_of_the_label() {
        for reason in every_kind() {
            let label = reason.to_string();
            let two: Vec<&str> = label.splitn(3, ':').take(2).collect();
            assert_eq!(reason.class(), two.join(":"), "{label}");
        }
    }
}
