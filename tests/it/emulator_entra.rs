//! The Entra emulator straight over real sockets.

const VIA_GATEWAY: bool = false;

// The suite is compiled twice on purpose, once per value of `VIA_GATEWAY`.
#[allow(clippy::duplicate_mod)]
#[path = "entra_suite.rs"]
mod suite;
