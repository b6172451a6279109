//! A request path: classification and canonicalization.
//! The invariants: `otpgate::fuzz_checks::classify_path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otpgate::fuzz_checks::classify_path(data));
