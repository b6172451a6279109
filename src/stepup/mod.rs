//! Step-up proofs: what a client may present on a retry to turn a step-up into an allow.
//!
//! * [`pow`]: the built-in proof of work, in the ALTCHA format, bound to a flow and target.

pub mod pow;

pub use pow::AltchaChallenge;
pub(crate) use pow::{Binding, Pow, PowConfig, StepUpSettings, RISKY_LEVEL};
