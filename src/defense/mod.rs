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
pub mod lists;
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
    /// `[defense.lists]`: safe and block lists (more are added at runtime, through the
    /// admin API).
    pub lists: lists::ListsConfig,
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
        let problems = self.lists.validate();
        for p in &problems {
            check.problem(&format!("defense.lists.{}", p.key), p.message.clone());
        }
        Some((destination?, velocity?, adaptive?)).filter(|_| problems.is_empty())
    }
}

/// Longest rule name; names are part of store keys and reason labels.
const MAX_NAME_CHARS: usize = 64;

/// What is wrong with a rule's `name`, given the names of the rules before it (it is
/// added to them when it is fine).
pub(crate) fn name_problem<'a>(name: &'a str, seen: &mut Vec<&'a str>) -> Option<&'static str> {
    if name.is_empty()
        || name.len() > MAX_NAME_CHARS
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        Some("1 to 64 letters, digits, '-', '_' or '.'")
    } else if seen.contains(&name) {
        Some("another rule has this name")
    } else {
        seen.push(name);
        None
    }
}

/// What is wrong with a rule's network sizes, by field.
pub(crate) fn network_problems(ipv4: u8, ipv6: u8) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    if ipv4 == 0 || ipv4 > 32 {
        out.push(("ipv4_prefix", "must be 1 to 32"));
    }
    if ipv6 == 0 || ipv6 > 128 {
        out.push(("ipv6_prefix", "must be 1 to 128"));
    }
    out
}
