//! Local defenses: checks that need no risk provider and run before one is asked.
//!
//! * [`destination`]: may an SMS go to this number (country, number type, prefixes)?
//! * [`velocity`]: has this IP, network, phone, range, country, flow … asked too often?
//! * [`numbering`]: libphonenumber's numbering plans, compiled once: parse a number, tell
//!   its region and type.
//!
//! They report verdicts and reasons; `policy::decide` combines them with the risk
//! provider's answer.

pub mod adaptive;
pub mod destination;
mod numbering;
pub mod velocity;

pub(crate) use adaptive::Adaptive;
pub(crate) use destination::{DestinationAction, Phone};
pub use destination::{DestinationConfig, DestinationPolicy};
pub(crate) use numbering::MAX_E164_DIGITS;
pub(crate) use velocity::{VelocityAction, VelocityOutcome, VelocityRule, VelocityRules};

use serde::{Deserialize, Serialize};

use crate::problem::{Checker, Dropped};

/// `[defense]`: local defenses, needing no provider.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefenseConfig {
    /// `[defense.destination]`: where SMS codes may go.
    pub destination: DestinationConfig,
    /// `[[defense.velocity]]`: sliding-window rules. Absent: the built-in defaults
    /// (`defense::velocity::default_rules`); `velocity = []` turns them all off.
    pub velocity: Option<Vec<VelocityRule>>,
    /// `[[defense.adaptive]]`: conversion rules. Absent: the built-in defaults
    /// (`defense::adaptive::default_rules`); `adaptive = []` turns them all off.
    pub adaptive: Option<Vec<adaptive::AdaptiveRule>>,
    /// `[defense.conversion]`: how sends and their verifications are matched.
    pub conversion: adaptive::ConversionConfig,
}

impl DefenseConfig {
    /// The destination policy and the velocity rules (the built-in ones when none are
    /// configured), or `None` with every problem recorded.
    pub(crate) fn build(
        &self,
        dropped: &Dropped,
        check: &mut Checker,
    ) -> Option<(DestinationPolicy, VelocityRules, Adaptive)> {
        let destination = match DestinationPolicy::from_config(&self.destination) {
            Ok(p) => Some(p),
            Err(problems) => {
                for p in problems {
                    check.problem(&format!("defense.destination.{}", p.key), p.message);
                }
                None
            }
        };
        let rules = self
            .velocity
            .clone()
            .unwrap_or_else(velocity::default_rules);
        let velocity = match VelocityRules::new(rules) {
            Ok(v) => Some(v),
            Err(problems) => {
                for p in problems {
                    // Keys are `[i].field`, `i` counting the rules that were read.
                    let written = p
                        .key
                        .strip_prefix('[')
                        .and_then(|k| k.split_once(']'))
                        .and_then(|(i, rest)| Some((i.parse::<usize>().ok()?, rest)));
                    let key = match written {
                        Some((i, rest)) => {
                            format!("{}{rest}", dropped.element_key("defense.velocity", i))
                        }
                        None => format!("defense.velocity{}", p.key),
                    };
                    check.problem(&key, p.message);
                }
                None
            }
        };
        let rules = self
            .adaptive
            .clone()
            .unwrap_or_else(adaptive::default_rules);
        let adaptive = match Adaptive::new(rules, self.conversion.clone()) {
            Ok(a) => Some(a),
            Err(problems) => {
                for p in problems {
                    let key = match p.key.strip_prefix('[').and_then(|k| k.split_once(']')) {
                        Some((i, rest)) => match i.parse::<usize>() {
                            Ok(i) => {
                                format!("{}{rest}", dropped.element_key("defense.adaptive", i))
                            }
                            Err(_) => format!("defense.adaptive{}", p.key),
                        },
                        None => format!("defense.{}", p.key),
                    };
                    check.problem(&key, p.message);
                }
                None
            }
        };
        Some((destination?, velocity?, adaptive?))
    }
}
