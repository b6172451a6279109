//! Local defenses: checks that need no risk provider and run before one is asked.
//!
//! * [`destination`]: may an SMS go to this number (country, number type, prefixes)?
//! * [`velocity`]: has this IP, network, phone, range, country, flow … asked too often?
//! * [`numbering`]: libphonenumber's numbering plans, compiled once: parse a number, tell
//!   its region and type.
//!
//! They report verdicts and reasons; `policy::decide` combines them with the risk
//! provider's answer.

pub mod destination;
mod numbering;
pub mod velocity;

pub use destination::{
    DestinationAction, DestinationConfig, DestinationPolicy, DestinationVerdict, Phone,
};
pub use numbering::NumberKind;
pub use velocity::{
    RuleHit, Subject, VelocityAction, VelocityKey, VelocityOutcome, VelocityRule, VelocityRules,
};
