//! The Entra emulator straight over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod entra_suite;

const VIA_GATEWAY: bool = false;
