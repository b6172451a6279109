//! Every flow of the Entra emulator driven through the gateway: the same documented bodies,
//! errors and outbox contents as straight against the emulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod entra_suite;

const VIA_GATEWAY: bool = true;
