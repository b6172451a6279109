//! otpgate: an Entra-aware SMS-fraud gateway in front of the Microsoft Entra External ID
//! native-authentication API.
//!
//! # Layout
//! * `audit`: one JSON line per gated request, off the request path.
//! * [`cli`]: what the subcommands do (`main.rs` only parses arguments).
//! * [`config`]: the config schema and the build of every section (`from_raw`); loading
//!   (TOML + env + `_file` secrets) in `config::load`.
//! * `cors`: SPA proxy mode: preflights, CORS headers, path prefix onto the tenant.
//! * [`entra`]: native-auth knowledge: endpoint classifier, parameter parsing, OTP-send
//!   detection, flow learning, Entra-shaped answers.
//! * [`server`]: listeners, TLS, HTTP/1.1 + HTTP/2, connection limits, graceful drain.
//! * [`gateway`]: the request path, phase by phase.
//! * `judge`: judging one OTP send, in phases: `defend`, `assess`, `prove`, `settle`.
//! * [`defense`]: the local defenses: destination policy (libphonenumber's ranges) and
//!   velocity rules.
//! * [`stepup`]: the built-in proof of work (ALTCHA format).
//! * `logging`: `[log]`, and setting up the process's logs.
//! * [`proxy`]: header hygiene both ways, client IP.
//! * `refusal`: Entra-shaped answers in place of the HTTP layer's own refusals.
//! * [`upstream`]: the client for the one upstream and its connection pool; `[upstream]`.
//! * `error`: faults we answer ourselves, mapped to responses by source.
//! * `admin`: `/livez`, `/readyz`, `/metrics`.
//! * [`metrics`]: the Prometheus registry.
//! * [`tls`]: the crypto provider, certificates, upstream trust roots.
//! * [`risk`]: risk providers (HUMAN, Prove, mock) behind a time budget and a circuit breaker.
//! * [`policy`]: `decide`: deny beats throttle beats step-up beats allow, monitor modes.
//! * `problem`: configuration problems and secrets, the vocabulary every subsystem's
//!   validation shares.
//! * `simulate`: `otpgate simulate`: a seeded day of legitimate and attack traffic through
//!   the gateway and the Entra emulator, in-process on paused time (SIMULATION.md).
//! * [`traces`]: OpenTelemetry traces of gated requests, exported over OTLP/HTTP (JSON).
//! * [`store`]: shared state (sliding windows, TTL values, nonces); memory and Redis; the
//!   keyed hash that keeps phone numbers and tokens out of its keys.
//! * [`emulate`]: emulators of Entra and the risk providers, for the demo, tests and benches.
//! * [`fuzz_checks`]: the invariants the fuzz targets (`fuzz/`) and the corpus test check.

#![warn(unreachable_pub)]
pub(crate) mod admin;
pub(crate) mod admin_api;
pub mod admin_cli;
pub(crate) mod audit;
pub mod cli;
pub mod config;
pub(crate) mod cors;
pub mod defense;
pub mod emulate;
pub mod entra;
pub(crate) mod error;
pub mod fuzz_checks;
pub mod gateway;
pub(crate) mod judge;
pub(crate) mod logging;
pub mod metrics;
pub mod policy;
pub(crate) mod problem;
pub mod proxy;
pub(crate) mod refusal;
pub mod risk;
pub mod server;
pub(crate) mod simulate;
pub mod stepup;
pub mod store;
pub mod tls;
pub mod traces;
pub mod upstream;
