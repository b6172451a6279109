//! Every flow of the Entra emulator driven through the gateway: the same documented bodies,
//! errors and outbox contents as straight against the emulator.

const VIA_GATEWAY: bool = true;

// The suite is compiled twice on purpose, once per value of `VIA_GATEWAY`.
#[allow(clippy::duplicate_mod)]
#[path = "entra_suite.rs"]
mod suite;
