//! A query line and form body: parameter parsing.
//! The invariants: `otpgate::fuzz_checks::form_params`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| otpgate::fuzz_checks::form_params(data));
