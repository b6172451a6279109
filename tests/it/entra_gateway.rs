//! Every flow of the Entra emulator driven through the gateway: the same documented bodies,
//! errors and outbox contents as straight against the emulator.

const VIA_GATEWAY: bool = true;

#[path = "entra_suite.rs"]
mod suite;
