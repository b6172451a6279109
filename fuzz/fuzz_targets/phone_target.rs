//! An SMS destination as a client writes it.
//! The invariants: `otpgate::fuzz_checks::phone_target`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otpgate::fuzz_checks::phone_target(data));
