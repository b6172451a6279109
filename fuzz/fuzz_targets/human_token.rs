//! A HUMAN token v3, or a recipe the emulator mints one from.
//! The invariants: `otpgate::fuzz_checks::human_token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otpgate::fuzz_checks::human_token(data));
