//! The integration tests, one binary: every module below runs the gateway, the emulators
//! and the peers it needs over real sockets on port 0, with what they share in
//! [`fixtures`]. One module per area:
//!
//! * `gateway_core`, `upstream_pool`, `reload`, `cli`: proxying, the upstream pool, hot
//!   reload and the command line;
//! * `gating`, `sends`, `bypass`, `policy`: what is gated and judged, and the attempts to
//!   get around it;
//! * `providers`, `gateway_providers`: the risk providers against their emulators, alone
//!   and behind the gateway;
//! * `emulator_entra`, `entra_gateway`: the Entra emulator's reference suite, straight and
//!   through the gateway;
//! * `faults`, `hostile`, `soak`: misbehaving peers and clients, and a one-minute soak;
//! * `redis_store`: the Redis store against a real `redis-server`;
//! * `observability`: the alert rules and the dashboard against a real Prometheus;
//! * `manifests`: the Kubernetes manifests, rendered, schema-validated and policy-checked;
//! * `traces`: OpenTelemetry traces against an OTLP/HTTP receiver;
//! * `admin`: the admin API (lists, why) over real sockets, on one Redis for two replicas;
//! * `layout`, `fuzz_corpus`, `phone_corpus`, `container_build`: the source layout, the
//!   fuzz corpora, the phone-parser table and the container build;
//! * `e2e` (ignored): msal-browser in headless Chromium through otpgate (`scripts/e2e`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;

mod admin;
mod bypass;
mod cli;
mod container_build;
mod e2e;
mod emulator_entra;
mod entra_gateway;
mod faults;
mod fuzz_corpus;
mod gateway_core;
mod gateway_providers;
mod gating;
mod hostile;
mod layout;
mod manifests;
mod observability;
mod phone_corpus;
mod policy;
mod providers;
mod redis_store;
mod reload;
mod sends;
mod soak;
mod traces;
mod upstream_pool;
