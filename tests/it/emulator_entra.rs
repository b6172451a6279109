//! The Entra emulator straight over real sockets.

const VIA_GATEWAY: bool = false;

#[path = "entra_suite.rs"]
mod suite;
