//! Emulators of the services otpgate talks to, for the demo, tests and benches. The gateway
//! never needs them in production.

pub mod entra;
pub mod human;
pub mod prove;
