//! otpgate: an Entra-aware SMS-fraud gateway in front of the Microsoft Entra External ID
//! native-authentication API.
//!
//! # Layout
//! * [`config`]: typed configuration, load (TOML + env), validate (every problem at once).
//! * [`entra`]: native-auth knowledge: endpoint classifier, parameter parsing, Entra-shaped
//!   error bodies.
//! * [`risk`]: risk providers (HUMAN, Prove, mock) behind a time budget and a circuit breaker.
//! * [`store`]: shared state (sliding windows, TTL values, nonces); memory and Redis.
//! * [`emulate`]: emulators of Entra and the risk providers, for the demo, tests and benches.

pub mod config;
pub mod emulate;
pub mod entra;
pub mod risk;
pub mod store;
